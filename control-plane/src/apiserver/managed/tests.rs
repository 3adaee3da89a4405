//! Tables for field sets, comparisons, merges by list type, and the managedFields rules of
//! updates and applies.

use serde_json::{Value, json};

use super::entries::{self, ANCIENT_CHANGES, Entry, Operation};
use super::fieldset::{FieldSet, PathElement, path_string};
use super::typed::{compare, merge, remove_paths, to_field_set};
use super::*;

fn deployment_shape<R>(f: impl FnOnce(Shape<'_>) -> R) -> R {
    with_shape("apps/v1", "Deployment", None, f)
}

fn fields(v: &Value) -> FieldSet {
    FieldSet::from_fields_v1(v).expect("valid fieldsV1")
}

#[test]
fn fields_v1_round_trips_every_element_kind() {
    let cases = [
        json!({"f:spec": {"f:replicas": {}}}),
        json!({"f:metadata": {"f:labels": {".": {}, "f:app": {}}}}),
        json!({"f:spec": {"f:containers": {"k:{\"name\":\"a\"}": {".": {}, "f:image": {}}}}}),
        json!({"f:metadata": {"f:finalizers": {"v:\"x\"": {}, "v:3": {}}}}),
        json!({"f:args": {"i:0": {}, "i:12": {}}}),
    ];
    for case in cases {
        assert_eq!(fields(&case).to_fields_v1(), case);
    }
    // Keys are re-encoded canonically (sorted, compact).
    let set = fields(&json!({"k:{\"protocol\": \"TCP\", \"containerPort\": 80}": {}}));
    assert_eq!(
        set.to_fields_v1(),
        json!({"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {}})
    );
    for bad in [
        json!({"x:foo": {}}),
        json!({"f:a": 1}),
        json!({"k:notjson": {}}),
        json!({".": {"f:a": {}}}),
        json!([]),
    ] {
        assert!(FieldSet::from_fields_v1(&bad).is_err(), "{bad}");
    }
}

#[test]
fn paths_print_like_upstream() {
    let set = fields(&json!({"f:spec": {"f:containers": {
        "k:{\"name\":\"a\"}": {"f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {}}}},
        "f:finalizers": {"v:\"x\"": {}}, "f:args": {"i:2": {}}}}));
    let printed: Vec<String> = set.paths().iter().map(|p| path_string(p)).collect();
    assert_eq!(
        printed,
        [
            ".spec.args[2]",
            ".spec.containers[name=\"a\"].ports[containerPort=80,protocol=\"TCP\"]",
            ".spec.finalizers[=\"x\"]",
        ]
    );
}

#[test]
fn set_algebra() {
    let a = fields(&json!({"f:a": {}, "f:b": {"f:c": {}, "f:d": {}}}));
    let b = fields(&json!({"f:b": {"f:c": {}}, "f:e": {}}));
    assert_eq!(
        a.union(&b),
        fields(&json!({"f:a": {}, "f:b": {"f:c": {}, "f:d": {}}, "f:e": {}}))
    );
    assert_eq!(
        a.difference(&b),
        fields(&json!({"f:a": {}, "f:b": {"f:d": {}}}))
    );
    assert_eq!(a.intersection(&b), fields(&json!({"f:b": {"f:c": {}}})));
    // Recursive difference drops whole subtrees under members of the other set.
    let status = fields(&json!({"f:b": {}}));
    assert_eq!(a.difference(&status), a);
    assert_eq!(a.recursive_difference(&status), fields(&json!({"f:a": {}})));
    assert!(a.difference(&a).is_empty());
}

#[test]
fn field_set_of_a_typed_object() {
    let object = json!({
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {},
            "template": {"spec": {"containers": [{
                "name": "nginx", "image": "nginx", "args": ["a", "b"],
                "ports": [{"containerPort": 80}],
            }]}},
        },
    });
    let set = deployment_shape(|shape| to_field_set(&object, shape));
    assert_eq!(
        set.to_fields_v1(),
        json!({
            "f:metadata": {"f:labels": {"f:app": {}}, "f:name": {}},
            "f:spec": {
                "f:replicas": {},
                // LabelSelector is an atomic struct: one leaf.
                "f:selector": {},
                // An empty struct is a member.
                "f:strategy": {},
                "f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"nginx\"}": {
                    ".": {}, "f:args": {}, "f:image": {}, "f:name": {},
                    // The port key takes protocol's default.
                    "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {
                        ".": {}, "f:containerPort": {}}},
                }}}},
            },
        })
    );
}

