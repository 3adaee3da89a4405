//! `kwk-control-plane`: apiserver, scheduler and controllers, one subcommand per component.
//!
//! - [`storage`]: the storage contract ([`storage::Store`]) and its backends (embedded, etcd).

pub mod storage;
