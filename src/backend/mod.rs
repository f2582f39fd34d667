//! The backend abstraction: the [`Backend`] trait the session talks to, with its domain types
//! (states, instances, images, job reports) and its errors.
//!
//! Two implementations: [`local`] (the default: containers on this machine and an embedded S3
//! endpoint) and [`aws`]; decorators ([`faults`]) wrap a `Box<dyn Backend>`. Invariants: SDK types
//! never leave a backend's own module, and callers decide on [`BackendError`] variants, never on a
//! cloud's error codes (each backend sorts its failures itself); waits are not part of the trait
//! (the session polls `describe_*` through `crate::wait`, so every backend gets the same waits).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

pub mod aws;
pub mod faults;
pub mod local;
pub mod objstore;

/// Which backend a session uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendKind {
    /// The embedded backend: everything on this machine (the default).
    #[default]
    Local,
    /// Amazon Web Services or an AWS-compatible endpoint.
    Aws,
}

impl BackendKind {
    /// The name used on the command line and in state files.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Local => "local",
            BackendKind::Aws => "aws",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BackendKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "local" => Ok(BackendKind::Local),
            "aws" => Ok(BackendKind::Aws),
            other => Err(format!("unknown backend `{other}`: expected `local` or `aws`")),
        }
    }
}

/// The lifecycle state of an instance, with EC2's names and codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceState {
    Pending,
    Running,
    ShuttingDown,
    Terminated,
    Stopping,
    Stopped,
}

impl InstanceState {
    /// EC2's name of the state.
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Pending => "pending",
            InstanceState::Running => "running",
            InstanceState::ShuttingDown => "shutting-down",
            InstanceState::Terminated => "terminated",
            InstanceState::Stopping => "stopping",
            InstanceState::Stopped => "stopped",
        }
    }

    /// EC2's numeric code of the state (the low byte of `State.Code`).
    pub fn code(self) -> u8 {
        match self {
            InstanceState::Pending => 0,
            InstanceState::Running => 16,
            InstanceState::ShuttingDown => 32,
            InstanceState::Terminated => 48,
            InstanceState::Stopping => 64,
            InstanceState::Stopped => 80,
        }
    }

    /// Whether an instance in this state still costs compute time or may become running again
    /// without a new launch, so that a second launch would break "one live instance".
    pub fn is_live(self) -> bool {
        matches!(self, InstanceState::Pending | InstanceState::Running | InstanceState::Stopping)
    }

    /// All states, for parsing and tests.
    pub const ALL: [InstanceState; 6] = [
        InstanceState::Pending,
        InstanceState::Running,
        InstanceState::ShuttingDown,
        InstanceState::Terminated,
        InstanceState::Stopping,
        InstanceState::Stopped,
    ];
}

impl fmt::Display for InstanceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for InstanceState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        InstanceState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown instance state `{s}`"))
    }
}

/// What a backend knows about one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub id: String,
    pub image_id: String,
    pub instance_type: String,
    pub state: InstanceState,
    /// The cloud's reason for the last state change, if it gave one.
    pub state_reason: Option<String>,
    /// Launch (or last start) time, epoch seconds.
    pub launch_time: Option<i64>,
    pub public_ip: Option<String>,
    pub private_ip: Option<String>,
    pub tags: BTreeMap<String, String>,
    /// `(system, instance)` status check results ("ok", "initializing", "impaired"...), when known.
    pub status_checks: Option<(String, String)>,
}

/// Everything needed to launch an instance.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LaunchSpec {
    pub image_id: String,
    pub instance_type: String,
    pub key_name: Option<String>,
    pub security_groups: Vec<String>,
    pub iam_instance_profile: Option<String>,
    /// Root volume size in GiB, on the image's own root device.
    pub volume_size: Option<u32>,
    /// Tags applied to the instance and its volume at launch.
    pub tags: Vec<(String, String)>,
    pub dry_run: bool,
    /// A folder of this machine (the blueprint) that an instance running on this machine sees
    /// read-only at the same path; backends of remote machines ignore it.
    pub visible: Option<std::path::PathBuf>,
}

