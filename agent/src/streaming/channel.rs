//! The pure parts of the streaming protocols: request options from the query string, protocol
//! negotiation, and the WebSocket channel codec of `v4.channel.k8s.io` / `v5.channel.k8s.io`
//! (each binary message is one channel byte then data: 0 stdin, 1 stdout, 2 stderr, 3 error,
//! 4 resize; v5 adds 255 = "close": its one data byte names the channel the client closed).

/// WebSocket channel protocols we terminate, most preferred first.
pub const WEBSOCKET_CHANNEL_PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];
/// The WebSocket subprotocol of SPDY tunnelled in a WebSocket (port-forward).
pub const TUNNELED_PORT_FORWARD_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
/// The SPDY port-forward protocol (`X-Stream-Protocol-Version`).
pub const PORT_FORWARD_PROTOCOL: &str = "portforward.k8s.io";
/// The SPDY remote command protocol we speak towards the CRI streaming server.
pub const SPDY_REMOTE_COMMAND_PROTOCOL: &str = "v4.channel.k8s.io";

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const ERROR: u8 = 3;
pub const RESIZE: u8 = 4;
pub const CLOSE: u8 = 255;

/// What an exec or attach request asks for (`?command=…&stdin=1&stdout=1&stderr=1&tty=1`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamOptions {
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// Why a request's options are refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OptionsError {
    #[error("you must specify at least 1 of stdin, stdout, stderr")]
    NoStreams,
}

/// Parses the query string the way the kubelet does: a flag is on when its value is "1"; with
/// a tty, stderr is dropped (the tty merges it into stdout).
pub fn parse_options(query: &str) -> Result<StreamOptions, OptionsError> {
    let mut options = StreamOptions::default();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let on = value == "1";
        match key.as_ref() {
            "command" => options.command.push(value.into_owned()),
            "stdin" => options.stdin = on,
            "stdout" => options.stdout = on,
            "stderr" => options.stderr = on,
            "tty" => options.tty = on,
            _ => {}
        }
    }
    if options.tty && options.stderr {
        options.stderr = false;
    }
    if !(options.stdin || options.stdout || options.stderr) {
        return Err(OptionsError::NoStreams);
    }
    Ok(options)
}

/// The first protocol of `supported` that the client offered in any of its
/// `Sec-WebSocket-Protocol` / `X-Stream-Protocol-Version` header values (comma-separated).
pub fn negotiate<'a>(offered: &[&str], supported: &[&'a str]) -> Option<&'a str> {
    let offered: Vec<&str> = offered
        .iter()
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect();
    supported
        .iter()
        .copied()
        .find(|protocol| offered.contains(protocol))
}

/// A message from the client of a channel protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage<'a> {
    Stdin(&'a [u8]),
    /// Terminal size JSON (`{"Width":…,"Height":…}`), passed on as is.
    Resize(&'a [u8]),
    /// v5: the client will send nothing more on this channel.
    Close(u8),
    /// Empty messages, and channels a client has no business writing to.
    Ignored,
}

/// Decodes a binary message from the client.
pub fn decode_client<'a>(message: &'a [u8], protocol: &str) -> ClientMessage<'a> {
    match message.split_first() {
        Some((&STDIN, data)) if !data.is_empty() => ClientMessage::Stdin(data),
        Some((&RESIZE, data)) if !data.is_empty() => ClientMessage::Resize(data),
        Some((&CLOSE, [channel, ..])) if protocol == WEBSOCKET_CHANNEL_PROTOCOLS[0] => {
            ClientMessage::Close(*channel)
        }
        _ => ClientMessage::Ignored,
    }
}

/// A binary message carrying `data` on `channel`.
pub fn encode_server(channel: u8, data: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(data.len() + 1);
    message.push(channel);
    message.extend_from_slice(data);
    message
}

/// The Status written on the error channel when the kubelet itself fails the stream.
pub fn failure_status(message: &str) -> Vec<u8> {
    serde_json::json!({
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "InternalError",
        "code": 500,
    })
    .to_string()
    .into_bytes()
}

