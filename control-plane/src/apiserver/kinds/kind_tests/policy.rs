//! PodDisruptionBudgets, PriorityClasses, LimitRanges, ResourceQuotas.

use serde_json::json;

use super::*;

#[test]
fn pod_disruption_budgets() {
    let pdb = json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": meta("web", 3600),
                     "spec": {"minAvailable": "50%", "selector": {"matchLabels": {"app": "web"}}},
                     "status": {"disruptionsAllowed": 1, "currentHealthy": 3, "desiredHealthy": 2, "expectedPods": 3}});
    assert_eq!(
        causes("policy", "PodDisruptionBudget", pdb.clone(), None),
        Vec::<String>::new()
    );
    assert_eq!(
        row("policy", "PodDisruptionBudget", &pdb),
        [
            json!("web"),
            json!("50%"),
            json!("N/A"),
            json!(1),
            json!("60m")
        ]
    );
    let mut both = pdb;
    both["spec"]["maxUnavailable"] = json!(1);
    assert_cause(
        &causes("policy", "PodDisruptionBudget", both, None),
        "spec: Invalid value: policy.PodDisruptionBudgetSpec{...}: minAvailable and maxUnavailable cannot be both set",
    );
}

#[test]
fn priority_classes() {
    let pc = |name: &str, value: i64| {
        json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
               "metadata": {"name": name, "creationTimestamp": ago(5)}, "value": value})
    };
    let high = defaulted("scheduling.k8s.io", "PriorityClass", pc("high", 1000));
    assert_eq!(high["preemptionPolicy"], "PreemptLowerPriority");
    assert_eq!(
        row("scheduling.k8s.io", "PriorityClass", &high),
        [
            json!("high"),
            json!(1000),
            json!(false),
            json!("5s"),
            json!("PreemptLowerPriority")
        ]
    );
    assert_eq!(
        causes(
            "scheduling.k8s.io",
            "PriorityClass",
            pc("huge", 2_000_000_000),
            None
        ),
        [
            "value: Forbidden: maximum allowed value of a user defined priority is 1000000000 [FieldValueForbidden]"
        ]
    );
    assert_eq!(
        causes(
            "scheduling.k8s.io",
            "PriorityClass",
            pc("system-node-critical", 2_000_001_000),
            None
        ),
        Vec::<String>::new()
    );
    assert_cause(
        &causes(
            "scheduling.k8s.io",
            "PriorityClass",
            pc("system-mine", 5),
            None,
        ),
        "metadata.name: Forbidden: priority class names with 'system-' prefix are reserved for system use only. error: system-mine is not a known system priority class",
    );
    assert_eq!(
        causes(
            "scheduling.k8s.io",
            "PriorityClass",
            pc("high", 2000),
            Some(pc("high", 1000))
        ),
        ["value: Forbidden: may not be changed in an update. [FieldValueForbidden]"]
    );
}

#[test]
fn limit_ranges() {
    let lr = defaulted(
        "",
        "LimitRange",
        json!({"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "limits", "namespace": "d",
                   "creationTimestamp": "2025-05-01T10:00:00Z"},
               "spec": {"limits": [{"type": "Container", "max": {"cpu": "2"}, "min": {"memory": "64Mi"}}]}}),
    );
    let item = &lr["spec"]["limits"][0];
    assert_eq!(item["default"], json!({"cpu": "2"}));
    assert_eq!(
        item["defaultRequest"],
        json!({"cpu": "2", "memory": "64Mi"})
    );
    assert_eq!(
        row("", "LimitRange", &lr),
        [json!("limits"), json!("2025-05-01T10:00:00Z")]
    );
    assert_eq!(
        column_names("", "LimitRange"),
        [("Name", 0), ("Created At", 0)]
    );
    let bad = json!({"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "l", "namespace": "d"},
        "spec": {"limits": [{"type": "Container", "min": {"cpu": "2"}, "max": {"cpu": "1"}}]}});
    assert_cause(
        &causes("", "LimitRange", bad, None),
        "spec.limits[0].min[cpu]: Invalid value: \"2\": min value 2 is greater than max value 1",
    );
}

#[test]
fn resource_quotas() {
    let quota = json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": meta("compute", 600),
        "spec": {"hard": {"requests.cpu": "4", "limits.memory": "8Gi", "pods": "10"}},
        "status": {"hard": {"requests.cpu": "4", "limits.memory": "8Gi", "pods": "10"},
                   "used": {"requests.cpu": "500m", "pods": "3"}}});
    assert_eq!(
        row("", "ResourceQuota", &quota),
        [
            json!("compute"),
            json!("pods: 3/10, requests.cpu: 500m/4"),
            json!("limits.memory: 0/8Gi"),
            json!("10m")
        ]
    );
    let mut bad = quota;
    bad["spec"]["scopes"] = json!(["Sometimes"]);
    assert_cause(
        &causes("", "ResourceQuota", bad, None),
        "spec.scopes[0]: Unsupported value: \"Sometimes\"",
    );
}
