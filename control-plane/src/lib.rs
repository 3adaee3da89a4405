//! `kwk-control-plane`: apiserver, scheduler and controllers, one subcommand per component.
//!
//! - [`storage`]: the storage contract ([`storage::Store`]) and its backends (embedded, etcd).
//! - [`apiserver`]: the Kubernetes REST API over a store.
//! - [`scheduler`]: the running scheduler (watches, queue, binding, preemption).

pub mod apiserver;
pub mod scheduler;
pub mod storage;
