//! Per-host results of a fan-out, and the table the operator reads.
use std::fmt;
use std::time::Duration;

#[derive(Debug)]
pub struct HostOutcome<T, E> {
    /// Inventory name.
    pub host: String,
    pub elapsed: Duration,
    pub result: Result<T, E>,
}

#[derive(Debug)]
pub struct Report<T, E> {
    /// One per host, in inventory order.
    pub hosts: Vec<HostOutcome<T, E>>,
    /// Wall time of the whole fan-out.
    pub elapsed: Duration,
}

impl<T, E> Report<T, E> {
    pub fn all_ok(&self) -> bool {
        self.hosts.iter().all(|h| h.result.is_ok())
    }

    pub fn get(&self, host: &str) -> Option<&HostOutcome<T, E>> {
        self.hosts.iter().find(|h| h.host == host)
    }

    pub fn failures(&self) -> impl Iterator<Item = (&str, &E)> {
        self.hosts
            .iter()
            .filter_map(|h| h.result.as_ref().err().map(|e| (h.host.as_str(), e)))
    }

    pub fn successes(&self) -> impl Iterator<Item = (&str, &T)> {
        self.hosts
            .iter()
            .filter_map(|h| h.result.as_ref().ok().map(|t| (h.host.as_str(), t)))
    }

    /// Every host's value, or every host's error.
    pub fn into_result(self) -> Result<Vec<(String, T)>, Vec<E>> {
        let mut values = Vec::new();
        let mut errors = Vec::new();
        for outcome in self.hosts {
            match outcome.result {
                Ok(value) => values.push((outcome.host, value)),
                Err(error) => errors.push(error),
            }
        }
        if errors.is_empty() {
            Ok(values)
        } else {
            Err(errors)
        }
    }
}

impl<T, E: fmt::Display> fmt::Display for Report<T, E> {
    /// `HOST  RESULT  TIME  DETAIL`, one line per host, then the wall time.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self
            .hosts
            .iter()
            .map(|h| h.host.len())
            .chain([4])
            .max()
            .unwrap_or(4);
        writeln!(
            f,
            "{:<width$}  {:<6}  {:>8}  DETAIL",
            "HOST", "RESULT", "TIME"
        )?;
        for outcome in &self.hosts {
            let (status, detail) = match &outcome.result {
                Ok(_) => ("ok", String::new()),
                // The error names the host already; keep only the rest on one line.
                Err(error) => {
                    let text = error.to_string();
                    let text = text
                        .strip_prefix(&format!("{}: ", outcome.host))
                        .unwrap_or(&text)
                        .replace('\n', " / ");
                    ("FAILED", text)
                }
            };
            let line = format!(
                "{:<width$}  {:<6}  {:>7.2}s  {}",
                outcome.host,
                status,
                outcome.elapsed.as_secs_f64(),
                detail
            );
            writeln!(f, "{}", line.trim_end())?;
        }
        write!(
            f,
            "{} host(s) in {:.2}s",
            self.hosts.len(),
            self.elapsed.as_secs_f64()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_shows_each_host_and_its_error() {
        let report: Report<(), String> = Report {
            hosts: vec![
                HostOutcome {
                    host: "node1".into(),
                    elapsed: Duration::from_millis(1500),
                    result: Ok(()),
                },
                HostOutcome {
                    host: "node2".into(),
                    elapsed: Duration::from_millis(20),
                    result: Err("node2: connection lost\nsecond line".into()),
                },
            ],
            elapsed: Duration::from_secs(2),
        };
        let table = report.to_string();
        assert!(table.contains("node1  ok         1.50s"), "{table}");
        assert!(
            table.contains("node2  FAILED     0.02s  connection lost / second line"),
            "{table}"
        );
        assert!(!report.all_ok());
        assert_eq!(report.failures().count(), 1);
    }
}
