//! Whether a node — its labels and name — is selected by a pod's `nodeSelector`, a
//! `NodeSelector` (a required node affinity, a PersistentVolume's node affinity: terms ORed,
//! each term's requirements ANDed) or one term, with upstream's rules: `matchExpressions` on
//! labels, `matchFields` only on `metadata.name` with `In`/`NotIn`, an empty term selects
//! nothing, `Exists`/`DoesNotExist` take no values, `In`/`NotIn` at least one, `Gt`/`Lt`
//! exactly one integer. Used by the scheduler, the DaemonSet controller and kwk-node's
//! admission.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PodSpec,
};

/// The only field a `matchFields` requirement may name.
pub const NODE_NAME_FIELD: &str = "metadata.name";

/// Whether one requirement holds for a value (`None`: the label is absent).
pub fn requirement_matches(req: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = req.values.as_deref().unwrap_or_default();
    let listed = |v: &str| values.iter().any(|x| x == v);
    match req.operator.as_str() {
        "In" => !values.is_empty() && value.is_some_and(listed),
        "NotIn" => !values.is_empty() && value.is_none_or(|v| !listed(v)),
        "Exists" => values.is_empty() && value.is_some(),
        "DoesNotExist" => values.is_empty() && value.is_none(),
        op @ ("Gt" | "Lt") => {
            let ([bound], Some(value)) = (values, value) else {
                return false;
            };
            match (value.parse::<i64>(), bound.parse::<i64>()) {
                (Ok(actual), Ok(bound)) if op == "Gt" => actual > bound,
                (Ok(actual), Ok(bound)) => actual < bound,
                _ => false,
            }
        }
        _ => false,
    }
}

/// Whether a term selects the node.
pub fn term_matches(
    term: &NodeSelectorTerm,
    labels: &BTreeMap<String, String>,
    node_name: &str,
) -> bool {
    let expressions = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if expressions.is_empty() && fields.is_empty() {
        return false;
    }
    expressions
        .iter()
        .all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
        && fields.iter().all(|r| {
            r.key == NODE_NAME_FIELD
                && matches!(r.operator.as_str(), "In" | "NotIn")
                && requirement_matches(r, Some(node_name))
        })
}

/// Whether a node selector (terms ORed) selects the node.
pub fn selector_matches(
    selector: &NodeSelector,
    labels: &BTreeMap<String, String>,
    node_name: &str,
) -> bool {
    selector
        .node_selector_terms
        .iter()
        .any(|t| term_matches(t, labels, node_name))
}

/// Whether the pod's `nodeSelector` (every label equal) and required node affinity both
/// select the node.
pub fn pod_selects_node(
    spec: &PodSpec,
    labels: &BTreeMap<String, String>,
    node_name: &str,
) -> bool {
    let selector_ok = spec
        .node_selector
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    selector_ok
        && spec
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .is_none_or(|selector| selector_matches(selector, labels, node_name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(key: &str, operator: &str, values: &[&str]) -> NodeSelectorRequirement {
        NodeSelectorRequirement {
            key: key.into(),
            operator: operator.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| (*v).into()).collect()),
        }
    }

    #[test]
    fn requirements() {
        // (operator, values, label value, matches)
        let cases: &[(&str, &[&str], Option<&str>, bool)] = &[
            ("In", &["a", "b"], Some("b"), true),
            ("In", &["a"], Some("c"), false),
            ("In", &["a"], None, false),
            ("In", &[], Some("a"), false),
            ("NotIn", &["a"], Some("c"), true),
            ("NotIn", &["a"], None, true),
            ("NotIn", &["a"], Some("a"), false),
            ("NotIn", &[], Some("a"), false),
            ("Exists", &[], Some(""), true),
            ("Exists", &[], None, false),
            ("Exists", &["a"], Some("a"), false),
            ("DoesNotExist", &[], None, true),
            ("DoesNotExist", &[], Some("a"), false),
            ("Gt", &["5"], Some("6"), true),
            ("Gt", &["5"], Some("5"), false),
            ("Gt", &["5"], Some("x"), false),
            ("Gt", &["5", "6"], Some("9"), false),
            ("Lt", &["5"], Some("-1"), true),
            ("Lt", &["5"], None, false),
            ("Equals", &["a"], Some("a"), false),
        ];
        for (operator, values, value, want) in cases {
            assert_eq!(
                requirement_matches(&req("k", operator, values), *value),
                *want,
                "{operator} {values:?} on {value:?}"
            );
        }
    }

    #[test]
    fn terms_selectors_and_pods() {
        let labels = BTreeMap::from([("zone".to_string(), "a".to_string())]);
        let term = |exprs: Vec<NodeSelectorRequirement>, fields: Vec<NodeSelectorRequirement>| {
            NodeSelectorTerm {
                match_expressions: Some(exprs),
                match_fields: Some(fields),
            }
        };
        let zone_a = term(vec![req("zone", "In", &["a"])], vec![]);
        let named = |op, name| term(vec![], vec![req(NODE_NAME_FIELD, op, &[name])]);
        assert!(term_matches(&zone_a, &labels, "n1"));
        assert!(term_matches(&named("In", "n1"), &labels, "n1"));
        assert!(!term_matches(&named("In", "n1"), &labels, "n2"));
        assert!(term_matches(&named("NotIn", "n1"), &labels, "n2"));
        assert!(
            !term_matches(
                &term(vec![], vec![req("metadata.uid", "In", &["n1"])]),
                &labels,
                "n1"
            ),
            "only metadata.name"
        );
        assert!(
            !term_matches(
                &term(vec![], vec![req(NODE_NAME_FIELD, "Exists", &[])]),
                &labels,
                "n1"
            ),
            "only In and NotIn on fields"
        );
        assert!(
            !term_matches(&term(vec![], vec![]), &labels, "n1"),
            "empty term"
        );
        let selector = NodeSelector {
            node_selector_terms: vec![named("In", "other"), zone_a],
        };
        assert!(selector_matches(&selector, &labels, "n1"), "terms ORed");
        assert!(!selector_matches(&NodeSelector::default(), &labels, "n1"));

        let mut spec = PodSpec::default();
        assert!(pod_selects_node(&spec, &labels, "n1"));
        spec.node_selector = Some(BTreeMap::from([("zone".into(), "b".into())]));
        assert!(!pod_selects_node(&spec, &labels, "n1"));
        spec.node_selector = Some(BTreeMap::from([("zone".into(), "a".into())]));
        spec.affinity = Some(k8s_openapi::api::core::v1::Affinity {
            node_affinity: Some(k8s_openapi::api::core::v1::NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                    node_selector_terms: vec![named("In", "n2")],
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert!(!pod_selects_node(&spec, &labels, "n1"));
        assert!(pod_selects_node(&spec, &labels, "n2"));
    }
}
