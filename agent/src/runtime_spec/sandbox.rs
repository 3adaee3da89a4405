//! The pod sandbox config (`RunPodSandbox`), as upstream `generatePodSandboxConfig` and
//! `generatePodSandboxLinuxConfig` build it: metadata, hostname, log directory, DNS, port
//! mappings, labels, annotations and the Linux sandbox security context.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{ContainerPort, Pod};
use kwk_cri::api::{
    LinuxPodSandboxConfig, LinuxSandboxSecurityContext, PodSandboxConfig, PodSandboxMetadata,
    PortMapping, Protocol, SecurityProfile, security_profile::ProfileType,
};

use super::dns::{DnsContext, pod_dns_config};
use super::security::{has_privileged_container, namespace_options};
use super::{SpecError, podx};
use crate::labels;

/// Longest hostname the kernel accepts (64 bytes with the terminating NUL).
const MAX_HOSTNAME_LEN: usize = 63;
/// Longest FQDN usable as the kernel nodename (`setHostnameAsFQDN`).
const MAX_FQDN_LEN: usize = 64;

/// What the sandbox config needs besides the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxContext {
    /// 0 for the pod's first sandbox, +1 for each replacement.
    pub attempt: u32,
    /// The pod's cgroup (from the cgroups module), in the runtime's cgroup driver syntax.
    pub cgroup_parent: String,
    /// The root of pod log directories, normally `/var/log/pods`.
    pub log_root: PathBuf,
    pub dns: DnsContext,
    pub node_name: String,
}

/// The CRI sandbox config for `pod`.
pub fn sandbox_config(pod: &Pod, ctx: &SandboxContext) -> Result<PodSandboxConfig, SpecError> {
    let (name, namespace, uid) = (podx::name(pod), podx::namespace(pod), podx::uid(pod));
    // containerd 1.6 refuses a hostname for host-network sandboxes; upstream leaves it empty too.
    let hostname = if podx::host_network(pod) {
        String::new()
    } else {
        let (hostname, domain) = pod_hostname_and_domain(pod, &ctx.dns.cluster_domain)?;
        kernel_hostname(pod, &hostname, &domain)?
    };
    Ok(PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.to_string(),
            uid: uid.to_string(),
            namespace: namespace.to_string(),
            attempt: ctx.attempt,
        }),
        hostname,
        log_directory: pod_log_dir(ctx, pod).to_string_lossy().into_owned(),
        dns_config: Some(pod_dns_config(pod, &ctx.dns)),
        port_mappings: port_mappings(pod),
        labels: sandbox_labels(pod),
        annotations: pod
            .metadata
            .annotations
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        linux: Some(linux_config(pod, ctx)?),
        windows: None,
    })
}

/// `<log_root>/<namespace>_<name>_<uid>`.
pub fn pod_log_dir(ctx: &SandboxContext, pod: &Pod) -> PathBuf {
    ctx.log_root.join(format!(
        "{}_{}_{}",
        podx::namespace(pod),
        podx::name(pod),
        podx::uid(pod)
    ))
}

/// The pod's hostname (`spec.hostname` or its name, cut to 63 characters) and its domain
/// (`<subdomain>.<ns>.svc.<cluster domain>` when `spec.subdomain` is set, else empty).
pub fn pod_hostname_and_domain(
    pod: &Pod,
    cluster_domain: &str,
) -> Result<(String, String), SpecError> {
    let spec = podx::spec(pod);
    let hostname = match spec
        .and_then(|s| s.hostname.as_deref())
        .filter(|h| !h.is_empty())
    {
        Some(h) => {
            check_dns_label("spec.hostname", h)?;
            h
        }
        None => podx::name(pod),
    };
    let hostname = if hostname.len() > MAX_HOSTNAME_LEN {
        let cut = hostname
            .get(..MAX_HOSTNAME_LEN)
            .unwrap_or(hostname)
            .trim_end_matches(['-', '.']);
        if cut.is_empty() {
            return Err(SpecError::invalid(
                "metadata.name",
                format!("hostname {hostname:?} is invalid"),
            ));
        }
        cut
    } else {
        hostname
    };
    let domain = match spec
        .and_then(|s| s.subdomain.as_deref())
        .filter(|d| !d.is_empty())
    {
        Some(sub) => {
            check_dns_label("spec.subdomain", sub)?;
            format!("{sub}.{}.svc.{cluster_domain}", podx::namespace(pod))
        }
        None => String::new(),
    };
    Ok((hostname.to_string(), domain))
}

