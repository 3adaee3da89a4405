//! The storage conformance suite: what every [`Store`] backend must do, as async test cases.
//!
//! Each case takes a fresh, empty store and panics on the first broken expectation. Backends
//! run the whole suite, one `#[tokio::test]` per case, with
//! [`store_conformance_tests!`](crate::store_conformance_tests):
//!
//! ```ignore
//! async fn setup() -> (Arc<dyn Store>, impl Sized) { /* store + whatever keeps it alive */ }
//! kwk_control_plane::store_conformance_tests!(setup);
//! ```
//!
//! Compiled for this crate's tests and with the `conformance` feature (for `kwk-tests`, which
//! runs it against a real etcd). Cases only compare revisions with each other, never with
//! fixed numbers, so a backend may start anywhere.
#![allow(
    clippy::unwrap_used,
    reason = "a test suite: a failed expectation aborts the test with its message"
)]

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;

use super::{
    EventKind, KeyValue, ListOptions, Revision, Store, StoreError, WatchEvent, WatchStream,
};

/// Generates one `#[tokio::test]` per conformance case. `$setup` is an async fn returning
/// `(Arc<dyn Store>, guard)`; the guard (say, an etcd process) lives until the case ends.
#[macro_export]
macro_rules! store_conformance_tests {
    ($setup:path) => {
        $crate::store_conformance_tests!(@cases $setup;
            crud, errors_and_cas, list_paging_at_a_fixed_revision, list_at_an_old_revision,
            list_larger_than_a_grpc_message, future_revisions,
            watch_delivers_every_kind_in_order,
            watch_resumes_from_any_retained_revision, compaction, prefix_isolation,
            concurrent_writers_get_distinct_increasing_revisions,
            watch_under_concurrent_writes_sees_every_event_once_in_order,
        );
    };
    (@cases $setup:path; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let (store, guard) = $setup().await;
                $crate::storage::conformance::$case(store).await;
                drop(guard);
            }
        )*
    };
}

/// How long a case waits for an expected event.
const EVENT_TIMEOUT: Duration = Duration::from_secs(20);

async fn create(store: &dyn Store, key: &str, value: &str) -> KeyValue {
    store.create(key, value.into()).await.unwrap()
}

/// The next `n` events, failing after [`EVENT_TIMEOUT`].
pub async fn next_events(stream: &mut WatchStream, n: usize) -> Vec<WatchEvent> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let item = tokio::time::timeout(EVENT_TIMEOUT, stream.next())
            .await
            .unwrap_or_else(|_| panic!("timed out after {} of {n} events", out.len()))
            .unwrap_or_else(|| panic!("watch ended after {} of {n} events", out.len()));
        out.push(item.unwrap());
    }
    out
}

/// Asserts nothing arrives for a short while.
async fn assert_quiet(stream: &mut WatchStream) {
    if let Ok(item) = tokio::time::timeout(Duration::from_millis(200), stream.next()).await {
        panic!("expected no event, got {item:?}");
    }
}

fn list(prefix: &str) -> ListOptions {
    ListOptions {
        prefix: prefix.into(),
        ..ListOptions::default()
    }
}

fn keys(items: &[KeyValue]) -> Vec<&str> {
    items.iter().map(|kv| kv.key.as_str()).collect()
}

