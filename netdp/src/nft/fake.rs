//! An in-memory stand-in for nf_tables implementing [`NftApi`], for tests of the code that
//! plans and applies rule sets: it decodes the real batch bytes, keeps tables, named sets and
//! their elements with the kernel's all-or-nothing semantics, records every applied batch, and
//! can be told to refuse the next one; a sized set refuses elements beyond its size. Chains and
//! rules are recorded, not modelled.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::Mutex;

use super::batch::Batch;
use super::error::NftError;
use super::list::{ListedChain, ListedElement, ListedSet, parse_elements, parse_set};
use super::objects::Family;
use super::socket::NftApi;
use super::sys::*;
use super::wire::{attrs, messages, string};

type SetKey = (u8, String, String);

#[derive(Debug, Default, Clone)]
struct State {
    tables: BTreeSet<(u8, String)>,
    chains: BTreeMap<SetKey, bool>,
    sets: BTreeMap<SetKey, (ListedSet, BTreeMap<Vec<u8>, ListedElement>)>,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct MemoryNft {
    state: Mutex<State>,
    applied: Mutex<Vec<Vec<String>>>,
    fail_next: Mutex<Option<i32>>,
}

impl MemoryNft {
    pub fn new() -> Self {
        Self::default()
    }

    /// The descriptions of the messages of every batch applied so far (refused ones excluded).
    pub fn applied(&self) -> Vec<Vec<String>> {
        self.applied
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Makes the next `apply` fail with `errno` on its last message, changing nothing.
    pub fn fail_next_apply(&self, errno: i32) {
        *self.fail_next.lock().unwrap_or_else(|p| p.into_inner()) = Some(errno);
    }

    pub fn has_table(&self, family: Family, table: &str) -> bool {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.tables.contains(&(family.nfproto(), table.to_owned()))
    }
}

fn rejected(message: &str, errno: i32) -> NftError {
    NftError::Rejected {
        message: message.to_owned(),
        source: io::Error::from_raw_os_error(errno),
        extack: None,
        other_failures: 0,
    }
}

fn str_attr(payload: &[u8], ty: u16) -> String {
    attrs(payload)
        .find(|(t, _)| *t == ty)
        .map(|(_, v)| string(v))
        .unwrap_or_default()
}

impl State {
    fn apply_message(&mut self, msg: u8, family: u8, payload: &[u8]) -> Result<(), i32> {
        let table_exists =
            |state: &Self, table: &str| state.tables.contains(&(family, table.to_owned()));
        match msg {
            NFT_MSG_NEWTABLE => {
                self.tables
                    .insert((family, str_attr(payload, NFTA_TABLE_NAME)));
            }
            NFT_MSG_DELTABLE => {
                let table = str_attr(payload, NFTA_TABLE_NAME);
                if !self.tables.remove(&(family, table.clone())) {
                    return Err(nix::libc::ENOENT);
                }
                self.sets
                    .retain(|(f, t, _), _| !(*f == family && *t == table));
                self.chains
                    .retain(|(f, t, _), _| !(*f == family && *t == table));
            }
            NFT_MSG_NEWRULE | NFT_MSG_DELRULE => {
                if !table_exists(self, &str_attr(payload, NFTA_RULE_TABLE)) {
                    return Err(nix::libc::ENOENT);
                }
            }
            NFT_MSG_NEWCHAIN | NFT_MSG_DELCHAIN => {
                let table = str_attr(payload, NFTA_CHAIN_TABLE);
                if !table_exists(self, &table) {
                    return Err(nix::libc::ENOENT);
                }
                let key = (family, table, str_attr(payload, NFTA_CHAIN_NAME));
                if msg == NFT_MSG_NEWCHAIN {
                    let base = attrs(payload).any(|(t, _)| t == NFTA_CHAIN_HOOK);
                    self.chains.insert(key, base);
                } else {
                    self.chains.remove(&key).ok_or(nix::libc::ENOENT)?;
                }
            }
            NFT_MSG_NEWSET => {
                let table = str_attr(payload, NFTA_SET_TABLE);
                if !table_exists(self, &table) {
                    return Err(nix::libc::ENOENT);
                }
                if let Some(set) = parse_set(payload) {
                    self.sets
                        .entry((family, table, set.name.clone()))
                        .or_insert_with(|| (set, BTreeMap::new()));
                }
            }
            NFT_MSG_DELSET => {
                let key = (
                    family,
                    str_attr(payload, NFTA_SET_TABLE),
                    str_attr(payload, NFTA_SET_NAME),
                );
                self.sets.remove(&key).ok_or(nix::libc::ENOENT)?;
            }
            NFT_MSG_NEWSETELEM | NFT_MSG_DELSETELEM => {
                let name = str_attr(payload, NFTA_SET_ELEM_LIST_SET);
                if name.starts_with("__") {
                    return Ok(()); // anonymous: belongs to a rule
                }
                let key = (family, str_attr(payload, NFTA_SET_ELEM_LIST_TABLE), name);
                let (set, elements) = self.sets.get_mut(&key).ok_or(nix::libc::ENOENT)?;
                let mut listed = Vec::new();
                parse_elements(payload, &mut listed);
                let has_list = attrs(payload).any(|(t, _)| t == NFTA_SET_ELEM_LIST_ELEMENTS);
                if msg == NFT_MSG_DELSETELEM && !has_list {
                    elements.clear();
                    return Ok(());
                }
                for element in listed {
                    if msg == NFT_MSG_DELSETELEM {
                        elements.remove(&element.key).ok_or(nix::libc::ENOENT)?;
                    } else {
                        match elements.get(&element.key) {
                            Some(old) if old.data != element.data => return Err(nix::libc::EEXIST),
                            _ => {
                                elements.insert(element.key.clone(), element);
                                // Like the kernel: a sized set refuses elements beyond its size.
                                if set.size.is_some_and(|size| elements.len() > size as usize) {
                                    return Err(nix::libc::ENFILE);
                                }
                            }
                        }
                    }
                }
            }
            _ => return Err(nix::libc::EOPNOTSUPP),
        }
        Ok(())
    }
}

impl NftApi for MemoryNft {
    fn apply(&self, batch: &Batch) -> Result<(), NftError> {
        let (buf, ops) = batch.finish()?;
        if let Some(errno) = self
            .fail_next
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            let last = batch.describe(ops.len().saturating_sub(1));
            return Err(rejected(&last, errno));
        }
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = state.clone();
        let mut index = 0;
        for message in messages(&buf) {
            let message = message?;
            if message.msg_type == NFNL_MSG_BATCH_BEGIN || message.msg_type == NFNL_MSG_BATCH_END {
                continue;
            }
            let msg = (message.msg_type & 0xff) as u8;
            let family = message.payload.first().copied().unwrap_or(0);
            let payload = message.payload.get(NFGENMSG_LEN..).unwrap_or(&[]);
            if let Err(errno) = next.apply_message(msg, family, payload) {
                return Err(rejected(&batch.describe(index), errno));
            }
            index += 1;
        }
        *state = next;
        self.applied
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((0..ops.len()).map(|i| batch.describe(i)).collect());
        Ok(())
    }