/// The nodename the kernel gets: the FQDN with `setHostnameAsFQDN` and a domain, else the hostname.
fn kernel_hostname(pod: &Pod, hostname: &str, domain: &str) -> Result<String, SpecError> {
    let as_fqdn = podx::spec(pod)
        .and_then(|s| s.set_hostname_as_fqdn)
        .unwrap_or(false);
    if domain.is_empty() || !as_fqdn {
        return Ok(hostname.to_string());
    }
    let fqdn = format!("{hostname}.{domain}");
    if fqdn.len() > MAX_FQDN_LEN {
        return Err(SpecError::invalid(
            "spec.setHostnameAsFQDN",
            format!("FQDN {fqdn:?} is longer than {MAX_FQDN_LEN} characters"),
        ));
    }
    Ok(fqdn)
}

fn check_dns_label(field: &str, value: &str) -> Result<(), SpecError> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(SpecError::invalid(
            field,
            format!("{value:?} is not a valid DNS label"),
        ))
    }
}

/// Port mappings for every app container port, as upstream `MakePortMappings` lists them
/// (containerd passes only those with a hostPort to the portmap plugin). A port whose name (or,
/// unnamed, its family/protocol/hostIP/ports) repeats within a container is skipped.
fn port_mappings(pod: &Pod) -> Vec<PortMapping> {
    let mut out = Vec::new();
    for container in podx::spec(pod)
        .map(|s| s.containers.as_slice())
        .unwrap_or_default()
    {
        let mut seen = HashSet::new();
        for port in container.ports.iter().flatten() {
            if !seen.insert(port_key(port)) {
                continue;
            }
            out.push(PortMapping {
                protocol: runtime_protocol(port.protocol.as_deref()) as i32,
                container_port: port.container_port,
                host_port: port.host_port.unwrap_or(0),
                host_ip: port.host_ip.clone().unwrap_or_default(),
            });
        }
    }
    out
}

fn port_key(port: &ContainerPort) -> String {
    if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) {
        return name.to_string();
    }
    let host_ip = port.host_ip.as_deref().unwrap_or_default();
    let family = match host_ip.parse::<std::net::IpAddr>() {
        _ if host_ip.is_empty() => "any",
        Ok(std::net::IpAddr::V6(_)) => "v6",
        _ => "v4",
    };
    format!(
        "{family}-{}-{host_ip}:{}:{}",
        port.protocol.as_deref().unwrap_or("TCP"),
        port.container_port,
        port.host_port.unwrap_or(0)
    )
}

fn runtime_protocol(protocol: Option<&str>) -> Protocol {
    match protocol {
        Some("UDP") => Protocol::Udp,
        Some("SCTP") => Protocol::Sctp,
        _ => Protocol::Tcp,
    }
}

/// Pod labels plus the kubelet's pod identity labels and kwk's managed marker.
pub(crate) fn sandbox_labels(pod: &Pod) -> HashMap<String, String> {
    let mut labels: HashMap<String, String> = pod
        .metadata
        .labels
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.insert(labels::POD_NAME.into(), podx::name(pod).into());
    labels.insert(labels::POD_NAMESPACE.into(), podx::namespace(pod).into());
    labels.insert(labels::POD_UID.into(), podx::uid(pod).into());
    labels.insert(labels::MANAGED.into(), "true".into());
    labels
}

