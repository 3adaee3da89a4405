//! What one `iptables-restore --noflush` run writes, as pure functions: the full sync
//! (every chain of ours rewritten, stale chains of ours deleted, the built-in chains' jumps
//! made exactly ours, once, in order) from the desired chains and what `iptables-save`
//! showed; the incremental sync (only changed per-Service chains flushed and rewritten,
//! dispatch rules added and deleted one by one); and cleanup. Also the `iptables-save` parser.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::names;
use super::render::{ChainId, FamilyRules, GroupRules, Table, builtin_jumps};

/// One table as `iptables-save` printed it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedTable {
    /// Every chain declared (built-in and user).
    pub chains: BTreeSet<String>,
    /// `(chain, spec)` of every rule, in order; spec is the text after `-A <chain> `.
    pub rules: Vec<(String, String)>,
}

/// The nat and filter tables of one family.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    pub tables: BTreeMap<Table, ObservedTable>,
}

/// Parses `iptables-save` output; tables other than nat and filter are skipped.
pub fn parse_save(text: &str) -> Observed {
    let mut out = Observed::default();
    let mut current: Option<Table> = None;
    for line in text.lines() {
        if let Some(name) = line.strip_prefix('*') {
            current = match name.trim() {
                "nat" => Some(Table::Nat),
                "filter" => Some(Table::Filter),
                _ => None,
            };
            if let Some(t) = current {
                out.tables.entry(t).or_default();
            }
            continue;
        }
        let Some(table) = current.and_then(|t| out.tables.get_mut(&t)) else {
            continue;
        };
        if let Some(decl) = line.strip_prefix(':') {
            if let Some(name) = decl.split_whitespace().next() {
                table.chains.insert(name.to_owned());
            }
        } else if let Some(rule) = line.strip_prefix("-A ") {
            let (chain, spec) = rule.split_once(' ').unwrap_or((rule, ""));
            table.rules.push((chain.to_owned(), spec.to_owned()));
        }
    }
    out
}

/// The chain a rule jumps to (`-j X` / `-g X`), if any.
pub fn jump_target(spec: &str) -> Option<&str> {
    let mut tokens = spec.split_whitespace();
    let mut target = None;
    while let Some(t) = tokens.next() {
        if t == "-j" || t == "-g" {
            target = tokens.next();
        }
    }
    target
}

const BUILTIN: [&str; 5] = ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"];

/// Text of one restore run and how many chain declarations and rule commands it holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Restore {
    pub text: String,
    pub objects: usize,
}

impl Restore {
    fn line(&mut self, args: std::fmt::Arguments<'_>) {
        let _ = self.text.write_fmt(args);
        self.text.push('\n');
        self.objects += 1;
    }
    fn raw(&mut self, s: &str) {
        self.text.push_str(s);
        self.text.push('\n');
    }
}

/// The full sync of one family: `desired` everything, from `observed`. `extra_nat_line` is a
/// test hook (fault injection), appended to the nat table.
pub fn full_restore(
    desired: &FamilyRules,
    observed: &Observed,
    extra_nat_line: Option<&str>,
) -> Restore {
    let mut out = Restore::default();
    let empty = ObservedTable::default();
    let jumps = builtin_jumps();
    for table in [Table::Nat, Table::Filter] {
        let seen = observed.tables.get(&table).unwrap_or(&empty);
        out.raw(&format!("*{}", table.name()));
        let wanted: Vec<(&String, &Vec<String>)> = desired
            .chains
            .iter()
            .filter(|((t, _), _)| *t == table)
            .map(|((_, name), rules)| (name, rules))
            .collect();
        let wanted_names: BTreeSet<&str> = wanted.iter().map(|(n, _)| n.as_str()).collect();
        let stale: Vec<&String> = seen
            .chains
            .iter()
            .filter(|c| names::is_ours(c) && !wanted_names.contains(c.as_str()))
            .collect();
        for name in wanted.iter().map(|(n, _)| *n).chain(stale.iter().copied()) {
            out.line(format_args!(":{name} - [0:0]"));
        }
        let mut inserts = Vec::new();
        for builtin in BUILTIN {
            let want: Vec<&str> = jumps
                .iter()
                .filter(|(t, c, _)| *t == table && *c == builtin)
                .map(|(_, _, spec)| spec.as_str())
                .collect();
            let have: Vec<&str> = seen
                .rules
                .iter()
                .filter(|(c, spec)| c == builtin && jump_target(spec).is_some_and(names::is_ours))
                .map(|(_, spec)| spec.as_str())
                .collect();
            if want == have {
                continue;
            }
            for spec in have {
                out.line(format_args!("-D {builtin} {spec}"));
            }
            for spec in want.iter().rev() {
                inserts.push(format!("-I {builtin} 1 {spec}"));
            }
        }
        for (name, rules) in &wanted {
            for rule in *rules {
                out.line(format_args!("-A {name} {rule}"));
            }
        }
        for insert in inserts {
            out.line(format_args!("{insert}"));
        }
        for name in stale {
            out.line(format_args!("-X {name}"));
        }
        if let (Table::Nat, Some(extra)) = (table, extra_nat_line) {
            out.line(format_args!("{extra}"));
        }
        out.raw("COMMIT");
    }
    out
}

