//! Strategic merge patch, `application/strategic-merge-patch+json`: a JSON merge patch whose
//! lists merge according to per-field metadata ([`SchemaNode`]), plus directives.
//!
//! Semantics are upstream's (`k8s.io/apimachinery/pkg/util/strategicpatch`, applied server-side
//! with `MergeParallelList` and `IgnoreUnmatchedNulls`):
//! - maps merge key by key; `null` deletes a key; a value of another JSON type replaces;
//! - a list field with strategy `merge` merges: lists of objects by the field's merge key
//!   (matching elements merge recursively, new ones are added), lists of primitives as a set;
//!   lists without it are replaced wholesale; a field strategy `replace` replaces maps too;
//! - `$patch: replace` in a map replaces the map with the rest of the patch map; `$patch: delete`
//!   empties it; in a list element, `$patch: delete` (with the merge key) removes the matching
//!   elements and `$patch: replace` makes the list exactly the patch's other elements. `$patch:
//!   merge` is an error, as upstream (a map: "unknown patch type", a list: "merging lists cannot
//!   yet be specified");
//! - `$retainKeys: [..]` clears the map's keys it does not list (and every key the patch sets
//!   must be listed);
//! - `$setElementOrder/<list>: [..]` fixes the order of the elements it names (rules in
//!   the private `order` module);
//! - `$deleteFromPrimitiveList/<list>: [..]` removes those primitives from the list.
//!
//! Fields the schema does not know (and everything below them) merge like JSON merge patch:
//! maps merge, lists are replaced. Upstream errors (500) in the one case this differs, a map or
//! list field the Go type lacks present in both object and patch; a stored built-in object has
//! no such field. Values taken over from the patch lose their `null` members and directives
//! (upstream keeps stray directive keys, which its typed decoding then drops or rejects).

mod order;

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use super::error::json_type;
use super::schema::{PatchStrategy, SchemaNode};
use super::{PatchError, StrategicFailure, check_patch_depth, check_result_depth};
use order::ElementKind;

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList";

/// Applies the strategic merge patch `patch` to `original`, whose schema is `schema` (e.g.
/// [`super::builtin_schema`]). `patch` must be a JSON object nested at most
/// [`super::MAX_DEPTH`] deep, or `null` (an empty patch, as upstream decodes it).
pub fn apply_strategic_merge_patch(
    original: &Value,
    patch: &Value,
    schema: SchemaNode<'_>,
) -> Result<Value, PatchError> {
    check_patch_depth(patch)?;
    let patch = match patch {
        Value::Object(patch) => patch.clone(),
        Value::Null => Map::new(),
        other => {
            return Err(PatchError::NotAnObject {
                found: json_type(other),
            });
        }
    };
    let original = match original {
        Value::Object(map) => map.clone(),
        Value::Null => Map::new(),
        other => {
            return Err(fail(
                &Path::Root,
                StrategicFailure::BadArgType {
                    expected: "object",
                    found: json_type(other),
                },
            ));
        }
    };
    let merged = merge_map(original, patch, Some(schema), &Path::Root)?;
    check_result_depth(Value::Object(merged))
}

/// Where in the object we are, for error messages.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Path<'p> {
    Root,
    Field(&'p Path<'p>, &'p str),
    Element(&'p Path<'p>, &'p str, &'p Value),
}

impl Path<'_> {
    fn render(&self) -> String {
        let mut out = match self {
            Path::Root => return ".".to_owned(),
            Path::Field(parent, _) | Path::Element(parent, _, _) => match parent {
                Path::Root => String::new(),
                p => p.render(),
            },
        };
        match self {
            Path::Root => {}
            Path::Field(_, name) => {
                out.push('.');
                out.push_str(name);
            }
            Path::Element(_, key, value) => {
                let value = value
                    .as_str()
                    .map_or_else(|| value.to_string(), str::to_owned);
                out.push_str(&format!("[{key}={value}]"));
            }
        }
        out
    }
}

pub(crate) fn fail(path: &Path<'_>, failure: StrategicFailure) -> PatchError {
    PatchError::Strategic {
        path: path.render(),
        failure,
    }
}

