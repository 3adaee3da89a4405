//! kwk-node with an apiserver (the real one, in-process) and a real containerd: pods bound to
//! the node run and report their status to the API, are terminated and deleted from the API
//! when deleted there, keep running while the apiserver is away (their status arrives once it
//! is back), and static pods get mirror pods that come back when deleted.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed expectation aborts the test"
)]

use std::path::Path;
use std::time::Duration;

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams, WatchEvent, WatchParams};
use kwk_cri::api;
use kwk_tests::apiserver::TestApiServer;
use kwk_tests::node::TestNode;
use kwk_tests::{TestContainerd, privileged_tests_enabled, wait_for};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_kwk-node");
const WAIT: Duration = Duration::from_secs(40);
const NODE: &str = "kwkt-node";

async fn start_node(
    containerd: &TestContainerd,
    apiserver: &TestApiServer,
) -> anyhow::Result<TestNode> {
    TestNode::start_joined(containerd, Path::new(BIN), &apiserver.kubeconfig()).await
}

fn api_pod(name: &str, restart_policy: &str, command: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "nodeName": NODE,
            "restartPolicy": restart_policy,
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "main",
                "image": "localhost/kwk/busybox:1",
                "command": ["/bin/sh", "-c", command],
            }],
        },
    }))
    .unwrap()
}

fn json_of(pod: &Pod) -> Value {
    serde_json::to_value(pod).unwrap()
}

fn is_running(pod: &Value) -> bool {
    pod["status"]["phase"] == "Running"
        && pod["status"]["containerStatuses"][0]["ready"] == true
        && pod["status"]["podIP"].is_string()
}

/// Waits until the API pod `name` satisfies `check`; returns it.
async fn wait_api_pod(
    pods: &Api<Pod>,
    name: &str,
    what: &str,
    node: &TestNode,
    check: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    let mut found = None;
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut last = None;
    while tokio::time::Instant::now() < deadline {
        last = pods.get_opt(name).await.ok().flatten().map(|p| json_of(&p));
        if last.as_ref().is_some_and(&check) {
            found = last.clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    found.ok_or_else(|| {
        anyhow::anyhow!(
            "{what}: pod {name} last seen {}\n{}",
            last.map(|p| p["status"].to_string())
                .unwrap_or_else(|| "never".into()),
            node.log_tail()
        )
    })
}

/// The reasons of the kubelet's events about pod `name`, oldest first.
async fn event_reasons(events: &Api<Event>, name: &str) -> Vec<String> {
    let mut list: Vec<Event> = events
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| {
            e.involved_object.name.as_deref() == Some(name)
                && e.source.as_ref().is_some_and(|s| {
                    s.component.as_deref() == Some("kubelet") && s.host.as_deref() == Some(NODE)
                })
        })
        .collect();
    list.sort_by_key(|e| e.metadata.name.clone());
    list.into_iter().filter_map(|e| e.reason).collect()
}

fn container_id(pod: &Value) -> String {
    let id = pod["status"]["containerStatuses"][0]["containerID"]
        .as_str()
        .unwrap_or_default();
    id.split_once("://").map_or(id, |(_, id)| id).to_string()
}

async fn container_state(containerd: &TestContainerd, id: &str) -> Option<i32> {
    containerd
        .cri
        .list_containers(None)
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.id == id)
        .map(|c| c.state)
}

