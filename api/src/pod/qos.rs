//! A pod's QoS class (`status.qosClass`, set by the apiserver on create) and its effective
//! requests and limits, computed the way the API and the upstream kubelet do (pure; no I/O).
//!
//! Pods from the manifest directory are not defaulted by an API server, so every computation here
//! first applies the one API default that matters: a resource with a limit and no request is
//! requested at its limit.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;

use crate::quantity::{self, Quantity, QuantityError};

/// Resource name of CPU.
pub const CPU: &str = "cpu";
/// Resource name of memory.
pub const MEMORY: &str = "memory";

/// Resource amounts by resource name.
pub type ResourceList = BTreeMap<String, Quantity>;

/// The pod QoS classes (`status.qosClass`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QosClass {
    /// Every container limits CPU and memory, with requests equal to limits.
    Guaranteed,
    /// Something is requested or limited, but not enough for Guaranteed.
    Burstable,
    /// No container requests or limits CPU or memory.
    BestEffort,
}

impl QosClass {
    /// All classes, in the order upstream lists them.
    pub const ALL: [QosClass; 3] = [
        QosClass::Guaranteed,
        QosClass::Burstable,
        QosClass::BestEffort,
    ];

    /// The API spelling (`Guaranteed`, `Burstable`, `BestEffort`).
    pub fn as_str(self) -> &'static str {
        match self {
            QosClass::Guaranteed => "Guaranteed",
            QosClass::Burstable => "Burstable",
            QosClass::BestEffort => "BestEffort",
        }
    }
}

impl std::fmt::Display for QosClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A resource quantity in a pod spec that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {field}[{resource}]: {source}")]
pub struct ResourceError {
    /// `container <name>`, `init container <name>` or `pod overhead`.
    pub location: String,
    /// `requests`, `limits` or `overhead`.
    pub field: &'static str,
    /// The resource name.
    pub resource: String,
    #[source]
    pub source: QuantityError,
}

/// One container's parsed resources, with requests defaulted from limits.
#[derive(Debug, Clone, Default, PartialEq)]
struct ContainerResources {
    requests: ResourceList,
    limits: ResourceList,
    /// An init container with `restartPolicy: Always`.
    sidecar: bool,
}

fn parse_list(
    list: Option<&BTreeMap<String, ApiQuantity>>,
    location: &str,
    field: &'static str,
) -> Result<ResourceList, ResourceError> {
    let mut out = ResourceList::new();
    for (name, value) in list.into_iter().flatten() {
        let parsed = quantity::parse(&value.0).map_err(|source| ResourceError {
            location: location.to_string(),
            field,
            resource: name.clone(),
            source,
        })?;
        out.insert(name.clone(), parsed);
    }
    Ok(out)
}

fn container_resources(
    container: &Container,
    init: bool,
) -> Result<ContainerResources, ResourceError> {
    let location = if init {
        format!("init container {}", container.name)
    } else {
        format!("container {}", container.name)
    };
    let resources: Option<&ResourceRequirements> = container.resources.as_ref();
    let limits = parse_list(
        resources.and_then(|r| r.limits.as_ref()),
        &location,
        "limits",
    )?;
    let mut requests = parse_list(
        resources.and_then(|r| r.requests.as_ref()),
        &location,
        "requests",
    )?;
    for (name, limit) in &limits {
        requests.entry(name.clone()).or_insert(*limit);
    }
    Ok(ContainerResources {
        requests,
        limits,
        sidecar: init && container.restart_policy.as_deref() == Some("Always"),
    })
}

/// The pod's app and init containers, parsed, in spec order.
fn pod_containers(
    pod: &Pod,
) -> Result<(Vec<ContainerResources>, Vec<ContainerResources>), ResourceError> {
    let Some(spec) = pod.spec.as_ref() else {
        return Ok((Vec::new(), Vec::new()));
    };
    let apps = spec
        .containers
        .iter()
        .map(|c| container_resources(c, false))
        .collect::<Result<Vec<_>, _>>()?;
    let inits = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| container_resources(c, true))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((apps, inits))
}

