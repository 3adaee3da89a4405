//! [`IpvsDataplane`]: the IPVS proxy mode, a [`Dataplane`] over three kernel interfaces: the
//! `kube-ipvs0` dummy interface and its Service addresses ([`super::addresses`]), the IPVS
//! virtual services and real servers ([`IpvsApi`], planned by [`super::plan`]), and the
//! `ip kwk-ipvs` nf_tables table for masquerading, hairpin and rejection ([`super::filter`]);
//! plus the sysctls upstream's IPVS mode sets (`super::sysctls`).
//!
//! Removed TCP real servers drain ([`super::graceful`]): each sync plans as if they were to be
//! deleted, then makes those deletions graceful (weight 0 and the [`Draining`] queue, unless the
//! kernel's counters show them idle); [`Dataplane::maintain`] deletes queued ones whose
//! connections have ended, every [`IpvsDataplaneOptions::drain_check_interval`]. A full sync
//! reads the counters with its listing, an incremental one lists the services it removes TCP
//! real servers from (the size of the change).
//!
//! A full sync lists what is there and plans against it (addresses, virtual services), and
//! rewrites the nft table in one transaction. An incremental sync reads nothing back: it plans
//! the touched front ends only, from the old and new front ends of the [`RuleDiff`] (costs the
//! size of the change); if the kernel refuses it (someone removed our objects), it falls back to
//! a full sync and reports `repaired`.
//!
//! Atomicity: the nft table changes in one transaction; IPVS and rtnetlink have no
//! transactions, so each virtual service, destination and address change is its own unit, and
//! a failed sync leaves the earlier ones applied (the next, full, sync converges).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::addresses::{RtnlServiceAddresses, ServiceAddressApi, plan_addresses};
use super::filter::{FAMILY, FrontEndDelta, TABLE, full_batch, hairpin_counts, incremental_batch};
use super::graceful::{
    Draining, GracefulPlan, RealServer, drain_removals, plan_drained, services_to_count,
};
use super::plan::{DesiredService, IpvsAction, desired_service};
use super::sysctls::IpvsSysctls;
use super::{
    Connections, Destination, IpvsApi, IpvsError, IpvsOptions, IpvsSocket, ServiceKey,
    VirtualService, desired_services, plan_changes,
};
use crate::dataplane::{Dataplane, DataplaneError, SyncReport};
use crate::model::{FrontEndKey, FrontEndKind, Protocol, RuleDiff, RuleSet};
use crate::nft::{Batch, NftApi, NftError, NftSocket};

const MODE: &str = "ipvs";

/// kube-proxy's default masquerade mark bit (`--iptables-masquerade-bit=14`).
pub const DEFAULT_MASQUERADE_BIT: u32 = 1 << 14;

/// The IPVS mode's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpvsDataplaneOptions {
    /// Scheduler, its flags, and `--ipvs-exclude-cidrs`.
    pub ipvs: IpvsOptions,
    /// The packet mark bit that asks for masquerading.
    pub masquerade_bit: u32,
    /// Where the namespace's sysctls are (`/proc/sys`; a directory of files in tests).
    pub sysctl_root: PathBuf,
    /// `ipvs.strictARP`: also set `arp_ignore=1` and `arp_announce=2`.
    pub strict_arp: bool,
    /// How often draining real servers' connection counters are checked (upstream: 1 min).
    pub drain_check_interval: Duration,
}

/// Upstream's `rsCheckDeleteInterval`.
pub const DEFAULT_DRAIN_CHECK_INTERVAL: Duration = Duration::from_secs(60);

impl Default for IpvsDataplaneOptions {
    fn default() -> Self {
        Self {
            ipvs: IpvsOptions::default(),
            masquerade_bit: DEFAULT_MASQUERADE_BIT,
            sysctl_root: PathBuf::from("/proc/sys"),
            strict_arp: false,
            drain_check_interval: DEFAULT_DRAIN_CHECK_INTERVAL,
        }
    }
}

