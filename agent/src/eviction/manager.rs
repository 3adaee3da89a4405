//! The eviction manager's thin executor: observe, decide ([`super::plan`], [`super::rank`]),
//! publish the pressure conditions, evict the pods over their local storage limits
//! ([`super::local_storage`], measured every round; the same figures rank pods for disk
//! pressure) or else hand at most one node-pressure victim to the pod manager, wait for them
//! to be gone, and sleep until the memory notifier ([`super::notify`]), the next housekeeping
//! (10 s, upstream's `evictionMonitoringPeriod`) or a grace period / transition period ending.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Eviction;
use super::Pressures;
use super::local_storage;
use super::notify::MemoryNotifier;
use super::observe::{NodeObserver, UsageSource};
use super::plan::{self, Decision, State};
use super::rank;
use super::signals::{Condition, EvictionConfig, Signal};
use crate::cgroups::node_memory::NodeMemorySource;
use crate::pod::store::{self, StatusStore};

/// Upstream's housekeeping interval: the fallback when no kernel notification comes.
pub const MONITORING_PERIOD: Duration = Duration::from_secs(10);
/// How long to wait for an evicted pod to be gone before deciding again (upstream's
/// `podCleanupTimeout`).
pub const POD_CLEANUP_TIMEOUT: Duration = Duration::from_secs(30);

/// What one decision led to, for logs, tests and the bench.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub decision: Decision,
    pub victim: Option<rank::Victim>,
    /// Pods evicted for their local storage use (then no node-pressure victim is chosen).
    pub local_storage: Vec<Eviction>,
}

/// The eviction manager.
#[derive(Debug)]
pub struct EvictionManager<U> {
    pub config: EvictionConfig,
    pub observer: NodeObserver,
    pub usage: U,
    pub store: StatusStore,
    /// Where victims go: the pod manager.
    pub evict: mpsc::Sender<Eviction>,
    /// The pressure conditions, for the Node status.
    pub pressures: watch::Sender<Pressures>,
    /// Kernel wake-ups (none: polling only).
    pub notifier: Option<MemoryNotifier>,
    /// What the notifier pokes.
    pub wake: Arc<Notify>,
    /// The monitoring period (tests shorten it).
    pub period: Duration,
}

impl<U: UsageSource> EvictionManager<U> {
    /// Runs until `cancel`.
    pub async fn run(mut self, cancel: CancellationToken) {
        let epoch = Instant::now();
        let mut state = State::default();
        loop {
            if cancel.is_cancelled() {
                return;
            }
            let outcome = tokio::select! {
                () = cancel.cancelled() => return,
                outcome = self.decide_once(&mut state, epoch.elapsed()) => outcome,
            };
            let evicted: Vec<&str> = outcome
                .victim
                .iter()
                .map(|v| v.uid.as_str())
                .chain(outcome.local_storage.iter().map(|e| e.uid.as_str()))
                .collect();
            if !evicted.is_empty() {
                self.wait_gone(&evicted, &cancel).await;
                continue;
            }
            let wait = outcome
                .decision
                .requeue_after
                .map_or(self.period, |r| r.min(self.period));
            tokio::select! {
                () = cancel.cancelled() => return,
                () = self.wake.notified() => tracing::debug!("eviction round: memory notification"),
                () = tokio::time::sleep(wait) => tracing::debug!("eviction round: timer"),
            }
        }
    }

    /// One round: observe, decide, publish, hand over a victim. `now` is on the planner's
    /// clock.
    pub async fn decide_once(&mut self, state: &mut State, now: Duration) -> Outcome {
        let observations = self.observer.observe();
        let decision = plan::evaluate(&self.config, &observations, state, now);
        tracing::debug!(
            memory_available = observations
                .get(&Signal::MemoryAvailable)
                .map(|o| o.available),
            to_reclaim = decision.to_reclaim.len(),
            "eviction decision"
        );
        state.clone_from(&decision.state);
        let pressures = Pressures {
            memory: decision.conditions.contains(&Condition::Memory),
            disk: decision.conditions.contains(&Condition::Disk),
            pid: decision.conditions.contains(&Condition::Pid),
        };
        self.pressures.send_if_modified(|current| {
            let changed = *current != pressures;
            if changed {
                tracing::info!(?pressures, "node pressure changed");
                *current = pressures;
            }
            changed
        });
        if let (Some(notifier), Some(threshold), Some(memory)) = (
            self.notifier.as_mut(),
            self.config.memory_threshold(),
            observations.get(&Signal::MemoryAvailable),
        ) && let Err(err) = notifier.arm(memory.available, threshold.value.of(memory.capacity))
        {
            tracing::warn!(err = %crate::eviction::chain(&err), "memory notifier not armed; polling only");
            self.notifier = None;
        }
        let pods = active_pods(&self.store);
        let dedicated_image_fs = self.observer.dedicated_image_fs().is_some();
        let storage = if pods.is_empty() {
            None
        } else {
            self.usage.pod_storage(pods.clone()).await
        };
        let local_storage = self
            .local_storage_evictions(&pods, storage.as_ref(), dedicated_image_fs)
            .await;
        if !local_storage.is_empty() {
            return Outcome {
                decision,
                victim: None,
                local_storage,
            };
        }
        let mut victim = None;
        for threshold in &decision.to_reclaim {
            let Some(observation) = observations.get(&threshold.signal).copied() else {
                continue;
            };
            let refs: Vec<&Pod> = pods.iter().collect();
            let mut usage = if refs.is_empty() {
                BTreeMap::new()
            } else {
                self.usage.pod_usage().await
            };
            if let Some(storage) = &storage {
                local_storage::rank_disk_usage(
                    &mut usage,
                    storage,
                    threshold.signal,
                    dedicated_image_fs,
                );
            }
            tracing::warn!(
                signal = %threshold.signal,
                available = observation.available,
                "eviction threshold met; looking for a pod to evict"
            );
            match rank::choose_victim(
                threshold,
                observation,
                &refs,
                &usage,
                self.config.max_pod_grace_period_seconds,
            ) {
                Some(chosen) => {
                    tracing::warn!(uid = %chosen.uid, message = %chosen.message, "evicting pod");
                    let eviction = Eviction {
                        uid: chosen.uid.clone(),
                        grace_period_seconds: chosen.grace_period_seconds,
                        message: chosen.message.clone(),
                    };
                    if self.evict.send(eviction).await.is_err() {
                        tracing::warn!("pod manager gone; eviction dropped");
                    }
                    victim = Some(chosen);
                    break;
                }
                None => tracing::warn!(signal = %threshold.signal, "no pod may be evicted"),
            }
        }
        Outcome {
            decision,
            victim,
            local_storage: Vec::new(),
        }
    }

