//! [`ElementList`]: set elements encoded into their netlink attributes as the caller produces
//! them, without an [`Element`] value (and its allocations) per element: the shape of the
//! 10^5-element lists of a full sync. [`Batch::add_element_list`](super::Batch::add_element_list)
//! cuts a list into messages.

use std::fmt::{self, Write as _};

use super::batch::{comment_udata_into, encode_element};
use super::error::NftError;
use super::expr::{value_data, verdict_data};
use super::objects::{Datum, Element, Verdict};
use super::sys::*;
use super::wire::Writer;

/// The elements to add to one set, encoded. Each is one `NFTA_LIST_ELEM` attribute, so a list
/// can be cut between any two elements.
#[derive(Debug, Default, Clone)]
pub struct ElementList {
    pub(crate) w: Writer,
    len: usize,
    /// The length of the first element that did not fit a netlink attribute, if any.
    pub(crate) too_long: Option<usize>,
    /// Scratch space: register images, comment text.
    value: Vec<u8>,
    text: String,
}

impl ElementList {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A set element: `key`.
    pub fn key(&mut self, key: &[Datum]) {
        self.encode(key, |_, _, _| Ok(()));
    }

    /// A map element, `key comment "<comment>" : data`.
    pub fn value(&mut self, key: &[Datum], data: &[Datum], comment: Option<&dyn fmt::Display>) {
        self.text.clear();
        if let Some(comment) = comment {
            // Writing into a String cannot fail.
            let _ = write!(self.text, "{comment}");
        }
        self.encode(key, |w, value, text| {
            register_image(data, value);
            value_data(w, NFTA_SET_ELEM_DATA, value)?;
            if comment.is_some() {
                comment_udata_into(text, value);
                w.attr(NFTA_SET_ELEM_USERDATA, value);
            }
            Ok(())
        });
    }

    /// A verdict-map element: `key : verdict`.
    pub fn verdict(&mut self, key: &[Datum], verdict: &Verdict) {
        self.encode(key, |w, _, _| verdict_data(w, NFTA_SET_ELEM_DATA, verdict));
    }

    /// Any element (the general form, e.g. with a timeout).
    pub fn push(&mut self, element: &Element) {
        let result = encode_element(&mut self.w, element, true);
        self.record(&result);
    }

    fn encode(
        &mut self,
        key: &[Datum],
        data: impl FnOnce(&mut Writer, &mut Vec<u8>, &str) -> Result<(), NftError>,
    ) {
        let Self { w, value, text, .. } = self;
        let nest = w.begin_nested(NFTA_LIST_ELEM);
        register_image(key, value);
        let result = value_data(w, NFTA_SET_ELEM_KEY, value)
            .and_then(|()| data(w, value, text))
            .and_then(|()| w.end_nested(nest));
        self.record(&result);
    }

    fn record(&mut self, result: &Result<(), NftError>) {
        if let Err(NftError::AttributeTooLong { len }) = result {
            self.too_long.get_or_insert(*len);
        }
        self.len += 1;
    }
}

fn register_image(parts: &[Datum], out: &mut Vec<u8>) {
    out.clear();
    for part in parts {
        part.write(out);
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::time::Duration;

    use super::super::Batch;
    use super::super::objects::Family;
    use super::*;

    #[test]
    fn a_list_encodes_like_the_elements_it_stands_for() {
        // Enough elements for several messages, of every form.
        let mut list = ElementList::new();
        let mut elements = Vec::new();
        for i in 0..6000u32 {
            let key = [
                Datum::Ipv4(Ipv4Addr::from(0x0a00_0000 + i)),
                Datum::Proto(6),
                Datum::Port(80),
            ];
            match i % 4 {
                0 => {
                    list.key(&key);
                    elements.push(Element::key(&key));
                }
                1 => {
                    let data = [Datum::Ipv4(Ipv4Addr::LOCALHOST), Datum::Port(8080)];
                    let comment = (i % 8 == 1).then(|| format!("ns/svc-{i}:http"));
                    let shown = comment.as_ref().map(|c| c as &dyn fmt::Display);
                    list.value(&key, &data, shown);
                    let element = Element::value(&key, &data);
                    elements.push(match comment {
                        Some(comment) => element.with_comment(comment),
                        None => element,
                    });
                }
                2 => {
                    let verdict = Verdict::Goto(format!("class-{}", i % 7));
                    list.verdict(&key, &verdict);
                    elements.push(Element::verdict(&key, verdict));
                }
                _ => {
                    let element = Element::key(&key).with_timeout(Duration::from_secs(3));
                    list.push(&element);
                    elements.push(element);
                }
            }
        }
        assert_eq!(list.len(), elements.len());
        let mut from_list = Batch::new();
        from_list.add_element_list(Family::Ip, "t", "s", &list);
        let mut from_elements = Batch::new();
        from_elements.add_elements(Family::Ip, "t", "s", &elements);
        assert!(from_list.len() > 3, "{} messages", from_list.len());
        let (a, _) = from_list.finish().expect("encodes");
        let (b, _) = from_elements.finish().expect("encodes");
        assert!(a == b, "the two encodings differ");
    }
}
