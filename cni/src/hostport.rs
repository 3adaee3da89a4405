//! hostPort mappings (the portmap plugin's `runtimeConfig.portMappings`): their validated form,
//! the conflict rule between attachments, and the per-attachment record persisted next to the
//! IPAM allocations (`<dataDir>/<network>/hostports/<containerID>.<ifname>.json`) so DEL and GC
//! work from the store alone. Pure except the small record I/O at the bottom.

use std::fs;
use std::io::ErrorKind;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::Attachment;
use crate::error::CniError;

/// Sub-directory of the IPAM directory holding one record per attachment with mappings.
pub const RECORD_DIR: &str = "hostports";

/// A transport protocol a hostPort can map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl Proto {
    /// Parses the runtime's protocol name (any case, empty means TCP, as portmap).
    pub fn parse(name: &str) -> Result<Self, CniError> {
        match name.to_ascii_lowercase().as_str() {
            "" | "tcp" => Ok(Self::Tcp),
            "udp" => Ok(Self::Udp),
            "sctp" => Ok(Self::Sctp),
            other => Err(CniError::InvalidConfig(format!(
                "portMappings: unknown protocol {other:?}"
            ))),
        }
    }

    /// The IP protocol number (`meta l4proto`).
    pub fn number(self) -> u8 {
        match self {
            Self::Tcp => 6,
            Self::Udp => 17,
            Self::Sctp => 132,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Sctp => "sctp",
        }
    }
}

/// One validated mapping: `hostIP:hostPort/proto` (any local address when `host_ip` is `None`)
/// to the pod's `containerPort`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Proto,
    #[serde(default, rename = "hostIP", skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<Ipv4Addr>,
}

impl PortMapping {
    /// Two mappings claim the same traffic: same protocol and port, and one of them listens on
    /// every address or both on the same one.
    pub fn overlaps(&self, other: &Self) -> bool {
        self.protocol == other.protocol
            && self.host_port == other.host_port
            && match (self.host_ip, other.host_ip) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }

    /// `tcp/8080` or `tcp/10.0.0.5:8080`, for error messages.
    pub fn describe(&self) -> String {
        match self.host_ip {
            Some(ip) => format!("{}/{ip}:{}", self.protocol.name(), self.host_port),
            None => format!("{}/{}", self.protocol.name(), self.host_port),
        }
    }
}

/// What the runtime passes: `{"hostPort", "containerPort", "protocol", "hostIP"}`. containerd
/// (go-cni) sends the Go field names (`HostPort`, ...), which portmap reads through Go's
/// case-insensitive JSON decoding: both spellings are accepted.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMappingConf {
    #[serde(default, alias = "HostPort")]
    pub host_port: i64,
    #[serde(default, alias = "ContainerPort")]
    pub container_port: i64,
    #[serde(default, alias = "Protocol")]
    pub protocol: String,
    #[serde(default, rename = "hostIP", alias = "HostIP", alias = "hostIp")]
    pub host_ip: String,
}

fn port(value: i64, what: &str) -> Result<u16, CniError> {
    u16::try_from(value)
        .ok()
        .filter(|port| *port != 0)
        .ok_or_else(|| {
            CniError::InvalidConfig(format!("portMappings: {what} {value} out of range"))
        })
}

/// Validates the runtime's mappings: ports 1..=65535, IPv4 or empty/`0.0.0.0` host IPs (IPv6
/// host IPs are skipped: this plugin is IPv4-only, as portmap skips the other family), no two
/// mappings of the list overlapping.
pub fn validate(confs: &[PortMappingConf]) -> Result<Vec<PortMapping>, CniError> {
    let mut out: Vec<PortMapping> = Vec::with_capacity(confs.len());
    for conf in confs {
        let host_ip = match conf.host_ip.as_str() {
            "" | "0.0.0.0" => None,
            text if text.contains(':') => continue,
            text => Some(text.parse::<Ipv4Addr>().map_err(|err| {
                CniError::InvalidConfig(format!("portMappings: hostIP {text:?}: {err}"))
            })?),
        };
        let mapping = PortMapping {
            host_port: port(conf.host_port, "hostPort")?,
            container_port: port(conf.container_port, "containerPort")?,
            protocol: Proto::parse(&conf.protocol)?,
            host_ip,
        };
        if out.contains(&mapping) {
            continue;
        }
        if let Some(clash) = out.iter().find(|m| m.overlaps(&mapping)) {
            return Err(CniError::InvalidConfig(format!(
                "portMappings: hostPort {} is given twice ({} and {})",
                mapping.describe(),
                clash.describe(),
                mapping.describe()
            )));
        }
        out.push(mapping);
    }
    Ok(out)
}

