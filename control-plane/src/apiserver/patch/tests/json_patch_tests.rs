//! JSON patch (RFC 6902) as upstream applies it.

use serde_json::json;

use super::{assert_json_eq, deployment, json};
use crate::apiserver::patch::{
    JsonPatchFailure, MAX_JSON_PATCH_OPERATIONS, PatchError, apply_json_patch,
};

const DOC: &str = r#"{"a": {"b": "c", "d/e": 1, "f~g": 2}, "list": [1, 2, 3], "n": null}"#;

/// (case, patch, expected document)
const OK: &[(&str, &str, &str)] = &[
    (
        "add member",
        r#"[{"op":"add","path":"/a/x","value":true}]"#,
        r#"{"a":{"b":"c","d/e":1,"f~g":2,"x":true},"list":[1,2,3],"n":null}"#,
    ),
    (
        "add replaces a member",
        r#"[{"op":"add","path":"/a/b","value":"z"}]"#,
        r#"{"a":{"b":"z","d/e":1,"f~g":2},"list":[1,2,3],"n":null}"#,
    ),
    (
        "add inserts at index",
        r#"[{"op":"add","path":"/list/1","value":9}]"#,
        r#"{"a":{"b":"c","d/e":1,"f~g":2},"list":[1,9,2,3],"n":null}"#,
    ),
    (
        "add at length appends",
        r#"[{"op":"add","path":"/list/3","value":9}]"#,
        r#"{"a":{"b":"c","d/e":1,"f~g":2},"list":[1,2,3,9],"n":null}"#,
    ),
    (
        "add with - appends",
        r#"[{"op":"add","path":"/list/-","value":9}]"#,
        r#"{"a":{"b":"c","d/e":1,"f~g":2},"list":[1,2,3,9],"n":null}"#,
    ),
    (
        "add with negative index (upstream extension)",
        r#"[{"op":"add","path":"/list/-1","value":9}]"#,
        r#"{"a":{"b":"c","d/e":1,"f~g":2},"list":[1,2,3,9],"n":null}"#,
    ),
    (
        "add without value stores null",
        r#"[{"op":"add","path":"/z"}]"#,
        r#"{"a":{"b":"c","d/e":1,"f~g":2},"list":[1,2,3],"n":null,"z":null}"#,
    ),
    (
        "~1 and ~0 escapes",
        r#"[{"op":"replace","path":"/a/d~1e","value":5},{"op":"remove","path":"/a/f~0g"}]"#,
        r#"{"a":{"b":"c","d/e":5},"list":[1,2,3],"n":null}"#,
    ),
    (
        "remove member",
        r#"[{"op":"remove","path":"/a"}]"#,
        r#"{"list":[1,2,3],"n":null}"#,
    ),
    (
        "remove element",
        r#"[{"op":"remove","path":"/list/0"}]"#,
        r#"{"a":{"b":"c","d/e":1,"f~g":2},"list":[2,3],"n":null}"#,
    ),
    (
        "remove last element by -1",
        r#"[{"op":"remove","path":"/list/-1"}]"#,
        r#"{"a":{"b":"c","d/e":1,"f~g":2},"list":[1,2],"n":null}"#,
    ),
    (
        "replace element",
        r#"[{"op":"replace","path":"/list/2","value":"x"}]"#,
        r#"{"a":{"b":"c","d/e":1,"f~g":2},"list":[1,2,"x"],"n":null}"#,
    ),
    (
        "replace of a missing member adds it (upstream)",
        r#"[{"op":"replace","path":"/new","value":1}]"#,
        r#"{"a":{"b":"c","d/e":1,"f~g":2},"list":[1,2,3],"n":null,"new":1}"#,
    ),
    (
        "replace the whole document",
        r#"[{"op":"replace","path":"","value":{"k":1}}]"#,
        r#"{"k":1}"#,
    ),
    (
        "move member",
        r#"[{"op":"move","from":"/a/b","path":"/moved"}]"#,
        r#"{"a":{"d/e":1,"f~g":2},"list":[1,2,3],"moved":"c","n":null}"#,
    ),
    (
        "move element within a list",
        r#"[{"op":"move","from":"/list/0","path":"/list/-"}]"#,
        r#"{"a":{"b":"c","d/e":1,"f~g":2},"list":[2,3,1],"n":null}"#,
    ),
    (
        "copy",
        r#"[{"op":"copy","from":"/a","path":"/list/0"}]"#,
        r#"{"a":{"b":"c","d/e":1,"f~g":2},"list":[{"b":"c","d/e":1,"f~g":2},1,2,3],"n":null}"#,
    ),
    (
        "copy from a missing member copies null (upstream)",
        r#"[{"op":"copy","from":"/nope","path":"/c"}]"#,
        r#"{"a":{"b":"c","d/e":1,"f~g":2},"c":null,"list":[1,2,3],"n":null}"#,
    ),
    (
        "test passes then add",
        r#"[{"op":"test","path":"/a/b","value":"c"},{"op":"add","path":"/t","value":1}]"#,
        r#"{"a":{"b":"c","d/e":1,"f~g":2},"list":[1,2,3],"n":null,"t":1}"#,
    ),
    (
        "test of null matches a missing member (upstream)",
        r#"[{"op":"test","path":"/missing","value":null}]"#,
        DOC,
    ),
    (
        "test of null matches null",
        r#"[{"op":"test","path":"/n","value":null}]"#,
        DOC,
    ),
    (
        "test of a list",
        r#"[{"op":"test","path":"/list","value":[1,2,3]}]"#,
        DOC,
    ),
    (
        "test of the whole document",
        r#"[{"op":"test","path":"","value":{"a":{"b":"c","d/e":1,"f~g":2},"list":[1,2,3],"n":null}}]"#,
        DOC,
    ),
    ("empty patch", "[]", DOC),
];

