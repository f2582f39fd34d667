//! The local backend's machine-wide home: `$DEVAMI_HOME` (default `~/.local/share/devami`).
//!
//! Invariants: several shells and detached job supervisors share one home, so every change of a
//! document happens under [`Home::lock`] and is written atomically; ids are drawn from the
//! kernel's random source and checked against every id ever issued, so they never repeat.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::LocalError;
use crate::error::{Error, Result};
use crate::regular::{self, from_json_object};

/// The machine-wide folder of the local backend: one folder per object, one JSON document per
/// folder.
///
/// ```text
/// images/<ami-id>/image.json          an image: name, state, the engine image it is, size
/// instances/<i-id>/instance.json      an instance: state, tags, image, launch time, container
/// instances/<i-id>/run/               its plumbing, bound at /run/devami inside (power commands,
///                                     the stop request a `shutdown` leaves)
/// commands/<uuid>/job.json            a job: command, state, exit code
/// buckets/<bucket>/<key>              the objects served by the embedded S3 endpoint
/// engine/                             the Podman service devami starts (socket, config, log)
/// aliases.json                        aliases bound by `import_image --as`
/// run/                                endpoint address and key pair
/// ids                                 every id ever issued
/// lock                                taken for every read-modify-write of the documents above
/// ```
#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
}

/// Exclusive access to the home's documents; released on drop.
#[derive(Debug)]
pub struct HomeLock {
    _file: File,
}

impl Home {
    /// The home from `$DEVAMI_HOME`, else the user's data folder; created if missing.
    pub fn from_env() -> Result<Home> {
        let root = match std::env::var_os("DEVAMI_HOME") {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => {
                let data = std::env::var_os("XDG_DATA_HOME")
                    .map(PathBuf::from)
                    .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
                    .ok_or(LocalError::NoHome)?;
                data.join("devami")
            }
        };
        Home::at(root)
    }

    /// The home at `root`; created if missing.
    pub fn at(root: PathBuf) -> Result<Home> {
        let root = if root.is_absolute() {
            root
        } else {
            std::env::current_dir().map_err(|e| Error::io("read", ".", e))?.join(root)
        };
        let home = Home { root };
        for dir in ["images", "instances", "commands", "buckets", "engine", "run"] {
            let p = home.root.join(dir);
            fs::create_dir_all(&p).map_err(|e| Error::io("create", &p, e))?;
        }
        Ok(home)
    }

    /// The home folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `images/<id>`.
    pub fn image_dir(&self, id: &str) -> PathBuf {
        self.root.join("images").join(id)
    }

    /// `instances/<id>`.
    pub fn instance_dir(&self, id: &str) -> PathBuf {
        self.root.join("instances").join(id)
    }

    /// `commands/<id>`.
    pub fn command_dir(&self, id: &str) -> PathBuf {
        self.root.join("commands").join(id)
    }

    /// `buckets/`, the root the S3 endpoint serves.
    pub fn buckets_dir(&self) -> PathBuf {
        self.root.join("buckets")
    }

    /// `engine/`.
    pub fn engine_dir(&self) -> PathBuf {
        self.root.join("engine")
    }

    /// What the engine's containers and images of this home are labelled with
    /// (`devami.home=<this>`): a digest of the home's path, so homes never take each other's.
    pub fn label(&self) -> String {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self.root.as_os_str().as_encoded_bytes() {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        format!("{h:016x}")
    }

    /// `n` random bytes as hex.
    pub fn random_hex(&self, n: usize) -> Result<String> {
        let mut b = vec![0u8; n];
        fill_random(&mut b).map_err(|e| Error::io("read", "/dev/urandom", e))?;
        Ok(b.iter().map(|x| format!("{x:02x}")).collect())
    }

    /// `run/`.
    pub fn run_dir(&self) -> PathBuf {
        self.root.join("run")
    }

    /// The names of the entries of a folder of the home (`images`, `instances`, `commands`).
    pub fn list(&self, folder: &str) -> Result<Vec<String>> {
        let dir = self.root.join(folder);
        let mut names = Vec::new();
        for entry in fs::read_dir(&dir).map_err(|e| Error::io("read", &dir, e))? {
            let entry = entry.map_err(|e| Error::io("read", &dir, e))?;
            if let Some(name) = entry.file_name().to_str()
                && !name.starts_with('.')
            {
                names.push(name.to_string());
            }
        }
        names.sort();
        Ok(names)
    }

    /// Takes the home's lock (blocking until other devami processes release it).
    pub fn lock(&self) -> Result<HomeLock> {
        let path = self.root.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io("open", &path, e))?;
        file.lock().map_err(|e| Error::io("lock", &path, e))?;
        Ok(HomeLock { _file: file })
    }

