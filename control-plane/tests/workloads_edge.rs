//! Bad input and rollout edge cases end to end: the real apiserver (embedded store), real
//! kubectl, the controller manager in-process. Deployments the apiserver must refuse (a
//! selector that does not match the template, an empty selector); odd objects the apiserver
//! accepts, thrown at every default controller at once (none may panic or wedge: a
//! Deployment created afterwards still rolls out); `kubectl rollout pause|resume`; and a
//! progress deadline that passes (`kubectl rollout status` fails like upstream's).
//!
//! No scheduler runs: pods stay unbound. Where pods must become ready, a small "kubelet"
//! task marks the pods of one label Running and Ready.

mod support;

use support::eventually;

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use kwk_controllers::common::{controller_of, is_ready};
use kwk_controllers::runtime::ControllerManager;
use support::TestApiServer;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// An apiserver plus a controller manager running `controllers` (every default controller
/// when empty).
struct Cluster {
    api: TestApiServer,
    client: kube::Client,
    token: CancellationToken,
    manager: JoinHandle<()>,
}

impl Cluster {
    async fn start(controllers: &[&str]) -> Self {
        let api = TestApiServer::start().await;
        let client = api.client().await;
        let mut manager = ControllerManager::with_default_controllers(client.clone());
        if !controllers.is_empty() {
            let flags: Vec<String> = controllers.iter().map(|c| c.to_string()).collect();
            manager = manager.select(&flags).expect("known controllers");
        }
        let token = CancellationToken::new();
        let manager = tokio::spawn(manager.run(token.clone()));
        Cluster {
            api,
            client,
            token,
            manager,
        }
    }

    async fn apply(&self, yaml: &str) {
        let out = self
            .api
            .kubectl_stdin(&["apply", "-f", "-"], Some(yaml))
            .await;
        assert!(
            out.status.success(),
            "kubectl apply: {}{}",
            support::stdout(&out),
            support::stderr(&out)
        );
    }

    async fn stop(self) {
        self.token.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.manager)
            .await
            .expect("the manager stops when cancelled")
            .expect("the manager did not panic");
    }
}

