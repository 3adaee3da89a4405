//! The image garbage collection fields: `imageGCHighThresholdPercent`,
//! `imageGCLowThresholdPercent`, `imageMinimumGCAge` and `imageMaximumGCAge`, read with upstream's
//! defaulting (the two percentages are pointers upstream, so an explicit `0` is kept; a zero
//! minimum age takes the default; a zero maximum age turns that rule off). Pure: no I/O.

use std::time::Duration;

use serde_json::Value;

use crate::config::convert::{int32, nonzero_duration, out_of_range};
use crate::config::error::{FieldError, FieldIssue};

/// When and what kwk-node's image garbage collector frees (see `crate::image_gc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageGcPolicy {
    /// `imageGCHighThresholdPercent`: image fs usage (0–100) at or above which unused images
    /// are freed. 100 turns usage-driven collection off. Default: 85.
    pub high_threshold_percent: u8,
    /// `imageGCLowThresholdPercent`: the usage collection frees down to; below the high
    /// threshold. Default: 80.
    pub low_threshold_percent: u8,
    /// `imageMinimumGCAge`: an image first seen less than this long ago is never freed.
    /// Default: 2m.
    pub minimum_age: Duration,
    /// `imageMaximumGCAge`: an image unused for longer than this is freed whatever the usage;
    /// `None` (written `0s`) is off. Default: off.
    pub maximum_age: Option<Duration>,
}

impl Default for ImageGcPolicy {
    fn default() -> Self {
        Self {
            high_threshold_percent: 85,
            low_threshold_percent: 80,
            minimum_age: Duration::from_secs(120),
            maximum_age: None,
        }
    }
}

pub(crate) const HIGH: &str = "imageGCHighThresholdPercent";
pub(crate) const LOW: &str = "imageGCLowThresholdPercent";
pub(crate) const MIN_AGE: &str = "imageMinimumGCAge";
pub(crate) const MAX_AGE: &str = "imageMaximumGCAge";

/// Reads the four fields; `get` returns a field's value unless unset or `null`.
pub(crate) fn convert<'d>(
    get: impl Fn(&str) -> Option<&'d Value>,
) -> Result<ImageGcPolicy, FieldIssue> {
    let defaults = ImageGcPolicy::default();
    let percent = |name: &str, default: u8| -> Result<u8, FieldIssue> {
        let Some(value) = get(name) else {
            return Ok(default);
        };
        let n = int32(value, name)?;
        u8::try_from(n)
            .ok()
            .filter(|&p| p <= 100)
            .ok_or_else(|| out_of_range(name, "between 0 and 100", &n))
    };
    let duration = |name: &str| -> Result<Option<Duration>, FieldIssue> {
        match get(name) {
            Some(value) => nonzero_duration(value, name),
            None => Ok(None),
        }
    };
    Ok(ImageGcPolicy {
        high_threshold_percent: percent(HIGH, defaults.high_threshold_percent)?,
        low_threshold_percent: percent(LOW, defaults.low_threshold_percent)?,
        minimum_age: duration(MIN_AGE)?.unwrap_or(defaults.minimum_age),
        maximum_age: duration(MAX_AGE)?,
    })
}

/// Upstream's rules across the fields: low below high, maximum age above minimum age. The
/// issue names the field the user set (`is_set`), else the other one.
pub(crate) fn check(
    policy: &ImageGcPolicy,
    is_set: impl Fn(&str) -> bool,
) -> Result<(), FieldIssue> {
    if policy.low_threshold_percent >= policy.high_threshold_percent {
        let field = if is_set(LOW) { LOW } else { HIGH };
        return Err(FieldIssue::new(
            field,
            FieldError::LowThresholdNotBelowHigh {
                low: policy.low_threshold_percent,
                high: policy.high_threshold_percent,
            },
        ));
    }
    if let Some(max) = policy.maximum_age
        && max <= policy.minimum_age
    {
        return Err(FieldIssue::new(
            MAX_AGE,
            FieldError::MaxAgeNotAboveMinAge {
                min_secs: policy.minimum_age.as_secs(),
                max_secs: max.as_secs(),
            },
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load;

    fn load_text(body: &str) -> Result<ImageGcPolicy, String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kubelet.yaml");
        std::fs::write(
            &path,
            format!(
                "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n{body}"
            ),
        )
        .expect("write");
        load(&path)
            .map(|l| l.config.image_gc)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn image_gc_fields_read_with_upstream_defaults() {
        let policy = |high, low, min_secs, max_secs: Option<u64>| ImageGcPolicy {
            high_threshold_percent: high,
            low_threshold_percent: low,
            minimum_age: Duration::from_secs(min_secs),
            maximum_age: max_secs.map(Duration::from_secs),
        };
        let cases = [
            ("", policy(85, 80, 120, None)),
            (
                "imageGCHighThresholdPercent: 90\nimageGCLowThresholdPercent: 50",
                policy(90, 50, 120, None),
            ),
            // Pointers upstream: an explicit 0 is kept.
            ("imageGCLowThresholdPercent: 0", policy(85, 0, 120, None)),
            (
                "imageGCHighThresholdPercent: 100",
                policy(100, 80, 120, None),
            ),
            ("imageMinimumGCAge: 0s", policy(85, 80, 120, None)),
            ("imageMinimumGCAge: 30s", policy(85, 80, 30, None)),
            ("imageMaximumGCAge: 0s", policy(85, 80, 120, None)),
            (
                "imageMaximumGCAge: 168h",
                policy(85, 80, 120, Some(604_800)),
            ),
        ];
        for (body, want) in cases {
            assert_eq!(load_text(body), Ok(want), "{body}");
        }
    }

    #[test]
    fn bad_image_gc_fields_are_named() {
        let cases = [
            (
                "imageGCHighThresholdPercent: 101",
                "field imageGCHighThresholdPercent: must be between 0 and 100 (got 101)",
            ),
            (
                "imageGCLowThresholdPercent: -1",
                "field imageGCLowThresholdPercent: must be between 0 and 100 (got -1)",
            ),
            (
                "imageGCHighThresholdPercent: high",
                "field imageGCHighThresholdPercent: expected an integer",
            ),
            (
                "imageGCLowThresholdPercent: 85",
                "field imageGCLowThresholdPercent: imageGCLowThresholdPercent (85) must be less than imageGCHighThresholdPercent (85)",
            ),
            (
                "imageGCHighThresholdPercent: 70",
                "field imageGCHighThresholdPercent: imageGCLowThresholdPercent (80) must be less than imageGCHighThresholdPercent (70)",
            ),
            (
                "imageMinimumGCAge: -1s",
                "field imageMinimumGCAge: must not be negative",
            ),
            ("imageMaximumGCAge: soon", "field imageMaximumGCAge:"),
            (
                "imageMaximumGCAge: 1m",
                "field imageMaximumGCAge: imageMaximumGCAge (60s) must be greater than imageMinimumGCAge (120s)",
            ),
        ];
        for (body, want) in cases {
            let err = load_text(body).expect_err(body);
            assert!(err.contains(want), "{body}: {err}");
        }
    }
}
