//! The one error type of the crate.
//!
//! Every failure a user can meet is a variant named after what went wrong, carrying the context
//! needed to act on it (ids, typed states, paths, the command, the next step); its message is its
//! `#[error(...)]` and nowhere else. Messages are shown in one place (`Console::error`): `error: ...`
//! then one `caused by: ...` line per source. [`Error::exit_code`] maps variants to exit statuses.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::backend::{BackendError, BackendKind, ImageState, InstanceState, JobState};

/// Result with the crate's error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in devami.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // --- Blueprints and files ---
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

    /// `devami check` found errors.
    #[error("{errors} blueprint error(s) found")]
    CheckFailed { errors: usize },

    /// A transcript's output differed from what it expects (tests and `run --check`).
    #[error("output of step {step} ({}) differs from the transcript:\n{diff}", shown(input))]
    TranscriptMismatch { step: usize, input: String, diff: String },

    // --- Command lines and argument values (exit status 2) ---
    /// A line could not be understood (bad literal, unknown flag, missing argument...): the parser's.
    #[error("{message}")]
    Usage { message: String },

    /// The command name is unknown.
    #[error("unknown command `{name}`{}; type `help` for the list", suggestion.as_ref().map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default())]
    UnknownCommand { name: String, suggestion: Option<String> },

    /// A call names an object other than the one the session bound (`x.get_ip()`).
    #[error("`{name}` is not defined; this session's object is `{object}` (e.g. `{object}.{command}()`)")]
    UnknownObject { name: String, object: String, command: &'static str },

    /// An argument's value is outside what the command accepts; `argument` as the message names it.
    #[error("{command}: {argument} must be {expected}, got {got}")]
    BadArgument { command: &'static str, argument: &'static str, expected: &'static str, got: String },

    /// `create_devami` was given a name AMIs cannot have.
    #[error(
        "create_devami: invalid image name {}: use 3 to 128 letters, digits and ( ) [ ] . / - ' @ _ (e.g. `my-analysis-v1`)",
        shown(name)
    )]
    InvalidImageName { name: String },

    /// `new_submit` was given a local path without a last component to name the upload.
    #[error("new_submit: `{path}` has no file name to upload under")]
    NoFileName { path: String },

    /// An option that takes an id was given an empty one.
    #[error("{command}: `--{option}` needs an id, e.g. `{command} --{option} ID`")]
    MissingId { command: &'static str, option: &'static str },

    /// `sweep` was given more than one action.
    #[error("sweep: give one action at a time, not {}; `sweep` alone lists what it finds", options.iter().map(|o| format!("`--{o}`")).collect::<Vec<_>>().join(" and "))]
    SweepActions { options: Vec<&'static str> },

    /// A blueprint folder or `-c` was given together with a mode; `given` names which.
    #[error(
        "{given} cannot be given with a mode (`run`, `tutorial`, `check`, `init`): give the folder to the mode (`devami run --dir DIR FILE`), or run `devami DIR -c COMMANDS` alone"
    )]
    ModeConflict { given: &'static str },

    /// A script is not UTF-8 text; `byte` is where the invalid bytes start.
    #[error("`{file}` is not a text file (invalid UTF-8 at byte {byte}); scripts hold one command per line")]
    NotText { file: String, byte: usize },

    /// A file given as a script or a transcript looks binary (NUL bytes at `line`).
    #[error("`{file}` looks like a binary file (NUL bytes at line {line}); give a script or a markdown file")]
    BinaryFile { file: String, line: usize },

    /// A transcript (a script, a tutorial page) breaks the format.
    #[error("{0}")]
    TranscriptSyntax(crate::transcript::ParseError),

    /// `tutorial --from N` is past the tutorial's last step.
    #[error("--from {from} is past the last step (the tutorial has {total} step{}); use `--from {total}` or less", if *total == 1 { "" } else { "s" })]
    StepOutOfRange { from: usize, total: usize },

    /// `DEVAMI_FAULTS` (a testing hook) cannot be read; the message says where and why.
    #[error("{0}")]
    InvalidFaults(String),

    // --- The session ---
    /// The command needs a blueprint and the session has none.
    #[error(
        "no blueprint is open; start devami with a blueprint folder (`devami DIR`) or type `devami = NeuroCaaSAMI(\"DIR\")`"
    )]
    NoBlueprint,

    /// Another devami process holds the blueprint's session lock.
    #[error("blueprint `{}` is in use by another devami ({}); close that shell first, or work on a copy of the folder", dir.display(), shown_raw(holder))]
    Locked { dir: PathBuf, holder: String },

    /// A session state file exists but cannot be read back.
    #[error("session state `{}` is damaged: {message}; move it aside to start a fresh session (the instances it lists keep running)", path.display())]
    StateCorrupt { path: PathBuf, message: String },

    /// The blueprint's session was made with another backend than the one asked for.
    #[error("the session in `{}` uses the `{recorded}` backend, not `{given}`; rerun with `--backend {recorded}` (its instances live there)", dir.display())]
    BackendMismatch { dir: PathBuf, recorded: String, given: BackendKind },

    /// AWS has no usable credentials for the session.
    #[error("no valid AWS credentials ({message}); {hint}")]
    NoCredentials { message: String, hint: String },

    /// A job index is outside the session's list of jobs (`jobs` is how many there are).
    #[error("index {index} does not exist: {}", job_indexes(*jobs))]
    NoSuchJob { index: i64, jobs: usize },

    /// A command needs a confirmation and there is nobody to ask.
    #[error(
        "`{command}` needs confirmation ({question}) and input is not a terminal; rerun with `--yes` to confirm"
    )]
    ConfirmationRequired { command: String, question: String },

    /// An interactive command was run without a terminal; `instead` is what scripts can use.
    #[error("`{command}` needs a terminal; in scripts use `{instead}`")]
    NeedsTerminal { command: &'static str, instead: &'static str },

    /// Ctrl-C cancelled the running command.
    #[error("interrupted")]
    Interrupted,

    /// A wait passed its deadline (`status` is the last one seen); the operation goes on, tracked.
    #[error("gave up waiting for {what} after {} (still {status}); the operation goes on and stays tracked — check again later", crate::clock::human_duration(waited.as_secs() as i64))]
    WaitTimedOut { what: String, waited: Duration, status: String },

    // --- The development instance ---
    /// The session has no current instance.
    #[error(
        "No instance declared: launch one with `launch_devinstance` or adopt one with `assign_instance ID`"
    )]
    NoInstance,

    /// The current instance must be running and is not; `next` says what to do, when known.
    #[error("Instance {id} is {state}, not safe to test{}", next.map(|n| format!(" ({n})")).unwrap_or_else(|| ".".into()))]
    InstanceNotRunning { id: String, state: InstanceState, next: Option<&'static str> },

    /// `start_devinstance` on an instance that is already running.
    #[error("Instance {id} exists and is active, safe to test: it is already running")]
    InstanceAlreadyRunning { id: String },

    /// A live instance already holds the blueprint's one development instance slot.
    #[error(
        "Instance {id} is {state}, not safe to deploy another. Stop or terminate it first, or `forget` it (one development instance per blueprint)"
    )]
    InstanceInTheWay { id: String, state: InstanceState },

    /// An instance failed the status checks named in `checks` (`system`, `instance`).
    #[error("instance {id} failed its {} status check (impaired); it stays tracked: stop and start it, or terminate it", checks.join(" and "))]
    InstanceImpaired { id: String, checks: Vec<&'static str> },

    /// An instance went to a state from which the awaited one cannot be reached.
    #[error("instance {id} became {state} instead of {target}: {}", reason.as_deref().unwrap_or("no reason given"))]
    InstanceMissedTarget { id: String, state: InstanceState, target: InstanceState, reason: Option<String> },

    /// `assign_instance` could not describe the instance; `cause` is what the backend said.
    #[error("Instance with id {id} can't be loaded: {}", backend_detail(cause))]
    InstanceNotLoadable { id: String, cause: Box<Error> },

    /// The instance has neither a public nor a private address.
    #[error("instance {id} is {state} and has no address")]
    NoAddress { id: String, state: InstanceState },

    /// `extend_lifetime` on an instance that is not running.
    #[error(
        "instance {id} is {state}: only a running instance's lifetime can be extended; `start_devinstance --timeout MINUTES` starts it with a new one"
    )]
    LifetimeNeedsRunning { id: String, state: InstanceState },

    /// The instance has no numeric `Timeout` tag, so it is no development instance.
    #[error(
        "Timeout not given; not a valid development instance (instance {id} has no numeric `Timeout` tag)"
    )]
    NoTimeoutTag { id: String },

    /// `terminate_devinstance` without `--force` on an instance whose work is not saved as an image.
    #[error(
        "dev history not saved as ami, will not delete (override with force = True). No state change. Save instance {id} with `create_devami NAME` first, or run `terminate_devinstance --force`"
    )]
    UnsavedWork { id: String },

    /// A command run by `exec` failed: its exit status, or `None` when a signal killed it.
    #[error("`{command}` {} on instance {id}", match status { Some(code) => format!("exited with status {code}"), None => "was killed by a signal".into() })]
    RemoteCommandFailed { command: String, id: String, status: Option<i32> },

    // --- Images ---
    /// An image the session created ended in a state other than available.
    #[error("image {id} is {state}: {}; delete it with the cloud console or `sweep` once you have read the reason", reason.as_deref().unwrap_or("the cloud gave no reason"))]
    ImageFailed { id: String, state: ImageState, reason: Option<String> },

    /// The image to launch from is in a state no instance can be launched from.
    #[error("image {id} is {state}{}", reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default())]
    ImageUnusable { id: String, state: ImageState, reason: Option<String> },

    /// `update_blueprint` on an image that is not available yet (without `--force`).
    #[error(
        "image {id} is {state}, not available yet: wait for it before recording it in the blueprint (or pass `--force`)"
    )]
    ImageNotAvailable { id: String, state: ImageState },

    /// `update_blueprint` without an image id, and the session has created none.
    #[error(
        "There is no record of an AMI that can be used to update the blueprint: create one with `create_devami NAME` or pass an image id"
    )]
    NoImageRecorded,

    /// `import_image` was given something that is not a file.
    #[error("{} is not a file: give a `docker save`/OCI archive or a root-filesystem tarball", shown(&path.display().to_string()))]
    NotAnImageArchive { path: PathBuf },

    // --- Data and jobs ---
    /// Nothing in the bucket at or under the key `download` was given.
    #[error("s3://{bucket}/{key} does not exist; `ls` shows what the bucket holds")]
    ObjectMissing { bucket: String, key: String },

    /// A `dataset` or `config` a job needs is not in the bucket; `closest` are the nearest keys.
    #[error("{what} {} is not in bucket `{bucket}`; {}", shown(name), missing_hint(what, closest))]
    NotInBucket { what: &'static str, name: String, bucket: String, closest: Vec<String> },

    /// A key under a downloaded prefix would be written outside the target folder.
    #[error(
        "refusing to download s3://{bucket}/{prefix}: key `{key}` would leave the target folder; nothing was written"
    )]
    KeyLeavesFolder { bucket: String, prefix: String, key: String },

    /// The local file or folder to upload does not exist.
    #[error("`{}` does not exist; give the path of a file or folder to upload", path.display())]
    LocalMissing { path: PathBuf },

    /// A file to upload has a name that is not UTF-8, so no S3 key can name it.
    #[error("`{}` has a name that is not UTF-8 and cannot be an S3 key; rename it", path.display())]
    NameNotUtf8 { path: PathBuf },

    /// A downloaded key's last part (`.`, `..`) cannot name a local file.
    #[error("the key ends in `{name}`, which is no file name; give LOCAL")]
    KeyNotAFileName { name: String },

    /// A default key needs the blueprint's first affiliate group and it has none; `give` is the
    /// argument to give instead, `default` the default that needed the group.
    #[error("{command}: give {give} (the blueprint has no affiliate group{})", default.map(|d| format!(" for the default {d}")).unwrap_or_default())]
    NoAffiliateGroup { command: &'static str, give: &'static str, default: Option<&'static str> },

    /// `cancel_job` on a job that has ended.
    #[error("job {index} has already finished: {}", crate::commands::job::ended(*state, *exit_code, detail.as_deref()))]
    JobFinished { index: usize, state: JobState, exit_code: Option<i32>, detail: Option<String> },

    /// The job has no result directory (it was not submitted from a submit file).
    #[error("job {index} has no result directory (it was not submitted from a submit file)")]
    NoResultDir { index: usize },

    // --- `sweep` ---
    /// The id names a resource of another kind than the option takes (`kind`, `wanted`: `instance`, `image`).
    #[error("`{id}` is an {kind}; `sweep --{option}` takes an {wanted}")]
    SweepWrongKind { id: String, kind: &'static str, option: &'static str, wanted: &'static str },

    /// The id is not among the resources `sweep` found for `scope`.
    #[error("{kind} `{id}` is not among the resources `sweep` finds for {scope}: run `sweep` to list them{}; nothing was changed", if *all_users { "" } else { " (`--all-users` also includes other users')" })]
    NotSwept { kind: &'static str, id: String, scope: String, all_users: bool },

    /// The resource is terminated, deregistered or not found (`state`, as `sweep` shows it).
    #[error("{kind} {id} is already gone ({state}); `sweep --forget` clears its record")]
    AlreadyGone { kind: &'static str, id: String, state: String },

    /// `sweep --adopt` of an instance that has vanished (`state`, as `sweep` shows it).
    #[error(
        "instance {id} has vanished ({state}); there is nothing to adopt — `sweep --forget` clears its record"
    )]
    NothingToAdopt { id: String, state: String },

    /// `sweep --adopt` of the session's current instance.
    #[error("instance {id} is already the session's current instance")]
    AlreadyCurrent { id: String },

    /// `sweep --adopt` of an instance that is shutting down.
    #[error("instance {id} is shutting-down; it cannot be adopted")]
    AdoptShuttingDown { id: String },

    /// `sweep --adopt` while the current instance is live (one development instance per blueprint).
    #[error(
        "the current instance {current} is {state}; stop or terminate it, or `forget` it, before adopting {id} (one development instance per blueprint)"
    )]
    AdoptBlocked { current: String, state: InstanceState, id: String },

    /// `sweep --terminate` of the session's current instance (`terminate_devinstance` guards it).
    #[error(
        "instance {id} is the session's current instance: use `terminate_devinstance`, which refuses to lose unsaved work"
    )]
    SweepingCurrent { id: String },

    /// `sweep --terminate` of an instance that is shutting down.
    #[error("instance {id} is already shutting-down")]
    AlreadyShuttingDown { id: String },

    /// `sweep --deregister` of the image the blueprint launches from.
    #[error(
        "the blueprint uses image {id} as its AMI (`Lambda.LambdaConfig.AMI`); record another image with `update_blueprint` before deleting this one"
    )]
    ImageInBlueprint { id: String },

    // --- Git (the record of `update_blueprint`) ---
    /// The blueprint's folder is not inside a git repository.
    #[error("`{}` is not inside a git repository, so the change cannot be recorded; run `git init` there (or `update_blueprint --init`)", dir.display())]
    NotInRepository { dir: PathBuf },

    /// The repository holding the blueprint is bare.
    #[error("git: the repository has no work tree (bare repository)")]
    BareRepository,

    /// The blueprint lies outside the repository's work tree.
    #[error("`{}` is outside the repository's work tree", path.display())]
    OutsideWorkTree { path: PathBuf },

    /// A git operation (`action`) failed in the repository at `path`.
    #[error("git: could not {action} in `{}`: {}", path.display(), cause.message())]
    Git { action: &'static str, path: PathBuf, cause: git2::Error },

    /// No committer could be made, not even the fallback one.
    #[error("git: cannot make a signature: {}", cause.message())]
    GitSignature { cause: git2::Error },

    /// A git lock file exists, so a commit cannot go on; `outcome` says what became of it.
    #[error("git: `{}` exists, so {outcome}: a git command is running in the repository, or one was interrupted (a killed `update_blueprint` or `git commit`) and left its lock file behind; if no git command is running, remove it (`rm {}`) and retry", lock.display(), crate::shellquote::when_needed(&lock.to_string_lossy()))]
    GitLocked { lock: PathBuf, outcome: &'static str },

    /// The blueprint names the new image but its commit failed (`cause`, a git error).
    #[error("`{file}` now names image {ami}, but the change is not committed: {cause}")]
    NotCommitted { file: String, ami: String, cause: Box<Error> },

    // --- Backends ---
    /// A backend call failed.
    #[error("{op} failed")]
    Backend {
        op: &'static str,
        #[source]
        source: BackendError,
    },

    /// The local backend's own machinery (its container engine, its home) failed.
    #[error(transparent)]
    Local(#[from] crate::backend::local::error::LocalError),
}

impl Error {
    /// The process exit status for this error (see docs/backends-and-configuration.md, "Exit statuses").
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage { .. }
            | Error::UnknownCommand { .. }
            | Error::UnknownObject { .. }
            | Error::BadArgument { .. }
            | Error::InvalidImageName { .. }
            | Error::NoFileName { .. }
            | Error::MissingId { .. }
            | Error::SweepActions { .. }
            | Error::ModeConflict { .. }
            | Error::NotText { .. }
            | Error::BinaryFile { .. }
            | Error::TranscriptSyntax(_)
            | Error::StepOutOfRange { .. }
            | Error::InvalidFaults(_) => 2,
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

/// What a backend said, without the operation it was part of.
fn backend_detail(e: &Error) -> String {
    match e {
        Error::Backend { source, .. } => source.to_string(),
        other => other.to_string(),
    }
}

/// The valid job indexes of a session with `jobs` jobs.
fn job_indexes(jobs: usize) -> String {
    match jobs {
        0 => "this session has submitted no jobs yet (see `submit_job`)".to_string(),
        1 => "this session has 1 job: index 0 or -1".to_string(),
        n => format!("this session has {n} jobs: indexes 0 to {} or -1 to -{n}", n - 1),
    }
}

/// The next step for a missing `dataset` or `config`: the closest keys, or how to upload it.
fn missing_hint(what: &str, closest: &[String]) -> String {
    if closest.is_empty() {
        let folder = if what == "config" { "configs" } else { "inputs" };
        format!("upload it first, e.g. `upload LOCAL_FILE GROUP/{folder}/NAME`")
    } else {
        format!("closest keys: {}", closest.iter().map(|k| shown(k)).collect::<Vec<_>>().join(", "))
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

    /// Each message as the code wrote it before it became a variant, for the same values: the
    /// transcripts in tests/ and docs/ compare these bytes.
    #[test]
    fn messages_are_the_ones_users_know() {
        use InstanceState::{Running, Stopped, Terminated};
        let (id, ami, bucket) = ("i-1", "ami-1", "pipe");
        let cases: Vec<(Error, String)> = vec![
            (Error::NoInstance, "No instance declared: launch one with `launch_devinstance` or adopt one with `assign_instance ID`".into()),
            (
                Error::InstanceNotRunning { id: id.into(), state: Stopped, next: None },
                format!("Instance {id} is {}, not safe to test.", Stopped),
            ),
            (
                Error::InstanceNotRunning { id: id.into(), state: Stopped, next: Some("start it with `start_devinstance`") },
                format!("Instance {id} is {}, not safe to test ({})", Stopped, "start it with `start_devinstance`"),
            ),
            (
                Error::InstanceAlreadyRunning { id: id.into() },
                format!("{}: it is already running", format_args!("Instance {id} exists and is active, safe to test")),
            ),
            (
                Error::InstanceInTheWay { id: id.into(), state: Running },
                format!(
                    "{} Stop or terminate it first, or `forget` it (one development instance per blueprint)",
                    format_args!("Instance {id} is {}, not safe to deploy another.", Running)
                ),
            ),
            (
                Error::InstanceImpaired { id: id.into(), checks: vec!["system", "instance"] },
                format!("instance {id} failed its {} status check (impaired); it stays tracked: stop and start it, or terminate it", "system and instance"),
            ),
            (
                Error::InstanceMissedTarget { id: id.into(), state: Terminated, target: Running, reason: None },
                format!("instance {id} became {} instead of {}: {}", Terminated, Running, "no reason given"),
            ),
            (
                Error::InstanceMissedTarget { id: id.into(), state: Terminated, target: Stopped, reason: Some("r".into()) },
                format!("instance {id} became {} instead of {}: {}", Terminated, Stopped, "r"),
            ),
            (
                Error::InstanceNotLoadable {
                    id: id.into(),
                    cause: Box::new(Error::Backend {
                        op: "loading the instance",
                        source: BackendError::Credentials { message: "m".into(), hint: "h".into() },
                    }),
                },
                format!("Instance with id {id} can't be loaded: {}", "no valid credentials: m; h"),
            ),
            (
                Error::InstanceNotLoadable { id: id.into(), cause: Box::new(Error::Interrupted) },
                format!("Instance with id {id} can't be loaded: {}", "interrupted"),
            ),
            (Error::NoAddress { id: id.into(), state: Stopped }, format!("instance {id} is {} and has no address", Stopped)),
            (
                Error::LifetimeNeedsRunning { id: id.into(), state: Stopped },
                format!("instance {id} is {}: only a running instance's lifetime can be extended; `start_devinstance --timeout MINUTES` starts it with a new one", Stopped),
            ),
            (
                Error::NoTimeoutTag { id: id.into() },
                format!("Timeout not given; not a valid development instance (instance {} has no numeric `Timeout` tag)", id),
            ),
            (
                Error::UnsavedWork { id: id.into() },
                format!(
                    "dev history not saved as ami, will not delete (override with force = True). No state change. \
                     Save instance {id} with `create_devami NAME` first, or run `terminate_devinstance --force`"
                ),
            ),
            (
                Error::RemoteCommandFailed { command: "ls".into(), id: id.into(), status: Some(2) },
                format!("`{}` exited with status {} on instance {id}", "ls", 2),
            ),
            (
                Error::RemoteCommandFailed { command: "ls".into(), id: id.into(), status: None },
                format!("`{}` was killed by a signal on instance {id}", "ls"),
            ),
            (
                Error::ImageFailed { id: ami.into(), state: ImageState::Failed, reason: None },
                format!("image {ami} is {}: {}; delete it with the cloud console or `sweep` once you have read the reason", ImageState::Failed, "the cloud gave no reason"),
            ),
            (
                Error::ImageUnusable { id: ami.into(), state: ImageState::Deregistered, reason: None },
                format!("image {ami} is {}{}", ImageState::Deregistered, ""),
            ),
            (
                Error::ImageUnusable { id: ami.into(), state: ImageState::Failed, reason: Some("r".into()) },
                format!("image {ami} is {}{}", ImageState::Failed, ": r"),
            ),
            (
                Error::ImageNotAvailable { id: ami.into(), state: ImageState::Pending },
                format!("image {ami} is {}, not available yet: wait for it before recording it in the blueprint (or pass `--force`)", ImageState::Pending),
            ),
            (
                Error::NoImageRecorded,
                "There is no record of an AMI that can be used to update the blueprint: create one with `create_devami NAME` or pass an image id".into(),
            ),
            (
                Error::NotAnImageArchive { path: "a b".into() },
                format!("{} is not a file: give a `docker save`/OCI archive or a root-filesystem tarball", shown("a b")),
            ),
            (
                Error::InvalidImageName { name: "x".into() },
                format!("create_devami: invalid image name {}: use 3 to 128 letters, digits and ( ) [ ] . / - ' @ _ (e.g. `my-analysis-v1`)", shown("x")),
            ),
            (
                Error::BadArgument { command: "launch_devinstance", argument: "timeout", expected: "a positive integer (minutes) of at most 100,000", got: "0".into() },
                format!("launch_devinstance: timeout must be a positive integer (minutes) of at most 100,000, got {}", 0),
            ),
            (
                Error::BadArgument { command: "sleep", argument: "`seconds`", expected: "between 0 and 86400", got: (-1.5f64).to_string() },
                format!("sleep: `seconds` must be between 0 and 86400, got {}", -1.5f64),
            ),
            (
                Error::BadArgument { command: "new_submit", argument: "`group`", expected: "a plain name", got: "`a/b`".into() },
                format!("new_submit: `group` must be a plain name, got `{}`", "a/b"),
            ),
            (Error::NoFileName { path: "..".into() }, format!("new_submit: `{}` has no file name to upload under", "..")),
            (
                Error::MissingId { command: "sweep", option: "adopt" },
                format!("sweep: `--{0}` needs an id, e.g. `sweep --{0} ID`", "adopt"),
            ),
            (
                Error::SweepActions { options: vec!["adopt", "forget"] },
                format!("sweep: give one action at a time, not {}; `sweep` alone lists what it finds", "`--adopt` and `--forget`"),
            ),
            (
                Error::ModeConflict { given: "`-c`" },
                format!(
                    "{} cannot be given with a mode (`run`, `tutorial`, `check`, `init`): give the folder \
                     to the mode (`devami run --dir DIR FILE`), or run `devami DIR -c COMMANDS` alone",
                    "`-c`"
                ),
            ),
            (
                Error::NotText { file: "stdin".into(), byte: 7 },
                format!("`{}` is not a text file (invalid UTF-8 at byte {}); scripts hold one command per line", "stdin", 7),
            ),
            (
                Error::UnknownObject { name: "x".into(), object: "devami".into(), command: "get_ip" },
                format!("`{}` is not defined; this session's object is `{}` (e.g. `{}.{}()`)", "x", "devami", "devami", "get_ip"),
            ),
            (
                Error::BackendMismatch { dir: "bp".into(), recorded: "aws".into(), given: BackendKind::Local },
                format!("the session in `{}` uses the `{}` backend, not `{}`; rerun with `--backend {}` (its instances live there)", "bp", "aws", BackendKind::Local, "aws"),
            ),
            (
                Error::NoCredentials { message: "m".into(), hint: "h".into() },
                format!("no valid AWS credentials ({}); {}", "m", "h"),
            ),
            (
                Error::NoSuchJob { index: 3, jobs: 0 },
                format!("index {} does not exist: {}", 3, "this session has submitted no jobs yet (see `submit_job`)"),
            ),
            (Error::NoSuchJob { index: -2, jobs: 1 }, "index -2 does not exist: this session has 1 job: index 0 or -1".into()),
            (Error::NoSuchJob { index: 5, jobs: 3 }, "index 5 does not exist: this session has 3 jobs: indexes 0 to 2 or -1 to -3".into()),
            (
                Error::NeedsTerminal { command: "ssh", instead: "exec CMD" },
                "`ssh` needs a terminal; in scripts use `exec CMD`".into(),
            ),
            (
                Error::WaitTimedOut { what: "image ami-1 to be available".into(), waited: Duration::from_secs(187), status: "pending, 5%".into() },
                format!(
                    "gave up waiting for {} after {} (still {}); the operation goes on and stays tracked — check again later",
                    "image ami-1 to be available",
                    crate::clock::human_duration(187),
                    "pending, 5%"
                ),
            ),
            (
                Error::ObjectMissing { bucket: bucket.into(), key: "k".into() },
                format!("s3://{bucket}/{} does not exist; `ls` shows what the bucket holds", "k"),
            ),
            (
                Error::NotInBucket { what: "config", name: "c".into(), bucket: bucket.into(), closest: vec![] },
                format!("{} {} is not in bucket `{bucket}`; {}", "config", shown("c"), "upload it first, e.g. `upload LOCAL_FILE GROUP/configs/NAME`"),
            ),
            (
                Error::NotInBucket { what: "dataset", name: "d".into(), bucket: bucket.into(), closest: vec![] },
                format!("{} {} is not in bucket `{bucket}`; {}", "dataset", shown("d"), "upload it first, e.g. `upload LOCAL_FILE GROUP/inputs/NAME`"),
            ),
            (
                Error::NotInBucket { what: "dataset", name: "d".into(), bucket: bucket.into(), closest: vec!["a".into(), "b".into()] },
                format!("{} {} is not in bucket `{bucket}`; {}", "dataset", shown("d"), format_args!("closest keys: {}", [shown("a"), shown("b")].join(", "))),
            ),
            (
                Error::KeyLeavesFolder { bucket: bucket.into(), prefix: "p/".into(), key: "p/../x".into() },
                format!("refusing to download s3://{bucket}/{}: key `{}` would leave the target folder; nothing was written", "p/", "p/../x"),
            ),
            (
                Error::LocalMissing { path: "f".into() },
                format!("`{}` does not exist; give the path of a file or folder to upload", "f"),
            ),
            (
                Error::NameNotUtf8 { path: "f".into() },
                format!("`{}` has a name that is not UTF-8 and cannot be an S3 key; rename it", "f"),
            ),
            (Error::KeyNotAFileName { name: "..".into() }, format!("the key ends in `{}`, which is no file name; give LOCAL", "..")),
            (
                Error::NoAffiliateGroup { command: "upload", give: "a KEY", default: Some("`GROUP/inputs/`") },
                "upload: give a KEY (the blueprint has no affiliate group for the default `GROUP/inputs/`)".into(),
            ),
            (
                Error::NoAffiliateGroup { command: "new_submit", give: "`--group`", default: None },
                "new_submit: give `--group` (the blueprint has no affiliate group)".into(),
            ),
            (
                Error::JobFinished { index: 0, state: JobState::Failed, exit_code: Some(2), detail: Some("d".into()) },
                format!("job {} has already finished: {}", 0, "Failed (exit code 2): d"),
            ),
            (
                Error::NoResultDir { index: 1 },
                format!("job {} has no result directory (it was not submitted from a submit file)", 1),
            ),
            (
                Error::SweepWrongKind { id: id.into(), kind: "instance", option: "deregister", wanted: "image" },
                format!("`{id}` is an {}; `sweep --{}` takes an {}", "instance", "deregister", "image"),
            ),
            (
                Error::NotSwept { kind: "image", id: ami.into(), scope: "s".into(), all_users: false },
                format!("{} `{ami}` is not among the resources `sweep` finds for {}: run `sweep` to list them{}; nothing was changed", "image", "s", " (`--all-users` also includes other users')"),
            ),
            (
                Error::NotSwept { kind: "instance", id: id.into(), scope: "s".into(), all_users: true },
                format!("{} `{id}` is not among the resources `sweep` finds for {}: run `sweep` to list them{}; nothing was changed", "instance", "s", ""),
            ),
            (
                Error::NothingToAdopt { id: id.into(), state: "not found".into() },
                format!("instance {id} has vanished ({}); there is nothing to adopt — `sweep --forget` clears its record", "not found"),
            ),
            (Error::AlreadyCurrent { id: id.into() }, format!("instance {id} is already the session's current instance")),
            (Error::AdoptShuttingDown { id: id.into() }, format!("instance {id} is shutting-down; it cannot be adopted")),
            (
                Error::AdoptBlocked { current: "i-0".into(), state: Running, id: id.into() },
                format!("the current instance {} is {}; stop or terminate it, or `forget` it, before adopting {id} (one development instance per blueprint)", "i-0", "running"),
            ),
            (
                Error::AlreadyGone { kind: "instance", id: id.into(), state: "terminated".into() },
                format!("instance {id} is already gone ({}); `sweep --forget` clears its record", "terminated"),
            ),
            (
                Error::AlreadyGone { kind: "image", id: ami.into(), state: "deregistered".into() },
                format!("image {ami} is already gone ({}); `sweep --forget` clears its record", "deregistered"),
            ),
            (
                Error::SweepingCurrent { id: id.into() },
                format!("instance {id} is the session's current instance: use `terminate_devinstance`, which refuses to lose unsaved work"),
            ),
            (Error::AlreadyShuttingDown { id: id.into() }, format!("instance {id} is already shutting-down")),
            (
                Error::ImageInBlueprint { id: ami.into() },
                format!("the blueprint uses image {ami} as its AMI (`Lambda.LambdaConfig.AMI`); record another image with `update_blueprint` before deleting this one"),
            ),
            (
                Error::NotInRepository { dir: "d".into() },
                format!("`{}` is not inside a git repository, so the change cannot be recorded; run `git init` there (or `update_blueprint --init`)", "d"),
            ),
            (Error::BareRepository, "git: the repository has no work tree (bare repository)".into()),
            (Error::OutsideWorkTree { path: "/x".into() }, format!("`{}` is outside the repository's work tree", "/x")),
            (
                Error::Git { action: "commit", path: "/r".into(), cause: git2::Error::from_str("boom") },
                format!("git: could not {} in `{}`: {}", "commit", "/r", "boom"),
            ),
            (
                Error::GitSignature { cause: git2::Error::from_str("boom") },
                format!("git: cannot make a signature: {}", "boom"),
            ),
            (
                Error::GitLocked { lock: "/r/.git/index lock".into(), outcome: "nothing was changed" },
                format!(
                    "git: `{}` exists, so {}: a git command is running in the repository, or one was \
                     interrupted (a killed `update_blueprint` or `git commit`) and left its lock file behind; if \
                     no git command is running, remove it (`rm {}`) and retry",
                    "/r/.git/index lock",
                    "nothing was changed",
                    "'/r/.git/index lock'"
                ),
            ),
            (
                Error::NotCommitted { file: "f.json".into(), ami: ami.into(), cause: Box::new(Error::BareRepository) },
                format!("`{}` now names image {ami}, but the change is not committed: {}", "f.json", "git: the repository has no work tree (bare repository)"),
            ),
        ];
        for (err, was) in cases {
            assert_eq!(err.to_string(), was, "{err:?}");
            assert!(std::error::Error::source(&err).is_none(), "no `caused by:` line: {err:?}");
        }
    }

    #[test]
    fn argument_values_exit_2_as_usage_errors_did() {
        let usage_like = [
            Error::BadArgument { command: "c", argument: "a", expected: "e", got: "g".into() },
            Error::InvalidImageName { name: "x".into() },
            Error::NoFileName { path: "..".into() },
            Error::MissingId { command: "sweep", option: "adopt" },
            Error::SweepActions { options: vec!["adopt", "forget"] },
            Error::ModeConflict { given: "`-c`" },
            Error::NotText { file: "f".into(), byte: 0 },
            Error::UnknownObject { name: "x".into(), object: "devami".into(), command: "get_ip" },
        ];
        for e in usage_like {
            assert_eq!(e.exit_code(), 2, "{e:?}");
        }
        assert_eq!(Error::NoInstance.exit_code(), 1);
        assert_eq!(
            Error::WaitTimedOut { what: "w".into(), waited: Duration::ZERO, status: "s".into() }.exit_code(),
            1
        );
        assert_eq!(Error::NoSuchJob { index: 0, jobs: 0 }.exit_code(), 1);
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
