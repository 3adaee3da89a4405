//! Field management: `metadata.managedFields` on every write and server-side apply.
//!
//! Every create, update and patch records, for its manager (the `fieldManager` query
//! parameter, else the User-Agent's product), an `Update` entry owning the fields it added or
//! changed ([`track_update`]); other managers lose those fields. An apply
//! ([`apply`], `application/apply-patch+yaml`) merges the configuration into the live object
//! by schema ([`typed`]), gives its manager an `Apply` entry owning exactly the configured
//! fields, removes fields it applied before and no longer applies (unless another manager owns
//! them), and fails with 409 when it would change fields another manager owns, unless forced.
//!
//! Schemas: the built-in kinds' own, a custom resource's compiled CRD schema (handed in by
//! the caller), else upstream's deduced schema (granular maps, atomic lists).

pub mod entries;
pub mod fieldset;
pub mod last_applied;
pub mod typed;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::apiserver::errors::ApiError;
use crate::apiserver::patch::{SchemaGraph, builtin_schema};
use entries::{Conflict, Entry, MAX_UPDATE_MANAGERS, Operation};
use fieldset::{FieldSet, PathElement};
pub use typed::Shape;
use typed::{Comparison, compare, merge, remove_paths, to_field_set};

/// A custom kind's schema: a compiled graph and the name of the kind's root definition in it.
#[derive(Debug, Clone)]
pub struct SchemaRef {
    pub graph: Arc<SchemaGraph>,
    pub root: String,
}

impl SchemaRef {
    /// Runs `f` with the kind's shape.
    pub fn with_shape<R>(&self, f: impl FnOnce(Shape<'_>) -> R) -> R {
        match self.graph.definition(&self.root) {
            Some(node) => f(Shape::of(node)),
            None => f(Shape::deduced()),
        }
    }
}

/// Runs `f` with the shape of `kind` in `api_version`: the built-in kind's schema, else
/// `custom` (a custom resource's compiled schema), else the deduced shape.
pub fn with_shape<R>(
    api_version: &str,
    kind: &str,
    custom: Option<SchemaRef>,
    f: impl FnOnce(Shape<'_>) -> R,
) -> R {
    match builtin_schema(api_version, kind) {
        Some(node) => f(Shape::of(node)),
        None => match custom {
            Some(schema) => schema.with_shape(f),
            None => f(Shape::deduced()),
        },
    }
}

/// The most bytes of a field manager name (upstream `FieldManagerMaxLength`).
pub const FIELD_MANAGER_MAX_LENGTH: usize = 128;

/// The manager upstream derives from a User-Agent: the part before the first `/`, printable
/// characters only, at most [`FIELD_MANAGER_MAX_LENGTH`] bytes.
pub fn manager_from_user_agent(user_agent: &str) -> String {
    let product = user_agent.split('/').next().unwrap_or_default();
    let mut out = String::new();
    for c in product.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > FIELD_MANAGER_MAX_LENGTH {
            break;
        }
        out.push(c);
    }
    out
}

/// What a write is, for field management.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    pub manager: &'a str,
    /// The resource's `apiVersion` (entries record it).
    pub api_version: &'a str,
    /// `""` for the main resource, else `status`, `scale` ...
    pub subresource: &'a str,
    /// Whether the kind has a status subresource (then writes of the main resource own no
    /// status fields).
    pub has_status: bool,
}

/// Paths whose ownership is never tracked (upstream's stripped metadata).
fn stripped() -> FieldSet {
    let f = |s: &str| PathElement::Field(s.to_string());
    let mut set = FieldSet::new();
    set.insert(&[f("apiVersion")]);
    set.insert(&[f("kind")]);
    set.insert(&[f("metadata")]);
    for field in [
        "name",
        "namespace",
        "creationTimestamp",
        "selfLink",
        "uid",
        "clusterName",
        "generation",
        "managedFields",
        "resourceVersion",
    ] {
        set.insert(&[f("metadata"), f(field)]);
    }
    set
}

