//! Crash safety: SIGKILL of the shell mid-wait and mid-transfer, then recovery.
//!
//! Each test starts a real devami, kills it with SIGKILL (no destructor, no guard, no signal
//! handler runs) at a chosen moment, then starts a new devami on the same blueprint folder and
//! checks that it (a) starts: the advisory lock of `.devami/lock` died with its holder; (b) knows
//! every id (instance, image) from `.devami/state.json`; (c) shows what the backend really has
//! (`status`, `get_instance_state`, `history`, compared with the backend's own records: moto via
//! boto3, or the local home's documents); (d) left no partial file under a final name
//! (`state.json` and the blueprint parse, a downloaded file is complete or absent, an object is
//! complete or absent), and what temporary files a killed process leaves behind, and whether the
//! next run removes them.
//!
//! The moments: inside a launch wait and an image wait (moto behind `moto_proxy.py` holding
//! instances and images `pending`; on the local backend, `DEVAMI_FAULTS` making the wait's
//! describe hang); inside a large download and upload, of one file and of a folder (local
//! backend); at random moments of a loop of state writes and of a loop of `update_blueprint`
//! (blueprint rewrite and git commits); while a second shell tries to open the folder; while
//! `exec` runs a command in the instance; inside the local backend's own long calls (a commit of a
//! large change, a launch), and of the detached builder that commits.
//!
//! What a killed process leaves behind must go with the next run that touches it (a download's
//! temporary file, a multipart upload's parts, a state or blueprint temporary file), a git lock it
//! leaves must be named with how to remove it, and every id must be known to the next shell. The
//! random kills print their seed; `CRASH_SEED=N` replays one.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::aws::Aws;
use crate::moto::Proxy;
use crate::support::{Scratch, all, files_under, no_panic, same_file, text};

const MIB: u64 = 1024 * 1024;

// ---- helpers ---------------------------------------------------------------------------------

/// Polls `f` every 2 ms (crash tests aim at short moments) until it returns `Some`, at most `limit`.
fn wait_for<T>(what: &str, limit: Duration, f: impl FnMut() -> Option<T>) -> T {
    crate::support::poll_every(what, limit, Duration::from_millis(2), f)
}

static SHELLS: AtomicUsize = AtomicUsize::new(0);

/// A devami running in the background, its output in files; killed on drop if still running.
struct Shell {
    child: Child,
    out: PathBuf,
    err: PathBuf,
    what: String,
}

impl Shell {
    /// Starts `cmd` with its output going to files in `dir`.
    fn spawn(mut cmd: Command, dir: &Path, what: &str) -> Shell {
        let n = SHELLS.fetch_add(1, Ordering::Relaxed);
        let out = dir.join(format!(".crash{n}.out"));
        let err = dir.join(format!(".crash{n}.err"));
        let child = cmd
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .expect("start devami");
        Shell { child, out, err, what: what.to_string() }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn output(&self) -> String {
        format!("{}{}", self.stdout(), std::fs::read_to_string(&self.err).unwrap_or_default())
    }

    /// Still running; a shell that ended is a failure showing its output (the test would prove
    /// nothing once the moment it aims at has passed).
    fn assert_running(&mut self) {
        if let Some(st) = self.child.try_wait().expect("poll devami") {
            panic!("`{}` ended ({st}) before the kill:\n{}", self.what, self.output());
        }
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().expect("poll devami").is_none()
    }

    /// SIGKILL if it still runs; true when the signal (not its own end) ended it.
    fn sigkill_if_running(&mut self) -> bool {
        let _ = self.child.kill();
        let st = self.child.wait().expect("reap devami");
        st.signal() == Some(libc::SIGKILL)
    }

    /// SIGKILL, then reaps it and checks that the signal (not an exit) ended it.
    fn sigkill(&mut self) {
        self.assert_running();
        self.child.kill().expect("SIGKILL devami");
        let st = self.child.wait().expect("reap devami");
        assert_eq!(
            st.signal(),
            Some(libc::SIGKILL),
            "`{}` was not killed: {st}\n{}",
            self.what,
            self.output()
        );
    }

    /// Waits for the end, at most `limit`.
    fn finish(mut self, limit: Duration) -> Output {
        let start = Instant::now();
        let status = loop {
            if let Some(st) = self.child.try_wait().expect("poll devami") {
                break st;
            }
            assert!(start.elapsed() < limit, "`{}` still ran after {limit:?}:\n{}", self.what, self.output());
            std::thread::sleep(Duration::from_millis(5));
        };
        Output {
            status,
            stdout: std::fs::read(&self.out).unwrap_or_default(),
            stderr: std::fs::read(&self.err).unwrap_or_default(),
        }
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The session state, which must parse (a partial or mixed write fails here with its text).
fn strict_state(bp: &Path) -> Value {
    let path = bp.join(".devami/state.json");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!("{} does not parse ({e}):\n{}", path.display(), String::from_utf8_lossy(&bytes))
    })
}

/// [`session_leftovers`] but a killed state write's temporary file (`.state.json.tmp-<pid>`), which
/// a kill landing inside a state write leaves (the state-write test covers it): anything else.
fn unexpected_in_session(bp: &Path) -> Vec<String> {
    session_leftovers(bp).into_iter().filter(|n| !n.starts_with(".state.json.tmp-")).collect()
}

/// The session state when there is one (a transfer changes none); it must parse.
fn state_if_any(bp: &Path) -> Option<Value> {
    bp.join(".devami/state.json").exists().then(|| strict_state(bp))
}

/// What `.devami/` holds besides the session's own files (temporary files of state writes).
fn session_leftovers(bp: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(bp.join(".devami"))
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.retain(|n| !matches!(n.as_str(), ".gitignore" | "lock" | "state.json"));
    names.sort();
    names
}

/// What `.devami/lock` says (who held the folder last).
fn lock_text(bp: &Path) -> String {
    std::fs::read_to_string(bp.join(".devami/lock")).unwrap_or_default()
}

/// Asserts that a devami run was not refused for the lock (exit status 3) and succeeded.
fn assert_opened(out: &Output, what: &str) {
    assert_ne!(
        out.status.code(),
        Some(3),
        "`{what}`: the folder is still locked after the kill:\n{}",
        all(out)
    );
    no_panic(out);
    assert!(out.status.success(), "`{what}` failed ({}):\n{}", out.status, all(out));
}

/// A table row of `out` holding `id`, with its cells trimmed.
fn row_of(out: &str, id: &str) -> Vec<String> {
    out.lines()
        .find(|l| l.contains(id) && l.contains('┆'))
        .unwrap_or_else(|| panic!("no table row for {id}:\n{out}"))
        .split(['│', '┆'])
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .collect()
}

/// The current instance of a state.
fn current(st: &Value) -> String {
    st["instance"].as_str().unwrap_or_else(|| panic!("no current instance in state.json: {st:#}")).to_string()
}

/// The record of `id` in a state's instances.
fn instance_record<'a>(st: &'a Value, id: &str) -> &'a Value {
    st["instances"]
        .as_array()
        .and_then(|a| a.iter().rev().find(|r| r["id"] == id))
        .unwrap_or_else(|| panic!("instance {id} is not in state.json: {st:#}"))
}

