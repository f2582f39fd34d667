//! Property-based fuzz harnesses for the parsers (proptest).
//!
//! Four harnesses, one per parser of text devami does not control:
//! - `parser`: command lines (`parse::parse_line`, `split_commands`, `completion_context`);
//! - `blueprint`: `stack_config_template.json` (`Blueprint::from_text`, the getters,
//!   `placeholders`, `lint::check`, `set_ami` and the text it writes);
//! - `submit`: submit files (`submit::parse_submit`) and COMMAND filling (`fill_command`, run by
//!   `bash -c`);
//! - `transcript`: scripts, transcripts and markdown pages (`transcript::parse`,
//!   `render_transcript`, `check_output`).
//!
//! Each harness mixes arbitrary text, generated near-valid text and mutations of valid text, and
//! checks that nothing panics plus the properties written on its `check_*` function. Structured
//! inputs are decoded from a [`Tape`] of random numbers that proptest generates and shrinks.
//!
//! proptest runs the cases in a child process of this test (its `fork` and `timeout`), so a case
//! that crashes the process (a stack overflow aborts it) or hangs is a failing input like any
//! other, and is minimized. Two modes, one code path ([`drive`]):
//! - the normal suite runs a fixed number of cases per harness from a fixed seed (a few seconds
//!   in a debug build; at most 40 cases spawn `bash`);
//! - `DEVAMI_FUZZ_SECONDS=N` runs rounds with fresh seeds (from `DEVAMI_FUZZ_SEED` when set) for
//!   N seconds, saves each new kind of failure in `tests/fuzz-regressions/` and prints a
//!   `fuzz-summary` line (`--nocapture` shows it; `benches/fuzz.sh` runs each harness so). Time
//!   bounds (a 100 KB line in under a second, linear scaling) are checked only there and in
//!   replays.
//!
//! [`regressions`] replays every file of `tests/fuzz-regressions/` (see the README there), so a
//! known bug keeps failing the suite, with its note, until it is fixed. While a bug is open, a
//! switch below (`SEMICOLON_RUNS`, ...) steers the generators around it so that the harnesses
//! keep finding other bugs.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Debug;
use std::fs;
use std::io::Read;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use devami::blueprint::{self, Blueprint};
use devami::blueprint::{lint, spans, submit};
use devami::commands::{self, ArgKind, ArgSpec, CommandSpec};
use devami::parse::{self, Completion, Line, Value};
use devami::transcript;
use proptest::prelude::*;
use proptest::test_runner::{
    Config, RngAlgorithm, RngSeed, TestCaseError, TestCaseResult, TestError, TestRunner,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};

use crate::support::root;

// =============================================================================================
// The driver: normal and long mode, regression files.

/// The seed of the normal suite; each harness mixes in its name.
const NORMAL_SEED: u64 = 0x6465_7661_6d69_f022;

/// The time bound for parsing a line of about 100 KB (long mode and replays of release builds).
const LINEAR_BOUND: Duration = Duration::from_secs(1);

/// How long one case may run before it counts as a hang (proptest kills the child running it).
const HANG: Duration = Duration::from_secs(30);

/// How many cases of the normal suite run `bash` (each one spawns two processes).
const NORMAL_BASH_RUNS: u32 = 40;

/// How long one run of proptest (the normal suite's cases of a harness, or one round of the long
/// mode) may check cases, the shrinking of a failure included; later cases pass unchecked. Every
/// shrinking step of a case that hangs costs [`HANG`] or more, so shrinking it could take hours.
const RUN_LIMIT: Duration = Duration::from_secs(300);

/// How many failing inputs one long run saves at most.
const MAX_FINDINGS: usize = 8;

// Known bugs in src/. While one is open, the generators steer around it (or the check lets it
// pass) so that the harnesses keep finding new bugs instead of this one on every run; its
// regression file in tests/fuzz-regressions/ fails the suite until it is fixed. Turn a switch
// on once its file passes.

/// parser-semicolon-stack-overflow.json (fixed): the shell form recursed once per `;`. On: big
/// lines may be runs of `;`.
const SEMICOLON_RUNS: bool = true;

/// parser-newline-runs-quadratic.json (fixed): `split_commands` rescanned all the blank text
/// after each newline. On: big lines may be runs of newlines.
const NEWLINE_RUNS: bool = true;

/// parser-raw-text-in-message.json (fixed): the hint "needs parentheses in the call form" quoted
/// the object part of `OBJECT.COMMAND` raw (control characters, any length). On: that message is
/// checked like every other.
const RAW_OBJECT_IN_HINT: bool = true;

/// Set while replaying a regression file: the known bugs are checked like any other.
static REPLAYING: AtomicBool = AtomicBool::new(false);

/// submit-backslash-*.json (fixed: such templates are refused): `fill_command` let a value after
/// `\` out of its quotes. On: generated templates put a backslash right before a placeholder
/// (`\{}`, `"\{}"`).
const BACKSLASH_BEFORE_PLACEHOLDER: bool = true;

/// The duration of the long mode, from `DEVAMI_FUZZ_SECONDS`; `None` in the normal suite.
fn long_mode() -> Option<Duration> {
    let text = std::env::var("DEVAMI_FUZZ_SECONDS").ok()?;
    match text.trim().parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 => Some(Duration::from_secs_f64(s)),
        _ => panic!("DEVAMI_FUZZ_SECONDS must be a positive number of seconds, not {text:?}"),
    }
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// How many cases a harness runs.
#[derive(Clone, Copy)]
struct Cases {
    /// The normal suite's cases.
    normal: u32,
    /// The cases of one round of the long mode: one to a few seconds in a release build (at the
    /// rates of benches/results/fuzz.md).
    round: u32,
}

impl Cases {
    /// The cases of one round in this build: a debug build runs an eighth, so that the last
    /// round ends soon after the time is up there too.
    fn round(self) -> u32 {
        if cfg!(debug_assertions) { (self.round / 8).max(1) } else { self.round }
    }
}

/// The runner's configuration for `cases` cases of `harness` from `seed`.
///
/// The cases run in a child process of the test `fuzz::<harness>_harness` (proptest's `fork`),
/// which proptest starts again after a crash or a case that runs longer than [`HANG`] (its
/// `timeout`), and which reports each case's result back so that the failing input is minimized.
/// The child runs the test from its start and takes the configuration of the first run it reaches,
/// so every run of one harness in one mode must have the same `cases` (its seed comes from the
/// parent). rusty-fork, which starts the child, refuses test-harness flags it does not know: with
/// `--no-capture` (spelled `--nocapture`, it forks) the cases run in this process.
///
/// No failure persistence: proptest's keeps seeds, which replay only with the generators of the
/// day and carry no notes; the failing inputs are kept as JSON files instead (see [`regressions`]).
fn config(harness: &'static str, cases: u32, seed: u64) -> Config {
    let fork = !std::env::args().any(|a| a == "--no-capture");
    Config {
        cases,
        failure_persistence: None,
        source_file: None,
        max_shrink_iters: 4_000,
        max_shrink_time: 120_000,
        max_global_rejects: 1_000_000,
        rng_algorithm: RngAlgorithm::XorShift,
        rng_seed: RngSeed::Fixed(seed),
        fork,
        timeout: if fork { HANG.as_millis() as u32 } else { 0 },
        test_name: Some(String::leak(format!("{}::{harness}_harness", module_path!()))),
        ..Config::default()
    }
}

/// The folder of regression inputs.
fn regressions_dir() -> PathBuf {
    root().join("tests/fuzz-regressions")
}

