//! Network kinds: Endpoints (core/v1), EndpointSlices (discovery.k8s.io/v1), Ingresses,
//! IngressClasses and NetworkPolicies (networking.k8s.io/v1): their defaults (port
//! protocols, path types, policy types), the main validation rules and the tables.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Endpoints;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend, NetworkPolicy};
use kwk_api::field::{
    FIELD_IMMUTABLE, FieldError, forbidden, invalid, not_supported, required, too_many,
};
use kwk_api::meta;
use kwk_api::names::{self, check_dns1123_label, check_dns1123_subdomain};
use kwk_api::pod::{PROTOCOLS, check_port_num_or_name};
use serde_json::{Value, json};

use super::cells::{age_column, col, format_selector, list_with_more, name_column};
use super::util::{arr, int, s, since, validate_typed, with_typed};
use super::{Column, KindStrategy, name_of};
use crate::apiserver::errors::Cause;

fn check_protocol(path: &str, protocol: Option<&str>, errs: &mut Vec<FieldError>) {
    match protocol.unwrap_or_default() {
        "" => errs.push(required(path, "")),
        p if !PROTOCOLS.contains(&p) => errs.push(not_supported(path, p, PROTOCOLS)),
        _ => {}
    }
}

fn check_port(path: &str, port: i32, errs: &mut Vec<FieldError>) {
    for p in names::port_number_problems(i64::from(port)) {
        errs.push(invalid(path, port, &p));
    }
}

fn host_port(ip: &str, port: i64) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

// ---- Endpoints ----

#[derive(Debug, Default, Clone, Copy)]
pub struct EndpointsStrategy;

fn default_endpoints(ep: &mut Endpoints) {
    for subset in ep.subsets.iter_mut().flatten() {
        for port in subset.ports.iter_mut().flatten() {
            if port.protocol.as_deref().unwrap_or_default().is_empty() {
                port.protocol = Some("TCP".to_string());
            }
        }
    }
}

fn validate_endpoints(new: &Endpoints, _old: Option<&Endpoints>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, subset) in new.subsets.iter().flatten().enumerate() {
        let path = format!("subsets[{i}]");
        for (field, list) in [
            ("addresses", &subset.addresses),
            ("notReadyAddresses", &subset.not_ready_addresses),
        ] {
            for (j, address) in list.iter().flatten().enumerate() {
                for p in names::ip_problems(&address.ip) {
                    errs.push(invalid(
                        &format!("{path}.{field}[{j}].ip"),
                        address.ip.as_str(),
                        &p,
                    ));
                }
            }
        }
        let ports = subset.ports.as_deref().unwrap_or_default();
        for (j, port) in ports.iter().enumerate() {
            let p_path = format!("{path}.ports[{j}]");
            match port.name.as_deref().unwrap_or_default() {
                "" if ports.len() > 1 => errs.push(required(&format!("{p_path}.name"), "")),
                "" => {}
                name => check_dns1123_label(&format!("{p_path}.name"), name, &mut errs),
            }
            check_port(&format!("{p_path}.port"), port.port, &mut errs);
            check_protocol(
                &format!("{p_path}.protocol"),
                port.protocol.as_deref(),
                &mut errs,
            );
        }
    }
    errs
}

fn endpoints_cell(object: &Value) -> String {
    let subsets = arr(object, "/subsets");
    if subsets.is_empty() {
        return "<none>".to_string();
    }
    const MAX: usize = 3;
    let mut list = Vec::new();
    let mut count = 0usize;
    for subset in subsets {
        let addresses = arr(subset, "/addresses");
        let ports = arr(subset, "/ports");
        if ports.is_empty() {
            count += addresses.len();
            list.extend(addresses.iter().map(|a| s(a, "/ip").to_string()));
            continue;
        }
        for port in ports {
            count += addresses.len();
            list.extend(
                addresses
                    .iter()
                    .map(|a| host_port(s(a, "/ip"), int(port, "/port"))),
            );
        }
    }
    let shown: Vec<String> = list.into_iter().take(MAX).collect();
    if count > MAX {
        format!("{} + {} more...", shown.join(","), count - MAX)
    } else {
        shown.join(",")
    }
}

