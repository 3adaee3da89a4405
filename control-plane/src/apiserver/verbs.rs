//! Resource verbs over HTTP: decodes the request (query parameters, body by Content-Type),
//! calls the [`Registry`](super::rest::Registry), and encodes the answer (JSON, or a Table
//! when asked). Virtual review resources go to [`super::reviews`], watches to
//! [`super::watch_http`].

use http::request::Parts;
use http::{Response, StatusCode, header};
use serde_json::{Value, json};

use super::authn::UserInfo;
use super::errors::ApiError;
use super::handler::ApiHandler;
use super::http_util::{
    Body, add_warnings, decode_object, error_response, json_response, media_type, read_body,
};
use super::patch::PatchType;
use super::request::{Query, ResourceRequest, Verb};
use super::rest::Target;
use super::rest::delete::DeleteOptions;
use super::rest::object::{FieldValidation, unix_now};
use super::rest::read::ListParams;
use super::rest::write::{Patch, WriteParams, WriteResult};
use super::selectors::{FieldSelector, LabelSelector};
use super::table::{IncludeObject, table, wants_table};

/// Serves a resource request.
#[allow(clippy::too_many_arguments)]
pub async fn serve<B>(
    handler: &ApiHandler,
    user: &UserInfo,
    request: ResourceRequest,
    target: Target,
    parts: Parts,
    body: B,
    query: Query,
    accept: &str,
) -> Response<Body>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let verb_name = request.verb.as_str();
    let allowed = match &target.subresource {
        Some(sub) => target
            .def
            .subresources
            .iter()
            .find(|s| &s.name == sub)
            .is_some_and(|s| s.verbs.iter().any(|v| v == verb_name)),
        None => target.def.supports(verb_name),
    };
    if !allowed {
        return error_response(&ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        ));
    }
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let user_agent = parts
        .headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    if super::kubelet_proxy::handles(&target) {
        return super::kubelet_proxy::serve(handler, &target, parts, body, &query).await;
    }
    if target.subresource.as_deref() == Some("scale") {
        return scale(
            handler,
            &request,
            &target,
            content_type.as_deref(),
            body,
            &query,
            user_agent,
        )
        .await
        .unwrap_or_else(|e| error_response(&e));
    }
    let ct = content_type.as_deref();
    let bytes = match request.verb {
        Verb::Get | Verb::List | Verb::Watch => bytes::Bytes::new(),
        _ => match read_body(body).await {
            Ok(bytes) => bytes,
            Err(e) => return error_response(&e),
        },
    };
    let result = match request.verb {
        Verb::Get => handler
            .registry
            .get(&target)
            .await
            .map(|object| respond_object(&target, object, accept, &query, StatusCode::OK, &[])),
        Verb::List => {
            return super::list_http::serve_list(handler, &target, &query, accept).await;
        }
        Verb::Watch => {
            return super::watch_http::serve_watch(handler, &target, &query, accept).await;
        }
        Verb::Create if super::reviews::is_review(&target) => {
            let validation = FieldValidation::parse(query.get("fieldValidation"));
            let review = match validation {
                Ok(validation) => {
                    super::reviews::create_review(handler, user, &target, ct, &bytes, validation)
                        .await
                }
                Err(e) => Err(e),
            };
            review.map(|object| json_response(StatusCode::CREATED, &object))
        }
        Verb::Create if super::service_accounts::token_request::handles(&target) => {
            match decode_body(ct, &bytes) {
                Ok(body) => {
                    super::service_accounts::token_request::create(
                        handler,
                        handler.authenticator.service_accounts().map(|a| &**a),
                        &target,
                        &body,
                    )
                    .await
                }
                Err(e) => Err(e),
            }
        }
        Verb::Create if super::pod_http::handles(&target) => {
            super::pod_http::create(handler, &target, ct, &bytes, &query).await
        }
        Verb::Create => create(handler, &target, ct, &bytes, &query, accept, user_agent).await,
        Verb::Update => update(handler, &target, ct, &bytes, &query, accept, user_agent).await,
        Verb::Patch => patch(handler, &target, ct, &bytes, &query, accept, user_agent).await,
        Verb::Delete => match delete_options(ct, &bytes, &query) {
            Ok(options) => handler
                .registry
                .delete(&target, &options)
                .await
                .map(|object| respond_object(&target, object, accept, &query, StatusCode::OK, &[])),
            Err(e) => Err(e),
        },
        Verb::DeleteCollection => delete_collection(handler, &target, ct, &bytes, &query).await,
    };
    result.unwrap_or_else(|e| error_response(&e))
}