    /// Hands the active `pods` whose measured local `storage` is over their limits to the pod
    /// manager (upstream's `localStorageEviction`).
    async fn local_storage_evictions(
        &self,
        pods: &[Pod],
        storage: Option<&BTreeMap<String, local_storage::PodStorage>>,
        dedicated_image_fs: bool,
    ) -> Vec<Eviction> {
        let Some(storage) = storage else {
            return Vec::new();
        };
        let refs: Vec<&Pod> = pods.iter().collect();
        let evictions = local_storage::plan(&refs, storage, dedicated_image_fs);
        for eviction in &evictions {
            tracing::warn!(uid = %eviction.uid, message = %eviction.message, "evicting pod for its local storage use");
            if self.evict.send(eviction.clone()).await.is_err() {
                tracing::warn!("pod manager gone; eviction dropped");
            }
        }
        evictions
    }

    /// Waits until none of `uids` runs (their status store entries are gone or they ended), at
    /// most [`POD_CLEANUP_TIMEOUT`].
    async fn wait_gone(&self, uids: &[&str], cancel: &CancellationToken) {
        let mut changes = self.store.subscribe();
        let deadline = tokio::time::sleep(POD_CLEANUP_TIMEOUT);
        tokio::pin!(deadline);
        loop {
            let running = self
                .store
                .snapshot()
                .iter()
                .any(|p| p.metadata.uid.as_deref().is_some_and(|u| uids.contains(&u)));
            if !running {
                return;
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = &mut deadline => {
                    tracing::warn!(?uids, "evicted pod not cleaned up in time; deciding again");
                    return;
                }
                changed = changes.changed() => if changed.is_err() { return; }
            }
        }
    }
}

/// Starts the eviction manager of kwk-node on `tasks`: thresholds from `config`, signals of the
/// root dir's and the runtime's image filesystems, pod usage from `cri`, the kernel notifier of
/// the host's cgroups. Returns the pressure conditions for the Node status.
pub async fn spawn(
    config: &crate::config::KubeletConfig,
    node: &crate::node::NodeOptions,
    cri: &kwk_cri::CriClient,
    store: StatusStore,
    evict: mpsc::Sender<Eviction>,
    tasks: &tokio_util::task::TaskTracker,
    cancel: &CancellationToken,
) -> watch::Receiver<Pressures> {
    let (eviction_config, ignored) = EvictionConfig::from_kubelet(config);
    if !ignored.is_empty() {
        tracing::info!(signals = ?ignored, "eviction signals kwk-node does not act on");
    }
    let image_fs = match cri.image_fs_info().await {
        Ok(info) => info
            .image_filesystems
            .first()
            .and_then(|fs| fs.fs_id.as_ref())
            .map(|id| std::path::PathBuf::from(&id.mountpoint)),
        Err(err) => {
            tracing::warn!(%err, "ImageFsInfo failed; imagefs taken for the nodefs");
            None
        }
    };
    let wake = Arc::new(Notify::new());
    let pods_cgroup = if config.cgroup_root == "/" {
        "kubepods".to_string()
    } else {
        format!("{}/kubepods", config.cgroup_root.trim_end_matches('/'))
    };
    let cgroup_mount = std::path::Path::new("/sys/fs/cgroup");
    let memory = NodeMemorySource::detect(cgroup_mount);
    let notifier = super::notify::Mechanism::detect(cgroup_mount, &pods_cgroup)
        .map(|m| MemoryNotifier::new(m, memory.clone(), wake.clone()));
    tracing::info!(
        thresholds = eviction_config.thresholds.len(),
        notifier = ?notifier.as_ref().map(MemoryNotifier::mechanism),
        "eviction manager starting"
    );
    let (pressures, receiver) = watch::channel(Pressures::default());
    let manager = EvictionManager {
        config: eviction_config,
        observer: NodeObserver {
            root_dir: node.root_dir.clone(),
            image_fs,
            memory,
        },
        usage: super::observe::CriUsage {
            cri: cri.clone(),
            root_dir: node.root_dir.clone(),
            pod_logs_dir: config.pod_logs_dir.clone(),
            local_storage: config.local_storage_capacity_isolation,
        },
        store,
        evict,
        pressures,
        notifier,
        wake,
        period: MONITORING_PERIOD,
    };
    tasks.spawn(manager.run(cancel.clone()));
    receiver
}

/// The pods that may be evicted: those with a worker whose status is not terminal.
fn active_pods(store: &StatusStore) -> Vec<Pod> {
    store
        .snapshot()
        .into_iter()
        .filter(|p| !p.status.as_ref().is_some_and(store::is_terminal))
        .collect()
}
