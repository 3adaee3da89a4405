//! The deployment controller's planner (upstream `pkg/controller/deployment`): claims the
//! deployment's replica sets, finds or creates the replica set of the current pod template
//! (`<deployment>-<pod-template-hash>`), rolls pods over to it (RollingUpdate within
//! maxSurge/maxUnavailable, or Recreate), scales proportionally when the deployment is
//! resized mid-rollout, prunes old replica sets beyond `revisionHistoryLimit`, and keeps the
//! status and the `Available`/`Progressing` conditions `kubectl rollout status` reads.
//!
//! `kubectl rollout undo` patches an old template back; the replica set whose template
//! matches is found again and gets the next revision (the old one kept in
//! `deployment.kubernetes.io/revision-history`).

pub mod controller;
mod rollout;
pub mod status;
pub mod util;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use serde_json::json;

use crate::action::{Action, EventType};
use crate::common::controller_ref;
use crate::replicaset::claim::{Claim, adopt_patch, claim, release_patch};
use util::REVISION_ANNOTATION;

pub use status::requeue_after;

/// The writes that move `d` toward its spec. `replica_sets` and `pods` are those of the
/// deployment's namespace (others are ignored).
pub fn plan(
    d: &Deployment,
    replica_sets: &[ReplicaSet],
    pods: &[Pod],
    now: Timestamp,
) -> Vec<Action> {
    let Some(spec) = d.spec.as_ref() else {
        return Vec::new();
    };
    if kwk_api::meta::selector_is_empty(&spec.selector) {
        return selecting_everything(d);
    }
    let mut sync = Sync::new(d, replica_sets, pods, now);
    sync.run();
    sync.finish()
}

/// Upstream refuses to act on a deployment that selects every pod.
fn selecting_everything(d: &Deployment) -> Vec<Action> {
    let mut actions = vec![Action::event(
        d,
        EventType::Warning,
        "SelectingAll",
        "This deployment is selecting all pods. A non-empty selector is required.",
    )];
    let status = d.status.clone().unwrap_or_default();
    if status.observed_generation.unwrap_or(0) < d.metadata.generation.unwrap_or(0) {
        let mut updated = d.clone();
        updated.status = Some(k8s_openapi::api::apps::v1::DeploymentStatus {
            observed_generation: d.metadata.generation,
            ..status
        });
        actions.push(Action::update_status(&updated));
    }
    actions
}

/// One replica set as this pass sees it.
struct Tracked {
    /// As observed; `None` for the replica set this pass creates.
    observed: Option<ReplicaSet>,
    /// As planned.
    current: ReplicaSet,
    /// Planned for deletion (history cleanup).
    delete: bool,
}

/// The working state of one pass: the deployment and its replica sets as planned so far.
struct Sync<'a> {
    observed: &'a Deployment,
    d: Deployment,
    rss: Vec<Tracked>,
    all_replica_sets: &'a [ReplicaSet],
    pods: &'a [Pod],
    now: Timestamp,
    /// Patches (claims) and deletes, in order.
    writes: Vec<Action>,
    events: Vec<Action>,
}

impl<'a> Sync<'a> {
    fn new(
        d: &'a Deployment,
        replica_sets: &'a [ReplicaSet],
        pods: &'a [Pod],
        now: Timestamp,
    ) -> Self {
        let mut sync = Sync {
            observed: d,
            d: d.clone(),
            rss: Vec::new(),
            all_replica_sets: replica_sets,
            pods,
            now,
            writes: Vec::new(),
            events: Vec::new(),
        };
        sync.claim_replica_sets();
        sync
    }

