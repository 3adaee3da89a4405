//! `kwk-cri`: how kwk talks to a container runtime.
//!
//! - [`CriClient`]: a typed async client for CRI v1 (`RuntimeService` and `ImageService`) over
//!   a unix socket, with per-call deadlines, errors that keep the gRPC code, and bounded retry
//!   while the socket is absent.
//! - [`import`]: loads OCI image archives into containerd's `k8s.io` namespace through its native
//!   services (leases, content, images, snapshots, diff), which containerd 1.6 and 2.x share; an
//!   archive already present is a cheap no-op.
//!
//! This crate knows nothing of pods or the agent.

mod client;
pub mod connect;
mod error;
mod images;
pub mod import;
mod runtime;

pub use client::{CriClient, MAX_MESSAGE_BYTES, Timeouts, Verbose};
pub use connect::ConnectOptions;
pub use error::CriError;
pub use images::image_spec;
/// The generated CRI v1 messages and service clients.
pub use k8s_cri::v1 as api;
pub use runtime::CRI_API_VERSION;
