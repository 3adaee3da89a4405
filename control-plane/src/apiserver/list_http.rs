//! LIST over HTTP: validates the `ListOptions` as upstream, reads the matching stored objects a
//! store page at a time ([`ListCursor`](super::rest::read::ListCursor)) and streams the
//! `<Kind>List` or the Table as it reads, so a LIST of many objects is never held whole,
//! neither stored bytes nor decoded (the body's `metadata` comes last when the list has a
//! `limit`, as its `continue` token is known at the end):
//! - JSON: each stored object's bytes are copied as they are, with `resourceVersion` (the
//!   key's revision) spliced into its `metadata` (only `metadata` is parsed, and only when it
//!   might already hold a `resourceVersion`);
//! - Table: each object is decoded, turned into its row, and dropped.

use std::convert::Infallible;

use bytes::Bytes;
use futures::StreamExt;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::catalog::ResourceDef;
use super::errors::ApiError;
use super::handler::ApiHandler;
use super::http_util::{Body, error_response};
use super::request::Query;
use super::rest::Target;
use super::rest::list_semantics::{invalid_options, validate_list};
use super::rest::object::{decode_stored, unix_now};
use super::rest::read::with_type;
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

/// How a list is written.
#[derive(Debug, Clone, Copy)]
enum Encoding {
    List,
    Table { include: IncludeObject, now: i64 },
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
    let encoding = if wants_table(accept) {
        Encoding::Table {
            include: IncludeObject::parse(query.get("includeObject")),
            now: unix_now(),
        }
    } else {
        Encoding::List
    };
    let def = target.def.clone();
    let mut cursor = handler.registry.list_cursor(target, &params).await?;
    // The first store page is read before answering, so a too old or too new revision is
    // still an error status rather than a broken body.
    let first = cursor.next().await?;
    // Without a limit the metadata is only the revision, known now; with one it holds the
    // continue token, known at the end (JSON clients take the fields in any order).
    let metadata_first = params.limit.is_none();
    let mut head = header(&def, encoding)?;
    if metadata_first {
        head.extend_from_slice(b"\"metadata\":");
        push_json(
            &mut head,
            &json!({"resourceVersion": cursor.revision().to_string()}),
        )?;
        head.extend_from_slice(b",");
    }
    head.extend_from_slice(items_key(encoding));
    let body = futures::stream::unfold(
        (Some(cursor), first, true, Some(head)),
        move |(cursor, pending, mut first_item, head)| {
            let def = def.clone();
            async move {
                if let Some(head) = head {
                    return Some((Bytes::from(head), (cursor, pending, first_item, None)));
                }
                let mut cursor = cursor?;
                let mut pending = pending;
                loop {
                    let batch = match pending.take() {
                        Some(batch) => Some(batch),
                        None => match cursor.next().await {
                            Ok(batch) => batch,
                            Err(e) => {
                                // The status is sent: end the body short (clients fail to
                                // decode it) rather than pretend the list is complete.
                                tracing::warn!("LIST of {} failed mid-body: {e}", def.plural);
                                return None;
                            }
                        },
                    };
                    let Some(batch) = batch else {
                        let mut tail = b"]".to_vec();
                        if !metadata_first {
                            tail.extend_from_slice(b",\"metadata\":");
                            match cursor.metadata().await {
                                Ok(metadata) => push_json(&mut tail, &metadata).ok()?,
                                Err(e) => {
                                    tracing::warn!("LIST of {} failed at its end: {e}", def.plural);
                                    return None;
                                }
                            }
                        }
                        tail.push(b'}');
                        return Some((Bytes::from(tail), (None, None, first_item, None)));
                    };
                    if batch.is_empty() {
                        continue;
                    }
                    let mut out =
                        Vec::with_capacity(batch.iter().map(|kv| kv.value.len() + 40).sum());
                    for kv in batch {
                        if !std::mem::take(&mut first_item) {
                            out.push(b',');
                        }
                        let written = match encoding {
                            Encoding::List => push_item(&mut out, &def, &kv),
                            Encoding::Table { include, now } => {
                                push_row(&mut out, &def, kv, include, now)
                            }
                        };
                        if let Err(e) = written {
                            tracing::warn!("LIST of {} failed mid-body: {e}", def.plural);
                            return None;
                        }
                    }
                    return Some((Bytes::from(out), (Some(cursor), None, first_item, None)));
                }
            }
        },
    );
    let body = StreamBody::new(body.map(|bytes| Ok::<_, Infallible>(Frame::data(bytes))));
    let mut response = Response::new(body.boxed_unsync());
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

/// The start of the list object, up to where its `metadata` may go (after a comma).
fn header(def: &ResourceDef, encoding: Encoding) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::with_capacity(1024);
    match encoding {
        Encoding::List => {
            out.extend_from_slice(b"{\"kind\":");
            push_json(&mut out, &format!("{}List", def.kind))?;
            out.extend_from_slice(b",\"apiVersion\":");
            push_json(&mut out, &def.api_version())?;
        }
        Encoding::Table { .. } => {
            out.extend_from_slice(
                b"{\"kind\":\"Table\",\"apiVersion\":\"meta.k8s.io/v1\",\"columnDefinitions\":",
            );
            push_json(&mut out, &column_definitions(def))?;
        }
    }
    out.push(b',');
    Ok(out)
}

