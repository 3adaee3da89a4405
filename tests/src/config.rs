//! Rendering a test containerd's configuration and its CNI network: pure functions of a
//! [`Layout`], so they are unit-tested without starting anything.

use std::path::{Path, PathBuf};

/// Where one test containerd keeps everything; all of it under `dir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub dir: PathBuf,
    /// Image `sandbox_image` names (must be imported before the first sandbox).
    pub sandbox_image: String,
    /// The CNI plugins containerd runs (its `bin_dir`).
    pub cni_plugins: CniPlugins,
    /// Subnet of the reference network list's bridge (each containerd has its own netns, so this
    /// can repeat).
    pub pod_subnet: String,
    /// The CNI network list in containerd's conf dir at start.
    pub cni_network: CniNetwork,
}

/// The CNI plugin binaries a test containerd runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CniPlugins {
    /// The reference plugins (Debian's `containernetworking-plugins`) in `/usr/lib/cni`.
    Reference,
    /// Only kwk-cni: a bin dir of the layout's own holding `kwk-cni` and `loopback`, both links
    /// to this binary (containerd runs `loopback` for every sandbox).
    Kwk(PathBuf),
}

/// The CNI network list a test containerd starts with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CniNetwork {
    /// [`reference_conflist`]: the reference bridge + host-local plugins.
    Reference,
    /// This list, as given.
    Custom(String),
    /// None: something else writes one later (kwk-node with `--cni-conf-dir`); until then
    /// containerd reports `NetworkReady=false` and pod sandboxes cannot start.
    Absent,
}

/// The reference plugins' directory.
pub const REFERENCE_CNI_BIN_DIR: &str = "/usr/lib/cni";

impl Layout {
    pub fn new(dir: &Path, sandbox_image: &str) -> Self {
        Self {
            dir: dir.to_owned(),
            sandbox_image: sandbox_image.to_owned(),
            cni_plugins: CniPlugins::Reference,
            pod_subnet: "10.88.0.0/16".into(),
            cni_network: CniNetwork::Reference,
        }
    }

    /// containerd's CNI `bin_dir`.
    pub fn cni_bin_dir(&self) -> PathBuf {
        match &self.cni_plugins {
            CniPlugins::Reference => PathBuf::from(REFERENCE_CNI_BIN_DIR),
            CniPlugins::Kwk(_) => self.dir.join("cni/bin"),
        }
    }

    /// The links to make in [`Self::cni_bin_dir`]: `(link, target)`; none for the reference
    /// plugins.
    pub fn cni_bin_links(&self) -> Vec<(PathBuf, PathBuf)> {
        match &self.cni_plugins {
            CniPlugins::Reference => Vec::new(),
            CniPlugins::Kwk(binary) => ["kwk-cni", "loopback"]
                .into_iter()
                .map(|name| (self.cni_bin_dir().join(name), binary.clone()))
                .collect(),
        }
    }

    pub fn config_file(&self) -> PathBuf {
        self.dir.join("containerd.toml")
    }
    pub fn socket(&self) -> PathBuf {
        self.dir.join("c.sock")
    }
    pub fn root(&self) -> PathBuf {
        self.dir.join("root")
    }
    pub fn state(&self) -> PathBuf {
        self.dir.join("state")
    }
    pub fn opt(&self) -> PathBuf {
        self.dir.join("opt")
    }
    pub fn runc_root(&self) -> PathBuf {
        self.dir.join("runc")
    }
    pub fn cni_conf_dir(&self) -> PathBuf {
        self.dir.join("cni/net.d")
    }
    pub fn cni_data_dir(&self) -> PathBuf {
        self.dir.join("cni/ipam")
    }
    pub fn log_file(&self) -> PathBuf {
        self.dir.join("containerd.log")
    }
    pub fn pod_logs(&self) -> PathBuf {
        self.dir.join("pod-logs")
    }
}

/// The name of the bridge inside the test netns.
pub const BRIDGE: &str = "kwkbr0";

/// containerd 1.6/2.x configuration (version 2 schema) for an isolated CRI instance.
pub fn containerd_toml(layout: &Layout) -> String {
    let q = |p: PathBuf| toml_string(&p.to_string_lossy());
    format!(
        r#"version = 2
root = {root}
state = {state}
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = {socket}

[ttrpc]
  address = {ttrpc}

[debug]
  level = "info"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = {opt}

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = {sandbox_image}
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  max_container_log_line_size = 16384

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = {runc_root}
        SystemdCgroup = false

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = {cni_bin}
    conf_dir = {cni_conf}
    max_conf_num = 1
"#,
        root = q(layout.root()),
        state = q(layout.state()),
        socket = q(layout.socket()),
        ttrpc = q(layout.dir.join("c.ttrpc.sock")),
        opt = q(layout.opt()),
        sandbox_image = toml_string(&layout.sandbox_image),
        runc_root = q(layout.runc_root()),
        cni_bin = q(layout.cni_bin_dir()),
        cni_conf = q(layout.cni_conf_dir()),
    )
}

