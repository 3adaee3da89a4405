//! The job, cronjob, daemonset and statefulset controllers end to end: the real apiserver
//! (embedded store), real kubectl, the controller manager in-process with only the
//! controllers a test needs, simulated nodes, and a small "kubelet" task that moves pods
//! through their phases through the status subresource (no scheduler runs: pods stay
//! unbound, so deleting one is immediate unless a finalizer holds it).

mod support;

use support::eventually;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use kwk_controllers::runtime::ControllerManager;
use serde_json::{Value, json};
use support::TestApiServer;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// An apiserver plus a controller manager running `controllers`; stops both when dropped.
struct Cluster {
    api: TestApiServer,
    client: kube::Client,
    token: CancellationToken,
    manager: Option<JoinHandle<()>>,
}

impl Cluster {
    async fn start(controllers: &[&str]) -> Self {
        let api = TestApiServer::start().await;
        let client = api.client().await;
        let flags: Vec<String> = controllers.iter().map(|c| c.to_string()).collect();
        let manager = ControllerManager::with_default_controllers(client.clone())
            .select(&flags)
            .expect("known controllers");
        let token = CancellationToken::new();
        let manager = tokio::spawn(manager.run(token.clone()));
        Cluster {
            api,
            client,
            token,
            manager: Some(manager),
        }
    }

    async fn apply(&self, yaml: &str) {
        let out = self
            .api
            .kubectl_stdin(&["apply", "-f", "-"], Some(yaml))
            .await;
        assert!(
            out.status.success(),
            "kubectl apply: {}",
            support::stderr(&out)
        );
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), "default")
    }

    /// The names of the pods matching `selector` that are not being deleted, sorted.
    async fn pod_names(&self, selector: &str) -> Vec<String> {
        let list = self
            .pods()
            .list(&ListParams::default().labels(selector))
            .await
            .expect("list pods");
        let mut names: Vec<String> = list
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .map(|p| p.name_any())
            .collect();
        names.sort();
        names
    }

    async fn stop(mut self) {
        self.token.cancel();
        if let Some(manager) = self.manager.take() {
            tokio::time::timeout(Duration::from_secs(10), manager)
                .await
                .expect("the manager stops when cancelled")
                .expect("join");
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// Sets a pod's status (errors ignored: the pod may be gone by now).
async fn patch_status(pods: &Api<Pod>, name: &str, status: Value) {
    let _ = pods
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await;
}

fn container_statuses(pod: &Pod, state: &Value, ready: bool) -> Vec<Value> {
    let containers = pod.spec.as_ref().map(|s| s.containers.clone());
    containers
        .unwrap_or_default()
        .iter()
        .map(|c| {
            json!({
                "name": c.name, "image": c.image.clone().unwrap_or_default(), "imageID": "",
                "containerID": format!("containerd://sim-{}-{}", pod.name_any(), c.name),
                "ready": ready, "started": ready, "restartCount": 0, "state": state,
            })
        })
        .collect()
}

fn running_ready_status(pod: &Pod) -> Value {
    let now = Time(Timestamp::now());
    let condition = |kind: &str| json!({"type": kind, "status": "True", "lastTransitionTime": now});
    json!({
        "phase": "Running",
        "startTime": now,
        "conditions": [condition("Initialized"), condition("Ready"), condition("ContainersReady")],
        "containerStatuses": container_statuses(pod, &json!({"running": {"startedAt": now}}), true),
    })
}

/// A finished pod: every container terminated with `exit_code`.
fn finished_status(pod: &Pod, exit_code: i32) -> Value {
    let now = Time(Timestamp::now());
    let (phase, reason) = if exit_code == 0 {
        ("Succeeded", "Completed")
    } else {
        ("Failed", "Error")
    };
    let condition = |kind: &str| json!({"type": kind, "status": "False", "reason": "PodCompleted", "lastTransitionTime": now});
    let state = json!({"terminated": {
        "exitCode": exit_code, "reason": reason, "startedAt": now, "finishedAt": now,
    }});
    json!({
        "phase": phase,
        "conditions": [condition("Ready"), condition("ContainersReady")],
        "containerStatuses": container_statuses(pod, &state, false),
    })
}

/// What the simulated kubelet does with the pods it sees.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    /// New pods turn Running and Ready, running ones then succeed (exit 0).
    Succeed,
    /// New pods fail (exit 1).
    Fail,
}

/// Every 300 ms, moves the pods matching `selector` one step toward `outcome`.
fn kubelet(client: &kube::Client, selector: &str, outcome: Outcome) -> JoinHandle<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let params = ListParams::default().labels(selector);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let Ok(list) = pods.list(&params).await else {
                continue;
            };
            for pod in list.items {
                let name = pod.name_any();
                match (phase(&pod), outcome) {
                    ("Succeeded" | "Failed", _) => {}
                    (_, Outcome::Fail) => {
                        patch_status(&pods, &name, finished_status(&pod, 1)).await
                    }
                    ("Running", Outcome::Succeed) => {
                        patch_status(&pods, &name, finished_status(&pod, 0)).await;
                    }
                    (_, Outcome::Succeed) => {
                        patch_status(&pods, &name, running_ready_status(&pod)).await;
                    }
                }
            }
        }
    })
}

