//! Which pod to evict for a threshold, as upstream's `pkg/kubelet/eviction/helpers.go` ranks
//! them, and the eviction's message. Pure.
//!
//! - memory: pods using more than they request first, then lower priority first, then most
//!   usage above the request first;
//! - disk (`nodefs`/`imagefs`): the same with ephemeral storage (inodes: requests are 0),
//!   the figures of what each filesystem holds ([`super::local_storage::rank_disk_usage`]);
//! - PIDs: lower priority first, then most processes first.
//!
//! A pod without usage figures ranks first (upstream: "prioritize evicting the pod for which
//! no stats were found"). Critical pods — static and mirror pods, and pods of priority
//! `system-node-critical`/`system-cluster-critical` (≥ 2000000000) — are never evicted.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;

use super::plan::Observation;
use super::signals::{Resource, Signal, Threshold, quantity_of};

/// Upstream's `SystemCriticalPriority`: pods at or above it are critical.
pub const SYSTEM_CRITICAL_PRIORITY: i32 = 2_000_000_000;
/// The annotation a mirror pod carries.
pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// What a pod uses, from its cgroups and the runtime; `None` where unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodUsage {
    /// Memory working set (usage less inactive file pages), bytes.
    pub memory: Option<u64>,
    /// Ephemeral storage: writable layers, logs, local volumes, bytes.
    pub ephemeral_storage: Option<u64>,
    pub inodes: Option<u64>,
    pub processes: Option<u64>,
    /// By container name.
    pub containers: BTreeMap<String, ContainerUsage>,
}

/// What one container uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContainerUsage {
    pub memory: Option<u64>,
    pub ephemeral_storage: Option<u64>,
}

impl PodUsage {
    fn of(&self, resource: Resource) -> Option<u64> {
        match resource {
            Resource::Memory => self.memory,
            Resource::EphemeralStorage => self.ephemeral_storage,
            Resource::Inodes => self.inodes,
            Resource::Pids => self.processes,
        }
    }
}

/// The pod to evict and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Victim {
    pub uid: String,
    /// 0 for a hard threshold; for a soft one the pod's own, at most
    /// `evictionMaxPodGracePeriod`.
    pub grace_period_seconds: i64,
    /// Upstream's eviction message.
    pub message: String,
}

/// Whether kwk-node never evicts the pod (upstream's `IsCriticalPod`).
pub fn is_critical(pod: &Pod) -> bool {
    crate::pod::admission::is_static(pod)
        || pod
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(MIRROR_ANNOTATION))
        || priority(pod) >= SYSTEM_CRITICAL_PRIORITY
}

fn priority(pod: &Pod) -> i32 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

/// The pod's request of `resource` (init containers and overhead counted as upstream), bytes.
fn request(pod: &Pod, resource: Resource) -> u64 {
    let name = match resource {
        Resource::Memory => "memory",
        Resource::EphemeralStorage => "ephemeral-storage",
        Resource::Inodes | Resource::Pids => return 0,
    };
    kwk_api::pod::qos::pod_requests(pod)
        .ok()
        .and_then(|r| r.get(name).map(|q| u64::try_from(q.value()).unwrap_or(0)))
        .unwrap_or(0)
}

fn container_request(pod: &Pod, container: &str, resource: Resource) -> u64 {
    let name = match resource {
        Resource::Memory => "memory",
        Resource::EphemeralStorage => "ephemeral-storage",
        Resource::Inodes | Resource::Pids => return 0,
    };
    pod.spec
        .iter()
        .flat_map(|s| &s.containers)
        .find(|c| c.name == container)
        .and_then(|c| c.resources.as_ref()?.requests.as_ref()?.get(name))
        .and_then(|q| crate::quantity::parse(&q.0).ok())
        .map_or(0, |q| u64::try_from(q.value()).unwrap_or(0))
}

/// `true` before `false`.
fn true_first(a: bool, b: bool) -> Ordering {
    b.cmp(&a)
}

