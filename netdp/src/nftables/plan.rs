//! Pure planning: a [`RuleSet`] (full) or the difference between two (incremental) becomes the
//! contents of one nf_tables [`Batch`]. The only state carried between syncs is [`Applied`]:
//! the class ids allocated so far and how many front ends use each node-local backend address
//! (the shared `hairpin` elements).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use super::layout::{
    AFFINITY, AFFINITY_BACKENDS, BACKENDS, Class, DROP_SERVICES, FIREWALL_CHAINS, Fam, HAIRPIN,
    REJECT_SERVICES, SERVICE_CLASSES, SETS, SHORT_CIRCUIT_SLOTS, TABLE, set_index, set_size, sized,
};
use crate::model::{
    Backend, Cidr, FrontEnd, FrontEndKey, IpFamily, Protocol, RuleDiff, RuleSet, ServicePortName,
    Target, diff,
};
use crate::nft::{Batch, Datum, Element, ElementList, Verdict};

/// What the kernel holds after the last successful sync, beyond the rule set itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Class -> id, per family (index of [`Fam::ALL`]); ids are never reused until a full sync.
    pub classes: [BTreeMap<Class, u32>; 2],
    /// Node-local backend address -> number of front-end backend entries using it.
    pub hairpin_refs: HashMap<IpAddr, usize>,
    /// How full each set is, per family, by index in [`SETS`].
    pub sets: [[SetFill; SETS.len()]; 2],
}

/// The elements a set holds and the most it may hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetFill {
    pub elements: usize,
    /// `None`: unbounded (not sized, see [`set_size`]).
    pub size: Option<u32>,
}

impl Applied {
    /// The class chains that must exist, per family.
    pub fn class_chains(&self, fam: usize) -> impl Iterator<Item = u32> + '_ {
        self.classes[fam].values().copied()
    }
}

fn fam_index(ip: IpFamily) -> usize {
    match ip {
        IpFamily::V4 => 0,
        IpFamily::V6 => 1,
    }
}

fn proto_number(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        Protocol::Sctp => 132,
    }
}

fn addr(ip: IpAddr) -> Datum {
    match ip {
        IpAddr::V4(a) => Datum::Ipv4(a),
        IpAddr::V6(a) => Datum::Ipv6(a),
    }
}

fn key_parts(key: &FrontEndKey) -> [Datum; 3] {
    [
        addr(key.ip),
        Datum::Proto(proto_number(key.protocol)),
        Datum::Port(key.port),
    ]
}

fn slots(backends: &[Backend]) -> u32 {
    backends.iter().map(|b| u32::from(b.weight.max(1))).sum()
}

/// The class chain a front end needs; `None` when it never NATs (Reject/Drop without
/// short-circuit backends).
pub fn class_of(fe: &FrontEnd) -> Option<Class> {
    let short_circuit_slots = fe.local_short_circuit.as_deref().map(slots).unwrap_or(0);
    let class = Class {
        slots: slots(fe.target.backends()),
        short_circuit_slots,
        masquerade: fe.masquerade,
        affinity_seconds: fe.affinity_timeout_seconds,
    };
    (class.slots > 0 || class.short_circuit_slots > 0).then_some(class)
}

/// The firewall chain of a front end with `allowed_sources`.
pub fn firewall_chain(key: &FrontEndKey) -> String {
    format!("fw-{}-{}-{}", key.ip, key.protocol, key.port)
}

