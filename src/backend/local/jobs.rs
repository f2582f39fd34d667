//! SSM's AWS-RunShellScript for the local backend: real jobs inside the instance's container,
//! each watched by a detached supervisor process (`devami __job HOME ID`), so that closing the
//! shell never ends a job.
//!
//! Invariants: every change of a job document is a compare-and-set under the home's lock, and the
//! lock is never held while the engine works; a job's processes carry its `DEVAMI_COMMAND_ID` in
//! their environment, which is how they are found and ended (background children included).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::engine::{Chunk, Engine, ExecSpec};
use super::error::LocalError;
use super::hardware;
use super::home::{Home, read_json, read_json_any, write_json};
use super::instances::{self, PLUMBING_INSIDE, STOP_MARKER};
use crate::backend::{InstanceState, JobReport, JobState};
use crate::clock;
use crate::error::{Error, Result};

/// SSM's default `executionTimeout` (seconds), used when a job gives 0.
pub const DEFAULT_EXECUTION_TIMEOUT: u64 = 3600;
/// How often the supervisor looks at its process.
const CHILD_POLL: Duration = Duration::from_millis(100);
/// How often the supervisor reads the job's and the instance's documents.
const DOC_POLL: Duration = Duration::from_millis(500);
/// How often the supervisor pings the S3 endpoint.
const PING_EVERY: Duration = Duration::from_secs(60);
/// How long a job may stay `Pending` without a supervisor before it is reported failed.
const START_GRACE_SECS: i64 = 60;
/// The PATH of processes inside an instance: the power commands first.
pub const INSTANCE_PATH: &str =
    "/run/devami/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Runs the job's script in its working directory (`$1`, `~` being root's home as under SSM).
