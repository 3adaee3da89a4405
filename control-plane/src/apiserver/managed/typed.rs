//! Objects read through their schema, as structured-merge-diff reads them: the field set of a
//! value, the comparison of two values (added / modified / removed paths), the merge of an
//! apply configuration into a live object, and the removal of paths.
//!
//! Merge semantics come from the schema ([`Shape`]): maps and structs are granular unless
//! `x-kubernetes-map-type: atomic` (on the field or the type); lists follow
//! `x-kubernetes-list-type` (or, for built-in types without it, their patch strategy, see
//! [`FieldMeta::effective_list_type`]): `atomic` lists are one value, `set` lists are merged
//! by item value, `map` lists by their `x-kubernetes-list-map-keys`. Without a schema (custom
//! resources today) everything is read like upstream's deduced schema: granular maps, atomic
//! lists, and every map key a member of the set.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use super::fieldset::{FieldSet, Path, PathElement};
use crate::apiserver::patch::{FieldMeta, ListType, MapType, NodeKind, SchemaNode};

/// Where a value sits in the schema: its node (`None` = no schema: deduced) and the metadata
/// of the field that holds it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Shape<'a> {
    node: Option<SchemaNode<'a>>,
    meta: Option<&'a FieldMeta>,
}

/// How a value merges.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Form {
    /// One value: scalars, atomic maps and lists, and anything whose type does not fit.
    Leaf,
    /// A granular map or struct.
    Map,
    /// A list of scalars merged by value.
    Set,
    /// A list of objects merged by key fields.
    Assoc(Vec<String>),
}

impl<'a> Shape<'a> {
    /// The deduced shape (no schema).
    pub fn deduced() -> Self {
        Shape::default()
    }

    /// The shape of an object of the schema `node`.
    pub fn of(node: SchemaNode<'a>) -> Self {
        Shape {
            node: Some(node),
            meta: None,
        }
    }

    /// Whether a schema describes the value (rather than the deduced shape).
    pub fn has_schema(&self) -> bool {
        self.known().is_some()
    }

    fn known(&self) -> Option<SchemaNode<'a>> {
        self.node.filter(|n| n.kind() != NodeKind::Any)
    }

    fn form(&self, value: &Value) -> Form {
        match value {
            Value::Object(_) => match self.known() {
                None => Form::Map,
                Some(node) if matches!(node.kind(), NodeKind::Struct | NodeKind::Map) => {
                    let atomic = |m: Option<&FieldMeta>| {
                        m.is_some_and(|m| m.map_type == Some(MapType::Atomic))
                    };
                    if atomic(self.meta) || atomic(Some(node.type_meta())) {
                        Form::Leaf
                    } else {
                        Form::Map
                    }
                }
                Some(_) => Form::Leaf,
            },
            Value::Array(_) => match self.known() {
                Some(node) if node.kind() == NodeKind::Array => {
                    let meta = match self.meta {
                        Some(m) if m.list_type.is_some() || m.patch_strategy.merge => m,
                        _ => node.type_meta(),
                    };
                    match meta.effective_list_type() {
                        (ListType::Atomic, _) => Form::Leaf,
                        (ListType::Set, _) => Form::Set,
                        (ListType::Map, keys) if keys.is_empty() => Form::Leaf,
                        (ListType::Map, keys) => Form::Assoc(keys),
                    }
                }
                _ => Form::Leaf,
            },
            _ => Form::Leaf,
        }
    }

    /// The shape of a map entry, and whether it is a named struct field (as opposed to a key of
    /// a map, which is always a member of a field set).
    fn field(&self, name: &str) -> (Shape<'a>, bool) {
        let Some(node) = self.known() else {
            return (Shape::deduced(), false);
        };
        let is_field = node.properties().any(|(n, _)| n == name);
        match node.field(name) {
            Some(f) => (
                Shape {
                    node: Some(f.node),
                    meta: Some(f.meta),
                },
                is_field,
            ),
            None => (Shape::deduced(), false),
        }
    }

    fn item(&self) -> Shape<'a> {
        Shape {
            node: self.known().and_then(|n| n.items()),
            meta: None,
        }
    }
}

/// The path element of a list item. Key fields missing from an item take their upstream
/// default where there is one (`protocol: TCP` of ports); others are left out of the key.
fn item_element(form: &Form, item: &Value) -> PathElement {
    match form {
        Form::Assoc(keys) => {
            let fields: Vec<(String, Value)> = keys
                .iter()
                .filter_map(|k| match item.get(k) {
                    Some(v) if !v.is_null() => Some((k.clone(), v.clone())),
                    _ if k == "protocol" => Some((k.clone(), Value::String("TCP".into()))),
                    _ => None,
                })
                .collect();
            PathElement::key(&fields)
        }
        _ => PathElement::value(item),
    }
}

