//! SSM's AWS-RunShellScript for the local backend: real, detached jobs that outlive the shell.
//!
//! `submit` writes `commands/<id>/job.json` (state `Pending`) and starts a detached supervisor
//! (`devami __job HOME ID`: its own session, reparented to init, so closing the shell never ends a
//! job). The supervisor marks the job `InProgress`, runs the commands inside the instance
//! (`sandbox.rs`) as one script, `bash -c "<commands joined by newlines>"` in the working
//! directory (SSM writes them to `_script.sh` and runs it with `sh`; bash accepts what dash does
//! and what NeuroCAAS commands need), in a process group of its own, with stdout and stderr
//! appended straight to the two files where SSM puts them in the output bucket
//! (`<prefix>/<command>/<instance>/awsrunShellScript/0.awsrunShellScript/{stdout,stderr}`), so
//! `job_output` shows every line as soon as it is printed (SSM itself uploads only at the end).
//! While the job runs, the supervisor polls (100 ms for the process, 500 ms for the documents):
//! the end of the process gives `Success` or `Failed` with its exit code; `executionTimeout` kills
//! the group and gives `TimedOut`; an instance that stops, or whose lifetime (`Timeout` tag) runs
//! out, or whose scheduled `shutdown` comes due, ends the job as `Failed` with the reason; a job
//! cancelled by another process is left as that process wrote it. Every minute it pings the S3
//! endpoint so that it stays up while jobs run. When the job ends, a `shutdown` requested inside
//! it (the shim's `stop-requested` marker) stops the instance, as a cloud VM would.
//!
//! Every change of a job document is a compare-and-set under the home's lock (a job's final state
//! is written once, by whoever decides it first), and the lock is never held while processes are
//! signalled or while the instance is stopped. Processes are found by their process group and by
//! the `DEVAMI_COMMAND_ID` / `DEVAMI_INSTANCE_ID` variables every process of an instance carries
//! (`/proc/<pid>/environ`), so a background child that left the group still dies with its job, a
//! recycled process group id is never signalled, and stopping an instance ends all its processes.
//! A supervisor that dies is noticed by `report` (its pid and start time are kept in
//! `commands/<id>/supervisor`) and its job is reported `Failed`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::backend::{JobReport, JobState};
use crate::clock;
use crate::error::{Error, Result};
use crate::localhome::{Home, read_json, read_json_any, write_json};
use crate::sandbox::{self, InstanceEnv, Sandbox};

/// SSM's default `executionTimeout` (seconds), used when a job gives 0.
pub const DEFAULT_EXECUTION_TIMEOUT: u64 = 3600;
/// How long a process group gets between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(2);
/// How often the supervisor looks at its process.
const CHILD_POLL: Duration = Duration::from_millis(100);
/// How often the supervisor reads the job's and the instance's documents.
const DOC_POLL: Duration = Duration::from_millis(500);
/// How often the supervisor pings the S3 endpoint.
const PING_EVERY: Duration = Duration::from_secs(60);
/// How long a job may stay `Pending` without a supervisor before it is reported failed.
const START_GRACE_SECS: i64 = 60;

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
    /// SSM's names: Pending, InProgress, Success, Failed, TimedOut, Cancelled.
    pub state: String,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub pgid: Option<i32>,
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

/// A stop (or reboot) requested inside an instance by the `shutdown` shim.
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
/// writes it: the prefix and the rest joined with `/`
/// (`debug_direct/<command>/<instance>/awsrunShellScript/0.awsrunShellScript/stdout`).
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

/// The job's stdout in the output bucket.
pub fn stdout_path(home: &Home, meta: &JobMeta) -> PathBuf {
    home.buckets_dir().join(&meta.bucket).join(output_key(meta, "stdout"))
}

/// The job's stderr in the output bucket.
pub fn stderr_path(home: &Home, meta: &JobMeta) -> PathBuf {
    home.buckets_dir().join(&meta.bucket).join(output_key(meta, "stderr"))
}

fn check_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty() || name.starts_with('.') || name.contains(['/', '\0']) {
        return Err(Error::Refused(format!("invalid {what} `{name}`")));
    }
    Ok(())
}

fn validate(meta: &JobMeta) -> Result<()> {
    check_name("command id", &meta.command_id)?;
    check_name("instance id", &meta.instance_id)?;
    check_name("output bucket", &meta.bucket)?;
    if meta.output_prefix.starts_with('/') || meta.output_prefix.split('/').any(|s| s == ".." || s == ".") {
        return Err(Error::Refused(format!(
            "invalid output prefix `{}`: use a key prefix such as `debug_direct/`",
            meta.output_prefix
        )));
    }
    if meta.commands.is_empty() {
        return Err(Error::Refused("a job needs at least one command".into()));
    }
    Ok(())
}

/// Records the job (`Pending`) and starts its detached supervisor; returns at once.
pub fn submit(home: &Home, mut meta: JobMeta, env: &[(String, String)]) -> Result<()> {
    validate(&meta)?;
    let dir = home.command_dir(&meta.command_id);
    {
        let _lock = home.lock()?;
        if job_path(home, &meta.command_id).exists() {
            return Err(Error::Refused(format!("command `{}` already exists", meta.command_id)));
        }
        fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
        write_private(&env_path(home, &meta.command_id), env)?;
        meta.state = JobState::Pending.as_str().into();
        write_json(&job_path(home, &meta.command_id), &meta)?;
    }
    if let Err(e) = spawn_supervisor(home, &meta.command_id) {
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

/// Writes the endpoint environment readable by the owner only (it holds credentials).
fn write_private(path: &Path, env: &[(String, String)]) -> Result<()> {
    let text = serde_json::to_vec_pretty(env)
        .map_err(|e| Error::StateCorrupt { path: path.to_path_buf(), message: e.to_string() })?;
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(&text)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io("write", path, e));
    }
    Ok(())
}

