//! The named tokens of expected output (`[ID]`, `[TIME]`, ...): the values each one matches, and
//! the values `--record` writes as tokens ([`generalize`]).
//!
//! One recogniser per token serves both, so a recorded token always matches the value it replaced
//! and any later value of the same shape. `generalize` is narrower than the matcher on purpose: it
//! replaces only whole words that surely vary between runs. Every recogniser reads a bounded
//! prefix of its input, except `[PATH]`, which reads one word.

/// A named token of expected output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Token {
    Id,
    Uuid,
    Hash,
    Int,
    Num,
    Time,
    Date,
    Duration,
    Path,
    Pid,
}

/// Every token with the text that names it in expected output.
pub(crate) const TOKENS: &[(&str, Token)] = &[
    ("[ID]", Token::Id),
    ("[UUID]", Token::Uuid),
    ("[HASH]", Token::Hash),
    ("[N]", Token::Int),
    ("[NUM]", Token::Num),
    ("[TIME]", Token::Time),
    ("[DATE]", Token::Date),
    ("[DURATION]", Token::Duration),
    ("[PATH]", Token::Path),
    ("[PID]", Token::Pid),
];

/// Prefixes of `[ID]`: AWS resource ids.
const ID_PREFIXES: &[&[u8]] = &[b"i-", b"ami-", b"snap-", b"vol-", b"sg-", b"vpc-", b"subnet-", b"eni-"];

impl Token {
    /// The text that names the token in expected output.
    pub(crate) fn name(self) -> &'static str {
        TOKENS.iter().find(|(_, t)| *t == self).map_or("", |(name, _)| name)
    }
}

/// Pushes (offset by `p`) the end of every match of `tok` at the start of `s`, besides the token's
/// own name, which the caller matches. `[PATH]` has one end per byte of the word at `s`; returns
/// how many bytes were read for it, so the caller can charge its work budget.
pub(crate) fn token_ends(tok: Token, s: &[u8], p: usize, out: &mut Vec<usize>) -> usize {
    match tok {
        Token::Path => {
            let run = count(s, |b| !b.is_ascii_whitespace());
            out.extend(p + 1..=p + run);
            return run;
        }
        Token::Time => {
            if let Some(t) = time_ends(s) {
                out.push(p + t.local);
                out.extend(t.zoned.map(|z| p + z));
            }
        }
        Token::Duration => duration_ends(s, out, p),
        _ => out.extend(token_len(tok, s).map(|len| p + len)),
    }
    0
}

fn count(s: &[u8], pred: impl Fn(u8) -> bool) -> usize {
    s.iter().take_while(|&&b| pred(b)).count()
}

fn digits(s: &[u8]) -> usize {
    count(s, |b| b.is_ascii_digit())
}

fn hex(s: &[u8]) -> usize {
    count(s, |b| b.is_ascii_hexdigit())
}

fn at(s: &[u8], i: usize) -> u8 {
    s.get(i).copied().unwrap_or(0)
}

/// The length of the single match of a fixed-shape token at the start of `s`.
fn token_len(tok: Token, s: &[u8]) -> Option<usize> {
    match tok {
        Token::Id => id_parts(s).map(|(prefix, n)| prefix + n),
        Token::Uuid => uuid_len(s),
        Token::Hash => {
            let n = hex(s);
            (7..=40).contains(&n).then_some(n)
        }
        Token::Int => {
            let sign = usize::from(matches!(at(s, 0), b'+' | b'-'));
            let n = digits(&s[sign..]);
            (n > 0).then_some(sign + n)
        }
        Token::Pid => {
            let n = digits(s);
            (n > 0).then_some(n)
        }
        Token::Num => num_len(s),
        Token::Date => date_len(s),
        Token::Time | Token::Duration | Token::Path => None,
    }
}

/// An id: the length of its prefix and the number of hex digits after it (at least one).
fn id_parts(s: &[u8]) -> Option<(usize, usize)> {
    let prefix = ID_PREFIXES.iter().find(|p| s.starts_with(p))?.len();
    let n = hex(&s[prefix..]);
    (n > 0).then_some((prefix, n))
}

