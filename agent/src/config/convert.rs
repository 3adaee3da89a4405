//! Turning a (merged or single-file) configuration document into a [`KubeletConfig`]: each
//! honoured field is read with upstream's defaulting and checked, and a bad value becomes a
//! [`FieldIssue`] naming the field path and the reason. Pure: no I/O.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Map, Number, Value};

use crate::config::duration::parse_go_duration;
use crate::config::error::{FieldError, FieldIssue};
use crate::config::eviction_fields::{eviction_grace_periods, eviction_thresholds};
use crate::config::image_gc;
use crate::config::{
    AuthorizationMode, CgroupDriver, KubeletAuthentication, KubeletAuthorization, KubeletConfig,
    NodeAllocatableEnforcement, NodeTaint, ReservedResource, RuntimeEndpoint, TaintEffect,
};
use crate::quantity::{self, Quantity};

/// The top-level fields [`convert`] reads; every other upstream field is ignored.
pub(crate) const HONOURED_FIELDS: &[&str] = &[
    "staticPodPath",
    "fileCheckFrequency",
    "syncFrequency",
    "containerRuntimeEndpoint",
    "cgroupDriver",
    "cgroupRoot",
    "cgroupsPerQOS",
    "podPidsLimit",
    "maxPods",
    "runtimeRequestTimeout",
    "containerLogMaxSize",
    "containerLogMaxFiles",
    "clusterDNS",
    "clusterDomain",
    "resolvConf",
    "kubeReserved",
    "systemReserved",
    "address",
    "port",
    "enforceNodeAllocatable",
    "podLogsDir",
    "registerNode",
    "localStorageCapacityIsolation",
    "registerWithTaints",
    "nodeStatusUpdateFrequency",
    "nodeStatusReportFrequency",
    "nodeLeaseDurationSeconds",
    "nodeStatusMaxImages",
    "evictionHard",
    "evictionSoft",
    "evictionSoftGracePeriod",
    "evictionMaxPodGracePeriod",
    "evictionPressureTransitionPeriod",
    "evictionMinimumReclaim",
    "readOnlyPort",
    "tlsCertFile",
    "tlsPrivateKeyFile",
    "authentication",
    "authorization",
    image_gc::HIGH,
    image_gc::LOW,
    image_gc::MIN_AGE,
    image_gc::MAX_AGE,
];

type Result<T> = std::result::Result<T, FieldIssue>;

