//! Graceful termination of real servers, as upstream's IPVS mode does it: a TCP real server
//! that leaves its virtual service (its endpoint was removed or is no longer usable) is not
//! deleted while it still has connections. Its weight goes to 0 (the scheduler sends it nothing
//! new, established connections carry on) and it joins the [`Draining`] queue; a periodic check
//! reads its connection counters and deletes it once active and inactive are both 0. UDP and
//! SCTP real servers are deleted at once (the kernel drops their remaining entries on the next
//! packet, `net.ipv4.vs.expire_nodest_conn=1`). An endpoint that comes back while its real
//! server drains gets its weight back and leaves the queue; a virtual service that goes away
//! takes its queued real servers with it.
//!
//! Pure: [`drain_removals`] turns the immediate deletions of [`super::plan_changes`] into
//! drains, [`plan_drained`] decides which queued real servers the periodic check deletes; the
//! dataplane reads the counters and applies the actions.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::plan::{DesiredService, IpvsAction};
use super::{Connections, Destination, ServiceKey};
use crate::model::Protocol;

/// One real server of one virtual service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RealServer {
    pub service: ServiceKey,
    pub addr: IpAddr,
    pub port: u16,
}

impl RealServer {
    pub fn new(service: ServiceKey, dest: &Destination) -> Self {
        Self {
            service,
            addr: dest.addr,
            port: dest.port,
        }
    }

    fn dest_key(&self) -> (IpAddr, u16) {
        (self.addr, self.port)
    }
}

/// Whether a real server of `protocol` drains rather than being deleted at once (upstream's
/// `IsRsGracefulTerminationNeeded`: everything but UDP and SCTP).
pub fn drains(protocol: Protocol) -> bool {
    !matches!(protocol, Protocol::Udp | Protocol::Sctp)
}

/// The real servers at weight 0 waiting for their connections to end, each with the
/// destination as the kernel holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Draining(BTreeMap<RealServer, Destination>);

impl Draining {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn contains(&self, rs: &RealServer) -> bool {
        self.0.contains_key(rs)
    }

    /// The queued real servers.
    pub fn iter(&self) -> impl Iterator<Item = (&RealServer, &Destination)> {
        self.0.iter()
    }

    /// The virtual services with queued real servers.
    pub fn services(&self) -> BTreeSet<ServiceKey> {
        self.0.keys().map(|rs| rs.service).collect()
    }

    /// Keeps only the real servers the kernel still lists (a full sync starts from there, so
    /// it neither trusts an entry someone deleted nor turns its re-creation into an update).
    pub fn retain_listed(&mut self, listed: &BTreeMap<RealServer, Connections>) {
        self.0.retain(|rs, _| listed.contains_key(rs));
    }
}

impl FromIterator<(RealServer, Destination)> for Draining {
    fn from_iter<T: IntoIterator<Item = (RealServer, Destination)>>(iter: T) -> Self {
        Self(iter.into_iter().collect())
    }
}

/// Actions to apply and the queue once they are applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GracefulPlan {
    pub actions: Vec<IpvsAction>,
    pub draining: Draining,
}

/// The virtual services whose counters [`drain_removals`] needs: those with a TCP real
/// server to delete that is not draining yet.
pub fn services_to_count(actions: &[IpvsAction], draining: &Draining) -> BTreeSet<ServiceKey> {
    actions
        .iter()
        .filter_map(|a| match a {
            IpvsAction::DelDest(k, d)
                if drains(k.protocol) && !draining.contains(&RealServer::new(*k, d)) =>
            {
                Some(*k)
            }
            _ => None,
        })
        .collect()
}

