//! Pure helpers for the caller's ClusterIP and NodePort allocation (which needs storage):
//! what a Service asks for, writing the allocated values into it, what it holds (to release
//! on delete or after an update), and picking a free address or port from a range.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use k8s_openapi::api::core::v1::ServiceSpec;
use serde_json::{Value, json};

use super::util::{arr, flag, int, s};

/// Upstream's default NodePort range.
pub const DEFAULT_NODE_PORT_RANGE: (i32, i32) = (30000, 32767);

/// What a Service needs of the cluster IP allocator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterIpRequest {
    /// ExternalName or headless (`clusterIP: None`): nothing.
    NotNeeded,
    /// Any free address.
    Any,
    /// This address (refuse it if taken or outside the service CIDR).
    Specific(String),
}

/// Whether ports of a spec need node ports (NodePort, or LoadBalancer with
/// `allocateLoadBalancerNodePorts` not false).
pub fn needs_node_ports(spec: &ServiceSpec) -> bool {
    match spec.type_.as_deref() {
        Some("NodePort") => true,
        Some("LoadBalancer") => spec.allocate_load_balancer_node_ports != Some(false),
        _ => false,
    }
}

fn json_needs_node_ports(svc: &Value) -> bool {
    match s(svc, "/spec/type") {
        "NodePort" => true,
        "LoadBalancer" => flag(svc, "/spec/allocateLoadBalancerNodePorts") != Some(false),
        _ => false,
    }
}

/// The cluster IP request of a (defaulted) Service.
pub fn cluster_ip_request(svc: &Value) -> ClusterIpRequest {
    if s(svc, "/spec/type") == "ExternalName" {
        return ClusterIpRequest::NotNeeded;
    }
    match s(svc, "/spec/clusterIP") {
        "None" => ClusterIpRequest::NotNeeded,
        "" => ClusterIpRequest::Any,
        ip => ClusterIpRequest::Specific(ip.to_string()),
    }
}

/// Writes an allocated cluster IP (`clusterIP`, `clusterIPs`, and the family it belongs to).
pub fn assign_cluster_ip(svc: &mut Value, ip: &str) {
    let family = if ip.contains(':') { "IPv6" } else { "IPv4" };
    if let Some(spec) = svc.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("clusterIP".into(), json!(ip));
        spec.insert("clusterIPs".into(), json!([ip]));
        spec.insert("ipFamilies".into(), json!([family]));
    }
}

/// The ports that need a node port: `(index, requested port or None for any)`.
pub fn node_port_requests(svc: &Value) -> Vec<(usize, Option<i32>)> {
    if !json_needs_node_ports(svc) {
        return Vec::new();
    }
    arr(svc, "/spec/ports")
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let n = int(p, "/nodePort");
            (i, (n != 0).then(|| i32::try_from(n).unwrap_or(0)))
        })
        .collect()
}

/// Whether the Service needs a health check node port and has none yet.
pub fn needs_health_check_node_port(svc: &Value) -> bool {
    s(svc, "/spec/type") == "LoadBalancer"
        && s(svc, "/spec/externalTrafficPolicy") == "Local"
        && int(svc, "/spec/healthCheckNodePort") == 0
}

/// Writes an allocated node port into port `index`.
pub fn assign_node_port(svc: &mut Value, index: usize, port: i32) {
    if let Some(p) = svc
        .pointer_mut(&format!("/spec/ports/{index}"))
        .and_then(Value::as_object_mut)
    {
        p.insert("nodePort".into(), json!(port));
    }
}

/// The cluster IPs a stored Service holds (to release when it is deleted, or those an
/// update dropped: `held(old) - held(new)`).
pub fn held_cluster_ips(svc: &Value) -> BTreeSet<String> {
    if s(svc, "/spec/type") == "ExternalName" {
        return BTreeSet::new();
    }
    arr(svc, "/spec/clusterIPs")
        .iter()
        .filter_map(Value::as_str)
        .filter(|ip| *ip != "None" && !ip.is_empty())
        .map(String::from)
        .collect()
}

/// The node ports (and health check node port) a stored Service holds.
pub fn held_node_ports(svc: &Value) -> BTreeSet<i32> {
    let mut ports: BTreeSet<i32> = arr(svc, "/spec/ports")
        .iter()
        .filter_map(|p| i32::try_from(int(p, "/nodePort")).ok())
        .filter(|n| *n != 0)
        .collect();
    if let Ok(hc) = i32::try_from(int(svc, "/spec/healthCheckNodePort"))
        && hc != 0
    {
        ports.insert(hc);
    }
    ports
}

