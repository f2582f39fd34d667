//! Fault injection (`DEVAMI_FAULTS`): the error-path transcripts.
//!
//! Each file of `tests/faults/` is one scenario in which the cloud misbehaves: an injected fault
//! (`src/faults.rs`) or a real one (a closed port, a killed job, a full disk, an instance
//! terminated by another process). It is a devami transcript, as in `examples/`, split into
//! *phases*: one devami process each, run one after another in the same scratch folder (a copy of
//! `blueprints/` with its own devami home), each with `devami run ARGS --check PHASE`. A step that
//! expects an error documents it: the run goes on, and every phase must exit with status 0.
//!
//! The file's first lines are `#` comments explaining the scenario. A line `# phase: TITLE`
//! starts a phase; the `#` lines after it, up to its first `devami>` input, belong to it. A file
//! without `# phase:` lines is one phase. Among those comments, directives set up the process:
//!
//! - `# env: NAME=VALUE` sets one environment variable (the value runs to the end of the line);
//! - `# args: ARGS` adds global options (split at spaces), e.g. `--backend aws --yes`;
//! - `# wrap: SHELL WORDS` runs devami through `sh -c 'SHELL WORDS "$@"' sh DEVAMI ARGS...`
//!   (e.g. inside `unshare`).
//!
//! Directives before the first `# phase:` apply to every phase, the others to their phase. Every
//! process gets no inherited AWS setting, `DEVAMI_FAULTS`, `DEVAMI_CLOCK_OFFSET` or
//! `DEVAMI_WAIT_MINUTES`, and gets the AWS test credentials of `moto.rs` (useless on the local
//! backend), a private `HOME` and `USER=faults`. In an input line, `{instance:DIR}` stands for the
//! current instance of the blueprint folder DIR (read from its `.devami/state.json` when the
//! phase starts), so a second process can act on an id that changes every run.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::moto::{ACCESS_KEY, REGION, SECRET_KEY, clean_aws_env};
use crate::support::{Scratch, all, root, text};

/// How a phase's process is set up.
#[derive(Debug, Clone, Default)]
struct Setup {
    env: Vec<(String, String)>,
    args: Vec<String>,
    wrap: Option<String>,
}

impl Setup {
    /// Reads a directive line; `false` when the line is a plain comment.
    fn directive(&mut self, line: &str, at: &str) -> bool {
        let Some(rest) = line.strip_prefix('#').map(str::trim_start) else { return false };
        if let Some(v) = rest.strip_prefix("env:") {
            let (name, value) =
                v.trim().split_once('=').unwrap_or_else(|| panic!("{at}: `# env:` wants NAME=VALUE: {line}"));
            self.env.push((name.trim().to_string(), value.to_string()));
        } else if let Some(v) = rest.strip_prefix("args:") {
            self.args.extend(v.split_whitespace().map(str::to_string));
        } else if let Some(v) = rest.strip_prefix("wrap:") {
            self.wrap = Some(v.trim().to_string());
        } else {
            return false;
        }
        true
    }

    fn merged(&self, phase: &Setup) -> Setup {
        let mut s = self.clone();
        s.env.extend(phase.env.iter().cloned());
        s.args.extend(phase.args.iter().cloned());
        if phase.wrap.is_some() {
            s.wrap = phase.wrap.clone();
        }
        s
    }
}

/// One devami process of a scenario.
#[derive(Debug)]
struct Phase {
    title: String,
    /// The line of the file where the phase starts.
    line: usize,
    setup: Setup,
    /// The transcript lines of the phase (inputs and expected output).
    body: Vec<String>,
}

/// Splits a scenario file into its phases (see the module documentation).
fn phases(path: &Path) -> Vec<Phase> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let mut common = Setup::default();
    let mut out: Vec<Phase> = Vec::new();
    // Whether the current phase has reached its first input (then `#` lines are output).
    let mut in_body = false;
    let mut seen_input = false;
    for (i, line) in text.lines().enumerate() {
        let at = format!("{name}:{}", i + 1);
        if let Some(title) = line.strip_prefix("# phase:") {
            out.push(Phase {
                title: title.trim().to_string(),
                line: i + 1,
                setup: Setup::default(),
                body: vec![],
            });
            in_body = false;
            continue;
        }
        if line.starts_with("devami>") {
            if out.is_empty() {
                out.push(Phase { title: name.clone(), line: i + 1, setup: Setup::default(), body: vec![] });
            }
            in_body = true;
            seen_input = true;
        }
        if in_body {
            out.last_mut().unwrap().body.push(line.to_string());
            continue;
        }
        let trimmed = line.trim();
        assert!(
            trimmed.is_empty() || trimmed.starts_with('#'),
            "{at}: only `#` comments may come before a phase's first input: {line}"
        );
        match out.last_mut() {
            Some(phase) => phase.setup.directive(trimmed, &at),
            None => common.directive(trimmed, &at),
        };
    }
    assert!(seen_input, "{name} has no `devami>` input");
    for p in &mut out {
        assert!(
            p.body.iter().any(|l| l.starts_with("devami>")),
            "{name}:{}: phase `{}` has no input",
            p.line,
            p.title
        );
        p.setup = common.merged(&p.setup);
    }
    out
}

