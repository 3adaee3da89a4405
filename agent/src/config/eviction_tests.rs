//! `evictionHard`: read as upstream, bad signals and thresholds named.

use std::collections::BTreeMap;

use super::*;

fn load_text(body: &str) -> Result<KubeletConfig, String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kubelet.yaml");
    std::fs::write(
        &path,
        format!("apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n{body}"),
    )
    .expect("write");
    load(&path).map(|l| l.config).map_err(|e| e.to_string())
}

#[test]
fn eviction_hard_thresholds() {
    let quantity = |s: &str| EvictionThreshold::Quantity(crate::quantity::parse(s).expect("q"));
    let percent = |hundredths| EvictionThreshold::Percent { hundredths };
    let cases: Vec<(&str, Option<BTreeMap<String, EvictionThreshold>>)> = vec![
        ("", None),
        ("evictionHard: {}", Some(BTreeMap::new())),
        (
            "evictionHard: {memory.available: 100Mi, nodefs.available: 10%, pid.available: '7.5%'}",
            Some(BTreeMap::from([
                ("memory.available".to_owned(), quantity("100Mi")),
                ("nodefs.available".to_owned(), percent(1000)),
                ("pid.available".to_owned(), percent(750)),
            ])),
        ),
        (
            "evictionHard: {nodefs.inodesFree: '5%', imagefs.available: 0%}",
            Some(BTreeMap::from([
                ("imagefs.available".to_owned(), percent(0)),
                ("nodefs.inodesFree".to_owned(), percent(500)),
            ])),
        ),
    ];
    for (body, want) in cases {
        let config = load_text(body).unwrap_or_else(|e| panic!("{body}: {e}"));
        assert_eq!(config.eviction_hard, want, "{body}");
    }
}

#[test]
fn bad_eviction_hard_entries_name_the_signal() {
    let cases = [
        (
            "evictionHard: {memory.free: 1Gi}",
            "evictionHard.memory.free: unknown value",
        ),
        (
            "evictionHard: {memory.available: 120%}",
            "evictionHard.memory.available: must be a percentage",
        ),
        (
            "evictionHard: {memory.available: -1Mi}",
            "evictionHard.memory.available: must be non-negative",
        ),
        (
            "evictionHard: {memory.available: lots}",
            "evictionHard.memory.available",
        ),
        ("evictionHard: [1]", "evictionHard: expected a map"),
    ];
    for (body, want) in cases {
        let err = load_text(body).expect_err(body);
        assert!(err.contains(want), "{body}: {err}");
    }
}