const WRAPPER: &str = r#"wd=$1
case $wd in "~") wd=$HOME ;; "~/"*) wd=$HOME/${wd#"~/"} ;; esac
cd -- "$wd" 2>/dev/null || { echo "failed to run commands: working directory \`$1\` does not exist on instance $DEVAMI_INSTANCE_ID" >&2; exit 1; }
exec bash -c "$2"
"#;

/// Ends the processes whose environment holds `$1` (SIGTERM, SIGKILL after 2 s).
const KILLER: &str = r#"m=$1
list() { for d in /proc/[0-9]*; do p=${d#/proc/}; [ "$p" = "$$" ] && continue; tr '\0' '\n' < "$d/environ" 2>/dev/null | grep -qxF "$m" && echo "$p"; done; }
pids=$(list); [ -z "$pids" ] && exit 0
kill -TERM $pids 2>/dev/null
i=0
while [ $i -lt 20 ]; do pids=$(list); [ -z "$pids" ] && exit 0; sleep 0.1; i=$((i + 1)); done
kill -KILL $pids 2>/dev/null
exit 0
"#;

/// A job of the local backend, as stored in `commands/<id>/job.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobMeta {
    pub command_id: String,
    pub instance_id: String,
    pub commands: Vec<String>,
    pub working_directory: String,
    /// Seconds; 0 means SSM's default (3600).
    pub execution_timeout: u64,
    pub bucket: String,
    /// SSM's `OutputS3KeyPrefix`, e.g. `debug_direct/` (joined with `/` as SSM does).
    pub output_prefix: String,
    pub state: JobState,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub supervisor_pid: Option<u32>,
    /// Epoch seconds.
    pub submitted: i64,
    #[serde(default)]
    pub started: Option<i64>,
    #[serde(default)]
    pub ended: Option<i64>,
    #[serde(default)]
    pub detail: Option<String>,
}

/// A stop (or reboot) requested inside an instance by its power commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopRequest {
    /// When it was asked, epoch seconds.
    pub requested: i64,
    /// When it is due (`shutdown -h 1`: a minute later), epoch seconds.
    pub due: i64,
    /// `poweroff`, `halt` or `reboot`.
    pub action: String,
    /// The command line that asked.
    pub command: String,
}

fn job_path(home: &Home, command_id: &str) -> PathBuf {
    home.command_dir(command_id).join("job.json")
}

fn env_path(home: &Home, command_id: &str) -> PathBuf {
    home.command_dir(command_id).join("env.json")
}

fn supervisor_path(home: &Home, command_id: &str) -> PathBuf {
    home.command_dir(command_id).join("supervisor")
}

/// The log of the job's supervisor (its own messages, not the job's output).
pub fn supervisor_log(home: &Home, command_id: &str) -> PathBuf {
    home.command_dir(command_id).join("supervisor.log")
}

/// Reads a job's document.
pub fn read_job(home: &Home, command_id: &str) -> Result<JobMeta> {
    check_name("command id", command_id)?;
    read_json(&job_path(home, command_id))
}

/// The key of one of the job's outputs (`stdout` or `stderr`) in the output bucket, as SSM
/// writes it (`debug_direct/<command>/<instance>/awsrunShellScript/0.awsrunShellScript/stdout`).
pub fn output_key(meta: &JobMeta, stream: &str) -> String {
    let mut parts: Vec<&str> = meta.output_prefix.split('/').filter(|s| !s.is_empty()).collect();
    parts.extend([
        meta.command_id.as_str(),
        meta.instance_id.as_str(),
        "awsrunShellScript",
        "0.awsrunShellScript",
    ]);
    parts.push(stream);
    parts.join("/")
}

fn check_name(what: &'static str, name: &str) -> Result<(), LocalError> {
    if name.is_empty() || name.starts_with('.') || name.contains(['/', '\0']) {
        return Err(LocalError::InvalidName { what, name: name.to_string() });
    }
    Ok(())
}

fn validate(meta: &JobMeta) -> Result<(), LocalError> {
    check_name("command id", &meta.command_id)?;
    check_name("instance id", &meta.instance_id)?;
    check_name("output bucket", &meta.bucket)?;
    if meta.output_prefix.starts_with('/') || meta.output_prefix.split('/').any(|s| s == ".." || s == ".") {
        return Err(LocalError::InvalidOutputPrefix { prefix: meta.output_prefix.clone() });
    }
    if meta.commands.is_empty() {
        return Err(LocalError::NoCommands);
    }
    Ok(())
}

/// Records the job (`commands/<id>/job.json`, `Pending`) and starts its detached supervisor (its
/// own session, reparented to init); returns at once.
pub fn submit(home: &Home, mut meta: JobMeta, env: &[(String, String)]) -> Result<()> {
    validate(&meta)?;
    let dir = home.command_dir(&meta.command_id);
    {
        let _lock = home.lock()?;
        if job_path(home, &meta.command_id).exists() {
            return Err(LocalError::CommandExists { id: meta.command_id }.into());
        }
        fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
        let text = serde_json::to_vec_pretty(env).map_err(|e| Error::StateCorrupt {
            path: env_path(home, &meta.command_id),
            message: e.to_string(),
        })?;
        crate::atomic::write_private(&env_path(home, &meta.command_id), &text)?;
        meta.state = JobState::Pending;
        write_json(&job_path(home, &meta.command_id), &meta)?;
    }
    let spawned = super::detach::devami_exe().and_then(|exe| {
        let mut cmd = std::process::Command::new(exe);
        cmd.arg("__job").arg(home.root()).arg(&meta.command_id);
        super::detach::spawn_detached(cmd, &supervisor_log(home, &meta.command_id))
    });
    if let Err(e) = spawned {
        finish(
            home,
            &meta.command_id,
            JobState::Failed,
            None,
            format!("could not start the job supervisor: {e}"),
        )?;
        return Err(e);
    }
    Ok(())
}

/// The hidden subcommand `devami __job HOME COMMAND_ID`: supervises one job; returns the
/// process's exit status (0 whatever the job's outcome, 1 if the supervisor itself failed).
pub fn supervise(home_root: &Path, command_id: &str) -> i32 {
    let home = match Home::at(home_root.to_path_buf()) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("devami __job: {e}");
            return 1;
        }
    };
    // SAFETY: the handler only stores into an atomic, which is async-signal-safe.
    unsafe {
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("devami __job {command_id}: cannot start the runtime: {e}");
            return 1;
        }
    };
    let result = rt.block_on(async {
        check_name("command id", command_id)?;
        let engine = match Engine::connect(&home).await {
            Ok(e) => e,
            Err(e) => {
                finish(&home, command_id, JobState::Failed, None, format!("failed to run commands: {e}"))?;
                return Err(Error::from(e));
            }
        };
        supervise_with(&home, &engine, command_id).await
    });
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("devami __job {command_id}: {e}");
            1
        }
    }
}

/// The signal that asked the supervisor process to end (0: none).
static TERMINATED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    TERMINATED.store(sig, Ordering::SeqCst);
}

