//! `pods/eviction`: a deletion that honours PodDisruptionBudgets, as upstream's EvictionREST.
//! Pods that cannot disrupt anything more (Pending, Succeeded, Failed, already deleting) are
//! deleted at once; otherwise the one PDB selecting the pod (more than one is a 500) must
//! have seen its current generation and allow a disruption: the eviction decrements
//! `status.disruptionsAllowed` and records the pod in `status.disruptedPods` with a
//! compare-and-swap on the PDB, then deletes the pod (with the Eviction's DeleteOptions)
//! after adding its `DisruptionTarget` condition. A budget that allows nothing is a 429 with
//! a `DisruptionBudget` cause, which `kubectl drain` retries. Unready pods are evicted without
//! using the budget when it is healthy enough or its `unhealthyPodEvictionPolicy` is
//! `AlwaysAllow`. [`check_budget`] is the pure decision.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::binding::{set_condition, success_status};
use super::delete::DeleteOptions;
use super::object::{decode_stored, encode_for_store, labels, now_rfc3339};
use super::read::ListParams;
use super::{Registry, Target, store_error};
use crate::apiserver::errors::{ApiError, Cause};
use crate::storage::StoreError;

/// Upstream's limit on `status.disruptedPods` before evictions are refused.
const MAX_DISRUPTED_PODS: usize = 2000;

/// The message of every budget refusal.
pub const BUDGET_MESSAGE: &str =
    "Cannot evict pod as it would violate the pod's disruption budget.";

/// What the budget says about evicting the pod.
#[derive(Debug, Clone, PartialEq)]
pub enum BudgetCheck {
    /// The pod is unready and the budget tolerates losing it: delete it without touching the
    /// budget, guarded by the pod's resourceVersion (it must not have become ready since).
    DeleteUnhealthy,
    /// Write this PDB (one disruption used, the pod recorded), then delete the pod.
    Decrement(Value),
    /// Refused.
    Refuse(ApiError),
}

/// A 429 with the `DisruptionBudget` cause.
fn too_many_requests(cause: String, retry_after: u32) -> ApiError {
    let mut error = ApiError::too_many_requests(BUDGET_MESSAGE, retry_after);
    if retry_after == 0 {
        error.details.retry_after_seconds = None;
    }
    error.details.causes.push(Cause {
        reason: "DisruptionBudget",
        message: cause,
        field: String::new(),
    });
    error
}

