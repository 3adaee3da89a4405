//! The Kubernetes API server: HTTPS (rustls) with x509 and token authentication, a pluggable
//! authorizer, discovery, and the REST verbs over the [`crate::storage::Store`].

pub mod authn;
pub mod authz;
pub mod catalog;
pub mod errors;
pub mod kinds;
pub mod pki;
pub mod request;
