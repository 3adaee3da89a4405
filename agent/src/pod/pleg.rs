//! PLEG (pod lifecycle event generator): the runtime is relisted every second and two relists
//! are compared; a pod whose sandboxes or containers changed state gets an event, which wakes
//! its worker. The diff is pure; the relist is two CRI calls for the whole node.

use std::collections::{BTreeMap, BTreeSet};

use kwk_cri::api;

use crate::labels;

/// The relist period (the upstream kubelet's).
pub const RELIST_PERIOD: std::time::Duration = std::time::Duration::from_secs(1);

/// What one relist saw of one pod: sandbox and container IDs with their state codes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodRecord {
    pub name: String,
    pub namespace: String,
    pub sandboxes: BTreeMap<String, i32>,
    pub containers: BTreeMap<String, i32>,
    /// The pod's grace period as written on its containers (to stop orphans gracefully).
    pub grace_seconds: Option<i64>,
}

/// One relist: every pod kwk-node created, by UID.
pub type Relist = BTreeMap<String, PodRecord>;

/// Builds a relist from the runtime's lists; ignores objects kwk-node did not create.
pub fn relist(sandboxes: &[api::PodSandbox], containers: &[api::Container]) -> Relist {
    let mut pods = Relist::new();
    for s in sandboxes {
        let Some(id) = super::observed::sandbox_identity(&s.labels) else {
            continue;
        };
        let record = pods.entry(id.uid).or_default();
        record.name = id.name;
        record.namespace = id.namespace;
        record.sandboxes.insert(s.id.clone(), s.state);
    }
    for c in containers {
        if c.labels.get(labels::MANAGED).map(String::as_str) != Some("true") {
            continue;
        }
        let Some(uid) = c.labels.get(labels::POD_UID) else {
            continue;
        };
        let record = pods.entry(uid.clone()).or_default();
        record.containers.insert(c.id.clone(), c.state);
        if let Some(grace) = c
            .annotations
            .get(labels::POD_TERMINATION_GRACE_PERIOD)
            .and_then(|g| g.parse().ok())
        {
            record.grace_seconds = Some(grace);
        }
    }
    pods
}

/// The UIDs whose runtime state differs between two relists (appeared, changed or vanished).
pub fn changed_pods(old: &Relist, new: &Relist) -> BTreeSet<String> {
    let uids: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    uids.into_iter()
        .filter(|uid| old.get(*uid) != new.get(*uid))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn managed(uid: &str) -> HashMap<String, String> {
        HashMap::from([
            (labels::MANAGED.to_string(), "true".to_string()),
            (labels::POD_UID.to_string(), uid.to_string()),
            (labels::POD_NAME.to_string(), format!("pod-{uid}")),
        ])
    }

    fn sandbox(id: &str, uid: &str, state: api::PodSandboxState) -> api::PodSandbox {
        api::PodSandbox {
            id: id.into(),
            state: state as i32,
            labels: managed(uid),
            ..Default::default()
        }
    }

    fn container(id: &str, uid: &str, state: api::ContainerState) -> api::Container {
        api::Container {
            id: id.into(),
            state: state as i32,
            labels: managed(uid),
            ..Default::default()
        }
    }

    #[test]
    fn only_pods_whose_state_changed_get_events() {
        use api::ContainerState::{ContainerExited, ContainerRunning};
        use api::PodSandboxState::SandboxReady;
        let before = relist(
            &[
                sandbox("s1", "a", SandboxReady),
                sandbox("s2", "b", SandboxReady),
            ],
            &[
                container("c1", "a", ContainerRunning),
                container("c2", "b", ContainerRunning),
            ],
        );
        let after = relist(
            &[
                sandbox("s1", "a", SandboxReady),
                sandbox("s2", "b", SandboxReady),
                sandbox("s3", "c", SandboxReady),
            ],
            &[
                container("c1", "a", ContainerRunning),
                container("c2", "b", ContainerExited),
            ],
        );
        let changed: Vec<String> = changed_pods(&before, &after).into_iter().collect();
        assert_eq!(changed, vec!["b".to_string(), "c".to_string()]);
        assert_eq!(after["c"].name, "pod-c");
        // A pod that vanished also changed.
        assert!(changed_pods(&after, &Relist::new()).contains("a"));
        assert!(changed_pods(&after, &after).is_empty());
    }

    #[test]
    fn foreign_objects_are_ignored() {
        let foreign = api::PodSandbox {
            id: "x".into(),
            ..Default::default()
        };
        assert!(relist(&[foreign], &[]).is_empty());
    }
}
