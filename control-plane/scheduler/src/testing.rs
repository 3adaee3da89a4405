//! Builders of nodes and pods for the table tests: `node("n1").alloc("cpu=4,memory=16Gi,pods=110")`,
//! `pod("p").req("cpu=1").on("n1")`.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    Affinity, Container, ContainerImage, ContainerPort, Node, NodeSpec, NodeStatus, Pod,
    PodAffinityTerm, PodSpec, PodStatus, ResourceRequirements, Taint, Toleration,
    TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use crate::framework::CycleState;
use crate::pod_info::PodInfo;
use crate::snapshot::Snapshot;

pub(crate) fn list(text: &str) -> BTreeMap<String, Quantity> {
    text.split(',')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_string(), Quantity(v.to_string()))
        })
        .collect()
}

pub(crate) fn labels(text: &str) -> BTreeMap<String, String> {
    text.split(',')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

pub(crate) fn selector(text: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels(text)),
        ..Default::default()
    }
}

pub(crate) struct NodeB(pub(crate) Node);

pub(crate) fn node(name: &str) -> NodeB {
    NodeB(Node {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(labels(&format!("kubernetes.io/hostname={name}"))),
            ..Default::default()
        },
        spec: Some(NodeSpec::default()),
        status: Some(NodeStatus {
            allocatable: Some(list("cpu=4,memory=16Gi,pods=110")),
            ..Default::default()
        }),
    })
}

impl NodeB {
    pub(crate) fn alloc(mut self, text: &str) -> Self {
        self.0.status.get_or_insert_default().allocatable = Some(list(text));
        self
    }
    pub(crate) fn label(mut self, k: &str, v: &str) -> Self {
        self.0
            .metadata
            .labels
            .get_or_insert_default()
            .insert(k.to_string(), v.to_string());
        self
    }
    pub(crate) fn taint(mut self, k: &str, v: &str, effect: &str) -> Self {
        let spec = self.0.spec.get_or_insert_default();
        spec.taints.get_or_insert_default().push(Taint {
            key: k.to_string(),
            value: (!v.is_empty()).then(|| v.to_string()),
            effect: effect.to_string(),
            time_added: None,
        });
        self
    }
    pub(crate) fn cordon(mut self) -> Self {
        self.0.spec.get_or_insert_default().unschedulable = Some(true);
        self
    }
    pub(crate) fn image(mut self, name: &str, size: i64) -> Self {
        let status = self.0.status.get_or_insert_default();
        status.images.get_or_insert_default().push(ContainerImage {
            names: Some(vec![name.to_string()]),
            size_bytes: Some(size),
        });
        self
    }
    pub(crate) fn build(self) -> Node {
        self.0
    }
}

pub(crate) struct PodB(pub(crate) Pod);

pub(crate) fn pod(name: &str) -> PodB {
    PodB(Pod {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some("default".to_string()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "c".to_string(),
                image: Some("app:v1".to_string()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    })
}

impl PodB {
    fn spec(&mut self) -> &mut PodSpec {
        self.0.spec.get_or_insert_default()
    }
    pub(crate) fn req(mut self, text: &str) -> Self {
        self.spec().containers[0].resources = Some(ResourceRequirements {
            requests: Some(list(text)),
            ..Default::default()
        });
        self
    }
    pub(crate) fn ns(mut self, ns: &str) -> Self {
        self.0.metadata.namespace = Some(ns.to_string());
        self
    }
    pub(crate) fn label(mut self, k: &str, v: &str) -> Self {
        self.0
            .metadata
            .labels
            .get_or_insert_default()
            .insert(k.to_string(), v.to_string());
        self
    }
    pub(crate) fn on(mut self, node: &str) -> Self {
        self.spec().node_name = Some(node.to_string());
        self
    }
    pub(crate) fn priority(mut self, p: i32) -> Self {
        self.spec().priority = Some(p);
        self
    }
    pub(crate) fn image(mut self, image: &str) -> Self {
        self.spec().containers[0].image = Some(image.to_string());
        self
    }
    pub(crate) fn tolerate(mut self, key: &str, op: &str, value: &str, effect: &str) -> Self {
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
        self.spec()
            .tolerations
            .get_or_insert_default()
            .push(Toleration {
                key: opt(key),
                operator: opt(op),
                value: opt(value),
                effect: opt(effect),
                toleration_seconds: None,
            });
        self
    }
    pub(crate) fn node_selector(mut self, text: &str) -> Self {
        self.spec().node_selector = Some(labels(text));
        self
    }
    pub(crate) fn host_port(mut self, port: i32, ip: &str, protocol: &str) -> Self {
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
        self.spec().containers[0]
            .ports
            .get_or_insert_default()
            .push(ContainerPort {
                container_port: port,
                host_port: Some(port),
                host_ip: opt(ip),
                protocol: opt(protocol),
                ..Default::default()
            });
        self
    }
    pub(crate) fn affinity(mut self, affinity: Affinity) -> Self {
        self.spec().affinity = Some(affinity);
        self
    }
    pub(crate) fn spread(mut self, max_skew: i32, key: &str, when: &str, sel: &str) -> Self {
        self.spec()
            .topology_spread_constraints
            .get_or_insert_default()
            .push(TopologySpreadConstraint {
                max_skew,
                topology_key: key.to_string(),
                when_unsatisfiable: when.to_string(),
                label_selector: Some(selector(sel)),
                ..Default::default()
            });
        self
    }
    /// A `persistentVolumeClaim` volume naming `claim`.
    pub(crate) fn claim(mut self, claim: &str) -> Self {
        let volume = serde_json::from_value(serde_json::json!({
            "name": format!("v-{claim}"),
            "persistentVolumeClaim": {"claimName": claim},
        }))
        .expect("volume");
        self.spec().volumes.get_or_insert_default().push(volume);
        self
    }

    pub(crate) fn nominated(mut self, node: &str) -> Self {
        self.0.status = Some(PodStatus {
            nominated_node_name: Some(node.to_string()),
            ..Default::default()
        });
        self
    }
    pub(crate) fn build(self) -> Pod {
        self.0
    }
}

/// A required pod (anti-)affinity term on `key` selecting `sel`.
pub(crate) fn term(sel: &str, key: &str) -> PodAffinityTerm {
    PodAffinityTerm {
        label_selector: Some(selector(sel)),
        topology_key: key.to_string(),
        ..Default::default()
    }
}

pub(crate) fn pod_info(pod: Pod) -> PodInfo {
    PodInfo::new(Arc::new(pod)).expect("pod parses")
}

/// Runs `f` with the PreFilter state of `pod` on `snapshot`.
pub(crate) fn with_state<R>(
    pod: Pod,
    snapshot: &Snapshot,
    f: impl FnOnce(&CycleState<'_>) -> R,
) -> R {
    let info = pod_info(pod);
    let state = CycleState::new(&info, snapshot);
    f(&state)
}
