//! One CNI invocation: dispatches `CNI_COMMAND` (a `loopback` network to [`crate::loopback`]),
//! executes the planned steps through netlink and the allocation store, and renders the result
//! or error JSON for stdout.

use std::fs::File;
use std::io::ErrorKind;
use std::os::fd::AsFd as _;
use std::path::Path;

use serde::Serialize;

use crate::config::{CniEnv, Command, NetConf, Network, SUPPORTED_VERSIONS};
use crate::error::CniError;
use crate::hostport::{self, HostPortRecord};
use crate::ipv4::Ipv4Cidr;
use crate::nat::NatTable;
use crate::netlink::{LinkState, Rtnl, VethPeer, format_mac, is_exists};
use crate::netns;
use crate::plan::{
    self, BridgeStep, LinkStep, ObservedBridge, ObservedCheck, ObservedPod, host_veth_name,
};
use crate::result::{CniResult, Interface, IpConfig, Route};
use crate::store::IpamStore;
use kwk_netdp::nft::NftSocket;

/// What the process prints and whether it exits 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub stdout: String,
    pub success: bool,
}

/// The newest version we speak: used for replies when the input names none.
const LATEST: &str = "1.1.0";

/// Runs one invocation: `get_env` reads `CNI_*` variables, `stdin` is the network config.
pub fn run(get_env: impl Fn(&str) -> Option<String>, stdin: &[u8]) -> Outcome {
    match dispatch(get_env, stdin) {
        Ok(stdout) => Outcome {
            stdout,
            success: true,
        },
        Err(err) => {
            // Parsed again only here: the success path has no use for a generic JSON tree.
            let reply_version = serde_json::from_slice::<serde_json::Value>(stdin)
                .ok()
                .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_owned))
                .filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()))
                .unwrap_or_else(|| LATEST.to_owned());
            Outcome {
                stdout: serde_json::to_string(&err.to_reply(&reply_version)).unwrap_or_default(),
                success: false,
            }
        }
    }
}

fn dispatch(get_env: impl Fn(&str) -> Option<String>, stdin: &[u8]) -> Result<String, CniError> {
    let env = CniEnv::from_lookup(get_env)?;
    if env.command == Command::Version {
        return version(stdin);
    }
    let conf = NetConf::parse(stdin)?;
    if conf.plugin_type == crate::loopback::TYPE {
        return crate::loopback::run(&env, &conf, stdin);
    }
    match env.command {
        Command::Add => add(&env, &conf.network()?),
        Command::Del => del(&env, &conf.network()?).map(|()| String::new()),
        Command::Check => check(&env, &conf).map(|()| String::new()),
        Command::Gc => gc(&conf).map(|()| String::new()),
        Command::Status => status(&conf).map(|()| String::new()),
        Command::Version => version(stdin),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct VersionReply<'a> {
    cni_version: &'a str,
    supported_versions: &'a [&'a str],
}

fn version(stdin: &[u8]) -> Result<String, CniError> {
    let asked = serde_json::from_slice::<serde_json::Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| LATEST.to_owned());
    to_json(&VersionReply {
        cni_version: &asked,
        supported_versions: &SUPPORTED_VERSIONS,
    })
}

fn to_json(value: &impl Serialize) -> Result<String, CniError> {
    serde_json::to_string(value).map_err(|err| CniError::Decode(format!("encoding reply: {err}")))
}

fn open_netns(path: &str) -> Result<File, CniError> {
    netns::open(Path::new(path)).map_err(|err| match err.kind() {
        ErrorKind::NotFound => CniError::UnknownContainer(format!("netns {path} does not exist")),
        _ => CniError::io(format!("opening netns {path}"), err),
    })
}

fn netlink_in(ns: &File, path: &str) -> Result<Rtnl, CniError> {
    netns::with_netns(ns, Rtnl::new)
        .map_err(|err| {
            CniError::UnknownContainer(format!("{path} is not a network namespace: {err}"))
        })?
        .map_err(|err| CniError::netlink("socket in the pod namespace", err))
}

