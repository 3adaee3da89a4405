//! The generic converter: protobuf message bytes + schema → the JSON Go's `encoding/json` writes.
//!
//! One pass per message collects the fields by number (last wins for scalars; occurrences of a
//! singular message are concatenated, which is protobuf's merge); a second pass walks the schema's
//! fields in order and applies Go's rules: a present pointer is written even when zero, a nil one
//! is dropped with `omitempty` and `null` without; a value field with `omitempty` is dropped when
//! zero, one without it is always written (its zero when absent: `""`, `0`, `false`, `null` for
//! slices and maps, the type's zero for structs); `,inline` fields are merged into the parent.

use std::borrow::Cow;

use base64::Engine as _;
use serde_json::{Map, Value};

use super::schema::{Card, Field, Message, MsgId, SCHEMA, Scalar, Schema, Shape, Special, Type};
use super::wire::{Problem, Reader, Wire};
use super::{Limits, PbError, special};

/// Where in the object the converter is, for error messages (`spec.template.spec.containers[0]`).
#[derive(Debug, Clone, Copy)]
pub(super) enum Seg<'a> {
    Name(&'a str),
    Index(usize),
    Key(&'a str),
}

pub(super) struct Converter<'l> {
    schema: &'static Schema,
    limits: &'l Limits,
    /// JSON values produced so far.
    nodes: usize,
}

