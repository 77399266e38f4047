//! Ansible's INI inventory syntax, the subset Kubespray inventories use:
//! host lines (`node1 ansible_host=10.0.0.1 ip=10.0.0.1`), `[group]`, `[group:children]`,
//! `[group:vars]` sections, and `#`/`;` comments. Hosts before the first section are ungrouped.

use super::error::{Problem, ProblemKind};
use super::raw::{RawChild, RawHostEntry, RawInventory, RawVar};

enum Section {
    Hosts(String),
    Children(String),
    Vars(String),
}

pub fn parse(text: &str) -> Result<RawInventory, Vec<Problem>> {
    let mut inventory = RawInventory::default();
    let mut problems = Vec::new();
    let mut section = Section::Hosts("ungrouped".to_string());
    for (index, raw_line) in text.lines().enumerate() {
        let line = index + 1;
        let trimmed = raw_line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        if trimmed.starts_with('[') {
            match parse_header(trimmed) {
                Some(next) => {
                    let name = match &next {
                        Section::Hosts(name) | Section::Children(name) | Section::Vars(name) => {
                            name
                        }
                    };
                    // A section declares its group even when empty (`[calico_rr]`).
                    inventory.group_mut(name, line);
                    section = next;
                }
                None => {
                    problems.push(Problem::new(
                        line,
                        ProblemKind::BadSectionHeader(trimmed.to_string()),
                    ));
                    // Skip the section's lines rather than pile up follow-on errors.
                    section = Section::Vars(String::new());
                }
            }
            continue;
        }
        let result = match &section {
            Section::Hosts(group) => parse_host_line(trimmed, line).map(|entry| {
                inventory.group_mut(group, line).hosts.push(entry);
            }),
            Section::Children(group) => parse_child_line(trimmed, line).map(|child| {
                inventory.group_mut(group, line).children.push(child);
            }),
            Section::Vars(group) if group.is_empty() => Ok(()),
            Section::Vars(group) => parse_var_line(trimmed, line).map(|var| {
                inventory.group_mut(group, line).vars.push(var);
            }),
        };
        if let Err(problem) = result {
            problems.push(problem);
        }
    }
    if problems.is_empty() {
        Ok(inventory)
    } else {
        Err(problems)
    }
}

/// `[name]`, `[name:children]` or `[name:vars]`, optionally followed by a comment.
fn parse_header(trimmed: &str) -> Option<Section> {
    let close = trimmed.find(']')?;
    let after = trimmed[close + 1..].trim();
    if !(after.is_empty() || after.starts_with('#') || after.starts_with(';')) {
        return None;
    }
    let inner = trimmed[1..close].trim();
    let (name, kind) = match inner.split_once(':') {
        Some((name, kind)) => (name, Some(kind)),
        None => (inner, None),
    };
    if name.is_empty() || !name.chars().all(is_group_name_char) {
        return None;
    }
    let name = name.to_string();
    match kind {
        None => Some(Section::Hosts(name)),
        Some("children") => Some(Section::Children(name)),
        Some("vars") => Some(Section::Vars(name)),
        Some(_) => None,
    }
}

fn is_group_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

fn parse_host_line(trimmed: &str, line: usize) -> Result<RawHostEntry, Problem> {
    let tokens = tokenize(trimmed)
        .map_err(|()| Problem::new(line, ProblemKind::UnterminatedQuote(trimmed.to_string())))?;
    let mut tokens = tokens.into_iter();
    let name = tokens.next().unwrap_or_default();
    let mut vars = Vec::new();
    for token in tokens {
        let Some((key, value)) = token.split_once('=') else {
            return Err(Problem::new(line, ProblemKind::NotKeyValue(token)));
        };
        if key.is_empty() {
            return Err(Problem::new(line, ProblemKind::NotKeyValue(token)));
        }
        vars.push(RawVar {
            key: key.to_string(),
            value: Some(value.to_string()),
            line,
        });
    }
    Ok(RawHostEntry { name, line, vars })
}

fn parse_child_line(trimmed: &str, line: usize) -> Result<RawChild, Problem> {
    let name = strip_inline_comment(trimmed);
    if name.is_empty() || !name.chars().all(is_group_name_char) {
        return Err(Problem::new(
            line,
            ProblemKind::BadChildLine(trimmed.to_string()),
        ));
    }
    Ok(RawChild {
        name: name.to_string(),
        line,
    })
}

