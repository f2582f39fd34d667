//! The hostile-input corpus in tests/hostile/: each case a clear error, no panic, no state change.
//!
//! Every `*.case` file under `tests/hostile/<category>/` is one hostile or broken input: how to
//! prepare a scratch folder (`setup:`), how to feed the input to devami (`run:`, `arg:`,
//! `stdin:`) and what must happen (`expect-status:`, `expect-error:`, `may-change:`). The format
//! is described in `tests/hostile/README.md`. For every case this runner checks that devami
//! 1. neither panics nor hangs nor dies of a signal (status 101, `panicked at`, a deadline);
//! 2. exits with an expected status and, when it fails, prints one `error: ...` line (followed only
//!    by its `  caused by: ...` chain and warnings) that contains an expected fragment, with no
//!    raw control characters and at most [`MAX_ERROR_LINE`] characters;
//! 3. leaves every file under the scratch folder (the blueprint, `.devami/`, the local backend's
//!    home, everything) byte-identical, except the paths the case names with `may-change:`.
//!
//! Cases of one category run in one `#[test]`, and every failing case is reported at once with
//! its name and what differed. A case marked `xfail:` documents a known bug: it is reported but
//! does not fail the test, and it fails the test once it passes (remove the mark then).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::support::{Scratch, root};

/// The longest `error:` line a case accepts, in characters: a message quotes user text, but a
/// megabyte of it is no longer a clear line.
const MAX_ERROR_LINE: usize = 2000;

/// How many state changes a failing case lists.
const MAX_CHANGES_SHOWN: usize = 12;

/// How long a case may run unless it says otherwise (`timeout:`).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);

/// The categories (folders of tests/hostile/) and the least number of cases each must hold.
const CATEGORIES: [(&str, usize); 7] = [
    ("blueprint", 12),
    ("submit", 10),
    ("command", 12),
    ("state", 8),
    ("devami-dir", 3),
    ("transcript", 5),
    ("names", 5),
];

/// What a case says its input is.
const INPUTS: [&str; 9] = [
    "blueprint",
    "submit-file",
    "command-line",
    "script-line",
    "process-arguments",
    "transcript",
    "state-file",
    "devami-folder",
    "name",
];

#[test]
fn hostile_blueprints() {
    run_category("blueprint");
}

#[test]
fn hostile_submit_files() {
    run_category("submit");
}

#[test]
fn hostile_command_lines() {
    run_category("command");
}

#[test]
fn hostile_state_files() {
    run_category("state");
}

#[test]
fn hostile_devami_folders() {
    run_category("devami-dir");
}

#[test]
fn hostile_transcripts() {
    run_category("transcript");
}

#[test]
fn hostile_names() {
    run_category("names");
}

