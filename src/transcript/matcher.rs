//! Expected output as patterns, and matching output against them.
//!
//! An expected line is literal text with wildcards: `[..]` matches any run of characters within
//! the line and a named token ([`patterns`](super::patterns)) a value of its kind; a line holding
//! only `...` matches any number of lines. Trailing whitespace, CRLF line ends and trailing blank
//! lines are ignored. Matching is greedy over the segments between wildcards and every step is
//! charged to a [`Budget`], so comparing a megabyte of output never takes more than a moment.

use super::patterns::{self, TOKENS, Token};

/// Work units one comparison may spend before giving up (a few hundred milliseconds).
pub(crate) const BUDGET: u64 = 40_000_000;

/// A work budget; matching stops with [`Exhausted`] when it runs out.
pub(crate) struct Budget(pub(crate) u64);

/// The work budget ran out.
pub(crate) struct Exhausted;

impl Budget {
    fn spend(&mut self, units: u64) -> Result<(), Exhausted> {
        match self.0.checked_sub(units) {
            Some(left) => {
                self.0 = left;
                Ok(())
            }
            None => {
                self.0 = 0;
                Err(Exhausted)
            }
        }
    }
}

/// Part of an expected line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Piece<'a> {
    Lit(&'a [u8]),
    Any,
    Tok(Token, &'a [u8]),
}

/// An expected line.
pub(crate) enum LinePat<'a> {
    /// `...`: any number of lines.
    Gap,
    /// A line; `pieces` is `None` when it has no wildcard.
    Line { text: &'a str, pieces: Option<Vec<Piece<'a>>> },
}

pub(crate) fn compile_lines(expected: &[String]) -> Vec<LinePat<'_>> {
    let mut lines: Vec<&str> = expected.iter().flat_map(|e| e.split('\n')).map(str::trim_end).collect();
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    let mut pats: Vec<LinePat> = Vec::with_capacity(lines.len());
    for text in lines {
        if text.trim() == "..." {
            if !matches!(pats.last(), Some(LinePat::Gap)) {
                pats.push(LinePat::Gap);
            }
            continue;
        }
        let pieces = compile(text);
        let literal = matches!(pieces.as_slice(), [] | [Piece::Lit(_)]);
        pats.push(LinePat::Line { text, pieces: (!literal).then_some(pieces) });
    }
    pats
}

pub(crate) fn actual_lines(actual: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = actual.lines().map(str::trim_end).collect();
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines
}

/// Splits an expected line into literals, `[..]` and tokens.
fn compile(pat: &str) -> Vec<Piece<'_>> {
    let b = pat.as_bytes();
    let mut pieces = Vec::new();
    let (mut start, mut i) = (0, 0);
    while i < b.len() {
        if b[i] == b'[' {
            let rest = &b[i..];
            let found = if rest.starts_with(b"[..]") {
                Some((4, Piece::Any))
            } else {
                TOKENS
                    .iter()
                    .find(|(name, _)| rest.starts_with(name.as_bytes()))
                    .map(|&(name, tok)| (name.len(), Piece::Tok(tok, name.as_bytes())))
            };
            if let Some((len, piece)) = found {
                if start < i {
                    pieces.push(Piece::Lit(&b[start..i]));
                }
                if !(piece == Piece::Any && pieces.last() == Some(&Piece::Any)) {
                    pieces.push(piece);
                }
                i += len;
                start = i;
                continue;
            }
        }
        i += 1;
    }
    if start < b.len() {
        pieces.push(Piece::Lit(&b[start..]));
    }
    pieces
}

pub(crate) fn line_matches(pat: &LinePat, actual: &str, budget: &mut Budget) -> Result<bool, Exhausted> {
    match pat {
        LinePat::Gap => Ok(true),
        LinePat::Line { text, pieces: None } => {
            budget.spend(1 + (actual.len() as u64) / 64)?;
            Ok(*text == actual)
        }
        LinePat::Line { pieces: Some(pieces), .. } => pieces_match(pieces, actual.as_bytes(), budget),
    }
}

