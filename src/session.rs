//! The `DevAmi` session: one blueprint folder, its persistent state and the commands on them.
//!
//! A [`DevAmi`] is what `NeuroCaaSAMI(path)` was in the original: it holds the blueprint, the
//! session state (current instance, histories, saved flag, address) and, once a command needs
//! one, the backend. Front ends (shell, script runner, tutorial player, one-shots) hand it lines;
//! [`DevAmi::execute_line`] parses them with `parse.rs` and runs them through one `match` on the
//! command's canonical name. State is persisted after every command that changed it, and commands
//! that wait persist before waiting.

use std::path::{Path, PathBuf};
use std::time::Duration;

use std::future::Future;

use crate::backend::{Backend, BackendError, BackendKind};
use crate::blueprint::Blueprint;
use crate::blueprint::lint;
use crate::blueprint::scaffold;
use crate::clock;
use crate::commands;
use crate::console::Console;
use crate::error::{Error, Result};
use crate::interrupt;
use crate::output::Output;
use crate::parse::{self, Invocation, Line};
use crate::pricing;
use crate::state::{State, StateStore};

/// The default name of the session object in call-form lines (`devami.launch_devinstance()`).
pub const DEFAULT_OBJECT: &str = "devami";

/// How a session was started.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The backend to use for cloud operations.
    pub backend: BackendKind,
    /// Answer yes to every confirmation (`--yes`).
    pub yes: bool,
    /// Whether a person is at a terminal to answer questions.
    pub interactive: bool,
    /// How to reach AWS (`--backend aws`).
    pub aws: crate::backend::aws::AwsOptions,
    /// What to do with a running instance when the session ends.
    pub on_exit: OnExit,
}

/// What happens to a running instance when the session ends (`--on-exit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnExit {
    /// Ask at a terminal; in scripts leave it running and say so.
    #[default]
    Ask,
    Leave,
    Stop,
    Terminate,
}

impl std::str::FromStr for OnExit {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "ask" => Ok(OnExit::Ask),
            "leave" => Ok(OnExit::Leave),
            "stop" => Ok(OnExit::Stop),
            "terminate" => Ok(OnExit::Terminate),
            other => Err(format!("unknown action `{other}`: expected ask, leave, stop or terminate")),
        }
    }
}

/// What the front end should do after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Read the next command.
    Continue,
    /// Leave the shell (`exit`).
    Exit,
}

/// A command's result and what to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub output: Output,
    pub flow: Flow,
}

impl From<Output> for Outcome {
    fn from(output: Output) -> Outcome {
        Outcome { output, flow: Flow::Continue }
    }
}

/// The blueprint-bound development session.
#[derive(Debug)]
pub struct DevAmi {
    opts: Options,
    object: String,
    blueprint: Option<Blueprint>,
    store: Option<StateStore>,
    state: State,
    /// What is on disk, to write only when something changed.
    persisted: State,
    /// The backend and the runtime its calls run on, created on first use.
    cloud: Option<Cloud>,
    /// Where every message goes.
    pub console: Console,
    /// Lifetime warnings already given: (instance, lifetime in minutes, threshold).
    warned: Vec<(String, u32, i64)>,
}

/// The lifetime left of an instance, for tables: `42m 10s`, `over`, or `-` when not running.
fn lifetime_text(rec: &crate::state::InstanceRecord, now: i64) -> String {
    match (rec.last_state.as_deref(), rec.lifetime_left(now)) {
        (Some("running" | "pending"), Some(s)) if s > 0 => clock::human_duration(s),
        (Some("running" | "pending"), Some(_)) => "over".into(),
        _ => "-".into(),
    }
}

