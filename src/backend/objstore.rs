//! Object storage through the S3 API, one code path for both backends.
//!
//! [`ObjectStore`] wraps an `aws_sdk_s3::Client`, of the local backend's embedded endpoint
//! ([`ObjectStore::local`]) or of AWS ([`ObjectStore::from_client`]). Invariants: SDK types and S3
//! error codes stay in this file; Ctrl-C or a dropped future stops a transfer, aborts its
//! unfinished multipart upload and never leaves a partial download under the final name.

use std::future::Future;
use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region, StalledStreamProtectionConfig};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    BucketLocationConstraint, ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart,
    CreateBucketConfiguration,
};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::task::JoinSet;

use crate::backend::local::s3::Endpoint;
use crate::backend::{BackendError, ObjectInfo};

/// Files above this size are uploaded in parts (and downloaded with concurrent ranged GETs).
pub const MULTIPART_THRESHOLD: u64 = 16 * 1024 * 1024;
/// The size of a part (grown for files that would need more than 10,000 parts).
pub const PART_SIZE: u64 = 16 * 1024 * 1024;
/// Parts in flight at once.
pub const CONCURRENCY: usize = 4;

const MAX_PARTS: u64 = 10_000;
/// S3's smallest part (all parts but the last).
const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
const INTERRUPT_POLL: Duration = Duration::from_millis(50);
/// How much of a downloaded range is gathered in memory before it is written.
const WRITE_BATCH: u64 = 2 * 1024 * 1024;
/// How long aborting an unfinished multipart upload may take.
const ABORT_GRACE: Duration = Duration::from_secs(10);

/// An S3 client with the transfer policy of devami.
#[derive(Debug, Clone)]
pub struct ObjectStore {
    client: Client,
    /// How errors name the service (`http://127.0.0.1:PORT`, `S3 in eu-west-1`).
    endpoint: String,
    threshold: u64,
    part_size: u64,
    /// Whether the running command was cancelled (Ctrl-C).
    interrupted: fn() -> bool,
    /// Skip the SHA-256 of request bodies in signatures (loopback: the CRC32 checksum stays).
    unsigned_payload: bool,
}