/// A small xorshift generator seeded from the clock (the seed is printed, to replay a failure).
struct Rng(u64);

impl Rng {
    fn new(what: &str) -> Rng {
        let seed = std::env::var("CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
        });
        eprintln!("{what}: CRASH_SEED={seed}");
        Rng(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// `len` random bytes from the kernel, written to `path` (no sparse runs to compress or skip).
fn random_file(path: &Path, len: u64) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    let mut src = std::fs::File::open("/dev/urandom").unwrap().take(len);
    let mut dst = std::fs::File::create(path).unwrap();
    let n = std::io::copy(&mut src, &mut dst).unwrap();
    assert_eq!(n, len);
}

/// Names and sizes (apparent, and allocated on disk) of files, for reports.
fn describe_files(dir: &Path, names: &[String]) -> String {
    names
        .iter()
        .map(|n| match std::fs::metadata(dir.join(n)) {
            Ok(m) => format!("{n} ({} bytes, {} allocated)", m.len(), m.blocks() * 512),
            Err(_) => format!("{n} (gone)"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A blueprint on the local backend in a scratch folder with its own home.
struct Local {
    s: Scratch,
    name: String,
    /// Extra environment for every devami of this blueprint.
    env: Vec<(&'static str, String)>,
}

impl Local {
    fn new(name: &str) -> Local {
        let s = Scratch::new();
        s.init(name);
        Local { s, name: name.to_string(), env: Vec::new() }
    }

    fn bp(&self) -> PathBuf {
        self.s.path().join(&self.name)
    }

    fn home(&self) -> PathBuf {
        self.s.path().join(".devami-home")
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.s.path().join(rel)
    }

    /// devami running `commands` as one-shots on this blueprint.
    fn cmd(&self, commands: &str) -> Command {
        self.cmd_with(&[], commands)
    }

    /// [`Local::cmd`] with global options (`--yes`).
    fn cmd_with(&self, global: &[&str], commands: &str) -> Command {
        let mut args = global.to_vec();
        args.extend([self.name.as_str(), "-c", commands]);
        let mut c = self.s.cmd(&args);
        c.envs(self.env.iter().map(|(k, v)| (*k, v.as_str())));
        c
    }

    /// Runs `commands` answering yes to confirmations; asserts success.
    fn ok_yes(&self, commands: &str) -> String {
        let out = self.cmd_with(&["--yes"], commands).output().expect("run devami");
        assert_opened(&out, commands);
        all(&out)
    }

    fn run(&self, commands: &str) -> Output {
        self.cmd(commands).output().expect("run devami")
    }

    /// Runs `commands`; asserts that it opened the folder and succeeded; stdout and stderr.
    fn ok(&self, commands: &str) -> String {
        let out = self.run(commands);
        assert_opened(&out, commands);
        all(&out)
    }

    fn spawn(&self, commands: &str) -> Shell {
        Shell::spawn(self.cmd(commands), self.s.path(), commands)
    }

    fn spawn_with(&self, env: &[(&str, &str)], commands: &str) -> Shell {
        let mut c = self.cmd(commands);
        c.envs(env.iter().copied());
        Shell::spawn(c, self.s.path(), commands)
    }

    /// The local home's document of an instance.
    fn home_instance(&self, id: &str) -> Value {
        let p = self.home().join("instances").join(id).join("instance.json");
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
            .unwrap()
    }

    /// The local home's document of an image.
    fn home_image(&self, id: &str) -> Value {
        let p = self.home().join("images").join(id).join("image.json");
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
            .unwrap()
    }

    /// Every image of the home: (id, name, state).
    fn home_images(&self) -> Vec<(String, String, String)> {
        let mut out: Vec<_> = std::fs::read_dir(self.home().join("images"))
            .unwrap()
            .flatten()
            .filter_map(|e| {
                let t = std::fs::read_to_string(e.path().join("image.json")).ok()?;
                let v: Value = serde_json::from_str(&t).ok()?;
                Some((
                    v["id"].as_str()?.to_string(),
                    v["name"].as_str()?.to_string(),
                    v["state"].as_str()?.to_string(),
                ))
            })
            .collect();
        out.sort();
        out
    }

    /// The folder of the endpoint's buckets (the root of its store).
    fn buckets(&self) -> PathBuf {
        self.home().join("buckets")
    }

    /// The endpoint's unfinished multipart uploads (`.upload-<id>.json`, `.upload_id-<id>.part-N`).
    fn pending_uploads(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.buckets())
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(".upload"))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// The endpoint's own temporary files (s3s-fs `.tmp.N.internal.part`).
    fn endpoint_temps(&self) -> Vec<String> {
        files_under(&self.buckets()).into_iter().filter(|n| n.contains(".tmp.")).collect()
    }
}

// ---- 1. SIGKILL inside a launch wait ------------------------------------------------------------

/// moto behind a proxy that shows the new instance `pending` for 10 minutes: devami is inside the
/// launch wait, the id already in state.json, when it is killed.
#[test]
fn sigkill_inside_a_launch_wait_on_aws_then_the_next_shell_recovers_the_instance() {
    let aws = Aws::new("crash-launch");
    let proxy = Proxy::start(&aws.moto.url, json!({"hold_instances": 600}));
    let via = ["--endpoint-url", proxy.url.as_str()];
    let bp = aws.s.path().join(&aws.name);

    let mut first =
        Shell::spawn(aws.cmd_with(&via, "launch_devinstance"), aws.s.path(), "launch_devinstance");
    let state_path = aws.state_path();
    let id = wait_for("the instance id in state.json", Duration::from_secs(60), || {
        first.assert_running();
        crate::support::read_state(&state_path)["instance"].as_str().map(str::to_string)
    });
    // Inside the wait: the wait has asked at least once and heard `pending`.
    wait_for("a describe call inside the wait", Duration::from_secs(60), || {
        first.assert_running();
        let asked = proxy.count("DescribeInstances") + proxy.count("DescribeInstanceStatus");
        (asked > 0 && first.stdout().contains("Instance starting up: please wait")).then_some(())
    });
    let killed_pid = first.pid();
    first.sigkill();

    // (d) state.json is whole and holds the id, last seen pending; nothing else in `.devami/`.
    let st = strict_state(&bp);
    assert_eq!(current(&st), id, "{st:#}");
    assert_eq!(instance_record(&st, &id)["last_state"], "pending", "{st:#}");
    assert_eq!(
        unexpected_in_session(&bp),
        Vec::<String>::new(),
        "temporary files in .devami/ after the kill"
    );
    assert!(lock_text(&bp).contains(&format!("pid {killed_pid} ")), "{}", lock_text(&bp));
    // The cloud really has it: moto says running (the proxy still says pending).
    assert_eq!(aws.describe(&id)["state"], "running");

    // (a) a new shell opens at once, (b) with the id, (c) showing what the endpoint says.
    let start = Instant::now();
    let out = aws.run_with(&via, "status; get_instance_state");
    assert_opened(&out, "status; get_instance_state");
    assert!(start.elapsed() < Duration::from_secs(30), "the next shell took {:?}", start.elapsed());
    let text = all(&out);
    assert!(text.contains(&id), "{text}");
    assert!(
        text.contains("pending (code 0)"),
        "get_instance_state should say what the endpoint says:\n{text}"
    );
    assert!(!lock_text(&bp).contains(&format!("pid {killed_pid} ")), "the lock still names the dead shell");
    // One development instance per blueprint: the pending one blocks a second launch.
    let out = aws.run_with(&via, "launch_devinstance");
    assert_eq!(out.status.code(), Some(1), "a second launch beside a pending instance:\n{}", all(&out));
    assert!(all(&out).contains("not safe to deploy another"), "{}", all(&out));
    let instances = aws.all_instances();
    assert_eq!(instances.as_array().map(Vec::len), Some(1), "{instances:#}");

    // The endpoint stops holding it back: every view says running.
    proxy.set_rules(json!({"hold_instances": 0}));
    let text = all(&{
        let out = aws.run_with(&via, "get_instance_state; status; history");
        assert_opened(&out, "get_instance_state; status; history");
        out
    });
    assert!(text.contains("running (code 16)"), "{text}");
    let history = row_of(&text[text.find("devami> history").unwrap()..], &id);
    assert_eq!(history[1], "running", "{history:?}");
    let status_state = text.lines().find(|l| l.contains("last known state")).unwrap_or_default();
    assert!(status_state.contains("running"), "{text}");
    assert_eq!(instance_record(&strict_state(&bp), &id)["last_state"], "running");
    assert_eq!(unexpected_in_session(&bp), Vec::<String>::new());
    aws.ok("terminate_devinstance --force");
    assert_eq!(aws.describe(&id)["state"], "terminated");
}

/// The local backend starts instances at once: `DEVAMI_FAULTS` makes the wait's describe hang.
#[test]
fn sigkill_inside_a_launch_wait_on_the_local_backend() {
    let l = Local::new("crash-local-launch");
    let bp = l.bp();
    let mut first = l.spawn_with(&[("DEVAMI_FAULTS", "describe_instance#1+=hang")], "launch_devinstance");
    wait_for("the launch to be inside its wait", Duration::from_secs(60), || {
        first.assert_running();
        first.stdout().contains("Instance starting up: please wait").then_some(())
    });
    first.sigkill();

    let st = strict_state(&bp);
    let id = current(&st);
    // The local launch returns once the instance runs, and that is what was recorded.
    assert_eq!(l.home_instance(&id)["state"], "running");
    assert_eq!(instance_record(&st, &id)["last_state"], "running", "{st:#}");
    assert_eq!(unexpected_in_session(&bp), Vec::<String>::new());

    let out = l.ok("status; get_instance_state; history");
    assert!(out.contains("running (code 16)"), "{out}");
    let status_state = out.lines().find(|l| l.contains("last known state")).unwrap_or_default();
    assert!(status_state.contains("running"), "{out}");
    let history = row_of(&out[out.find("devami> history").unwrap()..], &id);
    assert_eq!(history[1], "running", "{history:?}");
    assert_eq!(instance_record(&strict_state(&bp), &id)["last_state"], "running");
    // One development instance per blueprint, after the crash too.
    let out = l.run("launch_devinstance");
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    assert!(all(&out).contains("not safe to deploy another"), "{}", all(&out));
    l.ok("terminate_devinstance --force");
    assert_eq!(l.home_instance(&id)["state"], "terminated");
}

// ---- 2. SIGKILL inside an image wait -------------------------------------------------------------

#[test]
fn sigkill_inside_an_image_wait_on_aws_keeps_the_image_and_the_terminate_guard_waits_for_it() {
    let aws = Aws::new("crash-image");
    let proxy = Proxy::start(&aws.moto.url, json!({}));
    let via = ["--endpoint-url", proxy.url.as_str()];
    let bp = aws.s.path().join(&aws.name);
    aws.ok_with(&via, "launch_devinstance");
    let id = aws.instance_id();

    proxy.set_rules(json!({"hold_images": 600}));
    let mut first =
        Shell::spawn(aws.cmd_with(&via, "create_devami crash-image-1"), aws.s.path(), "create_devami");
    let state_path = aws.state_path();
    let image = wait_for("the image id in state.json", Duration::from_secs(60), || {
        first.assert_running();
        crate::support::read_state(&state_path)["images"][0]["id"].as_str().map(str::to_string)
    });
    wait_for("a DescribeImages inside the wait", Duration::from_secs(60), || {
        first.assert_running();
        (proxy.count("DescribeImages") > 0 && first.stdout().contains("creating image")).then_some(())
    });
    first.sigkill();

    let st = strict_state(&bp);
    assert_eq!(st["images"][0]["id"], image.as_str(), "{st:#}");
    assert_eq!(st["images"][0]["last_state"], "pending", "{st:#}");
    assert_eq!(st["instance_saved"], true, "{st:#}");
    assert_eq!(current(&st), id);
    assert_eq!(unexpected_in_session(&bp), Vec::<String>::new());

    // The next shell knows the image; its terminate guard waits for it (still pending behind the
    // proxy) and gives up without terminating anything.
    let out = aws.run_with(&via, "history");
    assert_opened(&out, "history");
    let row = row_of(&all(&out), &image);
    assert_eq!((row[1].as_str(), row[2].as_str()), ("pending", "crash-image-1"), "{row:?}");
    let out = aws
        .cmd_with(&via, "terminate_devinstance")
        .env("DEVAMI_WAIT_MINUTES", "0.05")
        .output()
        .expect("run devami");
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    let text = all(&out);
    assert!(text.contains("waiting for created image to become available"), "{text}");
    assert!(text.contains(&format!("gave up waiting for image {image}")), "{text}");
    assert_eq!(aws.describe(&id)["state"], "running", "terminated while its image was pending");
    assert_eq!(strict_state(&bp)["images"][0]["last_state"], "pending");

    // Once the image is available, the guard lets the terminate through.
    proxy.set_rules(json!({"hold_images": 0}));
    let out = aws.ok_with(&via, "terminate_devinstance; history");
    assert!(out.contains("Instance is now in state: terminated"), "{out}");
    let row = row_of(&out[out.find("devami> history").unwrap()..], &image);
    assert_eq!(row[1], "available", "{row:?}");
    assert_eq!(aws.describe(&id)["state"], "terminated");
    let st = strict_state(&bp);
    assert_eq!(st["images"][0]["last_state"], "available", "{st:#}");
    assert_eq!(unexpected_in_session(&bp), Vec::<String>::new());
}

#[test]
fn sigkill_inside_an_image_wait_on_the_local_backend() {
    let l = Local::new("crash-local-image");
    let bp = l.bp();
    l.ok("launch_devinstance");
    let id = current(&strict_state(&bp));
    let mut first = l.spawn_with(&[("DEVAMI_FAULTS", "describe_image#1+=hang")], "create_devami local-img");
    wait_for("create_devami to be inside its wait", Duration::from_secs(60), || {
        first.assert_running();
        first.stdout().contains("creating image").then_some(())
    });
    first.sigkill();

    let st = strict_state(&bp);
    let image =
        st["images"][0]["id"].as_str().unwrap_or_else(|| panic!("no image recorded: {st:#}")).to_string();
    assert_eq!(st["images"][0]["last_state"], "pending", "{st:#}");
    assert_eq!(st["instance_saved"], true, "{st:#}");
    assert_eq!(unexpected_in_session(&bp), Vec::<String>::new());
    // The commit goes on in its detached builder, whatever happened to the shell.
    wait_for("the local image to be committed", Duration::from_secs(60), || {
        (l.home_image(&image)["state"] == "available").then_some(())
    });

    // The commands that look at the session before any command waits on the image: `history`
    // and `status` ask the backend about an image recorded as pending, and record what it says
    // (its size too, once available).
    let out = l.ok("history; status; sweep; history");
    let first = &out[..out.find("devami> status").unwrap()];
    let row = row_of(first, &image);
    assert_eq!((row[1].as_str(), row[2].as_str()), ("available", "local-img"), "{row:?}");
    assert_ne!(row[3], "-", "no size for the available image: {row:?}");
    let last = &out[out.rfind("devami> history").unwrap()..];
    let row = row_of(last, &image);
    assert_eq!((row[1].as_str(), row[2].as_str()), ("available", "local-img"), "{row:?}");
    let st = strict_state(&bp);
    assert_eq!(st["images"][0]["last_state"], "available", "{st:#}");
    assert_eq!(st["images"][0]["size_bytes"], l.home_image(&image)["size_bytes"], "{st:#}");
    // The guard asks the backend: available, so the terminate goes through.
    let out = l.ok("terminate_devinstance; history");
    assert!(out.contains("Instance is now in state: terminated"), "{out}");
    let row = row_of(&out[out.find("devami> history").unwrap()..], &image);
    assert_eq!(row[1], "available", "{row:?}");
    assert_eq!(l.home_instance(&id)["state"], "terminated");
}

// ---- 3. SIGKILL inside a transfer ------------------------------------------------------------------

/// A 256 MiB object downloaded and killed once its temporary file holds a quarter of it.
#[test]
fn sigkill_inside_a_large_download_leaves_no_partial_file_under_its_final_name() {
    let l = Local::new("crash-dl");
    let bp = l.bp();
    let size = 256 * MIB;
    let src = l.path("src/big.bin");
    random_file(&src, size);
    l.ok("upload src/big.bin data/big.bin");

    let got = l.path("got");
    let mut first = l.spawn("download data/big.bin got/big.bin");
    let temp = got.join(format!("big.bin.devami-part-{}", first.pid()));
    let written_at_kill =
        wait_for("the download's temporary file to hold a quarter", Duration::from_secs(120), || {
            first.assert_running();
            let m = std::fs::metadata(&temp).ok()?;
            let allocated = m.blocks() * 512;
            (allocated >= size / 4 && !got.join("big.bin").exists()).then_some(allocated)
        });
    first.sigkill();
    eprintln!("killed the download with {written_at_kill} of {size} bytes in its temporary file");

    // No partial file under the final name; state.json untouched and whole.
    let final_path = got.join("big.bin");
    assert!(
        !final_path.exists() || same_file(&src, &final_path),
        "a partial file under its final name: {}",
        describe_files(&got, &files_under(&got))
    );
    let _ = state_if_any(&bp);
    assert_eq!(unexpected_in_session(&bp), Vec::<String>::new());
    let left = files_under(&got);
    eprintln!("left after the kill: {}", describe_files(&got, &left));

    // The same download again: it opens the folder at once, succeeds, and the file is whole.
    let out = l.ok("download data/big.bin got/big.bin");
    assert!(out.contains("downloaded s3://crash-dl/data/big.bin to got/big.bin (256.0 MiB)"), "{out}");
    assert!(same_file(&src, &final_path), "the second download is not the object");
    // The killed download's temporary file (`<name>.devami-part-<pid>`, named after the dead
    // process and pre-sized to the whole object) went with the second download.
    assert!(left.iter().any(|n| n.contains(".devami-part")), "the kill left no temporary file: {left:?}");
    let temps: Vec<String> = files_under(&got).into_iter().filter(|n| n.contains(".devami-part")).collect();
    assert_eq!(
        temps,
        Vec::<String>::new(),
        "a killed download's temporary file outlived the next download: {}",
        describe_files(&got, &temps)
    );
    assert_eq!(files_under(&got), ["big.bin"]);
}

/// A 100-file folder download killed once some files are in place: every file under its final
/// name is whole.
#[test]
fn sigkill_inside_a_folder_download_leaves_only_whole_files() {
    let l = Local::new("crash-dl-tree");
    let n = 100;
    for i in 0..n {
        random_file(&l.path(&format!("tree/f{i:03}.bin")), MIB + i);
    }
    l.ok("upload tree runs/tree");

    let cut = l.path("cut");
    let mut first = l.spawn("download runs/tree cut");
    wait_for("some files of the download", Duration::from_secs(120), || {
        first.assert_running();
        let done = files_under(&cut).iter().filter(|f| !f.contains(".devami-part")).count();
        (done >= 5).then_some(())
    });
    first.sigkill();

    let got = files_under(&cut);
    let (temps, finals): (Vec<String>, Vec<String>) =
        got.into_iter().partition(|f| f.contains(".devami-part"));
    assert!(finals.len() < n as usize, "the download finished before the kill: the test proves nothing");
    for f in &finals {
        assert!(same_file(&l.path("tree").join(f), &cut.join(f)), "{f} is partial under its final name");
    }
    eprintln!(
        "after the kill: {} whole files, temporary files: {}",
        finals.len(),
        describe_files(&cut, &temps)
    );

    let out = l.ok("download runs/tree cut");
    assert!(out.contains(&format!("downloaded {n} files")), "{out}");
    let after = files_under(&cut);
    for i in 0..n {
        let f = format!("f{i:03}.bin");
        assert!(same_file(&l.path("tree").join(&f), &cut.join(&f)), "{f} differs after the second download");
    }
    // The temporary files of the files in flight at the kill went with the second download.
    let stale: Vec<String> = after.iter().filter(|f| f.contains(".devami-part")).cloned().collect();
    assert_eq!(
        stale,
        Vec::<String>::new(),
        "a killed folder download's temporary files outlived the next download: {}",
        describe_files(&cut, &stale)
    );
    assert_eq!(after.len(), n as usize, "{after:?}");
}

/// A 256 MiB upload (multipart) killed once its first part reached the endpoint, then a tree of
/// files killed midway: no object under its final key is partial.
#[test]
fn sigkill_inside_an_upload_leaves_no_partial_object() {
    let l = Local::new("crash-up");
    let size = 256 * MIB;
    let src = l.path("src/big.bin");
    random_file(&src, size);
    // The endpoint is not running yet: the shell that is killed starts it (a detached daemon
    // that outlives it and must not keep the folder's lock).
    let mut first = l.spawn("upload src/big.bin data/big.bin");
    wait_for("a part of the multipart upload at the endpoint", Duration::from_secs(120), || {
        first.assert_running();
        l.pending_uploads().iter().any(|n| n.starts_with(".upload_id-")).then_some(())
    });
    first.sigkill();
    let listing = l.ok("ls data/");
    assert!(listing.contains("is empty"), "{listing}");
    assert!(!listing.contains("data/big.bin"), "an object appeared for a killed upload:\n{listing}");
    let _ = state_if_any(&l.bp());
    let left = l.pending_uploads();
    eprintln!("the endpoint keeps after the kill: {}", describe_files(&l.buckets(), &left));

    let out = l.ok("upload src/big.bin data/big.bin");
    assert!(out.contains("uploaded src/big.bin to s3://crash-up/data/big.bin (256.0 MiB)"), "{out}");
    l.ok("download data/big.bin back/big.bin");
    assert!(same_file(&src, &l.path("back/big.bin")), "the second upload is not the file");
    // The endpoint aborted the dead upload once a newer upload of its key completed.
    assert!(left.iter().any(|n| n.starts_with(".upload_id-")), "the kill left no part: {left:?}");
    let stale: Vec<String> = l.pending_uploads().into_iter().filter(|n| left.contains(n)).collect();
    assert_eq!(
        stale,
        Vec::<String>::new(),
        "the killed multipart upload outlived a second, successful upload of its key: {}",
        describe_files(&l.buckets(), &stale)
    );
    assert_eq!(l.pending_uploads(), Vec::<String>::new());

    // A tree of 200 files of 512 KiB (single PUTs), killed once some objects are stored.
    for i in 0..200u64 {
        random_file(&l.path(&format!("tree/d{}/f{i:03}.bin", i % 4)), 512 * 1024 + i);
    }
    let stored = l.buckets().join("crash-up/runs/tree");
    let mut second = l.spawn("upload tree runs/tree");
    wait_for("some objects of the tree", Duration::from_secs(120), || {
        second.assert_running();
        (files_under(&stored).iter().filter(|f| !f.starts_with('.')).count() >= 10).then_some(())
    });
    second.sigkill();
    let objects: Vec<String> =
        files_under(&stored).into_iter().filter(|f| !f.contains("/.") && !f.starts_with('.')).collect();
    assert!(objects.len() < 200, "the upload finished before the kill: the test proves nothing");
    for f in &objects {
        assert!(same_file(&l.path("tree").join(f), &stored.join(f)), "object {f} is partial");
    }
    // The endpoint's temporary files of the PUTs cut short: it notices the closed connections
    // and removes them (given a few seconds), or they stay.
    let cut = l.endpoint_temps();
    eprintln!("endpoint temporary files right after the kill: {}", describe_files(&l.buckets(), &cut));
    let start = Instant::now();
    while !l.endpoint_temps().iter().all(|t| !cut.contains(t)) && start.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = l.ok("upload tree runs/tree");
    assert!(out.contains("uploaded 200 files"), "{out}");
    for i in 0..200u64 {
        let f = format!("d{}/f{i:03}.bin", i % 4);
        assert!(
            same_file(&l.path("tree").join(&f), &stored.join(&f)),
            "object {f} differs after the second upload"
        );
    }
    // Not a finding: s3s-fs removes its `.tmp.*.internal.part` files when the endpoint daemon
    // starts (`clean_old_tmp_files`), i.e. after it idled out; until then they stay (empty ones
    // created by a PUT whose request was dropped while the file was being created).
    let stale: Vec<String> = l.endpoint_temps().into_iter().filter(|t| cut.contains(t)).collect();
    eprintln!(
        "endpoint temporary files still there after {:?} and a second upload: {}",
        start.elapsed(),
        describe_files(&l.buckets(), &stale)
    );
}

// ---- 4. SIGKILL at random moments of state writes ---------------------------------------------------

/// `extend_lifetime 1` over and over, killed after a random number of them, 60 times: state.json
/// always parses and holds the instance, the lifetime never goes back, the lock never sticks.
#[test]
fn sigkill_at_random_moments_of_state_writes_never_corrupts_the_state() {
    let l = Local::new("crash-state");
    let bp = l.bp();
    l.ok("launch_devinstance");
    let id = current(&strict_state(&bp));
    let script = vec!["extend_lifetime 1"; 200].join("; ");
    let mut rng = Rng::new("state-write kills");
    let mut timeout = 60;
    let mut seen_temps: Vec<String> = Vec::new();
    let mut killed = 0;
    for round in 0..60 {
        let target = rng.range(0, 150) as usize;
        let mut shell = l.spawn(&script);
        // A random number of commands done (0: right at the start), then SIGKILL.
        let finished = wait_for("the commands before the kill", Duration::from_secs(60), || {
            if !shell.running() {
                return Some(true);
            }
            (shell.stdout().matches("Timeout of ").count() >= target).then_some(false)
        });
        if finished {
            panic!("round {round}: the script ended before the kill:\n{}", shell.output());
        }
        // The moment itself: up to 2 ms later (a command takes about that long here), so that
        // kills land anywhere in a command, its describe calls, its fsyncs and its rename.
        std::thread::sleep(Duration::from_micros(rng.range(0, 2000)));
        shell.sigkill();
        killed += 1;
        let st = strict_state(&bp);
        assert_eq!(current(&st), id, "round {round}: {st:#}");
        let t = instance_record(&st, &id)["timeout_minutes"].as_i64().unwrap();
        assert!(t >= timeout, "round {round}: the lifetime went back from {timeout} to {t}");
        timeout = t;
        for name in session_leftovers(&bp) {
            if !seen_temps.contains(&name) {
                seen_temps.push(name);
            }
        }
    }
    // The tag is the truth; the state lags by at most the command that was killed.
    let tag: i64 = l.home_instance(&id)["tags"]["Timeout"].as_str().unwrap().parse().unwrap();
    assert!((timeout..=timeout + 1).contains(&tag), "state says {timeout} minutes, the instance's tag {tag}");
    let out = l.ok("get_lifetime; status");
    assert!(out.contains("Will be stopped in"), "{out}");
    assert_eq!(instance_record(&strict_state(&bp), &id)["timeout_minutes"].as_i64(), Some(tag));
    let remaining = session_leftovers(&bp);
    eprintln!(
        "{killed} kills; temporary state files seen: {seen_temps:?}; left after a normal run: {remaining:?}"
    );
    // What kills inside a state write left (`.devami/.state.json.tmp-<pid>`) went when the next
    // shell took the folder's lock.
    assert_eq!(
        remaining,
        Vec::<String>::new(),
        "temporary state files outlived the next shell: {}",
        describe_files(&bp.join(".devami"), &remaining)
    );
    l.ok("terminate_devinstance --force");
}

/// `git` in `dir`, isolated from the machine's and the user's configuration.
fn git(dir: &Path, args: &[&str]) -> Output {
    Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("run git")
}

/// Lock files under `.git/` (what a git writer killed half-way leaves behind).
fn git_locks(bp: &Path) -> Vec<String> {
    files_under(&bp.join(".git")).into_iter().filter(|f| f.ends_with(".lock")).collect()
}

/// Temporary copies of the blueprint file (`stack_config_template.json.tmp-<pid>`).
fn blueprint_temps(bp: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(bp)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("stack_config_template.json.tmp"))
        .collect();
    names.sort();
    names
}

/// `update_blueprint` between two images over and over (each a splice of the blueprint, an atomic
/// rewrite and two git commits), killed at random moments: the blueprint always parses and names
/// one of the two images, the repository stays sound; then what the kills left behind, and
/// whether the next `update_blueprint` still works.
#[test]
fn sigkill_at_random_moments_of_update_blueprint_keeps_the_blueprint_whole() {
    let l = Local::new("crash-git");
    let bp = l.bp();
    l.ok("launch_devinstance; create_devami git-img-a; create_devami git-img-b");
    let st = strict_state(&bp);
    let images: Vec<String> =
        st["images"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(images.len(), 2, "{st:#}");
    let out = l.ok("update_blueprint --init");
    assert!(out.contains("Blueprint updated with ami"), "{out}");
    // What `git status` shows besides the blueprint (the files `init` made, never committed).
    let untracked_at_start = text(&git(&bp, &["status", "--porcelain", "--untracked-files=all"]).stdout);
    assert!(!untracked_at_start.contains("stack_config_template"), "{untracked_at_start}");
    let script =
        (0..200).map(|i| format!("update_blueprint {}", images[i % 2])).collect::<Vec<_>>().join("; ");
    let mut rng = Rng::new("update_blueprint kills");
    let mut temps_seen: Vec<String> = Vec::new();
    let mut kills = 0;
    let mut stale_lock = None;
    for round in 0..60 {
        let target = rng.range(0, 30);
        let mut shell = l.spawn(&script);
        let ended = wait_for("the commands before the kill", Duration::from_secs(60), || {
            if !shell.running() {
                return Some(true);
            }
            (shell.stdout().matches("new commit has hash").count() as u64 >= target).then_some(false)
        });
        if ended {
            // Only a git lock left by an earlier kill (of a ref or of the index) ends it early,
            // with the error that says so.
            let out = shell.output();
            assert!(out.contains("lock"), "round {round}: the script ended before the kill:\n{out}");
            let error = out.lines().find(|l| l.starts_with("error:")).unwrap_or_default().to_string();
            assert_stale_lock_error(&error, &git_locks(&bp));
            stale_lock = Some(error);
            break;
        }
        // The moment itself: within the next few ms (one update takes about that long here).
        std::thread::sleep(Duration::from_micros(rng.range(0, 3000)));
        shell.sigkill();
        kills += 1;
        let doc: Value =
            serde_json::from_str(&std::fs::read_to_string(bp.join("stack_config_template.json")).unwrap())
                .unwrap_or_else(|e| {
                    panic!("round {round}: the blueprint does not parse after the kill: {e}")
                });
        let ami = doc["Lambda"]["LambdaConfig"]["AMI"].as_str().unwrap_or_default();
        assert!(images.iter().any(|i| i == ami), "round {round}: AMI `{ami}`");
        let _ = strict_state(&bp);
        // The blueprint's temporary copy is written in `.devami/` (ignored by git), never beside it.
        assert_eq!(blueprint_temps(&bp), Vec::<String>::new(), "round {round}");
        for t in session_leftovers(&bp) {
            if !temps_seen.contains(&t) {
                temps_seen.push(t);
            }
        }
        // Nothing new for git but the blueprint's change not committed yet: no untracked
        // temporary file, and the blueprint modified (a kill between its rewrite and its commit)
        // or staged as it is (between the index update and the branch update), never staged
        // with other content than the file's.
        let status = text(&git(&bp, &["status", "--porcelain", "--untracked-files=all"]).stdout);
        let uncommitted = [" M stack_config_template.json", "M  stack_config_template.json"];
        let new: Vec<&str> = status
            .lines()
            .filter(|l| !untracked_at_start.lines().any(|u| u == *l) && !uncommitted.contains(l))
            .collect();
        assert!(new.is_empty(), "round {round}: after the kill `git status` shows {new:?}");
    }
    let fsck = git(&bp, &["fsck", "--no-progress", "--no-dangling"]);
    assert!(fsck.status.success(), "the repository is damaged:\n{}", all(&fsck));
    let locks = git_locks(&bp);
    eprintln!(
        "{kills} kills; git locks left: {locks:?}{}; temporaries seen in .devami/: {temps_seen:?}",
        stale_lock.as_deref().map(|e| format!(" (first seen as `{e}`)")).unwrap_or_default()
    );

    // The next run, without a kill.
    let both = format!("update_blueprint {}; update_blueprint {}", images[0], images[1]);
    if !locks.is_empty() {
        // A lock a killed commit left (git's locks name no owner) refuses the update with an
        // error that names it and says how to remove it, and changes nothing.
        let blueprint_before = std::fs::read(bp.join("stack_config_template.json")).unwrap();
        let head_before = git(&bp, &["rev-parse", "HEAD"]).stdout;
        let out = l.run(&both);
        no_panic(&out);
        assert_eq!(out.status.code(), Some(1), "update_blueprint beside git locks {locks:?}:\n{}", all(&out));
        let error = crate::support::error_line(&out);
        assert_stale_lock_error(&error, &locks);
        assert_eq!(std::fs::read(bp.join("stack_config_template.json")).unwrap(), blueprint_before);
        assert_eq!(
            git(&bp, &["rev-parse", "HEAD"]).stdout,
            head_before,
            "a commit was made beside {locks:?}"
        );
        assert_eq!(git_locks(&bp), locks);
        // What the message tells the user to do, no git command running.
        for lock in &locks {
            std::fs::remove_file(bp.join(".git").join(lock)).unwrap();
        }
    }
    let out = l.ok(&both);
    assert!(out.contains(&format!("Blueprint updated with ami {}", images[1])), "{out}");
    let committed = text(&git(&bp, &["show", "HEAD:stack_config_template.json"]).stdout);
    assert!(committed.contains(&format!("\"AMI\": \"{}\"", images[1])), "{committed}");
    assert_eq!(git_locks(&bp), Vec::<String>::new());
    let status = git(&bp, &["status", "--porcelain", "--untracked-files=all"]);
    assert_eq!(text(&status.stdout), untracked_at_start, "`git status` after update_blueprint");
    // Whatever temporary copy a kill left in `.devami/` went when the next shell took the lock.
    assert_eq!(blueprint_temps(&bp), Vec::<String>::new());
    assert_eq!(session_leftovers(&bp), Vec::<String>::new());
    l.ok("terminate_devinstance --force");
}

/// The error of `update_blueprint` beside a git lock a killed commit left: it names one of
/// `locks` (relative to `.git/`), says it may be left by an interrupted command and how to remove it.
fn assert_stale_lock_error(error: &str, locks: &[String]) {
    assert!(
        locks.iter().any(|lock| error.contains(&format!(".git/{lock}` exists"))),
        "the error does not name a lock of {locks:?}: {error}"
    );
    for part in ["interrupted", "if no git command is running, remove it (`rm ", "nothing was changed"] {
        assert!(error.contains(part), "`{part}` is missing from: {error}");
    }
}

// ---- 5. Two shells on one blueprint --------------------------------------------------------------

/// `lock.rs` covers a second shell refused beside an idle first one. Here: the first is inside a
/// wait; the second is refused (status 3) and changes nothing; once the first is killed the
/// second opens at once; then pairs of shells started together never both hold the folder (no
/// lost update of the lifetime).
#[test]
fn a_second_shell_is_refused_while_the_first_waits_and_opens_at_once_after_a_sigkill() {
    let l = Local::new("crash-two");
    let bp = l.bp();
    l.ok("launch_devinstance");
    let id = current(&strict_state(&bp));
    // The first shell extends the lifetime, then waits (a describe that hangs, inside a wait).
    // Its describes: extend_lifetime's two, stop's check, then the stop wait's first (the 4th);
    // no check of a vanished instance first, as the launch saw it moments ago.
    let mut first = l
        .spawn_with(&[("DEVAMI_FAULTS", "describe_instance#4+=hang")], "extend_lifetime 5; stop_devinstance");
    wait_for("the first shell to be inside the stop wait", Duration::from_secs(60), || {
        first.assert_running();
        first.stdout().contains("Instance stopping: please wait").then_some(())
    });
    let before = std::fs::read(bp.join(".devami/state.json")).unwrap();
    let tag_before = l.home_instance(&id)["tags"]["Timeout"].clone();
    for attempt in ["extend_lifetime 1", "terminate_devinstance --force", "status"] {
        let out = l.run(attempt);
        assert_eq!(out.status.code(), Some(3), "`{attempt}` beside a waiting shell:\n{}", all(&out));
        let err = text(&out.stderr);
        assert!(err.contains(&format!("pid {}", first.pid())), "{err}");
        assert!(err.contains("in use by another devami"), "{err}");
    }
    assert_eq!(std::fs::read(bp.join(".devami/state.json")).unwrap(), before, "a refused shell wrote state");
    assert_eq!(l.home_instance(&id)["tags"]["Timeout"], tag_before, "a refused shell changed the instance");

    first.sigkill();
    // The stop had gone through at the backend before the wait began.
    assert_eq!(l.home_instance(&id)["state"], "stopped");
    let start = Instant::now();
    let out = l.ok("get_instance_state; start_devinstance --timeout 60; extend_lifetime 1");
    assert!(start.elapsed() < Duration::from_secs(30), "{:?}", start.elapsed());
    assert!(out.contains("stopped (code 80)"), "{out}");
    let st = strict_state(&bp);
    assert_eq!(instance_record(&st, &id)["timeout_minutes"], 61, "{st:#}");

    // Pairs of shells at once: each is refused (3) or succeeds, never both in the folder at once,
    // so every success counts once.
    let mut successes = 0;
    for round in 0..8 {
        let a = l.spawn("extend_lifetime 1");
        let b = l.spawn("extend_lifetime 1");
        for out in [a.finish(Duration::from_secs(60)), b.finish(Duration::from_secs(60))] {
            no_panic(&out);
            match out.status.code() {
                Some(0) => successes += 1,
                Some(3) => assert!(text(&out.stderr).contains("in use by another devami"), "{}", all(&out)),
                other => panic!("round {round}: exit {other:?}:\n{}", all(&out)),
            }
        }
        let _ = strict_state(&bp);
    }
    let st = strict_state(&bp);
    let expected = 61 + successes;
    assert_eq!(instance_record(&st, &id)["timeout_minutes"], expected, "{st:#}");
    assert_eq!(l.home_instance(&id)["tags"]["Timeout"], expected.to_string().as_str());
    assert_eq!(unexpected_in_session(&bp), Vec::<String>::new());
    l.ok("terminate_devinstance --force");
}

/// Processes whose environment names the local instance `id` (what `exec` and jobs run there).
fn instance_processes(id: &str) -> Vec<u32> {
    let needle = format!("DEVAMI_INSTANCE_ID={id}");
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == needle.as_bytes()))
        })
        .collect();
    pids.sort();
    pids
}

/// A shell killed while `exec` runs a command in the instance: the command outlives it (nothing
/// hangs it up), but it does not hold the folder's lock; terminating the instance ends it.
#[test]
fn sigkill_while_exec_runs_in_the_instance_leaves_the_lock_free() {
    let l = Local::new("crash-exec");
    let bp = l.bp();
    l.ok("launch_devinstance");
    let id = current(&strict_state(&bp));
    let mut first = l.spawn("exec touch ~/started && sleep 120");
    wait_for("the command to run in the instance", Duration::from_secs(60), || {
        first.assert_running();
        (!instance_processes(&id).is_empty()).then_some(())
    });
    first.sigkill();
    let orphans = instance_processes(&id);
    eprintln!("processes of {id} after the kill: {orphans:?}");
    let start = Instant::now();
    let out = l.ok("status; get_instance_state");
    assert!(start.elapsed() < Duration::from_secs(30), "{:?}", start.elapsed());
    assert!(out.contains("running (code 16)"), "{out}");
    let _ = strict_state(&bp);
    assert_eq!(unexpected_in_session(&bp), Vec::<String>::new());
    l.ok("terminate_devinstance --force");
    let left = wait_for("the instance's processes to end", Duration::from_secs(30), || {
        let left = instance_processes(&id);
        left.is_empty().then_some(left)
    });
    assert_eq!(left, Vec::<u32>::new());
}

// ---- 6. SIGKILL inside the local backend's own long calls (a commit, a launch) -------------------

/// The builder a pending local image's document names, once it is not `shell` (the process that
/// made the request): the detached `devami __build` that commits it.
fn builder_of(doc: &Value, shell: u32) -> Option<i32> {
    let pid = doc["builder"]["pid"].as_u64()?;
    (pid != u64::from(shell)).then(|| i32::try_from(pid).unwrap())
}

/// SIGKILL to a process that is not our child (a detached builder).
fn kill_builder(pid: i32) {
    // SAFETY: kill only sends a signal.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0, "SIGKILL builder {pid}");
    wait_for("the builder to die", Duration::from_secs(30), || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        (stat.is_empty() || stat.contains(") Z ")).then_some(())
    });
}

