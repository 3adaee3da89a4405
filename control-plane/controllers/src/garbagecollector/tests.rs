use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::*;
use crate::action::{Action, Propagation};

/// (apiVersion, kind, plural, namespaced)
fn kind_info(kind: &str) -> (&'static str, &'static str, bool) {
    match kind {
        "Deployment" => ("apps/v1", "deployments", true),
        "ReplicaSet" => ("apps/v1", "replicasets", true),
        "Pod" => ("v1", "pods", true),
        "PersistentVolume" => ("v1", "persistentvolumes", false),
        "Node" => ("v1", "nodes", false),
        _ => ("example.com/v1", "foos", true),
    }
}

fn watched() -> Vec<WatchedKind> {
    [
        "Deployment",
        "ReplicaSet",
        "Pod",
        "PersistentVolume",
        "Node",
    ]
    .iter()
    .map(|kind| {
        let (api_version, _, namespaced) = kind_info(kind);
        WatchedKind {
            group: group_of(api_version).to_string(),
            kind: kind.to_string(),
            namespaced,
        }
    })
    .collect()
}

/// `ns/kind/name` or `kind/name` for cluster-scoped kinds; uid `u-<name>`.
fn item(spec: &str) -> Item {
    let parts: Vec<&str> = spec.split('/').collect();
    let (namespace, kind, name) = match parts.as_slice() {
        [ns, kind, name] => (Some(ns.to_string()), *kind, *name),
        [kind, name] => (None, *kind, *name),
        _ => panic!("bad spec {spec}"),
    };
    let (api_version, plural, _) = kind_info(kind);
    Item {
        target: ObjectRef {
            api_version: api_version.into(),
            kind: kind.into(),
            plural: plural.into(),
            namespace,
            name: name.into(),
            uid: Some(format!("u-{name}")),
        },
        owners: Vec::new(),
        finalizers: Vec::new(),
        deleting: false,
        resource_version: Some("5".into()),
    }
}

/// A reference to `kind/name` with uid `u-<name>` (or `uid` when given).
fn owned(mut item: Item, kind: &str, name: &str, uid: Option<&str>, block: bool) -> Item {
    let (api_version, _, _) = kind_info(kind);
    item.owners.push(OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: name.into(),
        uid: uid.map_or_else(|| format!("u-{name}"), String::from),
        controller: Some(true),
        block_owner_deletion: block.then_some(true),
    });
    item
}

fn deleting(mut item: Item, finalizers: &[&str]) -> Item {
    item.deleting = true;
    item.finalizers = finalizers.iter().map(|f| f.to_string()).collect();
    item
}

