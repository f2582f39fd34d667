//! How a process runs "inside" a local instance: a bubblewrap sandbox where the instance's folder
//! is `/home/ubuntu`, or, without bubblewrap, a plain process whose `HOME` is that folder.
//!
//! With bubblewrap ([`Sandbox::Bwrap`]) the process sees the host system read-write as a cloud VM
//! sees its own disk (`--dev-bind / /`, same users, same processes, same network), a private
//! `/home` (a tmpfs) in which the instance's `root/` is `/home/ubuntu`, the devami shims at
//! `/home/.devami/shims` and the instance's folder at `/home/.devami/instance`. Other users' homes
//! are hidden, and nothing is ever created on the host's `/home`. The host's power commands
//! (`shutdown`, `poweroff`, `halt`, `reboot`, `telinit`, `systemctl`) and `sudo` are covered by
//! the shims wherever they exist on the host (bound read-only over the files the host's paths
//! resolve to), `CAP_SYS_BOOT` is dropped when running as root and `/proc/sysrq-trigger` is
//! read-only, so a job cannot shut down the host: `shutdown -h 1` records a stop request in the
//! instance's folder (`stop-requested`) and devami stops the *instance* (see `jobrunner.rs`).
//! A host file is covered only when its real name is one of those commands (a host whose
//! `poweroff` is a link to busybox relies on the `PATH` shims and on the dropped capability).
//! There is no PID namespace: the instance's processes are ordinary host processes, marked by
//! `DEVAMI_INSTANCE_ID` in their environment (which is how stop and terminate find them all).
//!
//! Without bubblewrap ([`Sandbox::HomeOnly`]) `HOME` is the instance's folder on the host, `~`
//! paths resolve there, and `/home/ubuntu` means the same folder when it is a working directory;
//! the shims come first on `PATH`. As root, each process also gets a private mount namespace where
//! the shims cover the host's power commands and `CAP_SYS_BOOT` is dropped (best effort).
//!
//! Every process gets a fresh, VM-like environment rather than the developer's: `HOME`, `USER` and
//! `LOGNAME` (`ubuntu`), `SHELL`, `PATH` (shims first, then the host's `PATH`), locale, terminal
//! and proxy variables, `DEVAMI_INSTANCE_ID`, `DEVAMI_INSTANCE_DIR`, and the endpoint environment
//! the caller passes (`AWS_ENDPOINT_URL`, credentials, region). The developer's own AWS
//! credentials and profile never reach an instance.
//!
//! The `sudo` shim accepts the usual forms (`sudo [-u USER] [-E] [-H] [-i] [-n] [--] CMD ...`,
//! `sudo -s`, `sudo -i`, `sudo bash -c ...`) and runs the command as the same user: there is no
//! real change of privilege, `HOME` stays the instance's home and `USER` becomes the target user.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::localhome::Home;

/// Where the instance's home appears inside the sandbox.
pub const INSTANCE_HOME: &str = "/home/ubuntu";
/// Where the shims appear inside the bubblewrap sandbox.
pub const SHIMS_INSIDE: &str = "/home/.devami/shims";
/// Where the instance's folder appears inside the bubblewrap sandbox.
pub const INSTANCE_DIR_INSIDE: &str = "/home/.devami/instance";
/// The file the power shims write, in the instance's folder.
pub const STOP_MARKER: &str = "stop-requested";

/// `CAP_SYS_BOOT` (linux/capability.h), which the libc crate does not name.
const CAP_SYS_BOOT: libc::c_ulong = 22;

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The host paths of power commands and `sudo` that the shims cover inside an instance.
const HOST_COMMANDS: &[&str] = &[
    "/sbin/shutdown",
    "/usr/sbin/shutdown",
    "/sbin/poweroff",
    "/usr/sbin/poweroff",
    "/sbin/halt",
    "/usr/sbin/halt",
    "/sbin/reboot",
    "/usr/sbin/reboot",
    "/sbin/telinit",
    "/usr/sbin/telinit",
    "/bin/systemctl",
    "/usr/bin/systemctl",
    "/bin/sudo",
    "/usr/bin/sudo",
];

/// The names the shims answer to (a host file is covered only when its real name is one of them,
/// so that a multi-call binary such as busybox is never shadowed as a whole).
const POWER_NAMES: &[&str] = &["shutdown", "poweroff", "halt", "reboot", "telinit", "systemctl"];

/// Environment variables passed from the caller to processes inside an instance.
const PASSED_ENV: &[&str] = &[
    "LANG",
    "LANGUAGE",
    "TZ",
    "TERM",
    "COLORTERM",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
];

