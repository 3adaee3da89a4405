//! GET and LIST: one object, or a filtered, paged list read at one store revision
//! (`limit`/`continue` tokens carry the revision so every page is consistent, as upstream).

use base64::Engine;
use serde_json::{Value, json};

use super::object::{decode_stored, labels};
use super::{Registry, Target, parse_revision, store_error};
use crate::apiserver::errors::ApiError;
use crate::apiserver::kinds::strategy_for;
use crate::apiserver::selectors::{FieldSelector, LabelSelector};
use crate::storage::ListOptions;

/// How many keys a filtered list reads per store page.
const SCAN_PAGE: usize = 500;

/// Parameters of a LIST (and the selectors of a WATCH).
#[derive(Debug, Clone, Default)]
pub struct ListParams {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
}

/// Whether `object` matches the selectors (field selectors the kind does not support are a
/// 400, as upstream).
pub fn matches(target: &Target, params: &ListParams, object: &Value) -> Result<bool, ApiError> {
    if !params.labels.is_empty() && !params.labels.matches(&labels(object)) {
        return Ok(false);
    }
    if params.fields.is_empty() {
        return Ok(true);
    }
    let strategy = strategy_for(&target.def.group, &target.def.kind);
    params
        .fields
        .matches(|field| match field {
            "metadata.name" => Some(
                object
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            ),
            "metadata.namespace" if target.def.namespaced => Some(
                object
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            ),
            other => strategy.field(object, other),
        })
        .map_err(ApiError::bad_request)
}

/// The continue token: the revision of the first page and the last key returned.
#[derive(Debug, PartialEq, Eq)]
struct ContinueToken {
    revision: i64,
    start_after: String,
}

fn encode_token(token: &ContinueToken) -> String {
    let json = json!({"v": "meta.k8s.io/v1", "rv": token.revision, "start": token.start_after});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json.to_string())
}

fn decode_token(text: &str) -> Result<ContinueToken, ApiError> {
    let bad = || {
        ApiError::bad_request(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        )
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| bad())?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    if value["v"] != "meta.k8s.io/v1" {
        return Err(bad());
    }
    Ok(ContinueToken {
        revision: value["rv"].as_i64().filter(|r| *r > 0).ok_or_else(bad)?,
        start_after: value["start"].as_str().ok_or_else(bad)?.to_string(),
    })
}

impl Registry {
    /// GET one object.
    pub async fn get(&self, target: &Target) -> Result<Value, ApiError> {
        let kv = self
            .store()
            .get(&target.key())
            .await
            .map_err(|e| store_error(target, e))?
            .ok_or_else(|| target.not_found())?;
        Ok(super::convert::served(&target.def, decode_stored(&kv)?))
    }

    /// LIST: the `<Kind>List` object.
    pub async fn list(&self, target: &Target, params: &ListParams) -> Result<Value, ApiError> {
        let def = &target.def;
        let prefix = def.list_prefix(target.namespace.as_deref());
        let (mut revision, mut start_after) = match &params.continue_token {
            Some(token) => {
                let token = decode_token(token)?;
                (
                    Some(token.revision),
                    Some(format!("{prefix}{}", token.start_after)),
                )
            }
            None => (None, None),
        };
        if revision.is_none() && params.resource_version_match.as_deref() == Some("Exact") {
            revision = parse_revision(params.resource_version.as_deref())?;
        }
        let filtered = !params.labels.is_empty() || !params.fields.is_empty();
        let mut items = Vec::new();
        let mut more = false;
        let mut last_key = None;
        let mut read_revision = revision;
        loop {
            let want = params.limit.map(|l| l.saturating_sub(items.len()));
            let page_limit = match (want, filtered) {
                (Some(n), false) => Some(n),
                (_, true) => Some(SCAN_PAGE),
                (None, false) => None,
            };
            let page = self
                .store()
                .list(&ListOptions {
                    prefix: prefix.clone(),
                    limit: page_limit,
                    start_after: start_after.clone(),
                    revision: read_revision,
                })
                .await
                .map_err(|e| store_error(target, e))?;
            read_revision = Some(page.revision);
            let mut stopped_early = false;
            for kv in &page.items {
                if params.limit.is_some_and(|l| items.len() >= l) {
                    stopped_early = true;
                    break;
                }
                last_key = Some(kv.key.clone());
                let object = super::convert::served(def, decode_stored(kv)?);
                if matches(target, params, &object)? {
                    items.push(with_type(object, def));
                }
            }
            if stopped_early {
                more = true;
                break;
            }
            if !page.more {
                break;
            }
            if params.limit.is_some_and(|l| items.len() >= l) {
                more = true;
                break;
            }
            start_after = last_key.clone();
        }
        let revision = read_revision.unwrap_or_default();
        let mut metadata = json!({"resourceVersion": revision.to_string()});
        if more && let Some(last) = &last_key {
            let token = ContinueToken {
                revision,
                start_after: last.strip_prefix(&prefix).unwrap_or(last).to_string(),
            };
            metadata["continue"] = json!(encode_token(&token));
        }
        Ok(json!({
            "kind": format!("{}List", def.kind),
            "apiVersion": def.api_version(),
            "metadata": metadata,
            "items": items,
        }))
    }
}

/// Sets `apiVersion` and `kind` on an object (stored objects always have them; this guards
/// old or hand-written data).
pub fn with_type(mut object: Value, def: &crate::apiserver::catalog::ResourceDef) -> Value {
    if let Some(map) = object.as_object_mut() {
        map.entry("apiVersion")
            .or_insert_with(|| json!(def.api_version()));
        map.entry("kind").or_insert_with(|| json!(def.kind));
    }
    object
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip_and_reject_garbage() {
        let token = ContinueToken {
            revision: 42,
            start_after: "default/web-1".into(),
        };
        assert_eq!(decode_token(&encode_token(&token)).expect("decode"), token);
        for bad in ["", "!!", "e30", "eyJ2IjoieCJ9"] {
            assert!(decode_token(bad).is_err(), "{bad}");
        }
    }
}
