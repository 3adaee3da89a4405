//! Tests of [`IpvsDataplane`] on the in-memory kernel interfaces: full and incremental syncs
//! converge to the same kernel state, front ends without endpoints are rejected, the dummy
//! interface holds exactly the Service addresses, drift is repaired, cleanup removes ours.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;

use super::addresses::MemoryServiceAddresses;
use super::dataplane::{IpvsDataplane, IpvsDataplaneOptions, IpvsModeError};
use super::filter::{
    FAMILY, SET_DROP, SET_HAIRPIN, SET_MASQ_ALWAYS, SET_MASQ_OFF_CLUSTER, SET_REJECT, TABLE,
};
use super::{
    Destination, IpvsAction, IpvsApi, IpvsOptions, MemoryIpvs, Scheduler, ServiceKey,
    VirtualService,
};
use crate::dataplane::{Dataplane, DataplaneError};
use crate::model::{
    Backend, Cidr, FrontEnd, FrontEndKey, FrontEndKind, Masquerade, Protocol, RuleSet, ServiceName,
    ServicePortName, Target, diff,
};
use crate::nft::{MemoryNft, NftApi};

pub(super) type Memory = IpvsDataplane<MemoryIpvs, MemoryNft, MemoryServiceAddresses>;

/// The sysctls the mode may write, in a throwaway `/proc/sys` lookalike.
pub(super) const SYSCTLS: [&str; 7] = [
    "net/ipv4/vs/conntrack",
    "net/ipv4/vs/conn_reuse_mode",
    "net/ipv4/vs/expire_nodest_conn",
    "net/ipv4/vs/expire_quiescent_template",
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/arp_ignore",
    "net/ipv4/conf/all/arp_announce",
];

/// A throwaway `/proc/sys` lookalike with the sysctls at the kernel's defaults (0, except
/// `conn_reuse_mode` 1), `vs/` only `with_ipvs`, `kernel/osrelease` only with a `release`;
/// removed on drop.
pub(super) struct SysctlDir(pub(super) PathBuf);

impl SysctlDir {
    pub(super) fn new(name: &str, with_ipvs: bool) -> Self {
        Self::with_release(name, with_ipvs, None)
    }

    pub(super) fn with_release(name: &str, with_ipvs: bool, release: Option<&str>) -> Self {
        let root =
            std::env::temp_dir().join(format!("kwk-ipvs-sysctl-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for sysctl in SYSCTLS {
            if !with_ipvs && sysctl.contains("/vs/") {
                continue;
            }
            let path = root.join(sysctl);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            let default = if sysctl.ends_with("conn_reuse_mode") {
                "1\n"
            } else {
                "0\n"
            };
            std::fs::write(path, default).expect("write");
        }
        if let Some(release) = release {
            std::fs::create_dir_all(root.join("kernel")).expect("mkdir");
            std::fs::write(root.join("kernel/osrelease"), format!("{release}\n")).expect("write");
        }
        Self(root)
    }

    pub(super) fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.0.join(name))
            .expect("read")
            .trim()
            .to_owned()
    }
}

impl Drop for SysctlDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(super) fn dataplane(sysctl: &SysctlDir, scheduler: Scheduler) -> Memory {
    IpvsDataplane::new(
        MemoryIpvs::default(),
        MemoryNft::new(),
        MemoryServiceAddresses::default(),
        IpvsDataplaneOptions {
            ipvs: IpvsOptions {
                scheduler,
                exclude: vec!["10.200.0.0/16".parse::<Cidr>().expect("cidr")],
                ..IpvsOptions::default()
            },
            sysctl_root: sysctl.0.clone(),
            ..IpvsDataplaneOptions::default()
        },
    )
}

pub(super) fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

pub(super) fn backends(list: &[&str]) -> Target {
    if list.is_empty() {
        return Target::Reject;
    }
    Target::Backends(
        list.iter()
            .map(|b| Backend {
                ip: ip(b),
                port: 8080,
                weight: 1,
                node_local: false,
            })
            .collect(),
    )
}

