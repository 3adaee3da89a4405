//! `kubelet_pod_start_duration_seconds`: for each pod, once, the time from the kubelet first
//! seeing it (`status.startTime`, which the node sets when it first takes the pod on) to all
//! of its containers running (the latest `state.running.startedAt`), in upstream's buckets.
//! Pods are observed when `/metrics` is rendered; the figure comes from the status's own
//! timestamps, so scrape timing does not change it.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Pod;

/// Upstream's `podStartupDurationBuckets` (seconds).
pub const BUCKETS: [f64; 25] = [
    0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 20.0, 30.0, 45.0, 60.0, 120.0, 180.0, 240.0,
    300.0, 360.0, 480.0, 600.0, 900.0, 1200.0, 1800.0, 2700.0, 3600.0,
];

/// Seconds from `status.startTime` to the last container start, once every container of the
/// pod runs; `None` before that.
pub fn pod_start_seconds(pod: &Pod) -> Option<f64> {
    let spec = pod.spec.as_ref()?;
    let status = pod.status.as_ref()?;
    let start = status.start_time.as_ref()?.0;
    let statuses = status.container_statuses.as_ref()?;
    let mut last = None;
    for container in &spec.containers {
        let started = statuses
            .iter()
            .find(|s| s.name == container.name)?
            .state
            .as_ref()?
            .running
            .as_ref()?
            .started_at
            .as_ref()?
            .0;
        last = Some(last.map_or(started, |l: k8s_openapi::jiff::Timestamp| l.max(started)));
    }
    let span = last?.duration_since(start);
    Some(span.as_secs_f64().max(0.0))
}

/// A histogram over [`BUCKETS`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    /// Observations at or below each bound (not cumulative).
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    pub fn observe(&mut self, value: f64) {
        if let Some(i) = BUCKETS.iter().position(|bound| value <= *bound) {
            self.counts[i] += 1;
        }
        self.count += 1;
        self.sum += value;
    }

    /// The metric in the Prometheus text format.
    pub fn render(&self, name: &str, help: &str) -> String {
        let mut out = format!("# HELP {name} {help}\n# TYPE {name} histogram\n");
        let mut cumulative = 0;
        for (bound, count) in BUCKETS.iter().zip(self.counts) {
            cumulative += count;
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}", self.sum);
        let _ = writeln!(out, "{name}_count {}", self.count);
        out
    }
}

/// Observes each pod once, when it has started.
#[derive(Debug, Default)]
pub struct PodStartTracker {
    state: Mutex<(HashSet<String>, Histogram)>,
}

pub const METRIC: &str = "kubelet_pod_start_duration_seconds";
const HELP: &str = "[ALPHA] Duration in seconds from kubelet seeing a pod for the first time to the pod starting to run";

impl PodStartTracker {
    /// Observes the pods that started since the last call; returns the metric's text.
    pub fn observe_and_render(&self, pods: &[Pod]) -> String {
        let Ok(mut state) = self.state.lock() else {
            return String::new();
        };
        let (seen, histogram) = &mut *state;
        for pod in pods {
            let Some(uid) = pod.metadata.uid.as_deref() else {
                continue;
            };
            if seen.contains(uid) {
                continue;
            }
            if let Some(seconds) = pod_start_seconds(pod) {
                seen.insert(uid.to_string());
                histogram.observe(seconds);
            }
        }
        histogram.render(METRIC, HELP)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, ContainerState, ContainerStateRunning, ContainerStatus, PodSpec, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    fn time(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    fn pod(uid: &str, started: &[Option<&str>]) -> Pod {
        Pod {
            metadata: ObjectMeta {
                uid: Some(uid.into()),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                containers: (0..started.len())
                    .map(|i| Container {
                        name: format!("c{i}"),
                        ..Container::default()
                    })
                    .collect(),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                start_time: Some(time("2026-01-01T00:00:00Z")),
                container_statuses: Some(
                    started
                        .iter()
                        .enumerate()
                        .map(|(i, at)| ContainerStatus {
                            name: format!("c{i}"),
                            state: at.map(|at| ContainerState {
                                running: Some(ContainerStateRunning {
                                    started_at: Some(time(at)),
                                }),
                                ..ContainerState::default()
                            }),
                            ..ContainerStatus::default()
                        })
                        .collect(),
                ),
                ..PodStatus::default()
            }),
        }
    }

    #[test]
    fn the_start_ends_when_the_last_container_runs() {
        let cases: &[(&[Option<&str>], Option<f64>)] = &[
            (&[Some("2026-01-01T00:00:02.5Z")], Some(2.5)),
            (
                &[Some("2026-01-01T00:00:01Z"), Some("2026-01-01T00:00:07Z")],
                Some(7.0),
            ),
            (&[Some("2026-01-01T00:00:01Z"), None], None),
            (&[], None),
        ];
        for (started, expected) in cases {
            assert_eq!(
                pod_start_seconds(&pod("u", started)),
                *expected,
                "{started:?}"
            );
        }
    }

    #[test]
    fn each_pod_is_observed_once_into_cumulative_buckets() {
        let tracker = PodStartTracker::default();
        let fast = pod("a", &[Some("2026-01-01T00:00:00.4Z")]);
        let slow = pod("b", &[Some("2026-01-01T00:00:09Z")]);
        let waiting = pod("c", &[None]);
        tracker.observe_and_render(&[fast.clone(), waiting]);
        let text = tracker.observe_and_render(&[fast, slow]);
        assert!(
            text.contains(&format!("{METRIC}_bucket{{le=\"0.5\"}} 1\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("{METRIC}_bucket{{le=\"8\"}} 1\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("{METRIC}_bucket{{le=\"10\"}} 2\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("{METRIC}_bucket{{le=\"+Inf\"}} 2\n")),
            "{text}"
        );
        assert!(text.contains(&format!("{METRIC}_count 2\n")), "{text}");
        assert!(text.contains(&format!("{METRIC}_sum 9.4\n")), "{text}");
    }
}
