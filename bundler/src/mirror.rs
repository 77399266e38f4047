//! Mirrors: URL and registry rewrites for sites that reach upstream only through an artifact
//! mirror (Artifactory, Nexus, a registry mirror), in the spirit of Kubespray's `files_repo` and
//! `registry_host`.
//!
//! A rewrite `FROM=TO` replaces the prefix FROM of a source by TO. It matches on a boundary only
//! (`https://dl.k8s.io` matches `https://dl.k8s.io/release/...`, not `https://dl.k8s.io.evil`),
//! and among the rules that match, the longest FROM wins. Rules from the command line win over
//! the manifest's: a source any `--mirror`/`--registry-mirror` matches is rewritten by those
//! alone; the manifest's `mirrors:` apply to the others. Only where bytes come from changes: the
//! bundle keeps the canonical names, the manifest's URLs and image references as `source`, and
//! every sha256 pin. A rule that matches no source at all is refused, since it is almost always
//! a typo that would send the build to upstream behind the operator's back.

use std::fmt;

use oci_client::Reference;

/// One rewrite rule and where it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    /// Canonical prefix, without a trailing `/`.
    pub from: String,
    /// Replacement prefix, without a trailing `/`.
    pub to: String,
    /// `--mirror`, `--registry-mirror` or `FILE:LINE:COL` of the manifest entry.
    pub origin: String,
}

impl fmt::Display for Rewrite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} => {} ({})", self.from, self.to, self.origin)
    }
}

/// A source moved to a mirror: where it is fetched from, and by which rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    pub url: String,
    pub rule: Rewrite,
}

/// `FROM=TO` of `--mirror`: both http(s) URLs.
pub fn parse_url_rule(arg: &str) -> Result<Rewrite, String> {
    let (from, to) = split_rule(
        arg,
        "--mirror",
        "https://dl.k8s.io=https://mirror.example/k8s",
    )?;
    url_rule(from, to, "--mirror")
}

/// `FROM=TO` of `--registry-mirror`: both `host[:port][/path]`.
pub fn parse_registry_rule(arg: &str) -> Result<Rewrite, String> {
    let (from, to) = split_rule(
        arg,
        "--registry-mirror",
        "registry.k8s.io=nexus.example:8443/k8s",
    )?;
    registry_rule(from, to, "--registry-mirror")
}

fn split_rule<'a>(arg: &'a str, flag: &str, example: &str) -> Result<(&'a str, &'a str), String> {
    match arg.split_once('=') {
        Some((from, to)) if !from.trim().is_empty() && !to.trim().is_empty() => {
            Ok((from.trim(), to.trim()))
        }
        _ => Err(format!(
            "{flag} {arg:?}: expected FROM=TO, e.g. {flag} {example}"
        )),
    }
}

/// A file rewrite: FROM and TO must be http(s) URLs with a host.
pub fn url_rule(from: &str, to: &str, origin: &str) -> Result<Rewrite, String> {
    for (side, value) in [("from", from), ("to", to)] {
        let parsed = reqwest::Url::parse(value)
            .map_err(|e| format!("mirror {side} {value:?} is not a URL: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(format!(
                "mirror {side} {value:?} is not an http:// or https:// URL with a host"
            ));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(format!(
                "mirror {side} {value:?}: a prefix takes no `?query` or `#fragment`"
            ));
        }
    }
    Ok(Rewrite {
        from: from.trim_end_matches('/').to_owned(),
        to: to.trim_end_matches('/').to_owned(),
        origin: origin.to_owned(),
    })
}

/// A registry rewrite: FROM and TO are `host[:port][/path]`, no scheme, no tag.
pub fn registry_rule(from: &str, to: &str, origin: &str) -> Result<Rewrite, String> {
    for (side, value) in [("from", from), ("to", to)] {
        let value = value.trim_end_matches('/');
        if value.contains("://") {
            return Err(format!(
                "registry mirror {side} {value:?}: give host[:port][/path] without a scheme \
                 (plain HTTP is chosen with --insecure-registry)"
            ));
        }
        let host = value.split('/').next().unwrap_or_default();
        // What the reference parser reads as a registry host is what a pull would use.
        let probe: Reference = format!("{value}/probe:tag").parse().map_err(|e| {
            format!("registry mirror {side} {value:?} is not host[:port][/path]: {e}")
        })?;
        if probe.registry() != host || probe.tag() != Some("tag") {
            return Err(format!(
                "registry mirror {side} {value:?} must start with a registry host \
                 (a name with a dot or a port, or localhost), e.g. nexus.example:8443/k8s"
            ));
        }
    }
    Ok(Rewrite {
        from: from.trim_end_matches('/').to_owned(),
        to: to.trim_end_matches('/').to_owned(),
        origin: origin.to_owned(),
    })
}

/// The rules of one build: command line first, then the manifest's.
#[derive(Debug, Clone, Default)]
pub struct Mirrors {
    pub cli_files: Vec<Rewrite>,
    pub cli_registries: Vec<Rewrite>,
    pub manifest_files: Vec<Rewrite>,
    pub manifest_registries: Vec<Rewrite>,
}

