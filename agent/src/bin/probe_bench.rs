//! `probe-bench`: the CPU kwk-node's prober spends on HTTP probes.
//!
//! 100 pods (by default), each with one running container whose `readinessProbe` is an
//! `httpGet` every second, are handed to kwk-node's real prober (`PodProber`, one per pod as
//! the pod workers hold them: a task per probe, the verdict tracker, the HTTP handler) for a
//! measured window; the probes hit a small HTTP server in a child process (this same binary
//! with `--serve`), so the server's CPU is not counted. Printed: the probes answered (counted
//! by the server), this process's CPU time over the window (user + system, from
//! `/proc/self/stat`), and the CPU per 100 probes/s as a share of one core. The process's idle
//! CPU over a window of the same length is printed for comparison.
//!
//! Run: `cargo build --release -p kwk-agent --bin probe-bench && target/release/probe-bench
//! [--pods N] [--seconds S]`.

use std::io::{BufRead as _, Write as _};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::Pod;
use kwk_agent::pod::events::EventSink;
use kwk_agent::pod::observed::{ObservedContainer, ObservedPod, ObservedSandbox, UnixNanos};
use kwk_agent::pod::plan::Action;
use kwk_agent::pod::pleg::Relist;
use kwk_agent::pod::probe::prober::PodProber;
use kwk_agent::pod::probe::spec::ProbeKind;
use kwk_agent::pod::runtime::{ExecState, PodRuntime, RuntimeError};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::Notify;

/// A runtime that only tells the time: HTTP probes need nothing else from it.
#[derive(Clone)]
struct ClockOnly;

fn unsupported() -> RuntimeError {
    RuntimeError {
        operation: "bench".into(),
        message: "not part of the benchmark".into(),
        waiting_reason: None,
    }
}

impl PodRuntime for ClockOnly {
    async fn observe(&self, _uid: &str) -> Result<ObservedPod, RuntimeError> {
        Err(unsupported())
    }
    async fn execute(
        &self,
        _pod: &Pod,
        _observed: &ObservedPod,
        _state: &mut ExecState,
        _action: &Action,
    ) -> Result<(), RuntimeError> {
        Err(unsupported())
    }
    async fn cleanup(&self, _pod: &Pod) -> Result<(), RuntimeError> {
        Err(unsupported())
    }
    async fn relist(&self) -> Result<Relist, RuntimeError> {
        Err(unsupported())
    }
    fn now(&self) -> UnixNanos {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        i64::try_from(since.as_nanos()).unwrap_or(i64::MAX)
    }
}

/// This process's CPU time (user + system) from `/proc/self/stat`.
fn cpu_time() -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let after_name = stat.rsplit_once(')').context("/proc/self/stat")?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 = fields.get(11).context("utime")?.parse::<u64>()?
        + fields.get(12).context("stime")?.parse::<u64>()?;
    // The kernel's USER_HZ is 100 on Linux.
    Ok(Duration::from_millis(ticks * 10))
}

/// `--serve PORT_FILE`: answers every HTTP request with 200, prints the count on stdin EOF.
async fn serve() -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("{}", listener.local_addr()?.port());
    std::io::stdout().flush()?;
    let count = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let served = count.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let served = served.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                    )
                    .await;
                served.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            });
        }
    });
    tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {}
    })
    .await?;
    println!("{}", count.load(std::sync::atomic::Ordering::Relaxed));
    Ok(())
}

fn pod(index: usize, port: u16) -> anyhow::Result<Arc<Pod>> {
    let yaml = format!(
        "metadata: {{name: web-{index}, namespace: bench, uid: uid-{index}}}\n\
         spec:\n  containers:\n  - name: app\n    image: busybox\n    \
         readinessProbe: {{httpGet: {{path: /healthz, port: {port}}}, periodSeconds: 1}}\n"
    );
    Ok(Arc::new(serde_saphyr::from_str(&yaml)?))
}

fn observed(index: usize) -> ObservedPod {
    ObservedPod::new(
        vec![ObservedSandbox {
            id: format!("sandbox-{index}"),
            attempt: 0,
            ready: true,
            created_at: 1,
            ips: vec!["127.0.0.1".into()],
        }],
        vec![ObservedContainer {
            created_at: 1,
            started_at: 2,
            ..ObservedContainer::running(
                &format!("container-{index}"),
                &format!("sandbox-{index}"),
                "app",
            )
        }],
    )
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--serve") {
        return serve().await;
    }
    let value = |flag: &str, default: u64| -> anyhow::Result<u64> {
        match args.iter().position(|a| a == flag) {
            Some(i) => Ok(args.get(i + 1).context("a value")?.parse()?),
            None => Ok(default),
        }
    };
    let pods = usize::try_from(value("--pods", 100)?)?;
    let seconds = value("--seconds", 20)?;
    let window = Duration::from_secs(seconds);

    let mut server = Command::new(std::env::current_exe()?)
        .arg("--serve")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut server_out = std::io::BufReader::new(server.stdout.take().context("stdout")?);
    let mut line = String::new();
    server_out.read_line(&mut line)?;
    let port: u16 = line.trim().parse().context("the server's port")?;

    // Idle: the process with its runtime and nothing to do.
    let idle_start = cpu_time()?;
    tokio::time::sleep(window).await;
    let idle = cpu_time()? - idle_start;

    let mut probers = Vec::with_capacity(pods);
    for index in 0..pods {
        let mut prober = PodProber::new(ClockOnly, EventSink::default(), Arc::new(Notify::new()));
        prober.sync(&pod(index, port)?, &observed(index), None);
        probers.push(prober);
    }
    // Past the first round (each probe's first run is spread over its period).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let start_cpu = cpu_time()?;
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let busy = cpu_time()? - start_cpu;
    let elapsed = started.elapsed();
    let readiness = std::collections::BTreeSet::from([ProbeKind::Readiness]);
    let ready = probers
        .iter()
        .enumerate()
        .filter(|(i, p)| p.snapshot().view(&format!("container-{i}"), &readiness).1)
        .count();
    drop(probers);

    drop(server.stdin.take());
    line.clear();
    server_out.read_line(&mut line)?;
    let answered: u64 = line.trim().parse().context("the server's count")?;
    server.wait()?;
    if ready != pods {
        bail!("only {ready} of {pods} containers became ready");
    }

    #[allow(
        clippy::cast_precision_loss,
        reason = "printed figures: counts far below 2^52"
    )]
    let rate = answered as f64 / (elapsed.as_secs_f64() + 2.0);
    let per_100 = busy.as_secs_f64() / elapsed.as_secs_f64() * 100.0 / rate.max(1.0);
    println!("probe-bench: {pods} pods, one HTTP readiness probe each, periodSeconds 1");
    println!(
        "  probes answered: {answered} in {:.1} s (incl. 2 s warm-up) = {rate:.0}/s",
        elapsed.as_secs_f64() + 2.0
    );
    println!(
        "  kwk prober CPU over {:.1} s: {} ms = {:.2}% of one core per 100 probes/s",
        elapsed.as_secs_f64(),
        busy.as_millis(),
        per_100 * 100.0
    );
    println!(
        "  idle process over the same window: {} ms",
        idle.as_millis()
    );
    Ok(())
}