/// The ranking of `pods` for `signal`: the first is evicted first.
pub fn rank<'a>(
    signal: Signal,
    pods: &[&'a Pod],
    usage: &BTreeMap<String, PodUsage>,
) -> Vec<&'a Pod> {
    let resource = signal.resource();
    let used = |pod: &Pod| {
        usage
            .get(crate::pod::spec::uid(pod))
            .and_then(|u| u.of(resource))
    };
    let mut ranked = pods.to_vec();
    ranked.sort_by(|a, b| {
        let (ua, ub) = (used(a), used(b));
        let unknown_first = true_first(ua.is_none(), ub.is_none());
        if resource == Resource::Pids {
            return unknown_first
                .then_with(|| priority(a).cmp(&priority(b)))
                .then_with(|| ub.cmp(&ua));
        }
        let exceeds = |pod: &Pod, used: Option<u64>| used.unwrap_or(0) > request(pod, resource);
        let above = |pod: &Pod, used: Option<u64>| {
            i128::from(used.unwrap_or(0)) - i128::from(request(pod, resource))
        };
        unknown_first
            .then_with(|| true_first(exceeds(a, ua), exceeds(b, ub)))
            .then_with(|| priority(a).cmp(&priority(b)))
            .then_with(|| above(b, ub).cmp(&above(a, ua)))
    });
    ranked
}

/// The pod to evict for `threshold` (met with `observation`), if any pod may be evicted.
pub fn choose_victim(
    threshold: &Threshold,
    observation: Observation,
    pods: &[&Pod],
    usage: &BTreeMap<String, PodUsage>,
    max_pod_grace_period_seconds: i64,
) -> Option<Victim> {
    let pod = rank(threshold.signal, pods, usage)
        .into_iter()
        .find(|p| !is_critical(p))?;
    let grace_period_seconds = if threshold.is_hard() {
        0
    } else {
        let own = pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds);
        own.map_or(max_pod_grace_period_seconds, |own| {
            own.min(max_pod_grace_period_seconds)
        })
        .max(0)
    };
    Some(Victim {
        uid: crate::pod::spec::uid(pod).to_string(),
        grace_period_seconds,
        message: message(
            threshold,
            observation,
            pod,
            usage.get(crate::pod::spec::uid(pod)),
        ),
    })
}

