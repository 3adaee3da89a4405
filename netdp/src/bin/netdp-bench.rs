//! `netdp-bench`: sync times of the proxy modes through the `Dataplane` trait, in a fresh network
//! namespace of this process (root). Full sync of 1k/10k/50k Services x 5 endpoints, and one
//! Service's endpoints changed at 10k/50k; p50 of 3 runs each. Run:
//! `cargo run -p kwk-netdp --release --bin netdp-bench`

use std::time::{Duration, Instant};

use kwk_netdp::dataplane::Dataplane;
use kwk_netdp::model::input::slice_service;
use kwk_netdp::model::synthetic::{SYNTHETIC_NODE, Synthetic};
use kwk_netdp::model::{
    NodeState, ProxyInput, ProxyOptions, RuleSet, build_rules, synthetic, update_service,
};
use kwk_netdp::nft::NftSocket;
use kwk_netdp::nftables::NftablesDataplane;
use nix::sched::{CloneFlags, unshare};

const RUNS: usize = 3;

fn input_of(objects: &Synthetic) -> ProxyInput {
    let node = NodeState {
        name: SYNTHETIC_NODE.into(),
        ips: vec![std::net::Ipv4Addr::new(192, 168, 1, 10).into()],
        pod_cidrs: Vec::new(),
        zone: None,
    };
    let options = ProxyOptions {
        cluster_cidrs: Vec::new(),
        masquerade_all: false,
    };
    ProxyInput::from_api(&objects.services, &objects.slices, node, options)
}

fn rules_of(objects: &Synthetic) -> RuleSet {
    build_rules(&input_of(objects), &mut Vec::new())
}

/// The nftables mode fed the model's incremental result (`update_service` + `Touched::diff`)
/// instead of two rule sets: p50 of the dataplane part.
fn nftables_known_changes(
    objects: &Synthetic,
    changed: &Synthetic,
    n: usize,
) -> Result<Duration, String> {
    let mut input = input_of(objects);
    let mut rules = build_rules(&input, &mut Vec::new());
    let socket = NftSocket::open().map_err(|e| e.to_string())?;
    let mut dp = NftablesDataplane::new(socket);
    dp.sync(&rules, None).map_err(|e| e.to_string())?;
    let index = n / 2 + 1;
    let owner = slice_service(&objects.slices[index]).ok_or("slice without service")?;
    let mut samples = Vec::new();
    for run in 0..RUNS {
        let slice = if run % 2 == 0 {
            &changed.slices[index]
        } else {
            &objects.slices[index]
        };
        input.apply_slices(&owner, [slice]);
        let touched = update_service(&mut rules, &input, &owner, &mut Vec::new());
        let changes = touched.diff(&rules);
        let t = Instant::now();
        let report = dp
            .sync_changes(&changes, &rules)
            .map_err(|e| e.to_string())?;
        samples.push(t.elapsed());
        if report.full || report.objects == 0 {
            return Err(format!("unexpected report {report:?}"));
        }
    }
    dp.cleanup().map_err(|e| e.to_string())?;
    Ok(p50(samples))
}

fn p50(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

type Modes = Vec<(&'static str, fn() -> Result<Box<dyn Dataplane>, String>)>;

fn nftables() -> Result<Box<dyn Dataplane>, String> {
    let socket = NftSocket::open().map_err(|e| e.to_string())?;
    Ok(Box::new(NftablesDataplane::new(socket)))
}

fn main() -> Result<(), String> {
    // Before any thread exists: the whole process moves to a new, empty network namespace.
    unshare(CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("unshare(CLONE_NEWNET), need root: {e}"))?;
    let modes: Modes = vec![("nftables", nftables)];
    for n in [1_000, 10_000, 50_000] {
        let objects = synthetic(n, 5);
        let old = rules_of(&objects);
        let mut changed = objects.clone();
        changed.slices[n / 2 + 1].endpoints[0].addresses = vec!["10.250.0.1".into()];
        let new = rules_of(&changed);
        for (mode, make) in &modes {
            let mut dp = make()?;
            let mut full = Vec::new();
            let mut objects_written = 0;
            for _ in 0..RUNS {
                dp.cleanup().map_err(|e| e.to_string())?;
                let t = Instant::now();
                let report = dp.sync(&old, None).map_err(|e| e.to_string())?;
                full.push(t.elapsed());
                objects_written = report.objects;
            }
            let t = Instant::now();
            let planned = kwk_netdp::nftables::plan::plan_full(&old);
            let planning = t.elapsed();
            drop(planned);
            print!(
                "{mode}: {n} services x 5 ({} front ends): full sync p50 {:?} ({objects_written} objects, planning {planning:?})",
                old.front_ends.len(),
                p50(full)
            );
            if n >= 10_000 {
                let mut one = Vec::new();
                let (mut from, mut to) = (&old, &new);
                for _ in 0..RUNS {
                    let t = Instant::now();
                    let report = dp
                        .sync(to, Some(&kwk_netdp::model::diff(from, to)))
                        .map_err(|e| e.to_string())?;
                    one.push(t.elapsed());
                    if report.full {
                        return Err(format!("{mode}: the one-Service change was a full sync"));
                    }
                    std::mem::swap(&mut from, &mut to);
                }
                let t = Instant::now();
                let d = kwk_netdp::model::diff(&old, &new);
                let diff_time = t.elapsed();
                print!(
                    "; one Service changed p50 {:?} (of which model::diff {diff_time:?}, {} changed)",
                    p50(one),
                    d.changed.len()
                );
            }
            if n >= 10_000 {
                // A Service added and removed again: `service-classes` (a verdict map) changes.
                let added = rules_of(&synthetic(n + 1, 5));
                let mut samples = Vec::new();
                let (mut from, mut to) = (&old, &added);
                for _ in 0..RUNS {
                    let t = Instant::now();
                    dp.sync(to, Some(&kwk_netdp::model::diff(from, to)))
                        .map_err(|e| e.to_string())?;
                    samples.push(t.elapsed());
                    std::mem::swap(&mut from, &mut to);
                }
                print!("; one Service added/removed p50 {:?}", p50(samples));
            }
            println!();
            dp.cleanup().map_err(|e| e.to_string())?;
        }
        if n >= 10_000 {
            let t = nftables_known_changes(&objects, &changed, n)?;
            println!(
                "nftables: {n}: one Service changed, given the model's Touched diff: p50 {t:?}"
            );
        }
    }
    Ok(())
}
