//! One step of the garbage collector over the ownership graph: classify every owner
//! reference, then plan deletions, owner-reference removals and finalizer removals.

use std::collections::{BTreeSet, HashMap};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use serde_json::{Value, json};

use super::{FINALIZER_FOREGROUND, FINALIZER_ORPHAN, Item, WatchedKind, group_of};
use crate::action::{Action, EventType, Propagation};

/// What an owner reference points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    /// The owner exists (index into the items).
    Present(usize),
    /// No object with that identity and uid (or a different uid under that name).
    Absent,
    /// The reference cannot be satisfied from the dependent's namespace.
    InvalidNamespace,
    /// A kind nobody watches: never judged absent.
    Unknown,
}

struct Graph<'a> {
    items: &'a [Item],
    watched: &'a [WatchedKind],
    /// (group, kind, namespace, name) → item.
    by_name: HashMap<(&'a str, &'a str, Option<&'a str>, &'a str), usize>,
    by_uid: HashMap<&'a str, usize>,
}

impl<'a> Graph<'a> {
    fn new(items: &'a [Item], watched: &'a [WatchedKind]) -> Self {
        let mut by_name = HashMap::new();
        let mut by_uid = HashMap::new();
        for (i, item) in items.iter().enumerate() {
            let t = &item.target;
            by_name.insert(
                (
                    group_of(&t.api_version),
                    t.kind.as_str(),
                    t.namespace.as_deref(),
                    t.name.as_str(),
                ),
                i,
            );
            if let Some(uid) = t.uid.as_deref() {
                by_uid.insert(uid, i);
            }
        }
        Graph {
            items,
            watched,
            by_name,
            by_uid,
        }
    }

    fn resolve(&self, dependent: &Item, reference: &OwnerReference) -> Owner {
        let group = group_of(&reference.api_version);
        let Some(kind) = self
            .watched
            .iter()
            .find(|w| w.group == group && w.kind == reference.kind)
        else {
            return Owner::Unknown;
        };
        let namespace = if kind.namespaced {
            match dependent.target.namespace.as_deref() {
                Some(ns) => Some(ns),
                // A cluster-scoped object cannot be owned by a namespaced one.
                None => return Owner::InvalidNamespace,
            }
        } else {
            None
        };
        match self.by_name.get(&(
            group,
            reference.kind.as_str(),
            namespace,
            reference.name.as_str(),
        )) {
            Some(&i) if self.items[i].target.uid.as_deref() == Some(reference.uid.as_str()) => {
                Owner::Present(i)
            }
            _ => {
                // The uid lives in another namespace: the reference crosses namespaces.
                let elsewhere = self.by_uid.get(reference.uid.as_str()).is_some_and(|&i| {
                    let owner = &self.items[i].target;
                    owner.kind == reference.kind && owner.namespace.as_deref() != namespace
                });
                if elsewhere {
                    Owner::InvalidNamespace
                } else {
                    Owner::Absent
                }
            }
        }
    }
}

/// The owner references of one dependent, sorted the way upstream's
/// `classifyReferences` sorts them.
#[derive(Default)]
struct Classified<'a> {
    /// Owners that exist and keep the dependent (orphaning ones included).
    solid: Vec<&'a OwnerReference>,
    /// Owners that are gone (or invalid).
    dangling: Vec<&'a OwnerReference>,
    /// Owners being deleted in the foreground.
    waiting: Vec<&'a OwnerReference>,
    /// Solid owners being deleted with orphaning: their reference is to be removed.
    orphaning: Vec<&'a OwnerReference>,
    /// Invalid-namespace references, for the warning event.
    invalid: Vec<&'a OwnerReference>,
}

/// The warning upstream records on a dependent whose owner reference crosses namespaces.
fn invalid_namespace_event(dependent: &Item, reference: &OwnerReference) -> Action {
    let namespace = dependent.target.namespace.as_deref().unwrap_or_default();
    Action::Event {
        regarding: dependent.target.clone(),
        event_type: EventType::Warning,
        reason: "OwnerRefInvalidNamespace".into(),
        message: format!(
            "ownerRef [{}/{}, namespace: {}, name: {}, uid: {}] does not exist in namespace {:?}",
            reference.api_version,
            reference.kind,
            namespace,
            reference.name,
            reference.uid,
            namespace
        ),
    }
}

/// A merge patch replacing `metadata.<field>` (a list), guarded by the resourceVersion.
fn list_patch(item: &Item, field: &str, list: Value) -> Action {
    let list = match &list {
        Value::Array(a) if a.is_empty() => Value::Null,
        _ => list,
    };
    Action::Patch {
        target: item.target.clone(),
        subresource: None,
        patch: json!({
            "metadata": { "resourceVersion": item.resource_version, field: list },
        }),
    }
}

