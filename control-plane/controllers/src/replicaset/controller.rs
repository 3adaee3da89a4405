//! The replicaset controller wired to the runtime: one key per ReplicaSet, triggered by the
//! replica set and by pods (their controlling ReplicaSet, or — for an orphan it may adopt —
//! every ReplicaSet of the namespace whose selector selects it). Each reconcile calls
//! [`super::plan`] with the namespace's pods and honours [`super::requeue_after`]
//! (minReadySeconds). The runtime's expectations keep a replica set from being planned
//! again before the pod cache shows the pods it just created or deleted.

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;

use super::claim::selector_selects;
use crate::common::controller_of;
use crate::job::controller::controller_key;
use crate::runtime::{Controller, ObjectKey, Plan, Watches};
use crate::statefulset::controller::in_namespace;

/// The keys of the objects of `store` in the namespace of `meta` whose selector (read by
/// `selector_of`) selects it: who may adopt an orphan.
pub(crate) fn selecting_keys<K>(
    store: &Store<K>,
    meta: &ObjectMeta,
    selector_of: impl Fn(&K) -> Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
) -> Vec<ObjectKey>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    store
        .state()
        .iter()
        .filter(|o| o.meta().namespace == meta.namespace)
        .filter(|o| {
            selector_of(o).is_some_and(|s| {
                !kwk_api::meta::selector_is_empty(s) && selector_selects(s, meta.labels.as_ref())
            })
        })
        .map(|o| ObjectKey::of(o.as_ref()))
        .collect()
}

/// The keys to reconcile when `meta` (a pod, or a replica set for the deployment
/// controller) changes: its controller of `kind`, or the selecting owners when orphaned.
pub(crate) fn owner_or_selecting_keys<K>(
    store: &Store<K>,
    meta: &ObjectMeta,
    kind: &str,
    selector_of: impl Fn(&K) -> Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
) -> Vec<ObjectKey>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    match controller_of(meta) {
        Some(_) => controller_key(meta, kind).into_iter().collect(),
        None => selecting_keys(store, meta, selector_of),
    }
}

/// The replicaset controller: one key per ReplicaSet.
pub fn controller(client: &kube::Client) -> Controller {
    let mut watches = Watches::new(client.clone());
    let replica_sets = watches.watch(
        Api::<ReplicaSet>::all(client.clone()),
        watcher::Config::default(),
        |rs| vec![ObjectKey::of(rs)],
    );
    let for_pods = replica_sets.clone();
    let pods = watches.watch(
        Api::<Pod>::all(client.clone()),
        watcher::Config::default(),
        move |pod| {
            owner_or_selecting_keys(&for_pods, &pod.metadata, "ReplicaSet", |rs| {
                rs.spec.as_ref().map(|s| &s.selector)
            })
        },
    );
    Controller::new("replicaset", watches, move |key| {
        let Some(rs) = replica_sets.get(&key.store_ref()) else {
            return Plan::default();
        };
        let pods: Vec<Pod> = in_namespace(&pods, rs.metadata.namespace.as_ref());
        let now = Timestamp::now();
        Plan {
            actions: super::plan(&rs, &pods, now),
            requeue_after: super::requeue_after(&rs, &pods, now),
        }
    })
    .workers(4)
}
