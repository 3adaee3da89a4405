//! The container fingerprint: a versioned digest of the container spec written on every
//! container kwk-node creates, so a restarted (or upgraded) kwk-node can tell "this running
//! container is exactly what the spec asks for" — adopt it — from "the spec changed" — replace it.
//!
//! Format `v1:<32 hex>`: SHA-256 over the canonical JSON of the `Container` plus its kind, where
//! canonical means keys sorted and nulls, empty lists and empty maps removed (so a newer API
//! library that adds an optional field does not change the digest). Changing this format restarts
//! every container on upgrade: add `v2` next to `v1` and keep accepting `v1` instead.

use k8s_openapi::api::core::v1::Container;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::observed::ContainerKind;

const VERSION: &str = "v1";

/// The fingerprint of a container spec of the given kind.
pub fn fingerprint(container: &Container, kind: ContainerKind) -> String {
    let mut value = serde_json::to_value(container).unwrap_or(Value::Null);
    prune(&mut value);
    let mut canonical = String::new();
    crate::canonical::write_canonical(&value, &mut canonical);
    let mut hasher = Sha256::new();
    hasher.update(kind.as_str().as_bytes());
    hasher.update([0u8]);
    hasher.update(canonical.as_bytes());
    let digest = hasher.finalize();
    format!("{VERSION}:{}", hex::encode(&digest[..16]))
}

/// Removes nulls, empty arrays and empty objects, recursively.
fn prune(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for v in map.values_mut() {
                prune(v);
            }
            map.retain(|_, v| !is_empty(v));
        }
        Value::Array(items) => {
            for v in items.iter_mut() {
                prune(v);
            }
        }
        _ => {}
    }
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerPort, EnvVar};

    fn web() -> Container {
        Container {
            name: "web".into(),
            image: Some("localhost/kwk/busybox:1".into()),
            command: Some(vec!["httpd".into(), "-f".into()]),
            env: Some(vec![EnvVar {
                name: "A".into(),
                value: Some("1".into()),
                ..Default::default()
            }]),
            ports: Some(vec![ContainerPort {
                container_port: 80,
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    /// The stored format: if this changes, every container restarts on upgrade.
    #[test]
    fn golden_v1_fingerprint() {
        assert_eq!(
            fingerprint(&web(), ContainerKind::App),
            "v1:7d244a6a39875ab428b2c228c568c315"
        );
    }

    #[test]
    fn empty_optional_fields_do_not_count() {
        let mut with_empties = web();
        with_empties.args = Some(vec![]);
        with_empties.volume_mounts = Some(vec![]);
        assert_eq!(
            fingerprint(&with_empties, ContainerKind::App),
            fingerprint(&web(), ContainerKind::App)
        );
    }

    #[test]
    fn every_spec_change_and_the_kind_count() {
        let base = fingerprint(&web(), ContainerKind::App);
        let mut env = web();
        env.env = Some(vec![EnvVar {
            name: "A".into(),
            value: Some("2".into()),
            ..Default::default()
        }]);
        let mut image = web();
        image.image = Some("localhost/kwk/busybox:2".into());
        let mut workdir = web();
        workdir.working_dir = Some("/tmp".into());
        for changed in [env, image, workdir] {
            assert_ne!(fingerprint(&changed, ContainerKind::App), base);
        }
        assert_ne!(fingerprint(&web(), ContainerKind::Sidecar), base);
        assert!(base.starts_with("v1:") && base.len() == 35);
    }
}
