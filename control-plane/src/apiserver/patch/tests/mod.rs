//! Tests of the patch engines: table-driven, on real Kubernetes objects and the exact bodies
//! kubectl and helm send, plus hostile input.

mod builtin_tests;
mod hostile_tests;
mod json_patch_tests;
mod kubectl_tests;
mod merge_patch_tests;
mod strategic_tests;

use serde_json::Value;

/// Parses test JSON (test data is always valid).
fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("bad test JSON {e}: {text}"))
}

fn deployment() -> Value {
    json(include_str!("fixtures/deployment.json"))
}

fn pod() -> Value {
    json(include_str!("fixtures/pod.json"))
}

fn service() -> Value {
    json(include_str!("fixtures/service.json"))
}

fn node() -> Value {
    json(include_str!("fixtures/node.json"))
}

/// Asserts equality, printing both sides as pretty JSON.
#[track_caller]
fn assert_json_eq(got: &Value, want: &Value, case: &str) {
    if got != want {
        let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_default();
        panic!("{case}: got\n{}\nwant\n{}", pretty(got), pretty(want));
    }
}
