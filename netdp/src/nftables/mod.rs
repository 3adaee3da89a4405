//! The nftables proxy mode: renders a [`RuleSet`] into the `ip kwk-proxy` and `ip6 kwk-proxy`
//! tables through the [`nft`](crate::nft) client. [`layout`] owns the table shape (a few global
//! maps, one small chain group per behaviour class, no chain or set per Service or endpoint),
//! [`plan`] turns rule sets into one batch (pure), and [`NftablesDataplane`] is the thin
//! executor implementing [`Dataplane`].
//!
//! A full sync deletes and recreates both tables in one batch (atomic). An incremental sync
//! first checks that the tables, maps and class chains are still there (someone may have run
//! `nft flush ruleset`), repairs with a full sync when not, and otherwise writes only the
//! element changes of the front ends that changed.
//!
//! Known limitation: the `nft` tool (1.0.6 here) aborts decoding a rule that uses a map
//! lookup's result as (part of) another lookup's key, which the kernel accepts and runs: the
//! `services` dispatch (`service-classes` then `class-chains`) and the session-affinity rules
//! of class chains. So `nft list ruleset`/`list table` fail on these tables; `nft list chain`
//! of every other chain, `nft list map` and `nft list set` work, and listing through
//! [`crate::nft::NftApi`] is unaffected. (Dispatching through one verdict map of
//! `key -> goto class-<id>` instead would decode, but every added Service or class change
//! then makes the kernel walk that whole map to validate the jump graph: ~6 ms at 50k.)

pub mod layout;
pub mod plan;

#[cfg(test)]
mod tests;

use crate::dataplane::{Dataplane, DataplaneError, SyncReport};
use crate::model::{RuleDiff, RuleSet};
use crate::nft::{Batch, NftApi, NftError};
use layout::{FIXED_CHAINS, Fam, SETS, TABLE, class_chain};
use plan::{Applied, Plan, plan_changes, plan_full};

const MODE: &str = "nftables";

/// The nftables mode over any [`NftApi`] (an [`crate::nft::NftSocket`] opened in the node's
/// network namespace, or [`crate::nft::MemoryNft`] in tests).
#[derive(Debug)]
pub struct NftablesDataplane<N> {
    nft: N,
    /// Class ids and hairpin references of the last successful sync; `None` after a failure.
    applied: Option<Applied>,
}

impl<N: NftApi> NftablesDataplane<N> {
    pub fn new(nft: N) -> Self {
        Self { nft, applied: None }
    }

    /// The client, e.g. to list what was programmed.
    pub fn nft(&self) -> &N {
        &self.nft
    }

    /// An incremental sync from known changes (e.g. [`crate::model::Touched::diff`] after
    /// [`crate::model::update_service`]), skipping the O(Services) [`crate::model::diff`] that
    /// [`Dataplane::sync`] does; `changes` must lead from the last applied rule set to `rules`.
    /// Falls back to a full sync like `sync` (no state, objects missing, node globals changed).
    pub fn sync_changes(
        &mut self,
        changes: &RuleDiff<'_>,
        rules: &RuleSet,
    ) -> Result<SyncReport, DataplaneError> {
        let full = SyncReport {
            full: true,
            ..SyncReport::default()
        };
        let Some(applied) = self.applied.take() else {
            return self.apply(plan_full(rules), full);
        };
        if !self.objects_intact(&applied).map_err(nft_error)? {
            let repaired = SyncReport {
                repaired: true,
                ..full
            };
            return self.apply(plan_full(rules), repaired);
        }
        match plan_changes(changes, rules, applied) {
            Some(plan) => self.apply(plan, SyncReport::default()),
            None => self.apply(plan_full(rules), full),
        }
    }

    /// Whether both tables hold every fixed chain, every map and every class chain we created.
    fn objects_intact(&self, applied: &Applied) -> Result<bool, NftError> {
        for (index, fam) in Fam::ALL.iter().enumerate() {
            let f = fam.family();
            if !self.nft.list_tables(f)?.iter().any(|t| t == TABLE) {
                return Ok(false);
            }
            let sets = self.nft.list_sets(f, TABLE)?;
            if !SETS.iter().all(|s| sets.iter().any(|l| l.name == *s)) {
                return Ok(false);
            }
            let chains = self.nft.list_chains(f, TABLE)?;
            let has = |name: &str| chains.iter().any(|c| c.name == name);
            if !FIXED_CHAINS.iter().all(|c| has(c)) {
                return Ok(false);
            }
            if !applied.class_chains(index).all(|id| has(&class_chain(id))) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn apply(&mut self, plan: Plan, report: SyncReport) -> Result<SyncReport, DataplaneError> {
        self.applied = None;
        if !plan.batch.is_empty() {
            self.nft.apply(&plan.batch).map_err(nft_error)?;
        }
        self.applied = Some(plan.applied);
        Ok(SyncReport {
            objects: plan.objects,
            ..report
        })
    }
}

fn nft_error(source: NftError) -> DataplaneError {
    DataplaneError::Nftables { mode: MODE, source }
}

impl<N: NftApi + Send> Dataplane for NftablesDataplane<N> {
    fn mode(&self) -> &'static str {
        MODE
    }

    fn sync(
        &mut self,
        rules: &RuleSet,
        change: Option<&RuleDiff<'_>>,
    ) -> Result<SyncReport, DataplaneError> {
        match change {
            Some(change) => self.sync_changes(change, rules),
            None => {
                let full = SyncReport {
                    full: true,
                    ..SyncReport::default()
                };
                self.apply(plan_full(rules), full)
            }
        }
    }

    fn cleanup(&mut self) -> Result<(), DataplaneError> {
        self.applied = None;
        let mut b = Batch::new();
        for fam in Fam::ALL {
            b.add_table(fam.family(), TABLE);
            b.delete_table(fam.family(), TABLE);
        }
        self.nft.apply(&b).map_err(nft_error)
    }
}
