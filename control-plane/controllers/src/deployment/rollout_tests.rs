//! Whole rollouts: the deployment and replicaset planners run against an in-memory
//! cluster (a fake apiserver applying their actions, a fake kubelet starting pods) until
//! they converge, checking maxSurge/maxUnavailable after every write.

use k8s_openapi::api::apps::v1::DeploymentStrategy;
use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use serde_json::Value;

use super::status::PROGRESSING;
use super::tests::{NOW, deployment, ts};
use super::util::{max_surge, max_unavailable, rs_replicas};
use super::*;
use crate::action::ObjectRef;
use crate::common::{is_available, is_controlled_by};
use crate::replicaset;

/// Seconds a deleted pod takes to go away.
const TERMINATION_SECONDS: i64 = 2;

struct World {
    d: Deployment,
    rss: Vec<ReplicaSet>,
    pods: Vec<Pod>,
    now: i64,
    next_id: u64,
    events: Vec<String>,
    /// Pods of this image never become ready.
    broken_image: Option<String>,
}

fn image_of(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref()?.containers.first()?.image.as_deref()
}

impl World {
    fn new(d: Deployment) -> Self {
        World {
            d,
            rss: Vec::new(),
            pods: Vec::new(),
            now: NOW,
            next_id: 0,
            events: Vec::new(),
            broken_image: None,
        }
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn set_image(&mut self, image: &str) {
        let spec = self.d.spec.as_mut().expect("spec");
        spec.template = super::tests::template(image);
        self.d.metadata.generation = self.d.metadata.generation.map(|g| g + 1);
    }

    fn rs_index(&self, target: &ObjectRef) -> Option<usize> {
        self.rss
            .iter()
            .position(|rs| rs.metadata.name.as_deref() == Some(&target.name))
    }

    fn apply(&mut self, actions: Vec<Action>) {
        for action in actions {
            self.apply_one(action);
        }
    }

    fn apply_one(&mut self, action: Action) {
        match action {
            Action::Create { target, body } if target.kind == "ReplicaSet" => {
                let mut rs: ReplicaSet = serde_json::from_value(body).expect("rs");
                assert!(self.rs_index(&target).is_none(), "{} exists", target.name);
                let id = self.id();
                rs.metadata.uid = Some(format!("rs-{id}"));
                rs.metadata.creation_timestamp = Some(Time(ts(self.now)));
                rs.metadata.generation = Some(1);
                self.rss.push(rs);
            }
            Action::Create { target, body } if target.kind == "Pod" => {
                let mut pod: Pod = serde_json::from_value(body).expect("pod");
                let id = self.id();
                let prefix = pod.metadata.generate_name.clone().unwrap_or_default();
                pod.metadata.name = Some(format!("{prefix}{id}"));
                pod.metadata.uid = Some(format!("pod-{id}"));
                pod.metadata.creation_timestamp = Some(Time(ts(self.now)));
                pod.status = Some(PodStatus {
                    phase: Some("Pending".into()),
                    ..PodStatus::default()
                });
                self.pods.push(pod);
            }
            Action::Update { target, body } if target.kind == "ReplicaSet" => {
                let i = self.rs_index(&target).expect("updated rs exists");
                let mut next: ReplicaSet = serde_json::from_value(body).expect("rs");
                let old = &self.rss[i];
                next.status = old.status.clone();
                let generation = old.metadata.generation.unwrap_or(1);
                next.metadata.generation = Some(if next.spec == old.spec {
                    generation
                } else {
                    generation + 1
                });
                self.rss[i] = next;
            }
            Action::UpdateStatus { target, body } => {
                if target.kind == "Deployment" {
                    self.d.status = serde_json::from_value(body["status"].clone()).expect("status");
                } else if let Some(i) = self.rs_index(&target) {
                    self.rss[i].status =
                        serde_json::from_value(body["status"].clone()).expect("status");
                }
            }
            Action::Patch { target, patch, .. } => {
                if target.kind == "Deployment" {
                    let annotations = self
                        .d
                        .metadata
                        .annotations
                        .get_or_insert_with(Default::default);
                    for (k, v) in patch["metadata"]["annotations"]
                        .as_object()
                        .into_iter()
                        .flatten()
                    {
                        annotations.insert(k.clone(), v.as_str().unwrap_or_default().into());
                    }
                } else {
                    panic!("unexpected patch of {target:?}: {patch}");
                }
            }
            Action::Delete { target, .. } if target.kind == "ReplicaSet" => {
                let i = self.rs_index(&target).expect("deleted rs exists");
                let rs = self.rss.remove(i);
                let uid = rs.metadata.uid.unwrap_or_default();
                // The garbage collector's background deletion.
                self.pods.retain(|p| !is_controlled_by(&p.metadata, &uid));
            }
            Action::Delete { target, .. } if target.kind == "Pod" => {
                let now = self.now;
                let pod = self
                    .pods
                    .iter_mut()
                    .find(|p| p.metadata.name.as_deref() == Some(&target.name))
                    .expect("deleted pod exists");
                pod.metadata.deletion_timestamp.get_or_insert(Time(ts(now)));
            }
            Action::Event { message, .. } => self.events.push(message),
            other => panic!("unexpected action {other:?}"),
        }
    }

    /// Starts pending pods (ready at once unless broken) and removes terminated ones.
    fn kubelet(&mut self) {
        let now = self.now;
        self.pods.retain(|p| {
            p.metadata
                .deletion_timestamp
                .as_ref()
                .is_none_or(|Time(t)| t.as_second() + TERMINATION_SECONDS > now)
        });
        for pod in &mut self.pods {
            let broken = self
                .broken_image
                .as_deref()
                .is_some_and(|b| image_of(pod) == Some(b));
            let status = pod.status.get_or_insert_with(PodStatus::default);
            if status.phase.as_deref() == Some("Pending") && !broken {
                status.phase = Some("Running".into());
                status.conditions = Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    last_transition_time: Some(Time(ts(now))),
                    ..PodCondition::default()
                }]);
            }
        }
    }

    fn run_replica_sets(&mut self) {
        for rs in self.rss.clone() {
            let actions = replicaset::plan(&rs, &self.pods, ts(self.now));
            self.apply(actions);
        }
    }

    /// One round: deployment controller, replicaset controller, kubelet, replicaset
    /// controller (status); `check` runs after each write batch.
    fn step(&mut self, check: &mut dyn FnMut(&World)) {
        let actions = plan(&self.d, &self.rss, &self.pods, ts(self.now));
        self.apply(actions);
        check(self);
        self.run_replica_sets();
        check(self);
        self.kubelet();
        check(self);
        self.run_replica_sets();
        check(self);
        self.now += 1;
    }

    /// Done as `kubectl rollout status` sees it (generation observed, every replica
    /// updated and available, no old ones left), with the Progressing condition saying so
    /// and no pod still terminating.
    fn converged(&self) -> bool {
        let status = self.d.status.clone().unwrap_or_default();
        let replicas = Some(util::deployment_replicas(&self.d));
        status::get(&status, PROGRESSING).and_then(|c| c.reason.as_deref())
            == Some(status::NEW_RS_AVAILABLE)
            && status.observed_generation == self.d.metadata.generation
            && status.updated_replicas == replicas
            && status.replicas == replicas
            && status.available_replicas == replicas
            && self
                .pods
                .iter()
                .all(|p| p.metadata.deletion_timestamp.is_none())
    }

    fn run_until_converged(&mut self, max_steps: usize, check: &mut dyn FnMut(&World)) -> usize {
        for n in 0..max_steps {
            if self.converged() {
                return n;
            }
            self.step(check);
        }
        panic!("no convergence in {max_steps} steps: {:?}", self.sizes());
    }

    /// (replica set image, spec replicas), oldest first.
    fn sizes(&self) -> Vec<(String, i32)> {
        self.rss
            .iter()
            .map(|rs| {
                let image = rs
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .and_then(|t| t.spec.as_ref())
                    .and_then(|s| s.containers.first())
                    .and_then(|c| c.image.clone())
                    .unwrap_or_default();
                (image, rs_replicas(rs))
            })
            .collect()
    }

    fn live_pods(&self) -> impl Iterator<Item = &Pod> {
        self.pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
    }

    fn available_pods(&self) -> usize {
        self.live_pods()
            .filter(|p| is_available(p, 0, ts(self.now)))
            .count()
    }

    fn revision(&self) -> Option<String> {
        self.d
            .metadata
            .annotations
            .as_ref()?
            .get(util::REVISION_ANNOTATION)
            .cloned()
    }
}

