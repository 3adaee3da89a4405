//! The kube-proxy half of the configuration: a `KubeProxyConfiguration`
//! (`kubeproxy.config.k8s.io/v1alpha1`) file, `/etc/kwk/kube-proxy.yaml` by default, optional
//! (absent: upstream's defaults, nftables mode). Fields kwk does not act on are listed as
//! ignored; a bad value is an error naming the field.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kwk_netdp::model::Cidr;
use kwk_netdp::runner::SyncPeriods;
use serde_json::{Map, Value};

use crate::config::{parse_document, parse_go_duration};

pub const API_VERSION: &str = "kubeproxy.config.k8s.io/v1alpha1";
pub const KIND: &str = "KubeProxyConfiguration";

/// The proxy mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProxyMode {
    #[default]
    Nftables,
    Iptables,
    Ipvs,
}

/// What kwk-node's proxy honours of a `KubeProxyConfiguration`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    pub mode: ProxyMode,
    /// `clusterCIDR` (comma-separated): pod traffic, for masquerade decisions.
    pub cluster_cidrs: Vec<Cidr>,
    /// `<mode>.masqueradeAll`.
    pub masquerade_all: bool,
    /// `<mode>.minSyncPeriod` / `<mode>.syncPeriod`.
    pub periods: SyncPeriods,
    /// `ipvs.scheduler` (empty: rr).
    pub ipvs_scheduler: String,
    /// `ipvs.strictARP`: the IPVS mode also sets `arp_ignore=1` and `arp_announce=2`.
    pub ipvs_strict_arp: bool,
    /// Top-level fields present in the file that kwk does not act on.
    pub ignored_fields: Vec<String>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            mode: ProxyMode::Nftables,
            cluster_cidrs: Vec::new(),
            masquerade_all: false,
            periods: SyncPeriods::default(),
            ipvs_scheduler: String::new(),
            ipvs_strict_arp: false,
            ignored_fields: Vec::new(),
        }
    }
}

/// A `KubeProxyConfiguration` that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ProxyConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Parse(#[from] crate::config::ConfigError),
    #[error("{path}: {field}: {message}")]
    Field {
        path: PathBuf,
        field: String,
        message: String,
    },
}

/// Fields read (top level); the rest are reported as ignored.
const HONOURED: &[&str] = &[
    "apiVersion",
    "kind",
    "mode",
    "clusterCIDR",
    "nftables",
    "iptables",
    "ipvs",
];

