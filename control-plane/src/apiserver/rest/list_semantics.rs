//! What a LIST's `resourceVersion`, `resourceVersionMatch`, `limit` and `continue` mean, as
//! upstream's apiserver reads them (pure; [`super::read`] runs the plan against the store):
//! the option validation (`ListOptions` is 422 Invalid), the read plan (latest, not older
//! than N, exactly N), continue tokens (opaque, carrying the first page's revision; `-1` means
//! "continue at the latest revision", what a 410 for an expired token hands back), and the
//! upstream-worded errors for too old and too new revisions.

use base64::Engine;
use serde_json::{Value, json};

use crate::apiserver::errors::{ApiError, Cause};

/// How long a read waits for a `resourceVersion` newer than the store's before answering
/// 504 (upstream's watch cache waits 3 s for its cache to catch up).
pub const FRESHNESS_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Upstream's message for a LIST at an exact revision that is compacted.
pub const EXPIRED_LIST: &str = "The resourceVersion for the provided list is too old.";
/// Upstream's message for a continue token whose revision is compacted (a new token that
/// continues at the latest revision comes with it).
pub const INCONSISTENT_CONTINUE: &str = "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.";

/// The continue token: the revision of the first page (`-1`: the latest), the last key
/// returned (relative to the list prefix) and how many items the earlier pages held (for
/// `remainingItemCount`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContinueToken {
    pub revision: i64,
    pub start_after: String,
    pub returned: u64,
}

impl ContinueToken {
    pub fn encode(&self) -> String {
        let json = json!({"v": "meta.k8s.io/v1", "rv": self.revision, "start": self.start_after,
            "n": self.returned});
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json.to_string())
    }

    pub fn decode(text: &str) -> Result<Self, ApiError> {
        let bad = || {
            ApiError::bad_request(
                "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
            )
        };
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| bad())?;
        let value: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
        if value["v"] != "meta.k8s.io/v1" {
            return Err(bad());
        }
        Ok(Self {
            revision: value["rv"]
                .as_i64()
                .filter(|r| *r > 0 || *r == -1)
                .ok_or_else(bad)?,
            start_after: value["start"].as_str().ok_or_else(bad)?.to_string(),
            returned: value["n"].as_u64().unwrap_or_default(),
        })
    }
}

/// How a LIST reads the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadPlan {
    /// Read at exactly this revision (`None`: the latest).
    pub exact: Option<i64>,
    /// The read must be at least this fresh (wait, then 504).
    pub not_older_than: Option<i64>,
    /// Where a continued list resumes.
    pub token: Option<ContinueToken>,
}

/// Upstream's `ValidateListOptions` for a LIST, as `Invalid` causes.
pub fn validate_list(
    resource_version: Option<&str>,
    rv_match: Option<&str>,
    continue_token: Option<&str>,
    send_initial_events: Option<bool>,
) -> Vec<Cause> {
    let mut causes = Vec::new();
    let rv = resource_version.unwrap_or_default();
    let continuing = continue_token.is_some_and(|c| !c.is_empty());
    if let Some(m) = rv_match.filter(|m| !m.is_empty()) {
        if rv.is_empty() {
            causes.push(Cause::forbidden(
                "resourceVersionMatch",
                "resourceVersionMatch is forbidden unless resourceVersion is provided",
            ));
        }
        if continuing {
            causes.push(Cause::forbidden(
                "resourceVersionMatch",
                "resourceVersionMatch is forbidden when continue is provided",
            ));
        }
        if m != "Exact" && m != "NotOlderThan" {
            causes.push(Cause::not_supported(
                "resourceVersionMatch",
                &json!(m),
                &["Exact", "NotOlderThan", ""],
            ));
        }
        if m == "Exact" && rv == "0" {
            causes.push(Cause::forbidden(
                "resourceVersionMatch",
                "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
            ));
        }
    }
    if send_initial_events.is_some() {
        causes.push(Cause::forbidden(
            "sendInitialEvents",
            "sendInitialEvents is forbidden for list",
        ));
    }
    causes
}

/// Upstream's `validateWatchOptions` for a WATCH (the WatchList feature on).
pub fn validate_watch(
    rv_match: Option<&str>,
    continue_token: Option<&str>,
    send_initial_events: Option<bool>,
) -> Vec<Cause> {
    let mut causes = Vec::new();
    let m = rv_match.unwrap_or_default();
    if send_initial_events.is_some() && m != "NotOlderThan" {
        causes.push(Cause::forbidden(
            "resourceVersionMatch",
            "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
        ));
    }
    if !m.is_empty() {
        if send_initial_events.is_none() {
            causes.push(Cause::forbidden(
                "resourceVersionMatch",
                "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
            ));
        }
        if m != "NotOlderThan" {
            causes.push(Cause::not_supported(
                "resourceVersionMatch",
                &json!(m),
                &["NotOlderThan"],
            ));
        }
        if continue_token.is_some_and(|c| !c.is_empty()) {
            causes.push(Cause::forbidden(
                "resourceVersionMatch",
                "resourceVersionMatch is forbidden when continue is provided",
            ));
        }
    }
    causes
}

