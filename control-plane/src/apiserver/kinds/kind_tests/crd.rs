//! CustomResourceDefinitions.

use serde_json::{Value, json};

use super::*;

const G: &str = "apiextensions.k8s.io";

fn crd() -> Value {
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com", "creationTimestamp": "2025-05-30T08:00:00Z"},
        "spec": {"group": "example.com", "scope": "Namespaced",
                 "names": {"plural": "widgets", "kind": "Widget", "shortNames": ["wd"]},
                 "versions": [{"name": "v1", "served": true, "storage": true,
                     "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                         "spec": {"type": "object", "properties": {"size": {"type": "integer"},
                                   "extra": {"x-kubernetes-preserve-unknown-fields": true}}}}}}}]}})
}

#[test]
fn defaults_and_create() {
    let mut d = defaulted(G, "CustomResourceDefinition", crd());
    assert_eq!(d["spec"]["names"]["singular"], "widget");
    assert_eq!(d["spec"]["names"]["listKind"], "WidgetList");
    assert_eq!(d["spec"]["conversion"], json!({"strategy": "None"}));
    strategy_for(G, "CustomResourceDefinition").prepare_for_create(&mut d);
    assert_eq!(d["status"]["storedVersions"], json!(["v1"]));
    assert_eq!(
        causes(G, "CustomResourceDefinition", d.clone(), None),
        Vec::<String>::new()
    );
    assert_eq!(
        row(G, "CustomResourceDefinition", &d),
        [json!("widgets.example.com"), json!("2025-05-30T08:00:00Z")]
    );
}

#[test]
fn causes_of_bad_definitions() {
    let with = |change: &dyn Fn(&mut Value)| {
        let mut c = crd();
        change(&mut c);
        causes(G, "CustomResourceDefinition", c, None)
    };
    assert_cause(
        &with(&|c| c["metadata"]["name"] = json!("gadgets.example.com")),
        "metadata.name: Invalid value: \"gadgets.example.com\": must be spec.names.plural+\".\"+spec.group",
    );
    assert_cause(
        &with(&|c| {
            c["spec"]["group"] = json!("example");
            c["metadata"]["name"] = json!("widgets.example");
        }),
        "spec.group: Invalid value: \"example\": should be a domain with at least one dot",
    );
    assert_cause(
        &with(&|c| c["spec"]["versions"][0]["storage"] = json!(false)),
        "spec.versions: Invalid value: []apiextensions.CustomResourceDefinitionVersion{...}: must have exactly one version marked as storage version",
    );
    assert_cause(
        &with(&|c| {
            c["spec"]["versions"][0]
                .as_object_mut()
                .unwrap()
                .remove("schema");
        }),
        "spec.versions[0].schema.openAPIV3Schema: Required value: schemas are required",
    );
    assert_cause(
        &with(&|c| {
            c["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
                ["size"] = json!({})
        }),
        "spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[size].type: Required value: must not be empty for specified object fields",
    );
    assert_cause(
        &with(&|c| c["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["type"] = json!("string")),
        "spec.versions[0].schema.openAPIV3Schema.type: Invalid value: \"string\": must be object at the root",
    );
    assert_cause(
        &with(&|c| c["spec"]["names"]["kind"] = json!("")),
        "spec.names.kind: Required value",
    );
    assert_cause(
        &with(&|c| c["spec"]["names"]["plural"] = json!("Widgets")),
        "spec.names.plural: Invalid value: \"Widgets\": a DNS-1035 label",
    );
    assert_cause(
        &with(&|c| c["spec"]["scope"] = json!("Global")),
        "spec.scope: Unsupported value: \"Global\": supported values: \"Cluster\", \"Namespaced\"",
    );
    let old = crd();
    let mut regrouped = crd();
    regrouped["spec"]["names"]["plural"] = json!("gizmos");
    assert_cause(
        &causes(G, "CustomResourceDefinition", regrouped, Some(old)),
        "spec.names.plural: Invalid value: \"gizmos\": field is immutable",
    );
}

#[test]
fn structural_schema_rules() {
    let with_spec = |spec: Value| {
        let mut c = crd();
        c["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"] = spec;
        causes(G, "CustomResourceDefinition", c, None)
    };
    let root = "spec.versions[0].schema.openAPIV3Schema.properties[spec]";
    for (spec, want) in [
        (
            json!({"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": {"type": "string"}}),
            format!(
                "{root}.additionalProperties: Forbidden: additionalProperties and properties are mutual exclusive"
            ),
        ),
        (
            json!({"type": "object", "additionalProperties": {"description": "no type"}}),
            format!(
                "{root}.additionalProperties.type: Required value: must not be empty for specified object fields"
            ),
        ),
        (
            json!({"type": "array"}),
            format!("{root}.items: Required value: must be specified"),
        ),
        (
            json!({"type": "string", "x-kubernetes-int-or-string": true}),
            format!(
                "{root}.type: Invalid value: \"string\": must be empty if x-kubernetes-int-or-string is true"
            ),
        ),
        (
            json!({"type": "string", "x-kubernetes-embedded-resource": true}),
            format!(
                "{root}.type: Invalid value: \"string\": must be object if x-kubernetes-embedded-resource is true"
            ),
        ),
        (
            json!({"type": "object", "x-kubernetes-preserve-unknown-fields": false}),
            format!(
                "{root}.x-kubernetes-preserve-unknown-fields: Invalid value: false: must be true or undefined"
            ),
        ),
        (
            json!({"type": "array", "items": {"type": "object"}, "x-kubernetes-list-type": "map"}),
            format!(
                "{root}.x-kubernetes-list-map-keys: Required value: must not be empty if x-kubernetes-list-type is map"
            ),
        ),
        (
            json!({"type": "string", "x-kubernetes-list-type": "set"}),
            format!(
                "{root}.x-kubernetes-list-type: Invalid value: \"set\": must only be used if type is array"
            ),
        ),
    ] {
        assert_cause(&with_spec(spec), &want);
    }
    let mut c = crd();
    c["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["metadata"] =
        json!({"type": "object", "properties": {"labels": {"type": "object"}}});
    assert_cause(
        &causes(G, "CustomResourceDefinition", c, None),
        "spec.versions[0].schema.openAPIV3Schema.properties[metadata]: Forbidden: must not specify anything other than name and generateName, but metadata is implicitly specified",
    );
    let mut c = crd();
    c["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["metadata"] = json!({
        "type": "object", "properties": {"name": {"type": "string", "maxLength": 20}}});
    assert_eq!(
        causes(G, "CustomResourceDefinition", c, None),
        Vec::<String>::new()
    );
}
