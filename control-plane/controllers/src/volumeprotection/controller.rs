//! The protection planners wired to the runtime: `pvc-protection` is keyed by claim and
//! requeues the claims a pod names whenever the pod changes or goes (so a pod's deletion or
//! termination releases its claims at once); `pv-protection` is keyed by volume, which the
//! binder's phase writes requeue.

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::Api;
use kube::runtime::watcher;

use super::{claims_of, plan_claim, plan_volume};
use crate::runtime::{Controller, ObjectKey, Plan, Watches};

/// `pvc-protection`: removes a deleted claim's finalizer once no scheduled pod uses it.
pub fn pvc_controller(client: &kube::Client) -> Controller {
    let mut watches = Watches::new(client.clone());
    let claims = watches.watch(
        Api::<PersistentVolumeClaim>::all(client.clone()),
        watcher::Config::default(),
        |claim| vec![ObjectKey::of(claim)],
    );
    let pods = watches.watch(
        Api::<Pod>::all(client.clone()),
        watcher::Config::default(),
        |pod| {
            let namespace = pod.metadata.namespace.clone().unwrap_or_default();
            claims_of(pod)
                .into_iter()
                .map(|name| ObjectKey::namespaced(namespace.clone(), name))
                .collect()
        },
    );
    Controller::new("pvc-protection", watches, move |key| {
        let Some(claim) = claims.get(&key.store_ref()) else {
            return Plan::default();
        };
        let all_pods = pods.state();
        plan_claim(&claim, all_pods.iter().map(|p| &**p)).into()
    })
}

/// `pv-protection`: removes a deleted volume's finalizer once it is not `Bound`.
pub fn pv_controller(client: &kube::Client) -> Controller {
    let mut watches = Watches::new(client.clone());
    let volumes = watches.watch(
        Api::<PersistentVolume>::all(client.clone()),
        watcher::Config::default(),
        |pv| vec![ObjectKey::of(pv)],
    );
    Controller::new("pv-protection", watches, move |key| {
        volumes
            .get(&key.store_ref())
            .map(|pv| Plan::from(plan_volume(&pv)))
            .unwrap_or_default()
    })
}
