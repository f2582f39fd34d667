//! The S3 service the endpoint runs: s3s-fs behind the checks of [`Guarded`], which serves only
//! the operations it lists, and the direct writers' way into a bucket ([`prepare_direct_write`]).
//!
//! Invariants: bucket names and keys are checked before any file operation, so a key never
//! resolves outside its bucket (no `.` or `..` segment, leading `/`, NUL, or symbolic link leading
//! out); an object is the plain file at its path, read at request time, so a file written directly
//! into a bucket folder is served as it is (never with the stale sidecar of an earlier PUT).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use s3s::crypto::{Checksum, Md5};
use s3s::dto;
use s3s::{S3, S3Request, S3Response, S3Result, s3_error};

use super::Activity;
use super::STAGING;
use super::uploads::{LatePart, Uploads, abort_files, sweep, upload_files};
use crate::backend::local::error::LocalError;
use crate::backend::local::home::Home;
use crate::error::{Error, Result};

/// The longest file name the file system takes.
const NAME_MAX: usize = 255;

/// The first byte of a `Content-Range` value (`bytes 0-99/1000` → 0).
fn range_start(content_range: &str) -> Option<u64> {
    content_range.strip_prefix("bytes ")?.split('-').next()?.trim().parse().ok()
}

/// Why a key is refused, or `None` when it stays inside its bucket by construction.
fn bad_key(key: &str) -> Option<&'static str> {
    if key.starts_with('/') {
        Some("starts with `/`")
    } else if key.contains('\0') {
        Some("contains a NUL character")
    } else if key.split('/').any(|s| s == "." || s == "..") {
        Some("has a `.` or `..` segment")
    } else {
        None
    }
}

/// Checks that no symbolic link on the way from `bucket_dir` (included) to `key` leads outside
/// `bucket_dir`; `Err` carries the offending path.
fn check_links(bucket_dir: &Path, key: &str) -> std::result::Result<PathBuf, PathBuf> {
    if fs::symlink_metadata(bucket_dir).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(bucket_dir.to_path_buf());
    }
    let mut path = bucket_dir.to_path_buf();
    for segment in key.split('/').filter(|s| !s.is_empty()) {
        path.push(segment);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => match fs::canonicalize(&path) {
                Ok(real) if real.starts_with(bucket_dir) => {}
                _ => return Err(path),
            },
            Ok(_) => {}
            Err(_) => break,
        }
    }
    Ok(bucket_dir.join(key))
}

/// base64 URL-safe without padding, as s3s-fs names its sidecars.
fn b64(s: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// The sidecar s3s-fs keeps for an object (`kind`: `internal` or `metadata`).
pub(super) fn sidecar_name(bucket: &str, key: &str, kind: &str) -> String {
    format!(".bucket-{}.object-{}.{kind}.json", b64(bucket), b64(key))
}

/// Whether s3s-fs's sidecar names for this object (with an upload id for multipart uploads) would
/// exceed the file system's name limit, so that its writes would fail.
pub(super) fn sidecar_too_long(bucket: &str, key: &str, multipart: bool) -> bool {
    let upload = if multipart { ".upload-".len() + 36 } else { 0 };
    sidecar_name(bucket, key, "metadata").len() + upload > NAME_MAX
}

/// Removes the sidecars of an object (after a delete, or before a direct write).
fn remove_sidecars(root: &Path, bucket: &str, key: &str) {
    if sidecar_too_long(bucket, key, false) {
        return;
    }
    for kind in ["internal", "metadata"] {
        let _ = fs::remove_file(root.join(sidecar_name(bucket, key, kind)));
    }
}

/// The path of `bucket`/`key` for a process that writes the object's file directly (the live
/// output of a job): validates the names, creates the bucket and the key's folders, refuses
/// symbolic links that lead out of the bucket, and removes the sidecars an earlier PUT left, so
/// that GET serves the file's current content. The caller then creates or appends to the file.
pub fn prepare_direct_write(home: &Home, bucket: &str, key: &str) -> Result<PathBuf> {
    if !s3s::path::check_bucket_name(bucket) {
        return Err(LocalError::InvalidBucketName { bucket: bucket.to_string() }.into());
    }
    if key.is_empty() || key.ends_with('/') {
        return Err(LocalError::KeyNamesFolder { key: key.to_string() }.into());
    }
    if let Some(why) = bad_key(key) {
        return Err(LocalError::KeyLeavesBucket { key: key.to_string(), why }.into());
    }
    let root = home.buckets_dir();
    let bucket_dir = root.join(bucket);
    let path = check_links(&bucket_dir, key)
        .map_err(|link| LocalError::LinkLeavesBucket { link, bucket: bucket.to_string() })?;
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e))?;
    }
    remove_sidecars(&root, bucket, key);
    Ok(path)
}

