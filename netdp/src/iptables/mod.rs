//! The iptables proxy mode: [`IptablesDataplane`] renders a [`RuleSet`] into kube-proxy's
//! iptables chain layout ([`render`]; names in [`names`]) and applies it with one
//! `iptables-restore --noflush` run per address family per sync ([`restore`] builds the
//! input, [`exec`] runs the binary, `ip6tables-restore` for IPv6).
//!
//! A full sync (no previous rule set, after a failure, or when the node's addresses or cluster
//! CIDRs changed) reads `iptables-save`, rewrites every chain of ours, deletes our stale
//! chains and makes the jumps from the built-in chains exactly ours. An incremental sync
//! re-renders only the Service ports the model diff names, from the previous and the new rule
//! set (the previous rendering is recomputed rather than stored: the renderer is pure and the
//! caller hands back the rule set of the last successful sync), flushes and rewrites only the
//! chains whose text changed, deletes chains that disappeared, and edits the shared dispatch
//! chains rule by rule (`-D`/`-I`), so one endpoint change writes a handful of lines at any
//! scale. Every incremental run first checks (`-C`) that the jumps into our nat and filter
//! chains exist; when a run fails and that check alone fails too, our objects were removed
//! under us and a full sync repairs at once (reported as `repaired`). `iptables-restore` applies each table atomically: a failed run leaves
//! the table as it was, and the error makes the caller's next sync full.

pub mod exec;
pub mod names;
pub mod render;
pub mod restore;

#[cfg(test)]
mod eval;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

pub use exec::{IptablesBackend, Tools};
pub use render::{FamilyRules, GroupRules, Table, render_family, render_group};

use crate::dataplane::{Dataplane, DataplaneError, SyncReport};
use crate::model::{IpFamily, RuleSet, ServicePortName, diff};

const MODE: &str = "iptables";

/// Why running iptables failed.
#[derive(Debug, thiserror::Error)]
pub enum IptablesError {
    #[error("{binary} not found")]
    NotFound { binary: String },
    #[error("entering network namespace {path}: {source}")]
    Netns {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("running {binary}: {source}")]
    Spawn {
        binary: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{binary} failed ({status}): {stderr}")]
    Failed {
        binary: String,
        status: String,
        stderr: String,
    },
}

/// How to build an [`IptablesDataplane`].
#[derive(Debug, Clone, Default)]
pub struct IptablesConfig {
    pub backend: IptablesBackend,
    /// Families to program; empty: IPv4, and IPv6 when `ip6tables-restore` is installed.
    pub families: Vec<IpFamily>,
    /// Act inside the network namespace at this path (`/run/netns/<name>`), for tests.
    pub netns: Option<PathBuf>,
}

/// The iptables mode's [`Dataplane`].
#[derive(Debug)]
pub struct IptablesDataplane {
    tools: Vec<(IpFamily, Tools)>,
    netns: Option<PathBuf>,
    /// The last sync succeeded (an incremental sync is safe on top of it).
    last_ok: bool,
    fault_line: Option<String>,
}

impl IptablesDataplane {
    /// Finds the binaries of `config.backend`.
    pub fn new(config: IptablesConfig) -> Result<Self, IptablesError> {
        let families = if config.families.is_empty() {
            let mut f = vec![IpFamily::V4];
            if Tools::find(config.backend, IpFamily::V6).is_ok() {
                f.push(IpFamily::V6);
            }
            f
        } else {
            config.families
        };
        let tools = families
            .into_iter()
            .map(|f| Tools::find(config.backend, f).map(|t| (f, t)))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            tools,
            netns: config.netns,
            last_ok: false,
            fault_line: None,
        })
    }

    /// The restore binaries in use, per family.
    pub fn tools(&self) -> &[(IpFamily, Tools)] {
        &self.tools
    }

    /// Test hook: a line appended to the nat table of every restore run (an invalid rule makes
    /// every run fail). `None` removes it.
    pub fn set_fault_injection(&mut self, line: Option<String>) {
        self.fault_line = line;
    }

    fn netns(&self) -> Option<&Path> {
        self.netns.as_deref()
    }

    fn save(&self, tools: &Tools) -> Result<restore::Observed, IptablesError> {
        let text = exec::run(self.netns(), &tools.save, &[], None)?;
        Ok(restore::parse_save(&text))
    }

    fn apply(&self, tools: &Tools, input: &str) -> Result<(), IptablesError> {
        exec::run(
            self.netns(),
            &tools.restore,
            &["--noflush", "-w", "5"],
            Some(input),
        )?;
        Ok(())
    }

    fn sync_full(&self, rules: &RuleSet) -> Result<usize, IptablesError> {
        let mut objects = 0;
        for (family, tools) in &self.tools {
            let observed = self.save(tools)?;
            let desired = render_family(rules, *family);
            let input = restore::full_restore(&desired, &observed, self.fault_line.as_deref());
            self.apply(tools, &input.text)?;
            objects += input.objects;
        }
        Ok(objects)
    }

    fn sync_incremental(
        &self,
        previous: &RuleSet,
        rules: &RuleSet,
    ) -> Result<usize, IptablesError> {
        let plan = incremental_plan(previous, rules, self.fault_line.as_deref());
        let mut objects = 0;
        for (family, tools) in &self.tools {
            if let Some((_, input)) = plan.iter().find(|(f, _)| f == family) {
                self.apply(tools, &input.text)?;
                objects += input.objects;
            }
        }
        Ok(objects)
    }

    /// Whether our jumps and chains are all in place (after a failed incremental run).
    fn objects_in_place(&self) -> bool {
        let check = restore::check_restore();
        self.tools
            .iter()
            .all(|(_, tools)| self.apply(tools, &check.text).is_ok())
    }
}

