//! The store-backed allocator on the in-memory store: reservations, refusals with upstream's
//! messages, release, concurrency and the repair pass.

use std::sync::Arc;

use serde_json::json;

use super::*;
use crate::storage::memory::MemoryStore;

fn allocator(cidr: &str, ports: (i32, i32)) -> Arc<ServiceAllocator> {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    Arc::new(ServiceAllocator::new(
        store,
        ServiceRanges {
            cluster_ip_range: Cidr::parse(cidr).expect("cidr"),
            node_port_range: ports,
        },
    ))
}

fn svc(name: &str, spec: Value) -> Value {
    let mut svc = json!({"metadata": {"namespace": "default", "name": name}});
    svc["spec"] = spec;
    svc
}

fn node_port(name: &str) -> Value {
    svc(
        name,
        json!({"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}]}),
    )
}

#[test]
fn port_ranges_parse_like_upstream() {
    let cases = [
        ("30000-32767", Some((30000, 32767))),
        ("80", Some((80, 80))),
        (" 1 - 2 ", Some((1, 2))),
        ("2-1", None),
        ("0-10", None),
        ("1-70000", None),
        ("a-b", None),
    ];
    for (text, want) in cases {
        assert_eq!(parse_port_range(text), want, "{text}");
    }
}

#[tokio::test]
async fn specific_values_are_honoured_once() {
    let a = allocator("10.96.0.0/12", (30000, 30010));
    let mut first = svc(
        "a",
        json!({"type": "NodePort", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
            "ports": [{"port": 80, "nodePort": 30005}]}),
    );
    let reserved = a.allocate(&mut first, None, false).await.expect("first");
    assert_eq!(reserved.ips, vec!["10.96.0.10".parse::<IpAddr>().unwrap()]);
    assert_eq!(reserved.ports, vec![30005]);
    let mut second = first.clone();
    second["metadata"]["name"] = json!("b");
    let err = a.allocate(&mut second, None, false).await.unwrap_err();
    assert_eq!(err.code, 422);
    assert_eq!(
        err.message,
        "Service \"b\" is invalid: spec.clusterIPs: Invalid value: []string{\"10.96.0.10\"}: failed to allocate IP 10.96.0.10: provided IP is already allocated"
    );
    let mut third = svc(
        "c",
        json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30005}]}),
    );
    let err = a.allocate(&mut third, None, false).await.unwrap_err();
    assert_eq!(
        err.message,
        "Service \"c\" is invalid: spec.ports[0].nodePort: Invalid value: 30005: provided port is already allocated"
    );
    // The IP c got before its node port was refused is not leaked.
    assert_eq!(a.used_keys(IP_PREFIX).await.unwrap(), ["10.96.0.10"]);
    let mut outside = svc(
        "d",
        json!({"type": "ClusterIP", "clusterIP": "10.0.0.1", "ports": [{"port": 80}]}),
    );
    let err = a.allocate(&mut outside, None, false).await.unwrap_err();
    assert!(
        err.message.ends_with("failed to allocate IP 10.0.0.1: the provided IP (10.0.0.1) is not in the valid range. The range of valid IPs is 10.96.0.0/12"),
        "{}",
        err.message
    );
    let mut port_outside = svc(
        "e",
        json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 40000}]}),
    );
    let err = a
        .allocate(&mut port_outside, None, false)
        .await
        .unwrap_err();
    assert!(
        err.message.ends_with("Invalid value: 40000: provided port is not in the valid range. The range of valid ports is 30000-30010"),
        "{}",
        err.message
    );
    // Released on delete: then b may have it.
    a.release_dropped(&first, None).await;
    a.allocate(&mut second, None, false).await.expect("reused");
}

#[tokio::test]
async fn headless_and_external_name_get_nothing() {
    let a = allocator("10.96.0.0/12", (30000, 30010));
    for spec in [
        json!({"type": "ClusterIP", "clusterIP": "None"}),
        json!({"type": "ExternalName", "externalName": "example.com"}),
    ] {
        let mut s = svc("x", spec.clone());
        let reserved = a.allocate(&mut s, None, false).await.expect("allocate");
        assert_eq!(reserved, Reserved::default());
        assert_eq!(s["spec"], spec);
    }
}

