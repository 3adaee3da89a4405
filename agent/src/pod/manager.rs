//! The pod manager: turns the desired pod set (from the pod sources) into one worker per pod
//! UID, routes spec changes and deletions to them, relays PLEG events, and finds orphans — pods
//! on the runtime that no source wants any more (e.g. a manifest deleted while kwk-node was
//! down) — which it terminates. A static pod replaced by a new version (new UID, same name)
//! starts only once the old one has terminated, so the two never hold the same ports.
//!
//! A desired pod with a `deletionTimestamp` (deleted in the API, graceful) is terminated with
//! its `deletionGracePeriodSeconds`, once; it stays "done" until its source drops it. Orphans
//! are only looked for once every source has listed its pods (`with_sources_ready`), so pods
//! of a source that is still connecting are not taken for orphans.
//!
//! A pod seen for the first time is admitted first (`admission`, against the node facts of
//! `with_node_facts` and the pods already running, new pods in order of creation): a rejected
//! pod gets no worker; its status (phase `Failed`, upstream's reason and message) goes into the
//! status store and a Warning event is recorded. It stays rejected until its source drops it.
//! An API pod already in a terminal phase (e.g. rejected before kwk-node restarted) is not
//! started either.
//!
//! Evictions (`with_evictions`, from the eviction manager) are handled like a rejection of a
//! running pod: the status becomes `Failed`/`Evicted`, a Warning event is recorded, the worker
//! terminates the pod with the eviction's grace period, and the pod is never started again.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::admission::{self, NodeFacts};
use super::events::PodEvent;
use super::node_facts::NodeFactsWatch;
use super::pleg::{self, PodRecord, Relist};
use super::runtime::PodRuntime;
use super::spec;
use super::store::{self, StatusStore};
use super::worker::{self, Desired, Lifecycle, WorkerConfig, WorkerHandle};

/// The pods every source together wants on this node, by UID.
pub type DesiredPods = BTreeMap<String, Arc<Pod>>;

/// Runs the pod manager until `cancel`; workers are left running pods untouched on shutdown.
#[derive(Debug)]
pub struct PodManager<R> {
    runtime: R,
    store: StatusStore,
    config: WorkerConfig,
    workers: HashMap<String, WorkerHandle>,
    /// Desired pods waiting for an older pod of the same name to terminate.
    deferred: BTreeMap<String, Arc<Pod>>,
    /// Desired pods admission refused (or terminal in the API): never started.
    rejected: BTreeSet<String>,
    /// What admission checks pods against.
    node: watch::Receiver<NodeFacts>,
    /// Asks for the Node to be read again (with an apiserver).
    node_refresh: Option<Arc<Notify>>,
    /// Pods failing their node affinity alone, waiting for the Node to be read again: the
    /// `fetched` count they wait to see exceeded.
    affinity_recheck: BTreeMap<String, u64>,
    tracker: TaskTracker,
    /// The active pods last reported to the runtime (UID → the pod's `Arc` address, so an
    /// updated spec counts as a change).
    reported_active: BTreeMap<String, usize>,
    /// Deleting pods whose worker has terminated them; not started again.
    finished: BTreeSet<String>,
    /// Whether every pod source has delivered its first complete list.
    sources_ready: Option<watch::Receiver<bool>>,
    /// Pod UIDs the runtime had at the last relist.
    on_runtime: BTreeSet<String>,
    /// Pods to evict, from the eviction manager.
    evictions: Option<mpsc::Receiver<crate::eviction::Eviction>>,
}

impl<R: PodRuntime + Clone> PodManager<R> {
    /// A manager that runs at most `max_pods` pods (`maxPods`); more are rejected with
    /// `OutOfpods`, as the kubelet's admission does. Other resources, labels and taints are
    /// checked once [`with_node_facts`](Self::with_node_facts) supplies them.
    pub fn new(runtime: R, store: StatusStore, config: WorkerConfig, max_pods: usize) -> Self {
        let facts = NodeFacts {
            max_pods: i64::try_from(max_pods).unwrap_or(i64::MAX),
            ..NodeFacts::default()
        };
        Self {
            runtime,
            store,
            config,
            workers: HashMap::new(),
            deferred: BTreeMap::new(),
            rejected: BTreeSet::new(),
            node: watch::channel(facts).1,
            node_refresh: None,
            affinity_recheck: BTreeMap::new(),
            tracker: TaskTracker::new(),
            reported_active: BTreeMap::new(),
            finished: BTreeSet::new(),
            sources_ready: None,
            on_runtime: BTreeSet::new(),
            evictions: None,
        }
    }

