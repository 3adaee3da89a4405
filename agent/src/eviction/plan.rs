//! The pure half of the eviction manager (upstream's `managerImpl.synchronize`, without the
//! I/O): from the thresholds, what the host shows, the last state and now, decide which
//! thresholds are met, which pressure conditions the Node reports, and which thresholds are
//! to be reclaimed now. Choosing the pod is [`super::rank`].
//!
//! As upstream:
//! - a threshold is met when the available amount is below it; one that was acted on stays met
//!   until `evictionMinimumReclaim` more than the threshold is available again;
//! - a pressure condition is reported as soon as a threshold (soft ones too) is met, and kept
//!   until none has been met for `evictionPressureTransitionPeriod`;
//! - a soft threshold is acted on only once it has been met without a break for its grace
//!   period; a hard one at once;
//! - memory thresholds are reclaimed first.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::signals::{Condition, EvictionConfig, Signal, Threshold};

/// What the host shows for one signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    pub available: u64,
    /// What percentage thresholds are a share of.
    pub capacity: u64,
}

/// The signals the host could be read for (a missing one is never met).
pub type Observations = BTreeMap<Signal, Observation>;

/// What the planner remembers between two decisions. Times are offsets on one monotonic
/// clock chosen by the caller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    /// When each threshold (by [`Threshold::key`]) was first seen met, without a break since.
    first_observed: BTreeMap<(Signal, bool), Duration>,
    /// When a threshold of each condition was last seen met.
    condition_last_observed: BTreeMap<Condition, Duration>,
    /// The thresholds acted on at the last decision: they stay met until the minimum reclaim.
    acted_on: BTreeSet<(Signal, bool)>,
}

/// One decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub state: State,
    /// The pressure conditions the Node reports now.
    pub conditions: BTreeSet<Condition>,
    /// Thresholds met past their grace period, the one to reclaim first at the front.
    pub to_reclaim: Vec<Threshold>,
    /// When something changes with time alone (a grace period ends, a condition expires).
    pub requeue_after: Option<Duration>,
}

/// Whether `threshold` is met by `observation`, with its minimum reclaim when `reclaiming`.
pub fn is_met(threshold: &Threshold, observation: Option<&Observation>, reclaiming: bool) -> bool {
    let Some(observation) = observation else {
        return false;
    };
    let mut limit = threshold.value.of(observation.capacity);
    if reclaiming && let Some(min_reclaim) = threshold.min_reclaim {
        limit = limit.saturating_add(min_reclaim.of(observation.capacity));
    }
    observation.available < limit
}

