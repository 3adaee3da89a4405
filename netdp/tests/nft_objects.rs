//! Tables, chains, sets, maps, elements and rules programmed over netlink, checked against what
//! `nft` itself reads back in the same (private) network namespace; and batch atomicity.

mod nft_support;

use std::net::Ipv4Addr;
use std::time::Duration;

use kwk_netdp::nft::*;
use nft_support::{TestNs, privileged_tests_enabled};
use serde_json::Value;

const T: &str = "kwk-test";
const F: Family = Family::Ip;

fn svc_key(ip: [u8; 4], proto: u8, port: u16) -> [Datum; 3] {
    [
        Datum::Ipv4(Ipv4Addr::from(ip)),
        Datum::Proto(proto),
        Datum::Port(port),
    ]
}

fn key3() -> Vec<KeyType> {
    vec![KeyType::Ipv4Addr, KeyType::InetProto, KeyType::InetService]
}

/// The objects of one kind (`table`, `chain`, `set`, `map`, `rule`) in `nft -j` output.
fn objects<'a>(json: &'a Value, kind: &str) -> Vec<&'a Value> {
    json["nftables"]
        .as_array()
        .expect("nftables array")
        .iter()
        .filter_map(|o| o.get(kind))
        .collect()
}

fn named<'a>(json: &'a Value, kind: &str, name: &str) -> &'a Value {
    objects(json, kind)
        .into_iter()
        .find(|o| o["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in {json:#}"))
}