/// Every 200 ms, marks the pods labelled `selector` that are not ready yet Running and Ready.
fn kubelet(client: &kube::Client, selector: &'static str) -> JoinHandle<()> {
    let client = client.clone();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    tokio::spawn(async move {
        let mut ip = 0u32;
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let Ok(list) = pods.list(&ListParams::default().labels(selector)).await else {
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

/// The live pods of `default` controlled by the ReplicaSet `rs`.
async fn pods_of(client: &kube::Client, rs: &str) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.list(&ListParams::default())
        .await
        .expect("list pods")
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| controller_of(&p.metadata).is_some_and(|o| o.name == rs))
        .collect()
}

/// The ReplicaSets of `default` controlled by Deployment `deployment`:
/// (name, first container image, replicas), sorted by name.
async fn replica_sets_of(client: &kube::Client, deployment: &str) -> Vec<(String, String, i32)> {
    let api: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let mut out: Vec<(String, String, i32)> = api
        .list(&ListParams::default())
        .await
        .expect("list replica sets")
        .items
        .into_iter()
        .filter(|rs| controller_of(&rs.metadata).is_some_and(|o| o.name == deployment))
        .map(|rs| {
            let spec = rs.spec.clone().unwrap_or_default();
            let image = spec
                .template
                .and_then(|t| t.spec)
                .and_then(|s| s.containers.first().and_then(|c| c.image.clone()))
                .unwrap_or_default();
            (rs.name_any(), image, spec.replicas.unwrap_or(1))
        })
        .collect();
    out.sort();
    out
}

/// `(status, reason)` of the deployment's `Progressing` condition.
async fn progressing(client: &kube::Client, name: &str) -> Option<(String, String)> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let d = api.get(name).await.expect("get deployment");
    d.status?
        .conditions?
        .into_iter()
        .find(|c| c.type_ == "Progressing")
        .map(|c| (c.status, c.reason.unwrap_or_default()))
}

// ---- 1. Invalid deployments: 422, upstream's message, nothing stored ----

const MISMATCHED_SELECTOR: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: mismatch
spec:
  selector:
    matchLabels: {app: api}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: nginx
        image: nginx:1
"#;

const EMPTY_SELECTOR: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: empty
spec:
  selector: {}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: nginx
        image: nginx:1
"#;

const MISSING_SELECTOR: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: missing
spec:
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: nginx
        image: nginx:1
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_with_a_bad_selector_are_refused_with_upstreams_message() {
    let api = TestApiServer::start().await;
    let cases = [
        (
            "mismatch",
            MISMATCHED_SELECTOR,
            "The Deployment \"mismatch\" is invalid: spec.template.metadata.labels: Invalid value: \
             map[string]string{\"app\":\"web\"}: `selector` does not match template `labels`\n",
        ),
        (
            "empty",
            EMPTY_SELECTOR,
            "The Deployment \"empty\" is invalid: spec.selector: Invalid value: \
             v1.LabelSelector{MatchLabels:map[string]string(nil), \
             MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: \
             empty selector is invalid for deployment\n",
        ),
        (
            "missing",
            MISSING_SELECTOR,
            "The Deployment \"missing\" is invalid: \n\
             * spec.selector: Required value\n\
             * spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"web\"}: \
             `selector` does not match template `labels`\n",
        ),
    ];
    for (name, yaml, message) in cases {
        for verb in ["apply", "create"] {
            let out = api.kubectl_stdin(&[verb, "-f", "-"], Some(yaml)).await;
            assert!(!out.status.success(), "kubectl {verb} {name} succeeded");
            assert_eq!(support::stderr(&out), message, "kubectl {verb} {name}");
        }
        // The answer on the wire is a 422 (kubectl logs the response status at -v=6).
        let traced = api
            .kubectl_stdin(&["create", "-f", "-", "-v=6"], Some(yaml))
            .await;
        let log = support::stderr(&traced);
        assert!(
            log.lines()
                .any(|l| l.contains("POST") && l.contains("422 Unprocessable Entity")),
            "no 422 for {name}: {log}"
        );
        let out = api
            .kubectl(&["get", "deployment", name, "--ignore-not-found"])
            .await;
        assert!(
            out.status.success(),
            "get {name}: {}",
            support::stderr(&out)
        );
        assert_eq!(support::stdout(&out), "", "{name} was stored");
    }
    let raw = api
        .kubectl(&[
            "get",
            "--raw",
            "/apis/apps/v1/namespaces/default/deployments",
        ])
        .await;
    let list: serde_json::Value =
        serde_json::from_slice(&raw.stdout).expect("deployment list json");
    assert_eq!(list["items"], serde_json::json!([]), "nothing stored");
}

// ---- 2. Odd objects: no controller panics or wedges ----

/// Panics anywhere but in this test file's own assertions (controllers run on this test's
/// runtime; a panicking worker task would otherwise die silently).
fn foreign_panics() -> &'static Mutex<Vec<String>> {
    static PANICS: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    PANICS.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let location = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()))
                .unwrap_or_default();
            if !location.contains("tests/")
                && let Some(panics) = PANICS.get()
            {
                panics
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(format!("{location}: {info}"));
            }
            previous(info);
        }));
        Mutex::new(Vec::new())
    })
}

