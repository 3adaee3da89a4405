//! GET and LIST: one object, or a filtered, paged list read at one store revision
//! (`limit`/`continue` tokens carry the revision so every page is consistent, as upstream;
//! `resourceVersion`/`resourceVersionMatch` as [`list_semantics`] plans them).

use serde_json::{Value, json};

use super::list_semantics::{self, ContinueToken, FRESHNESS_WAIT};
use super::object::{decode_stored, labels};
use super::{Registry, Target, store_error};
use crate::apiserver::errors::ApiError;
use crate::apiserver::kinds::strategy_for;
use crate::apiserver::selectors::{FieldSelector, LabelSelector};
use crate::storage::{KeyValue, ListOptions, StoreError};

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

/// A LIST as read from the store: the matching stored objects, undecoded, and the list's
/// `metadata` (`resourceVersion`, `continue`, `remainingItemCount`). [`crate::apiserver::list_http`]
/// encodes it without holding every object decoded at once.
#[derive(Debug)]
pub struct RawList {
    pub metadata: Value,
    pub items: Vec<KeyValue>,
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
        decode_stored(&kv)
    }

    /// LIST: the `<Kind>List` object.
    pub async fn list(&self, target: &Target, params: &ListParams) -> Result<Value, ApiError> {
        let raw = self.list_raw(target, params).await?;
        let items = raw
            .items
            .iter()
            .map(|kv| decode_stored(kv).map(|o| with_type(o, &target.def)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(json!({
            "kind": format!("{}List", target.def.kind),
            "apiVersion": target.def.api_version(),
            "metadata": raw.metadata,
            "items": items,
        }))
    }

    /// Waits (up to [`FRESHNESS_WAIT`]) until the store has reached `revision`; then 504
    /// `Too large resource version`, as upstream.
    pub async fn wait_fresh(&self, target: &Target, revision: i64) -> Result<(), ApiError> {
        let deadline = tokio::time::Instant::now() + FRESHNESS_WAIT;
        loop {
            let current = self
                .store()
                .current_revision()
                .await
                .map_err(|e| store_error(target, e))?;
            if current >= revision {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(list_semantics::too_large(revision, current));
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// LIST: the stored objects that match, read at one revision (see [`list_semantics`]).
    pub async fn list_raw(
        &self,
        target: &Target,
        params: &ListParams,
    ) -> Result<RawList, ApiError> {
        let def = &target.def;
        let prefix = def.list_prefix(target.namespace.as_deref());
        let plan = list_semantics::plan(
            params.resource_version.as_deref(),
            params.resource_version_match.as_deref(),
            params.limit,
            params.continue_token.as_deref(),
        )?;
        if let Some(revision) = plan.not_older_than.or(plan.exact) {
            self.wait_fresh(target, revision).await?;
        }
        let mut start_after = plan
            .token
            .as_ref()
            .map(|token| format!("{prefix}{}", token.start_after));
        let returned_before = plan.token.as_ref().map_or(0, |t| t.returned);
        let filtered = !params.labels.is_empty() || !params.fields.is_empty();
        let mut items = Vec::new();
        let mut more = false;
        let mut last_key = None;
        let mut read_revision = plan.exact;
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
                .map_err(|e| match (e, &plan.token) {
                    (StoreError::Compacted { .. }, Some(token)) if token.revision > 0 => {
                        list_semantics::expired_continue(token)
                    }
                    (StoreError::Compacted { .. }, None) if plan.exact.is_some() => {
                        ApiError::expired(list_semantics::EXPIRED_LIST)
                    }
                    (e, _) => store_error(target, e),
                })?;
            read_revision = Some(page.revision);
            let page_more = page.more;
            let mut stopped_early = false;
            for kv in page.items {
                if params.limit.is_some_and(|l| items.len() >= l) {
                    stopped_early = true;
                    break;
                }
                last_key = Some(kv.key.clone());
                if !filtered || matches(target, params, &decode_stored(&kv)?)? {
                    items.push(kv);
                }
            }
            if stopped_early {
                more = true;
                break;
            }
            if !page_more {
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
            let returned = returned_before + items.len() as u64;
            let token = ContinueToken {
                revision,
                start_after: last.strip_prefix(&prefix).unwrap_or(last).to_string(),
                returned,
            };
            metadata["continue"] = json!(token.encode());
            if !filtered {
                // Upstream counts the keys after this page at the list's revision; this counts
                // the keys now, exact unless the prefix changed since the first page.
                let total = self
                    .store()
                    .count(&prefix)
                    .await
                    .map_err(|e| store_error(target, e))?;
                metadata["remainingItemCount"] = json!(total.saturating_sub(returned));
            }
        }
        Ok(RawList { metadata, items })
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
