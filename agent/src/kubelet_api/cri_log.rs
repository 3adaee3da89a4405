//! The CRI container log format and the `/containerLogs` options, pure: a log file holds lines
//! `<RFC3339Nano time> <stdout|stderr> <P|F>[:<more tags>] <message>`; `P` marks a fragment of
//! a longer line continued by the next record, `F` the end of a line. Fragments are joined into
//! one logical line carrying the first fragment's time. The options (`tailLines`,
//! `sinceSeconds`/`sinceTime`, `timestamps`, `limitBytes`) are applied to logical lines.

use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// Which stream a record came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One record of a CRI log file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CriRecord<'a> {
    pub time: Timestamp,
    pub stream: Stream,
    /// `P`: the line continues in the next record.
    pub partial: bool,
    /// The message, without the line end.
    pub message: &'a [u8],
}

/// Why a log record could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("missing {0}")]
    Missing(&'static str),
    #[error("invalid timestamp {0:?}")]
    Time(String),
    #[error("unexpected stream type {0:?}")]
    Stream(String),
}

/// Parses one record (without its trailing newline).
pub fn parse_record(line: &[u8]) -> Result<CriRecord<'_>, RecordError> {
    let mut parts = line.splitn(4, |&b| b == b' ');
    let time = parts.next().ok_or(RecordError::Missing("timestamp"))?;
    let stream = parts.next().ok_or(RecordError::Missing("stream type"))?;
    let tags = parts.next().ok_or(RecordError::Missing("tags"))?;
    let message = parts.next().unwrap_or_default();
    let time_text = String::from_utf8_lossy(time);
    let time = time_text
        .parse::<Timestamp>()
        .map_err(|_| RecordError::Time(time_text.into_owned()))?;
    let stream = match stream {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        other => return Err(RecordError::Stream(String::from_utf8_lossy(other).into())),
    };
    let partial = tags.split(|&b| b == b':').next() == Some(b"P");
    Ok(CriRecord {
        time,
        stream,
        partial,
        message,
    })
}

/// A whole line of container output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    pub time: Timestamp,
    pub stream: Stream,
    /// The text with its trailing newline.
    pub text: Vec<u8>,
}

/// Joins records into lines; fed record by record, keeps an unfinished line between calls.
#[derive(Debug, Default)]
pub struct LineAssembler {
    pending: Option<LogLine>,
}

impl LineAssembler {
    /// Adds one record; returns the line it completes, if any.
    pub fn push(&mut self, record: &CriRecord<'_>) -> Option<LogLine> {
        let line = self.pending.get_or_insert_with(|| LogLine {
            time: record.time,
            stream: record.stream,
            text: Vec::new(),
        });
        line.text.extend_from_slice(record.message);
        if record.partial {
            return None;
        }
        let mut line = self.pending.take()?;
        line.text.push(b'\n');
        Some(line)
    }

    /// Parses every complete record in `bytes` (newline-terminated); returns the lines and how
    /// many bytes were consumed (an unterminated last record is left for later). Records that
    /// do not parse are skipped, as upstream does.
    pub fn push_bytes(&mut self, bytes: &[u8]) -> (Vec<LogLine>, usize) {
        let mut lines = Vec::new();
        let mut consumed = 0;
        while let Some(end) = bytes[consumed..].iter().position(|&b| b == b'\n') {
            let record = &bytes[consumed..consumed + end];
            consumed += end + 1;
            match parse_record(record) {
                Ok(record) => lines.extend(self.push(&record)),
                Err(err) => tracing::debug!(%err, "skipping an unreadable container log record"),
            }
        }
        (lines, consumed)
    }
}

/// The options of a `/containerLogs` request (upstream's `PodLogOptions`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogOptions {
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    pub tail_lines: Option<u64>,
    /// Only lines at or after this time.
    pub since: Option<Timestamp>,
    pub limit_bytes: Option<u64>,
}