/// What one field collected during the scan of its message.
enum Slot<'a> {
    Empty,
    Scalar(Wire<'a>),
    /// The bytes of a singular message (several occurrences concatenated).
    Message(Cow<'a, [u8]>),
    List(Vec<Value>),
    Map(Map<String, Value>),
}

impl<'l> Converter<'l> {
    pub(super) fn new(limits: &'l Limits) -> Self {
        Converter {
            schema: &SCHEMA,
            limits,
            nodes: 0,
        }
    }

    fn count(&mut self, n: usize) -> Result<(), PbError> {
        self.nodes += n;
        if self.nodes > self.limits.max_values {
            return Err(PbError::TooLarge {
                limit: self.limits.max_values,
            });
        }
        Ok(())
    }

    /// A message as its JSON value (an object for ordinary messages).
    pub(super) fn message(
        &mut self,
        id: MsgId,
        bytes: &[u8],
        depth: usize,
    ) -> Result<Value, PbError> {
        if depth > self.limits.max_depth {
            return Err(PbError::TooDeep {
                path: String::new(),
                limit: self.limits.max_depth,
            });
        }
        let msg = &self.schema.messages[id];
        self.count(1)?;
        match msg.shape {
            Shape::Object => Ok(Value::Object(self.object(msg, bytes, depth)?)),
            Shape::List => self.list(msg, bytes, depth),
            Shape::Special(special) => self.special(special, bytes, depth),
        }
    }

    fn special(&mut self, special: Special, bytes: &[u8], depth: usize) -> Result<Value, PbError> {
        let malformed = |problem| PbError::Malformed {
            path: String::new(),
            problem,
        };
        match special {
            Special::Time => special::time(bytes).map_err(malformed),
            Special::MicroTime => special::micro_time(bytes).map_err(malformed),
            Special::Duration => special::duration(bytes).map_err(malformed),
            Special::Quantity => special::quantity(bytes).map_err(malformed),
            Special::IntOrString => special::int_or_string(bytes).map_err(malformed),
            Special::RawJson => {
                let mut raw: Option<&[u8]> = None;
                let mut r = Reader::new(bytes);
                while let Some((number, wire)) = r.field().map_err(malformed)? {
                    match (number, wire) {
                        (1, Wire::Bytes(b)) => raw = Some(b),
                        (1, other) => {
                            return Err(malformed(Problem::WrongWireType {
                                field: 1,
                                got: other.wire_type(),
                                expected: 2,
                            }));
                        }
                        _ => {}
                    }
                }
                match raw {
                    None | Some([]) => Ok(Value::Null),
                    Some(raw) => self.embedded(raw, depth),
                }
            }
            Special::Unknown => {
                let unknown = super::Unknown::parse(bytes).map_err(malformed)?;
                self.unknown(&unknown, depth)
            }
        }
    }

    /// Bytes that hold an object: a nested `k8s\0` envelope, or JSON.
    fn embedded(&mut self, raw: &[u8], depth: usize) -> Result<Value, PbError> {
        if let Some(rest) = raw.strip_prefix(super::MAGIC) {
            let unknown = super::Unknown::parse(rest).map_err(|problem| PbError::Malformed {
                path: String::new(),
                problem,
            })?;
            return self.unknown(&unknown, depth);
        }
        // JSON values are at most one per input byte, and serde_json limits its own nesting.
        self.count(raw.len() / 4)?;
        serde_json::from_slice(raw).map_err(|source| PbError::EmbeddedJson {
            path: String::new(),
            source,
        })
    }

    /// A nested `runtime.Unknown`: protobuf bodies are converted, JSON ones parsed.
    pub(super) fn unknown(
        &mut self,
        unknown: &super::Unknown,
        depth: usize,
    ) -> Result<Value, PbError> {
        if !unknown.content_encoding.is_empty() {
            return Err(PbError::ContentEncoding(unknown.content_encoding.clone()));
        }
        match unknown.content_type.as_str() {
            "" | super::CONTENT_TYPE => {
                self.top_level(&unknown.api_version, &unknown.kind, &unknown.raw, depth + 1)
            }
            "application/json" => self.embedded(&unknown.raw, depth + 1),
            other => Err(PbError::ContentType(other.to_owned())),
        }
    }

    /// A registered kind as its JSON object, with `apiVersion` and `kind` set.
    pub(super) fn top_level(
        &mut self,
        api_version: &str,
        kind: &str,
        raw: &[u8],
        depth: usize,
    ) -> Result<Value, PbError> {
        let id = self
            .schema
            .kind(api_version, kind)
            .ok_or_else(|| PbError::UnknownKind {
                api_version: api_version.to_owned(),
                kind: kind.to_owned(),
            })?;
        let mut value = self.message(id, raw, depth)?;
        if let Value::Object(map) = &mut value {
            self.count(2)?;
            if !kind.is_empty() {
                map.insert("kind".to_owned(), Value::String(kind.to_owned()));
            }
            if !api_version.is_empty() {
                map.insert(
                    "apiVersion".to_owned(),
                    Value::String(api_version.to_owned()),
                );
            }
        }
        Ok(value)
    }

    /// `{repeated T items = 1}` standing for a Go named slice: the array, or `null` when empty.
    fn list(&mut self, msg: &Message, bytes: &[u8], depth: usize) -> Result<Value, PbError> {
        let Some(field) = msg.fields.first() else {
            return Ok(Value::Null);
        };
        let mut items = Vec::new();
        let mut r = Reader::new(bytes);
        while let Some((number, wire)) = r.field().map_err(|problem| PbError::Malformed {
            path: String::new(),
            problem,
        })? {
            if number == field.number {
                self.element(field, wire, depth, &mut items)?;
            }
        }
        Ok(if items.is_empty() {
            Value::Null
        } else {
            Value::Array(items)
        })
    }

    fn object(
        &mut self,
        msg: &Message,
        bytes: &[u8],
        depth: usize,
    ) -> Result<Map<String, Value>, PbError> {
        let mut slots: Vec<Slot<'_>> = msg.fields.iter().map(|_| Slot::Empty).collect();
        let mut r = Reader::new(bytes);
        while let Some((number, wire)) = r.field().map_err(|problem| PbError::Malformed {
            path: String::new(),
            problem,
        })? {
            let Some((idx, field)) = msg.field(number) else {
                continue;
            };
            self.collect(field, wire, &mut slots[idx], depth)
                .map_err(|e| e.within(seg_of(field)))?;
        }
        let mut out = Map::new();
        // Inlined fields first, so the message's own fields win a name clash (Go's rule: shallower wins).
        for pass_inline in [true, false] {
            for (field, slot) in msg.fields.iter().zip(slots.iter_mut()) {
                if field.inline != pass_inline || field.skip {
                    continue;
                }
                let slot = std::mem::replace(slot, Slot::Empty);
                self.finish(field, slot, depth, &mut out)
                    .map_err(|e| e.within(seg_of(field)))?;
            }
        }
        Ok(out)
    }

    /// Scan step: records one occurrence of a field.
    fn collect<'a>(
        &mut self,
        field: &Field,
        wire: Wire<'a>,
        slot: &mut Slot<'a>,
        depth: usize,
    ) -> Result<(), PbError> {
        match field.card {
            Card::One => {
                let expected = match field.ty {
                    Type::Scalar(s) => s.wire_type(),
                    Type::Message(_) => 2,
                };
                check_wire(field, wire, expected)?;
                *slot = match (field.ty, std::mem::replace(slot, Slot::Empty), wire) {
                    (Type::Message(_), Slot::Message(prev), Wire::Bytes(b)) => {
                        let mut merged = prev.into_owned();
                        merged.extend_from_slice(b);
                        Slot::Message(Cow::Owned(merged))
                    }
                    (Type::Message(_), _, Wire::Bytes(b)) => Slot::Message(Cow::Borrowed(b)),
                    (_, _, wire) => Slot::Scalar(wire),
                };
            }
            Card::Repeated => {
                if !matches!(slot, Slot::List(_)) {
                    *slot = Slot::List(Vec::new());
                }
                if let Slot::List(items) = slot {
                    self.element(field, wire, depth, items)?;
                }
            }
            Card::Map => {
                check_wire(field, wire, 2)?;
                if !matches!(slot, Slot::Map(_)) {
                    *slot = Slot::Map(Map::new());
                }
                if let (Slot::Map(map), Wire::Bytes(entry)) = (slot, wire) {
                    let (key, value) = self.map_entry(field, entry, depth)?;
                    map.insert(key, value);
                }
            }
        }
        Ok(())
    }

    /// One element of a repeated field (a packed run of numbers adds several).
    fn element(
        &mut self,
        field: &Field,
        wire: Wire<'_>,
        depth: usize,
        items: &mut Vec<Value>,
    ) -> Result<(), PbError> {
        let at = items.len();
        match field.ty {
            Type::Message(id) => {
                check_wire(field, wire, 2)?;
                if let Wire::Bytes(b) = wire {
                    items.push(
                        self.message(id, b, depth + 1)
                            .map_err(|e| e.within(Seg::Index(at)))?,
                    );
                }
            }
            Type::Scalar(s) => match (s.wire_type(), wire) {
                (0 | 1 | 5, Wire::Bytes(packed)) => {
                    let mut r = Reader::new(packed);
                    while let Some(w) =
                        r.packed(s.wire_type())
                            .map_err(|problem| PbError::Malformed {
                                path: String::new(),
                                problem,
                            })?
                    {
                        self.count(1)?;
                        items.push(scalar(s, w));
                    }
                }
                _ => {
                    check_wire(field, wire, s.wire_type())?;
                    self.count(1)?;
                    items.push(scalar(s, wire));
                }
            },
        }
        Ok(())
    }

    /// A `map<string, T>` entry `{key = 1; value = 2}`; a missing value is the type's zero (for
    /// bytes an empty, non-nil slice, as gogo decodes it: `""`).
    fn map_entry(
        &mut self,
        field: &Field,
        entry: &[u8],
        depth: usize,
    ) -> Result<(String, Value), PbError> {
        let mut key: &[u8] = b"";
        let mut value: Option<Wire<'_>> = None;
        let mut r = Reader::new(entry);
        let malformed = |problem| PbError::Malformed {
            path: String::new(),
            problem,
        };
        while let Some((number, wire)) = r.field().map_err(malformed)? {
            match (number, wire) {
                (1, Wire::Bytes(b)) => key = b,
                (1, other) => {
                    return Err(malformed(Problem::WrongWireType {
                        field: 1,
                        got: other.wire_type(),
                        expected: 2,
                    }));
                }
                (2, w) => value = Some(w),
                _ => {}
            }
        }
        let key = String::from_utf8_lossy(key).into_owned();
        self.count(1)?;
        let value = match (field.ty, value) {
            (Type::Message(id), None) => self.message(id, &[], depth + 1),
            (Type::Message(id), Some(Wire::Bytes(b))) => self.message(id, b, depth + 1),
            (Type::Message(_), Some(other)) => Err(malformed(Problem::WrongWireType {
                field: 2,
                got: other.wire_type(),
                expected: 2,
            })),
            (Type::Scalar(s), None) => Ok(zero(s)),
            (Type::Scalar(s), Some(w)) if w.wire_type() == s.wire_type() => Ok(scalar(s, w)),
            (Type::Scalar(s), Some(other)) => Err(malformed(Problem::WrongWireType {
                field: 2,
                got: other.wire_type(),
                expected: s.wire_type(),
            })),
        }
        .map_err(|e| e.within(Seg::Key(&key)))?;
        Ok((key, value))
    }

    /// Second step: writes one field into the object following Go's encoding rules.
    fn finish(
        &mut self,
        field: &Field,
        slot: Slot<'_>,
        depth: usize,
        out: &mut Map<String, Value>,
    ) -> Result<(), PbError> {
        let value = match (slot, field.ty) {
            (Slot::Scalar(wire), Type::Scalar(s)) => {
                let v = scalar(s, wire);
                if field.omitempty && !field.pointer && is_zero(&v) {
                    return Ok(());
                }
                v
            }
            (Slot::Empty, Type::Scalar(s)) if field.card == Card::One => {
                if field.omitempty {
                    return Ok(());
                }
                // A nil pointer or nil []byte without omitempty is written as null.
                if field.pointer || s == Scalar::Bytes {
                    Value::Null
                } else {
                    zero(s)
                }
            }
            (Slot::Message(bytes), Type::Message(id)) => {
                let v = self.message(id, &bytes, depth + 1)?;
                if self.is_slice(id) && field.omitempty && v.is_null() {
                    return Ok(());
                }
                v
            }
            (Slot::Empty, Type::Message(id)) if field.card == Card::One => {
                if field.omitempty && (field.pointer || self.is_slice(id)) {
                    return Ok(());
                }
                if field.pointer {
                    Value::Null
                } else {
                    // A Go value struct is always written; absent means its zero value.
                    self.message(id, &[], depth + 1)?
                }
            }
            (Slot::List(items), _) if !items.is_empty() => Value::Array(items),
            (Slot::Map(map), _) if !map.is_empty() => Value::Object(map),
            // An absent or empty slice or map: nil in Go.
            _ => {
                if field.omitempty {
                    return Ok(());
                }
                Value::Null
            }
        };
        if field.inline {
            if let Value::Object(map) = value {
                out.extend(map);
            }
            return Ok(());
        }
        if let Some(name) = field.json {
            self.count(1)?;
            out.insert(name.to_owned(), value);
        }
        Ok(())
    }

    /// Whether the Go type behind this message is a slice (so `omitempty` applies to it).
    fn is_slice(&self, id: MsgId) -> bool {
        self.schema.messages[id].shape == Shape::List
    }
}

