use super::*;

fn ts(text: &str) -> Timestamp {
    text.parse().expect("timestamp")
}

fn zone(name: &str) -> TimeZone {
    if name == "UTC" {
        TimeZone::UTC
    } else {
        TimeZone::get(name).expect("zone")
    }
}

#[test]
fn next_activation_table() {
    // (expression, zone, after, next)
    let table: &[(&str, &str, &str, Option<&str>)] = &[
        (
            "*/15 * * * *",
            "UTC",
            "2024-01-01T00:07:00Z",
            Some("2024-01-01T00:15:00Z"),
        ),
        (
            "0 * * * *",
            "UTC",
            "2024-01-01T00:00:00Z",
            Some("2024-01-01T01:00:00Z"),
        ),
        (
            "0 * * * *",
            "UTC",
            "2024-01-01T00:59:59.9Z",
            Some("2024-01-01T01:00:00Z"),
        ),
        (
            "30 9 * * 1-5",
            "UTC",
            "2024-01-05T10:00:00Z",
            Some("2024-01-08T09:30:00Z"),
        ),
        (
            "30 9 * * MON-fri",
            "UTC",
            "2024-01-05T10:00:00Z",
            Some("2024-01-08T09:30:00Z"),
        ),
        (
            "0 0 1 JAN *",
            "UTC",
            "2024-03-01T00:00:00Z",
            Some("2025-01-01T00:00:00Z"),
        ),
        (
            "5-10/2 * * * *",
            "UTC",
            "2024-01-01T00:06:00Z",
            Some("2024-01-01T00:07:00Z"),
        ),
        (
            "5/20 * * * *",
            "UTC",
            "2024-01-01T00:26:00Z",
            Some("2024-01-01T00:45:00Z"),
        ),
        (
            "1,2,40-41 * * * *",
            "UTC",
            "2024-01-01T00:02:00Z",
            Some("2024-01-01T00:40:00Z"),
        ),
        (
            "0 12 * * ?",
            "UTC",
            "2024-01-01T12:00:00Z",
            Some("2024-01-02T12:00:00Z"),
        ),
        // Day of month OR day of week when neither is a star...
        (
            "0 0 13 * 5",
            "UTC",
            "2024-01-01T00:00:00Z",
            Some("2024-01-05T00:00:00Z"),
        ),
        (
            "0 0 1-31 * 5",
            "UTC",
            "2024-01-01T00:00:00Z",
            Some("2024-01-02T00:00:00Z"),
        ),
        // ...AND when one is (`*/1` keeps the star; the 13th that is a Friday).
        (
            "0 0 13 * */1",
            "UTC",
            "2024-01-01T00:00:00Z",
            Some("2024-01-13T00:00:00Z"),
        ),
        (
            "0 0 */1 * 5",
            "UTC",
            "2024-01-01T00:00:00Z",
            Some("2024-01-05T00:00:00Z"),
        ),
        (
            "0 0 29 2 *",
            "UTC",
            "2024-03-01T00:00:00Z",
            Some("2028-02-29T00:00:00Z"),
        ),
        ("0 0 30 2 *", "UTC", "2024-03-01T00:00:00Z", None),
        (
            "@hourly",
            "UTC",
            "2024-01-01T10:20:00Z",
            Some("2024-01-01T11:00:00Z"),
        ),
        (
            "@daily",
            "UTC",
            "2024-01-01T10:20:00Z",
            Some("2024-01-02T00:00:00Z"),
        ),
        (
            "@midnight",
            "UTC",
            "2024-01-01T10:20:00Z",
            Some("2024-01-02T00:00:00Z"),
        ),
        (
            "@weekly",
            "UTC",
            "2024-01-03T10:20:00Z",
            Some("2024-01-07T00:00:00Z"),
        ),
        (
            "@monthly",
            "UTC",
            "2024-01-31T12:00:00Z",
            Some("2024-02-01T00:00:00Z"),
        ),
        (
            "@yearly",
            "UTC",
            "2024-01-01T00:00:00Z",
            Some("2025-01-01T00:00:00Z"),
        ),
        (
            "@annually",
            "UTC",
            "2024-06-01T00:00:00Z",
            Some("2025-01-01T00:00:00Z"),
        ),
        (
            "@every 90m",
            "UTC",
            "2024-01-01T00:00:30.5Z",
            Some("2024-01-01T01:30:30Z"),
        ),
        (
            "@every 1h30m",
            "UTC",
            "2024-01-01T00:00:00Z",
            Some("2024-01-01T01:30:00Z"),
        ),
        // A schedule's own zone wins over the one given.
        (
            "TZ=Europe/Berlin 0 9 * * *",
            "UTC",
            "2024-01-01T00:00:00Z",
            Some("2024-01-01T08:00:00Z"),
        ),
        (
            "CRON_TZ=America/New_York 0 9 * * *",
            "UTC",
            "2024-01-01T00:00:00Z",
            Some("2024-01-01T14:00:00Z"),
        ),
        // Plain zones: Berlin is UTC+1 in winter, UTC+2 in summer.
        (
            "0 9 * * *",
            "Europe/Berlin",
            "2024-01-01T00:00:00Z",
            Some("2024-01-01T08:00:00Z"),
        ),
        (
            "0 9 * * *",
            "Europe/Berlin",
            "2024-07-01T00:00:00Z",
            Some("2024-07-01T07:00:00Z"),
        ),
        // Berlin springs forward 2024-03-31 02:00 -> 03:00: 02:30 does not exist that day.
        (
            "30 2 * * *",
            "Europe/Berlin",
            "2024-03-30T01:30:00Z",
            Some("2024-04-01T00:30:00Z"),
        ),
        // Hourly across the gap: 01:00 CET then 03:00 CEST, one hour apart.
        (
            "0 * * * *",
            "Europe/Berlin",
            "2024-03-31T00:30:00Z",
            Some("2024-03-31T01:00:00Z"),
        ),
        // Berlin falls back 2024-10-27 03:00 -> 02:00: 02:30 happens twice, both fire.
        (
            "30 2 * * *",
            "Europe/Berlin",
            "2024-10-26T12:00:00Z",
            Some("2024-10-27T00:30:00Z"),
        ),
        (
            "30 2 * * *",
            "Europe/Berlin",
            "2024-10-27T00:30:00Z",
            Some("2024-10-27T01:30:00Z"),
        ),
        (
            "30 2 * * *",
            "Europe/Berlin",
            "2024-10-27T01:30:00Z",
            Some("2024-10-28T01:30:00Z"),
        ),
        (
            "0 3 * * *",
            "Europe/Berlin",
            "2024-10-26T12:00:00Z",
            Some("2024-10-27T02:00:00Z"),
        ),
        // New York springs forward 2024-03-10 02:00 -> 03:00.
        (
            "0 2 * * *",
            "America/New_York",
            "2024-03-09T12:00:00Z",
            Some("2024-03-11T06:00:00Z"),
        ),
        (
            "0 3 * * *",
            "America/New_York",
            "2024-03-09T12:00:00Z",
            Some("2024-03-10T07:00:00Z"),
        ),
        // New York falls back 2024-11-03 02:00 -> 01:00: 01:30 EDT, then 01:30 EST.
        (
            "30 1 * * *",
            "America/New_York",
            "2024-11-02T12:00:00Z",
            Some("2024-11-03T05:30:00Z"),
        ),
        (
            "30 1 * * *",
            "America/New_York",
            "2024-11-03T05:30:00Z",
            Some("2024-11-03T06:30:00Z"),
        ),
        (
            "30 1 * * *",
            "America/New_York",
            "2024-11-03T06:30:00Z",
            Some("2024-11-04T06:30:00Z"),
        ),
        (
            "0 0 * * *",
            "America/New_York",
            "2024-11-03T05:00:00Z",
            Some("2024-11-04T05:00:00Z"),
        ),
    ];
    for (expression, zone_name, after, next) in table {
        let schedule = Schedule::parse(expression).expect(expression);
        let got = schedule.next_after(ts(after), &zone(zone_name));
        assert_eq!(
            got,
            next.map(ts),
            "{expression} in {zone_name} after {after}"
        );
    }
}