/// What the current instance has cost since it was last launched or started.
fn running_cost_text(
    rec: &crate::state::InstanceRecord,
    hourly: Option<f64>,
    now: i64,
    note: &str,
) -> String {
    match (rec.last_state.as_deref(), hourly, rec.launch_time) {
        (Some("running" | "pending"), Some(h), Some(t)) => format!(
            "{} since {} UTC{note}",
            pricing::dollars(pricing::running_cost(h, now.saturating_sub(t))),
            clock::format(t)
        ),
        (Some("running" | "pending"), None, _) => "unknown (no price for its type)".into(),
        (Some("stopped" | "stopping"), _, _) => match rec.volume_gib {
            Some(gib) => {
                let month = pricing::volume_month(f64::from(gib));
                format!(
                    "no compute while stopped; its {gib} GiB volume costs {}/month ({}/hour){note}",
                    pricing::dollars(month),
                    pricing::dollars(pricing::per_hour(month))
                )
            }
            None => "no compute while stopped; its volume is still billed".into(),
        },
        _ => "-".into(),
    }
}

/// Minutes of lifetime left at which the session warns.
const LIFETIME_WARNINGS: [i64; 2] = [15, 5];

/// A backend with the async runtime that drives it.
pub(crate) struct Cloud {
    rt: tokio::runtime::Runtime,
    pub(crate) backend: Box<dyn Backend>,
}

impl std::fmt::Debug for Cloud {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cloud({})", self.backend.kind())
    }
}

impl Cloud {
    /// [`Cloud::call`] bounded by `limit`: `Ok(None)` when no answer came in time (the call is
    /// abandoned, as on Ctrl-C).
    pub(crate) fn call_within<T>(
        &self,
        limit: Duration,
        op: &'static str,
        fut: impl Future<Output = std::result::Result<T, BackendError>>,
    ) -> Result<Option<T>> {
        self.call(op, async {
            match tokio::time::timeout(limit, fut).await {
                Ok(answer) => answer.map(Some),
                Err(_) => Ok(None),
            }
        })
    }

    /// Runs one backend call to completion; Ctrl-C abandons the wait for it (not the operation).
    pub(crate) fn call<T>(
        &self,
        op: &'static str,
        fut: impl Future<Output = std::result::Result<T, BackendError>>,
    ) -> Result<T> {
        self.rt.block_on(async {
            tokio::select! {
                r = fut => r.map_err(|source| Error::Backend { op, source }),
                () = watch_interrupt() => Err(Error::Interrupted),
            }
        })
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::io("start", "the async runtime", e))
}

