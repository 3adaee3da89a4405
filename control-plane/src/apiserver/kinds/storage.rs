//! Storage kinds: PersistentVolumes and PersistentVolumeClaims (core/v1: defaults, the
//! checks of their specs and of updates), StorageClasses (defaults, immutable fields, the
//! `(default)` marker in the table) and the tables of CSIDriver, CSINode and
//! VolumeAttachment.

use k8s_openapi::api::core::v1::{
    PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimSpec, PersistentVolumeSpec,
};
use k8s_openapi::api::storage::v1::StorageClass;
use kwk_api::field::{FIELD_IMMUTABLE, FieldError, forbidden, invalid, not_supported, required};
use kwk_api::{meta, names, pod, quantity};
use serde_json::{Value, json};

use super::cells::{age_column, col, name_column, wide};
use super::util::{arr, flag, s, since, validate_typed, with_typed};
use super::{Column, KindStrategy, name_of};
use crate::apiserver::errors::Cause;

const ACCESS_MODES: &[&str] = &[
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOnce",
    "ReadWriteOncePod",
];
const VOLUME_MODES: &[&str] = &["Block", "Filesystem"];

/// Access modes as the table shows them (`RWO,ROX,RWX,RWOP`, in that order).
fn access_modes_cell(modes: &[Value]) -> String {
    [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ]
    .iter()
    .filter(|(mode, _)| modes.iter().any(|m| m.as_str() == Some(mode)))
    .map(|(_, short)| *short)
    .collect::<Vec<_>>()
    .join(",")
}

fn class_of(object: &Value) -> String {
    let annotation = object
        .pointer("/metadata/annotations")
        .and_then(|a| a.get("volume.beta.kubernetes.io/storage-class"))
        .and_then(Value::as_str);
    annotation
        .unwrap_or_else(|| s(object, "/spec/storageClassName"))
        .to_string()
}

fn unset_or(object: &Value, pointer: &str) -> String {
    match object.pointer(pointer).and_then(Value::as_str) {
        Some(v) => v.to_string(),
        None => "<unset>".to_string(),
    }
}

fn check_access_modes(path: &str, modes: &[String], detail: &str, errs: &mut Vec<FieldError>) {
    if modes.is_empty() {
        errs.push(required(path, detail));
    }
    for mode in modes {
        if !ACCESS_MODES.contains(&mode.as_str()) {
            errs.push(not_supported(path, mode.as_str(), ACCESS_MODES));
        }
    }
    if modes.len() > 1 && modes.iter().any(|m| m == "ReadWriteOncePod") {
        errs.push(forbidden(
            path,
            "may not use ReadWriteOncePod with other access modes",
        ));
    }
}

fn check_volume_mode(path: &str, mode: Option<&str>, errs: &mut Vec<FieldError>) {
    if let Some(mode) = mode
        && !VOLUME_MODES.contains(&mode)
    {
        errs.push(not_supported(path, mode, VOLUME_MODES));
    }
}

// ---- PersistentVolume ----

#[derive(Debug, Default, Clone, Copy)]
pub struct PersistentVolumeStrategy;

/// Upstream's `SetDefaults_PersistentVolume`.
pub fn default_pv(pv: &mut PersistentVolume) {
    let spec = pv.spec.get_or_insert_with(Default::default);
    if spec
        .persistent_volume_reclaim_policy
        .as_deref()
        .unwrap_or_default()
        .is_empty()
    {
        spec.persistent_volume_reclaim_policy = Some("Retain".to_string());
    }
    spec.volume_mode
        .get_or_insert_with(|| "Filesystem".to_string());
    let status = pv.status.get_or_insert_with(Default::default);
    if status.phase.as_deref().unwrap_or_default().is_empty() {
        status.phase = Some("Pending".to_string());
    }
}

/// The JSON names of the volume sources a PV spec sets.
fn pv_sources(spec: &PersistentVolumeSpec) -> Vec<String> {
    const NOT_SOURCES: &[&str] = &[
        "accessModes",
        "capacity",
        "claimRef",
        "mountOptions",
        "nodeAffinity",
        "persistentVolumeReclaimPolicy",
        "storageClassName",
        "volumeAttributesClassName",
        "volumeMode",
    ];
    match serde_json::to_value(spec) {
        Ok(Value::Object(map)) => map
            .into_iter()
            .filter(|(k, v)| !NOT_SOURCES.contains(&k.as_str()) && !v.is_null())
            .map(|(k, _)| k)
            .collect(),
        _ => Vec::new(),
    }
}

