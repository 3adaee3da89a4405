//! `api-bench`: the real `kwk-control-plane apiserver` binary as a child process, once on the
//! embedded store and once on a real etcd (`/usr/bin/etcd` on loopback, started here), driven
//! over TLS with the admin client certificate on one HTTP/2 connection, as kubectl and
//! client-go talk to it.
//!
//! For each backend: pod create latency p50/p99 and creates/s with 1 writer and with 50
//! concurrent writers (the 50 writers store the 10k pods the rest measures), LIST of those 10k
//! pods as JSON and as a Table (whole, and in kubectl's pages of 500), watch delivery latency
//! to 100 watchers (from issuing the create to each watcher reading the event line, so the
//! commit and the encoding are included), and the apiserver's resident memory (VmRSS, and its
//! peak VmHWM, from `/proc/<pid>/status`) with the 10k pods stored.
//!
//! Run: `cargo build --release -p kwk-control-plane -p kwk-tests --bin kwk-control-plane --bin
//! api-bench && target/release/api-bench [--pods N] [--dir PATH] [--apiserver PATH] [--embedded-only]`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use kwk_tests::etcd::{TestEtcd, free_port};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{Value, json};

const WRITERS: usize = 50;
const ONE_WRITER_PODS: usize = 300;
const WATCHERS: usize = 100;
const WATCH_WRITES: usize = 200;
const TABLE_ACCEPT: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";

/// One HTTP/2 connection to the apiserver with the admin client certificate.
#[derive(Clone)]
struct Client {
    send: SendRequest<Full<Bytes>>,
}

impl Client {
    async fn connect(port: u16, pki: &Path) -> anyhow::Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(pki.join("ca.crt"))? {
            roots.add(cert?)?;
        }
        let chain =
            CertificateDer::pem_file_iter(pki.join("admin.crt"))?.collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_file(pki.join("admin.key"))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        tcp.set_nodelay(true)?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("127.0.0.1")?.to_owned(), tcp)
            .await?;
        anyhow::ensure!(
            tls.get_ref().1.alpn_protocol() == Some(b"h2"),
            "the apiserver did not negotiate HTTP/2"
        );
        let (send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        Ok(Self { send })
    }

    async fn start(
        &self,
        method: Method,
        path: &str,
        accept: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> anyhow::Result<http::Response<hyper::body::Incoming>> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("https://127.0.0.1{path}"))
            .header(header::ACCEPT, accept);
        let body = match body {
            Some((content_type, bytes)) => {
                request = request.header(header::CONTENT_TYPE, content_type);
                Full::new(Bytes::from(bytes))
            }
            None => Full::new(Bytes::new()),
        };
        let mut send = self.send.clone();
        send.ready().await?;
        Ok(send.send_request(request.body(body)?).await?)
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        accept: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let response = self.start(method, path, accept, body).await?;
        let status = response.status();
        Ok((status, response.into_body().collect().await?.to_bytes()))
    }

    async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let body = body.map(|b| ("application/json", b.to_string().into_bytes()));
        let (status, bytes) = self.call(method, path, "application/json", body).await?;
        anyhow::ensure!(
            status.is_success(),
            "{path}: {status}: {}",
            String::from_utf8_lossy(&bytes)
        );
        Ok(serde_json::from_slice(&bytes)?)
    }
}

/// A pod like a small Deployment's: labels, one container with ports, env and requests.
fn pod(namespace: &str, name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace,
            "labels": {"app": "bench", "tier": "web", "pod-template-hash": "6d4cf56db6"},
            "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z"}},
        "spec": {"containers": [{
            "name": "app", "image": "registry.example/team/app:1.27.3",
            "ports": [{"name": "http", "containerPort": 8080}],
            "env": [{"name": "MODE", "value": "production"}, {"name": "LOG_LEVEL", "value": "info"}],
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
            "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 5}
        }]}
    })
}

/// The apiserver child process (killed on drop).
struct ApiServer {
    child: tokio::process::Child,
    port: u16,
    pki: PathBuf,
}

