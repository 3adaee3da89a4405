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

/// Adds the nftables objects kube-proxy would create for `services` Services with
/// `endpoints` endpoints each: a service chain with `numgen ... vmap` over an anonymous map,
/// one chain per endpoint (hairpin mark + DNAT), and the dispatch map elements.
fn kube_proxy_shaped_batch(services: u32, endpoints: u32, per_service_maps: bool) -> Batch {
    let mut b = Batch::new();
    b.add_table(F, T)
        .add_chain(
            F,
            T,
            &Chain::base(
                "nat-prerouting",
                ChainType::Nat,
                Hook::Prerouting,
                priority::DSTNAT,
                Policy::Accept,
            ),
        )
        .add_set(
            F,
            T,
            &SetSpec::verdict_map(
                "service-ips",
                vec![KeyType::Ipv4Addr, KeyType::InetProto, KeyType::InetService],
            ),
        );
    let mut dispatch = load_daddr_proto_dport().to_vec();
    dispatch.push(Expr::vmap("service-ips", Reg::R0));
    b.add_rule(F, T, "nat-prerouting", &dispatch);
    let mut elements = Vec::with_capacity(services as usize);
    for s in 0..services {
        let svc_chain = format!("service-{s:08X}-default/svc-{s}/tcp/http");
        let mut endpoint_verdicts = Vec::new();
        for e in 0..endpoints {
            let ip = Ipv4Addr::from(0x0a80_0000 + s * endpoints + e);
            let ep_chain = format!("endpoint-{s:08X}{e:02X}-default/svc-{s}/tcp/http__{ip}/8080");
            b.add_chain(F, T, &Chain::regular(ep_chain.clone()));
            let mut hairpin = vec![
                Expr::ip_saddr(Reg::R0),
                Expr::cmp_eq(Reg::R0, &[Datum::Ipv4(ip)]),
            ];
            hairpin.extend(set_mark_bits(0x4000));
            b.add_rule(F, T, &ep_chain, &hairpin);
            b.add_rule(
                F,
                T,
                &ep_chain,
                &[
                    Expr::load(Reg::R0, &[Datum::Ipv4(ip)]),
                    Expr::load(Reg::R1, &[Datum::Port(8080)]),
                    Expr::Nat {
                        kind: NatKind::Dnat,
                        family: Family::Ip,
                        addr: Some(Reg::R0),
                        port: Some(Reg::R1),
                        flags: NatFlags::default(),
                    },
                ],
            );
            endpoint_verdicts.push(Element::verdict(&[Datum::U32(e)], Verdict::Goto(ep_chain)));
        }
        b.add_chain(F, T, &Chain::regular(svc_chain.clone()));
        if !per_service_maps {
            // No set per service: the first endpoint only (a shape to compare costs).
            if let Some(Element {
                data: Some(ElementData::Verdict(v)),
                ..
            }) = endpoint_verdicts.first()
            {
                b.add_rule(F, T, &svc_chain, &[Expr::verdict(v.clone())]);
            }
            elements.push(Element::verdict(
                &[
                    Datum::Ipv4(Ipv4Addr::from(0x0a60_0000 + s)),
                    Datum::Proto(6),
                    Datum::Port(80),
                ],
                Verdict::Goto(svc_chain),
            ));
            continue;
        }
        let anon = b.add_anonymous_set(
            F,
            T,
            vec![KeyType::Integer32],
            Some(MapType::Verdict),
            &endpoint_verdicts,
        );
        b.add_rule(
            F,
            T,
            &svc_chain,
            &[
                Expr::Numgen {
                    kind: NumgenKind::Random,
                    modulus: endpoints,
                    offset: 0,
                    dreg: Reg::R0,
                },
                Expr::anonymous_vmap(&anon, Reg::R0),
            ],
        );
        elements.push(Element::verdict(
            &[
                Datum::Ipv4(Ipv4Addr::from(0x0a60_0000 + s)),
                Datum::Proto(6),
                Datum::Port(80),
            ],
            Verdict::Goto(svc_chain),
        ));
    }
    b.add_elements(F, T, "service-ips", &elements);
    b
}

fn one_change(nft: &NftSocket, map: &str, element: Element) -> f64 {
    let started = Instant::now();
    let mut b = Batch::new();
    b.add_elements(F, T, map, &[element]);
    nft.apply(&b).expect("one change");
    started.elapsed().as_secs_f64() * 1e3
}

/// Full syncs shaped like kube-proxy's nftables mode, and the cost of one map element change
/// on top (verdict element with a goto, verdict element without a chain, data element).
/// 10k Services with one anonymous map each takes tens of seconds in the kernel (set lookups
/// walk lists); it runs only with `KWK_NFT_BENCH_FULL=1`.
#[test]
fn full_sync_shaped_like_kube_proxy() {
    if !privileged_tests_enabled() {
        return;
    }
    let mut shapes = vec![(1_000u32, true), (1_000, false), (10_000, false)];
    if std::env::var_os("KWK_NFT_BENCH_FULL").is_some() {
        shapes.push((10_000, true));
    }
    for (services, per_service_maps) in shapes {
        let ns = TestNs::new(&format!("full{services}{per_service_maps}"));
        let nft = ns.nft();
        let started = Instant::now();
        let batch = kube_proxy_shaped_batch(services, 5, per_service_maps);
        let encoded = started.elapsed();
        nft.apply(&batch).expect("full sync");
        let shape = if per_service_maps {
            "numgen vmap per service"
        } else {
            "no per-service map"
        };
        eprintln!(
            "full sync {services} services x 5 endpoints ({shape}): {:.1} ms ({:.1} ms encoding, {} messages)",
            started.elapsed().as_secs_f64() * 1e3,
            encoded.as_secs_f64() * 1e3,
            batch.len()
        );
        let listed = nft.list_elements(F, T, "service-ips").expect("list");
        assert_eq!(listed.len(), services as usize);

        let mut b = Batch::new();
        b.add_set(
            F,
            T,
            &SetSpec::data_map(
                "dnat",
                vec![KeyType::Ipv4Addr, KeyType::InetProto, KeyType::InetService],
                vec![KeyType::Ipv4Addr, KeyType::InetService],
            ),
        );
        nft.apply(&b).expect("dnat map");
        let key = |i: u8| {
            [
                Datum::Ipv4(Ipv4Addr::new(10, 99, 0, i)),
                Datum::Proto(6),
                Datum::Port(80),
            ]
        };
        // Three runs each: the first commit after a large one pays for the kernel's cleanup.
        let runs = |make: &dyn Fn(u8) -> (&'static str, Element)| -> String {
            (0..3u8)
                .map(|run| {
                    let (map, element) = make(run);
                    format!("{:.3}", one_change(&nft, map, element))
                })
                .collect::<Vec<_>>()
                .join("/")
        };
        let goto = runs(&|run| {
            (
                "service-ips",
                Element::verdict(
                    &key(10 + run),
                    Verdict::Goto("service-00000000-default/svc-0/tcp/http".into()),
                ),
            )
        });
        let accept = runs(&|run| {
            (
                "service-ips",
                Element::verdict(&key(20 + run), Verdict::Accept),
            )
        });
        let data = runs(&|run| {
            (
                "dnat",
                Element::value(
                    &key(30 + run),
                    &[Datum::Ipv4(Ipv4Addr::new(10, 1, 1, 1)), Datum::Port(80)],
                ),
            )
        });
        eprintln!(
            "  one element then (ms, 3 runs): vmap goto {goto}, vmap accept {accept}, data map {data}"
        );
    }
}