fn seg_of(field: &Field) -> Seg<'_> {
    Seg::Name(field.json.unwrap_or("(inline)"))
}

fn check_wire(field: &Field, wire: Wire<'_>, expected: u8) -> Result<(), PbError> {
    if wire.wire_type() == expected {
        return Ok(());
    }
    Err(PbError::Malformed {
        path: String::new(),
        problem: Problem::WrongWireType {
            field: field.number,
            got: wire.wire_type(),
            expected,
        },
    })
}

/// A scalar's JSON value. The wire type has been checked against the scalar's.
fn scalar(s: Scalar, wire: Wire<'_>) -> Value {
    match (s, wire) {
        (Scalar::String, Wire::Bytes(b)) => Value::String(String::from_utf8_lossy(b).into_owned()),
        (Scalar::Bytes, Wire::Bytes(b)) => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
        (Scalar::Bool, Wire::Varint(v)) => Value::Bool(v != 0),
        (Scalar::Int32, Wire::Varint(v)) => Value::from(v as i32),
        (Scalar::Int64, Wire::Varint(v)) => Value::from(v as i64),
        (Scalar::Uint32, Wire::Varint(v)) => Value::from(v as u32),
        (Scalar::Uint64, Wire::Varint(v)) => Value::from(v),
        (Scalar::Double, Wire::Fixed64(v)) => Value::from(f64::from_bits(v)),
        (Scalar::Float, Wire::Fixed32(v)) => Value::from(f64::from(f32::from_bits(v))),
        _ => Value::Null,
    }
}

fn zero(s: Scalar) -> Value {
    match s {
        Scalar::String | Scalar::Bytes => Value::String(String::new()),
        Scalar::Bool => Value::Bool(false),
        Scalar::Double | Scalar::Float => Value::from(0.0),
        _ => Value::from(0),
    }
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::Null => true,
        _ => false,
    }
}
