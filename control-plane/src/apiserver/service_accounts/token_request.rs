//! `POST /api/v1/namespaces/<ns>/serviceaccounts/<name>/token`: a TokenRequest
//! (`authentication.k8s.io/v1`) in, the same object with `status.token` and
//! `status.expirationTimestamp` out (201). As upstream's TokenREST: audiences default to the
//! apiserver's, `expirationSeconds` to 3600 (at least 600, shortened to [`MAX_EXPIRATION_SECONDS`]
//! with a warning), and a `boundObjectRef` (a v1 Pod or Secret) must exist, match its `uid`
//! when one is given, and a pod must run as this service account. Nothing is stored.

use http::{Response, StatusCode};
use serde_json::{Value, json};

use super::claims::{self, BoundObject, ObjectRef, TokenSpec};
use super::{TokenAuthority, fetch};
use crate::apiserver::errors::{ApiError, Cause};
use crate::apiserver::handler::ApiHandler;
use crate::apiserver::http_util::{Body, add_warnings, json_response};
use crate::apiserver::rest::Target;
use crate::apiserver::rest::object::{new_uid, unix_now};

/// `spec.expirationSeconds` when not given (upstream's v1 default).
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
/// The shortest lifetime a client may ask for (upstream's validation: ten minutes).
pub const MIN_EXPIRATION_SECONDS: i64 = 600;
/// Longer requests are shortened to this (upstream's `--service-account-max-token-expiration`
/// as kubeadm and most distributions set it: 48 hours).
pub const MAX_EXPIRATION_SECONDS: i64 = 48 * 3600;

const GROUP: &str = "authentication.k8s.io";
const KIND: &str = "TokenRequest";

/// Whether a create addresses `serviceaccounts/<name>/token`.
pub fn handles(target: &Target) -> bool {
    target.def.group.is_empty()
        && target.def.plural == "serviceaccounts"
        && target.subresource.as_deref() == Some("token")
}

/// The `spec.boundObjectRef` of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BoundRef {
    Pod { name: String, uid: Option<String> },
    Secret { name: String, uid: Option<String> },
}

/// A checked TokenRequest body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// Empty: the apiserver's audiences.
    pub audiences: Vec<String>,
    /// As asked (not yet shortened to the maximum).
    pub expiration_seconds: i64,
    pub bound: Option<BoundRef>,
    /// The request body's `spec.boundObjectRef`, echoed back.
    pub bound_json: Option<Value>,
}

/// Checks a TokenRequest body for service account `name` in `namespace`.
pub fn parse(body: &Value, namespace: &str, name: &str) -> Result<Parsed, ApiError> {
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    for (field, expected) in [("apiVersion", "authentication.k8s.io/v1"), ("kind", KIND)] {
        if let Some(v) = body
            .get(field)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
            && v != expected
        {
            return Err(ApiError::bad_request(format!(
                "the {field} in the data ({v}) does not match the expected {field} ({expected})"
            )));
        }
    }
    let mut causes = Vec::new();
    let meta = |f: &str| {
        body.pointer(&format!("/metadata/{f}"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    if let Some(n) = meta("name").filter(|n| *n != name) {
        causes.push(Cause::invalid(
            "metadata.name",
            &json!(n),
            "must match the service account name if specified",
        ));
    }
    if let Some(ns) = meta("namespace").filter(|ns| *ns != namespace) {
        causes.push(Cause::invalid(
            "metadata.namespace",
            &json!(ns),
            "must match the service account namespace if specified",
        ));
    }
    let spec = body.get("spec").unwrap_or(&Value::Null);
    let audiences = match spec.get("audiences") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => {
            let mut audiences = Vec::new();
            for (i, item) in items.iter().enumerate() {
                match item.as_str() {
                    Some(a) if !a.is_empty() => audiences.push(a.to_string()),
                    _ => causes.push(Cause::invalid(
                        format!("spec.audiences[{i}]"),
                        item,
                        "must be a non-empty string",
                    )),
                }
            }
            audiences
        }
        Some(other) => {
            causes.push(Cause::invalid(
                "spec.audiences",
                other,
                "must be a list of strings",
            ));
            Vec::new()
        }
    };
    let expiration_seconds = match spec.get("expirationSeconds") {
        None | Some(Value::Null) => DEFAULT_EXPIRATION_SECONDS,
        Some(v) => match v.as_i64() {
            Some(s) if s < MIN_EXPIRATION_SECONDS => {
                causes.push(Cause::invalid(
                    "spec.expirationSeconds",
                    v,
                    "may not specify a duration less than 10 minutes",
                ));
                s
            }
            Some(s) if s > 1 << 32 => {
                causes.push(Cause::invalid(
                    "spec.expirationSeconds",
                    v,
                    "may not specify a duration larger than 2^32 seconds",
                ));
                s
            }
            Some(s) => s,
            None => {
                causes.push(Cause::invalid(
                    "spec.expirationSeconds",
                    v,
                    "must be an integer number of seconds",
                ));
                0
            }
        },
    };
    let bound_json = spec.get("boundObjectRef").filter(|r| !r.is_null()).cloned();
    let bound = match &bound_json {
        None => None,
        Some(r) => {
            let text = |f: &str| r.get(f).and_then(Value::as_str).unwrap_or_default();
            let (kind, api_version) = (text("kind"), text("apiVersion"));
            let ref_name = text("name").to_string();
            let uid = Some(text("uid").to_string()).filter(|u| !u.is_empty());
            if ref_name.is_empty() {
                causes.push(Cause::required("spec.boundObjectRef.name"));
            }
            // Upstream parses apiVersion + kind into a group/version/kind and accepts only
            // the core group ("v1", or no apiVersion at all).
            let core = matches!(api_version, "" | "v1");
            match kind {
                "Pod" if core => Some(BoundRef::Pod {
                    name: ref_name,
                    uid,
                }),
                "Secret" if core => Some(BoundRef::Secret {
                    name: ref_name,
                    uid,
                }),
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "cannot bind token to object of type {api_version}, Kind={kind} \
                         (spec.boundObjectRef: only v1 Pod and Secret are supported)"
                    )));
                }
            }
        }
    };
    if !causes.is_empty() {
        return Err(ApiError::invalid(GROUP, KIND, name, causes));
    }
    Ok(Parsed {
        audiences,
        expiration_seconds,
        bound,
        bound_json,
    })
}

