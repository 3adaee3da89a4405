//! Field errors in the upstream API's message style (`spec.containers[0].image: Required value`),
//! and the name formats (DNS-1123 label and subdomain, qualified names, IANA service names) the
//! static pod validation checks against.

use std::fmt;

/// One problem with one field of a manifest. Displays as upstream's `field.Error` does:
/// `<field path>: <kind>[: <value>][: <detail>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field path, e.g. `spec.containers[0].ports[1].containerPort`.
    pub field: String,
    /// Everything after the path, e.g. `Unsupported value: "x": supported values: "a", "b"`.
    pub body: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.body)
    }
}

impl std::error::Error for FieldError {}

/// A value shown in an error: strings quoted, numbers bare (as upstream prints them).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Shown<'a> {
    Str(&'a str),
    Int(i64),
}

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shown::Str(s) => write!(f, "{s:?}"),
            Shown::Int(n) => write!(f, "{n}"),
        }
    }
}

impl<'a> From<&'a str> for Shown<'a> {
    fn from(s: &'a str) -> Self {
        Shown::Str(s)
    }
}

impl From<i64> for Shown<'_> {
    fn from(n: i64) -> Self {
        Shown::Int(n)
    }
}

impl From<i32> for Shown<'_> {
    fn from(n: i32) -> Self {
        Shown::Int(i64::from(n))
    }
}

fn error(field: &str, body: String) -> FieldError {
    FieldError {
        field: field.to_string(),
        body,
    }
}

/// `<field>: Required value[: detail]`.
pub(crate) fn required(field: &str, detail: &str) -> FieldError {
    error(field, with_detail("Required value".to_string(), detail))
}

/// `<field>: Invalid value: <value>: detail`.
pub(crate) fn invalid<'a>(field: &str, value: impl Into<Shown<'a>>, detail: &str) -> FieldError {
    error(
        field,
        with_detail(format!("Invalid value: {}", value.into()), detail),
    )
}

/// `<field>: Unsupported value: <value>: supported values: "a", "b"`.
pub(crate) fn not_supported<'a>(
    field: &str,
    value: impl Into<Shown<'a>>,
    supported: &[&str],
) -> FieldError {
    let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
    error(
        field,
        format!(
            "Unsupported value: {}: supported values: {}",
            value.into(),
            list.join(", ")
        ),
    )
}

/// `<field>: Duplicate value: <value>`.
pub(crate) fn duplicate<'a>(field: &str, value: impl Into<Shown<'a>>) -> FieldError {
    error(field, format!("Duplicate value: {}", value.into()))
}

/// `<field>: Not found: <value>`.
pub(crate) fn not_found<'a>(field: &str, value: impl Into<Shown<'a>>) -> FieldError {
    error(field, format!("Not found: {}", value.into()))
}

/// `<field>: Forbidden: detail`.
pub(crate) fn forbidden(field: &str, detail: &str) -> FieldError {
    error(field, with_detail("Forbidden".to_string(), detail))
}

fn with_detail(mut body: String, detail: &str) -> String {
    if !detail.is_empty() {
        body.push_str(": ");
        body.push_str(detail);
    }
    body
}

pub(crate) const DNS1123_LABEL_MAX: usize = 63;
pub(crate) const DNS1123_SUBDOMAIN_MAX: usize = 253;

const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case \
alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. \
'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case \
alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character \
(e.g. 'example.com', regex used for validation is \
'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

fn is_label_syntax(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            alnum(first) && alnum(last) && b.iter().all(|c| alnum(c) || *c == b'-')
        }
        _ => false,
    }
}

/// Problems with `value` as a DNS-1123 label (empty when it is one).
pub(crate) fn dns1123_label_problems(value: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if value.len() > DNS1123_LABEL_MAX {
        problems.push(format!(
            "must be no more than {DNS1123_LABEL_MAX} characters"
        ));
    }
    if !is_label_syntax(value) {
        problems.push(DNS1123_LABEL_MSG.to_string());
    }
    problems
}

/// Problems with `value` as a DNS-1123 subdomain (empty when it is one).
pub(crate) fn dns1123_subdomain_problems(value: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if value.len() > DNS1123_SUBDOMAIN_MAX {
        problems.push(format!(
            "must be no more than {DNS1123_SUBDOMAIN_MAX} characters"
        ));
    }
    if !value.split('.').all(is_label_syntax) {
        problems.push(DNS1123_SUBDOMAIN_MSG.to_string());
    }
    problems
}

/// Field errors for a value that must be a DNS-1123 label.
pub(crate) fn check_dns1123_label(field: &str, value: &str, out: &mut Vec<FieldError>) {
    for problem in dns1123_label_problems(value) {
        out.push(invalid(field, value, &problem));
    }
}

/// Field errors for a value that must be a DNS-1123 subdomain.
pub(crate) fn check_dns1123_subdomain(field: &str, value: &str, out: &mut Vec<FieldError>) {
    for problem in dns1123_subdomain_problems(value) {
        out.push(invalid(field, value, &problem));
    }
}

