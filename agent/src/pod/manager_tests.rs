//! Pod manager and worker behaviour against the recording fake runtime, in paused time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::admission::NodeFacts;
use super::events::EventSink;
use super::fake_runtime::FakeRuntime;
use super::manager::{DesiredPods, PodManager};
use super::node_facts::NodeFactsWatch;
use super::observed::ContainerKind;
use super::plan::Action;
use super::store::StatusStore;
use super::worker::WorkerConfig;

fn pod(uid: &str, name: &str, command: &str) -> Arc<Pod> {
    Arc::new(
        serde_saphyr::from_str(&format!(
            "metadata: {{name: {name}, uid: {uid}, namespace: default}}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - {{name: app, image: busybox, command: [{command}]}}"
        ))
        .expect("test pod parses"),
    )
}

struct Harness {
    runtime: FakeRuntime,
    store: StatusStore,
    desired: watch::Sender<DesiredPods>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

fn start(runtime: FakeRuntime) -> Harness {
    start_with(runtime, 110)
}

fn start_with(runtime: FakeRuntime, max_pods: usize) -> Harness {
    start_full(runtime, max_pods, None, EventSink::default())
}

fn start_full(
    runtime: FakeRuntime,
    max_pods: usize,
    sources_ready: Option<watch::Receiver<bool>>,
    events: EventSink,
) -> Harness {
    start_admitting(
        runtime,
        max_pods,
        sources_ready,
        events,
        None,
        StatusStore::default(),
    )
}

/// A manager as with an apiserver: the store keeps final statuses.
fn start_for_api(runtime: FakeRuntime, max_pods: usize) -> Harness {
    start_admitting(
        runtime,
        max_pods,
        None,
        EventSink::default(),
        None,
        StatusStore::keeping_final_statuses(),
    )
}

fn start_admitting(
    runtime: FakeRuntime,
    max_pods: usize,
    sources_ready: Option<watch::Receiver<bool>>,
    events: EventSink,
    node: Option<NodeFactsWatch>,
    store: StatusStore,
) -> Harness {
    let (desired, rx) = watch::channel(DesiredPods::new());
    let cancel = CancellationToken::new();
    let manager = PodManager::new(
        runtime.clone(),
        store.clone(),
        WorkerConfig {
            sync_frequency: Duration::from_secs(60),
            retry_after: Duration::from_secs(1),
            host_ip: None,
            events,
            earlier_instances_kept: Some(1),
        },
        max_pods,
    );
    let manager = match sources_ready {
        Some(ready) => manager.with_sources_ready(ready),
        None => manager,
    };
    let manager = match node {
        Some(node) => manager.with_node_facts(node),
        None => manager,
    };
    let task = tokio::spawn(manager.run(rx, cancel.clone()));
    Harness {
        runtime,
        store,
        desired,
        cancel,
        task,
    }
}

impl Harness {
    fn set(&self, pods: &[&Arc<Pod>]) {
        let map: BTreeMap<String, Arc<Pod>> = pods
            .iter()
            .map(|p| (p.metadata.uid.clone().unwrap_or_default(), Arc::clone(p)))
            .collect();
        self.desired.send_replace(map);
    }

    fn phase(&self, name: &str) -> Option<String> {
        self.store
            .snapshot()
            .into_iter()
            .find(|p| p.metadata.name.as_deref() == Some(name))
            .and_then(|p| p.status.and_then(|s| s.phase))
    }

