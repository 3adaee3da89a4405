//! One worker per pod UID. It owns the pod's lifecycle (syncing → terminating → terminated):
//! each round it observes the runtime, plans, executes the plan's actions and publishes the
//! status, then sleeps until the spec changes (latest-wins mailbox), the PLEG pokes it, a
//! back-off expires or the periodic resync is due. Shutdown of kwk-node stops the worker
//! between actions and leaves the pod running.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::backoff::PodBackoff;
use super::events::PodEvent;
use super::plan::{self, Action, Outcome, PlanInput, Waiting};
use super::probe::prober::{PodProber, ProbeSnapshot};
use super::runtime::{ExecState, PodRuntime};
use super::spec;
use super::status::{StatusContext, pod_status};
use super::store::StatusStore;

/// What the pod's sources want for it; the worker only ever sees the latest.
#[derive(Clone, Debug)]
pub enum Desired {
    Run(Arc<Pod>),
    /// Stop and remove the pod (deleted from its source, or unknown to every source).
    Terminate(Arc<Pod>),
}

impl Desired {
    pub fn pod(&self) -> &Arc<Pod> {
        match self {
            Self::Run(p) | Self::Terminate(p) => p,
        }
    }
}

/// Where a worker stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifecycle {
    Syncing,
    Terminating,
    Terminated,
}

/// Settings shared by all workers.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Resync period even without events (`syncFrequency`).
    pub sync_frequency: Duration,
    /// Wait after a failed action before trying again.
    pub retry_after: Duration,
    pub host_ip: Option<String>,
    /// Where the worker records events (`BackOff`).
    pub events: super::events::EventSink,
    /// Exited instances kept per container beside the newest (`None`: all), from the
    /// container GC flags ([`crate::container_gc::ContainerGcPolicy::earlier_instances_kept`]).
    pub earlier_instances_kept: Option<usize>,
}

/// The manager's handle on a worker.
#[derive(Debug)]
pub struct WorkerHandle {
    desired: watch::Sender<Desired>,
    poke: Arc<Notify>,
    lifecycle: watch::Receiver<Lifecycle>,
}

impl WorkerHandle {
    /// Replaces what the worker should do (latest wins).
    pub fn update(&self, desired: Desired) {
        self.desired.send_replace(desired);
    }

    /// Wakes the worker to observe the runtime again.
    pub fn poke(&self) {
        self.poke.notify_one();
    }

    pub fn lifecycle(&self) -> Lifecycle {
        *self.lifecycle.borrow()
    }

    pub fn desired(&self) -> Desired {
        self.desired.borrow().clone()
    }
}

/// Starts a worker task; `done` receives the UID when the pod is terminated and cleaned up.
pub fn spawn<R: PodRuntime + Clone>(
    desired: Desired,
    runtime: R,
    store: StatusStore,
    config: WorkerConfig,
    cancel: CancellationToken,
    done: mpsc::UnboundedSender<String>,
    tracker: &tokio_util::task::TaskTracker,
) -> WorkerHandle {
    let (desired_tx, desired_rx) = watch::channel(desired);
    let (lifecycle_tx, lifecycle_rx) = watch::channel(Lifecycle::Syncing);
    let poke = Arc::new(Notify::new());
    let prober = PodProber::new(runtime.clone(), config.events.clone(), poke.clone());
    let worker = Worker {
        prober,
        desired: desired_rx,
        poke: poke.clone(),
        lifecycle: lifecycle_tx,
        runtime,
        store,
        config,
        backoff: PodBackoff::default(),
        start_time: None,
        final_status: None,
        backing_off: BTreeMap::new(),
        start_errors: BTreeMap::new(),
    };
    tracker.spawn(async move {
        let uid = spec::uid(worker.desired.borrow().pod()).to_string();
        if worker.run(cancel).await {
            let _ = done.send(uid);
        }
    });
    WorkerHandle {
        desired: desired_tx,
        poke,
        lifecycle: lifecycle_rx,
    }
}

