//! The garbage collector wired to the runtime: typed watches of the kinds that carry owner
//! references in practice ([`watched_kinds`]), and a single key (`garbagecollector`) planned
//! over all of them with [`super::plan`].
//!
//! The planner trusts its input: an owner missing from the caches is a deleted owner. So:
//! - the runtime starts planning only once every watch has its first full list (a cache not
//!   yet synced would look like deleted owners);
//! - the watches are separate streams, so a dependent created right after its owner may be
//!   seen before the owner is. Upstream double-checks a dangling owner with a live GET; the
//!   closure cannot do I/O, so it double-checks in time instead: an action is performed only
//!   when two plans at least [`CONFIRM_AFTER`] apart both asked for it ([`Confirmations`]).

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{
    ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet,
};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::{Metadata, Resource};
use kube::Api;
use kube::runtime::watcher;
use serde::de::DeserializeOwned;

use super::{Item, WatchedKind};
use crate::action::Action;
use crate::runtime::{Controller, ObjectKey, Plan, Watches};

/// The one key of the collector.
pub const KEY: &str = "garbagecollector";
/// How long an action must stay planned before it is performed (see the module doc).
pub const CONFIRM_AFTER: Duration = Duration::from_secs(1);

/// The items of one watched kind, read from its store.
type ItemSource = Box<dyn Fn() -> Vec<Item> + Send + Sync>;

/// Watches every object of kind `K` into a store; every change queues [`KEY`].
fn watch_items<K>(watches: &mut Watches) -> (WatchedKind, ItemSource)
where
    K: kube::Resource<DynamicType = ()> + Resource + Metadata<Ty = ObjectMeta>,
    K: Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    <K as Resource>::Scope: 'static,
{
    let store = watches.watch(
        Api::<K>::all(watches.client().clone()),
        watcher::Config::default(),
        |_| vec![ObjectKey::cluster(KEY)],
    );
    let items: ItemSource = Box::new(move || {
        store
            .state()
            .iter()
            .map(|object| Item::of(object.as_ref()))
            .collect()
    });
    (WatchedKind::of::<K>(), items)
}

/// Watches every kind the collector handles.
fn watch_all(watches: &mut Watches) -> Vec<(WatchedKind, ItemSource)> {
    vec![
        watch_items::<Pod>(watches),
        watch_items::<ReplicaSet>(watches),
        watch_items::<Deployment>(watches),
        watch_items::<DaemonSet>(watches),
        watch_items::<StatefulSet>(watches),
        watch_items::<ControllerRevision>(watches),
        watch_items::<Job>(watches),
        watch_items::<CronJob>(watches),
        watch_items::<EndpointSlice>(watches),
        watch_items::<ConfigMap>(watches),
        watch_items::<Secret>(watches),
        watch_items::<Service>(watches),
        watch_items::<PersistentVolumeClaim>(watches),
        watch_items::<ServiceAccount>(watches),
    ]
}

/// When each planned action was first planned, so an action is performed only once a later
/// plan confirms it.
#[derive(Debug, Default)]
pub struct Confirmations {
    first_planned: HashMap<String, Instant>,
}

impl Confirmations {
    /// The actions of `planned` that were already planned at least `after` before `now`, in
    /// order, and how long until the next of the others is due. Actions no longer planned
    /// are forgotten.
    pub fn confirm(
        &mut self,
        planned: Vec<Action>,
        now: Instant,
        after: Duration,
    ) -> (Vec<Action>, Option<Duration>) {
        let mut seen = HashMap::with_capacity(planned.len());
        let mut confirmed = Vec::new();
        let mut next: Option<Duration> = None;
        for action in planned {
            let fingerprint = format!("{action:?}");
            let first = self.first_planned.get(&fingerprint).copied().unwrap_or(now);
            seen.insert(fingerprint, first);
            let due = first + after;
            if due <= now {
                confirmed.push(action);
            } else {
                let wait = due - now;
                next = Some(next.map_or(wait, |n| n.min(wait)));
            }
        }
        self.first_planned = seen;
        (confirmed, next)
    }
}

/// The collector with upstream's semantics and [`CONFIRM_AFTER`].
pub fn controller(client: &kube::Client) -> Controller {
    let mut watches = Watches::new(client.clone());
    let sources = watch_all(&mut watches);
    let watched: Vec<WatchedKind> = sources.iter().map(|(kind, _)| kind.clone()).collect();
    let confirmations = Mutex::new(Confirmations::default());
    Controller::new("garbagecollector", watches, move |_| {
        let items: Vec<Item> = sources.iter().flat_map(|(_, items)| items()).collect();
        let planned = super::plan(&items, &watched);
        let (actions, wait) = confirmations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .confirm(planned, Instant::now(), CONFIRM_AFTER);
        Plan {
            actions,
            requeue_after: wait.map(|w| w + Duration::from_millis(20)),
        }
    })
    .workers(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delete(name: &str) -> Action {
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                uid: Some(format!("uid-{name}")),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        };
        Action::delete(&cm, None)
    }

    #[test]
    fn an_action_is_performed_only_when_a_later_plan_confirms_it() {
        let mut confirmations = Confirmations::default();
        let t0 = Instant::now();
        let second = Duration::from_secs(1);

        let (now, wait) = confirmations.confirm(vec![delete("a")], t0, second);
        assert!(now.is_empty(), "first sight is not enough");
        assert_eq!(wait, Some(second));

        let half = t0 + second / 2;
        let (now, wait) = confirmations.confirm(vec![delete("a"), delete("b")], half, second);
        assert!(now.is_empty());
        assert_eq!(wait, Some(second / 2), "a is due first");

        let (now, wait) =
            confirmations.confirm(vec![delete("a"), delete("b")], t0 + second, second);
        assert_eq!(now, vec![delete("a")]);
        assert_eq!(wait, Some(second / 2));

        // b vanished from one plan: its clock starts again.
        let later = t0 + 3 * second;
        let (now, _) = confirmations.confirm(vec![], later, second);
        assert!(now.is_empty());
        let (now, _) = confirmations.confirm(vec![delete("b")], later, second);
        assert!(now.is_empty(), "b was forgotten");
    }
}
