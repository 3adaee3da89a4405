//! The selectors of the Services, ReplicaSets and StatefulSets, for
//! upstream's system default topology spreading: a pod without its own spread constraints
//! is spread like the other pods of the objects that select it (the union of their
//! selectors, as upstream's `DefaultSelector`).

use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kwk_api::meta::{selector_is_empty, selector_matches};

/// The kinds whose selectors count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SelectorKind {
    Service,
    ReplicaSet,
    StatefulSet,
}

/// Selectors by namespace, then by (kind, name).
#[derive(Debug, Default)]
pub struct SpreadSelectors {
    by_namespace: HashMap<String, BTreeMap<(SelectorKind, String), LabelSelector>>,
}

/// A Service's map selector as a label selector.
pub fn from_map(selector: Option<&BTreeMap<String, String>>) -> Option<LabelSelector> {
    selector.filter(|m| !m.is_empty()).map(|m| LabelSelector {
        match_labels: Some(m.clone()),
        match_expressions: None,
    })
}

impl SpreadSelectors {
    /// Records (or, with `None`, forgets) the selector of `kind` `namespace/name`.
    pub fn set(
        &mut self,
        kind: SelectorKind,
        namespace: &str,
        name: &str,
        selector: Option<LabelSelector>,
    ) {
        let key = (kind, name.to_string());
        match selector.filter(|s| !selector_is_empty(s)) {
            Some(selector) => {
                self.by_namespace
                    .entry(namespace.to_string())
                    .or_default()
                    .insert(key, selector);
            }
            None => {
                if let Some(objects) = self.by_namespace.get_mut(namespace) {
                    objects.remove(&key);
                    if objects.is_empty() {
                        self.by_namespace.remove(namespace);
                    }
                }
            }
        }
    }

    /// After a (re-)list of `kind`: forgets the objects whose `namespace/name` is not listed.
    pub fn prune(&mut self, kind: SelectorKind, listed: &HashSet<String>) {
        for (namespace, objects) in &mut self.by_namespace {
            objects.retain(|(k, name), _| {
                *k != kind || listed.contains(&format!("{namespace}/{name}"))
            });
        }
        self.by_namespace.retain(|_, objects| !objects.is_empty());
    }

    /// The union of the selectors selecting a pod with `labels` in `namespace`: all their
    /// `matchLabels` and `matchExpressions` together; `None` when nothing selects it.
    pub fn selector_for(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> Option<LabelSelector> {
        let objects = self.by_namespace.get(namespace)?;
        let mut match_labels = BTreeMap::new();
        let mut match_expressions = Vec::new();
        let mut any = false;
        for selector in objects.values() {
            if !selector_matches(selector, labels) {
                continue;
            }
            any = true;
            match_labels.extend(selector.match_labels.clone().unwrap_or_default());
            match_expressions.extend(selector.match_expressions.clone().unwrap_or_default());
        }
        any.then(|| LabelSelector {
            match_labels: (!match_labels.is_empty()).then_some(match_labels),
            match_expressions: (!match_expressions.is_empty()).then_some(match_expressions),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selectors_of_the_pods_namespace_that_match_are_merged() {
        let mut s = SpreadSelectors::default();
        s.set(
            SelectorKind::Service,
            "ns",
            "web",
            from_map(Some(&labels(&[("app", "web")]))),
        );
        s.set(
            SelectorKind::ReplicaSet,
            "ns",
            "web-1",
            from_map(Some(&labels(&[("app", "web"), ("hash", "1")]))),
        );
        s.set(
            SelectorKind::ReplicaSet,
            "other",
            "web-1",
            from_map(Some(&labels(&[("zone", "x")]))),
        );
        s.set(
            SelectorKind::StatefulSet,
            "ns",
            "db",
            from_map(Some(&labels(&[("app", "db")]))),
        );
        let pod = labels(&[("app", "web"), ("hash", "1")]);
        let merged = s.selector_for("ns", &pod).expect("selected");
        assert_eq!(merged.match_labels, Some(pod.clone()));
        assert_eq!(s.selector_for("ns", &labels(&[("app", "x")])), None);
        assert_eq!(s.selector_for("empty", &pod), None);

        s.set(SelectorKind::ReplicaSet, "ns", "web-1", None);
        s.prune(SelectorKind::Service, &HashSet::new());
        assert_eq!(s.selector_for("ns", &pod), None);
        assert!(s.selector_for("ns", &labels(&[("app", "db")])).is_some());
    }
}
