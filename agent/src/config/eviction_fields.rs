//! The eviction fields' maps: `evictionHard`, `evictionSoft`, `evictionMinimumReclaim`
//! (signal to a quantity or a percentage) and `evictionSoftGracePeriod` (signal to a
//! duration), each signal checked to be one upstream knows. Pure: no I/O.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::config::convert::{nonzero_duration, parse_quantity, string, wrong_type};
use crate::config::error::{FieldError, FieldIssue};
use crate::config::{EVICTION_SIGNALS, EvictionThreshold};

type Result<T> = std::result::Result<T, FieldIssue>;

/// The `<field>.<signal>` path of an eviction map entry, checked to name a known signal.
fn eviction_signal_path(field: &str, signal: &str) -> Result<String> {
    let path = format!("{field}.{signal}");
    if !EVICTION_SIGNALS.contains(&signal) {
        return Err(FieldIssue::new(
            &path,
            FieldError::UnknownValue {
                got: signal.to_string(),
                allowed: EVICTION_SIGNALS,
            },
        ));
    }
    Ok(path)
}

/// `evictionSoftGracePeriod`: signal to a non-negative duration.
pub(super) fn eviction_grace_periods(value: &Value) -> Result<BTreeMap<String, Duration>> {
    const FIELD: &str = "evictionSoftGracePeriod";
    let Value::Object(entries) = value else {
        return Err(wrong_type(FIELD, "a map of signal to duration", value));
    };
    let mut periods = BTreeMap::new();
    for (signal, period) in entries {
        let path = eviction_signal_path(FIELD, signal)?;
        if period.is_null() {
            continue;
        }
        let duration = nonzero_duration(period, &path)?.unwrap_or_default();
        periods.insert(signal.clone(), duration);
    }
    Ok(periods)
}

/// `evictionHard`, `evictionSoft`, `evictionMinimumReclaim`: signal to threshold (or amount),
/// `"<quantity>"` or `"<percent>%"` (0–100).
pub(super) fn eviction_thresholds(
    value: &Value,
    field: &str,
) -> Result<BTreeMap<String, EvictionThreshold>> {
    let Value::Object(entries) = value else {
        return Err(wrong_type(field, "a map of signal to threshold", value));
    };
    let mut thresholds = BTreeMap::new();
    for (signal, threshold) in entries {
        let path = eviction_signal_path(field, signal)?;
        if threshold.is_null() {
            continue;
        }
        let text = string(threshold, &path)?;
        let parsed = match text.trim().strip_suffix('%') {
            Some(percent) => EvictionThreshold::Percent {
                hundredths: percent_hundredths(percent).ok_or_else(|| {
                    FieldIssue::new(
                        &path,
                        FieldError::OutOfRange {
                            expected: "a percentage from 0% to 100%",
                            got: text.clone(),
                        },
                    )
                })?,
            },
            None => {
                let (text, quantity) = parse_quantity(threshold, &path)?;
                if quantity.is_negative() {
                    return Err(FieldIssue::new(
                        path,
                        FieldError::QuantityOutOfRange {
                            expected: "non-negative",
                            got: text,
                        },
                    ));
                }
                EvictionThreshold::Quantity(quantity)
            }
        };
        thresholds.insert(signal.clone(), parsed);
    }
    Ok(thresholds)
}

/// `"7.5"` → 750 hundredths of a percent; `None` outside 0–100 or when not a number.
fn percent_hundredths(text: &str) -> Option<u32> {
    let percent: f64 = text.trim().parse().ok()?;
    if !(0.0..=100.0).contains(&percent) {
        return None;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "0..=100 percent in hundredths fits a u32"
    )]
    Some((percent * 100.0).round() as u32)
}
