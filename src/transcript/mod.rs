//! The one transcript format shared by scripts, tutorials and the test suite.
//!
//! Three kinds of text are read into the same [`Transcript`], a list of [`Step`]s:
//!
//! - a *script* (`*.devami`) holds plain commands, one per line; blank lines and `#` comments are
//!   skipped and nothing is checked;
//! - a *transcript* is a script in which some line starts with `devami> `: each such line is an
//!   input and the lines after it, up to the next input, are its expected output (trailing blank
//!   lines dropped). Before the first input only `#` comments and blank lines may appear;
//! - a *markdown* page (`*.md`) holds prose and fenced blocks whose info string is `devami`
//!   (```` ```devami ```` or `~~~devami`; `devami ignore` marks a block that is shown but not run).
//!   Each block is a transcript and must have at least one input; the prose before a block is
//!   attached to its first step so the tutorial player can show it, and the prose after the last
//!   block is the [`Transcript::epilogue`].
//!
//! Expected output may use wildcards, checked by [`check_output`]: `[..]` matches any run of
//! characters within a line, a line holding only `...` matches any number of lines, and named
//! tokens match values that change between runs (`[ID]`, `[UUID]`, `[HASH]`, `[N]`, `[NUM]`,
//! `[TIME]`, `[DATE]`, `[DURATION]`, `[PATH]`, `[PID]`). A token also matches its own literal
//! text, so recorded output always matches itself. Trailing whitespace and CRLF line ends are
//! ignored. Matching is greedy over the segments between wildcards and bounded by a work budget,
//! so a megabyte of output never takes more than a moment to compare.

use std::path::Path;

use crate::error::Error;

/// The prompt that starts an input line.
pub const PROMPT: &str = "devami>";

/// Work units one [`check_output`] call may spend before giving up (a few hundred milliseconds).
const BUDGET: u64 = 40_000_000;

/// The largest number of lines on each side that the diff aligns line by line.
const DIFF_WINDOW: usize = 400;

/// Lines of diff shown around the first difference.
const DIFF_LINES: usize = 40;

/// Lines of context shown before the first difference.
const DIFF_CONTEXT: usize = 6;

/// Longest line shown in a diff or an error message, in characters.
const SHOW_MAX: usize = 300;

/// One command of a script, transcript or tutorial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// 1-based step number, counting every step of the file (`devami ignore` ones too).
    pub number: usize,
    /// 1-based line of the input in the source.
    pub line: usize,
    /// The command, without the prompt.
    pub input: String,
    /// The expected output lines; `None` for plain scripts (nothing is checked).
    pub expected: Option<Vec<String>>,
    /// Markdown text shown before this step, `""` if none.
    pub prose: String,
    /// `false` for steps of `devami ignore` blocks: shown but not executed.
    pub run: bool,
}

/// A parsed script, transcript or tutorial.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transcript {
    /// The steps in order.
    pub steps: Vec<Step>,
    /// Markdown after the last devami block (the whole page when it has none); `""` otherwise.
    pub epilogue: String,
}

/// How to read a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Plain commands, or a transcript when some line starts with `devami>`.
    Script,
    /// Markdown whose ```` ```devami ```` blocks are transcripts.
    Markdown,
}

/// The kind of a file from its extension: `.md` and `.markdown` are markdown, anything else a
/// script.
pub fn kind_for_path(path: &Path) -> Kind {
    match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("md" | "markdown") => Kind::Markdown,
        _ => Kind::Script,
    }
}

/// Reads and parses a file, choosing the kind from its extension. Errors name the file.
pub fn load(path: &Path) -> Result<Transcript, Error> {
    let bytes = crate::state::read_regular(path).map_err(|e| Error::io("read", path, e))?;
    let shown = path.display();
    let text = match std::str::from_utf8(&bytes) {
        Ok(text) => text,
        Err(e) => {
            let line = line_of(&bytes, e.valid_up_to());
            return Err(Error::usage(format!(
                "`{shown}` is not UTF-8 text (invalid byte at line {line}); save it as UTF-8"
            )));
        }
    };
    if let Some(at) = binary_at(&bytes) {
        return Err(binary_file(&shown.to_string(), &bytes, at));
    }
    parse(text, kind_for_path(path)).map_err(|e| match e {
        Error::Usage { message } => Error::usage(format!("`{shown}`: {message}")),
        other => other,
    })
}

/// Where bytes show that they are a binary file rather than text with a stray NUL: the first of
/// two NUL bytes in a row (binary formats are full of them, text has none) or a NUL first byte.
/// A lone NUL inside a line is left to the parser, which names it in the line's error.
pub fn binary_at(bytes: &[u8]) -> Option<usize> {
    if bytes.first() == Some(&0) {
        return Some(0);
    }
    bytes.windows(2).position(|w| w == [0, 0])
}

/// The error for a file that [looks binary](binary_at) at byte `at`.
pub fn binary_file(shown: &str, bytes: &[u8], at: usize) -> Error {
    Error::usage(format!(
        "`{shown}` looks like a binary file (NUL bytes at line {}); give a script or a markdown file",
        line_of(bytes, at)
    ))
}

fn line_of(bytes: &[u8], at: usize) -> usize {
    bytes.get(..at).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count()) + 1
}

