//! `pods/binding` (and the legacy `POST /api/v1/namespaces/<ns>/bindings`): what a scheduler
//! posts to place a pod on a node. As upstream's BindingREST: the Binding names the pod
//! (`metadata.name`, which must match the URL's), the node (`target`), optional preconditions
//! (`metadata.uid`/`resourceVersion`) and annotations copied onto the pod; the pod gets
//! `spec.nodeName` and a true `PodScheduled` condition in one compare-and-swap write. A pod
//! already bound, being deleted or gated is a 409 on `pods/binding`.

use serde_json::{Value, json};

use super::object::{decode_stored, encode_for_store, meta_mut, now_rfc3339};
use super::{Registry, Target, store_error};
use crate::apiserver::errors::{ApiError, Cause};
use crate::storage::StoreError;

/// The `Status` a successful binding or eviction answers with (HTTP 201).
pub fn success_status() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201})
}

/// The parts of a Binding that matter.
#[derive(Debug, Clone, PartialEq)]
struct Binding {
    name: String,
    uid: Option<String>,
    resource_version: Option<String>,
    annotations: serde_json::Map<String, Value>,
    node: String,
}

/// Checks a Binding body against the URL's namespace (and pod name, for `pods/binding`).
fn parse_binding(
    body: &Value,
    namespace: &str,
    url_name: Option<&str>,
) -> Result<Binding, ApiError> {
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    match body.get("apiVersion").and_then(Value::as_str) {
        None | Some("" | "v1") => {}
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version (v1)"
            )));
        }
    }
    match body.get("kind").and_then(Value::as_str) {
        None | Some("" | "Binding") => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind (Binding)"
            )));
        }
    }
    let meta_str = |f: &str| {
        body.pointer(&format!("/metadata/{f}"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(String::from)
    };
    let name = meta_str("name").unwrap_or_default();
    if let Some(url_name) = url_name
        && url_name != name
    {
        return Err(ApiError::bad_request(
            "name in URL does not match name in Binding object",
        ));
    }
    if meta_str("namespace").is_some_and(|ns| ns != namespace) {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    let kind = body
        .pointer("/target/kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let node = body
        .pointer("/target/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut causes = Vec::new();
    if !kind.is_empty() && kind != "Node" {
        causes.push(Cause::not_supported(
            "target.kind",
            &json!(kind),
            &["Node", "<empty>"],
        ));
    }
    if node.is_empty() {
        causes.push(Cause::required("target.name"));
    }
    if !causes.is_empty() {
        return Err(ApiError::invalid("", "Binding", &name, causes));
    }
    Ok(Binding {
        name,
        uid: meta_str("uid"),
        resource_version: meta_str("resourceVersion"),
        annotations: body
            .pointer("/metadata/annotations")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default(),
        node: node.to_string(),
    })
}

/// The pod bound to `node`, or why it cannot be (the detail of the 409).
fn bind(pod: &Value, binding: &Binding, now: &str) -> Result<Value, String> {
    let name = binding.name.as_str();
    if pod.pointer("/metadata/deletionTimestamp").is_some() {
        return Err(format!(
            "pod {name} is being deleted, cannot be assigned to a host"
        ));
    }
    if let Some(node) = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    {
        return Err(format!("pod {name} is already assigned to node {node:?}"));
    }
    if pod
        .pointer("/spec/schedulingGates")
        .and_then(Value::as_array)
        .is_some_and(|g| !g.is_empty())
    {
        return Err(format!("pod {name} has non-empty .spec.schedulingGates"));
    }
    let mut next = pod.clone();
    next["spec"]["nodeName"] = json!(binding.node);
    if !binding.annotations.is_empty() {
        let meta = meta_mut(&mut next);
        let annotations = meta.entry("annotations").or_insert_with(|| json!({}));
        if !annotations.is_object() {
            *annotations = json!({});
        }
        if let Some(map) = annotations.as_object_mut() {
            for (k, v) in &binding.annotations {
                map.insert(k.clone(), v.clone());
            }
        }
    }
    set_condition(
        &mut next,
        json!({"type": "PodScheduled", "status": "True"}),
        now,
    );
    Ok(next)
}

/// Upstream's `UpdatePodCondition`: adds the condition or updates the one of its type; the
/// transition time changes only when the status does.
pub fn set_condition(pod: &mut Value, mut condition: Value, now: &str) {
    if !pod.get("status").is_some_and(Value::is_object) {
        pod["status"] = json!({});
    }
    let status = &mut pod["status"];
    if !status.get("conditions").is_some_and(Value::is_array) {
        status["conditions"] = json!([]);
    }
    let Some(list) = status["conditions"].as_array_mut() else {
        return;
    };
    let kind = condition["type"].clone();
    match list.iter_mut().find(|c| c["type"] == kind) {
        Some(existing) => {
            let transition = if existing["status"] == condition["status"] {
                existing.get("lastTransitionTime").cloned()
            } else {
                Some(json!(now))
            };
            if let Some(t) = transition {
                condition["lastTransitionTime"] = t;
            }
            if let (Some(target), Some(source)) = (existing.as_object_mut(), condition.as_object())
            {
                for (k, v) in source {
                    target.insert(k.clone(), v.clone());
                }
            }
        }
        None => {
            condition["lastTransitionTime"] = json!(now);
            condition["lastProbeTime"] = Value::Null;
            list.push(condition);
        }
    }
}

impl Registry {
    /// POST `pods/<name>/binding` (`pod.name` set) or `bindings` (the Binding names the pod).
    pub async fn create_binding(
        &self,
        pods: &Target,
        body: &Value,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let namespace = pods.namespace.clone().unwrap_or_default();
        let binding = parse_binding(body, &namespace, pods.name.as_deref())?;
        let pod_target = Target {
            name: Some(binding.name.clone()),
            subresource: None,
            ..pods.clone()
        };
        let key = pod_target.key();
        for _ in 0..16 {
            let kv = self
                .store()
                .get(&key)
                .await
                .map_err(|e| store_error(&pod_target, e))?
                .ok_or_else(|| pod_target.not_found())?;
            let pod = decode_stored(&kv)?;
            let conflict =
                |detail: &str| ApiError::conflict("", "pods/binding", &binding.name, detail);
            if let Some(uid) = &binding.uid {
                let actual = pod
                    .pointer("/metadata/uid")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if uid != actual {
                    return Err(conflict(&format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"
                    )));
                }
            }
            if let Some(rv) = &binding.resource_version
                && *rv != kv.mod_revision.to_string()
            {
                return Err(ApiError::modified("", "pods", &binding.name));
            }
            let next = bind(&pod, &binding, &now_rfc3339()).map_err(|d| conflict(&d))?;
            if dry_run {
                return Ok(success_status());
            }
            match self
                .store()
                .update(&key, encode_for_store(&next), kv.mod_revision)
                .await
            {
                Ok(_) => return Ok(success_status()),
                Err(StoreError::Conflict { .. }) if binding.resource_version.is_none() => continue,
                Err(e) => return Err(store_error(&pod_target, e)),
            }
        }
        Err(ApiError::conflict(
            "",
            "pods/binding",
            &binding.name,
            "too many concurrent updates, please retry",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(name: &str, node: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name,
            "annotations": {"scheduled-by": "test"}}, "target": {"kind": "Node", "name": node}})
    }

    #[test]
    fn bodies_are_checked() {
        assert!(parse_binding(&body("p", "n1"), "default", Some("p")).is_ok());
        let cases: &[(Value, Option<&str>, u16, &str)] = &[
            (
                body("p", "n1"),
                Some("q"),
                400,
                "name in URL does not match name in Binding object",
            ),
            (body("p", ""), None, 422, "target.name: Required value"),
            (
                json!({"metadata": {"name": "p"}, "target": {"kind": "Pod", "name": "n"}}),
                None,
                422,
                "target.kind: Unsupported value: \"Pod\"",
            ),
            (
                json!({"metadata": {"name": "p", "namespace": "other"}, "target": {"name": "n"}}),
                None,
                400,
                "does not match the namespace",
            ),
            (
                json!({"apiVersion": "v2", "metadata": {"name": "p"}, "target": {"name": "n"}}),
                None,
                400,
                "API version",
            ),
        ];
        for (b, url, code, text) in cases {
            let err = parse_binding(b, "default", *url).expect_err("refused");
            assert_eq!(err.code, *code, "{b}");
            assert!(err.message.contains(text), "{}", err.message);
        }
    }

    #[test]
    fn binding_sets_node_condition_and_annotations() {
        let binding = parse_binding(&body("p", "n1"), "default", None).expect("ok");
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": []},
            "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "lastTransitionTime": "old"}]}});
        let bound = bind(&pod, &binding, "now").expect("binds");
        assert_eq!(bound["spec"]["nodeName"], "n1");
        assert_eq!(bound["metadata"]["annotations"]["scheduled-by"], "test");
        let conditions = bound["status"]["conditions"]
            .as_array()
            .expect("conditions");
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0]["status"], "True");
        assert_eq!(conditions[0]["lastTransitionTime"], "now");
        assert_eq!(
            bind(&bound, &binding, "now").expect_err("bound"),
            "pod p is already assigned to node \"n1\""
        );
        let mut gated = pod.clone();
        gated["spec"]["schedulingGates"] = json!([{"name": "g"}]);
        assert!(
            bind(&gated, &binding, "now")
                .expect_err("gated")
                .contains("schedulingGates")
        );
        let mut deleting = pod;
        deleting["metadata"]["deletionTimestamp"] = json!("t");
        assert!(
            bind(&deleting, &binding, "now")
                .expect_err("deleting")
                .contains("being deleted")
        );
    }
}
