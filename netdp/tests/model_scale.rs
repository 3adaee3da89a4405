//! How long building and diffing the rule model takes at 10k and 50k Services × 5 endpoints.
//! Prints figures, asserts only correctness. Run:
//! `cargo test -p kwk-netdp --release --test model_scale -- --ignored --nocapture`

use std::time::Instant;

use kwk_netdp::model::input::slice_service;
use kwk_netdp::model::synthetic::SYNTHETIC_NODE;
use kwk_netdp::model::{
    NodeState, ProxyInput, ProxyOptions, build_rules, diff, synthetic, update_service,
};

fn node() -> NodeState {
    NodeState {
        name: SYNTHETIC_NODE.into(),
        ips: vec!["192.168.1.10".parse().expect("valid literal")],
        pod_cidrs: vec!["10.244.1.0/24".parse().expect("valid literal")],
        zone: None,
    }
}

fn options() -> ProxyOptions {
    ProxyOptions {
        cluster_cidrs: vec!["10.244.0.0/14".parse().expect("valid literal")],
        masquerade_all: false,
    }
}

#[test]
#[ignore = "benchmark: prints timings; run with --ignored --nocapture (release)"]
fn build_and_diff_at_scale() {
    for n in [10_000, 50_000] {
        let objects = synthetic(n, 5);
        let t = Instant::now();
        let input = ProxyInput::from_api(&objects.services, &objects.slices, node(), options());
        let parse = t.elapsed();
        let t = Instant::now();
        let mut problems = Vec::new();
        let old = build_rules(&input, &mut problems);
        let build = t.elapsed();
        assert!(problems.is_empty() && input.problems.is_empty());
        // n ClusterIPs + a NodePort on the node's one address for every 10th Service (while
        // the range lasts).
        assert_eq!(old.front_ends.len(), n + (n / 10).min(2768));

        // One endpoint of one (ClusterIP-only) Service changes.
        let mut changed = objects.clone();
        changed.slices[n / 2 + 1].endpoints[0].addresses = vec!["10.250.0.1".into()];
        let t = Instant::now();
        let input2 = ProxyInput::from_api(&changed.services, &changed.slices, node(), options());
        let new = build_rules(&input2, &mut problems);
        let rebuild = t.elapsed();
        let t = Instant::now();
        let d = diff(&old, &new);
        let diff_time = t.elapsed();
        assert_eq!(d.changed.len(), 1);
        assert!(d.added.is_empty() && d.removed.is_empty());

        // The same change, incrementally: re-parse that Service's slices, update its rules.
        let mut input = input;
        let mut rules = old.clone();
        let slice = &changed.slices[n / 2 + 1];
        let owner = slice_service(slice).unwrap();
        let t = Instant::now();
        input.apply_slices(&owner, [slice]);
        let touched = update_service(&mut rules, &input, &owner, &mut problems);
        let incremental = t.elapsed();
        let d = touched.diff(&rules);
        assert_eq!(d.changed.len(), 1);
        assert!(rules == new, "incremental result equals the full rebuild");
        println!(
            "{n} services x 5 endpoints: parse {parse:?}, build {build:?} ({} front ends); \
             one endpoint changed: full parse+build {rebuild:?} + diff {diff_time:?}, \
             incremental update {incremental:?}",
            old.front_ends.len()
        );
    }
}
