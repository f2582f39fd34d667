//! The session's persistent state and the lock that guards it.
//!
//! Everything the original `NeuroCaaSAMI` object held between calls (current instance, instance
//! history, image history, job history, saved flag, address) lives in
//! `<blueprint>/.devami/state.json`. [`StateStore`] writes it atomically (temporary file, fsync,
//! rename, fsync of the folder) after every change, so a crash or a closed terminal never loses an
//! instance id. A second devami on the same folder is kept out by an advisory lock on
//! `.devami/lock` (released by the kernel when the holder dies), and is told who holds it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::clock;
use crate::error::{Error, Result};

/// Name of the session folder inside a blueprint folder.
pub const STATE_DIR: &str = ".devami";
const STATE_FILE: &str = "state.json";
const LOCK_FILE: &str = "lock";
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
    /// lifetime are known.
    pub fn lifetime_left(&self, now: i64) -> Option<i64> {
        Some(self.launch_time? + i64::from(self.timeout_minutes?) * 60 - now)
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
    pub last_state: Option<String>,
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

/// One image the session has created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub id: String,
    pub name: String,
    pub instance_id: String,
    pub created: i64,
    #[serde(default)]
    pub last_state: Option<String>,
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
    pub last_status: Option<String>,
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
                let mut holder = String::new();
                let _ = lock.read_to_string(&mut holder);
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

    /// The `.devami/` folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The state file's path.
    pub fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// Loads the state, or returns `None` when this blueprint has no session yet.
    pub fn load(&self) -> Result<Option<State>> {
        let path = self.path();
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("read", &path, e)),
        };
        let state: State = serde_json::from_slice(&bytes)
            .map_err(|e| Error::StateCorrupt { path: path.clone(), message: e.to_string() })?;
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
        write_atomically(&self.path(), text.as_bytes())
    }
}

/// Writes `bytes` to `path` so that readers see the old or the new content, never a mix:
/// a temporary file in the same folder, fsync, rename over the target, fsync of the folder.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io("write", path, e));
    }
    Ok(())
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
            last_state: Some("running".into()),
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
