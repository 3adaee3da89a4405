//! Merging drop-in documents onto the main configuration, the way upstream kubelet does it: each
//! drop-in is applied as a JSON merge patch (RFC 7386). Maps merge key by key at every depth
//! (`featureGates`, `kubeReserved`, `authentication.webhook`), lists are replaced whole
//! (`clusterDNS`, `enforceNodeAllocatable`), scalars are replaced, and `null` removes a field so
//! it falls back to its default.

use serde_json::Value;

/// Applies `patch` onto `target` as a JSON merge patch.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch_fields) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    let Value::Object(target_fields) = target else {
        return;
    };
    for (key, value) in patch_fields {
        if value.is_null() {
            target_fields.remove(key);
        } else {
            merge_patch(
                target_fields.entry(key.clone()).or_insert(Value::Null),
                value,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merges_like_upstream_drop_ins() {
        let cases = [
            (
                "scalars are replaced, untouched fields stay",
                json!({"port": 20250, "serializeImagePulls": false, "address": "192.168.0.1"}),
                json!({"address": "192.168.0.8"}),
                json!({"port": 20250, "serializeImagePulls": false, "address": "192.168.0.8"}),
            ),
            (
                "nested structures merge field by field",
                json!({"authorization": {"mode": "Webhook",
                    "webhook": {"cacheAuthorizedTTL": "5m", "cacheUnauthorizedTTL": "30s"}}}),
                json!({"authorization": {"webhook": {"cacheAuthorizedTTL": "8m"}}}),
                json!({"authorization": {"mode": "Webhook",
                    "webhook": {"cacheAuthorizedTTL": "8m", "cacheUnauthorizedTTL": "30s"}}}),
            ),
            (
                "lists are replaced whole",
                json!({"clusterDNS": ["192.168.0.9", "192.168.0.8"]}),
                json!({"clusterDNS": ["192.168.0.2"]}),
                json!({"clusterDNS": ["192.168.0.2"]}),
            ),
            (
                "maps merge key by key; a list inside a map is replaced whole",
                json!({"featureGates": {"AllAlpha": false, "MemoryQoS": true},
                    "staticPodURLHeader": {"a": ["x", "y"], "b": ["z"]}}),
                json!({"featureGates": {"MemoryQoS": false, "KubeletTracing": true},
                    "staticPodURLHeader": {"b": ["w"]}}),
                json!({"featureGates": {"AllAlpha": false, "MemoryQoS": false, "KubeletTracing": true},
                    "staticPodURLHeader": {"a": ["x", "y"], "b": ["w"]}}),
            ),
            (
                "null removes a field",
                json!({"maxPods": 50, "kubeReserved": {"cpu": "1", "memory": "1Gi"}}),
                json!({"maxPods": null, "kubeReserved": {"cpu": null}}),
                json!({"kubeReserved": {"memory": "1Gi"}}),
            ),
            (
                "a map replaces a scalar, and nulls inside new maps are dropped",
                json!({"kubeReserved": "oops"}),
                json!({"kubeReserved": {"cpu": "1", "pid": null}}),
                json!({"kubeReserved": {"cpu": "1"}}),
            ),
        ];
        for (name, mut target, patch, expected) in cases {
            merge_patch(&mut target, &patch);
            assert_eq!(target, expected, "{name}");
        }
    }
}
