//! The file system and network parts of `/stats/summary`: the node's interfaces from
//! `/proc/net/dev`, a file system's capacity from `statvfs`, the bytes and inodes of the pods'
//! log files under `podLogsDir`, and the pods' network from the runtime (CRI
//! `ListPodSandboxStats`). Parsing and JSON shaping are pure; the readers are thin.

use std::collections::BTreeMap;
use std::path::Path;

use kwk_cri::api;
use serde_json::{Value, json};

use crate::labels;

/// One interface's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InterfaceSample {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_errors: u64,
    pub tx_bytes: u64,
    pub tx_errors: u64,
}

/// The interfaces of `/proc/net/dev`, loopback left out (upstream reports no `lo`).
pub fn parse_proc_net_dev(text: &str) -> Vec<InterfaceSample> {
    text.lines()
        .filter_map(|line| {
            let (name, counters) = line.split_once(':')?;
            let name = name.trim();
            let fields: Vec<u64> = counters
                .split_whitespace()
                .map(|f| f.parse().ok())
                .collect::<Option<_>>()?;
            // rx: bytes packets errs drop fifo frame compressed multicast; then tx the same.
            (name != "lo" && fields.len() >= 16).then(|| InterfaceSample {
                name: name.to_string(),
                rx_bytes: fields[0],
                rx_errors: fields[2],
                tx_bytes: fields[8],
                tx_errors: fields[10],
            })
        })
        .collect()
}

/// The `NetworkStats` JSON: the default interface's counters inline, all in `interfaces`.
pub fn network_json(time: &str, default: &str, interfaces: &[InterfaceSample]) -> Value {
    let one = |i: &InterfaceSample| {
        json!({
            "name": i.name,
            "rxBytes": i.rx_bytes,
            "rxErrors": i.rx_errors,
            "txBytes": i.tx_bytes,
            "txErrors": i.tx_errors,
        })
    };
    let mut value = interfaces
        .iter()
        .find(|i| i.name == default)
        .or_else(|| interfaces.first())
        .map(one)
        .unwrap_or_else(|| json!({}));
    value["time"] = json!(time);
    value["interfaces"] = Value::Array(interfaces.iter().map(one).collect());
    value
}

/// A file system's size and use (bytes and inodes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FsSample {
    pub capacity_bytes: u64,
    pub available_bytes: u64,
    pub used_bytes: u64,
    pub inodes: u64,
    pub inodes_free: u64,
}

/// The file system holding `path`, from `statvfs`.
pub fn statvfs(path: &Path) -> Option<FsSample> {
    let vfs = nix::sys::statvfs::statvfs(path).ok()?;
    let block = vfs.fragment_size();
    let capacity = vfs.blocks().saturating_mul(block);
    let free = vfs.blocks_free().saturating_mul(block);
    Some(FsSample {
        capacity_bytes: capacity,
        available_bytes: vfs.blocks_available().saturating_mul(block),
        used_bytes: capacity.saturating_sub(free),
        inodes: vfs.files(),
        inodes_free: vfs.files_free(),
    })
}

/// The `FsStats` JSON of a whole file system.
pub fn fs_json(time: &str, fs: &FsSample) -> Value {
    json!({
        "time": time,
        "availableBytes": fs.available_bytes,
        "capacityBytes": fs.capacity_bytes,
        "usedBytes": fs.used_bytes,
        "inodesFree": fs.inodes_free,
        "inodes": fs.inodes,
        "inodesUsed": fs.inodes.saturating_sub(fs.inodes_free),
    })
}

/// The `FsStats` JSON of what one user of `fs` takes: its own bytes and inodes, the file
/// system's capacity and free space.
pub fn usage_json(time: &str, fs: Option<&FsSample>, used: Usage) -> Value {
    let mut value = json!({
        "time": time,
        "usedBytes": used.bytes,
        "inodesUsed": used.inodes,
    });
    if let Some(fs) = fs {
        value["availableBytes"] = json!(fs.available_bytes);
        value["capacityBytes"] = json!(fs.capacity_bytes);
        value["inodesFree"] = json!(fs.inodes_free);
        value["inodes"] = json!(fs.inodes);
    }
    value
}

/// Bytes and inodes used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub bytes: u64,
    pub inodes: u64,
}

impl std::ops::Add for Usage {
    type Output = Self;
    fn add(self, other: Self) -> Self {
        Self {
            bytes: self.bytes.saturating_add(other.bytes),
            inodes: self.inodes.saturating_add(other.inodes),
        }
    }
}

/// The pod UID of a pod log directory name (`<namespace>_<name>_<uid>`).
pub fn pod_uid_of_log_dir(name: &str) -> Option<&str> {
    name.rsplit_once('_')
        .map(|(_, uid)| uid)
        .filter(|u| !u.is_empty())
}