/// Strategy, merge key and value schema of `key` (unknown fields: no strategy, no schema).
fn lookup<'s>(
    schema: Option<SchemaNode<'s>>,
    key: &str,
    path: &Path<'_>,
) -> Result<(PatchStrategy, Option<&'s str>, Option<SchemaNode<'s>>), PatchError> {
    let Some(field) = schema.and_then(|s| s.field(key)) else {
        return Ok((PatchStrategy::default(), None, None));
    };
    if field.meta.patch_strategy.invalid {
        return Err(fail(path, StrategicFailure::BadPatchStrategy));
    }
    Ok((
        field.meta.patch_strategy,
        field.meta.patch_merge_key.as_deref(),
        Some(field.node),
    ))
}

/// The schema of a list field's elements. Like upstream, a list field whose schema is not an
/// array (a Go pointer to a list) uses the field's schema for its elements.
fn element_schema(node: Option<SchemaNode<'_>>) -> Option<SchemaNode<'_>> {
    node.map(|n| n.items().unwrap_or(n))
}

/// `key` without `prefix` and its `/` (`$setElementOrder/containers` → `containers`).
fn directive_target<'k>(key: &'k str, prefix: &str) -> Option<&'k str> {
    key.strip_prefix(prefix)?.strip_prefix('/')
}

fn merge_map(
    mut original: Map<String, Value>,
    mut patch: Map<String, Value>,
    schema: Option<SchemaNode<'_>>,
    path: &Path<'_>,
) -> Result<Map<String, Value>, PatchError> {
    if let Some(directive) = patch.remove(DIRECTIVE) {
        return match directive.as_str() {
            Some("replace") => Ok(clean_map(patch)),
            Some("delete") => Ok(Map::new()),
            _ => {
                patch.insert(DIRECTIVE.to_owned(), directive.clone());
                Err(fail(
                    path,
                    StrategicFailure::BadPatchType {
                        value: directive.to_string(),
                        map: Value::Object(patch).to_string(),
                    },
                ))
            }
        };
    }
    retain_keys(&mut original, &mut patch).map_err(|f| fail(path, f))?;
    set_element_orders(&mut original, &mut patch, schema, path)?;

    for (patch_key, value) in patch {
        let (key, delete_list) = if patch_key.starts_with(DELETE_FROM_PRIMITIVE_LIST) {
            let target = directive_target(&patch_key, DELETE_FROM_PRIMITIVE_LIST)
                .ok_or_else(|| fail(path, StrategicFailure::BadPatchFormatForPrimitiveList))?;
            (target.to_owned(), true)
        } else {
            (patch_key, false)
        };
        if value.is_null() {
            original.remove(&key);
            continue;
        }
        let field_path = Path::Field(path, &key);
        let Some(current) = original.get_mut(&key) else {
            if !delete_list && let Some(v) = clean(value) {
                original.insert(key, v);
            }
            continue;
        };
        match (current, value) {
            (Value::Object(cur), Value::Object(p)) => {
                let (strategy, _, node) = lookup(schema, &key, &field_path)?;
                *cur = if strategy.replace {
                    clean_map(p)
                } else {
                    merge_map(std::mem::take(cur), p, node, &field_path)?
                };
            }
            (Value::Array(cur), Value::Array(p)) => {
                let (strategy, merge_key, node) = lookup(schema, &key, &field_path)?;
                let items = element_schema(node);
                let list = std::mem::take(cur);
                *cur = if strategy.merge || delete_list {
                    merge_list(list, p, merge_key, items, delete_list, &field_path)?
                } else {
                    clean_list(p)
                };
            }
            (current, value) => {
                // Scalars of one type are replaced as they are; a value of another type is
                // taken over cleaned (and a `$patch` map replacing a scalar removes it).
                if same_kind(current, &value) {
                    *current = value;
                } else if !delete_list {
                    match clean(value) {
                        Some(v) => *current = v,
                        None => {
                            original.remove(&key);
                        }
                    }
                }
            }
        }
    }
    Ok(original)
}

/// Whether two scalars have the same JSON (Go) type; a scalar of the same type is replaced as is.
fn same_kind(a: &Value, b: &Value) -> bool {
    !a.is_object() && !a.is_array() && std::mem::discriminant(a) == std::mem::discriminant(b)
}