/// Every case file parses, sits in a known category, and each category has its minimum.
#[test]
fn hostile_corpus_is_complete() {
    let mut problems = Vec::new();
    let mut total = 0;
    let known: BTreeSet<&str> = CATEGORIES.iter().map(|(c, _)| *c).collect();
    for entry in std::fs::read_dir(corpus_dir()).expect("read tests/hostile") {
        let entry = entry.expect("read entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().expect("file type").is_dir() && !known.contains(name.as_str()) {
            problems.push(format!("tests/hostile/{name}/ is not a known category (add it to CATEGORIES)"));
        }
    }
    for (category, minimum) in CATEGORIES {
        let files = case_files(category);
        total += files.len();
        if files.len() < minimum {
            problems.push(format!("{category}: {} cases, at least {minimum} expected", files.len()));
        }
        for path in files {
            if let Err(e) = parse_case(category, &path) {
                problems.push(format!("{}: {e}", path.display()));
            }
        }
    }
    assert!(total >= 50, "the corpus has {total} cases, at least 50 expected");
    assert!(problems.is_empty(), "corpus problems:\n{}", problems.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// The corpus format.

/// One hostile input and what devami must do with it.
#[derive(Debug, Default)]
struct Case {
    /// `category/file-stem`.
    name: String,
    about: String,
    input: String,
    setup: Vec<Setup>,
    args: Vec<OsString>,
    stdin: Option<Vec<u8>>,
    statuses: Vec<i32>,
    /// Fragments of the error message; one of them must appear.
    errors: Vec<String>,
    stream: Stream,
    error_lines: usize,
    trailer: Trailer,
    stdout_contains: Vec<String>,
    stdout_lacks: Vec<String>,
    may_change: Vec<String>,
    timeout: Duration,
    xfail: Option<String>,
    skip_if_root: Option<String>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Stream {
    /// Errors of the session and of the process: `error: ...` on stderr.
    #[default]
    Stderr,
    /// `devami check` findings: `error: PATH: ...` lines on stdout.
    Stdout,
}

/// What may follow the `error:` line on stderr.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Trailer {
    /// Only `  caused by: ...` lines, warnings and the other counted `error:` lines.
    #[default]
    Causes,
    /// Also the usage block of a command-line (clap) error.
    Usage,
    /// Anything (a transcript's diff).
    Any,
}

/// One step preparing the scratch folder.
#[derive(Debug)]
enum Setup {
    /// `devami init NAME`.
    Init(String),
    /// `devami DIR -c status`: the session folder exists afterwards.
    Open(String),
    /// `devami DIR -c launch` then `ls`: a running local instance and a started S3 endpoint.
    Launch(String),
    /// Any devami command line, which must succeed.
    Devami(Vec<OsString>),
    File(String, Vec<u8>),
    Edit(String, Vec<u8>, Vec<u8>),
    Mkdir(String),
    Fifo(String),
    Symlink(String, String),
    Remove(String),
    Chmod(u32, String),
    /// Takes the advisory lock of a file for the duration of the case (as a running devami does).
    HoldLock(String),
}

fn corpus_dir() -> PathBuf {
    root().join("tests/hostile")
}

fn case_files(category: &str) -> Vec<PathBuf> {
    let dir = corpus_dir().join(category);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("read entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "case"))
        .collect();
    files.sort();
    files
}

/// Parses one case file.
fn parse_case(category: &str, path: &Path) -> Result<Case, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let mut case = Case {
        name: format!("{category}/{stem}"),
        error_lines: 1,
        timeout: DEFAULT_TIMEOUT,
        ..Case::default()
    };
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
    let mut seen = BTreeSet::new();
    while let Some((n, line)) = lines.next() {
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let (key, value) = line.split_once(':').ok_or_else(|| format!("line {n}: expected `key: value`"))?;
        let (key, value) = (key.trim(), value.trim());
        let at = |e: String| format!("line {n} (`{key}`): {e}");
        let once = ["about", "input", "stdin", "expect-status", "expect-stream", "error-lines", "trailer"];
        if once.contains(&key) && !seen.insert(key.to_string()) {
            return Err(at("given twice".into()));
        }
        match key {
            "about" => case.about = value.to_string(),
            "input" => {
                if !INPUTS.contains(&value) {
                    return Err(at(format!("unknown input `{value}` (one of {})", INPUTS.join(", "))));
                }
                case.input = value.to_string();
            }
            "setup" => case.setup.push(parse_setup(value, &mut lines).map_err(at)?),
            "run" => case.args.extend(split_words(value).map_err(at)?.into_iter().map(OsString::from)),
            "arg" => case.args.push(OsString::from_vec(parse_expr(value, &mut lines).map_err(at)?)),
            "stdin" => case.stdin = Some(parse_expr(value, &mut lines).map_err(at)?),
            "expect-status" => {
                case.statuses = value
                    .split('|')
                    .map(|s| s.trim().parse::<i32>().map_err(|_| at(format!("`{s}` is not a status"))))
                    .collect::<Result<_, _>>()?;
            }
            "expect-error" => case.errors.push(value.to_string()),
            "expect-stream" => {
                case.stream = match value {
                    "stderr" => Stream::Stderr,
                    "stdout" => Stream::Stdout,
                    _ => return Err(at("expected `stderr` or `stdout`".into())),
                }
            }
            "error-lines" => case.error_lines = value.parse().map_err(|_| at("not a number".into()))?,
            "trailer" => {
                case.trailer = match value {
                    "causes" => Trailer::Causes,
                    "usage" => Trailer::Usage,
                    "any" => Trailer::Any,
                    _ => return Err(at("expected `causes`, `usage` or `any`".into())),
                }
            }
            "stdout-contains" => case.stdout_contains.push(value.to_string()),
            "stdout-lacks" => case.stdout_lacks.push(value.to_string()),
            "may-change" => case.may_change.push(value.to_string()),
            "timeout" => {
                let secs: f64 = value.parse().map_err(|_| at("not a number of seconds".into()))?;
                case.timeout = Duration::from_secs_f64(secs);
            }
            "xfail" => case.xfail = Some(value.to_string()),
            "skip-if-root" => case.skip_if_root = Some(value.to_string()),
            _ => return Err(format!("line {n}: unknown key `{key}`")),
        }
    }
    if case.about.is_empty() {
        return Err("missing `about:`".into());
    }
    if case.input.is_empty() {
        return Err("missing `input:`".into());
    }
    if case.args.is_empty() {
        return Err("missing `run:` (or `arg:`)".into());
    }
    if case.statuses.is_empty() {
        return Err("missing `expect-status:`".into());
    }
    if case.statuses.iter().any(|&s| s != 0) && case.errors.is_empty() {
        return Err("a failing status needs at least one `expect-error:`".into());
    }
    if case.statuses == [0] && !case.errors.is_empty() {
        return Err("`expect-error:` with only status 0 can never be checked".into());
    }
    Ok(case)
}

type Lines<'a> = dyn Iterator<Item = (usize, &'a str)> + 'a;

fn parse_setup<'a>(value: &str, lines: &mut Lines<'a>) -> Result<Setup, String> {
    let (verb, rest) = value.split_once(char::is_whitespace).unwrap_or((value, ""));
    let rest = rest.trim();
    let one = |what: &str| -> Result<String, String> {
        let words = split_words(rest)?;
        match words.as_slice() {
            [w] => Ok(w.clone()),
            _ => Err(format!("`{verb}` takes one {what}")),
        }
    };
    let (first, tail) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let tail = tail.trim();
    Ok(match verb {
        "init" => Setup::Init(one("name")?),
        "open" => Setup::Open(one("folder")?),
        "launch" => Setup::Launch(one("folder")?),
        "devami" => Setup::Devami(split_words(rest)?.into_iter().map(OsString::from).collect()),
        "file" => {
            let expr = tail.strip_prefix('=').ok_or("expected `file PATH = EXPR`")?;
            Setup::File(first.to_string(), parse_expr(expr, lines)?)
        }
        "edit" => {
            let (from, to) = split_arrow(tail).ok_or("expected `edit PATH EXPR => EXPR`")?;
            let from = parse_expr(from, lines)?;
            if from.is_empty() {
                return Err("`edit` replaces a non-empty text".into());
            }
            Setup::Edit(first.to_string(), from, parse_expr(to, lines)?)
        }
        "mkdir" => Setup::Mkdir(one("path")?),
        "fifo" => Setup::Fifo(one("path")?),
        "remove" => Setup::Remove(one("path")?),
        "symlink" => match split_words(rest)?.as_slice() {
            [link, target] => Setup::Symlink(link.clone(), target.clone()),
            _ => return Err("expected `symlink PATH TARGET`".into()),
        },
        "chmod" => {
            let mode =
                u32::from_str_radix(first, 8).map_err(|_| format!("`{first}` is not an octal mode"))?;
            Setup::Chmod(mode, tail.to_string())
        }
        "hold-lock" => Setup::HoldLock(one("path")?),
        _ => return Err(format!("unknown setup `{verb}`")),
    })
}