/// `{instance:DIR}` in inputs: the current instance of blueprint folder DIR.
fn substitute(s: &Scratch, line: &str) -> String {
    let mut line = line.to_string();
    while let Some(start) = line.find("{instance:") {
        let end = start + line[start..].find('}').expect("a closing `}` after `{instance:`");
        let dir = &line[start + "{instance:".len()..end];
        let state = read_json(&s.path().join(dir).join(".devami/state.json"));
        let id = state["instance"]
            .as_str()
            .unwrap_or_else(|| panic!("`{dir}` has no current instance to put in `{line}`: {state}"))
            .to_string();
        line.replace_range(start..=end, &id);
    }
    line
}

fn read_json(path: &Path) -> Value {
    let t = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&t).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `devami MODE ARGS REST` in the scratch folder with the environment every phase starts from:
/// `mode` (e.g. `run`) comes before the global options of `setup`, `rest` after them.
fn command(s: &Scratch, setup: &Setup, mode: &[&str], rest: &[&str]) -> Command {
    let mut all_args: Vec<String> = mode.iter().map(|a| a.to_string()).collect();
    all_args.extend(setup.args.iter().cloned());
    all_args.extend(rest.iter().map(|a| a.to_string()));
    let mut c = match &setup.wrap {
        None => {
            let mut c = s.cmd(&[]);
            c.args(&all_args);
            c
        }
        Some(wrap) => {
            // The same environment as `Scratch::cmd`, through a shell that runs the wrapper.
            let c = s.cmd(&[]);
            let devami = c.get_program().to_owned();
            let mut w = Command::new("sh");
            w.arg("-c").arg(format!("{wrap} \"$@\"")).arg("sh").arg(devami).args(&all_args);
            w.current_dir(s.path()).stdin(Stdio::null());
            for (k, v) in c.get_envs() {
                match v {
                    Some(v) => w.env(k, v),
                    None => w.env_remove(k),
                };
            }
            w
        }
    };
    clean_aws_env(&mut c);
    let home = s.path().join("home");
    std::fs::create_dir_all(&home).expect("create HOME");
    c.env_remove("DEVAMI_FAULTS")
        .env_remove("DEVAMI_CLOCK_OFFSET")
        .env_remove("DEVAMI_WAIT_MINUTES")
        .env("HOME", &home)
        .env("USER", "faults")
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_REGION", REGION)
        .env("AWS_DEFAULT_REGION", REGION)
        .env("AWS_CONFIG_FILE", home.join("no-aws-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", home.join("no-aws-credentials"))
        .env("AWS_EC2_METADATA_DISABLED", "true");
    for (k, v) in &setup.env {
        c.env(k, v);
    }
    c
}

/// Runs every phase of the scenario file `path` in `s`, in order; `Err` describes the first
/// phase that failed or differed from its transcript.
fn run_phases(s: &Scratch, path: &Path) -> Result<(), String> {
    let name = path.file_stem().unwrap().to_string_lossy().into_owned();
    for (n, phase) in phases(path).iter().enumerate() {
        let body: Vec<String> = phase
            .body
            .iter()
            .map(|l| if l.starts_with("devami>") { substitute(s, l) } else { l.clone() })
            .collect();
        let file = s.path().join(format!(".{name}.phase{}.devami", n + 1));
        std::fs::write(&file, format!("# {}\n{}\n", phase.title, body.join("\n"))).expect("write the phase");
        let file = file.display().to_string();
        let start = Instant::now();
        let out = command(s, &phase.setup, &["run"], &["--check", &file]).output().expect("run devami");
        let took = start.elapsed();
        if !out.status.success() || all(&out).contains("panicked") {
            return Err(format!(
                "{}:{}: phase {} (`{}`) failed with {} after {took:?}:\n{}",
                path.display(),
                phase.line,
                n + 1,
                phase.title,
                out.status,
                all(&out)
            ));
        }
    }
    Ok(())
}

/// Runs every phase of `tests/faults/NAME.devami` in `s`; each must match its transcript.
fn run_scenario_in(s: &Scratch, name: &str) {
    if let Err(why) = run_phases(s, &root().join("tests/faults").join(format!("{name}.devami"))) {
        panic!("{why}");
    }
}

/// A scratch folder with a copy of `blueprints/`, where every phase of the scenario ran.
fn run_scenario(name: &str) -> Scratch {
    let s = Scratch::new().with_blueprints();
    run_scenario_in(&s, name);
    s
}

/// The scenarios with a test below; a file of `tests/faults/` missing here fails the suite.
const SCENARIOS: &[&str] = &[
    "credential-expiry",
    "disk-full",
    "endpoint-unreachable",
    "image-failure",
    "job-killed",
    "malformed-rules",
    "terminated-elsewhere",
    "throttling",
];

#[test]
fn every_fault_transcript_has_a_test() {
    let mut found: Vec<String> = std::fs::read_dir(root().join("tests/faults"))
        .expect("tests/faults/")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".devami").map(str::to_string))
        .collect();
    found.sort();
    assert_eq!(found, SCENARIOS, "tests/faults/ and the list of scenarios in faults.rs differ");
    for name in SCENARIOS {
        let phases = phases(&root().join("tests/faults").join(format!("{name}.devami")));
        assert!(!phases.is_empty(), "{name}");
    }
}

