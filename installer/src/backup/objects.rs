//! The object dump of `ilha backup`: every object an operator made, read through the Kubernetes
//! API, without the fields the cluster fills in, as YAML files `kubectl apply -f` accepts.
//!
//! Layout of the dump directory, in restore order (the file names sort that way):
//! `000-namespaces.yaml`, `001-nodes.yaml` (labels, annotations and taints only: `ilha restore
//! --objects` patches them onto nodes of the same name, it never creates Nodes), then one
//! `NNN-<plural>[.<group>].yaml` per resource: CRDs, the seed's `dump-cluster.sh` order, every
//! other listable resource found by discovery, custom resources last.
//!
//! Discovery is done by hand (preferred version of each group, fetched concurrently) rather than
//! with `kube::Discovery`, which queries every version and fails as a whole when one aggregated
//! API (a stopped metrics-server) does not answer.
use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures_util::{StreamExt, TryStreamExt, stream};
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use serde::ser::{SerializeMap, SerializeSeq};
use serde_json::{Map, Value};

/// Namespaces whose objects the cluster makes itself and that don't move to another cluster.
pub const SYSTEM_NAMESPACES: &[&str] = &["kube-system", "kube-public", "kube-node-lease"];

/// What to leave out of the dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpOptions {
    /// Objects in these namespaces (and the Namespace objects themselves) are not dumped.
    pub skip_namespaces: Vec<String>,
}

impl Default for DumpOptions {
    fn default() -> Self {
        DumpOptions {
            skip_namespaces: SYSTEM_NAMESPACES.iter().map(|ns| ns.to_string()).collect(),
        }
    }
}

/// What was dumped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DumpReport {
    /// Objects per resource label (`deployments.apps`), in dump order; resources with no object
    /// to dump are left out.
    pub counts: Vec<(String, usize)>,
    pub total: usize,
    /// API groups whose discovery failed (an aggregated API that is down): their resources are
    /// not in the dump.
    pub unreachable_groups: Vec<String>,
}

/// The Namespace file: always first, so restore makes namespaces before anything in them.
pub const NAMESPACES_FILE: &str = "000-namespaces.yaml";
/// The Node file: labels, annotations and taints for `ilha restore --objects`.
pub const NODES_FILE: &str = "001-nodes.yaml";
/// First number of the other resources' files.
const FIRST_RESOURCE_NUMBER: usize = 2;

/// Requests that take longer mean an API server in trouble; a dump should fail, not hang.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Page size of list requests: big enough to be quick, small enough for etcd and the API server.
const PAGE_SIZE: u32 = 500;
/// Resource types listed at once.
const CONCURRENT_LISTS: usize = 8;

/// A client from a kubeconfig file (the operator's `<state>/admin.conf`), with ~10 s timeouts.
///
/// TLS goes through rustls with aws-lc-rs, the only crypto provider compiled into ilha (kube,
/// rcgen and reqwest all use it, and nothing enables `ring`), so rustls picks it by itself.
pub async fn client_from_kubeconfig(path: &Path) -> Result<kube::Client> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .with_context(|| format!("reading kubeconfig {}", path.display()))?;
    let mut config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .with_context(|| format!("using kubeconfig {}", path.display()))?;
    config.connect_timeout = Some(REQUEST_TIMEOUT);
    config.read_timeout = Some(REQUEST_TIMEOUT);
    config.write_timeout = Some(REQUEST_TIMEOUT);
    kube::Client::try_from(config)
        .with_context(|| format!("making a Kubernetes client from {}", path.display()))
}

/// A resource type the API server serves (preferred version of its group).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServedResource {
    pub api: ApiResource,
    pub namespaced: bool,
    pub verbs: Vec<String>,
}

impl ServedResource {
    fn supports(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == verb)
    }
}

/// `configmaps` for the core group, `deployments.apps` otherwise (kubectl's spelling).
pub(crate) fn resource_label(api: &ApiResource) -> String {
    if api.group.is_empty() {
        api.plural.clone()
    } else {
        format!("{}.{}", api.plural, api.group)
    }
}

/// The text of an API error: the server's message when there is one.
pub(crate) fn api_message(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(status) if !status.message.is_empty() => status.message.clone(),
        other => other.to_string(),
    }
}

/// Every resource type at the preferred version of its group. Groups whose discovery fails are
/// returned apart (by name) rather than failing the whole discovery.
pub(crate) async fn discover(client: &kube::Client) -> Result<(Vec<ServedResource>, Vec<String>)> {
    let core = client
        .list_core_api_versions()
        .await
        .map_err(|e| anyhow::anyhow!("discovering the core API: {}", api_message(&e)))?;
    let groups = client
        .list_api_groups()
        .await
        .map_err(|e| anyhow::anyhow!("discovering API groups: {}", api_message(&e)))?;
    // (group, group/version as in URLs)
    let mut group_versions: Vec<(String, String)> = Vec::new();
    if let Some(version) = core.versions.first() {
        group_versions.push((String::new(), version.clone()));
    }
    for group in groups.groups {
        let preferred = group
            .preferred_version
            .map(|v| v.group_version)
            .or_else(|| group.versions.first().map(|v| v.group_version.clone()));
        if let Some(group_version) = preferred {
            group_versions.push((group.name, group_version));
        }
    }
    let answers: Vec<_> = stream::iter(group_versions)
        .map(|(group, group_version)| async move {
            let list = if group.is_empty() {
                client.list_core_api_resources(&group_version).await
            } else {
                client.list_api_group_resources(&group_version).await
            };
            (group, group_version, list)
        })
        .buffered(CONCURRENT_LISTS)
        .collect()
        .await;
    let mut served = Vec::new();
    let mut unreachable = Vec::new();
    for (group, group_version, list) in answers {
        let list = match list {
            Ok(list) => list,
            Err(err) if group.is_empty() => {
                bail!("discovering {group_version}: {}", api_message(&err))
            }
            Err(err) => {
                tracing::warn!(
                    "API group {group_version} does not answer: {}",
                    api_message(&err)
                );
                unreachable.push(group_version);
                continue;
            }
        };
        let version = group_version
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        for resource in list.resources {
            // `deployments/scale`, `pods/log`: subresources are not objects of their own.
            if resource.name.contains('/') {
                continue;
            }
            served.push(ServedResource {
                api: ApiResource {
                    group: group.clone(),
                    version: version.clone(),
                    api_version: group_version.clone(),
                    kind: resource.kind,
                    plural: resource.name,
                },
                namespaced: resource.namespaced,
                verbs: resource.verbs,
            });
        }
    }
    Ok((served, unreachable))
}

