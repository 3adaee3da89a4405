//! CronJob schedule and time zone checks with the error wording of the parser upstream uses
//! (`cron.ParseStandard`: five fields — minute, hour, day of month, month, day of week — with
//! `*`, `?`, ranges, steps, lists and month/day names, or a `@yearly`-style descriptor or
//! `@every <duration>`).

/// A field's minimum, maximum and optional names (with the value of the first name).
type Bounds<'a> = (u64, u64, Option<(&'a [&'a str], u64)>);

/// Why `schedule` is not a standard cron schedule; `None` when it is one.
pub fn schedule_problem(schedule: &str) -> Option<String> {
    let spec = schedule.trim();
    if spec.is_empty() {
        return Some("empty spec string".to_string());
    }
    if let Some(descriptor) = spec.strip_prefix('@') {
        return descriptor_problem(descriptor, spec);
    }
    let fields: Vec<&str> = spec.split_whitespace().collect();
    if fields.len() != 5 {
        return Some(format!(
            "expected exactly 5 fields, found {}: [{}]",
            fields.len(),
            fields.join(" ")
        ));
    }
    const MONTHS: &[&str] = &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    const DAYS: &[&str] = &["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
    let bounds: [Bounds<'_>; 5] = [
        (0, 59, None),
        (0, 23, None),
        (1, 31, None),
        (1, 12, Some((MONTHS, 1))),
        (0, 6, Some((DAYS, 0))),
    ];
    for (field, (min, max, names)) in fields.iter().zip(bounds) {
        for expr in field.split(',') {
            if let Err(e) = range_problem(expr, min, max, names) {
                return Some(e);
            }
        }
    }
    None
}

fn descriptor_problem(descriptor: &str, spec: &str) -> Option<String> {
    match descriptor {
        "yearly" | "annually" | "monthly" | "weekly" | "daily" | "midnight" | "hourly" => None,
        _ => match descriptor.strip_prefix("every ") {
            Some(duration) if go_duration_ok(duration.trim()) => None,
            Some(duration) => Some(format!(
                "failed to parse duration {spec}: time: invalid duration \"{}\"",
                duration.trim()
            )),
            None => Some(format!("unrecognized descriptor: {spec}")),
        },
    }
}

/// A Go duration string (`1h30m`, `90s`, `1.5h`).
fn go_duration_ok(text: &str) -> bool {
    let mut rest = text.strip_prefix(['+', '-']).unwrap_or(text);
    if rest == "0" {
        return true;
    }
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let number = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if number == 0 || rest[..number].matches('.').count() > 1 || rest[..number] == *"." {
            return false;
        }
        rest = &rest[number..];
        let Some(unit) = ["ns", "us", "µs", "ms", "s", "m", "h"]
            .into_iter()
            .find(|u| rest.starts_with(u) && !(u == &"m" && rest.starts_with("ms")))
        else {
            return false;
        };
        rest = &rest[unit.len()..];
    }
    true
}

fn parse_int(expr: &str) -> Result<u64, String> {
    match expr.parse::<i64>() {
        Ok(n) if n < 0 => Err(format!("negative number ({n}) not allowed: {expr}")),
        Ok(n) => Ok(n.unsigned_abs()),
        Err(_) => Err(format!(
            "failed to parse int from {expr}: strconv.Atoi: parsing \"{expr}\": invalid syntax"
        )),
    }
}

fn parse_int_or_name(expr: &str, names: Option<(&[&str], u64)>) -> Result<u64, String> {
    if let Some((names, first)) = names
        && let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(expr))
    {
        return Ok(i as u64 + first);
    }
    parse_int(expr)
}

