//! `kwk-api`: Kubernetes API object semantics shared by kwk-node and the kwk control plane —
//! upstream's defaulting and validation of core kinds on `k8s-openapi` types. Pure functions;
//! validation returns every problem as a [`field::FieldError`] with upstream's wording.
//!
//! - [`field`]: field errors (path, cause type, message).
//! - [`names`]: name and value formats (DNS labels, qualified names, IPs ...).
//! - [`meta`]: labels, annotations, selectors, finalizers.
//! - [`node_selector`]: whether a node is selected by node selectors and node affinity.
//! - [`quantity`]: resource quantities.
//! - [`pod`]: pod defaults and validation.
//! - [`taints`]: tolerations against taints.
//! - [`persistent_volume`]: which volume a claim binds to (pv controller and scheduler).

#![forbid(unsafe_code)]

pub mod field;
pub mod meta;
pub mod names;
pub mod node_selector;
pub mod persistent_volume;
pub mod pod;
pub mod quantity;
pub mod taints;
