//! What a request addresses: the URL path and method turned into a [`RequestInfo`] (upstream's
//! `RequestInfoFactory` rules: `/api/v1/...` for the core group, `/apis/<group>/<version>/...`,
//! `namespaces/<ns>/` scoping, `<name>/<subresource>`, the legacy `/watch/` prefix) and the
//! query string as a multimap. Pure: table-tested below.

use std::collections::BTreeMap;

/// The Kubernetes verb of a resource request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Get,
    List,
    Watch,
    Create,
    Update,
    Patch,
    Delete,
    DeleteCollection,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
            Verb::DeleteCollection => "deletecollection",
        }
    }
}

/// A request for a resource (anything under `/api/<v>` or `/apis/<g>/<v>` that names one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceRequest {
    pub verb: Verb,
    /// `""` for the core group.
    pub group: String,
    pub version: String,
    /// The namespace in the path (for `namespaces/<n>` itself: `n`).
    pub namespace: Option<String>,
    pub resource: String,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

/// What a request addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestInfo {
    /// A resource request.
    Resource(ResourceRequest),
    /// Discovery of `/api` or `/apis`.
    RootDiscovery { legacy: bool },
    /// Discovery of one group (`/apis/<group>`).
    GroupDiscovery { group: String },
    /// Discovery of one group version (`/api/v1`, `/apis/<g>/<v>`).
    VersionDiscovery { group: String, version: String },
    /// Any other path (`/version`, `/healthz`, `/openapi/v3` ...).
    NonResource { path: String },
}

/// Namespace subresources: `namespaces/<n>/status` is not "resource `status` in namespace n".
const NAMESPACE_SUBRESOURCES: &[&str] = &["status", "finalize"];

/// Parses a request's method and path. `None` when the path is an API path that cannot
/// address anything (the server answers 404).
pub fn parse(method: &http::Method, path: &str, query: &Query) -> Option<RequestInfo> {
    let trimmed = path.trim_matches('/');
    let mut parts: Vec<&str> = if trimmed.is_empty() {
        Vec::new()
    } else {
        trimmed.split('/').collect()
    };
    let (group, version, rest_start) = match parts.as_slice() {
        ["api"] => return Some(RequestInfo::RootDiscovery { legacy: true }),
        ["apis"] => return Some(RequestInfo::RootDiscovery { legacy: false }),
        ["api", version, ..] => (String::new(), version.to_string(), 2),
        ["apis", group] => {
            return Some(RequestInfo::GroupDiscovery {
                group: group.to_string(),
            });
        }
        ["apis", group, version, ..] => (group.to_string(), version.to_string(), 3),
        _ => {
            return Some(RequestInfo::NonResource {
                path: format!("/{trimmed}"),
            });
        }
    };
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return None;
    }
    parts.drain(..rest_start);
    if parts.is_empty() {
        return Some(RequestInfo::VersionDiscovery { group, version });
    }
    let mut legacy_watch = false;
    if parts[0] == "watch" {
        legacy_watch = true;
        parts.remove(0);
        if parts.is_empty() {
            return None;
        }
    }
    let mut namespace = None;
    if parts[0] == "namespaces" && parts.len() > 1 {
        namespace = Some(parts[1].to_string());
        if parts.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&parts[2]) {
            parts.drain(..2);
        }
    }
    let (resource, name, subresource) = match parts.as_slice() {
        [resource] => (resource, None, None),
        [resource, name] => (resource, Some(name.to_string()), None),
        [resource, name, sub] => (resource, Some(name.to_string()), Some(sub.to_string())),
        // `nodes/<name>/proxy/<path...>` (the path is the proxied one).
        [resource, name, sub, ..] if *sub == "proxy" => {
            (resource, Some(name.to_string()), Some(sub.to_string()))
        }
        _ => return None,
    };
    let watch_param = query.flag("watch");
    let verb = match *method {
        http::Method::GET | http::Method::HEAD => {
            if legacy_watch || watch_param {
                Verb::Watch
            } else if name.is_some() {
                Verb::Get
            } else {
                Verb::List
            }
        }
        http::Method::POST => Verb::Create,
        http::Method::PUT => Verb::Update,
        http::Method::PATCH => Verb::Patch,
        http::Method::DELETE if name.is_some() => Verb::Delete,
        http::Method::DELETE => Verb::DeleteCollection,
        _ => return None,
    };
    Some(RequestInfo::Resource(ResourceRequest {
        verb,
        group,
        version,
        namespace,
        resource: resource.to_string(),
        name,
        subresource,
    }))
}

/// A parsed query string (`?a=1&b=x&a=2`): every value of every key, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    values: BTreeMap<String, Vec<String>>,
}