fn validate_pv(new: &PersistentVolume, old: Option<&PersistentVolume>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let empty = PersistentVolumeSpec::default();
    let spec = new.spec.as_ref().unwrap_or(&empty);
    check_access_modes(
        "spec.accessModes",
        spec.access_modes.as_deref().unwrap_or_default(),
        "",
        &mut errs,
    );
    let capacity = spec.capacity.clone().unwrap_or_default();
    if capacity.is_empty() {
        errs.push(required("spec.capacity", ""));
    } else if !capacity.contains_key("storage") || capacity.len() > 1 {
        let keys: Vec<&str> = capacity.keys().map(String::as_str).collect();
        errs.push(not_supported("spec.capacity", keys.join(","), &["storage"]));
    }
    for (name, q) in &capacity {
        pod::check_quantity(&format!("spec.capacity[{name}]"), &q.0, &mut errs);
    }
    const POLICIES: &[&str] = &["Delete", "Recycle", "Retain"];
    let policy = spec
        .persistent_volume_reclaim_policy
        .as_deref()
        .unwrap_or_default();
    if !POLICIES.contains(&policy) {
        errs.push(not_supported(
            "spec.persistentVolumeReclaimPolicy",
            policy,
            POLICIES,
        ));
    }
    match pv_sources(spec).as_slice() {
        [] => errs.push(required("spec", "must specify a volume type")),
        [_] => {}
        [_, more @ ..] => errs.push(forbidden(
            &format!("spec.{}", more[0]),
            "may not specify more than 1 volume type",
        )),
    }
    if let Some(class) = spec.storage_class_name.as_deref().filter(|c| !c.is_empty()) {
        names::check_dns1123_subdomain("spec.storageClassName", class, &mut errs);
    }
    check_volume_mode("spec.volumeMode", spec.volume_mode.as_deref(), &mut errs);
    if let Some(old_spec) = old.and_then(|o| o.spec.as_ref()) {
        let source = |s: &PersistentVolumeSpec| {
            let mut v = serde_json::to_value(s).unwrap_or_default();
            if let Some(map) = v.as_object_mut() {
                map.retain(|k, _| pv_sources(s).contains(k));
            }
            v
        };
        if source(spec) != source(old_spec) {
            errs.push(forbidden(
                "spec.persistentvolumesource",
                "spec.persistentvolumesource is immutable after creation",
            ));
        }
        if spec.volume_mode != old_spec.volume_mode {
            errs.push(invalid(
                "spec.volumeMode",
                spec.volume_mode.as_deref().unwrap_or_default(),
                FIELD_IMMUTABLE,
            ));
        }
    }
    errs
}

impl KindStrategy for PersistentVolumeStrategy {
    fn default(&self, object: &mut Value) {
        with_typed(object, default_pv);
    }

    fn validate(&self, object: &Value, old: Option<&Value>) -> Vec<Cause> {
        validate_typed(object, old, validate_pv)
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            name_column(),
            col("Capacity", "string", "The volume's storage size."),
            col(
                "Access Modes",
                "string",
                "How the volume can be mounted (RWO, ROX, RWX, RWOP).",
            ),
            col(
                "Reclaim Policy",
                "string",
                "What happens to the volume when its claim goes.",
            ),
            col("Status", "string", "Available, Bound, Released or Failed."),
            col(
                "Claim",
                "string",
                "The claim bound to the volume (namespace/name).",
            ),
            col("StorageClass", "string", "StorageClass of the volume."),
            col(
                "VolumeAttributesClass",
                "string",
                "VolumeAttributesClass of the volume.",
            ),
            col("Reason", "string", "Why the volume is in its phase."),
            age_column(),
            wide("VolumeMode", "string", "Filesystem or Block."),
        ]
    }

    fn row(&self, object: &Value, now: i64) -> Vec<Value> {
        let claim = match object.pointer("/spec/claimRef") {
            Some(r) => format!("{}/{}", s(r, "/namespace"), s(r, "/name")),
            None => String::new(),
        };
        let phase = if object.pointer("/metadata/deletionTimestamp").is_some() {
            "Terminating"
        } else {
            s(object, "/status/phase")
        };
        let capacity = match s(object, "/spec/capacity/storage") {
            "" => "0",
            c => c,
        };
        vec![
            json!(name_of(object)),
            json!(capacity),
            json!(access_modes_cell(arr(object, "/spec/accessModes"))),
            json!(s(object, "/spec/persistentVolumeReclaimPolicy")),
            json!(phase),
            json!(claim),
            json!(class_of(object)),
            json!(unset_or(object, "/spec/volumeAttributesClassName")),
            json!(s(object, "/status/reason")),
            json!(since(s(object, "/metadata/creationTimestamp"), now)),
            json!(unset_or(object, "/spec/volumeMode")),
        ]
    }
}

