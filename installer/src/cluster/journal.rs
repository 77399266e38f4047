//! Each host's journal of finished steps (`/var/lib/ilha/journal`): one line per step that
//! completed, `STEP<TAB>DIGEST<TAB>UNIX_TIME`, appended and synced after the step's last action.
//! A step whose digest (of everything it puts on the host) is already recorded is skipped, which
//! makes a second `up` a no-op and lets an interrupted one continue where it stopped.

use std::collections::BTreeMap;

use super::paths::JOURNAL;

/// What a host's journal says: the last digest recorded for each step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Journal {
    done: BTreeMap<String, String>,
}

impl Journal {
    /// Parses the journal's text. Lines that are not `STEP\tDIGEST\tTIME` (a line cut short by a
    /// power loss) are ignored: their step simply runs again.
    pub fn parse(text: &str) -> Journal {
        let mut done = BTreeMap::new();
        for line in text.lines() {
            let mut fields = line.split('\t');
            let (Some(step), Some(digest), Some(time), None) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            let well_formed = !step.is_empty()
                && digest.len() == 64
                && digest.bytes().all(|b| b.is_ascii_hexdigit())
                && time.parse::<u64>().is_ok();
            if well_formed {
                done.insert(step.to_string(), digest.to_string());
            }
        }
        Journal { done }
    }

    pub fn is_done(&self, step: &str, digest: &str) -> bool {
        self.done.get(step).is_some_and(|d| d == digest)
    }

    /// Makes `step` run again although its digest is recorded (what it put on the host was
    /// changed since), still as an update of a step that ran before.
    pub fn mark_stale(&mut self, step: &str) {
        if let Some(digest) = self.done.get_mut(step) {
            digest.clear();
        }
    }

    /// Whether `step` ever finished here, whatever it installed then.
    pub fn has(&self, step: &str) -> bool {
        self.done.contains_key(step)
    }

    pub fn is_empty(&self) -> bool {
        self.done.is_empty()
    }

    pub fn len(&self) -> usize {
        self.done.len()
    }
}

/// Prints the journal (nothing when the host has none yet).
pub fn read_script() -> String {
    format!("cat {JOURNAL} 2>/dev/null || true")
}

/// Appends the record of a finished step and makes it durable before returning.
pub fn record_script(step: &str, digest: &str) -> String {
    format!(
        "mkdir -p \"$(dirname {JOURNAL})\" && printf '%s\\t%s\\t%s\\n' {step} {digest} \"$(date +%s)\" >> {JOURNAL} && sync {JOURNAL}",
        step = crate::ssh::shell_quote(step),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn the_last_record_of_a_step_wins() {
        let j = Journal::parse(&format!("etcd\t{D1}\t100\netcd\t{D2}\t200\n"));
        assert!(j.is_done("etcd", D2));
        assert!(!j.is_done("etcd", D1));
        assert!(!j.is_done("kubelet", D2));
    }

    #[test]
    fn torn_and_foreign_lines_are_ignored() {
        let j = Journal::parse(&format!(
            "etcd\t{D1}\t100\nkubelet\t2222\nrandom text\n\t{D1}\t1\n"
        ));
        assert_eq!(j.len(), 1);
        assert!(j.is_done("etcd", D1));
    }
}
