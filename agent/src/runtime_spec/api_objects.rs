//! The API objects a pod's volumes and environment read — ConfigMaps, Secrets,
//! service-account tokens, PersistentVolumeClaims and the PersistentVolumes they are bound to: which ones a pod references ([`References::of_pod`]) and the fetched
//! set ([`ApiObjects`]) the pure builders look values up in. Fetching is the caller's job.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolume, PersistentVolumeClaim, Pod, Secret, ServiceAccountTokenProjection,
};

use super::podx;

/// Upstream's default and minimum lifetime of a projected service-account token.
pub const DEFAULT_TOKEN_SECONDS: i64 = 3600;
pub const MIN_TOKEN_SECONDS: i64 = 600;

/// One token a pod's projected volume asks for; tokens are requested per (pod, source).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TokenSource {
    pub service_account: String,
    /// Empty: the apiserver's own audiences.
    pub audience: String,
    pub expiration_seconds: i64,
}

impl TokenSource {
    /// The source a `serviceAccountToken` projection describes (expiration defaulted; below the
    /// minimum is the apiserver's to refuse, as upstream's validation does).
    pub fn of(pod: &Pod, projection: &ServiceAccountTokenProjection) -> Self {
        Self {
            service_account: service_account(pod).to_string(),
            audience: projection.audience.clone().unwrap_or_default(),
            expiration_seconds: projection
                .expiration_seconds
                .unwrap_or(DEFAULT_TOKEN_SECONDS),
        }
    }
}

/// The pod's service account (`default` when unset).
pub fn service_account(pod: &Pod) -> &str {
    podx::spec(pod)
        .and_then(|s| s.service_account_name.as_deref())
        .filter(|n| !n.is_empty())
        .unwrap_or("default")
}

/// Everything a pod reads from the API, by name (all in the pod's namespace).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct References {
    pub config_maps: BTreeSet<String>,
    pub secrets: BTreeSet<String>,
    pub tokens: BTreeSet<TokenSource>,
    /// PersistentVolumeClaims (their bound PersistentVolumes are read through them).
    pub claims: BTreeSet<String>,
}

impl References {
    /// The objects the pod's volumes and its containers' `env`/`envFrom` name.
    pub fn of_pod(pod: &Pod) -> Self {
        let mut refs = Self::default();
        let Some(spec) = podx::spec(pod) else {
            return refs;
        };
        for volume in spec.volumes.iter().flatten() {
            if let Some(cm) = &volume.config_map {
                refs.config_maps.insert(cm.name.clone());
            }
            if let Some(secret) = volume.secret.as_ref().and_then(|s| s.secret_name.clone()) {
                refs.secrets.insert(secret);
            }
            if let Some(claim) = &volume.persistent_volume_claim {
                refs.claims.insert(claim.claim_name.clone());
            }
            for source in volume
                .projected
                .iter()
                .flat_map(|p| p.sources.iter().flatten())
            {
                if let Some(cm) = &source.config_map {
                    refs.config_maps.insert(cm.name.clone());
                }
                if let Some(secret) = &source.secret {
                    refs.secrets.insert(secret.name.clone());
                }
                if let Some(token) = &source.service_account_token {
                    refs.tokens.insert(TokenSource::of(pod, token));
                }
            }
        }
        for container in spec
            .init_containers
            .iter()
            .flatten()
            .chain(&spec.containers)
        {
            for from in container.env_from.iter().flatten() {
                if let Some(cm) = &from.config_map_ref {
                    refs.config_maps.insert(cm.name.clone());
                }
                if let Some(secret) = &from.secret_ref {
                    refs.secrets.insert(secret.name.clone());
                }
            }
            for source in container
                .env
                .iter()
                .flatten()
                .filter_map(|e| e.value_from.as_ref())
            {
                if let Some(cm) = &source.config_map_key_ref {
                    refs.config_maps.insert(cm.name.clone());
                }
                if let Some(secret) = &source.secret_key_ref {
                    refs.secrets.insert(secret.name.clone());
                }
            }
        }
        refs.config_maps.remove("");
        refs.secrets.remove("");
        refs.claims.remove("");
        refs
    }

    pub fn is_empty(&self) -> bool {
        self.config_maps.is_empty()
            && self.secrets.is_empty()
            && self.tokens.is_empty()
            && self.claims.is_empty()
    }
}

/// What a lookup found (`Copy` whatever `T`: it holds a reference).
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<'a, T> {
    Found(&'a T),
    /// The apiserver says it does not exist.
    NotFound,
    /// Nobody fetched it (a pod without an apiserver, e.g. a static pod).
    NotFetched,
}

impl<T> Clone for Lookup<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Lookup<'_, T> {}