#[test]
fn field_set_without_a_schema_makes_every_key_a_member() {
    let object = json!({"spec": {"size": 3, "items": [1, 2], "nested": {"a": "b"}}});
    let set = to_field_set(&object, Shape::deduced());
    assert_eq!(
        set.to_fields_v1(),
        json!({"f:spec": {".": {}, "f:items": {}, "f:size": {},
            "f:nested": {".": {}, "f:a": {}}}})
    );
}

#[test]
fn comparison_marks_added_subtrees_modified_leaves_and_removed_subtrees() {
    let old = json!({"spec": {"replicas": 1, "paused": true,
        "template": {"spec": {"containers": [{"name": "a", "image": "x"}]}}}});
    let new = json!({"spec": {"replicas": 2,
        "strategy": {"rollingUpdate": {"maxSurge": 1}},
        "template": {"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}}}});
    let cmp = deployment_shape(|shape| compare(&old, &new, shape));
    assert_eq!(cmp.modified, fields(&json!({"f:spec": {"f:replicas": {}}})));
    assert_eq!(cmp.removed, fields(&json!({"f:spec": {"f:paused": {}}})));
    assert_eq!(
        cmp.added,
        fields(&json!({"f:spec": {
            "f:strategy": {".": {}, "f:rollingUpdate": {".": {}, "f:maxSurge": {}}},
            "f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"b\"}": {
                ".": {}, "f:image": {}, "f:name": {}}}}},
        }}))
    );
    let same = deployment_shape(|shape| compare(&old, &old, shape));
    assert!(same.is_empty());
}

#[test]
fn merge_follows_list_and_map_types() {
    // (name, live, config, merged)
    let cases = [
        (
            "associative list: items merge by key, live-only items stay in place",
            json!({"spec": {"template": {"spec": {"containers": [
                {"name": "a", "image": "x", "args": ["1"]}, {"name": "b", "image": "y"}]}}}}),
            json!({"spec": {"template": {"spec": {"containers": [
                {"name": "b", "image": "z"}, {"name": "c", "image": "w"}]}}}}),
            json!({"spec": {"template": {"spec": {"containers": [
                {"name": "a", "image": "x", "args": ["1"]}, {"name": "b", "image": "z"},
                {"name": "c", "image": "w"}]}}}}),
        ),
        (
            "atomic list: replaced",
            json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "args": ["1", "2"]}]}}}}),
            json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "args": ["3"]}]}}}}),
            json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "args": ["3"]}]}}}}),
        ),
        (
            "set list: union",
            json!({"metadata": {"finalizers": ["x", "y"]}}),
            json!({"metadata": {"finalizers": ["z", "x"]}}),
            json!({"metadata": {"finalizers": ["z", "y", "x"]}}),
        ),
        (
            "granular map: keys merge",
            json!({"metadata": {"labels": {"a": "1", "b": "2"}}}),
            json!({"metadata": {"labels": {"b": "3", "c": "4"}}}),
            json!({"metadata": {"labels": {"a": "1", "b": "3", "c": "4"}}}),
        ),
        (
            "atomic struct: replaced",
            json!({"spec": {"selector": {"matchLabels": {"a": "1"}, "matchExpressions": []}}}),
            json!({"spec": {"selector": {"matchLabels": {"b": "2"}}}}),
            json!({"spec": {"selector": {"matchLabels": {"b": "2"}}}}),
        ),
        (
            "port keys with a defaulted protocol match",
            json!({"spec": {"template": {"spec": {"containers": [{"name": "a",
                "ports": [{"containerPort": 80, "protocol": "TCP", "name": "http"}]}]}}}}),
            json!({"spec": {"template": {"spec": {"containers": [{"name": "a",
                "ports": [{"containerPort": 80, "hostPort": 8080}]}]}}}}),
            json!({"spec": {"template": {"spec": {"containers": [{"name": "a",
                "ports": [{"containerPort": 80, "protocol": "TCP", "name": "http", "hostPort": 8080}]}]}}}}),
        ),
    ];
    for (name, live, config, want) in cases {
        let got = deployment_shape(|shape| merge(&live, &config, shape));
        assert_eq!(got, want, "{name}");
    }
    // Without a schema lists are atomic and maps granular.
    let got = merge(
        &json!({"spec": {"list": [1, 2], "map": {"a": 1}}}),
        &json!({"spec": {"list": [3], "map": {"b": 2}}}),
        Shape::deduced(),
    );
    assert_eq!(got, json!({"spec": {"list": [3], "map": {"a": 1, "b": 2}}}));
}