    /// Admits pods against these node facts (and their updates).
    #[must_use]
    pub fn with_node_facts(mut self, node: NodeFactsWatch) -> Self {
        self.node = node.facts;
        self.node_refresh = node.refresh;
        self
    }

    /// Holds off the orphan search until `ready` is true (default: as soon as the first
    /// desired set arrives).
    #[must_use]
    pub fn with_sources_ready(mut self, ready: watch::Receiver<bool>) -> Self {
        self.sources_ready = Some(ready);
        self
    }

    /// Evicts the pods the eviction manager sends.
    #[must_use]
    pub fn with_evictions(mut self, evictions: mpsc::Receiver<crate::eviction::Eviction>) -> Self {
        self.evictions = Some(evictions);
        self
    }

    /// Runs until `cancel`, then waits for workers to stop between actions.
    pub async fn run(
        mut self,
        mut desired: watch::Receiver<DesiredPods>,
        cancel: CancellationToken,
    ) {
        let (done_tx, mut done_rx) = mpsc::unbounded_channel();
        let mut last_relist = Relist::new();
        let mut have_desired = false;
        let mut swept = false;
        let mut node_open = true;
        let mut sources_ready = self.sources_ready.take();
        let mut evictions = self.evictions.take();
        let mut ticker = tokio::time::interval(pleg::RELIST_PERIOD);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                changed = desired.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let pods = desired.borrow_and_update().clone();
                    have_desired = true;
                    if !swept && is_ready(sources_ready.as_ref()) {
                        // First word from all sources: terminate orphans before starting
                        // anything, so a new version of a static pod waits for the old one.
                        swept = true;
                        if let Some(relist) = self.sweep_orphans(&pods, &cancel, &done_tx).await {
                            last_relist = relist;
                        }
                    }
                    self.reconcile(&pods, &cancel, &done_tx);
                    if swept {
                        self.store.mark_synced();
                    }
                }
                () = wait_ready(sources_ready.as_mut()), if !swept => {
                    if have_desired {
                        swept = true;
                        let pods = desired.borrow().clone();
                        if let Some(relist) = self.sweep_orphans(&pods, &cancel, &done_tx).await {
                            last_relist = relist;
                        }
                        // Rejected pods that still run (rejected after a restart) stop.
                        self.reconcile(&pods, &cancel, &done_tx);
                        self.store.mark_synced();
                    } else {
                        // Ready before any desired set: the next desired set sweeps.
                        sources_ready = None;
                    }
                }
                changed = self.node.changed(), if node_open => {
                    if changed.is_err() {
                        // No more updates: the last facts stay.
                        node_open = false;
                        continue;
                    }
                    // Pods held back for their node affinity may fit the new labels.
                    if have_desired {
                        let pods = desired.borrow().clone();
                        self.reconcile(&pods, &cancel, &done_tx);
                    }
                }
                Some(eviction) = next_eviction(evictions.as_mut()) => {
                    self.evict(eviction);
                }
                Some(uid) = done_rx.recv() => {
                    self.workers.remove(&uid);
                    // Its worker cleaned it up: no longer on the runtime.
                    self.on_runtime.remove(&uid);
                    let pods = desired.borrow().clone();
                    if pods.get(&uid).is_some_and(|p| is_deleting(p)) {
                        self.finished.insert(uid);
                    }
                    self.reconcile(&pods, &cancel, &done_tx);
                }
                _ = ticker.tick() => {
                    // Orphans can only be told apart once the sources have spoken.
                    if !swept {
                        continue;
                    }
                    match self.runtime.relist().await {
                        Ok(relist) => {
                            for uid in pleg::changed_pods(&last_relist, &relist) {
                                if let Some(w) = self.workers.get(&uid) {
                                    w.poke();
                                } else if let Some(record) = relist.get(&uid) {
                                    self.terminate_orphan(&uid, record, &cancel, &done_tx);
                                }
                            }
                            self.on_runtime = relist.keys().cloned().collect();
                            last_relist = relist;
                        }
                        Err(err) => tracing::warn!(%err, "relist failed"),
                    }
                }
            }
        }
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// Terminates every pod on the runtime that no source wants and no worker owns; returns
    /// the relist it acted on.
    async fn sweep_orphans(
        &mut self,
        pods: &DesiredPods,
        cancel: &CancellationToken,
        done: &mpsc::UnboundedSender<String>,
    ) -> Option<Relist> {
        match self.runtime.relist().await {
            Ok(relist) => {
                self.on_runtime = relist.keys().cloned().collect();
                for (uid, record) in &relist {
                    if !pods.contains_key(uid) && !self.workers.contains_key(uid) {
                        self.terminate_orphan(uid, record, cancel, done);
                    }
                }
                Some(relist)
            }
            Err(err) => {
                tracing::warn!(%err, "initial relist failed");
                None
            }
        }
    }

    /// Starts, updates and terminates workers so they match the desired set.
    fn reconcile(
        &mut self,
        pods: &DesiredPods,
        cancel: &CancellationToken,
        done: &mpsc::UnboundedSender<String>,
    ) {
        for (uid, handle) in &self.workers {
            match pods.get(uid) {
                Some(pod) if is_deleting(pod) => {
                    if matches!(handle.desired(), Desired::Run(_)) {
                        tracing::info!(%uid, "pod deleted in the API; terminating");
                        handle.update(Desired::Terminate(with_deletion_grace(pod)));
                    }
                }
                Some(pod)
                    if handle.lifecycle() == Lifecycle::Syncing
                        && matches!(handle.desired(), Desired::Run(_)) =>
                {
                    if !Arc::ptr_eq(handle.desired().pod(), pod)
                        && **handle.desired().pod() != **pod
                    {
                        handle.update(Desired::Run(pod.clone()));
                    }
                }
                Some(_) => {}
                None => {
                    if matches!(handle.desired(), Desired::Run(_)) {
                        tracing::info!(%uid, "pod removed from its source; terminating");
                        handle.update(Desired::Terminate(handle.desired().pod().clone()));
                    }
                }
            }
        }
        // Names held by workers that are on their way out.
        let busy: BTreeSet<(String, String)> = self
            .workers
            .values()
            .filter(|w| matches!(w.desired(), Desired::Terminate(_)))
            .map(|w| full_name(w.desired().pod()))
            .collect();
        self.deferred.clear();
        let store = &self.store;
        self.rejected.retain(|uid| {
            let keep = pods.contains_key(uid);
            if !keep {
                store.remove(uid);
            }
            keep
        });
        self.finished.retain(|uid| pods.contains_key(uid));
        self.affinity_recheck
            .retain(|uid, _| pods.contains_key(uid));
        let node = self.node.borrow().clone();
        let mut admitted = self.admitted_pods(pods);
        for (uid, pod) in in_arrival_order(pods) {
            if self.workers.contains_key(uid) || self.finished.contains(uid) {
                continue;
            }
            if self.rejected.contains(uid) && !is_deleting(pod) {
                self.stop_if_running(uid, pod, cancel, done);
                continue;
            }
            if is_deleting(pod) {
                // Deleted before it ran here (or while kwk-node was down): make sure nothing
                // of it runs, once. Until it has stopped the pod counts as here (its API
                // status stands), so it is not deleted from the API before.
                self.store
                    .set_if_absent(pod, pod.status.clone().unwrap_or_default());
                let handle = self.spawn(Desired::Terminate(with_deletion_grace(pod)), cancel, done);
                self.workers.insert(uid.clone(), handle);
                continue;
            }
            if busy.contains(&full_name(pod)) {
                self.deferred.insert(uid.clone(), pod.clone());
                continue;
            }
            if is_terminal_in_api(pod) {
                tracing::info!(pod = %spec::name(pod), %uid, "pod already terminal in the API; not started");
                self.rejected.insert(uid.clone());
                continue;
            }
            let others: Vec<&Pod> = admitted.iter().map(|p| p.as_ref()).collect();
            if let Err(rejection) = admission::admit(&node, &others, pod) {
                if rejection.is_node_affinity()
                    && let Some(refresh) = &self.node_refresh
                {
                    // Upstream reads the Node again before rejecting for affinity alone (the
                    // labels may have just changed): so do we, once per pod.
                    let asked = *self.affinity_recheck.entry(uid.clone()).or_insert_with(|| {
                        refresh.notify_one();
                        node.fetched
                    });
                    if node.fetched == asked {
                        tracing::debug!(pod = %spec::name(pod), %uid, "node affinity unmet; reading the Node again");
                        continue;
                    }
                }
                self.affinity_recheck.remove(uid);
                tracing::warn!(pod = %spec::name(pod), %uid, reason = %rejection.reason, message = %rejection.message, "pod rejected");
                self.rejected.insert(uid.clone());
                self.store
                    .set(pod, admission::rejected_status(pod, &rejection));
                self.config
                    .events
                    .emit(pod, PodEvent::rejected(rejection.reason, rejection.message));
                self.stop_if_running(uid, pod, cancel, done);
                continue;
            }
            self.affinity_recheck.remove(uid);
            admitted.push(pod.clone());
            tracing::info!(pod = %spec::name(pod), %uid, "starting pod worker");
            let handle = self.spawn(Desired::Run(pod.clone()), cancel, done);
            self.workers.insert(uid.clone(), handle);
        }
        self.report_active_pods();
    }

    /// The pods admission counts as on the node: desired pods with a worker whose status is
    /// not terminal (`Succeeded`/`Failed` pods hold no resources, as upstream's active pods).
    fn admitted_pods(&self, pods: &DesiredPods) -> Vec<Arc<Pod>> {
        let terminal: BTreeSet<String> = self
            .store
            .snapshot()
            .into_iter()
            .filter(|p| p.status.as_ref().is_some_and(store::is_terminal))
            .filter_map(|p| p.metadata.uid)
            .collect();
        // Terminating pods still hold what they requested until they are gone; orphans (no
        // longer desired) are not counted, as upstream's pod manager does not know them.
        self.workers
            .keys()
            .filter(|uid| !terminal.contains(*uid))
            .filter_map(|uid| pods.get(uid).cloned())
            .collect()
    }

    /// Tells the runtime the pods to run (workers syncing them), when that set changed. The
    /// workers just spawned have not created anything yet, so node-wide settings are in place
    /// before their pods start.
    fn report_active_pods(&mut self) {
        let active: Vec<Arc<Pod>> = self
            .workers
            .values()
            .filter_map(|w| match w.desired() {
                Desired::Run(pod) => Some(pod),
                Desired::Terminate(_) => None,
            })
            .collect();
        let key: BTreeMap<String, usize> = active
            .iter()
            .map(|pod| (spec::uid(pod).to_string(), Arc::as_ptr(pod) as usize))
            .collect();
        if key == self.reported_active {
            return;
        }
        let pods: Vec<&Pod> = active.iter().map(|pod| pod.as_ref()).collect();
        self.runtime.active_pods_changed(&pods);
        self.reported_active = key;
    }

    /// Evicts a running pod: `Failed`/`Evicted` status, a Warning event, terminated with the
    /// eviction's grace period, never started again. A pod already terminating is left alone.
    fn evict(&mut self, eviction: crate::eviction::Eviction) {
        let uid = eviction.uid;
        let Some(handle) = self.workers.get(&uid) else {
            tracing::info!(%uid, "pod to evict has no worker; ignored");
            return;
        };
        let Desired::Run(pod) = handle.desired() else {
            return;
        };
        tracing::warn!(pod = %spec::name(&pod), %uid, message = %eviction.message, "evicting pod");
        let current = self
            .store
            .snapshot()
            .into_iter()
            .find(|p| p.metadata.uid.as_deref() == Some(uid.as_str()))
            .and_then(|p| p.status);
        let now = k8s_openapi::jiff::Timestamp::now();
        self.store.set(
            &pod,
            crate::eviction::evicted_status(current, &eviction.message, now),
        );
        self.config
            .events
            .emit(&pod, crate::eviction::evicted_event(&eviction.message));
        let mut stopping = (*pod).clone();
        stopping
            .spec
            .get_or_insert_with(Default::default)
            .termination_grace_period_seconds = Some(eviction.grace_period_seconds.max(0));
        handle.update(Desired::Terminate(Arc::new(stopping)));
        self.rejected.insert(uid);
        self.report_active_pods();
    }

    /// Stops what runs of a pod that must not run (rejected again after a restart, say);
    /// its status stays as it is.
    fn stop_if_running(
        &mut self,
        uid: &str,
        pod: &Arc<Pod>,
        cancel: &CancellationToken,
        done: &mpsc::UnboundedSender<String>,
    ) {
        if self.on_runtime.remove(uid) {
            tracing::info!(pod = %spec::name(pod), %uid, "rejected pod still runs; stopping it");
            let handle = self.spawn(Desired::Terminate(pod.clone()), cancel, done);
            self.workers.insert(uid.to_string(), handle);
        }
    }

    fn terminate_orphan(
        &mut self,
        uid: &str,
        record: &PodRecord,
        cancel: &CancellationToken,
        done: &mpsc::UnboundedSender<String>,
    ) {
        tracing::info!(pod = %record.name, %uid, "pod on the runtime that no source wants; terminating");
        let pod = Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(record.name.clone()),
                namespace: Some(record.namespace.clone()),
                uid: Some(uid.to_string()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                termination_grace_period_seconds: record.grace_seconds,
                ..Default::default()
            }),
            status: None,
        });
        let handle = self.spawn(Desired::Terminate(pod), cancel, done);
        self.workers.insert(uid.to_string(), handle);
    }

    fn spawn(
        &self,
        desired: Desired,
        cancel: &CancellationToken,
        done: &mpsc::UnboundedSender<String>,
    ) -> WorkerHandle {
        worker::spawn(
            desired,
            self.runtime.clone(),
            self.store.clone(),
            self.config.clone(),
            cancel.child_token(),
            done.clone(),
            &self.tracker,
        )
    }
}

