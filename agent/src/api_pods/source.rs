//! The API pod source: a reflector of the pods bound to this node, merged with the static pods
//! into the desired set after every change on either side. Before the first complete list
//! only the static pods are published (they must not wait for an apiserver they may be
//! running), and `ready` stays false so nothing is taken for an orphan.

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt as _, reflector};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::ApiView;
use super::desired::merge;
use crate::pod::manager::DesiredPods;

/// Starts the source task; returns the desired set and the API view it maintains.
pub(super) fn spawn(
    client: kube::Client,
    node_name: &str,
    static_pods: watch::Receiver<DesiredPods>,
    cancel: &CancellationToken,
) -> (watch::Receiver<DesiredPods>, ApiView) {
    let (reader, writer) = reflector::store::<Pod>();
    let api: Api<Pod> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node_name}"));
    let stream = reflector(writer, watcher::watcher(api, config).default_backoff());
    let first = static_pods.borrow().clone();
    let (desired_tx, desired_rx) = watch::channel(DesiredPods::new());
    desired_tx.send_replace(first);
    let (changes_tx, changes_rx) = watch::channel(0u64);
    let (ready_tx, ready_rx) = watch::channel(false);
    let view = ApiView {
        pods: reader,
        changes: changes_rx,
        ready: ready_rx,
    };
    let task = Publisher {
        static_pods,
        desired: desired_tx,
        changes: changes_tx,
        ready: ready_tx,
        pods: view.pods.clone(),
    };
    tokio::spawn(task.run(stream, cancel.clone()));
    (desired_rx, view)
}

struct Publisher {
    static_pods: watch::Receiver<DesiredPods>,
    desired: watch::Sender<DesiredPods>,
    changes: watch::Sender<u64>,
    ready: watch::Sender<bool>,
    pods: reflector::Store<Pod>,
}

impl Publisher {
    async fn run(
        mut self,
        stream: impl futures::Stream<Item = Result<Event<Pod>, watcher::Error>>,
        cancel: CancellationToken,
    ) {
        let mut stream = std::pin::pin!(stream);
        let mut static_open = true;
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                item = stream.next() => match item {
                    Some(Ok(event)) => {
                        if matches!(event, Event::InitDone) && !*self.ready.borrow() {
                            tracing::info!(pods = self.pods.state().len(), "pods from the apiserver listed");
                            self.ready.send_replace(true);
                        }
                        self.changes.send_modify(|n| *n = n.wrapping_add(1));
                    }
                    // The watcher retries with back-off; the last known pods stay.
                    Some(Err(err)) => tracing::warn!(%err, "watching pods of this node"),
                    None => return,
                },
                changed = self.static_pods.changed(), if static_open => {
                    if changed.is_err() {
                        static_open = false;
                    }
                }
            }
            self.publish();
        }
    }

    fn publish(&self) {
        let statics = self.static_pods.borrow().clone();
        let merged = if *self.ready.borrow() {
            merge(&statics, &self.pods.state())
        } else {
            statics
        };
        self.desired.send_if_modified(|current| {
            if *current == merged {
                false
            } else {
                *current = merged;
                true
            }
        });
    }
}
