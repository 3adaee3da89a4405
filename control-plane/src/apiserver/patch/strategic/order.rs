//! List element identity and order: which elements a patch names, and where they end up.
//!
//! Upstream's rule (`normalizeElementOrder` in `strategicpatch`): the elements the patch lists
//! (or its `$setElementOrder` lists) take the patch's order; the others keep the server's order;
//! the two sequences are then interleaved, an element of the server's going first only when both
//! it and the next patch element are in the server list and it came first there. So a new
//! element without `$setElementOrder` lands before the server elements that follow it, and
//! `$setElementOrder` fixes the order of everything it names. Identities are the canonical JSON
//! of the merge key value (lists of objects) or of the element (lists of primitives), looked up
//! in hash maps: linear work where upstream's is quadratic.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use super::{Path, fail};
use crate::apiserver::patch::error::json_type;
use crate::apiserver::patch::{PatchError, StrategicFailure};

/// JSON type of list elements, as upstream distinguishes them (Go types: int64 ≠ float64).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ElementKind {
    Null,
    Bool,
    Int,
    Float,
    String,
    Object,
}

impl ElementKind {
    fn of(v: &Value) -> Option<Self> {
        Some(match v {
            Value::Null => ElementKind::Null,
            Value::Bool(_) => ElementKind::Bool,
            Value::Number(n) if n.is_f64() => ElementKind::Float,
            Value::Number(_) => ElementKind::Int,
            Value::String(_) => ElementKind::String,
            Value::Object(_) => ElementKind::Object,
            Value::Array(_) => return None,
        })
    }
}

/// The one element kind of the given lists together; `None` if they are all empty.
pub(super) fn element_kind(
    lists: &[&[Value]],
    path: &Path<'_>,
) -> Result<Option<ElementKind>, PatchError> {
    let mut kind = None;
    for v in lists.iter().flat_map(|l| l.iter()) {
        let Some(k) = ElementKind::of(v) else {
            return Err(fail(path, StrategicFailure::NoListOfLists));
        };
        match kind {
            None => kind = Some(k),
            Some(prev) if prev != k => return Err(fail(path, StrategicFailure::MixedElementTypes)),
            Some(_) => {}
        }
    }
    Ok(kind)
}

/// Canonical text of a value: equal texts ⇔ equal JSON values (for the values used as keys).
pub(super) fn canonical(v: &Value) -> String {
    v.to_string()
}

/// The merge key value of an object element, checked.
pub(super) fn key_value<'v>(
    element: &'v Value,
    key: &str,
    path: &Path<'_>,
) -> Result<&'v Value, PatchError> {
    let Value::Object(map) = element else {
        return Err(fail(
            path,
            StrategicFailure::BadArgType {
                expected: "object",
                found: json_type(element),
            },
        ));
    };
    map.get(key).ok_or_else(|| {
        fail(
            path,
            StrategicFailure::NoMergeKey {
                element: element.to_string(),
                key: key.to_owned(),
            },
        )
    })
}

/// The identity of each element: its merge key value, or the element itself without a key.
pub(super) fn identities(
    list: &[Value],
    key: Option<&str>,
    path: &Path<'_>,
) -> Result<Vec<String>, PatchError> {
    list.iter()
        .map(|e| match key {
            Some(key) => key_value(e, key, path).map(canonical),
            None => Ok(canonical(e)),
        })
        .collect()
}

/// First position of each identity.
fn positions(ids: &[String]) -> HashMap<&str, usize> {
    let mut map = HashMap::with_capacity(ids.len());
    for (i, id) in ids.iter().enumerate() {
        map.entry(id.as_str()).or_insert(i);
    }
    map
}

/// Splits `merged` into the elements named by `named` (identities) and the rest, keeping order.
pub(super) fn partition(
    merged: Vec<Value>,
    named: &[String],
    key: Option<&str>,
    path: &Path<'_>,
) -> Result<(Vec<Value>, Vec<Value>), PatchError> {
    let named: HashSet<&str> = named.iter().map(String::as_str).collect();
    let ids = identities(&merged, key, path)?;
    let (mut in_patch, mut server_only) = (Vec::new(), Vec::new());
    for (element, id) in merged.into_iter().zip(ids) {
        if named.contains(id.as_str()) {
            in_patch.push(element);
        } else {
            server_only.push(element);
        }
    }
    Ok((in_patch, server_only))
}

/// Upstream's `normalizeElementOrder`: sorts the patch elements by `patch_order`, the server-only
/// ones by `server_order`, and interleaves them.
pub(super) fn normalize_element_order(
    patch_items: Vec<Value>,
    server_only: Vec<Value>,
    patch_order: &[String],
    server_order: &[String],
    key: Option<&str>,
    path: &Path<'_>,
) -> Result<Vec<Value>, PatchError> {
    let right = sort_by_order(patch_items, patch_order, key, path)?;
    let left = sort_by_order(server_only, server_order, key, path)?;
    let server = positions(server_order);
    let left_pos = positions_of(&left, key, &server);
    let right_pos = positions_of(&right, key, &server);
    let mut out = Vec::with_capacity(left.len() + right.len());
    let (mut li, mut ri) = (0, 0);
    let mut left = left.into_iter();
    let mut right = right.into_iter();
    loop {
        let take_left = match (left_pos.get(li), right_pos.get(ri)) {
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
            // A server element goes first only if both are known to the server and it came first.
            (Some(l), Some(r)) => matches!((l, r), (Some(l), Some(r)) if l < r),
        };
        let next = if take_left {
            li += 1;
            left.next()
        } else {
            ri += 1;
            right.next()
        };
        out.extend(next);
    }
    Ok(out)
}