/// The desired pods, oldest first (`creationTimestamp`, then UID), as upstream admits a
/// batch of new pods.
fn in_arrival_order(pods: &DesiredPods) -> Vec<(&String, &Arc<Pod>)> {
    let mut ordered: Vec<(&String, &Arc<Pod>)> = pods.iter().collect();
    ordered.sort_by(|(a_uid, a), (b_uid, b)| {
        let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
        created(a).cmp(&created(b)).then_with(|| a_uid.cmp(b_uid))
    });
    ordered
}

/// Whether an API pod's own status already says it is over (`Failed` or `Succeeded`).
fn is_terminal_in_api(pod: &Pod) -> bool {
    !admission::is_static(pod) && pod.status.as_ref().is_some_and(store::is_terminal)
}

/// Whether the pod is being deleted in the API (`metadata.deletionTimestamp`).
pub fn is_deleting(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// The pod to terminate a deleting pod with: its grace period is the deletion's
/// (`deletionGracePeriodSeconds`), as the kubelet's.
fn with_deletion_grace(pod: &Arc<Pod>) -> Arc<Pod> {
    let Some(grace) = pod.metadata.deletion_grace_period_seconds else {
        return pod.clone();
    };
    let mut pod = (**pod).clone();
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.termination_grace_period_seconds = Some(grace.max(0));
    Arc::new(pod)
}

/// The next eviction; never when there is no channel or it closed.
async fn next_eviction(
    evictions: Option<&mut mpsc::Receiver<crate::eviction::Eviction>>,
) -> Option<crate::eviction::Eviction> {
    match evictions {
        Some(rx) => match rx.recv().await {
            Some(e) => Some(e),
            None => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

fn is_ready(ready: Option<&watch::Receiver<bool>>) -> bool {
    ready.is_none_or(|r| *r.borrow())
}

/// Resolves once `ready` turns true; never when there is none or its sender is gone.
async fn wait_ready(ready: Option<&mut watch::Receiver<bool>>) {
    match ready {
        Some(rx) => {
            if rx.wait_for(|r| *r).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}

fn full_name(pod: &Pod) -> (String, String) {
    (
        spec::namespace(pod).to_string(),
        spec::name(pod).to_string(),
    )
}
