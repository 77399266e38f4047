//! Progress bars (indicatif), hidden when stdout is not a terminal so logs and tests stay clean.

use std::io::IsTerminal;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Reporter {
    multi: MultiProgress,
    visible: bool,
}

impl Reporter {
    pub fn new() -> Self {
        let visible = std::io::stdout().is_terminal();
        let multi = if visible {
            MultiProgress::with_draw_target(ProgressDrawTarget::stderr())
        } else {
            MultiProgress::with_draw_target(ProgressDrawTarget::hidden())
        };
        Reporter { multi, visible }
    }

    /// A byte counter whose total grows as sizes become known.
    pub fn bytes_bar(&self, label: &'static str) -> ProgressBar {
        let bar = self.multi.add(ProgressBar::new(0));
        if !self.visible {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>8} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {wide_msg}",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        bar.set_prefix(label);
        bar
    }
}

impl Default for Reporter {
    fn default() -> Self {
        Self::new()
    }
}

/// Adapts a bar to `ilha_format`'s pack progress callbacks.
pub struct PackBar(pub ProgressBar);

impl ilha_format::Progress for PackBar {
    fn start(&self, total_bytes: u64, _entries: usize) {
        self.0.set_length(total_bytes);
    }
    fn entry(&self, path: &str, _size: u64) {
        self.0.set_message(path.to_owned());
    }
    fn bytes(&self, n: u64) {
        self.0.inc(n);
    }
    fn finish(&self) {
        self.0.finish_and_clear();
    }
}
