use super::*;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

fn meta(namespace: Option<&str>, name: &str, uid: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: namespace.map(String::from),
        uid: Some(uid.into()),
        resource_version: Some("7".into()),
        ..ObjectMeta::default()
    }
}

fn replicaset() -> ReplicaSet {
    ReplicaSet {
        metadata: meta(Some("web"), "rs-1", "u-rs"),
        ..ReplicaSet::default()
    }
}

fn now() -> Timestamp {
    Timestamp::from_second(1_700_000_000).expect("time")
}

fn call(action: &Action) -> ApiCall {
    to_call(action, now(), "abc")
}

#[test]
fn writes_address_the_resource_of_the_target_in_its_namespace() {
    let rs = replicaset();
    let create = call(&Action::create(&rs));
    assert_eq!(
        (
            create.resource.group.as_str(),
            create.resource.version.as_str(),
            create.resource.plural.as_str()
        ),
        ("apps", "v1", "replicasets")
    );
    assert_eq!(create.namespace.as_deref(), Some("web"));
    let Verb::Create { body } = create.verb else {
        panic!("a create: {create:?}");
    };
    assert_eq!(body["metadata"]["name"], "rs-1");

    let ns = Namespace {
        metadata: meta(None, "team", "u-ns"),
        ..Namespace::default()
    };
    let update = call(&Action::update(&ns));
    assert_eq!(update.resource.group, "", "core group");
    assert_eq!(update.resource.api_version, "v1");
    assert_eq!(update.namespace, None, "cluster scoped");
    let Verb::Replace { name, body } = update.verb else {
        panic!("a replace");
    };
    assert_eq!(name, "team");
    assert_eq!(
        body["metadata"]["resourceVersion"], "7",
        "the planned resourceVersion rides along (optimistic concurrency)"
    );
}

#[test]
fn status_updates_and_patches_go_to_their_subresource() {
    let rs = replicaset();
    assert!(matches!(
        call(&Action::update_status(&rs)).verb,
        Verb::ReplaceSubresource { ref subresource, ref name, .. } if subresource == "status" && name == "rs-1"
    ));
    let patch = json!({"metadata": {"labels": {"a": "b"}}});
    assert_eq!(
        call(&Action::patch(&rs, Some("scale"), patch.clone())).verb,
        Verb::MergePatch {
            name: "rs-1".into(),
            subresource: Some("scale".into()),
            patch: patch.clone(),
        }
    );
    assert_eq!(
        call(&Action::patch(&rs, None, patch.clone())).verb,
        Verb::MergePatch {
            name: "rs-1".into(),
            subresource: None,
            patch,
        }
    );
}

#[test]
fn deletes_carry_the_uid_precondition_and_propagation() {
    let rs = replicaset();
    let Verb::Delete { name, params } =
        call(&Action::delete(&rs, Some(Propagation::Foreground))).verb
    else {
        panic!("a delete");
    };
    assert_eq!(name, "rs-1");
    assert_eq!(
        params.propagation_policy,
        Some(PropagationPolicy::Foreground)
    );
    assert_eq!(
        params.preconditions.and_then(|p| p.uid).as_deref(),
        Some("u-rs")
    );

    let mut no_uid = replicaset();
    no_uid.metadata.uid = None;
    let Verb::Delete { params, .. } = call(&Action::delete(&no_uid, None)).verb else {
        panic!("a delete");
    };
    assert_eq!(params.preconditions, None);
    assert_eq!(params.propagation_policy, None);
}

#[test]
fn evictions_post_a_policy_v1_eviction_to_the_pod() {
    let pod = Pod {
        metadata: meta(Some("web"), "p-1", "u-p"),
        ..Pod::default()
    };
    let evict = call(&Action::Evict {
        pod: ObjectRef::of(&pod),
    });
    assert_eq!(evict.resource.plural, "pods");
    assert_eq!(evict.namespace.as_deref(), Some("web"));
    assert_eq!(
        evict.verb,
        Verb::CreateSubresource {
            name: "p-1".into(),
            subresource: "eviction".into(),
            body: json!({
                "apiVersion": "policy/v1", "kind": "Eviction",
                "metadata": {"name": "p-1", "namespace": "web"},
            }),
        }
    );
}

