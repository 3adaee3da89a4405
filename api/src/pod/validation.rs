//! Validation of a (defaulted) pod spec, a pod template and a pod on create: upstream's
//! `ValidatePodSpec`, `ValidatePodTemplateSpec` and `ValidatePodCreate`, minus what needs
//! other objects (admission) and features kwk does not serve.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Pod, PodSpec, PodTemplateSpec, Toleration};

use super::container::{ContainerCtx, check_image, check_policies, validate_container};
use super::volumes::validate_volumes;
use crate::field::{FieldError, duplicate, forbidden, invalid, not_supported, required};
use crate::meta;
use crate::names::{self, check_dns1123_label, check_dns1123_subdomain};

/// Pod restart policies, in upstream's order.
pub const RESTART_POLICIES: &[&str] = &["Always", "OnFailure", "Never"];
/// DNS policies, sorted as upstream lists them.
pub const DNS_POLICIES: &[&str] = &["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"];
const TAINT_EFFECTS: &[&str] = &["NoSchedule", "PreferNoSchedule", "NoExecute"];
const PREEMPTION_POLICIES: &[&str] = &["Never", "PreemptLowerPriority"];

/// Checks a defaulted pod spec at `path` (`spec`, or `spec.template.spec` in templates).
pub fn validate_pod_spec(spec: &PodSpec, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let volumes = validate_volumes(
        spec.volumes.as_deref().unwrap_or_default(),
        &format!("{path}.volumes"),
        &mut errs,
    );

    if spec.containers.is_empty() {
        errs.push(required(&format!("{path}.containers"), ""));
    }
    let mut container_names = BTreeSet::new();
    let host_network = spec.host_network.unwrap_or(false);
    let mut host_ports = BTreeSet::new();
    let init_path = format!("{path}.initContainers");
    let app_path = format!("{path}.containers");
    let lists = [
        (
            init_path.as_str(),
            spec.init_containers.as_deref().unwrap_or_default(),
            true,
        ),
        (app_path.as_str(), spec.containers.as_slice(), false),
    ];
    for (list_path, containers, init) in lists {
        for (i, c) in containers.iter().enumerate() {
            let c_path = format!("{list_path}[{i}]");
            if !c.name.is_empty() && !container_names.insert(c.name.as_str()) {
                errs.push(duplicate(&format!("{c_path}.name"), c.name.as_str()));
            }
            let ctx = ContainerCtx {
                path: &c_path,
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
                            &format!("{c_path}.ports[{j}].hostPort"),
                            key.as_str(),
                        ));
                    }
                }
            }
        }
    }
    for (i, c) in spec.ephemeral_containers.iter().flatten().enumerate() {
        let c_path = format!("{path}.ephemeralContainers[{i}]");
        if c.name.is_empty() {
            errs.push(required(&format!("{c_path}.name"), ""));
        } else {
            check_dns1123_label(&format!("{c_path}.name"), &c.name, &mut errs);
            if !container_names.insert(c.name.as_str()) {
                errs.push(duplicate(&format!("{c_path}.name"), c.name.as_str()));
            }
        }
        check_image(&c_path, c.image.as_deref(), &mut errs);
        check_policies(
            &c_path,
            c.image_pull_policy.as_deref(),
            c.termination_message_policy.as_deref(),
            &mut errs,
        );
        for (field, set) in [
            ("ports", c.ports.as_ref().is_some_and(|p| !p.is_empty())),
            ("livenessProbe", c.liveness_probe.is_some()),
            ("readinessProbe", c.readiness_probe.is_some()),
            ("startupProbe", c.startup_probe.is_some()),
            ("lifecycle", c.lifecycle.is_some()),
        ] {
            if set {
                errs.push(forbidden(
                    &format!("{c_path}.{field}"),
                    "cannot be set for an Ephemeral Container",
                ));
            }
        }
    }

    let restart = spec.restart_policy.as_deref().unwrap_or_default();
    if restart.is_empty() {
        errs.push(required(&format!("{path}.restartPolicy"), ""));
    } else if !RESTART_POLICIES.contains(&restart) {
        errs.push(not_supported(
            &format!("{path}.restartPolicy"),
            restart,
            RESTART_POLICIES,
        ));
    }
    validate_dns(spec, path, &mut errs);
    if let Some(grace) = spec.termination_grace_period_seconds.filter(|g| *g < 0) {
        errs.push(invalid(
            &format!("{path}.terminationGracePeriodSeconds"),
            grace,
            "must be greater than or equal to 0",
        ));
    }
    if let Some(deadline) = spec
        .active_deadline_seconds
        .filter(|d| *d < 1 || *d > i64::from(i32::MAX))
    {
        errs.push(invalid(
            &format!("{path}.activeDeadlineSeconds"),
            deadline,
            "must be between 1 and 2147483647, inclusive",
        ));
    }
    let subdomain_fields = [
        ("nodeName", spec.node_name.as_deref()),
        ("serviceAccountName", spec.service_account_name.as_deref()),
        ("priorityClassName", spec.priority_class_name.as_deref()),
        ("runtimeClassName", spec.runtime_class_name.as_deref()),
    ];
    for (name, value) in subdomain_fields {
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            check_dns1123_subdomain(&format!("{path}.{name}"), value, &mut errs);
        }
    }
    for (name, value) in [
        ("hostname", spec.hostname.as_deref()),
        ("subdomain", spec.subdomain.as_deref()),
    ] {
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            check_dns1123_label(&format!("{path}.{name}"), value, &mut errs);
        }
    }
    if let Some(policy) = spec.preemption_policy.as_deref()
        && !PREEMPTION_POLICIES.contains(&policy)
    {
        errs.push(not_supported(
            &format!("{path}.preemptionPolicy"),
            policy,
            PREEMPTION_POLICIES,
        ));
    }
    if let Some(selector) = &spec.node_selector {
        errs.extend(meta::validate_labels(
            selector,
            &format!("{path}.nodeSelector"),
        ));
    }
    errs.extend(validate_tolerations(
        spec.tolerations.as_deref().unwrap_or_default(),
        &format!("{path}.tolerations"),
    ));
    for (i, gate) in spec.readiness_gates.iter().flatten().enumerate() {
        names::check_qualified_name(
            &format!("{path}.readinessGates[{i}].conditionType"),
            &gate.condition_type,
            &mut errs,
        );
    }
    let mut gates = BTreeSet::new();
    for (i, gate) in spec.scheduling_gates.iter().flatten().enumerate() {
        let g_path = format!("{path}.schedulingGates[{i}].name");
        names::check_qualified_name(&g_path, &gate.name, &mut errs);
        if !gates.insert(gate.name.as_str()) {
            errs.push(duplicate(&g_path, gate.name.as_str()));
        }
    }
    for (i, alias) in spec.host_aliases.iter().flatten().enumerate() {
        let a_path = format!("{path}.hostAliases[{i}]");
        for p in names::ip_problems(&alias.ip) {
            errs.push(invalid(&format!("{a_path}.ip"), alias.ip.as_str(), &p));
        }
        for (j, host) in alias.hostnames.iter().flatten().enumerate() {
            check_dns1123_subdomain(&format!("{a_path}.hostnames[{j}]"), host, &mut errs);
        }
    }
    if let Some(os) = &spec.os
        && !matches!(os.name.as_str(), "linux" | "windows")
    {
        errs.push(not_supported(
            &format!("{path}.os.name"),
            os.name.as_str(),
            &["linux", "windows"],
        ));
    }
    errs
}