impl ObjectStore {
    /// A client of the local endpoint: its static key pair, path-style addressing, its region, no
    /// profile or environment lookup, short connect timeout and few retries (it is on loopback).
    pub fn local(endpoint: &Endpoint) -> ObjectStore {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(endpoint.region.clone()))
            .endpoint_url(endpoint.url.clone())
            .force_path_style(true)
            .credentials_provider(Credentials::new(
                endpoint.access_key.clone(),
                endpoint.secret_key.clone(),
                None,
                None,
                "devami-local",
            ))
            .stalled_stream_protection(
                StalledStreamProtectionConfig::enabled().grace_period(Duration::from_secs(20)).build(),
            )
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(3)
                    .with_initial_backoff(Duration::from_millis(50))
                    .with_max_backoff(Duration::from_secs(1)),
            )
            .timeout_config(TimeoutConfig::builder().connect_timeout(Duration::from_secs(2)).build())
            // Over loopback, TCP already guards the bytes: asking the endpoint for a checksum of
            // every range costs it a pass over the data (it made downloads CPU-bound).
            .response_checksum_validation(aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired)
            .build();
        ObjectStore {
            client: Client::from_conf(config),
            endpoint: endpoint.url.clone(),
            threshold: MULTIPART_THRESHOLD,
            part_size: PART_SIZE,
            interrupted: crate::interrupt::pending,
            unsigned_payload: true,
        }
    }

    /// A store over a client built elsewhere (the AWS backend's).
    pub fn from_client(client: Client) -> ObjectStore {
        let endpoint = match client.config().region() {
            Some(region) => format!("S3 in {region}"),
            None => "S3".to_string(),
        };
        ObjectStore {
            client,
            endpoint,
            threshold: MULTIPART_THRESHOLD,
            part_size: PART_SIZE,
            interrupted: crate::interrupt::pending,
            unsigned_payload: false,
        }
    }

    /// The same store with another multipart threshold and part size (both at least 5 MiB, S3's
    /// smallest part).
    pub fn with_multipart(mut self, threshold: u64, part_size: u64) -> ObjectStore {
        self.threshold = threshold.max(MIN_PART_SIZE);
        self.part_size = part_size.max(MIN_PART_SIZE);
        self
    }

    /// Creates `bucket` unless it exists.
    pub async fn ensure_bucket(&self, bucket: &str) -> Result<(), BackendError> {
        match self.client.head_bucket().bucket(bucket).send().await {
            Ok(_) => return Ok(()),
            Err(e) => match self.fail("HeadBucket", bucket, None, e) {
                BackendError::NotFound { .. } => {}
                other => return Err(other),
            },
        }
        let mut request = self.client.create_bucket().bucket(bucket);
        if let Some(region) = self.client.config().region().map(|r| r.as_ref().to_string())
            && region != "us-east-1"
        {
            let constraint = BucketLocationConstraint::from(region.as_str());
            request = request.create_bucket_configuration(
                CreateBucketConfiguration::builder().location_constraint(constraint).build(),
            );
        }
        let err = match request.send().await {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        match err.code() {
            Some("BucketAlreadyOwnedByYou") => Ok(()),
            // Someone else's on AWS; on the local endpoint (and after a race) it is ours.
            Some("BucketAlreadyExists") if self.client.head_bucket().bucket(bucket).send().await.is_ok() => {
                Ok(())
            }
            _ => Err(self.fail("CreateBucket", bucket, None, err)),
        }
    }

    /// Writes an object.
    pub async fn put(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<(), BackendError> {
        let request = self.client.put_object().bucket(bucket).key(key).body(ByteStream::from(body));
        let send = async {
            if self.unsigned_payload {
                request.customize().disable_payload_signing().send().await
            } else {
                request.send().await
            }
        };
        self.interruptible(send).await?.map_err(|e| self.fail("PutObject", bucket, Some(key), e))?;
        Ok(())
    }

    /// Reads an object; `NotFound` (`s3://bucket/key`) when it does not exist.
    pub async fn get(&self, bucket: &str, key: &str) -> Result<Vec<u8>, BackendError> {
        let request = self.client.get_object().bucket(bucket).key(key).send();
        let out =
            self.interruptible(request).await?.map_err(|e| self.fail("GetObject", bucket, Some(key), e))?;
        let body = self.interruptible(out.body.collect()).await?.map_err(|e| self.stream_error(&e))?;
        Ok(body.into_bytes().to_vec())
    }

    /// Whether an object exists.
    pub async fn exists(&self, bucket: &str, key: &str) -> Result<bool, BackendError> {
        let request = self.client.head_object().bucket(bucket).key(key).send();
        match self.interruptible(request).await? {
            Ok(_) => Ok(true),
            Err(e) => match self.fail("HeadObject", bucket, Some(key), e) {
                BackendError::NotFound { .. } => Ok(false),
                other => Err(other),
            },
        }
    }

    /// Every object whose key starts with `prefix`, in key order (all pages).
    pub async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectInfo>, BackendError> {
        let mut pages = self.client.list_objects_v2().bucket(bucket).prefix(prefix).into_paginator().send();
        let mut objects = Vec::new();
        while let Some(page) = self.interruptible(pages.next()).await? {
            let page = page.map_err(|e| self.fail("ListObjectsV2", bucket, None, e))?;
            objects.extend(page.contents().iter().map(|o| ObjectInfo {
                key: o.key().unwrap_or_default().to_string(),
                size: u64::try_from(o.size().unwrap_or(0)).unwrap_or(0),
                modified: o.last_modified().map(|t| t.secs()),
            }));
        }
        Ok(objects)
    }

    /// Uploads a file; in concurrent parts above the threshold, aborting the multipart upload on
    /// error or Ctrl-C. `progress(done, total)` in bytes. Returns the size.
    pub async fn upload_file(
        &self,
        bucket: &str,
        key: &str,
        local: &Path,
        progress: &mut (dyn FnMut(u64, u64) + Send),
    ) -> Result<u64, BackendError> {
        let meta = tokio::fs::metadata(local).await.map_err(|e| local_error("read", local, &e))?;
        // A FIFO or a device would block the read or never end: only regular files are sent.
        crate::regular::check(&meta).map_err(|e| local_error("read", local, &e))?;
        let size = meta.len();
        progress(0, size);
        if size <= self.threshold {
            let body = tokio::fs::read(local).await.map_err(|e| local_error("read", local, &e))?;
            self.put(bucket, key, body).await?;
            progress(size, size);
            return Ok(size);
        }
        // CRC32 declared up front and repeated per part in the completion, as S3 requires once
        // an upload has a checksum algorithm.
        let created = self
            .client
            .create_multipart_upload()
            .bucket(bucket)
            .key(key)
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .send();
        // Not cut short by Ctrl-C: an upload created but never heard of could not be aborted.
        // `upload_parts` notices the interrupt at once and the upload is aborted below.
        let created = created.await.map_err(|e| self.fail("CreateMultipartUpload", bucket, Some(key), e))?;
        let upload_id = created.upload_id().unwrap_or_default().to_string();
        if upload_id.is_empty() {
            return Err(BackendError::Service {
                code: None,
                message: format!("`{}` answered CreateMultipartUpload without an upload id", self.endpoint),
            });
        }
        let mut pending = PendingUpload::new(self, bucket, key, &upload_id);
        let result = match self.upload_parts(&mut pending, local, size, progress).await {
            Ok(parts) => {
                let done = CompletedMultipartUpload::builder().set_parts(Some(parts)).build();
                let complete = self
                    .client
                    .complete_multipart_upload()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .multipart_upload(done)
                    .send();
                match self.interruptible(complete).await {
                    Ok(Ok(_)) => {
                        pending.armed = false;
                        return Ok(size);
                    }
                    Ok(Err(e)) => Err(self.fail("CompleteMultipartUpload", bucket, Some(key), e)),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        // The guard stays armed until the abort has been answered: Ctrl-C also drops this future
        // from `Cloud::call`, and a drop mid-abort must send the abort again, not lose it.
        pending.tasks.abort_all();
        while pending.tasks.join_next().await.is_some() {}
        let _ = tokio::time::timeout(ABORT_GRACE, pending.abort_request()).await;
        pending.armed = false;
        result
    }

    /// Uploads the parts of `local`, [`CONCURRENCY`] at a time; the completed parts in order.
    async fn upload_parts(
        &self,
        pending: &mut PendingUpload,
        local: &Path,
        size: u64,
        progress: &mut (dyn FnMut(u64, u64) + Send),
    ) -> Result<Vec<CompletedPart>, BackendError> {
        let PendingUpload { bucket, key, upload_id, tasks, .. } = pending;
        release_part_buffers();
        let part_size = self.part_size.max(size.div_ceil(MAX_PARTS));
        let count = size.div_ceil(part_size);
        let mut next = 0u64;
        let mut done = 0u64;
        let mut parts = Vec::new();
        let mut tick = tokio::time::interval(INTERRUPT_POLL);
        let result = loop {
            while tasks.len() < CONCURRENCY && next < count {
                let offset = next * part_size;
                let len = part_size.min(size - offset);
                let number = i32::try_from(next + 1).unwrap_or(i32::MAX);
                let (store, bucket, key, upload_id, local) = (
                    self.clone(),
                    bucket.to_string(),
                    key.to_string(),
                    upload_id.to_string(),
                    local.to_path_buf(),
                );
                tasks.spawn(async move {
                    let body = read_range(&local, offset, len).await?;
                    let request = store
                        .client
                        .upload_part()
                        .bucket(&bucket)
                        .key(&key)
                        .upload_id(upload_id)
                        .part_number(number)
                        .checksum_algorithm(ChecksumAlgorithm::Crc32)
                        .body(ByteStream::from(body));
                    let sent = if store.unsigned_payload {
                        request.customize().disable_payload_signing().send().await
                    } else {
                        request.send().await
                    };
                    let out = sent.map_err(|e| store.fail("UploadPart", &bucket, Some(&key), e))?;
                    let part = CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(out.e_tag().map(str::to_string))
                        .set_checksum_crc32(out.checksum_crc32().map(str::to_string))
                        .build();
                    Ok::<_, BackendError>((part, len))
                });
                next += 1;
            }
            tokio::select! {
                joined = tasks.join_next() => match joined {
                    None => break Ok(()),
                    Some(Ok(Ok((part, len)))) => {
                        done += len;
                        progress(done, size);
                        parts.push(part);
                    }
                    Some(Ok(Err(e))) => break Err(e),
                    Some(Err(e)) => break Err(BackendError::Service { code: None, message: format!("a part upload failed: {e}") }),
                },
                _ = tick.tick() => if (self.interrupted)() {
                    break Err(BackendError::Interrupted);
                }
            }
        };
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        result?;
        parts.sort_by_key(|p| p.part_number());
        Ok(parts)
    }

    /// Downloads an object to `local` through `<local>.devami-part-<pid>` in the same folder,
    /// flushed to disk and renamed into place at the end: never a partial file under the final
    /// name; the temporary file goes on error or Ctrl-C, also when the future is dropped. One GET
    /// gives the size and, up to the threshold, the content; a larger object's body is dropped
    /// unread and the object comes in concurrent ranges. Returns the size.
    pub async fn download_file(
        &self,
        bucket: &str,
        key: &str,
        local: &Path,
        progress: &mut (dyn FnMut(u64, u64) + Send),
    ) -> Result<u64, BackendError> {
        let Some(name) = local.file_name() else {
            return Err(BackendError::Service {
                code: None,
                message: format!("`{}` is not a file path: name the file to download to", local.display()),
            });
        };
        let request = self.client.get_object().bucket(bucket).key(key).send();
        let out =
            self.interruptible(request).await?.map_err(|e| self.fail("GetObject", bucket, Some(key), e))?;
        let size = out.content_length().and_then(|n| u64::try_from(n).ok());
        let temp = TempFile::create(local, name)?;
        progress(0, size.unwrap_or(0));
        match size {
            Some(size) if size > self.threshold => {
                drop(out);
                let written = self.download_ranges(bucket, key, &temp.path, size, progress).await?;
                temp.finish(local, None).await?;
                Ok(written)
            }
            _ => {
                let bytes = self.read_body(bucket, key, out.body, size, progress).await?;
                let written = bytes.len() as u64;
                temp.finish(local, Some(bytes)).await?;
                Ok(written)
            }
        }
    }

    /// A (small) object's body in memory, with progress; an error if it ends short of `size`.
    async fn read_body(
        &self,
        bucket: &str,
        key: &str,
        mut body: ByteStream,
        size: Option<u64>,
        progress: &mut (dyn FnMut(u64, u64) + Send),
    ) -> Result<Vec<u8>, BackendError> {
        let total = size.unwrap_or(0);
        let mut bytes = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
        loop {
            let chunk = self.interruptible(body.try_next()).await?.map_err(|e| self.stream_error(&e))?;
            let Some(chunk) = chunk else { break };
            bytes.extend_from_slice(&chunk);
            progress(bytes.len() as u64, total.max(bytes.len() as u64));
        }
        let done = bytes.len() as u64;
        if size.is_some_and(|total| done != total) {
            return Err(BackendError::Unreachable {
                endpoint: self.endpoint.clone(),
                message: format!(
                    "the download of `s3://{bucket}/{key}` ended after {done} of {total} bytes; retry"
                ),
            });
        }
        Ok(bytes)
    }

    async fn download_ranges(
        &self,
        bucket: &str,
        key: &str,
        temp: &Path,
        size: u64,
        progress: &mut (dyn FnMut(u64, u64) + Send),
    ) -> Result<u64, BackendError> {
        let file = open_temp(temp).await?;
        file.set_len(size).await.map_err(|e| local_error("write", temp, &e))?;
        let count = size.div_ceil(self.part_size);
        let mut next = 0u64;
        let mut done = 0u64;
        let mut tasks = JoinSet::new();
        let mut tick = tokio::time::interval(INTERRUPT_POLL);
        let result = loop {
            while tasks.len() < CONCURRENCY && next < count {
                let offset = next * self.part_size;
                let len = self.part_size.min(size - offset);
                let (store, bucket, key, temp) =
                    (self.clone(), bucket.to_string(), key.to_string(), temp.to_path_buf());
                tasks.spawn(async move {
                    let range = format!("bytes={offset}-{}", offset + len - 1);
                    let out = store
                        .client
                        .get_object()
                        .bucket(&bucket)
                        .key(&key)
                        .range(range)
                        .send()
                        .await
                        .map_err(|e| store.fail("GetObject", &bucket, Some(&key), e))?;
                    // Written as it comes, [`WRITE_BATCH`] at a time: a range is never whole in memory.
                    let mut body = out.body;
                    let (mut batch, mut batched, mut written) = (Vec::new(), 0u64, 0u64);
                    loop {
                        let chunk = body.try_next().await.map_err(|e| store.stream_error(&e))?;
                        let last = chunk.is_none();
                        if let Some(chunk) = chunk {
                            batched += chunk.len() as u64;
                            batch.push(chunk);
                        }
                        if written + batched > len {
                            break;
                        }
                        if batched >= WRITE_BATCH || (last && batched > 0) {
                            write_range(&temp, offset + written, std::mem::take(&mut batch)).await?;
                            written += std::mem::take(&mut batched);
                        }
                        if last {
                            break;
                        }
                    }
                    if written + batched != len {
                        return Err(BackendError::Unreachable {
                            endpoint: store.endpoint.clone(),
                            message: format!(
                                "`s3://{bucket}/{key}` sent {} bytes for a range of {len}: did it change during the download?",
                                written + batched
                            ),
                        });
                    }
                    Ok::<_, BackendError>(len)
                });
                next += 1;
            }
            tokio::select! {
                joined = tasks.join_next() => match joined {
                    None => break Ok(()),
                    Some(Ok(Ok(len))) => {
                        done += len;
                        progress(done, size);
                    }
                    Some(Ok(Err(e))) => break Err(e),
                    Some(Err(e)) => break Err(BackendError::Service { code: None, message: format!("a ranged download failed: {e}") }),
                },
                _ = tick.tick() => if (self.interrupted)() {
                    break Err(BackendError::Interrupted);
                }
            }
        };
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        result?;
        Ok(done)
    }

    /// Runs `future` unless Ctrl-C comes first (checked at once, then every 50 ms).
    async fn interruptible<F: Future>(&self, future: F) -> Result<F::Output, BackendError> {
        // At once: an interval's first tick is not always ready on the first poll (the timer
        // rounds its deadline up to the next millisecond), and a quick answer could win the race.
        if (self.interrupted)() {
            return Err(BackendError::Interrupted);
        }
        let mut future = std::pin::pin!(future);
        let mut tick = tokio::time::interval(INTERRUPT_POLL);
        loop {
            tokio::select! {
                biased;
                _ = tick.tick() => if (self.interrupted)() {
                    return Err(BackendError::Interrupted);
                },
                out = &mut future => return Ok(out),
            }
        }
    }

    /// An SDK error, with `NotFound` naming the bucket or object in devami's words.
    fn fail<E>(&self, op: &str, bucket: &str, key: Option<&str>, err: SdkError<E>) -> BackendError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        match (map_at(&self.endpoint, op, err), key) {
            (BackendError::NotFound { what: "object", .. }, Some(key)) => {
                BackendError::not_found("object", &format!("s3://{bucket}/{key}"))
            }
            (BackendError::NotFound { .. }, _) => {
                BackendError::not_found("bucket", &format!("s3://{bucket}"))
            }
            (other, _) => other,
        }
    }

    fn stream_error(&self, err: &dyn std::error::Error) -> BackendError {
        BackendError::Unreachable { endpoint: self.endpoint.clone(), message: root_cause(err) }
    }

    #[cfg(test)]
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// The same store, deaf to Ctrl-C (tests that must not see other tests' interrupts).
    #[cfg(test)]
    pub(crate) fn without_interrupts(mut self) -> ObjectStore {
        self.interrupted = || false;
        self
    }
}

const CREDENTIAL_CODES: [&str; 6] = [
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
    "NotSignedUp",
];

const CREDENTIALS_HINT: &str =
    "check `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` or `AWS_PROFILE`, or run `aws sso login` and retry";

/// Sorts an S3 error into a [`BackendError`]: the S3 codes for a missing bucket or object (and a
/// bare 404) are `NotFound`, credential codes `Credentials`, codes asking to slow down
/// `Throttled`; the code and message stay as S3 gave them.
fn map_at<E>(endpoint: &str, op: &str, err: SdkError<E>) -> BackendError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    if let SdkError::ServiceError(service) = &err {
        let status = service.raw().status().as_u16();
        let e = service.err();
        let code = e.code().map(str::to_string);
        let message =
            e.message().map(str::to_string).unwrap_or_else(|| format!("`{op}` answered HTTP {status}"));
        let what = match code.as_deref() {
            Some("NoSuchBucket") => Some("bucket"),
            Some("NoSuchKey" | "NotFound" | "NoSuchUpload") => Some("object"),
            None if status == 404 => Some("object"),
            _ => None,
        };
        return match (what, code) {
            (Some(what), code) => BackendError::NotFound { what, code, message },
            (None, Some(c)) if CREDENTIAL_CODES.contains(&c.as_str()) => BackendError::Credentials {
                message: format!("{c}: {message}"),
                hint: CREDENTIALS_HINT.into(),
            },
            (None, code) => BackendError::from_service(code, message),
        };
    }
    let text = DisplayErrorContext(&err).to_string();
    let about_credentials = text.to_lowercase().contains("credential");
    match err {
        SdkError::TimeoutError(_) => {
            BackendError::Unreachable { endpoint: endpoint.to_string(), message: format!("`{op}` timed out") }
        }
        SdkError::DispatchFailure(_) | SdkError::ConstructionFailure(_) if about_credentials => {
            BackendError::Credentials { message: root_cause(&err), hint: CREDENTIALS_HINT.into() }
        }
        SdkError::DispatchFailure(_) => {
            BackendError::Unreachable { endpoint: endpoint.to_string(), message: root_cause(&err) }
        }
        _ => BackendError::Service { code: None, message: text },
    }
}

/// The innermost message of an error chain (`connection refused` rather than `dispatch failure`).
fn root_cause(err: &dyn std::error::Error) -> String {
    let mut current = err;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

fn local_error(action: &str, path: &Path, err: &std::io::Error) -> BackendError {
    BackendError::Service { code: None, message: format!("could not {action} `{}`: {err}", path.display()) }
}

/// Makes part buffers go back to the system when freed. glibc's allocator raises its mmap
/// threshold to the size of the first large block freed, after which the 16 MiB part buffers come
/// from per-thread heaps that keep their memory: a 1 GiB upload then held about twice the memory
/// in flight. A fixed threshold of 1 MiB keeps such blocks mapped and unmapped (process-wide, once).
fn release_part_buffers() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt only changes allocator parameters; it is safe to call at any time.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 1024 * 1024);
        }
    });
}