impl ApiServer {
    async fn start(binary: &Path, dir: &Path, etcd: Option<&TestEtcd>) -> anyhow::Result<Self> {
        let port = free_port()?;
        let pki = dir.join("pki");
        let log = std::fs::File::create(dir.join("apiserver.log"))?;
        let mut cmd = tokio::process::Command::new(binary);
        cmd.arg("apiserver")
            .args(["--generate-pki", "--bind-address", "127.0.0.1"])
            .arg("--pki-dir")
            .arg(&pki)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--secure-port", &port.to_string()])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true);
        if let Some(etcd) = etcd {
            cmd.args([
                "--storage-backend",
                "etcd",
                "--etcd-servers",
                &etcd.endpoint(),
            ]);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let server = Self { child, port, pki };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(client) = Client::connect(port, &server.pki).await
                && let Ok((StatusCode::OK, _)) =
                    client.call(Method::GET, "/readyz", "*/*", None).await
            {
                return Ok(server);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "apiserver not ready: {}",
                std::fs::read_to_string(dir.join("apiserver.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `VmRSS` and `VmHWM` in MiB.
    fn memory(&self) -> anyhow::Result<(f64, f64)> {
        let pid = self.child.id().context("apiserver exited")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let field = |name: &str| -> anyhow::Result<f64> {
            let line = status
                .lines()
                .find(|l| l.starts_with(name))
                .with_context(|| format!("no {name}"))?;
            let kib: f64 = line
                .split_whitespace()
                .nth(1)
                .context("malformed")?
                .parse()?;
            Ok(kib / 1024.0)
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }
}

#[derive(Debug, Default)]
struct Figures {
    one_p50: f64,
    one_p99: f64,
    one_rate: f64,
    many_p50: f64,
    many_p99: f64,
    many_rate: f64,
    list_json: f64,
    list_json_bytes: usize,
    list_table: f64,
    list_table_paged: f64,
    watch_p50: f64,
    watch_p99: f64,
    watch_max: f64,
    rss_stored: f64,
    rss_after_lists: f64,
    hwm: f64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn percentile(v: &mut [Duration], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable();
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    ms(v[i])
}

async fn namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
    client
        .ok(Method::POST, "/api/v1/namespaces", Some(body))
        .await?;
    Ok(())
}

/// `writers` tasks creating `each` pods in `ns`; latencies and wall time.
async fn creates(
    client: &Client,
    ns: &str,
    writers: usize,
    each: usize,
) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let start = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let client = client.clone();
            let ns = ns.to_owned();
            tokio::spawn(async move {
                let path = format!("/api/v1/namespaces/{ns}/pods");
                let mut lat = Vec::with_capacity(each);
                for i in 0..each {
                    let body = pod(&ns, &format!("w{w:02}-{i:05}"));
                    let t = Instant::now();
                    client.ok(Method::POST, &path, Some(body)).await?;
                    lat.push(t.elapsed());
                }
                anyhow::Ok(lat)
            })
        })
        .collect();
    let mut all = Vec::with_capacity(writers * each);
    for t in tasks {
        all.extend(t.await??);
    }
    Ok((all, start.elapsed()))
}

/// What the bench reads of a list or Table: the continue token and the number of items (rows).
#[derive(serde::Deserialize)]
struct ListHead {
    metadata: ListMeta,
    #[serde(default)]
    items: Vec<serde::de::IgnoredAny>,
    #[serde(default)]
    rows: Vec<serde::de::IgnoredAny>,
}

#[derive(serde::Deserialize)]
struct ListMeta {
    #[serde(default)]
    r#continue: String,
}

/// Median of 5 LISTs of `ns`'s pods, following `continue` when `page` is set, timed until the
/// last response is read whole (the client's decode of the items is not counted; with pages,
/// reading each page's `continue` token is); checks the count. Returns the time and the bytes
/// of one LIST.
async fn list_ms(
    client: &Client,
    ns: &str,
    accept: &str,
    page: Option<usize>,
    expect: usize,
) -> anyhow::Result<(f64, usize)> {
    let mut times = Vec::new();
    let mut size = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let mut n = 0;
        let mut next = String::new();
        size = 0;
        let mut pages = Vec::new();
        loop {
            let mut path = format!("/api/v1/namespaces/{ns}/pods");
            if let Some(limit) = page {
                path.push_str(&format!("?limit={limit}"));
                if !next.is_empty() {
                    path.push_str(&format!("&continue={next}"));
                }
            }
            let (status, bytes) = client.call(Method::GET, &path, accept, None).await?;
            anyhow::ensure!(status == StatusCode::OK, "{path}: {status}");
            size += bytes.len();
            if page.is_none() {
                pages.push(bytes);
                break;
            }
            let head: ListHead = serde_json::from_slice(&bytes)?;
            n += head.items.len() + head.rows.len();
            next = head.metadata.r#continue;
            if next.is_empty() {
                break;
            }
        }
        times.push(t.elapsed());
        for bytes in pages {
            let head: ListHead = serde_json::from_slice(&bytes)?;
            n += head.items.len() + head.rows.len();
        }
        anyhow::ensure!(n == expect, "listed {n} pods in {ns}, expected {expect}");
    }
    Ok((percentile(&mut times, 0.5), size))
}

/// 100 watchers of one namespace; one writer creating a pod every 5 ms.
async fn watch_latency(client: &Client) -> anyhow::Result<Vec<Duration>> {
    namespace(client, "watch").await?;
    let list = client
        .ok(Method::GET, "/api/v1/namespaces/watch/pods", None)
        .await?;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .context("list resourceVersion")?
        .to_string();
    let sent: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; WATCH_WRITES]));
    let mut watchers = Vec::new();
    for _ in 0..WATCHERS {
        let path = format!(
            "/api/v1/namespaces/watch/pods?watch=1&resourceVersion={rv}&allowWatchBookmarks=true"
        );
        let response = client
            .start(Method::GET, &path, "application/json", None)
            .await?;
        anyhow::ensure!(
            response.status() == StatusCode::OK,
            "watch: {}",
            response.status()
        );
        let mut body = response.into_body();
        let sent = sent.clone();
        watchers.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(WATCH_WRITES);
            let mut buffer = Vec::new();
            while lat.len() < WATCH_WRITES {
                let frame = tokio::time::timeout(Duration::from_secs(30), body.frame())
                    .await
                    .context("watch stalled")?
                    .context("watch ended")??;
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                let received = Instant::now();
                buffer.extend_from_slice(&data);
                while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buffer.drain(..=end).collect();
                    let event: Value = serde_json::from_slice(&line)?;
                    if event["type"] != "ADDED" {
                        continue;
                    }
                    let name = event["object"]["metadata"]["name"].as_str().unwrap_or("");
                    let seq: usize = name.trim_start_matches("seq-").parse()?;
                    let at = sent.lock().map_err(|_| anyhow::anyhow!("poisoned"))?[seq];
                    lat.push(received - at.context("event before its write")?);
                }
            }
            anyhow::Ok(lat)
        }));
    }
    for seq in 0..WATCH_WRITES {
        sent.lock().map_err(|_| anyhow::anyhow!("poisoned"))?[seq] = Some(Instant::now());
        client
            .ok(
                Method::POST,
                "/api/v1/namespaces/watch/pods",
                Some(pod("watch", &format!("seq-{seq}"))),
            )
            .await?;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut all = Vec::new();
    for w in watchers {
        all.extend(w.await??);
    }
    Ok(all)
}

