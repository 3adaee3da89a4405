//! What to send the apiserver for a pod's status. Pure.
//!
//! [`StatusVersions`] gives every distinct local status of a pod a version and remembers the
//! version the apiserver acknowledged, so only changed statuses are sent, a pod's statuses go
//! out in order and an acknowledgement of an old version never hides a newer one.
//! [`status_patch`] turns (the API's pod, the local status) into a JSON merge patch of the
//! `status` subresource, or nothing when the API already says the same. The node owns what it
//! computes; conditions of other types (`PodScheduled`, `DisruptionTarget`, ...), the
//! `nominatedNodeName` and the first `startTime` stay as the API has them, and a terminal phase
//! is never taken back.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, PodCondition, PodStatus};
use serde_json::{Map, Value};

use crate::pod::store::is_terminal_phase as is_terminal;

/// Per pod UID: the latest local status, its version and the acknowledged version.
#[derive(Clone, Debug, Default)]
pub struct StatusVersions {
    pods: BTreeMap<String, Versioned>,
}

#[derive(Clone, Debug)]
struct Versioned {
    status: PodStatus,
    version: u64,
    acked: u64,
}

impl StatusVersions {
    /// Records the local status of `uid`; a status that differs from the last one gets the
    /// next version. Returns that version.
    pub fn observe(&mut self, uid: &str, status: &PodStatus) -> u64 {
        match self.pods.get_mut(uid) {
            Some(v) if v.status == *status => v.version,
            Some(v) => {
                v.status = status.clone();
                v.version += 1;
                v.version
            }
            None => {
                self.pods.insert(
                    uid.to_string(),
                    Versioned {
                        status: status.clone(),
                        version: 1,
                        acked: 0,
                    },
                );
                1
            }
        }
    }

    /// Pods whose latest version the apiserver has not acknowledged: (UID, version, status).
    pub fn pending(&self) -> Vec<(String, u64, PodStatus)> {
        self.pods
            .iter()
            .filter(|(_, v)| v.version > v.acked)
            .map(|(uid, v)| (uid.clone(), v.version, v.status.clone()))
            .collect()
    }

    /// The apiserver has `version` of `uid`'s status (never moves backwards).
    pub fn ack(&mut self, uid: &str, version: u64) {
        if let Some(v) = self.pods.get_mut(uid) {
            v.acked = v.acked.max(version);
        }
    }

    /// Marks every pod unacknowledged, so the next pass compares each with the API again.
    pub fn resync(&mut self) {
        for v in self.pods.values_mut() {
            v.acked = v.acked.min(v.version.saturating_sub(1));
        }
    }

    /// Forgets pods no longer on the node.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.pods.retain(|uid, _| keep(uid));
    }

    pub fn is_acked(&self, uid: &str) -> bool {
        self.pods.get(uid).is_some_and(|v| v.acked >= v.version)
    }
}

/// The status the API pod should have, given the node's `local` status.
pub fn wanted_status(api: Option<&PodStatus>, local: &PodStatus) -> PodStatus {
    let mut wanted = local.clone();
    let Some(api) = api else {
        return wanted;
    };
    let mut conditions: Vec<PodCondition> = local.conditions.clone().unwrap_or_default();
    for c in api.conditions.iter().flatten() {
        if !conditions.iter().any(|l| l.type_ == c.type_) {
            conditions.push(c.clone());
        }
    }
    wanted.conditions = (!conditions.is_empty()).then_some(conditions);
    if wanted.nominated_node_name.is_none() {
        wanted
            .nominated_node_name
            .clone_from(&api.nominated_node_name);
    }
    if api.start_time.is_some() {
        wanted.start_time.clone_from(&api.start_time);
    }
    if is_terminal(api.phase.as_deref()) && !is_terminal(wanted.phase.as_deref()) {
        wanted.phase.clone_from(&api.phase);
    }
    wanted
}

/// The merge patch (`{"metadata":{"uid":…},"status":…}`) that brings `api_pod`'s status to
/// what `local` says, or `None` when it already does.
pub fn status_patch(api_pod: &Pod, local: &PodStatus) -> Option<Value> {
    let wanted = wanted_status(api_pod.status.as_ref(), local);
    let old = serde_json::to_value(api_pod.status.clone().unwrap_or_default()).ok()?;
    let new = serde_json::to_value(&wanted).ok()?;
    let diff = merge_patch(&old, &new)?;
    let mut patch = Map::new();
    if let Some(uid) = &api_pod.metadata.uid {
        patch.insert("metadata".into(), serde_json::json!({ "uid": uid }));
    }
    patch.insert("status".into(), diff);
    Some(Value::Object(patch))
}