/// `$retainKeys`: drop the keys of `original` it does not list.
fn retain_keys(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
) -> Result<(), StrategicFailure> {
    let Some(retain) = patch.remove(RETAIN_KEYS) else {
        return Ok(());
    };
    let Value::Array(list) = retain else {
        return Err(StrategicFailure::BadPatchFormatForRetainKeys);
    };
    let keep: HashSet<&str> = list.iter().filter_map(Value::as_str).collect();
    for (k, v) in patch.iter() {
        let exempt = v.is_null()
            || k.starts_with(DELETE_FROM_PRIMITIVE_LIST)
            || k.starts_with(SET_ELEMENT_ORDER);
        if !exempt && !keep.contains(k.as_str()) {
            return Err(StrategicFailure::BadPatchFormatForRetainKeys);
        }
    }
    original.retain(|k, _| keep.contains(k.as_str()));
    Ok(())
}

/// Processes each `$setElementOrder/<list>` with its list (upstream's `mergePatchIntoOriginal`).
fn set_element_orders(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
    schema: Option<SchemaNode<'_>>,
    path: &Path<'_>,
) -> Result<(), PatchError> {
    let directives: Vec<String> = patch
        .keys()
        .filter(|k| k.starts_with(SET_ELEMENT_ORDER))
        .cloned()
        .collect();
    for directive in directives {
        let order = match patch.remove(&directive) {
            Some(Value::Array(order)) => order,
            other => {
                let found = other.as_ref().map_or("nothing", json_type);
                return Err(fail(
                    path,
                    StrategicFailure::BadArgType {
                        expected: "array",
                        found,
                    },
                ));
            }
        };
        let key = directive_target(&directive, SET_ELEMENT_ORDER)
            .ok_or_else(|| fail(path, StrategicFailure::BadPatchFormatForSetElementOrderList))?
            .to_owned();
        let field_path = Path::Field(path, &key);
        let as_list = |v: Option<Value>| -> Result<Option<Vec<Value>>, PatchError> {
            match v {
                None => Ok(None),
                Some(Value::Array(a)) => Ok(Some(a)),
                Some(other) => Err(fail(
                    &field_path,
                    StrategicFailure::BadArgType {
                        expected: "array",
                        found: json_type(&other),
                    },
                )),
            }
        };
        let server = as_list(original.remove(&key))?;
        let patch_list = as_list(patch.remove(&key))?;
        let (strategy, merge_key, node) = lookup(schema, &key, &field_path)?;
        let merge_key = merge_key.filter(|k| !k.is_empty());
        order::validate_against_order(
            patch_list.as_deref().unwrap_or(&[]),
            &order,
            merge_key,
            &field_path,
        )?;

        let kind = order::element_kind(
            &[
                server.as_deref().unwrap_or(&[]),
                patch_list.as_deref().unwrap_or(&[]),
            ],
            &field_path,
        )?;
        let keyed = merge_key.filter(|_| kind == Some(ElementKind::Object));
        let mut server_order = match &server {
            Some(s) if kind.is_some() => order::identities(s, keyed, &field_path)?,
            _ => Vec::new(),
        };
        if let (Some(key), Some(p), true) = (keyed, &patch_list, strategy.merge) {
            server_order = order::aliased_server_order(server_order, p, key);
        }
        let merged = match (server, patch_list) {
            (Some(s), None) => s,
            (None, Some(p)) => clean_list(p),
            (Some(s), Some(p)) if strategy.merge => {
                merge_list(s, p, merge_key, element_schema(node), false, &field_path)?
            }
            (Some(_), Some(p)) => clean_list(p),
            (None, None) => continue,
        };
        // Upstream fails ("no elements in any of the given slices") when both lists are empty;
        // an empty list is the obvious result.
        if kind.is_none() {
            original.insert(key, Value::Array(merged));
            continue;
        }
        let order_ids = order::identities(&order, keyed, &field_path)?;
        let (named, rest) = order::partition(merged, &order_ids, keyed, &field_path)?;
        let list = order::normalize_element_order(
            named,
            rest,
            &order_ids,
            &server_order,
            keyed,
            &field_path,
        )?;
        original.insert(key, Value::Array(list));
    }
    Ok(())
}

