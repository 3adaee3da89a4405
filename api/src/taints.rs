//! Whether a toleration tolerates a taint (upstream's `Toleration.ToleratesTaint`): the same
//! effect or none, the same key or none, and with `Equal` (the default) the same value;
//! `Exists` any value. Used by the scheduler, the DaemonSet and node-lifecycle controllers
//! and kwk-node's admission.

use k8s_openapi::api::core::v1::{Taint, Toleration};

/// Whether `toleration` tolerates `taint`.
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect = toleration.effect.as_deref().unwrap_or_default();
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or_default();
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or_default() {
        "" | "Equal" => {
            toleration.value.as_deref().unwrap_or_default()
                == taint.value.as_deref().unwrap_or_default()
        }
        "Exists" => true,
        _ => false,
    }
}

/// Whether any of `tolerations` tolerates `taint`.
pub fn tolerated(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| tolerates(t, taint))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerations() {
        let taint = Taint {
            key: "dedicated".into(),
            value: Some("db".into()),
            effect: "NoSchedule".into(),
            ..Taint::default()
        };
        let t = |key: &str, op: &str, value: &str, effect: &str| Toleration {
            key: (!key.is_empty()).then(|| key.into()),
            operator: (!op.is_empty()).then(|| op.into()),
            value: (!value.is_empty()).then(|| value.into()),
            effect: (!effect.is_empty()).then(|| effect.into()),
            toleration_seconds: None,
        };
        // (toleration, tolerates)
        let cases = [
            (t("dedicated", "Equal", "db", "NoSchedule"), true),
            (t("dedicated", "", "db", ""), true),
            (t("dedicated", "Equal", "web", "NoSchedule"), false),
            (t("dedicated", "Exists", "", ""), true),
            (t("dedicated", "Exists", "", "NoExecute"), false),
            (t("other", "Exists", "", ""), false),
            (t("", "Exists", "", ""), true),
            (t("", "Exists", "", "NoSchedule"), true),
            (t("dedicated", "Gt", "db", ""), false),
        ];
        for (i, (toleration, want)) in cases.iter().enumerate() {
            assert_eq!(
                tolerates(toleration, &taint),
                *want,
                "case {i}: {toleration:?}"
            );
        }
        assert!(tolerated(
            &[t("other", "Exists", "", ""), t("", "Exists", "", "")],
            &taint
        ));
        assert!(!tolerated(&[], &taint));
    }
}