pub(super) fn add(
    rules: &mut RuleSet,
    addr: &str,
    port: u16,
    kind: FrontEndKind,
    target: Target,
    masquerade: Masquerade,
) {
    let key = FrontEndKey::new(ip(addr), Protocol::Tcp, port);
    rules.front_ends.insert(
        key,
        FrontEnd {
            service: ServicePortName {
                service: ServiceName::new("ns", addr),
                port: String::new(),
                protocol: Protocol::Tcp,
            },
            kind,
            target,
            masquerade,
            affinity_timeout_seconds: None,
            local_short_circuit: None,
            allowed_sources: None,
        },
    );
}

/// A sequence of rule sets exercising adds, removals, endpoint changes, policy changes, a
/// Service losing and regaining endpoints, and IPv6.
pub(super) fn steps() -> Vec<RuleSet> {
    use FrontEndKind::*;
    use Masquerade::*;
    let mut base = RuleSet {
        cluster_cidrs: vec!["10.244.0.0/16".parse().expect("cidr")],
        ..RuleSet::default()
    };
    add(
        &mut base,
        "10.96.0.10",
        80,
        ClusterIp,
        backends(&["10.244.1.2", "10.244.1.3"]),
        OffCluster,
    );
    add(
        &mut base,
        "192.168.1.5",
        30080,
        NodePort,
        backends(&["10.244.1.2", "10.244.1.3"]),
        Always,
    );
    add(
        &mut base,
        "10.96.0.20",
        80,
        ClusterIp,
        backends(&[]),
        OffCluster,
    );
    let mut s1 = base.clone();
    // An endpoint goes away; the no-endpoint Service gets one; a second port on the same IP.
    add(
        &mut s1,
        "10.96.0.10",
        80,
        ClusterIp,
        backends(&["10.244.1.3"]),
        OffCluster,
    );
    add(
        &mut s1,
        "192.168.1.5",
        30080,
        NodePort,
        backends(&["10.244.1.3"]),
        Always,
    );
    add(
        &mut s1,
        "10.96.0.20",
        80,
        ClusterIp,
        backends(&["10.244.2.9"]),
        OffCluster,
    );
    add(
        &mut s1,
        "10.96.0.10",
        443,
        ClusterIp,
        backends(&["10.244.1.2"]),
        Always,
    );
    add(
        &mut s1,
        "fd00::10",
        80,
        ClusterIp,
        backends(&["fd00:244::2"]),
        OffCluster,
    );
    let mut s2 = s1.clone();
    // One port of the shared address removed (the address stays), a Local front end drops.
    s2.front_ends
        .remove(&FrontEndKey::new(ip("10.96.0.10"), Protocol::Tcp, 80));
    add(
        &mut s2,
        "203.0.113.7",
        80,
        LoadBalancer,
        Target::Drop,
        Never,
    );
    let mut s3 = s2.clone();
    // Everything of 10.96.0.10 gone; the IPv6 one too.
    s3.front_ends
        .remove(&FrontEndKey::new(ip("10.96.0.10"), Protocol::Tcp, 443));
    s3.front_ends
        .remove(&FrontEndKey::new(ip("fd00::10"), Protocol::Tcp, 80));
    vec![base, s1, s2, s3, RuleSet::default()]
}

/// Everything the kernel holds for the mode, comparable.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct KernelState {
    pub(super) services: Vec<(VirtualService, BTreeSet<Destination>)>,
    addresses: BTreeSet<IpAddr>,
    link: bool,
    sets: Vec<(String, BTreeSet<Vec<u8>>)>,
}