/// The `Invalid` error of a `ListOptions` with these causes (none: `Ok`).
pub fn invalid_options(causes: Vec<Cause>) -> Result<(), ApiError> {
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid("meta.k8s.io", "ListOptions", "", causes))
    }
}

/// The read plan of a (validated) LIST:
/// - no `resourceVersion`, or `0` (any): the latest revision;
/// - `N` with `NotOlderThan`, or with no match and no `limit`: the latest, at least `N`;
/// - `N` with `Exact`, or with no match and a `limit` (upstream's legacy paging): exactly `N`;
/// - a `continue` token: its revision (`-1`: the latest); a `resourceVersion` other than `0`
///   next to it is a 400.
pub fn plan(
    resource_version: Option<&str>,
    rv_match: Option<&str>,
    limit: Option<usize>,
    continue_token: Option<&str>,
) -> Result<ReadPlan, ApiError> {
    let rv = match resource_version {
        None | Some("") => None,
        Some(text) => Some(
            text.parse::<i64>()
                .ok()
                .filter(|r| *r >= 0)
                .ok_or_else(|| {
                    ApiError::bad_request(format!("invalid resource version: {text:?}"))
                })?,
        ),
    };
    if let Some(token) = continue_token.filter(|c| !c.is_empty()) {
        if rv.is_some_and(|r| r != 0) {
            return Err(ApiError::bad_request(
                "specifying resource version is not allowed when using continue",
            ));
        }
        let token = ContinueToken::decode(token)?;
        return Ok(ReadPlan {
            exact: (token.revision > 0).then_some(token.revision),
            not_older_than: None,
            token: Some(token),
        });
    }
    let exact_match = match rv_match.unwrap_or_default() {
        "Exact" => true,
        "NotOlderThan" => false,
        _ => limit.is_some(),
    };
    Ok(match rv {
        None | Some(0) => ReadPlan {
            exact: None,
            not_older_than: None,
            token: None,
        },
        Some(n) if exact_match => ReadPlan {
            exact: Some(n),
            not_older_than: None,
            token: None,
        },
        Some(n) => ReadPlan {
            exact: None,
            not_older_than: Some(n),
            token: None,
        },
    })
}

/// Upstream's answer to a revision newer than the store's: 504 Timeout with the
/// `ResourceVersionTooLarge` cause and `Retry-After: 1` (client-go's reflector relists on it).
pub fn too_large(requested: i64, current: i64) -> ApiError {
    let mut error = ApiError::new(
        504,
        "Timeout",
        format!("Timeout: Too large resource version: {requested}, current: {current}"),
    );
    error.details.causes.push(Cause {
        reason: "ResourceVersionTooLarge",
        message: "Too large resource version".to_string(),
        field: String::new(),
    });
    error.details.retry_after_seconds = Some(1);
    error
}

