//! The generic controller loop. A controller declares its [`Watches`] (each a kube-rs
//! reflector: a read-only store kept by list+watch, relisting on 410 by itself and shared
//! with the manager's other controllers ([`super::informers`]), plus this controller's
//! mapping from a changed object to the keys to reconcile) and a reconcile function
//! (key → [`Plan`]: read the stores, call the pure planner). [`Controller::run`] waits for the
//! caches, then workers take keys from the [`WorkQueue`], plan, execute the actions in order,
//! and requeue a key with backoff when a write fails. A periodic resync re-queues every key
//! the stores know, so nothing depends on an event never being missed.
//!
//! A key whose last plan created or deleted objects of a kind the controller watches (in
//! full: no label or field selector) is not planned again until the stores show those
//! writes ([`expectations`]); meanwhile it is looked at again every
//! [`EXPECTATIONS_RECHECK`].

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use kube::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::executor::{Written, WrittenObject, execute_recording};
use super::informers::{Informers, Subscription};
use super::queue::WorkQueue;
use crate::action::Action;

#[path = "expectations.rs"]
pub mod expectations;

use expectations::{Expectations, Observed};

/// How often a key held by unmet expectations is looked at again.
pub const EXPECTATIONS_RECHECK: Duration = Duration::from_millis(100);

