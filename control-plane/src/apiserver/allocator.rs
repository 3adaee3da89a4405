//! Service ClusterIP and NodePort allocation through the [`Store`], so it is atomic across
//! concurrent creates (a reservation is a `create` of its key, which fails if it exists) and
//! survives restarts (reservations are stored).
//!
//! - A cluster IP is held by an upstream-shaped `networking.k8s.io/v1` IPAddress record under
//!   `/registry/ipaddresses/<ip>` whose `spec.parentRef` names the Service.
//! - A node port is held by a record under `/registry/servicenodeports/<port>` naming the
//!   Service.
//!
//! A write reserves what the Service needs before it stores the Service and releases those
//! reservations if the write fails; deletes and updates that drop values release them after
//! the write. A crash between reservation and write leaks a reservation: [`ServiceAllocator::repair`]
//! (run at start-up and periodically) deletes reservations no Service holds once they are
//! older than a grace period (so in-flight creates are safe), and recreates missing
//! reservations of stored Services. The pure parts (requests, held values, free-value search)
//! are in [`crate::apiserver::kinds::service_alloc`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::errors::{ApiError, Cause};
use super::kinds::service_alloc::{
    Cidr, ClusterIpRequest, DEFAULT_NODE_PORT_RANGE, assign_cluster_ip, assign_node_port,
    cluster_ip_request, free_port, held_cluster_ips, held_node_ports, needs_health_check_node_port,
    node_port_requests,
};
use super::rest::object::{new_uid, now_rfc3339, unix_now};
use crate::storage::{ListOptions, Store, StoreError};

/// Where IPAddress reservations live.
pub const IP_PREFIX: &str = "/registry/ipaddresses/";
/// Where node port reservations live.
pub const NODE_PORT_PREFIX: &str = "/registry/servicenodeports/";
/// Where Services live.
pub const SERVICE_PREFIX: &str = "/registry/services/specs/";
/// How old an unheld reservation must be before the repair pass deletes it.
pub const REPAIR_GRACE: Duration = Duration::from_secs(60);
/// How often the repair pass runs.
pub const REPAIR_INTERVAL: Duration = Duration::from_secs(180);

/// The service address and node port ranges (`--service-cluster-ip-range`,
/// `--service-node-port-range`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceRanges {
    pub cluster_ip_range: Cidr,
    pub node_port_range: (i32, i32),
}

impl Default for ServiceRanges {
    fn default() -> Self {
        Self {
            cluster_ip_range: Cidr::parse("10.96.0.0/12").expect("valid default CIDR"),
            node_port_range: DEFAULT_NODE_PORT_RANGE,
        }
    }
}

/// Parses `30000-32767` (upstream's `--service-node-port-range` syntax; a single port is a
/// range of one).
pub fn parse_port_range(text: &str) -> Option<(i32, i32)> {
    let (lo, hi) = match text.split_once('-') {
        Some((lo, hi)) => (lo.trim().parse().ok()?, hi.trim().parse().ok()?),
        None => {
            let p = text.trim().parse().ok()?;
            (p, p)
        }
    };
    (0 < lo && lo <= hi && hi <= 65535).then_some((lo, hi))
}

/// The Service a reservation belongs to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Owner {
    pub namespace: String,
    pub name: String,
}

impl Owner {
    pub fn of(svc: &Value) -> Self {
        let text = |p: &str| svc.pointer(p).and_then(Value::as_str).unwrap_or("").into();
        Self {
            namespace: text("/metadata/namespace"),
            name: text("/metadata/name"),
        }
    }

    fn parent_ref(&self) -> Value {
        json!({"group": "", "resource": "services", "namespace": self.namespace, "name": self.name})
    }

    fn from_record(record: &Value) -> Option<Self> {
        let parent = record
            .pointer("/spec/parentRef")
            .or_else(|| record.get("parentRef"))?;
        Some(Self {
            namespace: parent.get("namespace")?.as_str()?.into(),
            name: parent.get("name")?.as_str()?.into(),
        })
    }
}

/// What one write reserved: released again if the write fails.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reserved {
    pub ips: Vec<IpAddr>,
    pub ports: Vec<i32>,
}