/// How processes of instances are isolated on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sandbox {
    /// bubblewrap at this path works: the instance's folder is `/home/ubuntu`.
    Bwrap(PathBuf),
    /// No sandbox: the instance's folder is `HOME`, for the reason given.
    HomeOnly { reason: String },
}

impl Sandbox {
    /// The warning callers print when there is no sandbox, naming where the instance's files are.
    pub fn warning(&self, root: &Path) -> Option<String> {
        match self {
            Sandbox::Bwrap(_) => None,
            Sandbox::HomeOnly { reason } => Some(format!(
                "no sandbox ({reason}): the instance's files are at HOME={}, not {INSTANCE_HOME}",
                root.display()
            )),
        }
    }
}

/// What a process inside an instance needs to know about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceEnv {
    pub instance_id: String,
    /// `instances/<id>/root`, the instance's `/home/ubuntu`.
    pub root: PathBuf,
    /// `instances/<id>`.
    pub instance_dir: PathBuf,
    /// The shims folder (from [`install_shims`]).
    pub shims: PathBuf,
    /// The endpoint environment (`AWS_ENDPOINT_URL`, credentials, region) and any extra variables.
    pub env: Vec<(String, String)>,
    /// A host folder made readable inside at its own path (the blueprint, for `exec` and `ssh`;
    /// never for jobs), even when it lives under the hidden `/home`.
    pub visible: Option<PathBuf>,
}

