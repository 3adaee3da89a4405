//! What the proxy knows between syncs: the parsed Services and EndpointSlices, the rule set
//! built from them, and what changed since the last successful sync. Event handlers only record
//! (cheap); [`ProxyState::prepare`] brings the rule set up to date (per changed Service, or a full
//! rebuild when the node or the options changed) and yields the difference since the last
//! successful sync for the dataplane and the conntrack cleanup.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::model::input::{slice_is_relevant, slice_service};
use crate::model::{
    InputProblem, NodeState, ProxyInput, ProxyOptions, RuleDiff, RuleSet, ServiceName, Touched,
    build_rules, diff, update_service,
};

/// The proxy's inputs, rule set and pending changes.
#[derive(Debug, Default)]
pub struct ProxyState {
    input: ProxyInput,
    rules: RuleSet,
    /// Every relevant slice, by owning Service and slice name.
    slices: HashMap<ServiceName, BTreeMap<String, EndpointSlice>>,
    /// Owner of each recorded slice, by (namespace, name): a slice relabelled to another
    /// Service leaves its old owner.
    slice_owner: HashMap<(String, String), ServiceName>,
    /// Services whose spec or endpoints changed since the last `prepare`.
    dirty: BTreeSet<ServiceName>,
    /// The node or the options changed: rebuild everything.
    rebuild: bool,
    /// Old values of everything changed since the last successful sync.
    touched: Touched,
}

impl ProxyState {
    pub fn new(node: NodeState, options: ProxyOptions) -> Self {
        Self {
            input: ProxyInput {
                node,
                options,
                ..ProxyInput::default()
            },
            rebuild: true,
            ..Self::default()
        }
    }

    /// The rule set as of the last [`ProxyState::prepare`].
    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// Whether something changed since the last `prepare`.
    pub fn has_changes(&self) -> bool {
        self.rebuild || !self.dirty.is_empty()
    }

    /// Whether the next `prepare` rebuilds everything (a full sync is due).
    pub fn needs_rebuild(&self) -> bool {
        self.rebuild
    }

    /// A Service was added or updated.
    pub fn service_applied(&mut self, service: &Service) {
        let name = self.input.apply_service(service);
        self.dirty.insert(name);
    }

    /// A Service was deleted.
    pub fn service_deleted(&mut self, name: &ServiceName) {
        self.input.remove_service(name);
        self.dirty.insert(name.clone());
    }

    /// An EndpointSlice was added or updated.
    pub fn slice_applied(&mut self, slice: &EndpointSlice) {
        let key = slice_key(slice);
        let owner = slice_service(slice).filter(|_| slice_is_relevant(slice));
        if let Some(previous) = self.slice_owner.get(&key).cloned()
            && Some(&previous) != owner.as_ref()
        {
            self.forget_slice(&key, &previous);
        }
        let Some(owner) = owner else { return };
        self.slices
            .entry(owner.clone())
            .or_default()
            .insert(key.1.clone(), slice.clone());
        self.slice_owner.insert(key, owner.clone());
        self.refresh_endpoints(&owner);
    }

    /// An EndpointSlice was deleted.
    pub fn slice_deleted(&mut self, slice: &EndpointSlice) {
        let key = slice_key(slice);
        if let Some(owner) = self.slice_owner.get(&key).cloned() {
            self.forget_slice(&key, &owner);
        }
    }

    /// The node's addresses, pod CIDRs or zone: a change rebuilds everything.
    pub fn set_node(&mut self, node: NodeState) {
        if self.input.node != node {
            self.input.node = node;
            self.rebuild = true;
        }
    }

    /// The proxy options: a change rebuilds everything.
    pub fn set_options(&mut self, options: ProxyOptions) {
        if self.input.options != options {
            self.input.options = options;
            self.rebuild = true;
        }
    }

    /// Brings the rule set up to date with the recorded changes and returns what went wrong
    /// while parsing and building (for logs). The difference since the last successful sync
    /// is then in [`ProxyState::for_sync`].
    pub fn prepare(&mut self) -> Vec<InputProblem> {
        let mut problems = std::mem::take(&mut self.input.problems);
        if self.rebuild {
            // Endpoints depend on the node name (locality): re-join them all.
            let owners: Vec<ServiceName> = self.slices.keys().cloned().collect();
            for owner in owners {
                self.refresh_endpoints(&owner);
            }
            problems.append(&mut self.input.problems);
            let new = build_rules(&self.input, &mut problems);
            let touched = touched_between(&self.rules, &new);
            self.touched.merge(touched);
            self.rules = new;
            self.rebuild = false;
            self.dirty.clear();
        } else {
            for name in std::mem::take(&mut self.dirty) {
                let touched = update_service(&mut self.rules, &self.input, &name, &mut problems);
                self.touched.merge(touched);
            }
        }
        problems
    }

    /// The rule set and everything changed since the last successful sync (old values against
    /// the current rule set), borrowed together for a sync.
    pub fn for_sync(&self) -> (&RuleSet, RuleDiff<'_>) {
        (&self.rules, self.touched.diff(&self.rules))
    }

    /// The last sync succeeded: the current rule set is what the kernel has.
    pub fn synced(&mut self) {
        self.touched = Touched::default();
    }

    fn forget_slice(&mut self, key: &(String, String), owner: &ServiceName) {
        self.slice_owner.remove(key);
        if let Some(slices) = self.slices.get_mut(owner) {
            slices.remove(&key.1);
            if slices.is_empty() {
                self.slices.remove(owner);
            }
        }
        self.refresh_endpoints(owner);
    }

    fn refresh_endpoints(&mut self, owner: &ServiceName) {
        let slices = self.slices.get(owner).into_iter().flat_map(|m| m.values());
        self.input.apply_slices(owner, slices);
        self.dirty.insert(owner.clone());
    }
}

fn slice_key(slice: &EndpointSlice) -> (String, String) {
    (
        slice.metadata.namespace.clone().unwrap_or_default(),
        slice.metadata.name.clone().unwrap_or_default(),
    )
}

/// The old values of every entry that differs between `old` and `new`.
fn touched_between(old: &RuleSet, new: &RuleSet) -> Touched {
    let d = diff(old, new);
    let mut touched = Touched::default();
    for (key, _) in &d.added {
        touched.front_ends.insert(**key, None);
    }
    for (key, fe) in &d.removed {
        touched.front_ends.insert(**key, Some((*fe).clone()));
    }
    for change in &d.changed {
        touched
            .front_ends
            .insert(*change.key, Some(change.old.clone()));
    }
    for (port, _) in &d.health_checks_set {
        touched
            .health_checks
            .insert(*port, old.health_check_node_ports.get(port).cloned());
    }
    for port in &d.health_checks_removed {
        touched
            .health_checks
            .insert(*port, old.health_check_node_ports.get(port).cloned());
    }
    touched
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