/// Writes a minimized failing input as `tests/fuzz-regressions/<harness>-<id>.json`.
fn save_regression<C: Serialize>(harness: &str, case: &C, reason: &str, origin: &str) -> PathBuf {
    let case = serde_json::to_value(case).expect("a case serializes");
    let id = fnv(format!("{harness}\n{case}").as_bytes()) & 0xffff_ffff_ffff;
    let path = regressions_dir().join(format!("{harness}-{id:012x}.json"));
    let doc = json!({
        "harness": harness,
        "reason": reason,
        "origin": origin,
        "note": "",
        "case": case,
    });
    let mut text = serde_json::to_string_pretty(&doc).expect("a document serializes");
    text.push('\n');
    fs::create_dir_all(regressions_dir()).expect("create tests/fuzz-regressions");
    fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

/// Runs one harness: `cases.normal` cases from a fixed seed, or rounds with fresh seeds for
/// `DEVAMI_FUZZ_SECONDS`. `check` returns what is wrong with a case; a panic is a failure too.
fn drive<C, S>(harness: &'static str, cases: Cases, strategy: S, check: fn(&C) -> Result<(), String>)
where
    C: Debug + Serialize + 'static,
    S: Strategy<Value = C>,
{
    // The cases checked, shrinking included. The child checks them; this process counts them when
    // proptest replays the child's results here, which takes every case from the strategy again.
    let count = Arc::new(AtomicU64::new(0));
    let strategy = {
        let count = Arc::clone(&count);
        strategy.prop_map(move |case| {
            count.fetch_add(1, Ordering::Relaxed);
            case
        })
    };
    let test = |case: C| {
        if may_check(harness) { check(&case).map_err(TestCaseError::fail) } else { Ok(()) }
    };
    let Some(budget) = long_mode() else {
        let started = Instant::now();
        let seed = NORMAL_SEED ^ fnv(harness.as_bytes());
        let result = run(harness, cases.normal, seed, &strategy, test);
        println!(
            "fuzz-summary harness={harness} mode=normal cases={} seconds={:.2}",
            count.load(Ordering::Relaxed),
            started.elapsed().as_secs_f64()
        );
        match result {
            // Past the limit, the children pass the cases left without checking them.
            Ok(()) if started.elapsed() >= RUN_LIMIT => panic!(
                "fuzz harness `{harness}` ran past its {RUN_LIMIT:?} limit: the cases after it were not checked"
            ),
            Ok(()) => return,
            Err(TestError::Abort(reason)) => panic!("fuzz harness `{harness}` aborted: {reason}"),
            Err(TestError::Fail(_, case)) => panic!(
                "fuzz harness `{harness}` found a failing input (minimized):\n  failure: {}\n  case: {}\n\
                 save it in tests/fuzz-regressions/ (see the README there), or run the long mode, which saves it",
                reason_of(harness, &case),
                serde_json::to_string(&case).unwrap_or_default()
            ),
        }
    };
    fuzz_for(harness, budget, cases.round(), &strategy, test, &count);
}

/// One run of proptest: `cases` cases of `harness` from `seed`, in its children (see [`config`]),
/// which may check cases for [`RUN_LIMIT`].
fn run<S: Strategy>(
    harness: &'static str,
    cases: u32,
    seed: u64,
    strategy: &S,
    test: impl Fn(S::Value) -> TestCaseResult,
) -> Result<(), TestError<S::Value>> {
    // proptest's child runs the test from its start too, and gets here: it finds the file of its
    // parent, and only reads it. The parent removes its file at the end (`TempPath`).
    let in_child = deadline_file(harness, std::os::unix::process::parent_id()).exists();
    let _deadline = (!in_child).then(|| {
        let file = deadline_file(harness, std::process::id());
        let until = (SystemTime::now() + RUN_LIMIT).duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
        fs::write(&file, until.to_string()).unwrap_or_else(|e| panic!("write {}: {e}", file.display()));
        tempfile::TempPath::try_from_path(file).expect("an absolute path")
    });
    TestRunner::new(config(harness, cases, seed)).run(strategy, test)
}

/// The file in which the process `parent` tells proptest's children until when they may check
/// the cases of `harness` (a Unix time in milliseconds): a child cannot be given anything else.
fn deadline_file(harness: &str, parent: u32) -> PathBuf {
    std::env::temp_dir().join(format!("devami-fuzz-{parent}-{harness}.deadline"))
}

/// Whether this child of proptest may still check the cases of `harness` (see [`RUN_LIMIT`]).
fn may_check(harness: &str) -> bool {
    static UNTIL: OnceLock<Option<u128>> = OnceLock::new();
    let until = UNTIL.get_or_init(|| {
        let file = deadline_file(harness, std::os::unix::process::parent_id());
        fs::read_to_string(file).ok()?.trim().parse().ok()
    });
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    until.is_none_or(|until| now < until)
}

/// The base seed of a long run: `DEVAMI_FUZZ_SEED`, or the clock.
fn base_seed(harness: &str) -> u64 {
    std::env::var("DEVAMI_FUZZ_SEED").ok().and_then(|s| s.trim().parse::<u64>().ok()).unwrap_or_else(|| {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
            ^ fnv(harness.as_bytes())
    })
}

/// The kind of a failure: the letters of its first line outside quoted text (user input), so
/// that the same bug found with different inputs is saved once per run.
fn signature(reason: &str) -> String {
    let mut out = String::new();
    let (mut quoted, mut escaped) = (false, false);
    for c in first_line(reason).chars() {
        match c {
            '\\' if quoted => escaped = !escaped,
            '"' if !escaped => quoted = !quoted,
            c if !quoted && c.is_alphabetic() => out.push(c),
            _ => {}
        }
        if c != '\\' {
            escaped = false;
        }
    }
    out.chars().take(80).collect()
}

/// The long mode: rounds of `round` cases, each from a seed of its own (the base seed and the
/// round's number give it, so `DEVAMI_FUZZ_SEED` repeats a run of the same build), until
/// `budget` has passed. Saves the first failing input of each kind (at most [`MAX_FINDINGS`]),
/// prints a `fuzz-finding` line for each and a `fuzz-summary` line (read by benches/fuzz.sh),
/// and fails when it found any.
fn fuzz_for<C, S>(
    harness: &'static str,
    budget: Duration,
    round: u32,
    strategy: &S,
    test: impl Fn(C) -> TestCaseResult,
    count: &AtomicU64,
) where
    C: Debug + Serialize,
    S: Strategy<Value = C>,
{
    let started = Instant::now();
    let base = base_seed(harness);
    let mut findings: Vec<String> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut rounds: u64 = 0;
    while rounds == 0 || started.elapsed() < budget {
        let seed = splitmix(base.wrapping_add(rounds));
        let origin = format!("long run, DEVAMI_FUZZ_SEED={base}, round {rounds} (seed {seed})");
        rounds += 1;
        match run(harness, round, seed, strategy, &test) {
            Ok(()) => {}
            // Not a failing input but a run that cannot go on (the child does not start, ...).
            Err(TestError::Abort(reason)) => {
                let finding = format!("file=- reason=aborted: {reason}");
                println!("fuzz-finding harness={harness} {finding}");
                findings.push(finding);
                break;
            }
            Err(TestError::Fail(_, case)) => {
                let reason = reason_of(harness, &case);
                if seen.insert(signature(&reason)) && findings.len() < MAX_FINDINGS {
                    let path = save_regression(harness, &case, &reason, &origin);
                    let finding = format!("file={} reason={}", path.display(), first_line(&reason));
                    println!("fuzz-finding harness={harness} {finding}");
                    findings.push(finding);
                }
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let cases = count.load(Ordering::Relaxed);
    println!(
        "fuzz-summary harness={harness} mode=long cases={cases} seconds={seconds:.1} rate={:.1} findings={} base_seed={base} rounds={rounds}",
        cases as f64 / seconds.max(1e-3),
        findings.len()
    );
    assert!(
        findings.is_empty(),
        "fuzz harness `{harness}` found {} failing input(s), saved in tests/fuzz-regressions/:\n{}",
        findings.len(),
        findings.join("\n")
    );
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// Checks a case read from a regression file, catching panics.
fn replay<C: DeserializeOwned>(case: &Json, check: impl Fn(&C) -> Result<(), String>) -> Result<(), String> {
    let case: C =
        serde_json::from_value(case.clone()).map_err(|e| format!("the case does not deserialize: {e}"))?;
    match std::panic::catch_unwind(AssertUnwindSafe(|| check(&case))) {
        Ok(result) => result,
        Err(payload) => Err(format!("panicked: {}", panic_message(payload.as_ref()))),
    }
}

/// Replays one regression file: what is wrong, or `Ok`. `as_found`: check the case as its harness
/// does in this mode; otherwise as a regression (time bounds, `bash` and the known bugs always
/// checked).
fn replay_file(path: &Path, as_found: bool) -> Result<(), String> {
    let text = fs::read_to_string(path).map_err(|e| format!("cannot read it: {e}"))?;
    let doc: Json = serde_json::from_str(&text).map_err(|e| format!("not JSON: {e}"))?;
    let case = &doc["case"];
    match doc["harness"].as_str().unwrap_or("") {
        "parser" if as_found => replay(case, check_parser),
        "parser" => replay(case, |c| check_parser_with(c, Some(replay_bound()))),
        "blueprint" => replay(case, check_blueprint),
        "submit" if as_found => replay(case, check_submit),
        "submit" => replay(case, |c| check_submit_with(c, true)),
        "transcript" => replay(case, check_transcript),
        other => Err(format!("unknown harness `{other}` (expected parser, blueprint, submit or transcript)")),
    }
}

/// Replays the file at `path` in a child process of this test ([`replay_one`]), so that a case
/// that crashes the process fails cleanly, and one that runs longer than [`HANG`] is killed:
/// what is wrong, or `Ok`. `as_found` as for [`replay_file`].
fn replay_in_child(path: &Path, as_found: bool) -> Result<(), String> {
    use std::io::{Seek, SeekFrom};
    let exe = std::env::current_exe().expect("the test binary's path");
    let (mut stdout, mut stderr) =
        (tempfile::tempfile().expect("a file"), tempfile::tempfile().expect("a file"));
    let mut command = Command::new(&exe);
    command
        .args(["--exact", "fuzz::replay_one", "--nocapture", "--test-threads", "1"])
        .env("DEVAMI_FUZZ_REPLAY", path)
        .stdin(Stdio::null())
        .stdout(stdout.try_clone().expect("a file"))
        .stderr(stderr.try_clone().expect("a file"));
    if as_found {
        command.env("DEVAMI_FUZZ_AS_FOUND", "1");
    } else {
        command.env_remove("DEVAMI_FUZZ_SECONDS");
    }
    let mut child = command.spawn().expect("run the replay child");
    let (started, mut pause) = (Instant::now(), Duration::from_millis(1));
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the replay child") {
            break Some(status);
        }
        if started.elapsed() > HANG {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    };
    let read = |f: &mut fs::File| {
        let mut text = String::new();
        let _ = f.seek(SeekFrom::Start(0)).and_then(|_| f.read_to_string(&mut text));
        text
    };
    let (stdout, stderr) = (read(&mut stdout), read(&mut stderr));
    let Some(status) = status else {
        return Err(format!("hang: the replay ran for more than {} s", HANG.as_secs()));
    };
    if status.success() && stdout.contains("fuzz-replay-ok") {
        return Ok(());
    }
    let reported = stdout.lines().find_map(|l| l.split_once("fuzz-replay-failure: ").map(|(_, m)| m));
    Err(match reported.and_then(|m| serde_json::from_str::<String>(m).ok()) {
        Some(message) => message,
        None => {
            let tail: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
            format!("the replay crashed ({status}): {}", tail[tail.len().saturating_sub(3)..].join(" | "))
        }
    })
}

/// What is wrong with a failing input proptest found: the case checked again in a replay child
/// as its harness checks it, since proptest's fork passes back only that a case failed, not why.
fn reason_of<C: Serialize>(harness: &str, case: &C) -> String {
    let file = tempfile::NamedTempFile::new().expect("a temporary file");
    fs::write(file.path(), json!({ "harness": harness, "case": case }).to_string()).expect("write the case");
    match replay_in_child(file.path(), true) {
        Err(reason) => reason,
        Ok(()) => "failed in proptest's child process, but passes when checked again (a time bound?)".into(),
    }
}

/// Replays every input in `tests/fuzz-regressions/`, each in its own process; each failing one
/// names its bug. (Not proptest's fork: it runs a whole test in its child, which stops at the
/// first failing case, and the replay reports every failing file with its note.)
#[test]
fn regressions() {
    let dir = regressions_dir();
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{} must exist (with its README): {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut failures = Vec::new();
    for path in &files {
        let Err(failure) = replay_in_child(path, false) else { continue };
        let note = fs::read_to_string(path)
            .ok()
            .and_then(|t| serde_json::from_str::<Json>(&t).ok())
            .and_then(|d| d["note"].as_str().map(str::to_string))
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "(no note: a new finding)".to_string());
        failures.push(format!(
            "{}\n  failure: {}\n  bug: {note}",
            path.strip_prefix(root()).unwrap_or(path).display(),
            cut(&failure, 1500)
        ));
    }
    println!("replayed {} fuzz regression input(s) from {}", files.len(), dir.display());
    assert!(
        failures.is_empty(),
        "{} of {} fuzz regression inputs still fail; each is a bug in src/ found by tests/integration/fuzz.rs:\n\n{}",
        failures.len(),
        files.len(),
        failures.join("\n\n")
    );
}

/// The child of [`replay_in_child`]: replays the file named by `DEVAMI_FUZZ_REPLAY` (does nothing
/// without it).
#[test]
fn replay_one() {
    let Some(path) = std::env::var_os("DEVAMI_FUZZ_REPLAY") else { return };
    let as_found = std::env::var_os("DEVAMI_FUZZ_AS_FOUND").is_some();
    REPLAYING.store(!as_found, Ordering::Relaxed);
    match replay_file(Path::new(&path), as_found) {
        Ok(()) => println!("fuzz-replay-ok"),
        Err(message) => {
            println!("fuzz-replay-failure: {}", serde_json::to_string(&message).unwrap_or_default());
            panic!("{message}");
        }
    }
}

fn replay_bound() -> Duration {
    if cfg!(debug_assertions) { LINEAR_BOUND * 10 } else { LINEAR_BOUND }
}

/// Text cut to at most `max` characters.
fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((at, _)) => format!("{}… ({} bytes in all)", &s[..at], s.len()),
        None => s.to_string(),
    }
}

/// Text for a message: at most `max` characters, escaped.
fn show(s: &str, max: usize) -> String {
    let mut out: String = s.chars().take(max).collect::<String>();
    if s.chars().count() > max {
        out.push_str(&format!("… ({} bytes in all)", s.len()));
    }
    format!("{out:?}")
}

// =============================================================================================
// The choice tape and the character pools.

/// A stream of random numbers that generators read their choices from. proptest generates and
/// shrinks the tape; a shorter tape or smaller numbers give a simpler input, since 0 (also what
/// an exhausted tape reads) is always the simplest choice.
struct Tape<'a> {
    data: &'a [u32],
    pos: usize,
}

const LOWER: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const SPECIAL: &[u8] = b"'\"\\$`;#&|<>(){}[]*?!~=,.-_ /:@%+^";
const SPACES: &[char] = &[
    ' ', '\t', '\n', '\r', '\0', '\u{7}', '\u{8}', '\u{b}', '\u{c}', '\u{1b}', '\u{7f}', '\u{85}', '\u{a0}',
    '\u{2028}', '\u{feff}', '\u{200b}', '\u{3000}',
];
const WIDE: &[char] = &[
    'é',
    'ß',
    'İ',
    'ſ',
    '\u{212a}',
    'Σ',
    '日',
    '✓',
    '😀',
    '\u{301}',
    '\u{202e}',
    '\u{10ffff}',
    '\u{fffd}',
    'ﬀ',
    'Ⅻ',
    '٣',
    '①',
    'ǅ',
];

impl<'a> Tape<'a> {
    fn new(data: &'a [u32]) -> Self {
        Tape { data, pos: 0 }
    }

    fn raw(&mut self) -> u32 {
        let v = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        v
    }

    /// A number below `n` (0 when `n` is 0).
    fn below(&mut self, n: usize) -> usize {
        let v = self.raw() as usize;
        if n == 0 { 0 } else { v % n }
    }

    /// True with this probability in thousandths (never for a 0 on the tape).
    fn chance(&mut self, per_mille: u32) -> bool {
        self.raw() % 1000 >= 1000 - per_mille.min(1000)
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    fn pick_clone<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())].clone()
    }

    /// Shuffles in place; zeros leave the order as it is.
    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = i - self.below(i + 1);
            items.swap(i, j);
        }
    }

    fn char(&mut self) -> char {
        match self.below(16) {
            0..=6 => self.pick(LOWER) as char,
            7 => self.pick(UPPER) as char,
            8..=10 => self.pick(SPECIAL) as char,
            11 | 12 => self.pick(SPACES),
            13 | 14 => self.pick(WIDE),
            _ => char::from_u32(self.raw() % 0x11_0000).unwrap_or('\u{fffd}'),
        }
    }

    /// A string of up to `max` characters from every pool.
    fn string(&mut self, max: usize) -> String {
        let len = self.below(max + 1);
        (0..len).map(|_| self.char()).collect()
    }

    /// Like [`Tape::string`] without some characters (replaced by `x`).
    fn string_without(&mut self, max: usize, forbidden: &[char]) -> String {
        self.string(max).chars().map(|c| if forbidden.contains(&c) { 'x' } else { c }).collect()
    }

    /// An identifier, mostly ASCII.
    fn ident(&mut self) -> String {
        let first = self.pick(&['d', 'x', '_', 'é', 'D', 'a']);
        let mut s = first.to_string();
        for _ in 0..self.below(8) {
            s.push(self.pick(b"abcdefghijklmnopqrstuvwxyz_0123456789AZ") as char);
        }
        s
    }

    fn i64(&mut self) -> i64 {
        match self.below(8) {
            0..=3 => self.below(200) as i64 - 20,
            4 => self.pick(&[0, 1, -1, i64::MAX, i64::MIN, i64::MAX - 1, i64::MIN + 1, 1 << 53, -(1 << 31)]),
            _ => ((u64::from(self.raw()) << 32) | u64::from(self.raw())) as i64,
        }
    }

    fn f64(&mut self) -> f64 {
        let x = match self.below(8) {
            0..=2 => (self.below(2000) as f64 - 500.0) / 4.0,
            3 => self.pick(&[
                0.0,
                -0.0,
                0.1,
                1e-7,
                1e300,
                -2.5,
                f64::MAX,
                f64::MIN_POSITIVE,
                5e-324,
                1e16,
                123.456,
            ]),
            4 => self.below(100) as f64,
            _ => f64::from_bits((u64::from(self.raw()) << 32) | u64::from(self.raw())),
        };
        if x.is_finite() { x } else { 1.5 }
    }
}

/// A proptest strategy for a tape of up to `max` numbers.
fn tape(max: usize) -> impl Strategy<Value = Vec<u32>> + Clone {
    proptest::collection::vec(any::<u32>(), 0..max)
}

/// Arbitrary unicode text of up to `max` characters.
fn unicode(max: usize) -> impl Strategy<Value = String> + Clone {
    proptest::collection::vec(any::<char>(), 0..max).prop_map(|v| v.into_iter().collect())
}

/// Applies 1 to 4 random mutations: delete, insert, duplicate a span, swap quotes, change a
/// number, replace a character, truncate, insert a token from `tokens`.
fn mutate(t: &mut Tape, text: &str, tokens: &[&str]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for _ in 0..1 + t.below(4) {
        let len = chars.len();
        let at = t.below(len + 1);
        let span = (1 + t.below(8)).min(len - at.min(len));
        match t.below(8) {
            0 => {
                chars.drain(at..at + span);
            }
            1 => {
                let s: Vec<char> = t.string(6).chars().collect();
                chars.splice(at..at, s);
            }
            2 => {
                let copy: Vec<char> = chars[at..at + span].to_vec();
                let to = t.below(len + 1);
                chars.splice(to..to, copy);
            }
            3 => {
                let quotes: Vec<usize> = (0..len).filter(|&i| matches!(chars[i], '"' | '\'' | '`')).collect();
                if quotes.is_empty() {
                    chars.insert(at, t.pick(&['"', '\'']));
                } else {
                    let i = quotes[t.below(quotes.len())];
                    chars[i] = match chars[i] {
                        '"' => '\'',
                        '\'' => t.pick(&['"', '`']),
                        _ => '"',
                    };
                }
            }
            4 => {
                let digits: Vec<usize> = (0..len)
                    .filter(|&i| chars[i].is_ascii_digit() && (i == 0 || !chars[i - 1].is_ascii_digit()))
                    .collect();
                let number = t.pick(&[
                    "-1",
                    "0",
                    "99999999999999999999999",
                    "1e999",
                    "-0",
                    "1.5",
                    "0x1F",
                    "1_000",
                    "9223372036854775808",
                    "1e",
                    "NaN",
                    "172801",
                    "",
                ]);
                let start = if digits.is_empty() { at } else { digits[t.below(digits.len())] };
                let end = (start..len).find(|&i| !chars[i].is_ascii_digit()).unwrap_or(len).max(start);
                chars.splice(start..end, number.chars());
            }
            5 => {
                if at < len {
                    chars[at] = t.char();
                }
            }
            6 => chars.truncate(at),
            _ => {
                let token = t.pick(tokens);
                chars.splice(at..at, token.chars());
            }
        }
    }
    chars.into_iter().collect()
}

// =============================================================================================
// Harness 1: the command-line parser.

/// One input of the `parser` harness.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum ParserCase {
    /// Any line: nothing panics, errors are well-formed, split and completion stay in the line.
    Line { line: String },
    /// One invocation in both spellings, with the argument values it was built from.
    RoundTrip { command: String, call: String, shell: String, args: Vec<(String, Json)> },
    /// A line of about 100 KB (`prefix` then `unit` repeated): parsing it is linear.
    Big { prefix: String, unit: String, repeat: usize },
}

#[test]
fn parser_harness() {
    let strategy = prop_oneof![
        2 => unicode(120).prop_map(|line| ParserCase::Line { line }),
        4 => tape(300).prop_map(|t| ParserCase::Line { line: gen_line(&mut Tape::new(&t)) }),
        3 => tape(300).prop_map(|t| gen_mutated_line(&mut Tape::new(&t))),
        6 => tape(300).prop_map(|t| gen_round_trip(&mut Tape::new(&t))),
        1 => tape(40).prop_map(|t| gen_big_line(&mut Tape::new(&t))),
    ];
    drive("parser", Cases { normal: 2000, round: 2000 }, strategy, check_parser);
}

fn check_parser(case: &ParserCase) -> Result<(), String> {
    check_parser_with(case, long_mode().map(|_| LINEAR_BOUND))
}

/// The time `check_any_line` takes on a line (the fastest of `tries`).
fn time_line(line: &str, tries: usize) -> Result<Duration, String> {
    let mut best = Duration::MAX;
    for _ in 0..tries {
        let started = Instant::now();
        check_any_line(line, false)?;
        best = best.min(started.elapsed());
    }
    Ok(best)
}

