//! Validation of a pod spec's volumes (upstream's `ValidateVolumes`): names, exactly one
//! source per volume, and the checks of each source kind.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{KeyToPath, Volume};

use super::container::{check_local_descending_path, check_quantity};
use crate::field::{FieldError, duplicate, forbidden, invalid, not_supported, required};
use crate::names::{self, check_dns1123_label, check_dns1123_subdomain};

/// `hostPath.type` values, sorted as upstream lists them.
pub const HOST_PATH_TYPES: &[&str] = &[
    "",
    "BlockDevice",
    "CharDevice",
    "Directory",
    "DirectoryOrCreate",
    "File",
    "FileOrCreate",
    "Socket",
];

const FILE_MODE_MSG: &str = "must be a number between 0 and 0777 (octal), both inclusive";

/// The JSON names of the volume sources set on `vol` (`emptyDir`, `hostPath`, ...).
pub fn volume_source_names(vol: &Volume) -> Vec<String> {
    match serde_json::to_value(vol) {
        Ok(serde_json::Value::Object(map)) => map
            .into_iter()
            .filter(|(k, v)| k != "name" && !v.is_null())
            .map(|(k, _)| k)
            .collect(),
        // A Volume always serialises to an object; nothing else can be counted.
        _ => Vec::new(),
    }
}

fn has_backsteps(path: &str) -> bool {
    path.split('/').any(|part| part == "..")
}

fn check_mode(path: &str, mode: Option<i32>, errs: &mut Vec<FieldError>) {
    if let Some(m) = mode.filter(|m| !(0..=0o777).contains(m)) {
        errs.push(invalid(path, m, FILE_MODE_MSG));
    }
}

fn check_items(path: &str, items: Option<&[KeyToPath]>, errs: &mut Vec<FieldError>) {
    for (i, item) in items.into_iter().flatten().enumerate() {
        let item_path = format!("{path}[{i}]");
        if item.key.is_empty() {
            errs.push(required(&format!("{item_path}.key"), ""));
        }
        if item.path.is_empty() {
            errs.push(required(&format!("{item_path}.path"), ""));
        } else {
            check_local_descending_path(&format!("{item_path}.path"), &item.path, errs);
        }
        check_mode(&format!("{item_path}.mode"), item.mode, errs);
    }
}

/// Checks the volumes and returns the names volume mounts may reference.
pub(crate) fn validate_volumes<'a>(
    volumes: &'a [Volume],
    base: &str,
    errs: &mut Vec<FieldError>,
) -> BTreeSet<&'a str> {
    let mut names_seen = BTreeSet::new();
    for (i, vol) in volumes.iter().enumerate() {
        let path = format!("{base}[{i}]");
        if vol.name.is_empty() {
            errs.push(required(&format!("{path}.name"), ""));
        } else {
            check_dns1123_label(&format!("{path}.name"), &vol.name, errs);
            if !names_seen.insert(vol.name.as_str()) {
                errs.push(duplicate(&format!("{path}.name"), vol.name.as_str()));
            }
        }
        let sources = volume_source_names(vol);
        match sources.as_slice() {
            [] => errs.push(required(&path, "must specify a volume type")),
            [_] => {}
            [_, more @ ..] => {
                errs.push(forbidden(
                    &format!("{path}.{}", more[0]),
                    "may not specify more than 1 volume type",
                ));
            }
        }
        validate_sources(vol, &path, errs);
    }
    names_seen
}

