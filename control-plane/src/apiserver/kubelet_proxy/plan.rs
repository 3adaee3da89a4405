//! The pure half of the kubelet proxy: which kubelet URL a `pods/log`, `pods/exec`,
//! `pods/attach`, `pods/portforward` or `nodes/proxy` request goes to (upstream's
//! `LogLocation`, `streamLocation`, `PortForwardLocation` and the node `ResourceLocation`),
//! the `PodLogOptions` validation, the container defaulting and the node address choice.
//! Table-tested below; the executor is in [`super`].

use serde_json::{Value, json};

use super::super::errors::{ApiError, Cause};
use super::super::request::Query;

/// upstream's `--kubelet-preferred-address-types` default (v1.33).
pub const DEFAULT_PREFERRED_ADDRESS_TYPES: &[&str] = &[
    "Hostname",
    "InternalDNS",
    "InternalIP",
    "ExternalDNS",
    "ExternalIP",
];

/// upstream's `ports.KubeletPort`: used when the Node reports no kubelet port.
pub const DEFAULT_KUBELET_PORT: u16 = 10250;

/// A connect subresource of pods that the kubelet serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodStream {
    Exec,
    Attach,
    PortForward,
}

impl PodStream {
    pub fn parse(subresource: &str) -> Option<Self> {
        match subresource {
            "exec" => Some(Self::Exec),
            "attach" => Some(Self::Attach),
            "portforward" => Some(Self::PortForward),
            _ => None,
        }
    }
}

/// The kubelet path and query of `pods/<name>/log` (the container already chosen).
pub fn log_path_and_query(
    namespace: &str,
    pod: &str,
    container: &str,
    query: &Query,
) -> Result<String, ApiError> {
    let int = |key: &str| -> Result<Option<i64>, ApiError> {
        match query.get(key) {
            None | Some("") => Ok(None),
            Some(text) => text.parse::<i64>().map(Some).map_err(|_| {
                ApiError::bad_request(format!(
                    "couldn't parse parameter {key:?}: strconv.ParseInt: parsing {text:?}: invalid syntax"
                ))
            }),
        }
    };
    let tail_lines = int("tailLines")?;
    let limit_bytes = int("limitBytes")?;
    let since_seconds = int("sinceSeconds")?;
    let since_time = query.get("sinceTime").filter(|t| !t.is_empty());
    if let Some(t) = since_time
        && time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).is_err()
    {
        return Err(ApiError::bad_request(format!(
            "couldn't parse parameter \"sinceTime\": parsing time {t:?} as RFC3339"
        )));
    }
    let mut causes = Vec::new();
    if let Some(n) = tail_lines.filter(|n| *n < 0) {
        causes.push(Cause::invalid(
            "tailLines",
            &json!(n),
            "must be greater than or equal to 0",
        ));
    }
    if let Some(n) = limit_bytes.filter(|n| *n < 1) {
        causes.push(Cause::invalid(
            "limitBytes",
            &json!(n),
            "must be greater than 0",
        ));
    }
    match (since_seconds, since_time) {
        (Some(_), Some(_)) => causes.push(Cause::forbidden(
            "",
            "at most one of `sinceTime` or `sinceSeconds` may be specified",
        )),
        (Some(n), None) if n < 1 => causes.push(Cause::invalid(
            "sinceSeconds",
            &json!(n),
            "must be greater than 0",
        )),
        _ => {}
    }
    if !causes.is_empty() {
        return Err(ApiError::invalid("", "PodLogOptions", "", causes));
    }
    let mut out = form_urlencoded::Serializer::new(String::new());
    for flag in ["follow", "previous", "timestamps"] {
        if query.flag(flag) {
            out.append_pair(flag, "true");
        }
    }
    let mut pairs: Vec<(&str, String)> = Vec::new();
    if let Some(n) = since_seconds {
        pairs.push(("sinceSeconds", n.to_string()));
    }
    if let Some(t) = since_time {
        pairs.push(("sinceTime", t.to_string()));
    }
    if let Some(n) = tail_lines {
        pairs.push(("tailLines", n.to_string()));
    }
    if let Some(n) = limit_bytes {
        pairs.push(("limitBytes", n.to_string()));
    }
    for (k, v) in &pairs {
        out.append_pair(k, v);
    }
    Ok(with_query(
        format!("/containerLogs/{namespace}/{pod}/{container}"),
        &out.finish(),
    ))
}

