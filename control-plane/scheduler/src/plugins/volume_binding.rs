//! VolumeBinding for pre-created (static) PersistentVolumes, as upstream's plugin does it:
//!
//! - PreFilter ([`pre_filter`]): every `persistentVolumeClaim` volume of the pod must name a
//!   claim that exists, is not `Lost` and is not being deleted; a claim not yet bound must
//!   be of a `WaitForFirstConsumer` class (an unbound Immediate claim is the pv controller's
//!   to bind first). Any failure rejects the pod on every node, unresolvably.
//! - Filter ([`filter`]): the volume of each bound claim must exist and its
//!   `nodeAffinity.required` admit the node; each WaitForFirstConsumer claim needs its own
//!   volume ([`kwk_api::persistent_volume::find_matching_volume`], the pv controller's
//!   matching, plus the volume's node affinity), smallest claims first.
//! - The bindings on the chosen node ([`bindings`]) are what the scheduler assumes and
//!   writes before binding the pod (PreBind), then waits for the pv controller to complete.
//!
//! Node affinity is matched on the node's labels and, for `matchFields`, its name.
//! Dynamic provisioning (a class with a real provisioner, `volume.kubernetes.io/selected-node`)
//! and generic ephemeral volumes are not handled.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kwk_api::persistent_volume::{
    MatchOptions, claim_class, claim_phase, claim_request, find_matching_volume, is_delay_binding,
    is_fully_bound, pv_name, volume_name,
};

use super::{Code, CycleState, FilterResult, Rejection};
use crate::snapshot::NodeInfo;
use crate::volumes::VolumeCache;
use kwk_api::node_selector::selector_matches;

pub const VOLUME_BINDING: &str = "VolumeBinding";

pub const REASON_BIND_CONFLICT: &str = "node(s) didn't find available persistent volumes to bind";
pub const REASON_NODE_CONFLICT: &str = "node(s) had volume node affinity conflict";
pub const REASON_PV_NOT_EXIST: &str =
    "node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)";
pub const REASON_UNBOUND_IMMEDIATE: &str = "pod has unbound immediate PersistentVolumeClaims";

/// A volume the scheduler binds to one of the pod's claims.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    pub volume: String,
    pub claim_namespace: String,
    pub claim_name: String,
}

/// The pod's claims as PreFilter found them.
#[derive(Clone, Debug, Default)]
pub struct PodClaims {
    /// The volumes of the bound claims: (name, the volume when it exists).
    pub bound: Vec<(String, Option<Arc<PersistentVolume>>)>,
    /// The unbound WaitForFirstConsumer claims, smallest request first, each with the
    /// volumes of its class.
    pub delayed: Vec<(Arc<PersistentVolumeClaim>, Vec<Arc<PersistentVolume>>)>,
}

/// What PreFilter decided.
#[derive(Clone, Debug, Default)]
pub enum PreFilterState {
    /// The pod has no claims: the plugin has nothing to say.
    #[default]
    Skip,
    /// The pod cannot be scheduled anywhere, with upstream's message.
    Rejected(String),
    Claims(PodClaims),
}

impl PreFilterState {
    /// The PreFilter rejection message, if any.
    pub fn rejection(&self) -> Option<&str> {
        match self {
            PreFilterState::Rejected(message) => Some(message),
            _ => None,
        }
    }
}

/// PreFilter: looks the pod's claims up and sorts them into bound and waiting ones.
pub fn pre_filter(pod: &Pod, cache: &VolumeCache) -> PreFilterState {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let names = pod
        .spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| v.persistent_volume_claim.as_ref())
        .map(|source| source.claim_name.as_str());
    let mut claims: Vec<&Arc<PersistentVolumeClaim>> = Vec::new();
    for name in names {
        let Some(claim) = cache.claim(namespace, name) else {
            return PreFilterState::Rejected(format!("persistentvolumeclaim \"{name}\" not found"));
        };
        if claim_phase(claim) == "Lost" {
            return PreFilterState::Rejected(format!(
                "persistentvolumeclaim \"{name}\" bound to non-existent persistentvolume \"{}\"",
                volume_name(claim)
            ));
        }
        if claim.metadata.deletion_timestamp.is_some() {
            return PreFilterState::Rejected(format!(
                "persistentvolumeclaim \"{name}\" is being deleted"
            ));
        }
        if !claims.iter().any(|c| Arc::ptr_eq(c, claim)) {
            claims.push(claim);
        }
    }
    if claims.is_empty() {
        return PreFilterState::Skip;
    }
    let mut found = PodClaims::default();
    for claim in claims {
        if is_fully_bound(claim) {
            let name = volume_name(claim);
            found
                .bound
                .push((name.to_string(), cache.volume(name).cloned()));
        } else if volume_name(claim).is_empty() && is_delay_binding(claim, |c| cache.class(c)) {
            let class = claim_class(claim);
            let volumes = cache
                .volumes()
                .filter(|pv| {
                    pv.spec
                        .as_ref()
                        .and_then(|s| s.storage_class_name.as_deref())
                        .unwrap_or_default()
                        == class
                })
                .cloned()
                .collect();
            found.delayed.push((claim.clone(), volumes));
        } else {
            // Immediate, or naming its volume: the pv controller binds it first.
            return PreFilterState::Rejected(REASON_UNBOUND_IMMEDIATE.to_string());
        }
    }
    found.delayed.sort_by_key(|(claim, _)| claim_request(claim));
    PreFilterState::Claims(found)
}