async fn supervise_with(home: &Home, engine: &Engine, command_id: &str) -> Result<()> {
    let Some(meta) = claim(home, command_id)? else {
        return Ok(());
    };
    match run(home, engine, &meta).await {
        Ok(()) => Ok(()),
        Err(e) => {
            // Leave nothing running that nobody watches.
            if let Ok(inst) = instances::read(home, &meta.instance_id)
                && let Some(c) = inst.container
            {
                let _ = end_processes(engine, &c, &command_marker(command_id)).await;
            }
            finish(home, command_id, JobState::Failed, None, format!("the job supervisor failed: {e}"))?;
            Err(e)
        }
    }
}

/// Writes `pid starttime` of this process, so that `report` can tell whether it still runs.
fn record_supervisor(home: &Home, command_id: &str) {
    let pid = std::process::id();
    if let Some(start) = crate::process::proc_start_ticks(pid) {
        let path = supervisor_path(home, command_id);
        if let Err(e) = fs::write(&path, format!("{pid} {start}\n")) {
            eprintln!("could not write {}: {e}", path.display());
        }
    }
}

/// Moves a `Pending` job to `InProgress`; `None` when it is no longer pending (cancelled).
fn claim(home: &Home, command_id: &str) -> Result<Option<JobMeta>> {
    let _lock = home.lock()?;
    let mut meta = read_job(home, command_id)?;
    if meta.state != JobState::Pending {
        return Ok(None);
    }
    meta.state = JobState::InProgress;
    meta.started = Some(clock::now());
    meta.supervisor_pid = Some(std::process::id());
    record_supervisor(home, command_id);
    write_json(&job_path(home, command_id), &meta)?;
    Ok(Some(meta))
}

/// Sets a job's final state unless another process already did; true when this call set it.
fn finish(
    home: &Home,
    command_id: &str,
    state: JobState,
    exit_code: Option<i32>,
    detail: String,
) -> Result<bool> {
    finish_with(home, command_id, state, exit_code, (!detail.is_empty()).then_some(detail))
}

fn finish_with(
    home: &Home,
    command_id: &str,
    state: JobState,
    exit_code: Option<i32>,
    detail: Option<String>,
) -> Result<bool> {
    let _lock = home.lock()?;
    let mut meta = read_job(home, command_id)?;
    if meta.state.is_final() {
        return Ok(false);
    }
    meta.state = state;
    meta.exit_code = exit_code;
    meta.ended = Some(clock::now());
    meta.detail = detail;
    write_json(&job_path(home, command_id), &meta)?;
    Ok(true)
}

fn command_marker(command_id: &str) -> String {
    format!("DEVAMI_COMMAND_ID={command_id}")
}

/// Why the instance cannot (or can no longer) run the job, if it cannot.
enum InstanceCheck {
    Fine(String),
    NotRunning(String),
    LifetimeOver(String),
}

fn check_instance(home: &Home, instance_id: &str) -> InstanceCheck {
    match instances::read(home, instance_id) {
        Err(e) => InstanceCheck::NotRunning(format!("instance `{instance_id}` cannot be read: {e}")),
        Ok(inst) if inst.state != InstanceState::Running => {
            let what = match inst.state {
                InstanceState::Stopping | InstanceState::Stopped => "stopped",
                InstanceState::ShuttingDown | InstanceState::Terminated => "terminated",
                other => other.as_str(),
            };
            let reason = inst.state_reason.map(|r| format!(" ({r})")).unwrap_or_default();
            InstanceCheck::NotRunning(format!("instance {what} while the command was running{reason}"))
        }
        Ok(inst) => match instances::lifetime_left(&inst, clock::now()) {
            Some(left) if left < 0 => InstanceCheck::LifetimeOver(format!(
                "lifetime of {} minutes expired",
                inst.tags.get("Timeout").map(String::as_str).unwrap_or("?")
            )),
            _ => {
                InstanceCheck::Fine(inst.container.unwrap_or_else(|| instances::container_name(instance_id)))
            }
        },
    }
}

/// The number of processes the kernel killed for memory in the container so far.
async fn oom_kills(engine: &Engine, container: &str) -> Option<u64> {
    let spec = ExecSpec {
        cmd: vec![
            "/bin/sh".into(),
            "-c".into(),
            "cat /sys/fs/cgroup/memory.events /sys/fs/cgroup/memory/memory.oom_control 2>/dev/null".into(),
        ],
        user: "root".into(),
        ..Default::default()
    };
    let (_, out, _) = engine.run(container, &spec).await.ok()?;
    String::from_utf8_lossy(&out)
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill ").and_then(|n| n.trim().parse().ok()))
}