/// Parses a script, transcript or markdown page.
pub fn parse(text: &str, kind: Kind) -> Result<Transcript, Error> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<(usize, &str)> =
        text.lines().enumerate().map(|(i, l)| (i + 1, l.strip_suffix('\r').unwrap_or(l))).collect();
    match kind {
        Kind::Markdown => parse_markdown(&lines),
        Kind::Script if lines.iter().any(|(_, l)| prompt(l).is_some()) => {
            let mut steps = Vec::new();
            parse_block(&lines, &mut steps, Block { opened_at: None, run: true, prose: String::new() })?;
            Ok(Transcript { steps, epilogue: String::new() })
        }
        Kind::Script => {
            let steps = lines
                .iter()
                .map(|&(line, l)| (line, l.trim()))
                .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
                .enumerate()
                .map(|(i, (line, input))| Step {
                    number: i + 1,
                    line,
                    input: input.to_string(),
                    expected: None,
                    prose: String::new(),
                    run: true,
                })
                .collect();
            Ok(Transcript { steps, epilogue: String::new() })
        }
    }
}

/// The command of an input line, or `None` when the line is not an input.
fn prompt(line: &str) -> Option<&str> {
    let rest = line.strip_prefix(PROMPT)?;
    if rest.trim_end().is_empty() {
        Some("")
    } else if rest.starts_with(' ') {
        Some(rest.trim())
    } else {
        None
    }
}

/// Where a block of transcript lines comes from.
struct Block {
    /// The line of the opening fence, for markdown blocks.
    opened_at: Option<usize>,
    run: bool,
    /// Prose for the block's first step.
    prose: String,
}

/// Parses transcript lines, appending their steps.
fn parse_block(lines: &[(usize, &str)], steps: &mut Vec<Step>, block: Block) -> Result<(), Error> {
    let Block { opened_at, run, mut prose } = block;
    let first = steps.len();
    let mut current: Option<Step> = None;
    for &(no, line) in lines {
        if let Some(input) = prompt(line) {
            if let Some(step) = current.take() {
                steps.push(finish(step));
            }
            current = Some(Step {
                number: steps.len() + 1,
                line: no,
                input: input.to_string(),
                expected: Some(Vec::new()),
                prose: std::mem::take(&mut prose),
                run,
            });
        } else if let Some(step) = current.as_mut() {
            if let Some(expected) = step.expected.as_mut() {
                expected.push(line.trim_end().to_string());
            }
        } else if !line.trim().is_empty() && !line.trim_start().starts_with('#') {
            let within = opened_at.map(|at| format!(" of the devami block at line {at}")).unwrap_or_default();
            return Err(Error::usage(format!(
                "line {no}{within}: `{}` comes before the first `devami> ` input; only `#` comments and blank lines may come before it",
                shorten(line.trim())
            )));
        }
    }
    if let Some(step) = current.take() {
        steps.push(finish(step));
    }
    if steps.len() == first {
        let at = opened_at.unwrap_or(1);
        return Err(Error::usage(format!("devami block at line {at} has no `devami> ` input line")));
    }
    Ok(())
}

fn finish(mut step: Step) -> Step {
    if let Some(expected) = step.expected.as_mut() {
        while expected.last().is_some_and(|l| l.trim().is_empty()) {
            expected.pop();
        }
    }
    step
}

/// An open code fence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fence {
    /// Spaces before the fence characters.
    pub indent: usize,
    /// `` ` `` or `~`.
    pub ch: u8,
    /// How many fence characters opened it.
    pub len: usize,
    /// The info string, trimmed.
    pub info: String,
}

/// The fence a line opens, if it opens one (three or more backticks or tildes, after spaces).
pub(crate) fn fence_open(line: &str) -> Option<Fence> {
    let rest = line.trim_start_matches(' ');
    let indent = line.len() - rest.len();
    let ch = *rest.as_bytes().first()?;
    if ch != b'`' && ch != b'~' {
        return None;
    }
    let len = rest.bytes().take_while(|&b| b == ch).count();
    if len < 3 {
        return None;
    }
    let info = rest.get(len..).unwrap_or("").trim();
    if ch == b'`' && info.contains('`') {
        return None;
    }
    Some(Fence { indent, ch, len, info: info.to_string() })
}

/// Whether a line closes `fence`.
pub(crate) fn fence_closes(line: &str, fence: &Fence) -> bool {
    let rest = line.trim_start_matches(' ');
    let len = rest.bytes().take_while(|&b| b == fence.ch).count();
    len >= fence.len && rest.get(len..).is_some_and(|r| r.trim().is_empty())
}

/// Removes up to `indent` leading spaces.
pub(crate) fn dedent(line: &str, indent: usize) -> &str {
    let spaces = line.bytes().take(indent).take_while(|&b| b == b' ').count();
    line.get(spaces..).unwrap_or(line)
}

/// The open block of [`parse_markdown`].
struct Open<'a> {
    fence: Fence,
    at: usize,
    /// `Some(run)` for a devami block.
    devami: Option<bool>,
    lines: Vec<(usize, &'a str)>,
}

