//! Graceful termination through [`super::IpvsDataplane`] on the in-memory IPVS (connection
//! counters set by hand stand in for traffic): a removed TCP endpoint with connections drains
//! at weight 0 until the periodic check finds it idle, UDP goes at once, full syncs neither
//! delete nor resurrect a draining real server, an endpoint coming back is restored, a removed
//! Service takes its draining real servers along, and a restarted dataplane picks up the
//! weight-0 real servers it finds.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::dataplane_tests::{
    Memory, SysctlDir, add, backends, dataplane, ip, kernel_state, key, mark_all_busy,
};
use super::{
    Connections, Destination, Forward, IpvsAction, IpvsApi, RealServer, Scheduler, ServiceKey,
    VirtualService,
};
use crate::dataplane::Dataplane;
use crate::model::{FrontEndKey, FrontEndKind, Masquerade, Protocol, RuleSet, diff};

const INTERVAL: Duration = Duration::from_secs(60);

/// A TCP ClusterIP 10.96.0.10:80 and a UDP one 10.96.0.53:53 over `list`.
fn rules(list: &[&str]) -> RuleSet {
    let mut r = RuleSet::default();
    add(
        &mut r,
        "10.96.0.10",
        80,
        FrontEndKind::ClusterIp,
        backends(list),
        Masquerade::OffCluster,
    );
    let mut udp = RuleSet::default();
    add(
        &mut udp,
        "10.96.0.53",
        53,
        FrontEndKind::ClusterIp,
        backends(list),
        Masquerade::OffCluster,
    );
    for (k, fe) in udp.front_ends {
        r.front_ends
            .insert(FrontEndKey::new(k.ip, Protocol::Udp, k.port), fe);
    }
    r
}

fn tcp() -> ServiceKey {
    key("10.96.0.10", 80)
}

fn udp() -> ServiceKey {
    ServiceKey {
        protocol: Protocol::Udp,
        ..key("10.96.0.53", 53)
    }
}

/// The weights of `service`'s destinations, by address.
fn weights(dp: &Memory, service: ServiceKey) -> Vec<(String, u32)> {
    dp.ipvs()
        .list_destinations(&service)
        .expect("list")
        .into_iter()
        .map(|d| (d.addr.to_string(), d.weight))
        .collect()
}

fn set(dp: &Memory, service: ServiceKey, addr: &str, connections: Connections) {
    assert!(
        dp.ipvs()
            .set_connections(&service, (ip(addr), 8080), connections),
        "{addr} is a destination of {service:?}"
    );
}

fn established(n: u32) -> Connections {
    Connections {
        active: n,
        ..Connections::default()
    }
}

fn draining(dp: &Memory) -> BTreeSet<String> {
    dp.draining()
        .iter()
        .map(|(rs, d)| {
            assert_eq!(d.weight, 0, "queued at weight 0");
            format!("{}/{}", rs.addr, rs.service.port)
        })
        .collect()
}

/// Two endpoints, then `pod1` removed by an incremental sync while it has an established TCP
/// connection (and UDP flows).
fn with_pod1_draining(name: &str) -> (SysctlDir, Memory) {
    let s = SysctlDir::new(name, true);
    let mut dp = dataplane(&s, Scheduler::RoundRobin);
    let (both, one) = (rules(&["10.244.1.2", "10.244.1.3"]), rules(&["10.244.1.3"]));
    dp.sync(&both, None).expect("full");
    mark_all_busy(&dp);
    let change = diff(&both, &one);
    let report = dp.sync(&one, Some(&change)).expect("incremental");
    assert!(!report.full, "{report:?}");
    (s, dp)
}

#[test]
fn a_removed_tcp_endpoint_drains_until_its_connections_end_and_udp_goes_at_once() {
    let (_s, mut dp) = with_pod1_draining("drain");
    assert_eq!(
        weights(&dp, tcp()),
        [("10.244.1.2".into(), 0), ("10.244.1.3".into(), 1)],
        "TCP: weight 0, kept"
    );
    assert_eq!(
        weights(&dp, udp()),
        [("10.244.1.3".into(), 1)],
        "UDP: deleted at once"
    );
    assert_eq!(draining(&dp), BTreeSet::from(["10.244.1.2/80".into()]));

    // The first maintenance schedules the check one interval on; nothing happens before it.
    let t0 = Instant::now();
    assert_eq!(dp.next_maintenance(), None, "nothing scheduled by the sync");
    assert_eq!(dp.maintain(t0).expect("schedule"), 0);
    assert_eq!(dp.next_maintenance(), Some(t0 + INTERVAL));
    set(&dp, tcp(), "10.244.1.2", Connections::default());
    assert_eq!(dp.maintain(t0 + INTERVAL / 2).expect("not due"), 0);
    assert_eq!(weights(&dp, tcp()).len(), 2, "not checked before it is due");

    // Due, still busy (established, then only closing connections): kept.
    set(&dp, tcp(), "10.244.1.2", established(1));
    let t1 = t0 + INTERVAL;
    assert_eq!(dp.maintain(t1).expect("check"), 0);
    assert_eq!(dp.next_maintenance(), Some(t1 + INTERVAL));
    set(
        &dp,
        tcp(),
        "10.244.1.2",
        Connections {
            inactive: 1,
            ..Connections::default()
        },
    );
    let t2 = t1 + INTERVAL;
    assert_eq!(dp.maintain(t2).expect("check"), 0);
    assert_eq!(weights(&dp, tcp()).len(), 2, "closing connections hold it");

    // Idle: deleted, and nothing more is scheduled.
    set(&dp, tcp(), "10.244.1.2", Connections::default());
    assert_eq!(dp.maintain(t2 + INTERVAL).expect("check"), 1);
    assert_eq!(weights(&dp, tcp()), [("10.244.1.3".into(), 1)]);
    assert!(dp.draining().is_empty());
    assert_eq!(dp.next_maintenance(), None);
}

