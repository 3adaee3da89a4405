//! The node's event recorder against the real apiserver (in-process): events recorded while
//! the apiserver is down arrive once it is back, repeats become one Event with a count; and
//! with a real containerd, a hostPath volume whose type check fails gives the pod a
//! `FailedMount` Warning (upstream's message) while its container waits in
//! `ContainerCreating`, until the path appears and the pod starts.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed expectation aborts the test"
)]

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::Api;
use kube::api::{ListParams, PostParams};
use kwk_agent::api_pods::record_events;
use kwk_agent::pod::events::{EventSink, PodEvent};
use kwk_tests::apiserver::TestApiServer;
use kwk_tests::node::TestNode;
use kwk_tests::{TestContainerd, privileged_tests_enabled, wait_for};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const BIN: &str = env!("CARGO_BIN_EXE_kwk-node");
const WAIT: Duration = Duration::from_secs(40);
const NODE: &str = "kwkt-node";

/// A pod that is only referred to by events (it need not exist in the API).
fn pod(name: &str, uid: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": uid},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]},
    }))
    .unwrap()
}

/// The kubelet's events about the pod with `uid`: (reason, message, count), by name.
async fn events_of(events: &Api<Event>, uid: &str) -> Vec<(String, String, i32)> {
    let mut list: Vec<Event> = events
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| {
            e.involved_object.uid.as_deref() == Some(uid)
                && e.source
                    .as_ref()
                    .is_some_and(|s| s.component.as_deref() == Some("kubelet"))
        })
        .collect();
    list.sort_by_key(|e| e.metadata.name.clone());
    list.into_iter()
        .map(|e| {
            (
                e.reason.unwrap_or_default(),
                e.message.unwrap_or_default(),
                e.count.unwrap_or(0),
            )
        })
        .collect()
}