/// Whether a whole line matches pieces: greedy over the segments between `[..]`.
fn pieces_match(pieces: &[Piece], s: &[u8], budget: &mut Budget) -> Result<bool, Exhausted> {
    let segs: Vec<&[Piece]> = pieces.split(|p| *p == Piece::Any).collect();
    let (first, last) = match segs.as_slice() {
        [] => return Ok(s.is_empty()),
        [only] => return Ok(seg_ends(only, s, 0, budget)?.contains(&s.len())),
        [first, .., last] => (*first, *last),
    };
    let mut cur = 0;
    if !first.is_empty() {
        match seg_ends(first, s, 0, budget)?.first() {
            Some(&end) => cur = end,
            None => return Ok(false),
        }
    }
    for seg in segs.iter().skip(1).take(segs.len().saturating_sub(2)) {
        if seg.is_empty() {
            continue;
        }
        match min_end(seg, s, cur, budget)? {
            Some(end) => cur = end,
            None => return Ok(false),
        }
    }
    if last.is_empty() {
        return Ok(true);
    }
    // The last segment must end the line.
    if let Some(Piece::Lit(lit)) = last.last()
        && !s.ends_with(lit)
    {
        return Ok(false);
    }
    if let Some(len) = fixed_len(last) {
        return Ok(match s.len().checked_sub(len) {
            Some(start) if start >= cur => seg_ends(last, s, start, budget)?.contains(&s.len()),
            _ => false,
        });
    }
    for start in cur..=s.len() {
        budget.spend(1)?;
        if seg_ends(last, s, start, budget)?.contains(&s.len()) {
            return Ok(true);
        }
    }
    Ok(false)
}

fn fixed_len(seg: &[Piece]) -> Option<usize> {
    seg.iter().map(|p| if let Piece::Lit(l) = p { Some(l.len()) } else { None }).sum()
}

/// The smallest end of a match of `seg` starting at or after `from`.
fn min_end(seg: &[Piece], s: &[u8], from: usize, budget: &mut Budget) -> Result<Option<usize>, Exhausted> {
    let first_byte = match seg.first() {
        Some(Piece::Lit(l)) => l.first().copied(),
        _ => None,
    };
    let mut best: Option<usize> = None;
    let mut p = from;
    while p <= s.len() && best.is_none_or(|b| p < b) {
        if let Some(byte) = first_byte {
            match s.get(p..).and_then(|rest| rest.iter().position(|&c| c == byte)) {
                Some(skip) => {
                    budget.spend(1 + skip as u64 / 64)?;
                    p += skip;
                }
                None => break,
            }
            if best.is_some_and(|b| p >= b) {
                break;
            }
        }
        budget.spend(1)?;
        if let Some(&end) = seg_ends(seg, s, p, budget)?.first() {
            best = Some(best.map_or(end, |b| b.min(end)));
        }
        p += 1;
    }
    Ok(best)
}

/// All ends of matches of `seg` (no `[..]` inside) starting at `start`, sorted.
fn seg_ends(seg: &[Piece], s: &[u8], start: usize, budget: &mut Budget) -> Result<Vec<usize>, Exhausted> {
    let mut cur = vec![start];
    let mut next = Vec::new();
    for piece in seg {
        next.clear();
        for &p in &cur {
            budget.spend(1)?;
            candidates(piece, s, p, &mut next, budget)?;
        }
        next.sort_unstable();
        next.dedup();
        std::mem::swap(&mut cur, &mut next);
        if cur.is_empty() {
            break;
        }
    }
    Ok(cur)
}

/// Pushes every end of a match of `piece` at `p`.
fn candidates(
    piece: &Piece,
    s: &[u8],
    p: usize,
    out: &mut Vec<usize>,
    budget: &mut Budget,
) -> Result<(), Exhausted> {
    let rest = s.get(p..).unwrap_or(&[]);
    match piece {
        Piece::Lit(lit) => {
            budget.spend(lit.len() as u64 / 64)?;
            if rest.starts_with(lit) {
                out.push(p + lit.len());
            }
        }
        Piece::Any => {
            budget.spend(rest.len() as u64)?;
            out.extend(p..=s.len());
        }
        Piece::Tok(tok, name) => {
            if rest.starts_with(name) {
                out.push(p + name.len());
            }
            let read = patterns::token_ends(*tok, rest, p, out);
            budget.spend(read as u64)?;
        }
    }
    Ok(())
}

