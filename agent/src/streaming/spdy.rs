//! SPDY/3.1 framing, pure: frames to and from bytes, and the zlib-compressed header blocks
//! (one compression context per direction for the whole connection, primed with the SPDY/3
//! dictionary). This is the subset the CRI streaming server (docker/moby spdystream, as used
//! by containerd) and kubectl exchange: SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING,
//! GOAWAY, HEADERS, WINDOW_UPDATE and DATA.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The SPDY version this codec speaks.
pub const VERSION: u16 = 3;
/// Flag: the sender's half of the stream ends with this frame.
pub const FLAG_FIN: u8 = 0x01;
/// The largest frame payload accepted (SPDY lengths are 24 bits).
pub const MAX_PAYLOAD: usize = 0x00ff_ffff;

const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_SETTINGS: u16 = 4;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;
const TYPE_HEADERS: u16 = 8;
const TYPE_WINDOW_UPDATE: u16 = 9;

/// Header names and values, in order (names lowercase, as SPDY requires).
pub type Headers = Vec<(String, String)>;

/// Errors of the SPDY codec.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpdyError {
    #[error("SPDY frame: {0}")]
    Malformed(&'static str),
    #[error("SPDY version {0} is not supported")]
    Version(u16),
    #[error("SPDY header block compression: {0}")]
    Compression(String),
}

/// One SPDY frame, header blocks already decompressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        associated_to: u32,
        priority: u8,
        flags: u8,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    /// SETTINGS entries are not interpreted; kept raw.
    Settings {
        flags: u8,
        entries: Vec<(u8, u32, u32)>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        flags: u8,
        data: Vec<u8>,
    },
    /// A control frame type this codec does not know (to be ignored, as the spec says).
    Unknown {
        kind: u16,
    },
}

/// The SPDY/3 header compression dictionary (draft-mbelshe-httpbis-spdy-00, 2.6.10.1).
const DICTIONARY: &[u8] = b"\x00\x00\x00\x07options\x00\x00\x00\x04head\x00\x00\x00\x04post\
\x00\x00\x00\x03put\x00\x00\x00\x06delete\x00\x00\x00\x05trace\x00\x00\x00\x06accept\
\x00\x00\x00\x0eaccept-charset\x00\x00\x00\x0faccept-encoding\x00\x00\x00\x0faccept-language\
\x00\x00\x00\x0daccept-ranges\x00\x00\x00\x03age\x00\x00\x00\x05allow\x00\x00\x00\x0dauthorization\
\x00\x00\x00\x0dcache-control\x00\x00\x00\x0aconnection\x00\x00\x00\x0ccontent-base\
\x00\x00\x00\x10content-encoding\x00\x00\x00\x10content-language\x00\x00\x00\x0econtent-length\
\x00\x00\x00\x10content-location\x00\x00\x00\x0bcontent-md5\x00\x00\x00\x0dcontent-range\
\x00\x00\x00\x0ccontent-type\x00\x00\x00\x04date\x00\x00\x00\x04etag\x00\x00\x00\x06expect\
\x00\x00\x00\x07expires\x00\x00\x00\x04from\x00\x00\x00\x04host\x00\x00\x00\x08if-match\
\x00\x00\x00\x11if-modified-since\x00\x00\x00\x0dif-none-match\x00\x00\x00\x08if-range\
\x00\x00\x00\x13if-unmodified-since\x00\x00\x00\x0dlast-modified\x00\x00\x00\x08location\
\x00\x00\x00\x0cmax-forwards\x00\x00\x00\x06pragma\x00\x00\x00\x12proxy-authenticate\
\x00\x00\x00\x13proxy-authorization\x00\x00\x00\x05range\x00\x00\x00\x07referer\
\x00\x00\x00\x0bretry-after\x00\x00\x00\x06server\x00\x00\x00\x02te\x00\x00\x00\x07trailer\
\x00\x00\x00\x11transfer-encoding\x00\x00\x00\x07upgrade\x00\x00\x00\x0auser-agent\
\x00\x00\x00\x04vary\x00\x00\x00\x03via\x00\x00\x00\x07warning\x00\x00\x00\x10www-authenticate\
\x00\x00\x00\x06method\x00\x00\x00\x03get\x00\x00\x00\x06status\x00\x00\x00\x06200 OK\
\x00\x00\x00\x07version\x00\x00\x00\x08HTTP/1.1\x00\x00\x00\x03url\x00\x00\x00\x06public\
\x00\x00\x00\x0aset-cookie\x00\x00\x00\x0akeep-alive\x00\x00\x00\x06origin100101201202205206300\
302303304305306307402405406407408409410411412413414415416417502504505203 Non-Authoritative \
Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized403 Forbidden404 \
Not Found500 Internal Server Error501 Not Implemented503 Service UnavailableJan Feb Mar Apr May \
Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,\
image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,text/javascript,\
publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.";