/// Makes the deletions of `actions` (as [`super::plan_changes`] planned them against the
/// kernel's state, or the last rule set's for an incremental sync) graceful:
///
/// - a TCP real server to delete: deleted if `connections` says it is idle (upstream tries
///   that first), else set to weight 0 and queued (counters unknown count as busy);
/// - one already queued: left alone (set to weight 0 again if someone raised it);
/// - a queued one `desired` wants back: restored (its `NewDest` becomes a `SetDest`, the kernel
///   still has it) and out of the queue;
/// - a deleted virtual service takes its queued real servers out of the queue;
/// - UDP and SCTP real servers: deleted at once.
pub fn drain_removals(
    actions: Vec<IpvsAction>,
    desired: &BTreeMap<ServiceKey, DesiredService>,
    draining: &Draining,
    connections: &BTreeMap<RealServer, Connections>,
) -> GracefulPlan {
    let mut queue = draining.0.clone();
    let mut out = Vec::with_capacity(actions.len());
    for action in actions {
        match action {
            IpvsAction::NewDest(k, d) if queue.contains_key(&RealServer::new(k, &d)) => {
                out.push(IpvsAction::SetDest(k, d));
            }
            IpvsAction::DelDest(k, d) if drains(k.protocol) => {
                let rs = RealServer::new(k, &d);
                let idle = connections.get(&rs).is_some_and(Connections::is_idle);
                if !queue.contains_key(&rs) && idle {
                    out.push(IpvsAction::DelDest(k, d));
                    continue;
                }
                let zero = Destination { weight: 0, ..d };
                if d.weight != 0 {
                    out.push(IpvsAction::SetDest(k, zero));
                }
                queue.insert(rs, zero);
            }
            IpvsAction::DelService(k) => {
                queue.retain(|rs, _| rs.service != k);
                out.push(IpvsAction::DelService(k));
            }
            other => out.push(other),
        }
    }
    queue.retain(|rs, _| {
        !desired
            .get(&rs.service)
            .is_some_and(|d| d.destinations.contains_key(&rs.dest_key()))
    });
    GracefulPlan {
        actions: out,
        draining: Draining(queue),
    }
}