pub(super) fn kernel_state(dp: &Memory) -> KernelState {
    let services = dp
        .ipvs()
        .list_all()
        .expect("list")
        .into_iter()
        .map(|(s, d)| (s, d.into_iter().collect()))
        .collect();
    let sets = [
        SET_MASQ_ALWAYS,
        SET_MASQ_OFF_CLUSTER,
        SET_REJECT,
        SET_DROP,
        SET_HAIRPIN,
    ]
    .iter()
    .map(|set| {
        let elements = if dp.nft().has_table(FAMILY, TABLE) {
            dp.nft()
                .list_elements(FAMILY, TABLE, set)
                .expect("list elements")
                .into_iter()
                .map(|e| e.key)
                .collect()
        } else {
            BTreeSet::new()
        };
        ((*set).to_owned(), elements)
    })
    .collect();
    KernelState {
        services,
        addresses: dp.addresses().addresses.clone(),
        link: dp.addresses().link.is_some(),
        sets,
    }
}

fn set_len(state: &KernelState, set: &str) -> usize {
    state
        .sets
        .iter()
        .find(|(name, _)| name == set)
        .map(|(_, e)| e.len())
        .unwrap_or(0)
}

pub(super) fn key(addr: &str, port: u16) -> ServiceKey {
    ServiceKey {
        addr: ip(addr),
        protocol: Protocol::Tcp,
        port,
    }
}

#[test]
fn incremental_syncs_reach_the_state_of_full_syncs() {
    // Idle real servers are deleted at once; busy ones drain at weight 0 (both ways alike).
    for busy in [false, true] {
        let (sa, sb) = (
            SysctlDir::new(&format!("inc-a-{busy}"), true),
            SysctlDir::new(&format!("inc-b-{busy}"), true),
        );
        let mut incremental = dataplane(&sa, Scheduler::RoundRobin);
        let mut full = dataplane(&sb, Scheduler::RoundRobin);
        let drained = converge(&mut incremental, &mut full, busy);
        assert_eq!(drained, busy, "busy {busy}: some real server drained");
    }
    spot_checks();
}

/// Marks every destination of `dp` as holding an established connection.
pub(super) fn mark_all_busy(dp: &Memory) {
    for (svc, dests) in dp.ipvs().list_all().expect("list") {
        for d in dests {
            let busy = super::Connections {
                active: 1,
                ..super::Connections::default()
            };
            assert!(dp.ipvs().set_connections(&svc.key, d.key(), busy));
        }
    }
}

/// Runs [`steps`] incrementally on one dataplane and fully on the other, comparing the
/// kernels after each; `busy` marks every destination busy before each step. Whether any real
/// server drained along the way.
fn converge(incremental: &mut Memory, full: &mut Memory, busy: bool) -> bool {
    let steps = steps();
    let mut drained = false;
    let mut previous: Option<&RuleSet> = None;
    for (i, rules) in steps.iter().enumerate() {
        if busy {
            mark_all_busy(incremental);
            mark_all_busy(full);
        }
        let change = previous.map(|p| diff(p, rules));
        let report = incremental
            .sync(rules, change.as_ref())
            .expect("incremental");
        let globals_changed = change.as_ref().is_some_and(|c| c.node_globals_changed);
        assert_eq!(
            report.full,
            previous.is_none() || globals_changed,
            "step {i}"
        );
        assert!(!report.repaired, "step {i}");
        full.sync(rules, None).expect("full");
        assert_eq!(
            kernel_state(incremental),
            kernel_state(full),
            "step {i}, busy {busy}"
        );
        assert_eq!(incremental.draining(), full.draining(), "step {i}");
        drained |= !incremental.draining().is_empty();
        previous = Some(rules);
    }
    drained
}