// ---- PersistentVolumeClaim ----

#[derive(Debug, Default, Clone, Copy)]
pub struct PersistentVolumeClaimStrategy;

/// Upstream's claim defaults: `volumeMode: Filesystem`, phase `Pending`.
pub fn default_pvc(pvc: &mut PersistentVolumeClaim) {
    pod::default_pvc_spec(pvc.spec.get_or_insert_with(Default::default));
    let status = pvc.status.get_or_insert_with(Default::default);
    if status.phase.as_deref().unwrap_or_default().is_empty() {
        status.phase = Some("Pending".to_string());
    }
}

fn storage_request(spec: &PersistentVolumeClaimSpec) -> Option<&str> {
    spec.resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(|q| q.0.as_str())
}

/// A claim spec at `path` (also used for claim templates).
pub fn validate_pvc_spec(spec: &PersistentVolumeClaimSpec, path: &str, errs: &mut Vec<FieldError>) {
    check_access_modes(
        &format!("{path}.accessModes"),
        spec.access_modes.as_deref().unwrap_or_default(),
        "at least 1 access mode is required",
        errs,
    );
    if let Some(selector) = &spec.selector {
        errs.extend(meta::validate_label_selector(
            selector,
            &format!("{path}.selector"),
        ));
    }
    let storage_path = format!("{path}.resources[storage]");
    match storage_request(spec) {
        None => errs.push(required(&storage_path, "")),
        Some(q) => match quantity::parse(q) {
            Ok(v) if v.milli() <= 0 => {
                errs.push(invalid(&storage_path, q, "must be greater than zero"))
            }
            Ok(_) => {}
            Err(e) => errs.push(invalid(&storage_path, q, &e.to_string())),
        },
    }
    if let Some(class) = spec.storage_class_name.as_deref().filter(|c| !c.is_empty()) {
        names::check_dns1123_subdomain(&format!("{path}.storageClassName"), class, errs);
    }
    check_volume_mode(
        &format!("{path}.volumeMode"),
        spec.volume_mode.as_deref(),
        errs,
    );
}

fn validate_pvc(
    new: &PersistentVolumeClaim,
    old: Option<&PersistentVolumeClaim>,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let empty = PersistentVolumeClaimSpec::default();
    let spec = new.spec.as_ref().unwrap_or(&empty);
    validate_pvc_spec(spec, "spec", &mut errs);
    if let Some(old_spec) = old.and_then(|o| o.spec.as_ref()) {
        let mut new_clone = spec.clone();
        let mut old_clone = old_spec.clone();
        if old_spec
            .volume_name
            .as_deref()
            .unwrap_or_default()
            .is_empty()
        {
            old_clone.volume_name.clone_from(&new_clone.volume_name);
        }
        let bound = new.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
        if bound {
            let old_storage = storage_request(old_spec).map(str::to_string);
            if let (Some(requests), Some(old_storage)) = (
                new_clone
                    .resources
                    .as_mut()
                    .and_then(|r| r.requests.as_mut()),
                old_storage,
            ) {
                requests.insert(
                    "storage".to_string(),
                    k8s_openapi::apimachinery::pkg::api::resource::Quantity(old_storage),
                );
            }
            new_clone.volume_attributes_class_name = old_clone.volume_attributes_class_name.clone();
        }
        if new_clone != old_clone {
            errs.push(forbidden(
                "spec",
                "spec is immutable after creation except resources.requests and \
                 volumeAttributesClassName for bound claims",
            ));
        }
        let parse = |s: Option<&str>| s.and_then(|q| quantity::parse(q).ok());
        if let (Some(new_size), Some(old_size)) = (
            parse(storage_request(spec)),
            parse(storage_request(old_spec)),
        ) && new_size < old_size
        {
            errs.push(forbidden(
                "spec.resources.requests.storage",
                "field can not be less than previous value",
            ));
        }
    }
    errs
}

impl KindStrategy for PersistentVolumeClaimStrategy {
    fn default(&self, object: &mut Value) {
        with_typed(object, default_pvc);
    }