#[test]
fn removing_paths_drops_emptied_parents() {
    let mut object = json!({"metadata": {"labels": {"a": "1"}, "name": "x"},
        "spec": {"template": {"spec": {"containers": [{"name": "a"}, {"name": "b", "image": "i"}]}}}});
    let gone = fields(&json!({"f:metadata": {"f:labels": {"f:a": {}}},
        "f:spec": {"f:template": {"f:spec": {"f:containers": {
            "k:{\"name\":\"a\"}": {}, "k:{\"name\":\"b\"}": {"f:image": {}}}}}}}));
    deployment_shape(|shape| remove_paths(&mut object, &gone, shape));
    assert_eq!(
        object,
        json!({"metadata": {"name": "x"},
            "spec": {"template": {"spec": {"containers": [{"name": "b"}]}}}})
    );
}

fn scope<'a>(manager: &'a str, subresource: &'a str) -> Scope<'a> {
    Scope {
        manager,
        api_version: "apps/v1",
        subresource,
        has_status: true,
    }
}

fn entry_of<'a>(object: &'a Value, manager: &str) -> &'a Value {
    object["metadata"]["managedFields"]
        .as_array()
        .and_then(|l| l.iter().find(|e| e["manager"] == manager))
        .unwrap_or_else(|| panic!("no entry of {manager} in {object}"))
}

const NOW: &str = "2026-01-01T00:00:00Z";

fn apply_as(
    live: Option<&Value>,
    config: &Value,
    manager: &str,
    force: bool,
) -> Result<Value, ApiError> {
    deployment_shape(|shape| apply(live, config, &scope(manager, ""), shape, force, NOW))
}

#[test]
fn apply_conflicts_force_and_shared_ownership() {
    let config = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"}, "spec": {"replicas": 2, "paused": true}});
    let live = apply_as(None, &config, "a", false).expect("create");
    assert_eq!(
        entry_of(&live, "a")["fieldsV1"],
        json!({"f:spec": {"f:paused": {}, "f:replicas": {}}})
    );
    assert_eq!(entry_of(&live, "a")["operation"], "Apply");
    assert_eq!(entry_of(&live, "a")["time"], NOW);

    // Same value: shared, no conflict.
    let same = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"}, "spec": {"replicas": 2}});
    let shared = apply_as(Some(&live), &same, "b", false).expect("shared");
    assert_eq!(
        entry_of(&shared, "a")["fieldsV1"]["f:spec"]["f:replicas"],
        json!({})
    );
    assert_eq!(
        entry_of(&shared, "b")["fieldsV1"]["f:spec"]["f:replicas"],
        json!({})
    );

    // Different values: conflicts with every owner, listed per manager.
    let change = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"}, "spec": {"replicas": 3, "paused": false}});
    let err = apply_as(Some(&live), &change, "c", false).expect_err("conflict");
    assert_eq!(err.code, 409);
    assert_eq!(
        err.message,
        "Apply failed with 2 conflicts: conflicts with \"a\":\n- .spec.paused\n- .spec.replicas"
    );
    assert_eq!(err.details.causes.len(), 2);
    assert_eq!(err.details.causes[0].reason, "FieldManagerConflict");
    assert_eq!(err.details.causes[0].field, ".spec.paused");
    assert_eq!(err.details.causes[0].message, "conflict with \"a\"");

    let forced = apply_as(Some(&shared), &change, "c", true).expect("forced");
    assert_eq!(forced["spec"]["replicas"], 3);
    assert!(
        forced["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["manager"] == "c"),
        "a and b lost everything: {}",
        forced["metadata"]["managedFields"]
    );
}

#[test]
fn reapply_removes_what_the_manager_no_longer_applies_unless_owned() {
    let first = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web",
        "labels": {"a": "1", "b": "2", "c": "3"}}, "spec": {"paused": true}});
    let live = apply_as(None, &first, "m", false).expect("create");
    let other = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"b": "2"}}});
    let live = apply_as(Some(&live), &other, "n", false).expect("shared b");
    let second = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"c": "3"}}});
    let after = apply_as(Some(&live), &second, "m", false).expect("reapply");
    assert_eq!(after["metadata"]["labels"], json!({"b": "2", "c": "3"}));
    assert!(after["spec"].get("paused").is_none(), "{after}");
    assert_eq!(
        entry_of(&after, "m")["fieldsV1"],
        json!({"f:metadata": {"f:labels": {"f:c": {}}}})
    );
}

#[test]
fn apply_with_the_same_configuration_keeps_the_time() {
    let config = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"}, "spec": {"replicas": 2}});
    let live = apply_as(None, &config, "a", false).expect("create");
    let again = deployment_shape(|shape| {
        apply(
            Some(&live),
            &config,
            &scope("a", ""),
            shape,
            false,
            "2030-01-01T00:00:00Z",
        )
    })
    .expect("again");
    assert_eq!(again, live);
}

