//! The pure rules of upstream's `ServiceAccount` admission plugin, applied to a pod being
//! created: mirror pods are left alone but may not reference service accounts, secrets or
//! token projections; other pods run as `default` unless they name an account, get the
//! account's image pull secrets when they list none, and — unless `automountServiceAccountToken`
//! says no (the pod's setting wins over the account's) — a `kube-api-access-<suffix>`
//! projected volume (a bound token, the cluster CA from `kube-root-ca.crt`, the namespace)
//! mounted read-only at [`TOKEN_MOUNT_PATH`] in every init and app container that has
//! nothing mounted there. An account annotated `kubernetes.io/enforce-mountable-secrets:
//! "true"` limits the secrets the pod may use to the account's. Looking the account up (and
//! the not-found refusal) is the registry's part, in `rest::admission`.

use k8s_openapi::api::core::v1::{
    ConfigMapProjection, Container, DownwardAPIProjection, DownwardAPIVolumeFile, KeyToPath,
    LocalObjectReference, ObjectFieldSelector, Pod, PodSpec, ProjectedVolumeSource, ServiceAccount,
    ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};

/// The account a pod without `serviceAccountName` runs as.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";
/// Where the token volume is mounted in every container.
pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The token volume's name before its random suffix.
pub const TOKEN_VOLUME_PREFIX: &str = "kube-api-access-";
/// The projected token's lifetime: upstream's warn-only bound-token expiration (1 h + 7 s).
pub const TOKEN_EXPIRATION_SECONDS: i64 = 3607;
/// The annotation the kubelet puts on mirror pods.
pub const MIRROR_POD_ANNOTATION: &str = "kubernetes.io/config.mirror";
/// An account annotation limiting the secrets its pods may reference to its own.
pub const ENFORCE_MOUNTABLE_SECRETS: &str = "kubernetes.io/enforce-mountable-secrets";

/// Why the plugin refuses a pod (the text after `pods "name" is forbidden: `).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("a mirror pod may not reference service accounts")]
    MirrorServiceAccount,
    #[error("a mirror pod may not reference secrets")]
    MirrorSecrets,
    #[error("a mirror pod may not use ServiceAccountToken volume projections")]
    MirrorTokenProjection,
    #[error(
        "volume with secret.secretName=\"{secret}\" is not allowed because service account \
         {account} does not reference that secret"
    )]
    VolumeSecret { secret: String, account: String },
    #[error(
        "{kind} {container} with envVar {env} referencing secret.secretName=\"{secret}\" is not \
         allowed because service account {account} does not reference that secret"
    )]
    EnvSecret {
        kind: &'static str,
        container: String,
        env: String,
        secret: String,
        account: String,
    },
    #[error(
        "imagePullSecrets[{index}].name=\"{secret}\" is not allowed because service account \
         {account} does not reference that imagePullSecret"
    )]
    PullSecret {
        index: usize,
        secret: String,
        account: String,
    },
}

pub fn is_mirror_pod(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(MIRROR_POD_ANNOTATION))
}

/// What a mirror pod may not do: name an account, reference a secret anywhere, or project a
/// service account token.
pub fn check_mirror_pod(pod: &Pod) -> Result<(), Refusal> {
    let Some(spec) = &pod.spec else {
        return Ok(());
    };
    if spec
        .service_account_name
        .as_deref()
        .is_some_and(|n| !n.is_empty())
    {
        return Err(Refusal::MirrorServiceAccount);
    }
    if !secret_names(spec).is_empty() {
        return Err(Refusal::MirrorSecrets);
    }
    let projects_token = spec.volumes.iter().flatten().any(|v| {
        v.projected
            .iter()
            .flat_map(|p| p.sources.iter().flatten())
            .any(|s| s.service_account_token.is_some())
    });
    if projects_token {
        return Err(Refusal::MirrorTokenProjection);
    }
    Ok(())
}

/// Sets `serviceAccountName` (and its deprecated alias `serviceAccount`) to `default` when
/// it is empty; returns the account's name.
pub fn default_service_account_name(pod: &mut Pod) -> String {
    let spec = pod.spec.get_or_insert_with(PodSpec::default);
    if spec
        .service_account_name
        .as_deref()
        .unwrap_or_default()
        .is_empty()
    {
        spec.service_account_name = Some(DEFAULT_SERVICE_ACCOUNT.to_string());
    }
    spec.service_account = spec.service_account_name.clone();
    spec.service_account_name.clone().unwrap_or_default()
}