/// Records, in the order the apiserver reports them, which pods appear and disappear.
#[derive(Debug, Default, Clone)]
struct PodLog {
    created: Arc<Mutex<Vec<String>>>,
    deleted: Arc<Mutex<Vec<String>>>,
}

impl PodLog {
    fn watch(client: &kube::Client, selector: &str) -> (Self, JoinHandle<()>) {
        let log = PodLog::default();
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        let config = watcher::Config::default().labels(selector);
        let recorder = log.clone();
        let task = tokio::spawn(async move {
            let mut events = std::pin::pin!(watcher(pods, config));
            while let Some(event) = events.next().await {
                let record = |list: &Arc<Mutex<Vec<String>>>, name: String| {
                    let mut list = list.lock().expect("log");
                    if !list.contains(&name) {
                        list.push(name);
                    }
                };
                match event {
                    Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => {
                        record(&recorder.created, pod.name_any());
                    }
                    Ok(watcher::Event::Delete(pod)) => record(&recorder.deleted, pod.name_any()),
                    _ => {}
                }
            }
        });
        (log, task)
    }

    fn created(&self) -> Vec<String> {
        self.created.lock().expect("log").clone()
    }

    fn deleted(&self) -> Vec<String> {
        self.deleted.lock().expect("log").clone()
    }
}

