//! The claims of a bound service-account token (upstream's `pkg/serviceaccount/claims.go`
//! layout) and the pure checks on them: building them for a TokenRequest, the time, issuer,
//! subject and audience checks of authentication, and the check of the objects the token is
//! bound to (the ServiceAccount, and the Pod or Secret) as the store shows them now — a token
//! outlives neither.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use super::jws::JwsError;
use crate::apiserver::authn::{AUTHENTICATED_GROUP, UserInfo};

/// Clock skew tolerated on `exp`, `nbf` and `iat`, and on a bound pod's deletion (upstream's
/// `jwt.DefaultLeeway`).
pub const LEEWAY_SECONDS: i64 = 60;

/// The user name prefix of service accounts.
pub const USER_PREFIX: &str = "system:serviceaccount:";
/// The group of every service account, and the prefix of the per-namespace group.
pub const ALL_GROUP: &str = "system:serviceaccounts";

/// The `user.extra` keys of a pod-bound token (upstream's `authentication.kubernetes.io/…`).
pub const EXTRA_POD_NAME: &str = "authentication.kubernetes.io/pod-name";
pub const EXTRA_POD_UID: &str = "authentication.kubernetes.io/pod-uid";
pub const EXTRA_NODE_NAME: &str = "authentication.kubernetes.io/node-name";
pub const EXTRA_NODE_UID: &str = "authentication.kubernetes.io/node-uid";
pub const EXTRA_CREDENTIAL_ID: &str = "authentication.kubernetes.io/credential-id";

/// An object a token names: `{name, uid}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ObjectRef {
    pub name: String,
    pub uid: String,
}

impl ObjectRef {
    /// The name and uid of a stored object.
    pub fn of(object: &Value) -> Self {
        let text = |p: &str| {
            object
                .pointer(p)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        Self {
            name: text("/metadata/name"),
            uid: text("/metadata/uid"),
        }
    }
}

/// The private `kubernetes.io` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct KubernetesClaims {
    pub namespace: String,
    pub serviceaccount: ObjectRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<ObjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<ObjectRef>,
    /// The node the bound pod runs on (informational: not checked at authentication).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<ObjectRef>,
}

/// All the claims of a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    /// Always written as an array; a single string is read too (RFC 7519 allows both).
    #[serde(deserialize_with = "string_or_array")]
    pub aud: Vec<String>,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: KubernetesClaims,
}

fn string_or_array<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Aud {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Aud::deserialize(d)? {
        Aud::One(a) => vec![a],
        Aud::Many(a) => a,
    })
}

/// What a token is bound to besides its ServiceAccount.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum BoundObject {
    #[default]
    None,
    /// A pod, and the node it is bound to if known.
    Pod {
        pod: ObjectRef,
        node: Option<ObjectRef>,
    },
    Secret(ObjectRef),
}

/// What a TokenRequest asks for, after defaulting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSpec {
    pub issuer: String,
    pub namespace: String,
    pub service_account: ObjectRef,
    pub bound: BoundObject,
    pub audiences: Vec<String>,
    pub expiration_seconds: i64,
}

/// The claims of a new token issued at `now` (Unix seconds) with id `jti`.
pub fn build(spec: &TokenSpec, now: i64, jti: Option<String>) -> Claims {
    let (pod, secret, node) = match &spec.bound {
        BoundObject::None => (None, None, None),
        BoundObject::Pod { pod, node } => (Some(pod.clone()), None, node.clone()),
        BoundObject::Secret(secret) => (None, Some(secret.clone()), None),
    };
    Claims {
        iss: spec.issuer.clone(),
        sub: subject(&spec.namespace, &spec.service_account.name),
        aud: spec.audiences.clone(),
        exp: now + spec.expiration_seconds,
        iat: now,
        nbf: now,
        jti,
        kubernetes: KubernetesClaims {
            namespace: spec.namespace.clone(),
            serviceaccount: spec.service_account.clone(),
            pod,
            secret,
            node,
        },
    }
}

/// `system:serviceaccount:<namespace>:<name>`.
pub fn subject(namespace: &str, name: &str) -> String {
    format!("{USER_PREFIX}{namespace}:{name}")
}

/// Why a token was refused (each is a 401; the reason is logged and shown by TokenReview).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error(transparent)]
    Jws(#[from] JwsError),
    #[error("malformed claims: {0}")]
    Claims(String),
    #[error("token issued by {0:?}, not by this apiserver")]
    Issuer(String),
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token audiences {0:?} are not any of the accepted audiences")]
    Audience(Vec<String>),
    #[error("subject {0:?} does not match the kubernetes.io claims")]
    Subject(String),
    #[error("{kind} {namespace}/{name} the token is bound to no longer exists")]
    Deleted {
        kind: &'static str,
        namespace: String,
        name: String,
    },
    #[error(
        "{kind} {namespace}/{name} has uid {current}, not {bound}: the token's object was deleted and recreated"
    )]
    Recreated {
        kind: &'static str,
        namespace: String,
        name: String,
        bound: String,
        current: String,
    },
    #[error("{kind} {namespace}/{name} the token is bound to is being deleted")]
    BeingDeleted {
        kind: &'static str,
        namespace: String,
        name: String,
    },
    #[error("looking up {0}: storage error")]
    Lookup(String),
}