fn nl<T>(what: &str, result: std::io::Result<T>) -> Result<T, CniError> {
    result.map_err(|err| CniError::netlink(what, err))
}

fn add(env: &CniEnv, net: &Network) -> Result<String, CniError> {
    let ns = open_netns(&env.netns)?;
    let mut pod_nl = netlink_in(&ns, &env.netns)?;
    let ip =
        IpamStore::lock(&net.data_dir)?.allocate(&net.range, &env.container_id, &env.ifname)?;
    let pod_cidr = Ipv4Cidr::new(ip, net.range.subnet.prefix_len())
        .ok_or_else(|| CniError::InvalidConfig("subnet prefix".into()))?;
    match add_links(env, net, &ns, &mut pod_nl, pod_cidr)
        .and_then(|result| add_nat(env, net, ip).map(|()| result))
    {
        Ok(result) => to_json(&result.for_version(&net.cni_version)),
        Err(err) => {
            // Leave nothing of ours behind: the address, and our veth pair (through its host end,
            // never `CNI_IFNAME` itself, which may belong to someone else).
            if let Ok(store) = IpamStore::lock(&net.data_dir) {
                let _ = store.release_owner(&env.container_id, &env.ifname);
                if !matches!(err, CniError::HostPortTaken(_)) {
                    let _ = del_nat_locked(env, &net.data_dir);
                }
            }
            if let Ok(mut host_nl) = Rtnl::new() {
                let _ = host_nl.delete_link(&host_veth_name(&env.container_id, &env.ifname));
            }
            Err(err)
        }
    }
}

fn nft_socket() -> Result<NatTable<NftSocket>, CniError> {
    NftSocket::open()
        .map(NatTable::new)
        .map_err(|err| CniError::nft("opening the nf_tables socket", err))
}

/// ADD's NAT part: records this attachment's hostPorts (refusing ones another attachment
/// holds), makes sure the node's `ip kwk-cni` table is current, and syncs its maps. Nothing
/// at all without `ipMasq`, mappings, or mappings left from an earlier ADD.
fn add_nat(env: &CniEnv, net: &Network, pod_ip: std::net::Ipv4Addr) -> Result<(), CniError> {
    let dir = &net.data_dir;
    let _store = IpamStore::lock(dir)?;
    let mappings_changed = if net.port_mappings.is_empty() {
        hostport::remove_record(dir, &env.container_id, &env.ifname)?
    } else {
        true
    };
    if !net.masquerade && !mappings_changed {
        return Ok(());
    }
    let mut records = None;
    if !net.port_mappings.is_empty() {
        let mine = HostPortRecord {
            container_id: env.container_id.clone(),
            ifname: env.ifname.clone(),
            pod_ip,
            mappings: net.port_mappings.clone(),
        };
        let mut all = hostport::read_records(dir)?;
        if let Some((mapping, holder)) = hostport::find_conflict(&mine, &all) {
            return Err(hostport::conflict_error(&mapping, holder));
        }
        hostport::write_record(dir, &mine)?;
        all.retain(|r| !r.held_by(&env.container_id, &env.ifname));
        all.push(mine);
        records = Some(all);
    }
    let load = |records: &Option<Vec<HostPortRecord>>| match records {
        Some(records) => Ok(records.clone()),
        None => hostport::read_records(dir),
    };
    let table = nft_socket()?;
    let rebuilt = table.ensure(&net.nat_params(), || load(&records))?;
    if !rebuilt && mappings_changed {
        table.sync_hostports(&load(&records)?)?;
    }
    Ok(())
}

/// DEL's NAT part (IPAM lock held): drops the attachment's record and its map elements.
fn del_nat_locked(env: &CniEnv, ipam_dir: &Path) -> Result<(), CniError> {
    if !hostport::remove_record(ipam_dir, &env.container_id, &env.ifname)? {
        return Ok(());
    }
    nft_socket()?.sync_hostports(&hostport::read_records(ipam_dir)?)
}