impl Mirrors {
    pub fn is_empty(&self) -> bool {
        self.cli_files.is_empty()
            && self.cli_registries.is_empty()
            && self.manifest_files.is_empty()
            && self.manifest_registries.is_empty()
    }

    /// Where `url` is fetched from, if a file rule moves it.
    pub fn url(&self, url: &str) -> Option<Redirect> {
        let pick = |rules: &[Rewrite]| {
            longest(rules, |rule| url_rest(url, &rule.from)).map(|(rule, rest)| Redirect {
                url: format!("{}{rest}", rule.to),
                rule: rule.clone(),
            })
        };
        pick(&self.cli_files).or_else(|| pick(&self.manifest_files))
    }

    /// Where `reference` is pulled from, if a registry rule moves it.
    pub fn image(&self, reference: &Reference) -> Option<Result<(Reference, Rewrite), String>> {
        let path = format!("{}/{}", reference.registry(), reference.repository());
        let pick = |rules: &[Rewrite]| {
            longest(rules, |rule| path_rest(&path, &rule.from)).map(|(rule, rest)| {
                let mut text = format!("{}{rest}", rule.to);
                if let Some(tag) = reference.tag() {
                    text.push_str(&format!(":{tag}"));
                }
                if let Some(digest) = reference.digest() {
                    text.push_str(&format!("@{digest}"));
                }
                text.parse::<Reference>()
                    .map(|moved| (moved, rule.clone()))
                    .map_err(|e| format!("{rule}: rewrites {} to {text:?}: {e}", reference.whole()))
            })
        };
        pick(&self.cli_registries).or_else(|| pick(&self.manifest_registries))
    }

    /// Rules that match none of `urls` / `images` (precedence aside: a manifest rule shadowed
    /// by a command-line one still counts as used).
    pub fn unused<'a>(&'a self, urls: &[&str], images: &[&Reference]) -> Vec<&'a Rewrite> {
        let file_rules = self.cli_files.iter().chain(&self.manifest_files);
        let registry_rules = self.cli_registries.iter().chain(&self.manifest_registries);
        let paths: Vec<String> = images
            .iter()
            .map(|r| format!("{}/{}", r.registry(), r.repository()))
            .collect();
        file_rules
            .filter(|rule| !urls.iter().any(|u| url_rest(u, &rule.from).is_some()))
            .chain(
                registry_rules
                    .filter(|rule| !paths.iter().any(|p| path_rest(p, &rule.from).is_some())),
            )
            .collect()
    }
}

fn longest<'r, 's>(
    rules: &'r [Rewrite],
    matches: impl Fn(&'r Rewrite) -> Option<&'s str>,
) -> Option<(&'r Rewrite, &'s str)> {
    rules
        .iter()
        .filter_map(|rule| matches(rule).map(|rest| (rule, rest)))
        .max_by_key(|(rule, _)| rule.from.len())
}

/// The part of `url` after the prefix `from`, if `from` ends on a path boundary of `url`.
fn url_rest<'u>(url: &'u str, from: &str) -> Option<&'u str> {
    let rest = url.strip_prefix(from)?;
    (rest.is_empty() || rest.starts_with(['/', '?', '#'])).then_some(rest)
}