/// Checks a parser case. With a `bound` (the long mode and replays, never the normal suite), a
/// big line must take less than `bound`, and parsing must scale linearly: the whole line may
/// not take more than 10 times its first quarter (4 times when linear, 16 when quadratic).
fn check_parser_with(case: &ParserCase, bound: Option<Duration>) -> Result<(), String> {
    match case {
        ParserCase::Line { line } => check_any_line(line, true),
        ParserCase::RoundTrip { command, call, shell, args } => {
            check_any_line(call, false)?;
            check_any_line(shell, false)?;
            check_round_trip(command, call, shell, args)
        }
        ParserCase::Big { prefix, unit, repeat } => {
            let line = format!("{prefix}{}", unit.repeat(*repeat));
            let started = Instant::now();
            check_any_line(&line, false)?;
            let took = started.elapsed();
            if std::env::var_os("DEVAMI_FUZZ_VERBOSE").is_some() {
                eprintln!(
                    "big line {} then {} x{repeat}: {} ms",
                    show(prefix, 40),
                    show(unit, 40),
                    took.as_millis()
                );
            }
            let Some(bound) = bound else { return Ok(()) };
            let described = || {
                format!("the line is {} then {} repeated {repeat} times", show(prefix, 80), show(unit, 80))
            };
            if took > bound {
                return Err(format!(
                    "parse_line + split_commands + completion_context of a {} KB line took {} ms (bound {} ms): {}",
                    line.len() / 1024,
                    took.as_millis(),
                    bound.as_millis(),
                    described()
                ));
            }
            if took > Duration::from_millis(20) {
                let quarter = format!("{prefix}{}", unit.repeat(repeat / 4));
                let (full, part) = (time_line(&line, 2)?, time_line(&quarter, 2)?);
                if full > part.max(Duration::from_micros(100)) * 10 {
                    return Err(format!(
                        "parsing is not linear: {} bytes take {} ms, a quarter of them {} ms; {}",
                        line.len(),
                        full.as_millis(),
                        part.as_millis(),
                        described()
                    ));
                }
            }
            Ok(())
        }
    }
}

/// Everything that must hold for any line.
fn check_any_line(line: &str, prefixes: bool) -> Result<(), String> {
    check_parse(line)?;
    let pieces = parse::split_commands(line);
    let mut from = 0;
    for piece in &pieces {
        if piece.is_empty() || piece.trim() != piece {
            return Err(format!(
                "split_commands({}) gave the piece {}: pieces are trimmed and never empty",
                show(line, 200),
                show(piece, 100)
            ));
        }
        match line[from..].find(piece.as_str()) {
            Some(i) => from += i + piece.len(),
            None => {
                return Err(format!(
                    "split_commands({}) gave {}: the piece {} is not the next part of the line",
                    show(line, 200),
                    show(&format!("{pieces:?}"), 200),
                    show(piece, 100)
                ));
            }
        }
        if pieces.len() > 1 {
            check_parse(piece)?;
        }
    }
    check_completion(line)?;
    if prefixes {
        for cut in cut_points(line, 10) {
            check_parse(&line[..cut])?;
            check_completion(&line[..cut])?;
        }
    }
    Ok(())
}

/// Up to `n` char boundaries spread over the line (the prefixes a user types on the way).
fn cut_points(line: &str, n: usize) -> Vec<usize> {
    let bounds: Vec<usize> = line.char_indices().map(|(i, _)| i).collect();
    if bounds.len() <= n {
        return bounds;
    }
    (0..n).map(|k| bounds[k * bounds.len() / n]).collect()
}

fn check_parse(line: &str) -> Result<(), String> {
    match parse::parse_line(line) {
        Ok(_) => Ok(()),
        Err(e) => check_error_message(&e, &format!("parse_line({})", show(line, 200))),
    }
}

/// A parse error is a usage error (exit status 2) whose message starts with words, quotes user
/// text with its control characters escaped and cut, and is not empty.
fn check_error_message(e: &devami::Error, what: &str) -> Result<(), String> {
    let msg = e.to_string();
    if msg.trim().is_empty() {
        return Err(format!("{what} failed with an empty message"));
    }
    if msg.starts_with(char::is_whitespace) || msg.starts_with([':', ',', ';', '.', ')']) {
        return Err(format!("{what}: the message does not start with a message: {}", show(&msg, 300)));
    }
    if e.exit_code() != 2 {
        return Err(format!(
            "{what}: exit status {} (a line that cannot be understood is 2): {msg}",
            e.exit_code()
        ));
    }
    if !RAW_OBJECT_IN_HINT
        && !REPLAYING.load(Ordering::Relaxed)
        && msg.contains("needs parentheses in the call form")
    {
        return Ok(());
    }
    if let Some(c) = msg.chars().find(|c| c.is_control() && *c != '\n') {
        return Err(format!(
            "{what}: the message holds the control character {c:?} (user text must be escaped): {}",
            show(&msg, 300)
        ));
    }
    let n = msg.chars().count();
    if n > 1500 {
        return Err(format!(
            "{what}: the message is {n} characters long (user text must be cut to 40 characters): {}",
            show(&msg, 300)
        ));
    }
    Ok(())
}

fn check_completion(line: &str) -> Result<(), String> {
    let c = parse::completion_context(line);
    let (start, prefix) = match &c {
        Completion::Nothing => return Ok(()),
        Completion::CommandName { prefix, start }
        | Completion::Keyword { prefix, start, .. }
        | Completion::Value { prefix, start, .. } => (*start, prefix.clone()),
    };
    if start > line.len() || !line.is_char_boundary(start) {
        return Err(format!(
            "completion_context({}) starts the completed text at byte {start}, not a char boundary of the {}-byte line",
            show(line, 200),
            line.len()
        ));
    }
    for candidate in c.candidates() {
        if !candidate.starts_with(prefix.as_str()) {
            return Err(format!(
                "completion_context({}) offers {candidate:?}, which does not start with the prefix {prefix:?}",
                show(line, 200)
            ));
        }
    }
    Ok(())
}

// ---- near-valid lines

const PROMPTS: &[&str] = &[">>> ", "... ", ">>>", "...", ">>>  ", ">>>\t"];

/// Prompts that are prompts: `>>>` and `...` followed by a blank.
const REAL_PROMPTS: &[&str] = &[">>> ", "... ", ">>>  ", ">>>\t"];
const WS: &[&str] = &[" ", " ", "  ", "\t", ""];
const LINE_TOKENS: &[&str] = &[
    "(", ")", "[", "]", ",", "=", "==", "--", ";", "#", "\\", "\"\"\"", "'''", "\n", ">>> ", "devami.", "?",
    "--help", "-h", "None", "True", "r'", "b'", "f\"", "\\x4", "\\N{x}", "*", "**", ".", "{", "}", ":", " ",
    "0x", "1_",
];

fn command_names() -> &'static [&'static str] {
    static NAMES: OnceLock<Vec<&'static str>> = OnceLock::new();
    NAMES.get_or_init(|| commands::names().collect())
}

/// The commands a round trip can build (every one but `help`, which parses to `Line::Help`).
fn round_trip_specs() -> &'static [&'static CommandSpec] {
    static SPECS: OnceLock<Vec<&'static CommandSpec>> = OnceLock::new();
    SPECS.get_or_init(|| commands::COMMANDS.iter().filter(|c| c.name != "help").collect())
}

fn gen_command_name(t: &mut Tape) -> String {
    let name = t.pick(command_names()).to_string();
    match t.below(12) {
        0..=7 => name,
        8 => {
            // A typo: a character replaced, dropped or doubled.
            let mut chars: Vec<char> = name.chars().collect();
            let i = t.below(chars.len());
            match t.below(3) {
                0 => chars[i] = t.char(),
                1 => {
                    chars.remove(i);
                }
                _ => chars.insert(i, chars[i]),
            }
            chars.into_iter().collect()
        }
        9 => name.to_uppercase(),
        10 => format!("devami.{name}"),
        _ => t.ident(),
    }
}

fn gen_line(t: &mut Tape) -> String {
    let mut line = String::new();
    if t.chance(150) {
        line.push_str(t.pick(WS));
    }
    if t.chance(250) {
        line.push_str(t.pick(PROMPTS));
    }
    line.push_str(&gen_body(t, 0));
    while t.chance(120) {
        line.push_str(t.pick(&["; ", ";", "\n", " ; ", ";;"]));
        line.push_str(&gen_body(t, 0));
    }
    line
}

fn gen_body(t: &mut Tape, depth: usize) -> String {
    match t.below(12) {
        0..=2 => gen_call(t),
        3..=6 => gen_shell(t),
        7 => gen_assign(t),
        8 => gen_help(t),
        9 => gen_misc(t),
        10 if depth == 0 => {
            let spec = t.pick(&commands::COMMANDS.iter().collect::<Vec<_>>());
            if t.chance(500) { spec.example_call.to_string() } else { spec.example_shell.to_string() }
        }
        _ => t.string(30),
    }
}

fn gen_call(t: &mut Tape) -> String {
    let mut s = String::new();
    if t.chance(600) {
        let object = t.ident();
        s.push_str(&t.pick_clone(&["devami".to_string(), "d".to_string(), "ami".to_string(), object]));
        s.push('.');
        if t.chance(50) {
            s.push_str("x.");
        }
    }
    let name = gen_command_name(t);
    let spec = commands::lookup(&name);
    s.push_str(&name);
    s.push_str(t.pick(&["", "", " "]));
    s.push('(');
    let n = t.below(5);
    for i in 0..n {
        if i > 0 {
            s.push(',');
            s.push_str(t.pick(WS));
        }
        match t.below(10) {
            0..=3 => {}
            4..=6 => {
                let keyword = match spec.filter(|s| !s.args.is_empty()) {
                    Some(spec) if t.chance(800) => {
                        let arg = &spec.args[t.below(spec.args.len())];
                        if !arg.aliases.is_empty() && t.chance(300) {
                            t.pick(arg.aliases).to_string()
                        } else {
                            arg.name.to_string()
                        }
                    }
                    _ => t.ident(),
                };
                s.push_str(&keyword);
                s.push_str(t.pick(&["=", " = ", "=", "==", " ="]));
            }
            7 => s.push_str(t.pick(&["*", "**", "*args", "**kw"])),
            8 => {
                s.push_str(&t.ident());
                s.push_str(" == ");
            }
            _ => {}
        }
        s.push_str(&gen_py_value(t, 0));
    }
    if n > 0 && t.chance(150) {
        s.push(',');
    }
    match t.below(10) {
        0..=6 => s.push(')'),
        7 => {}
        8 => s.push_str("))"),
        _ => s.push_str(") extra"),
    }
    if t.chance(150) {
        s.push(';');
    }
    if t.chance(150) {
        s.push_str(" # ");
        s.push_str(&t.string_without(10, &['\n']));
    }
    s
}

/// A Python value, valid or broken, nested up to past the parser's depth limit.
fn gen_py_value(t: &mut Tape, depth: usize) -> String {
    match t.below(14) {
        0..=2 => {
            let s = t.string(12);
            py_str(t, &s)
        }
        3 => {
            let n = t.i64();
            py_int(t, n)
        }
        4 => {
            let x = t.f64();
            py_float(t, x)
        }
        5 => t.pick(&["True", "False", "None", "true", "none"]).to_string(),
        6 | 7 if depth < 40 => {
            let (open, close) = t.pick(&[("[", "]"), ("(", ")"), ("[", "]"), ("{", "}")]);
            let mut s = open.to_string();
            let n = if depth > 3 { usize::from(t.chance(900)) } else { t.below(4) };
            for i in 0..n {
                if i > 0 {
                    s.push_str(t.pick(&[", ", ",", " , "]));
                }
                s.push_str(&gen_py_value(t, depth + 1));
            }
            if t.chance(200) {
                s.push(',');
            }
            if t.chance(900) {
                s.push_str(close);
            }
            s
        }
        8 => {
            let depth = 28 + t.below(10);
            let (open, close) = t.pick(&[("[", "]"), ("(", ",)"), ("-(", ")")]);
            format!("{}1{}", open.repeat(depth), close.repeat(depth))
        }
        9 => {
            let mut s = t.ident();
            while t.chance(300) {
                s.push('.');
                s.push_str(&t.ident());
            }
            if t.chance(400) {
                s.push('(');
                s.push_str(&gen_py_value(t, depth + 1));
                s.push(')');
            }
            s
        }
        10 => t
            .pick(&[
                "\"unterminated",
                "'a\\'",
                "\"\\x4\"",
                "\"\\u12\"",
                "'\\U0011FFFF'",
                "\"\\N{DASH}\"",
                "b'x'",
                "f\"{x}\"",
                "rb'x'",
                "0x",
                "1_",
                "1__0",
                "1e",
                "1.5j",
                "99999999999999999999999",
                "-\"a\"",
                "- [1]",
                "1e999",
                "0b102",
                "'''a",
                "\"\"\"a\nb\"\"\"",
                "'a' 'b'",
                "\"a\" r'\\b'",
                "--5",
                "+-+5",
                "-(5)",
                "--9223372036854775808",
                ".5",
                "5.",
                "0o777",
                "1_000.5",
                "{1: 2}",
                "...",
                "lambda: 1",
            ])
            .to_string(),
        _ => t.string(6),
    }
}

fn gen_shell(t: &mut Tape) -> String {
    let name = gen_command_name(t);
    let spec = commands::lookup(&name);
    let mut s = if t.chance(100) { sh_word(t, &name, false) } else { name };
    for _ in 0..t.below(6) {
        s.push_str(t.pick(&[" ", " ", "  ", "\t"]));
        match t.below(12) {
            0..=3 => {
                let v = t.string(10);
                let allow_dash = t.chance(300);
                s.push_str(&sh_word(t, &v, allow_dash));
            }
            4..=6 => {
                let flag = match spec.filter(|s| !s.args.is_empty()) {
                    Some(spec) if t.chance(800) => {
                        let i = t.below(spec.args.len());
                        flag_name(t, &spec.args[i])
                    }
                    _ => t.ident(),
                };
                let prefix = t.pick(&["--", "--", "--no-", "-", "--no_"]);
                s.push_str(prefix);
                s.push_str(&flag);
                if t.chance(400) {
                    s.push('=');
                    let v = t.string(8);
                    s.push_str(&sh_word(t, &v, true));
                }
            }
            7 => s.push_str(t.pick(&[
                "--",
                "-h",
                "--help",
                "help",
                ";",
                "# comment",
                "-",
                "-1",
                "--=x",
                "--command",
            ])),
            8 => {
                let n = t.i64();
                s.push_str(&n.to_string());
            }
            9 => s.push_str(t.pick(&[
                "'open",
                "\"open",
                "a\\",
                "\"a\\\"",
                "'a'\\''b'",
                "\"$x\"",
                "x;y",
                "a#b",
            ])),
            _ => s.push_str(&t.string_without(8, &['\n'])),
        }
    }
    s
}

fn gen_assign(t: &mut Tape) -> String {
    let name = if t.chance(800) { t.ident() } else { "a.b".to_string() };
    let eq = t.pick(&[" = ", "=", " == ", " =  "]);
    let rhs = match t.below(6) {
        0..=2 => {
            let class =
                t.pick(&["NeuroCaaSAMI", "neurocaasami", "NeuroCaaSAMI", "ncap.NeuroCaaSAMI", "Other"]);
            let mut args = String::new();
            for i in 0..t.below(3) {
                if i > 0 {
                    args.push_str(", ");
                }
                if t.chance(300) {
                    args.push_str(t.pick(&["path=", "dir=", "x="]));
                }
                args.push_str(&gen_py_value(t, 0));
            }
            let close = if t.chance(900) { ")" } else { "" };
            format!("{class}({args}{close})")
        }
        3 => format!(
            "devami.{}",
            t.pick(&["ip", "instance", "instance_hist", "ami_hist", "commands", "nope", "get_ip"])
        ),
        4 => gen_py_value(t, 0),
        _ => String::new(),
    };
    format!("{name}{eq}{rhs}")
}

fn gen_help(t: &mut Tape) -> String {
    let name = gen_command_name(t);
    match t.below(10) {
        0 => "help".to_string(),
        1 => format!("help {name}"),
        2 => format!("help({name})"),
        3 => format!("help(\"{name}\")"),
        4 => format!("{name}?"),
        5 => format!("devami.{name}??"),
        6 => format!("? {name}"),
        7 => format!("help --command {name}"),
        8 => format!("help --command={name} extra"),
        _ => format!("{name} {}", t.pick(&["--help", "-h", "help", "x --help", "-- --help"])),
    }
}

