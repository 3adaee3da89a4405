//! The `loopback` network type. containerd runs a `loopback` plugin from its CNI bin dir for every
//! sandbox, before the pod network; `kwk-cni` serves that type too (the bin dir's `loopback` is a
//! link to the same binary), so a node needs no plugin we did not ship.
//!
//! ADD brings the namespace's loopback device (`CNI_IFNAME`, `lo`) up and reports it with its
//! IPv4 addresses (or passes a `prevResult` through unchanged); DEL does nothing (the device
//! goes with the namespace); CHECK: the device is up; GC and STATUS have nothing to do.
//! [`plan_add`], [`check_link`] and [`add_result`] decide; [`run`] performs.

use std::io::ErrorKind;
use std::path::Path;

use crate::config::{CniEnv, Command, NetConf};
use crate::error::CniError;
use crate::ipv4::Ipv4Cidr;
use crate::netlink::{LinkState, Rtnl, format_mac};
use crate::netns;
use crate::result::{CniResult, Interface, IpConfig};

/// The network configuration's `type` served here.
pub const TYPE: &str = "loopback";

/// The loopback device's index: the kernel registers it first in every network namespace
/// (`LOOPBACK_IFINDEX`).
pub const LOOPBACK_INDEX: u32 = 1;

/// What ADD does to the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    SetUp,
}

fn not_loopback(ifname: &str, observed: Option<&LinkState>) -> Option<String> {
    match observed {
        None => Some(format!("no device {ifname:?} in the namespace")),
        Some(link) if link.index != LOOPBACK_INDEX => Some(format!(
            "{ifname:?} (index {}) is not the namespace's loopback device",
            link.index
        )),
        Some(_) => None,
    }
}

/// ADD's plan for the device `ifname` as observed: set it up, or nothing when it is up. Any
/// other device than the namespace's loopback is refused (and left alone).
pub fn plan_add(ifname: &str, observed: Option<&LinkState>) -> Result<Option<Step>, CniError> {
    if let Some(problem) = not_loopback(ifname, observed) {
        return Err(CniError::InvalidEnv(problem));
    }
    Ok(observed.is_some_and(|link| !link.up).then_some(Step::SetUp))
}

/// CHECK: the device is the namespace's loopback and it is up.
pub fn check_link(ifname: &str, observed: Option<&LinkState>) -> Result<(), CniError> {
    if let Some(problem) = not_loopback(ifname, observed) {
        return Err(CniError::CheckFailed(problem));
    }
    match observed {
        Some(link) if link.up => Ok(()),
        _ => Err(CniError::CheckFailed(format!("{ifname:?} is down"))),
    }
}

/// ADD's result: the device (in the sandbox) and its addresses.
pub fn add_result(
    env: &CniEnv,
    link: &LinkState,
    addresses: &[Ipv4Cidr],
    cni_version: &str,
) -> CniResult {
    CniResult {
        interfaces: vec![Interface {
            name: env.ifname.clone(),
            mac: format_mac(&link.mac),
            sandbox: env.netns.clone(),
            ..Interface::default()
        }],
        ips: addresses
            .iter()
            .map(|cidr| IpConfig {
                address: cidr.to_string(),
                interface: Some(0),
                ..IpConfig::default()
            })
            .collect(),
        ..CniResult::default()
    }
    .for_version(cni_version)
}

/// Runs one command for a `loopback` network (`VERSION` never gets here: it does not depend on
/// the type).
pub fn run(env: &CniEnv, conf: &NetConf, stdin: &[u8]) -> Result<String, CniError> {
    match env.command {
        Command::Add => add(env, conf, stdin),
        Command::Check => check(env).map(|()| String::new()),
        Command::Del | Command::Gc | Command::Status | Command::Version => Ok(String::new()),
    }
}

