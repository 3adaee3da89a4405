//! A transaction: the builder that encodes tables, chains, rules, sets and elements into one
//! `NFNL_MSG_BATCH_BEGIN ... BATCH_END` buffer, and describes any of its messages on demand so a
//! kernel error can name it (`add chain ip kwk services`) without a string per message. Pure;
//! [`NftApi::apply`](super::NftApi::apply) sends it.

use super::element_list::ElementList;
use super::error::NftError;
use super::expr::{Expr, millis, value_data, verdict_data};
use super::objects::{
    AnonymousSet, Chain, Element, ElementData, Family, MapType, SetFlags, SetSpec,
};
use super::sys::*;
use super::wire::Writer;

/// Elements per message are capped so the nested element list stays well under the 16-bit
/// attribute length (the kernel cannot take more than 64 KiB in one attribute).
const ELEMENT_LIST_BUDGET: usize = 48 * 1024;

/// One message of a batch: where it starts in the buffer (described on demand, see
/// [`Batch::describe`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Op {
    pub(crate) offset: usize,
}

/// An atomic nf_tables transaction under construction.
///
/// Every method appends one or more messages; nothing is sent until
/// [`NftSocket::apply`](super::NftApi::apply). The kernel applies all messages or
/// none.
#[derive(Debug)]
pub struct Batch {
    w: Writer,
    pub(crate) ops: Vec<Op>,
    error: Option<NftError>,
}

impl Default for Batch {
    fn default() -> Self {
        Self::new()
    }
}

fn msg_type(msg: u8) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | u16::from(msg)
}

impl Batch {
    pub fn new() -> Self {
        let mut w = Writer::default();
        // BATCH_BEGIN: family unspec, res_id = the nf_tables subsystem. Sequence 0 for now;
        // the socket numbers all messages when sending.
        let begin = w.begin_msg(
            NFNL_MSG_BATCH_BEGIN,
            NLM_F_REQUEST,
            0,
            0,
            NFNL_SUBSYS_NFTABLES,
        );
        w.end_msg(begin);
        Self {
            w,
            ops: Vec::new(),
            error: None,
        }
    }

    /// Number of object messages (not counting the batch delimiters).
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Starts an object message; `encode` fills its attributes.
    fn message(
        &mut self,
        msg: u8,
        flags: u16,
        family: Family,
        encode: impl FnOnce(&mut Writer) -> Result<(), NftError>,
    ) -> &mut Self {
        if self.error.is_some() {
            return self;
        }
        let start = self.w.begin_msg(
            msg_type(msg),
            NLM_F_REQUEST | NLM_F_ACK | flags,
            0,
            family.nfproto(),
            0,
        );
        match encode(&mut self.w) {
            Ok(()) => {
                self.w.end_msg(start);
                self.ops.push(Op { offset: start });
            }
            Err(err) => {
                self.w.buf.truncate(start);
                self.error = Some(err);
            }
        }
        self
    }

    /// `add table` (no error if it exists).
    pub fn add_table(&mut self, family: Family, table: &str) -> &mut Self {
        self.message(NFT_MSG_NEWTABLE, NLM_F_CREATE, family, |w| {
            w.str(NFTA_TABLE_NAME, table);
            Ok(())
        })
    }

    /// `delete table`: the table and everything in it.
    pub fn delete_table(&mut self, family: Family, table: &str) -> &mut Self {
        self.message(NFT_MSG_DELTABLE, 0, family, |w| {
            w.str(NFTA_TABLE_NAME, table);
            Ok(())
        })
    }

    /// `flush table`: deletes every rule of every chain in the table (chains and sets stay).
    pub fn flush_table(&mut self, family: Family, table: &str) -> &mut Self {
        self.message(NFT_MSG_DELRULE, 0, family, |w| {
            w.str(NFTA_RULE_TABLE, table);
            Ok(())
        })
    }

