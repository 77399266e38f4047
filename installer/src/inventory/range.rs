//! Ansible host ranges in host names: `node[01:03]` (zero-padded), `node[1:3]`, `worker[a:c]`, a
//! stride `[1:9:2]`, several ranges in one name (`r[1:2]n[1:2]`), as Ansible's
//! `expand_hostname_range` reads them. Bounds must be given and ordered; unlike Ansible, an empty
//! start (`[:3]`, Ansible reads it as 0) is refused as a likely typo.

use super::error::{Problem, ProblemKind};
use super::raw::{RawHostEntry, RawInventory};

/// Most hosts one pattern may expand to: far more than any cluster, small enough that a typo
/// (`[1:100000]`) is caught rather than resolved.
pub const MAX_EXPANSION: usize = 1000;

/// The names a pattern stands for; a name without `[` is itself.
pub fn expand(pattern: &str) -> Result<Vec<String>, ProblemKind> {
    let bad = |why: &str| ProblemKind::BadHostRange {
        pattern: pattern.to_string(),
        why: why.to_string(),
    };
    let Some(open) = pattern.find('[') else {
        if pattern.contains(']') {
            return Err(bad("`]` without `[`"));
        }
        return Ok(vec![pattern.to_string()]);
    };
    let close = pattern[open..]
        .find(']')
        .map(|at| open + at)
        .ok_or_else(|| bad("unterminated `[`"))?;
    let (head, body, tail) = (
        &pattern[..open],
        &pattern[open + 1..close],
        &pattern[close + 1..],
    );
    if head.contains(']') {
        return Err(bad("`]` without `[`"));
    }
    let parts: Vec<&str> = body.split(':').collect();
    let (start, end, step) = match parts.as_slice() {
        [start, end] => (*start, *end, "1"),
        [start, end, step] => (*start, *end, *step),
        _ => return Err(bad("a range is `[start:end]` or `[start:end:step]`")),
    };
    if start.is_empty() || end.is_empty() {
        return Err(bad("both ends of the range must be given"));
    }
    let step: usize = match step.parse() {
        Ok(step) if step > 0 => step,
        _ => return Err(bad("the step must be a positive whole number")),
    };
    let middles: Vec<String> = if start.chars().all(|c| c.is_ascii_digit())
        && end.chars().all(|c| c.is_ascii_digit())
    {
        // Ansible pads when the start has a leading zero, and then wants equal widths.
        let width = if start.len() > 1 && start.starts_with('0') {
            if start.len() != end.len() {
                return Err(bad(
                    "a zero-padded range needs both ends of the same width (`[01:10]`)",
                ));
            }
            start.len()
        } else {
            0
        };
        let (first, last): (u64, u64) = match (start.parse(), end.parse()) {
            (Ok(first), Ok(last)) => (first, last),
            _ => return Err(bad("the bounds are too large")),
        };
        if first > last {
            return Err(bad("the start is after the end"));
        }
        let count = (last - first) / step as u64 + 1;
        if count > MAX_EXPANSION as u64 {
            return Err(bad(&format!(
                "it names {count} hosts, more than {MAX_EXPANSION}"
            )));
        }
        (first..=last)
            .step_by(step)
            .map(|n| format!("{n:0width$}"))
            .collect()
    } else if start.len() == 1
        && end.len() == 1
        && start.chars().all(|c| c.is_ascii_alphabetic())
        && end.chars().all(|c| c.is_ascii_alphabetic())
    {
        let (first, last) = (start.as_bytes()[0], end.as_bytes()[0]);
        if first > last {
            return Err(bad("the start is after the end"));
        }
        (first..=last)
            .step_by(step)
            .map(|b| char::from(b).to_string())
            .collect()
    } else {
        return Err(bad(
            "bounds are either both numbers (`[1:3]`, `[01:03]`) or both single letters (`[a:c]`)",
        ));
    };
    let tails = expand(tail).map_err(|inner| match inner {
        ProblemKind::BadHostRange { why, .. } => bad(&why),
        other => other,
    })?;
    let total = middles.len() * tails.len();
    if total > MAX_EXPANSION {
        return Err(bad(&format!(
            "it names {total} hosts, more than {MAX_EXPANSION}"
        )));
    }
    Ok(middles
        .iter()
        .flat_map(|middle| {
            tails
                .iter()
                .map(move |rest| format!("{head}{middle}{rest}"))
        })
        .collect())
}

/// Replaces every ranged host entry by the hosts it names, each keeping the pattern's line and
/// variables (so a bad address on a range line is reported at that line).
pub fn expand_entries(raw: &mut RawInventory) -> Vec<Problem> {
    let mut problems = Vec::new();
    for group in &mut raw.groups {
        let mut expanded = Vec::with_capacity(group.hosts.len());
        for entry in group.hosts.drain(..) {
            match expand(&entry.name) {
                Ok(names) => expanded.extend(names.into_iter().map(|name| RawHostEntry {
                    name,
                    line: entry.line,
                    vars: entry.vars.clone(),
                })),
                Err(kind) => problems.push(Problem::new(entry.line, kind)),
            }
        }
        group.hosts = expanded;
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(pattern: &str) -> Vec<String> {
        expand(pattern).unwrap()
    }

    fn why(pattern: &str) -> String {
        match expand(pattern).unwrap_err() {
            ProblemKind::BadHostRange { why, .. } => why,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn numeric_padded_alpha_stride_and_several() {
        assert_eq!(names("node1"), ["node1"]);
        assert_eq!(names("node[01:03]"), ["node01", "node02", "node03"]);
        assert_eq!(names("node[1:3]"), ["node1", "node2", "node3"]);
        assert_eq!(names("node[8:10]"), ["node8", "node9", "node10"]);
        assert_eq!(
            names("worker[a:c].example"),
            ["workera.example", "workerb.example", "workerc.example"]
        );
        assert_eq!(names("n[1:9:4]"), ["n1", "n5", "n9"]);
        assert_eq!(names("r[1:2]n[a:b]"), ["r1na", "r1nb", "r2na", "r2nb"]);
    }

    #[test]
    fn bad_ranges_say_why() {
        assert_eq!(why("n[3:1]"), "the start is after the end");
        assert_eq!(why("n[c:a]"), "the start is after the end");
        assert!(why("n[a:3]").starts_with("bounds are either both numbers"));
        assert_eq!(why("n[1:]"), "both ends of the range must be given");
        assert_eq!(why("n[:3]"), "both ends of the range must be given");
        assert_eq!(why("n[1:3"), "unterminated `[`");
        assert_eq!(why("n1:3]"), "`]` without `[`");
        assert_eq!(
            why("n[1]"),
            "a range is `[start:end]` or `[start:end:step]`"
        );
        assert_eq!(why("n[1:3:0]"), "the step must be a positive whole number");
        assert!(why("n[01:100]").starts_with("a zero-padded range"));
        assert_eq!(why("n[1:5000]"), "it names 5000 hosts, more than 1000");
        assert_eq!(
            why("n[1:100]m[1:100]"),
            "it names 10000 hosts, more than 1000"
        );
    }
}
