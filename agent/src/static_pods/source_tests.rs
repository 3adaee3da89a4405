//! Tests of the directory scanner (synchronous `scan_once` on a temp dir) and of the running
//! source against real inotify. The inotify tests use real time with generous timeouts and make
//! no timing assertions.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::scan::{format_rfc3339, new_errors};
use super::{StaticPodSnapshot, StaticPodSource};
use crate::labels;

const NODE: &str = "node1";

fn pod_yaml(name: &str, image: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  containers:\n  - name: \
         app\n    image: {image}\n"
    )
}

fn source(dir: &Path) -> StaticPodSource {
    StaticPodSource::new(dir.to_path_buf(), NODE.into(), Duration::from_secs(3600))
}

/// `(name, image)` of every pod in the snapshot, sorted.
fn pods(snapshot: &StaticPodSnapshot) -> Vec<(String, String)> {
    let mut out: Vec<_> = snapshot
        .pods
        .values()
        .map(|p| {
            let image = p.spec.as_ref().unwrap().containers[0]
                .image
                .clone()
                .unwrap();
            (p.metadata.name.clone().unwrap(), image)
        })
        .collect();
    out.sort();
    out
}

fn named(name: &str, image: &str) -> (String, String) {
    (format!("{name}-{NODE}"), image.to_string())
}

fn fixed_clock() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 123_000_000)
}

#[test]
fn rfc3339_formatting() {
    assert_eq!(
        format_rfc3339(SystemTime::UNIX_EPOCH),
        "1970-01-01T00:00:00Z"
    );
    assert_eq!(format_rfc3339(fixed_clock()), "2023-11-14T22:13:20.123Z");
    let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_825_600); // 2000-02-29 12:00
    assert_eq!(format_rfc3339(leap), "2000-02-29T12:00:00Z");
}

#[test]
fn scan_reads_pods_sets_seen_and_rereads_only_changes() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("a.yaml"), pod_yaml("a", "img:1")).unwrap();
    fs::write(dir.path().join("b.json"), r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"b"},"spec":{"containers":[{"name":"c","image":"img:2"}]}}"#).unwrap();
    let mut src = source(dir.path());
    src.scanner_mut().set_clock(fixed_clock);
    let first = src.scan_once();
    assert_eq!(pods(&first), vec![named("a", "img:1"), named("b", "img:2")]);
    assert!(first.errors.is_empty(), "{:?}", first.errors);
    for (uid, pod) in &first.pods {
        let annotations = pod.metadata.annotations.as_ref().unwrap();
        assert_eq!(annotations[labels::CONFIG_SEEN], "2023-11-14T22:13:20.123Z");
        assert_eq!(&annotations[labels::CONFIG_HASH], uid);
    }
    assert_eq!(src.scanner_mut().reads(), 2);

    // Nothing changed: same snapshot, nothing re-read, seen kept even if the clock moved.
    src.scanner_mut().set_clock(SystemTime::now);
    assert_eq!(src.scan_once(), first);
    assert_eq!(src.scanner_mut().reads(), 2);

    // One file changed: only it is re-read; the other pod keeps its seen time.
    fs::write(dir.path().join("a.yaml"), pod_yaml("a", "img:1b")).unwrap();
    let third = src.scan_once();
    assert_eq!(src.scanner_mut().reads(), 3);
    assert_eq!(
        pods(&third),
        vec![named("a", "img:1b"), named("b", "img:2")]
    );
    let b_first = first
        .pods
        .values()
        .find(|p| p.metadata.name.as_deref() == Some("b-node1"));
    let b_third = third
        .pods
        .values()
        .find(|p| p.metadata.name.as_deref() == Some("b-node1"));
    assert_eq!(b_first, b_third);
}