    fn validate(&self, object: &Value, old: Option<&Value>) -> Vec<Cause> {
        validate_typed(object, old, validate_pvc)
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            name_column(),
            col("Status", "string", "Pending, Bound or Lost."),
            col("Volume", "string", "The volume bound to the claim."),
            col("Capacity", "string", "The bound volume's size."),
            col(
                "Access Modes",
                "string",
                "How the bound volume can be mounted.",
            ),
            col("StorageClass", "string", "StorageClass of the claim."),
            col(
                "VolumeAttributesClass",
                "string",
                "VolumeAttributesClass of the claim.",
            ),
            age_column(),
            wide("VolumeMode", "string", "Filesystem or Block."),
        ]
    }

    fn row(&self, object: &Value, now: i64) -> Vec<Value> {
        let phase = if object.pointer("/metadata/deletionTimestamp").is_some() {
            "Terminating"
        } else {
            s(object, "/status/phase")
        };
        let volume = s(object, "/spec/volumeName");
        let (capacity, modes) = if volume.is_empty() {
            (String::new(), String::new())
        } else {
            let capacity = match s(object, "/status/capacity/storage") {
                "" => "0",
                c => c,
            };
            (
                capacity.to_string(),
                access_modes_cell(arr(object, "/status/accessModes")),
            )
        };
        vec![
            json!(name_of(object)),
            json!(phase),
            json!(volume),
            json!(capacity),
            json!(modes),
            json!(class_of(object)),
            json!(unset_or(object, "/spec/volumeAttributesClassName")),
            json!(since(s(object, "/metadata/creationTimestamp"), now)),
            json!(unset_or(object, "/spec/volumeMode")),
        ]
    }
}

// ---- StorageClass ----

#[derive(Debug, Default, Clone, Copy)]
pub struct StorageClassStrategy;

/// Upstream's `SetDefaults_StorageClass`.
pub fn default_storage_class(sc: &mut StorageClass) {
    sc.reclaim_policy
        .get_or_insert_with(|| "Delete".to_string());
    sc.volume_binding_mode
        .get_or_insert_with(|| "Immediate".to_string());
}

fn validate_storage_class(new: &StorageClass, old: Option<&StorageClass>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if new.provisioner.is_empty() {
        errs.push(required("provisioner", ""));
    } else {
        for p in names::qualified_name_problems(&new.provisioner.to_lowercase()) {
            errs.push(invalid("provisioner", new.provisioner.as_str(), &p));
        }
    }
    let policy = new.reclaim_policy.as_deref().unwrap_or_default();
    if !matches!(policy, "Delete" | "Retain") {
        errs.push(not_supported(
            "reclaimPolicy",
            policy,
            &["Delete", "Retain"],
        ));
    }
    let mode = new.volume_binding_mode.as_deref().unwrap_or_default();
    if !matches!(mode, "Immediate" | "WaitForFirstConsumer") {
        errs.push(not_supported(
            "volumeBindingMode",
            mode,
            &["Immediate", "WaitForFirstConsumer"],
        ));
    }
    if let Some(old) = old {
        if new.parameters != old.parameters {
            errs.push(forbidden(
                "parameters",
                "updates to parameters are forbidden.",
            ));
        }
        if new.provisioner != old.provisioner {
            errs.push(forbidden(
                "provisioner",
                "updates to provisioner are forbidden.",
            ));
        }
        if new.reclaim_policy != old.reclaim_policy {
            errs.push(forbidden(
                "reclaimPolicy",
                "updates to reclaimPolicy are forbidden.",
            ));
        }
        if new.volume_binding_mode != old.volume_binding_mode {
            errs.push(invalid("volumeBindingMode", mode, FIELD_IMMUTABLE));
        }
    }
    errs
}

fn is_default_class(object: &Value) -> bool {
    let annotations = object.pointer("/metadata/annotations");
    [
        "storageclass.kubernetes.io/is-default-class",
        "storageclass.beta.kubernetes.io/is-default-class",
    ]
    .iter()
    .any(|k| annotations.and_then(|a| a.get(*k)).and_then(Value::as_str) == Some("true"))
}

impl KindStrategy for StorageClassStrategy {
    fn default(&self, object: &mut Value) {
        with_typed(object, default_storage_class);
    }