    /// `add chain` (no error if it exists with the same hook).
    pub fn add_chain(&mut self, family: Family, table: &str, chain: &Chain) -> &mut Self {
        self.message(NFT_MSG_NEWCHAIN, NLM_F_CREATE, family, |w| {
            w.str(NFTA_CHAIN_TABLE, table);
            w.str(NFTA_CHAIN_NAME, &chain.name);
            if let Some((hook, priority, policy, chain_type)) = chain.hook_number() {
                let nest = w.begin_nested(NFTA_CHAIN_HOOK);
                w.u32_be(NFTA_HOOK_HOOKNUM, hook);
                w.u32_be(NFTA_HOOK_PRIORITY, priority as u32);
                w.end_nested(nest)?;
                w.u32_be(NFTA_CHAIN_POLICY, policy);
                w.str(NFTA_CHAIN_TYPE, chain_type);
            }
            Ok(())
        })
    }

    /// `flush chain`: deletes the chain's rules.
    pub fn flush_chain(&mut self, family: Family, table: &str, chain: &str) -> &mut Self {
        self.message(NFT_MSG_DELRULE, 0, family, |w| {
            w.str(NFTA_RULE_TABLE, table);
            w.str(NFTA_RULE_CHAIN, chain);
            Ok(())
        })
    }

    /// `delete chain` (must be empty and unreferenced).
    pub fn delete_chain(&mut self, family: Family, table: &str, chain: &str) -> &mut Self {
        self.message(NFT_MSG_DELCHAIN, 0, family, |w| {
            w.str(NFTA_CHAIN_TABLE, table);
            w.str(NFTA_CHAIN_NAME, chain);
            Ok(())
        })
    }

    /// `add rule` appended at the end of `chain`.
    pub fn add_rule(
        &mut self,
        family: Family,
        table: &str,
        chain: &str,
        exprs: &[Expr],
    ) -> &mut Self {
        self.add_rule_commented(family, table, chain, exprs, None)
    }

    /// `add rule ... comment "..."`: the comment shows in `nft list ruleset`, as kube-proxy's do.
    pub fn add_rule_commented(
        &mut self,
        family: Family,
        table: &str,
        chain: &str,
        exprs: &[Expr],
        comment: Option<&str>,
    ) -> &mut Self {
        self.message(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, family, |w| {
            w.str(NFTA_RULE_TABLE, table);
            w.str(NFTA_RULE_CHAIN, chain);
            let list = w.begin_nested(NFTA_RULE_EXPRESSIONS);
            for expr in exprs {
                expr.encode(w)?;
            }
            w.end_nested(list)?;
            if let Some(comment) = comment {
                w.attr(NFTA_RULE_USERDATA, &comment_udata(comment));
            }
            Ok(())
        })
    }

    /// `add set` / `add map` (no error if it exists with the same definition).
    pub fn add_set(&mut self, family: Family, table: &str, set: &SetSpec) -> &mut Self {
        let id = u32::try_from(self.ops.len() + 1).unwrap_or(u32::MAX);
        self.message(NFT_MSG_NEWSET, NLM_F_CREATE, family, |w| {
            w.str(NFTA_SET_TABLE, table);
            w.str(NFTA_SET_NAME, &set.name);
            w.u32_be(NFTA_SET_FLAGS, set.kernel_flags());
            w.u32_be(NFTA_SET_KEY_TYPE, set.key.type_id());
            w.u32_be(NFTA_SET_KEY_LEN, len32(set.key.len()));
            match &set.map {
                Some(MapType::Verdict) => w.u32_be(NFTA_SET_DATA_TYPE, NFT_DATA_VERDICT),
                Some(MapType::Data(data)) => {
                    w.u32_be(NFTA_SET_DATA_TYPE, data.type_id());
                    w.u32_be(NFTA_SET_DATA_LEN, len32(data.len()));
                }
                None => {}
            }
            if let Some(timeout) = set.timeout {
                w.u64_be(NFTA_SET_TIMEOUT, millis(timeout));
            }
            w.u32_be(NFTA_SET_ID, id);
            // Only for `nft list`: host-order integers print as numbers, not byte-swapped.
            let host_order_data = matches!(&set.map, Some(MapType::Data(d)) if d.is_host_order());
            let mut udata = Vec::new();
            for (tag, host_order) in [
                (NFTNL_UDATA_SET_KEYBYTEORDER, set.key.is_host_order()),
                (NFTNL_UDATA_SET_DATABYTEORDER, host_order_data),
            ] {
                if host_order {
                    udata.extend_from_slice(&[tag, 4]);
                    udata.extend_from_slice(&NFT_BYTEORDER_HOST_ENDIAN.to_ne_bytes());
                }
            }
            if !udata.is_empty() {
                w.attr(NFTA_SET_USERDATA, &udata);
            }
            // Field lengths are for the concatenated-range (pipapo) backend only; the kernel
            // refuses them without NFT_SET_CONCAT, which goes with interval sets.
            let field_lengths = set.key.is_concat() && set.flags.interval;
            if field_lengths || set.size.is_some() {
                let desc = w.begin_nested(NFTA_SET_DESC);
                if let Some(size) = set.size {
                    w.u32_be(NFTA_SET_DESC_SIZE, size);
                }
                if field_lengths {
                    let concat = w.begin_nested(NFTA_SET_DESC_CONCAT);
                    for part in &set.key.0 {
                        let elem = w.begin_nested(NFTA_LIST_ELEM);
                        w.u32_be(NFTA_SET_FIELD_LEN, len32(part.len()));
                        w.end_nested(elem)?;
                    }
                    w.end_nested(concat)?;
                }
                w.end_nested(desc)?;
            }
            Ok(())
        })
    }

