//! Errors of the conntrack client.

use std::io;

use crate::netlink_wire::Malformed;

/// What went wrong talking to ctnetlink.
#[derive(Debug, thiserror::Error)]
pub enum ConntrackError {
    #[error("opening the NETLINK_NETFILTER socket for conntrack: {0}")]
    Socket(#[source] io::Error),
    #[error("sending to ctnetlink: {0}")]
    Send(#[source] io::Error),
    #[error("receiving from ctnetlink: {0}")]
    Receive(#[source] io::Error),
    #[error("listing conntrack entries: {0}")]
    List(#[source] io::Error),
    /// The kernel refused deleting an entry for a reason other than "already gone".
    #[error("deleting a conntrack entry: {source}{}", extack.as_ref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Delete {
        #[source]
        source: io::Error,
        extack: Option<String>,
    },
    #[error(transparent)]
    Malformed(#[from] Malformed),
}