/// Reads every honoured field of `document`, defaulting what is unset. Checks each field on its
/// own; rules that span fields are in [`check_cross_field_rules`].
pub(crate) fn convert(document: &Map<String, Value>) -> Result<KubeletConfig> {
    let defaults = KubeletConfig::default();
    let get = |name: &str| document.get(name).filter(|v| !v.is_null());

    let static_pod_path = match get("staticPodPath") {
        Some(v) => Some(string(v, "staticPodPath")?)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from),
        None => None,
    };
    let duration_or = |name: &str, default: Duration| -> Result<Duration> {
        Ok(match get(name) {
            Some(v) => nonzero_duration(v, name)?.unwrap_or(default),
            None => default,
        })
    };
    let container_runtime_endpoint = match get("containerRuntimeEndpoint") {
        Some(v) => runtime_endpoint(v, "containerRuntimeEndpoint")?,
        None => None,
    };
    let cgroup_driver = match get("cgroupDriver") {
        Some(v) => match string(v, "cgroupDriver")?.as_str() {
            "" => None,
            name => Some(CgroupDriver::from_name(name).ok_or_else(|| {
                FieldIssue::new(
                    "cgroupDriver",
                    FieldError::UnknownValue {
                        got: name.to_string(),
                        allowed: CgroupDriver::NAMES,
                    },
                )
            })?),
        },
        None => None,
    };
    let cgroup_root = match get("cgroupRoot") {
        Some(v) => Some(string(v, "cgroupRoot")?).filter(|s| !s.is_empty()),
        None => None,
    };
    let pod_pids_limit = match get("podPidsLimit") {
        Some(v) => {
            let limit = integer(v, "podPidsLimit")?;
            if limit < -1 {
                return Err(out_of_range(
                    "podPidsLimit",
                    "-1 (unlimited) or at least 0",
                    &limit,
                ));
            }
            Some(limit)
        }
        None => None,
    };
    let max_pods = match get("maxPods") {
        Some(v) => match int32(v, "maxPods")? {
            0 => None,
            n => Some(u32::try_from(n).map_err(|_| out_of_range("maxPods", "greater than 0", &n))?),
        },
        None => None,
    };
    let container_log_max_size = match get("containerLogMaxSize") {
        Some(v) => container_log_max_size(v, "containerLogMaxSize")?,
        None => None,
    };
    let container_log_max_files = match get("containerLogMaxFiles") {
        Some(v) => {
            let files = int32(v, "containerLogMaxFiles")?;
            Some(
                u32::try_from(files)
                    .ok()
                    .filter(|&n| n >= 2)
                    .ok_or_else(|| out_of_range("containerLogMaxFiles", "at least 2", &files))?,
            )
        }
        None => None,
    };
    let cluster_dns = match get("clusterDNS") {
        Some(v) => list(v, "clusterDNS")?
            .iter()
            .enumerate()
            .map(|(index, item)| ip_address(item, &format!("clusterDNS[{index}]")))
            .collect::<Result<Vec<_>>>()?,
        None => Vec::new(),
    };
    let cluster_domain = match get("clusterDomain") {
        Some(v) => string(v, "clusterDomain")?,
        None => String::new(),
    };
    let resolv_conf = match get("resolvConf") {
        Some(v) => Some(string(v, "resolvConf")?)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from),
        None => defaults.resolv_conf.clone(),
    };
    let pod_logs_dir = match get("podLogsDir") {
        Some(v) => {
            let dir = string(v, "podLogsDir")?;
            if dir.is_empty() {
                defaults.pod_logs_dir.clone()
            } else if !dir.starts_with('/') {
                return Err(FieldIssue::new(
                    "podLogsDir",
                    FieldError::RelativePath { got: dir },
                ));
            } else {
                PathBuf::from(dir)
            }
        }
        None => defaults.pod_logs_dir.clone(),
    };
    let address = match get("address") {
        Some(v) if string(v, "address")?.is_empty() => None,
        Some(v) => Some(ip_address(v, "address")?),
        None => None,
    };
    let port = match get("port") {
        Some(v) => match int32(v, "port")? {
            0 => None,
            n => Some(
                u16::try_from(n).map_err(|_| out_of_range("port", "between 1 and 65535", &n))?,
            ),
        },
        None => None,
    };
    let read_only_port = match get("readOnlyPort") {
        Some(v) => {
            let n = int32(v, "readOnlyPort")?;
            u16::try_from(n).map_err(|_| out_of_range("readOnlyPort", "between 0 and 65535", &n))?
        }
        None => 0,
    };
    let optional_path = |name: &str| -> Result<Option<PathBuf>> {
        Ok(match get(name) {
            Some(v) => Some(string(v, name)?)
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
            None => None,
        })
    };
    let tls_cert_file = optional_path("tlsCertFile")?;
    let tls_private_key_file = optional_path("tlsPrivateKeyFile")?;
    let authentication = match get("authentication") {
        Some(v) => authentication(v)?,
        None => KubeletAuthentication::default(),
    };
    let authorization = match get("authorization") {
        Some(v) => authorization(v)?,
        None => KubeletAuthorization::default(),
    };
    let enforce_node_allocatable = match get("enforceNodeAllocatable") {
        Some(v) => Some(enforcements(v, "enforceNodeAllocatable")?),
        None => None,
    };
    let node_status_update_frequency = match get("nodeStatusUpdateFrequency") {
        Some(v) => nonzero_duration(v, "nodeStatusUpdateFrequency")?,
        None => None,
    };
    // Upstream: an unset report frequency follows an explicitly set update frequency.
    let node_status_report_frequency = match get("nodeStatusReportFrequency") {
        Some(v) => nonzero_duration(v, "nodeStatusReportFrequency")?,
        None => None,
    }
    .or(node_status_update_frequency)
    .unwrap_or(defaults.node_status_report_frequency);
    let node_lease_duration_seconds = match get("nodeLeaseDurationSeconds") {
        Some(v) => match int32(v, "nodeLeaseDurationSeconds")? {
            0 => None,
            n => Some(
                u32::try_from(n)
                    .map_err(|_| out_of_range("nodeLeaseDurationSeconds", "greater than 0", &n))?,
            ),
        },
        None => None,
    };
    let node_status_max_images = match get("nodeStatusMaxImages") {
        Some(v) => {
            let n = int32(v, "nodeStatusMaxImages")?;
            if n < -1 {
                return Err(out_of_range(
                    "nodeStatusMaxImages",
                    "-1 (no limit) or at least 0",
                    &n,
                ));
            }
            i32::try_from(n).unwrap_or(i32::MAX)
        }
        None => defaults.node_status_max_images,
    };

    Ok(KubeletConfig {
        static_pod_path,
        file_check_frequency: duration_or("fileCheckFrequency", defaults.file_check_frequency)?,
        sync_frequency: duration_or("syncFrequency", defaults.sync_frequency)?,
        container_runtime_endpoint: container_runtime_endpoint
            .unwrap_or(defaults.container_runtime_endpoint),
        cgroup_driver: cgroup_driver.unwrap_or(defaults.cgroup_driver),
        cgroup_root: cgroup_root.unwrap_or(defaults.cgroup_root),
        cgroups_per_qos: match get("cgroupsPerQOS") {
            Some(v) => boolean(v, "cgroupsPerQOS")?,
            None => defaults.cgroups_per_qos,
        },
        pod_pids_limit: pod_pids_limit.unwrap_or(defaults.pod_pids_limit),
        max_pods: max_pods.unwrap_or(defaults.max_pods),
        runtime_request_timeout: duration_or(
            "runtimeRequestTimeout",
            defaults.runtime_request_timeout,
        )?,
        container_log_max_size: container_log_max_size.unwrap_or(defaults.container_log_max_size),
        container_log_max_files: container_log_max_files
            .unwrap_or(defaults.container_log_max_files),
        cluster_dns,
        cluster_domain,
        resolv_conf,
        pod_logs_dir,
        kube_reserved: match get("kubeReserved") {
            Some(v) => reserved(v, "kubeReserved")?,
            None => BTreeMap::new(),
        },
        system_reserved: match get("systemReserved") {
            Some(v) => reserved(v, "systemReserved")?,
            None => BTreeMap::new(),
        },
        address: address.unwrap_or(defaults.address),
        port: port.unwrap_or(defaults.port),
        enforce_node_allocatable: enforce_node_allocatable
            .unwrap_or(defaults.enforce_node_allocatable),
        register_node: match get("registerNode") {
            Some(v) => boolean(v, "registerNode")?,
            None => defaults.register_node,
        },
        local_storage_capacity_isolation: match get("localStorageCapacityIsolation") {
            Some(v) => boolean(v, "localStorageCapacityIsolation")?,
            None => defaults.local_storage_capacity_isolation,
        },
        register_with_taints: match get("registerWithTaints") {
            Some(v) => taints(v, "registerWithTaints")?,
            None => Vec::new(),
        },
        node_status_update_frequency: node_status_update_frequency
            .unwrap_or(defaults.node_status_update_frequency),
        node_status_report_frequency,
        node_lease_duration_seconds: node_lease_duration_seconds
            .unwrap_or(defaults.node_lease_duration_seconds),
        node_status_max_images,
        eviction_hard: match get("evictionHard") {
            Some(v) => Some(eviction_thresholds(v, "evictionHard")?),
            None => None,
        },
        eviction_soft: match get("evictionSoft") {
            Some(v) => eviction_thresholds(v, "evictionSoft")?,
            None => BTreeMap::new(),
        },
        eviction_soft_grace_period: match get("evictionSoftGracePeriod") {
            Some(v) => eviction_grace_periods(v)?,
            None => BTreeMap::new(),
        },
        eviction_max_pod_grace_period: match get("evictionMaxPodGracePeriod") {
            Some(v) => {
                let seconds = int32(v, "evictionMaxPodGracePeriod")?;
                if seconds < 0 {
                    return Err(out_of_range(
                        "evictionMaxPodGracePeriod",
                        "at least 0 seconds",
                        &seconds,
                    ));
                }
                seconds
            }
            None => defaults.eviction_max_pod_grace_period,
        },
        eviction_pressure_transition_period: duration_or(
            "evictionPressureTransitionPeriod",
            defaults.eviction_pressure_transition_period,
        )?,
        eviction_minimum_reclaim: match get("evictionMinimumReclaim") {
            Some(v) => eviction_thresholds(v, "evictionMinimumReclaim")?,
            None => BTreeMap::new(),
        },
        read_only_port,
        tls_cert_file,
        tls_private_key_file,
        authentication,
        authorization,
        image_gc: image_gc::convert(get)?,
    })
}