/// One garbage collection step over all `items` of the `watched` kinds.
pub fn plan(items: &[Item], watched: &[WatchedKind]) -> Vec<Action> {
    let graph = Graph::new(items, watched);
    // owner index → (dependent index, reference) for every reference resolving to it.
    let mut dependents: HashMap<usize, Vec<(usize, &OwnerReference)>> = HashMap::new();
    let mut classified: Vec<Classified<'_>> = Vec::with_capacity(items.len());
    for (d, item) in items.iter().enumerate() {
        let mut c = Classified::default();
        for reference in &item.owners {
            match graph.resolve(item, reference) {
                Owner::Present(o) => {
                    dependents.entry(o).or_default().push((d, reference));
                    let owner = &items[o];
                    if owner.deleting_dependents() {
                        c.waiting.push(reference);
                    } else {
                        if owner.orphaning_dependents() {
                            c.orphaning.push(reference);
                        }
                        c.solid.push(reference);
                    }
                }
                Owner::Unknown => c.solid.push(reference),
                Owner::Absent => c.dangling.push(reference),
                Owner::InvalidNamespace => {
                    c.dangling.push(reference);
                    c.invalid.push(reference);
                }
            }
        }
        classified.push(c);
    }

    let mut actions = Vec::new();
    for (d, item) in items.iter().enumerate() {
        let c = &classified[d];
        if item.owners.is_empty() {
            continue;
        }
        if item.deleting {
            // Already going: only an orphaning owner still needs its reference gone.
            if !c.orphaning.is_empty() {
                let drop: BTreeSet<&str> = c.orphaning.iter().map(|r| r.uid.as_str()).collect();
                let kept: Vec<&OwnerReference> = item
                    .owners
                    .iter()
                    .filter(|r| !drop.contains(r.uid.as_str()))
                    .collect();
                actions.push(list_patch(item, "ownerReferences", json!(kept)));
            }
            continue;
        }
        let mut planned = Vec::new();
        if !c.solid.is_empty() {
            // Kept by a live owner: drop the references to gone, foreground-deleting and
            // orphaning owners.
            let drop: BTreeSet<&str> = c
                .dangling
                .iter()
                .chain(&c.waiting)
                .chain(&c.orphaning)
                .map(|r| r.uid.as_str())
                .collect();
            if !drop.is_empty() {
                let kept: Vec<&OwnerReference> = item
                    .owners
                    .iter()
                    .filter(|r| !drop.contains(r.uid.as_str()))
                    .collect();
                planned.push(list_patch(item, "ownerReferences", json!(kept)));
            }
        } else if !c.waiting.is_empty() && dependents.contains_key(&d) {
            // An owner waits for us and we have dependents of our own: delete in the
            // foreground too. A dependent of ours that itself waits would deadlock on our
            // blocking reference (a cycle): unblock our owners first.
            let cycle = dependents[&d]
                .iter()
                .any(|(dd, _)| items[*dd].deleting_dependents());
            if cycle {
                let unblocked: Vec<OwnerReference> = item
                    .owners
                    .iter()
                    .map(|r| OwnerReference {
                        block_owner_deletion: r.block_owner_deletion.map(|_| false),
                        ..r.clone()
                    })
                    .collect();
                planned.push(list_patch(item, "ownerReferences", json!(unblocked)));
            }
            planned.push(Action::Delete {
                target: item.target.clone(),
                propagation: Some(Propagation::Foreground),
                grace_period_seconds: None,
            });
        } else {
            // No owner left: collect, keeping the object's own deletion preference.
            let propagation = if item.has_finalizer(FINALIZER_ORPHAN) {
                Propagation::Orphan
            } else if item.has_finalizer(FINALIZER_FOREGROUND) {
                Propagation::Foreground
            } else {
                Propagation::Background
            };
            planned.push(Action::Delete {
                target: item.target.clone(),
                propagation: Some(propagation),
                grace_period_seconds: None,
            });
        }
        for reference in &c.invalid {
            actions.push(invalid_namespace_event(item, reference));
        }
        actions.extend(planned);
    }

    // Owners being deleted: release their finalizers once their dependents allow it.
    for (o, owner) in items.iter().enumerate() {
        if !owner.deleting {
            continue;
        }
        let deps = dependents.get(&o).map(Vec::as_slice).unwrap_or_default();
        let mut release: Vec<&str> = Vec::new();
        if owner.deleting_dependents() {
            let blocked = deps
                .iter()
                .any(|(_, r)| r.block_owner_deletion == Some(true));
            if !blocked {
                release.push(FINALIZER_FOREGROUND);
            }
        }
        if owner.orphaning_dependents() && deps.is_empty() {
            release.push(FINALIZER_ORPHAN);
        }
        if !release.is_empty() {
            let kept: Vec<&String> = owner
                .finalizers
                .iter()
                .filter(|f| !release.contains(&f.as_str()))
                .collect();
            actions.push(list_patch(owner, "finalizers", json!(kept)));
        }
    }
    actions
}