/// What a controller reconciles: one object (or, for controllers keyed by something else,
/// one namespace, one node ...).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// `None` for cluster-scoped keys.
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectKey {
    pub fn cluster(name: impl Into<String>) -> Self {
        ObjectKey {
            namespace: None,
            name: name.into(),
        }
    }

    pub fn namespaced(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectKey {
            namespace: Some(namespace.into()),
            name: name.into(),
        }
    }

    /// The key of an object itself.
    pub fn of<K: kube::Resource>(object: &K) -> Self {
        let meta = object.meta();
        ObjectKey {
            namespace: meta.namespace.clone(),
            name: meta.name.clone().unwrap_or_default(),
        }
    }

    /// The kube-rs store reference for looking the key up in a [`Store`].
    pub fn store_ref<K>(&self) -> reflector::ObjectRef<K>
    where
        K: kube::Resource<DynamicType = ()>,
    {
        let reference = reflector::ObjectRef::new(&self.name);
        match &self.namespace {
            Some(ns) => reference.within(ns),
            None => reference,
        }
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{ns}/{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// The result of reconciling one key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// The writes, performed in order.
    pub actions: Vec<Action>,
    /// Reconcile the key again after this long even if nothing changes (deadlines,
    /// schedules, grace periods).
    pub requeue_after: Option<Duration>,
}

impl From<Vec<Action>> for Plan {
    fn from(actions: Vec<Action>) -> Self {
        Plan {
            actions,
            requeue_after: None,
        }
    }
}

type Keys = Vec<ObjectKey>;

/// A type-erased look into one store: (namespace, name) → what it shows.
type Lookup = Arc<dyn Fn(Option<&str>, &str) -> Observed + Send + Sync>;

/// The stores that hold every object of their kind, by (apiVersion, kind).
#[derive(Clone, Default)]
struct Lookups(HashMap<(String, String), Lookup>);

impl Lookups {
    fn observe(&self, object: &WrittenObject) -> Observed {
        self.0
            .get(&(object.api_version.clone(), object.kind.clone()))
            .map_or(Observed::Unwatched, |lookup| {
                lookup(object.namespace.as_deref(), &object.name)
            })
    }

    fn watches(&self, object: &WrittenObject) -> bool {
        self.0
            .contains_key(&(object.api_version.clone(), object.kind.clone()))
    }
}

/// A controller's watch caches and the queue they feed.
pub struct Watches {
    client: kube::Client,
    /// The registry the watches join.
    informers: Informers,
    queue: Arc<WorkQueue<ObjectKey>>,
    /// One future per watch: runs the reflector and queues mapped keys.
    drivers: Vec<BoxFuture<'static, ()>>,
    /// One future per watch: resolves when its store has its first full list.
    synced: Vec<BoxFuture<'static, ()>>,
    /// One function per watch: the keys of everything in its store (periodic resync).
    resync: Vec<Box<dyn Fn() -> Keys + Send + Sync>>,
    /// The complete stores, for checking expectations.
    lookups: Lookups,
}

impl Watches {
    /// Watches on `client` that join the registry of the manager building the controller
    /// ([`Informers::scope`]), or a private registry outside a manager.
    pub fn new(client: kube::Client) -> Self {
        Self::with_informers(client, Informers::current().unwrap_or_default())
    }

    /// Watches on `client` that share the watches of `informers`.
    pub fn with_informers(client: kube::Client, informers: Informers) -> Self {
        Watches {
            client,
            informers,
            queue: Arc::new(WorkQueue::default()),
            drivers: Vec::new(),
            synced: Vec::new(),
            resync: Vec::new(),
            lookups: Lookups::default(),
        }
    }

    /// The client the watches use (for the `Api`s a controller builds).
    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    /// Watches `api` (list+watch with `config`) into a store; every object that is listed,
    /// added, changed or deleted is mapped by `keys` to the keys to reconcile. The watch and
    /// its store are shared with every other controller of the registry asking for the same
    /// kind, namespace scope and `config` ([`super::informers`]); the mapping is this controller's.
    pub fn watch<K>(
        &mut self,
        api: Api<K>,
        config: watcher::Config,
        keys: impl Fn(&K) -> Keys + Send + Sync + 'static,
    ) -> Store<K>
    where
        K: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync,
        K: 'static,
    {
        let complete = config.label_selector.is_none() && config.field_selector.is_none();
        let keys = Arc::new(keys);
        let (queue, map) = (self.queue.clone(), keys.clone());
        let Subscription {
            store: reader,
            driver,
        } = self.informers.subscribe(api, config, move |object: &K| {
            map(object).into_iter().for_each(|key| queue.add(key));
        });
        if complete {
            let store = reader.clone();
            let lookup: Lookup = Arc::new(move |namespace, name| {
                let mut reference = reflector::ObjectRef::<K>::new(name);
                if let Some(ns) = namespace {
                    reference = reference.within(ns);
                }
                match store.get(&reference) {
                    None => Observed::Absent,
                    Some(object) => Observed::Present {
                        uid: object.meta().uid.clone(),
                        deleting: object.meta().deletion_timestamp.is_some(),
                    },
                }
            });
            self.lookups.0.insert(
                (K::api_version(&()).into_owned(), K::kind(&()).into_owned()),
                lookup,
            );
        }
        self.drivers.push(driver.boxed());
        let ready = reader.clone();
        self.synced.push(
            async move {
                // Only fails when the writer is gone, i.e. the driver stopped: shutdown.
                let _ = ready.wait_until_ready().await;
            }
            .boxed(),
        );
        let all = reader.clone();
        self.resync.push(Box::new(move || {
            all.state().iter().flat_map(|object| keys(object)).collect()
        }));
        reader
    }
}

impl std::fmt::Debug for Watches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watches")
            .field("watches", &self.drivers.len())
            .field("queued", &self.queue.len())
            .finish()
    }
}

type Reconcile = dyn Fn(&ObjectKey) -> Plan + Send + Sync;

/// One controller: its watches, its reconcile function and its workers.
pub struct Controller {
    name: &'static str,
    watches: Watches,
    reconcile: Arc<Reconcile>,
    workers: usize,
    resync_period: Duration,
}

impl Controller {
    /// `reconcile` reads the stores `watches` returned and calls the planner; it must not
    /// block (no I/O: the runtime performs the plan).
    pub fn new(
        name: &'static str,
        watches: Watches,
        reconcile: impl Fn(&ObjectKey) -> Plan + Send + Sync + 'static,
    ) -> Self {
        Controller {
            name,
            watches,
            reconcile: Arc::new(reconcile),
            workers: 2,
            resync_period: Duration::from_secs(300),
        }
    }

