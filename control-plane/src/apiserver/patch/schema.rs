//! Patch metadata: per field, how lists and maps merge, compiled from OpenAPI v3 schemas.
//!
//! A [`SchemaGraph`] is built once from a set of OpenAPI v3 definitions
//! (`components.schemas`: name → schema, linked by `$ref`) and read through cheap [`SchemaNode`]
//! cursors. Each object property carries a [`FieldMeta`] made of the Kubernetes extensions on that
//! property's schema:
//!
//! | extension | field | used by |
//! |---|---|---|
//! | `x-kubernetes-patch-strategy` (`merge`, `replace`, `retainKeys`, `merge,retainKeys`) | [`FieldMeta::patch_strategy`] | strategic merge patch |
//! | `x-kubernetes-patch-merge-key` | [`FieldMeta::patch_merge_key`] | strategic merge patch |
//! | `x-kubernetes-list-type` (`atomic`, `set`, `map`) | [`FieldMeta::list_type`] | server-side apply |
//! | `x-kubernetes-list-map-keys` | [`FieldMeta::list_map_keys`] | server-side apply |
//! | `x-kubernetes-map-type` (`atomic`, `granular`) | [`FieldMeta::map_type`] | server-side apply |
//!
//! Like upstream, the strategic-merge lookup reads the extensions of the *property* schema (before
//! `$ref` resolution); extensions on a definition itself (`+structType=atomic`) are kept apart in
//! [`SchemaNode::type_meta`]. The graph works for any OpenAPI v3 source: the built-in kinds
//! ([`super::builtin`]) or a CRD's `openAPIV3Schema` (which server-side apply needs).

use std::collections::HashMap;

use serde_json::{Map, Value};

/// `x-kubernetes-patch-strategy`: how strategic merge patch combines a field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PatchStrategy {
    /// `merge`: lists merge (by [`FieldMeta::patch_merge_key`] for lists of objects, as a set for
    /// lists of primitives). Without it, lists are replaced wholesale.
    pub merge: bool,
    /// `replace`: the value is replaced wholesale (maps too).
    pub replace: bool,
    /// `retainKeys`: clients send `$retainKeys` for this map (informational on the server: the
    /// directive works wherever it appears).
    pub retain_keys: bool,
    /// The extension named something else, or more than two strategies (upstream rejects such a
    /// field when a patch touches it).
    pub invalid: bool,
}

impl PatchStrategy {
    /// Parses the comma-separated extension value.
    pub fn parse(value: &str) -> Self {
        let mut s = PatchStrategy::default();
        let parts: Vec<&str> = value.split(',').map(str::trim).collect();
        for part in &parts {
            match *part {
                "merge" => s.merge = true,
                "replace" => s.replace = true,
                "retainKeys" => s.retain_keys = true,
                _ => s.invalid = true,
            }
        }
        // Upstream allows one strategy, or two of which one is retainKeys.
        if parts.len() > 2 || (parts.len() == 2 && !s.retain_keys) {
            s.invalid = true;
        }
        s
    }
}

/// `x-kubernetes-list-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListType {
    /// The list is one value, replaced as a whole.
    Atomic,
    /// Scalars, each present once; merged as a set.
    Set,
    /// Objects identified by [`FieldMeta::list_map_keys`].
    Map,
}

/// `x-kubernetes-map-type` (also what `+structType` becomes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapType {
    /// The map or struct is one value.
    Atomic,
    /// Each key is owned and merged separately (the default).
    Granular,
}

/// The merge facts of one field (or of a definition: [`SchemaNode::type_meta`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldMeta {
    /// `x-kubernetes-patch-strategy`.
    pub patch_strategy: PatchStrategy,
    /// `x-kubernetes-patch-merge-key`.
    pub patch_merge_key: Option<String>,
    /// `x-kubernetes-list-type`.
    pub list_type: Option<ListType>,
    /// `x-kubernetes-list-map-keys`.
    pub list_map_keys: Vec<String>,
    /// `x-kubernetes-map-type`.
    pub map_type: Option<MapType>,
}