    async fn stop(self) {
        self.cancel.cancel();
        self.task.await.expect("manager task");
    }
}

/// The pod `old` was killed before the sandbox of `new` was created.
fn assert_killed_before_started(runtime: &FakeRuntime, old: &str, new: &str) {
    let all = runtime.all_actions();
    let old_killed = all
        .iter()
        .position(|(uid, a)| uid == old && *a == Action::KillPod)
        .expect("old pod killed");
    let new_started = all
        .iter()
        .position(|(uid, a)| uid == new && matches!(a, Action::CreateSandbox { .. }))
        .expect("new pod started");
    assert!(old_killed < new_started, "{all:?}");
}

async fn settle(seconds: u64) {
    tokio::time::sleep(Duration::from_secs(seconds)).await;
}

#[tokio::test(start_paused = true)]
async fn a_pod_runs_and_is_removed_when_its_source_drops_it() {
    let h = start(FakeRuntime::new());
    let web = pod("u1", "web", "sleep");
    h.set(&[&web]);
    settle(3).await;
    assert_eq!(
        h.runtime.actions("u1"),
        vec![
            Action::CreateSandbox { attempt: 0 },
            Action::StartContainer {
                name: "app".into(),
                kind: ContainerKind::App,
                restart_count: 0
            }
        ]
    );
    assert_eq!(h.phase("web").as_deref(), Some("Running"));

    h.set(&[]);
    settle(3).await;
    assert!(
        h.runtime.observed("u1").is_empty(),
        "pod left on the runtime"
    );
    assert_eq!(h.runtime.cleaned(), vec!["u1".to_string()]);
    assert_eq!(h.phase("web"), None);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_crashing_container_restarts_with_growing_back_off() {
    let h = start(FakeRuntime::new());
    let crash = pod("u2", "crash", "crash");
    h.set(&[&crash]);
    // Starts at ~0 s, restarts at once, then after 10 s and 20 s more: 3 restarts by 35 s.
    settle(35).await;
    let starts = h
        .runtime
        .actions("u2")
        .into_iter()
        .filter(|a| matches!(a, Action::StartContainer { .. }))
        .count();
    assert_eq!(starts, 4, "{:?}", h.runtime.actions("u2"));
    let pods = h.store.snapshot();
    let status = pods[0].status.as_ref().expect("status");
    let c = &status.container_statuses.as_ref().expect("statuses")[0];
    assert_eq!(c.restart_count, 3);
    let waiting = c
        .state
        .as_ref()
        .and_then(|s| s.waiting.as_ref())
        .expect("waiting");
    assert_eq!(waiting.reason.as_deref(), Some("CrashLoopBackOff"));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_restarted_node_adopts_running_pods_and_terminates_orphans() {
    // A first manager starts two pods, then "dies" (is cancelled) without touching them.
    let runtime = FakeRuntime::new();
    let h = start(runtime.clone());
    let keep = pod("k1", "keep", "sleep");
    let gone = pod("g1", "gone", "sleep");
    h.set(&[&keep, &gone]);
    settle(3).await;
    h.stop().await;
    let before = runtime.all_actions().len();

    // The second manager only wants `keep`.
    let h = start(runtime.clone());
    h.set(&[&keep]);
    settle(5).await;
    let after: Vec<(String, Action)> = runtime.all_actions().split_off(before);
    assert!(
        after.iter().all(|(uid, _)| uid == "g1"),
        "the adopted pod was touched: {after:?}"
    );
    assert!(
        runtime.observed("g1").is_empty(),
        "the orphan is still there"
    );
    assert!(!runtime.observed("k1").is_empty());
    assert_eq!(h.phase("keep").as_deref(), Some("Running"));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_replaced_static_pod_starts_after_the_old_one_is_gone() {
    let h = start(FakeRuntime::new());
    let v1 = pod("v1", "api", "sleep");
    h.set(&[&v1]);
    settle(3).await;
    let v2 = pod("v2", "api", "serve");
    h.set(&[&v2]);
    settle(5).await;
    assert_killed_before_started(&h.runtime, "v1", "v2");
    assert_eq!(h.phase("api").as_deref(), Some("Running"));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn after_a_restart_a_new_version_waits_for_the_old_orphan() {
    // The node ran v1 of a static pod, then went down; meanwhile the manifest became v2.
    let runtime = FakeRuntime::new();
    let h = start(runtime.clone());
    let v1 = pod("v1", "api", "sleep");
    h.set(&[&v1]);
    settle(3).await;
    h.stop().await;

    let h = start(runtime.clone());
    let v2 = pod("v2", "api", "serve");
    h.set(&[&v2]);
    settle(5).await;
    assert_killed_before_started(&runtime, "v1", "v2");
    assert!(runtime.observed("v1").is_empty());
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn pods_beyond_max_pods_are_rejected_for_good() {
    let h = start_with(FakeRuntime::new(), 2);
    let (a, b, c) = (
        pod("a", "a", "sleep"),
        pod("b", "b", "sleep"),
        pod("c", "c", "sleep"),
    );
    h.set(&[&a, &b, &c]);
    settle(3).await;
    assert_eq!(h.phase("a").as_deref(), Some("Running"));
    assert_eq!(h.phase("b").as_deref(), Some("Running"));
    assert_eq!(h.phase("c").as_deref(), Some("Failed"));
    assert!(
        h.runtime.actions("c").is_empty(),
        "a rejected pod was started"
    );
    let status = h
        .store
        .snapshot()
        .into_iter()
        .find(|p| p.metadata.name.as_deref() == Some("c"))
        .and_then(|p| p.status)
        .expect("status of c");
    assert_eq!(status.reason.as_deref(), Some("OutOfpods"));

    assert_eq!(
        status.message.as_deref(),
        Some(
            "Pod was rejected: Node didn't have enough resource: pods, requested: 1, used: 2, capacity: 2"
        )
    );

    // Room frees up: the rejected pod stays rejected (as upstream: it is terminal).
    h.set(&[&b, &c]);
    settle(5).await;
    assert_eq!(h.phase("c").as_deref(), Some("Failed"));
    assert!(
        h.runtime.actions("c").is_empty(),
        "a rejected pod was started later"
    );
    // A new pod takes the free place.
    let d = pod("d", "d", "sleep");
    h.set(&[&b, &c, &d]);
    settle(5).await;
    assert_eq!(h.phase("d").as_deref(), Some("Running"));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_runtime_hears_of_each_change_of_the_active_pods_before_they_start() {
    let h = start(FakeRuntime::new());
    let (a, b) = (pod("a", "a", "sleep"), pod("b", "b", "sleep"));
    h.set(&[&a]);
    settle(3).await;
    h.set(&[&a, &b]);
    settle(3).await;
    // The same set again (a no-op for the sources) is not reported twice.
    h.set(&[&a, &b]);
    settle(1).await;
    h.set(&[&b]);
    settle(3).await;
    let reports = h.runtime.active_reports();
    assert_eq!(
        reports,
        vec![
            vec!["a".to_string()],
            vec!["a".to_string(), "b".to_string()],
            vec!["b".to_string()],
        ],
        "{reports:?}"
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn orphans_are_only_looked_for_once_every_source_has_listed() {
    let runtime = FakeRuntime::new();
    let h = start(runtime.clone());
    let keep = pod("k1", "keep", "sleep");
    let api = pod("a1", "from-api", "sleep");
    h.set(&[&keep, &api]);
    settle(3).await;
    h.stop().await;

    // Restarted while the apiserver is still away: only the static pod is known.
    let (ready, ready_rx) = watch::channel(false);
    let h = start_full(runtime.clone(), 110, Some(ready_rx), EventSink::default());
    h.set(&[&keep]);
    settle(10).await;
    assert!(
        !runtime.observed("a1").is_empty(),
        "the API pod was taken for an orphan before the apiserver listed"
    );
    // The apiserver lists no such pod any more: now it is an orphan.
    ready.send_replace(true);
    settle(5).await;
    assert!(
        runtime.observed("a1").is_empty(),
        "the orphan is still there"
    );
    assert!(!runtime.observed("k1").is_empty());
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_pod_deleted_in_the_api_is_terminated_once_and_not_started_again() {
    let h = start_for_api(FakeRuntime::new(), 110);
    let web = pod("u1", "web", "sleep");
    h.set(&[&web]);
    settle(3).await;
    assert_eq!(h.phase("web").as_deref(), Some("Running"));

    let mut deleting = (*web).clone();
    deleting.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Default::default()),
    );
    deleting.metadata.deletion_grace_period_seconds = Some(0);
    let deleting = Arc::new(deleting);
    h.set(&[&deleting]);
    settle(5).await;
    assert!(
        h.runtime.observed("u1").is_empty(),
        "pod left on the runtime"
    );
    assert_eq!(h.phase("web"), None);
    // Its final status waits for the status sync: containers terminated, phase Failed
    // (killed: exit code 137).
    let final_status = h
        .store
        .terminated_pods()
        .into_iter()
        .find(|p| p.metadata.name.as_deref() == Some("web"))
        .and_then(|p| p.status)
        .expect("final status kept");
    assert_eq!(final_status.phase.as_deref(), Some("Failed"));
    let terminated = final_status.container_statuses.unwrap_or_default()[0]
        .state
        .clone()
        .and_then(|s| s.terminated)
        .expect("container terminated");
    assert_eq!(terminated.exit_code, 137);
    // Still in the desired set (the API has not removed it yet): nothing starts again.
    settle(30).await;
    let sandboxes = h
        .runtime
        .actions("u1")
        .into_iter()
        .filter(|a| matches!(a, Action::CreateSandbox { .. }))
        .count();
    assert_eq!(sandboxes, 1, "{:?}", h.runtime.actions("u1"));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_crash_loop_reports_one_back_off_event_per_back_off_period() {
    let (events, mut queue) = EventSink::channel();
    let h = start_full(FakeRuntime::new(), 110, None, events);
    let crash = pod("u2", "crash", "crash");
    h.set(&[&crash]);
    settle(35).await;
    h.stop().await;
    let mut back_offs = 0;
    while let Ok(recorded) = queue.try_recv() {
        if recorded.event.reason == "BackOff" {
            assert_eq!(recorded.event.container.as_deref(), Some("app"));
            back_offs += 1;
        }
    }
    // Back-offs of 10 s and 20 s were waited out, the third (40 s) is running.
    assert_eq!(back_offs, 3);
}

fn with_spec(uid: &str, name: &str, spec: &str) -> Arc<Pod> {
    Arc::new(
        serde_saphyr::from_str(&format!(
            "metadata: {{name: {name}, uid: {uid}, namespace: default}}
spec:
  terminationGracePeriodSeconds: 0
  {spec}
  containers:
  - {{name: app, image: busybox, command: [sleep], resources: {{requests: {{cpu: 600m}}}}}}"
        ))
        .expect("test pod parses"),
    )
}

fn status_of(h: &Harness, name: &str) -> (Option<String>, Option<String>) {
    h.store
        .snapshot()
        .into_iter()
        .find(|p| p.metadata.name.as_deref() == Some(name))
        .and_then(|p| p.status)
        .map_or((None, None), |s| (s.reason, s.message))
}

#[tokio::test(start_paused = true)]
async fn admission_rejects_what_does_not_fit_records_a_warning_and_rereads_the_node_for_affinity() {
    let facts = NodeFacts {
        node_name: "n1".into(),
        allocatable: [("cpu".to_string(), 1000)].into(),
        max_pods: 110,
        ..NodeFacts::default()
    };
    let (facts_tx, facts_rx) = watch::channel(facts.clone());
    let refresh = Arc::new(tokio::sync::Notify::new());
    let (events, mut queue) = EventSink::channel();
    let h = start_admitting(
        FakeRuntime::new(),
        110,
        None,
        events,
        Some(NodeFactsWatch {
            facts: facts_rx,
            refresh: Some(refresh.clone()),
        }),
        StatusStore::default(),
    );
    // Two pods of 600m on 1000m: the older one runs, the newer one is OutOfcpu.
    let mut older = (*with_spec("a", "older", "")).clone();
    older.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        "2026-01-01T00:00:00Z".parse().expect("time"),
    ));
    let mut newer = (*with_spec("0", "newer", "")).clone();
    newer.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        "2026-01-01T00:00:01Z".parse().expect("time"),
    ));
    let (older, newer) = (Arc::new(older), Arc::new(newer));
    let picky = with_spec("p", "picky", "nodeSelector: {disk: ssd}");
    h.set(&[&older, &newer, &picky]);
    settle(3).await;
    assert_eq!(h.phase("older").as_deref(), Some("Running"));
    assert_eq!(h.phase("newer").as_deref(), Some("Failed"));
    assert_eq!(
        status_of(&h, "newer"),
        (
            Some("OutOfcpu".into()),
            Some("Pod was rejected: Node didn't have enough resource: cpu, requested: 600, used: 600, capacity: 1000".into())
        )
    );
    assert!(
        h.runtime.actions("0").is_empty(),
        "a rejected pod was started"
    );
    // The selector is not met: the Node is read again before the pod is rejected.
    assert_eq!(h.phase("picky"), None);
    tokio::time::timeout(Duration::from_secs(1), refresh.notified())
        .await
        .expect("a refresh of the Node was asked for");
    // The Node read again has the label: the pod is admitted (and OutOfcpu, as older holds
    // 600m of 1000m) — the labels count, the resources still do.
    let mut labelled = facts.clone();
    labelled.labels = [("disk".to_string(), "ssd".to_string())].into();
    labelled.allocatable = [("cpu".to_string(), 2000)].into();
    labelled.fetched = 1;
    facts_tx.send_replace(labelled.clone());
    settle(3).await;
    assert_eq!(h.phase("picky").as_deref(), Some("Running"));
    // A pod whose selector the re-read Node does not meet is rejected for good.
    let pickier = with_spec("q", "pickier", "nodeSelector: {disk: nvme}");
    h.set(&[&older, &newer, &picky, &pickier]);
    settle(1).await;
    assert_eq!(h.phase("pickier"), None);
    labelled.fetched = 2;
    facts_tx.send_replace(labelled);
    settle(2).await;
    assert_eq!(
        status_of(&h, "pickier"),
        (
            Some("NodeAffinity".into()),
            Some("Pod was rejected: Predicate NodeAffinity failed: node(s) didn't match Pod's node affinity/selector".into())
        )
    );
    h.stop().await;
    let mut warnings = Vec::new();
    while let Ok(recorded) = queue.try_recv() {
        if recorded.event.type_ == super::events::EventType::Warning {
            warnings.push((
                recorded.event.reason.to_string(),
                recorded.pod.metadata.name.clone(),
            ));
        }
    }
    assert_eq!(
        warnings,
        [
            ("OutOfcpu".to_string(), Some("newer".to_string())),
            ("NodeAffinity".to_string(), Some("pickier".to_string())),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_running_pod_rejected_after_a_restart_is_stopped_and_keeps_its_rejection() {
    let runtime = FakeRuntime::new();
    let h = start(runtime.clone());
    let (a, b) = (pod("a", "a", "sleep"), pod("b", "b", "sleep"));
    h.set(&[&a, &b]);
    settle(3).await;
    h.stop().await;
    assert!(!runtime.observed("b").is_empty());
    let before = runtime.all_actions().len();

    // Back with room for one pod only: `b` (the newer by UID) no longer fits.
    let h = start_for_api(runtime.clone(), 1);
    h.set(&[&a, &b]);
    settle(5).await;
    let after: Vec<(String, Action)> = runtime.all_actions().split_off(before);
    assert!(
        after.iter().all(|(uid, _)| uid == "b"),
        "the admitted pod was touched: {after:?}"
    );
    assert!(
        runtime.observed("b").is_empty(),
        "the rejected pod still runs"
    );
    assert!(
        !after
            .iter()
            .any(|(_, a)| matches!(a, Action::CreateSandbox { .. })),
        "the rejected pod was started again: {after:?}"
    );
    let rejected = h
        .store
        .snapshot()
        .into_iter()
        .chain(h.store.terminated_pods())
        .find(|p| p.metadata.name.as_deref() == Some("b"))
        .and_then(|p| p.status)
        .expect("status of b");
    assert_eq!(rejected.phase.as_deref(), Some("Failed"));
    assert_eq!(rejected.reason.as_deref(), Some("OutOfpods"));
    assert_eq!(h.phase("a").as_deref(), Some("Running"));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn eviction_stops_the_pod_for_good_with_an_evicted_status_and_event() {
    let (events, mut queue) = EventSink::channel();
    let runtime = FakeRuntime::new();
    let store = StatusStore::keeping_final_statuses();
    let (desired, rx) = watch::channel(DesiredPods::new());
    let (evict, evictions) = tokio::sync::mpsc::channel(1);
    let cancel = CancellationToken::new();
    let manager = PodManager::new(
        runtime.clone(),
        store.clone(),
        WorkerConfig {
            sync_frequency: Duration::from_secs(60),
            retry_after: Duration::from_secs(1),
            host_ip: None,
            events,
            earlier_instances_kept: Some(1),
        },
        110,
    )
    .with_evictions(evictions);
    let task = tokio::spawn(manager.run(rx, cancel.clone()));
    let (hog, keep) = (pod("hog", "hog", "sleep"), pod("keep", "keep", "sleep"));
    let h = Harness {
        runtime,
        store,
        desired,
        cancel,
        task,
    };
    h.set(&[&hog, &keep]);
    settle(3).await;
    assert_eq!(h.phase("hog").as_deref(), Some("Running"));
    let message = "The node was low on resource: memory. ";
    evict
        .send(crate::eviction::Eviction {
            uid: "hog".into(),
            grace_period_seconds: 0,
            message: message.into(),
        })
        .await
        .expect("send");
    settle(5).await;
    assert!(
        h.runtime.actions("hog").contains(&Action::KillPod),
        "{:?}",
        h.runtime.actions("hog")
    );
    assert!(
        h.store
            .snapshot()
            .iter()
            .all(|p| p.metadata.name.as_deref() != Some("hog")),
        "the evicted pod is gone from the live pods"
    );
    let final_status = h
        .store
        .terminated_pods()
        .into_iter()
        .find(|p| p.metadata.name.as_deref() == Some("hog"))
        .and_then(|p| p.status)
        .expect("final status kept for the API");
    assert_eq!(final_status.phase.as_deref(), Some("Failed"));
    assert_eq!(final_status.reason.as_deref(), Some("Evicted"));
    assert_eq!(final_status.message.as_deref(), Some(message));
    // Still desired (an API pod is not deleted by the node): never started again.
    let started = |h: &Harness| {
        h.runtime
            .actions("hog")
            .iter()
            .filter(|a| matches!(a, Action::CreateSandbox { .. }))
            .count()
    };
    let before = started(&h);
    settle(30).await;
    assert_eq!(started(&h), before, "an evicted pod was started again");
    assert_eq!(h.phase("keep").as_deref(), Some("Running"));
    let mut evicted_events = 0;
    while let Ok(recorded) = queue.try_recv() {
        if recorded.event.reason == "Evicted" {
            assert_eq!(recorded.event.message, message);
            evicted_events += 1;
        }
    }
    assert_eq!(evicted_events, 1);
    h.stop().await;
}
