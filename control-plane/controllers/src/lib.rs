//! The controllers of `kwk-control-plane controller-manager`.
//!
//! Every controller is a level-triggered reconciler in two halves: a **planner**, a pure
//! function from what the cluster should look like and what it does look like to a list of
//! [`action::Action`]s, table-tested without an apiserver; and the shared **runtime**
//! ([`runtime`]), which keeps watch caches, calls the planners and performs their actions
//! through the apiserver (kube-rs), with leader election on a coordination/v1 Lease.
//!
//! - [`action`]: what planners ask for (creates, updates, deletes, evictions, events).
//! - [`common`]: helpers the planners share (owner references, template hashes, pod state).
//! - One module per controller.

pub mod action;
pub mod common;
pub mod runtime;

pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpointslice;
pub mod garbagecollector;
pub mod job;
pub mod namespace;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod persistentvolume;
pub mod podgc;
pub mod replicaset;
pub mod rootcacertpublisher;
pub mod serviceaccount;
pub mod statefulset;
pub mod volumeprotection;
