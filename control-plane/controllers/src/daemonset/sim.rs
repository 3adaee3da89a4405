//! Test-only in-memory cluster: applies planned actions to pods, PVCs and revisions, plays
//! the scheduler and kubelet (bind, run, ready), so tests can loop plan → apply → plan.

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, PodCondition, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::node_fit::target_node;
use crate::action::Action;

#[derive(Debug)]
pub(crate) struct Cluster {
    pub(crate) now: Timestamp,
    pub(crate) pods: Vec<Pod>,
    pub(crate) pvcs: Vec<PersistentVolumeClaim>,
    pub(crate) revisions: Vec<ControllerRevision>,
    /// The last status written for the owner.
    pub(crate) status: Option<Value>,
    /// Event reasons recorded.
    pub(crate) events: Vec<String>,
    counter: u32,
}

fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn patched<T: serde::Serialize + serde::de::DeserializeOwned>(object: &T, patch: &Value) -> T {
    let mut value = serde_json::to_value(object).expect("serialise");
    merge(&mut value, patch);
    serde_json::from_value(value).expect("deserialise")
}

impl Cluster {
    pub(crate) fn new(now: Timestamp) -> Self {
        Cluster {
            now,
            pods: Vec::new(),
            pvcs: Vec::new(),
            revisions: Vec::new(),
            status: None,
            events: Vec::new(),
            counter: 0,
        }
    }

    fn created_meta(
        &mut self,
        meta: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    ) {
        self.counter += 1;
        if meta.name.as_deref().unwrap_or_default().is_empty() {
            meta.name = Some(format!(
                "{}{:05}",
                meta.generate_name.clone().unwrap_or_default(),
                self.counter
            ));
        }
        meta.uid = Some(format!("uid-{}", self.counter));
        meta.resource_version = Some(self.counter.to_string());
        meta.creation_timestamp = Some(Time(self.now));
    }

    /// Apply `actions` as the apiserver would (deletes are immediate).
    pub(crate) fn apply(&mut self, actions: &[Action]) {
        for action in actions {
            match action {
                Action::Create { target, body } => match target.kind.as_str() {
                    "Pod" => {
                        let mut pod: Pod = serde_json::from_value(body.clone()).expect("pod");
                        assert!(
                            !self.pods.iter().any(|p| pod.metadata.name.is_some()
                                && p.metadata.name == pod.metadata.name),
                            "pod {:?} created twice",
                            pod.metadata.name
                        );
                        self.created_meta(&mut pod.metadata);
                        pod.status = Some(PodStatus {
                            phase: Some("Pending".into()),
                            ..PodStatus::default()
                        });
                        self.pods.push(pod);
                    }
                    "PersistentVolumeClaim" => {
                        let mut pvc: PersistentVolumeClaim =
                            serde_json::from_value(body.clone()).expect("pvc");
                        self.created_meta(&mut pvc.metadata);
                        self.pvcs.push(pvc);
                    }
                    "ControllerRevision" => {
                        let mut rev: ControllerRevision =
                            serde_json::from_value(body.clone()).expect("revision");
                        self.created_meta(&mut rev.metadata);
                        self.revisions.push(rev);
                    }
                    other => panic!("unexpected create of {other}"),
                },
                Action::Update { target, body } => {
                    assert_eq!(target.kind, "ControllerRevision");
                    let rev: ControllerRevision =
                        serde_json::from_value(body.clone()).expect("revision");
                    let slot = self
                        .revisions
                        .iter_mut()
                        .find(|r| r.metadata.name == rev.metadata.name)
                        .expect("updated revision exists");
                    *slot = rev;
                }
                Action::UpdateStatus { body, .. } => self.status = Some(body["status"].clone()),
                Action::Patch { target, patch, .. } => match target.kind.as_str() {
                    "Pod" => {
                        if let Some(pod) = self
                            .pods
                            .iter_mut()
                            .find(|p| p.metadata.name.as_deref() == Some(&target.name))
                        {
                            *pod = patched(pod, patch);
                        }
                    }
                    "PersistentVolumeClaim" => {
                        if let Some(pvc) = self
                            .pvcs
                            .iter_mut()
                            .find(|p| p.metadata.name.as_deref() == Some(&target.name))
                        {
                            *pvc = patched(pvc, patch);
                        }
                    }
                    other => panic!("unexpected patch of {other}"),
                },
                Action::Delete { target, .. } => {
                    let name = Some(target.name.clone());
                    match target.kind.as_str() {
                        "Pod" => self.pods.retain(|p| p.metadata.name != name),
                        "PersistentVolumeClaim" => self.pvcs.retain(|p| p.metadata.name != name),
                        "ControllerRevision" => self.revisions.retain(|r| r.metadata.name != name),
                        other => panic!("unexpected delete of {other}"),
                    }
                }
                Action::Evict { .. } => panic!("unexpected eviction"),
                Action::Event { reason, .. } => self.events.push(reason.clone()),
            }
        }
    }

    /// Scheduler and kubelet: bind pinned pods to their node (else to `default_node`), run
    /// them and mark them ready now.
    pub(crate) fn run_all_pods(&mut self, default_node: &str) {
        let now = self.now;
        for pod in &mut self.pods {
            let node = target_node(pod).unwrap_or_else(|| default_node.to_string());
            let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
            if phase.as_deref() == Some("Running") || phase.as_deref() == Some("Failed") {
                continue;
            }
            if let Some(spec) = pod.spec.as_mut() {
                spec.node_name = Some(node);
            }
            pod.status = Some(PodStatus {
                phase: Some("Running".into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    last_transition_time: Some(Time(now)),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            });
        }
    }

    /// The owner's status as last written.
    pub(crate) fn status_as<T: serde::de::DeserializeOwned>(&self) -> Option<T> {
        self.status
            .clone()
            .map(|s| serde_json::from_value(s).expect("status"))
    }
}