/// The value at `path` (`a.b`) inside `value`, unless null.
fn nested<'v>(value: &'v Value, path: &[&str]) -> Option<&'v Value> {
    path.iter()
        .try_fold(value, |v, name| v.get(name))
        .filter(|v| !v.is_null())
}

fn object_or_error(value: &Value, path: &str) -> Result<()> {
    if value.is_object() {
        Ok(())
    } else {
        Err(wrong_type(path, "a map", value))
    }
}

/// `authentication`: `x509.clientCAFile`, `webhook.enabled`, `webhook.cacheTTL`,
/// `anonymous.enabled`.
fn authentication(value: &Value) -> Result<KubeletAuthentication> {
    object_or_error(value, "authentication")?;
    let defaults = KubeletAuthentication::default();
    Ok(KubeletAuthentication {
        client_ca_file: match nested(value, &["x509", "clientCAFile"]) {
            Some(v) => Some(string(v, "authentication.x509.clientCAFile")?)
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
            None => None,
        },
        webhook_enabled: match nested(value, &["webhook", "enabled"]) {
            Some(v) => boolean(v, "authentication.webhook.enabled")?,
            None => defaults.webhook_enabled,
        },
        webhook_cache_ttl: match nested(value, &["webhook", "cacheTTL"]) {
            Some(v) => nonzero_duration(v, "authentication.webhook.cacheTTL")?
                .unwrap_or(defaults.webhook_cache_ttl),
            None => defaults.webhook_cache_ttl,
        },
        anonymous_enabled: match nested(value, &["anonymous", "enabled"]) {
            Some(v) => boolean(v, "authentication.anonymous.enabled")?,
            None => defaults.anonymous_enabled,
        },
    })
}

