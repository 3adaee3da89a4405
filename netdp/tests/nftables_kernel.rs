//! The nftables mode's every rule shape accepted by the real kernel, IPv6 included (ClusterIP,
//! NodePort, affinity, `externalTrafficPolicy: Local` short-circuit, source ranges, no
//! endpoints), and the listed maps matching the plan. Root, own network namespace.

mod nft_support;

use kwk_netdp::dataplane::Dataplane;
use kwk_netdp::model::{NodeState, ProxyInput, ProxyOptions, build_rules};
use kwk_netdp::nft::NftApi;
use kwk_netdp::nftables::NftablesDataplane;
use kwk_netdp::nftables::layout::{BACKENDS, FIREWALL_CHAINS, SERVICE_CLASSES, SERVICES, TABLE};
use nft_support::{TestNs, privileged_tests_enabled};
use serde_json::json;

fn dual_stack_objects(
    with_endpoints: bool,
    affinity: bool,
) -> (
    Vec<k8s_openapi::api::core::v1::Service>,
    Vec<k8s_openapi::api::discovery::v1::EndpointSlice>,
) {
    let mut services = Vec::new();
    let mut slices = Vec::new();
    for (i, (family, cluster_ip, ep_local, ep_remote)) in [
        ("IPv4", "10.96.0.10", "10.244.1.10", "10.244.2.10"),
        ("IPv6", "fd00:96::10", "fd00:244:1::10", "fd00:244:2::10"),
    ]
    .into_iter()
    .enumerate()
    {
        for (j, policy) in ["Cluster", "Local"].into_iter().enumerate() {
            let name = format!("s{i}{j}");
            services.push(
                serde_json::from_value(json!({
                    "metadata": {"namespace": "default", "name": name},
                    "spec": {
                        "type": "LoadBalancer",
                        "clusterIP": cluster_ip.replace("10", &format!("1{i}{j}")),
                        "clusterIPs": [cluster_ip.replace("10", &format!("1{i}{j}"))],
                        "ipFamilies": [family],
                        "externalTrafficPolicy": policy,
                        "sessionAffinity": if affinity { "ClientIP" } else { "None" },
                        "loadBalancerSourceRanges": ["192.0.2.0/24", "2001:db8::/64"],
                        "ports": [{"name": "p", "protocol": "TCP", "port": 80,
                                   "targetPort": 8080, "nodePort": 30100 + i * 2 + j}],
                    },
                    "status": {"loadBalancer": {"ingress": [{"ip": if i == 0 { "203.0.113.5" } else { "2001:db8:1::5" }}]}},
                }))
                .expect("service"),
            );
            if with_endpoints {
                slices.push(
                    serde_json::from_value(json!({
                        "metadata": {"namespace": "default", "name": format!("{name}-x"),
                                     "labels": {"kubernetes.io/service-name": name}},
                        "addressType": family,
                        "endpoints": [
                            {"addresses": [ep_local], "nodeName": "node-a",
                             "conditions": {"ready": true}},
                            {"addresses": [ep_remote], "nodeName": "node-b",
                             "conditions": {"ready": true}},
                        ],
                        "ports": [{"name": "p", "protocol": "TCP", "port": 8080}],
                    }))
                    .expect("slice"),
                );
            }
        }
    }
    (services, slices)
}

#[test]
fn every_rule_shape_is_accepted_for_both_families() {
    if !privileged_tests_enabled() {
        return;
    }
    let ns = TestNs::new("shapes");
    let node = NodeState {
        name: "node-a".into(),
        ips: vec![
            "192.168.77.1".parse().expect("ip"),
            "fd00:77::1".parse().expect("ip"),
        ],
        pod_cidrs: vec![],
        zone: None,
    };
    let options = ProxyOptions {
        cluster_cidrs: vec![
            "10.244.0.0/16".parse().expect("cidr"),
            "fd00:244::/48".parse().expect("cidr"),
        ],
        masquerade_all: false,
    };
    let rules_for = |with_endpoints: bool, affinity: bool| {
        let (services, slices) = dual_stack_objects(with_endpoints, affinity);
        let input = ProxyInput::from_api(&services, &slices, node.clone(), options.clone());
        assert!(input.problems.is_empty(), "{:?}", input.problems);
        build_rules(&input, &mut Vec::new())
    };
    // Without session affinity every chain but `services` also decodes with the `nft` tool
    // (see `kwk_netdp::nftables` for the shapes it cannot show).
    let plain = rules_for(true, false);
    let mut dp = NftablesDataplane::new(ns.nft());
    dp.sync(&plain, None).expect("full sync");
    for family in [kwk_netdp::nft::Family::Ip, kwk_netdp::nft::Family::Ip6] {
        let chains = dp.nft().list_chains(family, TABLE).expect("chains");
        assert!(chains.len() > 11, "{chains:?}");
        // (`nft` cannot name the IPv6 firewall chains, `fw-<address>-...`, on its command line.)
        let named = |name: &str| name != SERVICES && !name.contains(':');
        for chain in chains.iter().filter(|c| named(&c.name)) {
            let text = ns.exec(&["nft", "list", "chain", family.name(), TABLE, &chain.name]);
            assert!(text.contains(&chain.name), "{text}");
            if chain.name.ends_with("-dnat") {
                assert!(text.contains("numgen random mod"), "{text}");
            }
        }
    }
    let (full, empty) = (rules_for(true, true), rules_for(false, true));
    assert!(full.front_ends.keys().any(|k| k.ip.is_ipv6()));
    assert!(
        full.front_ends
            .values()
            .any(|fe| fe.local_short_circuit.is_some())
    );
    let mut dp = NftablesDataplane::new(ns.nft());
    dp.sync(&full, None)
        .unwrap_or_else(|e| panic!("{e}\n{}", ns.nft_text()));
    let report = dp
        .sync(&empty, Some(&kwk_netdp::model::diff(&full, &empty)))
        .expect("to no endpoints");
    assert!(!report.full, "{report:?}");
    let report = dp
        .sync(&full, Some(&kwk_netdp::model::diff(&empty, &full)))
        .expect("back");
    assert!(!report.full, "{report:?}");
    for family in [kwk_netdp::nft::Family::Ip, kwk_netdp::nft::Family::Ip6] {
        let nft = dp.nft();
        let fes = full
            .front_ends
            .keys()
            .filter(|k| k.ip.is_ipv6() == (family == kwk_netdp::nft::Family::Ip6))
            .count();
        let classes = nft
            .list_elements(family, TABLE, SERVICE_CLASSES)
            .expect("list");
        assert_eq!(classes.len(), fes, "{family:?}");
        assert!(
            !nft.list_elements(family, TABLE, BACKENDS)
                .expect("list")
                .is_empty()
        );
        assert!(
            !nft.list_elements(family, TABLE, FIREWALL_CHAINS)
                .expect("list")
                .is_empty()
        );
    }
    // The maps list with the `nft` tool.
    for (kind, name) in [
        ("map", "service-classes"),
        ("map", "class-chains"),
        ("map", "backends"),
        ("set", "affinity-backends"),
        ("set", "hairpin"),
    ] {
        let listed = ns.exec(&["nft", "list", kind, "ip6", TABLE, name]);
        assert!(listed.contains("elements"), "{listed}");
    }
    dp.cleanup().expect("cleanup");
    for family in [kwk_netdp::nft::Family::Ip, kwk_netdp::nft::Family::Ip6] {
        assert!(dp.nft().list_tables(family).expect("tables").is_empty());
    }
}

