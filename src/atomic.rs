//! Writing a file so that readers see the old content or the new, never a mix, even after a crash.
//!
//! The bytes go to a temporary file `<name>.tmp-<pid>` (or `.<name>.tmp-<pid>`) on the target's
//! file system, which is synced, then renamed over the target ([`replace`]) or linked to it, never
//! over an existing file ([`create_new`]); then the target's folder is synced. A writer killed
//! half-way leaves only its temporary file, whose name [`is_temp_name`] and [`temp_pid`] recognise,
//! so that the folder's cleanup can remove it.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::Error;

/// What a temporary file's name has between the target's name and the writer's pid.
pub const TEMP_MARKER: &str = ".tmp-";

/// Whether `name` is a temporary file of an atomic write: `<anything>.tmp-<pid>` (what
/// [`replace`] names them).
pub fn is_temp_name(name: &str) -> bool {
    temp_pid(name, TEMP_MARKER).is_some()
}

/// The pid a temporary file `<stem><marker><pid>` is named after, when `name` has that shape with
/// a non-empty stem.
pub fn temp_pid(name: &str, marker: &str) -> Option<u32> {
    let (stem, pid) = name.rsplit_once(marker)?;
    if stem.is_empty() || pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Where [`replace`] puts its temporary file, and how it names it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Temp<'a> {
    /// A folder to hold it instead of the target's own (one that git ignores, say), on the
    /// target's file system. Should the rename cross file systems after all, the write is done
    /// again beside the target.
    pub dir: Option<&'a Path>,
    /// Whether its name starts with a dot (`.<name>.tmp-<pid>`).
    pub hidden: bool,
    /// Whether the file is readable by its owner alone (mode 0600, from its creation on) instead of
    /// keeping the permissions of the file it replaces.
    pub private: bool,
}

/// The step of a write that failed: what was being done, to which file, and the system's error.
#[derive(Debug)]
pub struct WriteError {
    /// `create`, `write`, `sync` or `replace`.
    pub action: &'static str,
    pub path: PathBuf,
    pub source: io::Error,
}

impl WriteError {
    fn at(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> WriteError {
        move |source| WriteError { action, path: path.to_path_buf(), source }
    }
}

impl From<WriteError> for Error {
    fn from(e: WriteError) -> Error {
        Error::io(e.action, e.path, e.source)
    }
}

/// [`replace`] with a hidden temporary file beside `path` (`.<name>.tmp-<pid>`); a failure is
/// reported as writing `path`. What documents and state files use.
pub fn write(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    replace(path, bytes, Temp { hidden: true, ..Temp::default() })
        .map_err(|e| Error::io("write", path, e.source))
}

/// [`write`] of a file readable by its owner alone (mode 0600), such as a key pair.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    replace(path, bytes, Temp { hidden: true, private: true, ..Temp::default() })
        .map_err(|e| Error::io("write", path, e.source))
}

/// Replaces the file at `path` (or creates it) with `bytes`. The new file keeps the permissions
/// of the one it replaces. When anything fails before the rename, `path` is as it was and the
/// temporary file is gone.
pub fn replace(path: &Path, bytes: &[u8], temp: Temp) -> Result<(), WriteError> {
    let permissions = if temp.private {
        Some(fs::Permissions::from_mode(0o600))
    } else {
        fs::metadata(path).ok().map(|m| m.permissions())
    };
    let name = temp_name(path, temp.hidden);
    let through_dir = temp.dir.map(|dir| rename_from(&dir.join(&name), path, bytes, permissions.clone()));
    match through_dir {
        Some(Err(e)) if e.source.raw_os_error() == Some(libc::EXDEV) => {
            rename_from(&path.with_file_name(&name), path, bytes, permissions)?
        }
        Some(result) => result?,
        None => rename_from(&path.with_file_name(&name), path, bytes, permissions)?,
    }
    sync_folder(path)
}

/// Creates the file at `path` holding `bytes`, never over an existing file: that is an error of
/// kind `AlreadyExists`. The file appears whole (linked from the hidden temporary file), except
/// where the file system has no hard links: there it is created exclusively and then written.
pub fn create_new(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    let tmp = path.with_file_name(temp_name(path, true));
    if let Err(e) = write_synced(&tmp, bytes, None) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(WriteError::at("create", path)(e)),
        // No hard links here: an exclusive create does not overwrite either.
        Err(_) => {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
                .map_err(WriteError::at("create", path))?;
            file.write_all(bytes).and_then(|()| file.sync_all()).map_err(WriteError::at("create", path))?;
        }
    }
    sync_folder(path)
}

/// `<name>.tmp-<pid>`, or `.<name>.tmp-<pid>` when `hidden`.
fn temp_name(path: &Path, hidden: bool) -> OsString {
    let mut name = OsString::from(if hidden { "." } else { "" });
    name.push(path.file_name().unwrap_or_default());
    name.push(format!("{TEMP_MARKER}{}", std::process::id()));
    name
}

