//! Tests of saved last good pods: the record format (pure), the store on a temp dir, and the
//! scanner across simulated restarts (a new source on the same manifest and state dirs).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::last_good::{
    FORMAT_VERSION, LastGoodError, LastGoodStore, Record, decode, encode, record_name,
};
use super::{StaticPodSnapshot, StaticPodSource, parse_manifest};

const NODE: &str = "node1";

fn pod_yaml(name: &str, image: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  containers:\n  - name: \
         app\n    image: {image}\n"
    )
}

const BROKEN_YAML: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: [oops\n";

/// `(uid, image)` of every pod in the snapshot.
fn pods(snapshot: &StaticPodSnapshot) -> Vec<(String, String)> {
    snapshot
        .pods
        .iter()
        .map(|(uid, p)| {
            let image = p.spec.as_ref().unwrap().containers[0]
                .image
                .clone()
                .unwrap();
            (uid.clone(), image)
        })
        .collect()
}

fn record_for(manifest: &Path, image: &str) -> Record {
    let pod = parse_manifest(manifest, pod_yaml("web", image).as_bytes(), NODE).unwrap();
    Record {
        version: FORMAT_VERSION,
        manifest: manifest.to_path_buf(),
        node_name: NODE.into(),
        pod,
    }
}

// ---- the record format ----

#[test]
fn record_names_are_fixed_length_safe_and_distinct() {
    let paths = [
        "/etc/kwk/manifests/a.yaml",
        "/etc/kwk/manifests/a_yaml",
        "/etc/kwk/manifests/A.yaml",
        "/etc/kwk/manifests/a.yaml ",
        "/etc/kwk/manifests/../manifests/a.yaml",
        "/etc/kwk/manifests/with/slash",
        "/etc/kwk/manifests/new\nline",
        "/etc/kwk/manifests/ünï cödé.yaml",
        "/other/a.yaml",
    ];
    let names: Vec<String> = paths.iter().map(|p| record_name(Path::new(p))).collect();
    for name in &names {
        assert_eq!(name.len(), 64 + ".json".len(), "{name}");
        assert!(
            name.strip_suffix(".json")
                .unwrap()
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
            "{name}"
        );
    }
    let mut distinct = names.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), names.len(), "{names:?}");
    assert_eq!(
        record_name(Path::new(paths[0])),
        names[0],
        "the name must be stable"
    );
}

#[test]
fn decode_accepts_only_well_formed_records_of_this_version() {
    let manifest = Path::new("/m/web.yaml");
    let good = record_for(manifest, "img:1");
    let good_file = PathBuf::from("/state").join(record_name(manifest));
    let good_bytes = encode(&good, &good_file).unwrap();
    let text = String::from_utf8(good_bytes.clone()).unwrap();
    let mut no_uid = good.clone();
    no_uid.pod.metadata.uid = None;
    let no_uid_bytes = encode(&no_uid, &good_file).unwrap();

    type Check = fn(&Result<Record, LastGoodError>) -> bool;
    let cases: Vec<(&str, PathBuf, Vec<u8>, Check)> = vec![
        ("round trip", good_file.clone(), good_bytes.clone(), |r| {
            r.as_ref().is_ok_and(|r| r.uid().len() == 32)
        }),
        ("empty file", good_file.clone(), Vec::new(), |r| {
            matches!(r, Err(LastGoodError::Corrupt { .. }))
        }),
        (
            "truncated",
            good_file.clone(),
            good_bytes[..good_bytes.len() / 2].to_vec(),
            |r| matches!(r, Err(LastGoodError::Corrupt { .. })),
        ),
        (
            "not JSON",
            good_file.clone(),
            b"\x00\xff garbage".to_vec(),
            |r| matches!(r, Err(LastGoodError::Corrupt { .. })),
        ),
        (
            "future version",
            good_file.clone(),
            text.replacen("\"version\": 1", "\"version\": 2", 1)
                .into_bytes(),
            |r| matches!(r, Err(LastGoodError::UnsupportedVersion { version: 2, .. })),
        ),
        (
            "pod missing",
            good_file.clone(),
            br#"{"version": 1, "manifest": "/m/web.yaml", "nodeName": "node1"}"#.to_vec(),
            |r| matches!(r, Err(LastGoodError::Corrupt { .. })),
        ),
        (
            "named after another manifest",
            PathBuf::from("/state").join(record_name(Path::new("/m/other.yaml"))),
            good_bytes.clone(),
            |r| matches!(r, Err(LastGoodError::WrongName { .. })),
        ),
        ("pod without UID", good_file.clone(), no_uid_bytes, |r| {
            matches!(r, Err(LastGoodError::NoUid { .. }))
        }),
    ];
    for (what, file, bytes, check) in cases {
        let result = decode(&file, &bytes);
        assert!(check(&result), "{what}: {result:?}");
    }
    assert_eq!(decode(&good_file, &good_bytes).unwrap(), good);
}