impl Query {
    pub fn parse(raw: Option<&str>) -> Self {
        let mut values: BTreeMap<String, Vec<String>> = BTreeMap::new();
        if let Some(raw) = raw {
            for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
                values
                    .entry(k.into_owned())
                    .or_default()
                    .push(v.into_owned());
            }
        }
        Self { values }
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values
            .get(key)
            .and_then(|v| v.first())
            .map(String::as_str)
    }

    /// Every value of `key`.
    pub fn all(&self, key: &str) -> &[String] {
        self.values.get(key).map(Vec::as_slice).unwrap_or_default()
    }

    /// A boolean parameter: `true`/`1` (as upstream's parser; anything else is false).
    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn res(
        verb: Verb,
        group: &str,
        namespace: Option<&str>,
        resource: &str,
        name: Option<&str>,
        sub: Option<&str>,
    ) -> Option<RequestInfo> {
        Some(RequestInfo::Resource(ResourceRequest {
            verb,
            group: group.to_string(),
            version: "v1".to_string(),
            namespace: namespace.map(String::from),
            resource: resource.to_string(),
            name: name.map(String::from),
            subresource: sub.map(String::from),
        }))
    }

    #[test]
    fn parses_paths_like_upstream() {
        use Verb::*;
        let cases: Vec<(Method, &str, &str, Option<RequestInfo>)> = vec![
            (
                Method::GET,
                "/api",
                "",
                Some(RequestInfo::RootDiscovery { legacy: true }),
            ),
            (
                Method::GET,
                "/apis",
                "",
                Some(RequestInfo::RootDiscovery { legacy: false }),
            ),
            (
                Method::GET,
                "/apis/apps",
                "",
                Some(RequestInfo::GroupDiscovery {
                    group: "apps".into(),
                }),
            ),
            (
                Method::GET,
                "/api/v1",
                "",
                Some(RequestInfo::VersionDiscovery {
                    group: "".into(),
                    version: "v1".into(),
                }),
            ),
            (
                Method::GET,
                "/version",
                "",
                Some(RequestInfo::NonResource {
                    path: "/version".into(),
                }),
            ),
            (
                Method::GET,
                "/api/v1/pods",
                "",
                res(List, "", None, "pods", None, None),
            ),
            (
                Method::GET,
                "/api/v1/namespaces/default/pods",
                "limit=500",
                res(List, "", Some("default"), "pods", None, None),
            ),
            (
                Method::GET,
                "/api/v1/namespaces/default/pods",
                "watch=true",
                res(Watch, "", Some("default"), "pods", None, None),
            ),
            (
                Method::GET,
                "/api/v1/watch/namespaces/default/pods",
                "",
                res(Watch, "", Some("default"), "pods", None, None),
            ),
            (
                Method::GET,
                "/api/v1/namespaces/default/pods/web",
                "",
                res(Get, "", Some("default"), "pods", Some("web"), None),
            ),
            (
                Method::POST,
                "/api/v1/namespaces/default/pods/web/eviction",
                "",
                res(
                    Create,
                    "",
                    Some("default"),
                    "pods",
                    Some("web"),
                    Some("eviction"),
                ),
            ),
            (
                Method::GET,
                "/api/v1/namespaces",
                "",
                res(List, "", None, "namespaces", None, None),
            ),
            (
                Method::GET,
                "/api/v1/namespaces/kube-system",
                "",
                res(
                    Get,
                    "",
                    Some("kube-system"),
                    "namespaces",
                    Some("kube-system"),
                    None,
                ),
            ),
            (
                Method::PUT,
                "/api/v1/namespaces/x/finalize",
                "",
                res(
                    Update,
                    "",
                    Some("x"),
                    "namespaces",
                    Some("x"),
                    Some("finalize"),
                ),
            ),
            (
                Method::PATCH,
                "/apis/apps/v1/namespaces/d/deployments/web/scale",
                "",
                res(
                    Patch,
                    "apps",
                    Some("d"),
                    "deployments",
                    Some("web"),
                    Some("scale"),
                ),
            ),
            (
                Method::DELETE,
                "/api/v1/nodes/n1",
                "",
                res(Delete, "", None, "nodes", Some("n1"), None),
            ),
            (
                Method::DELETE,
                "/api/v1/namespaces/a/configmaps",
                "",
                res(DeleteCollection, "", Some("a"), "configmaps", None, None),
            ),
            (Method::GET, "/api/v1/namespaces/a/pods/b/c/d", "", None),
            // v1.33: the WebSocket form of exec is authorized as `get` (the extra `create`
            // check came with v1.35's AuthorizePodWebsocketUpgradeCreatePermission).
            (
                Method::GET,
                "/api/v1/namespaces/a/pods/b/exec",
                "command=ls",
                res(Get, "", Some("a"), "pods", Some("b"), Some("exec")),
            ),
            (
                Method::PUT,
                "/api/v1/nodes/n1:10250/proxy/configz/x",
                "",
                res(Update, "", None, "nodes", Some("n1:10250"), Some("proxy")),
            ),
            (Method::GET, "/api/v1/namespaces/a/pods/../x", "", None),
            (Method::OPTIONS, "/api/v1/pods", "", None),
        ];
        for (method, path, query, want) in cases {
            let got = parse(&method, path, &Query::parse(Some(query)));
            assert_eq!(got, want, "{method} {path}?{query}");
        }
    }

    #[test]
    fn query_multimap() {
        let q = Query::parse(Some(
            "command=sh&command=-c&watch=1&labelSelector=a%3Db%2Cc",
        ));
        assert_eq!(q.all("command"), ["sh", "-c"]);
        assert!(q.flag("watch"));
        assert_eq!(q.get("labelSelector"), Some("a=b,c"));
        assert!(!q.flag("missing"));
    }
}