/// The IPVS mode's failures.
#[derive(Debug, thiserror::Error)]
pub enum IpvsModeError {
    #[error("sysctl {path}: {source} (is the ip_vs module loaded?)")]
    SysctlMissing {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("sysctl {path}: {source}")]
    Sysctl {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{what} on the dummy interface: {source}")]
    Addresses {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Ipvs(#[from] IpvsError),
    #[error("table ip {TABLE}: {0}")]
    Nftables(#[from] NftError),
}

impl IpvsModeError {
    /// The kernel did not have an object an incremental sync expected (or had one it did not):
    /// someone changed our state, a full sync repairs it.
    fn is_drift(&self) -> bool {
        let errno = match self {
            IpvsModeError::Ipvs(IpvsError::Rejected { source, .. })
            | IpvsModeError::Nftables(NftError::Rejected { source, .. })
            | IpvsModeError::Addresses { source, .. } => source.raw_os_error(),
            _ => None,
        };
        matches!(
            errno,
            Some(nix::libc::ENOENT | nix::libc::ESRCH | nix::libc::EEXIST | nix::libc::ENODEV)
        )
    }
}

fn addresses_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> IpvsModeError {
    let what = what.into();
    move |source| IpvsModeError::Addresses { what, source }
}

/// Front ends whose address lives on `kube-ipvs0` (NodePorts use the node's own addresses).
fn on_dummy(kind: FrontEndKind) -> bool {
    !matches!(kind, FrontEndKind::NodePort)
}

/// The addresses `rules` puts on the dummy interface.
pub fn dummy_addresses(rules: &RuleSet) -> BTreeSet<IpAddr> {
    rules
        .front_ends
        .iter()
        .filter(|(_, fe)| on_dummy(fe.kind))
        .map(|(k, _)| k.ip)
        .collect()
}

/// Whether any front end of `rules` still needs `ip` on the dummy interface.
fn dummy_address_used(rules: &RuleSet, ip: IpAddr) -> bool {
    let lo = FrontEndKey::new(ip, Protocol::Tcp, 0);
    let hi = FrontEndKey::new(ip, Protocol::Sctp, u16::MAX);
    rules
        .front_ends
        .range(lo..=hi)
        .any(|(_, fe)| on_dummy(fe.kind))
}

/// The IPVS proxy mode. Generic over its kernel interfaces so tests run it on
/// [`super::MemoryIpvs`], [`crate::nft::MemoryNft`] and
/// [`super::addresses::MemoryServiceAddresses`].
#[derive(Debug)]
pub struct IpvsDataplane<I, N, A> {
    ipvs: I,
    nft: N,
    addresses: A,
    options: IpvsDataplaneOptions,
    /// References to each IPv4 endpoint, as in the last applied rule set.
    hairpins: BTreeMap<Ipv4Addr, usize>,
    /// The dummy interface's index, known after a full sync.
    link: Option<u32>,
    /// The sysctls under `options.sysctl_root`, opened when built: they stay the building
    /// thread's namespace's.
    sysctls: IpvsSysctls,
    /// TCP real servers at weight 0 waiting for their connections to end.
    draining: Draining,
    /// When the draining real servers are checked next (set by the first
    /// [`Dataplane::maintain`] that finds the queue non-empty).
    next_check: Option<Instant>,
}

impl IpvsDataplane<IpvsSocket, NftSocket, RtnlServiceAddresses> {
    /// Opens the three kernel sockets and the sysctls in the calling thread's network namespace.
    pub fn open(options: IpvsDataplaneOptions) -> Result<Self, IpvsModeError> {
        Ok(Self::new(
            IpvsSocket::open()?,
            NftSocket::open()?,
            RtnlServiceAddresses::open().map_err(addresses_error("opening rtnetlink"))?,
            options,
        ))
    }
}

impl<I, N, A> IpvsDataplane<I, N, A>
where
    I: IpvsApi,
    N: NftApi,
    A: ServiceAddressApi,
{
    pub fn new(ipvs: I, nft: N, addresses: A, options: IpvsDataplaneOptions) -> Self {
        let sysctls = IpvsSysctls::open(&options.sysctl_root, options.strict_arp);
        Self {
            ipvs,
            nft,
            addresses,
            options,
            hairpins: BTreeMap::new(),
            link: None,
            sysctls,
            draining: Draining::default(),
            next_check: None,
        }
    }

    pub fn ipvs(&self) -> &I {
        &self.ipvs
    }

    pub fn nft(&self) -> &N {
        &self.nft
    }

    pub fn addresses(&self) -> &A {
        &self.addresses
    }

    /// The TCP real servers draining at weight 0.
    pub fn draining(&self) -> &Draining {
        &self.draining
    }

    /// Plans `actions` gracefully and applies them; the queue changes only when the kernel
    /// took them all (a failure makes the next sync full, which rebuilds it from the listing).
    fn apply_gracefully(
        &mut self,
        actions: Vec<IpvsAction>,
        desired: &BTreeMap<ServiceKey, DesiredService>,
        connections: &BTreeMap<RealServer, Connections>,
    ) -> Result<usize, IpvsModeError> {
        let GracefulPlan { actions, draining } =
            drain_removals(actions, desired, &self.draining, connections);
        self.ipvs.apply(&actions)?;
        self.draining = draining;
        Ok(actions.len())
    }

    /// Every virtual service with its destinations, and the destinations' counters.
    #[allow(
        clippy::type_complexity,
        reason = "a listing and its counters, used once"
    )]
    fn list_counted(
        &self,
    ) -> Result<
        (
            Vec<(VirtualService, Vec<Destination>)>,
            BTreeMap<RealServer, Connections>,
        ),
        IpvsError,
    > {
        let mut listed = Vec::new();
        let mut connections = BTreeMap::new();
        for service in self.ipvs.list_services()? {
            let dests = self.ipvs.list_destinations_counted(&service.key)?;
            connections.extend(
                dests
                    .iter()
                    .map(|(d, c)| (RealServer::new(service.key, d), *c)),
            );
            listed.push((service, dests.into_iter().map(|(d, _)| d).collect()));
        }
        Ok((listed, connections))
    }

    /// The periodic check: deletes the draining real servers whose connections have ended.
    /// Returns the real servers deleted.
    pub fn check_draining(&mut self) -> Result<usize, IpvsModeError> {
        let mut listed = BTreeMap::new();
        for service in self.draining.services() {
            listed.insert(service, self.ipvs.list_destinations_counted(&service)?);
        }
        let GracefulPlan { actions, draining } = plan_drained(&self.draining, &listed);
        self.ipvs.apply(&actions)?;
        if !actions.is_empty() || draining.len() != self.draining.len() {
            tracing::debug!(
                deleted = actions.len(),
                draining = draining.len(),
                "ipvs: drained real servers checked"
            );
        }
        self.draining = draining;
        Ok(actions.len())
    }

    fn full_sync(&mut self, rules: &RuleSet) -> Result<usize, IpvsModeError> {
        self.sysctls.ensure()?;
        let mut objects = 0;
        let index = self
            .addresses
            .ensure_link()
            .map_err(addresses_error("creating the interface"))?;
        self.link = Some(index);
        let listed = self
            .addresses
            .list_addresses(index)
            .map_err(addresses_error("listing addresses"))?;
        let (add, del) = plan_addresses(&dummy_addresses(rules), &listed);
        for ip in &add {
            self.addresses
                .add_address(index, *ip)
                .map_err(addresses_error(format!("adding {ip}")))?;
        }
        let desired = desired_services(rules, &self.options.ipvs);
        let (listed, connections) = self.list_counted()?;
        self.draining.retain_listed(&connections);
        let actions = plan_changes(&desired, &listed, &self.options.ipvs.exclude);
        let applied = self.apply_gracefully(actions, &desired, &connections)?;
        for ip in &del {
            self.addresses
                .del_address(index, *ip)
                .map_err(addresses_error(format!("deleting {ip}")))?;
        }
        self.hairpins = hairpin_counts(rules);
        let batch = full_batch(rules, &self.hairpins, self.options.masquerade_bit);
        self.nft.apply(&batch)?;
        objects += add.len() + del.len() + applied + batch.len();
        Ok(objects)
    }

    fn incremental_sync(
        &mut self,
        rules: &RuleSet,
        change: &RuleDiff<'_>,
    ) -> Result<usize, IpvsModeError> {
        let Some(index) = self.link else {
            return Err(IpvsModeError::Addresses {
                what: "incremental sync before a full one".into(),
                source: io::Error::from_raw_os_error(nix::libc::ENODEV),
            });
        };
        let mut deltas: Vec<FrontEndDelta<'_>> = Vec::new();
        deltas.extend(change.added.iter().map(|(k, fe)| (*k, None, Some(*fe))));
        deltas.extend(change.removed.iter().map(|(k, fe)| (*k, Some(*fe), None)));
        deltas.extend(
            change
                .changed
                .iter()
                .map(|c| (c.key, Some(c.old), Some(c.new))),
        );
        let mut objects = 0;
        let mut stale_addresses = Vec::new();
        for (key, old, new) in &deltas {
            let was = old.is_some_and(|fe| on_dummy(fe.kind));
            let is = new.is_some_and(|fe| on_dummy(fe.kind));
            if is && !was {
                self.addresses
                    .add_address(index, key.ip)
                    .map_err(addresses_error(format!("adding {}", key.ip)))?;
                objects += 1;
            } else if was && !is && !dummy_address_used(rules, key.ip) {
                stale_addresses.push(key.ip);
            }
        }
        let desired: BTreeMap<ServiceKey, DesiredService> = deltas
            .iter()
            .filter_map(|(key, _, new)| new.map(|fe| desired_service(key, fe, &self.options.ipvs)))
            .map(|d| (d.service.key, d))
            .collect();
        let listed: Vec<(VirtualService, Vec<Destination>)> = deltas
            .iter()
            .filter_map(|(key, old, _)| {
                old.map(|fe| {
                    let d = desired_service(key, fe, &self.options.ipvs);
                    (d.service, d.destinations.into_values().collect())
                })
            })
            .collect();
        let actions = plan_changes(&desired, &listed, &[]);
        let mut connections = BTreeMap::new();
        for service in services_to_count(&actions, &self.draining) {
            connections.extend(
                self.ipvs
                    .list_destinations_counted(&service)?
                    .iter()
                    .map(|(d, c)| (RealServer::new(service, d), *c)),
            );
        }
        objects += self.apply_gracefully(actions, &desired, &connections)?;
        stale_addresses.sort();
        stale_addresses.dedup();
        for ip in &stale_addresses {
            self.addresses
                .del_address(index, *ip)
                .map_err(addresses_error(format!("deleting {ip}")))?;
        }
        objects += stale_addresses.len();
        let batch = incremental_batch(&deltas, &mut self.hairpins);
        if !batch.is_empty() {
            self.nft.apply(&batch)?;
            objects += batch.len();
        }
        Ok(objects)
    }

    fn cleanup_all(&mut self) -> Result<(), IpvsModeError> {
        let listed = self.ipvs.list_all()?;
        let actions = plan_changes(&BTreeMap::new(), &listed, &self.options.ipvs.exclude);
        self.ipvs.apply(&actions)?;
        self.draining = Draining::default();
        self.next_check = None;
        if self.nft.list_tables(FAMILY)?.iter().any(|t| t == TABLE) {
            let mut batch = Batch::new();
            batch.delete_table(FAMILY, TABLE);
            self.nft.apply(&batch)?;
        }
        self.addresses
            .delete_link()
            .map_err(addresses_error("deleting the interface"))?;
        self.link = None;
        self.hairpins.clear();
        Ok(())
    }
}

impl<I, N, A> Dataplane for IpvsDataplane<I, N, A>
where
    I: IpvsApi + Send,
    N: NftApi + Send,
    A: ServiceAddressApi,
{
    fn mode(&self) -> &'static str {
        MODE
    }

    fn sync(
        &mut self,
        rules: &RuleSet,
        change: Option<&RuleDiff<'_>>,
    ) -> Result<SyncReport, DataplaneError> {
        let fail = |e: IpvsModeError| DataplaneError::mode(MODE, e);
        match change {
            Some(change) if !change.node_globals_changed && self.link.is_some() => {
                match self.incremental_sync(rules, change) {
                    Ok(objects) => Ok(SyncReport {
                        full: false,
                        repaired: false,
                        objects,
                    }),
                    Err(e) if e.is_drift() => {
                        tracing::warn!(error = %e, "ipvs: incremental sync found drift, resyncing fully");
                        let objects = self.full_sync(rules).map_err(fail)?;
                        Ok(SyncReport {
                            full: true,
                            repaired: true,
                            objects,
                        })
                    }
                    Err(e) => Err(fail(e)),
                }
            }
            _ => {
                let objects = self.full_sync(rules).map_err(fail)?;
                Ok(SyncReport {
                    full: true,
                    repaired: false,
                    objects,
                })
            }
        }
    }

    fn cleanup(&mut self) -> Result<(), DataplaneError> {
        self.cleanup_all()
            .map_err(|e| DataplaneError::mode(MODE, e))
    }

    /// Schedules a check of the draining real servers one interval after the queue became
    /// non-empty, and runs it when due (then again every interval while any remain).
    fn maintain(&mut self, now: Instant) -> Result<usize, DataplaneError> {
        if self.draining.is_empty() {
            self.next_check = None;
            return Ok(0);
        }
        let interval = self.options.drain_check_interval;
        match self.next_check {
            Some(at) if now >= at => {}
            Some(_) => return Ok(0),
            None => {
                self.next_check = Some(now + interval);
                return Ok(0);
            }
        }
        self.next_check = Some(now + interval);
        let deleted = self
            .check_draining()
            .map_err(|e| DataplaneError::mode(MODE, e))?;
        if self.draining.is_empty() {
            self.next_check = None;
        }
        Ok(deleted)
    }

    fn next_maintenance(&self) -> Option<Instant> {
        self.next_check
    }
}
