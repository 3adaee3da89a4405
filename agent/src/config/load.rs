//! Reading the main file and its drop-ins from disk (the only I/O of the config module), and
//! assembling them: per-file checks, merge in lexical file-name order, conversion, and the
//! lists of ignored and unknown fields.

use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::config::convert::{HONOURED_FIELDS, check_cross_field_rules, convert};
use crate::config::error::{ConfigError, FieldIssue};
use crate::config::fields::{top_level, unknown_fields};
use crate::config::merge::merge_patch;
use crate::config::{API_VERSION, KIND, LoadedConfig};

/// The largest configuration file (main or drop-in) read, in bytes: 1 MiB.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// File name extensions read from the drop-in directory (`.conf` is upstream's `--config-dir`).
const DROP_IN_EXTENSIONS: &[&str] = &["yaml", "yml", "json", "conf"];

/// The drop-in directory of a config file: `<config>.d`, e.g. `/etc/kwk/kubelet.yaml.d`.
pub fn drop_in_dir(config_path: &Path) -> PathBuf {
    let mut dir = config_path.as_os_str().to_owned();
    dir.push(".d");
    PathBuf::from(dir)
}

/// Loads `path` and the drop-ins in [`drop_in_dir`]`(path)`. A missing main file is an error, a
/// missing drop-in directory is not; empty drop-ins are skipped.
pub fn load(path: &Path) -> Result<LoadedConfig, ConfigError> {
    let mut documents = Vec::new();
    let main_text = read_config_file(path)?;
    let main = parse_document(path, &main_text)?.ok_or_else(|| ConfigError::Empty {
        path: path.to_path_buf(),
    })?;
    documents.push((path.to_path_buf(), Some(main)));
    for drop_in in list_drop_ins(&drop_in_dir(path))? {
        let text = read_config_file(&drop_in)?;
        let document = parse_document(&drop_in, &text)?;
        documents.push((drop_in, document));
    }
    assemble(&documents)
}

/// Reads a whole file, refusing one over [`MAX_FILE_BYTES`] without reading it all.
fn read_config_file(path: &Path) -> Result<String, ConfigError> {
    let read_error = |source: io::Error| match source.kind() {
        io::ErrorKind::NotFound => ConfigError::Missing {
            path: path.to_path_buf(),
        },
        _ => ConfigError::Read {
            path: path.to_path_buf(),
            source,
        },
    };
    let too_large = || ConfigError::TooLarge {
        path: path.to_path_buf(),
        limit: MAX_FILE_BYTES,
    };
    let file = fs::File::open(path).map_err(read_error)?;
    if file.metadata().map_err(read_error)?.len() > MAX_FILE_BYTES {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large());
    }
    String::from_utf8(bytes).map_err(|e| read_error(io::Error::new(io::ErrorKind::InvalidData, e)))
}

/// The drop-in files of `dir`, sorted by file name. Hidden files and other extensions are
/// skipped; a missing directory has none.
fn list_drop_ins(dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let list_error = |source: io::Error| ConfigError::ReadDir {
        path: dir.to_path_buf(),
        source,
    };
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(list_error(e)),
    };
    let mut drop_ins = Vec::new();
    for entry in entries {
        let path = entry.map_err(list_error)?.path();
        let Some(name) = path.file_name().and_then(OsStr::to_str) else {
            continue;
        };
        let wanted_extension = path
            .extension()
            .and_then(OsStr::to_str)
            .is_some_and(|ext| DROP_IN_EXTENSIONS.contains(&ext));
        // fs::metadata follows symlinks: a link to a file counts, a dangling one does not.
        if name.starts_with('.')
            || !wanted_extension
            || !fs::metadata(&path).is_ok_and(|m| m.is_file())
        {
            tracing::debug!(path = %path.display(), "not a kubelet config drop-in; skipped");
            continue;
        }
        drop_ins.push(path);
    }
    drop_ins.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(drop_ins)
}