/// Unusual but valid objects: every one is accepted by the apiserver.
const ODD_OBJECTS: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: zero}
spec:
  replicas: 0
  selector: {matchLabels: {app: zero}}
  template:
    metadata: {labels: {app: zero}}
    spec: {containers: [{name: c, image: nginx:1}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: paused}
spec:
  paused: true
  replicas: 2
  selector: {matchLabels: {app: paused}}
  template:
    metadata: {labels: {app: paused}}
    spec: {containers: [{name: c, image: nginx:1}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: all-surge}
spec:
  replicas: 3
  revisionHistoryLimit: 2147483647
  progressDeadlineSeconds: 2147483647
  minReadySeconds: 2147483
  strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: "100%", maxUnavailable: "0%"}}
  selector: {matchLabels: {app: all-surge}}
  template:
    metadata: {labels: {app: all-surge}}
    spec: {containers: [{name: c, image: nginx:1}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: no-surge}
spec:
  replicas: 1
  revisionHistoryLimit: 0
  strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: "0%", maxUnavailable: "100%"}}
  selector:
    matchExpressions: [{key: app, operator: In, values: [no-surge]}, {key: gone, operator: DoesNotExist}]
  template:
    metadata: {labels: {app: no-surge}}
    spec: {containers: [{name: c, image: nginx:1}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: recreate-zero}
spec:
  replicas: 0
  strategy: {type: Recreate}
  selector: {matchLabels: {app: recreate-zero}}
  template:
    metadata: {labels: {app: recreate-zero}}
    spec: {containers: [{name: c, image: nginx:1}]}
---
apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: orphaned-rs
  ownerReferences:
  - {apiVersion: apps/v1, kind: Deployment, name: ghost, uid: 00000000-0000-0000-0000-00000000dead, controller: true, blockOwnerDeletion: true}
spec:
  replicas: 1
  selector: {matchLabels: {app: orphaned-rs}}
  template:
    metadata: {labels: {app: orphaned-rs}}
    spec: {containers: [{name: c, image: nginx:1}]}
---
apiVersion: v1
kind: Pod
metadata:
  name: orphaned-pod
  labels: {app: orphaned-pod}
  ownerReferences:
  - {apiVersion: apps/v1, kind: ReplicaSet, name: ghost-rs, uid: 00000000-0000-0000-0000-0000000beef0, controller: true}
spec: {containers: [{name: c, image: nginx:1}]}
---
apiVersion: v1
kind: Pod
metadata:
  name: widget-pod
  labels: {app: widget-pod}
  ownerReferences:
  - {apiVersion: example.com/v1, kind: Widget, name: w, uid: 00000000-0000-0000-0000-00000000abcd, controller: true}
spec: {containers: [{name: c, image: nginx:1}]}
---
apiVersion: batch/v1
kind: Job
metadata: {name: no-completions}
spec:
  completions: 0
  template:
    spec: {restartPolicy: Never, containers: [{name: c, image: busybox}]}
---
apiVersion: batch/v1
kind: Job
metadata: {name: no-parallelism}
spec:
  parallelism: 0
  backoffLimit: 0
  activeDeadlineSeconds: 1
  template:
    spec: {restartPolicy: Never, containers: [{name: c, image: busybox}]}
---
apiVersion: batch/v1
kind: Job
metadata: {name: indexed-zero}
spec:
  completionMode: Indexed
  completions: 0
  parallelism: 0
  template:
    spec: {restartPolicy: OnFailure, containers: [{name: c, image: busybox}]}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: nowhere}
spec:
  selector: {matchLabels: {app: nowhere}}
  template:
    metadata: {labels: {app: nowhere}}
    spec:
      nodeSelector: {no-such-label: "true"}
      containers: [{name: c, image: nginx:1}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: far}
spec:
  replicas: 3
  podManagementPolicy: Parallel
  ordinals: {start: 2147483646}
  serviceName: far
  selector: {matchLabels: {app: far}}
  template:
    metadata: {labels: {app: far}}
    spec: {containers: [{name: c, image: nginx:1}]}
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: kathmandu}
spec:
  schedule: "*/1 * * * *"
  timeZone: Asia/Kathmandu
  startingDeadlineSeconds: 0
  jobTemplate:
    spec:
      template:
        spec: {restartPolicy: OnFailure, containers: [{name: c, image: busybox}]}
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: never}
spec:
  schedule: "0 0 30 2 *"
  jobTemplate:
    spec:
      template:
        spec: {restartPolicy: OnFailure, containers: [{name: c, image: busybox}]}