const RBAC: &str = "rbac.authorization.k8s.io";
const CRD_GROUP: &str = "apiextensions.k8s.io";

/// The seed's `dump-cluster.sh` order (plus CronJobs), each with the groups that may serve it,
/// current group first (`extensions` served some of these before Kubernetes 1.16).
const SEED_ORDER: &[(&str, &[&str])] = &[
    ("serviceaccounts", &[""]),
    ("clusterroles", &[RBAC]),
    ("roles", &[RBAC]),
    ("clusterrolebindings", &[RBAC]),
    ("rolebindings", &[RBAC]),
    ("storageclasses", &["storage.k8s.io"]),
    ("resourcequotas", &[""]),
    ("limitranges", &[""]),
    ("networkpolicies", &["networking.k8s.io", "extensions"]),
    ("configmaps", &[""]),
    ("persistentvolumes", &[""]),
    ("persistentvolumeclaims", &[""]),
    ("secrets", &[""]),
    ("services", &[""]),
    ("deployments", &["apps", "extensions"]),
    ("statefulsets", &["apps"]),
    ("replicationcontrollers", &[""]),
    ("daemonsets", &["apps", "extensions"]),
    ("jobs", &["batch"]),
    ("cronjobs", &["batch"]),
    ("ingresses", &["networking.k8s.io", "extensions"]),
];

/// Built-in resources never dumped: made and owned by controllers, kubelets or the API server
/// (pods, replicasets, endpoints, leases, csinodes...), or runtime records with no meaning in
/// another cluster (events, volume attachments, certificate requests of the old CA).
const NEVER_DUMPED: &[&str] = &[
    "pods",
    "replicasets",
    "events",
    "endpoints",
    "endpointslices",
    "controllerrevisions",
    "leases",
    "componentstatuses",
    "bindings",
    "tokenreviews",
    "csinodes",
    "volumeattachments",
    "certificatesigningrequests",
];

/// Names of the flow-control objects the API server makes at start (Kubernetes 1.18-1.21, whose
/// objects carry no `apf.kubernetes.io/autoupdate-spec` annotation).
const BOOTSTRAP_FLOW_CONTROL: &[&str] = &[
    "exempt",
    "catch-all",
    "system",
    "leader-election",
    "workload-high",
    "workload-low",
    "global-default",
    "system-leader-election",
    "workload-leader-election",
    "system-nodes",
    "kube-controller-manager",
    "kube-scheduler",
    "kube-system-service-accounts",
    "service-accounts",
    "probes",
];

/// A resource type to dump, in dump order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PlannedResource {
    pub served: ServedResource,
    pub custom: bool,
}

/// Orders what discovery found and drops what is never dumped: namespaces, nodes, CRDs, the
/// seed's order, other built-in resources, custom resources (`custom` holds `(group, plural)`
/// of every CRD). Only resources that can be listed and created again are kept, each once.
pub(crate) fn plan(
    served: &[ServedResource],
    custom: &HashSet<(String, String)>,
) -> Vec<PlannedResource> {
    let is_custom =
        |r: &ServedResource| custom.contains(&(r.api.group.clone(), r.api.plural.clone()));
    let usable: Vec<&ServedResource> = served
        .iter()
        .filter(|r| r.supports("list") && r.supports("create"))
        .filter(|r| is_custom(r) || !NEVER_DUMPED.contains(&r.api.plural.as_str()))
        .collect();
    // `extensions` re-serves resources of newer groups (ingresses in 1.20): one copy only.
    let shadowed = |r: &ServedResource| {
        r.api.group == "extensions"
            && usable.iter().any(|o| {
                o.api.group != "extensions" && o.api.plural == r.api.plural && !is_custom(o)
            })
    };
    let rank = |r: &ServedResource| -> (usize, String, String) {
        let group = r.api.group.clone();
        let plural = r.api.plural.clone();
        if is_custom(r) {
            return (3000, group, plural);
        }
        match (group.as_str(), plural.as_str()) {
            ("", "namespaces") => return (0, group, plural),
            ("", "nodes") => return (1, group, plural),
            (CRD_GROUP, "customresourcedefinitions") => return (2, group, plural),
            _ => {}
        }
        let seed = SEED_ORDER
            .iter()
            .position(|(name, groups)| *name == plural && groups.contains(&group.as_str()));
        match seed {
            Some(index) => (10 + index, group, plural),
            None => (1000, group, plural),
        }
    };
    let mut planned: Vec<PlannedResource> = usable
        .iter()
        .copied()
        .filter(|r| !shadowed(r))
        .map(|r| PlannedResource {
            served: r.clone(),
            custom: is_custom(r),
        })
        .collect();
    planned.sort_by_key(|p| rank(&p.served));
    planned.dedup_by(|a, b| a.served.api == b.served.api);
    planned
}