/// `authorization`: `mode`, `webhook.cacheAuthorizedTTL`, `webhook.cacheUnauthorizedTTL`.
fn authorization(value: &Value) -> Result<KubeletAuthorization> {
    object_or_error(value, "authorization")?;
    let defaults = KubeletAuthorization::default();
    let mode = match nested(value, &["mode"]) {
        Some(v) => match string(v, "authorization.mode")?.as_str() {
            "" => defaults.mode,
            name => AuthorizationMode::from_name(name).ok_or_else(|| {
                FieldIssue::new(
                    "authorization.mode",
                    FieldError::UnknownValue {
                        got: name.to_string(),
                        allowed: AuthorizationMode::NAMES,
                    },
                )
            })?,
        },
        None => defaults.mode,
    };
    let ttl = |name: &str, default: Duration| -> Result<Duration> {
        Ok(match nested(value, &["webhook", name]) {
            Some(v) => {
                nonzero_duration(v, &format!("authorization.webhook.{name}"))?.unwrap_or(default)
            }
            None => default,
        })
    };
    Ok(KubeletAuthorization {
        mode,
        cache_authorized_ttl: ttl("cacheAuthorizedTTL", defaults.cache_authorized_ttl)?,
        cache_unauthorized_ttl: ttl("cacheUnauthorizedTTL", defaults.cache_unauthorized_ttl)?,
    })
}

