//! LIST over HTTP: validates the `ListOptions` as upstream, reads the matching stored objects
//! ([`Registry::list_raw`](super::rest::Registry::list_raw)) and encodes the `<Kind>List` or
//! the Table one object at a time, so a LIST of many objects never holds them all decoded:
//! - JSON: each stored object's bytes are copied as they are, with `resourceVersion` (the
//!   key's revision) spliced into its `metadata` (only `metadata` is parsed, and only when it
//!   might already hold a `resourceVersion`);
//! - Table: each object is decoded, turned into its row, and dropped.

use http::{Response, StatusCode};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::catalog::ResourceDef;
use super::errors::ApiError;
use super::handler::ApiHandler;
use super::http_util::{Body, error_response, full};
use super::request::Query;
use super::rest::Target;
use super::rest::list_semantics::{invalid_options, validate_list};
use super::rest::object::{decode_stored, unix_now};
use super::rest::read::{RawList, with_type};
use super::table::{IncludeObject, column_definitions, row, wants_table};
use super::verbs::list_params;
use crate::storage::KeyValue;

/// Serves a LIST.
pub async fn serve_list(
    handler: &ApiHandler,
    target: &Target,
    query: &Query,
    accept: &str,
) -> Response<Body> {
    match list(handler, target, query, accept).await {
        Ok(response) => response,
        Err(e) => error_response(&e),
    }
}

async fn list(
    handler: &ApiHandler,
    target: &Target,
    query: &Query,
    accept: &str,
) -> Result<Response<Body>, ApiError> {
    let params = list_params(query)?;
    invalid_options(validate_list(
        params.resource_version.as_deref(),
        params.resource_version_match.as_deref(),
        params.continue_token.as_deref(),
        query
            .get("sendInitialEvents")
            .map(|v| v == "true" || v == "1"),
    ))?;
    let raw = handler.registry.list_raw(target, &params).await?;
    let bytes = if wants_table(accept) {
        encode_table(
            &target.def,
            raw,
            IncludeObject::parse(query.get("includeObject")),
            unix_now(),
        )?
    } else {
        encode_list(&target.def, &raw)?
    };
    let mut response = Response::new(full(bytes));
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

fn push_json(out: &mut Vec<u8>, value: &impl serde::Serialize) -> Result<(), ApiError> {
    serde_json::to_writer(out, value).map_err(|e| ApiError::internal(format!("encoding: {e}")))
}

/// The `<Kind>List` JSON of a raw list.
pub fn encode_list(def: &ResourceDef, raw: &RawList) -> Result<Vec<u8>, ApiError> {
    let size: usize = raw.items.iter().map(|kv| kv.value.len() + 40).sum();
    let mut out = Vec::with_capacity(size + 256);
    out.extend_from_slice(b"{\"kind\":");
    push_json(&mut out, &format!("{}List", def.kind))?;
    out.extend_from_slice(b",\"apiVersion\":");
    push_json(&mut out, &def.api_version())?;
    out.extend_from_slice(b",\"metadata\":");
    push_json(&mut out, &raw.metadata)?;
    out.extend_from_slice(b",\"items\":[");
    for (i, kv) in raw.items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_item(&mut out, def, kv)?;
    }
    out.extend_from_slice(b"]}");
    Ok(out)
}

/// One stored object as served: its bytes with `resourceVersion` in `metadata` and the
/// type fields present.
fn push_item(out: &mut Vec<u8>, def: &ResourceDef, kv: &KeyValue) -> Result<(), ApiError> {
    let corrupt = |e: serde_json::Error| {
        ApiError::internal(format!("stored object {} is not valid JSON: {e}", kv.key))
    };
    let top: std::collections::BTreeMap<String, &RawValue> =
        serde_json::from_slice(&kv.value).map_err(corrupt)?;
    let revision = kv.mod_revision.to_string();
    out.push(b'{');
    let mut first = true;
    let mut sep = |out: &mut Vec<u8>| {
        if !std::mem::take(&mut first) {
            out.push(b',');
        }
    };
    if !top.contains_key("apiVersion") {
        sep(out);
        out.extend_from_slice(b"\"apiVersion\":");
        push_json(out, &def.api_version())?;
    }
    if !top.contains_key("kind") {
        sep(out);
        out.extend_from_slice(b"\"kind\":");
        push_json(out, &def.kind)?;
    }
    let mut saw_metadata = false;
    for (key, value) in &top {
        sep(out);
        push_json(out, key)?;
        out.push(b':');
        if key != "metadata" {
            out.extend_from_slice(value.get().as_bytes());
            continue;
        }
        saw_metadata = true;
        let text = value.get();
        match text.strip_prefix('{') {
            Some(rest) if !text.contains("\"resourceVersion\"") => {
                out.extend_from_slice(b"{\"resourceVersion\":");
                push_json(out, &revision)?;
                if !rest.trim_start().starts_with('}') {
                    out.push(b',');
                }
                out.extend_from_slice(rest.as_bytes());
            }
            _ => {
                let mut meta: Value = serde_json::from_str(text).map_err(corrupt)?;
                if let Some(map) = meta.as_object_mut() {
                    map.insert("resourceVersion".into(), json!(revision));
                }
                push_json(out, &meta)?;
            }
        }
    }
    if !saw_metadata {
        sep(out);
        out.extend_from_slice(b"\"metadata\":");
        push_json(out, &json!({"resourceVersion": revision}))?;
    }
    out.push(b'}');
    Ok(())
}

