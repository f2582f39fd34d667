//! The transcript format shared by scripts, tutorials and the test suite.
//!
//! A file is read into a [`Transcript`], a list of [`Step`]s:
//!
//! - a *script* (`*.devami`) holds plain commands, one per line; blank lines and `#` comments are
//!   skipped and nothing is checked;
//! - a *transcript* is a script in which some line starts with `devami> `: each such line is an
//!   input and the lines after it, up to the next input, are its expected output (trailing blank
//!   lines dropped). Before the first input only `#` comments and blank lines may appear;
//! - a *markdown* page (`*.md`) holds transcripts in fenced `devami` blocks ([`markdown`]).
//!
//! Expected output may hold wildcards and tokens (`matcher.rs`, `patterns.rs`); [`check_step`]
//! compares a step's output with it and shows a diff when they differ (`diff.rs`). Lines end at LF
//! (a CR before it is dropped) and line numbers are 1-based lines of the file.

use std::path::Path;

use crate::error::Error;

mod diff;
pub(crate) mod markdown;
mod matcher;
mod patterns;

pub use diff::{check_output, check_step};
pub use patterns::generalize;

/// The prompt that starts an input line.
pub const PROMPT: &str = "devami>";

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
    Error::BinaryFile { file: shown.to_string(), line: line_of(bytes, at) }
}

fn line_of(bytes: &[u8], at: usize) -> usize {
    bytes.get(..at).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count()) + 1
}

/// Why a script, transcript or markdown page does not parse. Lines are 1-based lines of the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// A line of a transcript that is neither an input, a comment nor blank comes before its
    /// first input.
    #[error(
        "line {line}{}: `{}` comes before the first `devami> ` input; only `#` comments and blank lines may come before it",
        block.map(|at| format!(" of the devami block at line {at}")).unwrap_or_default(),
        shorten(text)
    )]
    TextBeforeInput {
        line: usize,
        /// The line of the opening fence, for a markdown block.
        block: Option<usize>,
        text: String,
    },
    /// A devami block holds no input line.
    #[error("devami block at line {block} has no `devami> ` input line")]
    NoInput { block: usize },
    /// A devami block's info string has a word other than `ignore`.
    #[error(
        "devami block at line {line}: unknown attribute `{}`; the only one is `ignore` (shown, not run)",
        shorten(attribute)
    )]
    UnknownAttribute { line: usize, attribute: String },
    /// An HTML comment is never closed and hides the devami blocks after it.
    #[error(
        "the HTML comment opened at line {line} is never closed and hides the devami blocks after it; add `-->` where it ends"
    )]
    UnclosedComment { line: usize },
    /// A code block runs to the end of the page, or a devami block to the end of its list item
    /// or quote, without a closing fence.
    #[error("the code block opened at line {line} is never closed; add a `{fence}` line after it")]
    UnclosedFence {
        line: usize,
        /// The fence that opened it, e.g. ```` ``` ````.
        fence: String,
    },
}

/// A parse error of text that was not read from a file (exit status 2).
impl From<ParseError> for Error {
    fn from(error: ParseError) -> Error {
        Error::TranscriptSyntax(error)
    }
}

/// Parses a script, transcript or markdown page.
pub fn parse(text: &str, kind: Kind) -> Result<Transcript, ParseError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<&str> = text.lines().map(|l| l.strip_suffix('\r').unwrap_or(l)).collect();
    match kind {
        Kind::Markdown => markdown::parse(&lines),
        Kind::Script if lines.iter().any(|l| prompt(l).is_some()) => {
            let numbered: Vec<(usize, &str)> = lines.iter().enumerate().map(|(i, &l)| (i + 1, l)).collect();
            let mut steps = Vec::new();
            parse_block(&numbered, &mut steps, Block { opened_at: None, run: true, prose: String::new() })?;
            Ok(Transcript { steps, epilogue: String::new() })
        }
        Kind::Script => {
            let steps = lines
                .iter()
                .enumerate()
                .map(|(i, l)| (i + 1, l.trim()))
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

/// Parses transcript lines, numbered by their line in the file, appending their steps.
fn parse_block(lines: &[(usize, &str)], steps: &mut Vec<Step>, block: Block) -> Result<(), ParseError> {
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
            return Err(ParseError::TextBeforeInput {
                line: no,
                block: opened_at,
                text: line.trim().to_string(),
            });
        }
    }
    if let Some(step) = current.take() {
        steps.push(finish(step));
    }
    if steps.len() == first {
        return Err(ParseError::NoInput { block: opened_at.unwrap_or(1) });
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

/// What the tests of the format, the matcher, the patterns and the diff share.
#[cfg(test)]
pub(crate) mod testing {
    use super::{Kind, Transcript, check_output, parse};

    /// A text as expected lines.
    pub fn lines(text: &str) -> Vec<String> {
        text.lines().map(String::from).collect()
    }

    /// Whether `actual` matches the expected `text`.
    pub fn ok(expected: &str, actual: &str) -> bool {
        check_output(&lines(expected), actual).is_ok()
    }

    /// Each step's input and expected lines.
    pub fn steps(t: &Transcript) -> Vec<(&str, Option<Vec<&str>>)> {
        t.steps
            .iter()
            .map(|s| (s.input.as_str(), s.expected.as_ref().map(|e| e.iter().map(String::as_str).collect())))
            .collect()
    }

    /// The message of the error that parsing `text` must give.
    pub fn err(text: &str, kind: Kind) -> String {
        match parse(text, kind) {
            Err(e) => e.to_string(),
            Ok(t) => panic!("expected an error, got {t:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{err, lines, ok, steps};
    use super::*;

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

    #[test]
    fn parse_errors_exit_as_usage_errors() {
        let e = parse("status\ndevami> help\n", Kind::Script).unwrap_err();
        assert!(matches!(e, ParseError::TextBeforeInput { line: 1, block: None, .. }), "{e:?}");
        let e = Error::from(e);
        assert!(matches!(e, Error::TranscriptSyntax(_)));
        assert_eq!(e.exit_code(), 2);
    }

    // --- files --------------------------------------------------------------------------------

    #[test]
    fn kind_from_extension() {
        assert_eq!(kind_for_path(Path::new("docs/a.md")), Kind::Markdown);
        assert_eq!(kind_for_path(Path::new("a.MARKDOWN")), Kind::Markdown);
        assert_eq!(kind_for_path(Path::new("a.devami")), Kind::Script);
        assert_eq!(kind_for_path(Path::new("md")), Kind::Script);
    }

    #[test]
    fn binary_bytes_are_found() {
        assert_eq!(binary_at(b"\0"), Some(0));
        assert_eq!(binary_at(b"ab\0c\0\0"), Some(4));
        assert_eq!(binary_at(b"ab\0c"), None);
        // A lone NUL in a line is the line's problem, which the parser names.
        assert_eq!(parse("devami> status\0\nout\n", Kind::Script).unwrap().steps[0].input, "status\0");
        let e = binary_file("junk.devami", b"status\n\x7fELF\x02\x00\x00\x00", 10).to_string();
        assert_eq!(
            e,
            "`junk.devami` looks like a binary file (NUL bytes at line 2); give a script or a markdown file"
        );
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
