//! Data in the analysis bucket (the blueprint's PipelineName): `upload`, `download`, `ls`.
//!
//! Invariants: what a job reads is exactly what was uploaded (one object store for both
//! backends); every key of a folder download is checked before anything is written, and none may
//! leave the target folder; a download never leaves a partial file under its final name.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use futures_util::stream::{self, StreamExt};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::Semaphore;

use crate::backend::objstore;
use crate::backend::{Backend, BackendError};
use crate::clock;
use crate::commands::image::human_bytes;
use crate::error::{Error, Result};
use crate::output::Output;
use crate::parse::Args;
use crate::session::{Cloud, DevAmi};

/// Files in flight at once in a folder transfer.
const FILES_IN_FLIGHT: usize = 32;
/// File data in flight at once in a folder transfer; a file above the multipart threshold takes
/// all of it (its parts already travel concurrently).
const BYTES_IN_FLIGHT: u64 = 64 * 1024 * 1024;
/// On a terminal, a transfer larger than this shows a progress bar...
const BAR_MIN_BYTES: u64 = 8 * 1024 * 1024;
/// ...and so does one of more files than this.
const BAR_MIN_FILES: usize = 50;

/// One file of a transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Item {
    local: PathBuf,
    key: String,
    size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Up,
    Down,
}

impl DevAmi {
    fn bucket(&self) -> Result<String> {
        Ok(self.bp()?.bucket()?.to_string())
    }

    /// `upload LOCAL [KEY]`.
    pub(crate) fn cmd_upload(&mut self, a: &Args) -> Result<Output> {
        let local = PathBuf::from(a.str("local").unwrap_or_default());
        let meta = local_metadata(&local)?;
        let bucket = self.bucket()?;
        let name = local.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let key = match a.str("key") {
            Some(k) => k.trim_start_matches('/').to_string(),
            None => {
                let group = self.bp()?.affiliates().into_iter().next().ok_or(Error::NoAffiliateGroup {
                    command: "upload",
                    give: "a KEY",
                    default: Some("`GROUP/inputs/`"),
                })?;
                format!("{group}/inputs/{name}")
            }
        };
        if meta.is_dir() {
            let items = folder_items(&local, &key)?;
            let cloud = self.cloud()?;
            let total = transfer(cloud, &bucket, &items, Direction::Up)?;
            return Ok(Output::text(format!(
                "uploaded {} ({}) to s3://{bucket}/{key}",
                files(items.len()),
                human_bytes(total)
            )));
        }
        let key = if key.is_empty() || key.ends_with('/') { format!("{key}{name}") } else { key };
        let items = [Item { local: local.clone(), key, size: meta.len() }];
        let cloud = self.cloud()?;
        let total = transfer(cloud, &bucket, &items, Direction::Up)?;
        Ok(Output::text(format!(
            "uploaded {} to s3://{bucket}/{} ({})",
            local.display(),
            items[0].key,
            human_bytes(total)
        )))
    }

    /// `download KEY [LOCAL]`: one object, or every object under `KEY/` into a folder.
    pub(crate) fn cmd_download(&mut self, a: &Args) -> Result<Output> {
        let key = a.str("key").unwrap_or_default().trim_start_matches('/').to_string();
        let given = a.str("local").filter(|l| !l.is_empty());
        let bucket = self.bucket()?;
        let cloud = self.cloud()?;
        let objects = cloud.call("listing the bucket", cloud.backend.list_objects(&bucket, &key))?;
        let name = key.trim_end_matches('/').rsplit('/').next().filter(|n| !n.is_empty()).unwrap_or(&bucket);

        if let Some(object) = objects.iter().find(|o| o.key == key && !key.ends_with('/')) {
            let target = file_target(given, name)?;
            let items = [Item { local: target.clone(), key: key.clone(), size: object.size }];
            let n = transfer(cloud, &bucket, &items, Direction::Down)?;
            return Ok(Output::text(format!(
                "downloaded s3://{bucket}/{key} to {} ({})",
                target.display(),
                human_bytes(n)
            )));
        }

        let prefix = if key.is_empty() || key.ends_with('/') { key.clone() } else { format!("{key}/") };
        let under: Vec<_> =
            objects.into_iter().filter(|o| o.key.starts_with(&prefix) && !o.key.ends_with('/')).collect();
        if under.is_empty() {
            return Err(Error::ObjectMissing { bucket, key });
        }
        let root = match given {
            Some(l) => PathBuf::from(l),
            None => PathBuf::from(checked_name(name)?),
        };
        let items = under
            .iter()
            .map(|o| {
                let rel = safe_relative(&o.key[prefix.len()..]).ok_or_else(|| Error::KeyLeavesFolder {
                    bucket: bucket.clone(),
                    prefix: prefix.clone(),
                    key: o.key.clone(),
                })?;
                Ok(Item { local: root.join(rel), key: o.key.clone(), size: o.size })
            })
            .collect::<Result<Vec<_>>>()?;
        let total = transfer(cloud, &bucket, &items, Direction::Down)?;
        Ok(Output::text(format!(
            "downloaded {} ({}) from s3://{bucket}/{prefix} to {}",
            files(items.len()),
            human_bytes(total),
            root.display()
        )))
    }