/// Create, get, update, delete, recreate: values and revisions.
pub async fn crud(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let key = "/registry/configmaps/default/a";
    let start = s.current_revision().await.unwrap();
    assert!(start >= 1, "revisions start at 1");
    assert_eq!(s.get(key).await.unwrap(), None);

    let created = create(s, key, "v1").await;
    assert_eq!(created.key, key);
    assert_eq!(created.value, b"v1");
    assert!(created.create_revision > start);
    assert_eq!(created.create_revision, created.mod_revision);
    assert_eq!(s.get(key).await.unwrap(), Some(created.clone()));
    assert_eq!(s.current_revision().await.unwrap(), created.mod_revision);

    let updated = s
        .update(key, b"v2".to_vec(), created.mod_revision)
        .await
        .unwrap();
    assert_eq!(updated.value, b"v2");
    assert_eq!(updated.create_revision, created.create_revision);
    assert!(updated.mod_revision > created.mod_revision);
    assert_eq!(s.get(key).await.unwrap(), Some(updated.clone()));

    let deleted = s.delete(key, None).await.unwrap();
    assert_eq!(deleted.value, b"v2", "delete returns the last value");
    assert_eq!(deleted.create_revision, created.create_revision);
    assert!(deleted.mod_revision > updated.mod_revision);
    assert_eq!(s.get(key).await.unwrap(), None);
    assert_eq!(s.current_revision().await.unwrap(), deleted.mod_revision);

    let again = create(s, key, "v3").await;
    assert!(again.create_revision > deleted.mod_revision, "a new life");
    assert_eq!(s.count("/registry/configmaps/").await.unwrap(), 1);
}

/// AlreadyExists, NotFound, Conflict on update and conditional delete; failures write nothing.
pub async fn errors_and_cas(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let key = "/registry/pods/ns/p";
    let missing = "/registry/pods/ns/missing";
    let v1 = create(s, key, "v1").await;
    let v2 = s
        .update(key, b"v2".to_vec(), v1.mod_revision)
        .await
        .unwrap();
    let rev = s.current_revision().await.unwrap();

    assert_eq!(
        s.create(key, b"x".to_vec()).await,
        Err(StoreError::AlreadyExists(key.into()))
    );
    assert_eq!(
        s.update(missing, b"x".to_vec(), 5).await,
        Err(StoreError::NotFound(missing.into()))
    );
    assert_eq!(
        s.update(missing, b"x".to_vec(), 0).await,
        Err(StoreError::NotFound(missing.into())),
        "expected revision 0 must not create"
    );
    assert_eq!(
        s.delete(missing, None).await,
        Err(StoreError::NotFound(missing.into()))
    );
    assert_eq!(
        s.delete(missing, Some(3)).await,
        Err(StoreError::NotFound(missing.into()))
    );
    let stale = StoreError::Conflict {
        key: key.into(),
        expected: v1.mod_revision,
        actual: v2.mod_revision,
    };
    assert_eq!(
        s.update(key, b"x".to_vec(), v1.mod_revision).await,
        Err(stale.clone())
    );
    assert_eq!(s.delete(key, Some(v1.mod_revision)).await, Err(stale));
    assert_eq!(
        s.current_revision().await.unwrap(),
        rev,
        "failed writes take no revision"
    );
    assert_eq!(s.get(key).await.unwrap(), Some(v2.clone()));

    let deleted = s.delete(key, Some(v2.mod_revision)).await.unwrap();
    assert_eq!(deleted.value, b"v2");
    assert_eq!(s.get(key).await.unwrap(), None);
}

