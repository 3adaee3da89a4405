//! Protobuf request bodies (`application/vnd.kubernetes.protobuf`) → the JSON object the
//! handlers work on.

use serde_json::Value;

use super::errors::ApiError;

/// Decodes a protobuf request body.
pub fn decode(_bytes: &[u8]) -> Result<Value, ApiError> {
    Err(ApiError::unsupported_media_type(
        "application/vnd.kubernetes.protobuf",
    ))
}
