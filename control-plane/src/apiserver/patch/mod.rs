//! The PATCH engines of the apiserver: pure functions from (object, patch) to the patched object,
//! over `serde_json::Value`, with upstream's semantics and errors.
//!
//! | `Content-Type` | engine | semantics |
//! |---|---|---|
//! | `application/json-patch+json` | [`apply_json_patch`] | RFC 6902 as upstream applies it (evanphx/json-patch v4, see [`json_patch`]) |
//! | `application/merge-patch+json` | [`apply_merge_patch`] / [`merge_patch()`] | RFC 7386 (see [`mod@merge_patch`]) |
//! | `application/strategic-merge-patch+json` | [`apply_strategic_merge_patch`] | upstream `strategicpatch` (see [`strategic`]), driven by [`schema`] metadata |
//!
//! [`apply_patch`] dispatches on [`PatchType`]. Server-side apply
//! (`application/apply-patch+yaml`) is not applied here but in
//! [`crate::apiserver::managed`], on the same [`schema`] metadata (list types and map keys).
//!
//! Strategic merge patch needs the merge metadata of every field: [`builtin`] builds it for the
//! built-in kinds from the `k8s-openapi` schemas plus a generated table of the extensions
//! `k8s-openapi` omits (its module doc explains why and how). Custom resources have no such
//! metadata and upstream answers their strategic merge patches with 415, which
//! [`apply_patch`] reproduces when given no schema.
//!
//! Every engine works on a copy: on error the original is untouched. Patches (and patched
//! objects) nesting deeper than [`MAX_DEPTH`] are refused, so recursion stays shallow whatever a
//! client sends; the errors ([`PatchError`]) carry the HTTP status upstream would answer.

pub mod builtin;
mod error;
pub mod json_patch;
pub mod merge_patch;
pub mod schema;
pub mod strategic;

#[cfg(test)]
mod tests;

use serde_json::Value;

pub use builtin::{
    BuiltinKind, builtin_definitions, builtin_kinds, builtin_schema, builtin_schemas,
};
pub use error::{JsonPatchFailure, PatchError, StrategicFailure};
pub use json_patch::apply_json_patch;
pub use merge_patch::{apply_merge_patch, merge_patch};
pub use schema::{
    FieldMeta, FieldRef, ListType, MapType, NodeKind, PatchStrategy, SchemaGraph, SchemaNode,
};
pub use strategic::apply_strategic_merge_patch;

/// The deepest nesting of objects and arrays accepted in a patch or produced by one (serde_json
/// refuses to parse documents nested deeper than 128, so anything stored stays readable).
pub const MAX_DEPTH: usize = 100;

/// The most operations a JSON patch may hold (upstream's `maxJSONPatchOperations`).
pub const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;

/// The most bytes a JSON patch's `copy` operations may copy in total (upstream's default
/// `--json-patch-max-copy-bytes`).
pub const MAX_JSON_PATCH_COPY_BYTES: usize = 3 * 1024 * 1024;

/// The patch media types of the Kubernetes API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/json-patch+json` (RFC 6902).
    Json,
    /// `application/merge-patch+json` (RFC 7386).
    Merge,
    /// `application/strategic-merge-patch+json`.
    StrategicMerge,
    /// `application/apply-patch+yaml` (server-side apply; not applied by this module).
    Apply,
}

impl PatchType {
    /// All four, in the order upstream lists them.
    pub const ALL: [PatchType; 4] = [
        PatchType::Json,
        PatchType::Merge,
        PatchType::StrategicMerge,
        PatchType::Apply,
    ];

    /// Parses a `Content-Type` header value; parameters (`; charset=utf-8`) are ignored.
    pub fn from_content_type(content_type: &str) -> Option<Self> {
        let media = content_type.split(';').next().unwrap_or_default().trim();
        PatchType::ALL
            .into_iter()
            .find(|t| t.media_type().eq_ignore_ascii_case(media))
    }

    /// The media type.
    pub fn media_type(self) -> &'static str {
        match self {
            PatchType::Json => "application/json-patch+json",
            PatchType::Merge => "application/merge-patch+json",
            PatchType::StrategicMerge => "application/strategic-merge-patch+json",
            PatchType::Apply => "application/apply-patch+yaml",
        }
    }
}

/// Applies a PATCH body of type `patch_type` to `original`.
///
/// `schema` is the object's schema (e.g. [`builtin_schema`]); `None` means the object has none (a
/// custom resource), for which strategic merge patch is refused with 415 like upstream. JSON and
/// merge patches ignore it. [`PatchType::Apply`] is also refused: server-side apply is not a
/// patch engine of this module.
pub fn apply_patch(
    patch_type: PatchType,
    original: &Value,
    body: &[u8],
    schema: Option<SchemaNode<'_>>,
) -> Result<Value, PatchError> {
    match (patch_type, schema) {
        (PatchType::Json, _) => apply_json_patch(original, body),
        (PatchType::Merge, _) => apply_merge_patch(original, body),
        (PatchType::StrategicMerge, Some(schema)) => {
            let patch = parse(body)?;
            apply_strategic_merge_patch(original, &patch, schema)
        }
        (PatchType::StrategicMerge, None) | (PatchType::Apply, _) => {
            let accepted = [PatchType::Json, PatchType::Merge, PatchType::Apply];
            Err(PatchError::UnsupportedMediaType {
                accepted: accepted.iter().map(|t| t.media_type()).collect(),
            })
        }
    }
}

/// Parses a patch body (serde_json's own nesting limit applies on top of [`MAX_DEPTH`]).
pub(crate) fn parse(body: &[u8]) -> Result<Value, PatchError> {
    serde_json::from_slice(body).map_err(PatchError::Decode)
}

/// Whether `value` nests objects/arrays more than `max` deep (the root container is depth 1).
/// Iterative, so it is safe on any input.
pub(crate) fn exceeds_depth(value: &Value, max: usize) -> bool {
    let mut stack = vec![(value, 1usize)];
    while let Some((v, depth)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match v {
            Value::Array(a) => Box::new(a.iter()),
            Value::Object(o) => Box::new(o.values()),
            _ => continue,
        };
        if depth > max {
            return true;
        }
        stack.extend(
            children
                .filter(|c| c.is_array() || c.is_object())
                .map(|c| (c, depth + 1)),
        );
    }
    false
}

/// Refuses a patch nested deeper than [`MAX_DEPTH`].
pub(crate) fn check_patch_depth(patch: &Value) -> Result<(), PatchError> {
    if exceeds_depth(patch, MAX_DEPTH) {
        return Err(PatchError::PatchTooDeep { max: MAX_DEPTH });
    }
    Ok(())
}

/// Refuses a patched object nested deeper than [`MAX_DEPTH`].
pub(crate) fn check_result_depth(result: Value) -> Result<Value, PatchError> {
    if exceeds_depth(&result, MAX_DEPTH) {
        return Err(PatchError::ResultTooDeep { max: MAX_DEPTH });
    }
    Ok(result)
}