impl KindStrategy for EndpointsStrategy {
    fn default(&self, object: &mut Value) {
        with_typed(object, default_endpoints);
    }

    fn validate(&self, object: &Value, old: Option<&Value>) -> Vec<Cause> {
        validate_typed(object, old, validate_endpoints)
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            name_column(),
            col(
                "Endpoints",
                "string",
                "Addresses and ports behind the service.",
            ),
            age_column(),
        ]
    }

    fn row(&self, object: &Value, now: i64) -> Vec<Value> {
        vec![
            json!(name_of(object)),
            json!(endpoints_cell(object)),
            json!(since(s(object, "/metadata/creationTimestamp"), now)),
        ]
    }
}

// ---- EndpointSlice ----

#[derive(Debug, Default, Clone, Copy)]
pub struct EndpointSliceStrategy;

fn default_endpoint_slice(slice: &mut EndpointSlice) {
    for port in slice.ports.iter_mut().flatten() {
        port.name.get_or_insert_with(String::new);
        port.protocol.get_or_insert_with(|| "TCP".to_string());
    }
}

fn validate_endpoint_slice(new: &EndpointSlice, old: Option<&EndpointSlice>) -> Vec<FieldError> {
    const TYPES: &[&str] = &["FQDN", "IPv4", "IPv6"];
    let mut errs = Vec::new();
    if !TYPES.contains(&new.address_type.as_str()) {
        errs.push(not_supported(
            "addressType",
            new.address_type.as_str(),
            TYPES,
        ));
    }
    for (i, endpoint) in new.endpoints.iter().enumerate() {
        let path = format!("endpoints[{i}].addresses");
        match endpoint.addresses.len() {
            0 => errs.push(required(&path, "must contain at least 1 address")),
            n if n > 100 => errs.push(too_many(&path, n, 100)),
            _ => {}
        }
        for (j, address) in endpoint.addresses.iter().enumerate() {
            let problems = match new.address_type.as_str() {
                "IPv4" | "IPv6" => names::ip_problems(address),
                _ => names::dns1123_subdomain_problems(address),
            };
            for p in problems {
                errs.push(invalid(&format!("{path}[{j}]"), address.as_str(), &p));
            }
        }
    }
    let mut seen = BTreeSet::new();
    for (i, port) in new.ports.iter().flatten().enumerate() {
        let path = format!("ports[{i}]");
        let name = port.name.as_deref().unwrap_or_default();
        if !name.is_empty() {
            check_dns1123_label(&format!("{path}.name"), name, &mut errs);
        }
        if !seen.insert(name) {
            errs.push(kwk_api::field::duplicate(&format!("{path}.name"), name));
        }
        if let Some(p) = port.port {
            check_port(&format!("{path}.port"), p, &mut errs);
        }
        check_protocol(
            &format!("{path}.protocol"),
            port.protocol.as_deref(),
            &mut errs,
        );
    }
    if let Some(old) = old
        && old.address_type != new.address_type
    {
        errs.push(invalid(
            "addressType",
            new.address_type.as_str(),
            FIELD_IMMUTABLE,
        ));
    }
    errs
}

impl KindStrategy for EndpointSliceStrategy {
    fn default(&self, object: &mut Value) {
        with_typed(object, default_endpoint_slice);
    }

    fn validate(&self, object: &Value, old: Option<&Value>) -> Vec<Cause> {
        validate_typed(object, old, validate_endpoint_slice)
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            name_column(),
            col("AddressType", "string", "IPv4, IPv6 or FQDN."),
            col("Ports", "string", "Port numbers (or names) of the slice."),
            col("Endpoints", "string", "Addresses in the slice."),
            age_column(),
        ]
    }

    fn row(&self, object: &Value, now: i64) -> Vec<Value> {
        let ports: Vec<String> = arr(object, "/ports")
            .iter()
            .map(|p| match p.get("port").and_then(Value::as_i64) {
                Some(n) => n.to_string(),
                None => match p.get("name").and_then(Value::as_str) {
                    Some(name) => name.to_string(),
                    None => "*".to_string(),
                },
            })
            .collect();
        let addresses: Vec<String> = arr(object, "/endpoints")
            .iter()
            .flat_map(|e| arr(e, "/addresses").iter())
            .filter_map(Value::as_str)
            .map(String::from)
            .collect();
        vec![
            json!(name_of(object)),
            json!(s(object, "/addressType")),
            json!(list_with_more(&ports, ports.len(), 3)),
            json!(list_with_more(&addresses, addresses.len(), 3)),
            json!(since(s(object, "/metadata/creationTimestamp"), now)),
        ]
    }
}

