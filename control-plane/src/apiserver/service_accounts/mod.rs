//! Bound service-account tokens: the ES256 JWTs that `POST …/serviceaccounts/<name>/token`
//! (TokenRequest) issues and that bearer authentication accepts back (what kubelets mount
//! into pods through projected volumes).
//!
//! - [`jws`]: compact JWS signing and verification with the key of `sa.key` (one algorithm).
//! - [`claims`]: the claims layout and the pure checks (time, issuer, audience, bound objects).
//! - [`token_request`]: the TokenRequest subresource.
//!
//! Authentication is in two steps so that the authenticator stays synchronous and cheap for
//! certificates and static tokens: [`TokenAuthority::verify`] (signature, algorithm, claims;
//! no I/O), then [`resolve`] (the ServiceAccount and bound Pod/Secret must still exist with the
//! same uid; reads the store).

pub mod claims;
pub mod jws;
pub mod token_request;

#[cfg(test)]
mod tests;

use serde_json::Value;

use self::claims::{Claims, Observed, TokenError};
use self::jws::{KeyError, SigningKey};
use super::authn::UserInfo;
use super::errors::ApiError;
use super::pki::PkiPaths;
use super::rest::{Registry, Target};

/// The default `--service-account-issuer`.
pub const DEFAULT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// Why the signing key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Key {
        path: std::path::PathBuf,
        source: KeyError,
    },
}

/// Issues and verifies tokens: the signing key, the issuer and the audiences the apiserver
/// accepts (`--api-audiences`, by default the issuer).
#[derive(Debug)]
pub struct TokenAuthority {
    key: SigningKey,
    issuer: String,
    audiences: Vec<String>,
}

impl TokenAuthority {
    pub fn new(key: SigningKey, issuer: impl Into<String>, audiences: Vec<String>) -> Self {
        let issuer = issuer.into();
        let audiences = if audiences.is_empty() {
            vec![issuer.clone()]
        } else {
            audiences
        };
        Self {
            key,
            issuer,
            audiences,
        }
    }

    /// The authority of the PKI directory's `sa.key` with the default issuer and audience;
    /// `None` when there is no `sa.key` (token requests then fail, JWTs are not accepted).
    pub fn load(paths: &PkiPaths) -> Result<Option<Self>, LoadError> {
        let path = paths.service_account_key();
        let pem = match std::fs::read_to_string(&path) {
            Ok(pem) => pem,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(LoadError::Io { path, source }),
        };
        let key = SigningKey::from_pem(&pem).map_err(|source| LoadError::Key { path, source })?;
        Ok(Some(Self::new(key, DEFAULT_ISSUER, Vec::new())))
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The apiserver's audiences (what a TokenRequest without audiences gets).
    pub fn audiences(&self) -> &[String] {
        &self.audiences
    }

    /// Signs `claims`.
    pub fn sign(&self, claims: &Claims) -> Result<String, TokenError> {
        let payload =
            serde_json::to_value(claims).map_err(|e| TokenError::Claims(e.to_string()))?;
        Ok(self.key.sign(&payload)?)
    }

    /// The claims of `token` if it is ours and valid at `now`, for one of `audiences` (the
    /// apiserver's when `None`); with the audiences matched. Reads nothing: the bound objects
    /// are checked by [`resolve`].
    pub fn verify(
        &self,
        token: &str,
        audiences: Option<&[String]>,
        now: i64,
    ) -> Result<(Claims, Vec<String>), TokenError> {
        let payload = self.key.verify(token)?;
        claims::check(
            payload,
            &self.issuer,
            audiences.unwrap_or(&self.audiences),
            now,
        )
    }
}

/// The user of verified `claims`, once the objects they are bound to are read from the store
/// and still match.
pub async fn resolve(
    registry: &Registry,
    claims: &Claims,
    now: i64,
) -> Result<UserInfo, TokenError> {
    let k = &claims.kubernetes;
    let ns = Some(k.namespace.as_str());
    let observed = Observed {
        service_account: fetch(registry, "serviceaccounts", ns, &k.serviceaccount.name)
            .await
            .map_err(|_| TokenError::Lookup("the service account".into()))?,
        pod: match &k.pod {
            Some(pod) => fetch(registry, "pods", ns, &pod.name)
                .await
                .map_err(|_| TokenError::Lookup("the bound pod".into()))?,
            None => None,
        },
        secret: match &k.secret {
            Some(secret) => fetch(registry, "secrets", ns, &secret.name)
                .await
                .map_err(|_| TokenError::Lookup("the bound secret".into()))?,
            None => None,
        },
    };
    claims::check_objects(claims, &observed, now)
}

/// A core/v1 object (`None`: not found).
pub(crate) async fn fetch(
    registry: &Registry,
    plural: &str,
    namespace: Option<&str>,
    name: &str,
) -> Result<Option<Value>, ApiError> {
    if name.is_empty() {
        return Ok(None);
    }
    let def = registry
        .catalog()
        .lookup("", "v1", plural)
        .cloned()
        .ok_or_else(ApiError::page_not_found)?;
    let target = Target {
        def,
        namespace: namespace.map(String::from),
        name: Some(name.to_string()),
        subresource: None,
    };
    match registry.get(&target).await {
        Ok(object) => Ok(Some(object)),
        Err(e) if e.code == 404 => Ok(None),
        Err(e) => Err(e),
    }
}