/// One element of one named set of one family.
pub type Placed = (usize, &'static str, Element);

/// The data of an element, borrowed from the front end.
#[derive(Debug, Clone, Copy)]
enum Data<'a> {
    None,
    /// With the Service as the element's comment, for `service-classes`.
    Value(&'a [Datum], Option<&'a ServicePortName>),
    Verdict(&'a Verdict),
}

/// Calls `emit(family, set, key, data)` for every element a front end owns in the maps (not the
/// shared hairpin set); `class_id` is its class, if it NATs. The one definition of those
/// elements, for both [`front_end_elements`] and [`plan_full`].
fn for_each_element(
    key: &FrontEndKey,
    fe: &FrontEnd,
    class_id: Option<u32>,
    emit: &mut impl FnMut(usize, &'static str, &[Datum], Data<'_>),
) {
    let fam = fam_index(key.family);
    let k = key_parts(key);
    if let Some(id) = class_id {
        let id = [Datum::U32(id)];
        emit(
            fam,
            SERVICE_CLASSES,
            &k,
            Data::Value(&id, Some(&fe.service)),
        );
    }
    let mut slot_elements = |backends: &[Backend], offset: u32| {
        let mut slot = offset;
        for b in backends {
            for _ in 0..b.weight.max(1) {
                let key = [k[0], k[1], k[2], Datum::U32(slot)];
                let data = [addr(b.ip), Datum::Port(b.port)];
                emit(fam, BACKENDS, &key, Data::Value(&data, None));
                slot += 1;
            }
        }
    };
    slot_elements(fe.target.backends(), 0);
    if let Some(local) = &fe.local_short_circuit {
        slot_elements(local, SHORT_CIRCUIT_SLOTS);
    }
    match fe.target {
        Target::Reject => emit(fam, REJECT_SERVICES, &k, Data::None),
        Target::Drop => emit(fam, DROP_SERVICES, &k, Data::None),
        Target::Backends(_) => {}
    }
    if fe.allowed_sources.is_some() {
        let goto = Verdict::Goto(firewall_chain(key));
        emit(fam, FIREWALL_CHAINS, &k, Data::Verdict(&goto));
    }
    if fe.affinity_timeout_seconds.is_some() {
        let mut seen = Vec::new();
        for b in all_backends(fe) {
            if !seen.contains(&b) {
                seen.push(b);
                let parts = [k[0], k[1], k[2], addr(b.ip), Datum::Port(b.port)];
                emit(fam, AFFINITY_BACKENDS, &parts, Data::None);
            }
        }
    }
}

/// The elements a front end owns in the maps (not the shared hairpin set).
pub fn front_end_elements(key: &FrontEndKey, fe: &FrontEnd, class_id: Option<u32>) -> Vec<Placed> {
    let mut out = Vec::new();
    for_each_element(key, fe, class_id, &mut |fam, set, key, data| {
        let element = match data {
            Data::None => Element::key(key),
            Data::Value(data, None) => Element::value(key, data),
            Data::Value(data, Some(comment)) => {
                Element::value(key, data).with_comment(comment.to_string())
            }
            Data::Verdict(verdict) => Element::verdict(key, verdict.clone()),
        };
        out.push((fam, set, element));
    });
    out
}

fn all_backends(fe: &FrontEnd) -> impl Iterator<Item = &Backend> {
    fe.target
        .backends()
        .iter()
        .chain(fe.local_short_circuit.iter().flatten())
}

/// Node-local backend addresses of a front end, once each.
fn local_ips(fe: &FrontEnd) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = all_backends(fe)
        .filter(|b| b.node_local)
        .map(|b| b.ip)
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

fn hairpin_element(ip: IpAddr) -> Placed {
    (
        fam_index(IpFamily::of(ip)),
        HAIRPIN,
        Element::key(&[addr(ip), addr(ip)]),
    )
}

/// Allocates (or finds) the id of a class.
fn class_id(
    applied: &mut Applied,
    fam: usize,
    class: Class,
    new: &mut Vec<(usize, u32, Class)>,
) -> u32 {
    let ids = &mut applied.classes[fam];
    if let Some(id) = ids.get(&class) {
        return *id;
    }
    let id = u32::try_from(ids.len()).unwrap_or(u32::MAX);
    ids.insert(class, id);
    new.push((fam, id, class));
    id
}

/// Element messages grouped by family and set, deletions first.
#[derive(Debug, Default)]
struct ElementBatch {
    delete: BTreeMap<(usize, &'static str), Vec<Element>>,
    add: BTreeMap<(usize, &'static str), Vec<Element>>,
}

impl ElementBatch {
    /// The element counts after this batch, or `None` when a sized set would overflow.
    fn fill_after(
        &self,
        mut sets: [[SetFill; SETS.len()]; 2],
    ) -> Option<[[SetFill; SETS.len()]; 2]> {
        for (delete, changes) in [(true, &self.delete), (false, &self.add)] {
            for ((fam, set), elements) in changes {
                let fill = &mut sets[*fam][set_index(set)?];
                fill.elements = if delete {
                    fill.elements.saturating_sub(elements.len())
                } else {
                    fill.elements + elements.len()
                };
            }
        }
        let fits = |f: &SetFill| f.size.is_none_or(|size| f.elements <= size as usize);
        sets.iter().flatten().all(fits).then_some(sets)
    }

    fn count(&self) -> usize {
        self.delete
            .values()
            .chain(self.add.values())
            .map(Vec::len)
            .sum()
    }

    fn write(self, b: &mut Batch) {
        for (changes, delete) in [(self.delete, true), (self.add, false)] {
            for ((fam, set), elements) in changes {
                let f = Fam::ALL[fam].family();
                if delete {
                    b.delete_elements(f, TABLE, set, &elements);
                } else {
                    b.add_elements(f, TABLE, set, &elements);
                }
            }
        }
    }
}

/// A planned sync: the batch and how many objects it writes.
#[derive(Debug)]
pub struct Plan {
    pub batch: Batch,
    pub objects: usize,
    pub applied: Applied,
}

/// Both tables rebuilt from scratch in one batch: whatever was there (ours) is deleted first.
/// Elements are encoded straight into [`ElementList`]s, one per set.
pub fn plan_full(rules: &RuleSet) -> Plan {
    let mut applied = Applied::default();
    let mut new_classes = Vec::new();
    let mut lists: [[ElementList; SETS.len()]; 2] = Default::default();
    for (key, fe) in &rules.front_ends {
        let fam = fam_index(key.family);
        let id = class_of(fe).map(|c| class_id(&mut applied, fam, c, &mut new_classes));
        for_each_element(key, fe, id, &mut |fam, set, key, data| {
            let Some(list) = set_index(set).map(|i| &mut lists[fam][i]) else {
                return;
            };
            match data {
                Data::None => list.key(key),
                Data::Value(data, comment) => {
                    list.value(key, data, comment.map(|c| c as &dyn std::fmt::Display));
                }
                Data::Verdict(verdict) => list.verdict(key, verdict),
            }
        });
        for ip in local_ips(fe) {
            *applied.hairpin_refs.entry(ip).or_default() += 1;
        }
    }
    if let Some(hairpin) = set_index(HAIRPIN) {
        for ip in applied.hairpin_refs.keys() {
            lists[fam_index(IpFamily::of(*ip))][hairpin].key(&[addr(*ip), addr(*ip)]);
        }
    }
    let mut b = Batch::new();
    for (index, fam) in Fam::ALL.into_iter().enumerate() {
        let fills = &mut applied.sets[index];
        for (fill, list) in fills.iter_mut().zip(&lists[index]) {
            fill.elements = list.len();
        }
        let sizes = std::array::from_fn(|set| sized(set).then(|| set_size(fills[set].elements)));
        for (fill, size) in fills.iter_mut().zip(sizes) {
            fill.size = size;
        }
        b.add_table(fam.family(), TABLE);
        b.delete_table(fam.family(), TABLE);
        fam.add_skeleton(&mut b, &sizes);
    }
    for (fam, id, class) in &new_classes {
        Fam::ALL[*fam].add_class(&mut b, *id, class, &rules.cluster_cidrs);
    }
    for (key, fe) in &rules.front_ends {
        if let Some(allowed) = &fe.allowed_sources {
            let fam = Fam::ALL[fam_index(key.family)];
            fam.write_firewall_chain(&mut b, &firewall_chain(key), allowed, false);
        }
    }
    let elements: usize = lists.iter().flatten().map(ElementList::len).sum();
    let mut objects = b.len() + elements;
    for (fam, lists) in Fam::ALL.iter().zip(&lists) {
        for (set, list) in SETS.iter().zip(lists) {
            if !list.is_empty() {
                b.add_element_list(fam.family(), TABLE, set, list);
            }
        }
    }
    objects = objects.max(b.len());
    Plan {
        batch: b,
        objects,
        applied,
    }
}

/// Only the difference from `old` to `new`, on top of `applied` (the state after `old`).
/// `None` when the change needs a full sync (node addresses or cluster CIDRs changed).
pub fn plan_incremental(old: &RuleSet, new: &RuleSet, applied: Applied) -> Option<Plan> {
    plan_changes(&diff(old, new), new, applied)
}

/// Only the changes `d` (which lead to `new`), on top of `applied`. `None` when they need a
/// full sync (node addresses or cluster CIDRs changed, or a set would outgrow its size).
pub fn plan_changes(d: &RuleDiff<'_>, new: &RuleSet, mut applied: Applied) -> Option<Plan> {
    if d.node_globals_changed {
        return None;
    }
    // (family, chain, allowed sources; None = delete), written around the element changes.
    let mut firewalls: Vec<(usize, String, Option<Vec<Cidr>>, bool)> = Vec::new();
    let mut new_classes = Vec::new();
    let mut elements = ElementBatch::default();
    let mut hairpin_delta: BTreeMap<IpAddr, isize> = BTreeMap::new();
    // Families whose `affinity` map must be flushed: a client pinned to a backend that is gone
    // would otherwise keep its stale entry (refreshed by every new connection). Flushing
    // re-pins every affinity client of the family once; kernel-side per-entry deletion of
    // timed-out elements could race with their expiry and fail the batch.
    let mut flush_affinity = [false; 2];
    let mut change = |key: &FrontEndKey,
                      old: Option<&FrontEnd>,
                      new: Option<&FrontEnd>,
                      applied: &mut Applied,
                      elements: &mut ElementBatch| {
        let fam = fam_index(key.family);
        let before = old
            .map(|fe| {
                let id = class_of(fe).and_then(|c| applied.classes[fam].get(&c).copied());
                front_end_elements(key, fe, id)
            })
            .unwrap_or_default();
        let after = new
            .map(|fe| {
                let id = class_of(fe).map(|c| class_id(applied, fam, c, &mut new_classes));
                front_end_elements(key, fe, id)
            })
            .unwrap_or_default();
        for placed in &before {
            let same = after
                .iter()
                .find(|a| a.0 == placed.0 && a.1 == placed.1 && a.2.key == placed.2.key);
            if same.is_none_or(|a| a.2.data != placed.2.data) {
                let (fam, set, e) = placed;
                elements
                    .delete
                    .entry((*fam, set))
                    .or_default()
                    .push(e.clone());
            }
        }
        for placed in after {
            let same = before
                .iter()
                .find(|p| p.0 == placed.0 && p.1 == placed.1 && p.2.key == placed.2.key);
            if same.is_none_or(|p| p.2.data != placed.2.data) {
                let (fam, set, e) = placed;
                elements.add.entry((fam, set)).or_default().push(e);
            }
        }
        let old_fw = old.and_then(|fe| fe.allowed_sources.as_deref());
        let new_fw = new.and_then(|fe| fe.allowed_sources.as_deref());
        if old_fw != new_fw {
            firewalls.push((
                fam,
                firewall_chain(key),
                new_fw.map(<[Cidr]>::to_vec),
                old_fw.is_some(),
            ));
        }
        if let Some(old) = old.filter(|o| o.affinity_timeout_seconds.is_some()) {
            let kept = |b: &Backend| new.is_some_and(|n| all_backends(n).any(|x| x == b));
            if !all_backends(old).all(kept) {
                flush_affinity[fam] = true;
            }
        }
        for ip in old.map(local_ips).unwrap_or_default() {
            *hairpin_delta.entry(ip).or_default() -= 1;
        }
        for ip in new.map(local_ips).unwrap_or_default() {
            *hairpin_delta.entry(ip).or_default() += 1;
        }
    };
    for (key, fe) in &d.removed {
        change(key, Some(fe), None, &mut applied, &mut elements);
    }
    for (key, fe) in &d.added {
        change(key, None, Some(fe), &mut applied, &mut elements);
    }
    for c in &d.changed {
        change(c.key, Some(c.old), Some(c.new), &mut applied, &mut elements);
    }
    for (ip, delta) in hairpin_delta {
        let before = applied.hairpin_refs.get(&ip).copied().unwrap_or(0);
        let after = before.saturating_add_signed(delta);
        let (fam, set, e) = hairpin_element(ip);
        match (before, after) {
            (0, 0) => {}
            (0, _) => elements.add.entry((fam, set)).or_default().push(e),
            (_, 0) => elements.delete.entry((fam, set)).or_default().push(e),
            _ => {}
        }
        if after == 0 {
            applied.hairpin_refs.remove(&ip);
        } else {
            applied.hairpin_refs.insert(ip, after);
        }
    }
    applied.sets = elements.fill_after(applied.sets)?;
    let mut b = Batch::new();
    for (fam, id, class) in &new_classes {
        Fam::ALL[*fam].add_class(&mut b, *id, class, &new.cluster_cidrs);
    }
    for (fam, chain, allowed, existed) in &firewalls {
        if let Some(allowed) = allowed {
            Fam::ALL[*fam].write_firewall_chain(&mut b, chain, allowed, *existed);
        }
    }
    let objects = b.len() + elements.count();
    elements.write(&mut b);
    for (fam, flush) in flush_affinity.iter().enumerate() {
        if *flush {
            b.flush_set(Fam::ALL[fam].family(), TABLE, AFFINITY);
        }
    }
    for (fam, chain, allowed, _) in &firewalls {
        if allowed.is_none() {
            Fam::ALL[*fam].delete_firewall_chain(&mut b, chain);
        }
    }
    let objects = objects.max(b.len());
    Some(Plan {
        batch: b,
        objects,
        applied,
    })
}
