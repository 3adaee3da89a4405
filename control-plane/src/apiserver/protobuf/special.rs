//! JSON forms of the apimachinery types that are not plain objects: `Time`, `MicroTime`,
//! `Duration` and `IntOrString`, as Go's `MarshalJSON` methods write them.

use serde_json::Value;

use super::wire::{Problem, Reader, Wire};

/// Go's zero `time.Time` (January 1, year 1, UTC) in Unix seconds: what a zero Time decodes to.
const GO_ZERO_UNIX: i64 = -62_135_596_800;

/// Reads `{int64 seconds = 1; int32 nanos = 2}` (a `Timestamp`, also Time's and MicroTime's shape).
fn timestamp(bytes: &[u8]) -> Result<(i64, i32), Problem> {
    let (mut seconds, mut nanos) = (0i64, 0i32);
    let mut r = Reader::new(bytes);
    while let Some((number, wire)) = r.field()? {
        match (number, wire) {
            (1, Wire::Varint(v)) => seconds = v as i64,
            (2, Wire::Varint(v)) => nanos = v as i32,
            (1 | 2, other) => {
                return Err(Problem::WrongWireType {
                    field: number,
                    got: other.wire_type(),
                    expected: 0,
                });
            }
            _ => {}
        }
    }
    Ok((seconds, nanos))
}

/// `metav1.Time`: seconds precision (upstream drops the nanoseconds when decoding protobuf),
/// `null` for the zero time, which is how an unset non-pointer Time is encoded.
pub(super) fn time(bytes: &[u8]) -> Result<Value, Problem> {
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    let (seconds, _) = timestamp(bytes)?;
    if seconds == GO_ZERO_UNIX {
        return Ok(Value::Null);
    }
    Ok(Value::String(rfc3339(seconds, None)?))
}

/// `metav1.MicroTime`: microseconds precision (nanoseconds truncated toward zero, as upstream).
pub(super) fn micro_time(bytes: &[u8]) -> Result<Value, Problem> {
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    let (seconds, nanos) = timestamp(bytes)?;
    let nanos = i128::from(nanos) - i128::from(nanos) % 1000;
    let total = i128::from(seconds) * 1_000_000_000 + nanos;
    let secs = total.div_euclid(1_000_000_000);
    let frac = total.rem_euclid(1_000_000_000);
    let secs = i64::try_from(secs).map_err(|_| Problem::TimeOutOfRange)?;
    if secs == GO_ZERO_UNIX && frac == 0 {
        return Ok(Value::Null);
    }
    Ok(Value::String(rfc3339(secs, Some((frac / 1000) as u32))?))
}

/// `YYYY-MM-DDTHH:MM:SS[.ffffff]Z` for Unix seconds in UTC.
pub(super) fn rfc3339(unix: i64, micros: Option<u32>) -> Result<String, Problem> {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    if !(0..=9999).contains(&year) {
        return Err(Problem::TimeOutOfRange);
    }
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    Ok(match micros {
        None => format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z"),
        Some(us) => format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{us:06}Z"),
    })
}

/// Proleptic Gregorian date of a day count from 1970-01-01 (the days-from-civil inverse, done
/// with 400-year eras so that it is exact for every `i64` day that has a 4-digit year).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468; // days since 0000-03-01
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, 0..146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // year of era, 0..399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of the March-based year
    let mp = (5 * doy + 2) / 153; // month from March = 0
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `metav1.Duration`: `{int64 duration = 1}` in nanoseconds, as Go's `time.Duration.String()`.
pub(super) fn duration(bytes: &[u8]) -> Result<Value, Problem> {
    let mut nanos = 0i64;
    let mut r = Reader::new(bytes);
    while let Some((number, wire)) = r.field()? {
        match (number, wire) {
            (1, Wire::Varint(v)) => nanos = v as i64,
            (1, other) => {
                return Err(Problem::WrongWireType {
                    field: 1,
                    got: other.wire_type(),
                    expected: 0,
                });
            }
            _ => {}
        }
    }
    Ok(Value::String(go_duration(nanos)))
}

/// Go's `time.Duration.String()`: `0s`, `1.5µs`, `300ms`, `1m30s`, `2h0m0.5s`, with a leading `-`.
pub(super) fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".to_owned();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let u = nanos.unsigned_abs();
    if u < 1_000_000_000 {
        let (unit, scale) = match u {
            0..1_000 => ("ns", 1),
            1_000..1_000_000 => ("µs", 1_000),
            _ => ("ms", 1_000_000),
        };
        return format!("{sign}{}{unit}", decimal(u, scale));
    }
    let secs = u / 1_000_000_000;
    let sec_part = decimal(u % 60_000_000_000, 1_000_000_000);
    let (hours, minutes) = (secs / 3600, secs / 60 % 60);
    if hours > 0 {
        format!("{sign}{hours}h{minutes}m{sec_part}s")
    } else if secs >= 60 {
        format!("{sign}{minutes}m{sec_part}s")
    } else {
        format!("{sign}{sec_part}s")
    }
}