/// The network list to install in containerd's conf dir at start, if any.
pub fn cni_conflist(layout: &Layout) -> Option<String> {
    match &layout.cni_network {
        CniNetwork::Reference => Some(reference_conflist(layout)),
        CniNetwork::Custom(list) => Some(list.clone()),
        CniNetwork::Absent => None,
    }
}

/// A CNI 1.0 network list for the reference plugins: a gateway bridge with masquerade and
/// host-local IPAM whose allocations live under the layout (not the machine-wide
/// `/var/lib/cni`).
pub fn reference_conflist(layout: &Layout) -> String {
    let doc = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "kwk-test",
        "plugins": [{
            "type": "bridge",
            "bridge": BRIDGE,
            "isGateway": true,
            "ipMasq": true,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{ "subnet": layout.pod_subnet }]],
                "routes": [{ "dst": "0.0.0.0/0" }],
                "dataDir": layout.cni_data_dir(),
            },
        }],
    });
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

/// A TOML basic string (quotes and backslashes escaped).
fn toml_string(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        Layout::new(Path::new("/tmp/kwkt-1"), "localhost/kwk/pause:1")
    }

    #[test]
    fn containerd_config_isolates_every_path() {
        let parsed: toml::Table = toml::from_str(&containerd_toml(&layout())).unwrap();
        assert_eq!(parsed["version"].as_integer(), Some(2));
        assert_eq!(parsed["root"].as_str(), Some("/tmp/kwkt-1/root"));
        assert_eq!(parsed["state"].as_str(), Some("/tmp/kwkt-1/state"));
        assert_eq!(
            parsed["grpc"]["address"].as_str(),
            Some("/tmp/kwkt-1/c.sock")
        );
        let plugins = &parsed["plugins"];
        assert_eq!(
            plugins["io.containerd.internal.v1.opt"]["path"].as_str(),
            Some("/tmp/kwkt-1/opt")
        );
        let cri = &plugins["io.containerd.grpc.v1.cri"];
        assert_eq!(cri["sandbox_image"].as_str(), Some("localhost/kwk/pause:1"));
        assert_eq!(cri["restrict_oom_score_adj"].as_bool(), Some(true));
        assert_eq!(cri["netns_mounts_under_state_dir"].as_bool(), Some(true));
        let runc = &cri["containerd"]["runtimes"]["runc"];
        assert_eq!(runc["options"]["Root"].as_str(), Some("/tmp/kwkt-1/runc"));
        assert_eq!(runc["options"]["SystemdCgroup"].as_bool(), Some(false));
        assert_eq!(cri["cni"]["bin_dir"].as_str(), Some("/usr/lib/cni"));
        assert_eq!(
            cri["cni"]["conf_dir"].as_str(),
            Some("/tmp/kwkt-1/cni/net.d")
        );
    }

    #[test]
    fn toml_strings_are_escaped() {
        let mut odd = layout();
        odd.sandbox_image = "a\"b\\c".into();
        let parsed: toml::Table = toml::from_str(&containerd_toml(&odd)).unwrap();
        assert_eq!(
            parsed["plugins"]["io.containerd.grpc.v1.cri"]["sandbox_image"].as_str(),
            Some("a\"b\\c")
        );
    }

    #[test]
    fn kwk_cni_bin_dir_holds_only_links_to_kwk_cni() {
        let mut layout = layout();
        assert!(layout.cni_bin_links().is_empty());
        layout.cni_plugins = CniPlugins::Kwk("/t/debug/kwk-cni".into());
        layout.cni_network = CniNetwork::Absent;
        let bin = Path::new("/tmp/kwkt-1/cni/bin");
        assert_eq!(layout.cni_bin_dir(), bin);
        let target = PathBuf::from("/t/debug/kwk-cni");
        assert_eq!(
            layout.cni_bin_links(),
            [
                (bin.join("kwk-cni"), target.clone()),
                (bin.join("loopback"), target)
            ]
        );
        let parsed: toml::Table = toml::from_str(&containerd_toml(&layout)).unwrap();
        assert_eq!(
            parsed["plugins"]["io.containerd.grpc.v1.cri"]["cni"]["bin_dir"].as_str(),
            Some("/tmp/kwkt-1/cni/bin")
        );
        assert_eq!(cni_conflist(&layout), None);
        layout.cni_network = CniNetwork::Custom("{}".into());
        assert_eq!(cni_conflist(&layout).as_deref(), Some("{}"));
    }

    #[test]
    fn cni_network_keeps_ipam_state_in_the_layout() {
        let conf: serde_json::Value =
            serde_json::from_str(&cni_conflist(&layout()).unwrap()).unwrap();
        let bridge = &conf["plugins"][0];
        assert_eq!(bridge["type"], "bridge");
        assert_eq!(bridge["bridge"], BRIDGE);
        assert_eq!(bridge["isGateway"], true);
        assert_eq!(bridge["ipam"]["dataDir"], "/tmp/kwkt-1/cni/ipam");
        assert_eq!(bridge["ipam"]["ranges"][0][0]["subnet"], "10.88.0.0/16");
    }
}
