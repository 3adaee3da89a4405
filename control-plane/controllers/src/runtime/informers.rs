//! Shared watches (upstream's shared informers): the controllers one
//! [`ControllerManager`](super::ControllerManager) runs share one list+watch and one
//! read-only store per (kind, namespace scope, watcher configuration — label and field
//! selectors included), instead of each controller listing and watching pods on its own.
//!
//! [`Informers`] is the registry. A subscriber hands it an `Api`, a `watcher::Config` and a
//! callback; it gets back the shared [`Store`] and a [`WatchDriver`]. The first subscriber
//! of a (kind, scope, config) creates the watch; later ones join it. The driver calls every
//! subscriber's callback with every object listed, added, changed or deleted, synchronously
//! and in order, so no subscriber can lag behind or lose an event (callbacks only map the
//! object to keys and queue them; they must not block). Each subscribing controller polls a
//! clone of the driver; the watch runs while any of them does and stops when the last one is
//! dropped.
//!
//! Controllers do not name the registry: [`Watches::new`](super::Watches::new) joins the
//! registry of the manager building it ([`Informers::scope`]), and a controller built
//! elsewhere (tests) gets a private one — the behaviour before sharing.

use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures::future::{BoxFuture, Shared};
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use kube::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;

/// Called with every object its watch lists, adds, changes or deletes.
type OnChange<K> = Arc<dyn Fn(&K) + Send + Sync>;

/// The events one watch produces (a kube-rs watcher, or a test's stream).
pub type WatchEvents<K> = BoxStream<'static, watcher::Result<watcher::Event<K>>>;

/// Runs one shared watch: keeps its store and calls its subscribers. Every subscriber polls
/// a clone; the watch stops when the last clone is dropped.
pub type WatchDriver = Shared<BoxFuture<'static, ()>>;

/// The bound every watched kind meets.
pub trait Watchable:
    kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
}

impl<K> Watchable for K where
    K: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
}

/// What identifies one shared watch.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WatchKey {
    kind: TypeId,
    /// `apiVersion/kind`, for logs.
    resource: String,
    /// `None`: every namespace (or a cluster-scoped kind).
    namespace: Option<String>,
    /// The selectors, for logs (also part of `config`).
    selectors: String,
    /// The whole watcher configuration (selectors, page size, ...) as its `Debug` text:
    /// watches that differ in anything are not shared.
    config: String,
}

impl WatchKey {
    /// The key of watching `K` in `namespace` with `config`.
    pub fn of<K: Watchable>(namespace: Option<&str>, config: &watcher::Config) -> Self {
        WatchKey {
            kind: TypeId::of::<K>(),
            resource: format!("{}/{}", K::api_version(&()), K::kind(&())),
            namespace: namespace.map(String::from),
            selectors: [
                config
                    .label_selector
                    .as_deref()
                    .map(|s| format!("labels {s}")),
                config
                    .field_selector
                    .as_deref()
                    .map(|s| format!("fields {s}")),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(", "),
            config: format!("{config:?}"),
        }
    }
}

/// A subscriber's view of a shared watch.
pub struct Subscription<K: Watchable> {
    /// The shared store (ready once the watch has listed).
    pub store: Store<K>,
    /// Poll this (or a clone) to keep the watch running.
    pub driver: WatchDriver,
}

impl<K: Watchable> std::fmt::Debug for Subscription<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("objects", &self.store.len())
            .finish_non_exhaustive()
    }
}

/// One shared watch.
struct SharedWatch<K: Watchable> {
    store: Store<K>,
    subscribers: Arc<Mutex<Vec<OnChange<K>>>>,
    driver: WatchDriver,
}

