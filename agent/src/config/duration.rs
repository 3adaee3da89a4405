//! Go duration strings (`"20s"`, `"1m30s"`, `"1.5h"`, `"500ms"`), the format of every
//! `metav1.Duration` field in a KubeletConfiguration, parsed exactly into signed nanoseconds.

use std::fmt;
use std::time::Duration;

/// A Go `time.Duration`: signed nanoseconds in the range of an `i64`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct GoDuration {
    nanos: i64,
}

/// Why a string is not a Go duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("duration is empty")]
    Empty,
    #[error("{0:?} is not a duration (expected e.g. \"20s\", \"1m30s\", \"500ms\", \"1.5h\")")]
    Syntax(String),
    #[error("duration {0:?} is missing a unit (ns, us, ms, s, m, h)")]
    MissingUnit(String),
    #[error("duration {input:?} has unknown unit {unit:?} (expected ns, us, ms, s, m, h)")]
    UnknownUnit { input: String, unit: String },
    #[error("duration {0:?} is out of range")]
    Overflow(String),
}

impl GoDuration {
    /// The duration in nanoseconds.
    pub fn as_nanos(self) -> i64 {
        self.nanos
    }

    /// Whether the duration is below zero.
    pub fn is_negative(self) -> bool {
        self.nanos < 0
    }

    /// Whether the duration is exactly zero.
    pub fn is_zero(self) -> bool {
        self.nanos == 0
    }

    /// The duration as a `std::time::Duration`, or `None` when it is negative.
    pub fn to_std(self) -> Option<Duration> {
        u64::try_from(self.nanos).ok().map(Duration::from_nanos)
    }
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ns", self.nanos)
    }
}

impl std::str::FromStr for GoDuration {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_go_duration(s)
    }
}

/// Nanoseconds per unit, as Go's `time.ParseDuration` spells them (both micro signs included).
fn unit_nanos(unit: &str) -> Option<u128> {
    Some(match unit {
        "ns" => 1,
        "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return None,
    })
}

/// Fraction digits kept per component: beyond this they are below a nanosecond for every unit.
const MAX_FRACTION_DIGITS: usize = 18;

/// Parses a Go duration string: an optional sign, then one or more `<number><unit>` components,
/// where the number may have a fraction. `"0"` alone needs no unit. Fractions of a nanosecond
/// are truncated, as Go does.
pub fn parse_go_duration(input: &str) -> Result<GoDuration, DurationError> {
    if input.is_empty() {
        return Err(DurationError::Empty);
    }
    let syntax = || DurationError::Syntax(input.to_string());
    let overflow = || DurationError::Overflow(input.to_string());

    let (negative, mut rest) = match input.as_bytes()[0] {
        b'-' => (true, &input[1..]),
        b'+' => (false, &input[1..]),
        _ => (false, input),
    };
    if rest == "0" {
        return Ok(GoDuration::default());
    }
    if rest.is_empty() {
        return Err(syntax());
    }

    let mut total: u128 = 0;
    while !rest.is_empty() {
        // The number: integer digits, then an optional fraction.
        let int_len = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (int_digits, after_int) = rest.split_at(int_len);
        let (frac_digits, after_number) = match after_int.strip_prefix('.') {
            Some(after_dot) => {
                let frac_len = after_dot
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(after_dot.len());
                after_dot.split_at(frac_len)
            }
            None => ("", after_int),
        };
        if int_digits.is_empty() && frac_digits.is_empty() {
            return Err(syntax());
        }

        // The unit: everything up to the next number.
        let unit_len = after_number
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(after_number.len());
        let (unit, after_unit) = after_number.split_at(unit_len);
        if unit.is_empty() {
            return Err(DurationError::MissingUnit(input.to_string()));
        }
        let scale = unit_nanos(unit).ok_or_else(|| DurationError::UnknownUnit {
            input: input.to_string(),
            unit: unit.to_string(),
        })?;

        let int_value = parse_digits(int_digits).ok_or_else(overflow)?;
        let mut component = int_value.checked_mul(scale).ok_or_else(overflow)?;
        let kept = &frac_digits[..frac_digits.len().min(MAX_FRACTION_DIGITS)];
        if !kept.is_empty() {
            let frac_value = parse_digits(kept).ok_or_else(overflow)?;
            let kept_len = u32::try_from(kept.len()).map_err(|_| overflow())?;
            let denominator = 10u128.pow(kept_len);
            component = component
                .checked_add(frac_value * scale / denominator)
                .ok_or_else(overflow)?;
        }
        total = total.checked_add(component).ok_or_else(overflow)?;
        if total > 1u128 << 63 {
            return Err(overflow());
        }
        rest = after_unit;
    }

    let nanos = if negative {
        // -2^63 is representable, +2^63 is not.
        i64::try_from(-i128::try_from(total).map_err(|_| overflow())?).map_err(|_| overflow())?
    } else {
        i64::try_from(total).map_err(|_| overflow())?
    };
    Ok(GoDuration { nanos })
}

