//! Helpers shared by the integration tests: a scratch folder and a way to run the binary in it.

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
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.args(args)
            .current_dir(self.path())
            .env("DEVAMI_HOME", self.path().join(".devami-home"))
            .env("DEVAMI_HISTORY", self.path().join(".history"))
            .env_remove("DEVAMI_BACKEND")
            .stdin(Stdio::null());
        c
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

impl Drop for Scratch {
    /// A failed test may leave an instance running: detach its filesystem so nothing stays
    /// mounted once the scratch folder is gone (its S3 endpoint exits by itself).
    fn drop(&mut self) {
        let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return };
        let prefix = self.path().display().to_string();
        for line in info.lines() {
            let Some(mount_point) = line.split(' ').nth(4) else { continue };
            if mount_point.starts_with(&prefix)
                && let Ok(c) = std::ffi::CString::new(mount_point)
            {
                // SAFETY: a valid NUL-terminated path; MNT_DETACH cannot hurt other mounts.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
        }
    }
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