fn gen_misc(t: &mut Tape) -> String {
    t.pick(&[
        "import os",
        "from neurocaas_contrib.monitor import NeuroCaaSAMI",
        "import",
        "from",
        "devami.ip",
        "devami.instance_hist",
        "devami.unknown_attribute",
        "a.b.c",
        "# a comment",
        "devami.launch_ami",
        "devami.ip # c",
        "devami.ip; status",
        "",
        "   ",
        "x.y(",
        "import\tsys",
        "NeuroCaaSAMI(\"x\")",
    ])
    .to_string()
}

fn gen_mutated_line(t: &mut Tape) -> ParserCase {
    let valid = match t.below(3) {
        0 => match gen_round_trip(t) {
            ParserCase::RoundTrip { call, shell, .. } => {
                if t.chance(500) {
                    call
                } else {
                    shell
                }
            }
            other => return other,
        },
        1 => {
            let spec = t.pick(&commands::COMMANDS.iter().collect::<Vec<_>>());
            if t.chance(500) { spec.example_call.to_string() } else { spec.example_shell.to_string() }
        }
        _ => gen_line(t),
    };
    ParserCase::Line { line: mutate(t, &valid, LINE_TOKENS) }
}

fn gen_big_line(t: &mut Tape) -> ParserCase {
    let prefix = t
        .pick(&[
            "",
            "launch_ami(",
            "devami.create_devami(",
            "launch ",
            "exec ",
            "d = NeuroCaaSAMI(",
            "new_submit ",
            "help(",
            ">>> devami.new_submit([",
            "create_devami \"",
            "create_devami(\"",
            "launch_ami(ami='",
            "x",
        ])
        .to_string();
    let unit = match t.below(4) {
        0 => t
            .pick(&[
                "\"a\", ", "'", "\\x41", " ", ";", "[", "(", "--x ", "a", "é", "\"\"\"", "#", "\\", "a.",
                "-", "((", "\"a\"", "1_", "x=", "'a' ", "; status", "devami.", ">>> ", "\n", "?",
            ])
            .to_string(),
        1 => {
            let n = 1 + t.below(8);
            (0..n).map(|_| t.pick(SPECIAL) as char).collect()
        }
        2 => gen_line(t).chars().take(40).collect(),
        _ => t.string(8),
    };
    let unit = if unit.is_empty() { "a".to_string() } else { unit };
    // Steer around the known bugs (see SEMICOLON_RUNS and NEWLINE_RUNS).
    let blank_run = unit.chars().all(|c| c == ';' || c.is_whitespace());
    let unit = if !SEMICOLON_RUNS && blank_run { unit.replace(';', ",") } else { unit };
    let unit = if !NEWLINE_RUNS && blank_run { unit.replace('\n', " ") } else { unit };
    let repeat = 100_000 / unit.len() + 1;
    ParserCase::Big { prefix, unit, repeat }
}

// ---- encoders: Python literals and shell words

/// A Python string literal for `s` in one of many spellings (quotes, triple quotes, raw and
/// `u` prefixes, every escape kind, adjacent literals).
fn py_str(t: &mut Tape, s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    if chars.len() >= 2 && t.chance(120) {
        let at = 1 + t.below(chars.len() - 1);
        let (a, b): (String, String) = (chars[..at].iter().collect(), chars[at..].iter().collect());
        let sep = t.pick(&[" ", "  ", "\t"]);
        return format!("{}{sep}{}", py_str(t, &a), py_str(t, &b));
    }
    let q = t.pick(&['"', '\'']);
    match t.below(8) {
        0..=3 => py_quoted(t, s, q, false),
        4 | 5 => py_quoted(t, s, q, true),
        6 => {
            let trailing = s.chars().rev().take_while(|c| *c == '\\').count();
            if !s.contains(q) && !s.contains('\n') && trailing % 2 == 0 {
                format!("{}{q}{s}{q}", t.pick(&["r", "R"]))
            } else {
                py_quoted(t, s, q, false)
            }
        }
        _ => format!("{}{}", t.pick(&["u", "U"]), py_quoted(t, s, q, false)),
    }
}

fn py_quoted(t: &mut Tape, s: &str, q: char, triple: bool) -> String {
    let quotes: String = std::iter::repeat_n(q, if triple { 3 } else { 1 }).collect();
    let mut out = quotes.clone();
    for c in s.chars() {
        let must = c == '\\' || c == q || (c == '\n' && !triple);
        if must || t.chance(120) {
            out.push_str(&py_escape(t, c));
        } else {
            out.push(c);
        }
    }
    out.push_str(&quotes);
    out
}

/// One escape sequence for `c`.
fn py_escape(t: &mut Tape, c: char) -> String {
    let n = c as u32;
    let named = match c {
        '\n' => Some("\\n"),
        '\t' => Some("\\t"),
        '\r' => Some("\\r"),
        '\u{7}' => Some("\\a"),
        '\u{8}' => Some("\\b"),
        '\u{c}' => Some("\\f"),
        '\u{b}' => Some("\\v"),
        '\\' => Some("\\\\"),
        '\'' => Some("\\'"),
        '"' => Some("\\\""),
        _ => None,
    };
    let upper = t.chance(300);
    let hex = |width: usize| {
        let h = format!("{n:0width$x}");
        if upper { h.to_uppercase() } else { h }
    };
    match t.below(5) {
        0 if named.is_some() => named.unwrap_or_default().to_string(),
        1 if n < 0x100 => format!("\\x{}", hex(2)),
        2 if n < 0o400 => format!("\\{n:03o}"),
        3 if n <= 0xffff => format!("\\u{}", hex(4)),
        _ => match named {
            Some(e) if t.chance(500) => e.to_string(),
            _ => format!("\\U{}", hex(8)),
        },
    }
}

/// Digits with single underscores between some of them.
fn underscored(t: &mut Tape, digits: &str) -> String {
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && t.chance(60) {
            out.push('_');
        }
        out.push(c);
    }
    out
}

fn py_int(t: &mut Tape, n: i64) -> String {
    let mag = n.unsigned_abs();
    let body = match t.below(7) {
        0..=3 => underscored(t, &mag.to_string()),
        4 => {
            let h = if t.chance(500) { format!("{mag:X}") } else { format!("{mag:x}") };
            format!("0{}{}", t.pick(&["x", "X"]), underscored(t, &h))
        }
        5 => format!("0{}{}", t.pick(&["o", "O"]), underscored(t, &format!("{mag:o}"))),
        _ => format!("0{}{}", t.pick(&["b", "B"]), underscored(t, &format!("{mag:b}"))),
    };
    let lit = if n < 0 {
        format!("-{}{body}", t.pick(&["", "", " "]))
    } else if t.chance(100) {
        format!("+{body}")
    } else {
        body
    };
    if t.chance(60) { format!("({lit})") } else { lit }
}

fn py_float(t: &mut Tape, x: f64) -> String {
    let a = x.abs();
    let integral = a.fract() == 0.0 && a < 1e15;
    let lit = match t.below(6) {
        0..=2 => format!("{a:?}"),
        3 => format!("{a:e}"),
        4 if integral => format!("{}", a as i64),
        5 if integral => format!("{}.", a as i64),
        _ => format!("{a:?}"),
    };
    let lit = match lit.strip_prefix('0') {
        Some(rest) if rest.starts_with('.') && rest.len() > 1 && t.chance(300) => rest.to_string(),
        _ => lit,
    };
    if x.is_sign_negative() { format!("-{lit}") } else { lit }
}

/// Characters a shell word may hold without quotes (in this generator).
fn bare_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_./:@%+,^~=-".contains(c) || (!c.is_ascii() && c.is_alphanumeric())
}

/// A shell word whose value is `s`: bare, single-quoted, double-quoted or backslash-escaped
/// chunks. The first character is quoted when it would make the word a flag (unless
/// `allow_dash`), a comment, another form of line (`(`, `=`, `?`) or the word `help`.
fn sh_word(t: &mut Tape, s: &str, allow_dash: bool) -> String {
    if s.is_empty() {
        return t.pick(&["''", "\"\""]).to_string();
    }
    let chars: Vec<char> = s.chars().collect();
    let mut cuts = vec![0, chars.len()];
    while cuts.len() < 5 && t.chance(200) {
        cuts.push(t.below(chars.len()));
    }
    cuts.sort_unstable();
    cuts.dedup();
    let mut out = String::new();
    for (k, w) in cuts.windows(2).enumerate() {
        let chunk: String = chars[w[0]..w[1]].iter().collect();
        out.push_str(&sh_chunk(t, &chunk, k == 0, allow_dash));
    }
    out
}

fn sh_chunk(t: &mut Tape, chunk: &str, first: bool, allow_dash: bool) -> String {
    let bare_ok = chunk.chars().all(bare_char)
        && chunk != "help"
        && !(first && (chunk.starts_with(['=', '#', '(', '?']) || (chunk.starts_with('-') && !allow_dash)));
    match t.below(4) {
        0 if bare_ok => chunk.to_string(),
        1 if !chunk.contains('\'') => format!("'{chunk}'"),
        3 if !chunk.contains('\n') => chunk.chars().map(|c| format!("\\{c}")).collect(),
        _ if bare_ok && t.chance(500) => chunk.to_string(),
        _ => {
            let mut out = String::from("\"");
            for c in chunk.chars() {
                if matches!(c, '"' | '\\' | '$' | '`') {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('"');
            out
        }
    }
}

/// A flag name for `arg` (without dashes): its name or an alias, in kebab or snake case, any
/// letter case.
fn flag_name(t: &mut Tape, arg: &ArgSpec) -> String {
    let base = if !arg.aliases.is_empty() && t.chance(250) { t.pick(arg.aliases) } else { arg.name };
    let base = if t.chance(700) { base.replace('_', "-") } else { base.to_string() };
    match t.below(8) {
        0 => base.to_uppercase(),
        1 => base.chars().map(|c| if t.chance(500) { c.to_ascii_uppercase() } else { c }).collect(),
        _ => base,
    }
}

// ---- round trips

/// A value for an argument of this kind (any characters for strings).
fn gen_arg_value(t: &mut Tape, arg: &ArgSpec) -> Value {
    match arg.kind {
        ArgKind::Str | ArgKind::Path => Value::Str(t.string(16)),
        ArgKind::Rest => Value::Str(gen_rest(t)),
        ArgKind::Int => Value::Int(t.i64()),
        ArgKind::Float => Value::Float(t.f64()),
        ArgKind::Bool => Value::Bool(t.chance(500)),
        ArgKind::StrList => Value::List((0..1 + t.below(4)).map(|_| Value::Str(t.string(10))).collect()),
    }
}

/// A rest-of-line value the shell form can carry verbatim: one line, no blanks at either end,
/// not starting with what makes the line another form (`(`, `=`, `?`), not a help word.
fn gen_rest(t: &mut Tape) -> String {
    let s = t.string_without(24, &['\n']);
    let s = s.trim_matches(|c: char| c.is_whitespace() || c == '\r');
    let mut s = s.to_string();
    if s.is_empty() || s.starts_with(['(', '=', '?']) || matches!(s.as_str(), "help" | "-h" | "--help") {
        s.insert(0, 'x');
    }
    s
}

/// Where a given argument goes in the shell form.
#[derive(Clone, Copy, PartialEq)]
enum Place {
    Positional,
    Flag,
}

fn gen_round_trip(t: &mut Tape) -> ParserCase {
    let spec = t.pick(round_trip_specs());
    let mut given: Vec<Option<Value>> =
        spec.args.iter().map(|a| (a.required || t.chance(500)).then(|| gen_arg_value(t, a))).collect();
    // Plan the shell form first: positional words fill the first free slot, a positional list
    // takes every later positional word (the required ones after it are given back), a rest
    // argument takes the rest of the line.
    let mut places: Vec<Option<Place>> = vec![None; spec.args.len()];
    let mut chain = true;
    let mut list_seen = false;
    for (i, arg) in spec.args.iter().enumerate() {
        let Some(value) = &mut given[i] else {
            chain = false;
            continue;
        };
        if arg.kind == ArgKind::Rest {
            if !chain || given[i + 1..].iter().any(Option::is_some) {
                // Not expressible in the shell form: keep the call form as a plain line.
                let call = render_call(t, spec, &given);
                return ParserCase::Line { line: call };
            }
            places[i] = Some(Place::Positional);
            continue;
        }
        let can_pos = chain && (!list_seen || arg.required);
        if can_pos && t.chance(550) {
            places[i] = Some(Place::Positional);
            list_seen |= arg.kind == ArgKind::StrList;
        } else {
            places[i] = Some(Place::Flag);
            if let Value::List(items) = value {
                items.truncate(1);
            }
        }
    }
    let call = render_call(t, spec, &given);
    let shell = render_shell(t, spec, &given, &places);
    let args = spec
        .args
        .iter()
        .zip(&given)
        .filter_map(|(a, v)| v.as_ref().map(|v| (a.name.to_string(), value_to_json(v))))
        .collect();
    ParserCase::RoundTrip { command: spec.name.to_string(), call, shell, args }
}

fn spelled_name(t: &mut Tape, spec: &CommandSpec) -> String {
    if !spec.aliases.is_empty() && t.chance(400) {
        t.pick(spec.aliases).to_string()
    } else {
        spec.name.to_string()
    }
}

/// The call form: `[>>> ][obj.]name(positional..., keyword=...)`, with `None` for skipped
/// optional arguments, any spacing, a trailing comma, `;` and a comment.
fn render_call(t: &mut Tape, spec: &CommandSpec, given: &[Option<Value>]) -> String {
    let mut s = String::new();
    if t.chance(200) {
        s.push_str(t.pick(REAL_PROMPTS));
    }
    if t.chance(600) {
        s.push_str(t.pick(&["devami", "d", "neurocaas_ami", "ami_x", "é_1"]));
        s.push('.');
    }
    s.push_str(&spelled_name(t, spec));
    s.push_str(t.pick(&["", "", " "]));
    s.push('(');
    s.push_str(t.pick(&["", "", " "]));
    let mut parts = Vec::new();
    let mut keywords = Vec::new();
    let mut positional = true;
    for (i, arg) in spec.args.iter().enumerate() {
        match &given[i] {
            Some(v) => {
                let value = py_value(t, arg, v);
                if positional && t.chance(500) {
                    parts.push(value);
                } else {
                    positional = false;
                    let keyword =
                        if !arg.aliases.is_empty() && t.chance(300) { t.pick(arg.aliases) } else { arg.name };
                    keywords.push(format!("{keyword}{}{value}", t.pick(&["=", " = ", "= ", "\t=\t"])));
                }
            }
            None => {
                if positional && i + 1 < spec.args.len() && t.chance(250) {
                    parts.push("None".to_string());
                } else {
                    positional = false;
                    if t.chance(100) {
                        keywords.push(format!("{}=None", arg.name));
                    }
                }
            }
        }
    }
    t.shuffle(&mut keywords);
    parts.extend(keywords);
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            s.push(',');
            s.push_str(t.pick(&[" ", "", "  ", "\t"]));
        }
        s.push_str(part);
    }
    if !parts.is_empty() && t.chance(150) {
        s.push(',');
    }
    s.push_str(t.pick(&["", "", " "]));
    s.push(')');
    if t.chance(100) {
        s.push(';');
    }
    if t.chance(100) {
        s.push_str("  # ");
        s.push_str(&t.string_without(12, &['\n']));
    }
    s
}

fn py_value(t: &mut Tape, arg: &ArgSpec, v: &Value) -> String {
    match v {
        Value::Str(s) => py_str(t, s),
        Value::Int(n) => py_int(t, *n),
        Value::Float(x) => py_float(t, *x),
        Value::Bool(b) => (if *b { "True" } else { "False" }).to_string(),
        Value::None => "None".to_string(),
        Value::List(items) => {
            let strs: Vec<String> = items.iter().map(|i| py_value(t, arg, i)).collect();
            match (strs.as_slice(), t.below(4)) {
                ([one], 0) if matches!(items[0], Value::Str(_)) && arg.kind == ArgKind::StrList => {
                    one.clone()
                }
                ([one], 1) => format!("({one},)"),
                (_, 1) => format!("({})", strs.join(", ")),
                _ => {
                    let comma = if t.chance(200) { "," } else { "" };
                    format!("[{}{comma}]", strs.join(t.pick(&[", ", ",", " ,  "])))
                }
            }
        }
    }
}