    /// `ls [PREFIX]`.
    pub(crate) fn cmd_ls(&mut self, a: &Args) -> Result<Output> {
        let prefix = a.str("prefix").unwrap_or("").to_string();
        let bucket = self.bucket()?;
        let cloud = self.cloud()?;
        let objects = cloud.call("listing the bucket", cloud.backend.list_objects(&bucket, &prefix))?;
        if objects.is_empty() {
            return Ok(Output::text(format!("s3://{bucket}/{prefix} is empty")));
        }
        let rows = objects
            .iter()
            .map(|o| {
                vec![
                    o.key.clone(),
                    human_bytes(o.size),
                    o.modified.map(clock::format).unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        Ok(Output::table(&["key", "size", "modified (UTC)"], rows))
    }
}

/// "1 file", "12 files".
fn files(n: usize) -> String {
    if n == 1 { "1 file".to_string() } else { format!("{n} files") }
}

/// What `upload` is given, with a one-line error when it does not exist.
/// What an upload source is: a folder or a regular file (a FIFO or a device is refused before
/// anything is sent, since reading it could block or never end).
fn local_metadata(local: &Path) -> Result<std::fs::Metadata> {
    let meta = std::fs::metadata(local).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::LocalMissing { path: local.to_path_buf() },
        _ => Error::io("read", local, e),
    })?;
    if !meta.is_dir() {
        crate::regular::check(&meta).map_err(|e| Error::io("read", local, e))?;
    }
    Ok(meta)
}

/// Moves `items` in one backend call, [`FILES_IN_FLIGHT`] files and [`BYTES_IN_FLIGHT`] at a
/// time, with a progress bar when it is worth one. Stops at the first failure. Returns the bytes.
fn transfer(cloud: &Cloud, bucket: &str, items: &[Item], direction: Direction) -> Result<u64> {
    let bytes = items.iter().map(|i| i.size).sum();
    let bar = Bar::new(direction, items, bytes);
    let backend: &dyn Backend = &*cloud.backend;
    let op = match direction {
        Direction::Up => "uploading",
        Direction::Down => "downloading",
    };
    cloud.call(op, async {
        let budget = Semaphore::new(permits(BYTES_IN_FLIGHT) as usize);
        let mut moved = stream::iter(items)
            .map(|item| move_one(backend, bucket, item, direction, &budget, &bar))
            .buffer_unordered(FILES_IN_FLIGHT);
        let mut total = 0;
        while let Some(n) = moved.next().await {
            total += n?;
        }
        Ok(total)
    })
}

/// Moves one file once its share of the byte budget is free.
async fn move_one(
    backend: &dyn Backend,
    bucket: &str,
    item: &Item,
    direction: Direction,
    budget: &Semaphore,
    bar: &Bar,
) -> std::result::Result<u64, BackendError> {
    let weight = if item.size > objstore::MULTIPART_THRESHOLD { BYTES_IN_FLIGHT } else { item.size };
    // The semaphore is never closed, so the permit always comes.
    let _permit = budget.acquire_many(permits(weight)).await.ok();
    let mut last = 0;
    let mut progress = |done: u64, _total: u64| {
        if done > last {
            bar.add(done - last);
            last = done;
        }
    };
    match direction {
        Direction::Up => backend.upload_file(bucket, &item.key, &item.local, &mut progress).await,
        Direction::Down => backend.download_file(bucket, &item.key, &item.local, &mut progress).await,
    }
}

/// A byte count in semaphore permits (KiB, at least one, at most the whole budget).
fn permits(bytes: u64) -> u32 {
    let kib = bytes.min(BYTES_IN_FLIGHT).div_ceil(1024).max(1);
    u32::try_from(kib).unwrap_or(u32::MAX)
}

/// A progress bar on stderr, only on a terminal and for a large transfer; cleared when dropped.
struct Bar(Option<ProgressBar>);

impl Bar {
    fn new(direction: Direction, items: &[Item], bytes: u64) -> Bar {
        let large = bytes > BAR_MIN_BYTES || items.len() > BAR_MIN_FILES;
        if !large || !std::io::stderr().is_terminal() {
            return Bar(None);
        }
        let verb = match direction {
            Direction::Up => "uploading",
            Direction::Down => "downloading",
        };
        let what = match items {
            [one] => one.key.rsplit('/').next().unwrap_or_default().to_string(),
            _ => files(items.len()),
        };
        let style = ProgressStyle::with_template(
            "{msg} [{wide_bar}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        let bar = ProgressBar::with_draw_target(Some(bytes), ProgressDrawTarget::stderr())
            .with_style(style)
            .with_message(format!("{verb} {what}"));
        bar.tick();
        Bar(Some(bar))
    }

    fn add(&self, bytes: u64) {
        if let Some(bar) = &self.0 {
            bar.inc(bytes);
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

/// Every file under `dir` with its key under `key` and its size, sorted by path. Symbolic links
/// to files are followed; names must be UTF-8 (keys are text).
fn folder_items(dir: &Path, key: &str) -> Result<Vec<Item>> {
    let base = key.trim_end_matches('/');
    walk(dir)?
        .into_iter()
        .map(|(local, size)| {
            let rel = local.strip_prefix(dir).unwrap_or(&local);
            let rel = rel.to_str().ok_or_else(|| Error::NameNotUtf8 { path: local.clone() })?;
            let key = if base.is_empty() { rel.to_string() } else { format!("{base}/{rel}") };
            Ok(Item { local, key, size })
        })
        .collect()
}

/// Every file under `dir` (following links to files, not to folders) with its size, sorted.
fn walk(dir: &Path) -> Result<Vec<(PathBuf, u64)>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(|e| Error::io("read", &d, e))? {
            let entry = entry.map_err(|e| Error::io("read", &d, e))?;
            let path = entry.path();
            let ft = entry.file_type().map_err(|e| Error::io("read", &path, e))?;
            if ft.is_dir() {
                stack.push(path);
            } else if ft.is_file() {
                let size = entry.metadata().map_err(|e| Error::io("read", &path, e))?.len();
                out.push((path, size));
            } else if ft.is_symlink() {
                let meta = std::fs::metadata(&path).map_err(|e| Error::io("follow the link", &path, e))?;
                if meta.is_file() {
                    out.push((path, meta.len()));
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The rest of a key below the downloaded prefix as a relative path, if it stays inside the
/// target folder: no empty, `.` or `..` segment (an empty one would make it absolute), no NUL.
fn safe_relative(rel: &str) -> Option<&Path> {
    let ok = !rel.is_empty() && !rel.contains('\0') && rel.split('/').all(|s| !matches!(s, "" | "." | ".."));
    ok.then(|| Path::new(rel))
}

/// A key's last segment as a default local name, refused when it would not name a new entry.
fn checked_name(name: &str) -> Result<&str> {
    if matches!(name, "." | "..") || name.contains('\0') {
        return Err(Error::KeyNotAFileName { name: name.to_string() });
    }
    Ok(name)
}

/// Where a single object goes: LOCAL, or the key's name inside LOCAL when LOCAL is a folder (or
/// ends with `/`), or the key's name in the current folder.
fn file_target(given: Option<&str>, name: &str) -> Result<PathBuf> {
    match given {
        Some(l) if l.ends_with('/') || Path::new(l).is_dir() => Ok(Path::new(l).join(checked_name(name)?)),
        Some(l) => Ok(PathBuf::from(l)),
        None => Ok(PathBuf::from(checked_name(name)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_leave_the_target_folder_are_refused() {
        for bad in ["", "..", "../x", "a/../../x", "a/./b", "/etc/passwd", "a//b", "a/", "nul\0"] {
            assert!(safe_relative(bad).is_none(), "{bad:?}");
        }
        for good in ["a", "a/b.txt", "..a/b..", "a b/c:d", ".hidden/x"] {
            assert_eq!(safe_relative(good), Some(Path::new(good)));
        }
    }

    #[test]
    fn single_targets() {
        assert_eq!(file_target(None, "f.txt").unwrap(), PathBuf::from("f.txt"));
        assert_eq!(file_target(Some("out.txt"), "f.txt").unwrap(), PathBuf::from("out.txt"));
        assert_eq!(file_target(Some("new/"), "f.txt").unwrap(), PathBuf::from("new/f.txt"));
        assert_eq!(file_target(Some("/"), "f.txt").unwrap(), PathBuf::from("/f.txt"));
        assert!(file_target(None, "..").is_err());
        assert!(file_target(Some("dir/"), ".").is_err());
    }

    #[test]
    fn permits_are_kib_within_the_budget() {
        assert_eq!(permits(0), 1);
        assert_eq!(permits(1), 1);
        assert_eq!(permits(1025), 2);
        assert_eq!(permits(u64::MAX), permits(BYTES_IN_FLIGHT));
        assert_eq!(u64::from(permits(BYTES_IN_FLIGHT)), BYTES_IN_FLIGHT / 1024);
    }

    #[test]
    fn folders_become_keys_under_the_prefix() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("a/b")).unwrap();
        std::fs::write(tmp.path().join("a/b/c.txt"), "abc").unwrap();
        std::fs::write(tmp.path().join("top"), "").unwrap();
        std::os::unix::fs::symlink(tmp.path().join("top"), tmp.path().join("link")).unwrap();
        let keys = |prefix: &str| -> Vec<(String, u64)> {
            folder_items(tmp.path(), prefix).unwrap().into_iter().map(|i| (i.key, i.size)).collect()
        };
        let expected = vec![("p/a/b/c.txt".to_string(), 3), ("p/link".into(), 0), ("p/top".into(), 0)];
        assert_eq!(keys("p"), expected);
        assert_eq!(keys("p/"), expected);
        assert_eq!(keys("")[0].0, "a/b/c.txt");
    }
}
