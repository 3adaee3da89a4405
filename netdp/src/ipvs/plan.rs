//! The pure IPVS planner: the virtual services and destinations a [`RuleSet`] wants
//! ([`desired_services`]), and the actions that bring the kernel's listed state there
//! ([`plan_changes`]).
//!
//! As upstream's IPVS mode: one virtual service per front end (ClusterIP, each NodePort node
//! address, external and load-balancer IPs), also for Services without endpoints (their
//! rejection is a filter rule, not IPVS); its destinations are the front end's backends
//! (node-local ones only under `externalTrafficPolicy: Local`), masqueraded, weight 1;
//! `sessionAffinity: ClientIP` is persistence with the affinity timeout. Listed services
//! that are not desired are deleted unless their address is in `exclude` (upstream's
//! `--ipvs-exclude-cidrs`). A destination no longer wanted is planned as a deletion;
//! [`super::graceful`] turns the deletion of a busy TCP one into draining at weight 0.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::{Destination, Forward, Scheduler, ServiceKey, VirtualService};
use crate::model::{Cidr, FrontEnd, FrontEndKey, RuleSet};

/// The IPVS mode's options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpvsOptions {
    pub scheduler: Scheduler,
    /// Extra `IP_VS_SVC_F_SCHED*` flags (e.g. `sh` fallback / port).
    pub scheduler_flags: u32,
    /// Virtual services on these addresses are someone else's: never deleted.
    pub exclude: Vec<Cidr>,
}

impl Default for IpvsOptions {
    fn default() -> Self {
        Self {
            scheduler: Scheduler::RoundRobin,
            scheduler_flags: 0,
            exclude: Vec::new(),
        }
    }
}

/// One virtual service and its destinations, by `(address, port)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredService {
    pub service: VirtualService,
    pub destinations: BTreeMap<(IpAddr, u16), Destination>,
}

/// One change to apply, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpvsAction {
    NewService(VirtualService),
    SetService(VirtualService),
    DelService(ServiceKey),
    NewDest(ServiceKey, Destination),
    SetDest(ServiceKey, Destination),
    DelDest(ServiceKey, Destination),
}

/// The virtual services `rules` wants.
pub fn desired_services(
    rules: &RuleSet,
    options: &IpvsOptions,
) -> BTreeMap<ServiceKey, DesiredService> {
    rules
        .front_ends
        .iter()
        .map(|(fe_key, front_end)| {
            let d = desired_service(fe_key, front_end, options);
            (d.service.key, d)
        })
        .collect()
}

/// The virtual service of one front end, with its destinations.
pub fn desired_service(
    fe_key: &FrontEndKey,
    front_end: &FrontEnd,
    options: &IpvsOptions,
) -> DesiredService {
    let key = ServiceKey {
        addr: fe_key.ip,
        protocol: fe_key.protocol,
        port: fe_key.port,
    };
    let service = VirtualService::new(
        key,
        options.scheduler,
        options.scheduler_flags,
        front_end.affinity_timeout_seconds,
    );
    let destinations = front_end
        .target
        .backends()
        .iter()
        .map(|b| {
            let d = Destination {
                addr: b.ip,
                port: b.port,
                weight: u32::from(b.weight),
                forward: Forward::Masquerade,
            };
            (d.key(), d)
        })
        .collect();
    DesiredService {
        service,
        destinations,
    }
}