/// An object answer, as JSON or as a one-row Table.
fn respond_object(
    target: &Target,
    object: Value,
    accept: &str,
    query: &Query,
    status: StatusCode,
    warnings: &[String],
) -> Response<Body> {
    let mut response = if wants_table(accept) && target.subresource.is_none() {
        let metadata = json!({"resourceVersion": object.pointer("/metadata/resourceVersion").cloned().unwrap_or(Value::Null)});
        json_response(
            status,
            &table(
                &target.def,
                &[object],
                &metadata,
                IncludeObject::parse(query.get("includeObject")),
                unix_now(),
            ),
        )
    } else {
        json_response(status, &object)
    };
    add_warnings(&mut response, warnings);
    response
}

/// LIST / WATCH query parameters.
pub fn list_params(query: &Query) -> Result<ListParams, ApiError> {
    let labels = LabelSelector::parse(query.get("labelSelector").unwrap_or_default())
        .map_err(ApiError::bad_request)?;
    let fields = FieldSelector::parse(query.get("fieldSelector").unwrap_or_default())
        .map_err(ApiError::bad_request)?;
    let limit = match query.get("limit") {
        None | Some("") => None,
        Some(text) => match text.parse::<i64>() {
            Ok(n) if n > 0 => Some(n as usize),
            Ok(_) => None,
            Err(_) => return Err(ApiError::bad_request(format!("invalid limit: {text:?}"))),
        },
    };
    Ok(ListParams {
        labels,
        fields,
        limit,
        continue_token: query
            .get("continue")
            .filter(|c| !c.is_empty())
            .map(String::from),
        resource_version: query.get("resourceVersion").map(String::from),
        resource_version_match: query.get("resourceVersionMatch").map(String::from),
    })
}

/// Write options from the query; the User-Agent names the field manager when the query
/// does not.
fn write_params(query: &Query, user_agent: Option<&str>) -> Result<WriteParams, ApiError> {
    let dry_run = match query.all("dryRun") {
        [] => false,
        values if values.iter().all(|v| v == "All") => true,
        values => {
            return Err(ApiError::bad_request(format!(
                "invalid dryRun value {values:?}: only \"All\" is supported"
            )));
        }
    };
    Ok(WriteParams {
        dry_run,
        field_manager: query.get("fieldManager").map(String::from),
        field_validation: FieldValidation::parse(query.get("fieldValidation"))?,
        force: match query.get("force") {
            None => None,
            Some("true") => Some(true),
            Some("false") => Some(false),
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "invalid force value {other:?}: must be true or false"
                )));
            }
        },
        user_agent: user_agent.map(String::from),
    })
}

/// Decodes a create/update body: JSON, YAML, or protobuf.
pub(super) fn decode_body(content_type: Option<&str>, bytes: &[u8]) -> Result<Value, ApiError> {
    let media = media_type(content_type);
    if media == "application/vnd.kubernetes.protobuf" {
        return super::protobuf_body::decode(bytes);
    }
    decode_object(&media, bytes)
}

async fn create(
    handler: &ApiHandler,
    target: &Target,
    content_type: Option<&str>,
    bytes: &[u8],
    query: &Query,
    accept: &str,
    user_agent: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let body = decode_body(content_type, bytes)?;
    let params = write_params(query, user_agent)?;
    if target.name.is_some() && target.subresource.is_none() {
        return Err(ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        ));
    }
    let result = handler.registry.create(target, body, &params).await?;
    Ok(respond_object(
        target,
        result.object,
        accept,
        query,
        StatusCode::CREATED,
        &result.warnings,
    ))
}

async fn update(
    handler: &ApiHandler,
    target: &Target,
    content_type: Option<&str>,
    bytes: &[u8],
    query: &Query,
    accept: &str,
    user_agent: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let body = decode_body(content_type, bytes)?;
    let params = write_params(query, user_agent)?;
    let result = handler.registry.update(target, body, &params).await?;
    Ok(respond_write(target, result, accept, query))
}

/// An update's or patch's answer: 201 when it created the object, else 200.
fn respond_write(
    target: &Target,
    result: WriteResult,
    accept: &str,
    query: &Query,
) -> Response<Body> {
    let status = if result.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    respond_object(
        target,
        result.object,
        accept,
        query,
        status,
        &result.warnings,
    )
}

