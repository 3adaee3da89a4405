//! The steps of a deployment sync (upstream `sync.go`, `rolling.go`, `recreate.go`):
//! finding or creating the new replica set, scaling it and the old ones, proportional
//! scaling, history cleanup, and the status at the end of each path.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use super::status::{self, FOUND_NEW_RS, NEW_RS_CREATED, PAUSED, PROGRESSING, RESUMED};
use super::util::{
    self, POD_TEMPLATE_HASH_LABEL, REVISION_ANNOTATION, by_creation, by_revision,
    deployment_replicas, max_surge, max_unavailable, rs_replicas,
};
use super::{Sync, Tracked};
use crate::common::{controller_ref, is_controlled_by, template_hash};
use crate::replicaset::claim::selector_selects;

/// (the new replica set, the old ones), as indices into `Sync::rss`.
type Split = (Option<usize>, Vec<usize>);

impl Sync<'_> {
    fn rs(&self, i: usize) -> &ReplicaSet {
        &self.rss[i].current
    }

    fn live(&self) -> Vec<usize> {
        (0..self.rss.len())
            .filter(|i| !self.rss[*i].delete)
            .collect()
    }

    fn active(&self, indices: &[usize]) -> Vec<usize> {
        indices
            .iter()
            .copied()
            .filter(|i| rs_replicas(self.rs(*i)) > 0)
            .collect()
    }

    fn sorted(
        &self,
        mut indices: Vec<usize>,
        order: fn(&ReplicaSet, &ReplicaSet) -> std::cmp::Ordering,
    ) -> Vec<usize> {
        indices.sort_by(|a, b| order(self.rs(*a), self.rs(*b)));
        indices
    }

    fn sum_replicas(&self, indices: &[usize]) -> i32 {
        indices.iter().map(|i| rs_replicas(self.rs(*i))).sum()
    }

    fn template(&self) -> k8s_openapi::api::core::v1::PodTemplateSpec {
        self.d
            .spec
            .as_ref()
            .map(|s| s.template.clone())
            .unwrap_or_default()
    }

    fn min_ready_seconds(&self) -> Option<i32> {
        self.d.spec.as_ref().and_then(|s| s.min_ready_seconds)
    }

    fn set_revision(&mut self, revision: &str) {
        let annotations = self
            .d
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new);
        if annotations.get(REVISION_ANNOTATION).map(String::as_str) != Some(revision) {
            annotations.insert(REVISION_ANNOTATION.into(), revision.into());
        }
    }

    fn set_condition(&mut self, condition: k8s_openapi::api::apps::v1::DeploymentCondition) {
        status::set(
            self.d.status.get_or_insert_with(Default::default),
            condition,
        );
    }

    /// Upstream's `getAllReplicaSetsAndSyncRevision`; `None` when the new replica set's
    /// name is taken (the collision count is bumped and the pass stops).
    pub(super) fn new_and_old(&mut self, create: bool) -> Option<Split> {
        let template = self.template();
        let live = self.sorted(self.live(), by_creation);
        let found = live.iter().copied().find(|i| {
            self.rs(*i)
                .spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .is_some_and(|t| util::equal_ignore_hash(t, &template))
        });
        let old: Vec<usize> = live.into_iter().filter(|i| Some(*i) != found).collect();
        let max_old = old
            .iter()
            .filter_map(|i| util::revision(self.rs(*i)))
            .max()
            .unwrap_or(0);
        let new_revision = max_old + 1;
        if let Some(i) = found {
            self.sync_existing_new(i, new_revision);
            return Some((Some(i), old));
        }
        if !create {
            return Some((None, old));
        }
        self.create_new(&template, &old, new_revision)
            .map(|i| (Some(i), old))
    }

    fn sync_existing_new(&mut self, i: usize, new_revision: i64) {
        let min_ready = self.min_ready_seconds();
        let d = self.d.clone();
        let rs = &mut self.rss[i].current;
        let annotated = util::set_new_rs_annotations(&d, rs, new_revision, true);
        let spec = rs.spec.get_or_insert_with(ReplicaSetSpec::default);
        if annotated || spec.min_ready_seconds != min_ready {
            spec.min_ready_seconds = min_ready;
            return;
        }
        let revision = rs
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REVISION_ANNOTATION))
            .cloned()
            .unwrap_or_default();
        let name = rs.metadata.name.clone().unwrap_or_default();
        self.set_revision(&revision);
        let has_progressing = self
            .d
            .status
            .as_ref()
            .and_then(|s| status::get(s, PROGRESSING))
            .is_some();
        if status::has_progress_deadline(&self.d) && !has_progressing {
            let message = format!("Found new replica set \"{name}\"");
            let condition = status::condition(PROGRESSING, "True", FOUND_NEW_RS, message, self.now);
            self.set_condition(condition);
        }
    }

    fn create_new(
        &mut self,
        template: &k8s_openapi::api::core::v1::PodTemplateSpec,
        old: &[usize],
        new_revision: i64,
    ) -> Option<usize> {
        let collision_count = self.d.status.as_ref().and_then(|s| s.collision_count);
        let hash = template_hash(template, collision_count);
        let name = format!("{}-{hash}", self.name());
        let taken = self.all_replica_sets.iter().any(|rs| {
            rs.metadata.namespace == self.d.metadata.namespace
                && rs.metadata.name.as_deref() == Some(name.as_str())
        });
        if taken {
            let status = self.d.status.get_or_insert_with(Default::default);
            status.collision_count = Some(collision_count.unwrap_or(0) + 1);
            return None;
        }
        let mut template = template.clone();
        let meta = template.metadata.get_or_insert_with(ObjectMeta::default);
        meta.labels
            .get_or_insert_with(BTreeMap::new)
            .insert(POD_TEMPLATE_HASH_LABEL.into(), hash.clone());
        let labels = meta.labels.clone();
        let mut selector = self
            .d
            .spec
            .as_ref()
            .map(|s| s.selector.clone())
            .unwrap_or_default();
        selector
            .match_labels
            .get_or_insert_with(BTreeMap::new)
            .insert(POD_TEMPLATE_HASH_LABEL.into(), hash);
        let mut rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: self.d.metadata.namespace.clone(),
                labels,
                owner_references: Some(vec![controller_ref(self.observed)]),
                creation_timestamp: Some(Time(self.now)),
                ..ObjectMeta::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(0),
                min_ready_seconds: self.min_ready_seconds(),
                selector,
                template: Some(template),
            }),
            status: None,
        };
        let index = self.rss.len();
        self.rss.push(Tracked {
            observed: None,
            current: rs.clone(),
            delete: false,
        });
        let mut all = old.to_vec();
        all.push(index);
        let replicas = self.new_rs_new_replicas(&all, index);
        if let Some(spec) = rs.spec.as_mut() {
            spec.replicas = Some(replicas);
        }
        util::set_new_rs_annotations(&self.d, &mut rs, new_revision, false);
        self.rss[index].current = rs;
        if replicas > 0 {
            self.event(
                "ScalingReplicaSet",
                format!("Scaled up replica set {name} from 0 to {replicas}"),
            );
        }
        self.set_revision(&new_revision.to_string());
        if status::has_progress_deadline(&self.d) {
            let message = format!("Created new replica set \"{name}\"");
            let condition =
                status::condition(PROGRESSING, "True", NEW_RS_CREATED, message, self.now);
            self.set_condition(condition);
        }
        Some(index)
    }

    /// How many replicas the new replica set may have now (upstream `NewRSNewReplicas`).
    fn new_rs_new_replicas(&self, all: &[usize], new_rs: usize) -> i32 {
        let replicas = deployment_replicas(&self.d);
        if util::is_recreate(&self.d) {
            return replicas;
        }
        let current = rs_replicas(self.rs(new_rs));
        let max_total = replicas + max_surge(&self.d);
        let total = self.sum_replicas(all);
        if total >= max_total {
            return current;
        }
        current + (max_total - total).min(replicas - current)
    }

    /// Upstream's `scaleReplicaSet`: sets the size and the replicas annotations; whether
    /// the size changed (then a ScalingReplicaSet event is recorded).
    fn scale_rs(&mut self, i: usize, new_scale: i32) -> bool {
        let replicas = deployment_replicas(&self.d);
        let max = replicas + max_surge(&self.d);
        let rs = &mut self.rss[i].current;
        let old_scale = rs_replicas(rs);
        if old_scale == new_scale
            && util::desired_replicas_annotation(rs) == Some(replicas)
            && util::max_replicas_annotation(rs) == Some(max)
        {
            return false;
        }
        rs.spec.get_or_insert_with(ReplicaSetSpec::default).replicas = Some(new_scale);
        util::set_replicas_annotations(rs, replicas, max);
        if old_scale == new_scale {
            return false;
        }
        let name = rs.metadata.name.clone().unwrap_or_default();
        let direction = if old_scale < new_scale { "up" } else { "down" };
        self.event(
            "ScalingReplicaSet",
            format!("Scaled {direction} replica set {name} from {old_scale} to {new_scale}"),
        );
        true
    }

    /// Upstream's `checkPausedConditions`.
    pub(super) fn check_paused_conditions(&mut self) {
        if !status::has_progress_deadline(&self.d) {
            return;
        }
        let reason = self
            .d
            .status
            .as_ref()
            .and_then(|s| status::get(s, PROGRESSING))
            .and_then(|c| c.reason.clone());
        if reason.as_deref() == Some(status::TIMED_OUT) {
            return;
        }
        let paused_recorded = reason.as_deref() == Some(PAUSED);
        if self.paused() && !paused_recorded {
            let c = status::condition(
                PROGRESSING,
                "Unknown",
                PAUSED,
                "Deployment is paused",
                self.now,
            );
            self.set_condition(c);
        } else if !self.paused() && paused_recorded {
            let c = status::condition(
                PROGRESSING,
                "Unknown",
                RESUMED,
                "Deployment is resumed",
                self.now,
            );
            self.set_condition(c);
        }
    }

    /// Whether an active replica set was last scaled for another deployment size.
    pub(super) fn is_scaling_event(&mut self) -> bool {
        let Some((new_rs, old)) = self.new_and_old(false) else {
            return false;
        };
        let replicas = deployment_replicas(&self.d);
        let all: Vec<usize> = old.into_iter().chain(new_rs).collect();
        self.active(&all).into_iter().any(|i| {
            util::desired_replicas_annotation(self.rs(i)).is_some_and(|desired| desired != replicas)
        })
    }

    /// Upstream's `sync`: scale (paused or resized deployments), clean up when paused,
    /// status.
    pub(super) fn scale_only(&mut self) {
        let Some((new_rs, old)) = self.new_and_old(false) else {
            return;
        };
        self.scale(new_rs, &old);
        if self.paused() {
            self.cleanup(&old);
        }
        self.sync_status(new_rs, &old);
    }

    /// Upstream's `scale`: one active replica set takes the whole size; a saturated new
    /// one makes the old ones go; otherwise sizes change in proportion.
    fn scale(&mut self, new_rs: Option<usize>, old: &[usize]) {
        let replicas = deployment_replicas(&self.d);
        let all: Vec<usize> = old.iter().copied().chain(new_rs).collect();
        let active = self.active(&all);
        let target = match active.len() {
            0 => new_rs.or_else(|| self.sorted(old.to_vec(), by_creation).last().copied()),
            1 => Some(active[0]),
            _ => None,
        };
        if let Some(i) = target {
            if rs_replicas(self.rs(i)) != replicas {
                self.scale_rs(i, replicas);
            }
            return;
        }
        if new_rs.is_some_and(|i| self.saturated(i)) {
            for i in self.active(old) {
                self.scale_rs(i, 0);
            }
            return;
        }
        if util::is_recreate(&self.d) {
            return;
        }
        let allowed = if replicas > 0 {
            replicas + max_surge(&self.d)
        } else {
            0
        };
        let to_add = allowed - self.sum_replicas(&active);
        let order = if to_add > 0 {
            util::by_size_newer
        } else {
            util::by_size_older
        };
        let active = self.sorted(active, order);
        let mut added = 0;
        let mut sizes = Vec::with_capacity(active.len());
        for &i in &active {
            let size = rs_replicas(self.rs(i));
            if to_add == 0 {
                sizes.push(size);
                continue;
            }
            let proportion = self.proportion(i, to_add, added);
            sizes.push(size + proportion);
            added += proportion;
        }
        if let Some(first) = sizes.first_mut()
            && to_add != 0
        {
            *first = (*first + to_add - added).max(0);
        }
        for (i, size) in active.into_iter().zip(sizes) {
            self.scale_rs(i, size);
        }
    }

    fn saturated(&self, i: usize) -> bool {
        let rs = self.rs(i);
        let replicas = deployment_replicas(&self.d);
        util::desired_replicas_annotation(rs) == Some(replicas)
            && rs_replicas(rs) == replicas
            && status::status_available(rs) == replicas
    }

    /// Upstream's `GetReplicaSetProportion`.
    fn proportion(&self, i: usize, to_add: i32, added: i32) -> i32 {
        let rs = self.rs(i);
        let size = rs_replicas(rs);
        if size == 0 || to_add == 0 || to_add == added {
            return 0;
        }
        let fraction = self.fraction(rs);
        let allowed = to_add - added;
        if to_add > 0 {
            fraction.min(allowed)
        } else {
            fraction.max(allowed)
        }
    }

    /// Upstream's `getReplicaSetFraction`.
    fn fraction(&self, rs: &ReplicaSet) -> i32 {
        let replicas = deployment_replicas(&self.d);
        if replicas == 0 {
            return -rs_replicas(rs);
        }
        let max = replicas + max_surge(&self.d);
        let before = match util::max_replicas_annotation(rs) {
            Some(n) if n != 0 => n,
            _ => {
                let status_replicas = self.d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0);
                if status_replicas == 0 {
                    return 0;
                }
                status_replicas
            }
        };
        let scaled = f64::from(rs_replicas(rs)) * f64::from(max) / f64::from(before);
        #[allow(
            clippy::cast_possible_truncation,
            reason = "a replica count fits an i32"
        )]
        let rounded = scaled.round() as i32;
        rounded - rs_replicas(rs)
    }

    /// Upstream's `cleanupDeployment`: deletes the oldest old replica sets beyond
    /// `revisionHistoryLimit` that are scaled to 0 and settled.
    fn cleanup(&mut self, old: &[usize]) {
        let Some(limit) = self
            .d
            .spec
            .as_ref()
            .and_then(|s| s.revision_history_limit)
            .filter(|l| *l != i32::MAX)
        else {
            return;
        };
        let cleanable: Vec<usize> = old
            .iter()
            .copied()
            .filter(|i| self.rs(*i).metadata.deletion_timestamp.is_none())
            .collect();
        let excess =
            usize::try_from(i64::try_from(cleanable.len()).unwrap_or(0) - i64::from(limit))
                .unwrap_or(0);
        for i in self.sorted(cleanable, by_revision).into_iter().take(excess) {
            let rs = self.rs(i);
            let settled = rs.status.as_ref().map_or(0, |s| s.replicas) == 0
                && rs_replicas(rs) == 0
                && rs.metadata.generation.unwrap_or(0)
                    <= rs
                        .status
                        .as_ref()
                        .and_then(|s| s.observed_generation)
                        .unwrap_or(0);
            if settled && self.rss[i].observed.is_some() {
                self.rss[i].delete = true;
            }
        }
    }

    fn all_of(&self, new_rs: Option<usize>, old: &[usize]) -> Vec<ReplicaSet> {
        old.iter()
            .copied()
            .chain(new_rs)
            .map(|i| self.rs(i).clone())
            .collect()
    }

    /// Upstream's `syncDeploymentStatus`.
    pub(super) fn sync_status(&mut self, new_rs: Option<usize>, old: &[usize]) {
        let all = self.all_of(new_rs, old);
        let refs: Vec<&ReplicaSet> = all.iter().collect();
        let new_ref = new_rs.map(|i| self.rs(i).clone());
        self.d.status = Some(status::calculate(
            &self.d,
            &refs,
            new_ref.as_ref(),
            self.now,
        ));
    }

    /// Upstream's `syncRolloutStatus`.
    fn sync_rollout_status(&mut self, new_rs: Option<usize>, old: &[usize]) {
        let all = self.all_of(new_rs, old);
        let refs: Vec<&ReplicaSet> = all.iter().collect();
        let new_ref = new_rs.map(|i| self.rs(i).clone());
        self.d.status = Some(status::rollout(&self.d, &refs, new_ref.as_ref(), self.now));
    }

    fn complete(&self) -> bool {
        status::deployment_complete(&self.d, &self.d.status.clone().unwrap_or_default())
    }

    /// Upstream's `rolloutRolling`.
    pub(super) fn rollout_rolling(&mut self) {
        let Some((Some(new_rs), old)) = self.new_and_old(true) else {
            return;
        };
        let all: Vec<usize> = old.iter().copied().chain([new_rs]).collect();
        if self.reconcile_new(&all, new_rs) || self.reconcile_old(&all, &old, new_rs) {
            self.sync_rollout_status(Some(new_rs), &old);
            return;
        }
        if self.complete() {
            self.cleanup(&old);
        }
        self.sync_rollout_status(Some(new_rs), &old);
    }

    fn reconcile_new(&mut self, all: &[usize], new_rs: usize) -> bool {
        let replicas = deployment_replicas(&self.d);
        let current = rs_replicas(self.rs(new_rs));
        if current == replicas {
            return false;
        }
        if current > replicas {
            return self.scale_rs(new_rs, replicas);
        }
        let next = self.new_rs_new_replicas(all, new_rs);
        self.scale_rs(new_rs, next)
    }

    fn reconcile_old(&mut self, all: &[usize], old: &[usize], new_rs: usize) -> bool {
        let active_old = self.active(old);
        if self.sum_replicas(&active_old) == 0 {
            return false;
        }
        let min_available = deployment_replicas(&self.d) - max_unavailable(&self.d);
        let new_unavailable =
            rs_replicas(self.rs(new_rs)) - status::status_available(self.rs(new_rs));
        let max_scaled_down = self.sum_replicas(all) - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return false;
        }
        let active_old = self.sorted(active_old, by_creation);
        let cleaned = self.cleanup_unhealthy(&active_old, max_scaled_down);
        let scaled = self.scale_down_old_for_rolling(&active_old, new_rs, min_available);
        cleaned + scaled > 0
    }

    /// Scales old replica sets down by their unavailable replicas, oldest first.
    fn cleanup_unhealthy(&mut self, old: &[usize], max: i32) -> i32 {
        let mut total = 0;
        for &i in old {
            if total >= max {
                break;
            }
            let size = rs_replicas(self.rs(i));
            let available = status::status_available(self.rs(i));
            if size == 0 || size == available {
                continue;
            }
            let down = (max - total).min(size - available);
            self.scale_rs(i, size - down);
            total += down;
        }
        total
    }

    /// Scales old replica sets down as far as availability allows, oldest first.
    fn scale_down_old_for_rolling(
        &mut self,
        old: &[usize],
        new_rs: usize,
        min_available: i32,
    ) -> i32 {
        let available: i32 = old
            .iter()
            .chain([&new_rs])
            .map(|i| status::status_available(self.rs(*i)))
            .sum();
        if available <= min_available {
            return 0;
        }
        let budget = available - min_available;
        let mut total = 0;
        for &i in old {
            if total >= budget {
                break;
            }
            let size = rs_replicas(self.rs(i));
            if size == 0 {
                continue;
            }
            let down = size.min(budget - total);
            self.scale_rs(i, size - down);
            total += down;
        }
        total
    }

    /// Upstream's `rolloutRecreate`.
    pub(super) fn rollout_recreate(&mut self) {
        let Some((new_rs, old)) = self.new_and_old(false) else {
            return;
        };
        let mut scaled_down = false;
        for i in self.active(&old) {
            scaled_down |= self.scale_rs(i, 0);
        }
        if scaled_down || self.old_pods_running(new_rs, &old) {
            self.sync_rollout_status(new_rs, &old);
            return;
        }
        let (new_rs, old) = match new_rs {
            Some(_) => (new_rs, old),
            None => match self.new_and_old(true) {
                Some(split) => split,
                None => return,
            },
        };
        if let Some(i) = new_rs {
            self.scale_rs(i, deployment_replicas(&self.d));
        }
        if self.complete() {
            self.cleanup(&old);
        }
        self.sync_rollout_status(new_rs, &old);
    }

    /// Whether pods of old replica sets still exist (and are not finished).
    fn old_pods_running(&self, new_rs: Option<usize>, old: &[usize]) -> bool {
        if old
            .iter()
            .any(|i| self.rs(*i).status.as_ref().is_some_and(|s| s.replicas > 0))
        {
            return true;
        }
        let Some(selector) = self.d.spec.as_ref().map(|s| &s.selector) else {
            return false;
        };
        let new_uid = new_rs.and_then(|i| self.rs(i).metadata.uid.clone());
        let old_uids: Vec<String> = self
            .rss
            .iter()
            .filter_map(|t| t.current.metadata.uid.clone())
            .filter(|uid| Some(uid) != new_uid.as_ref())
            .collect();
        self.pods.iter().any(|pod| {
            pod.metadata.namespace == self.d.metadata.namespace
                && selector_selects(selector, pod.metadata.labels.as_ref())
                && old_uids
                    .iter()
                    .any(|uid| is_controlled_by(&pod.metadata, uid))
                && !matches!(
                    pod.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Failed" | "Succeeded")
                )
        })
    }
}
