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

    /// A name given to `init` breaks the naming rule.
    #[error(
        "invalid blueprint name `{name}`: use only lowercase letters, digits and dashes (`^[a-z0-9-]+$`), e.g. `my-analysis`"
    )]
    InvalidName { name: String },

    /// `init` refuses to overwrite an existing folder.
    #[error("`{}` already exists; choose another name or remove the folder first", path.display())]
    AlreadyExists { path: PathBuf },

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
    #[error("blueprint `{}` is in use by another devami ({holder}); close that shell first, or work on a copy of the folder", dir.display())]
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
    #[error("output of step {step} (`{input}`) differs from the transcript:\n{diff}")]
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