impl FieldMeta {
    /// Reads the extensions of one schema object; unknown values are ignored.
    pub fn from_schema(schema: &Map<String, Value>) -> Self {
        let str_of = |k: &str| schema.get(k).and_then(Value::as_str);
        FieldMeta {
            patch_strategy: str_of("x-kubernetes-patch-strategy")
                .map(PatchStrategy::parse)
                .unwrap_or_default(),
            patch_merge_key: str_of("x-kubernetes-patch-merge-key").map(str::to_owned),
            list_type: match str_of("x-kubernetes-list-type") {
                Some("atomic") => Some(ListType::Atomic),
                Some("set") => Some(ListType::Set),
                Some("map") => Some(ListType::Map),
                _ => None,
            },
            list_map_keys: schema
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|keys| {
                    keys.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            map_type: match str_of("x-kubernetes-map-type") {
                Some("atomic") => Some(MapType::Atomic),
                Some("granular") => Some(MapType::Granular),
                _ => None,
            },
        }
    }

    /// The list semantics server-side apply uses: `x-kubernetes-list-type` when present, else
    /// derived from the patch strategy like upstream's schema conversion (`merge` with a merge key
    /// → map keyed by it, `merge` without → set, otherwise atomic). Returns the type and its keys.
    pub fn effective_list_type(&self) -> (ListType, Vec<String>) {
        match self.list_type {
            Some(ListType::Map) => (ListType::Map, self.list_map_keys.clone()),
            Some(t) => (t, Vec::new()),
            None if self.patch_strategy.merge => match &self.patch_merge_key {
                Some(key) => (ListType::Map, vec![key.clone()]),
                None => (ListType::Set, Vec::new()),
            },
            None => (ListType::Atomic, Vec::new()),
        }
    }
}

type NodeId = usize;

#[derive(Debug)]
struct Field {
    meta: FieldMeta,
    node: NodeId,
}

#[derive(Debug)]
enum Kind {
    /// Anything (no type, unresolved `$ref`, `x-kubernetes-preserve-unknown-fields`).
    Any,
    Scalar,
    Array(NodeId),
    Object {
        properties: HashMap<String, Field>,
        /// `additionalProperties` schema: a map with these values.
        additional: Option<NodeId>,
    },
}

#[derive(Debug)]
struct Node {
    kind: Kind,
    type_meta: FieldMeta,
    name: Option<String>,
}

/// Compiled OpenAPI v3 definitions, navigable field by field.
#[derive(Debug)]
pub struct SchemaGraph {
    nodes: Vec<Node>,
    by_name: HashMap<String, NodeId>,
}

/// The empty metadata of a map value or an unknown field.
static NO_META: FieldMeta = FieldMeta {
    patch_strategy: PatchStrategy {
        merge: false,
        replace: false,
        retain_keys: false,
        invalid: false,
    },
    patch_merge_key: None,
    list_type: None,
    list_map_keys: Vec::new(),
    map_type: None,
};

const ANY: NodeId = 0;

impl SchemaGraph {
    /// Compiles `definitions` (the `components.schemas` object of an OpenAPI v3 document, or
    /// schemars' definitions). `$ref`s of the forms `#/components/schemas/N`, `#/definitions/N` and
    /// `#/$defs/N` resolve to `N`; unresolved ones become "anything".
    pub fn from_definitions(definitions: &Map<String, Value>) -> Self {
        let mut graph = SchemaGraph {
            nodes: vec![Node {
                kind: Kind::Any,
                type_meta: FieldMeta::default(),
                name: None,
            }],
            by_name: HashMap::new(),
        };
        for name in definitions.keys() {
            let id = graph.nodes.len();
            graph.nodes.push(Node {
                kind: Kind::Any,
                type_meta: FieldMeta::default(),
                name: Some(name.clone()),
            });
            graph.by_name.insert(name.clone(), id);
        }
        for (name, schema) in definitions {
            let id = graph.by_name[name];
            let (kind, type_meta) = graph.compile_kind(schema, 0);
            graph.nodes[id].kind = kind;
            graph.nodes[id].type_meta = type_meta;
        }
        graph
    }