const QUALIFIED_NAME_MAX: usize = 63;
const QUALIFIED_NAME_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or \
'.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or \
'123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric \
characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. \
'MyValue',  or 'my_value',  or '12345', regex used for validation is \
'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// Problems with `value` as a qualified name (`[prefix/]name`, as label and annotation keys).
pub(crate) fn qualified_name_problems(value: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let (prefix, name) = match value.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, value),
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            problems.push("prefix part must be non-empty".to_string());
        } else {
            problems.extend(
                dns1123_subdomain_problems(prefix)
                    .into_iter()
                    .map(|p| format!("prefix part {p}")),
            );
        }
    }
    if name.is_empty() {
        problems.push("name part must be non-empty".to_string());
    } else {
        if name.len() > QUALIFIED_NAME_MAX {
            problems.push(format!(
                "name part must be no more than {QUALIFIED_NAME_MAX} characters"
            ));
        }
        if !is_qualified_name_part(name) {
            problems.push(QUALIFIED_NAME_MSG.to_string());
        }
    }
    problems
}

/// Problems with `value` as a label value.
pub(crate) fn label_value_problems(value: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if value.len() > QUALIFIED_NAME_MAX {
        problems.push(format!(
            "must be no more than {QUALIFIED_NAME_MAX} characters"
        ));
    }
    if !value.is_empty() && !is_qualified_name_part(value) {
        problems.push(LABEL_VALUE_MSG.to_string());
    }
    problems
}

/// Problems with `value` as an IANA service name (a named container port).
pub(crate) fn port_name_problems(value: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if value.len() > 15 {
        problems.push("must be no more than 15 characters".to_string());
    }
    if !value
        .bytes()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
    {
        problems.push(
            "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".to_string(),
        );
    }
    if value.contains("--") {
        problems.push("must not contain consecutive hyphens".to_string());
    }
    if !value.bytes().any(|c| c.is_ascii_lowercase()) {
        problems.push("must contain at least one letter (a-z)".to_string());
    }
    if value.starts_with('-') || value.ends_with('-') {
        problems.push("must not begin or end with a hyphen".to_string());
    }
    problems
}

/// Problems with `value` as an environment variable name (upstream's relaxed rule since 1.30:
/// printable ASCII except `=`).
pub(crate) fn env_var_name_problems(value: &str) -> Vec<String> {
    if value
        .bytes()
        .all(|c| (b' '..=b'~').contains(&c) && c != b'=')
    {
        Vec::new()
    } else {
        vec![
            "a valid environment variable name must consist only of printable ASCII characters \
             other than '='"
                .to_string(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_label_rules() {
        for ok in ["a", "web-1", "0abc", &"a".repeat(63)] {
            assert!(dns1123_label_problems(ok).is_empty(), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a.b", "a_b", &"a".repeat(64)] {
            assert!(!dns1123_label_problems(bad).is_empty(), "{bad}");
        }
    }

    #[test]
    fn dns_subdomain_rules() {
        for ok in ["a", "kube-apiserver", "a.b.c", "x1.example.com"] {
            assert!(dns1123_subdomain_problems(ok).is_empty(), "{ok}");
        }
        for bad in ["", ".a", "a.", "a..b", "Web", "a_b", &"a".repeat(254)] {
            assert!(!dns1123_subdomain_problems(bad).is_empty(), "{bad}");
        }
    }

    #[test]
    fn qualified_names_and_label_values() {
        for ok in [
            "app",
            "k8s.io/app",
            "component",
            "a.b/C_d-e",
            "tier.kwk.io/x",
        ] {
            assert!(qualified_name_problems(ok).is_empty(), "{ok}");
        }
        for bad in ["", "/a", "a/", "-a", "a b", "Example.com/a", "a/b/c"] {
            assert!(!qualified_name_problems(bad).is_empty(), "{bad}");
        }
        for ok in ["", "v1", "kube-apiserver", "A_b.c"] {
            assert!(label_value_problems(ok).is_empty(), "{ok}");
        }
        for bad in ["-a", "a b", &"a".repeat(64)] {
            assert!(!label_value_problems(bad).is_empty(), "{bad}");
        }
    }

    #[test]
    fn port_names() {
        for ok in ["http", "https-2", "a1", "metrics"] {
            assert!(port_name_problems(ok).is_empty(), "{ok}");
        }
        for bad in ["", "HTTP", "a--b", "-a", "a-", "123", "sixteen-chars-xx"] {
            assert!(!port_name_problems(bad).is_empty(), "{bad}");
        }
    }

    #[test]
    fn env_names_are_relaxed() {
        for ok in ["PATH", "my.var", "1abc", "a-b c", "~!@"] {
            assert!(env_var_name_problems(ok).is_empty(), "{ok}");
        }
        for bad in ["A=B", "tab\there", "é"] {
            assert!(!env_var_name_problems(bad).is_empty(), "{bad}");
        }
    }

    #[test]
    fn message_style_matches_upstream() {
        assert_eq!(
            required("spec.containers[0].image", "").to_string(),
            "spec.containers[0].image: Required value"
        );
        assert_eq!(
            not_supported(
                "spec.restartPolicy",
                "Sometimes",
                &["Always", "OnFailure", "Never"]
            )
            .to_string(),
            "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \
             \"Always\", \"OnFailure\", \"Never\""
        );
        assert_eq!(
            invalid("p", 70000, "must be between 1 and 65535, inclusive").to_string(),
            "p: Invalid value: 70000: must be between 1 and 65535, inclusive"
        );
        assert_eq!(
            duplicate("n", "web").to_string(),
            "n: Duplicate value: \"web\""
        );
        assert_eq!(forbidden("f", "why").to_string(), "f: Forbidden: why");
        assert_eq!(not_found("v", "data").to_string(), "v: Not found: \"data\"");
    }
}
