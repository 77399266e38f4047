//! Bad inputs: each fails with a message naming the culprit and leaves nothing in the output dir.

use crate::support::*;

fn one_file_manifest(ws: &Workspace, url: &str, sha: &str) -> std::path::PathBuf {
    ws.write_manifest(&format!(
        "name: bad\nversion: '1'\nbinaries:\n  - name: kubelet\n    url: {url}\n    sha256: {sha}\n"
    ))
}

#[test]
fn wrong_sha256_on_a_binary() {
    let files = FileServer::start();
    let url = files.add("/kubelet", Route::Body(random_bytes(30, 70_000)));
    let ws = Workspace::new();
    let expected = "ab".repeat(32);
    let manifest = one_file_manifest(&ws, &url, &expected);
    let err = expect_failure(&ws.build(&manifest, &[]));
    let found = sha256_hex(&random_bytes(30, 70_000));
    for needle in [
        "kubelet",
        url.as_str(),
        expected.as_str(),
        found.as_str(),
        "manifest.yaml:4:",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in: {err}");
    }
    ws.assert_out_clean();
}

#[test]
fn truncated_download() {
    let files = FileServer::start();
    let data = random_bytes(31, 50_000);
    let url = files.add(
        "/kubelet",
        Route::Truncated {
            body: data[..20_000].to_vec(),
            declared: data.len(),
        },
    );
    let ws = Workspace::new();
    let manifest = one_file_manifest(&ws, &url, &sha256_hex(&data));
    let err = expect_failure(&ws.build(&manifest, &[]));
    assert!(
        err.contains("binary kubelet") && err.contains(&url),
        "{err}"
    );
    ws.assert_out_clean();
}

#[test]
fn http_404() {
    let files = FileServer::start();
    let ws = Workspace::new();
    let url = files.url("/missing");
    let manifest = one_file_manifest(&ws, &url, &"00".repeat(32));
    let err = expect_failure(&ws.build(&manifest, &[]));
    assert!(
        err.contains("404") && err.contains(&url) && err.contains("kubelet"),
        "{err}"
    );
    ws.assert_out_clean();
}

#[test]
fn unreachable_registry() {
    let ws = Workspace::new();
    let addr = format!("127.0.0.1:{}", free_port());
    let manifest = ws.write_manifest(&format!(
        "name: bad\nversion: '1'\nimages:\n  - {addr}/x/y:1\n"
    ));
    let err = expect_failure(&ws.build(&manifest, &["--insecure-registry", &addr]));
    assert!(err.contains(&format!("{addr}/x/y:1")), "{err}");
    assert!(err.to_lowercase().contains("connect"), "{err}");
    ws.assert_out_clean();
}

#[test]
fn missing_tag_and_missing_repository() {
    let registry = Registry::start();
    runtime().block_on(registry.push_image("present", "1", "amd64", &[random_bytes(40, 1000)]));
    for (reference, hint) in [
        ("present:2", "present:2"),
        ("absent/repo:1", "absent/repo:1"),
    ] {
        let ws = Workspace::new();
        let manifest = ws.write_manifest(&format!(
            "name: bad\nversion: '1'\nimages:\n  - {}/{reference}\n",
            registry.addr
        ));
        let err = expect_failure(&ws.build(&manifest, &["--insecure-registry", &registry.addr]));
        assert!(
            err.contains(hint) && err.contains("manifest.yaml:4:"),
            "{err}"
        );
        assert!(
            err.to_lowercase().contains("unknown")
                || err.contains("not found")
                || err.contains("404"),
            "{err}"
        );
        ws.assert_out_clean();
    }
}

#[test]
fn bad_yaml_unknown_key_and_duplicates_name_the_line() {
    let ws = Workspace::new();
    let cases = [
        (
            "name: x\nversion: '1'\nfiles:\n  - name: a\n    path: [unclosed\n",
            "manifest.yaml:5:",
        ),
        (
            "name: x\nversion: '1'\nfiles:\n  - name: a\n    pathh: ./a\n",
            "manifest.yaml:5:",
        ),
        (
            "name: x\nversion: '1'\nfiles:\n  - name: a\n    path: ./a\n  - name: a\n    path: ./b\n",
            "manifest.yaml:6:",
        ),
    ];
    for (text, location) in cases {
        let manifest = ws.write_manifest(text);
        let err = expect_failure(&ws.build(&manifest, &[]));
        assert!(err.contains(location), "expected {location} in: {err}");
        ws.assert_out_clean();
    }
    let err = expect_failure(&ws.build(&ws.write_manifest(cases[1].0), &[]));
    assert!(err.contains("pathh"), "{err}");
    let err = expect_failure(&ws.build(&ws.write_manifest(cases[2].0), &[]));
    assert!(err.contains("duplicate"), "{err}");
}

#[test]
fn ctrl_c_during_download_cleans_up() {
    let files = FileServer::start();
    let data = random_bytes(50, 200 * 1024);
    let url = files.add(
        "/slow",
        Route::Slow {
            body: data.clone(),
            pause: std::time::Duration::from_millis(50),
        },
    );
    let ws = Workspace::new();
    let manifest = one_file_manifest(&ws, &url, &sha256_hex(&data));
    let child = bundler()
        .arg("build")
        .arg(&manifest)
        .arg("--key")
        .arg(ws.key())
        .arg("--out")
        .arg(ws.bundle())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the download is under way (the staging dir exists).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let staging_exists = std::fs::read_dir(ws.out_dir())
            .map(|mut d| d.next().is_some())
            .unwrap_or(false);
        if staging_exists {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "build never started downloading"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    run_tool(
        std::process::Command::new("kill")
            .arg("-INT")
            .arg(child.id().to_string()),
    );
    let output = child.wait_with_output().unwrap();
    let err = expect_failure(&output);
    assert!(err.contains("interrupted"), "{err}");
    ws.assert_out_clean();
}
