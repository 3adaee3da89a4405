//! API errors as upstream's `metav1.Status` bodies: the reason, code and message wording
//! clients depend on (`kubectl apply` turns a `NotFound` into a create, informers relist on
//! `Expired`, drain retries on `TooManyRequests` ...).

use serde_json::{Value, json};

/// One field-level cause of an `Invalid` error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// Upstream's cause type, e.g. `FieldValueRequired`, `FieldValueInvalid`.
    pub reason: &'static str,
    pub message: String,
    /// The field path, e.g. `spec.containers[0].image`.
    pub field: String,
}

impl Cause {
    pub fn required(field: impl Into<String>) -> Self {
        Self {
            reason: "FieldValueRequired",
            message: "Required value".to_string(),
            field: field.into(),
        }
    }

    pub fn invalid(field: impl Into<String>, value: &Value, detail: impl AsRef<str>) -> Self {
        let shown = match value {
            Value::String(s) => format!("{s:?}"),
            other => other.to_string(),
        };
        Self {
            reason: "FieldValueInvalid",
            message: format!("Invalid value: {shown}: {}", detail.as_ref()),
            field: field.into(),
        }
    }

    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            reason: "FieldValueForbidden",
            message: format!("Forbidden: {}", detail.into()),
            field: field.into(),
        }
    }

    pub fn duplicate(field: impl Into<String>, value: &Value) -> Self {
        Self {
            reason: "FieldValueDuplicate",
            message: format!("Duplicate value: {value}"),
            field: field.into(),
        }
    }

    pub fn not_supported(field: impl Into<String>, value: &Value, supported: &[&str]) -> Self {
        let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        Self {
            reason: "FieldValueNotSupported",
            message: format!(
                "Unsupported value: {value}: supported values: {}",
                list.join(", ")
            ),
            field: field.into(),
        }
    }

    pub fn unknown_field(field: impl Into<String>) -> Self {
        let field = field.into();
        Self {
            reason: "FieldValueInvalid",
            message: format!("unknown field \"{field}\""),
            field,
        }
    }

    /// The cause as upstream prints it inside an `Invalid` message.
    fn summary(&self) -> String {
        if self.field.is_empty() {
            self.message.clone()
        } else {
            format!("{}: {}", self.field, self.message)
        }
    }
}

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    pub code: u16,
    /// Upstream's `StatusReason` (`NotFound`, `Conflict` ...); empty for a generic failure.
    pub reason: &'static str,
    pub message: String,
    /// `Status.details` (boxed: errors travel through every `Result`).
    pub details: Box<Details>,
}

/// The `details` of a Status.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Details {
    pub name: Option<String>,
    pub group: Option<String>,
    /// For most errors the resource (plural); for `Invalid`, the kind (as upstream).
    pub kind: Option<String>,
    pub causes: Vec<Cause>,
    pub retry_after_seconds: Option<u32>,
    /// The Status's `metadata.continue` (a 410 for an expired continue token carries one
    /// that continues at the latest revision).
    pub list_continue: Option<String>,
}

