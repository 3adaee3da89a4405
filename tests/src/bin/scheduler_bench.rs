//! `scheduler_bench`: the kwk scheduler's algorithm in-process, shaped like upstream's
//! scheduler_perf `SchedulingBasic/5000Nodes_10000Pods`: 5,000 simulated nodes (4 CPU,
//! 16Gi, 110 pods, 5 zones, a few tainted), 1,000 pods already bound, then 10,000 pods
//! (100m CPU, 500Mi) scheduled one by one with the default plugins, each decision bound into
//! the snapshot before the next. Prints pods/s and the p50/p99 latency of one decision
//! (schedule + snapshot update). No apiserver, no binding I/O: this measures the algorithm.
//!
//! Run: `cargo run --release -p kwk-tests --bin scheduler_bench [-- --nodes N --pods M]`.
//! Upstream's CI floor for the same shape is 680 pods/s (whole scheduler, with API calls).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, bail};
use kwk_scheduler::k8s_openapi::api::core::v1::{
    Container, ContainerImage, Node, NodeSpec, NodeStatus, Pod, PodSpec, ResourceRequirements,
    Taint, Toleration,
};
use kwk_scheduler::k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kwk_scheduler::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kwk_scheduler::{Config, Scheduler, Snapshot};

const ZONES: usize = 5;
const INITIAL_PODS: usize = 1000;

fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
        .collect()
}

fn bench_node(i: usize) -> Node {
    let name = format!("node-{i:05}");
    let mut labels = BTreeMap::new();
    labels.insert("kubernetes.io/hostname".to_string(), name.clone());
    labels.insert(
        "topology.kubernetes.io/zone".to_string(),
        format!("zone-{}", i % ZONES),
    );
    labels.insert("kubernetes.io/os".to_string(), "linux".to_string());
    let mut taints = Vec::new();
    if i.is_multiple_of(50) {
        taints.push(Taint {
            key: "dedicated".to_string(),
            value: Some("infra".to_string()),
            effect: "NoSchedule".to_string(),
            time_added: None,
        });
    }
    if i.is_multiple_of(7) {
        taints.push(Taint {
            key: "spot".to_string(),
            value: None,
            effect: "PreferNoSchedule".to_string(),
            time_added: None,
        });
    }
    let mut images = vec![ContainerImage {
        names: Some(vec!["registry.k8s.io/pause:3.10".to_string()]),
        size_bytes: Some(320_000),
    }];
    if i.is_multiple_of(3) {
        images.push(ContainerImage {
            names: Some(vec!["example.com/app:v1".to_string()]),
            size_bytes: Some(150 * 1024 * 1024),
        });
    }
    Node {
        metadata: ObjectMeta {
            name: Some(name),
            labels: Some(labels),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            taints: (!taints.is_empty()).then_some(taints),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            allocatable: Some(quantities(&[
                ("cpu", "4"),
                ("memory", "16Gi"),
                ("pods", "110"),
                ("ephemeral-storage", "100Gi"),
            ])),
            images: Some(images),
            ..Default::default()
        }),
    }
}

fn bench_pod(name: &str, node: Option<String>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some("bench".to_string()),
            labels: Some(BTreeMap::from([("app".to_string(), "bench".to_string())])),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: node,
            containers: vec![Container {
                name: "app".to_string(),
                image: Some("example.com/app:v1".to_string()),
                resources: Some(ResourceRequirements {
                    requests: Some(quantities(&[("cpu", "100m"), ("memory", "500Mi")])),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            tolerations: Some(vec![Toleration {
                key: Some("node.kubernetes.io/not-ready".to_string()),
                operator: Some("Exists".to_string()),
                effect: Some("NoExecute".to_string()),
                toleration_seconds: Some(300),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

fn arg(args: &[String], flag: &str, default: usize) -> anyhow::Result<usize> {
    match args.iter().position(|a| a == flag) {
        None => Ok(default),
        Some(i) => args
            .get(i + 1)
            .context("missing value")?
            .parse()
            .with_context(|| format!("{flag} takes a number")),
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let node_count = arg(&args, "--nodes", 5000)?;
    let pod_count = arg(&args, "--pods", 10_000)?;

    let setup = Instant::now();
    let nodes: Vec<Node> = (0..node_count).map(bench_node).collect();
    let initial: Vec<Pod> = (0..INITIAL_PODS)
        .map(|i| {
            let node = format!("node-{:05}", (i * 7 + 1) % node_count.max(1));
            bench_pod(&format!("init-{i}"), Some(node))
        })
        .collect();
    let mut snapshot = Snapshot::new(nodes, initial);
    println!(
        "setup: {} nodes, {} bound pods in {:.0} ms",
        snapshot.nodes().len(),
        snapshot.pod_count(),
        setup.elapsed().as_secs_f64() * 1e3
    );

    let pods: Vec<Arc<Pod>> = (0..pod_count)
        .map(|i| Arc::new(bench_pod(&format!("pod-{i}"), None)))
        .collect();
    let mut scheduler = Scheduler::new(Config::default(), 0x5eed);
    let mut latencies = Vec::with_capacity(pod_count);
    let mut evaluated = 0usize;
    let start = Instant::now();
    for pod in pods {
        let t = Instant::now();
        let decision = match scheduler.schedule_arc(pod.clone(), &snapshot) {
            Ok(d) => d,
            Err(e) => bail!("pod did not fit: {e}"),
        };
        evaluated += decision.evaluated_nodes;
        let mut bound = Arc::unwrap_or_clone(pod);
        if let Some(spec) = bound.spec.as_mut() {
            spec.node_name = Some(decision.node);
        }
        snapshot.add_pod(bound);
        latencies.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let total = start.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);

    let busiest = snapshot
        .nodes()
        .iter()
        .map(|n| n.pods.len())
        .max()
        .unwrap_or(0);
    let tainted_used = snapshot
        .nodes()
        .iter()
        .filter(|n| n.name.ends_with("00") || n.name.ends_with("50"))
        .filter(|n| n.pods.iter().any(|p| p.key.starts_with("bench/pod-")))
        .count();
    println!(
        "scheduled {pod_count} pods in {:.2} s: {:.0} pods/s; per pod p50 {:.0} us, p99 {:.0} us; \
         {:.0} nodes evaluated per pod; busiest node {busiest} pods; {tainted_used} NoSchedule nodes used",
        total,
        pod_count as f64 / total,
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        evaluated as f64 / pod_count.max(1) as f64,
    );
    Ok(())
}