/// Ends the processes in the container whose environment holds `marker`.
pub async fn end_processes(
    engine: &Engine,
    container: &str,
    marker: &str,
) -> std::result::Result<(), LocalError> {
    let spec = ExecSpec {
        cmd: vec!["/bin/sh".into(), "-c".into(), KILLER.into(), "sh".into(), marker.into()],
        user: "root".into(),
        ..Default::default()
    };
    engine.run(container, &spec).await.map(|_| ())
}

/// Runs the job as SSM runs it: as root, with root's home, `bash -c "<commands joined by
/// newlines>"` in the working directory, with the embedded S3 endpoint's environment and
/// `DEVAMI_COMMAND_ID`/`DEVAMI_INSTANCE_ID` in every process's environment. Its stdout and stderr
/// are appended, as they arrive, to the files where SSM puts them in the output bucket
/// ([`output_key`]), so `job_output` shows a line at once (SSM itself uploads only at the end).
///
/// While the job runs, the process is polled every [`CHILD_POLL`] and the documents every
/// [`DOC_POLL`]: the end of the process gives `Success` or `Failed` with its exit code (a process
/// the kernel killed for memory says so, naming the instance type's limit); `executionTimeout`
/// ends the job's processes and gives `TimedOut`; an instance that stops, or whose lifetime runs
/// out, or whose scheduled `shutdown` comes due, ends the job as `Failed` with the reason; a job
/// cancelled by another process is left as that process wrote it. When the job ends, a `shutdown`
/// requested inside it stops the instance, as a cloud VM would.
async fn run(home: &Home, engine: &Engine, meta: &JobMeta) -> Result<()> {
    let id = &meta.command_id;
    let iid = &meta.instance_id;
    // Empty files first, then appended to as output arrives (the endpoint serves them as they grow).
    let open = |stream: &str| -> Result<File> {
        let p = super::s3::prepare_direct_write(home, &meta.bucket, &output_key(meta, stream))?;
        File::create(&p).map_err(|e| Error::io("create", &p, e))?;
        OpenOptions::new().append(true).open(&p).map_err(|e| Error::io("open", &p, e))
    };
    let mut stdout = open("stdout")?;
    let mut stderr = open("stderr")?;

    let container = match check_instance(home, iid) {
        InstanceCheck::Fine(c) => c,
        InstanceCheck::NotRunning(_) => {
            let detail = format!("instance `{iid}` is not running");
            let _ = writeln!(stderr, "{detail}");
            finish(home, id, JobState::Failed, None, detail)?;
            return Ok(());
        }
        InstanceCheck::LifetimeOver(reason) => {
            stop_instance(home, engine, iid, &reason).await;
            finish(home, id, JobState::Failed, None, reason)?;
            return Ok(());
        }
    };

    let mut env: Vec<String> = match read_json_any::<Vec<(String, String)>>(&env_path(home, id)) {
        Ok(env) => env.into_iter().map(|(k, v)| format!("{k}={v}")).collect(),
        Err(e) => {
            eprintln!("{e}; the job runs without the endpoint environment");
            Vec::new()
        }
    };
    env.extend([
        "HOME=/root".to_string(),
        "USER=root".to_string(),
        "LOGNAME=root".to_string(),
        format!("PATH={INSTANCE_PATH}"),
        format!("DEVAMI_INSTANCE_DIR={PLUMBING_INSIDE}"),
        format!("DEVAMI_INSTANCE_ID={iid}"),
        command_marker(id),
    ]);
    let oom_before = oom_kills(engine, &container).await;
    let spec = ExecSpec {
        cmd: vec![
            "/bin/sh".into(),
            "-c".into(),
            WRAPPER.into(),
            "sh".into(),
            meta.working_directory.clone(),
            meta.commands.join("\n"),
        ],
        user: "root".into(),
        env,
        ..Default::default()
    };
    let attached = match engine.exec(&container, &spec).await {
        Ok(a) => a,
        Err(e) => {
            let detail = format!("failed to run commands: {e}");
            let _ = writeln!(stderr, "{detail}");
            finish(home, id, JobState::Failed, None, detail)?;
            return Ok(());
        }
    };
    let exec_id = attached.exec_id.clone();
    let mut output = attached.output;
    let pump = tokio::spawn(async move {
        while let Some(chunk) = output.next().await {
            let written = match chunk {
                Ok(Chunk::Stdout(b)) => stdout.write_all(&b),
                Ok(Chunk::Stderr(b)) => stderr.write_all(&b),
                Err(e) => {
                    let _ = writeln!(stderr, "devami: the job's output stream broke: {e}");
                    break;
                }
            };
            if let Err(e) = written {
                eprintln!("could not write the job's output: {e}");
            }
        }
    });

    let marker = command_marker(id);
    let timeout = Duration::from_secs(match meta.execution_timeout {
        0 => DEFAULT_EXECUTION_TIMEOUT,
        t => t,
    });
    let started = Instant::now();
    let mut last_doc = Instant::now();
    let mut last_ping = Instant::now();
    loop {
        if pump.is_finished() {
            let code = engine.finished_code(&exec_id).await.map_err(Error::from)?;
            let mut detail = None;
            let (state, code) = match code {
                0 => (JobState::Success, Some(0)),
                c if c > 128 && c < 160 => {
                    let sig = (c - 128) as i32;
                    let oom = match (oom_before, oom_kills(engine, &container).await) {
                        (Some(a), Some(b)) => b > a,
                        _ => false,
                    };
                    detail = Some(if oom && sig == libc::SIGKILL {
                        let ty = instances::read(home, iid).map(|i| i.instance_type).unwrap_or_default();
                        format!(
                            "the command was killed: out of memory ({ty} has {}; choose a larger INSTANCE_TYPE)",
                            hardware::of(&ty).describe()
                        )
                    } else {
                        format!("the command was killed by signal {sig} ({})", signal_name(sig))
                    });
                    (JobState::Failed, Some(c as i32))
                }
                c => (JobState::Failed, Some(c as i32)),
            };
            // A `shutdown` the job asked for stops the instance before the job is reported
            // ended: whoever waits for the job then finds the instance stopped.
            let req = take_stop_request(home, iid);
            if req.as_ref().is_some_and(|r| r.action != "reboot")
                && let Err(e) = instances::force_stop_sparing(
                    home,
                    engine,
                    iid,
                    "shutdown requested by the job",
                    Some(id),
                )
                .await
            {
                eprintln!("could not stop instance {iid} (shutdown requested by the job): {e}");
            }
            finish_with(home, id, state, code, detail)?;
            if let Some(req) = req.filter(|r| r.action == "reboot") {
                act_on_stop_request(home, engine, iid, &req).await;
            }
            return Ok(());
        }
        let sig = TERMINATED.load(Ordering::SeqCst);
        if sig != 0 {
            let _ = end_processes(engine, &container, &marker).await;
            let detail = format!("the job supervisor was ended by signal {sig} ({})", signal_name(sig));
            finish(home, id, JobState::Failed, None, detail)?;
            return Ok(());
        }
        if started.elapsed() >= timeout {
            let _ = end_processes(engine, &container, &marker).await;
            let detail =
                format!("the command ran longer than its executionTimeout ({} s)", timeout.as_secs());
            finish(home, id, JobState::TimedOut, None, detail)?;
            return Ok(());
        }
        if last_doc.elapsed() >= DOC_POLL {
            last_doc = Instant::now();
            if read_job(home, id).is_ok_and(|m| m.state.is_final()) {
                // Cancelled, or failed by a stop of the instance: whoever did it wrote the state.
                let _ = end_processes(engine, &container, &marker).await;
                return Ok(());
            }
            match check_instance(home, iid) {
                InstanceCheck::Fine(_) => {}
                InstanceCheck::NotRunning(detail) => {
                    finish(home, id, JobState::Failed, None, detail)?;
                    return Ok(());
                }
                InstanceCheck::LifetimeOver(reason) => {
                    stop_instance(home, engine, iid, &reason).await;
                    finish(home, id, JobState::Failed, None, reason)?;
                    return Ok(());
                }
            }
            if peek_stop_request(home, iid).is_some_and(|r| r.due <= clock::now())
                && let Some(req) = take_stop_request(home, iid)
            {
                let what = if req.action == "reboot" { "rebooted" } else { "stopped" };
                let detail = format!("instance {what} while the command was running (`{}`)", req.command);
                finish(home, id, JobState::Failed, None, detail)?;
                act_on_stop_request(home, engine, iid, &req).await;
                return Ok(());
            }
        }
        if last_ping.elapsed() >= PING_EVERY {
            last_ping = Instant::now();
            super::s3::ping(home);
        }
        tokio::time::sleep(CHILD_POLL).await;
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        _ => "signal",
    }
}

