//! [`MemoryConntrack`]: an in-memory conntrack table for tests of callers.

use std::sync::Mutex;

use super::Flow;
use super::error::ConntrackError;
use super::socket::ConntrackApi;
use crate::model::IpFamily;

/// A conntrack table in memory: seed it with flows, run the cleanup, look at what is left.
#[derive(Debug, Default)]
pub struct MemoryConntrack {
    flows: Mutex<Vec<Flow>>,
}

impl MemoryConntrack {
    pub fn new(flows: Vec<Flow>) -> Self {
        Self {
            flows: Mutex::new(flows),
        }
    }

    /// The flows still in the table.
    pub fn flows(&self) -> Vec<Flow> {
        self.flows.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl ConntrackApi for MemoryConntrack {
    fn list(&self, family: IpFamily) -> Result<Vec<Flow>, ConntrackError> {
        Ok(self
            .flows()
            .into_iter()
            .filter(|f| f.family() == family)
            .collect())
    }

    fn delete_flows(&self, flows: &[Flow]) -> Result<usize, ConntrackError> {
        let mut table = self.flows.lock().unwrap_or_else(|p| p.into_inner());
        let before = table.len();
        table.retain(|f| !flows.contains(f));
        Ok(before - table.len())
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::conntrack::{FlowFilter, FlowTuple, ReplySource};
    use crate::model::Protocol;

    fn flow(dst: &str, reply_src: &str) -> Flow {
        let client: IpAddr = "10.1.0.2".parse().expect("ip");
        Flow {
            protocol: 17,
            original: FlowTuple {
                src: client,
                dst: dst.parse().expect("ip"),
                src_port: 40000,
                dst_port: 53,
            },
            reply: FlowTuple {
                src: reply_src.parse().expect("ip"),
                dst: client,
                src_port: 53,
                dst_port: 40000,
            },
            zone: None,
        }
    }

    #[test]
    fn delete_by_filter_removes_only_matches_and_counts_them() {
        let stale = flow("10.96.0.10", "10.2.0.2");
        let fresh = flow("10.96.0.10", "10.2.0.3");
        let other = flow("10.96.0.11", "10.2.0.2");
        let v6 = flow("fd00::10", "fd00::2");
        let ct = MemoryConntrack::new(vec![stale, fresh, other, v6]);
        let filter = FlowFilter {
            family: IpFamily::V4,
            protocol: Protocol::Udp,
            orig_dst: "10.96.0.10".parse().expect("ip"),
            orig_dst_port: 53,
            reply_src: ReplySource::Is("10.2.0.2".parse().expect("ip")),
        };
        assert_eq!(ct.delete(&[filter.clone(), filter]).expect("delete"), 1);
        assert_eq!(ct.flows(), vec![fresh, other, v6]);
    }

    #[test]
    fn many_front_ends_take_the_per_protocol_path_with_the_same_result() {
        let mut flows = Vec::new();
        let mut filters = Vec::new();
        for i in 0..40u8 {
            let vip = format!("10.96.1.{i}");
            flows.push(flow(&vip, "10.2.0.2"));
            flows.push(flow(&vip, "10.2.0.3"));
            filters.push(FlowFilter {
                family: IpFamily::V4,
                protocol: Protocol::Udp,
                orig_dst: vip.parse().expect("ip"),
                orig_dst_port: 53,
                reply_src: ReplySource::NotIn(["10.2.0.3".parse().expect("ip")].into()),
            });
        }
        let ct = MemoryConntrack::new(flows);
        assert_eq!(ct.delete(&filters[..10]).expect("few"), 10);
        assert_eq!(ct.delete(&filters).expect("many"), 30);
        assert!(
            ct.flows()
                .iter()
                .all(|f| f.reply.src.to_string() == "10.2.0.3")
        );
        assert_eq!(ct.flows().len(), 40);
    }
}