#[test]
fn invalid_edit_keeps_last_good_and_other_pods() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.yaml");
    fs::write(&a, pod_yaml("a", "img:1")).unwrap();
    fs::write(dir.path().join("b.yaml"), pod_yaml("b", "img:2")).unwrap();
    let mut src = source(dir.path());
    let good = src.scan_once();

    fs::write(
        &a,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\nspec:\n  containers:\n  - name: app\n",
    )
    .unwrap();
    let broken = src.scan_once();
    assert_eq!(
        broken.pods, good.pods,
        "last good version of a.yaml must stay"
    );
    let error = &broken.errors[&a];
    assert!(
        error.contains("spec.containers[0].image: Required value"),
        "{error}"
    );
    assert!(error.contains("keeping the last valid version"), "{error}");

    // Fixed: error gone, the new version replaces the old.
    fs::write(&a, pod_yaml("a", "img:3")).unwrap();
    let fixed = src.scan_once();
    assert!(fixed.errors.is_empty());
    assert_eq!(pods(&fixed), vec![named("a", "img:3"), named("b", "img:2")]);

    // Deleted while broken: the pod goes.
    fs::write(&a, "garbage: [").unwrap();
    src.scan_once();
    fs::remove_file(&a).unwrap();
    let gone = src.scan_once();
    assert_eq!(pods(&gone), vec![named("b", "img:2")]);
    assert!(gone.errors.is_empty());
}

#[test]
fn errors_are_reported_once_per_change() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.yaml");
    fs::write(&a, "kind: Pod\n").unwrap();
    let mut src = source(dir.path());
    let empty = StaticPodSnapshot::default();
    let first = src.scan_once();
    assert_eq!(new_errors(&empty, &first).len(), 1);
    let again = src.scan_once();
    assert!(
        new_errors(&first, &again).is_empty(),
        "unchanged error must not be reported again"
    );
    fs::write(&a, "kind: Pod\napiVersion: v2\n").unwrap();
    let changed = src.scan_once();
    let reported = new_errors(&again, &changed);
    assert_eq!(reported.len(), 1);
    assert!(reported[0].1.contains("\"v2\""), "{}", reported[0].1);
}

#[test]
fn new_invalid_file_is_an_error_without_a_pod() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("a.yaml"), pod_yaml("a", "img:1")).unwrap();
    let bad = dir.path().join("bad.yaml");
    fs::write(
        &bad,
        pod_yaml("bad", "img:1").replace("kind: Pod", "kind: Service"),
    )
    .unwrap();
    let snap = source(dir.path()).scan_once();
    assert_eq!(pods(&snap), vec![named("a", "img:1")]);
    assert!(snap.errors[&bad].contains("kind: Unsupported value: \"Service\""));
}

#[test]
fn duplicate_pod_names_keep_the_lexically_first_file() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("b.yaml"), pod_yaml("web", "img:b")).unwrap();
    fs::write(dir.path().join("a.yaml"), pod_yaml("web", "img:a")).unwrap();
    let snap = source(dir.path()).scan_once();
    assert_eq!(pods(&snap), vec![named("web", "img:a")]);
    let error = &snap.errors[&dir.path().join("b.yaml")];
    assert!(
        error.contains("default/web-node1 is already defined by"),
        "{error}"
    );
    assert!(error.contains("a.yaml"), "{error}");
}

#[test]
fn huge_file_is_rejected_unread() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.yaml");
    let mut text = pod_yaml("big", "img:1");
    text.push_str(&"#".repeat(2 * 1024 * 1024));
    fs::write(&big, text).unwrap();
    let mut src = source(dir.path());
    let snap = src.scan_once();
    assert!(snap.pods.is_empty());
    assert!(
        snap.errors[&big].contains("more than the 1048576 bytes"),
        "{}",
        snap.errors[&big]
    );
    assert_eq!(src.scanner_mut().reads(), 0);
}

