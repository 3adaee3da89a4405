//! The sysctls the IPVS mode sets, as upstream's IPVS mode (kube-proxy 1.33) does when it
//! starts, in this order:
//!
//! - `net/ipv4/vs/conntrack=1`: IPVS keeps conntrack entries, so nf_tables NAT and masquerade
//!   apply to its connections;
//! - `net/ipv4/vs/conn_reuse_mode=0` only on kernels from 4.1 (where it exists) to before 5.9
//!   (where reusing a connection's port no longer stalls, kubernetes#93297); left as it is
//!   elsewhere, and when the kernel's release cannot be read;
//! - `net/ipv4/vs/expire_nodest_conn=1`: a packet for a connection whose real server is gone
//!   drops the entry (UDP and SCTP real servers are deleted at once, see [`super::graceful`]);
//! - `net/ipv4/vs/expire_quiescent_template=1`: persistence templates of a weight-0 (draining)
//!   real server expire, so session affinity does not keep sending new connections there;
//! - `net/ipv4/ip_forward=1`;
//! - with `ipvs.strictARP`: `net/ipv4/conf/all/arp_ignore=1` and `arp_announce=2`, so the node
//!   does not answer ARP for the Service addresses on `kube-ipvs0`.
//!
//! The files are opened when the dataplane is built ([`crate::sysctl::SysctlFile`]), so they
//! stay the namespace's it was built in; they are written on every full sync.

use std::io;
use std::path::Path;

use super::dataplane::IpvsModeError;
use crate::sysctl::SysctlFile;

/// One sysctl and the value the mode wants.
#[derive(Debug)]
struct Wanted {
    file: SysctlFile,
    value: &'static str,
    /// Under `net/ipv4/vs/`: missing means the `ip_vs` module is not loaded.
    from_ip_vs: bool,
}

/// The IPVS mode's sysctls, opened.
#[derive(Debug)]
pub(crate) struct IpvsSysctls(Vec<Wanted>);

/// Whether `net/ipv4/vs/conn_reuse_mode` is set to 0 on kernel `release` (`6.1.0-18-amd64`):
/// from 4.1 to before 5.9, as upstream; `None` when the release does not parse.
pub(crate) fn sets_conn_reuse_mode(release: &str) -> Option<bool> {
    let mut parts = release.trim().split(['.', '-']);
    let major: u32 = parts.next()?.parse().ok()?;
    let minor: u32 = parts.next()?.parse().ok()?;
    Some((major, minor) >= (4, 1) && (major, minor) < (5, 9))
}

impl IpvsSysctls {
    /// Opens the sysctls under `root` (`/proc/sys`) in the calling thread's namespace; reads
    /// `kernel/osrelease` there to decide on `conn_reuse_mode`.
    pub(crate) fn open(root: &Path, strict_arp: bool) -> Self {
        let release = std::fs::read_to_string(root.join("kernel/osrelease"));
        let conn_reuse = match &release {
            Ok(r) => sets_conn_reuse_mode(r).unwrap_or_else(|| {
                tracing::warn!(release = r.trim(), "ipvs: unknown kernel release format, leaving net.ipv4.vs.conn_reuse_mode as it is");
                false
            }),
            Err(error) => {
                tracing::warn!(%error, "ipvs: no kernel release, leaving net.ipv4.vs.conn_reuse_mode as it is");
                false
            }
        };
        let mut wanted = vec![("net/ipv4/vs/conntrack", "1", true)];
        if conn_reuse {
            wanted.push(("net/ipv4/vs/conn_reuse_mode", "0", true));
        }
        wanted.extend([
            ("net/ipv4/vs/expire_nodest_conn", "1", true),
            ("net/ipv4/vs/expire_quiescent_template", "1", true),
            ("net/ipv4/ip_forward", "1", false),
        ]);
        if strict_arp {
            wanted.extend([
                ("net/ipv4/conf/all/arp_ignore", "1", false),
                ("net/ipv4/conf/all/arp_announce", "2", false),
            ]);
        }
        Self(
            wanted
                .into_iter()
                .map(|(name, value, from_ip_vs)| Wanted {
                    file: SysctlFile::open(root.join(name)),
                    value,
                    from_ip_vs,
                })
                .collect(),
        )
    }

    /// Writes each value that differs; the first failure stops, named.
    pub(crate) fn ensure(&self) -> Result<(), IpvsModeError> {
        for w in &self.0 {
            w.file.ensure(w.value).map_err(|source| {
                let path = w.file.path().to_path_buf();
                if w.from_ip_vs && source.kind() == io::ErrorKind::NotFound {
                    IpvsModeError::SysctlMissing { path, source }
                } else {
                    IpvsModeError::Sysctl { path, source }
                }
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conn_reuse_mode_only_on_kernels_from_4_1_to_before_5_9() {
        let cases = [
            ("3.10.0-1160.el7.x86_64", Some(false)),
            ("4.0.9", Some(false)),
            ("4.1.0", Some(true)),
            ("4.19.0-26-amd64", Some(true)),
            ("5.4.0-150-generic\n", Some(true)),
            ("5.8.18", Some(true)),
            ("5.9.0", Some(false)),
            ("6.1.0-18-amd64", Some(false)),
            ("6.12", Some(false)),
            ("garbage", None),
            ("", None),
        ];
        for (release, want) in cases {
            assert_eq!(sets_conn_reuse_mode(release), want, "{release:?}");
        }
    }
}