fn validate_dns(spec: &PodSpec, path: &str, errs: &mut Vec<FieldError>) {
    let dns = spec.dns_policy.as_deref().unwrap_or_default();
    if dns.is_empty() {
        errs.push(required(&format!("{path}.dnsPolicy"), ""));
    } else if !DNS_POLICIES.contains(&dns) {
        errs.push(not_supported(
            &format!("{path}.dnsPolicy"),
            dns,
            DNS_POLICIES,
        ));
    }
    let nameservers = spec
        .dns_config
        .as_ref()
        .and_then(|c| c.nameservers.as_deref())
        .unwrap_or_default();
    if dns == "None" && nameservers.is_empty() {
        errs.push(required(
            &format!("{path}.dnsConfig.nameservers"),
            "must provide at least one DNS nameserver when `dnsPolicy` is None",
        ));
    }
    if nameservers.len() > 3 {
        errs.push(invalid(
            &format!("{path}.dnsConfig.nameservers"),
            crate::field::Shown::Raw(format!("{nameservers:?}")),
            "must not have more than 3 nameservers",
        ));
    }
    for (i, ns) in nameservers.iter().enumerate() {
        for p in names::ip_problems(ns) {
            errs.push(invalid(
                &format!("{path}.dnsConfig.nameservers[{i}]"),
                ns.as_str(),
                &p,
            ));
        }
    }
    let searches = spec
        .dns_config
        .as_ref()
        .and_then(|c| c.searches.as_deref())
        .unwrap_or_default();
    if searches.len() > 32 {
        errs.push(invalid(
            &format!("{path}.dnsConfig.searches"),
            crate::field::Shown::Raw(format!("{searches:?}")),
            "must not have more than 32 search paths",
        ));
    }
}

