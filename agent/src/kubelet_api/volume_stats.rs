//! The pods' emptyDir volumes in `/stats/summary`: one `volume` entry per emptyDir (`name`,
//! `usedBytes`/`inodesUsed` from a walk of the volume, `capacityBytes`/`availableBytes`/
//! `inodes`/`inodesFree` of the filesystem it is on — its own tmpfs for `medium: Memory`), and
//! the disk-backed ones added to the pod's `ephemeral-storage` (which [`super::fs_net`] fills
//! with the writable layers and logs). Measuring is [`crate::eviction::disk_usage`]; the JSON
//! shaping here is pure.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use super::fs_net::{self, FsSample};
use crate::eviction::disk_usage;
use crate::eviction::local_storage::VolumeUsage;

/// One measured emptyDir: its use and the filesystem it is on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VolumeSample {
    pub usage: VolumeUsage,
    pub fs: Option<FsSample>,
}

/// The emptyDirs of `pods`, by pod UID then volume name (blocking: walks them).
pub fn measure(root_dir: &Path, pods: &[Pod]) -> BTreeMap<String, BTreeMap<String, VolumeSample>> {
    pods.iter()
        .filter_map(|pod| {
            let uid = pod.metadata.uid.clone()?;
            let volumes = disk_usage::empty_dirs(root_dir, pod)
                .into_iter()
                .map(|(name, usage)| {
                    let fs = fs_net::statvfs(&disk_usage::empty_dir_path(root_dir, &uid, &name));
                    (name, VolumeSample { usage, fs })
                })
                .collect();
            Some((uid, volumes))
        })
        .collect()
}

/// Adds each pod's `volume` entries and its disk-backed emptyDirs to its `ephemeral-storage`
/// (created if missing).
pub fn add_volumes(
    summary: &mut Value,
    time: &str,
    volumes: &BTreeMap<String, BTreeMap<String, VolumeSample>>,
) {
    let Some(pods) = summary["pods"].as_array_mut() else {
        return;
    };
    for pod in pods {
        let uid = pod["podRef"]["uid"].as_str().unwrap_or_default();
        let Some(measured) = volumes.get(uid).filter(|v| !v.is_empty()) else {
            continue;
        };
        let mut disk = fs_net::Usage::default();
        let entries: Vec<Value> = measured
            .iter()
            .map(|(name, sample)| {
                if !sample.usage.memory {
                    disk = disk + sample.usage.used;
                }
                let mut entry = fs_net::usage_json(time, sample.fs.as_ref(), sample.usage.used);
                entry["name"] = json!(name);
                entry
            })
            .collect();
        pod["volume"] = Value::Array(entries);
        let ephemeral = &mut pod["ephemeral-storage"];
        if ephemeral.is_null() {
            *ephemeral = fs_net::usage_json(time, None, disk);
        } else {
            for (field, add) in [("usedBytes", disk.bytes), ("inodesUsed", disk.inodes)] {
                let current = ephemeral[field].as_u64().unwrap_or(0);
                ephemeral[field] = json!(current.saturating_add(add));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubelet_api::fs_net::Usage;

    #[test]
    fn emptydirs_become_volume_entries_and_ephemeral_storage() {
        let mut summary = json!({"pods": [
            {"podRef": {"uid": "u1"}, "ephemeral-storage": {"usedBytes": 100, "inodesUsed": 3}},
            {"podRef": {"uid": "u2"}},
            {"podRef": {"uid": "u3"}},
        ]});
        let fs = FsSample {
            capacity_bytes: 1000,
            available_bytes: 600,
            used_bytes: 400,
            inodes: 100,
            inodes_free: 90,
        };
        let sample = |bytes, memory| VolumeSample {
            usage: VolumeUsage {
                used: Usage { bytes, inodes: 2 },
                memory,
            },
            fs: Some(fs),
        };
        let volumes = BTreeMap::from([
            (
                "u1".to_string(),
                BTreeMap::from([
                    ("cache".to_string(), sample(50, false)),
                    ("shm".to_string(), sample(7, true)),
                ]),
            ),
            (
                "u2".to_string(),
                BTreeMap::from([("data".to_string(), sample(5, false))]),
            ),
        ]);
        add_volumes(&mut summary, "t", &volumes);
        let u1 = &summary["pods"][0];
        assert_eq!(u1["volume"][0]["name"], "cache");
        assert_eq!(u1["volume"][0]["usedBytes"], 50);
        assert_eq!(u1["volume"][0]["inodesUsed"], 2);
        assert_eq!(u1["volume"][0]["capacityBytes"], 1000);
        assert_eq!(u1["volume"][0]["availableBytes"], 600);
        assert_eq!(u1["volume"][0]["time"], "t");
        assert_eq!(u1["volume"][1]["name"], "shm");
        assert_eq!(
            u1["ephemeral-storage"]["usedBytes"], 150,
            "the memory emptyDir is not local disk"
        );
        assert_eq!(u1["ephemeral-storage"]["inodesUsed"], 5);
        assert_eq!(summary["pods"][1]["ephemeral-storage"]["usedBytes"], 5);
        assert!(summary["pods"][2].get("volume").is_none());
    }
}
