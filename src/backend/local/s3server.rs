//! The local backend's S3-compatible endpoint: the home's `buckets/<bucket>/<key>` files served on
//! loopback with the S3 protocol (s3s and its file-system backend, behind the checks of
//! `Guarded`), so that `aws s3 cp` and boto3 inside jobs, and the shell's own
//! [`ObjectStore`](crate::backend::objstore::ObjectStore), work unchanged.
//!
//! Invariants: one detached daemon per home (`devami __s3d HOME`, started on demand by
//! [`ensure_running`]; `run/s3d.lock` is held for its lifetime), on a port that survives restarts
//! (jobs have the address in their environment); requests are signed with the home's own key
//! pair ([`Keys`]); an object is the plain file at its path, read at request time, so a file
//! written directly into a bucket folder is served as it is; keys never leave their bucket.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::crypto::{Checksum, Md5};
use s3s::dto;
use s3s::service::S3ServiceBuilder;
use s3s::{S3, S3Request, S3Response, S3Result, s3_error};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::backend::local::error::LocalError;
use crate::backend::local::home::{Home, read_json, write_json};
use crate::error::{Error, Result};
use crate::state::write_atomically;

/// The key pair the shell and instances sign with: drawn at random once per home, so no other
/// local process (a browser's page included) can use the buckets with a published key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Keys {
    pub access_key: String,
    pub secret_key: String,
}

impl Keys {
    /// The home's key pair, drawn and written (mode 0600) on first use.
    pub fn of(home: &Home) -> Result<Keys> {
        let path = home.run_dir().join("s3-keys.json");
        if let Ok(keys) = read_json::<Keys>(&path) {
            return Ok(keys);
        }
        let _lock = home.lock()?;
        if let Ok(keys) = read_json::<Keys>(&path) {
            return Ok(keys);
        }
        let keys = Keys {
            access_key: format!("DEVAMI{}", home.random_hex(7)?.to_uppercase()),
            secret_key: home.random_hex(20)?,
        };
        let text = serde_json::to_vec_pretty(&keys)
            .map_err(|e| Error::StateCorrupt { path: path.clone(), message: e.to_string() })?;
        crate::backend::local::home::write_private(&path, &text)?;
        Ok(keys)
    }
}
/// The region the endpoint claims.
pub const REGION: &str = "us-east-1";
/// The daemon exits after this long without a request.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
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

const START_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(20);
/// Where writes whose sidecar names would be too long are staged (not a valid bucket name, so
/// no client can address it and `ListBuckets` skips it).
const STAGING: &str = ".devami-staging";
/// The longest file name the file system takes.
const NAME_MAX: usize = 255;

/// Where the endpoint is and how to sign for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
}

impl Endpoint {
    /// The local endpoint on `port`, signed for with `keys`.
    pub fn at_port(port: u16, keys: &Keys) -> Endpoint {
        Endpoint {
            url: format!("http://127.0.0.1:{port}"),
            access_key: keys.access_key.clone(),
            secret_key: keys.secret_key.clone(),
            region: REGION.to_string(),
        }
    }

    /// The environment that points the AWS CLI, boto3 and the SDKs at the endpoint (what jobs
    /// get). `AWS_PROFILE` must be removed from a job's environment: botocore prefers an explicit
    /// profile to these variables.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.url.as_str()),
            ("AWS_ENDPOINT_URL_S3", self.url.as_str()),
            ("AWS_ACCESS_KEY_ID", self.access_key.as_str()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_key.as_str()),
            ("AWS_DEFAULT_REGION", self.region.as_str()),
            ("AWS_REGION", self.region.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
}

/// `run/s3.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    pid: u32,
    port: u16,
    /// Epoch seconds.
    started: i64,
}

/// The running endpoint of `home`, starting the daemon if none answers.
pub fn ensure_running(home: &Home) -> Result<Endpoint> {
    if let Some(endpoint) = running(home) {
        return Ok(endpoint);
    }
    let exe = std::env::current_exe().map_err(|e| Error::io("locate", "the devami executable", e))?;
    start(home, &exe)
}

/// Starts `exe __s3d HOME` unless an endpoint answers once the start lock is held.
fn start(home: &Home, exe: &Path) -> Result<Endpoint> {
    let run = home.run_dir();
    let lock_path = run.join("s3.start.lock");
    let lock = open_lock(&lock_path)?;
    lock.lock().map_err(|e| Error::io("lock", &lock_path, e))?;
    if let Some(endpoint) = running(home) {
        return Ok(endpoint);
    }
    // Whatever s3.json says now is stale: its process is gone or does not answer.
    let _ = fs::remove_file(run.join("s3.json"));
    let log_path = run.join("s3.log");
    let mut child = spawn_daemon(home, exe, &log_path)?;
    let deadline = Instant::now() + START_TIMEOUT;
    let mut exited = false;
    loop {
        if let Some(endpoint) = running(home) {
            reap_later(child);
            return Ok(endpoint);
        }
        if !exited {
            match child.try_wait() {
                // Another daemon holds the home: wait for its s3.json.
                Ok(Some(status)) if status.success() => exited = true,
                Ok(Some(status)) => {
                    return Err(LocalError::EndpointExited { status, log: log_path }.into());
                }
                Ok(None) => {}
                Err(e) => return Err(Error::io("wait for", "the local S3 endpoint", e)),
            }
        }
        if Instant::now() >= deadline {
            if !exited {
                reap_later(child);
            }
            let record = run.join("s3.json");
            return Err(LocalError::EndpointSilent {
                seconds: START_TIMEOUT.as_secs(),
                log: log_path,
                record,
            }
            .into());
        }
        if let Err(e) = crate::interrupt::check() {
            if !exited {
                reap_later(child);
            }
            return Err(e);
        }
        std::thread::sleep(POLL);
    }
}