/// The `i-` ids of the containers the engine holds for a home (by their labels).
fn engine_instances(home: &Path) -> Vec<String> {
    use devami::backend::local::engine::{Engine, LABEL_HOME, LABEL_INSTANCE};
    let h = devami::backend::local::home::Home::at(home.to_path_buf()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut ids: Vec<String> = rt.block_on(async {
        let engine = Engine::connect(&h).await.unwrap();
        let found = engine.containers_labelled(LABEL_HOME, &h.label()).await.unwrap();
        found.into_iter().filter_map(|(_, labels, _)| labels.get(LABEL_INSTANCE).cloned()).collect()
    });
    ids.sort();
    ids
}

/// A local image is committed by a detached builder (`devami __build`) while the shell waits: a
/// shell killed during a long commit has recorded the id, and the commit goes on to the end; a
/// builder killed during the commit fails the image, naming it. A shell killed at any moment of a
/// launch leaves no container that the next shell cannot find: what the engine holds for the
/// home is found through its labels, and `sweep` shows every one of them.
#[test]
fn sigkill_inside_a_long_local_commit_or_a_launch_keeps_every_id() {
    let l = Local::new("crash-commit");
    let bp = l.bp();
    l.ok("launch_devinstance");
    // 512 MiB written outside /home: the commit takes seconds.
    l.ok(r#"exec "head -c 536870912 /dev/urandom | sudo tee /opt/big.bin > /dev/null""#);

    // A commit, the shell killed while the image is pending and the builder commits.
    let images_before = l.home_images();
    let new_pending_image = |l: &Local| {
        l.home_images()
            .into_iter()
            .find(|(id, _, st)| st == "pending" && !images_before.iter().any(|(b, _, _)| b == id))
    };
    let mut shell = l.spawn("create_devami commit-img-1");
    let (image, _, _) = wait_for("the commit to be under way", Duration::from_secs(60), || {
        shell.assert_running();
        let found = new_pending_image(&l)?;
        // Recorded by the shell, which then waits.
        std::fs::read_to_string(bp.join(".devami/state.json")).ok()?.contains(&found.0).then_some(found)
    });
    shell.sigkill();
    let st = strict_state(&bp);
    let record = st["images"].as_array().and_then(|a| a.iter().find(|r| r["id"] == image.as_str()));
    let record = record.unwrap_or_else(|| panic!("image {image} is not in state.json: {st:#}"));
    assert_eq!(record["last_state"], "pending", "{st:#}");
    assert_eq!(st["instance_saved"], true, "{st:#}");
    let out = l.ok("history; sweep");
    let sweep = &out[out.find("devami> sweep").unwrap()..];
    assert!(row_of(sweep, &image).iter().any(|c| c == "tracked"), "{sweep}");
    wait_for("the image to be available", Duration::from_secs(180), || {
        let st = l.home_image(&image)["state"].as_str().unwrap_or_default().to_string();
        assert!(
            matches!(st.as_str(), "pending" | "available"),
            "image {image} is {st}: {:#}",
            l.home_image(&image)
        );
        (st == "available").then_some(())
    });
    let out = l.ok("history");
    let row = row_of(&out, &image);
    assert_eq!((row[1].as_str(), row[2].as_str()), ("available", "commit-img-1"), "{row:?}");
    assert_ne!(row[3], "-", "{row:?}");

    // A commit whose builder is killed too: the image fails, naming it.
    let images_before = l.home_images();
    let mut shell = l.spawn("create_devami commit-img-2");
    let shell_pid = shell.pid();
    let (doomed, builder) = wait_for("the builder to be committing", Duration::from_secs(60), || {
        shell.assert_running();
        let (id, _, _) = l
            .home_images()
            .into_iter()
            .find(|(id, _, st)| st == "pending" && !images_before.iter().any(|(b, _, _)| b == id))?;
        let builder = builder_of(&l.home_image(&id), shell_pid)?;
        Some((id, builder))
    });
    shell.sigkill();
    kill_builder(builder);
    let out = l.ok("history");
    let row = row_of(&out, &doomed);
    assert_eq!((row[1].as_str(), row[2].as_str()), ("failed", "commit-img-2"), "{row:?}");
    let doc = l.home_image(&doomed);
    let reason = doc["state_reason"].as_str().unwrap_or_default();
    assert!(reason.contains(&format!("process {builder} ended")), "{doc:#}");
    l.ok_yes(&format!("sweep --deregister {doomed}"));
    assert_eq!(l.home_image(&doomed)["state"], "deregistered");
    l.ok("terminate_devinstance --force");

    // Launches killed at moments from the request to the answer: every container the engine
    // holds for the home is known to the next shell.
    // A launch takes a fraction of a second: the kills aim at its start, middle and end (one that
    // comes after the end kills nothing, and the check holds all the same).
    let mut killed = 0;
    for delay_ms in [0u64, 10, 25, 50, 100, 200] {
        let mut shell = l.spawn(&format!("launch_devinstance {image}"));
        std::thread::sleep(Duration::from_millis(delay_ms));
        if shell.sigkill_if_running() {
            killed += 1;
        }
        let out = l.ok("status; sweep");
        for id in engine_instances(&l.home()) {
            assert!(out.contains(&id), "the engine holds {id}, which the next shell does not show:\n{out}");
        }
        let _ = strict_state(&bp);
        assert_eq!(unexpected_in_session(&bp), Vec::<String>::new());
        if strict_state(&bp)["instance"].is_string() {
            l.ok_yes("terminate_devinstance --force");
        }
        for id in engine_instances(&l.home()) {
            l.ok_yes(&format!("sweep --terminate {id}"));
        }
    }
    assert!(killed >= 3, "only {killed} launches were still running when killed");
    assert_eq!(engine_instances(&l.home()), Vec::<String>::new(), "containers left in the engine");
}