/// The JSON merge patch (RFC 7386) from `old` to `new`; `None` when they are equal.
pub fn merge_patch(old: &Value, new: &Value) -> Option<Value> {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut patch = Map::new();
            for (key, value) in n {
                match o.get(key) {
                    Some(before) => {
                        if let Some(d) = merge_patch(before, value) {
                            patch.insert(key.clone(), d);
                        }
                    }
                    None => {
                        patch.insert(key.clone(), value.clone());
                    }
                }
            }
            for key in o.keys() {
                if !n.contains_key(key) {
                    patch.insert(key.clone(), Value::Null);
                }
            }
            (!patch.is_empty()).then_some(Value::Object(patch))
        }
        _ => (old != new).then(|| new.clone()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn status(v: Value) -> PodStatus {
        serde_json::from_value(v).unwrap()
    }

    fn api_pod(s: Value) -> Pod {
        let mut p = Pod::default();
        p.metadata.uid = Some("u1".into());
        p.status = Some(status(s));
        p
    }

    #[test]
    fn merge_patch_table() {
        let cases = [
            (json!({"a": 1}), json!({"a": 1}), None),
            (json!({"a": 1}), json!({"a": 2}), Some(json!({"a": 2}))),
            (
                json!({"a": 1, "b": 2}),
                json!({"a": 1}),
                Some(json!({"b": null})),
            ),
            (
                json!({"a": {"x": 1, "y": 2}}),
                json!({"a": {"x": 1, "y": 3}}),
                Some(json!({"a": {"y": 3}})),
            ),
            (
                json!({"l": [1, 2]}),
                json!({"l": [1]}),
                Some(json!({"l": [1]})),
            ),
            (
                json!({}),
                json!({"n": {"k": "v"}}),
                Some(json!({"n": {"k": "v"}})),
            ),
        ];
        for (old, new, want) in cases {
            assert_eq!(merge_patch(&old, &new), want, "{old} -> {new}");
        }
    }

    #[test]
    fn status_patch_table() {
        let running = json!({"phase": "Running", "podIP": "10.0.0.5",
            "conditions": [{"type": "Ready", "status": "True"}]});
        let cases: Vec<(&str, Value, Value, Option<Value>)> = vec![
            (
                "same status: nothing",
                running.clone(),
                running.clone(),
                None,
            ),
            (
                "new phase and IP: only those",
                json!({"phase": "Pending", "conditions": [{"type": "Ready", "status": "True"}]}),
                running.clone(),
                Some(
                    json!({"metadata": {"uid": "u1"}, "status": {"phase": "Running", "podIP": "10.0.0.5"}}),
                ),
            ),
            (
                "conditions of others are kept",
                json!({"phase": "Running", "podIP": "10.0.0.5", "conditions": [
                    {"type": "PodScheduled", "status": "True"}]}),
                running.clone(),
                Some(json!({"metadata": {"uid": "u1"}, "status": {"conditions": [
                    {"type": "Ready", "status": "True"}, {"type": "PodScheduled", "status": "True"}]}})),
            ),
            (
                "a terminal phase is not taken back",
                json!({"phase": "Failed", "podIP": "10.0.0.5",
                    "conditions": [{"type": "Ready", "status": "True"}]}),
                running.clone(),
                None,
            ),
            (
                "the first start time stays",
                json!({"phase": "Running", "podIP": "10.0.0.5", "startTime": "2025-01-01T00:00:00Z",
                    "conditions": [{"type": "Ready", "status": "True"}]}),
                json!({"phase": "Running", "podIP": "10.0.0.5", "startTime": "2026-01-01T00:00:00Z",
                    "conditions": [{"type": "Ready", "status": "True"}]}),
                None,
            ),
            (
                "a field that went away is removed",
                json!({"phase": "Running", "podIP": "10.0.0.5", "message": "old",
                    "conditions": [{"type": "Ready", "status": "True"}]}),
                running,
                Some(json!({"metadata": {"uid": "u1"}, "status": {"message": null}})),
            ),
        ];
        for (what, api, local, want) in cases {
            assert_eq!(status_patch(&api_pod(api), &status(local)), want, "{what}");
        }
    }

    #[test]
    fn versions_only_pend_changes_and_never_go_back() {
        let mut v = StatusVersions::default();
        let a = status(json!({"phase": "Pending"}));
        let b = status(json!({"phase": "Running"}));
        assert_eq!(v.observe("u", &a), 1);
        assert_eq!(v.observe("u", &a), 1, "same status, same version");
        assert_eq!(v.pending().len(), 1);
        assert_eq!(v.observe("u", &b), 2);
        // The acknowledgement of version 1 arrives late: version 2 still pends.
        v.ack("u", 1);
        assert_eq!(v.pending(), vec![("u".to_string(), 2, b.clone())]);
        v.ack("u", 2);
        assert!(v.pending().is_empty());
        v.ack("u", 1);
        assert!(v.is_acked("u"), "an old ack does not undo a newer one");
        v.resync();
        assert_eq!(v.pending().len(), 1);
        v.retain(|_| false);
        assert!(v.pending().is_empty());
    }
}
