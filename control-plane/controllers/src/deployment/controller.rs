//! The deployment controller wired to the runtime: one key per Deployment, triggered by the
//! deployment, by replica sets (their controlling Deployment, or every Deployment of the
//! namespace selecting an orphan) and by pods (the Deployment controlling their ReplicaSet:
//! Recreate waits for old pods to go, and the status counts them). Each reconcile calls
//! [`super::plan`] with the namespace's replica sets and pods and honours
//! [`super::requeue_after`] (the progress deadline).

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::runtime::watcher;

use crate::job::controller::controller_key;
use crate::replicaset::controller::owner_or_selecting_keys;
use crate::runtime::{Controller, ObjectKey, Plan, Watches};
use crate::statefulset::controller::in_namespace;

/// The deployment controller: one key per Deployment.
pub fn controller(client: &kube::Client) -> Controller {
    let mut watches = Watches::new(client.clone());
    let deployments = watches.watch(
        Api::<Deployment>::all(client.clone()),
        watcher::Config::default(),
        |d| vec![ObjectKey::of(d)],
    );
    let for_replica_sets = deployments.clone();
    let replica_sets = watches.watch(
        Api::<ReplicaSet>::all(client.clone()),
        watcher::Config::default(),
        move |rs| {
            owner_or_selecting_keys(&for_replica_sets, &rs.metadata, "Deployment", |d| {
                d.spec.as_ref().map(|s| &s.selector)
            })
        },
    );
    let for_pods = replica_sets.clone();
    let pods = watches.watch(
        Api::<Pod>::all(client.clone()),
        watcher::Config::default(),
        move |pod| {
            controller_key(&pod.metadata, "ReplicaSet")
                .and_then(|rs_key| for_pods.get(&rs_key.store_ref()))
                .and_then(|rs| controller_key(&rs.metadata, "Deployment"))
                .into_iter()
                .collect()
        },
    );
    Controller::new("deployment", watches, move |key| {
        let Some(d) = deployments.get(&key.store_ref()) else {
            return Plan::default();
        };
        let namespace = d.metadata.namespace.as_ref();
        let replica_sets: Vec<ReplicaSet> = in_namespace(&replica_sets, namespace);
        let pods: Vec<Pod> = in_namespace(&pods, namespace);
        let now = Timestamp::now();
        Plan {
            actions: super::plan(&d, &replica_sets, &pods, now),
            requeue_after: super::requeue_after(&d, now),
        }
    })
}