/// Opens a download's temporary file for writing; never creates it (see `download_file`).
async fn open_temp(temp: &Path) -> Result<tokio::fs::File, BackendError> {
    tokio::fs::OpenOptions::new().write(true).open(temp).await.map_err(|e| local_error("write", temp, &e))
}

async fn read_range(path: &Path, offset: u64, len: u64) -> Result<Vec<u8>, BackendError> {
    let mut file = tokio::fs::File::open(path).await.map_err(|e| local_error("read", path, &e))?;
    file.seek(SeekFrom::Start(offset)).await.map_err(|e| local_error("read", path, &e))?;
    let mut buf = vec![0u8; usize::try_from(len).unwrap_or(usize::MAX)];
    file.read_exact(&mut buf).await.map_err(|e| local_error("read", path, &e))?;
    Ok(buf)
}

/// Writes `segments` one after the other from `offset` of the file at `path` (which exists).
async fn write_range<B>(path: &Path, offset: u64, segments: Vec<B>) -> Result<(), BackendError>
where
    B: AsRef<[u8]> + Send + 'static,
{
    let owned_path = path.to_path_buf();
    let written = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        use std::os::unix::io::AsRawFd;
        let file = std::fs::OpenOptions::new().write(true).open(&owned_path)?;
        let mut at = offset;
        for segment in &segments {
            file.write_all_at(segment.as_ref(), at)?;
            at += segment.as_ref().len() as u64;
        }
        // Start writing this range back now, so the final fsync does not wait for all of it.
        // SAFETY: a valid descriptor and a range inside the file; the flag only starts I/O.
        unsafe {
            libc::sync_file_range(
                file.as_raw_fd(),
                offset as libc::off64_t,
                (at - offset) as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            )
        };
        Ok(())
    })
    .await;
    match written {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(local_error("write", path, &e)),
        Err(e) => Err(BackendError::Service { code: None, message: format!("a write task failed: {e}") }),
    }
}

