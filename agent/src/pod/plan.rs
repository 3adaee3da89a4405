//! The per-pod plan: a pure function from (desired pod, observed runtime state, back-off state,
//! now) to the actions that move the runtime towards the spec. The worker executes the actions;
//! nothing here does I/O. Semantics follow the upstream kubelet: a sandbox per pod, regular init
//! containers one at a time, sidecars (`restartPolicy: Always` init containers) kept running,
//! app containers restarted per `restartPolicy` with CrashLoopBackOff, and a pod that finished
//! (`Never`/`OnFailure`) is stopped and left alone.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;

use super::backoff::{self, Entry, PodBackoff};
use super::observed::{ContainerKind, InstanceState, ObservedContainer, ObservedPod, UnixNanos};
use super::probe::prober::ProbeFailure;
use super::spec::{self, DesiredContainer, RestartPolicy};

/// Why a running container is killed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KillReason {
    /// The spec changed under it.
    SpecChanged,
    /// Its state is unknown to the runtime.
    Unknown,
    /// The spec has no container of that name.
    NotInSpec,
    /// It lives in a sandbox that is no longer the pod's.
    StaleSandbox,
    /// Its liveness or startup probe failed (`probe`: `liveness`, `startup`); killed with the
    /// probe's grace period if it sets one; `restart`: the restart policy brings it back.
    ProbeFailed {
        probe: &'static str,
        grace_seconds: Option<i64>,
        restart: bool,
    },
}

/// One step of a plan, executed in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Stop every container (apps first, then sidecars in reverse order, then init containers)
    /// with the pod's grace period, then stop the sandbox.
    KillPod,
    /// Create and start a new sandbox; the containers after it go into it.
    CreateSandbox {
        attempt: u32,
    },
    /// Create and start a new instance of a spec container in the current sandbox.
    StartContainer {
        name: String,
        kind: ContainerKind,
        restart_count: u32,
    },
    /// Start an instance that was created but never started (an agent crash between the two).
    StartCreated {
        id: String,
        name: String,
    },
    KillContainer {
        id: String,
        name: String,
        reason: KillReason,
    },
    RemoveContainer {
        id: String,
    },
    RemoveSandbox {
        id: String,
    },
}

/// Why a spec container is not running, for the pod status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiting {
    /// `ContainerCreating`, `PodInitializing`, `CrashLoopBackOff`.
    pub reason: &'static str,
    pub message: String,
}

/// Where the pod stands once the plan is carried out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Running, or on its way.
    Active,
    /// Finished for good (`restartPolicy` Never/OnFailure): succeeded or failed.
    Completed { succeeded: bool },
    /// Terminating and nothing is left running.
    Stopped,
}

/// The result of planning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// Back-off entries to store once the corresponding starts were issued.
    pub backoff_updates: Vec<(String, Entry)>,
    pub waiting: BTreeMap<String, Waiting>,
    /// Plan again at this time (a back-off expires) even if nothing else happens.
    pub requeue_at: Option<UnixNanos>,
    pub outcome: Outcome,
}

/// What the planner looks at.
#[derive(Clone, Copy, Debug)]
pub struct PlanInput<'a> {
    pub pod: &'a Pod,
    pub observed: &'a ObservedPod,
    pub backoff: &'a PodBackoff,
    pub now: UnixNanos,
    /// The pod is being deleted: stop it, then remove what is left.
    pub terminating: bool,
    /// Running instances (by ID) whose liveness or startup probe failed.
    pub probe_failures: &'a BTreeMap<String, ProbeFailure>,
    /// Exited instances kept per container beside the newest (`None`: all).
    pub earlier_instances_kept: Option<usize>,
}

/// Plans one sync of a pod.
pub fn plan(input: PlanInput<'_>) -> Plan {
    let mut p = Planner::new(input);
    if input.terminating {
        p.terminate();
    } else {
        p.sync();
    }
    p.finish()
}

struct Planner<'a> {
    input: PlanInput<'a>,
    policy: RestartPolicy,
    plan: Plan,
}

