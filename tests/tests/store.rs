//! The apiserver's store backends against real processes: the conformance suite on a real
//! etcd, etcd over TLS with client certificates, and `kill -9` durability of both backends
//! (every acknowledged write is there after a restart, with its revision).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt as _;
use kwk_control_plane::storage::embedded::{EmbeddedOptions, EmbeddedStore};
use kwk_control_plane::storage::etcd::EtcdStore;
use kwk_control_plane::storage::{Revision, Store, StoreError};
use kwk_tests::etcd::{TestEtcd, TestPki};

async fn etcd_store() -> (Arc<dyn Store>, TestEtcd) {
    let etcd = TestEtcd::start().await.expect("starting etcd");
    let store = etcd.store("").await.expect("connecting to etcd");
    (store, etcd)
}

mod etcd_conformance {
    use super::etcd_store;
    kwk_control_plane::store_conformance_tests!(etcd_store);
}

#[tokio::test]
async fn etcd_over_tls_with_a_client_certificate() {
    let pki = TestPki::generate().unwrap();
    let etcd = TestEtcd::start_tls(pki.clone()).await.unwrap();
    let store = etcd.store("/tenant-a").await.unwrap();
    let kv = store
        .create("/registry/pods/default/p", b"{}".to_vec())
        .await
        .unwrap();
    assert_eq!(
        store.get("/registry/pods/default/p").await.unwrap(),
        Some(kv)
    );
    // The key prefix isolates: another prefix sees nothing.
    let other = etcd.store("/tenant-b").await.unwrap();
    assert_eq!(other.count("/registry/").await.unwrap(), 0);
    // Without a client certificate etcd refuses the connection.
    let refused = tokio::time::timeout(
        Duration::from_secs(20),
        EtcdStore::connect(&[etcd.endpoint()], Some(pki.ca_only()), ""),
    )
    .await
    .expect("a refused handshake must not hang");
    assert!(refused.is_err(), "connected without a client certificate");
}

// ---------------------------------------------------------------------------------------------
// kill -9 durability

/// One acknowledged write.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ack {
    revision: Revision,
    key: String,
    value: String,
}

impl Ack {
    fn line(&self) -> String {
        format!("{} {} {}\n", self.revision, self.key, self.value)
    }

    fn parse(line: &str) -> Option<Ack> {
        let mut parts = line.split(' ');
        let ack = Ack {
            revision: parts.next()?.parse().ok()?,
            key: parts.next()?.to_owned(),
            value: parts.next()?.to_owned(),
        };
        parts.next().is_none().then_some(ack)
    }
}

const WRITERS: usize = 8;
const PREFIX: &str = "/registry/configmaps/crash/";

/// CAS writes on one key per writer until an error: create if absent, else update at the
/// revision read. `ack` is called for every acknowledged write, after the acknowledgement.
async fn cas_writer(
    store: Arc<dyn Store>,
    writer: usize,
    round: usize,
    ack: impl Fn(Ack) + Send + 'static,
) -> StoreError {
    let key = format!("{PREFIX}w{writer}");
    let mut seq = 0u64;
    loop {
        seq += 1;
        let value = format!("r{round}-w{writer}-{seq}");
        let current = match store.get(&key).await {
            Ok(current) => current,
            Err(e) => return e,
        };
        let result = match current {
            None => store.create(&key, value.clone().into_bytes()).await,
            Some(kv) => {
                store
                    .update(&key, value.clone().into_bytes(), kv.mod_revision)
                    .await
            }
        };
        match result {
            Ok(kv) => ack(Ack {
                revision: kv.mod_revision,
                key: key.clone(),
                value,
            }),
            Err(e) => return e,
        }
    }
}

