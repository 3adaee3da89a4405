//! core/v1 Services: upstream's defaults (plus the single-stack IP family fields the REST
//! layer fills), validation (ports, types, traffic policies, cluster IPs that may not change),
//! the table, the `spec.clusterIP`/`spec.type` field selectors, and pure helpers for the
//! caller's ClusterIP and NodePort allocation (`service_alloc`).

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Service, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kwk_api::field::{
    FieldError, Shown, duplicate, forbidden, invalid, not_supported, required, too_many,
};
use kwk_api::meta;
use kwk_api::names::{self, check_dns1123_label, check_dns1123_subdomain};
use kwk_api::pod::{PROTOCOLS, check_port_num_or_name};
use serde_json::{Value, json};

use super::cells::{age_column, col, format_labels, name_column, wide};
use super::util::{arr, int, s, since, typed, validate_typed, with_typed};
use super::{Column, KindStrategy, name_of};
use crate::apiserver::errors::Cause;

#[derive(Debug, Default, Clone, Copy)]
pub struct ServiceStrategy;

fn externally_accessible(spec: &ServiceSpec) -> bool {
    matches!(spec.type_.as_deref(), Some("LoadBalancer" | "NodePort"))
        || (spec.type_.as_deref() == Some("ClusterIP")
            && spec
                .external_ips
                .as_ref()
                .is_some_and(|ips| !ips.is_empty()))
}

fn is_headless(spec: &ServiceSpec) -> bool {
    spec.cluster_ip.as_deref() == Some("None")
}

fn family_of(ip: &str) -> &'static str {
    if ip.contains(':') { "IPv6" } else { "IPv4" }
}

/// Upstream's `SetDefaults_Service`, `clusterIP`/`clusterIPs` kept in step, and the IP
/// family fields of a single-stack cluster.
pub fn default_service(svc: &mut Service) {
    let spec = svc.spec.get_or_insert_with(Default::default);
    if spec
        .session_affinity
        .as_deref()
        .unwrap_or_default()
        .is_empty()
    {
        spec.session_affinity = Some("None".to_string());
    }
    match spec.session_affinity.as_deref() {
        Some("None") => spec.session_affinity_config = None,
        Some("ClientIP") => {
            let has_timeout = spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .is_some();
            if !has_timeout {
                spec.session_affinity_config = Some(
                    serde_json::from_value(json!({
                        "clientIP": {"timeoutSeconds": 10800}
                    }))
                    .unwrap_or_default(),
                );
            }
        }
        _ => {}
    }
    if spec.type_.as_deref().unwrap_or_default().is_empty() {
        spec.type_ = Some("ClusterIP".to_string());
    }
    for port in spec.ports.iter_mut().flatten() {
        if port.protocol.as_deref().unwrap_or_default().is_empty() {
            port.protocol = Some("TCP".to_string());
        }
        let unset = match &port.target_port {
            None => true,
            Some(IntOrString::Int(0)) => true,
            Some(IntOrString::String(s)) => s.is_empty(),
            Some(_) => false,
        };
        if unset {
            port.target_port = Some(IntOrString::Int(port.port));
        }
    }
    if externally_accessible(spec)
        && spec
            .external_traffic_policy
            .as_deref()
            .unwrap_or_default()
            .is_empty()
    {
        spec.external_traffic_policy = Some("Cluster".to_string());
    }
    let ty = spec.type_.clone().unwrap_or_default();
    if spec.internal_traffic_policy.is_none()
        && matches!(ty.as_str(), "ClusterIP" | "NodePort" | "LoadBalancer")
    {
        spec.internal_traffic_policy = Some("Cluster".to_string());
    }
    if ty == "LoadBalancer" {
        spec.allocate_load_balancer_node_ports.get_or_insert(true);
    }
    let first = spec
        .cluster_ips
        .as_ref()
        .and_then(|ips| ips.first())
        .cloned();
    match (spec.cluster_ip.as_deref().unwrap_or_default(), first) {
        ("", Some(ip)) => spec.cluster_ip = Some(ip),
        (ip, None) if !ip.is_empty() => spec.cluster_ips = Some(vec![ip.to_string()]),
        _ => {}
    }
    if ty == "ExternalName" {
        return;
    }
    if spec.ip_family_policy.is_none() {
        spec.ip_family_policy = Some("SingleStack".to_string());
    }
    if spec.ip_families.as_ref().is_none_or(Vec::is_empty) {
        let family = match spec.cluster_ip.as_deref() {
            Some(ip) if !ip.is_empty() && ip != "None" => family_of(ip),
            _ => "IPv4",
        };
        spec.ip_families = Some(vec![family.to_string()]);
    }
}

