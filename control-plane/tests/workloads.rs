//! The deployment and replicaset controllers end to end: the real apiserver (embedded store),
//! real kubectl (`create deployment`, `scale`, `set image`, `rollout status|history|undo`),
//! the controller manager in-process with the replicaset, deployment and garbagecollector
//! controllers, and a small "kubelet" task that marks every new pod Running and Ready (no
//! scheduler runs: pods stay unbound, so deleting one is immediate). A sampler checks all
//! along that no ReplicaSet ever has more pods than its replicas plus the surge.
//!
//! Local watches are fast, so these tests rarely meet the stale-cache race the runtime's
//! expectations prevent (they pass with expectations disabled); the bookkeeping itself is
//! unit-tested in `runtime/expectations.rs`.

mod support;

use support::eventually;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use kwk_controllers::common::{controller_of, is_ready};
use kwk_controllers::runtime::ControllerManager;
use support::TestApiServer;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const REVISION: &str = "deployment.kubernetes.io/revision";
/// `maxSurge: 25%` of 5 replicas, rounded up.
const SURGE: i32 = 2;

/// Every 200 ms, marks the pods of `app=web` that are not ready yet Running and Ready.
fn kubelet(client: &kube::Client) -> JoinHandle<()> {
    let client = client.clone();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    tokio::spawn(async move {
        let mut ip = 0u32;
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let Ok(list) = pods.list(&ListParams::default().labels("app=web")).await else {
                continue;
            };
            for pod in list.items {
                if is_ready(&pod) || pod.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                ip += 1;
                let pod_ip = format!("10.1.{}.{}", ip / 250, ip % 250 + 1);
                support::mark_pod_running_ready(&client, "default", &pod.name_any(), &pod_ip).await;
            }
        }
    })
}

fn replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

/// Every 50 ms: the active pods of each ReplicaSet (one pod list) against its replicas read
/// just before and just after (a scale-down lands before its deletions, a scale-up before its
/// creations). Records violations; returns how many samples it took.
fn surge_sampler(client: &kube::Client, violations: Arc<Mutex<Vec<String>>>) -> JoinHandle<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let (Ok(before), Ok(pod_list), Ok(after)) = (
                rss.list(&ListParams::default()).await,
                pods.list(&ListParams::default()).await,
                rss.list(&ListParams::default()).await,
            ) else {
                continue;
            };
            let mut allowed: BTreeMap<String, i32> = BTreeMap::new();
            for rs in before.items.iter().chain(after.items.iter()) {
                let entry = allowed.entry(rs.name_any()).or_insert(0);
                *entry = (*entry).max(replicas(rs));
            }
            let mut counts: BTreeMap<String, i32> = BTreeMap::new();
            for pod in pod_list
                .items
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
            {
                if let Some(owner) = controller_of(&pod.metadata) {
                    *counts.entry(owner.name.clone()).or_insert(0) += 1;
                }
            }
            for (rs, count) in counts {
                let limit = allowed.get(&rs).copied().unwrap_or(0) + SURGE;
                if count > limit {
                    violations
                        .lock()
                        .expect("violations")
                        .push(format!("{rs}: {count} pods > {limit}"));
                }
            }
        }
    })
}

async fn replica_sets(client: &kube::Client) -> Vec<ReplicaSet> {
    let api: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    api.list(&ListParams::default().labels("app=web"))
        .await
        .expect("list replica sets")
        .items
}

/// (revision, image, replicas) of every ReplicaSet of `app=web`, by revision.
async fn revisions(client: &kube::Client) -> Vec<(String, String, i32)> {
    let mut out: Vec<(String, String, i32)> = replica_sets(client)
        .await
        .iter()
        .map(|rs| {
            let revision = rs.annotations().get(REVISION).cloned().unwrap_or_default();
            let image = rs
                .spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .and_then(|t| t.spec.as_ref())
                .and_then(|s| s.containers.first())
                .and_then(|c| c.image.clone())
                .unwrap_or_default();
            (revision, image, replicas(rs))
        })
        .collect();
    out.sort();
    out
}