fn str_at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(value, |v, key| v.get(key))
        .and_then(Value::as_str)
}

fn object_name(object: &Value) -> &str {
    str_at(object, &["metadata", "name"]).unwrap_or_default()
}

fn object_namespace(object: &Value) -> Option<&str> {
    str_at(object, &["metadata", "namespace"])
}

fn has_label(object: &Value, key: &str, value: Option<&str>) -> bool {
    match object.pointer(&format!("/metadata/labels/{}", key.replace('/', "~1"))) {
        Some(found) => value.is_none_or(|v| found.as_str() == Some(v)),
        None => false,
    }
}

fn annotation<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    object
        .pointer(&format!("/metadata/annotations/{}", key.replace('/', "~1")))
        .and_then(Value::as_str)
}

/// Whether the dump keeps `object` of resource `(group, plural)`: objects a controller owns, that
/// the cluster makes for itself, or in a skipped namespace, are left out.
pub(crate) fn keep_object(
    group: &str,
    plural: &str,
    object: &Value,
    skip_namespaces: &[String],
) -> bool {
    let name = object_name(object);
    let skipped = |ns: &str| skip_namespaces.iter().any(|s| s == ns);
    if let Some(ns) = object_namespace(object)
        && skipped(ns)
    {
        return false;
    }
    if group.is_empty() && plural == "namespaces" && skipped(name) {
        return false;
    }
    // Recreated by their controller (ReplicaSets' pods, CronJobs' jobs, operators' children).
    let owned_by_controller = object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|owners| {
            owners
                .iter()
                .any(|o| o.get("controller") == Some(&Value::Bool(true)))
        });
    if owned_by_controller {
        return false;
    }
    match (group, plural) {
        ("", "secrets") => {
            object.get("type").and_then(Value::as_str)
                != Some("kubernetes.io/service-account-token")
        }
        // Published into every namespace by kube-controller-manager, with the cluster's own CA.
        ("", "configmaps") => name != "kube-root-ca.crt",
        ("", "services") => !(object_namespace(object) == Some("default") && name == "kubernetes"),
        (RBAC, "clusterroles" | "clusterrolebindings" | "roles" | "rolebindings") => {
            let system_cluster_wide = plural.starts_with("cluster") && name.starts_with("system:");
            !system_cluster_wide
                && !has_label(object, "kubernetes.io/bootstrapping", Some("rbac-defaults"))
        }
        // The API server registers its own groups' APIServices and keeps them up to date.
        ("apiregistration.k8s.io", "apiservices") => {
            !has_label(object, "kube-aggregator.kubernetes.io/automanaged", None)
        }
        // The API server's own flow-control defaults, which it keeps up to date: marked since
        // Kubernetes 1.22, known by name before.
        (g, "flowschemas" | "prioritylevelconfigurations") if g.starts_with("flowcontrol.") => {
            match annotation(object, "apf.kubernetes.io/autoupdate-spec") {
                Some(autoupdate) => autoupdate != "true",
                None => !BOOTSTRAP_FLOW_CONTROL.contains(&name),
            }
        }
        ("scheduling.k8s.io", "priorityclasses") => !name.starts_with("system-"),
        _ => true,
    }
}

/// Metadata the cluster assigns; another cluster assigns its own.
const VOLATILE_METADATA: &[&str] = &[
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "generation",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "ownerReferences",
];
const VOLATILE_ANNOTATIONS: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    "deployment.kubernetes.io/revision",
];
/// Written by the PV controller when it binds; a restored claim is bound anew.
const PVC_BINDING_ANNOTATIONS: &[&str] = &[
    "pv.kubernetes.io/bind-completed",
    "pv.kubernetes.io/bound-by-controller",
];
/// Labels the API server puts on a Job's pods from the Job's UID.
const JOB_UID_LABELS: &[&str] = &[
    "controller-uid",
    "job-name",
    "batch.kubernetes.io/controller-uid",
    "batch.kubernetes.io/job-name",
];

fn remove_keys(map: Option<&mut Value>, keys: &[&str]) {
    if let Some(Value::Object(map)) = map {
        for key in keys {
            map.remove(*key);
        }
    }
}

/// Drops `metadata.<field>` when it became an empty map.
fn drop_if_empty(metadata: &mut Map<String, Value>, field: &str) {
    if metadata
        .get(field)
        .is_some_and(|v| v.is_null() || v.as_object().is_some_and(Map::is_empty))
    {
        metadata.remove(field);
    }
}

/// `creationTimestamp: null` is how Go serialises an empty template timestamp: noise.
fn remove_null_timestamps(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if map.get("creationTimestamp").is_some_and(Value::is_null) {
                map.remove("creationTimestamp");
            }
            map.values_mut().for_each(remove_null_timestamps);
        }
        Value::Array(items) => items.iter_mut().for_each(remove_null_timestamps),
        _ => {}
    }
}

