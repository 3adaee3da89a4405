//! `store-bench`: the apiserver's two store backends side by side, embedded (redb) and etcd
//! (a real `/usr/bin/etcd` on loopback, started here), through the same `Store` trait.
//!
//! For each backend: create latency p50/p99 and writes/s with 1 writer and with 50 concurrent
//! writers (2 KiB values, fsync on every commit in both), a LIST of the 10k keys written by
//! the 50 writers (whole, and in pages of 500 like kubectl/informers), and watch delivery
//! latency to 100 watchers (from issuing the write to each watcher receiving the event, so
//! the commit is included). Both run in this process on the same disk.
//!
//! Run: `cargo run --release -p kwk-tests --bin store-bench [--keys N] [--dir PATH]`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt as _;
use kwk_control_plane::storage::embedded::{EmbeddedOptions, EmbeddedStore};
use kwk_control_plane::storage::{ListOptions, Store};
use kwk_tests::etcd::TestEtcd;

const VALUE: usize = 2048;
const WATCHERS: usize = 100;
const WATCH_WRITES: usize = 200;

#[derive(Debug, Default)]
struct Figures {
    one_p50: f64,
    one_p99: f64,
    one_rate: f64,
    many_p50: f64,
    many_p99: f64,
    many_rate: f64,
    list_all: f64,
    list_paged: f64,
    watch_p50: f64,
    watch_p99: f64,
    watch_max: f64,
    note: String,
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

/// `writers` tasks, each creating `each` keys; returns latencies and wall time.
async fn creates(
    store: &Arc<dyn Store>,
    tag: &str,
    writers: usize,
    each: usize,
) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let start = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let store = store.clone();
            let tag = tag.to_owned();
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(each);
                for i in 0..each {
                    let key = format!("/registry/pods/{tag}/w{w:02}-{i:05}");
                    let t = Instant::now();
                    store.create(&key, vec![b'x'; VALUE]).await?;
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

async fn list_ms(store: &Arc<dyn Store>, prefix: &str, page: Option<usize>) -> anyhow::Result<f64> {
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let mut n = 0;
        let mut options = ListOptions {
            prefix: prefix.into(),
            limit: page,
            ..ListOptions::default()
        };
        loop {
            let result = store.list(&options).await?;
            n += result.items.len();
            if !result.more {
                break;
            }
            options.revision = Some(result.revision);
            options.start_after = result.items.last().map(|kv| kv.key.clone());
        }
        times.push(t.elapsed());
        anyhow::ensure!(n > 0, "listed nothing under {prefix}");
    }
    Ok(percentile(&mut times, 0.5))
}

/// 100 watchers on one prefix; one writer updating a key every 5 ms.
async fn watch_latency(store: &Arc<dyn Store>) -> anyhow::Result<Vec<Duration>> {
    let prefix = "/registry/leases/bench/";
    let key = format!("{prefix}lease");
    let mut kv = store.create(&key, vec![b'0'; 512]).await?;
    let from = kv.mod_revision;
    let sent: Arc<std::sync::Mutex<Vec<Option<Instant>>>> =
        Arc::new(std::sync::Mutex::new(vec![None; WATCH_WRITES]));
    let mut watchers = Vec::new();
    for _ in 0..WATCHERS {
        let mut stream = store.watch(prefix, from).await?;
        let sent = sent.clone();
        watchers.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(WATCH_WRITES);
            while lat.len() < WATCH_WRITES {
                let event = tokio::time::timeout(Duration::from_secs(30), stream.next())
                    .await
                    .context("watch stalled")?
                    .context("watch ended")??;
                let received = Instant::now();
                let seq: usize = std::str::from_utf8(&event.kv.value[..8])?.trim().parse()?;
                let at = sent.lock().map_err(|_| anyhow::anyhow!("poisoned"))?[seq];
                lat.push(received - at.context("event before its write")?);
            }
            anyhow::Ok(lat)
        }));
    }
    for seq in 0..WATCH_WRITES {
        let mut value = format!("{seq:>8}").into_bytes();
        value.resize(512, b'.');
        sent.lock().map_err(|_| anyhow::anyhow!("poisoned"))?[seq] = Some(Instant::now());
        kv = store.update(&key, value, kv.mod_revision).await?;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut all = Vec::new();
    for w in watchers {
        all.extend(w.await??);
    }
    Ok(all)
}