/// Position in the server list of each element (by identity; elements without one: `None`).
fn positions_of(
    list: &[Value],
    key: Option<&str>,
    server: &HashMap<&str, usize>,
) -> Vec<Option<usize>> {
    list.iter()
        .map(|e| {
            let id = match key {
                Some(k) => e.get(k).map(canonical),
                None => Some(canonical(e)),
            };
            id.and_then(|id| server.get(id.as_str()).copied())
        })
        .collect()
}

/// Upstream's `normalizeSliceOrder`: a stable sort by position in `order` (elements it does not
/// name go last), with `$patch: delete` elements moved to the end.
fn sort_by_order(
    items: Vec<Value>,
    order: &[String],
    key: Option<&str>,
    path: &Path<'_>,
) -> Result<Vec<Value>, PatchError> {
    let (mut keep, mut deletes) = (Vec::with_capacity(items.len()), Vec::new());
    if key.is_some() {
        identities(&items, key, path)?;
        for item in items {
            if item.get("$patch").and_then(Value::as_str) == Some("delete") {
                deletes.push(item);
            } else {
                keep.push(item);
            }
        }
    } else {
        keep = items;
    }
    let pos = positions(order);
    let ids = identities(&keep, key, path)?;
    let mut ranked: Vec<(usize, Value)> = keep
        .into_iter()
        .zip(ids)
        .map(|(item, id)| (pos.get(id.as_str()).copied().unwrap_or(usize::MAX), item))
        .collect();
    ranked.sort_by_key(|(rank, _)| *rank);
    let mut out: Vec<Value> = ranked.into_iter().map(|(_, v)| v).collect();
    out.extend(deletes);
    Ok(out)
}

/// Upstream's `validatePatchWithSetOrderList`: the patch list's elements (ignoring deletions and
/// directive elements) must appear in the `$setElementOrder` list, in the same relative order.
pub(super) fn validate_against_order(
    patch_list: &[Value],
    order: &[Value],
    key: Option<&str>,
    path: &Path<'_>,
) -> Result<(), PatchError> {
    if order.is_empty() || patch_list.is_empty() {
        return Ok(());
    }
    let mut patch_ids = Vec::new();
    for item in patch_list {
        let directive = item.get("$patch");
        if key.is_some() && !item.is_object() {
            return Err(fail(
                path,
                StrategicFailure::BadArgType {
                    expected: "object",
                    found: json_type(item),
                },
            ));
        }
        if directive.is_some() {
            continue;
        }
        patch_ids.push(match key {
            Some(k) => canonical(key_value(item, k, path)?),
            None => canonical(item),
        });
    }
    let mut p = 0;
    for entry in order {
        if p == patch_ids.len() {
            break;
        }
        let id = match key {
            Some(k) => canonical(key_value(entry, k, path)?),
            None => canonical(entry),
        };
        if id == patch_ids[p] {
            p += 1;
        }
    }
    if p < patch_ids.len() {
        return Err(fail(path, StrategicFailure::SetElementOrderMismatch));
    }
    Ok(())
}

/// The server order upstream actually uses for `$setElementOrder` when the list also merges a
/// patch list of objects. Upstream keeps the server list's Go slice while the merge deletes
/// (`$patch: delete` moves the later elements left, in place) and appends (new elements land in
/// the slice's spare room) through the same backing array, then reads the order from that array
/// at the server list's length. Its tests pin the outcome (server `[1,2,4]`, order `[2,3]`,
/// patch `[3, {$patch: delete, name: 1}]` gives `[2,4,3]`, not `[2,3,4]`), so we rebuild what it
/// reads: the surviving server elements, then as many new patch elements as fit in the server
/// list's length. (The stale slots after those are never the first occurrence of anything looked
/// up, and the slice's capacity does not matter: writes past its length are never read.)
pub(super) fn aliased_server_order(server: Vec<String>, patch: &[Value], key: &str) -> Vec<String> {
    let n = server.len();
    let mut deleted = HashSet::new();
    let mut replace = false;
    for element in patch {
        let Some(directive) = element.get("$patch") else {
            continue;
        };
        match (directive.as_str(), element.get(key)) {
            (Some("delete"), Some(id)) => {
                deleted.insert(canonical(id));
            }
            (Some("replace"), _) => replace = true,
            // The merge itself fails on these.
            _ => return server,
        }
    }
    let mut view: Vec<String> = server
        .into_iter()
        .filter(|id| !deleted.contains(id))
        .collect();
    if replace {
        return view;
    }
    let mut present: HashSet<String> = view.iter().cloned().collect();
    for element in patch.iter().filter(|e| e.get("$patch").is_none()) {
        if view.len() >= n {
            break;
        }
        let Some(id) = element.get(key).map(canonical) else {
            break;
        };
        if present.insert(id.clone()) {
            view.push(id);
        }
    }
    view
}

/// The distinct elements of a list of primitives, first occurrences first.
pub(super) fn dedupe(list: Vec<Value>) -> Vec<Value> {
    let mut seen = HashSet::new();
    list.into_iter()
        .filter(|v| seen.insert(canonical(v)))
        .collect()
}

/// `current` without the elements equal to one of `to_delete`.
pub(super) fn delete_from(current: Vec<Value>, to_delete: &[Value]) -> Vec<Value> {
    let gone: HashSet<String> = to_delete.iter().map(canonical).collect();
    current
        .into_iter()
        .filter(|v| !gone.contains(&canonical(v)))
        .collect()
}
