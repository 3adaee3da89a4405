//! A container's probes as the prober runs them: the handler with its port resolved (a named
//! port looked up in the container's ports) and the timing fields with the API's defaults.
//! Pure.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, HTTPGetAction, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Which probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProbeKind {
    Startup,
    Liveness,
    Readiness,
}

impl ProbeKind {
    /// `Startup`, `Liveness`, `Readiness`: how upstream's events name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Startup => "Startup",
            Self::Liveness => "Liveness",
            Self::Readiness => "Readiness",
        }
    }

    /// `startup`, `liveness`, `readiness`: how upstream's messages name it mid-sentence.
    pub fn lowercase(self) -> &'static str {
        match self {
            Self::Startup => "startup",
            Self::Liveness => "liveness",
            Self::Readiness => "readiness",
        }
    }

    /// `startupProbe`, ...: the field, for error messages.
    pub fn field(self) -> &'static str {
        match self {
            Self::Startup => "startupProbe",
            Self::Liveness => "livenessProbe",
            Self::Readiness => "readinessProbe",
        }
    }
}

/// `http` or `https` (`httpGet.scheme`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// What a probe does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Handler {
    /// A command in the container; exit status 0 is success.
    Exec { command: Vec<String> },
    /// An HTTP GET; a status in 200..400 is success. `host` empty: the pod IP.
    Http {
        scheme: Scheme,
        host: Option<String>,
        port: u16,
        path: String,
        headers: Vec<(String, String)>,
    },
    /// A TCP connection that opens is success.
    Tcp { host: Option<String>, port: u16 },
    /// `grpc.health.v1.Health/Check` answering `SERVING` is success.
    Grpc { port: u16, service: String },
}

/// One probe of a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeSpec {
    pub kind: ProbeKind,
    pub handler: Handler,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
    /// `terminationGracePeriodSeconds` of the probe: the grace period of a kill it causes.
    pub termination_grace_seconds: Option<i64>,
}

/// A probe the prober cannot run, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ProbeSpecError {
    pub field: String,
    pub message: String,
}

/// The API's defaults (`periodSeconds` 10, `timeoutSeconds` 1, thresholds 1 and 3).
const DEFAULT_PERIOD: i32 = 10;
const DEFAULT_TIMEOUT: i32 = 1;
const DEFAULT_SUCCESS: i32 = 1;
const DEFAULT_FAILURE: i32 = 3;

/// The container's probes in a fixed order (startup, liveness, readiness).
pub fn container_probes(container: &Container) -> Result<Vec<ProbeSpec>, ProbeSpecError> {
    [
        (ProbeKind::Startup, &container.startup_probe),
        (ProbeKind::Liveness, &container.liveness_probe),
        (ProbeKind::Readiness, &container.readiness_probe),
    ]
    .into_iter()
    .filter_map(|(kind, probe)| probe.as_ref().map(|p| probe_spec(container, kind, p)))
    .collect()
}

/// Which probes the container declares (valid or not).
pub fn probe_kinds(container: &Container) -> BTreeSet<ProbeKind> {
    [
        (ProbeKind::Startup, container.startup_probe.is_some()),
        (ProbeKind::Liveness, container.liveness_probe.is_some()),
        (ProbeKind::Readiness, container.readiness_probe.is_some()),
    ]
    .into_iter()
    .filter_map(|(kind, set)| set.then_some(kind))
    .collect()
}

fn probe_spec(
    container: &Container,
    kind: ProbeKind,
    probe: &Probe,
) -> Result<ProbeSpec, ProbeSpecError> {
    let field = |name: &str| format!("{}.{}", kind.field(), name);
    let err = |name: &str, message: String| ProbeSpecError {
        field: field(name),
        message,
    };
    let seconds = |name: &str, value: Option<i32>, default: i32, min: i32| {
        let value = value.unwrap_or(default);
        if value < min {
            return Err(err(name, format!("must be at least {min}, got {value}")));
        }
        Ok(value)
    };
    let success_threshold = seconds(
        "successThreshold",
        probe.success_threshold,
        DEFAULT_SUCCESS,
        1,
    )?;
    if kind != ProbeKind::Readiness && success_threshold != 1 {
        return Err(err(
            "successThreshold",
            format!("must be 1 for a {} probe", kind.lowercase()),
        ));
    }
    let handler = handler(container, kind, probe)?;
    Ok(ProbeSpec {
        kind,
        handler,
        initial_delay: secs(seconds(
            "initialDelaySeconds",
            probe.initial_delay_seconds,
            0,
            0,
        )?),
        period: secs(seconds(
            "periodSeconds",
            probe.period_seconds,
            DEFAULT_PERIOD,
            1,
        )?),
        timeout: secs(seconds(
            "timeoutSeconds",
            probe.timeout_seconds,
            DEFAULT_TIMEOUT,
            1,
        )?),
        success_threshold: success_threshold.unsigned_abs(),
        failure_threshold: seconds(
            "failureThreshold",
            probe.failure_threshold,
            DEFAULT_FAILURE,
            1,
        )?
        .unsigned_abs(),
        termination_grace_seconds: probe.termination_grace_period_seconds.map(|s| s.max(1)),
    })
}

