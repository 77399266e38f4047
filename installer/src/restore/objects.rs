//! `ilha restore --objects`: a dump made by [`crate::backup::objects::dump`] back into a cluster
//! (a new one, or the same), in file order, through the Kubernetes API.
//!
//! - Nodes are never created: labels, annotations and taints are merged onto the Node of the same
//!   name; nodes with no such Node are listed.
//! - Everything else goes through server-side apply (field manager `ilha`, forced), so restoring
//!   twice changes nothing the second time ("unchanged": same resourceVersion before and after).
//! - CRDs are waited for (Established) and discovery is run again before the objects after them.
//! - PersistentVolumes come back pointing at their claim by namespace and name; once the claims
//!   exist each volume's `claimRef.uid` is set to the new claim's UID (the seed's
//!   `recover-pv-binding.sh`), and a claim that exists already is pointed at when the volume is
//!   applied, so a second restore finds nothing to change.
//! - The whole dump is read and checked before anything is written; then one failed object
//!   doesn't stop the others, and [`RestoreReport::failures`] counts them.
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::{StreamExt, stream};
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use serde_json::{Map, Value, json};

use crate::backup::objects::{
    ManifestOrder, ServedResource, api_message, discover, resource_label, yaml_options,
};

/// Field manager of every write, so a later restore (or the operator) sees who set what.
const FIELD_MANAGER: &str = "ilha";
/// Objects of one file applied at once.
const CONCURRENT_APPLIES: usize = 16;
/// How long a new CRD may take to be Established.
const CRD_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreOptions {
    /// Write nothing: report what would be created, the diff of what would change, or unchanged.
    pub dry_run: bool,
}

/// What happened to one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Updated,
    Unchanged,
    /// Dry run: the object doesn't exist.
    WouldCreate,
    /// Dry run: the object exists; the diff of the fields the dump sets (live, then restored).
    WouldUpdate(String),
    /// The API server's message (or why it was not sent).
    Failed(String),
}

/// One object of the dump and what happened to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectResult {
    /// Dump file it comes from (`003-configmaps.yaml`).
    pub file: String,
    /// `configmaps`, `deployments.apps`.
    pub resource: String,
    /// `namespace/name`, or `name` for cluster-wide objects.
    pub object: String,
    pub outcome: Outcome,
}

/// What happened to one Node of the dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeOutcome {
    Patched,
    Unchanged,
    /// No Node of that name in the cluster: nothing done.
    Missing,
    /// Dry run: the diff of labels, annotations and taints.
    WouldPatch(String),
    Failed(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeResult {
    pub file: String,
    pub name: String,
    pub outcome: NodeOutcome,
}

/// What a restore did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreReport {
    pub dry_run: bool,
    /// Every object but Nodes, in dump order.
    pub objects: Vec<ObjectResult>,
    pub nodes: Vec<NodeResult>,
    /// `pv -> namespace/claim`: volumes whose claimRef now holds the new claim's UID (in a dry
    /// run: would).
    pub volumes_repointed: Vec<String>,
    /// `pv -> namespace/claim`: volumes whose claim is not in the dump, left as they are.
    pub volumes_without_claim: Vec<String>,
    /// Failures that are not one object's: a CRD never Established, a volume not re-pointed.
    pub other_failures: Vec<String>,
}

/// Objects per resource and outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub created: usize,
    pub updated: usize,
    pub unchanged: usize,
    pub would_create: usize,
    pub would_update: usize,
    pub failed: usize,
}

impl RestoreReport {
    /// Objects, nodes and volumes that could not be restored; the command fails when > 0.
    pub fn failures(&self) -> usize {
        self.objects
            .iter()
            .filter(|o| matches!(o.outcome, Outcome::Failed(_)))
            .count()
            + self
                .nodes
                .iter()
                .filter(|n| matches!(n.outcome, NodeOutcome::Failed(_)))
                .count()
            + self.other_failures.len()
    }

