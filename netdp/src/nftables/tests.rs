//! Table-driven tests of the nftables mode on [`MemoryNft`]: an incremental sync on top of a
//! full sync of the old rule set leaves the same map contents as a full sync of the new one;
//! small changes write few objects; failures and flushed tables lead to full syncs.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::NftablesDataplane;
use super::layout::{
    AFFINITY, BACKENDS, CLASS_CHAINS, Class, Fam, MIN_SET_SIZE, SERVICE_CLASSES, SETS, TABLE,
    set_size,
};
use super::plan::class_of;
use crate::dataplane::Dataplane;
use crate::model::synthetic::{SYNTHETIC_NODE, Synthetic};
use crate::model::{
    Backend, FrontEnd, Masquerade, NodeState, ProxyInput, ProxyOptions, RuleSet, Target,
    build_rules, synthetic,
};
use crate::nft::{Batch, ElementData, MemoryNft, NftApi, Verdict};

fn rules_of(objects: &Synthetic) -> RuleSet {
    let node = NodeState {
        name: SYNTHETIC_NODE.into(),
        ips: vec!["192.168.1.10".parse().expect("ip")],
        pod_cidrs: vec!["10.244.1.0/24".parse().expect("cidr")],
        zone: None,
    };
    let options = ProxyOptions {
        cluster_cidrs: vec!["10.244.0.0/14".parse().expect("cidr")],
        masquerade_all: false,
    };
    let input = ProxyInput::from_api(&objects.services, &objects.slices, node, options);
    build_rules(&input, &mut Vec::new())
}

