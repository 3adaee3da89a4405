//! The pure part of priority admission: a new pod's priority from its resolved class, and
//! the priority kept on update.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use serde_json::json;

use super::{PriorityRejection, admit_pod_priority, keep_pod_priority, system_priority_classes};

fn pod(spec: serde_json::Value) -> Pod {
    let mut spec = spec;
    spec["containers"] = json!([{"name": "c", "image": "i"}]);
    serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec})).expect("pod")
}

fn class(name: &str, value: i32, policy: Option<&str>) -> PriorityClass {
    serde_json::from_value(json!({"metadata": {"name": name}, "value": value,
        "preemptionPolicy": policy}))
    .expect("class")
}

type Outcome = Result<(Option<&'static str>, i32, &'static str), PriorityRejection>;

#[test]
fn a_new_pod_gets_the_priority_of_its_class() {
    let high = class("high", 1000, Some("PreemptLowerPriority"));
    let never = class("never", 50, Some("Never"));
    let default = class("dflt", 7, Some("PreemptLowerPriority"));
    let legacy = class("legacy", 3, None);
    let cases: Vec<(&str, serde_json::Value, Option<&PriorityClass>, Outcome)> = vec![
        (
            "no class, no default",
            json!({}),
            None,
            Ok((None, 0, "PreemptLowerPriority")),
        ),
        (
            "no class, the global default",
            json!({}),
            Some(&default),
            Ok((Some("dflt"), 7, "PreemptLowerPriority")),
        ),
        (
            "a named class",
            json!({"priorityClassName": "high"}),
            Some(&high),
            Ok((Some("high"), 1000, "PreemptLowerPriority")),
        ),
        (
            "the class's preemption policy",
            json!({"priorityClassName": "never"}),
            Some(&never),
            Ok((Some("never"), 50, "Never")),
        ),
        (
            "a class without a policy",
            json!({"priorityClassName": "legacy"}),
            Some(&legacy),
            Ok((Some("legacy"), 3, "PreemptLowerPriority")),
        ),
        (
            "a priority that agrees",
            json!({"priorityClassName": "high", "priority": 1000}),
            Some(&high),
            Ok((Some("high"), 1000, "PreemptLowerPriority")),
        ),
        (
            "a policy that agrees",
            json!({"priorityClassName": "never", "preemptionPolicy": "Never"}),
            Some(&never),
            Ok((Some("never"), 50, "Never")),
        ),
        (
            "an empty name is no name",
            json!({"priorityClassName": ""}),
            None,
            Ok((Some(""), 0, "PreemptLowerPriority")),
        ),
        (
            "an unknown class",
            json!({"priorityClassName": "foo"}),
            None,
            Err(PriorityRejection::UnknownClass("foo".into())),
        ),
        (
            "a priority without a class",
            json!({"priority": 1000}),
            None,
            Err(PriorityRejection::PriorityMismatch {
                given: 1000,
                computed: 0,
            }),
        ),
        (
            "a priority that disagrees",
            json!({"priorityClassName": "high", "priority": 5}),
            Some(&high),
            Err(PriorityRejection::PriorityMismatch {
                given: 5,
                computed: 1000,
            }),
        ),
        (
            "a policy that disagrees",
            json!({"priorityClassName": "high", "preemptionPolicy": "Never"}),
            Some(&high),
            Err(PriorityRejection::PreemptionPolicyMismatch {
                given: "Never".into(),
                computed: "PreemptLowerPriority".into(),
            }),
        ),
    ];
    for (name, spec, class, want) in cases {
        let mut p = pod(spec);
        let got = admit_pod_priority(&mut p, class).map(|()| {
            let spec = p.spec.clone().unwrap_or_default();
            (
                spec.priority_class_name,
                spec.priority.unwrap_or(-1),
                spec.preemption_policy.unwrap_or_default(),
            )
        });
        let want = want.map(|(n, v, pol)| (n.map(str::to_string), v, pol.to_string()));
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn the_rejections_read_as_upstream() {
    assert_eq!(
        PriorityRejection::UnknownClass("foo".into()).to_string(),
        "no PriorityClass with name foo was found"
    );
    assert_eq!(
        PriorityRejection::PriorityMismatch {
            given: 5,
            computed: 1000
        }
        .to_string(),
        "the integer value of priority (5) must not be provided in pod spec; priority admission \
         controller computed 1000 from the given PriorityClass name"
    );
    assert_eq!(
        PriorityRejection::PreemptionPolicyMismatch {
            given: "Never".into(),
            computed: "PreemptLowerPriority".into()
        }
        .to_string(),
        "the string value of PreemptionPolicy (Never) must not be provided in pod spec; priority \
         admission controller computed PreemptLowerPriority from the given PriorityClass name"
    );
}

#[test]
fn an_update_keeps_the_priority_it_omits() {
    let old = pod(json!({"priority": 10, "preemptionPolicy": "Never"}));
    let mut omitted = pod(json!({}));
    keep_pod_priority(&mut omitted, &old);
    let spec = omitted.spec.unwrap_or_default();
    assert_eq!(spec.priority, Some(10));
    assert_eq!(spec.preemption_policy.as_deref(), Some("Never"));

    let mut changed = pod(json!({"priority": 11, "preemptionPolicy": "PreemptLowerPriority"}));
    keep_pod_priority(&mut changed, &old);
    let spec = changed.spec.unwrap_or_default();
    assert_eq!(spec.priority, Some(11), "validation refuses it, not this");
    assert_eq!(
        spec.preemption_policy.as_deref(),
        Some("PreemptLowerPriority")
    );
}

#[test]
fn the_system_classes_are_upstream_s() {
    let classes: Vec<(String, i32)> = system_priority_classes()
        .into_iter()
        .map(|c| (c.metadata.name.unwrap_or_default(), c.value))
        .collect();
    assert_eq!(
        classes,
        vec![
            ("system-node-critical".to_string(), 2_000_001_000),
            ("system-cluster-critical".to_string(), 2_000_000_000),
        ]
    );
}
