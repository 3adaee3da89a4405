//! Keeps the mirror pods current: after every change of the static pods or of the API's pods on
//! this node (and every [`RESYNC`]), plans with [`plan_mirrors`] and carries the actions out.
//! Creating needs the Node's UID (the owner reference), so mirror pods wait for the node to be
//! registered.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{DeleteParams, PostParams, Preconditions};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::ApiView;
use super::desired::is_mirror;
use super::mirror::{MirrorAction, mirror_pod, plan_mirrors};
use crate::pod::manager::DesiredPods;

/// Plan again at least this often (a failed action is retried then).
const RESYNC: Duration = Duration::from_secs(5);

pub(super) async fn run(
    client: kube::Client,
    node_name: String,
    mut static_pods: watch::Receiver<DesiredPods>,
    mut view: ApiView,
    cancel: CancellationToken,
) {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut node_uid: Option<String> = None;
    let mut tick = tokio::time::interval(RESYNC);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut static_open = true;
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            changed = static_pods.changed(), if static_open => static_open = changed.is_ok(),
            changed = view.changes.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = tick.tick() => {}
        }
        if !view.is_ready() {
            continue;
        }
        let statics = static_pods.borrow_and_update().clone();
        let mirrors: Vec<Arc<Pod>> = view
            .pods
            .state()
            .into_iter()
            .filter(|p| is_mirror(p))
            .collect();
        for action in plan_mirrors(&statics, &mirrors) {
            match action {
                MirrorAction::Delete {
                    namespace,
                    name,
                    uid,
                } => delete_mirror(&client, &namespace, &name, &uid).await,
                MirrorAction::Create { static_uid } => {
                    let Some(pod) = statics.get(&static_uid) else {
                        continue;
                    };
                    if node_uid.is_none() {
                        node_uid = match nodes.get_opt(&node_name).await {
                            Ok(node) => node.and_then(|n| n.metadata.uid),
                            Err(err) => {
                                tracing::warn!(%err, "reading this node for mirror pods");
                                None
                            }
                        };
                    }
                    let Some(uid) = node_uid.as_deref() else {
                        tracing::debug!("node not registered yet; mirror pods wait");
                        break;
                    };
                    create_mirror(&client, mirror_pod(pod, &node_name, uid)).await;
                }
            }
        }
    }
}

async fn create_mirror(client: &kube::Client, pod: Pod) {
    let namespace = crate::pod::spec::namespace(&pod).to_string();
    let name = crate::pod::spec::name(&pod).to_string();
    let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    match api.create(&PostParams::default(), &pod).await {
        Ok(_) => tracing::info!(%namespace, %name, "mirror pod created"),
        // A create racing with the watch: the next plan sees the existing one.
        Err(kube::Error::Api(status)) if status.is_already_exists() => {}
        Err(err) => tracing::warn!(%namespace, %name, %err, "creating mirror pod"),
    }
}

async fn delete_mirror(client: &kube::Client, namespace: &str, name: &str, uid: &str) {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => tracing::info!(%namespace, %name, %uid, "mirror pod deleted"),
        Err(kube::Error::Api(status)) if status.is_not_found() || status.is_conflict() => {}
        Err(err) => tracing::warn!(%namespace, %name, %err, "deleting mirror pod"),
    }
}
