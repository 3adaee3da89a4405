//! Shared watches end to end: the default controller manager against the real apiserver
//! (embedded store), on a kube client whose requests are counted. Its controllers share one
//! list+watch per (kind, namespace scope, selectors): exactly one `watch=true` request each
//! (pods included, which about half the controllers watch), while a Deployment still
//! reconciles to Running pods. For comparison, the same controllers built outside a manager
//! (each with its own watches, the behaviour before sharing) are counted too; run with
//! `--nocapture` to see both numbers.

mod support;

use support::eventually;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use kwk_controllers::common::is_ready;
use kwk_controllers::runtime::{ControllerManager, ControllerOptions, DEFAULT_CONTROLLERS};
use support::TestApiServer;
use tokio_util::sync::CancellationToken;

/// The watch requests a client sent: "path?labelSelector=..&fieldSelector=.." → how many.
type WatchRequests = Arc<Mutex<BTreeMap<String, usize>>>;

/// The watch a request opens, if it is one: its path and selectors.
fn watch_of(uri: &http::Uri) -> Option<String> {
    let query = uri.query()?;
    let params: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    if !params.iter().any(|(k, v)| k == "watch" && v == "true") {
        return None;
    }
    let selectors: Vec<String> = params
        .iter()
        .filter(|(k, _)| k == "labelSelector" || k == "fieldSelector")
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    Some(format!("{}?{}", uri.path(), selectors.join("&")))
}

/// A client for `api` that records every watch request it sends into `watches`.
async fn counting_client(api: &TestApiServer, watches: &WatchRequests) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(api.kubeconfig()).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .expect("config");
    let watches = watches.clone();
    let count =
        tower::util::MapRequestLayer::new(move |request: http::Request<kube::client::Body>| {
            if let Some(watch) = watch_of(request.uri()) {
                *watches.lock().expect("lock").entry(watch).or_default() += 1;
            }
            request
        });
    kube::client::ClientBuilder::try_from(config)
        .expect("client builder")
        .with_layer(&count)
        .build()
}

/// Waits until `watches` has stopped growing (every controller has listed and watches).
async fn settled(watches: &WatchRequests) -> BTreeMap<String, usize> {
    let snapshot = || watches.lock().expect("lock").clone();
    let mut last = snapshot();
    let mut quiet = 0;
    for _ in 0..300 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = snapshot();
        if now == last && !now.is_empty() {
            quiet += 1;
            if quiet >= 20 {
                return now;
            }
        } else {
            quiet = 0;
            last = now;
        }
    }
    panic!("watch requests still changing after 30 s: {last:?}");
}

/// Marks the pods of `app=web` that are not ready yet Running and Ready (no kubelet runs).
async fn run_pods(client: &kube::Client) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
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
            let pod_ip = format!("10.9.0.{}", ip % 250 + 1);
            support::mark_pod_running_ready(client, "default", &pod.name_any(), &pod_ip).await;
        }
    }
}

async fn running_web_pods(client: &kube::Client) -> usize {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let Ok(list) = pods.list(&ListParams::default().labels("app=web")).await else {
        return 0;
    };
    list.items
        .iter()
        .filter(|pod| {
            pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                && pod.metadata.deletion_timestamp.is_none()
        })
        .count()
}

fn total(watches: &BTreeMap<String, usize>) -> usize {
    watches.values().sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_controllers_share_one_watch_per_kind_and_selectors() {
    let api = TestApiServer::start().await;
    let plain = api.client().await;

    // Before sharing: every default controller built on its own (a private registry each).
    let unshared: WatchRequests = WatchRequests::default();
    let client = counting_client(&api, &unshared).await;
    let token = CancellationToken::new();
    let options = ControllerOptions::default();
    let runs: Vec<_> = DEFAULT_CONTROLLERS
        .iter()
        .map(|(_, factory)| tokio::spawn(factory(&client, &options).run(token.clone())))
        .collect();
    let before = settled(&unshared).await;
    token.cancel();
    for run in runs {
        run.await.expect("controller stopped");
    }

    // With sharing: the same controllers in one manager.
    let shared: WatchRequests = WatchRequests::default();
    let client = counting_client(&api, &shared).await;
    let manager = ControllerManager::with_default_controllers(client);
    let informers = manager.informers().clone();
    let token = CancellationToken::new();
    let running = tokio::spawn(manager.run(token.clone()));
    let after = settled(&shared).await;

    println!(
        "watch requests of the default controllers: {} unshared ({} distinct), {} shared",
        total(&before),
        before.len(),
        total(&after)
    );
    for (watch, count) in &before {
        println!("  unshared {count} x {watch}");
    }
    for watch in informers.describe() {
        println!("  shared 1 x {watch}");
    }

    let repeated: Vec<_> = after.iter().filter(|(_, count)| **count != 1).collect();
    assert!(
        repeated.is_empty(),
        "one watch request per kind and selectors: {repeated:?}"
    );
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>(),
        "the same watches, each opened once"
    );
    assert_eq!(after.len(), informers.watch_count());
    assert_eq!(after.get("/api/v1/pods?"), Some(&1), "{after:?}");
    assert!(
        before.get("/api/v1/pods?").copied().unwrap_or(0) > 2,
        "several controllers watch pods: {before:?}"
    );

    // The shared stores still drive the controllers: a Deployment reconciles to Running pods.
    let kubelet = tokio::spawn({
        let plain = plain.clone();
        async move { run_pods(&plain).await }
    });
    api.kubectl_ok(&[
        "create",
        "deployment",
        "web",
        "--image=nginx:1",
        "--replicas=2",
    ])
    .await;
    eventually(Duration::from_secs(60), "2 Running pods of web", || {
        let plain = plain.clone();
        async move { running_web_pods(&plain).await == 2 }
    })
    .await;
    let status = api
        .kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=60s"])
        .await;
    assert!(status.contains("successfully rolled out"), "{status}");
    assert_eq!(
        shared.lock().expect("lock").get("/api/v1/pods?").copied(),
        Some(1),
        "still one pod watch"
    );

    kubelet.abort();
    token.cancel();
    running.await.expect("manager stopped");
}
