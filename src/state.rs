//! The session's persistent state (`<blueprint>/.devami/state.json`: what the original
//! `NeuroCaaSAMI` object held between calls) and the folder lock that guards it.
//!
//! Invariants: the state is written atomically after every change, so no instance id is ever
//! lost; one process at a time holds a blueprint folder (an advisory lock the kernel releases when
//! the holder dies), and a second is told who holds it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::atomic;
use crate::backend::{ImageState, InstanceState, JobState};
use crate::clock;
use crate::error::{Error, Result};

/// Name of the session folder inside a blueprint folder.
pub const STATE_DIR: &str = ".devami";
const STATE_FILE: &str = "state.json";
const LOCK_FILE: &str = "lock";
/// How much of the lock file is read to say who holds it.
const HOLDER_BYTES: u64 = 4096;
/// Version of the state file format.
pub const STATE_VERSION: u32 = 1;

/// The `DevAmi` state, as persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// Format version of this file.
    pub version: u32,
    /// The backend the ids below belong to (`local` or `aws`).
    pub backend: String,
    /// The current development instance, if any.
    pub instance: Option<String>,
    /// Every instance this session has launched or been assigned, oldest first.
    #[serde(default)]
    pub instances: Vec<InstanceRecord>,
    /// Every image created by this session, oldest first.
    #[serde(default)]
    pub images: Vec<ImageRecord>,
    /// Every job submitted by this session, oldest first.
    #[serde(default)]
    pub jobs: Vec<JobRecord>,
    /// Whether an image was created since the current instance was launched or assigned.
    #[serde(default)]
    pub instance_saved: bool,
    /// The current instance's last known address.
    #[serde(default)]
    pub ip: Option<String>,
}

impl InstanceRecord {
    /// Seconds of lifetime left at `now` (negative once past), when the launch time and the
    /// lifetime are known. Saturates: a launch time from a damaged state file or a strange cloud
    /// answer gives a huge value, never an overflow.
    pub fn lifetime_left(&self, now: i64) -> Option<i64> {
        let end = self.launch_time?.saturating_add(i64::from(self.timeout_minutes?) * 60);
        Some(end.saturating_sub(now))
    }
}

impl State {
    /// A fresh state for a backend.
    pub fn new(backend: &str) -> State {
        State {
            version: STATE_VERSION,
            backend: backend.to_string(),
            instance: None,
            instances: Vec::new(),
            images: Vec::new(),
            jobs: Vec::new(),
            instance_saved: false,
            ip: None,
        }
    }

    /// The record of the current instance.
    pub fn current(&self) -> Option<&InstanceRecord> {
        let id = self.instance.as_deref()?;
        self.instances.iter().rev().find(|r| r.id == id)
    }

    /// The record of the current instance, mutable.
    pub fn current_mut(&mut self) -> Option<&mut InstanceRecord> {
        let id = self.instance.clone()?;
        self.instances.iter_mut().rev().find(|r| r.id == id)
    }
}

/// One instance the session has known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRecord {
    pub id: String,
    /// What the launch asked for (an alias, an image id or "the blueprint's AMI").
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub image_id: Option<String>,
    #[serde(default)]
    pub instance_type: Option<String>,
    /// When devami launched or was given it (epoch seconds).
    pub recorded: i64,
    /// Lifetime in minutes (the `Timeout` tag) at launch.
    #[serde(default)]
    pub timeout_minutes: Option<u32>,
    /// The last state devami saw, and when.
    #[serde(default)]
    pub last_state: Option<SeenState>,
    #[serde(default)]
    pub last_seen: Option<i64>,
    /// When the cloud last launched or started it (epoch seconds): its lifetime counts from here.
    #[serde(default)]
    pub launch_time: Option<i64>,
    /// Size of its root volume in GiB, when known (what a stopped instance is still billed for).
    #[serde(default)]
    pub volume_gib: Option<u32>,
    /// How the session came to know it: `launched` or `assigned`.
    pub origin: String,
}

/// What the session last saw of an instance: a state the cloud reported, or `gone` when the cloud
/// no longer knew it. Stored as the state's name (`running`, `gone`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeenState {
    Cloud(InstanceState),
    Gone,
}

impl SeenState {
    /// The name shown and stored: EC2's name of the state, or `gone`.
    pub fn as_str(self) -> &'static str {
        match self {
            SeenState::Cloud(s) => s.as_str(),
            SeenState::Gone => "gone",
        }
    }

    /// Whether the instance may still cost compute: pending, running or stopping.
    pub fn is_billed(self) -> bool {
        matches!(
            self,
            SeenState::Cloud(InstanceState::Pending | InstanceState::Running | InstanceState::Stopping)
        )
    }

    /// Whether the instance is over: terminated, shutting down or gone.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            SeenState::Cloud(InstanceState::Terminated | InstanceState::ShuttingDown) | SeenState::Gone
        )
    }
}

