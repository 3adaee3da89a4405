//! `eviction-bench`: time from memory pressure onset to the eviction decision.
//!
//! Each run starts kwk-node's eviction manager (the real executor loop, with the host's
//! kernel notifier — a memcg threshold on cgroup v1, a PSI trigger on v2 — and its 250 ms
//! `memory.available` watch) with the `memory.available` threshold 100 MiB below its value
//! now (capacity − the root cgroup's working set, as upstream), and one BestEffort pod in its
//! status store. Then a process in its own memory cgroup allocates 200 MiB, 4 MiB at a time,
//! while the bench samples the signal every 2 ms. Printed, p50 and max over the runs: from the
//! hog's start, and from the onset (the first sample below the threshold) to the eviction
//! arriving at the pod manager's channel.
//! The same is then measured with the notifier and watch off, i.e. upstream's 10 s
//! housekeeping poll.
//!
//! Run: `cargo build --release -p kwk-agent --bin eviction-bench && sudo
//! target/release/eviction-bench [--reps N] [--poll-reps N]` (root: it makes a cgroup). Needs
//! `python3` for the hog and 1 GiB free.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use kwk_agent::cgroups::node_memory::NodeMemorySource;
use kwk_agent::eviction::PodUsage;
use kwk_agent::eviction::manager::{EvictionManager, MONITORING_PERIOD};
use kwk_agent::eviction::notify::{Mechanism, MemoryNotifier};
use kwk_agent::eviction::observe::{NodeObserver, UsageSource};
use kwk_agent::eviction::signals::{Amount, EvictionConfig, Signal, Threshold};
use kwk_agent::pod::store::StatusStore;
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;

const MI: u64 = 1 << 20;
const HOG_MIB: u64 = 200;
const MARGIN_MIB: u64 = 100;
const CGROUP_MOUNT: &str = "/sys/fs/cgroup";

/// The one pod's usage: the hog's.
struct FixedUsage;

impl UsageSource for FixedUsage {
    async fn pod_usage(&self) -> BTreeMap<String, PodUsage> {
        BTreeMap::from([(
            "hog".to_string(),
            PodUsage {
                memory: Some(HOG_MIB * MI),
                ..PodUsage::default()
            },
        )])
    }
}

/// The `memory.available` signal now, as kwk-node reads it.
fn mem_available() -> anyhow::Result<u64> {
    NodeMemorySource::detect(Path::new(CGROUP_MOUNT))
        .read()
        .map(|m| m.available())
        .context("cannot read the node's memory figures")
}

struct Sample {
    from_start: Duration,
    from_onset: Duration,
}

async fn run_once(notify: bool, cgroup: &Path) -> anyhow::Result<Sample> {
    let threshold = mem_available()?.saturating_sub(MARGIN_MIB * MI);
    let config = EvictionConfig {
        thresholds: vec![Threshold {
            signal: Signal::MemoryAvailable,
            value: Amount::Quantity(threshold),
            grace_period: Duration::ZERO,
            min_reclaim: None,
        }],
        max_pod_grace_period_seconds: 0,
        pressure_transition_period: Duration::from_secs(300),
    };
    let store = StatusStore::default();
    let mut pod = Pod::default();
    pod.metadata.uid = Some("hog".into());
    pod.metadata.name = Some("hog".into());
    store.set(
        &pod,
        PodStatus {
            phase: Some("Running".into()),
            ..PodStatus::default()
        },
    );
    let wake = Arc::new(Notify::new());
    let notifier = if notify {
        // The hog's cgroup stands for kubepods.
        let pods = cgroup
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("kubepods");
        Mechanism::detect(Path::new(CGROUP_MOUNT), pods).map(|m| {
            let memory = NodeMemorySource::detect(Path::new(CGROUP_MOUNT));
            MemoryNotifier::new(m, memory, wake.clone())
        })
    } else {
        None
    };
    let (evict, mut evictions) = mpsc::channel(1);
    let manager = EvictionManager {
        config,
        observer: NodeObserver {
            root_dir: PathBuf::from("/"),
            image_fs: None,
            memory: NodeMemorySource::detect(Path::new(CGROUP_MOUNT)),
        },
        usage: FixedUsage,
        store,
        evict,
        pressures: watch::channel(Default::default()).0,
        notifier,
        wake,
        period: MONITORING_PERIOD,
    };
    let cancel = CancellationToken::new();
    let task = tokio::spawn(manager.run(cancel.clone()));
    // The first round arms the notifier; start the hog at a random point of the poll period
    // so the poll-only figures are not biased to a phase.
    let offset = Duration::from_millis(
        200 + u64::from(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)?
                .subsec_millis(),
        ) % 1000,
    );
    tokio::time::sleep(offset).await;
    // Onset: the first moment the signal is below the threshold, sampled every 2 ms while
    // the hog grows (other processes move it too; the signal is what counts).
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        std::thread::spawn(move || {
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                if mem_available().is_ok_and(|a| a < threshold) {
                    return Some(Instant::now());
                }
                #[allow(
                    clippy::disallowed_methods,
                    reason = "a dedicated sampler thread, outside the runtime"
                )]
                std::thread::sleep(Duration::from_millis(2));
            }
            None
        })
    };
    let started = Instant::now();
    let mut hog = Command::new("python3")
        .args([
            "-c",
            "import sys,time\nopen(sys.argv[1]+'/cgroup.procs','w').write('0')\nheld=[]\n\
             for i in range(int(sys.argv[2])//4):\n    held.append(bytearray(4<<20))\n\
             time.sleep(60)",
        ])
        .arg(cgroup)
        .arg(HOG_MIB.to_string())
        .stdout(Stdio::null())
        .spawn()
        .context("starting python3")?;
    let received = tokio::time::timeout(Duration::from_secs(30), evictions.recv()).await;
    let decided = Instant::now();
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let onset = tokio::task::spawn_blocking(move || sampler.join().ok().flatten()).await?;
    let _ = hog.kill();
    let _ = hog.wait();
    cancel.cancel();
    let _ = task.await;
    let Some(onset) = onset else {
        bail!("memory.available never fell below the threshold");
    };
    if !matches!(received, Ok(Some(_))) {
        // The sampler saw a dip the manager's rounds did not: other processes freed memory
        // while the hog grew, so the signal was below the threshold only for a moment.
        bail!("no eviction within 30 s of the hog's start (the signal dipped only briefly)");
    }
    Ok(Sample {
        from_start: decided - started,
        from_onset: decided.saturating_duration_since(onset),
    })
}