/// `value / scale` with the fraction's trailing zeros (and a bare point) removed.
fn decimal(value: u64, scale: u64) -> String {
    let whole = value / scale;
    let frac = value % scale;
    if frac == 0 {
        return whole.to_string();
    }
    let width = scale.ilog10() as usize;
    let digits = format!("{frac:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// `intstr.IntOrString`: `{int64 type = 1; int32 intVal = 2; string strVal = 3}`.
pub(super) fn int_or_string(bytes: &[u8]) -> Result<Value, Problem> {
    let (mut kind, mut int_val, mut str_val) = (0i64, 0i32, String::new());
    let mut r = Reader::new(bytes);
    while let Some((number, wire)) = r.field()? {
        match (number, wire) {
            (1, Wire::Varint(v)) => kind = v as i64,
            (2, Wire::Varint(v)) => int_val = v as i32,
            (3, Wire::Bytes(b)) => str_val = String::from_utf8_lossy(b).into_owned(),
            (1 | 2, other) => {
                return Err(Problem::WrongWireType {
                    field: number,
                    got: other.wire_type(),
                    expected: 0,
                });
            }
            (3, other) => {
                return Err(Problem::WrongWireType {
                    field: 3,
                    got: other.wire_type(),
                    expected: 2,
                });
            }
            _ => {}
        }
    }
    match kind {
        0 => Ok(Value::from(int_val)),
        1 => Ok(Value::String(str_val)),
        other => Err(Problem::IntOrStringType(other)),
    }
}

/// `resource.Quantity`: `{string string = 1}`, kept as written (Go clients send the canonical
/// form). An absent string is the zero quantity; an empty one does not parse upstream.
pub(super) fn quantity(bytes: &[u8]) -> Result<Value, Problem> {
    let mut value: Option<&[u8]> = None;
    let mut r = Reader::new(bytes);
    while let Some((number, wire)) = r.field()? {
        match (number, wire) {
            (1, Wire::Bytes(b)) => value = Some(b),
            (1, other) => {
                return Err(Problem::WrongWireType {
                    field: 1,
                    got: other.wire_type(),
                    expected: 2,
                });
            }
            _ => {}
        }
    }
    match value {
        None => Ok(Value::String("0".to_owned())),
        Some([]) => Err(Problem::EmptyQuantity),
        Some(b) => Ok(Value::String(String::from_utf8_lossy(b).into_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_format_like_go() {
        for (nanos, want) in [
            (0, "0s"),
            (1, "1ns"),
            (1_100, "1.1µs"),
            (2_200_000, "2.2ms"),
            (1_000_000_000, "1s"),
            (1_500_000_000, "1.5s"),
            (90_000_000_000, "1m30s"),
            (3_600_000_000_000, "1h0m0s"),
            (3_661_500_000_000, "1h1m1.5s"),
            (-300_000_000, "-300ms"),
            (i64::MIN, "-2562047h47m16.854775808s"),
            (i64::MAX, "2562047h47m16.854775807s"),
        ] {
            assert_eq!(go_duration(nanos), want, "{nanos}");
        }
    }

    #[test]
    fn timestamps_format_as_rfc3339_utc() {
        assert_eq!(rfc3339(0, None), Ok("1970-01-01T00:00:00Z".into()));
        assert_eq!(
            rfc3339(1_700_000_000, None),
            Ok("2023-11-14T22:13:20Z".into())
        );
        assert_eq!(
            rfc3339(951_782_400, None),
            Ok("2000-02-29T00:00:00Z".into())
        );
        assert_eq!(
            rfc3339(-1, Some(5)),
            Ok("1969-12-31T23:59:59.000005Z".into())
        );
        assert_eq!(
            rfc3339(253_402_300_799, None),
            Ok("9999-12-31T23:59:59Z".into())
        );
        assert_eq!(rfc3339(253_402_300_800, None), Err(Problem::TimeOutOfRange));
        assert_eq!(
            rfc3339(GO_ZERO_UNIX, None),
            Ok("0001-01-01T00:00:00Z".into())
        );
        assert_eq!(rfc3339(i64::MIN, None), Err(Problem::TimeOutOfRange));
    }

    #[test]
    fn zero_times_are_null_and_micro_time_truncates() {
        assert_eq!(time(&[]), Ok(Value::Null));
        // seconds = 1_700_000_000, nanos = 123_456_789
        let mut b = vec![0x08];
        push_varint(&mut b, 1_700_000_000);
        b.push(0x10);
        push_varint(&mut b, 123_456_789);
        assert_eq!(time(&b), Ok(Value::String("2023-11-14T22:13:20Z".into())));
        assert_eq!(
            micro_time(&b),
            Ok(Value::String("2023-11-14T22:13:20.123456Z".into()))
        );
        let mut zero = vec![0x08];
        push_varint(&mut zero, GO_ZERO_UNIX as u64);
        assert_eq!(time(&zero), Ok(Value::Null));
        assert_eq!(micro_time(&zero), Ok(Value::Null));
        assert_eq!(
            time(&[0x08, 0x00]),
            Ok(Value::String("1970-01-01T00:00:00Z".into()))
        );
    }

    #[test]
    fn int_or_string_and_quantity() {
        assert_eq!(int_or_string(&[]), Ok(Value::from(0)));
        assert_eq!(int_or_string(&[0x10, 80]), Ok(Value::from(80)));
        assert_eq!(
            int_or_string(&[0x08, 1, 0x1a, 1, b'x']),
            Ok(Value::from("x"))
        );
        assert_eq!(int_or_string(&[0x08, 2]), Err(Problem::IntOrStringType(2)));
        assert_eq!(quantity(&[]), Ok(Value::from("0")));
        assert_eq!(quantity(&[0x0a, 2, b'1', b'G']), Ok(Value::from("1G")));
        assert_eq!(quantity(&[0x0a, 0]), Err(Problem::EmptyQuantity));
    }

    fn push_varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
}
