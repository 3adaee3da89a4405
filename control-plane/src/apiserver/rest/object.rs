//! Object plumbing shared by the verbs: stored bytes ↔ JSON (the `resourceVersion` is the
//! key's `mod_revision`, set on read and never stored), system metadata on create and update,
//! the typed decode with unknown-field detection, and metadata validation.

use serde_json::{Map, Value, json};

use crate::apiserver::catalog::ResourceDef;
use crate::apiserver::errors::ApiError;
use crate::storage::KeyValue;

/// The JSON object of a stored key, with `metadata.resourceVersion` set.
pub fn decode_stored(kv: &KeyValue) -> Result<Value, ApiError> {
    let mut object: Value = serde_json::from_slice(&kv.value).map_err(|e| {
        ApiError::internal(format!("stored object {} is not valid JSON: {e}", kv.key))
    })?;
    set_resource_version(&mut object, kv.mod_revision);
    Ok(object)
}

/// The bytes to store: the object without `resourceVersion` (it is the key's revision).
pub fn encode_for_store(object: &Value) -> Vec<u8> {
    let mut object = object.clone();
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
        meta.remove("selfLink");
    }
    serde_json::to_vec(&object).unwrap_or_default()
}

pub fn set_resource_version(object: &mut Value, revision: i64) {
    meta_mut(object).insert("resourceVersion".into(), json!(revision.to_string()));
}

/// `metadata` as a mutable map (created if absent or not an object).
pub fn meta_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object.is_object() {
        *object = json!({});
    }
    let map = object.as_object_mut().expect("object");
    let meta = map.entry("metadata").or_insert_with(|| json!({}));
    if !meta.is_object() {
        *meta = json!({});
    }
    meta.as_object_mut().expect("metadata object")
}

pub fn meta_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object
        .get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// The labels map of an object.
pub fn labels(object: &Value) -> std::collections::BTreeMap<String, String> {
    object
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// `metadata.finalizers`.
pub fn finalizers(object: &Value) -> Vec<String> {
    object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The current time as upstream formats `metav1.Time` (RFC 3339, seconds, `Z`).
pub fn now_rfc3339() -> String {
    let seconds = unix_now();
    k8s_openapi::jiff::Timestamp::from_second(seconds)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_string())
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// A random UUID (version 4) string.
pub fn new_uid() -> String {
    let mut bytes = [0u8; 16];
    fill_random(&mut bytes);
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex = hex_string(&bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Random suffix characters for `generateName` (upstream's alphabet, no vowels).
pub fn random_suffix(len: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut bytes = vec![0u8; len];
    fill_random(&mut bytes);
    bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

fn fill_random(bytes: &mut [u8]) {
    use rustls::crypto::ring::default_provider;
    // The TLS provider's system RNG: no extra dependency.
    if default_provider().secure_random.fill(bytes).is_err() {
        // Never expected; fall back to time-based bytes rather than panic.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (seed >> ((i % 16) * 8)) as u8 ^ (i as u8).wrapping_mul(31);
        }
    }
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// How unknown fields in a request body are treated (`?fieldValidation=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

impl FieldValidation {
    pub fn parse(value: Option<&str>) -> Result<Self, ApiError> {
        match value {
            None | Some("") | Some("Warn") => Ok(Self::Warn),
            Some("Strict") => Ok(Self::Strict),
            Some("Ignore") => Ok(Self::Ignore),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation parameter unsupported: {other:?}; supported values: Ignore, Warn, Strict"
            ))),
        }
    }
}

/// Decodes `object` through the resource's typed form. Returns the normalised object and
/// the unknown fields that were dropped (paths like `spec.foo`); the error is the decoder's
/// message (callers say what failed to decode).
pub fn typed_decode(def: &ResourceDef, object: Value) -> Result<(Value, Vec<String>), String> {
    if let Some(custom) = &def.custom {
        let mut object = object;
        let pruned = custom.prune(&mut object);
        return Ok((object, pruned));
    }
    let Some(round_trip) = def.typed else {
        return Ok((object, Vec::new()));
    };
    let original = object.clone();
    let decoded = round_trip(object).map_err(|e| e.to_string())?;
    let mut unknown = Vec::new();
    dropped_fields(&original, &decoded, "", &mut unknown);
    Ok((decoded, unknown))
}

/// Paths present (non-null) in `before` but absent in `after`.
fn dropped_fields(before: &Value, after: &Value, path: &str, out: &mut Vec<String>) {
    match (before, after) {
        (Value::Object(b), Value::Object(a)) => {
            for (key, value) in b {
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match a.get(key) {
                    Some(next) => dropped_fields(value, next, &child, out),
                    None if value.is_null() => {}
                    None => out.push(child),
                }
            }
        }
        (Value::Array(b), Value::Array(a)) => {
            for (i, (value, next)) in b.iter().zip(a).enumerate() {
                dropped_fields(value, next, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::catalog::Catalog;

    #[test]
    fn typed_decode_reports_unknown_fields() {
        let catalog = Catalog::builtin();
        let cm = catalog.lookup("", "v1", "configmaps").expect("cm");
        let (decoded, unknown) = typed_decode(
            cm,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "bogus": 1, "labels": null},
                   "data": {"k": "v"}, "extra": {"x": 1}}),
        )
        .expect("decode");
        assert_eq!(unknown, ["extra", "metadata.bogus"]);
        assert_eq!(decoded["data"]["k"], "v");
    }

    #[test]
    fn uids_and_names() {
        let uid = new_uid();
        assert_eq!(uid.len(), 36);
        assert_eq!(&uid[14..15], "4");
        assert_ne!(new_uid(), uid);
        assert_eq!(random_suffix(5).len(), 5);
    }

    #[test]
    fn stored_bytes_never_carry_the_resource_version() {
        let object = json!({"metadata": {"name": "a", "resourceVersion": "7"}});
        let bytes = encode_for_store(&object);
        let kv = KeyValue {
            key: "/registry/x/a".into(),
            value: bytes,
            create_revision: 3,
            mod_revision: 9,
        };
        assert!(!String::from_utf8_lossy(&kv.value).contains("resourceVersion"));
        assert_eq!(
            decode_stored(&kv).expect("decode")["metadata"]["resourceVersion"],
            "9"
        );
    }
}
