//! `meta.k8s.io/v1` Table responses (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`),
//! what `kubectl get` prints: the kind's columns and one row per object, each row carrying the
//! object as `PartialObjectMetadata` (default), the full object (`includeObject=Object`) or
//! nothing (`includeObject=None`).

use serde_json::{Value, json};

use super::catalog::ResourceDef;

/// What each row carries (`?includeObject=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    None,
    #[default]
    Metadata,
    Object,
}

impl IncludeObject {
    pub fn parse(value: Option<&str>) -> Self {
        match value {
            Some("None") => Self::None,
            Some("Object") => Self::Object,
            _ => Self::Metadata,
        }
    }
}

/// Whether the Accept header asks for a Table.
pub fn wants_table(accept: &str) -> bool {
    accept.split(',').any(|part| {
        let params: Vec<&str> = part.split(';').map(str::trim).collect();
        params.contains(&"as=Table") && !params.contains(&"g=apidiscovery.k8s.io")
    })
}

/// A Table of `objects`; `list_metadata` is the list's metadata (resourceVersion, continue).
pub fn table(
    def: &ResourceDef,
    objects: &[Value],
    list_metadata: &Value,
    include: IncludeObject,
    now: i64,
) -> Value {
    let rows: Vec<Value> = objects
        .iter()
        .map(|object| row(def, object.clone(), include, now))
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_metadata.clone(),
        "columnDefinitions": column_definitions(def),
        "rows": rows,
    })
}

/// The kind's `columnDefinitions`.
pub fn column_definitions(def: &ResourceDef) -> Vec<Value> {
    if let Some(custom) = &def.custom {
        return custom.column_definitions();
    }
    def.strategy()
        .columns()
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "type": c.kind,
                "format": c.format,
                "description": c.description,
                "priority": c.priority,
            })
        })
        .collect()
}

/// One Table row of `object` (consumed: the row may carry it).
pub fn row(def: &ResourceDef, mut object: Value, include: IncludeObject, now: i64) -> Value {
    let strategy = def.strategy();
    let mut row = json!({"cells": strategy.row(&object, now)});
    let conditions = strategy.row_conditions(&object);
    if !conditions.is_empty() {
        row["conditions"] = Value::Array(conditions);
    }
    match include {
        IncludeObject::None => {}
        IncludeObject::Object => row["object"] = object,
        IncludeObject::Metadata => {
            let metadata = object
                .get_mut("metadata")
                .map(Value::take)
                .unwrap_or(json!({}));
            row["object"] = json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": metadata,
            });
        }
    }
    row
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::catalog::Catalog;

    #[test]
    fn table_rows_carry_partial_metadata() {
        let catalog = Catalog::builtin();
        let cm = catalog.lookup("", "v1", "configmaps").expect("cm");
        let object = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "namespace": "d", "creationTimestamp": "2026-01-01T00:00:00Z"}});
        let t = table(
            cm,
            &[object],
            &json!({"resourceVersion": "5"}),
            IncludeObject::Metadata,
            1_767_225_600 + 90,
        );
        assert_eq!(t["rows"][0]["cells"][0], "a");
        // NAME, DATA, AGE (the ConfigMap printer).
        assert_eq!(t["rows"][0]["cells"][1], 0);
        assert_eq!(t["rows"][0]["cells"][2], "90s");
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert!(wants_table(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
        ));
        assert!(!wants_table("application/json"));
    }
}