fn spawn_supervisor(home: &Home, command_id: &str) -> Result<()> {
    let exe = std::env::current_exe().map_err(|e| Error::io("find", "the devami executable", e))?;
    let mut cmd = Command::new(&exe);
    cmd.arg("__job")
        .arg(home.root())
        .arg(command_id)
        .env_remove("DEVAMI_INSTANCE_ID")
        .env_remove("DEVAMI_INSTANCE_DIR")
        .env_remove("DEVAMI_COMMAND_ID");
    // A supervisor outlives the shell: it keeps none of the developer's AWS settings or secrets.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("AWS_") {
            cmd.env_remove(name);
        }
    }
    spawn_detached(cmd, &supervisor_log(home, command_id))
}

/// Starts `cmd` in a session of its own with init as its parent (through a second fork), stdin
/// from /dev/null, stdout and stderr appended to `log`, in `/`: the shell can exit (or be killed)
/// without taking the process along, and leaves no zombie behind.
pub(crate) fn spawn_detached(mut cmd: Command, log: &Path) -> Result<()> {
    let out =
        OpenOptions::new().create(true).append(true).open(log).map_err(|e| Error::io("open", log, e))?;
    let err = out.try_clone().map_err(|e| Error::io("open", log, e))?;
    cmd.current_dir("/").stdin(Stdio::null()).stdout(Stdio::from(out)).stderr(Stdio::from(err));
    // SAFETY: runs in the forked child before exec and only calls setsid, fork and _exit.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(io::Error::last_os_error());
            }
            match libc::fork() {
                -1 => Err(io::Error::last_os_error()),
                0 => Ok(()),
                _ => libc::_exit(0),
            }
        });
    }
    let program = PathBuf::from(cmd.get_program());
    let mut child = cmd.spawn().map_err(|e| Error::io("start", &program, e))?;
    child.wait().map_err(|e| Error::io("start", &program, e))?;
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
    match supervise_with(&home, command_id, &crate::local::force_stop) {
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

/// The function that stops an instance: `(home, instance id, reason)`.
pub type StopFn = dyn Fn(&Home, &str, &str) -> Result<()>;

/// [`supervise`] with the action that stops the instance given (tests record it).
pub fn supervise_with(home: &Home, command_id: &str, stop: &StopFn) -> Result<()> {
    check_name("command id", command_id)?;
    let Some(meta) = claim(home, command_id)? else {
        return Ok(());
    };
    match run(home, &meta, stop) {
        Ok(()) => Ok(()),
        Err(e) => {
            // Leave nothing running that nobody watches.
            kill_processes(&[], &[command_marker(command_id)]);
            finish(home, command_id, JobState::Failed, None, format!("the job supervisor failed: {e}"))?;
            Err(e)
        }
    }
}

/// Writes `pid starttime` of this process, so that `report` can tell whether it still runs.
fn record_supervisor(home: &Home, command_id: &str) {
    let pid = std::process::id();
    if let Some(start) = proc_start_time(pid as i32) {
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
    if meta.state != JobState::Pending.as_str() {
        return Ok(None);
    }
    meta.state = JobState::InProgress.as_str().into();
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
    if parse_state(&meta.state).is_final() {
        return Ok(false);
    }
    meta.state = state.as_str().into();
    meta.exit_code = exit_code;
    meta.ended = Some(clock::now());
    meta.detail = detail;
    write_json(&job_path(home, command_id), &meta)?;
    Ok(true)
}

fn parse_state(s: &str) -> JobState {
    match s {
        "Pending" => JobState::Pending,
        "InProgress" => JobState::InProgress,
        "Delayed" => JobState::Delayed,
        "Success" => JobState::Success,
        "Cancelled" => JobState::Cancelled,
        "TimedOut" => JobState::TimedOut,
        "Cancelling" => JobState::Cancelling,
        _ => JobState::Failed,
    }
}

fn the_sandbox() -> &'static Sandbox {
    static SANDBOX: OnceLock<Sandbox> = OnceLock::new();
    SANDBOX.get_or_init(sandbox::detect)
}

fn command_marker(command_id: &str) -> String {
    format!("DEVAMI_COMMAND_ID={command_id}")
}

fn instance_marker(instance_id: &str) -> String {
    format!("DEVAMI_INSTANCE_ID={instance_id}")
}

/// Why the instance cannot (or can no longer) run the job, if it cannot.
enum InstanceCheck {
    Fine,
    NotRunning(String),
    LifetimeOver(String),
}

fn check_instance(home: &Home, instance_id: &str) -> InstanceCheck {
    match crate::local::read_instance(home, instance_id) {
        Err(e) => InstanceCheck::NotRunning(format!("instance `{instance_id}` cannot be read: {e}")),
        Ok(inst) if inst.state != "running" => {
            let what = match inst.state.as_str() {
                "stopping" | "stopped" => "stopped",
                "shutting-down" | "terminated" => "terminated",
                other => other,
            };
            let reason = inst.state_reason.map(|r| format!(" ({r})")).unwrap_or_default();
            InstanceCheck::NotRunning(format!("instance {what} while the command was running{reason}"))
        }
        Ok(inst) => match inst.tags.get("Timeout").and_then(|t| t.trim().parse::<i64>().ok()) {
            Some(minutes) if inst.launch_time.saturating_add(minutes.saturating_mul(60)) < clock::now() => {
                InstanceCheck::LifetimeOver(format!("lifetime of {minutes} minutes expired"))
            }
            _ => InstanceCheck::Fine,
        },
    }
}

fn run(home: &Home, meta: &JobMeta, stop: &StopFn) -> Result<()> {
    let id = &meta.command_id;
    let iid = &meta.instance_id;
    // Empty files first, then appended to by the job itself (the endpoint serves them as they grow).
    let open = |stream: &str| -> Result<File> {
        let p = crate::s3server::prepare_direct_write(home, &meta.bucket, &output_key(meta, stream))?;
        File::create(&p).map_err(|e| Error::io("create", &p, e))?;
        OpenOptions::new().append(true).open(&p).map_err(|e| Error::io("open", &p, e))
    };
    let stdout = open("stdout")?;
    let mut stderr = open("stderr")?;

    match check_instance(home, iid) {
        InstanceCheck::Fine => {}
        InstanceCheck::NotRunning(_) => {
            let detail = format!("instance `{iid}` is not running");
            let _ = writeln!(stderr, "{detail}");
            finish(home, id, JobState::Failed, None, detail)?;
            return Ok(());
        }
        InstanceCheck::LifetimeOver(reason) => {
            stop_instance(home, iid, &reason, stop);
            finish(home, id, JobState::Failed, None, reason)?;
            return Ok(());
        }
    }

    let env: Vec<(String, String)> = match read_json_any(&env_path(home, id)) {
        Ok(env) => env,
        Err(e) => {
            eprintln!("{e}; the job runs without the endpoint environment");
            Vec::new()
        }
    };
    let mut ienv = InstanceEnv {
        instance_id: iid.clone(),
        root: home.instance_dir(iid).join("root"),
        instance_dir: home.instance_dir(iid),
        shims: sandbox::install_shims(home)?,
        env,
        visible: None,
    };
    ienv.env.push(("DEVAMI_COMMAND_ID".into(), id.clone()));
    let argv = vec!["bash".to_string(), "-c".to_string(), meta.commands.join("\n")];
    let mut cmd = match sandbox::command(the_sandbox(), &ienv, &meta.working_directory, &argv) {
        Ok(cmd) => cmd,
        Err(e) => {
            let detail = format!("failed to run commands: {e}");
            let _ = writeln!(stderr, "{detail}");
            finish(home, id, JobState::Failed, None, detail)?;
            return Ok(());
        }
    };
    let stderr_for_child = stderr.try_clone().map_err(|e| Error::io("open", stderr_path(home, meta), e))?;
    cmd.process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr_for_child));
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let detail = format!("failed to run commands: {e}");
            let _ = writeln!(stderr, "{detail}");
            finish(home, id, JobState::Failed, None, detail)?;
            return Ok(());
        }
    };
    let pgid = child.id() as i32;
    let markers = [command_marker(id)];

    // Record the group, unless the job was cancelled meanwhile.
    let still_ours = {
        let _lock = home.lock()?;
        let mut cur = read_job(home, id)?;
        if parse_state(&cur.state).is_final() {
            false
        } else {
            cur.pgid = Some(pgid);
            write_json(&job_path(home, id), &cur)?;
            true
        }
    };
    if !still_ours {
        end_processes(&mut child, pgid, &markers);
        return Ok(());
    }

    let timeout = Duration::from_secs(match meta.execution_timeout {
        0 => DEFAULT_EXECUTION_TIMEOUT,
        t => t,
    });
    let started = Instant::now();
    let mut last_doc = Instant::now();
    let mut last_ping = Instant::now();
    loop {
        if let Some(status) = child.try_wait().map_err(|e| Error::io("wait for", "the job's process", e))? {
            let (state, code, detail) = outcome(status);
            finish_with(home, id, state, code, detail)?;
            if let Some(req) = take_stop_request(home, iid) {
                act_on_stop_request(home, iid, &req, stop);
            }
            return Ok(());
        }
        let sig = TERMINATED.load(Ordering::SeqCst);
        if sig != 0 {
            end_processes(&mut child, pgid, &markers);
            let detail = format!("the job supervisor was ended by signal {sig} ({})", signal_name(sig));
            finish(home, id, JobState::Failed, None, detail)?;
            return Ok(());
        }
        if started.elapsed() >= timeout {
            end_processes(&mut child, pgid, &markers);
            let detail =
                format!("the command ran longer than its executionTimeout ({} s)", timeout.as_secs());
            finish(home, id, JobState::TimedOut, None, detail)?;
            return Ok(());
        }
        if last_doc.elapsed() >= DOC_POLL {
            last_doc = Instant::now();
            if read_job(home, id).is_ok_and(|m| parse_state(&m.state).is_final()) {
                // Cancelled, or failed by a stop of the instance: whoever did it wrote the state.
                end_processes(&mut child, pgid, &markers);
                return Ok(());
            }
            match check_instance(home, iid) {
                InstanceCheck::Fine => {}
                InstanceCheck::NotRunning(detail) => {
                    end_processes(&mut child, pgid, &markers);
                    finish(home, id, JobState::Failed, None, detail)?;
                    return Ok(());
                }
                InstanceCheck::LifetimeOver(reason) => {
                    stop_instance(home, iid, &reason, stop);
                    end_processes(&mut child, pgid, &markers);
                    finish(home, id, JobState::Failed, None, reason)?;
                    return Ok(());
                }
            }
            if peek_stop_request(home, iid).is_some_and(|r| r.due <= clock::now())
                && let Some(req) = take_stop_request(home, iid)
            {
                act_on_stop_request(home, iid, &req, stop);
                end_processes(&mut child, pgid, &markers);
                let what = if req.action == "reboot" { "rebooted" } else { "stopped" };
                let detail = format!("instance {what} while the command was running (`{}`)", req.command);
                finish(home, id, JobState::Failed, None, detail)?;
                return Ok(());
            }
        }
        if last_ping.elapsed() >= PING_EVERY {
            last_ping = Instant::now();
            crate::s3server::ping(home);
        }
        std::thread::sleep(CHILD_POLL);
    }
}