/// The periodic check: deletes the queued real servers `listed` (each queued service's
/// destinations with counters; a service absent or empty is gone) shows idle, forgets those
/// no longer listed, keeps the rest.
pub fn plan_drained(
    draining: &Draining,
    listed: &BTreeMap<ServiceKey, Vec<(Destination, Connections)>>,
) -> GracefulPlan {
    let mut actions = Vec::new();
    let mut queue = BTreeMap::new();
    for (rs, queued) in &draining.0 {
        let found = listed
            .get(&rs.service)
            .and_then(|dests| dests.iter().find(|(d, _)| d.key() == rs.dest_key()));
        match found {
            None => {}
            Some((d, c)) if c.is_idle() => actions.push(IpvsAction::DelDest(rs.service, *d)),
            Some(_) => {
                queue.insert(*rs, *queued);
            }
        }
    }
    GracefulPlan {
        actions,
        draining: Draining(queue),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipvs::{Forward, Scheduler, VirtualService};

    fn key(protocol: Protocol) -> ServiceKey {
        ServiceKey {
            addr: "10.96.0.10".parse().expect("ip"),
            protocol,
            port: 80,
        }
    }

    fn dest(last: u8, weight: u32) -> Destination {
        Destination {
            addr: IpAddr::from([10, 244, 1, last]),
            port: 8080,
            weight,
            forward: Forward::Masquerade,
        }
    }

    fn rs(k: ServiceKey, last: u8) -> RealServer {
        RealServer::new(k, &dest(last, 0))
    }

    fn busy() -> Connections {
        Connections {
            active: 1,
            ..Connections::default()
        }
    }

    fn closing() -> Connections {
        Connections {
            inactive: 2,
            ..Connections::default()
        }
    }

    fn desired(k: ServiceKey, backends: &[u8]) -> BTreeMap<ServiceKey, DesiredService> {
        let service = VirtualService::new(k, Scheduler::RoundRobin, 0, None);
        let destinations = backends
            .iter()
            .map(|b| (dest(*b, 1).key(), dest(*b, 1)))
            .collect();
        BTreeMap::from([(
            k,
            DesiredService {
                service,
                destinations,
            },
        )])
    }

    fn queue(entries: &[RealServer]) -> Draining {
        entries
            .iter()
            .map(|rs| {
                (
                    *rs,
                    Destination {
                        addr: rs.addr,
                        port: rs.port,
                        weight: 0,
                        forward: Forward::Masquerade,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn drain_removals_table() {
        let tcp = key(Protocol::Tcp);
        let udp = key(Protocol::Udp);
        let sctp = key(Protocol::Sctp);
        let other = ServiceKey { port: 443, ..tcp };
        struct Row {
            name: &'static str,
            actions: Vec<IpvsAction>,
            desired: BTreeMap<ServiceKey, DesiredService>,
            draining: Draining,
            connections: Vec<(RealServer, Connections)>,
            want_actions: Vec<IpvsAction>,
            want_queue: Draining,
        }
        let rows = vec![
            Row {
                name: "TCP with an established connection: weight 0, queued",
                actions: vec![IpvsAction::DelDest(tcp, dest(2, 1))],
                desired: desired(tcp, &[3]),
                draining: Draining::default(),
                connections: vec![(rs(tcp, 2), busy())],
                want_actions: vec![IpvsAction::SetDest(tcp, dest(2, 0))],
                want_queue: queue(&[rs(tcp, 2)]),
            },
            Row {
                name: "TCP with only closing connections: still queued",
                actions: vec![IpvsAction::DelDest(tcp, dest(2, 1))],
                desired: desired(tcp, &[3]),
                draining: Draining::default(),
                connections: vec![(rs(tcp, 2), closing())],
                want_actions: vec![IpvsAction::SetDest(tcp, dest(2, 0))],
                want_queue: queue(&[rs(tcp, 2)]),
            },
            Row {
                name: "TCP idle: deleted at once",
                actions: vec![IpvsAction::DelDest(tcp, dest(2, 1))],
                desired: desired(tcp, &[3]),
                draining: Draining::default(),
                connections: vec![(rs(tcp, 2), Connections::default())],
                want_actions: vec![IpvsAction::DelDest(tcp, dest(2, 1))],
                want_queue: Draining::default(),
            },
            Row {
                name: "TCP, counters unknown: drained, never cut",
                actions: vec![IpvsAction::DelDest(tcp, dest(2, 1))],
                desired: desired(tcp, &[3]),
                draining: Draining::default(),
                connections: vec![],
                want_actions: vec![IpvsAction::SetDest(tcp, dest(2, 0))],
                want_queue: queue(&[rs(tcp, 2)]),
            },
            Row {
                name: "listed at weight 0 after a restart: queued without a write",
                actions: vec![IpvsAction::DelDest(tcp, dest(2, 0))],
                desired: desired(tcp, &[3]),
                draining: Draining::default(),
                connections: vec![(rs(tcp, 2), busy())],
                want_actions: vec![],
                want_queue: queue(&[rs(tcp, 2)]),
            },
            Row {
                name: "already draining, even idle: left to the periodic check",
                actions: vec![IpvsAction::DelDest(tcp, dest(2, 0))],
                desired: desired(tcp, &[3]),
                draining: queue(&[rs(tcp, 2)]),
                connections: vec![(rs(tcp, 2), Connections::default())],
                want_actions: vec![],
                want_queue: queue(&[rs(tcp, 2)]),
            },
            Row {
                name: "draining but someone raised its weight: back to 0",
                actions: vec![IpvsAction::DelDest(tcp, dest(2, 5))],
                desired: desired(tcp, &[3]),
                draining: queue(&[rs(tcp, 2)]),
                connections: vec![(rs(tcp, 2), busy())],
                want_actions: vec![IpvsAction::SetDest(tcp, dest(2, 0))],
                want_queue: queue(&[rs(tcp, 2)]),
            },
            Row {
                name: "comes back (incremental: planned as new): weight restored, dequeued",
                actions: vec![IpvsAction::NewDest(tcp, dest(2, 1))],
                desired: desired(tcp, &[2, 3]),
                draining: queue(&[rs(tcp, 2)]),
                connections: vec![],
                want_actions: vec![IpvsAction::SetDest(tcp, dest(2, 1))],
                want_queue: Draining::default(),
            },
            Row {
                name: "comes back (full: listed at weight 0): weight restored, dequeued",
                actions: vec![IpvsAction::SetDest(tcp, dest(2, 1))],
                desired: desired(tcp, &[2, 3]),
                draining: queue(&[rs(tcp, 2)]),
                connections: vec![(rs(tcp, 2), busy())],
                want_actions: vec![IpvsAction::SetDest(tcp, dest(2, 1))],
                want_queue: Draining::default(),
            },
            Row {
                name: "a new real server is not a restored one",
                actions: vec![IpvsAction::NewDest(tcp, dest(4, 1))],
                desired: desired(tcp, &[3, 4]),
                draining: queue(&[rs(tcp, 2)]),
                connections: vec![],
                want_actions: vec![IpvsAction::NewDest(tcp, dest(4, 1))],
                want_queue: queue(&[rs(tcp, 2)]),
            },
            Row {
                name: "the virtual service goes: deleted with its queued real servers",
                actions: vec![IpvsAction::DelService(tcp)],
                desired: BTreeMap::new(),
                draining: queue(&[rs(tcp, 2), rs(other, 9)]),
                connections: vec![(rs(tcp, 2), busy())],
                want_actions: vec![IpvsAction::DelService(tcp)],
                want_queue: queue(&[rs(other, 9)]),
            },
            Row {
                name: "UDP and SCTP: deleted at once, connections or not",
                actions: vec![
                    IpvsAction::DelDest(udp, dest(2, 1)),
                    IpvsAction::DelDest(sctp, dest(2, 1)),
                ],
                desired: BTreeMap::new(),
                draining: Draining::default(),
                connections: vec![(rs(udp, 2), busy()), (rs(sctp, 2), busy())],
                want_actions: vec![
                    IpvsAction::DelDest(udp, dest(2, 1)),
                    IpvsAction::DelDest(sctp, dest(2, 1)),
                ],
                want_queue: Draining::default(),
            },
        ];
        for row in rows {
            let connections: BTreeMap<_, _> = row.connections.into_iter().collect();
            let plan = drain_removals(row.actions, &row.desired, &row.draining, &connections);
            assert_eq!(plan.actions, row.want_actions, "{}", row.name);
            assert_eq!(plan.draining, row.want_queue, "{}", row.name);
        }
    }

    #[test]
    fn only_tcp_removals_not_yet_draining_need_counters() {
        let (tcp, udp) = (key(Protocol::Tcp), key(Protocol::Udp));
        let other = ServiceKey { port: 443, ..tcp };
        let actions = [
            IpvsAction::DelDest(tcp, dest(2, 1)),
            IpvsAction::DelDest(other, dest(2, 0)),
            IpvsAction::DelDest(udp, dest(2, 1)),
            IpvsAction::NewDest(tcp, dest(3, 1)),
        ];
        let draining = queue(&[rs(other, 2)]);
        assert_eq!(
            services_to_count(&actions, &draining),
            BTreeSet::from([tcp])
        );
    }

    #[test]
    fn plan_drained_table() {
        let tcp = key(Protocol::Tcp);
        let other = ServiceKey { port: 443, ..tcp };
        let draining = queue(&[rs(tcp, 2), rs(tcp, 3), rs(tcp, 4), rs(other, 2)]);
        type Listed = BTreeMap<ServiceKey, Vec<(Destination, Connections)>>;
        let rows: Vec<(&str, Listed, Vec<IpvsAction>, Draining)> = vec![
            (
                "busy stay, idle go, vanished are forgotten, a gone service's too",
                BTreeMap::from([(
                    tcp,
                    vec![
                        (dest(2, 0), busy()),
                        (dest(3, 0), Connections::default()),
                        (dest(5, 1), Connections::default()),
                    ],
                )]),
                vec![IpvsAction::DelDest(tcp, dest(3, 0))],
                queue(&[rs(tcp, 2)]),
            ),
            (
                "closing connections hold; templates alone do not",
                BTreeMap::from([
                    (tcp, vec![(dest(2, 0), closing()), (dest(4, 0), busy())]),
                    (
                        other,
                        vec![(
                            dest(2, 0),
                            Connections {
                                persistent: 1,
                                ..Connections::default()
                            },
                        )],
                    ),
                ]),
                vec![IpvsAction::DelDest(other, dest(2, 0))],
                queue(&[rs(tcp, 2), rs(tcp, 4)]),
            ),
        ];
        for (name, listed, want_actions, want_queue) in rows {
            let plan = plan_drained(&draining, &listed);
            assert_eq!(plan.actions, want_actions, "{name}");
            assert_eq!(plan.draining, want_queue, "{name}");
        }
        assert_eq!(
            plan_drained(&Draining::default(), &BTreeMap::new()),
            GracefulPlan::default()
        );
    }

    #[test]
    fn a_full_sync_forgets_queued_real_servers_the_kernel_lost() {
        let tcp = key(Protocol::Tcp);
        let mut draining = queue(&[rs(tcp, 2), rs(tcp, 3)]);
        draining.retain_listed(&BTreeMap::from([(rs(tcp, 3), busy())]));
        assert_eq!(draining, queue(&[rs(tcp, 3)]));
    }
}
