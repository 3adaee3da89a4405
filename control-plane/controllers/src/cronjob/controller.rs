//! The cronjob controller wired to the runtime: one key per CronJob, triggered by the
//! CronJob and by the Jobs it controls; each reconcile calls [`super::plan`] and honours its
//! `requeue_after` (the next schedule time). Jobs get deterministic names and the planner
//! keeps the uid-less reference of a Job it just created, so a stale cache at worst repeats
//! a create that fails with AlreadyExists (and the key is planned again).

use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::runtime::watcher;

use crate::common::is_controlled_by;
use crate::job::controller::controller_key;
use crate::runtime::{Controller, ObjectKey, Plan, Watches};

/// The cronjob controller: one key per CronJob.
pub fn controller(client: &kube::Client) -> Controller {
    let mut watches = Watches::new(client.clone());
    let cronjobs = watches.watch(
        Api::<CronJob>::all(client.clone()),
        watcher::Config::default(),
        |cronjob| vec![ObjectKey::of(cronjob)],
    );
    let jobs = watches.watch(
        Api::<Job>::all(client.clone()),
        watcher::Config::default(),
        |job| {
            controller_key(&job.metadata, "CronJob")
                .into_iter()
                .collect()
        },
    );
    Controller::new("cronjob", watches, move |key| {
        let Some(cronjob) = cronjobs.get(&key.store_ref()) else {
            return Plan::default();
        };
        let uid = cronjob.metadata.uid.as_deref().unwrap_or_default();
        let controlled: Vec<Job> = jobs
            .state()
            .iter()
            .filter(|j| j.metadata.namespace == cronjob.metadata.namespace)
            .filter(|j| is_controlled_by(&j.metadata, uid))
            .map(|j| (**j).clone())
            .collect();
        let planned = super::plan(&cronjob, &controlled, Timestamp::now());
        Plan {
            actions: planned.actions,
            requeue_after: planned.requeue_after,
        }
    })
}