/// `pods` or `deployments.apps`, as upstream names a resource in messages.
pub fn qualified(group: &str, resource: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: Box::default(),
        }
    }

    fn about(mut self, group: &str, kind: &str, name: &str) -> Self {
        self.details.name = Some(name.to_string()).filter(|n| !n.is_empty());
        self.details.group = Some(group.to_string()).filter(|g| !g.is_empty());
        self.details.kind = Some(kind.to_string());
        self
    }

    pub fn not_found(group: &str, resource: &str, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", qualified(group, resource)),
        )
        .about(group, resource, name)
    }

    pub fn already_exists(group: &str, resource: &str, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", qualified(group, resource)),
        )
        .about(group, resource, name)
    }

    pub fn conflict(group: &str, resource: &str, name: &str, detail: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {detail}",
                qualified(group, resource)
            ),
        )
        .about(group, resource, name)
    }

    /// The optimistic-concurrency conflict of a stale `resourceVersion`.
    pub fn modified(group: &str, resource: &str, name: &str) -> Self {
        Self::conflict(
            group,
            resource,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// `Kind.group "name" is invalid: [field: message, ...]` (upstream names the kind with its
    /// group, e.g. `Deployment.apps`, `ListOptions.meta.k8s.io`).
    pub fn invalid(group: &str, kind: &str, name: &str, causes: Vec<Cause>) -> Self {
        let summaries: Vec<String> = causes.iter().map(Cause::summary).collect();
        let list = if summaries.len() == 1 {
            summaries[0].clone()
        } else {
            format!("[{}]", summaries.join(", "))
        };
        let mut error = Self::new(
            422,
            "Invalid",
            format!("{} \"{name}\" is invalid: {list}", qualified(group, kind)),
        )
        .about(group, kind, name);
        error.details.causes = causes;
        error
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    pub fn not_acceptable(message: impl Into<String>) -> Self {
        Self::new(406, "NotAcceptable", message)
    }

    /// `410 Expired`: a resourceVersion older than the retained history.
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            413,
            "RequestEntityTooLarge",
            format!("the request body is too large (limit {limit} bytes)"),
        )
    }

    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (got {content_type:?})"
            ),
        )
    }

    pub fn too_many_requests(message: impl Into<String>, retry_after: u32) -> Self {
        let mut error = Self::new(429, "TooManyRequests", message);
        error.details.retry_after_seconds = Some(retry_after);
        error
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    pub fn service_unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "ServiceUnavailable", message)
    }

    pub fn page_not_found() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    /// The `metav1.Status` body.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "code": self.code,
        });
        if !self.reason.is_empty() {
            status["reason"] = json!(self.reason);
        }
        let mut details = serde_json::Map::new();
        let d = &self.details;
        if let Some(name) = &d.name {
            details.insert("name".into(), json!(name));
        }
        if let Some(group) = &d.group {
            details.insert("group".into(), json!(group));
        }
        if let Some(kind) = &d.kind {
            details.insert("kind".into(), json!(kind));
        }
        if !d.causes.is_empty() {
            let causes: Vec<Value> = d
                .causes
                .iter()
                .map(|c| {
                    let mut cause = json!({"reason": c.reason, "message": c.message});
                    if !c.field.is_empty() {
                        cause["field"] = json!(c.field);
                    }
                    cause
                })
                .collect();
            details.insert("causes".into(), Value::Array(causes));
        }
        if let Some(retry) = d.retry_after_seconds {
            details.insert("retryAfterSeconds".into(), json!(retry));
        }
        if !details.is_empty() {
            status["details"] = Value::Object(details);
        }
        if let Some(token) = &d.list_continue {
            status["metadata"]["continue"] = json!(token);
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wording_matches_upstream() {
        assert_eq!(
            ApiError::not_found("apps", "deployments", "web").message,
            "deployments.apps \"web\" not found"
        );
        let status = ApiError::not_found("", "pods", "p").to_status();
        assert_eq!(status["details"], json!({"name": "p", "kind": "pods"}));
        assert_eq!(status["reason"], "NotFound");
        assert_eq!(status["code"], 404);
        let invalid = ApiError::invalid(
            "",
            "Pod",
            "p",
            vec![
                Cause::required("spec.containers"),
                Cause::required("metadata.name"),
            ],
        );
        assert_eq!(
            invalid.message,
            "Pod \"p\" is invalid: [spec.containers: Required value, metadata.name: Required value]"
        );
        assert_eq!(
            invalid.to_status()["details"]["causes"][0]["reason"],
            "FieldValueRequired"
        );
        let grouped = ApiError::invalid("apps", "Deployment", "web", vec![Cause::required("spec")]);
        assert_eq!(
            grouped.message,
            "Deployment.apps \"web\" is invalid: spec: Required value"
        );
    }
}
