//! `kwk-agent`: the node agent (kubelet and kube-proxy in one daemon) and the `kwk` admin CLI.
//!
//! Empty until the static-pod issue lands: it will own configuration, pod sources, pod workers,
//! PLEG, status, probes, volumes, cgroups, eviction, GC, node status and the kubelet API.
