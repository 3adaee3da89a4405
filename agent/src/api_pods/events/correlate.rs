//! The event correlator, as the logger half of upstream's `EventCorrelator` (client-go
//! `tools/record/events_cache.go`) for core/v1 Events: an event equal to one recorded before
//! in source, involved object (kind, namespace, name, fieldPath, UID, apiVersion), type, reason
//! and message becomes a strategic merge patch of that Event (`count` + 1, `lastTimestamp`,
//! `message`), not a new object. What was recorded is kept in a bounded LRU cache (upstream's
//! 4096 entries); the cache learns the name, count and first timestamp the apiserver answers.
//!
//! Not done: upstream's aggregation of similar events (same reason, different messages, more
//! than 10 within 10 minutes) and its per-object spam filter.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};

/// Upstream's `maxLruCacheEntries`.
pub(super) const CACHE_ENTRIES: usize = 4096;

/// What the apiserver is asked to do for one event.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Request {
    /// POST the Event.
    Create(Event),
    /// PATCH the Event named in `event.metadata.name` with `body`; `event` is the whole
    /// updated Event, created instead when the patch finds none (it expired).
    Patch { event: Event, body: Value },
}

impl Request {
    /// The Event the request records.
    pub(super) fn event(&self) -> &Event {
        match self {
            Self::Create(event) | Self::Patch { event, .. } => event,
        }
    }

    /// The same Event as a POST (a patched Event that no longer exists).
    pub(super) fn into_create(self) -> Self {
        match self {
            Self::Create(event) | Self::Patch { event, .. } => {
                let mut event = event;
                event.metadata.resource_version = None;
                Self::Create(event)
            }
        }
    }
}

/// What is remembered about a recorded Event (upstream's `eventLog`).
#[derive(Clone, Debug, PartialEq)]
struct EventLog {
    count: i32,
    first_timestamp: Option<Time>,
    name: Option<String>,
}

/// A least-recently-used cache of recorded events by [`event_key`].
#[derive(Debug)]
pub(super) struct EventCache {
    entries: HashMap<String, (u64, EventLog)>,
    /// Use tick → key, oldest first.
    order: BTreeMap<u64, String>,
    tick: u64,
    capacity: usize,
}

impl Default for EventCache {
    fn default() -> Self {
        Self::with_capacity(CACHE_ENTRIES)
    }
}

impl EventCache {
    pub(super) fn with_capacity(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            order: BTreeMap::new(),
            tick: 0,
            capacity: capacity.max(1),
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    fn get(&mut self, key: &str) -> Option<EventLog> {
        let log = self.entries.get(key)?.1.clone();
        self.put(key.to_string(), log.clone());
        Some(log)
    }

    fn put(&mut self, key: String, log: EventLog) {
        self.tick += 1;
        let tick = self.tick;
        if let Some((old_tick, _)) = self.entries.insert(key.clone(), (tick, log)) {
            self.order.remove(&old_tick);
        }
        self.order.insert(tick, key);
        while self.entries.len() > self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
        }
    }
}

/// The identity of an event for aggregation (upstream's `getEventKey`).
pub(super) fn event_key(event: &Event) -> String {
    let source = event.source.as_ref();
    let object = &event.involved_object;
    let parts: [&str; 11] = [
        source.and_then(|s| s.component.as_deref()).unwrap_or(""),
        source.and_then(|s| s.host.as_deref()).unwrap_or(""),
        object.kind.as_deref().unwrap_or(""),
        object.namespace.as_deref().unwrap_or(""),
        object.name.as_deref().unwrap_or(""),
        object.field_path.as_deref().unwrap_or(""),
        object.uid.as_deref().unwrap_or(""),
        object.api_version.as_deref().unwrap_or(""),
        event.type_.as_deref().unwrap_or(""),
        event.reason.as_deref().unwrap_or(""),
        event.message.as_deref().unwrap_or(""),
    ];
    // A separator no field contains, so that different splits cannot collide.
    parts.join("\u{0}")
}

/// The request for a new occurrence of `event` (a fresh Event with count 1), recording it in
/// `cache`: a repeat of a cached event patches it (upstream's `eventObserve`).
pub(super) fn correlate(cache: &mut EventCache, mut event: Event) -> Request {
    let key = event_key(&event);
    let request = match cache.get(&key) {
        Some(seen) => {
            event.count = Some(seen.count.saturating_add(1));
            event.first_timestamp = seen.first_timestamp;
            if seen.name.is_some() {
                event.metadata.name = seen.name;
            }
            let body = json!({
                "count": event.count,
                "lastTimestamp": event.last_timestamp,
                "message": event.message,
            });
            Request::Patch { event, body }
        }
        None => Request::Create(event),
    };
    let event = request.event();
    cache.put(key, log_of(event));
    request
}

/// Remembers what the apiserver answered for a recorded Event (upstream's `UpdateState`).
pub(super) fn update_state(cache: &mut EventCache, recorded: &Event) {
    cache.put(event_key(recorded), log_of(recorded));
}