/// Whether the pod gets the token volume: the pod's setting, else the account's, else yes.
pub fn should_automount(pod: &Pod, account: &ServiceAccount) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.automount_service_account_token)
        .or(account.automount_service_account_token)
        .unwrap_or(true)
}

/// The mutating half for a pod that is not a mirror pod and whose `account` exists: the
/// token volume (named `kube-api-access-<volume_suffix>` unless one is there already) and
/// its mounts when [`should_automount`], the account's pull secrets when the pod has none.
pub fn admit(pod: &mut Pod, account: &ServiceAccount, volume_suffix: &str) {
    if should_automount(pod, account) {
        mount_token(pod.spec.get_or_insert_with(PodSpec::default), volume_suffix);
    }
    let spec = pod.spec.get_or_insert_with(PodSpec::default);
    if spec.image_pull_secrets.as_ref().is_none_or(Vec::is_empty) {
        let inherited: Vec<LocalObjectReference> = account
            .image_pull_secrets
            .iter()
            .flatten()
            .map(|s| LocalObjectReference {
                name: s.name.clone(),
            })
            .collect();
        spec.image_pull_secrets = (!inherited.is_empty()).then_some(inherited);
    }
}

/// The validating half: with [`ENFORCE_MOUNTABLE_SECRETS`] set on the account, the pod's
/// secret volumes, secret env vars (init and app containers) and pull secrets must be ones
/// the account lists.
pub fn check_mountable_secrets(pod: &Pod, account: &ServiceAccount) -> Result<(), Refusal> {
    let enforced = account
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ENFORCE_MOUNTABLE_SECRETS))
        .is_some_and(|v| parse_go_bool(v) == Some(true));
    let Some(spec) = pod.spec.as_ref().filter(|_| enforced) else {
        return Ok(());
    };
    let account_name = account.metadata.name.clone().unwrap_or_default();
    let mountable: Vec<&str> = account
        .secrets
        .iter()
        .flatten()
        .filter_map(|r| r.name.as_deref())
        .collect();
    for volume in spec.volumes.iter().flatten() {
        if let Some(secret) = &volume.secret {
            let name = secret.secret_name.clone().unwrap_or_default();
            if !mountable.contains(&name.as_str()) {
                return Err(Refusal::VolumeSecret {
                    secret: name,
                    account: account_name,
                });
            }
        }
    }
    let containers = [
        (
            "init container",
            spec.init_containers.as_deref().unwrap_or_default(),
        ),
        ("container", spec.containers.as_slice()),
    ];
    for (kind, list) in containers {
        for container in list {
            for env in container.env.iter().flatten() {
                let Some(key) = env
                    .value_from
                    .as_ref()
                    .and_then(|v| v.secret_key_ref.as_ref())
                else {
                    continue;
                };
                if !mountable.contains(&key.name.as_str()) {
                    return Err(Refusal::EnvSecret {
                        kind,
                        container: container.name.clone(),
                        env: env.name.clone(),
                        secret: key.name.clone(),
                        account: account_name,
                    });
                }
            }
        }
    }
    let pull: Vec<&str> = account
        .image_pull_secrets
        .iter()
        .flatten()
        .map(|r| r.name.as_str())
        .collect();
    for (index, secret) in spec.image_pull_secrets.iter().flatten().enumerate() {
        if !pull.contains(&secret.name.as_str()) {
            return Err(Refusal::PullSecret {
                index,
                secret: secret.name.clone(),
                account: account_name,
            });
        }
    }
    Ok(())
}

/// The projected volume upstream mounts for a service account.
pub fn token_volume_source() -> ProjectedVolumeSource {
    ProjectedVolumeSource {
        default_mode: Some(0o644),
        sources: Some(vec![
            VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    expiration_seconds: Some(TOKEN_EXPIRATION_SECONDS),
                    path: "token".into(),
                    audience: None,
                }),
                ..Default::default()
            },
            VolumeProjection {
                config_map: Some(ConfigMapProjection {
                    name: "kube-root-ca.crt".into(),
                    items: Some(vec![KeyToPath {
                        key: "ca.crt".into(),
                        path: "ca.crt".into(),
                        mode: None,
                    }]),
                    optional: None,
                }),
                ..Default::default()
            },
            VolumeProjection {
                downward_api: Some(DownwardAPIProjection {
                    items: Some(vec![DownwardAPIVolumeFile {
                        path: "namespace".into(),
                        field_ref: Some(ObjectFieldSelector {
                            api_version: Some("v1".into()),
                            field_path: "metadata.namespace".into(),
                        }),
                        ..Default::default()
                    }]),
                }),
                ..Default::default()
            },
        ]),
    }
}