/// Splits `FROM => TO` at the `=>` that is outside string literals.
fn split_arrow(s: &str) -> Option<(&str, &str)> {
    let bytes = s.as_bytes();
    let mut in_string = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if in_string => i += 1,
            b'"' => in_string = !in_string,
            b'=' if !in_string && bytes.get(i + 1) == Some(&b'>') => return Some((&s[..i], &s[i + 2..])),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Splits a line into words as a POSIX shell would for the simple cases: blanks separate words,
/// `'...'` is literal, `"..."` allows `\"` and `\\`, and a backslash outside quotes escapes the
/// next character.
fn split_words(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("unterminated `'` in the case file".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err("unterminated `\"` in the case file".into()),
                        },
                        Some(c) => word.push(c),
                        None => return Err("unterminated `\"` in the case file".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                word.push(chars.next().ok_or("a `\\` ends the line")?);
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// Parses a bytes expression: terms joined by `+`, each a `"string"` (escapes `\\ \" \n \r \t
/// \0 \e \xNN \u{HEX}`) or a here-document `<<END` (the following lines up to a line `END`,
/// each with its newline), optionally repeated with `* COUNT` (digits, `_` allowed).
fn parse_expr<'a>(src: &str, lines: &mut Lines<'a>) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut rest = src.trim_start();
    let mut heredoc_used = false;
    loop {
        let mut term = Vec::new();
        if let Some(after) = rest.strip_prefix('"') {
            let (bytes, tail) = parse_string(after)?;
            term = bytes;
            rest = tail;
        } else if let Some(after) = rest.strip_prefix("<<") {
            if heredoc_used {
                return Err("one here-document per line".into());
            }
            heredoc_used = true;
            let end: String = after.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if end.is_empty() {
                return Err("`<<` needs a terminator name".into());
            }
            rest = &after[end.len()..];
            loop {
                let (_, line) =
                    lines.next().ok_or_else(|| format!("here-document `{end}` is never closed"))?;
                if line == end {
                    break;
                }
                term.extend_from_slice(line.as_bytes());
                term.push(b'\n');
            }
        } else {
            return Err(format!(
                "expected a `\"string\"` or `<<END`, found `{}`",
                rest.chars().take(20).collect::<String>()
            ));
        }
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix('*') {
            let after = after.trim_start();
            let digits: String = after.chars().take_while(|c| c.is_ascii_digit() || *c == '_').collect();
            let count: usize =
                digits.replace('_', "").parse().map_err(|_| format!("`*` needs a count, found `{after}`"))?;
            rest = after[digits.len()..].trim_start();
            out.extend(term.repeat(count));
        } else {
            out.extend(term);
        }
        match rest.strip_prefix('+') {
            Some(after) => rest = after.trim_start(),
            None if rest.is_empty() => return Ok(out),
            None => return Err(format!("expected `+` or the end of the line, found `{rest}`")),
        }
    }
}

fn parse_string(s: &str) -> Result<(Vec<u8>, &str), String> {
    let mut out = Vec::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, &s[i + 1..])),
            '\\' => {
                let (_, e) = chars.next().ok_or("unterminated string")?;
                match e {
                    '\\' => out.push(b'\\'),
                    '"' => out.push(b'"'),
                    'n' => out.push(b'\n'),
                    'r' => out.push(b'\r'),
                    't' => out.push(b'\t'),
                    '0' => out.push(0),
                    'e' => out.push(0x1b),
                    'x' => {
                        let hex: String = (0..2).filter_map(|_| chars.next().map(|(_, c)| c)).collect();
                        out.push(u8::from_str_radix(&hex, 16).map_err(|_| format!("bad `\\x{hex}`"))?);
                    }
                    'u' => {
                        if chars.next().map(|(_, c)| c) != Some('{') {
                            return Err("expected `\\u{HEX}`".into());
                        }
                        let hex: String = chars.by_ref().map(|(_, c)| c).take_while(|&c| c != '}').collect();
                        let ch = u32::from_str_radix(&hex, 16)
                            .ok()
                            .and_then(char::from_u32)
                            .ok_or_else(|| format!("bad `\\u{{{hex}}}`"))?;
                        out.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes());
                    }
                    other => return Err(format!("unknown escape `\\{other}`")),
                }
            }
            c => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
    Err("unterminated string".into())
}