fn parse_markdown(lines: &[(usize, &str)]) -> Result<Transcript, Error> {
    let mut steps = Vec::new();
    let mut prose: Vec<&str> = Vec::new();
    let mut open: Option<Open> = None;
    for &(no, line) in lines {
        match open.as_mut() {
            None => {
                if let Some(fence) = fence_open(line) {
                    let devami = devami_block(&fence.info, no)?;
                    if devami.is_none() {
                        prose.push(line);
                    }
                    open = Some(Open { fence, at: no, devami, lines: Vec::new() });
                } else {
                    prose.push(line);
                }
            }
            Some(block) if fence_closes(line, &block.fence) => {
                match block.devami {
                    Some(run) => {
                        let text = join_trimmed(&prose);
                        prose.clear();
                        parse_block(
                            &block.lines,
                            &mut steps,
                            Block { opened_at: Some(block.at), run, prose: text },
                        )?;
                    }
                    None => prose.push(line),
                }
                open = None;
            }
            Some(block) => match block.devami {
                Some(_) => block.lines.push((no, dedent(line, block.fence.indent))),
                None => prose.push(line),
            },
        }
    }
    if let Some(block) = open {
        let fence = String::from_utf8(vec![block.fence.ch; block.fence.len]).unwrap_or_default();
        return Err(Error::usage(format!(
            "the code block opened at line {} is never closed; add a `{fence}` line after it",
            block.at
        )));
    }
    Ok(Transcript { steps, epilogue: join_trimmed(&prose) })
}

/// For a fence's info string: `None` when it is not a devami block, else whether it runs.
fn devami_block(info: &str, line: usize) -> Result<Option<bool>, Error> {
    let mut words = info.split_whitespace();
    if words.next() != Some("devami") {
        return Ok(None);
    }
    let mut run = true;
    for word in words {
        match word {
            "ignore" => run = false,
            other => {
                return Err(Error::usage(format!(
                    "devami block at line {line}: unknown attribute `{}`; the only one is `ignore` (shown, not run)",
                    shorten(other)
                )));
            }
        }
    }
    Ok(Some(run))
}

/// Joins lines, dropping blank lines at both ends.
fn join_trimmed(lines: &[&str]) -> String {
    let start = lines.iter().position(|l| !l.trim().is_empty()).unwrap_or(lines.len());
    let end = lines.iter().rposition(|l| !l.trim().is_empty()).map_or(start, |e| e + 1);
    lines.get(start..end).unwrap_or(&[]).join("\n")
}

/// A line cut to a readable length.
fn shorten(line: &str) -> String {
    match line.char_indices().nth(SHOW_MAX) {
        Some((at, _)) => format!("{}…", line.get(..at).unwrap_or(line)),
        None => line.to_string(),
    }
}

/// The echo of an input on a terminal: `devami> INPUT` (`devami>` for an empty input), with
/// control characters escaped so that an input read from a file cannot drive the terminal.
pub fn echo(input: &str) -> String {
    if input.chars().any(crate::error::is_unsafe_char) {
        let mut escaped = String::with_capacity(input.len() + 8);
        input.chars().for_each(|c| crate::error::push_escaped(&mut escaped, c));
        return input_line(&escaped);
    }
    input_line(input)
}

/// An input line of a transcript file: `devami> INPUT`, verbatim.
fn input_line(input: &str) -> String {
    if input.is_empty() { PROMPT.to_string() } else { format!("{PROMPT} {input}") }
}