/// s3s-fs behind the checks of this module: names validated, links refused, activity recorded,
/// stale sidecars dropped, over-long sidecar names avoided, abandoned multipart uploads aborted.
/// Only the operations listed here are served; the others answer `NotImplemented`.
///
/// Keys stay inside their bucket: s3s-fs resolves `bucket/key` lexically inside `buckets/` only,
/// so `..` could reach another bucket or the sidecars; keys with `.` or `..` segments, a leading
/// `/` or NUL are refused, and so is any symbolic link on the way (bucket folder included) whose
/// target is not inside the bucket. The check happens before the file operation (a process that
/// can write to `buckets/` can race it, but such a process can read the files directly anyway).
///
/// s3s-fs keeps optional sidecars next to the buckets, in `buckets/` itself:
/// `.bucket-<b64 bucket>.object-<b64 key>.internal.json` (ETag and checksums) and
/// `….metadata.json` (content type, user metadata). Without them an object's ETag is the MD5 of
/// its current content, computed per request. A sidecar left by an earlier PUT would describe old
/// content once the file is rewritten directly (and the SDK checks the stored CRC against the
/// body), so direct writers call [`prepare_direct_write`], which removes them, and an
/// `internal.json` older than its object is dropped. Sidecar names grow with the key, and s3s-fs
/// fails a write whose sidecar name exceeds the file system's limit (keys of about 150 bytes), so
/// such writes are staged under a short name ([`STAGING`]) and renamed into place without
/// sidecars.
pub(super) struct Guarded {
    fs: s3s_fs::FileSystem,
    /// `buckets/`, canonical.
    pub(super) root: PathBuf,
    activity: Arc<Activity>,
    uploads: Arc<Uploads>,
    staged: AtomicU64,
}

impl Guarded {
    pub(super) fn new(buckets: &Path, activity: Arc<Activity>, uploads: Arc<Uploads>) -> Result<Guarded> {
        fs::create_dir_all(buckets).map_err(|e| Error::io("create", buckets, e))?;
        let root = fs::canonicalize(buckets).map_err(|e| Error::io("open", buckets, e))?;
        sweep(&root);
        let fs = s3s_fs::FileSystem::new(&root)
            .map_err(|e| Error::io("serve", &root, io::Error::other(format!("{e:?}"))))?;
        Ok(Guarded { fs, root, activity, uploads, staged: AtomicU64::new(0) })
    }

    /// After upload `id` of `bucket`/`key` (as stored) completed: forgets it and aborts the uploads
    /// it superseded.
    async fn completed(&self, bucket: &str, key: &str, id: &str, began: Option<SystemTime>) {
        self.uploads.forget(id);
        if let Some(began) = began {
            self.abort_superseded(bucket, key, id, began).await;
        }
    }

