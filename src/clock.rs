//! Wall-clock time, formatted the way devami prints and stores it.
//!
//! Times are kept as seconds since the Unix epoch (UTC) and printed as `2026-11-25 13:23:38` (UTC).
//! `DEVAMI_CLOCK_OFFSET` (seconds) moves the clock forward, so lifetime expiry is testable without
//! waiting.

use std::sync::Once;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

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

/// Formats epoch seconds as `YYYY-MM-DD HH:MM:SS` (UTC).
pub fn format(epoch: i64) -> String {
    let (y, m, d) = civil_from_days(epoch.div_euclid(86_400));
    let rem = epoch.rem_euclid(86_400);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Formats epoch seconds as RFC 3339 (`YYYY-MM-DDTHH:MM:SSZ`).
pub fn format_rfc3339(epoch: i64) -> String {
    format(epoch).replacen(' ', "T", 1) + "Z"
}

/// Parses `YYYY-MM-DD[T ]HH:MM:SS[.fff][Z|+00:00]` into epoch seconds.
pub fn parse(s: &str) -> Option<i64> {
    let s = s.trim();
    let b = s.as_bytes();
    if b.len() < 19 || !matches!(b[10], b'T' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        rest = &frac[digits..];
    }
    let offset = match rest {
        "" | "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let hh: i64 = rest.get(1..3)?.parse().ok()?;
            let mm: i64 = rest.get(rest.len() - 2..)?.parse().ok()?;
            sign * (hh * 3600 + mm * 60)
        }
    };
    Some(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se - offset)
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

// Howard Hinnant's civil calendar algorithms.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
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
    fn extreme_instants_format_without_overflow() {
        for t in [i64::MAX, i64::MIN, i64::MAX - 1, i64::MIN + 1] {
            assert!(!format(t).is_empty());
            assert!(format_rfc3339(t).ends_with('Z'));
        }
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
