//! The plugin's inputs: the `CNI_*` environment variables and the network configuration on stdin
//! (CNI spec 1.x), parsed into typed values. No I/O besides what the caller hands in.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::error::CniError;
use crate::hostport::{PortMapping, PortMappingConf};
use crate::ipv4::Ipv4Cidr;
use crate::nat::NatParams;
use crate::result::{CniResult, Dns};

/// CNI spec versions this plugin speaks, oldest first.
pub const SUPPORTED_VERSIONS: [&str; 4] = ["0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// Where allocations live when the config names no `ipam.dataDir`. Under `/run` (tmpfs on a
/// standard host) rather than host-local's `/var/lib/cni/networks`: an allocation is only
/// meaningful while its pod's network namespace exists, and none survives a reboot, so a store
/// that starts empty at boot is exactly right, and it spares every ADD and DEL the file system
/// journal (creating and writing a small file: ~56 µs on ext4 here, ~12 µs on tmpfs).
pub const DEFAULT_DATA_DIR: &str = "/run/kwk-cni/networks";

/// Default bridge name (as upstream's bridge plugin).
pub const DEFAULT_BRIDGE: &str = "cni0";

/// `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Gc,
    Status,
}

impl Command {
    pub fn parse(value: &str) -> Result<Self, CniError> {
        Ok(match value {
            "ADD" => Self::Add,
            "DEL" => Self::Del,
            "CHECK" => Self::Check,
            "VERSION" => Self::Version,
            "GC" => Self::Gc,
            "STATUS" => Self::Status,
            other => {
                return Err(CniError::InvalidEnv(format!(
                    "unknown CNI_COMMAND {other:?}"
                )));
            }
        })
    }
}

/// The `CNI_*` environment of one invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniEnv {
    pub command: Command,
    pub container_id: String,
    /// Empty when the runtime passed none (allowed for DEL).
    pub netns: String,
    pub ifname: String,
    pub args: String,
}

impl CniEnv {
    /// Reads the variables through `get` (e.g. `std::env::var`), checking what each command needs.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, CniError> {
        let command = Command::parse(
            &get("CNI_COMMAND")
                .ok_or_else(|| CniError::InvalidEnv("CNI_COMMAND is not set".into()))?,
        )?;
        let env = Self {
            command,
            container_id: get("CNI_CONTAINERID").unwrap_or_default(),
            netns: get("CNI_NETNS").unwrap_or_default(),
            ifname: get("CNI_IFNAME").unwrap_or_default(),
            args: get("CNI_ARGS").unwrap_or_default(),
        };
        let needs_attachment = matches!(command, Command::Add | Command::Del | Command::Check);
        if needs_attachment {
            if env.container_id.is_empty() {
                return Err(CniError::InvalidEnv("CNI_CONTAINERID is not set".into()));
            }
            if env.ifname.is_empty() {
                return Err(CniError::InvalidEnv("CNI_IFNAME is not set".into()));
            }
            if !valid_ifname(&env.ifname) {
                return Err(CniError::InvalidEnv(format!(
                    "CNI_IFNAME {:?} is not a valid interface name",
                    env.ifname
                )));
            }
        }
        if matches!(command, Command::Add | Command::Check) && env.netns.is_empty() {
            return Err(CniError::InvalidEnv("CNI_NETNS is not set".into()));
        }
        Ok(env)
    }
}

/// Linux interface names: 1..=15 bytes, no '/', no whitespace, not "." or "..".
pub fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name.contains(['/', ':'])
        && !name.chars().any(char::is_whitespace)
}

