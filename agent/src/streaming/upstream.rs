//! The connection to the CRI streaming server: an HTTP/1.1 upgrade request to the URL CRI
//! `Exec`/`Attach`/`PortForward` returned, read up to the end of the response head. After a
//! 101 the TCP stream carries the upgraded protocol (SPDY/3.1).

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::StreamingError;

const HEAD_LIMIT: usize = 64 * 1024;
const BODY_LIMIT: usize = 64 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The CRI streaming server's answer to an upgrade request.
#[derive(Debug)]
pub struct UpstreamResponse {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    /// After a 101: bytes of the upgraded protocol already read past the head. Otherwise: the
    /// response body.
    pub rest: Vec<u8>,
    pub stream: TcpStream,
}

/// `host:port` and path of a plain-HTTP streaming URL.
pub fn split_url(url: &str) -> Result<(&str, &str), StreamingError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| StreamingError::Url(url.to_owned()))?;
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(StreamingError::Url(url.to_owned()));
    }
    Ok((authority, path))
}

/// Opens `url` and asks to upgrade to SPDY/3.1 with `protocols` as the
/// `X-Stream-Protocol-Version` values offered.
pub async fn upgrade(url: &str, protocols: &[String]) -> Result<UpstreamResponse, StreamingError> {
    let (authority, path) = split_url(url)?;
    let mut stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(authority))
        .await
        .map_err(|_| StreamingError::Upstream(format!("connecting to {authority} timed out")))?
        .map_err(|e| StreamingError::Upstream(format!("connecting to {authority}: {e}")))?;
    stream.set_nodelay(true).ok();
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
    );
    for protocol in protocols {
        request.push_str(&format!("X-Stream-Protocol-Version: {protocol}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| StreamingError::Upstream(format!("sending to {authority}: {e}")))?;
    read_head(stream).await
}

async fn read_head(mut stream: TcpStream) -> Result<UpstreamResponse, StreamingError> {
    let mut buf = Vec::with_capacity(1024);
    loop {
        let mut chunk = [0u8; 4096];
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| StreamingError::Upstream(format!("reading the response: {e}")))?;
        if n == 0 {
            return Err(StreamingError::Upstream(
                "the streaming server closed the connection before answering".into(),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut storage = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut storage);
        match response.parse(&buf) {
            Ok(httparse::Status::Complete(head_len)) => {
                let status = response.code.unwrap_or(0);
                let headers: Vec<(String, Vec<u8>)> = response
                    .headers
                    .iter()
                    .map(|h| (h.name.to_owned(), h.value.to_vec()))
                    .collect();
                let mut rest = buf[head_len..].to_vec();
                if status != 101 {
                    read_body(&mut stream, &headers, &mut rest).await;
                }
                return Ok(UpstreamResponse {
                    status,
                    headers,
                    rest,
                    stream,
                });
            }
            Ok(httparse::Status::Partial) if buf.len() < HEAD_LIMIT => {}
            Ok(httparse::Status::Partial) => {
                return Err(StreamingError::Upstream("response head too long".into()));
            }
            Err(e) => return Err(StreamingError::Upstream(format!("bad response: {e}"))),
        }
    }
}

/// Reads a (small) error body: up to Content-Length, or to EOF, bounded in size and time.
async fn read_body(stream: &mut TcpStream, headers: &[(String, Vec<u8>)], body: &mut Vec<u8>) {
    let length = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| {
            std::str::from_utf8(value)
                .ok()?
                .trim()
                .parse::<usize>()
                .ok()
        })
        .unwrap_or(BODY_LIMIT)
        .min(BODY_LIMIT);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while body.len() < length {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => body.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    body.truncate(length);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_authority_and_path() {
        let cases = [
            (
                "http://127.0.0.1:3456/exec/AbC",
                Some(("127.0.0.1:3456", "/exec/AbC")),
            ),
            ("http://[::1]:80", Some(("[::1]:80", "/"))),
            ("https://127.0.0.1:1/x", None),
            ("http:///x", None),
        ];
        for (url, expected) in cases {
            assert_eq!(split_url(url).ok(), expected, "{url}");
        }
    }
}
