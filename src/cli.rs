//! The process command line: which mode to run and with which options.
//!
//! `devami [DIR]` opens the shell (or runs stdin as a script when it is not a terminal),
//! `devami [DIR] -c 'cmd; cmd'` runs one-shots, `devami run FILE`, `devami tutorial FILE.md`,
//! `devami check DIR...` and `devami init NAME`. DIR defaults to the current folder when it holds
//! a blueprint. Everything after option parsing is shared with the shell: the same session, the
//! same commands, the same output. Exit statuses are documented in `docs/backends-and-configuration.md`.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::backend::BackendKind;
use crate::blueprint::BLUEPRINT_FILE;
use crate::blueprint::lint;
use crate::blueprint::scaffold;
use crate::console::Console;
use crate::error::{Error, Result};
use crate::frontend::record;
use crate::frontend::script::{self, RunOptions};
use crate::frontend::shell;
use crate::frontend::tutorial::{self, PlayOptions};
use crate::interrupt;
use crate::parse;
use crate::session::{DevAmi, OnExit, Options};
use crate::transcript::{self, Kind, Step};

/// devami: the NeuroCAAS developer shell.
#[derive(Debug, Parser)]
#[command(name = "devami", version, about)]
#[command(after_help = "Run `devami DIR` and type `help` for the shell's commands.")]
pub struct Cli {
    /// Blueprint folder to open (default: the current folder, when it holds a blueprint).
    pub dir: Option<PathBuf>,
    /// Run these commands (separated by `;`) and exit.
    #[arg(short = 'c', long = "command", value_name = "COMMANDS")]
    pub command: Option<String>,
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub mode: Option<Mode>,
}

/// Options every mode accepts.
#[derive(Debug, Args, Clone)]
pub struct Global {
    /// Where instances, images and jobs live.
    #[arg(long, global = true, default_value = "local", value_parser = parse_backend, env = "DEVAMI_BACKEND")]
    pub backend: BackendKind,
    /// Answer yes to every confirmation (needed for confirmations in scripts).
    #[arg(long, short = 'y', global = true)]
    pub yes: bool,
    /// In scripts and one-shots, go on after a failed command.
    #[arg(long, global = true)]
    pub keep_going: bool,
    /// What to do with a running instance when the session ends: `ask` (at a terminal; scripts
    /// leave it running and say so), `leave`, `stop` or `terminate`.
    #[arg(long, global = true, value_name = "ACTION", default_value = "ask", value_parser = parse_on_exit, env = "DEVAMI_ON_EXIT")]
    pub on_exit: OnExit,
    /// AWS: the shared-config profile to use (also SSO profiles).
    #[arg(long, global = true, env = "AWS_PROFILE", hide_env_values = true)]
    pub profile: Option<String>,
    /// AWS: the region (default: the blueprint's REGION).
    #[arg(long, global = true)]
    pub region: Option<String>,
    /// AWS: an AWS-compatible endpoint (S3 is then addressed path-style).
    #[arg(long, global = true, env = "AWS_ENDPOINT_URL")]
    pub endpoint_url: Option<String>,
    /// AWS: the ssh private key for `ssh` and `exec` (default: $DEVAMI_SSH_KEY, else ~/.ssh/<KEY_NAME>.pem).
    #[arg(long, global = true, value_name = "PATH")]
    pub key: Option<PathBuf>,
    /// AWS: the ssh user (default: guessed from the image: ec2-user, centos, admin, else ubuntu).
    #[arg(long, global = true, value_name = "USER")]
    pub ssh_user: Option<String>,
    /// Record every command the session runs, with its output, to FILE as a transcript that
    /// `devami run --check FILE` replays (ids, UUIDs, times and hashes become wildcards); a FILE
    /// ending in `.md` becomes a tutorial skeleton for `devami tutorial`. A new FILE is created
    /// atomically; an existing one is appended to. Each command is written as soon as it ends.
    #[arg(long, global = true, value_name = "FILE")]
    pub record: Option<PathBuf>,
}