/// Finds out whether bubblewrap works here. `DEVAMI_SANDBOX=none` forces the fallback.
pub fn detect() -> Sandbox {
    if std::env::var("DEVAMI_SANDBOX").is_ok_and(|v| v == "none") {
        return Sandbox::HomeOnly { reason: "DEVAMI_SANDBOX=none".into() };
    }
    let Some(bwrap) = find_on_path("bwrap") else {
        return Sandbox::HomeOnly { reason: "bubblewrap missing: apt-get install bubblewrap".into() };
    };
    let trial = Command::new(&bwrap)
        .args(["--dev-bind", "/", "/", "--tmpfs", "/home", "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    match trial {
        Ok(out) if out.status.success() => Sandbox::Bwrap(bwrap),
        Ok(out) => {
            let msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
            let msg = if msg.is_empty() { format!("exit status {}", out.status) } else { msg };
            Sandbox::HomeOnly { reason: format!("bubblewrap cannot create a sandbox here: {msg}") }
        }
        Err(e) => {
            Sandbox::HomeOnly { reason: format!("bubblewrap at `{}` cannot run: {e}", bwrap.display()) }
        }
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into());
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// The command that runs `argv` inside the instance, in `working_directory` (see
/// [`resolve_working_directory`]), with the instance's environment. Stdio and process group are
/// left to the caller.
pub fn command(
    sb: &Sandbox,
    ienv: &InstanceEnv,
    working_directory: &str,
    argv: &[String],
) -> Result<Command> {
    let Some((program, args)) = argv.split_first() else {
        return Err(Error::Refused("no command to run in the instance".into()));
    };
    if !ienv.root.is_dir() {
        return Err(Error::Refused(format!(
            "the home of instance `{}` is missing (`{}`); stop and start the instance",
            ienv.instance_id,
            ienv.root.display()
        )));
    }
    let wd = resolve_working_directory(sb, ienv, working_directory)?;
    let covered = host_commands_to_cover(&ienv.shims);
    // SAFETY: geteuid has no preconditions.
    let root_user = unsafe { libc::geteuid() } == 0;
    let mut cmd = match sb {
        Sandbox::Bwrap(bwrap) => {
            let mut cmd = Command::new(bwrap);
            cmd.args(["--dev-bind", "/", "/", "--tmpfs", "/home"]);
            cmd.arg("--bind").arg(&ienv.root).arg(INSTANCE_HOME);
            cmd.arg("--ro-bind").arg(&ienv.shims).arg(SHIMS_INSIDE);
            cmd.arg("--bind").arg(&ienv.instance_dir).arg(INSTANCE_DIR_INSIDE);
            for (shim, target) in &covered {
                cmd.arg("--ro-bind").arg(shim).arg(target);
            }
            if let Some(dir) = &ienv.visible {
                cmd.arg("--ro-bind").arg(dir).arg(dir);
            }
            if root_user {
                // bubblewrap keeps a root caller's capabilities: drop them all, so a job cannot
                // read other processes' environments or undo the mounts that hide /home.
                cmd.args(["--cap-drop", "ALL"]);
                if Path::new("/proc/sysrq-trigger").exists() {
                    cmd.args(["--ro-bind", "/proc/sysrq-trigger", "/proc/sysrq-trigger"]);
                }
            }
            cmd.arg("--chdir").arg(&wd).arg("--").arg(program).args(args);
            cmd
        }
        Sandbox::HomeOnly { .. } => {
            let mut cmd = Command::new(program);
            cmd.args(args).current_dir(&wd);
            if root_user {
                protect_host(&mut cmd, &covered);
            }
            cmd
        }
    };
    cmd.env_clear();
    for (k, v) in environment(sb, ienv) {
        cmd.env(k, v);
    }
    Ok(cmd)
}

/// The environment of processes inside the instance (see the module documentation).
fn environment(sb: &Sandbox, ienv: &InstanceEnv) -> Vec<(String, String)> {
    let (home, shims, instance_dir) = match sb {
        Sandbox::Bwrap(_) => {
            (INSTANCE_HOME.to_string(), SHIMS_INSIDE.to_string(), INSTANCE_DIR_INSIDE.to_string())
        }
        Sandbox::HomeOnly { .. } => (
            ienv.root.display().to_string(),
            ienv.shims.display().to_string(),
            ienv.instance_dir.display().to_string(),
        ),
    };
    let host_path =
        std::env::var("PATH").ok().filter(|p| !p.is_empty()).unwrap_or_else(|| DEFAULT_PATH.into());
    let mut env = vec![
        ("HOME".to_string(), home),
        ("USER".to_string(), "ubuntu".to_string()),
        ("LOGNAME".to_string(), "ubuntu".to_string()),
        ("SHELL".to_string(), "/bin/bash".to_string()),
        ("PATH".to_string(), format!("{shims}:{host_path}")),
    ];
    for (k, v) in std::env::vars() {
        if PASSED_ENV.contains(&k.as_str()) || k.starts_with("LC_") {
            env.push((k, v));
        }
    }
    env.push(("DEVAMI_INSTANCE_ID".into(), ienv.instance_id.clone()));
    env.push(("DEVAMI_INSTANCE_DIR".into(), instance_dir));
    env.extend(ienv.env.iter().cloned());
    env
}

/// Where `wd` is for a process of the instance: `~`, `~/x`, `/home/ubuntu/x` and relative paths
/// are in the instance's home; other absolute paths are the host's (visible as on a VM, except
/// other folders of `/home` under bubblewrap). An empty `wd` is the home. The folder must exist,
/// as SSM requires; it is never created. The result is the path as the process sees it: inside
/// the sandbox for [`Sandbox::Bwrap`], on the host for [`Sandbox::HomeOnly`].
pub fn resolve_working_directory(sb: &Sandbox, ienv: &InstanceEnv, wd: &str) -> Result<PathBuf> {
    let trimmed = wd.trim();
    let inside = if trimmed.is_empty() || trimmed == "~" {
        PathBuf::from(INSTANCE_HOME)
    } else if let Some(rest) = trimmed.strip_prefix("~/") {
        Path::new(INSTANCE_HOME).join(rest)
    } else if trimmed.starts_with('~') {
        return Err(Error::Refused(format!(
            "working directory `{trimmed}`: only `~` (the instance's home, {INSTANCE_HOME}) is known on instance `{}`",
            ienv.instance_id
        )));
    } else {
        Path::new(INSTANCE_HOME).join(trimmed)
    };
    let inside = normalize(&inside);
    let bwrap = matches!(sb, Sandbox::Bwrap(_));
    let hidden = bwrap && inside.starts_with("/home") && inside != Path::new("/home") && !in_home(&inside);
    let host = host_path(ienv, &inside);
    let missing = || {
        let shown =
            if trimmed.starts_with(['~', '/']) { trimmed.to_string() } else { format!("~/{trimmed}") };
        Error::Refused(format!(
            "working directory `{trimmed}` does not exist on instance `{}`; create it first (e.g. `mkdir -p {shown}` in the instance)",
            ienv.instance_id
        ))
    };
    if hidden {
        return Err(missing());
    }
    match fs::metadata(&host) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(Error::Refused(format!(
                "working directory `{trimmed}` on instance `{}` is not a directory",
                ienv.instance_id
            )));
        }
        Err(_) => return Err(missing()),
    }
    Ok(if bwrap {
        inside
    } else if in_home(&inside) {
        host
    } else {
        inside
    })
}