/// The part uploads of one multipart upload: the part and its length, or why it failed.
type PartTasks = JoinSet<Result<(CompletedPart, u64), BackendError>>;

/// An unfinished multipart upload and its part uploads. Dropped while armed (the upload's future
/// was dropped: Ctrl-C in `Cloud::call`), it stops the part uploads and aborts the upload before
/// it returns (at most [`ABORT_GRACE`]), so that no parts stay behind on the endpoint.
struct PendingUpload {
    store: ObjectStore,
    bucket: String,
    key: String,
    upload_id: String,
    tasks: PartTasks,
    armed: bool,
}

impl PendingUpload {
    fn new(store: &ObjectStore, bucket: &str, key: &str, upload_id: &str) -> PendingUpload {
        PendingUpload {
            store: store.clone(),
            bucket: bucket.to_string(),
            key: key.to_string(),
            upload_id: upload_id.to_string(),
            tasks: JoinSet::new(),
            armed: true,
        }
    }

    fn abort_request(&self) -> impl Future<Output = ()> + Send + 'static {
        let request = self
            .store
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .send();
        async move {
            let _ = request.await;
        }
    }
}

impl Drop for PendingUpload {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        self.tasks.abort_all();
        let Ok(handle) = tokio::runtime::Handle::try_current() else { return };
        let mut tasks = std::mem::take(&mut self.tasks);
        let abort = self.abort_request();
        let work = tokio::time::timeout(ABORT_GRACE, async move {
            while tasks.join_next().await.is_some() {}
            abort.await;
        });
        match handle.runtime_flavor() {
            // The runtime's worker threads carry the requests while this thread waits for them.
            // Never a panic out of a drop (a runtime shutting down has no timer left).
            tokio::runtime::RuntimeFlavor::MultiThread => {
                let wait = std::panic::AssertUnwindSafe(|| {
                    let _ = tokio::task::block_in_place(|| handle.block_on(work));
                });
                let _ = std::panic::catch_unwind(wait);
            }
            _ => {
                handle.spawn(work);
            }
        }
    }
}

