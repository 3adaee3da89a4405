//! Pods from the apiserver: what a node with a `--kubeconfig` adds to the static pods.
//!
//! - `source`: a watch of the pods bound to this node (`spec.nodeName=<node>`, a kube-rs
//!   reflector: it resumes from the last resourceVersion and relists after 410 Gone), merged
//!   with the static pods into the [`DesiredPods`] the pod manager reads. While the apiserver
//!   is unreachable the last known pods stay; `sources_ready` turns true after the first
//!   complete list, and the manager looks for orphans only from then on.
//! - `mirror_sync`: a mirror pod in the API for each static pod (plan in `mirror`).
//! - `status_sync`: the node's pod statuses to the apiserver (`pods/status` PATCH, plan in
//!   `status_plan`), mirror pods getting their static pod's; and the end of a graceful
//!   deletion: once a deleted pod has stopped here, the node deletes it for good (grace 0,
//!   UID precondition), as the kubelet's status manager does.
//! - `events`: the pod events of the worker and the runtime as core/v1 Events, aggregated
//!   and kept while the apiserver is away ([`record_events`]).
//!
//! A pod deleted in the API keeps its place in the desired set with its `deletionTimestamp`;
//! the pod manager turns that into a termination within `deletionGracePeriodSeconds`.

mod desired;
mod events;
mod mirror;
mod mirror_sync;
mod source;
mod status_plan;
mod status_sync;

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::pod::events::RecordedEvent;
use crate::pod::manager::DesiredPods;
use crate::pod::store::StatusStore;

pub use desired::{is_mirror, merge};
pub use events::{COMPONENT, event_object, run as record_events};
pub use mirror::{MirrorAction, mirror_hash, mirror_pod, plan_mirrors, static_hash};
pub use status_plan::{StatusVersions, merge_patch, status_patch, wanted_status};

/// What the pod manager reads when the node has an apiserver.
#[derive(Debug)]
pub struct ApiPods {
    /// Static and API pods together.
    pub desired: watch::Receiver<DesiredPods>,
    /// True once the apiserver's pods have been listed completely.
    pub sources_ready: watch::Receiver<bool>,
}

/// Why the apiserver connection could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ApiPodsError {
    #[error("apiserver client: {0}")]
    Client(#[from] kube::Error),
}

/// The API's view of this node's pods, shared by the sync tasks.
#[derive(Clone)]
struct ApiView {
    pods: reflector::Store<Pod>,
    /// Bumped after every watch event.
    changes: watch::Receiver<u64>,
    ready: watch::Receiver<bool>,
}

impl ApiView {
    fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }
}

/// Connects to the apiserver of `kubeconfig` and starts the API pod source, mirror pods and
/// status sync for node `node_name` until `cancel`. `static_pods` is the static pod source
/// (its first value a completed scan); `events` the queue of the node's
/// [`EventSink`](crate::pod::events::EventSink), recorded in the API.
pub async fn start(
    client: kube::Client,
    node_name: &str,
    static_pods: watch::Receiver<DesiredPods>,
    store: StatusStore,
    events: tokio::sync::mpsc::Receiver<RecordedEvent>,
    cancel: CancellationToken,
) -> Result<ApiPods, ApiPodsError> {
    let (desired, view) = source::spawn(client.clone(), node_name, static_pods.clone(), &cancel);
    tokio::spawn(mirror_sync::run(
        client.clone(),
        node_name.to_string(),
        static_pods,
        view.clone(),
        cancel.clone(),
    ));
    tokio::spawn(events::run(
        client.clone(),
        node_name.to_string(),
        events,
        cancel.clone(),
    ));
    let sources_ready = view.ready.clone();
    tokio::spawn(status_sync::run(client, view, store, cancel));
    Ok(ApiPods {
        desired,
        sources_ready,
    })
}