/// The modes besides the shell.
#[derive(Debug, Subcommand)]
pub enum Mode {
    /// Run a script or transcript (`-` reads stdin), echoing each command.
    Run {
        /// The script (`*.devami`, plain commands or a transcript) or markdown file.
        file: PathBuf,
        /// Blueprint folder to open first.
        #[arg(long, short = 'd')]
        dir: Option<PathBuf>,
        /// Compare each command's output with the transcript and fail on a difference.
        #[arg(long)]
        check: bool,
    },
    /// Replay a markdown tutorial step by step.
    Tutorial {
        /// The tutorial (`*.md`).
        file: PathBuf,
        /// Blueprint folder to open first.
        #[arg(long, short = 'd')]
        dir: Option<PathBuf>,
        /// Run every step without pausing.
        #[arg(long)]
        auto: bool,
        /// Start at this step (1-based).
        #[arg(long, default_value_t = 1, value_name = "N")]
        from: usize,
    },
    /// Lint blueprint folders the way a reviewer would (exit status 1 on any error).
    Check {
        /// Blueprint folders.
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
    },
    /// The embedded S3 endpoint of the local backend (started by devami itself).
    #[command(name = "__s3d", hide = true)]
    S3d { home: PathBuf },
    /// Print the command reference (docs/commands.md) generated from the command table.
    #[command(name = "__reference", hide = true)]
    Reference,
    /// The supervisor of one local job (started by devami itself).
    #[command(name = "__job", hide = true)]
    Job { home: PathBuf, command_id: String },
    /// The builder of a pending local image: commits its instance (started by devami itself).
    #[command(name = "__build", hide = true)]
    Build { home: PathBuf, id: String },
    /// A process in a local instance, attached to this terminal (`exec` and `ssh` run it).
    #[command(name = "__exec", hide = true)]
    Exec {
        home: PathBuf,
        instance: String,
        /// Working directory inside (`~` is the user's home).
        #[arg(long, default_value = "~")]
        cwd: String,
        /// The command, run by bash; without it, an interactive login shell.
        #[arg(long)]
        command: Option<String>,
        /// Give the process a terminal (the interactive shell).
        #[arg(long)]
        tty: bool,
    },
    /// Create a new blueprint folder (what configure.sh did).
    Init {
        /// Name: lowercase letters, digits and dashes.
        name: String,
        /// Parent folder for the new blueprint.
        #[arg(long, short = 'd', default_value = ".")]
        dir: PathBuf,
    },
}

fn parse_backend(s: &str) -> std::result::Result<BackendKind, String> {
    s.parse()
}

/// Runs devami with these process arguments; returns the exit status.
pub fn main<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    interrupt::install();
    let mut console = Console::default();
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            console.error(&e);
            e.exit_code()
        }
    }
}

fn parse_on_exit(s: &str) -> std::result::Result<OnExit, String> {
    s.parse()
}

fn dispatch(cli: Cli) -> Result<i32> {
    // Options go before a mode as well as after it (`devami --backend aws run FILE`, as with
    // `git -C` or `cargo --locked`); a blueprint folder or `-c` does not go with a mode.
    if cli.mode.is_some() && (cli.dir.is_some() || cli.command.is_some()) {
        let given = if cli.command.is_some() { "`-c`" } else { "a blueprint folder" };
        return Err(Error::ModeConflict { given });
    }
    let g = cli.global;
    let stdin_tty = std::io::stdin().is_terminal();
    let aws = crate::backend::aws::AwsOptions {
        profile: g.profile.clone(),
        region: g.region.clone(),
        endpoint_url: g.endpoint_url.clone(),
        key: g.key.clone(),
        ssh_user: g.ssh_user.clone(),
    };
    let opts = Options { backend: g.backend, yes: g.yes, interactive: stdin_tty, aws, on_exit: g.on_exit };
    let run_opts = |check| RunOptions { keep_going: g.keep_going, check };
    match cli.mode {
        Some(Mode::Check { dirs }) => Ok(check(&dirs)),
        Some(Mode::Reference) => {
            print!("{}", crate::commands::reference_markdown());
            Ok(0)
        }
        Some(Mode::S3d { home }) => Ok(crate::backend::local::s3::serve(&home)),
        Some(Mode::Job { home, command_id }) => {
            Ok(crate::backend::local::jobs::supervise(&home, &command_id))
        }
        Some(Mode::Build { home, id }) => Ok(crate::backend::local::images::build(&home, &id)),
        Some(Mode::Exec { home, instance, cwd, command, tty }) => {
            Ok(crate::backend::local::exec::main(&home, &instance, &cwd, command.as_deref(), tty))
        }
        Some(Mode::Init { name, dir }) => {
            let path = scaffold::init(&name, &dir)?;
            print!("{}", crate::output::Output::text(scaffold::render_created(&path)).render());
            Ok(0)
        }
        Some(Mode::Run { file, dir, check }) => {
            let steps = load_steps(&file)?;
            let mut session = session_for(opts, dir.as_deref(), g.record.as_deref())?;
            Ok(script::run(&mut session, &steps, run_opts(check)))
        }
        Some(Mode::Tutorial { file, dir, auto, from }) => {
            let text = read_text(&file)?;
            let t = transcript::parse(&text, Kind::Markdown)?;
            let mut session = session_for(opts, dir.as_deref(), g.record.as_deref())?;
            let mut stdin = std::io::stdin().lock();
            Ok(tutorial::play(&mut session, &t, PlayOptions { auto, from }, &mut stdin))
        }
        None => {
            let mut session = session_for(opts, cli.dir.as_deref(), g.record.as_deref())?;
            if let Some(commands) = cli.command {
                let steps: Vec<Step> = parse::split_commands(&commands)
                    .into_iter()
                    .enumerate()
                    .map(|(i, input)| Step {
                        number: i + 1,
                        line: 1,
                        input,
                        expected: None,
                        prose: String::new(),
                        run: true,
                    })
                    .collect();
                return Ok(script::run(&mut session, &steps, run_opts(false)));
            }
            if stdin_tty {
                return Ok(shell::run(&mut session));
            }
            let text = text_from(read_stdin()?, "stdin")?;
            let t = transcript::parse(&text, Kind::Script)?;
            Ok(script::run(&mut session, &t.steps, run_opts(false)))
        }
    }
}

