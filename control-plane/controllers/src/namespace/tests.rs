use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ConfigMap, NamespaceCondition, NamespaceSpec, NamespaceStatus, PodSpec, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::Value;

use super::*;

const NOW: i64 = 50_000;

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(secs).expect("time")
}

fn namespace(deleted_at: Option<i64>, finalizers: &[&str], phase: &str) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some("doomed".into()),
            uid: Some("u-ns".into()),
            resource_version: Some("9".into()),
            deletion_timestamp: deleted_at.map(|t| Time(at(t))),
            ..ObjectMeta::default()
        },
        spec: Some(NamespaceSpec {
            finalizers: Some(finalizers.iter().map(|f| f.to_string()).collect()),
        }),
        status: Some(NamespaceStatus {
            phase: Some(phase.into()),
            conditions: None,
        }),
    }
}

fn pod(name: &str, grace: Option<i64>, deleting: bool) -> Content {
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("doomed".into()),
            uid: Some(format!("u-{name}")),
            deletion_timestamp: deleting.then(|| Time(at(NOW))),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            termination_grace_period_seconds: grace,
            ..PodSpec::default()
        }),
        status: Some(PodStatus {
            phase: Some("Running".into()),
            ..PodStatus::default()
        }),
    };
    Content::of_pod(&pod)
}

fn config_map(name: &str, finalizers: &[&str]) -> Content {
    Content::of(&ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("doomed".into()),
            uid: Some(format!("u-{name}")),
            finalizers: Some(finalizers.iter().map(|f| f.to_string()).collect()),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    })
}

fn deployment(name: &str) -> Content {
    Content {
        target: ObjectRef {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            plural: "deployments".into(),
            namespace: Some("doomed".into()),
            name: name.into(),
            uid: Some(format!("u-{name}")),
        },
        finalizers: vec!["example.com/hold".into()],
        deleting: false,
        grace_period_seconds: None,
    }
}

/// type → (status, reason, message) of the status update, if any.
fn conditions(plan: &Plan) -> Option<BTreeMap<String, (String, String, String)>> {
    plan.actions.iter().find_map(|a| match a {
        Action::UpdateStatus { body, .. } => Some(
            body["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
                    (s("type"), (s("status"), s("reason"), s("message")))
                })
                .collect(),
        ),
        _ => None,
    })
}

fn deleted(plan: &Plan) -> Vec<String> {
    plan.actions
        .iter()
        .filter_map(|a| match a {
            Action::Delete {
                target,
                propagation,
                ..
            } => {
                assert_eq!(*propagation, Some(crate::action::Propagation::Background));
                Some(target.name.clone())
            }
            _ => None,
        })
        .collect()
}

fn finalize(plan: &Plan) -> Option<Value> {
    plan.actions.iter().find_map(|a| match a {
        Action::Patch {
            subresource, patch, ..
        } if subresource.as_deref() == Some("finalize") => {
            Some(patch["spec"]["finalizers"].clone())
        }
        _ => None,
    })
}

#[test]
fn namespace_deletion_table() {
    let k = [FINALIZER_KUBERNETES];
    // (case, namespace, content, deleted, content-remaining message, finalize, requeue)
    type Case = (
        &'static str,
        Namespace,
        Vec<Content>,
        Vec<&'static str>,
        Option<&'static str>,
        Option<Value>,
        Option<u64>,
    );
    let cases: Vec<Case> = vec![
        (
            "pods go first",
            namespace(Some(NOW), &k, "Active"),
            vec![pod("p", Some(30), false), config_map("c", &[])],
            vec!["p"],
            Some("Some resources are remaining: pods. has 1 resource instances"),
            None,
            Some(16),
        ),
        (
            "terminating pods hold the rest back",
            namespace(Some(NOW - 100), &k, "Terminating"),
            vec![pod("p", Some(30), true), config_map("c", &[])],
            vec![],
            Some("Some resources are remaining: pods. has 1 resource instances"),
            None,
            Some(1),
        ),
        (
            "then everything else",
            namespace(Some(NOW), &k, "Terminating"),
            vec![
                config_map("c", &[]),
                config_map("held", &["example.com/hold"]),
                deployment("d"),
            ],
            vec!["c", "held", "d"],
            Some(
                "Some resources are remaining: configmaps. has 1 resource instances, deployments.apps has 1 resource instances",
            ),
            None,
            Some(8),
        ),
        (
            "empty: finalize, keeping other finalizers",
            namespace(
                Some(NOW),
                &["kubernetes", "z.example.com/x", "a.example.com/y"],
                "Terminating",
            ),
            vec![],
            vec![],
            None,
            Some(serde_json::json!(["a.example.com/y", "z.example.com/x"])),
            None,
        ),
        (
            "already finalized by us",
            namespace(Some(NOW), &["example.com/other"], "Terminating"),
            vec![],
            vec![],
            None,
            None,
            None,
        ),
    ];
    for (case, ns, content, expect_deleted, remaining, expect_finalize, requeue) in cases {
        let observed = Observed {
            content: &content,
            ..Observed::default()
        };
        let plan = plan(&ns, &observed, at(NOW));
        assert_eq!(deleted(&plan), expect_deleted, "{case}");
        let conditions = conditions(&plan).unwrap_or_else(|| panic!("{case}: a status update"));
        let content_remaining = &conditions["NamespaceContentRemaining"];
        match remaining {
            Some(message) => assert_eq!(
                content_remaining,
                &("True".into(), "SomeResourcesRemain".into(), message.into()),
                "{case}"
            ),
            None => assert_eq!(
                content_remaining,
                &(
                    "False".into(),
                    "ContentRemoved".into(),
                    "All content successfully removed".into()
                ),
                "{case}"
            ),
        }
        assert_eq!(conditions.len(), 5, "{case}");
        assert_eq!(finalize(&plan), expect_finalize, "{case}");
        assert_eq!(
            plan.requeue_after,
            requeue.map(Duration::from_secs),
            "{case}"
        );
    }
}

