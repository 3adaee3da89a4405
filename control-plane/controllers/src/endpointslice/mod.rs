//! The endpointslice controller's planner: the EndpointSlices a selector Service should
//! have, reconciled against the slices it has with as little churn as upstream's
//! reconciler (endpoints stay in their slice, partly full slices are filled before new ones
//! are created, emptied slices are reused or deleted, unchanged slices are not written).
//!
//! - [`endpoints`]: what one pod contributes (endpoint, conditions, resolved ports).

mod endpoints;

pub mod controller;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::action::Action;
use crate::common::controller_ref;

pub use endpoints::{ADDRESS_TYPE_IPV4, ADDRESS_TYPE_IPV6, LABEL_TOPOLOGY_ZONE};

/// Upstream's default `--max-endpoints-per-slice`.
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;
/// The `managed-by` value of the slices this controller owns.
pub const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";
/// The label naming a slice's Service.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
/// The label naming a slice's manager.
pub const LABEL_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// The label marking the slices of a headless Service.
pub const LABEL_HEADLESS: &str = "service.kubernetes.io/headless";
/// The annotation upstream sets to the time of the change that triggered a write (not
/// written by this planner).
pub const ANNOTATION_LAST_CHANGE_TRIGGER_TIME: &str =
    "endpoints.kubernetes.io/last-change-trigger-time";

/// The writes that bring `service`'s EndpointSlices in line with its `pods`, with upstream's
/// limit of [`MAX_ENDPOINTS_PER_SLICE`] endpoints per slice. See [`plan_with_limit`].
pub fn plan(
    service: &Service,
    pods: &[Pod],
    nodes: &[Node],
    existing: &[EndpointSlice],
) -> Vec<Action> {
    plan_with_limit(service, pods, nodes, existing, MAX_ENDPOINTS_PER_SLICE)
}

/// The writes that bring `service`'s EndpointSlices in line with its `pods`.
///
/// `pods` and `existing` may hold more than the service's: pods are filtered by namespace
/// and selector, slices by namespace and the service-name / managed-by labels. A Service
/// without a selector, or of type `ExternalName`, is left alone (its slices are someone
/// else's). A pod on a node missing from `nodes` is left out (unless the service publishes
/// not-ready addresses), as upstream does; the caller should retry such a service later.
/// Actions come as creates, then updates, then deletes; a terminating Service gets no
/// creates.
pub fn plan_with_limit(
    service: &Service,
    pods: &[Pod],
    nodes: &[Node],
    existing: &[EndpointSlice],
    max_endpoints: usize,
) -> Vec<Action> {
    let max_endpoints = max_endpoints.max(1);
    let Some(spec) = service.spec.as_ref() else {
        return Vec::new();
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        return Vec::new();
    }
    let Some(selector) = spec.selector.as_ref() else {
        return Vec::new();
    };
    let namespace = service.metadata.namespace.as_deref();
    let service_name = service.metadata.name.as_deref().unwrap_or_default();
    let publish_not_ready = spec.publish_not_ready_addresses.unwrap_or(false);
    let nodes = endpoints::nodes_by_name(nodes);

    let mut selected: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.metadata.namespace.as_deref() == namespace)
        .filter(|p| {
            let labels = p.metadata.labels.as_ref();
            selector
                .iter()
                .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
        })
        .filter(|p| endpoints::is_publishable(p))
        .collect();
    selected.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));

    let mut ours: Vec<&EndpointSlice> = existing
        .iter()
        .filter(|s| s.metadata.namespace.as_deref() == namespace)
        .filter(|s| {
            let labels = s.metadata.labels.as_ref();
            labels
                .and_then(|l| l.get(LABEL_SERVICE_NAME))
                .map(String::as_str)
                == Some(service_name)
                && labels
                    .and_then(|l| l.get(LABEL_MANAGED_BY))
                    .map(String::as_str)
                    == Some(CONTROLLER_NAME)
        })
        .collect();
    ours.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));

    let desired_labels = desired_labels(service);
    let mut writes = Writes::default();
    let address_types = endpoints::address_types(service);
    for address_type in &address_types {
        // Desired endpoints of this family, grouped by the ports they resolve to.
        let mut desired: BTreeMap<String, (Vec<EndpointPort>, Vec<Endpoint>)> = BTreeMap::new();
        for pod in &selected {
            let node_name = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
            let node = node_name.and_then(|n| nodes.get(n).copied());
            if node.is_none() && !publish_not_ready {
                continue;
            }
            let Some(endpoint) = endpoints::endpoint_of(pod, node, service, address_type) else {
                continue;
            };
            let ports = endpoints::ports_of(pod, service);
            let entry = desired
                .entry(endpoints::port_key(&ports))
                .or_insert_with(|| (ports, Vec::new()));
            entry.1.push(endpoint);
        }

        let mut existing_by_key: BTreeMap<String, Vec<&EndpointSlice>> = BTreeMap::new();
        let mut owned_count = 0;
        let mut of_type = Writes::default();
        for slice in ours.iter().filter(|s| s.address_type == *address_type) {
            if owned_by(slice, service) {
                owned_count += 1;
                let key = endpoints::port_key(slice.ports.as_deref().unwrap_or_default());
                existing_by_key.entry(key).or_default().push(slice);
            } else {
                writes.deletes.push((*slice).clone());
            }
        }
        let keys: BTreeSet<String> = desired
            .keys()
            .chain(existing_by_key.keys())
            .cloned()
            .collect();
        for key in keys {
            let (ports, wanted) = desired.remove(&key).unwrap_or_default();
            let slices = existing_by_key.remove(&key).unwrap_or_default();
            let ports = match slices.first() {
                Some(slice) if wanted.is_empty() => slice.ports.clone().unwrap_or_default(),
                _ => ports,
            };
            let context = SliceContext {
                service,
                address_type,
                labels: &desired_labels,
                ports: &ports,
                max_endpoints,
            };
            reconcile_port_group(&context, &slices, wanted, &mut of_type);
        }

        // Keep a placeholder slice when the service has no endpoints of this family.
        if owned_count == of_type.deletes.len() && of_type.creates.is_empty() {
            let placeholder = new_slice(&SliceContext {
                service,
                address_type,
                labels: &desired_labels,
                ports: &[],
                max_endpoints,
            });
            match of_type.deletes.as_slice() {
                [only] if is_same_placeholder(only, &placeholder) => of_type.deletes.clear(),
                _ => of_type.creates.push(placeholder),
            }
        }
        of_type.reuse_deleted_slices_for_creates();
        writes.absorb(of_type);
    }
    // Slices of families the service no longer has.
    for slice in &ours {
        if !address_types.contains(&slice.address_type.as_str()) {
            writes.deletes.push((*slice).clone());
        }
    }

    let mut actions = Vec::new();
    if service.metadata.deletion_timestamp.is_none() {
        actions.extend(writes.creates.iter().map(Action::create));
    }
    actions.extend(writes.updates.iter().map(Action::update));
    actions.extend(writes.deletes.iter().map(|s| Action::delete(s, None)));
    actions
}