/// The plan in words: `delete <name> <propagation>`, `patch <name> <field>=<names or uids>`,
/// `event <name> <reason>`.
fn describe(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .map(|a| match a {
            Action::Delete {
                target,
                propagation,
                ..
            } => format!(
                "delete {} {:?}",
                target.name,
                propagation.unwrap_or(Propagation::Background)
            ),
            Action::Patch { target, patch, .. } => {
                assert_eq!(patch["metadata"]["resourceVersion"], "5");
                let metadata = patch["metadata"].as_object().cloned().unwrap_or_default();
                let (field, value) = metadata
                    .iter()
                    .find(|(k, _)| *k != "resourceVersion")
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .unwrap_or_default();
                let entries: Vec<String> = value
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|v| match v {
                        serde_json::Value::String(s) => s.clone(),
                        v => {
                            let block = if v["blockOwnerDeletion"] == true {
                                "!"
                            } else {
                                ""
                            };
                            format!("{}{block}", v["name"].as_str().unwrap_or_default())
                        }
                    })
                    .collect();
                format!("patch {} {field}=[{}]", target.name, entries.join(","))
            }
            Action::Event {
                regarding, reason, ..
            } => format!("event {} {reason}", regarding.name),
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

#[test]
fn garbage_collection_table() {
    let rs = || item("a/ReplicaSet/rs");
    let pod = || item("a/Pod/p");
    let cases: Vec<(&str, Vec<Item>, Vec<&str>)> = vec![
        (
            "owner present",
            vec![rs(), owned(pod(), "ReplicaSet", "rs", None, true)],
            vec![],
        ),
        (
            "owner gone",
            vec![owned(pod(), "ReplicaSet", "rs", None, true)],
            vec!["delete p Background"],
        ),
        (
            "owner replaced by a same-named successor",
            vec![rs(), owned(pod(), "ReplicaSet", "rs", Some("u-old"), true)],
            vec!["delete p Background"],
        ),
        (
            "owner of a kind nobody watches",
            vec![owned(pod(), "Foo", "f", None, false)],
            vec![],
        ),
        (
            "one owner gone, one present",
            vec![
                rs(),
                owned(
                    owned(pod(), "ReplicaSet", "gone", None, false),
                    "ReplicaSet",
                    "rs",
                    None,
                    true,
                ),
            ],
            vec!["patch p ownerReferences=[rs!]"],
        ),
        (
            "the dependent's own deletion preference is kept",
            vec![{
                let mut p = owned(pod(), "ReplicaSet", "rs", None, true);
                p.finalizers = vec![FINALIZER_ORPHAN.into()];
                p
            }],
            vec!["delete p Orphan"],
        ),
        (
            "a dependent already going is left alone",
            vec![deleting(owned(pod(), "ReplicaSet", "rs", None, true), &[])],
            vec![],
        ),
        (
            "cluster-scoped owner of a namespaced dependent",
            vec![item("Node/n"), owned(pod(), "Node", "n", None, false)],
            vec![],
        ),
        (
            "namespaced owner of a cluster-scoped dependent",
            vec![
                owned(item("PersistentVolume/pv"), "Pod", "p", None, false),
                pod(),
            ],
            vec!["event pv OwnerRefInvalidNamespace", "delete pv Background"],
        ),
        (
            "owner in another namespace",
            vec![
                item("b/ReplicaSet/rs"),
                owned(pod(), "ReplicaSet", "rs", None, true),
            ],
            vec!["event p OwnerRefInvalidNamespace", "delete p Background"],
        ),
    ];
    for (case, items, expected) in cases {
        assert_eq!(describe(&plan(&items, &watched())), expected, "{case}");
    }
}

#[test]
fn foreground_deletion_table() {
    let fg = [FINALIZER_FOREGROUND, "example.com/keep"];
    let rs = || deleting(item("a/ReplicaSet/rs"), &fg);
    let cases: Vec<(&str, Vec<Item>, Vec<&str>)> = vec![
        (
            "blocking dependent is deleted, the owner waits",
            vec![rs(), owned(item("a/Pod/p"), "ReplicaSet", "rs", None, true)],
            vec!["delete p Background"],
        ),
        (
            "a blocking dependent still terminating keeps the owner waiting",
            vec![
                rs(),
                deleting(owned(item("a/Pod/p"), "ReplicaSet", "rs", None, true), &[]),
            ],
            vec![],
        ),
        (
            "non-blocking dependents do not hold the owner",
            vec![
                rs(),
                owned(item("a/Pod/p"), "ReplicaSet", "rs", None, false),
            ],
            vec![
                "delete p Background",
                "patch rs finalizers=[example.com/keep]",
            ],
        ),
        (
            "no dependents left",
            vec![rs()],
            vec!["patch rs finalizers=[example.com/keep]"],
        ),
        (
            "a dependent with another live owner only drops the reference",
            vec![
                rs(),
                item("a/Deployment/d"),
                owned(
                    owned(item("a/Pod/p"), "ReplicaSet", "rs", None, true),
                    "Deployment",
                    "d",
                    None,
                    false,
                ),
            ],
            vec!["patch p ownerReferences=[d]"],
        ),
        (
            "a dependent with dependents of its own goes in the foreground",
            vec![
                deleting(item("a/Deployment/d"), &[FINALIZER_FOREGROUND]),
                owned(item("a/ReplicaSet/rs"), "Deployment", "d", None, true),
                owned(item("a/Pod/p"), "ReplicaSet", "rs", None, true),
            ],
            vec!["delete rs Foreground"],
        ),
        (
            "a waiting grandchild would deadlock: unblock first",
            vec![
                deleting(item("a/Deployment/d"), &[FINALIZER_FOREGROUND]),
                owned(item("a/ReplicaSet/rs"), "Deployment", "d", None, true),
                deleting(
                    owned(item("a/Pod/p"), "ReplicaSet", "rs", None, true),
                    &[FINALIZER_FOREGROUND],
                ),
            ],
            vec![
                "patch rs ownerReferences=[d]",
                "delete rs Foreground",
                // p has no dependents: its own foreground deletion completes.
                "patch p finalizers=[]",
            ],
        ),
    ];
    for (case, items, expected) in cases {
        assert_eq!(describe(&plan(&items, &watched())), expected, "{case}");
    }
}

#[test]
fn orphaning_table() {
    let rs = || deleting(item("a/ReplicaSet/rs"), &[FINALIZER_ORPHAN]);
    let cases: Vec<(&str, Vec<Item>, Vec<&str>)> = vec![
        (
            "dependents lose the reference first",
            vec![
                rs(),
                owned(item("a/Pod/p"), "ReplicaSet", "rs", None, true),
                deleting(owned(item("a/Pod/q"), "ReplicaSet", "rs", None, true), &[]),
            ],
            vec!["patch p ownerReferences=[]", "patch q ownerReferences=[]"],
        ),
        (
            "other owners stay",
            vec![
                rs(),
                item("a/Deployment/d"),
                owned(
                    owned(item("a/Pod/p"), "ReplicaSet", "rs", None, true),
                    "Deployment",
                    "d",
                    None,
                    false,
                ),
            ],
            vec!["patch p ownerReferences=[d]"],
        ),
        (
            "then the finalizer goes",
            vec![rs()],
            vec!["patch rs finalizers=[]"],
        ),
    ];
    for (case, items, expected) in cases {
        assert_eq!(describe(&plan(&items, &watched())), expected, "{case}");
    }
}

#[test]
fn items_and_kinds_from_typed_objects() {
    let rs = ReplicaSet {
        metadata: ObjectMeta {
            name: Some("rs".into()),
            namespace: Some("a".into()),
            uid: Some("u-rs".into()),
            finalizers: Some(vec![FINALIZER_FOREGROUND.into()]),
            deletion_timestamp: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            )),
            ..ObjectMeta::default()
        },
        ..ReplicaSet::default()
    };
    let it = Item::of(&rs);
    assert!(it.deleting_dependents());
    assert_eq!(it.target.plural, "replicasets");
    assert_eq!(
        WatchedKind::of::<Pod>(),
        WatchedKind {
            group: String::new(),
            kind: "Pod".into(),
            namespaced: true
        }
    );
    assert!(!WatchedKind::of::<Node>().namespaced);
    assert_eq!(WatchedKind::of::<ReplicaSet>().group, "apps");
}

#[test]
fn invalid_namespace_event_reads_as_upstream() {
    let items = [
        item("b/ReplicaSet/rs"),
        owned(item("a/Pod/p"), "ReplicaSet", "rs", None, true),
    ];
    let actions = plan(&items, &watched());
    let Some(Action::Event { message, .. }) = actions.first() else {
        panic!("an event first: {actions:?}");
    };
    assert_eq!(
        message,
        "ownerRef [apps/v1/ReplicaSet, namespace: a, name: rs, uid: u-rs] does not exist in namespace \"a\""
    );
}
