//! Wall-clock time as devami prints and stores it: seconds since the Unix epoch (UTC), printed as
//! `2026-11-25 13:23:38` (UTC). The calendar is jiff's. `DEVAMI_CLOCK_OFFSET` (seconds) moves
//! [`now`] forward, so lifetime expiry is testable without waiting.

use std::sync::Once;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use jiff::Timestamp;
use jiff::fmt::temporal::Pieces;
use jiff::tz::Offset;

/// Offset in seconds added to the system time (tests, and `DEVAMI_CLOCK_OFFSET`).
static OFFSET: AtomicI64 = AtomicI64::new(0);
static FROM_ENV: Once = Once::new();

/// Seconds since the Unix epoch, now (plus `DEVAMI_CLOCK_OFFSET` seconds when that is set, which
/// lets tests and demonstrations move time forward, e.g. past an instance's lifetime).
pub fn now() -> i64 {
    FROM_ENV.call_once(|| {
        if let Some(off) =
            std::env::var("DEVAMI_CLOCK_OFFSET").ok().and_then(|v| v.trim().parse::<i64>().ok())
        {
            OFFSET.fetch_add(off, Ordering::Relaxed);
        }
    });
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    secs.saturating_add(OFFSET.load(Ordering::Relaxed))
}

/// Seconds in 400 Gregorian years (146,097 days), after which the calendar repeats exactly.
const GREGORIAN_CYCLE: i64 = 146_097 * 86_400;

/// Formats epoch seconds as `YYYY-MM-DD HH:MM:SS` (UTC). Any `i64` formats: the instant is moved
/// by whole 400-year cycles into years 1970 to 2369 for jiff and the year moved back, so even a
/// damaged time beyond jiff's years -9999 to 9999 prints as its proleptic Gregorian date.
pub fn format(epoch: i64) -> String {
    let cycles = epoch.div_euclid(GREGORIAN_CYCLE);
    let within = Timestamp::from_second(epoch.rem_euclid(GREGORIAN_CYCLE))
        .expect("an instant within 400 years after 1970 is in jiff's range");
    let t = Offset::UTC.to_datetime(within);
    let year = i64::from(t.year()) + 400 * cycles;
    format!("{year:04}-{:02}-{:02} {:02}:{:02}:{:02}", t.month(), t.day(), t.hour(), t.minute(), t.second())
}

/// Formats epoch seconds as RFC 3339 (`YYYY-MM-DDTHH:MM:SSZ`).
pub fn format_rfc3339(epoch: i64) -> String {
    format(epoch).replacen(' ', "T", 1) + "Z"
}

/// Parses an ISO 8601 date and time into epoch seconds: `YYYY-MM-DD[T ]HH:MM[:SS[.fff]]`, then an
/// offset `Z`, `+HH`, `+HHMM` or `+HH:MM` (none: UTC, as moto writes SSM times). Dates that do
/// not exist (31 February, hour 25) and time zone annotations (`[Europe/Paris]`) give `None`.
pub fn parse(s: &str) -> Option<i64> {
    let pieces = Pieces::parse(s.trim()).ok()?;
    if pieces.time_zone_annotation().is_some() {
        return None;
    }
    let datetime = pieces.date().to_datetime(pieces.time()?);
    let offset = pieces.to_numeric_offset().unwrap_or(Offset::UTC);
    Some(offset.to_timestamp(datetime).ok()?.as_second())
}