/// What a download's temporary file is named: `<name>.devami-part-<pid>`.
const PART_MARKER: &str = ".devami-part-";

/// A download's temporary file, removed on drop unless emptied (renamed into place). Its `flock`
/// is held for the guard's life, so that another devami's clean-up ([`remove_dead_parts`]) never
/// takes it for the file of a dead process.
struct TempFile {
    path: PathBuf,
    _lock: Option<std::fs::File>,
}

impl TempFile {
    /// `<local>.devami-part-<pid>`, created now with the folders above it, once the temporary files
    /// that killed downloads left in that folder are removed. Created before any await and only
    /// ever opened (never created) after, so that a download whose future is dropped (Ctrl-C in
    /// `Cloud::call`) cannot bring the file back once this guard removed it.
    fn create(local: &Path, name: &std::ffi::OsStr) -> Result<TempFile, BackendError> {
        let parent = local.parent().filter(|p| !p.as_os_str().is_empty());
        if let Some(parent) = parent {
            std::fs::create_dir_all(parent).map_err(|e| local_error("create", parent, &e))?;
        }
        remove_dead_parts(parent.unwrap_or(Path::new(".")));
        let mut temp_name = name.to_os_string();
        temp_name.push(format!("{PART_MARKER}{}", std::process::id()));
        let path = local.with_file_name(temp_name);
        let file = std::fs::File::create(&path).map_err(|e| local_error("create", &path, &e))?;
        // Best effort: a file system without locks still has the pid check.
        let locked = file.try_lock().is_ok();
        Ok(TempFile { path, _lock: locked.then_some(file) })
    }

