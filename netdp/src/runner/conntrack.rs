//! The sync observer that deletes stale UDP conntrack entries once a sync is in the kernel
//! (`crate::conntrack` plans from the sync's difference; failures are logged, the next change
//! plans again).

use crate::conntrack::{ConntrackApi, stale_flows};
use crate::dataplane::SyncReport;
use crate::model::{RuleDiff, RuleSet};
use crate::runner::SyncObserver;

/// Deletes the flows a sync made stale.
#[derive(Debug)]
pub struct ConntrackCleanup<C> {
    conntrack: C,
}

impl<C: ConntrackApi> ConntrackCleanup<C> {
    pub fn new(conntrack: C) -> Self {
        Self { conntrack }
    }
}

impl<C: ConntrackApi + Send> SyncObserver for ConntrackCleanup<C> {
    fn synced(&mut self, _rules: &RuleSet, diff: &RuleDiff<'_>, _report: &SyncReport) {
        let filters = stale_flows(diff);
        if filters.is_empty() {
            return;
        }
        match self.conntrack.delete(&filters) {
            Ok(deleted) => {
                tracing::debug!(filters = filters.len(), deleted, "stale UDP flows deleted")
            }
            Err(error) => tracing::warn!(%error, "deleting stale UDP conntrack entries"),
        }
    }
}
