//! `cargo bench -p ilha-format --bench verify`: packs ~300 MB once, then times `verify` (default:
//! key id of `FILE.minisig` only, and `--file-signature`: full whole-file check) against
//! `openssl dgst -sha256` on the same file (interleaved runs, medians). Target: ratio ≤ 1.25.
//!
//! Knobs (env): ILHA_BENCH_MB (default 300), ILHA_BENCH_RUNS (default 5), ILHA_BENCH_DIR
//! (default: a temp dir under /var/tmp, i.e. disk rather than a RAM-backed /tmp), ILHA_BENCH_KEEP
//! (set: keep the bundle and `ilha.pub` for runs of `ilha verify` by hand).

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ilha_format::index::blob_path;
use ilha_format::verify::{FileSignatureCheck, verify_with};
use ilha_format::{ArtifactRecord, Index, KeyPair, NoProgress, PackSource, Sha256, pack};

fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Text-like data that zstd shrinks a few times (like YAML manifests or uncompressed binaries).
fn compressible(seed: u64, len: usize) -> Vec<u8> {
    let words: Vec<String> = (0..512)
        .map(|i| format!("word{}-{} ", i * 7919 % 1000, seed % 13))
        .collect();
    let pick = noise(seed, len / 4 + 8);
    let mut out = Vec::with_capacity(len + 32);
    let mut i = 0;
    while out.len() < len {
        let w = &words[(pick[i % pick.len()] as usize) * 2 % words.len()];
        out.extend_from_slice(w.as_bytes());
        if i % 9 == 0 {
            out.push(b'\n');
        }
        i += 1;
    }
    out.truncate(len);
    out
}