#[test]
fn parse_errors_table() {
    let table: &[(&str, &str)] = &[
        ("", "empty spec string"),
        ("* * * *", "expected exactly 5 fields, found 4"),
        ("* * * * * *", "expected exactly 5 fields, found 6"),
        ("60 * * * *", "end of range (60) above maximum (59)"),
        ("* 24 * * *", "end of range (24) above maximum (23)"),
        ("* * 0 * *", "beginning of range (0) below minimum (1)"),
        ("* * * 13 *", "end of range (13) above maximum (12)"),
        ("* * * * 7", "end of range (7) above maximum (6)"),
        (
            "5-1 * * * *",
            "beginning of range (5) beyond end of range (1)",
        ),
        ("*/0 * * * *", "step of range should be a positive number"),
        ("1-2-3 * * * *", "too many hyphens"),
        ("*/2/3 * * * *", "too many slashes"),
        ("x * * * *", "failed to parse int from x"),
        ("* * * FOO *", "failed to parse int from FOO"),
        ("@fortnightly", "unrecognized descriptor"),
        ("@every soon", "failed to parse duration"),
        (
            "TZ=Mars/Olympus 0 * * * *",
            "provided bad location Mars/Olympus",
        ),
    ];
    for (expression, message) in table {
        let error = Schedule::parse(expression).expect_err(expression);
        assert!(
            error.to_string().contains(message),
            "{expression}: {error} should mention {message}"
        );
    }
}

#[test]
fn own_time_zone_is_reported() {
    assert!(Schedule::parse("TZ=UTC * * * * * *").is_err());
    assert!(
        Schedule::parse("TZ=UTC 0 * * * *")
            .expect("parse")
            .has_own_time_zone()
    );
    assert!(
        !Schedule::parse("0 * * * *")
            .expect("parse")
            .has_own_time_zone()
    );
}
