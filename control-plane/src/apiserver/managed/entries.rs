//! `metadata.managedFields` entries: decoding and encoding (upstream's order), manager
//! identity, the cap on `Update` managers (`ancient-changes`), and the apply conflict error.

use serde_json::{Map, Value, json};

use super::fieldset::{FieldSet, Path, path_string};
use crate::apiserver::errors::{ApiError, Cause};

/// At most this many `Update` entries are kept; older ones are merged per API version into
/// [`ANCIENT_CHANGES`] (upstream `DefaultMaxUpdateManagers`).
pub const MAX_UPDATE_MANAGERS: usize = 10;

/// The manager name of merged old `Update` entries.
pub const ANCIENT_CHANGES: &str = "ancient-changes";

/// `operation` of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operation {
    Apply,
    Update,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

/// One managedFields entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub manager: String,
    pub operation: Operation,
    pub api_version: String,
    /// RFC 3339, seconds.
    pub time: Option<String>,
    /// `""` for the main resource.
    pub subresource: String,
    pub fields: FieldSet,
}

impl Entry {
    /// Whether two entries are the same manager: name, operation and subresource, and for
    /// `Update` also the API version (upstream's manager identifier).
    pub fn same_manager(&self, other: &Entry) -> bool {
        self.manager == other.manager
            && self.operation == other.operation
            && self.subresource == other.subresource
            && (self.operation == Operation::Apply || self.api_version == other.api_version)
    }

    /// The manager as upstream names it in conflicts:
    /// `"kubectl-client-side-apply" using apps/v1`, `"kubectl"`.
    pub fn describe(&self) -> String {
        let mut text = format!("{:?}", self.manager);
        if !self.subresource.is_empty() {
            text = format!("{text} with subresource {:?}", self.subresource);
        }
        if self.operation == Operation::Update {
            text = format!("{text} using {}", self.api_version);
        }
        text
    }
}

/// Whether a client's managedFields ask for a reset: an empty list or one empty entry.
pub fn is_reset(value: Option<&Value>) -> bool {
    match value.and_then(Value::as_array) {
        Some(list) if list.is_empty() => true,
        Some(list) if list.len() == 1 => list[0].as_object().is_some_and(Map::is_empty),
        _ => false,
    }
}

/// Decodes managedFields (absent or null: none). Any malformed entry fails the whole list.
pub fn decode(value: Option<&Value>) -> Result<Vec<Entry>, String> {
    let list = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(_) => return Err("managedFields must be a list".into()),
    };
    let mut entries: Vec<Entry> = Vec::with_capacity(list.len());
    for item in list {
        let text = |k: &str| item.get(k).and_then(Value::as_str).unwrap_or_default();
        let operation = match text("operation") {
            "Apply" => Operation::Apply,
            "Update" => Operation::Update,
            other => return Err(format!("unsupported operation {other:?}")),
        };
        if text("fieldsType") != "FieldsV1" {
            return Err(format!("unsupported fieldsType {:?}", text("fieldsType")));
        }
        let fields = match item.get("fieldsV1") {
            None | Some(Value::Null) => FieldSet::new(),
            Some(v) => FieldSet::from_fields_v1(v)?,
        };
        let entry = Entry {
            manager: text("manager").to_string(),
            operation,
            api_version: text("apiVersion").to_string(),
            time: item.get("time").and_then(Value::as_str).map(String::from),
            subresource: text("subresource").to_string(),
            fields,
        };
        if entries.iter().any(|e| e.same_manager(&entry)) {
            return Err(format!("duplicate manager {}", entry.describe()));
        }
        entries.push(entry);
    }
    Ok(entries)
}

