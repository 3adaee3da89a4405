//! The node IPAM controller wired to the runtime: when `--allocate-node-cidrs` is on, a
//! single key ([`KEY`]) planned over every node, queued by node changes (a deleted node's
//! subnet is free again as soon as it leaves the cache). [`config`] turns the flags into
//! the planner's cluster CIDRs, or an error naming the flag at fault; the binary calls it
//! at start-up so a bad configuration never gets as far as a running controller.

use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::runtime::watcher;

use super::{Cidr, ClusterCidr, IpamConfigError, cluster_cidrs, default_node_mask};
use crate::runtime::manager::ControllerOptions;
use crate::runtime::{Controller, ObjectKey, Plan, Watches};

/// The one key of the controller.
pub const KEY: &str = "nodeipam";

/// An unusable combination of the node IPAM flags.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamFlagError {
    #[error("--allocate-node-cidrs is true but --cluster-cidr is not set")]
    MissingClusterCidr,
    #[error("--cluster-cidr: {input:?} is not a CIDR")]
    BadClusterCidr { input: String },
    #[error(
        "--node-cidr-mask-size is not allowed with a dual-stack --cluster-cidr (use --node-cidr-mask-size-ipv4 and --node-cidr-mask-size-ipv6)"
    )]
    SingleMaskForDualStack,
    #[error("--{flag} is not allowed with the single-stack --cluster-cidr {cidr}")]
    WrongFamilyMask { flag: &'static str, cidr: Cidr },
    /// The planner's own check (its message is the whole story, so it is not a source).
    #[error("--cluster-cidr / --node-cidr-mask-size: {0}")]
    Invalid(IpamConfigError),
}

/// The cluster CIDRs to allocate from, or `None` when `--allocate-node-cidrs` is off.
pub fn config(options: &ControllerOptions) -> Result<Option<Vec<ClusterCidr>>, IpamFlagError> {
    if !options.allocate_node_cidrs {
        return Ok(None);
    }
    let listed = options.cluster_cidr.as_deref().unwrap_or_default();
    let cidrs: Vec<Cidr> = listed
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| {
            part.parse().map_err(|_| IpamFlagError::BadClusterCidr {
                input: part.to_string(),
            })
        })
        .collect::<Result<_, _>>()?;
    if cidrs.is_empty() {
        return Err(IpamFlagError::MissingClusterCidr);
    }
    let dual_stack = cidrs.len() > 1;
    if dual_stack && options.node_cidr_mask_size.is_some() {
        return Err(IpamFlagError::SingleMaskForDualStack);
    }
    let masks = cidrs
        .iter()
        .map(|cidr| {
            let (own, other, other_flag) = if cidr.is_ipv4() {
                (
                    options.node_cidr_mask_size_ipv4,
                    options.node_cidr_mask_size_ipv6,
                    "node-cidr-mask-size-ipv6",
                )
            } else {
                (
                    options.node_cidr_mask_size_ipv6,
                    options.node_cidr_mask_size_ipv4,
                    "node-cidr-mask-size-ipv4",
                )
            };
            if !dual_stack && other.is_some() {
                return Err(IpamFlagError::WrongFamilyMask {
                    flag: other_flag,
                    cidr: *cidr,
                });
            }
            Ok(own
                .or(options.node_cidr_mask_size)
                .unwrap_or_else(|| default_node_mask(cidr)))
        })
        .collect::<Result<Vec<u8>, _>>()?;
    cluster_cidrs(&cidrs, &masks)
        .map(Some)
        .map_err(IpamFlagError::Invalid)
}

/// The controller as `options` configure it: idle when `--allocate-node-cidrs` is off, and
/// (logging why) when the flags are unusable — the binary checks [`config`] first.
pub fn controller(client: &kube::Client, options: &ControllerOptions) -> Controller {
    match config(options) {
        Ok(Some(clusters)) => controller_with(client, clusters),
        Ok(None) => {
            tracing::info!("--allocate-node-cidrs is false: not allocating pod CIDRs to nodes");
            Controller::new(KEY, Watches::new(client.clone()), |_| Plan::default())
        }
        Err(err) => {
            tracing::error!("node IPAM disabled: {err}");
            Controller::new(KEY, Watches::new(client.clone()), |_| Plan::default())
        }
    }
}