fn in_home(p: &Path) -> bool {
    p.starts_with(INSTANCE_HOME)
}

/// Removes `.` and resolves `..` lexically in an absolute path.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// The host path of a path as the instance sees it, following symbolic links inside the
/// instance's home the way the instance would (an absolute link to `/home/ubuntu/...` stays in
/// the instance).
fn host_path(ienv: &InstanceEnv, inside: &Path) -> PathBuf {
    if !in_home(inside) {
        return inside.to_path_buf();
    }
    let mut hops = 0;
    let mut cur = PathBuf::from(INSTANCE_HOME);
    let mut rest: Vec<PathBuf> = inside
        .strip_prefix(INSTANCE_HOME)
        .map(|r| r.components().map(|c| PathBuf::from(c.as_os_str())).collect())
        .unwrap_or_default();
    rest.reverse();
    while let Some(part) = rest.pop() {
        if part.as_os_str() == ".." {
            cur.pop();
            continue;
        }
        let next = cur.join(&part);
        if !in_home(&next) {
            // Left the home: the rest is the host's.
            let mut p = next;
            while let Some(r) = rest.pop() {
                p.push(r);
            }
            return normalize(&p);
        }
        let host = ienv.root.join(next.strip_prefix(INSTANCE_HOME).unwrap_or(Path::new("")));
        match fs::read_link(&host) {
            Ok(target) if hops < 40 => {
                hops += 1;
                let resolved = if target.is_absolute() { target } else { cur.join(target) };
                let resolved = normalize(&resolved);
                if !in_home(&resolved) {
                    let mut p = resolved;
                    while let Some(r) = rest.pop() {
                        p.push(r);
                    }
                    return normalize(&p);
                }
                let mut parts: Vec<PathBuf> = resolved
                    .strip_prefix(INSTANCE_HOME)
                    .map(|r| r.components().map(|c| PathBuf::from(c.as_os_str())).collect())
                    .unwrap_or_default();
                parts.reverse();
                cur = PathBuf::from(INSTANCE_HOME);
                rest.extend(parts);
            }
            _ => cur = next,
        }
    }
    ienv.root.join(cur.strip_prefix(INSTANCE_HOME).unwrap_or(Path::new("")))
}

/// The host files the shims cover: `(shim, file)` for every host command of [`HOST_COMMANDS`]
/// that exists, by the file its path resolves to (`/sbin/shutdown` is often a link to
/// `systemctl`), once per file.
fn host_commands_to_cover(shims: &Path) -> Vec<(PathBuf, PathBuf)> {
    let mut out: Vec<(PathBuf, PathBuf)> = Vec::new();
    for p in HOST_COMMANDS {
        let Ok(target) = fs::canonicalize(p) else { continue };
        if !target.is_file() || out.iter().any(|(_, t)| *t == target) {
            continue;
        }
        let Some(name) = target.file_name().and_then(|n| n.to_str()) else { continue };
        if name == "sudo" || POWER_NAMES.contains(&name) {
            out.push((shims.join(name), target));
        }
    }
    out
}

/// As root without bubblewrap: a private mount namespace where the shims cover the host's power
/// commands, and no `CAP_SYS_BOOT`. Best effort: a failure leaves the `PATH` shims as the only
/// cover.
fn protect_host(cmd: &mut Command, covered: &[(PathBuf, PathBuf)]) {
    let binds: Vec<(CString, CString)> = covered
        .iter()
        .filter_map(|(s, t)| {
            Some((CString::new(s.as_os_str().as_bytes()).ok()?, CString::new(t.as_os_str().as_bytes()).ok()?))
        })
        .collect();
    let root = c"/";
    // SAFETY: the closure runs in the forked child before exec and only makes system calls
    // (unshare, mount, prctl) on memory prepared before the fork; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::unshare(libc::CLONE_NEWNS) == 0
                && libc::mount(
                    std::ptr::null(),
                    root.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) == 0
            {
                for (shim, target) in &binds {
                    if libc::mount(
                        shim.as_ptr(),
                        target.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND,
                        std::ptr::null(),
                    ) == 0
                    {
                        libc::mount(
                            std::ptr::null(),
                            target.as_ptr(),
                            std::ptr::null(),
                            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                            std::ptr::null(),
                        );
                    }
                }
            }
            libc::prctl(libc::PR_CAPBSET_DROP, CAP_SYS_BOOT, 0, 0, 0);
            Ok(())
        });
    }
}

