//! The scheduler against the real apiserver (embedded store), simulated nodes and real
//! kubectl: placement by node selector, toleration, node affinity and zone spreading; the
//! `FailedScheduling` event and `PodScheduled` condition of a pod that fits nowhere; pods of
//! another scheduler left alone; leader election on `kube-system/kube-scheduler`; preemption.

mod support;

use support::eventually;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use kwk_control_plane::scheduler::{self, SchedulerOptions};
use kwk_controllers::runtime::LeaseConfig;
use serde_json::json;
use support::TestApiServer;
use tokio_util::sync::CancellationToken;

/// A scheduler without leader election, stopped when the returned token is cancelled.
fn start_scheduler(client: kube::Client) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let token = CancellationToken::new();
    let options = SchedulerOptions {
        leader_election: None,
        seed: 7,
        ..SchedulerOptions::default()
    };
    let running = tokio::spawn({
        let token = token.clone();
        async move {
            scheduler::run(client, options, token)
                .await
                .expect("scheduler");
        }
    });
    (token, running)
}

async fn create_pod(api: &TestApiServer, name: &str, spec: serde_json::Value) {
    let mut spec = spec;
    let containers = json!([{"name": "c", "image": "registry.k8s.io/pause:3.10",
        "resources": spec.get("resources").cloned().unwrap_or(json!({}))}]);
    if let Some(obj) = spec.as_object_mut() {
        obj.remove("resources");
        obj.insert("containers".into(), containers);
    }
    let labels = spec
        .as_object_mut()
        .and_then(|o| o.remove("labels"))
        .unwrap_or(json!({}));
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": labels}, "spec": spec});
    let out = api
        .kubectl_stdin(&["create", "-f", "-"], Some(&pod.to_string()))
        .await;
    assert!(
        out.status.success(),
        "create pod {name}: {}",
        support::stderr(&out)
    );
}

async fn node_of(pods: &Api<Pod>, name: &str) -> Option<String> {
    pods.get_opt(name)
        .await
        .ok()
        .flatten()
        .and_then(|p| p.spec.and_then(|s| s.node_name))
}

async fn wait_bound(pods: &Api<Pod>, name: &str) -> String {
    eventually(
        Duration::from_secs(20),
        &format!("pod {name} bound"),
        || async { node_of(pods, name).await.is_some() },
    )
    .await;
    node_of(pods, name).await.unwrap_or_default()
}

