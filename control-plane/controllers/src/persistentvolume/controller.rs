//! The persistentvolume binder wired to the runtime: one key (`persistentvolume`) planned
//! over every claim, volume and StorageClass, with one worker, so a pass sees every
//! binding the previous one wrote (and a stale cache makes the volume's PUT conflict).

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::Api;
use kube::runtime::watcher;

use crate::runtime::{Controller, ObjectKey, Watches};

/// The one key of the binder.
pub const KEY: &str = "persistentvolume";

/// The binder.
pub fn controller(client: &kube::Client) -> Controller {
    let key = || vec![ObjectKey::cluster(KEY)];
    let mut watches = Watches::new(client.clone());
    let claims = watches.watch(
        Api::<PersistentVolumeClaim>::all(client.clone()),
        watcher::Config::default(),
        move |_| key(),
    );
    let volumes = watches.watch(
        Api::<PersistentVolume>::all(client.clone()),
        watcher::Config::default(),
        move |_| key(),
    );
    let classes = watches.watch(
        Api::<StorageClass>::all(client.clone()),
        watcher::Config::default(),
        move |_| key(),
    );
    Controller::new("persistentvolume-binder", watches, move |_| {
        let all_claims: Vec<PersistentVolumeClaim> =
            claims.state().iter().map(|c| (**c).clone()).collect();
        let all_volumes: Vec<PersistentVolume> =
            volumes.state().iter().map(|v| (**v).clone()).collect();
        let all_classes: Vec<StorageClass> =
            classes.state().iter().map(|c| (**c).clone()).collect();
        super::plan(&all_claims, &all_volumes, &all_classes).into()
    })
    .workers(1)
}
