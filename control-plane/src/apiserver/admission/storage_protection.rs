//! Upstream's `StorageObjectInUseProtection` admission plugin: a new PersistentVolumeClaim
//! is created with the `kubernetes.io/pvc-protection` finalizer and a new PersistentVolume
//! with `kubernetes.io/pv-protection`, so deleting one that is still in use only marks it
//! (`deletionTimestamp`); the `pvc-protection` and `pv-protection` controllers remove the
//! finalizer once no scheduled pod uses the claim, or the volume is no longer `Bound`.

use serde_json::Value;

pub use kwk_api::persistent_volume::{PV_PROTECTION_FINALIZER, PVC_PROTECTION_FINALIZER};

/// The finalizer a new object of the core resource `plural` gets, if any.
pub fn finalizer_for(plural: &str) -> Option<&'static str> {
    match plural {
        "persistentvolumeclaims" => Some(PVC_PROTECTION_FINALIZER),
        "persistentvolumes" => Some(PV_PROTECTION_FINALIZER),
        _ => None,
    }
}

/// Appends `finalizer` to the object's `metadata.finalizers` unless it is there (a missing
/// or `null` list starts empty; the others are kept in order).
pub fn add_finalizer(object: &mut Value, finalizer: &str) {
    let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    let list = meta
        .entry("finalizers")
        .or_insert_with(|| Value::Array(Vec::new()));
    if !list.is_array() {
        *list = Value::Array(Vec::new());
    }
    if let Value::Array(items) = list
        && !items.iter().any(|f| f.as_str() == Some(finalizer))
    {
        items.push(Value::String(finalizer.to_string()));
    }
}
