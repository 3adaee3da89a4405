//! Table tests of the binder's planner: which volume a claim gets, and the phases written.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ObjectReference, PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimStatus, PersistentVolumeSpec, PersistentVolumeStatus,
    VolumeResourceRequirements,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde_json::Value;

use super::*;

fn pv(name: &str, size: &str, modes: &[&str]) -> PersistentVolume {
    PersistentVolume {
        metadata: ObjectMeta {
            name: Some(name.into()),
            resource_version: Some("7".into()),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeSpec {
            capacity: Some(BTreeMap::from([("storage".into(), Quantity(size.into()))])),
            access_modes: Some(modes.iter().map(|m| m.to_string()).collect()),
            ..PersistentVolumeSpec::default()
        }),
        status: Some(PersistentVolumeStatus {
            phase: Some("Available".into()),
            ..PersistentVolumeStatus::default()
        }),
    }
}

fn with_class(mut v: PersistentVolume, class: &str) -> PersistentVolume {
    v.spec.as_mut().unwrap().storage_class_name = Some(class.into());
    v
}

fn with_claim_ref(
    mut v: PersistentVolume,
    name: &str,
    uid: Option<&str>,
    phase: &str,
) -> PersistentVolume {
    v.spec.as_mut().unwrap().claim_ref = Some(ObjectReference {
        kind: Some("PersistentVolumeClaim".into()),
        namespace: Some("ns".into()),
        name: Some(name.into()),
        uid: uid.map(String::from),
        ..ObjectReference::default()
    });
    v.status.as_mut().unwrap().phase = Some(phase.into());
    v
}

fn pvc(name: &str, size: &str, modes: &[&str]) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("ns".into()),
            uid: Some(format!("uid-{name}")),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(modes.iter().map(|m| m.to_string()).collect()),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".into(), Quantity(size.into()))])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: Some(PersistentVolumeClaimStatus {
            phase: Some("Pending".into()),
            ..PersistentVolumeClaimStatus::default()
        }),
    }
}

fn edit_claim(
    mut c: PersistentVolumeClaim,
    f: impl FnOnce(&mut PersistentVolumeClaimSpec),
) -> PersistentVolumeClaim {
    f(c.spec.as_mut().unwrap());
    c
}

fn bound_claim(c: PersistentVolumeClaim, volume: &str) -> PersistentVolumeClaim {
    let mut c = edit_claim(c, |s| s.volume_name = Some(volume.into()));
    c.status.as_mut().unwrap().phase = Some("Bound".into());
    c
}

fn class(name: &str, mode: &str) -> StorageClass {
    StorageClass {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        provisioner: "kubernetes.io/no-provisioner".into(),
        volume_binding_mode: Some(mode.into()),
        ..StorageClass::default()
    }
}

/// One write, readably: `"PUT PersistentVolume/pv-a claimRef=ns/a"`, `"status
/// PersistentVolumeClaim/a Bound"`.
fn describe(action: &Action) -> String {
    match action {
        Action::Update { target, body } => {
            let detail = match target.kind.as_str() {
                "PersistentVolume" => {
                    let r = &body["spec"]["claimRef"];
                    format!(
                        "claimRef={}/{} uid={}",
                        r["namespace"].as_str().unwrap_or("?"),
                        r["name"].as_str().unwrap_or("?"),
                        r["uid"].as_str().unwrap_or("-")
                    )
                }
                _ => format!(
                    "volumeName={}",
                    body["spec"]["volumeName"].as_str().unwrap_or("?")
                ),
            };
            format!("PUT {}/{} {detail}", target.kind, target.name)
        }
        Action::Patch {
            target,
            subresource,
            patch,
        } => {
            assert_eq!(subresource.as_deref(), Some("status"));
            let status = &patch["status"];
            let mut out = format!(
                "status {}/{} {}",
                target.kind,
                target.name,
                status["phase"].as_str().unwrap_or("?")
            );
            if let Some(size) = status["capacity"]["storage"].as_str() {
                out.push_str(&format!(" {size} {}", modes(&status["accessModes"])));
            }
            out
        }
        other => panic!("unexpected action {other:?}"),
    }
}

