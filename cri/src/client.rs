//! [`CriClient`]: one handle on a runtime's CRI v1 `RuntimeService` and `ImageService`.
//!
//! Cloning is cheap (the channel is shared). Every call has a deadline, sent to the runtime as
//! `grpc-timeout` and enforced locally, and maps failures to [`CriError`] with the gRPC code.
//! The calls themselves live in `runtime.rs` and `images.rs`.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

use crate::CriError;
use crate::connect::{ConnectOptions, connect_unix};

/// CRI messages can be large (ListContainers on a busy node); the kubelet allows 16 MiB.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Per-call deadlines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeouts {
    /// Every call without a more specific deadline (the kubelet's `runtimeRequestTimeout`).
    pub default: Duration,
    /// `PullImage`, which can legitimately take long.
    pub pull_image: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            default: Duration::from_secs(120),
            pull_image: Duration::from_secs(30 * 60),
        }
    }
}

/// A status answer together with the runtime's free-form `info` (filled when asked `verbose`).
#[derive(Debug, Clone, PartialEq)]
pub struct Verbose<T> {
    pub status: T,
    pub info: std::collections::HashMap<String, String>,
}

/// Typed async client for a CRI v1 runtime.
#[derive(Debug, Clone)]
pub struct CriClient {
    pub(crate) runtime: RuntimeServiceClient<Channel>,
    pub(crate) images: ImageServiceClient<Channel>,
    pub(crate) timeouts: Timeouts,
}

impl CriClient {
    /// Connects to the runtime's unix socket, retrying while it is absent.
    pub async fn connect(
        socket: &Path,
        options: &ConnectOptions,
        timeouts: Timeouts,
    ) -> Result<Self, CriError> {
        Ok(Self::from_channel(
            connect_unix(socket, options).await?,
            timeouts,
        ))
    }

    /// Wraps an established channel.
    pub fn from_channel(channel: Channel, timeouts: Timeouts) -> Self {
        let runtime = RuntimeServiceClient::new(channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let images = ImageServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Self {
            runtime,
            images,
            timeouts,
        }
    }

    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }
}

/// Builds a request carrying `timeout` as its `grpc-timeout`.
pub(crate) fn request<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

/// Awaits one unary call under `timeout`, mapping every failure to [`CriError`].
pub(crate) async fn unary<T>(
    call: &'static str,
    timeout: Duration,
    response: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, CriError> {
    match tokio::time::timeout(timeout, response).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(CriError::from_status(call, &status)),
        Err(_elapsed) => Err(CriError::Timeout { call, timeout }),
    }
}

/// `Some(value)` or the contract violation `call` lacks `field`.
pub(crate) fn required<T>(
    value: Option<T>,
    call: &'static str,
    field: &'static str,
) -> Result<T, CriError> {
    value.ok_or(CriError::MissingField { call, field })
}

/// A non-empty ID or the contract violation `call` lacks `field`.
pub(crate) fn required_id(
    id: String,
    call: &'static str,
    field: &'static str,
) -> Result<String, CriError> {
    if id.is_empty() {
        Err(CriError::MissingField { call, field })
    } else {
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_silent_runtime_times_out() {
        let never = std::future::pending::<Result<tonic::Response<()>, tonic::Status>>();
        let err = unary("Version", Duration::from_secs(3), never)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                CriError::Timeout {
                    call: "Version",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn status_codes_are_kept() {
        let failed = async { Err::<tonic::Response<()>, _>(tonic::Status::not_found("gone")) };
        let err = unary("ContainerStatus", Duration::from_secs(1), failed)
            .await
            .unwrap_err();
        assert!(err.is_not_found());
    }

    #[test]
    fn missing_fields_are_errors_not_panics() {
        assert!(matches!(
            required::<u8>(None, "ContainerStatus", "status"),
            Err(CriError::MissingField {
                field: "status",
                ..
            })
        ));
        assert!(required_id(String::new(), "RunPodSandbox", "pod_sandbox_id").is_err());
        assert_eq!(
            required_id("abc".into(), "RunPodSandbox", "id").unwrap(),
            "abc"
        );
    }
}
