//! Strategic merge patch semantics on a small schema that has one field of each flavour.

use std::sync::OnceLock;

use super::{assert_json_eq, json};
use crate::apiserver::patch::{
    PatchError, SchemaGraph, SchemaNode, StrategicFailure, apply_strategic_merge_patch,
};

/// `item` has: a merging list of items keyed by `name`, a non-merging one, merging and
/// non-merging int lists, a plain map, a `replace` map, a `retainKeys` map, a
/// `merge,retainKeys` list, a merging list whose schema is the item itself (a Go pointer to a
/// list) and a field with an invalid strategy.
const SCHEMA: &str = r##"{
  "item": {"type": "object", "properties": {
    "name": {"type": "string"}, "value": {"type": "string"}, "other": {"type": "string"},
    "mergingList": {"type": "array", "items": {"$ref": "#/components/schemas/item"},
      "x-kubernetes-patch-strategy": "merge", "x-kubernetes-patch-merge-key": "name"},
    "nonMergingList": {"type": "array", "items": {"$ref": "#/components/schemas/item"}},
    "mergingIntList": {"type": "array", "items": {"type": "integer"}, "x-kubernetes-patch-strategy": "merge"},
    "nonMergingIntList": {"type": "array", "items": {"type": "integer"}},
    "simpleMap": {"type": "object", "additionalProperties": {"type": "string"}},
    "replacingMap": {"type": "object", "additionalProperties": {"type": "string"}, "x-kubernetes-patch-strategy": "replace"},
    "retainKeysMap": {"allOf": [{"$ref": "#/components/schemas/item"}], "x-kubernetes-patch-strategy": "retainKeys"},
    "retainKeysMergingList": {"type": "array", "items": {"$ref": "#/components/schemas/item"},
      "x-kubernetes-patch-strategy": "merge,retainKeys", "x-kubernetes-patch-merge-key": "name"},
    "pointerList": {"allOf": [{"$ref": "#/components/schemas/item"}],
      "x-kubernetes-patch-strategy": "merge", "x-kubernetes-patch-merge-key": "name"},
    "badStrategyList": {"type": "array", "items": {"type": "string"}, "x-kubernetes-patch-strategy": "merge,replace"}
  }}
}"##;

fn schema() -> SchemaNode<'static> {
    static GRAPH: OnceLock<SchemaGraph> = OnceLock::new();
    let graph = GRAPH.get_or_init(|| {
        let defs = json(SCHEMA);
        SchemaGraph::from_definitions(defs.as_object().expect("object"))
    });
    graph.definition("item").expect("item")
}

