//! Validation of a static pod manifest: upstream's API validation of the pod spec (from
//! `kwk-api`) plus the rules static pods add, since no API server stands behind them: no
//! references to API objects (secrets, config maps, service accounts, claims), only
//! `emptyDir`, `hostPath`, `downwardAPI` and `image` volumes, no `gitRepo`, no ephemeral
//! containers. Pure; every check appends [`FieldError`]s so a manifest's problems are all
//! reported at once.
//!
//! Metadata is checked on the manifest as written; the spec is checked after defaulting (as the
//! upstream kubelet does), so enum fields are always set when checked here.

use k8s_openapi::api::core::v1::{Container, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kwk_api::field::{FieldError, forbidden, invalid, required};
use kwk_api::names::{DNS1123_SUBDOMAIN_MAX, check_dns1123_label, check_dns1123_subdomain};
use kwk_api::{meta, pod};

/// Volume sources a static pod can use: they need nothing from the API server.
const ALLOWED_VOLUME_SOURCES: &[&str] = &["emptyDir", "hostPath", "downwardAPI", "image"];
const NO_API: &str = "static pods may not reference API objects";

/// Checks the manifest's metadata as written. `node_name` is the suffix the pod name gets.
pub(crate) fn validate_metadata(meta: &ObjectMeta, node_name: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    match meta.name.as_deref() {
        None | Some("") => errs.push(required(
            "metadata.name",
            "name or generateName is required",
        )),
        Some(name) => {
            check_dns1123_subdomain("metadata.name", name, &mut errs);
            let full = super::defaults::static_pod_name(name, node_name);
            if errs.is_empty() && full.len() > DNS1123_SUBDOMAIN_MAX {
                errs.push(invalid(
                    "metadata.name",
                    full.as_str(),
                    &format!(
                        "must be no more than {DNS1123_SUBDOMAIN_MAX} characters (the name with \
                         \"-<nodeName>\" appended)"
                    ),
                ));
            }
        }
    }
    if let Some(ns) = meta.namespace.as_deref().filter(|ns| !ns.is_empty()) {
        check_dns1123_label("metadata.namespace", ns, &mut errs);
    }
    if let Some(labels) = &meta.labels {
        errs.extend(meta::validate_labels(labels, "metadata.labels"));
    }
    if let Some(annotations) = &meta.annotations {
        errs.extend(meta::validate_annotations(
            annotations,
            "metadata.annotations",
        ));
    }
    errs
}

/// Checks a defaulted pod spec: the API rules, then the static pod rules.
pub(crate) fn validate_spec(spec: &PodSpec) -> Vec<FieldError> {
    let mut errs = pod::validate_pod_spec(spec, "spec");
    static_pod_rules(spec, &mut errs);
    errs
}

fn static_pod_rules(spec: &PodSpec, errs: &mut Vec<FieldError>) {
    for (i, vol) in spec.volumes.iter().flatten().enumerate() {
        let path = format!("spec.volumes[{i}]");
        for source in pod::volume_source_names(vol) {
            match source.as_str() {
                "gitRepo" => errs.push(forbidden(
                    &format!("{path}.gitRepo"),
                    "gitRepo volumes are not supported (CVE-2024-10220); clone the repository \
                     into a hostPath or emptyDir instead",
                )),
                s if ALLOWED_VOLUME_SOURCES.contains(&s) => {}
                s => errs.push(forbidden(
                    &format!("{path}.{s}"),
                    "static pods may only use emptyDir, hostPath, downwardAPI and image volumes: \
                     other volume types need the API server or a volume plugin",
                )),
            }
        }
    }
    let lists = [
        (
            "spec.initContainers",
            spec.init_containers.as_deref().unwrap_or_default(),
        ),
        ("spec.containers", spec.containers.as_slice()),
    ];
    for (list_path, containers) in lists {
        for (i, c) in containers.iter().enumerate() {
            container_rules(&format!("{list_path}[{i}]"), c, errs);
        }
    }
    if spec
        .ephemeral_containers
        .as_ref()
        .is_some_and(|e| !e.is_empty())
    {
        errs.push(forbidden(
            "spec.ephemeralContainers",
            "static pods may not have ephemeral containers",
        ));
    }
    if spec
        .service_account_name
        .as_ref()
        .is_some_and(|s| !s.is_empty())
        || spec.service_account.as_ref().is_some_and(|s| !s.is_empty())
    {
        errs.push(forbidden(
            "spec.serviceAccountName",
            "static pods may not use a service account",
        ));
    }
    if spec
        .image_pull_secrets
        .as_ref()
        .is_some_and(|s| !s.is_empty())
    {
        errs.push(forbidden("spec.imagePullSecrets", NO_API));
    }
    if spec.resource_claims.as_ref().is_some_and(|s| !s.is_empty()) {
        errs.push(forbidden("spec.resourceClaims", NO_API));
    }
}

fn container_rules(path: &str, c: &Container, errs: &mut Vec<FieldError>) {
    if c.env_from.as_ref().is_some_and(|e| !e.is_empty()) {
        errs.push(forbidden(&format!("{path}.envFrom"), NO_API));
    }
    for (i, var) in c.env.iter().flatten().enumerate() {
        let Some(from) = &var.value_from else {
            continue;
        };
        let from_path = format!("{path}.env[{i}].valueFrom");
        if from.config_map_key_ref.is_some() {
            errs.push(forbidden(&format!("{from_path}.configMapKeyRef"), NO_API));
        }
        if from.secret_key_ref.is_some() {
            errs.push(forbidden(&format!("{from_path}.secretKeyRef"), NO_API));
        }
    }
    if c.resources
        .as_ref()
        .and_then(|r| r.claims.as_ref())
        .is_some_and(|c| !c.is_empty())
    {
        errs.push(forbidden(&format!("{path}.resources.claims"), NO_API));
    }
}
