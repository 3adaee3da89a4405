//! Errors of the IPVS client.

use std::io;

use crate::netlink_wire::Malformed;

/// What went wrong talking to IPVS.
#[derive(Debug, thiserror::Error)]
pub enum IpvsError {
    #[error("opening the NETLINK_GENERIC socket: {0}")]
    Socket(#[source] io::Error),
    /// The kernel has no IPVS (module `ip_vs` not loaded or not built).
    #[error("the kernel has no generic netlink family {0:?} (is the ip_vs module loaded?)")]
    FamilyNotFound(String),
    #[error("sending to generic netlink: {0}")]
    Send(#[source] io::Error),
    #[error("receiving from generic netlink: {0}")]
    Receive(#[source] io::Error),
    /// The kernel refused a request.
    #[error("IPVS refused `{what}`: {source}{}", extack.as_ref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Rejected {
        what: String,
        #[source]
        source: io::Error,
        extack: Option<String>,
    },
    #[error(transparent)]
    Malformed(#[from] Malformed),
}
