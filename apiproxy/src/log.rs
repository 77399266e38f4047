//! Log lines on stderr. Under systemd (`JOURNAL_STREAM` set) each line starts with its syslog
//! priority (`<4>`), which journald turns into the entry's priority; elsewhere with a level name.

use std::fmt::Arguments;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static VERBOSE: AtomicBool = AtomicBool::new(false);

/// Turns on `debug` lines (one per client connection).
pub fn set_verbose(on: bool) {
    VERBOSE.store(on, Ordering::Relaxed);
}

fn write(priority: u8, level: &str, args: Arguments<'_>) {
    let line = if std::env::var_os("JOURNAL_STREAM").is_some() {
        format!("<{priority}>{args}\n")
    } else {
        format!("{level} {args}\n")
    };
    // One write per line, so lines from concurrent tasks never interleave.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

pub fn warn(args: Arguments<'_>) {
    write(4, "WARN", args);
}

pub fn info(args: Arguments<'_>) {
    write(6, "INFO", args);
}

pub fn debug(args: Arguments<'_>) {
    if VERBOSE.load(Ordering::Relaxed) {
        write(7, "DEBUG", args);
    }
}
