//! `/metrics/resource` in the Prometheus text format: the node's, containers' and pods' CPU
//! time and working set, and containers' start times, from the samples of [`super::stats`]
//! (pods from their cgroup where there is one). Pure.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use k8s_openapi::api::core::v1::Pod;

use super::stats::{ContainerSample, NodeSample, PodExtras, latest_by_pod, sum};

/// `/metrics/resource` in the Prometheus text format (metric names as upstream's resource
/// metrics endpoint: `node_cpu_usage_seconds_total`, `container_memory_working_set_bytes`, ...).
/// Pod figures come from the pod cgroup in `extras` where there is one.
pub fn render(
    node: &NodeSample,
    pods: &[Pod],
    samples: &[ContainerSample],
    extras: &BTreeMap<String, PodExtras>,
) -> String {
    let mut out = String::new();
    let ms = |nanos: i64| nanos / 1_000_000;
    let seconds = |nanos: u64| nanos as f64 / 1e9;
    let working_set = node.memory.map_or(0, |m| m.working_set);
    let by_pod = latest_by_pod(samples);
    let _ = writeln!(
        out,
        "# HELP node_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the node in core-seconds\n\
         # TYPE node_cpu_usage_seconds_total counter\n\
         node_cpu_usage_seconds_total {} {}\n\
         # HELP node_memory_working_set_bytes [STABLE] Current working set of the node in bytes\n\
         # TYPE node_memory_working_set_bytes gauge\n\
         node_memory_working_set_bytes {working_set} {}",
        seconds(node.cpu_usage_core_nanos),
        ms(node.time_nanos),
        ms(node.time_nanos)
    );
    let mut container_cpu = String::new();
    let mut container_mem = String::new();
    let mut container_start = String::new();
    let mut pod_cpu = String::new();
    let mut pod_mem = String::new();
    for pod in pods {
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        let Some(containers) = by_pod.get(uid) else {
            continue;
        };
        for c in containers.values() {
            let labels = format!(
                "container=\"{}\",namespace=\"{namespace}\",pod=\"{name}\"",
                c.name
            );
            if let Some(cpu) = c.cpu_usage_core_nanos {
                let _ = writeln!(
                    container_cpu,
                    "container_cpu_usage_seconds_total{{{labels}}} {} {}",
                    seconds(cpu),
                    ms(c.time_nanos)
                );
            }
            if let Some(mem) = c.memory_working_set_bytes {
                let _ = writeln!(
                    container_mem,
                    "container_memory_working_set_bytes{{{labels}}} {mem} {}",
                    ms(c.time_nanos)
                );
            }
            if let Some(start) = c.start_time_nanos {
                let _ = writeln!(
                    container_start,
                    "container_start_time_seconds{{{labels}}} {} {}",
                    start as f64 / 1e9,
                    ms(c.time_nanos)
                );
            }
        }
        let labels = format!("namespace=\"{namespace}\",pod=\"{name}\"");
        let (time, pod_cpu_nanos, pod_working_set) =
            match extras.get(uid).and_then(|e| e.cgroup.as_ref()) {
                Some(c) => (
                    c.time_nanos,
                    c.cpu_usage_core_nanos,
                    c.memory_working_set_bytes,
                ),
                None => (
                    containers.values().map(|c| c.time_nanos).max().unwrap_or(0),
                    sum(containers.values().map(|c| c.cpu_usage_core_nanos)),
                    sum(containers.values().map(|c| c.memory_working_set_bytes)),
                ),
            };
        if let Some(cpu) = pod_cpu_nanos {
            let _ = writeln!(
                pod_cpu,
                "pod_cpu_usage_seconds_total{{{labels}}} {} {}",
                seconds(cpu),
                ms(time)
            );
        }
        if let Some(mem) = pod_working_set {
            let _ = writeln!(
                pod_mem,
                "pod_memory_working_set_bytes{{{labels}}} {mem} {}",
                ms(time)
            );
        }
    }
    for (name, kind, help, body) in [
        (
            "container_cpu_usage_seconds_total",
            "counter",
            "Cumulative cpu time consumed by the container in core-seconds",
            container_cpu,
        ),
        (
            "container_memory_working_set_bytes",
            "gauge",
            "Current working set of the container in bytes",
            container_mem,
        ),
        (
            "container_start_time_seconds",
            "gauge",
            "When the container started, in seconds since the epoch",
            container_start,
        ),
        (
            "pod_cpu_usage_seconds_total",
            "counter",
            "Cumulative cpu time consumed by the pod in core-seconds",
            pod_cpu,
        ),
        (
            "pod_memory_working_set_bytes",
            "gauge",
            "Current working set of the pod in bytes",
            pod_mem,
        ),
    ] {
        let _ = write!(
            out,
            "# HELP {name} [STABLE] {help}\n# TYPE {name} {kind}\n{body}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP scrape_error [ALPHA] 1 if there was an error while getting container metrics, 0 otherwise\n\
         # TYPE scrape_error gauge\nscrape_error 0"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroups::node_memory::NodeMemory;
    use crate::kubelet_api::cgroup_stats::CgroupSample;
    use crate::kubelet_api::stats::tests::pod;

    fn sample(uid: &str, name: &str, attempt: u32, cpu: u64, mem: u64) -> ContainerSample {
        ContainerSample {
            pod_uid: uid.into(),
            name: name.into(),
            attempt,
            time_nanos: 1_000_000_000,
            cpu_usage_core_nanos: Some(cpu),
            memory_working_set_bytes: Some(mem),
            ..ContainerSample::default()
        }
    }

    #[test]
    fn node_containers_and_pods_are_rendered() {
        let node = NodeSample {
            time_nanos: 2_000_000_000,
            cpu_usage_core_nanos: 7,
            memory: Some(NodeMemory {
                capacity: 1000,
                usage: 800,
                working_set: 700,
            }),
            ..NodeSample::default()
        };
        let pods = [pod("a", "u-a"), pod("b", "u-b"), pod("c", "u-c")];
        let mut started = sample("u-c", "app", 0, 100, 10);
        started.start_time_nanos = Some(2_500_000_000);
        let samples = [
            sample("u-a", "app", 0, 100, 10),
            sample("u-a", "app", 1, 200, 20),
            sample("u-a", "side", 0, 50, 5),
            sample("u-b", "app", 0, 100, 10),
            started,
        ];
        let extras = BTreeMap::from([(
            "u-b".to_string(),
            PodExtras {
                cgroup: Some(CgroupSample {
                    time_nanos: 3_000_000_000,
                    cpu_usage_core_nanos: Some(2_000_000_000),
                    memory_working_set_bytes: Some(800),
                    ..CgroupSample::default()
                }),
            },
        )]);
        let text = render(&node, &pods, &samples, &extras);
        for line in [
            "node_cpu_usage_seconds_total 0.000000007 2000",
            "node_memory_working_set_bytes 700 2000",
            "container_cpu_usage_seconds_total{container=\"app\",namespace=\"default\",pod=\"a\"} 0.0000002 1000",
            "container_memory_working_set_bytes{container=\"side\",namespace=\"default\",pod=\"a\"} 5 1000",
            "pod_memory_working_set_bytes{namespace=\"default\",pod=\"a\"} 25 1000",
            "pod_cpu_usage_seconds_total{namespace=\"default\",pod=\"b\"} 2 3000",
            "pod_memory_working_set_bytes{namespace=\"default\",pod=\"b\"} 800 3000",
            "container_start_time_seconds{container=\"app\",namespace=\"default\",pod=\"c\"} 2.5 1000",
            "scrape_error 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("container_start_time_seconds{"))
                .count(),
            1,
            "only containers with a known start"
        );
    }
}
