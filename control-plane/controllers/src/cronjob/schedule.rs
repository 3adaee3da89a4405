//! Cron schedules as the CronJob controller reads them (upstream uses robfig/cron v3's
//! standard parser): five fields (minute, hour, day of month, month, day of week) with
//! lists, ranges, steps, `*`/`?` and the names `JAN`-`DEC` / `SUN`-`SAT`; the descriptors
//! `@yearly` `@annually` `@monthly` `@weekly` `@daily` `@midnight` `@hourly` and
//! `@every <duration>`; and a `TZ=`/`CRON_TZ=` prefix (refused by the apiserver's validation
//! for new objects, parsed here as robfig does).
//!
//! [`Schedule::next_after`] walks wall-clock fields in the schedule's time zone the way
//! robfig does, hours and minutes in absolute steps: a wall time skipped by a DST jump
//! never fires (the schedule moves to its next match), and a wall time that happens twice
//! (the repeated hour when clocks go back) fires at both instants, as upstream does.

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, ToSpan, Zoned};

/// Why a schedule does not parse (robfig's wording).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ScheduleError(String);

/// The bit robfig sets on a field written `*` or `?` (it changes how the two day fields
/// combine: with a star on either, both must match; otherwise either may).
const STAR: u64 = 1 << 63;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bounds {
    min: u32,
    max: u32,
    names: &'static [(&'static str, u32)],
}

const MINUTES: Bounds = Bounds {
    min: 0,
    max: 59,
    names: &[],
};
const HOURS: Bounds = Bounds {
    min: 0,
    max: 23,
    names: &[],
};
const DAYS_OF_MONTH: Bounds = Bounds {
    min: 1,
    max: 31,
    names: &[],
};
const MONTHS: Bounds = Bounds {
    min: 1,
    max: 12,
    names: &[
        ("jan", 1),
        ("feb", 2),
        ("mar", 3),
        ("apr", 4),
        ("may", 5),
        ("jun", 6),
        ("jul", 7),
        ("aug", 8),
        ("sep", 9),
        ("oct", 10),
        ("nov", 11),
        ("dec", 12),
    ],
};
const DAYS_OF_WEEK: Bounds = Bounds {
    min: 0,
    max: 6,
    names: &[
        ("sun", 0),
        ("mon", 1),
        ("tue", 2),
        ("wed", 3),
        ("thu", 4),
        ("fri", 5),
        ("sat", 6),
    ],
};

/// The five fields as bit sets (bit n set: value n matches).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fields {
    minute: u64,
    hour: u64,
    day_of_month: u64,
    month: u64,
    day_of_week: u64,
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Fields(Fields),
    /// `@every <duration>`: a fixed delay (whole seconds, at least one).
    Every(SignedDuration),
}

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    kind: Kind,
    /// From a `TZ=`/`CRON_TZ=` prefix; it overrides the zone given to `next_after`.
    time_zone: Option<TimeZone>,
}

fn all(bounds: Bounds) -> u64 {
    bits(bounds.min, bounds.max, 1) | STAR
}

fn bits(start: u32, end: u32, step: u32) -> u64 {
    let mut set = 0;
    let mut value = start;
    while value <= end {
        set |= 1 << value;
        value += step;
    }
    set
}

fn parse_number(text: &str) -> Result<u32, ScheduleError> {
    text.parse::<u32>()
        .map_err(|_| ScheduleError(format!("failed to parse int from {text}")))
}

fn number_or_name(text: &str, bounds: Bounds) -> Result<u32, ScheduleError> {
    let lower = text.to_ascii_lowercase();
    if let Some((_, value)) = bounds.names.iter().find(|(name, _)| *name == lower) {
        return Ok(*value);
    }
    parse_number(text)
}

/// One comma-separated term: `*`, `?`, `n`, `a-b`, any of them with `/step`.
fn parse_term(term: &str, bounds: Bounds) -> Result<u64, ScheduleError> {
    let range_and_step: Vec<&str> = term.split('/').collect();
    let low_and_high: Vec<&str> = range_and_step[0].split('-').collect();
    let single = low_and_high.len() == 1;
    let (start, mut end, mut extra) = if low_and_high[0] == "*" || low_and_high[0] == "?" {
        (bounds.min, bounds.max, STAR)
    } else {
        let start = number_or_name(low_and_high[0], bounds)?;
        let end = match low_and_high.len() {
            1 => start,
            2 => number_or_name(low_and_high[1], bounds)?,
            _ => return Err(ScheduleError(format!("too many hyphens: {term}"))),
        };
        (start, end, 0)
    };
    let step = match range_and_step.len() {
        1 => 1,
        2 => {
            let step = parse_number(range_and_step[1])?;
            if single {
                end = bounds.max;
            }
            if step > 1 {
                extra = 0;
            }
            step
        }
        _ => return Err(ScheduleError(format!("too many slashes: {term}"))),
    };
    if start < bounds.min {
        return Err(ScheduleError(format!(
            "beginning of range ({start}) below minimum ({}): {term}",
            bounds.min
        )));
    }
    if end > bounds.max {
        return Err(ScheduleError(format!(
            "end of range ({end}) above maximum ({}): {term}",
            bounds.max
        )));
    }
    if start > end {
        return Err(ScheduleError(format!(
            "beginning of range ({start}) beyond end of range ({end}): {term}"
        )));
    }
    if step == 0 {
        return Err(ScheduleError(format!(
            "step of range should be a positive number: {term}"
        )));
    }
    Ok(bits(start, end, step) | extra)
}