/// The actions from `listed` (each virtual service with its destinations) to `desired`:
/// services created or updated first, then destinations, then services deleted.
pub fn plan_changes(
    desired: &BTreeMap<ServiceKey, DesiredService>,
    listed: &[(VirtualService, Vec<Destination>)],
    exclude: &[Cidr],
) -> Vec<IpvsAction> {
    let listed: BTreeMap<ServiceKey, &(VirtualService, Vec<Destination>)> =
        listed.iter().map(|l| (l.0.key, l)).collect();
    let mut services = Vec::new();
    let mut dests = Vec::new();
    for (key, want) in desired {
        let (have, have_dests): (Option<&VirtualService>, &[Destination]) = match listed.get(key) {
            Some((s, d)) => (Some(s), d),
            None => (None, &[]),
        };
        match have {
            None => services.push(IpvsAction::NewService(want.service.clone())),
            Some(s) if *s != want.service => {
                services.push(IpvsAction::SetService(want.service.clone()));
            }
            Some(_) => {}
        }
        let have_dests: BTreeMap<(IpAddr, u16), &Destination> =
            have_dests.iter().map(|d| (d.key(), d)).collect();
        for (dkey, d) in &want.destinations {
            match have_dests.get(dkey) {
                None => dests.push(IpvsAction::NewDest(*key, *d)),
                Some(h) if *h != d => dests.push(IpvsAction::SetDest(*key, *d)),
                Some(_) => {}
            }
        }
        for (dkey, h) in &have_dests {
            if !want.destinations.contains_key(dkey) {
                dests.push(IpvsAction::DelDest(*key, **h));
            }
        }
    }
    let deletes = listed
        .keys()
        .filter(|k| !desired.contains_key(k) && !exclude.iter().any(|c| c.contains(k.addr)))
        .map(|k| IpvsAction::DelService(*k));
    services.into_iter().chain(dests).chain(deletes).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipvs::SVC_F_PERSISTENT;
    use crate::model::{
        Backend, FrontEnd, FrontEndKey, FrontEndKind, Masquerade, Protocol, ServiceName,
        ServicePortName, Target,
    };

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn fe(target: Target, affinity: Option<u32>) -> FrontEnd {
        FrontEnd {
            service: ServicePortName {
                service: ServiceName::new("ns", "web"),
                port: String::new(),
                protocol: Protocol::Tcp,
            },
            kind: FrontEndKind::ClusterIp,
            target,
            masquerade: Masquerade::Never,
            affinity_timeout_seconds: affinity,
            local_short_circuit: None,
            allowed_sources: None,
        }
    }

    fn backend(s: &str) -> Backend {
        Backend {
            ip: ip(s),
            port: 8080,
            weight: 1,
            node_local: false,
        }
    }

    fn key(s: &str) -> ServiceKey {
        ServiceKey {
            addr: ip(s),
            protocol: Protocol::Tcp,
            port: 80,
        }
    }

    fn dest(s: &str, weight: u32) -> Destination {
        Destination {
            addr: ip(s),
            port: 8080,
            weight,
            forward: Forward::Masquerade,
        }
    }

    fn svc(s: &str) -> VirtualService {
        VirtualService::new(key(s), Scheduler::RoundRobin, 0, None)
    }

    fn rules(entries: &[(&str, FrontEnd)]) -> RuleSet {
        let mut r = RuleSet::default();
        for (addr, f) in entries {
            r.front_ends
                .insert(FrontEndKey::new(ip(addr), Protocol::Tcp, 80), f.clone());
        }
        r
    }

    #[test]
    fn desired_services_follow_front_ends() {
        let r = rules(&[
            (
                "10.96.0.1",
                fe(Target::Backends(vec![backend("10.2.0.2")]), Some(10800)),
            ),
            ("fd00::1", fe(Target::Reject, None)),
        ]);
        let d = desired_services(&r, &IpvsOptions::default());
        let v4 = &d[&key("10.96.0.1")];
        assert_eq!(v4.service.flags, SVC_F_PERSISTENT);
        assert_eq!(v4.service.timeout, 10800);
        assert_eq!(v4.service.scheduler, "rr");
        assert_eq!(v4.service.netmask, u32::MAX);
        assert_eq!(
            v4.destinations.values().copied().collect::<Vec<_>>(),
            vec![dest("10.2.0.2", 1)]
        );
        let v6 = &d[&key("fd00::1")];
        assert!(
            v6.destinations.is_empty(),
            "no endpoints: a service, no dests"
        );
        assert_eq!(v6.service.netmask, 128);
    }

    #[test]
    fn plan_table() {
        let want_rules = rules(&[(
            "10.96.0.1",
            fe(
                Target::Backends(vec![backend("10.2.0.2"), backend("10.2.0.3")]),
                None,
            ),
        )]);
        let desired = desired_services(&want_rules, &IpvsOptions::default());
        let k = key("10.96.0.1");
        let mut lc = svc("10.96.0.1");
        lc.scheduler = "lc".into();
        let exclude = vec!["10.200.0.0/16".parse::<Cidr>().expect("cidr")];
        type Listed = Vec<(VirtualService, Vec<Destination>)>;
        let rows: Vec<(&str, Listed, Vec<IpvsAction>)> = vec![
            (
                "nothing listed: create all",
                vec![],
                vec![
                    IpvsAction::NewService(svc("10.96.0.1")),
                    IpvsAction::NewDest(k, dest("10.2.0.2", 1)),
                    IpvsAction::NewDest(k, dest("10.2.0.3", 1)),
                ],
            ),
            (
                "in sync: nothing",
                vec![(
                    svc("10.96.0.1"),
                    vec![dest("10.2.0.3", 1), dest("10.2.0.2", 1)],
                )],
                vec![],
            ),
            (
                "scheduler changed, a stale dest, a wrong weight",
                vec![(lc, vec![dest("10.2.0.2", 0), dest("10.2.0.9", 1)])],
                vec![
                    IpvsAction::SetService(svc("10.96.0.1")),
                    IpvsAction::SetDest(k, dest("10.2.0.2", 1)),
                    IpvsAction::NewDest(k, dest("10.2.0.3", 1)),
                    IpvsAction::DelDest(k, dest("10.2.0.9", 1)),
                ],
            ),
            (
                "foreign services: deleted unless excluded",
                vec![
                    (
                        svc("10.96.0.1"),
                        vec![dest("10.2.0.2", 1), dest("10.2.0.3", 1)],
                    ),
                    (svc("10.96.0.2"), vec![dest("10.2.0.2", 1)]),
                    (svc("10.200.0.5"), vec![]),
                ],
                vec![IpvsAction::DelService(key("10.96.0.2"))],
            ),
        ];
        for (name, listed, want) in rows {
            assert_eq!(plan_changes(&desired, &listed, &exclude), want, "{name}");
        }
    }
}
