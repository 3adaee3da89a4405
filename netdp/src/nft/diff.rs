//! The element-level plan for one set or map: given the desired elements and what the kernel
//! listed, which to delete and which to add so that one batch makes them equal. Pure.

use std::collections::HashMap;

use super::list::ListedElement;
use super::objects::{Element, ElementData};

/// The messages that turn the observed elements into the desired ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ElementChanges {
    /// Keys to delete (gone, or whose data changes: the kernel does not overwrite data).
    pub delete: Vec<Element>,
    /// Elements to add (new, or with changed data). Apply after `delete` in the same batch.
    pub add: Vec<Element>,
}

impl ElementChanges {
    pub fn is_empty(&self) -> bool {
        self.delete.is_empty() && self.add.is_empty()
    }
}

/// Plans the element changes of one set. Elements that exist with the same data stay
/// untouched, timeouts included (a running timer is not reset by a resync).
pub fn plan_elements(desired: &[Element], observed: &[ListedElement]) -> ElementChanges {
    let observed_by_key: HashMap<&[u8], Option<&ElementData>> = observed
        .iter()
        .map(|e| (e.key.as_slice(), e.data.as_ref()))
        .collect();
    let desired_keys: HashMap<&[u8], &Element> =
        desired.iter().map(|e| (e.key.as_slice(), e)).collect();
    let mut changes = ElementChanges::default();
    for element in desired {
        match observed_by_key.get(element.key.as_slice()) {
            None => changes.add.push(element.clone()),
            Some(data) if *data != element.data.as_ref() => {
                changes.delete.push(key_only(&element.key));
                changes.add.push(element.clone());
            }
            Some(_) => {}
        }
    }
    for element in observed {
        if !desired_keys.contains_key(element.key.as_slice()) {
            changes.delete.push(key_only(&element.key));
        }
    }
    changes
}

fn key_only(key: &[u8]) -> Element {
    Element {
        key: key.to_vec(),
        data: None,
        timeout: None,
        interval_end: false,
        comment: None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::objects::{Datum, Verdict};
    use super::*;

    fn want(k: u32, chain: &str) -> Element {
        Element::verdict(&[Datum::U32(k)], Verdict::Goto(chain.to_owned()))
    }

    fn have(k: u32, chain: &str) -> ListedElement {
        let e = want(k, chain);
        ListedElement {
            key: e.key,
            data: e.data,
            timeout: None,
            expires: None,
            interval_end: false,
            comment: None,
        }
    }

    fn keys(elements: &[Element]) -> Vec<u32> {
        let mut keys: Vec<u32> = elements
            .iter()
            .map(|e| u32::from_ne_bytes([e.key[0], e.key[1], e.key[2], e.key[3]]))
            .collect();
        keys.sort_unstable();
        keys
    }

    #[test]
    fn plan_table() {
        // (desired, observed, keys to delete, keys to add)
        type Case = (Vec<Element>, Vec<ListedElement>, Vec<u32>, Vec<u32>);
        let cases: Vec<Case> = vec![
            (vec![], vec![], vec![], vec![]),
            (vec![want(1, "a")], vec![], vec![], vec![1]),
            (vec![], vec![have(1, "a")], vec![1], vec![]),
            (vec![want(1, "a")], vec![have(1, "a")], vec![], vec![]),
            (vec![want(1, "b")], vec![have(1, "a")], vec![1], vec![1]),
            (
                vec![want(1, "a"), want(2, "b"), want(3, "c")],
                vec![have(2, "b"), have(3, "x"), have(4, "d")],
                vec![3, 4],
                vec![1, 3],
            ),
        ];
        for (desired, observed, delete, add) in cases {
            let plan = plan_elements(&desired, &observed);
            assert_eq!(keys(&plan.delete), delete, "{desired:?} vs {observed:?}");
            assert_eq!(keys(&plan.add), add, "{desired:?} vs {observed:?}");
            assert!(plan.delete.iter().all(|e| e.data.is_none()));
        }
    }
}
