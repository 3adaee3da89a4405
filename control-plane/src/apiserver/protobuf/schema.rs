//! The message descriptors the converter runs on, parsed once from the generated `k8s.schema`.
//!
//! The table (see `examples/pb-schema-gen.rs`) carries, per field, what the `.proto` files say
//! (number, cardinality, type) plus what only the Go structs say: the JSON name, `omitempty`,
//! `,inline` and whether the Go field is a pointer. Kinds map `(apiVersion, kind)` to a message.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

/// The generated table, embedded.
const TABLE: &str = include_str!("k8s.schema");

/// Index of a message in [`Schema::messages`].
pub(super) type MsgId = usize;

/// Scalar protobuf types used by the Kubernetes API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scalar {
    String,
    Bytes,
    Bool,
    Int32,
    Int64,
    Uint32,
    Uint64,
    Double,
    Float,
}

impl Scalar {
    fn parse(s: &str) -> Option<Scalar> {
        Some(match s {
            "string" => Scalar::String,
            "bytes" => Scalar::Bytes,
            "bool" => Scalar::Bool,
            "int32" => Scalar::Int32,
            "int64" => Scalar::Int64,
            "uint32" => Scalar::Uint32,
            "uint64" => Scalar::Uint64,
            "double" => Scalar::Double,
            "float" => Scalar::Float,
            _ => return None,
        })
    }

    /// The wire type a singular value of this scalar uses.
    pub(super) fn wire_type(self) -> u8 {
        match self {
            Scalar::String | Scalar::Bytes => 2,
            Scalar::Bool | Scalar::Int32 | Scalar::Int64 | Scalar::Uint32 | Scalar::Uint64 => 0,
            Scalar::Double => 1,
            Scalar::Float => 5,
        }
    }
}

/// Messages whose JSON form is not an object of their fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Special {
    /// `metav1.Time`: RFC 3339 with seconds, `null` when zero.
    Time,
    /// `metav1.MicroTime`: RFC 3339 with microseconds, `null` when zero.
    MicroTime,
    /// `metav1.Duration`: Go's duration string.
    Duration,
    /// `resource.Quantity`: its string.
    Quantity,
    /// `intstr.IntOrString`: a number or a string.
    IntOrString,
    /// `runtime.RawExtension`, `metav1.FieldsV1`: bytes that are JSON (or a nested envelope).
    RawJson,
    /// `runtime.Unknown`: a nested envelope.
    Unknown,
}

