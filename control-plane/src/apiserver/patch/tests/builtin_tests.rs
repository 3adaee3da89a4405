//! The built-in schemas: the generated table matches `k8s-openapi`, and carries the facts
//! strategic merge patch and server-side apply rely on.

use crate::apiserver::patch::builtin::{annotate, table_rows};
use crate::apiserver::patch::{
    ListType, MapType, NodeKind, PatchStrategy, builtin_definitions, builtin_kinds, builtin_schema,
};

#[test]
fn every_table_row_names_a_property_k8s_openapi_has() {
    let (mut definitions, _) = builtin_definitions();
    // Annotating again reports the rows whose definition exists but property does not.
    let unmatched = annotate(&mut definitions);
    assert!(
        unmatched.is_empty(),
        "rows without a property: {unmatched:#?}"
    );
    let covered = table_rows()
        .filter(|r| definitions.contains_key(r.definition))
        .count();
    assert!(
        covered > 250,
        "only {covered} rows apply to k8s-openapi definitions"
    );
}

#[test]
fn annotated_definitions_carry_the_extensions_for_openapi_v3() {
    let (definitions, _) = builtin_definitions();
    let containers = &definitions["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
    assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
    assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
    assert_eq!(containers["x-kubernetes-list-type"], "map");
    assert_eq!(
        containers["x-kubernetes-list-map-keys"],
        serde_json::json!(["name"])
    );
    let selector = &definitions["io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector"];
    assert_eq!(selector["x-kubernetes-map-type"], "atomic");
}

#[test]
fn kinds_cover_the_served_groups() {
    let kinds = builtin_kinds();
    for (api_version, kind) in [
        ("v1", "Pod"),
        ("v1", "Node"),
        ("v1", "Service"),
        ("apps/v1", "Deployment"),
        ("apps/v1", "StatefulSet"),
        ("batch/v1", "CronJob"),
        ("autoscaling/v1", "Scale"),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
        ("rbac.authorization.k8s.io/v1", "ClusterRole"),
    ] {
        assert!(
            kinds
                .iter()
                .any(|k| k.api_version == api_version && k.kind == kind),
            "{api_version} {kind} missing"
        );
        assert!(
            builtin_schema(api_version, kind).is_some(),
            "{api_version} {kind} has no schema"
        );
    }
    assert!(builtin_schema("example.com/v1", "Widget").is_none());
}

/// Walks `path` (field names; `[]` steps into list items) from a kind's schema.
fn field_meta(
    api_version: &str,
    kind: &str,
    path: &[&str],
) -> (crate::apiserver::patch::FieldMeta, NodeKind) {
    let mut node = builtin_schema(api_version, kind).expect("kind");
    let mut meta = None;
    for step in path {
        if *step == "[]" {
            node = node.items().expect("a list");
        } else {
            let f = node
                .field(step)
                .unwrap_or_else(|| panic!("no field {step}"));
            meta = Some(f.meta.clone());
            node = f.node;
        }
    }
    (meta.expect("at least one field"), node.kind())
}

#[test]
fn merge_facts_of_well_known_fields() {
    let merge = PatchStrategy {
        merge: true,
        ..Default::default()
    };
    let merge_retain = PatchStrategy {
        merge: true,
        retain_keys: true,
        ..Default::default()
    };
    let retain = PatchStrategy {
        retain_keys: true,
        ..Default::default()
    };
    let pod_spec = ["spec", "template", "spec"];
    type Case<'a> = (
        &'a str,
        &'a str,
        Vec<&'a str>,
        PatchStrategy,
        Option<&'a str>,
    );
    let cases: Vec<Case<'_>> = vec![
        (
            "apps/v1",
            "Deployment",
            [&pod_spec[..], &["containers"]].concat(),
            merge,
            Some("name"),
        ),
        (
            "apps/v1",
            "Deployment",
            [&pod_spec[..], &["initContainers"]].concat(),
            merge,
            Some("name"),
        ),
        (
            "apps/v1",
            "Deployment",
            [&pod_spec[..], &["volumes"]].concat(),
            merge_retain,
            Some("name"),
        ),
        (
            "apps/v1",
            "Deployment",
            [&pod_spec[..], &["containers", "[]", "env"]].concat(),
            merge,
            Some("name"),
        ),
        (
            "apps/v1",
            "Deployment",
            [&pod_spec[..], &["containers", "[]", "ports"]].concat(),
            merge,
            Some("containerPort"),
        ),
        (
            "apps/v1",
            "Deployment",
            [&pod_spec[..], &["containers", "[]", "volumeMounts"]].concat(),
            merge,
            Some("mountPath"),
        ),
        (
            "apps/v1",
            "Deployment",
            [&pod_spec[..], &["tolerations"]].concat(),
            PatchStrategy::default(),
            None,
        ),
        (
            "apps/v1",
            "Deployment",
            vec!["spec", "strategy"],
            retain,
            None,
        ),
        (
            "apps/v1",
            "Deployment",
            vec!["metadata", "finalizers"],
            merge,
            None,
        ),
        (
            "apps/v1",
            "Deployment",
            vec!["metadata", "ownerReferences"],
            merge,
            Some("uid"),
        ),
        ("v1", "Service", vec!["spec", "ports"], merge, Some("port")),
        (
            "v1",
            "Node",
            vec!["status", "conditions"],
            merge,
            Some("type"),
        ),
        (
            "v1",
            "Node",
            vec!["spec", "taints"],
            PatchStrategy::default(),
            None,
        ),
        (
            "v1",
            "Pod",
            vec!["spec", "ephemeralContainers", "[]", "env"],
            merge,
            Some("name"),
        ),
    ];
    for (api_version, kind, path, strategy, key) in cases {
        let (meta, _) = field_meta(api_version, kind, &path);
        assert_eq!(meta.patch_strategy, strategy, "{kind} {path:?}");
        assert_eq!(meta.patch_merge_key.as_deref(), key, "{kind} {path:?}");
    }
}

#[test]
fn server_side_apply_facts() {
    let (ports, _) = field_meta("v1", "Service", &["spec", "ports"]);
    assert_eq!(
        ports.effective_list_type(),
        (ListType::Map, vec!["port".into(), "protocol".into()])
    );
    let (finalizers, _) = field_meta("v1", "Pod", &["metadata", "finalizers"]);
    assert_eq!(finalizers.effective_list_type().0, ListType::Set);
    let (tolerations, _) = field_meta("v1", "Pod", &["spec", "tolerations"]);
    assert_eq!(tolerations.effective_list_type().0, ListType::Atomic);
    let (node_selector, kind) = field_meta("v1", "Pod", &["spec", "nodeSelector"]);
    assert_eq!(node_selector.map_type, Some(MapType::Atomic));
    assert_eq!(kind, NodeKind::Map);
    let selector = builtin_schema("apps/v1", "Deployment")
        .and_then(|d| d.field("spec"))
        .and_then(|s| s.node.field("selector"))
        .expect("selector");
    assert_eq!(selector.node.type_meta().map_type, Some(MapType::Atomic));
    assert_eq!(
        selector.node.name(),
        Some("io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector")
    );
}