#[test]
fn editor_and_hidden_files_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("a.yaml"), pod_yaml("a", "img:1")).unwrap();
    for junk in [
        ".a.yaml.swp",
        "a.yaml~",
        "a.yaml.swp",
        "4913",
        "#a.yaml#",
        ".hidden.yaml",
        "x.tmp",
    ] {
        fs::write(dir.path().join(junk), pod_yaml("junk", "img:x")).unwrap();
    }
    fs::create_dir(dir.path().join("sub.yaml")).unwrap();
    let snap = source(dir.path()).scan_once();
    assert_eq!(pods(&snap), vec![named("a", "img:1")]);
    assert!(snap.errors.is_empty(), "{:?}", snap.errors);
}

#[test]
fn missing_directory_is_an_error_then_picked_up() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("manifests");
    let mut src = source(&dir);
    let missing = src.scan_once();
    assert!(missing.pods.is_empty());
    assert!(missing.errors[&dir].contains("does not exist"));
    assert!(!dir.exists(), "the source must not create the directory");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("a.yaml"), pod_yaml("a", "img:1")).unwrap();
    let found = src.scan_once();
    assert_eq!(pods(&found), vec![named("a", "img:1")]);
    assert!(found.errors.is_empty());
}

// ---- the running source, real inotify ----

struct Running {
    rx: watch::Receiver<StaticPodSnapshot>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    fn start(dir: &Path, rescan: Duration) -> Self {
        let (tx, rx) = watch::channel(StaticPodSnapshot::default());
        let cancel = CancellationToken::new();
        let src = StaticPodSource::new(dir.to_path_buf(), NODE.into(), rescan);
        let task = tokio::spawn(src.run(tx, cancel.clone()));
        Self { rx, cancel, task }
    }

    /// Waits until the published snapshot satisfies `pred`; panics with the last one after 10 s.
    async fn until(
        &mut self,
        what: &str,
        pred: impl Fn(&StaticPodSnapshot) -> bool,
    ) -> StaticPodSnapshot {
        let wait = async { self.rx.wait_for(|s| pred(s)).await.map(|s| s.clone()) };
        if let Ok(Ok(snapshot)) = tokio::time::timeout(Duration::from_secs(10), wait).await {
            return snapshot;
        }
        let last = pods(&self.rx.borrow());
        panic!("timed out waiting for {what}; last snapshot: {last:?}")
    }

    async fn stop(self) {
        self.cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .unwrap()
            .unwrap();
    }
}

fn has(name: &str, image: &str) -> impl Fn(&StaticPodSnapshot) -> bool {
    let want = named(name, image);
    move |s| pods(s).contains(&want)
}

fn write_atomically(dir: &Path, name: &str, content: &str) {
    let tmp: PathBuf = dir.join(format!(".{name}.tmp"));
    fs::write(&tmp, content).unwrap();
    fs::rename(&tmp, dir.join(name)).unwrap();
}

#[tokio::test]
async fn inotify_create_edit_delete() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("pre.yaml"), pod_yaml("pre", "img:0")).unwrap();
    let mut run = Running::start(dir.path(), Duration::from_secs(3600));
    // Written before the watcher started: found by the first scan.
    run.until("pre-existing file", has("pre", "img:0")).await;

    fs::write(dir.path().join("a.yaml"), pod_yaml("a", "img:1")).unwrap();
    let first = run.until("created file", has("a", "img:1")).await;
    let old_uid = first
        .pods
        .iter()
        .find(|(_, p)| p.metadata.name.as_deref() == Some("a-node1"))
        .unwrap()
        .0
        .clone();

    write_atomically(dir.path(), "a.yaml", &pod_yaml("a", "img:2"));
    let edited = run.until("atomic rename edit", has("a", "img:2")).await;
    assert!(
        !edited.pods.contains_key(&old_uid),
        "the old version must be gone"
    );
    assert_eq!(
        pods(&edited),
        vec![named("a", "img:2"), named("pre", "img:0")]
    );

    fs::remove_file(dir.path().join("a.yaml")).unwrap();
    let gone = run.until("deleted file", |s| s.pods.len() == 1).await;
    assert_eq!(pods(&gone), vec![named("pre", "img:0")]);
    run.stop().await;
}

