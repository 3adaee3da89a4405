//! The kwk scheduler's algorithm, kept free of I/O so it can be table-tested plugin by plugin
//! and benchmarked in-process: a snapshot of nodes and the pods on them goes in, a decision
//! (a node, or why none fits, or whom to preempt) comes out. Watching the apiserver, binding
//! and events live with the `kwk-control-plane scheduler` component, which feeds this crate.
//!
//! - [`snapshot`]: nodes with their pods, requests, ports and images, updated incrementally.
//! - [`plugins`]: upstream's default filter and score plugins.
//! - [`framework`]: one scheduling cycle ([`Scheduler::schedule`]).
//! - [`fit_error`]: the `0/N nodes are available: ...` message.
//! - [`preemption`]: DefaultPreemption (victims and nominated node).
//! - [`queue`]: active, backoff and unschedulable pods.
//! - [`volumes`]: claims, volumes and classes, with the volumes assumed bound.

#![forbid(unsafe_code)]

pub mod fit_error;
pub mod framework;
pub mod plugins;
pub mod pod_info;
pub mod preemption;
pub mod queue;
pub mod resources;
pub mod rng;
pub mod snapshot;
#[cfg(test)]
mod testing;
pub mod volumes;

/// The API types this crate's interface is written in, for callers without their own
/// dependency (the benchmark).
pub use k8s_openapi;

pub use fit_error::FitError;
pub use framework::{Config, ScheduleResult, Scheduler};
pub use snapshot::{NodeInfo, Snapshot};