fn sample_ruleset() -> Batch {
    let mut b = Batch::new();
    b.add_table(F, T)
        .add_chain(
            F,
            T,
            &Chain::base(
                "prerouting",
                ChainType::Nat,
                Hook::Prerouting,
                priority::DSTNAT,
                Policy::Accept,
            ),
        )
        .add_chain(
            F,
            T,
            &Chain::base(
                "postrouting",
                ChainType::Nat,
                Hook::Postrouting,
                priority::SRCNAT,
                Policy::Accept,
            ),
        )
        .add_chain(
            F,
            T,
            &Chain::base(
                "filter-input",
                ChainType::Filter,
                Hook::Input,
                priority::FILTER,
                Policy::Accept,
            ),
        )
        .add_chain(F, T, &Chain::regular("svc-a"))
        .add_chain(F, T, &Chain::regular("svc-b"))
        .add_chain(F, T, &Chain::regular("ep-1"))
        .add_chain(F, T, &Chain::regular("ep-2"))
        .add_set(F, T, &SetSpec::verdict_map("service-ips", key3()))
        .add_set(
            F,
            T,
            &SetSpec::data_map(
                "dnat",
                key3(),
                vec![KeyType::Ipv4Addr, KeyType::InetService],
            ),
        )
        .add_set(
            F,
            T,
            &SetSpec::set("affinity", vec![KeyType::Ipv4Addr])
                .with_flags(SetFlags {
                    dynamic: true,
                    ..SetFlags::default()
                })
                .with_timeout(Duration::from_secs(10800)),
        )
        .add_set(
            F,
            T,
            &SetSpec::verdict_map("backends", vec![KeyType::Integer32]),
        )
        .add_elements(
            F,
            T,
            "service-ips",
            &[
                Element::verdict(
                    &svc_key([10, 96, 0, 1], 6, 80),
                    Verdict::Goto("svc-a".into()),
                )
                .with_comment("default/web:http"),
                Element::verdict(
                    &svc_key([10, 96, 0, 2], 17, 53),
                    Verdict::Jump("svc-b".into()),
                ),
            ],
        )
        .add_elements(
            F,
            T,
            "dnat",
            &[Element::value(
                &svc_key([10, 96, 0, 1], 6, 80),
                &[Datum::Ipv4(Ipv4Addr::new(10, 0, 0, 5)), Datum::Port(8080)],
            )],
        )
        .add_elements(
            F,
            T,
            "backends",
            &[
                Element::verdict(&[Datum::U32(0)], Verdict::Goto("ep-1".into())),
                Element::verdict(&[Datum::U32(1)], Verdict::Goto("ep-2".into())),
            ],
        );
    let mut dispatch = load_daddr_proto_dport().to_vec();
    dispatch.push(Expr::vmap("service-ips", Reg::R0));
    b.add_rule(F, T, "prerouting", &dispatch);
    let mut dnat = load_daddr_proto_dport().to_vec();
    dnat.extend([
        Expr::ip_saddr(Reg::R4),
        Expr::Dynset {
            set: "affinity".into(),
            op: DynsetOp::Update,
            sreg_key: Reg::R4,
            timeout: Some(Duration::from_secs(10800)),
        },
        Expr::map("dnat", Reg::R0, Reg::R0),
        Expr::Nat {
            kind: NatKind::Dnat,
            family: Family::Ip,
            addr: Some(Reg::R0),
            port: Some(Reg::R1),
            flags: NatFlags::default(),
        },
    ]);
    b.add_rule_commented(F, T, "svc-a", &dnat, Some("default/web:http"));
    b.add_rule(
        F,
        T,
        "svc-b",
        &[
            Expr::Numgen {
                kind: NumgenKind::Random,
                modulus: 2,
                offset: 0,
                dreg: Reg::R0,
            },
            Expr::vmap("backends", Reg::R0),
        ],
    );
    let mut masq = match_mark(0x4000, 0x4000).to_vec();
    masq.extend([
        Expr::Counter,
        Expr::Masquerade(NatFlags {
            fully_random: true,
            ..NatFlags::default()
        }),
    ]);
    b.add_rule(F, T, "postrouting", &masq);
    let mut reject = match_ct_state(ct_state::NEW).to_vec();
    reject.extend(match_l4proto(6));
    reject.extend([
        Expr::th_dport(Reg::R0),
        Expr::cmp_eq(Reg::R0, &[Datum::Port(9999)]),
        Expr::Reject(Reject::TcpReset),
    ]);
    b.add_rule(F, T, "filter-input", &reject);
    b.add_rule(
        F,
        T,
        "filter-input",
        &[
            Expr::Meta {
                key: MetaKey::Iifname,
                dreg: Reg::R0,
            },
            Expr::Cmp {
                sreg: Reg::R0,
                op: CmpOp::Eq,
                data: ifname("lo"),
            },
            Expr::accept(),
        ],
    );
    b.add_rule(
        F,
        T,
        "postrouting",
        &[
            Expr::ip_saddr(Reg::R0),
            Expr::cmp_eq(Reg::R0, &[Datum::Ipv4(Ipv4Addr::new(10, 244, 0, 9))]),
            Expr::load(Reg::R1, &[Datum::Ipv4(Ipv4Addr::new(192, 168, 1, 1))]),
            Expr::Nat {
                kind: NatKind::Snat,
                family: Family::Ip,
                addr: Some(Reg::R1),
                port: None,
                flags: NatFlags {
                    random: true,
                    ..NatFlags::default()
                },
            },
        ],
    );
    let mut nodeports = match_daddr_local().to_vec();
    nodeports.extend(match_l4proto(6));
    nodeports.push(Expr::Counter);
    b.add_rule(F, T, "prerouting", &nodeports);
    let mut mark = set_mark_bits(0x4000).to_vec();
    mark.push(Expr::Reject(Reject::Icmp(3)));
    b.add_rule(F, T, "svc-b", &mark);
    b
}

