//! Validation of a static pod manifest: the subset of upstream `ValidatePod` that matters on a
//! node, plus the rules static pods add (no API objects, no `gitRepo`). Pure; every check
//! appends [`FieldError`]s so a manifest's problems are all reported at once.
//!
//! Metadata is checked on the manifest as written; the spec is checked after defaulting (as the
//! upstream kubelet does), so enum fields are always set when checked here.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, PodSpec, Probe, ResourceRequirements, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::field::{
    self, DNS1123_SUBDOMAIN_MAX, FieldError, check_dns1123_label, check_dns1123_subdomain,
    duplicate, forbidden, invalid, not_found, not_supported, required,
};
use crate::quantity;

pub(crate) const RESTART_POLICIES: &[&str] = &["Always", "OnFailure", "Never"];
pub(crate) const DNS_POLICIES: &[&str] =
    &["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"];
const PULL_POLICIES: &[&str] = &["Always", "IfNotPresent", "Never"];
const TERMINATION_MESSAGE_POLICIES: &[&str] = &["File", "FallbackToLogsOnError"];
const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
const MOUNT_PROPAGATIONS: &[&str] = &["Bidirectional", "HostToContainer", "None"];
pub(crate) const HOST_PATH_TYPES: &[&str] = &[
    "",
    "BlockDevice",
    "CharDevice",
    "Directory",
    "DirectoryOrCreate",
    "File",
    "FileOrCreate",
    "Socket",
];
const ENV_FIELD_PATHS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
];
const RESOURCE_FIELD_REFS: &[&str] = &[
    "limits.cpu",
    "limits.ephemeral-storage",
    "limits.memory",
    "requests.cpu",
    "requests.ephemeral-storage",
    "requests.memory",
];
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
    for (key, value) in meta.labels.iter().flatten() {
        let path = format!("metadata.labels[{key}]");
        for p in field::qualified_name_problems(key) {
            errs.push(invalid("metadata.labels", key.as_str(), &p));
        }
        for p in field::label_value_problems(value) {
            errs.push(invalid(&path, value.as_str(), &p));
        }
    }
    for key in meta.annotations.iter().flatten().map(|(k, _)| k) {
        for p in field::qualified_name_problems(&key.to_lowercase()) {
            errs.push(invalid("metadata.annotations", key.as_str(), &p));
        }
    }
    errs
}