fn update_as(live: Option<&Value>, new: &Value, manager: &str, subresource: &str) -> Value {
    let mut new = new.clone();
    deployment_shape(|shape| {
        track_update(live, &mut new, &scope(manager, subresource), shape, NOW)
    });
    new
}

#[test]
fn updates_take_changed_fields_from_other_managers() {
    let created = update_as(
        None,
        &json!({"metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"replicas": 1, "paused": true}, "status": {"replicas": 1}}),
        "kubectl-create",
        "",
    );
    let create_entry = entry_of(&created, "kubectl-create");
    assert_eq!(create_entry["operation"], "Update");
    assert_eq!(create_entry["apiVersion"], "apps/v1");
    assert_eq!(create_entry["time"], NOW);
    assert_eq!(
        create_entry["fieldsV1"],
        json!({"f:metadata": {"f:labels": {".": {}, "f:app": {}}},
            "f:spec": {"f:paused": {}, "f:replicas": {}}}),
        "status is not owned through the main resource; metadata.name is stripped"
    );
    let mut scaled = created.clone();
    scaled["spec"]["replicas"] = json!(4);
    let scaled = update_as(Some(&created), &scaled, "kubectl", "scale");
    assert_eq!(
        entry_of(&scaled, "kubectl")["fieldsV1"],
        json!({"f:spec": {"f:replicas": {}}})
    );
    assert_eq!(entry_of(&scaled, "kubectl")["subresource"], "scale");
    assert!(
        entry_of(&scaled, "kubectl-create")["fieldsV1"]["f:spec"]
            .get("f:replicas")
            .is_none()
    );
    // A no-op update records nothing.
    assert_eq!(update_as(Some(&scaled), &scaled, "someone", ""), scaled);
    // A removed field leaves its owner.
    let mut unpaused = scaled.clone();
    unpaused["spec"].as_object_mut().unwrap().remove("paused");
    let unpaused = update_as(Some(&scaled), &unpaused, "kubectl-edit", "");
    assert!(
        entry_of(&unpaused, "kubectl-create")["fieldsV1"]["f:spec"]
            .get("f:paused")
            .is_none()
    );
    assert!(
        unpaused["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["manager"] != "kubectl-edit"),
        "removing only gives no ownership"
    );
    // Status writes own status only.
    let mut status = unpaused.clone();
    status["status"]["replicas"] = json!(4);
    let status = update_as(Some(&unpaused), &status, "controller", "status");
    assert_eq!(
        entry_of(&status, "controller")["fieldsV1"],
        json!({"f:status": {"f:replicas": {}}})
    );
}

#[test]
fn client_managed_fields_are_honoured_reset_or_ignored() {
    let created = update_as(
        None,
        &json!({"metadata": {"name": "web"}, "spec": {"replicas": 1}}),
        "creator",
        "",
    );
    // Invalid ones are replaced by the live ones.
    let mut invalid = created.clone();
    invalid["metadata"]["managedFields"] = json!([{"manager": "x", "operation": "Bogus"}]);
    assert_eq!(update_as(Some(&created), &invalid, "x", ""), created);
    // An empty list (or one empty entry) resets them.
    for reset in [json!([]), json!([{}])] {
        let mut cleared = created.clone();
        cleared["metadata"]["managedFields"] = reset;
        let out = update_as(Some(&created), &cleared, "x", "");
        assert!(out["metadata"].get("managedFields").is_none(), "{out}");
    }
    // Valid ones are taken as given (kubectl's client-side apply upgrade relies on it).
    let mut rewritten = created.clone();
    rewritten["metadata"]["managedFields"] = json!([{"manager": "kubectl", "operation": "Apply",
        "apiVersion": "apps/v1", "fieldsType": "FieldsV1",
        "fieldsV1": {"f:spec": {"f:replicas": {}}}}]);
    let out = update_as(Some(&created), &rewritten, "kubectl", "");
    assert_eq!(
        out["metadata"]["managedFields"],
        rewritten["metadata"]["managedFields"]
    );
}

#[test]
fn update_managers_are_capped_into_ancient_changes() {
    let mut list: Vec<Entry> = (0..12)
        .map(|i| Entry {
            manager: format!("m{i:02}"),
            operation: Operation::Update,
            api_version: "apps/v1".into(),
            time: Some(format!("2026-01-01T00:00:{i:02}Z")),
            subresource: String::new(),
            fields: FieldSet::from_paths([[PathElement::Field(format!("f{i}"))].as_slice()]),
        })
        .collect();
    list.push(Entry {
        manager: "applier".into(),
        operation: Operation::Apply,
        api_version: "apps/v1".into(),
        time: None,
        subresource: String::new(),
        fields: FieldSet::new(),
    });
    entries::cap_update_managers(&mut list, entries::MAX_UPDATE_MANAGERS);
    let updaters: Vec<&Entry> = list
        .iter()
        .filter(|e| e.operation == Operation::Update)
        .collect();
    assert_eq!(updaters.len(), 10);
    let ancient = list
        .iter()
        .find(|e| e.manager == ANCIENT_CHANGES)
        .expect("ancient-changes");
    assert_eq!(
        ancient.fields.to_fields_v1(),
        json!({"f:f0": {}, "f:f1": {}, "f:f2": {}})
    );
    assert_eq!(ancient.time.as_deref(), Some("2026-01-01T00:00:02Z"));
    assert!(list.iter().any(|e| e.manager == "applier"));
}

#[test]
fn managers_from_user_agents() {
    for (ua, manager) in [
        ("kubectl/v1.33.0 (linux/amd64) kubernetes/abc", "kubectl"),
        ("helm", "helm"),
        ("curl/8.5.0", "curl"),
        ("", ""),
    ] {
        assert_eq!(manager_from_user_agent(ua), manager, "{ua}");
    }
    assert_eq!(manager_from_user_agent(&"x".repeat(300)).len(), 128);
}

#[test]
fn kubectl_takes_over_what_it_client_side_applied_with_unchanged_values() {
    let last = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"}, "spec": {"replicas": 2, "paused": true}});
    let mut live = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "annotations": {
            last_applied::ANNOTATION: last.to_string()}},
        "spec": {"replicas": 2, "paused": false}});
    live["metadata"]["managedFields"] = json!([{"manager": "kubectl-client-side-apply",
        "operation": "Update", "apiVersion": "apps/v1", "fieldsType": "FieldsV1",
        "fieldsV1": {"f:metadata": {"f:annotations": {".": {}, "f:kubectl.kubernetes.io/last-applied-configuration": {}}},
            "f:spec": {"f:paused": {}, "f:replicas": {}}}}]);
    let replicas = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"}, "spec": {"replicas": 5}});
    // Another manager conflicts; kubectl may take replicas (live = last applied) ...
    assert_eq!(
        apply_as(Some(&live), &replicas, "other", false)
            .unwrap_err()
            .code,
        409
    );
    let taken = apply_as(Some(&live), &replicas, "kubectl", false).expect("kubectl takes over");
    assert_eq!(taken["spec"]["replicas"], 5);
    // ... and refreshes the annotation to what it applied.
    let annotation = taken["metadata"]["annotations"][last_applied::ANNOTATION]
        .as_str()
        .expect("annotation");
    assert_eq!(serde_json::from_str::<Value>(annotation).unwrap(), replicas);
    // paused drifted from the last applied value: still a conflict.
    let paused = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"}, "spec": {"paused": true}});
    let err = apply_as(Some(&live), &paused, "kubectl", false).expect_err("conflict");
    assert_eq!(
        err.message,
        "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.paused"
    );
}

