//! Real TCP/UDP traffic through every proxy mode in `traffic_support::MODES`: pods, the node and
//! an external client reach Services the way Kubernetes users expect. Root; each scenario
//! builds its own namespaces (removed on drop).

mod nft_support;
mod traffic_support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::json;
use traffic_support::{
    Cluster, EXTERNAL_IP, GATEWAY, MODES, Mode, NODE_IP, NODE_NAME, dataplane_for, fetch,
    fetch_udp, plant_conflict, service, slice,
};

use nft_support::privileged_tests_enabled;

fn each_mode(scenario: impl Fn(Mode)) {
    if !privileged_tests_enabled() {
        return;
    }
    for mode in MODES {
        eprintln!("mode {mode:?}");
        scenario(*mode);
    }
}

fn ports(node_port: Option<u16>) -> serde_json::Value {
    let mut tcp = json!({"name": "p", "protocol": "TCP", "port": 80, "targetPort": 8080});
    let mut udp = json!({"name": "u", "protocol": "UDP", "port": 80, "targetPort": 8080});
    if let Some(np) = node_port {
        tcp["nodePort"] = json!(np);
        udp["nodePort"] = json!(np);
    }
    json!([tcp, udp])
}

fn cluster_ip_service(name: &str, ip: &str) -> k8s_openapi::api::core::v1::Service {
    service(
        name,
        json!({"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip], "ports": ports(None)}),
        json!({}),
    )
}

/// Names answering `n` TCP connections to `addr` from `ns`.
fn names(ns: &nft_support::TestNs, addr: &str, n: usize) -> BTreeSet<String> {
    (0..n)
        .map(|_| fetch(ns, addr).unwrap_or_else(|e| panic!("{addr}: {e}")).0)
        .collect()
}

#[test]
fn pods_node_and_external_clients_reach_cluster_ip_node_port_and_load_balancer() {
    each_mode(|mode| {
        let c = Cluster::new("reach", 3);
        let _a = c.serve(0, 8080, "web-0");
        let _b = c.serve(1, 8080, "web-1");
        let svc = service(
            "web",
            json!({"type": "LoadBalancer", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                   "ports": ports(Some(30080))}),
            json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.10"}]}}),
        );
        let eps = slice(
            "web",
            &[(c.pods[0].ip, NODE_NAME), (c.pods[1].ip, NODE_NAME)],
            8080,
        );
        let rules = c.rules(&[svc], &[eps]);
        let mut dp = dataplane_for(mode, &c.node);
        let report = dp.sync(&rules, None).expect("full sync");
        assert!(report.full && report.objects > 0, "{report:?}");

        let client = &c.pods[2].ns;
        let want: BTreeSet<String> = ["web-0".into(), "web-1".into()].into();
        assert_eq!(names(client, "10.96.0.10:80", 30), want, "pod -> ClusterIP");
        // A pod keeps its address to a ClusterIP (no masquerade inside the cluster).
        let (_, peer) = fetch(client, "10.96.0.10:80").expect("ClusterIP");
        assert_eq!(peer, c.pods[2].ip.to_string());
        let udp = fetch_udp(client, "10.96.0.10:80").expect("UDP ClusterIP");
        assert!(udp.starts_with("web-"), "{udp}");

        let node_port = format!("{NODE_IP}:30080");
        assert_eq!(names(&c.node, &node_port, 30), want, "node -> NodePort");
        assert_eq!(
            names(&c.external, &node_port, 30),
            want,
            "external -> NodePort"
        );
        assert_eq!(
            names(&c.external, "203.0.113.10:80", 30),
            want,
            "external -> LoadBalancer IP"
        );
        assert!(
            fetch(&c.node, "127.0.0.1:30080").is_err(),
            "NodePorts are not served on localhost"
        );
        dp.cleanup().expect("cleanup");
        assert!(
            fetch(client, "10.96.0.10:80").is_err(),
            "cleanup removed the rules"
        );
    });
}

#[test]
fn external_traffic_policy_local_keeps_the_client_address_and_uses_local_endpoints() {
    each_mode(|mode| {
        let c = Cluster::new("etpl", 2);
        let _a = c.serve(0, 8080, "local-0");
        let svc = service(
            "local",
            json!({"type": "NodePort", "clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"],
                   "externalTrafficPolicy": "Local", "ports": ports(Some(30081))}),
            json!({}),
        );
        // One endpoint here, one on another node (unreachable from this test: never chosen).
        let eps = slice(
            "local",
            &[
                (c.pods[0].ip, NODE_NAME),
                ("10.244.2.5".parse().expect("ip"), "node-b"),
            ],
            8080,
        );
        let rules = c.rules(&[svc], &[eps]);
        let mut dp = dataplane_for(mode, &c.node);
        dp.sync(&rules, None).expect("sync");
        for _ in 0..20 {
            let (name, peer) = fetch(&c.external, &format!("{NODE_IP}:30081")).expect("NodePort");
            assert_eq!(name, "local-0");
            assert_eq!(peer, EXTERNAL_IP, "the client address is kept");
        }
    });
}

#[test]
fn session_affinity_keeps_a_client_on_one_backend() {
    each_mode(|mode| {
        let c = Cluster::new("aff", 4);
        let _servers: Vec<_> = (0..3)
            .map(|i| c.serve(i, 8080, &format!("s-{i}")))
            .collect();
        let svc = service(
            "sticky",
            json!({"type": "ClusterIP", "clusterIP": "10.96.0.30", "clusterIPs": ["10.96.0.30"],
                   "sessionAffinity": "ClientIP",
                   "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}},
                   "ports": ports(None)}),
            json!({}),
        );
        let endpoints = |pods: &[usize]| {
            let eps: Vec<_> = pods.iter().map(|i| (c.pods[*i].ip, NODE_NAME)).collect();
            [slice("sticky", &eps, 8080)]
        };
        let all = c.rules(std::slice::from_ref(&svc), &endpoints(&[0, 1, 2]));
        let mut dp = dataplane_for(mode, &c.node);
        dp.sync(&all, None).expect("sync");
        let client = &c.pods[3].ns;
        let seen = names(client, "10.96.0.30:80", 20);
        assert_eq!(seen.len(), 1, "one backend for one client: {seen:?}");
        // The pinned backend goes away: the client is pinned to one of the others.
        let pinned: usize = seen
            .iter()
            .next()
            .and_then(|n| n.strip_prefix("s-"))
            .and_then(|n| n.parse().ok())
            .expect("a server name");
        let others: Vec<usize> = (0..3).filter(|i| *i != pinned).collect();
        let fewer = c.rules(std::slice::from_ref(&svc), &endpoints(&others));
        let report = dp
            .sync(&fewer, Some(&kwk_netdp::model::diff(&all, &fewer)))
            .expect("incremental");
        assert!(!report.full, "{report:?}");
        let seen = names(client, "10.96.0.30:80", 20);
        assert_eq!(
            seen.len(),
            1,
            "pinned again after its backend left: {seen:?}"
        );
        assert!(!seen.contains(&format!("s-{pinned}")));
    });
}

#[test]
fn a_service_without_endpoints_is_refused_at_once() {
    each_mode(|mode| {
        let c = Cluster::new("rej", 1);
        let rules = c.rules(&[cluster_ip_service("empty", "10.96.0.40")], &[]);
        let mut dp = dataplane_for(mode, &c.node);
        dp.sync(&rules, None).expect("sync");
        for ns in [&c.pods[0].ns, &c.node] {
            let start = Instant::now();
            let err = fetch(ns, "10.96.0.40:80").expect_err("no endpoints");
            assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
            assert!(
                start.elapsed() < Duration::from_secs(1),
                "{:?}",
                start.elapsed()
            );
        }
        let err = fetch_udp(&c.pods[0].ns, "10.96.0.40:80").expect_err("no endpoints (UDP)");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    });
}

#[test]
fn a_backend_reaches_itself_through_its_service() {
    each_mode(|mode| {
        let c = Cluster::new("hair", 1);
        let _a = c.serve(0, 8080, "self");
        let rules = c.rules(
            &[cluster_ip_service("hair", "10.96.0.50")],
            &[slice("hair", &[(c.pods[0].ip, NODE_NAME)], 8080)],
        );
        let mut dp = dataplane_for(mode, &c.node);
        dp.sync(&rules, None).expect("sync");
        let (name, peer) = fetch(&c.pods[0].ns, "10.96.0.50:80").expect("hairpin");
        assert_eq!(name, "self");
        assert_eq!(peer, GATEWAY, "hairpin traffic is masqueraded");
    });
}

#[test]
fn incremental_syncs_scale_endpoints_and_a_refused_batch_keeps_the_old_rules() {
    each_mode(|mode| {
        let c = Cluster::new("scale", 3);
        let _a = c.serve(0, 8080, "e-0");
        let _b = c.serve(1, 8080, "e-1");
        let svc = cluster_ip_service("web", "10.96.0.60");
        let one = c.rules(
            std::slice::from_ref(&svc),
            &[slice("web", &[(c.pods[0].ip, NODE_NAME)], 8080)],
        );
        let two = c.rules(
            std::slice::from_ref(&svc),
            &[slice(
                "web",
                &[(c.pods[0].ip, NODE_NAME), (c.pods[1].ip, NODE_NAME)],
                8080,
            )],
        );
        let client = &c.pods[2].ns;
        let mut dp = dataplane_for(mode, &c.node);
        dp.sync(&one, None).expect("full");
        assert_eq!(names(client, "10.96.0.60:80", 10), ["e-0".into()].into());
        let report = dp
            .sync(&two, Some(&kwk_netdp::model::diff(&one, &two)))
            .expect("incremental");
        assert!(
            !report.full && report.objects > 0 && report.objects < 20,
            "{report:?}"
        );
        let both: BTreeSet<String> = ["e-0".into(), "e-1".into()].into();
        assert_eq!(names(client, "10.96.0.60:80", 30), both);
        let report = dp
            .sync(&one, Some(&kwk_netdp::model::diff(&two, &one)))
            .expect("scale down");
        assert!(!report.full, "{report:?}");
        assert_eq!(names(client, "10.96.0.60:80", 20), ["e-0".into()].into());

        // A new Service whose programming the kernel refuses: nothing of the batch applies
        // (the endpoint added in the same batch is not used), and a full sync recovers.
        let extra = cluster_ip_service("extra", "10.96.0.61");
        let three = c.rules(
            &[svc, extra],
            &[
                slice(
                    "web",
                    &[(c.pods[0].ip, NODE_NAME), (c.pods[1].ip, NODE_NAME)],
                    8080,
                ),
                slice("extra", &[(c.pods[1].ip, NODE_NAME)], 8080),
            ],
        );
        plant_conflict(mode, &c.node, "10.96.0.61".parse().expect("ip"), 80);
        dp.sync(&three, Some(&kwk_netdp::model::diff(&one, &three)))
            .expect_err("refused batch");
        assert_eq!(names(client, "10.96.0.60:80", 20), ["e-0".into()].into());
        let report = dp.sync(&three, None).expect("full sync after failure");
        assert!(report.full);
        assert_eq!(names(client, "10.96.0.60:80", 30), both);
        assert_eq!(names(client, "10.96.0.61:80", 5), ["e-1".into()].into());
    });
}

#[test]
fn an_incremental_sync_repairs_a_flushed_ruleset() {
    each_mode(|mode| {
        let c = Cluster::new("flush", 2);
        let _a = c.serve(0, 8080, "f-0");
        let svc = cluster_ip_service("web", "10.96.0.70");
        let rules = c.rules(&[svc], &[slice("web", &[(c.pods[0].ip, NODE_NAME)], 8080)]);
        let mut dp = dataplane_for(mode, &c.node);
        dp.sync(&rules, None).expect("sync");
        assert!(fetch(&c.pods[1].ns, "10.96.0.70:80").is_ok());
        c.node.exec(&["nft", "flush", "ruleset"]);
        assert!(
            fetch(&c.pods[1].ns, "10.96.0.70:80").is_err(),
            "rules are gone"
        );
        let report = dp
            .sync(&rules, Some(&kwk_netdp::model::diff(&rules, &rules)))
            .expect("repair");
        assert!(report.repaired && report.full, "{report:?}");
        assert_eq!(
            fetch(&c.pods[1].ns, "10.96.0.70:80").expect("repaired").0,
            "f-0"
        );
    });
}

#[test]
fn load_balancer_source_ranges_admit_only_listed_clients() {
    each_mode(|mode| {
        let c = Cluster::new("fw", 2);
        let _a = c.serve(0, 8080, "fw-0");
        let lb = |ranges: &[&str]| {
            service(
                "guarded",
                json!({"type": "LoadBalancer", "clusterIP": "10.96.0.80", "clusterIPs": ["10.96.0.80"],
                       "loadBalancerSourceRanges": ranges, "ports": ports(Some(30082))}),
                json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.20"}]}}),
            )
        };
        let eps = [slice("guarded", &[(c.pods[0].ip, NODE_NAME)], 8080)];
        let only_external = c.rules(&[lb(&["192.168.77.2/32"])], &eps);
        let only_pods = c.rules(&[lb(&["10.244.0.0/16"])], &eps);
        let mut dp = dataplane_for(mode, &c.node);
        dp.sync(&only_external, None).expect("sync");
        assert_eq!(
            fetch(&c.external, "203.0.113.20:80").expect("allowed").0,
            "fw-0"
        );
        assert!(
            fetch(&c.pods[1].ns, "203.0.113.20:80").is_err(),
            "pods are filtered too"
        );
        // The ClusterIP is not firewalled.
        assert_eq!(
            fetch(&c.pods[1].ns, "10.96.0.80:80").expect("ClusterIP").0,
            "fw-0"
        );
        let report = dp
            .sync(
                &only_pods,
                Some(&kwk_netdp::model::diff(&only_external, &only_pods)),
            )
            .expect("incremental");
        assert!(!report.full, "{report:?}");
        assert!(
            fetch(&c.external, "203.0.113.20:80").is_err(),
            "no longer allowed"
        );
        assert_eq!(
            fetch(&c.pods[1].ns, "203.0.113.20:80").expect("allowed").0,
            "fw-0"
        );
    });
}

#[test]
fn ipv6_pods_reach_an_ipv6_cluster_ip_with_affinity_and_udp() {
    each_mode(|mode| {
        let c = Cluster::new("v6", 3);
        c.enable_ipv6();
        let _a = c.serve_on(0, Cluster::pod_ipv6(0), 8080, "v6-0");
        let _b = c.serve_on(1, Cluster::pod_ipv6(1), 8080, "v6-1");
        let spec = |affinity: &str| {
            json!({"type": "ClusterIP", "clusterIP": "fd00:96::10", "clusterIPs": ["fd00:96::10"],
                   "ipFamilies": ["IPv6"], "sessionAffinity": affinity, "ports": ports(None)})
        };
        let eps = [slice(
            "web6",
            &[
                (Cluster::pod_ipv6(0), NODE_NAME),
                (Cluster::pod_ipv6(1), NODE_NAME),
            ],
            8080,
        )];
        let spread = c.rules(&[service("web6", spec("None"), json!({}))], &eps);
        let sticky = c.rules(&[service("web6", spec("ClientIP"), json!({}))], &eps);
        let mut dp = dataplane_for(mode, &c.node);
        dp.sync(&spread, None).expect("sync");
        let client = &c.pods[2].ns;
        let both: BTreeSet<String> = ["v6-0".into(), "v6-1".into()].into();
        assert_eq!(names(client, "[fd00:96::10]:80", 30), both);
        let (_, peer) = fetch(client, "[fd00:96::10]:80").expect("v6");
        assert_eq!(
            peer,
            Cluster::pod_ipv6(2).to_string(),
            "no masquerade inside the cluster"
        );
        let udp = fetch_udp(client, "[fd00:96::10]:80").expect("UDP");
        assert!(udp.starts_with("v6-"), "{udp}");
        dp.sync(&sticky, Some(&kwk_netdp::model::diff(&spread, &sticky)))
            .expect("affinity on");
        assert_eq!(names(client, "[fd00:96::10]:80", 20).len(), 1);
    });
}
