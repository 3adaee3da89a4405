//! `application/vnd.kubernetes.protobuf` request bodies, decoded into the JSON the apiserver
//! works on.
//!
//! kubectl (`create <generator>`, `auth can-i`, `auth whoami`) and helm (release Secrets, DELETE
//! with `DeleteOptions`) send protobuf with no JSON fallback. A body is the prefix `k8s\0` and a
//! `runtime.Unknown` envelope whose `raw` holds the object's message ([`decode_envelope`]).
//! [`to_json`] turns that message into exactly the JSON the same Go object marshals to — field
//! names, `omitempty`, explicit zeros of pointer fields, `Time`/`MicroTime`/`Duration`/`Quantity`/
//! `IntOrString`, base64 bytes, inlined structs, embedded `RawExtension`s — so the rest of the
//! apiserver never knows which encoding a client used.
//!
//! The converter is generic: it runs on a schema generated from the upstream `.proto` files and
//! Go structs (`k8s.schema`, see `examples/pb-schema-gen.rs`) covering every kind of the stable
//! group versions. Hostile input gets an error, never a panic: lengths are checked before use,
//! nesting and output size are bounded ([`Limits`]).

mod convert;
mod schema;
mod special;
mod wire;

use serde_json::Value;

pub use wire::Problem;

/// The four bytes every Kubernetes protobuf body starts with.
pub const MAGIC: &[u8; 4] = b"k8s\0";

/// The media type of Kubernetes protobuf bodies.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// The envelope of a protobuf body (`runtime.Unknown`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unknown {
    pub api_version: String,
    pub kind: String,
    /// The object's message bytes (without the prefix).
    pub raw: Vec<u8>,
    /// Empty for every body kubectl or helm sends; anything else is refused by [`decode_body`].
    pub content_encoding: String,
    /// Empty or [`CONTENT_TYPE`] for protobuf.
    pub content_type: String,
}

/// The bytes of a length-delimited field.
fn bytes_field(number: u32, wire: wire::Wire<'_>) -> Result<&[u8], Problem> {
    match wire {
        wire::Wire::Bytes(b) => Ok(b),
        other => Err(Problem::WrongWireType {
            field: number,
            got: other.wire_type(),
            expected: 2,
        }),
    }
}

impl Unknown {
    /// Parses `{TypeMeta typeMeta = 1 {apiVersion = 1; kind = 2}; raw = 2; contentEncoding = 3; contentType = 4}`.
    fn parse(bytes: &[u8]) -> Result<Unknown, Problem> {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let mut out = Unknown::default();
        let mut r = wire::Reader::new(bytes);
        while let Some((number, value)) = r.field()? {
            match number {
                1 => {
                    let mut meta = wire::Reader::new(bytes_field(1, value)?);
                    while let Some((n, v)) = meta.field()? {
                        match n {
                            1 => out.api_version = text(bytes_field(1, v)?),
                            2 => out.kind = text(bytes_field(2, v)?),
                            _ => {}
                        }
                    }
                }
                2 => out.raw = bytes_field(2, value)?.to_vec(),
                3 => out.content_encoding = text(bytes_field(3, value)?),
                4 => out.content_type = text(bytes_field(4, value)?),
                _ => {}
            }
        }
        Ok(out)
    }
}

/// Bounds on the work one body may cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Message nesting depth (a Pod template's deepest field is about 12; nested envelopes add).
    pub max_depth: usize,
    /// JSON values produced. Absent Go value structs are written as their zero value, so a few
    /// bytes can expand into several values: this caps the output, not only the input.
    pub max_values: usize,
}

impl Limits {
    /// The default for an object of `len` bytes: 16 Ki values plus 8 per input byte, at most 1 Mi.
    pub fn for_input(len: usize) -> Limits {
        Limits {
            max_depth: 48,
            max_values: len.saturating_mul(8).saturating_add(16_384).min(1 << 20),
        }
    }
}

