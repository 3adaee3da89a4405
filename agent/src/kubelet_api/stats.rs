//! `/stats/summary` (the `stats/v1alpha1` `Summary` that `kubectl top` through metrics-server
//! and other monitors read) and `/metrics/resource` (what metrics-server scrapes today): node
//! CPU and memory from `/proc/stat` and `/proc/meminfo`, container CPU and memory from the
//! runtime (CRI `ListContainerStats`), pod figures as the sum of their containers. The
//! assembly is pure; [`StatsSource`] gathers the samples.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kwk_cri::{CriClient, api};
use serde_json::{Value, json};

use crate::labels;

/// `/proc/stat` counts in USER_HZ, which Linux fixes at 100 for user space.
const NANOS_PER_TICK: u64 = 10_000_000;

/// The node's CPU and memory at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeSample {
    pub time_nanos: i64,
    /// CPU time used by all cores since boot.
    pub cpu_usage_core_nanos: u64,
    /// The rate between this sample and an earlier one, if known.
    pub cpu_usage_nano_cores: Option<u64>,
    pub memory_total_bytes: u64,
    pub memory_free_bytes: u64,
    pub memory_available_bytes: u64,
    pub memory_inactive_file_bytes: u64,
}

/// The CPU time (user, nice, system, irq, softirq, steal) of the `cpu` line of `/proc/stat`.
pub fn parse_proc_stat_cpu(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let ticks: u64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| fields.get(i))
        .sum();
    Some(ticks * NANOS_PER_TICK)
}

/// Fills the memory fields from `/proc/meminfo` (kB values).
pub fn parse_meminfo(text: &str, sample: &mut NodeSample) {
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let bytes = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024;
        match key {
            "MemTotal" => sample.memory_total_bytes = bytes,
            "MemFree" => sample.memory_free_bytes = bytes,
            "MemAvailable" => sample.memory_available_bytes = bytes,
            "Inactive(file)" => sample.memory_inactive_file_bytes = bytes,
            _ => {}
        }
    }
}

/// CPU use in nanocores between two samples (`None` if they are not in order).
pub fn nano_cores(earlier: (i64, u64), later: (i64, u64)) -> Option<u64> {
    let elapsed = u64::try_from(later.0.checked_sub(earlier.0)?).ok()?;
    let used = later.1.checked_sub(earlier.1)?;
    (elapsed > 0).then(|| {
        u64::try_from(u128::from(used) * 1_000_000_000 / u128::from(elapsed)).unwrap_or(u64::MAX)
    })
}

/// One container's figures from the runtime.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerSample {
    pub pod_uid: String,
    pub name: String,
    pub attempt: u32,
    pub time_nanos: i64,
    pub cpu_usage_core_nanos: Option<u64>,
    pub cpu_usage_nano_cores: Option<u64>,
    pub memory_working_set_bytes: Option<u64>,
    pub memory_usage_bytes: Option<u64>,
    pub memory_rss_bytes: Option<u64>,
    /// The writable layer's bytes and inodes.
    pub rootfs: Option<super::fs_net::Usage>,
}

/// The runtime's stats as samples (containers without the pod labels are skipped).
pub fn container_samples(stats: &[api::ContainerStats]) -> Vec<ContainerSample> {
    stats
        .iter()
        .filter_map(|s| {
            let attributes = s.attributes.as_ref()?;
            let metadata = attributes.metadata.as_ref();
            let cpu = s.cpu.as_ref();
            let memory = s.memory.as_ref();
            Some(ContainerSample {
                pod_uid: attributes.labels.get(labels::POD_UID)?.clone(),
                name: attributes
                    .labels
                    .get(labels::CONTAINER_NAME)
                    .cloned()
                    .or_else(|| metadata.map(|m| m.name.clone()))?,
                attempt: metadata.map_or(0, |m| m.attempt),
                time_nanos: cpu.map_or(0, |c| c.timestamp),
                cpu_usage_core_nanos: cpu.and_then(|c| c.usage_core_nano_seconds.map(|v| v.value)),
                cpu_usage_nano_cores: cpu.and_then(|c| c.usage_nano_cores.map(|v| v.value)),
                memory_working_set_bytes: memory.and_then(|m| m.working_set_bytes.map(|v| v.value)),
                memory_usage_bytes: memory.and_then(|m| m.usage_bytes.map(|v| v.value)),
                memory_rss_bytes: memory.and_then(|m| m.rss_bytes.map(|v| v.value)),
                rootfs: s.writable_layer.as_ref().map(|w| super::fs_net::Usage {
                    bytes: w.used_bytes.as_ref().map_or(0, |v| v.value),
                    inodes: w.inodes_used.as_ref().map_or(0, |v| v.value),
                }),
            })
        })
        .collect()
}

fn time_json(nanos: i64) -> String {
    crate::clock::timestamp(nanos).to_string()
}

