//! The plugin's error type and its mapping to CNI error codes (spec "Error" section).

use serde::Serialize;

/// Every way a CNI call fails; [`CniError::code`] is the code put in the error JSON.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("incompatible CNI version {0}")]
    IncompatibleVersion(String),
    #[error("container unknown or does not exist: {0}")]
    UnknownContainer(String),
    #[error("invalid environment: {0}")]
    InvalidEnv(String),
    #[error("failed to decode: {0}")]
    Decode(String),
    #[error("invalid network configuration: {0}")]
    InvalidConfig(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("netlink: {what}: {source}")]
    Netlink {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no IP addresses available in range {0}")]
    NoAddresses(String),
    #[error("{0}")]
    HostPortTaken(String),
    #[error("nftables: {what}: {source}")]
    Nft {
        what: String,
        #[source]
        source: kwk_netdp::nft::NftError,
    },
    #[error("CHECK failed: {0}")]
    CheckFailed(String),
    #[error("plugin not available: {0}")]
    NotAvailable(String),
}

/// Plugin-specific codes (100+ is ours per the spec).
pub const CODE_NO_ADDRESSES: u32 = 100;
pub const CODE_CHECK_FAILED: u32 = 101;
pub const CODE_NETLINK: u32 = 102;
pub const CODE_HOSTPORT_TAKEN: u32 = 103;

impl CniError {
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }

    pub fn nft(what: impl Into<String>, source: kwk_netdp::nft::NftError) -> Self {
        Self::Nft {
            what: what.into(),
            source,
        }
    }

    pub fn netlink(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Netlink {
            what: what.into(),
            source,
        }
    }

    /// The CNI error code: 1-7, 11 and 50 are the spec's well-known codes.
    pub fn code(&self) -> u32 {
        match self {
            Self::IncompatibleVersion(_) => 1,
            Self::UnknownContainer(_) => 3,
            Self::InvalidEnv(_) => 4,
            Self::Io { .. } => 5,
            Self::Decode(_) => 6,
            Self::InvalidConfig(_) => 7,
            Self::NotAvailable(_) => 50,
            Self::NoAddresses(_) => CODE_NO_ADDRESSES,
            Self::CheckFailed(_) => CODE_CHECK_FAILED,
            Self::Netlink { .. } | Self::Nft { .. } => CODE_NETLINK,
            Self::HostPortTaken(_) => CODE_HOSTPORT_TAKEN,
        }
    }

    /// The error JSON printed on stdout.
    pub fn to_reply(&self, cni_version: &str) -> ErrorReply {
        let details = match self {
            Self::Io { source, .. } | Self::Netlink { source, .. } => source.to_string(),
            Self::Nft { source, .. } => source.to_string(),
            _ => String::new(),
        };
        ErrorReply {
            cni_version: cni_version.to_owned(),
            code: self.code(),
            msg: self.to_string(),
            details,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorReply {
    pub cni_version: String,
    pub code: u32,
    pub msg: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub details: String,
}
