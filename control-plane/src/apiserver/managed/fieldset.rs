//! Field sets: which fields of an object a manager owns, as a trie of path elements, with the
//! set algebra server-side apply needs and the `FieldsV1` wire encoding of `managedFields`.
//!
//! A path element is one of (in upstream's sort order): a struct field or map key (`f:<name>`),
//! a list item by its key fields (`k:{"name":"web"}`), a set item by its value (`v:"a"`), or a
//! list item by index (`i:3`). A node of the trie is a *member* of the set when the path that
//! leads to it is itself in the set (`".": {}` in FieldsV1 when the node also has children; a
//! childless member is just `{}`).

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

/// One step of a path into an object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathElement {
    /// A struct field or a map key: `f:<name>`.
    Field(String),
    /// An item of an associative list, by the canonical JSON object of its key fields
    /// (compact, keys sorted): `k:{"containerPort":80,"protocol":"TCP"}`.
    Key(String),
    /// An item of a set list, by the compact JSON of its value: `v:"a"`.
    Value(String),
    /// An item of a list by position: `i:<index>`.
    Index(usize),
}

impl PathElement {
    /// A `k:` element from key fields and their values.
    pub fn key(fields: &[(String, Value)]) -> Self {
        let map: Map<String, Value> = fields.iter().cloned().collect();
        PathElement::Key(Value::Object(map).to_string())
    }

    /// A `v:` element for a set item.
    pub fn value(value: &Value) -> Self {
        PathElement::Value(value.to_string())
    }

    /// The FieldsV1 key of this element.
    pub fn encode(&self) -> String {
        match self {
            PathElement::Field(name) => format!("f:{name}"),
            PathElement::Key(json) => format!("k:{json}"),
            PathElement::Value(json) => format!("v:{json}"),
            PathElement::Index(i) => format!("i:{i}"),
        }
    }

    /// Parses a FieldsV1 key (`f:`, `k:`, `v:`, `i:`); JSON parts are re-encoded canonically.
    pub fn decode(text: &str) -> Result<Self, String> {
        let (prefix, rest) = text
            .split_once(':')
            .ok_or_else(|| format!("invalid path element {text:?}"))?;
        match prefix {
            "f" => Ok(PathElement::Field(rest.to_string())),
            "k" => match serde_json::from_str::<Value>(rest) {
                Ok(Value::Object(map)) => Ok(PathElement::Key(Value::Object(map).to_string())),
                _ => Err(format!("invalid key path element {text:?}")),
            },
            "v" => serde_json::from_str::<Value>(rest)
                .map(|v| PathElement::value(&v))
                .map_err(|_| format!("invalid value path element {text:?}")),
            "i" => rest
                .parse()
                .map(PathElement::Index)
                .map_err(|_| format!("invalid index path element {text:?}")),
            _ => Err(format!("unknown path element prefix in {text:?}")),
        }
    }
}

impl fmt::Display for PathElement {
    /// Upstream's path notation: `.name`, `[name="web"]`, `[="a"]`, `[3]` (values as JSON).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathElement::Field(name) => write!(f, ".{name}"),
            PathElement::Key(json) => {
                let parts: Vec<String> = match serde_json::from_str::<Value>(json) {
                    Ok(Value::Object(map)) => map.iter().map(|(k, v)| format!("{k}={v}")).collect(),
                    _ => vec![json.clone()],
                };
                write!(f, "[{}]", parts.join(","))
            }
            PathElement::Value(json) => write!(f, "[={json}]"),
            PathElement::Index(i) => write!(f, "[{i}]"),
        }
    }
}

/// A path: the elements from the object's root.
pub type Path = Vec<PathElement>;

/// A path in upstream's notation (`.spec.replicas`).
pub fn path_string(path: &[PathElement]) -> String {
    path.iter().map(ToString::to_string).collect()
}

/// A set of paths, stored as a trie. Nodes without members below them are never kept, so two
/// sets with the same paths compare equal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet {
    member: bool,
    children: BTreeMap<PathElement, FieldSet>,
}