impl<'a> Planner<'a> {
    fn new(input: PlanInput<'a>) -> Self {
        Self {
            input,
            policy: spec::restart_policy(input.pod),
            plan: Plan {
                actions: Vec::new(),
                backoff_updates: Vec::new(),
                waiting: BTreeMap::new(),
                requeue_at: None,
                outcome: Outcome::Active,
            },
        }
    }

    fn finish(self) -> Plan {
        self.plan
    }

    fn push(&mut self, action: Action) {
        self.plan.actions.push(action);
    }

    fn anything_running(&self) -> bool {
        let observed = self.input.observed;
        observed.running_containers().next().is_some()
            || observed
                .containers
                .iter()
                .any(|c| c.state == InstanceState::Created)
            || observed.sandboxes.iter().any(|s| s.ready)
    }

    /// Deletion: stop everything; once nothing runs (the next round, which sees the exit
    /// codes for the final status), remove every container and sandbox.
    fn terminate(&mut self) {
        let observed = self.input.observed;
        self.plan.outcome = Outcome::Stopped;
        if self.anything_running() {
            self.push(Action::KillPod);
            return;
        }
        for c in &observed.containers {
            self.push(Action::RemoveContainer { id: c.id.clone() });
        }
        for s in &observed.sandboxes {
            self.push(Action::RemoveSandbox { id: s.id.clone() });
        }
        self.plan.outcome = Outcome::Stopped;
    }

    fn sync(&mut self) {
        let observed = self.input.observed;
        let inits = spec::init_containers(self.input.pod);
        let apps = spec::app_containers(self.input.pod);

        // A pod that finished stays finished: stop what is left and do nothing else.
        if let Some(succeeded) = self.completed(&inits, &apps) {
            if self.anything_running() {
                self.push(Action::KillPod);
            }
            self.plan.outcome = Outcome::Completed { succeeded };
            self.collect_garbage(&inits, &apps);
            return;
        }

        let sandbox = observed.current_sandbox().filter(|s| s.ready);
        let sandbox_id = match sandbox {
            Some(s) => Some(s.id.clone()),
            None => {
                // Never with containers that already ran: a dead sandbox is not recreated.
                if self.policy == RestartPolicy::Never && !observed.containers.is_empty() {
                    if self.anything_running() {
                        self.push(Action::KillPod);
                    }
                    self.plan.outcome = Outcome::Completed { succeeded: false };
                    return;
                }
                if self.anything_running() {
                    self.push(Action::KillPod);
                }
                let attempt = observed
                    .current_sandbox()
                    .map_or(0, |s| s.attempt.saturating_add(1));
                self.push(Action::CreateSandbox { attempt });
                None
            }
        };
        let current = sandbox_id.as_deref();

        // Containers of this sandbox that the spec does not name (or anything in old sandboxes).
        let names: BTreeSet<&str> = inits.iter().chain(&apps).map(|c| c.name).collect();
        for c in observed.running_containers() {
            let reason = if Some(c.sandbox_id.as_str()) != current {
                Some(KillReason::StaleSandbox)
            } else if !names.contains(c.name.as_str()) {
                Some(KillReason::NotInSpec)
            } else {
                None
            };
            if let (Some(reason), Some(_)) = (reason, current) {
                self.push(Action::KillContainer {
                    id: c.id.clone(),
                    name: c.name.clone(),
                    reason,
                });
            }
        }

        let initialized = self.sync_init(current, &inits, &apps);
        if initialized {
            for app in &apps {
                self.sync_restartable(current, app);
            }
        } else {
            for app in &apps {
                self.plan.waiting.insert(
                    app.name.to_string(),
                    Waiting {
                        reason: "PodInitializing",
                        message: String::new(),
                    },
                );
            }
        }
        self.collect_garbage(&inits, &apps);
    }