fn secs(value: i32) -> Duration {
    Duration::from_secs(u64::from(value.unsigned_abs()))
}

fn handler(
    container: &Container,
    kind: ProbeKind,
    probe: &Probe,
) -> Result<Handler, ProbeSpecError> {
    let err = |name: &str, message: String| ProbeSpecError {
        field: format!("{}.{name}", kind.field()),
        message,
    };
    let set = [
        probe.exec.is_some(),
        probe.http_get.is_some(),
        probe.tcp_socket.is_some(),
        probe.grpc.is_some(),
    ]
    .into_iter()
    .filter(|set| *set)
    .count();
    if set != 1 {
        return Err(err(
            "handler",
            format!("exactly one of exec, httpGet, tcpSocket and grpc must be set, found {set}"),
        ));
    }
    if let Some(exec) = &probe.exec {
        let command = exec.command.clone().unwrap_or_default();
        if command.is_empty() {
            return Err(err("exec.command", "must not be empty".into()));
        }
        return Ok(Handler::Exec { command });
    }
    if let Some(http) = &probe.http_get {
        return http_get(container, http, kind.field());
    }
    if let Some(tcp) = &probe.tcp_socket {
        let port =
            resolve_port(container, &tcp.port).map_err(|message| err("tcpSocket.port", message))?;
        return Ok(Handler::Tcp {
            host: tcp.host.clone().filter(|h| !h.is_empty()),
            port,
        });
    }
    let grpc = probe
        .grpc
        .as_ref()
        .ok_or_else(|| err("handler", "none set".into()))?;
    let port = u16::try_from(grpc.port)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| err("grpc.port", format!("{} is not a port", grpc.port)))?;
    Ok(Handler::Grpc {
        port,
        service: grpc.service.clone().unwrap_or_default(),
    })
}

/// An `httpGet` action (of a probe or a lifecycle hook under `field`) as a [`Handler::Http`]:
/// the port resolved, the path absolute, header names and values checked (a line break would
/// smuggle a header into the request).
pub fn http_get(
    container: &Container,
    http: &HTTPGetAction,
    field: &str,
) -> Result<Handler, ProbeSpecError> {
    let err = |name: &str, message: String| ProbeSpecError {
        field: format!("{field}.httpGet.{name}"),
        message,
    };
    let scheme = match http.scheme.as_deref() {
        None | Some("HTTP") => Scheme::Http,
        Some("HTTPS") => Scheme::Https,
        Some(other) => {
            return Err(err(
                "scheme",
                format!("must be HTTP or HTTPS, got {other:?}"),
            ));
        }
    };
    let port = resolve_port(container, &http.port).map_err(|message| err("port", message))?;
    let path = match http.path.as_deref() {
        None | Some("") => "/".to_string(),
        Some(p) if p.starts_with('/') => p.to_string(),
        Some(p) => format!("/{p}"),
    };
    if path.contains(['\r', '\n', ' ']) {
        return Err(err("path", "must not contain spaces or line breaks".into()));
    }
    let mut headers = Vec::new();
    for (i, header) in http.http_headers.iter().flatten().enumerate() {
        let valid_name = !header.name.is_empty()
            && header
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !valid_name {
            return Err(err(
                &format!("httpHeaders[{i}].name"),
                format!("{:?} is not a valid header name", header.name),
            ));
        }
        if header.value.contains(['\r', '\n']) {
            return Err(err(
                &format!("httpHeaders[{i}].value"),
                "must not contain line breaks".into(),
            ));
        }
        headers.push((header.name.clone(), header.value.clone()));
    }
    Ok(Handler::Http {
        scheme,
        host: http.host.clone().filter(|h| !h.is_empty()),
        port,
        path,
        headers,
    })
}

