//! The `DevAmi` session: one blueprint folder, its persistent state and the commands on them.
//!
//! A [`DevAmi`] is what `NeuroCaaSAMI(path)` was in the original: it holds the blueprint, the
//! session state (current instance, histories, saved flag, address) and, once a command needs
//! one, the backend. Front ends (shell, script runner, tutorial player, one-shots) hand it lines;
//! [`DevAmi::execute_line`] parses them and runs the handler the command table names
//! (`crate::commands`). State is persisted after every command that changed it, and commands that
//! wait persist before waiting.

use std::path::Path;
use std::time::Duration;

use std::future::Future;

use crate::backend::{Backend, BackendError, BackendKind, InstanceState};
use crate::blueprint::Blueprint;
use crate::clock;
use crate::commands;
use crate::console::Console;
use crate::error::{Error, Result};
use crate::interrupt;
use crate::output::Output;
use crate::parse::{self, Invocation, Line};
use crate::pricing;
use crate::state::{SeenState, State, StateStore};

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
    /// Set by `exit` for the command that is running.
    exiting: bool,
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

    /// Runs one backend call to completion; Ctrl-C abandons the wait for it (not the operation),
    /// and a transfer the backend stopped for Ctrl-C is [`Error::Interrupted`] too.
    pub(crate) fn call<T>(
        &self,
        op: &'static str,
        fut: impl Future<Output = std::result::Result<T, BackendError>>,
    ) -> Result<T> {
        self.rt.block_on(async {
            tokio::select! {
                r = fut => r.map_err(|source| match source {
                    BackendError::Interrupted => Error::Interrupted,
                    source => Error::Backend { op, source },
                }),
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
            exiting: false,
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
            return Err(Error::BackendMismatch {
                dir: blueprint.dir().to_path_buf(),
                recorded: state.backend,
                given: self.opts.backend,
            });
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
                let running = rec.last_state == Some(SeenState::Cloud(InstanceState::Running));
                let st = rec.last_state.map_or("unknown", SeenState::as_str);
                let left = match rec.lifetime_left(clock::now()) {
                    Some(s) if running && s > 0 => format!(" {} left", clock::human_duration(s)),
                    Some(_) if running => " lifetime over".to_string(),
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
        if rec.last_state != Some(SeenState::Cloud(InstanceState::Running)) {
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
        if !rec.last_state.is_some_and(SeenState::is_billed) {
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
        let st = rec.last_state?;
        st.is_billed().then(|| {
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
            Line::Help(spec) => Ok(Output::Text(commands::help::text(spec)).into()),
            Line::Bind { name, path } => {
                self.open_blueprint(Path::new(&path))?;
                self.object = name;
                Ok(Output::Text(self.opened_message()).into())
            }
            Line::Command(inv) => {
                if let Some(obj) = inv.object.as_ref().filter(|o| **o != self.object && o != &DEFAULT_OBJECT)
                {
                    return Err(Error::UnknownObject {
                        name: obj.clone(),
                        object: self.object.clone(),
                        command: inv.spec.name,
                    });
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

    /// Runs a parsed command: its handler from the command table.
    pub fn execute(&mut self, inv: &Invocation) -> Result<Outcome> {
        self.exiting = false;
        let output = (inv.spec.run)(self, &inv.args)?;
        let flow = if std::mem::take(&mut self.exiting) { Flow::Exit } else { Flow::Continue };
        Ok(Outcome { output, flow })
    }

    /// Ends the session after the running command (`exit`).
    pub(crate) fn request_exit(&mut self) {
        self.exiting = true;
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
    pub(crate) fn connect(&mut self) -> Result<&Cloud> {
        if self.cloud.is_none() {
            let backend: Box<dyn Backend> = match self.opts.backend {
                BackendKind::Local => Box::new(crate::backend::local::LocalBackend::from_env()?),
                BackendKind::Aws => {
                    let bp = self.bp()?;
                    let (region, key) = (bp.region().map(str::to_string), bp.key_name().map(str::to_string));
                    let rt = runtime()?;
                    let connect =
                        crate::backend::aws::AwsBackend::connect(self.opts.aws.clone(), region, key);
                    let backend = rt.block_on(async {
                        tokio::select! {
                            r = connect => r.map_err(|source| match source {
                                BackendError::Credentials { message, hint } => {
                                    Error::NoCredentials { message, hint }
                                }
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
        self.blueprint.as_ref().ok_or(Error::NoBlueprint)
    }

    /// Mutable access to the open blueprint.
    pub(crate) fn bp_mut(&mut self) -> Result<&mut Blueprint> {
        self.blueprint.as_mut().ok_or(Error::NoBlueprint)
    }

    /// Resolves a job index as Python indexes a list: 0 is the first job, -1 the most recent.
    pub fn job_index(&self, index: i64) -> Result<usize> {
        self.bp()?;
        let n = self.state.jobs.len();
        let resolved = if index < 0 { n as i64 + index } else { index };
        if resolved < 0 || resolved >= n as i64 {
            return Err(Error::NoSuchJob { index, jobs: n });
        }
        Ok(resolved as usize)
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

    pub(crate) fn opened_message(&self) -> String {
        let Some(bp) = &self.blueprint else { return String::new() };
        let name = bp.pipeline_name().map(str::to_string).unwrap_or_else(|_| "(no PipelineName)".into());
        let mut msg =
            format!("opened blueprint `{name}` in `{}` (backend {})", bp.dir().display(), self.opts.backend);
        if let Some(rec) = self.state.current() {
            msg.push_str(&format!(
                "\nresuming: current instance {} (last seen {})",
                rec.id,
                rec.last_state.map_or("in an unknown state", SeenState::as_str)
            ));
        }
        msg
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
}

/// Whether two paths name the same folder (symlinks and `..` resolved where they exist).
fn same_folder(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}
