//! JSON merge patch (RFC 7386) as upstream applies it.

use serde_json::{Value, json};

use super::{assert_json_eq, deployment, json, node, pod, service};
use crate::apiserver::patch::merge_patch::diff;
use crate::apiserver::patch::{PatchError, apply_merge_patch, merge_patch};

/// RFC 7386 appendix A, plus upstream's null pruning of values taken over from the patch.
const CASES: &[(&str, &str, &str)] = &[
    (r#"{"a":"b"}"#, r#"{"a":"c"}"#, r#"{"a":"c"}"#),
    (r#"{"a":"b"}"#, r#"{"b":"c"}"#, r#"{"a":"b","b":"c"}"#),
    (r#"{"a":"b"}"#, r#"{"a":null}"#, r#"{}"#),
    (r#"{"a":"b","b":"c"}"#, r#"{"a":null}"#, r#"{"b":"c"}"#),
    (r#"{"a":["b"]}"#, r#"{"a":"c"}"#, r#"{"a":"c"}"#),
    (r#"{"a":"c"}"#, r#"{"a":["b"]}"#, r#"{"a":["b"]}"#),
    (
        r#"{"a":{"b":"c"}}"#,
        r#"{"a":{"b":"d","c":null}}"#,
        r#"{"a":{"b":"d"}}"#,
    ),
    (r#"{"a":[{"b":"c"}]}"#, r#"{"a":[1]}"#, r#"{"a":[1]}"#),
    (r#"{"e":null}"#, r#"{"a":1}"#, r#"{"e":null,"a":1}"#),
    (
        r#"{}"#,
        r#"{"a":{"bb":{"ccc":null}}}"#,
        r#"{"a":{"bb":{}}}"#,
    ),
    // Upstream drops nulls inside values it takes over, arrays included.
    (
        r#"{}"#,
        r#"{"a":[{"b":null,"c":1},null]}"#,
        r#"{"a":[{"c":1},null]}"#,
    ),
    (r#"{"a":null}"#, r#"{"a":{"b":null}}"#, r#"{"a":{}}"#),
    // ... except where an array replaces an existing object.
    (
        r#"{"a":{"x":1}}"#,
        r#"{"a":[{"b":null}]}"#,
        r#"{"a":[{"b":null}]}"#,
    ),
    (r#"{"a":"b"}"#, r#"{}"#, r#"{"a":"b"}"#),
];

#[test]
fn rfc_7386_cases() {
    for (target, patch, want) in CASES {
        let got = apply_merge_patch(&json(target), patch.as_bytes()).expect(patch);
        assert_json_eq(&got, &json(want), patch);
    }
}

#[test]
fn non_object_patches_are_400_for_the_apiserver_but_replace_in_the_rfc_function() {
    for patch in ["null", "[1]", "\"x\"", "3", "true"] {
        let err = apply_merge_patch(&json(r#"{"a":1}"#), patch.as_bytes()).expect_err(patch);
        assert!(
            matches!(err, PatchError::NotAnObject { .. }),
            "{patch}: {err:?}"
        );
        assert_eq!(err.status_code(), 400);
    }
    assert_eq!(merge_patch(&json(r#"{"a":1}"#), &json("[1]")), json("[1]"));
    assert_eq!(
        merge_patch(&json("[1]"), &json(r#"{"a":null,"b":2}"#)),
        json(r#"{"b":2}"#)
    );
}

/// `kubectl label` / `annotate`, `kubectl scale` (on the scale subresource) and removal by null.
#[test]
fn kubectl_merge_patches() {
    type Case = (&'static str, Value, &'static str, fn(&mut Value));
    let cases: Vec<Case> = vec![
        (
            "label",
            deployment(),
            r#"{"metadata":{"labels":{"tier":"backend","env":"prod"}}}"#,
            |d| {
                d["metadata"]["labels"]["tier"] = json!("backend");
                d["metadata"]["labels"]["env"] = json!("prod");
            },
        ),
        (
            "label removal (kubectl label tier-)",
            deployment(),
            r#"{"metadata":{"labels":{"tier":null}}}"#,
            |d| {
                d["metadata"]["labels"]
                    .as_object_mut()
                    .map(|l| l.remove("tier"));
            },
        ),
        (
            "annotate",
            pod(),
            r#"{"metadata":{"annotations":{"note":"x"}}}"#,
            |d| {
                d["metadata"]["annotations"] = json!({"note": "x"});
            },
        ),
        (
            "scale",
            json(
                r#"{"apiVersion":"autoscaling/v1","kind":"Scale","metadata":{"name":"web"},"spec":{"replicas":2},"status":{"replicas":2}}"#,
            ),
            r#"{"spec":{"replicas":4}}"#,
            |d| d["spec"]["replicas"] = json!(4),
        ),
        (
            "lists are replaced",
            service(),
            r#"{"spec":{"ports":[{"port":443,"protocol":"TCP"}]}}"#,
            |d| {
                d["spec"]["ports"] = json!([{"port": 443, "protocol": "TCP"}]);
            },
        ),
        (
            "cordon as merge patch",
            node(),
            r#"{"spec":{"unschedulable":true}}"#,
            |d| {
                d["spec"]["unschedulable"] = json!(true);
            },
        ),
    ];
    for (case, original, patch, edit) in cases {
        let got = apply_merge_patch(&original, patch.as_bytes()).expect(case);
        let mut want = original;
        edit(&mut want);
        assert_json_eq(&got, &want, case);
    }
}

/// Property: for any two null-free objects, the diff applied as a merge patch reproduces the
/// target. Inputs come from a small deterministic generator (no external crates).
#[test]
fn merge_patch_of_a_diff_reproduces_the_target() {
    let mut rng = Lcg(0x5eed);
    for round in 0..500 {
        let from = random_object(&mut rng, 3);
        let to = if round % 5 == 0 {
            from.clone()
        } else {
            mutate(&mut rng, &from, 3)
        };
        let patch = diff(&from, &to);
        assert_json_eq(
            &merge_patch(&from, &patch),
            &to,
            &format!("round {round}: patch {patch}"),
        );
    }
    for fixture in [deployment(), pod(), service(), node()] {
        let to = mutate(&mut rng, &fixture, 4);
        assert_json_eq(&merge_patch(&fixture, &diff(&fixture, &to)), &to, "fixture");
    }
}

struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

fn random_value(rng: &mut Lcg, depth: u32) -> Value {
    match rng.next(if depth == 0 { 4 } else { 6 }) {
        0 => json!(rng.next(100)),
        1 => json!(format!("s{}", rng.next(10))),
        2 => json!(rng.next(2) == 0),
        3 => json!([rng.next(3), "x"]),
        4 => Value::Array(
            (0..rng.next(3))
                .map(|_| random_value(rng, depth - 1))
                .collect(),
        ),
        _ => random_object(rng, depth - 1),
    }
}

fn random_object(rng: &mut Lcg, depth: u32) -> Value {
    let mut map = serde_json::Map::new();
    for _ in 0..rng.next(5) {
        map.insert(format!("k{}", rng.next(6)), random_value(rng, depth));
    }
    Value::Object(map)
}

/// A copy of `v` with some members changed, added or removed (never set to null).
fn mutate(rng: &mut Lcg, v: &Value, depth: u32) -> Value {
    let Value::Object(map) = v else {
        return random_value(rng, depth);
    };
    let mut out = serde_json::Map::new();
    for (k, v) in map {
        match rng.next(5) {
            0 => {}
            1 => {
                out.insert(k.clone(), random_value(rng, depth));
            }
            2 if depth > 0 => {
                out.insert(k.clone(), mutate(rng, v, depth - 1));
            }
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    if rng.next(3) == 0 {
        out.insert(format!("new{}", rng.next(4)), random_value(rng, depth));
    }
    Value::Object(out)
}