---
apiVersion: v1
kind: Service
metadata: {name: no-selector}
spec:
  ports: [{port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: named-port}
spec:
  selector: {app: orphaned-pod}
  ports: [{port: 80, targetPort: no-such-port}]
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: everything}
spec:
  maxUnavailable: "0%"
  selector: {}
---
apiVersion: v1
kind: Namespace
metadata:
  name: odd
  finalizers: [example.com/keep]
spec:
  finalizers: [kubernetes, example.com/odd]
---
apiVersion: v1
kind: Node
metadata: {name: bare}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_objects_crash_no_controller_and_deployments_still_roll_out() {
    let panics = foreign_panics();
    let cluster = Cluster::start(&[]).await;
    let client = cluster.client.clone();
    let _nodes = support::simulate_nodes(&client, &[("n1", "z1")]).await;
    let kubelet = kubelet(&client, "app=after");

    cluster.apply(ODD_OBJECTS).await;
    // A pod in the terminating namespace, then the namespace deleted (its finalizers hold it).
    cluster
        .api
        .kubectl_ok(&["run", "stuck", "-n", "odd", "--image=nginx:1"])
        .await;
    cluster
        .api
        .kubectl_ok(&["delete", "namespace", "odd", "--wait=false"])
        .await;

    // What upstream does with some of them.
    eventually(
        Duration::from_secs(15),
        "the zero-replica deployment has one replica set scaled to 0",
        || async {
            replica_sets_of(&client, "zero")
                .await
                .iter()
                .map(|r| r.2)
                .collect::<Vec<_>>()
                == [0]
        },
    )
    .await;
    eventually(
        Duration::from_secs(15),
        "the garbage collector deletes the replica set and the pod whose owners never existed",
        || async {
            let rs: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
            let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
            matches!(rs.get_opt("orphaned-rs").await, Ok(None))
                && matches!(pods.get_opt("orphaned-pod").await, Ok(None))
        },
    )
    .await;
    assert!(
        replica_sets_of(&client, "paused").await.is_empty(),
        "a paused deployment creates no replica set"
    );

    // Give every controller a few passes over the odd objects.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !cluster.manager.is_finished(),
        "the controller manager stopped"
    );
    let seen = panics.lock().expect("panics").clone();
    assert!(seen.is_empty(), "controllers panicked: {seen:#?}");

    // Controllers keep working: a plain deployment created now rolls out.
    let out = cluster
        .api
        .kubectl_ok(&[
            "create",
            "deployment",
            "after",
            "--image=nginx:1",
            "--replicas=2",
        ])
        .await;
    assert_eq!(out.trim(), "deployment.apps/after created");
    let out = cluster
        .api
        .kubectl_ok(&["rollout", "status", "deployment/after", "--timeout=20s"])
        .await;
    assert!(
        out.contains("deployment \"after\" successfully rolled out"),
        "rollout status: {out}"
    );
    let sets = replica_sets_of(&client, "after").await;
    assert_eq!(sets.len(), 1, "one replica set: {sets:?}");
    assert_eq!(sets[0].2, 2, "scaled to 2: {sets:?}");
    assert_eq!(pods_of(&client, &sets[0].0).await.len(), 2, "two pods");
    let widget: Api<Pod> = Api::namespaced(client.clone(), "default");
    assert!(
        widget.get_opt("widget-pod").await.expect("get").is_some(),
        "a pod whose owner kind nobody serves is left alone"
    );

    assert!(
        !cluster.manager.is_finished(),
        "the controller manager stopped"
    );
    let seen = panics.lock().expect("panics").clone();
    assert!(seen.is_empty(), "controllers panicked: {seen:#?}");
    kubelet.abort();
    cluster.stop().await;
}

