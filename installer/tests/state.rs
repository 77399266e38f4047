//! `ilha state recover` from the command line, without hosts: what it refuses and what it leaves.
use std::path::Path;

use assert_cmd::Command;
use predicates::str::contains;

const INVENTORY: &str = "\
node1 ansible_host=127.0.0.1 ansible_port=1 ip=10.0.0.1

[kube-master]
node1

[etcd]
node1

[kube-node]
node1

[k8s-cluster:children]
kube-master
kube-node
";

fn inputs(dir: &Path) -> (String, String) {
    let inventory = dir.join("inventory.ini");
    std::fs::write(&inventory, INVENTORY).unwrap();
    let config = dir.join("cluster.yaml");
    std::fs::write(&config, "cluster_name: lab\nstate_dir: state\n").unwrap();
    (
        inventory.display().to_string(),
        config.display().to_string(),
    )
}

fn recover(dir: &Path) -> Command {
    let (inventory, config) = inputs(dir);
    let mut command = Command::cargo_bin("ilha").unwrap();
    command.args([
        "state",
        "recover",
        "-i",
        &inventory,
        "-c",
        &config,
        "--ssh-config",
        "/dev/null",
        "--known-hosts",
        &dir.join("known_hosts").display().to_string(),
        "--connect-timeout",
        "2",
    ]);
    command
}

#[test]
fn a_state_directory_with_a_pki_is_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("state/pki/kubernetes/ca.key");
    std::fs::create_dir_all(key.parent().unwrap()).unwrap();
    std::fs::write(&key, "mine").unwrap();
    recover(dir.path())
        .assert()
        .code(1)
        .stderr(contains("already holds a PKI"))
        .stderr(contains(dir.path().join("state/pki").display().to_string()))
        .stderr(contains("move it aside"));
    assert_eq!(std::fs::read_to_string(&key).unwrap(), "mine");
}

#[test]
fn without_a_reachable_master_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    recover(dir.path())
        .assert()
        .code(1)
        .stderr(contains("no control-plane host"))
        .stderr(contains("unreachable: node1"));
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| !["inventory.ini", "cluster.yaml", "known_hosts"].contains(&name.as_str()))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
