//! Services and EndpointSlices from the apiserver into the proxy's events. A watcher restart
//! relists; objects missing from the new list were deleted while the watch was down, and
//! [`Relist`] reports them (the watcher itself only re-applies what it lists).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::Sender;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use kwk_netdp::model::ServiceName;
use kwk_netdp::runner::ProxyEvent;
use tokio_util::sync::CancellationToken;

/// (namespace, name) of an object.
pub type ObjectKey = (String, String);

/// What a watcher event means for the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change<K> {
    Applied(K),
    Deleted(ObjectKey),
    /// A (re)list is complete.
    Listed,
}

/// Tracks the objects seen so that a relist's deletions are reported.
#[derive(Debug, Default)]
pub struct Relist {
    known: BTreeSet<ObjectKey>,
    listing: Option<BTreeSet<ObjectKey>>,
}

impl Relist {
    /// The changes one watcher event stands for.
    pub fn changes<K: kube::Resource>(&mut self, event: Event<K>) -> Vec<Change<K>> {
        match event {
            Event::Apply(obj) => {
                self.known.insert(key(obj.meta()));
                vec![Change::Applied(obj)]
            }
            Event::Delete(obj) => {
                let k = key(obj.meta());
                self.known.remove(&k);
                vec![Change::Deleted(k)]
            }
            Event::Init => {
                self.listing = Some(BTreeSet::new());
                Vec::new()
            }
            Event::InitApply(obj) => {
                let k = key(obj.meta());
                self.listing.get_or_insert_default().insert(k.clone());
                self.known.insert(k);
                vec![Change::Applied(obj)]
            }
            Event::InitDone => {
                let listed = self.listing.take().unwrap_or_default();
                let gone: Vec<ObjectKey> = self.known.difference(&listed).cloned().collect();
                self.known = listed;
                gone.into_iter()
                    .map(Change::Deleted)
                    .chain([Change::Listed])
                    .collect()
            }
        }
    }
}

fn key(meta: &ObjectMeta) -> ObjectKey {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// Turns a change of a Service into a proxy event.
pub fn service_event(change: Change<Service>) -> Option<ProxyEvent> {
    match change {
        Change::Applied(s) => Some(ProxyEvent::ServiceApplied(Box::new(s))),
        Change::Deleted((ns, name)) => Some(ProxyEvent::ServiceDeleted(ServiceName::new(ns, name))),
        Change::Listed => None,
    }
}

/// Turns a change of an EndpointSlice into a proxy event.
pub fn slice_event(change: Change<EndpointSlice>) -> Option<ProxyEvent> {
    match change {
        Change::Applied(s) => Some(ProxyEvent::SliceApplied(Box::new(s))),
        Change::Deleted((ns, name)) => Some(ProxyEvent::SliceDeleted(Box::new(EndpointSlice {
            metadata: ObjectMeta {
                namespace: Some(ns),
                name: Some(name),
                ..ObjectMeta::default()
            },
            ..EndpointSlice::default()
        }))),
        Change::Listed => None,
    }
}

/// Counts down the initial lists; the last one tells the proxy it may sync.
#[derive(Debug, Clone)]
pub struct InitialLists(Arc<AtomicUsize>);

impl InitialLists {
    pub fn new(count: usize) -> Self {
        Self(Arc::new(AtomicUsize::new(count)))
    }

    fn done(&self, events: &Sender<ProxyEvent>) {
        if self.0.fetch_sub(1, Ordering::AcqRel) == 1 {
            let _ = events.send(ProxyEvent::InitialListsDone);
        }
    }
}

/// Watches all objects of kind `K` until `cancel`, sending proxy events.
pub async fn run<K>(
    api: Api<K>,
    to_event: fn(Change<K>) -> Option<ProxyEvent>,
    events: Sender<ProxyEvent>,
    lists: InitialLists,
    cancel: CancellationToken,
) where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    K::DynamicType: Default,
{
    let kind = K::kind(&K::DynamicType::default()).into_owned();
    let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut relist = Relist::default();
    let mut first_list = true;
    loop {
        let item = tokio::select! {
            () = cancel.cancelled() => return,
            item = stream.next() => item,
        };
        match item {
            Some(Ok(event)) => {
                for change in relist.changes(event) {
                    if matches!(change, Change::Listed) {
                        if std::mem::take(&mut first_list) {
                            tracing::info!(%kind, "listed for the proxy");
                            lists.done(&events);
                        }
                        continue;
                    }
                    if let Some(event) = to_event(change)
                        && events.send(event).is_err()
                    {
                        return;
                    }
                }
            }
            // The watcher retries with back-off; the proxy keeps its rules meanwhile.
            Some(Err(err)) => tracing::warn!(%kind, %err, "watching for the proxy"),
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str) -> Service {
        Service {
            metadata: ObjectMeta {
                namespace: Some("ns".into()),
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            ..Service::default()
        }
    }

    fn names(changes: &[Change<Service>]) -> Vec<String> {
        changes
            .iter()
            .map(|c| match c {
                Change::Applied(s) => format!("+{}", s.metadata.name.as_deref().unwrap_or("")),
                Change::Deleted((_, n)) => format!("-{n}"),
                Change::Listed => "listed".into(),
            })
            .collect()
    }

    #[test]
    fn a_relist_reports_what_vanished_while_the_watch_was_down() {
        let mut r = Relist::default();
        let mut all = Vec::new();
        for event in [
            Event::Init,
            Event::InitApply(svc("a")),
            Event::InitApply(svc("b")),
            Event::InitDone,
            Event::Apply(svc("c")),
            Event::Delete(svc("a")),
            // The watch broke; b was deleted and d created meanwhile.
            Event::Init,
            Event::InitApply(svc("c")),
            Event::InitApply(svc("d")),
            Event::InitDone,
        ] {
            all.extend(r.changes(event));
        }
        assert_eq!(
            names(&all),
            ["+a", "+b", "listed", "+c", "-a", "+c", "+d", "-b", "listed"]
        );
    }

    #[test]
    fn deleted_slices_carry_their_key() {
        let Some(ProxyEvent::SliceDeleted(s)) =
            slice_event(Change::Deleted(("ns".into(), "x".into())))
        else {
            panic!("not a slice deletion");
        };
        assert_eq!(key(&s.metadata), ("ns".to_owned(), "x".to_owned()));
    }
}