fn modes(v: &Value) -> String {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect::<Vec<_>>()
        .join(",")
}

fn binds(claim: &str, volume: &str, size: &str, access: &str) -> Vec<String> {
    vec![
        format!("PUT PersistentVolume/{volume} claimRef=ns/{claim} uid=uid-{claim}"),
        format!("status PersistentVolume/{volume} Bound"),
        format!("PUT PersistentVolumeClaim/{claim} volumeName={volume}"),
        format!("status PersistentVolumeClaim/{claim} Bound {size} {access}"),
    ]
}

#[test]
fn claims_bind_to_the_smallest_matching_volume_or_wait() {
    let rwo = &["ReadWriteOnce"];
    let labelled = |mut v: PersistentVolume| {
        v.metadata.labels = Some(BTreeMap::from([("tier".into(), "fast".into())]));
        v
    };
    let selecting = |c| {
        edit_claim(c, |s| {
            s.selector = Some(LabelSelector {
                match_labels: Some(BTreeMap::from([("tier".into(), "fast".into())])),
                ..LabelSelector::default()
            })
        })
    };
    type Case = (
        &'static str,
        Vec<PersistentVolumeClaim>,
        Vec<PersistentVolume>,
        Vec<StorageClass>,
        Vec<String>,
    );
    let cases: Vec<Case> = vec![
        (
            "smallest big-enough volume wins",
            vec![pvc("a", "1Gi", rwo)],
            vec![
                pv("big", "10Gi", rwo),
                pv("small", "512Mi", rwo),
                pv("fit", "2Gi", rwo),
            ],
            vec![],
            binds("a", "fit", "2Gi", "ReadWriteOnce"),
        ),
        (
            "a just-created (Pending) volume is free too",
            vec![pvc("a", "1Gi", rwo)],
            vec![{
                let mut v = pv("new", "1Gi", rwo);
                v.status.as_mut().unwrap().phase = Some("Pending".into());
                v
            }],
            vec![],
            binds("a", "new", "1Gi", "ReadWriteOnce"),
        ),
        (
            "access modes must be a subset",
            vec![pvc("a", "1Gi", &["ReadWriteMany"])],
            vec![
                pv("rwo", "1Gi", rwo),
                pv("both", "5Gi", &["ReadWriteOnce", "ReadWriteMany"]),
            ],
            vec![],
            binds("a", "both", "5Gi", "ReadWriteOnce,ReadWriteMany"),
        ),
        (
            "storage class must match; unset is the empty class",
            vec![pvc("a", "1Gi", rwo)],
            vec![with_class(pv("classy", "1Gi", rwo), "fast")],
            vec![],
            vec![],
        ),
        (
            "claim with a class gets a volume of that class",
            vec![edit_claim(pvc("a", "1Gi", rwo), |s| {
                s.storage_class_name = Some("fast".into())
            })],
            vec![
                pv("plain", "1Gi", rwo),
                with_class(pv("classy", "3Gi", rwo), "fast"),
            ],
            vec![class("fast", "Immediate")],
            binds("a", "classy", "3Gi", "ReadWriteOnce"),
        ),
        (
            "WaitForFirstConsumer claims are left to the scheduler",
            vec![edit_claim(pvc("a", "1Gi", rwo), |s| {
                s.storage_class_name = Some("local".into())
            })],
            vec![with_class(pv("l", "1Gi", rwo), "local")],
            vec![class("local", WAIT_FOR_FIRST_CONSUMER)],
            vec![],
        ),
        (
            "a WaitForFirstConsumer claim completes the binding the scheduler pre-bound",
            vec![edit_claim(pvc("a", "1Gi", rwo), |s| {
                s.storage_class_name = Some("local".into())
            })],
            vec![
                with_class(pv("free", "1Gi", rwo), "local"),
                with_claim_ref(
                    with_class(pv("picked", "2Gi", rwo), "local"),
                    "a",
                    Some("uid-a"),
                    "Available",
                ),
            ],
            vec![class("local", WAIT_FOR_FIRST_CONSUMER)],
            binds("a", "picked", "2Gi", "ReadWriteOnce")[1..].to_vec(),
        ),
        (
            "label selector",
            vec![selecting(pvc("a", "1Gi", rwo))],
            vec![pv("plain", "1Gi", rwo), labelled(pv("fast", "8Gi", rwo))],
            vec![],
            binds("a", "fast", "8Gi", "ReadWriteOnce"),
        ),
        (
            "volume mode must match (unset is Filesystem)",
            vec![edit_claim(pvc("a", "1Gi", rwo), |s| {
                s.volume_mode = Some("Block".into())
            })],
            vec![pv("fs", "1Gi", rwo)],
            vec![],
            vec![],
        ),
        (
            "too small: the claim stays pending",
            vec![pvc("a", "2Gi", rwo)],
            vec![pv("small", "1Gi", rwo)],
            vec![],
            vec![],
        ),
        (
            "two claims never share a volume; older claim first",
            vec![pvc("a", "1Gi", rwo), pvc("b", "1Gi", rwo)],
            vec![pv("only", "1Gi", rwo)],
            vec![],
            binds("a", "only", "1Gi", "ReadWriteOnce"),
        ),
        (
            "spec.volumeName binds that volume even when a smaller one fits",
            vec![edit_claim(pvc("a", "1Gi", rwo), |s| {
                s.volume_name = Some("big".into())
            })],
            vec![pv("small", "1Gi", rwo), pv("big", "9Gi", rwo)],
            vec![],
            binds("a", "big", "9Gi", "ReadWriteOnce"),
        ),
        (
            "spec.volumeName of a volume claimed by another (gone) claim: not taken",
            vec![edit_claim(pvc("a", "1Gi", rwo), |s| {
                s.volume_name = Some("v".into())
            })],
            vec![with_claim_ref(
                pv("v", "1Gi", rwo),
                "other",
                Some("uid-other"),
                "Bound",
            )],
            vec![],
            vec!["status PersistentVolume/v Released".to_string()],
        ),
        (
            "a volume pre-bound to the claim (claimRef without uid) is preferred",
            vec![pvc("a", "1Gi", rwo)],
            vec![
                pv("fit", "1Gi", rwo),
                with_claim_ref(pv("pre", "5Gi", rwo), "a", None, "Available"),
            ],
            vec![],
            binds("a", "pre", "5Gi", "ReadWriteOnce"),
        ),
        (
            "a binding cut short after the volume's write is finished",
            vec![pvc("a", "1Gi", rwo)],
            vec![with_claim_ref(
                pv("v", "1Gi", rwo),
                "a",
                Some("uid-a"),
                "Bound",
            )],
            vec![],
            vec![
                "PUT PersistentVolumeClaim/a volumeName=v".to_string(),
                "status PersistentVolumeClaim/a Bound 1Gi ReadWriteOnce".to_string(),
            ],
        ),
        (
            "fully bound: nothing to do",
            vec![{
                let mut c = bound_claim(pvc("a", "1Gi", rwo), "v");
                let status = c.status.as_mut().unwrap();
                status.capacity =
                    Some(BTreeMap::from([("storage".into(), Quantity("1Gi".into()))]));
                status.access_modes = Some(vec!["ReadWriteOnce".into()]);
                c
            }],
            vec![with_claim_ref(
                pv("v", "1Gi", rwo),
                "a",
                Some("uid-a"),
                "Bound",
            )],
            vec![],
            vec![],
        ),
        (
            "claim deleted: its volume is Released, not rebound",
            vec![pvc("b", "1Gi", rwo)],
            vec![with_claim_ref(
                pv("v", "1Gi", rwo),
                "a",
                Some("uid-a"),
                "Bound",
            )],
            vec![],
            vec!["status PersistentVolume/v Released".to_string()],
        ),
        (
            "claim deleted while its volume is being deleted: the volume is Released",
            vec![],
            vec![{
                let mut v = with_claim_ref(pv("v", "1Gi", rwo), "a", Some("uid-a"), "Bound");
                v.metadata.deletion_timestamp =
                    serde_json::from_value(serde_json::json!("2026-01-01T00:00:00Z")).unwrap();
                v
            }],
            vec![],
            vec!["status PersistentVolume/v Released".to_string()],
        ),
        (
            "claim recreated with another uid: the volume is Released",
            vec![{
                let mut c = pvc("a", "1Gi", rwo);
                c.metadata.uid = Some("uid-new".into());
                c
            }],
            vec![with_claim_ref(
                pv("v", "1Gi", rwo),
                "a",
                Some("uid-a"),
                "Bound",
            )],
            vec![],
            vec!["status PersistentVolume/v Released".to_string()],
        ),
        (
            "Released stays Released",
            vec![],
            vec![with_claim_ref(
                pv("v", "1Gi", rwo),
                "a",
                Some("uid-a"),
                "Released",
            )],
            vec![],
            vec![],
        ),
        (
            "a Pending volume without claim becomes Available",
            vec![],
            vec![{
                let mut v = pv("v", "1Gi", rwo);
                v.status.as_mut().unwrap().phase = Some("Pending".into());
                v
            }],
            vec![],
            vec!["status PersistentVolume/v Available".to_string()],
        ),
        (
            "bound claim whose volume is gone is Lost",
            vec![bound_claim(pvc("a", "1Gi", rwo), "gone")],
            vec![],
            vec![],
            vec!["status PersistentVolumeClaim/a Lost".to_string()],
        ),
    ];
    for (name, claims, volumes, classes, want) in cases {
        let got: Vec<String> = plan(&claims, &volumes, &classes)
            .iter()
            .map(describe)
            .collect();
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn binding_writes_carry_the_claim_reference_and_resource_versions() {
    let claim = pvc("a", "1Gi", &["ReadWriteOnce"]);
    let volume = pv("v", "1Gi", &["ReadWriteOnce"]);
    let actions = plan(&[claim], &[volume], &[]);
    let Action::Update { body, .. } = &actions[0] else {
        panic!("volume PUT first: {actions:?}");
    };
    assert_eq!(body["metadata"]["resourceVersion"], "7");
    assert_eq!(
        body["metadata"]["annotations"][ANNOTATION_BOUND_BY_CONTROLLER],
        "yes"
    );
    let reference = &body["spec"]["claimRef"];
    assert_eq!(reference["apiVersion"], "v1");
    assert_eq!(reference["kind"], "PersistentVolumeClaim");
    assert_eq!(reference["namespace"], "ns");
    assert_eq!(reference["name"], "a");
    assert_eq!(reference["uid"], "uid-a");
    let Action::Update { body, .. } = &actions[2] else {
        panic!("claim PUT third: {actions:?}");
    };
    assert_eq!(body["spec"]["volumeName"], "v");
    assert_eq!(
        body["metadata"]["annotations"][ANNOTATION_BIND_COMPLETED],
        "yes"
    );
}

#[test]
fn mismatches_name_the_first_failing_check() {
    let rwo = &["ReadWriteOnce"];
    assert_eq!(
        check_volume(&pvc("a", "1Gi", rwo), &pv("v", "1Gi", rwo)),
        Ok(())
    );
    assert_eq!(
        check_volume(&pvc("a", "1500Mi", rwo), &pv("v", "1Gi", rwo)),
        Err(Mismatch::Capacity)
    );
    assert_eq!(
        check_volume(&pvc("a", "1Gi", &["ReadOnlyMany"]), &pv("v", "1Gi", rwo)),
        Err(Mismatch::AccessModes)
    );
    assert_eq!(
        check_volume(&pvc("a", "1Gi", rwo), &with_class(pv("v", "1Gi", rwo), "x")),
        Err(Mismatch::StorageClass)
    );
}
