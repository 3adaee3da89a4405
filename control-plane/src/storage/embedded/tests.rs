//! The embedded store against the conformance suite, plus what only it promises: reopen,
//! group commit, slow watchers, automatic compaction with a bounded file.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;

use super::{EmbeddedOptions, EmbeddedStore};
use crate::storage::conformance::next_events;
use crate::storage::{ListOptions, Store, StoreError};

async fn setup() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default())
        .await
        .unwrap();
    (Arc::new(store), dir)
}

mod conformance {
    use super::setup;
    crate::store_conformance_tests!(setup);
}

#[tokio::test]
async fn reopen_keeps_values_history_and_revision() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default())
        .await
        .unwrap();
    let a = store.create("/registry/a", b"1".to_vec()).await.unwrap();
    let a2 = store
        .update("/registry/a", b"2".to_vec(), a.mod_revision)
        .await
        .unwrap();
    let b = store.create("/registry/b", b"1".to_vec()).await.unwrap();
    store.compact(a2.mod_revision).await.unwrap();
    store.close().await.unwrap();

    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default())
        .await
        .unwrap();
    assert_eq!(store.current_revision().await.unwrap(), b.mod_revision);
    assert_eq!(store.compacted_revision().await.unwrap(), a2.mod_revision);
    assert_eq!(store.get("/registry/a").await.unwrap(), Some(a2.clone()));
    let mut w = store
        .watch("/registry/", a2.mod_revision - 1)
        .await
        .unwrap();
    let events = next_events(&mut w, 2).await;
    assert_eq!(events[0].kv, a2);
    assert_eq!(events[1].kv, b);
    let c = store.create("/registry/c", b"1".to_vec()).await.unwrap();
    assert_eq!(c.mod_revision, b.mod_revision + 1, "the revision continues");
    drop(w);
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_commits() {
    let (dir, store) = {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default())
            .await
            .unwrap();
        (dir, Arc::new(store))
    };
    let tasks: Vec<_> = (0..50)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..20 {
                    store
                        .create(&format!("/registry/x/{w}-{i}"), vec![0; 2048])
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let stats = store.stats();
    assert_eq!(stats.writes, 1000);
    assert!(
        stats.commits < 500,
        "50 concurrent writers should share commits: {stats:?}"
    );
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_watcher_is_closed_without_blocking_writers() {
    let dir = tempfile::tempdir().unwrap();
    let options = EmbeddedOptions {
        watch_buffer: 16,
        ..EmbeddedOptions::default()
    };
    let store = EmbeddedStore::open(dir.path(), options).await.unwrap();
    let rev = store.current_revision().await.unwrap();
    let mut slow = store.watch("/registry/", rev).await.unwrap();
    // Poll once so the watcher replays (nothing) and goes live, then stop reading.
    let nothing = tokio::time::timeout(Duration::from_millis(200), slow.next()).await;
    assert!(nothing.is_err(), "no event yet: {nothing:?}");
    let writes = tokio::time::timeout(Duration::from_secs(20), async {
        for i in 0..200 {
            store
                .create(&format!("/registry/k{i}"), vec![1; 100])
                .await
                .unwrap();
        }
    });
    writes.await.expect("writers must not wait for a watcher");
    let mut items = Vec::new();
    while let Some(item) = slow.next().await {
        items.push(item);
    }
    assert_eq!(items.last(), Some(&Err(StoreError::WatcherTooSlow)));
    assert!(items.len() <= 17, "at most the buffer, then the error");
    // A fresh watch from the same point replays everything from history.
    let mut again = store.watch("/registry/", rev).await.unwrap();
    assert_eq!(next_events(&mut again, 200).await.len(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_started_during_writes_switches_from_history_to_live_without_gap() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        EmbeddedStore::open(dir.path(), EmbeddedOptions::default())
            .await
            .unwrap(),
    );
    let start = store.current_revision().await.unwrap();
    // Enough history for several replay chunks, then writes racing the switch to live.
    for i in 0..2500 {
        store
            .create(&format!("/registry/h/{i:05}"), vec![2; 64])
            .await
            .unwrap();
    }
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..250 {
                    store
                        .create(&format!("/registry/h/live-{w}-{i}"), vec![3; 64])
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    let mut watches = Vec::new();
    for _ in 0..5 {
        watches.push(store.watch("/registry/h/", start).await.unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for w in writers {
        w.await.unwrap();
    }
    let end = store.current_revision().await.unwrap();
    let total = usize::try_from(end - start).unwrap();
    assert_eq!(total, 3500);
    for mut w in watches {
        let revs: Vec<_> = next_events(&mut w, total)
            .await
            .iter()
            .map(|e| e.kv.mod_revision)
            .collect();
        assert_eq!(revs, ((start + 1)..=end).collect::<Vec<_>>());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automatic_compaction_bounds_history_and_file_size() {
    let dir = tempfile::tempdir().unwrap();
    let options = EmbeddedOptions {
        compaction_interval: None,
        max_history: 500,
        purge_chunk: 100,
        ..EmbeddedOptions::default()
    };
    let store = EmbeddedStore::open(dir.path(), options).await.unwrap();
    let mut revs = std::collections::HashMap::new();
    for i in 0..200 {
        let kv = store
            .create(&format!("/registry/churn/{i:03}"), vec![7; 2048])
            .await
            .unwrap();
        revs.insert(kv.key, kv.mod_revision);
    }
    let mut sizes = Vec::new();
    for round in 0..12 {
        for (key, rev) in revs.iter_mut() {
            let kv = store.update(key, vec![round; 2048], *rev).await.unwrap();
            *rev = kv.mod_revision;
        }
        sizes.push(std::fs::metadata(store.path()).unwrap().len());
    }
    let current = store.current_revision().await.unwrap();
    let compacted = store.compacted_revision().await.unwrap();
    assert!(
        current - compacted <= 550,
        "history kept: {current} - {compacted}"
    );
    assert!(store.stats().purged_rows >= 1500, "{:?}", store.stats());
    let err = store
        .list(&ListOptions {
            prefix: "/registry/churn/".into(),
            revision: Some(compacted - 1),
            ..ListOptions::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Compacted { .. }));
    // Freed pages are reused: the file stops growing once history is at its bound.
    let settled = sizes[5];
    assert!(
        sizes[5..].iter().all(|s| *s <= settled + settled / 4),
        "file keeps growing: {sizes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_by_time_keeps_one_to_two_intervals() {
    let dir = tempfile::tempdir().unwrap();
    let options = EmbeddedOptions {
        compaction_interval: Some(Duration::from_millis(300)),
        ..EmbeddedOptions::default()
    };
    let store = EmbeddedStore::open(dir.path(), options).await.unwrap();
    let first = store.create("/registry/t/a", vec![]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(350)).await;
    // First tick: compacts to the revision at open (nothing), remembers this one.
    let second = store.create("/registry/t/b", vec![]).await.unwrap();
    assert!(store.compacted_revision().await.unwrap() < first.mod_revision);
    tokio::time::sleep(Duration::from_millis(350)).await;
    // Second tick: compacts to the revision of the first tick.
    store.create("/registry/t/c", vec![]).await.unwrap();
    let compacted = store.compacted_revision().await.unwrap();
    assert!(
        compacted >= first.mod_revision && compacted <= second.mod_revision,
        "compacted {compacted}, first {}, second {}",
        first.mod_revision,
        second.mod_revision
    );
}
