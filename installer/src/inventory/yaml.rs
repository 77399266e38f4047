//! Kubespray's YAML inventory (`hosts.yaml`): `all: {hosts: {...}, children: {...}, vars: {...}}`,
//! groups nesting through `children`. Strict: a key that is not `hosts`, `children` or `vars`
//! where a group is expected is an error (a misspelt `chidren` would silently drop a group).

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use super::error::{Problem, ProblemKind};
use super::raw::{RawChild, RawHostEntry, RawInventory, RawVar};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    all: Option<Spanned<Group>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Group {
    #[serde(default)]
    hosts: Option<Entries<Option<Entries<VarValue>>>>,
    #[serde(default)]
    children: Option<Entries<Option<Spanned<Group>>>>,
    #[serde(default)]
    vars: Option<Entries<VarValue>>,
}

/// A YAML mapping kept in file order, keys with their location.
struct Entries<V>(Vec<(Spanned<String>, V)>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Entries<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for EntriesVisitor<V> {
            type Value = Entries<V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }
        deserializer.deserialize_map(EntriesVisitor(PhantomData))
    }
}

/// Any variable value: scalars as their text, lists and maps as `None` (no variable ilha reads
/// takes one; others are ignored anyway).
struct VarValue(Option<String>);

impl<'de> Deserialize<'de> for VarValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AnyVisitor;
        impl<'de> Visitor<'de> for AnyVisitor {
            type Value = VarValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a variable value")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<VarValue, E> {
                Ok(VarValue(Some(v.to_string())))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<VarValue, E> {
                Ok(VarValue(Some(v.to_string())))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<VarValue, E> {
                Ok(VarValue(Some(v.to_string())))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<VarValue, E> {
                Ok(VarValue(Some(v.to_string())))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<VarValue, E> {
                Ok(VarValue(Some(v.to_string())))
            }
            fn visit_unit<E: de::Error>(self) -> Result<VarValue, E> {
                Ok(VarValue(None))
            }
            fn visit_none<E: de::Error>(self) -> Result<VarValue, E> {
                Ok(VarValue(None))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<VarValue, D::Error> {
                VarValue::deserialize(d)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<VarValue, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(VarValue(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<VarValue, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(VarValue(None))
            }
        }
        deserializer.deserialize_any(AnyVisitor)
    }
}

pub fn parse(text: &str) -> Result<RawInventory, Vec<Problem>> {
    let document: Document =
        serde_saphyr::from_str(text).map_err(|err| vec![yaml_problem(&err)])?;
    let mut inventory = RawInventory::default();
    let Some(all) = document.all else {
        return Err(vec![Problem::new(
            1,
            ProblemKind::Yaml(
                "`all:` is empty: expected `all: {hosts: ..., children: ...}`".into(),
            ),
        )]);
    };
    let line = line_of(&all);
    add_group(&mut inventory, "all", line, all.value);
    Ok(inventory)
}

fn add_group(inventory: &mut RawInventory, name: &str, line: usize, group: Group) {
    // Declare the group even when empty, as an empty INI section does.
    inventory.group_mut(name, line);
    for (host, vars) in group.hosts.map(|e| e.0).unwrap_or_default() {
        let entry = RawHostEntry {
            name: host.value.clone(),
            line: line_of(&host),
            vars: vars.map(|v| to_raw_vars(v.0)).unwrap_or_default(),
        };
        inventory.group_mut(name, line).hosts.push(entry);
    }
    let vars = group.vars.map(|v| to_raw_vars(v.0)).unwrap_or_default();
    inventory.group_mut(name, line).vars.extend(vars);
    for (child, body) in group.children.map(|e| e.0).unwrap_or_default() {
        let child_line = line_of(&child);
        inventory.group_mut(name, line).children.push(RawChild {
            name: child.value.clone(),
            line: child_line,
        });
        add_group(
            inventory,
            &child.value,
            child_line,
            body.map(|b| b.value).unwrap_or_default(),
        );
    }
}

fn to_raw_vars(entries: Vec<(Spanned<String>, VarValue)>) -> Vec<RawVar> {
    entries
        .into_iter()
        .map(|(key, value)| RawVar {
            line: line_of(&key),
            key: key.value,
            value: value.0,
        })
        .collect()
}

fn line_of<T>(spanned: &Spanned<T>) -> usize {
    usize::try_from(spanned.referenced.line())
        .unwrap_or(1)
        .max(1)
}

fn yaml_problem(err: &serde_saphyr::Error) -> Problem {
    let (line, message) = line_and_message(err);
    Problem::new(line, ProblemKind::Yaml(message))
}

/// The line of a serde-saphyr error and its message without the location (we print `file:line:`
/// in front) nor advice about the library's own options.
pub(crate) fn line_and_message(err: &serde_saphyr::Error) -> (usize, String) {
    let line = err.location().map_or(1, |location| {
        usize::try_from(location.line()).unwrap_or(1).max(1)
    });
    let mut message = err.without_snippet().to_string();
    if let Some(at) = message.rfind(" at line ") {
        message.truncate(at);
    }
    if let Some(at) = message.find(", set DuplicateKeyPolicy") {
        message.truncate(at);
    }
    (line, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_hosts_and_lines() {
        let text = "all:\n  hosts:\n    node1:\n      ansible_host: 10.0.0.1\n      ansible_port: 2222\n      extra: [1, 2]\n  children:\n    etcd:\n      hosts:\n        node1:\n";
        let raw = parse(text).unwrap();
        let all = &raw.groups[0];
        assert_eq!(all.name, "all");
        assert_eq!(all.hosts[0].name, "node1");
        assert_eq!(all.hosts[0].line, 3);
        assert_eq!(all.hosts[0].vars[0].line, 4);
        assert_eq!(all.hosts[0].vars[1].value.as_deref(), Some("2222"));
        assert_eq!(all.hosts[0].vars[2].value, None);
        assert_eq!(all.children[0].name, "etcd");
        assert_eq!(all.children[0].line, 8);
        assert_eq!(raw.groups[1].hosts[0].line, 10);
    }

    #[test]
    fn unknown_group_key_is_an_error_with_its_line() {
        let problems = parse("all:\n  hosts:\n    n1:\n  chidren:\n    etcd:\n").unwrap_err();
        assert_eq!(problems[0].line, 4, "{problems:?}");
    }
}
