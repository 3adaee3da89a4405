//! The error type of every CRI and containerd call: what failed, and the gRPC code when the
//! runtime answered, so callers can tell "not found" and "retry later" from fatal failures.

use std::path::PathBuf;
use std::time::Duration;

use tonic::Code;

/// A failed runtime call or connection.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    /// The socket could not be reached after every retry.
    #[error("cannot reach the runtime at {path} after {attempts} attempt(s): {source}")]
    Unreachable {
        path: PathBuf,
        attempts: u32,
        #[source]
        source: std::io::Error,
    },
    /// The gRPC channel could not be set up over a reachable socket.
    #[error("cannot open a gRPC channel to {path}: {source}")]
    Channel {
        path: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
    /// The runtime says the object does not exist.
    #[error("{call}: not found: {message}")]
    NotFound { call: &'static str, message: String },
    /// The runtime answered with another gRPC error.
    #[error("{call}: {code:?}: {message}")]
    Status {
        call: &'static str,
        code: Code,
        message: String,
    },
    /// No answer within the call's deadline.
    #[error("{call}: no answer within {timeout:?}")]
    Timeout {
        call: &'static str,
        timeout: Duration,
    },
    /// The runtime answered, but without a field the CRI contract requires.
    #[error("{call}: the runtime's answer lacks {field}")]
    MissingField {
        call: &'static str,
        field: &'static str,
    },
    /// A request could not be put into gRPC metadata (a namespace or lease with invalid bytes).
    #[error("{call}: invalid metadata value {value:?}")]
    InvalidMetadata { call: &'static str, value: String },
}

impl CriError {
    /// Maps a gRPC status from `call` to an error, keeping the code.
    pub fn from_status(call: &'static str, status: &tonic::Status) -> Self {
        let message = status.message().to_owned();
        match status.code() {
            Code::NotFound => Self::NotFound { call, message },
            code => Self::Status {
                call,
                code,
                message,
            },
        }
    }

    /// The gRPC code, when the runtime answered (`DeadlineExceeded` for our own timeout).
    pub fn code(&self) -> Option<Code> {
        match self {
            Self::NotFound { .. } => Some(Code::NotFound),
            Self::Status { code, .. } => Some(*code),
            Self::Timeout { .. } => Some(Code::DeadlineExceeded),
            Self::Unreachable { .. }
            | Self::Channel { .. }
            | Self::MissingField { .. }
            | Self::InvalidMetadata { .. } => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }

    /// Whether trying again later can succeed: the runtime was unreachable, overloaded or slow.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } | Self::Channel { .. } | Self::Timeout { .. } => true,
            Self::Status { code, .. } => {
                matches!(
                    code,
                    Code::Unavailable | Code::ResourceExhausted | Code::Aborted
                )
            }
            Self::NotFound { .. } | Self::MissingField { .. } | Self::InvalidMetadata { .. } => {
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_is_its_own_variant() {
        let err = CriError::from_status("ContainerStatus", &tonic::Status::not_found("no such"));
        assert!(err.is_not_found());
        assert_eq!(err.code(), Some(Code::NotFound));
        assert!(!err.is_transient());
        assert_eq!(err.to_string(), "ContainerStatus: not found: no such");
    }

    #[test]
    fn other_codes_are_kept() {
        let err = CriError::from_status("RunPodSandbox", &tonic::Status::unavailable("busy"));
        assert_eq!(err.code(), Some(Code::Unavailable));
        assert!(err.is_transient());
        assert!(!err.is_not_found());
        let err = CriError::from_status("CreateContainer", &tonic::Status::invalid_argument("x"));
        assert!(!err.is_transient());
    }
}
