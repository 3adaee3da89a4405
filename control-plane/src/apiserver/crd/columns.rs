//! `additionalPrinterColumns` of custom resources: the Table column definitions (NAME first,
//! then the CRD's columns, or AGE when it declares none, as upstream) and the cells, read with
//! the simple JSONPath subset CRDs use (`.spec.replicas`, `.status.conditions[0].type`,
//! `.metadata.labels['app']`). `date` cells are shown as ages (`5m`), as upstream's table
//! convertor does.

use serde_json::{Value, json};

use crate::apiserver::kinds::util::since;

/// One printer column of a CRD version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrinterColumn {
    pub name: String,
    /// `string`, `integer`, `number`, `boolean`, `date`.
    pub kind: String,
    pub format: String,
    pub description: String,
    pub priority: i64,
    pub json_path: String,
}

impl PrinterColumn {
    /// From an `additionalPrinterColumns` entry.
    pub fn from_json(column: &Value) -> Self {
        let text = |field: &str| {
            column
                .get(field)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        Self {
            name: text("name"),
            kind: text("type"),
            format: text("format"),
            description: text("description"),
            priority: column.get("priority").and_then(Value::as_i64).unwrap_or(0),
            json_path: text("jsonPath"),
        }
    }

    /// The AGE column upstream adds to CRDs without printer columns.
    pub fn age() -> Self {
        Self {
            name: "Age".into(),
            kind: "date".into(),
            format: String::new(),
            description: String::new(),
            priority: 0,
            json_path: ".metadata.creationTimestamp".into(),
        }
    }
}

/// The columns of a CRD version (`declared` = its `additionalPrinterColumns`).
pub fn columns_of(declared: &[Value]) -> Vec<PrinterColumn> {
    if declared.is_empty() {
        vec![PrinterColumn::age()]
    } else {
        declared.iter().map(PrinterColumn::from_json).collect()
    }
}

/// The Table `columnDefinitions`: NAME, then `columns`.
pub fn column_definitions(columns: &[PrinterColumn]) -> Vec<Value> {
    let name = crate::apiserver::kinds::generic_columns()[0].clone();
    let mut out = vec![json!({
        "name": name.name, "type": name.kind, "format": name.format,
        "description": name.description, "priority": 0,
    })];
    for c in columns {
        let description = if c.description.is_empty() {
            if c.json_path == ".metadata.creationTimestamp" {
                crate::apiserver::kinds::generic_columns()[1]
                    .description
                    .to_string()
            } else {
                format!(
                    "Custom resource definition column (in JSONPath format): {}",
                    c.json_path
                )
            }
        } else {
            c.description.clone()
        };
        out.push(json!({
            "name": c.name, "type": c.kind, "format": c.format,
            "description": description, "priority": c.priority,
        }));
    }
    out
}

/// The cells of one object: its name, then one per column (`null` when the path finds nothing).
pub fn row(columns: &[PrinterColumn], object: &Value, now: i64) -> Vec<Value> {
    let mut cells = vec![json!(
        object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
    )];
    for c in columns {
        cells.push(cell(c, object, now));
    }
    cells
}

fn cell(column: &PrinterColumn, object: &Value, now: i64) -> Value {
    let found = lookup(object, &column.json_path);
    let Some(value) = found else {
        return Value::Null;
    };
    match (column.kind.as_str(), value) {
        ("date", Value::String(s)) => json!(since(s, now)),
        ("integer", Value::Number(n)) => n
            .as_i64()
            .map(Value::from)
            .unwrap_or_else(|| json!(n.as_f64().map(|f| f as i64))),
        (_, v @ (Value::Number(_) | Value::Bool(_) | Value::String(_))) => v.clone(),
        (_, other) => json!(other.to_string()),
    }
}

/// Evaluates a simple JSONPath (`.a.b[0]['c.d']`, optionally wrapped in `{}`).
pub fn lookup<'a>(object: &'a Value, path: &str) -> Option<&'a Value> {
    let path = path.trim();
    let path = path
        .strip_prefix('{')
        .and_then(|p| p.strip_suffix('}'))
        .unwrap_or(path);
    let path = path.strip_prefix('$').unwrap_or(path);
    let mut current = object;
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            let field = &after[..end];
            if !field.is_empty() {
                current = current.get(field)?;
            }
            rest = &after[end..];
        } else if let Some(after) = rest.strip_prefix('[') {
            let end = after.find(']')?;
            let inner = after[..end].trim();
            current = if let Some(key) = inner
                .strip_prefix('\'')
                .and_then(|k| k.strip_suffix('\''))
                .or_else(|| inner.strip_prefix('"').and_then(|k| k.strip_suffix('"')))
            {
                current.get(key)?
            } else {
                let index: i64 = inner.parse().ok()?;
                let items = current.as_array()?;
                let i = if index < 0 {
                    items.len().checked_sub(index.unsigned_abs() as usize)?
                } else {
                    index as usize
                };
                items.get(i)?
            };
            rest = &after[end + 1..];
        } else {
            return None;
        }
    }
    Some(current)
}