/// The slices one reconcile creates, updates and deletes.
#[derive(Debug, Default)]
struct Writes {
    creates: Vec<EndpointSlice>,
    updates: Vec<EndpointSlice>,
    deletes: Vec<EndpointSlice>,
}

impl Writes {
    /// Rather than delete a slice and create another, rewrite the doomed one.
    fn reuse_deleted_slices_for_creates(&mut self) {
        while !self.creates.is_empty() && !self.deletes.is_empty() {
            let doomed = self.deletes.remove(0);
            let Some(fresh) = self.creates.pop() else {
                break;
            };
            let mut reused = doomed;
            reused.endpoints = fresh.endpoints;
            reused.ports = fresh.ports;
            reused.metadata.labels = fresh.metadata.labels;
            self.updates.push(reused);
        }
    }

    fn absorb(&mut self, other: Writes) {
        self.creates.extend(other.creates);
        self.updates.extend(other.updates);
        self.deletes.extend(other.deletes);
    }
}

/// What every slice of one (address type, port set) group shares.
struct SliceContext<'a> {
    service: &'a Service,
    address_type: &'a str,
    labels: &'a BTreeMap<String, String>,
    ports: &'a [EndpointPort],
    max_endpoints: usize,
}

/// Reconciles the existing slices of one port group with the endpoints that want them.
fn reconcile_port_group(
    context: &SliceContext<'_>,
    slices: &[&EndpointSlice],
    wanted: Vec<Endpoint>,
    writes: &mut Writes,
) {
    let mut pending: BTreeMap<String, Endpoint> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for endpoint in wanted {
        let key = endpoints::endpoint_key(&endpoint);
        if pending.insert(key.clone(), endpoint).is_none() {
            order.push(key);
        }
    }

    // 1. Keep each wanted endpoint in the slice that already holds it.
    let mut to_update: Vec<EndpointSlice> = Vec::new();
    let mut unchanged: Vec<&EndpointSlice> = Vec::new();
    for slice in slices {
        let mut changed = slice.metadata.labels.as_ref() != Some(context.labels);
        let mut kept = Vec::new();
        for endpoint in &slice.endpoints {
            match pending.remove(&endpoints::endpoint_key(endpoint)) {
                Some(want) => {
                    changed |= want != *endpoint;
                    kept.push(want);
                }
                None => changed = true,
            }
        }
        if kept.is_empty() {
            writes.deletes.push((*slice).clone());
        } else if changed {
            let mut updated = (*slice).clone();
            updated.endpoints = kept;
            updated.metadata.labels = Some(context.labels.clone());
            to_update.push(updated);
        } else {
            unchanged.push(slice);
        }
    }
    let mut remaining: Vec<Endpoint> = order.iter().filter_map(|key| pending.remove(key)).collect();
    remaining.reverse(); // pop() takes them in pod order

    // 2. Top up the slices being written anyway, fullest first.
    to_update.sort_by_key(|s| std::cmp::Reverse(s.endpoints.len()));
    for slice in &mut to_update {
        fill(slice, &mut remaining, context.max_endpoints);
    }

    // 3. The rest: into the unchanged slice they fit best when they fit one, else new slices.
    while !remaining.is_empty() {
        let best_fit = (remaining.len() < context.max_endpoints)
            .then(|| best_fitting_slice(&unchanged, remaining.len(), context.max_endpoints))
            .flatten();
        let mut slice = match best_fit {
            Some(index) => {
                let mut slice = unchanged.remove(index).clone();
                slice.metadata.labels = Some(context.labels.clone());
                slice
            }
            None => new_slice(context),
        };
        fill(&mut slice, &mut remaining, context.max_endpoints);
        if slice.metadata.name.is_some() {
            to_update.push(slice);
        } else {
            writes.creates.push(slice);
        }
    }
    writes.updates.extend(to_update);
}