/// The rules upstream checks across fields, on the merged document and its conversion. Each
/// issue names the field that is set to the offending value.
pub(crate) fn check_cross_field_rules(
    document: &Map<String, Value>,
    config: &KubeletConfig,
) -> Result<()> {
    image_gc::check(&config.image_gc, |name| {
        document.get(name).is_some_and(|v| !v.is_null())
    })?;
    const FIELD: &str = "enforceNodeAllocatable";
    let enforced = &config.enforce_node_allocatable;
    if !config.cgroups_per_qos && !enforced.is_empty() {
        // Blame the field the user wrote: the list if set, else cgroupsPerQOS against the default.
        return Err(if document.get(FIELD).is_some_and(|v| !v.is_null()) {
            FieldIssue::new(FIELD, FieldError::RequiresCgroupsPerQos)
        } else {
            FieldIssue::new("cgroupsPerQOS", FieldError::CgroupsPerQosOffEnforcesPods)
        });
    }
    let has_cgroup = |name: &str| {
        document
            .get(name)
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
    };
    for (value, cgroup_field) in [
        (
            NodeAllocatableEnforcement::SystemReserved,
            "systemReservedCgroup",
        ),
        (
            NodeAllocatableEnforcement::SystemReservedCompressible,
            "systemReservedCgroup",
        ),
        (
            NodeAllocatableEnforcement::KubeReserved,
            "kubeReservedCgroup",
        ),
        (
            NodeAllocatableEnforcement::KubeReservedCompressible,
            "kubeReservedCgroup",
        ),
    ] {
        if enforced.contains(&value) && !has_cgroup(cgroup_field) {
            return Err(FieldIssue::new(
                FIELD,
                FieldError::Requires {
                    value: value.name(),
                    field: cgroup_field,
                },
            ));
        }
    }
    // As upstream's ParseThresholdConfig: a soft threshold without a grace period is refused.
    for signal in config.eviction_soft.keys() {
        let grace = config.eviction_soft_grace_period.get(signal);
        if grace.is_none_or(Duration::is_zero) {
            return Err(FieldIssue::new(
                format!("evictionSoftGracePeriod.{signal}"),
                FieldError::MissingValue,
            ));
        }
    }
    Ok(())
}

/// The JSON type of a value, for messages.
fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

pub(super) fn wrong_type(path: &str, expected: &'static str, value: &Value) -> FieldIssue {
    FieldIssue::new(
        path,
        FieldError::WrongType {
            expected,
            found: type_name(value),
        },
    )
}

pub(super) fn out_of_range(
    path: &str,
    expected: &'static str,
    got: &dyn std::fmt::Display,
) -> FieldIssue {
    FieldIssue::new(
        path,
        FieldError::OutOfRange {
            expected,
            got: got.to_string(),
        },
    )
}

/// A string; a YAML number written where upstream expects a string reads as its digits, as
/// upstream's YAML-to-JSON conversion does.
pub(super) fn string(value: &Value, path: &str) -> Result<String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(wrong_type(path, "a string", other)),
    }
}

fn boolean(value: &Value, path: &str) -> Result<bool> {
    value
        .as_bool()
        .ok_or_else(|| wrong_type(path, "a boolean (true or false)", value))
}

fn list<'v>(value: &'v Value, path: &str) -> Result<&'v Vec<Value>> {
    value
        .as_array()
        .ok_or_else(|| wrong_type(path, "a list", value))
}

