//! The virtual, create-only review resources: `SelfSubjectAccessReview`,
//! `LocalSubjectAccessReview`, `SubjectAccessReview`, `SelfSubjectRulesReview`
//! (`kubectl auth can-i [--list]`), `SelfSubjectReview` (`kubectl auth whoami`) and
//! `TokenReview`. Answered from the authenticator and authorizer; nothing is stored. Bodies
//! are decoded as their kind, with unknown fields handled per `fieldValidation`.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::authn::{Credentials, UserInfo};
use super::authz::{Attributes, Decision};
use super::errors::ApiError;
use super::handler::ApiHandler;
use super::http_util::{decode_object, media_type};
use super::rest::Target;
use super::rest::object::FieldValidation;
use super::rest::write::{BodySource, admit_body};

/// Whether the target is one of the review resources.
pub fn is_review(target: &Target) -> bool {
    matches!(
        target.def.group.as_str(),
        "authorization.k8s.io" | "authentication.k8s.io"
    )
}

/// Answers a review: the request object with its `status` filled in.
pub async fn create_review(
    handler: &ApiHandler,
    user: &UserInfo,
    target: &Target,
    content_type: Option<&str>,
    bytes: &[u8],
    validation: FieldValidation,
) -> Result<Value, ApiError> {
    let media = media_type(content_type);
    let review = if media == "application/vnd.kubernetes.protobuf" {
        super::protobuf_body::decode(bytes)?
    } else {
        decode_object(&media, bytes)?
    };
    if !review.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    // Typed, with unknown fields refused under `fieldValidation=Strict` (kubectl's default).
    let (mut review, _warnings) = admit_body(target, review, validation, BodySource::Request)?;
    review["apiVersion"] = json!(target.def.api_version());
    review["kind"] = json!(target.def.kind);
    let status = match target.def.plural.as_str() {
        "selfsubjectaccessreviews" => access_status(handler, user, &review["spec"], None),
        "localsubjectaccessreviews" => {
            let subject = subject_of(&review["spec"]);
            access_status(
                handler,
                &subject,
                &review["spec"],
                target.namespace.as_deref(),
            )
        }
        "subjectaccessreviews" => {
            let subject = subject_of(&review["spec"]);
            access_status(handler, &subject, &review["spec"], None)
        }
        "selfsubjectrulesreviews" => {
            let namespace = review
                .pointer("/spec/namespace")
                .and_then(Value::as_str)
                .unwrap_or_default();
            rules_status(handler, user, namespace)
        }
        "selfsubjectreviews" => json!({"userInfo": user_json(user)}),
        "tokenreviews" => {
            let token = review
                .pointer("/spec/token")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let header = format!("Bearer {token}");
            let audiences: Vec<String> = review
                .pointer("/spec/audiences")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            let credentials = Credentials {
                client_cert: None,
                authorization: Some(&header),
            };
            let asked = (!audiences.is_empty()).then_some(audiences.as_slice());
            match handler.authenticate(credentials, asked).await {
                Ok((reviewed, matched)) => {
                    let mut status = json!({"authenticated": true, "user": user_json(&reviewed)});
                    if !matched.is_empty() {
                        status["audiences"] = json!(matched);
                    }
                    status
                }
                Err(e) => json!({"authenticated": false, "error": e.to_string()}),
            }
        }
        other => return Err(ApiError::not_found(&target.def.group, other, "")),
    };
    review["status"] = status;
    if review.get("metadata").is_none() {
        review["metadata"] = json!({});
    }
    Ok(review)
}

fn user_json(user: &UserInfo) -> Value {
    let mut value = json!({"username": user.name, "groups": user.groups});
    if !user.uid.is_empty() {
        value["uid"] = json!(user.uid);
    }
    if !user.extra.is_empty() {
        value["extra"] = json!(user.extra);
    }
    value
}

fn subject_of(spec: &Value) -> UserInfo {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let extra: BTreeMap<String, Vec<String>> = spec["extra"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), strings(v))).collect())
        .unwrap_or_default();
    UserInfo {
        name: spec["user"].as_str().unwrap_or_default().to_string(),
        uid: spec["uid"].as_str().unwrap_or_default().to_string(),
        groups: strings(&spec["groups"]),
        extra,
    }
}

fn access_status(
    handler: &ApiHandler,
    user: &UserInfo,
    spec: &Value,
    namespace: Option<&str>,
) -> Value {
    let text = |v: &Value, f: &str| {
        v.get(f)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let attributes = if let Some(r) = spec.get("resourceAttributes").filter(|r| r.is_object()) {
        Attributes {
            verb: text(r, "verb"),
            resource_request: true,
            namespace: namespace
                .map(String::from)
                .unwrap_or_else(|| text(r, "namespace")),
            api_group: text(r, "group"),
            api_version: text(r, "version"),
            resource: text(r, "resource"),
            subresource: text(r, "subresource"),
            name: text(r, "name"),
            path: String::new(),
        }
    } else {
        let n = &spec["nonResourceAttributes"];
        Attributes {
            verb: text(n, "verb"),
            resource_request: false,
            path: text(n, "path"),
            ..Attributes::default()
        }
    };
    match handler.authorizer.authorize(user, &attributes) {
        Decision::Allow => json!({"allowed": true}),
        Decision::Deny(reason) => json!({"allowed": false, "denied": true, "reason": reason}),
        Decision::NoOpinion => json!({"allowed": false}),
    }
}

fn rules_status(handler: &ApiHandler, user: &UserInfo, namespace: &str) -> Value {
    let rules = handler.authorizer.rules_for(user, namespace);
    let resource_rules: Vec<Value> = rules
        .resource_rules
        .iter()
        .map(|r| {
            let mut v =
                json!({"verbs": r.verbs, "apiGroups": r.api_groups, "resources": r.resources});
            if !r.resource_names.is_empty() {
                v["resourceNames"] = json!(r.resource_names);
            }
            v
        })
        .collect();
    let non_resource_rules: Vec<Value> = rules
        .non_resource_rules
        .iter()
        .map(|r| json!({"verbs": r.verbs, "nonResourceURLs": r.non_resource_urls}))
        .collect();
    json!({
        "resourceRules": resource_rules,
        "nonResourceRules": non_resource_rules,
        "incomplete": rules.incomplete,
    })
}
