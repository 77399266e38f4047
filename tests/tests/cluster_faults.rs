//! `ilha up` against bad input and failing hosts. Everything that can be known before a host is
//! changed stops the run with every host untouched; a host losing power in the middle of `up`
//! stops it with a message naming the host, and the next `up` finishes the job.
use std::path::Path;
use std::time::Duration;

use ilha_e2e::cluster::{
    Member, eventually, fresh_lab, ilha, kubectl, lab_bundle, seed_layout, text, untouched,
    up_args, write_config, write_inventory,
};
use xtask::lab::Lab;

fn assert_all_untouched(lab: &Lab, hosts: usize, what: &str) {
    for index in 1..=hosts {
        assert!(untouched(lab, index), "{what}: h{index} was changed");
    }
}

/// The lab bundle re-signed with the same key, minus the image called `drop_image`: a bundle
/// that is authentic but incomplete, which only the installer's own requirement check catches.
fn bundle_without_image(source: &Path, key: &Path, drop_image: &str, out: &Path) {
    let dir = out.with_extension("extracted");
    let public = ilha_format::sign::load_public_key(&source.with_file_name("ilha.pub")).unwrap();
    let verified = ilha_format::verify::extract(source, &public, &dir).unwrap();
    let mut index = verified.index;
    let sources: Vec<ilha_format::PackSource> = index
        .entries
        .iter()
        .map(|e| ilha_format::PackSource {
            path_in_bundle: e.path.clone(),
            source_file: dir.join(&e.path),
            sha256: e.sha256,
            size: e.size,
            executable: e.mode & 0o111 != 0,
        })
        .collect();
    index.entries.clear();
    let before = index.images.len();
    index.images.retain(|i| i.name != drop_image);
    assert_eq!(
        index.images.len(),
        before - 1,
        "{drop_image} was in the bundle"
    );
    let secret = ilha_format::sign::load_secret_key(key, None).unwrap();
    ilha_format::pack(index, sources, &secret, out, &ilha_format::NoProgress).unwrap();
}

#[test]
fn bad_input_stops_up_before_any_host_changes() {
    let bundle = lab_bundle();
    let lab = fresh_lab(6);
    let work = tempfile::tempdir().unwrap();
    let config = write_config(work.path(), "faults");
    let config = config.to_str().unwrap();
    let pubkey = bundle.pubkey.to_str().unwrap();
    let good_inventory = write_inventory(&lab, work.path(), &seed_layout(), None);
    let good_inventory = good_inventory.to_str().unwrap().to_string();

    // A tampered bundle: one byte flipped in the middle.
    let tampered = work.path().join("tampered.tar.zst");
    let mut bytes = std::fs::read(&bundle.bundle).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&tampered, bytes).unwrap();
    let out = ilha(
        &lab,
        &up_args(tampered.to_str().unwrap(), pubkey, &good_inventory, config),
    );
    assert!(!out.status.success());
    let message = text(&out);
    assert!(message.contains("failed verification"), "{message}");
    assert!(message.contains("tampered.tar.zst"), "{message}");
    assert_all_untouched(&lab, 6, "tampered bundle");

    // An authentic bundle lacking the pause image.
    let incomplete = work.path().join("incomplete.tar.zst");
    bundle_without_image(
        &bundle.bundle,
        &bundle.dir.join("ilha.key"),
        "k8s.gcr.io/pause:3.2",
        &incomplete,
    );
    let out = ilha(
        &lab,
        &up_args(
            incomplete.to_str().unwrap(),
            pubkey,
            &good_inventory,
            config,
        ),
    );
    assert!(!out.status.success());
    let message = text(&out);
    assert!(
        message.contains("lacks what a Kubernetes v1.20.2 cluster needs"),
        "{message}"
    );
    assert!(message.contains("k8s.gcr.io/pause:3.2"), "{message}");
    assert_all_untouched(&lab, 6, "bundle missing an image");

    // An unreachable host (h7 is not running).
    let mut layout = seed_layout();
    layout.push(Member {
        name: "node7",
        index: 7,
        groups: &["kube-node"],
    });
    let dir7 = work.path().join("seven");
    std::fs::create_dir_all(&dir7).unwrap();
    let inventory7 = write_inventory(&lab, &dir7, &layout, None);
    let out = ilha(
        &lab,
        &up_args(
            bundle.bundle.to_str().unwrap(),
            pubkey,
            inventory7.to_str().unwrap(),
            config,
        ),
    );
    assert!(!out.status.success());
    let message = text(&out);
    assert!(message.contains("node7"), "{message}");
    assert!(message.contains("nothing was changed"), "{message}");
    assert_all_untouched(&lab, 6, "unreachable host");

    // A wrong `ip=`: node4 says 10.88.0.77, which is on no interface of h4.
    let dir_ip = work.path().join("wrong-ip");
    std::fs::create_dir_all(&dir_ip).unwrap();
    let wrong = write_inventory(&lab, &dir_ip, &seed_layout(), Some(("node4", "10.88.0.77")));
    let out = ilha(
        &lab,
        &up_args(
            bundle.bundle.to_str().unwrap(),
            pubkey,
            wrong.to_str().unwrap(),
            config,
        ),
    );
    assert!(!out.status.success());
    let message = text(&out);
    let last = message
        .lines()
        .skip_while(|l| !l.starts_with("error: preflight failed"))
        .collect::<Vec<_>>();
    assert!(
        last.iter()
            .any(|l| l.contains("node4: address") && l.contains("10.88.0.77")),
        "{message}"
    );
    assert_all_untouched(&lab, 6, "wrong ip=");
}