/// The part of `registry/repository` after the prefix `from`, on a `/` boundary.
fn path_rest<'p>(path: &'p str, from: &str) -> Option<&'p str> {
    let rest = path.strip_prefix(from)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(from: &str, to: &str) -> Rewrite {
        url_rule(from, to, "--mirror").unwrap()
    }

    #[test]
    fn longest_prefix_on_a_boundary_wins() {
        let mirrors = Mirrors {
            manifest_files: vec![
                rule("https://dl.k8s.io", "https://m.example/k8s"),
                rule(
                    "https://dl.k8s.io/release/v1.37.0",
                    "https://m.example/pinned/",
                ),
            ],
            ..Default::default()
        };
        let moved = mirrors
            .url("https://dl.k8s.io/release/v1.37.0/bin/linux/amd64/kubelet")
            .unwrap();
        assert_eq!(
            moved.url,
            "https://m.example/pinned/bin/linux/amd64/kubelet"
        );
        let moved = mirrors
            .url("https://dl.k8s.io/release/v1.36.0/kubelet")
            .unwrap();
        assert_eq!(moved.url, "https://m.example/k8s/release/v1.36.0/kubelet");
        // Not on a boundary: `dl.k8s.io.evil` is another host, `v1.37.0-rc.1` another directory.
        assert!(mirrors.url("https://dl.k8s.io.evil/kubelet").is_none());
        assert_eq!(
            mirrors
                .url("https://dl.k8s.io/release/v1.37.0-rc.1/kubelet")
                .unwrap()
                .url,
            "https://m.example/k8s/release/v1.37.0-rc.1/kubelet"
        );
        // A rule for one whole file.
        let whole = Mirrors {
            cli_files: vec![rule("https://x.example/a/sum", "http://127.0.0.1:1/t/sum")],
            ..Default::default()
        };
        assert_eq!(
            whole.url("https://x.example/a/sum").unwrap().url,
            "http://127.0.0.1:1/t/sum"
        );
    }

    #[test]
    fn command_line_wins_over_the_manifest() {
        let mut cli = rule("https://dl.k8s.io", "http://127.0.0.1:5881/k8s");
        cli.origin = "--mirror".into();
        let mut file = rule("https://dl.k8s.io/release", "https://nexus.example/k8s");
        file.origin = "m.yaml:4:7".into();
        let mirrors = Mirrors {
            cli_files: vec![cli.clone()],
            manifest_files: vec![
                file.clone(),
                rule("https://github.com", "https://gh.example"),
            ],
            ..Default::default()
        };
        // The manifest's rule is longer, but the command line's matches: it wins.
        let moved = mirrors.url("https://dl.k8s.io/release/v1/kubelet").unwrap();
        assert_eq!(moved.url, "http://127.0.0.1:5881/k8s/release/v1/kubelet");
        assert_eq!(moved.rule, cli);
        // Where no command-line rule matches, the manifest's apply.
        assert_eq!(
            mirrors.url("https://github.com/etcd-io/x").unwrap().url,
            "https://gh.example/etcd-io/x"
        );
        // Shadowed is not unused.
        let unused = mirrors.unused(&["https://dl.k8s.io/release/v1/kubelet"], &[]);
        assert_eq!(unused.len(), 1, "{unused:?}");
        assert_eq!(unused[0].from, "https://github.com");
    }

    #[test]
    fn images_keep_tag_and_digest() {
        let mirrors = Mirrors {
            cli_registries: vec![
                registry_rule(
                    "registry.k8s.io",
                    "127.0.0.1:5880/registry.k8s.io",
                    "--registry-mirror",
                )
                .unwrap(),
            ],
            manifest_registries: vec![
                registry_rule("docker.io/library", "nexus.example:8443/hub", "m.yaml:9:7").unwrap(),
            ],
            ..Default::default()
        };
        let pause: Reference = "registry.k8s.io/pause:3.10.2".parse().unwrap();
        let (moved, rule) = mirrors.image(&pause).unwrap().unwrap();
        assert_eq!(moved.whole(), "127.0.0.1:5880/registry.k8s.io/pause:3.10.2");
        assert_eq!(rule.origin, "--registry-mirror");
        let coredns: Reference =
            format!("registry.k8s.io/coredns/coredns@sha256:{}", "a".repeat(64))
                .parse()
                .unwrap();
        let (moved, _) = mirrors.image(&coredns).unwrap().unwrap();
        assert_eq!(
            moved.whole(),
            format!(
                "127.0.0.1:5880/registry.k8s.io/coredns/coredns@sha256:{}",
                "a".repeat(64)
            )
        );
        let busybox: Reference = "busybox:1.36".parse().unwrap();
        let (moved, _) = mirrors.image(&busybox).unwrap().unwrap();
        assert_eq!(moved.whole(), "nexus.example:8443/hub/busybox:1.36");
        // `registry.k8s.io` does not match `registry.k8s.io.evil/pause`.
        let other: Reference = "registry.k8s.io.evil/pause:1".parse().unwrap();
        assert!(mirrors.image(&other).is_none());
        assert_eq!(mirrors.unused(&[], &[&pause, &busybox]).len(), 0);
        assert_eq!(mirrors.unused(&[], &[&pause]).len(), 1);
    }

    #[test]
    fn bad_rules_are_refused_with_the_reason() {
        for (arg, needle) in [
            ("https://dl.k8s.io", "expected FROM=TO"),
            ("=https://m.example", "expected FROM=TO"),
            ("dl.k8s.io=https://m.example", "is not a URL"),
            (
                "https://dl.k8s.io=ftp://m.example",
                "not an http:// or https:// URL",
            ),
            ("https://dl.k8s.io=https://m.example/?x=1", "no `?query`"),
        ] {
            let err = parse_url_rule(arg).unwrap_err();
            assert!(err.contains(needle), "{arg}: {err}");
        }
        for (arg, needle) in [
            ("registry.k8s.io", "expected FROM=TO"),
            (
                "registry.k8s.io=https://nexus.example/k8s",
                "without a scheme",
            ),
            (
                "registry.k8s.io=mirror/k8s",
                "must start with a registry host",
            ),
            ("registry.k8s.io=Nexus Example", "is not host[:port][/path]"),
        ] {
            let err = parse_registry_rule(arg).unwrap_err();
            assert!(err.contains(needle), "{arg}: {err}");
        }
        let ok = parse_registry_rule("registry.k8s.io=localhost:5000/k8s/").unwrap();
        assert_eq!(ok.to, "localhost:5000/k8s");
        let ok = parse_url_rule("https://dl.k8s.io/=http://127.0.0.1:5881/up/dl.k8s.io/").unwrap();
        assert_eq!(
            (ok.from.as_str(), ok.to.as_str()),
            ("https://dl.k8s.io", "http://127.0.0.1:5881/up/dl.k8s.io")
        );
    }
}