    /// Outcomes per resource label, in dump order.
    pub fn counts(&self) -> Vec<(String, Counts)> {
        let mut order: Vec<String> = Vec::new();
        let mut counts: HashMap<&str, Counts> = HashMap::new();
        for object in &self.objects {
            if !counts.contains_key(object.resource.as_str()) {
                order.push(object.resource.clone());
            }
            let c = counts.entry(&object.resource).or_default();
            match object.outcome {
                Outcome::Created => c.created += 1,
                Outcome::Updated => c.updated += 1,
                Outcome::Unchanged => c.unchanged += 1,
                Outcome::WouldCreate => c.would_create += 1,
                Outcome::WouldUpdate(_) => c.would_update += 1,
                Outcome::Failed(_) => c.failed += 1,
            }
        }
        order
            .into_iter()
            .map(|label| {
                let c = counts[label.as_str()];
                (label, c)
            })
            .collect()
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts = [
            (self.created, "created"),
            (self.updated, "updated"),
            (self.unchanged, "unchanged"),
            (self.would_create, "to create"),
            (self.would_update, "to update"),
            (self.failed, "failed"),
        ];
        let text: Vec<String> = parts
            .iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, what)| format!("{n} {what}"))
            .collect();
        f.write_str(&text.join(", "))
    }
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

impl fmt::Display for RestoreReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.dry_run {
            writeln!(f, "Dry run: nothing was written.")?;
            for o in &self.objects {
                match &o.outcome {
                    Outcome::WouldCreate => writeln!(f, "create {} {}", o.resource, o.object)?,
                    Outcome::WouldUpdate(diff) => {
                        writeln!(f, "update {} {}", o.resource, o.object)?;
                        f.write_str(&indent(diff))?;
                    }
                    Outcome::Unchanged => writeln!(f, "unchanged {} {}", o.resource, o.object)?,
                    _ => {}
                }
            }
            for n in &self.nodes {
                match &n.outcome {
                    NodeOutcome::WouldPatch(diff) => {
                        writeln!(f, "patch node {}", n.name)?;
                        f.write_str(&indent(diff))?;
                    }
                    NodeOutcome::Unchanged => writeln!(f, "unchanged node {}", n.name)?,
                    _ => {}
                }
            }
            for volume in &self.volumes_repointed {
                writeln!(
                    f,
                    "re-point persistentvolume {volume} to the claim's new UID"
                )?;
            }
        }
        writeln!(f, "Objects:")?;
        for (resource, counts) in self.counts() {
            writeln!(f, "  {resource}: {counts}")?;
        }
        let nodes_with = |pred: fn(&NodeOutcome) -> bool| -> Vec<&str> {
            self.nodes
                .iter()
                .filter(|n| pred(&n.outcome))
                .map(|n| n.name.as_str())
                .collect()
        };
        if !self.nodes.is_empty() {
            let patched =
                nodes_with(|o| matches!(o, NodeOutcome::Patched | NodeOutcome::WouldPatch(_)));
            let unchanged = nodes_with(|o| matches!(o, NodeOutcome::Unchanged));
            let missing = nodes_with(|o| matches!(o, NodeOutcome::Missing));
            let verb = if self.dry_run { "to patch" } else { "patched" };
            writeln!(
                f,
                "Nodes: {} {verb}, {} unchanged",
                patched.len(),
                unchanged.len()
            )?;
            if !missing.is_empty() {
                writeln!(
                    f,
                    "  in the dump but not in this cluster (labels, annotations, taints not restored): {}",
                    missing.join(", ")
                )?;
            }
        }
        if !self.dry_run && !self.volumes_repointed.is_empty() {
            writeln!(
                f,
                "PersistentVolumes re-pointed to their new claims: {}",
                self.volumes_repointed.join(", ")
            )?;
        }
        if !self.volumes_without_claim.is_empty() {
            writeln!(
                f,
                "PersistentVolumes whose claim is not in the dump, left as they are: {}",
                self.volumes_without_claim.join(", ")
            )?;
        }
        if self.failures() > 0 {
            writeln!(f, "{} failed:", self.failures())?;
            for o in &self.objects {
                if let Outcome::Failed(message) = &o.outcome {
                    writeln!(f, "  {}: {}: {message}", o.file, o.object)?;
                }
            }
            for n in &self.nodes {
                if let NodeOutcome::Failed(message) = &n.outcome {
                    writeln!(f, "  {}: node {}: {message}", n.file, n.name)?;
                }
            }
            for message in &self.other_failures {
                writeln!(f, "  {message}")?;
            }
        }
        Ok(())
    }
}

/// One file of the dump, read and checked.
#[derive(Debug)]
struct DumpFile {
    name: String,
    objects: Vec<Value>,
}