fn no_check(_: &World) {}

/// Checks maxSurge (spec totals and live pods) and maxUnavailable (available pods).
fn rolling_bounds(world: &World) {
    let replicas = util::deployment_replicas(&world.d);
    let ceiling = replicas + max_surge(&world.d);
    let floor = usize::try_from(replicas - max_unavailable(&world.d)).unwrap_or(0);
    let spec_total: i32 = world.rss.iter().map(rs_replicas).sum();
    assert!(
        spec_total <= ceiling,
        "{spec_total} > {ceiling}: {:?}",
        world.sizes()
    );
    let live = i32::try_from(world.live_pods().count()).unwrap_or(i32::MAX);
    assert!(
        live <= ceiling,
        "{live} pods > {ceiling}: {:?}",
        world.sizes()
    );
    let available = world.available_pods();
    assert!(
        available >= floor,
        "{available} available < {floor}: {:?}",
        world.sizes()
    );
}

fn settled(replicas: i32, image: &str) -> World {
    let mut world = World::new(deployment(replicas, image));
    world.run_until_converged(20, &mut no_check);
    world
}

#[test]
fn a_fresh_deployment_converges() {
    let mut world = World::new(deployment(3, "nginx:1"));
    world.run_until_converged(20, &mut no_check);
    assert_eq!(world.sizes(), [("nginx:1".to_string(), 3)]);
    assert_eq!(world.available_pods(), 3);
    let status = world.d.status.clone().expect("status");
    let name = world.rss[0].metadata.name.clone().expect("name");
    let progressing = status::get(&status, PROGRESSING).expect("progressing");
    assert_eq!(
        progressing.message.as_deref(),
        Some(format!("ReplicaSet \"{name}\" has successfully progressed.").as_str())
    );
    assert_eq!(
        (
            status.replicas,
            status.updated_replicas,
            status.ready_replicas,
            status.available_replicas,
            status.unavailable_replicas
        ),
        (Some(3), Some(3), Some(3), Some(3), Some(0))
    );
    assert_eq!(world.revision().as_deref(), Some("1"));
    assert_eq!(
        world.events[0],
        format!("Scaled up replica set {name} from 0 to 3")
    );
}