/// An integer; a float with no fraction (`110.0`) counts, as it does upstream.
fn integer(value: &Value, path: &str) -> Result<i64> {
    let Value::Number(number) = value else {
        return Err(wrong_type(path, "an integer", value));
    };
    integer_of(number).ok_or_else(|| match number.as_f64() {
        Some(f) if f.fract() != 0.0 || !f.is_finite() => FieldIssue::new(
            path,
            FieldError::NotAnInteger {
                got: number.to_string(),
            },
        ),
        _ => out_of_range(path, "a 64-bit integer", number),
    })
}

fn integer_of(number: &Number) -> Option<i64> {
    if let Some(i) = number.as_i64() {
        return Some(i);
    }
    if number.is_f64() {
        let f = number.as_f64()?;
        // i64::MAX as f64 rounds up to 2^63, which is out of range, hence the strict bound.
        if f.fract() == 0.0 && f >= i64::MIN as f64 && f < i64::MAX as f64 {
            return Some(f as i64);
        }
    }
    None
}

/// An integer that fits upstream's `int32` fields.
pub(super) fn int32(value: &Value, path: &str) -> Result<i64> {
    let n = integer(value, path)?;
    if i32::try_from(n).is_err() {
        return Err(out_of_range(path, "a 32-bit integer", &n));
    }
    Ok(n)
}

/// A non-negative duration; `None` for zero, which upstream replaces with the default.
pub(super) fn nonzero_duration(value: &Value, path: &str) -> Result<Option<Duration>> {
    let text = string(value, path)?;
    let parsed =
        parse_go_duration(&text).map_err(|e| FieldIssue::new(path, FieldError::Duration(e)))?;
    let duration = parsed
        .to_std()
        .ok_or_else(|| FieldIssue::new(path, FieldError::NegativeDuration { got: text }))?;
    Ok(Some(duration).filter(|d| !d.is_zero()))
}

pub(super) fn parse_quantity(value: &Value, path: &str) -> Result<(String, Quantity)> {
    let text = string(value, path)?;
    let parsed =
        quantity::parse(&text).map_err(|e| FieldIssue::new(path, FieldError::Quantity(e)))?;
    Ok((text, parsed))
}

/// `containerLogMaxSize` in bytes; `None` for `""` (the default).
fn container_log_max_size(value: &Value, path: &str) -> Result<Option<u64>> {
    if value.as_str() == Some("") {
        return Ok(None);
    }
    let (text, parsed) = parse_quantity(value, path)?;
    u64::try_from(parsed.value())
        .ok()
        .filter(|&bytes| bytes > 0)
        .map(Some)
        .ok_or_else(|| {
            FieldIssue::new(
                path,
                FieldError::QuantityOutOfRange {
                    expected: "greater than 0",
                    got: text,
                },
            )
        })
}

fn ip_address(value: &Value, path: &str) -> Result<IpAddr> {
    let text = string(value, path)?;
    text.parse()
        .map_err(|_| FieldIssue::new(path, FieldError::IpAddress { got: text.clone() }))
}

/// `containerRuntimeEndpoint`: `unix:///path` or a bare absolute path; `None` for `""`.
fn runtime_endpoint(value: &Value, path: &str) -> Result<Option<RuntimeEndpoint>> {
    let text = string(value, path)?;
    if text.is_empty() {
        return Ok(None);
    }
    let socket = match text.split_once("://") {
        Some(("unix", socket)) => socket,
        Some(_) => {
            return Err(FieldIssue::new(
                path,
                FieldError::UnsupportedEndpoint { got: text },
            ));
        }
        None => text.as_str(),
    };
    if !socket.starts_with('/') {
        return Err(FieldIssue::new(
            path,
            FieldError::RelativeSocketPath { got: text },
        ));
    }
    Ok(Some(RuntimeEndpoint::from_socket_path(PathBuf::from(
        socket,
    ))))
}