/// What the sequence should produce along the way.
fn spot_checks() {
    let steps = steps();
    let probe_sysctl = SysctlDir::new("inc-probe", true);
    let mut probe = dataplane(&probe_sysctl, Scheduler::RoundRobin);
    probe.sync(&steps[1], None).expect("sync");
    let state = kernel_state(&probe);
    assert_eq!(
        state.addresses,
        ["10.96.0.10", "10.96.0.20", "fd00::10"].map(ip).into(),
        "ClusterIPs on the dummy, NodePort address not"
    );
    assert_eq!(state.services.len(), 5);
    let (_, dests) = state
        .services
        .iter()
        .find(|(s, _)| s.key == key("10.96.0.10", 80))
        .expect("service");
    assert_eq!(dests.len(), 1, "the removed endpoint is gone");
    assert_eq!(
        set_len(&state, SET_MASQ_OFF_CLUSTER),
        2,
        "v4 OffCluster front ends"
    );
    assert_eq!(set_len(&state, SET_MASQ_ALWAYS), 2);
    assert_eq!(
        set_len(&state, SET_HAIRPIN),
        3,
        "10.244.1.2, 10.244.1.3, 10.244.2.9"
    );
    assert_eq!(set_len(&state, SET_REJECT), 0);
    probe.sync(&steps[2], None).expect("sync");
    let state = kernel_state(&probe);
    assert!(
        state.addresses.contains(&ip("10.96.0.10")),
        "port 443 still uses it"
    );
    assert!(
        state.addresses.contains(&ip("203.0.113.7")),
        "LB IP on the dummy"
    );
    assert_eq!(set_len(&state, SET_DROP), 1);
}

#[test]
fn incremental_sync_writes_only_the_change() {
    let s = SysctlDir::new("cost", true);
    let mut dp = dataplane(&s, Scheduler::RoundRobin);
    let steps = steps();
    dp.sync(&steps[0], None).expect("full");
    let writes = dp.addresses().writes;
    let mut next = steps[0].clone();
    add(
        &mut next,
        "10.96.0.10",
        80,
        FrontEndKind::ClusterIp,
        backends(&["10.244.1.3"]),
        Masquerade::OffCluster,
    );
    let change = diff(&steps[0], &next);
    let report = dp.sync(&next, Some(&change)).expect("incremental");
    assert!(!report.full);
    // One destination deleted; 10.244.1.2 still backs the NodePort: no hairpin change.
    assert_eq!(report.objects, 1, "{report:?}");
    assert_eq!(dp.addresses().writes, writes, "no address change");
    assert_eq!(
        dp.nft().applied().len(),
        1,
        "no nft transaction for a destination change"
    );
}

#[test]
fn front_ends_without_endpoints_are_rejected_not_dropped() {
    let s = SysctlDir::new("reject", true);
    let mut dp = dataplane(&s, Scheduler::LeastConnection);
    let mut rules = RuleSet::default();
    add(
        &mut rules,
        "10.96.0.20",
        80,
        FrontEndKind::ClusterIp,
        Target::Reject,
        Masquerade::OffCluster,
    );
    dp.sync(&rules, None).expect("sync");
    let state = kernel_state(&dp);
    assert_eq!(set_len(&state, SET_REJECT), 1);
    assert_eq!(set_len(&state, SET_DROP), 0);
    assert_eq!(
        state.services.len(),
        1,
        "a virtual service without destinations"
    );
    assert!(state.services[0].1.is_empty());
    assert_eq!(
        state.services[0].0.scheduler, "lc",
        "scheduler from the options"
    );
    assert!(state.addresses.contains(&ip("10.96.0.20")));
    let applied = dp.nft().applied();
    let batch = applied.last().expect("a batch");
    assert!(
        batch.iter().any(|m| m.contains("no-endpoints")),
        "the reject chain is written: {batch:?}"
    );
    // Endpoints appear: out of the reject set, destinations in.
    let mut with = RuleSet::default();
    add(
        &mut with,
        "10.96.0.20",
        80,
        FrontEndKind::ClusterIp,
        backends(&["10.244.2.9"]),
        Masquerade::OffCluster,
    );
    let change = diff(&rules, &with);
    dp.sync(&with, Some(&change)).expect("incremental");
    let state = kernel_state(&dp);
    assert_eq!(set_len(&state, SET_REJECT), 0);
    assert_eq!(state.services[0].1.len(), 1);
}