fn strip_nulls(mut value: Value) -> Value {
    if let Value::Object(map) = &mut value {
        map.retain(|_, v| !v.is_null());
    }
    value
}

fn cpu_json(time: i64, core_nanos: Option<u64>, nano_cores: Option<u64>) -> Value {
    strip_nulls(json!({
        "time": time_json(time),
        "usageNanoCores": nano_cores,
        "usageCoreNanoSeconds": core_nanos,
    }))
}

fn sum(values: impl Iterator<Item = Option<u64>>) -> Option<u64> {
    values.fold(None, |acc, v| match (acc, v) {
        (a, None) => a,
        (None, Some(v)) => Some(v),
        (Some(a), Some(v)) => Some(a.saturating_add(v)),
    })
}

/// The latest instance of each container of each pod, by pod UID then container name.
fn latest_by_pod(samples: &[ContainerSample]) -> BTreeMap<&str, BTreeMap<&str, &ContainerSample>> {
    let mut by_pod: BTreeMap<&str, BTreeMap<&str, &ContainerSample>> = BTreeMap::new();
    for sample in samples {
        let slot = by_pod
            .entry(sample.pod_uid.as_str())
            .or_default()
            .entry(sample.name.as_str())
            .or_insert(sample);
        if sample.attempt > slot.attempt {
            *slot = sample;
        }
    }
    by_pod
}

/// The `Summary` document.
pub fn summary(
    node_name: &str,
    node: &NodeSample,
    pods: &[Pod],
    samples: &[ContainerSample],
) -> Value {
    let usage = node
        .memory_total_bytes
        .saturating_sub(node.memory_free_bytes);
    let working_set = usage.saturating_sub(node.memory_inactive_file_bytes);
    let node_json = json!({
        "nodeName": node_name,
        "cpu": cpu_json(node.time_nanos, Some(node.cpu_usage_core_nanos), node.cpu_usage_nano_cores),
        "memory": {
            "time": time_json(node.time_nanos),
            "availableBytes": node.memory_available_bytes,
            "usageBytes": usage,
            "workingSetBytes": working_set,
        },
    });
    let by_pod = latest_by_pod(samples);
    let pods_json: Vec<Value> = pods
        .iter()
        .map(|pod| {
            let uid = pod.metadata.uid.as_deref().unwrap_or_default();
            let containers: Vec<&ContainerSample> = by_pod
                .get(uid)
                .map(|m| m.values().copied().collect())
                .unwrap_or_default();
            let time = containers
                .iter()
                .map(|c| c.time_nanos)
                .max()
                .unwrap_or(node.time_nanos);
            let containers_json: Vec<Value> = containers
                .iter()
                .map(|c| {
                    json!({
                        "name": c.name,
                        "cpu": cpu_json(c.time_nanos, c.cpu_usage_core_nanos, c.cpu_usage_nano_cores),
                        "memory": strip_nulls(json!({
                            "time": time_json(c.time_nanos),
                            "workingSetBytes": c.memory_working_set_bytes,
                            "usageBytes": c.memory_usage_bytes,
                            "rssBytes": c.memory_rss_bytes,
                        })),
                    })
                })
                .collect();
            let mut pod_json = json!({
                "podRef": {
                    "name": pod.metadata.name,
                    "namespace": pod.metadata.namespace,
                    "uid": uid,
                },
                "containers": containers_json,
                "cpu": cpu_json(
                    time,
                    sum(containers.iter().map(|c| c.cpu_usage_core_nanos)),
                    sum(containers.iter().map(|c| c.cpu_usage_nano_cores)),
                ),
                "memory": strip_nulls(json!({
                    "time": time_json(time),
                    "workingSetBytes": sum(containers.iter().map(|c| c.memory_working_set_bytes)),
                    "usageBytes": sum(containers.iter().map(|c| c.memory_usage_bytes)),
                })),
            });
            if let Some(start) = pod.status.as_ref().and_then(|s| s.start_time.as_ref()) {
                pod_json["startTime"] = json!(start.0.to_string());
            }
            pod_json
        })
        .collect();
    json!({"node": node_json, "pods": pods_json})
}