fn str_at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(value, |v, key| v.get(key))
        .and_then(Value::as_str)
}

/// `NNN-*.yaml` files of `dir` in name order, each parsed (multi-document or `kind: List`) and
/// each object checked for apiVersion, kind and name. Any problem is an error naming the file.
fn read_dump(dir: &Path) -> Result<Vec<DumpFile>> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("reading the dump {}", dir.display()))?;
    let mut names = Vec::new();
    for entry in entries {
        let name = entry?.file_name().to_string_lossy().into_owned();
        let numbered = name.len() > 4
            && name.as_bytes()[..3].iter().all(u8::is_ascii_digit)
            && name.as_bytes()[3] == b'-';
        if numbered && (name.ends_with(".yaml") || name.ends_with(".yml")) {
            names.push(name);
        }
    }
    if names.is_empty() {
        bail!(
            "{} holds no dump files (NNN-<resource>.yaml)",
            dir.display()
        );
    }
    names.sort();
    // Dumps are trusted input of any size: no document or node budget.
    let options = serde_saphyr::options! { budget: None };
    let mut files = Vec::new();
    for name in names {
        let path = dir.join(&name);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let documents: Vec<Value> =
            serde_saphyr::from_multiple_with_options(&text, options.clone())
                .map_err(|e| anyhow::anyhow!("{name}: not valid YAML: {e}"))?;
        let mut objects = Vec::new();
        for (index, document) in documents.into_iter().enumerate() {
            if document.is_null() {
                continue;
            }
            let items = if document.get("kind").and_then(Value::as_str) == Some("List") {
                match document.get("items") {
                    Some(Value::Array(items)) => items.clone(),
                    _ => bail!("{name}: document {}: a List without items", index + 1),
                }
            } else {
                vec![document]
            };
            for item in items {
                for field in [&["apiVersion"][..], &["kind"], &["metadata", "name"]] {
                    if str_at(&item, field).is_none_or(str::is_empty) {
                        bail!(
                            "{name}: document {}: no {} (is this an object dump?)",
                            index + 1,
                            field.join(".")
                        );
                    }
                }
                objects.push(item);
            }
        }
        files.push(DumpFile { name, objects });
    }
    Ok(files)
}

/// The resource types the cluster serves, by (apiVersion, kind).
struct Types(HashMap<(String, String), ServedResource>);

impl Types {
    async fn discover(client: &kube::Client) -> Result<Types> {
        let (served, _unreachable) = discover(client).await?;
        Ok(Types(
            served
                .into_iter()
                .map(|r| ((r.api.api_version.clone(), r.api.kind.clone()), r))
                .collect(),
        ))
    }

    fn get(&self, object: &Value) -> Option<&ServedResource> {
        let api_version = str_at(object, &["apiVersion"])?;
        let kind = str_at(object, &["kind"])?;
        self.0.get(&(api_version.to_owned(), kind.to_owned()))
    }
}

fn is_kind(object: &Value, api_version: &str, kind: &str) -> bool {
    str_at(object, &["apiVersion"]) == Some(api_version) && str_at(object, &["kind"]) == Some(kind)
}

fn is_node(object: &Value) -> bool {
    is_kind(object, "v1", "Node")
}

fn is_crd(object: &Value) -> bool {
    str_at(object, &["apiVersion"]).is_some_and(|v| v.starts_with("apiextensions.k8s.io/"))
        && str_at(object, &["kind"]) == Some("CustomResourceDefinition")
}

fn name_of(object: &Value) -> &str {
    str_at(object, &["metadata", "name"]).unwrap_or_default()
}

fn core_api(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: String::new(),
        version: "v1".into(),
        api_version: "v1".into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// What each object's restore needs to know.
struct Restorer<'a> {
    client: &'a kube::Client,
    dry_run: bool,
    types: Types,
    /// (apiVersion, kind) -> resource label of every custom resource the dump's CRDs define:
    /// in a dry run the cluster doesn't serve them yet, which is no failure.
    dumped_custom_types: HashMap<(String, String), String>,
    /// Namespaces that exist in the cluster (dry run: objects elsewhere can't be validated).
    existing_namespaces: HashSet<String>,
}