/// Hex groups of 8, 4, 4, 4 and 12 digits joined by `-`.
fn uuid_len(s: &[u8]) -> Option<usize> {
    let mut i = 0;
    for (n, group) in [8, 4, 4, 4, 12].into_iter().enumerate() {
        if n > 0 {
            (at(s, i) == b'-').then_some(())?;
            i += 1;
        }
        (hex(s.get(i..)?) >= group).then_some(())?;
        i += group;
    }
    Some(i)
}

/// A decimal number: sign, digits, fraction, exponent (`-3.25`, `.5`, `6.02E23`).
fn num_len(s: &[u8]) -> Option<usize> {
    let mut i = usize::from(matches!(at(s, 0), b'+' | b'-'));
    let whole = digits(&s[i..]);
    i += whole;
    let frac = if at(s, i) == b'.' { digits(s.get(i + 1..)?) } else { 0 };
    if frac > 0 {
        i += 1 + frac;
    } else if whole == 0 {
        return None;
    }
    if matches!(at(s, i), b'e' | b'E') {
        let j = i + 1 + usize::from(matches!(at(s, i + 1), b'+' | b'-'));
        let exp = digits(s.get(j..).unwrap_or(&[]));
        if exp > 0 {
            i = j + exp;
        }
    }
    Some(i)
}

/// Two digits at `i` no larger than `max`.
fn two_digits(s: &[u8], i: usize, max: u8) -> Option<()> {
    let (a, b) = (at(s, i), at(s, i + 1));
    (a.is_ascii_digit() && b.is_ascii_digit() && (a - b'0') * 10 + (b - b'0') <= max).then_some(())
}

/// `YYYY-MM-DD`.
fn date_len(s: &[u8]) -> Option<usize> {
    (s.len() >= 10 && digits(s) == 4 && at(s, 4) == b'-' && at(s, 7) == b'-').then_some(())?;
    two_digits(s, 5, 12)?;
    two_digits(s, 8, 31)?;
    Some(10)
}

/// `HH:MM:SS`.
fn hms_len(s: &[u8]) -> Option<usize> {
    (at(s, 2) == b':' && at(s, 5) == b':').then_some(())?;
    two_digits(s, 0, 23)?;
    two_digits(s, 3, 59)?;
    two_digits(s, 6, 60)?;
    Some(8)
}

/// Where a timestamp found by [`time_ends`] may end.
struct TimeEnds {
    /// Whether the timestamp starts with a date.
    dated: bool,
    /// The end without a time zone.
    local: usize,
    /// The end after the time zone, if one follows.
    zoned: Option<usize>,
}

/// A timestamp at the start of `s`: `HH:MM:SS` with an optional `YYYY-MM-DD` and `T` or space
/// before it and an optional fraction of a second after it, then an optional time zone (`Z`,
/// `+01:00`, `-0500`, ` UTC`).
fn time_ends(s: &[u8]) -> Option<TimeEnds> {
    let (dated, start) = match date_len(s) {
        Some(d) if matches!(at(s, d), b' ' | b'T') => (true, d + 1),
        Some(_) => return None,
        None => (false, 0),
    };
    let mut end = start + s.get(start..).and_then(hms_len)?;
    if matches!(at(s, end), b'.' | b',') {
        let frac = digits(s.get(end + 1..).unwrap_or(&[]));
        if frac > 0 {
            end += 1 + frac;
        }
    }
    let zone = match at(s, end) {
        b'Z' => Some(1),
        b'+' | b'-' => {
            let zone = &s[end + 1..];
            if two_digits(zone, 0, 23).is_none() {
                None
            } else if at(zone, 2) == b':' && two_digits(zone, 3, 59).is_some() {
                Some(6)
            } else if two_digits(zone, 2, 59).is_some() {
                Some(5)
            } else {
                None
            }
        }
        b' ' if s[end..].starts_with(b" UTC") => Some(4),
        _ => None,
    };
    Some(TimeEnds { dated, local: end, zoned: zone.map(|z| end + z) })
}

