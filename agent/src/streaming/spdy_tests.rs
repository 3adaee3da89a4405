#![allow(clippy::unwrap_used, reason = "test code")]

use super::*;

fn headers(pairs: &[(&str, &str)]) -> Headers {
    pairs
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn frames_round_trip_through_one_connection_context() {
    let frames = vec![
        Frame::SynStream {
            stream_id: 1,
            associated_to: 0,
            priority: 0,
            flags: 0,
            headers: headers(&[("streamtype", "error")]),
        },
        Frame::SynStream {
            stream_id: 3,
            associated_to: 0,
            priority: 2,
            flags: FLAG_FIN,
            headers: headers(&[("streamtype", "data"), ("port", "80"), ("requestid", "0")]),
        },
        Frame::SynReply {
            stream_id: 3,
            flags: 0,
            headers: vec![],
        },
        Frame::Headers {
            stream_id: 3,
            flags: 0,
            headers: headers(&[("x", "a\0b")]),
        },
        Frame::Data {
            stream_id: 3,
            flags: FLAG_FIN,
            data: b"hello".to_vec(),
        },
        Frame::Data {
            stream_id: 5,
            flags: 0,
            data: vec![],
        },
        Frame::RstStream {
            stream_id: 7,
            status: 5,
        },
        Frame::Settings {
            flags: 1,
            entries: vec![(0, 7, 65536), (1, 4, 100)],
        },
        Frame::Ping { id: 42 },
        Frame::GoAway {
            last_good_stream_id: 9,
            status: 0,
        },
        Frame::WindowUpdate {
            stream_id: 1,
            delta: 1024,
        },
    ];
    let mut encoder = Encoder::new();
    let mut wire = Vec::new();
    for frame in &frames {
        encoder.encode(frame, &mut wire).unwrap();
    }
    let mut decoder = Decoder::new();
    let mut at = 0;
    let mut decoded = Vec::new();
    // Feed byte by byte at the start to exercise partial input.
    assert_eq!(decoder.decode(&wire[..7]).unwrap(), None);
    while at < wire.len() {
        let (frame, used) = decoder.decode(&wire[at..]).unwrap().unwrap();
        decoded.push(frame);
        at += used;
    }
    assert_eq!(decoded, frames);
}

#[test]
fn wire_layout_of_data_and_control_frames() {
    let cases: Vec<(Frame, Vec<u8>)> = vec![
        (
            Frame::Data {
                stream_id: 3,
                flags: FLAG_FIN,
                data: b"ab".to_vec(),
            },
            vec![0, 0, 0, 3, 1, 0, 0, 2, b'a', b'b'],
        ),
        (
            Frame::Ping { id: 1 },
            vec![0x80, 3, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1],
        ),
        (
            Frame::RstStream {
                stream_id: 1,
                status: 5,
            },
            vec![0x80, 3, 0, 3, 0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0, 5],
        ),
        (
            Frame::WindowUpdate {
                stream_id: 0,
                delta: 7,
            },
            vec![0x80, 3, 0, 9, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 7],
        ),
    ];
    for (frame, bytes) in cases {
        let mut out = Vec::new();
        Encoder::new().encode(&frame, &mut out).unwrap();
        assert_eq!(out, bytes, "{frame:?}");
        let (back, used) = Decoder::new().decode(&bytes).unwrap().unwrap();
        assert_eq!((back, used), (frame, bytes.len()));
    }
}

#[test]
fn header_blocks_are_length_prefixed_and_lowercased() {
    let block = header_block(&headers(&[("StreamType", "stdin")])).unwrap();
    assert_eq!(
        block,
        b"\0\0\0\x01\0\0\0\x0astreamtype\0\0\0\x05stdin".to_vec()
    );
    assert_eq!(
        parse_header_block(&block).unwrap(),
        headers(&[("streamtype", "stdin")])
    );
    assert!(parse_header_block(b"\0\0\0\x01\0\0\0\x09short").is_err());
    assert_eq!(
        header(&headers(&[("Port", "80")]), "port"),
        Some("80"),
        "lookups ignore case"
    );
}

#[test]
fn compressed_header_blocks_start_with_a_dictionary_zlib_header() {
    let mut out = Vec::new();
    Encoder::new()
        .encode(
            &Frame::SynReply {
                stream_id: 1,
                flags: 0,
                headers: vec![],
            },
            &mut out,
        )
        .unwrap();
    // 8 bytes frame header, 4 stream id, then zlib: CMF 0x78, FLG with FDICT (0x20).
    assert_eq!(out[12], 0x78);
    assert_ne!(out[13] & 0x20, 0);
}

#[test]
fn bad_frames_are_rejected() {
    let mut decoder = Decoder::new();
    assert_eq!(
        decoder.decode(&[0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1]),
        Err(SpdyError::Version(2))
    );
    assert!(decoder.decode(&[0x80, 3, 0, 3, 0, 0, 0, 2, 0, 0]).is_err());
    assert_eq!(
        decoder
            .decode(&[0x80, 3, 0, 0x20, 0, 0, 0, 0])
            .unwrap()
            .unwrap(),
        (Frame::Unknown { kind: 0x20 }, 8)
    );
}