/// What a message becomes in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shape {
    /// An object of its fields.
    Object,
    /// A Go named slice (`type ExtraValue []string`) wrapped as `{repeated items = 1}`: an array.
    List,
    Special(Special),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Card {
    One,
    Repeated,
    /// `map<string, T>`: entries `{key = 1, value = 2}`.
    Map,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Type {
    Scalar(Scalar),
    Message(MsgId),
}

#[derive(Debug)]
pub(super) struct Field {
    pub(super) number: u32,
    /// The JSON name; `None` for inlined or JSON-less fields.
    pub(super) json: Option<&'static str>,
    pub(super) card: Card,
    pub(super) ty: Type,
    /// A Go pointer: present-with-zero is kept, absent is omitted.
    pub(super) pointer: bool,
    /// Go `omitempty` (or `omitzero`): a zero scalar, empty list or empty map is omitted.
    pub(super) omitempty: bool,
    /// Go `json:",inline"`: the sub-message's fields are the parent's.
    pub(super) inline: bool,
    /// Go `json:"-"`: not in JSON at all.
    pub(super) skip: bool,
}

#[derive(Debug)]
pub(super) struct Message {
    pub(super) name: &'static str,
    pub(super) shape: Shape,
    /// Sorted by number.
    pub(super) fields: Vec<Field>,
    /// Field index by number, for numbers up to the largest.
    by_number: Vec<Option<u16>>,
}

impl Message {
    pub(super) fn field(&self, number: u32) -> Option<(usize, &Field)> {
        let idx = usize::from((*self.by_number.get(number as usize)?)?);
        Some((idx, &self.fields[idx]))
    }
}

#[derive(Debug)]
pub(super) struct Schema {
    pub(super) messages: Vec<Message>,
    kinds: HashMap<(&'static str, &'static str), MsgId>,
    any_version_kinds: HashMap<&'static str, MsgId>,
    group_versions: HashSet<&'static str>,
}

impl Schema {
    /// The message of a top-level kind. Kinds of meta.k8s.io/v1 (`DeleteOptions`, …) are found
    /// under every group version the schema knows, as upstream registers them in each.
    pub(super) fn kind(&self, api_version: &str, kind: &str) -> Option<MsgId> {
        if let Some(id) = self.kinds.get(&(api_version, kind)) {
            return Some(*id);
        }
        if api_version == "meta.k8s.io/v1" || self.group_versions.contains(api_version) {
            return self.any_version_kinds.get(kind).copied();
        }
        None
    }

    /// Every `(apiVersion, kind)` with its own message (not the meta kinds every version has).
    #[cfg(test)]
    pub(super) fn kinds(&self) -> impl Iterator<Item = (&'static str, &'static str, MsgId)> + '_ {
        self.kinds.iter().map(|((gv, k), id)| (*gv, *k, *id))
    }

    /// The message with this name (as written in the table, e.g. `api.core.v1.Pod`).
    #[cfg(test)]
    pub(super) fn message_named(&self, name: &str) -> Option<MsgId> {
        self.messages.iter().position(|m| m.name == name)
    }
}

/// The embedded schema. The table is generated and checked by the tests, so a parse failure is a
/// build defect, not an input problem.
pub(super) static SCHEMA: LazyLock<Schema> = LazyLock::new(|| {
    parse(TABLE).unwrap_or_else(|e| panic!("embedded k8s.schema is invalid: {e}"))
});