// ---- Ingress ----

#[derive(Debug, Default, Clone, Copy)]
pub struct IngressStrategy;

fn default_ingress(ing: &mut Ingress) {
    for rule in ing
        .spec
        .iter_mut()
        .flat_map(|s| s.rules.iter_mut().flatten())
    {
        for path in rule.http.iter_mut().flat_map(|h| h.paths.iter_mut()) {
            if path.path_type.is_empty() {
                path.path_type = "ImplementationSpecific".to_string();
            }
        }
    }
}

fn validate_backend(backend: &IngressBackend, path: &str, errs: &mut Vec<FieldError>) {
    match (&backend.service, &backend.resource) {
        (Some(_), Some(_)) => errs.push(invalid(
            path,
            "",
            "cannot set both resource and service backends",
        )),
        (None, None) => errs.push(required(
            path,
            "one of `service` or `resource` must be specified",
        )),
        (Some(service), None) => {
            for p in names::dns1035_label_problems(&service.name) {
                errs.push(invalid(
                    &format!("{path}.service.name"),
                    service.name.as_str(),
                    &p,
                ));
            }
            match &service.port {
                None => errs.push(required(&format!("{path}.service.port"), "")),
                Some(port) => match (&port.name, port.number) {
                    (Some(_), Some(_)) => errs.push(invalid(
                        &format!("{path}.service.port"),
                        "",
                        "cannot set both port name & port number",
                    )),
                    (Some(name), None) => {
                        for p in names::port_name_problems(name) {
                            errs.push(invalid(
                                &format!("{path}.service.port.name"),
                                name.as_str(),
                                &p,
                            ));
                        }
                    }
                    (None, Some(n)) => check_port(&format!("{path}.service.port.number"), n, errs),
                    (None, None) => errs.push(invalid(
                        &format!("{path}.service.port"),
                        "",
                        "port name or number is required",
                    )),
                },
            }
        }
        (None, Some(_)) => {}
    }
}

fn validate_ingress(new: &Ingress, _old: Option<&Ingress>) -> Vec<FieldError> {
    const PATH_TYPES: &[&str] = &["Exact", "ImplementationSpecific", "Prefix"];
    let mut errs = Vec::new();
    let Some(spec) = &new.spec else {
        errs.push(invalid(
            "spec",
            "",
            "either `defaultBackend` or `rules` must be specified",
        ));
        return errs;
    };
    let rules = spec.rules.as_deref().unwrap_or_default();
    if rules.is_empty() && spec.default_backend.is_none() {
        errs.push(invalid(
            "spec",
            "",
            "either `defaultBackend` or `rules` must be specified",
        ));
    }
    if let Some(backend) = &spec.default_backend {
        validate_backend(backend, "spec.defaultBackend", &mut errs);
    }
    for (i, rule) in rules.iter().enumerate() {
        let r_path = format!("spec.rules[{i}]");
        if let Some(host) = rule.host.as_deref().filter(|h| !h.is_empty()) {
            let checked = host.strip_prefix("*.").unwrap_or(host);
            check_dns1123_subdomain(&format!("{r_path}.host"), checked, &mut errs);
        }
        for (j, path) in rule.http.iter().flat_map(|h| h.paths.iter()).enumerate() {
            let p_path = format!("{r_path}.http.paths[{j}]");
            if !PATH_TYPES.contains(&path.path_type.as_str()) {
                errs.push(not_supported(
                    &format!("{p_path}.pathType"),
                    path.path_type.as_str(),
                    PATH_TYPES,
                ));
            }
            let value = path.path.as_deref().unwrap_or_default();
            if path.path_type != "ImplementationSpecific" && !value.starts_with('/') {
                errs.push(invalid(
                    &format!("{p_path}.path"),
                    value,
                    "must be an absolute path",
                ));
            }
            validate_backend(&path.backend, &format!("{p_path}.backend"), &mut errs);
        }
    }
    if let Some(class) = spec.ingress_class_name.as_deref() {
        check_dns1123_subdomain("spec.ingressClassName", class, &mut errs);
    }
    errs
}