/// Encodes frames of one direction of a connection (owns that direction's zlib context).
pub struct Encoder {
    zlib: Compress,
    primed: bool,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder").finish_non_exhaustive()
    }
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Encoder {
    pub fn new() -> Self {
        Self {
            zlib: Compress::new(Compression::default(), true),
            primed: false,
        }
    }

    /// Appends `frame`'s bytes to `out`.
    pub fn encode(&mut self, frame: &Frame, out: &mut Vec<u8>) -> Result<(), SpdyError> {
        match frame {
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                if data.len() > MAX_PAYLOAD {
                    return Err(SpdyError::Malformed("DATA payload too long"));
                }
                out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
                push_flags_len(out, *flags, data.len());
                out.extend_from_slice(data);
                Ok(())
            }
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                flags,
                headers,
            } => {
                let mut body = Vec::new();
                body.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
                body.extend_from_slice(&(associated_to & 0x7fff_ffff).to_be_bytes());
                body.push((priority & 0x07) << 5);
                body.push(0);
                self.compress_headers(headers, &mut body)?;
                push_control(out, TYPE_SYN_STREAM, *flags, &body)
            }
            Frame::SynReply {
                stream_id,
                flags,
                headers,
            } => self.stream_headers(out, TYPE_SYN_REPLY, *stream_id, *flags, headers),
            Frame::Headers {
                stream_id,
                flags,
                headers,
            } => self.stream_headers(out, TYPE_HEADERS, *stream_id, *flags, headers),
            Frame::RstStream { stream_id, status } => {
                push_control(out, TYPE_RST_STREAM, 0, &two_words(*stream_id, *status))
            }
            Frame::Settings { flags, entries } => {
                let mut body = Vec::new();
                let count = u32::try_from(entries.len())
                    .map_err(|_| SpdyError::Malformed("too many settings"))?;
                body.extend_from_slice(&count.to_be_bytes());
                for (entry_flags, id, value) in entries {
                    body.push(*entry_flags);
                    body.extend_from_slice(&id.to_be_bytes()[1..]);
                    body.extend_from_slice(&value.to_be_bytes());
                }
                push_control(out, TYPE_SETTINGS, *flags, &body)
            }
            Frame::Ping { id } => push_control(out, TYPE_PING, 0, &id.to_be_bytes()),
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => push_control(
                out,
                TYPE_GOAWAY,
                0,
                &two_words(*last_good_stream_id, *status),
            ),
            Frame::WindowUpdate { stream_id, delta } => {
                push_control(out, TYPE_WINDOW_UPDATE, 0, &two_words(*stream_id, *delta))
            }
            Frame::Unknown { .. } => Err(SpdyError::Malformed("cannot encode an unknown frame")),
        }
    }

    fn stream_headers(
        &mut self,
        out: &mut Vec<u8>,
        kind: u16,
        stream_id: u32,
        flags: u8,
        headers: &Headers,
    ) -> Result<(), SpdyError> {
        let mut body = Vec::new();
        body.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
        self.compress_headers(headers, &mut body)?;
        push_control(out, kind, flags, &body)
    }

    fn compress_headers(&mut self, headers: &Headers, out: &mut Vec<u8>) -> Result<(), SpdyError> {
        if !self.primed {
            self.zlib
                .set_dictionary(DICTIONARY)
                .map_err(|e| SpdyError::Compression(e.to_string()))?;
            self.primed = true;
        }
        let plain = header_block(headers)?;
        let mut input = plain.as_slice();
        loop {
            out.reserve(input.len() + 64);
            let before_in = self.zlib.total_in();
            let before_out = self.zlib.total_out();
            self.zlib
                .compress_vec(input, out, FlushCompress::Sync)
                .map_err(|e| SpdyError::Compression(e.to_string()))?;
            let consumed = usize::try_from(self.zlib.total_in() - before_in)
                .map_err(|_| SpdyError::Malformed("size"))?;
            input = &input[consumed..];
            let produced = self.zlib.total_out() - before_out;
            // Done when all input is in and the sync flush fit in the spare capacity.
            if input.is_empty() && out.len() < out.capacity() && produced > 0 {
                return Ok(());
            }
        }
    }
}