#[test]
fn events_are_events_k8s_io_v1_about_the_regarding_object() {
    let rs = replicaset();
    let event = call(&Action::event(
        &rs,
        EventType::Warning,
        "FailedCreate",
        "quota exceeded",
    ));
    assert_eq!(event.resource.api_version, "events.k8s.io/v1");
    assert_eq!(event.resource.plural, "events");
    assert_eq!(event.namespace.as_deref(), Some("web"));
    let Verb::Create { body } = event.verb else {
        panic!("a create");
    };
    assert_eq!(body["metadata"]["name"], "rs-1.abc");
    assert_eq!(body["metadata"]["namespace"], "web");
    assert_eq!(body["reportingController"], "kwk-controller-manager");
    assert_eq!(body["action"], "FailedCreate");
    assert_eq!(body["reason"], "FailedCreate");
    assert_eq!(body["note"], "quota exceeded");
    assert_eq!(body["type"], "Warning");
    assert_eq!(body["eventTime"], "2023-11-14T22:13:20.000000Z");
    assert_eq!(
        body["regarding"],
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs-1",
               "namespace": "web", "uid": "u-rs"})
    );
}

#[test]
fn events_about_cluster_scoped_objects_go_to_the_default_namespace() {
    let ns = Namespace {
        metadata: meta(None, "team", "u-ns"),
        ..Namespace::default()
    };
    let event = call(&Action::event(&ns, EventType::Normal, "Created", "ok"));
    assert_eq!(event.namespace.as_deref(), Some("default"));
    let Verb::Create { body } = event.verb else {
        panic!("a create");
    };
    assert_eq!(body["type"], "Normal");
    assert_eq!(body["regarding"].get("namespace"), None);
}

#[test]
fn unique_suffixes_differ_within_the_same_nanosecond() {
    assert_ne!(unique_suffix(now()), unique_suffix(now()));
}

fn pod_of_replicaset(controller: bool) -> Pod {
    let rs = replicaset();
    let mut owner = crate::common::controller_ref(&rs);
    owner.controller = Some(controller);
    Pod {
        metadata: ObjectMeta {
            generate_name: Some("rs-1-".into()),
            namespace: Some("web".into()),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        ..Pod::default()
    }
}

#[test]
fn pods_created_for_a_controller_get_its_creation_events() {
    let Action::Create { target, body } = Action::create(&pod_of_replicaset(true)) else {
        panic!("a create");
    };
    // (outcome, want: (type, reason, message))
    type Want = Option<(EventType, &'static str, &'static str)>;
    let cases: Vec<(Result<&str, &str>, Want)> = vec![
        (
            Ok("rs-1-x7k2p"),
            Some((
                EventType::Normal,
                "SuccessfulCreate",
                "Created pod: rs-1-x7k2p",
            )),
        ),
        (
            Err("pods \"rs-1-\" is forbidden: quota"),
            Some((
                EventType::Warning,
                "FailedCreate",
                "Error creating: pods \"rs-1-\" is forbidden: quota",
            )),
        ),
    ];
    for (outcome, want) in cases {
        let event = pod_create_event(&target, &body, outcome);
        let got = event.as_ref().map(|event| {
            let Action::Event {
                regarding,
                event_type,
                reason,
                message,
            } = event
            else {
                panic!("an event: {event:?}");
            };
            assert_eq!(
                (
                    regarding.kind.as_str(),
                    regarding.name.as_str(),
                    regarding.namespace.as_deref(),
                    regarding.uid.as_deref()
                ),
                ("ReplicaSet", "rs-1", Some("web"), Some("u-rs"))
            );
            (*event_type, reason.as_str(), message.as_str())
        });
        assert_eq!(got, want, "{outcome:?}");
    }
    let Action::Create { target, body } = Action::create(&pod_of_replicaset(false)) else {
        panic!("a create");
    };
    assert_eq!(
        pod_create_event(&target, &body, Ok("rs-1-a")),
        None,
        "no controller, no event"
    );
    let Action::Create { target, body } = Action::create(&replicaset()) else {
        panic!("a create");
    };
    assert_eq!(
        pod_create_event(&target, &body, Ok("rs-1")),
        None,
        "only pods"
    );
}

#[test]
fn creates_report_the_server_assigned_name_and_deletes_the_target() {
    let create = Action::create(&pod_of_replicaset(true));
    let response: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "rs-1-abcde", "namespace": "web", "uid": "u-pod"},
    }))
    .expect("object");
    assert_eq!(
        written_by(&create, Some(&response)),
        Some(Written::Created(WrittenObject {
            api_version: "v1".into(),
            kind: "Pod".into(),
            namespace: Some("web".into()),
            name: "rs-1-abcde".into(),
            uid: Some("u-pod".into()),
        }))
    );
    assert_eq!(
        written_by(&Action::delete(&replicaset(), None), None),
        Some(Written::Deleted(WrittenObject {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            namespace: Some("web".into()),
            name: "rs-1".into(),
            uid: Some("u-rs".into()),
        }))
    );
    let update = Action::update(&replicaset());
    assert_eq!(written_by(&update, None), None, "updates are not tracked");
}