    /// Compiles one standalone schema (e.g. a CRD version's `openAPIV3Schema`) and returns the graph
    /// with that schema as the definition named `root`.
    pub fn from_schema(root: &str, schema: &Value) -> Self {
        let mut definitions = Map::new();
        definitions.insert(root.to_owned(), schema.clone());
        Self::from_definitions(&definitions)
    }

    /// The definition `name` (e.g. `io.k8s.api.apps.v1.Deployment`).
    pub fn definition(&self, name: &str) -> Option<SchemaNode<'_>> {
        self.by_name
            .get(name)
            .map(|&id| SchemaNode { graph: self, id })
    }

    /// Names of all definitions.
    pub fn definition_names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    fn push(&mut self, kind: Kind, type_meta: FieldMeta) -> NodeId {
        self.nodes.push(Node {
            kind,
            type_meta,
            name: None,
        });
        self.nodes.len() - 1
    }

    /// The node a (sub)schema denotes: a definition for a `$ref`, else a new anonymous node.
    fn compile_node(&mut self, schema: &Value, depth: usize) -> NodeId {
        if let Some(target) = self.ref_target(schema) {
            return target;
        }
        let (kind, meta) = self.compile_kind(schema, depth);
        if matches!(kind, Kind::Any) && meta == FieldMeta::default() {
            return ANY;
        }
        self.push(kind, meta)
    }

    fn ref_target(&self, schema: &Value) -> Option<NodeId> {
        let obj = schema.as_object()?;
        if let Some(r) = obj.get("$ref").and_then(Value::as_str) {
            let name = r.rsplit_once('/').map_or(r, |(_, n)| n);
            let name = name.replace("~1", "/").replace("~0", "~");
            return Some(self.by_name.get(&name).copied().unwrap_or(ANY));
        }
        // `allOf: [{$ref}]` (upstream's and schemars' way to give a `$ref` siblings).
        let first = obj.get("allOf")?.as_array()?.first()?;
        self.ref_target(first)
    }

    fn compile_kind(&mut self, schema: &Value, depth: usize) -> (Kind, FieldMeta) {
        let Some(obj) = schema.as_object() else {
            return (Kind::Any, FieldMeta::default());
        };
        let meta = FieldMeta::from_schema(obj);
        // Schemas nest finitely, but be defensive about what a CRD author can write.
        if depth > 64 {
            return (Kind::Any, meta);
        }
        if let Some(target) = self.ref_target(schema) {
            let kind = match &self.nodes[target].kind {
                Kind::Array(items) => Kind::Array(*items),
                _ => Kind::Any,
            };
            return (kind, meta);
        }
        if let Some(first) = obj
            .get("allOf")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
        {
            let (kind, inner) = self.compile_kind(first, depth + 1);
            return (
                kind,
                if meta == FieldMeta::default() {
                    inner
                } else {
                    meta
                },
            );
        }
        let ty = obj.get("type").and_then(Value::as_str);
        if ty == Some("array") || obj.contains_key("items") {
            let items = obj
                .get("items")
                .map_or(ANY, |i| self.compile_node(i, depth + 1));
            return (Kind::Array(items), meta);
        }
        let props = obj.get("properties").and_then(Value::as_object);
        let additional = obj.get("additionalProperties").filter(|v| v.is_object());
        if ty == Some("object") || props.is_some() || additional.is_some() {
            let mut properties = HashMap::new();
            for (name, prop) in props.into_iter().flatten() {
                let meta = prop
                    .as_object()
                    .map(FieldMeta::from_schema)
                    .unwrap_or_default();
                let node = self.compile_node(prop, depth + 1);
                properties.insert(name.clone(), Field { meta, node });
            }
            let additional = additional.map(|a| self.compile_node(a, depth + 1));
            if properties.is_empty() && additional.is_none() {
                return (Kind::Any, meta);
            }
            return (
                Kind::Object {
                    properties,
                    additional,
                },
                meta,
            );
        }
        match ty {
            Some("string" | "integer" | "number" | "boolean") => (Kind::Scalar, meta),
            _ => (Kind::Any, meta),
        }
    }
}