#[test]
fn objects_programmed_over_netlink_read_back_identically_in_nft() {
    if !privileged_tests_enabled() {
        return;
    }
    let ns = TestNs::new("objects");
    let nft = ns.nft();
    nft.apply(&sample_ruleset()).expect("apply sample ruleset");

    let json = ns.nft_json();
    let text = ns.nft_text();
    eprintln!("{text}");
    assert_eq!(named(&json, "table", T)["family"], "ip");
    let pre = named(&json, "chain", "prerouting");
    assert_eq!(
        (&pre["type"], &pre["hook"], &pre["prio"], &pre["policy"]),
        (
            &Value::from("nat"),
            &Value::from("prerouting"),
            &Value::from(-100),
            &Value::from("accept")
        )
    );
    let post = named(&json, "chain", "postrouting");
    assert_eq!(
        (&post["hook"], &post["prio"]),
        (&Value::from("postrouting"), &Value::from(100))
    );
    assert!(named(&json, "chain", "svc-a").get("hook").is_none());

    let vmap = named(&json, "map", "service-ips");
    assert_eq!(
        vmap["type"],
        serde_json::json!(["ipv4_addr", "inet_proto", "inet_service"])
    );
    assert_eq!(vmap["map"], "verdict");
    let elems = vmap["elem"].to_string();
    for want in [
        r#"{"concat":["10.96.0.1","tcp",80]}"#,
        r#"{"goto":{"target":"svc-a"}}"#,
        r#"{"concat":["10.96.0.2","udp",53]}"#,
        r#"{"jump":{"target":"svc-b"}}"#,
    ] {
        assert!(elems.contains(want), "{want} not in {elems}");
    }
    let dnat = named(&json, "map", "dnat");
    // nft 1.0 prints a concatenated data type as one string.
    assert_eq!(dnat["map"], "ipv4_addr . inet_service");
    let elems = dnat["elem"].to_string();
    assert!(elems.contains(r#"{"concat":["10.0.0.5",8080]}"#), "{elems}");

    let affinity = named(&json, "set", "affinity");
    assert_eq!(affinity["type"], "ipv4_addr");
    assert_eq!(affinity["timeout"], 10800);
    assert!(
        affinity["flags"].to_string().contains("timeout"),
        "{affinity}"
    );

    // Rules, as nft prints them.
    for want in [
        "ip daddr . meta l4proto . th dport vmap @service-ips",
        "dnat ip to ip daddr . meta l4proto . th dport map @dnat",
        "update @affinity { ip saddr timeout 3h }",
        "numgen random mod 2 vmap @backends",
        "map @dnat comment \"default/web:http\"",
        "10.96.0.1 . tcp . 80 comment \"default/web:http\" : goto svc-a",
        // Host-order integer keys print as numbers (set userdata carries the byte order).
        "elements = { 0 : goto ep-1, 1 : goto ep-2 }",
        "meta mark & 0x00004000 == 0x00004000 counter packets 0 bytes 0 masquerade fully-random",
        "ct state new meta l4proto tcp th dport 9999 reject with tcp reset",
        "iifname \"lo\" accept",
        "fib daddr type local meta l4proto tcp counter",
        "ip saddr 10.244.0.9 snat to 192.168.1.1 random",
        "meta mark set meta mark | 0x00004000 reject",
    ] {
        assert!(text.contains(want), "`{want}` not in:\n{text}");
    }

    // Our own read-back.
    assert_eq!(nft.list_tables(F).expect("list tables"), [T]);
    assert!(
        nft.list_tables(Family::Ip6)
            .expect("list tables")
            .is_empty()
    );
    let chains = nft.list_chains(F, T).expect("list chains");
    let mut names: Vec<_> = chains.iter().map(|c| (c.name.as_str(), c.base)).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            ("ep-1", false),
            ("ep-2", false),
            ("filter-input", true),
            ("postrouting", true),
            ("prerouting", true),
            ("svc-a", false),
            ("svc-b", false),
        ]
    );
    let sets = nft.list_sets(F, T).expect("list sets");
    let mut names: Vec<_> = sets.iter().map(|s| s.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["affinity", "backends", "dnat", "service-ips"]);
    let vmap = sets.iter().find(|s| s.name == "service-ips").expect("vmap");
    assert!(vmap.is_verdict_map());
    assert_eq!(vmap.key_len, 12);
    let elements = nft
        .list_elements(F, T, "service-ips")
        .expect("list elements");
    assert_eq!(elements.len(), 2);
    let goto_a = elements
        .iter()
        .find(|e| e.key == encode_value(&svc_key([10, 96, 0, 1], 6, 80)))
        .expect("10.96.0.1 . tcp . 80 listed");
    assert_eq!(
        goto_a.data,
        Some(ElementData::Verdict(Verdict::Goto("svc-a".into())))
    );
    assert_eq!(goto_a.comment.as_deref(), Some("default/web:http"));
    let dnat = nft.list_elements(F, T, "dnat").expect("list dnat");
    assert_eq!(
        dnat[0].data,
        Some(ElementData::Value(encode_value(&[
            Datum::Ipv4(Ipv4Addr::new(10, 0, 0, 5)),
            Datum::Port(8080)
        ])))
    );
}

