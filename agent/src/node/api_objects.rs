//! Fetches what a pod's volumes and environment read from the apiserver: its ConfigMaps,
//! Secrets, PersistentVolumeClaims and their bound PersistentVolumes (a GET each per pod sync — upstream's `Get` change-detection strategy, so an update
//! reaches running pods within `syncFrequency`) and its projected service-account tokens
//! (TokenRequest bound to the pod, kept in memory and renewed once 80% of their lifetime has
//! passed or they are 24 h old, as upstream's token manager does).

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolume, PersistentVolumeClaim, Pod, Secret, ServiceAccount,
};
use kube::api::{Api, PostParams};

use crate::pod::spec;
use crate::runtime_spec::api_objects::{ApiObjects, References, TokenSource};

/// Why a pod's objects could not be fetched.
#[derive(Debug, thiserror::Error)]
pub(super) enum FetchError {
    #[error("failed to get {kind} {namespace}/{name}: {source}")]
    Get {
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("failed to get persistentvolume {name}: {source}")]
    GetVolume {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("failed to fetch token for service account {namespace}/{service_account}: {reason}")]
    Token {
        namespace: String,
        service_account: String,
        reason: String,
    },
}

/// A token and when it was issued and expires (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
struct IssuedToken {
    token: String,
    issued_at: i64,
    expires_at: i64,
}

/// The most a token is kept before renewal, whatever its lifetime (upstream's 24 h).
const MAX_TOKEN_AGE_SECONDS: i64 = 24 * 3600;

/// Whether a token issued at `issued_at` and expiring at `expires_at` is due for renewal at
/// `now`: after 80% of its lifetime, after 24 h, or if the clock went backwards past its issue.
pub(super) fn token_due(issued_at: i64, expires_at: i64, now: i64) -> bool {
    let lifetime = expires_at.saturating_sub(issued_at).max(0);
    now >= issued_at.saturating_add(lifetime * 8 / 10)
        || now >= issued_at.saturating_add(MAX_TOKEN_AGE_SECONDS)
        || now < issued_at
}

/// The fetcher kwk-node's pod setup uses; without an apiserver it fetches nothing.
#[derive(Default)]
pub(super) struct ObjectFetcher {
    client: Option<kube::Client>,
    /// Tokens by pod UID and source.
    tokens: Mutex<HashMap<(String, TokenSource), IssuedToken>>,
    /// By pod UID, the claims the pod was admitted to use (see [`Self::remember_claims`]).
    claims_in_use: Mutex<HashMap<String, BTreeSet<String>>>,
}

impl std::fmt::Debug for ObjectFetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectFetcher")
            .field("apiserver", &self.client.is_some())
            .finish_non_exhaustive()
    }
}

impl ObjectFetcher {
    pub(super) fn new(client: Option<kube::Client>) -> Self {
        Self {
            client,
            tokens: Mutex::default(),
            claims_in_use: Mutex::default(),
        }
    }

    /// The objects `pod` references, fetched now (tokens from the cache while still fresh).
    /// Without an apiserver the set is empty and lookups say so.
    pub(super) async fn fetch(&self, pod: &Pod) -> Result<ApiObjects, FetchError> {
        let namespace = spec::namespace(pod);
        let mut objects = ApiObjects::new(namespace);
        let refs = References::of_pod(pod);
        let Some(client) = self.client.as_ref().filter(|_| !refs.is_empty()) else {
            return Ok(objects);
        };
        let get_error = |kind, name: &str| {
            let namespace = namespace.to_string();
            let name = name.to_string();
            move |source| FetchError::Get {
                kind,
                namespace,
                name,
                source,
            }
        };
        let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
        for name in &refs.config_maps {
            let found = config_maps
                .get_opt(name)
                .await
                .map_err(get_error("configmap", name))?;
            objects.insert_config_map(name, found);
        }
        let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
        for name in &refs.secrets {
            let found = secrets
                .get_opt(name)
                .await
                .map_err(get_error("secret", name))?;
            objects.insert_secret(name, found);
        }
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
        let volumes: Api<PersistentVolume> = Api::all(client.clone());
        for name in &refs.claims {
            let found = claims
                .get_opt(name)
                .await
                .map_err(get_error("persistentvolumeclaim", name))?;
            let bound_to = found
                .as_ref()
                .and_then(|c| c.spec.as_ref())
                .and_then(|s| s.volume_name.clone())
                .filter(|v| !v.is_empty());
            objects.insert_claim(name, found);
            if self.claim_in_use(spec::uid(pod), name) {
                objects.mark_claim_in_use(name);
            }
            if let Some(volume) = bound_to {
                let pv =
                    volumes
                        .get_opt(&volume)
                        .await
                        .map_err(|source| FetchError::GetVolume {
                            name: volume.clone(),
                            source,
                        })?;
                objects.insert_persistent_volume(&volume, pv);
            }
        }
        for source in refs.tokens {
            let token = self.token(client, pod, &source).await?;
            objects.insert_token(source, token);
        }
        Ok(objects)
    }