#[test]
fn the_phase_splitter_reads_directives_and_keeps_output_comments() {
    let s = Scratch::new();
    let p = s.write(
        "x.devami",
        "# about\n# env: A=1;2 3\n# args: --yes\n# phase: one\n# env: B=x=y\ndevami> status\n# out\n\n\
         # phase: two\n# wrap: env\ndevami> history\n",
    );
    let ph = phases(&p);
    assert_eq!(ph.len(), 2);
    assert_eq!(ph[0].title, "one");
    assert_eq!(
        ph[0].setup.env,
        [("A".to_string(), "1;2 3".to_string()), ("B".to_string(), "x=y".to_string())]
    );
    assert_eq!(ph[0].setup.args, ["--yes"]);
    assert_eq!(ph[0].body, ["devami> status", "# out", ""]);
    assert_eq!(ph[1].setup.env.len(), 1);
    assert_eq!(ph[1].setup.wrap.as_deref(), Some("env"));
}

/// The harness fails on a difference in any phase, not only the first.
#[test]
fn a_drifted_fault_transcript_fails() {
    let text = std::fs::read_to_string(root().join("tests/faults/credential-expiry.devami")).unwrap();
    let drifted = text.replacen("Instance [ID] is running, not safe", "Instance [ID] is up, not safe", 1);
    assert_ne!(text, drifted, "the drift probe no longer applies");
    let s = Scratch::new().with_blueprints();
    let path = s.write("drifted.devami", drifted);
    let why = run_phases(&s, &path).expect_err("a drifted transcript passed");
    assert!(why.contains("phase 2 (`renewed credentials"), "{why}");
    assert!(why.contains("- Instance [ID] is up, not safe"), "{why}");
    s.run(&["blueprints/word-stats", "-c", "terminate --force"]);
}

#[test]
fn endpoint_unreachable() {
    let s = run_scenario("endpoint-unreachable");
    // What a user running the command alone sees: one error and its cause, exit status 1.
    let setup = Setup {
        args: ["--backend", "aws", "--endpoint-url", "http://127.0.0.1:1"].map(String::from).to_vec(),
        ..Setup::default()
    };
    let out = command(&s, &setup, &[], &["blueprints/word-stats", "-c", "launch_devinstance"])
        .output()
        .expect("run devami");
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    let err = text(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert_eq!(lines[0], "error: connecting to AWS failed");
    assert!(lines[1].starts_with("  caused by: cannot reach `http://127.0.0.1:1`: "), "{err}");
    assert!(!all(&out).contains(SECRET_KEY), "the secret key leaked");
    assert!(
        !s.path().join("blueprints/word-stats/.devami/state.json").exists(),
        "a state was recorded although nothing happened"
    );
}

#[test]
fn malformed_rules() {
    let s = run_scenario("malformed-rules");
    let setup = Setup {
        env: vec![("DEVAMI_FAULTS".into(), "describe_instance#2=throttle;frobnicate=fail".into())],
        ..Setup::default()
    };
    let out = command(&s, &setup, &[], &["blueprints/word-stats", "-c", "ls"]).output().expect("run devami");
    assert_eq!(out.status.code(), Some(2), "{}", all(&out));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: invalid DEVAMI_FAULTS rule `frobnicate=fail`: unknown call `frobnicate`"),
        "{err}"
    );
}