/// The final state for a process's exit status.
fn outcome(status: ExitStatus) -> (JobState, Option<i32>, Option<String>) {
    match (status.code(), status.signal()) {
        (Some(0), _) => (JobState::Success, Some(0), None),
        (Some(code), _) => (JobState::Failed, Some(code), None),
        (None, Some(sig)) => (
            JobState::Failed,
            Some(128 + sig),
            Some(format!("the command was killed by signal {sig} ({})", signal_name(sig))),
        ),
        (None, None) => (JobState::Failed, None, Some(format!("the command ended abnormally ({status})"))),
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

fn stop_instance(home: &Home, instance_id: &str, reason: &str, stop: &StopFn) {
    if let Err(e) = stop(home, instance_id, reason) {
        eprintln!("could not stop instance {instance_id} ({reason}): {e}");
    }
}

/// Acts on a stop request taken from the marker: stops the instance, or, for a reboot, ends all
/// its processes (it stays running, as a rebooted VM comes back).
fn act_on_stop_request(home: &Home, instance_id: &str, req: &StopRequest, stop: &StopFn) {
    if req.action == "reboot" {
        if let Err(e) = cancel_instance_jobs(home, instance_id, "instance rebooted by a job") {
            eprintln!("could not reboot instance {instance_id}: {e}");
        }
    } else {
        stop_instance(home, instance_id, "shutdown requested by the job", stop);
    }
}

/// Kills the job's processes and reaps its main process.
fn end_processes(child: &mut Child, pgid: i32, markers: &[String]) {
    kill_processes(&[pgid], markers);
    // The main process is ours: it is a zombie now (or soon), so reap it.
    let deadline = Instant::now() + GRACE;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Reads the stop request of an instance without taking it.
pub fn peek_stop_request(home: &Home, instance_id: &str) -> Option<StopRequest> {
    let text = fs::read_to_string(home.instance_dir(instance_id).join(sandbox::STOP_MARKER)).ok()?;
    Some(parse_stop_request(&text))
}

/// Takes the stop request of an instance (at most one caller gets it) and removes the marker.
pub fn take_stop_request(home: &Home, instance_id: &str) -> Option<StopRequest> {
    let marker = home.instance_dir(instance_id).join(sandbox::STOP_MARKER);
    let taken = marker.with_extension(format!("taken-{}", std::process::id()));
    fs::rename(&marker, &taken).ok()?;
    let text = fs::read_to_string(&taken).unwrap_or_default();
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

/// What is known of a job now. A job whose supervisor is gone while the document still says it
/// runs is reported `Failed` ("the job supervisor died").
pub fn report(home: &Home, command_id: &str) -> Result<JobReport> {
    let meta = read_job(home, command_id)?;
    let mut state = parse_state(&meta.state);
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
        Some((it.next()?.parse::<i32>().ok()?, it.next()?.parse::<u64>().ok()?))
    });
    match (recorded, meta.supervisor_pid) {
        (Some((pid, start)), _) => Some(proc_start_time(pid) == Some(start)),
        (None, Some(pid)) => Some(proc_start_time(pid as i32).is_some()),
        (None, None) => None,
    }
}

/// A process's start time (clock ticks after boot), `None` if it does not exist or is a zombie.
fn proc_start_time(pid: i32) -> Option<u64> {
    let stat = proc_stat(pid)?;
    if stat.zombie {
        return None;
    }
    Some(stat.start)
}

struct ProcStat {
    zombie: bool,
    pgrp: i32,
    start: u64,
}

fn proc_stat(pid: i32) -> Option<ProcStat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain anything: parse after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); pgrp is field 5, starttime field 22.
    Some(ProcStat {
        zombie: matches!(fields.first(), Some(&"Z") | Some(&"X")),
        pgrp: fields.get(2)?.parse().ok()?,
        start: fields.get(19)?.parse().ok()?,
    })
}