/// The fetched objects of one pod (its namespace).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApiObjects {
    namespace: String,
    config_maps: BTreeMap<String, Option<ConfigMap>>,
    secrets: BTreeMap<String, Option<Secret>>,
    tokens: BTreeMap<TokenSource, String>,
    claims: BTreeMap<String, Option<PersistentVolumeClaim>>,
    /// Claims the pod was admitted to use earlier (seen not being deleted): a deletion
    /// since does not keep its containers from (re)starting.
    claims_in_use: BTreeSet<String>,
    /// Cluster-scoped, by name.
    persistent_volumes: BTreeMap<String, Option<PersistentVolume>>,
}

impl ApiObjects {
    pub fn new(namespace: &str) -> Self {
        Self {
            namespace: namespace.to_string(),
            ..Self::default()
        }
    }

    /// Records a fetched ConfigMap (`None`: it does not exist).
    pub fn insert_config_map(&mut self, name: &str, object: Option<ConfigMap>) {
        self.config_maps.insert(name.to_string(), object);
    }

    /// Records a fetched Secret (`None`: it does not exist).
    pub fn insert_secret(&mut self, name: &str, object: Option<Secret>) {
        self.secrets.insert(name.to_string(), object);
    }

    pub fn insert_token(&mut self, source: TokenSource, token: String) {
        self.tokens.insert(source, token);
    }

    /// Records a fetched PersistentVolumeClaim (`None`: it does not exist).
    pub fn insert_claim(&mut self, name: &str, object: Option<PersistentVolumeClaim>) {
        self.claims.insert(name.to_string(), object);
    }

    /// Records that the pod was admitted to use claim `name` before (see [`Self::claim_in_use`]).
    pub fn mark_claim_in_use(&mut self, name: &str) {
        self.claims_in_use.insert(name.to_string());
    }

    /// Whether the pod was admitted to use claim `name` before: upstream's volume manager
    /// refuses a claim being deleted only to a pod that has not started with it yet.
    pub fn claim_in_use(&self, name: &str) -> bool {
        self.claims_in_use.contains(name)
    }

    /// Records a fetched PersistentVolume (`None`: it does not exist).
    pub fn insert_persistent_volume(&mut self, name: &str, object: Option<PersistentVolume>) {
        self.persistent_volumes.insert(name.to_string(), object);
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn config_map(&self, name: &str) -> Lookup<'_, ConfigMap> {
        lookup(self.config_maps.get(name))
    }

    pub fn secret(&self, name: &str) -> Lookup<'_, Secret> {
        lookup(self.secrets.get(name))
    }

    pub fn claim(&self, name: &str) -> Lookup<'_, PersistentVolumeClaim> {
        lookup(self.claims.get(name))
    }

    pub fn persistent_volume(&self, name: &str) -> Lookup<'_, PersistentVolume> {
        lookup(self.persistent_volumes.get(name))
    }

    pub fn token(&self, source: &TokenSource) -> Option<&str> {
        self.tokens.get(source).map(String::as_str)
    }
}

fn lookup<T>(entry: Option<&Option<T>>) -> Lookup<'_, T> {
    match entry {
        Some(Some(object)) => Lookup::Found(object),
        Some(None) => Lookup::NotFound,
        None => Lookup::NotFetched,
    }
}

/// The objects pods read keyed data from (volumes, `env`, `envFrom`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyedKind {
    ConfigMap,
    Secret,
}

impl KeyedKind {
    /// Upstream's lower-case name in messages (`configmap "x" not found`).
    pub fn lower_name(self) -> &'static str {
        match self {
            KeyedKind::ConfigMap => "configmap",
            KeyedKind::Secret => "secret",
        }
    }

    /// The kind (`couldn't find key k in ConfigMap ns/x`).
    pub fn kind(self) -> &'static str {
        match self {
            KeyedKind::ConfigMap => "ConfigMap",
            KeyedKind::Secret => "Secret",
        }
    }
}

/// Which entries of a keyed object are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entries {
    /// Every entry: a ConfigMap's `data` and `binaryData` (volumes).
    All,
    /// A ConfigMap's `data` only (environment variables); all of a Secret.
    Strings,
}

impl ApiObjects {
    /// The entries of the ConfigMap or Secret `name`, or why there are none.
    pub fn keyed(&self, kind: KeyedKind, name: &str, which: Entries) -> KeyedEntries<'_> {
        let found = match kind {
            KeyedKind::ConfigMap => match self.config_map(name) {
                Lookup::Found(cm) => match which {
                    Entries::All => config_map_entries(cm).collect(),
                    Entries::Strings => config_map_strings(cm).collect(),
                },
                Lookup::NotFound => return KeyedEntries::NotFound,
                Lookup::NotFetched => return KeyedEntries::NotFetched,
            },
            KeyedKind::Secret => match self.secret(name) {
                Lookup::Found(secret) => secret_entries(secret).collect(),
                Lookup::NotFound => return KeyedEntries::NotFound,
                Lookup::NotFetched => return KeyedEntries::NotFetched,
            },
        };
        KeyedEntries::Found(found)
    }
}