/// The claims of a verified payload if they come from `issuer`, are valid at `now` (with
/// [`LEEWAY_SECONDS`]), name a subject matching their `kubernetes.io` part, and share an
/// audience with `accepted`; with the audiences they share.
pub fn check(
    payload: Value,
    issuer: &str,
    accepted: &[String],
    now: i64,
) -> Result<(Claims, Vec<String>), TokenError> {
    let claims: Claims =
        serde_json::from_value(payload).map_err(|e| TokenError::Claims(e.to_string()))?;
    if claims.iss != issuer {
        return Err(TokenError::Issuer(claims.iss));
    }
    if now > claims.exp + LEEWAY_SECONDS {
        return Err(TokenError::Expired);
    }
    if now + LEEWAY_SECONDS < claims.nbf || now + LEEWAY_SECONDS < claims.iat {
        return Err(TokenError::NotYetValid);
    }
    let k = &claims.kubernetes;
    if k.namespace.is_empty()
        || k.serviceaccount.name.is_empty()
        || claims.sub != subject(&k.namespace, &k.serviceaccount.name)
    {
        return Err(TokenError::Subject(claims.sub));
    }
    let matched: Vec<String> = claims
        .aud
        .iter()
        .filter(|a| accepted.contains(a))
        .cloned()
        .collect();
    if matched.is_empty() {
        return Err(TokenError::Audience(claims.aud));
    }
    Ok((claims, matched))
}

/// The stored objects a token names, as read at authentication (`None`: not found).
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub service_account: Option<Value>,
    pub pod: Option<Value>,
    pub secret: Option<Value>,
}

/// The user a token authenticates as, if the objects it is bound to still exist with the
/// uids it names and are not past their deletion (upstream's `validator.Validate`).
pub fn check_objects(
    claims: &Claims,
    observed: &Observed,
    now: i64,
) -> Result<UserInfo, TokenError> {
    let k = &claims.kubernetes;
    let check = |kind: &'static str, bound: &ObjectRef, current: Option<&Value>| {
        let Some(current) = current else {
            return Err(TokenError::Deleted {
                kind,
                namespace: k.namespace.clone(),
                name: bound.name.clone(),
            });
        };
        let now_ref = ObjectRef::of(current);
        if now_ref.uid != bound.uid {
            return Err(TokenError::Recreated {
                kind,
                namespace: k.namespace.clone(),
                name: bound.name.clone(),
                bound: bound.uid.clone(),
                current: now_ref.uid,
            });
        }
        // A graceful deletion sets deletionTimestamp to the end of the grace period: the
        // token works until then (plus leeway), as upstream's.
        let deleting = current
            .pointer("/metadata/deletionTimestamp")
            .and_then(Value::as_str)
            .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
            .is_some_and(|t| t.as_second() + LEEWAY_SECONDS < now);
        if deleting {
            return Err(TokenError::BeingDeleted {
                kind,
                namespace: k.namespace.clone(),
                name: bound.name.clone(),
            });
        }
        Ok(())
    };
    check(
        "serviceaccount",
        &k.serviceaccount,
        observed.service_account.as_ref(),
    )?;
    if let Some(pod) = &k.pod {
        check("pod", pod, observed.pod.as_ref())?;
    }
    if let Some(secret) = &k.secret {
        check("secret", secret, observed.secret.as_ref())?;
    }
    Ok(user_of(claims))
}

/// The user of valid claims: the service account's name, uid and groups, and the pod, node
/// and token id as extras.
pub fn user_of(claims: &Claims) -> UserInfo {
    let k = &claims.kubernetes;
    let mut extra = BTreeMap::new();
    if let Some(pod) = &k.pod {
        extra.insert(EXTRA_POD_NAME.to_string(), vec![pod.name.clone()]);
        extra.insert(EXTRA_POD_UID.to_string(), vec![pod.uid.clone()]);
    }
    if let Some(node) = &k.node {
        extra.insert(EXTRA_NODE_NAME.to_string(), vec![node.name.clone()]);
        extra.insert(EXTRA_NODE_UID.to_string(), vec![node.uid.clone()]);
    }
    if let Some(jti) = claims.jti.as_deref().filter(|j| !j.is_empty()) {
        extra.insert(EXTRA_CREDENTIAL_ID.to_string(), vec![format!("JTI={jti}")]);
    }
    UserInfo {
        name: claims.sub.clone(),
        uid: k.serviceaccount.uid.clone(),
        groups: vec![
            ALL_GROUP.to_string(),
            format!("{ALL_GROUP}:{}", k.namespace),
            AUTHENTICATED_GROUP.to_string(),
        ],
        extra,
    }
}