impl FieldSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// A set of the given paths.
    pub fn from_paths<'a>(paths: impl IntoIterator<Item = &'a [PathElement]>) -> Self {
        let mut set = Self::new();
        for path in paths {
            set.insert(path);
        }
        set
    }

    pub fn is_empty(&self) -> bool {
        !self.member && self.children.is_empty()
    }

    /// Adds `path` (the empty path is the root itself).
    pub fn insert(&mut self, path: &[PathElement]) {
        match path.split_first() {
            None => self.member = true,
            Some((first, rest)) => self.children.entry(first.clone()).or_default().insert(rest),
        }
    }

    /// Whether `path` is a member.
    pub fn contains(&self, path: &[PathElement]) -> bool {
        self.node(path).is_some_and(|n| n.member)
    }

    /// The subtree at `path`, if any member is at or below it.
    pub fn node(&self, path: &[PathElement]) -> Option<&FieldSet> {
        match path.split_first() {
            None => Some(self),
            Some((first, rest)) => self.children.get(first)?.node(rest),
        }
    }

    /// The subtree under one element.
    pub fn child(&self, element: &PathElement) -> Option<&FieldSet> {
        self.children.get(element)
    }

    /// Whether the root itself is a member.
    pub fn is_member(&self) -> bool {
        self.member
    }

    /// The child elements and their subtrees.
    pub fn children(&self) -> impl Iterator<Item = (&PathElement, &FieldSet)> {
        self.children.iter()
    }

    pub fn union(&self, other: &FieldSet) -> FieldSet {
        let mut out = self.clone();
        out.union_in(other);
        out
    }

    fn union_in(&mut self, other: &FieldSet) {
        self.member |= other.member;
        for (pe, child) in &other.children {
            self.children.entry(pe.clone()).or_default().union_in(child);
        }
    }

    /// Members of `self` that are not members of `other`.
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && !other.member,
            children: BTreeMap::new(),
        };
        for (pe, child) in &self.children {
            let diff = match other.children.get(pe) {
                Some(o) => child.difference(o),
                None => child.clone(),
            };
            if !diff.is_empty() {
                out.children.insert(pe.clone(), diff);
            }
        }
        out
    }

    /// Members of `self` that are neither members of `other` nor below one of its members.
    pub fn recursive_difference(&self, other: &FieldSet) -> FieldSet {
        if other.member {
            return FieldSet::new();
        }
        let mut out = FieldSet {
            member: self.member,
            children: BTreeMap::new(),
        };
        for (pe, child) in &self.children {
            let diff = match other.children.get(pe) {
                Some(o) => child.recursive_difference(o),
                None => child.clone(),
            };
            if !diff.is_empty() {
                out.children.insert(pe.clone(), diff);
            }
        }
        out
    }

    /// Members of both.
    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && other.member,
            children: BTreeMap::new(),
        };
        for (pe, child) in &self.children {
            if let Some(o) = other.children.get(pe) {
                let both = child.intersection(o);
                if !both.is_empty() {
                    out.children.insert(pe.clone(), both);
                }
            }
        }
        out
    }

    /// Every member path, parents before children, siblings in element order.
    pub fn paths(&self) -> Vec<Path> {
        let mut out = Vec::new();
        self.collect(&mut Vec::new(), &mut out);
        out
    }

    fn collect(&self, prefix: &mut Path, out: &mut Vec<Path>) {
        if self.member {
            out.push(prefix.clone());
        }
        for (pe, child) in &self.children {
            prefix.push(pe.clone());
            child.collect(prefix, out);
            prefix.pop();
        }
    }

    /// The FieldsV1 JSON of the set.
    pub fn to_fields_v1(&self) -> Value {
        let mut map = Map::new();
        if self.member && !self.children.is_empty() {
            map.insert(".".into(), Value::Object(Map::new()));
        }
        for (pe, child) in &self.children {
            map.insert(pe.encode(), child.to_fields_v1());
        }
        Value::Object(map)
    }

    /// Parses FieldsV1 JSON; the root of the value is the object itself (not a member).
    pub fn from_fields_v1(value: &Value) -> Result<FieldSet, String> {
        let mut set = Self::parse_node(value, 0)?;
        set.member = false;
        Ok(set)
    }

    fn parse_node(value: &Value, depth: usize) -> Result<FieldSet, String> {
        if depth > 100 {
            return Err("fieldsV1 nests too deeply".into());
        }
        let Value::Object(map) = value else {
            return Err(format!("expected an object in fieldsV1, got {value}"));
        };
        let mut set = FieldSet {
            member: map.is_empty(),
            children: BTreeMap::new(),
        };
        for (key, child) in map {
            if key == "." {
                if child.as_object().is_none_or(|m| !m.is_empty()) {
                    return Err("\".\" must map to an empty object in fieldsV1".into());
                }
                set.member = true;
                continue;
            }
            let pe = PathElement::decode(key)?;
            let parsed = Self::parse_node(child, depth + 1)?;
            set.children.entry(pe).or_default().union_in(&parsed);
        }
        Ok(set)
    }
}
