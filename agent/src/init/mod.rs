//! `kwk init`: makes this machine a single-node control plane that kwk-node boots.
//!
//! It writes, under the config directory (default `/etc/kwk`): the cluster PKI (`pki/`: CA,
//! apiserver serving certificate, the apiserver's kubelet-client certificate, the kubelet's
//! serving certificate), kubeconfigs for the admin, the kubelet, the controller manager and
//! the scheduler, the three control plane static pod manifests (`manifests/`), kwk-node's
//! `kubelet.yaml` and its flags (`kwk-node.env`). The embedded store lives in
//! `<data dir>/db`. Nothing that exists is replaced: running it again reports every file as
//! kept, and an operator's own CA or certificates win.
//!
//! [`render`] decides the content (pure); this module writes what is missing.

pub mod layout;
pub mod render;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use kwk_pki::{CertAndKey, PkiError, PkiPaths, PkiRequest};

pub use layout::Layout;
pub use render::Rendered;

/// The control plane image kwk-node imports from its image directory (built by
/// `kwk-image control-plane`).
pub const DEFAULT_IMAGE: &str = concat!("localhost/kwk/control-plane:", env!("CARGO_PKG_VERSION"));

/// What `kwk init` is asked for.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub layout: Layout,
    /// The node's name (the kubelet's client certificate is `system:node:<name>`).
    pub node_name: String,
    /// The address the apiserver advertises and the node registers with (InternalIP).
    pub advertise_address: IpAddr,
    pub apiserver_port: u16,
    /// The server URL written into `admin.kubeconfig` (default `https://<advertise>:<port>`).
    pub admin_server: String,
    /// The control plane image (imported by kwk-node from its image directory).
    pub image: String,
    /// `--service-cluster-ip-range`.
    pub service_cidr: String,
    /// `--cluster-cidr`: pod CIDRs are allocated to nodes from it.
    pub cluster_cidr: String,
}

/// Why `kwk init` stopped. Files written before the failure stay (a rerun completes them).
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("PKI: {0}")]
    Pki(#[from] PkiError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What happened to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileOutcome {
    Written,
    Kept,
}

/// The files `kwk init` looked after, in order.
#[derive(Debug, Default)]
pub struct InitReport {
    pub files: Vec<(PathBuf, FileOutcome)>,
}

impl InitReport {
    /// Whether everything was already there.
    pub fn all_kept(&self) -> bool {
        self.files.iter().all(|(_, o)| *o == FileOutcome::Kept)
    }
    fn note(&mut self, path: PathBuf, written: bool) {
        let outcome = if written {
            FileOutcome::Written
        } else {
            FileOutcome::Kept
        };
        self.files.push((path, outcome));
    }
}

/// Writes whatever is missing.
pub fn init(options: &InitOptions) -> Result<InitReport, InitError> {
    let layout = &options.layout;
    let mut report = InitReport::default();
    for dir in [
        layout.config_dir(),
        &layout.manifests_dir(),
        &layout.store_dir(),
    ] {
        std::fs::create_dir_all(dir).map_err(|source| InitError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let ca = pki(options, &mut report)?;

    let advertised = server_url(options.advertise_address, options.apiserver_port);
    let loopback = server_url(
        loopback_of(options.advertise_address),
        options.apiserver_port,
    );
    let node_user = format!("system:node:{}", options.node_name);
    let kubeconfigs = [
        (
            "admin",
            "kubernetes-admin",
            Some("system:masters"),
            options.admin_server.as_str(),
        ),
        (
            "kubelet",
            node_user.as_str(),
            Some("system:nodes"),
            advertised.as_str(),
        ),
        (
            "controller-manager",
            "system:kube-controller-manager",
            None,
            loopback.as_str(),
        ),
        (
            "scheduler",
            "system:kube-scheduler",
            None,
            loopback.as_str(),
        ),
    ];
    for (stem, user, group, server) in kubeconfigs {
        let path = layout.kubeconfig(stem);
        let written = write_if_missing(&path, 0o600, || {
            let client = kwk_pki::issue_client(&ca, user, group)?;
            Ok(kwk_pki::kubeconfig(server, &ca.cert_pem, &client, user))
        })?;
        report.note(path, written);
    }

    let mut files = render::static_pods(options, layout);
    files.push(render::kubelet_config(layout));
    files.push(render::proxy_config(options, layout));
    files.push(render::node_env(options, layout));
    for file in files {
        let written = write_if_missing(&file.path, file.mode, || Ok(file.content.clone()))?;
        report.note(file.path, written);
    }
    Ok(report)
}

/// The CA, the apiserver's serving, admin and kubelet-client certificates (as the
/// apiserver's own `--generate-pki` makes them) and the kubelet's serving certificate.
fn pki(options: &InitOptions, report: &mut InitReport) -> Result<CertAndKey, InitError> {
    let layout = &options.layout;
    let paths = PkiPaths::new(layout.pki_dir());
    let hosts = vec![
        options.node_name.clone(),
        options.advertise_address.to_string(),
    ];
    let existed = paths.ca_cert().exists()
        && paths.serving_cert().exists()
        && paths.kubelet_client_cert().exists()
        && paths.kubelet_client_key().exists();
    kwk_pki::ensure_pki(
        &paths,
        &PkiRequest {
            serving_hosts: hosts.clone(),
            server_url: options.admin_server.clone(),
        },
    )?;
    report.note(paths.ca_cert(), !existed);
    let ca = kwk_pki::load_pair(&paths.ca_cert(), &paths.ca_key())?;
    let kubelet_client = paths.kubelet_client_cert();
    report.note(kubelet_client, !existed);
    // The kubelet's serving certificate, for the node's name and address.
    let (cert, key) = layout.pair("kubelet");
    let written = !(cert.exists() && key.exists());
    if written {
        let pair = kwk_pki::issue_server(&ca, &options.node_name, &hosts)?;
        replace_file(&key, pair.key_pem.as_bytes(), 0o600)?;
        replace_file(&cert, pair.cert_pem.as_bytes(), 0o644)?;
    }
    report.note(cert, written);
    Ok(ca)
}

fn server_url(address: IpAddr, port: u16) -> String {
    match address {
        IpAddr::V4(v4) => format!("https://{v4}:{port}"),
        IpAddr::V6(v6) => format!("https://[{v6}]:{port}"),
    }
}

fn loopback_of(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
    }
}

/// Writes `path` with `content()` unless it exists; returns whether it wrote.
fn write_if_missing(
    path: &Path,
    mode: u32,
    content: impl FnOnce() -> Result<String, InitError>,
) -> Result<bool, InitError> {
    if path.exists() {
        return Ok(false);
    }
    let text = content()?;
    kwk_pki::write_file(path, text.as_bytes(), mode)?;
    Ok(true)
}

/// Writes a pair's half: a half left over from an interrupted run is replaced, since a
/// certificate without its key (or the reverse) is useless.
fn replace_file(path: &Path, data: &[u8], mode: u32) -> Result<(), InitError> {
    if path.exists() {
        std::fs::remove_file(path).map_err(|source| InitError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    }
    Ok(kwk_pki::write_file(path, data, mode)?)
}

#[cfg(test)]
mod tests;