/// CHECK's NAT part: the table is current and the attachment's mappings are in its maps.
fn check_nat(env: &CniEnv, net: &Network) -> Result<(), CniError> {
    let records = {
        let _store = IpamStore::lock(&net.data_dir)?;
        hostport::read_records(&net.data_dir)?
    };
    let mine = records
        .into_iter()
        .find(|r| r.held_by(&env.container_id, &env.ifname));
    let mut have = mine
        .as_ref()
        .map(|r| r.mappings.clone())
        .unwrap_or_default();
    let mut wanted = net.port_mappings.clone();
    wanted.sort_by_key(|m| (m.protocol, m.host_port, m.host_ip));
    have.sort_by_key(|m| (m.protocol, m.host_port, m.host_ip));
    if wanted != have {
        return Err(CniError::CheckFailed(format!(
            "hostPorts recorded for the container ({}) differ from runtimeConfig ({})",
            describe_all(&have),
            describe_all(&wanted)
        )));
    }
    if !net.masquerade && mine.is_none() {
        return Ok(());
    }
    let table = nft_socket()?;
    if table.ensure_would_rebuild(&net.nat_params())? {
        return Err(CniError::CheckFailed(
            "the ip kwk-cni table is missing or built for other parameters".into(),
        ));
    }
    if let Some(mine) = &mine {
        let missing = table.missing(mine)?;
        if !missing.is_empty() {
            return Err(CniError::CheckFailed(format!(
                "hostPorts not programmed: {}",
                describe_all(&missing)
            )));
        }
    }
    Ok(())
}

fn describe_all(mappings: &[hostport::PortMapping]) -> String {
    mappings
        .iter()
        .map(hostport::PortMapping::describe)
        .collect::<Vec<_>>()
        .join(", ")
}

fn observe_bridge(host: &mut Rtnl, name: &str) -> Result<Option<ObservedBridge>, CniError> {
    let Some(link) = nl("reading the bridge", host.link_by_name(name))? else {
        return Ok(None);
    };
    let addresses = nl("reading bridge addresses", host.addresses(link.index))?;
    Ok(Some(ObservedBridge { link, addresses }))
}

fn ensure_bridge(host: &mut Rtnl, net: &Network) -> Result<LinkState, CniError> {
    let gateway = net
        .is_gateway
        .then(|| Ipv4Cidr::new(net.range.gateway, net.range.subnet.prefix_len()))
        .flatten();
    let observed = observe_bridge(host, &net.bridge)?;
    let steps = plan::plan_bridge(&net.bridge, gateway, observed.as_ref())
        .map_err(|err| CniError::InvalidConfig(err.to_string()))?;
    let mut link = observed.map(|bridge| bridge.link);
    for step in steps {
        match step {
            BridgeStep::Create => match host.create_bridge(
                &net.bridge,
                net.mtu,
                plan::bridge_mac(&net.bridge, salt()),
            ) {
                // A concurrent ADD created it first: fine.
                Err(err) if !is_exists(&err) => {
                    return Err(CniError::netlink("creating the bridge", err));
                }
                _ => link = nl("reading the bridge", host.link_by_name(&net.bridge))?,
            },
            BridgeStep::SetUp => {
                if let Some(link) = &link {
                    nl("setting the bridge up", host.set_up(link.index))?;
                }
            }
            BridgeStep::AddAddress(cidr) => {
                if let Some(link) = &link {
                    nl(
                        "adding the gateway address",
                        host.replace_address(link.index, cidr),
                    )?;
                }
            }
        }
    }
    if net.is_gateway {
        enable_ip_forward()?;
    }
    link.ok_or_else(|| CniError::netlink("bridge vanished", ErrorKind::NotFound.into()))
}

/// `isGateway` routes for pods, so the host namespace forwards (as upstream's bridge plugin).
fn enable_ip_forward() -> Result<(), CniError> {
    const PATH: &str = "/proc/sys/net/ipv4/ip_forward";
    let current =
        crate::store::read_small(Path::new(PATH)).map_err(|err| CniError::io(PATH, err))?;
    if current.trim() != "1" {
        std::fs::write(PATH, "1").map_err(|err| CniError::io(PATH, err))?;
    }
    Ok(())
}