fn fill(slice: &mut EndpointSlice, remaining: &mut Vec<Endpoint>, max_endpoints: usize) {
    while slice.endpoints.len() < max_endpoints {
        let Some(endpoint) = remaining.pop() else {
            break;
        };
        slice.endpoints.push(endpoint);
    }
}

/// The unchanged slice that `count` more endpoints leave closest to full (without
/// overflowing it).
fn best_fitting_slice(
    slices: &[&EndpointSlice],
    count: usize,
    max_endpoints: usize,
) -> Option<usize> {
    slices
        .iter()
        .enumerate()
        .filter(|(_, s)| s.endpoints.len() + count <= max_endpoints)
        .max_by_key(|(index, s)| (s.endpoints.len(), std::cmp::Reverse(*index)))
        .map(|(index, _)| index)
}

/// The labels of the service's slices: the service's own labels, the headless marker, and
/// the service-name / managed-by labels.
fn desired_labels(service: &Service) -> BTreeMap<String, String> {
    let mut labels = service.metadata.labels.clone().unwrap_or_default();
    labels.remove(LABEL_HEADLESS);
    // Upstream marks every service without a cluster IP (none, or not yet allocated).
    let cluster_ip = service.spec.as_ref().and_then(|s| s.cluster_ip.as_deref());
    let headless = matches!(cluster_ip, None | Some("" | "None"));
    if headless {
        labels.insert(LABEL_HEADLESS.into(), String::new());
    }
    labels.insert(
        LABEL_SERVICE_NAME.into(),
        service.metadata.name.clone().unwrap_or_default(),
    );
    labels.insert(LABEL_MANAGED_BY.into(), CONTROLLER_NAME.into());
    labels
}

/// A new, empty slice for the group (named by the apiserver from `<service>-`).
fn new_slice(context: &SliceContext<'_>) -> EndpointSlice {
    let service = context.service;
    EndpointSlice {
        metadata: ObjectMeta {
            generate_name: Some(slice_name_prefix(
                service.metadata.name.as_deref().unwrap_or_default(),
            )),
            namespace: service.metadata.namespace.clone(),
            labels: Some(context.labels.clone()),
            owner_references: Some(vec![controller_ref(service)]),
            ..ObjectMeta::default()
        },
        address_type: context.address_type.to_string(),
        endpoints: Vec::new(),
        ports: Some(context.ports.to_vec()),
    }
}

/// `<service>-`, shortened so the generated name stays a valid label-length name.
fn slice_name_prefix(service_name: &str) -> String {
    // The apiserver appends 5 random characters to a generateName.
    const MAX_PREFIX: usize = 63 - 5;
    let mut prefix = format!("{service_name}-");
    if prefix.len() > MAX_PREFIX {
        prefix.truncate(MAX_PREFIX);
    }
    prefix
}

/// Whether the service owns the slice (any owner reference to its uid).
fn owned_by(slice: &EndpointSlice, service: &Service) -> bool {
    let Some(uid) = service.metadata.uid.as_deref() else {
        return false;
    };
    slice
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.kind == "Service" && r.api_version == "v1" && r.uid == uid)
}

/// Whether `existing` is already the placeholder the service would get.
fn is_same_placeholder(existing: &EndpointSlice, placeholder: &EndpointSlice) -> bool {
    existing.endpoints.is_empty()
        && existing.ports.as_deref().unwrap_or_default().is_empty()
        && existing.address_type == placeholder.address_type
        && existing.metadata.labels == placeholder.metadata.labels
        && existing.metadata.owner_references == placeholder.metadata.owner_references
}