#[test]
fn throttling() {
    run_scenario("throttling");
}

#[test]
fn credential_expiry() {
    run_scenario("credential-expiry");
}

#[test]
fn image_failure() {
    run_scenario("image-failure");
}

#[test]
fn terminated_elsewhere() {
    run_scenario("terminated-elsewhere");
}

/// The processes of this machine whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .expect("read /proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.windows(needle.len()).any(|w| w == needle.as_bytes()))
        })
        .collect()
}

#[test]
fn job_killed() {
    const DATASET: &str = "faults-killed-job.txt";
    let s = Scratch::new().with_blueprints();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_scenario_in(&s, "job-killed")));
    // Terminating the instance ended the job's leftover processes (soon, not necessarily at once).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut left = processes_with(DATASET);
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        left = processes_with(DATASET);
    }
    if !left.is_empty() {
        // Do not leave them behind, whatever the outcome (they are this test's own).
        let _ = Command::new("kill").arg("-KILL").args(left.iter().map(u32::to_string)).status();
    }
    if let Err(panic) = result {
        let _ = Command::new(crate::support::bin())
            .args(["blueprints/word-stats", "-c", "terminate --force"])
            .current_dir(s.path())
            .env("DEVAMI_HOME", s.path().join(".devami-home"))
            .output();
        std::panic::resume_unwind(panic);
    }
    assert!(left.is_empty(), "processes of the killed job outlived the instance: {left:?}");
}

#[test]
fn disk_full() {
    let unshare = Command::new("unshare").args(["-Urm", "true"]).output();
    assert!(
        unshare.as_ref().is_ok_and(|o| o.status.success()),
        "`unshare -Urm` cannot run here ({:?}); this test needs util-linux's unshare and user namespaces",
        unshare.map(|o| all(&o))
    );
    let s = Scratch::new().with_blueprints();
    s.write("big.bin", (0..4u32 << 20).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    run_scenario_in(&s, "disk-full");
    // The wrapper listed the full folder after devami ended: nothing under the final name, and
    // no temporary file either.
    let listing =
        std::fs::read_to_string(s.path().join("small.ls")).expect("the wrapper's listing of small/");
    assert_eq!(listing, "", "files were left in the full folder");
    // The second download, to a disk with room, is complete.
    let copy = std::fs::read(s.path().join("big-copy.bin")).expect("big-copy.bin");
    assert!(copy == std::fs::read(s.path().join("big.bin")).unwrap(), "the copy differs from the upload");
}

/// `hang` never answers, yet Ctrl-C ends the command (the session drops the call).
#[test]
fn a_hung_call_is_cancelled_by_ctrl_c() {
    let s = Scratch::new().with_blueprints();
    let setup =
        Setup { env: vec![("DEVAMI_FAULTS".into(), "resolve_alias=hang".into())], ..Setup::default() };
    let mut child = command(&s, &setup, &[], &["blueprints/word-stats", "-c", "launch_devinstance ubuntu18"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start devami");
    // The echo of the command comes after the Ctrl-C handler is installed and the flag cleared.
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    stdout.read_line(&mut first).expect("read devami's output");
    assert_eq!(first, "devami> launch_devinstance ubuntu18\n");
    // Ctrl-C until it ends (the call hangs from the moment the alias is resolved).
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for devami") {
            break status;
        }
        assert!(Instant::now() < deadline, "devami did not end within 30 s of Ctrl-C");
        // SAFETY: signals our own child process.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).expect("read devami's output");
    let out = child.wait_with_output().expect("devami's output");
    let shown = format!("{first}{rest}{}", text(&out.stderr));
    assert_eq!(status.code(), Some(130), "{shown}");
    assert!(text(&out.stderr).contains("error: interrupted"), "{shown}");
    let state: PathBuf = s.path().join("blueprints/word-stats/.devami/state.json");
    assert!(!state.exists() || read_json(&state)["instance"].is_null(), "an instance was recorded");
}