/// The shell form: flags (`--name value`, `--name=value`, `--no-name`) and positional words in
/// the planned places, `--` before the positional words now and then.
fn render_shell(
    t: &mut Tape,
    spec: &CommandSpec,
    given: &[Option<Value>],
    places: &[Option<Place>],
) -> String {
    // Tokens as (text, is a bare boolean flag).
    let mut flags: Vec<(usize, Vec<(String, bool)>)> = Vec::new();
    let mut positional: Vec<(String, bool)> = Vec::new();
    let mut rest: Option<String> = None;
    for (i, arg) in spec.args.iter().enumerate() {
        let (Some(v), Some(place)) = (&given[i], places[i]) else { continue };
        match (place, arg.kind, v) {
            (Place::Positional, ArgKind::Rest, Value::Str(s)) => rest = Some(s.clone()),
            (Place::Positional, _, Value::List(items)) => {
                for item in items {
                    if let Value::Str(s) = item {
                        positional.push((sh_word(t, s, false), false));
                    }
                }
            }
            (Place::Positional, _, v) => positional.push((sh_positional(t, v), false)),
            (Place::Flag, _, v) => flags.push((i, sh_flag(t, arg, v))),
        }
    }
    let last_positional = spec
        .args
        .iter()
        .enumerate()
        .filter(|(i, _)| places[*i] == Some(Place::Positional))
        .map(|(i, _)| i)
        .max();
    let (mut before, mut after): (Vec<_>, Vec<_>) = (Vec::new(), Vec::new());
    for (slot, tokens) in flags {
        if last_positional.is_some_and(|p| slot > p) && rest.is_none() && t.chance(500) {
            after.push(tokens);
        } else {
            before.push(tokens);
        }
    }
    t.shuffle(&mut before);
    let dashdash = !positional.is_empty() && after.is_empty() && rest.is_none() && t.chance(200);
    let mut tokens: Vec<(String, bool)> = before.into_iter().flatten().collect();
    if dashdash {
        tokens.push(("--".to_string(), false));
    }
    tokens.extend(positional);
    tokens.extend(after.into_iter().flatten());
    // `--force` reads a following `true`/`false` word as its value: spell it `--force=true`.
    for k in 0..tokens.len() {
        let next_is_bool_word = tokens
            .get(k + 1)
            .is_some_and(|(w, _)| matches!(w.to_ascii_lowercase().as_str(), "true" | "false"));
        if tokens[k].1 && next_is_bool_word {
            let flag = tokens[k].0.clone();
            tokens[k] = if let Some(name) = flag.strip_prefix("--no-").or_else(|| flag.strip_prefix("--no_"))
            {
                (format!("--{name}=false"), false)
            } else {
                (format!("{flag}=true"), false)
            };
        }
    }
    let mut s = String::new();
    if t.chance(150) {
        s.push_str(t.pick(REAL_PROMPTS));
    }
    s.push_str(&spelled_name(t, spec));
    for (text, _) in &tokens {
        s.push_str(t.pick(&[" ", " ", "  ", "\t"]));
        s.push_str(text);
    }
    match rest {
        Some(rest) => {
            s.push_str(t.pick(&[" ", "  ", "\t"]));
            s.push_str(&rest);
            if t.chance(150) {
                s.push_str(t.pick(&[" ", "  ", "\t"]));
            }
        }
        None => {
            if t.chance(100) {
                s.push_str(t.pick(&[" ;", ";", " ; # c", " ;;"]));
            }
            if t.chance(100) {
                s.push_str(" # ");
                s.push_str(&t.string_without(10, &['\n']));
            }
        }
    }
    s
}

fn sh_int(t: &mut Tape, n: i64) -> String {
    let digits = underscored(t, &n.unsigned_abs().to_string());
    if n < 0 {
        format!("-{digits}")
    } else if t.chance(100) {
        format!("+{digits}")
    } else {
        digits
    }
}

fn sh_float(t: &mut Tape, x: f64) -> String {
    let a = x.abs();
    let text = if t.chance(300) { format!("{a:e}") } else { format!("{a:?}") };
    if x.is_sign_negative() {
        format!("-{text}")
    } else if t.chance(100) {
        format!("+{text}")
    } else {
        text
    }
}

const BOOL_WORDS: &[(&str, bool)] = &[
    ("true", true),
    ("false", false),
    ("yes", true),
    ("no", false),
    ("on", true),
    ("off", false),
    ("1", true),
    ("0", false),
    ("True", true),
    ("FALSE", false),
];

fn bool_word(t: &mut Tape, b: bool, any: bool) -> String {
    let words: Vec<&str> = BOOL_WORDS
        .iter()
        .filter(|(w, v)| *v == b && (any || w.eq_ignore_ascii_case(&b.to_string())))
        .map(|(w, _)| *w)
        .collect();
    t.pick(&words).to_string()
}

/// A positional word for a value (numbers may stay bare, even negative).
fn sh_positional(t: &mut Tape, v: &Value) -> String {
    match v {
        Value::Str(s) => sh_word(t, s, false),
        Value::Int(n) => {
            let text = sh_int(t, *n);
            if t.chance(200) { sh_word(t, &text, true) } else { text }
        }
        Value::Float(x) => {
            let text = sh_float(t, *x);
            if t.chance(200) { sh_word(t, &text, true) } else { text }
        }
        Value::Bool(b) => {
            let word = bool_word(t, *b, true);
            if t.chance(200) { sh_word(t, &word, false) } else { word }
        }
        Value::None | Value::List(_) => String::new(),
    }
}

/// The tokens of one flag: `--name value` (two) or `--name=value`, `--name`, `--no-name` (one).
fn sh_flag(t: &mut Tape, arg: &ArgSpec, v: &Value) -> Vec<(String, bool)> {
    let name = flag_name(t, arg);
    if let Value::Bool(b) = v {
        return match t.below(4) {
            0 if *b => vec![(format!("--{name}"), true)],
            0 => vec![(format!("--{}{name}", t.pick(&["no-", "no_"])), true)],
            1 => vec![(format!("--{name}={}", bool_word(t, *b, true)), false)],
            2 => vec![(format!("--{name}"), false), (bool_word(t, *b, false), false)],
            _ => vec![(format!("--{name}={}", bool_word(t, *b, false)), false)],
        };
    }
    let text = match v {
        Value::Str(s) => s.clone(),
        Value::Int(n) => sh_int(t, *n),
        Value::Float(x) => sh_float(t, *x),
        Value::List(items) => match items.first() {
            Some(Value::Str(s)) => s.clone(),
            _ => String::new(),
        },
        Value::Bool(_) | Value::None => String::new(),
    };
    if t.chance(500) {
        vec![(format!("--{name}={}", sh_word(t, &text, true)), false)]
    } else {
        let numeric = matches!(v, Value::Int(_) | Value::Float(_));
        vec![(format!("--{name}"), false), (sh_word(t, &text, numeric), false)]
    }
}

fn value_to_json(v: &Value) -> Json {
    match v {
        Value::Str(s) => json!(s),
        Value::Int(n) => json!(n),
        Value::Float(x) => json!(x),
        Value::Bool(b) => json!(b),
        Value::None => Json::Null,
        Value::List(items) => Json::Array(items.iter().map(value_to_json).collect()),
    }
}

/// The value of an argument of `kind` from its JSON form (lists of strings for list kinds).
fn json_to_value(kind: ArgKind, j: &Json) -> Option<Value> {
    Some(match (kind, j) {
        (_, Json::String(s)) if kind == ArgKind::StrList => Value::List(vec![Value::Str(s.clone())]),
        (_, Json::String(s)) => Value::Str(s.clone()),
        (ArgKind::Float, Json::Number(n)) => Value::Float(n.as_f64()?),
        (_, Json::Number(n)) => Value::Int(n.as_i64()?),
        (_, Json::Bool(b)) => Value::Bool(*b),
        (_, Json::Array(items)) => {
            Value::List(items.iter().map(|i| json_to_value(ArgKind::Str, i)).collect::<Option<_>>()?)
        }
        (_, Json::Null) => Value::None,
        (_, Json::Object(_)) => return None,
    })
}

/// The arguments of an invocation by name, a list argument always as a list.
fn normalized(spec: &CommandSpec, args: &parse::Args) -> BTreeMap<String, Value> {
    args.iter()
        .map(|(name, v)| {
            let v = match (spec.arg(name).map(|a| a.kind), v) {
                (Some(ArgKind::StrList), Value::Str(s)) => Value::List(vec![Value::Str(s.clone())]),
                (_, v) => v.clone(),
            };
            (name.to_string(), v)
        })
        .collect()
}

/// Both spellings parse to the command, with exactly the values they were built from.
fn check_round_trip(command: &str, call: &str, shell: &str, args: &[(String, Json)]) -> Result<(), String> {
    let spec =
        commands::lookup(command).ok_or_else(|| format!("no command `{command}` in the table any more"))?;
    let mut expected = BTreeMap::new();
    for (name, j) in args {
        let kind = spec
            .arg(name)
            .map(|a| a.kind)
            .ok_or_else(|| format!("`{command}` has no argument `{name}` any more"))?;
        let value = json_to_value(kind, j).ok_or_else(|| format!("bad expected value {j} for `{name}`"))?;
        expected.insert(name.clone(), value);
    }
    for (line, spelling) in [(call, parse::Spelling::Call), (shell, parse::Spelling::Shell)] {
        let inv = match parse::parse_line(line) {
            Ok(Line::Command(inv)) => inv,
            Ok(other) => {
                return Err(format!(
                    "{} parsed as {} instead of a `{command}` command",
                    show(line, 300),
                    show(&format!("{other:?}"), 200)
                ));
            }
            Err(e) => return Err(format!("{} does not parse: {e}", show(line, 300))),
        };
        if inv.spec.name != spec.name || inv.spelling != spelling {
            return Err(format!(
                "{} parsed as `{}` in the {:?} spelling, expected `{command}` in the {spelling:?} spelling",
                show(line, 300),
                inv.spec.name,
                inv.spelling
            ));
        }
        let got = normalized(spec, &inv.args);
        if got != expected {
            return Err(format!(
                "round trip of `{command}`: {} gave the arguments {got:?}, expected {expected:?} (call form {}, shell form {})",
                show(line, 300),
                show(call, 300),
                show(shell, 300)
            ));
        }
    }
    Ok(())
}

// =============================================================================================
// Harness 2: the blueprint loader.

/// One input of the `blueprint` harness: a blueprint text and an AMI to set in it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct BlueprintCase {
    text: String,
    ami: String,
}

#[test]
fn blueprint_harness() {
    let ami = || tape(40).prop_map(|t| gen_ami(&mut Tape::new(&t)));
    let strategy = prop_oneof![
        1 => (unicode(200), ami()).prop_map(|(text, ami)| BlueprintCase { text, ami }),
        4 => (tape(60), ami()).prop_map(|(t, ami)| {
            let mut t = Tape::new(&t);
            let seed = t.pick_clone(blueprint_seeds());
            BlueprintCase { text: mutate(&mut t, &seed, JSON_TOKENS), ami }
        }),
        4 => (tape(500), ami()).prop_map(|(t, ami)| {
            let mut t = Tape::new(&t);
            let doc = gen_blueprint_json(&mut t);
            let mut text = render_json_text(&mut t, &doc);
            if t.chance(250) {
                text = mutate(&mut t, &text, JSON_TOKENS);
            }
            BlueprintCase { text, ami }
        }),
        2 => (tape(20), ami()).prop_map(|(t, ami)| {
            let mut t = Tape::new(&t);
            BlueprintCase { text: t.pick_clone(blueprint_seeds()), ami }
        }),
    ];
    drive("blueprint", Cases { normal: 1500, round: 12_000 }, strategy, check_blueprint);
}

const JSON_TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"",
    "\\",
    "\\u",
    "\\ud800",
    "null",
    "true",
    "1e400",
    "-",
    "\u{feff}",
    "\"AMI\": 1,",
    "\"AMI\": \"x\",",
    "\"LambdaConfig\": {},",
    "\"Lambda\": [],",
    "\n",
    "\r\n",
    "//",
    "/*",
    "'",
    "\0",
    "NaN",
];

fn blueprint_seeds() -> &'static [String] {
    static SEEDS: OnceLock<Vec<String>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let mut out = Vec::new();
        for base in ["blueprints", "tests/fixtures/blueprints"] {
            let Ok(entries) = fs::read_dir(root().join(base)) else { continue };
            for entry in entries.flatten() {
                if let Ok(text) = fs::read_to_string(entry.path().join(blueprint::BLUEPRINT_FILE)) {
                    out.push(text);
                }
            }
        }
        out.sort();
        assert!(!out.is_empty(), "no blueprints found under blueprints/ and tests/fixtures/blueprints/");
        out
    })
}

fn gen_ami(t: &mut Tape) -> String {
    match t.below(8) {
        0 | 1 => {
            let hex: String = (0..17).map(|_| t.pick(b"0123456789abcdef") as char).collect();
            format!("ami-{hex}")
        }
        2 => t.pick(&["ubuntu18", "ubuntu22", "al2023", "dlami18", "ami-0dbb717f493016a1a", ""]).to_string(),
        _ => t.string(20),
    }
}