    /// Whether the pod has finished for good, and if so whether it succeeded.
    fn completed(
        &self,
        inits: &[DesiredContainer<'_>],
        apps: &[DesiredContainer<'_>],
    ) -> Option<bool> {
        if self.policy == RestartPolicy::Always {
            return None;
        }
        let observed = self.input.observed;
        let sandbox = observed.current_sandbox()?;
        // A regular init container that failed under Never fails the pod.
        if self.policy == RestartPolicy::Never {
            let init_failed = inits
                .iter()
                .filter(|c| c.kind == ContainerKind::Init)
                .any(|c| {
                    observed
                        .latest_in(&sandbox.id, c.name)
                        .is_some_and(|i| i.finished_at().is_some() && !i.succeeded())
                });
            if init_failed {
                return Some(false);
            }
        }
        let mut all_succeeded = true;
        for app in apps {
            let latest = observed.latest_in(&sandbox.id, app.name)?;
            latest.finished_at()?;
            if self.should_restart(app.kind, latest) {
                return None;
            }
            all_succeeded &= latest.succeeded();
        }
        Some(all_succeeded)
    }

    fn should_restart(&self, kind: ContainerKind, instance: &ObservedContainer) -> bool {
        match (kind, self.policy) {
            (ContainerKind::Sidecar, _) | (_, RestartPolicy::Always) => true,
            (ContainerKind::Init, RestartPolicy::Never) => false,
            (ContainerKind::Init, _) | (_, RestartPolicy::OnFailure) => !instance.succeeded(),
            (_, RestartPolicy::Never) => false,
        }
    }

    /// Init containers in order; returns whether the pod is initialized (app containers may
    /// start).
    fn sync_init(
        &mut self,
        current: Option<&str>,
        inits: &[DesiredContainer<'_>],
        apps: &[DesiredContainer<'_>],
    ) -> bool {
        let observed = self.input.observed;
        // Once app containers exist in this sandbox, initialization happened: never rerun it.
        let initialized_before = current.is_some_and(|sandbox| {
            apps.iter()
                .any(|a| observed.latest_in(sandbox, a.name).is_some())
        });
        for init in inits {
            match init.kind {
                ContainerKind::Sidecar => {
                    let blocked = !self.sync_restartable(current, init);
                    if blocked && !initialized_before {
                        return false;
                    }
                }
                _ if initialized_before => {}
                _ => {
                    let latest = current.and_then(|s| observed.latest_in(s, init.name));
                    match latest {
                        Some(i) if i.succeeded() => {}
                        Some(i) if i.finished_at().is_some() => {
                            if self.policy != RestartPolicy::Never {
                                self.restart_with_backoff(init, i);
                            }
                            return false;
                        }
                        Some(i) if i.state == InstanceState::Created => {
                            self.push(Action::StartCreated {
                                id: i.id.clone(),
                                name: i.name.clone(),
                            });
                            return false;
                        }
                        Some(_) => return false, // running: wait for it
                        None => {
                            self.start(init);
                            return false;
                        }
                    }
                }
            }
        }
        true
    }

    /// Keeps a sidecar or app container running per the restart policy; returns whether it is
    /// running (or being started) after the plan.
    fn sync_restartable(&mut self, current: Option<&str>, c: &DesiredContainer<'_>) -> bool {
        let observed = self.input.observed;
        let latest = current.and_then(|s| observed.latest_in(s, c.name));
        match latest {
            None => {
                self.start(c);
                true
            }
            Some(i) => match &i.state {
                InstanceState::Created => {
                    self.push(Action::StartCreated {
                        id: i.id.clone(),
                        name: i.name.clone(),
                    });
                    true
                }
                InstanceState::Running | InstanceState::Unknown => {
                    // Killed by a failed probe, it exits non-zero: back unless `Never`.
                    let restart_unhealthy =
                        c.kind == ContainerKind::Sidecar || self.policy != RestartPolicy::Never;
                    let reason = if i.state == InstanceState::Unknown {
                        Some(KillReason::Unknown)
                    } else if i.fingerprint != c.fingerprint {
                        Some(KillReason::SpecChanged)
                    } else {
                        self.input.probe_failures.get(&i.id).map(|failure| {
                            KillReason::ProbeFailed {
                                probe: failure.kind.lowercase(),
                                grace_seconds: failure.grace_seconds,
                                restart: restart_unhealthy,
                            }
                        })
                    };
                    if let Some(reason) = reason {
                        self.push(Action::KillContainer {
                            id: i.id.clone(),
                            name: i.name.clone(),
                            reason,
                        });
                        if !matches!(reason, KillReason::ProbeFailed { restart: false, .. }) {
                            self.start(c);
                        }
                    }
                    restart_unhealthy || !self.input.probe_failures.contains_key(&i.id)
                }
                InstanceState::Exited { .. } => {
                    if self.should_restart(c.kind, i) {
                        self.restart_with_backoff(c, i)
                    } else {
                        false
                    }
                }
            },
        }
    }

    /// Restarts an exited instance unless it is backing off; returns whether it starts now.
    fn restart_with_backoff(
        &mut self,
        c: &DesiredContainer<'_>,
        exited: &ObservedContainer,
    ) -> bool {
        let finished_at = exited.finished_at().unwrap_or(self.input.now);
        let entry = self.input.backoff.get(c.name);
        match backoff::decide(
            &entry,
            &exited.id,
            exited.started_at,
            finished_at,
            self.input.now,
        ) {
            backoff::Decision::Start { entry } => {
                self.plan.backoff_updates.push((c.name.to_string(), entry));
                self.start(c);
                true
            }
            backoff::Decision::Wait { until, delay } => {
                let pod = spec::name(self.input.pod);
                self.plan.waiting.insert(
                    c.name.to_string(),
                    Waiting {
                        reason: "CrashLoopBackOff",
                        message: format!(
                            "back-off {} restarting failed container={} pod={}",
                            format_delay(delay),
                            c.name,
                            pod
                        ),
                    },
                );
                self.plan.requeue_at = Some(self.plan.requeue_at.map_or(until, |r| r.min(until)));
                false
            }
        }
    }

    fn start(&mut self, c: &DesiredContainer<'_>) {
        let restart_count = self.input.observed.next_restart_count(c.name);
        self.plan.waiting.insert(
            c.name.to_string(),
            Waiting {
                reason: "ContainerCreating",
                message: String::new(),
            },
        );
        self.push(Action::StartContainer {
            name: c.name.to_string(),
            kind: c.kind,
            restart_count,
        });
    }

    /// Keeps, per container name, the newest instance and `earlier_instances_kept` before it
    /// (at least one: the status shows it as `lastState`); removes older exited instances
    /// and empty stopped sandboxes.
    fn collect_garbage(&mut self, inits: &[DesiredContainer<'_>], apps: &[DesiredContainer<'_>]) {
        let observed = self.input.observed;
        let known: BTreeSet<&str> = inits.iter().chain(apps).map(|c| c.name).collect();
        let mut kept: BTreeMap<&str, usize> = BTreeMap::new();
        let mut kept_sandboxes: BTreeSet<&str> = BTreeSet::new();
        if let Some(s) = observed.current_sandbox() {
            kept_sandboxes.insert(&s.id);
        }
        let killed: BTreeSet<&str> = self
            .plan
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::KillContainer { id, .. } => Some(id.as_str()),
                _ => None,
            })
            .collect();
        let per_name = self
            .input
            .earlier_instances_kept
            .map_or(usize::MAX, |n| n.saturating_add(1));
        let mut removals = Vec::new();
        for c in &observed.containers {
            let exited = matches!(c.state, InstanceState::Exited { .. });
            let count = kept.entry(c.name.as_str()).or_default();
            let keep = !exited
                || killed.contains(c.id.as_str())
                || (known.contains(c.name.as_str()) && *count < per_name);
            if keep {
                *count += 1;
                kept_sandboxes.insert(&c.sandbox_id);
            } else {
                removals.push(Action::RemoveContainer { id: c.id.clone() });
            }
        }
        for s in &observed.sandboxes {
            if !s.ready && !kept_sandboxes.contains(s.id.as_str()) {
                removals.push(Action::RemoveSandbox { id: s.id.clone() });
            }
        }
        self.plan.actions.extend(removals);
    }
}

/// `10s`, `1m20s`, `5m0s`, the way the kubelet prints back-off delays.
fn format_delay(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