    /// Aborts the unfinished uploads of `bucket`/`key` (as stored: staged keys included) other than
    /// `done`, which completed, that showed no activity since `done` began: a client still
    /// uploading sends parts, and an upload idle during the whole newer upload was left by a
    /// client that died (the retry of a killed `upload` is exactly this). On S3 they would wait
    /// for the lifecycle rule ([`ABANDONED_UPLOAD_AFTER`](super::ABANDONED_UPLOAD_AFTER)); here
    /// their parts would wait on a developer's disk for nothing.
    async fn abort_superseded(&self, bucket: &str, key: &str, done: &str, began: SystemTime) {
        let (root, uploads, done) = (self.root.clone(), Arc::clone(&self.uploads), done.to_string());
        let sidecar = format!(".bucket-{}.object-{}.upload-", b64(bucket), b64(key));
        let _ = tokio::task::spawn_blocking(move || {
            for (id, files) in upload_files(&root, |_| true) {
                let of_key = files
                    .iter()
                    .any(|f| f.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&sidecar)));
                if of_key && id != done && !uploads.active_since(&id, &files, began) {
                    abort_files(&root, &id, &files);
                    uploads.forget(&id);
                }
            }
        })
        .await;
    }

    fn bucket_dir(&self, bucket: &str) -> S3Result<PathBuf> {
        self.activity.touch();
        if !s3s::path::check_bucket_name(bucket) {
            return Err(s3_error!(InvalidBucketName, "`{bucket}` is not a valid bucket name"));
        }
        let dir = self.root.join(bucket);
        if fs::symlink_metadata(&dir).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(s3_error!(AccessDenied, "bucket `{bucket}` is a symbolic link"));
        }
        Ok(dir)
    }

    /// The object's path, once the key is known to stay inside the bucket.
    fn object(&self, bucket: &str, key: &str) -> S3Result<PathBuf> {
        let dir = self.bucket_dir(bucket)?;
        if let Some(why) = bad_key(key) {
            return Err(s3_error!(
                InvalidArgument,
                "object key `{key}` {why}: keys must stay inside their bucket"
            ));
        }
        check_links(&dir, key)
            .map_err(|_| s3_error!(AccessDenied, "object key `{key}` leads out of bucket `{bucket}`"))
    }

    /// GET and HEAD: a folder is no object; an `internal.json` older than its object (the file was
    /// rewritten directly) would give a stale ETag and checksum, so it goes.
    fn before_read(&self, bucket: &str, key: &str) -> S3Result<()> {
        let path = self.object(bucket, key)?;
        let Ok(meta) = fs::metadata(&path) else { return Ok(()) };
        if meta.is_dir() {
            return Err(s3_error!(NoSuchKey));
        }
        if sidecar_too_long(bucket, key, false) {
            return Ok(());
        }
        let info = self.root.join(sidecar_name(bucket, key, "internal"));
        if let (Ok(object_time), Ok(info_time)) =
            (meta.modified(), fs::metadata(&info).and_then(|m| m.modified()))
            && object_time > info_time
        {
            let _ = fs::remove_file(&info);
        }
        Ok(())
    }

    /// The staging key of a multipart upload of an object with an over-long sidecar name.
    fn staged_multipart_key(bucket: &str, key: &str) -> String {
        let mut md5 = Md5::new();
        md5.update(bucket.as_bytes());
        md5.update(b"/");
        md5.update(key.as_bytes());
        let digest = md5.finalize();
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("mpu-{hex}")
    }

    /// Moves a staged object to its place and forgets the staging sidecars.
    fn unstage(&self, staged_key: &str, target: &Path) -> S3Result<()> {
        let staged = self.root.join(STAGING).join(staged_key);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| s3_error!(e, InternalError, "cannot create the key's folder"))?;
        }
        let moved = fs::rename(&staged, target);
        remove_sidecars(&self.root, STAGING, staged_key);
        moved.map_err(|e| s3_error!(e, InternalError, "cannot move the staged object into place"))
    }
}

#[async_trait::async_trait]
impl S3 for Guarded {
    async fn create_bucket(
        &self,
        req: S3Request<dto::CreateBucketInput>,
    ) -> S3Result<S3Response<dto::CreateBucketOutput>> {
        self.bucket_dir(&req.input.bucket)?;
        self.fs.create_bucket(req).await
    }

    async fn delete_bucket(
        &self,
        req: S3Request<dto::DeleteBucketInput>,
    ) -> S3Result<S3Response<dto::DeleteBucketOutput>> {
        self.bucket_dir(&req.input.bucket)?;
        self.fs.delete_bucket(req).await
    }

    async fn head_bucket(
        &self,
        req: S3Request<dto::HeadBucketInput>,
    ) -> S3Result<S3Response<dto::HeadBucketOutput>> {
        self.bucket_dir(&req.input.bucket)?;
        self.fs.head_bucket(req).await
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<dto::GetBucketLocationInput>,
    ) -> S3Result<S3Response<dto::GetBucketLocationOutput>> {
        self.bucket_dir(&req.input.bucket)?;
        self.fs.get_bucket_location(req).await
    }

    async fn list_buckets(
        &self,
        req: S3Request<dto::ListBucketsInput>,
    ) -> S3Result<S3Response<dto::ListBucketsOutput>> {
        self.activity.touch();
        self.fs.list_buckets(req).await
    }