/// Upstream's `dropTypeDependentFields`: after a type change, the values the old type needed
/// and the new one does not are cleared when the client left them as they were (so
/// `kubectl patch -p '{"spec":{"type":"ClusterIP"}}'` on a NodePort Service drops its node
/// ports instead of failing validation, and they are released).
pub fn drop_type_dependent_fields(new: &mut Value, old: &Value) {
    let same = |new: &Value, p: &str| new.pointer(p) == old.pointer(p);
    let needs_ip = |v: &Value| s(v, "/spec/type") != "ExternalName";
    let needs_ports = |v: &Value| matches!(s(v, "/spec/type"), "NodePort" | "LoadBalancer");
    let needs_hc = |v: &Value| {
        s(v, "/spec/type") == "LoadBalancer" && s(v, "/spec/externalTrafficPolicy") == "Local"
    };
    let external = |v: &Value| {
        matches!(s(v, "/spec/type"), "NodePort" | "LoadBalancer")
            || !arr(v, "/spec/externalIPs").is_empty()
    };
    let node_ports = |v: &Value| -> Vec<i64> {
        arr(v, "/spec/ports")
            .iter()
            .map(|p| int(p, "/nodePort"))
            .collect()
    };
    let mut drop = Vec::new();
    if needs_ip(old) && !needs_ip(new) {
        if same(new, "/spec/clusterIP") && same(new, "/spec/clusterIPs") {
            drop.extend(["clusterIP", "clusterIPs"]);
        }
        for f in ["ipFamilies", "ipFamilyPolicy"] {
            if same(new, &format!("/spec/{f}")) {
                drop.push(f);
            }
        }
    }
    if needs_hc(old) && !needs_hc(new) && same(new, "/spec/healthCheckNodePort") {
        drop.push("healthCheckNodePort");
    }
    if s(old, "/spec/type") == "LoadBalancer"
        && s(new, "/spec/type") != "LoadBalancer"
        && same(new, "/spec/allocateLoadBalancerNodePorts")
    {
        drop.push("allocateLoadBalancerNodePorts");
    }
    if external(old) && !external(new) && same(new, "/spec/externalTrafficPolicy") {
        drop.push("externalTrafficPolicy");
    }
    let clear_ports = needs_ports(old)
        && !needs_ports(new)
        && node_ports(new)
            .iter()
            .all(|p| *p == 0 || node_ports(old).contains(p));
    let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    for f in drop {
        spec.remove(f);
    }
    if clear_ports {
        for port in spec
            .get_mut("ports")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Some(p) = port.as_object_mut() {
                p.remove("nodePort");
            }
        }
    }
}

/// The first free port of `range` at or after `start` (wrapping), or `None` when full.
pub fn free_port(range: (i32, i32), used: &BTreeSet<i32>, start: i32) -> Option<i32> {
    let (lo, hi) = range;
    let size = i64::from(hi) - i64::from(lo) + 1;
    if size <= 0 {
        return None;
    }
    let offset = (i64::from(start) - i64::from(lo)).rem_euclid(size);
    (0..size)
        .map(|k| (lo as i64 + (offset + k) % size) as i32)
        .find(|p| !used.contains(p))
}

