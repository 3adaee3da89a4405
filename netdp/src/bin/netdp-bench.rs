//! `netdp-bench`: issue 7's proxy figures side by side in one run, as root, in a fresh network
//! namespace of this process. For 1k / 10k / 50k Services × 5 endpoints (every 10th a NodePort):
//! the full sync of the nftables and iptables (legacy backend) modes through the `Dataplane`
//! trait, `iptables-legacy-restore` alone loading the same kube-proxy-layout ruleset text into an
//! empty namespace (the reference), and at 10k / 50k one Service's endpoints changed and one
//! Service added then removed, each applied the way the sync loop does it (`update_service`, the
//! touched difference, one incremental sync). Each figure is the p50 of up to 3 runs; a cell
//! whose first run took over 5 s is measured once (marked `¹`).
//!
//! Run: `cargo build --release -p kwk-netdp --bin netdp-bench && sudo target/release/netdp-bench
//! [--sizes 1000,10000] [--modes nftables,iptables,iptables-nft,reference]`
//! (`iptables-nft`, the nf_tables backend of iptables, is not in the default set: minutes at 10k.)

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use kwk_netdp::dataplane::Dataplane;
use kwk_netdp::iptables::restore::{Observed, full_restore};
use kwk_netdp::iptables::{IptablesBackend, IptablesConfig, IptablesDataplane, render_family};
use kwk_netdp::model::input::slice_service;
use kwk_netdp::model::synthetic::Synthetic;
use kwk_netdp::model::{IpFamily, ProxyInput, RuleSet, build_rules, synthetic, update_service};
use kwk_netdp::nft::NftSocket;
use kwk_netdp::nftables::NftablesDataplane;
use nix::sched::{CloneFlags, unshare};

const RUNS: usize = 3;
/// A cell whose first run takes longer than this is not repeated.
const SLOW_RUN: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Column {
    Nftables,
    Iptables,
    IptablesNft,
    /// `iptables-legacy-restore` loading the rendered full ruleset, nothing else.
    Reference,
}

impl Column {
    const ALL: [Column; 4] = [
        Column::Nftables,
        Column::Iptables,
        Column::IptablesNft,
        Column::Reference,
    ];

    fn name(self) -> &'static str {
        match self {
            Column::Nftables => "nftables",
            Column::Iptables => "iptables",
            Column::IptablesNft => "iptables-nft",
            Column::Reference => "reference",
        }
    }

    fn header(self) -> &'static str {
        match self {
            Column::Nftables => "nftables mode",
            Column::Iptables => "iptables mode (legacy)",
            Column::IptablesNft => "iptables mode (nft)",
            Column::Reference => "iptables-legacy-restore",
        }
    }

    fn dataplane(self) -> anyhow::Result<Box<dyn Dataplane>> {
        let iptables = |backend| -> anyhow::Result<Box<dyn Dataplane>> {
            Ok(Box::new(IptablesDataplane::new(IptablesConfig {
                backend,
                families: vec![IpFamily::V4],
                netns: None,
            })?))
        };
        match self {
            Column::Nftables => Ok(Box::new(NftablesDataplane::new(NftSocket::open()?))),
            Column::Iptables => iptables(IptablesBackend::Legacy),
            Column::IptablesNft => iptables(IptablesBackend::Default),
            Column::Reference => bail!("the reference is not a dataplane"),
        }
    }
}

/// One measured cell: p50 and how many runs it is of.
#[derive(Debug, Clone, Copy)]
struct Cell {
    p50: Duration,
    runs: usize,
}

impl std::fmt::Display for Cell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.p50.as_secs_f64();
        let text = if secs >= 1.0 {
            format!("{secs:.2} s")
        } else if secs >= 1e-3 {
            format!("{:.1} ms", secs * 1e3)
        } else {
            format!("{:.0} µs", secs * 1e6)
        };
        let mark = if self.runs == 1 { "¹" } else { "" };
        write!(f, "{text}{mark}")
    }
}