async fn watch_interrupt() {
    while !interrupt::pending() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl DevAmi {
    /// A session with no blueprint yet.
    pub fn new(opts: Options) -> DevAmi {
        let state = State::new(opts.backend.as_str());
        DevAmi {
            object: DEFAULT_OBJECT.to_string(),
            blueprint: None,
            store: None,
            persisted: state.clone(),
            state,
            opts,
            cloud: None,
            console: Console::default(),
            warned: Vec::new(),
        }
    }

    /// A session bound to the blueprint in `dir`.
    pub fn open(opts: Options, dir: &Path) -> Result<DevAmi> {
        let mut s = DevAmi::new(opts);
        s.open_blueprint(dir)?;
        Ok(s)
    }

    /// Binds the session to the blueprint in `dir`: reads it, takes the folder's lock and resumes
    /// its state. On failure the session is left as it was.
    pub fn open_blueprint(&mut self, dir: &Path) -> Result<()> {
        let blueprint = Blueprint::open(dir)?;
        if let Some(current) = &self.blueprint
            && same_folder(current.dir(), blueprint.dir())
        {
            // Opening the open blueprint again (`devami = NeuroCaaSAMI(...)` twice, as the guide
            // does after a restart) re-reads the file; the lock and the state stay this session's.
            self.blueprint = Some(blueprint);
            return Ok(());
        }
        let store = StateStore::open(blueprint.dir())?;
        let state = match store.load()? {
            Some(state) => state,
            None => State::new(self.opts.backend.as_str()),
        };
        if state.backend != self.opts.backend.as_str() {
            return Err(Error::Refused(format!(
                "the session in `{}` uses the `{}` backend, not `{}`; rerun with `--backend {}` (its instances live there)",
                blueprint.dir().display(),
                state.backend,
                self.opts.backend,
                state.backend
            )));
        }
        // The folder is ours and its state sound: what writes killed before their rename left
        // (in `.devami/`, and beside the blueprint from older versions) goes.
        store.remove_dead_temps();
        crate::blueprint::remove_dead_temps(blueprint.dir());
        // Drop the old lock only once the new blueprint is ours.
        self.blueprint = Some(blueprint);
        self.store = Some(store);
        self.persisted = state.clone();
        self.state = state;
        if self.cloud.is_some() {
            // The cloud is already in use: check the resumed instance now, not at startup.
            self.warn_if_current_vanished();
        }
        Ok(())
    }

    /// The open blueprint, if any.
    pub fn blueprint(&self) -> Option<&Blueprint> {
        self.blueprint.as_ref()
    }

    /// The session state.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The session's options.
    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// The prompt: blueprint and current instance with its last known state.
    pub fn prompt(&self) -> String {
        let Some(bp) = &self.blueprint else {
            return "devami> ".to_string();
        };
        let name = bp.dir().file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        match self.state.current() {
            Some(rec) => {
                let st = rec.last_state.as_deref().unwrap_or("unknown");
                let left = match rec.lifetime_left(clock::now()) {
                    Some(s) if st == "running" && s > 0 => format!(" {} left", clock::human_duration(s)),
                    Some(_) if st == "running" => " lifetime over".to_string(),
                    _ => String::new(),
                };
                format!("devami [{name} {} {st}{left}]> ", rec.id)
            }
            None => format!("devami [{name}]> "),
        }
    }

    /// The warning due when the running instance's lifetime drops to 15 and then 5 minutes or
    /// less (each once per instance and lifetime; extending the lifetime re-arms them).
    pub fn lifetime_warning(&mut self) -> Option<String> {
        let rec = self.state.current()?;
        if rec.last_state.as_deref() != Some("running") {
            return None;
        }
        let left = rec.lifetime_left(clock::now())?;
        let threshold = LIFETIME_WARNINGS.iter().copied().filter(|t| left <= t * 60).min()?;
        let key = (rec.id.clone(), rec.timeout_minutes.unwrap_or(0), threshold);
        if self.warned.contains(&key) {
            return None;
        }
        self.warned.push(key);
        let id = rec.id.clone();
        Some(if left > 0 {
            format!(
                "instance {id} will be stopped in {} (its lifetime); `extend_lifetime MINUTES` keeps it running, `create_devami NAME` saves the work",
                clock::human_duration(left)
            )
        } else {
            format!(
                "instance {id} is past its lifetime and may be stopped at any time; `extend_lifetime MINUTES` keeps it"
            )
        })
    }

    /// Ends the session: a running instance is stopped, terminated or left running, as
    /// `--on-exit` says or (at a terminal) as the user answers, after showing what it costs.
    pub fn finish(&mut self) {
        let Some(rec) = self.state.current() else { return };
        if !matches!(rec.last_state.as_deref(), Some("pending" | "running" | "stopping")) {
            return;
        }
        let id = rec.id.clone();
        let hourly = rec.instance_type.as_deref().and_then(|t| self.prices().hourly(t));
        let cost = match (hourly, rec.launch_time) {
            (Some(h), Some(t)) => format!(
                "{} at {}/hour, {} so far{}",
                rec.instance_type.as_deref().unwrap_or("-"),
                pricing::dollars(h),
                pricing::dollars(pricing::running_cost(h, clock::now().saturating_sub(t))),
                self.price_note()
            ),
            _ => rec.instance_type.clone().unwrap_or_else(|| "price unknown".into()),
        };
        let action = match self.opts.on_exit {
            OnExit::Ask if self.opts.interactive => self.ask_on_exit(&id, &cost),
            OnExit::Ask => OnExit::Leave,
            other => other,
        };
        let command = match action {
            OnExit::Stop => "stop_devinstance",
            OnExit::Terminate => "terminate_devinstance",
            OnExit::Ask | OnExit::Leave => {
                if let Some(w) = self.exit_warning() {
                    self.console.warn(&format!("{w} ({cost})"));
                }
                return;
            }
        };
        self.console.print(&format!("devami> {command}"));
        match self.execute_line(command) {
            Ok(outcome) => self.console.print(&outcome.output.render()),
            Err(e) => {
                self.console.error(&e);
                if let Some(w) = self.exit_warning() {
                    self.console.warn(&w);
                }
            }
        }
    }

    /// Asks what to do with a running instance on leaving; Enter leaves it running.
    fn ask_on_exit(&mut self, id: &str, cost: &str) -> OnExit {
        use std::io::Write as _;
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "instance {id} is still running ({cost}).\n[s]top it, [t]erminate it or [l]eave it running? [l] "
        );
        let _ = err.flush();
        drop(err);
        let mut answer = String::new();
        if std::io::stdin().read_line(&mut answer).is_err() {
            return OnExit::Leave;
        }
        match answer.trim().to_ascii_lowercase().as_str() {
            "s" | "stop" => OnExit::Stop,
            "t" | "terminate" => OnExit::Terminate,
            _ => OnExit::Leave,
        }
    }

    /// A warning for leaving the shell while the current instance may still cost money.
    pub fn exit_warning(&self) -> Option<String> {
        let rec = self.state.current()?;
        let st = rec.last_state.as_deref()?;
        matches!(st, "pending" | "running" | "stopping").then(|| {
            format!(
                "instance {} is still {st} and keeps costing money; it stays tracked in `{}` — stop it with `stop_devinstance` or `terminate_devinstance` next time",
                rec.id,
                self.store.as_ref().map(|s| s.dir().display().to_string()).unwrap_or_default()
            )
        })
    }

    /// Parses and runs one line.
    pub fn execute_line(&mut self, line: &str) -> Result<Outcome> {
        match parse::parse_line(line)? {
            Line::Nothing | Line::Import => Ok(Output::Empty.into()),
            Line::Help(None) => Ok(Output::Text(commands::help_overview()).into()),
            Line::Help(Some(spec)) => Ok(Output::Text(commands::help_command(spec)).into()),
            Line::Bind { name, path } => {
                self.open_blueprint(Path::new(&path))?;
                self.object = name;
                Ok(Output::Text(self.opened_message()).into())
            }
            Line::Command(inv) => {
                if let Some(obj) = inv.object.as_ref().filter(|o| **o != self.object && o != &DEFAULT_OBJECT)
                {
                    return Err(Error::usage(format!(
                        "`{obj}` is not defined; this session's object is `{}` (e.g. `{}.{}()`)",
                        self.object, self.object, inv.spec.name
                    )));
                }
                let outcome = self.execute(&inv);
                // Persist whatever changed, even when the command failed half-way.
                self.persist()?;
                if let Some(w) = self.lifetime_warning() {
                    self.console.warn(&w);
                }
                outcome
            }
        }
    }

    /// Writes the state if it changed since the last write.
    pub fn persist(&mut self) -> Result<()> {
        if self.state == self.persisted {
            return Ok(());
        }
        if let Some(store) = &self.store {
            store.save(&self.state)?;
        }
        self.persisted = self.state.clone();
        Ok(())
    }

    /// Runs a parsed command.
    pub fn execute(&mut self, inv: &Invocation) -> Result<Outcome> {
        let spec = inv.spec;
        let a = &inv.args;
        let out = match spec.name {
            "help" => match a.str("command") {
                Some(name) => {
                    let spec = commands::lookup(name).ok_or_else(|| Error::UnknownCommand {
                        name: name.to_string(),
                        suggestion: commands::suggest(name).map(str::to_string),
                    })?;
                    Output::Text(commands::help_command(spec))
                }
                None => Output::Text(commands::help_overview()),
            },
            "exit" => return Ok(Outcome { output: Output::Empty, flow: Flow::Exit }),
            "status" => {
                self.require_blueprint()?;
                self.refresh_pending_images();
                let about = self.backend_about();
                self.status(about)?
            }
            "history" => {
                self.require_blueprint()?;
                self.refresh_pending_images();
                self.history()?
            }
            "jobs" => self.cmd_jobs()?,
            "blueprint" => {
                let bp = self.require_blueprint()?;
                let rows = bp.summary().into_iter().map(|(k, v)| vec![k, v]).collect();
                Output::Many(vec![
                    Output::text(format!("blueprint `{}`", bp.path().display())),
                    Output::table(&["key", "value"], rows),
                ])
            }
            "check" => {
                let dir = match a.str("path") {
                    Some(p) => PathBuf::from(p),
                    None => self.require_blueprint()?.dir().to_path_buf(),
                };
                let findings = lint::check_dir(&dir);
                let report = lint::render(&dir, &findings);
                let errors = findings.iter().filter(|f| f.severity == lint::Severity::Error).count();
                if errors > 0 {
                    self.console.print(&report);
                    return Err(Error::CheckFailed { errors });
                }
                Output::Text(report)
            }
            "init" => {
                let name = a.str("name").unwrap_or_default();
                let parent = a.str("dir").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
                let path = scaffold::init(name, &parent)?;
                Output::Text(scaffold::render_created(&path))
            }
            "open" => {
                let path = a.str("path").unwrap_or_default().to_string();
                self.open_blueprint(Path::new(&path))?;
                Output::Text(self.opened_message())
            }
            "sleep" => {
                let secs = a.float("seconds").unwrap_or(0.0);
                if !(0.0..=86_400.0).contains(&secs) {
                    return Err(Error::usage(format!(
                        "sleep: `seconds` must be between 0 and 86400, got {secs}"
                    )));
                }
                interrupt::sleep(Duration::from_secs_f64(secs))?;
                Output::Empty
            }
            "forget" => self.forget()?,
            "sweep" => self.cmd_sweep(a)?,
            "launch_devinstance" => self.cmd_launch(a)?,
            "assign_instance" => self.cmd_assign(a)?,
            "start_devinstance" => self.cmd_start(a)?,
            "stop_devinstance" => self.cmd_stop()?,
            "terminate_devinstance" => self.cmd_terminate(a)?,
            "get_instance_state" => self.cmd_instance_state()?,
            "check_running" => self.cmd_check_running()?,
            "check_clear" => self.cmd_check_clear()?,
            "get_ip" => self.cmd_get_ip()?,
            "get_lifetime" => self.cmd_get_lifetime()?,
            "extend_lifetime" => self.cmd_extend_lifetime(a)?,
            "create_devami" => self.cmd_create_devami(a)?,
            "update_blueprint" => self.cmd_update_blueprint(a)?,
            "import_image" => self.cmd_import_image(a)?,
            "submit_job" => self.cmd_submit(a)?,
            "job_status" => self.cmd_job_status(a)?,
            "job_output" => self.cmd_job_output(a)?,
            "cancel_job" => self.cmd_cancel_job(a)?,
            "results" => self.cmd_results(a)?,
            "new_submit" => self.cmd_new_submit(a)?,
            "exec" => self.cmd_exec(a)?,
            "ssh" => self.cmd_ssh()?,
            "upload" => self.cmd_upload(a)?,
            "download" => self.cmd_download(a)?,
            "ls" => self.cmd_ls(a)?,
            other => return Err(Error::Refused(format!("`{other}` has no implementation in this build"))),
        };
        Ok(out.into())
    }

    /// The backend, created on first use; that first use also warns at once when the current
    /// instance vanished behind the session's back (commands without the cloud stay instant).
    pub(crate) fn cloud(&mut self) -> Result<&Cloud> {
        if self.cloud.is_none() {
            self.connect()?;
            self.warn_if_current_vanished();
        }
        self.connect()
    }

    /// The backend, created if missing.
    fn connect(&mut self) -> Result<&Cloud> {
        if self.cloud.is_none() {
            let backend: Box<dyn Backend> = match self.opts.backend {
                BackendKind::Local => Box::new(crate::backend::local::LocalBackend::from_env()?),
                BackendKind::Aws => {
                    let bp = self.require_blueprint()?;
                    let (region, key) = (bp.region().map(str::to_string), bp.key_name().map(str::to_string));
                    let rt = runtime()?;
                    let connect =
                        crate::backend::aws::AwsBackend::connect(self.opts.aws.clone(), region, key);
                    let backend = rt.block_on(async {
                        tokio::select! {
                            r = connect => r.map_err(|source| match source {
                                BackendError::Credentials { message, hint } => Error::Refused(format!(
                                    "no valid AWS credentials ({message}); {hint}"
                                )),
                                source => Error::Backend { op: "connecting to AWS", source },
                            }),
                            () = watch_interrupt() => Err(Error::Interrupted),
                        }
                    })?;
                    let backend = crate::backend::faults::wrap(Box::new(backend))?;
                    return Ok(self.cloud.insert(Cloud { rt, backend }));
                }
            };
            let backend = crate::backend::faults::wrap(backend)?;
            let rt = runtime()?;
            return Ok(self.cloud.insert(Cloud { rt, backend }));
        }
        match &self.cloud {
            Some(c) => Ok(c),
            None => Err(Error::NoBlueprint),
        }
    }

    /// Mutable access to the state (for the command modules).
    pub(crate) fn state_mut(&mut self) -> &mut State {
        &mut self.state
    }

    /// The open blueprint, or the error saying none is open.
    pub(crate) fn bp(&self) -> Result<&Blueprint> {
        self.require_blueprint()
    }

    /// Mutable access to the open blueprint.
    pub(crate) fn bp_mut(&mut self) -> Result<&mut Blueprint> {
        self.blueprint.as_mut().ok_or(Error::NoBlueprint)
    }

    /// Resolves a job index as Python indexes a list: 0 is the first job, -1 the most recent.
    pub fn job_index(&self, index: i64) -> Result<usize> {
        self.require_blueprint()?;
        let n = self.state.jobs.len();
        let resolved = if index < 0 { n as i64 + index } else { index };
        if resolved < 0 || resolved >= n as i64 {
            let have = match n {
                0 => "this session has submitted no jobs yet (see `submit_job`)".to_string(),
                1 => "this session has 1 job: index 0 or -1".to_string(),
                n => format!("this session has {n} jobs: indexes 0 to {} or -1 to -{n}", n - 1),
            };
            return Err(Error::Refused(format!("index {index} does not exist: {have}")));
        }
        Ok(resolved as usize)
    }

    fn require_blueprint(&self) -> Result<&Blueprint> {
        self.blueprint.as_ref().ok_or(Error::NoBlueprint)
    }

    /// Asks a yes/no question; in a script without `--yes` it is an error, never a hang.
    pub fn confirm(&mut self, command: &str, question: &str) -> Result<bool> {
        if self.opts.yes {
            self.console.print(&format!("{question} [y/N] yes (--yes)"));
            return Ok(true);
        }
        if !self.opts.interactive {
            return Err(Error::ConfirmationRequired {
                command: command.to_string(),
                question: question.to_string(),
            });
        }
        use std::io::{BufRead, Write};
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "{question} [y/N] ");
        let _ = out.flush();
        drop(out);
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer).map_err(|e| Error::io("read", "stdin", e))?;
        interrupt::check()?;
        Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "Yes" | "YES"))
    }

    fn forget(&mut self) -> Result<Output> {
        let id = self.current_instance()?;
        let last = self.state.current().and_then(|r| r.last_state.clone());
        // A terminated (or vanished) instance costs nothing: forgetting it needs no question.
        if !matches!(last.as_deref(), Some("terminated" | "gone")) {
            let seen = last.map(|s| format!("last seen {s}")).unwrap_or_else(|| "state unknown".into());
            let question = format!("stop tracking instance {id} ({seen})? It may keep costing money");
            if !self.confirm("forget", &question)? {
                return Ok(Output::text("No state change."));
            }
        }
        self.state.instance = None;
        self.state.ip = None;
        self.state.instance_saved = false;
        Ok(Output::text(format!("instance {id} is no longer the current instance (it stays in `history`)")))
    }

    fn opened_message(&self) -> String {
        let Some(bp) = &self.blueprint else { return String::new() };
        let name = bp.pipeline_name().map(str::to_string).unwrap_or_else(|_| "(no PipelineName)".into());
        let mut msg =
            format!("opened blueprint `{name}` in `{}` (backend {})", bp.dir().display(), self.opts.backend);
        if let Some(rec) = self.state.current() {
            msg.push_str(&format!(
                "\nresuming: current instance {} (last seen {})",
                rec.id,
                rec.last_state.as_deref().unwrap_or("in an unknown state")
            ));
        }
        msg
    }

    /// What runs the instances (the local backend's engine and version), for `status`; a
    /// backend that cannot be reached says so instead of failing the command.
    fn backend_about(&mut self) -> Option<String> {
        // Not `cloud()`: `status` stays a look at the session, with no check of the instance.
        if self.opts.backend != BackendKind::Local {
            return None;
        }
        let shown = |e: &Error| crate::console::render_error(e).trim_end().replacen("error: ", "", 1);
        let cloud = match self.connect() {
            Ok(c) => c,
            Err(e) => return Some(format!("not reachable: {}", shown(&e))),
        };
        match cloud.call_within(
            Duration::from_secs(10),
            "asking the backend about itself",
            cloud.backend.about(),
        ) {
            Ok(Some(about)) => about,
            Ok(None) => Some("no answer within 10 s".into()),
            Err(e) => Some(format!("not reachable: {}", shown(&e))),
        }
    }

    fn status(&self, about: Option<String>) -> Result<Output> {
        let bp = self.require_blueprint()?;
        let st = &self.state;
        let now = clock::now();
        let prices = self.prices();
        let mut rows: Vec<Vec<String>> = vec![
            vec!["blueprint".into(), bp.dir().display().to_string()],
            vec!["pipeline".into(), bp.pipeline_name().unwrap_or("(missing)").to_string()],
            vec!["backend".into(), self.opts.backend.to_string()],
        ];
        if let Some(about) = about {
            rows.push(vec!["engine".into(), about]);
        }
        match st.current() {
            Some(rec) => {
                rows.push(vec!["instance".into(), rec.id.clone()]);
                rows.push(vec![
                    "last known state".into(),
                    match (&rec.last_state, rec.last_seen) {
                        (Some(s), Some(t)) => format!("{s} (at {} UTC)", clock::format(t)),
                        (Some(s), None) => s.clone(),
                        _ => "unknown".into(),
                    },
                ]);
                rows.push(vec!["address".into(), st.ip.clone().unwrap_or_else(|| "-".into())]);
                rows.push(vec!["lifetime left".into(), lifetime_text(rec, now)]);
                let ty = rec.instance_type.clone().unwrap_or_else(|| "-".into());
                let hourly = rec.instance_type.as_deref().and_then(|t| prices.hourly(t));
                rows.push(vec![
                    "type and price".into(),
                    match hourly {
                        Some(h) => format!("{ty}, {}/hour{}", pricing::dollars(h), self.price_note()),
                        None => format!("{ty}, price unknown (add it with DEVAMI_PRICES)"),
                    },
                ]);
                rows.push(vec!["cost so far".into(), running_cost_text(rec, hourly, now, self.price_note())]);
                rows.push(vec![
                    "saved as image".into(),
                    if st.instance_saved { "yes".into() } else { "no".into() },
                ]);
            }
            None => rows.push(vec!["instance".into(), "none".into()]),
        }
        let snapshot_bytes: u64 = st
            .images
            .iter()
            .filter(|r| !matches!(r.last_state.as_deref(), Some("deregistered" | "failed")))
            .filter_map(|r| r.size_bytes)
            .sum();
        rows.push(vec!["instances known".into(), st.instances.len().to_string()]);
        rows.push(vec![
            "images created".into(),
            match st.images.len() {
                0 => "0".into(),
                n => format!(
                    "{n} (snapshots {}/month{})",
                    pricing::dollars(pricing::snapshot_month(snapshot_bytes)),
                    self.price_note()
                ),
            },
        ]);
        rows.push(vec!["jobs submitted".into(), st.jobs.len().to_string()]);
        Ok(Output::table(&["session", "value"], rows))
    }

    /// The price table in effect (`DEVAMI_PRICES` overrides; a bad file falls back to the
    /// built-in table, which `launch` reports).
    pub(crate) fn prices(&self) -> pricing::PriceTable {
        pricing::PriceTable::from_env().unwrap_or_else(|_| pricing::PriceTable::builtin())
    }

    /// What a cost figure means on this backend.
    pub(crate) fn price_note(&self) -> &'static str {
        match self.opts.backend {
            BackendKind::Local => " on AWS; free here",
            BackendKind::Aws => "",
        }
    }

    fn history(&self) -> Result<Output> {
        self.require_blueprint()?;
        let st = &self.state;
        let now = clock::now();
        let prices = self.prices();
        let mut parts = Vec::new();
        if st.instances.is_empty() {
            parts.push(Output::text("no instances yet"));
        } else {
            let rows = st
                .instances
                .iter()
                .map(|r| {
                    let hourly = r.instance_type.as_deref().and_then(|t| prices.hourly(t));
                    vec![
                        format!("{}{}", r.id, if st.instance.as_deref() == Some(&r.id) { " *" } else { "" }),
                        r.last_state.clone().unwrap_or_else(|| "-".into()),
                        r.instance_type.clone().unwrap_or_else(|| "-".into()),
                        r.source.clone().or_else(|| r.image_id.clone()).unwrap_or_else(|| "-".into()),
                        clock::format(r.recorded),
                        lifetime_text(r, now),
                        hourly.map(|h| format!("{}/h", pricing::dollars(h))).unwrap_or_else(|| "-".into()),
                        r.origin.clone(),
                    ]
                })
                .collect();
            parts.push(Output::table(
                &["instance", "state", "type", "image", "launched (UTC)", "lifetime left", "price", "how"],
                rows,
            ));
        }
        if st.images.is_empty() {
            parts.push(Output::text("no images yet"));
        } else {
            let rows = st
                .images
                .iter()
                .map(|r| {
                    vec![
                        r.id.clone(),
                        r.last_state.clone().unwrap_or_else(|| "-".into()),
                        r.name.clone(),
                        r.size_bytes.map(crate::commands::image::human_bytes).unwrap_or_else(|| "-".into()),
                        r.size_bytes
                            .map(|b| format!("{}/month", pricing::dollars(pricing::snapshot_month(b))))
                            .unwrap_or_else(|| "-".into()),
                        clock::format(r.created),
                        r.instance_id.clone(),
                    ]
                })
                .collect();
            parts.push(Output::table(
                &["image", "state", "name", "size", "storage", "created (UTC)", "from instance"],
                rows,
            ));
        }
        if self.opts.backend == BackendKind::Local && !st.instances.is_empty() {
            parts.push(Output::text(format!(
                "prices are what the same resources cost on AWS ({}, {}); the local backend is free",
                pricing::PRICES_SOURCE,
                pricing::PRICES_DATE
            )));
        }
        Ok(Output::Many(parts))
    }
}

/// Whether two paths name the same folder (symlinks and `..` resolved where they exist).
fn same_folder(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_in_the_table_has_an_implementation() {
        for spec in commands::COMMANDS {
            let mut s = DevAmi::new(Options::default());
            let inv = Invocation {
                spec,
                args: parse::Args::default(),
                object: None,
                spelling: parse::Spelling::Shell,
            };
            if let Err(e) = s.execute(&inv) {
                assert!(!e.to_string().contains("no implementation"), "{}: {e}", spec.name);
            }
        }
    }
}