/// What an update may omit and keep (upstream's `patchAllocatedValues`): the allocated
/// cluster IPs, node ports (by port name) and health check node port, and the IP family
/// fields. Runs before `default`.
pub fn patch_allocated_values(new: &mut Service, old: &Service) {
    let (Some(spec), Some(old_spec)) = (new.spec.as_mut(), old.spec.as_ref()) else {
        return;
    };
    let not_external = |s: &ServiceSpec| s.type_.as_deref() != Some("ExternalName");
    if not_external(spec) && not_external(old_spec) {
        if spec.cluster_ip.as_deref().unwrap_or_default().is_empty() {
            spec.cluster_ip.clone_from(&old_spec.cluster_ip);
        }
        if spec.cluster_ips.as_ref().is_none_or(Vec::is_empty) {
            spec.cluster_ips.clone_from(&old_spec.cluster_ips);
        }
        if spec.ip_family_policy.is_none() {
            spec.ip_family_policy.clone_from(&old_spec.ip_family_policy);
        }
        if spec.ip_families.as_ref().is_none_or(Vec::is_empty) {
            spec.ip_families.clone_from(&old_spec.ip_families);
        }
    }
    if super::service_alloc::needs_node_ports(old_spec)
        && super::service_alloc::needs_node_ports(spec)
    {
        let ports_of = |s: &ServiceSpec| -> BTreeSet<i32> {
            s.ports
                .iter()
                .flatten()
                .filter_map(|p| p.node_port.filter(|n| *n != 0))
                .collect()
        };
        let used: BTreeSet<i32> = ports_of(old_spec)
            .intersection(&ports_of(spec))
            .copied()
            .collect();
        for port in spec.ports.iter_mut().flatten() {
            if port.node_port.unwrap_or(0) == 0
                && let Some(old_port) = old_spec
                    .ports
                    .iter()
                    .flatten()
                    .find(|p| p.name == port.name)
                    .and_then(|p| p.node_port)
                && !used.contains(&old_port)
            {
                port.node_port = Some(old_port);
            }
        }
    }
    let needs_hc = |s: &ServiceSpec| {
        s.type_.as_deref() == Some("LoadBalancer")
            && s.external_traffic_policy.as_deref() == Some("Local")
    };
    if needs_hc(old_spec) && needs_hc(spec) && spec.health_check_node_port.unwrap_or(0) == 0 {
        spec.health_check_node_port = old_spec.health_check_node_port;
    }
}

fn show_ips(ips: Option<&Vec<String>>) -> Shown {
    let items: Vec<String> = ips
        .into_iter()
        .flatten()
        .map(|ip| format!("{ip:?}"))
        .collect();
    Shown::Raw(format!("[]string{{{}}}", items.join(", ")))
}