/// Whether the endpoint of `home` is up; the request counts as activity (keeps it from idling out).
pub fn ping(home: &Home) -> bool {
    running(home).is_some()
}

/// The endpoint recorded in `run/s3.json` when its process lives and it answers HTTP (never
/// starts one).
pub fn running(home: &Home) -> Option<Endpoint> {
    let path = home.run_dir().join("s3.json");
    if !path.exists() {
        return None;
    }
    let record: Record = read_json(&path).ok()?;
    let keys = Keys::of(home).ok()?;
    (pid_alive(record.pid) && answers(record.port)).then(|| Endpoint::at_port(record.port, &keys))
}

fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// A real HTTP exchange with `127.0.0.1:port` (any HTTP response will do).
fn answers(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 7];
    stream.read_exact(&mut head).is_ok() && &head == b"HTTP/1."
}

fn open_lock(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| Error::io("open", path, e))
}

fn spawn_daemon(home: &Home, exe: &Path, log_path: &Path) -> Result<Child> {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .map_err(|e| Error::io("open", log_path, e))?;
    let mut cmd = Command::new(exe);
    cmd.arg("__s3d").arg(home.root()).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::from(log));
    // The daemon outlives the shell: it keeps none of the developer's AWS settings or secrets.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("AWS_") {
            cmd.env_remove(name);
        }
    }
    // SAFETY: setsid is async-signal-safe; the closure touches nothing else.
    unsafe {
        cmd.pre_exec(|| if libc::setsid() == -1 { Err(io::Error::last_os_error()) } else { Ok(()) });
    }
    cmd.spawn().map_err(|e| Error::io("start", exe, e))
}

/// Collects the daemon's exit status whenever it comes, so it never lingers as a zombie.
fn reap_later(mut child: Child) {
    std::thread::spawn(move || {
        let _ = child.wait();
    });
}

/// The daemon: `devami __s3d HOME_ROOT`. Once bound it records `run/s3.json` (`{pid, port,
/// started}`) and `run/s3.port`, and it exits after [`IDLE_TIMEOUT`] without a request. Returns
/// the process exit status.
pub fn serve(home_root: &Path) -> i32 {
    match serve_home(home_root, IDLE_TIMEOUT) {
        Ok(()) => 0,
        Err(e) => {
            let mut text = format!("devami s3d: error: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text.push_str(&format!("\n  caused by: {s}"));
                source = s.source();
            }
            eprintln!("{text}");
            1
        }
    }
}

fn serve_home(root: &Path, idle: Duration) -> Result<()> {
    let home = Home::at(root.to_path_buf())?;
    let run = home.run_dir();
    let Some(lock) = take_daemon_lock(&run.join("s3d.lock"), Duration::from_secs(2))? else {
        eprintln!("devami s3d: another endpoint serves `{}`; leaving it alone", home.root().display());
        return Ok(());
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::io("start", "the endpoint's async runtime", e))?;
    let record_path = run.join("s3.json");
    let result = runtime.block_on(async {
        let listener = bind(&run).await?;
        let port = listener.local_addr().map_err(|e| Error::io("bind", "127.0.0.1", e))?.port();
        write_atomically(&run.join("s3.port"), format!("{port}\n").as_bytes())?;
        let started = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
        let record = Record { pid: std::process::id(), port, started };
        write_json(&record_path, &record)?;
        eprintln!(
            "devami s3d: pid {} serving `{}` on http://127.0.0.1:{port} since {}",
            record.pid,
            home.buckets_dir().display(),
            crate::clock::format(started)
        );
        serve_on(listener, home.buckets_dir(), idle, Keys::of(&home)?).await
    });
    if read_json::<Record>(&record_path).is_ok_and(|r| r.pid == std::process::id()) {
        let _ = fs::remove_file(&record_path);
    }
    if result.is_ok() {
        eprintln!("devami s3d: pid {} idle for {} s, exiting", std::process::id(), idle.as_secs());
    }
    drop(lock);
    result
}

/// The lock a daemon holds for its lifetime, waiting up to `patience` for a daemon that is idling
/// out to release it; `None` when another daemon keeps it.
fn take_daemon_lock(path: &Path, patience: Duration) -> Result<Option<File>> {
    let lock = open_lock(path)?;
    let deadline = Instant::now() + patience;
    loop {
        match lock.try_lock() {
            Ok(()) => return Ok(Some(lock)),
            Err(TryLockError::WouldBlock) if Instant::now() < deadline => std::thread::sleep(POLL),
            Err(TryLockError::WouldBlock) => return Ok(None),
            Err(TryLockError::Error(e)) => return Err(Error::io("lock", path, e)),
        }
    }
}

/// Binds 127.0.0.1 on the port of `run/s3.port` when it is free, else on a new port.
async fn bind(run: &Path) -> Result<TcpListener> {
    let recorded = fs::read_to_string(run.join("s3.port")).ok().and_then(|s| s.trim().parse::<u16>().ok());
    if let Some(port) = recorded.filter(|p| *p != 0)
        && let Ok(listener) = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await
    {
        return Ok(listener);
    }
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.map_err(|e| Error::io("bind", "127.0.0.1", e))
}

