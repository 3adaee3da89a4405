//! The bridge between client-side and server-side apply for kubectl's default manager
//! (upstream's `lastAppliedManager` and `lastAppliedUpdater`): a server-side apply by
//! `kubectl` may take over, without `--force-conflicts`, the fields whose live values are still
//! those of the `kubectl.kubernetes.io/last-applied-configuration` annotation; and while that
//! annotation exists, `kubectl`'s applies keep it up to date.

use serde_json::{Value, json};

use super::fieldset::FieldSet;
use super::typed::{Shape, compare, to_field_set};

/// The client-side apply annotation.
pub const ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The manager for which both rules hold.
pub const KUBECTL: &str = "kubectl";

fn annotation(object: &Value) -> Option<&str> {
    object
        .pointer("/metadata/annotations")?
        .get(ANNOTATION)?
        .as_str()
        .filter(|s| !s.is_empty())
}

/// The fields a `kubectl` apply may take over from other managers: those of the last-applied
/// configuration whose live value is the same. `None` without a usable annotation.
pub fn allowed_conflicts(live: &Value, api_version: &str, shape: Shape<'_>) -> Option<FieldSet> {
    let last: Value = serde_json::from_str(annotation(live)?).ok()?;
    if last.get("apiVersion").and_then(Value::as_str) != Some(api_version) {
        return None;
    }
    let cmp = compare(&last, live, shape);
    Some(
        to_field_set(&last, shape)
            .difference(&cmp.modified)
            .difference(&cmp.added)
            .difference(&cmp.removed),
    )
}

/// Rewrites the annotation of `merged` (when it has one) to the applied `config`, without
/// the annotation itself.
pub fn refresh(merged: &mut Value, config: &Value) {
    if annotation(merged).is_none() {
        return;
    }
    let mut last = config.clone();
    if let Some(annotations) = last
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        annotations.remove(ANNOTATION);
    }
    merged["metadata"]["annotations"][ANNOTATION] = json!(last.to_string());
}