/// `/metrics/resource` in the Prometheus text format (metric names as upstream's resource
/// metrics endpoint: `node_cpu_usage_seconds_total`, `container_memory_working_set_bytes`, ...).
pub fn resource_metrics(node: &NodeSample, pods: &[Pod], samples: &[ContainerSample]) -> String {
    let mut out = String::new();
    let ms = |nanos: i64| nanos / 1_000_000;
    let seconds = |nanos: u64| nanos as f64 / 1e9;
    let usage = node
        .memory_total_bytes
        .saturating_sub(node.memory_free_bytes);
    let working_set = usage.saturating_sub(node.memory_inactive_file_bytes);
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
        }
        let time = containers.values().map(|c| c.time_nanos).max().unwrap_or(0);
        let labels = format!("namespace=\"{namespace}\",pod=\"{name}\"");
        if let Some(cpu) = sum(containers.values().map(|c| c.cpu_usage_core_nanos)) {
            let _ = writeln!(
                pod_cpu,
                "pod_cpu_usage_seconds_total{{{labels}}} {} {}",
                seconds(cpu),
                ms(time)
            );
        }
        if let Some(mem) = sum(containers.values().map(|c| c.memory_working_set_bytes)) {
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

/// Gathers node and container samples.
#[derive(Debug)]
pub struct StatsSource {
    cri: Option<CriClient>,
    /// The last node sample's (time, CPU time) and the rate computed from it.
    last_cpu: Mutex<Option<CpuMark>>,
}

/// A node CPU sample, (time, CPU time), and the rate computed when it was taken.
type CpuMark = ((i64, u64), Option<u64>);

/// Samples closer than this reuse the previous rate.
const MIN_RATE_WINDOW_NANOS: i64 = 1_000_000_000;

impl StatsSource {
    pub fn new(cri: Option<CriClient>) -> Self {
        Self {
            cri,
            last_cpu: Mutex::new(None),
        }
    }

    /// The node now, with the CPU rate since the previous call (the first call samples twice).
    pub async fn node(&self) -> NodeSample {
        let read = || -> (i64, u64) {
            let cpu = std::fs::read_to_string("/proc/stat")
                .ok()
                .and_then(|t| parse_proc_stat_cpu(&t))
                .unwrap_or(0);
            (crate::clock::unix_nanos_now(), cpu)
        };
        let first = self.last_cpu.lock().ok().and_then(|l| *l).is_none();
        if first {
            let earlier = read();
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            if let Ok(mut last) = self.last_cpu.lock() {
                *last = Some((earlier, None));
            }
        }
        let now = read();
        let mut rate = None;
        if let Ok(mut last) = self.last_cpu.lock() {
            match *last {
                Some((earlier, previous_rate))
                    if now.0 - earlier.0 < MIN_RATE_WINDOW_NANOS && previous_rate.is_some() =>
                {
                    rate = previous_rate;
                }
                Some((earlier, _)) => {
                    rate = nano_cores(earlier, now);
                    *last = Some((now, rate));
                }
                None => *last = Some((now, None)),
            }
        }
        let mut sample = NodeSample {
            time_nanos: now.0,
            cpu_usage_core_nanos: now.1,
            cpu_usage_nano_cores: rate,
            ..NodeSample::default()
        };
        if let Ok(text) = std::fs::read_to_string("/proc/meminfo") {
            parse_meminfo(&text, &mut sample);
        }
        sample
    }

    /// The runtime's container figures (empty without a runtime or when it fails).
    pub async fn containers(&self) -> Vec<ContainerSample> {
        let Some(cri) = &self.cri else {
            return Vec::new();
        };
        match cri.list_container_stats(None).await {
            Ok(stats) => container_samples(&stats),
            Err(err) => {
                tracing::warn!(%err, "ListContainerStats failed");
                Vec::new()
            }
        }
    }
}

impl StatsSource {
    /// File systems, logs and networks of the node and its pods (see [`super::fs_net`]).
    pub async fn storage(
        &self,
        root_dir: &std::path::Path,
        pod_logs_dir: &std::path::Path,
    ) -> super::fs_net::Storage {
        use super::fs_net;
        let mut storage = fs_net::Storage {
            time: time_json(crate::clock::unix_nanos_now()),
            node_fs: fs_net::statvfs(root_dir),
            node_interfaces: std::fs::read_to_string("/proc/net/dev")
                .map(|t| fs_net::parse_proc_net_dev(&t))
                .unwrap_or_default(),
            logs: fs_net::log_usage(pod_logs_dir),
            ..fs_net::Storage::default()
        };
        let Some(cri) = &self.cri else {
            return storage;
        };
        match cri.list_pod_sandbox_stats(None).await {
            Ok(stats) => storage.pod_networks = fs_net::pod_networks(&stats),
            Err(err) => tracing::debug!(%err, "ListPodSandboxStats failed"),
        }
        if let Ok(info) = cri.image_fs_info().await
            && let Some(fs) = info.image_filesystems.first()
        {
            let used = fs_net::Usage {
                bytes: fs.used_bytes.as_ref().map_or(0, |v| v.value),
                inodes: fs.inodes_used.as_ref().map_or(0, |v| v.value),
            };
            let mountpoint = fs.fs_id.as_ref().map(|id| id.mountpoint.clone());
            let capacity = mountpoint.and_then(|m| fs_net::statvfs(std::path::Path::new(&m)));
            storage.image_fs = Some((capacity, used));
        }
        storage
    }
}

/// The current time as the API writes it.
pub fn now() -> Timestamp {
    crate::clock::timestamp(crate::clock::unix_nanos_now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    #[test]
    fn proc_files_are_read() {
        let stat = "cpu  100 5 50 1000 7 1 2 3 0 0\ncpu0 1 1 1 1 1 1 1 1 0 0\n";
        assert_eq!(parse_proc_stat_cpu(stat), Some(161 * NANOS_PER_TICK));
        assert_eq!(parse_proc_stat_cpu("intr 1\n"), None);
        let mut sample = NodeSample::default();
        parse_meminfo(
            "MemTotal:  1000 kB\nMemFree: 200 kB\nMemAvailable: 500 kB\nInactive(file): 100 kB\n",
            &mut sample,
        );
        assert_eq!(sample.memory_total_bytes, 1_024_000);
        assert_eq!(sample.memory_free_bytes, 204_800);
        assert_eq!(sample.memory_available_bytes, 512_000);
        assert_eq!(sample.memory_inactive_file_bytes, 102_400);
    }

    #[test]
    fn rates_need_ordered_samples() {
        let cases = [
            ((0, 0), (1_000_000_000, 500_000_000), Some(500_000_000)),
            ((0, 0), (2_000_000_000, 4_000_000_000), Some(2_000_000_000)),
            ((5, 0), (5, 10), None),
            ((10, 0), (5, 10), None),
            ((0, 10), (1, 5), None),
        ];
        for (earlier, later, expected) in cases {
            assert_eq!(
                nano_cores(earlier, later),
                expected,
                "{earlier:?} {later:?}"
            );
        }
    }

    fn pod(name: &str, uid: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(uid.into()),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        }
    }

    fn sample(uid: &str, name: &str, attempt: u32, cpu: u64, mem: u64) -> ContainerSample {
        ContainerSample {
            pod_uid: uid.into(),
            name: name.into(),
            attempt,
            time_nanos: 1_000_000_000,
            cpu_usage_core_nanos: Some(cpu),
            cpu_usage_nano_cores: Some(cpu / 10),
            memory_working_set_bytes: Some(mem),
            memory_usage_bytes: None,
            memory_rss_bytes: None,
            rootfs: None,
        }
    }

    #[test]
    fn summary_has_node_and_pods_with_their_latest_containers() {
        let node = NodeSample {
            time_nanos: 2_000_000_000,
            cpu_usage_core_nanos: 7,
            cpu_usage_nano_cores: Some(3),
            memory_total_bytes: 1000,
            memory_free_bytes: 200,
            memory_available_bytes: 500,
            memory_inactive_file_bytes: 100,
        };
        let pods = [pod("a", "u-a"), pod("b", "u-b")];
        let samples = [
            sample("u-a", "app", 0, 100, 10),
            sample("u-a", "app", 1, 200, 20),
            sample("u-a", "side", 0, 50, 5),
            sample("u-other", "x", 0, 1, 1),
        ];
        let doc = summary("node-1", &node, &pods, &samples);
        assert_eq!(doc["node"]["nodeName"], "node-1");
        assert_eq!(doc["node"]["cpu"]["usageNanoCores"], 3);
        assert_eq!(doc["node"]["cpu"]["usageCoreNanoSeconds"], 7);
        assert_eq!(doc["node"]["memory"]["workingSetBytes"], 700);
        assert_eq!(doc["node"]["memory"]["availableBytes"], 500);
        assert_eq!(doc["pods"].as_array().unwrap().len(), 2);
        let a = &doc["pods"][0];
        assert_eq!(a["podRef"]["name"], "a");
        let names: Vec<_> = a["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].clone())
            .collect();
        assert_eq!(names, ["app", "side"]);
        assert_eq!(
            a["containers"][0]["cpu"]["usageCoreNanoSeconds"], 200,
            "the latest attempt"
        );
        assert_eq!(a["cpu"]["usageCoreNanoSeconds"], 250);
        assert_eq!(a["cpu"]["usageNanoCores"], 25);
        assert_eq!(a["memory"]["workingSetBytes"], 25);
        assert_eq!(doc["pods"][1]["containers"], json!([]));
        assert!(doc["pods"][1]["cpu"].get("usageNanoCores").is_none());

        let text = resource_metrics(&node, &pods, &samples);
        for line in [
            "node_cpu_usage_seconds_total 0.000000007 2000",
            "node_memory_working_set_bytes 700 2000",
            "container_cpu_usage_seconds_total{container=\"app\",namespace=\"default\",pod=\"a\"} 0.0000002 1000",
            "container_memory_working_set_bytes{container=\"side\",namespace=\"default\",pod=\"a\"} 5 1000",
            "pod_memory_working_set_bytes{namespace=\"default\",pod=\"a\"} 25 1000",
            "scrape_error 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }
}