#[test]
fn sysctls_are_set_and_a_missing_ipvs_sysctl_fails_clearly() {
    // (kernel release, strictARP) → the value of each of SYSCTLS after a sync (the defaults
    // where the mode leaves one alone).
    let cases: [(Option<&str>, bool, [&str; 7]); 4] = [
        (None, false, ["1", "1", "1", "1", "1", "0", "0"]),
        (
            Some("6.1.0-18-amd64"),
            false,
            ["1", "1", "1", "1", "1", "0", "0"],
        ),
        (
            Some("5.4.0-150-generic"),
            false,
            ["1", "0", "1", "1", "1", "0", "0"],
        ),
        (
            Some("6.1.0-18-amd64"),
            true,
            ["1", "1", "1", "1", "1", "1", "2"],
        ),
    ];
    for (i, (release, strict_arp, want)) in cases.into_iter().enumerate() {
        let s = SysctlDir::with_release(&format!("sysctl-{i}"), true, release);
        let mut dp = IpvsDataplane::new(
            MemoryIpvs::default(),
            MemoryNft::new(),
            MemoryServiceAddresses::default(),
            IpvsDataplaneOptions {
                sysctl_root: s.0.clone(),
                strict_arp,
                ..IpvsDataplaneOptions::default()
            },
        );
        dp.sync(&RuleSet::default(), None).expect("sync");
        let got = SYSCTLS.map(|name| s.read(name));
        assert_eq!(got, want, "release {release:?}, strictARP {strict_arp}");
    }

    let missing = SysctlDir::new("sysctl-missing", false);
    let mut dp = dataplane(&missing, Scheduler::RoundRobin);
    let err = dp.sync(&RuleSet::default(), None).expect_err("no ip_vs");
    let DataplaneError::Mode { source, .. } = &err else {
        panic!("{err:?}");
    };
    assert!(
        matches!(
            source.downcast_ref::<IpvsModeError>(),
            Some(IpvsModeError::SysctlMissing { .. })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("ip_vs"), "{err}");
}

#[test]
fn drift_during_an_incremental_sync_is_repaired_by_a_full_one() {
    let s = SysctlDir::new("drift", true);
    let mut dp = dataplane(&s, Scheduler::RoundRobin);
    let steps = steps();
    dp.sync(&steps[0], None).expect("full");
    // Someone deletes our virtual service.
    dp.ipvs()
        .apply(&[IpvsAction::DelService(key("10.96.0.10", 80))])
        .expect("delete");
    let change = diff(&steps[0], &steps[1]);
    let report = dp.sync(&steps[1], Some(&change)).expect("repaired");
    assert!(report.full && report.repaired, "{report:?}");
    let reference_sysctl = SysctlDir::new("drift-ref", true);
    let mut reference = dataplane(&reference_sysctl, Scheduler::RoundRobin);
    reference.sync(&steps[1], None).expect("full");
    assert_eq!(kernel_state(&dp), kernel_state(&reference));
}

#[test]
fn cleanup_removes_ours_and_keeps_excluded_services() {
    let s = SysctlDir::new("cleanup", true);
    let mut dp = dataplane(&s, Scheduler::RoundRobin);
    let foreign = VirtualService::new(key("10.200.0.1", 53), Scheduler::RoundRobin, 0, None);
    dp.ipvs()
        .apply(&[IpvsAction::NewService(foreign.clone())])
        .expect("foreign");
    dp.sync(&steps()[1], None).expect("sync");
    assert_eq!(dp.ipvs().list_services().expect("list").len(), 6);
    dp.cleanup().expect("cleanup");
    dp.cleanup().expect("idempotent");
    assert_eq!(dp.ipvs().list_services().expect("list"), vec![foreign]);
    assert!(!dp.nft().has_table(FAMILY, TABLE));
    assert!(dp.addresses().link.is_none());
    assert!(dp.addresses().addresses.is_empty());
}
