//! `update_service` must give what a full `build_rules` gives, and its `Touched::diff` what
//! `diff` of the two full builds gives, across a sequence of changes including contested
//! addresses.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::synthetic::{SYNTHETIC_NODE, Synthetic};
use super::*;

fn node() -> NodeState {
    NodeState {
        name: SYNTHETIC_NODE.into(),
        ips: vec!["192.168.1.10".parse().unwrap()],
        pod_cidrs: Vec::new(),
        zone: None,
    }
}

fn options() -> ProxyOptions {
    ProxyOptions {
        cluster_cidrs: vec!["10.244.0.0/14".parse().unwrap()],
        masquerade_all: false,
    }
}

fn name(i: usize) -> ServiceName {
    ServiceName::new("bench", format!("svc-{i}"))
}

fn slices_of<'a>(objects: &'a Synthetic, n: &ServiceName) -> Vec<&'a EndpointSlice> {
    objects
        .slices
        .iter()
        .filter(|s| input::slice_service(s).as_ref() == Some(n))
        .collect()
}

fn set_external_ip(svc: &mut Service, ip: &str) {
    svc.spec.as_mut().unwrap().external_ips = Some(vec![ip.into()]);
}

/// Summarises a diff as comparable text.
fn summary(d: &RuleDiff<'_>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (k, f) in &d.added {
        out.insert(format!("{k:?}"), format!("added {f:?}"));
    }
    for (k, f) in &d.removed {
        out.insert(format!("{k:?}"), format!("removed {f:?}"));
    }
    for c in &d.changed {
        out.insert(
            format!("{:?}", c.key),
            format!(
                "changed {:?} -> {:?} +{:?} -{:?}",
                c.old, c.new, c.backends_added, c.backends_removed
            ),
        );
    }
    for (p, h) in &d.health_checks_set {
        out.insert(format!("hc {p}"), format!("{h:?}"));
    }
    for p in &d.health_checks_removed {
        out.insert(format!("hc {p}"), "removed".into());
    }
    out
}

#[test]
fn incremental_updates_match_full_builds() {
    let mut objects = super::synthetic(30, 3);
    let mut input = ProxyInput::from_api(&objects.services, &objects.slices, node(), options());
    let mut rules = build_rules(&input, &mut Vec::new());

    type Step = Box<dyn Fn(&mut Synthetic) -> usize>;
    let steps: Vec<(&str, Step)> = vec![
        (
            "endpoint changes",
            Box::new(|o: &mut Synthetic| {
                o.slices[5].endpoints[1].addresses = vec!["10.250.0.1".into()];
                5
            }),
        ),
        (
            "endpoint goes unready",
            Box::new(|o: &mut Synthetic| {
                o.slices[10].endpoints[0].conditions.as_mut().unwrap().ready = Some(false);
                10
            }),
        ),
        (
            "svc-7 takes an external IP",
            Box::new(|o: &mut Synthetic| {
                set_external_ip(&mut o.services[7], "198.51.100.9");
                7
            }),
        ),
        (
            "svc-12 claims the same external IP and takes it (\"svc-12\" < \"svc-7\")",
            Box::new(|o: &mut Synthetic| {
                set_external_ip(&mut o.services[12], "198.51.100.9");
                12
            }),
        ),
        (
            "svc-12 releases it: svc-7 gets it back",
            Box::new(|o: &mut Synthetic| {
                o.services[12].spec.as_mut().unwrap().external_ips = None;
                12
            }),
        ),
        (
            "svc-3 claims it and takes it from svc-7",
            Box::new(|o: &mut Synthetic| {
                set_external_ip(&mut o.services[3], "198.51.100.9");
                3
            }),
        ),
        (
            "svc-20 loses all endpoints",
            Box::new(|o: &mut Synthetic| {
                o.slices[20].endpoints.clear();
                20
            }),
        ),
        (
            "svc-20 becomes headless",
            Box::new(|o: &mut Synthetic| {
                let spec = o.services[20].spec.as_mut().unwrap();
                spec.cluster_ip = Some("None".into());
                spec.cluster_ips = Some(vec!["None".into()]);
                20
            }),
        ),
        (
            "svc-0 turns ETP Local",
            Box::new(|o: &mut Synthetic| {
                let spec = o.services[0].spec.as_mut().unwrap();
                spec.type_ = Some("LoadBalancer".into());
                spec.external_traffic_policy = Some("Local".into());
                spec.health_check_node_port = Some(32100);
                0
            }),
        ),
    ];
    for (what, step) in steps {
        let i = step(&mut objects);
        let n = name(i);
        let old_full = rules.clone();
        input.apply_service(&objects.services[i]);
        input.apply_slices(&n, slices_of(&objects, &n));
        let touched = update_service(&mut rules, &input, &n, &mut Vec::new());

        let full_input =
            ProxyInput::from_api(&objects.services, &objects.slices, node(), options());
        assert_eq!(input.services, full_input.services, "{what}");
        let full = build_rules(&full_input, &mut Vec::new());
        assert_eq!(rules, full, "{what}");
        assert_eq!(
            summary(&touched.diff(&rules)),
            summary(&diff(&old_full, &full)),
            "{what}"
        );
        assert!(
            !summary(&touched.diff(&rules)).is_empty(),
            "{what}: the step changes something"
        );
    }
}
