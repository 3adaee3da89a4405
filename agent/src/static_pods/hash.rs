//! The static pod hash, which is also its UID: sha256 over a canonical JSON rendering of the
//! whole defaulted pod, first 32 hex digits. Pure.
//!
//! Canonical JSON: object keys sorted bytewise, `null` members dropped, no whitespace, strings
//! and numbers as serde_json writes them. The UID, `config.hash` and `config.seen` are left out
//! (they derive from the hash or from time). Everything else counts, so any spec change gives a
//! new UID, and reformatting the manifest does not.
//!
//! **Stable format.** Changing anything here (the rendering, the fields left out, the defaults
//! applied before hashing) changes every static pod's UID, so every static pod, including the
//! control plane, restarts once on upgrade. The golden test in `manifest.rs` pins it.

use k8s_openapi::api::core::v1::Pod;
use sha2::{Digest, Sha256};

use crate::labels;

/// Hex digits of the sha256 kept for the UID.
const HASH_HEX_LEN: usize = 32;

/// The hash of a defaulted static pod (its UID and `kubernetes.io/config.hash`).
pub fn pod_hash(pod: &Pod) -> String {
    let mut pod = pod.clone();
    pod.metadata.uid = None;
    if let Some(annotations) = pod.metadata.annotations.as_mut() {
        annotations.remove(labels::CONFIG_HASH);
        annotations.remove(labels::CONFIG_SEEN);
        if annotations.is_empty() {
            pod.metadata.annotations = None;
        }
    }
    let mut text = String::new();
    match serde_json::to_value(&pod) {
        Ok(value) => crate::canonical::write_canonical(&value, &mut text),
        // A Pod always serialises; keep the function total anyway.
        Err(e) => text.push_str(&e.to_string()),
    }
    let digest = Sha256::digest(text.as_bytes());
    let mut hex = hex::encode(digest);
    hex.truncate(HASH_HEX_LEN);
    hex
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_fields_do_not_count() {
        let mut pod = Pod::default();
        pod.metadata.name = Some("a".into());
        let base = pod_hash(&pod);
        pod.metadata.uid = Some("x".into());
        pod.metadata.annotations = Some(
            [
                (labels::CONFIG_SEEN.to_string(), "now".to_string()),
                (labels::CONFIG_HASH.to_string(), "h".to_string()),
            ]
            .into(),
        );
        assert_eq!(pod_hash(&pod), base);
        pod.metadata.name = Some("b".into());
        assert_ne!(pod_hash(&pod), base);
        assert_eq!(base.len(), HASH_HEX_LEN);
    }
}