/// Pages with `limit` + `start_after` at the first page's revision see one consistent
/// snapshot, whatever is written between pages.
pub async fn list_paging_at_a_fixed_revision(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let prefix = "/registry/pods/paging/";
    let mut originals = BTreeMap::new();
    for i in 0..25 {
        let kv = create(s, &format!("{prefix}p{i:02}"), &format!("v{i}")).await;
        originals.insert(kv.key.clone(), kv);
    }
    create(s, "/registry/pods/pagingx", "outside").await;
    create(s, "/registry/pods/pagin", "outside").await;
    assert_eq!(s.count(prefix).await.unwrap(), 25);

    let first = s
        .list(&ListOptions {
            limit: Some(7),
            ..list(prefix)
        })
        .await
        .unwrap();
    assert_eq!(first.items.len(), 7);
    assert!(first.more);
    let at = first.revision;
    assert_eq!(at, s.current_revision().await.unwrap());

    // Writes between pages: later pages must not see them.
    let p10 = &originals[&format!("{prefix}p10")];
    s.update(&p10.key, b"changed".to_vec(), p10.mod_revision)
        .await
        .unwrap();
    s.delete(&format!("{prefix}p20"), None).await.unwrap();
    create(s, &format!("{prefix}p15a"), "new").await;

    let mut seen = first.items.clone();
    let mut pages = vec![(first.items.len(), first.more)];
    let mut last = first.items.last().unwrap().key.clone();
    loop {
        let page = s
            .list(&ListOptions {
                limit: Some(7),
                start_after: Some(last.clone()),
                revision: Some(at),
                ..list(prefix)
            })
            .await
            .unwrap();
        assert_eq!(page.revision, at);
        pages.push((page.items.len(), page.more));
        seen.extend(page.items.iter().cloned());
        if !page.more {
            break;
        }
        last = page.items.last().unwrap().key.clone();
    }
    assert_eq!(pages, [(7, true), (7, true), (7, true), (4, false)]);
    assert_eq!(seen, originals.values().cloned().collect::<Vec<_>>());

    // And now, the current state.
    let now = s.list(&list(prefix)).await.unwrap();
    assert_eq!(now.items.len(), 25);
    assert!(!now.more);
    assert!(now.items.iter().any(|kv| kv.key.ends_with("p15a")));
    assert!(!now.items.iter().any(|kv| kv.key.ends_with("p20")));
    // A limit that is exactly the number of keys: no more.
    let exact = s
        .list(&ListOptions {
            limit: Some(25),
            ..list(prefix)
        })
        .await
        .unwrap();
    assert_eq!(exact.items.len(), 25);
    assert!(!exact.more);
}

/// A list at a retained older revision shows the keys as they were, with their revisions.
pub async fn list_at_an_old_revision(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let prefix = "/registry/secrets/old/";
    let a = create(s, &format!("{prefix}a"), "a1").await;
    let b = create(s, &format!("{prefix}b"), "b1").await;
    let c = create(s, &format!("{prefix}c"), "c1").await;
    let at = s.current_revision().await.unwrap();

    s.update(&a.key, b"a2".to_vec(), a.mod_revision)
        .await
        .unwrap();
    s.delete(&b.key, None).await.unwrap();
    create(s, &format!("{prefix}d"), "d1").await;
    s.delete(&c.key, None).await.unwrap();
    create(s, &format!("{prefix}c"), "c2").await;
    let e = create(s, &format!("{prefix}e"), "e1").await;
    s.delete(&e.key, None).await.unwrap();

    let old = s
        .list(&ListOptions {
            revision: Some(at),
            ..list(prefix)
        })
        .await
        .unwrap();
    assert_eq!(old.revision, at);
    assert_eq!(old.items, vec![a.clone(), b.clone(), c.clone()]);
    assert!(!old.more);

    let page = s
        .list(&ListOptions {
            revision: Some(at),
            limit: Some(2),
            ..list(prefix)
        })
        .await
        .unwrap();
    assert_eq!(page.items, vec![a.clone(), b.clone()]);
    assert!(page.more);
    let page = s
        .list(&ListOptions {
            revision: Some(at),
            start_after: Some(a.key.clone()),
            ..list(prefix)
        })
        .await
        .unwrap();
    assert_eq!(page.items, vec![b, c]);

    let now = s.list(&list(prefix)).await.unwrap();
    assert_eq!(
        keys(&now.items),
        [
            format!("{prefix}a"),
            format!("{prefix}c"),
            format!("{prefix}d")
        ]
    );
    assert_eq!(now.items[0].value, b"a2");
    assert_eq!(now.items[1].value, b"c2");
}

/// A list answer bigger than gRPC's default 4 MiB message limit (a LIST of many pods is one
/// message from etcd).
pub async fn list_larger_than_a_grpc_message(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let prefix = "/registry/configmaps/big/";
    for i in 0..24 {
        s.create(&format!("{prefix}c{i:02}"), vec![b'b'; 256 << 10])
            .await
            .unwrap();
    }
    let all = s.list(&list(prefix)).await.unwrap();
    assert_eq!(all.items.len(), 24);
    assert!(all.items.iter().all(|kv| kv.value.len() == 256 << 10));
}