/// Upstream's `evictionMessage`: "The node was low on resource: memory. Threshold quantity:
/// 100Mi, available: 80Mi. Container hog was using 500Mi, request is 0, has larger consumption
/// of memory. "
pub fn message(
    threshold: &Threshold,
    observation: Observation,
    pod: &Pod,
    usage: Option<&PodUsage>,
) -> String {
    let resource = threshold.signal.resource();
    let mut message = format!(
        "The node was low on resource: {}. Threshold quantity: {}, available: {}. ",
        resource.name(),
        quantity_of(resource, threshold.value.of(observation.capacity)),
        quantity_of(resource, observation.available),
    );
    if !matches!(resource, Resource::Memory | Resource::EphemeralStorage) {
        return message;
    }
    let Some(usage) = usage else {
        return message;
    };
    for container in pod.spec.iter().flat_map(|s| &s.containers) {
        let Some(used) = usage
            .containers
            .get(&container.name)
            .and_then(|c| match resource {
                Resource::Memory => c.memory,
                _ => c.ephemeral_storage,
            })
        else {
            continue;
        };
        let requested = container_request(pod, &container.name, resource);
        if used > requested {
            message.push_str(&format!(
                "Container {} was using {}, request is {}, has larger consumption of {}. ",
                container.name,
                quantity_of(resource, used),
                quantity_of(resource, requested),
                resource.name(),
            ));
        }
    }
    message
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use kwk_api::pod::testing;

    use super::*;
    use crate::eviction::signals::Amount;

    const MI: u64 = 1 << 20;

    fn pod(uid: &str, memory_request: &str, priority: i32) -> Pod {
        let requests = if memory_request.is_empty() {
            String::new()
        } else {
            format!("memory={memory_request}")
        };
        let mut pod = testing::pod(uid, &[("main", requests.as_str(), "")]);
        if let Some(spec) = pod.spec.as_mut() {
            spec.priority = Some(priority);
        }
        pod
    }

    fn usage(entries: &[(&str, u64)], of: fn(u64) -> PodUsage) -> BTreeMap<String, PodUsage> {
        entries
            .iter()
            .map(|(uid, v)| ((*uid).to_string(), of(*v)))
            .collect()
    }

    fn memory(mi: u64) -> PodUsage {
        PodUsage {
            memory: Some(mi * MI),
            containers: BTreeMap::from([(
                "main".to_string(),
                ContainerUsage {
                    memory: Some(mi * MI),
                    ephemeral_storage: None,
                },
            )]),
            ..PodUsage::default()
        }
    }

    fn disk(mi: u64) -> PodUsage {
        PodUsage {
            ephemeral_storage: Some(mi * MI),
            inodes: Some(mi),
            ..PodUsage::default()
        }
    }

    fn processes(n: u64) -> PodUsage {
        PodUsage {
            processes: Some(n),
            ..PodUsage::default()
        }
    }

    fn uids(pods: &[&Pod]) -> Vec<String> {
        pods.iter()
            .map(|p| crate::pod::spec::uid(p).to_string())
            .collect()
    }

    #[test]
    fn ranking_per_signal() {
        struct Case {
            name: &'static str,
            signal: Signal,
            pods: Vec<Pod>,
            usage: BTreeMap<String, PodUsage>,
            want: Vec<&'static str>,
        }
        let cases = vec![
            Case {
                name: "memory: over its request before under, whatever the amounts",
                signal: Signal::MemoryAvailable,
                pods: vec![pod("big-under", "1Gi", 0), pod("small-over", "10Mi", 0)],
                usage: usage(&[("big-under", 900), ("small-over", 20)], memory),
                want: vec!["small-over", "big-under"],
            },
            Case {
                name: "memory: among those over, lower priority first",
                signal: Signal::MemoryAvailable,
                pods: vec![pod("hog-high", "", 1000), pod("small-low", "", 0)],
                usage: usage(&[("hog-high", 500), ("small-low", 10)], memory),
                want: vec!["small-low", "hog-high"],
            },
            Case {
                name: "memory: same priority, most usage above the request first",
                signal: Signal::MemoryAvailable,
                pods: vec![pod("a", "100Mi", 0), pod("b", "", 0), pod("c", "400Mi", 0)],
                usage: usage(&[("a", 300), ("b", 150), ("c", 500)], memory),
                want: vec!["a", "b", "c"],
            },
            Case {
                name: "memory: a pod without figures first",
                signal: Signal::MemoryAvailable,
                pods: vec![pod("hog", "", 0), pod("unknown", "1Gi", 100)],
                usage: usage(&[("hog", 500)], memory),
                want: vec!["unknown", "hog"],
            },
            Case {
                name: "memory: guaranteed within its request after a best-effort hog",
                signal: Signal::MemoryAvailable,
                pods: vec![pod("guaranteed", "200Mi", 0), pod("besteffort", "", 0)],
                usage: usage(&[("guaranteed", 190), ("besteffort", 5)], memory),
                want: vec!["besteffort", "guaranteed"],
            },
            Case {
                name: "disk: the same order with ephemeral storage",
                signal: Signal::NodeFsAvailable,
                pods: vec![pod("small", "", 0), pod("big", "", 0), pod("vip", "", 10)],
                usage: usage(&[("small", 1), ("big", 100), ("vip", 500)], disk),
                want: vec!["big", "small", "vip"],
            },
            Case {
                name: "inodes: requests count as 0",
                signal: Signal::NodeFsInodesFree,
                pods: vec![pod("few", "", 0), pod("many", "", 0)],
                usage: usage(&[("few", 3), ("many", 300)], disk),
                want: vec!["many", "few"],
            },
            Case {
                name: "pids: priority first, then the most processes",
                signal: Signal::PidAvailable,
                pods: vec![
                    pod("forky-high", "", 5),
                    pod("two", "", 0),
                    pod("ten", "", 0),
                ],
                usage: usage(&[("forky-high", 900), ("two", 2), ("ten", 10)], processes),
                want: vec!["ten", "two", "forky-high"],
            },
        ];
        for case in cases {
            let pods: Vec<&Pod> = case.pods.iter().collect();
            let ranked = rank(case.signal, &pods, &case.usage);
            assert_eq!(uids(&ranked), case.want, "{}", case.name);
        }
    }

    fn threshold(grace: u64) -> Threshold {
        Threshold {
            signal: Signal::MemoryAvailable,
            value: Amount::Quantity(100 * MI),
            grace_period: Duration::from_secs(grace),
            min_reclaim: None,
        }
    }

    const LOW: Observation = Observation {
        available: 80 * MI,
        capacity: 1024 * MI,
    };

    #[test]
    fn critical_pods_are_never_chosen() {
        let mut static_pod = pod("static-uid", "", 0);
        static_pod.metadata.annotations = Some(BTreeMap::from([
            (crate::labels::CONFIG_SOURCE.to_string(), "file".to_string()),
            (
                crate::labels::CONFIG_HASH.to_string(),
                "static-uid".to_string(),
            ),
        ]));
        let mut mirror = pod("mirror", "", 0);
        mirror.metadata.annotations = Some(BTreeMap::from([(
            MIRROR_ANNOTATION.to_string(),
            "hash".to_string(),
        )]));
        let node_critical = pod("node-critical", "", 2_000_001_000);
        let cluster_critical = pod("cluster-critical", "", SYSTEM_CRITICAL_PRIORITY);
        let ordinary = pod("ordinary", "1Gi", 0);
        let usage = usage(
            &[
                ("static-uid", 900),
                ("mirror", 900),
                ("node-critical", 900),
                ("cluster-critical", 900),
                ("ordinary", 1),
            ],
            memory,
        );
        let mut pods = vec![&static_pod, &mirror, &node_critical, &cluster_critical];
        assert_eq!(choose_victim(&threshold(0), LOW, &pods, &usage, 0), None);
        pods.push(&ordinary);
        let victim = choose_victim(&threshold(0), LOW, &pods, &usage, 0).expect("victim");
        assert_eq!(victim.uid, "ordinary");
    }

    #[test]
    fn grace_period_and_message() {
        let mut hog = pod("hog", "", 0);
        if let Some(spec) = hog.spec.as_mut() {
            spec.termination_grace_period_seconds = Some(30);
            spec.containers[0].name = "hog".to_string();
        }
        let mut usage = usage(&[("hog", 500)], memory);
        let entry = usage.get_mut("hog").expect("hog");
        entry.containers = BTreeMap::from([(
            "hog".to_string(),
            ContainerUsage {
                memory: Some(500 * MI),
                ephemeral_storage: None,
            },
        )]);
        let pods = [&hog];
        let cases = [
            ("hard", threshold(0), 60, 0),
            (
                "soft, the pod's own below the maximum",
                threshold(10),
                60,
                30,
            ),
            (
                "soft, capped by evictionMaxPodGracePeriod",
                threshold(10),
                10,
                10,
            ),
        ];
        for (name, threshold, max, want) in cases {
            let victim = choose_victim(&threshold, LOW, &pods, &usage, max).expect(name);
            assert_eq!(victim.grace_period_seconds, want, "{name}");
            assert_eq!(
                victim.message,
                "The node was low on resource: memory. Threshold quantity: 100Mi, available: 80Mi. \
                 Container hog was using 500Mi, request is 0, has larger consumption of memory. ",
                "{name}"
            );
        }
        let pids = Threshold {
            signal: Signal::PidAvailable,
            value: Amount::Percentage(0.1),
            ..threshold(0)
        };
        let observation = Observation {
            available: 50,
            capacity: 1000,
        };
        assert_eq!(
            message(&pids, observation, &hog, usage.get("hog")),
            "The node was low on resource: pids. Threshold quantity: 100, available: 50. "
        );
    }
}
