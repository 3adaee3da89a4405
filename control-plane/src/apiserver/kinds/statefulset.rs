//! apps/v1 StatefulSets: upstream's defaults (ordered pod management, rolling updates from
//! partition 0, PVC retention Retain/Retain, claim templates defaulted like claims),
//! validation (which spec fields an update may change) and table.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaimStatus, PersistentVolumeClaimVolumeSource, PodTemplateSpec, Volume,
};
use kwk_api::field::{FieldError, check_non_negative, forbidden, invalid, not_supported, required};
use kwk_api::pod::{self, DefaultSet};
use serde_json::{Value, json};

use super::cells::{CONTAINERS, IMAGES, age_column, col, containers_and_images, name_column};
use super::util::{int, s, since, validate_typed, with_typed};
use super::workloads::{TemplateRules, validate_selector_and_template};
use super::{Column, KindStrategy, name_of};
use crate::apiserver::errors::Cause;

#[derive(Debug, Default, Clone, Copy)]
pub struct StatefulSetStrategy;

/// Upstream's `SetDefaults_StatefulSet`, the template's pod spec defaults and the claim
/// templates' claim defaults.
pub fn default_stateful_set(sts: &mut StatefulSet) {
    let spec = sts.spec.get_or_insert_with(Default::default);
    if spec
        .pod_management_policy
        .as_deref()
        .unwrap_or_default()
        .is_empty()
    {
        spec.pod_management_policy = Some("OrderedReady".to_string());
    }
    let strategy = spec.update_strategy.get_or_insert_with(Default::default);
    if strategy.type_.as_deref().unwrap_or_default().is_empty() {
        strategy.type_ = Some("RollingUpdate".to_string());
        strategy.rolling_update.get_or_insert_with(Default::default);
    }
    if strategy.type_.as_deref() == Some("RollingUpdate")
        && let Some(rolling) = strategy.rolling_update.as_mut()
    {
        rolling.partition.get_or_insert(0);
    }
    let retention = spec
        .persistent_volume_claim_retention_policy
        .get_or_insert_with(Default::default);
    for policy in [&mut retention.when_deleted, &mut retention.when_scaled] {
        if policy.as_deref().unwrap_or_default().is_empty() {
            *policy = Some("Retain".to_string());
        }
    }
    spec.replicas.get_or_insert(1);
    spec.revision_history_limit.get_or_insert(10);
    if let Some(pod_spec) = spec.template.spec.as_mut() {
        pod::default_pod_spec(pod_spec, DefaultSet::Upstream);
    }
    for claim in spec.volume_claim_templates.iter_mut().flatten() {
        if let Some(claim_spec) = claim.spec.as_mut() {
            pod::default_pvc_spec(claim_spec);
        }
        let status = claim
            .status
            .get_or_insert_with(PersistentVolumeClaimStatus::default);
        if status.phase.as_deref().unwrap_or_default().is_empty() {
            status.phase = Some("Pending".to_string());
        }
    }
}

const UPDATE_FORBIDDEN: &str = "updates to statefulset spec for fields other than 'replicas', \
'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', \
'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden";