/// A duration in seconds as `1h 05m`, `3m 07s` or `12s`.
pub fn human_duration(seconds: i64) -> String {
    let sign = if seconds < 0 { "-" } else { "" };
    let s = seconds.unsigned_abs();
    match s {
        0..=59 => format!("{sign}{s}s"),
        60..=3599 => format!("{sign}{}m {:02}s", s / 60, s % 60),
        _ => format!("{sign}{}h {:02}m", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_known_instants() {
        assert_eq!(format(0), "1970-01-01 00:00:00");
        assert_eq!(format(1_795_613_018), "2026-11-25 13:23:38");
        assert_eq!(format_rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        for t in [0, 951_782_400, 1_795_613_018, 4_102_444_800] {
            assert_eq!(parse(&format(t)), Some(t));
            assert_eq!(parse(&format_rfc3339(t)), Some(t));
        }
        assert_eq!(parse("2026-11-25T13:23:38.123+01:00"), Some(1_795_613_018 - 3600));
        assert_eq!(parse("2026-13-25 13:23:38"), None);
        assert_eq!(parse("garbage"), None);
        assert_eq!(parse("2026-11-25 13:23:3é"), None);
    }

    #[test]
    fn parse_rejects_dates_and_times_that_do_not_exist() {
        assert_eq!(parse("2026-02-31 00:00:00"), None);
        assert_eq!(parse("2026-02-29T00:00:00Z"), None);
        assert_eq!(parse("2026-11-25 25:00:00"), None);
        assert_eq!(parse("2026-11-25T13:60:00Z"), None);
        assert_eq!(parse("2028-02-29T00:00:00Z"), Some(1_835_395_200));
    }

    #[test]
    fn parse_reads_every_offset_spelling() {
        let utc = 1_795_613_018; // 2026-11-25 13:23:38 UTC
        for s in [
            "2026-11-25T13:23:38Z",
            "2026-11-25T13:23:38z",
            "2026-11-25 13:23:38",
            "2026-11-25T13:23:38+00:00",
        ] {
            assert_eq!(parse(s), Some(utc), "{s}");
        }
        for s in ["2026-11-25T13:23:38+01", "2026-11-25T13:23:38+01:00", "2026-11-25T13:23:38+0100"] {
            assert_eq!(parse(s), Some(utc - 3600), "{s}");
        }
        assert_eq!(parse("2026-11-25T13:23:38-0530"), Some(utc + 5 * 3600 + 30 * 60));
        assert_eq!(parse("2026-11-25T13:23:38[Europe/Paris]"), None);
    }

    #[test]
    fn parse_reads_what_aws_and_moto_send() {
        // EC2 CreationDate, SSM execution times (moto: Python's isoformat, no offset, microseconds).
        assert_eq!(parse("2026-11-25T13:23:38.000Z"), Some(1_795_613_018));
        assert_eq!(parse("2026-11-25T13:23:38.123456"), Some(1_795_613_018));
        assert_eq!(parse(" 2026-11-25T13:23:38Z\n"), Some(1_795_613_018));
        assert_eq!(parse(""), None);
        assert_eq!(parse("2026-11-25"), None);
    }

    #[test]
    fn extreme_instants_format_without_overflow() {
        for t in [i64::MAX, i64::MIN, i64::MAX - 1, i64::MIN + 1] {
            assert!(!format(t).is_empty());
            assert!(format_rfc3339(t).ends_with('Z'));
        }
        // The proleptic Gregorian dates, beyond the years jiff itself represents.
        assert_eq!(format(i64::MAX), "292277026596-12-04 15:30:07");
        assert_eq!(format(i64::MIN), "-292277022657-01-27 08:29:52");
        assert_eq!(format(253_402_300_800), "10000-01-01 00:00:00");
        assert_eq!(format(-62_167_219_201), "-001-12-31 23:59:59");
        assert_eq!(format(-1), "1969-12-31 23:59:59");
        assert_eq!(
            human_duration(i64::MIN),
            format!("-{}h {:02}m", (i64::MIN.unsigned_abs()) / 3600, (i64::MIN.unsigned_abs()) % 3600 / 60)
        );
        assert!(human_duration(i64::MAX).ends_with('m'));
    }

    #[test]
    fn human_durations() {
        assert_eq!(human_duration(7), "7s");
        assert_eq!(human_duration(187), "3m 07s");
        assert_eq!(human_duration(3900), "1h 05m");
        assert_eq!(human_duration(-61), "-1m 01s");
    }
}
