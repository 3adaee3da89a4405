//! Stale UDP conntrack cleanup, as kube-proxy does it: UDP has no connection teardown, so a
//! conntrack entry keeps sending a client's datagrams to the endpoint it was first NATed to (or
//! keeps them un-NATed, i.e. rejected, when it was created while the Service had no endpoint)
//! until it idles out. Owns:
//!
//! - the data: a listed [`Flow`] and a [`FlowFilter`] (which flows to delete);
//! - [`stale_flows`] / [`stale_flows_full`]: the pure planner, rule-set difference → filters
//!   ([`plan`]);
//! - [`Conntrack`]: a ctnetlink client over `NETLINK_NETFILTER` (dump, delete by original
//!   tuple; IPv4 and IPv6), behind the [`ConntrackApi`] trait, with [`MemoryConntrack`] for
//!   tests of callers.

mod error;
mod fake;
mod plan;
mod socket;
mod wire;

use std::collections::BTreeSet;
use std::net::IpAddr;

pub use error::ConntrackError;
pub use fake::MemoryConntrack;
pub use plan::{stale_flows, stale_flows_full};
pub use socket::{Conntrack, ConntrackApi};

use crate::model::{IpFamily, Protocol};

/// IANA protocol numbers of the transport protocols Services use.
pub fn protocol_number(protocol: Protocol) -> u8 {
    match protocol {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        Protocol::Sctp => 132,
    }
}

/// One direction of a conntrack entry. Ports are 0 for protocols without ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowTuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
}

/// A conntrack entry as listed: the original tuple identifies it for deletion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Flow {
    /// IANA protocol number (17 = UDP).
    pub protocol: u8,
    pub original: FlowTuple,
    pub reply: FlowTuple,
    /// The conntrack zone, when not the default one.
    pub zone: Option<u16>,
}

impl Flow {
    pub fn family(&self) -> IpFamily {
        IpFamily::of(self.original.src)
    }
}

/// Which reply sources (the endpoint a flow was DNATed to) a filter selects.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ReplySource {
    /// Flows answered by this endpoint address (`--reply-src`).
    Is(IpAddr),
    /// Flows answered by anything but these serving endpoint addresses: stale endpoints, and
    /// flows created while the Service rejected (their reply source is the Service address).
    NotIn(BTreeSet<IpAddr>),
}

/// A set of flows to delete: protocol, original destination address and port (the front end),
/// and the reply source.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowFilter {
    pub family: IpFamily,
    pub protocol: Protocol,
    /// `--orig-dst`: the Service IP, or the node address of a NodePort.
    pub orig_dst: IpAddr,
    /// `--orig-port-dst`: the Service port or NodePort.
    pub orig_dst_port: u16,
    pub reply_src: ReplySource,
}

impl FlowFilter {
    /// Whether `flow` is one this filter deletes.
    pub fn matches(&self, flow: &Flow) -> bool {
        flow.protocol == protocol_number(self.protocol)
            && flow.original.dst == self.orig_dst
            && flow.original.dst_port == self.orig_dst_port
            && match &self.reply_src {
                ReplySource::Is(ip) => flow.reply.src == *ip,
                ReplySource::NotIn(serving) => !serving.contains(&flow.reply.src),
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp(dst: &str, dport: u16, reply_src: &str) -> Flow {
        let client: IpAddr = "10.1.0.2".parse().expect("ip");
        let dst: IpAddr = dst.parse().expect("ip");
        let rs: IpAddr = reply_src.parse().expect("ip");
        Flow {
            protocol: 17,
            original: FlowTuple {
                src: client,
                dst,
                src_port: 40000,
                dst_port: dport,
            },
            reply: FlowTuple {
                src: rs,
                dst: client,
                src_port: 53,
                dst_port: 40000,
            },
            zone: None,
        }
    }

    #[test]
    fn filter_matches_by_protocol_destination_and_reply_source() {
        let vip: IpAddr = "10.96.0.10".parse().expect("ip");
        let ep1: IpAddr = "10.2.0.2".parse().expect("ip");
        let is = FlowFilter {
            family: IpFamily::V4,
            protocol: Protocol::Udp,
            orig_dst: vip,
            orig_dst_port: 53,
            reply_src: ReplySource::Is(ep1),
        };
        let mut not_in = is.clone();
        not_in.reply_src = ReplySource::NotIn([ep1].into());
        let to_ep1 = udp("10.96.0.10", 53, "10.2.0.2");
        let to_ep2 = udp("10.96.0.10", 53, "10.2.0.3");
        let rejected = udp("10.96.0.10", 53, "10.96.0.10");
        let other_port = udp("10.96.0.10", 54, "10.2.0.2");
        let mut tcp = to_ep1;
        tcp.protocol = 6;
        let table = [
            (&is, to_ep1, true),
            (&is, to_ep2, false),
            (&is, other_port, false),
            (&is, tcp, false),
            (&not_in, to_ep1, false),
            (&not_in, to_ep2, true),
            (&not_in, rejected, true),
            (&not_in, other_port, false),
        ];
        for (i, (filter, flow, want)) in table.iter().enumerate() {
            assert_eq!(filter.matches(flow), *want, "row {i}");
        }
    }
}