fn int(object: &Value, pointer: &str) -> i64 {
    object.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

/// Whether the pod's `Ready` condition is true.
pub fn pod_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// Pods whose eviction cannot disrupt anything more: no budget check.
pub fn can_ignore_budget(pod: &Value) -> bool {
    let phase = pod
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or_default();
    matches!(phase, "Succeeded" | "Failed" | "Pending")
        || pod.pointer("/metadata/deletionTimestamp").is_some()
}

/// The budget decision for `pod_name` against `pdb` (upstream's unhealthy-pod rules, then
/// `checkAndDecrement`); `now` is the time recorded in `disruptedPods`.
pub fn check_budget(pod: &Value, pdb: &Value, now: &str, dry_run: bool) -> BudgetCheck {
    let name = pdb
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let pod_name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let ready = pod_ready(pod);
    let current = int(pdb, "/status/currentHealthy");
    let desired = int(pdb, "/status/desiredHealthy");
    if !ready {
        let policy = pdb
            .pointer("/spec/unhealthyPodEvictionPolicy")
            .and_then(Value::as_str);
        if policy == Some("AlwaysAllow") || (current >= desired && desired > 0) {
            return BudgetCheck::DeleteUnhealthy;
        }
    }
    if int(pdb, "/status/observedGeneration") < int(pdb, "/metadata/generation") {
        return BudgetCheck::Refuse(too_many_requests(
            format!("The disruption budget {name} is still being processed by the server."),
            10,
        ));
    }
    let allowed = int(pdb, "/status/disruptionsAllowed");
    let forbidden = |why: &str| {
        BudgetCheck::Refuse(ApiError::forbidden(format!(
            "poddisruptionbudget.policy \"{name}\" is forbidden: {why}"
        )))
    };
    if allowed < 0 {
        return forbidden("pdb disruptions allowed is negative");
    }
    let disrupted = pdb
        .pointer("/status/disruptedPods")
        .and_then(Value::as_object)
        .map_or(0, |m| m.len());
    if disrupted > MAX_DISRUPTED_PODS {
        return forbidden(
            "DisruptedPods map too big - too many evictions not confirmed by PDB controller",
        );
    }
    if allowed == 0 {
        return BudgetCheck::Refuse(too_many_requests(
            format!(
                "The disruption budget {name} needs {desired} healthy pods and has {current} currently"
            ),
            0,
        ));
    }
    let mut next = pdb.clone();
    if !next.get("status").is_some_and(Value::is_object) {
        next["status"] = json!({});
    }
    next["status"]["disruptionsAllowed"] = json!(allowed - 1);
    if allowed - 1 == 0 {
        set_budget_condition(&mut next, now);
    }
    if !dry_run {
        if !next["status"]
            .get("disruptedPods")
            .is_some_and(Value::is_object)
        {
            next["status"]["disruptedPods"] = json!({});
        }
        next["status"]["disruptedPods"][pod_name] = json!(now);
    }
    BudgetCheck::Decrement(next)
}

/// The `DisruptionAllowed` condition of a budget that has none left.
fn set_budget_condition(pdb: &mut Value, now: &str) {
    let observed = int(pdb, "/status/observedGeneration");
    let status = &mut pdb["status"];
    if !status.get("conditions").is_some_and(Value::is_array) {
        status["conditions"] = json!([]);
    }
    let wanted = json!({"type": "DisruptionAllowed", "status": "False", "reason": "InsufficientPods",
        "message": "", "observedGeneration": observed, "lastTransitionTime": now});
    if let Some(list) = status["conditions"].as_array_mut() {
        match list.iter_mut().find(|c| c["type"] == "DisruptionAllowed") {
            Some(c) => {
                let transition = if c["status"] == "False" {
                    c["lastTransitionTime"].clone()
                } else {
                    json!(now)
                };
                *c = wanted;
                c["lastTransitionTime"] = transition;
            }
            None => list.push(wanted),
        }
    }
}

/// Whether a `metav1.LabelSelector` selects these labels. A missing or empty selector
/// selects nothing here (as the eviction code treats PDBs); `None` = the selector is invalid.
pub fn selects(selector: Option<&Value>, labels: &BTreeMap<String, String>) -> Option<bool> {
    let Some(selector) = selector.filter(|s| s.is_object()) else {
        return Some(false);
    };
    let match_labels = selector.get("matchLabels").and_then(Value::as_object);
    let exprs = selector.get("matchExpressions").and_then(Value::as_array);
    if match_labels.is_none_or(|m| m.is_empty()) && exprs.is_none_or(|e| e.is_empty()) {
        return Some(false);
    }
    for (k, v) in match_labels.into_iter().flatten() {
        if labels.get(k).map(String::as_str) != v.as_str() {
            return Some(false);
        }
    }
    for expr in exprs.into_iter().flatten() {
        let key = expr.get("key").and_then(Value::as_str)?;
        let values: Vec<&str> = expr
            .get("values")
            .and_then(Value::as_array)
            .map(|v| v.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let value = labels.get(key).map(String::as_str);
        let ok = match expr.get("operator").and_then(Value::as_str)? {
            "In" => value.is_some_and(|v| values.contains(&v)),
            "NotIn" => value.is_none_or(|v| !values.contains(&v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => return None,
        };
        if !ok {
            return Some(false);
        }
    }
    Some(true)
}

/// An Eviction body: its DeleteOptions (policy/v1 or policy/v1beta1, as upstream accepts).
fn parse_eviction(body: &Value, url_name: &str) -> Result<DeleteOptions, ApiError> {
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    match body.get("apiVersion").and_then(Value::as_str) {
        None | Some("" | "policy/v1" | "policy/v1beta1") => {}
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version (policy/v1)"
            )));
        }
    }
    match body.get("kind").and_then(Value::as_str) {
        None | Some("" | "Eviction") => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind (Eviction)"
            )));
        }
    }
    if body.pointer("/metadata/name").and_then(Value::as_str) != Some(url_name) {
        return Err(ApiError::bad_request(
            "name in URL does not match name in Eviction object",
        ));
    }
    DeleteOptions::from_json(body.get("deleteOptions").unwrap_or(&Value::Null))
}