/// Reads and watches past the current revision are refused.
pub async fn future_revisions(store: Arc<dyn Store>) {
    let s = store.as_ref();
    create(s, "/registry/leases/x", "v").await;
    let current = s.current_revision().await.unwrap();
    let err = s
        .list(&ListOptions {
            revision: Some(current + 10),
            ..list("/registry/")
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::FutureRevision { requested, .. } if requested == current + 10),
        "{err:?}"
    );
    let err = s.watch("/registry/", current + 10).await.err().unwrap();
    assert!(matches!(err, StoreError::FutureRevision { .. }), "{err:?}");
    let err = s.compact(current + 10).await.unwrap_err();
    assert!(matches!(err, StoreError::FutureRevision { .. }), "{err:?}");
    // The current revision itself is fine for all three.
    s.list(&ListOptions {
        revision: Some(current),
        ..list("/registry/")
    })
    .await
    .unwrap();
    let mut w = s.watch("/registry/", current).await.unwrap();
    assert_quiet(&mut w).await;
}

/// A watch from now sees creates, updates and deletes under its prefix, in order, with the
/// previous values.
pub async fn watch_delivers_every_kind_in_order(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let prefix = "/registry/services/w/";
    let mut w = s
        .watch(prefix, s.current_revision().await.unwrap())
        .await
        .unwrap();
    let a1 = create(s, &format!("{prefix}a"), "a1").await;
    let a2 = s
        .update(&a1.key, b"a2".to_vec(), a1.mod_revision)
        .await
        .unwrap();
    create(s, "/registry/services/other", "x").await;
    let b1 = create(s, &format!("{prefix}b"), "b1").await;
    let a_del = s.delete(&a1.key, None).await.unwrap();

    let events = next_events(&mut w, 4).await;
    let expected = vec![
        WatchEvent {
            kind: EventKind::Put,
            kv: a1.clone(),
            prev: None,
        },
        WatchEvent {
            kind: EventKind::Put,
            kv: a2.clone(),
            prev: Some(a1),
        },
        WatchEvent {
            kind: EventKind::Put,
            kv: b1,
            prev: None,
        },
        WatchEvent {
            kind: EventKind::Delete,
            kv: a_del,
            prev: Some(a2),
        },
    ];
    assert_eq!(events, expected);
    assert_quiet(&mut w).await;
}

/// A watch from any retained revision replays exactly the changes after it, then goes live.
pub async fn watch_resumes_from_any_retained_revision(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let prefix = "/registry/deployments/r/";
    let start = s.current_revision().await.unwrap();
    let mut log: Vec<(Revision, String, EventKind)> = Vec::new();
    let mut live: BTreeMap<String, Revision> = BTreeMap::new();
    for i in 0..40usize {
        let key = format!("{prefix}k{}", i % 7);
        let kv = match live.get(&key).copied() {
            None => create(s, &key, &format!("v{i}")).await,
            Some(rev) if i % 3 == 0 => {
                let kv = s.delete(&key, Some(rev)).await.unwrap();
                live.remove(&key);
                log.push((kv.mod_revision, key, EventKind::Delete));
                continue;
            }
            Some(rev) => s
                .update(&key, format!("v{i}").into_bytes(), rev)
                .await
                .unwrap(),
        };
        live.insert(key.clone(), kv.mod_revision);
        log.push((kv.mod_revision, key, EventKind::Put));
        if i % 5 == 0 {
            create(s, &format!("/registry/deployments/q{i}"), "noise").await;
        }
    }
    let last = s.current_revision().await.unwrap();
    let mut afters: Vec<Revision> = vec![start, last - 1];
    afters.extend(log.iter().step_by(6).map(|(rev, _, _)| *rev));
    afters.extend(log.iter().step_by(9).map(|(rev, _, _)| rev - 1));
    for after in afters {
        let want: Vec<_> = log.iter().filter(|(rev, _, _)| *rev > after).collect();
        let mut w = s.watch(prefix, after).await.unwrap();
        let got = next_events(&mut w, want.len()).await;
        let got: Vec<_> = got
            .iter()
            .map(|e| (e.kv.mod_revision, e.kv.key.clone(), e.kind))
            .collect();
        let want: Vec<_> = want.into_iter().cloned().collect();
        assert_eq!(got, want, "watch after {after}");
        assert_quiet(&mut w).await;
    }
    // From the last revision: nothing old, then the next write live.
    let mut w = s.watch(prefix, last).await.unwrap();
    assert_quiet(&mut w).await;
    let kv = create(s, &format!("{prefix}fresh"), "v").await;
    assert_eq!(next_events(&mut w, 1).await[0].kv, kv);
}