/// What opens the items array (after the metadata value, when it comes first).
fn items_key(encoding: Encoding) -> &'static [u8] {
    match encoding {
        Encoding::List => b"\"items\":[",
        Encoding::Table { .. } => b"\"rows\":[",
    }
}

/// A whole list at once, as [`list`] streams it (tests, and callers holding every item).
pub fn encode_all(
    def: &ResourceDef,
    metadata: &Value,
    items: Vec<KeyValue>,
    table: Option<(IncludeObject, i64)>,
) -> Result<Vec<u8>, ApiError> {
    let encoding = match table {
        Some((include, now)) => Encoding::Table { include, now },
        None => Encoding::List,
    };
    let mut out = header(def, encoding)?;
    out.extend_from_slice(b"\"metadata\":");
    push_json(&mut out, metadata)?;
    out.push(b',');
    out.extend_from_slice(items_key(encoding));
    for (i, kv) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match encoding {
            Encoding::List => push_item(&mut out, def, &kv)?,
            Encoding::Table { include, now } => push_row(&mut out, def, kv, include, now)?,
        }
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

/// One Table row of a stored object (decoded, turned into its row, dropped).
fn push_row(
    out: &mut Vec<u8>,
    def: &ResourceDef,
    kv: KeyValue,
    include: IncludeObject,
    now: i64,
) -> Result<(), ApiError> {
    let object = with_type(decode_stored(&kv)?, def);
    drop(kv);
    push_json(out, &row(def, object, include, now))
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
        let metadata = json!({"resourceVersion": "9", "continue": "t"});
        let stored = vec![
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
        ];
        let bytes = encode_all(cm, &metadata, stored.clone(), None).expect("encode");
        let list: Value = serde_json::from_slice(&bytes).expect("valid JSON");
        assert_eq!(list["kind"], "ConfigMapList");
        assert_eq!(list["apiVersion"], "v1");
        assert_eq!(list["metadata"], metadata);
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
        for (item, kv) in items.iter().zip(&stored) {
            assert_eq!(item, &with_type(decode_stored(kv).expect("decode"), cm));
        }
        // Corrupt stored bytes are a 500, not a broken body.
        let broken = vec![kv("{\"metadata\":", 2)];
        assert_eq!(
            encode_all(cm, &json!({}), broken, None)
                .expect_err("corrupt")
                .code,
            500
        );
    }

    #[test]
    fn table_rows_are_written_one_by_one() {
        let catalog = Catalog::builtin();
        let cm = catalog.lookup("", "v1", "configmaps").expect("cm");
        let items = vec![kv(
            r#"{"apiVersion":"v1","data":{"a":"1","b":"2"},"kind":"ConfigMap","metadata":{"name":"a","namespace":"d","creationTimestamp":"2026-01-01T00:00:00Z"}}"#,
            3,
        )];
        let bytes = encode_all(
            cm,
            &json!({"resourceVersion": "9"}),
            items,
            Some((IncludeObject::Metadata, 1_767_225_600 + 90)),
        )
        .expect("encode");
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