fn validate_sources(vol: &Volume, path: &str, errs: &mut Vec<FieldError>) {
    if let Some(hp) = &vol.host_path {
        let hp_path = format!("{path}.hostPath");
        if hp.path.is_empty() {
            errs.push(required(&format!("{hp_path}.path"), ""));
        } else if has_backsteps(&hp.path) {
            errs.push(invalid(
                &format!("{hp_path}.path"),
                hp.path.as_str(),
                "must not contain '..'",
            ));
        }
        let ty = hp.type_.as_deref().unwrap_or_default();
        if !HOST_PATH_TYPES.contains(&ty) {
            errs.push(not_supported(
                &format!("{hp_path}.type"),
                ty,
                HOST_PATH_TYPES,
            ));
        }
    }
    if let Some(ed) = &vol.empty_dir {
        let medium = ed.medium.as_deref().unwrap_or_default();
        if !matches!(medium, "" | "Memory") && !medium.starts_with("HugePages") {
            errs.push(not_supported(
                &format!("{path}.emptyDir.medium"),
                medium,
                &["", "Memory", "HugePages", "HugePages-<size>"],
            ));
        }
        if let Some(limit) = &ed.size_limit {
            check_quantity(&format!("{path}.emptyDir.sizeLimit"), &limit.0, errs);
        }
    }
    if let Some(s) = &vol.secret {
        let s_path = format!("{path}.secret");
        match s.secret_name.as_deref() {
            None | Some("") => errs.push(required(&format!("{s_path}.secretName"), "")),
            Some(name) => check_dns1123_subdomain(&format!("{s_path}.secretName"), name, errs),
        }
        check_mode(&format!("{s_path}.defaultMode"), s.default_mode, errs);
        check_items(&format!("{s_path}.items"), s.items.as_deref(), errs);
    }
    if let Some(c) = &vol.config_map {
        let c_path = format!("{path}.configMap");
        if c.name.is_empty() {
            errs.push(required(&format!("{c_path}.name"), ""));
        } else {
            check_dns1123_subdomain(&format!("{c_path}.name"), &c.name, errs);
        }
        check_mode(&format!("{c_path}.defaultMode"), c.default_mode, errs);
        check_items(&format!("{c_path}.items"), c.items.as_deref(), errs);
    }
    if let Some(pvc) = &vol.persistent_volume_claim
        && pvc.claim_name.is_empty()
    {
        errs.push(required(
            &format!("{path}.persistentVolumeClaim.claimName"),
            "",
        ));
    }
    if let Some(d) = &vol.downward_api {
        let d_path = format!("{path}.downwardAPI");
        check_mode(&format!("{d_path}.defaultMode"), d.default_mode, errs);
        for (i, item) in d.items.iter().flatten().enumerate() {
            let item_path = format!("{d_path}.items[{i}]");
            if item.path.is_empty() {
                errs.push(required(&format!("{item_path}.path"), ""));
            } else {
                check_local_descending_path(&format!("{item_path}.path"), &item.path, errs);
            }
            check_mode(&format!("{item_path}.mode"), item.mode, errs);
        }
    }
    if let Some(p) = &vol.projected {
        let p_path = format!("{path}.projected");
        check_mode(&format!("{p_path}.defaultMode"), p.default_mode, errs);
        for (i, source) in p.sources.iter().flatten().enumerate() {
            let s_path = format!("{p_path}.sources[{i}]");
            let kinds = [
                ("secret", source.secret.is_some()),
                ("configMap", source.config_map.is_some()),
                ("downwardAPI", source.downward_api.is_some()),
                (
                    "serviceAccountToken",
                    source.service_account_token.is_some(),
                ),
                ("clusterTrustBundle", source.cluster_trust_bundle.is_some()),
            ];
            let set: Vec<&str> = kinds.iter().filter(|(_, s)| *s).map(|(k, _)| *k).collect();
            if set.len() > 1 {
                errs.push(forbidden(
                    &format!("{s_path}.{}", set[1]),
                    "may not specify more than 1 volume type per source",
                ));
            }
            if let Some(token) = &source.service_account_token {
                let t_path = format!("{s_path}.serviceAccountToken");
                if token.path.is_empty() {
                    errs.push(required(&format!("{t_path}.path"), ""));
                } else {
                    check_local_descending_path(&format!("{t_path}.path"), &token.path, errs);
                }
                match token.expiration_seconds {
                    Some(s) if s < 600 => errs.push(invalid(
                        &format!("{t_path}.expirationSeconds"),
                        s,
                        "may not specify a duration less than 10 minutes",
                    )),
                    Some(s) if s > 1 << 32 => errs.push(invalid(
                        &format!("{t_path}.expirationSeconds"),
                        s,
                        "may not specify a duration larger than 2^32 seconds",
                    )),
                    _ => {}
                }
            }
            if let Some(s) = &source.secret {
                check_items(&format!("{s_path}.secret.items"), s.items.as_deref(), errs);
            }
            if let Some(c) = &source.config_map {
                check_items(
                    &format!("{s_path}.configMap.items"),
                    c.items.as_deref(),
                    errs,
                );
            }
        }
    }
    if let Some(nfs) = &vol.nfs {
        if nfs.server.is_empty() {
            errs.push(required(&format!("{path}.nfs.server"), ""));
        }
        if nfs.path.is_empty() {
            errs.push(required(&format!("{path}.nfs.path"), ""));
        } else if !nfs.path.starts_with('/') {
            errs.push(invalid(
                &format!("{path}.nfs.path"),
                nfs.path.as_str(),
                "must be an absolute path",
            ));
        }
    }
    if let Some(csi) = &vol.csi {
        if csi.driver.is_empty() {
            errs.push(required(&format!("{path}.csi.driver"), ""));
        } else {
            for p in names::dns1123_subdomain_problems(&csi.driver.to_lowercase()) {
                errs.push(invalid(
                    &format!("{path}.csi.driver"),
                    csi.driver.as_str(),
                    &p,
                ));
            }
        }
    }
    if let Some(image) = &vol.image
        && image.reference.as_deref().unwrap_or_default().is_empty()
    {
        errs.push(required(&format!("{path}.image.reference"), ""));
    }
    if let Some(eph) = &vol.ephemeral
        && eph.volume_claim_template.is_none()
    {
        errs.push(required(
            &format!("{path}.ephemeral.volumeClaimTemplate"),
            "",
        ));
    }
}