fn hosts_cell(object: &Value) -> String {
    const MAX: usize = 3;
    let rules = arr(object, "/spec/rules");
    let mut list = Vec::new();
    let mut more = false;
    for rule in rules {
        if list.len() == MAX {
            more = true;
        }
        let host = s(rule, "/host");
        if !more && !host.is_empty() {
            list.push(host);
        }
    }
    if list.is_empty() {
        "*".to_string()
    } else if more {
        format!("{} + {} more...", list.join(","), rules.len() - MAX)
    } else {
        list.join(",")
    }
}

/// Load balancer addresses (IPs, else hostnames), sorted and de-duplicated.
pub fn lb_addresses(ingress: &[Value]) -> String {
    let set: BTreeSet<&str> = ingress
        .iter()
        .map(|i| match s(i, "/ip") {
            "" => s(i, "/hostname"),
            ip => ip,
        })
        .filter(|v| !v.is_empty())
        .collect();
    set.into_iter().collect::<Vec<_>>().join(",")
}

impl KindStrategy for IngressStrategy {
    fn default(&self, object: &mut Value) {
        with_typed(object, default_ingress);
    }

    fn validate(&self, object: &Value, old: Option<&Value>) -> Vec<Cause> {
        validate_typed(object, old, validate_ingress)
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            name_column(),
            col("Class", "string", "The IngressClass in charge."),
            col("Hosts", "string", "Hosts the rules match."),
            col("Address", "string", "Where the ingress is reachable."),
            col("Ports", "string", "Ports served (443 with TLS)."),
            age_column(),
        ]
    }

    fn row(&self, object: &Value, now: i64) -> Vec<Value> {
        let class = object
            .pointer("/spec/ingressClassName")
            .and_then(Value::as_str)
            .unwrap_or("<none>");
        let ports = if arr(object, "/spec/tls").is_empty() {
            "80"
        } else {
            "80, 443"
        };
        vec![
            json!(name_of(object)),
            json!(class),
            json!(hosts_cell(object)),
            json!(lb_addresses(arr(object, "/status/loadBalancer/ingress"))),
            json!(ports),
            json!(since(s(object, "/metadata/creationTimestamp"), now)),
        ]
    }
}

// ---- IngressClass ----

#[derive(Debug, Default, Clone, Copy)]
pub struct IngressClassStrategy;

impl KindStrategy for IngressClassStrategy {
    fn validate(&self, object: &Value, _old: Option<&Value>) -> Vec<Cause> {
        let mut errs = Vec::new();
        let controller = s(object, "/spec/controller");
        if controller.is_empty() {
            errs.push(required("spec.controller", ""));
        } else if controller.len() > 250 {
            errs.push(kwk_api::field::too_long("spec.controller", 250));
        }
        super::util::causes(errs)
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            name_column(),
            col(
                "Controller",
                "string",
                "The controller that implements the class.",
            ),
            col(
                "Parameters",
                "string",
                "The object with the class's parameters.",
            ),
            age_column(),
        ]
    }

    fn row(&self, object: &Value, now: i64) -> Vec<Value> {
        let parameters = match object.pointer("/spec/parameters") {
            None => "<none>".to_string(),
            Some(p) => {
                let mut kind = s(p, "/kind").to_string();
                if let Some(group) = p.get("apiGroup").and_then(Value::as_str) {
                    kind = format!("{kind}.{group}");
                }
                format!("{kind}/{}", s(p, "/name"))
            }
        };
        vec![
            json!(name_of(object)),
            json!(s(object, "/spec/controller")),
            json!(parameters),
            json!(since(s(object, "/metadata/creationTimestamp"), now)),
        ]
    }
}

