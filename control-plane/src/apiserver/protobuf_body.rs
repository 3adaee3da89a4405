//! Protobuf request bodies (`application/vnd.kubernetes.protobuf`) → the JSON object the
//! handlers work on, through [`super::protobuf`].

use serde_json::Value;

use super::errors::ApiError;
use super::protobuf;

/// Decodes a protobuf request body: 415 for what it cannot decode (an unknown kind, a body that
/// is not protobuf), 400 for a malformed one.
pub fn decode(bytes: &[u8]) -> Result<Value, ApiError> {
    protobuf::decode_body(bytes).map_err(|e| {
        if e.is_unsupported() {
            ApiError::new(415, "UnsupportedMediaType", e.to_string())
        } else {
            ApiError::bad_request(format!("invalid protobuf body: {e}"))
        }
    })
}
