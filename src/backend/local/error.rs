//! What can go wrong inside the local backend, named for the caller's next step; converted to
//! [`BackendError`] at the backend's edge (no engine type leaves `local/`).

use std::path::PathBuf;

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
    /// The home's documents (state, locks, ids) failed.
    #[error(transparent)]
    Home(Box<crate::error::Error>),
}

impl From<crate::error::Error> for LocalError {
    fn from(e: crate::error::Error) -> Self {
        LocalError::Home(Box::new(e))
    }
}

impl From<LocalError> for BackendError {
    fn from(e: LocalError) -> Self {
        match e {
            LocalError::NoEngine | LocalError::EngineUnreachable { .. } => {
                BackendError::Unreachable { endpoint: "the container engine".into(), message: e.to_string() }
            }
            LocalError::EngineNotFound { .. } => {
                BackendError::Service { code: Some("NotFound".into()), message: e.to_string() }
            }
            LocalError::Home(inner) => BackendError::Service {
                code: None,
                message: crate::console::render_error(&inner).trim_end().replacen("error: ", "", 1),
            },
            other => {
                let mut message = other.to_string();
                let mut source = std::error::Error::source(&other);
                while let Some(s) = source {
                    message.push_str(&format!(": {s}"));
                    source = s.source();
                }
                BackendError::Service { code: None, message }
            }
        }
    }
}
