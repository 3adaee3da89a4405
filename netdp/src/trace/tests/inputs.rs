//! Which objects count, deduplication, conflicts, weights, and the rule-set diff.

use std::collections::BTreeMap;

use super::*;

#[test]
fn ignored_services_and_slices() {
    let mut other_proxy = service("other", "ClusterIP", &["10.96.0.11"]);
    other_proxy.metadata.labels = Some(BTreeMap::from([(
        "service.kubernetes.io/service-proxy-name".to_owned(),
        "foo".to_owned(),
    )]));
    let headless = service("headless", "ClusterIP", &["None"]);
    let mut external_name = service("ext", "ExternalName", &[]);
    spec(&mut external_name).external_name = Some("example.com".into());
    let web = service("web", "ClusterIP", &["10.96.0.10"]);
    let mut foreign_slice = slice(
        "web-x",
        "web",
        "IPv4",
        8080,
        vec![ep("10.244.9.9", "R", &[])],
    );
    foreign_slice.metadata.labels.as_mut().unwrap().insert(
        "service.kubernetes.io/service-proxy-name".into(),
        "foo".into(),
    );
    let mut fqdn = slice(
        "web-f",
        "web",
        "FQDN",
        8080,
        vec![ep("example.com", "R", &[])],
    );
    fqdn.address_type = "FQDN".into();
    let mut unlabelled = slice(
        "web-u",
        "web",
        "IPv4",
        8080,
        vec![ep("10.244.9.8", "R", &[])],
    );
    unlabelled.metadata.labels = None;
    let r = rules(
        &[other_proxy, headless, external_name, web],
        &[
            slice(
                "other-1",
                "other",
                "IPv4",
                8080,
                vec![ep("10.244.2.3", "R", &[])],
            ),
            slice(
                "headless-1",
                "headless",
                "IPv4",
                8080,
                vec![ep("10.244.2.4", "R", &[])],
            ),
            slice(
                "web-1",
                "web",
                "IPv4",
                8080,
                vec![ep("10.244.2.5", "R", &[])],
            ),
            foreign_slice,
            fqdn,
            unlabelled,
        ],
    );
    assert_eq!(r.front_ends.len(), 1);
    assert_eq!(
        verdicts(&r, &packet(POD, "10.96.0.11", 80, ArrivesOn::FromPod)),
        set(&["Accept".into()])
    );
    assert_eq!(
        verdicts(&r, &packet(POD, "10.96.0.10", 80, ArrivesOn::FromPod)),
        set(&[dnat("10.244.2.5:8080", false)])
    );
}

#[test]
fn duplicate_endpoints_across_slices_are_kept_once() {
    let svc = service("web", "ClusterIP", &["10.96.0.10"]);
    let a = slice(
        "web-a",
        "web",
        "IPv4",
        8080,
        vec![ep("10.244.2.3", "R", &[]), ep("10.244.2.4", "R", &[])],
    );
    let b = slice(
        "web-b",
        "web",
        "IPv4",
        8080,
        vec![ep("10.244.2.3", "R", &[])],
    );
    let r = rules(&[svc], &[a, b]);
    let fe = r.front_ends.values().next().unwrap();
    assert_eq!(fe.target.backends().len(), 2);
}

#[test]
fn duplicate_endpoint_first_slice_wins_unless_a_later_copy_is_local() {
    // First copy (slice "web-a", by name) is ready; the later unready copy does not override.
    let svc = service("web", "ClusterIP", &["10.96.0.10"]);
    let a = slice(
        "web-a",
        "web",
        "IPv4",
        8080,
        vec![ep("10.244.2.3", "R", &[])],
    );
    let b = slice(
        "web-b",
        "web",
        "IPv4",
        8080,
        vec![ep("10.244.2.3", "", &[])],
    );
    let r = rules(std::slice::from_ref(&svc), &[b, a.clone()]);
    assert_eq!(
        verdicts(&r, &packet(POD, "10.96.0.10", 80, ArrivesOn::FromPod)),
        set(&[dnat("10.244.2.3:8080", false)])
    );
    // A later copy that says the endpoint is on this node wins: ITP Local then uses it.
    let mut local = svc;
    spec(&mut local).internal_traffic_policy = Some("Local".into());
    let b = slice(
        "web-b",
        "web",
        "IPv4",
        8080,
        vec![ep("10.244.2.3", "RL", &[])],
    );
    let r = rules(&[local], &[a, b]);
    assert_eq!(
        verdicts(&r, &packet(POD, "10.96.0.10", 80, ArrivesOn::FromPod)),
        set(&[dnat("10.244.2.3:8080", false)])
    );
}

#[test]
fn publish_not_ready_addresses_uses_unready_endpoints() {
    let mut svc = service("web", "ClusterIP", &["10.96.0.10"]);
    spec(&mut svc).publish_not_ready_addresses = Some(true);
    let r = rules(
        &[svc],
        &[slice(
            "web-1",
            "web",
            "IPv4",
            8080,
            vec![ep("10.244.2.3", "", &[])],
        )],
    );
    assert_eq!(
        verdicts(&r, &packet(POD, "10.96.0.10", 80, ArrivesOn::FromPod)),
        set(&[dnat("10.244.2.3:8080", false)])
    );
}