/// Whether output lines match expected lines: greedy over the segments between `...` lines.
pub(crate) fn lines_match(pats: &[LinePat], act: &[&str], budget: &mut Budget) -> Result<bool, Exhausted> {
    let segs: Vec<&[LinePat]> = pats.split(|p| matches!(p, LinePat::Gap)).collect();
    let seg_at = |seg: &[LinePat], start: usize, budget: &mut Budget| -> Result<bool, Exhausted> {
        match act.get(start..start + seg.len()) {
            Some(lines) => {
                for (pat, line) in seg.iter().zip(lines) {
                    if !line_matches(pat, line, budget)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            None => Ok(false),
        }
    };
    let (first, last) = match segs.as_slice() {
        [] => return Ok(act.is_empty()),
        [only] => return Ok(only.len() == act.len() && seg_at(only, 0, budget)?),
        [first, .., last] => (*first, *last),
    };
    if !seg_at(first, 0, budget)? {
        return Ok(false);
    }
    let mut cur = first.len();
    for seg in segs.iter().skip(1).take(segs.len().saturating_sub(2)) {
        if seg.is_empty() {
            continue;
        }
        let mut found = None;
        for start in cur..=act.len().saturating_sub(seg.len()) {
            budget.spend(1)?;
            if seg_at(seg, start, budget)? {
                found = Some(start);
                break;
            }
        }
        match found {
            Some(start) => cur = start + seg.len(),
            None => return Ok(false),
        }
    }
    match act.len().checked_sub(last.len()) {
        Some(start) if start >= cur => seg_at(last, start, budget),
        _ => Ok(false),
    }
}

/// The text of an expected line as written.
pub(crate) fn pat_text<'a>(pat: &LinePat<'a>) -> &'a str {
    match pat {
        LinePat::Gap => "...",
        LinePat::Line { text, .. } => text,
    }
}

#[cfg(test)]
mod tests {
    use crate::transcript::testing::ok;

    #[test]
    fn literal_lines_ignore_trailing_space_and_crlf() {
        assert!(ok("a\nb  ", "a  \r\nb\r\n\r\n"));
        assert!(!ok("a\nb", " a\nb"));
        assert!(ok("", ""));
        assert!(ok("", "\n\n"));
        assert!(!ok("", "x"));
        assert!(!ok("x", ""));
    }

    #[test]
    fn any_run_within_a_line() {
        assert!(ok("launched [..] in [..]", "launched i-1 in us-east-1"));
        assert!(ok("a\n[..]\nb", "a\n\nb"));
        assert!(!ok("[..]", ""));
        assert!(ok("a[..]b", "ab"));
        assert!(ok("a[..][..]b[..]b", "a-b-b-b"));
        assert!(!ok("a[..]b", "a-b-c"));
        assert!(!ok("[..]x", "xy"));
        assert!(!ok("a[..]", "ba"));
        assert!(!ok("a[..]b", "a\nb"));
    }

    #[test]
    fn literal_brackets_match_themselves() {
        assert!(ok("[x] done [1/2] [..", "[x] done [1/2] [.."));
        assert!(!ok("[x]", "x"));
    }

    #[test]
    fn ellipsis_lines() {
        let out = "start\na\nb\nmiddle\nc\nend\n";
        assert!(ok("...\nend", out));
        assert!(ok("start\n...", out));
        assert!(ok("start\n...\nmiddle\n...\nend", out));
        assert!(ok("...\nmiddle\n...", out));
        assert!(ok("...\na\n...\n...\nc\n...", out));
        assert!(ok("start\na\n...\nb\nmiddle\nc\nend", out));
        assert!(ok("...", ""));
        assert!(ok("a\n...\nb", "a\nb"));
        assert!(!ok("...\nmissing\n...", out));
        assert!(!ok("start\n...\nc\nmiddle\n...", out));
        assert!(!ok("...\nstart\nb", out));
        assert!(!ok("a\n...\na", "a"));
        assert!(ok("  ...  ", "x\ny"));
    }
}