fn parse_field(field: &str, bounds: Bounds) -> Result<u64, ScheduleError> {
    field
        .split(',')
        .try_fold(0, |set, term| Ok(set | parse_term(term, bounds)?))
}

/// A Go duration of whole units (`90s`, `1h30m`, `2h`), as `@every` takes.
fn parse_go_duration(text: &str) -> Result<SignedDuration, ScheduleError> {
    let bad = || ScheduleError(format!("failed to parse duration @every {text}"));
    let mut total = SignedDuration::ZERO;
    let mut digits = String::new();
    let mut chars = text.chars().peekable();
    if text.is_empty() {
        return Err(bad());
    }
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let mut unit = c.to_string();
        if c == 'm' && chars.peek() == Some(&'s') {
            unit.push('s');
            chars.next();
        }
        let amount: i64 = digits.parse().map_err(|_| bad())?;
        digits.clear();
        let part = match unit.as_str() {
            "h" => SignedDuration::from_hours(amount),
            "m" => SignedDuration::from_mins(amount),
            "s" => SignedDuration::from_secs(amount),
            "ms" => SignedDuration::from_millis(amount),
            _ => return Err(bad()),
        };
        total = total.checked_add(part).ok_or_else(bad)?;
    }
    if !digits.is_empty() {
        return Err(bad());
    }
    // robfig drops sub-second parts and never fires more than once a second.
    let seconds = total.as_secs().max(1);
    Ok(SignedDuration::from_secs(seconds))
}

fn descriptor(name: &str) -> Result<Kind, ScheduleError> {
    let at = |minute: u64, hour: u64, day_of_month: u64, month: u64, day_of_week: u64| {
        Kind::Fields(Fields {
            minute,
            hour,
            day_of_month,
            month,
            day_of_week,
        })
    };
    let first = |bounds: Bounds| 1u64 << bounds.min;
    Ok(match name {
        "@yearly" | "@annually" => at(
            first(MINUTES),
            first(HOURS),
            first(DAYS_OF_MONTH),
            first(MONTHS),
            all(DAYS_OF_WEEK),
        ),
        "@monthly" => at(
            first(MINUTES),
            first(HOURS),
            first(DAYS_OF_MONTH),
            all(MONTHS),
            all(DAYS_OF_WEEK),
        ),
        "@weekly" => at(
            first(MINUTES),
            first(HOURS),
            all(DAYS_OF_MONTH),
            all(MONTHS),
            first(DAYS_OF_WEEK),
        ),
        "@daily" | "@midnight" => at(
            first(MINUTES),
            first(HOURS),
            all(DAYS_OF_MONTH),
            all(MONTHS),
            all(DAYS_OF_WEEK),
        ),
        "@hourly" => at(
            first(MINUTES),
            all(HOURS),
            all(DAYS_OF_MONTH),
            all(MONTHS),
            all(DAYS_OF_WEEK),
        ),
        _ => {
            if let Some(duration) = name.strip_prefix("@every ") {
                Kind::Every(parse_go_duration(duration.trim())?)
            } else {
                return Err(ScheduleError(format!("unrecognized descriptor: {name}")));
            }
        }
    })
}

impl Schedule {
    /// Parse `expression`.
    pub fn parse(expression: &str) -> Result<Schedule, ScheduleError> {
        let mut spec = expression.trim();
        if spec.is_empty() {
            return Err(ScheduleError("empty spec string".into()));
        }
        let mut time_zone = None;
        if spec.starts_with("TZ=") || spec.starts_with("CRON_TZ=") {
            let space = spec.find(' ').unwrap_or(spec.len());
            let equals = spec.find('=').unwrap_or(0);
            let name = &spec[equals + 1..space];
            let zone = TimeZone::get(name)
                .map_err(|e| ScheduleError(format!("provided bad location {name}: {e}")))?;
            time_zone = Some(zone);
            spec = spec[space..].trim();
        }
        let kind = if spec.starts_with('@') {
            descriptor(spec)?
        } else {
            let fields: Vec<&str> = spec.split_whitespace().collect();
            if fields.len() != 5 {
                return Err(ScheduleError(format!(
                    "expected exactly 5 fields, found {}: {spec}",
                    fields.len()
                )));
            }
            Kind::Fields(Fields {
                minute: parse_field(fields[0], MINUTES)?,
                hour: parse_field(fields[1], HOURS)?,
                day_of_month: parse_field(fields[2], DAYS_OF_MONTH)?,
                month: parse_field(fields[3], MONTHS)?,
                day_of_week: parse_field(fields[4], DAYS_OF_WEEK)?,
            })
        };
        Ok(Schedule { kind, time_zone })
    }

