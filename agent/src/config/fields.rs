//! The schema of upstream's `kubelet.config.k8s.io/v1beta1` `KubeletConfiguration`: every field
//! name (JSON spelling), and the names inside the nested structures, so a config written for the
//! upstream kubelet is recognised field by field and anything else is reported as unknown.
//!
//! Maps with free-form keys (`featureGates`, `evictionHard`, ...) and structures we do not look
//! inside (`logging`, whose options vary by Kubernetes release) are [`Shape::Opaque`].

use serde_json::{Map, Value};

/// What a field holds, as far as unknown-field detection needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// A scalar, a list of scalars, or a map with free-form keys: not looked into.
    Opaque,
    /// A structure with these fields.
    Object(&'static [UpstreamField]),
    /// A list of structures with these fields.
    ListOf(&'static [UpstreamField]),
}

/// One field of the upstream schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UpstreamField {
    pub(crate) name: &'static str,
    pub(crate) shape: Shape,
}

const fn leaf(name: &'static str) -> UpstreamField {
    UpstreamField {
        name,
        shape: Shape::Opaque,
    }
}

const fn object(name: &'static str, fields: &'static [UpstreamField]) -> UpstreamField {
    UpstreamField {
        name,
        shape: Shape::Object(fields),
    }
}

const fn list_of(name: &'static str, fields: &'static [UpstreamField]) -> UpstreamField {
    UpstreamField {
        name,
        shape: Shape::ListOf(fields),
    }
}

/// `apiVersion` and `kind`: checked on every file, never reported as ignored.
pub(crate) const TYPE_META_FIELDS: &[&str] = &["apiVersion", "kind"];

const AUTHENTICATION: &[UpstreamField] = &[
    object("x509", &[leaf("clientCAFile")]),
    object("webhook", &[leaf("enabled"), leaf("cacheTTL")]),
    object("anonymous", &[leaf("enabled")]),
];

const AUTHORIZATION: &[UpstreamField] = &[
    leaf("mode"),
    object(
        "webhook",
        &[leaf("cacheAuthorizedTTL"), leaf("cacheUnauthorizedTTL")],
    ),
];

const TAINT: &[UpstreamField] = &[
    leaf("key"),
    leaf("value"),
    leaf("effect"),
    leaf("timeAdded"),
];

const SHUTDOWN_GRACE_PERIOD_BY_POD_PRIORITY: &[UpstreamField] =
    &[leaf("priority"), leaf("shutdownGracePeriodSeconds")];

const MEMORY_RESERVATION: &[UpstreamField] = &[leaf("numaNode"), leaf("limits")];

const TRACING: &[UpstreamField] = &[leaf("endpoint"), leaf("samplingRatePerMillion")];