    /// Creates a constant anonymous set (or map, with `map`) holding `elements`; look it up
    /// in a rule added later in this batch (e.g. [`Expr::anonymous_vmap`]). The kernel refuses
    /// the batch if no rule binds it.
    pub fn add_anonymous_set(
        &mut self,
        family: Family,
        table: &str,
        key: Vec<super::objects::KeyType>,
        map: Option<MapType>,
        elements: &[Element],
    ) -> AnonymousSet {
        let name = if map.is_some() { "__map%d" } else { "__set%d" };
        let id = u32::try_from(self.ops.len() + 1).unwrap_or(u32::MAX);
        let spec = SetSpec {
            map,
            flags: SetFlags {
                constant: true,
                ..SetFlags::default()
            },
            ..SetSpec::set(name, key)
        };
        self.add_set(family, table, &spec);
        self.elements(
            NFT_MSG_NEWSETELEM,
            NLM_F_CREATE,
            family,
            table,
            (name, Some(id)),
            elements,
        );
        AnonymousSet { name, id }
    }

    /// `delete set` / `delete map` (must be unreferenced).
    pub fn delete_set(&mut self, family: Family, table: &str, set: &str) -> &mut Self {
        self.message(NFT_MSG_DELSET, 0, family, |w| {
            w.str(NFTA_SET_TABLE, table);
            w.str(NFTA_SET_NAME, set);
            Ok(())
        })
    }

    /// `flush set`: removes all elements.
    pub fn flush_set(&mut self, family: Family, table: &str, set: &str) -> &mut Self {
        self.message(NFT_MSG_DELSETELEM, 0, family, |w| {
            w.str(NFTA_SET_ELEM_LIST_TABLE, table);
            w.str(NFTA_SET_ELEM_LIST_SET, set);
            Ok(())
        })
    }

    /// `add element`: as many messages as the elements need. Adding an element that exists with
    /// the same data is not an error.
    pub fn add_elements(
        &mut self,
        family: Family,
        table: &str,
        set: &str,
        elements: &[Element],
    ) -> &mut Self {
        self.elements(
            NFT_MSG_NEWSETELEM,
            NLM_F_CREATE,
            family,
            table,
            (set, None),
            elements,
        )
    }

    /// `delete element`: every element must exist.
    pub fn delete_elements(
        &mut self,
        family: Family,
        table: &str,
        set: &str,
        elements: &[Element],
    ) -> &mut Self {
        self.elements(NFT_MSG_DELSETELEM, 0, family, table, (set, None), elements)
    }

