//! Table tests of custom resource schemas (validation, pruning, defaulting), printer columns,
//! the CRD controller's status decisions, catalogue entries and OpenAPI schemas.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::columns::{PrinterColumn, columns_of, lookup, row};
use super::controller::desired_status;
use super::schema::{apply_defaults, format_matches, prune, validate};
use super::{resource_defs, scale_of_custom, set_path};

fn messages(schema: &Value, object: &Value) -> Vec<String> {
    let mut causes = Vec::new();
    validate(schema, object, "", &mut causes);
    causes
        .into_iter()
        .map(|c| format!("{}: {}", c.field, c.message))
        .collect()
}

fn spec_schema(props: &Value) -> Value {
    json!({"type": "object", "properties": {"spec": {"type": "object", "properties": props}}})
}

#[test]
fn validation_messages_name_the_fields_as_upstream() {
    let cases: Vec<(Value, Value, Vec<&str>)> = vec![
        (
            json!({"n": {"type": "integer"}}),
            json!({"n": "x"}),
            vec![
                r#"spec.n: Invalid value: "string": spec.n in body must be of type integer: "string""#,
            ],
        ),
        (json!({"n": {"type": "integer"}}), json!({"n": 3.0}), vec![]),
        (
            json!({"n": {"type": "integer"}}),
            json!({"n": 1.5}),
            vec![
                r#"spec.n: Invalid value: "number": spec.n in body must be of type integer: "number""#,
            ],
        ),
        (
            json!({"n": {"type": "string"}}),
            json!({"n": null}),
            vec![r#"spec.n: Invalid value: "null": spec.n in body must be of type string: "null""#],
        ),
        (
            json!({"n": {"type": "string", "nullable": true}}),
            json!({"n": null}),
            vec![],
        ),
        (
            json!({"n": {"type": "integer", "minimum": 1, "maximum": 10}}),
            json!({"n": 0}),
            vec!["spec.n: Invalid value: 0: spec.n in body should be greater than or equal to 1"],
        ),
        (
            json!({"n": {"type": "integer", "maximum": 10, "exclusiveMaximum": true}}),
            json!({"n": 10}),
            vec!["spec.n: Invalid value: 10: spec.n in body should be less than 10"],
        ),
        (
            json!({"n": {"type": "number", "minimum": 1.5, "exclusiveMinimum": true}}),
            json!({"n": 1.5}),
            vec!["spec.n: Invalid value: 1.5: spec.n in body should be greater than 1.5"],
        ),
        (
            json!({"s": {"type": "string", "enum": ["a", "b"]}}),
            json!({"s": "c"}),
            vec![r#"spec.s: Unsupported value: "c": supported values: "a", "b""#],
        ),
        (
            json!({"s": {"type": "string", "maxLength": 3}}),
            json!({"s": "abcd"}),
            vec!["spec.s: Too long: may not be more than 3 bytes"],
        ),
        (
            json!({"s": {"type": "string", "minLength": 3}}),
            json!({"s": "ab"}),
            vec![r#"spec.s: Invalid value: "ab": spec.s in body should be at least 3 chars long"#],
        ),
        (
            json!({"s": {"type": "string", "pattern": "^[a-z]+$"}}),
            json!({"s": "A1"}),
            vec![r#"spec.s: Invalid value: "A1": spec.s in body should match '^[a-z]+$'"#],
        ),
        (
            json!({"t": {"type": "string", "format": "date-time"}}),
            json!({"t": "yesterday"}),
            vec![
                r#"spec.t: Invalid value: "yesterday": spec.t in body must be of type date-time: "yesterday""#,
            ],
        ),
        (
            json!({"t": {"type": "string", "format": "date-time"}}),
            json!({"t": "2026-01-01T00:00:00Z"}),
            vec![],
        ),
        (
            json!({"l": {"type": "array", "maxItems": 2, "items": {"type": "string"}}}),
            json!({"l": ["a", "b", "c"]}),
            vec!["spec.l: Too many: 3: must have at most 2 items"],
        ),
        (
            json!({"l": {"type": "array", "minItems": 2, "items": {"type": "string"}}}),
            json!({"l": ["a"]}),
            vec!["spec.l: Invalid value: 1: spec.l in body should have at least 2 items"],
        ),
        (
            json!({"l": {"type": "array", "items": {"type": "integer"}}}),
            json!({"l": [1, "x"]}),
            vec![
                r#"spec.l[1]: Invalid value: "string": spec.l[1] in body must be of type integer: "string""#,
            ],
        ),
        (
            json!({"l": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}}}),
            json!({"l": ["a", "b", "a"]}),
            vec![r#"spec.l[2]: Duplicate value: "a""#],
        ),
        (
            json!({"l": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                "items": {"type": "object", "properties": {"name": {"type": "string"}, "v": {"type": "integer"}}}}}),
            json!({"l": [{"name": "a", "v": 1}, {"name": "a", "v": 2}]}),
            vec![r#"spec.l[1]: Duplicate value: {"name":"a"}"#],
        ),
        (
            json!({"p": {"x-kubernetes-int-or-string": true}}),
            json!({"p": "80%"}),
            vec![],
        ),
        (
            json!({"p": {"x-kubernetes-int-or-string": true}}),
            json!({"p": true}),
            vec![
                r#"spec.p: Invalid value: "boolean": spec.p in body must be of type integer-or-string: "boolean""#,
            ],
        ),
        (
            json!({"m": {"type": "object", "additionalProperties": {"type": "integer"}}}),
            json!({"m": {"a": 1, "b": "x"}}),
            vec![
                r#"spec.m.b: Invalid value: "string": spec.m.b in body must be of type integer: "string""#,
            ],
        ),
        (
            json!({"e": {"type": "object", "x-kubernetes-embedded-resource": true, "x-kubernetes-preserve-unknown-fields": true}}),
            json!({"e": {"metadata": {"name": "x"}}}),
            vec![
                "spec.e.apiVersion: Required value",
                "spec.e.kind: Required value",
            ],
        ),
    ];
    for (props, spec, want) in cases {
        let schema = spec_schema(&props);
        let got = messages(
            &schema,
            &json!({"apiVersion": "x/v1", "kind": "X", "spec": spec}),
        );
        assert_eq!(got, want, "{props}");
    }
    // required, at the top level and nested; apiVersion/kind/metadata are not checked here.
    let schema = json!({"type": "object", "required": ["spec", "metadata"], "properties": {
        "spec": {"type": "object", "required": ["a"], "properties": {"a": {"type": "string"}}}}});
    assert_eq!(
        messages(&schema, &json!({"metadata": {}})),
        ["spec: Required value"]
    );
    assert_eq!(
        messages(&schema, &json!({"spec": {}})),
        ["spec.a: Required value"]
    );
}

#[test]
fn pruning_drops_undeclared_fields_and_reports_them() {
    let schema = json!({"type": "object", "properties": {
    "spec": {"type": "object", "properties": {
        "a": {"type": "string"},
        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
        "m": {"type": "object", "additionalProperties": {"type": "object", "properties": {"x": {"type": "integer"}}}},
        "l": {"type": "array", "items": {"type": "object", "properties": {"k": {"type": "string"}}}},
        "e": {"type": "object", "x-kubernetes-embedded-resource": true, "properties": {"spec": {"type": "object"}}},
    }}}});
    let mut object = json!({"apiVersion": "x/v1", "kind": "X", "metadata": {"name": "a"},
        "spec": {"a": "v", "b": 1, "free": {"anything": {"deep": 1}},
                 "m": {"one": {"x": 1, "y": 2}}, "l": [{"k": "v", "z": 1}],
                 "e": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "junk": 1}, "spec": {}, "other": 1}},
        "top": true});
    let mut pruned = Vec::new();
    prune(&schema, &mut object, "", true, &mut pruned);
    pruned.sort();
    assert_eq!(
        pruned,
        [
            "spec.b",
            "spec.e.metadata.junk",
            "spec.e.other",
            "spec.l[0].z",
            "spec.m.one.y",
            "top"
        ]
    );
    assert_eq!(object["spec"]["free"]["anything"]["deep"], 1);
    assert_eq!(object["metadata"]["name"], "a");
    assert_eq!(object["spec"]["e"]["metadata"]["name"], "p");
}

#[test]
fn defaults_fill_absent_and_null_fields_recursively() {
    let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "default": {}, "properties": {
        "replicas": {"type": "integer", "default": 1},
        "mode": {"type": "string", "nullable": true, "default": "auto"},
        "items": {"type": "array", "items": {"type": "object", "properties": {"w": {"type": "integer", "default": 5}}}},
    }}}});
    let cases = vec![
        (json!({}), json!({"spec": {"replicas": 1, "mode": "auto"}})),
        (
            json!({"spec": {"replicas": 3}}),
            json!({"spec": {"replicas": 3, "mode": "auto"}}),
        ),
        (
            json!({"spec": {"replicas": null, "mode": null}}),
            json!({"spec": {"replicas": 1, "mode": null}}),
        ),
        (
            json!({"spec": {"items": [{}, {"w": 2}]}}),
            json!({"spec": {"replicas": 1, "mode": "auto", "items": [{"w": 5}, {"w": 2}]}}),
        ),
    ];
    for (mut input, want) in cases {
        apply_defaults(&schema, &mut input);
        assert_eq!(input, want);
    }
}