/// After compacting at C: a list at C and a watch from C − 1 work, anything older is
/// `Compacted`; compacting again at or below C is a no-op; current values stay.
pub async fn compaction(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let prefix = "/registry/events/c/";
    let mut kvs = Vec::new();
    for i in 0..10 {
        kvs.push(create(s, &format!("{prefix}e{i}"), "v").await);
    }
    let c = kvs[5].mod_revision;
    s.compact(c).await.unwrap();
    assert_eq!(s.compacted_revision().await.unwrap(), c);

    let at_c = s
        .list(&ListOptions {
            revision: Some(c),
            ..list(prefix)
        })
        .await
        .unwrap();
    assert_eq!(at_c.items, kvs[..6].to_vec());
    let err = s
        .list(&ListOptions {
            revision: Some(c - 1),
            ..list(prefix)
        })
        .await
        .unwrap_err();
    assert_eq!(
        err,
        StoreError::Compacted {
            requested: c - 1,
            compacted: c
        }
    );

    let mut w = s.watch(prefix, c - 1).await.unwrap();
    let events = next_events(&mut w, 5).await;
    let revs: Vec<_> = events.iter().map(|e| e.kv.mod_revision).collect();
    assert_eq!(
        revs,
        kvs[5..]
            .iter()
            .map(|kv| kv.mod_revision)
            .collect::<Vec<_>>()
    );
    match s.watch(prefix, c - 2).await {
        Err(StoreError::Compacted { compacted, .. }) => assert_eq!(compacted, c),
        Err(e) => panic!("expected Compacted, got {e:?}"),
        Ok(_) => panic!("expected Compacted, got a watch"),
    }

    s.compact(c - 1).await.unwrap();
    s.compact(c).await.unwrap();
    assert_eq!(s.compacted_revision().await.unwrap(), c);
    for kv in &kvs {
        assert_eq!(s.get(&kv.key).await.unwrap().as_ref(), Some(kv));
    }
    // Compacting everything keeps the current state and a watch from now.
    let now = s.current_revision().await.unwrap();
    s.compact(now).await.unwrap();
    assert_eq!(s.list(&list(prefix)).await.unwrap().items, kvs);
    let mut w = s.watch(prefix, now).await.unwrap();
    let kv = s.delete(&kvs[0].key, None).await.unwrap();
    assert_eq!(next_events(&mut w, 1).await[0].kv, kv);
}