/// A port number, or the `containerPort` of the container's port of that name.
fn resolve_port(container: &Container, port: &IntOrString) -> Result<u16, String> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("{n} is not a port")),
        IntOrString::String(name) => {
            if let Ok(n) = name.parse::<i32>() {
                return resolve_port(container, &IntOrString::Int(n));
            }
            container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .and_then(|p| u16::try_from(p.container_port).ok())
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("the container has no port named {name:?}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(yaml: &str) -> Container {
        serde_saphyr::from_str(yaml).expect("container yaml")
    }

    #[test]
    fn defaults_and_named_ports() {
        let c = container(
            r#"
name: web
ports: [{name: http, containerPort: 8080}, {name: health, containerPort: 9090}]
livenessProbe: {httpGet: {port: http, path: healthz, httpHeaders: [{name: X-A, value: b}]}}
readinessProbe: {tcpSocket: {port: health}, periodSeconds: 2, successThreshold: 2}
startupProbe: {exec: {command: [cat, /ready]}, failureThreshold: 30, terminationGracePeriodSeconds: 5}
"#,
        );
        let probes = container_probes(&c).expect("probes");
        assert_eq!(probes.len(), 3);
        assert_eq!(probes[0].kind, ProbeKind::Startup);
        assert_eq!(
            probes[0].handler,
            Handler::Exec {
                command: vec!["cat".into(), "/ready".into()]
            }
        );
        assert_eq!(probes[0].failure_threshold, 30);
        assert_eq!(probes[0].termination_grace_seconds, Some(5));
        assert_eq!(probes[1].kind, ProbeKind::Liveness);
        assert_eq!(
            probes[1].handler,
            Handler::Http {
                scheme: Scheme::Http,
                host: None,
                port: 8080,
                path: "/healthz".into(),
                headers: vec![("X-A".into(), "b".into())],
            }
        );
        assert_eq!(probes[1].period, Duration::from_secs(10));
        assert_eq!(probes[1].timeout, Duration::from_secs(1));
        assert_eq!(probes[1].failure_threshold, 3);
        assert_eq!(probes[1].initial_delay, Duration::ZERO);
        assert_eq!(
            probes[2].handler,
            Handler::Tcp {
                host: None,
                port: 9090
            }
        );
        assert_eq!(probes[2].period, Duration::from_secs(2));
        assert_eq!(probes[2].success_threshold, 2);
    }

    #[test]
    fn invalid_probes_name_the_field() {
        // (container yaml, field in the error)
        let cases = [
            (
                "{name: a, livenessProbe: {httpGet: {port: web}}}",
                "livenessProbe.httpGet.port",
            ),
            (
                "{name: a, livenessProbe: {tcpSocket: {port: 0}}}",
                "livenessProbe.tcpSocket.port",
            ),
            (
                "{name: a, livenessProbe: {tcpSocket: {port: 80}, successThreshold: 2}}",
                "livenessProbe.successThreshold",
            ),
            (
                "{name: a, readinessProbe: {tcpSocket: {port: 80}, periodSeconds: 0}}",
                "readinessProbe.periodSeconds",
            ),
            ("{name: a, startupProbe: {}}", "startupProbe.handler"),
            (
                "{name: a, startupProbe: {exec: {command: [x]}, tcpSocket: {port: 1}}}",
                "startupProbe.handler",
            ),
            (
                "{name: a, readinessProbe: {exec: {command: []}}}",
                "readinessProbe.exec.command",
            ),
            (
                "{name: a, readinessProbe: {httpGet: {port: 80, scheme: FTP}}}",
                "readinessProbe.httpGet.scheme",
            ),
            (
                r#"{name: a, readinessProbe: {httpGet: {port: 80, httpHeaders: [{name: "a b", value: c}]}}}"#,
                "readinessProbe.httpGet.httpHeaders[0].name",
            ),
            (
                r#"{name: a, readinessProbe: {httpGet: {port: 80, httpHeaders: [{name: a, value: "x\r\nEvil: 1"}]}}}"#,
                "readinessProbe.httpGet.httpHeaders[0].value",
            ),
            (
                "{name: a, readinessProbe: {grpc: {port: 70000}}}",
                "readinessProbe.grpc.port",
            ),
        ];
        for (yaml, field) in cases {
            let err = container_probes(&container(yaml)).expect_err(yaml);
            assert_eq!(err.field, field, "{yaml}: {err}");
        }
    }

    #[test]
    fn grpc_and_https() {
        let c = container(
            "{name: a, livenessProbe: {grpc: {port: 50051, service: db}}, readinessProbe: {httpGet: {port: '443', scheme: HTTPS, host: 10.0.0.9}}}",
        );
        let probes = container_probes(&c).expect("probes");
        assert_eq!(
            probes[0].handler,
            Handler::Grpc {
                port: 50051,
                service: "db".into()
            }
        );
        assert_eq!(
            probes[1].handler,
            Handler::Http {
                scheme: Scheme::Https,
                host: Some("10.0.0.9".into()),
                port: 443,
                path: "/".into(),
                headers: Vec::new(),
            }
        );
    }
}