// ---- the store on a temp dir ----

#[test]
fn store_saves_atomically_loads_and_removes() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("state").join("static-pods");
    let mut store = LastGoodStore::new(dir.clone());
    assert!(store.load().records.is_empty(), "a missing dir is empty");

    let manifest = Path::new("/m/web.yaml");
    let record = record_for(manifest, "img:1");
    store.save(manifest, NODE, &record.pod).unwrap();
    let file = dir.join(record_name(manifest));
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&file), 0o600);
    let names: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "no temp file left: {names:?}");

    // Leftovers of an interrupted save go; files that are not records stay untouched.
    let leftover = dir.join(format!(".{}.tmp", record_name(Path::new("/m/x"))));
    fs::write(&leftover, "half").unwrap();
    fs::write(dir.join("README"), "not a record").unwrap();
    let loaded = LastGoodStore::new(dir.clone()).load();
    assert_eq!(loaded.records, vec![record.clone()]);
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    assert!(!leftover.exists());
    assert!(dir.join("README").exists());

    // A second save replaces the record.
    let newer = record_for(manifest, "img:2");
    store.save(manifest, NODE, &newer.pod).unwrap();
    assert_eq!(store.load().records, vec![newer]);
    assert_eq!(store.writes(), 2);

    store.remove(manifest).unwrap();
    assert!(!file.exists());
    store.remove(manifest).unwrap();
    assert!(store.load().records.is_empty());
}

#[test]
fn store_reports_unwritable_and_unreadable_records() {
    let root = tempfile::tempdir().unwrap();
    let blocker = root.path().join("not-a-dir");
    fs::write(&blocker, "").unwrap();
    let manifest = Path::new("/m/web.yaml");
    let record = record_for(manifest, "img:1");
    let mut store = LastGoodStore::new(blocker.join("static-pods"));
    let error = store.save(manifest, NODE, &record.pod).unwrap_err();
    assert!(matches!(error, LastGoodError::Io { .. }), "{error}");

    // A corrupt record is reported, the good one next to it still loads.
    let dir = root.path().join("static-pods");
    let mut store = LastGoodStore::new(dir.clone());
    store.save(manifest, NODE, &record.pod).unwrap();
    fs::write(dir.join(record_name(Path::new("/m/bad.yaml"))), "{\"vers").unwrap();
    let loaded = store.load();
    assert_eq!(loaded.records, vec![record]);
    assert_eq!(loaded.errors.len(), 1);
    assert!(loaded.errors[0].to_string().contains("not a valid record"));
}

// ---- the scanner across restarts ----

struct Dirs {
    _root: tempfile::TempDir,
    manifests: PathBuf,
    state: PathBuf,
}

