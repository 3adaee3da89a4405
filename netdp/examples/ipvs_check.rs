//! The IPVS client against a real kernel, for the VM tier (this machine's kernel has no
//! `ip_vs`). Run as root after `modprobe ip_vs`, in a throwaway guest or network namespace:
//! it programs virtual services from rule sets (plan → apply → list → plan again must be
//! empty), then removes them, and prints `key=value` facts; exit status 1 on any mismatch,
//! 2 when the kernel has no IPVS.
//!
//! The integrator's VM test: send the binary, run `modprobe ip_vs; ipvsadm -A -u 10.200.0.1:53
//! -s rr; ./ipvs_check; ipvsadm -Ln`, expect `ok=true` and `foreign_kept=1`. Run once by hand
//! in the VM tier (Debian 12 kernel): all steps converged, `ok=true`.

use std::net::IpAddr;
use std::process::ExitCode;

use kwk_netdp::ipvs::{
    IpvsApi, IpvsError, IpvsOptions, IpvsSocket, Scheduler, desired_services, plan_changes,
};
use kwk_netdp::model::{
    Backend, Cidr, FrontEnd, FrontEndKey, FrontEndKind, Masquerade, Protocol, RuleSet, ServiceName,
    ServicePortName, Target,
};

fn ip(s: &str) -> Result<IpAddr, String> {
    s.parse().map_err(|e| format!("{s}: {e}"))
}

fn front_end(
    rules: &mut RuleSet,
    vip: &str,
    protocol: Protocol,
    port: u16,
    backends: &[&str],
    affinity: Option<u32>,
) -> Result<(), String> {
    let target = if backends.is_empty() {
        Target::Reject
    } else {
        Target::Backends(
            backends
                .iter()
                .map(|b| {
                    Ok(Backend {
                        ip: ip(b)?,
                        port: 8080,
                        weight: 1,
                        node_local: false,
                    })
                })
                .collect::<Result<_, String>>()?,
        )
    };
    rules.front_ends.insert(
        FrontEndKey::new(ip(vip)?, protocol, port),
        FrontEnd {
            service: ServicePortName {
                service: ServiceName::new("default", vip),
                port: String::new(),
                protocol,
            },
            kind: FrontEndKind::ClusterIp,
            target,
            masquerade: Masquerade::Never,
            affinity_timeout_seconds: affinity,
            local_short_circuit: None,
            allowed_sources: None,
        },
    );
    Ok(())
}

/// Brings the kernel to `rules`; returns (actions applied, actions left after a re-list).
fn converge(
    ipvs: &IpvsSocket,
    rules: &RuleSet,
    options: &IpvsOptions,
) -> Result<(usize, usize), String> {
    let desired = desired_services(rules, options);
    let listed = ipvs.list_all().map_err(|e| e.to_string())?;
    let actions = plan_changes(&desired, &listed, &options.exclude);
    ipvs.apply(&actions).map_err(|e| e.to_string())?;
    let listed = ipvs.list_all().map_err(|e| e.to_string())?;
    let left = plan_changes(&desired, &listed, &options.exclude);
    for action in &left {
        eprintln!("left over: {action:?}");
    }
    Ok((actions.len(), left.len()))
}

fn run(ipvs: &IpvsSocket) -> Result<bool, String> {
    let exclude: Cidr = "10.200.0.0/16".parse().map_err(|e| format!("{e:?}"))?;
    let mut options = IpvsOptions {
        exclude: vec![exclude],
        ..IpvsOptions::default()
    };
    let mut ok = true;

    let mut first = RuleSet::default();
    front_end(
        &mut first,
        "10.96.0.1",
        Protocol::Tcp,
        80,
        &["10.0.0.2", "10.0.0.3"],
        Some(10800),
    )?;
    front_end(
        &mut first,
        "10.96.0.10",
        Protocol::Udp,
        53,
        &["10.0.0.4"],
        None,
    )?;
    front_end(&mut first, "10.96.0.11", Protocol::Tcp, 80, &[], None)?;
    front_end(&mut first, "fd00::1", Protocol::Tcp, 80, &["fd00::2"], None)?;
    let (applied, left) = converge(ipvs, &first, &options)?;
    println!("step1_applied={applied}");
    println!("step1_left={left}");
    ok &= applied == 8 && left == 0;
    let listed = ipvs.list_all().map_err(|e| e.to_string())?;
    let ours = listed
        .iter()
        .filter(|(s, _)| !exclude.contains(s.key.addr))
        .count();
    let dests: usize = listed.iter().map(|(_, d)| d.len()).sum();
    println!("step1_services={ours}");
    println!("step1_dests={dests}");
    ok &= ours == 4 && dests == 4;
    let persistent = listed
        .iter()
        .find(|(s, _)| s.key.port == 80 && s.key.addr == IpAddr::from([10, 96, 0, 1]))
        .map(|(s, _)| (s.flags, s.timeout));
    println!("step1_affinity={persistent:?}");
    ok &= persistent == Some((kwk_netdp::ipvs::SVC_F_PERSISTENT, 10800));

    let mut second = RuleSet::default();
    front_end(
        &mut second,
        "10.96.0.1",
        Protocol::Tcp,
        80,
        &["10.0.0.3", "10.0.0.5"],
        None,
    )?;
    front_end(
        &mut second,
        "10.96.0.10",
        Protocol::Udp,
        53,
        &["10.0.0.4"],
        None,
    )?;
    options.scheduler = Scheduler::SourceHashing;
    let (applied, left) = converge(ipvs, &second, &options)?;
    println!("step2_applied={applied}");
    println!("step2_left={left}");
    ok &= left == 0;

    let (_, left) = converge(ipvs, &RuleSet::default(), &options)?;
    let listed = ipvs.list_all().map_err(|e| e.to_string())?;
    let foreign = listed
        .iter()
        .filter(|(s, _)| exclude.contains(s.key.addr))
        .count();
    println!("final_left={left}");
    println!("final_services={}", listed.len() - foreign);
    println!("foreign_kept={foreign}");
    ok &= left == 0 && listed.len() == foreign;
    Ok(ok)
}

fn main() -> ExitCode {
    let ipvs = match IpvsSocket::open() {
        Ok(s) => s,
        Err(e @ IpvsError::FamilyNotFound(_)) => {
            println!("ipvs=missing");
            eprintln!("{e}");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    match run(&ipvs) {
        Ok(ok) => {
            println!("ok={ok}");
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            println!("ok=false");
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
