//! gRPC channels over a unix socket, with bounded retry while the socket is absent.
//!
//! A node agent often starts before its runtime: connecting retries with exponential backoff
//! while the socket is missing or refuses connections, then gives up with the last I/O error.
//! Once connected, the channel re-dials the same path by itself after a runtime restart.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::CriError;

/// How hard to try reaching a socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectOptions {
    /// Attempts before giving up (at least one is made).
    pub attempts: u32,
    /// Wait after the first failed attempt; doubles each time up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for ConnectOptions {
    /// About a minute in all: 100 ms doubling to 5 s, 16 attempts.
    fn default() -> Self {
        Self {
            attempts: 16,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl ConnectOptions {
    /// The waits between attempts, in order (one fewer than `attempts`).
    pub fn backoffs(&self) -> impl Iterator<Item = Duration> + '_ {
        let mut next = self.initial_backoff;
        (1..self.attempts.max(1)).map(move |_| {
            let wait = next.min(self.max_backoff);
            next = next.saturating_mul(2);
            wait
        })
    }
}

/// Opens a gRPC channel to the unix socket at `path`, retrying as `options` says.
pub async fn connect_unix(path: &Path, options: &ConnectOptions) -> Result<Channel, CriError> {
    let mut backoffs = options.backoffs();
    let mut attempts = 0;
    loop {
        attempts += 1;
        match UnixStream::connect(path).await {
            Ok(_probe) => break,
            Err(source) => match backoffs.next() {
                Some(wait) if is_retryable(&source) => {
                    tracing::debug!(path = %path.display(), %source, ?wait, "runtime socket not ready");
                    tokio::time::sleep(wait).await;
                }
                _ => {
                    return Err(CriError::Unreachable {
                        path: path.to_owned(),
                        attempts,
                        source,
                    });
                }
            },
        }
    }
    let socket: PathBuf = path.to_owned();
    // The URI is required by the API but unused: every connection dials the socket.
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move { UnixStream::connect(socket).await.map(TokioIo::new) }
        }))
        .await
        .map_err(|source| CriError::Channel {
            path: path.to_owned(),
            source,
        })
}

/// Absent or not yet listening: worth waiting for. Anything else (permissions, not a socket)
/// will not fix itself.
fn is_retryable(err: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        err.kind(),
        ErrorKind::NotFound | ErrorKind::ConnectionRefused
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let options = ConnectOptions {
            attempts: 6,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(500),
        };
        let waits: Vec<u64> = options.backoffs().map(|d| d.as_millis() as u64).collect();
        assert_eq!(waits, [100, 200, 400, 500, 500]);
    }

    #[test]
    fn one_attempt_means_no_wait() {
        let options = ConnectOptions {
            attempts: 1,
            ..ConnectOptions::default()
        };
        assert_eq!(options.backoffs().count(), 0);
        let options = ConnectOptions {
            attempts: 0,
            ..ConnectOptions::default()
        };
        assert_eq!(options.backoffs().count(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn missing_socket_fails_after_bounded_attempts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.sock");
        let options = ConnectOptions {
            attempts: 4,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(20),
        };
        let started = tokio::time::Instant::now();
        let err = connect_unix(&path, &options).await.unwrap_err();
        match &err {
            CriError::Unreachable {
                attempts, source, ..
            } => {
                assert_eq!(*attempts, 4);
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
            }
            other => panic!("unexpected error {other:?}"),
        }
        assert!(err.to_string().contains("absent.sock"), "{err}");
        // 10 + 20 + 20 ms of (paused, auto-advanced) backoff.
        assert_eq!(started.elapsed(), Duration::from_millis(50));
    }

    #[tokio::test]
    async fn socket_appearing_late_is_picked_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("late.sock");
        let listen_at = path.clone();
        let server = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            let listener = tokio::net::UnixListener::bind(&listen_at).unwrap();
            // Accept the probe and the channel's connection, and hold them open.
            let mut held = Vec::new();
            loop {
                held.push(listener.accept().await.unwrap());
            }
        });
        let options = ConnectOptions {
            attempts: 20,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(50),
        };
        connect_unix(&path, &options).await.unwrap();
        server.abort();
    }
}
