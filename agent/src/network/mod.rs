//! Pod networking on the node: the `kwk-cni` configuration from the podCIDR ([`cni_conf`]) and
//! routes to the other nodes' pod CIDRs ([`routes`], host-gw).

pub mod cni_conf;
pub mod routes;