/// `/registry/pods/a/` never sees `/registry/pods/ab/…` (nor the key `/registry/pods/a`).
pub async fn prefix_isolation(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let rev = s.current_revision().await.unwrap();
    let mut w = s.watch("/registry/pods/a/", rev).await.unwrap();
    create(s, "/registry/pods/ab/y", "ab").await;
    create(s, "/registry/pods/a", "bare").await;
    let x = create(s, "/registry/pods/a/x", "a").await;
    create(s, "/registry/pods/a0", "after").await;
    create(s, "/registry/pods/b/z", "b").await;

    let items = s.list(&list("/registry/pods/a/")).await.unwrap().items;
    assert_eq!(items, vec![x.clone()]);
    assert_eq!(s.count("/registry/pods/a/").await.unwrap(), 1);
    assert_eq!(s.count("/registry/pods/ab/").await.unwrap(), 1);
    assert_eq!(s.count("/registry/pods/").await.unwrap(), 5);
    let events = next_events(&mut w, 1).await;
    assert_eq!(events[0].kv, x);
    assert_quiet(&mut w).await;
    // `start_after` below the prefix does not leak keys before it.
    let items = s
        .list(&ListOptions {
            start_after: Some("/registry/pods/".into()),
            ..list("/registry/pods/a/")
        })
        .await
        .unwrap()
        .items;
    assert_eq!(items, vec![x]);
}

/// 50 concurrent writers: every write its own revision, increasing in each writer's order.
pub async fn concurrent_writers_get_distinct_increasing_revisions(store: Arc<dyn Store>) {
    const WRITERS: usize = 50;
    const EACH: usize = 10;
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut revs = Vec::new();
            for i in 0..EACH {
                let key = format!("/registry/configmaps/cw/w{w:02}-{i}");
                let kv = store.create(&key, vec![b'x'; 512]).await.unwrap();
                revs.push(kv.mod_revision);
            }
            revs
        }));
    }
    let mut all = HashSet::new();
    let mut max = 0;
    for task in tasks {
        let revs = task.await.unwrap();
        assert!(
            revs.windows(2).all(|w| w[0] < w[1]),
            "not increasing: {revs:?}"
        );
        for rev in revs {
            assert!(all.insert(rev), "revision {rev} given twice");
            max = max.max(rev);
        }
    }
    assert_eq!(all.len(), WRITERS * EACH);
    assert_eq!(store.current_revision().await.unwrap(), max);
    assert_eq!(
        store.count("/registry/configmaps/cw/").await.unwrap(),
        (WRITERS * EACH) as u64
    );
}

/// A watch open while many writers create, update and delete sees each change exactly once,
/// in revision order, and a second watch resumed from the middle sees the rest.
pub async fn watch_under_concurrent_writes_sees_every_event_once_in_order(store: Arc<dyn Store>) {
    const WRITERS: usize = 10;
    const EACH: usize = 30;
    let prefix = "/registry/pods/cw/";
    let start = store.current_revision().await.unwrap();
    let mut w = store.watch(prefix, start).await.unwrap();
    let mut tasks = Vec::new();
    for t in 0..WRITERS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut acks = Vec::new();
            let key = format!("{prefix}w{t}");
            let mut rev = None;
            for i in 0..EACH {
                let kv = match rev {
                    None => store.create(&key, format!("{i}").into_bytes()).await,
                    Some(r) if i % 5 == 4 => store.delete(&key, Some(r)).await,
                    Some(r) => store.update(&key, format!("{i}").into_bytes(), r).await,
                }
                .unwrap();
                rev = if rev.is_some() && i % 5 == 4 {
                    None
                } else {
                    Some(kv.mod_revision)
                };
                acks.push(kv.mod_revision);
            }
            acks
        }));
    }
    let mut acks = Vec::new();
    for task in tasks {
        acks.extend(task.await.unwrap());
    }
    acks.sort_unstable();
    let got: Vec<_> = next_events(&mut w, acks.len())
        .await
        .iter()
        .map(|e| e.kv.mod_revision)
        .collect();
    assert_eq!(
        got, acks,
        "every acknowledged write once, in revision order"
    );
    assert_quiet(&mut w).await;

    let middle = acks[acks.len() / 2];
    let mut resumed = store.watch(prefix, middle).await.unwrap();
    let rest: Vec<_> = acks.iter().copied().filter(|r| *r > middle).collect();
    let got: Vec<_> = next_events(&mut resumed, rest.len())
        .await
        .iter()
        .map(|e| e.kv.mod_revision)
        .collect();
    assert_eq!(got, rest);
}