/// A JSON document with its members in order, duplicates allowed, numbers as written.
#[derive(Debug, Clone)]
enum J {
    Null,
    Bool(bool),
    Num(String),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

const JSON_NUMBERS: &[&str] = &[
    "0",
    "-1",
    "172000",
    "1.5",
    "1e5",
    "-0",
    "1E+2",
    "12345678901234567890",
    "0.1e-7",
    "9007199254740993",
    "900",
    "172801",
    "-5",
    "300",
    "1.0",
];

fn gen_json_value(t: &mut Tape, depth: usize) -> J {
    match t.below(if depth > 4 { 4 } else { 7 }) {
        0 => J::Str(t.string(12)),
        1 => J::Num(t.pick(JSON_NUMBERS).to_string()),
        2 => J::Bool(t.chance(500)),
        3 => J::Null,
        4 => J::Arr((0..t.below(4)).map(|_| gen_json_value(t, depth + 1)).collect()),
        _ => J::Obj((0..t.below(4)).map(|_| (t.string(6), gen_json_value(t, depth + 1))).collect()),
    }
}

/// A format string like the COMMANDs of blueprints, with every kind of field now and then.
fn gen_format(t: &mut Tape) -> String {
    let mut s = t
        .pick(&["cd /home/ubuntu; bash run.sh", "neurocaas_contrib/run_main_cli.sh", "", "printf '%s'"])
        .to_string();
    for _ in 0..t.below(6) {
        s.push(' ');
        s.push_str(t.pick(&[
            "\"{}\"",
            "{}",
            "'{}'",
            "{0}",
            "{1}",
            "\"{write analysis_script_here}\"",
            "{{}}",
            "{:>10}",
            "{0!r}",
            "{!x}",
            "{a.b[c]}",
            "{[0]}",
            "{",
            "}",
            "{0[}",
            "{:{}}",
            "{0.}",
            "./run.sh",
            "; cleanup",
            "{}}",
            "{{{}}}",
            "{!r:}",
        ]));
    }
    if t.chance(200) {
        s.push_str(&t.string(8));
    }
    s
}

/// A blueprint-shaped document: the usual keys, some missing, repeated, of another type, or
/// with extra keys.
fn gen_blueprint_json(t: &mut Tape) -> J {
    let string = |t: &mut Tape, usual: &str| {
        if t.chance(850) { J::Str(usual.to_string()) } else { gen_json_value(t, 3) }
    };
    let ami = match t.below(12) {
        0 => None,
        1 => Some(J::Num(t.pick(JSON_NUMBERS).to_string())),
        2 => Some(J::Null),
        3 => Some(gen_json_value(t, 2)),
        _ => Some(J::Str(gen_ami(t))),
    };
    let mut config: Vec<(String, J)> = Vec::new();
    if let Some(ami) = ami {
        config.push(("AMI".to_string(), ami));
    }
    for (key, usual) in [
        ("INSTANCE_TYPE", "t2.micro"),
        ("REGION", "us-east-1"),
        ("IAM_ROLE", "SSMRole"),
        ("KEY_NAME", "testkeystack-custom-dev-key-pair"),
        ("SECURITY_GROUPS", "testsgstack-SecurityGroupDev-1NQJIDBJG16KK"),
        ("WORKING_DIRECTORY", "~"),
    ] {
        if t.chance(900) {
            let v = string(t, usual);
            config.push((key.to_string(), v));
        }
    }
    if t.chance(900) {
        config.push(("COMMAND".to_string(), J::Str(gen_format(t))));
    }
    if t.chance(900) {
        let v = match t.below(4) {
            0 => J::Str(t.pick(&["172000", "0", "", "abc", "172801"]).to_string()),
            _ => J::Num(t.pick(JSON_NUMBERS).to_string()),
        };
        config.push(("SSM_TIMEOUT".to_string(), v));
    }
    for _ in 0..t.below(3) {
        config.push((t.string(8), gen_json_value(t, 2)));
    }
    t.shuffle(&mut config);
    if t.chance(150) && !config.is_empty() {
        // A repeated key: the last one is the one used.
        let i = t.below(config.len());
        let (key, _) = config[i].clone();
        config.push((key, gen_json_value(t, 3)));
    }
    if t.chance(80) {
        config.clear();
    }
    let lambda_config = if t.chance(950) { J::Obj(config) } else { gen_json_value(t, 3) };
    let mut lambda = vec![
        ("CodeUri".to_string(), J::Str("../../protocols".to_string())),
        ("Handler".to_string(), J::Str("submit_start.handler_develop".to_string())),
        ("Launch".to_string(), J::Bool(true)),
        ("LambdaConfig".to_string(), lambda_config),
    ];
    t.shuffle(&mut lambda);
    let affiliates = J::Arr(
        (0..t.below(3))
            .map(|_| {
                J::Obj(vec![
                    ("AffiliateName".to_string(), string(t, "debuggers")),
                    ("UserNames".to_string(), J::Arr(vec![J::Str("dummyuser".to_string())])),
                    ("UserInput".to_string(), J::Bool(true)),
                ])
            })
            .collect(),
    );
    let mut top = vec![
        ("PipelineName".to_string(), string(t, "word-stats")),
        ("REGION".to_string(), string(t, "us-east-1")),
        ("STAGE".to_string(), string(t, "webdev")),
        ("Lambda".to_string(), if t.chance(970) { J::Obj(lambda) } else { gen_json_value(t, 3) }),
        ("UXData".to_string(), J::Obj(vec![("Affiliates".to_string(), affiliates)])),
    ];
    top.retain(|_| t.chance(950));
    if t.chance(60) {
        top.push(("Lambda".to_string(), gen_json_value(t, 3)));
    }
    J::Obj(top)
}

/// The text of a document in a random layout: indentation, line ends, separators, and string
/// escapes (`\uXXXX` for anything, `\/`).
fn render_json_text(t: &mut Tape, j: &J) -> String {
    let indent = t.pick(&[Some("    "), Some("  "), Some("\t"), None, Some("    ")]);
    let newline = if t.chance(100) { "\r\n" } else { "\n" };
    let colon = t.pick(&[": ", ":", " : ", ": "]);
    let mut out = String::new();
    write_json(t, j, indent, newline, colon, 0, &mut out);
    if t.chance(700) {
        out.push_str(newline);
    }
    out
}

fn write_json(
    t: &mut Tape,
    j: &J,
    indent: Option<&str>,
    newline: &str,
    colon: &str,
    level: usize,
    out: &mut String,
) {
    let brk = |out: &mut String, level: usize| {
        if let Some(unit) = indent {
            out.push_str(newline);
            out.push_str(&unit.repeat(level));
        }
    };
    match j {
        J::Null => out.push_str("null"),
        J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        J::Num(n) => out.push_str(n),
        J::Str(s) => out.push_str(&json_string(t, s)),
        J::Arr(items) if items.is_empty() => out.push_str(if t.chance(200) { "[ ]" } else { "[]" }),
        J::Obj(members) if members.is_empty() => out.push_str(t.pick(&["{}", "{ }", "{\n}"])),
        J::Arr(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(if indent.is_some() { "," } else { ", " });
                }
                brk(out, level + 1);
                write_json(t, item, indent, newline, colon, level + 1, out);
            }
            brk(out, level);
            out.push(']');
        }
        J::Obj(members) => {
            out.push('{');
            for (i, (key, value)) in members.iter().enumerate() {
                if i > 0 {
                    out.push_str(if indent.is_some() { "," } else { ", " });
                }
                brk(out, level + 1);
                out.push_str(&json_string(t, key));
                out.push_str(colon);
                write_json(t, value, indent, newline, colon, level + 1, out);
            }
            brk(out, level);
            out.push('}');
        }
    }
}

/// A JSON string literal for `s`, escaping what must be and, now and then, anything else.
fn json_string(t: &mut Tape, s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        let must = c == '"' || c == '\\' || (c as u32) < 0x20;
        if !must && !t.chance(60) {
            out.push(c);
            continue;
        }
        match (c, t.below(3)) {
            ('"', 0) => out.push_str("\\\""),
            ('\\', 0) => out.push_str("\\\\"),
            ('\n', 0) => out.push_str("\\n"),
            ('\t', 0) => out.push_str("\\t"),
            ('/', 0) => out.push_str("\\/"),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    if t.chance(300) {
                        out.push_str(&format!("\\u{unit:04X}"));
                    } else {
                        out.push_str(&format!("\\u{unit:04x}"));
                    }
                }
            }
        }
    }
    out.push('"');
    out
}

/// The byte span of the value at `path` (object keys; the last of repeated keys wins) in valid
/// JSON text, found independently of `jsonspan`.
fn oracle_span(text: &str, path: &[&str]) -> Option<(usize, usize)> {
    let b = text.as_bytes();
    let mut start = skip_json_ws(b, 0);
    for key in path {
        if b.get(start) != Some(&b'{') {
            return None;
        }
        let mut i = skip_json_ws(b, start + 1);
        let mut found = None;
        if b.get(i) != Some(&b'}') {
            loop {
                let key_end = json_string_end(b, i)?;
                let k: String = serde_json::from_str(&text[i..key_end]).ok()?;
                i = skip_json_ws(b, key_end);
                if b.get(i) != Some(&b':') {
                    return None;
                }
                i = skip_json_ws(b, i + 1);
                let value_end = json_value_end(b, i)?;
                if k == *key {
                    found = Some(i);
                }
                i = skip_json_ws(b, value_end);
                match b.get(i) {
                    Some(b',') => i = skip_json_ws(b, i + 1),
                    Some(b'}') => break,
                    _ => return None,
                }
            }
        }
        start = found?;
    }
    Some((start, json_value_end(b, start)?))
}

fn skip_json_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

fn json_string_end(b: &[u8], i: usize) -> Option<usize> {
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            b'\\' => j += 2,
            b'"' => return Some(j + 1),
            _ => j += 1,
        }
    }
    None
}

fn json_value_end(b: &[u8], i: usize) -> Option<usize> {
    match b.get(i)? {
        b'"' => json_string_end(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = json_string_end(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            None
        }
        _ => {
            let mut j = i;
            while j < b.len() && !matches!(b[j], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                j += 1;
            }
            Some(j)
        }
    }
}

/// Nothing panics; a loaded blueprint answers every getter; `to_python_json` re-reads as the same
/// document; `set_ami` changes only the bytes of the AMI value (or, when the key is missing,
/// only `LambdaConfig`), writes ASCII, gives a text that loads with the new AMI, succeeds whenever
/// `LambdaConfig` is an object, changes nothing when it fails, and setting the old AMI back
/// restores the original bytes.
fn check_blueprint(case: &BlueprintCase) -> Result<(), String> {
    let dir = PathBuf::from("fuzz-blueprint");
    let _ = blueprint::placeholders(&case.ami);
    let mut bp = match Blueprint::from_text(dir.clone(), case.text.clone()) {
        Ok(bp) => bp,
        Err(e) => {
            return if e.to_string().trim().is_empty() {
                Err(format!("Blueprint::from_text({}) failed with an empty message", show(&case.text, 300)))
            } else {
                Ok(())
            };
        }
    };
    if bp.text() != case.text || bp.is_modified() {
        return Err("a loaded blueprint's text differs from the text it was read from".to_string());
    }
    let old_doc = bp.doc().clone();
    let _ = (bp.pipeline_name(), bp.ami(), bp.instance_type(), bp.iam_role(), bp.working_directory());
    let _ = (bp.ssm_timeout(), bp.key_name(), bp.security_groups(), bp.region(), bp.affiliates());
    let _ = (bp.summary(), bp.duplicate_keys(), bp.dir(), bp.path());
    for path in [
        "",
        "Lambda",
        "Lambda.LambdaConfig.AMI",
        "UXData.Affiliates[0].AffiliateName",
        "a..b",
        "x[",
        "[0]",
        "a[1]b",
    ] {
        let _ = bp.get(path);
    }
    if let Ok(command) = bp.command()
        && let Ok(fields) = blueprint::placeholders(command)
    {
        let _ = blueprint::positional_count(&fields);
    }
    let findings = lint::check(&bp);
    let _ = lint::render(&dir, &findings);
    for indent in [None, Some(4)] {
        let text = blueprint::to_python_json(&old_doc, indent);
        match serde_json::from_str::<Json>(&text) {
            Ok(doc) if doc == old_doc => {}
            other => {
                return Err(format!(
                    "to_python_json(indent {indent:?}) wrote {} which reads back as {}, not the document of {}",
                    show(&text, 300),
                    show(&format!("{other:?}"), 300),
                    show(&case.text, 300)
                ));
            }
        }
    }

    let old = case.text.as_str();
    let parent = old_doc.pointer("/Lambda/LambdaConfig");
    let old_ami = parent.and_then(|p| p.get("AMI")).cloned();
    let result = bp.set_ami(&case.ami);
    let new = bp.text().to_string();
    let context = || format!("set_ami({}) on {}", show(&case.ami, 60), show(old, 400));
    let changed = match result {
        Err(e) => {
            if new != old {
                return Err(format!("{} failed ({e}) but changed the text", context()));
            }
            if parent.is_some_and(Json::is_object) {
                return Err(format!("{} failed although `Lambda.LambdaConfig` is an object: {e}", context()));
            }
            return Ok(());
        }
        Ok(changed) => changed,
    };
    if !changed {
        return if old_ami.as_ref().and_then(Json::as_str) == Some(case.ami.as_str()) && new == old {
            Ok(())
        } else {
            Err(format!(
                "{} reported no change, but the AMI was {old_ami:?} (the text changed: {})",
                context(),
                new != old
            ))
        };
    }
    if old_ami.as_ref().and_then(Json::as_str) == Some(case.ami.as_str()) {
        return Err(format!("{} reported a change although the AMI already had this value", context()));
    }
    let mut expected_doc = old_doc.clone();
    if let Some(Json::Object(map)) = expected_doc.pointer_mut("/Lambda/LambdaConfig") {
        map.insert("AMI".to_string(), Json::String(case.ami.clone()));
    }
    // Only the value (or the LambdaConfig object that lacked it) may differ.
    let (span, what) = match oracle_span(old, &["Lambda", "LambdaConfig", "AMI"]) {
        Some(span) => (span, "AMI value"),
        None => match oracle_span(old, &["Lambda", "LambdaConfig"]) {
            Some(span) => (span, "LambdaConfig object"),
            None => {
                return Err(format!("{} succeeded, but the text has no `Lambda.LambdaConfig`", context()));
            }
        },
    };
    let (start, end) = span;
    let tail = old.len() - end;
    if new.len() < start + tail || !new.starts_with(&old[..start]) || !new.ends_with(&old[end..]) {
        return Err(format!(
            "{} changed bytes outside the {what} (bytes {start}..{end} of the old text); the new text is {}",
            context(),
            show(&new, 400)
        ));
    }
    let middle = &new[start..new.len() - tail];
    if what == "AMI value" {
        match serde_json::from_str::<String>(middle) {
            Ok(s) if s == case.ami => {}
            other => {
                return Err(format!(
                    "{} wrote the value {} which reads as {other:?}",
                    context(),
                    show(middle, 200)
                ));
            }
        }
        if !middle.is_ascii() {
            return Err(format!(
                "{} wrote {} with non-ASCII characters (json.dump writes \\uXXXX)",
                context(),
                show(middle, 200)
            ));
        }
    } else {
        let expected_parent = expected_doc.pointer("/Lambda/LambdaConfig");
        match serde_json::from_str::<Json>(middle) {
            Ok(doc) if Some(&doc) == expected_parent => {}
            other => {
                return Err(format!(
                    "{} rewrote LambdaConfig as {} which reads as {}",
                    context(),
                    show(middle, 300),
                    show(&format!("{other:?}"), 300)
                ));
            }
        }
    }
    match Blueprint::from_text(dir, new.clone()) {
        Ok(again) => {
            if again.ami().ok() != Some(case.ami.as_str()) || again.doc() != &expected_doc {
                return Err(format!(
                    "{} gave {} which loads with the AMI {:?} (or another document)",
                    context(),
                    show(&new, 400),
                    again.ami().ok()
                ));
            }
        }
        Err(e) => return Err(format!("{} gave {} which does not load: {e}", context(), show(&new, 400))),
    }
    // Setting the old AMI back restores the bytes when it was written the way devami writes.
    if let Some(Json::String(previous)) = &old_ami
        && what == "AMI value"
        && old[start..end] == spans::quote(previous)
    {
        match bp.set_ami(previous) {
            Ok(true) if bp.text() == old => {}
            other => {
                return Err(format!(
                    "{} then setting {} back gave {other:?} and the text {}",
                    context(),
                    show(previous, 60),
                    show(bp.text(), 400)
                ));
            }
        }
    }
    Ok(())
}

// =============================================================================================
// Harness 3: submit files and COMMAND filling.

/// One input of the `submit` harness.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum SubmitCase {
    /// A submit file's text.
    Text { text: String },
    /// A COMMAND template and the values for its placeholders; `bash` runs it when it can.
    Fill { template: String, values: Vec<String>, bash: bool },
}

#[test]
fn submit_harness() {
    let strategy = prop_oneof![
        1 => unicode(120).prop_map(|text| SubmitCase::Text { text }),
        3 => tape(200).prop_map(|t| gen_submit_text(&mut Tape::new(&t))),
        1 => tape(200).prop_map(|t| {
            let mut t = Tape::new(&t);
            let template = t.string(30);
            let values = (0..t.below(6)).map(|_| t.string(8)).collect();
            SubmitCase::Fill { template, values, bash: false }
        }),
        5 => tape(300).prop_map(|t| gen_fill(&mut Tape::new(&t))),
    ];
    drive("submit", Cases { normal: 1500, round: 1200 }, strategy, check_submit);
}

/// Cases of the normal suite that may still run bash.
static BASH_LEFT: AtomicU32 = AtomicU32::new(NORMAL_BASH_RUNS);

fn check_submit(case: &SubmitCase) -> Result<(), String> {
    let bash = long_mode().is_some()
        || BASH_LEFT.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok();
    check_submit_with(case, bash)
}