/// Encodes entries in upstream's order (operation, time, manager, API version, subresource).
pub fn encode(entries: &[Entry]) -> Value {
    let mut sorted: Vec<&Entry> = entries.iter().collect();
    sorted.sort_by(|a, b| {
        (
            a.operation,
            &a.time,
            &a.manager,
            &a.api_version,
            &a.subresource,
        )
            .cmp(&(
                b.operation,
                &b.time,
                &b.manager,
                &b.api_version,
                &b.subresource,
            ))
    });
    Value::Array(
        sorted
            .into_iter()
            .map(|e| {
                let mut out = json!({
                    "manager": e.manager,
                    "operation": e.operation.as_str(),
                    "apiVersion": e.api_version,
                    "fieldsType": "FieldsV1",
                    "fieldsV1": e.fields.to_fields_v1(),
                });
                if let Some(time) = &e.time {
                    out["time"] = json!(time);
                }
                if !e.subresource.is_empty() {
                    out["subresource"] = json!(e.subresource);
                }
                out
            })
            .collect(),
    )
}

/// Merges the oldest `Update` entries, per API version, into an `ancient-changes` entry until
/// at most `max` remain (upstream `capManagersManager`).
pub fn cap_update_managers(entries: &mut Vec<Entry>, max: usize) {
    let mut updaters: Vec<usize> = (0..entries.len())
        .filter(|&i| entries[i].operation == Operation::Update)
        .collect();
    if updaters.len() <= max {
        return;
    }
    updaters.sort_by(|&a, &b| {
        (&entries[a].time, &entries[a].manager).cmp(&(&entries[b].time, &entries[b].manager))
    });
    let mut count = updaters.len();
    let mut first_of_version: Vec<(String, usize)> = Vec::new();
    let mut drop = Vec::new();
    for &i in &updaters {
        if count <= max {
            break;
        }
        let version = entries[i].api_version.clone();
        let existing_bucket = entries.iter().position(|e| {
            e.manager == ANCIENT_CHANGES
                && e.operation == Operation::Update
                && e.subresource.is_empty()
                && e.api_version == version
        });
        if let Some(bucket) = existing_bucket.filter(|&b| b != i)
            && !first_of_version.iter().any(|(v, _)| *v == version)
        {
            first_of_version.push((version.clone(), bucket));
        }
        match first_of_version.iter().find(|(v, _)| *v == version) {
            Some(&(_, bucket)) if bucket == i => {}
            Some(&(_, bucket)) => {
                let fields = entries[i].fields.clone();
                let time = entries[i].time.clone();
                let target = &mut entries[bucket];
                target.manager = ANCIENT_CHANGES.to_string();
                target.subresource = String::new();
                target.fields = target.fields.union(&fields);
                target.time = time;
                drop.push(i);
                count -= 1;
            }
            None => first_of_version.push((version, i)),
        }
    }
    drop.sort_unstable();
    for i in drop.into_iter().rev() {
        entries.remove(i);
    }
}

/// One field another manager owns that an apply would change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub manager: String,
    pub path: Path,
}

/// The 409 of an apply with conflicts, worded as upstream.
pub fn conflict_error(conflicts: &[Conflict]) -> ApiError {
    let message = if let [only] = conflicts {
        format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            only.manager,
            path_string(&only.path)
        )
    } else {
        let mut managers: Vec<&str> = conflicts.iter().map(|c| c.manager.as_str()).collect();
        managers.sort_unstable();
        managers.dedup();
        let mut lines = Vec::new();
        for manager in managers {
            lines.push(format!("conflicts with {manager}:"));
            for c in conflicts.iter().filter(|c| c.manager == manager) {
                lines.push(format!("- {}", path_string(&c.path)));
            }
        }
        format!(
            "Apply failed with {} conflicts: {}",
            conflicts.len(),
            lines.join("\n")
        )
    };
    let mut error = ApiError::new(409, "Conflict", message);
    error.details.causes = conflicts
        .iter()
        .map(|c| Cause {
            reason: "FieldManagerConflict",
            message: format!("conflict with {}", c.manager),
            field: path_string(&c.path),
        })
        .collect();
    error
}