fn validate_stateful_set(new: &StatefulSet, old: Option<&StatefulSet>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let Some(spec) = &new.spec else {
        errs.push(required("spec", ""));
        return errs;
    };
    match spec.pod_management_policy.as_deref().unwrap_or_default() {
        "OrderedReady" | "Parallel" => {}
        other => errs.push(invalid(
            "spec.podManagementPolicy",
            other,
            "must be 'OrderedReady' or 'Parallel'",
        )),
    }
    if let Some(strategy) = &spec.update_strategy {
        match strategy.type_.as_deref().unwrap_or_default() {
            "RollingUpdate" => {
                if let Some(rolling) = &strategy.rolling_update {
                    check_non_negative(
                        "spec.updateStrategy.rollingUpdate.partition",
                        rolling.partition.map(i64::from),
                        &mut errs,
                    );
                }
            }
            "OnDelete" => {
                if strategy.rolling_update.is_some() {
                    errs.push(invalid(
                        "spec.updateStrategy.rollingUpdate",
                        kwk_api::field::Shown::Raw("{...}".to_string()),
                        "only allowed for updateStrategy 'RollingUpdate'",
                    ));
                }
            }
            other => errs.push(invalid(
                "spec.updateStrategy",
                other,
                "must be 'RollingUpdate' or 'OnDelete'",
            )),
        }
    }
    if let Some(retention) = &spec.persistent_volume_claim_retention_policy {
        for (name, value) in [
            ("whenDeleted", &retention.when_deleted),
            ("whenScaled", &retention.when_scaled),
        ] {
            let v = value.as_deref().unwrap_or_default();
            if !matches!(v, "Retain" | "Delete") {
                errs.push(not_supported(
                    &format!("spec.persistentVolumeClaimRetentionPolicy.{name}"),
                    v,
                    &["Retain", "Delete"],
                ));
            }
        }
    }
    check_non_negative("spec.replicas", spec.replicas.map(i64::from), &mut errs);
    check_non_negative(
        "spec.minReadySeconds",
        spec.min_ready_seconds.map(i64::from),
        &mut errs,
    );
    if let Some(start) = spec.ordinals.as_ref().and_then(|o| o.start) {
        check_non_negative("spec.ordinals.start", Some(i64::from(start)), &mut errs);
    }
    validate_selector_and_template(
        Some(&spec.selector),
        Some(&with_claim_volumes(spec)),
        TemplateRules {
            base: "spec",
            kind: Some("statefulset"),
            restart_policies: &["Always"],
            no_deadline: Some("activeDeadlineSeconds in StatefulSet is not Supported"),
        },
        &mut errs,
    );
    if let Some(old_spec) = old.and_then(|o| o.spec.as_ref()) {
        let mut clone = spec.clone();
        clone.replicas = old_spec.replicas;
        clone.template = old_spec.template.clone();
        clone.update_strategy = old_spec.update_strategy.clone();
        clone.min_ready_seconds = old_spec.min_ready_seconds;
        clone.ordinals = old_spec.ordinals.clone();
        clone.revision_history_limit = old_spec.revision_history_limit;
        clone.persistent_volume_claim_retention_policy =
            old_spec.persistent_volume_claim_retention_policy.clone();
        if &clone != old_spec {
            errs.push(forbidden("spec", UPDATE_FORBIDDEN));
        }
    }
    errs
}

/// The template as its pods will be: every volume claim template is also a volume (the
/// controller adds it), so containers may mount it by name.
fn with_claim_volumes(spec: &k8s_openapi::api::apps::v1::StatefulSetSpec) -> PodTemplateSpec {
    let mut template = spec.template.clone();
    if let Some(pod_spec) = template.spec.as_mut() {
        let volumes = pod_spec.volumes.get_or_insert_with(Vec::new);
        for claim in spec.volume_claim_templates.iter().flatten() {
            let Some(name) = claim.metadata.name.clone() else {
                continue;
            };
            if volumes.iter().any(|v| v.name == name) {
                continue;
            }
            volumes.push(Volume {
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: name.clone(),
                    read_only: None,
                }),
                name,
                ..Volume::default()
            });
        }
    }
    template
}

impl KindStrategy for StatefulSetStrategy {
    fn default(&self, object: &mut Value) {
        with_typed(object, default_stateful_set);
    }

    fn validate(&self, object: &Value, old: Option<&Value>) -> Vec<Cause> {
        validate_typed(object, old, validate_stateful_set)
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            name_column(),
            col("Ready", "string", "Ready replicas of the desired replicas."),
            age_column(),
            CONTAINERS,
            IMAGES,
        ]
    }

    fn row(&self, object: &Value, now: i64) -> Vec<Value> {
        let (containers, images) = containers_and_images(&object["spec"]["template"]["spec"]);
        vec![
            json!(name_of(object)),
            json!(format!(
                "{}/{}",
                int(object, "/status/readyReplicas"),
                int(object, "/spec/replicas")
            )),
            json!(since(s(object, "/metadata/creationTimestamp"), now)),
            containers,
            images,
        ]
    }
}