#[test]
fn an_image_change_rolls_within_surge_and_unavailability() {
    let mut world = settled(10, "nginx:1");
    world.set_image("nginx:2");
    // 10 replicas, 25%: surge 3, unavailable 2.
    world.step(&mut rolling_bounds);
    assert_eq!(
        world.sizes(),
        [("nginx:1".into(), 8), ("nginx:2".into(), 3)]
    );
    let steps = world.run_until_converged(60, &mut rolling_bounds);
    assert!(steps > 2, "the rollout went in steps ({steps})");
    assert_eq!(
        world.sizes(),
        [("nginx:1".into(), 0), ("nginx:2".into(), 10)]
    );
    assert!(world.live_pods().all(|p| image_of(p) == Some("nginx:2")));
    assert_eq!(world.revision().as_deref(), Some("2"));
    let new_name = world.rss[1].metadata.name.clone().expect("name");
    assert!(
        world
            .events
            .contains(&format!("Scaled up replica set {new_name} from 0 to 3")),
        "{:?}",
        world.events
    );
}

#[test]
fn a_broken_image_stalls_within_bounds_and_times_out() {
    let mut world = settled(4, "nginx:1");
    world.broken_image = Some("nginx:bad".into());
    world.set_image("nginx:bad");
    for _ in 0..5 {
        world.step(&mut rolling_bounds);
    }
    // surge 1, unavailable 1: two new (never ready) pods, one old pod gone.
    assert_eq!(
        world.sizes(),
        [("nginx:1".into(), 3), ("nginx:bad".into(), 2)]
    );
    let reason = |w: &World| {
        w.d.status
            .as_ref()
            .and_then(|s| status::get(s, PROGRESSING))
            .and_then(|c| c.reason.clone())
    };
    assert_eq!(reason(&world).as_deref(), Some("ReplicaSetUpdated"));
    world.now += 600;
    world.step(&mut rolling_bounds);
    assert_eq!(reason(&world).as_deref(), Some("ProgressDeadlineExceeded"));
    // Fixing the image resumes the rollout.
    world.set_image("nginx:2");
    world.run_until_converged(40, &mut rolling_bounds);
    assert!(world.live_pods().all(|p| image_of(p) == Some("nginx:2")));
}