impl From<InstanceState> for SeenState {
    fn from(s: InstanceState) -> SeenState {
        SeenState::Cloud(s)
    }
}

impl std::fmt::Display for SeenState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for SeenState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for SeenState {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        match name.as_str() {
            "gone" => Ok(SeenState::Gone),
            other => other.parse().map(SeenState::Cloud).map_err(serde::de::Error::custom),
        }
    }
}

/// One image the session has created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub id: String,
    pub name: String,
    pub instance_id: String,
    pub created: i64,
    #[serde(default)]
    pub last_state: Option<ImageState>,
    /// Size in bytes, once the image is available.
    #[serde(default)]
    pub size_bytes: Option<u64>,
}

/// One job the session has submitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    pub command_id: String,
    pub instance_id: String,
    pub submitted: i64,
    #[serde(default)]
    pub dataset: Option<String>,
    #[serde(default)]
    pub config: Option<String>,
    #[serde(default)]
    pub result_dir: Option<String>,
    #[serde(default)]
    pub last_status: Option<JobState>,
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// When the command started and ended on the instance, epoch seconds, as last read.
    #[serde(default)]
    pub started: Option<i64>,
    #[serde(default)]
    pub ended: Option<i64>,
    /// The analysis-level status (the dataset's status object) when the command ended.
    #[serde(default)]
    pub analysis: Option<String>,
}

/// The `.devami/` folder of one blueprint, locked for this process while it is open.
#[derive(Debug)]
pub struct StateStore {
    dir: PathBuf,
    // Held for the life of the store: the kernel releases the lock when the file is closed.
    _lock: File,
}

impl StateStore {
    /// Opens (creating if needed) the session folder of `blueprint_dir` and takes its lock.
    pub fn open(blueprint_dir: &Path) -> Result<StateStore> {
        let dir = blueprint_dir.join(STATE_DIR);
        match fs::create_dir(&dir) {
            Ok(()) => {
                // Keep session files out of the user's repository.
                let ignore = dir.join(".gitignore");
                fs::write(&ignore, "*\n").map_err(|e| Error::io("write", &ignore, e))?;
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io("create", &dir, e)),
        }
        let lock_path = dir.join(LOCK_FILE);
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| Error::io("open", &lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                // The holder wrote one short line; read no more than a screenful of whatever is
                // there (the message escapes and cuts it).
                let mut bytes = Vec::new();
                let _ = (&mut lock).take(HOLDER_BYTES).read_to_end(&mut bytes);
                let holder = String::from_utf8_lossy(&bytes);
                let holder = holder.trim();
                let holder = if holder.is_empty() {
                    "a process that is still starting".to_string()
                } else {
                    holder.to_string()
                };
                return Err(Error::Locked { dir: blueprint_dir.to_path_buf(), holder });
            }
            Err(fs::TryLockError::Error(e)) => return Err(Error::io("lock", &lock_path, e)),
        }
        let me = format!("pid {} since {} UTC", std::process::id(), clock::format(clock::now()));
        lock.set_len(0)
            .and_then(|()| lock.seek(SeekFrom::Start(0)))
            .and_then(|_| lock.write_all(me.as_bytes()))
            .map_err(|e| Error::io("write", &lock_path, e))?;
        Ok(StateStore { dir, _lock: lock })
    }

    /// Removes the temporary files of atomic writes (`*.tmp-<pid>`, regular files only) in the
    /// locked `.devami/` folder: the lock's holder is the only writer there, so every one of them
    /// was left by a writer that was killed. Best effort: a file that cannot be removed stays.
    pub fn remove_dead_temps(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let is_temp = name.to_str().is_some_and(atomic::is_temp_name);
            if is_temp && entry.file_type().is_ok_and(|t| t.is_file()) {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    /// The `.devami/` folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The state file's path.
    pub fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// Loads the state, or returns `None` when this blueprint has no session yet.
    ///
    /// Only a regular file is read: a symbolic link is refused (a save replaces the file, so it
    /// would replace the link and fork the state it pointed to; a dangling one is not "no
    /// session"), and so is a FIFO or a device (reading one could block forever).
    pub fn load(&self) -> Result<Option<State>> {
        let path = self.path();
        match fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => return Err(symlink_refused(&path)),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("read", &path, e)),
        }
        let bytes = crate::regular::read(&path).map_err(|e| Error::io("read", &path, e))?;
        let state: State = crate::regular::from_json_object(&bytes)
            .map_err(|message| Error::StateCorrupt { path: path.clone(), message })?;
        if state.backend.parse::<crate::backend::BackendKind>().is_err() {
            return Err(Error::StateCorrupt {
                path,
                message: format!(
                    "its `backend` is {}, which is neither `local` nor `aws`",
                    crate::error::shown(&state.backend)
                ),
            });
        }
        if state.version != STATE_VERSION {
            return Err(Error::StateCorrupt {
                path,
                message: format!(
                    "format version {} is not the version {STATE_VERSION} this devami reads",
                    state.version
                ),
            });
        }
        Ok(Some(state))
    }

    /// Writes the state atomically.
    pub fn save(&self, state: &State) -> Result<()> {
        let mut text = serde_json::to_string_pretty(state).map_err(|e| Error::StateCorrupt {
            path: self.path(),
            message: format!("cannot serialise: {e}"),
        })?;
        text.push('\n');
        atomic::write(&self.path(), text.as_bytes())
    }
}