/// Decodes frames of one direction of a connection (owns that direction's zlib context).
pub struct Decoder {
    zlib: Decompress,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder").finish_non_exhaustive()
    }
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    pub fn new() -> Self {
        Self {
            zlib: Decompress::new(true),
        }
    }

    /// Decodes one frame from the front of `buf`: `Ok(None)` when `buf` holds less than a
    /// whole frame, else the frame and how many bytes it took.
    pub fn decode(&mut self, buf: &[u8]) -> Result<Option<(Frame, usize)>, SpdyError> {
        if buf.len() < 8 {
            return Ok(None);
        }
        let flags = buf[4];
        let len = usize::from(buf[5]) << 16 | usize::from(buf[6]) << 8 | usize::from(buf[7]);
        if buf.len() < 8 + len {
            return Ok(None);
        }
        let body = &buf[8..8 + len];
        let first = word(buf, 0);
        let frame = if first & 0x8000_0000 == 0 {
            Frame::Data {
                stream_id: first,
                flags,
                data: body.to_vec(),
            }
        } else {
            let version = u16::try_from((first >> 16) & 0x7fff).unwrap_or(0);
            if version != VERSION {
                return Err(SpdyError::Version(version));
            }
            let kind = u16::try_from(first & 0xffff).unwrap_or(0);
            self.control(kind, flags, body)?
        };
        Ok(Some((frame, 8 + len)))
    }

    fn control(&mut self, kind: u16, flags: u8, body: &[u8]) -> Result<Frame, SpdyError> {
        let need = |n: usize| {
            if body.len() < n {
                Err(SpdyError::Malformed("control frame too short"))
            } else {
                Ok(())
            }
        };
        Ok(match kind {
            TYPE_SYN_STREAM => {
                need(10)?;
                Frame::SynStream {
                    stream_id: word(body, 0) & 0x7fff_ffff,
                    associated_to: word(body, 4) & 0x7fff_ffff,
                    priority: body[8] >> 5,
                    flags,
                    headers: self.decompress_headers(&body[10..])?,
                }
            }
            TYPE_SYN_REPLY | TYPE_HEADERS => {
                need(4)?;
                let stream_id = word(body, 0) & 0x7fff_ffff;
                let headers = self.decompress_headers(&body[4..])?;
                if kind == TYPE_SYN_REPLY {
                    Frame::SynReply {
                        stream_id,
                        flags,
                        headers,
                    }
                } else {
                    Frame::Headers {
                        stream_id,
                        flags,
                        headers,
                    }
                }
            }
            TYPE_RST_STREAM => {
                need(8)?;
                Frame::RstStream {
                    stream_id: word(body, 0) & 0x7fff_ffff,
                    status: word(body, 4),
                }
            }
            TYPE_SETTINGS => {
                need(4)?;
                let count = usize::try_from(word(body, 0))
                    .map_err(|_| SpdyError::Malformed("settings count"))?;
                need(4 + count.saturating_mul(8))?;
                let entries = (0..count)
                    .map(|i| {
                        let at = 4 + i * 8;
                        (body[at], word(body, at) & 0x00ff_ffff, word(body, at + 4))
                    })
                    .collect();
                Frame::Settings { flags, entries }
            }
            TYPE_PING => {
                need(4)?;
                Frame::Ping { id: word(body, 0) }
            }
            TYPE_GOAWAY => {
                need(8)?;
                Frame::GoAway {
                    last_good_stream_id: word(body, 0) & 0x7fff_ffff,
                    status: word(body, 4),
                }
            }
            TYPE_WINDOW_UPDATE => {
                need(8)?;
                Frame::WindowUpdate {
                    stream_id: word(body, 0) & 0x7fff_ffff,
                    delta: word(body, 4) & 0x7fff_ffff,
                }
            }
            kind => Frame::Unknown { kind },
        })
    }

    fn decompress_headers(&mut self, compressed: &[u8]) -> Result<Headers, SpdyError> {
        let mut plain = Vec::with_capacity(compressed.len() * 4 + 64);
        let mut input = compressed;
        loop {
            let before_in = self.zlib.total_in();
            let result = self
                .zlib
                .decompress_vec(input, &mut plain, FlushDecompress::Sync);
            let consumed = usize::try_from(self.zlib.total_in() - before_in)
                .map_err(|_| SpdyError::Malformed("size"))?;
            input = &input[consumed..];
            match result {
                Ok(Status::StreamEnd) => break,
                Ok(_) if input.is_empty() && plain.len() < plain.capacity() => break,
                Ok(_) => plain.reserve(plain.capacity().max(256)),
                Err(e) if e.needs_dictionary().is_some() => self
                    .zlib
                    .set_dictionary(DICTIONARY)
                    .map(|_| ())
                    .map_err(|e| SpdyError::Compression(e.to_string()))?,
                Err(e) => return Err(SpdyError::Compression(e.to_string())),
            }
        }
        parse_header_block(&plain)
    }
}