/// The log usage under `pod_logs_dir`, by (pod UID, container name): the files' bytes (as
/// allocated on disk) and count.
pub fn log_usage(pod_logs_dir: &Path) -> BTreeMap<(String, String), Usage> {
    use std::os::unix::fs::MetadataExt as _;
    let mut usage = BTreeMap::new();
    let entries = |dir: &Path| std::fs::read_dir(dir).into_iter().flatten().flatten();
    for pod_dir in entries(pod_logs_dir) {
        let name = pod_dir.file_name().to_string_lossy().into_owned();
        let Some(uid) = pod_uid_of_log_dir(&name) else {
            continue;
        };
        for container_dir in entries(&pod_dir.path()) {
            let container = container_dir.file_name().to_string_lossy().into_owned();
            let mut total = Usage::default();
            for file in entries(&container_dir.path()) {
                if let Ok(meta) = file.metadata()
                    && meta.is_file()
                {
                    total = total
                        + Usage {
                            bytes: meta.blocks().saturating_mul(512),
                            inodes: 1,
                        };
                }
            }
            usage.insert((uid.to_string(), container), total);
        }
    }
    usage
}

/// Each pod's network counters from the runtime, by pod UID.
pub fn pod_networks(
    stats: &[api::PodSandboxStats],
) -> BTreeMap<String, (String, Vec<InterfaceSample>)> {
    let interface = |i: &api::NetworkInterfaceUsage| InterfaceSample {
        name: i.name.clone(),
        rx_bytes: i.rx_bytes.as_ref().map_or(0, |v| v.value),
        rx_errors: i.rx_errors.as_ref().map_or(0, |v| v.value),
        tx_bytes: i.tx_bytes.as_ref().map_or(0, |v| v.value),
        tx_errors: i.tx_errors.as_ref().map_or(0, |v| v.value),
    };
    stats
        .iter()
        .filter_map(|s| {
            let uid = s.attributes.as_ref()?.labels.get(labels::POD_UID)?.clone();
            let network = s.linux.as_ref()?.network.as_ref()?;
            let default = network.default_interface.as_ref()?;
            let mut interfaces: Vec<InterfaceSample> =
                network.interfaces.iter().map(interface).collect();
            if interfaces.is_empty() {
                interfaces.push(interface(default));
            }
            Some((uid, (default.name.clone(), interfaces)))
        })
        .collect()
}

/// What [`add_storage_and_network`] adds to the summary.
#[derive(Clone, Debug, Default)]
pub struct Storage {
    /// When it was gathered (RFC 3339).
    pub time: String,
    /// The file system of the root dir (upstream's node `fs`).
    pub node_fs: Option<FsSample>,
    /// The file system of `podLogsDir` (the containers' `logs` capacity; the node's if unknown).
    pub logs_fs: Option<FsSample>,
    pub node_interfaces: Vec<InterfaceSample>,
    /// The runtime's image file system: its capacity (if found) and what images use.
    pub image_fs: Option<(Option<FsSample>, Usage)>,
    /// By (pod UID, container name).
    pub logs: BTreeMap<(String, String), Usage>,
    /// By pod UID: the default interface and all interfaces.
    pub pod_networks: BTreeMap<String, (String, Vec<InterfaceSample>)>,
}