#[test]
fn diff_of_one_changed_endpoint_touches_only_that_front_end() {
    let services = [
        service("a", "NodePort", &["10.96.0.10"]),
        service("b", "ClusterIP", &["10.96.0.11"]),
    ];
    let before = [
        slice("a-1", "a", "IPv4", 8080, vec![ep("10.244.2.3", "R", &[])]),
        slice("b-1", "b", "IPv4", 8080, vec![ep("10.244.2.4", "R", &[])]),
    ];
    let mut after = before.clone();
    after[1].endpoints.push(ep("10.244.2.5", "R", &[]));
    let old = rules(&services, &before);
    let new = rules(&services, &after);
    let d = diff(&old, &new);
    assert!(d.added.is_empty() && d.removed.is_empty() && !d.node_globals_changed);
    assert_eq!(d.changed.len(), 1);
    assert_eq!(d.changed[0].key.ip, ip("10.96.0.11"));
    assert_eq!(
        d.changed[0]
            .backends_added
            .iter()
            .map(|b| b.ip)
            .collect::<Vec<_>>(),
        vec![ip("10.244.2.5")]
    );
    assert!(d.changed[0].backends_removed.is_empty());
    assert!(diff(&new, &new).is_empty());

    // Removing Service b removes its front end only; the endpoint removal is reported.
    let gone = rules(&services[..1], &before[..1]);
    let d = diff(&new, &gone);
    assert_eq!(d.removed.len(), 1);
    assert!(d.added.is_empty() && d.changed.is_empty());
    let back = diff(&gone, &new);
    assert_eq!(back.added.len(), 1);
}

#[test]
fn diff_reports_health_check_and_node_address_changes() {
    let mut svc = service("web", "LoadBalancer", &["10.96.0.10"]);
    spec(&mut svc).external_traffic_policy = Some("Local".into());
    spec(&mut svc).health_check_node_port = Some(32000);
    let old = rules(
        std::slice::from_ref(&svc),
        &[slice(
            "web-1",
            "web",
            "IPv4",
            8080,
            vec![ep("10.244.2.3", "R", &[])],
        )],
    );
    let new = rules(
        &[svc],
        &[slice(
            "web-1",
            "web",
            "IPv4",
            8080,
            vec![ep("10.244.1.3", "RL", &[])],
        )],
    );
    let d = diff(&old, &new);
    assert_eq!(d.health_checks_set.len(), 1);
    assert_eq!(d.health_checks_set[0].1.local_endpoints, 1);
    let mut moved = new.clone();
    moved.node_port_addresses.insert(ip("192.168.1.11"));
    assert!(diff(&new, &moved).node_globals_changed);
    assert!(diff(&new, &RuleSet::default()).health_checks_removed == vec![32000]);
}

#[test]
fn conflicting_front_ends_keep_the_first_service() {
    let mut a = service("a", "ClusterIP", &["10.96.0.10"]);
    spec(&mut a).external_ips = Some(vec!["198.51.100.50".into()]);
    let mut b = service("b", "ClusterIP", &["10.96.0.11"]);
    spec(&mut b).external_ips = Some(vec!["198.51.100.50".into()]);
    let input = ProxyInput::from_api(&[a, b], &[], node(), options());
    let mut problems = Vec::new();
    let r = build_rules(&input, &mut problems);
    assert_eq!(problems.len(), 1, "{problems:?}");
    let key = crate::model::FrontEndKey::new(ip("198.51.100.50"), Protocol::Tcp, 80);
    assert_eq!(r.front_ends[&key].service.service.name, "a");
}

#[test]
fn invalid_values_are_reported_and_skipped() {
    let mut svc = service("web", "ClusterIP", &["10.96.0.10"]);
    spec(&mut svc).external_ips = Some(vec!["not-an-ip".into()]);
    let sl = slice(
        "web-1",
        "web",
        "IPv4",
        8080,
        vec![ep("fd00::1", "R", &[]), ep("10.244.2.3", "R", &[])],
    );
    let input = ProxyInput::from_api(&[svc], &[sl], node(), options());
    assert_eq!(input.problems.len(), 2, "{:?}", input.problems);
    let r = build_rules(&input, &mut Vec::new());
    assert_eq!(r.front_ends.len(), 1);
    assert_eq!(
        r.front_ends
            .values()
            .next()
            .unwrap()
            .target
            .backends()
            .len(),
        1
    );
}

#[test]
fn weighted_pick_follows_weights() {
    let mut r = rules(
        &[service("web", "ClusterIP", &["10.96.0.10"])],
        &[slice(
            "web-1",
            "web",
            "IPv4",
            8080,
            vec![ep("10.244.2.3", "R", &[]), ep("10.244.2.4", "R", &[])],
        )],
    );
    let fe = r.front_ends.values_mut().next().unwrap();
    if let crate::model::Target::Backends(b) = &mut fe.target {
        b[0].weight = 3;
    }
    let p = packet(POD, "10.96.0.10", 80, ArrivesOn::FromPod);
    let picks: Vec<Verdict> = (0..4)
        .map(|random| {
            trace(
                &r,
                &p,
                &mut TraceEnv {
                    random,
                    ..TraceEnv::default()
                },
            )
        })
        .collect();
    let to = |s: &str| Verdict::Dnat {
        to: sa(s),
        masquerade: false,
    };
    assert_eq!(
        picks,
        vec![
            to("10.244.2.3:8080"),
            to("10.244.2.3:8080"),
            to("10.244.2.3:8080"),
            to("10.244.2.4:8080")
        ]
    );
}

#[test]
fn cluster_cidr_parsing_is_used_for_pod_detection() {
    let r = RuleSet {
        cluster_cidrs: vec!["10.244.0.0/16".parse::<Cidr>().unwrap()],
        ..RuleSet::default()
    };
    assert!(r.is_pod_source(ip(POD)));
    assert!(!r.is_pod_source(ip(CLIENT)));
}