fn validate_port(
    spec: &ServiceSpec,
    i: usize,
    names_seen: &mut BTreeSet<String>,
    errs: &mut Vec<FieldError>,
) {
    let ports = spec.ports.as_deref().unwrap_or_default();
    let port = &ports[i];
    let path = format!("spec.ports[{i}]");
    let name = port.name.as_deref().unwrap_or_default();
    if ports.len() > 1 && name.is_empty() {
        errs.push(required(&format!("{path}.name"), ""));
    } else if !name.is_empty() {
        check_dns1123_label(&format!("{path}.name"), name, errs);
        if !names_seen.insert(name.to_string()) {
            errs.push(duplicate(&format!("{path}.name"), name));
        }
    }
    for p in names::port_number_problems(i64::from(port.port)) {
        errs.push(invalid(&format!("{path}.port"), port.port, &p));
    }
    match port.protocol.as_deref().unwrap_or_default() {
        "" => errs.push(required(&format!("{path}.protocol"), "")),
        p if !PROTOCOLS.contains(&p) => {
            errs.push(not_supported(&format!("{path}.protocol"), p, PROTOCOLS))
        }
        _ => {}
    }
    if let Some(target) = &port.target_port {
        check_port_num_or_name(&format!("{path}.targetPort"), target, errs);
    }
    if let Some(app) = port.app_protocol.as_deref() {
        names::check_qualified_name(&format!("{path}.appProtocol"), app, errs);
    }
}

fn validate_cluster_ips(spec: &ServiceSpec, errs: &mut Vec<FieldError>) {
    let ips = spec.cluster_ips.as_deref().unwrap_or_default();
    if let (Some(ip), Some(first)) = (spec.cluster_ip.as_deref(), ips.first())
        && !ip.is_empty()
        && ip != first
    {
        errs.push(invalid(
            "spec.clusterIPs",
            show_ips(spec.cluster_ips.as_ref()),
            "first value must match `clusterIP`",
        ));
    }
    for (i, ip) in ips.iter().enumerate() {
        if ip == "None" {
            if i > 0 || ips.len() > 1 {
                errs.push(invalid(
                    &format!("spec.clusterIPs[{i}]"),
                    ip.as_str(),
                    "must not be 'None' when there is more than one value",
                ));
            }
            continue;
        }
        for p in names::ip_problems(ip) {
            errs.push(invalid(&format!("spec.clusterIPs[{i}]"), ip.as_str(), &p));
        }
    }
    if let Some(policy) = spec.ip_family_policy.as_deref() {
        const POLICIES: &[&str] = &["PreferDualStack", "RequireDualStack", "SingleStack"];
        if !POLICIES.contains(&policy) {
            errs.push(not_supported("spec.ipFamilyPolicy", policy, POLICIES));
        }
    }
    let families = spec.ip_families.as_deref().unwrap_or_default();
    let mut seen = BTreeSet::new();
    for (i, family) in families.iter().enumerate() {
        if !matches!(family.as_str(), "IPv4" | "IPv6") {
            errs.push(not_supported(
                &format!("spec.ipFamilies[{i}]"),
                family.as_str(),
                &["IPv4", "IPv6"],
            ));
        } else if !seen.insert(family.as_str()) {
            errs.push(duplicate(&format!("spec.ipFamilies[{i}]"), family.as_str()));
        }
    }
    if families.len() > 2 {
        errs.push(too_many("spec.ipFamilies", families.len(), 2));
    }
}

