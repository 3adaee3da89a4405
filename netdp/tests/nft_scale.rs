//! Scale: 10k and 50k verdict-map elements in one batch, and one element changed at 50k.
//! Timings are printed, not asserted (goals: 10k full sync <= 0.15 s, one change at 50k <= 5 ms).

mod nft_support;

use std::net::Ipv4Addr;
use std::time::Instant;

use kwk_netdp::nft::*;
use nft_support::{TestNs, privileged_tests_enabled};

const T: &str = "kwk";
const F: Family = Family::Ip;
const TARGETS: usize = 16;

fn target(i: usize) -> String {
    // As long as kube-proxy's service chain names.
    format!(
        "service-{:08X}-default/service-{i}/tcp/http",
        i * 2_654_435_761 % (1 << 32)
    )
}

fn element(i: u32) -> Element {
    Element::verdict(
        &[
            Datum::Ipv4(Ipv4Addr::from(0x0a60_0000 + i)),
            Datum::Proto(6),
            Datum::Port(80),
        ],
        Verdict::Goto(target(i as usize % TARGETS)),
    )
}

fn setup(nft: &NftSocket, maps: &[&str]) {
    let mut b = Batch::new();
    b.add_table(F, T);
    for i in 0..TARGETS {
        b.add_chain(F, T, &Chain::regular(target(i)));
    }
    for map in maps {
        b.add_set(
            F,
            T,
            &SetSpec::verdict_map(
                *map,
                vec![KeyType::Ipv4Addr, KeyType::InetProto, KeyType::InetService],
            ),
        );
    }
    nft.apply(&b).expect("setup");
}

#[test]
fn fifty_thousand_elements_in_one_batch_and_single_element_changes() {
    if !privileged_tests_enabled() {
        return;
    }
    let ns = TestNs::new("scale");
    let nft = ns.nft();
    setup(&nft, &["map10k", "map50k"]);

    for (map, count) in [("map10k", 10_000u32), ("map50k", 50_000)] {
        let elements: Vec<_> = (0..count).map(element).collect();
        let started = Instant::now();
        let mut b = Batch::new();
        b.add_elements(F, T, map, &elements);
        let encoded = started.elapsed();
        nft.apply(&b).expect("add elements");
        let total = started.elapsed();
        eprintln!(
            "add {count} elements: {:.1} ms ({:.1} ms encoding, {} messages)",
            total.as_secs_f64() * 1e3,
            encoded.as_secs_f64() * 1e3,
            b.len()
        );
        let listed = nft.list_elements(F, T, map).expect("list");
        assert_eq!(listed.len(), count as usize);
    }

    // One change at 50k: add one element, then delete it.
    let one = element(60_000);
    for attempt in 0..3 {
        let started = Instant::now();
        let mut b = Batch::new();
        b.add_elements(F, T, "map50k", std::slice::from_ref(&one));
        nft.apply(&b).expect("add one");
        let added = started.elapsed();
        let started = Instant::now();
        let mut b = Batch::new();
        b.delete_elements(F, T, "map50k", std::slice::from_ref(&one));
        nft.apply(&b).expect("delete one");
        eprintln!(
            "one element at 50k (run {attempt}): add {:.3} ms, delete {:.3} ms",
            added.as_secs_f64() * 1e3,
            started.elapsed().as_secs_f64() * 1e3
        );
    }
    let started = Instant::now();
    let listed = nft.list_elements(F, T, "map50k").expect("list");
    eprintln!(
        "list 50k elements: {:.1} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    assert_eq!(listed.len(), 50_000);
    assert!(
        listed.iter().all(|e| e.key != one.key),
        "deleted element still listed"
    );

    // nft agrees on the count.
    let json = ns.nft_json();
    let elems = json["nftables"]
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|o| o.get("map"))
        .find(|m| m["name"] == "map50k")
        .and_then(|m| m["elem"].as_array())
        .map(Vec::len);
    assert_eq!(elems, Some(50_000));
}
