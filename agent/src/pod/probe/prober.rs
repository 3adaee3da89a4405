//! The prober of one pod: a task per probe of each running container instance, started and
//! stopped as the worker's rounds observe containers come and go. Tasks run their probe every
//! `periodSeconds` after `initialDelaySeconds` (counted from the container's start), never
//! block each other or another pod's, gate liveness and readiness on the startup probe, record
//! `Unhealthy` events, and publish verdict changes into a shared [`ProbeSnapshot`], poking the
//! worker. A liveness or startup failure puts the task on hold: the worker kills the container,
//! and its next instance gets new tasks.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::handlers::{self, HttpRequest};
use super::spec::{Handler, ProbeKind, ProbeSpec, container_probes};
use super::tracker::{RunResult, Tracker, Verdict, initial_verdict};
use crate::pod::events::{EventSink, PodEvent};
use crate::pod::observed::{ObservedPod, UnixNanos};
use crate::pod::runtime::PodRuntime;
use crate::pod::spec;

/// A liveness or startup probe that failed: the container is to be killed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeFailure {
    pub kind: ProbeKind,
    /// The probe's `terminationGracePeriodSeconds`, if set.
    pub grace_seconds: Option<i64>,
}

/// The verdicts of one container instance's probes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerProbes {
    pub verdicts: BTreeMap<ProbeKind, Verdict>,
    pub failure: Option<ProbeFailure>,
}

/// The verdicts of a pod's containers, by container instance ID.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProbeSnapshot {
    pub containers: BTreeMap<String, ContainerProbes>,
}

impl ProbeSnapshot {
    /// `(started, ready)` of a running instance with the given probes (kinds from its spec):
    /// started once its startup probe succeeded (at once without one), ready once started and
    /// its readiness probe succeeded (at once without one). Before any verdict, the initial ones.
    pub fn view(&self, container_id: &str, kinds: &BTreeSet<ProbeKind>) -> (bool, bool) {
        let verdict = |kind: ProbeKind| {
            self.containers
                .get(container_id)
                .and_then(|c| c.verdicts.get(&kind).copied())
                .or(initial_verdict(kind))
                == Some(Verdict::Success)
        };
        let started = !kinds.contains(&ProbeKind::Startup) || verdict(ProbeKind::Startup);
        let ready =
            started && (!kinds.contains(&ProbeKind::Readiness) || verdict(ProbeKind::Readiness));
        (started, ready)
    }

    /// Running instances whose liveness or startup probe failed.
    pub fn failures(&self) -> BTreeMap<String, ProbeFailure> {
        self.containers
            .iter()
            .filter_map(|(id, c)| c.failure.clone().map(|f| (id.clone(), f)))
            .collect()
    }
}

/// One probe to run: which instance, where to reach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeTarget {
    pub container_id: String,
    pub container_name: String,
    pub spec: ProbeSpec,
    /// The pod's IP (the node's for hostNetwork pods): the default host of network probes.
    pub pod_ip: String,
    pub started_at: UnixNanos,
}

/// The probes a pod's current state asks for: every probe of every running instance in the
/// current sandbox. Probes the spec gets wrong are left out (and returned, to be reported).
pub fn desired_targets(
    pod: &Pod,
    observed: &ObservedPod,
    host_ip: Option<&str>,
) -> (Vec<ProbeTarget>, Vec<String>) {
    let Some(sandbox) = observed.current_sandbox().filter(|s| s.ready) else {
        return (Vec::new(), Vec::new());
    };
    let pod_ip = if spec::host_network(pod) {
        host_ip.map(str::to_string)
    } else {
        sandbox.ips.first().cloned()
    };
    let mut targets = Vec::new();
    let mut invalid = Vec::new();
    for c in observed.running_containers() {
        if c.sandbox_id != sandbox.id {
            continue;
        }
        let Some(desired) = spec::find_container(pod, &c.name) else {
            continue;
        };
        match container_probes(desired.spec) {
            Ok(probes) => targets.extend(probes.into_iter().map(|p| ProbeTarget {
                container_id: c.id.clone(),
                container_name: c.name.clone(),
                spec: p,
                pod_ip: pod_ip.clone().unwrap_or_else(|| "127.0.0.1".into()),
                started_at: c.started_at,
            })),
            Err(err) => invalid.push(format!("container {}: {err}", c.name)),
        }
    }
    (targets, invalid)
}

