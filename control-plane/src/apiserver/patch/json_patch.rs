//! JSON patch (RFC 6902), `application/json-patch+json`, as upstream applies it.
//!
//! Upstream uses evanphx/json-patch v4.12, which is more permissive than the RFC in a few ways
//! that clients may rely on, so we accept the same:
//! - `replace` of a missing object member adds it;
//! - `test` with `null` (or no `value`) passes when the member is missing;
//! - `add`/`replace` without `value` store `null`; `copy` from a missing member copies `null`;
//! - array indices may be negative (`-1` is the last element; for `add`, `-1` appends) and take
//!   Go's `strconv.Atoi` forms (`+1`, `01`).
//!
//! Where upstream is sloppier we return an error instead: a pointer that does not start with `/`
//! (upstream silently drops its first token), a `test` without `value` (upstream panics).
//! A `null` body is an empty patch, as upstream decodes it. Scalars compare as JSON values (`"\u0041" == "A"`), where upstream compares their raw bytes.
//! Operations apply in order to a copy; the first failure aborts the whole patch.

use serde_json::{Map, Value};

use super::{
    JsonPatchFailure, MAX_JSON_PATCH_COPY_BYTES, MAX_JSON_PATCH_OPERATIONS, PatchError,
    check_patch_depth, check_result_depth, parse,
};

type Failure = JsonPatchFailure;

/// Applies the JSON patch `body` (an array of operations) to `original`.
pub fn apply_json_patch(original: &Value, body: &[u8]) -> Result<Value, PatchError> {
    let patch = parse(body)?;
    check_patch_depth(&patch)?;
    // Upstream decodes `null` as an empty patch.
    let patch = if patch.is_null() {
        Value::Array(Vec::new())
    } else {
        patch
    };
    let ops: Vec<Map<String, Value>> = serde_json::from_value(patch).map_err(PatchError::Decode)?;
    if ops.len() > MAX_JSON_PATCH_OPERATIONS {
        return Err(PatchError::TooManyOperations {
            got: ops.len(),
            max: MAX_JSON_PATCH_OPERATIONS,
        });
    }
    let mut doc = original.clone();
    let mut copied = 0usize;
    for (index, op) in ops.into_iter().enumerate() {
        let name = match op.get("op") {
            Some(Value::String(s)) => s.clone(),
            _ => "unknown".to_owned(),
        };
        apply_op(&mut doc, &name, op, &mut copied).map_err(|failure| PatchError::JsonPatch {
            index,
            op: name,
            failure,
        })?;
    }
    check_result_depth(doc)
}

fn apply_op(
    doc: &mut Value,
    name: &str,
    mut op: Map<String, Value>,
    copied: &mut usize,
) -> Result<(), Failure> {
    let value = op.remove("value");
    match name {
        "add" => {
            let path = pointer(&op, "path")?;
            add(doc, &path, value.unwrap_or(Value::Null))
        }
        "remove" => remove(doc, &pointer(&op, "path")?).map(drop),
        "replace" => {
            let path = pointer(&op, "path")?;
            replace(doc, &path, value.unwrap_or(Value::Null))
        }
        "move" => {
            let from = pointer(&op, "from")?;
            let path = pointer(&op, "path")?;
            let moved = remove(doc, &from)?;
            add(doc, &path, moved)
        }
        "copy" => {
            let from = pointer(&op, "from")?;
            let path = pointer(&op, "path")?;
            let value = get(doc, &from)?.cloned().unwrap_or(Value::Null);
            parent(doc, &path)?;
            *copied += serialized_len(&value);
            if *copied > MAX_JSON_PATCH_COPY_BYTES {
                return Err(Failure::CopyTooLarge {
                    size: *copied,
                    limit: MAX_JSON_PATCH_COPY_BYTES,
                });
            }
            add(doc, &path, value)
        }
        "test" => {
            let path = pointer(&op, "path")?;
            let expected = value.unwrap_or(Value::Null);
            let ok = if path.tokens.is_empty() {
                *doc == expected
            } else {
                match get(doc, &path)? {
                    None | Some(Value::Null) => expected.is_null(),
                    Some(found) => *found == expected,
                }
            };
            if ok {
                Ok(())
            } else {
                Err(Failure::TestFailed { path: path.text })
            }
        }
        other => Err(Failure::UnknownOp {
            op: other.to_owned(),
        }),
    }
}

/// A parsed JSON pointer.
#[derive(Debug)]
struct Pointer {
    text: String,
    tokens: Vec<String>,
}