/// What a [`SchemaNode`] describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// No usable schema: anything goes (unknown fields fall back to JSON merge behaviour).
    Any,
    /// A string, number, integer or boolean.
    Scalar,
    /// A list; see [`SchemaNode::items`].
    Array,
    /// An object with named properties (possibly also `additionalProperties`).
    Struct,
    /// An object whose values all share one schema (`additionalProperties` only).
    Map,
}

/// A cursor into a [`SchemaGraph`]. Copy it freely.
#[derive(Debug, Clone, Copy)]
pub struct SchemaNode<'a> {
    graph: &'a SchemaGraph,
    id: NodeId,
}

/// One field of an object: its metadata and the schema of its value.
#[derive(Debug, Clone, Copy)]
pub struct FieldRef<'a> {
    /// The extensions on the property.
    pub meta: &'a FieldMeta,
    /// The value's schema (for a list: the list; use [`SchemaNode::items`] for its elements).
    pub node: SchemaNode<'a>,
}

impl<'a> SchemaNode<'a> {
    fn node(&self) -> &'a Node {
        &self.graph.nodes[self.id]
    }

    /// The kind of value this schema describes.
    pub fn kind(&self) -> NodeKind {
        match &self.node().kind {
            Kind::Any => NodeKind::Any,
            Kind::Scalar => NodeKind::Scalar,
            Kind::Array(_) => NodeKind::Array,
            Kind::Object { properties, .. } if properties.is_empty() => NodeKind::Map,
            Kind::Object { .. } => NodeKind::Struct,
        }
    }

    /// The definition name, for named (`$ref`-able) schemas.
    pub fn name(&self) -> Option<&'a str> {
        self.node().name.as_deref()
    }

    /// Extensions on the definition itself (`x-kubernetes-map-type: atomic` from `+structType`).
    pub fn type_meta(&self) -> &'a FieldMeta {
        &self.node().type_meta
    }

    /// The field `name` of an object: a named property, else the `additionalProperties` value
    /// schema (with no metadata). `None` when the schema does not know the field.
    pub fn field(&self, name: &str) -> Option<FieldRef<'a>> {
        let Kind::Object {
            properties,
            additional,
        } = &self.node().kind
        else {
            return None;
        };
        if let Some(f) = properties.get(name) {
            return Some(FieldRef {
                meta: &f.meta,
                node: SchemaNode {
                    graph: self.graph,
                    id: f.node,
                },
            });
        }
        additional.map(|id| FieldRef {
            meta: &NO_META,
            node: SchemaNode {
                graph: self.graph,
                id,
            },
        })
    }

    /// The named properties of an object schema.
    pub fn properties(&self) -> impl Iterator<Item = (&'a str, FieldRef<'a>)> + 'a {
        let graph = self.graph;
        let props = match &self.node().kind {
            Kind::Object { properties, .. } => Some(properties),
            _ => None,
        };
        props.into_iter().flatten().map(move |(name, f)| {
            (
                name.as_str(),
                FieldRef {
                    meta: &f.meta,
                    node: SchemaNode { graph, id: f.node },
                },
            )
        })
    }

    /// The element schema of a list.
    pub fn items(&self) -> Option<SchemaNode<'a>> {
        match self.node().kind {
            Kind::Array(id) => Some(SchemaNode {
                graph: self.graph,
                id,
            }),
            _ => None,
        }
    }
}