impl Registry {
    /// POST `pods/<name>/eviction`: the HTTP status and body of the answer.
    pub async fn evict(
        &self,
        pods: &Target,
        body: &Value,
        dry_run: bool,
    ) -> Result<(u16, Value), ApiError> {
        let mut options = parse_eviction(body, pods.name())?;
        options.dry_run |= dry_run;
        let pod_target = Target {
            subresource: None,
            ..pods.clone()
        };
        let rv_unset = options.precondition_resource_version.is_none();
        // Pods the budget does not apply to are deleted directly.
        let mut pod = self.get(&pod_target).await?;
        for attempt in 0.. {
            if !can_ignore_budget(&pod) {
                break;
            }
            let mut direct = options.clone();
            let terminal_or_deleting = matches!(
                pod.pointer("/status/phase").and_then(Value::as_str),
                Some("Succeeded" | "Failed")
            ) || pod.pointer("/metadata/deletionTimestamp").is_some();
            if !terminal_or_deleting && rv_unset {
                direct.precondition_resource_version = resource_version(&pod);
            }
            match self.delete_evicted(&pod_target, &direct).await {
                Ok(()) => return Ok((201, success_status())),
                Err(e) if e.code == 409 && rv_unset && attempt < 5 => {
                    pod = self.get(&pod_target).await?;
                }
                Err(e) => return Err(e),
            }
        }
        let namespace = pod_target.namespace.clone().unwrap_or_default();
        let pdbs = self.budgets_selecting(&pod, &namespace).await?;
        if pdbs.len() > 1 {
            // Upstream answers this Status as the create's result: HTTP 201 with a Failure
            // body carrying code 500 (client-go turns it into a 500 error).
            return Ok((
                201,
                json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
                    "code": 500}),
            ));
        }
        let mut guard_rv = false;
        if let Some((pdb_target, mut pdb)) = pdbs.into_iter().next() {
            let mut done = false;
            for _ in 0..20 {
                match check_budget(&pod, &pdb, &now_rfc3339(), options.dry_run) {
                    BudgetCheck::DeleteUnhealthy => {
                        guard_rv = true;
                        done = true;
                        break;
                    }
                    BudgetCheck::Refuse(e) => return Err(e),
                    BudgetCheck::Decrement(_) if options.dry_run => {
                        done = true;
                        break;
                    }
                    BudgetCheck::Decrement(next) => {
                        let revision = resource_version(&pdb)
                            .and_then(|r| r.parse::<i64>().ok())
                            .unwrap_or_default();
                        match self
                            .store()
                            .update(&pdb_target.key(), encode_for_store(&next), revision)
                            .await
                        {
                            Ok(_) => {
                                done = true;
                                break;
                            }
                            Err(StoreError::Conflict { .. }) => {
                                pdb = self.get(&pdb_target).await?;
                            }
                            Err(e) => return Err(store_error(&pdb_target, e)),
                        }
                    }
                }
            }
            if !done {
                let name = pdb_target.name();
                let mut timeout = ApiError::new(
                    504,
                    "Timeout",
                    format!("couldn't update PodDisruptionBudget \"{name}\" due to conflicts"),
                );
                timeout.details.retry_after_seconds = Some(10);
                return Err(timeout);
            }
        }
        let mut delete = options.clone();
        if guard_rv {
            delete.precondition_resource_version = resource_version(&pod);
        }
        match self.delete_evicted(&pod_target, &delete).await {
            Ok(()) => Ok((201, success_status())),
            Err(e) if e.code == 409 && guard_rv && rv_unset => Err(too_many_requests(
                "The disruption budget is still being processed by the server.".into(),
                10,
            )),
            Err(e) => Err(e),
        }
    }

    /// The PDBs of `namespace` selecting the pod, each with its target.
    async fn budgets_selecting(
        &self,
        pod: &Value,
        namespace: &str,
    ) -> Result<Vec<(Target, Value)>, ApiError> {
        let Some(def) = self
            .catalog()
            .lookup("policy", "v1", "poddisruptionbudgets")
            .cloned()
        else {
            return Ok(Vec::new());
        };
        let list_target = Target {
            def,
            namespace: Some(namespace.to_string()),
            name: None,
            subresource: None,
        };
        let list = self.list(&list_target, &ListParams::default()).await?;
        let pod_labels = labels(pod);
        Ok(list["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|pdb| selects(pdb.pointer("/spec/selector"), &pod_labels) == Some(true))
            .map(|pdb| {
                let target = Target {
                    name: pdb
                        .pointer("/metadata/name")
                        .and_then(Value::as_str)
                        .map(String::from),
                    ..list_target.clone()
                };
                (target, pdb)
            })
            .collect())
    }

    /// Adds the `DisruptionTarget` condition (unless dry run) and deletes the pod.
    async fn delete_evicted(&self, pod: &Target, options: &DeleteOptions) -> Result<(), ApiError> {
        let mut options = options.clone();
        if !options.dry_run {
            let key = pod.key();
            let kv = self
                .store()
                .get(&key)
                .await
                .map_err(|e| store_error(pod, e))?
                .ok_or_else(|| pod.not_found())?;
            let current = decode_stored(&kv)?;
            if let Some(uid) = &options.precondition_uid
                && current.pointer("/metadata/uid").and_then(Value::as_str) != Some(uid)
            {
                return Err(ApiError::conflict(
                    "",
                    "Pod",
                    pod.name(),
                    &format!(
                        "the UID in the precondition ({uid}) does not match the UID in record ({}). The object might have been deleted and then recreated",
                        current
                            .pointer("/metadata/uid")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                    ),
                ));
            }
            if let Some(rv) = &options.precondition_resource_version
                && *rv != kv.mod_revision.to_string()
            {
                return Err(ApiError::conflict(
                    "",
                    "Pod",
                    pod.name(),
                    &format!(
                        "the ResourceVersion in the precondition ({rv}) does not match the ResourceVersion in record ({}). The object might have been modified",
                        kv.mod_revision
                    ),
                ));
            }
            let mut next = current.clone();
            set_condition(
                &mut next,
                json!({"type": "DisruptionTarget", "status": "True",
                    "reason": "EvictionByEvictionAPI", "message": "Eviction API: evicting"}),
                &now_rfc3339(),
            );
            if next != current {
                let stored = self
                    .store()
                    .update(&key, encode_for_store(&next), kv.mod_revision)
                    .await
                    .map_err(|e| store_error(pod, e))?;
                if options.precondition_resource_version.is_some() {
                    options.precondition_resource_version = Some(stored.mod_revision.to_string());
                }
            }
        }
        self.delete(pod, &options).await.map(|_| ())
    }
}

