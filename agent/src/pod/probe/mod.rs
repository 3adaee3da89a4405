//! Container probes (startup, liveness, readiness): the probe spec with the API's defaults
//! ([`spec`]), the verdict a run of results gives ([`tracker`]), the network handlers
//! ([`handlers`]: TCP, HTTP(S), gRPC health) and the per-pod [`prober`] that runs them.

pub mod handlers;
pub mod prober;
pub mod spec;
pub mod tracker;