/// The incremental restore input of each family (its checks, and its changes if any).
pub fn incremental_plan(
    previous: &RuleSet,
    rules: &RuleSet,
    extra_nat_line: Option<&str>,
) -> Vec<(IpFamily, restore::Restore)> {
    let changes = diff(previous, rules);
    let touched: HashSet<&ServicePortName> = changes
        .added
        .iter()
        .chain(&changes.removed)
        .map(|(_, fe)| &fe.service)
        .chain(
            changes
                .changed
                .iter()
                .flat_map(|c| [&c.old.service, &c.new.service]),
        )
        .collect();
    let health = |r: &RuleSet| GroupRules {
        chains: Default::default(),
        dispatch: render::health_check_rules(r)
            .into_iter()
            .map(|rule| (Table::Filter, names::NODE_PORTS, rule))
            .collect(),
    };
    let mut out = Vec::new();
    for family in [IpFamily::V4, IpFamily::V6] {
        let render_touched = |r: &RuleSet| -> Vec<GroupRules> {
            let cidrs = render::family_cidrs(r, family);
            let mut groups: Vec<GroupRules> = render::groups(r, family)
                .into_iter()
                .filter(|(spn, _)| touched.contains(spn))
                .map(|(spn, fes)| render_group(spn, &fes, &cidrs))
                .collect();
            groups.push(health(r));
            groups
        };
        let input = restore::incremental_restore(
            &render_touched(previous),
            &render_touched(rules),
            extra_nat_line,
        );
        out.push((family, input));
    }
    out
}

impl Dataplane for IptablesDataplane {
    fn mode(&self) -> &'static str {
        MODE
    }

    fn sync(
        &mut self,
        previous: Option<&RuleSet>,
        rules: &RuleSet,
    ) -> Result<SyncReport, DataplaneError> {
        let incremental_base = previous.filter(|p| {
            self.last_ok
                && p.node_port_addresses == rules.node_port_addresses
                && p.cluster_cidrs == rules.cluster_cidrs
        });
        self.last_ok = false;
        let mut report = SyncReport::default();
        if let Some(prev) = incremental_base {
            match self.sync_incremental(prev, rules) {
                Ok(objects) => {
                    report.objects = objects;
                    self.last_ok = true;
                    return Ok(report);
                }
                // Our chains are gone: repair with a full sync now. Otherwise the input was
                // refused: report it (the run changed nothing; the caller's next sync is full).
                Err(_) if !self.objects_in_place() => report.repaired = true,
                Err(e) => return Err(DataplaneError::mode(MODE, e)),
            }
        }
        report.full = true;
        report.objects = self
            .sync_full(rules)
            .map_err(|e| DataplaneError::mode(MODE, e))?;
        self.last_ok = true;
        Ok(report)
    }

    fn cleanup(&mut self) -> Result<(), DataplaneError> {
        self.last_ok = false;
        for (_, tools) in &self.tools {
            let observed = self
                .save(tools)
                .map_err(|e| DataplaneError::mode(MODE, e))?;
            if let Some(input) = restore::cleanup_restore(&observed) {
                self.apply(tools, &input.text)
                    .map_err(|e| DataplaneError::mode(MODE, e))?;
            }
        }
        Ok(())
    }
}
