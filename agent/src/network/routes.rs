//! host-gw routing in kwk-node: watches the Node objects and keeps a route to every other
//! node's podCIDR via its InternalIP (`kwk_netdp::routes` plans; a [`RouteTable`] executes),
//! after every change and every `resync` (repairing routes someone removed). A node that leaves
//! takes its route with it.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher;
use kwk_netdp::model::Cidr;
use kwk_netdp::routes::{HostRoute, PeerNode, RouteAction, desired_routes, plan_routes};
use tokio_util::sync::CancellationToken;

use crate::proxy::watch::{Change, Relist};

/// The kernel's routing table as far as our routes go.
pub trait RouteTable: Send + 'static {
    /// Our routes (marked with `kwk_netdp::routes::ROUTE_PROTOCOL`).
    fn list(&mut self) -> std::io::Result<Vec<HostRoute>>;
    fn apply(&mut self, action: &RouteAction) -> std::io::Result<()>;
}

/// The kernel's main table through rtnetlink, opened in kwk-node's network namespace.
impl RouteTable for kwk_netdp::rtnl::RtnlSocket {
    fn list(&mut self) -> std::io::Result<Vec<HostRoute>> {
        self.host_routes()
    }

    fn apply(&mut self, action: &RouteAction) -> std::io::Result<()> {
        self.apply_route(action)
    }
}

/// Applies the plan from the kernel's routes to `desired`; returns the failed steps' count
/// (each is logged and retried at the next reconcile).
pub fn reconcile(
    table: &mut dyn RouteTable,
    desired: &std::collections::BTreeSet<HostRoute>,
) -> usize {
    let observed = match table.list() {
        Ok(routes) => routes,
        Err(err) => {
            tracing::warn!(%err, "listing pod network routes");
            return 1;
        }
    };
    let mut failed = 0;
    for action in plan_routes(desired, &observed) {
        match table.apply(&action) {
            Ok(()) => tracing::info!(?action, "pod network route"),
            Err(err) => {
                failed += 1;
                tracing::warn!(?action, %err, "pod network route failed; retrying later");
            }
        }
    }
    failed
}

/// Runs until `cancel`: watches Nodes, reconciles on change and every `resync`.
pub async fn run(
    client: kube::Client,
    me: String,
    own_cidrs: tokio::sync::watch::Receiver<Option<String>>,
    table: Box<dyn RouteTable>,
    resync: Duration,
    cancel: CancellationToken,
) {
    let stream =
        watcher::watcher(Api::<Node>::all(client), watcher::Config::default()).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut relist = Relist::default();
    let mut peers: BTreeMap<String, PeerNode> = BTreeMap::new();
    let mut listed = false;
    let mut table = Some(table);
    let mut tick = tokio::time::interval(resync);
    let mut own_cidrs = own_cidrs;
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
            changed = own_cidrs.changed() => if changed.is_err() { return },
            item = stream.next() => match item {
                Some(Ok(event)) => {
                    for change in relist.changes(event) {
                        match change {
                            Change::Applied(node) => {
                                let peer = PeerNode::from_node(&node);
                                peers.insert(peer.name.clone(), peer);
                            }
                            Change::Deleted((_, name)) => {
                                peers.remove(&name);
                            }
                            Change::Listed => listed = true,
                        }
                    }
                }
                Some(Err(err)) => tracing::warn!(%err, "watching nodes for pod routes"),
                None => return,
            },
        }
        // Until the first full list, a missing node may only be unlisted yet.
        if !listed {
            continue;
        }
        let own: Vec<Cidr> = own_cidrs
            .borrow()
            .as_deref()
            .map(|t| t.split(',').filter_map(|c| c.trim().parse().ok()).collect())
            .unwrap_or_default();
        let nodes: Vec<PeerNode> = peers.values().cloned().collect();
        let desired = desired_routes(&me, &own, &nodes);
        let Some(mut t) = table.take() else { return };
        let joined = tokio::task::spawn_blocking(move || {
            reconcile(t.as_mut(), &desired);
            t
        })
        .await;
        match joined {
            Ok(t) => table = Some(t),
            Err(err) => {
                tracing::error!(%err, "the pod route reconciler panicked");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// A routing table in memory that can refuse one destination.
    #[derive(Default)]
    struct Table {
        routes: BTreeSet<HostRoute>,
        refuse: Option<Cidr>,
    }

    impl RouteTable for Table {
        fn list(&mut self) -> std::io::Result<Vec<HostRoute>> {
            Ok(self.routes.iter().copied().collect())
        }
        fn apply(&mut self, action: &RouteAction) -> std::io::Result<()> {
            match action {
                RouteAction::Replace(r) if Some(r.dst) == self.refuse => {
                    Err(std::io::Error::other("network unreachable"))
                }
                RouteAction::Replace(r) => {
                    self.routes.retain(|x| x.dst != r.dst);
                    self.routes.insert(*r);
                    Ok(())
                }
                RouteAction::Delete(r) => {
                    self.routes.remove(r);
                    Ok(())
                }
            }
        }
    }

    fn route(dst: &str, via: &str) -> HostRoute {
        HostRoute {
            dst: dst.parse().unwrap(),
            via: via.parse().unwrap(),
        }
    }

    #[test]
    fn reconcile_converges_and_retries_what_failed() {
        let mut table = Table {
            routes: [route("10.244.9.0/24", "192.168.0.9")].into(),
            refuse: Some("10.244.3.0/24".parse().unwrap()),
        };
        let desired: BTreeSet<HostRoute> = [
            route("10.244.2.0/24", "192.168.0.2"),
            route("10.244.3.0/24", "192.168.0.3"),
        ]
        .into();
        assert_eq!(reconcile(&mut table, &desired), 1);
        assert_eq!(
            table.routes,
            [route("10.244.2.0/24", "192.168.0.2")].into(),
            "the stale route went, the refused one is missing"
        );
        table.refuse = None;
        assert_eq!(reconcile(&mut table, &desired), 0);
        assert_eq!(table.routes, desired);
    }
}