fn pod_overhead(pod: &Pod) -> Result<ResourceList, ResourceError> {
    parse_list(
        pod.spec.as_ref().and_then(|s| s.overhead.as_ref()),
        "pod overhead",
        "overhead",
    )
}

fn add_quantity(a: Quantity, b: Quantity) -> Quantity {
    Quantity::from_milli(a.milli().saturating_add(b.milli()))
}

fn add_into(total: &mut ResourceList, more: &ResourceList) {
    for (name, value) in more {
        let entry = total.entry(name.clone()).or_default();
        *entry = add_quantity(*entry, *value);
    }
}

fn max_into(total: &mut ResourceList, other: &ResourceList) {
    for (name, value) in other {
        let entry = total.entry(name.clone()).or_insert(*value);
        if *value > *entry {
            *entry = *value;
        }
    }
}

/// Which list of a container to aggregate.
#[derive(Clone, Copy)]
enum Side {
    Requests,
    Limits,
}

/// Upstream `AggregateContainerRequests` / `AggregateContainerLimits`: app containers and
/// sidecars are summed; each regular init container runs alongside the sidecars started before
/// it, and the pod needs the largest of those moments if it exceeds the steady state.
fn aggregate(
    apps: &[ContainerResources],
    inits: &[ContainerResources],
    side: Side,
) -> ResourceList {
    let pick = |c: &ContainerResources| -> ResourceList {
        match side {
            Side::Requests => c.requests.clone(),
            Side::Limits => c.limits.clone(),
        }
    };
    let mut total = ResourceList::new();
    for app in apps {
        add_into(&mut total, &pick(app));
    }
    let mut sidecars = ResourceList::new();
    let mut init_peak = ResourceList::new();
    for init in inits {
        let own = pick(init);
        if init.sidecar {
            add_into(&mut total, &own);
            add_into(&mut sidecars, &own);
            max_into(&mut init_peak, &sidecars);
        } else {
            let mut moment = own;
            add_into(&mut moment, &sidecars);
            max_into(&mut init_peak, &moment);
        }
    }
    max_into(&mut total, &init_peak);
    total
}

/// The pod's effective requests (upstream `PodRequests`), overhead included.
pub fn pod_requests(pod: &Pod) -> Result<ResourceList, ResourceError> {
    let (apps, inits) = pod_containers(pod)?;
    let mut requests = aggregate(&apps, &inits, Side::Requests);
    add_into(&mut requests, &pod_overhead(pod)?);
    Ok(requests)
}

/// The pod's effective limits (upstream `PodLimits`): overhead is added only to resources that
/// have a non-zero limit, since a missing limit means unlimited.
pub fn pod_limits(pod: &Pod) -> Result<ResourceList, ResourceError> {
    let (apps, inits) = pod_containers(pod)?;
    let mut limits = aggregate(&apps, &inits, Side::Limits);
    for (name, extra) in pod_overhead(pod)? {
        if let Some(limit) = limits.get_mut(&name)
            && limit.milli() != 0
        {
            *limit = add_quantity(*limit, extra);
        }
    }
    Ok(limits)
}

/// Whether every container of the pod (app and init) sets a non-zero limit on `resource`; only
/// then does the pod cgroup of a Burstable pod carry that limit (upstream `ResourceConfigForPod`).
pub fn every_container_limits(pod: &Pod, resource: &str) -> Result<bool, ResourceError> {
    let (apps, inits) = pod_containers(pod)?;
    Ok(apps
        .iter()
        .chain(&inits)
        .all(|c| c.limits.get(resource).is_some_and(|q| q.milli() != 0)))
}