#[test]
fn element_delete_flush_and_table_delete_take_effect() {
    if !privileged_tests_enabled() {
        return;
    }
    let ns = TestNs::new("delete");
    let nft = ns.nft();
    nft.apply(&sample_ruleset()).expect("apply sample ruleset");

    let mut b = Batch::new();
    b.delete_elements(
        F,
        T,
        "service-ips",
        &[Element::key(&svc_key([10, 96, 0, 2], 17, 53))],
    )
    .flush_chain(F, T, "svc-b")
    .flush_set(F, T, "backends");
    nft.apply(&b).expect("delete and flush");
    let left = nft.list_elements(F, T, "service-ips").expect("list");
    assert_eq!(left.len(), 1);
    assert!(
        nft.list_elements(F, T, "backends")
            .expect("list")
            .is_empty()
    );
    let text = ns.nft_text();
    assert!(!text.contains("numgen"), "svc-b still has rules:\n{text}");

    // Deleting an element that is not there is an error naming the message.
    let mut b = Batch::new();
    b.delete_elements(
        F,
        T,
        "service-ips",
        &[Element::key(&svc_key([10, 96, 0, 9], 6, 1))],
    );
    let err = nft.apply(&b).expect_err("missing element");
    assert_eq!(err.errno(), Some(nix::libc::ENOENT), "{err}");
    assert!(
        err.to_string()
            .contains("delete element ip kwk-test service-ips"),
        "{err}"
    );

    // A planned resync: one element changes its verdict, one is new, the rest stays.
    let desired = [
        Element::verdict(
            &svc_key([10, 96, 0, 1], 6, 80),
            Verdict::Goto("svc-b".into()),
        ),
        Element::verdict(
            &svc_key([10, 96, 0, 3], 6, 443),
            Verdict::Goto("svc-a".into()),
        ),
    ];
    let observed = nft.list_elements(F, T, "service-ips").expect("list");
    let plan = plan_elements(&desired, &observed);
    assert_eq!((plan.delete.len(), plan.add.len()), (1, 2));
    let mut b = Batch::new();
    b.delete_elements(F, T, "service-ips", &plan.delete)
        .add_elements(F, T, "service-ips", &plan.add);
    nft.apply(&b).expect("apply plan");
    let after = nft.list_elements(F, T, "service-ips").expect("list");
    assert!(plan_elements(&desired, &after).is_empty(), "{after:?}");

    let mut b = Batch::new();
    b.delete_table(F, T);
    nft.apply(&b).expect("delete table");
    assert!(objects(&ns.nft_json(), "table").is_empty());
}

#[test]
fn a_batch_whose_last_message_fails_leaves_nothing_behind() {
    if !privileged_tests_enabled() {
        return;
    }
    let ns = TestNs::new("atomic");
    let nft = ns.nft();
    let mut b = sample_ruleset();
    // The last message jumps to a chain that does not exist.
    b.add_rule(F, T, "prerouting", &[Expr::jump("no-such-chain")]);
    let err = nft.apply(&b).expect_err("the batch must fail");
    eprintln!("{err}");
    assert!(matches!(err, NftError::Rejected { .. }), "{err:?}");
    assert!(
        err.to_string().contains("add rule ip kwk-test prerouting"),
        "{err}"
    );
    assert!(
        objects(&ns.nft_json(), "table").is_empty(),
        "aborted batch left state:\n{}",
        ns.nft_text()
    );
    // The socket stays usable and the same ruleset without the bad rule applies.
    nft.apply(&sample_ruleset()).expect("apply after abort");
    assert_eq!(objects(&ns.nft_json(), "table").len(), 1);
}