/// Cancels a job: marks it `Cancelled` and kills its processes (SIGTERM, then SIGKILL after a
/// grace of 2 s). A job that has already ended is left as it is.
pub fn cancel(home: &Home, command_id: &str) -> Result<()> {
    let meta = {
        let _lock = home.lock()?;
        let mut meta = read_job(home, command_id)?;
        if parse_state(&meta.state).is_final() {
            return Ok(());
        }
        meta.state = JobState::Cancelled.as_str().into();
        meta.ended = Some(clock::now());
        meta.detail = Some("cancelled".into());
        write_json(&job_path(home, command_id), &meta)?;
        meta
    };
    let pgids: Vec<i32> = meta.pgid.into_iter().collect();
    kill_processes(&pgids, &[command_marker(command_id)]);
    Ok(())
}

/// Ends every job of an instance that is pending or running, marking it `Failed` with `detail`,
/// and kills every process of the instance (jobs, their background children, interactive
/// sessions). Returns how many jobs it ended. Takes the home's lock itself: call it without
/// holding the lock.
pub fn cancel_instance_jobs(home: &Home, instance_id: &str, detail: &str) -> Result<usize> {
    check_name("instance id", instance_id)?;
    let mut pgids = Vec::new();
    let mut count = 0;
    {
        let _lock = home.lock()?;
        for id in home.list("commands")? {
            let Ok(mut meta) = read_job(home, &id) else { continue };
            if meta.instance_id != instance_id || parse_state(&meta.state).is_final() {
                continue;
            }
            meta.state = JobState::Failed.as_str().into();
            meta.ended = Some(clock::now());
            meta.detail = Some(detail.to_string());
            write_json(&job_path(home, &id), &meta)?;
            pgids.extend(meta.pgid);
            count += 1;
        }
    }
    kill_processes(&pgids, &[instance_marker(instance_id)]);
    Ok(count)
}

