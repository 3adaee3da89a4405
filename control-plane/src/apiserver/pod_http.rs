//! HTTP glue of the POST-only pod subresources: `pods/<name>/binding`, the legacy
//! `bindings` collection, and `pods/<name>/eviction` (the REST logic is in
//! [`rest::binding`](super::rest::binding) and [`rest::eviction`](super::rest::eviction)).

use http::{Response, StatusCode};

use super::errors::ApiError;
use super::handler::ApiHandler;
use super::http_util::{Body, json_response};
use super::request::Query;
use super::rest::Target;

/// Whether a create addresses one of these.
pub fn handles(target: &Target) -> bool {
    let def = &target.def;
    (def.group.is_empty() && def.plural == "bindings")
        || (def.group.is_empty()
            && def.plural == "pods"
            && matches!(target.subresource.as_deref(), Some("binding" | "eviction")))
}

/// Serves the POST.
pub async fn create(
    handler: &ApiHandler,
    target: &Target,
    content_type: Option<&str>,
    bytes: &[u8],
    query: &Query,
) -> Result<Response<Body>, ApiError> {
    let body = super::verbs::decode_body(content_type, bytes)?;
    let dry_run = query.all("dryRun").iter().any(|v| v == "All");
    let pods = if target.def.plural == "bindings" {
        let def = handler
            .registry
            .catalog()
            .lookup("", "v1", "pods")
            .cloned()
            .ok_or_else(ApiError::page_not_found)?;
        Target {
            def,
            name: None,
            subresource: None,
            namespace: target.namespace.clone(),
        }
    } else {
        target.clone()
    };
    let (code, status) = match target.subresource.as_deref() {
        Some("eviction") => handler.registry.evict(&pods, &body, dry_run).await?,
        _ => (
            201,
            handler
                .registry
                .create_binding(&pods, &body, dry_run)
                .await?,
        ),
    };
    let code = StatusCode::from_u16(code).unwrap_or(StatusCode::CREATED);
    Ok(json_response(code, &status))
}