/// The kubelet path and query of `pods/<name>/exec|attach|portforward` (`container` is
/// ignored for port forwarding).
pub fn stream_path_and_query(
    kind: PodStream,
    namespace: &str,
    pod: &str,
    container: &str,
    query: &Query,
) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    match kind {
        PodStream::Exec | PodStream::Attach => {
            for key in ["stdin", "stdout", "stderr", "tty"] {
                if query.flag(key) {
                    out.append_pair(key, "1");
                }
            }
            if kind == PodStream::Exec {
                for c in query.all("command") {
                    out.append_pair("command", c);
                }
            }
        }
        PodStream::PortForward => {
            let ports: Vec<&str> = query
                .all("ports")
                .iter()
                .flat_map(|p| p.split(','))
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .collect();
            if !ports.is_empty() {
                out.append_pair("port", &ports.join(","));
            }
        }
    }
    let path = match kind {
        PodStream::Exec => format!("/exec/{namespace}/{pod}/{container}"),
        PodStream::Attach => format!("/attach/{namespace}/{pod}/{container}"),
        PodStream::PortForward => format!("/portForward/{namespace}/{pod}"),
    };
    with_query(path, &out.finish())
}

fn with_query(path: String, query: &str) -> String {
    if query.is_empty() {
        path
    } else {
        format!("{path}?{query}")
    }
}

/// The names of a pod's containers in upstream's visiting order (init, regular, ephemeral).
fn container_names(pod: &Value) -> (Vec<&str>, usize) {
    let names = |key: &str| -> Vec<&str> {
        pod.pointer(&format!("/spec/{key}"))
            .and_then(Value::as_array)
            .map(|cs| {
                cs.iter()
                    .filter_map(|c| c.get("name").and_then(Value::as_str))
                    .collect()
            })
            .unwrap_or_default()
    };
    let regular = names("containers");
    let count = regular.len();
    let mut all = names("initContainers");
    all.extend(regular);
    all.extend(names("ephemeralContainers"));
    (all, count)
}

/// The container a request means (upstream's `validateContainer`): the named one if the pod
/// has it, else the only regular container.
pub fn choose_container(pod: &Value, requested: Option<&str>) -> Result<String, ApiError> {
    let pod_name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let (all, regular) = container_names(pod);
    match requested.filter(|c| !c.is_empty()) {
        Some(name) if all.contains(&name) => Ok(name.to_string()),
        Some(name) => Err(ApiError::bad_request(format!(
            "container {name} is not valid for pod {pod_name}"
        ))),
        None => match regular {
            1 => Ok(pod
                .pointer("/spec/containers/0/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()),
            0 => Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {pod_name}"
            ))),
            _ => Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {pod_name}, choose one of: [{}]",
                all.join(" ")
            ))),
        },
    }
}

/// Where a node's kubelet listens: the candidate hosts in preference order (each to be
/// tried until one resolves) and the port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeletEndpoint {
    pub hosts: Vec<String>,
    pub port: u16,
}