fn gen_submit_text(t: &mut Tape) -> SubmitCase {
    if t.chance(200) {
        let seed = fs::read_to_string(root().join("blueprints/word-stats/test_resources/submit.json"))
            .unwrap_or_default();
        return SubmitCase::Text { text: mutate(t, &seed, JSON_TOKENS) };
    }
    let string = |t: &mut Tape| match t.below(10) {
        0 => J::Str(String::new()),
        1 => gen_json_value(t, 3),
        _ => J::Str(t.string(16)),
    };
    let mut members = Vec::new();
    if t.chance(950) {
        let dataname = match t.below(4) {
            0 => J::Arr((0..t.below(4)).map(|_| string(t)).collect()),
            _ => string(t),
        };
        members.push(("dataname".to_string(), dataname));
    }
    if t.chance(950) {
        let v = string(t);
        members.push(("configname".to_string(), v));
    }
    if t.chance(950) {
        let v = if t.chance(300) { J::Num(t.pick(JSON_NUMBERS).to_string()) } else { string(t) };
        members.push(("timestamp".to_string(), v));
    }
    if t.chance(300) {
        let v = if t.chance(300) { J::Null } else { string(t) };
        members.push(("instance_type".to_string(), v));
    }
    if t.chance(200) {
        members.push((t.string(6), gen_json_value(t, 2)));
    }
    t.shuffle(&mut members);
    let doc = if t.chance(970) { J::Obj(members) } else { gen_json_value(t, 0) };
    let mut text = render_json_text(t, &doc);
    if t.chance(100) {
        text = mutate(t, &text, JSON_TOKENS);
    }
    SubmitCase::Text { text }
}

/// What `parse_submit` must return for a JSON document, computed from the rules it documents.
fn oracle_submit(doc: &Json) -> Option<submit::Submit> {
    let obj = doc.as_object()?;
    // A name is a non-empty string without control characters (they reach S3 and a shell).
    let string = |v: &Json| {
        v.as_str().filter(|s| !s.is_empty() && !s.chars().any(char::is_control)).map(str::to_string)
    };
    let datanames = match obj.get("dataname")? {
        Json::Array(items) if !items.is_empty() => items.iter().map(string).collect::<Option<Vec<_>>>()?,
        Json::Array(_) => return None,
        v => vec![string(v)?],
    };
    let configname = string(obj.get("configname")?)?;
    let timestamp = match obj.get("timestamp")? {
        Json::Number(n) => n.to_string(),
        v => string(v)?,
    };
    let instance_type = match obj.get("instance_type") {
        None | Some(Json::Null) => None,
        Some(v) => Some(string(v)?),
    };
    Some(submit::Submit { datanames, configname, timestamp, instance_type })
}

const FILL_TEMPLATES: &[&str] = &[
    "printf '%s\\n' {} {} {} {}",
    "printf '%s\\0' {} {} {} {}",
    "printf '%s\\n' \"{}\" \"{}\" \"{}\" \"{}\"",
    "printf '%s\\n' '{}' '{}' '{}' '{}'",
    "printf '%s\\n' {0} \"{1}\" '{2}' x{3}y \"a{0}b\" 'c{1}d' {{}} \"{{{2}}}\"",
    "printf '%s\\n' --x={} \"--y={}\" '{}'\"{}\"{} ",
    "cd ~; printf '[%s]\\n' \"{}\" \"{}\" \"{}\" \"{}\" \"./run_pca.sh\"; true",
];

/// Pieces of data names that break naive quoting.
const PAYLOADS: &[&str] = &[
    "'",
    "\"",
    "\\",
    "$",
    "`",
    ";",
    "\n",
    "'; echo INJECTED; '",
    "\"; echo INJECTED; \"",
    "$(echo INJECTED)",
    "`echo INJECTED`",
    "${HOME}",
    "$HOME",
    "*",
    "?",
    "[a]",
    "~",
    "~root",
    "{a,b}",
    "!",
    "#",
    "&",
    "|",
    ">",
    "<",
    "'\\''",
    "\\'",
    "\\\"",
    "$'\\x41'",
    " ",
    "\t",
    "-n",
    "--",
    "%s",
    "\\n",
    "é",
    "😀",
    "\r",
    "{}",
    "{0}",
    "}",
];

/// The COMMANDs of the example blueprints, with `/home/ubuntu` as `~` so that they run here.
fn blueprint_commands() -> &'static [String] {
    static COMMANDS: OnceLock<Vec<String>> = OnceLock::new();
    COMMANDS.get_or_init(|| {
        let mut out: Vec<String> = blueprint_seeds()
            .iter()
            .filter_map(|text| serde_json::from_str::<Json>(text).ok())
            .filter_map(|doc| {
                doc.pointer("/Lambda/LambdaConfig/COMMAND").and_then(Json::as_str).map(str::to_string)
            })
            .map(|c| c.replace("/home/ubuntu", "~"))
            .collect();
        out.sort();
        out.dedup();
        out
    })
}

fn gen_fill(t: &mut Tape) -> SubmitCase {
    let template = match t.below(6) {
        0 | 1 => t.pick(FILL_TEMPLATES).to_string(),
        2 | 3 => t.pick_clone(blueprint_commands()),
        _ => gen_template(t),
    };
    let needed = blueprint::placeholders(&template).map(|f| blueprint::positional_count(&f)).unwrap_or(4);
    let values = (0..needed.max(4)).map(|_| gen_data_value(t)).collect();
    SubmitCase::Fill { template, values, bash: true }
}

/// A value: any characters but NUL (which no process argument can hold), with payloads.
fn gen_data_value(t: &mut Tape) -> String {
    let mut s = String::new();
    for _ in 0..t.below(5) {
        if t.chance(500) {
            s.push_str(t.pick(PAYLOADS));
        } else {
            s.push_str(&t.string_without(6, &['\0']));
        }
    }
    s
}

/// A template of `printf` arguments with placeholders in every quoting context the filler
/// supports: bare, `"..."`, `'...'`, glued to text, after a backslash, with literal braces.
fn gen_template(t: &mut Tape) -> String {
    const LIT: &[&str] = &["", "a", "pre-", "-post", " ", "é", "/", "x y"];
    let mut s = String::from("printf '%s\\0'");
    let mut auto = 0;
    for _ in 0..1 + t.below(6) {
        s.push(' ');
        for _ in 0..1 + t.below(3) {
            let field = if auto < 4 && t.chance(700) {
                auto += 1;
                "{}".to_string()
            } else {
                format!("{{{}}}", t.below(4))
            };
            let (a, b) = (t.pick(LIT), t.pick(LIT));
            let part = match t.below(12) {
                0..=2 => field,
                3..=5 => format!("\"{a}{field}{b}\""),
                6..=7 => format!("'{a}{field}{b}'"),
                // No bare glob characters: the template's own glob may match differently once
                // the values around it change, which is the template's doing, not an injection.
                8 => t.pick(&["a", "x-", "--opt=", "/tmp/", "é", "{{", "}}", "~", "="]).to_string(),
                9 => format!("'{a}'\"{b}\""),
                10 if BACKSLASH_BEFORE_PLACEHOLDER => format!("\\{field}"),
                11 if BACKSLASH_BEFORE_PLACEHOLDER => format!("\"\\{field}\""),
                _ => format!("\"{field}\""),
            };
            s.push_str(&part);
        }
    }
    // Auto and manual numbering cannot mix in Python; keep the template consistent.
    if auto > 0 {
        s = s.replace("{0}", "{}").replace("{1}", "{}").replace("{2}", "{}").replace("{3}", "{}");
    }
    s
}

fn check_submit_with(case: &SubmitCase, bash: bool) -> Result<(), String> {
    match case {
        SubmitCase::Text { text } => check_submit_text(text),
        SubmitCase::Fill { template, values, bash: runnable } => {
            let refs: Vec<&str> = values.iter().map(String::as_str).collect();
            let filled = submit::fill_command(template, &refs);
            match &filled {
                Err(e) if !e.to_string().starts_with("the blueprint's COMMAND cannot be filled") => {
                    return Err(format!(
                        "fill_command({}) failed with an unexpected message: {e}",
                        show(template, 200)
                    ));
                }
                Err(_) => return Ok(()),
                Ok(_) => {}
            }
            if *runnable && bash && !template.contains('\0') && !values.iter().any(|v| v.contains('\0')) {
                check_fill_in_bash(template, values)
            } else {
                Ok(())
            }
        }
    }
}

/// `parse_submit` never panics and returns exactly what the rules give for the document; a
/// submit file written by `submit_text` reads back as its values.
fn check_submit_text(text: &str) -> Result<(), String> {
    let path = Path::new("test_resources/submit.json");
    let parsed = submit::parse_submit(path, text);
    let doc = serde_json::from_str::<Json>(text);
    let expected = doc.as_ref().ok().and_then(oracle_submit);
    match (&parsed, &expected) {
        (Ok(got), Some(want)) if got == want => {}
        (Err(e), None) if !e.to_string().trim().is_empty() => {}
        _ => {
            return Err(format!(
                "parse_submit({}) gave {parsed:?}, expected {}",
                show(text, 300),
                match &expected {
                    Some(s) => format!("{s:?}"),
                    None => "an error".to_string(),
                }
            ));
        }
    }
    if let Some(s) = expected {
        let again = submit::submit_text(&s.datanames, &s.configname, &s.timestamp);
        match submit::parse_submit(path, &again) {
            Ok(back)
                if back.datanames == s.datanames
                    && back.configname == s.configname
                    && back.timestamp == s.timestamp => {}
            other => {
                return Err(format!("submit_text wrote {} which reads back as {other:?}", show(&again, 300)));
            }
        }
    }
    Ok(())
}

/// A stand-in for every script a COMMAND runs: prints its name and arguments, NUL-separated;
/// sourced (`. workflow.sh`), it defines `cleanup`.
const STUB: &str = "#!/bin/bash\n\
    if [ \"${BASH_SOURCE[0]}\" != \"$0\" ]; then cleanup() { :; }; return 0; fi\n\
    printf '<%s>\\0' \"${0##*/}\"\n\
    printf '%s\\0' \"$@\"\n";

/// `sudo -u USER CMD...` runs CMD.
const SUDO_STUB: &str = "#!/bin/sh\n\
    while [ \"$#\" -gt 0 ]; do case \"$1\" in -u) shift 2;; -*) shift;; *) break;; esac; done\n\
    exec \"$@\"\n";

/// Empties `home` and writes a stub for every script path the template names (and `sudo`).
fn fill_home(home: &Path, template: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    for entry in fs::read_dir(home).map_err(|e| format!("{}: {e}", home.display()))?.flatten() {
        let path = entry.path();
        let removed = if path.is_dir() { fs::remove_dir_all(&path) } else { fs::remove_file(&path) };
        removed.map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let write = |path: &Path, text: &str| -> Result<(), String> {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("{}: {e}", path.display()))
    };
    write(&home.join(".fuzzbin/sudo"), SUDO_STUB)?;
    for word in template.split(|c: char| !(c.is_ascii_alphanumeric() || "_./~-".contains(c))) {
        let rel = word.trim_start_matches("~/").trim_start_matches("./");
        if word.ends_with(".sh") && !rel.starts_with('/') && !rel.contains("..") && !rel.is_empty() {
            write(&home.join(rel), STUB)?;
        }
    }
    Ok(())
}

/// Runs a command with `bash -c` in `home` (its `HOME` and working folder), freshly filled with
/// the template's stubs; its stdout and exit status.
fn run_bash(home: &Path, template: &str, command: &str) -> Result<(Vec<u8>, Option<i32>), String> {
    fill_home(home, template)?;
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(command)
        .current_dir(home)
        .env_clear()
        .env("HOME", home)
        .env("PATH", format!("{}/.fuzzbin:/usr/bin:/bin", home.display()))
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("spawn bash: {e}"))?;
    let mut stdout = child.stdout.take().ok_or("no stdout")?;
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.read_to_end(&mut out);
        out
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("bash -c {} did not finish in 20 s", show(command, 300)));
            }
        }
    };
    let out = reader.join().map_err(|_| "the stdout reader panicked")?;
    Ok((out, status.code()))
}

/// Replaces each marker in `text` by its value, in one left-to-right pass.
fn replace_markers(text: &[u8], markers: &[String], values: &[String]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    'outer: while i < text.len() {
        for (m, v) in markers.iter().zip(values) {
            if text[i..].starts_with(m.as_bytes()) {
                out.extend_from_slice(v.as_bytes());
                i += m.len();
                continue 'outer;
            }
        }
        out.push(text[i]);
        i += 1;
    }
    out
}

/// No injection: the COMMAND filled with the values, run by `bash -c`, does exactly what it does
/// when filled with harmless markers, with each marker in its output replaced by its value.
fn check_fill_in_bash(template: &str, values: &[String]) -> Result<(), String> {
    let markers: Vec<String> = (0..values.len()).map(|i| format!("FUZZMARK{i}X")).collect();
    let marker_refs: Vec<&str> = markers.iter().map(String::as_str).collect();
    let value_refs: Vec<&str> = values.iter().map(String::as_str).collect();
    let baseline = submit::fill_command(template, &marker_refs).map_err(|e| {
        format!("fill_command({}) fails with markers but not with values: {e}", show(template, 200))
    })?;
    let actual = submit::fill_command(template, &value_refs).map_err(|e| e.to_string())?;
    // Both runs in the same folder (so `~` and `$PWD` expand alike), emptied in between.
    let home = tempfile::tempdir().map_err(|e| format!("temporary folder: {e}"))?;
    let (base_out, base_status) = run_bash(home.path(), template, &baseline)?;
    let (out, status) = run_bash(home.path(), template, &actual)?;
    let expected = replace_markers(&base_out, &markers, values);
    if out != expected || status != base_status {
        return Err(format!(
            "injection: COMMAND {} filled with {} is {}; bash printed {} (status {status:?}) where the same \
             command filled with markers printed {} (status {base_status:?})",
            show(template, 300),
            show(&format!("{values:?}"), 400),
            show(&actual, 500),
            show(&String::from_utf8_lossy(&out), 400),
            show(&String::from_utf8_lossy(&expected), 400),
        ));
    }
    Ok(())
}

// =============================================================================================
// Harness 4: transcripts.

/// One input of the `transcript` harness.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum TranscriptCase {
    /// A script, transcript or markdown page.
    Text { text: String, markdown: bool },
    /// Steps rendered by `render_transcript`, parsed back (inside a markdown page when `fence`).
    Render { steps: Vec<(String, String)>, fence: Option<Fenced> },
    /// Expected lines and an output.
    Check { expected: Vec<String>, actual: String },
}

/// A markdown page around a rendered transcript.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Fenced {
    prose: String,
    fence: String,
    info: String,
    epilogue: String,
}

#[test]
fn transcript_harness() {
    let strategy = prop_oneof![
        1 => (unicode(200), any::<bool>()).prop_map(|(text, markdown)| TranscriptCase::Text { text, markdown }),
        3 => tape(300).prop_map(|t| gen_transcript_text(&mut Tape::new(&t))),
        4 => tape(300).prop_map(|t| gen_render(&mut Tape::new(&t))),
        4 => tape(200).prop_map(|t| gen_check(&mut Tape::new(&t))),
    ];
    drive("transcript", Cases { normal: 2500, round: 40_000 }, strategy, check_transcript);
}

const TOKEN_NAMES: &[&str] =
    &["[ID]", "[UUID]", "[HASH]", "[N]", "[NUM]", "[TIME]", "[DATE]", "[DURATION]", "[PATH]", "[PID]"];

const TRANSCRIPT_LINES: &[&str] = &[
    "devami>",
    "devami> status",
    "devami>x",
    "devami>   ",
    "```devami",
    "```devami ignore",
    "```devami foo",
    "~~~devami",
    "````devami",
    "```",
    "````",
    "~~~",
    "  ```",
    "   ```devami",
    "```python",
    "# comment",
    "...",
    "  ...",
    "[..]",
    "[N] jobs",
    "i-0123abcd [ID]",
    "prose text",
    "",
    "  ",
    "\r",
    "\u{feff}devami> x",
    "devami> help\r",
    "error: [..]",
    "[TIME] [DURATION] [PATH]",
];