/// Runs `f` with a netlink socket inside `CNI_NETNS`.
fn in_pod_netns<T>(
    env: &CniEnv,
    f: impl FnOnce(&mut Rtnl) -> Result<T, CniError>,
) -> Result<T, CniError> {
    let path = &env.netns;
    let ns = netns::open(Path::new(path)).map_err(|err| match err.kind() {
        ErrorKind::NotFound => CniError::UnknownContainer(format!("netns {path} does not exist")),
        _ => CniError::io(format!("opening netns {path}"), err),
    })?;
    netns::with_netns(&ns, || {
        let mut nl =
            Rtnl::new().map_err(|err| CniError::netlink("socket in the pod namespace", err))?;
        f(&mut nl)
    })
    .map_err(|err| {
        CniError::UnknownContainer(format!("{path} is not a network namespace: {err}"))
    })?
}

fn read_link(nl: &mut Rtnl, ifname: &str) -> Result<Option<LinkState>, CniError> {
    nl.link_by_name(ifname)
        .map_err(|err| CniError::netlink("reading the loopback device", err))
}

fn add(env: &CniEnv, conf: &NetConf, stdin: &[u8]) -> Result<String, CniError> {
    let (link, addresses) = in_pod_netns(env, |nl| {
        let observed = read_link(nl, &env.ifname)?;
        let step = plan_add(&env.ifname, observed.as_ref())?;
        let Some(mut link) = observed else {
            return Err(CniError::InvalidEnv(format!("no device {:?}", env.ifname)));
        };
        if step == Some(Step::SetUp) {
            nl.set_up(link.index)
                .map_err(|err| CniError::netlink("setting the loopback device up", err))?;
            link.up = true;
        }
        // The kernel adds 127.0.0.1/8 when the device goes up.
        let addresses = nl
            .addresses(link.index)
            .map_err(|err| CniError::netlink("reading loopback addresses", err))?;
        Ok((link, addresses))
    })?;
    // Chained after another plugin: its result goes on unchanged, as upstream's loopback does.
    if let Some(mut prev) = raw_prev_result(stdin) {
        prev["cniVersion"] = conf.cni_version.clone().into();
        return Ok(prev.to_string());
    }
    serde_json::to_string(&add_result(env, &link, &addresses, &conf.cni_version))
        .map_err(|err| CniError::Decode(format!("encoding reply: {err}")))
}

/// `prevResult` as sent (all its fields, whatever the version), if any.
fn raw_prev_result(stdin: &[u8]) -> Option<serde_json::Value> {
    let mut conf: serde_json::Value = serde_json::from_slice(stdin).ok()?;
    conf.get_mut("prevResult")
        .map(serde_json::Value::take)
        .filter(serde_json::Value::is_object)
}

