//! Pod admission with the real apiserver (in-process) and a real containerd: a pod bound to
//! the node that does not fit is rejected — API status `Failed` with the kubelet's reason and
//! message, a Warning event, nothing on containerd — and stays rejected across a kwk-node
//! restart, while a fitting pod (selecting a label an admin put on the Node) runs.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed expectation aborts the test"
)]

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kwk_cri::api;
use kwk_tests::apiserver::TestApiServer;
use kwk_tests::node::TestNode;
use kwk_tests::{TestContainerd, privileged_tests_enabled, wait_for};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_kwk-node");
const WAIT: Duration = Duration::from_secs(40);
const NODE: &str = "kwkt-node";

fn api_pod(name: &str, extra_spec: &Value, requests: &Value) -> Pod {
    let mut spec = json!({
        "nodeName": NODE,
        "terminationGracePeriodSeconds": 1,
        "containers": [{
            "name": "main",
            "image": "localhost/kwk/busybox:1",
            "command": ["/bin/sh", "-c", "exec sleep 3600"],
            "resources": {"requests": requests},
        }],
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra_spec.as_object()) {
        spec.extend(extra.clone());
    }
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }))
    .unwrap()
}

/// Waits until the API pod `name` satisfies `check`; returns its JSON.
async fn wait_api_pod(
    pods: &Api<Pod>,
    name: &str,
    node: &TestNode,
    check: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut last = None;
    while tokio::time::Instant::now() < deadline {
        last = pods
            .get_opt(name)
            .await
            .ok()
            .flatten()
            .map(|p| serde_json::to_value(p).unwrap());
        if let Some(pod) = last.as_ref().filter(|p| check(p)) {
            return Ok(pod.clone());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::bail!(
        "pod {name} last seen {}\n{}",
        last.map(|p| p["status"].to_string())
            .unwrap_or_else(|| "never".into()),
        node.log_tail()
    )
}

/// The kubelet's Warning events about pod `name`: (reason, message).
async fn warnings(events: &Api<Event>, name: &str) -> Vec<(String, String)> {
    events
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| {
            e.involved_object.name.as_deref() == Some(name)
                && e.type_.as_deref() == Some("Warning")
                && e.source
                    .as_ref()
                    .is_some_and(|s| s.component.as_deref() == Some("kubelet"))
        })
        .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
        .collect()
}

/// How many sandboxes containerd has for pod `name`.
async fn sandboxes_of(containerd: &TestContainerd, name: &str) -> usize {
    containerd
        .cri
        .list_pod_sandbox(None)
        .await
        .unwrap()
        .into_iter()
        .filter(|s| s.metadata.as_ref().is_some_and(|m| m.name == name))
        .count()
}

fn failed_with(reason: &str) -> impl Fn(&Value) -> bool + '_ {
    move |p| p["status"]["phase"] == "Failed" && p["status"]["reason"] == reason
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_that_do_not_fit_are_rejected_and_fitting_ones_run() -> anyhow::Result<()> {
    if !privileged_tests_enabled() {
        return Ok(());
    }
    let containerd = TestContainerd::start().await?;
    let apiserver = TestApiServer::start().await?;
    let mut node =
        TestNode::start_joined(&containerd, Path::new(BIN), &apiserver.kubeconfig()).await?;
    let client = apiserver.client().await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let nodes: Api<Node> = Api::all(client);

    // The node's allocatable CPU as it reports it.
    let node_cpu = || async {
        nodes
            .get_opt(NODE)
            .await
            .ok()
            .flatten()
            .and_then(|n| n.status?.allocatable?.get("cpu").cloned())
            .and_then(|q| kwk_agent::quantity::parse(&q.0).ok())
            .map(|q| q.milli())
    };
    wait_for(WAIT, "the Node with allocatable cpu", || async {
        node_cpu().await.is_some()
    })
    .await?;
    let capacity = node_cpu().await.unwrap();
    // An admin's label, which the fitting pod selects.
    nodes
        .patch(
            NODE,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"disk": "ssd"}}})),
        )
        .await?;

    let greedy = api_pod("greedy", &json!({}), &json!({"cpu": "1000"}));
    let picky = api_pod(
        "picky",
        &json!({"nodeSelector": {"gpu": "yes"}}),
        &json!({}),
    );
    let fits = api_pod(
        "fits",
        &json!({"nodeSelector": {"disk": "ssd"}}),
        &json!({"cpu": "10m"}),
    );
    for pod in [&greedy, &picky, &fits] {
        pods.create(&PostParams::default(), pod).await?;
    }

    let greedy_seen = wait_api_pod(&pods, "greedy", &node, failed_with("OutOfcpu")).await?;
    assert_eq!(
        greedy_seen["status"]["message"],
        format!(
            "Pod was rejected: Node didn't have enough resource: cpu, requested: 1000000, used: 0, capacity: {capacity}"
        )
    );
    let picky_seen = wait_api_pod(&pods, "picky", &node, failed_with("NodeAffinity")).await?;
    assert_eq!(
        picky_seen["status"]["message"],
        "Pod was rejected: Predicate NodeAffinity failed: node(s) didn't match Pod's node affinity/selector"
    );
    wait_api_pod(&pods, "fits", &node, |p| p["status"]["phase"] == "Running").await?;

    wait_for(WAIT, "Warning events for the rejected pods", || async {
        warnings(&events, "greedy")
            .await
            .iter()
            .any(|(r, m)| r == "OutOfcpu" && m.starts_with("Node didn't have enough resource: cpu"))
            && warnings(&events, "picky")
                .await
                .iter()
                .any(|(r, _)| r == "NodeAffinity")
    })
    .await?;
    assert_eq!(sandboxes_of(&containerd, "greedy").await, 0);
    assert_eq!(sandboxes_of(&containerd, "picky").await, 0);
    assert_eq!(sandboxes_of(&containerd, "fits").await, 1);

    // A restart does not start a pod the API says was rejected.
    node.restart().await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        sandboxes_of(&containerd, "greedy").await,
        0,
        "{}",
        node.log_tail()
    );
    assert_eq!(
        sandboxes_of(&containerd, "picky").await,
        0,
        "{}",
        node.log_tail()
    );
    let greedy_after = pods.get("greedy").await?;
    assert_eq!(
        greedy_after.status.and_then(|s| s.phase).as_deref(),
        Some("Failed")
    );
    let running = api::PodSandboxState::SandboxReady as i32;
    let fits_sandboxes = containerd.cri.list_pod_sandbox(None).await?;
    assert!(
        fits_sandboxes
            .iter()
            .any(|s| s.metadata.as_ref().is_some_and(|m| m.name == "fits") && s.state == running),
        "the fitting pod keeps running"
    );

    // Deleting a rejected pod completes: nothing of it runs, the node deletes it for good.
    pods.delete("greedy", &DeleteParams::default()).await?;
    let gone = wait_for(WAIT, "the rejected pod to be deleted", || async {
        pods.get_opt("greedy").await.ok().flatten().is_none()
    })
    .await;
    if let Err(err) = gone {
        anyhow::bail!("{err:#}\n{}", node.log_tail());
    }
    assert_eq!(sandboxes_of(&containerd, "greedy").await, 0);
    Ok(())
}