/// The exit code a Status on the error channel reports: 0 for Success, the `ExitCode` cause of
/// a `NonZeroExitCode` failure, `None` for other failures or unparseable input.
pub fn exit_code(status: &[u8]) -> Option<i32> {
    let status: serde_json::Value = serde_json::from_slice(status).ok()?;
    match status["status"].as_str()? {
        "Success" => Some(0),
        _ if status["reason"] == "NonZeroExitCode" => status["details"]["causes"]
            .as_array()?
            .iter()
            .find(|cause| cause["reason"] == "ExitCode")?["message"]
            .as_str()?
            .parse()
            .ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use super::*;

    fn opts(command: &[&str], stdin: bool, stdout: bool, stderr: bool, tty: bool) -> StreamOptions {
        StreamOptions {
            command: command.iter().map(|s| (*s).to_owned()).collect(),
            stdin,
            stdout,
            stderr,
            tty,
        }
    }

    #[test]
    fn options_parse_like_the_kubelet() {
        let cases: Vec<(&str, Result<StreamOptions, OptionsError>)> = vec![
            (
                "command=sh&command=-c&command=echo%20hi&stdout=1&stderr=1",
                Ok(opts(&["sh", "-c", "echo hi"], false, true, true, false)),
            ),
            (
                "command=cat&stdin=1&stdout=1&stderr=1&tty=1",
                Ok(opts(&["cat"], true, true, false, true)),
            ),
            ("stdout=true&stdin=0", Err(OptionsError::NoStreams)),
            ("command=ls", Err(OptionsError::NoStreams)),
            ("stderr=1&tty=1", Err(OptionsError::NoStreams)),
            ("stdin=1&other=x", Ok(opts(&[], true, false, false, false))),
        ];
        for (query, expected) in cases {
            assert_eq!(parse_options(query), expected, "{query}");
        }
    }

    #[test]
    fn negotiation_prefers_our_order() {
        let ws = &WEBSOCKET_CHANNEL_PROTOCOLS[..];
        let cases: Vec<(Vec<&str>, Option<&str>)> = vec![
            (
                vec!["v4.channel.k8s.io, v5.channel.k8s.io"],
                Some("v5.channel.k8s.io"),
            ),
            (
                vec!["channel.k8s.io", "v4.channel.k8s.io"],
                Some("v4.channel.k8s.io"),
            ),
            (vec!["base64.channel.k8s.io"], None),
            (vec![], None),
        ];
        for (offered, expected) in cases {
            assert_eq!(negotiate(&offered, ws), expected, "{offered:?}");
        }
    }

    #[test]
    fn client_messages_map_to_channels() {
        let v5 = "v5.channel.k8s.io";
        let v4 = "v4.channel.k8s.io";
        let cases: Vec<(&[u8], &str, ClientMessage<'_>)> = vec![
            (b"\x00abc", v5, ClientMessage::Stdin(b"abc")),
            (b"\x00", v5, ClientMessage::Ignored),
            (
                b"\x04{\"Width\":80}",
                v4,
                ClientMessage::Resize(b"{\"Width\":80}"),
            ),
            (b"\xff\x00", v5, ClientMessage::Close(0)),
            (b"\xff\x00", v4, ClientMessage::Ignored),
            (b"\x01out", v5, ClientMessage::Ignored),
            (b"", v5, ClientMessage::Ignored),
        ];
        for (message, protocol, expected) in cases {
            assert_eq!(decode_client(message, protocol), expected, "{message:?}");
        }
        assert_eq!(encode_server(STDERR, b"x"), b"\x02x");
        assert_eq!(encode_server(STDOUT, b""), b"\x01");
    }

    #[test]
    fn exit_codes_are_read_from_statuses() {
        let cases: Vec<(&str, Option<i32>)> = vec![
            (r#"{"metadata":{},"status":"Success"}"#, Some(0)),
            (
                r#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#,
                Some(3),
            ),
            (r#"{"status":"Failure","reason":"InternalError"}"#, None),
            ("not json", None),
        ];
        for (status, expected) in cases {
            assert_eq!(exit_code(status.as_bytes()), expected, "{status}");
        }
        let failure = failure_status("boom");
        assert_eq!(exit_code(&failure), None);
        let value: serde_json::Value = serde_json::from_slice(&failure).unwrap();
        assert_eq!(value["message"], "boom");
    }
}
