//! `kwk-netdp`: the Service dataplane.
//!
//! The core is pure: [`model`] turns Services, EndpointSlices and this node's state into a
//! mode-independent [`model::RuleSet`] (what kube-proxy would program, whatever the backend), and
//! [`model::diff`] computes what a sync has to change. [`trace`] evaluates a `RuleSet` for one
//! packet; the unit tests of every rendering mode use it to assert behaviour rather than text.

pub mod model;
pub mod trace;