/// Upstream's `ValidateTolerations`.
pub fn validate_tolerations(tolerations: &[Toleration], path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, t) in tolerations.iter().enumerate() {
        let t_path = format!("{path}[{i}]");
        let key = t.key.as_deref().unwrap_or_default();
        let operator = t.operator.as_deref().unwrap_or_default();
        let value = t.value.as_deref().unwrap_or_default();
        let effect = t.effect.as_deref().unwrap_or_default();
        if !key.is_empty() {
            for p in names::qualified_name_problems(key) {
                errs.push(invalid(&format!("{t_path}.key"), key, &p));
            }
        }
        if key.is_empty() && operator != "Exists" {
            errs.push(invalid(
                &format!("{t_path}.operator"),
                operator,
                "operator must be Exists when `key` is empty, which means \"match all values and \
                 all keys\"",
            ));
        }
        if t.toleration_seconds.is_some() && effect != "NoExecute" {
            errs.push(invalid(
                &format!("{t_path}.effect"),
                effect,
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            ));
        }
        match operator {
            "Equal" | "" => {
                let problems = names::label_value_problems(value);
                if !problems.is_empty() {
                    errs.push(invalid(
                        &format!("{t_path}.operator"),
                        value,
                        &problems.join(";"),
                    ));
                }
            }
            "Exists" => {
                if !value.is_empty() {
                    errs.push(invalid(
                        &format!("{t_path}.operator"),
                        value,
                        "value must be empty when `operator` is 'Exists'",
                    ));
                }
            }
            other => errs.push(not_supported(
                &format!("{t_path}.operator"),
                other,
                &["Equal", "Exists"],
            )),
        }
        if !effect.is_empty() && !TAINT_EFFECTS.contains(&effect) {
            errs.push(not_supported(
                &format!("{t_path}.effect"),
                effect,
                TAINT_EFFECTS,
            ));
        }
    }
    errs
}

/// A pod template (labels, annotations, spec; no ephemeral containers) at `path`
/// (`spec.template`).
pub fn validate_pod_template(template: &PodTemplateSpec, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(meta) = &template.metadata {
        if let Some(labels) = &meta.labels {
            errs.extend(meta::validate_labels(labels, &format!("{path}.labels")));
        }
        if let Some(annotations) = &meta.annotations {
            errs.extend(meta::validate_annotations(
                annotations,
                &format!("{path}.annotations"),
            ));
        }
    }
    let spec_path = format!("{path}.spec");
    match &template.spec {
        Some(spec) => {
            errs.extend(validate_pod_spec(spec, &spec_path));
            if spec
                .ephemeral_containers
                .as_ref()
                .is_some_and(|e| !e.is_empty())
            {
                errs.push(forbidden(
                    &format!("{spec_path}.ephemeralContainers"),
                    "ephemeral containers not allowed in pod template",
                ));
            }
        }
        None => errs.push(required(&format!("{spec_path}.containers"), "")),
    }
    errs
}

/// A pod on create (metadata is checked generically): its spec, no ephemeral containers, no
/// node while scheduling gates remain, the mirror pod annotation only with a node.
pub fn validate_pod(pod: &Pod) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let default_spec = PodSpec::default();
    let spec = pod.spec.as_ref().unwrap_or(&default_spec);
    errs.extend(validate_pod_spec(spec, "spec"));
    if spec
        .ephemeral_containers
        .as_ref()
        .is_some_and(|e| !e.is_empty())
    {
        errs.push(forbidden(
            "spec.ephemeralContainers",
            "cannot be set on create",
        ));
    }
    let node = spec.node_name.as_deref().unwrap_or_default();
    if !node.is_empty()
        && spec
            .scheduling_gates
            .as_ref()
            .is_some_and(|g| !g.is_empty())
    {
        errs.push(forbidden(
            "spec.nodeName",
            "cannot be set until all schedulingGates have been cleared",
        ));
    }
    errs.extend(validate_pod_annotations(pod));
    errs
}

/// The mirror pod annotation needs a node name.
fn validate_pod_annotations(pod: &Pod) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mirror = "kubernetes.io/config.mirror";
    if let Some(value) = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(mirror))
        && pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .unwrap_or_default()
            .is_empty()
    {
        errs.push(invalid(
            &format!("metadata.annotations[{mirror}]"),
            value.as_str(),
            "must set spec.nodeName if mirror pod annotation is set",
        ));
    }
    errs
}