    async fn list_objects(
        &self,
        req: S3Request<dto::ListObjectsInput>,
    ) -> S3Result<S3Response<dto::ListObjectsOutput>> {
        self.bucket_dir(&req.input.bucket)?;
        self.fs.list_objects(req).await
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<dto::ListObjectsV2Input>,
    ) -> S3Result<S3Response<dto::ListObjectsV2Output>> {
        self.bucket_dir(&req.input.bucket)?;
        self.fs.list_objects_v2(req).await
    }

    async fn get_object(
        &self,
        req: S3Request<dto::GetObjectInput>,
    ) -> S3Result<S3Response<dto::GetObjectOutput>> {
        self.before_read(&req.input.bucket, &req.input.key)?;
        let path = self.object(&req.input.bucket, &req.input.key)?;
        let mut resp = self.fs.get_object(req).await?;
        // s3s-fs streams the body in 4 KiB reads, which made the endpoint CPU-bound on large
        // objects: serve the same bytes (same range, same length) in 1 MiB reads instead.
        if let Some(len) = resp.output.content_length.and_then(|l| u64::try_from(l).ok()) {
            let start = resp.output.content_range.as_deref().and_then(range_start).unwrap_or(0);
            let mut file = tokio::fs::File::open(&path).await.map_err(|e| s3_error!(e, NoSuchKey))?;
            tokio::io::AsyncSeekExt::seek(&mut file, io::SeekFrom::Start(start))
                .await
                .map_err(|e| s3_error!(e, InternalError))?;
            let reader = tokio::io::AsyncReadExt::take(file, len);
            let stream = tokio_util::io::ReaderStream::with_capacity(reader, 1 << 20);
            resp.output.body = Some(dto::StreamingBlob::wrap(stream));
        }
        Ok(resp)
    }

    async fn head_object(
        &self,
        req: S3Request<dto::HeadObjectInput>,
    ) -> S3Result<S3Response<dto::HeadObjectOutput>> {
        self.before_read(&req.input.bucket, &req.input.key)?;
        self.fs.head_object(req).await
    }

    async fn put_object(
        &self,
        mut req: S3Request<dto::PutObjectInput>,
    ) -> S3Result<S3Response<dto::PutObjectOutput>> {
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        let target = self.object(&bucket, &key)?;
        if key.ends_with('/') || !sidecar_too_long(&bucket, &key, false) {
            return self.fs.put_object(req).await;
        }
        let staged = format!("put-{}-{}", std::process::id(), self.staged.fetch_add(1, Ordering::SeqCst));
        req.input.bucket = STAGING.to_string();
        req.input.key = staged.clone();
        let result = self.fs.put_object(req).await;
        if result.is_ok() {
            self.unstage(&staged, &target)?;
        } else {
            let _ = fs::remove_file(self.root.join(STAGING).join(&staged));
            remove_sidecars(&self.root, STAGING, &staged);
        }
        result
    }

    async fn delete_object(
        &self,
        req: S3Request<dto::DeleteObjectInput>,
    ) -> S3Result<S3Response<dto::DeleteObjectOutput>> {
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        self.object(&bucket, &key)?;
        let out = self.fs.delete_object(req).await?;
        remove_sidecars(&self.root, &bucket, &key);
        Ok(out)
    }

    async fn delete_objects(
        &self,
        req: S3Request<dto::DeleteObjectsInput>,
    ) -> S3Result<S3Response<dto::DeleteObjectsOutput>> {
        let bucket = req.input.bucket.clone();
        let keys: Vec<String> = req.input.delete.objects.iter().map(|o| o.key.clone()).collect();
        for key in &keys {
            self.object(&bucket, key)?;
        }
        let out = self.fs.delete_objects(req).await?;
        for key in &keys {
            remove_sidecars(&self.root, &bucket, key);
        }
        Ok(out)
    }

    async fn copy_object(
        &self,
        req: S3Request<dto::CopyObjectInput>,
    ) -> S3Result<S3Response<dto::CopyObjectOutput>> {
        if let dto::CopySource::Bucket { bucket, key, .. } = &req.input.copy_source {
            self.before_read(bucket, key)?;
        }
        self.object(&req.input.bucket, &req.input.key)?;
        self.fs.copy_object(req).await
    }