/// (case, original, patch, result)
const OK: &[(&str, &str, &str, &str)] = &[
    (
        "add field",
        r#"{"name":"1"}"#,
        r#"{"value":"1"}"#,
        r#"{"name":"1","value":"1"}"#,
    ),
    (
        "null deletes",
        r#"{"name":"1","value":"1"}"#,
        r#"{"value":null,"gone":null}"#,
        r#"{"name":"1"}"#,
    ),
    (
        "nested map merges",
        r#"{"simpleMap":{"a":"1","b":"2"}}"#,
        r#"{"simpleMap":{"b":null,"c":"3"}}"#,
        r#"{"simpleMap":{"a":"1","c":"3"}}"#,
    ),
    (
        "$patch: replace on a map",
        r#"{"simpleMap":{"a":"1","b":"2"}}"#,
        r#"{"simpleMap":{"$patch":"replace","c":"3"}}"#,
        r#"{"simpleMap":{"c":"3"}}"#,
    ),
    (
        "$patch: delete on a map empties it",
        r#"{"simpleMap":{"a":"1"},"name":"x"}"#,
        r#"{"simpleMap":{"$patch":"delete"}}"#,
        r#"{"simpleMap":{},"name":"x"}"#,
    ),
    (
        "a $patch map where there is no value sets nothing (upstream)",
        r#"{"name":"x"}"#,
        r#"{"simpleMap":{"$patch":"replace","c":"3"}}"#,
        r#"{"name":"x"}"#,
    ),
    (
        "$patch: replace of the whole object",
        r#"{"name":"1","value":"1"}"#,
        r#"{"$patch":"replace","other":"a"}"#,
        r#"{"other":"a"}"#,
    ),
    (
        "field strategy replace",
        r#"{"replacingMap":{"a":"1"}}"#,
        r#"{"replacingMap":{"b":"2"}}"#,
        r#"{"replacingMap":{"b":"2"}}"#,
    ),
    (
        "a value of another type replaces",
        r#"{"simpleMap":{"a":"1"},"value":"v"}"#,
        r#"{"simpleMap":"s","value":{"x":null,"y":"1"}}"#,
        r#"{"simpleMap":"s","value":{"y":"1"}}"#,
    ),
    (
        "merging list: merge by key; a new element goes before the server elements after it",
        r#"{"mergingList":[{"name":"1","value":"a"},{"name":"2"}]}"#,
        r#"{"mergingList":[{"name":"3","value":"c"},{"name":"2","value":"b"}]}"#,
        r#"{"mergingList":[{"name":"3","value":"c"},{"name":"1","value":"a"},{"name":"2","value":"b"}]}"#,
    ),
    (
        "merging list: a new element after a known one stays after it",
        r#"{"mergingList":[{"name":"1"},{"name":"2"}]}"#,
        r#"{"mergingList":[{"name":"2","value":"b"},{"name":"3"}]}"#,
        r#"{"mergingList":[{"name":"1"},{"name":"2","value":"b"},{"name":"3"}]}"#,
    ),
    (
        "merging list: patch order wins for the elements it names",
        r#"{"mergingList":[{"name":"1"},{"name":"2","value":"b"},{"name":"3"}]}"#,
        r#"{"mergingList":[{"name":"3","value":"c"},{"name":"1","value":"a"}]}"#,
        r#"{"mergingList":[{"name":"2","value":"b"},{"name":"3","value":"c"},{"name":"1","value":"a"}]}"#,
    ),
    (
        "merging list: nested null deletes a field of an element",
        r#"{"mergingList":[{"name":"1","value":"a","other":"o"}]}"#,
        r#"{"mergingList":[{"name":"1","value":null}]}"#,
        r#"{"mergingList":[{"name":"1","other":"o"}]}"#,
    ),
    (
        "merging list: nested merging list",
        r#"{"mergingList":[{"name":"1","mergingList":[{"name":"a","value":"1"}]}]}"#,
        r#"{"mergingList":[{"name":"1","mergingList":[{"name":"a","other":"x"},{"name":"b"}]}]}"#,
        r#"{"mergingList":[{"name":"1","mergingList":[{"name":"a","value":"1","other":"x"},{"name":"b"}]}]}"#,
    ),
    (
        "$patch: delete of elements, duplicates included",
        r#"{"mergingList":[{"name":"1"},{"name":"1"},{"name":"2","value":"a"},{"name":"3"}]}"#,
        r#"{"mergingList":[{"name":"1","$patch":"delete"},{"name":"3","$patch":"delete"},{"name":"9","$patch":"delete"}]}"#,
        r#"{"mergingList":[{"name":"2","value":"a"}]}"#,
    ),
    (
        "$patch: delete and add in one list",
        r#"{"mergingList":[{"name":"1"},{"name":"2"}]}"#,
        r#"{"mergingList":[{"name":"1","$patch":"delete"},{"name":"4","value":"d"}]}"#,
        r#"{"mergingList":[{"name":"4","value":"d"},{"name":"2"}]}"#,
    ),
    (
        "$patch: replace of a list",
        r#"{"mergingList":[{"name":"1"},{"name":"2"}]}"#,
        r#"{"mergingList":[{"name":"3","value":"c","other":null},{"$patch":"replace"}]}"#,
        r#"{"mergingList":[{"name":"3","value":"c"}]}"#,
    ),
    (
        "a list without merge strategy is replaced",
        r#"{"nonMergingList":[{"name":"1"},{"name":"2"}],"nonMergingIntList":[1,2]}"#,
        r#"{"nonMergingList":[{"name":"3"}],"nonMergingIntList":[2,3]}"#,
        r#"{"nonMergingList":[{"name":"3"}],"nonMergingIntList":[2,3]}"#,
    ),
    (
        "merging int list is a set (new values first, like upstream)",
        r#"{"mergingIntList":[1,2,2]}"#,
        r#"{"mergingIntList":[3,2]}"#,
        r#"{"mergingIntList":[3,1,2]}"#,
    ),
    (
        "merging int list keeps the patch's order",
        r#"{"mergingIntList":[1,2,3]}"#,
        r#"{"mergingIntList":[3,1]}"#,
        r#"{"mergingIntList":[2,3,1]}"#,
    ),
    (
        "$deleteFromPrimitiveList on a merging list",
        r#"{"mergingIntList":[1,2,3,2]}"#,
        r#"{"$deleteFromPrimitiveList/mergingIntList":[2,9]}"#,
        r#"{"mergingIntList":[1,3]}"#,
    ),
    (
        "$deleteFromPrimitiveList on a non-merging list",
        r#"{"nonMergingIntList":[1,2,3]}"#,
        r#"{"$deleteFromPrimitiveList/nonMergingIntList":[2]}"#,
        r#"{"nonMergingIntList":[1,3]}"#,
    ),
    (
        "$deleteFromPrimitiveList of a missing list adds nothing",
        r#"{"name":"1"}"#,
        r#"{"$deleteFromPrimitiveList/mergingIntList":[2]}"#,
        r#"{"name":"1"}"#,
    ),
    (
        "$deleteFromPrimitiveList with an addition",
        r#"{"mergingIntList":[1,2]}"#,
        r#"{"mergingIntList":[3],"$deleteFromPrimitiveList/mergingIntList":[1]}"#,
        r#"{"mergingIntList":[3,2]}"#,
    ),
    (
        "$setElementOrder with a new element",
        r#"{"mergingList":[{"name":"1","other":"a"},{"name":"2","value":"2"}]}"#,
        r#"{"$setElementOrder/mergingList":[{"name":"1"},{"name":"4"},{"name":"2"},{"name":"3"}],
            "mergingList":[{"name":"4","value":"4"},{"name":"3","value":"3"}]}"#,
        r#"{"mergingList":[{"name":"1","other":"a"},{"name":"4","value":"4"},{"name":"2","value":"2"},{"name":"3","value":"3"}]}"#,
    ),
    (
        "$setElementOrder alone reorders; server-only elements keep their place",
        r#"{"mergingList":[{"name":"1","other":"a"},{"name":"2"},{"name":"7"},{"name":"9"},{"name":"8"},{"name":"3"},{"name":"4"}]}"#,
        r#"{"$setElementOrder/mergingList":[{"name":"2"},{"name":"1"},{"name":"4"},{"name":"3"}]}"#,
        r#"{"mergingList":[{"name":"2"},{"name":"1","other":"a"},{"name":"7"},{"name":"9"},{"name":"8"},{"name":"4"},{"name":"3"}]}"#,
    ),
    (
        "$setElementOrder with a deletion",
        r#"{"mergingList":[{"name":"1"},{"name":"2"},{"name":"3"}]}"#,
        r#"{"$setElementOrder/mergingList":[{"name":"3"},{"name":"1"}],"mergingList":[{"name":"2","$patch":"delete"}]}"#,
        r#"{"mergingList":[{"name":"3"},{"name":"1"}]}"#,
    ),
    (
        "$setElementOrder with deletion and addition: upstream's order (server-only d stays before c)",
        r#"{"mergingList":[{"name":"a"},{"name":"b","value":"1"},{"name":"d","value":"2"}]}"#,
        r#"{"$setElementOrder/mergingList":[{"name":"b"},{"name":"c"}],"mergingList":[{"name":"c"},{"name":"a","$patch":"delete"}]}"#,
        r#"{"mergingList":[{"name":"b","value":"1"},{"name":"d","value":"2"},{"name":"c"}]}"#,
    ),
    (
        "$setElementOrder with more additions than deletions",
        r#"{"mergingList":[{"name":"a"},{"name":"b"},{"name":"d"}]}"#,
        r#"{"$setElementOrder/mergingList":[{"name":"b"},{"name":"x"},{"name":"y"}],
            "mergingList":[{"name":"x"},{"name":"y"},{"name":"a","$patch":"delete"}]}"#,
        r#"{"mergingList":[{"name":"b"},{"name":"d"},{"name":"x"},{"name":"y"}]}"#,
    ),
    (
        "a list field whose schema is its element's (pointer to a list)",
        r#"{"pointerList":[{"name":"1","pointerList":[{"name":"a"},{"name":"b","value":"2"}]},{"name":"2"}]}"#,
        r#"{"$setElementOrder/pointerList":[{"name":"1"},{"name":"2"}],"pointerList":[{"name":"1",
            "$setElementOrder/pointerList":[{"name":"a"},{"name":"b"}],"pointerList":[{"name":"a","value":"1"}]}]}"#,
        r#"{"pointerList":[{"name":"1","pointerList":[{"name":"a","value":"1"},{"name":"b","value":"2"}]},{"name":"2"}]}"#,
    ),
    (
        "$setElementOrder of an int list",
        r#"{"mergingIntList":[1,2,9]}"#,
        r#"{"$setElementOrder/mergingIntList":[3,2,1],"mergingIntList":[3]}"#,
        r#"{"mergingIntList":[3,2,1,9]}"#,
    ),
    (
        "$setElementOrder with a list the server lacks",
        r#"{}"#,
        r#"{"$setElementOrder/mergingList":[{"name":"b"},{"name":"a"}],"mergingList":[{"name":"b"},{"name":"a","value":null}]}"#,
        r#"{"mergingList":[{"name":"b"},{"name":"a"}]}"#,
    ),
    (
        "$setElementOrder of a list nobody has",
        r#"{"name":"1"}"#,
        r#"{"$setElementOrder/mergingList":[{"name":"a"}]}"#,
        r#"{"name":"1"}"#,
    ),
    (
        "$retainKeys clears what it does not list",
        r#"{"retainKeysMap":{"name":"n","value":"v","other":"o"}}"#,
        r#"{"retainKeysMap":{"$retainKeys":["name","other"],"other":"p"}}"#,
        r#"{"retainKeysMap":{"name":"n","other":"p"}}"#,
    ),
    (
        "$retainKeys in list elements",
        r#"{"retainKeysMergingList":[{"name":"a","value":"1","other":"2"},{"name":"b","value":"3"}]}"#,
        r#"{"retainKeysMergingList":[{"$retainKeys":["name","other"],"name":"a","value":null,"other":"x"}]}"#,
        r#"{"retainKeysMergingList":[{"name":"a","other":"x"},{"name":"b","value":"3"}]}"#,
    ),
    (
        "fields the schema does not know merge like a merge patch",
        r#"{"unknownList":[{"name":"1","a":1}],"unknownMap":{"a":1,"b":{"c":2}}}"#,
        r#"{"unknownList":[{"name":"1","b":2}],"unknownMap":{"a":null,"b":{"d":3}}}"#,
        r#"{"unknownList":[{"name":"1","b":2}],"unknownMap":{"b":{"c":2,"d":3}}}"#,
    ),
    (
        "directives are stripped from values taken over",
        r#"{"name":"1"}"#,
        r#"{"simpleMap":{"a":"1","$retainKeys":["a"],"b":null},"mergingList":[{"name":"a","$setElementOrder/x":[1]},{"name":"b","$patch":"delete"}]}"#,
        r#"{"name":"1","simpleMap":{"a":"1"},"mergingList":[{"name":"a"}]}"#,
    ),
    (
        "an empty patch changes nothing",
        r#"{"name":"1","mergingList":[{"name":"a"}]}"#,
        r#"{}"#,
        r#"{"name":"1","mergingList":[{"name":"a"}]}"#,
    ),
];