async fn run(
    binary: &Path,
    dir: &Path,
    etcd: Option<&TestEtcd>,
    pods: usize,
) -> anyhow::Result<Figures> {
    let server = ApiServer::start(binary, dir, etcd).await?;
    let client = Client::connect(server.port, &server.pki).await?;
    let mut f = Figures::default();
    namespace(&client, "one").await?;
    namespace(&client, "bench").await?;
    let (mut one, took) = creates(&client, "one", 1, ONE_WRITER_PODS).await?;
    f.one_p50 = percentile(&mut one, 0.5);
    f.one_p99 = percentile(&mut one, 0.99);
    f.one_rate = one.len() as f64 / took.as_secs_f64();
    let (mut many, took) = creates(&client, "bench", WRITERS, pods / WRITERS).await?;
    f.many_p50 = percentile(&mut many, 0.5);
    f.many_p99 = percentile(&mut many, 0.99);
    f.many_rate = many.len() as f64 / took.as_secs_f64();
    f.rss_stored = server.memory()?.0;
    eprintln!("api-bench: {} pods stored; listing", many.len());
    let n = pods / WRITERS * WRITERS;
    (f.list_json, f.list_json_bytes) =
        list_ms(&client, "bench", "application/json", None, n).await?;
    f.list_table = list_ms(&client, "bench", TABLE_ACCEPT, None, n).await?.0;
    f.list_table_paged = list_ms(&client, "bench", TABLE_ACCEPT, Some(500), n)
        .await?
        .0;
    (f.rss_after_lists, f.hwm) = server.memory()?;
    eprintln!("api-bench: watching");
    let mut watch = watch_latency(&client).await?;
    f.watch_p50 = percentile(&mut watch, 0.5);
    f.watch_p99 = percentile(&mut watch, 0.99);
    f.watch_max = percentile(&mut watch, 1.0);
    Ok(f)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut pods = 10_000usize;
    let mut embedded_only = false;
    let mut base = PathBuf::from("/var/tmp");
    let mut binary = std::env::current_exe()?
        .parent()
        .context("exe dir")?
        .join("kwk-control-plane");
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--pods" => pods = args.next().context("--pods N")?.parse()?,
            "--dir" => base = args.next().context("--dir PATH")?.into(),
            "--apiserver" => binary = args.next().context("--apiserver PATH")?.into(),
            "--embedded-only" => embedded_only = true,
            other => anyhow::bail!(
                "unknown argument {other:?} (--pods N, --dir PATH, --apiserver PATH, --embedded-only)"
            ),
        }
    }
    anyhow::ensure!(pods >= WRITERS, "--pods must be at least {WRITERS}");
    anyhow::ensure!(
        binary.exists(),
        "no apiserver binary at {} (--apiserver PATH)",
        binary.display()
    );

    let dir = tempfile::Builder::new()
        .prefix("kwk-api-bench-")
        .tempdir_in(&base)?;
    std::fs::create_dir(dir.path().join("embedded"))?;
    std::fs::create_dir(dir.path().join("etcd"))?;
    let e = run(&binary, &dir.path().join("embedded"), None, pods).await?;
    let d = if embedded_only {
        Figures::default()
    } else {
        let etcd = TestEtcd::start().await?;
        run(&binary, &dir.path().join("etcd"), Some(&etcd), pods).await?
    };

    let n = pods / WRITERS * WRITERS;
    println!(
        "api-bench: kwk-control-plane apiserver over TLS + client cert, one HTTP/2 connection; \
         {n} pods from {WRITERS} writers ({:.1} KiB JSON each listed); {WATCHERS} watchers × {WATCH_WRITES} creates",
        e.list_json_bytes as f64 / n as f64 / 1024.0
    );
    println!("| figure | embedded (redb) | etcd | goal |");
    println!("|---|---|---|---|");
    let rows: [(&str, f64, f64, &str, &str); 16] = [
        ("create p50, 1 writer", e.one_p50, d.one_p50, "ms", ""),
        ("create p99, 1 writer", e.one_p99, d.one_p99, "ms", ""),
        ("creates/s, 1 writer", e.one_rate, d.one_rate, "", ""),
        ("create p50, 50 writers", e.many_p50, d.many_p50, "ms", ""),
        (
            "create p99, 50 writers",
            e.many_p99,
            d.many_p99,
            "ms",
            "≤ 25 ms (embedded)",
        ),
        ("creates/s, 50 writers", e.many_rate, d.many_rate, "", ""),
        (
            "LIST pods, JSON (median of 5)",
            e.list_json,
            d.list_json,
            "ms",
            "≤ 200 ms",
        ),
        ("LIST pods, Table", e.list_table, d.list_table, "ms", ""),
        (
            "LIST pods, Table in pages of 500 (kubectl get)",
            e.list_table_paged,
            d.list_table_paged,
            "ms",
            "",
        ),
        ("watch delivery p50", e.watch_p50, d.watch_p50, "ms", ""),
        ("watch delivery p99", e.watch_p99, d.watch_p99, "ms", ""),
        ("watch delivery max", e.watch_max, d.watch_max, "ms", ""),
        (
            "apiserver VmRSS, pods stored",
            e.rss_stored,
            d.rss_stored,
            "MiB",
            "≤ 150 MiB",
        ),
        (
            "apiserver VmRSS, after the LISTs",
            e.rss_after_lists,
            d.rss_after_lists,
            "MiB",
            "",
        ),
        ("apiserver VmHWM (peak)", e.hwm, d.hwm, "MiB", ""),
        (
            "JSON LIST size",
            e.list_json_bytes as f64 / 1048576.0,
            d.list_json_bytes as f64 / 1048576.0,
            "MiB",
            "",
        ),
    ];
    for (name, a, b, unit, goal) in rows {
        if unit.is_empty() {
            println!("| {name} | {a:.0} | {b:.0} | {goal} |");
        } else {
            println!("| {name} | {a:.2} {unit} | {b:.2} {unit} | {goal} |");
        }
    }
    Ok(())
}