/// Pushes (offset by `p`) the ends of a duration at the start of `s`: after each of its parts
/// (`1h`, `1h 2m`, `1h 2m 3s`).
fn duration_ends(s: &[u8], out: &mut Vec<usize>, p: usize) {
    let mut i = 0;
    loop {
        let mut j = i;
        let whole = digits(&s[j..]);
        if whole == 0 {
            return;
        }
        j += whole;
        if at(s, j) == b'.' {
            let frac = digits(s.get(j + 1..).unwrap_or(&[]));
            if frac > 0 {
                j += 1 + frac;
            }
        }
        let rest = &s[j..];
        let unit = [&b"ms"[..], b"us", "µs".as_bytes(), b"ns", b"d", b"h", b"m", b"s"]
            .into_iter()
            .find(|u| rest.starts_with(u) && !at(rest, u.len()).is_ascii_alphabetic());
        let Some(unit) = unit else { return };
        j += unit.len();
        out.push(p + j);
        i = if at(s, j) == b' ' && at(s, j + 1).is_ascii_digit() { j + 1 } else { j };
    }
}

/// Replaces values that surely vary between runs by the tokens that match them, for `--record`:
/// AWS ids with at least 8 hex digits by `[ID]`, UUIDs by `[UUID]`, 40-digit git hashes by
/// `[HASH]` (each a whole word), and timestamps that start with a date by `[TIME]` (a `Z` after
/// them included, other time zones left as they are). Shorter hashes, bare times and numbers
/// stay: they could be anything. The result matches the original output, since each token
/// matches the value it replaced.
pub fn generalize(output: &str) -> String {
    let s = output.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let prev = if i == 0 { b' ' } else { s[i - 1] };
        match varying_value(&s[i..], prev) {
            Some((n, token)) => {
                out.extend_from_slice(token.name().as_bytes());
                i += n;
            }
            None => {
                out.push(s[i]);
                i += 1;
            }
        }
    }
    // Only ASCII runs were replaced, at ASCII positions: still UTF-8.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// The value [`generalize`] replaces at the start of `s` (after the byte `prev`), with its length:
/// a match of the token's recogniser, narrowed to values that surely vary.
fn varying_value(s: &[u8], prev: u8) -> Option<(usize, Token)> {
    let word_start = !prev.is_ascii_alphanumeric() && prev != b'_' && prev != b'-';
    let whole_word = |n: usize| ends_word(s, n).then_some(n);
    let word = || {
        let uuid = uuid_len(s).and_then(whole_word).map(|n| (n, Token::Uuid));
        let hash = || (hex(s) == 40).then_some(40).and_then(whole_word).map(|n| (n, Token::Hash));
        let id = || {
            let (prefix, n) = id_parts(s).filter(|&(_, n)| n >= 8)?;
            whole_word(prefix + n).map(|n| (n, Token::Id))
        };
        uuid.or_else(hash).or_else(id)
    };
    let time = || {
        let ends = time_ends(s).filter(|t| t.dated)?;
        let end = if at(s, ends.local) == b'Z' { ends.zoned.unwrap_or(ends.local) } else { ends.local };
        (!at(s, end).is_ascii_digit()).then_some((end, Token::Time))
    };
    word_start.then(word).flatten().or_else(|| (!prev.is_ascii_digit()).then(time).flatten())
}