/// Starts a recorder for node `n1` on `client`; its sink and the token that stops it.
fn recorder(client: kube::Client) -> (EventSink, CancellationToken) {
    let (sink, queue) = EventSink::channel();
    let cancel = CancellationToken::new();
    tokio::spawn(record_events(client, "n1".into(), queue, cancel.clone()));
    (sink, cancel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeats_become_one_event_with_a_count() -> anyhow::Result<()> {
    let apiserver = TestApiServer::start().await?;
    let client = apiserver.client().await?;
    let (sink, cancel) = recorder(client.clone());
    let events: Api<Event> = Api::namespaced(client, "default");
    let web = pod("web", "uid-repeats");
    for _ in 0..5 {
        sink.emit(&web, PodEvent::back_off(&web, "main"));
    }
    sink.emit(&web, PodEvent::started("main"));
    let want = vec![
        (
            "BackOff".to_string(),
            "Back-off restarting failed container main in pod web_default(uid-repeats)".to_string(),
            5,
        ),
        (
            "Started".to_string(),
            "Started container main".to_string(),
            1,
        ),
    ];
    let arrived = wait_for(WAIT, "one BackOff event with count 5", || async {
        events_of(&events, "uid-repeats").await == want
    })
    .await;
    let seen = events_of(&events, "uid-repeats").await;
    cancel.cancel();
    arrived.map_err(|e| e.context(format!("{seen:?}")))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_recorded_while_the_apiserver_is_down_arrive_when_it_is_back() -> anyhow::Result<()>
{
    let mut apiserver = TestApiServer::start().await?;
    let client = apiserver.client().await?;
    let (sink, cancel) = recorder(client);
    let web = pod("web", "uid-outage");

    // Recorded while the apiserver is up: the first Event exists.
    sink.emit(&web, PodEvent::pulling("main", "busybox"));
    let events: Api<Event> = Api::namespaced(apiserver.client().await?, "default");
    wait_for(WAIT, "the Pulling event", || async {
        events_of(&events, "uid-outage").await.len() == 1
    })
    .await?;

    apiserver.pause().await?;
    sink.emit(&web, PodEvent::created("main"));
    sink.emit(&web, PodEvent::started("main"));
    sink.emit(&web, PodEvent::pulling("main", "busybox"));
    // Several retries fail meanwhile (the back-off starts at 0.5 s).
    tokio::time::sleep(Duration::from_secs(4)).await;
    apiserver.resume().await?;

    let events: Api<Event> = Api::namespaced(apiserver.client().await?, "default");
    let want = |reason: &str, message: &str, count: i32| (reason.into(), message.into(), count);
    let mut expected: Vec<(String, String, i32)> = vec![
        want("Pulling", "Pulling image \"busybox\"", 2),
        want("Created", "Created container: main", 1),
        want("Started", "Started container main", 1),
    ];
    expected.sort();
    let arrived = wait_for(WAIT, "the events of the outage", || async {
        let mut got = events_of(&events, "uid-outage").await;
        got.sort();
        got == expected
    })
    .await;
    let seen = events_of(&events, "uid-outage").await;
    cancel.cancel();
    arrived.map_err(|e| e.context(format!("{seen:?}")))?;
    Ok(())
}

async fn start_node(
    containerd: &TestContainerd,
    apiserver: &TestApiServer,
) -> anyhow::Result<TestNode> {
    TestNode::start_joined(containerd, Path::new(BIN), &apiserver.kubeconfig()).await
}

fn pod_status(pod: Option<Pod>) -> Value {
    pod.map(|p| serde_json::to_value(p).unwrap()["status"].clone())
        .unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_host_path_check_is_a_failed_mount_until_the_path_appears() -> anyhow::Result<()> {
    if !privileged_tests_enabled() {
        return Ok(());
    }
    let containerd = TestContainerd::start().await?;
    let apiserver = TestApiServer::start().await?;
    let node = start_node(&containerd, &apiserver).await?;
    let client = apiserver.client().await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let events: Api<Event> = Api::namespaced(client, "default");
    let host = tempfile::tempdir()?;
    let data = host.path().join("data");

    let web: Pod = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "mounts", "namespace": "default"},
        "spec": {
            "nodeName": NODE,
            "terminationGracePeriodSeconds": 1,
            "volumes": [{"name": "data", "hostPath": {"path": data, "type": "Directory"}}],
            "containers": [{
                "name": "main",
                "image": "localhost/kwk/busybox:1",
                "command": ["/bin/sh", "-c", "exec sleep 3600"],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            }],
        },
    }))?;
    let uid = pods
        .create(&PostParams::default(), &web)
        .await?
        .metadata
        .uid
        .unwrap();

    let message = format!(
        "MountVolume.SetUp failed for volume \"data\" : hostPath type check failed: {} is not a directory",
        data.display()
    );
    // The node retries: the Warning repeats as one Event whose count grows.
    let failed_mount = wait_for(WAIT, "a FailedMount event seen twice", || async {
        let got = events_of(&events, &uid).await;
        let mounts: Vec<_> = got.iter().filter(|e| e.0 == "FailedMount").collect();
        mounts.len() == 1 && mounts[0].1 == message && mounts[0].2 >= 2
    })
    .await;
    if let Err(err) = failed_mount {
        anyhow::bail!(
            "{err:#}: {:?}\n{}",
            events_of(&events, &uid).await,
            node.log_tail()
        );
    }
    let list = events.list(&ListParams::default()).await?;
    let event = list
        .items
        .iter()
        .find(|e| e.reason.as_deref() == Some("FailedMount"))
        .unwrap();
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert_eq!(event.involved_object.field_path, None);
    assert_eq!(
        event.source.as_ref().unwrap().host.as_deref(),
        Some(NODE),
        "{event:?}"
    );

    let status = pod_status(pods.get_opt("mounts").await?);
    assert_eq!(status["phase"], "Pending", "{status}");
    assert_eq!(
        status["containerStatuses"][0]["state"]["waiting"]["reason"], "ContainerCreating",
        "{status}"
    );

    // The directory appears: the next try mounts it and the pod runs.
    std::fs::create_dir(&data)?;
    let running = wait_for(WAIT, "the pod to run", || async {
        let status = pod_status(pods.get_opt("mounts").await.ok().flatten());
        status["phase"] == "Running" && status["containerStatuses"][0]["ready"] == true
    })
    .await;
    if let Err(err) = running {
        anyhow::bail!(
            "{err:#}: {}\n{}",
            pod_status(pods.get_opt("mounts").await?),
            node.log_tail()
        );
    }
    Ok(())
}