    /// Writes `bytes` (if given), flushes the file to disk and renames it to `local`, in one
    /// blocking task. Dropped half-way, the guard removes the file: the rename then fails, or
    /// has already put the complete file in place.
    async fn finish(mut self, local: &Path, bytes: Option<Vec<u8>>) -> Result<(), BackendError> {
        let (temp, target) = (self.path.clone(), local.to_path_buf());
        let done = tokio::task::spawn_blocking(move || -> Result<(), BackendError> {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(&temp)
                .map_err(|e| local_error("write", &temp, &e))?;
            if let Some(bytes) = bytes {
                std::io::Write::write_all(&mut &file, &bytes).map_err(|e| local_error("write", &temp, &e))?;
            }
            file.sync_all().map_err(|e| local_error("write", &temp, &e))?;
            std::fs::rename(&temp, &target).map_err(|e| local_error("write", &target, &e))
        })
        .await;
        match done {
            Ok(Ok(())) => {
                self.path = PathBuf::new();
                Ok(())
            }
            Ok(Err(e)) => Err(e),
            Err(e) => Err(BackendError::Service { code: None, message: format!("a write task failed: {e}") }),
        }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Removes the temporary files of downloads killed before they finished (SIGKILL, power loss) from
/// `dir`: `<name>.devami-part-<pid>` regular files of another process that no live download holds
/// (its `flock`) and whose process is gone (or whose pid now belongs to a process started after
/// the file's last change, see [`crate::process::may_still_write`]). A part file of a live download
/// is never touched, whichever devami runs it. Each folder is looked at once per process (a folder
/// download writes many files into it); best effort, an error leaves the file.
fn remove_dead_parts(dir: &Path) {
    static SEEN: std::sync::Mutex<std::collections::BTreeSet<PathBuf>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let first = SEEN.lock().is_ok_and(|mut seen| seen.insert(dir.to_path_buf()));
    if !first {
        return;
    }
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| crate::atomic::temp_pid(n, PART_MARKER)) else { continue };
        if pid != me && part_is_dead(&entry.path(), pid) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Whether the part file at `path`, named after `pid`, belongs to no live download.
fn part_is_dead(path: &Path, pid: u32) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    // Never follows a link, never waits on a FIFO.
    let opened =
        std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path);
    let Ok(file) = opened else { return false };
    let Ok(meta) = file.metadata() else { return false };
    if !meta.is_file() || file.try_lock().is_err() {
        return false;
    }
    let modified = meta.modified().unwrap_or(std::time::SystemTime::UNIX_EPOCH);
    !crate::process::may_still_write(pid, modified)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::local::s3::tests::fixture;
    use std::fs;

    const MIB: u64 = 1024 * 1024;