/// Whether the volume's required node affinity admits the node.
pub fn volume_fits_node(pv: &PersistentVolume, node: &NodeInfo) -> bool {
    pv.spec
        .as_ref()
        .and_then(|s| s.node_affinity.as_ref())
        .and_then(|a| a.required.as_ref())
        .is_none_or(|selector| selector_matches(selector, node.labels(), &node.name))
}

/// The bindings the pod's waiting claims get on `node`, or why the node does not fit.
pub fn find_pod_volumes(claims: &PodClaims, node: &NodeInfo) -> Result<Vec<Binding>, Rejection> {
    let mut node_conflict = false;
    let mut missing_volume = false;
    for (_, pv) in &claims.bound {
        match pv {
            None => {
                missing_volume = true;
                break;
            }
            Some(pv) if !volume_fits_node(pv, node) => {
                node_conflict = true;
                break;
            }
            Some(_) => {}
        }
    }
    let mut chosen: HashSet<String> = HashSet::new();
    let mut bindings = Vec::new();
    let mut unmatched = false;
    let fits = |pv: &PersistentVolume| volume_fits_node(pv, node);
    for (claim, volumes) in &claims.delayed {
        let excluded = |name: &str| chosen.contains(name);
        let options = MatchOptions {
            excluded: &excluded,
            prebound_only: false,
            node_fits: Some(&fits),
        };
        let Some(pv) = find_matching_volume(claim, volumes.iter().map(|v| v.as_ref()), &options)
        else {
            unmatched = true;
            continue;
        };
        let volume = pv_name(pv).to_string();
        chosen.insert(volume.clone());
        bindings.push(Binding {
            volume,
            claim_namespace: claim.metadata.namespace.clone().unwrap_or_default(),
            claim_name: claim.metadata.name.clone().unwrap_or_default(),
        });
    }
    let reasons: Vec<Cow<'static, str>> = [
        (node_conflict, REASON_NODE_CONFLICT),
        (unmatched, REASON_BIND_CONFLICT),
        (missing_volume, REASON_PV_NOT_EXIST),
    ]
    .into_iter()
    .filter(|(failed, _)| *failed)
    .map(|(_, reason)| Cow::Borrowed(reason))
    .collect();
    if reasons.is_empty() {
        Ok(bindings)
    } else {
        Err(Rejection {
            plugin: VOLUME_BINDING,
            code: Code::UnschedulableAndUnresolvable,
            reasons,
        })
    }
}

/// VolumeBinding filter.
pub fn filter(state: &CycleState<'_>, node: &NodeInfo) -> FilterResult {
    match &state.volumes {
        PreFilterState::Skip => Ok(()),
        PreFilterState::Rejected(message) => Err(Rejection {
            plugin: VOLUME_BINDING,
            code: Code::UnschedulableAndUnresolvable,
            reasons: vec![Cow::Owned(message.clone())],
        }),
        PreFilterState::Claims(claims) => find_pod_volumes(claims, node).map(|_| ()),
    }
}

/// The volumes to bind for the pod on the chosen `node` (none when the pod has no waiting
/// claims).
pub fn bindings(state: &CycleState<'_>, node: &NodeInfo) -> Vec<Binding> {
    match &state.volumes {
        PreFilterState::Claims(claims) if !claims.delayed.is_empty() => {
            find_pod_volumes(claims, node).unwrap_or_default()
        }
        _ => Vec::new(),
    }
}