    /// `add element` for elements encoded ahead ([`ElementList`]): as many messages as they
    /// need.
    pub fn add_element_list(
        &mut self,
        family: Family,
        table: &str,
        set: &str,
        list: &ElementList,
    ) -> &mut Self {
        if let Some(len) = list.too_long {
            self.error.get_or_insert(NftError::AttributeTooLong { len });
            return self;
        }
        self.element_messages(
            NFT_MSG_NEWSETELEM,
            NLM_F_CREATE,
            family,
            table,
            (set, None),
            &list.w.buf,
        )
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "private helper of two public methods"
    )]
    fn elements(
        &mut self,
        msg: u8,
        flags: u16,
        family: Family,
        table: &str,
        set: (&str, Option<u32>),
        elements: &[Element],
    ) -> &mut Self {
        let mut encoded = Writer::default();
        for element in elements {
            if let Err(err) = encode_element(&mut encoded, element, msg == NFT_MSG_NEWSETELEM) {
                self.error.get_or_insert(err);
                return self;
            }
        }
        self.element_messages(msg, flags, family, table, set, &encoded.buf)
    }

    /// Element messages carrying `encoded` (whole `NFTA_LIST_ELEM` attributes), cut between
    /// elements so that each list stays under [`ELEMENT_LIST_BUDGET`].
    fn element_messages(
        &mut self,
        msg: u8,
        flags: u16,
        family: Family,
        table: &str,
        (set, set_id): (&str, Option<u32>),
        encoded: &[u8],
    ) -> &mut Self {
        let mut rest = encoded;
        while !rest.is_empty() && self.error.is_none() {
            // At least one element per message, then as many as fit the budget.
            let mut cut = 0;
            while cut < rest.len()
                && (cut == 0 || cut + attr_len(&rest[cut..]) <= ELEMENT_LIST_BUDGET)
            {
                cut += attr_len(&rest[cut..]);
            }
            let (chunk, tail) = rest.split_at(cut.min(rest.len()));
            self.message(msg, flags, family, |w| {
                w.str(NFTA_SET_ELEM_LIST_TABLE, table);
                w.str(NFTA_SET_ELEM_LIST_SET, set);
                if let Some(id) = set_id {
                    w.u32_be(NFTA_SET_ELEM_LIST_SET_ID, id);
                }
                let list = w.begin_nested(NFTA_SET_ELEM_LIST_ELEMENTS);
                w.buf.extend_from_slice(chunk);
                w.end_nested(list)
            });
            rest = tail;
        }
        self
    }

    /// What the `index`-th object message does, e.g. `add chain ip kwk services`, decoded from
    /// its bytes.
    pub fn describe(&self, index: usize) -> String {
        let Some(op) = self.ops.get(index) else {
            return "the batch".to_owned();
        };
        let Some(Ok(message)) = super::wire::messages(&self.w.buf[op.offset..]).next() else {
            return "an unreadable message".to_owned();
        };
        describe_message(&message)
    }

    /// The encoded batch with `BATCH_END` appended, and its operations; fails if any message
    /// could not be encoded.
    pub(crate) fn finish(&self) -> Result<(Vec<u8>, &[Op]), NftError> {
        if let Some(err) = &self.error {
            return Err(match err {
                NftError::AttributeTooLong { len } => NftError::AttributeTooLong { len: *len },
                NftError::ValueLength { set, expected, got } => NftError::ValueLength {
                    set: set.clone(),
                    expected: *expected,
                    got: *got,
                },
                _ => NftError::Malformed("batch encoding failed"),
            });
        }
        let mut w = self.w.clone();
        let end = w.begin_msg(
            NFNL_MSG_BATCH_END,
            NLM_F_REQUEST,
            0,
            0,
            NFNL_SUBSYS_NFTABLES,
        );
        w.end_msg(end);
        Ok((w.into_bytes(), &self.ops))
    }
}

