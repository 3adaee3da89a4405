//! Patch errors, and the HTTP status upstream answers each with.
//!
//! Upstream (`k8s.io/apiserver` `endpoints/handlers/patch.go`, v0.33):
//! - an unsupported `Content-Type` (strategic merge patch on a custom resource) → **415**;
//! - a body that does not decode → **400**; a JSON patch of more than 10 000 operations → **413**;
//! - any JSON patch operation that fails — including a failed `test` — → **422** `Invalid` (with
//!   the generic message "the server rejected our request due to an error in our request"; the
//!   detail is dropped, so sending [`PatchError`]'s text is a harmless improvement);
//! - a merge patch that is not an object → **400**;
//! - strategic merge patch: a malformed `$deleteFromPrimitiveList`, `$retainKeys` or
//!   `$setElementOrder` → **400**, a list of lists → **422**, every other failure (a list element
//!   without its merge key, an unknown `$patch` value, mixed element types …) → **500** with an
//!   empty reason, because those errors reach the handler unconverted. [`PatchError::status_code`]
//!   reports upstream's code; a server may prefer 422 for those, none of them is a server fault.

use thiserror::Error;

/// Why a patch could not be applied.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PatchError {
    /// The body is not JSON of the expected shape (JSON patch: an array of objects).
    #[error("error decoding patch: {0}")]
    Decode(#[source] serde_json::Error),
    /// A merge or strategic merge patch that is not a JSON object.
    #[error("the patch must be a JSON object, not {found}")]
    NotAnObject {
        /// The JSON type found.
        found: &'static str,
    },
    /// The patch nests deeper than [`super::MAX_DEPTH`].
    #[error("the patch nests deeper than {max} levels")]
    PatchTooDeep {
        /// The limit.
        max: usize,
    },
    /// The patched object would nest deeper than [`super::MAX_DEPTH`].
    #[error("the patched object would nest deeper than {max} levels")]
    ResultTooDeep {
        /// The limit.
        max: usize,
    },
    /// A JSON patch with too many operations.
    #[error(
        "Request entity too large: The allowed maximum operations in a JSON patch is {max}, got {got}"
    )]
    TooManyOperations {
        /// Operations in the patch.
        got: usize,
        /// The limit.
        max: usize,
    },
    /// A JSON patch operation failed.
    #[error("JSON patch operation {index} ({op}): {failure}")]
    JsonPatch {
        /// Zero-based position of the operation in the patch.
        index: usize,
        /// Its `op`.
        op: String,
        /// What went wrong.
        #[source]
        failure: JsonPatchFailure,
    },
    /// A strategic merge patch could not be applied.
    #[error("strategic merge patch at {path}: {failure}")]
    Strategic {
        /// Where in the object (`.spec.template.spec.containers[name=web]`).
        path: String,
        /// What went wrong.
        #[source]
        failure: StrategicFailure,
    },
    /// The patch type is not supported for this object (strategic merge patch of a custom
    /// resource, or a type this module does not apply).
    #[error("the body of the request was in an unknown format - accepted media types include: {}", accepted.join(", "))]
    UnsupportedMediaType {
        /// The media types that are accepted.
        accepted: Vec<&'static str>,
    },
}

/// A failed JSON patch operation.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum JsonPatchFailure {
    /// A `test` found a different value.
    #[error("testing value {path} failed: test failed")]
    TestFailed {
        /// The tested pointer.
        path: String,
    },
    /// A pointer's parent does not exist (or is not a container).
    #[error("doc is missing path: {path:?}")]
    MissingPath {
        /// The pointer.
        path: String,
    },
    /// `remove`/`move` of an object member that does not exist.
    #[error("unable to remove nonexistent key: {key}")]
    MissingKey {
        /// The member name.
        key: String,
    },
    /// An array index that is not a number or is out of range.
    #[error("unable to access invalid index: {index:?} of {path:?}")]
    InvalidIndex {
        /// The pointer.
        path: String,
        /// The offending token.
        index: String,
    },
    /// A pointer that does not start with `/`.
    #[error("invalid JSON pointer {path:?}")]
    InvalidPointer {
        /// The pointer.
        path: String,
    },
    /// A required member (`path`, `from`) is missing or not a string.
    #[error("operation is missing a string {field:?}")]
    MissingField {
        /// The member.
        field: &'static str,
    },
    /// `op` is not one of the six operations.
    #[error("Unexpected kind: {op}")]
    UnknownOp {
        /// The `op` given.
        op: String,
    },
    /// `replace` of the whole document with something that is not an object or array.
    #[error("replace operation value must be object or array")]
    BadRootValue,
    /// `copy` operations copied more than the limit in total.
    #[error(
        "Unable to complete the copy, the accumulated size increase of copy is {size}, exceeding the limit {limit}"
    )]
    CopyTooLarge {
        /// Bytes copied so far.
        size: usize,
        /// The limit.
        limit: usize,
    },
}