/// The pod's QoS class (upstream `ComputePodQOS`): only CPU and memory count, and only positive
/// amounts; init containers count like app containers.
pub fn pod_qos(pod: &Pod) -> Result<QosClass, ResourceError> {
    let (apps, inits) = pod_containers(pod)?;
    let counted = |list: &ResourceList| -> ResourceList {
        list.iter()
            .filter(|(name, q)| (name.as_str() == CPU || name.as_str() == MEMORY) && q.milli() > 0)
            .map(|(name, q)| (name.clone(), *q))
            .collect()
    };
    let mut requests = ResourceList::new();
    let mut limits = ResourceList::new();
    let mut guaranteed = true;
    for container in apps.iter().chain(&inits) {
        add_into(&mut requests, &counted(&container.requests));
        let own_limits = counted(&container.limits);
        if !(own_limits.contains_key(CPU) && own_limits.contains_key(MEMORY)) {
            guaranteed = false;
        }
        add_into(&mut limits, &own_limits);
    }
    if requests.is_empty() && limits.is_empty() {
        return Ok(QosClass::BestEffort);
    }
    if guaranteed
        && requests.len() == limits.len()
        && requests.iter().all(|(name, q)| limits.get(name) == Some(q))
    {
        return Ok(QosClass::Guaranteed);
    }
    Ok(QosClass::Burstable)
}

/// The CPU amount in a list, in millicores (0 when absent).
pub fn cpu_milli(list: &ResourceList) -> i64 {
    list.get(CPU).map_or(0, |q| q.milli())
}

