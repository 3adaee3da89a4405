//! CrashLoopBackOff: how long a container that keeps exiting waits before its next start.
//! The first restart is immediate, then 10 s doubling up to 5 min; a container that ran for
//! 10 min before exiting starts over. Pure: the caller owns the state and the clock.

use std::collections::BTreeMap;
use std::time::Duration;

use super::observed::UnixNanos;

/// The first delay after a repeated exit.
pub const INITIAL: Duration = Duration::from_secs(10);
/// The longest delay.
pub const MAX: Duration = Duration::from_secs(300);
/// A run this long resets the back-off.
pub const RESET_AFTER_RUNNING: Duration = Duration::from_secs(600);

/// Back-off state of one container name in one pod.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Entry {
    /// The delay that applies to the next restart after an exit (zero: restart at once).
    pub delay: Duration,
    /// The exited instance (container ID) the delay was last advanced for, so one exit counts
    /// once.
    pub counted_exit: String,
}

/// What to do with an exited container that should restart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Start now; store `entry`.
    Start { entry: Entry },
    /// Wait until `until` (UnixNanos); the current delay is `delay`.
    Wait { until: UnixNanos, delay: Duration },
}

/// Decides for the instance `exited_id` that exited at `finished_at` after starting at
/// `started_at`.
pub fn decide(
    entry: &Entry,
    exited_id: &str,
    started_at: UnixNanos,
    finished_at: UnixNanos,
    now: UnixNanos,
) -> Decision {
    let ran = Duration::from_nanos(u64::try_from(finished_at - started_at).unwrap_or(0));
    let entry = if started_at > 0 && ran >= RESET_AFTER_RUNNING {
        Entry::default()
    } else {
        entry.clone()
    };
    // This exit was already allowed to restart (the start may have failed): allow it again.
    if entry.counted_exit == exited_id {
        return Decision::Start { entry };
    }
    let until = finished_at.saturating_add(nanos(entry.delay));
    if entry.delay > Duration::ZERO && now < until {
        return Decision::Wait {
            until,
            delay: entry.delay,
        };
    }
    let next = if entry.delay == Duration::ZERO {
        INITIAL
    } else {
        (entry.delay * 2).min(MAX)
    };
    Decision::Start {
        entry: Entry {
            delay: next,
            counted_exit: exited_id.to_string(),
        },
    }
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// Per-container back-off entries of one pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodBackoff {
    entries: BTreeMap<String, Entry>,
}

impl PodBackoff {
    pub fn get(&self, container: &str) -> Entry {
        self.entries.get(container).cloned().unwrap_or_default()
    }

    pub fn set(&mut self, container: &str, entry: Entry) {
        self.entries.insert(container.to_string(), entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    /// Replays a container that exits 1 s after each start and is restarted as soon as allowed;
    /// returns the waits between exit and restart.
    fn replay(exits: usize) -> Vec<i64> {
        let mut entry = Entry::default();
        let mut now = 100 * S;
        let mut waits = Vec::new();
        for i in 0..exits {
            let id = format!("c{i}");
            let started = now;
            let finished = started + S;
            now = finished;
            let entry_next = loop {
                match decide(&entry, &id, started, finished, now) {
                    Decision::Start { entry } => break entry,
                    Decision::Wait { until, .. } => now = until,
                }
            };
            waits.push((now - finished) / S);
            entry = entry_next;
        }
        waits
    }

    #[test]
    fn first_restart_is_immediate_then_doubles_to_the_cap() {
        assert_eq!(replay(9), vec![0, 10, 20, 40, 80, 160, 300, 300, 300]);
    }

    #[test]
    fn an_exit_is_counted_once_however_often_we_ask() {
        let first = decide(&Entry::default(), "c1", S, 2 * S, 2 * S);
        let Decision::Start { entry } = first else {
            panic!("expected start, got {first:?}")
        };
        // Asked again about the same exit (e.g. the start failed): same delay, no doubling.
        assert_eq!(
            decide(&entry, "c1", S, 2 * S, 2 * S),
            Decision::Start {
                entry: entry.clone()
            }
        );
        // Another instance that exited at the very same time does count.
        assert!(matches!(
            decide(&entry, "c2", S, 2 * S, 2 * S),
            Decision::Wait { .. }
        ));
    }

    #[test]
    fn a_long_run_resets() {
        let entry = Entry {
            delay: MAX,
            counted_exit: "c0".into(),
        };
        let started = 10 * S;
        let finished = started + 601 * S;
        assert_eq!(
            decide(&entry, "c1", started, finished, finished),
            Decision::Start {
                entry: Entry {
                    delay: INITIAL,
                    counted_exit: "c1".into()
                }
            }
        );
        // A short run does not.
        let finished = started + 5 * S;
        assert!(matches!(
            decide(&entry, "c1", started, finished, finished),
            Decision::Wait { delay: MAX, .. }
        ));
    }
}
