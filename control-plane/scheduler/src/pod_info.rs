//! What the scheduler reads from a pod, parsed once: its effective requests (and the
//! "non-zero" requests scoring uses), host ports, priority, and pod (anti-)affinity terms.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Container, Pod, PodAffinityTerm, WeightedPodAffinityTerm};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kwk_api::pod::qos::{ResourceError, pod_requests};

use crate::resources::{DEFAULT_MEMORY_REQUEST, DEFAULT_MILLI_CPU_REQUEST, Resources};

static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

/// A host port a container asks for: `(host IP, protocol, port)`, with upstream's defaults
/// (`0.0.0.0`, `TCP`) filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPort {
    pub ip: String,
    pub protocol: String,
    pub port: i32,
}

impl HostPort {
    /// Whether two host ports cannot both be bound on one node (same protocol and port, and
    /// the same IP or either one is the wildcard).
    pub fn conflicts_with(&self, other: &HostPort) -> bool {
        self.port == other.port
            && self.protocol == other.protocol
            && (self.ip == other.ip || self.ip == "0.0.0.0" || other.ip == "0.0.0.0")
    }
}

/// A pod (anti-)affinity term with its namespaces resolved against the owning pod.
#[derive(Clone, Debug, PartialEq)]
pub struct AffinityTerm {
    /// Namespaces named by the term (the owning pod's own when neither namespaces nor a
    /// namespace selector are given).
    pub namespaces: Vec<String>,
    pub namespace_selector: Option<LabelSelector>,
    /// `None` selects nothing, as upstream reads a missing selector.
    pub selector: Option<LabelSelector>,
    pub topology_key: String,
}

/// A preferred term with its weight.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightedAffinityTerm {
    pub weight: i64,
    pub term: AffinityTerm,
}

/// Looks up a namespace's labels (for terms with a namespace selector).
pub trait NamespaceLabels {
    fn namespace_labels(&self, namespace: &str) -> Option<&BTreeMap<String, String>>;
}

impl AffinityTerm {
    fn from_api(term: &PodAffinityTerm, own_namespace: &str) -> Self {
        let namespaces = term.namespaces.clone().unwrap_or_default();
        let namespace_selector = term.namespace_selector.clone();
        let namespaces = if namespaces.is_empty() && namespace_selector.is_none() {
            vec![own_namespace.to_string()]
        } else {
            namespaces
        };
        AffinityTerm {
            namespaces,
            namespace_selector,
            selector: term.label_selector.clone(),
            topology_key: term.topology_key.clone(),
        }
    }

    /// Whether the term selects a pod in `namespace` with `labels`.
    pub fn matches(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
        ns: &dyn NamespaceLabels,
    ) -> bool {
        let Some(selector) = &self.selector else {
            return false;
        };
        self.matches_namespace(namespace, ns) && kwk_api::meta::selector_matches(selector, labels)
    }

    fn matches_namespace(&self, namespace: &str, ns: &dyn NamespaceLabels) -> bool {
        if self.namespaces.iter().any(|n| n == namespace) {
            return true;
        }
        match &self.namespace_selector {
            None => false,
            Some(sel) if kwk_api::meta::selector_is_empty(sel) => true,
            Some(sel) => ns
                .namespace_labels(namespace)
                .is_some_and(|labels| kwk_api::meta::selector_matches(sel, labels)),
        }
    }

    /// Whether the term selects the pod `info`.
    pub fn matches_pod(&self, info: &PodInfo, ns: &dyn NamespaceLabels) -> bool {
        self.matches(&info.namespace, info.labels(), ns)
    }
}

/// A pod as the scheduler sees it.
#[derive(Clone, Debug)]
pub struct PodInfo {
    pub pod: Arc<Pod>,
    /// `namespace/name`.
    pub key: String,
    pub namespace: String,
    pub priority: i32,
    pub requests: Resources,
    /// CPU and memory requested, counting containers without a request at upstream's
    /// defaults (100m, 200Mi); used by scoring.
    pub non_zero_milli_cpu: i64,
    pub non_zero_memory: i64,
    pub host_ports: Vec<HostPort>,
    pub required_affinity: Vec<AffinityTerm>,
    pub required_anti_affinity: Vec<AffinityTerm>,
    pub preferred_affinity: Vec<WeightedAffinityTerm>,
    pub preferred_anti_affinity: Vec<WeightedAffinityTerm>,
}

