use k8s_openapi::api::core::v1::NodeSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;

use super::*;

fn cidr(s: &str) -> Cidr {
    s.parse().expect("cidr")
}

fn node(name: &str, created: i64, pod_cidrs: &[&str]) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            uid: Some(format!("uid-{name}")),
            creation_timestamp: Some(Time(Timestamp::from_second(created).expect("time"))),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec {
            pod_cidr: pod_cidrs.first().map(|s| s.to_string()),
            pod_cidrs: (!pod_cidrs.is_empty())
                .then(|| pod_cidrs.iter().map(|s| s.to_string()).collect()),
            ..NodeSpec::default()
        }),
        status: None,
    }
}

/// What the plan does per node: `name=cidr,cidr` for a patch, `name!` for an exhaustion event.
fn outcome(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .map(|a| match a {
            Action::Patch { target, patch, .. } => {
                assert_eq!(patch["metadata"]["uid"], format!("uid-{}", target.name));
                assert_eq!(patch["spec"]["podCIDR"], patch["spec"]["podCIDRs"][0]);
                let cidrs: Vec<&str> = patch["spec"]["podCIDRs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str())
                    .collect();
                format!("{}={}", target.name, cidrs.join(","))
            }
            Action::Event {
                regarding,
                reason,
                message,
                ..
            } => {
                assert_eq!(reason, "CIDRNotAvailable");
                assert_eq!(
                    message,
                    &format!("Node {} status is now: CIDRNotAvailable", regarding.name)
                );
                format!("{}!", regarding.name)
            }
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

#[test]
fn cidrs_parse_like_go() {
    let cases = [
        ("10.244.0.0/16", Some("10.244.0.0/16")),
        ("10.244.3.7/16", Some("10.244.0.0/16")),
        ("10.0.0.1/32", Some("10.0.0.1/32")),
        ("0.0.0.0/0", Some("0.0.0.0/0")),
        ("fd00:10:244::1/48", Some("fd00:10:244::/48")),
        ("::/0", Some("::/0")),
        ("10.0.0.0/33", None),
        ("fd00::/129", None),
        ("10.0.0.0", None),
        ("10.0.0.0/", None),
        ("10.0.0.0/+8", None),
        ("nope/8", None),
    ];
    for (input, expected) in cases {
        let parsed = input.parse::<Cidr>().ok().map(|c| c.to_string());
        assert_eq!(parsed.as_deref(), expected, "{input}");
    }
}

#[test]
fn overlap() {
    let cases = [
        ("10.0.0.0/8", "10.1.0.0/16", true),
        ("10.1.0.0/16", "10.0.0.0/8", true),
        ("10.1.0.0/16", "10.2.0.0/16", false),
        ("10.0.0.0/8", "fd00::/8", false),
        ("fd00::/64", "fd00::1:0/112", true),
    ];
    for (a, b, expected) in cases {
        assert_eq!(cidr(a).overlaps(&cidr(b)), expected, "{a} {b}");
    }
}

#[test]
fn configuration_is_validated() {
    let ok = |cidrs: &[&str], masks: &[u8]| {
        let cidrs: Vec<Cidr> = cidrs.iter().map(|s| cidr(s)).collect();
        cluster_cidrs(&cidrs, masks).map(|cs| cs.iter().map(|c| c.node_mask).collect::<Vec<_>>())
    };
    assert_eq!(ok(&["10.244.0.0/16"], &[]), Ok(vec![24]));
    assert_eq!(ok(&["10.244.0.0/16", "fd00::/48"], &[]), Ok(vec![24, 64]));
    assert_eq!(ok(&["10.244.0.0/16"], &[26]), Ok(vec![26]));
    assert!(matches!(ok(&[], &[]), Err(IpamConfigError::NoClusterCidr)));
    assert!(matches!(
        ok(&["10.0.0.0/16", "10.1.0.0/16"], &[]),
        Err(IpamConfigError::SameFamily(..))
    ));
    assert!(matches!(
        ok(&["10.0.0.0/16"], &[24, 64]),
        Err(IpamConfigError::MaskCount { .. })
    ));
    assert!(matches!(
        ok(&["10.0.0.0/16"], &[8]),
        Err(IpamConfigError::MaskShorterThanCluster { .. })
    ));
    assert!(matches!(
        ok(&["10.0.0.0/16"], &[33]),
        Err(IpamConfigError::MaskTooLong { .. })
    ));
    // fd00::/32 with /64 subnets: 2^32 subnets, too many.
    assert!(matches!(
        ok(&["fd00::/32"], &[]),
        Err(IpamConfigError::TooManySubnets { .. })
    ));
}

#[test]
fn allocation_takes_the_lowest_free_subnet_and_never_overlaps() {
    let v4 = || cluster_cidrs(&[cidr("10.244.0.0/16")], &[]).expect("config");
    let tiny = || cluster_cidrs(&[cidr("10.0.0.0/30")], &[31]).expect("config");
    let dual = || {
        cluster_cidrs(
            &[cidr("10.244.0.0/16"), cidr("fd00:10:244::/63")],
            &[24, 64],
        )
        .expect("config")
    };
    // (case, cluster, nodes, expected outcome)
    type Case = (&'static str, Vec<ClusterCidr>, Vec<Node>, Vec<&'static str>);
    let cases: Vec<Case> = vec![
        (
            "fresh nodes in creation order",
            v4(),
            vec![node("b", 2, &[]), node("a", 1, &[])],
            vec!["a=10.244.0.0/24", "b=10.244.1.0/24"],
        ),
        (
            "existing subnets are occupied, gaps refilled",
            v4(),
            vec![
                node("a", 1, &["10.244.1.0/24"]),
                node("b", 2, &[]),
                node("c", 3, &[]),
            ],
            vec!["b=10.244.0.0/24", "c=10.244.2.0/24"],
        ),
        (
            "a larger held block occupies all its subnets",
            v4(),
            vec![node("a", 1, &["10.244.0.0/23"]), node("b", 2, &[])],
            vec!["b=10.244.2.0/24"],
        ),
        (
            "a block outside the cluster CIDR occupies nothing",
            v4(),
            vec![node("a", 1, &["192.168.0.0/24"]), node("b", 2, &[])],
            vec!["b=10.244.0.0/24"],
        ),
        (
            "nodes with a subnet and nodes being deleted are left alone",
            v4(),
            vec![node("a", 1, &["10.244.0.0/24"]), {
                let mut n = node("gone", 2, &[]);
                n.metadata.deletion_timestamp = n.metadata.creation_timestamp.clone();
                n
            }],
            vec![],
        ),
        (
            "exhaustion",
            tiny(),
            vec![node("a", 1, &[]), node("b", 2, &[]), node("c", 3, &[])],
            vec!["a=10.0.0.0/31", "b=10.0.0.2/31", "c!"],
        ),
        (
            "dual stack",
            dual(),
            vec![
                node("a", 1, &["10.244.0.0/24", "fd00:10:244::/64"]),
                node("b", 2, &[]),
            ],
            vec!["b=10.244.1.0/24,fd00:10:244:1::/64"],
        ),
        (
            "dual stack with the IPv6 side exhausted",
            dual(),
            vec![node("a", 1, &[]), node("b", 2, &[]), node("c", 3, &[])],
            vec![
                "a=10.244.0.0/24,fd00:10:244::/64",
                "b=10.244.1.0/24,fd00:10:244:1::/64",
                "c!",
            ],
        ),
    ];
    for (case, clusters, nodes, expected) in cases {
        assert_eq!(outcome(&plan(&clusters, &nodes)), expected, "{case}");
    }
}

#[test]
fn a_deleted_nodes_subnet_is_free_again() {
    let clusters = cluster_cidrs(&[cidr("10.0.0.0/30")], &[31]).expect("config");
    let full = [
        node("a", 1, &["10.0.0.0/31"]),
        node("b", 2, &["10.0.0.2/31"]),
    ];
    assert_eq!(
        outcome(&plan(&clusters, &[full[0].clone(), node("c", 3, &[])])),
        ["c=10.0.0.2/31"]
    );
    assert_eq!(
        outcome(&plan(
            &clusters,
            &[full[0].clone(), full[1].clone(), node("c", 3, &[])]
        )),
        ["c!"]
    );
}
