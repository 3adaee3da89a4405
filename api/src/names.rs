//! The name and value formats the API checks against, with upstream's problem wording:
//! DNS-1123 labels and subdomains, DNS-1035 labels, qualified names (label and annotation
//! keys), label values, IANA service names (named ports), environment variable names, config
//! map keys, path segments, IP addresses and CIDRs. Each `*_problems` function returns the
//! list of problems (empty when the value is fine), as upstream's `Is*` functions do.

use std::net::IpAddr;

use crate::field::{FieldError, invalid};

pub const DNS1123_LABEL_MAX: usize = 63;
pub const DNS1123_SUBDOMAIN_MAX: usize = 253;
pub const DNS1035_LABEL_MAX: usize = 63;
const QUALIFIED_NAME_MAX: usize = 63;

const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case \
alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. \
'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case \
alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character \
(e.g. 'example.com', regex used for validation is \
'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

const DNS1035_LABEL_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric \
characters or '-', start with an alphabetic character, and end with an alphanumeric character \
(e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

const QUALIFIED_NAME_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or \
'.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or \
'123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";

const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric \
characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. \
'MyValue',  or 'my_value',  or '12345', regex used for validation is \
'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

const CONFIG_KEY_MSG: &str = "a valid config key must consist of alphanumeric characters, '-', \
'_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is \
'[-._a-zA-Z0-9]+')";

/// Upstream's `MaxLenError`.
pub fn max_len_error(max: usize) -> String {
    format!("must be no more than {max} characters")
}

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

/// Problems with `value` as a DNS-1123 label.
pub fn dns1123_label_problems(value: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if value.len() > DNS1123_LABEL_MAX {
        problems.push(max_len_error(DNS1123_LABEL_MAX));
    }
    if !is_label_syntax(value) {
        problems.push(DNS1123_LABEL_MSG.to_string());
    }
    problems
}

/// Problems with `value` as a DNS-1123 subdomain.
pub fn dns1123_subdomain_problems(value: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if value.len() > DNS1123_SUBDOMAIN_MAX {
        problems.push(max_len_error(DNS1123_SUBDOMAIN_MAX));
    }
    if !value.split('.').all(is_label_syntax) {
        problems.push(DNS1123_SUBDOMAIN_MSG.to_string());
    }
    problems
}

/// Problems with `value` as a DNS-1035 label (a DNS-1123 label starting with a letter).
pub fn dns1035_label_problems(value: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if value.len() > DNS1035_LABEL_MAX {
        problems.push(max_len_error(DNS1035_LABEL_MAX));
    }
    let starts_alpha = value.as_bytes().first().is_some_and(u8::is_ascii_lowercase);
    if !is_label_syntax(value) || !starts_alpha {
        problems.push(DNS1035_LABEL_MSG.to_string());
    }
    problems
}

/// Field errors for a value that must be a DNS-1123 label.
pub fn check_dns1123_label(field: &str, value: &str, out: &mut Vec<FieldError>) {
    for problem in dns1123_label_problems(value) {
        out.push(invalid(field, value, &problem));
    }
}

/// Field errors for a value that must be a DNS-1123 subdomain.
pub fn check_dns1123_subdomain(field: &str, value: &str, out: &mut Vec<FieldError>) {
    for problem in dns1123_subdomain_problems(value) {
        out.push(invalid(field, value, &problem));
    }
}

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
pub fn qualified_name_problems(value: &str) -> Vec<String> {
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

/// Field errors for a value that must be a qualified name.
pub fn check_qualified_name(field: &str, value: &str, out: &mut Vec<FieldError>) {
    for problem in qualified_name_problems(value) {
        out.push(invalid(field, value, &problem));
    }
}

/// Problems with `value` as a label value.
pub fn label_value_problems(value: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if value.len() > QUALIFIED_NAME_MAX {
        problems.push(max_len_error(QUALIFIED_NAME_MAX));
    }
    if !value.is_empty() && !is_qualified_name_part(value) {
        problems.push(LABEL_VALUE_MSG.to_string());
    }
    problems
}

/// Problems with `value` as an IANA service name (a named container or service port).
pub fn port_name_problems(value: &str) -> Vec<String> {
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

/// Problems with `port` as a port number.
pub fn port_number_problems(port: i64) -> Vec<String> {
    if (1..=65535).contains(&port) {
        Vec::new()
    } else {
        vec![inclusive_range(1, 65535)]
    }
}

/// Upstream's `InclusiveRangeError`.
pub fn inclusive_range(lo: i64, hi: i64) -> String {
    format!("must be between {lo} and {hi}, inclusive")
}

/// Problems with `value` as an environment variable name (upstream's relaxed rule since 1.30:
/// printable ASCII except `=`).
pub fn env_var_name_problems(value: &str) -> Vec<String> {
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

/// Problems with `value` as a ConfigMap or Secret key.
pub fn config_map_key_problems(value: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if value.len() > DNS1123_SUBDOMAIN_MAX {
        problems.push(max_len_error(DNS1123_SUBDOMAIN_MAX));
    }
    if value.is_empty()
        || !value
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
    {
        problems.push(CONFIG_KEY_MSG.to_string());
    }
    if value == "." {
        problems.push("must not be '.'".to_string());
    } else if value == ".." {
        problems.push("must not be '..'".to_string());
    } else if value.starts_with("..") {
        problems.push("must not start with '..'".to_string());
    }
    problems
}

/// Problems with `value` as a path segment name (RBAC object names and others).
pub fn path_segment_problems(value: &str, prefix: bool) -> Vec<String> {
    let mut problems = Vec::new();
    if !prefix && (value == "." || value == "..") {
        problems.push(format!("may not be '{value}'"));
    }
    for bad in ["/", "%"] {
        if value.contains(bad) {
            problems.push(format!("may not contain '{bad}'"));
        }
    }
    problems
}

/// Problems with `value` as an IP address (upstream rejects leading zeros in IPv4 octets).
pub fn ip_problems(value: &str) -> Vec<String> {
    match value.parse::<IpAddr>() {
        Ok(_) => Vec::new(),
        Err(_) => vec!["must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)".to_string()],
    }
}

/// Problems with `value` as a CIDR (`10.0.0.0/8`, `fd00::/64`).
pub fn cidr_problems(value: &str) -> Vec<String> {
    let ok = value.split_once('/').is_some_and(|(ip, bits)| {
        let max = match ip.parse::<IpAddr>() {
            Ok(IpAddr::V4(_)) => 32,
            Ok(IpAddr::V6(_)) => 128,
            Err(_) => return false,
        };
        !bits.is_empty()
            && bits.bytes().all(|c| c.is_ascii_digit())
            && bits.parse::<u32>().is_ok_and(|b| b <= max)
    });
    if ok {
        Vec::new()
    } else {
        vec!["must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)".to_string()]
    }
}

/// How a kind's `metadata.name` is checked (upstream's `ValidateNameFunc`s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// Most kinds.
    Dns1123Subdomain,
    /// Namespaces.
    Dns1123Label,
    /// Services.
    Dns1035Label,
    /// RBAC kinds: anything but `.`/`..` and without `/` or `%`.
    PathSegment,
}

impl NameRule {
    /// Problems with `name`; `prefix`: it is a `generateName` (a trailing `-` is fine).
    pub fn problems(self, name: &str, prefix: bool) -> Vec<String> {
        let masked;
        let name = if prefix
            && matches!(
                self,
                Self::Dns1123Subdomain | Self::Dns1123Label | Self::Dns1035Label
            ) {
            masked = match name.strip_suffix('-') {
                Some(stem) => format!("{stem}a"),
                None => name.to_string(),
            };
            masked.as_str()
        } else {
            name
        };
        match self {
            Self::Dns1123Subdomain => dns1123_subdomain_problems(name),
            Self::Dns1123Label => dns1123_label_problems(name),
            Self::Dns1035Label => dns1035_label_problems(name),
            Self::PathSegment => path_segment_problems(name, prefix),
        }
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
        assert!(dns1035_label_problems("web").is_empty());
        assert!(!dns1035_label_problems("1web").is_empty());
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
        for ok in ["app", "k8s.io/app", "a.b/C_d-e", "tier.kwk.io/x"] {
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
    fn config_keys_paths_and_addresses() {
        for ok in ["a", "key.name", "KEY_NAME", ".hidden", "a..b"] {
            assert!(config_map_key_problems(ok).is_empty(), "{ok}");
        }
        for bad in ["", ".", "..", "..a", "a/b", "a b"] {
            assert!(!config_map_key_problems(bad).is_empty(), "{bad}");
        }
        assert!(path_segment_problems("system:node", false).is_empty());
        assert_eq!(path_segment_problems("a/b", false), ["may not contain '/'"]);
        assert_eq!(path_segment_problems("..", false), ["may not be '..'"]);
        assert!(ip_problems("10.0.0.1").is_empty() && ip_problems("fd00::1").is_empty());
        assert!(!ip_problems("10.0.0.256").is_empty() && !ip_problems("").is_empty());
        assert!(cidr_problems("10.0.0.0/8").is_empty() && cidr_problems("fd00::/64").is_empty());
        assert!(!cidr_problems("10.0.0.0/33").is_empty() && !cidr_problems("10.0.0.0").is_empty());
    }

    #[test]
    fn name_rules_with_generate_name_prefixes() {
        assert!(NameRule::Dns1123Subdomain.problems("web-", true).is_empty());
        assert!(
            !NameRule::Dns1123Subdomain
                .problems("web-", false)
                .is_empty()
        );
        assert!(NameRule::Dns1035Label.problems("svc-", true).is_empty());
        assert!(!NameRule::Dns1035Label.problems("1svc", false).is_empty());
        assert!(
            NameRule::PathSegment
                .problems("system:controller:x", false)
                .is_empty()
        );
    }
}