#[test]
fn strategic_merge_semantics() {
    for (case, original, patch, want) in OK {
        match apply_strategic_merge_patch(&json(original), &json(patch), schema()) {
            Ok(got) => assert_json_eq(&got, &json(want), case),
            Err(e) => panic!("{case}: {e}"),
        }
    }
}

#[test]
fn malformed_patches_fail_with_upstreams_status() {
    use StrategicFailure as F;
    let cases: Vec<(&str, &str, F, u16)> = vec![
        (
            r#"{"mergingList":[{"name":"1"}]}"#,
            r#"{"mergingList":[{"value":"x"}]}"#,
            F::NoMergeKey {
                element: r#"{"value":"x"}"#.into(),
                key: "name".into(),
            },
            500,
        ),
        (
            r#"{"mergingList":[{"value":"1"}]}"#,
            r#"{"mergingList":[{"name":"x"}]}"#,
            F::NoMergeKey {
                element: r#"{"value":"1"}"#.into(),
                key: "name".into(),
            },
            500,
        ),
        (
            r#"{"mergingList":[{"name":"1"}]}"#,
            r#"{"mergingList":[{"$patch":"delete"}]}"#,
            F::NoMergeKey {
                element: r#"{"$patch":"delete"}"#.into(),
                key: "name".into(),
            },
            500,
        ),
        (
            r#"{"simpleMap":{"a":"1"}}"#,
            r#"{"simpleMap":{"$patch":"merge"}}"#,
            F::BadPatchType {
                value: r#""merge""#.into(),
                map: r#"{"$patch":"merge"}"#.into(),
            },
            500,
        ),
        (
            r#"{"mergingList":[{"name":"1"}]}"#,
            r#"{"mergingList":[{"name":"1","$patch":"merge"}]}"#,
            F::MergeDirectiveInList,
            500,
        ),
        (
            r#"{"mergingList":[{"name":"1"}]}"#,
            r#"{"mergingList":[{"name":"1","$patch":"bogus"}]}"#,
            F::BadPatchType {
                value: r#""bogus""#.into(),
                map: r#"{"$patch":"bogus","name":"1"}"#.into(),
            },
            500,
        ),
        (
            r#"{"mergingIntList":[1]}"#,
            r#"{"mergingIntList":[[2]]}"#,
            F::NoListOfLists,
            422,
        ),
        (
            r#"{"mergingIntList":[1]}"#,
            r#"{"mergingIntList":["2"]}"#,
            F::MixedElementTypes,
            500,
        ),
        (
            r#"{"mergingIntList":[1]}"#,
            r#"{"mergingIntList":[1.5]}"#,
            F::MixedElementTypes,
            500,
        ),
        (
            r#"{"mergingList":[{"name":"1"},{"name":"2"}]}"#,
            r#"{"$setElementOrder/mergingList":[{"name":"1"},{"name":"2"}],"mergingList":[{"name":"2"},{"name":"1"}]}"#,
            F::SetElementOrderMismatch,
            500,
        ),
        (
            r#"{"mergingList":[{"name":"1"}]}"#,
            r#"{"$setElementOrder/mergingList":[{"name":"1"}],"mergingList":[{"name":"3"}]}"#,
            F::SetElementOrderMismatch,
            500,
        ),
        (
            r#"{}"#,
            r#"{"$setElementOrder/mergingList":{"name":"1"}}"#,
            F::BadArgType {
                expected: "array",
                found: "object",
            },
            500,
        ),
        (
            r#"{"simpleMap":{"a":"1"}}"#,
            r#"{"simpleMap":{"$retainKeys":["a"],"b":"2"}}"#,
            F::BadPatchFormatForRetainKeys,
            400,
        ),
        (
            r#"{"simpleMap":{"a":"1"}}"#,
            r#"{"simpleMap":{"$retainKeys":"a"}}"#,
            F::BadPatchFormatForRetainKeys,
            400,
        ),
        (
            r#"{"mergingIntList":[1]}"#,
            r#"{"$deleteFromPrimitiveList":[1]}"#,
            F::BadPatchFormatForPrimitiveList,
            400,
        ),
        (
            r#"{"mergingIntList":[1]}"#,
            r#"{"$deleteFromPrimitiveListX/mergingIntList":[1]}"#,
            F::BadPatchFormatForPrimitiveList,
            400,
        ),
        (
            r#"{"mergingIntList":[1]}"#,
            r#"{"$setElementOrder":[1]}"#,
            F::BadPatchFormatForSetElementOrderList,
            400,
        ),
        (
            r#"{"badStrategyList":["a"]}"#,
            r#"{"badStrategyList":["b"]}"#,
            F::BadPatchStrategy,
            500,
        ),
    ];
    for (original, patch, failure, status) in cases {
        match apply_strategic_merge_patch(&json(original), &json(patch), schema()) {
            Err(e @ PatchError::Strategic { .. }) => {
                assert_eq!(e.status_code(), status, "{patch}: {e}");
                let PatchError::Strategic { failure: got, .. } = e else {
                    unreachable!()
                };
                assert_eq!(got, failure, "{patch}");
            }
            other => panic!("{patch}: expected {failure:?}, got {other:?}"),
        }
    }
}

#[test]
fn errors_say_where() {
    let original = json(r#"{"mergingList":[{"name":"a","mergingList":[{"name":"x"}]}]}"#);
    let patch = json(r#"{"mergingList":[{"name":"a","mergingList":[{"value":"1"}]}]}"#);
    let err = apply_strategic_merge_patch(&original, &patch, schema()).expect_err("no merge key");
    let PatchError::Strategic { path, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(path, ".mergingList[name=a].mergingList");
    assert!(
        err.to_string()
            .contains("does not contain declared merge key: name"),
        "{err}"
    );
}

#[test]
fn a_null_patch_is_empty_as_upstream_decodes_it() {
    let original = json(r#"{"name":"1"}"#);
    let got = apply_strategic_merge_patch(&original, &json("null"), schema()).expect("no-op");
    assert_eq!(got, original);
}

#[test]
fn non_object_patches_are_400() {
    for patch in ["[]", "\"x\"", "1"] {
        let err =
            apply_strategic_merge_patch(&json("{}"), &json(patch), schema()).expect_err(patch);
        assert!(
            matches!(err, PatchError::NotAnObject { .. }),
            "{patch}: {err:?}"
        );
        assert_eq!(err.status_code(), 400);
    }
}
