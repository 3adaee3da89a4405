//! Label and field selectors (`?labelSelector=`, `?fieldSelector=`): parsing with upstream's
//! grammar and matching against objects. Pure; table-tested below.
//!
//! Label selectors: `k`, `!k`, `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`,
//! `k>1`, `k<1`, comma-separated (all must match). Field selectors: `f=v`, `f==v`, `f!=v`,
//! comma-separated, with `\` escaping `,` `=` `!` `\` in values.

use std::collections::BTreeMap;

/// One label requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelRequirement {
    Exists(String),
    NotExists(String),
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    GreaterThan(String, i64),
    LessThan(String, i64),
}

/// A parsed label selector (empty: matches everything).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    pub requirements: Vec<LabelRequirement>,
}

impl LabelSelector {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for part in split_top_level(text)? {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            requirements.push(parse_requirement(part)?);
        }
        Ok(Self { requirements })
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| {
            let get = |k: &str| labels.get(k).map(String::as_str);
            match r {
                LabelRequirement::Exists(k) => get(k).is_some(),
                LabelRequirement::NotExists(k) => get(k).is_none(),
                LabelRequirement::Equals(k, v) => get(k) == Some(v.as_str()),
                LabelRequirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
                LabelRequirement::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
                LabelRequirement::NotIn(k, vs) => get(k).is_none_or(|x| vs.iter().all(|v| v != x)),
                LabelRequirement::GreaterThan(k, n) => get(k)
                    .and_then(|x| x.parse::<i64>().ok())
                    .is_some_and(|x| x > *n),
                LabelRequirement::LessThan(k, n) => get(k)
                    .and_then(|x| x.parse::<i64>().ok())
                    .is_some_and(|x| x < *n),
            }
        })
    }
}

/// Splits on commas outside parentheses.
fn split_top_level(text: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth = depth.checked_sub(1).ok_or_else(|| {
                    format!("unable to parse requirement: unexpected ')' in {text:?}")
                })?;
            }
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(format!(
            "unable to parse requirement: unclosed '(' in {text:?}"
        ));
    }
    parts.push(&text[start..]);
    Ok(parts)
}

fn parse_requirement(part: &str) -> Result<LabelRequirement, String> {
    let bad = |why: &str| format!("unable to parse requirement: {part:?}: {why}");
    if let Some(key) = part.strip_prefix('!') {
        let key = key.trim();
        check_key(key).map_err(|e| bad(&e))?;
        return Ok(LabelRequirement::NotExists(key.to_string()));
    }
    for (op, build) in [
        (
            "!=",
            LabelRequirement::NotEquals as fn(String, String) -> LabelRequirement,
        ),
        ("==", LabelRequirement::Equals),
        ("=", LabelRequirement::Equals),
    ] {
        if let Some((key, value)) = part.split_once(op) {
            let (key, value) = (key.trim(), value.trim());
            check_key(key).map_err(|e| bad(&e))?;
            check_value(value).map_err(|e| bad(&e))?;
            return Ok(build(key.to_string(), value.to_string()));
        }
    }
    for (op, greater) in [(">", true), ("<", false)] {
        if let Some((key, value)) = part.split_once(op) {
            let key = key.trim();
            check_key(key).map_err(|e| bad(&e))?;
            let n: i64 = value
                .trim()
                .parse()
                .map_err(|_| bad("expected an integer"))?;
            return Ok(if greater {
                LabelRequirement::GreaterThan(key.to_string(), n)
            } else {
                LabelRequirement::LessThan(key.to_string(), n)
            });
        }
    }
    if let Some(open) = part.find('(') {
        let head = part[..open].trim();
        let (key, notin) = if let Some(k) = head.strip_suffix(" notin") {
            (k.trim(), true)
        } else if let Some(k) = head.strip_suffix(" in") {
            (k.trim(), false)
        } else {
            return Err(bad("expected 'in' or 'notin' before '('"));
        };
        check_key(key).map_err(|e| bad(&e))?;
        let inner = part[open + 1..]
            .strip_suffix(')')
            .ok_or_else(|| bad("expected ')' at the end"))?;
        let values: Vec<String> = inner
            .split(',')
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect();
        if values.is_empty() {
            return Err(bad(
                "for 'in', 'notin' operators, values set can't be empty",
            ));
        }
        for v in &values {
            check_value(v).map_err(|e| bad(&e))?;
        }
        return Ok(if notin {
            LabelRequirement::NotIn(key.to_string(), values)
        } else {
            LabelRequirement::In(key.to_string(), values)
        });
    }
    check_key(part).map_err(|e| bad(&e))?;
    Ok(LabelRequirement::Exists(part.to_string()))
}

/// A label key: optional DNS subdomain prefix + `/` + name (≤ 63 chars of `[A-Za-z0-9._-]`,
/// alphanumeric at both ends).
pub fn check_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(prefix) = prefix
        && (prefix.is_empty() || prefix.len() > 253 || !prefix.split('.').all(is_dns_label))
    {
        return Err(format!(
            "prefix part of key {key:?} must be a DNS subdomain"
        ));
    }
    if !is_qualified_name_part(name) {
        return Err(format!(
            "name part of key {key:?} must consist of alphanumeric characters, '-', '_' or '.', \
             and must start and end with an alphanumeric character (at most 63 characters)"
        ));
    }
    Ok(())
}

