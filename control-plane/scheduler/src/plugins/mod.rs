//! The filter and score plugins of upstream's default profile, each a pure function of the
//! pod's pre-computed [`CycleState`] and one [`NodeInfo`](crate::snapshot::NodeInfo):
//! filters return why a node does not fit, scores return a raw score that the plugin's
//! `normalize` brings to 0..=100.

use std::borrow::Cow;

pub mod fit;
pub mod inter_pod_affinity;
pub mod node;
pub mod topology_spread;
pub mod volume_binding;

#[cfg(test)]
mod fit_tests;
#[cfg(test)]
mod inter_pod_affinity_tests;
#[cfg(test)]
mod node_tests;
#[cfg(test)]
mod topology_spread_tests;
#[cfg(test)]
mod volume_binding_tests;

/// Upstream's `MaxNodeScore`.
pub const MAX_NODE_SCORE: i64 = 100;

/// How a node failed a filter: whether evicting pods from it (preemption) might help.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// The node does not fit now; removing pods might make it fit.
    Unschedulable,
    /// The node cannot fit the pod whatever is removed from it.
    UnschedulableAndUnresolvable,
}

/// Why one node does not fit the pod: the plugin and upstream's reason texts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub plugin: &'static str,
    pub code: Code,
    pub reasons: Vec<Cow<'static, str>>,
}

impl Rejection {
    /// A rejection with one fixed reason.
    pub fn new(plugin: &'static str, code: Code, reason: &'static str) -> Self {
        Rejection {
            plugin,
            code,
            reasons: vec![Cow::Borrowed(reason)],
        }
    }
}

/// The outcome of one filter on one node.
pub type FilterResult = Result<(), Rejection>;

pub use crate::framework::CycleState;

/// Upstream's `DefaultNormalizeScore`: scales scores so the highest becomes 100 (reversed:
/// the highest becomes 0); all zero stays zero (reversed: all become 100).
pub fn default_normalize(scores: &mut [i64], reverse: bool) {
    let max = scores.iter().copied().max().unwrap_or(0);
    if max == 0 {
        if reverse {
            scores.iter_mut().for_each(|s| *s = MAX_NODE_SCORE);
        }
        return;
    }
    for s in scores.iter_mut() {
        *s = MAX_NODE_SCORE * *s / max;
        if reverse {
            *s = MAX_NODE_SCORE - *s;
        }
    }
}
