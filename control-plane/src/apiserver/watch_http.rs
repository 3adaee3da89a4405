//! Watch over HTTP: a chunked stream of `{"type":..,"object":..}` lines, flushed per event.
//! Bookmarks when `allowWatchBookmarks=true` (periodically, and the
//! `k8s.io/initial-events-end` one for `sendInitialEvents=true`), objects as one-row Tables
//! for `kubectl get -w`, `timeoutSeconds` honoured (else a long random timeout, as upstream),
//! and an `ERROR` event carrying the Status when the watch fails (e.g. 410 Expired).

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::errors::ApiError;
use super::handler::ApiHandler;
use super::http_util::{Body, error_response};
use super::request::Query;
use super::rest::Target;
use super::rest::list_semantics::{invalid_options, validate_watch};
use super::rest::object::unix_now;
use super::rest::watch::{WatchItem, WatchParams};
use super::table::{IncludeObject, table, wants_table};
use super::verbs::list_params;

/// How often a watch with bookmarks enabled gets one while idle.
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(30);
/// The last bookmark goes out this long before the watch's timeout.
const LAST_BOOKMARK_BEFORE_END: Duration = Duration::from_secs(2);
/// Without `timeoutSeconds`, a watch lasts between this and twice this (as upstream's
/// `--min-request-timeout`, 30 minutes).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

/// Starts a watch response.
pub async fn serve_watch(
    handler: &ApiHandler,
    target: &Target,
    query: &Query,
    accept: &str,
) -> Response<Body> {
    match start(handler, target, query, accept).await {
        Ok(response) => response,
        Err(e) => error_response(&e),
    }
}

async fn start(
    handler: &ApiHandler,
    target: &Target,
    query: &Query,
    accept: &str,
) -> Result<Response<Body>, ApiError> {
    let list = list_params(query)?;
    let bookmarks = query.flag("allowWatchBookmarks");
    let send_initial_events = query.flag("sendInitialEvents");
    let mut causes = validate_watch(
        list.resource_version_match.as_deref(),
        list.continue_token.as_deref(),
        query
            .get("sendInitialEvents")
            .map(|v| v == "true" || v == "1"),
    );
    if send_initial_events && !bookmarks {
        causes.push(super::errors::Cause::forbidden(
            "allowWatchBookmarks",
            "sendInitialEvents requires setting allowWatchBookmarks to true",
        ));
    }
    invalid_options(causes)?;
    let timeout = match query.get("timeoutSeconds") {
        Some(text) => Duration::from_secs(
            text.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds: {text:?}")))?,
        ),
        None => {
            DEFAULT_TIMEOUT + Duration::from_secs((unix_now() as u64) % DEFAULT_TIMEOUT.as_secs())
        }
    };
    let params = WatchParams {
        list,
        send_initial_events,
    };
    let mut stream = Box::pin(handler.registry.watch(target, &params).await?);
    let as_table = wants_table(accept);
    let include = IncludeObject::parse(query.get("includeObject"));
    let target = target.clone();
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut bookmark = tokio::time::interval(BOOKMARK_INTERVAL);
        bookmark.tick().await;
        // As upstream, a last bookmark shortly before the watch times out, so the client
        // resumes from the newest revision.
        let last_bookmark = tokio::time::sleep(timeout.saturating_sub(LAST_BOOKMARK_BEFORE_END));
        tokio::pin!(last_bookmark);
        let mut last_bookmark_sent = false;
        let mut revision = 0i64;
        loop {
            let line = tokio::select! {
                _ = &mut deadline => break,
                _ = tx.closed() => break,
                _ = bookmark.tick(), if bookmarks && revision > 0 => {
                    Some(event_line("BOOKMARK", &bookmark_object(&target, revision, false)))
                }
                _ = &mut last_bookmark, if bookmarks
                    && revision > 0
                    && !last_bookmark_sent
                    && timeout > LAST_BOOKMARK_BEFORE_END => {
                    last_bookmark_sent = true;
                    Some(event_line("BOOKMARK", &bookmark_object(&target, revision, false)))
                }
                item = stream.next() => match item {
                    None => break,
                    Some(WatchItem::Progress { revision: r }) => {
                        revision = revision.max(r);
                        None
                    }
                    Some(WatchItem::InitialEventsEnd { revision: r }) => {
                        revision = revision.max(r);
                        Some(event_line("BOOKMARK", &bookmark_object(&target, r, true)))
                    }
                    Some(WatchItem::Event { kind, object }) => {
                        if let Some(r) = object
                            .pointer("/metadata/resourceVersion")
                            .and_then(Value::as_str)
                            .and_then(|s| s.parse::<i64>().ok())
                        {
                            revision = revision.max(r);
                        }
                        let object = if as_table {
                            let metadata = json!({"resourceVersion": revision.to_string()});
                            table(&target.def, &[object], &metadata, include, unix_now())
                        } else {
                            object
                        };
                        Some(event_line(kind, &object))
                    }
                    Some(WatchItem::Error(e)) => {
                        let _ = tx.send(event_line("ERROR", &e.to_status())).await;
                        break;
                    }
                },
            };
            if let Some(line) = line
                && tx.send(line).await.is_err()
            {
                break;
            }
        }
    });
    let body = StreamBody::new(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|bytes| (Ok::<_, Infallible>(Frame::data(bytes)), rx))
    }));
    let mut response = Response::new(body.boxed_unsync());
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

fn bookmark_object(target: &Target, revision: i64, initial_events_end: bool) -> Value {
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if initial_events_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"kind": target.def.kind, "apiVersion": target.def.api_version(), "metadata": metadata})
}