fn add_links(
    env: &CniEnv,
    net: &Network,
    ns: &File,
    pod_nl: &mut Rtnl,
    pod_cidr: Ipv4Cidr,
) -> Result<CniResult, CniError> {
    let mut host_nl = nl("socket in the host namespace", Rtnl::new())?;
    let bridge = ensure_bridge(&mut host_nl, net)?;
    let host_name = host_veth_name(&env.container_id, &env.ifname);
    let observed = ObservedPod {
        host_veth: nl("reading the host veth", host_nl.link_by_name(&host_name))?,
        pod_link: nl(
            "reading the pod interface",
            pod_nl.link_by_name(&env.ifname),
        )?,
    };
    let steps = plan::plan_pod_links(&env.ifname, bridge.index, &observed)
        .map_err(|err| CniError::InvalidConfig(err.to_string()))?;
    let mut bring_pod_up = false;
    let mut created_mac = None;
    let mut created_host = None;
    for step in steps {
        match step {
            LinkStep::DeleteHostVeth => {
                nl(
                    "deleting a stale host veth",
                    host_nl.delete_link(&host_name),
                )?;
            }
            LinkStep::CreateVeth => {
                let peer = VethPeer {
                    name: &env.ifname,
                    mac: plan::pod_mac(&env.container_id, &env.ifname, salt()),
                };
                created_host = nl(
                    "creating the veth pair",
                    host_nl.create_veth(&host_name, peer, ns.as_fd(), net.mtu, bridge.index),
                )?;
                created_mac = Some(peer.mac);
            }
            LinkStep::AttachHostToBridge => {
                if let Some(host) = &observed.host_veth {
                    nl(
                        "attaching the host veth",
                        host_nl.set_master(host.index, bridge.index),
                    )?;
                }
            }
            LinkStep::SetHostUp => {
                if let Some(host) = &observed.host_veth {
                    nl("setting the host veth up", host_nl.set_up(host.index))?;
                }
            }
            // Done below, once the (possibly new) pod interface's index is known.
            LinkStep::SetPodUp => bring_pod_up = true,
        }
    }
    let missing = |what: &str| CniError::netlink(what, ErrorKind::NotFound.into());
    // The new host end as the kernel echoed it, else read back (older kernels, or repairs).
    let host = match created_host {
        Some(host) => host,
        None => nl("reading the host veth", host_nl.link_by_name(&host_name))?
            .ok_or_else(|| missing("host veth vanished"))?,
    };
    // The pod end as just created (our MAC, the index the host end names as its peer) or as
    // observed before the repairs (which change neither): no second lookup in the pod namespace.
    let pod = match (created_mac, host.peer_index, &observed.pod_link) {
        (Some(mac), Some(index), _) => LinkState {
            index,
            mac: mac.to_vec(),
            ..LinkState::default()
        },
        (None, _, Some(pod)) => pod.clone(),
        _ => nl(
            "reading the pod interface",
            pod_nl.link_by_name(&env.ifname),
        )?
        .ok_or_else(|| missing("pod interface vanished"))?,
    };
    if bring_pod_up {
        nl("setting the pod interface up", pod_nl.set_up(pod.index))?;
    }
    if net.hairpin {
        nl(
            "setting hairpin mode",
            host_nl.set_hairpin(host.index, true),
        )?;
    }
    nl(
        "adding the pod address",
        pod_nl.replace_address(pod.index, pod_cidr),
    )?;
    for route in &net.routes {
        nl(
            "adding a pod route",
            pod_nl.replace_route(route.dst, route.gw, pod.index),
        )?;
    }
    // A bridge without a MAC of its own (not created by us) takes it from its ports: read it
    // again now that ours is attached.
    let bridge = if bridge.mac.iter().all(|byte| *byte == 0) {
        nl("reading the bridge", host_nl.link_by_name(&net.bridge))?.unwrap_or(bridge)
    } else {
        bridge
    };
    Ok(CniResult {
        interfaces: vec![
            Interface {
                name: bridge.name.clone(),
                mac: format_mac(&bridge.mac),
                ..Interface::default()
            },
            Interface {
                name: host.name.clone(),
                mac: format_mac(&host.mac),
                ..Interface::default()
            },
            Interface {
                name: env.ifname.clone(),
                mac: format_mac(&pod.mac),
                sandbox: env.netns.clone(),
                ..Interface::default()
            },
        ],
        ips: vec![IpConfig {
            address: pod_cidr.to_string(),
            gateway: Some(net.range.gateway.to_string()),
            interface: Some(2),
            version: None,
        }],
        routes: net
            .routes
            .iter()
            .map(|route| Route {
                dst: route.dst.to_string(),
                gw: Some(route.gw.to_string()),
            })
            .collect(),
        dns: net.dns.clone(),
        ..CniResult::default()
    })
}

