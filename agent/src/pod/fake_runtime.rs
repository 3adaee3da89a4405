//! A recording in-memory `PodRuntime` for worker and manager tests: sandboxes and containers
//! live in a map, actions change them the way containerd would, and every action is recorded.
//! Containers whose command is `["crash"]` exit with code 1 right after they start.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Pod;

use super::observed::{
    ContainerKind, InstanceState, ObservedContainer, ObservedPod, ObservedSandbox, UnixNanos,
};
use super::plan::Action;
use super::pleg::{PodRecord, Relist};
use super::runtime::{ExecState, PodRuntime, RuntimeError};
use super::spec;

#[derive(Debug, Default)]
struct State {
    pods: BTreeMap<String, (PodRecordMeta, ObservedPod)>,
    actions: Vec<(String, Action)>,
    cleaned: Vec<String>,
    /// Each `active_pods_changed` call: the UIDs reported, sorted.
    active_reports: Vec<Vec<String>>,
    next_id: u64,
}

#[derive(Debug, Default, Clone)]
struct PodRecordMeta {
    name: String,
    namespace: String,
}

/// The fake; clones share state.
#[derive(Clone, Debug)]
pub(crate) struct FakeRuntime {
    state: Arc<Mutex<State>>,
    start: tokio::time::Instant,
}

const BASE: UnixNanos = 1_700_000_000_000_000_000;

impl FakeRuntime {
    pub(crate) fn new() -> Self {
        Self {
            state: Arc::new(Mutex::new(State::default())),
            start: tokio::time::Instant::now(),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut guard = self.state.lock().expect("fake state lock");
        f(&mut guard)
    }

    /// Actions executed for the pod UID, in order.
    pub(crate) fn actions(&self, uid: &str) -> Vec<Action> {
        self.with(|s| {
            s.actions
                .iter()
                .filter(|(u, _)| u == uid)
                .map(|(_, a)| a.clone())
                .collect()
        })
    }

    /// All actions, with their pod UID, in order.
    pub(crate) fn all_actions(&self) -> Vec<(String, Action)> {
        self.with(|s| s.actions.clone())
    }

    pub(crate) fn observed(&self, uid: &str) -> ObservedPod {
        self.with(|s| s.pods.get(uid).map(|p| p.1.clone()).unwrap_or_default())
    }

    pub(crate) fn cleaned(&self) -> Vec<String> {
        self.with(|s| s.cleaned.clone())
    }

    /// Every set of active pod UIDs reported to the runtime, in order.
    pub(crate) fn active_reports(&self) -> Vec<Vec<String>> {
        self.with(|s| s.active_reports.clone())
    }
}

impl PodRuntime for FakeRuntime {
    async fn observe(&self, uid: &str) -> Result<ObservedPod, RuntimeError> {
        let observed = self.observed(uid);
        Ok(ObservedPod::new(observed.sandboxes, observed.containers))
    }

    async fn execute(
        &self,
        pod: &Pod,
        _observed: &ObservedPod,
        state: &mut ExecState,
        action: &Action,
    ) -> Result<(), RuntimeError> {
        let uid = spec::uid(pod).to_string();
        let now = self.now();
        self.with(|s| {
            s.actions.push((uid.clone(), action.clone()));
            s.next_id += 1;
            let id = format!("id{}", s.next_id);
            let entry = s.pods.entry(uid.clone()).or_insert_with(|| {
                (
                    PodRecordMeta {
                        name: spec::name(pod).to_string(),
                        namespace: spec::namespace(pod).to_string(),
                    },
                    ObservedPod::default(),
                )
            });
            let observed = &mut entry.1;
            match action {
                Action::KillPod => {
                    for c in &mut observed.containers {
                        if !matches!(c.state, InstanceState::Exited { .. }) {
                            c.state = exited(137, now);
                        }
                    }
                    for sb in &mut observed.sandboxes {
                        sb.ready = false;
                    }
                    state.sandbox = None;
                }
                Action::CreateSandbox { attempt } => {
                    observed.sandboxes.insert(
                        0,
                        ObservedSandbox {
                            id: id.clone(),
                            attempt: *attempt,
                            ready: true,
                            created_at: now,
                            ips: vec!["10.0.0.9".into()],
                        },
                    );
                    state.sandbox = Some((id, *attempt));
                }
                Action::StartContainer {
                    name,
                    kind,
                    restart_count,
                } => {
                    let desired = spec::find_container(pod, name).expect("container in spec");
                    let crash = desired.spec.command.as_deref() == Some(&["crash".to_string()][..]);
                    let sandbox_id = state
                        .sandbox
                        .as_ref()
                        .map(|s| s.0.clone())
                        .unwrap_or_default();
                    observed.containers.insert(
                        0,
                        ObservedContainer {
                            id,
                            sandbox_id,
                            name: name.clone(),
                            kind: *kind,
                            restart_count: *restart_count,
                            fingerprint: desired.fingerprint,
                            state: if crash || *kind == ContainerKind::Init {
                                exited(i32::from(crash), now)
                            } else {
                                InstanceState::Running
                            },
                            created_at: now,
                            started_at: now,
                            image: String::new(),
                            image_ref: String::new(),
                            termination_message_file: None,
                        },
                    );
                }
                Action::StartCreated { id, .. } => {
                    if let Some(c) = observed.containers.iter_mut().find(|c| &c.id == id) {
                        c.state = InstanceState::Running;
                    }
                }
                Action::KillContainer { id, .. } => {
                    if let Some(c) = observed.containers.iter_mut().find(|c| &c.id == id) {
                        c.state = exited(137, now);
                    }
                }
                Action::RemoveContainer { id } => observed.containers.retain(|c| &c.id != id),
                Action::RemoveSandbox { id } => observed.sandboxes.retain(|sb| &sb.id != id),
            }
            if observed.is_empty() {
                s.pods.remove(&uid);
            }
        });
        Ok(())
    }

    async fn cleanup(&self, pod: &Pod) -> Result<(), RuntimeError> {
        self.with(|s| s.cleaned.push(spec::uid(pod).to_string()));
        Ok(())
    }

    fn active_pods_changed(&self, pods: &[&Pod]) {
        let mut uids: Vec<String> = pods.iter().map(|p| spec::uid(p).to_string()).collect();
        uids.sort();
        self.with(|s| s.active_reports.push(uids));
    }

    async fn relist(&self) -> Result<Relist, RuntimeError> {
        Ok(self.with(|s| {
            s.pods
                .iter()
                .map(|(uid, (meta, observed))| {
                    let record = PodRecord {
                        name: meta.name.clone(),
                        namespace: meta.namespace.clone(),
                        sandboxes: observed
                            .sandboxes
                            .iter()
                            .map(|sb| (sb.id.clone(), i32::from(sb.ready)))
                            .collect(),
                        containers: observed
                            .containers
                            .iter()
                            .map(|c| (c.id.clone(), i32::from(c.is_running())))
                            .collect(),
                        grace_seconds: Some(0),
                    };
                    (uid.clone(), record)
                })
                .collect()
        }))
    }

    fn now(&self) -> UnixNanos {
        let elapsed = tokio::time::Instant::now() - self.start;
        BASE + i64::try_from(elapsed.as_nanos()).unwrap_or(i64::MAX)
    }
}

fn exited(code: i32, at: UnixNanos) -> InstanceState {
    InstanceState::Exited {
        exit_code: code,
        reason: String::new(),
        message: String::new(),
        finished_at: at,
    }
}
