//! host-local style IPAM decisions, pure: which address to hand out next, and which allocations
//! a GC call frees. The on-disk store that feeds them lives in [`crate::store`].

use std::collections::HashSet;
use std::net::Ipv4Addr;

use crate::config::{Attachment, IpRange};

/// One reserved address and who holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub ip: Ipv4Addr,
    pub container_id: String,
    /// `None` for files written by old host-local versions (container ID only).
    pub ifname: Option<String>,
}

impl Allocation {
    /// Whether this allocation belongs to the attachment (legacy files match by container only).
    pub fn held_by(&self, container_id: &str, ifname: &str) -> bool {
        self.container_id == container_id
            && self.ifname.as_deref().is_none_or(|name| name == ifname)
    }
}

/// The next free address after `last_reserved` (round robin, as host-local), skipping the
/// network and broadcast addresses, the gateway and everything `taken`. `None` when the range is
/// exhausted.
pub fn next_free(
    range: &IpRange,
    last_reserved: Option<Ipv4Addr>,
    taken: impl Fn(Ipv4Addr) -> bool,
) -> Option<Ipv4Addr> {
    let start = u32::from(range.start);
    let end = u32::from(range.end);
    let size = end - start + 1;
    let first = match last_reserved.map(u32::from) {
        Some(last) if (start..end).contains(&last) => last + 1,
        _ => start,
    };
    let network = range.subnet.network();
    let broadcast = range.subnet.broadcast();
    (0..size)
        .map(|offset| Ipv4Addr::from(start + (first - start + offset) % size))
        .find(|&ip| ip != range.gateway && ip != network && ip != broadcast && !taken(ip))
}

/// Allocations a GC call releases: every one not held by a listed attachment.
pub fn stale_allocations<'a>(
    allocations: &'a [Allocation],
    valid: &[Attachment],
) -> Vec<&'a Allocation> {
    let valid: HashSet<(&str, &str)> = valid
        .iter()
        .map(|a| (a.container_id.as_str(), a.ifname.as_str()))
        .collect();
    let valid_containers: HashSet<&str> = valid.iter().map(|(id, _)| *id).collect();
    allocations
        .iter()
        .filter(|alloc| match &alloc.ifname {
            Some(ifname) => !valid.contains(&(alloc.container_id.as_str(), ifname.as_str())),
            None => !valid_containers.contains(alloc.container_id.as_str()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RangeConf;

    fn range(subnet: &str, start: Option<&str>, end: Option<&str>) -> IpRange {
        IpRange::from_conf(&RangeConf {
            subnet: Some(subnet.into()),
            range_start: start.map(|s| s.parse().expect("ip")),
            range_end: end.map(|s| s.parse().expect("ip")),
            gateway: None,
        })
        .expect("range")
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("ip")
    }

    #[test]
    fn next_free_table() {
        let r24 = range("10.0.0.0/24", None, None);
        let r30 = range("10.0.0.0/30", None, None);
        let narrow = range("10.0.0.0/24", Some("10.0.0.10"), Some("10.0.0.12"));
        // (name, range, last reserved, taken, expected)
        type Case<'a> = (
            &'a str,
            &'a IpRange,
            Option<&'a str>,
            &'a [&'a str],
            Option<&'a str>,
        );
        let cases: &[Case<'_>] = &[
            (
                "empty pool skips the gateway",
                &r24,
                None,
                &[],
                Some("10.0.0.2"),
            ),
            (
                "after the last reserved",
                &r24,
                Some("10.0.0.7"),
                &[],
                Some("10.0.0.8"),
            ),
            (
                "skips taken",
                &r24,
                Some("10.0.0.7"),
                &["10.0.0.8", "10.0.0.9"],
                Some("10.0.0.10"),
            ),
            (
                "wraps at the end",
                &r24,
                Some("10.0.0.254"),
                &[],
                Some("10.0.0.2"),
            ),
            (
                "last outside the range",
                &narrow,
                Some("10.0.0.200"),
                &[],
                Some("10.0.0.10"),
            ),
            (
                "range start/end",
                &narrow,
                Some("10.0.0.11"),
                &[],
                Some("10.0.0.12"),
            ),
            (
                "wrap in a narrow range",
                &narrow,
                Some("10.0.0.12"),
                &["10.0.0.10"],
                Some("10.0.0.11"),
            ),
            (
                "exhausted",
                &narrow,
                None,
                &["10.0.0.10", "10.0.0.11", "10.0.0.12"],
                None,
            ),
            (
                "/30 has one address besides the gateway",
                &r30,
                None,
                &[],
                Some("10.0.0.2"),
            ),
            ("/30 exhausted", &r30, None, &["10.0.0.2"], None),
        ];
        for (name, range, last, taken, want) in cases {
            let taken: HashSet<Ipv4Addr> = taken.iter().map(|s| ip(s)).collect();
            let got = next_free(range, last.map(ip), |candidate| taken.contains(&candidate));
            assert_eq!(got, want.map(ip), "{name}");
        }
    }

    #[test]
    fn gc_keeps_only_listed_attachments() {
        let alloc = |ip_s: &str, id: &str, ifname: Option<&str>| Allocation {
            ip: ip(ip_s),
            container_id: id.into(),
            ifname: ifname.map(Into::into),
        };
        let allocations = vec![
            alloc("10.0.0.2", "a", Some("eth0")),
            alloc("10.0.0.3", "a", Some("eth1")),
            alloc("10.0.0.4", "b", Some("eth0")),
            alloc("10.0.0.5", "c", None),
            alloc("10.0.0.6", "d", None),
        ];
        let valid = vec![
            Attachment {
                container_id: "a".into(),
                ifname: "eth0".into(),
            },
            Attachment {
                container_id: "c".into(),
                ifname: "eth0".into(),
            },
        ];
        let stale: Vec<Ipv4Addr> = stale_allocations(&allocations, &valid)
            .iter()
            .map(|a| a.ip)
            .collect();
        assert_eq!(stale, [ip("10.0.0.3"), ip("10.0.0.4"), ip("10.0.0.6")]);
        assert!(stale_allocations(&allocations, &[]).len() == allocations.len());
    }

    #[test]
    fn legacy_allocations_match_any_ifname() {
        let legacy = Allocation {
            ip: ip("10.0.0.2"),
            container_id: "a".into(),
            ifname: None,
        };
        assert!(legacy.held_by("a", "eth7"));
        let modern = Allocation {
            ifname: Some("eth0".into()),
            ..legacy
        };
        assert!(modern.held_by("a", "eth0"));
        assert!(!modern.held_by("a", "eth1"));
        assert!(!modern.held_by("b", "eth0"));
    }
}