/// Environment variable that turns the binary into the reaper of one retired link.
pub const REAP_ENV: &str = "KWK_CNI_REAP_LINK";

/// Releases the address and takes the veth pair off the network; everything already gone is
/// success.
///
/// The kernel's unregister of a veth pair waits for an RCU barrier (~17 ms here), longer than all
/// the rest of DEL. So DEL detaches synchronously — address released, both ends down and renamed
/// to a `kwkd*` name, so a new ADD never meets them — and a detached child of this binary
/// deletes the pair right after (GC removes any `kwkd*` link a reaper left behind).
fn del(env: &CniEnv, net: &Network) -> Result<(), CniError> {
    {
        let store = IpamStore::lock(&net.data_dir)?;
        del_nat_locked(env, &net.data_dir)?;
        store.release_owner(&env.container_id, &env.ifname)?;
    }
    let host_name = host_veth_name(&env.container_id, &env.ifname);
    let mut host_nl = nl("socket in the host namespace", Rtnl::new())?;
    let host = nl("reading the host veth", host_nl.link_by_name(&host_name))?;
    let mut pod_nl = None;
    if !env.netns.is_empty()
        && let Ok(ns) = netns::open(Path::new(&env.netns))
        && let Ok(Ok(socket)) = netns::with_netns(&ns, Rtnl::new)
    {
        pod_nl = Some(socket);
    }
    let Some(host) = host else {
        // No pair of ours (already deleted, or the namespace went with it): remove CNI_IFNAME
        // if the namespace still has one, as upstream's bridge plugin does.
        if let Some(pod_nl) = &mut pod_nl {
            nl(
                "deleting the pod interface",
                pod_nl.delete_link(&env.ifname),
            )?;
        }
        return Ok(());
    };
    let retired = plan::retired_name(&host_name, salt());
    if let Some(pod_nl) = &mut pod_nl
        && let Some(pod) = nl(
            "reading the pod interface",
            pod_nl.link_by_name(&env.ifname),
        )?
        && pod.peer_index == Some(host.index)
    {
        nl("setting the pod interface down", pod_nl.set_down(pod.index))?;
        nl(
            "renaming the pod interface",
            pod_nl.rename(pod.index, &retired),
        )?;
    }
    nl("setting the host veth down", host_nl.set_down(host.index))?;
    nl(
        "renaming the host veth",
        host_nl.rename(host.index, &retired),
    )?;
    if spawn_reaper(&retired).is_err() {
        nl("deleting the veth pair", host_nl.delete_link(&retired))?;
    }
    Ok(())
}

/// Varies generated names and MACs between calls: the clock and the process ID.
fn salt() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        ^ u64::from(std::process::id())
}

/// Starts `kwk-cni` again, detached (stdio on /dev/null so the runtime never waits for it), to
/// delete the retired link.
fn spawn_reaper(link: &str) -> std::io::Result<()> {
    let exe = std::env::current_exe()?;
    #[allow(
        clippy::zombie_processes,
        reason = "detached on purpose: this process exits at once and init (or the runtime's subreaper) reaps the child"
    )]
    std::process::Command::new(exe)
        .env_clear()
        .env(REAP_ENV, link)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    Ok(())
}