#[test]
fn formats() {
    for (format, value, ok) in [
        ("date", "2026-01-31", true),
        ("date", "2026-02-31", false),
        ("uuid", "0b0c3a4e-1a2b-4c3d-8e9f-0a1b2c3d4e5f", true),
        ("uuid", "nope", false),
        ("ipv4", "10.0.0.1", true),
        ("ipv4", "10.0.0", false),
        ("byte", "aGk=", true),
        ("byte", "!!", false),
        ("something-else", "x", true),
    ] {
        assert_eq!(format_matches(format, value), ok, "{format} {value}");
    }
}

#[test]
fn printer_columns_and_jsonpath() {
    let object = json!({"metadata": {"name": "a", "creationTimestamp": "2026-01-01T00:00:00Z",
        "labels": {"app.kubernetes.io/name": "web"}},
        "spec": {"replicas": 3, "list": [{"n": "x"}, {"n": "y"}], "flag": true, "obj": {"k": 1}}});
    for (path, want) in [
        (".spec.replicas", Some(json!(3))),
        ("{.spec.list[1].n}", Some(json!("y"))),
        (".spec.list[-1].n", Some(json!("y"))),
        (
            ".metadata.labels['app.kubernetes.io/name']",
            Some(json!("web")),
        ),
        (".spec.missing", None),
        (".spec.list[5]", None),
    ] {
        assert_eq!(lookup(&object, path).cloned(), want, "{path}");
    }
    let columns = columns_of(&[
        json!({"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"}),
        json!({"name": "Flag", "type": "boolean", "jsonPath": ".spec.flag", "priority": 1}),
        json!({"name": "Obj", "type": "string", "jsonPath": ".spec.obj"}),
        json!({"name": "Missing", "type": "string", "jsonPath": ".spec.nothing"}),
        json!({"name": "Created", "type": "date", "jsonPath": ".metadata.creationTimestamp"}),
    ]);
    let now = 1_767_225_600 + 3 * 3600;
    assert_eq!(
        row(&columns, &object, now),
        vec![
            json!("a"),
            json!(3),
            json!(true),
            json!(r#"{"k":1}"#),
            Value::Null,
            json!("3h")
        ]
    );
    let definitions = super::columns::column_definitions(&columns);
    assert_eq!(definitions[0]["name"], "Name");
    assert_eq!(definitions[2]["priority"], 1);
    assert_eq!(
        definitions[1]["description"],
        "Custom resource definition column (in JSONPath format): .spec.replicas"
    );
    // No declared columns: NAME and AGE.
    assert_eq!(columns_of(&[]), vec![PrinterColumn::age()]);
}

fn crd(name_suffix: &str, plural: &str, kind: &str, short: &[&str]) -> Value {
    json!({"metadata": {"name": format!("{plural}.{name_suffix}"), "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"group": name_suffix, "scope": "Namespaced",
            "names": {"plural": plural, "singular": plural.trim_end_matches('s'), "kind": kind,
                      "listKind": format!("{kind}List"), "shortNames": short},
            "versions": [
                {"name": "v1", "served": true, "storage": true,
                 "schema": {"openAPIV3Schema": {"type": "object"}},
                 "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"}}},
                {"name": "v2", "served": false, "storage": false,
                 "schema": {"openAPIV3Schema": {"type": "object"}}}]}})
}

