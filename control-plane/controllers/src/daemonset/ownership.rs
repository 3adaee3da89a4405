//! Which pods and revisions a DaemonSet or StatefulSet owns (upstream's `ClaimPods` /
//! `ClaimControllerRevisions`): what it controls and its selector still matches, plus
//! orphans the selector matches (adopted with a patch adding the controller reference);
//! controlled objects the selector no longer matches are released.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::{Metadata, Resource};
use serde_json::json;

use crate::action::Action;
use crate::common::{controller_of, controller_ref};

/// Whether `labels` satisfy `selector` (an empty selector matches nothing, as a workload
/// controller reads it).
pub fn selector_matches(
    selector: &LabelSelector,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    let empty = BTreeMap::new();
    let labels = labels.unwrap_or(&empty);
    let match_labels = selector.match_labels.as_ref();
    let expressions = selector.match_expressions.as_deref().unwrap_or_default();
    if match_labels.is_none_or(BTreeMap::is_empty) && expressions.is_empty() {
        return false;
    }
    let labels_ok = match_labels
        .into_iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expressions_ok = expressions.iter().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    labels_ok && expressions_ok
}

/// The objects an owner works with, and the patches adopting or releasing the rest.
#[derive(Debug)]
pub struct Claimed<'a, T> {
    pub owned: Vec<&'a T>,
    pub actions: Vec<Action>,
}

/// Sort `objects` into what `owner` controls (adopting matching orphans) and release what
/// it controls but no longer selects.
pub fn claim<'a, K, T>(owner: &K, selector: &LabelSelector, objects: &'a [T]) -> Claimed<'a, T>
where
    K: Resource + Metadata<Ty = ObjectMeta>,
    T: Resource + Metadata<Ty = ObjectMeta>,
{
    let uid = owner.metadata().uid.as_deref().unwrap_or_default();
    let mut out = Claimed {
        owned: Vec::new(),
        actions: Vec::new(),
    };
    for object in objects {
        let meta = object.metadata();
        let matches = selector_matches(selector, meta.labels.as_ref());
        let refs = meta.owner_references.clone().unwrap_or_default();
        match controller_of(meta) {
            Some(controller) if controller.uid == uid => {
                if matches {
                    out.owned.push(object);
                } else if meta.deletion_timestamp.is_none() {
                    let kept: Vec<_> = refs.into_iter().filter(|r| r.uid != uid).collect();
                    let patch = json!({ "metadata": { "ownerReferences": kept, "uid": meta.uid } });
                    out.actions.push(Action::patch(object, None, patch));
                }
            }
            Some(_) => {}
            None => {
                if matches && meta.deletion_timestamp.is_none() {
                    let mut adopted = refs;
                    adopted.push(controller_ref(owner));
                    let patch =
                        json!({ "metadata": { "ownerReferences": adopted, "uid": meta.uid } });
                    out.actions.push(Action::patch(object, None, patch));
                    out.owned.push(object);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::DaemonSet;
    use k8s_openapi::api::core::v1::Pod;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
        LabelSelectorRequirement, OwnerReference,
    };

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selectors() {
        let expr = |op: &str, values: &[&str]| LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: op.into(),
                values: Some(values.iter().map(|v| v.to_string()).collect()),
            }]),
            match_labels: None,
        };
        let by_label = LabelSelector {
            match_labels: Some(labels(&[("app", "a")])),
            match_expressions: None,
        };
        let cases = [
            (
                "matchLabels hit",
                by_label.clone(),
                labels(&[("app", "a"), ("x", "y")]),
                true,
            ),
            ("matchLabels miss", by_label, labels(&[("app", "b")]), false),
            (
                "empty selector selects nothing",
                LabelSelector::default(),
                labels(&[("app", "a")]),
                false,
            ),
            (
                "In",
                expr("In", &["web", "db"]),
                labels(&[("tier", "db")]),
                true,
            ),
            (
                "NotIn",
                expr("NotIn", &["web"]),
                labels(&[("tier", "web")]),
                false,
            ),
            (
                "Exists",
                expr("Exists", &[]),
                labels(&[("tier", "x")]),
                true,
            ),
            (
                "DoesNotExist",
                expr("DoesNotExist", &[]),
                labels(&[("tier", "x")]),
                false,
            ),
        ];
        for (name, selector, l, want) in cases {
            assert_eq!(selector_matches(&selector, Some(&l)), want, "{name}");
        }
    }

    #[test]
    fn claim_adopts_orphans_and_releases_strays() {
        let owner = DaemonSet {
            metadata: ObjectMeta {
                name: Some("agent".into()),
                uid: Some("ds-uid".into()),
                ..ObjectMeta::default()
            },
            ..DaemonSet::default()
        };
        let selector = LabelSelector {
            match_labels: Some(labels(&[("app", "agent")])),
            match_expressions: None,
        };
        let pod = |name: &str, app: &str, controller: Option<&str>| Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(labels(&[("app", app)])),
                owner_references: controller.map(|uid| {
                    vec![OwnerReference {
                        uid: uid.into(),
                        controller: Some(true),
                        ..OwnerReference::default()
                    }]
                }),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        };
        let pods = [
            pod("mine", "agent", Some("ds-uid")),
            pod("orphan", "agent", None),
            pod("stray", "other", Some("ds-uid")),
            pod("foreign", "agent", Some("rs-uid")),
            pod("unrelated", "other", None),
        ];
        let claimed = claim(&owner, &selector, &pods);
        let owned: Vec<_> = claimed
            .owned
            .iter()
            .filter_map(|p| p.metadata.name.as_deref())
            .collect();
        assert_eq!(owned, ["mine", "orphan"]);
        let patched: Vec<_> = claimed
            .actions
            .iter()
            .map(|a| a.target().name.as_str())
            .collect();
        assert_eq!(patched, ["orphan", "stray"]);
        let Action::Patch { patch, .. } = &claimed.actions[0] else {
            panic!("a patch");
        };
        assert_eq!(patch["metadata"]["ownerReferences"][0]["uid"], "ds-uid");
        assert_eq!(patch["metadata"]["ownerReferences"][0]["controller"], true);
        let Action::Patch { patch, .. } = &claimed.actions[1] else {
            panic!("a patch");
        };
        assert_eq!(patch["metadata"]["ownerReferences"], serde_json::json!([]));
    }
}