/// The network configuration (the bridge plugin's keys plus host-local's `ipam` keys).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    #[serde(rename = "type", default)]
    pub plugin_type: String,
    #[serde(default)]
    pub bridge: Option<String>,
    #[serde(default)]
    pub is_gateway: bool,
    #[serde(default)]
    pub is_default_gateway: bool,
    #[serde(default)]
    pub mtu: Option<u32>,
    #[serde(default)]
    pub hairpin_mode: bool,
    #[serde(default)]
    pub ipam: IpamConf,
    #[serde(default)]
    pub prev_result: Option<CniResult>,
    /// Passed through to the result, as upstream's bridge plugin does.
    #[serde(default)]
    pub dns: Dns,
    #[serde(rename = "cni.dev/valid-attachments", default)]
    pub valid_attachments: Option<Vec<Attachment>>,
    /// Masquerade pod traffic leaving the cluster CIDR (upstream bridge's `ipMasq`, done once
    /// per node in the `ip kwk-cni` table instead of a chain per container).
    #[serde(default)]
    pub ip_masq: bool,
    /// The cluster's pod CIDR: destinations inside it are not masqueraded (absent: the subnet).
    #[serde(rename = "clusterCIDR", default)]
    pub cluster_cidr: Option<String>,
    /// What the runtime passes for the capabilities the conflist declares (`portMappings`).
    #[serde(default)]
    pub runtime_config: RuntimeConfig,
}

/// `runtimeConfig`: the capability arguments this plugin uses.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfig {
    #[serde(default)]
    pub port_mappings: Vec<PortMappingConf>,
}

/// One `cni.dev/valid-attachments` entry of a GC call.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// host-local style `ipam` section: either `subnet` (+ `rangeStart`/`rangeEnd`/`gateway`) or the
/// first range of `ranges`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpamConf {
    #[serde(rename = "type", default)]
    pub ipam_type: Option<String>,
    #[serde(flatten)]
    pub range: RangeConf,
    #[serde(default)]
    pub ranges: Vec<Vec<RangeConf>>,
    #[serde(default)]
    pub routes: Vec<RouteConf>,
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RangeConf {
    #[serde(default)]
    pub subnet: Option<String>,
    #[serde(default)]
    pub range_start: Option<Ipv4Addr>,
    #[serde(default)]
    pub range_end: Option<Ipv4Addr>,
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RouteConf {
    pub dst: String,
    #[serde(default)]
    pub gw: Option<Ipv4Addr>,
}

/// The validated pool addresses are handed out from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    pub subnet: Ipv4Cidr,
    /// First and last address that may be handed out (inclusive).
    pub start: Ipv4Addr,
    pub end: Ipv4Addr,
    pub gateway: Ipv4Addr,
}

impl IpRange {
    /// Validates a range the way host-local does: defaults are the subnet's first usable address
    /// + 1 .. the last usable one; start/end/gateway must lie inside the subnet.
    pub fn from_conf(conf: &RangeConf) -> Result<Self, CniError> {
        let subnet_text = conf
            .subnet
            .as_deref()
            .ok_or_else(|| CniError::InvalidConfig("ipam: no subnet".into()))?;
        let subnet = Ipv4Cidr::parse(subnet_text)
            .map_err(|err| CniError::InvalidConfig(format!("ipam subnet: {err}")))?;
        if subnet.prefix_len() > 30 {
            return Err(CniError::InvalidConfig(format!(
                "ipam subnet {subnet} is too small (at most /30)"
            )));
        }
        let network = subnet.network();
        let broadcast = subnet.broadcast();
        let gateway = conf.gateway.unwrap_or_else(|| add(network, 1));
        let start = conf.range_start.unwrap_or_else(|| add(network, 1));
        let end = conf.range_end.unwrap_or_else(|| sub(broadcast, 1));
        for (what, ip) in [
            ("rangeStart", start),
            ("rangeEnd", end),
            ("gateway", gateway),
        ] {
            if !subnet.contains(ip) {
                return Err(CniError::InvalidConfig(format!(
                    "ipam {what} {ip} is not in {subnet}"
                )));
            }
        }
        if start == network || end == broadcast || u32::from(start) > u32::from(end) {
            return Err(CniError::InvalidConfig(format!(
                "ipam range {start}-{end} is not usable in {subnet}"
            )));
        }
        Ok(Self {
            subnet,
            start,
            end,
            gateway,
        })
    }
}

