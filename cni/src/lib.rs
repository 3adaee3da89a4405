//! `kwk-cni`: the kwk CNI plugin (bridge, veth, host-local style IPAM; CNI spec 1.0).
//!
//! Empty until the dataplane issue lands.
