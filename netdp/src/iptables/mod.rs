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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use exec::{IptablesBackend, Tools};
pub use render::{FamilyRules, GroupRules, Table, render_family, render_group};

use crate::dataplane::{Dataplane, DataplaneError, SyncReport};
use crate::model::{FrontEnd, FrontEndKey, IpFamily, RuleDiff, RuleSet, ServicePortName};

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
    /// Health-check rules of the last successful sync (their removal needs the old text).
    applied_health: Vec<String>,
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
            applied_health: Vec::new(),
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
        rules: &RuleSet,
        change: &RuleDiff<'_>,
    ) -> Result<usize, IptablesError> {
        let plan = incremental_plan(
            rules,
            change,
            &self.applied_health,
            self.fault_line.as_deref(),
        );
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

impl IptablesDataplane {
    /// Makes the kernel match `rules`, given `change`, the difference since the last
    /// successful sync (with the old values); `None`: a full sync. The shape of the sync loop's
    /// change-based `Dataplane::sync`; the previous-rule-set form delegates here.
    pub fn sync_change(
        &mut self,
        rules: &RuleSet,
        change: Option<&RuleDiff<'_>>,
    ) -> Result<SyncReport, DataplaneError> {
        let incremental = change.filter(|c| self.last_ok && !c.node_globals_changed);
        self.last_ok = false;
        let mut report = SyncReport::default();
        if let Some(change) = incremental {
            match self.sync_incremental(rules, change) {
                Ok(objects) => {
                    report.objects = objects;
                    self.last_ok = true;
                    self.applied_health = render::health_check_rules(rules);
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
        self.applied_health = render::health_check_rules(rules);
        Ok(report)
    }
}

/// The incremental restore input of each family (its checks, and its changes if any), from
/// the new rule set and the change since the last successful sync (with the old values):
/// only the Service ports the change names are rendered, old and new, at the cost of the
/// change (through `keys_by_service`), never of the whole rule set. `applied_health` are the
/// health-check rules of the last successful sync.
pub fn incremental_plan(
    rules: &RuleSet,
    change: &RuleDiff<'_>,
    applied_health: &[String],
    extra_nat_line: Option<&str>,
) -> Vec<(IpFamily, restore::Restore)> {
    // Per Service port and family: how its old front ends differ from its new ones
    // (`None`: the key was absent before).
    type Group<'a> = (&'a ServicePortName, IpFamily);
    let mut old_values: BTreeMap<Group<'_>, Vec<(&FrontEndKey, Option<&FrontEnd>)>> =
        BTreeMap::new();
    for (key, fe) in &change.added {
        old_values
            .entry((&fe.service, key.family))
            .or_default()
            .push((key, None));
    }
    for (key, fe) in &change.removed {
        old_values
            .entry((&fe.service, key.family))
            .or_default()
            .push((key, Some(fe)));
    }
    for c in &change.changed {
        if c.old.service != c.new.service {
            old_values
                .entry((&c.new.service, c.key.family))
                .or_default()
                .push((c.key, None));
        }
        old_values
            .entry((&c.old.service, c.key.family))
            .or_default()
            .push((c.key, Some(c.old)));
    }
    let mut old_groups: BTreeMap<IpFamily, Vec<GroupRules>> = BTreeMap::new();
    let mut new_groups: BTreeMap<IpFamily, Vec<GroupRules>> = BTreeMap::new();
    for ((spn, family), edits) in old_values {
        let new: BTreeMap<&FrontEndKey, &FrontEnd> = rules
            .keys_by_service
            .get(&spn.service)
            .into_iter()
            .flatten()
            .filter(|k| k.family == family)
            .filter_map(|k| rules.front_ends.get_key_value(k))
            .filter(|(_, fe)| fe.service == *spn)
            .collect();
        let mut old = new.clone();
        for (key, value) in edits {
            match value {
                Some(fe) => old.insert(key, fe),
                None => old.remove(key),
            };
        }
        let cidrs = render::family_cidrs(rules, family);
        for (fes, out) in [(old, &mut old_groups), (new, &mut new_groups)] {
            if !fes.is_empty() {
                let fes: Vec<_> = fes.into_iter().collect();
                out.entry(family)
                    .or_default()
                    .push(render_group(spn, &fes, &cidrs));
            }
        }
    }
    let health = |rules: Vec<String>| GroupRules {
        chains: BTreeMap::new(),
        dispatch: rules
            .into_iter()
            .map(|rule| (Table::Filter, names::NODE_PORTS, rule))
            .collect(),
    };
    let mut out = Vec::new();
    for family in [IpFamily::V4, IpFamily::V6] {
        let mut old = old_groups.remove(&family).unwrap_or_default();
        let mut new = new_groups.remove(&family).unwrap_or_default();
        old.push(health(applied_health.to_vec()));
        new.push(health(render::health_check_rules(rules)));
        out.push((
            family,
            restore::incremental_restore(&old, &new, extra_nat_line),
        ));
    }
    out
}

impl Dataplane for IptablesDataplane {
    fn mode(&self) -> &'static str {
        MODE
    }

    fn sync(
        &mut self,
        rules: &RuleSet,
        change: Option<&RuleDiff<'_>>,
    ) -> Result<SyncReport, DataplaneError> {
        self.sync_change(rules, change)
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
