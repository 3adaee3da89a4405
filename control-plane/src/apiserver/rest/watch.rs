//! WATCH: the initial state (synthetic ADDED events, for `resourceVersion` unset/0 or
//! `sendInitialEvents=true`), then every change after the start revision in order, filtered
//! by the selectors with upstream's transitions (an object that stops matching is DELETED, one
//! that starts matching is ADDED). Resuming from a compacted revision is `410 Expired`, sent
//! as the watch's one event (as upstream's watch cache does).

use futures::StreamExt;
use serde_json::Value;

use super::object::decode_stored;
use super::read::{ListParams, matches, with_type};
use super::{Registry, Target, parse_revision, store_error};
use crate::apiserver::errors::ApiError;
use crate::storage::{EventKind, ListOptions};

/// Parameters of a WATCH.
#[derive(Debug, Clone, Default)]
pub struct WatchParams {
    pub list: ListParams,
    pub send_initial_events: bool,
}

/// One item of a watch stream.
#[derive(Debug, Clone)]
pub enum WatchItem {
    /// `ADDED`, `MODIFIED` or `DELETED` with the object.
    Event { kind: &'static str, object: Value },
    /// The end of the initial events (`k8s.io/initial-events-end`), at this revision.
    InitialEventsEnd { revision: i64 },
    /// A revision the watcher has seen everything up to (for bookmarks).
    Progress { revision: i64 },
    /// The watch failed; the stream ends after this.
    Error(ApiError),
}

impl Registry {
    /// Starts a watch.
    pub async fn watch(
        &self,
        target: &Target,
        params: &WatchParams,
    ) -> Result<futures::stream::BoxStream<'static, WatchItem>, ApiError> {
        let def = target.def.clone();
        let mut list_params = params.list.clone();
        if let Some(name) = &target.name {
            let by_name =
                crate::apiserver::selectors::FieldSelector::parse(&format!("metadata.name={name}"))
                    .map_err(ApiError::bad_request)?;
            list_params.fields.requirements.extend(by_name.requirements);
        }
        let list_target = Target {
            name: None,
            ..target.clone()
        };
        let prefix = def.list_prefix(target.namespace.as_deref());
        let requested = parse_revision(params.list.resource_version.as_deref())?;
        let mut initial = Vec::new();
        if params.send_initial_events
            && let Some(rv) = requested.filter(|rv| *rv > 0)
        {
            // The initial state must be at least as new as asked (NotOlderThan).
            self.wait_fresh(&list_target, rv).await?;
        }
        let start = match (params.send_initial_events, requested) {
            (false, Some(rv)) if rv > 0 => rv,
            _ => {
                let page = self
                    .store()
                    .list(&ListOptions {
                        prefix: prefix.clone(),
                        ..ListOptions::default()
                    })
                    .await
                    .map_err(|e| store_error(&list_target, e))?;
                for kv in &page.items {
                    let object = super::convert::served(&def, decode_stored(kv)?);
                    if matches(&list_target, &list_params, &object)? {
                        initial.push(WatchItem::Event {
                            kind: "ADDED",
                            object: with_type(object, &def),
                        });
                    }
                }
                if params.send_initial_events {
                    initial.push(WatchItem::InitialEventsEnd {
                        revision: page.revision,
                    });
                }
                page.revision
            }
        };
        // The revision the watcher is at from the start (bookmarks carry it while idle).
        initial.push(WatchItem::Progress { revision: start });
        let changes = match self.store().watch(&prefix, start).await {
            Ok(changes) => changes,
            // As upstream's watch cache: the watch starts, and its one event is the 410.
            Err(e @ crate::storage::StoreError::Compacted { .. }) => {
                let error = WatchItem::Error(store_error(&list_target, e));
                return Ok(futures::stream::iter(vec![error])
                    .chain(futures::stream::empty())
                    .boxed());
            }
            Err(e) => return Err(store_error(&list_target, e)),
        };
        let mut ended = false;
        let live = changes.filter_map(move |item| {
            let out = match item {
                Err(e) => Some(WatchItem::Error(store_error(&list_target, e))),
                Ok(event) => translate(&list_target, &list_params, &event),
            };
            futures::future::ready(out)
        });
        Ok(futures::stream::iter(initial)
            .chain(live)
            .take_while(move |item| {
                let go = !ended;
                ended |= matches!(item, WatchItem::Error(_));
                futures::future::ready(go)
            })
            .boxed())
    }
}

/// A store change as a watch item for these selectors (`None`: not visible to the watcher,
/// reported as progress so bookmarks advance).
fn translate(
    target: &Target,
    params: &ListParams,
    event: &crate::storage::WatchEvent,
) -> Option<WatchItem> {
    let revision = event.kv.mod_revision;
    let decoded = |kv: &crate::storage::KeyValue| {
        decode_stored(kv).map(|o| with_type(super::convert::served(&target.def, o), &target.def))
    };
    let result = (|| -> Result<Option<WatchItem>, ApiError> {
        match event.kind {
            EventKind::Delete => {
                let object = decoded(&event.kv)?;
                Ok(
                    matches(target, params, &object)?.then_some(WatchItem::Event {
                        kind: "DELETED",
                        object,
                    }),
                )
            }
            EventKind::Put => {
                let object = decoded(&event.kv)?;
                let now = matches(target, params, &object)?;
                let before = match &event.prev {
                    Some(prev) => matches(target, params, &decoded(prev)?)?,
                    None => false,
                };
                Ok(match (before, now, event.prev.is_some()) {
                    (_, true, false) | (false, true, true) => Some(WatchItem::Event {
                        kind: "ADDED",
                        object,
                    }),
                    (true, true, true) => Some(WatchItem::Event {
                        kind: "MODIFIED",
                        object,
                    }),
                    (true, false, _) => Some(WatchItem::Event {
                        kind: "DELETED",
                        object,
                    }),
                    _ => None,
                })
            }
        }
    })();
    match result {
        Ok(Some(item)) => Some(item),
        Ok(None) => Some(WatchItem::Progress { revision }),
        Err(e) => Some(WatchItem::Error(e)),
    }
}
