//! The mode-independent rule model of kube-proxy's job: inputs ([`input`]), endpoint
//! categorisation as upstream's `CategorizeEndpoints` ([`categorize`]), the pure builder
//! ([`build`]: full, or incremental per Service), the output [`RuleSet`] and its [`diff`]
//! ([`rules`]), and a synthetic input generator for benchmarks ([`mod@synthetic`]). Nothing
//! here does I/O.

pub mod build;
pub mod categorize;
pub mod cidr;
pub mod input;
pub mod rules;
pub mod synthetic;

#[cfg(test)]
mod incremental_tests;

use std::fmt;
use std::net::IpAddr;

pub use build::{Touched, build_rules, update_service};
pub use categorize::{Categorized, EndpointInfo, categorize_endpoints};
pub use cidr::{Cidr, CidrParseError};
pub use input::{
    InputProblem, NodeState, ProxyInput, ProxyOptions, ServiceEndpoints, ServiceInfo,
    ServicePortInfo, TrafficPolicy,
};
pub use rules::{
    Backend, FrontEnd, FrontEndChange, FrontEndKey, FrontEndKind, HealthCheck, Masquerade,
    RuleDiff, RuleSet, Target, diff,
};
pub use synthetic::synthetic;

/// An address family. Front ends and backends of different families never mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IpFamily {
    V4,
    V6,
}

impl IpFamily {
    /// The family of an address.
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => IpFamily::V4,
            IpAddr::V6(_) => IpFamily::V6,
        }
    }

    /// The EndpointSlice `addressType` of this family.
    pub fn address_type(self) -> &'static str {
        match self {
            IpFamily::V4 => "IPv4",
            IpFamily::V6 => "IPv6",
        }
    }
}

/// A Service port protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// Parses the API's protocol field; absent means TCP as in the API defaults. `None` for
    /// anything else.
    pub fn from_api(value: Option<&str>) -> Option<Self> {
        match value {
            None | Some("TCP") => Some(Protocol::Tcp),
            Some("UDP") => Some(Protocol::Udp),
            Some("SCTP") => Some(Protocol::Sctp),
            Some(_) => None,
        }
    }

    /// The API spelling (`TCP`, `UDP`, `SCTP`).
    pub fn as_api(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_api())
    }
}

/// A Service by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceName {
    pub namespace: String,
    pub name: String,
}

impl ServiceName {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One port of a Service, as upstream's `ServicePortName`: the Service, the port's name (empty
/// for a single unnamed port) and its protocol.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServicePortName {
    pub service: ServiceName,
    pub port: String,
    pub protocol: Protocol,
}

impl fmt::Display for ServicePortName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.port.is_empty() {
            write!(f, "{}/{}", self.service, self.protocol)
        } else {
            write!(f, "{}:{}/{}", self.service, self.port, self.protocol)
        }
    }
}