/// The mappings one attachment holds, as persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostPortRecord {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
    #[serde(rename = "podIP")]
    pub pod_ip: Ipv4Addr,
    pub mappings: Vec<PortMapping>,
}

impl HostPortRecord {
    pub fn held_by(&self, container_id: &str, ifname: &str) -> bool {
        self.container_id == container_id && self.ifname == ifname
    }
}

/// The first of `wanted`'s mappings another attachment already holds, with that holder.
pub fn find_conflict<'a>(
    wanted: &HostPortRecord,
    existing: &'a [HostPortRecord],
) -> Option<(PortMapping, &'a HostPortRecord)> {
    existing
        .iter()
        .filter(|other| !other.held_by(&wanted.container_id, &wanted.ifname))
        .find_map(|other| {
            wanted
                .mappings
                .iter()
                .find(|mine| other.mappings.iter().any(|theirs| theirs.overlaps(mine)))
                .map(|mine| (*mine, other))
        })
}

/// The error ADD returns when a hostPort is taken.
pub fn conflict_error(mapping: &PortMapping, holder: &HostPortRecord) -> CniError {
    CniError::HostPortTaken(format!(
        "hostPort {} is already used by container {} ({})",
        mapping.describe(),
        holder.container_id,
        holder.ifname
    ))
}

/// Records whose attachment is not in `valid` (GC).
pub fn stale_records<'a>(
    records: &'a [HostPortRecord],
    valid: &[Attachment],
) -> Vec<&'a HostPortRecord> {
    records
        .iter()
        .filter(|r| !valid.iter().any(|a| r.held_by(&a.container_id, &a.ifname)))
        .collect()
}

/// The records directory inside an IPAM directory.
pub fn record_dir(ipam_dir: &Path) -> PathBuf {
    ipam_dir.join(RECORD_DIR)
}

fn record_path(ipam_dir: &Path, container_id: &str, ifname: &str) -> PathBuf {
    record_dir(ipam_dir).join(format!("{container_id}.{ifname}.json"))
}

/// Every record (unreadable or foreign files are skipped). Call with the IPAM lock held.
pub fn read_records(ipam_dir: &Path) -> Result<Vec<HostPortRecord>, CniError> {
    let dir = record_dir(ipam_dir);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(CniError::io(format!("reading {}", dir.display()), err)),
    };
    let mut records = Vec::new();
    for entry in entries.flatten() {
        if let Ok(bytes) = fs::read(entry.path())
            && let Ok(record) = serde_json::from_slice::<HostPortRecord>(&bytes)
        {
            records.push(record);
        }
    }
    records.sort_by(|a, b| (&a.container_id, &a.ifname).cmp(&(&b.container_id, &b.ifname)));
    Ok(records)
}

/// Writes (replaces) one attachment's record. Call with the IPAM lock held.
pub fn write_record(ipam_dir: &Path, record: &HostPortRecord) -> Result<(), CniError> {
    let dir = record_dir(ipam_dir);
    fs::create_dir_all(&dir)
        .map_err(|err| CniError::io(format!("creating {}", dir.display()), err))?;
    let path = record_path(ipam_dir, &record.container_id, &record.ifname);
    let bytes = serde_json::to_vec(record)
        .map_err(|err| CniError::Decode(format!("encoding the hostPort record: {err}")))?;
    fs::write(&path, bytes).map_err(|err| CniError::io(format!("writing {}", path.display()), err))
}