fn validate_service_spec(spec: &ServiceSpec, errs: &mut Vec<FieldError>) {
    let ty = spec.type_.as_deref().unwrap_or_default();
    let ports = spec.ports.as_deref().unwrap_or_default();
    if ports.is_empty() && !is_headless(spec) && ty != "ExternalName" {
        errs.push(required("spec.ports", ""));
    }
    let first_ip = spec
        .cluster_ips
        .as_ref()
        .and_then(|ips| ips.first())
        .cloned()
        .unwrap_or_default();
    match ty {
        "LoadBalancer" | "NodePort" if is_headless(spec) => errs.push(invalid(
            "spec.clusterIPs[0]",
            first_ip.as_str(),
            &format!("may not be set to 'None' for {ty} services"),
        )),
        "ExternalName" => {
            for (field, set) in [
                (
                    "clusterIPs",
                    spec.cluster_ips.as_ref().is_some_and(|v| !v.is_empty()),
                ),
                (
                    "ipFamilies",
                    spec.ip_families.as_ref().is_some_and(|v| !v.is_empty()),
                ),
                ("ipFamilyPolicy", spec.ip_family_policy.is_some()),
            ] {
                if set {
                    errs.push(forbidden(
                        &format!("spec.{field}"),
                        "may not be set for ExternalName services",
                    ));
                }
            }
            let cname = spec
                .external_name
                .as_deref()
                .unwrap_or_default()
                .trim_end_matches('.');
            if cname.is_empty() {
                errs.push(required("spec.externalName", ""));
            } else {
                check_dns1123_subdomain("spec.externalName", cname, errs);
            }
        }
        _ => {}
    }
    let mut port_names = BTreeSet::new();
    for i in 0..ports.len() {
        validate_port(spec, i, &mut port_names, errs);
    }
    if let Some(selector) = &spec.selector {
        errs.extend(meta::validate_labels(selector, "spec.selector"));
    }
    match spec.session_affinity.as_deref().unwrap_or_default() {
        "" => errs.push(required("spec.sessionAffinity", "")),
        "ClientIP" => {
            let timeout = spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds);
            match timeout {
                None => errs.push(required(
                    "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                    "",
                )),
                Some(t) if !(1..=86400).contains(&t) => errs.push(invalid(
                    "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                    t,
                    "must be greater than 0 and less than 86400",
                )),
                Some(_) => {}
            }
        }
        "None" => {
            if spec.session_affinity_config.is_some() {
                errs.push(forbidden(
                    "spec.sessionAffinityConfig",
                    "must not be set when session affinity is None",
                ));
            }
        }
        other => errs.push(not_supported(
            "spec.sessionAffinity",
            other,
            &["ClientIP", "None"],
        )),
    }
    if ty != "ExternalName" {
        validate_cluster_ips(spec, errs);
    }
    for (i, ip) in spec.external_ips.iter().flatten().enumerate() {
        for p in names::ip_problems(ip) {
            errs.push(invalid(&format!("spec.externalIPs[{i}]"), ip.as_str(), &p));
        }
    }
    const TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
    if ty.is_empty() {
        errs.push(required("spec.type", ""));
    } else if !TYPES.contains(&ty) {
        errs.push(not_supported("spec.type", ty, TYPES));
    }
    let mut node_ports = BTreeSet::new();
    let mut keys = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let protocol = port.protocol.as_deref().unwrap_or_default();
        let node_port = port.node_port.unwrap_or(0);
        if ty == "ClusterIP" && node_port != 0 {
            errs.push(forbidden(
                &format!("spec.ports[{i}].nodePort"),
                "may not be used when `type` is 'ClusterIP'",
            ));
        }
        if node_port != 0 && !node_ports.insert((protocol, node_port)) {
            errs.push(duplicate(&format!("spec.ports[{i}].nodePort"), node_port));
        }
        if !keys.insert((protocol, port.port)) {
            errs.push(duplicate(
                &format!("spec.ports[{i}]"),
                Shown::Raw(format!(
                    "core.ServicePort{{Name:\"\", Protocol:\"{protocol}\", AppProtocol:(*string)(nil), Port:{}, TargetPort:intstr.IntOrString{{Type:0, IntVal:0, StrVal:\"\"}}, NodePort:0}}",
                    port.port
                )),
            ));
        }
    }
    if !spec
        .load_balancer_source_ranges
        .as_ref()
        .is_none_or(Vec::is_empty)
    {
        if ty != "LoadBalancer" {
            errs.push(forbidden(
                "spec.LoadBalancerSourceRanges",
                "may only be used when `type` is 'LoadBalancer'",
            ));
        }
        for (i, cidr) in spec
            .load_balancer_source_ranges
            .iter()
            .flatten()
            .enumerate()
        {
            for p in names::cidr_problems(cidr.trim()) {
                errs.push(invalid(
                    &format!("spec.LoadBalancerSourceRanges[{i}]"),
                    cidr.trim(),
                    &p,
                ));
            }
        }
    }
    if spec.allocate_load_balancer_node_ports.is_some() && ty != "LoadBalancer" {
        errs.push(forbidden(
            "spec.allocateLoadBalancerNodePorts",
            "may only be used when `type` is 'LoadBalancer'",
        ));
    }
    if ty == "LoadBalancer" && spec.allocate_load_balancer_node_ports.is_none() {
        errs.push(required("allocateLoadBalancerNodePorts", ""));
    }
    let etp = spec.external_traffic_policy.as_deref().unwrap_or_default();
    if !externally_accessible(spec) {
        if !etp.is_empty() {
            errs.push(invalid(
                "spec.externalTrafficPolicy",
                etp,
                "may only be set for externally-accessible services",
            ));
        }
    } else if etp.is_empty() {
        errs.push(required("spec.externalTrafficPolicy", ""));
    } else if !matches!(etp, "Cluster" | "Local") {
        errs.push(not_supported(
            "spec.externalTrafficPolicy",
            etp,
            &["Cluster", "Local"],
        ));
    }
    let needs_hc = ty == "LoadBalancer" && etp == "Local";
    let hc = spec.health_check_node_port.unwrap_or(0);
    if !needs_hc && hc != 0 {
        errs.push(invalid(
            "spec.healthCheckNodePort",
            hc,
            "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'",
        ));
    }
    match spec.internal_traffic_policy.as_deref() {
        None if matches!(ty, "ClusterIP" | "NodePort" | "LoadBalancer") => {
            errs.push(required("spec.internalTrafficPolicy", ""))
        }
        Some(p) if !matches!(p, "Cluster" | "Local") => errs.push(not_supported(
            "spec.internalTrafficPolicy",
            p,
            &["Cluster", "Local"],
        )),
        _ => {}
    }
    if let Some(td) = spec.traffic_distribution.as_deref()
        && td != "PreferClose"
    {
        errs.push(not_supported(
            "spec.trafficDistribution",
            td,
            &["PreferClose"],
        ));
    }
}

