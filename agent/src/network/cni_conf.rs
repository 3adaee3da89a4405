//! The CNI network configuration kwk-node writes for the `kwk-cni` plugin
//! (`<dir>/10-kwk.conflist`) once the node has a podCIDR, and rewrites when it changes: the
//! runtime's CNI plugin picks it up for new pod sandboxes. Written atomically (temporary file and
//! rename), only when the content differs.

use std::path::{Path, PathBuf};

use kwk_netdp::model::{Cidr, IpFamily};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The file name: sorts before most other lists, so the runtime uses it.
pub const FILE_NAME: &str = "10-kwk.conflist";
/// The network's name (the runtime's CNI result cache is keyed by it).
pub const NETWORK: &str = "kwk";

/// The conflist for `pod_cidr` (the first IPv4 CIDR of a comma-separated list; kwk-cni is
/// IPv4 only), masquerading traffic leaving `cluster_cidrs`' IPv4 CIDR, with the plugin's
/// allocations in `data_dir` (`ipam.dataDir`; `None`: the plugin's default,
/// [`kwk_cni::config::DEFAULT_DATA_DIR`]). `None`: no IPv4 podCIDR.
pub fn render(pod_cidr: &str, cluster_cidrs: &[Cidr], data_dir: Option<&Path>) -> Option<String> {
    let cidr = pod_cidr
        .split(',')
        .map(str::trim)
        .find(|c| c.parse::<Cidr>().is_ok_and(|c| c.family() == IpFamily::V4))?;
    let cluster = cluster_cidrs
        .iter()
        .find(|c| c.family() == IpFamily::V4)
        .map(ToString::to_string);
    let mut value =
        kwk_cni::config::node_conflist_in_cluster(NETWORK, cidr, cluster.as_deref(), None).ok()?;
    if let Some(dir) = data_dir {
        value["plugins"][0]["ipam"]["dataDir"] = dir.display().to_string().into();
    }
    serde_json::to_string_pretty(&value).ok().map(|s| s + "\n")
}

/// Writes `text` to `dir/FILE_NAME` unless it is already there; `true` when written.
pub fn write_if_changed(dir: &Path, text: &str) -> std::io::Result<bool> {
    let path = dir.join(FILE_NAME);
    if std::fs::read_to_string(&path).is_ok_and(|current| current == text) {
        return Ok(false);
    }
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{FILE_NAME}.tmp"));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, &path)?;
    Ok(true)
}

/// Follows the podCIDR until `cancel`, keeping the conflist in `dir` current (allocations in
/// `data_dir`, see [`render`]). Until the node has a podCIDR there is no conflist, and the
/// runtime reports its network not ready.
pub async fn run(
    dir: PathBuf,
    data_dir: Option<PathBuf>,
    mut pod_cidr: watch::Receiver<Option<String>>,
    cluster_cidrs: Vec<Cidr>,
    cancel: CancellationToken,
) {
    loop {
        let current = pod_cidr.borrow_and_update().clone();
        if let Some(cidr) = current {
            match render(&cidr, &cluster_cidrs, data_dir.as_deref()) {
                Some(text) => match write_if_changed(&dir, &text) {
                    Ok(true) => {
                        tracing::info!(pod_cidr = %cidr, dir = %dir.display(), "CNI configuration written")
                    }
                    Ok(false) => {}
                    Err(err) => {
                        tracing::warn!(%err, dir = %dir.display(), "writing the CNI configuration")
                    }
                },
                None => tracing::warn!(pod_cidr = %cidr, "no IPv4 podCIDR for kwk-cni"),
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            changed = pod_cidr.changed() => if changed.is_err() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_ipv4_pod_cidr_with_masquerade_outside_the_cluster() {
        let cluster: Vec<Cidr> = vec![
            "fd00:244::/56".parse().unwrap(),
            "10.244.0.0/16".parse().unwrap(),
        ];
        let text = render("fd00:244:1::/64,10.244.1.0/24", &cluster, None).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        let plugin = &json["plugins"][0];
        assert_eq!(json["name"], NETWORK);
        assert_eq!(plugin["type"], "kwk-cni");
        assert_eq!(plugin["ipam"]["subnet"], "10.244.1.0/24");
        assert_eq!(plugin["clusterCIDR"], "10.244.0.0/16");
        assert_eq!(plugin["ipMasq"], true);
        assert_eq!(plugin["capabilities"]["portMappings"], true);
        assert!(plugin["ipam"].get("dataDir").is_none());
        assert_eq!(render("fd00:244:1::/64", &cluster, None), None);
        let text = render("10.244.1.0/24", &cluster, Some(Path::new("/run/x/ipam"))).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["plugins"][0]["ipam"]["dataDir"], "/run/x/ipam");
    }

    #[test]
    fn writes_only_on_change() {
        let dir = tempfile::tempdir().unwrap();
        let text = render("10.244.1.0/24", &[], None).unwrap();
        assert!(write_if_changed(dir.path(), &text).unwrap());
        assert!(!write_if_changed(dir.path(), &text).unwrap());
        let other = render("10.244.2.0/24", &[], None).unwrap();
        assert!(write_if_changed(dir.path(), &other).unwrap());
        assert_eq!(
            std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap(),
            other
        );
    }
}
