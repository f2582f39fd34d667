//! Helpers shared by the integration tests, each defined once here: a scratch folder and ways to
//! run the binary in it (also in the background), checks of its output, and polling.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The devami binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_devami"))
}

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A scratch folder with its own devami home and history, removed at the end.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Scratch {
        Scratch { dir: tempfile::tempdir().expect("create a temporary folder") }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A `devami` command running in the scratch folder with an isolated environment.
    /// Every alias resolves to the tests' base image (`DEVAMI_TEST_BASE`, imported by
    /// tests/run.sh), and what the engine holds for the test is labelled `devami.test=1`.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.args(args)
            .current_dir(self.path())
            .env("DEVAMI_HOME", self.home())
            .env("DEVAMI_HISTORY", self.path().join(".history"))
            .env("DEVAMI_TEST_LABEL", "1")
            .env_remove("DEVAMI_BACKEND")
            .stdin(Stdio::null());
        for (alias, ..) in devami::backend::local::images::ALIASES {
            c.env(devami::backend::local::images::override_var(alias), base_image());
        }
        c
    }

    /// The scratch folder's devami home.
    pub fn home(&self) -> PathBuf {
        self.path().join(".devami-home")
    }

    /// Copies the repository's `blueprints/` into the scratch folder (tutorials work on copies).
    pub fn with_blueprints(self) -> Scratch {
        copy_dir(&root().join("blueprints"), &self.path().join("blueprints"));
        self
    }

    /// Runs devami with `stdin` as its input.
    pub fn run_with_stdin(&self, args: &[&str], stdin: &[u8]) -> Output {
        use std::io::Write;
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn devami");
        let mut input = child.stdin.take().expect("stdin");
        let data = stdin.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = input.write_all(&data);
        });
        let out = child.wait_with_output().expect("wait for devami");
        writer.join().expect("stdin writer");
        out
    }

    /// Runs devami with no input.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run devami")
    }

    /// Writes a file under the scratch folder.
    pub fn write(&self, rel: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path().join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("create parent");
        }
        std::fs::write(&p, contents).expect("write file");
        p
    }

    /// Creates a blueprint with `devami init NAME` and returns its folder.
    pub fn init(&self, name: &str) -> PathBuf {
        let out = self.run(&["init", name]);
        assert!(out.status.success(), "init failed: {}", text(&out.stderr));
        self.path().join(name)
    }
}

/// Lossy text of a byte buffer.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// stdout and stderr together, for messages.
pub fn all(out: &Output) -> String {
    format!("{}{}", text(&out.stdout), text(&out.stderr))
}

/// Copies a folder tree (files, folders and permissions).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create folder");
    for entry in std::fs::read_dir(from).expect("read folder") {
        let entry = entry.expect("read entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

/// The engine reference every alias resolves to in the tests.
pub fn base_image() -> String {
    std::env::var("DEVAMI_TEST_BASE").ok().filter(|b| !b.is_empty()).unwrap_or_else(|| {
        panic!(
            "DEVAMI_TEST_BASE is not set: run the tests with `bash tests/run.sh`, which starts the \
             container engine and imports the base OS image they launch instances from"
        )
    })
}

impl Drop for Scratch {
    /// Leaves nothing of the test behind: the engine's containers and images of this home, and
    /// its S3 endpoint and job supervisors.
    fn drop(&mut self) {
        let home = self.home();
        if !home.exists() {
            return;
        }
        remove_engine_objects(&home);
        if let Ok(text) = std::fs::read_to_string(home.join("run/s3.json"))
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
            && let Some(pid) = v["pid"].as_i64()
        {
            // SAFETY: plain system call on the endpoint daemon this test's home started.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        }
    }
}

/// Removes the containers and images the engine holds for `home` (by their `devami.home` label).
pub fn remove_engine_objects(home: &Path) {
    use devami::backend::local::engine::{Engine, LABEL_HOME};
    use devami::backend::local::home::Home;
    let Ok(h) = Home::at(home.to_path_buf()) else { return };
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
    rt.block_on(async {
        let Ok(engine) = Engine::connect(&h).await else { return };
        let label = h.label();
        for (id, ..) in engine.containers_labelled(LABEL_HOME, &label).await.unwrap_or_default() {
            let _ = engine.remove(&id).await;
        }
        for _ in 0..4 {
            let images = engine.images_labelled(LABEL_HOME, &label).await.unwrap_or_default();
            if images.is_empty() {
                break;
            }
            for image in images {
                let _ = engine.remove_image(&image.id).await;
            }
        }
    });
}

/// Fails when devami panicked (its output names the panic).
pub fn no_panic(out: &Output) {
    let t = all(out);
    assert!(!t.contains("panicked") && !t.contains("RUST_BACKTRACE"), "devami panicked:\n{t}");
}

/// Whether two files exist and have the same bytes (read in 4 MiB blocks).
pub fn same_file(a: &Path, b: &Path) -> bool {
    let (Ok(ma), Ok(mb)) = (std::fs::metadata(a), std::fs::metadata(b)) else { return false };
    if ma.len() != mb.len() {
        return false;
    }
    let (mut fa, mut fb) = (std::fs::File::open(a).unwrap(), std::fs::File::open(b).unwrap());
    let (mut ba, mut bb) = (vec![0u8; 4 << 20], vec![0u8; 4 << 20]);
    loop {
        let n = read_full(&mut fa, &mut ba);
        if n != read_full(&mut fb, &mut bb) || ba[..n] != bb[..n] {
            return false;
        }
        if n == 0 {
            return true;
        }
    }
}

fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> usize {
    use std::io::Read;
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]).unwrap() {
            0 => break,
            k => n += k,
        }
    }
    n
}