/// Every top-level field of upstream's v1beta1 `KubeletConfiguration` except `apiVersion` and
/// `kind`, in the order upstream declares them.
pub(crate) const KUBELET_CONFIGURATION_FIELDS: &[UpstreamField] = &[
    leaf("enableServer"),
    leaf("staticPodPath"),
    leaf("podLogsDir"),
    leaf("syncFrequency"),
    leaf("fileCheckFrequency"),
    leaf("httpCheckFrequency"),
    leaf("staticPodURL"),
    leaf("staticPodURLHeader"),
    leaf("address"),
    leaf("port"),
    leaf("readOnlyPort"),
    leaf("tlsCertFile"),
    leaf("tlsPrivateKeyFile"),
    leaf("tlsCipherSuites"),
    leaf("tlsCurvePreferences"),
    leaf("tlsMinVersion"),
    leaf("rotateCertificates"),
    leaf("serverTLSBootstrap"),
    object("authentication", AUTHENTICATION),
    object("authorization", AUTHORIZATION),
    leaf("registryPullQPS"),
    leaf("registryBurst"),
    leaf("imagePullCredentialsVerificationPolicy"),
    leaf("preloadedImagesVerificationAllowlist"),
    leaf("eventRecordQPS"),
    leaf("eventBurst"),
    leaf("enableDebuggingHandlers"),
    leaf("enableContentionProfiling"),
    leaf("healthzPort"),
    leaf("healthzBindAddress"),
    leaf("oomScoreAdj"),
    leaf("clusterDomain"),
    leaf("clusterDNS"),
    leaf("streamingConnectionIdleTimeout"),
    leaf("nodeStatusUpdateFrequency"),
    leaf("nodeStatusReportFrequency"),
    leaf("nodeLeaseDurationSeconds"),
    leaf("imageMinimumGCAge"),
    leaf("imageMaximumGCAge"),
    leaf("imageGCHighThresholdPercent"),
    leaf("imageGCLowThresholdPercent"),
    leaf("volumeStatsAggPeriod"),
    leaf("kubeletCgroups"),
    leaf("systemCgroups"),
    leaf("cgroupRoot"),
    leaf("cgroupsPerQOS"),
    leaf("cgroupDriver"),
    leaf("cpuManagerPolicy"),
    leaf("singleProcessOOMKill"),
    leaf("cpuManagerPolicyOptions"),
    leaf("cpuManagerReconcilePeriod"),
    leaf("draManagerReconcilePeriod"),
    leaf("memoryManagerPolicy"),
    leaf("topologyManagerPolicy"),
    leaf("topologyManagerScope"),
    leaf("topologyManagerPolicyOptions"),
    leaf("qosReserved"),
    leaf("runtimeRequestTimeout"),
    leaf("hairpinMode"),
    leaf("maxPods"),
    leaf("podCIDR"),
    leaf("podPidsLimit"),
    leaf("resolvConf"),
    leaf("runOnce"),
    leaf("cpuCFSQuota"),
    leaf("cpuCFSQuotaPeriod"),
    leaf("nodeStatusMaxImages"),
    leaf("maxOpenFiles"),
    leaf("contentType"),
    leaf("kubeAPIQPS"),
    leaf("kubeAPIBurst"),
    leaf("serializeImagePulls"),
    leaf("maxParallelImagePulls"),
    leaf("evictionHard"),
    leaf("evictionSoft"),
    leaf("evictionSoftGracePeriod"),
    leaf("evictionPressureTransitionPeriod"),
    leaf("evictionMaxPodGracePeriod"),
    leaf("evictionMinimumReclaim"),
    leaf("mergeDefaultEvictionSettings"),
    leaf("podsPerCore"),
    leaf("enableControllerAttachDetach"),
    leaf("protectKernelDefaults"),
    leaf("makeIPTablesUtilChains"),
    leaf("iptablesMasqueradeBit"),
    leaf("iptablesDropBit"),
    leaf("featureGates"),
    leaf("failSwapOn"),
    object("memorySwap", &[leaf("swapBehavior")]),
    leaf("containerLogMaxSize"),
    leaf("containerLogMaxFiles"),
    leaf("containerLogMaxWorkers"),
    leaf("containerLogMonitorInterval"),
    leaf("configMapAndSecretChangeDetectionStrategy"),
    leaf("systemReserved"),
    leaf("kubeReserved"),
    leaf("reservedSystemCPUs"),
    leaf("showHiddenMetricsForVersion"),
    leaf("systemReservedCgroup"),
    leaf("kubeReservedCgroup"),
    leaf("enforceNodeAllocatable"),
    leaf("allowedUnsafeSysctls"),
    leaf("volumePluginDir"),
    leaf("providerID"),
    leaf("kernelMemcgNotification"),
    leaf("logging"),
    leaf("enableSystemLogHandler"),
    leaf("enableSystemLogQuery"),
    leaf("shutdownGracePeriod"),
    leaf("shutdownGracePeriodCriticalPods"),
    list_of(
        "shutdownGracePeriodByPodPriority",
        SHUTDOWN_GRACE_PERIOD_BY_POD_PRIORITY,
    ),
    object("crashLoopBackOff", &[leaf("maxContainerRestartPeriod")]),
    list_of("reservedMemory", MEMORY_RESERVATION),
    leaf("enableProfilingHandler"),
    leaf("enableDebugFlagsHandler"),
    leaf("seccompDefault"),
    leaf("memoryThrottlingFactor"),
    leaf("memoryReservationPolicy"),
    list_of("registerWithTaints", TAINT),
    leaf("registerNode"),
    object("tracing", TRACING),
    leaf("localStorageCapacityIsolation"),
    leaf("containerRuntimeEndpoint"),
    leaf("imageServiceEndpoint"),
    leaf("failCgroupV1"),
    object("userNamespaces", &[leaf("idsPerPod")]),
];