/// The processes to kill: those (other than this one, zombies aside) whose environment holds one
/// of `markers`, and the members of the groups of `pgids` seen holding a marked process (added to
/// `verified`, which keeps them for the rest of one kill: a group id is not reused while the
/// group has members, so a recycled id is never signalled).
fn find_processes(pgids: &[i32], markers: &[String], verified: &mut Vec<i32>) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    let mut procs: Vec<(i32, i32, bool)> = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        if pid == me {
            continue;
        }
        let Some(stat) = proc_stat(pid) else { continue };
        if stat.zombie {
            continue;
        }
        let marked = has_marker(pid, markers);
        procs.push((pid, stat.pgrp, marked));
    }
    for g in pgids {
        if !verified.contains(g) && procs.iter().any(|(_, pg, m)| pg == g && *m) {
            verified.push(*g);
        }
    }
    procs.into_iter().filter(|(_, pg, m)| *m || verified.contains(pg)).map(|(pid, _, _)| pid).collect()
}

/// The live processes that carry one of `markers` (tests and checks).
#[cfg(test)]
fn marked_processes(markers: &[String]) -> Vec<i32> {
    find_processes(&[], markers, &mut Vec::new())
}

fn has_marker(pid: i32, markers: &[String]) -> bool {
    let Ok(environ) = fs::read(format!("/proc/{pid}/environ")) else { return false };
    environ.split(|b| *b == 0).any(|var| markers.iter().any(|m| var == m.as_bytes()))
}