/// `kubeReserved` / `systemReserved`: resource name to non-negative quantity.
fn reserved(value: &Value, path: &str) -> Result<BTreeMap<ReservedResource, Quantity>> {
    let Value::Object(entries) = value else {
        return Err(wrong_type(
            path,
            "a map of resource name to quantity",
            value,
        ));
    };
    let mut reserved = BTreeMap::new();
    for (name, amount) in entries {
        let entry_path = format!("{path}.{name}");
        let resource = ReservedResource::from_name(name).ok_or_else(|| {
            FieldIssue::new(
                &entry_path,
                FieldError::UnknownValue {
                    got: name.clone(),
                    allowed: ReservedResource::NAMES,
                },
            )
        })?;
        if amount.is_null() {
            continue;
        }
        let (text, parsed) = parse_quantity(amount, &entry_path)?;
        if parsed.is_negative() {
            return Err(FieldIssue::new(
                entry_path,
                FieldError::QuantityOutOfRange {
                    expected: "non-negative",
                    got: text,
                },
            ));
        }
        reserved.insert(resource, parsed);
    }
    Ok(reserved)
}

/// `registerWithTaints`: each taint needs a key and one of the three effects; `timeAdded` is
/// not used at registration.
fn taints(value: &Value, path: &str) -> Result<Vec<NodeTaint>> {
    list(value, path)?
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let item_path = format!("{path}[{index}]");
            let Value::Object(fields) = item else {
                return Err(wrong_type(&item_path, "a taint (key, value, effect)", item));
            };
            let field = |name: &str| fields.get(name).filter(|v| !v.is_null());
            let key = match field("key") {
                Some(v) => string(v, &format!("{item_path}.key"))?,
                None => String::new(),
            };
            if key.is_empty() {
                return Err(FieldIssue::new(
                    format!("{item_path}.key"),
                    FieldError::MissingValue,
                ));
            }
            let value = match field("value") {
                Some(v) => string(v, &format!("{item_path}.value"))?,
                None => String::new(),
            };
            let effect_path = format!("{item_path}.effect");
            let effect_name = match field("effect") {
                Some(v) => string(v, &effect_path)?,
                None => String::new(),
            };
            let effect = TaintEffect::from_name(&effect_name).ok_or_else(|| {
                FieldIssue::new(
                    &effect_path,
                    FieldError::UnknownValue {
                        got: effect_name.clone(),
                        allowed: TaintEffect::NAMES,
                    },
                )
            })?;
            Ok(NodeTaint { key, value, effect })
        })
        .collect()
}

/// `enforceNodeAllocatable`: known values, `none` only alone, a compressible value not with its
/// plain form; duplicates are dropped and `none` becomes the empty list.
fn enforcements(value: &Value, path: &str) -> Result<Vec<NodeAllocatableEnforcement>> {
    use NodeAllocatableEnforcement as E;
    let items = list(value, path)?;
    let mut enforced = Vec::new();
    let mut saw_none = false;
    for (index, item) in items.iter().enumerate() {
        let item_path = format!("{path}[{index}]");
        let name = string(item, &item_path)?;
        match E::from_name(&name) {
            Ok(Some(value)) if !enforced.contains(&value) => enforced.push(value),
            Ok(Some(_)) => {}
            Ok(None) => saw_none = true,
            Err(()) => {
                return Err(FieldIssue::new(
                    item_path,
                    FieldError::UnknownValue {
                        got: name,
                        allowed: E::NAMES,
                    },
                ));
            }
        }
    }
    if saw_none && let Some(other) = enforced.first() {
        return Err(FieldIssue::new(
            path,
            FieldError::Conflict {
                first: "none",
                second: other.name(),
            },
        ));
    }
    for (plain, compressible) in [
        (E::SystemReserved, E::SystemReservedCompressible),
        (E::KubeReserved, E::KubeReservedCompressible),
    ] {
        if enforced.contains(&plain) && enforced.contains(&compressible) {
            return Err(FieldIssue::new(
                path,
                FieldError::Conflict {
                    first: plain.name(),
                    second: compressible.name(),
                },
            ));
        }
    }
    Ok(enforced)
}