    /// Whether the expression carried its own `TZ=`/`CRON_TZ=` zone.
    pub fn has_own_time_zone(&self) -> bool {
        self.time_zone.is_some()
    }

    /// The first activation strictly after `after`, read in `zone` (or the schedule's own
    /// `TZ=` zone); `None` when nothing matches within five years (`0 0 30 2 *`).
    pub fn next_after(&self, after: Timestamp, zone: &TimeZone) -> Option<Timestamp> {
        let zone = self.time_zone.as_ref().unwrap_or(zone);
        // Whole seconds, strictly after.
        let start = Timestamp::from_second(after.as_second().checked_add(1)?).ok()?;
        match &self.kind {
            Kind::Every(delay) => start
                .checked_sub(SignedDuration::from_secs(1))
                .ok()?
                .checked_add(*delay)
                .ok(),
            Kind::Fields(fields) => fields
                .next(start.to_zoned(zone.clone()), zone)
                .map(|t| t.timestamp()),
        }
    }
}

/// Wall-clock `date time` in `zone` (a skipped time resolves forward, a repeated one to its
/// first instant).
fn wall(zone: &TimeZone, datetime: DateTime) -> Option<Zoned> {
    zone.to_ambiguous_zoned(datetime).compatible().ok()
}

fn has(set: u64, value: i8) -> bool {
    u32::try_from(value).is_ok_and(|v| v < 63 && set & (1 << v) != 0)
}

fn add(t: &Zoned, duration: SignedDuration) -> Option<Zoned> {
    t.checked_add(duration).ok()
}

impl Fields {
    fn day_matches(&self, t: &Zoned) -> bool {
        let dom = has(self.day_of_month, t.day());
        let dow = has(self.day_of_week, t.weekday().to_sunday_zero_offset());
        if self.day_of_month & STAR != 0 || self.day_of_week & STAR != 0 {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// robfig's walk: months, then days (calendar steps at midnight), then hours, minutes
    /// and seconds (absolute steps, which is what skips and repeats DST wall times); any
    /// wrap of a larger unit starts over from the months.
    fn next(&self, mut t: Zoned, zone: &TimeZone) -> Option<Zoned> {
        let year_limit = t.year() + 5;
        let mut truncated = false;
        'wrap: loop {
            if t.year() > year_limit {
                return None;
            }
            while !has(self.month, t.month()) {
                if !truncated {
                    truncated = true;
                    t = wall(
                        zone,
                        t.date()
                            .first_of_month()
                            .to_datetime(jiff::civil::Time::midnight()),
                    )?;
                }
                let next_month = t.date().checked_add(1.month()).ok()?;
                t = wall(zone, next_month.to_datetime(t.time()))?;
                if t.month() == 1 {
                    continue 'wrap;
                }
            }
            while !self.day_matches(&t) {
                if !truncated {
                    truncated = true;
                    t = wall(zone, t.date().to_datetime(jiff::civil::Time::midnight()))?;
                }
                let next_day = t.date().checked_add(1.day()).ok()?;
                t = wall(zone, next_day.to_datetime(t.time()))?;
                // Back to midnight when a DST change moved the wall clock off it.
                let hour = i64::from(t.hour());
                if hour > 12 {
                    t = add(&t, SignedDuration::from_hours(24 - hour))?;
                } else if hour != 0 {
                    t = add(&t, SignedDuration::from_hours(-hour))?;
                }
                if t.day() == 1 {
                    continue 'wrap;
                }
            }
            while !has(self.hour, t.hour()) {
                if !truncated {
                    truncated = true;
                    let hour_start = t
                        .datetime()
                        .with()
                        .minute(0)
                        .second(0)
                        .subsec_nanosecond(0)
                        .build()
                        .ok()?;
                    t = wall(zone, hour_start)?;
                }
                t = add(&t, SignedDuration::from_hours(1))?;
                if t.hour() == 0 {
                    continue 'wrap;
                }
            }
            while !has(self.minute, t.minute()) {
                if !truncated {
                    truncated = true;
                    let seconds = t.timestamp().as_second();
                    t = Timestamp::from_second(seconds - seconds.rem_euclid(60))
                        .ok()?
                        .to_zoned(zone.clone());
                }
                t = add(&t, SignedDuration::from_mins(1))?;
                if t.minute() == 0 {
                    continue 'wrap;
                }
            }
            // The standard parser's implicit seconds field is `0`.
            while t.second() != 0 {
                truncated = true;
                t = add(&t, SignedDuration::from_secs(1))?;
                if t.second() == 0 {
                    continue 'wrap;
                }
            }
            return Some(t);
        }
    }
}

#[cfg(test)]
#[path = "schedule_tests.rs"]
mod tests;
