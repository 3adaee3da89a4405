//! The node facts admission decides with ([`NodeFacts`]): at start what kwk-node itself
//! registers (allocatable from the config and the machine, the managed labels,
//! `registerWithTaints`), then, with an apiserver, the Node object as it is in the API — its
//! labels and taints (an admin's `kubectl label` / `kubectl taint` included) and the
//! allocatable the node reports — kept current by a watch of that one Node.

use std::sync::Arc;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Node, Taint};
use kube::Api;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::admission::NodeFacts;
use crate::config::{KubeletConfig, NodeResources};
use crate::quantity;

/// The facts kwk-node knows without the API.
pub fn local(node_name: &str, allocatable: &NodeResources, config: &KubeletConfig) -> NodeFacts {
    let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    NodeFacts {
        node_name: node_name.to_string(),
        allocatable: [
            ("cpu".to_string(), as_i64(allocatable.cpu_millis)),
            ("memory".to_string(), as_i64(allocatable.memory_bytes)),
        ]
        .into(),
        max_pods: as_i64(allocatable.pods),
        labels: crate::node_status::plan::managed_labels(node_name),
        taints: config
            .register_with_taints
            .iter()
            .map(|t| Taint {
                key: t.key.clone(),
                value: Some(t.value.clone()).filter(|v| !v.is_empty()),
                effect: t.effect.name().to_string(),
                time_added: None,
            })
            .collect(),
        fetched: 0,
    }
}

/// The facts from the Node object: its labels, taints and reported allocatable (what it does
/// not report is kept from `base`).
pub fn from_node(node: &Node, base: &NodeFacts) -> NodeFacts {
    let mut facts = base.clone();
    facts.labels = node.metadata.labels.clone().unwrap_or_default();
    facts.taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let reported = node.status.as_ref().and_then(|s| s.allocatable.as_ref());
    let mut allocatable = base.allocatable.clone();
    for (name, value) in reported.into_iter().flatten() {
        let Ok(q) = quantity::parse(&value.0) else {
            continue;
        };
        if name == "pods" {
            facts.max_pods = q.value();
        } else {
            let amount = if name == "cpu" { q.milli() } else { q.value() };
            allocatable.insert(name.clone(), amount);
        }
    }
    facts.allocatable = allocatable;
    facts
}

/// The node facts as the pod manager follows them; with an apiserver, `refresh` asks for the
/// Node to be read again now (the answer bumps [`NodeFacts::fetched`]).
#[derive(Debug)]
pub struct NodeFactsWatch {
    pub facts: watch::Receiver<NodeFacts>,
    pub refresh: Option<Arc<Notify>>,
}

/// The node facts: `initial`, then (with a `client`) those of the Node `initial.node_name` in
/// the API after every change of it and on every refresh request, until `cancel`.
pub fn watch(
    client: Option<kube::Client>,
    initial: NodeFacts,
    cancel: &CancellationToken,
) -> NodeFactsWatch {
    let (tx, rx) = watch::channel(initial.clone());
    let Some(client) = client else {
        return NodeFactsWatch {
            facts: rx,
            refresh: None,
        };
    };
    let refresh = Arc::new(Notify::new());
    let requested = refresh.clone();
    let api: Api<Node> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("metadata.name={}", initial.node_name));
    let cancel = cancel.clone();
    tokio::spawn(async move {
        let stream = watcher::watcher(api.clone(), config)
            .default_backoff()
            .applied_objects();
        let mut stream = std::pin::pin!(stream);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = requested.notified() => {
                    let node = match api.get(&initial.node_name).await {
                        Ok(node) => Some(node),
                        Err(err) => {
                            tracing::warn!(%err, "reading this node's Node");
                            None
                        }
                    };
                    // Answered even on failure (the last facts stand), so nothing waits forever.
                    tx.send_modify(|current| {
                        let fetched = current.fetched.wrapping_add(1);
                        if let Some(node) = &node {
                            *current = from_node(node, &initial);
                        }
                        current.fetched = fetched;
                    });
                }
                item = stream.next() => match item {
                    Some(Ok(node)) => {
                        let mut facts = from_node(&node, &initial);
                        tx.send_if_modified(|current| {
                            facts.fetched = current.fetched;
                            let changed = *current != facts;
                            *current = facts;
                            changed
                        });
                    }
                    // The watcher retries with back-off; the last facts stay.
                    Some(Err(err)) => tracing::warn!(%err, "watching this node's Node"),
                    None => return,
                },
            }
        }
    });
    NodeFactsWatch {
        facts: rx,
        refresh: Some(refresh),
    }
}
