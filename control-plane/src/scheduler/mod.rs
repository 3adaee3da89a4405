//! The running scheduler (`kwk-control-plane scheduler`): watches pods, nodes, namespaces and
//! PodDisruptionBudgets into a [`state::SchedulerState`], and schedules one pending pod at a
//! time with the `kwk-scheduler` algorithm: a fitting pod is assumed on its node and bound
//! asynchronously (a failed binding takes the assumption back and backs the pod off); a pod
//! that fits nowhere gets a `FailedScheduling` event and a `PodScheduled=False` condition,
//! and may preempt lower-priority pods (nominated node, victims deleted). Under leader
//! election on `kube-system/kube-scheduler` by default.
//!
//! Services, ReplicaSets and StatefulSets are watched for their
//! selectors ([`spread`]: upstream's system default topology spreading).
//!
//! Pods nominated by preemption count on their node for pods of lower or equal priority.
//!
//! Pods with PersistentVolumeClaims go through VolumeBinding ([`volumes`]): claims, volumes
//! and StorageClasses are watched, WaitForFirstConsumer claims get a volume on the chosen
//! node, written before the pod's binding.
//!
//! Not (yet) upstream: there is one
//! profile, ReplicationControllers (not served by the apiserver) do not count for default
//! spreading, no extenders or permit plugins, and no dynamic provisioning.

pub mod spread;
pub mod state;
pub mod volumes;
pub mod writes;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::{ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Node, PersistentVolume, Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kwk_controllers::action::EventType;
use kwk_controllers::runtime::{LeaderElector, LeaderError, LeaseConfig};
use kwk_scheduler::plugins::volume_binding::Binding;
use kwk_scheduler::queue::QueuedPod;
use kwk_scheduler::{Config, FitError, Scheduler, preemption};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use spread::SelectorKind;
use state::SchedulerState;

/// The scheduler name pods ask for by default (`spec.schedulerName`).
pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";

/// How the scheduler runs.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// The `spec.schedulerName` this scheduler serves.
    pub scheduler_name: String,
    /// The profile (plugin weights, scoring strategy ...).
    pub config: Config,
    /// Schedule only while holding this Lease; `None`: always.
    pub leader_election: Option<LeaseConfig>,
    /// `reportingInstance` of the events (the lease identity by default).
    pub instance: String,
    /// Seed of the tie-break random generator.
    pub seed: u64,
    /// How long PreBind waits for the pv controller to bind a pod's claims
    /// (upstream's `bindTimeoutSeconds`).
    pub bind_timeout: Duration,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        let lease = LeaseConfig::new("kube-system", "kube-scheduler");
        SchedulerOptions {
            scheduler_name: DEFAULT_SCHEDULER_NAME.into(),
            config: Config::default(),
            instance: lease.identity.clone(),
            leader_election: Some(lease),
            seed: u64::from(std::process::id()) ^ Timestamp::now().as_nanosecond() as u64,
            bind_timeout: Duration::from_secs(600),
        }
    }
}

/// Why the scheduler stopped other than by cancellation.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error(transparent)]
    Leader(#[from] LeaderError),
}

/// Runs the scheduler until `token` is cancelled (`Ok`), or until the leader Lease is lost
/// (`Err`: the caller must exit, like upstream).
pub async fn run(
    client: kube::Client,
    options: SchedulerOptions,
    token: CancellationToken,
) -> Result<(), SchedulerError> {
    match options.leader_election.clone() {
        Some(lease) => {
            let elector = LeaderElector::new(client.clone(), lease);
            elector
                .run(token, |leading| run_leading(client, options, leading))
                .await?;
        }
        None => run_leading(client, options, token).await,
    }
    Ok(())
}

