//! Build benchmark: `cargo bench -p ilha-bundler --bench build`.
//!
//! Pushes ~5 multi-layer images (a few hundred MB, some layers shared) to a local registry, then
//! times `ilha-bundler build` against `skopeo copy` of the same images into one `oci-archive`
//! each (sequentially, as an operator would). Median of 3 runs, output removed before each run.

#[allow(dead_code)]
#[path = "../tests/it/support.rs"]
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

const MB: usize = 1 << 20;

fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort();
    runs[runs.len() / 2]
}

fn main() {
    let registry = Registry::start();
    let base = random_bytes(100, 48 * MB);
    let runtime_layer = random_bytes(101, 24 * MB);
    let mut images = Vec::new();
    let mut referenced = 0usize;
    let mut unique = base.len() + runtime_layer.len();
    runtime().block_on(async {
        for i in 0..5u64 {
            let mut layers = vec![base.clone()];
            if i % 2 == 0 {
                layers.push(runtime_layer.clone());
            }
            for j in 0..3u64 {
                let size = (8 + 6 * ((i + j) % 4) as usize) * MB;
                layers.push(random_bytes(1000 + i * 10 + j, size));
                unique += size;
            }
            referenced += layers.iter().map(Vec::len).sum::<usize>();
            let repo = format!("bench/img{i}");
            registry.push_image(&repo, "1", "amd64", &layers).await;
            images.push(repo);
        }
    });
    eprintln!(
        "5 images, {} MiB referenced, {} MiB unique",
        referenced / MB,
        unique / MB
    );

    let ws = Workspace::new();
    let mut manifest = String::from("name: bench\nversion: '1'\nimages:\n");
    for repo in &images {
        manifest.push_str(&format!("  - {}/{repo}:1\n", registry.addr));
    }
    let manifest_path = ws.write_manifest(&manifest);

    let mut ours = Vec::new();
    for _ in 0..3 {
        let _ = std::fs::remove_dir_all(ws.out_dir());
        let started = Instant::now();
        let output = ws.build(&manifest_path, &["--insecure-registry", &registry.addr]);
        ours.push(started.elapsed());
        expect_success(&output);
    }
    let bundle_bytes = std::fs::metadata(ws.bundle()).unwrap().len();

    let skopeo_out = ws.path().join("skopeo");
    let mut theirs = Vec::new();
    for _ in 0..3 {
        let _ = std::fs::remove_dir_all(&skopeo_out);
        std::fs::create_dir_all(&skopeo_out).unwrap();
        let started = Instant::now();
        for (i, repo) in images.iter().enumerate() {
            run_tool(
                Command::new("skopeo")
                    .args(["copy", "--quiet", "--src-tls-verify=false"])
                    .arg(format!("docker://{}/{repo}:1", registry.addr))
                    .arg(format!("oci-archive:{}/img{i}.tar", skopeo_out.display())),
            );
        }
        theirs.push(started.elapsed());
    }

    let (ours_median, theirs_median) = (median(ours.clone()), median(theirs.clone()));
    println!(
        "ilha-bundler build: median {:.2}s (runs {ours:.2?}), bundle {} MiB",
        ours_median.as_secs_f64(),
        bundle_bytes / MB as u64
    );
    println!(
        "skopeo copy x5:     median {:.2}s (runs {theirs:.2?})",
        theirs_median.as_secs_f64()
    );
    println!(
        "ratio: {:.2} (target <= 0.70)",
        ours_median.as_secs_f64() / theirs_median.as_secs_f64()
    );
}