async fn stop_instance(home: &Home, engine: &Engine, instance_id: &str, reason: &str) {
    if let Err(e) = instances::force_stop(home, engine, instance_id, reason).await {
        eprintln!("could not stop instance {instance_id} ({reason}): {e}");
    }
}

/// Acts on a stop request taken from the marker: stops the instance, or, for a reboot, ends its
/// jobs (it stays running, as a rebooted VM comes back).
async fn act_on_stop_request(home: &Home, engine: &Engine, instance_id: &str, req: &StopRequest) {
    if req.action == "reboot" {
        if let Err(e) = cancel_instance_jobs(home, engine, instance_id, "instance rebooted by a job").await {
            eprintln!("could not reboot instance {instance_id}: {e}");
        }
    } else {
        stop_instance(home, engine, instance_id, "shutdown requested by the job").await;
    }
}

fn marker_path(home: &Home, instance_id: &str) -> PathBuf {
    instances::plumbing_dir(home, instance_id).join(STOP_MARKER)
}

/// Reads a marker the instance wrote: a regular file only, never through a symlink (root in the
/// instance controls the plumbing folder), at most 4 KiB.
fn read_marker(path: &Path) -> Option<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    if !fs::symlink_metadata(path).ok()?.file_type().is_file() {
        return None;
    }
    let file =
        OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path).ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut text = String::new();
    file.take(4096).read_to_string(&mut text).ok()?;
    Some(text)
}