async fn taint(client: &kube::Client, node: &str) {
    let nodes: Api<Node> = Api::all(client.clone());
    let patch = json!({"spec": {"taints": [{"key": "dedicated", "value": "special", "effect": "NoSchedule"}]}});
    nodes
        .patch(node, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .expect("taint node");
}

const TOLERATION: &str =
    r#"[{"key": "dedicated", "operator": "Equal", "value": "special", "effect": "NoSchedule"}]"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_land_where_upstream_puts_them() {
    let api = TestApiServer::start().await;
    let client = api.client().await;
    let _nodes = support::simulate_nodes(
        &client,
        &[("n1", "zone-a"), ("n2", "zone-a"), ("n3", "zone-b")],
    )
    .await;
    taint(&client, "n3").await;
    let (token, running) = start_scheduler(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let toleration: serde_json::Value = serde_json::from_str(TOLERATION).expect("toleration");

    create_pod(
        &api,
        "by-hostname",
        json!({"nodeSelector": {"kubernetes.io/hostname": "n2"}}),
    )
    .await;
    assert_eq!(wait_bound(&pods, "by-hostname").await, "n2");

    create_pod(
        &api,
        "tolerating",
        json!({"nodeSelector": {"topology.kubernetes.io/zone": "zone-b"}, "tolerations": toleration}),
    )
    .await;
    assert_eq!(wait_bound(&pods, "tolerating").await, "n3");

    create_pod(
        &api,
        "affinity",
        json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "kubernetes.io/hostname",
                "operator": "NotIn", "values": ["n2"]}]}]}}}}),
    )
    .await;
    // n2 is excluded, n3 is tainted.
    assert_eq!(wait_bound(&pods, "affinity").await, "n1");

    // Zone spreading with maxSkew 1: zone-b already has "tolerating", zone-a has two pods
    // but they do not carry the label, so the spread pods alternate between the zones.
    let mut zones: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..4 {
        let name = format!("spread-{i}");
        create_pod(
            &api,
            &name,
            json!({"labels": {"app": "spread"}, "tolerations": toleration,
                "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                    "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "spread"}}}]}),
        )
        .await;
        let node = wait_bound(&pods, &name).await;
        let zone = if node == "n3" { "zone-b" } else { "zone-a" };
        *zones.entry(zone.to_string()).or_default() += 1;
        let (a, b) = (
            zones.get("zone-a").copied().unwrap_or(0),
            zones.get("zone-b").copied().unwrap_or(0),
        );
        assert!(a.abs_diff(b) <= 1, "skew above 1 after {name}: {zones:?}");
    }
    assert_eq!(zones.get("zone-a"), Some(&2), "{zones:?}");
    assert_eq!(zones.get("zone-b"), Some(&2), "{zones:?}");

    // Without the toleration zone-b has no usable node: the pod stays pending, saying why.
    create_pod(
        &api,
        "untolerated",
        json!({"nodeSelector": {"topology.kubernetes.io/zone": "zone-b"}}),
    )
    .await;
    let expected = "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: special}, \
        2 node(s) didn't match Pod's node affinity/selector. preemption: 0/3 nodes are available: \
        3 Preemption is not helpful for scheduling.";
    let condition = "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].message}";
    eventually(
        Duration::from_secs(10),
        "untolerated is unschedulable",
        || async {
            api.kubectl_ok(&["get", "pod", "untolerated", "-o", condition])
                .await
                == expected
        },
    )
    .await;
    assert_eq!(node_of(&pods, "untolerated").await, None);

    token.cancel();
    running.await.expect("scheduler task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_that_fits_nowhere_gets_failed_scheduling() {
    let api = TestApiServer::start().await;
    let client = api.client().await;
    let _nodes = support::simulate_nodes(
        &client,
        &[("n1", "zone-a"), ("n2", "zone-a"), ("n3", "zone-b")],
    )
    .await;
    let (token, running) = start_scheduler(client.clone());
    create_pod(
        &api,
        "huge",
        json!({"resources": {"requests": {"cpu": "100"}}}),
    )
    .await;
    let expected = "0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 nodes are \
        available: 3 No preemption victims found for incoming pod.";
    eventually(
        Duration::from_secs(10),
        "a FailedScheduling event",
        || async {
            let out = api
                .kubectl(&[
                    "get",
                    "events",
                    "--field-selector",
                    "reason=FailedScheduling,involvedObject.name=huge",
                    "-o",
                    "jsonpath={.items[0].message}",
                ])
                .await;
            support::stdout(&out) == expected
        },
    )
    .await;
    let event_type = api
        .kubectl_ok(&[
            "get",
            "events",
            "--field-selector",
            "reason=FailedScheduling",
            "-o",
            "jsonpath={.items[0].type}",
        ])
        .await;
    assert_eq!(event_type, "Warning");
    let condition = api
        .kubectl_ok(&[
            "get",
            "pod",
            "huge",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")]['status','reason','message']}",
        ])
        .await;
    assert_eq!(condition, format!("False Unschedulable {expected}"));
    let phase = api
        .kubectl_ok(&[
            "get",
            "pod",
            "huge",
            "-o",
            "jsonpath={.status.phase}/{.spec.nodeName}",
        ])
        .await;
    assert_eq!(phase, "Pending/");
    token.cancel();
    running.await.expect("scheduler task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_of_another_scheduler_are_left_alone() {
    let api = TestApiServer::start().await;
    let client = api.client().await;
    let _nodes = support::simulate_nodes(&client, &[("n1", "zone-a")]).await;
    let (token, running) = start_scheduler(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    create_pod(&api, "other", json!({"schedulerName": "my-scheduler"})).await;
    create_pod(&api, "mine", json!({})).await;
    assert_eq!(wait_bound(&pods, "mine").await, "n1");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(node_of(&pods, "other").await, None);
    let conditions = api
        .kubectl_ok(&["get", "pod", "other", "-o", "jsonpath={.status.conditions}"])
        .await;
    assert_eq!(conditions, "", "no PodScheduled condition from us");
    token.cancel();
    running.await.expect("scheduler task");
}

fn elected_options(identity: &str) -> SchedulerOptions {
    let lease = LeaseConfig {
        identity: identity.to_string(),
        lease_duration: Duration::from_secs(3),
        renew_deadline: Duration::from_secs(2),
        retry_period: Duration::from_millis(300),
        ..LeaseConfig::new("kube-system", "kube-scheduler")
    };
    SchedulerOptions {
        instance: identity.to_string(),
        leader_election: Some(lease),
        ..SchedulerOptions::default()
    }
}

/// The `reportingInstance` of the `Scheduled` event about `pod` (who bound it).
async fn scheduled_by(api: &TestApiServer, pod: &str) -> String {
    let out = api
        .kubectl(&[
            "get",
            "events.events.k8s.io",
            "--field-selector",
            &format!("reason=Scheduled,regarding.name={pod}"),
            "-o",
            "jsonpath={.items[*].reportingInstance}",
        ])
        .await;
    support::stdout(&out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_schedules_and_a_successor_takes_over() {
    let api = TestApiServer::start().await;
    let client = api.client().await;
    let _nodes = support::simulate_nodes(&client, &[("n1", "zone-a")]).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");

    let first = CancellationToken::new();
    let first_run = tokio::spawn(scheduler::run(
        api.client().await,
        elected_options("first"),
        first.clone(),
    ));
    eventually(Duration::from_secs(10), "first holds the lease", || async {
        api.kubectl(&[
            "get",
            "lease",
            "-n",
            "kube-system",
            "kube-scheduler",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ])
        .await
        .stdout
            == b"first"
    })
    .await;
    let second = CancellationToken::new();
    let second_run = tokio::spawn(scheduler::run(
        api.client().await,
        elected_options("second"),
        second.clone(),
    ));

    create_pod(&api, "p1", json!({})).await;
    wait_bound(&pods, "p1").await;
    eventually(
        Duration::from_secs(5),
        "the Scheduled event of p1",
        || async { !scheduled_by(&api, "p1").await.is_empty() },
    )
    .await;
    assert_eq!(scheduled_by(&api, "p1").await, "first");

    first.cancel();
    first_run.await.expect("task").expect("first stops cleanly");
    eventually(
        Duration::from_secs(10),
        "second holds the lease",
        || async {
            api.kubectl(&[
                "get",
                "lease",
                "-n",
                "kube-system",
                "kube-scheduler",
                "-o",
                "jsonpath={.spec.holderIdentity}",
            ])
            .await
            .stdout
                == b"second"
        },
    )
    .await;
    create_pod(&api, "p2", json!({})).await;
    wait_bound(&pods, "p2").await;
    eventually(
        Duration::from_secs(5),
        "the Scheduled event of p2",
        || async { scheduled_by(&api, "p2").await == "second" },
    )
    .await;
    second.cancel();
    second_run
        .await
        .expect("task")
        .expect("second stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_higher_priority_pod_preempts_a_lower_one() {
    let api = TestApiServer::start().await;
    let client = api.client().await;
    let _nodes = support::simulate_nodes(&client, &[("n1", "zone-a")]).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let (token, running) = start_scheduler(client.clone());

    create_pod(
        &api,
        "low",
        json!({"resources": {"requests": {"cpu": "3"}}}),
    )
    .await;
    assert_eq!(wait_bound(&pods, "low").await, "n1");
    let low_uid = pods.get("low").await.expect("low").uid();

    // Nobody runs the kubelet: finish graceful deletions the way it would.
    let kubelet = tokio::spawn({
        let pods = pods.clone();
        async move {
            loop {
                for pod in pods
                    .list(&Default::default())
                    .await
                    .map(|l| l.items)
                    .unwrap_or_default()
                {
                    if pod.metadata.deletion_timestamp.is_some() {
                        let _ = pods
                            .delete(&pod.name_any(), &DeleteParams::default().grace_period(0))
                            .await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });

    api.kubectl_ok(&["create", "priorityclass", "high", "--value=1000"])
        .await;
    create_pod(
        &api,
        "high",
        json!({"priorityClassName": "high", "resources": {"requests": {"cpu": "3"}}}),
    )
    .await;
    assert_eq!(wait_bound(&pods, "high").await, "n1");
    let low = pods.get_opt("low").await.expect("get low");
    assert!(low.is_none_or(|p| p.uid() != low_uid), "the victim is gone");
    let preempted = api
        .kubectl_ok(&[
            "get",
            "events",
            "--field-selector",
            "reason=Preempted,involvedObject.name=low",
            "-o",
            "jsonpath={.items[0].message}",
        ])
        .await;
    let high_uid = pods
        .get("high")
        .await
        .expect("high")
        .uid()
        .unwrap_or_default();
    assert_eq!(preempted, format!("Preempted by pod {high_uid} on node n1"));
    let failed = api
        .kubectl_ok(&[
            "get",
            "events",
            "--field-selector",
            "reason=FailedScheduling,involvedObject.name=high",
            "-o",
            "jsonpath={.items[0].message}",
        ])
        .await;
    assert_eq!(failed, "0/1 nodes are available: 1 Insufficient cpu.");
    kubelet.abort();
    token.cancel();
    running.await.expect("scheduler task");
}

/// End-to-end binding throughput (create → bound) on 10 simulated nodes; prints pods/s.
/// `cargo test -p kwk-control-plane --test scheduler -- --ignored --nocapture binding_throughput`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn binding_throughput() {
    use futures::StreamExt;
    const PODS: usize = 300;
    let api = TestApiServer::start().await;
    let client = api.client().await;
    let names: Vec<(String, String)> = (0..10)
        .map(|i| (format!("n{i}"), format!("zone-{}", i % 3)))
        .collect();
    let nodes: Vec<(&str, &str)> = names
        .iter()
        .map(|(n, z)| (n.as_str(), z.as_str()))
        .collect();
    let _nodes = support::simulate_nodes(&client, &nodes).await;
    let (token, running) = start_scheduler(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let started = tokio::time::Instant::now();
    futures::stream::iter(0..PODS)
        .for_each_concurrent(16, |i| {
            let pods = pods.clone();
            async move {
                let pod: Pod = serde_json::from_value(json!({
                    "metadata": {"name": format!("p{i}"), "labels": {"app": "bench"}},
                    "spec": {"containers": [{"name": "c", "image": "pause",
                        "resources": {"requests": {"cpu": "10m", "memory": "10Mi"}}}]},
                }))
                .expect("pod");
                pods.create(&Default::default(), &pod)
                    .await
                    .expect("create");
            }
        })
        .await;
    eventually(Duration::from_secs(120), "every pod bound", || async {
        let list = pods.list(&Default::default()).await.expect("list");
        list.items
            .iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
            .count()
            == PODS
    })
    .await;
    let elapsed = started.elapsed();
    println!(
        "{PODS} pods bound in {elapsed:?}: {:.0} pods/s",
        PODS as f64 / elapsed.as_secs_f64()
    );
    token.cancel();
    running.await.expect("scheduler task");
}
