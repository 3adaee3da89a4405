//! The statefulset controller wired to the runtime: one key per StatefulSet, triggered by
//! the set, by its pods and ControllerRevisions (their controller, or every set of the
//! namespace for orphans it may adopt) and by PersistentVolumeClaims (every set of the
//! namespace: a claim names its set only inside its name). Each reconcile calls
//! [`super::reconcile`] and honours its `requeue_after` (minReadySeconds). Members and claims
//! have deterministic names, so a stale cache at worst repeats a create that fails with
//! AlreadyExists or a delete that finds nothing, and the key is planned again.

use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;

use crate::common::controller_of;
use crate::job::controller::controller_key;
use crate::runtime::{Controller, ObjectKey, Plan, Watches};

/// The keys of the objects of `store` in the namespace of `meta`.
pub(crate) fn keys_in_namespace<K>(store: &Store<K>, meta: &ObjectMeta) -> Vec<ObjectKey>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    store
        .state()
        .iter()
        .filter(|o| o.meta().namespace == meta.namespace)
        .map(|o| ObjectKey::of(o.as_ref()))
        .collect()
}

/// The keys to reconcile when an object `meta` of a set (or daemon set) of `kind` changes:
/// its controller's, or every one of the namespace when it has none (adoption).
pub(crate) fn owner_or_namespace_keys<K>(
    store: &Store<K>,
    meta: &ObjectMeta,
    kind: &str,
) -> Vec<ObjectKey>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    match controller_of(meta) {
        Some(_) => controller_key(meta, kind).into_iter().collect(),
        None => keys_in_namespace(store, meta),
    }
}

/// The objects of `store` in `namespace`, cloned.
pub(crate) fn in_namespace<K>(store: &Store<K>, namespace: Option<&String>) -> Vec<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    store
        .state()
        .iter()
        .filter(|o| o.meta().namespace.as_ref() == namespace)
        .map(|o| K::clone(o))
        .collect()
}

/// The statefulset controller: one key per StatefulSet.
pub fn controller(client: &kube::Client) -> Controller {
    let mut watches = Watches::new(client.clone());
    let sets = watches.watch(
        Api::<StatefulSet>::all(client.clone()),
        watcher::Config::default(),
        |set| vec![ObjectKey::of(set)],
    );
    let for_pods = sets.clone();
    let pods = watches.watch(
        Api::<Pod>::all(client.clone()),
        watcher::Config::default(),
        move |pod| owner_or_namespace_keys(&for_pods, &pod.metadata, "StatefulSet"),
    );
    let for_claims = sets.clone();
    let claims = watches.watch(
        Api::<PersistentVolumeClaim>::all(client.clone()),
        watcher::Config::default(),
        move |claim| keys_in_namespace(&for_claims, &claim.metadata),
    );
    let for_revisions = sets.clone();
    let revisions = watches.watch(
        Api::<ControllerRevision>::all(client.clone()),
        watcher::Config::default(),
        move |revision| owner_or_namespace_keys(&for_revisions, &revision.metadata, "StatefulSet"),
    );
    Controller::new("statefulset", watches, move |key| {
        let Some(set) = sets.get(&key.store_ref()) else {
            return Plan::default();
        };
        let namespace = set.metadata.namespace.as_ref();
        let planned = super::reconcile(
            &set,
            &in_namespace(&pods, namespace),
            &in_namespace(&claims, namespace),
            &in_namespace(&revisions, namespace),
            Timestamp::now(),
        );
        Plan {
            actions: planned.actions,
            requeue_after: planned.requeue_after,
        }
    })
}