fn summary(name: &str, samples: &[Sample]) {
    let stats = |mut v: Vec<Duration>| {
        v.sort();
        let p50 = v[v.len() / 2];
        let max = v[v.len() - 1];
        format!(
            "p50 {:>8.1} ms  max {:>8.1} ms",
            p50.as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3
        )
    };
    println!(
        "{name:<40} n={:<3} from hog start: {}   from onset: {}",
        samples.len(),
        stats(samples.iter().map(|s| s.from_start).collect()),
        stats(samples.iter().map(|s| s.from_onset).collect()),
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut reps = 10usize;
    let mut poll_reps = 3usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--reps" => reps = args.next().context("--reps N")?.parse()?,
            "--poll-reps" => poll_reps = args.next().context("--poll-reps N")?.parse()?,
            other => bail!("unknown argument {other}"),
        }
    }
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    if mem_available()? < 1 << 30 {
        bail!("needs 1 GiB free");
    }
    let mechanism = Mechanism::detect(Path::new(CGROUP_MOUNT), "kubepods");
    println!("kernel notifier: {mechanism:?} (plus the hog's cgroup standing for kubepods)");
    let root = match &mechanism {
        Some(Mechanism::MemcgThreshold(dirs)) => dirs.last().cloned().unwrap_or_default(),
        _ => PathBuf::from("/sys/fs/cgroup"),
    };
    let cgroup = root.join(format!("kwk-eviction-bench-{}", std::process::id()));
    std::fs::create_dir_all(&cgroup).with_context(|| format!("creating {}", cgroup.display()))?;
    let mut notified = Vec::new();
    for _ in 0..reps {
        let sample = match run_once(true, &cgroup).await {
            Ok(sample) => sample,
            Err(err) => {
                // Other processes freeing or taking memory move the signal under the hog.
                eprintln!("run discarded: {err:#}");
                continue;
            }
        };
        eprintln!(
            "notifier: {:.1} ms from onset",
            sample.from_onset.as_secs_f64() * 1e3
        );
        notified.push(sample);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut polled = Vec::new();
    for _ in 0..poll_reps {
        let sample = match run_once(false, &cgroup).await {
            Ok(sample) => sample,
            Err(err) => {
                // Other processes freeing or taking memory move the signal under the hog.
                eprintln!("run discarded: {err:#}");
                continue;
            }
        };
        eprintln!(
            "poll only: {:.1} ms from onset",
            sample.from_onset.as_secs_f64() * 1e3
        );
        polled.push(sample);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for _ in 0..50 {
        if std::fs::remove_dir(&cgroup).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "onset ({HOG_MIB} MiB hog, threshold {MARGIN_MIB} MiB below free) -> eviction decision:"
    );
    if notified.is_empty() {
        bail!("every run was discarded");
    }
    summary("kwk (kernel notifier + 250 ms watch)", &notified);
    if !polled.is_empty() {
        summary("10 s poll only (upstream housekeeping)", &polled);
    }
    Ok(())
}