impl Dirs {
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        let manifests = root.path().join("manifests");
        fs::create_dir(&manifests).unwrap();
        Self {
            manifests,
            state: root.path().join("root").join("static-pods"),
            _root: root,
        }
    }

    /// A fresh source, as a newly started kwk-node builds it.
    fn start(&self) -> StaticPodSource {
        StaticPodSource::new(
            self.manifests.clone(),
            NODE.into(),
            Duration::from_secs(3600),
        )
        .with_state_dir(self.state.clone())
    }

    fn write(&self, name: &str, content: &str) -> PathBuf {
        let path = self.manifests.join(name);
        fs::write(&path, content).unwrap();
        path
    }

    fn record(&self, manifest: &Path) -> PathBuf {
        self.state.join(record_name(manifest))
    }

    fn records(&self) -> usize {
        fs::read_dir(&self.state).map_or(0, Iterator::count)
    }
}

#[test]
fn invalid_manifest_at_start_offers_the_saved_pod_until_fixed_or_deleted() {
    let dirs = Dirs::new();
    let web = dirs.write("web.yaml", &pod_yaml("web", "img:1"));
    let mut first = dirs.start();
    let good = first.scan_once();
    assert_eq!(first.scanner_mut().writes(), 1);
    dirs.write("web.yaml", BROKEN_YAML);
    assert_eq!(pods(&first.scan_once()), pods(&good));
    assert_eq!(
        first.scanner_mut().writes(),
        1,
        "a broken edit changes no record"
    );
    drop(first);

    // Restart while broken: the same pod (same UID) is offered, and the error stays visible.
    let mut second = dirs.start();
    let restarted = second.scan_once();
    assert_eq!(pods(&restarted), pods(&good));
    let error = &restarted.errors[&web];
    assert!(error.contains("invalid YAML"), "{error}");
    assert!(error.contains("keeping the last valid version"), "{error}");
    assert_eq!(second.scanner_mut().writes(), 0);
    // Later scans keep it (from memory now).
    assert_eq!(pods(&second.scan_once()), pods(&good));

    // Fixed: the new content wins and is saved.
    dirs.write("web.yaml", &pod_yaml("web", "img:2"));
    let fixed = second.scan_once();
    assert_eq!(fixed.pods.len(), 1);
    assert_eq!(pods(&fixed)[0].1, "img:2");
    assert!(fixed.errors.is_empty(), "{:?}", fixed.errors);
    assert_eq!(second.scanner_mut().writes(), 1);
    dirs.write("web.yaml", BROKEN_YAML);
    second.scan_once();
    drop(second);
    let mut third = dirs.start();
    assert_eq!(pods(&third.scan_once()), pods(&fixed), "the fix was saved");

    // Deleted (while broken): the pod goes and so does the record.
    fs::remove_file(&web).unwrap();
    let gone = third.scan_once();
    assert!(gone.pods.is_empty());
    assert!(!dirs.record(&web).exists());
    dirs.write("web.yaml", BROKEN_YAML);
    assert!(
        dirs.start().scan_once().pods.is_empty(),
        "nothing to restore"
    );
}

#[test]
fn records_are_written_only_when_the_accepted_pod_changes() {
    let dirs = Dirs::new();
    let web = dirs.write("web.yaml", &pod_yaml("web", "img:1"));
    dirs.write("db.yaml", &pod_yaml("db", "img:1"));
    let mut src = dirs.start();
    src.scan_once();
    assert_eq!(src.scanner_mut().writes(), 2);
    src.scan_once();
    // Rewritten with the same content (new mtime, re-read): same pod, no write.
    fs::write(&web, pod_yaml("web", "img:1")).unwrap();
    src.scan_once();
    assert_eq!(src.scanner_mut().writes(), 2);
    fs::write(&web, pod_yaml("web", "img:2")).unwrap();
    src.scan_once();
    assert_eq!(src.scanner_mut().writes(), 3);
    assert_eq!(dirs.records(), 2);

    // A restart with valid, unchanged files writes nothing.
    let mut restarted = dirs.start();
    restarted.scan_once();
    assert_eq!(restarted.scanner_mut().writes(), 0);
}