/// Runs `run` (which returns the measured part) up to [`RUNS`] times.
fn measure(mut run: impl FnMut(usize) -> anyhow::Result<Duration>) -> anyhow::Result<Cell> {
    let mut samples = vec![run(0)?];
    if samples[0] < SLOW_RUN {
        for i in 1..RUNS {
            samples.push(run(i)?);
        }
    }
    samples.sort();
    Ok(Cell {
        p50: samples[samples.len() / 2],
        runs: samples.len(),
    })
}

fn input_of(objects: &Synthetic) -> ProxyInput {
    objects.input(vec!["10.244.0.0/14".parse().expect("valid literal")])
}

/// What one size is measured against: the objects, their rules, and the changes applied.
struct Scenario {
    n: usize,
    objects: Synthetic,
    /// `objects` with one Service's endpoint moved.
    changed: Synthetic,
    /// The Service added and removed again.
    extra: Synthetic,
}

impl Scenario {
    fn new(n: usize) -> Self {
        let objects = synthetic(n, 5);
        let mut changed = objects.clone();
        changed.slices[n / 2 + 1].endpoints[0].addresses = vec!["10.250.0.1".into()];
        let mut extra = synthetic(n + 1, 5);
        extra.services.drain(..n);
        extra.slices.drain(..n);
        Self {
            n,
            objects,
            changed,
            extra,
        }
    }
}

/// The figures of one column at one size.
#[derive(Default)]
struct Figures {
    full: Option<Cell>,
    changed: Option<Cell>,
    added_removed: Option<Cell>,
}

fn sync_incremental(
    dp: &mut dyn Dataplane,
    rules: &mut RuleSet,
    input: &ProxyInput,
    owner: &kwk_netdp::model::ServiceName,
) -> anyhow::Result<Duration> {
    let touched = update_service(rules, input, owner, &mut Vec::new());
    let change = touched.diff(rules);
    ensure!(!change.is_empty(), "the change touched nothing");
    let t = Instant::now();
    let report = dp.sync(rules, Some(&change))?;
    let took = t.elapsed();
    ensure!(!report.full, "an incremental change ran as a full sync");
    Ok(took)
}

fn measure_mode(column: Column, s: &Scenario) -> anyhow::Result<Figures> {
    let mut dp = column.dataplane()?;
    let mut input = input_of(&s.objects);
    let mut rules = build_rules(&input, &mut Vec::new());
    let mut figures = Figures {
        full: Some(measure(|_| {
            dp.cleanup()?;
            let t = Instant::now();
            dp.sync(&rules, None)?;
            Ok(t.elapsed())
        })?),
        ..Figures::default()
    };
    if s.n >= 10_000 {
        let index = s.n / 2 + 1;
        let owner = slice_service(&s.objects.slices[index]).context("slice without Service")?;
        figures.changed = Some(measure(|run| {
            let slices = if run % 2 == 0 { &s.changed } else { &s.objects };
            input.apply_slices(&owner, [&slices.slices[index]]);
            sync_incremental(dp.as_mut(), &mut rules, &input, &owner)
        })?);
        // Back to the original endpoints before the next measurement.
        input.apply_slices(&owner, [&s.objects.slices[index]]);
        sync_incremental(dp.as_mut(), &mut rules, &input, &owner)?;

        let added = s.extra.services[0].clone();
        figures.added_removed = Some(measure(|_| {
            let name = input.apply_service(&added);
            input.apply_slices(&name, &s.extra.slices);
            let add = sync_incremental(dp.as_mut(), &mut rules, &input, &name)?;
            input.remove_service(&name);
            input.apply_slices(&name, []);
            let remove = sync_incremental(dp.as_mut(), &mut rules, &input, &name)?;
            Ok((add + remove) / 2)
        })?);
    }
    dp.cleanup()?;
    Ok(figures)
}