    fn list_tables(&self, family: Family) -> Result<Vec<String>, NftError> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        Ok(state
            .tables
            .iter()
            .filter(|(f, _)| *f == family.nfproto())
            .map(|(_, t)| t.clone())
            .collect())
    }

    fn list_chains(&self, family: Family, table: &str) -> Result<Vec<ListedChain>, NftError> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        Ok(state
            .chains
            .iter()
            .filter(|((f, t, _), _)| *f == family.nfproto() && t == table)
            .map(|((_, _, name), base)| ListedChain {
                name: name.clone(),
                base: *base,
            })
            .collect())
    }

    fn list_sets(&self, family: Family, table: &str) -> Result<Vec<ListedSet>, NftError> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        Ok(state
            .sets
            .iter()
            .filter(|((f, t, _), _)| *f == family.nfproto() && t == table)
            .map(|(_, (set, _))| set.clone())
            .collect())
    }

    fn list_elements(
        &self,
        family: Family,
        table: &str,
        set: &str,
    ) -> Result<Vec<ListedElement>, NftError> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let key = (family.nfproto(), table.to_owned(), set.to_owned());
        state
            .sets
            .get(&key)
            .map(|(_, elements)| elements.values().cloned().collect())
            .ok_or_else(|| NftError::List {
                what: format!("elements of {} {table} {set}", family.name()),
                source: io::Error::from_raw_os_error(nix::libc::ENOENT),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::super::objects::{Chain, Datum, Element, KeyType, SetSpec, Verdict};
    use super::*;

    fn element(k: u32) -> Element {
        Element::verdict(&[Datum::U32(k)], Verdict::Accept)
    }

    #[test]
    fn applies_sets_and_elements_all_or_nothing() {
        let nft = MemoryNft::new();
        let mut b = Batch::new();
        b.add_table(Family::Ip, "t")
            .add_set(
                Family::Ip,
                "t",
                &SetSpec::verdict_map("m", vec![KeyType::Integer32]),
            )
            .add_elements(Family::Ip, "t", "m", &[element(1), element(2)]);
        b.add_chain(Family::Ip, "t", &Chain::regular("c"));
        nft.apply(&b).expect("apply");
        assert_eq!(nft.list_tables(Family::Ip).expect("tables"), ["t"]);
        assert!(nft.list_tables(Family::Ip6).expect("tables").is_empty());
        assert_eq!(
            nft.list_chains(Family::Ip, "t").expect("chains"),
            [ListedChain {
                name: "c".into(),
                base: false
            }]
        );
        assert_eq!(
            nft.list_elements(Family::Ip, "t", "m").expect("list").len(),
            2
        );
        assert_eq!(nft.list_sets(Family::Ip, "t").expect("sets")[0].name, "m");

        // The second message fails: the first one must not stick.
        let mut b = Batch::new();
        b.add_elements(Family::Ip, "t", "m", &[element(3)])
            .delete_elements(Family::Ip, "t", "m", &[element(9)]);
        let err = nft.apply(&b).expect_err("missing element");
        assert_eq!(err.errno(), Some(nix::libc::ENOENT));
        assert!(err.to_string().contains("delete element ip t m"), "{err}");
        assert_eq!(
            nft.list_elements(Family::Ip, "t", "m").expect("list").len(),
            2
        );

        nft.fail_next_apply(nix::libc::ENOMEM);
        let mut b = Batch::new();
        b.flush_set(Family::Ip, "t", "m");
        assert!(nft.apply(&b).is_err());
        nft.apply(&b).expect("flush");
        assert!(
            nft.list_elements(Family::Ip, "t", "m")
                .expect("list")
                .is_empty()
        );
        assert_eq!(nft.applied().len(), 2);

        let mut b = Batch::new();
        b.delete_table(Family::Ip, "t");
        nft.apply(&b).expect("delete table");
        assert!(!nft.has_table(Family::Ip, "t"));
        assert!(nft.list_chains(Family::Ip, "t").expect("chains").is_empty());
        assert!(nft.list_sets(Family::Ip, "t").expect("sets").is_empty());
    }

    #[test]
    fn a_sized_set_refuses_elements_beyond_its_size() {
        let nft = MemoryNft::new();
        let mut b = Batch::new();
        b.add_table(Family::Ip, "t").add_set(
            Family::Ip,
            "t",
            &SetSpec::verdict_map("m", vec![KeyType::Integer32]).with_size(2),
        );
        b.add_elements(Family::Ip, "t", "m", &[element(1), element(2)]);
        nft.apply(&b).expect("two fit");
        assert_eq!(
            nft.list_sets(Family::Ip, "t").expect("sets")[0].size,
            Some(2)
        );
        let mut b = Batch::new();
        b.add_elements(Family::Ip, "t", "m", &[element(3)]);
        let err = nft.apply(&b).expect_err("a third does not");
        assert_eq!(err.errno(), Some(nix::libc::ENFILE));
        // Room made in the same batch counts.
        let mut b = Batch::new();
        b.delete_elements(Family::Ip, "t", "m", &[element(1)])
            .add_elements(Family::Ip, "t", "m", &[element(3), element(2)]);
        nft.apply(&b).expect("one out, one in");
        assert_eq!(
            nft.list_elements(Family::Ip, "t", "m").expect("list").len(),
            2
        );
    }
}
