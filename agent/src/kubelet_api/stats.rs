//! `/stats/summary` (the `stats/v1alpha1` `Summary` that `kubectl top` through metrics-server
//! and other monitors read; `/metrics/resource`, what metrics-server scrapes today, renders the
//! same samples in [`super::resource_metrics`]): node
//! CPU and memory from `/proc/stat` and `/proc/meminfo`, its start and process limit; container
//! CPU, memory and writable layer from the runtime (CRI `ListContainerStats`, start times from
//! `ListContainers`); pod CPU and memory from the pod cgroup ([`super::cgroup_stats`]), or the
//! sum of the containers where no pod cgroup is found. The assembly is pure; [`StatsSource`]
//! gathers the samples.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kwk_cri::{CriClient, api};
use serde_json::{Value, json};

pub use super::cgroup_stats::nano_cores;
use super::cgroup_stats::{self, CgroupSample, RateTracker};
use crate::cgroups::CgroupLocator;
use crate::cgroups::node_memory::{NodeMemory, NodeMemorySource};
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
    /// The node's memory as upstream counts it (`None`: not readable).
    pub memory: Option<NodeMemory>,
    /// Boot time, seconds since the epoch (`btime` of `/proc/stat`).
    pub boot_time_secs: Option<u64>,
    /// The process limit and the processes (threads) now (upstream's `rlimit`).
    pub rlimit: Option<(u64, u64)>,
    /// Upstream's system containers, by name: `kubelet`, `runtime` and `pods` (all pods), those
    /// found.
    pub system_containers: Vec<(String, CgroupSample)>,
}

/// `btime` of `/proc/stat`.
pub fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
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
    pub memory_available_bytes: Option<u64>,
    pub page_faults: Option<u64>,
    pub major_page_faults: Option<u64>,
    /// When the container was created (upstream's container `startTime`), from `ListContainers`.
    pub start_time_nanos: Option<i64>,
    /// The writable layer's bytes and inodes.
    pub rootfs: Option<super::fs_net::Usage>,
}

/// Larger "available" figures mean no limit.
const UNLIMITED_FROM: u64 = 1 << 62;

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
                memory_available_bytes: memory
                    .and_then(|m| m.available_bytes.map(|v| v.value))
                    .filter(|&v| v > 0 && v < UNLIMITED_FROM),
                page_faults: memory.and_then(|m| m.page_faults.map(|v| v.value)),
                major_page_faults: memory.and_then(|m| m.major_page_faults.map(|v| v.value)),
                start_time_nanos: None,
                rootfs: s.writable_layer.as_ref().map(|w| super::fs_net::Usage {
                    bytes: w.used_bytes.as_ref().map_or(0, |v| v.value),
                    inodes: w.inodes_used.as_ref().map_or(0, |v| v.value),
                }),
            })
        })
        .collect()
}