/// (own user+system, children's user+system) CPU seconds, from /proc/self/stat (clock ticks of 10 ms).
fn cpu_seconds() -> (f64, f64) {
    let stat = fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the `(comm)`: state is field 3, utime 14, stime 15, cutime 16, cstime 17.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<f64> = rest
        .split(' ')
        .skip(11)
        .take(4)
        .map(|x| x.parse().unwrap())
        .collect();
    ((f[0] + f[1]) / 100.0, (f[2] + f[3]) / 100.0)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time_cmd(program: &str, args: &[&str], file: &Path) -> Duration {
    let start = Instant::now();
    let out = Command::new(program)
        .args(args)
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} (is it installed?): {e}"));
    let elapsed = start.elapsed();
    assert!(
        out.status.success(),
        "{program} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    elapsed
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` does not: skip the 300 MB run there.
    if !std::env::args().any(|a| a == "--bench") {
        println!("verify bench: run it with `cargo bench -p ilha-format --bench verify`");
        return;
    }
    let total_mb: usize = std::env::var("ILHA_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let base = std::env::var("ILHA_BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into());
    let dir = tempfile::Builder::new()
        .prefix("ilha-bench-")
        .tempdir_in(&base)
        .expect("bench temp dir");
    let keys = KeyPair::generate().unwrap();

    // Several hundred entries: 80% incompressible (like gzip'd layers), 20% compressible.
    let mut index = Index::new("bench", "1", "linux/amd64");
    let mut sources = Vec::new();
    let total = total_mb << 20;
    let mut written = 0usize;
    let mut n = 0u64;
    let gen_start = Instant::now();
    while written < total {
        // Sizes from 4 KiB to ~1.5 MiB, varying with n: several hundred entries.
        let size = (4096 + (n as usize * 7_777_777) % (3 << 19))
            .min(total - written)
            .max(1);
        let data = if n % 5 == 4 {
            compressible(n, size)
        } else {
            noise(n + 1, size)
        };
        let digest = Sha256::of(&data);
        let src = dir.path().join(format!("src-{n}"));
        fs::write(&src, &data).unwrap();
        index.files.push(ArtifactRecord {
            name: format!("f{n}"),
            sha256: digest,
            size: size as u64,
            source: format!("gen:{n}"),
        });
        sources.push(PackSource {
            path_in_bundle: blob_path(&digest),
            source_file: src,
            sha256: digest,
            size: size as u64,
            executable: false,
        });
        written += size;
        n += 1;
    }
    println!(
        "generated {n} entries, {written} bytes in {:.2} s",
        gen_start.elapsed().as_secs_f64()
    );

    let bundle = dir.path().join("bench.tar.zst");
    let start = Instant::now();
    let report = pack(index, sources, &keys.secret, &bundle, &NoProgress).unwrap();
    println!(
        "pack: {:.2} s, {} -> {} bytes ({:.1}%)",
        start.elapsed().as_secs_f64(),
        report.content_bytes,
        report.bundle_bytes,
        100.0 * report.bundle_bytes as f64 / report.content_bytes as f64
    );
    // The sources are no longer needed; free the page cache for the bundle itself.
    for e in fs::read_dir(dir.path()).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().unwrap().to_string_lossy().starts_with("src-") {
            fs::remove_file(p).unwrap();
        }
    }

    // Warm the page cache identically for every tool.
    let _ = time_cmd("cat", &[], &bundle);
    let runs: usize = std::env::var("ILHA_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let (mut fast, mut full, mut openssl) = (Vec::new(), Vec::new(), Vec::new());
    let (mut fast_cpu, mut full_cpu, mut openssl_cpu) = (0.0, 0.0, 0.0);
    let mut loads = Vec::new();
    // Interleaved, so that a burst of load from other builds hits every tool alike.
    for _ in 0..runs {
        loads.push(load_average());
        let (_, children0) = cpu_seconds();
        openssl.push(time_cmd("openssl", &["dgst", "-sha256"], &bundle));
        openssl_cpu += cpu_seconds().1 - children0;
        for (check, times, cpu) in [
            (FileSignatureCheck::KeyIdOnly, &mut fast, &mut fast_cpu),
            (FileSignatureCheck::Full, &mut full, &mut full_cpu),
        ] {
            let (own0, _) = cpu_seconds();
            let start = Instant::now();
            let v = verify_with(&bundle, &keys.public, check).unwrap();
            times.push(start.elapsed());
            *cpu += cpu_seconds().0 - own0;
            assert_eq!(v.index.entries.len() as u64, n);
        }
    }
    components(&bundle);
    if std::env::var_os("ILHA_BENCH_KEEP").is_some() {
        fs::write(dir.path().join("ilha.pub"), keys.public.to_file_text()).unwrap();
        println!("kept: {}", dir.keep().display());
    }
    let o = median(openssl);
    let mb = report.bundle_bytes as f64 / 1e6;
    println!(
        "bundle file: {:.1} MB compressed, {:.1} MB content; {runs} interleaved runs, medians",
        mb,
        report.content_bytes as f64 / 1e6
    );
    println!(
        "openssl dgst -sha256:                 {:.3} s ({:.0} MB/s), cpu {:.2} s",
        o.as_secs_f64(),
        mb / o.as_secs_f64(),
        openssl_cpu / runs as f64
    );
    for (label, times, cpu) in [
        ("verify (default, key id of .minisig)", fast, fast_cpu),
        ("verify --file-signature (full)      ", full, full_cpu),
    ] {
        let t = median(times);
        println!(
            "{label}  {:.3} s, cpu {:.2} s, ratio {:.2} (target <= 1.25)",
            t.as_secs_f64(),
            cpu / runs as f64,
            t.as_secs_f64() / o.as_secs_f64()
        );
    }
    println!(
        "load average (1 min) at the start of each run: {}",
        loads.join(" ")
    );
}

fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split(' ')
        .next()
        .unwrap_or("?")
        .to_owned()
}

/// Single-threaded cost of each stage, for the record.
fn components(bundle: &Path) {
    use std::io::Read;
    let raw = fs::read(bundle).unwrap();
    let start = Instant::now();
    let mut h = ilha_format::sign::Prehasher::new();
    h.update(&raw);
    let _ = h.finish();
    let blake = start.elapsed();
    let start = Instant::now();
    let mut dec = zstd::stream::read::Decoder::new(&raw[..]).unwrap();
    let mut buf = vec![0u8; 4 << 20];
    let mut plain = 0usize;
    let mut hasher = ilha_format::digest::Sha256Hasher::new();
    let mut sha = Duration::ZERO;
    loop {
        let n = dec.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        plain += n;
        let t = Instant::now();
        hasher.update(&buf[..n]);
        sha += t.elapsed();
    }
    let decode = start.elapsed() - sha;
    println!(
        "stages (1 thread): blake2b {:.3} s, zstd decode {:.3} s, sha256 {:.3} s ({:.0} MB/s) over {plain} bytes",
        blake.as_secs_f64(),
        decode.as_secs_f64(),
        sha.as_secs_f64(),
        plain as f64 / 1e6 / sha.as_secs_f64()
    );
}