/// What a restart sees, after a first kwk-node saved `web.yaml` (image `img:1`).
#[derive(Debug, Clone, Copy)]
enum AtRestart {
    /// The file is broken.
    Broken,
    /// The file is valid, with another image.
    Edited,
    /// The file was deleted while kwk-node was down.
    Deleted,
    /// The file is broken and its record corrupt.
    BrokenCorruptRecord,
    /// The file is broken and the record was saved for another node name.
    BrokenOtherNode,
    /// The file is broken and the directory cannot be listed (a file in its place).
    Unlistable,
    /// The manifest directory is gone.
    DirGone,
}

#[test]
fn what_a_restart_offers() {
    // (situation, image offered, record left afterwards)
    let cases = [
        (AtRestart::Broken, Some("img:1"), true),
        (AtRestart::Edited, Some("img:9"), true),
        (AtRestart::Deleted, None, false),
        (AtRestart::BrokenCorruptRecord, None, true),
        (AtRestart::BrokenOtherNode, None, true),
        (AtRestart::Unlistable, Some("img:1"), true),
        (AtRestart::DirGone, None, false),
    ];
    for (situation, offered, record_left) in cases {
        let dirs = Dirs::new();
        let web = dirs.write("web.yaml", &pod_yaml("web", "img:1"));
        let before = dirs.start().scan_once();
        let record = dirs.record(&web);
        match situation {
            AtRestart::Broken => {
                dirs.write("web.yaml", BROKEN_YAML);
            }
            AtRestart::Edited => {
                dirs.write("web.yaml", &pod_yaml("web", "img:9"));
            }
            AtRestart::Deleted => fs::remove_file(&web).unwrap(),
            AtRestart::BrokenCorruptRecord => {
                dirs.write("web.yaml", BROKEN_YAML);
                fs::write(&record, "{\"version\": 1, \"manif").unwrap();
            }
            AtRestart::BrokenOtherNode => {
                dirs.write("web.yaml", BROKEN_YAML);
                let text = fs::read_to_string(&record).unwrap();
                fs::write(&record, text.replace("\"node1\"", "\"node2\"")).unwrap();
            }
            AtRestart::Unlistable => {
                fs::remove_dir_all(&dirs.manifests).unwrap();
                fs::write(&dirs.manifests, "").unwrap();
            }
            AtRestart::DirGone => fs::remove_dir_all(&dirs.manifests).unwrap(),
        }
        let after = dirs.start().scan_once();
        let images: Vec<String> = pods(&after).into_iter().map(|(_, i)| i).collect();
        assert_eq!(
            images,
            offered.into_iter().map(String::from).collect::<Vec<_>>(),
            "{situation:?}: {after:?}"
        );
        if offered == Some("img:1") {
            assert_eq!(pods(&after), pods(&before), "{situation:?}: same UID");
        }
        assert_eq!(record.exists(), record_left, "{situation:?}");
        if matches!(
            situation,
            AtRestart::Broken | AtRestart::BrokenCorruptRecord
        ) {
            assert!(after.errors.contains_key(&web), "{situation:?}: {after:?}");
        }
    }
}

#[test]
fn an_unwritable_state_dir_harms_no_pod_and_is_retried() {
    let dirs = Dirs::new();
    fs::create_dir_all(dirs.state.parent().unwrap()).unwrap();
    fs::write(&dirs.state, "in the way").unwrap();
    dirs.write("web.yaml", &pod_yaml("web", "img:1"));
    let mut src = dirs.start();
    let snap = src.scan_once();
    assert_eq!(snap.pods.len(), 1);
    assert_eq!(src.scanner_mut().writes(), 0);
    fs::remove_file(&dirs.state).unwrap();
    src.scan_once();
    assert_eq!(src.scanner_mut().writes(), 1, "the failed save is retried");
}

#[test]
fn a_renamed_manifest_moves_its_record() {
    let dirs = Dirs::new();
    let old = dirs.write("web.yaml", &pod_yaml("web", "img:1"));
    let mut src = dirs.start();
    src.scan_once();
    let new = dirs.manifests.join("web-renamed.yaml");
    fs::rename(&old, &new).unwrap();
    src.scan_once();
    assert!(!dirs.record(&old).exists());
    assert!(dirs.record(&new).exists());
    assert_eq!(dirs.records(), 1);
}