/// Which tasks to stop and which targets to start, given the running tasks' keys.
pub fn diff_tasks<'a>(
    running: &BTreeSet<(String, ProbeKind)>,
    desired: &'a [ProbeTarget],
) -> (Vec<(String, ProbeKind)>, Vec<&'a ProbeTarget>) {
    let wanted: BTreeSet<(String, ProbeKind)> = desired
        .iter()
        .map(|t| (t.container_id.clone(), t.spec.kind))
        .collect();
    let stop = running.difference(&wanted).cloned().collect();
    let start = desired
        .iter()
        .filter(|t| !running.contains(&(t.container_id.clone(), t.spec.kind)))
        .collect();
    (stop, start)
}

/// The state shared by a pod's probe tasks and its worker.
#[derive(Debug, Default)]
struct Shared {
    snapshot: Mutex<ProbeSnapshot>,
}

impl Shared {
    fn update(&self, f: impl FnOnce(&mut ProbeSnapshot)) {
        f(&mut self.snapshot.lock().unwrap_or_else(PoisonError::into_inner));
    }
}

/// The prober of one pod (owned by its worker; stops every task when dropped).
pub struct PodProber<R> {
    runtime: R,
    events: EventSink,
    poke: Arc<Notify>,
    shared: Arc<Shared>,
    tasks: BTreeMap<(String, ProbeKind), JoinHandle<()>>,
    /// Per container instance: whether its startup probe succeeded (liveness and readiness
    /// tasks wait for it).
    started: BTreeMap<String, watch::Sender<bool>>,
    /// The invalid-probe messages already logged.
    reported: BTreeSet<String>,
}

impl<R: PodRuntime + Clone> PodProber<R> {
    pub fn new(runtime: R, events: EventSink, poke: Arc<Notify>) -> Self {
        Self {
            runtime,
            events,
            poke,
            shared: Arc::default(),
            tasks: BTreeMap::new(),
            started: BTreeMap::new(),
            reported: BTreeSet::new(),
        }
    }