impl Restorer<'_> {
    fn api(&self, served: &ServedResource, namespace: Option<&str>) -> Api<DynamicObject> {
        match (served.namespaced, namespace) {
            (true, ns) => {
                Api::namespaced_with(self.client.clone(), ns.unwrap_or("default"), &served.api)
            }
            (false, _) => Api::all_with(self.client.clone(), &served.api),
        }
    }

    fn claims(&self, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.client.clone(),
            namespace,
            &core_api("PersistentVolumeClaim", "persistentvolumeclaims"),
        )
    }

    /// The UID of claim `namespace/name` in the cluster, if it exists.
    async fn claim_uid(&self, namespace: &str, name: &str) -> Result<Option<String>, kube::Error> {
        Ok(self
            .claims(namespace)
            .get_opt(name)
            .await?
            .and_then(|c| c.metadata.uid))
    }
}

/// `namespace/name` of a volume's claim.
fn claim_of(volume: &Value) -> Option<(String, String)> {
    let namespace = str_at(volume, &["spec", "claimRef", "namespace"])?;
    let name = str_at(volume, &["spec", "claimRef", "name"])?;
    Some((namespace.to_owned(), name.to_owned()))
}

fn set_claim_uid(volume: &mut Value, uid: &str) {
    if let Some(Value::Object(claim_ref)) = volume.pointer_mut("/spec/claimRef") {
        claim_ref.insert("uid".into(), Value::String(uid.to_owned()));
        claim_ref.remove("resourceVersion");
    }
}

/// The parts of `source` at the paths `shape` sets: what a dump's object says about a live one.
fn subset(shape: &Value, source: &Value) -> Value {
    match (shape, source) {
        (Value::Object(shape), Value::Object(source)) => Value::Object(
            shape
                .iter()
                .filter_map(|(key, inner)| Some((key.clone(), subset(inner, source.get(key)?))))
                .collect(),
        ),
        (_, source) => source.clone(),
    }
}

fn to_yaml(value: &Value) -> String {
    serde_saphyr::to_string_with_options(&ManifestOrder(value), yaml_options())
        .unwrap_or_else(|e| format!("<not YAML: {e}>\n"))
}

/// A unified-style line diff (`-` live, `+` restored, 3 lines of context); empty if equal.
pub(crate) fn line_diff(before: &str, after: &str) -> String {
    let a: Vec<&str> = before.lines().collect();
    let b: Vec<&str> = after.lines().collect();
    if a == b {
        return String::new();
    }
    // Longest common subsequence table, from the ends: small inputs (one object's fields).
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut lines: Vec<(char, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            lines.push((' ', a[i]));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            lines.push(('-', a[i]));
            i += 1;
        } else {
            lines.push(('+', b[j]));
            j += 1;
        }
    }
    const CONTEXT: usize = 3;
    let changed: Vec<usize> = (0..lines.len()).filter(|&k| lines[k].0 != ' ').collect();
    let near_change = |k: usize| changed.iter().any(|&c| c.abs_diff(k) <= CONTEXT);
    let mut out = String::from("--- live\n+++ dump\n");
    let mut skipped = false;
    for (k, (mark, line)) in lines.iter().enumerate() {
        if near_change(k) {
            if skipped {
                out.push_str("@@\n");
                skipped = false;
            }
            out.push(*mark);
            out.push_str(line);
            out.push('\n');
        } else {
            skipped = true;
        }
    }
    out
}

fn object_label(object: &Value, namespaced: bool) -> String {
    match (namespaced, str_at(object, &["metadata", "namespace"])) {
        (true, Some(ns)) => format!("{ns}/{}", name_of(object)),
        (true, None) => format!("default/{}", name_of(object)),
        (false, _) => name_of(object).to_owned(),
    }
}

