//! `kwk-control-plane`: apiserver, scheduler and controllers, one subcommand per component.
//!
//! - [`apiserver`]: the apiserver; today its patch engines ([`apiserver::patch`]).
//! - [`storage`]: the storage contract ([`storage::Store`]) and its backends (embedded, etcd).

pub mod apiserver;
pub mod storage;