#[test]
fn operations() {
    let doc = json(DOC);
    for (case, patch, want) in OK {
        match apply_json_patch(&doc, patch.as_bytes()) {
            Ok(got) => assert_json_eq(&got, &json(want), case),
            Err(e) => panic!("{case}: {e}"),
        }
    }
}

fn failure(patch: &str) -> (usize, JsonPatchFailure) {
    match apply_json_patch(&json(DOC), patch.as_bytes()) {
        Err(PatchError::JsonPatch { index, failure, .. }) => (index, failure),
        other => panic!("{patch}: expected an operation failure, got {other:?}"),
    }
}

#[test]
fn failing_operations_are_422() {
    use JsonPatchFailure as F;
    let missing = |p: &str| F::MissingPath { path: p.into() };
    let index = |p: &str, i: &str| F::InvalidIndex {
        path: p.into(),
        index: i.into(),
    };
    let cases: Vec<(&str, (usize, F))> = vec![
        (
            r#"[{"op":"test","path":"/a/b","value":"x"}]"#,
            (
                0,
                F::TestFailed {
                    path: "/a/b".into(),
                },
            ),
        ),
        (
            r#"[{"op":"add","path":"/t","value":1},{"op":"test","path":"/list/0","value":"1"}]"#,
            (
                1,
                F::TestFailed {
                    path: "/list/0".into(),
                },
            ),
        ),
        (
            r#"[{"op":"test","path":"/a/b","value":null}]"#,
            (
                0,
                F::TestFailed {
                    path: "/a/b".into(),
                },
            ),
        ),
        (
            r#"[{"op":"test","path":"/a/b"}]"#,
            (
                0,
                F::TestFailed {
                    path: "/a/b".into(),
                },
            ),
        ),
        (
            r#"[{"op":"add","path":"/x/y","value":1}]"#,
            (0, missing("/x/y")),
        ),
        (
            r#"[{"op":"add","path":"/a/b/c","value":1}]"#,
            (0, missing("/a/b/c")),
        ),
        (
            r#"[{"op":"add","path":"/n/c","value":1}]"#,
            (0, missing("/n/c")),
        ),
        (r#"[{"op":"add","path":"","value":1}]"#, (0, missing(""))),
        (
            r#"[{"op":"add","path":"/list/5","value":1}]"#,
            (0, index("/list/5", "5")),
        ),
        (
            r#"[{"op":"add","path":"/list/-5","value":1}]"#,
            (0, index("/list/-5", "-5")),
        ),
        (
            r#"[{"op":"add","path":"/list/x","value":1}]"#,
            (0, index("/list/x", "x")),
        ),
        (
            r#"[{"op":"add","path":"/list/99999999999999999999","value":1}]"#,
            (
                0,
                index("/list/99999999999999999999", "99999999999999999999"),
            ),
        ),
        (
            r#"[{"op":"replace","path":"/list/3","value":1}]"#,
            (0, index("/list/3", "3")),
        ),
        (
            r#"[{"op":"remove","path":"/list/3"}]"#,
            (0, index("/list/3", "3")),
        ),
        (
            r#"[{"op":"remove","path":"/list/-","value":1}]"#,
            (0, index("/list/-", "-")),
        ),
        (
            r#"[{"op":"add","path":"/list/-/x","value":1}]"#,
            (0, missing("/list/-/x")),
        ),
        (
            r#"[{"op":"remove","path":"/nope"}]"#,
            (0, F::MissingKey { key: "nope".into() }),
        ),
        (
            r#"[{"op":"move","from":"/nope","path":"/x"}]"#,
            (0, F::MissingKey { key: "nope".into() }),
        ),
        (
            r#"[{"op":"move","from":"/a","path":"/a/b"}]"#,
            (0, missing("/a/b")),
        ),
        (
            r#"[{"op":"replace","path":"","value":3}]"#,
            (0, F::BadRootValue),
        ),
        (
            r#"[{"op":"add","path":"a/b","value":1}]"#,
            (0, F::InvalidPointer { path: "a/b".into() }),
        ),
        (
            r#"[{"op":"add","value":1}]"#,
            (0, F::MissingField { field: "path" }),
        ),
        (
            r#"[{"op":"copy","path":"/x"}]"#,
            (0, F::MissingField { field: "from" }),
        ),
        (
            r#"[{"op":"add","path":7,"value":1}]"#,
            (0, F::MissingField { field: "path" }),
        ),
        (
            r#"[{"op":"frobnicate","path":"/a"}]"#,
            (
                0,
                F::UnknownOp {
                    op: "frobnicate".into(),
                },
            ),
        ),
        (
            r#"[{"path":"/a"}]"#,
            (
                0,
                F::UnknownOp {
                    op: "unknown".into(),
                },
            ),
        ),
    ];
    for (patch, want) in cases {
        assert_eq!(failure(patch), want, "{patch}");
        let err = apply_json_patch(&json(DOC), patch.as_bytes()).expect_err(patch);
        assert_eq!(
            (err.status_code(), err.reason()),
            (422, "Invalid"),
            "{patch}"
        );
    }
}

#[test]
fn undecodable_patches_are_400() {
    for patch in [
        "",
        "{",
        r#"{"op":"add"}"#,
        "[1]",
        r#"[{"op":"add"},"x"]"#,
        "3",
    ] {
        let err = apply_json_patch(&json(DOC), patch.as_bytes()).expect_err(patch);
        assert!(matches!(err, PatchError::Decode(_)), "{patch}: {err:?}");
        assert_eq!(err.status_code(), 400, "{patch}");
    }
}

#[test]
fn a_null_patch_is_empty_as_upstream_decodes_it() {
    assert_eq!(
        apply_json_patch(&json(DOC), b"null").expect("no-op"),
        json(DOC)
    );
}

#[test]
fn more_than_10000_operations_is_413() {
    let op = json!({"op": "test", "path": "/a/b", "value": "c"});
    let ok = serde_json::to_vec(&vec![op.clone(); MAX_JSON_PATCH_OPERATIONS]).expect("json");
    assert!(apply_json_patch(&json(DOC), &ok).is_ok());
    let too_many = serde_json::to_vec(&vec![op; MAX_JSON_PATCH_OPERATIONS + 1]).expect("json");
    let err = apply_json_patch(&json(DOC), &too_many).expect_err("too many");
    assert_eq!(err.status_code(), 413);
}

#[test]
fn copies_are_limited_to_3_mib_in_total() {
    let doc = json!({"big": "x".repeat(1024 * 1024)});
    let copy = |n: usize| {
        let ops: Vec<_> = (0..n)
            .map(|i| json!({"op":"copy","from":"/big","path":format!("/c{i}")}))
            .collect();
        serde_json::to_vec(&ops).expect("json")
    };
    assert!(apply_json_patch(&doc, &copy(2)).is_ok());
    let err = apply_json_patch(&doc, &copy(3)).expect_err("over the limit");
    assert!(
        matches!(
            err,
            PatchError::JsonPatch {
                index: 2,
                failure: JsonPatchFailure::CopyTooLarge { .. },
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn a_failed_patch_changes_nothing() {
    let doc = json(DOC);
    let before = doc.clone();
    let patch = r#"[{"op":"remove","path":"/a"},{"op":"test","path":"/list/0","value":7}]"#;
    assert!(apply_json_patch(&doc, patch.as_bytes()).is_err());
    assert_eq!(doc, before);
}

/// `kubectl rollout undo`: the ReplicaSet's template (minus pod-template-hash) replaces the
/// Deployment's, and the annotations are replaced as a whole.
#[test]
fn kubectl_rollout_undo() {
    let patch = r#"[
      {"op":"replace","path":"/spec/template","value":{"metadata":{"creationTimestamp":null,"labels":{"app":"web"}},
        "spec":{"containers":[{"image":"nginx:1.24","imagePullPolicy":"IfNotPresent","name":"nginx","resources":{},
        "terminationMessagePath":"/dev/termination-log","terminationMessagePolicy":"File"}],"dnsPolicy":"ClusterFirst",
        "restartPolicy":"Always","schedulerName":"default-scheduler","securityContext":{},"terminationGracePeriodSeconds":30}}},
      {"op":"replace","path":"/metadata/annotations","value":{"deployment.kubernetes.io/revision":"1",
        "kubectl.kubernetes.io/last-applied-configuration":"{}"}}
    ]"#;
    let original = deployment();
    let got = apply_json_patch(&original, patch.as_bytes()).expect("undo applies");
    let mut want = original;
    let ops: serde_json::Value = json(patch);
    want["spec"]["template"] = ops[0]["value"].clone();
    want["metadata"]["annotations"] = ops[1]["value"].clone();
    assert_json_eq(&got, &want, "rollout undo");
    assert_eq!(
        got["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.24"
    );
}

/// `kubectl patch --type=json` with an escaped annotation key, and a test guarding it.
#[test]
fn escaped_annotation_key_on_a_deployment() {
    let patch = r#"[
      {"op":"test","path":"/metadata/annotations/deployment.kubernetes.io~1revision","value":"2"},
      {"op":"add","path":"/spec/template/metadata/annotations","value":{}},
      {"op":"add","path":"/spec/template/metadata/annotations/kubectl.kubernetes.io~1restartedAt","value":"2025-05-02T00:00:00Z"},
      {"op":"replace","path":"/spec/replicas","value":5},
      {"op":"remove","path":"/spec/template/spec/containers/1"}
    ]"#;
    let got = apply_json_patch(&deployment(), patch.as_bytes()).expect("applies");
    assert_eq!(
        got["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"],
        "2025-05-02T00:00:00Z"
    );
    assert_eq!(got["spec"]["replicas"], 5);
    assert_eq!(
        got["spec"]["template"]["spec"]["containers"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
}