/// Every file under `dir`, relative, sorted.
pub fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(e.path());
            } else {
                out.push(e.path().strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

/// Polls `f` every `every` until it holds; fails after `limit`.
pub fn poll_until(
    what: &str,
    limit: std::time::Duration,
    every: std::time::Duration,
    mut f: impl FnMut() -> bool,
) {
    let start = std::time::Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(every);
    }
}

/// Polls `f` every 20 ms until it gives a value, and returns it; fails after `limit`.
pub fn poll<T>(what: &str, limit: std::time::Duration, f: impl FnMut() -> Option<T>) -> T {
    poll_every(what, limit, std::time::Duration::from_millis(20), f)
}

/// Polls `f` every `every` until it gives a value, and returns it; fails after `limit`.
pub fn poll_every<T>(
    what: &str,
    limit: std::time::Duration,
    every: std::time::Duration,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let mut value = None;
    poll_until(what, limit, every, || {
        value = f();
        value.is_some()
    });
    value.expect("poll_until returns once there is a value")
}

/// Exit status 1, an `error:` line on stderr, no panic.
pub fn assert_failed_cleanly(out: &Output, commands: &str) {
    no_panic(out);
    assert_eq!(out.status.code(), Some(1), "`{commands}` should fail with status 1:\n{}", all(out));
    assert!(
        text(&out.stderr).lines().any(|l| l.starts_with("error:")),
        "`{commands}`: no `error:` line on stderr:\n{}",
        all(out)
    );
}

/// The first `error:` line of stderr.
pub fn error_line(out: &Output) -> String {
    text(&out.stderr).lines().find(|l| l.starts_with("error:")).unwrap_or_default().to_string()
}

/// A JSON file such as a session's `.devami/state.json`; `Null` when it is missing or does not
/// parse.
pub fn read_state(path: &Path) -> serde_json::Value {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(serde_json::Value::Null)
}

static BACKGROUND: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A devami running in the background, its output in files; killed on drop if still running.
pub struct Background {
    child: std::process::Child,
    out_path: PathBuf,
    err_path: PathBuf,
    started: std::time::Instant,
    commands: String,
}

impl Background {
    /// Starts `cmd` (devami running `commands`) with its output going to files in `dir`.
    pub fn spawn(mut cmd: Command, dir: &Path, commands: &str) -> Background {
        let n = BACKGROUND.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let out_path = dir.join(format!(".bg{n}.out"));
        let err_path = dir.join(format!(".bg{n}.err"));
        let child = cmd
            .stdout(std::fs::File::create(&out_path).unwrap())
            .stderr(std::fs::File::create(&err_path).unwrap())
            .spawn()
            .expect("start devami");
        Background {
            child,
            out_path,
            err_path,
            started: std::time::Instant::now(),
            commands: commands.to_string(),
        }
    }

    pub fn running(&mut self) -> bool {
        self.child.try_wait().expect("poll devami").is_none()
    }

    /// Waits for the end, at most `limit` after the start (then kills it and fails); returns the
    /// output and how long it ran.
    pub fn finish(mut self, limit: std::time::Duration) -> (Output, std::time::Duration) {
        let status = loop {
            if let Some(st) = self.child.try_wait().expect("poll devami") {
                break st;
            }
            if self.started.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "`{}` still ran after {limit:?}; killed. Output so far:\n{}{}",
                    self.commands,
                    std::fs::read_to_string(&self.out_path).unwrap_or_default(),
                    std::fs::read_to_string(&self.err_path).unwrap_or_default()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let elapsed = self.started.elapsed();
        let out = Output {
            status,
            stdout: std::fs::read(&self.out_path).unwrap_or_default(),
            stderr: std::fs::read(&self.err_path).unwrap_or_default(),
        };
        (out, elapsed)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