/// A label value: empty, or ≤ 63 chars of `[A-Za-z0-9._-]`, alphanumeric at both ends.
pub fn check_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_qualified_name_part(value) {
        Ok(())
    } else {
        Err(format!(
            "invalid label value {value:?}: at most 63 characters, alphanumeric, '-', '_' or '.', \
             starting and ending with an alphanumeric character"
        ))
    }
}

fn is_qualified_name_part(s: &str) -> bool {
    let bytes = s.as_bytes();
    !s.is_empty()
        && s.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn is_dns_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    !s.is_empty()
        && s.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

/// One field requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    pub field: String,
    pub value: String,
    /// `!=` rather than `=`/`==`.
    pub negated: bool,
}

/// A parsed field selector (empty: matches everything).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    pub requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for term in split_unescaped(text, ',') {
            if term.is_empty() {
                continue;
            }
            let (field, value, negated) = split_field_term(&term)
                .ok_or_else(|| format!("invalid selector: '{text}'; can't understand '{term}'"))?;
            requirements.push(FieldRequirement {
                field: field.trim().to_string(),
                value: unescape(&value),
                negated,
            });
        }
        Ok(Self { requirements })
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The exact value required for `field` by an `=` term, if any (lets a list by
    /// `metadata.name` read one key instead of scanning).
    pub fn exact(&self, field: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.field == field && !r.negated)
            .map(|r| r.value.as_str())
    }

    /// Whether the object's fields (looked up by `lookup`) match. A field `lookup` does not
    /// know is an error naming it (upstream: `field label not supported`).
    pub fn matches(&self, mut lookup: impl FnMut(&str) -> Option<String>) -> Result<bool, String> {
        for r in &self.requirements {
            let actual = lookup(&r.field)
                .ok_or_else(|| format!("field label not supported: {}", r.field))?;
            if (actual == r.value) == r.negated {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// Splits on `sep` not preceded by a backslash (escapes kept for [`unescape`]).
fn split_unescaped(text: &str, sep: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut escaped = false;
    for c in text.chars() {
        if escaped {
            current.push('\\');
            current.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            parts.push(std::mem::take(&mut current));
        } else {
            current.push(c);
        }
    }
    if escaped {
        current.push('\\');
    }
    parts.push(current);
    parts
}

/// `field!=value`, `field==value` or `field=value` (first unescaped operator).
fn split_field_term(term: &str) -> Option<(String, String, bool)> {
    let chars: Vec<char> = term.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 2,
            '!' if chars.get(i + 1) == Some(&'=') => {
                return Some((
                    chars[..i].iter().collect(),
                    chars[i + 2..].iter().collect(),
                    true,
                ));
            }
            '=' => {
                let skip = if chars.get(i + 1) == Some(&'=') { 2 } else { 1 };
                return Some((
                    chars[..i].iter().collect(),
                    chars[i + skip..].iter().collect(),
                    false,
                ));
            }
            _ => i += 1,
        }
    }
    None
}

fn unescape(value: &str) -> String {
    let mut out = String::new();
    let mut escaped = false;
    for c in value.chars() {
        if escaped {
            out.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn label_selectors_match_like_upstream() {
        let l = labels(&[("app", "web"), ("tier", "frontend"), ("n", "5")]);
        let cases = [
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app!=db", true),
            ("missing!=x", true),
            ("app", true),
            ("!app", false),
            ("!missing", true),
            ("app in (web, db)", true),
            ("app notin (web,db)", false),
            ("missing notin (a)", true),
            ("app=web,tier=frontend", true),
            ("app=web,tier=backend", false),
            ("n>4", true),
            ("n<4", false),
            ("example.com/role", false),
        ];
        for (text, want) in cases {
            let selector = LabelSelector::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(selector.matches(&l), want, "{text}");
        }
    }

    #[test]
    fn bad_label_selectors_are_errors() {
        for text in [
            "app in ()",
            "app in (a",
            "a=b)",
            "-bad=x",
            "app=-x-",
            "app foo (a)",
            "k>x",
        ] {
            assert!(LabelSelector::parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn field_selectors() {
        let s =
            FieldSelector::parse("status.phase!=Succeeded,status.phase!=Failed,spec.nodeName=n1")
                .expect("parse");
        assert_eq!(s.exact("spec.nodeName"), Some("n1"));
        let fields = |phase: &'static str| {
            move |f: &str| match f {
                "status.phase" => Some(phase.to_string()),
                "spec.nodeName" => Some("n1".to_string()),
                _ => None,
            }
        };
        assert_eq!(s.matches(fields("Running")), Ok(true));
        assert_eq!(s.matches(fields("Failed")), Ok(false));
        let unknown = FieldSelector::parse("spec.bogus=1").expect("parse");
        assert!(unknown.matches(fields("Running")).is_err());
        let escaped = FieldSelector::parse(r"metadata.name=a\,b").expect("parse");
        assert_eq!(escaped.exact("metadata.name"), Some("a,b"));
        assert!(FieldSelector::parse("nooperator").is_err());
    }
}
