//! Table tests of the kind strategies: defaulted JSON, validation causes (field and reason),
//! table rows of realistic objects, field selector values.

use serde_json::{Value, json};

use super::strategy_for;

/// 2025-06-01T12:00:00Z.
pub(crate) const NOW: i64 = 1_748_779_200;

/// Defaults an object of a kind (as the handlers do before validation).
pub(crate) fn defaulted(group: &str, kind: &str, object: Value) -> Value {
    let mut object = object;
    strategy_for(group, kind).default(&mut object);
    object
}

/// `field: message` of each cause of validating `object` (defaulted first).
pub(crate) fn causes(group: &str, kind: &str, object: Value, old: Option<Value>) -> Vec<String> {
    let strategy = strategy_for(group, kind);
    let mut object = object;
    strategy.default(&mut object);
    let old = old.map(|mut o| {
        strategy.default(&mut o);
        o
    });
    strategy
        .validate(&object, old.as_ref())
        .iter()
        .map(|c| format!("{}: {} [{}]", c.field, c.message, c.reason))
        .collect()
}

/// Asserts that some cause starts with `want`.
pub(crate) fn assert_cause(causes: &[String], want: &str) {
    assert!(
        causes.iter().any(|c| c.starts_with(want)),
        "want a cause starting with\n  {want}\ngot\n  {causes:#?}"
    );
}

/// The row of an object, checked against the kind's column count.
pub(crate) fn row(group: &str, kind: &str, object: &Value) -> Vec<Value> {
    let strategy = strategy_for(group, kind);
    let row = strategy.row(object, NOW);
    assert_eq!(
        row.len(),
        strategy.columns().len(),
        "{kind}: cells vs columns"
    );
    row
}

/// The column names of a kind.
pub(crate) fn column_names(group: &str, kind: &str) -> Vec<(&'static str, u8)> {
    strategy_for(group, kind)
        .columns()
        .iter()
        .map(|c| (c.name, c.priority))
        .collect()
}

/// Minutes before [`NOW`] as a timestamp.
pub(crate) fn ago(seconds: i64) -> String {
    k8s_openapi::jiff::Timestamp::from_second(NOW - seconds)
        .unwrap()
        .to_string()
}

pub(crate) fn meta(name: &str, age_seconds: i64) -> Value {
    json!({"name": name, "namespace": "default", "creationTimestamp": ago(age_seconds)})
}

mod apps;
mod batch;
mod cluster;
mod config;
mod crd;
mod network;
mod pod;
mod policy;
mod rbac;
mod service;
mod storage;