/// The reaper's job: delete one retired (`kwkd*`) link in the current namespace.
pub fn reap_link(name: &str) -> Result<(), CniError> {
    if !name.starts_with(plan::RETIRED_PREFIX) {
        return Err(CniError::InvalidEnv(format!(
            "{name:?} is not a retired link"
        )));
    }
    let mut host_nl = nl("socket", Rtnl::new())?;
    nl("deleting a retired link", host_nl.delete_link(name))?;
    Ok(())
}

/// Deletes retired links a reaper did not get to.
fn sweep_retired_links() -> Result<(), CniError> {
    let mut host_nl = nl("socket in the host namespace", Rtnl::new())?;
    for name in nl("listing links", host_nl.link_names())? {
        if name.starts_with(plan::RETIRED_PREFIX) {
            nl("deleting a retired link", host_nl.delete_link(&name))?;
        }
    }
    Ok(())
}

fn check(env: &CniEnv, conf: &NetConf) -> Result<(), CniError> {
    let net = conf.network()?;
    let prev = conf
        .prev_result
        .as_ref()
        .ok_or_else(|| CniError::InvalidConfig("CHECK needs prevResult".into()))?;
    let ns = open_netns(&env.netns)?;
    let mut pod_nl = netlink_in(&ns, &env.netns)?;
    let pod_link = nl(
        "reading the pod interface",
        pod_nl.link_by_name(&env.ifname),
    )?;
    let addresses = match &pod_link {
        Some(link) => nl("reading pod addresses", pod_nl.addresses(link.index))?,
        None => Vec::new(),
    };
    let observed = ObservedCheck {
        pod_link,
        addresses,
        routes: nl("reading pod routes", pod_nl.routes())?,
        allocation: IpamStore::lock(&net.data_dir)?.find(&env.container_id, &env.ifname)?,
        host_on_bridge: host_on_bridge(env, &net)?,
    };
    plan::check_against(prev, &env.ifname, &observed).map_err(CniError::CheckFailed)?;
    check_nat(env, &net)
}

fn host_on_bridge(env: &CniEnv, net: &Network) -> Result<bool, CniError> {
    let mut host_nl = nl("socket in the host namespace", Rtnl::new())?;
    let bridge = nl("reading the bridge", host_nl.link_by_name(&net.bridge))?;
    let host_name = host_veth_name(&env.container_id, &env.ifname);
    let host = nl("reading the host veth", host_nl.link_by_name(&host_name))?;
    Ok(match (bridge, host) {
        (Some(bridge), Some(host)) => host.up && host.master == Some(bridge.index),
        _ => false,
    })
}

fn gc(conf: &NetConf) -> Result<(), CniError> {
    let valid = conf
        .valid_attachments
        .as_deref()
        .ok_or_else(|| CniError::InvalidConfig("GC needs cni.dev/valid-attachments".into()))?;
    let dir = conf.ipam_dir()?;
    let store = IpamStore::lock(&dir)?;
    store.gc(valid)?;
    let records = hostport::read_records(&dir)?;
    let stale = hostport::stale_records(&records, valid);
    for record in &stale {
        hostport::remove_record(&dir, &record.container_id, &record.ifname)?;
    }
    if !records.is_empty() {
        let kept: Vec<HostPortRecord> = records
            .iter()
            .filter(|r| !stale.contains(r))
            .cloned()
            .collect();
        nft_socket()?.sync_hostports(&kept)?;
    }
    drop(store);
    sweep_retired_links()
}

/// Ready when the allocation directory can be written.
fn status(conf: &NetConf) -> Result<(), CniError> {
    let dir = conf.ipam_dir()?;
    let probe = dir.join(format!(".status-{}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&probe, b""))
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|err| CniError::NotAvailable(format!("{} is not writable: {err}", dir.display())))
}
