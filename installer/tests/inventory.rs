//! `ilha inventory show` as an operator runs it: the seed's inventory, today's Kubespray names,
//! the YAML form, the shipped examples, and every malformed case naming `file:line`.

use std::fs;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use ilha::inventory::Inventory;
use serde_json::Value;

/// The seed guide's inventory, byte for byte (placeholders included).
const SEED_INVENTORY: &str = "\
node1 ansible_ssh_user=root ansible_ssh_host=node01 ip=x.x.x.x
node2 ansible_ssh_user=root ansible_ssh_host=node02 ip=x.x.x.x
node3 ansible_ssh_user=root ansible_ssh_host=node03 ip=x.x.x.x
node4 ansible_ssh_user=root ansible_ssh_host=node04 ip=x.x.x.x
node5 ansible_ssh_user=root ansible_ssh_host=node05 ip=x.x.x.x
node6 ansible_ssh_user=root ansible_ssh_host=node06 ip=x.x.x.x

[kube-master]
node1
node2
node3

[etcd]
node1
node2
node3

[kube-node]
node4
node5
node6

[k8s-cluster:children]
kube-node
kube-master
";

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn ilha() -> Command {
    Command::cargo_bin("ilha").unwrap()
}

/// Writes `files` into a fresh directory and runs `ilha inventory show ARGS` there, so messages
/// carry the bare file names.
fn show_in(files: &[(&str, &str)], args: &[&str]) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        fs::write(dir.path().join(name), text).unwrap();
    }
    let output = ilha()
        .current_dir(dir.path())
        .args(["inventory", "show"])
        .args(args)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

/// Runs on one inventory file and expects failure with every `expected` fragment in stderr.
fn fails_with(name: &str, text: &str, expected: &[&str]) {
    let (ok, _, stderr) = show_in(&[(name, text)], &["-i", name]);
    assert!(!ok, "{name} was accepted:\n{text}");
    for fragment in expected {
        assert!(
            stderr.contains(fragment),
            "stderr lacks `{fragment}`:\n{stderr}"
        );
    }
}