impl Scope<'_> {
    /// The subtrees a write through this scope cannot own (upstream's reset fields).
    fn ignored(&self, object: &Value) -> FieldSet {
        let mut set = FieldSet::new();
        match self.subresource {
            "" if self.has_status => set.insert(&[PathElement::Field("status".into())]),
            "status" => {
                for key in object.as_object().into_iter().flat_map(Map::keys) {
                    if key != "status" {
                        set.insert(&[PathElement::Field(key.clone())]);
                    }
                }
            }
            _ => {}
        }
        set
    }

    fn filter(&self, set: &FieldSet, object: &Value) -> FieldSet {
        set.difference(&stripped())
            .recursive_difference(&self.ignored(object))
    }

    fn filter_comparison(&self, cmp: &Comparison, object: &Value) -> Comparison {
        Comparison {
            added: self.filter(&cmp.added, object),
            modified: self.filter(&cmp.modified, object),
            removed: self.filter(&cmp.removed, object),
        }
    }

    fn entry(&self, operation: Operation) -> Entry {
        Entry {
            manager: self.manager.to_string(),
            operation,
            api_version: self.api_version.to_string(),
            time: None,
            subresource: self.subresource.to_string(),
            fields: FieldSet::new(),
        }
    }
}

fn managed_fields(object: &Value) -> Option<&Value> {
    object.pointer("/metadata/managedFields")
}

fn without_managed_fields(object: &Value) -> Value {
    let mut out = object.clone();
    if let Some(meta) = out.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
    out
}

/// What a typed kind looks like before anything is set: its top-level structs exist, empty
/// (Go's zero value of the type, which upstream compares a created object with). Kinds
/// without a schema start from nothing.
fn baseline(new: &Value, shape: Shape<'_>) -> Value {
    let mut out = Map::new();
    if shape.has_schema() {
        for (key, value) in new.as_object().into_iter().flatten() {
            if value.is_object() {
                out.insert(key.clone(), Value::Object(Map::new()));
            }
        }
    }
    Value::Object(out)
}

fn set_managed_fields(object: &mut Value, entries: &mut Vec<Entry>) {
    entries::cap_update_managers(entries, MAX_UPDATE_MANAGERS);
    let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    if entries.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".into(), entries::encode(entries));
    }
}

/// Hands the changed fields of `cmp` to the manager `me` (whose entry is not in `entries`):
/// other managers lose what changed (or, without `force`, the changes are conflicts) and what
/// was removed; managers left with nothing are dropped.
fn settle(
    entries: &mut Vec<Entry>,
    me: &Entry,
    cmp: &Comparison,
    force: bool,
) -> Result<(), Vec<Conflict>> {
    let changed = cmp.changed();
    let mut conflicts = Vec::new();
    for entry in entries.iter().filter(|e| !e.same_manager(me)) {
        for path in entry.fields.intersection(&changed).paths() {
            conflicts.push(Conflict {
                manager: entry.describe(),
                path,
            });
        }
    }
    if !force && !conflicts.is_empty() {
        conflicts.sort_by(|a, b| (&a.manager, &a.path).cmp(&(&b.manager, &b.path)));
        return Err(conflicts);
    }
    for entry in entries.iter_mut().filter(|e| !e.same_manager(me)) {
        entry.fields = entry.fields.difference(&changed).difference(&cmp.removed);
    }
    entries.retain(|e| !e.fields.is_empty());
    Ok(())
}

/// Records an update (create, PUT, non-apply PATCH) in `new`'s managedFields. `live` is the
/// stored object (`None` on create). The client's managedFields in `new` are kept when valid
/// and non-empty (an empty list, or one empty entry, resets them); otherwise, and always for
/// subresources, the live ones are.
pub fn track_update(
    live: Option<&Value>,
    new: &mut Value,
    scope: &Scope<'_>,
    shape: Shape<'_>,
    now: &str,
) {
    let live_entries = || entries::decode(live.and_then(managed_fields)).unwrap_or_default();
    let requested = managed_fields(new);
    let mut entries = if !scope.subresource.is_empty() {
        live_entries()
    } else if entries::is_reset(requested) {
        Vec::new()
    } else {
        match entries::decode(requested) {
            Ok(e) if !e.is_empty() => e,
            _ => live_entries(),
        }
    };
    let plain = without_managed_fields(new);
    let old = match live {
        Some(live) => without_managed_fields(live),
        None => baseline(&plain, shape),
    };
    let cmp = scope.filter_comparison(&compare(&old, &plain, shape), &plain);
    let mut me = scope.entry(Operation::Update);
    // Updates always win: nothing conflicts.
    let _ = settle(&mut entries, &me, &cmp, true);
    let taken = cmp.changed();
    if !taken.is_empty() {
        let previous = entries
            .iter()
            .position(|e| e.same_manager(&me))
            .map(|i| entries.remove(i).fields);
        me.fields = match previous {
            Some(p) => p.difference(&cmp.removed).union(&taken),
            None => taken,
        };
        me.time = Some(now.to_string());
        entries.push(me);
    } else if let Some(entry) = entries.iter_mut().find(|e| e.same_manager(&me)) {
        entry.fields = entry.fields.difference(&cmp.removed);
    }
    entries.retain(|e| !e.fields.is_empty());
    *new = plain;
    set_managed_fields(new, &mut entries);
}

