//! The local backend's S3-compatible endpoint: the home's `buckets/<bucket>/<key>` files served on
//! loopback with the S3 protocol (s3s and its file-system backend, behind the checks of
//! `service`), so that `aws s3 cp` and boto3 inside jobs, and the shell's own
//! [`ObjectStore`](crate::backend::objstore::ObjectStore), work unchanged. This module is the
//! daemon: how it is found, started and served; `uploads` keeps the multipart-upload books.
//!
//! Invariants: one detached daemon per home (`devami __s3d HOME`, started on demand by
//! [`ensure_running`]; `run/s3d.lock` is held for its lifetime), on a port that survives restarts
//! (jobs have the address in their environment); requests are signed with the home's own key
//! pair ([`Keys`]) and addressed to the loopback address and port it listens on.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use s3s::{S3Result, s3_error};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::backend::local::error::LocalError;
use crate::backend::local::home::{Home, read_json, write_json};
use crate::error::{Error, Result};

mod service;
#[cfg(test)]
pub(crate) mod tests;
mod uploads;

pub use service::prepare_direct_write;
pub use uploads::{ABANDONED_UPLOAD_AFTER, UPLOAD_SWEEP_EVERY};

use service::Guarded;
use uploads::{Uploads, abort_abandoned_uploads};

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
        crate::atomic::write_private(&path, &text)?;
        Ok(keys)
    }
}
/// The region the endpoint claims.
pub const REGION: &str = "us-east-1";
/// The daemon exits after this long without a request.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Where writes whose sidecar names would be too long are staged (not a valid bucket name, so
/// no client can address it and `ListBuckets` skips it).
const STAGING: &str = ".devami-staging";
const START_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(20);

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
        crate::atomic::write(&run.join("s3.port"), format!("{port}\n").as_bytes())?;
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
