//! The one error type of the crate.
//!
//! Every failure a user can meet is a variant named after what went wrong for them, carrying the
//! context needed to act on it (the file, the JSON path, the command, the next step). Messages are
//! lowercase, name things in backticks, end without a period and suggest the next command where
//! there is one. Errors are shown in exactly one place (`Console::error`), as `error: ...`
//! followed by one `caused by: ...` line per source. `Error::exit_code` maps each variant to the
//! documented process exit status.

use std::io;
use std::path::PathBuf;

use crate::backend::BackendError;

/// Result with the crate's error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in devami.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The folder has no `stack_config_template.json`.
    #[error("no blueprint in `{}`: `stack_config_template.json` is missing; create one with `devami init NAME`", dir.display())]
    BlueprintMissing { dir: PathBuf },

    /// The blueprint is not valid JSON.
    #[error("`{}` is not valid JSON: {message} at line {line}, column {column}; fix the syntax and try again", path.display())]
    BlueprintSyntax { path: PathBuf, line: usize, column: usize, message: String },

    /// A key of the blueprint is missing, has the wrong type or an unusable value.
    #[error("`{}`: `{json_path}` {problem}; {fix}", path.display())]
    BlueprintKey { path: PathBuf, json_path: String, problem: String, fix: String },

    /// A file could not be read, written or created.
    #[error("could not {action} `{}`", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A name given to `init` breaks the naming rule; `rule` says which part of it.
    #[error("invalid blueprint name {}: {rule}, e.g. `my-analysis`", shown(name))]
    InvalidName { name: String, rule: String },

    /// `init` refuses to overwrite an existing folder.
    #[error("`{}` already exists; choose another name or remove the folder first", path.display())]
    AlreadyExists { path: PathBuf },

    /// A blueprint save found the file changed on disk since it was read, and wrote nothing.
    #[error("`{}` changed on disk since devami read it, so nothing was written; reopen the blueprint to pick up the changes and try again", path.display())]
    BlueprintChangedOnDisk { path: PathBuf },

    /// A submit file does not hold a JSON object.
    #[error("submit file `{}` must hold a JSON object with `dataname`, `configname` and `timestamp`", path.display())]
    SubmitNotAnObject { path: PathBuf },

    /// A submit file lacks a field the job manager reads.
    #[error("submit file `{}` does not contain field `{field}`; add `\"{field}\": ...` (see test_resources/exampledevsubmit.json)", path.display())]
    SubmitFieldMissing { path: PathBuf, field: &'static str },

    /// A submit file's field holds a value no job can use.
    #[error("submit file `{}`: `{field}` {problem}", path.display())]
    SubmitFieldInvalid { path: PathBuf, field: &'static str, problem: crate::blueprint::submit::FieldProblem },

    /// The blueprint's COMMAND cannot be filled with a job's values as the job manager would, or
    /// not safely.
    #[error("the blueprint's COMMAND cannot be filled: {0}")]
    CommandNotFillable(crate::blueprint::submit::FillProblem),

    /// A dataset key is not under a group's `inputs/` folder, where NeuroCAAS finds its group.
    #[error(
        "dataset `{key}` is not under a group's `inputs/` folder (like `mygroup/inputs/data.zip`); NeuroCAAS finds the group from that path"
    )]
    DatasetOutsideGroup { key: String },

    /// An `s3://` name of a submit file points outside the analysis bucket.
    #[error(
        "{} is outside the analysis bucket `{bucket}`; development jobs read their data and config from it (give the key, like `GROUP/inputs/FILE`)",
        shown(name)
    )]
    OutsideBucket { name: String, bucket: String },

    /// A command line could not be understood (bad literal, unknown flag, missing argument...).
    #[error("{message}")]
    Usage { message: String },

    /// The command name is unknown.
    #[error("unknown command `{name}`{}; type `help` for the list", suggestion.as_ref().map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default())]
    UnknownCommand { name: String, suggestion: Option<String> },

    /// The command needs a blueprint and the session has none.
    #[error(
        "no blueprint is open; start devami with a blueprint folder (`devami DIR`) or type `devami = NeuroCaaSAMI(\"DIR\")`"
    )]
    NoBlueprint,

    /// The command needs a backend that this build cannot provide yet.
    #[error(
        "the `{backend}` backend is not available in this build, so `{command}` cannot run; blueprint, session and script commands still work"
    )]
    NoBackend { backend: String, command: String },

    /// Another devami process holds the blueprint's session lock.
    #[error("blueprint `{}` is in use by another devami ({}); close that shell first, or work on a copy of the folder", dir.display(), shown_raw(holder))]
    Locked { dir: PathBuf, holder: String },

    /// A session state file exists but cannot be read back.
    #[error("session state `{}` is damaged: {message}; move it aside to start a fresh session (the instances it lists keep running)", path.display())]
    StateCorrupt { path: PathBuf, message: String },

    /// A command needs a confirmation and there is nobody to ask.
    #[error(
        "`{command}` needs confirmation ({question}) and input is not a terminal; rerun with `--yes` to confirm"
    )]
    ConfirmationRequired { command: String, question: String },

    /// Ctrl-C cancelled the running command.
    #[error("interrupted")]
    Interrupted,

    /// `devami check` found errors.
    #[error("{errors} blueprint error(s) found")]
    CheckFailed { errors: usize },

    /// A transcript's output differed from what it expects (tests and `run --check`).
    #[error("output of step {step} ({}) differs from the transcript:\n{diff}", shown(input))]
    TranscriptMismatch { step: usize, input: String, diff: String },

    /// A backend call failed.
    #[error("{op} failed")]
    Backend {
        op: &'static str,
        #[source]
        source: BackendError,
    },

    /// A command that cannot run in the session's current state, with the reason.
    #[error("{0}")]
    Refused(String),

    /// A wait passed its deadline; the operation goes on and stays tracked.
    #[error("{0}")]
    GaveUp(String),

    /// The local backend's own machinery (its container engine, its home) failed.
    #[error(transparent)]
    Local(#[from] crate::backend::local::error::LocalError),
}

