//! A minimal HTTP/1.0 GET for checking that a pod answers (run it inside the node's netns with
//! [`crate::NetNs::run`]).

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// GETs `path` from `addr`; returns the whole response, status line first.
pub fn get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

/// Whether `response`'s status line says 200.
pub fn is_ok(response: &str) -> bool {
    response
        .lines()
        .next()
        .is_some_and(|status| status.split_whitespace().nth(1) == Some("200"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn status_line_is_read() {
        assert!(super::is_ok("HTTP/1.1 200 OK\r\n\r\nbody"));
        assert!(super::is_ok("HTTP/1.0 200 OK\r\n"));
        assert!(!super::is_ok("HTTP/1.1 404 Not Found\r\n\r\n200"));
        assert!(!super::is_ok(""));
    }
}