// ---------------------------------------------------------------------------------------------
// Running a category.

enum Verdict {
    Pass,
    Fail(Vec<String>),
    Skip(String),
}

fn run_category(category: &str) {
    let started = Instant::now();
    let mut failures = Vec::new();
    let mut summary = Vec::new();
    for path in case_files(category) {
        let case = match parse_case(category, &path) {
            Ok(case) => case,
            Err(e) => {
                failures.push(format!("{}: the case file is malformed: {e}", path.display()));
                continue;
            }
        };
        let t = Instant::now();
        let verdict = run_case(&case);
        let took = t.elapsed().as_secs_f64();
        match (verdict, &case.xfail) {
            (Verdict::Pass, None) => summary.push(format!("ok     {} ({took:.2}s)", case.name)),
            (Verdict::Skip(why), _) => summary.push(format!("skip   {}: {why}", case.name)),
            (Verdict::Pass, Some(bug)) => failures.push(format!(
                "{} ({}) passes now although marked `xfail: {bug}`; remove the `xfail:` line",
                case.name, case.about
            )),
            (Verdict::Fail(problems), Some(bug)) => {
                summary.push(format!("xfail  {} ({took:.2}s): {bug}", case.name));
                for p in problems {
                    summary.push(format!("         {}", one_line(&p, 400)));
                }
            }
            (Verdict::Fail(problems), None) => {
                let mut msg = format!("{} ({}; input: {}):", case.name, case.about, case.input);
                for p in problems {
                    let _ = write!(msg, "\n    - {}", one_line(&p, 2000));
                }
                failures.push(msg);
            }
        }
    }
    eprintln!("hostile/{category}: {:.1}s\n{}", started.elapsed().as_secs_f64(), summary.join("\n"));
    assert!(
        failures.is_empty(),
        "{} hostile case(s) failed in tests/hostile/{category}/:\n\n{}\n",
        failures.len(),
        failures.join("\n\n")
    );
}

/// What one run of devami did.
struct Ran {
    status: Option<ExitStatus>,
    stdout: String,
    stderr: String,
    hung: bool,
}