/// Merges a list with strategy `merge` (or a `$deleteFromPrimitiveList` list).
fn merge_list(
    server: Vec<Value>,
    patch: Vec<Value>,
    merge_key: Option<&str>,
    items: Option<SchemaNode<'_>>,
    delete_list: bool,
    path: &Path<'_>,
) -> Result<Vec<Value>, PatchError> {
    if server.is_empty() && patch.is_empty() {
        return Ok(server);
    }
    let kind = order::element_kind(&[&server, &patch], path)?;
    if kind != Some(ElementKind::Object) {
        if delete_list {
            return Ok(order::delete_from(server, &patch));
        }
        let server_order = order::identities(&server, None, path)?;
        let patch_order = order::identities(&patch, None, path)?;
        let mut merged = server;
        merged.extend(patch);
        let merged = order::dedupe(merged);
        let (named, rest) = order::partition(merged, &patch_order, None, path)?;
        return order::normalize_element_order(
            named,
            rest,
            &patch_order,
            &server_order,
            None,
            path,
        );
    }
    let Some(key) = merge_key.filter(|k| !k.is_empty()) else {
        return Err(fail(path, StrategicFailure::NoMergeKeyDeclared));
    };
    let (server, patch) = special_elements(server, patch, key, path)?;
    let server_order = order::identities(&server, Some(key), path)?;
    let patch_order = order::identities(&patch, Some(key), path)?;

    // Merge each patch element into the first server element with its key, or append it.
    let mut merged = server;
    let mut index: HashMap<String, usize> = HashMap::new();
    for (i, id) in server_order.iter().enumerate() {
        index.entry(id.clone()).or_insert(i);
    }
    for (element, id) in patch.into_iter().zip(&patch_order) {
        let Value::Object(element) = element else {
            continue;
        };
        match index.get(id) {
            Some(&i) => {
                let key_value = element.get(key).cloned().unwrap_or(Value::Null);
                let element_path = Path::Element(path, key, &key_value);
                let Value::Object(current) = std::mem::take(&mut merged[i]) else {
                    continue;
                };
                merged[i] = Value::Object(merge_map(current, element, items, &element_path)?);
            }
            None => {
                index.insert(id.clone(), merged.len());
                merged.push(Value::Object(clean_map(element)));
            }
        }
    }
    let (named, rest) = order::partition(merged, &patch_order, Some(key), path)?;
    order::normalize_element_order(named, rest, &patch_order, &server_order, Some(key), path)
}

/// Applies the `$patch` elements of a list of objects: returns the server list after
/// `$patch: delete`s (or the patch elements, for `$patch: replace`) and the remaining patch.
fn special_elements(
    mut server: Vec<Value>,
    patch: Vec<Value>,
    key: &str,
    path: &Path<'_>,
) -> Result<(Vec<Value>, Vec<Value>), PatchError> {
    let mut plain = Vec::with_capacity(patch.len());
    let mut deleted = HashSet::new();
    let mut replace = false;
    for element in patch {
        let Some(directive) = element.get(DIRECTIVE) else {
            plain.push(element);
            continue;
        };
        match directive.as_str() {
            Some("delete") => {
                deleted.insert(order::canonical(order::key_value(&element, key, path)?));
            }
            Some("replace") => replace = true,
            Some("merge") => return Err(fail(path, StrategicFailure::MergeDirectiveInList)),
            _ => {
                return Err(fail(
                    path,
                    StrategicFailure::BadPatchType {
                        value: directive.to_string(),
                        map: element.to_string(),
                    },
                ));
            }
        }
    }
    if !deleted.is_empty() {
        server.retain(|e| {
            e.get(key)
                .is_none_or(|v| !deleted.contains(&order::canonical(v)))
        });
    }
    if replace {
        return Ok((clean_list(plain), Vec::new()));
    }
    Ok((server, plain))
}

/// A value taken over from the patch: `None` if it is a `$patch` map itself; otherwise without
/// `null` members, `$patch` maps or directive keys, at any depth.
fn clean(value: Value) -> Option<Value> {
    match value {
        Value::Object(map) if map.contains_key(DIRECTIVE) => None,
        Value::Object(map) => Some(Value::Object(clean_map(map))),
        Value::Array(list) => Some(Value::Array(clean_list(list))),
        other => Some(other),
    }
}

fn clean_map(map: Map<String, Value>) -> Map<String, Value> {
    map.into_iter()
        .filter(|(k, v)| !v.is_null() && !is_directive_key(k))
        .filter_map(|(k, v)| clean(v).map(|v| (k, v)))
        .collect()
}

fn clean_list(list: Vec<Value>) -> Vec<Value> {
    list.into_iter().filter_map(clean).collect()
}

fn is_directive_key(key: &str) -> bool {
    key == DIRECTIVE
        || key == RETAIN_KEYS
        || key.starts_with(SET_ELEMENT_ORDER)
        || key.starts_with(DELETE_FROM_PRIMITIVE_LIST)
}