impl<K: Watchable> SharedWatch<K> {
    fn start(events: WatchEvents<K>) -> Self {
        let (store, writer) = reflector::store();
        let subscribers: Arc<Mutex<Vec<OnChange<K>>>> = Arc::default();
        let notify = subscribers.clone();
        let stream = reflector::reflector(writer, events);
        let driver = async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(
                        watcher::Event::Apply(object)
                        | watcher::Event::InitApply(object)
                        | watcher::Event::Delete(object),
                    ) => {
                        // A snapshot: a callback may subscribe (it must not deadlock).
                        let callbacks = lock(&notify).clone();
                        callbacks.iter().for_each(|on_change| on_change(&object));
                    }
                    Ok(watcher::Event::Init | watcher::Event::InitDone) => {}
                    Err(err) => tracing::warn!(
                        kind = K::kind(&()).as_ref(),
                        "watch failed, retrying with backoff: {err}"
                    ),
                }
            }
        }
        .boxed()
        .shared();
        SharedWatch {
            store,
            subscribers,
            driver,
        }
    }
}

/// The registry of shared watches. Cloning shares the registry.
#[derive(Clone, Default)]
pub struct Informers {
    watches: Arc<Mutex<HashMap<WatchKey, Arc<dyn Any + Send + Sync>>>>,
}

thread_local! {
    /// The registry of the manager that is building controllers on this thread.
    static BUILDING: RefCell<Option<Informers>> = const { RefCell::new(None) };
}

impl Informers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `build` (a controller factory) so that the [`Watches`](super::Watches) it
    /// creates join this registry.
    pub fn scope<R>(&self, build: impl FnOnce() -> R) -> R {
        struct Restore(Option<Informers>);
        impl Drop for Restore {
            fn drop(&mut self) {
                BUILDING.set(self.0.take());
            }
        }
        let _restore = Restore(BUILDING.replace(Some(self.clone())));
        build()
    }

    /// The registry of the [`Self::scope`] this thread is in, if any.
    pub fn current() -> Option<Informers> {
        BUILDING.with_borrow(Clone::clone)
    }

    /// Joins (or starts) the watch of `api` with `config`; `on_change` is called with every
    /// object it lists, adds, changes or deletes from now on.
    pub fn subscribe<K: Watchable>(
        &self,
        api: Api<K>,
        config: watcher::Config,
        on_change: impl Fn(&K) + Send + Sync + 'static,
    ) -> Subscription<K> {
        let key = WatchKey::of::<K>(api.namespace(), &config);
        self.subscribe_to(
            key,
            move || watcher(api, config).default_backoff().boxed(),
            on_change,
        )
    }

    /// [`Self::subscribe`] to the watch `key` names; `events` makes its events when the
    /// watch is new.
    pub fn subscribe_to<K: Watchable>(
        &self,
        key: WatchKey,
        events: impl FnOnce() -> WatchEvents<K>,
        on_change: impl Fn(&K) + Send + Sync + 'static,
    ) -> Subscription<K> {
        let mut watches = lock(&self.watches);
        let existing = watches
            .get(&key)
            .and_then(|watch| watch.clone().downcast::<SharedWatch<K>>().ok());
        let watch = match existing {
            Some(watch) => watch,
            None => {
                tracing::debug!(
                    resource = key.resource,
                    namespace = ?key.namespace,
                    selectors = key.selectors,
                    "starting a shared watch"
                );
                let watch = Arc::new(SharedWatch::start(events()));
                watches.insert(key, watch.clone());
                watch
            }
        };
        lock(&watch.subscribers).push(Arc::new(on_change));
        Subscription {
            store: watch.store.clone(),
            driver: watch.driver.clone(),
        }
    }

    /// How many distinct watches the registry holds.
    pub fn watch_count(&self) -> usize {
        lock(&self.watches).len()
    }

    /// The distinct watches, sorted: `apiVersion/kind`, namespace scope, selectors.
    pub fn describe(&self) -> Vec<String> {
        let mut all: Vec<String> = lock(&self.watches)
            .keys()
            .map(|key| {
                let scope = key.namespace.as_deref().map_or_else(
                    || "cluster-wide".to_string(),
                    |ns| format!("in namespace {ns}"),
                );
                match key.selectors.as_str() {
                    "" => format!("{} {scope}", key.resource),
                    selectors => format!("{} {scope} ({selectors})", key.resource),
                }
            })
            .collect();
        all.sort();
        all
    }
}

impl std::fmt::Debug for Informers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Informers")
            .field("watches", &self.watch_count())
            .finish()
    }
}

/// Locks `mutex`; a panic elsewhere while it was held leaves plain data still usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
#[path = "informers_tests.rs"]
mod tests;