fn run_case(case: &Case) -> Verdict {
    if let Some(why) = &case.skip_if_root
        && unsafe { libc::geteuid() } == 0
    {
        return Verdict::Skip(format!("running as root: {why}"));
    }
    let s = Scratch::new();
    let mut locks = Vec::new();
    for step in &case.setup {
        if let Err(e) = prepare(&s, step, &mut locks) {
            stop_endpoint(&s);
            return Verdict::Fail(vec![format!("setup `{step:?}` failed: {e}")]);
        }
    }
    let before = snapshot(s.path());
    let ran = spawn(&s, &case.args, case.stdin.as_deref(), case.timeout);
    let after = snapshot(s.path());
    drop(locks);
    stop_endpoint(&s);
    let mut problems = judge(case, &ran);
    let mut changes = compare(&before, &after, &case.may_change);
    // The blueprint's own files first: the backend home's churn is rarely the point.
    changes.sort_by_key(|c| c.contains("`.devami-home"));
    if changes.len() > MAX_CHANGES_SHOWN {
        let more = changes.len() - MAX_CHANGES_SHOWN;
        changes.truncate(MAX_CHANGES_SHOWN);
        changes.push(format!("... and {more} more state changes"));
    }
    problems.extend(changes);
    if problems.is_empty() { Verdict::Pass } else { Verdict::Fail(problems) }
}

/// Runs one setup step in the scratch folder.
fn prepare(s: &Scratch, step: &Setup, locks: &mut Vec<std::fs::File>) -> Result<(), String> {
    let p = |rel: &str| s.path().join(rel);
    let io = |what: &str, e: std::io::Error| format!("{what}: {e}");
    let devami = |args: Vec<OsString>| -> Result<(), String> {
        let ran = spawn(s, &args, None, DEFAULT_TIMEOUT);
        match ran.status {
            Some(st) if st.success() => Ok(()),
            _ => Err(format!("devami {args:?} failed: {}{}", ran.stdout, ran.stderr)),
        }
    };
    let words = |w: &[&str]| w.iter().map(OsString::from).collect::<Vec<_>>();
    match step {
        Setup::Init(name) => devami(words(&["init", name])),
        Setup::Open(dir) => devami(words(&[dir, "-c", "status"])),
        Setup::Launch(dir) => {
            devami(words(&[dir, "-c", "launch"]))?;
            devami(words(&[dir, "-c", "ls"]))
        }
        Setup::Devami(args) => devami(args.clone()),
        Setup::File(rel, bytes) => {
            if let Some(parent) = p(rel).parent() {
                std::fs::create_dir_all(parent).map_err(|e| io("create the parent", e))?;
            }
            std::fs::write(p(rel), bytes).map_err(|e| io("write", e))
        }
        Setup::Edit(rel, from, to) => {
            let old = std::fs::read(p(rel)).map_err(|e| io("read", e))?;
            let new = replace_all(&old, from, to);
            if new == old {
                return Err(format!("`{}` does not occur in {rel}", String::from_utf8_lossy(from)));
            }
            std::fs::write(p(rel), new).map_err(|e| io("write", e))
        }
        Setup::Mkdir(rel) => std::fs::create_dir_all(p(rel)).map_err(|e| io("mkdir", e)),
        Setup::Fifo(rel) => {
            let c = std::ffi::CString::new(p(rel).as_os_str().as_bytes()).map_err(|e| e.to_string())?;
            // SAFETY: a valid NUL-terminated path.
            match unsafe { libc::mkfifo(c.as_ptr(), 0o644) } {
                0 => Ok(()),
                _ => Err(io("mkfifo", std::io::Error::last_os_error())),
            }
        }
        Setup::Symlink(link, target) => {
            std::os::unix::fs::symlink(target, p(link)).map_err(|e| io("symlink", e))
        }
        Setup::Remove(rel) => {
            let path = p(rel);
            match std::fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => std::fs::remove_dir_all(&path).map_err(|e| io("remove", e)),
                Ok(_) => std::fs::remove_file(&path).map_err(|e| io("remove", e)),
                Err(e) => Err(io("remove", e)),
            }
        }
        Setup::Chmod(mode, rel) => std::fs::set_permissions(p(rel), std::fs::Permissions::from_mode(*mode))
            .map_err(|e| io("chmod", e)),
        Setup::HoldLock(rel) => {
            let f =
                std::fs::OpenOptions::new().read(true).write(true).open(p(rel)).map_err(|e| io("open", e))?;
            f.try_lock().map_err(|e| format!("lock: {e}"))?;
            locks.push(f);
            Ok(())
        }
    }
}