/// What the watches and the scheduling loop share.
struct Shared {
    state: Mutex<SchedulerState>,
    /// Woken when the queue may have gained a pod.
    wake: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, SchedulerState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Feeds one watched kind into the state until `token` is cancelled; `apply` and `delete`
/// return whether the queue may have a new pod.
/// After each (re-)list, `prune` gets the `namespace/name` (or `name`) keys listed.
async fn watch_kind<K, A, D, P>(
    api: Api<K>,
    shared: Arc<Shared>,
    token: CancellationToken,
    synced: tokio::sync::oneshot::Sender<()>,
    apply: A,
    delete: D,
    prune: P,
) where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
    A: Fn(&mut SchedulerState, K, Timestamp) -> bool,
    D: Fn(&mut SchedulerState, &K, Timestamp) -> bool,
    P: Fn(&mut SchedulerState, &HashSet<String>, Timestamp) -> bool,
{
    let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
    let mut stream: std::pin::Pin<Box<dyn Stream<Item = _> + Send>> = Box::pin(stream);
    let mut synced = Some(synced);
    let mut listed = HashSet::new();
    loop {
        let next = tokio::select! {
            () = token.cancelled() => return,
            next = stream.next() => next,
        };
        let event = match next {
            None => return,
            Some(Ok(event)) => event,
            Some(Err(err)) => {
                tracing::warn!("scheduler watch: {err}");
                continue;
            }
        };
        let now = Timestamp::now();
        let woke = match event {
            Event::Apply(object) => apply(&mut shared.lock(), object, now),
            Event::InitApply(object) => {
                listed.insert(listed_key(&object));
                apply(&mut shared.lock(), object, now)
            }
            Event::Delete(object) => delete(&mut shared.lock(), &object, now),
            Event::Init => {
                listed.clear();
                false
            }
            Event::InitDone => {
                let woke = prune(&mut shared.lock(), &listed, now);
                listed.clear();
                if let Some(synced) = synced.take() {
                    let _ = synced.send(());
                }
                woke
            }
        };
        if woke {
            shared.wake.notify_one();
        }
    }
}

/// `namespace/name`, or `name` for cluster-scoped objects (the keys [`SchedulerState`] uses).
fn listed_key<K: kube::Resource>(object: &K) -> String {
    let meta = object.meta();
    let name = meta.name.as_deref().unwrap_or("");
    match &meta.namespace {
        Some(namespace) => format!("{namespace}/{name}"),
        None => name.to_string(),
    }
}

/// The scheduler while it may act: watches plus the scheduling loop.
async fn run_leading(client: kube::Client, options: SchedulerOptions, token: CancellationToken) {
    tracing::info!(scheduler = %options.scheduler_name, "scheduler started");
    let shared = Arc::new(Shared {
        state: Mutex::new(SchedulerState::new(&options.scheduler_name)),
        wake: Notify::new(),
    });
    let watches = token.child_token();
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..7)
        .map(|_| tokio::sync::oneshot::channel::<()>())
        .unzip();
    let mut senders = senders.into_iter();
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(watch_kind(
        Api::<Node>::all(client.clone()),
        shared.clone(),
        watches.clone(),
        senders
            .next()
            .unwrap_or_else(|| tokio::sync::oneshot::channel().0),
        |s, node, now| s.apply_node(node, now),
        |s, node, _| {
            s.delete_node(node);
            false
        },
        |s, listed, _| {
            s.prune_nodes(listed);
            false
        },
    ));
    tasks.spawn(watch_kind(
        Api::<Namespace>::all(client.clone()),
        shared.clone(),
        watches.clone(),
        senders
            .next()
            .unwrap_or_else(|| tokio::sync::oneshot::channel().0),
        |s, ns, _| {
            s.apply_namespace(ns);
            false
        },
        |_, _, _| false,
        |_, _, _| false,
    ));
    tasks.spawn(watch_kind(
        Api::<PodDisruptionBudget>::all(client.clone()),
        shared.clone(),
        watches.clone(),
        senders
            .next()
            .unwrap_or_else(|| tokio::sync::oneshot::channel().0),
        |s, pdb, _| {
            s.apply_pdb(pdb);
            false
        },
        |s, pdb, _| {
            s.delete_pdb(pdb);
            false
        },
        |s, listed, _| {
            s.prune_pdbs(listed);
            false
        },
    ));
    tasks.spawn(watch_kind(
        Api::<Pod>::all(client.clone()),
        shared.clone(),
        watches.clone(),
        senders
            .next()
            .unwrap_or_else(|| tokio::sync::oneshot::channel().0),
        |s, pod, now| s.apply_pod(pod, now),
        |s, pod, now| s.delete_pod(pod, now),
        |s, listed, now| s.prune_pods(listed, now),
    ));
    volumes::spawn_watches(&mut tasks, &client, &shared, &watches, &mut senders);
    spawn_selector_watch(
        &mut tasks,
        Api::<Service>::all(client.clone()),
        SelectorKind::Service,
        |svc| spread::from_map(svc.spec.as_ref().and_then(|s| s.selector.as_ref())),
        (&shared, &watches, &mut senders),
    );
    spawn_selector_watch(
        &mut tasks,
        Api::<ReplicaSet>::all(client.clone()),
        SelectorKind::ReplicaSet,
        |rs| rs.spec.as_ref().map(|s| s.selector.clone()),
        (&shared, &watches, &mut senders),
    );
    spawn_selector_watch(
        &mut tasks,
        Api::<StatefulSet>::all(client.clone()),
        SelectorKind::StatefulSet,
        |ss| ss.spec.as_ref().map(|s| s.selector.clone()),
        (&shared, &watches, &mut senders),
    );
    // Like upstream, decide only once every cache has its initial list.
    let all_synced = futures::future::join_all(receivers);
    tokio::select! {
        () = token.cancelled() => {}
        _ = all_synced => tracing::info!("scheduler caches synced"),
    }
    let mut scheduler = Scheduler::new(options.config.clone(), options.seed);
    let options = Arc::new(options);
    while !token.is_cancelled() {
        let popped = shared.lock().queue.pop(Timestamp::now());
        match popped {
            Some(queued) => schedule_one(&client, &options, &shared, &mut scheduler, queued),
            None => {
                // Backoff expiry is time-driven: look again at least every 200 ms.
                tokio::select! {
                    () = token.cancelled() => break,
                    () = shared.wake.notified() => {}
                    () = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
        }
    }
    watches.cancel();
    while tasks.join_next().await.is_some() {}
    tracing::info!(scheduler = %options.scheduler_name, "scheduler stopped");
}

type Oneshots<'a> = &'a mut std::vec::IntoIter<tokio::sync::oneshot::Sender<()>>;

/// Watches one kind of object whose selector feeds the default spreading.
fn spawn_selector_watch<K>(
    tasks: &mut tokio::task::JoinSet<()>,
    api: Api<K>,
    kind: SelectorKind,
    selector_of: fn(&K) -> Option<LabelSelector>,
    (shared, token, senders): (&Arc<Shared>, &CancellationToken, Oneshots<'_>),
) where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let key = |object: &K| {
        let meta = object.meta();
        (
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
        )
    };
    tasks.spawn(watch_kind(
        api,
        shared.clone(),
        token.clone(),
        senders
            .next()
            .unwrap_or_else(|| tokio::sync::oneshot::channel().0),
        move |s, object, _| {
            let (namespace, name) = key(&object);
            s.spread.set(kind, &namespace, &name, selector_of(&object));
            false
        },
        move |s, object, _| {
            let (namespace, name) = key(object);
            s.spread.set(kind, &namespace, &name, None);
            false
        },
        move |s, listed, _| {
            s.spread.prune(kind, listed);
            false
        },
    ));
}

/// One scheduling cycle for `queued`; the API writes it causes run in the background.
fn schedule_one(
    client: &kube::Client,
    options: &Arc<SchedulerOptions>,
    shared: &Arc<Shared>,
    scheduler: &mut Scheduler,
    queued: QueuedPod,
) {
    let QueuedPod { pod, key, .. } = queued;
    let mut state = shared.lock();
    let default_spread = state.spread.selector_for(
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.labels.as_ref().unwrap_or(&BTreeMap::new()),
    );
    let with_nominated = state.snapshot_with_nominated(&pod, &key);
    let snapshot = with_nominated.as_ref().unwrap_or(&state.snapshot);
    let decision = match scheduler.schedule_with(pod.clone(), snapshot, default_spread.as_ref()) {
        Ok(result) => Ok(result),
        Err(fit_error) => {
            let pdbs: Vec<PodDisruptionBudget> = state.pdbs.values().cloned().collect();
            Err(
                match preemption::preempt(&pod, snapshot, &fit_error, &pdbs) {
                    Ok(p) => (fit_error, Some(p)),
                    Err(msg) => (fit_error.with_post_filter(msg), None),
                },
            )
        }
    };
    drop(with_nominated);
    match decision {
        Ok(result) => {
            state.assume(&pod, &result.node);
            let volumes = state.assume_volumes(&result.volume_bindings);
            drop(state);
            tokio::spawn(bind_in_background(
                client.clone(),
                options.clone(),
                shared.clone(),
                Assumed {
                    pod,
                    key,
                    node: result.node,
                    bindings: result.volume_bindings,
                    volumes,
                },
            ));
        }
        Err((fit_error, preemption)) => {
            if let Some(p) = &preemption {
                state.nominate(&pod, &p.nominated_node);
            }
            state.queue.add_unschedulable(&key, Timestamp::now());
            drop(state);
            tracing::info!(pod = %key, "unschedulable: {}", fit_error.message());
            tokio::spawn(report_unschedulable(
                client.clone(),
                options.clone(),
                pod,
                fit_error,
                preemption,
            ));
        }
    }
}

/// A decision assumed in the state, to be written.
struct Assumed {
    pod: Arc<Pod>,
    key: String,
    node: String,
    /// The volumes for the pod's WaitForFirstConsumer claims, and those volumes as they
    /// are to be written.
    bindings: Vec<Binding>,
    volumes: Vec<PersistentVolume>,
}

/// Binds the assumed pod (after its volumes); on failure takes the assumptions back and
/// backs the pod off.
async fn bind_in_background(
    client: kube::Client,
    options: Arc<SchedulerOptions>,
    shared: Arc<Shared>,
    assumed: Assumed,
) {
    let Assumed {
        pod,
        key,
        node,
        bindings,
        volumes,
    } = assumed;
    if !bindings.is_empty()
        && let Err(err) = volumes::pre_bind(
            &client,
            &shared,
            &key,
            &bindings,
            volumes,
            options.bind_timeout,
        )
        .await
    {
        tracing::warn!(pod = %key, %node, "binding volumes failed: {err}");
        {
            let mut state = shared.lock();
            state.restore_volumes(&bindings);
            state.forget(&key);
            state.queue.backoff(&key, Timestamp::now());
        }
        let message = format!("running PreBind plugin \"VolumeBinding\": binding volumes: {err}");
        writes::record_event(
            &client,
            &options.instance,
            &pod,
            EventType::Warning,
            "FailedScheduling",
            &message,
        )
        .await;
        return;
    }
    match writes::bind(&client, &pod, &node).await {
        Ok(()) => {
            shared.lock().queue.done(&key);
            let message = format!("Successfully assigned {key} to {node}");
            writes::record_event(
                &client,
                &options.instance,
                &pod,
                EventType::Normal,
                "Scheduled",
                &message,
            )
            .await;
        }
        Err(err) => {
            tracing::warn!(pod = %key, %node, "binding failed: {err}");
            let mut state = shared.lock();
            state.restore_volumes(&bindings);
            state.forget(&key);
            state.queue.backoff(&key, Timestamp::now());
        }
    }
}

/// Records why the pod does not fit, and carries out a preemption.
async fn report_unschedulable(
    client: kube::Client,
    options: Arc<SchedulerOptions>,
    pod: Arc<Pod>,
    fit_error: FitError,
    preemption: Option<preemption::Preemption>,
) {
    let message = fit_error.message();
    writes::record_event(
        &client,
        &options.instance,
        &pod,
        EventType::Warning,
        "FailedScheduling",
        &message,
    )
    .await;
    let nominated = preemption.as_ref().map(|p| p.nominated_node.as_str());
    if let Some(patch) = writes::unschedulable_patch(&pod, &message, nominated, Timestamp::now()) {
        writes::patch_status(&client, &pod, &patch).await;
    }
    if let Some(preemption) = preemption {
        for victim in &preemption.victims {
            writes::preempt_victim(
                &client,
                &options.instance,
                &options.scheduler_name,
                &pod,
                victim,
                &preemption.nominated_node,
            )
            .await;
        }
    }
}