/// Opens `dir`, or the current folder when it holds a blueprint, or nothing; starts `--record`.
fn session_for(opts: Options, dir: Option<&Path>, record: Option<&Path>) -> Result<DevAmi> {
    if let Some(path) = record {
        record::start(path)?;
        if let Some(d) = dir {
            let mut session = DevAmi::new(opts);
            record::open_recorded(&mut session, d)?;
            return Ok(session);
        }
    }
    match dir {
        Some(d) => DevAmi::open(opts, d),
        None if Path::new(BLUEPRINT_FILE).is_file() => DevAmi::open(opts, Path::new(".")),
        None => Ok(DevAmi::new(opts)),
    }
}

/// A script, transcript or page: stdin for `-`, else a regular file (a FIFO or a device is
/// refused rather than waited on).
fn read_text(path: &Path) -> Result<String> {
    let bytes = if path.as_os_str() == "-" {
        read_stdin()?
    } else {
        crate::regular::read(path).map_err(|e| Error::io("read", path, e))?
    };
    text_from(bytes, &path.display().to_string())
}

fn read_stdin() -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::io::stdin().read_to_end(&mut bytes).map_err(|e| Error::io("read", "stdin", e))?;
    Ok(bytes)
}

/// The text of a script, transcript or page, or a usage error (status 2: the input cannot be
/// understood) when it is not UTF-8 or [looks binary](transcript::binary_at).
fn text_from(bytes: Vec<u8>, shown: &str) -> Result<String> {
    let text = String::from_utf8(bytes)
        .map_err(|e| Error::NotText { file: shown.to_string(), byte: e.utf8_error().valid_up_to() })?;
    match transcript::binary_at(text.as_bytes()) {
        Some(at) => Err(transcript::binary_file(shown, text.as_bytes(), at)),
        None => Ok(text),
    }
}

fn load_steps(path: &Path) -> Result<Vec<Step>> {
    let text = read_text(path)?;
    Ok(transcript::parse(&text, transcript::kind_for_path(path))?.steps)
}

fn check(dirs: &[PathBuf]) -> i32 {
    let results: Vec<(PathBuf, Vec<lint::Finding>)> =
        dirs.iter().map(|d| (d.clone(), lint::check_dir(d))).collect();
    for (dir, findings) in &results {
        print!("{}", crate::output::Output::text(lint::render(dir, findings)).render());
    }
    if results.len() > 1 {
        print!("{}", crate::output::Output::text(lint::render_summary(&results)).render());
    }
    let errors = results.iter().flat_map(|(_, f)| f).filter(|f| f.severity == lint::Severity::Error).count();
    i32::from(errors > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_must_be_text_and_bad_bytes_are_status_2() {
        assert_eq!(text_from(b"status\n".to_vec(), "s").unwrap(), "status\n");
        // A lone NUL is the line's problem (the parser names it), not the file's.
        assert_eq!(text_from(b"status\0\n".to_vec(), "s").unwrap(), "status\0\n");
        let e = text_from(b"\0\0\0".to_vec(), "p.md").unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("`p.md` looks like a binary file (NUL bytes at line 1)"), "{e}");
        let e = text_from(b"status\n\xff\xfe\n".to_vec(), "stdin").unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("`stdin` is not a text file (invalid UTF-8 at byte 7)"), "{e}");
    }

    #[test]
    fn a_script_that_is_a_fifo_is_refused_without_blocking() {
        let tmp = tempfile::tempdir().unwrap();
        let fifo = tmp.path().join("s.devami");
        crate::state::make_fifo(&fifo);
        let e = read_text(&fifo).unwrap_err();
        assert!(crate::console::render_error(&e).contains("a named pipe (FIFO), not a regular file"), "{e}");
    }
}
