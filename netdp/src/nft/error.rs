//! Errors of the nf_tables client, one enum for the whole module.

use std::io;

/// What went wrong talking to nf_tables.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("opening the NETLINK_NETFILTER socket: {0}")]
    Socket(#[source] io::Error),
    #[error("sending a {bytes}-byte nf_tables batch: {source}")]
    Send {
        bytes: usize,
        #[source]
        source: io::Error,
    },
    #[error("receiving from nf_tables: {0}")]
    Receive(#[source] io::Error),
    /// The kernel refused a message; the whole batch was aborted and nothing of it applied.
    #[error("nf_tables rejected `{message}`: {source}{}{}",
        extack.as_ref().map(|m| format!(" ({m})")).unwrap_or_default(),
        if *other_failures > 0 { format!(" (and {other_failures} more failed messages)") } else { String::new() })]
    Rejected {
        /// The failing message, e.g. `add chain ip kwk services`.
        message: String,
        #[source]
        source: io::Error,
        /// The kernel's extended ack text, when it gave one.
        extack: Option<String>,
        other_failures: usize,
    },
    /// A dump request (list) failed.
    #[error("listing {what}: {source}")]
    List {
        what: String,
        #[source]
        source: io::Error,
    },
    /// The ruleset changed while it was being listed; list again.
    #[error("listing {what} was interrupted by a concurrent change")]
    DumpInterrupted { what: String },
    #[error("the kernel did not acknowledge {missing} of the batch's messages")]
    MissingAcks { missing: usize },
    #[error("malformed netlink data: {0}")]
    Malformed(&'static str),
    #[error("a nested netlink attribute of {len} bytes exceeds 65535")]
    AttributeTooLong { len: usize },
    #[error("a value of {got} bytes does not fit the {expected}-byte key or data of `{set}`")]
    ValueLength {
        set: String,
        expected: usize,
        got: usize,
    },
}

impl NftError {
    /// The errno the kernel answered with, when this is a kernel refusal.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Rejected { source, .. } | Self::List { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}