/// The state of a machine image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageState {
    Pending,
    Available,
    Failed,
    Deregistered,
    /// Any other state the cloud reports (kept verbatim).
    Other(String),
}

impl ImageState {
    /// The cloud's name of the state.
    pub fn as_str(&self) -> &str {
        match self {
            ImageState::Pending => "pending",
            ImageState::Available => "available",
            ImageState::Failed => "failed",
            ImageState::Deregistered => "deregistered",
            ImageState::Other(s) => s,
        }
    }

    /// Parses a state name; unknown names are kept as [`ImageState::Other`].
    pub fn parse(s: &str) -> ImageState {
        match s {
            "pending" => ImageState::Pending,
            "available" => ImageState::Available,
            "failed" => ImageState::Failed,
            "deregistered" => ImageState::Deregistered,
            other => ImageState::Other(other.to_string()),
        }
    }
}

impl serde::Serialize for ImageState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for ImageState {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(ImageState::parse(&s))
    }
}

impl fmt::Display for ImageState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a backend knows about one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub id: String,
    pub name: String,
    pub state: ImageState,
    pub state_reason: Option<String>,
    /// Creation time, epoch seconds.
    pub created: Option<i64>,
    pub source_instance: Option<String>,
    pub size_bytes: Option<u64>,
    /// Snapshot progress in percent while pending.
    pub progress: Option<u8>,
    pub root_device_name: Option<String>,
    pub snapshot_ids: Vec<String>,
    pub tags: BTreeMap<String, String>,
}

/// Whether `have` holds every one of the `wanted` tags with exactly that value.
pub fn carries_tags(have: &BTreeMap<String, String>, wanted: &[(String, String)]) -> bool {
    wanted.iter().all(|(k, v)| have.get(k) == Some(v))
}

/// A request to create an image from an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRequest {
    pub instance_id: String,
    pub name: String,
    pub description: String,
    pub tags: Vec<(String, String)>,
}

/// An image alias (`ubuntu22`) resolved to an id, with where the answer came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedImage {
    pub alias: String,
    pub image_id: String,
    /// Where the id came from (a parameter name, "built-in table", "local base image").
    pub source: String,
    /// When the id was published, if known (epoch seconds).
    pub published: Option<i64>,
}

/// A shell command to run on an instance, as SSM's AWS-RunShellScript document takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSpec {
    pub instance_id: String,
    pub commands: Vec<String>,
    pub working_directory: String,
    /// SSM `executionTimeout`, seconds.
    pub execution_timeout: u64,
    /// Where stdout/stderr are written: bucket and key prefix (e.g. `debug_direct/`).
    pub output_bucket: String,
    pub output_prefix: String,
}

/// The status of a command on an instance, with SSM's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum JobState {
    Pending,
    InProgress,
    Delayed,
    Success,
    Cancelled,
    TimedOut,
    Failed,
    Cancelling,
}

impl JobState {
    /// SSM's name of the status.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "Pending",
            JobState::InProgress => "InProgress",
            JobState::Delayed => "Delayed",
            JobState::Success => "Success",
            JobState::Cancelled => "Cancelled",
            JobState::TimedOut => "TimedOut",
            JobState::Failed => "Failed",
            JobState::Cancelling => "Cancelling",
        }
    }

    /// Whether the command has finished (for better or worse).
    pub fn is_final(self) -> bool {
        matches!(self, JobState::Success | JobState::Cancelled | JobState::TimedOut | JobState::Failed)
    }
}

impl FromStr for JobState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        use JobState::*;
        [Pending, InProgress, Delayed, Success, Cancelled, TimedOut, Failed, Cancelling]
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown command status `{s}`"))
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a backend knows about one command on one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobReport {
    pub command_id: String,
    pub instance_id: String,
    pub state: JobState,
    pub exit_code: Option<i32>,
    /// Start and end, epoch seconds.
    pub started: Option<i64>,
    pub ended: Option<i64>,
    /// Why the job ended as it did, when the backend knows more than the status
    /// (e.g. "instance stopped while the command was running").
    pub detail: Option<String>,
    /// `(stdout, stderr)` as the service's invocation record keeps them (SSM truncates them at
    /// 24,000 and 8,000 characters); `None` when the backend keeps output only in the bucket.
    pub inline_output: Option<(String, String)>,
}

