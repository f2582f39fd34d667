//! `devami __exec HOME ID`: a process in a local instance, attached to this process's standard
//! streams (what `exec` and `ssh` run, as `ssh host CMD` and `ssh host` would).
//!
//! It runs as `ubuntu` in `/home/ubuntu` (or the working directory given), with password-less
//! `sudo`, the embedded S3 endpoint's environment and `$DEVAMI_BLUEPRINT` passed on from the
//! shell; `--command` runs one bash command line (its own quotes and `;` mean what they mean to
//! bash), `--tty` an interactive login shell on a terminal in raw mode, restored on exit. The exit
//! status is the process's.

use std::io::{IsTerminal, Read, Write};
use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::engine::{Chunk, Engine, ExecSpec};
use super::error::LocalError;
use super::home::Home;
use super::instances::{self, PLUMBING_INSIDE};
use super::jobs::INSTANCE_PATH;
use crate::backend::InstanceState;

/// The user `exec` and `ssh` run as, and their home, as on the cloud's Ubuntu images.
pub const USER: &str = "ubuntu";
pub const USER_HOME: &str = "/home/ubuntu";

/// Goes to the working directory (`$1`, `~` being the user's home), then runs `$2` (or a shell).
const WRAPPER: &str = r#"wd=$1
case $wd in "~") wd=$HOME ;; "~/"*) wd=$HOME/${wd#"~/"} ;; esac
cd -- "$wd" 2>/dev/null || { echo "devami: working directory \`$1\` does not exist on instance $DEVAMI_INSTANCE_ID; create it first (e.g. \`mkdir -p $1\` in the instance)" >&2; exit 1; }
if [ $# -ge 2 ]; then exec bash -c "$2"; fi
exec bash -l
"#;

/// Variables passed on from the shell to the process.
const PASSED: &[&str] = &[
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "DEVAMI_BLUEPRINT",
    "TERM",
];

/// The environment of `exec` and `ssh` inside an instance.
fn environment(instance: &str) -> Vec<String> {
    let mut env: Vec<String> =
        PASSED.iter().filter_map(|k| std::env::var(k).ok().map(|v| format!("{k}={v}"))).collect();
    env.extend([
        format!("HOME={USER_HOME}"),
        format!("USER={USER}"),
        format!("LOGNAME={USER}"),
        format!("PATH={INSTANCE_PATH}"),
        "LANG=C.UTF-8".to_string(),
        format!("DEVAMI_INSTANCE_ID={instance}"),
        format!("DEVAMI_INSTANCE_DIR={PLUMBING_INSIDE}"),
        // The blueprint's repository is owned by the developer, not by `ubuntu`: git may read it.
        "GIT_CONFIG_COUNT=1".to_string(),
        "GIT_CONFIG_KEY_0=safe.directory".to_string(),
        "GIT_CONFIG_VALUE_0=*".to_string(),
    ]);
    env
}

/// Runs the process; returns its exit status (1 when devami could not run it).
pub fn main(home_root: &Path, instance: &str, cwd: &str, command: Option<&str>, tty: bool) -> i32 {
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return 1;
        }
    };
    match rt.block_on(run(home_root, instance, cwd, command, tty)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

async fn run(
    home_root: &Path,
    instance: &str,
    cwd: &str,
    command: Option<&str>,
    tty: bool,
) -> Result<i32, LocalError> {
    let home = Home::at(home_root.to_path_buf())?;
    let engine = Engine::connect(&home).await?;
    let meta = instances::describe(&home, &engine, instance).await?;
    if meta.state != InstanceState::Running {
        return Err(LocalError::EngineConflict {
            op: "running a command",
            message: format!("instance `{instance}` is {}; start it with `start_devinstance`", meta.state),
        });
    }
    let container = meta.container.unwrap_or_else(|| instances::container_name(instance));
    let mut cmd = vec!["/bin/sh".to_string(), "-c".into(), WRAPPER.into(), "sh".into(), cwd.to_string()];
    cmd.extend(command.map(str::to_string));
    let tty = tty && std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let spec =
        ExecSpec { cmd, user: USER.into(), env: environment(instance), working_dir: None, tty, stdin: tty };
    let mut attached = engine.exec(&container, &spec).await?;
    let _raw = tty.then(RawMode::enter).flatten();
    if tty {
        resize(&engine, &attached.exec_id).await;
        if let Some(mut input) = attached.input.take() {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut stdin = std::io::stdin();
                while let Ok(n) = stdin.read(&mut buf) {
                    if n == 0 || tx.blocking_send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            });
            tokio::spawn(async move {
                while let Some(bytes) = rx.recv().await {
                    if input.write_all(&bytes).await.is_err() || input.flush().await.is_err() {
                        break;
                    }
                }
            });
        }
    }
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    let mut size = terminal_size();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            chunk = attached.output.next() => match chunk {
                Some(Ok(Chunk::Stdout(b))) => { let _ = out.write_all(&b); let _ = out.flush(); }
                Some(Ok(Chunk::Stderr(b))) => { let _ = err.write_all(&b); let _ = err.flush(); }
                Some(Err(e)) => return Err(e),
                None => break,
            },
            _ = tick.tick(), if tty => {
                let now = terminal_size();
                if now != size {
                    size = now;
                    resize(&engine, &attached.exec_id).await;
                }
            }
        }
    }
    let code = engine.finished_code(&attached.exec_id).await?;
    Ok(i32::try_from(code).unwrap_or(1))
}

fn terminal_size() -> Option<(u16, u16)> {
    let mut ws = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ writes into the struct we own.
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    (ok && ws.ws_row > 0).then_some((ws.ws_row, ws.ws_col))
}

async fn resize(engine: &Engine, exec_id: &str) {
    if let Some((rows, cols)) = terminal_size() {
        let _ = engine.resize(exec_id, rows, cols).await;
    }
}

/// The terminal in raw mode while it lives; restored on drop.
struct RawMode {
    saved: libc::termios,
}

impl RawMode {
    fn enter() -> Option<RawMode> {
        // SAFETY: tcgetattr/tcsetattr on stdin with termios structs we own.
        unsafe {
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(libc::STDIN_FILENO, &mut saved) != 0 {
                return None;
            }
            let mut raw = saved;
            libc::cfmakeraw(&mut raw);
            if libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &raw) != 0 {
                return None;
            }
            Some(RawMode { saved })
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restores the attributes read in `enter`.
        unsafe {
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.saved);
        }
    }
}
