//! The seam between the sync loop and a rendering mode (nftables, iptables, IPVS): a
//! [`Dataplane`] makes the kernel match a [`RuleSet`], given what changed since it last applied one.
//! Modes own their rendering and their kernel objects; the sync loop only decides when to sync
//! and whether the next sync must be full.

use std::error::Error as StdError;
use std::time::Instant;

use crate::model::{RuleDiff, RuleSet};

/// A proxy mode that programs the kernel from the model.
///
/// Implementations are usable from any thread: the sync loop calls them on a blocking thread.
/// One that must act inside another network namespace opens its sockets there (or enters the
/// namespace for each subprocess) when it is built.
pub trait Dataplane: Send {
    /// The mode's name as the kube-proxy configuration spells it (`nftables`, `iptables`, `ipvs`).
    fn mode(&self) -> &'static str;

    /// Makes the kernel match `rules`.
    ///
    /// `change` is the difference from the rule set this dataplane last applied successfully
    /// to `rules` (with the old values), for an incremental sync that writes only that; it
    /// costs the size of the change, never of the whole rule set. `None` asks for a full sync:
    /// the first sync, the periodic full resync, and every sync after a failure. A full sync
    /// rewrites all of the mode's objects and removes whatever of its own is not in `rules`
    /// (also objects someone else changed or flushed). An incremental sync that finds its
    /// objects gone repairs them (a full sync) and says so in the report.
    ///
    /// On error, no half-applied state is visible to traffic: each mode applies a sync as one
    /// kernel transaction (an nf_tables batch, one `iptables-restore` run), or documents the
    /// unit it applies atomically. The caller passes `None` next time.
    fn sync(
        &mut self,
        rules: &RuleSet,
        change: Option<&RuleDiff<'_>>,
    ) -> Result<SyncReport, DataplaneError>;

    /// Removes everything this mode programmed (switching modes, uninstalling). Idempotent.
    fn cleanup(&mut self) -> Result<(), DataplaneError>;

    /// Does the work due at `now` between syncs (the IPVS mode deletes real servers whose
    /// connections have drained) and returns the kernel objects it wrote. The sync loop calls
    /// it after every successful sync (a mode schedules new work then) and whenever
    /// [`Dataplane::next_maintenance`] is due. None by default.
    fn maintain(&mut self, _now: Instant) -> Result<usize, DataplaneError> {
        Ok(0)
    }

    /// When [`Dataplane::maintain`] has work next; `None` when nothing is pending.
    fn next_maintenance(&self) -> Option<Instant> {
        None
    }
}

/// What one sync did, for logs and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// The whole rule set was written (asked for, or repairing).
    pub full: bool,
    /// An incremental sync found the mode's objects missing or changed and rewrote them.
    pub repaired: bool,
    /// Kernel objects written or deleted (messages, rules, elements), 0 when nothing changed.
    pub objects: usize,
}

/// A sync or cleanup failed; the kernel state of the failed transaction was left unchanged.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("{mode} dataplane: {source}")]
    Nftables {
        mode: &'static str,
        #[source]
        source: crate::nft::NftError,
    },
    /// Any other mode's failure, with the mode's own error as the source.
    #[error("{mode} dataplane: {source}")]
    Mode {
        mode: &'static str,
        #[source]
        source: Box<dyn StdError + Send + Sync + 'static>,
    },
}

impl DataplaneError {
    /// Wraps a mode's own error.
    pub fn mode(mode: &'static str, source: impl StdError + Send + Sync + 'static) -> Self {
        DataplaneError::Mode {
            mode,
            source: Box::new(source),
        }
    }
}