fn range_problem(
    expr: &str,
    min: u64,
    max: u64,
    names: Option<(&[&str], u64)>,
) -> Result<(), String> {
    let range_and_step: Vec<&str> = expr.split('/').collect();
    let low_high: Vec<&str> = range_and_step[0].split('-').collect();
    let (start, mut end) = if low_high[0] == "*" || low_high[0] == "?" {
        (min, max)
    } else {
        let start = parse_int_or_name(low_high[0], names)?;
        let end = match low_high.len() {
            1 => start,
            2 => parse_int_or_name(low_high[1], names)?,
            _ => return Err(format!("too many hyphens: {expr}")),
        };
        (start, end)
    };
    let step = match range_and_step.len() {
        1 => 1,
        2 => {
            let step = parse_int(range_and_step[1])?;
            if low_high.len() == 1 {
                end = max;
            }
            step
        }
        _ => return Err(format!("too many slashes: {expr}")),
    };
    if start < min {
        return Err(format!(
            "beginning of range ({start}) below minimum ({min}): {expr}"
        ));
    }
    if end > max {
        return Err(format!(
            "end of range ({end}) above maximum ({max}): {expr}"
        ));
    }
    if start > end {
        return Err(format!(
            "beginning of range ({start}) beyond end of range ({end}): {expr}"
        ));
    }
    if step == 0 {
        return Err(format!("step of range should be a positive number: {expr}"));
    }
    Ok(())
}

/// Why `zone` is not an acceptable `spec.timeZone` (upstream's `validateTimeZone`), `None`
/// when it names an IANA time zone.
pub fn time_zone_problem(zone: &str) -> Option<String> {
    if zone.is_empty() {
        return Some("timeZone must be nil or non-empty string".to_string());
    }
    let part_ok = |part: &str| {
        part != "."
            && part != ".."
            && !part.starts_with('-')
            && (1..=14).contains(&part.len())
            && part
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_' | b'+'))
    };
    if !zone.split('/').all(part_ok) {
        return Some(format!("unknown time zone {zone}"));
    }
    if zone.eq_ignore_ascii_case("local") {
        return Some(
            "timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones"
                .to_string(),
        );
    }
    if jiff::tz::db().get(zone).is_err() {
        return Some(format!("unknown time zone {zone}"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules() {
        for ok in [
            "*/5 * * * *",
            "0 0 * * 0",
            "30 2 1-15/2 JAN-jun mon,wed,FRI",
            "0 12 ? * *",
            "5 4 * * sun",
            "@hourly",
            "@every 1h30m",
            "0 */2 * * *",
        ] {
            assert_eq!(schedule_problem(ok), None, "{ok}");
        }
        let cases = [
            ("x", "expected exactly 5 fields, found 1: [x]"),
            ("61 * * * *", "end of range (61) above maximum (59): 61"),
            ("* * 0 * *", "beginning of range (0) below minimum (1): 0"),
            (
                "5-2 * * * *",
                "beginning of range (5) beyond end of range (2): 5-2",
            ),
            (
                "*/0 * * * *",
                "step of range should be a positive number: */0",
            ),
            (
                "a * * * *",
                "failed to parse int from a: strconv.Atoi: parsing \"a\": invalid syntax",
            ),
            ("@sometimes", "unrecognized descriptor: @sometimes"),
            ("* * * * 7", "end of range (7) above maximum (6): 7"),
        ];
        for (schedule, want) in cases {
            assert_eq!(
                schedule_problem(schedule).as_deref(),
                Some(want),
                "{schedule}"
            );
        }
    }

    #[test]
    fn time_zones() {
        for ok in ["UTC", "Europe/Berlin", "America/New_York", "Etc/GMT+5"] {
            assert_eq!(time_zone_problem(ok), None, "{ok}");
        }
        assert_eq!(
            time_zone_problem("Mars/Olympus").as_deref(),
            Some("unknown time zone Mars/Olympus")
        );
        assert_eq!(
            time_zone_problem("../etc").as_deref(),
            Some("unknown time zone ../etc")
        );
        assert!(
            time_zone_problem("Local")
                .unwrap()
                .starts_with("timeZone must be an explicit")
        );
        assert!(time_zone_problem("").is_some());
    }
}
