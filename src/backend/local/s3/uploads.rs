//! The multipart-upload books: what the endpoint saw of each unfinished upload ([`Uploads`]), the
//! files an upload leaves in `buckets/`, and the aborts of uploads their clients abandoned.
//!
//! Invariants: an upload with a request under way is never aborted; an abort removes the upload's
//! record first, so a part that arrives after is refused and one already on its way removes
//! itself ([`LatePart`]).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::STAGING;

/// An unfinished multipart upload without activity (its creation, a part) for this long was
/// abandoned by its client (killed mid-upload, it aborts nothing), and the endpoint aborts it:
/// when it starts and every [`UPLOAD_SWEEP_EVERY`] while it runs, never while a part is on its
/// way. This is the lifecycle rule (`AbortIncompleteMultipartUpload`) S3 users set on their
/// buckets, counted from the last part rather than from the initiation (so a long upload that
/// keeps sending parts is never cut), and shorter than the usual days, as the disk is the
/// developer's own.
pub const ABANDONED_UPLOAD_AFTER: Duration = Duration::from_secs(3600);
/// How often a running endpoint looks for abandoned multipart uploads.
pub const UPLOAD_SWEEP_EVERY: Duration = Duration::from_secs(10 * 60);

/// Removes what interrupted writes left in `buckets/` before the endpoint starts (s3s-fs itself
/// only removes its `.tmp.*` files): staged writes, and abandoned multipart uploads.
pub(super) fn sweep(root: &Path) {
    let _ = fs::remove_dir_all(root.join(STAGING));
    abort_abandoned_uploads(root, &Uploads::default(), ABANDONED_UPLOAD_AFTER);
}

/// The upload a file of an unfinished multipart upload belongs to: `.upload-<id>.json`,
/// `.upload_id-<id>.part-<n>` or the sidecar `.bucket-….object-….upload-<id>.metadata.json`
/// (base64 has no dots, so `.upload-` in a sidecar name is the upload's).
pub(super) fn upload_of(name: &str) -> Option<&str> {
    let id = if let Some(rest) = name.strip_prefix(".upload_id-") {
        rest.split_once(".part-")?.0
    } else if let Some(rest) = name.strip_prefix(".upload-") {
        rest.strip_suffix(".json")?
    } else if name.starts_with(".bucket-") {
        name.strip_suffix(".metadata.json")?.rsplit_once(".upload-")?.1
    } else {
        return None;
    };
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')).then_some(id)
}

/// The files of every unfinished multipart upload in `root` (or of those `only` accepts, by
/// name), by upload id.
pub(super) fn upload_files(root: &Path, only: impl Fn(&str) -> bool) -> HashMap<String, Vec<PathBuf>> {
    let mut uploads: HashMap<String, Vec<PathBuf>> = HashMap::new();
    let Ok(entries) = fs::read_dir(root) else { return uploads };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(id) = upload_of(name).filter(|_| only(name)) {
            uploads.entry(id.to_string()).or_default().push(entry.path());
        }
    }
    uploads
}

/// The newest modification time of `files`.
fn newest(files: &[PathBuf]) -> Option<SystemTime> {
    files.iter().filter_map(|f| fs::symlink_metadata(f).and_then(|m| m.modified()).ok()).max()
}

/// Removes an upload's files, `.upload-<id>.json` first: a part that arrives after is refused
/// (the upload no longer exists), and one already on its way removes itself ([`LatePart`]).
pub(super) fn abort_files(root: &Path, id: &str, files: &[PathBuf]) {
    let _ = fs::remove_file(root.join(format!(".upload-{id}.json")));
    for f in files {
        let _ = fs::remove_file(f);
    }
}

/// Aborts the uploads of `root` whose last activity (what this endpoint saw, and their files'
/// times) is older than `after`, except those with a part on its way.
pub(super) fn abort_abandoned_uploads(root: &Path, seen: &Uploads, after: Duration) {
    let now = SystemTime::now();
    for (id, files) in upload_files(root, |_| true) {
        if seen.busy(&id) {
            continue;
        }
        let last = [newest(&files), seen.last_activity(&id)].into_iter().flatten().max();
        let idle = last.is_none_or(|t| now.duration_since(t).is_ok_and(|age| age > after));
        if idle && !seen.busy(&id) {
            abort_files(root, &id, &files);
            seen.forget(&id);
        }
    }
}