    /// The verdicts now.
    pub fn snapshot(&self) -> ProbeSnapshot {
        self.shared
            .snapshot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Starts and stops tasks to match the pod's running containers.
    pub fn sync(&mut self, pod: &Arc<Pod>, observed: &ObservedPod, host_ip: Option<&str>) {
        let (targets, invalid) = desired_targets(pod, observed, host_ip);
        for message in invalid {
            if self.reported.insert(message.clone()) {
                tracing::warn!(pod = %spec::name(pod), %message, "probe not run");
            }
        }
        let running: BTreeSet<(String, ProbeKind)> = self.tasks.keys().cloned().collect();
        let (stop, start) = diff_tasks(&running, &targets);
        for key in stop {
            if let Some(task) = self.tasks.remove(&key) {
                task.abort();
            }
        }
        let live: BTreeSet<&str> = targets.iter().map(|t| t.container_id.as_str()).collect();
        self.started.retain(|id, _| live.contains(id.as_str()));
        self.shared
            .update(|s| s.containers.retain(|id, _| live.contains(id.as_str())));
        for target in start {
            let has_startup = targets.iter().any(|t| {
                t.container_id == target.container_id && t.spec.kind == ProbeKind::Startup
            });
            let started = self
                .started
                .entry(target.container_id.clone())
                .or_insert_with(|| watch::channel(!has_startup).0)
                .clone();
            self.shared.update(|s| {
                let c = s.containers.entry(target.container_id.clone()).or_default();
                if let Some(initial) = initial_verdict(target.spec.kind) {
                    c.verdicts.entry(target.spec.kind).or_insert(initial);
                }
            });
            let task = ProbeTask {
                target: target.clone(),
                pod: pod.clone(),
                runtime: self.runtime.clone(),
                events: self.events.clone(),
                poke: self.poke.clone(),
                shared: self.shared.clone(),
                started,
            };
            self.tasks.insert(
                (target.container_id.clone(), target.spec.kind),
                tokio::spawn(task.run()),
            );
        }
    }

    /// Stops every task (the pod is terminating).
    pub fn stop_all(&mut self) {
        for (_, task) in std::mem::take(&mut self.tasks) {
            task.abort();
        }
        self.started.clear();
        self.shared.update(|s| s.containers.clear());
    }
}

impl<R> std::fmt::Debug for PodProber<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodProber")
            .field("tasks", &self.tasks.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl<R> Drop for PodProber<R> {
    fn drop(&mut self) {
        for task in self.tasks.values() {
            task.abort();
        }
    }
}

/// One probe of one container instance, running until aborted or on hold.
struct ProbeTask<R> {
    target: ProbeTarget,
    pod: Arc<Pod>,
    runtime: R,
    events: EventSink,
    poke: Arc<Notify>,
    shared: Arc<Shared>,
    started: watch::Sender<bool>,
}

impl<R: PodRuntime> ProbeTask<R> {
    async fn run(self) {
        let spec = &self.target.spec;
        if spec.kind != ProbeKind::Startup {
            let mut started = self.started.subscribe();
            if started.wait_for(|s| *s).await.is_err() {
                return;
            }
        }
        let since_start = Duration::from_nanos(
            u64::try_from(self.runtime.now().saturating_sub(self.target.started_at)).unwrap_or(0),
        );
        tokio::time::sleep(spec.initial_delay.saturating_sub(since_start)).await;
        let mut tracker = Tracker::new(spec);
        let mut ticker = tokio::time::interval(spec.period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let result = self.probe_once().await;
            match &result {
                RunResult::Failure(message) => self.events.emit(
                    &self.pod,
                    PodEvent::unhealthy(&self.target.container_name, spec.kind.as_str(), message),
                ),
                RunResult::Error(message) => tracing::debug!(
                    pod = %spec::name(&self.pod),
                    container = %self.target.container_name,
                    probe = spec.kind.as_str(),
                    %message,
                    "probe could not run"
                ),
                RunResult::Success => {}
            }
            let Some(verdict) = tracker.record(&result) else {
                continue;
            };
            let hold = spec.kind != ProbeKind::Readiness && verdict == Verdict::Failure;
            self.shared.update(|s| {
                let c = s
                    .containers
                    .entry(self.target.container_id.clone())
                    .or_default();
                c.verdicts.insert(spec.kind, verdict);
                if hold {
                    c.failure = Some(ProbeFailure {
                        kind: spec.kind,
                        grace_seconds: spec.termination_grace_seconds,
                    });
                }
            });
            if spec.kind == ProbeKind::Startup && verdict == Verdict::Success {
                self.started.send_replace(true);
            }
            self.poke.notify_one();
            // A startup probe that succeeded is done; a failed liveness or startup probe waits
            // for the kill.
            if hold || spec.kind == ProbeKind::Startup {
                return;
            }
        }
    }

    async fn probe_once(&self) -> RunResult {
        let spec = &self.target.spec;
        let host = |h: &Option<String>| h.clone().unwrap_or_else(|| self.target.pod_ip.clone());
        match &spec.handler {
            Handler::Exec { command } => {
                match self
                    .runtime
                    .exec_probe(&self.target.container_id, command, spec.timeout)
                    .await
                {
                    Ok(outcome) => outcome,
                    Err(err) => RunResult::Error(err.to_string()),
                }
            }
            Handler::Http {
                scheme,
                host: h,
                port,
                path,
                headers,
            } => {
                let host = host(h);
                handlers::http(
                    &HttpRequest {
                        scheme: *scheme,
                        host: &host,
                        port: *port,
                        path,
                        headers,
                    },
                    spec.timeout,
                )
                .await
            }
            Handler::Tcp { host: h, port } => handlers::tcp(&host(h), *port, spec.timeout).await,
            Handler::Grpc { port, service } => {
                handlers::grpc(&self.target.pod_ip, *port, service, spec.timeout).await
            }
        }
    }
}

#[cfg(test)]
#[path = "prober_tests.rs"]
mod tests;
