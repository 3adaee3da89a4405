//! What `kwk init` writes, as text: the control plane's three static pod manifests, kwk-node's
//! `KubeletConfiguration` and its flags file. Pure functions of the options and the layout, so
//! the tests can parse the output with the same code kwk-node uses.

use std::path::Path;

use serde_json::{Value, json};

use super::InitOptions;
use super::layout::Layout;

/// The control plane binary's path inside its image.
pub const CONTROL_PLANE_BINARY: &str = "/usr/bin/kwk-control-plane";

/// A rendered file: where it goes, its content, its mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub path: std::path::PathBuf,
    pub content: String,
    pub mode: u32,
}

/// The three static pods: `kube-apiserver`, `kube-controller-manager`, `kube-scheduler`.
pub fn static_pods(options: &InitOptions, layout: &Layout) -> Vec<Rendered> {
    let pki = layout.pki_dir();
    let store = layout.store_dir();
    let paths = kwk_pki::PkiPaths::new(&pki);
    let (kubelet_client_cert, kubelet_client_key) =
        (paths.kubelet_client_cert(), paths.kubelet_client_key());
    let apiserver = static_pod(
        options,
        "kube-apiserver",
        vec![
            "apiserver".into(),
            format!(
                "--bind-address={}",
                unspecified_like(options.advertise_address)
            ),
            format!("--secure-port={}", options.apiserver_port),
            format!("--advertise-address={}", options.advertise_address),
            format!("--pki-dir={}", pki.display()),
            format!("--data-dir={}", store.display()),
            format!("--service-cluster-ip-range={}", options.service_cidr),
            format!(
                "--kubelet-client-certificate={}",
                kubelet_client_cert.display()
            ),
            format!("--kubelet-client-key={}", kubelet_client_key.display()),
        ],
        &[
            Mount::dir("pki", &pki, true),
            Mount::dir("data", &store, false),
        ],
        "250m",
    );
    let controller_manager_kubeconfig = layout.kubeconfig("controller-manager");
    let root_ca = pki.join("ca.crt");
    let controller_manager = static_pod(
        options,
        "kube-controller-manager",
        vec![
            "controller-manager".into(),
            format!("--kubeconfig={}", controller_manager_kubeconfig.display()),
            "--leader-elect=true".into(),
            "--allocate-node-cidrs=true".into(),
            format!("--cluster-cidr={}", options.cluster_cidr),
            format!("--root-ca-file={}", root_ca.display()),
        ],
        &[
            Mount::file("kubeconfig", &controller_manager_kubeconfig),
            Mount::file("root-ca", &root_ca),
        ],
        "200m",
    );
    let scheduler_kubeconfig = layout.kubeconfig("scheduler");
    let scheduler = static_pod(
        options,
        "kube-scheduler",
        vec![
            "scheduler".into(),
            format!("--kubeconfig={}", scheduler_kubeconfig.display()),
            "--leader-elect=true".into(),
        ],
        &[Mount::file("kubeconfig", &scheduler_kubeconfig)],
        "100m",
    );
    [apiserver, controller_manager, scheduler]
        .into_iter()
        .map(|(name, pod)| Rendered {
            path: layout.manifests_dir().join(format!("{name}.yaml")),
            content: to_yaml(&pod),
            mode: 0o600,
        })
        .collect()
}

/// The unspecified address of the advertise address's family (listen on every interface).
fn unspecified_like(address: std::net::IpAddr) -> &'static str {
    if address.is_ipv4() { "0.0.0.0" } else { "::" }
}

/// A host path mounted read-only or read-write at the same path in the container.
struct Mount<'a> {
    name: &'a str,
    path: &'a Path,
    host_type: &'a str,
    read_only: bool,
}