#[test]
fn names_are_accepted_first_come_first_served_within_a_group() {
    let mut taken = BTreeSet::new();
    let first = desired_status(
        &crd("example.com", "widgets", "Widget", &["wd"]),
        &mut taken,
    );
    assert_eq!(first["conditions"][0]["type"], "NamesAccepted");
    assert_eq!(first["conditions"][0]["status"], "True");
    assert_eq!(first["conditions"][1]["type"], "Established");
    assert_eq!(first["conditions"][1]["status"], "True");
    assert_eq!(first["acceptedNames"]["kind"], "Widget");
    assert_eq!(first["storedVersions"], json!(["v1"]));
    // Same short name in the same group: not accepted; in another group: fine.
    let clash = desired_status(
        &crd("example.com", "gadgets", "Gadget", &["wd"]),
        &mut taken,
    );
    assert_eq!(clash["conditions"][0]["status"], "False");
    assert_eq!(
        clash["conditions"][0]["message"],
        r#""wd" is already in use"#
    );
    assert_eq!(clash["conditions"][1]["reason"], "NotAccepted");
    let other = desired_status(&crd("other.io", "gadgets", "Widget", &["wd"]), &mut taken);
    assert_eq!(other["conditions"][1]["status"], "True");
    // A kind clash.
    let kind_clash = desired_status(&crd("example.com", "things", "Widget", &[]), &mut taken);
    assert_eq!(kind_clash["conditions"][0]["reason"], "KindConflict");
}