/// A failed strategic merge patch; the names follow upstream's `mergepatch` errors.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum StrategicFailure {
    /// A `$deleteFromPrimitiveList/…` key without a list name.
    #[error("invalid patch format of primitive list")]
    BadPatchFormatForPrimitiveList,
    /// `$retainKeys` is not a list, or the patch sets a field it does not list.
    #[error("invalid patch format of retainKeys")]
    BadPatchFormatForRetainKeys,
    /// A `$setElementOrder/…` key without a list name.
    #[error("invalid patch format of setElementOrder list")]
    BadPatchFormatForSetElementOrderList,
    /// A list whose elements are lists.
    #[error("lists of lists are not supported")]
    NoListOfLists,
    /// A list element without the list's merge key.
    #[error("map: {element} does not contain declared merge key: {key}")]
    NoMergeKey {
        /// The element (JSON).
        element: String,
        /// The merge key.
        key: String,
    },
    /// `$patch` with a value other than `replace`/`delete` on a map, or other than
    /// `replace`/`delete`/`merge` in a list.
    #[error("unknown patch type: {value} in map: {map}")]
    BadPatchType {
        /// The `$patch` value (JSON).
        value: String,
        /// The map holding it (JSON).
        map: String,
    },
    /// `$patch: merge` in a list (upstream does not implement it).
    #[error("merging lists cannot yet be specified in the patch")]
    MergeDirectiveInList,
    /// A value of the wrong JSON type (e.g. a `$setElementOrder` that is not a list).
    #[error("expected {expected}, but received {found}")]
    BadArgType {
        /// The JSON type expected.
        expected: &'static str,
        /// The JSON type found.
        found: &'static str,
    },
    /// The elements of a list (server's and patch's together) have different JSON types.
    #[error("list element types are not identical")]
    MixedElementTypes,
    /// The patch list is not in the order its `$setElementOrder` list gives.
    #[error("the order in the patch list doesn't match the $setElementOrder list")]
    SetElementOrderMismatch,
    /// A `merge` list of objects whose schema gives no merge key.
    #[error("cannot merge lists without merge key")]
    NoMergeKeyDeclared,
    /// The field's `x-kubernetes-patch-strategy` is not one upstream accepts.
    #[error("unexpected patch strategy")]
    BadPatchStrategy,
}

impl PatchError {
    /// The HTTP status upstream answers this error with (see the module doc).
    pub fn status_code(&self) -> u16 {
        match self {
            PatchError::Decode(_)
            | PatchError::NotAnObject { .. }
            | PatchError::PatchTooDeep { .. } => 400,
            PatchError::TooManyOperations { .. } => 413,
            PatchError::UnsupportedMediaType { .. } => 415,
            PatchError::JsonPatch { .. } | PatchError::ResultTooDeep { .. } => 422,
            PatchError::Strategic { failure, .. } => match failure {
                StrategicFailure::BadPatchFormatForPrimitiveList
                | StrategicFailure::BadPatchFormatForRetainKeys
                | StrategicFailure::BadPatchFormatForSetElementOrderList => 400,
                StrategicFailure::NoListOfLists => 422,
                _ => 500,
            },
        }
    }

    /// The `Status.reason` upstream sends with [`status_code`](Self::status_code) (`""` is
    /// upstream's `StatusReasonUnknown`, used with its 500s).
    pub fn reason(&self) -> &'static str {
        match self.status_code() {
            400 => "BadRequest",
            413 => "RequestEntityTooLarge",
            415 => "UnsupportedMediaType",
            422 => "Invalid",
            _ => "",
        }
    }
}

/// The JSON type name of a value, for messages.
pub(crate) fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}