/// Sets each sample's start time from the runtime's container list (matched by pod UID,
/// name and attempt).
pub fn add_start_times(samples: &mut [ContainerSample], containers: &[api::Container]) {
    let created: BTreeMap<(&str, &str, u32), i64> = containers
        .iter()
        .filter_map(|c| {
            let metadata = c.metadata.as_ref()?;
            let uid = c.labels.get(labels::POD_UID)?;
            let name = c
                .labels
                .get(labels::CONTAINER_NAME)
                .unwrap_or(&metadata.name);
            Some((
                (uid.as_str(), name.as_str(), metadata.attempt),
                c.created_at,
            ))
        })
        .collect();
    for sample in samples {
        sample.start_time_nanos = created
            .get(&(
                sample.pod_uid.as_str(),
                sample.name.as_str(),
                sample.attempt,
            ))
            .copied()
            .filter(|&t| t > 0);
    }
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

pub(super) fn sum(values: impl Iterator<Item = Option<u64>>) -> Option<u64> {
    values.fold(None, |acc, v| match (acc, v) {
        (a, None) => a,
        (None, Some(v)) => Some(v),
        (Some(a), Some(v)) => Some(a.saturating_add(v)),
    })
}

/// The latest instance of each container of each pod, by pod UID then container name.
pub(super) fn latest_by_pod(
    samples: &[ContainerSample],
) -> BTreeMap<&str, BTreeMap<&str, &ContainerSample>> {
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

/// What the summary knows of a pod beyond its containers' runtime stats (more sources, such
/// as volumes, can join here).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodExtras {
    /// The pod cgroup's CPU and memory.
    pub cgroup: Option<CgroupSample>,
}

/// The `CPUStats` and `MemoryStats` of a cgroup.
fn cgroup_json(c: &CgroupSample) -> (Value, Value) {
    (
        cpu_json(c.time_nanos, c.cpu_usage_core_nanos, c.cpu_usage_nano_cores),
        strip_nulls(json!({
            "time": time_json(c.time_nanos),
            "availableBytes": c.memory_available_bytes(),
            "usageBytes": c.memory_usage_bytes,
            "workingSetBytes": c.memory_working_set_bytes,
            "rssBytes": c.memory_rss_bytes,
            "pageFaults": c.page_faults,
            "majorPageFaults": c.major_page_faults,
        })),
    )
}

fn node_json(node_name: &str, node: &NodeSample) -> Value {
    let time = time_json(node.time_nanos);
    let mut node_json = json!({
        "nodeName": node_name,
        "cpu": cpu_json(node.time_nanos, Some(node.cpu_usage_core_nanos), node.cpu_usage_nano_cores),
    });
    if let Some(memory) = node.memory {
        node_json["memory"] = json!({
            "time": time,
            "availableBytes": memory.available(),
            "usageBytes": memory.usage,
            "workingSetBytes": memory.working_set,
        });
    }
    if let Some(boot) = node.boot_time_secs.and_then(|b| i64::try_from(b).ok()) {
        node_json["startTime"] = json!(time_json(boot.saturating_mul(1_000_000_000)));
    }
    if let Some((max, current)) = node.rlimit {
        node_json["rlimit"] = json!({"time": time, "maxpid": max, "curproc": current});
    }
    if !node.system_containers.is_empty() {
        let start = node_json
            .get("startTime")
            .cloned()
            .unwrap_or_else(|| json!(time));
        let system: Vec<Value> = node
            .system_containers
            .iter()
            .map(|(name, sample)| {
                let (cpu, memory) = cgroup_json(sample);
                json!({"name": name, "startTime": start, "cpu": cpu, "memory": memory})
            })
            .collect();
        node_json["systemContainers"] = json!(system);
    }
    node_json
}

fn container_json(c: &ContainerSample) -> Value {
    let mut value = json!({
        "name": c.name,
        "cpu": cpu_json(c.time_nanos, c.cpu_usage_core_nanos, c.cpu_usage_nano_cores),
        "memory": strip_nulls(json!({
            "time": time_json(c.time_nanos),
            "availableBytes": c.memory_available_bytes,
            "usageBytes": c.memory_usage_bytes,
            "workingSetBytes": c.memory_working_set_bytes,
            "rssBytes": c.memory_rss_bytes,
            "pageFaults": c.page_faults,
            "majorPageFaults": c.major_page_faults,
        })),
    });
    if let Some(start) = c.start_time_nanos {
        value["startTime"] = json!(time_json(start));
    }
    value
}

/// The `Summary` document; `extras` by pod UID.
pub fn summary(
    node_name: &str,
    node: &NodeSample,
    pods: &[Pod],
    samples: &[ContainerSample],
    extras: &BTreeMap<String, PodExtras>,
) -> Value {
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
            let containers_json: Vec<Value> = containers.iter().map(|c| container_json(c)).collect();
            // Upstream reads the pod cgroup; without one, the containers' sum stands in.
            let (cpu, memory) = match extras.get(uid).and_then(|e| e.cgroup.as_ref()) {
                Some(cgroup) => cgroup_json(cgroup),
                None => (
                    cpu_json(
                        time,
                        sum(containers.iter().map(|c| c.cpu_usage_core_nanos)),
                        sum(containers.iter().map(|c| c.cpu_usage_nano_cores)),
                    ),
                    strip_nulls(json!({
                        "time": time_json(time),
                        "workingSetBytes": sum(containers.iter().map(|c| c.memory_working_set_bytes)),
                        "usageBytes": sum(containers.iter().map(|c| c.memory_usage_bytes)),
                        "rssBytes": sum(containers.iter().map(|c| c.memory_rss_bytes)),
                    })),
                ),
            };
            let mut pod_json = json!({
                "podRef": {
                    "name": pod.metadata.name,
                    "namespace": pod.metadata.namespace,
                    "uid": uid,
                },
                "containers": containers_json,
                "cpu": cpu,
                "memory": memory,
            });
            let processes = extras
                .get(uid)
                .and_then(|e| e.cgroup.as_ref()?.process_count);
            if let Some(count) = processes {
                pod_json["process_stats"] = json!({"process_count": count});
            }
            if let Some(start) = pod.status.as_ref().and_then(|s| s.start_time.as_ref()) {
                pod_json["startTime"] = json!(start.0.to_string());
            }
            pod_json
        })
        .collect();
    json!({"node": node_json(node_name, node), "pods": pods_json})
}

/// Gathers node, pod cgroup and container samples.
#[derive(Debug)]
pub struct StatsSource {
    cri: Option<CriClient>,
    /// Finds the pod cgroups; `None` without per-QoS cgroups or a readable cgroupfs.
    cgroups: Option<CgroupLocator>,
    /// The last node sample's (time, CPU time) and the rate computed from it.
    last_cpu: Mutex<Option<CpuMark>>,
    /// CPU rates of the pod cgroups (by pod UID) and of the system containers (by name,
    /// prefixed with `/`).
    cgroup_rates: Mutex<RateTracker>,
    /// The runtime's socket, whose server process's cgroup is the `runtime` system container.
    runtime_socket: Option<std::path::PathBuf>,
}