/// Strips what the cluster filled in from `object` of resource `(group, plural)`, leaving what
/// recreates it elsewhere.
pub(crate) fn strip(group: &str, plural: &str, object: &mut Value) {
    let Some(top) = object.as_object_mut() else {
        return;
    };
    top.remove("status");
    if let Some(Value::Object(metadata)) = top.get_mut("metadata") {
        for key in VOLATILE_METADATA {
            metadata.remove(*key);
        }
        remove_keys(metadata.get_mut("annotations"), VOLATILE_ANNOTATIONS);
        if (group, plural) == ("", "persistentvolumeclaims") {
            remove_keys(metadata.get_mut("annotations"), PVC_BINDING_ANNOTATIONS);
        }
        drop_if_empty(metadata, "annotations");
        drop_if_empty(metadata, "labels");
    }
    remove_null_timestamps(object);
    let spec = object.get_mut("spec");
    match (group, plural) {
        ("", "services") => {
            if let Some(Value::Object(spec)) = spec {
                let headless = spec.get("clusterIP").and_then(Value::as_str) == Some("None");
                // A headless Service keeps `None`; others get an address from the new range.
                if !headless {
                    spec.remove("clusterIP");
                    spec.remove("clusterIPs");
                }
            }
        }
        ("", "persistentvolumes") => {
            // The claim's UID and version are the old cluster's: restore points them anew.
            remove_keys(
                spec.and_then(|s| s.get_mut("claimRef")),
                &["uid", "resourceVersion"],
            );
        }
        ("batch", "jobs") => {
            if let Some(Value::Object(spec)) = spec {
                // The API server generates the selector from the Job's UID and refuses a Job
                // that brings one along unless `manualSelector` says so.
                if spec.get("manualSelector") != Some(&Value::Bool(true)) {
                    spec.remove("selector");
                    if let Some(Value::Object(template_metadata)) =
                        spec.get_mut("template").and_then(|t| t.get_mut("metadata"))
                    {
                        remove_keys(template_metadata.get_mut("labels"), JOB_UID_LABELS);
                        drop_if_empty(template_metadata, "labels");
                    }
                    // The Job's own copies of those labels.
                    if let Some(Value::Object(metadata)) = object.get_mut("metadata") {
                        remove_keys(metadata.get_mut("labels"), JOB_UID_LABELS);
                        drop_if_empty(metadata, "labels");
                    }
                }
            }
        }
        ("", "serviceaccounts") => {
            // Token secrets are made anew by the new cluster's token controller.
            top_remove(object, "secrets");
        }
        _ => {}
    }
}

fn top_remove(object: &mut Value, key: &str) {
    if let Some(map) = object.as_object_mut() {
        map.remove(key);
    }
}

/// Taints the node lifecycle controller sets from node conditions; they follow the node's state,
/// not the operator's intent.
fn is_condition_taint(taint: &Value) -> bool {
    str_at(taint, &["key"]).is_some_and(|k| k.starts_with("node.kubernetes.io/"))
}

/// What the dump keeps of a Node: its name, labels, annotations and the operator's taints.
pub(crate) fn node_for_dump(node: &Value) -> Value {
    let mut metadata = Map::new();
    metadata.insert("name".into(), Value::String(object_name(node).to_owned()));
    for field in ["labels", "annotations"] {
        if let Some(Value::Object(map)) = node.pointer(&format!("/metadata/{field}")) {
            let mut map = map.clone();
            for key in VOLATILE_ANNOTATIONS {
                map.remove(*key);
            }
            if !map.is_empty() {
                metadata.insert(field.into(), Value::Object(map));
            }
        }
    }
    let mut out = Map::new();
    out.insert("apiVersion".into(), "v1".into());
    out.insert("kind".into(), "Node".into());
    out.insert("metadata".into(), Value::Object(metadata));
    let taints: Vec<Value> = node
        .pointer("/spec/taints")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|t| !is_condition_taint(t))
        .map(|t| {
            let mut t = t.clone();
            top_remove(&mut t, "timeAdded");
            t
        })
        .collect();
    if !taints.is_empty() {
        out.insert("spec".into(), serde_json::json!({ "taints": taints }));
    }
    Value::Object(out)
}

/// Serialises a JSON value with `apiVersion`, `kind`, `metadata`, `name`, `namespace` first in
/// every map, as people write manifests; other keys keep their (sorted) order.
pub(crate) struct ManifestOrder<'a>(pub &'a Value);

const LEADING_KEYS: &[&str] = &["apiVersion", "kind", "metadata", "name", "namespace"];

impl serde::Serialize for ManifestOrder<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Object(map) => {
                let mut out = serializer.serialize_map(Some(map.len()))?;
                for key in LEADING_KEYS {
                    if let Some(value) = map.get(*key) {
                        out.serialize_entry(key, &ManifestOrder(value))?;
                    }
                }
                for (key, value) in map {
                    if !LEADING_KEYS.contains(&key.as_str()) {
                        out.serialize_entry(key, &ManifestOrder(value))?;
                    }
                }
                out.end()
            }
            Value::Array(items) => {
                let mut out = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    out.serialize_element(&ManifestOrder(item))?;
                }
                out.end()
            }
            other => other.serialize(serializer),
        }
    }
}

/// YAML that kubectl (go-yaml, YAML 1.1) reads back as written: serde-saphyr quotes `yes`, `on`,
/// `0755`... by default; long single-line strings stay on one line instead of being folded.
pub(crate) fn yaml_options() -> serde_saphyr::SerializerOptions {
    serde_saphyr::ser_options! {
        folded_wrap_chars: usize::MAX,
    }
}

/// Writes `objects` as a multi-document YAML file after `header` (comment lines).
pub(crate) fn write_yaml_file(path: &Path, header: &str, objects: &[Value]) -> Result<()> {
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let write = |out: &mut BufWriter<File>| -> Result<()> {
        for line in header.lines() {
            writeln!(out, "# {line}")?;
        }
        for (index, object) in objects.iter().enumerate() {
            if index > 0 {
                out.write_all(b"---\n")?;
            }
            serde_saphyr::to_io_writer_with_options(out, &ManifestOrder(object), yaml_options())?;
        }
        out.flush()?;
        Ok(())
    };
    write(&mut out).with_context(|| format!("writing {}", path.display()))
}