/// What a repair pass changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RepairReport {
    pub released_ips: Vec<String>,
    pub released_ports: Vec<i32>,
    pub restored: usize,
}

/// Why a value could not be reserved.
enum Refusal {
    Allocated,
    Store(StoreError),
}

/// The allocator of one apiserver (cheap to share).
#[derive(Debug)]
pub struct ServiceAllocator {
    store: Arc<dyn Store>,
    ranges: ServiceRanges,
}

fn ip_key(ip: IpAddr) -> String {
    format!("{IP_PREFIX}{ip}")
}

fn port_key(port: i32) -> String {
    format!("{NODE_PORT_PREFIX}{port}")
}

fn random_u64() -> u64 {
    let uid = new_uid().replace('-', "");
    u64::from_str_radix(&uid[..16], 16).unwrap_or_default()
}

fn internal(message: &str) -> ApiError {
    ApiError::internal(format!("Internal error occurred: {message}"))
}

fn backend(e: &StoreError) -> ApiError {
    internal(&format!("storage error: {e}"))
}

fn ip_error(svc: &Value, ip: &str, detail: &str) -> ApiError {
    let shown: Vec<String> = svc
        .pointer("/spec/clusterIPs")
        .and_then(Value::as_array)
        .map(|ips| {
            ips.iter()
                .filter_map(Value::as_str)
                .map(|ip| format!("{ip:?}"))
                .collect()
        })
        .unwrap_or_else(|| vec![format!("{ip:?}")]);
    let cause = Cause {
        reason: "FieldValueInvalid",
        message: format!(
            "Invalid value: []string{{{}}}: failed to allocate IP {ip}: {detail}",
            shown.join(", ")
        ),
        field: "spec.clusterIPs".into(),
    };
    ApiError::invalid("", "Service", &Owner::of(svc).name, vec![cause])
}

fn port_error(svc: &Value, field: &str, port: i32, detail: &str) -> ApiError {
    let cause = Cause::invalid(field, &json!(port), detail);
    ApiError::invalid("", "Service", &Owner::of(svc).name, vec![cause])
}

fn record_age(record: &Value, now: i64) -> i64 {
    let created = record
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
        .map(|t| t.as_second())
        .unwrap_or(0);
    now - created
}

impl ServiceAllocator {
    pub fn new(store: Arc<dyn Store>, ranges: ServiceRanges) -> Self {
        Self { store, ranges }
    }

    pub fn ranges(&self) -> ServiceRanges {
        self.ranges
    }

