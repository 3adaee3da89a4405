//! Hostile input: deep nesting, huge lists, nonsense directives. Errors, never panics, and no
//! quadratic blow-ups.

use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use super::{deployment, json, node, pod, service};
use crate::apiserver::patch::{
    MAX_DEPTH, PatchError, PatchType, apply_json_patch, apply_merge_patch, apply_patch,
    apply_strategic_merge_patch, builtin_schema, merge_patch,
};

/// `{"a":{"a":…{"a":1}}}` with `depth` objects.
fn nested(depth: usize) -> Value {
    let mut v = json!(1);
    for _ in 0..depth {
        let mut m = Map::new();
        m.insert("a".into(), v);
        v = Value::Object(m);
    }
    v
}

#[test]
fn deep_patches_are_refused() {
    let deploy = deployment();
    let schema = builtin_schema("apps/v1", "Deployment").expect("schema");
    let ok = nested(MAX_DEPTH);
    let too_deep = nested(MAX_DEPTH + 1);
    let body = |v: &Value| serde_json::to_vec(v).expect("json");

    assert!(apply_merge_patch(&deploy, &body(&ok)).is_ok());
    let err = apply_merge_patch(&deploy, &body(&too_deep)).expect_err("too deep");
    assert!(matches!(err, PatchError::PatchTooDeep { .. }), "{err:?}");
    assert_eq!(err.status_code(), 400);

    assert!(apply_strategic_merge_patch(&deploy, &ok, schema).is_ok());
    let err = apply_strategic_merge_patch(&deploy, &too_deep, schema).expect_err("too deep");
    assert!(matches!(err, PatchError::PatchTooDeep { .. }), "{err:?}");

    let ops = json!([{"op": "add", "path": "/x", "value": too_deep}]);
    let err = apply_json_patch(&deploy, &body(&ops)).expect_err("too deep");
    assert!(matches!(err, PatchError::PatchTooDeep { .. }), "{err:?}");

    // Deeper than serde_json parses at all: a decode error, not a stack overflow.
    let very_deep = format!("{}1{}", "{\"a\":".repeat(5000), "}".repeat(5000));
    for t in [PatchType::Merge, PatchType::StrategicMerge, PatchType::Json] {
        let err = apply_patch(t, &deploy, very_deep.as_bytes(), Some(schema)).expect_err("decode");
        assert_eq!(err.status_code(), 400, "{t:?}: {err:?}");
    }
    let arrays = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(apply_json_patch(&deploy, arrays.as_bytes()).is_err());
}

#[test]
fn results_nested_too_deep_are_refused() {
    // Each value is within the limit; placed under /a/a/…, the document would exceed it.
    let doc = nested(60);
    let path = format!("/{}", ["a"; 59].join("/"));
    let ops = json!([{"op": "add", "path": path, "value": nested(60)}]);
    let err = apply_json_patch(&doc, &serde_json::to_vec(&ops).expect("json")).expect_err("deep");
    assert!(matches!(err, PatchError::ResultTooDeep { .. }), "{err:?}");
    assert_eq!(err.status_code(), 422);
    let err = apply_merge_patch(&doc, &serde_json::to_vec(&nested(80)).expect("json"));
    assert!(
        err.is_ok(),
        "merging nested(80) into nested(60) stays at 80 levels"
    );
}