/// Reads the query string of a `/containerLogs` request, validating it as upstream does;
/// `now` anchors `sinceSeconds`. The error is the message for a 400 answer.
pub fn parse_log_options(query: &str, now: Timestamp) -> Result<LogOptions, String> {
    let mut options = LogOptions::default();
    let mut since_seconds = None;
    let mut since_time = None;
    let boolean = |v: &str| v.is_empty() || v == "true" || v == "1";
    let integer = |name: &str, v: &str| {
        v.parse::<i64>()
            .map_err(|_| format!("{name}: invalid value {v:?}: must be an integer"))
    };
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        match name.as_ref() {
            "follow" => options.follow = boolean(&value),
            "previous" => options.previous = boolean(&value),
            "timestamps" => options.timestamps = boolean(&value),
            "tailLines" => {
                let n = integer("tailLines", &value)?;
                options.tail_lines =
                    Some(u64::try_from(n).map_err(|_| {
                        "tailLines: must be greater than or equal to 0".to_string()
                    })?);
            }
            "limitBytes" => {
                let n = integer("limitBytes", &value)?;
                options.limit_bytes = Some(
                    u64::try_from(n)
                        .ok()
                        .filter(|&n| n > 0)
                        .ok_or_else(|| "limitBytes: must be greater than 0".to_string())?,
                );
            }
            "sinceSeconds" => {
                let n = integer("sinceSeconds", &value)?;
                if n < 1 {
                    return Err("sinceSeconds: must be greater than 0".to_string());
                }
                since_seconds = Some(n);
            }
            "sinceTime" => {
                since_time = Some(
                    value
                        .parse::<Timestamp>()
                        .map_err(|_| format!("sinceTime: invalid value {value:?}"))?,
                );
            }
            _ => {}
        }
    }
    options.since = match (since_seconds, since_time) {
        (Some(_), Some(_)) => {
            return Err("at most one of `sinceTime` or `sinceSeconds` may be specified".into());
        }
        (Some(seconds), None) => now.checked_sub(SignedDuration::from_secs(seconds)).ok(),
        (None, time) => time,
    };
    Ok(options)
}

/// A line as written to the client: with `timestamps`, prefixed by its time (nanoseconds,
/// always nine digits, as upstream prints them).
pub fn render_line(line: &LogLine, timestamps: bool) -> Vec<u8> {
    if !timestamps {
        return line.text.clone();
    }
    let mut out = format!("{:.9}", line.time).into_bytes();
    out.push(b' ');
    out.extend_from_slice(&line.text);
    out
}

/// Applies `since`, `timestamps` and `limitBytes` to a stream of lines.
#[derive(Debug)]
pub struct LogWriter {
    since: Option<Timestamp>,
    timestamps: bool,
    remaining: Option<u64>,
}

impl LogWriter {
    pub fn new(options: &LogOptions) -> Self {
        Self {
            since: options.since,
            timestamps: options.timestamps,
            remaining: options.limit_bytes,
        }
    }

    /// Whether `limitBytes` has been reached.
    pub fn is_done(&self) -> bool {
        self.remaining == Some(0)
    }

    /// The bytes to send for these lines (cut at the byte limit).
    pub fn write(&mut self, lines: &[LogLine]) -> Vec<u8> {
        let mut out = Vec::new();
        for line in lines {
            if self.is_done() {
                break;
            }
            if self.since.is_some_and(|since| line.time < since) {
                continue;
            }
            let mut rendered = render_line(line, self.timestamps);
            if let Some(remaining) = self.remaining.as_mut() {
                let keep = usize::try_from(*remaining)
                    .unwrap_or(usize::MAX)
                    .min(rendered.len());
                rendered.truncate(keep);
                *remaining -= keep as u64;
            }
            out.extend_from_slice(&rendered);
        }
        out
    }
}