fn container_sets(container: &Container, resource: &str) -> bool {
    container.resources.as_ref().is_some_and(|r| {
        r.requests
            .as_ref()
            .is_some_and(|m| m.contains_key(resource))
            || r.limits.as_ref().is_some_and(|m| m.contains_key(resource))
    })
}

impl PodInfo {
    /// Parses a pod; fails when a resource quantity does not parse.
    pub fn new(pod: Arc<Pod>) -> Result<Self, ResourceError> {
        let requests = Resources::from_list(&pod_requests(&pod)?);
        Ok(Self::with_requests(pod, requests))
    }

    /// Parses a pod, counting requests that do not parse as zero (for pods already bound,
    /// which the apiserver validated).
    pub fn new_lenient(pod: Arc<Pod>) -> Self {
        let requests = pod_requests(&pod)
            .map(|l| Resources::from_list(&l))
            .unwrap_or_default();
        Self::with_requests(pod, requests)
    }

    fn with_requests(pod: Arc<Pod>, requests: Resources) -> Self {
        let namespace = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_string());
        let key = format!("{namespace}/{}", pod.metadata.name.as_deref().unwrap_or(""));
        let spec = pod.spec.as_ref();
        let containers = spec.map(|s| s.containers.as_slice()).unwrap_or_default();
        let missing = |resource: &str| -> i64 {
            let n = containers
                .iter()
                .filter(|c| !container_sets(c, resource))
                .count();
            i64::try_from(n).unwrap_or(i64::MAX)
        };
        let non_zero_milli_cpu = requests.milli_cpu + missing("cpu") * DEFAULT_MILLI_CPU_REQUEST;
        let non_zero_memory = requests.memory + missing("memory") * DEFAULT_MEMORY_REQUEST;
        let sidecars = spec
            .and_then(|s| s.init_containers.as_deref())
            .unwrap_or_default()
            .iter()
            .filter(|c| c.restart_policy.as_deref() == Some("Always"));
        let host_ports = containers
            .iter()
            .chain(sidecars)
            .flat_map(|c| c.ports.iter().flatten())
            .filter(|p| p.host_port.is_some_and(|h| h > 0))
            .map(|p| HostPort {
                ip: p
                    .host_ip
                    .clone()
                    .filter(|ip| !ip.is_empty())
                    .unwrap_or_else(|| "0.0.0.0".to_string()),
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".to_string()),
                port: p.host_port.unwrap_or_default(),
            })
            .collect();
        let affinity = spec.and_then(|s| s.affinity.as_ref());
        let pa = affinity.and_then(|a| a.pod_affinity.as_ref());
        let paa = affinity.and_then(|a| a.pod_anti_affinity.as_ref());
        let required = |terms: Option<&Vec<PodAffinityTerm>>| -> Vec<AffinityTerm> {
            terms
                .into_iter()
                .flatten()
                .map(|t| AffinityTerm::from_api(t, &namespace))
                .collect()
        };
        let preferred = |terms: Option<&Vec<WeightedPodAffinityTerm>>| {
            terms
                .into_iter()
                .flatten()
                .map(|t| WeightedAffinityTerm {
                    weight: i64::from(t.weight),
                    term: AffinityTerm::from_api(&t.pod_affinity_term, &namespace),
                })
                .collect::<Vec<_>>()
        };
        PodInfo {
            key,
            priority: spec.and_then(|s| s.priority).unwrap_or(0),
            requests,
            non_zero_milli_cpu,
            non_zero_memory,
            host_ports,
            required_affinity: required(pa.and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            required_anti_affinity: required(paa.and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            preferred_affinity: preferred(pa.and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            preferred_anti_affinity: preferred(paa.and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            namespace,
            pod,
        }
    }

    /// The pod's labels.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        self.pod.metadata.labels.as_ref().unwrap_or(&NO_LABELS)
    }

    /// Whether the pod has any pod affinity or anti-affinity term.
    pub fn has_affinity(&self) -> bool {
        !(self.required_affinity.is_empty()
            && self.required_anti_affinity.is_empty()
            && self.preferred_affinity.is_empty()
            && self.preferred_anti_affinity.is_empty())
    }

    /// Whether the pod is being deleted.
    pub fn is_terminating(&self) -> bool {
        self.pod.metadata.deletion_timestamp.is_some()
    }
}

/// The labels of a node (empty when it has none).
pub fn node_labels(node: &k8s_openapi::api::core::v1::Node) -> &BTreeMap<String, String> {
    node.metadata.labels.as_ref().unwrap_or(&NO_LABELS)
}