fn pointer(op: &Map<String, Value>, field: &'static str) -> Result<Pointer, Failure> {
    let Some(Value::String(text)) = op.get(field) else {
        return Err(Failure::MissingField { field });
    };
    if text.is_empty() {
        return Ok(Pointer {
            text: String::new(),
            tokens: Vec::new(),
        });
    }
    let Some(rest) = text.strip_prefix('/') else {
        return Err(Failure::InvalidPointer { path: text.clone() });
    };
    let tokens = rest
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect();
    Ok(Pointer {
        text: text.clone(),
        tokens,
    })
}

/// Go's `strconv.Atoi`: optional sign, decimal digits, within i64.
fn atoi(token: &str) -> Option<i64> {
    let digits = token.strip_prefix(['+', '-']).unwrap_or(token);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    token.parse().ok()
}

/// An index into an array of `len` elements; negative counts from the end. `None` if invalid.
fn resolve_index(token: &str, len: usize) -> Option<usize> {
    let idx = atoi(token)?;
    let len = i64::try_from(len).ok()?;
    let idx = if idx < 0 { idx.checked_add(len)? } else { idx };
    (0..len)
        .contains(&idx)
        .then(|| usize::try_from(idx).ok())
        .flatten()
}

/// The container holding the pointer's last token (`MissingPath` if it is not there).
fn parent<'d>(doc: &'d mut Value, path: &Pointer) -> Result<&'d mut Value, Failure> {
    let missing = || Failure::MissingPath {
        path: path.text.clone(),
    };
    let Some((_, ancestors)) = path.tokens.split_last() else {
        return Err(missing());
    };
    let mut cur = doc;
    for token in ancestors {
        cur = match cur {
            Value::Object(map) => map.get_mut(token),
            Value::Array(items) => resolve_index(token, items.len()).and_then(|i| items.get_mut(i)),
            _ => None,
        }
        .ok_or_else(missing)?;
    }
    match cur {
        Value::Object(_) | Value::Array(_) => Ok(cur),
        _ => Err(missing()),
    }
}

fn last(path: &Pointer) -> &str {
    path.tokens.last().map_or("", String::as_str)
}

fn invalid_index(path: &Pointer) -> Failure {
    Failure::InvalidIndex {
        path: path.text.clone(),
        index: last(path).to_owned(),
    }
}

/// The value at `path`: `Ok(None)` for a missing object member (upstream reads it as null).
fn get<'d>(doc: &'d mut Value, path: &Pointer) -> Result<Option<&'d Value>, Failure> {
    let key = last(path).to_owned();
    match parent(doc, path)? {
        Value::Object(map) => Ok(map.get(&key)),
        Value::Array(items) => {
            let i = resolve_index(&key, items.len()).ok_or_else(|| invalid_index(path))?;
            Ok(items.get(i))
        }
        _ => Err(Failure::MissingPath {
            path: path.text.clone(),
        }),
    }
}

fn add(doc: &mut Value, path: &Pointer, value: Value) -> Result<(), Failure> {
    let key = last(path).to_owned();
    match parent(doc, path)? {
        Value::Object(map) => {
            map.insert(key, value);
        }
        Value::Array(items) => {
            if key == "-" {
                items.push(value);
            } else {
                let i = resolve_index(&key, items.len() + 1).ok_or_else(|| invalid_index(path))?;
                items.insert(i, value);
            }
        }
        _ => {
            return Err(Failure::MissingPath {
                path: path.text.clone(),
            });
        }
    }
    Ok(())
}

fn remove(doc: &mut Value, path: &Pointer) -> Result<Value, Failure> {
    let key = last(path).to_owned();
    match parent(doc, path)? {
        Value::Object(map) => map.remove(&key).ok_or(Failure::MissingKey { key }),
        Value::Array(items) => {
            let i = resolve_index(&key, items.len()).ok_or_else(|| invalid_index(path))?;
            Ok(items.remove(i))
        }
        _ => Err(Failure::MissingPath {
            path: path.text.clone(),
        }),
    }
}

fn replace(doc: &mut Value, path: &Pointer, value: Value) -> Result<(), Failure> {
    if path.tokens.is_empty() {
        if !(value.is_object() || value.is_array()) {
            return Err(Failure::BadRootValue);
        }
        *doc = value;
        return Ok(());
    }
    let key = last(path).to_owned();
    match parent(doc, path)? {
        Value::Object(map) => {
            map.insert(key, value);
        }
        Value::Array(items) => {
            let i = resolve_index(&key, items.len()).ok_or_else(|| invalid_index(path))?;
            items[i] = value;
        }
        _ => {
            return Err(Failure::MissingPath {
                path: path.text.clone(),
            });
        }
    }
    Ok(())
}

/// Bytes of the compact JSON form of `value` (what upstream counts for `copy`).
fn serialized_len(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing to a counter cannot fail.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}
