//! JSON merge patch (RFC 7386), `application/merge-patch+json`.
//!
//! An object patch merges into an object member by member; `null` deletes a member; anything
//! else (arrays included) replaces the target. Upstream applies it with evanphx/json-patch v4,
//! which differs from the RFC in one respect we reproduce: a value taken over from the patch has
//! its `null` object members dropped, also inside arrays (`{"a":[{"b":null}]}` gives `[{}]`, not
//! `[{"b":null}]`) — except where an array replaces an existing object. For the apiserver only
//! object patches are valid ([`apply_merge_patch`]); a `null`, scalar or array patch is a 400.

use serde_json::{Map, Value};

use super::error::json_type;
use super::{PatchError, check_patch_depth, check_result_depth, parse};

/// Applies the merge patch `body` to `original` as the apiserver does: the body must be a JSON
/// object, nested at most [`super::MAX_DEPTH`] deep.
pub fn apply_merge_patch(original: &Value, body: &[u8]) -> Result<Value, PatchError> {
    let patch = parse(body)?;
    if !patch.is_object() {
        return Err(PatchError::NotAnObject {
            found: json_type(&patch),
        });
    }
    check_patch_depth(&patch)?;
    check_result_depth(merge_patch(original, &patch))
}

/// RFC 7386 `MergePatch(target, patch)` with upstream's null pruning (see the module doc).
pub fn merge_patch(target: &Value, patch: &Value) -> Value {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            let mut doc = target.clone();
            merge_docs(&mut doc, patch.clone());
            Value::Object(doc)
        }
        (_, patch) => pruned(patch.clone()),
    }
}

fn merge_docs(doc: &mut Map<String, Value>, patch: Map<String, Value>) {
    for (key, value) in patch {
        if value.is_null() {
            doc.remove(&key);
            continue;
        }
        match doc.get_mut(&key) {
            Some(Value::Object(cur)) => match value {
                Value::Object(p) => merge_docs(cur, p),
                // Upstream: an existing object replaced by a non-object keeps it as sent.
                other => {
                    doc.insert(key, other);
                }
            },
            _ => {
                doc.insert(key, pruned(value));
            }
        }
    }
}

/// `value` without `null` object members, at any depth (array elements that are `null` stay).
fn pruned(mut value: Value) -> Value {
    prune(&mut value);
    value
}

fn prune(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(prune);
        }
        Value::Array(items) => items.iter_mut().for_each(prune),
        _ => {}
    }
}

/// A merge patch that turns `from` into `to` (objects diffed member by member, anything else
/// replaced); `merge_patch(from, &diff(from, to)) == to` when `to` holds no `null`s.
pub fn diff(from: &Value, to: &Value) -> Value {
    match (from, to) {
        (Value::Object(a), Value::Object(b)) => {
            let mut patch = Map::new();
            for key in a.keys().filter(|k| !b.contains_key(*k)) {
                patch.insert(key.clone(), Value::Null);
            }
            for (key, new) in b {
                match a.get(key) {
                    Some(old) if old == new => {}
                    Some(old @ Value::Object(_)) if new.is_object() => {
                        patch.insert(key.clone(), diff(old, new));
                    }
                    _ => {
                        patch.insert(key.clone(), new.clone());
                    }
                }
            }
            Value::Object(patch)
        }
        _ => to.clone(),
    }
}
