//! The IPVS proxy mode's kernel interface: the IPVS generic-netlink family
//! (`linux/ip_vs.h`; family id resolved by name through `nlctrl`), and the pure planner that
//! turns a [`crate::model::RuleSet`] into virtual services and destinations and diffs them
//! against what the kernel lists. Owns:
//!
//! - the data: [`VirtualService`] (address, protocol, port, scheduler, persistence) and
//!   [`Destination`] (real server, weight, masquerade forwarding);
//! - [`plan`]: [`desired_services`] and [`plan_changes`] → [`IpvsAction`]s, table-tested;
//! - [`graceful`]: graceful termination, a removed TCP real server drains at weight 0 until
//!   its connections end ([`graceful::drain_removals`], [`graceful::plan_drained`]);
//! - `wire`: the byte encodings, tested byte for byte (this kernel has no `ip_vs`);
//! - [`IpvsSocket`]: the executor over `NETLINK_GENERIC`, behind [`IpvsApi`]; [`MemoryIpvs`]
//!   is an in-memory [`IpvsApi`] with the kernel's refusals;
//! - the mode itself: [`IpvsDataplane`] ([`mod@dataplane`]), with the `kube-ipvs0` dummy
//!   interface ([`addresses`]), the `ip kwk-ipvs` nf_tables table ([`filter`]) and the
//!   sysctls upstream sets (`sysctls`).

pub mod addresses;
pub mod dataplane;
#[cfg(test)]
mod dataplane_graceful_tests;
#[cfg(test)]
mod dataplane_tests;
mod error;
mod fake;
pub mod filter;
pub mod graceful;
pub mod plan;
mod socket;
mod sysctls;
mod wire;

use std::net::IpAddr;

pub use addresses::{
    DUMMY_INTERFACE, MemoryServiceAddresses, RtnlServiceAddresses, ServiceAddressApi,
};
pub use dataplane::{IpvsDataplane, IpvsDataplaneOptions, IpvsModeError};
pub use error::IpvsError;
pub use fake::MemoryIpvs;
pub use graceful::{Draining, RealServer};
pub use plan::{
    DesiredService, IpvsAction, IpvsOptions, desired_service, desired_services, plan_changes,
};
pub use socket::{IpvsApi, IpvsSocket, resolve_family};

use crate::model::{IpFamily, Protocol};

/// `IP_VS_SVC_F_PERSISTENT`: session affinity (`sessionAffinity: ClientIP`).
pub const SVC_F_PERSISTENT: u32 = 0x1;
/// `IP_VS_SVC_F_HASHED`: set by the kernel on every listed service; ignored when comparing.
pub const SVC_F_HASHED: u32 = 0x2;
/// `IP_VS_SVC_F_SCHED1`: for `sh`, fall back to another destination when the chosen one is
/// unavailable.
pub const SVC_F_SCHED_SH_FALLBACK: u32 = 0x8;
/// `IP_VS_SVC_F_SCHED2`: for `sh`, hash the source port too.
pub const SVC_F_SCHED_SH_PORT: u32 = 0x10;

/// An IPVS scheduler kube-proxy's `ipvs.scheduler` may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scheduler {
    RoundRobin,
    LeastConnection,
    DestinationHashing,
    SourceHashing,
    ShortestExpectedDelay,
    NeverQueue,
}

impl Scheduler {
    /// The kernel module suffix (`ip_vs_<name>`), as IPVS_SVC_ATTR_SCHED_NAME carries it.
    pub fn name(self) -> &'static str {
        match self {
            Scheduler::RoundRobin => "rr",
            Scheduler::LeastConnection => "lc",
            Scheduler::DestinationHashing => "dh",
            Scheduler::SourceHashing => "sh",
            Scheduler::ShortestExpectedDelay => "sed",
            Scheduler::NeverQueue => "nq",
        }
    }

    /// Parses a scheduler name; empty means `rr` as upstream's default.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "" | "rr" => Scheduler::RoundRobin,
            "lc" => Scheduler::LeastConnection,
            "dh" => Scheduler::DestinationHashing,
            "sh" => Scheduler::SourceHashing,
            "sed" => Scheduler::ShortestExpectedDelay,
            "nq" => Scheduler::NeverQueue,
            _ => return None,
        })
    }
}

/// What identifies a virtual service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    pub addr: IpAddr,
    pub protocol: Protocol,
    pub port: u16,
}

impl ServiceKey {
    pub fn family(&self) -> IpFamily {
        IpFamily::of(self.addr)
    }
}

/// A virtual service as the kernel keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualService {
    pub key: ServiceKey,
    /// The scheduler name (`rr`, ...); a string so a listed foreign one still compares.
    pub scheduler: String,
    /// `IP_VS_SVC_F_*` bits (without `HASHED`).
    pub flags: u32,
    /// Persistence timeout in seconds (0 without affinity).
    pub timeout: u32,
    /// Persistence netmask: all ones for IPv4, the prefix length 128 for IPv6.
    pub netmask: u32,
}

impl VirtualService {
    /// A masquerading virtual service with `scheduler`, persistent for `affinity` seconds.
    pub fn new(key: ServiceKey, scheduler: Scheduler, flags: u32, affinity: Option<u32>) -> Self {
        let persistent = if affinity.is_some() {
            SVC_F_PERSISTENT
        } else {
            0
        };
        Self {
            key,
            scheduler: scheduler.name().to_owned(),
            flags: flags | persistent,
            timeout: affinity.unwrap_or(0),
            netmask: match key.family() {
                IpFamily::V4 => u32::MAX,
                IpFamily::V6 => 128,
            },
        }
    }
}

/// How IPVS forwards to a destination (`IP_VS_CONN_F_*` forwarding methods).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Forward {
    /// NAT (`IP_VS_CONN_F_MASQ` = 0): what kube-proxy uses.
    Masquerade,
    /// Any other method, as listed (kept to compare and replace).
    Other(u32),
}

impl Forward {
    pub fn code(self) -> u32 {
        match self {
            Forward::Masquerade => 0,
            Forward::Other(c) => c,
        }
    }

    pub fn from_code(code: u32) -> Self {
        match code & 0x7 {
            0 => Forward::Masquerade,
            c => Forward::Other(c),
        }
    }
}

/// A real server behind a virtual service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Destination {
    pub addr: IpAddr,
    pub port: u16,
    pub weight: u32,
    pub forward: Forward,
}

impl Destination {
    pub fn key(&self) -> (IpAddr, u16) {
        (self.addr, self.port)
    }
}

/// A destination's connection counters, as a `GET_DEST` dump reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Connections {
    /// `IPVS_DEST_ATTR_ACTIVE_CONNS`: connections in the TCP ESTABLISHED state.
    pub active: u32,
    /// `IPVS_DEST_ATTR_INACT_CONNS`: every other connection entry (closing, TIME_WAIT, UDP).
    pub inactive: u32,
    /// `IPVS_DEST_ATTR_PERSIST_CONNS`: persistence templates (session affinity).
    pub persistent: u32,
}

impl Connections {
    /// No connection entry left (templates aside, as upstream): the destination may go.
    pub fn is_idle(&self) -> bool {
        self.active == 0 && self.inactive == 0
    }
}
