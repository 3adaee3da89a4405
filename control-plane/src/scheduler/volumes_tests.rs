//! The state's volume side: which watch events move unschedulable pods, and PreBind's
//! check of the pv controller's progress.

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::jiff::Timestamp;
use kwk_scheduler::plugins::volume_binding::Binding;
use serde_json::{Value, json};

use super::PreBindError;
use crate::scheduler::state::SchedulerState;

fn now() -> Timestamp {
    Timestamp::from_second(1_700_000_000).expect("timestamp")
}

fn pv(version: &str, extra: Value) -> PersistentVolume {
    let mut value = json!({
        "metadata": {"name": "disk", "resourceVersion": version},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                 "storageClassName": "local"},
        "status": {"phase": "Available"},
    });
    if let (Some(base), Value::Object(extra)) = (value["spec"].as_object_mut(), extra) {
        base.extend(extra);
    }
    serde_json::from_value(value).expect("pv")
}

fn claim(extra: Value) -> PersistentVolumeClaim {
    let mut value = json!({
        "metadata": {"name": "data", "namespace": "default", "uid": "uid-data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "local",
                 "resources": {"requests": {"storage": "1Gi"}}},
        "status": {"phase": "Pending"},
    });
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            if let (Some(base), Value::Object(v)) = (value[&k].as_object_mut(), v) {
                base.extend(v);
            }
        }
    }
    serde_json::from_value(value).expect("claim")
}

/// A state with one pending pod made unschedulable.
fn with_unschedulable_pod() -> SchedulerState {
    let mut state = SchedulerState::new("default-scheduler");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "i"}]},
    }))
    .expect("pod");
    state.apply_pod(pod, now());
    let popped = state.queue.pop(now()).expect("queued");
    state.queue.add_unschedulable(&popped.key, now());
    state
}

fn unschedulable(state: &SchedulerState) -> usize {
    state.queue.lengths().2
}

#[test]
fn only_relevant_volume_changes_move_unschedulable_pods() {
    let bound_ref = json!({"claimRef": {"namespace": "default", "name": "data", "uid": "u"}});
    // (what, first object, second object, whether the second moves the pod)
    let cases: Vec<(&str, PersistentVolume, PersistentVolume, bool)> = vec![
        (
            "same volume again",
            pv("1", json!({})),
            pv("1", json!({})),
            false,
        ),
        (
            "new resourceVersion only",
            pv("1", json!({})),
            pv("2", json!({})),
            false,
        ),
        ("claimRef set", pv("1", json!({})), pv("2", bound_ref), true),
        (
            "capacity grows",
            pv("1", json!({})),
            pv("2", json!({"capacity": {"storage": "5Gi"}})),
            true,
        ),
    ];
    for (what, first, second, moves) in cases {
        let mut state = with_unschedulable_pod();
        state.snapshot.volumes_mut().upsert_volume(first);
        assert_eq!(state.apply_pv(second, now()), moves, "{what}");
        assert_eq!(unschedulable(&state), usize::from(!moves), "{what}");
    }
    let mut state = with_unschedulable_pod();
    assert!(state.apply_pv(pv("1", json!({})), now()), "a new volume");
    assert_eq!(unschedulable(&state), 0);

    let mut state = with_unschedulable_pod();
    assert!(state.apply_pvc(claim(json!({})), now()));
    let mut state = with_unschedulable_pod();
    state.snapshot.volumes_mut().upsert_claim(claim(json!({})));
    assert!(!state.apply_pvc(claim(json!({})), now()), "unchanged claim");
    assert_eq!(unschedulable(&state), 1);
    let completed = claim(
        json!({"metadata": {"annotations": {"pv.kubernetes.io/bind-completed": "yes"}},
        "spec": {"volumeName": "disk"}}),
    );
    assert!(state.apply_pvc(completed, now()), "bound claim");
    assert_eq!(unschedulable(&state), 0);
}

fn binding() -> Binding {
    Binding {
        volume: "disk".into(),
        claim_namespace: "default".into(),
        claim_name: "data".into(),
    }
}

#[test]
fn pre_bind_waits_for_the_pv_controller() {
    let mut state = SchedulerState::new("default-scheduler");
    state.apply_pv(pv("5", json!({})), now());
    state.apply_pvc(claim(json!({})), now());
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "i"}]},
    }))
    .expect("pod");
    state.assume(&pod, "n1");

    // Assumed: the volume reads as bound to the claim, and is written that way.
    let written = state.assume_volumes(&[binding()]);
    assert_eq!(written.len(), 1);
    let claim_ref = written[0].spec.as_ref().and_then(|s| s.claim_ref.clone());
    assert_eq!(claim_ref.and_then(|r| r.uid).as_deref(), Some("uid-data"));
    let cached = state.snapshot.volumes().volume("disk").expect("volume");
    assert!(cached.spec.as_ref().is_some_and(|s| s.claim_ref.is_some()));

    let versions = [Some("6".to_string())];
    let check = |state: &SchedulerState| state.volumes_bound("default/p", &[binding()], &versions);
    // The watch has not delivered the write yet.
    assert!(matches!(check(&state), Ok(false)));
    // It has; the claim is not bound yet.
    let bound_ref =
        json!({"claimRef": {"namespace": "default", "name": "data", "uid": "uid-data"}});
    state.apply_pv(pv("6", bound_ref), now());
    assert!(matches!(check(&state), Ok(false)));
    // The pv controller completed the binding.
    state.apply_pvc(
        claim(
            json!({"metadata": {"annotations": {"pv.kubernetes.io/bind-completed": "yes"}},
            "spec": {"volumeName": "disk"}}),
        ),
        now(),
    );
    assert!(matches!(check(&state), Ok(true)));

    // Someone reset the volume's claimRef.
    state.apply_pv(pv("7", json!({})), now());
    assert!(matches!(check(&state), Err(PreBindError::ClaimRefReset(_))));
    // The pod went away.
    state.forget("default/p");
    assert!(matches!(check(&state), Err(PreBindError::PodGone)));
}

#[test]
fn a_failed_pre_bind_frees_the_volume() {
    let mut state = SchedulerState::new("default-scheduler");
    state.apply_pv(pv("5", json!({})), now());
    state.apply_pvc(claim(json!({})), now());
    state.assume_volumes(&[binding()]);
    state.restore_volumes(&[binding()]);
    let cached = state.snapshot.volumes().volume("disk").expect("volume");
    assert!(cached.spec.as_ref().is_some_and(|s| s.claim_ref.is_none()));
}