/// The Table JSON of a raw list (consumed: each object is dropped once its row is written).
pub fn encode_table(
    def: &ResourceDef,
    raw: RawList,
    include: IncludeObject,
    now: i64,
) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::with_capacity(256 * raw.items.len() + 4096);
    out.extend_from_slice(b"{\"kind\":\"Table\",\"apiVersion\":\"meta.k8s.io/v1\",\"metadata\":");
    push_json(&mut out, &raw.metadata)?;
    out.extend_from_slice(b",\"columnDefinitions\":");
    push_json(&mut out, &column_definitions(def))?;
    out.extend_from_slice(b",\"rows\":[");
    for (i, kv) in raw.items.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let object = with_type(decode_stored(&kv)?, def);
        drop(kv);
        push_json(&mut out, &row(def, object, include, now))?;
    }
    out.extend_from_slice(b"]}");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::catalog::Catalog;

    fn kv(value: &str, revision: i64) -> KeyValue {
        KeyValue {
            key: "/registry/configmaps/d/a".into(),
            value: value.as_bytes().to_vec(),
            create_revision: revision,
            mod_revision: revision,
        }
    }

    #[test]
    fn list_items_are_the_stored_objects_with_their_revision() {
        let catalog = Catalog::builtin();
        let cm = catalog.lookup("", "v1", "configmaps").expect("cm");
        let raw = RawList {
            metadata: json!({"resourceVersion": "9", "continue": "t"}),
            items: vec![
                kv(
                    r#"{"apiVersion":"v1","data":{"k":"{\"resourceVersion\":1}"},"kind":"ConfigMap","metadata":{"name":"a","namespace":"d"}}"#,
                    3,
                ),
                // No type fields, empty metadata.
                kv(r#"{"data":{},"metadata":{}}"#, 4),
                // A metadata that already names resourceVersion (an annotation) is parsed.
                kv(
                    r#"{"metadata":{"annotations":{"resourceVersion":"x"},"name":"c"}}"#,
                    5,
                ),
                // No metadata at all.
                kv(r#"{"data":{"x":"y"}}"#, 6),
            ],
        };
        let bytes = encode_list(cm, &raw).expect("encode");
        let list: Value = serde_json::from_slice(&bytes).expect("valid JSON");
        assert_eq!(list["kind"], "ConfigMapList");
        assert_eq!(list["apiVersion"], "v1");
        assert_eq!(list["metadata"], raw.metadata);
        let items = list["items"].as_array().expect("items");
        let expected = [
            json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"k": "{\"resourceVersion\":1}"},
                "metadata": {"name": "a", "namespace": "d", "resourceVersion": "3"}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {}, "metadata": {"resourceVersion": "4"}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"annotations": {"resourceVersion": "x"},
                "name": "c", "resourceVersion": "5"}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"x": "y"}, "metadata": {"resourceVersion": "6"}}),
        ];
        assert_eq!(items.as_slice(), expected.as_slice());
        // Each item is exactly what GET decodes.
        for (item, kv) in items.iter().zip(&raw.items) {
            assert_eq!(item, &with_type(decode_stored(kv).expect("decode"), cm));
        }
        // Corrupt stored bytes are a 500, not a broken body.
        let broken = RawList {
            metadata: json!({}),
            items: vec![kv("{\"metadata\":", 2)],
        };
        assert_eq!(encode_list(cm, &broken).expect_err("corrupt").code, 500);
    }

    #[test]
    fn table_rows_are_written_one_by_one() {
        let catalog = Catalog::builtin();
        let cm = catalog.lookup("", "v1", "configmaps").expect("cm");
        let raw = RawList {
            metadata: json!({"resourceVersion": "9"}),
            items: vec![kv(
                r#"{"apiVersion":"v1","data":{"a":"1","b":"2"},"kind":"ConfigMap","metadata":{"name":"a","namespace":"d","creationTimestamp":"2026-01-01T00:00:00Z"}}"#,
                3,
            )],
        };
        let bytes =
            encode_table(cm, raw, IncludeObject::Metadata, 1_767_225_600 + 90).expect("encode");
        let table: Value = serde_json::from_slice(&bytes).expect("valid JSON");
        assert_eq!(table["kind"], "Table");
        assert_eq!(table["metadata"]["resourceVersion"], "9");
        assert_eq!(table["columnDefinitions"][1]["name"], "Data");
        assert_eq!(table["rows"][0]["cells"], json!(["a", 2, "90s"]));
        assert_eq!(
            table["rows"][0]["object"]["metadata"]["resourceVersion"],
            "3"
        );
        assert_eq!(table["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    }
}