fn linux_config(pod: &Pod, ctx: &SandboxContext) -> Result<LinuxPodSandboxConfig, SpecError> {
    let psc = podx::spec(pod).and_then(|s| s.security_context.as_ref());
    let mut supplemental_groups = Vec::new();
    if let Some(psc) = psc {
        supplemental_groups.extend(psc.fs_group);
        supplemental_groups.extend(psc.supplemental_groups.iter().flatten());
    }
    Ok(LinuxPodSandboxConfig {
        cgroup_parent: ctx.cgroup_parent.clone(),
        security_context: Some(LinuxSandboxSecurityContext {
            namespace_options: Some(namespace_options(pod)?),
            run_as_user: psc
                .and_then(|s| s.run_as_user)
                .map(|value| kwk_cri::api::Int64Value { value }),
            run_as_group: psc
                .and_then(|s| s.run_as_group)
                .map(|value| kwk_cri::api::Int64Value { value }),
            supplemental_groups,
            privileged: has_privileged_container(pod),
            // Upstream always runs the sandbox (pause) under the runtime's default profile.
            seccomp: Some(SecurityProfile {
                profile_type: ProfileType::RuntimeDefault as i32,
                localhost_ref: String::new(),
            }),
            ..Default::default()
        }),
        sysctls: psc
            .and_then(|s| s.sysctls.as_ref())
            .into_iter()
            .flatten()
            .map(|s| (s.name.clone(), s.value.clone()))
            .collect(),
        overhead: None,
        resources: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime_spec::testpod::{minimal, pod};
    use kwk_cri::api::NamespaceMode;

    fn ctx() -> SandboxContext {
        SandboxContext {
            attempt: 2,
            cgroup_parent: "/kubepods/burstable/pod1111".into(),
            log_root: "/var/log/pods".into(),
            dns: DnsContext {
                cluster_dns: vec!["10.96.0.10".parse().unwrap()],
                cluster_domain: "cluster.local".into(),
                host_resolv_conf: None,
            },
            node_name: "node-a".into(),
        }
    }

    #[test]
    fn metadata_log_dir_labels_and_annotations() {
        let mut p = minimal();
        p.metadata.labels = Some([("app".to_string(), "web".to_string())].into());
        p.metadata.annotations = Some([("note".to_string(), "x".to_string())].into());
        let cfg = sandbox_config(&p, &ctx()).unwrap();
        let meta = cfg.metadata.unwrap();
        assert_eq!(
            (
                meta.name.as_str(),
                meta.namespace.as_str(),
                meta.uid.as_str(),
                meta.attempt
            ),
            ("web", "prod", "1111-2222", 2)
        );
        assert_eq!(cfg.log_directory, "/var/log/pods/prod_web_1111-2222");
        assert_eq!(cfg.hostname, "web");
        assert_eq!(cfg.labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(
            cfg.labels.get(labels::POD_NAME).map(String::as_str),
            Some("web")
        );
        assert_eq!(
            cfg.labels.get(labels::POD_NAMESPACE).map(String::as_str),
            Some("prod")
        );
        assert_eq!(
            cfg.labels.get(labels::POD_UID).map(String::as_str),
            Some("1111-2222")
        );
        assert_eq!(
            cfg.labels.get(labels::MANAGED).map(String::as_str),
            Some("true")
        );
        assert_eq!(
            cfg.annotations,
            HashMap::from([("note".to_string(), "x".to_string())])
        );
        assert_eq!(
            cfg.dns_config.unwrap().servers,
            vec!["10.96.0.10".to_string()]
        );
    }

    #[test]
    fn hostname_table() {
        let long = "a".repeat(62) + "-b";
        let cases: Vec<(String, Result<&str, ()>)> = vec![
            ("spec: {containers: []}".into(), Ok("web")),
            ("spec: {hostname: h1, containers: []}".into(), Ok("h1")),
            (
                "spec: {hostname: h1, subdomain: sub, containers: []}".into(),
                Ok("h1"),
            ),
            (
                "spec: {hostname: h1, subdomain: sub, setHostnameAsFQDN: true, containers: []}"
                    .into(),
                Ok("h1.sub.prod.svc.cluster.local"),
            ),
            (
                "spec: {hostNetwork: true, hostname: h1, containers: []}".into(),
                Ok(""),
            ),
            ("spec: {hostname: Bad_Name, containers: []}".into(), Err(())),
            (
                format!(
                    "spec: {{hostname: {}, subdomain: s, setHostnameAsFQDN: true, containers: []}}",
                    "h".repeat(40)
                ),
                Err(()),
            ),
            (
                format!("metadata: {{name: {long}}}\nspec: {{containers: []}}"),
                Ok(&long[..62]),
            ),
        ];
        for (yaml, want) in cases {
            let yaml = if yaml.starts_with("metadata") {
                yaml
            } else {
                format!("metadata: {{name: web, namespace: prod}}\n{yaml}")
            };
            let got = sandbox_config(&pod(&yaml), &ctx())
                .map(|c| c.hostname)
                .map_err(|_| ());
            assert_eq!(got.as_deref().map_err(|_| ()), want, "{yaml}");
        }
    }

    #[test]
    fn port_mappings_follow_make_port_mappings() {
        let p = pod(r#"
metadata: {name: web, namespace: prod}
spec:
  containers:
  - name: a
    ports:
    - {name: http, containerPort: 80, hostPort: 8080, protocol: TCP}
    - {name: http, containerPort: 81, hostPort: 8081}
    - {containerPort: 53, hostPort: 5353, protocol: UDP, hostIP: 127.0.0.1}
    - {containerPort: 9, protocol: SCTP}
  - name: b
    ports: [{name: http, containerPort: 90}]
"#);
        let got: Vec<(i32, i32, i32, String)> = sandbox_config(&p, &ctx())
            .unwrap()
            .port_mappings
            .into_iter()
            .map(|m| (m.protocol, m.container_port, m.host_port, m.host_ip))
            .collect();
        assert_eq!(
            got,
            vec![
                (Protocol::Tcp as i32, 80, 8080, String::new()),
                (Protocol::Udp as i32, 53, 5353, "127.0.0.1".into()),
                (Protocol::Sctp as i32, 9, 0, String::new()),
                (Protocol::Tcp as i32, 90, 0, String::new()),
            ]
        );
    }

    #[test]
    fn linux_security_context_table() {
        let p = pod(r#"
metadata: {name: web, namespace: prod}
spec:
  hostNetwork: true
  hostPID: true
  securityContext:
    runAsUser: 1000
    runAsGroup: 2000
    fsGroup: 3000
    supplementalGroups: [4000, 5000]
    sysctls: [{name: net.core.somaxconn, value: "1024"}]
  initContainers: [{name: i, securityContext: {privileged: true}}]
  containers: [{name: a}]
"#);
        let linux = sandbox_config(&p, &ctx()).unwrap().linux.unwrap();
        assert_eq!(linux.cgroup_parent, "/kubepods/burstable/pod1111");
        assert_eq!(
            linux.sysctls.get("net.core.somaxconn").map(String::as_str),
            Some("1024")
        );
        let sc = linux.security_context.unwrap();
        assert!(sc.privileged);
        assert_eq!(sc.run_as_user.map(|v| v.value), Some(1000));
        assert_eq!(sc.run_as_group.map(|v| v.value), Some(2000));
        assert_eq!(sc.supplemental_groups, vec![3000, 4000, 5000]);
        assert!(!sc.readonly_rootfs);
        assert_eq!(
            sc.seccomp.map(|s| s.profile_type),
            Some(ProfileType::RuntimeDefault as i32)
        );
        let ns = sc.namespace_options.unwrap();
        assert_eq!(
            (ns.network, ns.pid, ns.ipc),
            (
                NamespaceMode::Node as i32,
                NamespaceMode::Node as i32,
                NamespaceMode::Pod as i32
            )
        );

        let plain = sandbox_config(&minimal(), &ctx())
            .unwrap()
            .linux
            .unwrap()
            .security_context
            .unwrap();
        assert!(!plain.privileged);
        assert_eq!(plain.run_as_user, None);
        let ns = plain.namespace_options.unwrap();
        assert_eq!(
            (ns.network, ns.pid, ns.ipc),
            (
                NamespaceMode::Pod as i32,
                NamespaceMode::Container as i32,
                NamespaceMode::Pod as i32
            )
        );
    }
}