/// The upstream field of this name at the top level, if there is one.
pub(crate) fn top_level(name: &str) -> Option<&'static UpstreamField> {
    KUBELET_CONFIGURATION_FIELDS.iter().find(|f| f.name == name)
}

/// The paths of the fields in `document` that upstream's schema does not have, sorted:
/// `authentication.webhook.ttl`, `maxPod`, `registerWithTaints[0].colour`.
pub(crate) fn unknown_fields(document: &Map<String, Value>) -> Vec<String> {
    let mut unknown = Vec::new();
    for (name, value) in document {
        if TYPE_META_FIELDS.contains(&name.as_str()) {
            continue;
        }
        match top_level(name) {
            Some(field) => collect_unknown(field, value, name, &mut unknown),
            None => unknown.push(name.clone()),
        }
    }
    unknown.sort();
    unknown
}

/// Looks inside `value` (the value of `field`, found at `path`) for names `field` does not have.
fn collect_unknown(field: &UpstreamField, value: &Value, path: &str, unknown: &mut Vec<String>) {
    let check_object =
        |fields: &[UpstreamField], map: &Map<String, Value>, at: &str, out: &mut Vec<String>| {
            for (name, inner) in map {
                let inner_path = format!("{at}.{name}");
                match fields.iter().find(|f| f.name == name) {
                    Some(inner_field) => collect_unknown(inner_field, inner, &inner_path, out),
                    None => out.push(inner_path),
                }
            }
        };
    match (field.shape, value) {
        (Shape::Object(fields), Value::Object(map)) => check_object(fields, map, path, unknown),
        (Shape::ListOf(fields), Value::Array(items)) => {
            for (index, item) in items.iter().enumerate() {
                if let Value::Object(map) = item {
                    check_object(fields, map, &format!("{path}[{index}]"), unknown);
                }
            }
        }
        // Opaque fields, and values of the wrong type (reported by conversion if we use them).
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn assert_unique(fields: &[UpstreamField], at: &str) {
        let mut seen = HashSet::new();
        for field in fields {
            assert!(
                seen.insert(field.name),
                "{at}{} is listed twice",
                field.name
            );
            match field.shape {
                Shape::Opaque => {}
                Shape::Object(inner) | Shape::ListOf(inner) => {
                    assert_unique(inner, &format!("{at}{}.", field.name));
                }
            }
        }
    }

    #[test]
    fn field_names_are_unique_at_every_level() {
        assert_unique(KUBELET_CONFIGURATION_FIELDS, "");
    }

    #[test]
    fn type_meta_is_not_a_field() {
        for name in TYPE_META_FIELDS {
            assert!(top_level(name).is_none(), "{name}");
        }
    }

    #[test]
    fn reports_unknown_fields_at_every_level() {
        let document = serde_json::json!({
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "maxPods": 10,
            "maxPod": 10,
            "featureGates": {"AnythingGoes": true},
            "authentication": {"webhook": {"enabled": true, "ttl": "2m"}, "x509": {}},
            "registerWithTaints": [{"key": "a", "effect": "NoSchedule"}, {"colour": "red"}],
            "logging": {"format": "json", "whatever": 1},
        });
        let Value::Object(map) = document else {
            unreachable!()
        };
        assert_eq!(
            unknown_fields(&map),
            [
                "authentication.webhook.ttl",
                "maxPod",
                "registerWithTaints[1].colour"
            ]
        );
    }

    #[test]
    fn knows_fields_from_across_the_schema() {
        for name in [
            "enableServer",
            "evictionHard",
            "featureGates",
            "userNamespaces",
        ] {
            assert!(top_level(name).is_some(), "{name}");
        }
        assert!(top_level("maxpods").is_none(), "names are case-sensitive");
    }
}