/// The uncompressed header block: a count, then length-prefixed names and values.
pub fn header_block(headers: &Headers) -> Result<Vec<u8>, SpdyError> {
    let mut out = Vec::new();
    push_len(&mut out, headers.len())?;
    for (name, value) in headers {
        push_len(&mut out, name.len())?;
        out.extend_from_slice(name.to_ascii_lowercase().as_bytes());
        push_len(&mut out, value.len())?;
        out.extend_from_slice(value.as_bytes());
    }
    Ok(out)
}

/// Parses an uncompressed header block.
pub fn parse_header_block(block: &[u8]) -> Result<Headers, SpdyError> {
    let mut at = 0usize;
    let mut take = |n: usize| -> Result<&[u8], SpdyError> {
        let end = at
            .checked_add(n)
            .filter(|end| *end <= block.len())
            .ok_or(SpdyError::Malformed("header block truncated"))?;
        let slice = &block[at..end];
        at = end;
        Ok(slice)
    };
    let count = word(take(4)?, 0);
    let mut headers = Vec::new();
    for _ in 0..count {
        let name_len = usize::try_from(word(take(4)?, 0)).unwrap_or(usize::MAX);
        let name = String::from_utf8_lossy(take(name_len)?).into_owned();
        let value_len = usize::try_from(word(take(4)?, 0)).unwrap_or(usize::MAX);
        let value = String::from_utf8_lossy(take(value_len)?).into_owned();
        headers.push((name, value));
    }
    Ok(headers)
}

/// The value of header `name` (case-insensitive).
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn push_len(out: &mut Vec<u8>, len: usize) -> Result<(), SpdyError> {
    let len = u32::try_from(len).map_err(|_| SpdyError::Malformed("header too long"))?;
    out.extend_from_slice(&len.to_be_bytes());
    Ok(())
}

fn push_flags_len(out: &mut Vec<u8>, flags: u8, len: usize) {
    out.push(flags);
    out.extend_from_slice(&len.to_be_bytes()[std::mem::size_of::<usize>() - 3..]);
}

fn push_control(out: &mut Vec<u8>, kind: u16, flags: u8, body: &[u8]) -> Result<(), SpdyError> {
    if body.len() > MAX_PAYLOAD {
        return Err(SpdyError::Malformed("control frame too long"));
    }
    out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    push_flags_len(out, flags, body.len());
    out.extend_from_slice(body);
    Ok(())
}

fn two_words(a: u32, b: u32) -> [u8; 8] {
    let mut out = [0u8; 8];
    out[..4].copy_from_slice(&(a & 0x7fff_ffff).to_be_bytes());
    out[4..].copy_from_slice(&b.to_be_bytes());
    out
}

fn word(buf: &[u8], at: usize) -> u32 {
    let mut bytes = [0u8; 4];
    bytes.copy_from_slice(&buf[at..at + 4]);
    u32::from_be_bytes(bytes)
}

#[cfg(test)]
#[path = "spdy_tests.rs"]
mod tests;