/// Checks every acknowledged write is in the store's history at its revision, revisions are
/// strictly increasing and unique, and the current values are the last writes.
async fn verify(store: &dyn Store, acks: &[Ack]) -> anyhow::Result<()> {
    let current = store.current_revision().await?;
    let compacted = store.compacted_revision().await?;
    anyhow::ensure!(compacted <= 1, "these tests never compact ({compacted})");
    let mut history = store.watch(PREFIX, 0).await?;
    let mut by_revision = BTreeMap::new();
    let mut last = 0;
    let mut latest: BTreeMap<String, (Revision, Vec<u8>)> = BTreeMap::new();
    while last < current {
        let Ok(Some(event)) = tokio::time::timeout(Duration::from_secs(5), history.next()).await
        else {
            break;
        };
        let event = event?;
        anyhow::ensure!(
            event.kv.mod_revision > last,
            "history not increasing: {} after {last}",
            event.kv.mod_revision
        );
        last = event.kv.mod_revision;
        latest.insert(
            event.kv.key.clone(),
            (event.kv.mod_revision, event.kv.value.clone()),
        );
        by_revision.insert(event.kv.mod_revision, event);
    }
    for ack in acks {
        let event = by_revision
            .get(&ack.revision)
            .with_context(|| format!("acknowledged write lost: {ack:?} (current {current})"))?;
        anyhow::ensure!(
            event.kv.key == ack.key && event.kv.value == ack.value.as_bytes(),
            "revision {} holds {:?}, acknowledged {ack:?}",
            ack.revision,
            event.kv
        );
    }
    for (key, (revision, value)) in &latest {
        let kv = store.get(key).await?.context("key vanished")?;
        anyhow::ensure!(
            kv.mod_revision == *revision && &kv.value == value,
            "{key}: current {kv:?} is not the last write at {revision}"
        );
    }
    let max_ack = acks.iter().map(|a| a.revision).max().unwrap_or(0);
    anyhow::ensure!(
        current >= max_ack,
        "revision went back: {current} < {max_ack}"
    );
    Ok(())
}

/// A small pseudo-random generator (no dependency needed for kill timing).
fn jitter(seed: &mut u64, below_ms: u64) -> Duration {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    Duration::from_millis(*seed % below_ms)
}

fn seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.subsec_nanos());
    u64::from(nanos) | 1
}

const CHILD_DIR: &str = "KWK_STORE_CRASH_DIR";
const CHILD_ROUND: &str = "KWK_STORE_CRASH_ROUND";

/// Not a test of its own: the child process of
/// `embedded_store_keeps_every_acknowledged_write_across_kill_9`, re-executed from this test
/// binary. It writes until killed and appends every acknowledged write to `acks.log`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by the kill -9 test as its child process"]
async fn embedded_crash_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR).map(PathBuf::from) else {
        return;
    };
    let round: usize = std::env::var(CHILD_ROUND).unwrap().parse().unwrap();
    let options = EmbeddedOptions {
        compaction_interval: None,
        max_history: u64::MAX / 4,
        ..EmbeddedOptions::default()
    };
    let store: Arc<dyn Store> =
        Arc::new(EmbeddedStore::open(&dir.join("db"), options).await.unwrap());
    // One write(2) per line, in ack order per writer; the page cache survives kill -9.
    let log = Arc::new(Mutex::new(
        std::fs::File::options()
            .create(true)
            .append(true)
            .open(dir.join("acks.log"))
            .unwrap(),
    ));
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let log = log.clone();
            tokio::spawn(cas_writer(store.clone(), w, round, move |ack| {
                let line = ack.line();
                log.lock().unwrap().write_all(line.as_bytes()).unwrap();
            }))
        })
        .collect();
    println!("ready");
    let (stopped, _, _) = futures::future::select_all(tasks).await;
    panic!("a writer stopped: {}", stopped.unwrap());
}

