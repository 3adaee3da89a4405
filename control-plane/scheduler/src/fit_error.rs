//! Why a pod fits no node, rendered the way upstream's `FitError` reads in `FailedScheduling`
//! events and the `PodScheduled` condition: `0/3 nodes are available: 1 node(s) had
//! untolerated taint {k: v}, 2 Insufficient cpu. preemption: 0/3 nodes are available: 3
//! Preemption is not helpful for scheduling.`

use std::collections::HashMap;

use crate::plugins::Rejection;

/// Upstream's message when the cluster has no nodes at all.
pub const NO_NODES_MESSAGE: &str = "no nodes available to schedule pods";

/// Why no node fits a pod.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.message())]
pub struct FitError {
    pub num_all_nodes: usize,
    /// A pod-level failure before any node was filtered.
    pub pre_filter_msg: Option<String>,
    /// The rejection of every node filtered, by node name.
    pub rejections: Vec<(String, Rejection)>,
    /// What preemption (PostFilter) said, without the final full stop.
    pub post_filter_msg: Option<String>,
}

/// `count reason` items, sorted as strings (upstream sorts the rendered items), joined.
pub fn reason_histogram<'a>(reasons: impl Iterator<Item = &'a str>) -> String {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for reason in reasons {
        *counts.entry(reason).or_default() += 1;
    }
    let mut items: Vec<String> = counts
        .into_iter()
        .map(|(reason, n)| format!("{n} {reason}"))
        .collect();
    items.sort();
    items.join(", ")
}

impl FitError {
    /// The cluster has no nodes.
    pub fn no_nodes() -> Self {
        FitError {
            num_all_nodes: 0,
            pre_filter_msg: None,
            rejections: Vec::new(),
            post_filter_msg: None,
        }
    }

    /// The pod failed before filtering (e.g. a request that does not parse).
    pub fn pre_filter(num_all_nodes: usize, msg: String) -> Self {
        FitError {
            num_all_nodes,
            pre_filter_msg: Some(msg),
            rejections: Vec::new(),
            post_filter_msg: None,
        }
    }

    /// Every node was filtered out.
    pub fn filtered(num_all_nodes: usize, rejections: Vec<(String, Rejection)>) -> Self {
        FitError {
            num_all_nodes,
            pre_filter_msg: None,
            rejections,
            post_filter_msg: None,
        }
    }

    /// The same error with preemption's verdict appended.
    pub fn with_post_filter(mut self, msg: impl Into<String>) -> Self {
        self.post_filter_msg = Some(msg.into());
        self
    }

    /// The rejection of one node.
    pub fn rejection(&self, node: &str) -> Option<&Rejection> {
        self.rejections
            .iter()
            .find(|(n, _)| n == node)
            .map(|(_, r)| r)
    }

    /// Upstream's message.
    pub fn message(&self) -> String {
        if self.num_all_nodes == 0 {
            return NO_NODES_MESSAGE.to_string();
        }
        let mut msg = format!("0/{} nodes are available:", self.num_all_nodes);
        match &self.pre_filter_msg {
            Some(pre) => msg.push_str(&format!(" {pre}.")),
            None => {
                let histogram = reason_histogram(
                    self.rejections
                        .iter()
                        .flat_map(|(_, r)| r.reasons.iter().map(|s| s.as_ref())),
                );
                if !histogram.is_empty() {
                    msg.push_str(&format!(" {histogram}."));
                }
            }
        }
        if let Some(post) = &self.post_filter_msg {
            msg.push_str(&format!(" {post}."));
        }
        msg
    }
}