/// A keyed object's entries by key, or why there are none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyedEntries<'a> {
    Found(BTreeMap<&'a str, &'a [u8]>),
    /// The apiserver says it does not exist.
    NotFound,
    /// Nobody fetched it (a pod without an apiserver).
    NotFetched,
}

/// The string entries of a ConfigMap (`data`).
fn config_map_strings(cm: &ConfigMap) -> impl Iterator<Item = (&str, &[u8])> {
    cm.data
        .iter()
        .flatten()
        .map(|(k, v)| (k.as_str(), v.as_bytes()))
}

/// Every entry of a ConfigMap: `data` and `binaryData`.
fn config_map_entries(cm: &ConfigMap) -> impl Iterator<Item = (&str, &[u8])> {
    config_map_strings(cm).chain(
        cm.binary_data
            .iter()
            .flatten()
            .map(|(k, v)| (k.as_str(), v.0.as_slice())),
    )
}

/// Every entry of a Secret (`data`; `stringData` is write-only and never comes back).
fn secret_entries(secret: &Secret) -> impl Iterator<Item = (&str, &[u8])> {
    secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.as_str(), v.0.as_slice()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime_spec::testpod::pod;

    #[test]
    fn references_come_from_volumes_projections_env_and_env_from() {
        let p = pod(r#"
metadata: {name: web, namespace: prod, uid: u1}
spec:
  serviceAccountName: robot
  volumes:
  - {name: a, configMap: {name: cm-vol}}
  - {name: b, secret: {secretName: s-vol}}
  - name: c
    projected:
      sources:
      - {configMap: {name: cm-proj}}
      - {secret: {name: s-proj}}
      - {serviceAccountToken: {path: token, audience: vault}}
      - {serviceAccountToken: {path: t2, expirationSeconds: 7200}}
  - {name: d, emptyDir: {}}
  - {name: e, persistentVolumeClaim: {claimName: data}}
  - {name: f, persistentVolumeClaim: {claimName: data, readOnly: true}}
  initContainers:
  - name: init
    image: busybox
    envFrom: [{configMapRef: {name: cm-from}}, {secretRef: {name: s-from}}]
  containers:
  - name: app
    image: busybox
    env:
    - {name: A, valueFrom: {configMapKeyRef: {name: cm-env, key: k}}}
    - {name: B, valueFrom: {secretKeyRef: {name: s-env, key: k}}}
    - {name: C, value: plain}
"#);
        let refs = References::of_pod(&p);
        let set = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(
            refs.config_maps,
            set(&["cm-env", "cm-from", "cm-proj", "cm-vol"])
        );
        assert_eq!(refs.secrets, set(&["s-env", "s-from", "s-proj", "s-vol"]));
        assert_eq!(refs.claims, set(&["data"]));
        let tokens: Vec<_> = refs.tokens.into_iter().collect();
        assert_eq!(
            tokens,
            vec![
                TokenSource {
                    service_account: "robot".into(),
                    audience: String::new(),
                    expiration_seconds: 7200
                },
                TokenSource {
                    service_account: "robot".into(),
                    audience: "vault".into(),
                    expiration_seconds: DEFAULT_TOKEN_SECONDS
                },
            ]
        );
        assert!(References::of_pod(&crate::runtime_spec::testpod::minimal()).is_empty());
    }

    #[test]
    fn lookups_tell_missing_from_unfetched() {
        let mut objects = ApiObjects::new("prod");
        objects.insert_config_map("there", Some(ConfigMap::default()));
        objects.insert_config_map("gone", None);
        assert!(matches!(objects.config_map("there"), Lookup::Found(_)));
        assert_eq!(objects.config_map("gone"), Lookup::NotFound);
        assert_eq!(objects.config_map("never"), Lookup::NotFetched);
        assert_eq!(objects.secret("never"), Lookup::NotFetched);
        objects.insert_claim("gone", None);
        assert_eq!(objects.claim("gone"), Lookup::NotFound);
        assert_eq!(objects.claim("never"), Lookup::NotFetched);
        objects.insert_persistent_volume("pv", Some(PersistentVolume::default()));
        assert!(matches!(objects.persistent_volume("pv"), Lookup::Found(_)));
    }
}