/// The power shim: `shutdown`, `poweroff`, `halt`, `reboot`, `telinit` and `systemctl`, by the
/// name it is called by.
const POWER_SHIM: &str = r#"#!/bin/sh
# devami shim: power commands inside a local instance (written by devami; do not edit).
# A cloud VM stops when told to. A local instance records the request in
# $DEVAMI_INSTANCE_DIR/stop-requested; devami stops the instance when the job that asked ends
# (or at the time given, if the job is still running then). The host is never shut down.
name=${0##*/}
args="$*"
action=poweroff
when=now
usage() {
    echo "usage: $name [OPTIONS...] [TIME] [WALL...]"
    echo "devami: inside a local instance this stops the instance (not the host machine)"
}
case $name in
shutdown)
    when=+1
    while [ $# -gt 0 ]; do
        case $1 in
        -h|-P|--poweroff|-hP|-Ph) action=poweroff ;;
        -H|--halt) action=halt ;;
        -r|--reboot) action=reboot ;;
        -c) action=cancel ;;
        -k) action=wall ;;
        --help) usage; exit 0 ;;
        --no-wall|-f|-F|-n|-q|-a) ;;
        -t) shift ;;
        -*) echo "$name: unrecognized option '$1'" >&2; exit 1 ;;
        *) when=$1; shift; break ;;
        esac
        shift
    done ;;
poweroff|halt|reboot)
    action=$name
    for a in "$@"; do
        case $a in
        --help) usage; exit 0 ;;
        -p|--poweroff) action=poweroff ;;
        --halt) action=halt ;;
        --reboot) action=reboot ;;
        -w|--wtmp-only) exit 0 ;;
        esac
    done ;;
telinit|init)
    case ${1:-} in
    0) action=poweroff ;;
    6) action=reboot ;;
    --help) usage; exit 0 ;;
    *) echo "$name: runlevel '${1:-}' is not available inside a devami local instance" >&2; exit 1 ;;
    esac ;;
systemctl)
    verb=
    for a in "$@"; do
        case $a in
        --help) echo "systemctl (devami shim): only poweroff, halt, reboot and kexec are available inside a local instance"; exit 0 ;;
        -*) ;;
        *) verb=$a; break ;;
        esac
    done
    case $verb in
    poweroff|halt|reboot) action=$verb ;;
    kexec|soft-reboot) action=reboot ;;
    *)
        echo "System has not been booted with systemd as init system (PID 1). Can't operate." >&2
        echo "devami: \`systemctl $*\` is not available inside a local instance" >&2
        exit 1 ;;
    esac ;;
*)
    echo "devami shim: unknown name '$name'" >&2; exit 1 ;;
esac
dir=${DEVAMI_INSTANCE_DIR:-}
if [ -z "$dir" ] || [ ! -d "$dir" ]; then
    echo "$name: not inside a devami local instance (DEVAMI_INSTANCE_DIR unset); nothing was done" >&2
    exit 1
fi
marker=$dir/stop-requested
case $action in
cancel) rm -f "$marker"; exit 0 ;;
wall) exit 0 ;;
esac
now=$(date +%s)
case $when in
now) due=$now ;;
+*) m=${when#+}; case $m in ''|*[!0-9]*) echo "$name: failed to parse time specification: $when" >&2; exit 1 ;; esac; due=$((now + m * 60)) ;;
*:*) due=$(date -d "$when" +%s 2>/dev/null) || { echo "$name: failed to parse time specification: $when" >&2; exit 1; }
     if [ "$due" -lt "$now" ]; then due=$((due + 86400)); fi ;;
*[!0-9]*|'') echo "$name: failed to parse time specification: $when" >&2; exit 1 ;;
*) due=$((now + when * 60)) ;;
esac
line=$(printf '%s' "$name $args" | tr '\n' ' ')
tmp=$marker.tmp.$$
if ! { printf 'requested=%s\ndue=%s\naction=%s\ncommand=%s\n' "$now" "$due" "$action" "$line" > "$tmp" && mv -f "$tmp" "$marker"; }; then
    echo "$name: could not record the request in $marker" >&2
    exit 1
fi
if [ "$due" -gt "$now" ]; then
    case $action in reboot) what=Reboot ;; halt) what=Halt ;; *) what=Shutdown ;; esac
    at=$(date -d "@$due" '+%a %Y-%m-%d %H:%M:%S %Z' 2>/dev/null || echo "+$(( (due - now) / 60 )) min")
    echo "$what scheduled for $at, use 'shutdown -c' to cancel." >&2