fn resource_version(object: &Value) -> Option<String> {
    object
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .map(String::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ready: bool) -> Value {
        json!({"metadata": {"name": "web-1"}, "status": {"phase": "Running",
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}})
    }

    fn pdb(generation: i64, observed: i64, allowed: i64, current: i64, desired: i64) -> Value {
        json!({"metadata": {"name": "web", "generation": generation},
            "spec": {"selector": {"matchLabels": {"app": "web"}}},
            "status": {"observedGeneration": observed, "disruptionsAllowed": allowed,
                "currentHealthy": current, "desiredHealthy": desired, "expectedPods": 3}})
    }

    fn outcome(check: &BudgetCheck) -> String {
        match check {
            BudgetCheck::DeleteUnhealthy => "unhealthy".into(),
            BudgetCheck::Decrement(p) => {
                format!("decrement to {}", p["status"]["disruptionsAllowed"])
            }
            BudgetCheck::Refuse(e) => format!(
                "{} {}",
                e.code,
                e.details
                    .causes
                    .first()
                    .map_or(e.message.as_str(), |c| c.message.as_str())
            ),
        }
    }

    #[test]
    fn budget_decisions() {
        let mut always = pdb(1, 1, 0, 1, 3);
        always["spec"]["unhealthyPodEvictionPolicy"] = json!("AlwaysAllow");
        let cases: Vec<(Value, Value, &str)> = vec![
            (pod(true), pdb(1, 1, 1, 3, 2), "decrement to 0"),
            (pod(true), pdb(1, 1, 2, 3, 1), "decrement to 1"),
            (
                pod(true),
                pdb(1, 1, 0, 2, 2),
                "429 The disruption budget web needs 2 healthy pods and has 2 currently",
            ),
            (
                pod(true),
                pdb(2, 1, 1, 3, 2),
                "429 The disruption budget web is still being processed by the server.",
            ),
            (
                pod(true),
                pdb(1, 1, -1, 3, 2),
                "403 poddisruptionbudget.policy \"web\" is forbidden: pdb disruptions allowed is negative",
            ),
            // Unready pods: healthy-enough budgets let them go without a decrement.
            (pod(false), pdb(1, 1, 0, 2, 2), "unhealthy"),
            (
                pod(false),
                pdb(1, 1, 0, 1, 2),
                "429 The disruption budget web needs 2 healthy pods and has 1 currently",
            ),
            (pod(false), pdb(1, 1, 1, 1, 2), "decrement to 0"),
            (pod(false), always, "unhealthy"),
        ];
        for (i, (p, b, want)) in cases.iter().enumerate() {
            assert_eq!(
                outcome(&check_budget(p, b, "now", false)),
                *want,
                "case {i}"
            );
        }
    }

    #[test]
    fn decrement_records_the_pod_and_the_condition() {
        let BudgetCheck::Decrement(next) =
            check_budget(&pod(true), &pdb(1, 1, 1, 3, 2), "now", false)
        else {
            panic!("decrements");
        };
        assert_eq!(next["status"]["disruptedPods"]["web-1"], "now");
        assert_eq!(
            next["status"]["conditions"][0]["reason"],
            "InsufficientPods"
        );
        assert_eq!(next["status"]["conditions"][0]["status"], "False");
        let BudgetCheck::Decrement(dry) =
            check_budget(&pod(true), &pdb(1, 1, 2, 3, 1), "now", true)
        else {
            panic!("decrements");
        };
        assert!(dry["status"].get("disruptedPods").is_none());
        let BudgetCheck::Refuse(e) = check_budget(&pod(true), &pdb(1, 1, 0, 2, 2), "now", false)
        else {
            panic!("refuses");
        };
        assert_eq!(e.message, BUDGET_MESSAGE);
        assert_eq!(e.details.causes[0].reason, "DisruptionBudget");
    }

    #[test]
    fn which_pods_skip_the_budget() {
        for (phase, deleting, want) in [
            ("Running", false, false),
            ("Pending", false, true),
            ("Succeeded", false, true),
            ("Failed", false, true),
            ("Running", true, true),
        ] {
            let mut p = json!({"metadata": {"name": "p"}, "status": {"phase": phase}});
            if deleting {
                p["metadata"]["deletionTimestamp"] = json!("t");
            }
            assert_eq!(can_ignore_budget(&p), want, "{phase} {deleting}");
        }
    }

    #[test]
    fn selectors() {
        let l: BTreeMap<String, String> = [
            ("app".to_string(), "web".to_string()),
            ("tier".to_string(), "a".to_string()),
        ]
        .into();
        let cases = [
            (json!({"matchLabels": {"app": "web"}}), Some(true)),
            (json!({"matchLabels": {"app": "db"}}), Some(false)),
            (json!({}), Some(false)),
            (
                json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]}),
                Some(true),
            ),
            (
                json!({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["a"]}]}),
                Some(false),
            ),
            (
                json!({"matchExpressions": [{"key": "x", "operator": "DoesNotExist"}]}),
                Some(true),
            ),
            (
                json!({"matchExpressions": [{"key": "x", "operator": "Exists"}]}),
                Some(false),
            ),
            (
                json!({"matchExpressions": [{"key": "x", "operator": "Bogus"}]}),
                None,
            ),
        ];
        for (s, want) in cases {
            assert_eq!(selects(Some(&s), &l), want, "{s}");
        }
        assert_eq!(selects(None, &l), Some(false));
    }
}