/// Why a symbolic link is not accepted as the state file: an I/O error naming the link's target
/// (or the error that following it gives, e.g. a loop).
fn symlink_refused(path: &Path) -> Error {
    if let Err(e) = fs::metadata(path)
        && e.kind() != io::ErrorKind::NotFound
    {
        return Error::io("read", path, e);
    }
    let target = fs::read_link(path).map(|t| crate::error::shown(&t.to_string_lossy())).unwrap_or_default();
    let dangling = if path.exists() { "" } else { ", which does not exist" };
    Error::io(
        "read",
        path,
        io::Error::other(format!(
            "it is a symbolic link (to {target}{dangling}), and devami keeps its state only in a regular file, \
             which every save replaces; put the file itself in its place, or remove the link to start a fresh session"
        )),
    )
}

/// Creates a FIFO at `path` (for tests of the code that must not block on one).
#[cfg(test)]
pub(crate) fn make_fifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("a path without NUL");
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo {}", path.display());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_second_store_is_locked_out() {
        let tmp = tempfile::tempdir().unwrap();
        let store = StateStore::open(tmp.path()).unwrap();
        assert_eq!(store.load().unwrap(), None);
        let mut st = State::new("local");
        st.instance = Some("i-0123456789abcdef0".into());
        st.instances.push(InstanceRecord {
            id: "i-0123456789abcdef0".into(),
            source: Some("ubuntu22".into()),
            image_id: None,
            instance_type: Some("t2.micro".into()),
            recorded: 5,
            timeout_minutes: Some(60),
            last_state: Some(SeenState::Cloud(InstanceState::Running)),
            last_seen: Some(6),
            launch_time: None,
            volume_gib: None,
            origin: "launched".into(),
        });
        store.save(&st).unwrap();
        assert_eq!(store.load().unwrap(), Some(st.clone()));
        assert_eq!(st.current().map(|r| r.id.as_str()), Some("i-0123456789abcdef0"));
        assert_eq!(fs::read_to_string(tmp.path().join(".devami/.gitignore")).unwrap(), "*\n");

        let err = StateStore::open(tmp.path()).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Locked { .. }), "{msg}");
        assert!(msg.contains(&format!("pid {}", std::process::id())), "{msg}");
        drop(store);
        StateStore::open(tmp.path()).unwrap();
    }

    fn record(launch_time: Option<i64>, timeout_minutes: Option<u32>) -> InstanceRecord {
        InstanceRecord {
            id: "i-1".into(),
            source: None,
            image_id: None,
            instance_type: None,
            recorded: 0,
            timeout_minutes,
            last_state: None,
            last_seen: None,
            launch_time,
            volume_gib: None,
            origin: "launched".into(),
        }
    }

    #[test]
    fn lifetime_left_saturates_on_extreme_times() {
        assert_eq!(record(Some(100), Some(1)).lifetime_left(130), Some(30));
        assert_eq!(record(None, Some(1)).lifetime_left(130), None);
        assert_eq!(record(Some(i64::MAX), Some(u32::MAX)).lifetime_left(0), Some(i64::MAX));
        assert_eq!(record(Some(i64::MIN), Some(60)).lifetime_left(1_700_000_000), Some(i64::MIN));
        assert_eq!(record(Some(0), Some(60)).lifetime_left(i64::MIN), Some(i64::MAX));
    }

    /// The store's state file holding `text`, and the error loading it gives.
    fn load_error(text: &[u8]) -> String {
        let tmp = tempfile::tempdir().unwrap();
        let store = StateStore::open(tmp.path()).unwrap();
        fs::write(store.path(), text).unwrap();
        let err = store.load().unwrap_err();
        assert!(matches!(err, Error::StateCorrupt { .. }), "{err}");
        assert_eq!(fs::read(store.path()).unwrap(), text);
        err.to_string()
    }

    #[test]
    fn a_state_file_must_be_an_object_of_a_known_backend() {
        assert!(
            load_error(b"[1, \"local\", null]\n").contains("must hold one JSON object, and it holds a list")
        );
        assert!(load_error(b" \"x\"").contains("it holds a string"));
        assert!(!load_error(b"tru").contains("it holds"));
        let huge = format!("{{\"version\": 1, \"{}\": 1}}", "k".repeat(1 << 20));
        let msg = load_error(huge.as_bytes());
        assert!(msg.contains("unknown field") && msg.len() < 1000, "{msg}");
        let msg =
            load_error(format!("{{\"version\": 1, \"backend\": \"{}\"}}", "l".repeat(1 << 20)).as_bytes());
        assert!(msg.contains("neither `local` nor `aws`") && msg.len() < 1000, "{msg}");
    }

    #[test]
    fn only_a_regular_state_file_is_read() {
        let tmp = tempfile::tempdir().unwrap();
        let store = StateStore::open(tmp.path()).unwrap();
        let path = store.path();
        // A dangling link is not "no session yet".
        std::os::unix::fs::symlink("../elsewhere/state.json", &path).unwrap();
        let msg = crate::console::render_error(&store.load().unwrap_err());
        assert!(msg.contains("symbolic link (to `../elsewhere/state.json`, which does not exist)"), "{msg}");
        assert!(fs::symlink_metadata(&path).unwrap().file_type().is_symlink());
        // Nor is a link to a real file, which a save would replace.
        fs::remove_file(&path).unwrap();
        fs::write(tmp.path().join("real.json"), serde_json::to_string(&State::new("local")).unwrap())
            .unwrap();
        std::os::unix::fs::symlink("../real.json", &path).unwrap();
        let msg = crate::console::render_error(&store.load().unwrap_err());
        assert!(msg.contains("symbolic link (to `../real.json`)"), "{msg}");
        // A FIFO is refused without waiting for a writer.
        fs::remove_file(&path).unwrap();
        make_fifo(&path);
        let msg = crate::console::render_error(&store.load().unwrap_err());
        assert!(msg.contains("a named pipe (FIFO), not a regular file"), "{msg}");
        fs::remove_file(&path).unwrap();
        fs::create_dir(&path).unwrap();
        let msg = crate::console::render_error(&store.load().unwrap_err());
        assert!(msg.contains("Is a directory"), "{msg}");
    }

    #[test]
    fn the_lock_holder_is_read_bounded_and_shown_safely() {
        let tmp = tempfile::tempdir().unwrap();
        let store = StateStore::open(tmp.path()).unwrap();
        let lock = tmp.path().join(STATE_DIR).join(LOCK_FILE);
        fs::write(&lock, format!("pid 1\u{1b}]0;owned\u{7}\u{1b}[2J{}", "z".repeat(1 << 20))).unwrap();
        let msg = StateStore::open(tmp.path()).unwrap_err().to_string();
        assert!(msg.contains("(pid 1\\u{1b}]0;owned\\u{7}\\u{1b}[2Jzz"), "{msg}");
        assert!(!msg.chars().any(char::is_control) && msg.len() < 400, "{msg}");
        drop(store);
    }

    #[test]
    fn the_lock_holder_removes_what_killed_writers_left() {
        let tmp = tempfile::tempdir().unwrap();
        drop(StateStore::open(tmp.path()).unwrap());
        let dir = tmp.path().join(STATE_DIR);
        // A state write and a blueprint rewrite killed before their rename.
        fs::write(dir.join(".state.json.tmp-4242"), b"{\"partial").unwrap();
        fs::write(dir.join("stack_config_template.json.tmp-77"), b"{").unwrap();
        fs::write(dir.join("state.json"), b"kept").unwrap();
        // Not temporary files of an atomic write: kept.
        fs::write(dir.join("notes.tmp-12a"), b"x").unwrap();
        fs::write(dir.join(".tmp-12"), b"x").unwrap();
        fs::create_dir(dir.join("folder.tmp-3")).unwrap();
        let store = StateStore::open(tmp.path()).unwrap();
        assert!(dir.join(".state.json.tmp-4242").exists(), "removed before the state was read");
        store.remove_dead_temps();
        let mut names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, [".gitignore", ".tmp-12", "folder.tmp-3", "lock", "notes.tmp-12a", "state.json"]);
        // While the lock is held, a second open (refused) touches nothing.
        fs::write(dir.join(".state.json.tmp-5"), b"x").unwrap();
        assert!(StateStore::open(tmp.path()).is_err());
        assert!(dir.join(".state.json.tmp-5").exists());
        drop(store);
    }

    #[test]
    fn damaged_state_is_reported_and_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let store = StateStore::open(tmp.path()).unwrap();
        fs::write(store.path(), b"{\"version\": 1, \"backend\": ").unwrap();
        let err = store.load().unwrap_err();
        assert!(matches!(err, Error::StateCorrupt { .. }), "{err}");
        assert!(err.to_string().contains("move it aside"), "{err}");
        assert_eq!(fs::read(store.path()).unwrap(), b"{\"version\": 1, \"backend\": ");
    }
}
