//! The pod's managed `/etc/hosts` contents, as upstream `ensureHostsFile` writes them: for a pod
//! network, localhost lines, the pod IPs with its hostname (and FQDN), then `hostAliases`; for
//! the host network, the node's hosts file followed by the `hostAliases`.

use k8s_openapi::api::core::v1::HostAlias;

/// First line of a managed hosts file for a pod-network pod.
pub const MANAGED_HEADER: &str = "# Kubernetes-managed hosts file.\n";
/// First line of a managed hosts file for a host-network pod.
pub const MANAGED_HEADER_HOST_NETWORK: &str = "# Kubernetes-managed hosts file (host network).\n";

/// The hosts file of a pod on the pod network.
pub fn managed_hosts_content(
    pod_ips: &[String],
    hostname: &str,
    domain: &str,
    aliases: &[HostAlias],
) -> String {
    let mut out = String::from(MANAGED_HEADER);
    out.push_str("127.0.0.1\tlocalhost\n");
    out.push_str("::1\tlocalhost ip6-localhost ip6-loopback\n");
    out.push_str("fe00::0\tip6-localnet\n");
    out.push_str("fe00::0\tip6-mcastprefix\n");
    out.push_str("fe00::1\tip6-allnodes\n");
    out.push_str("fe00::2\tip6-allrouters\n");
    for ip in pod_ips {
        if domain.is_empty() {
            out.push_str(&format!("{ip}\t{hostname}\n"));
        } else {
            out.push_str(&format!("{ip}\t{hostname}.{domain}\t{hostname}\n"));
        }
    }
    out.push_str(&alias_entries(aliases));
    out
}

/// The hosts file of a host-network pod, from the node's hosts file contents.
pub fn host_network_hosts_content(node_hosts: &str, aliases: &[HostAlias]) -> String {
    let mut out = String::from(MANAGED_HEADER_HOST_NETWORK);
    out.push_str(node_hosts);
    out.push_str(&alias_entries(aliases));
    out
}

/// The `hostAliases` block (empty without aliases): one line per alias entry.
pub fn alias_entries(aliases: &[HostAlias]) -> String {
    if aliases.is_empty() {
        return String::new();
    }
    let mut out = String::from("\n# Entries added by HostAliases.\n");
    for alias in aliases {
        let names = alias.hostnames.as_deref().unwrap_or_default().join("\t");
        out.push_str(&format!("{}\t{names}\n", alias.ip));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aliases() -> Vec<HostAlias> {
        vec![
            HostAlias {
                ip: "10.9.9.9".into(),
                hostnames: Some(vec!["foo".into(), "foo.local".into()]),
            },
            HostAlias {
                ip: "10.9.9.8".into(),
                hostnames: Some(vec!["bar".into()]),
            },
        ]
    }

    #[test]
    fn pod_network_hosts_file() {
        let got = managed_hosts_content(
            &["10.1.0.5".into(), "fd00::5".into()],
            "web",
            "sub.prod.svc.cluster.local",
            &aliases(),
        );
        let want = "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n\
10.1.0.5\tweb.sub.prod.svc.cluster.local\tweb\nfd00::5\tweb.sub.prod.svc.cluster.local\tweb\n\
\n# Entries added by HostAliases.\n10.9.9.9\tfoo\tfoo.local\n10.9.9.8\tbar\n";
        assert_eq!(got, want);
        let plain = managed_hosts_content(&["10.1.0.5".into()], "web", "", &[]);
        assert!(
            plain.ends_with("fe00::2\tip6-allrouters\n10.1.0.5\tweb\n"),
            "{plain}"
        );
    }

    #[test]
    fn host_network_hosts_file() {
        let got = host_network_hosts_content("127.0.0.1 localhost\n", &aliases()[1..]);
        assert_eq!(
            got,
            "# Kubernetes-managed hosts file (host network).\n127.0.0.1 localhost\n\n# Entries added by HostAliases.\n10.9.9.8\tbar\n"
        );
    }
}