struct Worker<R> {
    /// The probes of the pod's running containers.
    prober: PodProber<R>,
    desired: watch::Receiver<Desired>,
    poke: Arc<Notify>,
    lifecycle: watch::Sender<Lifecycle>,
    runtime: R,
    store: StatusStore,
    config: WorkerConfig,
    backoff: PodBackoff,
    start_time: Option<i64>,
    /// The status of the stopped pod while its containers were still there (terminating).
    final_status: Option<PodStatus>,
    /// Containers in CrashLoopBackOff with the back-off message last reported as an event.
    backing_off: BTreeMap<String, String>,
    /// Why each container's last start failed (`CreateContainerConfigError`, ...): shown as its
    /// waiting state until a start succeeds.
    start_errors: BTreeMap<String, Waiting>,
}

/// The waiting reason of a container in restart back-off.
const CRASH_LOOP: &str = "CrashLoopBackOff";

/// How many rounds may follow each other without waiting when each one changed something.
const IMMEDIATE_ROUNDS: u32 = 5;

impl<R: PodRuntime + Clone> Worker<R> {
    /// Runs until the pod is terminated (returns true) or kwk-node shuts down (false).
    async fn run(mut self, cancel: CancellationToken) -> bool {
        let mut immediate = 0;
        loop {
            if cancel.is_cancelled() {
                return false;
            }
            let desired = self.desired.borrow_and_update().clone();
            let round = self.round(&desired, &cancel).await;
            match round {
                Round::Terminated => {
                    self.lifecycle.send_replace(Lifecycle::Terminated);
                    return true;
                }
                Round::Changed if immediate < IMMEDIATE_ROUNDS => {
                    immediate += 1;
                    continue;
                }
                _ => immediate = 0,
            }
            if round == Round::Failed {
                // A failed round waits out `retry_after` whatever happens meanwhile: the
                // PLEG's poke for what the failure left behind (a sandbox that did not come
                // up) and the echo of the status just posted would otherwise retry at once,
                // in a loop, each attempt leaving another dead sandbox.
                tokio::select! {
                    () = cancel.cancelled() => return false,
                    () = tokio::time::sleep(self.config.retry_after) => {}
                }
                continue;
            }
            let wait = match round {
                Round::Idle { requeue_in } => requeue_in
                    .unwrap_or(self.config.sync_frequency)
                    .min(self.config.sync_frequency),
                _ => self.config.retry_after,
            };
            tokio::select! {
                () = cancel.cancelled() => return false,
                changed = self.desired.changed() => {
                    if changed.is_err() {
                        return false;
                    }
                }
                () = self.poke.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn round(&mut self, desired: &Desired, cancel: &CancellationToken) -> Round {
        let pod = desired.pod().clone();
        let terminating = matches!(desired, Desired::Terminate(_));
        if terminating {
            self.lifecycle.send_replace(Lifecycle::Terminating);
        }
        let uid = spec::uid(&pod).to_string();
        let observed = match self.runtime.observe(&uid).await {
            Ok(o) => o,
            Err(err) => {
                tracing::warn!(pod = %spec::name(&pod), %uid, %err, "cannot observe pod");
                return Round::Failed;
            }
        };
        let now = self.runtime.now();
        self.start_time.get_or_insert(now);
        if terminating {
            self.prober.stop_all();
        } else {
            self.prober
                .sync(&pod, &observed, self.config.host_ip.as_deref());
        }
        let probes = self.prober.snapshot();
        let plan = plan::plan(PlanInput {
            pod: &pod,
            observed: &observed,
            backoff: &self.backoff,
            now,
            terminating,
            probe_failures: &probes.failures(),
            earlier_instances_kept: self.config.earlier_instances_kept,
        });
        self.report_back_off(&pod, &plan.waiting);
        if terminating
            && !observed.containers.is_empty()
            && !plan.actions.contains(&Action::KillPod)
        {
            // Stopped, its containers not removed yet: their exit codes make the final status.
            let ctx = self.status_context(&pod, probes.clone());
            self.final_status = Some(pod_status(
                &pod,
                &observed,
                &plan.waiting,
                plan.outcome,
                &ctx,
            ));
        }
        let mut state = ExecState::from_observed(&observed);
        let mut failed = false;
        for action in &plan.actions {
            if cancel.is_cancelled() {
                return Round::Failed;
            }
            tracing::debug!(pod = %spec::name(&pod), ?action, "executing");
            let result = self
                .runtime
                .execute(&pod, &observed, &mut state, action)
                .await;
            if let Action::StartContainer { name, .. } = action {
                match &result {
                    Ok(()) => {
                        self.start_errors.remove(name);
                    }
                    Err(err) => {
                        if let Some(reason) = err.waiting_reason {
                            let message = err.message.clone();
                            self.start_errors
                                .insert(name.clone(), Waiting { reason, message });
                        }
                    }
                }
            }
            if let Err(err) = result {
                tracing::warn!(pod = %spec::name(&pod), %uid, %err, "pod action failed");
                failed = true;
                break;
            }
            if matches!(action, Action::StartContainer { .. }) {
                self.apply_backoff(&plan.backoff_updates, action);
            }
        }
        if terminating && !failed && plan.outcome == Outcome::Stopped {
            if plan.actions.is_empty() {
                if let Err(err) = self.runtime.cleanup(&pod).await {
                    tracing::warn!(pod = %spec::name(&pod), %uid, %err, "pod cleanup failed");
                    return Round::Failed;
                }
                let final_status = self.final_status.take().unwrap_or_else(|| {
                    pod_status(
                        &pod,
                        &observed,
                        &plan.waiting,
                        plan.outcome,
                        &self.status_context(&pod, ProbeSnapshot::default()),
                    )
                });
                self.store.terminated(&pod, final_status);
                tracing::info!(pod = %spec::name(&pod), %uid, "pod terminated");
                return Round::Terminated;
            }
            return Round::Changed;
        }
        if !terminating
            && !failed
            && state.sandbox.is_some()
            && let Err(err) = self.runtime.refresh_volumes(&pod, &state.ips).await
        {
            tracing::warn!(pod = %spec::name(&pod), %uid, %err, "cannot update volumes");
        }
        if !terminating {
            // The status reflects the state before this round's actions; a round that changed
            // something is followed by another that observes the result.
            let ctx = self.status_context(&pod, probes);
            let mut waiting = plan.waiting.clone();
            for (name, w) in waiting.iter_mut().filter(|(_, w)| w.reason != CRASH_LOOP) {
                if let Some(error) = self.start_errors.get(name) {
                    *w = error.clone();
                }
            }
            let status = pod_status(&pod, &observed, &waiting, plan.outcome, &ctx);
            self.store.set(&pod, status);
        }
        if failed {
            Round::Failed
        } else if !plan.actions.is_empty() {
            Round::Changed
        } else {
            let requeue_in = plan
                .requeue_at
                .map(|at| Duration::from_nanos(u64::try_from(at.saturating_sub(now)).unwrap_or(0)));
            Round::Idle { requeue_in }
        }
    }

    fn status_context(&self, pod: &Pod, probes: ProbeSnapshot) -> StatusContext {
        StatusContext {
            probes,
            host_ip: self.config.host_ip.clone(),
            start_time: self.start_time,
            qos_class: crate::cgroups::qos::pod_qos(pod)
                .ok()
                .map(|q| q.as_str().to_string()),
        }
    }

    /// A `BackOff` event for each container that entered a (new) back-off period.
    fn report_back_off(&mut self, pod: &Pod, waiting: &BTreeMap<String, Waiting>) {
        self.backing_off
            .retain(|name, _| waiting.get(name).is_some_and(|w| w.reason == CRASH_LOOP));
        for (name, w) in waiting {
            if w.reason == CRASH_LOOP && self.backing_off.get(name) != Some(&w.message) {
                self.backing_off.insert(name.clone(), w.message.clone());
                self.config.events.emit(pod, PodEvent::back_off(pod, name));
            }
        }
    }

    fn apply_backoff(&mut self, updates: &[(String, super::backoff::Entry)], action: &Action) {
        if let Action::StartContainer { name, .. } = action {
            for (n, entry) in updates {
                if n == name {
                    self.backoff.set(n, entry.clone());
                }
            }
        }
    }
}

/// What one round did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Round {
    /// Actions ran: observe again soon.
    Changed,
    /// Nothing to do; plan again after `requeue_in` at the latest.
    Idle { requeue_in: Option<Duration> },
    /// Something failed: retry after a pause.
    Failed,
    /// The pod is gone.
    Terminated,
}
