//! `persistentVolumeClaim` volumes (pure): the claim a pod volume names, resolved through the
//! fetched [`ApiObjects`] to the PersistentVolume bound to it and that volume's host path.
//! Only `hostPath` and `local` PersistentVolumes are mounted (both are directories on this
//! node); the checks and their messages follow upstream's volume manager: the claim must be
//! `Bound` with a `volumeName`, and the volume's `claimRef` must carry the claim's uid; a
//! claim being deleted is refused to a pod that has not used it yet (its deletion waits, by
//! the `pvc-protection` finalizer, for the pods that do).

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{PersistentVolumeClaimVolumeSource, Pod};

use super::api_objects::{ApiObjects, Lookup};
use super::volumes::{HostPathType, parse_host_path_type};

/// The host side of a claim's volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimVolume {
    /// The PersistentVolume's name.
    pub persistent_volume: String,
    /// The directory (or file) on this node.
    pub path: PathBuf,
    /// A `hostPath` volume's type check (`Unchecked` for `local` volumes).
    pub kind: HostPathType,
    /// A `local` volume: its path must already exist on this node.
    pub local: bool,
    /// The volume source's `readOnly`: every mount of it is read-only.
    pub readonly: bool,
}

/// Why a claim cannot be mounted (yet). The messages are upstream's where it has one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    #[error("persistentvolumeclaim {claim:?} not found")]
    ClaimNotFound { claim: String },
    #[error("persistentvolumeclaim {claim:?}: no apiserver to read it from (a static pod?)")]
    NotFetched { claim: String },
    #[error("can't start pod because PVC {namespace}/{claim} is being deleted")]
    BeingDeleted { namespace: String, claim: String },
    #[error(
        "PVC {namespace}/{claim} has non-bound phase ({phase:?}) or empty pvc.Spec.VolumeName ({volume:?})"
    )]
    NotBound {
        namespace: String,
        claim: String,
        phase: String,
        volume: String,
    },
    #[error("persistentvolume {volume:?} (bound to claim {claim:?}) not found")]
    VolumeNotFound { claim: String, volume: String },
    #[error("found PV object {volume:?} but it has a nil or empty ClaimRef")]
    NoClaimRef { volume: String },
    #[error(
        "found PV object {volume:?} but its ClaimRef.UID ({found:?}) does not point to claim.UID ({want:?})"
    )]
    UidMismatch {
        volume: String,
        found: String,
        want: String,
    },
    #[error(
        "persistentvolume {volume:?}: only hostPath and local volumes are supported by kwk-node"
    )]
    UnsupportedSource { volume: String },
    #[error("persistentvolume {volume:?}: {field}: {reason}")]
    InvalidSource {
        volume: String,
        field: &'static str,
        reason: String,
    },
}

/// The host path `source` mounts, or why it cannot be mounted.
pub fn resolve_claim(
    source: &PersistentVolumeClaimVolumeSource,
    objects: &ApiObjects,
) -> Result<ClaimVolume, ClaimError> {
    let claim_name = &source.claim_name;
    let claim = match objects.claim(claim_name) {
        Lookup::Found(claim) => claim,
        Lookup::NotFound => {
            return Err(ClaimError::ClaimNotFound {
                claim: claim_name.clone(),
            });
        }
        Lookup::NotFetched => {
            return Err(ClaimError::NotFetched {
                claim: claim_name.clone(),
            });
        }
    };
    if claim.metadata.deletion_timestamp.is_some() && !objects.claim_in_use(claim_name) {
        return Err(ClaimError::BeingDeleted {
            namespace: objects.namespace().to_string(),
            claim: claim_name.clone(),
        });
    }
    let phase = claim
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default();
    let volume_name = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .unwrap_or_default();
    if phase != "Bound" || volume_name.is_empty() {
        return Err(ClaimError::NotBound {
            namespace: objects.namespace().to_string(),
            claim: claim_name.clone(),
            phase,
            volume: volume_name,
        });
    }
    let Lookup::Found(pv) = objects.persistent_volume(&volume_name) else {
        return Err(ClaimError::VolumeNotFound {
            claim: claim_name.clone(),
            volume: volume_name,
        });
    };
    let spec = pv.spec.clone().unwrap_or_default();
    let found_uid = spec
        .claim_ref
        .as_ref()
        .and_then(|r| r.uid.clone())
        .unwrap_or_default();
    if spec.claim_ref.is_none() {
        return Err(ClaimError::NoClaimRef {
            volume: volume_name,
        });
    }
    let want_uid = claim.metadata.uid.clone().unwrap_or_default();
    if found_uid != want_uid {
        return Err(ClaimError::UidMismatch {
            volume: volume_name,
            found: found_uid,
            want: want_uid,
        });
    }
    let invalid = |field, reason: String| ClaimError::InvalidSource {
        volume: volume_name.clone(),
        field,
        reason,
    };
    let (path, kind, local, field) = if let Some(host) = &spec.host_path {
        let type_ = host.type_.as_deref().unwrap_or_default();
        let kind = parse_host_path_type(type_).ok_or_else(|| {
            invalid(
                "spec.hostPath.type",
                format!("{type_:?} is not a hostPath type"),
            )
        })?;
        (&host.path, kind, false, "spec.hostPath.path")
    } else if let Some(local) = &spec.local {
        (
            &local.path,
            HostPathType::Unchecked,
            true,
            "spec.local.path",
        )
    } else {
        return Err(ClaimError::UnsupportedSource {
            volume: volume_name,
        });
    };
    if !Path::new(path).is_absolute() {
        return Err(invalid(field, format!("{path:?} is not an absolute path")));
    }
    Ok(ClaimVolume {
        persistent_volume: volume_name,
        path: PathBuf::from(path),
        kind,
        local,
        readonly: source.read_only.unwrap_or(false),
    })
}

