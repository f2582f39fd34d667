//! The backend abstraction: instances, images, jobs, object storage.
//!
//! (Being written: the full trait lands with the session.)

/// A failure reported by a backend.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The thing asked for does not exist.
    #[error("{what} `{id}` does not exist")]
    NotFound { what: &'static str, id: String },
    /// Any other failure of the service, with its error code when it has one.
    #[error("{}{message}", code.as_ref().map(|c| format!("{c}: ")).unwrap_or_default())]
    Service { code: Option<String>, message: String },
}