fn replace_all(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

/// Runs devami in the scratch folder with a deadline; a run past it is killed and marked hung.
fn spawn(s: &Scratch, args: &[OsString], stdin: Option<&[u8]>, timeout: Duration) -> Ran {
    let mut cmd = s.cmd(&[]);
    cmd.args(args)
        .env_remove("DEVAMI_ON_EXIT")
        .env_remove("DEVAMI_WAIT_MINUTES")
        .env_remove("DEVAMI_CLOCK_OFFSET")
        .env_remove("DEVAMI_PRICES")
        .env("RUST_BACKTRACE", "0")
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn devami");
    if let (Some(mut pipe), Some(data)) = (child.stdin.take(), stdin) {
        let data = data.to_vec();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&data);
        });
    }
    let collect = |mut pipe: Box<dyn Read + Send>| {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            let _ = tx.send(buf);
        });
        rx
    };
    let out = collect(Box::new(child.stdout.take().expect("stdout")));
    let err = collect(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + timeout;
    let mut hung = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                hung = true;
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Err(_) => break None,
        }
    };
    let text = |rx: mpsc::Receiver<Vec<u8>>| {
        String::from_utf8_lossy(&rx.recv_timeout(Duration::from_secs(10)).unwrap_or_default()).into_owned()
    };
    Ran { status, stdout: text(out), stderr: text(err), hung }
}

/// Stops the S3 endpoint a case started in its own home (a detached daemon that would otherwise
/// idle for 30 minutes), after checking that the pid is that daemon.
fn stop_endpoint(s: &Scratch) {
    let home = s.path().join(".devami-home");
    let Ok(text) = std::fs::read_to_string(home.join("run/s3.json")) else { return };
    let Some(pid) = serde_json::from_str::<serde_json::Value>(&text).ok().and_then(|v| v["pid"].as_i64())
    else {
        return;
    };
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return };
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    if cmdline.contains("__s3d") && cmdline.contains(&*home.to_string_lossy()) {
        // SAFETY: plain kill(2) of the endpoint this case started.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    }
}

// ---------------------------------------------------------------------------------------------
// Judging a run.

fn judge(case: &Case, ran: &Ran) -> Vec<String> {
    let mut problems = Vec::new();
    let excerpt =
        || format!("stdout: {}\n      stderr: {}", one_line(&ran.stdout, 600), one_line(&ran.stderr, 1200));
    if ran.hung {
        problems.push(format!(
            "hung: still running after {:.0}s, killed; {}",
            case.timeout.as_secs_f64(),
            excerpt()
        ));
        return problems;
    }
    let code = ran.status.and_then(|s| s.code());
    if ran.stderr.contains("panicked at") || ran.stdout.contains("panicked at") || code == Some(101) {
        let at = ran.stderr.lines().find(|l| l.contains("panicked at")).unwrap_or("(no message)");
        let why = ran.stderr.lines().skip_while(|l| !l.contains("panicked at")).nth(1).unwrap_or("");
        problems.push(format!("PANIC (exit status {code:?}): {at} {why}"));
        return problems;
    }
    let Some(code) = code else {
        use std::os::unix::process::ExitStatusExt;
        let signal = ran.status.and_then(|s| s.signal());
        problems.push(format!("killed by signal {signal:?}; {}", excerpt()));
        return problems;
    };
    if !case.statuses.contains(&code) {
        problems.push(format!("exit status {code}, expected {:?}; {}", case.statuses, excerpt()));
    }
    for want in &case.stdout_contains {
        if !ran.stdout.contains(want.as_str()) {
            problems.push(format!("stdout lacks `{want}`; stdout: {}", one_line(&ran.stdout, 600)));
        }
    }
    for unwanted in &case.stdout_lacks {
        if ran.stdout.contains(unwanted.as_str()) {
            problems.push(format!("stdout contains `{unwanted}`; stdout: {}", one_line(&ran.stdout, 600)));
        }
    }
    let stderr_errors: Vec<&str> = ran.stderr.lines().filter(|l| l.starts_with("error:")).collect();
    if code == 0 {
        if let Some(line) = stderr_errors.first() {
            problems.push(format!("status 0 but stderr has `{}`", one_line(line, 300)));
        }
        return problems;
    }
    match case.stream {
        Stream::Stderr => problems.extend(judge_stderr(case, &ran.stderr)),
        Stream::Stdout => {
            let lines: Vec<&str> = ran.stdout.lines().filter(|l| l.starts_with("error:")).collect();
            if lines.is_empty() {
                problems.push(format!("no `error:` line on stdout; {}", excerpt()));
            } else if !lines.iter().any(|l| case.errors.iter().any(|f| l.contains(f.as_str()))) {
                problems.push(format!(
                    "no `error:` line on stdout contains {}; they are:\n      {}",
                    fragments(case),
                    lines.iter().map(|l| one_line(l, 400)).collect::<Vec<_>>().join("\n      ")
                ));
            }
            problems.extend(lines.iter().filter_map(|l| line_problem(l)));
        }
    }
    problems
}

