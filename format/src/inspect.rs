//! Listing an index for humans (`render_text`) and machines (`Report`, serialised with serde).

use std::fmt::Write as _;

use serde::Serialize;

use crate::index::Index;

/// Sizes that show what deduplication saved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub entries: usize,
    pub images: usize,
    pub binaries: usize,
    pub files: usize,
    /// Sum of all entry sizes: what the bundle stores (after deduplication).
    pub stored_bytes: u64,
    /// Sum of the per-image sizes plus binaries and files, as if nothing were shared.
    pub listed_bytes: u64,
    pub image_bytes: u64,
    pub binary_bytes: u64,
    pub file_bytes: u64,
    /// `listed_bytes - stored_bytes` (0 if shared blobs do not outweigh the OCI layout's own files).
    pub saved_by_dedup_bytes: u64,
}

impl Totals {
    pub fn of(index: &Index) -> Totals {
        let image_bytes = index.images.iter().map(|i| i.size).sum::<u64>();
        let binary_bytes = index.binaries.iter().map(|b| b.size).sum::<u64>();
        let file_bytes = index.files.iter().map(|f| f.size).sum::<u64>();
        let listed_bytes = image_bytes + binary_bytes + file_bytes;
        let stored_bytes = index.content_bytes();
        Totals {
            entries: index.entries.len(),
            images: index.images.len(),
            binaries: index.binaries.len(),
            files: index.files.len(),
            stored_bytes,
            listed_bytes,
            image_bytes,
            binary_bytes,
            file_bytes,
            saved_by_dedup_bytes: listed_bytes.saturating_sub(stored_bytes),
        }
    }
}

/// What `inspect --json` prints: the index as stored, plus totals.
#[derive(Debug, Clone, Serialize)]
pub struct Report<'a> {
    pub index: &'a Index,
    pub totals: Totals,
}

impl<'a> Report<'a> {
    pub fn new(index: &'a Index) -> Self {
        Report {
            index,
            totals: Totals::of(index),
        }
    }
}

/// Pretty JSON of [`Report`] with a trailing newline.
pub fn render_json(index: &Index) -> String {
    let mut s = serde_json::to_string_pretty(&Report::new(index))
        .expect("report serialisation cannot fail");
    s.push('\n');
    s
}

/// `1.5 MiB`-style sizes (binary units, one decimal).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Plain-text listing (no colour): header, images, binaries, files, totals.
pub fn render_text(index: &Index) -> String {
    let t = Totals::of(index);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "bundle {} {} ({}, {})",
        index.name, index.version, index.platform, index.format
    );
    let _ = writeln!(s, "\nimages ({}):", index.images.len());
    let width = index.images.iter().map(|i| i.name.len()).max().unwrap_or(0);
    for i in &index.images {
        let _ = writeln!(
            s,
            "  {:width$}  {}  {:>10}  {} layers{}",
            i.name,
            i.manifest_digest,
            human_bytes(i.size),
            i.layers,
            if i.source != i.name {
                format!("  (from {})", i.source)
            } else {
                String::new()
            },
        );
    }
    for (title, list) in [("binaries", &index.binaries), ("files", &index.files)] {
        let _ = writeln!(s, "\n{title} ({}):", list.len());
        let width = list.iter().map(|a| a.name.len()).max().unwrap_or(0);
        for a in list {
            let _ = writeln!(
                s,
                "  {:width$}  sha256:{}  {:>10}  {}",
                a.name,
                a.sha256,
                human_bytes(a.size),
                a.source
            );
        }
    }
    let _ = writeln!(
        s,
        "\ntotals: {} entries; stored {} ({} bytes); listed {} (images {}, binaries {}, files {}); \
         saved by deduplication {}",
        t.entries,
        human_bytes(t.stored_bytes),
        t.stored_bytes,
        human_bytes(t.listed_bytes),
        human_bytes(t.image_bytes),
        human_bytes(t.binary_bytes),
        human_bytes(t.file_bytes),
        human_bytes(t.saved_by_dedup_bytes),
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_lists_everything() {
        let index = crate::index::tests::sample_index();
        let text = render_text(&index);
        assert!(
            text.starts_with("bundle lab 1.0.0 (linux/amd64, ilha-bundle/1)"),
            "{text}"
        );
        assert!(text.contains("binaries (1):\n  hello  sha256:"), "{text}");
        assert!(text.contains("totals: 1 entries; stored 18 B"), "{text}");
        let json: serde_json::Value = serde_json::from_str(&render_json(&index)).unwrap();
        assert_eq!(json["totals"]["stored_bytes"], 18);
        assert_eq!(json["index"]["name"], "lab");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }
}