/// Upstream's `validateUpgradeDowngradeClusterIPs`: the cluster IPs may not change, except
/// from or to ExternalName, or releasing a secondary IP.
fn validate_cluster_ip_update(spec: &ServiceSpec, old: &ServiceSpec, errs: &mut Vec<FieldError>) {
    if spec.type_.as_deref() == Some("ExternalName") || old.type_.as_deref() == Some("ExternalName")
    {
        return;
    }
    if is_headless(spec) && is_headless(old) {
        return;
    }
    let new_ips = spec.cluster_ips.as_deref().unwrap_or_default();
    let old_ips = old.cluster_ips.as_deref().unwrap_or_default();
    let shown = || show_ips(spec.cluster_ips.as_ref());
    if new_ips.len() == old_ips.len() {
        for (i, (a, b)) in old_ips.iter().zip(new_ips).enumerate() {
            if a != b {
                errs.push(invalid(
                    &format!("spec.clusterIPs[{i}]"),
                    shown(),
                    "may not change once set",
                ));
            }
        }
    } else if new_ips.len() < old_ips.len() {
        if new_ips.is_empty() {
            errs.push(invalid(
                "spec.clusterIPs[0]",
                shown(),
                "primary clusterIP can not be unset",
            ));
        } else if new_ips[0] != old_ips[0] {
            errs.push(invalid(
                "spec.clusterIPs[0]",
                shown(),
                "may not change once set",
            ));
        }
        if new_ips.len() == 1 && spec.ip_family_policy.as_deref() != Some("SingleStack") {
            errs.push(invalid(
                "spec.clusterIPs[0]",
                shown(),
                "`ipFamilyPolicy` must be set to 'SingleStack' when releasing the secondary clusterIP",
            ));
        }
    } else if !old_ips.is_empty() && new_ips[0] != old_ips[0] {
        errs.push(invalid(
            "spec.clusterIPs[0]",
            shown(),
            "may not change once set",
        ));
    }
}