#[test]
fn full_syncs_neither_delete_nor_resurrect_a_draining_real_server() {
    let (_s, mut dp) = with_pod1_draining("full");
    let before = kernel_state(&dp);
    let one = rules(&["10.244.1.3"]);
    // Idle or not, a draining real server waits for the periodic check.
    for connections in [established(2), Connections::default()] {
        set(&dp, tcp(), "10.244.1.2", connections);
        let report = dp.sync(&one, None).expect("full");
        assert!(report.full);
        assert_eq!(kernel_state(&dp), before, "{connections:?}");
        assert_eq!(draining(&dp), BTreeSet::from(["10.244.1.2/80".into()]));
    }
    // Someone raises its weight: a full sync puts it back to 0.
    let raised = Destination {
        addr: ip("10.244.1.2"),
        port: 8080,
        weight: 3,
        forward: Forward::Masquerade,
    };
    dp.ipvs()
        .apply(&[IpvsAction::SetDest(tcp(), raised)])
        .expect("raise");
    dp.sync(&one, None).expect("full");
    assert_eq!(kernel_state(&dp), before);
    // Someone deletes it: forgotten, not re-created.
    dp.ipvs()
        .apply(&[IpvsAction::DelDest(tcp(), raised)])
        .expect("delete");
    dp.sync(&one, None).expect("full");
    assert!(dp.draining().is_empty());
    assert_eq!(weights(&dp, tcp()), [("10.244.1.3".into(), 1)]);
}

#[test]
fn an_endpoint_coming_back_while_draining_gets_its_weight_back() {
    let (both, one) = (rules(&["10.244.1.2", "10.244.1.3"]), rules(&["10.244.1.3"]));
    for full in [false, true] {
        let (_s, mut dp) = with_pod1_draining(&format!("back-{full}"));
        let change = diff(&one, &both);
        let report = dp
            .sync(&both, if full { None } else { Some(&change) })
            .expect("sync");
        assert_eq!(report.full, full);
        assert!(!report.repaired, "{report:?}");
        assert_eq!(
            weights(&dp, tcp()),
            [("10.244.1.2".into(), 1), ("10.244.1.3".into(), 1)],
            "full {full}"
        );
        assert!(dp.draining().is_empty(), "full {full}");
        // Its connections were never cut: the counters are the kernel's, not reset.
        let counted = dp.ipvs().list_destinations_counted(&tcp()).expect("list");
        assert!(counted.iter().all(|(_, c)| c.active == 1), "{counted:?}");
    }
}

#[test]
fn a_removed_service_takes_its_draining_real_servers_along() {
    let (_s, mut dp) = with_pod1_draining("gone");
    let one = rules(&["10.244.1.3"]);
    let mut without = one.clone();
    without
        .front_ends
        .remove(&FrontEndKey::new(ip("10.96.0.10"), Protocol::Tcp, 80));
    let change = diff(&one, &without);
    dp.sync(&without, Some(&change)).expect("incremental");
    assert!(dp.draining().is_empty());
    assert!(
        !dp.ipvs()
            .list_services()
            .expect("list")
            .iter()
            .any(|s| s.key == tcp()),
        "the virtual service is deleted with its real servers"
    );
    assert_eq!(dp.maintain(Instant::now()).expect("nothing"), 0);
    assert_eq!(dp.next_maintenance(), None);
}

#[test]
fn a_restarted_dataplane_drains_the_weight_zero_real_servers_it_finds() {
    let s = SysctlDir::new("restart", true);
    let mut dp = dataplane(&s, Scheduler::RoundRobin);
    // What the previous process left: pod1 draining with a connection, pod9 drained.
    let service = VirtualService::new(tcp(), Scheduler::RoundRobin, 0, None);
    let left = |addr: &str, weight| Destination {
        addr: ip(addr),
        port: 8080,
        weight,
        forward: Forward::Masquerade,
    };
    dp.ipvs()
        .apply(&[
            IpvsAction::NewService(service),
            IpvsAction::NewDest(tcp(), left("10.244.1.2", 0)),
            IpvsAction::NewDest(tcp(), left("10.244.1.9", 0)),
            IpvsAction::NewDest(tcp(), left("10.244.1.3", 1)),
        ])
        .expect("left over");
    set(&dp, tcp(), "10.244.1.2", established(1));
    dp.sync(&rules(&["10.244.1.3"]), None).expect("full");
    assert_eq!(
        weights(&dp, tcp()),
        [("10.244.1.2".into(), 0), ("10.244.1.3".into(), 1)],
        "the busy one drains, the idle one is deleted"
    );
    assert_eq!(
        dp.draining().iter().map(|(rs, _)| *rs).collect::<Vec<_>>(),
        [RealServer {
            service: tcp(),
            addr: ip("10.244.1.2"),
            port: 8080,
        }]
    );
    dp.cleanup().expect("cleanup");
    assert!(dp.draining().is_empty());
    assert_eq!(dp.next_maintenance(), None);
}