fn add(ip: Ipv4Addr, n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(ip).wrapping_add(n))
}

fn sub(ip: Ipv4Addr, n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(ip).wrapping_sub(n))
}

/// A route to install in the pod: destination and gateway (the range gateway when unset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodRoute {
    pub dst: Ipv4Cidr,
    pub gw: Ipv4Addr,
}

/// Everything ADD/DEL/CHECK need, validated.
#[derive(Debug, Clone)]
pub struct Network {
    pub cni_version: String,
    pub name: String,
    pub bridge: String,
    pub is_gateway: bool,
    pub mtu: Option<u32>,
    pub hairpin: bool,
    pub range: IpRange,
    pub routes: Vec<PodRoute>,
    pub data_dir: PathBuf,
    pub dns: Dns,
    /// `ipMasq`.
    pub masquerade: bool,
    /// `clusterCIDR`.
    pub cluster_cidr: Option<Ipv4Cidr>,
    /// `runtimeConfig.portMappings`, validated.
    pub port_mappings: Vec<PortMapping>,
}

impl Network {
    /// The parameters of the node-wide NAT table.
    pub fn nat_params(&self) -> NatParams {
        NatParams {
            pod_subnet: self.range.subnet.truncated(),
            masquerade_outside: self
                .masquerade
                .then(|| self.cluster_cidr.unwrap_or(self.range.subnet).truncated()),
        }
    }
}

impl NetConf {
    /// Parses stdin; checks the version is one we speak.
    pub fn parse(bytes: &[u8]) -> Result<Self, CniError> {
        let conf: Self = serde_json::from_slice(bytes)
            .map_err(|err| CniError::Decode(format!("network configuration: {err}")))?;
        if !SUPPORTED_VERSIONS.contains(&conf.cni_version.as_str()) {
            return Err(CniError::IncompatibleVersion(conf.cni_version));
        }
        Ok(conf)
    }

    /// The IPAM store directory of this network (`<dataDir>/<name>`).
    pub fn ipam_dir(&self) -> Result<PathBuf, CniError> {
        if self.name.is_empty() || self.name.contains('/') || self.name.starts_with('.') {
            return Err(CniError::InvalidConfig(format!(
                "network name {:?} is not usable as a directory name",
                self.name
            )));
        }
        let base = self
            .ipam
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        Ok(base.join(&self.name))
    }

    /// Validates the bridge and IPAM sections.
    pub fn network(&self) -> Result<Network, CniError> {
        if let Some(kind) = self.ipam.ipam_type.as_deref()
            && !matches!(kind, "host-local" | "kwk-cni" | "")
        {
            return Err(CniError::InvalidConfig(format!(
                "ipam type {kind:?}: kwk-cni only does host-local style IPAM"
            )));
        }
        let range_conf = if self.ipam.range.subnet.is_some() {
            &self.ipam.range
        } else {
            self.ipam
                .ranges
                .first()
                .and_then(|set| set.first())
                .ok_or_else(|| CniError::InvalidConfig("ipam: no subnet and no ranges".into()))?
        };
        let range = IpRange::from_conf(range_conf)?;
        let mut routes = Vec::new();
        for route in &self.ipam.routes {
            let dst = Ipv4Cidr::parse(&route.dst)
                .map_err(|err| CniError::InvalidConfig(format!("ipam route: {err}")))?;
            routes.push(PodRoute {
                dst,
                gw: route.gw.unwrap_or(range.gateway),
            });
        }
        let default = Ipv4Cidr::default_route();
        if self.is_default_gateway && !routes.iter().any(|route| route.dst == default) {
            routes.push(PodRoute {
                dst: default,
                gw: range.gateway,
            });
        }
        let bridge = self.bridge.clone().unwrap_or_else(|| DEFAULT_BRIDGE.into());
        if !valid_ifname(&bridge) {
            return Err(CniError::InvalidConfig(format!(
                "bridge name {bridge:?} is not a valid interface name"
            )));
        }
        if let Some(mtu) = self.mtu
            && !(68..=65535).contains(&mtu)
        {
            return Err(CniError::InvalidConfig(format!("mtu {mtu} out of range")));
        }
        let cluster_cidr = self
            .cluster_cidr
            .as_deref()
            .map(Ipv4Cidr::parse)
            .transpose()
            .map_err(|err| CniError::InvalidConfig(format!("clusterCIDR: {err}")))?;
        Ok(Network {
            masquerade: self.ip_masq,
            cluster_cidr,
            port_mappings: crate::hostport::validate(&self.runtime_config.port_mappings)?,
            cni_version: self.cni_version.clone(),
            name: self.name.clone(),
            bridge,
            // isDefaultGateway implies isGateway, as upstream.
            is_gateway: self.is_gateway || self.is_default_gateway,
            mtu: self.mtu,
            hairpin: self.hairpin_mode,
            range,
            routes,
            data_dir: self.ipam_dir()?,
            dns: self.dns.clone(),
        })
    }
}