/// The `error:` message on stderr: how many, what follows, the fragment, its shape.
fn judge_stderr(case: &Case, stderr: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let lines: Vec<&str> = stderr.lines().collect();
    let Some(first) = lines.iter().position(|l| l.starts_with("error:")) else {
        return vec![format!("no `error:` line on stderr; stderr: {}", one_line(stderr, 1200))];
    };
    let count = lines.iter().filter(|l| l.starts_with("error:")).count();
    if count != case.error_lines {
        problems.push(format!(
            "{count} `error:` lines on stderr, expected {}; stderr: {}",
            case.error_lines,
            one_line(stderr, 1200)
        ));
    }
    let causes: Vec<&str> =
        lines[first + 1..].iter().take_while(|l| l.starts_with("  caused by: ")).copied().collect();
    let message: Vec<&str> = std::iter::once(lines[first]).chain(causes.iter().copied()).collect();
    let joined = message.join("\n");
    if !case.errors.iter().any(|f| joined.contains(f.as_str())) {
        problems.push(format!(
            "the error does not contain {}; it is: {}",
            fragments(case),
            one_line(&joined, 1200)
        ));
    }
    for line in message.iter().chain(lines[first + 1..].iter().filter(|l| l.starts_with("error:"))) {
        problems.extend(line_problem(line));
    }
    if case.trailer != Trailer::Any {
        // Whether the previous line was an error or one of its causes (a cause may follow it).
        let mut in_chain = true;
        for line in &lines[first + 1..] {
            let ok = if line.starts_with("  caused by: ") {
                in_chain
            } else if line.starts_with("error:") {
                in_chain = true;
                true
            } else {
                in_chain = false;
                line.starts_with("warning: ")
                    || (case.trailer == Trailer::Usage
                        && (line.is_empty()
                            || line.starts_with("Usage:")
                            || line.starts_with("  ")
                            || line.starts_with("For more information")))
            };
            if !ok {
                problems.push(format!(
                    "stderr has `{}` after the error (only `  caused by:` lines and warnings may follow)",
                    one_line(line, 300)
                ));
                break;
            }
        }
    }
    problems
}

/// What is wrong with the shape of one error line, if anything.
fn line_problem(line: &str) -> Option<String> {
    let chars = line.chars().count();
    if chars > MAX_ERROR_LINE {
        return Some(format!(
            "an error line has {chars} characters (at most {MAX_ERROR_LINE}: a message must quote user text shortened): {}",
            one_line(line, 200)
        ));
    }
    if let Some(c) = line.chars().find(|&c| c.is_control() && c != '\t') {
        return Some(format!(
            "an error line holds the raw control character {:?} (it must be escaped): {}",
            c,
            one_line(line, 300)
        ));
    }
    None
}

fn fragments(case: &Case) -> String {
    case.errors.iter().map(|f| format!("`{f}`")).collect::<Vec<_>>().join(" or ")
}

/// `s` on one line, control characters escaped, cut to `max` characters.
fn one_line(s: &str, max: usize) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == max {
            let _ = write!(out, "… ({} more characters)", s.chars().count() - max);
            break;
        }
        match c {
            '\n' => out.push_str("⏎ "),
            c if c.is_control() => out.extend(c.escape_default()),
            c => out.push(c),
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Snapshots of the scratch folder.

/// One entry of the scratch folder, by kind, permissions and content.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir(u32),
    File(u32, Vec<u8>),
    Link(PathBuf),
    Special(String, u32),
    Unreadable(String),
}

impl Node {
    fn describe(&self) -> String {
        match self {
            Node::Dir(mode) => format!("folder (mode {mode:o})"),
            Node::File(mode, bytes) => format!("file of {} bytes (mode {mode:o})", bytes.len()),
            Node::Link(target) => format!("symlink to `{}`", target.display()),
            Node::Special(kind, mode) => format!("{kind} (mode {mode:o})"),
            Node::Unreadable(e) => format!("unreadable ({e})"),
        }
    }
}

/// Every path under `root` (relative, `/`-separated) with what it is. Symlinks are not
/// followed and FIFOs are never opened.
fn snapshot(root: &Path) -> BTreeMap<String, Node> {
    let mut map = BTreeMap::new();
    walk(root, "", &mut map);
    map
}