/// In `[group:vars]` Ansible allows spaces around `=` and takes the rest of the line as the value.
fn parse_var_line(trimmed: &str, line: usize) -> Result<RawVar, Problem> {
    let Some((key, value)) = trimmed.split_once('=') else {
        return Err(Problem::new(
            line,
            ProblemKind::NotKeyValue(trimmed.to_string()),
        ));
    };
    let key = key.trim();
    if key.is_empty() || key.contains(char::is_whitespace) {
        return Err(Problem::new(
            line,
            ProblemKind::NotKeyValue(trimmed.to_string()),
        ));
    }
    let value = value.trim();
    let value = match tokenize(value) {
        Ok(tokens) if tokens.len() == 1 && starts_quoted(value) => tokens[0].clone(),
        Ok(_) => strip_inline_comment(value).to_string(),
        Err(()) => {
            return Err(Problem::new(
                line,
                ProblemKind::UnterminatedQuote(trimmed.to_string()),
            ));
        }
    };
    Ok(RawVar {
        key: key.to_string(),
        value: Some(value),
        line,
    })
}

fn starts_quoted(value: &str) -> bool {
    value.starts_with('"') || value.starts_with('\'')
}

fn strip_inline_comment(text: &str) -> &str {
    match text.find(" #").or_else(|| text.find("\t#")) {
        Some(at) => text[..at].trim(),
        None => text.trim(),
    }
}

/// Splits on whitespace, honouring `'...'` and `"..."` (quotes removed) anywhere in a token, and
/// stops at a token starting with `#` (inline comment). Err on an unterminated quote.
fn tokenize(text: &str) -> Result<Vec<String>, ()> {
    let mut tokens = Vec::new();
    let mut current = String::new();
    let mut in_token = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '#' if !in_token => break,
            c if c.is_whitespace() => {
                if in_token {
                    tokens.push(std::mem::take(&mut current));
                    in_token = false;
                }
            }
            '"' | '\'' => {
                in_token = true;
                let quote = c;
                loop {
                    match chars.next() {
                        Some(q) if q == quote => break,
                        Some(other) => current.push(other),
                        None => return Err(()),
                    }
                }
            }
            other => {
                in_token = true;
                current.push(other);
            }
        }
    }
    if in_token {
        tokens.push(current);
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizer_handles_quotes_and_comments() {
        assert_eq!(
            tokenize(r#"node1 a=1 b="x y" c='z' # trailing"#).unwrap(),
            vec!["node1", "a=1", "b=x y", "c=z"]
        );
        assert!(tokenize("node1 a=\"open").is_err());
    }

    #[test]
    fn headers() {
        assert!(
            matches!(parse_header("[kube-master]"), Some(Section::Hosts(n)) if n == "kube-master")
        );
        assert!(matches!(
            parse_header("[k8s-cluster:children]"),
            Some(Section::Children(_))
        ));
        assert!(matches!(parse_header("[all:vars] # c"), Some(Section::Vars(n)) if n == "all"));
        assert!(parse_header("[kube-master").is_none());
        assert!(parse_header("[x:childs]").is_none());
        assert!(parse_header("[]").is_none());
        assert!(parse_header("[a b]").is_none());
    }

    #[test]
    fn sections_and_lines_are_kept() {
        let raw =
            parse("n1 ansible_host=h1\n\n[etcd]\nn1\n[all:vars]\nansible_user = admin\n").unwrap();
        let ungrouped = &raw.groups[0];
        assert_eq!(ungrouped.name, "ungrouped");
        assert_eq!(ungrouped.hosts[0].vars[0].key, "ansible_host");
        assert_eq!(raw.groups[1].hosts[0].line, 4);
        let all = raw.groups.iter().find(|g| g.name == "all").unwrap();
        assert_eq!(all.vars[0].value.as_deref(), Some("admin"));
        assert_eq!(all.vars[0].line, 6);
    }

    #[test]
    fn old_and_new_group_names_merge() {
        let raw = parse("[kube-master]\nn1\n[kube_control_plane]\nn2\n").unwrap();
        assert_eq!(raw.groups.len(), 1);
        assert_eq!(raw.groups[0].name, "kube-master");
        assert_eq!(raw.groups[0].hosts.len(), 2);
    }

    #[test]
    fn errors_carry_lines() {
        let problems = parse("n1 ansible_host=h\n[kube-master\nn1\n[etcd]\nn1 oops\n").unwrap_err();
        assert_eq!(problems[0].line, 2);
        assert!(matches!(problems[0].kind, ProblemKind::BadSectionHeader(_)));
        assert_eq!(problems[1].line, 5);
        assert!(matches!(problems[1].kind, ProblemKind::NotKeyValue(_)));
    }
}
