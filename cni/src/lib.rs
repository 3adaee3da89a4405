//! `kwk-cni`: the kwk CNI plugin — bridge, veth and host-local style IPAM (CNI spec 0.3.1 to
//! 1.1.0: ADD, DEL, CHECK, VERSION, GC, STATUS), IPv4; and the `loopback` type ([`loopback`]),
//! which container runtimes run for every sandbox.
//!
//! Layout: [`config`] parses the `CNI_*` environment and the network config on stdin;
//! [`plan`] and [`ipam`] decide, purely, what to create given what exists; [`store`] (the
//! allocation files) and [`netlink`] (a synchronous rtnetlink client) perform; [`plugin`] runs
//! one command and renders the result or the error JSON ([`error`] maps errors to CNI codes).
//!
//! What the node agent writes (`/etc/cni/net.d/10-kwk.conflist`, rendered by
//! [`config::node_conflist`]; the bridge plugin's keys plus host-local's `ipam` keys; the
//! `loopback` containerd runs on its own is this binary too, through a `loopback` link in the
//! CNI bin dir):
//!
//! ```json
//! {"cniVersion": "1.0.0", "name": "kwk", "plugins": [{
//!   "type": "kwk-cni", "bridge": "cni0", "isGateway": true, "isDefaultGateway": true,
//!   "hairpinMode": true, "mtu": 1500, "ipMasq": true, "clusterCIDR": "<cluster CIDR>",
//!   "capabilities": {"portMappings": true},
//!   "ipam": {"type": "host-local", "subnet": "<node podCIDR>"}}]}
//! ```
//!
//! Behaviour worth knowing:
//! - ADD creates the veth peer directly in the pod namespace (`IFLA_NET_NS_FD` inside the
//!   `VETH_INFO_PEER` message), attached and up in one request; a repeated ADD returns the same
//!   result and repairs what drifted.
//! - Allocations use host-local's on-disk layout (`<dataDir>/<network>/<ip>` holding
//!   `<containerID>\r\n<ifname>`, `last_reserved_ip.0`, `flock` on the directory), so the two
//!   plugins can read each other's state.
//! - DEL takes the pair off the network synchronously (address released, both ends down and
//!   renamed `kwkd*`) and leaves the kernel's slow unregister (~17 ms, an RCU barrier) to a
//!   detached child of the same binary; GC deletes any `kwkd*` link left behind.
//! - `ipMasq` (pod egress leaving `clusterCIDR`, default the subnet) and hostPorts
//!   (`runtimeConfig.portMappings`) live in one node-wide nftables table, `ip kwk-cni`
//!   ([`nat`]); a hostPort is a map element, recorded next to the allocations ([`hostport`]) so
//!   DEL and GC work from the store. ADD costs one chain listing when nothing changes.
//! - Not here yet: IPv6, several range sets, requested IPs (`CNI_ARGS IP=`,
//!   `runtimeConfig.ips`).

pub mod config;
pub mod error;
pub mod hostport;
pub mod ipam;
pub mod ipv4;
pub mod loopback;
pub mod nat;
pub mod netlink;
pub mod netns;
pub mod plan;
pub mod plugin;
pub mod result;
pub mod store;

pub use error::CniError;
pub use plugin::{Outcome, run};
