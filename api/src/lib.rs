//! `kwk-api`: Kubernetes API object semantics shared by kwk-node and the kwk control plane —
//! upstream's defaulting and validation of core kinds on `k8s-openapi` types. Pure functions;
//! validation returns every problem as a [`field::FieldError`] with upstream's wording.
//!
//! - [`field`]: field errors (path, cause type, message).
//! - [`names`]: name and value formats (DNS labels, qualified names, IPs ...).
//! - [`meta`]: labels, annotations, selectors, finalizers.
//! - [`quantity`]: resource quantities.
//! - [`pod`]: pod defaults and validation.
//! - [`persistent_volume`]: which volume a claim binds to (pv controller and scheduler).

#![forbid(unsafe_code)]

pub mod field;
pub mod meta;
pub mod names;
pub mod persistent_volume;
pub mod pod;
pub mod quantity;