/// Decimal digits as an integer; `None` when they overflow. Empty digits are zero.
fn parse_digits(digits: &str) -> Option<u128> {
    digits.bytes().try_fold(0u128, |acc, b| {
        acc.checked_mul(10)?.checked_add(u128::from(b - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    #[test]
    fn parses_what_go_parses() {
        let cases: &[(&str, i64)] = &[
            ("0", 0),
            ("-0", 0),
            ("+0", 0),
            ("0s", 0),
            ("20s", 20 * S),
            ("1m", 60 * S),
            ("2m", 120 * S),
            ("2h", 7200 * S),
            ("1m30s", 90 * S),
            ("1h2m3s", 3723 * S),
            ("500ms", S / 2),
            ("1.5h", 5400 * S),
            ("1.5s", 3 * S / 2),
            (".5s", S / 2),
            ("5.s", 5 * S),
            ("100ns", 100),
            ("3us", 3_000),
            ("3\u{b5}s", 3_000),
            ("3\u{3bc}s", 3_000),
            ("-1.5s", -3 * S / 2),
            ("+10s", 10 * S),
            ("1.0000000001s", S), // below a nanosecond: truncated
            ("0.3333333333333333333s", 333_333_333),
            ("2562047h47m16.854775807s", i64::MAX),
            ("-2562047h47m16.854775808s", i64::MIN),
        ];
        for (input, nanos) in cases {
            assert_eq!(
                parse_go_duration(input).map(GoDuration::as_nanos),
                Ok(*nanos),
                "{input}"
            );
        }
    }

    #[test]
    fn rejects_what_go_rejects() {
        let cases: &[(&str, DurationError)] = &[
            ("", DurationError::Empty),
            ("-", DurationError::Syntax("-".into())),
            ("s", DurationError::Syntax("s".into())),
            (".s", DurationError::Syntax(".s".into())),
            ("1", DurationError::MissingUnit("1".into())),
            ("20", DurationError::MissingUnit("20".into())),
            ("1m30", DurationError::MissingUnit("1m30".into())),
            (
                "3d",
                DurationError::UnknownUnit {
                    input: "3d".into(),
                    unit: "d".into(),
                },
            ),
            (
                "1 s",
                DurationError::UnknownUnit {
                    input: "1 s".into(),
                    unit: " s".into(),
                },
            ),
            (
                "2562047h47m16.854775808s",
                DurationError::Overflow("2562047h47m16.854775808s".into()),
            ),
            (
                "9999999999999999999999h",
                DurationError::Overflow("9999999999999999999999h".into()),
            ),
        ];
        for (input, error) in cases {
            assert_eq!(parse_go_duration(input).as_ref(), Err(error), "{input}");
        }
    }

    #[test]
    fn converts_to_std_only_when_not_negative() {
        assert_eq!(
            parse_go_duration("1m30s").unwrap().to_std(),
            Some(Duration::from_secs(90))
        );
        assert_eq!(parse_go_duration("-1s").unwrap().to_std(), None);
        assert!(parse_go_duration("-1s").unwrap().is_negative());
        assert!(parse_go_duration("0h").unwrap().is_zero());
    }
}