/// Checks a defaulted pod spec.
pub(crate) fn validate_spec(spec: &PodSpec) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let volumes = validate_volumes(spec.volumes.as_deref().unwrap_or_default(), &mut errs);

    if spec.containers.is_empty() {
        errs.push(required("spec.containers", ""));
    }
    let mut names = BTreeSet::new();
    let host_network = spec.host_network.unwrap_or(false);
    let mut host_ports = BTreeSet::new();
    let lists = [
        (
            "spec.initContainers",
            spec.init_containers.as_deref().unwrap_or_default(),
            true,
        ),
        ("spec.containers", spec.containers.as_slice(), false),
    ];
    for (list_path, containers, init) in lists {
        for (i, c) in containers.iter().enumerate() {
            let path = format!("{list_path}[{i}]");
            if !c.name.is_empty() && !names.insert(c.name.as_str()) {
                errs.push(duplicate(&format!("{path}.name"), c.name.as_str()));
            }
            let ctx = ContainerCtx {
                path: &path,
                init,
                host_network,
                volumes: &volumes,
            };
            validate_container(&ctx, c, &mut errs);
            for (j, port) in c.ports.iter().flatten().enumerate() {
                let hp = port.host_port.unwrap_or(0);
                if hp != 0 {
                    let key = format!("{hp}/{}", port.protocol.as_deref().unwrap_or("TCP"));
                    if !host_ports.insert((port.host_ip.clone().unwrap_or_default(), key.clone())) {
                        errs.push(duplicate(
                            &format!("{path}.ports[{j}].hostPort"),
                            key.as_str(),
                        ));
                    }
                }
            }
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

    let restart = spec.restart_policy.as_deref().unwrap_or_default();
    if !RESTART_POLICIES.contains(&restart) {
        errs.push(not_supported(
            "spec.restartPolicy",
            restart,
            RESTART_POLICIES,
        ));
    }
    let dns = spec.dns_policy.as_deref().unwrap_or_default();
    if !DNS_POLICIES.contains(&dns) {
        errs.push(not_supported("spec.dnsPolicy", dns, DNS_POLICIES));
    } else if dns == "None"
        && spec
            .dns_config
            .as_ref()
            .is_none_or(|c| c.nameservers.as_ref().is_none_or(Vec::is_empty))
    {
        errs.push(required(
            "spec.dnsConfig.nameservers",
            "must provide at least one DNS nameserver when `dnsPolicy` is None",
        ));
    }
    if let Some(grace) = spec.termination_grace_period_seconds.filter(|g| *g < 0) {
        errs.push(invalid(
            "spec.terminationGracePeriodSeconds",
            grace,
            "must be greater than or equal to 0",
        ));
    }
    if let Some(deadline) = spec
        .active_deadline_seconds
        .filter(|d| *d < 1 || *d > i64::from(i32::MAX))
    {
        errs.push(invalid(
            "spec.activeDeadlineSeconds",
            deadline,
            "must be between 1 and 2147483647, inclusive",
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
    errs
}

/// Checks the volumes and returns the set of valid-enough names mounts may reference.
fn validate_volumes<'a>(volumes: &'a [Volume], errs: &mut Vec<FieldError>) -> BTreeSet<&'a str> {
    let mut names = BTreeSet::new();
    for (i, vol) in volumes.iter().enumerate() {
        let path = format!("spec.volumes[{i}]");
        if vol.name.is_empty() {
            errs.push(required(&format!("{path}.name"), ""));
        } else {
            check_dns1123_label(&format!("{path}.name"), &vol.name, errs);
            if !names.insert(vol.name.as_str()) {
                errs.push(duplicate(&format!("{path}.name"), vol.name.as_str()));
            }
        }
        let sources = volume_source_names(vol);
        match sources.as_slice() {
            [] => errs.push(required(&path, "must specify a volume type")),
            [_] => {}
            [_, more @ ..] => {
                errs.push(forbidden(
                    &format!("{path}.{}", more[0]),
                    "may not specify more than 1 volume type",
                ));
            }
        }
        for source in &sources {
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
        if let Some(hp) = &vol.host_path {
            let hp_path = format!("{path}.hostPath");
            if hp.path.is_empty() {
                errs.push(required(&format!("{hp_path}.path"), ""));
            } else if has_backsteps(&hp.path) {
                errs.push(invalid(
                    &format!("{hp_path}.path"),
                    hp.path.as_str(),
                    "must not contain '..'",
                ));
            }
            let ty = hp.type_.as_deref().unwrap_or_default();
            if !HOST_PATH_TYPES.contains(&ty) {
                errs.push(not_supported(
                    &format!("{hp_path}.type"),
                    ty,
                    HOST_PATH_TYPES,
                ));
            }
        }
        if let Some(ed) = &vol.empty_dir {
            let medium = ed.medium.as_deref().unwrap_or_default();
            if !matches!(medium, "" | "Memory") && !medium.starts_with("HugePages") {
                errs.push(not_supported(
                    &format!("{path}.emptyDir.medium"),
                    medium,
                    &["", "Memory", "HugePages", "HugePages-<size>"],
                ));
            }
            if let Some(limit) = &ed.size_limit {
                check_quantity(&format!("{path}.emptyDir.sizeLimit"), &limit.0, errs);
            }
        }
    }
    names
}

/// The JSON names of the volume sources set on `vol` (`emptyDir`, `hostPath`, ...).
fn volume_source_names(vol: &Volume) -> Vec<String> {
    match serde_json::to_value(vol) {
        Ok(serde_json::Value::Object(map)) => map
            .into_iter()
            .filter(|(k, v)| k != "name" && !v.is_null())
            .map(|(k, _)| k)
            .collect(),
        // A Volume always serialises to an object; nothing else can be counted.
        _ => Vec::new(),
    }
}

fn has_backsteps(path: &str) -> bool {
    path.split('/').any(|part| part == "..")
}

struct ContainerCtx<'a> {
    path: &'a str,
    init: bool,
    host_network: bool,
    volumes: &'a BTreeSet<&'a str>,
}

fn validate_container(ctx: &ContainerCtx<'_>, c: &Container, errs: &mut Vec<FieldError>) {
    let path = ctx.path;
    if c.name.is_empty() {
        errs.push(required(&format!("{path}.name"), ""));
    } else {
        check_dns1123_label(&format!("{path}.name"), &c.name, errs);
    }
    match c.image.as_deref() {
        None | Some("") => errs.push(required(&format!("{path}.image"), "")),
        Some(image) if image.trim() != image => errs.push(invalid(
            &format!("{path}.image"),
            image,
            "must not have leading or trailing whitespace",
        )),
        Some(_) => {}
    }
    let pull = c.image_pull_policy.as_deref().unwrap_or_default();
    if !PULL_POLICIES.contains(&pull) {
        errs.push(not_supported(
            &format!("{path}.imagePullPolicy"),
            pull,
            PULL_POLICIES,
        ));
    }
    let tmp = c.termination_message_policy.as_deref().unwrap_or_default();
    if !TERMINATION_MESSAGE_POLICIES.contains(&tmp) {
        errs.push(not_supported(
            &format!("{path}.terminationMessagePolicy"),
            tmp,
            TERMINATION_MESSAGE_POLICIES,
        ));
    }

    let sidecar = match (ctx.init, c.restart_policy.as_deref()) {
        (_, None) => false,
        (true, Some("Always")) => true,
        (true, Some(other)) => {
            errs.push(not_supported(
                &format!("{path}.restartPolicy"),
                other,
                &["Always"],
            ));
            false
        }
        (false, Some(_)) => {
            errs.push(forbidden(
                &format!("{path}.restartPolicy"),
                "may not be set for non-init containers",
            ));
            false
        }
    };
    if ctx.init && !sidecar {
        let probes = [
            ("lifecycle", c.lifecycle.is_some()),
            ("livenessProbe", c.liveness_probe.is_some()),
            ("readinessProbe", c.readiness_probe.is_some()),
            ("startupProbe", c.startup_probe.is_some()),
        ];
        for (name, set) in probes {
            if set {
                errs.push(forbidden(
                    &format!("{path}.{name}"),
                    "may not be set for init containers without restartPolicy=Always",
                ));
            }
        }
    } else {
        let probes = [
            ("livenessProbe", &c.liveness_probe, true),
            ("readinessProbe", &c.readiness_probe, false),
            ("startupProbe", &c.startup_probe, true),
        ];
        for (name, probe, success_must_be_one) in probes {
            if let Some(probe) = probe {
                validate_probe(&format!("{path}.{name}"), probe, success_must_be_one, errs);
            }
        }
    }

    validate_ports(ctx, c.ports.as_deref().unwrap_or_default(), errs);
    validate_env(path, c.env.as_deref().unwrap_or_default(), errs);
    if c.env_from.as_ref().is_some_and(|e| !e.is_empty()) {
        errs.push(forbidden(&format!("{path}.envFrom"), NO_API));
    }
    if let Some(res) = &c.resources {
        validate_resources(&format!("{path}.resources"), res, errs);
    }
    validate_mounts(ctx, c.volume_mounts.as_deref().unwrap_or_default(), errs);
}

fn validate_probe(
    path: &str,
    probe: &Probe,
    success_must_be_one: bool,
    errs: &mut Vec<FieldError>,
) {
    let handlers = [
        probe.exec.is_some(),
        probe.http_get.is_some(),
        probe.tcp_socket.is_some(),
        probe.grpc.is_some(),
    ]
    .into_iter()
    .filter(|set| *set)
    .count();
    match handlers {
        0 => errs.push(required(path, "must specify a handler type")),
        1 => {}
        _ => errs.push(forbidden(path, "may not specify more than 1 handler type")),
    }
    let non_negative = [
        ("initialDelaySeconds", probe.initial_delay_seconds),
        ("timeoutSeconds", probe.timeout_seconds),
        ("periodSeconds", probe.period_seconds),
        ("successThreshold", probe.success_threshold),
        ("failureThreshold", probe.failure_threshold),
    ];
    for (name, value) in non_negative {
        if let Some(v) = value.filter(|v| *v < 0) {
            errs.push(invalid(
                &format!("{path}.{name}"),
                v,
                "must be greater than or equal to 0",
            ));
        }
    }
    if success_must_be_one && let Some(v) = probe.success_threshold.filter(|v| *v != 1) {
        errs.push(invalid(&format!("{path}.successThreshold"), v, "must be 1"));
    }
}

fn validate_ports(ctx: &ContainerCtx<'_>, ports: &[ContainerPort], errs: &mut Vec<FieldError>) {
    let mut names = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let path = format!("{}.ports[{i}]", ctx.path);
        if let Some(name) = port.name.as_deref() {
            for p in field::port_name_problems(name) {
                errs.push(invalid(&format!("{path}.name"), name, &p));
            }
            if !names.insert(name) {
                errs.push(duplicate(&format!("{path}.name"), name));
            }
        }
        if !(1..=65535).contains(&port.container_port) {
            errs.push(invalid(
                &format!("{path}.containerPort"),
                port.container_port,
                "must be between 1 and 65535, inclusive",
            ));
        }
        let host_port = port.host_port.unwrap_or(0);
        if !(0..=65535).contains(&host_port) {
            errs.push(invalid(
                &format!("{path}.hostPort"),
                host_port,
                "must be between 1 and 65535, inclusive",
            ));
        } else if ctx.host_network && host_port != port.container_port {
            errs.push(invalid(
                &format!("{path}.hostPort"),
                host_port,
                "must match `containerPort` when `hostNetwork` is true",
            ));
        }
        let protocol = port.protocol.as_deref().unwrap_or_default();
        if !PROTOCOLS.contains(&protocol) {
            errs.push(not_supported(
                &format!("{path}.protocol"),
                protocol,
                PROTOCOLS,
            ));
        }
    }
}

fn validate_env(container_path: &str, env: &[EnvVar], errs: &mut Vec<FieldError>) {
    for (i, var) in env.iter().enumerate() {
        let path = format!("{container_path}.env[{i}]");
        if var.name.is_empty() {
            errs.push(required(&format!("{path}.name"), ""));
        } else {
            for p in field::env_var_name_problems(&var.name) {
                errs.push(invalid(&format!("{path}.name"), var.name.as_str(), &p));
            }
        }
        let Some(from) = &var.value_from else {
            continue;
        };
        let from_path = format!("{path}.valueFrom");
        if var.value.as_ref().is_some_and(|v| !v.is_empty()) {
            errs.push(invalid(
                &from_path,
                "",
                "may not be specified when `value` is not empty",
            ));
        }
        let count = [
            from.field_ref.is_some(),
            from.resource_field_ref.is_some(),
            from.config_map_key_ref.is_some(),
            from.secret_key_ref.is_some(),
        ]
        .into_iter()
        .filter(|set| *set)
        .count();
        match count {
            0 => errs.push(invalid(
                &from_path,
                "",
                "must specify one of: `fieldRef`, `resourceFieldRef`",
            )),
            1 => {}
            _ => errs.push(invalid(
                &from_path,
                "",
                "may not have more than one field specified at a time",
            )),
        }
        if from.config_map_key_ref.is_some() {
            errs.push(forbidden(&format!("{from_path}.configMapKeyRef"), NO_API));
        }
        if from.secret_key_ref.is_some() {
            errs.push(forbidden(&format!("{from_path}.secretKeyRef"), NO_API));
        }
        if let Some(fr) = &from.field_ref {
            let fr_path = format!("{from_path}.fieldRef");
            let version = fr.api_version.as_deref().unwrap_or("v1");
            if version != "v1" {
                errs.push(not_supported(
                    &format!("{fr_path}.apiVersion"),
                    version,
                    &["v1"],
                ));
            }
            validate_field_path(&format!("{fr_path}.fieldPath"), &fr.field_path, errs);
        }
        if let Some(rf) = &from.resource_field_ref {
            let rf_path = format!("{from_path}.resourceFieldRef");
            if !RESOURCE_FIELD_REFS.contains(&rf.resource.as_str()) {
                errs.push(not_supported(
                    &format!("{rf_path}.resource"),
                    rf.resource.as_str(),
                    RESOURCE_FIELD_REFS,
                ));
            }
            if let Some(divisor) = &rf.divisor {
                check_quantity(&format!("{rf_path}.divisor"), &divisor.0, errs);
            }
        }
    }
}

fn validate_field_path(path: &str, field_path: &str, errs: &mut Vec<FieldError>) {
    if ENV_FIELD_PATHS.contains(&field_path) {
        return;
    }
    for prefix in ["metadata.labels", "metadata.annotations"] {
        if let Some(rest) = field_path.strip_prefix(prefix)
            && let Some(key) = rest.strip_prefix("['").and_then(|r| r.strip_suffix("']"))
        {
            for p in field::qualified_name_problems(key) {
                errs.push(invalid(path, key, &p));
            }
            return;
        }
    }
    let mut supported: Vec<&str> = ENV_FIELD_PATHS.to_vec();
    supported.extend(["metadata.annotations['<KEY>']", "metadata.labels['<KEY>']"]);
    supported.sort_unstable();
    errs.push(not_supported(path, field_path, &supported));
}

fn check_quantity(
    path: &str,
    text: &str,
    errs: &mut Vec<FieldError>,
) -> Option<quantity::Quantity> {
    match quantity::parse(text) {
        Ok(q) if q.is_negative() => {
            errs.push(invalid(path, text, "must be greater than or equal to 0"));
            None
        }
        Ok(q) => Some(q),
        Err(e) => {
            errs.push(invalid(path, text, &e.to_string()));
            None
        }
    }
}

fn is_valid_resource_name(name: &str) -> bool {
    matches!(name, "cpu" | "memory" | "ephemeral-storage")
        || name
            .strip_prefix("hugepages-")
            .is_some_and(|size| quantity::parse(size).is_ok())
        || (name.contains('/') && field::qualified_name_problems(name).is_empty())
}

fn validate_resources(path: &str, res: &ResourceRequirements, errs: &mut Vec<FieldError>) {
    let mut parsed: [BTreeMap<&str, quantity::Quantity>; 2] = [BTreeMap::new(), BTreeMap::new()];
    for (slot, (kind, map)) in [("limits", &res.limits), ("requests", &res.requests)]
        .into_iter()
        .enumerate()
    {
        for (name, q) in map.iter().flatten() {
            let q_path = format!("{path}.{kind}[{name}]");
            if !is_valid_resource_name(name) {
                errs.push(invalid(
                    &q_path,
                    name.as_str(),
                    "must be a standard resource type or fully qualified",
                ));
                continue;
            }
            if let Some(value) = check_quantity(&q_path, &q.0, errs) {
                parsed[slot].insert(name.as_str(), value);
            }
        }
    }
    let [limits, requests] = &parsed;
    for (name, request) in requests {
        if let Some(limit) = limits.get(name)
            && request > limit
        {
            errs.push(invalid(
                &format!("{path}.requests[{name}]"),
                res.requests
                    .as_ref()
                    .and_then(|r| r.get(*name))
                    .map_or("", |q| q.0.as_str()),
                &format!("must be less than or equal to {name} limit of {limit}"),
            ));
        }
    }
    if res.claims.as_ref().is_some_and(|c| !c.is_empty()) {
        errs.push(forbidden(&format!("{path}.claims"), NO_API));
    }
}

fn validate_mounts(ctx: &ContainerCtx<'_>, mounts: &[VolumeMount], errs: &mut Vec<FieldError>) {
    let mut paths = BTreeSet::new();
    for (i, m) in mounts.iter().enumerate() {
        let path = format!("{}.volumeMounts[{i}]", ctx.path);
        if m.name.is_empty() {
            errs.push(required(&format!("{path}.name"), ""));
        } else if !ctx.volumes.contains(m.name.as_str()) {
            errs.push(not_found(&format!("{path}.name"), m.name.as_str()));
        }
        if m.mount_path.is_empty() {
            errs.push(required(&format!("{path}.mountPath"), ""));
        } else if !m.mount_path.starts_with('/') {
            errs.push(invalid(
                &format!("{path}.mountPath"),
                m.mount_path.as_str(),
                "must be an absolute path",
            ));
        } else if !paths.insert(m.mount_path.as_str()) {
            errs.push(invalid(
                &format!("{path}.mountPath"),
                m.mount_path.as_str(),
                "must be unique",
            ));
        }
        if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            if sub.starts_with('/') {
                errs.push(invalid(
                    &format!("{path}.subPath"),
                    sub,
                    "must be a relative path",
                ));
            } else if has_backsteps(sub) {
                errs.push(invalid(
                    &format!("{path}.subPath"),
                    sub,
                    "must not contain '..'",
                ));
            }
        }
        if let Some(prop) = m.mount_propagation.as_deref()
            && !MOUNT_PROPAGATIONS.contains(&prop)
        {
            errs.push(not_supported(
                &format!("{path}.mountPropagation"),
                prop,
                MOUNT_PROPAGATIONS,
            ));
        }
    }
}
