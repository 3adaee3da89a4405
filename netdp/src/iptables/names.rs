//! Chain names as kube-proxy's iptables mode spells them: fixed chains (`KUBE-SERVICES`, ...)
//! and per-Service-port chains `KUBE-SVC-`/`KUBE-SVL-`/`KUBE-EXT-`/`KUBE-FW-`/`KUBE-SEP-` + the
//! first 16 characters of base32(sha256(port name + protocol [+ endpoint])), so operators see
//! the names they know. Also which chains are ours (for cleanup of stale ones).

use std::net::{IpAddr, SocketAddr};

use sha2::{Digest, Sha256};

use crate::model::{Protocol, ServicePortName};

pub const SERVICES: &str = "KUBE-SERVICES";
pub const EXTERNAL_SERVICES: &str = "KUBE-EXTERNAL-SERVICES";
pub const NODE_PORTS: &str = "KUBE-NODEPORTS";
pub const POSTROUTING: &str = "KUBE-POSTROUTING";
pub const MARK_MASQ: &str = "KUBE-MARK-MASQ";
pub const PROXY_FIREWALL: &str = "KUBE-PROXY-FIREWALL";
pub const FORWARD: &str = "KUBE-FORWARD";
/// Ours only (no upstream equivalent): masquerades sources outside all cluster CIDRs when
/// there is more than one CIDR (one CIDR is a single `! -s` match, as upstream).
pub const MASQ_NON_POD: &str = "KUBE-MASQ-NONPOD";

/// Prefixes of the per-Service-port chains.
pub const SVC_PREFIX: &str = "KUBE-SVC-";
pub const SVL_PREFIX: &str = "KUBE-SVL-";
pub const EXT_PREFIX: &str = "KUBE-EXT-";
pub const FW_PREFIX: &str = "KUBE-FW-";
pub const SEP_PREFIX: &str = "KUBE-SEP-";
/// Ours only: a third backend list of one Service port (never produced by the model today).
pub const SVX_PREFIX: &str = "KUBE-SVX-";

const FIXED: [&str; 8] = [
    SERVICES,
    EXTERNAL_SERVICES,
    NODE_PORTS,
    POSTROUTING,
    MARK_MASQ,
    PROXY_FIREWALL,
    FORWARD,
    MASQ_NON_POD,
];
const PREFIXES: [&str; 6] = [
    SVC_PREFIX, SVL_PREFIX, EXT_PREFIX, FW_PREFIX, SEP_PREFIX, SVX_PREFIX,
];

/// Whether this dataplane created (and may delete) a chain of this name. Kubelet's chains
/// (`KUBE-FIREWALL`, `KUBE-KUBELET-CANARY`, `KUBE-MARK-DROP`) are not ours.
pub fn is_ours(chain: &str) -> bool {
    FIXED.contains(&chain) || PREFIXES.iter().any(|p| chain.starts_with(p))
}

/// The port name as upstream's `ServicePortName.String()`: `ns/name` or `ns/name:port`.
pub fn port_name(spn: &ServicePortName) -> String {
    if spn.port.is_empty() {
        format!("{}/{}", spn.service.namespace, spn.service.name)
    } else {
        format!(
            "{}/{}:{}",
            spn.service.namespace, spn.service.name, spn.port
        )
    }
}

/// Lowercase protocol as hashed upstream.
pub fn proto_lower(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Sctp => "sctp",
    }
}

/// `host:port`, IPv6 in brackets (Go's `net.JoinHostPort`).
pub fn endpoint_string(ip: IpAddr, port: u16) -> String {
    SocketAddr::new(ip, port).to_string()
}

/// The 16-character hash suffix of a per-port chain.
pub fn port_hash(spn: &ServicePortName) -> String {
    hash16(&format!("{}{}", port_name(spn), proto_lower(spn.protocol)))
}

/// `KUBE-SEP-<hash>` of one endpoint of a Service port.
pub fn endpoint_chain(spn: &ServicePortName, ip: IpAddr, port: u16) -> String {
    let text = format!(
        "{}{}{}",
        port_name(spn),
        proto_lower(spn.protocol),
        endpoint_string(ip, port)
    );
    format!("{SEP_PREFIX}{}", hash16(&text))
}

/// First 16 characters of the standard base32 encoding of sha256(text) (= its first 10 bytes).
fn hash16(text: &str) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let digest = Sha256::digest(text.as_bytes());
    let mut out = String::with_capacity(16);
    for block in digest[..10].chunks(5) {
        let mut bits: u64 = 0;
        for byte in block {
            bits = (bits << 8) | u64::from(*byte);
        }
        for i in (0..8).rev() {
            let index = usize::try_from((bits >> (i * 5)) & 31).unwrap_or(0);
            out.push(char::from(ALPHABET[index]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ServiceName;

    fn spn(ns: &str, name: &str, port: &str) -> ServicePortName {
        ServicePortName {
            service: ServiceName::new(ns, name),
            port: port.into(),
            protocol: Protocol::Tcp,
        }
    }

    #[test]
    fn names_match_upstream_hashes() {
        // Values from upstream's iptables proxier tests (ns1/svc1:p80 tcp and its endpoint).
        assert_eq!(port_hash(&spn("ns1", "svc1", "p80")), "XPGD46QRK7WJZT7O");
        assert_eq!(
            endpoint_chain(
                &spn("ns1", "svc1", "p80"),
                "10.180.0.1".parse().unwrap(),
                80
            ),
            "KUBE-SEP-SXIVWICOYRO3J4NJ"
        );
    }

    #[test]
    fn ours_excludes_kubelet_chains() {
        assert!(is_ours("KUBE-SERVICES"));
        assert!(is_ours("KUBE-SEP-SXIVWICOYRO3J4NJ"));
        assert!(!is_ours("KUBE-FIREWALL"));
        assert!(!is_ours("KUBE-MARK-DROP"));
        assert!(!is_ours("KUBE-KUBELET-CANARY"));
    }
}
