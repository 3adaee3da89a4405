//! The controller manager against the real apiserver (embedded store) and real kubectl: the
//! serviceaccount controller gives new namespaces their `default` ServiceAccount; leader
//! election on `kube-system/kube-controller-manager` lets exactly one of two managers act,
//! and hands over when the leader stops. Plus the simulated-node helpers other tests use.

mod support;

use support::eventually;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use kwk_controllers::runtime::{
    Controller, ControllerManager, LeaseConfig, ObjectKey, Plan, Watches,
};
use support::TestApiServer;
use tokio_util::sync::CancellationToken;

async fn has_default_sa(api: &TestApiServer, namespace: &str) -> bool {
    api.kubectl(&[
        "get",
        "serviceaccount",
        "default",
        "-n",
        namespace,
        "-o",
        "name",
    ])
    .await
    .status
    .success()
}

async fn lease_holder(api: &TestApiServer) -> String {
    let out = api
        .kubectl(&[
            "get",
            "lease",
            "-n",
            "kube-system",
            "kube-controller-manager",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ])
        .await;
    support::stdout(&out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_namespaces_get_a_default_service_account() {
    let api = TestApiServer::start().await;
    api.kubectl_ok(&["create", "namespace", "before"]).await;
    assert!(
        !has_default_sa(&api, "before").await,
        "the apiserver alone does not create it"
    );
    let token = CancellationToken::new();
    let manager = ControllerManager::with_default_controllers(api.client().await)
        .select(&["*".to_string()])
        .expect("controllers");
    let running = tokio::spawn(manager.run(token.clone()));

    eventually(
        Duration::from_secs(15),
        "default SA in a namespace that existed",
        || has_default_sa(&api, "before"),
    )
    .await;
    api.kubectl_ok(&["create", "namespace", "x"]).await;
    eventually(
        Duration::from_secs(15),
        "default SA in new namespace x",
        || has_default_sa(&api, "x"),
    )
    .await;
    // Level-triggered: a deleted default comes back.
    api.kubectl_ok(&["delete", "serviceaccount", "default", "-n", "x"])
        .await;
    eventually(Duration::from_secs(15), "default SA recreated in x", || {
        has_default_sa(&api, "x")
    })
    .await;

    token.cancel();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the manager stops when cancelled")
        .expect("join");
}

/// Who reconciled what: a controller that records `(identity, namespace)` and writes nothing.
type Witnessed = Arc<Mutex<Vec<(String, String)>>>;

fn manager_with_witness(
    client: kube::Client,
    identity: &str,
    seen: &Witnessed,
) -> ControllerManager {
    let (identity, seen) = (identity.to_string(), seen.clone());
    ControllerManager::with_default_controllers(client).register("witness", move |client| {
        let mut watches = Watches::new(client.clone());
        watches.watch(
            Api::<Namespace>::all(client.clone()),
            watcher::Config::default(),
            |ns| vec![ObjectKey::cluster(ns.name_any())],
        );
        let (identity, seen) = (identity.clone(), seen.clone());
        Controller::new("witness", watches, move |key| {
            if let Ok(mut seen) = seen.lock() {
                seen.push((identity.clone(), key.name.clone()));
            }
            Plan::default()
        })
    })
}

fn short_lease(identity: &str) -> LeaseConfig {
    LeaseConfig {
        identity: identity.into(),
        lease_duration: Duration::from_secs(2),
        renew_deadline: Duration::from_millis(1500),
        retry_period: Duration::from_millis(500),
        ..LeaseConfig::new("kube-system", "kube-controller-manager")
    }
}

fn seen_by(seen: &Witnessed, identity: &str) -> Vec<String> {
    seen.lock()
        .map(|s| {
            s.iter()
                .filter(|(who, _)| who == identity)
                .map(|(_, ns)| ns.clone())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_lease_holder_acts_and_a_successor_takes_over() {
    let api = TestApiServer::start().await;
    let seen: Witnessed = Arc::default();
    let client = api.client().await;

    let token_a = CancellationToken::new();
    let a = tokio::spawn(
        manager_with_witness(client.clone(), "cm-a", &seen)
            .run_with_leader_election(short_lease("cm-a"), token_a.clone()),
    );
    eventually(Duration::from_secs(10), "cm-a holds the lease", || async {
        lease_holder(&api).await == "cm-a"
    })
    .await;
    let token_b = CancellationToken::new();
    let b = tokio::spawn(
        manager_with_witness(client.clone(), "cm-b", &seen)
            .run_with_leader_election(short_lease("cm-b"), token_b.clone()),
    );

    api.kubectl_ok(&["create", "namespace", "y"]).await;
    eventually(Duration::from_secs(15), "the leader acts on y", || {
        has_default_sa(&api, "y")
    })
    .await;
    eventually(Duration::from_secs(10), "cm-a reconciles y", || async {
        seen_by(&seen, "cm-a").contains(&"y".to_string())
    })
    .await;
    // Several lease durations with both running: the holder keeps it, the other stays idle.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(lease_holder(&api).await, "cm-a");
    }
    assert_eq!(
        seen_by(&seen, "cm-b"),
        Vec::<String>::new(),
        "cm-b must not act"
    );

    token_a.cancel();
    tokio::time::timeout(Duration::from_secs(10), a)
        .await
        .expect("cm-a stops when cancelled")
        .expect("join")
        .expect("cm-a ends cleanly, not with a lost lease");
    eventually(
        Duration::from_secs(6),
        "cm-b takes the lease over",
        || async { lease_holder(&api).await == "cm-b" },
    )
    .await;
    api.kubectl_ok(&["create", "namespace", "z"]).await;
    eventually(Duration::from_secs(15), "the new leader acts on z", || {
        has_default_sa(&api, "z")
    })
    .await;
    assert!(
        !seen_by(&seen, "cm-a").contains(&"z".to_string()),
        "the old leader stopped"
    );
    eventually(Duration::from_secs(10), "cm-b reconciles z", || async {
        seen_by(&seen, "cm-b").contains(&"z".to_string())
    })
    .await;

    token_b.cancel();
    tokio::time::timeout(Duration::from_secs(10), b)
        .await
        .expect("cm-b stops when cancelled")
        .expect("join")
        .expect("cm-b ends cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_nodes_are_ready_and_renew_their_leases_and_pods_can_be_marked_ready() {
    let api = TestApiServer::start().await;
    let client = api.client().await;
    let nodes = support::simulate_nodes(&client, &[("n1", "zone-a"), ("n2", "zone-b")]).await;
    assert_eq!(nodes.names, ["n1", "n2"]);
    let ready = api
        .kubectl_ok(&[
            "get",
            "node",
            "n2",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status} {.status.allocatable.cpu} {.status.allocatable.memory} {.status.capacity.pods} {.metadata.labels.topology\\.kubernetes\\.io/zone}",
        ])
        .await;
    assert_eq!(ready, "True 4 16Gi 110 zone-b");

    let renew_time = || async {
        api.kubectl_ok(&[
            "get",
            "lease",
            "-n",
            "kube-node-lease",
            "n1",
            "-o",
            "jsonpath={.spec.renewTime}",
        ])
        .await
    };
    let first = renew_time().await;
    eventually(
        Duration::from_secs(5),
        "the node lease is renewed",
        || async { renew_time().await != first },
    )
    .await;

    api.kubectl_ok(&["run", "web", "--image=busybox", "--restart=Never"])
        .await;
    support::mark_pod_running_ready(&client, "default", "web", "10.244.1.5").await;
    let status = api
        .kubectl_ok(&[
            "get",
            "pod",
            "web",
            "-o",
            "jsonpath={.status.phase} {.status.podIP} {.status.conditions[?(@.type==\"Ready\")].status} {.status.containerStatuses[0].ready}",
        ])
        .await;
    assert_eq!(status, "Running 10.244.1.5 True true");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_cannot_renew_steps_down_with_an_error() {
    let api = TestApiServer::start().await;
    let seen: Witnessed = Arc::default();
    let token = CancellationToken::new();
    let leader = tokio::spawn(
        manager_with_witness(api.client().await, "cm-a", &seen)
            .run_with_leader_election(short_lease("cm-a"), token.clone()),
    );
    eventually(Duration::from_secs(10), "cm-a holds the lease", || async {
        lease_holder(&api).await == "cm-a"
    })
    .await;
    // Another writer takes the Lease with a long duration: cm-a's renewals now fail.
    api.kubectl_ok(&[
        "patch",
        "lease",
        "-n",
        "kube-system",
        "kube-controller-manager",
        "--type=merge",
        "-p",
        r#"{"spec":{"holderIdentity":"intruder","leaseDurationSeconds":3600}}"#,
    ])
    .await;
    let ended = tokio::time::timeout(Duration::from_secs(10), leader)
        .await
        .expect("cm-a steps down within the renew deadline")
        .expect("join");
    let err = ended.expect_err("losing the lease is an error the process exits on");
    assert!(err.to_string().contains("lost"), "{err}");
    assert_eq!(
        lease_holder(&api).await,
        "intruder",
        "not released by the loser"
    );
    let before = seen.lock().map(|s| s.len()).unwrap_or_default();
    api.kubectl_ok(&["create", "namespace", "after-loss"]).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        seen.lock().map(|s| s.len()).unwrap_or_default(),
        before,
        "the controllers stopped"
    );
}

/// Every kind of planned action, performed by the executor against the real apiserver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_executor_performs_every_action_kind() {
    use k8s_openapi::api::core::v1::{ConfigMap, Pod};
    use kwk_controllers::action::{Action, EventType, ObjectRef};
    use kwk_controllers::runtime::execute;
    use serde_json::json;

    let api = TestApiServer::start().await;
    let client = api.client().await;
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");

    let cm: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "planned", "namespace": "default"},
        "data": {"v": "1"},
    }))
    .expect("configmap");
    execute(&client, &[Action::create(&cm)])
        .await
        .expect("create");
    let mut read = configmaps.get("planned").await.expect("created");

    read.data = Some([("v".to_string(), "2".to_string())].into());
    execute(&client, &[Action::update(&read)])
        .await
        .expect("update");
    let stale = execute(&client, &[Action::update(&read)])
        .await
        .expect_err("a plan from a stale resourceVersion conflicts");
    assert_eq!(stale.status_code(), Some(409));
    assert!(stale.is_stale_plan());

    execute(
        &client,
        &[Action::patch(
            &read,
            None,
            json!({"metadata": {"labels": {"patched": "yes"}}}),
        )],
    )
    .await
    .expect("merge patch");
    let read = configmaps.get("planned").await.expect("get");
    assert_eq!(
        read.labels().get("patched").map(String::as_str),
        Some("yes")
    );
    assert_eq!(
        read.data
            .as_ref()
            .and_then(|d| d.get("v"))
            .map(String::as_str),
        Some("2")
    );

    execute(
        &client,
        &[Action::event(
            &read,
            EventType::Warning,
            "PlannedReason",
            "a planned note",
        )],
    )
    .await
    .expect("event");
    let events = api
        .kubectl_ok(&[
            "get",
            "events.events.k8s.io",
            "-n",
            "default",
            "-o",
            "jsonpath={range .items[*]}{.reason}|{.note}|{.type}|{.reportingController}|{.regarding.kind}/{.regarding.name}{\"\\n\"}{end}",
        ])
        .await;
    assert!(
        events.contains(
            "PlannedReason|a planned note|Warning|kwk-controller-manager|ConfigMap/planned"
        ),
        "{events}"
    );

    let mut wrong_uid = ObjectRef::of(&read);
    wrong_uid.uid = Some("not-the-uid".into());
    let precondition = execute(
        &client,
        &[Action::Delete {
            target: wrong_uid,
            propagation: None,
            grace_period_seconds: None,
        }],
    )
    .await
    .expect_err("the uid precondition protects a same-named successor");
    assert!(precondition.is_stale_plan(), "{precondition}");
    execute(&client, &[Action::delete(&read, None)])
        .await
        .expect("delete");
    assert!(configmaps.get_opt("planned").await.expect("get").is_none());

    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }))
    .expect("pod");
    execute(&client, &[Action::create(&pod)])
        .await
        .expect("create pod");
    let mut pod = pods.get("p").await.expect("pod");
    pod.status.get_or_insert_with(Default::default).phase = Some("Running".into());
    execute(&client, &[Action::update_status(&pod)])
        .await
        .expect("update status");
    let pod = pods.get("p").await.expect("pod");
    assert_eq!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Running")
    );
    execute(
        &client,
        &[Action::Evict {
            pod: ObjectRef::of(&pod),
        }],
    )
    .await
    .expect("evict");
    let evicted = pods.get_opt("p").await.expect("get");
    assert!(
        evicted.is_none_or(|p| p.metadata.deletion_timestamp.is_some()),
        "the eviction deletes the pod"
    );

    // The first failure stops the plan: the create after it is not attempted.
    let second: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "never", "namespace": "default"},
    }))
    .expect("configmap");
    let missing = execute(
        &client,
        &[Action::delete(&cm, None), Action::create(&second)],
    )
    .await
    .expect_err("deleting a missing object fails");
    assert_eq!(missing.status_code(), Some(404));
    assert!(configmaps.get_opt("never").await.expect("get").is_none());
}