fi
exit 0
"#;

/// The sudo shim: runs the command as the same user.
const SUDO_SHIM: &str = r#"#!/bin/sh
# devami shim: sudo inside a local instance (written by devami; do not edit).
# Accepts the usual forms and runs the command as the same user: there is no real change of
# privilege; HOME stays the instance's home and USER becomes the target user.
user=root
login=
shell=
usage() {
    echo "usage: sudo [-u user] [-E] [-H] [-i | -s] [-n] [--] command [args ...]"
    echo "devami: inside a local instance sudo runs the command as the same user"
}
while [ $# -gt 0 ]; do
    case $1 in
    --) shift; break ;;
    -u|--user) user=${2:-root}; shift ;;
    -u*) user=${1#-u} ;;
    --user=*) user=${1#--user=} ;;
    -g|-p|-C|-U|-r|-t|-T|-D|-R|--group|--prompt|--close-from|--other-user|--role|--type|--command-timeout|--chdir|--chroot) shift ;;
    --group=*|--prompt=*|--close-from=*|--other-user=*|--role=*|--type=*|--command-timeout=*|--chdir=*|--chroot=*) ;;
    --preserve-env|--preserve-env=*|--set-home|--non-interactive|--reset-timestamp|--stdin|--askpass|--background|--preserve-groups) ;;
    -i|--login) login=1 ;;
    -s|--shell) shell=1 ;;
    -v|--validate|-k|-K|--remove-timestamp) [ $# -eq 1 ] && exit 0 ;;
    -l|--list)
        echo "User ${USER:-ubuntu} may run the following commands on this host:"
        echo "    (ALL : ALL) NOPASSWD: ALL"
        exit 0 ;;
    -V|--version) echo "Sudo version 1.9 (devami shim: no change of privilege)"; exit 0 ;;
    -h|--help) usage; exit 0 ;;
    -?*)
        opts=${1#-}
        while [ -n "$opts" ]; do
            c=${opts%"${opts#?}"}
            opts=${opts#?}
            case $c in
            E|H|n|k|S|A|b|P) ;;
            i) login=1 ;;
            s) shell=1 ;;
            u) if [ -n "$opts" ]; then user=$opts; else user=${2:-root}; shift; fi; opts= ;;
            *) echo "sudo: invalid option -- '$c'" >&2; usage >&2; exit 1 ;;
            esac
        done ;;
    *) break ;;
    esac
    shift