/// Lists every object of `resource` across namespaces, page by page, as JSON with its type set.
async fn list_all(client: &kube::Client, resource: &ApiResource) -> Result<Vec<Value>> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), resource);
    let mut params = ListParams::default().limit(PAGE_SIZE);
    let mut objects = Vec::new();
    loop {
        let page = api.list(&params).await.map_err(|e| {
            anyhow::anyhow!("listing {}: {}", resource_label(resource), api_message(&e))
        })?;
        for item in page.items {
            let mut value = serde_json::to_value(&item)?;
            // Items of a list don't carry their type; `kubectl apply` needs it.
            if let Some(map) = value.as_object_mut() {
                map.insert("apiVersion".into(), resource.api_version.clone().into());
                map.insert("kind".into(), resource.kind.clone().into());
            }
            objects.push(value);
        }
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => break,
        }
    }
    Ok(objects)
}

fn sort_key(object: &Value) -> (String, String) {
    (
        object_namespace(object).unwrap_or_default().to_owned(),
        object_name(object).to_owned(),
    )
}

/// One dump file to write.
struct DumpFile {
    name: String,
    label: String,
    header: String,
    objects: Vec<Value>,
}

fn ensure_empty_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut entries =
        std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    if entries.next().is_some() {
        bail!(
            "{} is not empty: an object dump goes into a new directory, so that restore never mixes two dumps",
            dir.display()
        );
    }
    Ok(())
}