#[tokio::test]
async fn inotify_vim_style_save_ends_with_one_version() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("web.yaml");
    fs::write(&file, pod_yaml("web", "img:1")).unwrap();
    let mut run = Running::start(dir.path(), Duration::from_secs(3600));
    run.until("initial", has("web", "img:1")).await;

    // vim with backupcopy=no: probe file, swap file, backup by rename, write new, drop backup.
    let probe = dir.path().join("4913");
    fs::write(&probe, "").unwrap();
    fs::remove_file(&probe).unwrap();
    fs::write(dir.path().join(".web.yaml.swp"), "swap").unwrap();
    fs::rename(&file, dir.path().join("web.yaml~")).unwrap();
    fs::write(&file, pod_yaml("web", "img:2")).unwrap();
    fs::remove_file(dir.path().join("web.yaml~")).unwrap();
    fs::remove_file(dir.path().join(".web.yaml.swp")).unwrap();

    let done = run.until("saved version", has("web", "img:2")).await;
    assert_eq!(pods(&done), vec![named("web", "img:2")]);
    assert!(done.errors.is_empty(), "{:?}", done.errors);
    run.stop().await;
}

#[tokio::test]
async fn inotify_invalid_file_keeps_others() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("a.yaml"), pod_yaml("a", "img:1")).unwrap();
    fs::write(dir.path().join("b.yaml"), pod_yaml("b", "img:1")).unwrap();
    let mut run = Running::start(dir.path(), Duration::from_secs(3600));
    run.until("both", |s| s.pods.len() == 2).await;
    fs::write(
        dir.path().join("a.yaml"),
        "kind: Pod\napiVersion: v1\nspec: [",
    )
    .unwrap();
    let broken = run.until("error recorded", |s| !s.errors.is_empty()).await;
    assert_eq!(
        pods(&broken),
        vec![named("a", "img:1"), named("b", "img:1")]
    );
    run.stop().await;
}

#[tokio::test]
async fn inotify_missing_directory_created_later_and_recreated() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("manifests");
    let mut run = Running::start(&dir, Duration::from_secs(3600));
    run.until("missing dir reported", |s| s.errors.contains_key(&dir))
        .await;

    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("a.yaml"), pod_yaml("a", "img:1")).unwrap();
    run.until("dir created", has("a", "img:1")).await;

    fs::remove_dir_all(&dir).unwrap();
    run.until("dir deleted", |s| s.pods.is_empty()).await;

    // Recreated by rename (as a tool swapping in a prepared directory would).
    let staged = root.path().join("staged");
    fs::create_dir(&staged).unwrap();
    fs::write(staged.join("b.yaml"), pod_yaml("b", "img:1")).unwrap();
    fs::rename(&staged, &dir).unwrap();
    run.until("dir recreated", has("b", "img:1")).await;
    fs::write(dir.join("c.yaml"), pod_yaml("c", "img:1")).unwrap();
    run.until("new dir watched", has("c", "img:1")).await;
    run.stop().await;
}

#[tokio::test]
async fn periodic_rescan_catches_what_inotify_cannot_see() {
    // A symlinked manifest whose target changes: no event in the watched directory.
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("real.yaml");
    fs::write(&target, pod_yaml("linked", "img:1")).unwrap();
    std::os::unix::fs::symlink(&target, dir.path().join("linked.yaml")).unwrap();
    let mut run = Running::start(dir.path(), Duration::from_millis(200));
    run.until("symlinked manifest", has("linked", "img:1"))
        .await;
    fs::write(&target, pod_yaml("linked", "img:2")).unwrap();
    run.until("target change seen by rescan", has("linked", "img:2"))
        .await;
    run.stop().await;
}