/// What the endpoint saw of multipart uploads since it started: when each was created, when a
/// part of it last began to arrive, how many requests for it are under way.
#[derive(Default)]
pub(super) struct Uploads(Mutex<HashMap<String, Seen>>);

#[derive(Default, Clone, Copy)]
struct Seen {
    created: Option<SystemTime>,
    last_part: Option<SystemTime>,
    busy: usize,
}

impl Uploads {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Seen>) -> T) -> T {
        let mut map = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut map)
    }

    pub(super) fn created(&self, id: &str) {
        self.with(|m| m.entry(id.to_string()).or_default().created = Some(SystemTime::now()));
    }

    /// A request for upload `id` (a part, the completion) begins; it ends when the guard drops.
    pub(super) fn begin(self: &Arc<Self>, id: &str, part: bool) -> Busy {
        self.with(|m| {
            let seen = m.entry(id.to_string()).or_default();
            seen.busy += 1;
            if part {
                seen.last_part = Some(SystemTime::now());
            }
        });
        Busy { uploads: Arc::clone(self), id: id.to_string() }
    }

    fn busy(&self, id: &str) -> bool {
        self.with(|m| m.get(id).is_some_and(|s| s.busy > 0))
    }

    /// The last activity this endpoint saw: creation or the start of a part.
    fn last_activity(&self, id: &str) -> Option<SystemTime> {
        self.with(|m| m.get(id).and_then(|s| s.created.max(s.last_part)))
    }

    /// When upload `id` began: as seen here, else its `.upload-<id>.json`.
    pub(super) fn began(&self, root: &Path, id: &str) -> Option<SystemTime> {
        self.with(|m| m.get(id).and_then(|s| s.created))
            .or_else(|| fs::metadata(root.join(format!(".upload-{id}.json"))).and_then(|m| m.modified()).ok())
    }

    /// Whether upload `id` showed activity after `since`: a part began to arrive (as seen here)
    /// or, for an upload this endpoint has not seen, one of its files changed.
    pub(super) fn active_since(&self, id: &str, files: &[PathBuf], since: SystemTime) -> bool {
        match self.with(|m| m.get(id).copied()) {
            Some(seen) if seen.busy > 0 => true,
            Some(seen) if seen.created.is_some() || seen.last_part.is_some() => {
                seen.created.max(seen.last_part).is_some_and(|t| t >= since)
            }
            _ => newest(files).is_none_or(|t| t >= since),
        }
    }

    pub(super) fn forget(&self, id: &str) {
        self.with(|m| m.remove(id));
    }
}

/// A request under way for an upload (see [`Uploads::begin`]).
pub(super) struct Busy {
    uploads: Arc<Uploads>,
    id: String,
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.uploads.with(|m| {
            if let Some(seen) = m.get_mut(&self.id) {
                seen.busy = seen.busy.saturating_sub(1);
            }
        });
    }
}

/// A part whose upload was aborted while it was on its way: the abort removed the parts it saw,
/// and this one was written after (S3 documents the same race: an abort may need repeating). When
/// the part's handler ends or is dropped and the upload no longer exists, the part goes too.
pub(super) struct LatePart {
    pub(super) upload: PathBuf,
    pub(super) part: PathBuf,
}

impl Drop for LatePart {
    fn drop(&mut self) {
        if !self.upload.exists() {
            let _ = fs::remove_file(&self.part);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_files_of_an_upload_are_recognised() {
        let id = "0ebfdfcc-b975-4fc2-b649-c19a20bdfeb7";
        assert_eq!(upload_of(&format!(".upload-{id}.json")), Some(id));
        assert_eq!(upload_of(&format!(".upload_id-{id}.part-12")), Some(id));
        assert_eq!(upload_of(&format!(".bucket-YWxwaGE.object-aw.upload-{id}.metadata.json")), Some(id));
        for other in [
            ".bucket-YWxwaGE.object-aw.metadata.json",
            ".bucket-YWxwaGE.object-aw.internal.json",
            ".tmp.3.internal.part",
            ".upload-.json",
            ".upload-../x.json",
            "alpha",
        ] {
            assert_eq!(upload_of(other), None, "{other}");
        }
    }
}