    fn data(len: u64) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8 ^ (i / 4096) as u8).collect()
    }

    /// The backends' `async_trait` methods need `Send` futures.
    #[test]
    fn futures_are_send() {
        fn send<T: Send>(_: T) {}
        let store = ObjectStore::local(&Endpoint::at_port(
            9,
            &crate::backend::local::s3::Keys { access_key: "AK".into(), secret_key: "SK".into() },
        ));
        let mut progress = |_: u64, _: u64| {};
        send(store.ensure_bucket("b"));
        send(store.put("b", "k", Vec::new()));
        send(store.get("b", "k"));
        send(store.exists("b", "k"));
        send(store.list("b", ""));
        send(store.upload_file("b", "k", Path::new("f"), &mut progress));
        send(store.download_file("b", "k", Path::new("f"), &mut progress));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn objects_round_trip() {
        let f = fixture().await;
        let s = &f.store;
        s.ensure_bucket("alpha").await.unwrap();
        s.ensure_bucket("alpha").await.unwrap();
        s.put("alpha", "empty", Vec::new()).await.unwrap();
        s.put("alpha", "one", vec![7]).await.unwrap();
        s.put("alpha", "dir/two", b"hello".to_vec()).await.unwrap();
        assert_eq!(s.get("alpha", "empty").await.unwrap(), b"");
        assert_eq!(s.get("alpha", "one").await.unwrap(), [7]);
        assert_eq!(s.get("alpha", "dir/two").await.unwrap(), b"hello");
        s.put("alpha", "dir/two", b"bye".to_vec()).await.unwrap();
        assert_eq!(s.get("alpha", "dir/two").await.unwrap(), b"bye");
        assert!(s.exists("alpha", "empty").await.unwrap());
        assert!(!s.exists("alpha", "nope").await.unwrap());
        assert!(!s.exists("alpha", "dir").await.unwrap());
        let listed = s.list("alpha", "").await.unwrap();
        let keys: Vec<_> = listed.iter().map(|o| (o.key.as_str(), o.size)).collect();
        assert_eq!(keys, [("dir/two", 3), ("empty", 0), ("one", 1)]);
        assert!(listed.iter().all(|o| o.modified.is_some_and(|t| t > 1_600_000_000)));
        assert_eq!(s.list("alpha", "dir/").await.unwrap().len(), 1);
        assert!(s.list("alpha", "zzz").await.unwrap().is_empty());
        match s.get("alpha", "nope").await {
            Err(BackendError::NotFound { what: "object", message, .. }) => {
                assert_eq!(message, "object `s3://alpha/nope` does not exist")
            }
            other => panic!("{other:?}"),
        }
        match s.list("missing-bucket", "").await {
            Err(BackendError::NotFound { what: "bucket", message, .. }) => {
                assert_eq!(message, "bucket `s3://missing-bucket` does not exist")
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            s.put("missing-bucket", "x", vec![1]).await,
            Ok(()) | Err(BackendError::NotFound { .. })
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn neuro_caas_keys_with_spaces_and_colons() {
        let f = fixture().await;
        let s = &f.store;
        s.ensure_bucket("cianalysispipeline").await.unwrap();
        let job = "group/results/debugjob2026-11-25 13:23:38.123456";
        let keys = [
            format!("{job}/logs/DATASET_NAME:data.txt_STATUS.txt"),
            format!("{job}/logs/certificate.txt"),
            format!("{job}/process_results/end.txt"),
            "group/inputs/data set (1).txt".to_string(),
            "group/configs/config+plus&amp=1.json".to_string(),
        ];
        for (i, key) in keys.iter().enumerate() {
            s.put("cianalysispipeline", key, format!("content {i}").into_bytes()).await.unwrap();
        }
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(s.get("cianalysispipeline", key).await.unwrap(), format!("content {i}").into_bytes());
            assert!(s.exists("cianalysispipeline", key).await.unwrap());
        }
        let logs = s.list("cianalysispipeline", &format!("{job}/logs/")).await.unwrap();
        let names: Vec<_> = logs.iter().map(|o| o.key.clone()).collect();
        assert_eq!(names, [keys[0].clone(), keys[1].clone()]);
        assert_eq!(s.list("cianalysispipeline", "group/").await.unwrap().len(), keys.len());
        let on_disk = f.home.buckets_dir().join("cianalysispipeline").join(&keys[0]);
        assert_eq!(fs::read(on_disk).unwrap(), b"content 0");
        let local = f.tmp.path().join("dl/status file.txt");
        let n = s.download_file("cianalysispipeline", &keys[0], &local, &mut |_, _| {}).await.unwrap();
        assert_eq!((n, fs::read(&local).unwrap()), (9, b"content 0".to_vec()));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn files_at_and_above_the_multipart_threshold() {
        let f = fixture().await;
        let s = f.store.clone().with_multipart(5 * MIB, 5 * MIB);
        s.ensure_bucket("alpha").await.unwrap();
        for (name, len) in
            [("at", 5 * MIB), ("above", 5 * MIB + 1), ("three", 12 * MIB + 5), ("tiny", 1), ("none", 0)]
        {
            let local = f.tmp.path().join(name);
            let bytes = data(len);
            fs::write(&local, &bytes).unwrap();
            let mut seen = Vec::new();
            let sent = s
                .upload_file("alpha", name, &local, &mut |done, total| seen.push((done, total)))
                .await
                .unwrap();
            assert_eq!(sent, len);
            assert_eq!(seen.first(), Some(&(0, len)), "{name}");
            assert_eq!(seen.last(), Some(&(len, len)), "{name}");
            assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0), "{name}: {seen:?}");
            let head = s.client().head_object().bucket("alpha").key(name).send().await.unwrap();
            let multipart = head.e_tag().unwrap_or_default().contains('-');
            assert_eq!(multipart, len > 5 * MIB, "{name}: {:?}", head.e_tag());
            assert_eq!(fs::read(f.home.buckets_dir().join("alpha").join(name)).unwrap(), bytes, "{name}");
            let back = f.tmp.path().join(format!("{name}.back"));
            let mut seen = Vec::new();
            let got = s
                .download_file("alpha", name, &back, &mut |done, total| seen.push((done, total)))
                .await
                .unwrap();
            assert_eq!(got, len);
            assert_eq!(seen.last(), Some(&(len, len)), "{name}");
            assert!(fs::read(&back).unwrap() == bytes, "{name} differs after download");
        }
        let leftovers: Vec<_> = fs::read_dir(f.tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("devami-part"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failed_downloads_leave_nothing_behind() {
        let f = fixture().await;
        let s = &f.store;
        s.ensure_bucket("alpha").await.unwrap();
        let local = f.tmp.path().join("out.txt");
        let err = s.download_file("alpha", "missing.txt", &local, &mut |_, _| {}).await.unwrap_err();
        assert!(
            matches!(&err, BackendError::NotFound { what: "object", message, .. }
                if message == "object `s3://alpha/missing.txt` does not exist"),
            "{err:?}"
        );
        // An existing file under the final name is kept as it was.
        fs::write(&local, b"previous").unwrap();
        assert!(s.download_file("alpha", "missing.txt", &local, &mut |_, _| {}).await.is_err());
        assert_eq!(fs::read(&local).unwrap(), b"previous");
        let names: Vec<_> = fs::read_dir(f.tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!names.iter().any(|n| n.contains("devami-part")), "{names:?}");
        assert!(s.download_file("alpha", "x", Path::new("/"), &mut |_, _| {}).await.is_err());
    }

    /// The temporary files of killed downloads go with the next download into their folder; those
    /// a live process may still write stay.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_download_removes_the_parts_that_dead_downloads_left() {
        let f = fixture().await;
        let s = &f.store;
        s.ensure_bucket("alpha").await.unwrap();
        s.put("alpha", "k", b"content".to_vec()).await.unwrap();
        let dir = f.tmp.path().join("got");
        fs::create_dir(&dir).unwrap();
        let mut dead = std::process::Command::new("true").spawn().unwrap();
        let dead_pid = dead.id();
        dead.wait().unwrap();
        let mut live = std::process::Command::new("cat").stdin(std::process::Stdio::piped()).spawn().unwrap();
        let part = |name: &str, pid: u32| dir.join(format!("{name}{PART_MARKER}{pid}"));
        for (name, pid) in [("file.txt", dead_pid), ("other.bin", dead_pid), ("live.bin", live.id())] {
            fs::write(part(name, pid), b"partial").unwrap();
        }
        // A dead pid, but a live download (another pid namespace) holds the file's lock.
        fs::write(part("locked.bin", dead_pid), b"partial").unwrap();
        let held = fs::File::open(part("locked.bin", dead_pid)).unwrap();
        held.try_lock().unwrap();
        // Not a part file, and a folder with a part's name.
        fs::write(dir.join("notes.devami-part-x"), b"mine").unwrap();
        fs::create_dir(part("folder", dead_pid)).unwrap();

        s.download_file("alpha", "k", &dir.join("file.txt"), &mut |_, _| {}).await.unwrap();
        let mut names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let mut expected = vec![
            "file.txt".to_string(),
            format!("folder{PART_MARKER}{dead_pid}"),
            format!("live.bin{PART_MARKER}{}", live.id()),
            format!("locked.bin{PART_MARKER}{dead_pid}"),
            "notes.devami-part-x".to_string(),
        ];
        expected.sort();
        assert_eq!(names, expected);
        assert_eq!(fs::read(dir.join("file.txt")).unwrap(), b"content");
        drop(held);
        live.kill().unwrap();
        live.wait().unwrap();
    }

    /// Ctrl-C (as the store sees it) stops downloads and uploads, leaving nothing behind.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ctrl_c_stops_transfers_cleanly() {
        let f = fixture().await;
        let quiet = f.store.clone().with_multipart(5 * MIB, 5 * MIB);
        let s = ObjectStore::local(&f.endpoint).with_multipart(5 * MIB, 5 * MIB);
        quiet.ensure_bucket("alpha").await.unwrap();
        let bytes = data(11 * MIB);
        let local = f.tmp.path().join("big.bin");
        fs::write(&local, &bytes).unwrap();
        quiet.upload_file("alpha", "big.bin", &local, &mut |_, _| {}).await.unwrap();
        quiet.put("alpha", "small.txt", b"small".to_vec()).await.unwrap();

        // A store that sees Ctrl-C pressed, without the process-wide flag, which other tests of
        // this process set and clear concurrently.
        let s = ObjectStore { interrupted: || true, ..s };
        let down_big =
            s.download_file("alpha", "big.bin", &f.tmp.path().join("big.out"), &mut |_, _| {}).await;
        let down_small =
            s.download_file("alpha", "small.txt", &f.tmp.path().join("small.out"), &mut |_, _| {}).await;
        let up = s.upload_file("alpha", "big2.bin", &local, &mut |_, _| {}).await;

        for result in [down_big, down_small, up] {
            assert!(matches!(result, Err(BackendError::Interrupted)), "{result:?}");
        }
        let names: Vec<_> = fs::read_dir(f.tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!names.iter().any(|n| n.ends_with(".out") || n.contains("devami-part")), "{names:?}");
        assert!(!quiet.exists("alpha", "big2.bin").await.unwrap());
        assert_no_multipart_leftovers(f.home.buckets_dir());
    }

    /// A transfer whose future is dropped half-way (what `Cloud::call` does on Ctrl-C) leaves
    /// nothing either: no multipart upload, no temporary file, no final file.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropped_transfers_leave_nothing_behind() {
        let f = fixture().await;
        let s = f.store.clone().with_multipart(5 * MIB, 5 * MIB).without_interrupts();
        s.ensure_bucket("alpha").await.unwrap();
        let local = f.tmp.path().join("big.bin");
        fs::write(&local, data(40 * MIB)).unwrap();
        let buckets = f.home.buckets_dir();
        let names = |dir: &Path| -> Vec<String> {
            fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        };
        let until = |what: &'static str, dir: PathBuf| async move {
            while !names(&dir).iter().any(|n| n.contains(what)) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        let mut quiet = |_: u64, _: u64| {};
        // Dropped once a part is up (a drop during CreateMultipartUpload itself, before the
        // upload id is known, cannot abort what it has not heard of).
        let part_done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = part_done.clone();
        let mut note = move |done: u64, _: u64| {
            if done > 0 {
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        };
        tokio::select! {
            r = s.upload_file("alpha", "big.bin", &local, &mut note) => panic!("not dropped: {r:?}"),
            () = async {
                while !part_done.load(std::sync::atomic::Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            } => {}
        }
        assert_no_multipart_leftovers(buckets);
        // Under load the upload may have completed before the drop: then it is whole.
        if s.exists("alpha", "big.bin").await.unwrap() {
            assert_eq!(s.get("alpha", "big.bin").await.unwrap().len() as u64, 40 * MIB);
        }

        s.upload_file("alpha", "big.bin", &local, &mut |_, _| {}).await.unwrap();
        let out = f.tmp.path().join("out");
        fs::create_dir(&out).unwrap();
        let target = out.join("big.bin");
        tokio::select! {
            r = s.download_file("alpha", "big.bin", &target, &mut quiet) => panic!("not dropped: {r:?}"),
            () = until("devami-part", out.clone()) => {}
        }
        // Never a temporary file; the final name only if the download completed before the drop.
        let left = names(&out);
        assert!(left.iter().all(|n| n == "big.bin"), "{left:?}");
        if !left.is_empty() {
            assert_eq!(fs::metadata(&target).unwrap().len(), 40 * MIB);
        }
    }

    /// Multipart uploads leave `.upload*` folders in the buckets folder until completed or aborted.
    fn assert_no_multipart_leftovers(buckets: PathBuf) {
        let uploads: Vec<_> = fs::read_dir(buckets)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".upload"))
            .collect();
        assert!(uploads.is_empty(), "multipart leftovers: {uploads:?}");
    }

    /// A part that cannot be read fails the upload, and the multipart upload is aborted.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failing_multipart_uploads_are_aborted() {
        let f = fixture().await;
        let s = f.store.clone().with_multipart(5 * MIB, 5 * MIB);
        s.ensure_bucket("alpha").await.unwrap();
        // The file shrinks between the size check and the part reads: a part read fails.
        let local = f.tmp.path().join("shrinking.bin");
        fs::write(&local, data(11 * MIB)).unwrap();
        let mut first = true;
        let path = local.clone();
        let result = s
            .upload_file("alpha", "shrinking.bin", &local, &mut |_, _| {
                if std::mem::take(&mut first) {
                    fs::write(&path, b"short").unwrap();
                }
            })
            .await;
        assert!(result.is_err(), "{result:?}");
        assert!(!s.exists("alpha", "shrinking.bin").await.unwrap());
        assert_no_multipart_leftovers(f.home.buckets_dir());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn errors_are_mapped() {
        let f = fixture().await;
        f.store.ensure_bucket("alpha").await.unwrap();
        let mut wrong = f.endpoint.clone();
        wrong.secret_key = "not-the-secret".into();
        let err = ObjectStore::local(&wrong).without_interrupts().get("alpha", "x").await.unwrap_err();
        assert!(matches!(err, BackendError::Credentials { .. }), "{err:?}");
        let mut unknown = f.endpoint.clone();
        unknown.access_key = "someone-else".into();
        let err = ObjectStore::local(&unknown).without_interrupts().list("alpha", "").await.unwrap_err();
        assert!(matches!(err, BackendError::Credentials { .. }), "{err:?}");

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let mut closed = f.endpoint.clone();
        closed.url = format!("http://127.0.0.1:{port}");
        let err = ObjectStore::local(&closed).without_interrupts().get("alpha", "x").await.unwrap_err();
        match &err {
            BackendError::Unreachable { endpoint, message } => {
                assert_eq!(endpoint, &closed.url);
                assert!(!message.is_empty());
            }
            other => panic!("{other:?}"),
        }
        let text = err.to_string();
        assert!(text.starts_with(&format!("cannot reach `{}`", closed.url)), "{text}");
    }
}