fn transcript_seeds() -> &'static [String] {
    static SEEDS: OnceLock<Vec<String>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let mut paths = vec![root().join("README.md")];
        for dir in ["docs", "docs/tutorials", "examples"] {
            if let Ok(entries) = fs::read_dir(root().join(dir)) {
                paths.extend(
                    entries
                        .flatten()
                        .map(|e| e.path())
                        .filter(|p| p.extension().is_some_and(|e| e == "md" || e == "devami")),
                );
            }
        }
        paths.sort();
        paths.iter().filter_map(|p| fs::read_to_string(p).ok()).collect()
    })
}

fn gen_transcript_text(t: &mut Tape) -> TranscriptCase {
    let markdown = t.chance(500);
    let text = if t.chance(300) && !transcript_seeds().is_empty() {
        let seed = t.pick_clone(transcript_seeds());
        mutate(
            t,
            &seed,
            &["```", "devami> ", "\n", "~~~", "...", "[..]", "\r\n", "```devami\n", "`", "\u{feff}"],
        )
    } else {
        let mut lines = Vec::new();
        for _ in 0..t.below(12) {
            lines.push(if t.chance(600) {
                t.pick(TRANSCRIPT_LINES).to_string()
            } else {
                t.string_without(20, &['\n'])
            });
        }
        let newline = if t.chance(200) { "\r\n" } else { "\n" };
        let mut text = lines.join(newline);
        if t.chance(100) {
            text.insert(0, '\u{feff}');
        }
        text
    };
    TranscriptCase::Text { text, markdown }
}

fn gen_output_line(t: &mut Tape) -> String {
    match t.below(4) {
        0 => t.pick(TRANSCRIPT_LINES).to_string(),
        1 => {
            let mut s = t.string_without(20, &['\n']);
            if t.chance(300) {
                s.push_str(t.pick(&["  ", "\t", " \r"]));
            }
            s
        }
        _ => t.string_without(30, &['\n']),
    }
}

fn gen_render(t: &mut Tape) -> TranscriptCase {
    let fenced = t.chance(400);
    let n = t.below(4) + usize::from(fenced);
    let fence = if t.chance(700) { "```".to_string() } else { t.pick(&["~~~", "````", "~~~~~"]).to_string() };
    let mut steps = Vec::new();
    for _ in 0..n {
        let input = t.string_without(24, &['\n']);
        let mut output = String::new();
        for i in 0..t.below(6) {
            if i > 0 {
                output.push_str(if t.chance(100) { "\r\n" } else { "\n" });
            }
            let mut line = gen_output_line(t);
            if fenced && closes_fence(&line, &fence) {
                line.insert(0, 'x');
            }
            output.push_str(&line);
        }
        if t.chance(300) {
            output.push_str(t.pick(&["\n", "\n\n", "\n  \n", "\r\n"]));
        }
        steps.push((input, output));
    }
    let fence = fenced.then(|| {
        let prose_text = |t: &mut Tape| {
            let lines: Vec<String> = (0..t.below(4))
                .map(|_| {
                    let line = if t.chance(300) {
                        t.pick(TRANSCRIPT_LINES).to_string()
                    } else {
                        t.string_without(20, &['\n'])
                    };
                    if opens_fence(&line) { format!("x{line}") } else { line }
                })
                .collect();
            lines.join("\n")
        };
        let prose = prose_text(t);
        let epilogue = prose_text(t);
        let info = t.pick(&["devami", "devami ignore", " devami ", "devami  ignore"]).to_string();
        Fenced { prose, fence, info, epilogue }
    });
    TranscriptCase::Render { steps, fence }
}

/// Whether a line opens a fence (three or more backticks or tildes after spaces).
fn opens_fence(line: &str) -> bool {
    let rest = line.trim_start_matches(' ');
    rest.starts_with("```") || rest.starts_with("~~~")
}

/// Whether a line closes a block opened by `fence`.
fn closes_fence(line: &str, fence: &str) -> bool {
    let ch = fence.as_bytes()[0];
    let rest = line.trim_start_matches(' ');
    let n = rest.bytes().take_while(|&b| b == ch).count();
    n >= fence.len() && rest[n..].trim().is_empty()
}

fn gen_check(t: &mut Tape) -> TranscriptCase {
    const PIECES: &[&str] = &["a", "b", "ab", " ", "[..]", "[", "]", ".", "..", "é", "x", "[..]", "a"];
    const ACTUAL: &[&str] = &["a", "b", " ", "[", "]", ".", "é", "x", "ab", "[..]"];
    let with_tokens = t.chance(150);
    let mut expected = Vec::new();
    for _ in 0..t.below(6) {
        if t.chance(150) {
            expected.push(t.pick(&["...", "  ...", "... "]).to_string());
            continue;
        }
        let mut line = String::new();
        for _ in 0..t.below(6) {
            if with_tokens && t.chance(200) {
                line.push_str(t.pick(TOKEN_NAMES));
            } else {
                line.push_str(t.pick(PIECES));
            }
        }
        expected.push(line);
    }
    let actual = match t.below(4) {
        0 => {
            // The expected text itself, with trailing blanks, CRLF or blank lines now and then.
            let mut s = String::new();
            for line in &expected {
                s.push_str(line);
                if t.chance(150) {
                    s.push_str(t.pick(&[" ", "\t", "  "]));
                }
                s.push_str(if t.chance(100) { "\r\n" } else { "\n" });
            }
            if t.chance(150) {
                s.push_str("\n \n");
            }
            s
        }
        1 => {
            // The expected text with each wildcard replaced by something.
            expected
                .iter()
                .map(|l| {
                    let mut out = String::new();
                    for (i, part) in l.split("[..]").enumerate() {
                        if i > 0 {
                            for _ in 0..t.below(3) {
                                out.push_str(t.pick(ACTUAL));
                            }
                        }
                        out.push_str(part);
                    }
                    if l.trim() == "..." { t.pick(&["a", "b", "...", ""]).to_string() } else { out }
                })
                .collect::<Vec<_>>()
                .join("\n")
        }
        _ => {
            let mut lines = Vec::new();
            for _ in 0..t.below(6) {
                let mut line = String::new();
                for _ in 0..t.below(5) {
                    line.push_str(if with_tokens && t.chance(200) {
                        t.pick(&[
                            "i-0a1b2c",
                            "12",
                            "2024-01-02 03:04:05",
                            "/tmp/x",
                            "1h 2m",
                            "3.5",
                            "0123abcd",
                        ])
                    } else {
                        t.pick(ACTUAL)
                    });
                }
                lines.push(line);
            }
            lines.join("\n")
        }
    };
    TranscriptCase::Check { expected, actual }
}

/// Lines as the matcher sees them: split, right-trimmed, trailing blank lines dropped.
fn trimmed_lines<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut out: Vec<&str> = lines.map(str::trim_end).collect();
    while out.last().is_some_and(|l| l.is_empty()) {
        out.pop();
    }
    out
}

/// Whether a line matches a pattern whose only wildcard is `[..]` (dynamic programming).
fn oracle_line(pattern: &str, line: &str) -> bool {
    let parts: Vec<&[u8]> = pattern.split("[..]").map(str::as_bytes).collect();
    let s = line.as_bytes();
    // reach[p]: the pattern so far can end at byte p of the line.
    let mut reach = vec![false; s.len() + 1];
    reach[0] = true;
    for (k, part) in parts.iter().enumerate() {
        if k > 0 {
            // `[..]`: any run of bytes.
            let mut seen = false;
            for r in reach.iter_mut() {
                seen |= *r;
                *r = seen;
            }
        }
        let mut next = vec![false; s.len() + 1];
        for p in 0..=s.len() {
            if reach[p] && s[p..].starts_with(part) {
                next[p + part.len()] = true;
            }
        }
        reach = next;
    }
    reach[s.len()]
}

/// Whether output lines match expected lines with `[..]` and `...` (dynamic programming).
fn oracle_match(expected: &[String], actual: &str) -> bool {
    let pats = trimmed_lines(expected.iter().flat_map(|e| e.split('\n')));
    let act = trimmed_lines(actual.lines());
    let (n, m) = (pats.len(), act.len());
    // ok[i][j]: pats[i..] matches act[j..].
    let mut ok = vec![vec![false; m + 1]; n + 1];
    ok[n][m] = true;
    for i in (0..n).rev() {
        let gap = pats[i].trim() == "...";
        for j in (0..=m).rev() {
            ok[i][j] = if gap {
                ok[i + 1][j] || (j < m && ok[i][j + 1])
            } else {
                j < m && oracle_line(pats[i], act[j]) && ok[i + 1][j + 1]
            };
        }
    }
    ok[0][0]
}

fn is_budget_error(e: &str) -> bool {
    e.contains("too large to compare")
}

fn check_transcript(case: &TranscriptCase) -> Result<(), String> {
    match case {
        TranscriptCase::Text { text, markdown } => check_transcript_text(text, *markdown),
        TranscriptCase::Render { steps, fence } => check_render(steps, fence.as_ref()),
        TranscriptCase::Check { expected, actual } => check_matching(expected, actual),
    }
}

/// `parse` never panics; the steps it gives are numbered, in line order, trimmed; each step's
/// expected output matches its own text.
fn check_transcript_text(text: &str, markdown: bool) -> Result<(), String> {
    let kind = if markdown { transcript::Kind::Markdown } else { transcript::Kind::Script };
    let parsed = match transcript::parse(text, kind) {
        Ok(p) => p,
        Err(e) => {
            return if e.to_string().trim().is_empty() {
                Err(format!("transcript::parse({}) failed with an empty message", show(text, 300)))
            } else {
                Ok(())
            };
        }
    };
    let mut last_line = 0;
    for (i, step) in parsed.steps.iter().enumerate() {
        let problem = if step.number != i + 1 {
            Some(format!("step {} is numbered {}", i + 1, step.number))
        } else if step.line <= last_line {
            Some(format!("step {} is at line {} after a step at line {last_line}", step.number, step.line))
        } else if step.input.contains('\n') || step.input.trim() != step.input {
            Some(format!("step {} has the input {:?}", step.number, step.input))
        } else if step
            .expected
            .as_ref()
            .is_some_and(|e| e.iter().any(|l| l.contains('\n') || l.trim_end() != l))
        {
            Some(format!("step {} has an expected line that is not one right-trimmed line", step.number))
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(format!("transcript::parse({}, {kind:?}): {problem}", show(text, 400)));
        }
        last_line = step.line;
        if let Some(expected) = &step.expected {
            let own = expected.join("\n");
            if let Err(diff) = transcript::check_output(expected, &own)
                && !is_budget_error(&diff)
            {
                return Err(format!(
                    "the expected output of step {} of {} does not match its own text:\n{diff}",
                    step.number,
                    show(text, 400)
                ));
            }
            let _ = transcript::check_step(step, text);
        }
    }
    Ok(())
}

/// `render_transcript` then `parse` gives the steps back (inputs trimmed, output lines
/// right-trimmed without trailing blank lines, a line reading as an input prefixed with
/// `[..]`), also inside a markdown block; each recorded output matches what was recorded.
fn check_render(steps: &[(String, String)], fence: Option<&Fenced>) -> Result<(), String> {
    let rendered = transcript::render_transcript(steps);
    let (text, kind) = match fence {
        None => (rendered.clone(), transcript::Kind::Script),
        Some(f) => (
            format!("{}\n\n{}{}\n{rendered}{}\n\n{}\n", f.prose, f.fence, f.info, f.fence, f.epilogue),
            transcript::Kind::Markdown,
        ),
    };
    let parsed = transcript::parse(&text, kind)
        .map_err(|e| format!("the rendered transcript {} does not parse: {e}", show(&text, 600)))?;
    let expected_lines = |output: &str| -> Vec<String> {
        trimmed_lines(output.lines())
            .into_iter()
            .map(|l| {
                let reads_as_input =
                    l.strip_prefix("devami>").is_some_and(|r| r.trim_end().is_empty() || r.starts_with(' '));
                if reads_as_input { format!("[..]{l}") } else { l.to_string() }
            })
            .collect()
    };
    if parsed.steps.len() != steps.len() {
        return Err(format!(
            "{} steps rendered as {} parse as {} steps",
            steps.len(),
            show(&text, 600),
            parsed.steps.len()
        ));
    }
    let mut line = 1;
    for (k, ((input, output), step)) in steps.iter().zip(&parsed.steps).enumerate() {
        let want = expected_lines(output);
        let problem = if step.input != input.trim() {
            Some(format!("the input {:?} came back as {:?}", input, step.input))
        } else if step.expected.as_ref() != Some(&want) {
            Some(format!("the output {output:?} came back as {:?}, expected {want:?}", step.expected))
        } else if step.number != k + 1 {
            Some(format!("step {} is numbered {}", k + 1, step.number))
        } else if fence.is_none() && step.line != line {
            Some(format!("step {} is at line {}, expected {line}", k + 1, step.line))
        } else if step.run != fence.is_none_or(|f| !f.info.contains("ignore")) {
            Some(format!("step {} has run = {}", k + 1, step.run))
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(format!("round trip through {}: {problem}", show(&text, 600)));
        }
        line += 1 + want.len();
        if let Err(diff) = transcript::check_output(&want, output) {
            return Err(format!(
                "the recorded output {output:?} does not match its own transcript {want:?}:\n{diff}"
            ));
        }
    }
    if let Some(f) = fence {
        // The prose as the page holds it: followed by a newline, lines split like `parse` does.
        let join = |s: &str| {
            let embedded = format!("{s}\n");
            let lines: Vec<&str> = embedded.lines().map(|l| l.strip_suffix('\r').unwrap_or(l)).collect();
            let start = lines.iter().position(|l| !l.trim().is_empty()).unwrap_or(lines.len());
            let end = lines.iter().rposition(|l| !l.trim().is_empty()).map_or(start, |e| e + 1);
            lines[start..end].join("\n")
        };
        // A byte order mark is dropped only at the very start of the page.
        let (prose, epilogue) =
            (join(f.prose.strip_prefix('\u{feff}').unwrap_or(&f.prose)), join(&f.epilogue));
        if parsed.steps.first().map(|s| s.prose.as_str()) != Some(prose.as_str())
            || parsed.epilogue != epilogue
        {
            return Err(format!(
                "{}: the prose came back as {:?} and the epilogue as {:?}, expected {prose:?} and {epilogue:?}",
                show(&text, 600),
                parsed.steps.first().map(|s| &s.prose),
                parsed.epilogue
            ));
        }
    }
    Ok(())
}

/// `check_output` never panics, agrees with a plain matcher when the only wildcards are `[..]`
/// and `...` (so expected == actual lines without wildcards is accepted), and accepts the
/// expected text itself as output.
fn check_matching(expected: &[String], actual: &str) -> Result<(), String> {
    let result = transcript::check_output(expected, actual);
    if let Err(diff) = &result {
        if diff.trim().is_empty() {
            return Err(format!("check_output({expected:?}, {actual:?}) failed with an empty diff"));
        }
        if is_budget_error(diff) {
            return Ok(());
        }
    }
    let has_token = expected.iter().any(|l| TOKEN_NAMES.iter().any(|t| l.contains(t)));
    if !has_token {
        let want = oracle_match(expected, actual);
        if result.is_ok() != want {
            return Err(format!(
                "check_output({expected:?}, {actual:?}) is {}, but the lines {} match",
                if result.is_ok() { "Ok" } else { "Err" },
                if want { "do" } else { "do not" }
            ));
        }
    }
    let own = expected.join("\n");
    match transcript::check_output(expected, &own) {
        Err(diff) if !is_budget_error(&diff) => {
            Err(format!("check_output({expected:?}, {own:?}) rejects the expected text itself:\n{diff}"))
        }
        _ => Ok(()),
    }
}