/// `verb object family table name` of one encoded object message.
fn describe_message(message: &super::wire::Message<'_>) -> String {
    use super::wire::{attrs, string};
    let family = match message.payload.first() {
        Some(2) => "ip",
        Some(10) => "ip6",
        Some(1) => "inet",
        _ => "?",
    };
    let body = message.payload.get(4..).unwrap_or(&[]);
    let attr = |ty: u16| {
        attrs(body)
            .find(|(t, _)| *t == ty)
            .map(|(_, v)| string(v))
            .unwrap_or_default()
    };
    // Attribute 1 is the table name in every message kind used here.
    let table = attr(1);
    let msg = (message.msg_type & 0xff) as u8;
    let (verb, name) = match msg {
        NFT_MSG_NEWTABLE => ("add table", String::new()),
        NFT_MSG_DELTABLE => ("delete table", String::new()),
        NFT_MSG_NEWCHAIN => ("add chain", attr(NFTA_CHAIN_NAME)),
        NFT_MSG_DELCHAIN => ("delete chain", attr(NFTA_CHAIN_NAME)),
        NFT_MSG_NEWRULE => ("add rule", attr(NFTA_RULE_CHAIN)),
        NFT_MSG_DELRULE if attr(NFTA_RULE_CHAIN).is_empty() => ("flush table", String::new()),
        NFT_MSG_DELRULE => ("flush chain", attr(NFTA_RULE_CHAIN)),
        NFT_MSG_NEWSET => ("add set", attr(NFTA_SET_NAME)),
        NFT_MSG_DELSET => ("delete set", attr(NFTA_SET_NAME)),
        NFT_MSG_NEWSETELEM => ("add element", attr(NFTA_SET_ELEM_LIST_SET)),
        NFT_MSG_DELSETELEM => {
            let has_list = attrs(body).any(|(t, _)| t == NFTA_SET_ELEM_LIST_ELEMENTS);
            let verb = if has_list {
                "delete element"
            } else {
                "flush set"
            };
            (verb, attr(NFTA_SET_ELEM_LIST_SET))
        }
        _ => ("message", String::new()),
    };
    let mut out = format!("{verb} {family} {table}");
    if !name.is_empty() {
        out.push(' ');
        out.push_str(&name);
    }
    let element_msg = msg == NFT_MSG_NEWSETELEM || msg == NFT_MSG_DELSETELEM;
    if let Some((_, list)) = attrs(body)
        .find(|(t, _)| *t == NFTA_SET_ELEM_LIST_ELEMENTS)
        .filter(|_| element_msg)
    {
        out.push_str(&format!(" ({} elements)", attrs(list).count()));
    }
    out
}

/// libnftnl's userdata TLV holding a NUL-terminated comment (at most 128 bytes, like `nft`).
pub(crate) fn comment_udata(comment: &str) -> Vec<u8> {
    let mut out = Vec::new();
    comment_udata_into(comment, &mut out);
    out
}

/// [`comment_udata`] into `out` (cleared first).
pub(crate) fn comment_udata_into(comment: &str, out: &mut Vec<u8>) {
    let mut end = comment.len().min(127);
    while !comment.is_char_boundary(end) {
        end -= 1;
    }
    let text = &comment.as_bytes()[..end];
    out.clear();
    out.extend_from_slice(&[NFTNL_UDATA_COMMENT, (text.len() + 1) as u8]);
    out.extend_from_slice(text);
    out.push(0);
}

/// The aligned length of the attribute at the start of `data` (all of `data` if malformed).
fn attr_len(data: &[u8]) -> usize {
    let len = match data {
        [a, b, ..] => usize::from(u16::from_ne_bytes([*a, *b])),
        _ => data.len(),
    };
    super::wire::align4(len).clamp(1, data.len().max(1))
}

/// The comment in a userdata blob written by [`comment_udata`] (or by `nft`).
pub(crate) fn parse_comment_udata(mut udata: &[u8]) -> Option<String> {
    while udata.len() >= 2 {
        let (ty, len) = (udata[0], usize::from(udata[1]));
        let value = udata.get(2..2 + len)?;
        if ty == NFTNL_UDATA_COMMENT {
            return Some(super::wire::string(value));
        }
        udata = &udata[2 + len..];
    }
    None
}

fn len32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

pub(crate) fn encode_element(
    w: &mut Writer,
    element: &Element,
    with_data: bool,
) -> Result<(), NftError> {
    let nest = w.begin_nested(NFTA_LIST_ELEM);
    value_data(w, NFTA_SET_ELEM_KEY, &element.key)?;
    if with_data {
        match &element.data {
            Some(ElementData::Verdict(v)) => verdict_data(w, NFTA_SET_ELEM_DATA, v)?,
            Some(ElementData::Value(bytes)) => value_data(w, NFTA_SET_ELEM_DATA, bytes)?,
            None => {}
        }
        if let Some(timeout) = element.timeout {
            w.u64_be(NFTA_SET_ELEM_TIMEOUT, millis(timeout));
        }
    }
    if let Some(comment) = element.comment.as_deref().filter(|_| with_data) {
        w.attr(NFTA_SET_ELEM_USERDATA, &comment_udata(comment));
    }
    if element.interval_end {
        w.u32_be(NFTA_SET_ELEM_FLAGS, NFT_SET_ELEM_INTERVAL_END);
    }
    w.end_nested(nest)
}