/// A parsed service CIDR, e.g. `10.96.0.0/12`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub base: IpAddr,
    pub bits: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Option<Self> {
        let (ip, bits) = text.split_once('/')?;
        let base: IpAddr = ip.parse().ok()?;
        let bits: u8 = bits.parse().ok()?;
        let max = if base.is_ipv4() { 32 } else { 128 };
        (bits <= max).then_some(Self { base, bits })
    }

    fn width(&self) -> u32 {
        if self.base.is_ipv4() { 32 } else { 128 }
    }

    fn to_int(ip: IpAddr) -> u128 {
        match ip {
            IpAddr::V4(v4) => u128::from(u32::from(v4)),
            IpAddr::V6(v6) => u128::from(v6),
        }
    }

    fn network(&self) -> u128 {
        let host_bits = self.width() - u32::from(self.bits);
        let mask = if host_bits >= 128 {
            0
        } else {
            !((1u128 << host_bits) - 1)
        };
        Self::to_int(self.base) & mask
    }

    /// Addresses in the block.
    pub fn size(&self) -> u128 {
        let host_bits = self.width() - u32::from(self.bits);
        if host_bits >= 128 {
            u128::MAX
        } else {
            1u128 << host_bits
        }
    }

    /// Whether `ip` lies inside the block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.base.is_ipv4()
            && Self::to_int(ip) >= self.network()
            && Self::to_int(ip) - self.network() < self.size()
    }

    /// The address at `offset` from the network address.
    pub fn nth(&self, offset: u128) -> Option<IpAddr> {
        if offset >= self.size() {
            return None;
        }
        let n = self.network() + offset;
        Some(if self.base.is_ipv4() {
            IpAddr::V4(Ipv4Addr::from(u32::try_from(n).ok()?))
        } else {
            IpAddr::V6(Ipv6Addr::from(n))
        })
    }

    /// The `kubernetes` Service's address: the first usable one (`10.96.0.1` in
    /// `10.96.0.0/12`).
    pub fn first_service_ip(&self) -> Option<IpAddr> {
        self.nth(1)
    }

    /// The first free address at or after `start` (skipping the network address and, for
    /// IPv4, the broadcast address), or `None` when the block is full.
    pub fn free_ip(&self, used: &BTreeSet<IpAddr>, start: u128) -> Option<IpAddr> {
        let size = self.size();
        let last = if self.base.is_ipv4() {
            size.saturating_sub(1)
        } else {
            size
        };
        let usable = last.saturating_sub(1);
        if usable == 0 {
            return None;
        }
        let probes = usable.min(1 << 20);
        (0..probes)
            .map(|k| 1 + (start + k) % usable)
            .filter_map(|offset| self.nth(offset))
            .find(|ip| !used.contains(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_assignments() {
        let mut svc = json!({"spec": {"type": "NodePort", "ports": [
            {"port": 80, "protocol": "TCP"}, {"port": 443, "protocol": "TCP", "nodePort": 30443}
        ]}});
        assert_eq!(cluster_ip_request(&svc), ClusterIpRequest::Any);
        assert_eq!(node_port_requests(&svc), [(0, None), (1, Some(30443))]);
        assign_cluster_ip(&mut svc, "10.96.0.10");
        assign_node_port(&mut svc, 0, 30080);
        assert_eq!(svc["spec"]["clusterIPs"], json!(["10.96.0.10"]));
        assert_eq!(held_node_ports(&svc), BTreeSet::from([30080, 30443]));
        assert_eq!(
            held_cluster_ips(&svc),
            BTreeSet::from(["10.96.0.10".to_string()])
        );
        let headless = json!({"spec": {"type": "ClusterIP", "clusterIP": "None"}});
        assert_eq!(cluster_ip_request(&headless), ClusterIpRequest::NotNeeded);
    }

    #[test]
    fn type_changes_drop_what_the_old_type_needed() {
        let old = json!({"spec": {"type": "NodePort", "clusterIP": "10.96.0.5",
            "clusterIPs": ["10.96.0.5"], "externalTrafficPolicy": "Cluster",
            "ports": [{"port": 80, "nodePort": 30080}]}});
        let mut to_cluster_ip = old.clone();
        to_cluster_ip["spec"]["type"] = json!("ClusterIP");
        drop_type_dependent_fields(&mut to_cluster_ip, &old);
        assert_eq!(
            to_cluster_ip,
            json!({"spec": {"type": "ClusterIP", "clusterIP": "10.96.0.5",
                "clusterIPs": ["10.96.0.5"], "ports": [{"port": 80}]}})
        );
        let mut to_external = old.clone();
        to_external["spec"]["type"] = json!("ExternalName");
        drop_type_dependent_fields(&mut to_external, &old);
        assert_eq!(to_external["spec"].get("clusterIP"), None);
        assert_eq!(to_external["spec"].get("clusterIPs"), None);
        // A changed node port is the client's: kept (and validation refuses it).
        let mut changed = old.clone();
        changed["spec"]["type"] = json!("ClusterIP");
        changed["spec"]["ports"][0]["nodePort"] = json!(30081);
        drop_type_dependent_fields(&mut changed, &old);
        assert_eq!(changed["spec"]["ports"][0]["nodePort"], 30081);
    }

    #[test]
    fn picking_free_values() {
        let used = BTreeSet::from([30000, 30001]);
        assert_eq!(
            free_port(DEFAULT_NODE_PORT_RANGE, &used, 30000),
            Some(30002)
        );
        assert_eq!(free_port((1, 2), &BTreeSet::from([1, 2]), 1), None);
        let cidr = Cidr::parse("10.96.0.0/12").unwrap();
        assert_eq!(cidr.first_service_ip(), Some("10.96.0.1".parse().unwrap()));
        assert!(cidr.contains("10.111.255.254".parse().unwrap()));
        assert!(!cidr.contains("10.112.0.1".parse().unwrap()));
        let small = Cidr::parse("192.168.0.0/30").unwrap();
        let taken = BTreeSet::from(["192.168.0.1".parse().unwrap()]);
        assert_eq!(
            small.free_ip(&taken, 0),
            Some("192.168.0.2".parse().unwrap())
        );
        let full = BTreeSet::from([
            "192.168.0.1".parse().unwrap(),
            "192.168.0.2".parse().unwrap(),
        ]);
        assert_eq!(small.free_ip(&full, 0), None);
    }
}