/// Every element of our maps, class ids replaced by the class they stand for.
type Listing = BTreeMap<(usize, &'static str), BTreeSet<(Vec<u8>, String)>>;

fn listing(dp: &NftablesDataplane<MemoryNft>) -> Listing {
    let applied = dp.applied.as_ref().expect("a successful sync");
    let mut out = Listing::new();
    for (i, fam) in Fam::ALL.iter().enumerate() {
        let by_id: BTreeMap<u32, &Class> =
            applied.classes[i].iter().map(|(c, id)| (*id, c)).collect();
        for set in SETS {
            let elements = dp
                .nft
                .list_elements(fam.family(), TABLE, set)
                .expect("list");
            if set == CLASS_CHAINS {
                // Compared through the ids below: each goes to its own class chain.
                for e in &elements {
                    let id = u32::from_ne_bytes([e.key[0], e.key[1], e.key[2], e.key[3]]);
                    let want = Verdict::Goto(super::layout::class_chain(id));
                    assert_eq!(e.data, Some(ElementData::Verdict(want)));
                    assert!(by_id.contains_key(&id), "{id} is a class");
                }
                continue;
            }
            let entry = out.entry((i, set)).or_default();
            for e in elements {
                let data = match (&e.data, set) {
                    (Some(ElementData::Value(v)), SERVICE_CLASSES) => {
                        let id = u32::from_ne_bytes([v[0], v[1], v[2], v[3]]);
                        format!("{:?}", by_id.get(&id))
                    }
                    (data, _) => format!("{data:?}"),
                };
                entry.insert((e.key, data));
            }
        }
    }
    out
}

fn with_endpoints(mut s: Synthetic, service: usize, addresses: &[&str]) -> Synthetic {
    let eps = &mut s.slices[service].endpoints;
    let template = eps[0].clone();
    *eps = addresses
        .iter()
        .map(|a| {
            let mut e = template.clone();
            e.addresses = vec![(*a).to_owned()];
            e
        })
        .collect();
    s
}

fn without_endpoints(mut s: Synthetic, service: usize) -> Synthetic {
    s.slices.remove(service);
    s
}

fn without_service(mut s: Synthetic, service: usize) -> Synthetic {
    s.services.remove(service);
    s
}

fn with_affinity(mut s: Synthetic, service: usize) -> Synthetic {
    let spec: &mut Service = &mut s.services[service];
    if let Some(spec) = spec.spec.as_mut() {
        spec.session_affinity = Some("ClientIP".into());
    }
    s
}

#[test]
fn incremental_sync_equals_full_sync_of_the_new_rules() {
    let base = synthetic(40, 3);
    let cases: Vec<(&str, Synthetic, Synthetic)> = vec![
        ("no change", base.clone(), base.clone()),
        (
            "endpoint replaced",
            base.clone(),
            with_endpoints(base.clone(), 3, &["10.250.0.1", "10.250.0.2", "10.250.0.3"]),
        ),
        (
            "scaled up (new class)",
            base.clone(),
            with_endpoints(
                base.clone(),
                10,
                &["10.250.0.1", "10.250.0.2", "10.250.0.3", "10.250.0.4"],
            ),
        ),
        (
            "scaled to zero",
            base.clone(),
            without_endpoints(base.clone(), 5),
        ),
        (
            "zero to some",
            without_endpoints(base.clone(), 5),
            base.clone(),
        ),
        (
            "service removed",
            base.clone(),
            without_service(base.clone(), 0),
        ),
        (
            "service added",
            without_service(base.clone(), 20),
            base.clone(),
        ),
        ("affinity on", base.clone(), with_affinity(base.clone(), 7)),
        ("affinity off", with_affinity(base.clone(), 7), base.clone()),
        (
            "many at once",
            with_affinity(without_endpoints(base.clone(), 1), 2),
            without_service(with_endpoints(base, 2, &["10.244.0.7"]), 30),
        ),
    ];
    for (name, old, new) in cases {
        let (old, new) = (rules_of(&old), rules_of(&new));
        let mut incremental = NftablesDataplane::new(MemoryNft::new());
        incremental.sync(&old, None).expect("full old");
        let report = incremental
            .sync(&new, Some(&crate::model::diff(&old, &new)))
            .expect("incremental");
        assert!(!report.full, "{name}: {report:?}");
        let mut full = NftablesDataplane::new(MemoryNft::new());
        full.sync(&new, None).expect("full new");
        assert_eq!(listing(&incremental), listing(&full), "{name}");
        let counts = |dp: &NftablesDataplane<MemoryNft>| {
            let applied = dp.applied.as_ref().expect("synced");
            applied.sets.map(|sets| sets.map(|s| s.elements))
        };
        assert_eq!(counts(&incremental), counts(&full), "{name}");
        if old == new {
            assert_eq!(report.objects, 0, "{name}");
        }
    }
}

#[test]
fn one_service_change_writes_a_handful_of_elements_in_one_batch() {
    let base = synthetic(1000, 5);
    let changed = with_endpoints(
        base.clone(),
        501,
        &[
            "10.250.0.1",
            "10.250.0.2",
            "10.250.0.3",
            "10.250.0.4",
            "10.250.0.5",
        ],
    );
    let (old, new) = (rules_of(&base), rules_of(&changed));
    let mut dp = NftablesDataplane::new(MemoryNft::new());
    dp.sync(&old, None).expect("full");
    let report = dp
        .sync(&new, Some(&crate::model::diff(&old, &new)))
        .expect("incremental");
    // A ClusterIP-only Service: 5 backend slots replaced (delete + add), and the hairpin
    // element of its one node-local endpoint removed.
    assert!(report.objects <= 11, "{report:?}");
    let batches = dp.nft.applied();
    assert_eq!(batches.len(), 2);
    assert!(batches[1].len() <= 4, "{:?}", batches[1]);
}

/// The kernel validates the jump graph, walking every element of every verdict map, whenever a
/// batch adds a jump/goto element, a chain or a rule: the common changes must add none.
#[test]
fn adding_a_service_or_moving_it_to_a_known_class_adds_no_jump() {
    let four = ["10.250.0.1", "10.250.0.2", "10.250.0.3", "10.250.0.4"];
    let base = with_endpoints(synthetic(40, 3), 10, &four);
    let cases = [
        (
            "service added",
            without_service(base.clone(), 20),
            base.clone(),
        ),
        (
            "service removed",
            base.clone(),
            without_service(base.clone(), 20),
        ),
        (
            "scaled into a known class",
            base.clone(),
            with_endpoints(base, 11, &four),
        ),
    ];
    for (name, old, new) in cases {
        let (old, new) = (rules_of(&old), rules_of(&new));
        let mut dp = NftablesDataplane::new(MemoryNft::new());
        dp.sync(&old, None).expect("full");
        let report = dp
            .sync(&new, Some(&crate::model::diff(&old, &new)))
            .expect("incremental");
        assert!(!report.full && report.objects > 0, "{name}: {report:?}");
        let verdict_maps: Vec<String> = Fam::ALL
            .iter()
            .flat_map(|f| dp.nft.list_sets(f.family(), TABLE).expect("sets"))
            .filter(|s| s.is_verdict_map())
            .map(|s| s.name)
            .collect();
        assert!(verdict_maps.len() >= 2, "{verdict_maps:?}");
        let batches = dp.nft.applied();
        let messages = batches.last().expect("a batch");
        // "add element ip kwk-proxy <set> (n elements)"
        let into_verdict_map = |m: &String| {
            m.starts_with("add element")
                && verdict_maps.iter().any(|v| m.split(' ').nth(4) == Some(v))
        };
        let jumps = |m: &String| {
            m.starts_with("add chain") || m.starts_with("add rule") || into_verdict_map(m)
        };
        assert!(!messages.iter().any(jumps), "{name}: {messages:?}");
    }
}

#[test]
fn sets_are_sized_from_their_contents_and_outgrowing_one_takes_a_full_sync() {
    let size_of = |dp: &NftablesDataplane<MemoryNft>, set: &str| {
        let sets = dp.nft.list_sets(Fam::ALL[0].family(), TABLE).expect("sets");
        sets.into_iter()
            .find(|s| s.name == set)
            .expect("listed")
            .size
    };
    // 600 Services, every 10th also a NodePort: 660 front ends, one backend each.
    let (small, more, many) = (synthetic(600, 1), synthetic(700, 1), synthetic(1000, 1));
    let (small, more, many) = (rules_of(&small), rules_of(&more), rules_of(&many));
    let mut dp = NftablesDataplane::new(MemoryNft::new());
    dp.sync(&small, None).expect("full");
    assert_eq!(size_of(&dp, SERVICE_CLASSES), Some(MIN_SET_SIZE));
    assert_eq!(size_of(&dp, BACKENDS), Some(MIN_SET_SIZE));
    assert_eq!(size_of(&dp, AFFINITY), None, "filled by packets: unbounded");
    let report = dp
        .sync(&more, Some(&crate::model::diff(&small, &more)))
        .expect("770 fit");
    assert!(!report.full, "{report:?}");
    let report = dp
        .sync(&many, Some(&crate::model::diff(&more, &many)))
        .expect("1100 do not");
    assert!(report.full && !report.repaired, "{report:?}");
    assert_eq!(size_of(&dp, SERVICE_CLASSES), Some(set_size(1100)));
    assert!(set_size(1100) > 1100);
    let mut fresh = NftablesDataplane::new(MemoryNft::new());
    fresh.sync(&many, None).expect("full");
    assert_eq!(listing(&dp), listing(&fresh));
    // Back down: shrinking needs no full sync.
    let report = dp
        .sync(&small, Some(&crate::model::diff(&many, &small)))
        .expect("shrink");
    assert!(!report.full, "{report:?}");
}

#[test]
fn a_refused_batch_changes_nothing_and_forces_a_full_sync() {
    let base = synthetic(20, 2);
    let changed = with_endpoints(base.clone(), 4, &["10.250.0.9"]);
    let (old, new) = (rules_of(&base), rules_of(&changed));
    let mut dp = NftablesDataplane::new(MemoryNft::new());
    dp.sync(&old, None).expect("full");
    let before = listing(&dp);
    dp.nft.fail_next_apply(nix::libc::ENOMEM);
    dp.sync(&new, Some(&crate::model::diff(&old, &new)))
        .expect_err("refused");
    assert!(dp.applied.is_none());
    // The kernel kept the old state (the caller would pass None; even Some is safe).
    assert_eq!(
        dp.nft.list_tables(Fam::ALL[0].family()).expect("tables"),
        [TABLE]
    );
    let report = dp
        .sync(&new, Some(&crate::model::diff(&old, &new)))
        .expect("retry");
    assert!(report.full && !report.repaired, "{report:?}");
    let mut fresh = NftablesDataplane::new(MemoryNft::new());
    fresh.sync(&new, None).expect("full");
    assert_eq!(listing(&dp), listing(&fresh));
    assert_ne!(before, listing(&fresh));
}

#[test]
fn a_deleted_table_is_repaired_by_the_next_incremental_sync() {
    let rules = rules_of(&synthetic(5, 2));
    let mut dp = NftablesDataplane::new(MemoryNft::new());
    dp.sync(&rules, None).expect("full");
    let mut b = Batch::new();
    b.delete_table(Fam::ALL[1].family(), TABLE);
    dp.nft.apply(&b).expect("someone deletes our ip6 table");
    let report = dp
        .sync(&rules, Some(&crate::model::diff(&rules, &rules)))
        .expect("repair");
    assert!(report.full && report.repaired, "{report:?}");
    let report = dp
        .sync(&rules, Some(&crate::model::diff(&rules, &rules)))
        .expect("no-op");
    assert_eq!(report, crate::dataplane::SyncReport::default());
    dp.cleanup().expect("cleanup");
    dp.cleanup().expect("cleanup is idempotent");
    assert!(!dp.nft.has_table(Fam::ALL[0].family(), TABLE));
}

fn backend(ip: &str, weight: u16) -> Backend {
    Backend {
        ip: ip.parse().expect("ip"),
        port: 8080,
        weight,
        node_local: false,
    }
}

#[test]
fn classes_capture_slots_masquerade_affinity_and_short_circuit() {
    let rules = rules_of(&synthetic(1, 1));
    let template = rules
        .front_ends
        .values()
        .next()
        .expect("a front end")
        .clone();
    let fe = |target: Target, short: Option<Vec<Backend>>, aff: Option<u32>| FrontEnd {
        target,
        local_short_circuit: short,
        affinity_timeout_seconds: aff,
        masquerade: Masquerade::Always,
        ..template.clone()
    };
    let two = Target::Backends(vec![backend("10.0.0.1", 1), backend("10.0.0.2", 2)]);
    let cases = [
        (fe(Target::Reject, None, None), None),
        (fe(Target::Drop, Some(vec![]), None), None),
        (fe(two, None, Some(30)), Some((3, 0, Some(30)))),
        (
            fe(Target::Drop, Some(vec![backend("10.0.0.3", 1)]), None),
            Some((0, 1, None)),
        ),
    ];
    for (fe, want) in cases {
        let got = class_of(&fe).map(|c| (c.slots, c.short_circuit_slots, c.affinity_seconds));
        assert_eq!(got, want, "{fe:?}");
    }
    // Unused in this table but kept honest: the slices type is what the model consumes.
    let _: Option<&EndpointSlice> = None;
}

#[test]
fn firewall_chains_follow_allowed_sources() {
    let plain = rules_of(&synthetic(3, 1));
    let mut guarded = plain.clone();
    let (key, fe) = guarded.front_ends.iter_mut().next().expect("a front end");
    fe.allowed_sources = Some(vec!["192.0.2.0/24".parse().expect("cidr")]);
    let chain = super::plan::firewall_chain(key);
    let mut narrower = guarded.clone();
    if let Some(fe) = narrower.front_ends.values_mut().next() {
        fe.allowed_sources = Some(vec!["192.0.2.0/28".parse().expect("cidr")]);
    }
    let has_chain = |dp: &NftablesDataplane<MemoryNft>| {
        dp.nft
            .list_chains(Fam::ALL[0].family(), TABLE)
            .expect("chains")
            .iter()
            .any(|c| c.name == chain)
    };
    let mut dp = NftablesDataplane::new(MemoryNft::new());
    dp.sync(&plain, None).expect("full");
    assert!(!has_chain(&dp));
    for (old, new, present) in [
        (&plain, &guarded, true),
        (&guarded, &narrower, true),
        (&narrower, &plain, false),
        (&plain, &narrower, true),
    ] {
        let report = dp
            .sync(new, Some(&crate::model::diff(old, new)))
            .expect("incremental");
        assert!(!report.full, "{report:?}");
        assert_eq!(has_chain(&dp), present);
        let mut full = NftablesDataplane::new(MemoryNft::new());
        full.sync(new, None).expect("full");
        assert_eq!(has_chain(&full), present);
        assert_eq!(listing(&dp), listing(&full));
    }
}

#[test]
fn removing_a_backend_of_an_affinity_service_forgets_pinned_clients() {
    use crate::nft::{Datum, Element, Family};
    let old_objects = with_affinity(synthetic(4, 3), 1);
    let fewer = with_endpoints(old_objects.clone(), 1, &["10.244.0.3"]);
    let more = with_endpoints(
        old_objects.clone(),
        1,
        &["10.244.0.3", "10.244.0.4", "10.244.0.5", "10.250.0.1"],
    );
    let pinned = || {
        let key = [
            Datum::Ipv4("10.1.1.1".parse().expect("ip")),
            Datum::Ipv4("10.96.0.2".parse().expect("ip")),
            Datum::Proto(6),
            Datum::Port(80),
        ];
        let data = [
            Datum::Ipv4("10.244.0.4".parse().expect("ip")),
            Datum::Port(8080),
        ];
        let mut b = Batch::new();
        b.add_elements(
            Family::Ip,
            TABLE,
            super::layout::AFFINITY,
            &[Element::value(&key, &data)],
        );
        b
    };
    // (new rules, affinity entries kept)
    for (new, kept) in [(&more, 1), (&fewer, 0)] {
        let (old, new) = (rules_of(&old_objects), rules_of(new));
        let mut dp = NftablesDataplane::new(MemoryNft::new());
        dp.sync(&old, None).expect("full");
        dp.nft.apply(&pinned()).expect("a client is pinned");
        dp.sync(&new, Some(&crate::model::diff(&old, &new)))
            .expect("incremental");
        let left = dp
            .nft
            .list_elements(Family::Ip, TABLE, super::layout::AFFINITY)
            .expect("list");
        assert_eq!(left.len(), kept);
    }
}