fn read_acks(path: &Path) -> Vec<Ack> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    // A line cut by the kill is not a complete ack record (the caller had its answer but
    // the record is torn): only whole lines count.
    text.split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .filter_map(|l| Ack::parse(l.trim_end()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_keeps_every_acknowledged_write_across_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut seed = seed();
    for round in 0..5 {
        let before = read_acks(&dir.path().join("acks.log")).len();
        let mut child = std::process::Command::new(&exe)
            .args([
                "embedded_crash_child",
                "--exact",
                "--ignored",
                "--nocapture",
            ])
            .env(CHILD_DIR, dir.path())
            .env(CHILD_ROUND, round.to_string())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Let it write a little, then kill it at a random moment.
        let deadline = Instant::now() + Duration::from_secs(30);
        while read_acks(&dir.path().join("acks.log")).len() < before + 50 {
            assert!(Instant::now() < deadline, "the child made no progress");
            assert!(child.try_wait().unwrap().is_none(), "the child exited");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(jitter(&mut seed, 400)).await;
        child.kill().unwrap();
        child.wait().unwrap();

        let acks = read_acks(&dir.path().join("acks.log"));
        let opened = Instant::now();
        let store = EmbeddedStore::open(&dir.path().join("db"), EmbeddedOptions::default())
            .await
            .unwrap();
        let reopen = opened.elapsed();
        verify(&store, &acks)
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e:#}"));
        println!(
            "round {round}: {} acknowledged writes intact (+{} this round), reopen after kill -9 took {reopen:?}",
            acks.len(),
            acks.len() - before
        );
        store.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_keeps_every_acknowledged_write_across_kill_9() {
    let mut etcd = TestEtcd::start().await.unwrap();
    let acks = Arc::new(Mutex::new(Vec::<Ack>::new()));
    let mut seed = seed();
    for round in 0..3 {
        let store = etcd.store("").await.unwrap();
        let before = acks.lock().unwrap().len();
        let tasks: Vec<_> = (0..WRITERS)
            .map(|w| {
                let acks = acks.clone();
                tokio::spawn(cas_writer(store.clone(), w, round, move |ack| {
                    acks.lock().unwrap().push(ack);
                }))
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        while acks.lock().unwrap().len() < before + 50 {
            assert!(
                Instant::now() < deadline,
                "no progress:\n{}",
                etcd.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(jitter(&mut seed, 400)).await;
        etcd.kill9();
        for t in tasks {
            // Every writer stops at its first error; a write in flight is not acknowledged.
            let _ = tokio::time::timeout(Duration::from_secs(30), t)
                .await
                .expect("writers stop once etcd is gone");
        }
        etcd.restart().await.unwrap();
        let store = etcd.store("").await.unwrap();
        let acks = acks.lock().unwrap().clone();
        verify(store.as_ref(), &acks)
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e:#}"));
        println!(
            "round {round}: {} acknowledged writes intact (+{} this round)",
            acks.len(),
            acks.len() - before
        );
    }
}

// ---------------------------------------------------------------------------------------------
// the apiserver on etcd

/// kubectl writes through the apiserver into a real etcd, under `/registry/` as upstream lays
/// keys out, and reads them back after the apiserver is replaced by a fresh one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_through_the_apiserver_lands_in_etcd() {
    use kwk_control_plane::apiserver::{self, ApiServerOptions};
    let etcd = TestEtcd::start().await.expect("starting etcd");
    let dir = tempfile::tempdir().unwrap();
    let kubectl = kwk_tests::images::workspace_root().join(".ci/bin/kubectl");
    assert!(
        kubectl.exists(),
        "run .ci/install-deps for {}",
        kubectl.display()
    );
    let start = |bind: std::net::SocketAddr| {
        let pki_dir = dir.path().join("pki");
        let etcd = &etcd;
        async move {
            apiserver::start(ApiServerOptions {
                bind,
                pki_dir,
                generate_pki: true,
                serving_hosts: Vec::new(),
                token_file: None,
                store: etcd.store("").await.expect("connecting to etcd"),
                service_ranges: Default::default(),
                advertise_address: None,
                kubelet: Default::default(),
                admission: Default::default(),
            })
            .await
            .expect("starting the apiserver")
        }
    };
    let kubeconfig = dir.path().join("pki/admin.kubeconfig");
    let run = |args: &'static [&'static str], stdin: Option<&'static str>| {
        let kubectl = kubectl.clone();
        let kubeconfig = kubeconfig.clone();
        let cache = dir.path().join("cache");
        tokio::task::spawn_blocking(move || {
            let mut cmd = std::process::Command::new(kubectl);
            cmd.arg("--kubeconfig")
                .arg(kubeconfig)
                .arg("--cache-dir")
                .arg(cache);
            cmd.args(args).stdin(std::process::Stdio::piped());
            cmd.stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            let mut child = cmd.spawn().expect("kubectl");
            if let Some(input) = stdin {
                child
                    .stdin
                    .take()
                    .unwrap()
                    .write_all(input.as_bytes())
                    .unwrap();
            }
            drop(child.stdin.take());
            let out = child.wait_with_output().expect("kubectl output");
            assert!(
                out.status.success(),
                "kubectl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        })
    };
    let server = start("127.0.0.1:0".parse().unwrap()).await;
    let addr = server.addr;
    let created = run(
        &["apply", "-f", "-"],
        Some("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: in-etcd\ndata:\n  k: v\n"),
    )
    .await
    .unwrap();
    assert_eq!(created, "configmap/in-etcd created\n");
    let direct = etcd.store("").await.unwrap();
    let kv = direct
        .get("/registry/configmaps/default/in-etcd")
        .await
        .unwrap()
        .expect("the configmap is in etcd under its upstream key");
    let stored: serde_json::Value = serde_json::from_slice(&kv.value).unwrap();
    assert_eq!(stored["data"]["k"], "v");
    server.shutdown().await;

    let server = start(addr).await;
    let rv = run(
        &[
            "get",
            "cm",
            "in-etcd",
            "-o",
            "jsonpath={.data.k} {.metadata.resourceVersion}",
        ],
        None,
    )
    .await
    .unwrap();
    assert_eq!(rv, format!("v {}", kv.mod_revision));
    server.shutdown().await;
}