impl Error {
    /// The process exit status for this error (see docs/backends-and-configuration.md, "Exit statuses").
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage { .. } | Error::UnknownCommand { .. } => 2,
            Error::Locked { .. } => 3,
            Error::TranscriptMismatch { .. } => 4,
            Error::Interrupted => 130,
            _ => 1,
        }
    }

    /// Shorthand for a usage error.
    pub fn usage(message: impl Into<String>) -> Error {
        Error::Usage { message: message.into() }
    }

    /// Shorthand for an I/O error with its action and path.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Io { action, path: path.into(), source }
    }
}

/// How many characters of a user's text a message quotes.
pub const SHOWN_CHARS: usize = 60;

/// Whether a character must not reach a terminal as it is: control characters (escape sequences
/// start with one) and the bidirectional overrides that reorder what a line seems to say.
pub fn is_unsafe_char(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Pushes `c` onto `out`, escaped (`\u{1b}`, `\n`, `\u{0}`) when it is [unsafe](is_unsafe_char).
pub fn push_escaped(out: &mut String, c: char) {
    if is_unsafe_char(c) {
        out.extend(c.escape_default());
    } else {
        out.push(c);
    }
}

/// `s` with unsafe characters escaped, cut once the result holds `max` characters; with the
/// number of characters of `s` left out.
fn escape_cut(s: &str, max: usize) -> (String, usize) {
    let mut out = String::new();
    let mut shown = 0;
    let mut chars = s.chars();
    for c in chars.by_ref() {
        if shown >= max {
            return (out, 1 + chars.count());
        }
        let before = out.len();
        push_escaped(&mut out, c);
        shown += out.get(before..).map_or(0, |p| p.chars().count());
    }
    (out, 0)
}

fn more_characters(n: usize) -> String {
    format!("({n} more character{})", if n == 1 { "" } else { "s" })
}

/// User text for a message, without quotes: unsafe characters escaped, cut at [`SHOWN_CHARS`]
/// characters with `…`. For text inside a message's own backticks; see [`shown`].
pub fn shown_raw(s: &str) -> String {
    let (mut out, more) = escape_cut(s, SHOWN_CHARS);
    if more > 0 {
        out.push('…');
    }
    out
}

/// User text for a message, in backticks: unsafe characters escaped, and cut at [`SHOWN_CHARS`]
/// characters saying how many were left out: `` `xxx…` (1048516 more characters) ``.
pub fn shown(s: &str) -> String {
    match escape_cut(s, SHOWN_CHARS) {
        (out, 0) => format!("`{out}`"),
        (out, more) => format!("`{out}…` {}", more_characters(more)),
    }
}

/// Text that may hold user text somewhere inside (a library's message, a line of a file):
/// unsafe characters escaped, cut at `max` characters saying how many were left out.
pub fn clipped(s: &str, max: usize) -> String {
    match escape_cut(s, max) {
        (out, 0) => out,
        (out, more) => format!("{out}… {}", more_characters(more)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_text_is_escaped_and_cut() {
        assert_eq!(shown("status"), "`status`");
        assert_eq!(shown(""), "``");
        assert_eq!(shown("a\u{1b}[2J\0b\u{202e}"), "`a\\u{1b}[2J\\u{0}b\\u{202e}`");
        let long = "x".repeat(SHOWN_CHARS + 1000);
        assert_eq!(shown(&long), format!("`{}…` (1000 more characters)", "x".repeat(SHOWN_CHARS)));
        assert_eq!(shown_raw(&long), format!("{}…", "x".repeat(SHOWN_CHARS)));
        assert_eq!(
            shown(&"é".repeat(SHOWN_CHARS + 1)),
            format!("`{}…` (1 more character)", "é".repeat(SHOWN_CHARS))
        );
        assert_eq!(shown(&"y".repeat(SHOWN_CHARS)), format!("`{}`", "y".repeat(SHOWN_CHARS)));
        assert_eq!(clipped("abc\ndef", 5), "abc\\n… (3 more characters)");
        assert_eq!(clipped("abc", 3), "abc");
    }

    #[test]
    fn messages_quote_user_text_safely() {
        let err = Error::InvalidName { name: "\u{1b}]0;x\u{7}".into(), rule: "r".into() };
        assert_eq!(err.to_string(), "invalid blueprint name `\\u{1b}]0;x\\u{7}`: r, e.g. `my-analysis`");
        let err = Error::Locked { dir: "d".into(), holder: format!("pid 1\u{1b}[2J{}", "z".repeat(100_000)) };
        let msg = err.to_string();
        assert!(msg.len() < 300 && !msg.contains('\u{1b}'), "{msg}");
        let err = Error::TranscriptMismatch { step: 1, input: "status\0".into(), diff: "-a\n+b".into() };
        assert_eq!(err.to_string(), "output of step 1 (`status\\u{0}`) differs from the transcript:\n-a\n+b");
    }
}
