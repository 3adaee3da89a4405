//! Reading back what is in the kernel: the sets/maps of a table and their elements, decoded
//! from `NFT_MSG_NEWSET` / `NFT_MSG_NEWSETELEM` dump replies. Pure parsing.

use std::time::Duration;

use super::objects::{ElementData, Verdict};
use super::sys::*;
use super::wire::{attrs, be32, be64, string};

/// A set or map as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedSet {
    pub name: String,
    /// `NFT_SET_*` flags.
    pub flags: u32,
    /// `nft`'s datatype number (concatenations packed 6 bits per part).
    pub key_type: u32,
    pub key_len: u32,
    /// Present for maps; `0xffffff00` for verdict maps.
    pub data_type: Option<u32>,
    pub data_len: u32,
    pub timeout: Option<Duration>,
    /// The most elements it may hold, when it was given a size.
    pub size: Option<u32>,
}

impl ListedSet {
    pub fn is_map(&self) -> bool {
        self.flags & NFT_SET_MAP != 0
    }

    pub fn is_verdict_map(&self) -> bool {
        self.data_type == Some(NFT_DATA_VERDICT)
    }
}

/// An element as the kernel reports it; `key` and value data are register bytes, comparable with
/// [`super::objects::encode_value`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedElement {
    pub key: Vec<u8>,
    pub data: Option<ElementData>,
    pub timeout: Option<Duration>,
    /// Time left before a timed-out element disappears.
    pub expires: Option<Duration>,
    pub interval_end: bool,
    pub comment: Option<String>,
}

/// A chain as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedChain {
    pub name: String,
    /// Attached to a hook (a base chain).
    pub base: bool,
}

/// Decodes one `NEWTABLE` reply: the table name.
pub(crate) fn parse_table(payload: &[u8]) -> Option<String> {
    attrs(payload)
        .find(|(ty, _)| *ty == NFTA_TABLE_NAME)
        .map(|(_, v)| string(v))
}

/// Decodes one `NEWCHAIN` reply if it belongs to `table`.
pub(crate) fn parse_chain(payload: &[u8], table: &str) -> Option<ListedChain> {
    let mut chain = ListedChain {
        name: String::new(),
        base: false,
    };
    let mut in_table = false;
    for (ty, value) in attrs(payload) {
        match ty {
            NFTA_CHAIN_TABLE => in_table = string(value) == table,
            NFTA_CHAIN_NAME => chain.name = string(value),
            NFTA_CHAIN_HOOK => chain.base = true,
            _ => {}
        }
    }
    (in_table && !chain.name.is_empty()).then_some(chain)
}

/// Decodes one `NEWSET` reply (attributes after the `nfgenmsg` header).
pub(crate) fn parse_set(payload: &[u8]) -> Option<ListedSet> {
    let mut set = ListedSet {
        name: String::new(),
        flags: 0,
        key_type: 0,
        key_len: 0,
        data_type: None,
        data_len: 0,
        timeout: None,
        size: None,
    };
    for (ty, value) in attrs(payload) {
        match ty {
            NFTA_SET_NAME => set.name = string(value),
            NFTA_SET_FLAGS => set.flags = be32(value)?,
            NFTA_SET_KEY_TYPE => set.key_type = be32(value)?,
            NFTA_SET_KEY_LEN => set.key_len = be32(value)?,
            NFTA_SET_DATA_TYPE => set.data_type = be32(value),
            NFTA_SET_DATA_LEN => set.data_len = be32(value)?,
            NFTA_SET_TIMEOUT => set.timeout = be64(value).map(Duration::from_millis),
            NFTA_SET_DESC => {
                set.size = attrs(value)
                    .find(|(t, _)| *t == NFTA_SET_DESC_SIZE)
                    .and_then(|(_, v)| be32(v));
            }
            _ => {}
        }
    }
    // Anonymous sets belong to rules, not to the caller's naming.
    (!set.name.is_empty() && set.flags & NFT_SET_ANONYMOUS == 0).then_some(set)
}