/// A node CPU sample, (time, CPU time), and the rate computed when it was taken.
type CpuMark = ((i64, u64), Option<u64>);

/// Samples closer than this reuse the previous rate.
const MIN_RATE_WINDOW_NANOS: i64 = 1_000_000_000;

impl StatsSource {
    pub fn new(cri: Option<CriClient>, cgroups: Option<CgroupLocator>) -> Self {
        Self {
            cri,
            cgroups,
            last_cpu: Mutex::new(None),
            cgroup_rates: Mutex::new(RateTracker::default()),
            runtime_socket: None,
        }
    }

    /// Reports the cgroup of the process serving `socket` as the `runtime` system container.
    #[must_use]
    pub fn with_runtime_socket(mut self, socket: std::path::PathBuf) -> Self {
        self.runtime_socket = Some(socket);
        self
    }

    /// Reads the cgroups `wanted` names (key, directories) and sets their CPU rates; a cgroup
    /// seen for the first time is read again after a short pause so that it has a rate at once.
    async fn cgroups(
        &self,
        wanted: Vec<(String, crate::cgroups::StatDirs)>,
    ) -> BTreeMap<String, CgroupSample> {
        let read_all = || {
            wanted
                .iter()
                .filter_map(|(key, dirs)| Some((key.clone(), cgroup_stats::read(dirs)?)))
                .collect::<BTreeMap<_, _>>()
        };
        let mut samples = read_all();
        let fresh = self.cgroup_rates.lock().is_ok_and(|mut tracker| {
            let mut fresh = false;
            for (key, s) in &samples {
                if let Some(cpu) = s.cpu_usage_core_nanos
                    && !tracker.knows(key)
                {
                    tracker.rate(key, (s.time_nanos, cpu));
                    fresh = true;
                }
            }
            fresh
        });
        if fresh {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            samples = read_all();
        }
        if let Ok(mut tracker) = self.cgroup_rates.lock() {
            for (key, s) in &mut samples {
                if let Some(cpu) = s.cpu_usage_core_nanos {
                    s.cpu_usage_nano_cores = tracker.rate(key, (s.time_nanos, cpu));
                }
            }
            tracker.retain(|k| samples.contains_key(k));
        }
        samples
    }

    /// Each pod's cgroup figures, by pod UID, and the system containers' (nothing without
    /// pod cgroups).
    pub async fn pod_extras(
        &self,
        pods: &[Pod],
    ) -> (BTreeMap<String, PodExtras>, Vec<(String, CgroupSample)>) {
        let Some(locator) = &self.cgroups else {
            return (BTreeMap::new(), Vec::new());
        };
        let mut wanted: Vec<(String, crate::cgroups::StatDirs)> = pods
            .iter()
            .filter_map(|p| {
                let uid = p.metadata.uid.as_deref()?;
                Some((uid.to_string(), locator.pod(uid)?))
            })
            .collect();
        let system =
            super::system_containers::locate(locator, self.runtime_socket.as_deref()).await;
        wanted.extend(
            system
                .iter()
                .map(|(name, dirs)| (format!("/{name}"), dirs.clone())),
        );
        let mut samples = self.cgroups(wanted).await;
        let system = system
            .into_iter()
            .filter_map(|(name, _)| Some((name.to_string(), samples.remove(&format!("/{name}"))?)))
            .collect();
        let extras = samples
            .into_iter()
            .map(|(uid, cgroup)| {
                let extras = PodExtras {
                    cgroup: Some(cgroup),
                };
                (uid, extras)
            })
            .collect();
        (extras, system)
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
        sample.memory = NodeMemorySource::detect(Path::new("/sys/fs/cgroup")).read();
        sample.boot_time_secs = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|t| parse_boot_time(&t));
        sample.rlimit = crate::eviction::observe::pid_usage();
        sample
    }

    /// The runtime's container figures (empty without a runtime or when it fails).
    pub async fn containers(&self) -> Vec<ContainerSample> {
        let Some(cri) = &self.cri else {
            return Vec::new();
        };
        let mut samples = match cri.list_container_stats(None).await {
            Ok(stats) => container_samples(&stats),
            Err(err) => {
                tracing::warn!(%err, "ListContainerStats failed");
                return Vec::new();
            }
        };
        match cri.list_containers(None).await {
            Ok(containers) => add_start_times(&mut samples, &containers),
            Err(err) => tracing::debug!(%err, "ListContainers failed"),
        }
        samples
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
            logs_fs: fs_net::statvfs(pod_logs_dir),
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
#[path = "stats_tests.rs"]
pub(crate) mod tests;