/// The network configuration list the node agent writes for this plugin
/// (`/etc/cni/net.d/10-kwk.conflist`): the bridge is the gateway of the node's podCIDR and the
/// pods' default route.
///
/// It masquerades pod egress leaving the pod subnet (`ipMasq`) and declares the `portMappings`
/// capability; [`node_conflist_in_cluster`] names the cluster CIDR as well.
pub fn node_conflist(
    network: &str,
    pod_cidr: &str,
    mtu: Option<u32>,
) -> Result<serde_json::Value, CniError> {
    node_conflist_in_cluster(network, pod_cidr, None, mtu)
}

/// [`node_conflist`] with `clusterCIDR`: traffic to other nodes' pods keeps its source address.
pub fn node_conflist_in_cluster(
    network: &str,
    pod_cidr: &str,
    cluster_cidr: Option<&str>,
    mtu: Option<u32>,
) -> Result<serde_json::Value, CniError> {
    let subnet = Ipv4Cidr::parse(pod_cidr)
        .map_err(|err| CniError::InvalidConfig(format!("podCIDR: {err}")))?
        .truncated();
    let mut plugin = serde_json::json!({
        "type": "kwk-cni",
        "bridge": DEFAULT_BRIDGE,
        "isGateway": true,
        "isDefaultGateway": true,
        "hairpinMode": true,
        "ipMasq": true,
        "capabilities": {"portMappings": true},
        "ipam": {"type": "host-local", "subnet": subnet.to_string()},
    });
    if let Some(cluster) = cluster_cidr {
        let cluster = Ipv4Cidr::parse(cluster)
            .map_err(|err| CniError::InvalidConfig(format!("clusterCIDR: {err}")))?
            .truncated();
        plugin["clusterCIDR"] = cluster.to_string().into();
    }
    if let Some(mtu) = mtu {
        plugin["mtu"] = mtu.into();
    }
    Ok(serde_json::json!({
        "cniVersion": "1.0.0",
        "name": network,
        "plugins": [plugin],
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |key| vars.get(key).cloned()
    }

    #[test]
    fn env_requirements_per_command() {
        let cases: &[(&[(&str, &str)], bool)] = &[
            (&[("CNI_COMMAND", "VERSION")], true),
            (&[("CNI_COMMAND", "STATUS")], true),
            (&[("CNI_COMMAND", "GC")], true),
            (
                &[
                    ("CNI_COMMAND", "ADD"),
                    ("CNI_CONTAINERID", "c"),
                    ("CNI_IFNAME", "eth0"),
                ],
                false,
            ),
            (
                &[
                    ("CNI_COMMAND", "ADD"),
                    ("CNI_CONTAINERID", "c"),
                    ("CNI_IFNAME", "eth0"),
                    ("CNI_NETNS", "/x"),
                ],
                true,
            ),
            (
                &[
                    ("CNI_COMMAND", "DEL"),
                    ("CNI_CONTAINERID", "c"),
                    ("CNI_IFNAME", "eth0"),
                ],
                true,
            ),
            (&[("CNI_COMMAND", "DEL"), ("CNI_IFNAME", "eth0")], false),
            (
                &[
                    ("CNI_COMMAND", "DEL"),
                    ("CNI_CONTAINERID", "c"),
                    ("CNI_IFNAME", "a/b"),
                ],
                false,
            ),
            (&[("CNI_COMMAND", "FROB")], false),
            (&[], false),
        ];
        for (vars, ok) in cases {
            let got = CniEnv::from_lookup(lookup(vars));
            assert_eq!(got.is_ok(), *ok, "{vars:?}: {got:?}");
            if let Err(err) = got {
                assert_eq!(err.code(), 4, "{vars:?}");
            }
        }
    }

    #[test]
    fn node_conflist_round_trips_through_the_plugin_parser() {
        let list = node_conflist("kwk", "10.244.3.0/24", Some(1450)).expect("conflist");
        // What libcni hands the plugin: the list's version and name merged into the plugin.
        let mut plugin = list["plugins"][0].clone();
        plugin["cniVersion"] = list["cniVersion"].clone();
        plugin["name"] = list["name"].clone();
        let conf = NetConf::parse(plugin.to_string().as_bytes()).expect("parse");
        let net = conf.network().expect("valid");
        assert_eq!(net.range.gateway, Ipv4Addr::new(10, 244, 3, 1));
        assert_eq!(net.range.subnet.to_string(), "10.244.3.0/24");
        assert_eq!(net.mtu, Some(1450));
        assert_eq!(net.routes.len(), 1, "default route via the bridge");
        assert!(net.hairpin && net.is_gateway);
        assert!(node_conflist("kwk", "10.244.3.0", None).is_err());
    }

    #[test]
    fn masquerade_and_port_mapping_fields() {
        let list = node_conflist_in_cluster("kwk", "10.244.3.0/24", Some("10.244.0.0/16"), None)
            .expect("conflist");
        assert_eq!(list["plugins"][0]["capabilities"]["portMappings"], true);
        let mut plugin = list["plugins"][0].clone();
        plugin["cniVersion"] = list["cniVersion"].clone();
        plugin["name"] = list["name"].clone();
        plugin["runtimeConfig"] = serde_json::json!({"portMappings": [
            {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
            {"hostPort": 53, "containerPort": 53, "protocol": "udp", "hostIP": "10.0.0.1"}]});
        let net = NetConf::parse(plugin.to_string().as_bytes())
            .expect("parse")
            .network()
            .expect("valid");
        assert_eq!(net.port_mappings.len(), 2);
        let params = net.nat_params();
        assert_eq!(params.pod_subnet.to_string(), "10.244.3.0/24");
        assert_eq!(
            params.masquerade_outside.map(|c| c.to_string()).as_deref(),
            Some("10.244.0.0/16")
        );
        // No clusterCIDR: outside the subnet; no ipMasq: no masquerade.
        let bare = |extra: &str| {
            let text = format!(
                r#"{{"cniVersion":"1.0.0","name":"k","ipam":{{"subnet":"10.9.0.0/24"}}{extra}}}"#
            );
            NetConf::parse(text.as_bytes()).expect("parse").network()
        };
        let masq = bare(r#","ipMasq":true"#).expect("valid").nat_params();
        assert_eq!(
            masq.masquerade_outside.map(|c| c.to_string()).as_deref(),
            Some("10.9.0.0/24")
        );
        assert!(
            bare("")
                .expect("valid")
                .nat_params()
                .masquerade_outside
                .is_none()
        );
        assert_eq!(bare(r#","clusterCIDR":"x""#).expect_err("bad").code(), 7);
        let bad_port = r#","runtimeConfig":{"portMappings":[{"hostPort":0,"containerPort":1}]}"#;
        assert_eq!(bare(bad_port).expect_err("bad port").code(), 7);
    }

    #[test]
    fn range_defaults_and_validation() {
        let conf =
            |subnet: &str, start: Option<&str>, end: Option<&str>, gw: Option<&str>| RangeConf {
                subnet: Some(subnet.into()),
                range_start: start.map(|s| s.parse().expect("ip")),
                range_end: end.map(|s| s.parse().expect("ip")),
                gateway: gw.map(|s| s.parse().expect("ip")),
            };
        let ip = |s: &str| -> Ipv4Addr { s.parse().expect("ip") };
        let range = IpRange::from_conf(&conf("10.1.2.0/24", None, None, None)).expect("ok");
        assert_eq!(
            (range.start, range.end, range.gateway),
            (ip("10.1.2.1"), ip("10.1.2.254"), ip("10.1.2.1"))
        );
        let range = IpRange::from_conf(&conf(
            "10.1.2.7/24",
            Some("10.1.2.10"),
            Some("10.1.2.20"),
            Some("10.1.2.254"),
        ))
        .expect("ok");
        assert_eq!(
            (range.start, range.end, range.gateway),
            (ip("10.1.2.10"), ip("10.1.2.20"), ip("10.1.2.254"))
        );
        for bad in [
            conf("10.1.2.0/24", Some("10.1.3.1"), None, None),
            conf("10.1.2.0/24", None, Some("10.1.2.255"), None),
            conf("10.1.2.0/24", Some("10.1.2.0"), None, None),
            conf("10.1.2.0/24", Some("10.1.2.9"), Some("10.1.2.8"), None),
            conf("10.1.2.0/24", None, None, Some("10.9.9.9")),
            conf("10.1.2.0/31", None, None, None),
            conf("nonsense", None, None, None),
        ] {
            let err = IpRange::from_conf(&bad).expect_err("must be rejected");
            assert_eq!(err.code(), 7, "{bad:?}");
        }
    }

    #[test]
    fn netconf_versions_and_routes() {
        let err = NetConf::parse(br#"{"cniVersion":"0.2.0","name":"n"}"#).expect_err("old");
        assert_eq!(err.code(), 1);
        let err = NetConf::parse(b"{").expect_err("garbage");
        assert_eq!(err.code(), 6);
        let conf = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"k","type":"kwk-cni","isDefaultGateway":true,
                "dns":{"nameservers":["10.96.0.10"],"search":["svc.cluster.local"]},
                "ipam":{"type":"host-local","ranges":[[{"subnet":"10.9.0.0/24"}]],
                        "routes":[{"dst":"10.96.0.0/12"}],"dataDir":"/tmp/x"}}"#,
        )
        .expect("parse");
        let net = conf.network().expect("valid");
        assert!(net.is_gateway);
        assert_eq!(net.bridge, "cni0");
        assert_eq!(net.data_dir, PathBuf::from("/tmp/x/k"));
        assert_eq!(net.dns.nameservers, ["10.96.0.10"]);
        assert_eq!(net.dns.search, ["svc.cluster.local"]);
        let routes: Vec<String> = net
            .routes
            .iter()
            .map(|r| format!("{} via {}", r.dst, r.gw))
            .collect();
        assert_eq!(
            routes,
            ["10.96.0.0/12 via 10.9.0.1", "0.0.0.0/0 via 10.9.0.1"]
        );
        let conf = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"../x","ipam":{"subnet":"10.0.0.0/24"}}"#,
        )
        .expect("parse");
        assert_eq!(conf.network().expect_err("bad name").code(), 7);
    }
}