/// Gives every message of an encoded batch its sequence number: `first` for BATCH_BEGIN, then
/// consecutive. Returns the sequence number of each object message (parallel to the ops).
/// Unless `ack_all`, only the last object message keeps its ACK request: errors are reported
/// for every message anyway, and that last ACK marks the end of the answers.
pub(crate) fn number_messages(buf: &mut [u8], first: u32, ack_all: bool) -> Vec<u32> {
    let mut seqs = Vec::new();
    let mut offset = 0;
    let mut seq = first;
    let mut last_object = None;
    while offset + NLMSG_HDRLEN <= buf.len() {
        let len = u32::from_ne_bytes([
            buf[offset],
            buf[offset + 1],
            buf[offset + 2],
            buf[offset + 3],
        ]) as usize;
        let msg_type = u16::from_ne_bytes([buf[offset + 4], buf[offset + 5]]);
        buf[offset + 8..offset + 12].copy_from_slice(&seq.to_ne_bytes());
        if msg_type != NFNL_MSG_BATCH_BEGIN && msg_type != NFNL_MSG_BATCH_END {
            seqs.push(seq);
            if !ack_all {
                set_ack_flag(buf, offset, false);
                last_object = Some(offset);
            }
        }
        seq = seq.wrapping_add(1);
        if len < NLMSG_HDRLEN {
            break;
        }
        offset += super::wire::align4(len);
    }
    if let Some(offset) = last_object {
        set_ack_flag(buf, offset, true);
    }
    seqs
}

fn set_ack_flag(buf: &mut [u8], offset: usize, on: bool) {
    let flags = u16::from_ne_bytes([buf[offset + 6], buf[offset + 7]]);
    let flags = if on {
        flags | NLM_F_ACK
    } else {
        flags & !NLM_F_ACK
    };
    buf[offset + 6..offset + 8].copy_from_slice(&flags.to_ne_bytes());
}

#[cfg(test)]
mod tests {
    use super::super::objects::{Datum, KeyType, Verdict};
    use super::super::wire::messages;
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn batch_is_framed_by_begin_and_end_with_the_nftables_subsystem() {
        let mut b = Batch::new();
        b.add_table(Family::Ip, "kwk")
            .add_chain(Family::Ip, "kwk", &Chain::regular("services"));
        let (mut buf, ops) = b.finish().expect("encodes");
        assert_eq!(ops.len(), 2);
        let seqs = number_messages(&mut buf, 100, true);
        assert_eq!(seqs, vec![101, 102]);
        let msgs: Vec<_> = messages(&buf).collect::<Result<_, _>>().expect("parses");
        let types: Vec<_> = msgs.iter().map(|m| m.msg_type).collect();
        assert_eq!(
            types,
            vec![
                NFNL_MSG_BATCH_BEGIN,
                0x0a00 | u16::from(NFT_MSG_NEWTABLE),
                0x0a00 | u16::from(NFT_MSG_NEWCHAIN),
                NFNL_MSG_BATCH_END
            ]
        );
        assert_eq!(&msgs[0].payload[2..4], &10u16.to_be_bytes());
        assert_eq!(msgs[1].payload[0], 2); // NFPROTO_IPV4
        assert_ne!(msgs[1].flags & NLM_F_ACK, 0);
        assert_eq!(
            msgs.iter().map(|m| m.seq).collect::<Vec<_>>(),
            vec![100, 101, 102, 103]
        );
        assert!(msgs[1..3].iter().all(|m| m.flags & NLM_F_ACK != 0));

        // Large batches: only the last object message asks for an ACK.
        let (mut buf, _) = b.finish().expect("encodes");
        number_messages(&mut buf, 100, false);
        let acked: Vec<bool> = messages(&buf)
            .map(|m| m.expect("parses").flags & NLM_F_ACK != 0)
            .collect();
        assert_eq!(acked, [false, false, true, false]);
    }