    async fn reserve(&self, key: &str, record: Value, owner: &Owner) -> Result<bool, Refusal> {
        let bytes = serde_json::to_vec(&record).unwrap_or_default();
        match self.store.create(key, bytes).await {
            Ok(_) => Ok(true),
            Err(StoreError::AlreadyExists(_)) => {
                let held = self.store.get(key).await.map_err(Refusal::Store)?;
                let holder = held
                    .and_then(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
                    .and_then(|r| Owner::from_record(&r));
                if holder.as_ref() == Some(owner) {
                    Ok(false)
                } else {
                    Err(Refusal::Allocated)
                }
            }
            Err(e) => Err(Refusal::Store(e)),
        }
    }

    async fn reserve_ip(&self, ip: IpAddr, owner: &Owner) -> Result<bool, Refusal> {
        let family = if ip.is_ipv4() { "IPv4" } else { "IPv6" };
        let record = json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "IPAddress",
            "metadata": {
                "name": ip.to_string(),
                "uid": new_uid(),
                "creationTimestamp": now_rfc3339(),
                "labels": {
                    "ipaddress.kubernetes.io/ip-family": family,
                    "ipaddress.kubernetes.io/managed-by": "ipallocator.k8s.io",
                },
            },
            "spec": {"parentRef": owner.parent_ref()},
        });
        self.reserve(&ip_key(ip), record, owner).await
    }

    async fn reserve_port(&self, port: i32, owner: &Owner) -> Result<bool, Refusal> {
        let record = json!({
            "metadata": {"name": port.to_string(), "creationTimestamp": now_rfc3339()},
            "spec": {"parentRef": owner.parent_ref()},
        });
        self.reserve(&port_key(port), record, owner).await
    }

    async fn used_keys(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let listed = self
            .store
            .list(&ListOptions {
                prefix: prefix.to_string(),
                ..Default::default()
            })
            .await?;
        Ok(listed
            .items
            .into_iter()
            .map(|kv| kv.key[prefix.len()..].to_string())
            .collect())
    }

    /// Any free address: dynamic allocations start above a low band kept for static
    /// requests (upstream's rule: 1/16 of the range, at least 16, at most 256), wrapping.
    async fn any_ip(&self, owner: &Owner, dry_run: bool) -> Result<IpAddr, ApiError> {
        let cidr = self.ranges.cluster_ip_range;
        let mut used: BTreeSet<IpAddr> = self
            .used_keys(IP_PREFIX)
            .await
            .map_err(|e| backend(&e))?
            .iter()
            .filter_map(|ip| ip.parse().ok())
            .collect();
        let size = cidr.size();
        let usable = if cidr.base.is_ipv4() {
            size.saturating_sub(2)
        } else {
            size.saturating_sub(1)
        };
        let band = (size / 16).clamp(16, 256);
        for _ in 0..64 {
            let r = u128::from(random_u64());
            let start = if usable > band {
                band + r % (usable - band)
            } else {
                r % usable.max(1)
            };
            let Some(ip) = cidr.free_ip(&used, start) else {
                break;
            };
            if dry_run {
                return Ok(ip);
            }
            match self.reserve_ip(ip, owner).await {
                Ok(_) => return Ok(ip),
                Err(Refusal::Allocated) => {
                    used.insert(ip);
                }
                Err(Refusal::Store(e)) => return Err(backend(&e)),
            }
        }
        Err(internal("failed to allocate a serviceIP: range is full"))
    }

    async fn any_port(&self, owner: &Owner, dry_run: bool) -> Result<i32, String> {
        let range = self.ranges.node_port_range;
        let mut used: BTreeSet<i32> = self
            .used_keys(NODE_PORT_PREFIX)
            .await
            .map_err(|e| e.to_string())?
            .iter()
            .filter_map(|p| p.parse().ok())
            .collect();
        let size = u64::try_from(range.1 - range.0 + 1).unwrap_or(1).max(1);
        for _ in 0..64 {
            let start = range.0 + i32::try_from(random_u64() % size).unwrap_or(0);
            let Some(port) = free_port(range, &used, start) else {
                break;
            };
            if dry_run {
                return Ok(port);
            }
            match self.reserve_port(port, owner).await {
                Ok(_) => return Ok(port),
                Err(Refusal::Allocated) => {
                    used.insert(port);
                }
                Err(Refusal::Store(e)) => return Err(e.to_string()),
            }
        }
        Err("range is full".into())
    }

    async fn specific_port(
        &self,
        port: i32,
        owner: &Owner,
        dry_run: bool,
        reserved: &mut Reserved,
    ) -> Result<(), String> {
        let (lo, hi) = self.ranges.node_port_range;
        if !(lo..=hi).contains(&port) {
            return Err(format!(
                "provided port is not in the valid range. The range of valid ports is {lo}-{hi}"
            ));
        }
        if dry_run {
            return match self.store.get(&port_key(port)).await {
                Ok(None) => Ok(()),
                Ok(Some(_)) => Err("provided port is already allocated".into()),
                Err(e) => Err(e.to_string()),
            };
        }
        match self.reserve_port(port, owner).await {
            Ok(true) => {
                reserved.ports.push(port);
                Ok(())
            }
            Ok(false) => Ok(()),
            Err(Refusal::Allocated) => Err("provided port is already allocated".into()),
            Err(Refusal::Store(e)) => Err(e.to_string()),
        }
    }

    /// Reserves what `svc` needs that `old` (the stored object, on update) did not hold, and
    /// writes the allocated values into `svc`. On error nothing stays reserved.
    pub async fn allocate(
        &self,
        svc: &mut Value,
        old: Option<&Value>,
        dry_run: bool,
    ) -> Result<Reserved, ApiError> {
        let mut reserved = Reserved::default();
        match self.allocate_into(svc, old, dry_run, &mut reserved).await {
            Ok(()) => Ok(reserved),
            Err(e) => {
                self.release_reserved(&reserved, &Owner::of(svc)).await;
                Err(e)
            }
        }
    }

    async fn allocate_into(
        &self,
        svc: &mut Value,
        old: Option<&Value>,
        dry_run: bool,
        reserved: &mut Reserved,
    ) -> Result<(), ApiError> {
        let owner = Owner::of(svc);
        let old_ips = old.map(held_cluster_ips).unwrap_or_default();
        let old_ports = old.map(held_node_ports).unwrap_or_default();
        match cluster_ip_request(svc) {
            ClusterIpRequest::NotNeeded => {}
            ClusterIpRequest::Any => {
                let ip = self.any_ip(&owner, dry_run).await?;
                if !dry_run {
                    reserved.ips.push(ip);
                }
                assign_cluster_ip(svc, &ip.to_string());
            }
            ClusterIpRequest::Specific(text) if !old_ips.contains(&text) => {
                let Ok(ip) = text.parse::<IpAddr>() else {
                    return Ok(()); // validation reports it
                };
                let cidr = self.ranges.cluster_ip_range;
                if !cidr.contains(ip) {
                    let detail = format!(
                        "the provided IP ({ip}) is not in the valid range. The range of valid IPs is {}/{}",
                        cidr.base, cidr.bits
                    );
                    return Err(ip_error(svc, &text, &detail));
                }
                let taken = if dry_run {
                    matches!(self.store.get(&ip_key(ip)).await, Ok(Some(_)))
                } else {
                    match self.reserve_ip(ip, &owner).await {
                        Ok(new) => {
                            if new {
                                reserved.ips.push(ip);
                            }
                            false
                        }
                        Err(Refusal::Allocated) => true,
                        Err(Refusal::Store(e)) => return Err(backend(&e)),
                    }
                };
                if taken {
                    return Err(ip_error(svc, &text, "provided IP is already allocated"));
                }
            }
            ClusterIpRequest::Specific(_) => {}
        }
        let mut seen = BTreeSet::new();
        for (index, request) in node_port_requests(svc) {
            match request {
                None => {
                    let port = self
                        .any_port(&owner, dry_run)
                        .await
                        .map_err(|e| internal(&format!("failed to allocate a nodePort: {e}")))?;
                    if !dry_run {
                        reserved.ports.push(port);
                    }
                    seen.insert(port);
                    assign_node_port(svc, index, port);
                }
                Some(port) if old_ports.contains(&port) || !seen.insert(port) => {}
                Some(port) => {
                    self.specific_port(port, &owner, dry_run, reserved)
                        .await
                        .map_err(|e| {
                            port_error(svc, &format!("spec.ports[{index}].nodePort"), port, &e)
                        })?;
                }
            }
        }
        let hc = svc
            .pointer("/spec/healthCheckNodePort")
            .and_then(Value::as_i64)
            .and_then(|p| i32::try_from(p).ok())
            .unwrap_or(0);
        if needs_health_check_node_port(svc) {
            let port = self.any_port(&owner, dry_run).await.map_err(|e| {
                internal(&format!("failed to allocate a HealthCheck NodePort 0: {e}"))
            })?;
            if !dry_run {
                reserved.ports.push(port);
            }
            svc["spec"]["healthCheckNodePort"] = json!(port);
        } else if hc != 0 && !old_ports.contains(&hc) && !seen.contains(&hc) {
            self.specific_port(hc, &owner, dry_run, reserved)
                .await
                .map_err(|e| {
                    internal(&format!(
                        "failed to allocate requested HealthCheck NodePort {hc}: {e}"
                    ))
                })?;
        }
        Ok(())
    }

    async fn release_key(&self, key: &str, owner: &Owner) {
        let Ok(Some(kv)) = self.store.get(key).await else {
            return;
        };
        let holder = serde_json::from_slice::<Value>(&kv.value)
            .ok()
            .and_then(|r| Owner::from_record(&r));
        if holder.as_ref() == Some(owner)
            && let Err(e) = self.store.delete(key, Some(kv.mod_revision)).await
        {
            // The repair pass reclaims it later.
            tracing::warn!(key, error = %e, "releasing a service reservation");
        }
    }

    /// Releases what a failed write reserved.
    pub async fn release_reserved(&self, reserved: &Reserved, owner: &Owner) {
        for ip in &reserved.ips {
            self.release_key(&ip_key(*ip), owner).await;
        }
        for port in &reserved.ports {
            self.release_key(&port_key(*port), owner).await;
        }
    }

    /// Releases what `old` held and `new` (`None`: deleted) does not.
    pub async fn release_dropped(&self, old: &Value, new: Option<&Value>) {
        let owner = Owner::of(old);
        let new_ips = new.map(held_cluster_ips).unwrap_or_default();
        let new_ports = new.map(held_node_ports).unwrap_or_default();
        for ip in held_cluster_ips(old).difference(&new_ips) {
            if let Ok(ip) = ip.parse::<IpAddr>() {
                self.release_key(&ip_key(ip), &owner).await;
            }
        }
        for port in held_node_ports(old).difference(&new_ports) {
            self.release_key(&port_key(*port), &owner).await;
        }
    }

    /// One repair pass at `now` (seconds since the epoch): deletes reservations no stored
    /// Service holds that are older than `grace`, and restores the missing reservations of
    /// stored Services.
    pub async fn repair_at(&self, grace: Duration, now: i64) -> Result<RepairReport, StoreError> {
        let list = |prefix: &str| ListOptions {
            prefix: prefix.to_string(),
            ..Default::default()
        };
        // Reservations first: one made after this list is not judged by this pass.
        let ips = self.store.list(&list(IP_PREFIX)).await?.items;
        let ports = self.store.list(&list(NODE_PORT_PREFIX)).await?.items;
        let services = self.store.list(&list(SERVICE_PREFIX)).await?.items;
        let mut held_ips: BTreeMap<String, Owner> = BTreeMap::new();
        let mut held_ports: BTreeMap<i32, Owner> = BTreeMap::new();
        for kv in &services {
            let Ok(svc) = serde_json::from_slice::<Value>(&kv.value) else {
                continue;
            };
            let owner = Owner::of(&svc);
            for ip in held_cluster_ips(&svc) {
                held_ips.insert(ip, owner.clone());
            }
            for port in held_node_ports(&svc) {
                held_ports.insert(port, owner.clone());
            }
        }
        let grace = i64::try_from(grace.as_secs()).unwrap_or(i64::MAX);
        let mut report = RepairReport::default();
        for kv in &ips {
            let ip = &kv.key[IP_PREFIX.len()..];
            let record: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
            if !held_ips.contains_key(ip)
                && record_age(&record, now) >= grace
                && self
                    .store
                    .delete(&kv.key, Some(kv.mod_revision))
                    .await
                    .is_ok()
            {
                report.released_ips.push(ip.to_string());
            }
        }
        for kv in &ports {
            let Ok(port) = kv.key[NODE_PORT_PREFIX.len()..].parse::<i32>() else {
                continue;
            };
            let record: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
            if !held_ports.contains_key(&port)
                && record_age(&record, now) >= grace
                && self
                    .store
                    .delete(&kv.key, Some(kv.mod_revision))
                    .await
                    .is_ok()
            {
                report.released_ports.push(port);
            }
        }
        for (ip, owner) in &held_ips {
            if let Ok(ip) = ip.parse::<IpAddr>()
                && let Ok(true) = self.reserve_ip(ip, owner).await
            {
                report.restored += 1;
            }
        }
        for (port, owner) in &held_ports {
            if let Ok(true) = self.reserve_port(*port, owner).await {
                report.restored += 1;
            }
        }
        Ok(report)
    }

    /// One repair pass now.
    pub async fn repair(&self, grace: Duration) -> Result<RepairReport, StoreError> {
        self.repair_at(grace, unix_now()).await
    }

    /// Repairs every [`REPAIR_INTERVAL`] until `stop` is cancelled.
    pub async fn repair_loop(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(REPAIR_INTERVAL) => {}
            }
            match self.repair(REPAIR_GRACE).await {
                Ok(report) if report != RepairReport::default() => {
                    tracing::info!(?report, "repaired service allocations");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "repairing service allocations"),
            }
        }
    }
}

#[cfg(test)]
#[path = "allocator_tests.rs"]
mod tests;
