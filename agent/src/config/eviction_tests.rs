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

#[test]
fn soft_eviction_settings_and_their_defaults() {
    let config = load_text("").expect("empty");
    assert!(config.eviction_soft.is_empty());
    assert!(config.eviction_soft_grace_period.is_empty());
    assert_eq!(config.eviction_max_pod_grace_period, 0);
    assert_eq!(
        config.eviction_pressure_transition_period,
        std::time::Duration::from_secs(300)
    );
    assert!(config.eviction_minimum_reclaim.is_empty());

    let config = load_text(
        "evictionSoft: {memory.available: 1Gi, nodefs.available: '15%'}\n\
         evictionSoftGracePeriod: {memory.available: 1m30s, nodefs.available: 2m}\n\
         evictionMaxPodGracePeriod: 60\n\
         evictionPressureTransitionPeriod: 30s\n\
         evictionMinimumReclaim: {memory.available: 0Mi, nodefs.available: 500Mi}\n",
    )
    .expect("soft settings");
    let quantity = |s: &str| EvictionThreshold::Quantity(crate::quantity::parse(s).expect("q"));
    assert_eq!(
        config.eviction_soft,
        BTreeMap::from([
            ("memory.available".to_owned(), quantity("1Gi")),
            (
                "nodefs.available".to_owned(),
                EvictionThreshold::Percent { hundredths: 1500 }
            ),
        ])
    );
    assert_eq!(
        config.eviction_soft_grace_period,
        BTreeMap::from([
            (
                "memory.available".to_owned(),
                std::time::Duration::from_secs(90)
            ),
            (
                "nodefs.available".to_owned(),
                std::time::Duration::from_secs(120)
            ),
        ])
    );
    assert_eq!(config.eviction_max_pod_grace_period, 60);
    assert_eq!(
        config.eviction_pressure_transition_period,
        std::time::Duration::from_secs(30)
    );
    assert_eq!(
        config.eviction_minimum_reclaim,
        BTreeMap::from([
            ("memory.available".to_owned(), quantity("0Mi")),
            ("nodefs.available".to_owned(), quantity("500Mi")),
        ])
    );
}

#[test]
fn bad_soft_eviction_settings_name_the_field() {
    let cases = [
        (
            "evictionSoft: {memory.available: 1Gi}",
            "evictionSoftGracePeriod.memory.available: is required",
        ),
        (
            "evictionSoft: {memory.available: 1Gi}\nevictionSoftGracePeriod: {memory.available: 0s}",
            "evictionSoftGracePeriod.memory.available: is required",
        ),
        (
            "evictionSoft: {memory.free: 1Gi}",
            "evictionSoft.memory.free: unknown value",
        ),
        (
            "evictionSoft: {nodefs.available: 101%}",
            "evictionSoft.nodefs.available: must be a percentage",
        ),
        (
            "evictionSoftGracePeriod: {memory.available: -1s}",
            "evictionSoftGracePeriod.memory.available: must not be negative",
        ),
        (
            "evictionSoftGracePeriod: {memory.available: soon}",
            "evictionSoftGracePeriod.memory.available",
        ),
        (
            "evictionSoftGracePeriod: {pids: 1m}",
            "evictionSoftGracePeriod.pids: unknown value",
        ),
        (
            "evictionMaxPodGracePeriod: -5",
            "evictionMaxPodGracePeriod: must be at least 0 seconds",
        ),
        (
            "evictionMaxPodGracePeriod: 1.5",
            "evictionMaxPodGracePeriod: must be an integer",
        ),
        (
            "evictionPressureTransitionPeriod: -1m",
            "evictionPressureTransitionPeriod: must not be negative",
        ),
        (
            "evictionPressureTransitionPeriod: 5 minutes",
            "evictionPressureTransitionPeriod",
        ),
        (
            "evictionMinimumReclaim: {memory.available: -1Mi}",
            "evictionMinimumReclaim.memory.available: must be non-negative",
        ),
        (
            "evictionMinimumReclaim: {disk: 1Gi}",
            "evictionMinimumReclaim.disk: unknown value",
        ),
        (
            "evictionMinimumReclaim: 5",
            "evictionMinimumReclaim: expected a map",
        ),
    ];
    for (body, want) in cases {
        let err = load_text(body).expect_err(body);
        assert!(err.contains(want), "{body}: {err}");
    }
}