/// Parses one file's text (YAML, or JSON for a `.json` file) into a mapping; `None` when it holds
/// nothing (blank, or only comments). YAML aliases, nesting and size are bounded so a hostile
/// file fails fast.
pub fn parse_document(path: &Path, text: &str) -> Result<Option<Map<String, Value>>, ConfigError> {
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(ConfigError::TooLarge {
            path: path.to_path_buf(),
            limit: MAX_FILE_BYTES,
        });
    }
    if text.trim().is_empty() {
        return Ok(None);
    }
    let value: Value = if path.extension() == Some(OsStr::new("json")) {
        serde_json::from_str(text).map_err(|source| ConfigError::Json {
            path: path.to_path_buf(),
            source,
        })?
    } else {
        serde_saphyr::from_str_with_options(text, yaml_options()).map_err(|source| {
            ConfigError::Yaml {
                path: path.to_path_buf(),
                source: Box::new(source),
            }
        })?
    };
    match value {
        Value::Null => Ok(None),
        Value::Object(map) => Ok(Some(map)),
        Value::Bool(_) => Err(not_a_mapping(path, "a boolean")),
        Value::Number(_) => Err(not_a_mapping(path, "a number")),
        Value::String(_) => Err(not_a_mapping(path, "a string")),
        Value::Array(_) => Err(not_a_mapping(path, "a list")),
    }
}

fn not_a_mapping(path: &Path, found: &'static str) -> ConfigError {
    ConfigError::NotAMapping {
        path: path.to_path_buf(),
        found,
    }
}

/// Limits far above any real kubelet config (a few hundred nodes) and far below an alias bomb.
fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_reader_input_bytes: Some(1024 * 1024),
            max_documents: 1,
            max_depth: 64,
            max_nodes: 100_000,
            max_aliases: 1_000,
            max_anchors: 1_000,
            max_total_scalar_bytes: 1024 * 1024,
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: 100_000,
            max_replay_stack_depth: 16,
            max_alias_expansions_per_anchor: 1_000,
        },
    }
}

/// Assembles parsed files (main first, then drop-ins in merge order; `None` for an empty
/// drop-in) into a [`LoadedConfig`]. Pure.
pub(crate) fn assemble(
    documents: &[(PathBuf, Option<Map<String, Value>>)],
) -> Result<LoadedConfig, ConfigError> {
    let mut unknown = Vec::new();
    let mut merged: Option<Value> = None;
    for (path, document) in documents {
        let Some(document) = document else { continue };
        check_type_meta(path, document)?;
        unknown.extend(
            unknown_fields(document)
                .into_iter()
                .map(|field| (path.clone(), field)),
        );
        // Each file alone first, so a bad value is blamed on the file that holds it.
        convert(document).map_err(|issue| issue.in_file(path.clone()))?;
        let patch = Value::Object(document.clone());
        match merged.as_mut() {
            Some(target) => merge_patch(target, &patch),
            None => merged = Some(patch),
        }
    }
    let files: Vec<PathBuf> = documents.iter().map(|(path, _)| path.clone()).collect();
    let merged = match merged {
        Some(Value::Object(map)) => map,
        _ => {
            let path = files.first().cloned().unwrap_or_default();
            return Err(ConfigError::Empty { path });
        }
    };

    let blame = |issue: FieldIssue| {
        let path = last_file_setting(documents, &issue.field);
        issue.in_file(path)
    };
    let config = convert(&merged).map_err(blame)?;
    check_cross_field_rules(&merged, &config).map_err(blame)?;

    let mut ignored_fields: Vec<String> = merged
        .iter()
        .filter(|(name, value)| {
            !value.is_null()
                && top_level(name).is_some()
                && !HONOURED_FIELDS.contains(&name.as_str())
        })
        .map(|(name, _)| name.clone())
        .collect();
    ignored_fields.sort();

    Ok(LoadedConfig {
        config,
        ignored_fields,
        unknown_fields: unknown,
        files,
    })
}

/// Rejects a file that is not a v1beta1 `KubeletConfiguration`.
fn check_type_meta(path: &Path, document: &Map<String, Value>) -> Result<(), ConfigError> {
    for (field, expected) in [("apiVersion", API_VERSION), ("kind", KIND)] {
        let found = match document.get(field) {
            Some(Value::String(s)) if s == expected => continue,
            Some(Value::String(s)) => format!("{s:?}"),
            Some(Value::Null) | None => "nothing".to_string(),
            Some(other) => other.to_string(),
        };
        return Err(ConfigError::TypeMeta {
            path: path.to_path_buf(),
            field,
            expected,
            found,
        });
    }
    Ok(())
}

/// The last file that sets the top-level field of `field_path` (`kubeReserved` for
/// `kubeReserved.memory`), for issues found only after merging; the main file if none does.
fn last_file_setting(
    documents: &[(PathBuf, Option<Map<String, Value>>)],
    field_path: &str,
) -> PathBuf {
    let top = field_path.split(['.', '[']).next().unwrap_or(field_path);
    documents
        .iter()
        .rev()
        .find(|(_, document)| document.as_ref().is_some_and(|d| d.contains_key(top)))
        .or(documents.first())
        .map(|(path, _)| path.clone())
        .unwrap_or_default()
}