/// Writes the dump into `dir` (created; must be empty): files appliable with `kubectl apply -f`
/// (and `-R -f dir`), in restore order. Resource types are listed 8 at a time, 500 objects a page.
pub async fn dump(client: &kube::Client, dir: &Path, options: &DumpOptions) -> Result<DumpReport> {
    ensure_empty_dir(dir)?;
    let (served, unreachable_groups) = discover(client).await?;
    let crd_resource = served
        .iter()
        .find(|r| r.api.group == CRD_GROUP && r.api.plural == "customresourcedefinitions")
        .map(|r| r.api.clone());
    // Which resources are custom comes from the CRDs themselves: dumped last, never excluded by
    // a built-in's name.
    let crds = match &crd_resource {
        Some(api) => list_all(client, api).await?,
        None => Vec::new(),
    };
    let custom: HashSet<(String, String)> = crds
        .iter()
        .filter_map(|crd| {
            Some((
                str_at(crd, &["spec", "group"])?.to_owned(),
                str_at(crd, &["spec", "names", "plural"])?.to_owned(),
            ))
        })
        .collect();
    let planned = plan(&served, &custom);
    let skip = &options.skip_namespaces;
    let listed: Vec<(PlannedResource, Vec<Value>)> = stream::iter(planned)
        .map(|resource| {
            let crds = &crds;
            let crd_resource = &crd_resource;
            async move {
                let api = &resource.served.api;
                let objects = if Some(api) == crd_resource.as_ref() {
                    crds.clone()
                } else {
                    list_all(client, api).await?
                };
                Ok::<_, anyhow::Error>((resource, objects))
            }
        })
        .buffered(CONCURRENT_LISTS)
        .try_collect()
        .await?;

    let mut files = Vec::new();
    let mut number = FIRST_RESOURCE_NUMBER;
    for (resource, objects) in listed {
        let api = &resource.served.api;
        let label = resource_label(api);
        let mut kept: Vec<Value> = if (api.group.as_str(), api.plural.as_str()) == ("", "nodes") {
            objects.iter().map(node_for_dump).collect()
        } else {
            objects
                .into_iter()
                .filter(|o| keep_object(&api.group, &api.plural, o, skip))
                .map(|mut o| {
                    strip(&api.group, &api.plural, &mut o);
                    o
                })
                .collect()
        };
        if kept.is_empty() {
            continue;
        }
        kept.sort_by_cached_key(sort_key);
        let (name, header) = match (api.group.as_str(), api.plural.as_str()) {
            ("", "namespaces") => (NAMESPACES_FILE.to_owned(), format!("ilha object dump: {label}")),
            ("", "nodes") => (
                NODES_FILE.to_owned(),
                "ilha object dump: nodes, for `ilha restore --objects` only.\n\
                 Only names, labels, annotations and taints: restore patches them onto the Node of\n\
                 the same name and reports the others; it never creates a Node."
                    .to_owned(),
            ),
            _ => {
                let name = format!("{number:03}-{label}.yaml");
                number += 1;
                (name, format!("ilha object dump: {label}"))
            }
        };
        files.push(DumpFile {
            name,
            label,
            header,
            objects: kept,
        });
    }

    let report = DumpReport {
        counts: files
            .iter()
            .map(|f| (f.label.clone(), f.objects.len()))
            .collect(),
        total: files.iter().map(|f| f.objects.len()).sum(),
        unreachable_groups,
    };
    // Serialising is CPU work: one blocking task per file, so big files are written in parallel.
    let writes = files.into_iter().map(|file| {
        let path: PathBuf = dir.join(&file.name);
        tokio::task::spawn_blocking(move || write_yaml_file(&path, &file.header, &file.objects))
    });
    for written in futures_util::future::join_all(writes).await {
        written.context("writing the dump")??;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn served(
        group: &str,
        version: &str,
        kind: &str,
        plural: &str,
        verbs: &[&str],
    ) -> ServedResource {
        ServedResource {
            api: ApiResource {
                group: group.into(),
                version: version.into(),
                api_version: if group.is_empty() {
                    version.into()
                } else {
                    format!("{group}/{version}")
                },
                kind: kind.into(),
                plural: plural.into(),
            },
            namespaced: true,
            verbs: verbs.iter().map(|v| v.to_string()).collect(),
        }
    }

    const ALL: &[&str] = &[
        "create", "delete", "get", "list", "patch", "update", "watch",
    ];

    fn labels(plan: &[PlannedResource]) -> Vec<String> {
        plan.iter().map(|p| resource_label(&p.served.api)).collect()
    }

    #[test]
    fn plan_orders_namespaces_nodes_crds_seed_others_then_custom_resources() {
        let served = vec![
            served("example.com", "v1", "Widget", "widgets", ALL),
            served("", "v1", "Pod", "pods", ALL),
            served("apps", "v1", "Deployment", "deployments", ALL),
            served("", "v1", "ConfigMap", "configmaps", ALL),
            served("", "v1", "Namespace", "namespaces", ALL),
            served(
                "policy",
                "v1beta1",
                "PodDisruptionBudget",
                "poddisruptionbudgets",
                ALL,
            ),
            served(
                CRD_GROUP,
                "v1",
                "CustomResourceDefinition",
                "customresourcedefinitions",
                ALL,
            ),
            served("", "v1", "Node", "nodes", ALL),
            served("", "v1", "ServiceAccount", "serviceaccounts", ALL),
            served("batch", "v1beta1", "CronJob", "cronjobs", ALL),
            served("", "v1", "Event", "events", ALL),
            served("events.k8s.io", "v1", "Event", "events", ALL),
            served("extensions", "v1beta1", "Ingress", "ingresses", ALL),
            served("networking.k8s.io", "v1", "Ingress", "ingresses", ALL),
            served(
                "",
                "v1",
                "ComponentStatus",
                "componentstatuses",
                &["get", "list"],
            ),
            served(
                "authentication.k8s.io",
                "v1",
                "TokenReview",
                "tokenreviews",
                &["create"],
            ),
            served(
                "metrics.k8s.io",
                "v1beta1",
                "PodMetrics",
                "pods",
                &["get", "list"],
            ),
            served("", "v1", "Endpoints", "endpoints", ALL),
            served("coordination.k8s.io", "v1", "Lease", "leases", ALL),
            // A custom resource named like a built-in that is never dumped is still dumped.
            served("example.com", "v1", "Lease", "leases", ALL),
            served(RBAC, "v1", "ClusterRole", "clusterroles", ALL),
        ];
        let custom: HashSet<_> = [
            ("example.com".to_owned(), "widgets".to_owned()),
            ("example.com".to_owned(), "leases".to_owned()),
        ]
        .into();
        assert_eq!(
            labels(&plan(&served, &custom)),
            [
                "namespaces",
                "nodes",
                "customresourcedefinitions.apiextensions.k8s.io",
                "serviceaccounts",
                "clusterroles.rbac.authorization.k8s.io",
                "configmaps",
                "deployments.apps",
                "cronjobs.batch",
                "ingresses.networking.k8s.io",
                "poddisruptionbudgets.policy",
                "leases.example.com",
                "widgets.example.com",
            ]
        );
    }

    #[test]
    fn plan_keeps_extensions_when_it_alone_serves_a_resource() {
        let served = vec![served("extensions", "v1beta1", "Ingress", "ingresses", ALL)];
        assert_eq!(
            labels(&plan(&served, &HashSet::new())),
            ["ingresses.extensions"]
        );
    }

    /// A Deployment as the 1.20 API server returns it in a list (type set by `list_all`).
    fn captured_deployment() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {
                "name": "web", "namespace": "shop", "uid": "0b1e6c1a-1111-4c1e-9a7d-6f1f6d1b2c3d",
                "resourceVersion": "4711", "generation": 3,
                "creationTimestamp": "2024-05-01T10:00:00Z", "selfLink": "/apis/apps/v1/namespaces/shop/deployments/web",
                "labels": {"app": "web"},
                "annotations": {
                    "deployment.kubernetes.io/revision": "3",
                    "kubectl.kubernetes.io/last-applied-configuration": "{\"apiVersion\":\"apps/v1\"}",
                    "team": "payments"
                },
                "managedFields": [{"manager": "kubectl", "operation": "Update"}]
            },
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"creationTimestamp": null, "labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "nginx:1.19"}]}
                }
            },
            "status": {"replicas": 2, "readyReplicas": 2}
        })
    }

    #[test]
    fn strip_deployment_keeps_only_what_recreates_it() {
        let mut object = captured_deployment();
        strip("apps", "deployments", &mut object);
        assert_eq!(
            object,
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {
                    "name": "web", "namespace": "shop",
                    "labels": {"app": "web"},
                    "annotations": {"team": "payments"}
                },
                "spec": {
                    "replicas": 2,
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": {
                        "metadata": {"labels": {"app": "web"}},
                        "spec": {"containers": [{"name": "web", "image": "nginx:1.19"}]}
                    }
                }
            })
        );
    }

    #[test]
    fn strip_service_drops_cluster_ips_but_keeps_headless_and_node_ports() {
        let mut service = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "shop", "uid": "u", "resourceVersion": "1"},
            "spec": {
                "type": "NodePort", "clusterIP": "10.96.12.7", "clusterIPs": ["10.96.12.7"],
                "ports": [{"port": 80, "targetPort": 8080, "nodePort": 30080, "protocol": "TCP"}],
                "selector": {"app": "web"}, "sessionAffinity": "None"
            },
            "status": {"loadBalancer": {}}
        });
        strip("", "services", &mut service);
        assert_eq!(
            service,
            json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "web", "namespace": "shop"},
                "spec": {
                    "type": "NodePort",
                    "ports": [{"port": 80, "targetPort": 8080, "nodePort": 30080, "protocol": "TCP"}],
                    "selector": {"app": "web"}, "sessionAffinity": "None"
                }
            })
        );
        let mut headless = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "db", "namespace": "shop"},
            "spec": {"clusterIP": "None", "clusterIPs": ["None"], "ports": [{"port": 5432}]}
        });
        let before = headless.clone();
        strip("", "services", &mut headless);
        assert_eq!(headless, before);
    }

    #[test]
    fn strip_pvc_keeps_volume_name_and_drops_binding_annotations() {
        let mut claim = json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {
                "name": "data", "namespace": "shop", "uid": "c-uid",
                "annotations": {
                    "pv.kubernetes.io/bind-completed": "yes",
                    "pv.kubernetes.io/bound-by-controller": "yes"
                },
                "finalizers": ["kubernetes.io/pvc-protection"]
            },
            "spec": {
                "accessModes": ["ReadWriteOnce"], "volumeName": "pv-data", "storageClassName": "manual",
                "resources": {"requests": {"storage": "1Gi"}}, "volumeMode": "Filesystem"
            },
            "status": {"phase": "Bound"}
        });
        strip("", "persistentvolumeclaims", &mut claim);
        assert_eq!(
            claim,
            json!({
                "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {
                    "name": "data", "namespace": "shop",
                    "finalizers": ["kubernetes.io/pvc-protection"]
                },
                "spec": {
                    "accessModes": ["ReadWriteOnce"], "volumeName": "pv-data", "storageClassName": "manual",
                    "resources": {"requests": {"storage": "1Gi"}}, "volumeMode": "Filesystem"
                }
            })
        );
    }

    #[test]
    fn strip_pv_keeps_claim_ref_without_the_old_uid() {
        let mut volume = json!({
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": "pv-data", "uid": "v-uid", "annotations": {"pv.kubernetes.io/bound-by-controller": "yes"}},
            "spec": {
                "capacity": {"storage": "1Gi"}, "hostPath": {"path": "/srv/data", "type": ""},
                "claimRef": {
                    "apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": "shop", "name": "data",
                    "uid": "c-uid", "resourceVersion": "812"
                },
                "persistentVolumeReclaimPolicy": "Retain"
            },
            "status": {"phase": "Bound"}
        });
        strip("", "persistentvolumes", &mut volume);
        assert_eq!(
            volume,
            json!({
                "apiVersion": "v1", "kind": "PersistentVolume",
                "metadata": {"name": "pv-data", "annotations": {"pv.kubernetes.io/bound-by-controller": "yes"}},
                "spec": {
                    "capacity": {"storage": "1Gi"}, "hostPath": {"path": "/srv/data", "type": ""},
                    "claimRef": {
                        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": "shop", "name": "data"
                    },
                    "persistentVolumeReclaimPolicy": "Retain"
                }
            })
        );
    }

    #[test]
    fn strip_job_drops_the_generated_selector_and_labels() {
        let mut job = json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "migrate", "namespace": "shop", "labels": {"controller-uid": "j-uid", "job-name": "migrate"}},
            "spec": {
                "backoffLimit": 6,
                "selector": {"matchLabels": {"controller-uid": "j-uid"}},
                "template": {
                    "metadata": {"creationTimestamp": null, "labels": {"controller-uid": "j-uid", "job-name": "migrate", "app": "migrate"}},
                    "spec": {"restartPolicy": "Never", "containers": [{"name": "m", "image": "busybox"}]}
                }
            },
            "status": {"succeeded": 1}
        });
        strip("batch", "jobs", &mut job);
        assert_eq!(
            job,
            json!({
                "apiVersion": "batch/v1", "kind": "Job",
                "metadata": {"name": "migrate", "namespace": "shop"},
                "spec": {
                    "backoffLimit": 6,
                    "template": {
                        "metadata": {"labels": {"app": "migrate"}},
                        "spec": {"restartPolicy": "Never", "containers": [{"name": "m", "image": "busybox"}]}
                    }
                }
            })
        );
        // A Job that chose its own selector keeps it.
        let mut manual = json!({
            "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "m", "namespace": "shop"},
            "spec": {"manualSelector": true, "selector": {"matchLabels": {"run": "m"}},
                     "template": {"metadata": {"labels": {"run": "m"}}}}
        });
        let before = manual.clone();
        strip("batch", "jobs", &mut manual);
        assert_eq!(manual, before);
    }

    #[test]
    fn strip_service_account_drops_token_secrets() {
        let mut account = json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "default", "namespace": "shop"},
            "secrets": [{"name": "default-token-x7k2p"}],
            "imagePullSecrets": [{"name": "registry"}]
        });
        strip("", "serviceaccounts", &mut account);
        assert_eq!(
            account,
            json!({
                "apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": "default", "namespace": "shop"},
                "imagePullSecrets": [{"name": "registry"}]
            })
        );
    }

    fn keeps(group: &str, plural: &str, object: Value) -> bool {
        keep_object(
            group,
            plural,
            &object,
            &DumpOptions::default().skip_namespaces,
        )
    }

    #[test]
    fn exclusions_owned_objects_tokens_system_objects() {
        let owned = json!({"metadata": {"name": "web-5d9c", "namespace": "shop",
            "ownerReferences": [{"kind": "Deployment", "name": "web", "controller": true}]}});
        assert!(!keeps("apps", "replicasets", owned.clone()));
        assert!(!keeps("", "configmaps", owned));
        // A non-controller owner reference doesn't make an object the controller's.
        let referenced = json!({"metadata": {"name": "cfg", "namespace": "shop",
            "ownerReferences": [{"kind": "ConfigMap", "name": "other"}]}});
        assert!(keeps("", "configmaps", referenced));

        assert!(!keeps(
            "",
            "secrets",
            json!({"metadata": {"name": "default-token-abc", "namespace": "shop"},
            "type": "kubernetes.io/service-account-token"})
        ));
        assert!(keeps(
            "",
            "secrets",
            json!({"metadata": {"name": "tls", "namespace": "shop"},
            "type": "kubernetes.io/tls"})
        ));
        assert!(!keeps(
            "",
            "configmaps",
            json!({"metadata": {"name": "kube-root-ca.crt", "namespace": "shop"}})
        ));
        assert!(!keeps(
            "",
            "services",
            json!({"metadata": {"name": "kubernetes", "namespace": "default"}})
        ));
        assert!(keeps(
            "",
            "services",
            json!({"metadata": {"name": "kubernetes", "namespace": "shop"}})
        ));

        assert!(!keeps(
            RBAC,
            "clusterroles",
            json!({"metadata": {"name": "system:controller:job-controller"}})
        ));
        assert!(!keeps(
            RBAC,
            "clusterrolebindings",
            json!({"metadata": {"name": "system:basic-user"}})
        ));
        assert!(!keeps(
            RBAC,
            "clusterroles",
            json!({"metadata": {"name": "admin",
            "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}}})
        ));
        assert!(keeps(
            RBAC,
            "clusterroles",
            json!({"metadata": {"name": "shop-reader"}})
        ));
        assert!(keeps(
            RBAC,
            "roles",
            json!({"metadata": {"name": "system:odd-but-mine", "namespace": "shop"}})
        ));

        assert!(!keeps(
            "",
            "configmaps",
            json!({"metadata": {"name": "coredns", "namespace": "kube-system"}})
        ));
        assert!(!keeps(
            "",
            "namespaces",
            json!({"metadata": {"name": "kube-node-lease"}})
        ));
        assert!(keeps(
            "",
            "namespaces",
            json!({"metadata": {"name": "shop"}})
        ));
        assert!(keep_object(
            "",
            "configmaps",
            &json!({"metadata": {"name": "coredns", "namespace": "kube-system"}}),
            &[]
        ));

        assert!(!keeps(
            "apiregistration.k8s.io",
            "apiservices",
            json!({"metadata": {"name": "v1.apps",
            "labels": {"kube-aggregator.kubernetes.io/automanaged": "onstart"}}})
        ));
        assert!(!keeps(
            "flowcontrol.apiserver.k8s.io",
            "flowschemas",
            json!({"metadata": {"name": "exempt",
            "annotations": {"apf.kubernetes.io/autoupdate-spec": "true"}}})
        ));
        assert!(!keeps(
            "flowcontrol.apiserver.k8s.io",
            "prioritylevelconfigurations",
            json!({"metadata": {"name": "workload-low"}})
        ));
        assert!(keeps(
            "flowcontrol.apiserver.k8s.io",
            "prioritylevelconfigurations",
            json!({"metadata": {"name": "batch-jobs"}})
        ));
        assert!(!keeps(
            "scheduling.k8s.io",
            "priorityclasses",
            json!({"metadata": {"name": "system-node-critical"}})
        ));
        assert!(keeps(
            "scheduling.k8s.io",
            "priorityclasses",
            json!({"metadata": {"name": "batch-low"}})
        ));
    }

    #[test]
    fn node_keeps_labels_annotations_and_operator_taints_only() {
        let node = json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "h2", "uid": "n", "resourceVersion": "9",
                "labels": {"kubernetes.io/hostname": "h2", "disk": "ssd"},
                "annotations": {"node.alpha.kubernetes.io/ttl": "0"}},
            "spec": {"podCIDR": "10.244.1.0/24", "taints": [
                {"key": "dedicated", "value": "db", "effect": "NoSchedule"},
                {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute", "timeAdded": "2024-05-01T10:00:00Z"}
            ]},
            "status": {"addresses": []}
        });
        assert_eq!(
            node_for_dump(&node),
            json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": "h2", "labels": {"kubernetes.io/hostname": "h2", "disk": "ssd"},
                    "annotations": {"node.alpha.kubernetes.io/ttl": "0"}},
                "spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}
            })
        );
    }

    #[test]
    fn yaml_puts_type_first_and_quotes_what_yaml_1_1_would_misread() {
        let object = json!({
            "metadata": {"namespace": "shop", "name": "flags"},
            "kind": "ConfigMap", "apiVersion": "v1",
            "data": {"a": "on", "b": "0755", "c": "yes", "d": "1e3", "e": "line one\nline two\n"}
        });
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.yaml");
        write_yaml_file(&path, "header", &[object.clone(), object.clone()]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with(
                "# header\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: flags\n"
            ),
            "{text}"
        );
        for quoted in [
            "\"on\"|'on'",
            "\"0755\"|'0755'",
            "\"yes\"|'yes'",
            "\"1e3\"|'1e3'",
        ] {
            assert!(
                quoted.split('|').any(|q| text.contains(q)),
                "{quoted} not quoted in:\n{text}"
            );
        }
        let back: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
        assert_eq!(back, vec![object.clone(), object]);
    }
}