async fn patch(
    handler: &ApiHandler,
    target: &Target,
    content_type: Option<&str>,
    bytes: &[u8],
    query: &Query,
    accept: &str,
    user_agent: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let params = write_params(query, user_agent)?;
    let patch = patch_body(content_type, bytes, true)?;
    let result = handler.registry.patch(target, patch, &params).await?;
    Ok(respond_write(target, result, accept, query))
}

/// DeleteOptions from the body (JSON or protobuf) and the query (query wins, as upstream).
fn delete_options(
    content_type: Option<&str>,
    bytes: &[u8],
    query: &Query,
) -> Result<DeleteOptions, ApiError> {
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        decode_body(content_type, bytes)?
    };
    let mut options = DeleteOptions::from_json(&body)?;
    if let Some(grace) = query.get("gracePeriodSeconds") {
        options.grace_period_seconds = Some(grace.parse().map_err(|_| {
            ApiError::bad_request(format!("invalid gracePeriodSeconds: {grace:?}"))
        })?);
    }
    if let Some(policy) = query.get("propagationPolicy") {
        options = DeleteOptions {
            propagation_policy: Some(policy.to_string()),
            ..options
        };
        DeleteOptions::from_json(&json!({"propagationPolicy": policy}))?;
    }
    if let Some(orphan) = query.get("orphanDependents") {
        options.orphan_dependents =
            Some(orphan.parse().map_err(|_| {
                ApiError::bad_request(format!("invalid orphanDependents: {orphan:?}"))
            })?);
    }
    if query.all("dryRun").iter().any(|v| v == "All") {
        options.dry_run = true;
    }
    Ok(options)
}

async fn delete_collection(
    handler: &ApiHandler,
    target: &Target,
    content_type: Option<&str>,
    bytes: &[u8],
    query: &Query,
) -> Result<Response<Body>, ApiError> {
    let options = delete_options(content_type, bytes, query)?;
    let params = ListParams {
        limit: None,
        continue_token: None,
        ..list_params(query)?
    };
    let list = handler.registry.list(target, &params).await?;
    let mut deleted = Vec::new();
    for item in list["items"].as_array().cloned().unwrap_or_default() {
        let one = Target {
            name: item
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .map(String::from),
            namespace: item
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .map(String::from)
                .or_else(|| target.namespace.clone()),
            ..target.clone()
        };
        match handler.registry.delete(&one, &options).await {
            Ok(object) => deleted.push(object),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let mut out = list;
    out["items"] = Value::Array(deleted);
    Ok(json_response(StatusCode::OK, &out))
}

/// The `scale` subresource.
async fn scale<B>(
    handler: &ApiHandler,
    request: &ResourceRequest,
    target: &Target,
    content_type: Option<&str>,
    body: B,
    query: &Query,
    user_agent: Option<&str>,
) -> Result<Response<Body>, ApiError>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let params = write_params(query, user_agent)?;
    let result = match request.verb {
        Verb::Get => {
            return Ok(json_response(
                StatusCode::OK,
                &handler.registry.get_scale(target).await?,
            ));
        }
        Verb::Update => {
            let wanted = decode_body(content_type, &read_body(body).await?)?;
            handler
                .registry
                .update_scale(target, |_| Ok(wanted.clone()), &params)
                .await?
        }
        Verb::Patch => {
            let bytes = read_body(body).await?;
            let patch = patch_body(content_type, &bytes, false)?;
            let conflict =
                || ApiError::modified(&target.def.group, &target.def.plural, target.name());
            handler
                .registry
                .update_scale(
                    target,
                    |current| super::rest::scale::patch_scale(current, &patch, conflict),
                    &params,
                )
                .await?
        }
        _ => {
            return Err(ApiError::method_not_allowed(
                "the server does not allow this method on the requested resource",
            ));
        }
    };
    Ok(json_response(StatusCode::OK, &result.object))
}

/// A PATCH body by its `Content-Type`: JSON, merge and strategic merge patches, and
/// server-side apply (`application/apply-patch+yaml`) where `apply` is served (not on scale).
fn patch_body(content_type: Option<&str>, bytes: &[u8], apply: bool) -> Result<Patch, ApiError> {
    let media = media_type(content_type);
    match PatchType::from_content_type(&media) {
        Some(patch_type) if apply || patch_type != PatchType::Apply => Ok(Patch {
            patch_type,
            body: bytes.to_vec(),
        }),
        _ => Err(ApiError::unsupported_media_type(&media)),
    }
}