    async fn create_multipart_upload(
        &self,
        mut req: S3Request<dto::CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<dto::CreateMultipartUploadOutput>> {
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        self.object(&bucket, &key)?;
        let staged = sidecar_too_long(&bucket, &key, true);
        if staged {
            req.input.bucket = STAGING.to_string();
            req.input.key = Self::staged_multipart_key(&bucket, &key);
        }
        let mut out = self.fs.create_multipart_upload(req).await?;
        if let Some(id) = &out.output.upload_id {
            self.uploads.created(id);
        }
        if staged {
            out.output.bucket = Some(bucket);
            out.output.key = Some(key);
        }
        Ok(out)
    }

    async fn upload_part(
        &self,
        req: S3Request<dto::UploadPartInput>,
    ) -> S3Result<S3Response<dto::UploadPartOutput>> {
        self.object(&req.input.bucket, &req.input.key)?;
        let _busy = self.uploads.begin(&req.input.upload_id, true);
        let _late = LatePart {
            upload: self.root.join(format!(".upload-{}.json", req.input.upload_id)),
            part: self
                .root
                .join(format!(".upload_id-{}.part-{}", req.input.upload_id, req.input.part_number)),
        };
        self.fs.upload_part(req).await
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<dto::UploadPartCopyInput>,
    ) -> S3Result<S3Response<dto::UploadPartCopyOutput>> {
        if let dto::CopySource::Bucket { bucket, key, .. } = &req.input.copy_source {
            self.before_read(bucket, key)?;
        }
        self.object(&req.input.bucket, &req.input.key)?;
        let _busy = self.uploads.begin(&req.input.upload_id, true);
        self.fs.upload_part_copy(req).await
    }

    async fn list_parts(
        &self,
        req: S3Request<dto::ListPartsInput>,
    ) -> S3Result<S3Response<dto::ListPartsOutput>> {
        self.object(&req.input.bucket, &req.input.key)?;
        self.fs.list_parts(req).await
    }

    async fn complete_multipart_upload(
        &self,
        mut req: S3Request<dto::CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<dto::CompleteMultipartUploadOutput>> {
        let (bucket, key, id) =
            (req.input.bucket.clone(), req.input.key.clone(), req.input.upload_id.clone());
        let target = self.object(&bucket, &key)?;
        let _busy = self.uploads.begin(&id, false);
        let began = self.uploads.began(&self.root, &id);
        if !sidecar_too_long(&bucket, &key, true) {
            let out = self.fs.complete_multipart_upload(req).await?;
            let output = match out.output.future {
                Some(done) => done.await?,
                None => out.output,
            };
            self.completed(&bucket, &key, &id, began).await;
            return Ok(S3Response::new(output));
        }
        let staged = Self::staged_multipart_key(&bucket, &key);
        req.input.bucket = STAGING.to_string();
        req.input.key = staged.clone();
        let out = self.fs.complete_multipart_upload(req).await?;
        self.unstage(&staged, &target)?;
        let mut output = match out.output.future {
            Some(done) => done.await?,
            None => out.output,
        };
        self.completed(STAGING, &staged, &id, began).await;
        output.bucket = Some(bucket);
        output.key = Some(key);
        Ok(S3Response::new(output))
    }

    async fn abort_multipart_upload(
        &self,
        mut req: S3Request<dto::AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<dto::AbortMultipartUploadOutput>> {
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        self.object(&bucket, &key)?;
        if sidecar_too_long(&bucket, &key, true) {
            req.input.bucket = STAGING.to_string();
            req.input.key = Self::staged_multipart_key(&bucket, &key);
        }
        let id = req.input.upload_id.clone();
        let out = self.fs.abort_multipart_upload(req).await;
        if out.is_ok() {
            self.uploads.forget(&id);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_starts_are_read() {
        assert_eq!(range_start("bytes 0-99/1000"), Some(0));
        assert_eq!(range_start("bytes 16777216-33554431/1073741824"), Some(16_777_216));
        assert_eq!(range_start("items 1-2/3"), None);
    }

    #[test]
    fn b64_is_url_safe_without_padding() {
        assert_eq!(b64(""), "");
        assert_eq!(b64("f"), "Zg");
        assert_eq!(b64("fo"), "Zm8");
        assert_eq!(b64("foo"), "Zm9v");
        assert_eq!(b64("foob"), "Zm9vYg");
        assert_eq!(b64("\u{fb}\u{ff}"), "w7vDvw");
        assert_eq!(b64("a?>"), "YT8-");
        assert!(bad_key("../x").is_some() && bad_key("a/./b").is_some() && bad_key("/etc").is_some());
        assert!(bad_key("a/..b/c.").is_none() && bad_key("DATASET_NAME:x_STATUS.txt").is_none());
    }
}
