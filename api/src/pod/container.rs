//! Validation of one container of a pod spec (upstream's `validateContainerCommon` and what
//! it calls): name, image, pull and termination message policies, the sidecar restart policy,
//! probes and lifecycle handlers, ports, environment, resources and volume mounts.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvFromSource, EnvVar, LifecycleHandler, Probe, ResourceRequirements,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::field::{FieldError, duplicate, forbidden, invalid, not_found, not_supported, required};
use crate::names::{self, check_dns1123_label, check_dns1123_subdomain};
use crate::quantity;

const PULL_POLICIES: &[&str] = &["Always", "IfNotPresent", "Never"];
const TERMINATION_MESSAGE_POLICIES: &[&str] = &["File", "FallbackToLogsOnError"];
/// Port protocols, sorted as upstream lists them.
pub const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
const MOUNT_PROPAGATIONS: &[&str] = &["Bidirectional", "HostToContainer", "None"];
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

/// What a container's checks need from the rest of the pod spec.
#[derive(Debug)]
pub(crate) struct ContainerCtx<'a> {
    pub path: &'a str,
    pub init: bool,
    pub host_network: bool,
    pub volumes: &'a BTreeSet<&'a str>,
}

pub(crate) fn validate_container(
    ctx: &ContainerCtx<'_>,
    c: &Container,
    errs: &mut Vec<FieldError>,
) {
    let path = ctx.path;
    if c.name.is_empty() {
        errs.push(required(&format!("{path}.name"), ""));
    } else {
        check_dns1123_label(&format!("{path}.name"), &c.name, errs);
    }
    check_image(path, c.image.as_deref(), errs);
    check_policies(
        path,
        c.image_pull_policy.as_deref(),
        c.termination_message_policy.as_deref(),
        errs,
    );

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
            ("livenessProbe", &c.liveness_probe, ProbeKind::Liveness),
            ("readinessProbe", &c.readiness_probe, ProbeKind::Readiness),
            ("startupProbe", &c.startup_probe, ProbeKind::Startup),
        ];
        for (name, probe, kind) in probes {
            if let Some(probe) = probe {
                validate_probe(&format!("{path}.{name}"), probe, kind, errs);
            }
        }
        if let Some(lifecycle) = &c.lifecycle {
            for (name, handler) in [
                ("postStart", &lifecycle.post_start),
                ("preStop", &lifecycle.pre_stop),
            ] {
                if let Some(handler) = handler {
                    validate_lifecycle_handler(&format!("{path}.lifecycle.{name}"), handler, errs);
                }
            }
        }
    }

    validate_ports(ctx, c.ports.as_deref().unwrap_or_default(), errs);
    validate_env(path, c.env.as_deref().unwrap_or_default(), errs);
    validate_env_from(path, c.env_from.as_deref().unwrap_or_default(), errs);
    if let Some(res) = &c.resources {
        validate_resources(&format!("{path}.resources"), res, errs);
    }
    validate_mounts(ctx, c.volume_mounts.as_deref().unwrap_or_default(), errs);
    if let Some(sc) = &c.security_context
        && sc.privileged == Some(true)
        && sc.allow_privilege_escalation == Some(false)
    {
        errs.push(invalid(
            &format!("{path}.securityContext"),
            "",
            "cannot set `allowPrivilegeEscalation` to false and `privileged` to true",
        ));
    }
}

/// Image required and without surrounding whitespace.
pub(crate) fn check_image(path: &str, image: Option<&str>, errs: &mut Vec<FieldError>) {
    match image {
        None | Some("") => errs.push(required(&format!("{path}.image"), "")),
        Some(image) if image.trim() != image => errs.push(invalid(
            &format!("{path}.image"),
            image,
            "must not have leading or trailing whitespace",
        )),
        Some(_) => {}
    }
}

