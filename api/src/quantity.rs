//! Kubernetes resource quantities (`100m`, `64Mi`, `1.5G`, `2e3`): parsing into exact integer
//! amounts, the way the API's `resource.Quantity` reads them, without floating point.

use std::fmt;

/// A parsed quantity, held exactly as thousandths of a unit (milli-units), so `100m` CPU and
/// `64Mi` bytes both fit. Values beyond ±9.2e15 units are rejected rather than rounded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Quantity {
    milli: i64,
}

/// Why a quantity string is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("quantity is empty")]
    Empty,
    #[error("quantity {0:?} is not a number with an optional suffix (e.g. 100m, 64Mi, 1.5G)")]
    Syntax(String),
    #[error("quantity {0:?} has an unknown suffix")]
    Suffix(String),
    #[error("quantity {0:?} is out of range")]
    Range(String),
}

impl Quantity {
    /// The quantity in thousandths of a unit (CPU millicores).
    pub fn milli(self) -> i64 {
        self.milli
    }

    /// The quantity in whole units, rounded up (bytes for memory, as the API rounds).
    pub fn value(self) -> i64 {
        self.milli.div_euclid(1000) + i64::from(self.milli.rem_euclid(1000) != 0)
    }

    /// A quantity of whole units.
    pub fn from_value(value: i64) -> Option<Self> {
        value.checked_mul(1000).map(|milli| Self { milli })
    }

    /// A quantity of thousandths of a unit.
    pub fn from_milli(milli: i64) -> Self {
        Self { milli }
    }

    /// Whether the quantity is below zero.
    pub fn is_negative(self) -> bool {
        self.milli < 0
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.milli % 1000 == 0 {
            write!(f, "{}", self.milli / 1000)
        } else {
            write!(f, "{}m", self.milli)
        }
    }
}

impl std::str::FromStr for Quantity {
    type Err = QuantityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s)
    }
}

/// Parses a quantity string. Sub-milli precision is rounded up, as the API does.
pub fn parse(input: &str) -> Result<Quantity, QuantityError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(QuantityError::Empty);
    }
    let syntax = || QuantityError::Syntax(input.to_string());
    let range = || QuantityError::Range(input.to_string());

    let (negative, rest) = match s.as_bytes()[0] {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let number_len = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(number_len);
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    if (int_part.is_empty() && frac_part.is_empty()) || frac_part.contains('.') {
        return Err(syntax());
    }

    // Scale as (base, exponent): the amount is digits * base^exponent.
    let (base, exponent): (i128, i32) = match suffix {
        "" => (10, 0),
        "n" => (10, -9),
        "u" => (10, -6),
        "m" => (10, -3),
        "k" => (10, 3),
        "M" => (10, 6),
        "G" => (10, 9),
        "T" => (10, 12),
        "P" => (10, 15),
        "E" => (10, 18),
        "Ki" => (2, 10),
        "Mi" => (2, 20),
        "Gi" => (2, 30),
        "Ti" => (2, 40),
        "Pi" => (2, 50),
        "Ei" => (2, 60),
        other => match other.strip_prefix(['e', 'E']) {
            Some(exp) if !exp.is_empty() => (10, exp.parse::<i32>().map_err(|_| syntax())?),
            _ => return Err(QuantityError::Suffix(input.to_string())),
        },
    };

    // digits as an integer with `frac_len` decimals, then milli = digits * scale * 1000 / 10^frac_len.
    let digits = format!("{int_part}{frac_part}");
    let digits = digits.trim_start_matches('0');
    if digits.len() > 30 {
        return Err(range());
    }
    let mantissa: i128 = if digits.is_empty() {
        0
    } else {
        digits.parse().map_err(|_| syntax())?
    };
    let frac_len = i32::try_from(frac_part.len()).map_err(|_| range())?;

    // numerator / denominator, both positive.
    let mut numerator = mantissa.checked_mul(1000).ok_or_else(range)?;
    let mut denominator: i128 = 10i128
        .checked_pow(frac_len.unsigned_abs())
        .ok_or_else(range)?;
    if exponent >= 0 {
        let factor = base
            .checked_pow(exponent.unsigned_abs())
            .ok_or_else(range)?;
        numerator = numerator.checked_mul(factor).ok_or_else(range)?;
    } else {
        let factor = base
            .checked_pow(exponent.unsigned_abs())
            .ok_or_else(range)?;
        denominator = denominator.checked_mul(factor).ok_or_else(range)?;
    }
    let milli = numerator / denominator + i128::from(numerator % denominator != 0);
    let milli = if negative { -milli } else { milli };
    let milli = i64::try_from(milli).map_err(|_| range())?;
    if milli.unsigned_abs() > 9_200_000_000_000_000_000 / 1000 * 1000 {
        return Err(range());
    }
    Ok(Quantity { milli })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_the_api_accepts() {
        let cases: &[(&str, i64)] = &[
            ("0", 0),
            ("1", 1000),
            ("100m", 100),
            ("0.5", 500),
            (".5", 500),
            ("1.5", 1500),
            ("2k", 2_000_000),
            ("64Mi", 64 * 1024 * 1024 * 1000),
            ("1Gi", 1024 * 1024 * 1024 * 1000),
            ("1G", 1_000_000_000_000),
            ("1e3", 1_000_000),
            ("1E3", 1_000_000),
            ("1n", 1),    // rounded up to a milli
            ("1500u", 2), // 1.5 milli rounded up
            ("-1", -1000),
            ("+2", 2000),
        ];
        for (input, milli) in cases {
            assert_eq!(parse(input).map(Quantity::milli), Ok(*milli), "{input}");
        }
    }

    #[test]
    fn value_rounds_up() {
        assert_eq!(parse("100m").unwrap().value(), 1);
        assert_eq!(parse("64Mi").unwrap().value(), 67_108_864);
        assert_eq!(parse("-1500m").unwrap().value(), -1);
    }

    #[test]
    fn rejects_what_is_not_a_quantity() {
        for bad in ["", "m", "1.2.3", "1x", "1Mb", "abc", "1e", "--1", "1 Mi"] {
            assert!(parse(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(matches!(parse("100Ei"), Err(QuantityError::Range(_))));
    }

    #[test]
    fn displays_whole_and_milli_amounts() {
        assert_eq!(parse("2").unwrap().to_string(), "2");
        assert_eq!(parse("250m").unwrap().to_string(), "250m");
    }
}