/// Loads `path`; a missing file gives the defaults.
pub fn load(path: &Path) -> Result<ProxyConfig, ProxyConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ProxyConfig::default()),
        Err(source) => {
            return Err(ProxyConfigError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    match parse_document(path, &text)? {
        None => Ok(ProxyConfig::default()),
        Some(map) => from_map(path, &map),
    }
}

/// Converts a parsed document.
pub fn from_map(path: &Path, map: &Map<String, Value>) -> Result<ProxyConfig, ProxyConfigError> {
    let bad = |field: &str, message: String| ProxyConfigError::Field {
        path: path.to_path_buf(),
        field: field.to_owned(),
        message,
    };
    let string = |field: &str, value: Option<&Value>| -> Result<Option<String>, ProxyConfigError> {
        match value {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(bad(field, format!("want a string, got {other}"))),
        }
    };
    if let Some(v) = string("apiVersion", map.get("apiVersion"))?
        && v != API_VERSION
    {
        return Err(bad("apiVersion", format!("{v:?} is not {API_VERSION:?}")));
    }
    if let Some(k) = string("kind", map.get("kind"))?
        && k != KIND
    {
        return Err(bad("kind", format!("{k:?} is not {KIND:?}")));
    }
    let mode = match string("mode", map.get("mode"))?.as_deref() {
        None | Some("") | Some("nftables") => ProxyMode::Nftables,
        Some("iptables") => ProxyMode::Iptables,
        Some("ipvs") => ProxyMode::Ipvs,
        Some(other) => {
            return Err(bad(
                "mode",
                format!("{other:?} is not one of \"nftables\", \"iptables\", \"ipvs\""),
            ));
        }
    };
    let mut cluster_cidrs = Vec::new();
    if let Some(list) = string("clusterCIDR", map.get("clusterCIDR"))? {
        for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let cidr: Cidr = part
                .parse()
                .map_err(|e| bad("clusterCIDR", format!("{part:?}: {e}")))?;
            cluster_cidrs.push(cidr);
        }
        if cluster_cidrs.len() > 2 {
            return Err(bad(
                "clusterCIDR",
                "at most one IPv4 and one IPv6 CIDR".into(),
            ));
        }
    }
    let section_name = match mode {
        ProxyMode::Nftables => "nftables",
        ProxyMode::Iptables => "iptables",
        ProxyMode::Ipvs => "ipvs",
    };
    let mut config = ProxyConfig {
        mode,
        cluster_cidrs,
        ..ProxyConfig::default()
    };
    if let Some(section) = map.get(section_name) {
        let Value::Object(section) = section else {
            return Err(bad(section_name, "want a mapping".into()));
        };
        let duration = |key: &str| -> Result<Option<Duration>, ProxyConfigError> {
            let field = format!("{section_name}.{key}");
            let Some(text) = string(&field, section.get(key))? else {
                return Ok(None);
            };
            let parsed = parse_go_duration(&text).map_err(|e| bad(&field, e.to_string()))?;
            parsed
                .to_std()
                .map(Some)
                .ok_or_else(|| bad(&field, format!("{text:?} is negative")))
        };
        if let Some(d) = duration("minSyncPeriod")? {
            config.periods.min_sync_period = d;
        }
        if let Some(d) = duration("syncPeriod")? {
            if d.is_zero() {
                return Err(bad(
                    &format!("{section_name}.syncPeriod"),
                    "must be greater than 0".into(),
                ));
            }
            config.periods.sync_period = d;
        }
        if config.periods.min_sync_period > config.periods.sync_period {
            return Err(bad(
                &format!("{section_name}.minSyncPeriod"),
                format!(
                    "{:?} is longer than syncPeriod {:?}",
                    config.periods.min_sync_period, config.periods.sync_period
                ),
            ));
        }
        match section.get("masqueradeAll") {
            None | Some(Value::Null) => {}
            Some(Value::Bool(b)) => config.masquerade_all = *b,
            Some(other) => {
                return Err(bad(
                    &format!("{section_name}.masqueradeAll"),
                    format!("want true or false, got {other}"),
                ));
            }
        }
        if mode == ProxyMode::Ipvs
            && let Some(s) = string("ipvs.scheduler", section.get("scheduler"))?
        {
            const SCHEDULERS: &[&str] = &["", "rr", "lc", "dh", "sh", "sed", "nq"];
            if !SCHEDULERS.contains(&s.as_str()) {
                return Err(bad(
                    "ipvs.scheduler",
                    format!("{s:?} is not one of rr, lc, dh, sh, sed, nq"),
                ));
            }
            config.ipvs_scheduler = s;
        }
        if mode == ProxyMode::Ipvs {
            match section.get("strictARP") {
                None | Some(Value::Null) => {}
                Some(Value::Bool(b)) => config.ipvs_strict_arp = *b,
                Some(other) => {
                    return Err(bad(
                        "ipvs.strictARP",
                        format!("want true or false, got {other}"),
                    ));
                }
            }
        }
    }
    config.ignored_fields = map
        .keys()
        .filter(|k| !HONOURED.contains(&k.as_str()))
        .cloned()
        .collect();
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<ProxyConfig, ProxyConfigError> {
        let path = Path::new("kube-proxy.yaml");
        match parse_document(path, yaml)? {
            Some(map) => from_map(path, &map),
            None => Ok(ProxyConfig::default()),
        }
    }

    #[test]
    fn defaults_and_honoured_fields() {
        assert_eq!(parse("").unwrap(), ProxyConfig::default());
        let c = parse(
            "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n\
             mode: iptables\nclusterCIDR: 10.244.0.0/16,fd00:244::/56\n\
             iptables:\n  minSyncPeriod: 250ms\n  syncPeriod: 1m\n  masqueradeAll: true\n\
             metricsBindAddress: 0.0.0.0:10249\n",
        )
        .unwrap();
        assert_eq!(c.mode, ProxyMode::Iptables);
        assert_eq!(c.cluster_cidrs.len(), 2);
        assert!(c.masquerade_all);
        assert_eq!(c.periods.min_sync_period, Duration::from_millis(250));
        assert_eq!(c.periods.sync_period, Duration::from_secs(60));
        assert_eq!(c.ignored_fields, ["metricsBindAddress"]);
        // Another mode's section is not read.
        let c = parse("nftables:\n  syncPeriod: 5s\niptables:\n  syncPeriod: 9s\n").unwrap();
        assert_eq!(c.periods.sync_period, Duration::from_secs(5));
    }

    #[test]
    fn bad_values_name_their_field() {
        let cases = [
            ("mode: userspace\n", "mode"),
            ("kind: KubeletConfiguration\n", "kind"),
            ("clusterCIDR: 10.244.0.0/33\n", "clusterCIDR"),
            ("nftables:\n  syncPeriod: soon\n", "nftables.syncPeriod"),
            ("nftables:\n  syncPeriod: 0s\n", "nftables.syncPeriod"),
            (
                "nftables:\n  minSyncPeriod: 1m\n  syncPeriod: 30s\n",
                "nftables.minSyncPeriod",
            ),
            (
                "nftables:\n  masqueradeAll: yes please\n",
                "nftables.masqueradeAll",
            ),
            ("mode: ipvs\nipvs:\n  scheduler: wrr\n", "ipvs.scheduler"),
            ("mode: ipvs\nipvs:\n  strictARP: 1\n", "ipvs.strictARP"),
        ];
        for (yaml, field) in cases {
            match parse(yaml) {
                Err(ProxyConfigError::Field { field: f, .. }) => assert_eq!(f, field, "{yaml}"),
                other => panic!("{yaml}: {other:?}"),
            }
        }
    }

    #[test]
    fn ipvs_section() {
        let c = parse("mode: ipvs\nipvs:\n  scheduler: lc\n  strictARP: true\n").unwrap();
        assert_eq!(c.mode, ProxyMode::Ipvs);
        assert_eq!(c.ipvs_scheduler, "lc");
        assert!(c.ipvs_strict_arp);
        let c = parse("mode: ipvs\n").unwrap();
        assert!(!c.ipvs_strict_arp, "upstream's default");
    }

    #[test]
    fn a_missing_file_gives_the_defaults() {
        let c = load(Path::new("/nonexistent/kube-proxy.yaml")).unwrap();
        assert_eq!(c, ProxyConfig::default());
    }
}
