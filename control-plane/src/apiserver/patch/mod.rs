//! The PATCH engines of the apiserver: pure functions from (object, patch) to the patched object,
//! over `serde_json::Value`, with upstream's semantics and errors.
//!
//! | `Content-Type` | engine | semantics |
//! |---|---|---|
//! | `application/json-patch+json` | [`apply_json_patch`] | RFC 6902 as upstream applies it (evanphx/json-patch v4, see [`json_patch`]) |
//! | `application/merge-patch+json` | [`apply_merge_patch`] / [`merge_patch`] | RFC 7386 (see [`merge_patch`]) |
//! | `application/strategic-merge-patch+json` | [`apply_strategic_merge_patch`] | upstream `strategicpatch` (see [`strategic`]), driven by [`schema`] metadata |
//!
//! [`apply_patch`] dispatches on [`PatchType`]. Server-side apply
//! (`application/apply-patch+yaml`) is not applied here; it builds on the same [`schema`]
//! metadata (list types and map keys).
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
pub mod schema;

#[cfg(test)]
mod tests;

pub use builtin::{
    BuiltinKind, builtin_definitions, builtin_kinds, builtin_schema, builtin_schemas,
};
pub use schema::{
    FieldMeta, FieldRef, ListType, MapType, NodeKind, PatchStrategy, SchemaGraph, SchemaNode,
};
