//! Controller expectations, generically (upstream's `ControllerExpectations`): after a key's
//! plan created or deleted objects, the key is not planned again until the watch caches show
//! those writes — a created object is in its store, a deleted one is gone from it or has a
//! `deletionTimestamp` — or [`EXPECTATIONS_TIMEOUT`] passes (a write that the cache never
//! shows, e.g. an object deleted again at once). Otherwise a planner that counts pods would
//! create the ones it just created a second time. Pure bookkeeping: the caller passes the
//! clock and a lookup into its stores.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::runtime::ObjectKey;
use crate::runtime::executor::{Written, WrittenObject};

/// How long unmet expectations hold a key (upstream: 5 minutes; our watches are local).
pub const EXPECTATIONS_TIMEOUT: Duration = Duration::from_secs(5);

/// What a watch store shows of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// No store of the controller watches every object of the kind: nothing to wait for.
    Unwatched,
    /// The store has no object of that namespace and name.
    Absent,
    /// The store has it.
    Present { uid: Option<String>, deleting: bool },
}

/// Whether the cache shows `written`.
pub fn is_seen(written: &Written, observed: &Observed) -> bool {
    let same_uid = |object: &WrittenObject, uid: &Option<String>| match (&object.uid, uid) {
        (Some(wrote), Some(seen)) => wrote == seen,
        _ => true,
    };
    match (written, observed) {
        (_, Observed::Unwatched) => true,
        (Written::Created(_), Observed::Absent) => false,
        (Written::Created(object), Observed::Present { uid, .. }) => same_uid(object, uid),
        (Written::Deleted(_), Observed::Absent) => true,
        (Written::Deleted(object), &Observed::Present { ref uid, deleting }) => {
            deleting || !same_uid(object, uid)
        }
    }
}

#[derive(Debug)]
struct Pending {
    writes: Vec<Written>,
    until: Instant,
}

/// Per-key writes the caches have not shown yet.
#[derive(Debug, Default)]
pub struct Expectations {
    pending: Mutex<HashMap<ObjectKey, Pending>>,
}

impl Expectations {
    /// Records that `key`'s plan wrote `writes` at `now` (replacing anything older).
    pub fn expect(&self, key: &ObjectKey, writes: Vec<Written>, now: Instant) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if writes.is_empty() {
            pending.remove(key);
            return;
        }
        pending.insert(
            key.clone(),
            Pending {
                writes,
                until: now + EXPECTATIONS_TIMEOUT,
            },
        );
    }

    /// `None` when `key` may be planned (its writes are seen, or expired); otherwise how
    /// long its expectations may still hold it. Seen writes are dropped from the record.
    pub fn unmet(
        &self,
        key: &ObjectKey,
        observe: impl Fn(&WrittenObject) -> Observed,
        now: Instant,
    ) -> Option<Duration> {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = pending.get_mut(key)?;
        if now >= entry.until {
            tracing::debug!(%key, unmet = entry.writes.len(), "expectations expired");
            pending.remove(key);
            return None;
        }
        entry
            .writes
            .retain(|written| !is_seen(written, &observe(written.object())));
        if entry.writes.is_empty() {
            pending.remove(key);
            return None;
        }
        Some(entry.until - now)
    }

    /// Forgets `key`.
    pub fn forget(&self, key: &ObjectKey) {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(name: &str, uid: &str) -> WrittenObject {
        WrittenObject {
            api_version: "v1".into(),
            kind: "Pod".into(),
            namespace: Some("ns".into()),
            name: name.into(),
            uid: Some(uid.into()),
        }
    }

    fn present(uid: &str, deleting: bool) -> Observed {
        Observed::Present {
            uid: Some(uid.into()),
            deleting,
        }
    }

    #[test]
    fn a_write_is_seen_when_the_store_reflects_it() {
        let created = Written::Created(object("web-a", "u1"));
        let deleted = Written::Deleted(object("web-b", "u2"));
        let cases: Vec<(&str, &Written, Observed, bool)> = vec![
            ("created, not in store", &created, Observed::Absent, false),
            ("created, in store", &created, present("u1", false), true),
            (
                "created, store has a different object of that name",
                &created,
                present("old", false),
                false,
            ),
            (
                "created, kind unwatched",
                &created,
                Observed::Unwatched,
                true,
            ),
            ("deleted, still live", &deleted, present("u2", false), false),
            ("deleted, terminating", &deleted, present("u2", true), true),
            ("deleted, gone", &deleted, Observed::Absent, true),
            (
                "deleted, replaced by a same-named object",
                &deleted,
                present("u3", false),
                true,
            ),
            (
                "deleted, kind unwatched",
                &deleted,
                Observed::Unwatched,
                true,
            ),
        ];
        for (name, written, observed, want) in cases {
            assert_eq!(is_seen(written, &observed), want, "{name}");
        }
    }

    #[test]
    fn a_key_is_held_until_every_write_is_seen_or_the_timeout_passes() {
        let key = ObjectKey::namespaced("ns", "web");
        let other = ObjectKey::namespaced("ns", "other");
        let start = Instant::now();
        let expectations = Expectations::default();
        expectations.expect(
            &key,
            vec![
                Written::Created(object("web-a", "u1")),
                Written::Created(object("web-b", "u2")),
                Written::Deleted(object("web-c", "u3")),
            ],
            start,
        );
        let store = |live: &'static [(&'static str, &'static str)]| {
            move |o: &WrittenObject| match live.iter().find(|(name, _)| *name == o.name) {
                Some((_, uid)) => present(uid, false),
                None => Observed::Absent,
            }
        };
        assert_eq!(
            expectations.unmet(&other, store(&[]), start),
            None,
            "keys without writes are never held"
        );
        let later = start + Duration::from_secs(1);
        assert_eq!(
            expectations.unmet(&key, store(&[("web-c", "u3")]), later),
            Some(EXPECTATIONS_TIMEOUT - Duration::from_secs(1)),
            "nothing seen yet"
        );
        assert!(
            expectations
                .unmet(&key, store(&[("web-a", "u1"), ("web-c", "u3")]), later)
                .is_some(),
            "one creation seen, the deleted pod still live"
        );
        // web-a was seen once: it no longer needs to be in the store.
        assert_eq!(
            expectations.unmet(&key, store(&[("web-b", "u2")]), later),
            None,
            "every write seen"
        );
        assert_eq!(
            expectations.unmet(&key, store(&[]), later),
            None,
            "the record is gone once met"
        );

        expectations.expect(&key, vec![Written::Created(object("web-d", "u4"))], start);
        assert!(expectations.unmet(&key, store(&[]), later).is_some());
        assert_eq!(
            expectations.unmet(&key, store(&[]), start + EXPECTATIONS_TIMEOUT),
            None,
            "expired"
        );

        expectations.expect(&key, vec![Written::Created(object("web-e", "u5"))], start);
        expectations.expect(&key, Vec::new(), start);
        assert_eq!(
            expectations.unmet(&key, store(&[]), later),
            None,
            "a plan without writes clears the record"
        );
        expectations.expect(&key, vec![Written::Created(object("web-f", "u6"))], start);
        expectations.forget(&key);
        assert_eq!(
            expectations.unmet(&key, store(&[]), later),
            None,
            "forgotten"
        );
    }
}