/// Decides, for the observations at `now`, after the decision that left `last`.
pub fn evaluate(
    config: &EvictionConfig,
    observations: &Observations,
    last: &State,
    now: Duration,
) -> Decision {
    // Met now, or acted on before and not yet reclaimed down to the minimum.
    let met: Vec<&Threshold> = config
        .thresholds
        .iter()
        .filter(|t| {
            let observation = observations.get(&t.signal);
            is_met(t, observation, false)
                || (last.acted_on.contains(&t.key()) && is_met(t, observation, true))
        })
        .collect();
    let mut state = State::default();
    for t in &met {
        let since = last.first_observed.get(&t.key()).copied().unwrap_or(now);
        state.first_observed.insert(t.key(), since);
    }
    state.condition_last_observed = last.condition_last_observed.clone();
    for t in &met {
        state
            .condition_last_observed
            .insert(t.signal.condition(), now);
    }
    let mut requeue_after: Option<Duration> = None;
    let mut sooner = |after: Duration| {
        requeue_after = Some(requeue_after.map_or(after, |r| r.min(after)));
    };
    state.condition_last_observed.retain(|_, seen| {
        let expires = seen.saturating_add(config.pressure_transition_period);
        if expires > now {
            sooner(expires - now);
            true
        } else {
            false
        }
    });
    let conditions = state.condition_last_observed.keys().copied().collect();
    let mut to_reclaim: Vec<Threshold> = Vec::new();
    for t in met {
        let since = state.first_observed[&t.key()];
        let due = since.saturating_add(t.grace_period);
        if due <= now {
            to_reclaim.push(t.clone());
        } else {
            sooner(due - now);
        }
    }
    // Memory first (upstream's byEvictionPriority), then in signal order; hard before soft.
    to_reclaim.sort_by_key(|t| {
        (
            t.signal.condition() != Condition::Memory,
            t.signal,
            !t.is_hard(),
        )
    });
    state.acted_on = to_reclaim.iter().map(Threshold::key).collect();
    Decision {
        state,
        conditions,
        to_reclaim,
        requeue_after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eviction::signals::Amount;

    const MI: u64 = 1 << 20;

    fn hard(signal: Signal, value: Amount) -> Threshold {
        Threshold {
            signal,
            value,
            grace_period: Duration::ZERO,
            min_reclaim: None,
        }
    }

    fn soft(signal: Signal, value: Amount, grace: u64) -> Threshold {
        Threshold {
            grace_period: Duration::from_secs(grace),
            ..hard(signal, value)
        }
    }

    fn config(thresholds: Vec<Threshold>) -> EvictionConfig {
        EvictionConfig {
            thresholds,
            max_pod_grace_period_seconds: 0,
            pressure_transition_period: Duration::from_secs(300),
        }
    }

    fn memory(available_mi: u64) -> Observations {
        Observations::from([(
            Signal::MemoryAvailable,
            Observation {
                available: available_mi * MI,
                capacity: 1024 * MI,
            },
        )])
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// Runs the planner over a timeline of (second, available MiB); returns, per step, the
    /// conditions reported and the signals to reclaim (`h`ard / `s`oft).
    fn timeline(config: &EvictionConfig, steps: &[(u64, u64)]) -> Vec<(bool, Vec<String>)> {
        let mut state = State::default();
        steps
            .iter()
            .map(|&(at, available)| {
                let decision = evaluate(config, &memory(available), &state, secs(at));
                state = decision.state;
                (
                    decision.conditions.contains(&Condition::Memory),
                    decision
                        .to_reclaim
                        .iter()
                        .map(|t| format!("{}{}", if t.is_hard() { "h" } else { "s" }, t.signal))
                        .collect(),
                )
            })
            .collect()
    }

    #[test]
    fn thresholds_conditions_and_grace_periods_over_time() {
        let h = "hmemory.available".to_string();
        let s = "smemory.available".to_string();
        struct Case {
            name: &'static str,
            thresholds: Vec<Threshold>,
            steps: Vec<(u64, u64)>,
            want: Vec<(bool, Vec<String>)>,
        }
        let cases = vec![
            Case {
                name: "hard: met below the threshold, at once",
                thresholds: vec![hard(Signal::MemoryAvailable, Amount::Quantity(100 * MI))],
                steps: vec![(0, 500), (1, 100), (2, 99), (3, 500)],
                want: vec![
                    (false, vec![]),
                    (false, vec![]),
                    (true, vec![h.clone()]),
                    (true, vec![]),
                ],
            },
            Case {
                name: "the condition stays for the transition period after the last breach",
                thresholds: vec![hard(Signal::MemoryAvailable, Amount::Quantity(100 * MI))],
                steps: vec![(0, 50), (10, 500), (299, 500), (300, 500)],
                want: vec![
                    (true, vec![h.clone()]),
                    (true, vec![]),
                    (true, vec![]),
                    (false, vec![]),
                ],
            },
            Case {
                name: "soft: condition at once, acted on after its grace period held",
                thresholds: vec![soft(
                    Signal::MemoryAvailable,
                    Amount::Quantity(200 * MI),
                    30,
                )],
                steps: vec![(0, 150), (29, 150), (30, 150), (31, 150)],
                want: vec![
                    (true, vec![]),
                    (true, vec![]),
                    (true, vec![s.clone()]),
                    (true, vec![s.clone()]),
                ],
            },
            Case {
                name: "soft: a break restarts the grace period",
                thresholds: vec![soft(
                    Signal::MemoryAvailable,
                    Amount::Quantity(200 * MI),
                    30,
                )],
                steps: vec![(0, 150), (20, 250), (25, 150), (50, 150), (55, 150)],
                want: vec![
                    (true, vec![]),
                    (true, vec![]),
                    (true, vec![]),
                    (true, vec![]),
                    (true, vec![s.clone()]),
                ],
            },
            Case {
                name: "percentage thresholds are a share of capacity",
                thresholds: vec![hard(Signal::MemoryAvailable, Amount::Percentage(0.1))],
                steps: vec![(0, 103), (1, 102)],
                want: vec![(false, vec![]), (true, vec![h.clone()])],
            },
            Case {
                name: "minimum reclaim: acted on, it stays met until threshold + reclaim",
                thresholds: vec![Threshold {
                    min_reclaim: Some(Amount::Quantity(50 * MI)),
                    ..hard(Signal::MemoryAvailable, Amount::Quantity(100 * MI))
                }],
                steps: vec![(0, 90), (1, 120), (2, 149), (3, 150), (4, 120)],
                want: vec![
                    (true, vec![h.clone()]),
                    (true, vec![h.clone()]),
                    (true, vec![h.clone()]),
                    (true, vec![]),
                    (true, vec![]),
                ],
            },
            Case {
                name: "hard and soft of one signal: both reported, hard first",
                thresholds: vec![
                    soft(Signal::MemoryAvailable, Amount::Quantity(200 * MI), 10),
                    hard(Signal::MemoryAvailable, Amount::Quantity(100 * MI)),
                ],
                steps: vec![(0, 150), (10, 50)],
                want: vec![(true, vec![]), (true, vec![h, s])],
            },
        ];
        for case in cases {
            let got = timeline(&config(case.thresholds), &case.steps);
            assert_eq!(got, case.want, "{}", case.name);
        }
    }

    #[test]
    fn memory_is_reclaimed_first_and_each_signal_has_its_condition() {
        let config = config(vec![
            hard(Signal::PidAvailable, Amount::Quantity(100)),
            hard(Signal::NodeFsAvailable, Amount::Percentage(0.1)),
            hard(Signal::ImageFsAvailable, Amount::Percentage(0.15)),
            hard(Signal::MemoryAvailable, Amount::Quantity(100 * MI)),
        ]);
        let observations = Observations::from([
            (
                Signal::PidAvailable,
                Observation {
                    available: 10,
                    capacity: 1000,
                },
            ),
            (
                Signal::NodeFsAvailable,
                Observation {
                    available: 12,
                    capacity: 100,
                },
            ),
            (
                Signal::ImageFsAvailable,
                Observation {
                    available: 12,
                    capacity: 100,
                },
            ),
            (
                Signal::MemoryAvailable,
                Observation {
                    available: MI,
                    capacity: 1024 * MI,
                },
            ),
        ]);
        let decision = evaluate(&config, &observations, &State::default(), secs(0));
        let order: Vec<Signal> = decision.to_reclaim.iter().map(|t| t.signal).collect();
        assert_eq!(
            order,
            [
                Signal::MemoryAvailable,
                Signal::ImageFsAvailable,
                Signal::PidAvailable
            ],
            "nodefs at 12% is above its 10%; imagefs on the same disk is below its 15%"
        );
        assert_eq!(
            decision.conditions,
            BTreeSet::from([Condition::Memory, Condition::Disk, Condition::Pid])
        );
        let unobserved = evaluate(&config, &Observations::new(), &State::default(), secs(0));
        assert!(unobserved.conditions.is_empty() && unobserved.to_reclaim.is_empty());
    }

    #[test]
    fn requeue_when_a_grace_period_ends_or_a_condition_expires() {
        let config = config(vec![soft(
            Signal::MemoryAvailable,
            Amount::Quantity(200 * MI),
            30,
        )]);
        let first = evaluate(&config, &memory(150), &State::default(), secs(100));
        assert_eq!(first.requeue_after, Some(secs(30)));
        let later = evaluate(&config, &memory(500), &first.state, secs(110));
        assert_eq!(
            later.requeue_after,
            Some(secs(290)),
            "the condition expires at 400"
        );
        let calm = evaluate(&config, &memory(500), &State::default(), secs(0));
        assert_eq!(calm.requeue_after, None);
    }
}