#[test]
fn ip6_and_inet_tables_with_ipv6_keys_and_family_specific_statements() {
    if !privileged_tests_enabled() {
        return;
    }
    let ns = TestNs::new("families");
    let nft = ns.nft();
    let v6 = |s: &str| Datum::Ipv6(s.parse().expect("ipv6"));
    let key6 = vec![KeyType::Ipv6Addr, KeyType::InetProto, KeyType::InetService];
    let mut b = Batch::new();
    b.add_table(Family::Ip6, T)
        .add_chain(
            Family::Ip6,
            T,
            &Chain::base(
                "prerouting",
                ChainType::Nat,
                Hook::Prerouting,
                priority::DSTNAT,
                Policy::Accept,
            ),
        )
        .add_chain(
            Family::Ip6,
            T,
            &Chain::base(
                "output",
                ChainType::Filter,
                Hook::Output,
                priority::FILTER,
                Policy::Accept,
            ),
        )
        .add_set(
            Family::Ip6,
            T,
            &SetSpec::data_map("dnat6", key6, vec![KeyType::Ipv6Addr, KeyType::InetService]),
        )
        .add_elements(
            Family::Ip6,
            T,
            "dnat6",
            &[Element::value(
                &[v6("fd00:96::1"), Datum::Proto(17), Datum::Port(53)],
                &[v6("fd00:10::5"), Datum::Port(5353)],
            )],
        )
        .add_rule(
            Family::Ip6,
            T,
            "prerouting",
            &[
                Expr::ip6_daddr(Reg::R0),
                Expr::meta(MetaKey::L4proto, Reg::R4),
                Expr::th_dport(Reg(5)),
                Expr::map("dnat6", Reg::R0, Reg::R0),
                Expr::Nat {
                    kind: NatKind::Dnat,
                    family: Family::Ip6,
                    addr: Some(Reg::R0),
                    port: Some(Reg::R4),
                    flags: NatFlags::default(),
                },
            ],
        )
        .add_rule(
            Family::Ip6,
            T,
            "output",
            &[
                Expr::ip6_daddr(Reg::R0),
                Expr::cmp_eq(Reg::R0, &[v6("fd00:96::2")]),
                Expr::Reject(Reject::Icmp(4)),
            ],
        )
        .add_table(Family::Inet, T)
        .add_chain(
            Family::Inet,
            T,
            &Chain::base(
                "input",
                ChainType::Filter,
                Hook::Input,
                priority::FILTER,
                Policy::Accept,
            ),
        )
        .add_rule(
            Family::Inet,
            T,
            "input",
            &[
                Expr::meta(MetaKey::Nfproto, Reg::R0),
                Expr::cmp_eq(Reg::R0, &[Datum::Proto(10)]),
                Expr::Counter,
                Expr::Reject(Reject::Icmpx(1)),
            ],
        );
    nft.apply(&b).expect("apply ip6 and inet");
    let text = ns.nft_text();
    eprintln!("{text}");
    for want in [
        "table ip6 kwk-test",
        "type ipv6_addr . inet_proto . inet_service : ipv6_addr . inet_service",
        "fd00:96::1 . udp . 53 : fd00:10::5 . 5353",
        "dnat ip6 to ip6 daddr . meta l4proto . th dport map @dnat6",
        "ip6 daddr fd00:96::2 reject",
        "table inet kwk-test",
        "meta nfproto ipv6 counter packets 0 bytes 0 reject",
    ] {
        assert!(text.contains(want), "`{want}` not in:\n{text}");
    }
    let json = ns.nft_json();
    let families: Vec<_> = objects(&json, "table")
        .iter()
        .map(|t| t["family"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(families, ["ip6", "inet"]);
    let sets = nft.list_sets(Family::Ip6, T).expect("list ip6 sets");
    assert_eq!(sets.len(), 1);
    assert_eq!(sets[0].key_len, 24);
    assert_eq!(sets[0].data_len, 20);
}

#[test]
fn a_large_batch_failing_in_the_middle_names_the_message_and_leaves_nothing() {
    if !privileged_tests_enabled() {
        return;
    }
    // Above the per-message ACK limit: only errors and a final ACK come back.
    let ns = TestNs::new("large-abort");
    let nft = ns.nft();
    let mut b = Batch::new();
    b.add_table(F, T);
    for i in 0..6_000 {
        b.add_chain(F, T, &Chain::regular(format!("c{i}")));
        if i == 3_000 {
            b.add_rule(F, T, "c3000", &[Expr::jump("missing")]);
        }
    }
    let err = nft.apply(&b).expect_err("the batch must fail");
    assert!(
        err.to_string().contains("add rule ip kwk-test c3000"),
        "{err}"
    );
    assert!(nft.list_tables(F).expect("tables").is_empty());

    // Without the bad rule the same large batch applies and every chain is there.
    let mut b = Batch::new();
    b.add_table(F, T);
    for i in 0..6_000 {
        b.add_chain(F, T, &Chain::regular(format!("c{i}")));
    }
    nft.apply(&b).expect("large batch");
    assert_eq!(nft.list_chains(F, T).expect("chains").len(), 6_000);
}