/// Reads the stop request of an instance without taking it.
pub fn peek_stop_request(home: &Home, instance_id: &str) -> Option<StopRequest> {
    read_marker(&marker_path(home, instance_id)).map(|t| parse_stop_request(&t))
}

/// Takes the stop request of an instance (at most one caller gets it) and removes the marker.
pub fn take_stop_request(home: &Home, instance_id: &str) -> Option<StopRequest> {
    let marker = marker_path(home, instance_id);
    let taken = marker.with_extension(format!("taken-{}", std::process::id()));
    fs::rename(&marker, &taken).ok()?;
    let text = read_marker(&taken).unwrap_or_default();
    let _ = fs::remove_file(&taken);
    Some(parse_stop_request(&text))
}

fn parse_stop_request(text: &str) -> StopRequest {
    let get = |key: &str| {
        text.lines().find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('='))).unwrap_or("").trim()
    };
    let requested = get("requested").parse().unwrap_or_else(|_| clock::now());
    StopRequest {
        requested,
        due: get("due").parse().unwrap_or(requested),
        action: match get("action") {
            "" => "poweroff".to_string(),
            a => a.to_string(),
        },
        command: get("command").to_string(),
    }
}

/// What is known of a job now. A job whose supervisor is gone (its pid and start time are kept
/// in `commands/<id>/supervisor`) while the document still says it runs is reported `Failed`
/// ("the job supervisor died").
pub fn report(home: &Home, command_id: &str) -> Result<JobReport> {
    let meta = read_job(home, command_id)?;
    let mut state = meta.state;
    let mut detail = meta.detail.clone();
    let mut ended = meta.ended;
    if !state.is_final() {
        match supervisor_alive(home, &meta) {
            Some(true) => {}
            Some(false) => {
                state = JobState::Failed;
                detail = Some("the job supervisor died".into());
                ended = None;
            }
            None if clock::now().saturating_sub(meta.submitted) > START_GRACE_SECS => {
                state = JobState::Failed;
                detail = Some(format!(
                    "the job supervisor did not start (see `{}`)",
                    supervisor_log(home, command_id).display()
                ));
            }
            None => {}
        }
    }
    Ok(JobReport {
        command_id: meta.command_id,
        instance_id: meta.instance_id,
        state,
        exit_code: meta.exit_code,
        started: meta.started,
        ended,
        detail,
        inline_output: None,
    })
}