/// The controller allocating from `clusters`.
pub fn controller_with(client: &kube::Client, clusters: Vec<ClusterCidr>) -> Controller {
    let mut watches = Watches::new(client.clone());
    let nodes = watches.watch(
        Api::<Node>::all(client.clone()),
        watcher::Config::default(),
        |_| vec![ObjectKey::cluster(KEY)],
    );
    Controller::new(KEY, watches, move |_key| {
        let nodes: Vec<Node> = nodes.state().iter().map(|n| (**n).clone()).collect();
        super::plan(&clusters, &nodes).into()
    })
    // One pass at a time: two passes over the same cache would hand out a subnet twice.
    .workers(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(cidr: Option<&str>, masks: [Option<u8>; 3]) -> ControllerOptions {
        ControllerOptions {
            allocate_node_cidrs: true,
            cluster_cidr: cidr.map(String::from),
            node_cidr_mask_size: masks[0],
            node_cidr_mask_size_ipv4: masks[1],
            node_cidr_mask_size_ipv6: masks[2],
            ..ControllerOptions::default()
        }
    }

    /// (case, --cluster-cidr, [--node-cidr-mask-size, -ipv4, -ipv6]).
    type Flags<'a> = (&'a str, Option<&'a str>, [Option<u8>; 3]);

    fn summary(clusters: &[ClusterCidr]) -> Vec<String> {
        clusters
            .iter()
            .map(|c| format!("{} /{}", c.cidr, c.node_mask))
            .collect()
    }

    #[test]
    fn flags_become_cluster_cidrs() {
        let cases: Vec<(Flags<'_>, Vec<&str>)> = vec![
            (
                ("v4 default", Some("10.244.0.0/16"), [None; 3]),
                vec!["10.244.0.0/16 /24"],
            ),
            (
                ("v4 mask", Some("10.244.0.0/16"), [Some(26), None, None]),
                vec!["10.244.0.0/16 /26"],
            ),
            (
                (
                    "v4 family mask",
                    Some("10.244.0.0/16"),
                    [Some(26), Some(25), None],
                ),
                vec!["10.244.0.0/16 /25"],
            ),
            (
                ("v6 default", Some("fd00::/48"), [None; 3]),
                vec!["fd00::/48 /64"],
            ),
            (
                (
                    "dual",
                    Some("10.244.0.0/16, fd00::/48"),
                    [None, Some(20), None],
                ),
                vec!["10.244.0.0/16 /20", "fd00::/48 /64"],
            ),
        ];
        for ((name, cidr, masks), want) in cases {
            let got = config(&options(cidr, masks)).expect(name).expect(name);
            assert_eq!(summary(&got), want, "{name}");
        }
    }

    #[test]
    fn bad_flags_name_the_flag() {
        let cases: Vec<(Flags<'_>, &str)> = vec![
            (("missing", None, [None; 3]), "--cluster-cidr"),
            (("garbage", Some("10.244.0.0"), [None; 3]), "--cluster-cidr"),
            (
                (
                    "single mask dual",
                    Some("10.0.0.0/8,fd00::/48"),
                    [Some(24), None, None],
                ),
                "--node-cidr-mask-size",
            ),
            (
                ("v6 mask on v4", Some("10.0.0.0/8"), [None, None, Some(64)]),
                "--node-cidr-mask-size-ipv6",
            ),
            (
                ("mask too short", Some("10.0.0.0/16"), [Some(8), None, None]),
                "--node-cidr-mask-size",
            ),
        ];
        for ((name, cidr, masks), flag) in cases {
            let err = config(&options(cidr, masks)).expect_err(name);
            assert!(err.to_string().contains(flag), "{name}: {err}");
        }
    }

    #[test]
    fn off_unless_allocate_node_cidrs() {
        let off = ControllerOptions {
            cluster_cidr: Some("10.244.0.0/16".into()),
            ..ControllerOptions::default()
        };
        assert_eq!(config(&off), Ok(None));
    }
}