    /// How many keys are reconciled at once (default 2; never the same key twice).
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers.max(1);
        self
    }

    /// How often every known key is queued again (default 5 minutes).
    pub fn resync_period(mut self, period: Duration) -> Self {
        self.resync_period = period;
        self
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Runs until `token` is cancelled; returns once every task has stopped.
    pub async fn run(self, token: CancellationToken) {
        let name = self.name;
        let Watches {
            client,
            informers: _,
            queue,
            drivers,
            synced,
            resync,
            lookups,
        } = self.watches;
        let expectations = Arc::new(Expectations::default());
        let tasks = TaskTracker::new();
        for driver in drivers {
            let token = token.clone();
            tasks.spawn(async move {
                tokio::select! {
                    () = token.cancelled() => {}
                    () = driver => {}
                }
            });
        }
        let all_synced = futures::future::join_all(synced);
        let synced = tokio::select! {
            () = token.cancelled() => false,
            _ = all_synced => true,
        };
        if synced {
            tracing::info!(controller = name, "caches synced, starting workers");
            // The stores' contents, for a controller that joined a watch already running
            // (its earlier events went to the others); otherwise these keys are queued.
            resync
                .iter()
                .flat_map(|keys| keys())
                .for_each(|key| queue.add(key));
            for _ in 0..self.workers {
                let (queue, token, client) = (queue.clone(), token.clone(), client.clone());
                let reconcile = self.reconcile.clone();
                let (lookups, expectations) = (lookups.clone(), expectations.clone());
                tasks.spawn(async move {
                    while let Some(key) = queue.next(&token).await {
                        let held = expectations.unmet(
                            &key,
                            |object| lookups.observe(object),
                            Instant::now(),
                        );
                        if let Some(remaining) = held {
                            queue.add_after(key.clone(), remaining.min(EXPECTATIONS_RECHECK));
                        } else {
                            let written =
                                reconcile_one(name, &client, &queue, &*reconcile, &key).await;
                            let watched = written
                                .into_iter()
                                .filter(|w| lookups.watches(w.object()))
                                .collect();
                            expectations.expect(&key, watched, Instant::now());
                        }
                        queue.done(&key);
                    }
                });
            }
            let mut ticker = tokio::time::interval(self.resync_period);
            ticker.tick().await; // the first tick is immediate; the initial list queued all.
            loop {
                tokio::select! {
                    () = token.cancelled() => break,
                    _ = ticker.tick() => resync.iter().flat_map(|keys| keys()).for_each(|key| queue.add(key)),
                }
            }
        }
        tasks.close();
        tasks.wait().await;
        tracing::info!(controller = name, "stopped");
    }
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("name", &self.name)
            .field("watches", &self.watches)
            .field("workers", &self.workers)
            .field("resync_period", &self.resync_period)
            .finish()
    }
}

/// Plans `key`, executes the plan and queues the key again as the plan or its failure
/// asks; returns what the plan created and deleted.
async fn reconcile_one(
    name: &'static str,
    client: &kube::Client,
    queue: &WorkQueue<ObjectKey>,
    reconcile: &Reconcile,
    key: &ObjectKey,
) -> Vec<Written> {
    // A planner that panics on an odd object must not take the worker (and with it every
    // other key) down: the key is retried with backoff, the others go on.
    let plan = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| reconcile(key))) {
        Ok(plan) => plan,
        Err(panic) => {
            let delay = queue.add_rate_limited(key.clone());
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(controller = name, %key, ?delay, "planning panicked, retrying: {message}");
            return Vec::new();
        }
    };
    let executed = execute_recording(client, &plan.actions).await;
    match executed.result {
        Ok(()) => {
            queue.forget(key);
            if let Some(delay) = plan.requeue_after {
                queue.add_after(key.clone(), delay);
            }
        }
        Err(err) if err.is_stale_plan() => {
            let delay = queue.add_rate_limited(key.clone());
            tracing::debug!(controller = name, %key, ?delay, "stale plan, planning again: {err}");
        }
        Err(err) => {
            let delay = queue.add_rate_limited(key.clone());
            tracing::warn!(controller = name, %key, ?delay, "reconcile failed, retrying: {err}");
        }
    }
    executed.written
}