#[tokio::test]
async fn updates_allocate_what_is_new_and_release_what_is_dropped() {
    let a = allocator("10.96.0.0/12", (30000, 30010));
    let mut old = node_port("a");
    a.allocate(&mut old, None, false).await.expect("create");
    let port = old["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
    // Unchanged: nothing new.
    let mut same = old.clone();
    assert_eq!(
        a.allocate(&mut same, Some(&old), false).await.unwrap(),
        Reserved::default()
    );
    // NodePort → ClusterIP: the node port goes, the IP stays.
    let mut to_cluster_ip = old.clone();
    to_cluster_ip["spec"]["type"] = json!("ClusterIP");
    to_cluster_ip["spec"]["ports"] = json!([{"port": 80, "protocol": "TCP"}]);
    a.allocate(&mut to_cluster_ip, Some(&old), false)
        .await
        .unwrap();
    a.release_dropped(&old, Some(&to_cluster_ip)).await;
    assert!(a.used_keys(NODE_PORT_PREFIX).await.unwrap().is_empty());
    assert_eq!(a.used_keys(IP_PREFIX).await.unwrap().len(), 1);
    // → ExternalName: the IP goes too.
    let external = svc(
        "a",
        json!({"type": "ExternalName", "externalName": "example.com"}),
    );
    a.release_dropped(&to_cluster_ip, Some(&external)).await;
    assert!(a.used_keys(IP_PREFIX).await.unwrap().is_empty());
    // LoadBalancer + Local: a health check node port as well.
    let mut lb = svc(
        "lb",
        json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local",
            "ports": [{"port": 80, "nodePort": port}]}),
    );
    let reserved = a.allocate(&mut lb, None, false).await.unwrap();
    assert_eq!(reserved.ports.len(), 2);
    assert_eq!(
        json!(reserved.ports[1]),
        lb["spec"]["healthCheckNodePort"].clone()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_for_one_address_get_it_once() {
    let a = allocator("10.96.0.0/12", (30000, 30010));
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let a = a.clone();
            tokio::spawn(async move {
                let mut s = svc(
                    &format!("s{i}"),
                    json!({"type": "NodePort", "clusterIP": "10.96.0.10",
                        "ports": [{"port": 80, "nodePort": 30001}]}),
                );
                a.allocate(&mut s, None, false).await.is_ok()
            })
        })
        .collect();
    let mut won = 0;
    for t in tasks {
        won += usize::from(t.await.unwrap());
    }
    assert_eq!(won, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_allocations_are_distinct_and_a_full_range_says_so() {
    let a = allocator("10.0.0.0/26", (30000, 30099));
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let a = a.clone();
            tokio::spawn(async move {
                let mut s = node_port(&format!("s{i}"));
                a.allocate(&mut s, None, false).await.expect("allocate");
                s
            })
        })
        .collect();
    let mut ips = BTreeSet::new();
    let mut ports = BTreeSet::new();
    for t in tasks {
        let s = t.await.unwrap();
        ips.insert(s["spec"]["clusterIP"].as_str().unwrap().to_string());
        ports.insert(s["spec"]["ports"][0]["nodePort"].as_i64().unwrap());
    }
    assert_eq!((ips.len(), ports.len()), (50, 50));
    let tiny = allocator("10.0.0.0/30", (30000, 30001));
    let mut one = svc("one", json!({"type": "ClusterIP", "ports": [{"port": 80}]}));
    let mut two = svc("two", json!({"type": "ClusterIP", "ports": [{"port": 80}]}));
    let mut three = svc(
        "three",
        json!({"type": "ClusterIP", "ports": [{"port": 80}]}),
    );
    tiny.allocate(&mut one, None, false).await.unwrap();
    tiny.allocate(&mut two, None, false).await.unwrap();
    let err = tiny.allocate(&mut three, None, false).await.unwrap_err();
    assert_eq!(
        (err.code, err.message.as_str()),
        (
            500,
            "Internal error occurred: failed to allocate a serviceIP: range is full"
        )
    );
}

#[tokio::test]
async fn repair_reclaims_old_unheld_reservations_and_restores_missing_ones() {
    let a = allocator("10.96.0.0/12", (30000, 30010));
    let mut leaked = node_port("leaked");
    a.allocate(&mut leaked, None, false).await.unwrap();
    // A stored Service whose reservations are missing (e.g. written before allocation), on a
    // port the leaked one did not get at random. (Its address is in the low band, which
    // dynamic allocation leaves alone.)
    let port = if leaked["spec"]["ports"][0]["nodePort"] == 30009 {
        30008
    } else {
        30009
    };
    let stored = svc(
        "stored",
        json!({"type": "NodePort", "clusterIPs": ["10.96.0.20"], "ports": [{"port": 80, "nodePort": port}]}),
    );
    a.store
        .create(
            &format!("{SERVICE_PREFIX}default/stored"),
            serde_json::to_vec(&stored).unwrap(),
        )
        .await
        .unwrap();
    // Within the grace period the leaked ones (maybe an in-flight create) stay.
    let report = a.repair(REPAIR_GRACE).await.unwrap();
    assert_eq!(report.released_ips, Vec::<String>::new());
    assert_eq!(report.restored, 2);
    let report = a.repair_at(REPAIR_GRACE, unix_now() + 61).await.unwrap();
    assert_eq!(
        report.released_ips,
        vec![leaked["spec"]["clusterIP"].as_str().unwrap().to_string()]
    );
    assert_eq!(report.released_ports.len(), 1);
    assert_eq!(a.used_keys(IP_PREFIX).await.unwrap(), ["10.96.0.20"]);
    assert_eq!(
        a.used_keys(NODE_PORT_PREFIX).await.unwrap(),
        [port.to_string()]
    );
}