fn validate_service(new: &Service, old: Option<&Service>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let empty = ServiceSpec::default();
    let spec = new.spec.as_ref().unwrap_or(&empty);
    if let Some(old_spec) = old.and_then(|o| o.spec.as_ref()) {
        validate_cluster_ip_update(spec, old_spec, &mut errs);
        let needs_hc = |s: &ServiceSpec| {
            s.type_.as_deref() == Some("LoadBalancer")
                && s.external_traffic_policy.as_deref() == Some("Local")
        };
        if needs_hc(spec)
            && needs_hc(old_spec)
            && spec.health_check_node_port != old_spec.health_check_node_port
        {
            errs.push(forbidden("spec.healthCheckNodePort", "field is immutable"));
        }
    }
    validate_service_spec(spec, &mut errs);
    errs
}

fn external_ip_cell(object: &Value) -> String {
    let external: Vec<&str> = arr(object, "/spec/externalIPs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    match s(object, "/spec/type") {
        "ClusterIP" | "NodePort" if external.is_empty() => "<none>".to_string(),
        "ClusterIP" | "NodePort" => external.join(","),
        "LoadBalancer" => {
            let lb: BTreeSet<&str> = arr(object, "/status/loadBalancer/ingress")
                .iter()
                .map(|i| match s(i, "/ip") {
                    "" => s(i, "/hostname"),
                    ip => ip,
                })
                .filter(|v| !v.is_empty())
                .collect();
            let mut all: Vec<&str> = lb.into_iter().collect();
            all.extend(external);
            if all.is_empty() {
                "<pending>".to_string()
            } else {
                all.join(",")
            }
        }
        "ExternalName" => s(object, "/spec/externalName").to_string(),
        _ => "<unknown>".to_string(),
    }
}

impl KindStrategy for ServiceStrategy {
    fn default(&self, object: &mut Value) {
        with_typed(object, default_service);
    }

    fn prepare_for_update(&self, object: &mut Value, old: &Value) {
        super::service_alloc::drop_type_dependent_fields(object, old);
        if let Some(old) = typed::<Service>(old) {
            with_typed::<Service>(object, |new| patch_allocated_values(new, &old));
        }
    }

    fn validate(&self, object: &Value, old: Option<&Value>) -> Vec<Cause> {
        validate_typed(object, old, validate_service)
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            name_column(),
            col(
                "Type",
                "string",
                "ClusterIP, NodePort, LoadBalancer or ExternalName.",
            ),
            col("Cluster-IP", "string", "The service's virtual IP."),
            col(
                "External-IP",
                "string",
                "Addresses reachable from outside the cluster.",
            ),
            col(
                "Port(s)",
                "string",
                "Service ports, with node ports, and protocols.",
            ),
            age_column(),
            wide(
                "Selector",
                "string",
                "Labels of the pods behind the service.",
            ),
        ]
    }

    fn row(&self, object: &Value, now: i64) -> Vec<Value> {
        let cluster_ip = arr(object, "/spec/clusterIPs")
            .first()
            .and_then(Value::as_str)
            .unwrap_or("<none>");
        let ports: Vec<String> = arr(object, "/spec/ports")
            .iter()
            .map(|p| {
                let node_port = int(p, "/nodePort");
                if node_port > 0 {
                    format!("{}:{node_port}/{}", int(p, "/port"), s(p, "/protocol"))
                } else {
                    format!("{}/{}", int(p, "/port"), s(p, "/protocol"))
                }
            })
            .collect();
        let ports = if ports.is_empty() {
            "<none>".to_string()
        } else {
            ports.join(",")
        };
        vec![
            json!(name_of(object)),
            json!(s(object, "/spec/type")),
            json!(cluster_ip),
            json!(external_ip_cell(object)),
            json!(ports),
            json!(since(s(object, "/metadata/creationTimestamp"), now)),
            json!(format_labels(object.pointer("/spec/selector"))),
        ]
    }

    fn field(&self, object: &Value, label: &str) -> Option<String> {
        match label {
            "spec.clusterIP" => Some(s(object, "/spec/clusterIP").to_string()),
            "spec.type" => Some(s(object, "/spec/type").to_string()),
            _ => None,
        }
    }
}
