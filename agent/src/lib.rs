//! `kwk-agent`: the node agent (kubelet and kube-proxy in one daemon) and the `kwk` admin CLI.
//!
//! Module map: `config` (KubeletConfiguration loading), `static_pods` (the manifest directory
//! source), `cgroups` (QoS and pod cgroups), `runtime_spec` (pod spec → CRI configs, volumes),
//! `pod` (pod manager, workers, plans, PLEG, status), `node` (the daemon wiring), `node_status` (the Node
//! object, its status and Lease), `local_api`
//! (the read-only socket), `logs` (rotation), and shared formats (`labels`, `quantity`,
//! `canonical`, `clock`); `image_gc` and `container_gc` collect unused images and dead containers. Quantities and the API defaulting and validation of pods come from
//! `kwk-api`, shared with the control plane.

pub mod api_client;
pub mod api_pods;
pub mod canonical;
pub mod cgroups;
pub mod clock;
pub mod config;
pub mod container_gc;
pub mod eviction;
pub mod image_gc;
pub mod init;
pub mod kubelet_api;
pub mod labels;
pub mod local_api;
pub mod logs;
pub mod network;
pub mod node;
pub mod node_status;
pub mod pod;
pub mod proxy;
pub use kwk_api::quantity;
pub mod runtime_spec;
pub mod static_pods;
pub mod streaming;