async fn run(store: Arc<dyn Store>, keys: usize) -> anyhow::Result<Figures> {
    let mut f = Figures::default();
    let (mut one, took) = creates(&store, "one", 1, 500).await?;
    f.one_p50 = percentile(&mut one, 0.5);
    f.one_p99 = percentile(&mut one, 0.99);
    f.one_rate = one.len() as f64 / took.as_secs_f64();
    let (mut many, took) = creates(&store, "many", 50, keys / 50).await?;
    f.many_p50 = percentile(&mut many, 0.5);
    f.many_p99 = percentile(&mut many, 0.99);
    f.many_rate = many.len() as f64 / took.as_secs_f64();
    f.list_all = list_ms(&store, "/registry/pods/many/", None).await?;
    f.list_paged = list_ms(&store, "/registry/pods/many/", Some(500)).await?;
    let mut watch = watch_latency(&store).await?;
    f.watch_p50 = percentile(&mut watch, 0.5);
    f.watch_p99 = percentile(&mut watch, 0.99);
    f.watch_max = percentile(&mut watch, 1.0);
    Ok(f)
}

fn dir_size(path: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut keys = 10_000usize;
    let mut base = PathBuf::from("/var/tmp");
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--keys" => keys = args.next().context("--keys N")?.parse()?,
            "--dir" => base = args.next().context("--dir PATH")?.into(),
            other => anyhow::bail!("unknown argument {other:?} (--keys N, --dir PATH)"),
        }
    }
    anyhow::ensure!(keys >= 50, "--keys must be at least 50");

    let dir = tempfile::Builder::new()
        .prefix("kwk-store-bench-")
        .tempdir_in(&base)?;
    let embedded = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).await?;
    let path = embedded.path().to_owned();
    let embedded = Arc::new(embedded);
    let mut e = run(embedded.clone(), keys).await?;
    let stats = embedded.stats();
    e.note = format!(
        "{} writes in {} commits ({:.1}/commit); file {:.0} MiB",
        stats.writes,
        stats.commits,
        stats.writes as f64 / stats.commits.max(1) as f64,
        std::fs::metadata(&path).map_or(0, |m| m.len()) as f64 / 1048576.0
    );
    drop(embedded);

    let etcd = TestEtcd::start().await?;
    let mut d = run(etcd.store("").await?, keys).await?;
    d.note = format!(
        "etcd 3.4 single member, data dir {:.0} MiB",
        dir_size(&etcd.data_dir()) as f64 / 1048576.0
    );

    let n = keys / 50 * 50;
    println!(
        "store-bench: {VALUE} B values; LIST of {n} keys; {WATCHERS} watchers × {WATCH_WRITES} updates"
    );
    println!("| figure | embedded (redb) | etcd |");
    println!("|---|---|---|");
    let rows: [(&str, f64, f64, &str); 11] = [
        ("create p50, 1 writer", e.one_p50, d.one_p50, "ms"),
        ("create p99, 1 writer", e.one_p99, d.one_p99, "ms"),
        ("writes/s, 1 writer", e.one_rate, d.one_rate, ""),
        ("create p50, 50 writers", e.many_p50, d.many_p50, "ms"),
        ("create p99, 50 writers", e.many_p99, d.many_p99, "ms"),
        ("writes/s, 50 writers", e.many_rate, d.many_rate, ""),
        ("LIST all keys (median of 5)", e.list_all, d.list_all, "ms"),
        ("LIST in pages of 500", e.list_paged, d.list_paged, "ms"),
        ("watch delivery p50", e.watch_p50, d.watch_p50, "ms"),
        ("watch delivery p99", e.watch_p99, d.watch_p99, "ms"),
        ("watch delivery max", e.watch_max, d.watch_max, "ms"),
    ];
    for (name, a, b, unit) in rows {
        if unit.is_empty() {
            println!("| {name} | {a:.0} | {b:.0} |");
        } else {
            println!("| {name} | {a:.2} {unit} | {b:.2} {unit} |");
        }
    }
    println!("| notes | {} | {} |", e.note, d.note);
    Ok(())
}
