//! What the node reports about the machine it runs on, read from the host: CPUs and memory
//! (through `node::setup`), the root dir's filesystem size, huge pages, the kernel, the OS
//! image, the machine, boot and system IDs, and the node's address. Every read falls back to an
//! empty or zero value rather than failing: a missing file must not stop the heartbeat.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::Path;

use crate::config::MachineResources;

/// The machine facts that go into the Node object.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MachineFacts {
    /// CPUs and memory.
    pub resources: MachineResources,
    /// Size of the filesystem holding the root dir, in bytes (`None` when unknown).
    pub ephemeral_storage_bytes: Option<u64>,
    /// Huge pages by page size as the API names it (`2Mi`, `1Gi`) → bytes reserved.
    pub hugepages: BTreeMap<String, u64>,
    /// `kernelVersion`: `uname -r`.
    pub kernel_version: String,
    /// `osImage`: `PRETTY_NAME` of /etc/os-release.
    pub os_image: String,
    pub machine_id: String,
    pub system_uuid: String,
    pub boot_id: String,
    /// The node's IP: `--node-ip`, else the address the default route leaves from.
    pub internal_ip: Option<IpAddr>,
}

/// Reads the machine facts; `root_dir` is kwk-node's state directory.
pub fn read(root_dir: &Path, node_ip: Option<IpAddr>) -> MachineFacts {
    MachineFacts {
        resources: crate::node::machine_resources(),
        ephemeral_storage_bytes: filesystem_bytes(root_dir),
        hugepages: hugepages(Path::new("/sys/kernel/mm/hugepages")),
        kernel_version: read_trimmed("/proc/sys/kernel/osrelease"),
        os_image: os_image(&std::fs::read_to_string("/etc/os-release").unwrap_or_default()),
        machine_id: read_trimmed("/etc/machine-id"),
        system_uuid: read_trimmed("/sys/class/dmi/id/product_uuid"),
        boot_id: read_trimmed("/proc/sys/kernel/random/boot_id"),
        internal_ip: node_ip.or_else(default_route_address),
    }
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// `PRETTY_NAME` of an os-release file, unquoted; `Linux` when there is none (as cAdvisor).
pub(crate) fn os_image(os_release: &str) -> String {
    os_release
        .lines()
        .find_map(|line| line.strip_prefix("PRETTY_NAME="))
        .map(|value| {
            value
                .trim()
                .trim_matches(|c| c == '"' || c == '\'')
                .to_string()
        })
        .filter(|value| !value.is_empty())
        .unwrap_or_else(|| "Linux".to_string())
}

/// The total size of the filesystem holding `dir`.
fn filesystem_bytes(dir: &Path) -> Option<u64> {
    let stat = nix::sys::statvfs::statvfs(dir).ok()?;
    stat.blocks().checked_mul(stat.fragment_size())
}

/// Huge pages per size from `/sys/kernel/mm/hugepages/hugepages-<n>kB/nr_hugepages`.
fn hugepages(dir: &Path) -> BTreeMap<String, u64> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let page_bytes = hugepage_size_bytes(&name)?;
            let count: u64 = std::fs::read_to_string(entry.path().join("nr_hugepages"))
                .ok()?
                .trim()
                .parse()
                .ok()?;
            Some((
                super::plan::binary_quantity(page_bytes),
                count.saturating_mul(page_bytes),
            ))
        })
        .collect()
}

/// The page size of a `hugepages-2048kB` directory, in bytes.
pub(crate) fn hugepage_size_bytes(dir_name: &str) -> Option<u64> {
    let kib: u64 = dir_name
        .strip_prefix("hugepages-")?
        .strip_suffix("kB")?
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

/// The source address of the route to the internet (the default route), IPv4 first: the
/// kernel picks it when a UDP socket connects; no packet is sent.
pub fn default_route_address() -> Option<IpAddr> {
    let probe = |bind: IpAddr, to: IpAddr| -> Option<IpAddr> {
        let socket = UdpSocket::bind(SocketAddr::new(bind, 0)).ok()?;
        socket.connect(SocketAddr::new(to, 53)).ok()?;
        Some(socket.local_addr().ok()?.ip()).filter(|ip| !ip.is_unspecified())
    };
    probe(
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V4(Ipv4Addr::new(8, 8, 8, 8)),
    )
    .or_else(|| {
        probe(
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            IpAddr::V6(Ipv6Addr::new(0x2001, 0x4860, 0x4860, 0, 0, 0, 0, 0x8888)),
        )
    })
}

/// The API's `operatingSystem` and `architecture` (Go's names).
pub fn os_and_arch() -> (&'static str, &'static str) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    };
    (std::env::consts::OS, arch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_image_is_the_pretty_name() {
        let cases = [
            (
                "NAME=\"Debian\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n",
                "Debian GNU/Linux 12 (bookworm)",
            ),
            ("PRETTY_NAME=Alpine\n", "Alpine"),
            ("NAME=x\n", "Linux"),
            ("", "Linux"),
        ];
        for (file, expected) in cases {
            assert_eq!(os_image(file), expected, "{file}");
        }
    }

    #[test]
    fn hugepage_directories_name_their_page_size() {
        assert_eq!(hugepage_size_bytes("hugepages-2048kB"), Some(2 << 20));
        assert_eq!(hugepage_size_bytes("hugepages-1048576kB"), Some(1 << 30));
        assert_eq!(hugepage_size_bytes("nr_hugepages"), None);
    }

    #[test]
    fn reads_this_machine() {
        let facts = read(Path::new("/"), None);
        assert!(facts.resources.cpu_millis >= 1000);
        assert!(facts.ephemeral_storage_bytes.unwrap_or(0) > 0);
        assert!(!facts.kernel_version.is_empty());
        let pinned: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(read(Path::new("/"), Some(pinned)).internal_ip, Some(pinned));
    }
}
