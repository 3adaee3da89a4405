//! ProxyState: recorded events bring the rule set to what a full build of the same objects
//! gives, and the pending difference spans every change since the last successful sync.

use super::*;
use crate::model::{FrontEndKey, Protocol};
use crate::testkit::*;

fn state() -> ProxyState {
    ProxyState::new(node(), options())
}

fn key(ip_: &str, port: u16) -> FrontEndKey {
    FrontEndKey::new(ip(ip_), Protocol::Tcp, port)
}

fn backends_of(rules: &RuleSet, ip_: &str) -> Vec<String> {
    rules.front_ends[&key(ip_, 80)]
        .target
        .backends()
        .iter()
        .map(|b| b.addr().to_string())
        .collect()
}

fn full_build(services: &[Service], slices: &[EndpointSlice]) -> RuleSet {
    let input = ProxyInput::from_api(services, slices, node(), options());
    build_rules(&input, &mut Vec::new())
}

#[test]
fn recorded_events_give_the_same_rules_as_a_full_build() {
    let a = service("a", "ClusterIP", &["10.96.0.10"]);
    let b = service("b", "NodePort", &["10.96.0.11"]);
    let a1 = slice("a-1", "a", "IPv4", 8080, vec![ep("10.244.1.5", "RL", &[])]);
    let a2 = slice("a-2", "a", "IPv4", 8080, vec![ep("10.244.2.5", "R", &[])]);
    let b1 = slice("b-1", "b", "IPv4", 9090, vec![ep("10.244.2.9", "R", &[])]);
    // a-2 relabelled to Service b.
    let mut a2_to_b = slice("a-2", "b", "IPv4", 9090, vec![ep("10.244.2.5", "R", &[])]);
    a2_to_b.metadata.resource_version = Some("2".into());

    let mut st = state();
    st.service_applied(&a);
    st.service_applied(&b);
    st.slice_applied(&a1);
    st.slice_applied(&a2);
    st.slice_applied(&b1);
    st.prepare();
    assert_eq!(
        st.rules(),
        &full_build(
            &[a.clone(), b.clone()],
            &[a1.clone(), a2.clone(), b1.clone()]
        )
    );
    assert_eq!(
        backends_of(st.rules(), "10.96.0.10"),
        ["10.244.1.5:8080", "10.244.2.5:8080"]
    );
    st.synced();

    st.slice_applied(&a2_to_b);
    st.prepare();
    assert_eq!(
        st.rules(),
        &full_build(
            &[a.clone(), b.clone()],
            &[a1.clone(), a2_to_b.clone(), b1.clone()]
        )
    );
    assert_eq!(backends_of(st.rules(), "10.96.0.10"), ["10.244.1.5:8080"]);
    assert_eq!(
        backends_of(st.rules(), "10.96.0.11"),
        ["10.244.2.5:9090", "10.244.2.9:9090"]
    );

    st.slice_deleted(&a1);
    st.service_deleted(&ServiceName::new("default", "b"));
    st.prepare();
    assert_eq!(
        st.rules(),
        &full_build(std::slice::from_ref(&a), &[a2_to_b.clone(), b1.clone()])
    );
    // `a` has no endpoints left: it rejects.
    assert_eq!(
        st.rules().front_ends[&key("10.96.0.10", 80)].target,
        crate::model::Target::Reject
    );
    assert!(!st.rules().front_ends.contains_key(&key("10.96.0.11", 80)));

    // The Service comes back: its slices were kept.
    st.service_applied(&b);
    st.prepare();
    assert_eq!(
        backends_of(st.rules(), "10.96.0.11"),
        ["10.244.2.5:9090", "10.244.2.9:9090"]
    );
}

#[test]
fn the_pending_difference_spans_unsynced_prepares_with_the_oldest_values() {
    let a = service("a", "ClusterIP", &["10.96.0.10"]);
    let with = |addr: &str| slice("a-1", "a", "IPv4", 8080, vec![ep(addr, "R", &[])]);
    let mut st = state();
    st.service_applied(&a);
    st.slice_applied(&with("10.244.2.1"));
    st.prepare();
    {
        let (_, d) = st.for_sync();
        assert_eq!(d.added.len(), 1, "first prepare adds the front end: {d:?}");
    }
    st.synced();
    assert!(st.for_sync().1.is_empty(), "nothing pending after a sync");

    // Two changes, the sync of the first failed (no `synced`).
    st.slice_applied(&with("10.244.2.2"));
    st.prepare();
    st.slice_applied(&with("10.244.2.3"));
    st.prepare();
    let (_, d) = st.for_sync();
    assert_eq!(d.changed.len(), 1, "{d:?}");
    let change = &d.changed[0];
    let removed: Vec<String> = change
        .backends_removed
        .iter()
        .map(|b| b.addr().to_string())
        .collect();
    let added: Vec<String> = change
        .backends_added
        .iter()
        .map(|b| b.addr().to_string())
        .collect();
    assert_eq!(
        removed,
        ["10.244.2.1:8080"],
        "the kernel still has the first backend"
    );
    assert_eq!(added, ["10.244.2.3:8080"]);
}

#[test]
fn a_node_address_change_rebuilds_and_moves_node_ports() {
    let b = service("b", "NodePort", &["10.96.0.11"]);
    let b1 = slice("b-1", "b", "IPv4", 9090, vec![ep("10.244.2.9", "R", &[])]);
    let mut st = state();
    st.service_applied(&b);
    st.slice_applied(&b1);
    st.prepare();
    st.synced();
    assert!(st.rules().front_ends.contains_key(&key(NODE_IP, 30080)));

    let mut moved = node();
    moved.ips = vec![ip("192.168.1.99")];
    st.set_node(moved.clone());
    assert!(st.needs_rebuild());
    st.prepare();
    assert!(!st.needs_rebuild());
    let (rules, d) = st.for_sync();
    assert!(rules.front_ends.contains_key(&key("192.168.1.99", 30080)));
    assert!(!rules.front_ends.contains_key(&key(NODE_IP, 30080)));
    let removed: Vec<_> = d.removed.iter().map(|(k, _)| **k).collect();
    let added: Vec<_> = d.added.iter().map(|(k, _)| **k).collect();
    assert!(removed.contains(&key(NODE_IP, 30080)), "{removed:?}");
    assert_eq!(added, [key("192.168.1.99", 30080)]);

    // The same node again: nothing to rebuild.
    st.synced();
    st.set_node(moved);
    assert!(!st.has_changes());
}

#[test]
fn irrelevant_slices_are_ignored_and_a_slice_turning_irrelevant_leaves() {
    let a = service("a", "ClusterIP", &["10.96.0.10"]);
    let a1 = slice("a-1", "a", "IPv4", 8080, vec![ep("10.244.2.1", "R", &[])]);
    let mut fqdn = a1.clone();
    fqdn.address_type = "FQDN".into();
    let mut st = state();
    st.service_applied(&a);
    st.slice_applied(&a1);
    st.prepare();
    assert_eq!(backends_of(st.rules(), "10.96.0.10"), ["10.244.2.1:8080"]);
    st.slice_applied(&fqdn);
    st.prepare();
    assert_eq!(
        st.rules().front_ends[&key("10.96.0.10", 80)].target,
        crate::model::Target::Reject
    );
}