async fn restore_object(ctx: &Restorer<'_>, file: &str, mut object: Value) -> ObjectResult {
    let Some(served) = ctx.types.get(&object) else {
        let api_version = str_at(&object, &["apiVersion"])
            .unwrap_or_default()
            .to_owned();
        let kind = str_at(&object, &["kind"]).unwrap_or_default().to_owned();
        let custom = ctx
            .dumped_custom_types
            .get(&(api_version.clone(), kind.clone()));
        let (resource, outcome) = match custom {
            Some(label) if ctx.dry_run => (label.clone(), Outcome::WouldCreate),
            _ => (
                custom
                    .cloned()
                    .unwrap_or_else(|| format!("{kind} ({api_version})")),
                Outcome::Failed(format!("the cluster serves no {kind} in {api_version}")),
            ),
        };
        let namespaced = str_at(&object, &["metadata", "namespace"]).is_some();
        return ObjectResult {
            file: file.to_owned(),
            resource,
            object: object_label(&object, namespaced),
            outcome,
        };
    };
    let namespace = str_at(&object, &["metadata", "namespace"]).map(str::to_owned);
    let resource = resource_label(&served.api);
    let label = object_label(&object, served.namespaced);
    let result = |outcome| ObjectResult {
        file: file.to_owned(),
        resource: resource.clone(),
        object: label.clone(),
        outcome,
    };
    let name = name_of(&object).to_owned();
    if served.namespaced
        && ctx.dry_run
        && !ctx
            .existing_namespaces
            .contains(namespace.as_deref().unwrap_or("default"))
    {
        // Its namespace would be created first: nothing in it exists, nothing to validate against.
        return result(Outcome::WouldCreate);
    }
    // A volume points at its claim's current UID when the claim exists already (a second
    // restore); otherwise it is re-pointed once the claims are made.
    if (served.api.group.as_str(), served.api.plural.as_str()) == ("", "persistentvolumes")
        && let Some((claim_ns, claim_name)) = claim_of(&object)
    {
        match ctx.claim_uid(&claim_ns, &claim_name).await {
            Ok(Some(uid)) => set_claim_uid(&mut object, &uid),
            Ok(None) => {}
            Err(err) => return result(Outcome::Failed(api_message(&err))),
        }
    }
    let api = ctx.api(served, namespace.as_deref());
    let live = match api.get_opt(&name).await {
        Ok(live) => live,
        Err(err) => return result(Outcome::Failed(api_message(&err))),
    };
    let mut params = PatchParams::apply(FIELD_MANAGER).force();
    params.dry_run = ctx.dry_run;
    let applied = match api.patch(&name, &params, &Patch::Apply(&object)).await {
        Ok(applied) => applied,
        Err(err) => return result(Outcome::Failed(api_message(&err))),
    };
    let outcome = match (live, ctx.dry_run) {
        (None, false) => Outcome::Created,
        (None, true) => Outcome::WouldCreate,
        (Some(live), false) => {
            if live.metadata.resource_version == applied.metadata.resource_version
                || same_content(&live, &applied)
            {
                Outcome::Unchanged
            } else {
                Outcome::Updated
            }
        }
        (Some(live), true) => {
            let before = to_yaml(&subset(
                &object,
                &serde_json::to_value(&live).unwrap_or_default(),
            ));
            let after = to_yaml(&subset(
                &object,
                &serde_json::to_value(&applied).unwrap_or_default(),
            ));
            let diff = line_diff(&before, &after);
            if diff.is_empty() {
                Outcome::Unchanged
            } else {
                Outcome::WouldUpdate(diff)
            }
        }
    };
    result(outcome)
}

/// Whether two versions of an object differ only in resourceVersion. An apply that changes
/// nothing can still be written once after a create (1.20 stores a PVC's or Job's defaulted
/// status the first time it is updated); that is no change the operator would call one.
fn same_content(before: &DynamicObject, after: &DynamicObject) -> bool {
    let normalise = |object: &DynamicObject| {
        let mut object = object.clone();
        object.metadata.resource_version = None;
        serde_json::to_value(&object).ok()
    };
    normalise(before) == normalise(after)
}

fn string_map(value: Option<&Value>) -> BTreeMap<String, Value> {
    match value {
        Some(Value::Object(map)) => map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        _ => BTreeMap::new(),
    }
}