#[test]
fn served_versions_become_catalogue_entries() {
    let mut object = crd("example.com", "widgets", "Widget", &["wd"]);
    let mut taken = BTreeSet::new();
    object["status"] = desired_status(&object, &mut taken);
    let defs = resource_defs(&object);
    assert_eq!(defs.len(), 1, "v2 is not served");
    let def = &defs[0];
    assert_eq!(def.api_version(), "example.com/v1");
    assert_eq!(def.key(Some("d"), "w"), "/registry/example.com/widgets/d/w");
    assert_eq!(def.short_names, ["wd"]);
    assert!(def.has_subresource("status") && def.has_subresource("scale"));
    let custom = def.custom.as_ref().expect("custom");
    assert_eq!(custom.storage_api_version, "example.com/v1");
    let paths = custom.scale.as_ref().expect("scale");
    let mut widget = json!({"metadata": {"name": "w"}, "spec": {}, "status": {"replicas": 2}});
    set_path(&mut widget, &paths.spec_replicas, json!(4));
    let scale = scale_of_custom(paths, &widget);
    assert_eq!(scale["spec"]["replicas"], 4);
    assert_eq!(scale["status"]["replicas"], 2);
    assert!(scale["status"].get("selector").is_none());
    // The OpenAPI schema carries the group/version/kind.
    let mut doc = json!({"paths": {}});
    let arcs: Vec<std::sync::Arc<_>> = defs.iter().cloned().map(std::sync::Arc::new).collect();
    super::openapi::add_schemas(arcs.iter(), &mut doc);
    let schema = &doc["components"]["schemas"]["com.example.v1.Widget"];
    assert_eq!(
        schema["x-kubernetes-group-version-kind"][0]["kind"],
        "Widget"
    );
    assert!(schema["properties"]["metadata"].is_object());
    assert!(
        doc["components"]["schemas"]["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"].is_object()
    );
}

#[test]
fn discovery_lists_custom_groups_and_its_etag_changes() {
    use crate::apiserver::catalog::Catalog;
    use crate::apiserver::discovery::{aggregated, aggregated_etag, aggregated_response};
    let mut catalog = Catalog::builtin();
    let before = aggregated(&catalog, false);
    let mut object = crd("example.com", "widgets", "Widget", &["wd"]);
    object["spec"]["names"]["categories"] = json!(["all"]);
    object["status"] = desired_status(&object, &mut BTreeSet::new());
    for def in resource_defs(&object) {
        catalog.insert(def);
    }
    let after = aggregated(&catalog, false);
    assert_ne!(aggregated_etag(&before), aggregated_etag(&after));
    let group = after["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|g| g["metadata"]["name"] == "example.com")
        .expect("custom group");
    let widgets = &group["versions"][0]["resources"][0];
    assert_eq!(widgets["resource"], "widgets");
    assert_eq!(widgets["shortNames"], json!(["wd"]));
    assert_eq!(widgets["categories"], json!(["all"]));
    let etag = aggregated_etag(&after);
    assert_eq!(aggregated_response(&after, Some(&etag)).status(), 304);
    let fresh = aggregated_response(&after, Some(&aggregated_etag(&before)));
    assert_eq!(fresh.status(), 200);
    assert_eq!(fresh.headers()["etag"], etag.as_str());
}