fn show_json(path: &Path) -> Value {
    let output = ilha()
        .args(["inventory", "show", "--json", "-i"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// `[(name, ssh_host, user, port, ip, roles)]`: what every inventory form must agree on.
fn host_summary(json: &Value) -> Vec<(String, String, String, u64, String, Vec<String>)> {
    json["inventory"]["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|host| {
            (
                host["name"].as_str().unwrap().to_string(),
                host["ssh_host"].as_str().unwrap().to_string(),
                host["ssh_user"].as_str().unwrap().to_string(),
                host["ssh_port"].as_u64().unwrap(),
                host["ip"].as_str().unwrap_or("-").to_string(),
                host["roles"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|role| role.as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect()
}

fn seed_layout() -> Vec<(String, String, String, u64, String, Vec<String>)> {
    (1..=6)
        .map(|n| {
            let roles: &[&str] = if n <= 3 {
                &["control-plane", "etcd"]
            } else {
                &["worker"]
            };
            (
                format!("node{n}"),
                format!("node0{n}"),
                "root".to_string(),
                22,
                format!("10.88.0.1{n}"),
                roles.iter().map(|r| r.to_string()).collect(),
            )
        })
        .collect()
}

#[test]
fn the_seeds_exact_inventory_is_read_and_its_placeholders_refused() {
    let (ok, _, stderr) = show_in(
        &[("inventory.txt", SEED_INVENTORY)],
        &["-i", "inventory.txt"],
    );
    assert!(!ok);
    // Every line is read (old group names and `ansible_ssh_*` included); the only complaint is
    // the guide's `ip=x.x.x.x` placeholder, on each of its six lines.
    for line in 1..=6 {
        assert!(
            stderr.contains(&format!(
                "inventory.txt:{line}: host `node{line}`: `ip=x.x.x.x` is not an IP address (the guide's placeholder"
            )),
            "{stderr}"
        );
    }
    assert_eq!(stderr.lines().count(), 6, "{stderr}");
}

#[test]
fn the_seed_layout_with_addresses_in_old_names() {
    let filled: String = SEED_INVENTORY
        .lines()
        .enumerate()
        .map(|(index, line)| line.replace("x.x.x.x", &format!("10.88.0.1{}", index + 1)) + "\n")
        .collect();
    assert_eq!(
        filled,
        fs::read_to_string(examples().join("inventory/seed.ini"))
            .unwrap()
            .lines()
            .filter(|line| !line.starts_with('#'))
            .map(|line| format!("{line}\n"))
            .collect::<String>()
    );
    let json = show_json(&examples().join("inventory/seed.ini"));
    assert_eq!(host_summary(&json), seed_layout());
    assert_eq!(json["inventory"]["format"], "ini");
    assert_eq!(json["inventory"]["unknown_groups"], serde_json::json!([]));
}

#[test]
fn todays_names_and_yaml_mean_the_same_as_the_seed() {
    let modern = show_json(&examples().join("inventory/kubespray.ini"));
    assert_eq!(host_summary(&modern), seed_layout());
    let yaml = show_json(&examples().join("inventory/hosts.yaml"));
    assert_eq!(yaml["inventory"]["format"], "yaml");
    assert_eq!(host_summary(&yaml), seed_layout());
}

#[test]
fn single_host_and_separate_etcd_layouts() {
    let single = host_summary(&show_json(&examples().join("inventory/single-host.ini")));
    assert_eq!(single.len(), 1);
    assert_eq!(single[0].5, ["control-plane", "etcd", "worker"]);
    let separate = host_summary(&show_json(&examples().join("inventory/separate-etcd.ini")));
    let roles: Vec<(&str, Vec<String>)> = separate
        .iter()
        .map(|h| (h.0.as_str(), h.5.clone()))
        .collect();
    assert_eq!(roles[0], ("etcd1", vec!["etcd".to_string()]));
    assert_eq!(roles[3], ("master1", vec!["control-plane".to_string()]));
    assert_eq!(roles[6], ("worker2", vec!["worker".to_string()]));
    assert_eq!(separate[0].1, "10.88.0.11");
}

#[test]
fn the_text_table_and_the_example_cluster_config() {
    let output = ilha()
        .args(["inventory", "show", "-i"])
        .arg(examples().join("inventory/seed.ini"))
        .arg("-c")
        .arg(examples().join("cluster.yaml"))
        .output()
        .unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        stdout.starts_with("HOST   SSH             IP          ACCESS_IP  ROLES\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("node1  root@node01:22  10.88.0.11  -          control-plane,etcd\n"),
        "{stdout}"
    );
    assert!(stdout.contains("6 hosts: 3 control-plane, 3 etcd, 3 workers"));
    assert!(stdout.contains("pods 10.244.0.0/16  services 10.96.0.0/12  network bridge"));
}

#[test]
fn group_vars_inline_hosts_and_unknown_groups() {
    let text = "\
[all:vars]
ansible_user=admin
ansible_port = 2222 # inline comment

; a comment
[kube_control_plane]
cp1 ansible_host=10.1.0.1 ip=10.1.0.1

[etcd]
cp1

[kube_node]
w1 ansible_host=\"10.1.0.2\" ansible_port=22 ip=10.1.0.2 foo=bar

[kube_node:vars]
ansible_user=worker

[calico_rr]
";
    let (ok, stdout, stderr) = show_in(&[("inv.ini", text)], &["-i", "inv.ini", "--json"]);
    assert!(ok, "{stderr}");
    let json: Value = serde_json::from_str(&stdout).unwrap();
    let hosts = &json["inventory"]["hosts"];
    assert_eq!(hosts[0]["name"], "cp1");
    assert_eq!(
        hosts[0]["line"], 7,
        "a host defined inside a group gets that line"
    );
    assert_eq!(hosts[0]["ssh_user"], "admin");
    assert_eq!(hosts[0]["ssh_port"], 2222);
    assert_eq!(hosts[1]["ssh_user"], "worker", "group vars beat all:vars");
    assert_eq!(hosts[1]["ssh_port"], 22, "host vars beat group vars");
    assert_eq!(
        json["inventory"]["unknown_groups"],
        serde_json::json!([{"name": "calico_rr", "line": 18}])
    );
    assert!(
        stderr.contains("inv.ini:18: group `calico_rr` means nothing to ilha"),
        "{stderr}"
    );
}

#[test]
fn unknown_section_syntax() {
    fails_with(
        "inventory.ini",
        "n1 ansible_host=h1\n[kube_control_plane]\nn1\n[etcd:childs]\nn1\n",
        &["inventory.ini:4: bad section header `[etcd:childs]`"],
    );
    fails_with(
        "inventory.ini",
        "n1 ansible_host=h1\n\n[kube_control_plane\nn1\n",
        &["inventory.ini:3: bad section header `[kube_control_plane`"],
    );
    fails_with(
        "inventory.ini",
        "n1 ansible_host=h1 oops\n",
        &["inventory.ini:1: `oops` is not `key=value`"],
    );
}

/// As Ansible does: a host with no `ansible_host`, `access_ip` or `ip` is reached by its
/// inventory name (ssh resolves it: its own config or DNS).
#[test]
fn a_host_without_address_is_reached_by_its_name() {
    let text = "[kube_control_plane]\nn1 ansible_host=h1\n[etcd]\nn1\n[kube_node]\nn2\n";
    let (ok, stdout, stderr) = show_in(&[("inv.ini", text)], &["-i", "inv.ini", "--json"]);
    assert!(ok, "{stderr}");
    let json: Value = serde_json::from_str(&stdout).unwrap();
    let hosts = &json["inventory"]["hosts"];
    assert_eq!(hosts[1]["name"], "n2");
    assert_eq!(hosts[1]["ssh_host"], "n2");
    assert_eq!(hosts[1]["ip"], Value::Null, "left to preflight");
    assert_eq!(hosts[0]["ssh_host"], "h1");
}

#[test]
fn bad_ip() {
    fails_with(
        "inventory.ini",
        "n1 ansible_host=h1 ip=10.0.0.300\n[kube_control_plane]\nn1\n[etcd]\nn1\n",
        &["inventory.ini:1: host `n1`: `ip=10.0.0.300` is not an IP address"],
    );
    fails_with(
        "inventory.ini",
        "n1 ansible_host=h1 ansible_port=http\n[kube_control_plane]\nn1\n[etcd]\nn1\n",
        &["inventory.ini:1: host `n1`: `ansible_port=http` is not a port number"],
    );
}

#[test]
fn duplicate_host_and_duplicate_ip() {
    fails_with(
        "inventory.ini",
        "n1 ansible_host=h1\n[kube_control_plane]\nn1 ansible_host=h2\n[etcd]\nn1\n",
        &["inventory.ini:3: host `n1` is defined twice (first at line 1)"],
    );
    fails_with(
        "inventory.ini",
        "[etcd]\nn1 ansible_host=h1\nn1\n[kube_control_plane]\nn1\n",
        &["inventory.ini:3: host `n1` is listed twice in group `etcd` (first at line 2)"],
    );
    fails_with(
        "inventory.ini",
        "n1 ansible_host=h1 ip=10.0.0.1\nn2 ansible_host=h2 ip=10.0.0.1\n[kube_control_plane]\nn1\n[etcd]\nn1\n[kube_node]\nn2\n",
        &["inventory.ini:2: host `n2` has the same ip 10.0.0.1 as host `n1` (line 1)"],
    );
}

#[test]
fn even_etcd_count_loads_but_cannot_start_a_cluster() {
    // A running cluster passes through an even count while `scale` grows it; a new one may not
    // start with one.
    let inventory = Inventory::parse(
        Path::new("inventory.ini"),
        "n1 ansible_host=h1\nn2 ansible_host=h2\n[kube_control_plane]\nn1\n\n[etcd]\nn1\nn2\n",
    )
    .unwrap();
    let err = inventory.check_odd_etcd().unwrap_err().to_string();
    assert!(
        err.contains("inventory.ini:6: the etcd group has 2 members: etcd needs an odd number"),
        "{err}"
    );
}

#[test]
fn no_masters_and_no_role() {
    fails_with(
        "inventory.ini",
        "n1 ansible_host=h1\n[kube-master]\n[etcd]\nn1\n",
        &[
            "inventory.ini:2: no control-plane host: group `kube_control_plane` (or its old name `kube-master`) is missing or empty",
        ],
    );
    fails_with(
        "inventory.ini",
        "n1 ansible_host=h1\nn2 ansible_host=h2\n[kube_control_plane]\nn1\n[etcd]\nn1\n",
        &["inventory.ini:2: host `n2` has no role"],
    );
}

#[test]
fn bad_yaml() {
    fails_with(
        "hosts.yaml",
        "all:\n  hosts:\n    n1:\n      ansible_host: h1\n  children:\n    etcd: {hosts: {n1: }\n",
        &["hosts.yaml:6: YAML: "],
    );
    fails_with(
        "hosts.yaml",
        "all:\n  hosts:\n    n1:\n      ansible_host: h1\n  chidren:\n    etcd:\n",
        &["hosts.yaml:5: YAML: unknown field `chidren`"],
    );
    fails_with(
        "hosts.yaml",
        "all:\n  hosts:\n    n1:\n      ansible_host: h1\n      ip: 10.0.0.999\n  children:\n    kube_control_plane:\n      hosts:\n        n1:\n    etcd:\n      hosts:\n        n1:\n",
        &["hosts.yaml:5: host `n1`: `ip=10.0.0.999` is not an IP address"],
    );
}

#[test]
fn cluster_config_errors_name_file_and_line() {
    let inventory = fs::read_to_string(examples().join("inventory/seed.ini")).unwrap();
    let run = |config: &str| {
        show_in(
            &[("inventory.ini", &inventory), ("cluster.yaml", config)],
            &["-i", "inventory.ini", "-c", "cluster.yaml"],
        )
    };
    let (ok, _, stderr) = run("cluster_name: lab\n\npod_cdir: 10.32.0.0/16\n");
    assert!(!ok);
    assert!(
        stderr.contains("cluster.yaml:3: YAML: unknown field `pod_cdir`"),
        "{stderr}"
    );
    let (ok, _, stderr) = run("pod_cidr: 10.32.0.0/16\nservice_cidr: 10.32.128.0/20\n");
    assert!(!ok);
    assert!(
        stderr.contains(
            "cluster.yaml:1: pod_cidr 10.32.0.0/16 and service_cidr 10.32.128.0/20 (line 2) overlap"
        ),
        "{stderr}"
    );
    let (ok, _, stderr) = run("pod_cidr: 10.88.0.0/16\n");
    assert!(!ok);
    assert!(
        stderr.contains("cluster.yaml:1: pod_cidr 10.88.0.0/16 contains ip 10.88.0.11 of host `node1` (inventory.ini:5)"),
        "{stderr}"
    );
    let (ok, stdout, stderr) = run("cluster_name: lab\npod_cidr: 10.32.0.0/16\n");
    assert!(ok, "{stderr}");
    assert!(stdout.contains("cluster lab "), "{stdout}");
    // Next to the config, whatever the working directory: never relative to where ilha runs.
    assert!(stdout.contains("/ilha-state/lab\n"), "{stdout}");
    assert!(stdout.contains("state in /"), "an absolute path: {stdout}");
}

#[test]
fn unreadable_inventory_names_the_file() {
    fails_with("x.ini", "", &["no control-plane host"]);
    let (ok, _, stderr) = show_in(&[], &["-i", "missing.ini"]);
    assert!(!ok);
    assert!(
        stderr.contains("cannot read inventory missing.ini"),
        "{stderr}"
    );
}

#[test]
fn become_through_sudo_is_shown_and_other_forms_refused_with_their_line() {
    let hosts = "\
node1 ansible_host=10.88.0.11 ansible_user=ops ansible_become=yes
node2 ansible_host=10.88.0.12 ansible_user=ops

[kube_control_plane]
node1
[etcd]
node1
[kube_node]
node2
";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hosts.ini");
    fs::write(&path, hosts).unwrap();
    let json = show_json(&path);
    let become_root: Vec<(String, bool)> = json["inventory"]["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|host| {
            (
                host["name"].as_str().unwrap().to_string(),
                host["become_root"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        become_root,
        [("node1".to_string(), true), ("node2".to_string(), false)]
    );

    fails_with(
        "su.ini",
        &format!("{hosts}[all:vars]\nansible_become_method=su\n"),
        &[
            "su.ini:11: host `node1`: `ansible_become_method=su`: ilha supports become through sudo to root only",
            "su.ini:11: host `node2`: `ansible_become_method=su`",
        ],
    );
    fails_with(
        "password.ini",
        &format!("{hosts}[kube_node:vars]\nansible_become_pass=hunter2\n"),
        &[
            "password.ini:11: host `node2`: a become password is set: ilha runs `sudo -n` and never types a password; give the user a NOPASSWD rule (for example `ops ALL=(root) NOPASSWD: ALL` in /etc/sudoers.d/ops)",
        ],
    );
    let (_, _, stderr) = show_in(
        &[(
            "password.ini",
            &format!("{hosts}[kube_node:vars]\nansible_become_pass=hunter2\n"),
        )],
        &["-i", "password.ini"],
    );
    assert!(
        !stderr.contains("hunter2"),
        "the password is shown:\n{stderr}"
    );
}
