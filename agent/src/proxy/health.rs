//! `healthCheckNodePort`s: for each Service with `externalTrafficPolicy: Local`, an HTTP
//! listener that load balancers probe; 200 with the count of this node's ready endpoints when
//! there is one, 503 otherwise (upstream's service health server, same JSON and headers). The
//! proxy thread publishes the ports after each sync ([`HealthPublisher`]); a task here opens and
//! closes listeners to match.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv6Addr, SocketAddr};
use std::time::Duration;

use kwk_netdp::dataplane::SyncReport;
use kwk_netdp::model::{RuleDiff, RuleSet};
use kwk_netdp::runner::SyncObserver;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What one health-check port reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckState {
    pub namespace: String,
    pub name: String,
    pub local_endpoints: usize,
}

/// Health-check ports and what they report.
pub type Checks = BTreeMap<u16, CheckState>;

/// Publishes the rule set's health checks after each successful sync.
#[derive(Debug)]
pub struct HealthPublisher(pub watch::Sender<Checks>);

impl SyncObserver for HealthPublisher {
    fn synced(&mut self, rules: &RuleSet, diff: &RuleDiff<'_>, report: &SyncReport) {
        if !report.full
            && diff.health_checks_set.is_empty()
            && diff.health_checks_removed.is_empty()
        {
            return;
        }
        let checks: Checks = rules
            .health_check_node_ports
            .iter()
            .map(|(port, check)| {
                (
                    *port,
                    CheckState {
                        namespace: check.service.namespace.clone(),
                        name: check.service.name.clone(),
                        local_endpoints: check.local_endpoints,
                    },
                )
            })
            .collect();
        self.0.send_if_modified(|current| {
            let changed = *current != checks;
            *current = checks;
            changed
        });
    }
}

/// The status line and JSON body a check answers with (upstream's format).
pub fn response(check: &CheckState) -> (u16, String) {
    let status = if check.local_endpoints > 0 { 200 } else { 503 };
    let body = serde_json::json!({
        "service": {"namespace": check.namespace, "name": check.name},
        "localEndpoints": check.local_endpoints,
        "serviceProxyHealthy": true,
    })
    .to_string();
    (status, body)
}

/// Serves the published checks until `cancel`.
pub async fn serve(mut checks: watch::Receiver<Checks>, cancel: CancellationToken) {
    let mut listeners: HashMap<u16, JoinHandle<()>> = HashMap::new();
    loop {
        let wanted: Vec<u16> = checks.borrow_and_update().keys().copied().collect();
        listeners.retain(|port, task| {
            let keep = wanted.contains(port);
            if !keep {
                task.abort();
            }
            keep
        });
        for port in wanted {
            if listeners.contains_key(&port) {
                continue;
            }
            match bind(port).await {
                Ok(listener) => {
                    let task = tokio::spawn(accept_loop(listener, port, checks.clone()));
                    listeners.insert(port, task);
                }
                Err(err) => tracing::warn!(port, %err, "cannot open a health check node port"),
            }
        }
        tokio::select! {
            () = cancel.cancelled() => break,
            changed = checks.changed() => if changed.is_err() { break },
        }
    }
    for task in listeners.into_values() {
        task.abort();
    }
}

async fn bind(port: u16) -> std::io::Result<TcpListener> {
    // Dual stack where the host allows it, else IPv4 only.
    match TcpListener::bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))).await {
        Ok(l) => Ok(l),
        Err(_) => TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port))).await,
    }
}

async fn accept_loop(listener: TcpListener, port: u16, checks: watch::Receiver<Checks>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                // Out of file descriptors and the like: do not spin.
                tracing::debug!(port, %err, "accepting a health check connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let checks = checks.clone();
        tokio::spawn(async move {
            let state = checks.borrow().get(&port).cloned();
            if let Some(state) = state {
                let _ = tokio::time::timeout(Duration::from_secs(5), answer(stream, &state)).await;
            }
        });
    }
}

/// Reads the request head (any path, as upstream) and answers.
async fn answer(mut stream: TcpStream, check: &CheckState) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 512];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let (status, body) = response(check);
    let reason = if status == 200 {
        "OK"
    } else {
        "Service Unavailable"
    };
    let reply = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n\
         X-Content-Type-Options: nosniff\r\nX-Load-Balancing-Endpoint-Weight: {}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        check.local_endpoints,
        body.len()
    );
    stream.write_all(reply.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(n: usize) -> CheckState {
        CheckState {
            namespace: "web".into(),
            name: "front".into(),
            local_endpoints: n,
        }
    }

    #[test]
    fn responses_as_upstream() {
        let (status, body) = response(&check(2));
        assert_eq!(status, 200);
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["service"]["name"], "front");
        assert_eq!(json["localEndpoints"], 2);
        assert_eq!(response(&check(0)).0, 503);
    }

    #[tokio::test]
    async fn listeners_follow_the_published_ports() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let (tx, rx) = watch::channel(Checks::new());
        let cancel = CancellationToken::new();
        let server = tokio::spawn(serve(rx, cancel.clone()));
        tx.send_replace(Checks::from([(port, check(0))]));
        let get = || async move {
            let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .await?;
            let mut out = String::new();
            s.read_to_string(&mut out).await?;
            Ok::<_, std::io::Error>(out)
        };
        let mut reply = Err(std::io::Error::other("not tried"));
        for _ in 0..100 {
            reply = get().await;
            if reply.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let reply = reply.unwrap();
        assert!(reply.starts_with("HTTP/1.1 503 "), "{reply}");
        tx.send_replace(Checks::from([(port, check(3))]));
        let reply = get().await.unwrap();
        assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
        assert!(
            reply.contains("X-Load-Balancing-Endpoint-Weight: 3"),
            "{reply}"
        );
        // The port goes away with its Service.
        tx.send_replace(Checks::new());
        let mut closed = false;
        for _ in 0..100 {
            if get().await.is_err() {
                closed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(closed, "the listener stayed open");
        cancel.cancel();
        server.await.unwrap();
    }
}
