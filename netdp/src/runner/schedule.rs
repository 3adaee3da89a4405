//! When the proxy syncs: upstream's bounded-frequency runner as a pure state machine. Changes
//! ask for a sync, which runs at once unless one ran less than `minSyncPeriod` ago; with no
//! changes a sync still runs every `syncPeriod` (it repairs what someone else changed), and every
//! `fullSyncPeriod` a sync rewrites everything. A failed sync is retried with back-off (from
//! `minSyncPeriod`, doubling, at most `syncPeriod`) and the retry is a full sync.

use std::time::{Duration, Instant};

/// The timing knobs, from the kube-proxy configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncPeriods {
    /// `minSyncPeriod`: the least time between two syncs (changes arriving sooner are batched).
    pub min_sync_period: Duration,
    /// `syncPeriod`: the most time between two syncs.
    pub sync_period: Duration,
    /// How often a sync rewrites everything rather than the difference.
    pub full_sync_period: Duration,
}

impl Default for SyncPeriods {
    /// kube-proxy's defaults (v1.33): `minSyncPeriod` 1 s, `syncPeriod` 30 s; a full sync hourly
    /// as its iptables mode does.
    fn default() -> Self {
        Self {
            min_sync_period: Duration::from_secs(1),
            sync_period: Duration::from_secs(30),
            full_sync_period: Duration::from_secs(3600),
        }
    }
}

/// What the runner should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Sync now; `full` when the whole rule set must be rewritten.
    Sync { full: bool },
    /// Nothing to do before this instant (or before an event arrives).
    WaitUntil(Instant),
}

/// The runner's timing state.
#[derive(Debug, Clone)]
pub struct Schedule {
    periods: SyncPeriods,
    /// When the last sync attempt started.
    last_attempt: Option<Instant>,
    /// When the last successful full sync started.
    last_full: Option<Instant>,
    /// Changes arrived since the last successful sync began.
    pending: bool,
    /// Failed attempts in a row.
    failures: u32,
    /// The next sync must be full (failure, or the caller asked).
    full_required: bool,
}

impl Schedule {
    pub fn new(periods: SyncPeriods) -> Self {
        Self {
            periods,
            last_attempt: None,
            last_full: None,
            pending: false,
            failures: 0,
            full_required: true,
        }
    }

    /// Something changed: a sync is wanted.
    pub fn changed(&mut self) {
        self.pending = true;
    }

    /// Something changed that the difference cannot express (node addresses, options): the
    /// next sync is full.
    pub fn require_full(&mut self) {
        self.pending = true;
        self.full_required = true;
    }

    /// Failed attempts in a row.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// What to do at `now`.
    pub fn next(&self, now: Instant) -> Next {
        let Some(last) = self.last_attempt else {
            return Next::Sync { full: true };
        };
        let full_due = self
            .last_full
            .is_none_or(|at| now >= at + self.periods.full_sync_period);
        let full = self.full_required || full_due;
        let due = if self.failures > 0 {
            last + self.retry_delay()
        } else if self.pending || full {
            last + self.periods.min_sync_period
        } else {
            last + self.periods.sync_period
        };
        if now >= due {
            Next::Sync { full }
        } else {
            Next::WaitUntil(due)
        }
    }

    /// Records a sync that started at `started` and how it ended. Changes recorded while it
    /// ran (after `started`) keep the next sync pending: call [`Schedule::changed`] for them
    /// after this.
    pub fn finished(&mut self, started: Instant, full: bool, ok: bool) {
        self.last_attempt = Some(started);
        if ok {
            self.failures = 0;
            self.pending = false;
            if full {
                self.full_required = false;
                self.last_full = Some(started);
            }
        } else {
            self.failures = self.failures.saturating_add(1);
            self.full_required = true;
        }
    }

    /// Back-off after `failures` failed attempts: `minSyncPeriod` (at least 1 s) doubling, at
    /// most `syncPeriod`.
    fn retry_delay(&self) -> Duration {
        let base = self.periods.min_sync_period.max(Duration::from_secs(1));
        let exp = self.failures.saturating_sub(1).min(16);
        base.saturating_mul(1 << exp)
            .min(self.periods.sync_period.max(base))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn periods() -> SyncPeriods {
        SyncPeriods {
            min_sync_period: Duration::from_secs(1),
            sync_period: Duration::from_secs(30),
            full_sync_period: Duration::from_secs(3600),
        }
    }

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    /// (steps before asking, offset of `now` from the start, expected answer as an offset or
    /// a sync kind).
    #[derive(Debug)]
    enum Step {
        Changed,
        RequireFull,
        /// A sync started at this offset and ended ok / failed.
        Synced(u64, bool, bool),
    }

    #[derive(Debug, PartialEq)]
    enum Want {
        Sync(bool),
        WaitUntil(u64),
    }

    #[test]
    fn decisions() {
        use Step::*;
        let cases: Vec<(&str, Vec<Step>, u64, Want)> = vec![
            (
                "first sync is full and immediate",
                vec![],
                0,
                Want::Sync(true),
            ),
            (
                "idle after a full sync waits syncPeriod",
                vec![Synced(0, true, true)],
                5,
                Want::WaitUntil(30),
            ),
            (
                "periodic sync is incremental",
                vec![Synced(0, true, true)],
                30,
                Want::Sync(false),
            ),
            (
                "a change right after a sync waits minSyncPeriod",
                vec![Synced(10, true, true), Changed],
                10,
                Want::WaitUntil(11),
            ),
            (
                "a change long after a sync runs at once",
                vec![Synced(10, true, true), Changed],
                20,
                Want::Sync(false),
            ),
            (
                "node change forces a full sync",
                vec![Synced(10, true, true), RequireFull],
                12,
                Want::Sync(true),
            ),
            (
                "a failure retries after the back-off, fully",
                vec![Synced(10, true, true), Changed, Synced(20, false, false)],
                20,
                Want::WaitUntil(21),
            ),
            (
                "the retry is full",
                vec![Synced(10, true, true), Changed, Synced(20, false, false)],
                21,
                Want::Sync(true),
            ),
            (
                "back-off doubles",
                vec![
                    Synced(0, true, false),
                    Synced(1, true, false),
                    Synced(3, true, false),
                ],
                3,
                Want::WaitUntil(7),
            ),
            (
                "success clears the failure count",
                vec![Synced(0, true, false), Synced(1, true, true)],
                2,
                Want::WaitUntil(31),
            ),
            (
                "full sync due after fullSyncPeriod",
                vec![Synced(0, true, true), Synced(3590, false, true)],
                3620,
                Want::Sync(true),
            ),
            (
                "an incremental success does not reset the full clock",
                vec![Synced(0, true, true), Synced(1800, false, true)],
                1830,
                Want::Sync(false),
            ),
        ];
        let start = Instant::now();
        for (name, steps, at, want) in cases {
            let mut schedule = Schedule::new(periods());
            for step in steps {
                match step {
                    Changed => schedule.changed(),
                    RequireFull => schedule.require_full(),
                    Synced(t, full, ok) => schedule.finished(start + s(t), full, ok),
                }
            }
            let got = match schedule.next(start + s(at)) {
                Next::Sync { full } => Want::Sync(full),
                Next::WaitUntil(t) => Want::WaitUntil((t - start).as_secs()),
            };
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn back_off_is_capped_at_sync_period() {
        let start = Instant::now();
        let mut schedule = Schedule::new(periods());
        for _ in 0..20 {
            schedule.finished(start, true, false);
        }
        assert_eq!(schedule.next(start), Next::WaitUntil(start + s(30)));
        assert_eq!(schedule.failures(), 20);
    }
}