fn condition_reason(job: &Job, type_: &str) -> Option<String> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
        .and_then(|c| c.reason.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_runs_its_completions_at_most_parallelism_at_a_time() {
    let cluster = Cluster::start(&["job"]).await;
    let kubelet = kubelet(&cluster.client, "job-name=x", Outcome::Succeed);
    // Sample the active pods while the Job runs.
    let most_active = Arc::new(Mutex::new(0usize));
    let sampler = {
        let (pods, most_active) = (cluster.pods(), most_active.clone());
        tokio::spawn(async move {
            let params = ListParams::default().labels("job-name=x");
            loop {
                if let Ok(list) = pods.list(&params).await {
                    let active = list
                        .items
                        .iter()
                        .filter(|p| p.metadata.deletion_timestamp.is_none())
                        .filter(|p| !matches!(phase(p), "Succeeded" | "Failed"))
                        .count();
                    let mut most = most_active.lock().expect("sample");
                    *most = (*most).max(active);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    cluster
        .apply(
            "apiVersion: batch/v1
kind: Job
metadata: {name: x, namespace: default}
spec:
  completions: 4
  parallelism: 2
  template:
    spec:
      restartPolicy: Never
      containers: [{name: main, image: busybox}]
",
        )
        .await;
    cluster
        .api
        .kubectl_ok(&["wait", "--for=condition=complete", "job/x", "--timeout=60s"])
        .await;
    sampler.abort();
    kubelet.abort();
    let job = Api::<Job>::namespaced(cluster.client.clone(), "default")
        .get("x")
        .await
        .expect("job");
    let status = job.status.clone().unwrap_or_default();
    assert_eq!(status.succeeded, Some(4), "{status:?}");
    assert_eq!(
        condition_reason(&job, "Complete").as_deref(),
        Some("CompletionsReached")
    );
    assert!(status.completion_time.is_some(), "{status:?}");
    let most = *most_active.lock().expect("sample");
    assert!(
        (1..=2).contains(&most),
        "at most parallelism pods active at once, saw {most}"
    );
    // Every pod the Job ran was released (tracking finalizer removed) and counted once.
    let pods = cluster
        .pods()
        .list(&ListParams::default().labels("job-name=x"))
        .await
        .expect("pods");
    assert_eq!(pods.items.len(), 4, "one pod per completion");
    assert!(
        pods.items.iter().all(|p| p
            .finalizers()
            .iter()
            .all(|f| f != "batch.kubernetes.io/job-tracking")),
        "finalizers released"
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_whose_pods_fail_past_its_backoff_limit_fails() {
    let cluster = Cluster::start(&["job"]).await;
    let kubelet = kubelet(&cluster.client, "job-name=fails", Outcome::Fail);
    cluster
        .apply(
            "apiVersion: batch/v1
kind: Job
metadata: {name: fails, namespace: default}
spec:
  completions: 2
  parallelism: 2
  backoffLimit: 1
  template:
    spec:
      restartPolicy: Never
      containers: [{name: main, image: busybox}]
",
        )
        .await;
    cluster
        .api
        .kubectl_ok(&[
            "wait",
            "--for=condition=failed",
            "job/fails",
            "--timeout=60s",
        ])
        .await;
    kubelet.abort();
    let job = Api::<Job>::namespaced(cluster.client.clone(), "default")
        .get("fails")
        .await
        .expect("job");
    assert_eq!(
        condition_reason(&job, "Failed").as_deref(),
        Some("BackoffLimitExceeded")
    );
    let status = job.status.clone().unwrap_or_default();
    assert!(status.failed.unwrap_or(0) >= 2, "{status:?}");
    assert_eq!(status.active, Some(0), "{status:?}");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_jobs_pods_lose_their_tracking_finalizer() {
    let cluster = Cluster::start(&["job"]).await;
    cluster
        .apply(
            "apiVersion: batch/v1
kind: Job
metadata: {name: gone, namespace: default}
spec:
  parallelism: 2
  template:
    spec:
      restartPolicy: Never
      containers: [{name: main, image: busybox}]
",
        )
        .await;
    let tracked = || async {
        let pods = cluster
            .pods()
            .list(&ListParams::default().labels("job-name=gone"))
            .await
            .expect("pods");
        pods.items
            .iter()
            .filter(|p| {
                p.finalizers()
                    .iter()
                    .any(|f| f == "batch.kubernetes.io/job-tracking")
            })
            .count()
    };
    eventually(Duration::from_secs(15), "two tracked pods", || async {
        tracked().await == 2
    })
    .await;
    // No garbage collector runs here: the pods stay, and only the job controller can let
    // go of them.
    cluster
        .api
        .kubectl_ok(&["delete", "job", "gone", "--wait=false"])
        .await;
    eventually(Duration::from_secs(15), "finalizers released", || async {
        tracked().await == 0
    })
    .await;
    assert_eq!(cluster.pod_names("job-name=gone").await.len(), 2);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cronjob_starts_a_job_at_the_next_minute() {
    let cluster = Cluster::start(&["cronjob"]).await;
    cluster
        .apply(
            "apiVersion: batch/v1
kind: CronJob
metadata: {name: tick, namespace: default}
spec:
  schedule: '* * * * *'
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers: [{name: main, image: busybox}]
",
        )
        .await;
    let cronjobs: Api<CronJob> = Api::namespaced(cluster.client.clone(), "default");
    let jobs: Api<Job> = Api::namespaced(cluster.client.clone(), "default");
    let mut started: Option<Job> = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(70);
    while started.is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no Job within 70 s of a `* * * * *` CronJob"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
        let list = jobs.list(&ListParams::default()).await.expect("jobs");
        started = list.items.into_iter().next();
    }
    let job = started.expect("a job");
    let cronjob = cronjobs.get("tick").await.expect("cronjob");
    // Named after the scheduled minute, controlled by the CronJob.
    let name = job.name_any();
    let minutes: i64 = name
        .strip_prefix("tick-")
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("job name {name} is tick-<minutes>"));
    let owner = job
        .owner_references()
        .iter()
        .find(|r| r.controller == Some(true))
        .cloned()
        .expect("controller reference");
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("CronJob", "tick")
    );
    assert_eq!(Some(&owner.uid), cronjob.metadata.uid.as_ref());
    let scheduled = job
        .annotations()
        .get("batch.kubernetes.io/cronjob-scheduled-timestamp")
        .cloned()
        .expect("scheduled-timestamp annotation");
    // The status records the run (the update may land just after the Job).
    eventually(
        Duration::from_secs(10),
        "lastScheduleTime and active",
        || async {
            let cronjob = cronjobs.get("tick").await.expect("cronjob");
            let status = cronjob.status.unwrap_or_default();
            let last = status.last_schedule_time.map(|Time(t)| t);
            let active = status.active.unwrap_or_default();
            last.is_some_and(|t| t.as_second() == minutes * 60)
                && active
                    .iter()
                    .any(|r| r.name.as_deref() == Some(name.as_str()))
        },
    )
    .await;
    let last = cluster
        .api
        .kubectl_ok(&[
            "get",
            "cronjob",
            "tick",
            "-o",
            "jsonpath={.status.lastScheduleTime}",
        ])
        .await;
    assert_eq!(
        last, scheduled,
        "lastScheduleTime is the Job's scheduled time"
    );
    cluster.stop().await;
}

/// The node a daemon pod is pinned to by required node affinity on `metadata.name`.
fn pinned_node(pod: &Pod) -> Option<String> {
    let value = serde_json::to_value(pod).ok()?;
    let terms = value.pointer(
        "/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms",
    )?;
    let fields = terms.get(0)?.get("matchFields")?.get(0)?;
    if fields.get("key")? != "metadata.name" || fields.get("operator")? != "In" {
        return None;
    }
    let values = fields.get("values")?.as_array()?;
    match values.as_slice() {
        [only] => only.as_str().map(String::from),
        _ => None,
    }
}

async fn daemon_nodes(cluster: &Cluster) -> Vec<String> {
    let pods = cluster
        .pods()
        .list(&ListParams::default().labels("app=agent"))
        .await
        .expect("pods");
    let mut nodes: Vec<String> = pods
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| pinned_node(p).unwrap_or_else(|| format!("unpinned pod {}", p.name_any())))
        .collect();
    nodes.sort();
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemonset_runs_one_pod_on_each_matching_node_and_follows_labels() {
    let cluster = Cluster::start(&["daemonset"]).await;
    let _nodes = support::simulate_nodes(
        &cluster.client,
        &[("n1", "zone-a"), ("n2", "zone-b"), ("n3", "zone-c")],
    )
    .await;
    for node in ["n1", "n2"] {
        cluster
            .api
            .kubectl_ok(&["label", "node", node, "disk=ssd"])
            .await;
    }
    cluster
        .apply(
            "apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent, namespace: default}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      nodeSelector: {disk: ssd}
      containers: [{name: main, image: busybox}]
",
        )
        .await;
    let want = |nodes: &[&str]| nodes.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    eventually(Duration::from_secs(20), "pods on n1 and n2", || async {
        daemon_nodes(&cluster).await == want(&["n1", "n2"])
    })
    .await;
    // Stays at one pod per node (no duplicate from a stale cache).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(daemon_nodes(&cluster).await, want(&["n1", "n2"]));
    eventually(Duration::from_secs(10), "status counts two", || async {
        let out = cluster
            .api
            .kubectl_ok(&[
                "get",
                "ds",
                "agent",
                "-o",
                "jsonpath={.status.desiredNumberScheduled} {.status.currentNumberScheduled}",
            ])
            .await;
        out == "2 2"
    })
    .await;

    cluster
        .api
        .kubectl_ok(&["label", "node", "n3", "disk=ssd"])
        .await;
    eventually(Duration::from_secs(20), "a pod lands on n3", || async {
        daemon_nodes(&cluster).await == want(&["n1", "n2", "n3"])
    })
    .await;
    cluster
        .api
        .kubectl_ok(&["label", "node", "n1", "disk-"])
        .await;
    eventually(Duration::from_secs(20), "n1's pod goes", || async {
        daemon_nodes(&cluster).await == want(&["n2", "n3"])
    })
    .await;
    cluster.stop().await;
}

async fn mark_ready(cluster: &Cluster, name: &str) {
    support::mark_pod_running_ready(&cluster.client, "default", name, "10.244.0.9").await;
}

/// Asserts that for `hold` the pods matching `selector` stay `want`.
async fn stays(cluster: &Cluster, selector: &str, want: &[&str], hold: Duration) {
    let deadline = tokio::time::Instant::now() + hold;
    while tokio::time::Instant::now() < deadline {
        assert_eq!(cluster.pod_names(selector).await, want, "while waiting");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statefulset_starts_members_in_order_with_claims_and_scales_down_from_the_top() {
    let cluster = Cluster::start(&["statefulset"]).await;
    let (log, watching) = PodLog::watch(&cluster.client, "app=web");
    cluster
        .apply(
            "apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web, namespace: default}
spec:
  serviceName: web
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: main
        image: busybox
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 1Gi}}
",
        )
        .await;
    let settle = Duration::from_millis(1500);
    eventually(Duration::from_secs(15), "web-0", || async {
        cluster.pod_names("app=web").await == ["web-0"]
    })
    .await;
    stays(&cluster, "app=web", &["web-0"], settle).await;
    mark_ready(&cluster, "web-0").await;
    eventually(
        Duration::from_secs(15),
        "web-1 after web-0 is ready",
        || async { cluster.pod_names("app=web").await == ["web-0", "web-1"] },
    )
    .await;
    stays(&cluster, "app=web", &["web-0", "web-1"], settle).await;
    mark_ready(&cluster, "web-1").await;
    eventually(
        Duration::from_secs(15),
        "web-2 after web-1 is ready",
        || async { cluster.pod_names("app=web").await == ["web-0", "web-1", "web-2"] },
    )
    .await;
    mark_ready(&cluster, "web-2").await;
    assert_eq!(log.created(), ["web-0", "web-1", "web-2"]);

    let claims = cluster
        .api
        .kubectl_ok(&["get", "pvc", "-o", "jsonpath={.items[*].metadata.name}"])
        .await;
    let claims: BTreeSet<&str> = claims.split_whitespace().collect();
    assert_eq!(
        claims,
        BTreeSet::from(["data-web-0", "data-web-1", "data-web-2"])
    );
    let volume = cluster
        .api
        .kubectl_ok(&[
            "get",
            "pod",
            "web-1",
            "-o",
            "jsonpath={.spec.volumes[?(@.name==\"data\")].persistentVolumeClaim.claimName}",
        ])
        .await;
    assert_eq!(volume, "data-web-1");
    eventually(Duration::from_secs(10), "readyReplicas 3", || async {
        let out = cluster
            .api
            .kubectl_ok(&[
                "get",
                "sts",
                "web",
                "-o",
                "jsonpath={.status.readyReplicas}",
            ])
            .await;
        out == "3"
    })
    .await;

    cluster
        .api
        .kubectl_ok(&["scale", "statefulset", "web", "--replicas=1"])
        .await;
    eventually(Duration::from_secs(20), "only web-0 left", || async {
        cluster.pod_names("app=web").await == ["web-0"]
    })
    .await;
    eventually(Duration::from_secs(5), "both deletions watched", || async {
        log.deleted().len() == 2
    })
    .await;
    assert_eq!(log.deleted(), ["web-2", "web-1"], "highest ordinal first");
    watching.abort();
    cluster.stop().await;
}