/// Whether the job's supervisor runs: `None` when none has started yet.
fn supervisor_alive(home: &Home, meta: &JobMeta) -> Option<bool> {
    let recorded = fs::read_to_string(supervisor_path(home, &meta.command_id)).ok().and_then(|t| {
        let mut it = t.split_whitespace();
        Some((it.next()?.parse::<u32>().ok()?, it.next()?.parse::<u64>().ok()?))
    });
    match (recorded, meta.supervisor_pid) {
        (Some((pid, start)), _) => Some(crate::process::proc_start_ticks(pid) == Some(start)),
        (None, Some(pid)) => Some(crate::process::proc_start_ticks(pid).is_some()),
        (None, None) => None,
    }
}

/// Cancels a job: marks it `Cancelled` and ends its processes. A job that has already ended is
/// left as it is.
pub async fn cancel(home: &Home, engine: &Engine, command_id: &str) -> std::result::Result<(), LocalError> {
    let meta = {
        let _lock = home.lock()?;
        let mut meta = read_job(home, command_id)?;
        if meta.state.is_final() {
            return Ok(());
        }
        meta.state = JobState::Cancelled;
        meta.ended = Some(clock::now());
        meta.detail = Some("cancelled".into());
        write_json(&job_path(home, command_id), &meta)?;
        meta
    };
    if let Ok(inst) = instances::read(home, &meta.instance_id)
        && inst.state == InstanceState::Running
        && let Some(c) = inst.container
    {
        end_processes(engine, &c, &command_marker(command_id)).await?;
    }
    Ok(())
}

/// Ends every job of an instance that is pending or running, marking it `Failed` with `detail`,
/// and ends their processes when the container still runs. Returns how many jobs it ended.
/// Takes the home's lock itself: call it without holding the lock.
pub async fn cancel_instance_jobs(
    home: &Home,
    engine: &Engine,
    instance_id: &str,
    detail: &str,
) -> std::result::Result<usize, LocalError> {
    cancel_instance_jobs_sparing(home, engine, instance_id, detail, None).await
}

/// [`cancel_instance_jobs`], leaving job `sparing` alone.
pub async fn cancel_instance_jobs_sparing(
    home: &Home,
    engine: &Engine,
    instance_id: &str,
    detail: &str,
    sparing: Option<&str>,
) -> std::result::Result<usize, LocalError> {
    check_name("instance id", instance_id)?;
    let mut ended = Vec::new();
    {
        let _lock = home.lock()?;
        for id in home.list("commands")? {
            let Ok(mut meta) = read_job(home, &id) else { continue };
            if meta.instance_id != instance_id || meta.state.is_final() || sparing == Some(id.as_str()) {
                continue;
            }
            meta.state = JobState::Failed;
            meta.ended = Some(clock::now());
            meta.detail = Some(detail.to_string());
            write_json(&job_path(home, &id), &meta)?;
            ended.push(id);
        }
    }
    if !ended.is_empty()
        && let Ok(inst) = instances::read(home, instance_id)
        && let Some(c) = inst.container
        && matches!(engine.container(&c).await, Ok(Some(info)) if info.running)
    {
        for id in &ended {
            end_processes(engine, &c, &command_marker(id)).await?;
        }
    }
    Ok(ended.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_requests_parse() {
        let r = parse_stop_request("requested=10\ndue=70\naction=reboot\ncommand=shutdown -r +1\n");
        assert_eq!(
            (r.requested, r.due, r.action.as_str(), r.command.as_str()),
            (10, 70, "reboot", "shutdown -r +1")
        );
        let r = parse_stop_request("");
        assert_eq!(r.action, "poweroff");
        assert_eq!(r.due, r.requested);
    }

    #[test]
    fn output_keys_follow_ssm() {
        let meta = JobMeta {
            command_id: "c".into(),
            instance_id: "i-1".into(),
            commands: vec!["true".into()],
            working_directory: "/".into(),
            execution_timeout: 0,
            bucket: "b".into(),
            output_prefix: "debug_direct/".into(),
            state: JobState::Pending,
            exit_code: None,
            supervisor_pid: None,
            submitted: 0,
            started: None,
            ended: None,
            detail: None,
        };
        assert_eq!(
            output_key(&meta, "stdout"),
            "debug_direct/c/i-1/awsrunShellScript/0.awsrunShellScript/stdout"
        );
        assert!(validate(&JobMeta { output_prefix: "../x".into(), ..meta.clone() }).is_err());
        assert!(validate(&JobMeta { commands: vec![], ..meta }).is_err());
    }
}
