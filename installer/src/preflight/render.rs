//! The tables the operator reads: per host a header line (name, verdict, what the host is), then
//! one aligned row per check, then one summary line.
use std::fmt::Write;

use super::{PreflightReport, Verdict};

pub(crate) fn render(report: &PreflightReport) -> String {
    // One width for the whole report, so every table's detail column lines up.
    let name_width = report
        .hosts
        .iter()
        .flat_map(|host| host.checks.iter().map(|check| check.name.len()))
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for host in &report.hosts {
        let facts = &host.facts;
        let about: Vec<String> = [
            facts.os.clone(),
            facts.arch.clone(),
            facts.node_ip.map(|ip| ip.to_string()),
        ]
        .into_iter()
        .flatten()
        .collect();
        let _ = write!(out, "{}: {}", host.host, host.verdict());
        if !about.is_empty() {
            let _ = write!(out, " ({})", about.join(", "));
        }
        out.push('\n');
        for check in &host.checks {
            let line = format!(
                "  {}  {:<name_width$}  {}",
                check.verdict, check.name, check.detail
            );
            let _ = writeln!(out, "{}", line.trim_end());
        }
    }
    let failed: Vec<&str> = report
        .hosts
        .iter()
        .filter(|host| host.verdict() == Verdict::Fail)
        .map(|host| host.host.as_str())
        .collect();
    let warned = report
        .hosts
        .iter()
        .filter(|host| host.verdict() == Verdict::Warn)
        .count();
    let _ = write!(
        out,
        "preflight: {} host(s), {} failed",
        report.hosts.len(),
        failed.len()
    );
    if !failed.is_empty() {
        let _ = write!(out, " ({})", failed.join(", "));
    }
    let _ = write!(out, ", {warned} with warnings");
    out
}

#[cfg(test)]
mod tests {
    use crate::preflight::{Check, Facts, HostReport, PreflightReport, Verdict};

    fn check(name: &'static str, verdict: Verdict, detail: &str) -> Check {
        Check {
            name,
            verdict,
            detail: detail.into(),
        }
    }

    #[test]
    fn tables_align_and_the_summary_names_failed_hosts() {
        let report = PreflightReport {
            hosts: vec![
                HostReport {
                    host: "node1".into(),
                    checks: vec![
                        check(
                            "os",
                            Verdict::Pass,
                            "Debian GNU/Linux 12 (bookworm), kernel 6.1.0",
                        ),
                        check("swap", Verdict::Warn, "512 MiB of swap on"),
                    ],
                    facts: Facts {
                        os: Some("Debian GNU/Linux 12 (bookworm)".into()),
                        arch: Some("amd64".into()),
                        node_ip: Some("10.0.0.5".parse().unwrap()),
                        ..Facts::default()
                    },
                },
                HostReport::unreachable(
                    "node2",
                    "node2 (root@10.0.0.6): unreachable: No route to host".into(),
                ),
                HostReport {
                    host: "node3".into(),
                    checks: vec![
                        check("ip_forward", Verdict::Pass, "net.ipv4.ip_forward is 1"),
                        check(
                            "port",
                            Verdict::Fail,
                            "6443 (kube-apiserver): in use by socat (pid 9)",
                        ),
                    ],
                    facts: Facts::default(),
                },
            ],
        };
        let expected = "\
node1: WARN (Debian GNU/Linux 12 (bookworm), amd64, 10.0.0.5)
  PASS  os          Debian GNU/Linux 12 (bookworm), kernel 6.1.0
  WARN  swap        512 MiB of swap on
node2: FAIL
  FAIL  ssh         node2 (root@10.0.0.6): unreachable: No route to host
node3: FAIL
  PASS  ip_forward  net.ipv4.ip_forward is 1
  FAIL  port        6443 (kube-apiserver): in use by socat (pid 9)
preflight: 3 host(s), 2 failed (node2, node3), 1 with warnings";
        assert_eq!(report.render(), expected);
        assert!(!report.passed());
        let failures: Vec<(&str, &str)> = report
            .failures()
            .map(|(host, check)| (host, check.name))
            .collect();
        assert_eq!(failures, [("node2", "ssh"), ("node3", "port")]);
    }

    #[test]
    fn warnings_alone_pass() {
        let report = PreflightReport {
            hosts: vec![HostReport {
                host: "node1".into(),
                checks: vec![check("clock", Verdict::Warn, "host is 2.00 s ahead")],
                facts: Facts::default(),
            }],
        };
        assert!(report.passed());
        assert!(
            report
                .render()
                .ends_with("1 host(s), 0 failed, 1 with warnings")
        );
    }
}
