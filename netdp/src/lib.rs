//! `kwk-netdp`: the Service dataplane.
//!
//! The core is pure: [`model`] turns Services, EndpointSlices and this node's state into a
//! mode-independent [`model::RuleSet`] (what kube-proxy would program, whatever the backend), and
//! [`model::diff`] computes what a sync has to change. [`trace`] evaluates a `RuleSet` for one
//! packet; the unit tests of every rendering mode use it to assert behaviour rather than text.
//!
//! A sync, in order: [`model::ProxyInput::from_api`] (or keep one and feed it changes with
//! `apply_service` / `remove_service` / `apply_slices`), [`model::build_rules`] for a full
//! sync, or [`model::update_service`] per changed Service (its [`model::Touched::diff`] is that
//! change's [`model::RuleDiff`]); a renderer applies the diff. Rebuild fully when the node's
//! addresses, zone or the proxy options change.
//!
//! [`nft`] is the nf_tables netlink client the nftables mode programs the kernel through;
//! [`dataplane::Dataplane`] is what every mode implements for the sync loop ([`runner`]);
//! [`nftables::NftablesDataplane`] is the nftables mode (a few global maps over netlink),
//! [`iptables::IptablesDataplane`] the iptables mode (kube-proxy's chain layout, applied with
//! `iptables-restore`), [`ipvs`] the IPVS mode's generic-netlink client and planner.
//! [`conntrack`] deletes the UDP conntrack entries a sync made stale; [`routes`] and [`rtnl`]
//! route pod CIDRs between nodes (host-gw).

pub mod conntrack;
pub mod dataplane;
pub mod iptables;
pub mod ipvs;
pub mod model;
mod netlink_socket;
mod netlink_wire;
pub mod netns;
pub mod nft;
pub mod nftables;
pub mod routes;
pub mod rtnl;
pub mod runner;
pub mod sysctl;
pub mod trace;

#[cfg(test)]
mod testkit;