fn parse(text: &'static str) -> Result<Schema, String> {
    let lines = || {
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
    };
    // Pass 1: message names, so fields can refer forward.
    let mut ids: HashMap<&str, MsgId> = HashMap::new();
    let mut messages = Vec::new();
    for (_, line) in lines() {
        if let Some(rest) = line.strip_prefix("m ") {
            let mut words = rest.split(' ');
            let name = words.next().unwrap_or_default();
            let shape = match words.next() {
                None => Shape::Object,
                Some("list") => Shape::List,
                Some("time") => Shape::Special(Special::Time),
                Some("microtime") => Shape::Special(Special::MicroTime),
                Some("duration") => Shape::Special(Special::Duration),
                Some("quantity") => Shape::Special(Special::Quantity),
                Some("intorstring") => Shape::Special(Special::IntOrString),
                Some("rawjson") => Shape::Special(Special::RawJson),
                Some("unknown") => Shape::Special(Special::Unknown),
                Some(other) => return Err(format!("message {name}: unknown shape {other}")),
            };
            ids.insert(name, messages.len());
            messages.push(Message {
                name,
                shape,
                fields: Vec::new(),
                by_number: Vec::new(),
            });
        }
    }
    // Pass 2: fields and kinds.
    let mut kinds = HashMap::new();
    let mut any_version_kinds = HashMap::new();
    let mut group_versions = HashSet::new();
    let mut current: Option<MsgId> = None;
    for (n, line) in lines() {
        let err = |what: &str| format!("line {}: {what}: {line}", n + 1);
        let words: Vec<&'static str> = line.split(' ').collect();
        match words.as_slice() {
            ["k", gv, kind, msg] => {
                let id = *ids.get(msg).ok_or_else(|| err("unknown message"))?;
                if *gv == "*" {
                    any_version_kinds.insert(*kind, id);
                } else {
                    group_versions.insert(*gv);
                    kinds.insert((*gv, *kind), id);
                }
            }
            ["m", name, ..] => current = ids.get(name).copied(),
            [number, json, card, ty, flags] => {
                let msg = current.ok_or_else(|| err("field outside a message"))?;
                let ty = match Scalar::parse(ty) {
                    Some(s) => Type::Scalar(s),
                    None => Type::Message(*ids.get(ty).ok_or_else(|| err("unknown type"))?),
                };
                let card = match *card {
                    "1" => Card::One,
                    "*" => Card::Repeated,
                    "map" => Card::Map,
                    _ => return Err(err("bad cardinality")),
                };
                if flags.chars().any(|c| !"poizx-".contains(c)) {
                    return Err(err("bad flags"));
                }
                let field = Field {
                    number: number.parse().map_err(|_| err("bad number"))?,
                    json: (*json != "-").then_some(*json),
                    card,
                    ty,
                    pointer: flags.contains('p'),
                    omitempty: flags.contains('o') || flags.contains('z'),
                    inline: flags.contains('i'),
                    skip: flags.contains('x'),
                };
                if field.json.is_none()
                    && !field.inline
                    && !field.skip
                    && messages[msg].shape == Shape::Object
                {
                    return Err(err("field without a JSON name"));
                }
                messages[msg].fields.push(field);
            }
            _ => return Err(err("unrecognised line")),
        }
    }
    for m in &mut messages {
        m.fields.sort_by_key(|f| f.number);
        let max = m.fields.last().map_or(0, |f| f.number as usize);
        if max > 4096 {
            return Err(format!(
                "{}: field number {max} too large for the lookup table",
                m.name
            ));
        }
        m.by_number = vec![None; max + 1];
        for (i, f) in m.fields.iter().enumerate() {
            m.by_number[f.number as usize] = Some(u16::try_from(i).map_err(|_| "too many fields")?);
        }
    }
    Ok(Schema {
        messages,
        kinds,
        any_version_kinds,
        group_versions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_table_parses_and_has_the_kinds_kubectl_sends() {
        let s = &*SCHEMA;
        for (gv, kind) in [
            ("v1", "ConfigMap"),
            ("v1", "Secret"),
            ("v1", "Namespace"),
            ("v1", "Service"),
            ("v1", "ServiceAccount"),
            ("v1", "ResourceQuota"),
            ("apps/v1", "Deployment"),
            ("batch/v1", "Job"),
            ("batch/v1", "CronJob"),
            ("rbac.authorization.k8s.io/v1", "Role"),
            ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
            ("policy/v1", "PodDisruptionBudget"),
            ("scheduling.k8s.io/v1", "PriorityClass"),
            ("networking.k8s.io/v1", "Ingress"),
            ("authentication.k8s.io/v1", "TokenRequest"),
            ("authentication.k8s.io/v1", "SelfSubjectReview"),
            ("authorization.k8s.io/v1", "SelfSubjectAccessReview"),
            ("authorization.k8s.io/v1", "SelfSubjectRulesReview"),
            ("autoscaling/v1", "Scale"),
            ("v1", "DeleteOptions"),
            ("apps/v1", "DeleteOptions"),
            ("meta.k8s.io/v1", "DeleteOptions"),
        ] {
            assert!(s.kind(gv, kind).is_some(), "{gv} {kind}");
        }
        assert_eq!(s.kind("v1", "Deployment"), None);
        assert_eq!(s.kind("example.com/v1", "DeleteOptions"), None);
    }

    #[test]
    fn fields_carry_go_semantics() {
        let s = &*SCHEMA;
        let meta = &s.messages[s
            .message_named("pkg.apis.meta.v1.ObjectMeta")
            .expect("ObjectMeta")];
        let (_, name) = meta.field(1).expect("name");
        assert_eq!(
            (name.json, name.pointer, name.omitempty),
            (Some("name"), false, true)
        );
        let (_, grace) = meta.field(10).expect("deletionGracePeriodSeconds");
        assert!(grace.pointer);
        let volume = &s.messages[s.message_named("api.core.v1.Volume").expect("Volume")];
        assert!(volume.field(2).expect("volumeSource").1.inline);
    }
}