/// The claims of `pod`'s `persistentVolumeClaim` volumes that resolve to a volume now: from
/// here on the pod uses them ([`ApiObjects::mark_claim_in_use`]), as upstream's volume
/// manager keeps a volume once it entered its desired state.
pub fn resolvable_claims(pod: &Pod, objects: &ApiObjects) -> Vec<String> {
    let volumes = pod.spec.iter().flat_map(|s| s.volumes.iter().flatten());
    volumes
        .filter_map(|v| v.persistent_volume_claim.as_ref())
        .filter(|source| resolve_claim(source, objects).is_ok())
        .map(|source| source.claim_name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};

    fn claim(yaml: &str) -> PersistentVolumeClaim {
        serde_saphyr::from_str(yaml).expect("claim yaml")
    }

    fn volume(yaml: &str) -> PersistentVolume {
        serde_saphyr::from_str(yaml).expect("volume yaml")
    }

    fn source(name: &str, read_only: Option<bool>) -> PersistentVolumeClaimVolumeSource {
        PersistentVolumeClaimVolumeSource {
            claim_name: name.into(),
            read_only,
        }
    }

    const BOUND: &str = r#"
metadata: {name: data, namespace: prod, uid: c1}
spec: {volumeName: pv1}
status: {phase: Bound}
"#;

    const BEING_DELETED: &str = r#"
metadata: {name: data, namespace: prod, uid: c1, deletionTimestamp: "2026-11-24T10:00:00Z", finalizers: [kubernetes.io/pvc-protection]}
spec: {volumeName: pv1}
status: {phase: Bound}
"#;

    const HOST_PV: &str = r#"
metadata: {name: pv1}
spec: {hostPath: {path: /srv/pv1, type: Directory}, claimRef: {namespace: prod, name: data, uid: c1}}
"#;

    fn objects(claim_yaml: Option<&str>, pv_yaml: Option<&str>) -> ApiObjects {
        let mut objects = ApiObjects::new("prod");
        objects.insert_claim("data", claim_yaml.map(claim));
        if let Some(yaml) = pv_yaml {
            objects.insert_persistent_volume("pv1", Some(volume(yaml)));
        }
        objects
    }

    #[test]
    fn claims_resolve_to_their_bound_host_path_or_local_volume() {
        let got = resolve_claim(
            &source("data", Some(true)),
            &objects(Some(BOUND), Some(HOST_PV)),
        );
        assert_eq!(
            got,
            Ok(ClaimVolume {
                persistent_volume: "pv1".into(),
                path: "/srv/pv1".into(),
                kind: HostPathType::Directory,
                local: false,
                readonly: true,
            })
        );
        let local_pv = r#"
metadata: {name: pv1}
spec: {local: {path: /mnt/disks/a}, claimRef: {namespace: prod, name: data, uid: c1}}
"#;
        let got = resolve_claim(&source("data", None), &objects(Some(BOUND), Some(local_pv)));
        assert_eq!(
            got.map(|v| (v.path, v.kind, v.local, v.readonly)),
            Ok((
                PathBuf::from("/mnt/disks/a"),
                HostPathType::Unchecked,
                true,
                false
            ))
        );
    }

    /// A pod that used the claim before its deletion (a container restarting) still mounts it.
    #[test]
    fn a_claim_being_deleted_still_serves_the_pods_already_using_it() {
        let mut using = objects(Some(BEING_DELETED), Some(HOST_PV));
        using.mark_claim_in_use("data");
        let got = resolve_claim(&source("data", None), &using).map(|v| v.path);
        assert_eq!(got, Ok(PathBuf::from("/srv/pv1")));
        let other = resolve_claim(
            &source("data", None),
            &objects(Some(BEING_DELETED), Some(HOST_PV)),
        );
        assert!(
            matches!(other, Err(ClaimError::BeingDeleted { .. })),
            "{other:?}"
        );
    }

    #[test]
    fn unusable_claims_say_why_naming_the_claim_or_volume() {
        let pv = |spec: &str| format!("metadata: {{name: pv1}}\nspec: {spec}\n");
        let good_ref = "claimRef: {namespace: prod, name: data, uid: c1}";
        let cases: Vec<(&str, Option<&str>, Option<String>, &str)> = vec![
            (
                "claim missing",
                None,
                None,
                r#"persistentvolumeclaim "data" not found"#,
            ),
            (
                "claim being deleted, not used by the pod yet",
                Some(BEING_DELETED),
                None,
                "can't start pod because PVC prod/data is being deleted",
            ),
            (
                "claim pending",
                Some("metadata: {name: data, uid: c1}\nstatus: {phase: Pending}"),
                None,
                r#"PVC prod/data has non-bound phase ("Pending") or empty pvc.Spec.VolumeName ("")"#,
            ),
            (
                "bound volume gone",
                Some(BOUND),
                None,
                r#"persistentvolume "pv1" (bound to claim "data") not found"#,
            ),
            (
                "volume without claimRef",
                Some(BOUND),
                Some(pv("{hostPath: {path: /srv}}")),
                r#"found PV object "pv1" but it has a nil or empty ClaimRef"#,
            ),
            (
                "volume bound to a predecessor claim",
                Some(BOUND),
                Some(pv(
                    "{hostPath: {path: /srv}, claimRef: {namespace: prod, name: data, uid: old}}",
                )),
                r#"found PV object "pv1" but its ClaimRef.UID ("old") does not point to claim.UID ("c1")"#,
            ),
            (
                "unsupported source",
                Some(BOUND),
                Some(pv(&format!("{{nfs: {{server: x, path: /e}}, {good_ref}}}"))),
                r#"persistentvolume "pv1": only hostPath and local volumes are supported by kwk-node"#,
            ),
            (
                "bad hostPath type",
                Some(BOUND),
                Some(pv(&format!(
                    "{{hostPath: {{path: /srv, type: Dir}}, {good_ref}}}"
                ))),
                r#"persistentvolume "pv1": spec.hostPath.type: "Dir" is not a hostPath type"#,
            ),
            (
                "relative local path",
                Some(BOUND),
                Some(pv(&format!("{{local: {{path: disks/a}}, {good_ref}}}"))),
                r#"persistentvolume "pv1": spec.local.path: "disks/a" is not an absolute path"#,
            ),
        ];
        for (name, claim_yaml, pv_yaml, want) in cases {
            let got = resolve_claim(
                &source("data", None),
                &objects(claim_yaml, pv_yaml.as_deref()),
            );
            assert_eq!(
                got.map_err(|e| e.to_string()),
                Err(want.to_string()),
                "{name}"
            );
        }
        let unfetched = resolve_claim(&source("data", None), &ApiObjects::new("prod"));
        assert!(matches!(unfetched, Err(ClaimError::NotFetched { .. })));
    }

    /// The claim's volume in a container's plan: mounted from the PersistentVolume's path,
    /// read-only when the volume source or the mount says so; an unbound claim plans fine
    /// and fails at set-up (FailedMount), not as a config error.
    #[test]
    fn claim_volumes_plan_host_mounts_read_only_from_source_or_mount() {
        use crate::runtime_spec::env::{DownwardContext, EnvVars};
        use crate::runtime_spec::testpod::pod;
        use crate::runtime_spec::volumes::{
            MountSource, VolumeContext, VolumeSetup, VolumeSources, plan_volumes,
        };
        let p = pod(r#"
metadata: {name: web, namespace: prod, uid: u1}
spec:
  volumes:
  - {name: rw, persistentVolumeClaim: {claimName: data}}
  - {name: ro, persistentVolumeClaim: {claimName: data, readOnly: true}}
  - {name: pending, persistentVolumeClaim: {claimName: other}}
  containers:
  - name: app
    image: busybox
    volumeMounts:
    - {name: rw, mountPath: /rw}
    - {name: rw, mountPath: /rw-mount-ro, readOnly: true}
    - {name: ro, mountPath: /ro}
"#);
        let mut objects = objects(
            Some(BOUND),
            Some("metadata: {name: pv1}\nspec: {hostPath: {path: /srv/pv1}, claimRef: {uid: c1}}"),
        );
        objects.insert_claim("other", None);
        let env = EnvVars::default();
        let downward = DownwardContext::default();
        let ctx = VolumeContext {
            env: &env,
            pod_ips: Vec::new(),
            cluster_domain: "cluster.local".into(),
            node_hosts_file: "/etc/hosts".into(),
            termination_file_id: "0000abcd".into(),
            sources: VolumeSources {
                objects: &objects,
                downward: &downward,
            },
        };
        let plan = plan_volumes(&p, &p.spec.as_ref().unwrap().containers[0], &ctx).unwrap();
        let mounts: Vec<(String, MountSource, bool)> = plan
            .mounts
            .iter()
            .map(|m| (m.container_path.clone(), m.source.clone(), m.readonly))
            .collect();
        let host = || MountSource::Host("/srv/pv1".into());
        assert_eq!(
            mounts,
            vec![
                ("/rw".into(), host(), false),
                ("/rw-mount-ro".into(), host(), true),
                ("/ro".into(), host(), true),
            ]
        );
        let VolumeSetup::Claim {
            field, resolved, ..
        } = &plan.volumes[2]
        else {
            panic!("claim setup: {:?}", plan.volumes[2]);
        };
        assert_eq!(field, "spec.volumes[2].persistentVolumeClaim");
        assert_eq!(
            resolved,
            &Err(ClaimError::ClaimNotFound {
                claim: "other".into()
            })
        );
    }
}