/// Writes inputs and their outputs back as a transcript (for `--record` and blessing).
///
/// Trailing whitespace and trailing blank lines of each output are dropped. An output line that
/// would read as an input is written as `[..]devami> ...`, which still matches it.
pub fn render_transcript(steps_and_outputs: &[(String, String)]) -> String {
    let mut out = String::new();
    for (input, output) in steps_and_outputs {
        out.push_str(&input_line(input.trim()));
        out.push('\n');
        let lines: Vec<&str> = output.lines().map(str::trim_end).collect();
        let keep = lines.iter().rposition(|l| !l.is_empty()).map_or(0, |i| i + 1);
        for line in lines.iter().take(keep) {
            if prompt(line).is_some() {
                out.push_str("[..]");
            }
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Checks a step's output against its transcript; `Ok` when the step expects nothing.
pub fn check_step(step: &Step, actual: &str) -> Result<(), Error> {
    match &step.expected {
        Some(expected) => check_output(expected, actual).map_err(|diff| Error::TranscriptMismatch {
            step: step.number,
            input: step.input.clone(),
            diff,
        }),
        None => Ok(()),
    }
}

/// Compares output with expected lines (wildcards allowed); the error is a readable diff.
pub fn check_output(expected: &[String], actual: &str) -> Result<(), String> {
    let pats = compile_lines(expected);
    let act = actual_lines(actual);
    let mut budget = Budget(BUDGET);
    match lines_match(&pats, &act, &mut budget) {
        Ok(true) => Ok(()),
        Ok(false) => Err(diff(&pats, &act)),
        Err(Exhausted) => Err(format!(
            "the output ({} lines) is too large to compare with these wildcards; \
             make the expected output more literal or split the step",
            act.len()
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Matching

/// A work budget; matching stops with [`Exhausted`] when it runs out.
struct Budget(u64);

/// The work budget ran out.
struct Exhausted;

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

/// A named token of expected output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
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

const TOKENS: &[(&str, Token)] = &[
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

/// Prefixes of `[ID]`.
const ID_PREFIXES: &[&[u8]] = &[b"i-", b"ami-", b"snap-", b"vol-", b"sg-", b"vpc-", b"subnet-", b"eni-"];

/// Part of an expected line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piece<'a> {
    Lit(&'a [u8]),
    Any,
    Tok(Token, &'a [u8]),
}

/// An expected line.
enum LinePat<'a> {
    /// `...`: any number of lines.
    Gap,
    /// A line; `pieces` is `None` when it has no wildcard.
    Line { text: &'a str, pieces: Option<Vec<Piece<'a>>> },
}

fn compile_lines(expected: &[String]) -> Vec<LinePat<'_>> {
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

fn actual_lines(actual: &str) -> Vec<&str> {
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

fn line_matches(pat: &LinePat, actual: &str, budget: &mut Budget) -> Result<bool, Exhausted> {
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
            match tok {
                Token::Path => {
                    let run = rest.iter().take_while(|b| !b.is_ascii_whitespace()).count();
                    budget.spend(run as u64)?;
                    out.extend(p + 1..=p + run);
                }
                Token::Time => time_ends(rest, out, p),
                Token::Duration => duration_ends(rest, out, p),
                _ => {
                    if let Some(len) = token_len(*tok, rest) {
                        out.push(p + len);
                    }
                }
            }
        }
    }
    Ok(())
}

fn count(s: &[u8], pred: impl Fn(u8) -> bool) -> usize {
    s.iter().take_while(|&&b| pred(b)).count()
}

fn digits(s: &[u8]) -> usize {
    count(s, |b| b.is_ascii_digit())
}

fn at(s: &[u8], i: usize) -> u8 {
    s.get(i).copied().unwrap_or(0)
}

/// The length of the single match of a fixed-shape token at the start of `s`.
fn token_len(tok: Token, s: &[u8]) -> Option<usize> {
    let hex = |s: &[u8]| count(s, |b| b.is_ascii_hexdigit());
    match tok {
        Token::Id => ID_PREFIXES.iter().find(|p| s.starts_with(p)).and_then(|p| {
            let n = hex(&s[p.len()..]);
            (n > 0).then_some(p.len() + n)
        }),
        Token::Uuid => {
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
        Token::Num => {
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
        Token::Date => date_len(s),
        Token::Time | Token::Duration | Token::Path => None,
    }
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

/// Ends of a timestamp at `s` (offset `p`): with and without a time zone.
fn time_ends(s: &[u8], out: &mut Vec<usize>, p: usize) {
    let start = match date_len(s) {
        Some(d) if matches!(at(s, d), b' ' | b'T') => d + 1,
        Some(_) => return,
        None => 0,
    };
    let Some(hms) = s.get(start..).and_then(hms_len) else { return };
    let mut end = start + hms;
    if matches!(at(s, end), b'.' | b',') {
        let frac = digits(s.get(end + 1..).unwrap_or(&[]));
        if frac > 0 {
            end += 1 + frac;
        }
    }
    out.push(p + end);
    match at(s, end) {
        b'Z' => out.push(p + end + 1),
        b'+' | b'-' => {
            let zone = &s[end + 1..];
            if two_digits(zone, 0, 23).is_some() {
                if at(zone, 2) == b':' && two_digits(zone, 3, 59).is_some() {
                    out.push(p + end + 6);
                } else if two_digits(zone, 2, 59).is_some() {
                    out.push(p + end + 5);
                }
            }
        }
        b' ' if s[end..].starts_with(b" UTC") => out.push(p + end + 4),
        _ => {}
    }
}

/// Ends of a duration at `s` (offset `p`): after each of its parts (`1h`, `1h 2m`, `1h 2m 3s`).
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

/// Whether output lines match expected lines: greedy over the segments between `...` lines.
fn lines_match(pats: &[LinePat], act: &[&str], budget: &mut Budget) -> Result<bool, Exhausted> {
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

// ---------------------------------------------------------------------------------------------
// Diff

/// One line of a diff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// Matched: expected index, actual index.
    Same(usize, usize),
    /// A `...` line, shown once.
    Gap(usize),
    /// An actual line taken by a `...`.
    Absorbed(usize),
    /// Expected but missing.
    Missing(usize),
    /// Printed but not expected.
    Extra(usize),
}

fn pat_text<'a>(pat: &LinePat<'a>) -> &'a str {
    match pat {
        LinePat::Gap => "...",
        LinePat::Line { text, .. } => text,
    }
}

/// A readable diff of expected lines against actual lines, around the first difference.
fn diff(pats: &[LinePat], act: &[&str]) -> String {
    let mut budget = Budget(BUDGET);
    let mut matches = |pat: &LinePat, line: &str| line_matches(pat, line, &mut budget).unwrap_or(false);
    // Common prefix and suffix of plain lines.
    let mut pre = 0;
    while pre < pats.len()
        && pre < act.len()
        && !matches!(pats[pre], LinePat::Gap)
        && matches(&pats[pre], act[pre])
    {
        pre += 1;
    }
    let mut suf = 0;
    while suf < pats.len() - pre && suf < act.len() - pre {
        let (p, a) = (&pats[pats.len() - 1 - suf], act[act.len() - 1 - suf]);
        if matches!(p, LinePat::Gap) || !matches(p, a) {
            break;
        }
        suf += 1;
    }
    let pe = (pats.len() - suf).min(pre + DIFF_WINDOW);
    let ae = (act.len() - suf).min(pre + DIFF_WINDOW);
    let truncated = pe < pats.len() - suf || ae < act.len() - suf;
    let mut ops: Vec<Op> = (0..pre).map(|i| Op::Same(i, i)).collect();
    align(&pats[pre..pe], &act[pre..ae], pre, &mut matches, &mut ops);
    if !truncated {
        ops.extend((0..suf).map(|k| Op::Same(pats.len() - suf + k, act.len() - suf + k)));
    }
    render_diff(pats, act, &ops, truncated)
}

/// Appends the cheapest alignment of `pats` with `act` (both starting at `base`).
fn align(
    pats: &[LinePat],
    act: &[&str],
    base: usize,
    matches: &mut impl FnMut(&LinePat, &str) -> bool,
    ops: &mut Vec<Op>,
) {
    let (n, m) = (pats.len(), act.len());
    let w = m + 1;
    // cost[i * w + j]: cost of aligning pats[i..] with act[j..].
    let mut cost = vec![0u32; (n + 1) * w];
    let mut same = vec![false; (n + 1) * w];
    for j in (0..m).rev() {
        cost[n * w + j] = cost[n * w + j + 1] + 1;
    }
    for i in (0..n).rev() {
        let gap = matches!(pats[i], LinePat::Gap);
        cost[i * w + m] = cost[(i + 1) * w + m] + u32::from(!gap);
        for j in (0..m).rev() {
            let c = if gap {
                cost[(i + 1) * w + j].min(cost[i * w + j + 1])
            } else {
                let skip = 1 + cost[(i + 1) * w + j].min(cost[i * w + j + 1]);
                if matches(&pats[i], act[j]) {
                    same[i * w + j] = true;
                    skip.min(cost[(i + 1) * w + j + 1])
                } else {
                    skip
                }
            };
            cost[i * w + j] = c;
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut in_gap = false;
    while i < n || j < m {
        let here = cost[i * w + j];
        if i < n && matches!(pats[i], LinePat::Gap) {
            if !in_gap {
                ops.push(Op::Gap(base + i));
                in_gap = true;
            }
            // End the gap as soon as that is optimal, so the lines after it line up.
            if j < m && here != cost[(i + 1) * w + j] {
                ops.push(Op::Absorbed(base + j));
                j += 1;
            } else {
                i += 1;
                in_gap = false;
            }
        } else if i < n && j < m && same[i * w + j] && here == cost[(i + 1) * w + j + 1] {
            ops.push(Op::Same(base + i, base + j));
            i += 1;
            j += 1;
        } else if i < n && here == 1 + cost[(i + 1) * w + j] {
            ops.push(Op::Missing(base + i));
            i += 1;
        } else if j < m {
            ops.push(Op::Extra(base + j));
            j += 1;
        } else {
            // Unreachable with a consistent table; never loop.
            ops.push(Op::Missing(base + i));
            i += 1;
        }
    }
}

fn render_diff(pats: &[LinePat], act: &[&str], ops: &[Op], truncated: bool) -> String {
    let is_diff = |op: &Op| matches!(op, Op::Missing(_) | Op::Extra(_));
    let mut out = String::from("expected (-) vs actual (+):\n");
    let Some(first) = ops.iter().position(is_diff) else {
        out.push_str("  (the output differs in a way this diff cannot show; compare the full output)\n");
        return out;
    };
    let start = first.saturating_sub(DIFF_CONTEXT);
    let end = (start + DIFF_LINES).min(ops.len());
    let (mut e, mut a) = (0, 0);
    for op in ops.iter().take(start) {
        match op {
            Op::Same(..) => (e, a) = (e + 1, a + 1),
            Op::Gap(_) | Op::Missing(_) => e += 1,
            Op::Absorbed(_) | Op::Extra(_) => a += 1,
        }
    }
    if start > 0 {
        out.push_str(&format!("@@ expected line {}, output line {} @@\n", e + 1, a + 1));
    }
    if act.is_empty() {
        out.push_str("  (the command printed nothing)\n");
    }
    for op in &ops[start..end] {
        let (mark, text) = match *op {
            Op::Same(_, j) | Op::Absorbed(j) => ("  ", act.get(j).copied().unwrap_or("")),
            Op::Gap(i) => ("  ", pats.get(i).map_or("...", pat_text)),
            Op::Missing(i) => ("- ", pats.get(i).map_or("", pat_text)),
            Op::Extra(j) => ("+ ", act.get(j).copied().unwrap_or("")),
        };
        out.push_str(mark);
        out.push_str(&shorten(text));
        out.push('\n');
    }
    let more = ops[end..].iter().filter(|op| is_diff(op)).count();
    if truncated {
        out.push_str("(later lines not shown)\n");
    } else if more > 0 {
        out.push_str(&format!("({more} more differing lines not shown)\n"));
    } else if end < ops.len() {
        out.push_str(&format!("({} more matching lines)\n", ops.len() - end));
    }
    if out.ends_with('\n') {
        out.pop();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(String::from).collect()
    }

    fn ok(expected: &str, actual: &str) -> bool {
        check_output(&lines(expected), actual).is_ok()
    }

    fn steps(t: &Transcript) -> Vec<(&str, Option<Vec<&str>>)> {
        t.steps
            .iter()
            .map(|s| (s.input.as_str(), s.expected.as_ref().map(|e| e.iter().map(String::as_str).collect())))
            .collect()
    }

    fn err(text: &str, kind: Kind) -> String {
        match parse(text, kind) {
            Err(e) => e.to_string(),
            Ok(t) => panic!("expected an error, got {t:?}"),
        }
    }

    // --- scripts and transcripts ---------------------------------------------------------

    #[test]
    fn plain_script_skips_comments_and_blanks() {
        let t = parse("# setup\n\n  launch_devinstance   \n  # indented comment\nstatus\r\n", Kind::Script)
            .unwrap();
        assert_eq!(steps(&t), vec![("launch_devinstance", None), ("status", None)]);
        assert_eq!((t.steps[0].number, t.steps[0].line), (1, 3));
        assert_eq!((t.steps[1].number, t.steps[1].line), (2, 5));
        assert!(t.steps.iter().all(|s| s.run && s.prose.is_empty()));
    }

    #[test]
    fn transcript_has_inputs_and_expected_output() {
        let text = "# a transcript\n\ndevami> status\nno instance\n# not a comment here\n\n\ndevami>\ndevami> help  \r\nusage\n";
        let t = parse(text, Kind::Script).unwrap();
        assert_eq!(
            steps(&t),
            vec![
                ("status", Some(vec!["no instance", "# not a comment here"])),
                ("", Some(vec![])),
                ("help", Some(vec!["usage"])),
            ]
        );
        assert_eq!(t.steps.iter().map(|s| s.line).collect::<Vec<_>>(), vec![3, 8, 9]);
        assert_eq!(t.steps.iter().map(|s| s.number).collect::<Vec<_>>(), vec![1, 2, 3]);
    }

    #[test]
    fn transcript_text_before_first_input_is_an_error() {
        let e = err("status\ndevami> help\n", Kind::Script);
        assert!(e.contains("line 1") && e.contains("`status`"), "{e}");
    }

    #[test]
    fn prompt_needs_a_space() {
        let t = parse("devami>status\n", Kind::Script).unwrap();
        assert_eq!(steps(&t), vec![("devami>status", None)]);
    }

    // --- markdown --------------------------------------------------------------------------

    const PAGE: &str = "# First image

Open the blueprint with `devami`. Use ``code with ` inside``:

```devami
devami> status
no instance
```

Then launch:

~~~devami
# a comment before the first input
devami> launch_devinstance
launched [ID]

devami> ssh
~~~

```sh
devami> this is not a step
```

```devami ignore
devami> terminate_devinstance --force
```

That's all.
";

    #[test]
    fn markdown_blocks_prose_and_epilogue() {
        let t = parse(PAGE, Kind::Markdown).unwrap();
        assert_eq!(
            steps(&t),
            vec![
                ("status", Some(vec!["no instance"])),
                ("launch_devinstance", Some(vec!["launched [ID]"])),
                ("ssh", Some(vec![])),
                ("terminate_devinstance --force", Some(vec![])),
            ]
        );
        let s = &t.steps;
        assert_eq!(
            s[0].prose,
            "# First image\n\nOpen the blueprint with `devami`. Use ``code with ` inside``:"
        );
        assert_eq!(s[1].prose, "Then launch:");
        assert_eq!(s[2].prose, "");
        assert_eq!(s[3].prose, "```sh\ndevami> this is not a step\n```");
        assert_eq!(t.epilogue, "That's all.");
        assert_eq!(s.iter().map(|s| s.line).collect::<Vec<_>>(), vec![6, 14, 17, 25]);
        assert_eq!(s.iter().map(|s| s.run).collect::<Vec<_>>(), vec![true, true, true, false]);
        assert_eq!(s.iter().map(|s| s.number).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    }

    #[test]
    fn markdown_without_blocks_is_all_epilogue() {
        let t = parse("\n# Title\n\ntext\n\n", Kind::Markdown).unwrap();
        assert!(t.steps.is_empty());
        assert_eq!(t.epilogue, "# Title\n\ntext");
    }

    #[test]
    fn markdown_longer_fences_and_indented_blocks() {
        let text = "````markdown\n```devami\nnot a block\n```\n````\n\n1. Step:\n\n   ```devami\n   devami> a\n     out\n   ```\n";
        let t = parse(text, Kind::Markdown).unwrap();
        assert_eq!(steps(&t), vec![("a", Some(vec!["  out"]))]);
        assert!(t.steps[0].prose.starts_with("````markdown"), "{:?}", t.steps[0].prose);
    }

    #[test]
    fn markdown_unterminated_fence_is_an_error_with_line() {
        let e = err("text\n\n```devami\ndevami> a\n", Kind::Markdown);
        assert!(e.contains("line 3") && e.contains("never closed") && e.contains("```"), "{e}");
        let e = err("text\n~~~~sh\nls\n", Kind::Markdown);
        assert!(e.contains("line 2") && e.contains("~~~~"), "{e}");
    }

    #[test]
    fn markdown_block_without_prompt_is_an_error() {
        let e = err("a\n\n```devami\nstatus\n```\n", Kind::Markdown);
        assert!(e.contains("line 4") && e.contains("devami block at line 3"), "{e}");
        let e = err("a\n\n```devami\n# only a comment\n```\n", Kind::Markdown);
        assert_eq!(e, "devami block at line 3 has no `devami> ` input line");
    }

    #[test]
    fn markdown_unknown_attribute_is_an_error() {
        let e = err("```devami ignroe\ndevami> a\n```\n", Kind::Markdown);
        assert!(e.contains("line 1") && e.contains("`ignroe`"), "{e}");
    }

    #[test]
    fn markdown_nested_backticks_in_prose() {
        let text = "Use ```` `` ```` inline, and\n``` `a` ``` too.\n\n```devami\ndevami> x\n```\n";
        let t = parse(text, Kind::Markdown).unwrap();
        assert_eq!(steps(&t), vec![("x", Some(vec![]))]);
        assert_eq!(t.steps[0].prose, "Use ```` `` ```` inline, and\n``` `a` ``` too.");
    }

    #[test]
    fn kind_from_extension() {
        assert_eq!(kind_for_path(Path::new("docs/a.md")), Kind::Markdown);
        assert_eq!(kind_for_path(Path::new("a.MARKDOWN")), Kind::Markdown);
        assert_eq!(kind_for_path(Path::new("a.devami")), Kind::Script);
        assert_eq!(kind_for_path(Path::new("md")), Kind::Script);
    }

    #[test]
    fn load_rejects_binary_and_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("junk.devami");
        std::fs::write(&bin, b"status\n\x00\x01\xff").unwrap();
        let e = load(&bin).unwrap_err().to_string();
        assert!(e.contains("junk.devami") && e.contains("line 2"), "{e}");
        std::fs::write(&bin, b"status\n\x7fELF\x02\x00\x00\x00").unwrap();
        let e = load(&bin).unwrap_err().to_string();
        assert!(e.contains("looks like a binary file (NUL bytes at line 2)"), "{e}");
        // A lone NUL in a line is the line's problem, which the parser names.
        std::fs::write(&bin, b"devami> status\x00\nout\n").unwrap();
        assert_eq!(load(&bin).unwrap().steps[0].input, "status\0");
        assert_eq!(binary_at(b"\0"), Some(0));
        assert_eq!(binary_at(b"ab\0c\0\0"), Some(4));
        assert_eq!(binary_at(b"ab\0c"), None);
        let bad = dir.path().join("bad.md");
        std::fs::write(&bad, b"ok\n\xff\xfe").unwrap();
        let e = load(&bad).unwrap_err().to_string();
        assert!(e.contains("bad.md") && e.contains("UTF-8"), "{e}");
        let md = dir.path().join("t.md");
        std::fs::write(&md, "```devami\nnope\n```\n").unwrap();
        let e = load(&md).unwrap_err().to_string();
        assert!(e.starts_with(&format!("`{}`: line 2", md.display())), "{e}");
    }

    #[test]
    fn binary_junk_never_panics() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for round in 0..200 {
            let len = 1 + round * 7;
            let alphabet = b"devami> `~[]().*\n\r#x-0:9 >_";
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let pick = alphabet[(seed % alphabet.len() as u64) as usize];
                    if seed >> 61 == 0 { pick.wrapping_add((seed >> 56) as u8) } else { pick }
                })
                .collect();
            let text = String::from_utf8_lossy(&bytes);
            let _ = parse(&text, Kind::Script);
            let _ = parse(&text, Kind::Markdown);
            let _ = check_output(&lines(&text), &text);
            let _ = check_output(&lines(&text), "x");
            let _ = crate::frontend::prose::render(&text, true);
        }
    }

    // --- echo and recording -------------------------------------------------------------------

    #[test]
    fn echo_and_render_round_trip() {
        assert_eq!(echo("status"), "devami> status");
        assert_eq!(echo(""), "devami>");
        assert_eq!(echo("status\0\u{1b}[2J"), "devami> status\\u{0}\\u{1b}[2J");
        assert_eq!(render_transcript(&[("a\tb".to_string(), String::new())]), "devami> a\tb\n");
        let recorded = vec![
            ("status".to_string(), "no instance  \r\n\n\n".to_string()),
            ("".to_string(), String::new()),
            ("cat".to_string(), "devami> nested\n[N] ... [..]\n...\n".to_string()),
        ];
        let text = render_transcript(&recorded);
        assert_eq!(
            text,
            "devami> status\nno instance\ndevami>\ndevami> cat\n[..]devami> nested\n[N] ... [..]\n...\n"
        );
        let t = parse(&text, Kind::Script).unwrap();
        assert_eq!(t.steps.len(), 3);
        for (step, (input, output)) in t.steps.iter().zip(&recorded) {
            assert_eq!(&step.input, input);
            assert!(check_step(step, output).is_ok(), "{step:?}");
        }
    }

    // --- wildcards ------------------------------------------------------------------------------

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

    // --- diff -------------------------------------------------------------------------------------

    #[test]
    fn diff_of_a_changed_line() {
        let diff = check_output(
            &lines("launched [ID]\nstate: running\nready"),
            "launched i-0abc\nstate: pending\nready\n",
        )
        .unwrap_err();
        assert_eq!(
            diff,
            "expected (-) vs actual (+):\n  launched i-0abc\n- state: running\n+ state: pending\n  ready"
        );
    }

    #[test]
    fn diff_of_missing_and_extra_lines() {
        let diff = check_output(&lines("a\nb\nc"), "a\nc\nd\n").unwrap_err();
        assert_eq!(diff, "expected (-) vs actual (+):\n  a\n- b\n  c\n+ d");
        let diff = check_output(&lines("a"), "").unwrap_err();
        assert_eq!(diff, "expected (-) vs actual (+):\n  (the command printed nothing)\n- a");
    }

    #[test]
    fn diff_shows_lines_taken_by_ellipsis() {
        let diff = check_output(&lines("...\nDone"), "a\nb\nFailed\n").unwrap_err();
        assert_eq!(diff, "expected (-) vs actual (+):\n  ...\n  a\n  b\n  Failed\n- Done");
    }

    #[test]
    fn diff_lines_up_after_an_ellipsis() {
        let expected = lines("from [ID]\n...\ninstance [ID] is running ([DURATION])\nssh ubuntu@[..]\nDone");
        let actual =
            "from ami-0abc123\nwaiting\nwaiting\ninstance i-0123 is running (3s)\nssh ec2-user@1.2.3.4\n";
        assert_eq!(
            check_output(&expected, actual).unwrap_err(),
            "expected (-) vs actual (+):\n  from ami-0abc123\n  ...\n  waiting\n  waiting\n  \
             instance i-0123 is running (3s)\n- ssh ubuntu@[..]\n- Done\n+ ssh ec2-user@1.2.3.4"
        );
    }

    #[test]
    fn diff_is_limited_around_the_first_difference() {
        let expected: Vec<String> = (0..200).map(|i| format!("line {i}")).collect();
        let actual: String =
            (0..200).map(|i| if i == 100 { "changed\n".into() } else { format!("line {i}\n") }).collect();
        let diff = check_output(&expected, &actual).unwrap_err();
        let shown: Vec<&str> = diff.lines().collect();
        assert!(shown.len() <= DIFF_LINES + 4, "{diff}");
        assert_eq!(shown[1], "@@ expected line 95, output line 95 @@");
        assert!(diff.contains("- line 100\n+ changed\n  line 101"), "{diff}");
        assert!(diff.ends_with("more matching lines)"), "{diff}");
    }

    #[test]
    fn mismatch_error_names_the_step() {
        let t = parse("devami> status\nrunning\n", Kind::Script).unwrap();
        let e = check_step(&t.steps[0], "stopped\n").unwrap_err();
        assert!(matches!(e, Error::TranscriptMismatch { step: 1, .. }));
        assert_eq!(e.exit_code(), 4);
        let text = e.to_string();
        assert!(text.contains("step 1 (`status`)") && text.contains("- running\n+ stopped"), "{text}");
        let script = parse("status\n", Kind::Script).unwrap();
        assert!(check_step(&script.steps[0], "anything").is_ok());
    }

    // --- size ---------------------------------------------------------------------------------------

    #[test]
    fn megabyte_inputs_are_fast() {
        let started = std::time::Instant::now();
        let mut text = String::from("# big\n");
        for i in 0..20_000 {
            text.push_str(&format!("devami> echo {i}\n{i} ok [N] [..] done\n"));
        }
        assert!(text.len() > 500_000);
        let t = parse(&text, Kind::Script).unwrap();
        assert_eq!(t.steps.len(), 20_000);
        let md = format!("intro\n\n```devami\n{text}```\n");
        assert_eq!(parse(&md, Kind::Markdown).unwrap().steps.len(), 20_000);

        // One huge line, and many lines, against wildcards.
        let long = "x".repeat(1 << 20);
        assert!(ok("[..]x", &long));
        assert!(!ok("[..]y[..]", &long));
        assert!(ok("[PATH]", &long));
        assert!(!ok("[PATH]y", &long));
        assert!(!ok("[..]x[..]x[..]x[..]y", &long));
        let many: String = (0..50_000).map(|i| format!("line {i}\n")).collect();
        assert!(ok("...\nline 49999", &many));
        assert!(ok("line 0\n...\nline [N]\n...\nline 25000\n...", &many));
        assert!(!ok("...\nline 1\nline 3\n...", &many));
        let expected: Vec<String> = many.lines().map(String::from).collect();
        assert!(check_output(&expected, &many).is_ok());
        let mut changed = many.clone();
        changed.push_str("extra\n");
        let diff = check_output(&expected, &changed).unwrap_err();
        assert!(diff.contains("+ extra"), "{diff}");
        // Adversarial: every line nearly matches a long segment.
        let same: String = "a\n".repeat(30_000);
        let mut pat = vec!["...".to_string()];
        pat.extend(std::iter::repeat_n("a".to_string(), 10_000));
        pat.push("b".into());
        pat.push("...".into());
        assert!(check_output(&pat, &same).is_err());
        assert!(started.elapsed().as_secs() < 20, "{:?}", started.elapsed());
    }
}