/// The kubelet endpoint of a Node object (upstream's `GetPreferredNodeAddress`, keeping
/// every match in order instead of the first, and the `kubernetes.io/hostname` label for
/// `Hostname`). `None` when the node reports no address of a preferred type.
pub fn kubelet_endpoint(
    node: &Value,
    preferred_types: &[String],
    default_port: u16,
) -> Option<KubeletEndpoint> {
    let addresses: Vec<(&str, &str)> = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|a| {
                    Some((
                        a.get("type")?.as_str()?,
                        a.get("address")?.as_str().filter(|s| !s.is_empty())?,
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let mut hosts: Vec<String> = Vec::new();
    for wanted in preferred_types {
        for (kind, address) in &addresses {
            if kind == wanted && !hosts.iter().any(|h| h == address) {
                hosts.push(address.to_string());
            }
        }
        if wanted == "Hostname"
            && let Some(label) = node
                .pointer("/metadata/labels/kubernetes.io~1hostname")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
            && !hosts.iter().any(|h| h == label)
        {
            hosts.push(label.to_string());
        }
    }
    if hosts.is_empty() {
        return None;
    }
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_i64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)
        .unwrap_or(default_port);
    Some(KubeletEndpoint { hosts, port })
}

/// Splits `nodes/<id>/proxy`'s `<id>` (`name`, `name:port`, `scheme:name:port`; upstream's
/// `SplitSchemeNamePort`) into (scheme, name, port).
pub fn split_scheme_name_port(id: &str) -> Option<(Option<&str>, &str, Option<&str>)> {
    let parts: Vec<&str> = id.split(':').collect();
    let (scheme, name, port) = match parts.as_slice() {
        [name] => (None, *name, None),
        [name, port] => (None, *name, Some(*port)),
        [scheme, name, port] => (Some(*scheme), *name, Some(*port)),
        _ => return None,
    };
    if name.is_empty() || scheme.is_some_and(|s| s != "http" && s != "https") {
        return None;
    }
    Some((scheme, name, port.filter(|p| !p.is_empty())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(raw: &str) -> Query {
        Query::parse(Some(raw))
    }

    #[test]
    fn log_queries_as_upstream() {
        type Want = Result<&'static str, (u16, &'static str)>;
        let cases: &[(&str, Want)] = &[
            ("", Ok("/containerLogs/ns/p/c")),
            (
                "follow=true&timestamps=1&tailLines=10&limitBytes=5&container=c",
                Ok("/containerLogs/ns/p/c?follow=true&timestamps=true&tailLines=10&limitBytes=5"),
            ),
            (
                "previous=true&sinceSeconds=30",
                Ok("/containerLogs/ns/p/c?previous=true&sinceSeconds=30"),
            ),
            (
                "sinceTime=2024-01-02T03:04:05Z&insecureSkipTLSVerifyBackend=true",
                Ok("/containerLogs/ns/p/c?sinceTime=2024-01-02T03%3A04%3A05Z"),
            ),
            (
                "tailLines=-1",
                Err((
                    422,
                    "PodLogOptions \"\" is invalid: tailLines: Invalid value: -1: must be greater than or equal to 0",
                )),
            ),
            (
                "limitBytes=0",
                Err((
                    422,
                    "PodLogOptions \"\" is invalid: limitBytes: Invalid value: 0: must be greater than 0",
                )),
            ),
            (
                "sinceSeconds=0",
                Err((
                    422,
                    "PodLogOptions \"\" is invalid: sinceSeconds: Invalid value: 0: must be greater than 0",
                )),
            ),
            (
                "tailLines=x",
                Err((400, "couldn't parse parameter \"tailLines\"")),
            ),
            (
                "sinceTime=yesterday",
                Err((400, "couldn't parse parameter \"sinceTime\"")),
            ),
        ];
        for (query, want) in cases {
            let got = log_path_and_query("ns", "p", "c", &q(query));
            match (got, want) {
                (Ok(got), Ok(want)) => assert_eq!(&got, want, "{query}"),
                (Err(e), Err((code, prefix))) => {
                    assert_eq!(e.code, *code, "{query}: {}", e.message);
                    assert!(e.message.starts_with(prefix), "{query}: {}", e.message);
                }
                (got, want) => panic!("{query}: got {got:?}, want {want:?}"),
            }
        }
        let both = log_path_and_query(
            "ns",
            "p",
            "c",
            &q("sinceSeconds=1&sinceTime=2024-01-02T03:04:05Z"),
        );
        assert!(both.is_err_and(|e| {
            e.message
                .contains("at most one of `sinceTime` or `sinceSeconds`")
        }));
    }

    #[test]
    fn stream_queries_as_upstream() {
        let cases = [
            (
                PodStream::Exec,
                "command=sh&command=-c&command=echo%20hi&stdin=true&stdout=true&tty=false&container=c",
                "/exec/ns/p/c?stdin=1&stdout=1&command=sh&command=-c&command=echo+hi",
            ),
            (
                PodStream::Attach,
                "stdout=1&stderr=true&command=ignored",
                "/attach/ns/p/c?stdout=1&stderr=1",
            ),
            (
                PodStream::PortForward,
                "ports=80&ports=443",
                "/portForward/ns/p?port=80%2C443",
            ),
            (PodStream::PortForward, "", "/portForward/ns/p"),
        ];
        for (kind, query, want) in cases {
            assert_eq!(stream_path_and_query(kind, "ns", "p", "c", &q(query)), want);
        }
    }

    #[test]
    fn containers_default_like_upstream() {
        let one = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]}});
        let two = json!({"metadata": {"name": "p"}, "spec": {
            "initContainers": [{"name": "init"}],
            "containers": [{"name": "a"}, {"name": "b"}]}});
        let none = json!({"metadata": {"name": "p"}, "spec": {"containers": []}});
        let cases: Vec<(&Value, Option<&str>, Result<&str, &str>)> = vec![
            (&one, None, Ok("a")),
            (&one, Some(""), Ok("a")),
            (&one, Some("a"), Ok("a")),
            (&one, Some("x"), Err("container x is not valid for pod p")),
            (&two, Some("init"), Ok("init")),
            (
                &two,
                None,
                Err("a container name must be specified for pod p, choose one of: [init a b]"),
            ),
            (
                &none,
                None,
                Err("a container name must be specified for pod p"),
            ),
        ];
        for (pod, requested, want) in cases {
            let got = choose_container(pod, requested).map_err(|e| {
                assert_eq!(e.code, 400);
                e.message
            });
            assert_eq!(
                got.as_deref(),
                want.map_err(String::from).as_deref(),
                "{requested:?}"
            );
        }
    }

    #[test]
    fn node_addresses_in_preference_order() {
        let types: Vec<String> = DEFAULT_PREFERRED_ADDRESS_TYPES
            .iter()
            .map(|s| s.to_string())
            .collect();
        let node = json!({
            "metadata": {"labels": {"kubernetes.io/hostname": "n1"}},
            "status": {
                "addresses": [
                    {"type": "InternalIP", "address": "10.0.0.1"},
                    {"type": "Hostname", "address": "n1.local"},
                ],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": 10255}},
            }
        });
        assert_eq!(
            kubelet_endpoint(&node, &types, 10250),
            Some(KubeletEndpoint {
                hosts: vec!["n1.local".into(), "n1".into(), "10.0.0.1".into()],
                port: 10255,
            })
        );
        let zero_port = json!({"status": {
            "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}}}});
        assert_eq!(
            kubelet_endpoint(&zero_port, &types, 10250).map(|e| e.port),
            Some(10250)
        );
        let only_ip = vec!["InternalIP".to_string()];
        assert_eq!(
            kubelet_endpoint(&node, &only_ip, 10250).map(|e| e.hosts),
            Some(vec!["10.0.0.1".to_string()])
        );
        assert_eq!(
            kubelet_endpoint(&json!({"status": {}}), &types, 10250),
            None
        );
    }

    #[test]
    fn node_proxy_ids() {
        assert_eq!(split_scheme_name_port("n1"), Some((None, "n1", None)));
        assert_eq!(
            split_scheme_name_port("n1:10255"),
            Some((None, "n1", Some("10255")))
        );
        assert_eq!(
            split_scheme_name_port("http:n1:80"),
            Some((Some("http"), "n1", Some("80")))
        );
        assert_eq!(split_scheme_name_port("ftp:n1:80"), None);
        assert_eq!(split_scheme_name_port("a:b:c:d"), None);
        assert_eq!(split_scheme_name_port(":80"), None);
    }
}
