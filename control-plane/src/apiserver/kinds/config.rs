//! ConfigMaps, Secrets and ServiceAccounts (core/v1): key syntax and total size, the
//! `immutable` flag, Secret types and the data each type needs, `stringData` folded into
//! `data` (as upstream's conversion does), the `type` field selector, and the tables.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kwk_api::field::{FIELD_IMMUTABLE, FieldError, forbidden, invalid, required, too_long};
use kwk_api::names;
use serde_json::{Value, json};

use super::cells::{age_column, col, name_column};
use super::util::{s, since, validate_typed, with_typed};
use super::{Column, KindStrategy, name_of};
use crate::apiserver::errors::Cause;

/// Upstream's limit on a ConfigMap's or Secret's data (1 MiB).
pub const MAX_DATA_SIZE: usize = 1024 * 1024;

const IMMUTABLE_SET: &str = "field is immutable when `immutable` is set";

fn check_keys<'a>(path: &str, keys: impl Iterator<Item = &'a String>, errs: &mut Vec<FieldError>) {
    for key in keys {
        for p in names::config_map_key_problems(key) {
            errs.push(invalid(&format!("{path}[{key}]"), key.as_str(), &p));
        }
    }
}

fn data_count(object: &Value) -> usize {
    ["data", "binaryData"]
        .iter()
        .filter_map(|k| object.get(k).and_then(Value::as_object))
        .map(serde_json::Map::len)
        .sum()
}

// ---- ConfigMap ----

#[derive(Debug, Default, Clone, Copy)]
pub struct ConfigMapStrategy;

fn validate_config_map(new: &ConfigMap, old: Option<&ConfigMap>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(old) = old
        && old.immutable == Some(true)
    {
        if new.immutable != Some(true) {
            errs.push(forbidden("immutable", IMMUTABLE_SET));
        }
        if new.data != old.data {
            errs.push(forbidden("data", IMMUTABLE_SET));
        }
        if new.binary_data != old.binary_data {
            errs.push(forbidden("binaryData", IMMUTABLE_SET));
        }
    }
    let data = new.data.clone().unwrap_or_default();
    let binary = new.binary_data.clone().unwrap_or_default();
    check_keys("data", data.keys(), &mut errs);
    for key in data.keys().filter(|k| binary.contains_key(*k)) {
        errs.push(invalid(
            &format!("data[{key}]"),
            key.as_str(),
            "duplicate of key present in binaryData",
        ));
    }
    check_keys("binaryData", binary.keys(), &mut errs);
    let total: usize = data.values().map(String::len).sum::<usize>()
        + binary.values().map(|b| b.0.len()).sum::<usize>();
    if total > MAX_DATA_SIZE {
        errs.push(too_long("", MAX_DATA_SIZE));
    }
    errs
}

impl KindStrategy for ConfigMapStrategy {
    fn validate(&self, object: &Value, old: Option<&Value>) -> Vec<Cause> {
        validate_typed(object, old, validate_config_map)
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            name_column(),
            col("Data", "string", "Number of data and binaryData keys."),
            age_column(),
        ]
    }

    fn row(&self, object: &Value, now: i64) -> Vec<Value> {
        vec![
            json!(name_of(object)),
            json!(data_count(object)),
            json!(since(s(object, "/metadata/creationTimestamp"), now)),
        ]
    }
}

// ---- Secret ----

#[derive(Debug, Default, Clone, Copy)]
pub struct SecretStrategy;

/// `type: Opaque` by default; `stringData` entries overwrite `data` and disappear (upstream
/// does this when converting the request, so it is never stored).
pub fn default_secret(secret: &mut Secret) {
    if let Some(strings) = secret.string_data.take().filter(|m| !m.is_empty()) {
        let data = secret.data.get_or_insert_with(BTreeMap::new);
        for (k, v) in strings {
            data.insert(k, ByteString(v.into_bytes()));
        }
    }
    if secret.type_.as_deref().unwrap_or_default().is_empty() {
        secret.type_ = Some("Opaque".to_string());
    }
}

fn require_key(data: &BTreeMap<String, ByteString>, key: &str, errs: &mut Vec<FieldError>) {
    if !data.contains_key(key) {
        errs.push(required(&format!("data[{key}]"), ""));
    }
}