// ---- NetworkPolicy ----

#[derive(Debug, Default, Clone, Copy)]
pub struct NetworkPolicyStrategy;

fn default_network_policy(np: &mut NetworkPolicy) {
    let Some(spec) = np.spec.as_mut() else {
        return;
    };
    let ports = spec
        .ingress
        .iter_mut()
        .flatten()
        .flat_map(|r| r.ports.iter_mut().flatten())
        .chain(
            spec.egress
                .iter_mut()
                .flatten()
                .flat_map(|r| r.ports.iter_mut().flatten()),
        );
    for port in ports {
        port.protocol.get_or_insert_with(|| "TCP".to_string());
    }
    if spec.policy_types.as_ref().is_none_or(Vec::is_empty) {
        let mut types = vec!["Ingress".to_string()];
        if spec.egress.as_ref().is_some_and(|e| !e.is_empty()) {
            types.push("Egress".to_string());
        }
        spec.policy_types = Some(types);
    }
}

fn validate_network_policy(new: &NetworkPolicy, _old: Option<&NetworkPolicy>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let Some(spec) = &new.spec else {
        return errs;
    };
    if let Some(selector) = &spec.pod_selector {
        errs.extend(meta::validate_label_selector(selector, "spec.podSelector"));
    }
    let rules = [
        (
            "ingress",
            spec.ingress
                .as_deref()
                .unwrap_or_default()
                .iter()
                .map(|r| (r.ports.as_deref(), r.from.as_deref()))
                .collect::<Vec<_>>(),
        ),
        (
            "egress",
            spec.egress
                .as_deref()
                .unwrap_or_default()
                .iter()
                .map(|r| (r.ports.as_deref(), r.to.as_deref()))
                .collect::<Vec<_>>(),
        ),
    ];
    for (direction, list) in rules {
        for (i, (ports, peers)) in list.into_iter().enumerate() {
            let r_path = format!("spec.{direction}[{i}]");
            for (j, port) in ports.into_iter().flatten().enumerate() {
                let p_path = format!("{r_path}.ports[{j}]");
                check_protocol(
                    &format!("{p_path}.protocol"),
                    port.protocol.as_deref(),
                    &mut errs,
                );
                if let Some(p) = &port.port {
                    check_port_num_or_name(&format!("{p_path}.port"), p, &mut errs);
                }
            }
            let peer_field = if direction == "ingress" { "from" } else { "to" };
            for (j, peer) in peers.into_iter().flatten().enumerate() {
                let p_path = format!("{r_path}.{peer_field}[{j}]");
                if let Some(block) = &peer.ip_block {
                    for p in names::cidr_problems(&block.cidr) {
                        errs.push(invalid(
                            &format!("{p_path}.ipBlock.cidr"),
                            block.cidr.as_str(),
                            &p,
                        ));
                    }
                    if peer.pod_selector.is_some() || peer.namespace_selector.is_some() {
                        errs.push(forbidden(&p_path, "may not specify more than 1 peer type"));
                    }
                }
            }
        }
    }
    for (i, t) in spec.policy_types.iter().flatten().enumerate() {
        if !matches!(t.as_str(), "Ingress" | "Egress") {
            errs.push(not_supported(
                &format!("spec.policyTypes[{i}]"),
                t.as_str(),
                &["Ingress", "Egress"],
            ));
        }
    }
    errs
}

impl KindStrategy for NetworkPolicyStrategy {
    fn default(&self, object: &mut Value) {
        with_typed(object, default_network_policy);
    }

    fn validate(&self, object: &Value, old: Option<&Value>) -> Vec<Cause> {
        validate_typed(object, old, validate_network_policy)
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            name_column(),
            col("Pod-Selector", "string", "The pods the policy applies to."),
            age_column(),
        ]
    }

    fn row(&self, object: &Value, now: i64) -> Vec<Value> {
        vec![
            json!(name_of(object)),
            json!(format_selector(object.pointer("/spec/podSelector"))),
            json!(since(s(object, "/metadata/creationTimestamp"), now)),
        ]
    }
}
