//! Pod networking on the node: routes to the other nodes' pod CIDRs ([`routes`], host-gw).
pub mod routes;
