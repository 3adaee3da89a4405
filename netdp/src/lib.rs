//! `kwk-netdp`: the Service dataplane.
//!
//! Empty until the dataplane issue lands: it will build the desired rule set from Services and
//! EndpointSlices as a pure function and apply the difference through netlink.