pub(crate) fn check_policies(
    path: &str,
    pull: Option<&str>,
    termination: Option<&str>,
    errs: &mut Vec<FieldError>,
) {
    let pull = pull.unwrap_or_default();
    if !PULL_POLICIES.contains(&pull) {
        errs.push(not_supported(
            &format!("{path}.imagePullPolicy"),
            pull,
            PULL_POLICIES,
        ));
    }
    let tmp = termination.unwrap_or_default();
    if !TERMINATION_MESSAGE_POLICIES.contains(&tmp) {
        errs.push(not_supported(
            &format!("{path}.terminationMessagePolicy"),
            tmp,
            TERMINATION_MESSAGE_POLICIES,
        ));
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProbeKind {
    Liveness,
    Readiness,
    Startup,
}

fn validate_probe(path: &str, probe: &Probe, kind: ProbeKind, errs: &mut Vec<FieldError>) {
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
    if let Some(exec) = &probe.exec
        && exec.command.as_ref().is_none_or(Vec::is_empty)
    {
        errs.push(required(&format!("{path}.exec.command"), ""));
    }
    if let Some(http) = &probe.http_get {
        check_port_num_or_name(&format!("{path}.httpGet.port"), &http.port, errs);
    }
    if let Some(tcp) = &probe.tcp_socket {
        check_port_num_or_name(&format!("{path}.tcpSocket.port"), &tcp.port, errs);
    }
    if let Some(grpc) = &probe.grpc {
        for p in names::port_number_problems(i64::from(grpc.port)) {
            errs.push(invalid(&format!("{path}.grpc.port"), grpc.port, &p));
        }
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
    if kind != ProbeKind::Readiness
        && let Some(v) = probe.success_threshold.filter(|v| *v != 1)
    {
        errs.push(invalid(&format!("{path}.successThreshold"), v, "must be 1"));
    }
    match (kind, probe.termination_grace_period_seconds) {
        (ProbeKind::Readiness, Some(v)) => errs.push(invalid(
            &format!("{path}.terminationGracePeriodSeconds"),
            v,
            "must not be set for readinessProbes",
        )),
        (_, Some(v)) if v <= 0 => errs.push(invalid(
            &format!("{path}.terminationGracePeriodSeconds"),
            v,
            "must be greater than 0",
        )),
        _ => {}
    }
}

fn validate_lifecycle_handler(path: &str, h: &LifecycleHandler, errs: &mut Vec<FieldError>) {
    let handlers = [
        h.exec.is_some(),
        h.http_get.is_some(),
        h.tcp_socket.is_some(),
        h.sleep.is_some(),
    ]
    .into_iter()
    .filter(|set| *set)
    .count();
    match handlers {
        0 => errs.push(required(path, "must specify a handler type")),
        1 => {}
        _ => errs.push(forbidden(path, "may not specify more than 1 handler type")),
    }
    if let Some(http) = &h.http_get {
        check_port_num_or_name(&format!("{path}.httpGet.port"), &http.port, errs);
    }
    if let Some(tcp) = &h.tcp_socket {
        check_port_num_or_name(&format!("{path}.tcpSocket.port"), &tcp.port, errs);
    }
}

/// A port given as a number (1-65535) or an IANA service name.
pub fn check_port_num_or_name(path: &str, port: &IntOrString, errs: &mut Vec<FieldError>) {
    match port {
        IntOrString::Int(n) => {
            for p in names::port_number_problems(i64::from(*n)) {
                errs.push(invalid(path, *n, &p));
            }
        }
        IntOrString::String(s) => {
            if s.is_empty() {
                errs.push(required(path, ""));
            }
            for p in names::port_name_problems(s) {
                errs.push(invalid(path, s.as_str(), &p));
            }
        }
    }
}

fn validate_ports(ctx: &ContainerCtx<'_>, ports: &[ContainerPort], errs: &mut Vec<FieldError>) {
    let mut names_seen = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let path = format!("{}.ports[{i}]", ctx.path);
        if let Some(name) = port.name.as_deref() {
            for p in names::port_name_problems(name) {
                errs.push(invalid(&format!("{path}.name"), name, &p));
            }
            if !names_seen.insert(name) {
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
        if let Some(ip) = port.host_ip.as_deref().filter(|ip| !ip.is_empty()) {
            for p in names::ip_problems(ip) {
                errs.push(invalid(&format!("{path}.hostIP"), ip, &p));
            }
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

fn check_key_selector(path: &str, name: &str, key: &str, errs: &mut Vec<FieldError>) {
    if name.is_empty() {
        errs.push(required(&format!("{path}.name"), ""));
    } else {
        check_dns1123_subdomain(&format!("{path}.name"), name, errs);
    }
    if key.is_empty() {
        errs.push(required(&format!("{path}.key"), ""));
    } else {
        for p in names::config_map_key_problems(key) {
            errs.push(invalid(&format!("{path}.key"), key, &p));
        }
    }
}

fn validate_env(container_path: &str, env: &[EnvVar], errs: &mut Vec<FieldError>) {
    for (i, var) in env.iter().enumerate() {
        let path = format!("{container_path}.env[{i}]");
        if var.name.is_empty() {
            errs.push(required(&format!("{path}.name"), ""));
        } else {
            for p in names::env_var_name_problems(&var.name) {
                errs.push(invalid(&format!("{path}.name"), var.name.as_str(), &p));
            }
        }
        let Some(from) = &var.value_from else {
            continue;
        };
        let from_path = format!("{path}.valueFrom");
        let count = [
            from.field_ref.is_some(),
            from.resource_field_ref.is_some(),
            from.config_map_key_ref.is_some(),
            from.secret_key_ref.is_some(),
        ]
        .into_iter()
        .filter(|set| *set)
        .count();
        if count == 0 {
            errs.push(invalid(
                &from_path,
                "",
                "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or \
                 `secretKeyRef`",
            ));
        } else if var.value.as_ref().is_some_and(|v| !v.is_empty()) {
            errs.push(invalid(
                &from_path,
                "",
                "may not be specified when `value` is not empty",
            ));
        } else if count > 1 {
            errs.push(invalid(
                &from_path,
                "",
                "may not have more than one field specified at a time",
            ));
        }
        if let Some(r) = &from.config_map_key_ref {
            check_key_selector(
                &format!("{from_path}.configMapKeyRef"),
                &r.name,
                &r.key,
                errs,
            );
        }
        if let Some(r) = &from.secret_key_ref {
            check_key_selector(&format!("{from_path}.secretKeyRef"), &r.name, &r.key, errs);
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
            let hugepages = rf.resource.starts_with("limits.hugepages-")
                || rf.resource.starts_with("requests.hugepages-");
            if !hugepages && !RESOURCE_FIELD_REFS.contains(&rf.resource.as_str()) {
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

fn validate_env_from(container_path: &str, sources: &[EnvFromSource], errs: &mut Vec<FieldError>) {
    for (i, source) in sources.iter().enumerate() {
        let path = format!("{container_path}.envFrom[{i}]");
        if let Some(prefix) = source.prefix.as_deref() {
            for p in names::env_var_name_problems(prefix) {
                errs.push(invalid(&format!("{path}.prefix"), prefix, &p));
            }
        }
        let refs = [
            (
                "configMapRef",
                source.config_map_ref.as_ref().map(|r| r.name.as_str()),
            ),
            (
                "secretRef",
                source.secret_ref.as_ref().map(|r| r.name.as_str()),
            ),
        ];
        let count = refs.iter().filter(|(_, r)| r.is_some()).count();
        match count {
            0 => errs.push(invalid(
                &path,
                "",
                "must specify one of: `configMapRef` or `secretRef`",
            )),
            1 => {}
            _ => errs.push(invalid(
                &path,
                "",
                "may not have more than one field specified at a time",
            )),
        }
        for (name, r) in refs {
            match r {
                Some("") => errs.push(required(&format!("{path}.{name}.name"), "")),
                Some(n) => check_dns1123_subdomain(&format!("{path}.{name}.name"), n, errs),
                None => {}
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
            for p in names::qualified_name_problems(key) {
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

/// A quantity string: parseable and not negative.
pub fn check_quantity(
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

/// Standard resource names (`cpu`, `memory`, `ephemeral-storage`, `hugepages-<size>`) or
/// fully qualified extended ones (`example.com/gpu`).
pub fn is_valid_resource_name(name: &str) -> bool {
    matches!(name, "cpu" | "memory" | "ephemeral-storage")
        || name
            .strip_prefix("hugepages-")
            .is_some_and(|size| quantity::parse(size).is_ok())
        || (name.contains('/') && names::qualified_name_problems(name).is_empty())
}

/// Container (or pod-level) resource requirements.
pub fn validate_resources(path: &str, res: &ResourceRequirements, errs: &mut Vec<FieldError>) {
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
        let shown = res
            .requests
            .as_ref()
            .and_then(|r| r.get(*name))
            .map_or("", |q| q.0.as_str());
        match limits.get(name) {
            Some(limit) if name.starts_with("hugepages-") && request != limit => {
                errs.push(invalid(
                    &format!("{path}.requests[{name}]"),
                    shown,
                    &format!("must be equal to {name} limit of {limit}"),
                ));
            }
            Some(limit) if request > limit => {
                errs.push(invalid(
                    &format!("{path}.requests[{name}]"),
                    shown,
                    &format!("must be less than or equal to {name} limit of {limit}"),
                ));
            }
            _ => {}
        }
    }
}

fn has_backsteps(path: &str) -> bool {
    path.split('/').any(|part| part == "..")
}

/// Upstream's `validateLocalDescendingPath`: relative, no `..` element.
pub(crate) fn check_local_descending_path(path: &str, value: &str, errs: &mut Vec<FieldError>) {
    if value.starts_with('/') {
        errs.push(invalid(path, value, "must be a relative path"));
    } else if has_backsteps(value) {
        errs.push(invalid(path, value, "must not contain '..'"));
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
            check_local_descending_path(&format!("{path}.subPath"), sub, errs);
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