/// The 410 of a continued LIST whose revision is compacted, with a token that continues the
/// same list at the latest revision.
pub fn expired_continue(token: &ContinueToken) -> ApiError {
    let mut error = ApiError::expired(INCONSISTENT_CONTINUE);
    error.details.list_continue = Some(
        ContinueToken {
            revision: -1,
            ..token.clone()
        }
        .encode(),
    );
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `resourceVersion`, `resourceVersionMatch`, `continue`, `sendInitialEvents`, and the
    /// expected cause messages.
    type ListCase<'a> = (
        Option<&'a str>,
        Option<&'a str>,
        Option<&'a str>,
        Option<bool>,
        &'a [&'a str],
    );
    /// `resourceVersionMatch`, `continue`, `sendInitialEvents`, and the expected messages.
    type WatchCase<'a> = (
        Option<&'a str>,
        Option<&'a str>,
        Option<bool>,
        &'a [&'a str],
    );

    fn messages(causes: &[Cause]) -> Vec<String> {
        causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn list_options_are_validated_as_upstream() {
        let token = Some("abc");
        let cases: [ListCase<'_>; 8] = [
            (None, None, None, None, &[]),
            (Some("5"), Some("Exact"), None, None, &[]),
            (Some("5"), Some("NotOlderThan"), None, None, &[]),
            (
                None,
                Some("Exact"),
                None,
                None,
                &[
                    "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided",
                ],
            ),
            (
                Some("5"),
                Some("NotOlderThan"),
                token,
                None,
                &[
                    "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden when continue is provided",
                ],
            ),
            (
                Some("5"),
                Some("Newest"),
                None,
                None,
                &[
                    "resourceVersionMatch: Unsupported value: \"Newest\": supported values: \"Exact\", \"NotOlderThan\", \"\"",
                ],
            ),
            (
                Some("0"),
                Some("Exact"),
                None,
                None,
                &[
                    "resourceVersionMatch: Forbidden: resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
                ],
            ),
            (
                None,
                None,
                None,
                Some(true),
                &["sendInitialEvents: Forbidden: sendInitialEvents is forbidden for list"],
            ),
        ];
        for (rv, m, c, sie, want) in cases {
            assert_eq!(
                messages(&validate_list(rv, m, c, sie)),
                want,
                "{rv:?} {m:?} {c:?} {sie:?}"
            );
        }
    }

    #[test]
    fn watch_options_are_validated_as_upstream() {
        let cases: [WatchCase<'_>; 5] = [
            (None, None, None, &[]),
            (Some("NotOlderThan"), None, Some(true), &[]),
            (Some("NotOlderThan"), None, Some(false), &[]),
            (
                Some("NotOlderThan"),
                None,
                None,
                &[
                    "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
                ],
            ),
            (
                Some("Exact"),
                None,
                Some(true),
                &[
                    "resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
                    "resourceVersionMatch: Unsupported value: \"Exact\": supported values: \"NotOlderThan\"",
                ],
            ),
        ];
        for (m, c, sie, want) in cases {
            assert_eq!(messages(&validate_watch(m, c, sie)), want, "{m:?} {sie:?}");
        }
    }

    #[test]
    fn read_plans_follow_upstream_resource_version_semantics() {
        let latest = ReadPlan {
            exact: None,
            not_older_than: None,
            token: None,
        };
        let exact = |n| ReadPlan {
            exact: Some(n),
            ..latest.clone()
        };
        let fresh = |n| ReadPlan {
            not_older_than: Some(n),
            ..latest.clone()
        };
        let cases = [
            (None, None, None, latest.clone()),
            (Some(""), None, Some(10), latest.clone()),
            (Some("0"), None, None, latest.clone()),
            (Some("0"), None, Some(10), latest.clone()),
            (Some("7"), None, None, fresh(7)),
            (Some("7"), Some("NotOlderThan"), Some(10), fresh(7)),
            (Some("7"), Some("Exact"), None, exact(7)),
            // Legacy: a resourceVersion with a limit and no match is an exact read.
            (Some("7"), None, Some(10), exact(7)),
        ];
        for (rv, m, limit, want) in cases {
            assert_eq!(
                plan(rv, m, limit, None).expect("plan"),
                want,
                "{rv:?} {m:?} {limit:?}"
            );
        }
        let token = ContinueToken {
            revision: 9,
            start_after: "default/a".into(),
            returned: 2,
        };
        let planned = plan(Some("0"), None, Some(2), Some(&token.encode())).expect("continue");
        assert_eq!(planned.exact, Some(9));
        assert_eq!(planned.token, Some(token.clone()));
        let latest_token = ContinueToken {
            revision: -1,
            ..token.clone()
        };
        let planned = plan(None, None, Some(2), Some(&latest_token.encode())).expect("latest");
        assert_eq!(planned.exact, None);
        let err = plan(Some("9"), None, Some(2), Some(&token.encode())).expect_err("rv+continue");
        assert_eq!(
            (err.code, err.message.as_str()),
            (
                400,
                "specifying resource version is not allowed when using continue"
            )
        );
        assert_eq!(
            plan(Some("x"), None, None, None).expect_err("bad rv").code,
            400
        );
    }

    #[test]
    fn continue_tokens_round_trip_and_reject_garbage() {
        let token = ContinueToken {
            revision: 42,
            start_after: "default/web-1".into(),
            returned: 500,
        };
        assert_eq!(
            ContinueToken::decode(&token.encode()).expect("decode"),
            token
        );
        let zero = ContinueToken {
            revision: 0,
            ..token
        };
        for bad in ["", "!!", "e30", "eyJ2IjoieCJ9", zero.encode().as_str()] {
            assert!(ContinueToken::decode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn errors_are_worded_as_upstream() {
        let status = too_large(100, 42).to_status();
        assert_eq!(status["code"], 504);
        assert_eq!(status["reason"], "Timeout");
        assert_eq!(
            status["message"],
            "Timeout: Too large resource version: 100, current: 42"
        );
        assert_eq!(
            status["details"]["causes"],
            json!([{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}])
        );
        assert_eq!(status["details"]["retryAfterSeconds"], 1);
        let token = ContinueToken {
            revision: 3,
            start_after: "ns/b".into(),
            returned: 1,
        };
        let status = expired_continue(&token).to_status();
        assert_eq!(
            (status["code"].clone(), status["reason"].clone()),
            (json!(410), json!("Expired"))
        );
        assert_eq!(status["message"], INCONSISTENT_CONTINUE);
        let next = ContinueToken::decode(status["metadata"]["continue"].as_str().expect("token"))
            .expect("decode");
        assert_eq!(
            next,
            ContinueToken {
                revision: -1,
                ..token
            }
        );
    }
}