    fn validate(&self, object: &Value, old: Option<&Value>) -> Vec<Cause> {
        validate_typed(object, old, validate_storage_class)
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            name_column(),
            col(
                "Provisioner",
                "string",
                "The volume plugin that provisions volumes.",
            ),
            col(
                "ReclaimPolicy",
                "string",
                "Reclaim policy of provisioned volumes.",
            ),
            col(
                "VolumeBindingMode",
                "string",
                "When volumes are bound and provisioned.",
            ),
            col("AllowVolumeExpansion", "string", "Whether claims may grow."),
            age_column(),
        ]
    }

    fn row(&self, object: &Value, now: i64) -> Vec<Value> {
        let mut name = name_of(object).to_string();
        if is_default_class(object) {
            name.push_str(" (default)");
        }
        let or = |pointer: &str, fallback: &'static str| match s(object, pointer) {
            "" => fallback.to_string(),
            v => v.to_string(),
        };
        vec![
            json!(name),
            json!(s(object, "/provisioner")),
            json!(or("/reclaimPolicy", "Delete")),
            json!(or("/volumeBindingMode", "Immediate")),
            json!(flag(object, "/allowVolumeExpansion").unwrap_or(false)),
            json!(since(s(object, "/metadata/creationTimestamp"), now)),
        ]
    }
}

// ---- CSIDriver, CSINode, VolumeAttachment (tables only) ----

#[derive(Debug, Default, Clone, Copy)]
pub struct CsiDriverStrategy;

impl KindStrategy for CsiDriverStrategy {
    fn columns(&self) -> Vec<Column> {
        vec![
            name_column(),
            col(
                "AttachRequired",
                "boolean",
                "Whether volumes need an attach step.",
            ),
            col(
                "PodInfoOnMount",
                "boolean",
                "Whether pod details are passed on mount.",
            ),
            col(
                "StorageCapacity",
                "boolean",
                "Whether capacity is tracked for scheduling.",
            ),
            col(
                "TokenRequests",
                "string",
                "Audiences of service account tokens passed on mount.",
            ),
            col(
                "RequiresRepublish",
                "boolean",
                "Whether volumes are remounted periodically.",
            ),
            col("Modes", "string", "Volume lifecycle modes supported."),
            age_column(),
        ]
    }

    fn row(&self, object: &Value, now: i64) -> Vec<Value> {
        let modes: Vec<&str> = arr(object, "/spec/volumeLifecycleModes")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let tokens = match object
            .pointer("/spec/tokenRequests")
            .and_then(Value::as_array)
        {
            None => "<unset>".to_string(),
            Some(list) => list
                .iter()
                .map(|t| s(t, "/audience"))
                .collect::<Vec<_>>()
                .join(","),
        };
        vec![
            json!(name_of(object)),
            json!(flag(object, "/spec/attachRequired").unwrap_or(true)),
            json!(flag(object, "/spec/podInfoOnMount").unwrap_or(false)),
            json!(flag(object, "/spec/storageCapacity").unwrap_or(false)),
            json!(tokens),
            json!(flag(object, "/spec/requiresRepublish").unwrap_or(false)),
            json!(if modes.is_empty() {
                "<none>".to_string()
            } else {
                modes.join(",")
            }),
            json!(since(s(object, "/metadata/creationTimestamp"), now)),
        ]
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct CsiNodeStrategy;

impl KindStrategy for CsiNodeStrategy {
    fn columns(&self) -> Vec<Column> {
        vec![
            name_column(),
            col("Drivers", "integer", "Number of CSI drivers on the node."),
            age_column(),
        ]
    }

    fn row(&self, object: &Value, now: i64) -> Vec<Value> {
        vec![
            json!(name_of(object)),
            json!(arr(object, "/spec/drivers").len()),
            json!(since(s(object, "/metadata/creationTimestamp"), now)),
        ]
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct VolumeAttachmentStrategy;

impl KindStrategy for VolumeAttachmentStrategy {
    fn columns(&self) -> Vec<Column> {
        vec![
            name_column(),
            Column {
                format: "name",
                ..col("Attacher", "string", "The CSI driver attaching the volume.")
            },
            col("PV", "string", "The volume being attached."),
            col("Node", "string", "The node the volume is attached to."),
            col("Attached", "boolean", "Whether the attach succeeded."),
            age_column(),
        ]
    }

    fn row(&self, object: &Value, now: i64) -> Vec<Value> {
        vec![
            json!(name_of(object)),
            json!(s(object, "/spec/attacher")),
            json!(s(object, "/spec/source/persistentVolumeName")),
            json!(s(object, "/spec/nodeName")),
            json!(flag(object, "/status/attached").unwrap_or(false)),
            json!(since(s(object, "/metadata/creationTimestamp"), now)),
        ]
    }
}
