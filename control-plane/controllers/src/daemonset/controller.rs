//! The daemonset controller wired to the runtime: one key per DaemonSet, triggered by the
//! set, by every Node change (every set: placement depends on labels, taints, readiness),
//! by its pods and ControllerRevisions (their controller, or every set of the namespace for
//! orphans it may adopt). Each reconcile calls [`super::reconcile`] and honours its
//! `requeue_after` (minReadySeconds, failed-pod backoff). Daemon pods are created by
//! `generateName`, so a set is held by [`Expectations`] until the pod cache shows its last
//! plan's creations and deletions (else a stale cache would put a second pod on a node).

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::runtime::watcher;

use crate::common::is_controlled_by;
use crate::job::controller::Expectations;
use crate::runtime::{Controller, ObjectKey, Plan, Watches};
use crate::statefulset::controller::{in_namespace, owner_or_namespace_keys};

/// The daemonset controller: one key per DaemonSet.
pub fn controller(client: &kube::Client) -> Controller {
    let mut watches = Watches::new(client.clone());
    let sets = watches.watch(
        Api::<DaemonSet>::all(client.clone()),
        watcher::Config::default(),
        |set| vec![ObjectKey::of(set)],
    );
    let every_set = sets.clone();
    let nodes = watches.watch(
        Api::<Node>::all(client.clone()),
        watcher::Config::default(),
        move |_| {
            every_set
                .state()
                .iter()
                .map(|s| ObjectKey::of(s.as_ref()))
                .collect()
        },
    );
    let for_pods = sets.clone();
    let pods = watches.watch(
        Api::<Pod>::all(client.clone()),
        watcher::Config::default(),
        move |pod| owner_or_namespace_keys(&for_pods, &pod.metadata, "DaemonSet"),
    );
    let for_revisions = sets.clone();
    let revisions = watches.watch(
        Api::<ControllerRevision>::all(client.clone()),
        watcher::Config::default(),
        move |revision| owner_or_namespace_keys(&for_revisions, &revision.metadata, "DaemonSet"),
    );
    let expectations = Expectations::new("Pod");
    Controller::new("daemonset", watches, move |key| {
        let Some(set) = sets.get(&key.store_ref()) else {
            expectations.forget(key);
            return Plan::default();
        };
        let namespace = set.metadata.namespace.as_ref();
        let set_pods = in_namespace(&pods, namespace);
        let uid = set.metadata.uid.as_deref().unwrap_or_default();
        let controlled = || {
            set_pods
                .iter()
                .filter(|p| is_controlled_by(&p.metadata, uid))
                .map(|p| &p.metadata)
        };
        if let Some(wait) = expectations.hold(key, controlled()) {
            return Plan {
                actions: Vec::new(),
                requeue_after: Some(wait),
            };
        }
        let all_nodes: Vec<Node> = nodes.state().iter().map(|n| (**n).clone()).collect();
        let planned = super::reconcile(
            &set,
            &all_nodes,
            &set_pods,
            &in_namespace(&revisions, namespace),
            Timestamp::now(),
        );
        expectations.expect(key, controlled(), &planned.actions);
        Plan {
            actions: planned.actions,
            requeue_after: planned.requeue_after,
        }
    })
}
