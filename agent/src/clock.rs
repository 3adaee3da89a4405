//! Wall-clock helpers: the CRI's clock is nanoseconds since the Unix epoch.

use k8s_openapi::jiff::Timestamp;

/// Now, in nanoseconds since the Unix epoch.
pub fn unix_nanos_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A CRI timestamp as a `jiff` timestamp (the epoch when out of range).
pub fn timestamp(nanos: i64) -> Timestamp {
    Timestamp::from_nanosecond(i128::from(nanos)).unwrap_or(Timestamp::UNIX_EPOCH)
}