/// The merge patch that puts the dump's labels, annotations and taints onto `live` (taints are
/// merged by key and effect: the cluster's own stay), or None when it has them all.
fn node_patch(dumped: &Value, live: &Value) -> Option<Value> {
    let mut metadata = Map::new();
    for field in ["labels", "annotations"] {
        let have = string_map(live.pointer(&format!("/metadata/{field}")));
        let missing: Map<String, Value> = string_map(dumped.pointer(&format!("/metadata/{field}")))
            .into_iter()
            .filter(|(k, v)| have.get(k) != Some(v))
            .collect();
        if !missing.is_empty() {
            metadata.insert(field.into(), Value::Object(missing));
        }
    }
    let taint_id = |t: &Value| {
        (
            str_at(t, &["key"]).map(str::to_owned),
            str_at(t, &["effect"]).map(str::to_owned),
        )
    };
    let live_taints: Vec<Value> = live
        .pointer("/spec/taints")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut taints = live_taints.clone();
    for taint in dumped
        .pointer("/spec/taints")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match taints.iter_mut().find(|t| taint_id(t) == taint_id(taint)) {
            Some(existing) if existing.get("value") == taint.get("value") => {}
            Some(existing) => *existing = taint.clone(),
            None => taints.push(taint.clone()),
        }
    }
    let mut patch = Map::new();
    if !metadata.is_empty() {
        patch.insert("metadata".into(), Value::Object(metadata));
    }
    if taints != live_taints {
        patch.insert("spec".into(), json!({ "taints": taints }));
    }
    (!patch.is_empty()).then_some(Value::Object(patch))
}

async fn restore_node(ctx: &Restorer<'_>, file: &str, dumped: &Value) -> NodeResult {
    let name = name_of(dumped).to_owned();
    let result = |outcome| NodeResult {
        file: file.to_owned(),
        name: name.clone(),
        outcome,
    };
    let nodes: Api<DynamicObject> = Api::all_with(ctx.client.clone(), &core_api("Node", "nodes"));
    let live = match nodes.get_opt(&name).await {
        Ok(Some(live)) => serde_json::to_value(&live).unwrap_or_default(),
        Ok(None) => return result(NodeOutcome::Missing),
        Err(err) => return result(NodeOutcome::Failed(api_message(&err))),
    };
    let Some(patch) = node_patch(dumped, &live) else {
        return result(NodeOutcome::Unchanged);
    };
    if ctx.dry_run {
        // What restore touches on a Node, before and after.
        let touched = |node: &Value| {
            let at = |path: &str| node.pointer(path).cloned().unwrap_or(Value::Null);
            json!({
                "metadata": {"labels": at("/metadata/labels"), "annotations": at("/metadata/annotations")},
                "spec": {"taints": at("/spec/taints")},
            })
        };
        let mut after = live.clone();
        json_merge(&mut after, &patch);
        let diff = line_diff(&to_yaml(&touched(&live)), &to_yaml(&touched(&after)));
        return result(NodeOutcome::WouldPatch(diff));
    }
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    match nodes.patch(&name, &params, &Patch::Merge(&patch)).await {
        Ok(_) => result(NodeOutcome::Patched),
        Err(err) => result(NodeOutcome::Failed(api_message(&err))),
    }
}

