//! Pods on this node: the pod manager and one worker per pod, the pure per-pod planner, the
//! runtime view (observed state, PLEG) and the pod status computed from it.

pub mod admission;
pub mod backoff;
pub mod cri_runtime;
pub mod events;
pub mod fingerprint;
pub mod hooks;
pub mod manager;
pub mod node_facts;
pub mod observed;
pub mod plan;
pub mod pleg;
pub mod probe;
pub mod runtime;
pub mod spec;
pub mod status;
pub mod store;
pub mod worker;

#[cfg(test)]
mod admission_tests;
#[cfg(test)]
mod fake_runtime;
#[cfg(test)]
mod manager_tests;