/// Removes one attachment's record; `true` if there was one.
pub fn remove_record(ipam_dir: &Path, container_id: &str, ifname: &str) -> Result<bool, CniError> {
    let path = record_path(ipam_dir, container_id, ifname);
    match fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(false),
        Err(err) => Err(CniError::io(format!("removing {}", path.display()), err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(host: i64, container: i64, proto: &str, ip: &str) -> PortMappingConf {
        PortMappingConf {
            host_port: host,
            container_port: container,
            protocol: proto.into(),
            host_ip: ip.into(),
        }
    }

    fn mapping(port: u16, proto: Proto, ip: Option<[u8; 4]>) -> PortMapping {
        PortMapping {
            host_port: port,
            container_port: 80,
            protocol: proto,
            host_ip: ip.map(Ipv4Addr::from),
        }
    }

    #[test]
    fn validation_table() {
        let cases: &[(&[PortMappingConf], Result<usize, ()>)] = &[
            (&[conf(8080, 80, "tcp", "")], Ok(1)),
            (&[conf(8080, 80, "TCP", "0.0.0.0")], Ok(1)),
            (&[conf(8080, 80, "", "10.0.0.1")], Ok(1)),
            (
                &[conf(8080, 80, "udp", ""), conf(8080, 80, "tcp", "")],
                Ok(2),
            ),
            // The same mapping twice collapses; the same port to two places is refused.
            (
                &[conf(8080, 80, "tcp", ""), conf(8080, 80, "tcp", "")],
                Ok(1),
            ),
            (
                &[conf(8080, 80, "tcp", ""), conf(8080, 81, "tcp", "10.0.0.1")],
                Err(()),
            ),
            (&[conf(8080, 80, "tcp", "::1")], Ok(0)),
            (&[conf(0, 80, "tcp", "")], Err(())),
            (&[conf(70000, 80, "tcp", "")], Err(())),
            (&[conf(8080, -1, "tcp", "")], Err(())),
            (&[conf(8080, 80, "icmp", "")], Err(())),
            (&[conf(8080, 80, "tcp", "nonsense")], Err(())),
        ];
        for (confs, want) in cases {
            let got = validate(confs);
            match want {
                Ok(n) => assert_eq!(got.expect("valid").len(), *n, "{confs:?}"),
                Err(()) => assert_eq!(got.expect_err("invalid").code(), 7, "{confs:?}"),
            }
        }
    }

    #[test]
    fn containerd_go_field_names_parse() {
        let confs: Vec<PortMappingConf> = serde_json::from_str(
            r#"[{"HostPort":18090,"ContainerPort":80,"Protocol":"tcp","HostIP":""},
                {"hostPort":53,"containerPort":53,"protocol":"udp","hostIP":"10.0.0.1"}]"#,
        )
        .expect("parse");
        let mappings = validate(&confs).expect("valid");
        assert_eq!(mappings[0].host_port, 18090);
        assert_eq!(mappings[0].container_port, 80);
        assert_eq!(mappings[1].host_ip, Some(Ipv4Addr::new(10, 0, 0, 1)));
    }

    #[test]
    fn overlap_rules() {
        let any = mapping(80, Proto::Tcp, None);
        let a = mapping(80, Proto::Tcp, Some([10, 0, 0, 1]));
        let b = mapping(80, Proto::Tcp, Some([10, 0, 0, 2]));
        let udp = mapping(80, Proto::Udp, None);
        let other_port = mapping(81, Proto::Tcp, None);
        let cases = [
            (any, a, true),
            (a, any, true),
            (a, a, true),
            (a, b, false),
            (any, udp, false),
            (any, other_port, false),
        ];
        for (x, y, want) in cases {
            assert_eq!(x.overlaps(&y), want, "{x:?} {y:?}");
        }
    }

    #[test]
    fn conflicts_name_the_port_and_holder_and_ignore_the_same_attachment() {
        let record = |id: &str, mappings: Vec<PortMapping>| HostPortRecord {
            container_id: id.into(),
            ifname: "eth0".into(),
            pod_ip: Ipv4Addr::new(10, 0, 0, 2),
            mappings,
        };
        let existing = vec![
            record("a", vec![mapping(8080, Proto::Tcp, None)]),
            record("b", vec![mapping(9090, Proto::Udp, None)]),
        ];
        let wanted = record(
            "c",
            vec![
                mapping(9090, Proto::Tcp, None),
                mapping(8080, Proto::Tcp, Some([1, 2, 3, 4])),
            ],
        );
        let (port, holder) = find_conflict(&wanted, &existing).expect("conflict");
        assert_eq!(holder.container_id, "a");
        let err = conflict_error(&port, holder).to_string();
        assert!(
            err.contains("tcp/1.2.3.4:8080") && err.contains("container a"),
            "{err}"
        );
        // A repeated ADD of the holder itself is no conflict.
        assert!(find_conflict(&existing[0], &existing).is_none());
        let free = record("c", vec![mapping(9090, Proto::Tcp, None)]);
        assert!(find_conflict(&free, &existing).is_none());
    }

    #[test]
    fn records_round_trip_and_gc_selects_stale_ones() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let record = HostPortRecord {
            container_id: "abc".into(),
            ifname: "eth0".into(),
            pod_ip: Ipv4Addr::new(10, 0, 0, 9),
            mappings: vec![mapping(8080, Proto::Sctp, Some([10, 1, 1, 1]))],
        };
        write_record(tmp.path(), &record).expect("write");
        assert_eq!(
            read_records(tmp.path()).expect("read"),
            std::slice::from_ref(&record)
        );
        let valid = [Attachment {
            container_id: "abc".into(),
            ifname: "eth1".into(),
        }];
        assert_eq!(
            stale_records(std::slice::from_ref(&record), &valid).len(),
            1
        );
        assert!(remove_record(tmp.path(), "abc", "eth0").expect("remove"));
        assert!(!remove_record(tmp.path(), "abc", "eth0").expect("again"));
        assert!(read_records(tmp.path()).expect("read").is_empty());
    }
}