impl<'a> Mount<'a> {
    fn dir(name: &'a str, path: &'a Path, read_only: bool) -> Self {
        Self {
            name,
            path,
            host_type: "DirectoryOrCreate",
            read_only,
        }
    }
    fn file(name: &'a str, path: &'a Path) -> Self {
        Self {
            name,
            path,
            host_type: "File",
            read_only: true,
        }
    }
}

fn static_pod(
    options: &InitOptions,
    name: &str,
    args: Vec<String>,
    mounts: &[Mount<'_>],
    cpu_request: &str,
) -> (String, Value) {
    let mut command = vec![CONTROL_PLANE_BINARY.to_owned()];
    command.extend(args);
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "kube-system",
            "labels": {"component": name, "tier": "control-plane"},
        },
        "spec": {
            "hostNetwork": true,
            "priorityClassName": "system-node-critical",
            "containers": [{
                "name": name,
                "image": options.image,
                "imagePullPolicy": "IfNotPresent",
                "command": command,
                "resources": {"requests": {"cpu": cpu_request}},
                "volumeMounts": mounts.iter().map(|m| json!({
                    "name": m.name,
                    "mountPath": m.path.display().to_string(),
                    "readOnly": m.read_only,
                })).collect::<Vec<_>>(),
            }],
            "volumes": mounts.iter().map(|m| json!({
                "name": m.name,
                "hostPath": {"path": m.path.display().to_string(), "type": m.host_type},
            })).collect::<Vec<_>>(),
        },
    });
    (name.to_owned(), pod)
}

/// kwk-node's `KubeletConfiguration`: the static pods, x509 client certificates from the
/// cluster CA and webhook (TokenReview / SubjectAccessReview) authentication and authorization
/// on the kubelet API, the serving certificate `kwk init` issued.
pub fn kubelet_config(layout: &Layout) -> Rendered {
    let (serving_cert, serving_key) = layout.pair("kubelet");
    let (ca, _) = layout.pair("ca");
    let config = json!({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "staticPodPath": layout.manifests_dir().display().to_string(),
        "authentication": {
            "anonymous": {"enabled": false},
            "webhook": {"enabled": true},
            "x509": {"clientCAFile": ca.display().to_string()},
        },
        "authorization": {"mode": "Webhook"},
        "tlsCertFile": serving_cert.display().to_string(),
        "tlsPrivateKeyFile": serving_key.display().to_string(),
        "clusterDomain": "cluster.local",
    });
    Rendered {
        path: layout.kubelet_config(),
        content: to_yaml(&config),
        mode: 0o644,
    }
}

/// kwk-node's `KubeProxyConfiguration`: nftables mode, pod traffic told apart by the cluster
/// CIDR the controller manager allocates pod CIDRs from.
pub fn proxy_config(options: &InitOptions, layout: &Layout) -> Rendered {
    let config = json!({
        "apiVersion": crate::proxy::config::API_VERSION,
        "kind": crate::proxy::config::KIND,
        "mode": "nftables",
        "clusterCIDR": options.cluster_cidr,
    });
    Rendered {
        path: layout.proxy_config(),
        content: to_yaml(&config),
        mode: 0o644,
    }
}

/// kwk-node's flags, for the systemd unit's `EnvironmentFile=` (kubeadm's `kubeadm-flags.env`).
pub fn node_env(options: &InitOptions, layout: &Layout) -> Rendered {
    let content = format!(
        "# Written by `kwk init`: kwk-node's flags on this server.\n\
         KWK_NODE_ARGS=\"--config={} --proxy-config={} --kubeconfig={} --hostname-override={} --node-ip={}\"\n",
        layout.kubelet_config().display(),
        layout.proxy_config().display(),
        layout.kubeconfig("kubelet").display(),
        options.node_name,
        options.advertise_address,
    );
    Rendered {
        path: layout.node_env(),
        content,
        mode: 0o644,
    }
}

fn to_yaml(value: &Value) -> String {
    // A `Value` always serializes; JSON is YAML should that ever change.
    serde_saphyr::to_string(value).unwrap_or_else(|_| value.to_string())
}