/// `iptables-legacy-restore` loading the iptables mode's full IPv4 ruleset text into an empty
/// network namespace of its own (`unshare --net`).
fn measure_reference(s: &Scenario) -> anyhow::Result<Figures> {
    let rules = build_rules(&input_of(&s.objects), &mut Vec::new());
    let text = full_restore(
        &render_family(&rules, IpFamily::V4),
        &Observed::default(),
        None,
    )
    .text;
    let full = measure(|_| {
        let t = Instant::now();
        let mut child = Command::new("unshare")
            .args(["--net", "iptables-legacy-restore", "--noflush"])
            .stdin(Stdio::piped())
            .spawn()
            .context("spawning unshare --net iptables-legacy-restore")?;
        child
            .stdin
            .take()
            .context("stdin")?
            .write_all(text.as_bytes())?;
        let status = child.wait()?;
        ensure!(status.success(), "iptables-legacy-restore: {status}");
        Ok(t.elapsed())
    })?;
    Ok(Figures {
        full: Some(full),
        ..Figures::default()
    })
}

struct Args {
    sizes: Vec<usize>,
    columns: Vec<Column>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        sizes: vec![1_000, 10_000, 50_000],
        columns: vec![Column::Nftables, Column::Iptables, Column::Reference],
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--sizes" => {
                args.sizes = value
                    .split(',')
                    .map(|v| v.parse().with_context(|| format!("--sizes: {v:?}")))
                    .collect::<anyhow::Result<_>>()?;
            }
            "--modes" => {
                args.columns = value
                    .split(',')
                    .map(|v| {
                        Column::ALL
                            .into_iter()
                            .find(|c| c.name() == v)
                            .with_context(|| format!("--modes: unknown {v:?}"))
                    })
                    .collect::<anyhow::Result<_>>()?;
            }
            other => bail!("unknown flag {other:?} (--sizes N,N… --modes a,b…)"),
        }
    }
    Ok(args)
}

fn size_label(n: usize) -> String {
    if n.is_multiple_of(1000) {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    // Before any thread exists: the whole process moves to a new, empty network namespace.
    unshare(CloneFlags::CLONE_NEWNET).context("unshare(CLONE_NEWNET), need root")?;
    let mut table: Vec<(String, Vec<Option<Cell>>)> = Vec::new();
    for &n in &args.sizes {
        let scenario = Scenario::new(n);
        let mut results = Vec::new();
        for &column in &args.columns {
            let figures = match column {
                Column::Reference => measure_reference(&scenario),
                _ => measure_mode(column, &scenario),
            }
            .with_context(|| format!("{} at {n}", column.name()))?;
            eprintln!("measured {} at {n}", column.name());
            results.push(figures);
        }
        let label = size_label(n);
        let row = |pick: fn(&Figures) -> Option<Cell>| results.iter().map(pick).collect();
        table.push((format!("full sync, {label} Services"), row(|f| f.full)));
        if n >= 10_000 {
            table.push((
                format!("one Service's endpoints changed, {label}"),
                row(|f| f.changed),
            ));
            table.push((
                format!("one Service added / removed, {label}"),
                row(|f| f.added_removed),
            ));
        }
    }
    print_table(&args.columns, &table);
    Ok(())
}

fn print_table(columns: &[Column], table: &[(String, Vec<Option<Cell>>)]) {
    let first = table
        .iter()
        .map(|(l, _)| l.chars().count())
        .max()
        .unwrap_or(0);
    let widths: Vec<usize> = columns
        .iter()
        .map(|c| c.header().chars().count().max(12))
        .collect();
    println!(
        "netdp-bench: Services × 5 endpoints (every 10th a NodePort), p50 of {RUNS} runs (¹: one run)"
    );
    print!("{:first$}", "");
    for (c, w) in columns.iter().zip(&widths) {
        print!("  {:>w$}", c.header());
    }
    println!();
    for (label, cells) in table {
        print!("{label:first$}");
        for (cell, w) in cells.iter().zip(&widths) {
            let text = cell.map_or_else(|| "—".to_string(), |c| c.to_string());
            print!("  {text:>w$}");
        }
        println!();
    }
    println!(
        "goals (issue 7): full sync of 10k ≤ 150 ms; one change at 50k ≤ 5 ms. The reference is \
         iptables-legacy-restore alone loading the iptables mode's ruleset (kube-proxy's layout) \
         into an empty namespace; the iptables mode adds iptables-save, parsing and rendering."
    );
}