fn pod(name: &str) -> Pod {
    Pod {
        metadata: meta(Some("web"), name, &format!("u-{name}")),
        ..Pod::default()
    }
}

/// Each group as (first index, one past the last).
type Groups = Vec<(usize, usize)>;

#[test]
fn pod_creates_run_in_slow_start_groups_and_everything_else_alone() {
    let create = |n: usize| -> Vec<Action> {
        (0..n)
            .map(|i| Action::create(&pod(&format!("p{i}"))))
            .collect()
    };
    let delete = |n: usize| -> Vec<Action> {
        (0..n)
            .map(|i| Action::delete(&pod(&format!("d{i}")), None))
            .collect()
    };
    let rs = replicaset();
    let cases: Vec<(&str, Vec<Action>, Groups)> = vec![
        ("nothing", vec![], vec![]),
        ("one create", create(1), vec![(0, 1)]),
        (
            "ten creates: 1, 2, 4, 3",
            create(10),
            vec![(0, 1), (1, 3), (3, 7), (7, 10)],
        ),
        ("deletes go together", delete(3), vec![(0, 3)]),
        (
            "a non-pod action splits the runs",
            [create(2), vec![Action::update(&rs)], create(2)].concat(),
            vec![(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)],
        ),
        (
            "creates then deletes are separate runs",
            [create(3), delete(2)].concat(),
            vec![(0, 1), (1, 3), (3, 5)],
        ),
        (
            "a ReplicaSet create runs alone",
            vec![Action::create(&rs), Action::create(&rs)],
            vec![(0, 1), (1, 2)],
        ),
    ];
    for (name, actions, want) in cases {
        let got: Groups = concurrent_groups(&actions)
            .iter()
            .map(|g| (g.start, g.end))
            .collect();
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn a_thousand_pod_creates_cap_at_the_burst_size() {
    let actions: Vec<Action> = (0..1000)
        .map(|i| Action::create(&pod(&format!("p{i}"))))
        .collect();
    let sizes: Vec<usize> = concurrent_groups(&actions)
        .iter()
        .map(|g| g.len())
        .collect();
    assert_eq!(sizes, vec![1, 2, 4, 8, 16, 32, 64, 128, 256, 489]);
    assert!(sizes.iter().all(|s| *s <= MAX_CONCURRENT_WRITES));
}