/// One object in a bucket listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    /// Last modification, epoch seconds.
    pub modified: Option<i64>,
}

/// Who the backend acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The caller's ARN (used as the `OwnerArn` tag).
    pub arn: String,
    pub account: String,
}

/// A failure reported by a backend, named for what a caller may decide on it. Each backend sorts
/// its cloud's answers into these variants itself, so no error code is matched outside
/// `backend/`; a code the cloud gave stays in the message (`CODE: MESSAGE`), as the cloud gave it.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The thing asked for does not exist: the cloud's answer with its `code`, or devami's
    /// sentence from [`BackendError::not_found`].
    #[error("{}{message}", with_code(code))]
    NotFound { what: &'static str, code: Option<String>, message: String },
    /// The operation is not allowed in the resource's current state (an instance that is not
    /// running, an image not available): the cloud's answer with its `code`, or devami's sentence
    /// from [`BackendError::invalid_state`].
    #[error("{}{message}", with_code(code))]
    InvalidState { what: &'static str, code: Option<String>, message: String },
    /// The service asked to slow down or is briefly unavailable (see [`SLOW_DOWN_CODES`]): worth
    /// retrying a little later.
    #[error("{code}: {message}")]
    Throttled { code: String, message: String },
    /// Credentials are missing or expired.
    #[error("no valid credentials: {message}; {hint}")]
    Credentials { message: String, hint: String },
    /// The endpoint could not be reached.
    #[error("cannot reach `{endpoint}`: {message}")]
    Unreachable { endpoint: String, message: String },
    /// A dry run would have succeeded (EC2's `DryRunOperation`).
    #[error("dry run succeeded: the request would have been accepted")]
    DryRunOk,
    /// Ctrl-C stopped a transfer (the session reports it as `Error::Interrupted`).
    #[error("Interrupted: interrupted by Ctrl-C")]
    Interrupted,
    /// The local backend's own machinery failed (its container engine, its home's documents, a
    /// request it refuses); shown as one text with its causes.
    #[error("{}", .0.crossing_text())]
    Local(local::error::LocalError),
    /// Any other failure of the service, with its error code when it has one.
    #[error("{}{message}", with_code(code))]
    Service { code: Option<String>, message: String },
}

/// The error codes of AWS services (and of the local backend, which speaks them) that ask the
/// caller to slow down or say the service is briefly unavailable: [`BackendError::Throttled`].
pub const SLOW_DOWN_CODES: [&str; 6] = [
    "RequestLimitExceeded",
    "Throttling",
    "ThrottlingException",
    "SlowDown",
    "ServiceUnavailable",
    "InternalError",
];

/// `CODE: ` in front of a message, or nothing.
fn with_code(code: &Option<String>) -> String {
    code.as_ref().map(|c| format!("{c}: ")).unwrap_or_default()
}

impl BackendError {
    /// ``{what} `{id}` does not exist``, in devami's words.
    pub fn not_found(what: &'static str, id: &str) -> BackendError {
        let message = format!("{what} `{}` does not exist", crate::error::shown_raw(id));
        BackendError::NotFound { what, code: None, message }
    }

    /// ``{what} `{id}` is {state}: {why}``, in devami's words.
    pub fn invalid_state(what: &'static str, id: &str, state: impl fmt::Display, why: &str) -> BackendError {
        let message = format!("{what} `{}` is {state}: {why}", crate::error::shown_raw(id));
        BackendError::InvalidState { what, code: None, message }
    }

    /// A service's answer that means nothing more specific to its backend: `Throttled` for the
    /// [`SLOW_DOWN_CODES`], otherwise `Service`.
    pub fn from_service(code: Option<String>, message: String) -> BackendError {
        match code {
            Some(code) if SLOW_DOWN_CODES.contains(&code.as_str()) => {
                BackendError::Throttled { code, message }
            }
            code => BackendError::Service { code, message },
        }
    }
}

/// The cloud a session talks to. All calls return domain types; none block on a wait.
#[async_trait::async_trait]
pub trait Backend: Send + Sync {
    /// Which backend this is.
    fn kind(&self) -> BackendKind;

    /// Who the backend acts as (also the credential preflight).
    async fn identity(&self) -> Result<Identity, BackendError>;

    /// What runs the instances, for `status` (the local backend's container engine and its
    /// version); `None` where there is nothing to say.
    async fn about(&self) -> Result<Option<String>, BackendError> {
        Ok(None)
    }

    /// Imports an image archive or a root-filesystem tarball of this machine as an image; with an
    /// alias for `name`, the alias resolves to it from now on. Returns the image's id.
    async fn import_image(&self, file: &Path, name: Option<&str>) -> Result<String, BackendError> {
        let _ = (file, name);
        Err(BackendError::Service {
            code: Some("UnsupportedOperation".into()),
            message: format!(
                "the {} backend cannot import image files; use EC2 VM Import (`aws ec2 import-image`) \
                 or launch from an existing AMI",
                self.kind()
            ),
        })
    }

    /// Resolves an image alias such as `ubuntu22`; `Ok(None)` when the name is not an alias.
    async fn resolve_alias(&self, name: &str) -> Result<Option<ResolvedImage>, BackendError>;

    /// Describes an image.
    async fn describe_image(&self, image_id: &str) -> Result<Image, BackendError>;

    /// Launches one instance; returns it as first described (usually `pending`).
    async fn launch(&self, spec: &LaunchSpec) -> Result<Instance, BackendError>;

    /// Describes an instance; `NotFound` when the cloud has no trace of it.
    async fn describe_instance(&self, instance_id: &str) -> Result<Instance, BackendError>;

    /// Starts a stopped instance.
    async fn start(&self, instance_id: &str) -> Result<(), BackendError>;

    /// Stops a running instance.
    async fn stop(&self, instance_id: &str) -> Result<(), BackendError>;

    /// Terminates an instance.
    async fn terminate(&self, instance_id: &str) -> Result<(), BackendError>;

    /// The instances carrying every one of `tags` (key and value), in any state but terminated.
    async fn find_instances(&self, tags: &[(String, String)]) -> Result<Vec<Instance>, BackendError>;

    /// The images of this account carrying every one of `tags`, except deregistered ones.
    async fn find_images(&self, tags: &[(String, String)]) -> Result<Vec<Image>, BackendError>;

    /// Creates or replaces tags on an instance (and, where the cloud has them, its volumes).
    async fn set_tags(
        &self,
        instance_id: &str,
        tags: &[(String, String)],
        dry_run: bool,
    ) -> Result<(), BackendError>;

    /// Starts creating an image from an instance; returns the new image id at once.
    async fn create_image(&self, request: &ImageRequest) -> Result<String, BackendError>;

    /// Deregisters an image and deletes its snapshots.
    async fn delete_image(&self, image_id: &str) -> Result<(), BackendError>;

    /// Sends a shell command to an instance; returns the command id.
    async fn send_command(&self, job: &JobSpec) -> Result<String, BackendError>;

    /// Describes a command's execution on an instance.
    async fn describe_command(&self, command_id: &str, instance_id: &str) -> Result<JobReport, BackendError>;

    /// Cancels a command.
    async fn cancel_command(&self, command_id: &str, instance_id: &str) -> Result<(), BackendError>;

    /// Writes an object.
    async fn put_object(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<(), BackendError>;

    /// Reads an object; `NotFound` when it does not exist.
    async fn get_object(&self, bucket: &str, key: &str) -> Result<Vec<u8>, BackendError>;

    /// Lists the objects whose keys start with `prefix`.
    async fn list_objects(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectInfo>, BackendError>;

    /// Uploads a local file (multipart and concurrent where large); `progress(done, total)`.
    async fn upload_file(
        &self,
        bucket: &str,
        key: &str,
        local: &Path,
        progress: &mut (dyn FnMut(u64, u64) + Send),
    ) -> Result<u64, BackendError>;

    /// Downloads an object to a local file, never leaving a partial file under the final name.
    async fn download_file(
        &self,
        bucket: &str,
        key: &str,
        local: &Path,
        progress: &mut (dyn FnMut(u64, u64) + Send),
    ) -> Result<u64, BackendError>;

    /// A process that runs `command` (or, with `None`, an interactive login shell) on a running
    /// instance, in `working_directory`, with the environment a job sees. The caller runs it.
    /// `address` is the instance's last known address (used by backends that connect over ssh).
    /// `blueprint` is the blueprint folder, which a backend that runs instances on this machine
    /// makes readable inside at the same path (`$DEVAMI_BLUEPRINT` of `exec` and `ssh`).
    fn shell_command(
        &self,
        instance_id: &str,
        address: Option<&str>,
        working_directory: &str,
        command: Option<&str>,
        blueprint: Option<&Path>,
    ) -> Result<std::process::Command, BackendError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_states_round_trip_with_ec2_codes() {
        for st in InstanceState::ALL {
            assert_eq!(st.as_str().parse::<InstanceState>(), Ok(st));
        }
        assert_eq!(InstanceState::Running.code(), 16);
        assert_eq!(InstanceState::Stopped.code(), 80);
        assert!("bogus".parse::<InstanceState>().is_err());
        assert!(InstanceState::Stopping.is_live() && !InstanceState::Stopped.is_live());
    }

    #[test]
    fn tags_must_all_match_exactly() {
        let have: BTreeMap<String, String> =
            [("a", "1"), ("b", "2")].into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let want = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        assert!(carries_tags(&have, &want(&[])));
        assert!(carries_tags(&have, &want(&[("a", "1"), ("b", "2")])));
        assert!(!carries_tags(&have, &want(&[("a", "1"), ("c", "3")])));
        assert!(!carries_tags(&have, &want(&[("a", "*")])));
    }

    #[test]
    fn errors_read_as_they_always_did() {
        let gone = BackendError::not_found("instance", "i-1\u{1b}");
        assert_eq!(gone.to_string(), "instance `i-1\\u{1b}` does not exist");
        let busy = BackendError::invalid_state("instance", "i-2", InstanceState::Stopped, "it must run");
        assert_eq!(busy.to_string(), "instance `i-2` is stopped: it must run");
        let said = BackendError::NotFound {
            what: "image",
            code: Some("InvalidAMIID.NotFound".into()),
            message: "DescribeImages: no such image".into(),
        };
        assert_eq!(said.to_string(), "InvalidAMIID.NotFound: DescribeImages: no such image");
        assert_eq!(BackendError::Interrupted.to_string(), "Interrupted: interrupted by Ctrl-C");
    }

    #[test]
    fn slow_down_codes_are_throttling_and_others_service_errors() {
        for code in SLOW_DOWN_CODES {
            let e = BackendError::from_service(Some(code.into()), "op: later".into());
            assert!(matches!(&e, BackendError::Throttled { code: c, .. } if c == code), "{e:?}");
            assert_eq!(e.to_string(), format!("{code}: op: later"));
        }
        let other = BackendError::from_service(Some("InsufficientInstanceCapacity".into()), "none".into());
        assert!(
            matches!(&other, BackendError::Service { code: Some(c), .. } if c == "InsufficientInstanceCapacity")
        );
        assert_eq!(other.to_string(), "InsufficientInstanceCapacity: none");
        let bare = BackendError::from_service(None, "it broke".into());
        assert!(matches!(&bare, BackendError::Service { code: None, .. }));
        assert_eq!(bare.to_string(), "it broke");
    }

    #[test]
    fn backend_kind_parses() {
        assert_eq!("aws".parse::<BackendKind>(), Ok(BackendKind::Aws));
        assert!("gcp".parse::<BackendKind>().unwrap_err().contains("`local` or `aws`"));
    }
}