#[test]
fn undeclared_fields_are_named_by_their_path() {
    let cases = [
        (
            json!({"spec": {"replicas": 2, "selector": {"matchLabels": {"any": "key"}}}}),
            vec![],
        ),
        (
            json!({"metadata": {"labels": {"free": "form"}, "bogus": 1}, "spec": {"replica": 2}}),
            vec![".metadata.bogus", ".spec.replica"],
        ),
        (
            json!({"spec": {"template": {"spec": {
                "containers": [{"name": "a", "imagePullPolice": "Always",
                                "ports": [{"containerPort": 80, "hostPortt": 1}]}],
                "tolerations": [{"key": "k"}, {"kye": "k"}],
            }}}}),
            vec![
                ".spec.template.spec.containers[name=\"a\"].imagePullPolice",
                ".spec.template.spec.containers[name=\"a\"].ports[containerPort=80,protocol=\"TCP\"].hostPortt",
                ".spec.template.spec.tolerations[1].kye",
            ],
        ),
    ];
    for (config, expected) in cases {
        let found = deployment_shape(|shape| typed::undeclared_fields(&config, shape));
        assert_eq!(found, expected, "{config}");
    }
    // Without a schema nothing is undeclared.
    let free = json!({"anything": {"goes": [1, {"x": 2}]}});
    assert!(typed::undeclared_fields(&free, Shape::deduced()).is_empty());
}