/// The last `tail` lines that pass `since` (all of them without `tail`).
pub fn tail_lines(lines: Vec<LogLine>, options: &LogOptions) -> Vec<LogLine> {
    let mut lines: Vec<LogLine> = match options.since {
        Some(since) => lines.into_iter().filter(|l| l.time >= since).collect(),
        None => lines,
    };
    if let Some(tail) = options.tail_lines {
        let tail = usize::try_from(tail).unwrap_or(usize::MAX);
        let skip = lines.len().saturating_sub(tail);
        lines.drain(..skip);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    const LOG: &str = "2026-01-02T03:04:05.000000001Z stdout F one\n\
                       2026-01-02T03:04:06.5Z stderr P tw\n\
                       2026-01-02T03:04:06.6Z stderr F o\n\
                       garbage\n\
                       2026-01-02T03:04:07Z stdout F \n\
                       2026-01-02T03:04:08Z stdout P:x fou\n\
                       2026-01-02T03:04:09Z stdout F:x r\n\
                       2026-01-02T03:04:10Z stdout F unterminated";

    fn lines() -> (Vec<LogLine>, usize) {
        LineAssembler::default().push_bytes(LOG.as_bytes())
    }

    #[test]
    fn records_parse_or_say_why_not() {
        type Parsed<'a> = Result<(Stream, bool, &'a str), RecordError>;
        let cases: &[(&str, Parsed<'_>)] = &[
            (
                "2026-01-02T03:04:05Z stdout F hello world",
                Ok((Stream::Stdout, false, "hello world")),
            ),
            (
                "2026-01-02T03:04:05Z stderr P part",
                Ok((Stream::Stderr, true, "part")),
            ),
            (
                "2026-01-02T03:04:05Z stdout F",
                Ok((Stream::Stdout, false, "")),
            ),
            (
                "2026-01-02T03:04:05Z stdout",
                Err(RecordError::Missing("tags")),
            ),
            (
                "yesterday stdout F x",
                Err(RecordError::Time("yesterday".into())),
            ),
            (
                "2026-01-02T03:04:05Z stdin F x",
                Err(RecordError::Stream("stdin".into())),
            ),
        ];
        for (line, expected) in cases {
            let got = parse_record(line.as_bytes()).map(|r| {
                (
                    r.stream,
                    r.partial,
                    String::from_utf8_lossy(r.message).into_owned(),
                )
            });
            let expected = expected.clone().map(|(s, p, m)| (s, p, m.to_string()));
            assert_eq!(got, expected, "{line}");
        }
    }

    #[test]
    fn partial_records_join_into_one_line_with_the_first_time() {
        let (lines, consumed) = lines();
        let texts: Vec<_> = lines
            .iter()
            .map(|l| String::from_utf8_lossy(&l.text))
            .collect();
        assert_eq!(texts, ["one\n", "two\n", "\n", "four\n"]);
        assert_eq!(lines[1].time, ts("2026-01-02T03:04:06.5Z"));
        assert_eq!(lines[1].stream, Stream::Stderr);
        assert_eq!(
            consumed,
            LOG.rfind('\n').unwrap() + 1,
            "the unterminated record waits"
        );
    }

    #[test]
    fn options_are_read_and_validated_like_upstream() {
        let now = ts("2026-01-02T03:04:10Z");
        let cases: &[(&str, Result<LogOptions, &str>)] = &[
            ("", Ok(LogOptions::default())),
            (
                "follow=true&previous=1&timestamps&tailLines=3&limitBytes=10",
                Ok(LogOptions {
                    follow: true,
                    previous: true,
                    timestamps: true,
                    tail_lines: Some(3),
                    limit_bytes: Some(10),
                    since: None,
                }),
            ),
            (
                "sinceSeconds=4",
                Ok(LogOptions {
                    since: Some(ts("2026-01-02T03:04:06Z")),
                    ..LogOptions::default()
                }),
            ),
            (
                "sinceTime=2026-01-02T03:04:07Z",
                Ok(LogOptions {
                    since: Some(ts("2026-01-02T03:04:07Z")),
                    ..LogOptions::default()
                }),
            ),
            ("follow=false", Ok(LogOptions::default())),
            (
                "tailLines=-1",
                Err("tailLines: must be greater than or equal to 0"),
            ),
            ("limitBytes=0", Err("limitBytes: must be greater than 0")),
            (
                "sinceSeconds=0",
                Err("sinceSeconds: must be greater than 0"),
            ),
            (
                "sinceSeconds=1&sinceTime=2026-01-02T03:04:07Z",
                Err("at most one of `sinceTime` or `sinceSeconds` may be specified"),
            ),
            (
                "tailLines=x",
                Err("tailLines: invalid value \"x\": must be an integer"),
            ),
        ];
        for (query, expected) in cases {
            assert_eq!(
                parse_log_options(query, now),
                expected.clone().map_err(String::from),
                "{query}"
            );
        }
    }

    #[test]
    fn tail_since_timestamps_and_limit_shape_the_output() {
        let cases: &[(&str, &str)] = &[
            ("", "one\ntwo\n\nfour\n"),
            ("tailLines=2", "\nfour\n"),
            ("tailLines=0", ""),
            ("tailLines=10", "one\ntwo\n\nfour\n"),
            ("sinceTime=2026-01-02T03:04:06.5Z", "two\n\nfour\n"),
            ("sinceTime=2026-01-02T03:04:06.5Z&tailLines=1", "four\n"),
            ("limitBytes=6", "one\ntw"),
            (
                "timestamps=true&tailLines=2",
                "2026-01-02T03:04:07.000000000Z \n2026-01-02T03:04:08.000000000Z four\n",
            ),
            ("timestamps=true&limitBytes=5", "2026-"),
        ];
        let now = ts("2026-01-02T03:04:10Z");
        for (query, expected) in cases {
            let options = parse_log_options(query, now).unwrap();
            let (all, _) = lines();
            let mut writer = LogWriter::new(&options);
            let out = writer.write(&tail_lines(all, &options));
            assert_eq!(String::from_utf8_lossy(&out), *expected, "{query}");
        }
    }

    #[test]
    fn the_writer_stops_at_the_limit_across_calls() {
        let options = LogOptions {
            limit_bytes: Some(5),
            ..LogOptions::default()
        };
        let (all, _) = lines();
        let mut writer = LogWriter::new(&options);
        assert_eq!(writer.write(&all[..1]), b"one\n");
        assert!(!writer.is_done());
        assert_eq!(writer.write(&all[1..]), b"t");
        assert!(writer.is_done());
        assert_eq!(writer.write(&all), b"");
    }
}