/// Writes `bytes` to `tmp` and renames it over `path`; `tmp` is gone either way.
fn rename_from(
    tmp: &Path,
    path: &Path,
    bytes: &[u8],
    permissions: Option<fs::Permissions>,
) -> Result<(), WriteError> {
    let written = write_synced(tmp, bytes, permissions)
        .and_then(|()| fs::rename(tmp, path).map_err(WriteError::at("replace", path)));
    if written.is_err() {
        let _ = fs::remove_file(tmp);
    }
    written
}

fn write_synced(tmp: &Path, bytes: &[u8], permissions: Option<fs::Permissions>) -> Result<(), WriteError> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if let Some(permissions) = &permissions {
        options.mode(permissions.mode());
    }
    let mut file = options.open(tmp).map_err(WriteError::at("create", tmp))?;
    file.write_all(bytes).map_err(WriteError::at("write", tmp))?;
    if let Some(permissions) = permissions {
        file.set_permissions(permissions).map_err(WriteError::at("write", tmp))?;
    }
    file.sync_all().map_err(WriteError::at("sync", tmp))
}

/// Syncs the folder of `path`, so that the new entry survives a crash. A file system that cannot
/// sync a folder (`EINVAL`) is left at that.
fn sync_folder(path: &Path) -> Result<(), WriteError> {
    let folder = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    match File::open(folder).and_then(|d| d.sync_all()) {
        Err(e) if e.kind() != io::ErrorKind::InvalidInput => Err(WriteError::at("sync", folder)(e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_carry_their_pid() {
        assert_eq!(temp_pid(".state.json.tmp-4242", ".tmp-"), Some(4242));
        assert_eq!(temp_pid("big.bin.devami-part-17", ".devami-part-"), Some(17));
        assert_eq!(temp_pid("a.devami-part-1.devami-part-2", ".devami-part-"), Some(2));
        for bad in [".devami-part-1", "x.devami-part-", "x.devami-part-1a", "x.devami-part--1", "x.bin"] {
            assert_eq!(temp_pid(bad, ".devami-part-"), None, "{bad}");
        }
        assert!(is_temp_name("stack_config_template.json.tmp-1") && !is_temp_name("state.json"));
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut n: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    }

    #[test]
    fn replace_keeps_permissions_and_leaves_no_temporary_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f.json");
        replace(&path, b"one", Temp { dir: None, hidden: true, private: false }).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"one");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        replace(&path, b"two", Temp::default()).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o640);
        let aside = tmp.path().join("aside");
        fs::create_dir(&aside).unwrap();
        replace(&path, b"three", Temp { dir: Some(&aside), hidden: false, private: false }).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"three");
        assert_eq!(names(tmp.path()), ["aside", "f.json"]);
        assert!(names(&aside).is_empty());
    }

    #[test]
    fn a_private_file_is_its_owners_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("keys.json");
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        replace(&path, b"secret", Temp { private: true, ..Temp::default() }).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"secret");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(names(tmp.path()), ["keys.json"]);
    }

    #[test]
    fn temporary_names_are_what_the_cleanup_recognises() {
        let pid = std::process::id();
        for hidden in [false, true] {
            let name = temp_name(Path::new("d/state.json"), hidden).into_string().unwrap();
            assert!(is_temp_name(&name), "{name}");
            assert_eq!(temp_pid(&name, TEMP_MARKER), Some(pid));
            assert_eq!(name.starts_with('.'), hidden);
        }
    }

    #[test]
    fn a_failed_replace_names_the_step_and_leaves_the_target() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        fs::write(&path, "old").unwrap();
        let e = replace(
            &path,
            b"new",
            Temp { dir: Some(&tmp.path().join("missing")), hidden: false, private: false },
        )
        .unwrap_err();
        assert_eq!((e.action, e.path), ("create", tmp.path().join("missing").join(temp_name(&path, false))));
        assert_eq!(fs::read_to_string(&path).unwrap(), "old");
        fs::create_dir(tmp.path().join("folder")).unwrap();
        let e = replace(&tmp.path().join("folder"), b"x", Temp::default()).unwrap_err();
        assert_eq!(e.action, "replace");
        assert_eq!(names(tmp.path()), ["f", "folder"]);
    }

    #[test]
    fn create_new_never_overwrites() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("rec.devami");
        create_new(&path, b"header\n").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"header\n");
        let e = create_new(&path, b"other\n").unwrap_err();
        assert_eq!(e.source.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&path).unwrap(), b"header\n");
        assert_eq!(names(tmp.path()), ["rec.devami"]);
        let e = create_new(&tmp.path().join("no/such"), b"x").unwrap_err();
        assert_eq!(e.action, "create");
    }
}
