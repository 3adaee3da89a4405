//! `kwk-agent`: the node agent (kubelet and kube-proxy in one daemon) and the `kwk` admin CLI.
//!
//! Module map: `config` (KubeletConfiguration loading), `static_pods` (the manifest directory
//! source), `cgroups` (QoS and pod cgroups), `runtime_spec` (pod spec → CRI configs, volumes),
//! `pod` (pod manager, workers, plans, PLEG, status), `labels` and `quantity` (shared formats).

pub mod labels;
pub mod quantity;
pub mod runtime_spec;