/// Whether a match of length `n` ends at a word boundary.
fn ends_word(s: &[u8], n: usize) -> bool {
    s.get(n).is_none_or(|b| !b.is_ascii_alphanumeric() && *b != b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transcript::check_output;
    use crate::transcript::testing::{lines, ok};

    #[test]
    fn token_id() {
        for id in ["i-0123456789abcdef0", "ami-0abc1234", "snap-01", "vol-ff", "sg-12ab"] {
            assert!(ok("id [ID] ok", &format!("id {id} ok")), "{id}");
        }
        for bad in ["i-", "x-0123", "i-xyz", "ami0123", "i-0123 extra"] {
            assert!(!ok("id [ID] ok", &format!("id {bad} ok")), "{bad}");
        }
        assert!(ok("([ID])", "(i-0abc)"));
    }

    #[test]
    fn token_uuid() {
        assert!(ok("[UUID]", "123e4567-e89b-12d3-a456-426614174000"));
        assert!(!ok("[UUID]", "123e4567-e89b-12d3-a456-42661417400"));
        assert!(!ok("[UUID]", "123e4567e89b-12d3-a456-426614174000"));
        assert!(!ok("[UUID]", "123e4567-e89b-12d3-a456-42661417400g"));
    }

    #[test]
    fn token_hash() {
        assert!(ok("commit [HASH]", "commit abc1234"));
        assert!(ok("commit [HASH]", &format!("commit {}", "f".repeat(40))));
        assert!(!ok("commit [HASH]", "commit abc123"));
        assert!(!ok("commit [HASH]", &format!("commit {}", "f".repeat(41))));
        assert!(!ok("commit [HASH]", "commit abc1234z"));
    }

    #[test]
    fn token_int_and_pid() {
        assert!(ok("[N] jobs, [N], [N]", "12 jobs, -3, +0"));
        assert!(!ok("[N] jobs", "x jobs"));
        assert!(!ok("[N] jobs", "1.5 jobs"));
        assert!(!ok("[N]", "-"));
        assert!(ok("pid [PID]", "pid 4242"));
        assert!(!ok("pid [PID]", "pid -1"));
        assert!(!ok("pid [PID]", "pid "));
    }

    #[test]
    fn token_num() {
        for n in ["3", "-3.25", "0.5", ".5", "+1e-3", "6.02E23"] {
            assert!(ok("cost [NUM] USD", &format!("cost {n} USD")), "{n}");
        }
        for bad in ["", "x", "1.2.3", "-", "1e"] {
            assert!(!ok("cost [NUM] USD", &format!("cost {bad} USD")), "{bad}");
        }
        assert!(ok("[NUM].", "3."));
    }

    #[test]
    fn token_time_and_date() {
        for t in [
            "2026-11-25 13:23:38",
            "2026-11-25T13:23:38Z",
            "2026-11-25T13:23:38.123456+01:00",
            "2026-11-25T13:23:38-0500",
            "2026-11-25 13:23:38 UTC",
            "13:23:38",
            "13:23:38.5",
        ] {
            assert!(ok("at [TIME] ok", &format!("at {t} ok")), "{t}");
        }
        for bad in ["2026-11-25", "25:00:00", "13:23", "2026-11-25_13:23:38", "13:61:00", "1:23:38"] {
            assert!(!ok("at [TIME] ok", &format!("at {bad} ok")), "{bad}");
        }
        assert!(ok("[DATE]", "2026-11-25"));
        assert!(ok("on [DATE] at [TIME]", "on 2026-01-31 at 00:00:00"));
        for bad in ["2026-13-01", "26-11-25", "2026/11/25", "2026-11-32", "2026-11-5"] {
            assert!(!ok("[DATE]", bad), "{bad}");
        }
    }

    #[test]
    fn token_duration() {
        for d in ["3s", "1m 05s", "2h 3m", "0.4s", "59m59s", "120ms", "1d 2h"] {
            assert!(ok("took [DURATION] total", &format!("took {d} total")), "{d}");
        }
        for bad in ["3", "s", "3 s", "3x", "3sec", "1m  5s"] {
            assert!(!ok("took [DURATION] total", &format!("took {bad} total")), "{bad}");
        }
        assert!(ok("([DURATION])", "(1m 5s)"));
        assert!(ok("[DURATION] 5 jobs", "3s 5 jobs"));
    }

    #[test]
    fn token_path() {
        assert!(ok("wrote [PATH]", "wrote /tmp/x/y.json"));
        assert!(!ok("`[PATH]`: ok", "`/tmp/a b`: ok"));
        assert!(ok("`[PATH]`: ok", "`/tmp/ab`: ok"));
        assert!(ok("[PATH]:[N]", "src/a.rs:12"));
        assert!(!ok("wrote [PATH]", "wrote "));
    }

    #[test]
    fn tokens_match_their_own_text() {
        assert!(ok("[ID] [N] [TIME] [PATH]", "[ID] [N] [TIME] [PATH]"));
        for &(name, tok) in TOKENS {
            assert_eq!(tok.name(), name);
        }
    }

    // --- generalize (`--record`) ------------------------------------------------------------

    #[test]
    fn generalize_replaces_ids_uuids_times_and_hashes() {
        let out = "Instance i-20a43f0d8f306f98f is running\n\
                   creating image ami-a21ed453c8f9dc90d (v1) from instance i-0123abcd\n\
                   job 0 submitted: command 570c3050-7b82-4d84-b11c-4aa91dc24630 on x\n\
                   \"results/debugjob2026-11-25 17:57:06.893827\"\n\
                   published 2026-11-25T17:57:06Z, at 2026-11-25 17:57:17 UTC\n\
                   new commit has hash: a8675a5f96e5977055572e574a94dac9402a350d\n";
        assert_eq!(
            generalize(out),
            "Instance [ID] is running\n\
             creating image [ID] (v1) from instance [ID]\n\
             job 0 submitted: command [UUID] on x\n\
             \"results/debugjob[TIME]\"\n\
             published [TIME], at [TIME] UTC\n\
             new commit has hash: [HASH]\n"
        );
    }

    #[test]
    fn generalize_leaves_lookalikes_alone() {
        for s in [
            "multi-deadbeef0",      // inside a word
            "i-abc",                // too short for an id
            "i-deadbeefx",          // not a hex run to the word's end
            "abc1234",              // a short hash: could be anything
            &"a".repeat(41),        // not 40 digits
            "2026-11-25",           // a date alone
            "12026-11-25 17:57:06", // part of a longer number
            "2026-11-25 17:57:066", // ditto
            "│ naïve ┆ ünïcode │",
        ] {
            assert_eq!(generalize(s), s, "{s}");
        }
    }

    #[test]
    fn generalized_output_matches_the_original_and_new_values() {
        let first = "Instance i-20a43f0d8f306f98f is running since 2026-11-25 17:57:06\n";
        let second = "Instance i-99999999999999999 is running since 2027-01-02 03:04:05\n";
        let expected = lines(&generalize(first));
        assert_eq!(check_output(&expected, first), Ok(()));
        assert_eq!(check_output(&expected, second), Ok(()));
    }

    #[test]
    fn generalize_writes_only_what_the_matcher_accepts() {
        // Out-of-range dates and times are not timestamps for either: what `--record` would write
        // as `[TIME]` must match again when the value changes.
        for s in ["2026-19-45 99:99:99", "2026-11-25 24:00:00", "2026-02-31T23:59:60x"] {
            let g = generalize(s);
            assert!(ok(&g, s), "{s} -> {g}");
        }
        assert_eq!(generalize("at 2026-19-45 99:99:99"), "at 2026-19-45 99:99:99");
        assert_eq!(generalize("2026-11-25T13:23:38+01:00 sg-0123abcd9"), "[TIME]+01:00 [ID]");
        for s in [
            "i-0123456789abcdef0 2026-11-25T13:23:38.5Z 2026-11-25 13:23:38 UTC",
            "vpc-0a1b2c3d4e subnet-12345678 eni-abcdef0123 snap-0123456789 vol-00000000",
            "570c3050-7b82-4d84-b11c-4aa91dc24630 a8675a5f96e5977055572e574a94dac9402a350d",
            "(i-20a43f0d8f306f98f) 2026-11-25 17:57:06.893827, i-",
        ] {
            let g = generalize(s);
            assert_ne!(g, s);
            assert!(ok(&g, s), "{s} -> {g}");
        }
    }
}
