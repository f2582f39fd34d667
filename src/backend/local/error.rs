//! What can go wrong inside the local backend, named for the caller's next step. No engine type
//! leaves `local/`: at the backend's edge an error becomes a [`BackendError`] that keeps its
//! variant (an engine that does not answer becomes `Unreachable`, the rest `BackendError::Local`).

use std::path::PathBuf;
use std::process::ExitStatus;

use crate::backend::BackendError;

/// A failure of the local backend.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// No container engine answers and none can be started.
    #[error(
        "no container engine: local instances are containers; install Podman (`apt-get install podman \
         runc catatonit`) or Docker, or point DOCKER_HOST at a running engine"
    )]
    NoEngine,
    /// The engine could not be reached.
    #[error("the container engine does not answer: {message}")]
    EngineUnreachable { message: String },
    /// The engine has no such object.
    #[error("{op}: {message}")]
    EngineNotFound { op: &'static str, message: String },
    /// The engine refused because of the object's state (an image in use, a name taken).
    #[error("{op}: {message}")]
    EngineConflict { op: &'static str, message: String },
    /// Any other answer of the engine.
    #[error("the container engine failed {op}: {message}")]
    Engine { op: &'static str, message: String },
    /// A file of the home could not be read or written.
    #[error("cannot {op} `{}`", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Neither `DEVAMI_HOME` nor `HOME` says where the home is.
    #[error("set DEVAMI_HOME or HOME: the local backend needs a folder for its images and instances")]
    NoHome,
    /// A job's command id, instance id or output bucket cannot name a folder of the home.
    #[error("invalid {what} `{name}`")]
    InvalidName { what: &'static str, name: String },
    /// A job's output prefix would leave its bucket.
    #[error("invalid output prefix `{prefix}`: use a key prefix such as `debug_direct/`")]
    InvalidOutputPrefix { prefix: String },
    /// A job without commands.
    #[error("a job needs at least one command")]
    NoCommands,
    /// A job's command id is taken.
    #[error("command `{id}` already exists")]
    CommandExists { id: String },
    /// The embedded S3 endpoint's daemon ended before it answered.
    #[error("the local S3 endpoint did not start ({status}); see `{}` for its log", log.display())]
    EndpointExited { status: ExitStatus, log: PathBuf },
    /// The embedded S3 endpoint did not answer in time.
    #[error(
        "the local S3 endpoint did not answer within {seconds} s; see `{}` for its log, or remove `{}` and retry",
        log.display(),
        record.display()
    )]
    EndpointSilent { seconds: u64, log: PathBuf, record: PathBuf },
    /// A bucket name S3 does not accept.
    #[error("`{bucket}` is not a valid bucket name: use 3 to 63 lowercase letters, digits, dots and dashes")]
    InvalidBucketName { bucket: String },
    /// An object key that names a folder.
    #[error("object key `{key}` names a folder: give a file name")]
    KeyNamesFolder { key: String },
    /// An object key that would leave its bucket (`why`: how).
    #[error("object key `{key}` {why}: keys must stay inside their bucket")]
    KeyLeavesBucket { key: String, why: &'static str },
    /// A symbolic link in a bucket whose target is outside it.
    #[error("`{}` is a symbolic link that leads out of bucket `{bucket}`; remove it and retry", link.display())]
    LinkLeavesBucket { link: PathBuf, bucket: String },
    /// The home's documents (state, locks, ids) failed.
    #[error(transparent)]
    Home(Box<crate::error::Error>),
}

impl From<crate::error::Error> for LocalError {
    /// Keeps the variant of an error of this backend that crossed a function returning the
    /// crate's error; wraps any other.
    fn from(e: crate::error::Error) -> Self {
        match e {
            crate::error::Error::Local(local) => local,
            other => LocalError::Home(Box::new(other)),
        }
    }
}

impl LocalError {
    /// How the error reads as a [`BackendError`] (one `caused by` line of the session's error):
    /// its message and its causes, joined by `: `; an engine's 404 keeps the `NotFound: ` code it
    /// has always shown; a home error keeps its causes on `caused by` lines.
    pub fn crossing_text(&self) -> String {
        match self {
            LocalError::EngineNotFound { .. } => format!("NotFound: {self}"),
            LocalError::Home(inner) => crate::console::render_error(inner.as_ref())
                .trim_end()
                .trim_start_matches("error: ")
                .to_string(),
            other => {
                let mut text = other.to_string();
                let mut source = std::error::Error::source(other);
                while let Some(s) = source {
                    text.push_str(&format!(": {s}"));
                    source = s.source();
                }
                text
            }
        }
    }
}

impl From<LocalError> for BackendError {
    fn from(e: LocalError) -> Self {
        match e {
            LocalError::NoEngine | LocalError::EngineUnreachable { .. } => {
                BackendError::Unreachable { endpoint: "the container engine".into(), message: e.to_string() }
            }
            other => BackendError::Local(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The texts of errors crossing the trait are the ones the flattened strings had.
    #[test]
    fn errors_keep_their_variant_and_their_text_across_the_trait() {
        let refused: BackendError =
            LocalError::from(crate::error::Error::from(LocalError::CommandExists { id: "c-1".into() }))
                .into();
        assert!(matches!(&refused, BackendError::Local(LocalError::CommandExists { id }) if id == "c-1"));
        assert_eq!(refused.to_string(), "command `c-1` already exists");
        assert!(std::error::Error::source(&refused).is_none());

        let missing: BackendError =
            LocalError::EngineNotFound { op: "starting", message: "no container".into() }.into();
        assert_eq!(missing.to_string(), "NotFound: starting: no container");

        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied");
        let local: BackendError = LocalError::Io { op: "read", path: "/h/x".into(), source: io }.into();
        assert_eq!(local.to_string(), "cannot read `/h/x`: denied");

        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied");
        let home: BackendError = LocalError::from(crate::error::Error::io("write", "/h/y", io)).into();
        assert!(matches!(&home, BackendError::Local(LocalError::Home(_))));
        assert_eq!(home.to_string(), "could not write `/h/y`\n  caused by: denied");

        let gone: BackendError = LocalError::NoEngine.into();
        assert!(matches!(gone, BackendError::Unreachable { .. }));
    }

    /// The refusals keep the words they had when they were bare strings.
    #[test]
    fn refusals_keep_their_words() {
        let cases = [
            (
                LocalError::NoHome,
                "set DEVAMI_HOME or HOME: the local backend needs a folder for its images and instances",
            ),
            (LocalError::InvalidName { what: "command id", name: ".x".into() }, "invalid command id `.x`"),
            (
                LocalError::InvalidOutputPrefix { prefix: "/a".into() },
                "invalid output prefix `/a`: use a key prefix such as `debug_direct/`",
            ),
            (LocalError::NoCommands, "a job needs at least one command"),
            (
                LocalError::EndpointSilent {
                    seconds: 10,
                    log: "/r/s3.log".into(),
                    record: "/r/s3.json".into(),
                },
                "the local S3 endpoint did not answer within 10 s; see `/r/s3.log` for its log, or remove \
                 `/r/s3.json` and retry",
            ),
            (
                LocalError::InvalidBucketName { bucket: "A".into() },
                "`A` is not a valid bucket name: use 3 to 63 lowercase letters, digits, dots and dashes",
            ),
            (
                LocalError::KeyNamesFolder { key: "d/".into() },
                "object key `d/` names a folder: give a file name",
            ),
            (
                LocalError::KeyLeavesBucket { key: "../x".into(), why: "has a `.` or `..` segment" },
                "object key `../x` has a `.` or `..` segment: keys must stay inside their bucket",
            ),
            (
                LocalError::LinkLeavesBucket { link: "/b/l".into(), bucket: "b".into() },
                "`/b/l` is a symbolic link that leads out of bucket `b`; remove it and retry",
            ),
        ];
        for (error, text) in cases {
            assert_eq!(error.to_string(), text);
        }
    }
}
