//! The garbage collector (upstream `pkg/controller/garbagecollector`): it owns the
//! deletion of dependents whose owners are gone, foreground deletion (dependents first,
//! then the owner's `foregroundDeletion` finalizer) and orphaning (owner references
//! removed from dependents, then the owner's `orphan` finalizer).
//!
//! The planner is one step over the whole ownership graph of the watched kinds: every
//! object as an [`Item`], every kind the runtime watches as a [`WatchedKind`]. An owner
//! reference to a kind nobody watches is never judged absent.
//!
//! Upstream double-checks a dangling owner with a live GET before deleting; the runtime
//! should only plan from fully synced caches of every watched kind.

mod graph;

pub mod controller;

#[cfg(test)]
mod tests;

use std::any::TypeId;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::{Metadata, NamespaceResourceScope, Resource};

use crate::action::ObjectRef;

pub use graph::plan;

/// The finalizer asking for foreground deletion: dependents go first.
pub const FINALIZER_FOREGROUND: &str = "foregroundDeletion";
/// The finalizer asking for orphaning: dependents lose their owner reference.
pub const FINALIZER_ORPHAN: &str = "orphan";

/// One object of the graph.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// Its identity, `uid` included.
    pub target: ObjectRef,
    pub owners: Vec<OwnerReference>,
    pub finalizers: Vec<String>,
    /// `metadata.deletionTimestamp` is set.
    pub deleting: bool,
    /// For the optimistic-concurrency precondition of the patches.
    pub resource_version: Option<String>,
}

impl Item {
    /// The item of a typed object.
    pub fn of<K>(object: &K) -> Self
    where
        K: Resource + Metadata<Ty = ObjectMeta>,
    {
        Self::from_meta(ObjectRef::of(object), object.metadata())
    }

    /// The item of an object of any kind (a dynamic object's metadata).
    pub fn from_meta(target: ObjectRef, meta: &ObjectMeta) -> Self {
        Item {
            target,
            owners: meta.owner_references.clone().unwrap_or_default(),
            finalizers: meta.finalizers.clone().unwrap_or_default(),
            deleting: meta.deletion_timestamp.is_some(),
            resource_version: meta.resource_version.clone(),
        }
    }

    fn has_finalizer(&self, finalizer: &str) -> bool {
        self.finalizers.iter().any(|f| f == finalizer)
    }

    /// Being deleted in the foreground: waiting for its dependents.
    fn deleting_dependents(&self) -> bool {
        self.deleting && self.has_finalizer(FINALIZER_FOREGROUND)
    }

    /// Being deleted with its dependents orphaned.
    fn orphaning_dependents(&self) -> bool {
        self.deleting && self.has_finalizer(FINALIZER_ORPHAN)
    }
}

/// A kind the runtime watches (so its objects are all in the input).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WatchedKind {
    /// `apps`, or empty for the core group.
    pub group: String,
    pub kind: String,
    pub namespaced: bool,
}

impl WatchedKind {
    /// The watched kind of a typed resource.
    pub fn of<K>() -> Self
    where
        K: Resource,
        K::Scope: 'static,
    {
        WatchedKind {
            group: K::GROUP.to_string(),
            kind: K::KIND.to_string(),
            namespaced: TypeId::of::<K::Scope>() == TypeId::of::<NamespaceResourceScope>(),
        }
    }
}

/// The group of an `apiVersion` (`apps/v1` → `apps`, `v1` → ``).
pub fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(group, _)| group)
}