/// RFC 7386 merge of `patch` into `target` (for showing a node patch in a dry run).
fn json_merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                if value.is_null() {
                    target.remove(key);
                } else {
                    json_merge(target.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

/// Waits until every CRD in `names` reports Established; returns those that don't in time.
async fn wait_established(
    client: &kube::Client,
    crd: &ServedResource,
    names: &[String],
) -> Vec<String> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &crd.api);
    let deadline = Instant::now() + CRD_TIMEOUT;
    let mut waiting: Vec<String> = names.to_vec();
    while !waiting.is_empty() && Instant::now() < deadline {
        let mut still = Vec::new();
        for name in waiting {
            let established = match api.get_opt(&name).await {
                Ok(Some(crd)) => crd
                    .data
                    .pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .is_some_and(|conditions| {
                        conditions.iter().any(|c| {
                            str_at(c, &["type"]) == Some("Established")
                                && str_at(c, &["status"]) == Some("True")
                        })
                    }),
                _ => false,
            };
            if !established {
                still.push(name);
            }
        }
        waiting = still;
        if !waiting.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    waiting
}

/// Restores the dump in `dir` into the cluster `client` reaches (see the module docs). Errors
/// only when the dump can't be read or the cluster can't be discovered; object failures are in
/// the report.
pub async fn restore(
    client: &kube::Client,
    dir: &Path,
    options: &RestoreOptions,
) -> Result<RestoreReport> {
    let files = read_dump(dir)?;
    let dry_run = options.dry_run;
    let mut report = RestoreReport {
        dry_run,
        ..RestoreReport::default()
    };
    let all_objects = || {
        files
            .iter()
            .flat_map(|f| f.objects.iter().map(move |o| (f, o)))
    };
    let dumped_claims: HashSet<(String, String)> = all_objects()
        .filter(|(_, o)| is_kind(o, "v1", "PersistentVolumeClaim"))
        .map(|(_, o)| {
            (
                str_at(o, &["metadata", "namespace"])
                    .unwrap_or("default")
                    .to_owned(),
                name_of(o).to_owned(),
            )
        })
        .collect();
    let dumped_custom_types: HashMap<(String, String), String> = all_objects()
        .filter(|(_, o)| is_crd(o))
        .flat_map(|(_, crd)| {
            let group = str_at(crd, &["spec", "group"])
                .unwrap_or_default()
                .to_owned();
            let kind = str_at(crd, &["spec", "names", "kind"])
                .unwrap_or_default()
                .to_owned();
            let label = format!(
                "{}.{group}",
                str_at(crd, &["spec", "names", "plural"]).unwrap_or_default()
            );
            let versions: Vec<String> = crd
                .pointer("/spec/versions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|v| str_at(v, &["name"]).map(str::to_owned))
                .chain(str_at(crd, &["spec", "version"]).map(str::to_owned))
                .collect();
            versions
                .into_iter()
                .map(move |v| ((format!("{group}/{v}"), kind.clone()), label.clone()))
        })
        .collect();
    let namespaces: Api<DynamicObject> =
        Api::all_with(client.clone(), &core_api("Namespace", "namespaces"));
    let existing_namespaces = namespaces
        .list(&Default::default())
        .await
        .map_err(|e| anyhow::anyhow!("listing namespaces: {}", api_message(&e)))?
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    let mut ctx = Restorer {
        client,
        dry_run,
        types: Types::discover(client).await?,
        dumped_custom_types,
        existing_namespaces,
    };

    for file in &files {
        for node in file.objects.iter().filter(|o| is_node(o)) {
            report
                .nodes
                .push(restore_node(&ctx, &file.name, node).await);
        }
        let ctx_ref = &ctx;
        let results: Vec<ObjectResult> = stream::iter(file.objects.iter().filter(|o| !is_node(o)))
            .map(|object| restore_object(ctx_ref, &file.name, object.clone()))
            .buffered(CONCURRENT_APPLIES)
            .collect()
            .await;
        report.objects.extend(results);
        let crds: Vec<String> = file
            .objects
            .iter()
            .filter(|o| is_crd(o))
            .map(|o| name_of(o).to_owned())
            .collect();
        if !crds.is_empty() && !dry_run {
            let crd_type = ctx.types.get(&files_crd(file)).cloned();
            if let Some(crd_type) = crd_type {
                for name in wait_established(client, &crd_type, &crds).await {
                    report.other_failures.push(format!(
                        "{}: customresourcedefinition {name} not Established after {CRD_TIMEOUT:?}",
                        file.name
                    ));
                }
            }
            // The custom resources after it are served only now.
            ctx.types = Types::discover(client).await?;
        }
    }

    for (file, volume) in all_objects().filter(|(_, o)| is_kind(o, "v1", "PersistentVolume")) {
        let Some((claim_ns, claim_name)) = claim_of(volume) else {
            continue;
        };
        let name = name_of(volume);
        let pair = format!("{name} -> {claim_ns}/{claim_name}");
        if !dumped_claims.contains(&(claim_ns.clone(), claim_name.clone())) {
            report.volumes_without_claim.push(pair);
            continue;
        }
        match repoint_volume(&ctx, volume, &claim_ns, &claim_name).await {
            Ok(true) => report.volumes_repointed.push(pair),
            Ok(false) => {}
            Err(message) => report
                .other_failures
                .push(format!("{}: persistentvolume {name}: {message}", file.name)),
        }
    }
    Ok(report)
}

/// The first CRD of `file` (to look its resource type up).
fn files_crd(file: &DumpFile) -> Value {
    file.objects
        .iter()
        .find(|o| is_crd(o))
        .cloned()
        .unwrap_or_default()
}

/// Sets the volume's claimRef.uid to its claim's UID in this cluster; Ok(false) when it has it
/// already. In a dry run, says whether it would.
async fn repoint_volume(
    ctx: &Restorer<'_>,
    volume: &Value,
    claim_ns: &str,
    claim_name: &str,
) -> Result<bool, String> {
    let volumes: Api<DynamicObject> = Api::all_with(
        ctx.client.clone(),
        &core_api("PersistentVolume", "persistentvolumes"),
    );
    let name = name_of(volume);
    let claim_uid = ctx
        .claim_uid(claim_ns, claim_name)
        .await
        .map_err(|e| api_message(&e))?;
    let live_uid = volumes
        .get_opt(name)
        .await
        .map_err(|e| api_message(&e))?
        .and_then(|v| {
            v.data
                .pointer("/spec/claimRef/uid")
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
    let Some(claim_uid) = claim_uid else {
        if ctx.dry_run {
            // The claim is created by this restore; the volume would then be pointed at it.
            return Ok(true);
        }
        return Err(format!(
            "its claim {claim_ns}/{claim_name} does not exist (see its failure above)"
        ));
    };
    if live_uid.as_deref() == Some(claim_uid.as_str()) {
        return Ok(false);
    }
    if ctx.dry_run {
        return Ok(true);
    }
    // Applied whole, by the same field manager, so the next restore's apply (which sets the UID
    // too) finds nothing to change.
    let mut object = volume.clone();
    set_claim_uid(&mut object, &claim_uid);
    volumes
        .patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&object),
        )
        .await
        .map_err(|e| api_message(&e))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subset_takes_only_the_paths_the_dump_sets() {
        let shape = json!({"metadata": {"name": "x", "labels": {"a": "1"}}, "data": {"k": "v"}});
        let live = json!({"metadata": {"name": "x", "uid": "u", "labels": {"a": "2", "b": "3"}},
            "data": {"k": "old", "other": "o"}, "status": {}});
        assert_eq!(
            subset(&shape, &live),
            json!({"metadata": {"name": "x", "labels": {"a": "2"}}, "data": {"k": "old"}})
        );
    }

    #[test]
    fn line_diff_marks_changes_with_context() {
        let before = "a\nb\nc\nd\ne\nf\ng\nh\ni\n";
        let after = "a\nb\nc\nd\nE\nf\ng\nh\ni\nj\n";
        assert_eq!(line_diff(before, before), "");
        assert_eq!(
            line_diff(before, after),
            "--- live\n+++ dump\n@@\n b\n c\n d\n-e\n+E\n f\n g\n h\n i\n+j\n"
        );
    }

    #[test]
    fn node_patch_merges_and_keeps_the_clusters_own() {
        let dumped = json!({"metadata": {"name": "h1", "labels": {"disk": "ssd", "zone": "a"}},
            "spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}});
        let live = json!({"metadata": {"name": "h1", "labels": {"zone": "a", "kubernetes.io/hostname": "h1"}},
            "spec": {"taints": [{"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}]}});
        assert_eq!(
            node_patch(&dumped, &live),
            Some(
                json!({"metadata": {"labels": {"disk": "ssd"}}, "spec": {"taints": [
                    {"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"},
                    {"key": "dedicated", "value": "db", "effect": "NoSchedule"}
                ]}})
            )
        );
        let mut patched = live.clone();
        json_merge(&mut patched, &node_patch(&dumped, &live).unwrap());
        assert_eq!(node_patch(&dumped, &patched), None);
    }

    #[test]
    fn read_dump_names_the_file_of_a_bad_document() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("000-namespaces.yaml"),
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("002-configmaps.yaml"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: [unclosed\n",
        )
        .unwrap();
        let err = read_dump(dir.path()).unwrap_err().to_string();
        assert!(
            err.starts_with("002-configmaps.yaml: not valid YAML"),
            "{err}"
        );
        std::fs::write(
            dir.path().join("002-configmaps.yaml"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  namespace: a\n",
        )
        .unwrap();
        let err = read_dump(dir.path()).unwrap_err().to_string();
        assert_eq!(
            err,
            "002-configmaps.yaml: document 1: no metadata.name (is this an object dump?)"
        );
        std::fs::write(
            dir.path().join("002-configmaps.yaml"),
            "# header\napiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: x}}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm-y}\n",
        )
        .unwrap();
        let files = read_dump(dir.path()).unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(
            files[1].objects.iter().map(name_of).collect::<Vec<_>>(),
            ["x", "cm-y"]
        );
    }
}
