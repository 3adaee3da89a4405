//! Why a kubelet configuration does not load: every error names the file, and a bad value also
//! names the field path (`kubeReserved.memory`, `clusterDNS[1]`) and the reason.

use std::path::PathBuf;

use crate::config::duration::DurationError;
use crate::quantity::QuantityError;

/// A configuration that cannot be used. `Display` reads like
/// `/etc/kwk/kubelet.yaml: field maxPods: must be greater than 0 (got -3)`; I/O and syntax
/// errors keep their cause as the error source.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: config file does not exist", path.display())]
    Missing { path: PathBuf },
    #[error("{}: cannot read", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: cannot list the drop-in directory", path.display())]
    ReadDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: file is larger than the {limit}-byte limit", path.display())]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("{}: file is empty", path.display())]
    Empty { path: PathBuf },
    #[error("{}: invalid YAML", path.display())]
    Yaml {
        path: PathBuf,
        #[source]
        source: Box<serde_saphyr::Error>,
    },
    #[error("{}: invalid JSON", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{}: expected a KubeletConfiguration mapping, found {found}", path.display())]
    NotAMapping { path: PathBuf, found: &'static str },
    #[error("{}: field {field}: must be {expected:?} (got {found})", path.display())]
    TypeMeta {
        path: PathBuf,
        field: &'static str,
        expected: &'static str,
        /// The value as written (quoted), or `nothing` when the field is missing.
        found: String,
    },
    #[error("{}: field {field}: {reason}", path.display())]
    Field {
        path: PathBuf,
        field: String,
        reason: FieldError,
    },
}

/// What is wrong with one field's value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    #[error("expected {expected}, found {found}")]
    WrongType {
        expected: &'static str,
        found: &'static str,
    },
    #[error("must be an integer (got {got})")]
    NotAnInteger { got: String },
    #[error("must be {expected} (got {got})")]
    OutOfRange { expected: &'static str, got: String },
    #[error("{0}")]
    Duration(DurationError),
    #[error("must not be negative (got {got:?})")]
    NegativeDuration { got: String },
    #[error("{0}")]
    Quantity(QuantityError),
    #[error("must be {expected} (got {got:?})")]
    QuantityOutOfRange { expected: &'static str, got: String },
    #[error("unknown value {got:?} (expected one of: {})", allowed.join(", "))]
    UnknownValue {
        got: String,
        allowed: &'static [&'static str],
    },
    #[error("{got:?} is not an IP address")]
    IpAddress { got: String },
    #[error(
        "unsupported endpoint {got:?}: only unix sockets (unix:///path or /path) are supported"
    )]
    UnsupportedEndpoint { got: String },
    #[error("socket path {got:?} is not absolute")]
    RelativeSocketPath { got: String },
    #[error("path {got:?} is not absolute")]
    RelativePath { got: String },
    #[error("{first:?} and {second:?} cannot be combined")]
    Conflict {
        first: &'static str,
        second: &'static str,
    },
    #[error("{value:?} requires {field} to be set")]
    Requires {
        value: &'static str,
        field: &'static str,
    },
    #[error(
        "imageGCLowThresholdPercent ({low}) must be less than imageGCHighThresholdPercent ({high})"
    )]
    LowThresholdNotBelowHigh { low: u8, high: u8 },
    #[error("imageMaximumGCAge ({max_secs}s) must be greater than imageMinimumGCAge ({min_secs}s)")]
    MaxAgeNotAboveMinAge { min_secs: u64, max_secs: u64 },
    #[error("is required")]
    MissingValue,
    #[error("is not supported unless cgroupsPerQOS is true")]
    RequiresCgroupsPerQos,
    #[error(
        "false requires enforceNodeAllocatable to be set to [] or [\"none\"] (it defaults to [\"pods\"])"
    )]
    CgroupsPerQosOffEnforcesPods,
}

/// A [`FieldError`] at a field path, before the file it came from is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldIssue {
    pub(crate) field: String,
    pub(crate) reason: FieldError,
}

impl FieldIssue {
    pub(crate) fn new(field: impl Into<String>, reason: FieldError) -> Self {
        Self {
            field: field.into(),
            reason,
        }
    }

    /// The issue as an error naming the file it came from.
    pub(crate) fn in_file(self, path: PathBuf) -> ConfigError {
        ConfigError::Field {
            path,
            field: self.field,
            reason: self.reason,
        }
    }
}