/// Decodes the elements of one `NEWSETELEM` reply into `out`.
pub(crate) fn parse_elements(payload: &[u8], out: &mut Vec<ListedElement>) {
    let Some((_, list)) = attrs(payload).find(|(ty, _)| *ty == NFTA_SET_ELEM_LIST_ELEMENTS) else {
        return;
    };
    for (_, elem) in attrs(list) {
        let mut element = ListedElement {
            key: Vec::new(),
            data: None,
            timeout: None,
            expires: None,
            interval_end: false,
            comment: None,
        };
        for (ty, value) in attrs(elem) {
            match ty {
                NFTA_SET_ELEM_KEY => {
                    if let Some((_, key)) = attrs(value).find(|(t, _)| *t == NFTA_DATA_VALUE) {
                        element.key = key.to_vec();
                    }
                }
                NFTA_SET_ELEM_DATA => element.data = parse_data(value),
                NFTA_SET_ELEM_TIMEOUT => element.timeout = be64(value).map(Duration::from_millis),
                NFTA_SET_ELEM_EXPIRATION => {
                    element.expires = be64(value).map(Duration::from_millis);
                }
                NFTA_SET_ELEM_USERDATA => {
                    element.comment = super::batch::parse_comment_udata(value);
                }
                NFTA_SET_ELEM_FLAGS => {
                    element.interval_end =
                        be32(value).is_some_and(|f| f & NFT_SET_ELEM_INTERVAL_END != 0);
                }
                _ => {}
            }
        }
        out.push(element);
    }
}

fn parse_data(data: &[u8]) -> Option<ElementData> {
    let (ty, value) = attrs(data).next()?;
    match ty {
        NFTA_DATA_VALUE => Some(ElementData::Value(value.to_vec())),
        NFTA_DATA_VERDICT => {
            let mut code = None;
            let mut chain = None;
            for (ty, v) in attrs(value) {
                match ty {
                    NFTA_VERDICT_CODE => code = be32(v).map(|c| c as i32),
                    NFTA_VERDICT_CHAIN => chain = Some(string(v)),
                    _ => {}
                }
            }
            Verdict::from_code(code?, chain).map(ElementData::Verdict)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::batch::Batch;
    use super::super::objects::{Datum, Element, Family};
    use super::super::wire::messages;
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn elements_we_encode_parse_back() {
        // The kernel reports elements in the same attribute layout we send them in.
        let elements = vec![
            Element::verdict(
                &[Datum::Ipv4(Ipv4Addr::new(10, 0, 0, 1))],
                Verdict::Goto("a".into()),
            ),
            Element::value(
                &[Datum::Ipv4(Ipv4Addr::new(10, 0, 0, 2))],
                &[
                    Datum::Ipv4(Ipv4Addr::new(192, 168, 0, 1)),
                    Datum::Port(8080),
                ],
            )
            .with_timeout(Duration::from_secs(30)),
        ];
        let mut b = Batch::new();
        b.add_elements(Family::Ip, "t", "s", &elements);
        let (buf, _) = b.finish().expect("encodes");
        let msg = messages(&buf).nth(1).expect("message").expect("parses");
        let mut got = Vec::new();
        parse_elements(&msg.payload[NFGENMSG_LEN..], &mut got);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].key, elements[0].key);
        assert_eq!(got[0].data, elements[0].data);
        assert_eq!(got[1].data, elements[1].data);
        assert_eq!(got[1].timeout, Some(Duration::from_secs(30)));
    }

    #[test]
    fn a_sized_set_lists_its_size() {
        use super::super::objects::{KeyType, SetFlags, SetSpec};
        let key = vec![KeyType::Ipv4Addr, KeyType::InetService];
        let ranges = SetFlags {
            interval: true,
            ..SetFlags::default()
        };
        for (spec, size) in [
            (SetSpec::set("s", key.clone()), None),
            (SetSpec::set("s", key.clone()).with_size(3000), Some(3000)),
            // With the field lengths of a concatenated range set in the same description.
            (
                SetSpec::set("s", key).with_size(7).with_flags(ranges),
                Some(7),
            ),
        ] {
            let mut b = Batch::new();
            b.add_set(Family::Ip, "kwk", &spec);
            let (buf, _) = b.finish().expect("encodes");
            let msg = messages(&buf).nth(1).expect("set message").expect("parses");
            let listed = parse_set(&msg.payload[4..]).expect("a set");
            assert_eq!(listed.size, size, "{spec:?}");
        }
    }
}
