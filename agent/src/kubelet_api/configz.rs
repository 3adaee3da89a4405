//! `/configz`: the effective kubelet configuration as upstream serves it,
//! `{"kubeletconfig": {...}}` with the v1beta1 field names (durations as Go durations,
//! quantities as their canonical text). Only the fields kwk honours are listed, with the values
//! in force after defaulting.

use serde_json::{Map, Value, json};

use crate::config::KubeletConfig;

/// A duration as Go's `time.Duration.String` writes it: `20s`, `1m0s`, `2h30m0s`, `1.5s`,
/// `500ms`, `0s`.
pub fn go_duration(d: std::time::Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    let fraction = |value: u128, unit: u128| {
        let whole = value / unit;
        let rest = value % unit;
        if rest == 0 {
            return whole.to_string();
        }
        let width = unit.ilog10() as usize;
        let digits = format!("{rest:0width$}");
        format!("{whole}.{}", digits.trim_end_matches('0'))
    };
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!("{}µs", fraction(nanos, 1_000));
    }
    if nanos < 1_000_000_000 {
        return format!("{}ms", fraction(nanos, 1_000_000));
    }
    let seconds_nanos = nanos % 60_000_000_000;
    let minutes = nanos / 60_000_000_000 % 60;
    let hours = nanos / 3_600_000_000_000;
    let seconds = format!("{}s", fraction(seconds_nanos, 1_000_000_000));
    match (hours, nanos >= 60_000_000_000) {
        (0, false) => seconds,
        (0, true) => format!("{minutes}m{seconds}"),
        _ => format!("{hours}h{minutes}m{seconds}"),
    }
}

/// A byte count as a quantity with the largest binary suffix that divides it (`10Mi`).
fn binary_size(bytes: u64) -> String {
    for (suffix, unit) in [("Gi", 1u64 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
        if bytes > 0 && bytes.is_multiple_of(unit) {
            return format!("{}{suffix}", bytes / unit);
        }
    }
    bytes.to_string()
}

fn duration(d: std::time::Duration) -> Value {
    json!(go_duration(d))
}

/// The `/configz` document of `config`.
pub fn configz(config: &KubeletConfig) -> Value {
    let reserved = |m: &std::collections::BTreeMap<_, crate::quantity::Quantity>| {
        m.iter()
            .map(|(k, v): (&crate::config::ReservedResource, _)| {
                (k.name().to_string(), json!(v.to_string()))
            })
            .collect::<Map<String, Value>>()
    };
    let auth = &config.authentication;
    let authz = &config.authorization;
    let mut doc = json!({
        "enableServer": true,
        "podLogsDir": config.pod_logs_dir,
        "syncFrequency": duration(config.sync_frequency),
        "fileCheckFrequency": duration(config.file_check_frequency),
        "address": config.address.to_string(),
        "port": config.port,
        "readOnlyPort": 0,
        "authentication": {
            "x509": {"clientCAFile": auth.client_ca_file},
            "webhook": {"enabled": auth.webhook_enabled, "cacheTTL": duration(auth.webhook_cache_ttl)},
            "anonymous": {"enabled": auth.anonymous_enabled},
        },
        "authorization": {
            "mode": authz.mode.name(),
            "webhook": {
                "cacheAuthorizedTTL": duration(authz.cache_authorized_ttl),
                "cacheUnauthorizedTTL": duration(authz.cache_unauthorized_ttl),
            },
        },
        "clusterDomain": config.cluster_domain,
        "clusterDNS": config.cluster_dns.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "cgroupRoot": config.cgroup_root,
        "cgroupsPerQOS": config.cgroups_per_qos,
        "cgroupDriver": match config.cgroup_driver {
            crate::config::CgroupDriver::Cgroupfs => "cgroupfs",
            crate::config::CgroupDriver::Systemd => "systemd",
        },
        "runtimeRequestTimeout": duration(config.runtime_request_timeout),
        "maxPods": config.max_pods,
        "podPidsLimit": config.pod_pids_limit,
        "resolvConf": config.resolv_conf.as_ref().map_or_else(String::new, |p| p.display().to_string()),
        "containerLogMaxSize": binary_size(config.container_log_max_size),
        "containerLogMaxFiles": config.container_log_max_files,
        "systemReserved": reserved(&config.system_reserved),
        "kubeReserved": reserved(&config.kube_reserved),
        "enforceNodeAllocatable": config
            .enforce_node_allocatable
            .iter()
            .map(|e| e.name())
            .collect::<Vec<_>>(),
        "containerRuntimeEndpoint": config.container_runtime_endpoint.to_string(),
    });
    let strings = [
        ("staticPodPath", config.static_pod_path.as_ref()),
        ("tlsCertFile", config.tls_cert_file.as_ref()),
        ("tlsPrivateKeyFile", config.tls_private_key_file.as_ref()),
    ];
    for (name, path) in strings {
        if let Some(path) = path {
            doc[name] = json!(path.display().to_string());
        }
    }
    json!({ "kubeletconfig": doc })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_written_as_go_does() {
        use std::time::Duration;
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(5), "5ns"),
            (Duration::from_micros(1500), "1.5ms"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_secs(20), "20s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_secs(60), "1m0s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(3600), "1h0m0s"),
            (Duration::from_secs(9000), "2h30m0s"),
        ];
        for (d, expected) in cases {
            assert_eq!(go_duration(d), expected, "{d:?}");
        }
    }

    #[test]
    fn defaults_are_served_with_upstream_names_and_formats() {
        let doc = configz(&KubeletConfig::default());
        let c = &doc["kubeletconfig"];
        assert_eq!(c["syncFrequency"], "1m0s");
        assert_eq!(c["fileCheckFrequency"], "20s");
        assert_eq!(c["port"], 10250);
        assert_eq!(c["address"], "0.0.0.0");
        assert_eq!(c["readOnlyPort"], 0);
        assert_eq!(c["authentication"]["anonymous"]["enabled"], false);
        assert_eq!(c["authentication"]["webhook"]["cacheTTL"], "2m0s");
        assert_eq!(c["authorization"]["mode"], "Webhook");
        assert_eq!(c["authorization"]["webhook"]["cacheUnauthorizedTTL"], "30s");
        assert_eq!(c["containerLogMaxSize"], "10Mi");
        assert_eq!(c["enforceNodeAllocatable"], json!(["pods"]));
        assert_eq!(
            c["containerRuntimeEndpoint"],
            "unix:///run/containerd/containerd.sock"
        );
        assert!(c.get("staticPodPath").is_none());
    }
}
