//! Authentication of kubelet API requests: a client certificate the TLS layer verified against
//! `authentication.x509.clientCAFile` (user = CN, groups = O), else a bearer token checked with
//! a `TokenReview` (`authentication.webhook.enabled`, answers cached for `cacheTTL`), else
//! anonymous when `authentication.anonymous.enabled`, else nobody (401).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::PostParams;
use sha2::Digest as _;

/// An authenticated caller.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl User {
    /// `system:anonymous` in `system:unauthenticated`.
    pub fn anonymous() -> Self {
        Self {
            name: "system:anonymous".into(),
            groups: vec!["system:unauthenticated".into()],
            ..Self::default()
        }
    }
}

/// The user of a verified client certificate (DER): CN is the name, each O a group.
pub fn user_from_certificate(der: &[u8]) -> Option<User> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())?
        .to_string();
    let mut groups: Vec<String> = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(String::from))
        .collect();
    groups.push("system:authenticated".into());
    Some(User {
        name,
        groups,
        ..User::default()
    })
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer_token(header: Option<&str>) -> Option<&str> {
    let value = header?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Why a token could not be checked (the apiserver did not answer).
#[derive(Debug, thiserror::Error)]
#[error("TokenReview: {0}")]
pub struct AuthnError(#[from] kube::Error);

/// How requests are authenticated.
pub struct Authenticator {
    /// The TokenReview client; `None` when tokens are not accepted.
    token_reviews: Option<kube::Client>,
    cache_ttl: Duration,
    anonymous: bool,
    /// Token digest → the review's user (None: rejected) and when it was asked.
    cache: Mutex<HashMap<[u8; 32], CachedReview>>,
}

/// When a token was reviewed and the answer (None: rejected).
type CachedReview = (Instant, Option<User>);

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("tokens", &self.token_reviews.is_some())
            .field("anonymous", &self.anonymous)
            .finish_non_exhaustive()
    }
}

/// The most token answers kept; the cache is cleared when full.
const MAX_CACHED: usize = 4096;

impl Authenticator {
    pub fn new(token_reviews: Option<kube::Client>, cache_ttl: Duration, anonymous: bool) -> Self {
        Self {
            token_reviews,
            cache_ttl,
            anonymous,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The caller: from the verified certificate, the bearer token, or anonymous; `Ok(None)`
    /// when the request is not authenticated (401).
    pub async fn authenticate(
        &self,
        client_cert: Option<&[u8]>,
        authorization: Option<&str>,
    ) -> Result<Option<User>, AuthnError> {
        if let Some(user) = client_cert.and_then(user_from_certificate) {
            return Ok(Some(user));
        }
        if let (Some(token), Some(client)) = (bearer_token(authorization), &self.token_reviews) {
            if let Some(user) = self.review_token(client, token).await? {
                return Ok(Some(user));
            }
            return Ok(None);
        }
        Ok(self.anonymous.then(User::anonymous))
    }

    async fn review_token(
        &self,
        client: &kube::Client,
        token: &str,
    ) -> Result<Option<User>, AuthnError> {
        let key: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        if let Ok(cache) = self.cache.lock()
            && let Some((at, user)) = cache.get(&key)
            && at.elapsed() < self.cache_ttl
        {
            return Ok(user.clone());
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                ..TokenReviewSpec::default()
            },
            ..TokenReview::default()
        };
        let api = kube::Api::<TokenReview>::all(client.clone());
        let answer = api.create(&PostParams::default(), &review).await?;
        let user = answer
            .status
            .filter(|s| s.authenticated == Some(true))
            .and_then(|s| s.user)
            .map(|u| User {
                name: u.username.unwrap_or_default(),
                uid: u.uid.unwrap_or_default(),
                groups: u.groups.unwrap_or_default(),
                extra: u.extra.unwrap_or_default(),
            });
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
            cache.insert(key, (Instant::now(), user.clone()));
        }
        Ok(user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_read_from_the_header() {
        let cases: &[(Option<&str>, Option<&str>)] = &[
            (Some("Bearer abc.def"), Some("abc.def")),
            (Some("bearer  abc "), Some("abc")),
            (Some("Bearer "), None),
            (Some("Basic dXNlcg=="), None),
            (Some("abc"), None),
            (None, None),
        ];
        for (header, token) in cases {
            assert_eq!(bearer_token(*header), *token, "{header:?}");
        }
    }

    #[tokio::test]
    async fn without_credentials_only_anonymous_is_let_in() {
        let closed = Authenticator::new(None, Duration::from_secs(1), false);
        assert_eq!(closed.authenticate(None, None).await.unwrap(), None);
        assert_eq!(
            closed.authenticate(None, Some("Bearer x")).await.unwrap(),
            None,
            "tokens without a TokenReview client are not accepted"
        );
        let open = Authenticator::new(None, Duration::from_secs(1), true);
        assert_eq!(
            open.authenticate(None, None).await.unwrap(),
            Some(User::anonymous())
        );
    }

    #[test]
    fn certificate_subject_gives_name_and_groups() {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "system:masters");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "kube-apiserver-kubelet-client");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let user = user_from_certificate(cert.der()).unwrap();
        assert_eq!(user.name, "kube-apiserver-kubelet-client");
        assert_eq!(user.groups, ["system:masters", "system:authenticated"]);
        assert_eq!(user_from_certificate(b"not a certificate"), None);
    }
    #[tokio::test]
    async fn tokens_are_reviewed_once_per_cache_ttl() {
        let (client, calls) =
            crate::kubelet_api::scripted_apiserver::scripted_client(|path, body| {
                assert_eq!(path, "/apis/authentication.k8s.io/v1/tokenreviews");
                let status = if body["spec"]["token"] == "good" {
                    serde_json::json!({"authenticated": true, "user": {
                        "username": "system:serviceaccount:default:reader",
                        "uid": "u-1",
                        "groups": ["system:serviceaccounts", "system:authenticated"],
                    }})
                } else {
                    serde_json::json!({"authenticated": false, "error": "invalid bearer token"})
                };
                serde_json::json!({
                    "apiVersion": "authentication.k8s.io/v1",
                    "kind": "TokenReview",
                    "spec": body["spec"],
                    "status": status,
                })
            });
        let authenticator = Authenticator::new(Some(client), Duration::from_secs(60), false);
        let reader = authenticator
            .authenticate(None, Some("Bearer good"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(reader.name, "system:serviceaccount:default:reader");
        assert_eq!(reader.uid, "u-1");
        assert_eq!(reader.groups.len(), 2);
        let again = authenticator.authenticate(None, Some("Bearer good")).await;
        assert_eq!(again.unwrap(), Some(reader));
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        let bad = authenticator.authenticate(None, Some("Bearer bad")).await;
        assert_eq!(bad.unwrap(), None);
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}