/// The images of the active, ready pods of `app=web`, sorted.
async fn ready_pod_images(client: &kube::Client) -> Vec<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let list = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .expect("list pods");
    let mut images: Vec<String> = list
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && is_ready(p))
        .filter_map(|p| p.spec.as_ref()?.containers.first()?.image.clone())
        .collect();
    images.sort();
    images
}

async fn active_pod_count(client: &kube::Client) -> usize {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.list(&ListParams::default().labels("app=web"))
        .await
        .expect("list pods")
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .count()
}

async fn rollout_status(api: &TestApiServer) {
    let out = api
        .kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=60s"])
        .await;
    assert!(
        out.contains("deployment \"web\" successfully rolled out"),
        "rollout status: {out}"
    );
}

async fn wait_for_images(client: &kube::Client, image: &str, count: usize) {
    let want = vec![image.to_string(); count];
    eventually(
        Duration::from_secs(30),
        &format!("{count} ready pods of {image} and nothing else"),
        || async {
            ready_pod_images(client).await == want && active_pod_count(client).await == count
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_creates_scales_rolls_out_and_rolls_back_through_kubectl() {
    let api = TestApiServer::start().await;
    let client = api.client().await;
    let flags: Vec<String> = ["replicaset", "deployment", "garbagecollector"]
        .iter()
        .map(|c| c.to_string())
        .collect();
    let manager = ControllerManager::with_default_controllers(client.clone())
        .select(&flags)
        .expect("known controllers");
    let token = CancellationToken::new();
    let running = tokio::spawn(manager.run(token.clone()));
    let kubelet = kubelet(&client);
    let violations = Arc::new(Mutex::new(Vec::new()));
    let sampler = surge_sampler(&client, violations.clone());

    let out = api
        .kubectl_ok(&[
            "create",
            "deployment",
            "web",
            "--image=nginx:1",
            "--replicas=3",
        ])
        .await;
    assert_eq!(out.trim(), "deployment.apps/web created");
    rollout_status(&api).await;
    wait_for_images(&client, "nginx:1", 3).await;
    assert_eq!(
        revisions(&client).await,
        vec![("1".to_string(), "nginx:1".to_string(), 3)]
    );
    // Stays at 3: no pod is created twice from a stale cache.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(active_pod_count(&client).await, 3, "no extra pods");

    // SuccessfulCreate events on the replica set, with the generated pod names.
    let events = api
        .kubectl_ok(&[
            "get",
            "events",
            "-o",
            "jsonpath={range .items[*]}{.reason} {.involvedObject.kind} {.message}{\"\\n\"}{end}",
        ])
        .await;
    let created: Vec<&str> = events
        .lines()
        .filter(|l| l.starts_with("SuccessfulCreate ReplicaSet Created pod: web-"))
        .collect();
    assert_eq!(created.len(), 3, "events: {events}");

    let out = api
        .kubectl_ok(&["scale", "deployment", "web", "--replicas=5"])
        .await;
    assert_eq!(out.trim(), "deployment.apps/web scaled");
    rollout_status(&api).await;
    wait_for_images(&client, "nginx:1", 5).await;

    let out = api
        .kubectl_ok(&["set", "image", "deployment/web", "nginx=nginx:2"])
        .await;
    assert_eq!(out.trim(), "deployment.apps/web image updated");
    rollout_status(&api).await;
    wait_for_images(&client, "nginx:2", 5).await;
    assert_eq!(
        revisions(&client).await,
        vec![
            ("1".to_string(), "nginx:1".to_string(), 0),
            ("2".to_string(), "nginx:2".to_string(), 5),
        ]
    );

    let history = api
        .kubectl_ok(&["rollout", "history", "deployment/web"])
        .await;
    let listed: Vec<&str> = history
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|first| first.chars().all(|c| c.is_ascii_digit()))
        .collect();
    assert_eq!(listed, vec!["1", "2"], "history: {history}");

    let out = api.kubectl_ok(&["rollout", "undo", "deployment/web"]).await;
    assert_eq!(out.trim(), "deployment.apps/web rolled back");
    rollout_status(&api).await;
    wait_for_images(&client, "nginx:1", 5).await;
    assert_eq!(
        revisions(&client).await,
        vec![
            ("2".to_string(), "nginx:2".to_string(), 0),
            ("3".to_string(), "nginx:1".to_string(), 5),
        ],
        "the first replica set is reused with the next revision"
    );
    let deployment_revision = api
        .kubectl_ok(&[
            "get",
            "deployment",
            "web",
            "-o",
            "jsonpath={.metadata.annotations.deployment\\.kubernetes\\.io/revision}",
        ])
        .await;
    assert_eq!(deployment_revision, "3");

    sampler.abort();
    let violations = violations.lock().expect("violations").clone();
    assert!(violations.is_empty(), "surge exceeded: {violations:?}");

    // Deleting the deployment takes its replica sets and pods along (garbage collector).
    api.kubectl_ok(&["delete", "deployment", "web"]).await;
    eventually(
        Duration::from_secs(30),
        "replica sets and pods garbage collected",
        || async { replica_sets(&client).await.is_empty() && active_pod_count(&client).await == 0 },
    )
    .await;

    kubelet.abort();
    token.cancel();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the manager stops when cancelled")
        .expect("join");
}

const REPLICA_SET: &str = r#"apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: burst
spec:
  replicas: 40
  selector:
    matchLabels: {app: web, tier: burst}
  template:
    metadata:
      labels: {app: web, tier: burst}
    spec:
      containers:
      - name: app
        image: nginx:1
"#;

/// The names of every pod of `selector` the apiserver reported, live or deleted.
fn pods_ever_seen(
    client: &kube::Client,
    selector: &str,
) -> (Arc<Mutex<Vec<String>>>, JoinHandle<()>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let config = watcher::Config::default().labels(selector);
    let record = seen.clone();
    let task = tokio::spawn(async move {
        let mut events = std::pin::pin!(watcher(pods, config));
        while let Some(event) = events.next().await {
            if let Ok(
                watcher::Event::Apply(pod)
                | watcher::Event::InitApply(pod)
                | watcher::Event::Delete(pod),
            ) = event
            {
                let mut seen = record.lock().expect("seen");
                if !seen.contains(&pod.name_any()) {
                    seen.push(pod.name_any());
                }
            }
        }
    });
    (seen, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_set_creates_each_missing_pod_exactly_once() {
    let api = TestApiServer::start().await;
    let client = api.client().await;
    let manager = ControllerManager::with_default_controllers(client.clone())
        .select(&["replicaset".to_string()])
        .expect("known controllers");
    let token = CancellationToken::new();
    let running = tokio::spawn(manager.run(token.clone()));
    let kubelet = kubelet(&client);
    let (seen, watch) = pods_ever_seen(&client, "tier=burst");

    let out = api
        .kubectl_stdin(&["apply", "-f", "-"], Some(REPLICA_SET))
        .await;
    assert!(out.status.success(), "apply: {}", support::stderr(&out));
    eventually(Duration::from_secs(30), "40 ready pods", || async {
        ready_pod_images(&client).await.len() == 40
    })
    .await;
    eventually(
        Duration::from_secs(10),
        "status counts 40 ready",
        || async {
            api.kubectl_ok(&[
                "get",
                "rs",
                "burst",
                "-o",
                "jsonpath={.status.readyReplicas}",
            ])
            .await
                == "40"
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let seen = seen.lock().expect("seen").clone();
    assert_eq!(
        seen.len(),
        40,
        "every pod created once, none created twice and deleted again: {seen:?}"
    );

    watch.abort();
    kubelet.abort();
    token.cancel();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the manager stops when cancelled")
        .expect("join");
}
