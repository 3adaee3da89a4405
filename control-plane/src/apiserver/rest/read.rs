//! GET and LIST: one object, or a filtered, paged list read at one store revision
//! (`limit`/`continue` tokens carry the revision so every page is consistent, as upstream;
//! `resourceVersion`/`resourceVersionMatch` as [`list_semantics`] plans them).

use std::sync::Arc;

use serde_json::{Value, json};

use super::list_semantics::{self, ContinueToken, FRESHNESS_WAIT};
use super::object::{decode_stored, labels};
use super::{Registry, Target, store_error};
use crate::apiserver::errors::ApiError;
use crate::apiserver::selectors::{FieldSelector, LabelSelector};
use crate::storage::{KeyValue, ListOptions, Store, StoreError};

/// How many keys a list reads per store page.
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
    let strategy = target.def.strategy();
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
/// `metadata` (`resourceVersion`, `continue`, `remainingItemCount`).
#[derive(Debug)]
pub struct RawList {
    pub metadata: Value,
    pub items: Vec<KeyValue>,
}

/// A LIST being read at one revision, at most [`SCAN_PAGE`] keys per store read, so a LIST of
/// many objects can be encoded while it is read ([`crate::apiserver::list_http`]).
#[derive(Debug)]
pub struct ListCursor {
    store: Arc<dyn Store>,
    target: Target,
    params: ListParams,
    prefix: String,
    token: Option<ContinueToken>,
    exact: Option<i64>,
    start_after: Option<String>,
    read_revision: Option<i64>,
    filtered: bool,
    emitted: usize,
    last_key: Option<String>,
    more: bool,
    done: bool,
}

impl ListCursor {
    /// The next matching objects (possibly none when a selector filtered a page out);
    /// `None` once the list is complete.
    pub async fn next(&mut self) -> Result<Option<Vec<KeyValue>>, ApiError> {
        if self.done {
            return Ok(None);
        }
        let limit = self.params.limit;
        let page_limit = match limit {
            Some(l) if !self.filtered => l.saturating_sub(self.emitted).min(SCAN_PAGE),
            _ => SCAN_PAGE,
        };
        let page = self
            .store
            .list(&ListOptions {
                prefix: self.prefix.clone(),
                limit: Some(page_limit),
                start_after: self.start_after.clone(),
                revision: self.read_revision.or(self.exact),
            })
            .await
            .map_err(|e| match (e, &self.token) {
                (StoreError::Compacted { .. }, Some(token)) if token.revision > 0 => {
                    list_semantics::expired_continue(token)
                }
                (StoreError::Compacted { .. }, None) if self.exact.is_some() => {
                    ApiError::expired(list_semantics::EXPIRED_LIST)
                }
                (e, _) => store_error(&self.target, e),
            })?;
        self.read_revision = Some(page.revision);
        let mut out = Vec::new();
        let mut stopped_early = false;
        for kv in page.items {
            if limit.is_some_and(|l| self.emitted >= l) {
                stopped_early = true;
                break;
            }
            self.last_key = Some(kv.key.clone());
            let kv = super::convert::served_kv(&self.target.def, kv)?;
            if !self.filtered || matches(&self.target, &self.params, &decode_stored(&kv)?)? {
                self.emitted += 1;
                out.push(kv);
            }
        }
        if stopped_early || (page.more && limit.is_some_and(|l| self.emitted >= l)) {
            self.more = true;
            self.done = true;
        } else if !page.more {
            self.done = true;
        } else {
            self.start_after = self.last_key.clone();
        }
        Ok(Some(out))
    }

    /// The revision the list is read at (known after the first [`Self::next`]).
    pub fn revision(&self) -> i64 {
        self.read_revision.unwrap_or_default()
    }

    /// The list's `metadata`, once [`Self::next`] returned `None`.
    pub async fn metadata(&self) -> Result<Value, ApiError> {
        let revision = self.revision();
        let mut metadata = json!({"resourceVersion": revision.to_string()});
        if self.more
            && let Some(last) = &self.last_key
        {
            let returned = self.token.as_ref().map_or(0, |t| t.returned) + self.emitted as u64;
            let token = ContinueToken {
                revision,
                start_after: last.strip_prefix(&self.prefix).unwrap_or(last).to_string(),
                returned,
            };
            metadata["continue"] = json!(token.encode());
            if !self.filtered {
                // Upstream counts the keys after this page at the list's revision; this counts
                // the keys now, exact unless the prefix changed since the first page.
                let total = self
                    .store
                    .count(&self.prefix)
                    .await
                    .map_err(|e| store_error(&self.target, e))?;
                metadata["remainingItemCount"] = json!(total.saturating_sub(returned));
            }
        }
        Ok(metadata)
    }
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
        Ok(super::convert::served(
            &target.def,
            with_type(decode_stored(&kv)?, &target.def),
        ))
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

    /// Starts a LIST (see [`list_semantics`] for what the parameters mean).
    pub async fn list_cursor(
        &self,
        target: &Target,
        params: &ListParams,
    ) -> Result<ListCursor, ApiError> {
        let prefix = target.def.list_prefix(target.namespace.as_deref());
        let plan = list_semantics::plan(
            params.resource_version.as_deref(),
            params.resource_version_match.as_deref(),
            params.limit,
            params.continue_token.as_deref(),
        )?;
        if let Some(revision) = plan.not_older_than.or(plan.exact) {
            self.wait_fresh(target, revision).await?;
        }
        Ok(ListCursor {
            store: self.store().clone(),
            target: target.clone(),
            params: params.clone(),
            start_after: plan
                .token
                .as_ref()
                .map(|token| format!("{prefix}{}", token.start_after)),
            prefix,
            token: plan.token,
            exact: plan.exact,
            read_revision: None,
            filtered: !params.labels.is_empty() || !params.fields.is_empty(),
            emitted: 0,
            last_key: None,
            more: false,
            done: false,
        })
    }

    /// LIST: the stored objects that match, all at once.
    pub async fn list_raw(
        &self,
        target: &Target,
        params: &ListParams,
    ) -> Result<RawList, ApiError> {
        let mut cursor = self.list_cursor(target, params).await?;
        let mut items = Vec::new();
        while let Some(batch) = cursor.next().await? {
            items.extend(batch);
        }
        Ok(RawList {
            metadata: cursor.metadata().await?,
            items,
        })
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
    if let Some(custom) = &def.custom {
        custom.on_read(&mut object, &def.api_version());
    }
    object
}
