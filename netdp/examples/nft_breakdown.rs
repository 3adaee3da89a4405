//! `nft_breakdown`: where the nftables mode's sync time goes, in a fresh network namespace of
//! this process (root). For 10k and 50k Services x 5 endpoints: a full sync split into planning
//! and the kernel's apply, and, with the change computed beforehand (as the sync loop's
//! `Touched` diff gives it), one Service added, the same removed, and one endpoint replaced.
//! p50 of `RUNS` (default 5) wall-clock and thread CPU times. Run:
//! `cargo run -p kwk-netdp --release --example nft_breakdown` (`SIZES=10000,50000` to choose).

use std::time::{Duration, Instant};

use kwk_netdp::dataplane::Dataplane;
use kwk_netdp::model::synthetic::Synthetic;
use kwk_netdp::model::{RuleSet, build_rules, diff, synthetic};
use kwk_netdp::nft::{NftApi, NftSocket};
use kwk_netdp::nftables::NftablesDataplane;
use kwk_netdp::nftables::plan::plan_full;
use nix::sched::{CloneFlags, unshare};
use nix::time::{ClockId, clock_gettime};

fn rules_of(objects: &Synthetic) -> RuleSet {
    build_rules(&objects.input(Vec::new()), &mut Vec::new())
}

fn cpu_time() -> Duration {
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).map_or(Duration::ZERO, Duration::from)
}

/// Wall-clock and CPU samples of one measurement.
#[derive(Default)]
struct Samples {
    wall: Vec<Duration>,
    cpu: Vec<Duration>,
}

impl Samples {
    fn time<R>(&mut self, f: impl FnOnce() -> R) -> R {
        let (wall, cpu) = (Instant::now(), cpu_time());
        let out = f();
        self.cpu.push(cpu_time().saturating_sub(cpu));
        self.wall.push(wall.elapsed());
        out
    }

    fn p50(&self) -> String {
        let median = |v: &[Duration]| {
            let mut v = v.to_vec();
            v.sort();
            v.get(v.len() / 2).copied().unwrap_or_default()
        };
        format!("{:.2?} (cpu {:.2?})", median(&self.wall), median(&self.cpu))
    }
}

fn main() -> Result<(), String> {
    // Before any thread exists: the whole process moves to a new, empty network namespace.
    unshare(CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("unshare(CLONE_NEWNET), need root: {e}"))?;
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let sizes: Vec<usize> = std::env::var("SIZES")
        .unwrap_or_else(|_| "10000,50000".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let err = |e: kwk_netdp::dataplane::DataplaneError| e.to_string();
    for n in sizes {
        let objects = synthetic(n, 5);
        let old = rules_of(&objects);
        let added = rules_of(&synthetic(n + 1, 5));
        let mut changed = objects;
        changed.slices[n / 2 + 1].endpoints[0].addresses = vec!["10.250.0.1".into()];
        let changed = rules_of(&changed);
        let socket = NftSocket::open().map_err(|e| e.to_string())?;
        let mut dp = NftablesDataplane::new(socket);
        let (mut full, mut plan, mut apply) =
            (Samples::default(), Samples::default(), Samples::default());
        for _ in 0..runs {
            dp.cleanup().map_err(err)?;
            full.time(|| dp.sync(&old, None)).map_err(err)?;
            dp.cleanup().map_err(err)?;
            let planned = plan.time(|| plan_full(&old));
            apply
                .time(|| dp.nft().apply(&planned.batch))
                .map_err(|e| e.to_string())?;
        }
        println!(
            "nftables {n} services x 5 ({} front ends): full sync {} = plan {} + kernel apply {}",
            old.front_ends.len(),
            full.p50(),
            plan.p50(),
            apply.p50()
        );
        dp.sync(&old, None).map_err(err)?;
        let steps = [
            ("one Service added", diff(&old, &added), &added),
            ("the same removed", diff(&added, &old), &old),
            ("one endpoint replaced", diff(&old, &changed), &changed),
            ("and back", diff(&changed, &old), &old),
        ];
        let mut samples: Vec<Samples> = steps.iter().map(|_| Samples::default()).collect();
        for _ in 0..runs {
            for ((_, change, to), samples) in steps.iter().zip(&mut samples) {
                let report = samples.time(|| dp.sync_changes(change, to)).map_err(err)?;
                if report.full {
                    return Err(format!("an incremental change was a full sync: {report:?}"));
                }
            }
        }
        let shown: Vec<String> = steps
            .iter()
            .zip(&samples)
            .map(|((name, _, _), s)| format!("{name} {}", s.p50()))
            .collect();
        println!(
            "nftables {n}: changes known beforehand: {}",
            shown.join("; ")
        );
        dp.cleanup().map_err(err)?;
    }
    Ok(())
}