fn check(env: &CniEnv) -> Result<(), CniError> {
    let observed = in_pod_netns(env, |nl| read_link(nl, &env.ifname))?;
    check_link(&env.ifname, observed.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn link(index: u32, up: bool) -> LinkState {
        LinkState {
            index,
            name: "lo".into(),
            mac: vec![0; 6],
            up,
            ..LinkState::default()
        }
    }

    #[test]
    fn add_sets_only_a_down_loopback_up() {
        type Want = Result<Option<Step>, u32>;
        let cases: &[(Option<LinkState>, Want)] = &[
            (Some(link(1, false)), Ok(Some(Step::SetUp))),
            (Some(link(1, true)), Ok(None)),
            // Not the namespace's loopback (a veth called lo, or CNI_IFNAME=eth0): refused.
            (Some(link(4, false)), Err(4)),
            (None, Err(4)),
        ];
        for (observed, want) in cases {
            let got = plan_add("lo", observed.as_ref()).map_err(|err| err.code());
            assert_eq!(&got, want, "{observed:?}");
        }
    }

    #[test]
    fn check_wants_the_loopback_up() {
        let cases: &[(Option<LinkState>, bool)] = &[
            (Some(link(1, true)), true),
            (Some(link(1, false)), false),
            (Some(link(7, true)), false),
            (None, false),
        ];
        for (observed, ok) in cases {
            match check_link("lo", observed.as_ref()) {
                Ok(()) => assert!(ok, "{observed:?} passed"),
                Err(err) => {
                    assert!(!ok, "{observed:?} failed: {err}");
                    assert_eq!(err.code(), 101);
                }
            }
        }
    }

    /// The `CNI_*` variables of a call on `lo` (an empty value: unset).
    fn vars<'a>(command: &'a str, netns: &'a str) -> HashMap<&'static str, &'a str> {
        [
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "lo"),
            ("CNI_NETNS", netns),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .collect()
    }

    fn env(command: &str, netns: &str) -> CniEnv {
        let vars = vars(command, netns);
        CniEnv::from_lookup(|k| vars.get(k).map(|v| (*v).to_owned())).expect("env")
    }

    #[test]
    fn result_names_the_device_in_the_sandbox_per_version() {
        let lo = link(1, true);
        let addresses = [Ipv4Cidr::parse("127.0.0.1/8").expect("cidr")];
        let env = env("ADD", "/run/netns/p");
        let old = serde_json::to_value(add_result(&env, &lo, &addresses, "0.3.1")).expect("json");
        assert_eq!(old["cniVersion"], "0.3.1");
        assert_eq!(old["interfaces"][0]["name"], "lo");
        assert_eq!(old["interfaces"][0]["mac"], "00:00:00:00:00:00");
        assert_eq!(old["interfaces"][0]["sandbox"], "/run/netns/p");
        assert_eq!(old["ips"][0]["address"], "127.0.0.1/8");
        assert_eq!(old["ips"][0]["version"], "4");
        assert_eq!(old["ips"][0]["interface"], 0);
        let new = serde_json::to_value(add_result(&env, &lo, &addresses, "1.0.0")).expect("json");
        assert!(new["ips"][0].get("version").is_none());
    }

    #[test]
    fn prev_result_passes_through_whole() {
        let stdin = br#"{"cniVersion":"1.0.0","name":"n","type":"loopback",
            "prevResult":{"cniVersion":"1.0.0","ips":[{"address":"fd00::2/64","interface":0}],
                          "interfaces":[{"name":"eth0","mtu":1400}],"extra":1}}"#;
        let prev = raw_prev_result(stdin).expect("prevResult");
        assert_eq!(prev["ips"][0]["address"], "fd00::2/64");
        assert_eq!(prev["extra"], 1);
        assert!(raw_prev_result(br#"{"cniVersion":"1.0.0","name":"n"}"#).is_none());
    }

    /// The commands that touch nothing, through the plugin's entry point (no privileges).
    #[test]
    fn dispatched_by_type_without_touching_the_system() {
        let conf = br#"{"cniVersion":"0.3.1","name":"cni-loopback","type":"loopback"}"#;
        let call = |command: &str, netns: &str| {
            let vars = vars(command, netns);
            crate::run(|k| vars.get(k).map(|v| (*v).to_owned()), conf)
        };
        // DEL does nothing: no netns needed, and none is touched.
        let del = call("DEL", "");
        assert!(del.success && del.stdout.is_empty(), "{del:?}");
        let del = call("DEL", "/nonexistent/netns");
        assert!(del.success && del.stdout.is_empty(), "{del:?}");
        for command in ["GC", "STATUS"] {
            let out = call(command, "");
            assert!(out.success, "{command}: {out:?}");
        }
        let version = call("VERSION", "");
        assert!(version.success);
        let reply: serde_json::Value = serde_json::from_str(&version.stdout).expect("json");
        assert_eq!(reply["cniVersion"], "0.3.1");
        // ADD into a namespace that is gone: "unknown container", in the caller's version.
        let add = call("ADD", "/nonexistent/netns");
        assert!(!add.success);
        let reply: serde_json::Value = serde_json::from_str(&add.stdout).expect("json");
        assert_eq!(reply["code"], 3);
        assert_eq!(reply["cniVersion"], "0.3.1");
    }
}