#[test]
fn a_power_cut_in_the_middle_of_up_is_finished_by_the_next_up() {
    let bundle = lab_bundle();
    let lab = fresh_lab(6);
    let work = tempfile::tempdir().unwrap();
    let inventory = write_inventory(&lab, work.path(), &seed_layout(), None);
    let config = write_config(work.path(), "cut");
    let args: Vec<String> = up_args(
        bundle.bundle.to_str().unwrap(),
        bundle.pubkey.to_str().unwrap(),
        inventory.to_str().unwrap(),
        config.to_str().unwrap(),
    )
    .into_iter()
    .map(String::from)
    .collect();

    // Cut node5's power once it has started receiving its binaries.
    let child = std::process::Command::new(ilha_e2e::cluster::ilha_binary())
        .args(&args)
        .arg("--ssh-config")
        .arg(lab.ssh_config().unwrap())
        .arg("--known-hosts")
        .arg(lab.known_hosts())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    eventually(
        "node5 starts receiving files",
        Duration::from_secs(180),
        || {
            lab.ssh_ok(
                5,
                "ls /usr/local/bin/ /usr/local/bin/.*tmp* 2>/dev/null | grep -q kube && echo yes",
            )
            .ok()
            .filter(|o| o.contains("yes"))
        },
    );
    lab.kill(5).unwrap();
    let cut = child.wait_with_output().unwrap();
    let message = text(&cut);
    eprintln!("interrupted up:\n{message}");
    assert!(
        !cut.status.success(),
        "up must fail when a host dies under it"
    );
    assert!(
        message.contains("node5"),
        "the failure names the host: {message}"
    );
    assert!(message.contains("run `ilha up` again"), "{message}");

    lab.start(5).unwrap();
    let again = ilha(&lab, &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        again.status.success(),
        "up after the power cut:\n{}",
        text(&again)
    );
    let out = text(&again);
    assert!(
        out.contains("already done"),
        "the second run resumes, it does not redo: {out}"
    );
    let nodes = kubectl(&lab, 1, "get nodes --no-headers");
    assert_eq!(
        nodes.lines().filter(|l| l.contains(" Ready")).count(),
        6,
        "{nodes}"
    );
}