/// Mounts the token volume in every init and app container without a mount at
/// [`TOKEN_MOUNT_PATH`]; adds the volume when a container needs it and no
/// `kube-api-access-*` volume exists (an existing one is reused by name).
fn mount_token(spec: &mut PodSpec, volume_suffix: &str) {
    let existing = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name.starts_with(TOKEN_VOLUME_PREFIX))
        .map(|v| v.name.clone());
    let name = existing
        .clone()
        .unwrap_or_else(|| format!("{TOKEN_VOLUME_PREFIX}{volume_suffix}"));
    let mut needed = false;
    let init = spec.init_containers.iter_mut().flatten();
    for container in init.chain(spec.containers.iter_mut()) {
        needed |= add_mount(container, &name);
    }
    if needed && existing.is_none() {
        spec.volumes.get_or_insert_with(Vec::new).push(Volume {
            name,
            projected: Some(token_volume_source()),
            ..Default::default()
        });
    }
}

/// Adds the token mount to `container` unless something is mounted at its path.
fn add_mount(container: &mut Container, volume: &str) -> bool {
    let mounts = container.volume_mounts.get_or_insert_with(Vec::new);
    if mounts.iter().any(|m| m.mount_path == TOKEN_MOUNT_PATH) {
        return false;
    }
    mounts.push(VolumeMount {
        name: volume.to_string(),
        mount_path: TOKEN_MOUNT_PATH.into(),
        read_only: Some(true),
        ..Default::default()
    });
    true
}

/// Every secret the pod spec references (pull secrets, env of all containers, volumes).
pub fn secret_names(spec: &PodSpec) -> Vec<String> {
    let mut names: Vec<String> = spec
        .image_pull_secrets
        .iter()
        .flatten()
        .map(|r| r.name.clone())
        .collect();
    let containers = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter());
    for container in containers {
        env_secrets(
            container.env_from.as_deref(),
            container.env.as_deref(),
            &mut names,
        );
    }
    for container in spec.ephemeral_containers.iter().flatten() {
        env_secrets(
            container.env_from.as_deref(),
            container.env.as_deref(),
            &mut names,
        );
    }
    for volume in spec.volumes.iter().flatten() {
        volume_secrets(volume, &mut names);
    }
    names
}

fn env_secrets(
    env_from: Option<&[k8s_openapi::api::core::v1::EnvFromSource]>,
    env: Option<&[k8s_openapi::api::core::v1::EnvVar]>,
    names: &mut Vec<String>,
) {
    for source in env_from.unwrap_or_default() {
        if let Some(secret) = &source.secret_ref {
            names.push(secret.name.clone());
        }
    }
    for var in env.unwrap_or_default() {
        if let Some(key) = var
            .value_from
            .as_ref()
            .and_then(|v| v.secret_key_ref.as_ref())
        {
            names.push(key.name.clone());
        }
    }
}

fn volume_secrets(volume: &Volume, names: &mut Vec<String>) {
    let mut push = |name: Option<&str>| names.push(name.unwrap_or_default().to_string());
    if let Some(s) = &volume.azure_file {
        push(Some(&s.secret_name));
    }
    if let Some(s) = &volume.cephfs {
        s.secret_ref.iter().for_each(|r| push(Some(&r.name)));
    }
    if let Some(s) = &volume.cinder {
        s.secret_ref.iter().for_each(|r| push(Some(&r.name)));
    }
    if let Some(s) = &volume.flex_volume {
        s.secret_ref.iter().for_each(|r| push(Some(&r.name)));
    }
    if let Some(p) = &volume.projected {
        for source in p.sources.iter().flatten() {
            source.secret.iter().for_each(|s| push(Some(&s.name)));
        }
    }
    if let Some(s) = &volume.rbd {
        s.secret_ref.iter().for_each(|r| push(Some(&r.name)));
    }
    if let Some(s) = &volume.secret {
        push(s.secret_name.as_deref());
    }
    if let Some(s) = &volume.scale_io {
        push(Some(&s.secret_ref.name));
    }
    if let Some(s) = &volume.iscsi {
        s.secret_ref.iter().for_each(|r| push(Some(&r.name)));
    }
    if let Some(s) = &volume.storageos {
        s.secret_ref.iter().for_each(|r| push(Some(&r.name)));
    }
    if let Some(s) = &volume.csi {
        s.node_publish_secret_ref
            .iter()
            .for_each(|r| push(Some(&r.name)));
    }
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}
