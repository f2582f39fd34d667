//! Starting processes that outlive the shell: job supervisors, image builders, the S3 endpoint's
//! and the engine's services.

use std::fs::OpenOptions;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Error, Result};

/// Starts `cmd` in a session of its own with init as its parent (through a second fork), stdin
/// from /dev/null, stdout and stderr appended to `log`, in `/`: the shell can exit (or be killed)
/// without taking the process along, and leaves no zombie behind. The process keeps none of the
/// developer's `AWS_*` settings or secrets.
pub fn spawn_detached(mut cmd: Command, log: &Path) -> Result<()> {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("AWS_") {
            cmd.env_remove(name);
        }
    }
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

/// `devami` itself, to start one of its hidden subcommands.
pub fn devami_exe() -> Result<PathBuf> {
    std::env::current_exe().map_err(|e| Error::io("find", "the devami executable", e))
}

/// The process at work on a pending resource (a launch, an image's commit).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Builder {
    pub pid: u32,
    /// When it took the work on, epoch seconds of the wall clock.
    pub since: i64,
}

impl Builder {
    /// This process, from now.
    pub fn me() -> Builder {
        use std::time::{SystemTime, UNIX_EPOCH};
        let since = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        Builder { pid: std::process::id(), since: i64::try_from(since).unwrap_or(i64::MAX) }
    }

    /// Whether the builder may still be at work: its process lives and started before it took
    /// the work on (a later process with the same pid is not the builder).
    pub fn alive(&self) -> bool {
        use std::time::{Duration, UNIX_EPOCH};
        let since = UNIX_EPOCH + Duration::from_secs(u64::try_from(self.since).unwrap_or(0));
        crate::process::may_still_write(self.pid, since)
    }
}