/// Server-side apply of `config` by `scope.manager` to `live` (`None`: the object does not
/// exist yet). Returns the merged object with its managedFields, or the 409 of the conflicts
/// (none with `force`: the applier takes the fields over). `kubectl` may also take over what
/// it client-side applied before ([`last_applied`]).
pub fn apply(
    live: Option<&Value>,
    config: &Value,
    scope: &Scope<'_>,
    shape: Shape<'_>,
    force: bool,
    now: &str,
) -> Result<Value, ApiError> {
    let mut merged = match apply_once(live, config, scope, shape, force, now) {
        Ok(merged) => merged,
        Err(conflicts) => {
            let allowed = live
                .filter(|_| scope.manager == last_applied::KUBECTL)
                .and_then(|l| {
                    last_applied::allowed_conflicts(
                        &without_managed_fields(l),
                        scope.api_version,
                        shape,
                    )
                });
            let Some(allowed) = allowed else {
                return Err(entries::conflict_error(&conflicts));
            };
            let remaining: Vec<Conflict> = conflicts
                .into_iter()
                .filter(|c| !allowed.contains(&c.path))
                .collect();
            if !remaining.is_empty() {
                return Err(entries::conflict_error(&remaining));
            }
            apply_once(live, config, scope, shape, true, now)
                .map_err(|c| entries::conflict_error(&c))?
        }
    };
    if scope.manager == last_applied::KUBECTL {
        last_applied::refresh(&mut merged, config);
    }
    Ok(merged)
}

fn apply_once(
    live: Option<&Value>,
    config: &Value,
    scope: &Scope<'_>,
    shape: Shape<'_>,
    force: bool,
    now: &str,
) -> Result<Value, Vec<Conflict>> {
    let mut entries = entries::decode(live.and_then(managed_fields)).unwrap_or_default();
    let old = match live {
        Some(live) => without_managed_fields(live),
        None => baseline(config, shape),
    };
    let mut merged = merge(&old, config, shape);
    let applied = scope.filter(&to_field_set(config, shape), config);
    let mut me = scope.entry(Operation::Apply);
    let previous = entries
        .iter()
        .position(|e| e.same_manager(&me))
        .map(|i| entries.remove(i));
    me.time = previous.as_ref().and_then(|p| p.time.clone());
    me.fields = applied;
    // Fields applied last time and not now go, unless someone (the applier included) owns them.
    if let Some(previous) = &previous {
        let owned = entries
            .iter()
            .fold(me.fields.clone(), |acc, e| acc.union(&e.fields));
        let gone = prune_set(&previous.fields, &owned);
        if !gone.is_empty() {
            remove_paths(&mut merged, &gone, shape);
        }
    }
    let cmp = scope.filter_comparison(&compare(&old, &merged, shape), &merged);
    settle(&mut entries, &me, &cmp, force)?;
    if merged != old {
        me.time = Some(now.to_string());
    }
    if !me.fields.is_empty() {
        entries.push(me);
    }
    set_managed_fields(&mut merged, &mut entries);
    Ok(merged)
}

/// The paths of `last` nobody owns any more: not in `owned`, and nothing owned below them.
fn prune_set(last: &FieldSet, owned: &FieldSet) -> FieldSet {
    let mut out = FieldSet::new();
    for path in last.paths() {
        if owned.node(&path).is_none() {
            out.insert(&path);
        }
    }
    out
}