/// Why a body could not be converted. `UnknownKind`, `NotProtobuf`, `ContentType` and
/// `ContentEncoding` mean "cannot handle this body" (415); the rest mean a bad body (400).
#[derive(Debug, thiserror::Error)]
pub enum PbError {
    #[error("the body does not start with the Kubernetes protobuf prefix k8s\\0")]
    NotProtobuf,
    #[error("the protobuf envelope has content encoding {0:?}, only an empty one is supported")]
    ContentEncoding(String),
    #[error("the protobuf envelope holds content type {0:?}, not protobuf")]
    ContentType(String),
    #[error("no protobuf decoding for kind {kind:?} of {api_version:?}")]
    UnknownKind { api_version: String, kind: String },
    #[error("malformed protobuf at {}: {problem}", display_path(path))]
    Malformed { path: String, problem: Problem },
    #[error("object nested deeper than {limit} levels at {}", display_path(path))]
    TooDeep { path: String, limit: usize },
    #[error("object expands to more than {limit} JSON values")]
    TooLarge { limit: usize },
    #[error("invalid embedded JSON at {}", display_path(path))]
    EmbeddedJson {
        path: String,
        #[source]
        source: serde_json::Error,
    },
}

fn display_path(path: &str) -> &str {
    if path.is_empty() {
        "the top level"
    } else {
        path
    }
}

impl PbError {
    /// True when the body is well formed as far as we can tell but not something we decode.
    pub fn is_unsupported(&self) -> bool {
        matches!(
            self,
            PbError::NotProtobuf
                | PbError::ContentEncoding(_)
                | PbError::ContentType(_)
                | PbError::UnknownKind { .. }
        )
    }

    /// The JSON path of the error, if it has one (`spec.template.spec.containers[0].ports[1]`).
    pub fn path(&self) -> Option<&str> {
        match self {
            PbError::Malformed { path, .. }
            | PbError::TooDeep { path, .. }
            | PbError::EmbeddedJson { path, .. } => Some(path),
            _ => None,
        }
    }

    /// Prepends one step to the path while the error travels out of a nested message.
    fn within(mut self, seg: convert::Seg<'_>) -> Self {
        if let PbError::Malformed { path, .. }
        | PbError::TooDeep { path, .. }
        | PbError::EmbeddedJson { path, .. } = &mut self
        {
            let sep = if path.is_empty() || path.starts_with('[') {
                ""
            } else {
                "."
            };
            *path = match seg {
                convert::Seg::Name(name) => format!("{name}{sep}{path}"),
                convert::Seg::Index(i) => format!("[{i}]{sep}{path}"),
                convert::Seg::Key(key) => format!("[{key:?}]{sep}{path}"),
            };
        }
        self
    }
}

/// Splits a protobuf body into its envelope.
pub fn decode_envelope(body: &[u8]) -> Result<Unknown, PbError> {
    let rest = body.strip_prefix(MAGIC).ok_or(PbError::NotProtobuf)?;
    Unknown::parse(rest).map_err(|problem| PbError::Malformed {
        path: "(envelope)".to_owned(),
        problem,
    })
}

/// The object in `raw` (the message of `kind` in `api_version`) as Kubernetes JSON, with
/// `apiVersion` and `kind` set. Limits default to [`Limits::for_input`].
pub fn to_json(api_version: &str, kind: &str, raw: &[u8]) -> Result<Value, PbError> {
    to_json_with(api_version, kind, raw, &Limits::for_input(raw.len()))
}

/// [`to_json`] with explicit limits.
pub fn to_json_with(
    api_version: &str,
    kind: &str,
    raw: &[u8],
    limits: &Limits,
) -> Result<Value, PbError> {
    convert::Converter::new(limits).top_level(api_version, kind, raw, 0)
}

/// A whole request body (prefix, envelope, object) as Kubernetes JSON.
pub fn decode_body(body: &[u8]) -> Result<Value, PbError> {
    let unknown = decode_envelope(body)?;
    if !unknown.content_encoding.is_empty() {
        return Err(PbError::ContentEncoding(unknown.content_encoding));
    }
    if !(unknown.content_type.is_empty() || unknown.content_type == CONTENT_TYPE) {
        return Err(PbError::ContentType(unknown.content_type));
    }
    to_json(&unknown.api_version, &unknown.kind, &unknown.raw)
}

/// Whether `api_version`/`kind` has a protobuf decoding (for 415 before reading a body).
pub fn supports(api_version: &str, kind: &str) -> bool {
    schema::SCHEMA.kind(api_version, kind).is_some()
}

#[cfg(test)]
mod coverage_tests;