/// SIGTERM to the processes, then SIGKILL to those still there after the grace; returns when
/// they are gone (or after a last second of waiting).
fn kill_processes(pgids: &[i32], markers: &[String]) {
    let mut verified: Vec<i32> = Vec::new();
    for sig in [libc::SIGTERM, libc::SIGKILL] {
        let deadline = Instant::now() + if sig == libc::SIGTERM { GRACE } else { Duration::from_secs(1) };
        let mut signalled: Vec<i32> = Vec::new();
        loop {
            let alive = find_processes(pgids, markers, &mut verified);
            if alive.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                break;
            }
            let fresh: Vec<i32> = alive.into_iter().filter(|p| !signalled.contains(p)).collect();
            for pid in fresh {
                // SAFETY: plain system call; the pid was just seen as one of the job's processes.
                unsafe { libc::kill(pid, sig) };
                signalled.push(pid);
            }
            for g in &verified {
                // SAFETY: plain system call on a group seen holding the job's processes.
                unsafe { libc::killpg(*g, sig) };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::{Arc, Mutex};

    use super::*;

    struct Fixture {
        _tmp: tempfile::TempDir,
        home: Home,
        instance: String,
    }

    fn fixture() -> Fixture {
        fixture_with(clock::now(), "60")
    }

    fn fixture_with(launch_time: i64, timeout: &str) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let home = Home::at(tmp.path().to_path_buf()).unwrap();
        let instance = {
            let lock = home.lock().unwrap();
            home.new_id("i", &lock).unwrap()
        };
        let f = Fixture { _tmp: tmp, home, instance };
        fs::create_dir_all(f.home.instance_dir(&f.instance).join("root")).unwrap();
        set_instance(&f, "running", launch_time, timeout);
        f
    }

    fn set_instance(f: &Fixture, state: &str, launch_time: i64, timeout: &str) {
        let doc = serde_json::json!({
            "id": f.instance, "image_id": "ami-0123456789abcdef0", "instance_type": "t2.micro",
            "state": state, "launch_time": launch_time, "tags": {"Timeout": timeout},
        });
        write_json(&f.home.instance_dir(&f.instance).join("instance.json"), &doc).unwrap();
    }

    /// Records a job as `submit` does, without spawning a supervisor.
    fn job(f: &Fixture, commands: &[&str], wd: &str, timeout: u64) -> JobMeta {
        let id = {
            let lock = f.home.lock().unwrap();
            f.home.new_uuid(&lock).unwrap()
        };
        let meta = JobMeta {
            command_id: id.clone(),
            instance_id: f.instance.clone(),
            commands: commands.iter().map(|s| s.to_string()).collect(),
            working_directory: wd.into(),
            execution_timeout: timeout,
            bucket: "my-analysis".into(),
            output_prefix: "debug_direct/".into(),
            state: "Pending".into(),
            exit_code: None,
            pgid: None,
            supervisor_pid: None,
            submitted: clock::now(),
            started: None,
            ended: None,
            detail: None,
        };
        fs::create_dir_all(f.home.command_dir(&id)).unwrap();
        write_private(&env_path(&f.home, &id), &[("AWS_REGION".to_string(), "us-east-1".to_string())])
            .unwrap();
        write_json(&job_path(&f.home, &id), &meta).unwrap();
        meta
    }

    type Stops = Arc<Mutex<Vec<(String, String)>>>;

    /// Runs the supervisor in a thread with a recording stop action.
    fn start(f: &Fixture, meta: &JobMeta) -> (std::thread::JoinHandle<Result<()>>, Stops) {
        let stops: Stops = Arc::default();
        let (home, id, rec) = (f.home.clone(), meta.command_id.clone(), stops.clone());
        let handle = std::thread::spawn(move || {
            let stop = move |_: &Home, iid: &str, reason: &str| -> Result<()> {
                rec.lock().unwrap().push((iid.to_string(), reason.to_string()));
                Ok(())
            };
            supervise_with(&home, &id, &stop)
        });
        (handle, stops)
    }

    fn run_to_end(f: &Fixture, meta: &JobMeta) -> (JobReport, Stops) {
        let (h, stops) = start(f, meta);
        h.join().unwrap().unwrap();
        (report(&f.home, &meta.command_id).unwrap(), stops)
    }

    fn wait_for(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn out(f: &Fixture, meta: &JobMeta) -> String {
        fs::read_to_string(stdout_path(&f.home, meta)).unwrap_or_default()
    }

    fn err(f: &Fixture, meta: &JobMeta) -> String {
        fs::read_to_string(stderr_path(&f.home, meta)).unwrap_or_default()
    }

    fn alive(pid: i32) -> bool {
        proc_start_time(pid).is_some()
    }

    #[test]
    fn outputs_land_where_ssm_puts_them() {
        let tmp = tempfile::tempdir().unwrap();
        let home = Home::at(tmp.path().to_path_buf()).unwrap();
        let mut meta = JobMeta {
            command_id: "c".into(),
            instance_id: "i-1".into(),
            commands: vec!["true".into()],
            working_directory: String::new(),
            execution_timeout: 0,
            bucket: "bkt".into(),
            output_prefix: "debug_direct/".into(),
            state: "Pending".into(),
            exit_code: None,
            pgid: None,
            supervisor_pid: None,
            submitted: 0,
            started: None,
            ended: None,
            detail: None,
        };
        let want = tmp.path().join("buckets/bkt/debug_direct/c/i-1/awsrunShellScript/0.awsrunShellScript");
        assert_eq!(stdout_path(&home, &meta), want.join("stdout"));
        meta.output_prefix = "grp/results/job/internal_ec2_logs".into();
        assert_eq!(
            stderr_path(&home, &meta),
            tmp.path().join("buckets/bkt/grp/results/job/internal_ec2_logs/c/i-1/awsrunShellScript/0.awsrunShellScript/stderr")
        );
        meta.output_prefix = "../x".into();
        assert!(matches!(submit(&home, meta, &[]), Err(Error::Refused(_))));
    }

    #[test]
    fn output_appears_while_the_job_runs() {
        let f = fixture();
        let meta = job(&f, &["echo first", "echo warn >&2", "sleep 2", "echo second"], "~", 60);
        let (h, _) = start(&f, &meta);
        wait_for("the first line", 10, || out(&f, &meta) == "first\n");
        let r = report(&f.home, &meta.command_id).unwrap();
        assert_eq!(r.state, JobState::InProgress, "the line is there before the job ends");
        assert!(r.started.is_some() && r.ended.is_none());
        h.join().unwrap().unwrap();
        let r = report(&f.home, &meta.command_id).unwrap();
        assert_eq!((r.state, r.exit_code), (JobState::Success, Some(0)));
        assert_eq!(out(&f, &meta), "first\nsecond\n");
        assert_eq!(err(&f, &meta), "warn\n");
    }

    #[test]
    fn exit_codes_give_success_or_failed() {
        let f = fixture();
        let ok = job(&f, &["sudo -u ubuntu echo hi"], "~", 60);
        let bad = job(&f, &["echo before", "exit 3", "echo never"], "~", 60);
        let (r, _) = run_to_end(&f, &ok);
        assert_eq!((r.state, r.exit_code), (JobState::Success, Some(0)));
        assert_eq!(out(&f, &ok), "hi\n");
        let (r, _) = run_to_end(&f, &bad);
        assert_eq!((r.state, r.exit_code), (JobState::Failed, Some(3)));
        assert_eq!(out(&f, &bad), "before\n");
    }

    #[test]
    fn execution_timeout_gives_timed_out() {
        let f = fixture();
        let meta = job(&f, &["echo start", "sleep 30"], "~", 1);
        let t = Instant::now();
        let (r, _) = run_to_end(&f, &meta);
        assert_eq!(r.state, JobState::TimedOut, "{r:?}");
        assert!(t.elapsed() < Duration::from_secs(6), "{:?}", t.elapsed());
        assert!(r.detail.unwrap().contains("executionTimeout (1 s)"));
        assert!(marked_processes(&[command_marker(&meta.command_id)]).is_empty());
    }

    #[test]
    fn cancel_kills_the_whole_group_and_escaped_children() {
        let f = fixture();
        let meta = job(
            &f,
            &["sleep 30 & echo $! > ~/bg.pid", "setsid sleep 30 & echo $! > ~/escaped.pid", "sleep 30"],
            "~",
            60,
        );
        let (h, _) = start(&f, &meta);
        let root = f.home.instance_dir(&f.instance).join("root");
        let pid_of =
            |name: &str| fs::read_to_string(root.join(name)).ok().and_then(|s| s.trim().parse::<i32>().ok());
        wait_for("the background pids", 10, || pid_of("bg.pid").is_some() && pid_of("escaped.pid").is_some());
        wait_for("the group", 10, || read_job(&f.home, &meta.command_id).unwrap().pgid.is_some());
        let (bg, escaped) = (pid_of("bg.pid").unwrap(), pid_of("escaped.pid").unwrap());
        let pgid = read_job(&f.home, &meta.command_id).unwrap().pgid.unwrap();
        wait_for("the children to run", 10, || alive(bg) && alive(escaped));
        let t = Instant::now();
        cancel(&f.home, &meta.command_id).unwrap();
        assert!(t.elapsed() < Duration::from_secs(4));
        h.join().unwrap().unwrap();
        wait_for("the children to die", 3, || !alive(bg) && !alive(escaped) && !alive(pgid));
        let r = report(&f.home, &meta.command_id).unwrap();
        assert_eq!(r.state, JobState::Cancelled);
        cancel(&f.home, &meta.command_id).unwrap();
    }

    #[test]
    fn shutdown_in_the_command_stops_the_instance_when_the_job_ends() {
        let f = fixture();
        let meta = job(&f, &["cd /home/ubuntu; echo work; shutdown -h 1; echo after"], "~", 60);
        let (r, stops) = run_to_end(&f, &meta);
        assert_eq!(r.state, JobState::Success, "{r:?} {}", err(&f, &meta));
        assert_eq!(out(&f, &meta), "work\nafter\n");
        assert!(err(&f, &meta).contains("Shutdown scheduled for"), "{}", err(&f, &meta));
        assert_eq!(
            *stops.lock().unwrap(),
            vec![(f.instance.clone(), "shutdown requested by the job".to_string())]
        );
        assert!(!f.home.instance_dir(&f.instance).join(sandbox::STOP_MARKER).exists());
    }

    #[test]
    fn a_shutdown_that_comes_due_while_the_job_runs_stops_the_instance() {
        let f = fixture();
        let meta = job(&f, &["sudo shutdown -h now", "sleep 30"], "~", 60);
        let t = Instant::now();
        let (r, stops) = run_to_end(&f, &meta);
        assert!(t.elapsed() < Duration::from_secs(5));
        assert_eq!(r.state, JobState::Failed);
        assert_eq!(
            r.detail.as_deref(),
            Some("instance stopped while the command was running (`shutdown -h now`)")
        );
        assert_eq!(
            *stops.lock().unwrap(),
            vec![(f.instance.clone(), "shutdown requested by the job".to_string())]
        );
    }

    #[test]
    fn a_stopped_instance_or_an_expired_lifetime_fails_the_job() {
        let f = fixture();
        let meta = job(&f, &["sleep 30"], "~", 60);
        let (h, _) = start(&f, &meta);
        wait_for("the group", 10, || read_job(&f.home, &meta.command_id).unwrap().pgid.is_some());
        set_instance(&f, "stopped", clock::now(), "60");
        h.join().unwrap().unwrap();
        let r = report(&f.home, &meta.command_id).unwrap();
        assert_eq!(r.state, JobState::Failed);
        assert_eq!(r.detail.as_deref(), Some("instance stopped while the command was running"));

        let g = fixture_with(clock::now() - 3600 - 5, "60");
        let meta = job(&g, &["echo never"], "~", 60);
        let (r, stops) = run_to_end(&g, &meta);
        assert_eq!(
            (r.state, r.detail.as_deref()),
            (JobState::Failed, Some("lifetime of 60 minutes expired"))
        );
        assert_eq!(
            *stops.lock().unwrap(),
            vec![(g.instance.clone(), "lifetime of 60 minutes expired".to_string())]
        );
        assert_eq!(out(&g, &meta), "");
    }

    #[test]
    fn cancel_instance_jobs_ends_every_running_job_of_the_instance() {
        let f = fixture();
        let other = fixture();
        let a = job(&f, &["sleep 30"], "~", 60);
        let b = job(&f, &["sleep 30 & sleep 30"], "/tmp", 60);
        let c = job(&other, &["sleep 1"], "~", 60);
        let handles: Vec<_> =
            [(&f, &a), (&f, &b), (&other, &c)].into_iter().map(|(f, m)| start(f, m).0).collect();
        for m in [&a, &b] {
            wait_for("the group", 10, || read_job(&f.home, &m.command_id).unwrap().pgid.is_some());
        }
        assert_eq!(cancel_instance_jobs(&f.home, &f.instance, "instance terminated").unwrap(), 2);
        assert!(marked_processes(&[instance_marker(&f.instance)]).is_empty());
        for h in handles {
            h.join().unwrap().unwrap();
        }
        for m in [&a, &b] {
            let r = report(&f.home, &m.command_id).unwrap();
            assert_eq!((r.state, r.detail.as_deref()), (JobState::Failed, Some("instance terminated")));
        }
        assert_eq!(report(&other.home, &c.command_id).unwrap().state, JobState::Success);
        assert_eq!(cancel_instance_jobs(&f.home, &f.instance, "again").unwrap(), 0);
    }

    #[test]
    fn a_missing_working_directory_fails_like_ssm() {
        let f = fixture();
        let meta = job(&f, &["echo never"], "~/bin", 60);
        let (r, _) = run_to_end(&f, &meta);
        assert_eq!(r.state, JobState::Failed);
        assert!(
            r.detail.as_deref().unwrap_or("").contains("working directory `~/bin` does not exist"),
            "{r:?}"
        );
        assert!(err(&f, &meta).contains("does not exist"));
    }

    #[test]
    fn a_dead_supervisor_is_reported() {
        let f = fixture();
        let mut meta = job(&f, &["true"], "~", 60);
        let mut dead = Command::new("true").spawn().unwrap();
        let pid = dead.id();
        dead.wait().unwrap();
        meta.state = "InProgress".into();
        meta.supervisor_pid = Some(pid);
        write_json(&job_path(&f.home, &meta.command_id), &meta).unwrap();
        let r = report(&f.home, &meta.command_id).unwrap();
        assert_eq!((r.state, r.detail.as_deref()), (JobState::Failed, Some("the job supervisor died")));
        // This process is alive: a job it supervises is still running.
        fs::write(
            supervisor_path(&f.home, &meta.command_id),
            format!("{} {}\n", std::process::id(), proc_start_time(std::process::id() as i32).unwrap()),
        )
        .unwrap();
        assert_eq!(report(&f.home, &meta.command_id).unwrap().state, JobState::InProgress);
    }

    #[test]
    fn jobs_run_in_the_instance_home_and_never_mix() {
        let f = fixture();
        let other = fixture();
        let write = job(&f, &["pwd", "echo $HOME", "echo mine > ~/x", "ls -A /home | tr '\\n' ' '"], "~", 60);
        let (r, _) = run_to_end(&f, &write);
        assert_eq!(r.state, JobState::Success, "{}", err(&f, &write));
        let root = f.home.instance_dir(&f.instance).join("root");
        assert_eq!(fs::read_to_string(root.join("x")).unwrap(), "mine\n");
        if matches!(the_sandbox(), Sandbox::Bwrap(_)) {
            assert_eq!(out(&f, &write), "/home/ubuntu\n/home/ubuntu\n.devami ubuntu ");
            assert!(
                !Path::new("/home/ubuntu/x").exists()
                    || fs::read_to_string("/home/ubuntu/x").unwrap() != "mine\n"
            );
        }
        let read = job(&other, &["cat ~/x"], "~", 60);
        let (r, _) = run_to_end(&other, &read);
        assert_eq!(r.state, JobState::Failed);
        assert!(!other.home.instance_dir(&other.instance).join("root/x").exists());
    }

    #[test]
    fn detached_processes_leave_our_session_and_family() {
        let tmp = tempfile::tempdir().unwrap();
        let info = tmp.path().join("info");
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("cat /proc/$$/stat > {0}.tmp; mv {0}.tmp {0}; echo logged", info.display()));
        spawn_detached(cmd, &tmp.path().join("log")).unwrap();
        wait_for("the detached process", 10, || info.exists());
        let stat = fs::read_to_string(&info).unwrap();
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 1..].split_whitespace().collect();
        let (ppid, sid): (u32, i32) = (fields[1].parse().unwrap(), fields[3].parse().unwrap());
        assert_ne!(ppid, std::process::id());
        assert_ne!(sid, unsafe { libc::getsid(0) });
        wait_for("the log", 10, || fs::read_to_string(tmp.path().join("log")).is_ok_and(|l| l == "logged\n"));
    }

    #[test]
    fn submit_records_a_pending_job_and_private_environment() {
        let f = fixture();
        let mut meta = job(&f, &["true"], "~", 60);
        fs::remove_dir_all(f.home.command_dir(&meta.command_id)).unwrap();
        meta.state = "whatever".into();
        let env = [("AWS_SECRET_ACCESS_KEY".to_string(), "s".to_string())];
        // The supervisor started here is this test binary, which runs no test for `__job ...`.
        submit(&f.home, meta.clone(), &env).unwrap();
        let stored = read_job(&f.home, &meta.command_id).unwrap();
        assert_eq!(stored.state, "Pending");
        let mode = fs::metadata(env_path(&f.home, &meta.command_id)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let back: Vec<(String, String)> = read_json_any(&env_path(&f.home, &meta.command_id)).unwrap();
        assert_eq!(back, env);
        assert!(matches!(submit(&f.home, meta, &env), Err(Error::Refused(_))));
    }

    /// The body of a detached supervisor when this test binary is started as one.
    #[test]
    fn supervisor_entry() {
        if let Ok(spec) = std::env::var("DEVAMI_TEST_SUPERVISE") {
            let (root, id) = spec.split_once('\t').unwrap();
            std::process::exit(supervise(Path::new(root), id));
        }
    }

    /// Starts this test binary, detached, as the supervisor of a job (what `submit` does with the
    /// devami binary).
    fn start_detached(f: &Fixture, meta: &JobMeta) {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", "jobrunner::tests::supervisor_entry", "--nocapture", "--test-threads=1"])
            .env("DEVAMI_TEST_SUPERVISE", format!("{}\t{}", f.home.root().display(), meta.command_id));
        spawn_detached(cmd, &supervisor_log(&f.home, &meta.command_id)).unwrap();
    }

    #[test]
    fn a_detached_supervisor_runs_the_job_and_is_watched() {
        let f = fixture();
        let meta = job(&f, &["echo started", "sleep 1", "echo done"], "~", 60);
        start_detached(&f, &meta);
        wait_for("the job to start", 10, || out(&f, &meta) == "started\n");
        let r = report(&f.home, &meta.command_id).unwrap();
        assert_eq!(r.state, JobState::InProgress, "{r:?}");
        wait_for("the job to end", 10, || report(&f.home, &meta.command_id).unwrap().state.is_final());
        let r = report(&f.home, &meta.command_id).unwrap();
        assert_eq!((r.state, r.exit_code), (JobState::Success, Some(0)), "{r:?}");
        assert_eq!(out(&f, &meta), "started\ndone\n");

        // A supervisor told to end ends its job first.
        let meta = job(&f, &["sleep 30"], "~", 60);
        start_detached(&f, &meta);
        wait_for("the group", 10, || read_job(&f.home, &meta.command_id).unwrap().pgid.is_some());
        let sup = read_job(&f.home, &meta.command_id).unwrap().supervisor_pid.unwrap() as i32;
        unsafe { libc::kill(sup, libc::SIGTERM) };
        wait_for("the job to end", 10, || report(&f.home, &meta.command_id).unwrap().state.is_final());
        let r = report(&f.home, &meta.command_id).unwrap();
        assert_eq!(r.state, JobState::Failed);
        assert_eq!(r.detail.as_deref(), Some("the job supervisor was ended by signal 15 (SIGTERM)"));
        assert!(marked_processes(&[command_marker(&meta.command_id)]).is_empty());

        // A supervisor killed outright is noticed; cancel still ends its job.
        let meta = job(&f, &["sleep 30"], "~", 60);
        start_detached(&f, &meta);
        wait_for("the group", 10, || read_job(&f.home, &meta.command_id).unwrap().pgid.is_some());
        let sup = read_job(&f.home, &meta.command_id).unwrap().supervisor_pid.unwrap() as i32;
        unsafe { libc::kill(sup, libc::SIGKILL) };
        wait_for("the death to be noticed", 10, || {
            report(&f.home, &meta.command_id).unwrap().detail.as_deref() == Some("the job supervisor died")
        });
        cancel(&f.home, &meta.command_id).unwrap();
        assert!(marked_processes(&[command_marker(&meta.command_id)]).is_empty());
        assert_eq!(report(&f.home, &meta.command_id).unwrap().state, JobState::Cancelled);
    }

    #[test]
    fn stop_requests_parse_and_are_taken_once() {
        let f = fixture();
        let marker = f.home.instance_dir(&f.instance).join(sandbox::STOP_MARKER);
        fs::write(&marker, "requested=100\ndue=160\naction=poweroff\ncommand=shutdown -h 1\n").unwrap();
        let want = StopRequest {
            requested: 100,
            due: 160,
            action: "poweroff".into(),
            command: "shutdown -h 1".into(),
        };
        assert_eq!(peek_stop_request(&f.home, &f.instance), Some(want.clone()));
        assert_eq!(take_stop_request(&f.home, &f.instance), Some(want));
        assert_eq!(take_stop_request(&f.home, &f.instance), None);
        assert!(!marker.exists());
    }
}