#[test]
fn recreate_never_runs_old_and_new_pods_together() {
    let mut d = deployment(3, "nginx:1");
    if let Some(spec) = d.spec.as_mut() {
        spec.strategy = Some(DeploymentStrategy {
            type_: Some("Recreate".into()),
            rolling_update: None,
        });
    }
    let mut world = World::new(d);
    world.run_until_converged(20, &mut no_check);
    world.set_image("nginx:2");
    let mut saw_gap = false;
    world.run_until_converged(30, &mut |w: &World| {
        let images: Vec<Option<&str>> = w.pods.iter().map(image_of).collect();
        assert!(
            !(images.contains(&Some("nginx:1")) && images.contains(&Some("nginx:2"))),
            "old and new pods together: {images:?}"
        );
        if w.rss.len() == 1
            && w.pods
                .iter()
                .any(|p| p.metadata.deletion_timestamp.is_some())
        {
            saw_gap = true;
        }
    });
    assert!(
        saw_gap,
        "the new replica set waited for old pods to terminate"
    );
    assert_eq!(
        world.sizes(),
        [("nginx:1".into(), 0), ("nginx:2".into(), 3)]
    );
}

#[test]
fn undo_brings_the_old_replica_set_back() {
    let mut world = settled(4, "nginx:1");
    world.set_image("nginx:2");
    world.run_until_converged(40, &mut rolling_bounds);
    let first_uid = world.rss[0].metadata.uid.clone();
    // `kubectl rollout undo`: the old template is patched back.
    world.set_image("nginx:1");
    world.run_until_converged(40, &mut rolling_bounds);
    assert_eq!(world.rss.len(), 2, "no third replica set");
    assert_eq!(world.rss[0].metadata.uid, first_uid);
    assert_eq!(
        world.sizes(),
        [("nginx:1".into(), 4), ("nginx:2".into(), 0)]
    );
    assert_eq!(world.revision().as_deref(), Some("3"));
    let annotations = world.rss[0]
        .metadata
        .annotations
        .clone()
        .unwrap_or_default();
    assert_eq!(
        annotations
            .get(util::REVISION_ANNOTATION)
            .map(String::as_str),
        Some("3")
    );
    assert_eq!(
        annotations
            .get(util::REVISION_HISTORY_ANNOTATION)
            .map(String::as_str),
        Some("1")
    );
}

#[test]
fn old_replica_sets_beyond_the_history_limit_are_deleted() {
    let mut d = deployment(2, "nginx:1");
    if let Some(spec) = d.spec.as_mut() {
        spec.revision_history_limit = Some(2);
    }
    let mut world = World::new(d);
    world.run_until_converged(20, &mut no_check);
    for n in 2..=6 {
        world.set_image(&format!("nginx:{n}"));
        world.run_until_converged(40, &mut rolling_bounds);
        world.step(&mut rolling_bounds);
    }
    let images: Vec<String> = world.sizes().into_iter().map(|(image, _)| image).collect();
    assert_eq!(images, ["nginx:4", "nginx:5", "nginx:6"]);
    assert_eq!(world.revision().as_deref(), Some("6"));
}

#[test]
fn adopted_pods_need_no_new_ones() {
    // A pod matching the replica set's selector, left by a deleted owner, is adopted.
    let mut world = settled(2, "nginx:1");
    let rs = world.rss[0].clone();
    let mut stray = replicaset::pod_from_template(&rs);
    stray.metadata = ObjectMeta {
        name: Some("stray".into()),
        uid: Some("stray".into()),
        namespace: Some("default".into()),
        labels: stray.metadata.labels.clone(),
        owner_references: Some(vec![OwnerReference {
            controller: Some(false),
            ..OwnerReference::default()
        }]),
        ..ObjectMeta::default()
    };
    stray.status = Some(PodStatus {
        phase: Some("Running".into()),
        ..PodStatus::default()
    });
    world.pods.push(stray);
    let actions = replicaset::plan(&rs, &world.pods, ts(world.now));
    let adopted: Vec<&Value> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Patch { target, patch, .. } if target.name == "stray" => Some(patch),
            _ => None,
        })
        .collect();
    assert_eq!(adopted.len(), 1);
    assert_eq!(
        adopted[0]["metadata"]["ownerReferences"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    // 3 pods for 2 replicas: the unready stray goes.
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Delete { target, .. } if target.name == "stray"))
    );
}