/// The checks every incremental run starts with: the jumps into our nat and filter chains
/// exist (`-C` fails the run when they, or our chains, were removed).
pub fn check_lines(table: Table) -> Vec<String> {
    let (chain, target) = match table {
        Table::Nat => ("PREROUTING", names::SERVICES),
        Table::Filter => ("FORWARD", names::SERVICES),
    };
    builtin_jumps()
        .into_iter()
        .filter(|(t, c, spec)| *t == table && *c == chain && jump_target(spec) == Some(target))
        .map(|(_, c, spec)| format!("-C {c} {spec}"))
        .collect()
}

/// Only the checks of [`check_lines`]: whether our objects are still in place.
pub fn check_restore() -> Restore {
    let mut out = Restore::default();
    for table in [Table::Nat, Table::Filter] {
        out.raw(&format!("*{}", table.name()));
        for check in check_lines(table) {
            out.raw(&check);
        }
        out.raw("COMMIT");
    }
    out
}

/// The incremental sync of one family from the old and new renderings of the Service ports
/// that changed (plus the health-check pseudo-group), after the checks of [`check_lines`].
/// `objects` counts the changes only (0: nothing changed, the run only checks).
pub fn incremental_restore(
    old: &[GroupRules],
    new: &[GroupRules],
    extra_nat_line: Option<&str>,
) -> Restore {
    let merge_chains = |groups: &[GroupRules]| -> BTreeMap<ChainId, Vec<String>> {
        groups
            .iter()
            .flat_map(|g| g.chains.iter().map(|(k, v)| (k.clone(), v.clone())))
            .collect()
    };
    let merge_dispatch = |groups: &[GroupRules]| -> BTreeSet<(Table, &'static str, String)> {
        groups
            .iter()
            .flat_map(|g| g.dispatch.iter().cloned())
            .collect()
    };
    let (old_chains, new_chains) = (merge_chains(old), merge_chains(new));
    let (old_dispatch, new_dispatch) = (merge_dispatch(old), merge_dispatch(new));
    let mut out = Restore::default();
    for table in [Table::Nat, Table::Filter] {
        let mut body = Restore::default();
        let changed: Vec<(&String, &Vec<String>)> = new_chains
            .iter()
            .filter(|((t, name), rules)| {
                *t == table && old_chains.get(&(table, name.clone())) != Some(*rules)
            })
            .map(|((_, n), r)| (n, r))
            .collect();
        let deleted: Vec<&String> = old_chains
            .keys()
            .filter(|(t, name)| *t == table && !new_chains.contains_key(&(table, name.clone())))
            .map(|(_, n)| n)
            .collect();
        for name in changed
            .iter()
            .map(|(n, _)| *n)
            .chain(deleted.iter().copied())
        {
            body.line(format_args!(":{name} - [0:0]"));
        }
        for (_, chain, rule) in old_dispatch
            .difference(&new_dispatch)
            .filter(|d| d.0 == table)
        {
            body.line(format_args!("-D {chain} {rule}"));
        }
        for (name, rules) in &changed {
            for rule in *rules {
                body.line(format_args!("-A {name} {rule}"));
            }
        }
        for (_, chain, rule) in new_dispatch
            .difference(&old_dispatch)
            .filter(|d| d.0 == table)
        {
            if table == Table::Nat && *chain == names::SERVICES {
                // Before the node-port rules, which must stay last.
                body.line(format_args!("-I {chain} 1 {rule}"));
            } else {
                body.line(format_args!("-A {chain} {rule}"));
            }
        }
        for name in deleted {
            body.line(format_args!("-X {name}"));
        }
        if let (Table::Nat, Some(extra)) = (table, extra_nat_line) {
            body.line(format_args!("{extra}"));
        }
        out.raw(&format!("*{}", table.name()));
        for check in check_lines(table) {
            out.raw(&check);
        }
        out.text.push_str(&body.text);
        out.objects += body.objects;
        out.raw("COMMIT");
    }
    out
}

/// Removes everything of ours `observed` shows: jumps from built-in chains, then our chains
/// (flushed first, so references between them are gone). `None`: nothing of ours is there.
pub fn cleanup_restore(observed: &Observed) -> Option<Restore> {
    let mut out = Restore::default();
    for (table, seen) in &observed.tables {
        let ours: Vec<&String> = seen.chains.iter().filter(|c| names::is_ours(c)).collect();
        let jumps: Vec<&(String, String)> = seen
            .rules
            .iter()
            .filter(|(c, spec)| {
                BUILTIN.contains(&c.as_str()) && jump_target(spec).is_some_and(names::is_ours)
            })
            .collect();
        if ours.is_empty() && jumps.is_empty() {
            continue;
        }
        out.raw(&format!("*{}", table.name()));
        for name in &ours {
            out.line(format_args!(":{name} - [0:0]"));
        }
        for (chain, spec) in jumps {
            out.line(format_args!("-D {chain} {spec}"));
        }
        for name in &ours {
            out.line(format_args!("-X {name}"));
        }
        out.raw("COMMIT");
    }
    (out.objects > 0).then_some(out)
}