    /// Drops the cached tokens and claims in use of a pod that is gone.
    pub(super) fn forget_pod(&self, uid: &str) {
        self.lock().retain(|(pod, _), _| pod != uid);
        self.lock_claims().remove(uid);
    }

    /// Records that pod `uid` uses `claims` (they resolved to a volume for it): their
    /// deletion no longer keeps its containers from starting. Kept in memory only: after a
    /// restart of kwk-node a claim being deleted is refused until seen anew.
    pub(super) fn remember_claims(&self, uid: &str, claims: Vec<String>) {
        if claims.is_empty() {
            return;
        }
        self.lock_claims()
            .entry(uid.to_string())
            .or_default()
            .extend(claims);
    }

    fn claim_in_use(&self, uid: &str, claim: &str) -> bool {
        self.lock_claims()
            .get(uid)
            .is_some_and(|claims| claims.contains(claim))
    }

    fn lock_claims(&self) -> std::sync::MutexGuard<'_, HashMap<String, BTreeSet<String>>> {
        self.claims_in_use
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, TokenSource), IssuedToken>> {
        self.tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn token(
        &self,
        client: &kube::Client,
        pod: &Pod,
        source: &TokenSource,
    ) -> Result<String, FetchError> {
        let key = (spec::uid(pod).to_string(), source.clone());
        let now = unix_now();
        if let Some(cached) = self.lock().get(&key)
            && !token_due(cached.issued_at, cached.expires_at, now)
        {
            return Ok(cached.token.clone());
        }
        let namespace = spec::namespace(pod);
        let error = |reason: String| FetchError::Token {
            namespace: namespace.to_string(),
            service_account: source.service_account.clone(),
            reason,
        };
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: if source.audience.is_empty() {
                    Vec::new()
                } else {
                    vec![source.audience.clone()]
                },
                expiration_seconds: Some(source.expiration_seconds),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: Some(spec::name(pod).to_string()),
                    uid: Some(spec::uid(pod).to_string()),
                }),
            },
            ..Default::default()
        };
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
        let issued = accounts
            .create_token_request(&source.service_account, &PostParams::default(), &request)
            .await
            .map_err(|e| error(e.to_string()))?;
        let status = issued
            .status
            .ok_or_else(|| error("the apiserver returned no token".into()))?;
        let expires_at = status.expiration_timestamp.0.as_second();
        self.lock().insert(
            key,
            IssuedToken {
                token: status.token.clone(),
                issued_at: now,
                expires_at,
            },
        );
        Ok(status.token)
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_renewed_at_eighty_percent_or_a_day() {
        let cases = [
            // (issued, expires, now, due)
            (1000, 4600, 1000, false),
            (1000, 4600, 3879, false),
            (1000, 4600, 3880, true),
            (1000, 4600, 5000, true),
            (1000, 1000 + 48 * 3600, 1000 + 24 * 3600 - 1, false),
            (1000, 1000 + 48 * 3600, 1000 + 24 * 3600, true),
            (1000, 4600, 999, true),
            (1000, 900, 1000, true),
        ];
        for (issued, expires, now, due) in cases {
            assert_eq!(
                token_due(issued, expires, now),
                due,
                "{issued} {expires} {now}"
            );
        }
    }
}