/// The memory amount in a list, in bytes (0 when absent).
pub fn memory_bytes(list: &ResourceList) -> i64 {
    list.get(MEMORY).map_or(0, |q| q.value())
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    fn show(list: &ResourceList) -> String {
        list.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    #[test]
    fn qos_class_table() {
        let cases: Vec<(&str, Pod, QosClass)> = vec![
            (
                "no resources",
                pod("a", &[("c", "", "")]),
                QosClass::BestEffort,
            ),
            (
                "only non-compute resources",
                pod(
                    "a",
                    &[("c", "ephemeral-storage=1Gi", "ephemeral-storage=1Gi")],
                ),
                QosClass::BestEffort,
            ),
            (
                "zero requests do not count",
                pod("a", &[("c", "cpu=0,memory=0", "")]),
                QosClass::BestEffort,
            ),
            (
                "requests equal limits",
                pod("a", &[("c", "cpu=1,memory=1Gi", "cpu=1,memory=1Gi")]),
                QosClass::Guaranteed,
            ),
            (
                "limits only: requests default to limits",
                pod("a", &[("c", "", "cpu=500m,memory=128Mi")]),
                QosClass::Guaranteed,
            ),
            (
                "equal quantities spelled differently",
                pod("a", &[("c", "cpu=1000m,memory=1024Mi", "cpu=1,memory=1Gi")]),
                QosClass::Guaranteed,
            ),
            (
                "requests below limits",
                pod("a", &[("c", "cpu=100m,memory=1Gi", "cpu=1,memory=1Gi")]),
                QosClass::Burstable,
            ),
            (
                "cpu limit only",
                pod("a", &[("c", "", "cpu=1")]),
                QosClass::Burstable,
            ),
            (
                "requests only",
                pod("a", &[("c", "cpu=100m", "")]),
                QosClass::Burstable,
            ),
            (
                "one guaranteed, one best-effort container",
                pod("a", &[("c1", "", "cpu=1,memory=1Gi"), ("c2", "", "")]),
                QosClass::Burstable,
            ),
            (
                "two guaranteed containers",
                pod(
                    "a",
                    &[
                        ("c1", "", "cpu=1,memory=1Gi"),
                        ("c2", "", "cpu=2,memory=2Gi"),
                    ],
                ),
                QosClass::Guaranteed,
            ),
            (
                "best-effort init container breaks guaranteed",
                pod_with(
                    "a",
                    vec![container("c", "", "cpu=1,memory=1Gi")],
                    vec![container("i", "", "")],
                    "",
                ),
                QosClass::Burstable,
            ),
            (
                "guaranteed init container on best-effort app",
                pod_with(
                    "a",
                    vec![container("c", "", "")],
                    vec![container("i", "", "cpu=1,memory=1Gi")],
                    "",
                ),
                QosClass::Burstable,
            ),
            (
                "hugepages do not make a pod burstable",
                pod("a", &[("c", "", "cpu=1,memory=1Gi,hugepages-2Mi=4Mi")]),
                QosClass::Guaranteed,
            ),
        ];
        for (name, pod, want) in cases {
            assert_eq!(pod_qos(&pod).unwrap(), want, "{name}");
        }
    }

    #[test]
    fn pod_requests_and_limits_table() {
        // (name, pod, requests, limits)
        let cases: Vec<(&str, Pod, &str, &str)> = vec![
            ("empty", pod("a", &[("c", "", "")]), "", ""),
            (
                "app containers are summed",
                pod(
                    "a",
                    &[
                        ("c1", "cpu=100m", "cpu=200m"),
                        ("c2", "cpu=300m,memory=1Mi", "memory=2Mi"),
                    ],
                ),
                "cpu=400m,memory=1048576",
                "cpu=200m,memory=2097152",
            ),
            (
                "requests default to limits",
                pod("a", &[("c", "", "cpu=1,memory=64Mi")]),
                "cpu=1,memory=67108864",
                "cpu=1,memory=67108864",
            ),
            (
                "a larger init container sets the floor",
                pod_with(
                    "a",
                    vec![container("c", "cpu=100m", "cpu=100m")],
                    vec![container("i", "cpu=2", "cpu=3")],
                    "",
                ),
                "cpu=2",
                "cpu=3",
            ),
            (
                "sidecars add to apps and to later init containers",
                pod_with(
                    "a",
                    vec![container("c", "cpu=1", "")],
                    vec![
                        container("i1", "cpu=1500m", ""),
                        sidecar("s", "cpu=500m", ""),
                        container("i2", "cpu=1200m", ""),
                    ],
                    "",
                ),
                // steady: 1 + 0.5 = 1.5; i1 alone 1.5; i2 with s: 1.7
                "cpu=1700m",
                "",
            ),
            (
                "sidecar limits accumulate",
                pod_with(
                    "a",
                    vec![container("c", "", "memory=100Mi")],
                    vec![
                        sidecar("s1", "", "memory=50Mi"),
                        sidecar("s2", "", "memory=50Mi"),
                    ],
                    "",
                ),
                "memory=209715200",
                "memory=209715200",
            ),
            (
                "overhead adds to requests and to present limits only",
                pod_with(
                    "a",
                    vec![container("c", "cpu=100m", "memory=64Mi")],
                    Vec::new(),
                    "cpu=250m,memory=120Mi",
                ),
                "cpu=350m,memory=192937984",
                "memory=192937984",
            ),
        ];
        for (name, pod, want_requests, want_limits) in cases {
            assert_eq!(
                show(&pod_requests(&pod).unwrap()),
                want_requests,
                "{name} requests"
            );
            assert_eq!(
                show(&pod_limits(&pod).unwrap()),
                want_limits,
                "{name} limits"
            );
        }
    }

    #[test]
    fn every_container_limits_counts_init_containers() {
        let all = pod_with(
            "a",
            vec![container("c", "", "cpu=1")],
            vec![container("i", "", "cpu=1")],
            "",
        );
        assert!(every_container_limits(&all, CPU).unwrap());
        assert!(!every_container_limits(&all, MEMORY).unwrap());
        let init_unlimited = pod_with(
            "a",
            vec![container("c", "", "cpu=1")],
            vec![container("i", "", "")],
            "",
        );
        assert!(!every_container_limits(&init_unlimited, CPU).unwrap());
    }

    #[test]
    fn bad_quantity_names_the_container_and_field() {
        let bad = pod("a", &[("web", "cpu=lots", "")]);
        let err = pod_qos(&bad).unwrap_err();
        assert_eq!(err.location, "container web");
        assert_eq!(err.field, "requests");
        assert_eq!(err.resource, "cpu");
    }

    #[test]
    fn pod_without_spec_is_best_effort() {
        assert_eq!(pod_qos(&Pod::default()).unwrap(), QosClass::BestEffort);
        assert!(pod_requests(&Pod::default()).unwrap().is_empty());
    }
}
