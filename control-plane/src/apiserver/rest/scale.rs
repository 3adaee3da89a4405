//! The `scale` subresource (`autoscaling/v1` `Scale`) of Deployments, ReplicaSets and
//! StatefulSets: a view of `spec.replicas` and `status.replicas` + selector; writes change
//! the parent's `spec.replicas` (with the Scale's `resourceVersion` as precondition).

use serde_json::{Value, json};

use super::write::{Patch, WriteParams, WriteResult};
use super::{Registry, Target, parse_revision};
use crate::apiserver::errors::{ApiError, Cause};

/// The Scale view of a parent object.
pub fn scale_of(parent: &Value) -> Value {
    let meta = &parent["metadata"];
    let mut metadata = json!({});
    for field in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(v) = meta.get(field) {
            metadata[field] = v.clone();
        }
    }
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": metadata,
        "spec": {"replicas": parent.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0)},
        "status": {
            "replicas": parent.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0),
            "selector": selector_string(parent.pointer("/spec/selector")),
        },
    })
}

/// The Scale view of a built-in parent or of a custom resource (by its CRD's scale paths).
pub fn scale_view(def: &crate::apiserver::catalog::ResourceDef, parent: &Value) -> Value {
    match def.custom.as_ref().and_then(|c| c.scale.as_ref()) {
        Some(paths) => crate::apiserver::crd::scale_of_custom(paths, parent),
        None => scale_of(parent),
    }
}

/// A label selector object as the string form (`a=b,c in (d)`).
fn selector_string(selector: Option<&Value>) -> String {
    let Some(selector) = selector else {
        return String::new();
    };
    let mut parts: Vec<String> = selector["matchLabels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    for expr in selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let key = expr["key"].as_str().unwrap_or_default();
        let values: Vec<&str> = expr["values"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        parts.push(match expr["operator"].as_str().unwrap_or_default() {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            _ => format!("!{key}"),
        });
    }
    parts.join(",")
}

impl Registry {
    /// GET …/scale.
    pub async fn get_scale(&self, target: &Target) -> Result<Value, ApiError> {
        Ok(scale_view(
            &target.def,
            &self.get(&self.parent(target)).await?,
        ))
    }

    /// PUT or PATCH …/scale: `desired` turns the current Scale into the wanted one.
    pub async fn update_scale(
        &self,
        target: &Target,
        desired: impl Fn(&Value) -> Result<Value, ApiError>,
        params: &WriteParams,
    ) -> Result<WriteResult, ApiError> {
        let parent = self.parent(target);
        let current_scale = self.get_scale(target).await?;
        let wanted = desired(&current_scale)?;
        let precondition = parse_revision(
            wanted
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .filter(|rv| {
                    Some(*rv)
                        != current_scale
                            .pointer("/metadata/resourceVersion")
                            .and_then(Value::as_str)
                }),
        )?;
        let replicas = wanted
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if replicas < 0 {
            return Err(ApiError::invalid(
                "autoscaling",
                "Scale",
                target.name(),
                vec![Cause::invalid(
                    "spec.replicas",
                    &json!(replicas),
                    "must be greater than or equal to 0",
                )],
            ));
        }
        let result = self
            .guaranteed_update_tracked(
                &parent,
                precondition,
                params.dry_run,
                super::apply::Tracking::of(params, Some("scale")),
                |object| {
                    let mut next = object.clone();
                    match target.def.custom.as_ref().and_then(|c| c.scale.as_ref()) {
                        Some(paths) => crate::apiserver::crd::set_path(
                            &mut next,
                            &paths.spec_replicas,
                            json!(replicas),
                        ),
                        None => next["spec"]["replicas"] = json!(replicas),
                    }
                    Ok(next)
                },
            )
            .await?;
        Ok(WriteResult {
            object: scale_view(&target.def, &result.object),
            ..result
        })
    }

    fn parent(&self, target: &Target) -> Target {
        Target {
            subresource: None,
            ..target.clone()
        }
    }
}

/// Applies a patch to a Scale (`autoscaling/v1`).
pub fn patch_scale(
    scale: &Value,
    patch: &Patch,
    conflict: impl Fn() -> ApiError,
) -> Result<Value, ApiError> {
    patch.apply_to(scale, "autoscaling/v1", "Scale", conflict)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_view() {
        let deploy = json!({"metadata": {"name": "web", "namespace": "d", "resourceVersion": "7"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"},
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]}},
            "status": {"replicas": 2}});
        let scale = scale_of(&deploy);
        assert_eq!(scale["spec"]["replicas"], 3);
        assert_eq!(scale["status"]["replicas"], 2);
        assert_eq!(scale["status"]["selector"], "app=web,tier in (a,b)");
        assert_eq!(scale["metadata"]["resourceVersion"], "7");
    }
}