    /// A new id `<prefix>-` + 17 hex digits (`i`, `ami`, `layer`), never issued before.
    pub fn new_id(&self, prefix: &str, _lock: &HomeLock) -> Result<String> {
        self.issue(|| {
            let b = random_bytes::<9>()?;
            let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
            Ok(format!("{prefix}-{}", &hex[..17]))
        })
    }

    /// A new command id, a random (version 4) UUID, never issued before.
    pub fn new_uuid(&self, _lock: &HomeLock) -> Result<String> {
        self.issue(|| {
            let mut b = random_bytes::<16>()?;
            b[6] = (b[6] & 0x0f) | 0x40;
            b[8] = (b[8] & 0x3f) | 0x80;
            let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
            Ok(format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32]))
        })
    }

    fn issue(&self, mut draw: impl FnMut() -> io::Result<String>) -> Result<String> {
        let path = self.root.join("ids");
        let issued = match fs::read_to_string(&path) {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(Error::io("read", &path, e)),
        };
        loop {
            let id = draw().map_err(|e| Error::io("read", "/dev/urandom", e))?;
            if issued.lines().any(|l| l == id) {
                continue;
            }
            let mut f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| Error::io("write", &path, e))?;
            writeln!(f, "{id}").and_then(|()| f.sync_data()).map_err(|e| Error::io("write", &path, e))?;
            return Ok(id);
        }
    }
}

fn random_bytes<const N: usize>() -> io::Result<[u8; N]> {
    let mut b = [0u8; N];
    fill_random(&mut b)?;
    Ok(b)
}

/// Fills `b` from the kernel's random source.
fn fill_random(b: &mut [u8]) -> io::Result<()> {
    File::open("/dev/urandom")?.read_exact(b)
}

/// Reads a JSON document that is an object (every document of the home but the job
/// environments): a list is refused, although serde would read a struct from one.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = regular::read(path).map_err(|e| Error::io("read", path, e))?;
    from_json_object(&bytes).map_err(|message| Error::StateCorrupt { path: path.to_path_buf(), message })
}

/// Reads a JSON document of any shape (a job's environment is a list of pairs).
pub fn read_json_any<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = regular::read(path).map_err(|e| Error::io("read", path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::StateCorrupt {
        path: path.to_path_buf(),
        message: crate::error::clipped(&e.to_string(), 300),
    })
}

/// Writes a JSON document atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::StateCorrupt { path: path.to_path_buf(), message: e.to_string() })?;
    text.push('\n');
    crate::atomic::write(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_look_like_aws_and_never_repeat() {
        let tmp = tempfile::tempdir().unwrap();
        let home = Home::at(tmp.path().to_path_buf()).unwrap();
        let lock = home.lock().unwrap();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let id = home.new_id("i", &lock).unwrap();
            assert_eq!(id.len(), 19, "{id}");
            assert!(id[2..].chars().all(|c| c.is_ascii_hexdigit()), "{id}");
            assert!(seen.insert(id));
        }
        let u = home.new_uuid(&lock).unwrap();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        let issued = fs::read_to_string(tmp.path().join("ids")).unwrap();
        assert_eq!(issued.lines().count(), 201);
    }
}