fn walk(dir: &Path, prefix: &str, map: &mut BTreeMap<String, Node>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            map.insert(format!("{prefix}(listing)"), Node::Unreadable(e.kind().to_string()));
            return;
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let rel = format!("{prefix}{}", entry.file_name().to_string_lossy());
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            map.insert(rel, Node::Unreadable("vanished".into()));
            continue;
        };
        let mode = meta.permissions().mode() & 0o7777;
        let ft = meta.file_type();
        let node = if ft.is_symlink() {
            Node::Link(std::fs::read_link(&path).unwrap_or_default())
        } else if ft.is_dir() {
            walk(&path, &format!("{rel}/"), map);
            Node::Dir(mode)
        } else if ft.is_file() {
            match std::fs::read(&path) {
                Ok(bytes) => Node::File(mode, bytes),
                Err(e) => Node::Unreadable(e.kind().to_string()),
            }
        } else {
            use std::os::unix::fs::FileTypeExt;
            let kind = if ft.is_fifo() {
                "fifo"
            } else if ft.is_socket() {
                "socket"
            } else {
                "device"
            };
            Node::Special(kind.into(), mode)
        };
        map.insert(rel, node);
    }
}

/// The differences not covered by `may_change`, one line each.
fn compare(
    before: &BTreeMap<String, Node>,
    after: &BTreeMap<String, Node>,
    may_change: &[String],
) -> Vec<String> {
    let paths: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    let mut problems = Vec::new();
    for path in paths {
        let (b, a) = (before.get(path), after.get(path));
        if b == a || allowed(path, b, a, may_change) {
            continue;
        }
        problems.push(match (b, a) {
            (None, Some(a)) => format!("state change: `{path}` was created ({})", a.describe()),
            (Some(b), None) => format!("state change: `{path}` was removed (was a {})", b.describe()),
            (Some(Node::File(_, old)), Some(Node::File(_, new))) if old != new => {
                format!("state change: `{path}` was rewritten: {}", first_difference(old, new))
            }
            (Some(b), Some(a)) => {
                format!("state change: `{path}` was a {}, is a {}", b.describe(), a.describe())
            }
            (None, None) => continue,
        });
    }
    problems
}

/// Whether a difference at `path` is one the case names: a glob (`*` within a name, `**` any
/// number of folders), or `GLOB#KEY` for a JSON file that may differ only in the values of the
/// members named KEY.
fn allowed(path: &str, before: Option<&Node>, after: Option<&Node>, may_change: &[String]) -> bool {
    may_change.iter().any(|pattern| match pattern.split_once('#') {
        None => glob(pattern, path),
        Some((pattern, key)) => {
            glob(pattern, path)
                && match (before, after) {
                    (Some(Node::File(_, b)), Some(Node::File(_, a))) => {
                        let strip = |bytes: &[u8]| {
                            serde_json::from_slice::<serde_json::Value>(bytes).ok().map(|mut v| {
                                strip_key(&mut v, key);
                                v
                            })
                        };
                        matches!((strip(b), strip(a)), (Some(x), Some(y)) if x == y)
                    }
                    _ => false,
                }
        }
    })
}

fn strip_key(v: &mut serde_json::Value, key: &str) {
    match v {
        serde_json::Value::Object(map) => {
            map.remove(key);
            map.values_mut().for_each(|v| strip_key(v, key));
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|v| strip_key(v, key)),
        _ => {}
    }
}

fn glob(pattern: &str, path: &str) -> bool {
    fn segs(p: &[&str], s: &[&str]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(&"**"), _) => segs(&p[1..], s) || (!s.is_empty() && segs(p, &s[1..])),
            (Some(pp), Some(ss)) => name(pp.as_bytes(), ss.as_bytes()) && segs(&p[1..], &s[1..]),
            _ => false,
        }
    }
    fn name(p: &[u8], s: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(b'*'), _) => name(&p[1..], s) || (!s.is_empty() && name(p, &s[1..])),
            (Some(a), Some(b)) => a == b && name(&p[1..], &s[1..]),
            _ => false,
        }
    }
    let p: Vec<&str> = pattern.split('/').collect();
    let s: Vec<&str> = path.split('/').collect();
    segs(&p, &s)
}

/// Where two contents first differ, with a little of each side.
fn first_difference(old: &[u8], new: &[u8]) -> String {
    let at = old.iter().zip(new).position(|(a, b)| a != b).unwrap_or(old.len().min(new.len()));
    let start = at.saturating_sub(30);
    let show =
        |b: &[u8]| one_line(&String::from_utf8_lossy(&b[start.min(b.len())..(at + 50).min(b.len())]), 100);
    format!(
        "{} bytes, then {} bytes; from byte {at}: was `{}`, now `{}`",
        old.len(),
        new.len(),
        show(old),
        show(new)
    )
}