fn log_of(event: &Event) -> EventLog {
    EventLog {
        count: event.count.unwrap_or(1),
        first_timestamp: event.first_timestamp.clone(),
        name: event.metadata.name.clone(),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{EventSource, ObjectReference};
    use k8s_openapi::jiff::Timestamp;

    use super::*;

    fn event(uid: &str, field_path: Option<&str>, reason: &str, message: &str, at: i64) -> Event {
        let t = Time(Timestamp::from_second(at).unwrap());
        let mut e = Event {
            involved_object: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some("web".into()),
                namespace: Some("ns".into()),
                uid: Some(uid.into()),
                field_path: field_path.map(str::to_string),
                ..ObjectReference::default()
            },
            reason: Some(reason.into()),
            message: Some(message.into()),
            type_: Some("Warning".into()),
            source: Some(EventSource {
                component: Some("kubelet".into()),
                host: Some("n1".into()),
            }),
            first_timestamp: Some(t.clone()),
            last_timestamp: Some(t),
            count: Some(1),
            ..Event::default()
        };
        e.metadata.name = Some(format!("web.{at:x}"));
        e
    }

    /// What `correlate` did: (create or patch, the Event's name, count, first second).
    fn summary(r: &Request) -> (&'static str, String, i32, i64) {
        let e = r.event();
        (
            match r {
                Request::Create(_) => "create",
                Request::Patch { .. } => "patch",
            },
            e.metadata.name.clone().unwrap_or_default(),
            e.count.unwrap_or(0),
            e.first_timestamp.as_ref().map_or(0, |t| t.0.as_second()),
        )
    }

    /// What happens, the event, and what `correlate` should ask for (see `summary`).
    type Case = (&'static str, Event, (&'static str, &'static str, i32, i64));

    #[test]
    fn repeats_patch_the_first_event_and_anything_different_is_new() {
        let c = Some("spec.containers{c}");
        let cases: &[Case] = &[
            (
                "first",
                event("u1", c, "BackOff", "m", 10),
                ("create", "web.a", 1, 10),
            ),
            (
                "repeat",
                event("u1", c, "BackOff", "m", 20),
                ("patch", "web.a", 2, 10),
            ),
            (
                "again",
                event("u1", c, "BackOff", "m", 30),
                ("patch", "web.a", 3, 10),
            ),
            (
                "other message",
                event("u1", c, "BackOff", "m2", 40),
                ("create", "web.28", 1, 40),
            ),
            (
                "other reason",
                event("u1", c, "Failed", "m", 50),
                ("create", "web.32", 1, 50),
            ),
            (
                "other container",
                event("u1", None, "BackOff", "m", 60),
                ("create", "web.3c", 1, 60),
            ),
            (
                "other pod uid",
                event("u2", c, "BackOff", "m", 70),
                ("create", "web.46", 1, 70),
            ),
            (
                "first once more",
                event("u1", c, "BackOff", "m", 80),
                ("patch", "web.a", 4, 10),
            ),
        ];
        let mut cache = EventCache::default();
        for (what, e, (kind, name, count, first)) in cases {
            let r = correlate(&mut cache, e.clone());
            assert_eq!(
                summary(&r),
                (*kind, (*name).to_string(), *count, *first),
                "{what}"
            );
        }
    }

    #[test]
    fn a_patch_sends_count_last_timestamp_and_message() {
        let mut cache = EventCache::default();
        let _ = correlate(&mut cache, event("u1", None, "FailedMount", "m", 10));
        let Request::Patch { body, event } =
            correlate(&mut cache, event("u1", None, "FailedMount", "m", 20))
        else {
            panic!("a repeat must patch");
        };
        assert_eq!(
            body,
            json!({"count": 2, "lastTimestamp": "1970-01-01T00:00:20Z", "message": "m"})
        );
        assert_eq!(event.last_timestamp.unwrap().0.as_second(), 20);
        let created = Request::Patch {
            event: Event::default(),
            body: json!({}),
        }
        .into_create();
        assert!(matches!(created, Request::Create(_)));
    }

    #[test]
    fn the_server_answer_is_remembered() {
        let mut cache = EventCache::default();
        let first = event("u1", None, "Pulled", "m", 10);
        let _ = correlate(&mut cache, first.clone());
        let mut answered = first;
        answered.metadata.name = Some("server-name".into());
        answered.count = Some(7);
        update_state(&mut cache, &answered);
        let r = correlate(&mut cache, event("u1", None, "Pulled", "m", 20));
        assert_eq!(summary(&r), ("patch", "server-name".into(), 8, 10));
    }

    #[test]
    fn the_cache_forgets_the_least_recently_used() {
        let mut cache = EventCache::with_capacity(2);
        let a = event("a", None, "R", "m", 1);
        let b = event("b", None, "R", "m", 2);
        let c = event("c", None, "R", "m", 3);
        let _ = correlate(&mut cache, a.clone());
        let _ = correlate(&mut cache, b.clone());
        // `a` used again: `b` is now the oldest and goes when `c` comes.
        assert!(matches!(
            correlate(&mut cache, a.clone()),
            Request::Patch { .. }
        ));
        let _ = correlate(&mut cache, c);
        assert_eq!(cache.len(), 2);
        assert!(matches!(correlate(&mut cache, a), Request::Patch { .. }));
        assert!(matches!(correlate(&mut cache, b), Request::Create(_)));
    }
}