/// A planner that panics on one object costs that key a retry, not the worker: with a single
/// worker, the objects after it are still reconciled, and the panicking key is tried again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_planner_does_not_stop_the_other_keys() {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kwk_controllers::action::Action;
    use serde_json::json;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let api = TestApiServer::start().await;
    let client = api.client().await;
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let panics = Arc::new(AtomicUsize::new(0));

    let mut watches = Watches::new(client.clone());
    let store = watches.watch(
        configmaps.clone(),
        watcher::Config::default(),
        |cm: &ConfigMap| vec![ObjectKey::of(cm)],
    );
    let seen = panics.clone();
    let controller = Controller::new("panicky", watches, move |key| {
        if key.name == "bad" {
            seen.fetch_add(1, Ordering::SeqCst);
            panic!("the planner cannot handle {key}");
        }
        let Some(cm) = store.get(&key.store_ref()) else {
            return Plan::default();
        };
        if key.name.ends_with("-copy") || cm.data.is_some() {
            return Plan::default();
        }
        let copy: ConfigMap = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": format!("{}-copy", key.name), "namespace": "default"},
        }))
        .expect("configmap");
        vec![Action::create(&copy)].into()
    })
    .workers(1);
    let token = CancellationToken::new();
    let running = tokio::spawn(controller.run(token.clone()));

    for name in ["bad", "good-1", "good-2"] {
        api.kubectl_ok(&["create", "configmap", name, "-n", "default"])
            .await;
    }
    for name in ["good-1-copy", "good-2-copy"] {
        eventually(Duration::from_secs(20), name, || {
            let configmaps = configmaps.clone();
            async move { configmaps.get_opt(name).await.ok().flatten().is_some() }
        })
        .await;
    }
    eventually(Duration::from_secs(20), "the bad key is retried", || {
        let panics = panics.clone();
        async move { panics.load(Ordering::SeqCst) >= 2 }
    })
    .await;
    assert!(!running.is_finished(), "the controller stopped");
    token.cancel();
    running.await.expect("controller task");
}
