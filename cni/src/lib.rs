//! `kwk-cni`: the kwk CNI plugin (bridge, veth, host-local style IPAM; CNI spec 1.0/1.1).
//!
//! Layout: [`config`] parses the environment and stdin, [`plan`] and [`ipam`] decide (pure),
//! [`store`] (allocation files) and [`netlink`] (rtnetlink) perform, [`plugin`] runs one command.
//! Egress masquerade and hostPort are not here yet: they need the nftables layer.

pub mod config;
pub mod error;
pub mod ipam;
pub mod ipv4;
pub mod netlink;
pub mod netns;
pub mod plan;
pub mod plugin;
pub mod result;
pub mod store;

pub use error::CniError;
pub use plugin::{Outcome, run};