fn require_json(data: &BTreeMap<String, ByteString>, key: &str, errs: &mut Vec<FieldError>) {
    match data.get(key) {
        None => errs.push(required(&format!("data[{key}]"), "")),
        Some(bytes) => {
            if let Err(e) = serde_json::from_slice::<serde_json::Map<String, Value>>(&bytes.0) {
                errs.push(invalid(
                    &format!("data[{key}]"),
                    "<secret contents redacted>",
                    &e.to_string(),
                ));
            }
        }
    }
}

fn validate_secret(new: &Secret, old: Option<&Secret>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(old) = old {
        if new.type_ != old.type_ {
            errs.push(invalid(
                "type",
                new.type_.as_deref().unwrap_or_default(),
                FIELD_IMMUTABLE,
            ));
        }
        if old.immutable == Some(true) {
            if new.immutable != Some(true) {
                errs.push(forbidden("immutable", IMMUTABLE_SET));
            }
            if new.data != old.data {
                errs.push(forbidden("data", IMMUTABLE_SET));
            }
        }
    }
    let data = new.data.clone().unwrap_or_default();
    check_keys("data", data.keys(), &mut errs);
    let total: usize = data.values().map(|b| b.0.len()).sum();
    if total > MAX_DATA_SIZE {
        errs.push(too_long("data", MAX_DATA_SIZE));
    }
    match new.type_.as_deref().unwrap_or_default() {
        "kubernetes.io/service-account-token" => {
            let key = "kubernetes.io/service-account.name";
            let named = new
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(key))
                .is_some_and(|v| !v.is_empty());
            if !named {
                errs.push(required(&format!("metadata.annotations[{key}]"), ""));
            }
        }
        "kubernetes.io/dockercfg" => require_json(&data, ".dockercfg", &mut errs),
        "kubernetes.io/dockerconfigjson" => require_json(&data, ".dockerconfigjson", &mut errs),
        "kubernetes.io/basic-auth"
            if !data.contains_key("username") && !data.contains_key("password") =>
        {
            require_key(&data, "username", &mut errs);
            require_key(&data, "password", &mut errs);
        }
        "kubernetes.io/ssh-auth" if data.get("ssh-privatekey").is_none_or(|b| b.0.is_empty()) => {
            errs.push(required("data[ssh-privatekey]", ""));
        }
        "kubernetes.io/tls" => {
            require_key(&data, "tls.crt", &mut errs);
            require_key(&data, "tls.key", &mut errs);
        }
        _ => {}
    }
    errs
}

impl KindStrategy for SecretStrategy {
    fn default(&self, object: &mut Value) {
        with_typed(object, default_secret);
    }

    fn validate(&self, object: &Value, old: Option<&Value>) -> Vec<Cause> {
        validate_typed(object, old, validate_secret)
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            name_column(),
            col(
                "Type",
                "string",
                "The kind of secret (Opaque, kubernetes.io/tls ...).",
            ),
            col("Data", "string", "Number of data keys."),
            age_column(),
        ]
    }

    fn row(&self, object: &Value, now: i64) -> Vec<Value> {
        vec![
            json!(name_of(object)),
            json!(s(object, "/type")),
            json!(
                object
                    .get("data")
                    .and_then(Value::as_object)
                    .map_or(0, serde_json::Map::len)
            ),
            json!(since(s(object, "/metadata/creationTimestamp"), now)),
        ]
    }

    fn field(&self, object: &Value, label: &str) -> Option<String> {
        (label == "type").then(|| s(object, "/type").to_string())
    }
}

// ---- ServiceAccount ----

#[derive(Debug, Default, Clone, Copy)]
pub struct ServiceAccountStrategy;

impl KindStrategy for ServiceAccountStrategy {
    fn columns(&self) -> Vec<Column> {
        vec![
            name_column(),
            col(
                "Secrets",
                "string",
                "Number of secrets listed in the account.",
            ),
            age_column(),
        ]
    }

    fn row(&self, object: &Value, now: i64) -> Vec<Value> {
        vec![
            json!(name_of(object)),
            json!(super::util::arr(object, "/secrets").len()),
            json!(since(s(object, "/metadata/creationTimestamp"), now)),
        ]
    }
}
