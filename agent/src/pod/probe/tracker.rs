//! One probe's verdict from its run results, as upstream's prober keeps it: a verdict changes
//! only after `failureThreshold` failures or `successThreshold` successes in a row; readiness
//! starts failed (not ready), liveness succeeded, startup not yet succeeded. A run that could
//! not be carried out (the runtime errored) changes nothing. Pure.

use super::spec::{ProbeKind, ProbeSpec};

/// What one run of a probe found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunResult {
    Success,
    /// The probe ran and failed; the message goes into the `Unhealthy` event.
    Failure(String),
    /// The probe could not run (not the container's fault): no verdict from it.
    Error(String),
}

/// A probe's current verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Success,
    Failure,
}

/// The verdict of one probe of one container instance.
#[derive(Clone, Debug)]
pub struct Tracker {
    success_threshold: u32,
    failure_threshold: u32,
    /// The previous run's result (`true`: success) and how many in a row.
    last: Option<(bool, u32)>,
    /// `None` until a startup probe's first verdict.
    verdict: Option<Verdict>,
}

impl Tracker {
    pub fn new(spec: &ProbeSpec) -> Self {
        Self {
            success_threshold: spec.success_threshold.max(1),
            failure_threshold: spec.failure_threshold.max(1),
            last: None,
            verdict: initial_verdict(spec.kind),
        }
    }

    pub fn verdict(&self) -> Option<Verdict> {
        self.verdict
    }

    /// Records a run; returns the new verdict when it changed.
    pub fn record(&mut self, result: &RunResult) -> Option<Verdict> {
        let success = match result {
            RunResult::Success => true,
            RunResult::Failure(_) => false,
            RunResult::Error(_) => return None,
        };
        let run = match self.last {
            Some((last, n)) if last == success => n.saturating_add(1),
            _ => 1,
        };
        self.last = Some((success, run));
        let (wanted, threshold) = if success {
            (Verdict::Success, self.success_threshold)
        } else {
            (Verdict::Failure, self.failure_threshold)
        };
        if run >= threshold && self.verdict != Some(wanted) {
            self.verdict = Some(wanted);
            return Some(wanted);
        }
        None
    }
}

/// Before the first verdict: alive, not ready, startup unknown (not started, and its first
/// failed verdict is a change: the container is killed).
pub fn initial_verdict(kind: ProbeKind) -> Option<Verdict> {
    match kind {
        ProbeKind::Liveness => Some(Verdict::Success),
        ProbeKind::Readiness => Some(Verdict::Failure),
        ProbeKind::Startup => None,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::pod::probe::spec::Handler;

    fn spec(kind: ProbeKind, success: u32, failure: u32) -> ProbeSpec {
        ProbeSpec {
            kind,
            handler: Handler::Tcp {
                host: None,
                port: 1,
            },
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            success_threshold: success,
            failure_threshold: failure,
            termination_grace_seconds: None,
        }
    }

    #[test]
    fn verdicts_follow_thresholds() {
        use RunResult::{Error, Failure, Success};
        use Verdict as V;
        let fail = || Failure("x".into());
        let err = || Error("runtime".into());
        // (name, kind, success threshold, failure threshold, runs, verdict changes per run)
        type Case = (
            &'static str,
            ProbeKind,
            u32,
            u32,
            Vec<RunResult>,
            Vec<Option<Verdict>>,
        );
        let cases: Vec<Case> = vec![
            (
                "readiness: ready on the first success",
                ProbeKind::Readiness,
                1,
                3,
                vec![Success, Success],
                vec![Some(V::Success), None],
            ),
            (
                "readiness: needs successThreshold in a row",
                ProbeKind::Readiness,
                2,
                3,
                vec![Success, fail(), Success, Success],
                vec![None, None, None, Some(V::Success)],
            ),
            (
                "readiness: unready after failureThreshold failures in a row",
                ProbeKind::Readiness,
                1,
                2,
                vec![Success, fail(), Success, fail(), fail(), fail()],
                vec![Some(V::Success), None, None, None, Some(V::Failure), None],
            ),
            (
                "liveness: alive from the start, dead after 3 failures",
                ProbeKind::Liveness,
                1,
                3,
                vec![fail(), fail(), fail()],
                vec![None, None, Some(V::Failure)],
            ),
            (
                "errors neither count nor break a run",
                ProbeKind::Liveness,
                1,
                2,
                vec![fail(), err(), fail()],
                vec![None, None, Some(V::Failure)],
            ),
            (
                "startup: started on the first success",
                ProbeKind::Startup,
                1,
                30,
                vec![fail(), fail(), Success],
                vec![None, None, Some(V::Success)],
            ),
            (
                "startup: failed after failureThreshold",
                ProbeKind::Startup,
                1,
                2,
                vec![fail(), fail()],
                vec![None, Some(V::Failure)],
            ),
        ];
        for (name, kind, success, failure, runs, want) in cases {
            let mut tracker = Tracker::new(&spec(kind, success, failure));
            let got: Vec<Option<Verdict>> = runs.iter().map(|r| tracker.record(r)).collect();
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn initial_verdicts() {
        assert_eq!(
            Tracker::new(&spec(ProbeKind::Readiness, 1, 3)).verdict(),
            Some(Verdict::Failure)
        );
        assert_eq!(
            Tracker::new(&spec(ProbeKind::Liveness, 1, 3)).verdict(),
            Some(Verdict::Success)
        );
        assert_eq!(
            Tracker::new(&spec(ProbeKind::Startup, 1, 3)).verdict(),
            None
        );
    }
}