/// The sets carry their sizes into the kernel, the kernel enforces them (the planner relies on
/// it), and a sync that would outgrow one becomes a full sync that sizes it anew.
#[test]
fn sets_are_sized_and_outgrowing_one_resizes_it_by_a_full_sync() {
    if !privileged_tests_enabled() {
        return;
    }
    use kwk_netdp::model::synthetic::{SYNTHETIC_NODE, synthetic};
    use kwk_netdp::nft::{Batch, Datum, Element, Family};
    use kwk_netdp::nftables::layout::{MIN_SET_SIZE, set_size};

    let ns = TestNs::new("sizes");
    let rules_for = |services: usize| {
        let objects = synthetic(services, 1);
        let node = NodeState {
            name: SYNTHETIC_NODE.into(),
            ips: vec!["192.168.1.10".parse().expect("ip")],
            pod_cidrs: vec![],
            zone: None,
        };
        let options = ProxyOptions {
            cluster_cidrs: vec![],
            masquerade_all: false,
        };
        let input = ProxyInput::from_api(&objects.services, &objects.slices, node, options);
        build_rules(&input, &mut Vec::new())
    };
    let size_of = |dp: &NftablesDataplane<kwk_netdp::nft::NftSocket>, set: &str| {
        let sets = dp.nft().list_sets(Family::Ip, TABLE).expect("sets");
        sets.into_iter()
            .find(|s| s.name == set)
            .expect("listed")
            .size
    };
    // 600 Services, every 10th a NodePort too: 660 front ends.
    let (small, many) = (rules_for(600), rules_for(1000));
    let mut dp = NftablesDataplane::new(ns.nft());
    dp.sync(&small, None).expect("full sync");
    assert_eq!(size_of(&dp, SERVICE_CLASSES), Some(MIN_SET_SIZE));
    assert_eq!(size_of(&dp, BACKENDS), Some(MIN_SET_SIZE));
    assert_eq!(size_of(&dp, "affinity"), None);

    // The kernel refuses the element beyond the size.
    let room = MIN_SET_SIZE as usize - small.front_ends.len();
    let filler: Vec<Element> = (0..=room)
        .map(|i| {
            let ip = std::net::Ipv4Addr::from(0x0a60_0000 + 0x1_0000 + i as u32);
            let key = [Datum::Ipv4(ip), Datum::Proto(6), Datum::Port(80)];
            Element::value(&key, &[Datum::U32(0)])
        })
        .collect();
    let mut b = Batch::new();
    b.add_elements(Family::Ip, TABLE, SERVICE_CLASSES, &filler);
    let err = dp.nft().apply(&b).expect_err("one element too many");
    assert_eq!(err.errno(), Some(nix::libc::ENFILE), "{err}");
    let mut b = Batch::new();
    b.add_elements(Family::Ip, TABLE, SERVICE_CLASSES, &filler[..room]);
    b.delete_elements(Family::Ip, TABLE, SERVICE_CLASSES, &filler[..room]);
    dp.nft().apply(&b).expect("exactly full is fine");

    let report = dp
        .sync(&many, Some(&kwk_netdp::model::diff(&small, &many)))
        .expect("grown");
    assert!(report.full, "{report:?}");
    assert_eq!(size_of(&dp, SERVICE_CLASSES), Some(set_size(1100)));
    let listed = dp
        .nft()
        .list_elements(Family::Ip, TABLE, SERVICE_CLASSES)
        .expect("list");
    assert_eq!(listed.len(), many.front_ends.len());
    dp.cleanup().expect("cleanup");
}