fn items_by_element<'v>(form: &Form, list: &'v [Value]) -> Vec<(PathElement, &'v Value)> {
    list.iter().map(|i| (item_element(form, i), i)).collect()
}

fn empty(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => true,
        Some(Value::Object(m)) => m.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        Some(_) => false,
    }
}

/// The field set of a value (upstream `ToFieldSet`): leaves, atomic values, list items and map
/// keys are members; struct fields only when their value is a leaf, null or an empty object.
pub fn to_field_set(value: &Value, shape: Shape<'_>) -> FieldSet {
    let mut set = FieldSet::new();
    walk_set(value, shape, &mut Vec::new(), &mut set);
    set
}

fn walk_set(value: &Value, shape: Shape<'_>, path: &mut Path, out: &mut FieldSet) {
    let form = shape.form(value);
    match (&form, value) {
        (Form::Map, Value::Object(map)) => {
            for (key, child) in map {
                let (child_shape, is_field) = shape.field(key);
                path.push(PathElement::Field(key.clone()));
                walk_set(child, child_shape, path, out);
                let empty_object = child.as_object().is_some_and(Map::is_empty);
                if child.is_null() || empty_object || !is_field {
                    out.insert(path);
                }
                path.pop();
            }
        }
        (Form::Set | Form::Assoc(_), Value::Array(list)) => {
            for (pe, item) in items_by_element(&form, list) {
                path.push(pe);
                walk_set(item, shape.item(), path, out);
                out.insert(path);
                path.pop();
            }
        }
        _ => out.insert(path),
    }
}

/// The paths of `value` its schema does not declare (upstream: "field not declared in
/// schema"), in upstream's notation. Objects without a schema and maps accept any key.
pub fn undeclared_fields(value: &Value, shape: Shape<'_>) -> Vec<String> {
    let mut out = Vec::new();
    walk_undeclared(value, shape, &mut Vec::new(), &mut out);
    out
}

