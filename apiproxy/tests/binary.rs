//! The `ilha-apiproxy` executable's exit statuses and messages on bad input: 2 for usage
//! errors, 1 for what it cannot use (the CA, the listen address), each naming the culprit.

use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ilha-apiproxy"))
        .args(args)
        .output()
        .unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn usage_errors_exit_2_naming_the_flag() {
    let out = run(&[
        "--listen=127.0.0.1:6443",
        "--backend=master1:6443",
        "--ca=/ca.crt",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).starts_with("error: --backend `master1:6443` is not an IP address"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("Usage: ilha-apiproxy"));
    let out = run(&["--listen=127.0.0.1:6443", "--backend=10.0.0.1:6443"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--ca FILE is required"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn help_and_version_exit_0() {
    let out = run(&["--help"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--probe-timeout DURATION"));
    let out = run(&["--version"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ilha-apiproxy 0."));
}

#[test]
fn an_unreadable_ca_exits_1_naming_the_file() {
    let out = run(&[
        "--listen=127.0.0.1:0",
        "--backend=127.0.0.1:1",
        "--ca=/nonexistent/ca.crt",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("error: cannot read the CA /nonexistent/ca.crt: "),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_taken_port_exits_1_naming_the_address() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    std::fs::write(&ca, params.self_signed(&key).unwrap().pem()).unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap().to_string();
    let out = run(&[
        &format!("--listen={listen}"),
        "--backend=127.0.0.1:1",
        &format!("--ca={}", ca.display()),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!("error: cannot listen on {listen}: ")),
        "{err}"
    );
    assert!(err.to_lowercase().contains("in use"), "{err}");
}
