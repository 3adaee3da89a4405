//! Version conversion between what is stored and what a resource serves, for resources
//! that share one storage with another version of the same objects. Today: events —
//! core/v1 `Event` and events.k8s.io/v1 `Event` are one set of objects under
//! `/registry/events`, stored in the core/v1 form; the events.k8s.io/v1 resource
//! converts on the way in and out with upstream's field mapping (`message` ↔ `note`,
//! `involvedObject` ↔ `regarding`, `source` ↔ `deprecatedSource`, `firstTimestamp` /
//! `lastTimestamp` / `count` ↔ their `deprecated*` forms, `reportingComponent` ↔
//! `reportingController`; `eventTime`, `series`, `related`, `action`, `reason`, `type`,
//! `reportingInstance` keep their names). Every other resource passes through unchanged.

use serde_json::{Map, Value, json};

use crate::apiserver::catalog::ResourceDef;
use crate::apiserver::errors::ApiError;
use crate::storage::KeyValue;

/// core/v1 field ↔ events.k8s.io/v1 field, for the fields that are renamed.
const EVENT_FIELDS: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("source", "deprecatedSource"),
    ("message", "note"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
    ("reportingComponent", "reportingController"),
];

fn is_events_api(def: &ResourceDef) -> bool {
    def.group == "events.k8s.io" && def.kind == "Event"
}

fn is_core_event(def: &ResourceDef) -> bool {
    def.group.is_empty() && def.kind == "Event"
}

/// The stored form of an object `def` serves, as `def` serves it.
pub fn served(def: &ResourceDef, object: Value) -> Value {
    if is_events_api(def)
        && object.get("apiVersion").and_then(Value::as_str) != Some("events.k8s.io/v1")
    {
        core_to_events(object)
    } else if is_core_event(def)
        && object.get("apiVersion").and_then(Value::as_str) == Some("events.k8s.io/v1")
    {
        events_to_core(object)
    } else {
        object
    }
}

/// A stored key as `def` serves it (LISTs stream stored bytes; this re-encodes only the
/// objects of a resource that converts).
pub fn served_kv(def: &ResourceDef, mut kv: KeyValue) -> Result<KeyValue, ApiError> {
    if def.custom.is_some() {
        // A custom resource is read at the requested version with its schema defaults.
        let object = super::read::with_type(super::object::decode_stored(&kv)?, def);
        kv.value = super::object::encode_for_store(&object);
        return Ok(kv);
    }
    if !is_events_api(def) {
        return Ok(kv);
    }
    let object = served(def, super::object::decode_stored(&kv)?);
    kv.value = super::object::encode_for_store(&object);
    Ok(kv)
}

/// An object in `def`'s served form, as it is stored.
pub fn stored(def: &ResourceDef, object: Value) -> Value {
    if is_events_api(def) {
        events_to_core(object)
    } else {
        object
    }
}

/// core/v1 Event → events.k8s.io/v1 Event.
pub fn core_to_events(object: Value) -> Value {
    rename(
        object,
        "events.k8s.io/v1",
        |core, _| core,
        |_, events| events,
    )
}

/// events.k8s.io/v1 Event → core/v1 Event.
pub fn events_to_core(object: Value) -> Value {
    rename(object, "v1", |_, events| events, |core, _| core)
}

fn rename(
    object: Value,
    api_version: &str,
    from: fn(&'static str, &'static str) -> &'static str,
    to: fn(&'static str, &'static str) -> &'static str,
) -> Value {
    let Value::Object(mut map) = object else {
        return object;
    };
    let mut out = Map::new();
    for (core, events) in EVENT_FIELDS {
        if let Some(value) = map.remove(from(core, events)) {
            out.insert(to(core, events).to_string(), value);
        }
    }
    // The target version's names win over leftovers of the same name in the input.
    for (key, value) in map {
        out.entry(key).or_insert(value);
    }
    out.insert("apiVersion".into(), json!(api_version));
    out.insert("kind".into(), json!("Event"));
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn core() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "e1", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default", "uid": "u1"},
            "source": {"component": "kubelet", "host": "n1"},
            "message": "Pulled image",
            "reason": "Pulled", "type": "Normal", "action": "Pulling",
            "firstTimestamp": "2024-01-01T00:00:00Z", "lastTimestamp": "2024-01-01T00:01:00Z",
            "count": 3,
            "eventTime": "2024-01-01T00:00:00.000000Z",
            "series": {"count": 2, "lastObservedTime": "2024-01-01T00:01:00.000000Z"},
            "related": {"kind": "Node", "name": "n1"},
            "reportingComponent": "kubelet", "reportingInstance": "n1",
        })
    }

    fn events() -> Value {
        json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e1", "namespace": "default"},
            "regarding": {"kind": "Pod", "name": "web", "namespace": "default", "uid": "u1"},
            "deprecatedSource": {"component": "kubelet", "host": "n1"},
            "note": "Pulled image",
            "reason": "Pulled", "type": "Normal", "action": "Pulling",
            "deprecatedFirstTimestamp": "2024-01-01T00:00:00Z",
            "deprecatedLastTimestamp": "2024-01-01T00:01:00Z",
            "deprecatedCount": 3,
            "eventTime": "2024-01-01T00:00:00.000000Z",
            "series": {"count": 2, "lastObservedTime": "2024-01-01T00:01:00.000000Z"},
            "related": {"kind": "Node", "name": "n1"},
            "reportingController": "kubelet", "reportingInstance": "n1",
        })
    }

    #[test]
    fn converts_both_ways_field_by_field() {
        assert_eq!(core_to_events(core()), events());
        assert_eq!(events_to_core(events()), core());
        assert_eq!(events_to_core(core_to_events(core())), core());
    }

    #[test]
    fn minimal_events_keep_only_what_is_set() {
        let e = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "x"}, "note": "hi", "eventTime": "2024-01-01T00:00:00.000000Z",
            "reportingController": "me/c", "reportingInstance": "me-1", "action": "Do", "reason": "Done"});
        let c = events_to_core(e);
        assert_eq!(c["message"], "hi");
        assert_eq!(c["reportingComponent"], "me/c");
        assert_eq!(c["reportingInstance"], "me-1");
        assert!(c.get("note").is_none() && c.get("count").is_none());
        assert_eq!(c["apiVersion"], "v1");
    }

    #[test]
    fn only_the_events_api_converts() {
        let catalog = crate::apiserver::catalog::Catalog::builtin();
        let core_def = catalog.lookup("", "v1", "events").expect("core events");
        let events_def = catalog
            .lookup("events.k8s.io", "v1", "events")
            .expect("events.k8s.io");
        assert_eq!(core_def.storage_prefix, events_def.storage_prefix);
        assert_eq!(served(events_def, core()), events());
        assert_eq!(stored(events_def, events()), core());
        assert_eq!(served(core_def, core()), core());
        assert_eq!(stored(core_def, core()), core());
        let cm_def = catalog.lookup("", "v1", "configmaps").expect("cm");
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "message": "m"});
        assert_eq!(served(cm_def, cm.clone()), cm);
    }
}