fn walk_undeclared(value: &Value, shape: Shape<'_>, path: &mut Path, out: &mut Vec<String>) {
    let Some(node) = shape.known() else {
        return;
    };
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                path.push(PathElement::Field(key.clone()));
                if node.kind() == NodeKind::Struct && node.field(key).is_none() {
                    out.push(super::fieldset::path_string(path));
                } else {
                    walk_undeclared(child, shape.field(key).0, path, out);
                }
                path.pop();
            }
        }
        Value::Array(list) => {
            let form = shape.form(value);
            for (i, item) in list.iter().enumerate() {
                path.push(match form {
                    Form::Set | Form::Assoc(_) => item_element(&form, item),
                    _ => PathElement::Index(i),
                });
                walk_undeclared(item, shape.item(), path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

/// What changed between two values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Comparison {
    /// Paths present only in the new value (with every path below them).
    pub added: FieldSet,
    /// Leaves present in both with different values.
    pub modified: FieldSet,
    /// Paths present only in the old value (with every path below them).
    pub removed: FieldSet,
}

impl Comparison {
    /// Added or modified.
    pub fn changed(&self) -> FieldSet {
        self.added.union(&self.modified)
    }

    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.modified.is_empty() && self.removed.is_empty()
    }
}

/// Compares `old` with `new` (upstream `Compare`). Nulls count as absent.
pub fn compare(old: &Value, new: &Value, shape: Shape<'_>) -> Comparison {
    let mut out = Comparison::default();
    walk_compare(Some(old), Some(new), shape, &mut Vec::new(), &mut out);
    out
}

fn walk_compare(
    lhs: Option<&Value>,
    rhs: Option<&Value>,
    shape: Shape<'_>,
    path: &mut Path,
    out: &mut Comparison,
) {
    let lhs = lhs.filter(|v| !v.is_null());
    let rhs = rhs.filter(|v| !v.is_null());
    let (form, other) = match (lhs, rhs) {
        (None, None) => return,
        (_, Some(r)) => (shape.form(r), lhs.map(|l| shape.form(l))),
        (Some(l), None) => (shape.form(l), None),
    };
    let both_empty = empty(lhs) && empty(rhs);
    if form == Form::Leaf || other.is_some_and(|o| o != form) || both_empty {
        match (lhs, rhs) {
            (None, Some(_)) => out.added.insert(path),
            (Some(_), None) => out.removed.insert(path),
            (Some(l), Some(r)) if l != r => out.modified.insert(path),
            _ => {}
        }
        return;
    }
    match form {
        Form::Map => {
            let lm = lhs.and_then(Value::as_object);
            let rm = rhs.and_then(Value::as_object);
            let keys: BTreeSet<&String> =
                lm.iter().chain(rm.iter()).flat_map(|m| m.keys()).collect();
            for key in keys {
                let (child_shape, _) = shape.field(key);
                path.push(PathElement::Field(key.clone()));
                walk_compare(
                    lm.and_then(|m| m.get(key)),
                    rm.and_then(|m| m.get(key)),
                    child_shape,
                    path,
                    out,
                );
                path.pop();
            }
        }
        _ => {
            let index = |v: Option<&Value>| -> BTreeMap<PathElement, Value> {
                v.and_then(Value::as_array)
                    .map(|l| {
                        items_by_element(&form, l)
                            .into_iter()
                            .map(|(pe, i)| (pe, i.clone()))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let (li, ri) = (index(lhs), index(rhs));
            let keys: BTreeSet<&PathElement> = li.keys().chain(ri.keys()).collect();
            for pe in keys {
                path.push(pe.clone());
                walk_compare(li.get(pe), ri.get(pe), shape.item(), path, out);
                path.pop();
            }
        }
    }
    if lhs.is_none() {
        out.added.insert(path);
    } else if rhs.is_none() {
        out.removed.insert(path);
    }
}

/// Merges an apply configuration into a live value (upstream `Merge`): granular maps merge
/// key by key, set and associative lists item by item (live items the configuration does not
/// name keep their place), everything else is replaced by the configuration.
pub fn merge(live: &Value, config: &Value, shape: Shape<'_>) -> Value {
    let form = shape.form(config);
    if form != shape.form(live) {
        return config.clone();
    }
    match (&form, live, config) {
        (Form::Map, Value::Object(lm), Value::Object(cm)) => {
            let mut out = lm.clone();
            for (key, cv) in cm {
                let merged = match lm.get(key) {
                    Some(lv) => merge(lv, cv, shape.field(key).0),
                    None => cv.clone(),
                };
                out.insert(key.clone(), merged);
            }
            Value::Object(out)
        }
        (Form::Set | Form::Assoc(_), Value::Array(ll), Value::Array(cl)) => {
            let lhs = items_by_element(&form, ll);
            let rhs = items_by_element(&form, cl);
            let live_by: BTreeMap<&PathElement, &Value> =
                lhs.iter().map(|(p, v)| (p, *v)).collect();
            let in_config: BTreeSet<&PathElement> = rhs.iter().map(|(p, _)| p).collect();
            let item_shape = shape.item();
            let emit = |(pe, cv): &(PathElement, &Value)| match live_by.get(pe) {
                Some(lv) => merge(lv, cv, item_shape),
                None => (*cv).clone(),
            };
            let mut out = Vec::new();
            let mut next = 0;
            for (pe, lv) in &lhs {
                if in_config.contains(pe) {
                    if let Some(item) = rhs.get(next) {
                        out.push(emit(item));
                        next += 1;
                    }
                } else {
                    out.push((*lv).clone());
                }
            }
            out.extend(rhs[next.min(rhs.len())..].iter().map(emit));
            Value::Array(out)
        }
        _ => config.clone(),
    }
}

/// Removes the members of `set` from `value`. A map or list that removal leaves empty is
/// removed too (an emptied `labels` disappears like an omitted Go map).
pub fn remove_paths(value: &mut Value, set: &FieldSet, shape: Shape<'_>) {
    let form = shape.form(value);
    match (&form, value) {
        (Form::Map, Value::Object(map)) => {
            for (pe, child_set) in set.children() {
                let PathElement::Field(key) = pe else {
                    continue;
                };
                if child_set.is_member() {
                    map.remove(key);
                    continue;
                }
                if let Some(child) = map.get_mut(key) {
                    let was_empty = empty(Some(child));
                    remove_paths(child, child_set, shape.field(key).0);
                    if !was_empty && empty(Some(child)) && !child.is_null() {
                        map.remove(key);
                    }
                }
            }
        }
        (Form::Set | Form::Assoc(_), Value::Array(list)) => {
            let item_shape = shape.item();
            let mut kept = Vec::with_capacity(list.len());
            for mut item in std::mem::take(list) {
                let pe = item_element(&form, &item);
                match set.child(&pe) {
                    Some(s) if s.is_member() => {}
                    Some(s) => {
                        remove_paths(&mut item, s, item_shape);
                        kept.push(item);
                    }
                    None => kept.push(item),
                }
            }
            *list = kept;
        }
        _ => {}
    }
}