/// Adds node `fs`, `network` and `runtime.imageFs`/`containerFs`, each container's `rootfs` and `logs`, and
/// each pod's `network` and `ephemeral-storage` (its containers' writable layers and logs) to
/// a summary made by [`super::stats::summary`]; `rootfs` is by (pod UID, container name).
pub fn add_storage_and_network(
    summary: &mut Value,
    storage: &Storage,
    rootfs: &BTreeMap<(String, String), Usage>,
) {
    let time = storage.time.as_str();
    let node_fs = storage.node_fs.as_ref();
    if let Some(fs) = node_fs {
        summary["node"]["fs"] = fs_json(time, fs);
    }
    let default = storage
        .node_interfaces
        .first()
        .map(|i| i.name.clone())
        .unwrap_or_default();
    summary["node"]["network"] = network_json(time, &default, &storage.node_interfaces);
    let image_capacity = storage.image_fs.as_ref().and_then(|(fs, _)| fs.as_ref());
    if let Some((_, used)) = &storage.image_fs {
        // Writable layers on the images' filesystem (the runtime reports no separate one):
        // upstream then gives the same figures as `containerFs`.
        let image_fs = usage_json(time, image_capacity, *used);
        summary["node"]["runtime"] = json!({"imageFs": image_fs, "containerFs": image_fs});
    }
    let Some(pods) = summary["pods"].as_array_mut() else {
        return;
    };
    for pod in pods {
        let uid = pod["podRef"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let mut ephemeral = Usage::default();
        if let Some(containers) = pod["containers"].as_array_mut() {
            for container in containers {
                let key = (
                    uid.clone(),
                    container["name"].as_str().unwrap_or_default().to_string(),
                );
                let writable = rootfs.get(&key).copied().unwrap_or_default();
                let logs = storage.logs.get(&key).copied().unwrap_or_default();
                ephemeral = ephemeral + writable + logs;
                container["rootfs"] = usage_json(time, image_capacity.or(node_fs), writable);
                container["logs"] = usage_json(time, storage.logs_fs.as_ref().or(node_fs), logs);
            }
        }
        if let Some((default, interfaces)) = storage.pod_networks.get(&uid) {
            pod["network"] = network_json(time, default, interfaces);
        }
        pod["ephemeral-storage"] = usage_json(time, node_fs, ephemeral);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_dev_is_read_without_loopback() {
        let text = "Inter-|   Receive                            |  Transmit\n \
             face |bytes    packets errs drop fifo frame compressed multicast|bytes packets errs drop fifo colls carrier compressed\n    \
             lo: 100 1 0 0 0 0 0 0 100 1 0 0 0 0 0 0\n  \
             eth0: 2000 20 3 0 0 0 0 0 4000 40 5 0 0 0 0 0\n";
        assert_eq!(
            parse_proc_net_dev(text),
            [InterfaceSample {
                name: "eth0".into(),
                rx_bytes: 2000,
                rx_errors: 3,
                tx_bytes: 4000,
                tx_errors: 5,
            }]
        );
        let json = network_json("t", "eth0", &parse_proc_net_dev(text));
        assert_eq!(json["name"], "eth0");
        assert_eq!(json["rxBytes"], 2000);
        assert_eq!(json["interfaces"][0]["txErrors"], 5);
    }

    #[test]
    fn usage_adds_up_and_inodes_used_is_derived() {
        let a = Usage {
            bytes: 4096,
            inodes: 1,
        };
        assert_eq!(
            a + a + Usage::default(),
            Usage {
                bytes: 8192,
                inodes: 2
            }
        );
        let fs = FsSample {
            capacity_bytes: 100,
            available_bytes: 40,
            used_bytes: 50,
            inodes: 10,
            inodes_free: 7,
        };
        assert_eq!(fs_json("t", &fs)["inodesUsed"], 3);
        let used = usage_json("t", Some(&fs), a);
        assert_eq!(used["usedBytes"], 4096);
        assert_eq!(used["capacityBytes"], 100);
        assert_eq!(pod_uid_of_log_dir("ns_web_u-1"), Some("u-1"));
        assert_eq!(pod_uid_of_log_dir("nouid"), None);
    }

    #[test]
    fn pods_get_ephemeral_storage_from_their_layers_and_logs() {
        let mut summary = json!({
            "node": {"nodeName": "n"},
            "pods": [{"podRef": {"uid": "u1"}, "containers": [{"name": "a"}, {"name": "b"}]}],
        });
        let key = |c: &str| ("u1".to_string(), c.to_string());
        let usage = |bytes, inodes| Usage { bytes, inodes };
        let fs = FsSample {
            capacity_bytes: 1000,
            available_bytes: 600,
            used_bytes: 400,
            inodes: 100,
            inodes_free: 90,
        };
        let storage = Storage {
            time: "t".into(),
            node_fs: Some(fs),
            logs: BTreeMap::from([(key("a"), usage(30, 2))]),
            pod_networks: BTreeMap::from([(
                "u1".to_string(),
                (
                    "eth0".to_string(),
                    vec![InterfaceSample {
                        name: "eth0".into(),
                        rx_bytes: 7,
                        ..InterfaceSample::default()
                    }],
                ),
            )]),
            ..Storage::default()
        };
        let rootfs = BTreeMap::from([(key("a"), usage(100, 5)), (key("b"), usage(8, 1))]);
        add_storage_and_network(&mut summary, &storage, &rootfs);
        let pod = &summary["pods"][0];
        assert_eq!(pod["ephemeral-storage"]["usedBytes"], 138);
        assert_eq!(pod["ephemeral-storage"]["inodesUsed"], 8);
        assert_eq!(pod["ephemeral-storage"]["capacityBytes"], 1000);
        assert_eq!(pod["containers"][0]["rootfs"]["usedBytes"], 100);
        assert_eq!(pod["containers"][0]["logs"]["usedBytes"], 30);
        assert_eq!(pod["containers"][1]["logs"]["usedBytes"], 0);
        assert_eq!(
            pod["containers"][1]["logs"]["capacityBytes"], 1000,
            "no log fs known: the node's"
        );
        assert_eq!(pod["network"]["rxBytes"], 7);
        assert_eq!(summary["node"]["fs"]["usedBytes"], 400);
        assert_eq!(summary["node"]["fs"]["inodesUsed"], 10);
    }

    #[test]
    fn log_usage_is_counted_per_container() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("prod_web_u1/app");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("0.log"), vec![b'x'; 10_000]).unwrap();
        std::fs::write(dir.join("1.log"), b"y").unwrap();
        let usage = log_usage(root.path());
        let app = usage[&("u1".to_string(), "app".to_string())];
        assert_eq!(app.inodes, 2);
        assert!(app.bytes >= 10_001, "{app:?}");
        assert_eq!(usage.len(), 1);
    }
}