    #[test]
    fn comments_round_trip_and_are_capped() {
        assert_eq!(comment_udata("ab"), [0, 3, b'a', b'b', 0]);
        assert_eq!(
            parse_comment_udata(&comment_udata("ns/svc:http")).as_deref(),
            Some("ns/svc:http")
        );
        let long = "é".repeat(100);
        let udata = comment_udata(&long);
        assert!(udata.len() <= 130);
        assert!(parse_comment_udata(&udata).is_some_and(|c| long.starts_with(&c)));
    }

    #[test]
    fn messages_describe_themselves() {
        let mut b = Batch::new();
        b.add_table(Family::Ip6, "kwk")
            .add_chain(Family::Ip6, "kwk", &Chain::regular("svc"))
            .add_rule(Family::Ip6, "kwk", "svc", &[Expr::accept()])
            .flush_chain(Family::Ip6, "kwk", "svc")
            .flush_table(Family::Ip6, "kwk")
            .add_set(
                Family::Ip6,
                "kwk",
                &SetSpec::set("s", vec![KeyType::Ipv6Addr]),
            )
            .add_elements(
                Family::Ip6,
                "kwk",
                "s",
                &[Element::key(&[Datum::Ipv6(std::net::Ipv6Addr::LOCALHOST)])],
            )
            .flush_set(Family::Ip6, "kwk", "s")
            .delete_table(Family::Ip6, "kwk");
        let got: Vec<_> = (0..=b.len()).map(|i| b.describe(i)).collect();
        assert_eq!(
            got,
            [
                "add table ip6 kwk",
                "add chain ip6 kwk svc",
                "add rule ip6 kwk svc",
                "flush chain ip6 kwk svc",
                "flush table ip6 kwk",
                "add set ip6 kwk s",
                "add element ip6 kwk s (1 elements)",
                "flush set ip6 kwk s",
                "delete table ip6 kwk",
                "the batch",
            ]
        );
    }

    #[test]
    fn many_elements_split_into_messages_under_64k() {
        let elements: Vec<_> = (0..20_000u32)
            .map(|i| {
                Element::verdict(
                    &[
                        Datum::Ipv4(Ipv4Addr::from(0x0a00_0000 + i)),
                        Datum::Proto(6),
                        Datum::Port(80),
                    ],
                    Verdict::Goto(format!("svc-{i}")),
                )
            })
            .collect();
        let mut b = Batch::new();
        b.add_elements(Family::Ip, "kwk", "vmap", &elements);
        let (buf, ops) = b.finish().expect("encodes");
        assert!(ops.len() > 10, "{} messages", ops.len());
        let mut total = 0;
        for m in messages(&buf) {
            let m = m.expect("parses");
            if m.msg_type == 0x0a00 | u16::from(NFT_MSG_NEWSETELEM) {
                let list = super::super::wire::attrs(&m.payload[4..])
                    .find(|(t, _)| *t == NFTA_SET_ELEM_LIST_ELEMENTS)
                    .expect("element list");
                assert!(list.1.len() < 65_535);
                total += super::super::wire::attrs(list.1).count();
            }
        }
        assert_eq!(total, elements.len());
    }

    #[test]
    fn concatenated_interval_set_describes_field_lengths() {
        let set = SetSpec::verdict_map(
            "svc",
            vec![KeyType::Ipv4Addr, KeyType::InetProto, KeyType::InetService],
        )
        .with_flags(super::super::objects::SetFlags {
            interval: true,
            ..Default::default()
        });
        let mut b = Batch::new();
        b.add_set(Family::Ip, "kwk", &set);
        let (buf, _) = b.finish().expect("encodes");
        let msg = messages(&buf).nth(1).expect("set message").expect("parses");
        let desc = super::super::wire::attrs(&msg.payload[4..])
            .find(|(t, _)| *t == NFTA_SET_DESC)
            .expect("desc");
        let (_, concat) = super::super::wire::attrs(desc.1).next().expect("concat");
        let lens: Vec<u32> = super::super::wire::attrs(concat)
            .filter_map(|(_, f)| super::super::wire::attrs(f).next())
            .filter_map(|(_, v)| super::super::wire::be32(v))
            .collect();
        assert_eq!(lens, vec![4, 1, 2]);
    }
}