/// What the bound object turned out to be, or why it cannot be bound.
async fn resolve_bound(
    handler: &ApiHandler,
    namespace: &str,
    service_account: &str,
    bound: &BoundRef,
) -> Result<BoundObject, ApiError> {
    let registry = &handler.registry;
    let (plural, name, uid) = match bound {
        BoundRef::Pod { name, uid } => ("pods", name, uid),
        BoundRef::Secret { name, uid } => ("secrets", name, uid),
    };
    let object = fetch(registry, plural, Some(namespace), name)
        .await?
        .ok_or_else(|| ApiError::not_found("", plural, name))?;
    let current = ObjectRef::of(&object);
    if let Some(uid) = uid
        && *uid != current.uid
    {
        return Err(ApiError::conflict(
            "",
            plural,
            name,
            &format!(
                "the UID in the bound object reference ({uid}) does not match the UID in \
                 record ({}). The object might have been deleted and then recreated",
                current.uid
            ),
        ));
    }
    if matches!(bound, BoundRef::Secret { .. }) {
        return Ok(BoundObject::Secret(current));
    }
    // Without the ServiceAccount admission plugin a pod may carry no name: it runs as
    // `default`.
    let runs_as = object
        .pointer("/spec/serviceAccountName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or("default");
    if runs_as != service_account {
        return Err(ApiError::bad_request(format!(
            "cannot bind token for serviceaccount {service_account:?} to pod {name:?} running \
             with different serviceaccount name ({runs_as:?})"
        )));
    }
    let node_name = object
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let node = fetch(registry, "nodes", None, node_name)
        .await
        .ok()
        .flatten()
        .map(|n| ObjectRef::of(&n));
    Ok(BoundObject::Pod { pod: current, node })
}

/// Serves the POST.
pub async fn create(
    handler: &ApiHandler,
    authority: Option<&TokenAuthority>,
    target: &Target,
    body: &Value,
) -> Result<Response<Body>, ApiError> {
    let namespace = target.namespace.clone().unwrap_or_default();
    let name = target.name();
    let parsed = parse(body, &namespace, name)?;
    let authority = authority.ok_or_else(|| {
        ApiError::service_unavailable(
            "service account tokens are not available: the apiserver has no signing key (sa.key)",
        )
    })?;
    let service_account = fetch(&handler.registry, "serviceaccounts", Some(&namespace), name)
        .await?
        .ok_or_else(|| ApiError::not_found("", "serviceaccounts", name))?;
    let bound = match &parsed.bound {
        Some(b) => resolve_bound(handler, &namespace, name, b).await?,
        None => BoundObject::None,
    };
    let mut warnings = Vec::new();
    let mut expiration_seconds = parsed.expiration_seconds;
    if expiration_seconds > MAX_EXPIRATION_SECONDS {
        warnings.push(format!(
            "requested expiration of {expiration_seconds} seconds shortened to \
             {MAX_EXPIRATION_SECONDS} seconds"
        ));
        expiration_seconds = MAX_EXPIRATION_SECONDS;
    }
    let audiences = if parsed.audiences.is_empty() {
        authority.audiences().to_vec()
    } else {
        parsed.audiences.clone()
    };
    let spec = TokenSpec {
        issuer: authority.issuer().to_string(),
        namespace: namespace.clone(),
        service_account: ObjectRef::of(&service_account),
        bound,
        audiences: audiences.clone(),
        expiration_seconds,
    };
    let now = unix_now();
    let claims = claims::build(&spec, now, Some(new_uid()));
    let token = authority
        .sign(&claims)
        .map_err(|e| ApiError::internal(format!("signing the token: {e}")))?;
    let mut out_spec = json!({"audiences": audiences, "expirationSeconds": expiration_seconds});
    if let Some(r) = parsed.bound_json {
        out_spec["boundObjectRef"] = r;
    }
    let answer = json!({
        "kind": KIND,
        "apiVersion": format!("{GROUP}/v1"),
        "metadata": {
            "name": name,
            "namespace": namespace,
            "creationTimestamp": rfc3339(now),
        },
        "spec": out_spec,
        "status": {"token": token, "expirationTimestamp": rfc3339(claims.exp)},
    });
    let mut response = json_response(StatusCode::CREATED, &answer);
    add_warnings(&mut response, &warnings);
    Ok(response)
}

fn rfc3339(seconds: i64) -> String {
    k8s_openapi::jiff::Timestamp::from_second(seconds)
        .map(|t| t.to_string())
        .unwrap_or_default()
}