/// Runs `delete` and watches pod `name` until it is gone from the API; returns the last
/// version seen before (the one that carries the node's final status).
async fn deleted_from_api(
    pods: &Api<Pod>,
    name: &str,
    node_log: &Path,
    delete: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<Value> {
    let current = pods.get(name).await?;
    let rv = current
        .metadata
        .resource_version
        .clone()
        .unwrap_or_default();
    let mut watch = pods
        .watch(
            &WatchParams::default().fields(&format!("metadata.name={name}")),
            &rv,
        )
        .await?
        .boxed();
    delete.await?;
    let mut last = json_of(&current);
    let deleted = tokio::time::timeout(WAIT, async {
        while let Some(event) = watch.try_next().await? {
            match event {
                WatchEvent::Modified(p) => last = json_of(&p),
                WatchEvent::Deleted(_) => return anyhow::Ok(true),
                _ => {}
            }
        }
        anyhow::Ok(false)
    })
    .await;
    anyhow::ensure!(
        matches!(deleted, Ok(Ok(true))),
        "{name} was not deleted from the API: {deleted:?}\n{}",
        std::fs::read_to_string(node_log).unwrap_or_default()
    );
    Ok(last)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_pods_run_report_status_survive_an_apiserver_outage_and_are_deleted()
-> anyhow::Result<()> {
    if !privileged_tests_enabled() {
        return Ok(());
    }
    let containerd = TestContainerd::start().await?;
    let mut apiserver = TestApiServer::start().await?;
    let node = start_node(&containerd, &apiserver).await?;
    let client = apiserver.client().await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let events: Api<Event> = Api::namespaced(client, "default");

    let web = api_pod(
        "web",
        "Always",
        "mkdir -p /www && echo hi > /www/index.html && exec httpd -f -p 8080 -h /www",
    );
    let job = api_pod(
        "job",
        "Never",
        "until [ -f /tmp/done ]; do sleep 0.2; done; exit 0",
    );
    pods.create(&PostParams::default(), &web).await?;
    pods.create(&PostParams::default(), &job).await?;
    let web_seen = wait_api_pod(&pods, "web", "web to run", &node, is_running).await?;
    let job_seen = wait_api_pod(&pods, "job", "job to run", &node, is_running).await?;
    let web_container = container_id(&web_seen);
    let job_container = container_id(&job_seen);
    let running = api::ContainerState::ContainerRunning as i32;
    assert_eq!(
        container_state(&containerd, &web_container).await,
        Some(running)
    );
    let started = wait_for(WAIT, "Pulled, Created and Started events", || async {
        event_reasons(&events, "web").await == ["Pulled", "Created", "Started"]
    })
    .await;
    if let Err(err) = started {
        anyhow::bail!("{err:#}: {:?}", event_reasons(&events, "web").await);
    }

    // The apiserver goes away: nothing is taken for an orphan, statuses wait.
    apiserver.pause().await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    containerd
        .cri
        .exec_sync(
            &job_container,
            vec!["touch".into(), "/tmp/done".into()],
            Duration::from_secs(5),
        )
        .await?;
    wait_for(WAIT, "the job's container to exit", || async {
        container_state(&containerd, &job_container).await
            == Some(api::ContainerState::ContainerExited as i32)
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        container_state(&containerd, &web_container).await,
        Some(running),
        "web must keep running while the apiserver is away\n{}",
        node.log_tail()
    );

    // Back: the status that changed meanwhile arrives.
    apiserver.resume().await?;
    let pods: Api<Pod> = Api::namespaced(apiserver.client().await?, "default");
    let job_done = wait_api_pod(&pods, "job", "job's final status", &node, |p| {
        p["status"]["phase"] == "Succeeded"
    })
    .await?;
    assert_eq!(
        job_done["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"],
        0
    );
    assert_eq!(
        container_state(&containerd, &web_container).await,
        Some(running)
    );

    // Deleted in the API: terminated within its grace period; its final status (terminal
    // phase, container terminated) reaches the API before the pod is removed there.
    let node_log = node.log_file();
    let deleted = deleted_from_api(&pods, "web", &node_log, async {
        pods.delete("web", &DeleteParams::default()).await?;
        Ok(())
    });
    let last = deleted.await?;
    assert_eq!(
        last["status"]["phase"],
        "Failed",
        "{last:#}\n{}",
        node.log_tail()
    );
    assert_eq!(
        last["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"], 137,
        "{last:#}"
    );
    assert_eq!(container_state(&containerd, &web_container).await, None);
    let events: Api<Event> = Api::namespaced(apiserver.client().await?, "default");
    wait_for(WAIT, "a Killing event", || async {
        event_reasons(&events, "web")
            .await
            .contains(&"Killing".to_string())
    })
    .await?;
    let web_uid = web_seen["metadata"]["uid"].as_str().unwrap().to_string();
    let sandboxes = containerd.cri.list_pod_sandbox(None).await?;
    assert!(
        sandboxes
            .iter()
            .all(|s| s.metadata.as_ref().is_none_or(|m| m.uid != web_uid)),
        "{sandboxes:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_pod_gets_a_mirror_pod_that_comes_back_when_deleted() -> anyhow::Result<()> {
    if !privileged_tests_enabled() {
        return Ok(());
    }
    let containerd = TestContainerd::start().await?;
    let apiserver = TestApiServer::start().await?;
    let client = apiserver.client().await?;
    let nodes: Api<Node> = Api::all(client.clone());
    let node_object: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE},
    }))?;
    let node_uid = nodes
        .create(&PostParams::default(), &node_object)
        .await?
        .metadata
        .uid
        .unwrap();
    let node = start_node(&containerd, &apiserver).await?;
    node.write_manifest(
        "web.yaml",
        "apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: localhost/kwk/busybox:1
    command: [/bin/sh, -c, 'mkdir -p /www && exec httpd -f -p 8080 -h /www']
",
    )?;
    let name = format!("web-{NODE}");
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let mirror = wait_api_pod(&pods, &name, "the mirror pod to run", &node, is_running).await?;
    let annotations = &mirror["metadata"]["annotations"];
    assert!(annotations["kubernetes.io/config.mirror"].is_string());
    assert_eq!(
        annotations["kubernetes.io/config.mirror"],
        annotations["kubernetes.io/config.hash"]
    );
    assert_eq!(annotations["kubernetes.io/config.source"], "file");
    let owner = &mirror["metadata"]["ownerReferences"][0];
    assert_eq!(
        (&owner["kind"], &owner["name"], &owner["uid"]),
        (&json!("Node"), &json!(NODE), &json!(node_uid))
    );
    let container = container_id(&mirror);
    let first_uid = mirror["metadata"]["uid"].as_str().unwrap().to_string();

    // Deleting the mirror pod does not stop the static pod; the mirror comes back.
    pods.delete(&name, &DeleteParams::default()).await?;
    let again = wait_api_pod(&pods, &name, "the mirror pod to be recreated", &node, |p| {
        p["metadata"]["uid"] != first_uid.as_str()
            && p["metadata"]["deletionTimestamp"].is_null()
            && is_running(p)
    })
    .await?;
    assert_eq!(container_id(&again), container);

    // The static pod goes: so does its mirror pod.
    node.remove_manifest("web.yaml")?;
    wait_for(WAIT, "the mirror pod to be deleted", || async {
        pods.get_opt(&name).await.is_ok_and(|p| p.is_none())
    })
    .await
    .map_err(|e| e.context(node.log_tail()))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_deleted_while_the_node_is_down_stops_before_it_leaves_the_api() -> anyhow::Result<()>
{
    if !privileged_tests_enabled() {
        return Ok(());
    }
    let containerd = TestContainerd::start().await?;
    let apiserver = TestApiServer::start().await?;
    let mut node = start_node(&containerd, &apiserver).await?;
    let pods: Api<Pod> = Api::namespaced(apiserver.client().await?, "default");
    let web = api_pod("web", "Always", "exec httpd -f -p 8080");
    pods.create(&PostParams::default(), &web).await?;
    let seen = wait_api_pod(&pods, "web", "web to run", &node, is_running).await?;
    let container = container_id(&seen);

    // Deleted while kwk-node is down: nobody may take it out of the API yet.
    node.kill9()?;
    pods.delete("web", &DeleteParams::default()).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(pods.get_opt("web").await?.is_some());
    let running = api::ContainerState::ContainerRunning as i32;
    assert_eq!(
        container_state(&containerd, &container).await,
        Some(running)
    );

    // Back: the pod is stopped, its final status sent, and only then is it deleted.
    let node_log = node.log_file();
    let last = deleted_from_api(&pods, "web", &node_log, async {
        node.restart().await?;
        Ok(())
    });
    let last = last.await?;
    assert_eq!(
        container_state(&containerd, &container).await,
        None,
        "deleted from the API while its container was still there\n{}",
        node.log_tail()
    );
    assert_eq!(last["status"]["phase"], "Failed", "{last:#}");
    assert!(
        last["status"]["containerStatuses"][0]["state"]["terminated"].is_object(),
        "{last:#}"
    );
    Ok(())
}
