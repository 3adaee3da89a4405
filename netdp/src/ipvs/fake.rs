//! [`MemoryIpvs`]: an in-memory IPVS table with the kernel's refusals (EEXIST, ESRCH, ENOENT)
//! and settable connection counters, for tests of callers and of the planner's round trip.

use std::collections::BTreeMap;
use std::io;
use std::net::IpAddr;
use std::sync::Mutex;

use super::error::IpvsError;
use super::plan::IpvsAction;
use super::socket::IpvsApi;
use super::{Connections, Destination, ServiceKey, VirtualService};

const ENOENT: i32 = 2;
const ESRCH: i32 = 3;
const EEXIST: i32 = 17;

type Table = BTreeMap<
    ServiceKey,
    (
        VirtualService,
        BTreeMap<(IpAddr, u16), (Destination, Connections)>,
    ),
>;

/// Virtual services and destinations in memory. Like the kernel, each action applies on its
/// own: the first refused one stops `apply`, earlier ones stay applied; a new destination has
/// no connections, a changed one keeps its counters ([`MemoryIpvs::set_connections`] sets
/// them, standing in for traffic).
#[derive(Debug, Default)]
pub struct MemoryIpvs {
    table: Mutex<Table>,
}

fn refused(action: &IpvsAction, errno: i32) -> IpvsError {
    IpvsError::Rejected {
        what: format!("{action:?}"),
        source: io::Error::from_raw_os_error(errno),
        extack: None,
    }
}

impl MemoryIpvs {
    /// Sets the connection counters of destination `dest` (address, port) of service `key`;
    /// `false` when there is no such destination.
    pub fn set_connections(
        &self,
        key: &ServiceKey,
        dest: (IpAddr, u16),
        connections: Connections,
    ) -> bool {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        match table.get_mut(key).and_then(|(_, d)| d.get_mut(&dest)) {
            Some(entry) => {
                entry.1 = connections;
                true
            }
            None => false,
        }
    }

    fn apply_one(table: &mut Table, action: &IpvsAction) -> Result<(), i32> {
        match action {
            IpvsAction::NewService(s) => {
                if table.contains_key(&s.key) {
                    return Err(EEXIST);
                }
                table.insert(s.key, (s.clone(), BTreeMap::new()));
            }
            IpvsAction::SetService(s) => table.get_mut(&s.key).ok_or(ESRCH)?.0 = s.clone(),
            IpvsAction::DelService(k) => {
                table.remove(k).ok_or(ESRCH)?;
            }
            IpvsAction::NewDest(k, d) => {
                let dests = &mut table.get_mut(k).ok_or(ESRCH)?.1;
                if dests.contains_key(&d.key()) {
                    return Err(EEXIST);
                }
                dests.insert(d.key(), (*d, Connections::default()));
            }
            IpvsAction::SetDest(k, d) => {
                table
                    .get_mut(k)
                    .ok_or(ESRCH)?
                    .1
                    .get_mut(&d.key())
                    .ok_or(ENOENT)?
                    .0 = *d;
            }
            IpvsAction::DelDest(k, d) => {
                table
                    .get_mut(k)
                    .ok_or(ESRCH)?
                    .1
                    .remove(&d.key())
                    .ok_or(ENOENT)?;
            }
        }
        Ok(())
    }
}

impl IpvsApi for MemoryIpvs {
    fn list_services(&self) -> Result<Vec<VirtualService>, IpvsError> {
        let table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        Ok(table.values().map(|(s, _)| s.clone()).collect())
    }

    fn list_destinations_counted(
        &self,
        key: &ServiceKey,
    ) -> Result<Vec<(Destination, Connections)>, IpvsError> {
        let table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        Ok(table
            .get(key)
            .map(|(_, d)| d.values().copied().collect())
            .unwrap_or_default())
    }

    fn apply(&self, actions: &[IpvsAction]) -> Result<(), IpvsError> {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        for action in actions {
            Self::apply_one(&mut table, action).map_err(|errno| refused(action, errno))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipvs::{IpvsOptions, Scheduler, desired_services, plan_changes};
    use crate::model::{
        Backend, FrontEnd, FrontEndKey, FrontEndKind, Masquerade, Protocol, RuleSet, ServiceName,
        ServicePortName, Target,
    };

    fn rules(backends: &[&str], affinity: Option<u32>) -> RuleSet {
        let mut r = RuleSet::default();
        let target = if backends.is_empty() {
            Target::Reject
        } else {
            Target::Backends(
                backends
                    .iter()
                    .map(|b| Backend {
                        ip: b.parse().expect("ip"),
                        port: 8080,
                        weight: 1,
                        node_local: false,
                    })
                    .collect(),
            )
        };
        for (addr, kind) in [
            ("10.96.0.1", FrontEndKind::ClusterIp),
            ("192.168.1.5", FrontEndKind::NodePort),
        ] {
            r.front_ends.insert(
                FrontEndKey::new(addr.parse().expect("ip"), Protocol::Tcp, 80),
                FrontEnd {
                    service: ServicePortName {
                        service: ServiceName::new("ns", "web"),
                        port: String::new(),
                        protocol: Protocol::Tcp,
                    },
                    kind,
                    target: target.clone(),
                    masquerade: Masquerade::Always,
                    affinity_timeout_seconds: affinity,
                    local_short_circuit: None,
                    allowed_sources: None,
                },
            );
        }
        r
    }

    /// Plan, apply, list, plan again: nothing left to do, through a sequence of rule sets.
    #[test]
    fn planned_actions_converge_and_the_kernel_rules_hold() {
        let ipvs = MemoryIpvs::default();
        let options = IpvsOptions {
            scheduler: Scheduler::LeastConnection,
            ..IpvsOptions::default()
        };
        let steps = [
            rules(&["10.2.0.2", "10.2.0.3"], None),
            rules(&["10.2.0.3", "10.2.0.4"], Some(10800)),
            rules(&[], None),
            RuleSet::default(),
        ];
        for (i, step) in steps.iter().enumerate() {
            let desired = desired_services(step, &options);
            let actions = plan_changes(&desired, &ipvs.list_all().expect("list"), &[]);
            ipvs.apply(&actions).expect("the kernel accepts the plan");
            let listed = ipvs.list_all().expect("list");
            assert!(plan_changes(&desired, &listed, &[]).is_empty(), "step {i}");
            assert_eq!(listed.len(), desired.len(), "step {i}");
            for (svc, dests) in &listed {
                assert_eq!(svc.scheduler, "lc");
                assert_eq!(
                    dests.len(),
                    desired[&svc.key].destinations.len(),
                    "step {i}"
                );
            }
        }
        let dup = IpvsAction::DelService(ServiceKey {
            addr: "10.96.0.1".parse().expect("ip"),
            protocol: Protocol::Tcp,
            port: 80,
        });
        assert!(matches!(
            ipvs.apply(&[dup]),
            Err(IpvsError::Rejected { source, .. }) if source.raw_os_error() == Some(ESRCH)
        ));
    }
}