#[test]
fn finalizers_remaining_are_counted() {
    let content = [
        config_map("a", &["example.com/x"]),
        config_map("b", &["example.com/x", "example.com/y"]),
    ];
    let observed = Observed {
        content: &content,
        ..Observed::default()
    };
    let plan = plan(
        &namespace(Some(NOW), &["kubernetes"], "Terminating"),
        &observed,
        at(NOW),
    );
    let conditions = conditions(&plan).expect("status update");
    assert_eq!(
        conditions["NamespaceFinalizersRemaining"],
        (
            "True".into(),
            "SomeFinalizerRemain".into(),
            "Some finalizers are remaining: example.com/x in 2 resource instances, example.com/y in 1 resource instances".into()
        )
    );
}

#[test]
fn nothing_to_do_unless_deleting_and_no_content_writes_without_finalizers() {
    let observed = Observed::default();
    assert_eq!(
        plan(
            &namespace(None, &["kubernetes"], "Active"),
            &observed,
            at(NOW)
        ),
        Plan::default()
    );
    // Finalized: only the phase is written (once), no conditions, nothing deleted.
    let content = [config_map("c", &[])];
    let observed = Observed {
        content: &content,
        ..Observed::default()
    };
    let p = plan(&namespace(Some(NOW), &[], "Active"), &observed, at(NOW));
    assert_eq!(p.actions.len(), 1);
    let Action::UpdateStatus { body, .. } = &p.actions[0] else {
        panic!("a status update");
    };
    assert_eq!(body["status"]["phase"], "Terminating");
    assert!(body["status"]["conditions"].is_null());
    assert_eq!(
        plan(
            &namespace(Some(NOW), &[], "Terminating"),
            &observed,
            at(NOW)
        ),
        Plan::default()
    );
}

#[test]
fn discovery_failures_block_finalization() {
    let failures = [(
        "metrics.k8s.io/v1beta1".to_string(),
        "the server is currently unable to handle the request".to_string(),
    )];
    let observed = Observed {
        discovery_failures: &failures,
        ..Observed::default()
    };
    let p = plan(
        &namespace(Some(NOW), &["kubernetes"], "Terminating"),
        &observed,
        at(NOW),
    );
    assert_eq!(finalize(&p), None);
    assert_eq!(p.requeue_after, Some(Duration::from_secs(1)));
    let conditions = conditions(&p).expect("status update");
    assert_eq!(
        conditions["NamespaceDeletionDiscoveryFailure"],
        (
            "True".into(),
            "DiscoveryFailed".into(),
            "Discovery failed for some groups, 1 failing: unable to retrieve the complete list of server APIs: metrics.k8s.io/v1beta1: the server is currently unable to handle the request".into()
        )
    );
}

#[test]
fn conditions_keep_their_transition_time_unless_the_status_flips() {
    let mut ns = namespace(Some(NOW), &["kubernetes"], "Terminating");
    ns.status.as_mut().expect("status").conditions = Some(vec![NamespaceCondition {
        type_: "NamespaceContentRemaining".into(),
        status: "True".into(),
        reason: Some("SomeResourcesRemain".into()),
        message: Some("Some resources are remaining: pods. has 3 resource instances".into()),
        last_transition_time: Some(Time(at(7))),
    }]);
    let content = [pod("p", None, true)];
    let observed = Observed {
        content: &content,
        ..Observed::default()
    };
    let p = plan(&ns, &observed, at(NOW));
    let Some(Action::UpdateStatus { body, .. }) = p.actions.first() else {
        panic!("a status update");
    };
    let remaining = body["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "NamespaceContentRemaining"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        remaining["message"],
        "Some resources are remaining: pods. has 1 resource instances"
    );
    assert_eq!(remaining["lastTransitionTime"], at(7).to_string());
    let discovery = body["status"]["conditions"]
        .as_array()
        .and_then(|cs| {
            cs.iter()
                .find(|c| c["type"] == "NamespaceDeletionDiscoveryFailure")
        })
        .cloned()
        .unwrap_or_default();
    assert_eq!(discovery["lastTransitionTime"], at(NOW).to_string());
}