    fn claim_replica_sets(&mut self) {
        let Some(selector) = self.d.spec.as_ref().map(|s| s.selector.clone()) else {
            return;
        };
        for rs in self
            .all_replica_sets
            .iter()
            .filter(|rs| rs.metadata.namespace == self.d.metadata.namespace)
        {
            match claim(&self.d.metadata, &selector, &rs.metadata) {
                Claim::Owned => {}
                Claim::Adopt => self.writes.push(Action::patch(
                    rs,
                    None,
                    adopt_patch(&rs.metadata, controller_ref(self.observed)),
                )),
                Claim::Release => {
                    let uid = self.d.metadata.uid.clone().unwrap_or_default();
                    self.writes
                        .push(Action::patch(rs, None, release_patch(&rs.metadata, &uid)));
                    continue;
                }
                Claim::Ignore => continue,
            }
            self.rss.push(Tracked {
                observed: Some(rs.clone()),
                current: rs.clone(),
                delete: false,
            });
        }
    }

    fn name(&self) -> &str {
        self.d.metadata.name.as_deref().unwrap_or_default()
    }

    fn paused(&self) -> bool {
        self.d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false)
    }

    fn event(&mut self, reason: &str, message: String) {
        self.events.push(Action::event(
            self.observed,
            EventType::Normal,
            reason,
            message,
        ));
    }

    /// The sync of upstream's `syncDeployment` after the replica sets are claimed.
    fn run(&mut self) {
        if self.d.metadata.deletion_timestamp.is_some() {
            if let Some((new_rs, old)) = self.new_and_old(false) {
                self.sync_status(new_rs, &old);
            }
            return;
        }
        self.check_paused_conditions();
        if self.paused() || self.is_scaling_event() {
            self.scale_only();
            return;
        }
        if util::is_recreate(&self.d) {
            self.rollout_recreate();
        } else {
            self.rollout_rolling();
        }
    }

    /// The actions: replica set creates/updates/deletes, the deployment's status and
    /// revision annotation, then the events.
    fn finish(self) -> Vec<Action> {
        let mut actions = self.writes;
        for tracked in &self.rss {
            match &tracked.observed {
                None => {
                    let mut body = tracked.current.clone();
                    body.metadata.creation_timestamp = None;
                    actions.push(Action::create(&body));
                }
                Some(observed) if tracked.delete => {
                    actions.push(Action::delete(observed, None));
                }
                Some(observed) if !same_replica_set(observed, &tracked.current) => {
                    actions.push(Action::update(&tracked.current));
                }
                Some(_) => {}
            }
        }
        if !status::same_status(self.d.status.as_ref(), self.observed.status.as_ref()) {
            actions.push(Action::update_status(&self.d));
        }
        let revision = |d: &Deployment| {
            d.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(REVISION_ANNOTATION))
                .cloned()
        };
        if let Some(next) =
            revision(&self.d).filter(|r| Some(r) != revision(self.observed).as_ref())
        {
            let annotations: BTreeMap<&str, String> = [(REVISION_ANNOTATION, next)].into();
            actions.push(Action::patch(
                self.observed,
                None,
                json!({ "metadata": { "annotations": annotations } }),
            ));
        }
        actions.extend(self.events);
        actions
    }
}

#[cfg(test)]
mod rollout_tests;
/// Equal but for absent versus empty annotations.
fn same_replica_set(a: &ReplicaSet, b: &ReplicaSet) -> bool {
    let annotations = |rs: &ReplicaSet| rs.metadata.annotations.clone().filter(|m| !m.is_empty());
    a.spec == b.spec
        && a.status == b.status
        && annotations(a) == annotations(b)
        && ObjectMetaWithoutAnnotations::of(a) == ObjectMetaWithoutAnnotations::of(b)
}

/// The metadata of a replica set, annotations aside.
#[derive(PartialEq)]
struct ObjectMetaWithoutAnnotations(k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta);

impl ObjectMetaWithoutAnnotations {
    fn of(rs: &ReplicaSet) -> Self {
        let mut meta = rs.metadata.clone();
        meta.annotations = None;
        ObjectMetaWithoutAnnotations(meta)
    }
}

#[cfg(test)]
mod tests;