#[test]
fn strategic_merge_of_huge_lists_is_fast() {
    let n = 20_000;
    let env: Vec<Value> = (0..n)
        .map(|i| json!({"name": format!("V{i}"), "value": "x"}))
        .collect();
    let mut deploy = deployment();
    deploy["spec"]["template"]["spec"]["containers"][0]["env"] = Value::Array(env);
    let order: Vec<Value> = (0..n)
        .rev()
        .map(|i| json!({"name": format!("V{i}")}))
        .collect();
    let changed: Vec<Value> = (0..n)
        .step_by(2)
        .rev()
        .map(|i| json!({"name": format!("V{i}"), "value": "y"}))
        .collect();
    let patch = json!({"spec": {"template": {"spec": {"containers": [{
        "name": "nginx", "$setElementOrder/env": order, "env": changed}]}}}});
    let schema = builtin_schema("apps/v1", "Deployment").expect("schema");
    let started = Instant::now();
    let got = apply_strategic_merge_patch(&deploy, &patch, schema).expect("applies");
    let took = started.elapsed();
    let env = got["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .expect("env");
    assert_eq!(env.len(), n);
    assert_eq!(env[0], json!({"name": format!("V{}", n - 1), "value": "x"}));
    assert_eq!(env[1], json!({"name": format!("V{}", n - 2), "value": "y"}));
    assert!(took < Duration::from_secs(5), "took {took:?}: quadratic?");

    // Thousands of `$patch: delete` elements and a `$retainKeys` listing thousands of keys.
    let deletes: Vec<Value> = (0..n)
        .step_by(3)
        .map(|i| json!({"name": format!("V{i}"), "$patch": "delete"}))
        .collect();
    let mut retain: Vec<Value> = (0..n).map(|i| json!(format!("k{i}"))).collect();
    retain.push(json!("env"));
    retain.push(json!("name"));
    let patch = json!({"spec": {"template": {"spec": {"containers": [{
        "name": "nginx", "env": deletes, "$retainKeys": retain}]}}}});
    let started = Instant::now();
    let got = apply_strategic_merge_patch(&deploy, &patch, schema).expect("applies");
    let env = got["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .expect("env");
    assert_eq!(env.len(), n - n.div_ceil(3));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );

    let ints: Vec<Value> = (0..n).map(|i| json!(format!("f{i}"))).collect();
    let mut p = pod();
    p["metadata"]["finalizers"] = Value::Array(ints.clone());
    let patch = json!({"metadata": {"$setElementOrder/finalizers": ints.iter().rev().collect::<Vec<_>>(),
        "$deleteFromPrimitiveList/finalizers": ["f0"]}});
    let started = Instant::now();
    let got = apply_strategic_merge_patch(&p, &patch, builtin_schema("v1", "Pod").expect("pod"))
        .expect("applies");
    assert_eq!(
        got["metadata"]["finalizers"].as_array().map(Vec::len),
        Some(n - 1)
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

/// A tiny deterministic generator of nonsense patches built from the directive vocabulary.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n
    }
}

const KEYS: &[&str] = &[
    "spec",
    "template",
    "containers",
    "env",
    "name",
    "value",
    "volumes",
    "metadata",
    "labels",
    "finalizers",
    "ports",
    "port",
    "conditions",
    "type",
    "strategy",
    "status",
    "$patch",
    "$retainKeys",
    "$setElementOrder/containers",
    "$setElementOrder/env",
    "$setElementOrder/finalizers",
    "$deleteFromPrimitiveList/finalizers",
    "$deleteFromPrimitiveList/env",
    "$setElementOrder",
    "$deleteFromPrimitiveList",
    "$setElementOrder/",
    "x",
];

fn random_value(rng: &mut Lcg, depth: usize) -> Value {
    match rng.next(if depth == 0 { 7 } else { 10 }) {
        0 => Value::Null,
        1 => json!(rng.next(3)),
        2 => json!(["replace", "delete", "merge", "bogus"][rng.next(4)]),
        3 => json!(KEYS[rng.next(KEYS.len())]),
        4 => json!(true),
        5 => json!(1.5),
        6 => json!([]),
        7 | 8 => {
            let mut m = Map::new();
            for _ in 0..rng.next(4) {
                m.insert(
                    KEYS[rng.next(KEYS.len())].to_owned(),
                    random_value(rng, depth - 1),
                );
            }
            Value::Object(m)
        }
        _ => Value::Array(
            (0..rng.next(4))
                .map(|_| random_value(rng, depth - 1))
                .collect(),
        ),
    }
}

/// A patch that puts `leaf` at a random existing path of `original` (lists: at a random element,
/// keeping its merge key so the element is matched).
fn at_random_path(rng: &mut Lcg, original: &Value, leaf: Value) -> Value {
    match original {
        Value::Object(m) if !m.is_empty() && rng.next(6) != 0 => {
            let (k, v) = m.iter().nth(rng.next(m.len())).expect("in range");
            json!({ k.clone(): at_random_path(rng, v, leaf) })
        }
        Value::Array(items) if !items.is_empty() && rng.next(6) != 0 => {
            let item = &items[rng.next(items.len())];
            let mut inner = at_random_path(rng, item, leaf);
            if let (Value::Object(inner), Value::Object(item)) = (&mut inner, item) {
                for key in [
                    "name",
                    "type",
                    "port",
                    "mountPath",
                    "containerPort",
                    "uid",
                    "ip",
                ] {
                    if let Some(v) = item.get(key) {
                        inner.entry(key).or_insert_with(|| v.clone());
                    }
                }
            }
            Value::Array(vec![inner])
        }
        _ => leaf,
    }
}

#[test]
fn random_nonsense_never_panics() {
    let mut rng = Lcg(42);
    let objects = [deployment(), pod(), service(), node()];
    for round in 0..3000 {
        let original = &objects[round % objects.len()];
        let schema = builtin_schema(
            original["apiVersion"].as_str().unwrap_or_default(),
            original["kind"].as_str().unwrap_or_default(),
        )
        .expect("schema");
        let nonsense = random_value(&mut rng, 5);
        let patch = if round % 2 == 0 {
            match nonsense {
                Value::Object(m) => Value::Object(m),
                other => json!({"spec": other}),
            }
        } else {
            at_random_path(&mut rng, original, nonsense)
        };
        // Ok or Err are both fine; a panic fails the test.
        let _ = apply_strategic_merge_patch(original, &patch, schema);
        let _ = merge_patch(original, &patch);
        // Some of them also as a strategic patch on the server's own lists.
        if let Ok(patched) = apply_strategic_merge_patch(original, &patch, schema) {
            let _ = apply_strategic_merge_patch(&patched, &patch, schema);
        }
    }
}

#[test]
fn odd_merge_keys_and_directives_are_handled() {
    let schema = builtin_schema("apps/v1", "Deployment").expect("schema");
    let cases = [
        // Merge key values that are not strings.
        r#"{"spec":{"template":{"spec":{"containers":[{"name":{"x":1}},{"name":[1]},{"name":null},{"name":7}]}}}}"#,
        r#"{"spec":{"template":{"spec":{"$setElementOrder/containers":[{"name":null},{"name":"nginx"}],"containers":[{"name":null}]}}}}"#,
        r#"{"spec":{"template":{"spec":{"$setElementOrder/containers":["nginx"]}}}}"#,
        r#"{"spec":{"template":{"spec":{"$setElementOrder/containers":[{"name":"nginx"}],"containers":{"name":"nginx"}}}}}"#,
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"nginx","$patch":7}]}}}}"#,
        r#"{"spec":{"template":{"spec":{"containers":[1,2]}}}}"#,
        r#"{"spec":{"$retainKeys":[1,null,{"a":1}],"replicas":null}}"#,
        r#"{"metadata":{"$deleteFromPrimitiveList/finalizers":null}}"#,
        r#"{"metadata":{"$setElementOrder/":[]}}"#,
        r#"{"spec":{"$patch":null}}"#,
    ];
    for patch in cases {
        let _ = apply_strategic_merge_patch(&deployment(), &json(patch), schema);
    }
    let err =
        apply_strategic_merge_patch(&json("[1]"), &json("{}"), schema).expect_err("not an object");
    assert_eq!(err.status_code(), 500);
}