// ---- 3. kubectl rollout pause / resume ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_deployment_rolls_out_only_once_resumed() {
    let cluster = Cluster::start(&["replicaset", "deployment"]).await;
    let (api, client) = (&cluster.api, &cluster.client);
    let kubelet = kubelet(client, "app=web");
    api.kubectl_ok(&[
        "create",
        "deployment",
        "web",
        "--image=nginx:1",
        "--replicas=2",
    ])
    .await;
    api.kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=20s"])
        .await;
    let first = replica_sets_of(client, "web").await;
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!((first[0].1.as_str(), first[0].2), ("nginx:1", 2));

    let out = api
        .kubectl_ok(&["rollout", "pause", "deployment/web"])
        .await;
    assert_eq!(out.trim(), "deployment.apps/web paused");
    let out = api
        .kubectl_ok(&["set", "image", "deployment/web", "nginx=nginx:2"])
        .await;
    assert_eq!(out.trim(), "deployment.apps/web image updated");
    eventually(
        Duration::from_secs(10),
        "Progressing=Unknown DeploymentPaused",
        || async {
            progressing(client, "web").await
                == Some(("Unknown".to_string(), "DeploymentPaused".to_string()))
        },
    )
    .await;
    // The controller has seen the new template (the paused condition came after it); give
    // it a moment more to (wrongly) start a rollout.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        replica_sets_of(client, "web").await,
        first,
        "no new replica set while paused"
    );
    let again = api.kubectl(&["rollout", "pause", "deployment/web"]).await;
    assert!(!again.status.success(), "a second pause succeeded");
    assert_eq!(
        support::stderr(&again),
        "error: deployments.apps \"web\" is already paused\n"
    );

    let out = api
        .kubectl_ok(&["rollout", "resume", "deployment/web"])
        .await;
    assert_eq!(out.trim(), "deployment.apps/web resumed");
    let out = api
        .kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=20s"])
        .await;
    assert!(
        out.contains("deployment \"web\" successfully rolled out"),
        "rollout status: {out}"
    );
    let sets = replica_sets_of(client, "web").await;
    let mut by_image: Vec<(&str, i32)> = sets.iter().map(|r| (r.1.as_str(), r.2)).collect();
    by_image.sort();
    assert_eq!(
        by_image,
        [("nginx:1", 0), ("nginx:2", 2)],
        "rolled out: {sets:?}"
    );
    assert_eq!(
        progressing(client, "web").await,
        Some(("True".to_string(), "NewReplicaSetAvailable".to_string()))
    );
    kubelet.abort();
    cluster.stop().await;
}

// ---- 4. Progress deadline ----

const SLOW: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: slow}
spec:
  replicas: 1
  progressDeadlineSeconds: 3
  selector: {matchLabels: {app: slow}}
  template:
    metadata: {labels: {app: slow}}
    spec: {containers: [{name: c, image: nginx:1}]}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_whose_pods_never_get_ready_exceeds_its_progress_deadline() {
    let cluster = Cluster::start(&["replicaset", "deployment"]).await;
    let (api, client) = (&cluster.api, &cluster.client);
    // No kubelet: the pod is created but never becomes ready.
    cluster.apply(SLOW).await;
    let out = api
        .kubectl(&["rollout", "status", "deployment/slow", "--timeout=30s"])
        .await;
    assert!(
        !out.status.success(),
        "rollout status succeeded: {}",
        support::stdout(&out)
    );
    assert_eq!(
        support::stderr(&out),
        "error: deployment \"slow\" exceeded its progress deadline\n"
    );
    assert!(
        support::stdout(&out).contains("Waiting for deployment \"slow\" rollout to finish: 0 of 1 updated replicas are available..."),
        "rollout status: {}",
        support::stdout(&out)
    );
    assert_eq!(
        progressing(client, "slow").await,
        Some(("False".to_string(), "ProgressDeadlineExceeded".to_string()))
    );
    let message = api
        .kubectl_ok(&[
            "get",
            "deployment",
            "slow",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Progressing\")].message}",
        ])
        .await;
    let sets = replica_sets_of(client, "slow").await;
    assert_eq!(sets.len(), 1, "{sets:?}");
    assert_eq!(
        message,
        format!("ReplicaSet \"{}\" has timed out progressing.", sets[0].0)
    );
    assert_eq!(pods_of(client, &sets[0].0).await.len(), 1, "the pod stays");
    cluster.stop().await;
}
