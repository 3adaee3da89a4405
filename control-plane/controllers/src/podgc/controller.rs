//! The pod garbage collector wired to the runtime: a single key (`podgc`) planned over every
//! pod and node, queued by pod and node changes and at least every [`GC_CHECK_PERIOD`]
//! (sooner when a missing node's quarantine ends). The closure keeps the `missing_since`
//! record [`super::plan`] needs: when each node that pods are bound to was first seen
//! missing, forgotten once it is back or no pod names it.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube::runtime::watcher;

use super::{DEFAULT_TERMINATED_POD_THRESHOLD, GC_CHECK_PERIOD, ORPHAN_QUARANTINE, missing_nodes};
use crate::runtime::{Controller, ObjectKey, Plan, Watches};

/// The one key of the collector.
pub const KEY: &str = "podgc";

/// The collector's settings (upstream's flags and constants).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodGcConfig {
    /// `--terminated-pod-gc-threshold` (0 disables collecting terminated pods).
    pub terminated_threshold: usize,
    /// How long a node stays missing before its pods are collected.
    pub quarantine: SignedDuration,
    /// How often the collector runs without any change.
    pub period: SignedDuration,
}

impl Default for PodGcConfig {
    fn default() -> Self {
        PodGcConfig {
            terminated_threshold: DEFAULT_TERMINATED_POD_THRESHOLD,
            quarantine: ORPHAN_QUARANTINE,
            period: GC_CHECK_PERIOD,
        }
    }
}

/// The state kept between passes: when each missing node was first seen missing.
#[derive(Debug, Default)]
struct MissingNodes {
    since: BTreeMap<String, Timestamp>,
}

impl MissingNodes {
    /// Records the nodes missing now (keeping first-seen times) and forgets the others;
    /// returns the record for the planner, shifted so that its fixed
    /// [`ORPHAN_QUARANTINE`] acts as `quarantine`, and the earliest end of a quarantine
    /// still running.
    fn observe(
        &mut self,
        pods: &[Pod],
        nodes: &[Node],
        quarantine: SignedDuration,
        now: Timestamp,
    ) -> (BTreeMap<String, Timestamp>, Option<Timestamp>) {
        let missing = missing_nodes(pods, nodes);
        self.since.retain(|name, _| missing.contains(name));
        for name in missing {
            self.since.entry(name).or_insert(now);
        }
        let shift = ORPHAN_QUARANTINE - quarantine;
        let mut next_end: Option<Timestamp> = None;
        let shifted = self
            .since
            .iter()
            .map(|(name, since)| {
                let end = since.saturating_add(quarantine).unwrap_or(*since);
                if end > now {
                    next_end = Some(next_end.map_or(end, |t| t.min(end)));
                }
                let planner_since = since.saturating_sub(shift).unwrap_or(*since);
                (name.clone(), planner_since)
            })
            .collect();
        (shifted, next_end)
    }
}

/// The collector with upstream's defaults.
pub fn controller(client: &kube::Client) -> Controller {
    controller_with(client, PodGcConfig::default())
}

/// The collector with `config` (tests shorten the quarantine).
pub fn controller_with(client: &kube::Client, config: PodGcConfig) -> Controller {
    let key = || vec![ObjectKey::cluster(KEY)];
    let mut watches = Watches::new(client.clone());
    let pods = watches.watch(
        Api::<Pod>::all(client.clone()),
        watcher::Config::default(),
        move |_| key(),
    );
    let nodes = watches.watch(
        Api::<Node>::all(client.clone()),
        watcher::Config::default(),
        move |_| key(),
    );
    let missing = Mutex::new(MissingNodes::default());
    let period = Duration::try_from(config.period).unwrap_or(Duration::from_secs(20));
    Controller::new("podgc", watches, move |_| {
        let now = Timestamp::now();
        let all_pods: Vec<Pod> = pods.state().iter().map(|p| (**p).clone()).collect();
        let all_nodes: Vec<Node> = nodes.state().iter().map(|n| (**n).clone()).collect();
        let (since, next_end) = missing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .observe(&all_pods, &all_nodes, config.quarantine, now);
        let actions = super::plan(
            &all_pods,
            &all_nodes,
            config.terminated_threshold,
            &since,
            now,
        );
        let until_quarantine_ends = next_end
            .map(|end| Duration::try_from(now.duration_until(end)).unwrap_or_default())
            .map(|wait| wait + Duration::from_millis(50));
        Plan {
            actions,
            requeue_after: Some(until_quarantine_ends.map_or(period, |w| w.min(period))),
        }
    })
    .workers(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod_on(node: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(format!("on-{node}")),
                namespace: Some("ns".into()),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: Some(node.into()),
                ..PodSpec::default()
            }),
            ..Pod::default()
        }
    }

    fn node(name: &str) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            ..Node::default()
        }
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).expect("in range")
    }

    #[test]
    fn missing_nodes_keep_their_first_seen_time_shifted_to_the_configured_quarantine() {
        let mut missing = MissingNodes::default();
        let quarantine = SignedDuration::from_secs(1);
        let pods = [pod_on("gone"), pod_on("here")];
        let nodes = [node("here")];
        let (since, next) = missing.observe(&pods, &nodes, quarantine, at(0));
        // The planner adds ORPHAN_QUARANTINE to what it gets: that must land at 0 + 1 s.
        let planner_end = since["gone"]
            .saturating_add(ORPHAN_QUARANTINE)
            .expect("time");
        assert_eq!(planner_end, at(1));
        assert_eq!(next, Some(at(1)));
        assert_eq!(since.len(), 1);

        // Seen again later: the first-seen time stays; the quarantine is over.
        let (again, next) = missing.observe(&pods, &nodes, quarantine, at(5));
        assert_eq!(again, since);
        assert_eq!(next, None);

        // The node came back: forgotten, so a later disappearance starts afresh.
        let (back, _) = missing.observe(&pods, &[node("here"), node("gone")], quarantine, at(6));
        assert!(back.is_empty());
        let (fresh, next) = missing.observe(&pods, &nodes, quarantine, at(7));
        assert_eq!(next, Some(at(8)));
        assert_eq!(
            fresh["gone"]
                .saturating_add(ORPHAN_QUARANTINE)
                .expect("time"),
            at(8)
        );
    }

    #[test]
    fn default_config_is_upstreams() {
        let config = PodGcConfig::default();
        assert_eq!(config.quarantine, SignedDuration::from_secs(40));
        assert_eq!(config.period, SignedDuration::from_secs(20));
        assert_eq!(config.terminated_threshold, 12_500);
    }
}
