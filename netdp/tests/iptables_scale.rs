//! The iptables mode at scale, in a fresh network namespace per size: a full sync of 1k, 10k
//! and 50k Services × 5 endpoints (`iptables-save` + render + one `iptables-restore` run per
//! table family, IPv4 here), one endpoint changed at 10k and 50k (incremental), and for
//! comparison the time `iptables-legacy-restore` takes to load the same full ruleset text.
//! Prints figures, asserts only correctness. Run:
//! `cargo test -p kwk-netdp --release --test iptables_scale -- --ignored --nocapture`

mod nft_support;

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kwk_netdp::dataplane::Dataplane;
use kwk_netdp::iptables::restore::{Observed, full_restore};
use kwk_netdp::iptables::{IptablesBackend, IptablesConfig, IptablesDataplane, render_family};
use kwk_netdp::model::synthetic::SYNTHETIC_NODE;
use kwk_netdp::model::{
    IpFamily, NodeState, ProxyInput, ProxyOptions, RuleSet, build_rules, synthetic,
};
use nft_support::{TestNs, privileged_tests_enabled};

fn rules_for(objects: &kwk_netdp::model::synthetic::Synthetic) -> RuleSet {
    let node = NodeState {
        name: SYNTHETIC_NODE.into(),
        ips: vec!["192.168.1.10".parse().expect("valid literal")],
        pod_cidrs: vec![],
        zone: None,
    };
    let options = ProxyOptions {
        cluster_cidrs: vec!["10.244.0.0/14".parse().expect("valid literal")],
        masquerade_all: false,
    };
    let input = ProxyInput::from_api(&objects.services, &objects.slices, node, options);
    let mut problems = Vec::new();
    let rules = build_rules(&input, &mut problems);
    assert!(problems.is_empty() && input.problems.is_empty());
    rules
}

fn dataplane(ns: &TestNs, backend: IptablesBackend) -> IptablesDataplane {
    IptablesDataplane::new(IptablesConfig {
        backend,
        families: vec![IpFamily::V4],
        netns: Some(format!("/run/netns/{}", ns.name).into()),
    })
    .expect("iptables binaries")
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn sync_at_scale(backend: IptablesBackend, sizes: &[usize]) {
    for &n in sizes {
        let objects = synthetic(n, 5);
        let rules = rules_for(&objects);

        let t = Instant::now();
        let text = full_restore(
            &render_family(&rules, IpFamily::V4),
            &Observed::default(),
            None,
        );
        let render = t.elapsed();

        let ns = TestNs::new(&format!("iptscale-{n}"));
        let mut dp = dataplane(&ns, backend);
        let t = Instant::now();
        let report = dp.sync(&rules, None).expect("full sync");
        let full = t.elapsed();
        assert!(report.full);
        let mut line = format!(
            "{backend:?} {n} services x 5: render {} ({} lines, {} KiB); full sync {}",
            ms(render),
            text.objects,
            text.text.len() / 1024,
            ms(full)
        );
        if n >= 10_000 {
            let mut changed = objects.clone();
            changed.slices[n / 2 + 1].endpoints[0].addresses = vec!["10.250.0.1".into()];
            let new = rules_for(&changed);
            let t = Instant::now();
            let report = dp
                .sync(&new, Some(&kwk_netdp::model::diff(&rules, &new)))
                .expect("incremental");
            let one = t.elapsed();
            line.push_str(&format!(
                "; one endpoint changed: {} ({} objects)",
                ms(one),
                report.objects
            ));
            // The Service's chain (1 + 5 rules), its new and old endpoint chains declared,
            // the new one's 2 rules, the old one deleted.
            assert!(!report.full && report.objects == 12, "{report:?}");
        }
        drop(ns);

        if backend == IptablesBackend::Legacy {
            // The same kube-proxy-style ruleset text loaded by iptables-legacy-restore alone.
            let legacy = TestNs::new(&format!("iptscale-legacy-{n}"));
            let t = Instant::now();
            let mut child = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &legacy.name,
                    "iptables-legacy-restore",
                    "--noflush",
                ])
                .stdin(Stdio::piped())
                .spawn()
                .expect("spawn iptables-legacy-restore");
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(text.text.as_bytes())
                .expect("write");
            assert!(child.wait().expect("wait").success());
            line.push_str(&format!(
                "; iptables-legacy-restore of the same text alone {}",
                ms(t.elapsed())
            ));
        }
        eprintln!("{line}");
    }
}

#[test]
#[ignore = "benchmark: prints timings; run with --ignored --nocapture (release)"]
fn legacy_backend_full_and_incremental_syncs_at_scale() {
    if !privileged_tests_enabled() {
        return;
    }
    sync_at_scale(IptablesBackend::Legacy, &[1_000, 10_000, 50_000]);
}

#[test]
#[ignore = "benchmark: prints timings; run with --ignored --nocapture (release); the nf_tables \
            backend of iptables 1.8.9 takes minutes at 10k, so 50k is left out"]
fn nft_backend_full_and_incremental_syncs_at_scale() {
    if !privileged_tests_enabled() {
        return;
    }
    sync_at_scale(IptablesBackend::Default, &[1_000, 10_000]);
}