done
SUDO_USER=${USER:-ubuntu}
SUDO_UID=$(id -u)
SUDO_GID=$(id -g)
SUDO_COMMAND="$*"
USER=$user
LOGNAME=$user
export SUDO_USER SUDO_UID SUDO_GID SUDO_COMMAND USER LOGNAME
sh_=${SHELL:-/bin/bash}
if [ $# -eq 0 ]; then
    if [ -n "$login" ]; then cd "$HOME" 2>/dev/null; exec "$sh_" -l; fi
    if [ -n "$shell" ]; then exec "$sh_"; fi
    usage >&2
    exit 1
fi
if [ -n "$login" ]; then cd "$HOME" 2>/dev/null; exec "$sh_" -l -c "$*"; fi
if [ -n "$shell" ]; then exec "$sh_" -c "$*"; fi
exec "$@"
"#;

/// Writes the shims into `home.shims_dir()` (only those whose content changed, each atomically,
/// executable) and returns the folder.
pub fn install_shims(home: &Home) -> Result<PathBuf> {
    let dir = home.shims_dir();
    fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
    let mut files: Vec<(&str, &str)> = POWER_NAMES.iter().map(|n| (*n, POWER_SHIM)).collect();
    files.push(("sudo", SUDO_SHIM));
    for (name, text) in files {
        let path = dir.join(name);
        let current = fs::read(&path).ok();
        let mode_ok = fs::metadata(&path).is_ok_and(|m| m.permissions().mode() & 0o777 == 0o755);
        if current.as_deref() == Some(text.as_bytes()) && mode_ok {
            continue;
        }
        write_executable(&path, text.as_bytes()).map_err(|e| Error::io("write", &path, e))?;
    }
    Ok(dir)
}

fn write_executable(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // Unique per process and per call: threads of one process may install the shims together.
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.tmp-{}-{seq}", std::process::id()));
    let result = (|| {
        fs::write(&tmp, bytes)?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixture {
        _tmp: tempfile::TempDir,
        home: Home,
    }

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let home = Home::at(tmp.path().to_path_buf()).unwrap();
        Fixture { _tmp: tmp, home }
    }

    fn ienv(home: &Home, id: &str) -> InstanceEnv {
        let dir = home.instance_dir(id);
        fs::create_dir_all(dir.join("root")).unwrap();
        InstanceEnv {
            instance_id: id.into(),
            root: dir.join("root"),
            instance_dir: dir,
            shims: install_shims(home).unwrap(),
            env: vec![("AWS_ENDPOINT_URL".into(), "http://127.0.0.1:1".into())],
            visible: None,
        }
    }

    fn run(sb: &Sandbox, ienv: &InstanceEnv, wd: &str, script: &str) -> (i32, String, String) {
        let argv = vec!["bash".to_string(), "-c".to_string(), script.to_string()];
        let out = command(sb, ienv, wd, &argv).unwrap().stdin(Stdio::null()).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn bwrap() -> Option<Sandbox> {
        match detect() {
            sb @ Sandbox::Bwrap(_) => Some(sb),
            Sandbox::HomeOnly { reason } => {
                eprintln!("skipping the bubblewrap part: {reason}");
                None
            }
        }
    }

    #[test]
    fn shims_are_written_once_and_executable() {
        let f = fixture();
        let dir = install_shims(&f.home).unwrap();
        for name in ["shutdown", "poweroff", "halt", "reboot", "systemctl", "telinit", "sudo"] {
            let m = fs::metadata(dir.join(name)).unwrap();
            assert_eq!(m.permissions().mode() & 0o777, 0o755, "{name}");
        }
        let before = fs::metadata(dir.join("sudo")).unwrap().modified().unwrap();
        install_shims(&f.home).unwrap();
        assert_eq!(fs::metadata(dir.join("sudo")).unwrap().modified().unwrap(), before);
        let names = fs::read_dir(&dir).unwrap().count();
        assert_eq!(names, 7, "no temporary files are left");
    }

    #[test]
    fn shims_can_be_installed_by_many_threads_at_once() {
        let f = fixture();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let home = f.home.clone();
                std::thread::spawn(move || {
                    for _ in 0..20 {
                        let _ = fs::remove_file(home.shims_dir().join("sudo"));
                        install_shims(&home).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(fs::read_to_string(f.home.shims_dir().join("sudo")).unwrap(), SUDO_SHIM);
    }

    #[test]
    fn working_directories_resolve_inside_the_instance() {
        let f = fixture();
        let ie = ienv(&f.home, "i-0000000000000000a");
        fs::create_dir_all(ie.root.join("bin")).unwrap();
        std::os::unix::fs::symlink("/home/ubuntu/bin", ie.root.join("link")).unwrap();
        let bw = Sandbox::Bwrap("/usr/bin/bwrap".into());
        let ho = Sandbox::HomeOnly { reason: "test".into() };
        let r = |sb: &Sandbox, wd: &str| resolve_working_directory(sb, &ie, wd);
        assert_eq!(r(&bw, "~").unwrap(), Path::new("/home/ubuntu"));
        assert_eq!(r(&bw, "").unwrap(), Path::new("/home/ubuntu"));
        assert_eq!(r(&bw, "~/bin").unwrap(), Path::new("/home/ubuntu/bin"));
        assert_eq!(r(&bw, "/home/ubuntu/bin/").unwrap(), Path::new("/home/ubuntu/bin"));
        assert_eq!(r(&bw, "bin").unwrap(), Path::new("/home/ubuntu/bin"));
        assert_eq!(r(&bw, "~/link").unwrap(), Path::new("/home/ubuntu/link"));
        assert_eq!(r(&bw, "/tmp").unwrap(), Path::new("/tmp"));
        assert_eq!(r(&ho, "~/bin").unwrap(), ie.root.join("bin"));
        assert_eq!(r(&ho, "/home/ubuntu").unwrap(), ie.root);
        assert_eq!(r(&ho, "/tmp").unwrap(), Path::new("/tmp"));
        let err = r(&bw, "~/missing").unwrap_err().to_string();
        assert!(
            err.contains("working directory `~/missing` does not exist on instance `i-0000000000000000a`"),
            "{err}"
        );
        assert!(matches!(r(&bw, "~root"), Err(Error::Refused(_))));
        fs::write(ie.root.join("file"), "").unwrap();
        assert!(r(&ho, "~/file").unwrap_err().to_string().contains("not a directory"));
    }

    #[test]
    fn bubblewrap_makes_the_root_the_home() {
        let Some(sb) = bwrap() else { return };
        let f = fixture();
        let a = ienv(&f.home, "i-0000000000000000a");
        let b = ienv(&f.home, "i-0000000000000000b");
        let host_had = Path::new("/home/ubuntu").exists();
        let (code, out, err) = run(
            &sb,
            &a,
            "~",
            "pwd; echo $HOME; echo $USER $DEVAMI_INSTANCE_ID $AWS_ENDPOINT_URL; echo a > ~/x",
        );
        assert_eq!(code, 0, "{err}");
        assert_eq!(out, "/home/ubuntu\n/home/ubuntu\nubuntu i-0000000000000000a http://127.0.0.1:1\n");
        assert_eq!(fs::read_to_string(a.root.join("x")).unwrap(), "a\n");
        let (code, out, _) = run(&sb, &b, "/home/ubuntu", "cat ~/x 2>/dev/null || echo none; ls -A /home");
        assert_eq!(code, 0);
        assert_eq!(out, "none\n.devami\nubuntu\n");
        assert!(!b.root.join("x").exists());
        assert_eq!(Path::new("/home/ubuntu").exists(), host_had);
        assert!(!Path::new("/home/ubuntu/x").exists() || host_had);
    }

    #[test]
    fn bubblewrap_covers_the_host_power_commands() {
        let Some(sb) = bwrap() else { return };
        let f = fixture();
        let a = ienv(&f.home, "i-0000000000000000c");
        // `--help` only: even if the cover failed, the host's command would do nothing.
        let mut script = String::from("command -v shutdown sudo systemctl;");
        for p in HOST_COMMANDS.iter().filter(|p| Path::new(p).exists()) {
            script.push_str(&format!("{p} --help | grep -q devami || echo 'not covered: {p}';"));
        }
        let (code, out, err) = run(&sb, &a, "~", &script);
        assert_eq!(code, 0, "{err}");
        assert!(!out.contains("not covered"), "{out}");
        assert!(out.contains("/home/.devami/shims/shutdown"), "{out}");
        let (code, out, err) = run(&sb, &a, "~", "shutdown -h 1; echo rc=$?; sudo -u ubuntu echo hi");
        assert_eq!(code, 0, "{err}");
        assert_eq!(out, "rc=0\nhi\n");
        assert!(err.contains("Shutdown scheduled for"), "{err}");
        let marker = fs::read_to_string(a.instance_dir.join(STOP_MARKER)).unwrap();
        assert!(
            marker.contains("action=poweroff\n") && marker.contains("command=shutdown -h 1\n"),
            "{marker}"
        );
    }

    #[test]
    fn without_a_sandbox_home_is_the_root_and_shims_come_first() {
        let f = fixture();
        let a = ienv(&f.home, "i-0000000000000000d");
        let sb = Sandbox::HomeOnly { reason: "test".into() };
        let (code, out, err) =
            run(&sb, &a, "~", "pwd; echo $HOME; sudo bash -c 'echo in-sudo $USER'; shutdown -h now");
        assert_eq!(code, 0, "{err}");
        let root = a.root.display().to_string();
        assert_eq!(out, format!("{root}\n{root}\nin-sudo root\n"));
        let marker = fs::read_to_string(a.instance_dir.join(STOP_MARKER)).unwrap();
        assert!(marker.contains("command=shutdown -h now"), "{marker}");
        if unsafe { libc::geteuid() } == 0 {
            // As root the host's power commands are covered too (`--help` only, to be safe).
            let mut script = String::new();
            for p in HOST_COMMANDS.iter().filter(|p| Path::new(p).exists()) {
                script.push_str(&format!("{p} --help | grep -q devami || echo 'not covered: {p}';"));
            }
            let (_, out, _) = run(&sb, &a, "/", &script);
            assert!(!out.contains("not covered"), "{out}");
        }
        let w = sb.warning(&a.root).unwrap();
        assert!(w.starts_with("no sandbox (test): the instance's files are at HOME="), "{w}");
    }

    #[test]
    fn the_power_shim_refuses_outside_an_instance_and_other_systemctl_verbs() {
        let f = fixture();
        let dir = install_shims(&f.home).unwrap();
        let out =
            Command::new(dir.join("shutdown")).arg("now").env_remove("DEVAMI_INSTANCE_DIR").output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("not inside a devami local instance"));
        let out = Command::new(dir.join("systemctl")).arg("restart").arg("ssh").output().unwrap();
        assert_eq!(out.status.code(), Some(1));
    }
}