/// Serves `buckets` on `listener` until nothing happened for `idle` (no request, no open
/// connection; an idle connection held open keeps it alive four times as long at most).
pub async fn serve_on(listener: TcpListener, buckets: PathBuf, idle: Duration, keys: Keys) -> Result<()> {
    let activity = Arc::new(Activity::new());
    let uploads = Arc::new(Uploads::default());
    let store = Guarded::new(&buckets, Arc::clone(&activity), Arc::clone(&uploads))?;
    let root = store.root.clone();
    let mut last_sweep = Instant::now();
    let port = listener
        .local_addr()
        .map_err(|e| Error::io("read the address of", "the endpoint's socket", e))?
        .port();
    let mut builder = S3ServiceBuilder::new(store);
    builder.set_auth(SimpleAuth::from_single(keys.access_key.as_str(), keys.secret_key.as_str()));
    builder.set_access(LoopbackOnly { port });
    let service = builder.build();
    let http = ConnBuilder::new(TokioExecutor::new());
    let mut tick =
        tokio::time::interval((idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => {
                    // Small answers must not wait for Nagle's algorithm (about 40 ms each).
                    let _ = socket.set_nodelay(true);
                    activity.open.fetch_add(1, Ordering::SeqCst);
                    activity.touch();
                    let conn = http.serve_connection(TokioIo::new(socket), service.clone()).into_owned();
                    let activity = Arc::clone(&activity);
                    tokio::spawn(async move {
                        let _ = conn.await;
                        activity.touch();
                        activity.open.fetch_sub(1, Ordering::SeqCst);
                    });
                }
                Err(e) => {
                    eprintln!("devami s3d: cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = tick.tick() => {
                let quiet = activity.quiet_for();
                let open = activity.open.load(Ordering::SeqCst);
                if (open == 0 && quiet >= idle) || quiet >= idle.saturating_mul(4) {
                    return Ok(());
                }
                // The home was removed (a test's scratch folder, a `rm -rf`): nothing left to serve.
                if !buckets.is_dir() {
                    eprintln!("devami s3d: `{}` is gone, exiting", buckets.display());
                    return Ok(());
                }
                if last_sweep.elapsed() >= UPLOAD_SWEEP_EVERY {
                    last_sweep = Instant::now();
                    let (root, uploads) = (root.clone(), Arc::clone(&uploads));
                    tokio::task::spawn_blocking(move || {
                        abort_abandoned_uploads(&root, &uploads, ABANDONED_UPLOAD_AFTER);
                    });
                }
            }
        }
    }
}

/// Refuses every request addressed to a host other than the loopback address and port the
/// endpoint listens on. The key pair is public, so without this a web page whose own name was
/// rebound to 127.0.0.1 (DNS rebinding) could read and change the local buckets: its requests
/// carry its own name in `Host`. Anonymous requests are refused, as s3s does by default.
struct LoopbackOnly {
    port: u16,
}

#[async_trait::async_trait]
impl s3s::access::S3Access for LoopbackOnly {
    async fn check(&self, cx: &mut s3s::access::S3AccessContext<'_>) -> S3Result<()> {
        let host = cx.headers().get("host").and_then(|h| h.to_str().ok()).unwrap_or("");
        if !is_loopback_host(host, self.port) {
            return Err(s3_error!(
                AccessDenied,
                "this endpoint answers only requests for 127.0.0.1:{}",
                self.port
            ));
        }
        match cx.credentials() {
            Some(_) => Ok(()),
            None => Err(s3_error!(AccessDenied, "Signature is required")),
        }
    }
}

/// Whether a `Host` header names this endpoint on the loopback interface.
fn is_loopback_host(host: &str, port: u16) -> bool {
    ["127.0.0.1", "localhost", "[::1]"].iter().any(|h| {
        host.get(..h.len()).is_some_and(|name| name.eq_ignore_ascii_case(h))
            && host
                .get(h.len()..)
                .and_then(|rest| rest.strip_prefix(':'))
                .is_some_and(|p| p == port.to_string())
    })
}

/// The first byte of a `Content-Range` value (`bytes 0-99/1000` → 0).
fn range_start(content_range: &str) -> Option<u64> {
    content_range.strip_prefix("bytes ")?.split('-').next()?.trim().parse().ok()
}

/// When the endpoint last saw a request, and how many connections are open.
struct Activity {
    last: Mutex<Instant>,
    open: AtomicUsize,
}

impl Activity {
    fn new() -> Activity {
        Activity { last: Mutex::new(Instant::now()), open: AtomicUsize::new(0) }
    }

    fn touch(&self) {
        if let Ok(mut last) = self.last.lock() {
            *last = Instant::now();
        }
    }

    fn quiet_for(&self) -> Duration {
        self.last.lock().map(|l| l.elapsed()).unwrap_or_default()
    }
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
fn sidecar_name(bucket: &str, key: &str, kind: &str) -> String {
    format!(".bucket-{}.object-{}.{kind}.json", b64(bucket), b64(key))
}

/// Whether s3s-fs's sidecar names for this object (with an upload id for multipart uploads) would
/// exceed the file system's name limit, so that its writes would fail.
fn sidecar_too_long(bucket: &str, key: &str, multipart: bool) -> bool {
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

/// Removes what interrupted writes left in `buckets/` before the endpoint starts (s3s-fs itself
/// only removes its `.tmp.*` files): staged writes, and abandoned multipart uploads.
fn sweep(root: &Path) {
    let _ = fs::remove_dir_all(root.join(STAGING));
    abort_abandoned_uploads(root, &Uploads::default(), ABANDONED_UPLOAD_AFTER);
}

/// The upload a file of an unfinished multipart upload belongs to: `.upload-<id>.json`,
/// `.upload_id-<id>.part-<n>` or the sidecar `.bucket-….object-….upload-<id>.metadata.json`
/// (base64 has no dots, so `.upload-` in a sidecar name is the upload's).
fn upload_of(name: &str) -> Option<&str> {
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
fn upload_files(root: &Path, only: impl Fn(&str) -> bool) -> HashMap<String, Vec<PathBuf>> {
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
fn abort_files(root: &Path, id: &str, files: &[PathBuf]) {
    let _ = fs::remove_file(root.join(format!(".upload-{id}.json")));
    for f in files {
        let _ = fs::remove_file(f);
    }
}

/// Aborts the uploads of `root` whose last activity (what this endpoint saw, and their files'
/// times) is older than `after`, except those with a part on its way.
fn abort_abandoned_uploads(root: &Path, seen: &Uploads, after: Duration) {
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
struct Uploads(Mutex<HashMap<String, Seen>>);

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

    fn created(&self, id: &str) {
        self.with(|m| m.entry(id.to_string()).or_default().created = Some(SystemTime::now()));
    }

    /// A request for upload `id` (a part, the completion) begins; it ends when the guard drops.
    fn begin(self: &Arc<Self>, id: &str, part: bool) -> Busy {
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
    fn began(&self, root: &Path, id: &str) -> Option<SystemTime> {
        self.with(|m| m.get(id).and_then(|s| s.created))
            .or_else(|| fs::metadata(root.join(format!(".upload-{id}.json"))).and_then(|m| m.modified()).ok())
    }

    /// Whether upload `id` showed activity after `since`: a part began to arrive (as seen here)
    /// or, for an upload this endpoint has not seen, one of its files changed.
    fn active_since(&self, id: &str, files: &[PathBuf], since: SystemTime) -> bool {
        match self.with(|m| m.get(id).copied()) {
            Some(seen) if seen.busy > 0 => true,
            Some(seen) if seen.created.is_some() || seen.last_part.is_some() => {
                seen.created.max(seen.last_part).is_some_and(|t| t >= since)
            }
            _ => newest(files).is_none_or(|t| t >= since),
        }
    }

    fn forget(&self, id: &str) {
        self.with(|m| m.remove(id));
    }
}

/// A request under way for an upload (see [`Uploads::begin`]).
struct Busy {
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

/// A part whose upload was aborted while it was on its way: the abort removed the parts it saw,
/// and this one was written after (S3 documents the same race: an abort may need repeating). When
/// the part's handler ends or is dropped and the upload no longer exists, the part goes too.
struct LatePart {
    upload: PathBuf,
    part: PathBuf,
}

impl Drop for LatePart {
    fn drop(&mut self) {
        if !self.upload.exists() {
            let _ = fs::remove_file(&self.part);
        }
    }
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
struct Guarded {
    fs: s3s_fs::FileSystem,
    /// `buckets/`, canonical.
    root: PathBuf,
    activity: Arc<Activity>,
    uploads: Arc<Uploads>,
    staged: AtomicU64,
}

impl Guarded {
    fn new(buckets: &Path, activity: Arc<Activity>, uploads: Arc<Uploads>) -> Result<Guarded> {
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
    /// for the lifecycle rule ([`ABANDONED_UPLOAD_AFTER`]); here their parts would wait on a
    /// developer's disk for nothing.
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
pub(crate) mod tests {
    use super::*;

    #[test]
    fn content_range_starts_are_read() {
        assert_eq!(range_start("bytes 0-99/1000"), Some(0));
        assert_eq!(range_start("bytes 16777216-33554431/1073741824"), Some(16_777_216));
        assert_eq!(range_start("items 1-2/3"), None);
    }
    use crate::backend::BackendError;
    use crate::backend::objstore::ObjectStore;

    /// A home with its endpoint served in-process by the current tokio runtime.
    pub(crate) struct Fixture {
        pub tmp: tempfile::TempDir,
        pub home: Home,
        pub endpoint: Endpoint,
        pub store: ObjectStore,
    }

    pub(crate) async fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let home = Home::at(tmp.path().to_path_buf()).unwrap();
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let keys = Keys::of(&home).unwrap();
        tokio::spawn(serve_on(listener, home.buckets_dir(), Duration::from_secs(3600), keys.clone()));
        let endpoint = Endpoint::at_port(port, &keys);
        let store = ObjectStore::local(&endpoint).without_interrupts();
        Fixture { tmp, home, endpoint, store }
    }

    fn sidecar(home: &Home, bucket: &str, key: &str, kind: &str) -> PathBuf {
        home.buckets_dir().join(sidecar_name(bucket, key, kind))
    }

    #[test]
    fn env_points_jobs_at_the_endpoint() {
        let keys = Keys { access_key: "AK".into(), secret_key: "SK".into() };
        let env = Endpoint::at_port(4567, &keys).env();
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("AWS_ENDPOINT_URL"), Some("http://127.0.0.1:4567"));
        assert_eq!(get("AWS_ENDPOINT_URL_S3"), Some("http://127.0.0.1:4567"));
        assert_eq!(get("AWS_ACCESS_KEY_ID"), Some("AK"));
        assert_eq!(get("AWS_SECRET_ACCESS_KEY"), Some("SK"));
        assert_eq!(get("AWS_DEFAULT_REGION"), Some(REGION));
        assert_eq!(get("AWS_REGION"), Some(REGION));
        assert_eq!(env.len(), 6);
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sidecars_are_where_s3s_fs_puts_them_and_direct_writes_drop_them() {
        let f = fixture().await;
        f.store.ensure_bucket("alpha").await.unwrap();
        let key = "group/results/job 1/logs/DATASET_NAME:x_STATUS.txt";
        f.store.put("alpha", key, b"old".to_vec()).await.unwrap();
        assert!(sidecar(&f.home, "alpha", key, "internal").exists());
        assert!(sidecar(&f.home, "alpha", key, "metadata").exists());
        // A direct writer rewrites the object at once (same clock tick as the PUT).
        let path = prepare_direct_write(&f.home, "alpha", key).unwrap();
        assert_eq!(path, f.home.buckets_dir().join("alpha").join(key));
        assert!(!sidecar(&f.home, "alpha", key, "internal").exists());
        fs::write(&path, b"new and longer").unwrap();
        assert_eq!(f.store.get("alpha", key).await.unwrap(), b"new and longer");
        // Deleting forgets the sidecars too.
        f.store.put("alpha", "gone.txt", b"x".to_vec()).await.unwrap();
        f.store.client().delete_object().bucket("alpha").key("gone.txt").send().await.unwrap();
        assert!(!sidecar(&f.home, "alpha", "gone.txt", "internal").exists());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn files_written_directly_are_served_as_they_grow() {
        let f = fixture().await;
        f.store.ensure_bucket("alpha").await.unwrap();
        let path = prepare_direct_write(&f.home, "alpha", "job/logs/stdout").unwrap();
        let mut out = OpenOptions::new().create(true).append(true).open(&path).unwrap();
        out.write_all(b"line 1\n").unwrap();
        assert_eq!(f.store.get("alpha", "job/logs/stdout").await.unwrap(), b"line 1\n");
        assert!(f.store.exists("alpha", "job/logs/stdout").await.unwrap());
        let listed = f.store.list("alpha", "job/").await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!((listed[0].key.as_str(), listed[0].size), ("job/logs/stdout", 7));
        out.write_all(b"line 2\n").unwrap();
        assert_eq!(f.store.get("alpha", "job/logs/stdout").await.unwrap(), b"line 1\nline 2\n");
        let head =
            f.store.client().head_object().bucket("alpha").key("job/logs/stdout").send().await.unwrap();
        assert_eq!(head.content_length(), Some(14));

        // Rewritten behind the server's back after a PUT (without prepare_direct_write): the
        // stale sidecar (stored ETag and CRC) must not be served with the new content.
        f.store.put("alpha", "report.txt", b"first version".to_vec()).await.unwrap();
        let report = f.home.buckets_dir().join("alpha/report.txt");
        fs::write(&report, b"second").unwrap();
        let later = SystemTime::now() + Duration::from_secs(2);
        File::options().write(true).open(&report).unwrap().set_modified(later).unwrap();
        assert_eq!(f.store.get("alpha", "report.txt").await.unwrap(), b"second");

        // A folder is not an object.
        assert!(matches!(f.store.get("alpha", "job/logs").await, Err(BackendError::NotFound { .. })));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keys_cannot_leave_their_bucket() {
        let f = fixture().await;
        f.store.ensure_bucket("alpha").await.unwrap();
        f.store.ensure_bucket("bravo").await.unwrap();
        f.store.put("bravo", "secret.txt", b"secret".to_vec()).await.unwrap();
        let buckets = f.home.buckets_dir();
        fs::write(f.tmp.path().join("outside.txt"), b"outside").unwrap();
        let sidecar_key = format!("../{}", sidecar_name("bravo", "secret.txt", "internal"));
        for key in [
            "../bravo/secret.txt",
            "x/../../bravo/secret.txt",
            "../../outside.txt",
            "./a",
            "a/./b",
            sidecar_key.as_str(),
        ] {
            let got = f.store.get("alpha", key).await;
            assert!(got.is_err(), "GET {key} gave {got:?}");
            assert!(f.store.put("alpha", key, b"evil".to_vec()).await.is_err(), "PUT {key}");
            assert!(!f.store.exists("alpha", key).await.unwrap_or(false), "HEAD {key}");
        }
        // A leading slash (`/alpha//etc/passwd` on the wire).
        assert!(f.store.get("alpha", "/etc/passwd").await.is_err());
        assert!(f.store.put("alpha", "/tmp/evil", b"evil".to_vec()).await.is_err());
        assert!(!Path::new("/tmp/evil").exists() || fs::read("/tmp/evil").unwrap() != b"evil");
        assert_eq!(fs::read(buckets.join("bravo/secret.txt")).unwrap(), b"secret");
        assert!(!buckets.join("bravo/evil").exists() && !f.tmp.path().join("evil").exists());
        assert_eq!(fs::read(f.tmp.path().join("outside.txt")).unwrap(), b"outside");
        // Copies and multipart uploads are checked too.
        let copy = f
            .store
            .client()
            .copy_object()
            .bucket("alpha")
            .key("copy.txt")
            .copy_source("alpha/../bravo/secret.txt")
            .send()
            .await;
        assert!(copy.is_err() && !buckets.join("alpha/copy.txt").exists());
        let mpu = f.store.client().create_multipart_upload().bucket("alpha").key("../bravo/mpu").send().await;
        assert!(mpu.is_err());
        // Nothing was written outside `alpha` but what bravo had.
        let bravo: Vec<_> = f.store.list("bravo", "").await.unwrap().into_iter().map(|o| o.key).collect();
        assert_eq!(bravo, ["secret.txt"]);
        assert!(f.store.list("alpha", "").await.unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn symlinks_out_of_a_bucket_are_refused() {
        let f = fixture().await;
        f.store.ensure_bucket("alpha").await.unwrap();
        let buckets = f.home.buckets_dir();
        let outside = f.tmp.path().join("outside");
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("secret.txt"), b"secret").unwrap();
        std::os::unix::fs::symlink(&outside, buckets.join("alpha/dirlink")).unwrap();
        std::os::unix::fs::symlink(outside.join("secret.txt"), buckets.join("alpha/filelink")).unwrap();
        std::os::unix::fs::symlink(&outside, buckets.join("charlie")).unwrap();
        std::os::unix::fs::symlink("../bravo-gone", buckets.join("alpha/dangling")).unwrap();
        for key in ["dirlink/secret.txt", "filelink"] {
            assert!(f.store.get("alpha", key).await.is_err(), "GET {key}");
        }
        assert!(f.store.put("alpha", "dirlink/new.txt", b"evil".to_vec()).await.is_err());
        assert!(f.store.put("alpha", "dangling/new.txt", b"evil".to_vec()).await.is_err());
        assert!(!outside.join("new.txt").exists());
        assert!(f.store.get("charlie", "secret.txt").await.is_err());
        assert!(f.store.list("charlie", "").await.is_err());
        assert!(f.store.put("charlie", "new.txt", b"evil".to_vec()).await.is_err());
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 1);
        assert!(prepare_direct_write(&f.home, "alpha", "dirlink/x").is_err());
        assert!(prepare_direct_write(&f.home, "alpha", "../x").is_err());
        assert!(prepare_direct_write(&f.home, "Not_A_Bucket", "x").is_err());
        // A link that stays inside its bucket is fine.
        f.store.put("alpha", "real/data.txt", b"data".to_vec()).await.unwrap();
        std::os::unix::fs::symlink(buckets.join("alpha/real"), buckets.join("alpha/alias")).unwrap();
        assert_eq!(f.store.get("alpha", "alias/data.txt").await.unwrap(), b"data");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keys_too_long_for_sidecar_names_are_stored() {
        let f = fixture().await;
        f.store.ensure_bucket("cianalysispipeline").await.unwrap();
        let key = format!(
            "reviewers/results/job__cianalysispipeline_1700000000/process_results/{}.h5",
            "a_rather_long_output_file_name_".repeat(4)
        );
        assert!(sidecar_too_long("cianalysispipeline", &key, false));
        f.store.put("cianalysispipeline", &key, b"long".to_vec()).await.unwrap();
        assert_eq!(f.store.get("cianalysispipeline", &key).await.unwrap(), b"long");
        let listed = f.store.list("cianalysispipeline", "").await.unwrap();
        assert_eq!(listed.iter().map(|o| o.key.as_str()).collect::<Vec<_>>(), [key.as_str()]);
        // Multipart, through the staging name.
        let store = f.store.clone().with_multipart(0, 0);
        let data: Vec<u8> = (0..5 * 1024 * 1024 + 3).map(|i: u32| (i % 251) as u8).collect();
        let local = f.tmp.path().join("big.bin");
        fs::write(&local, &data).unwrap();
        let key2 = format!("{key}.2");
        store.upload_file("cianalysispipeline", &key2, &local, &mut |_, _| {}).await.unwrap();
        assert_eq!(fs::read(f.home.buckets_dir().join("cianalysispipeline").join(&key2)).unwrap(), data);
        let staging: Vec<_> = fs::read_dir(f.home.buckets_dir().join(STAGING)).unwrap().collect();
        assert!(staging.is_empty(), "{staging:?}");
        let leftovers: Vec<_> = fs::read_dir(f.home.buckets_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.') && n != STAGING)
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

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

    /// Starts a multipart upload of `key` with one part; its upload id.
    async fn unfinished_upload(f: &Fixture, key: &str) -> String {
        let c = f.store.client();
        let id = c.create_multipart_upload().bucket("alpha").key(key).send().await.unwrap();
        let id = id.upload_id().unwrap().to_string();
        let part = aws_sdk_s3::primitives::ByteStream::from(vec![7u8; 5 * 1024 * 1024]);
        c.upload_part()
            .bucket("alpha")
            .key(key)
            .upload_id(&id)
            .part_number(1)
            .body(part)
            .send()
            .await
            .unwrap();
        id
    }

    fn files_of(f: &Fixture, id: &str) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(f.home.buckets_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| upload_of(n) == Some(id))
            .collect();
        names.sort();
        names
    }

    /// An upload left by a dead client goes once a newer upload of its key completes; an upload
    /// of another key stays.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_completed_upload_aborts_the_abandoned_uploads_of_its_key() {
        let f = fixture().await;
        f.store.ensure_bucket("alpha").await.unwrap();
        let dead = unfinished_upload(&f, "data/big.bin").await;
        let other = unfinished_upload(&f, "data/other.bin").await;
        assert_eq!(files_of(&f, &dead).len(), 3, "{:?}", files_of(&f, &dead));
        let local = f.tmp.path().join("big.bin");
        fs::write(&local, vec![1u8; 11 * 1024 * 1024]).unwrap();
        let store = f.store.clone().with_multipart(5 * 1024 * 1024, 5 * 1024 * 1024);
        store.upload_file("alpha", "data/big.bin", &local, &mut |_, _| {}).await.unwrap();
        assert_eq!(files_of(&f, &dead), Vec::<String>::new());
        assert_eq!(files_of(&f, &other).len(), 3, "{:?}", files_of(&f, &other));
        // The aborted upload is gone for its client too.
        let late = f
            .store
            .client()
            .upload_part()
            .bucket("alpha")
            .key("data/big.bin")
            .upload_id(&dead)
            .part_number(2)
            .body(aws_sdk_s3::primitives::ByteStream::from(vec![1u8; 10]))
            .send()
            .await;
        assert!(late.is_err(), "{late:?}");
        assert_eq!(files_of(&f, &dead), Vec::<String>::new());
        assert_eq!(
            fs::read(f.home.buckets_dir().join("alpha/data/big.bin")).unwrap().len(),
            11 * 1024 * 1024
        );
    }

    /// The lifecycle rule: an upload idle for longer than the bound goes, judged on its newest
    /// file; one with a part on its way stays.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn abandoned_uploads_expire() {
        let f = fixture().await;
        f.store.ensure_bucket("alpha").await.unwrap();
        let old = unfinished_upload(&f, "old.bin").await;
        let recent = unfinished_upload(&f, "recent.bin").await;
        let root = fs::canonicalize(f.home.buckets_dir()).unwrap();
        let age = |id: &str, files: &[String], by: Duration| {
            for name in files {
                let file = File::options().write(true).open(root.join(name)).unwrap();
                file.set_modified(SystemTime::now() - by).unwrap();
            }
            assert!(!files.is_empty(), "{id}");
        };
        age(&old, &files_of(&f, &old), Duration::from_secs(7200));
        // `recent` began long ago, but its part is new.
        age(&recent, &[format!(".upload-{recent}.json")], Duration::from_secs(7200));
        let seen = Arc::new(Uploads::default());
        abort_abandoned_uploads(&root, &seen, ABANDONED_UPLOAD_AFTER);
        assert_eq!(files_of(&f, &old), Vec::<String>::new());
        assert_eq!(files_of(&f, &recent).len(), 3);
        // Idle by its files, but a part is on its way.
        age(&recent, &files_of(&f, &recent), Duration::from_secs(7200));
        let busy = seen.begin(&recent, true);
        let seen_then = Uploads::default();
        abort_abandoned_uploads(&root, &seen, ABANDONED_UPLOAD_AFTER);
        assert_eq!(files_of(&f, &recent).len(), 3);
        drop(busy);
        // What this endpoint saw counts as activity too; without it, the files decide.
        abort_abandoned_uploads(&root, &seen, ABANDONED_UPLOAD_AFTER);
        assert_eq!(files_of(&f, &recent).len(), 3);
        abort_abandoned_uploads(&root, &seen_then, ABANDONED_UPLOAD_AFTER);
        assert_eq!(files_of(&f, &recent), Vec::<String>::new());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_server_stops_when_idle() {
        let tmp = tempfile::tempdir().unwrap();
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let start = Instant::now();
        let keys = Keys { access_key: "AK".into(), secret_key: "SK".into() };
        serve_on(listener, tmp.path().join("buckets"), Duration::from_millis(100), keys).await.unwrap();
        assert!(start.elapsed() >= Duration::from_millis(100) && start.elapsed() < Duration::from_secs(5));
    }

    /// `aws s3` (AWS CLI 1.x) and boto3 against the endpoint with nothing but [`Endpoint::env`].
    /// Uses `.venv/bin` (awscli and boto3), which the test command `bash tests/run.sh` installs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn aws_cli_and_boto3_work_unchanged() {
        let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin");
        assert!(
            bin.join("aws").is_file(),
            "awscli and boto3 are missing from {}: run the test command `bash tests/run.sh`",
            bin.display()
        );
        let f = fixture().await;
        f.store.ensure_bucket("alpha").await.unwrap();
        let work = f.tmp.path().join("work");
        fs::create_dir_all(&work).unwrap();
        let run = |program: &str, args: &[&str]| {
            let mut cmd = tokio::process::Command::new(bin.join(program));
            cmd.args(args).current_dir(&work).env_remove("AWS_PROFILE").env("HOME", &work);
            cmd.env("AWS_CONFIG_FILE", work.join("none"))
                .env("AWS_SHARED_CREDENTIALS_FILE", work.join("none"));
            cmd.envs(f.endpoint.env());
            let label = format!("{program} {args:?}");
            async move {
                let out = cmd.output().await.unwrap();
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                assert!(out.status.success(), "{label}: {text}{}", String::from_utf8_lossy(&out.stderr));
                text
            }
        };
        let big: Vec<u8> = (0..20 * 1024 * 1024u32).map(|i| (i % 253) as u8).collect();
        fs::write(work.join("big.bin"), &big).unwrap();
        fs::write(work.join("small.txt"), b"small").unwrap();
        let job = "group/results/debugjob2026-11-25 13:23:38.123456";
        let status = format!("s3://alpha/{job}/logs/DATASET_NAME:data.txt_STATUS.txt");
        let long = format!("s3://alpha/{job}/process_results/{}.bin", "long_name_".repeat(12));
        run("aws", &["s3", "cp", "small.txt", &status]).await;
        run("aws", &["s3", "cp", "big.bin", "s3://alpha/big.bin"]).await;
        run("aws", &["s3", "cp", "big.bin", &long]).await;
        assert_eq!(f.store.get("alpha", &status["s3://alpha/".len()..]).await.unwrap(), b"small");
        assert_eq!(fs::read(f.home.buckets_dir().join("alpha/big.bin")).unwrap(), big);
        assert_eq!(
            fs::read(f.home.buckets_dir().join("alpha").join(&long["s3://alpha/".len()..])).unwrap(),
            big
        );
        let live = prepare_direct_write(&f.home, "alpha", &format!("{job}/logs/stdout.txt")).unwrap();
        fs::write(&live, b"live output\n").unwrap();
        let listing = run("aws", &["s3", "ls", "--recursive", "s3://alpha/group/"]).await;
        assert!(
            listing.contains("DATASET_NAME:data.txt_STATUS.txt") && listing.contains("stdout.txt"),
            "{listing}"
        );
        let printed = run("aws", &["s3", "cp", &format!("s3://alpha/{job}/logs/stdout.txt"), "-"]).await;
        assert_eq!(printed, "live output\n");
        run("aws", &["s3", "cp", "s3://alpha/big.bin", "big.back"]).await;
        assert_eq!(fs::read(work.join("big.back")).unwrap(), big);
        let script = r#"
import boto3, sys
s3 = boto3.client("s3")
s3.put_object(Bucket="alpha", Key="py/hello.txt", Body=b"hello")
assert s3.get_object(Bucket="alpha", Key="py/hello.txt")["Body"].read() == b"hello"
s3.upload_file("big.bin", "alpha", "py/big.bin")
s3.download_file("alpha", "py/big.bin", "py.back")
assert open("py.back", "rb").read() == open("big.bin", "rb").read()
keys = [o["Key"] for o in s3.list_objects_v2(Bucket="alpha", Prefix="py/")["Contents"]]
assert keys == ["py/big.bin", "py/hello.txt"], keys
try:
    s3.get_object(Bucket="alpha", Key="../bravo/x")
    sys.exit("traversal allowed")
except s3.exceptions.ClientError as e:
    print(e.response["Error"]["Code"])
"#;
        let out = run("python3", &["-c", script]).await;
        assert!(out.contains("InvalidArgument"), "{out}");
    }

    #[test]
    fn the_daemon_records_its_address_and_keeps_its_port() {
        let tmp = tempfile::tempdir().unwrap();
        let home = Home::at(tmp.path().to_path_buf()).unwrap();
        let root = tmp.path().to_path_buf();
        let idle = Duration::from_millis(300);
        let first = std::thread::spawn({
            let root = root.clone();
            move || serve_home(&root, idle).unwrap()
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        while !ping(&home) {
            assert!(Instant::now() < deadline, "the daemon did not come up");
            std::thread::sleep(POLL);
        }
        let record: Record = read_json(&home.run_dir().join("s3.json")).unwrap();
        assert_eq!(record.pid, std::process::id());
        let port: u16 = fs::read_to_string(home.run_dir().join("s3.port")).unwrap().trim().parse().unwrap();
        assert_eq!(port, record.port);
        assert_eq!(ensure_running(&home).unwrap(), Endpoint::at_port(port, &Keys::of(&home).unwrap()));
        // A second daemon for the same home would leave.
        assert!(take_daemon_lock(&home.run_dir().join("s3d.lock"), Duration::ZERO).unwrap().is_none());
        assert!(ping(&home));
        // Idle: it exits and forgets its record; the next one takes the same port.
        first.join().unwrap();
        assert!(!home.run_dir().join("s3.json").exists());
        let second = std::thread::spawn(move || serve_home(&root, idle).unwrap());
        while !ping(&home) {
            assert!(Instant::now() < deadline, "the second daemon did not come up");
            std::thread::sleep(POLL);
        }
        let again: Record = read_json(&home.run_dir().join("s3.json")).unwrap();
        assert_eq!(again.port, port);
        second.join().unwrap();
    }

    #[test]
    fn ensure_running_reuses_a_live_endpoint_and_ignores_a_stale_record() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let home = Home::at(tmp.path().to_path_buf()).unwrap();
        let record_path = home.run_dir().join("s3.json");

        // A record whose process is gone: not running; a daemon that fails at once is reported
        // with the log's path.
        write_json(&record_path, &Record { pid: u32::MAX - 1, port: 9, started: 0 }).unwrap();
        assert!(!ping(&home));
        let err = start(&home, Path::new("/bin/false")).unwrap_err().to_string();
        assert!(err.contains("s3.log"), "{err}");
        assert!(!record_path.exists(), "the stale record is gone");

        // A live endpoint (served in-process) is found and reused.
        let listener = runtime.block_on(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))).unwrap();
        let port = listener.local_addr().unwrap().port();
        runtime.spawn(serve_on(
            listener,
            home.buckets_dir(),
            Duration::from_secs(60),
            Keys::of(&home).unwrap(),
        ));
        write_json(&record_path, &Record { pid: std::process::id(), port, started: 0 }).unwrap();
        assert!(ping(&home));
        let endpoint = ensure_running(&home).unwrap();
        assert_eq!(endpoint, Endpoint::at_port(port, &Keys::of(&home).unwrap()));
    }
}
