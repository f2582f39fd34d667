//! Test jobs as a NeuroCAAS user sees them, on both backends: submit files, COMMAND quoting,
//! status objects, multi-dataset runs, following, cancelling, results and `new_submit`.
//!
//! Local tests run real jobs: the blueprint's COMMAND calls small scripts that `exec` copied into
//! the instance (`record.sh` prints its arguments in hex and when it started and ended;
//! `analysis.sh` writes results and the dataset's status object through the job's S3 endpoint).
//! moto never runs a command (it answers Success at once), so the AWS tests read the exact
//! command SSM received and run it with bash against the same recording script, and use
//! `moto_proxy.py` to hold commands `InProgress` and to emulate CancelCommand.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::aws::Aws;
use crate::moto::{Proxy, clean_aws_env, venv_bin};
use crate::support::{Scratch, all, root, text};
use crate::support::{no_panic, poll};

// ----- what the jobs run -----

/// Prints `START <epoch>`, one `ARG <hex bytes>` line per argument, sleeps `$JOB_SLEEP` seconds,
/// prints `END <epoch>`.
const RECORD_SH: &str = r#"#!/bin/bash
echo "START $(date +%s.%N)"
for a in "$@"; do printf 'ARG '; printf '%s' "$a" | od -An -v -tx1 | tr -d ' \n'; echo; done
sleep "${JOB_SLEEP:-0}"
echo "END $(date +%s.%N)"
"#;

/// `analysis.sh BUCKET KEY OUTDIR CONFIG`: writes two results and the dataset's status object
/// (`$STATUS`, SUCCESS by default) where NeuroCAAS's run_main.sh would, then exits 0.
const ANALYSIS_SH: &str = r#"#!/bin/bash
set -e
group=${2%/inputs/*}
base=${2##*/}
tmp=$(mktemp -d)
echo "result for $base" > "$tmp/r"
python3 /home/ubuntu/s3.py put "$1" "$group/$3/process_results/out.txt" "$tmp/r"
python3 /home/ubuntu/s3.py put "$1" "$group/$3/process_results/sub dir/deep:er.txt" "$tmp/r"
printf '{"status": "%s", "reason": ["no frames found", "see stderr"]}' "${STATUS:-SUCCESS}" > "$tmp/s"
python3 /home/ubuntu/s3.py put "$1" "$group/$3/logs/DATASET_NAME:${base}_STATUS.txt" "$tmp/s"
rm -rf "$tmp"
echo "analysed $base"
"#;

/// File names that would run `touch pwned-*` (or wipe the home) if a COMMAND were filled
/// without quoting; uploaded under `debuggers/inputs/hostile/`.
const HOSTILE: &[&str] = &[
    "a\"; rm -rf ~; touch pwned-dq; \".txt",
    "$(touch pwned-sub) s.txt",
    "`touch pwned-bq`.txt",
    "it's'; touch pwned-sq; 'x.txt",
    "sp ace:co:lon.txt",
];

/// A hostile name with newlines: S3 takes it, moto's server cannot route it (404), so only the
/// local backend's test uses it.
const NEWLINE: &str = "x\ntouch pwned-nl\ny.txt";

/// A config key as hostile as the data keys.
const HOSTILE_CONFIG: &str = "debuggers/configs/c \"$(touch pwned-cfg)\" ';touch pwned-cfg2;'.json";

/// COMMAND shapes of real blueprints (`neurocaas-protocol.md` §2.3): double-quoted, single-quoted
/// and unquoted placeholders, three placeholders, and a fixed fifth argument.
const FORMS: &[&str] = &[
    r#"cd /home/ubuntu; bash record.sh "{}" "{}" "{}" "{}""#,
    "cd /home/ubuntu; bash record.sh '{}' '{}' '{}' '{}'",
    "cd /home/ubuntu; bash record.sh {} {} {} {}",
    r#"cd /home/ubuntu; bash record.sh "{}" "{}" "{}""#,
    r#"cd /home/ubuntu; bash record.sh "{}" "{}" "{}" "{}" "./analysis.sh""#,
];

const CONFIG: &str = "debuggers/configs/c.json";

/// The arguments `record.sh` must receive for a job of `form`: bucket, dataset key, result
/// directory, config key, as many as the form has placeholders, then its fixed argument.
fn expected_args(form: &str, bucket: &str, job: &Value) -> Vec<Vec<u8>> {
    let values = [bucket, field(job, "dataset"), field(job, "result_dir"), field(job, "config")];
    let mut args: Vec<Vec<u8>> =
        values.iter().take(form.matches("{}").count()).map(|v| v.as_bytes().to_vec()).collect();
    if form.ends_with(r#""./analysis.sh""#) {
        args.push(b"./analysis.sh".to_vec());
    }
    args
}

/// A string field of a job record of state.json.
fn field<'a>(job: &'a Value, name: &str) -> &'a str {
    job[name].as_str().unwrap_or_else(|| panic!("job without `{name}`: {job:#}"))
}

/// What `record.sh` printed.
#[derive(Debug)]
struct Record {
    args: Vec<Vec<u8>>,
    start: f64,
    end: f64,
}

fn parse_record(out: &str) -> Record {
    let time = |tag: &str| -> f64 {
        out.lines()
            .find_map(|l| l.strip_prefix(tag))
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {tag:?} line in the job's output:\n{out}"))
    };
    let args = out
        .lines()
        .filter_map(|l| l.strip_prefix("ARG "))
        .map(|hex| {
            (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect()
        })
        .collect();
    Record { args, start: time("START "), end: time("END ") }
}

fn show(args: &[Vec<u8>]) -> Vec<String> {
    args.iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect()
}

// ----- a session on either backend -----

/// What the tests need of a blueprint session, whatever the backend.
trait Session {
    fn scratch(&self) -> &Scratch;
    fn name(&self) -> &str;
    fn run(&self, commands: &str) -> Output;

    /// Runs `commands`, asserts success; stdout and stderr together.
    fn ok(&self, commands: &str) -> String {
        let out = self.run(commands);
        no_panic(&out);
        assert!(out.status.success(), "`{commands}` failed ({}):\n{}", out.status, all(&out));
        all(&out)
    }

    /// Runs `commands`, asserts exit status 1 with one `error:` line; returns that line.
    fn fails(&self, commands: &str) -> String {
        one_error_line(&self.run(commands), commands)
    }

    /// Changes the blueprint's `Lambda.LambdaConfig.KEY`.
    fn set_lambda_config(&self, key: &str, value: Value) {
        let path = self.scratch().path().join(self.name()).join("stack_config_template.json");
        let mut doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        doc["Lambda"]["LambdaConfig"][key] = value;
        std::fs::write(&path, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    }

    fn set_command(&self, command: &str) {
        self.set_lambda_config("COMMAND", command.into());
    }

    /// Writes `files` (path under `debuggers/inputs/`, contents) locally and uploads them as one
    /// folder.
    fn upload_inputs(&self, files: &[(&str, &str)]) {
        let _ = std::fs::remove_dir_all(self.scratch().path().join("inputs"));
        for (rel, contents) in files {
            self.scratch().write(&format!("inputs/{rel}"), contents);
        }
        self.ok("upload inputs debuggers/inputs");
    }

    /// Writes a submit file in the scratch folder; returns its path relative to it.
    fn submit_file(&self, file: &str, dataname: Value) -> String {
        let doc = json!({"dataname": dataname, "configname": CONFIG, "timestamp": "1"});
        self.scratch().write(file, doc.to_string());
        file.to_string()
    }

    fn state(&self) -> Value {
        let path = self.scratch().path().join(self.name()).join(".devami/state.json");
        crate::support::read_state(&path)
    }

    /// The session's jobs as state.json records them.
    fn jobs(&self) -> Vec<Value> {
        self.state()["jobs"].as_array().cloned().unwrap_or_default()
    }

    fn job_output(&self, index: usize) -> String {
        let out = self.run(&format!("job_output {index}"));
        assert!(out.status.success(), "job_output {index}:\n{}", all(&out));
        text(&out.stdout)
    }

    /// What `record.sh` printed in jobs `from..` of the session (one devami for all of them: its
    /// transcript echoes each `devami> job_output N` before the output).
    fn records(&self, from: usize) -> Vec<Record> {
        let indices: Vec<String> = (from..self.jobs().len()).map(|i| format!("job_output {i}")).collect();
        let out = self.run(&indices.join("; "));
        assert!(out.status.success(), "{}", all(&out));
        let stdout = text(&out.stdout);
        let parts: Vec<&str> = stdout.split("devami> job_output ").skip(1).collect();
        assert_eq!(parts.len(), indices.len(), "{stdout}");
        parts.into_iter().map(parse_record).collect()
    }
}

/// Exit status 1, no panic, and on stderr exactly one line, `error: ...` (besides the reminder
/// that an instance is still running); returns that line.
fn one_error_line(out: &Output, commands: &str) -> String {
    no_panic(out);
    assert_eq!(out.status.code(), Some(1), "`{commands}` should fail with status 1:\n{}", all(out));
    let err = text(&out.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| !l.starts_with("warning: instance ")).collect();
    assert!(
        lines.len() == 1 && lines[0].starts_with("error: "),
        "`{commands}` should print one `error:` line, printed:\n{err}"
    );
    lines[0].to_string()
}

/// Lines of a devami's output without the echoed commands and the lingering-instance reminder.
fn shown(out: &str) -> Vec<&str> {
    out.lines().filter(|l| !l.starts_with("devami> ") && !l.starts_with("warning: instance ")).collect()
}

/// A local-backend blueprint `name` with a running instance whose home holds `record.sh`,
/// `analysis.sh`, `s3.py` and a `canary` file; the config `debuggers/configs/c.json` is uploaded.
/// The instance is terminated on drop.
struct Local {
    s: Scratch,
    name: String,
}

impl Local {
    fn new(name: &str, command: &str) -> Local {
        let s = Scratch::new();
        let dir = s.init(name);
        let local = Local { s, name: name.to_string() };
        local.set_lambda_config("SSM_TIMEOUT", 60.into());
        local.set_command(command);
        std::fs::write(dir.join("record.sh"), RECORD_SH).unwrap();
        std::fs::write(dir.join("analysis.sh"), ANALYSIS_SH).unwrap();
        let s3py = root().join("blueprints/word-stats/analysis/word-stats/s3.py");
        std::fs::copy(s3py, dir.join("s3.py")).unwrap();
        local.s.write("c.json", "{}\n");
        local.ok(
            "launch ubuntu22; exec cp \"$DEVAMI_BLUEPRINT\"/record.sh \"$DEVAMI_BLUEPRINT\"/analysis.sh \
             \"$DEVAMI_BLUEPRINT\"/s3.py ~/; exec touch ~/canary; upload c.json debuggers/configs/c.json",
        );
        local
    }

    fn cmd(&self, commands: &str) -> Command {
        self.s.cmd(&[&self.name, "-c", commands])
    }

    /// The files in the instance's home.
    fn home_files(&self) -> Vec<String> {
        shown(&self.ok("exec ls -A ~")).into_iter().map(str::to_string).collect()
    }
}

impl Session for Local {
    fn scratch(&self) -> &Scratch {
        &self.s
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn run(&self, commands: &str) -> Output {
        self.cmd(commands).output().expect("run devami")
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        let _ = self.run("terminate --force");
    }
}

impl Session for Aws {
    fn scratch(&self) -> &Scratch {
        &self.s
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn run(&self, commands: &str) -> Output {
        Aws::run(self, commands)
    }
}

/// A devami whose stdout lines are read as they come, each with the time it arrived.
struct Live {
    child: Child,
    lines: mpsc::Receiver<(Instant, String)>,
    seen: Vec<(Instant, String)>,
    stderr: Option<JoinHandle<String>>,
}

impl Live {
    fn start(mut cmd: Command) -> Live {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start devami");
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(|l| l.ok()) {
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        let mut err = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        Live { child, lines, seen: Vec::new(), stderr: Some(stderr) }
    }

    /// Waits for a line containing `wanted`.
    fn wait_for(&mut self, wanted: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.seen.iter().any(|(_, l)| l.contains(wanted)) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!("no line with {wanted:?} within {limit:?}; so far:\n{}", self.text()),
            }
        }
    }

    fn text(&self) -> String {
        self.seen.iter().map(|(_, l)| format!("{l}\n")).collect()
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().expect("poll devami").is_none()
    }

    /// Waits for the end (at most `limit`): the exit status, every stdout line with its arrival
    /// time, and stderr.
    fn finish(mut self, limit: Duration) -> (ExitStatus, Vec<(Instant, String)>, String) {
        let start = Instant::now();
        let status = loop {
            if let Some(st) = self.child.try_wait().expect("poll devami") {
                break st;
            }
            assert!(start.elapsed() < limit, "devami still ran after {limit:?}:\n{}", self.text());
            std::thread::sleep(Duration::from_millis(20));
        };
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        let stderr = self.stderr.take().map(|h| h.join().unwrap_or_default()).unwrap_or_default();
        (status, std::mem::take(&mut self.seen), stderr)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The lines of a [`Live`] run without the echoed commands.
fn live_lines(lines: &[(Instant, String)]) -> Vec<&str> {
    lines.iter().map(|(_, l)| l.as_str()).filter(|l| !l.starts_with("devami> ")).collect()
}

/// When the first line containing `wanted` arrived.
fn arrival(lines: &[(Instant, String)], wanted: &str) -> Instant {
    let found = lines.iter().find(|(_, l)| l.contains(wanted)).map(|(t, _)| *t);
    found.unwrap_or_else(|| panic!("no line with {wanted:?} in:\n{:#?}", live_lines(lines)))
}

/// The processes of this machine that belong to a local job (each carries `DEVAMI_COMMAND_ID`).
fn command_processes(command_id: &str) -> Vec<u32> {
    let marker = format!("DEVAMI_COMMAND_ID={command_id}");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|v| v == marker.as_bytes()))
        })
        .collect()
}

// ----- checks shared by both backends -----

/// Every broken submit file: (file, contents, what its one error line must say).
fn broken_submit_files() -> Vec<(&'static str, String, Vec<&'static str>)> {
    let (c, d) = (CONFIG, "debuggers/inputs/data.txt");
    let bad_type = |v: Value| v.to_string();
    vec![
        ("no-dataname.json", bad_type(json!({"configname": c, "timestamp": "1"})), vec!["`dataname`"]),
        ("no-configname.json", bad_type(json!({"dataname": d, "timestamp": "1"})), vec!["`configname`"]),
        ("no-timestamp.json", bad_type(json!({"dataname": d, "configname": c})), vec!["`timestamp`"]),
        (
            "number-dataname.json",
            bad_type(json!({"dataname": 5, "configname": c, "timestamp": "1"})),
            vec!["`dataname`", "must be a string"],
        ),
        (
            "number-in-list.json",
            bad_type(json!({"dataname": [d, 3], "configname": c, "timestamp": "1"})),
            vec!["`dataname`", "must be a string"],
        ),
        (
            "list-configname.json",
            bad_type(json!({"dataname": d, "configname": [c], "timestamp": "1"})),
            vec!["`configname`", "must be a string"],
        ),
        (
            "bool-timestamp.json",
            bad_type(json!({"dataname": d, "configname": c, "timestamp": true})),
            vec!["`timestamp`", "must be a string"],
        ),
        (
            "empty-list.json",
            bad_type(json!({"dataname": [], "configname": c, "timestamp": "1"})),
            vec!["`dataname`", "empty list"],
        ),
        ("bad-json.json", format!(r#"{{"dataname": "{d}", "configname": "{c}",}}"#), vec!["not valid JSON"]),
        ("a-list.json", "[1, 2]".to_string(), vec!["JSON object"]),
        (
            "missing-dataset.json",
            bad_type(json!({"dataname": "debuggers/inputs/data.csv", "configname": c, "timestamp": "1"})),
            vec![
                "dataset `debuggers/inputs/data.csv` is not in bucket",
                "closest keys: `debuggers/inputs/data.txt`",
            ],
        ),
        (
            "one-of-two-missing.json",
            bad_type(
                json!({"dataname": [d, "debuggers/inputs/nothing/"], "configname": c, "timestamp": "1"}),
            ),
            vec!["dataset `debuggers/inputs/nothing/` is not in bucket"],
        ),
        (
            "missing-config.json",
            bad_type(json!({"dataname": d, "configname": "debuggers/configs/cc.json", "timestamp": "1"})),
            vec![
                "config `debuggers/configs/cc.json` is not in bucket",
                "closest keys: `debuggers/configs/c.json`",
            ],
        ),
    ]
}

/// Submits every broken file: each fails with one line naming the file (or the missing key) and
/// the field, and nothing is submitted: no job in the session, `jobs` says so, no status object.
fn check_broken_submit_files(s: &impl Session) {
    let near: Vec<(String, &str)> = (1..=4).map(|i| (format!("data-{i}.txt"), "near\n")).collect();
    let mut files = vec![("data.txt", "some data\n")];
    files.extend(near.iter().map(|(n, c)| (n.as_str(), *c)));
    s.upload_inputs(&files);
    for (file, contents, wanted) in broken_submit_files() {
        s.scratch().write(file, contents);
        let line = s.fails(&format!("submit_job {file}"));
        let names_a_key = wanted.iter().any(|w| w.contains("is not in bucket"));
        assert!(names_a_key || line.contains(file), "{file}: the error does not name the file: {line}");
        for w in wanted {
            assert!(line.contains(w), "{file}: the error lacks {w:?}: {line}");
        }
        if let Some((_, hint)) = line.split_once("closest keys: ") {
            assert!(hint.matches('`').count() <= 6, "{file}: more than 3 closest keys: {line}");
        }
    }
    assert!(s.jobs().is_empty(), "a job was recorded: {:#}", s.state());
    assert!(s.ok("jobs").contains("no jobs yet"));
    let listing = s.ok("ls debuggers/");
    assert!(!listing.contains("results/"), "a status object was written:\n{listing}");
}

/// The hostile dataset keys of `names`, sorted as `submit_job` expands their folder.
fn hostile_keys(names: &[&str]) -> Vec<String> {
    let mut keys: Vec<String> = names.iter().map(|n| format!("debuggers/inputs/hostile/{n}")).collect();
    keys.sort();
    keys
}

/// Uploads datasets named `names` and the hostile config; writes `hostile.json` naming their
/// folder.
fn upload_hostile(s: &impl Session, names: &[&str]) {
    let files: Vec<(String, &str)> = names.iter().map(|n| (format!("hostile/{n}"), "data\n")).collect();
    s.upload_inputs(&files.iter().map(|(n, c)| (n.as_str(), *c)).collect::<Vec<_>>());
    s.scratch().write("hostile-config.json", "{}\n");
    let key = serde_json::to_string(HOSTILE_CONFIG).unwrap();
    s.ok(&format!("devami.upload(\"hostile-config.json\", {key})"));
    let doc =
        json!({"dataname": "debuggers/inputs/hostile/", "configname": HOSTILE_CONFIG, "timestamp": "1"});
    s.scratch().write("hostile.json", doc.to_string());
}

/// Checks that `jobs`, one per key of `names` in order, succeeded and that each received exactly
/// its values as arguments.
fn check_hostile_records(form: &str, bucket: &str, names: &[&str], jobs: &[Value], records: &[Record]) {
    let keys = hostile_keys(names);
    assert_eq!(jobs.len(), keys.len(), "{form}: one job per hostile key: {jobs:#?}");
    for ((job, record), key) in jobs.iter().zip(records).zip(&keys) {
        assert_eq!(field(job, "dataset"), key, "{form}");
        assert_eq!(field(job, "config"), HOSTILE_CONFIG, "{form}");
        assert_eq!(field(job, "last_status"), "Success", "{form}: {job:#}");
        let want = expected_args(form, bucket, job);
        assert_eq!(show(&record.args), show(&want), "{form}: the arguments of the job on {key:?}");
        assert_eq!(record.args, want, "{form}: not byte-exact for {key:?}");
    }
}

/// No `pwned-*` evidence, and the canary survived `rm -rf ~`.
fn assert_no_evidence(files: &[String], context: &str) {
    assert!(files.iter().any(|f| f == "canary"), "the home was wiped ({context}): {files:?}");
    let pwned: Vec<&String> = files.iter().filter(|f| f.contains("pwned")).collect();
    assert!(pwned.is_empty(), "a dataset name ran a command ({context}): {pwned:?}");
}

/// The announcements of a multi-dataset run one job at a time, in order: for each job `sending
/// command`, `job N submitted`, `job N finished: Success`, before the next job is sent.
fn assert_one_after_another(out: &str, first: usize, n: usize) {
    let pos = |s: &str| out.find(s).unwrap_or_else(|| panic!("no {s:?} in:\n{out}"));
    assert!(out.contains(&format!("{n} datasets: one job each, one after another")), "{out}");
    assert_eq!(out.matches("sending command: ").count(), n, "{out}");
    for k in first..first + n {
        let ended = pos(&format!("job {k} finished: Success (exit code 0)"));
        assert!(pos(&format!("job {k} submitted: command ")) < ended, "{out}");
        if k + 1 < first + n {
            let next = pos(&format!("job {} submitted: ", k + 1));
            assert!(ended < next, "job {} was sent before job {k} ended:\n{out}", k + 1);
        }
    }
}

/// The summary of a multi-dataset run in which every job succeeded.
fn assert_all_succeeded(out: &str, n: usize) {
    let summary = format!("{n} jobs finished: {n} succeeded, 0 did not");
    assert!(out.contains(&summary), "no {summary:?} in:\n{out}");
}

fn assert_sequential(recs: &[Record]) {
    for w in recs.windows(2) {
        assert!(w[1].start >= w[0].end, "a job started before the previous one ended: {recs:#?}");
    }
}

// ----- local backend -----

#[test]
fn every_broken_submit_file_is_one_clear_error_and_submits_nothing() {
    let l = Local::new("jobs-errors", FORMS[0]);
    check_broken_submit_files(&l);
}

#[test]
fn hostile_dataset_names_reach_the_job_byte_exact_and_run_nothing() {
    let l = Local::new("jobs-hostile", FORMS[0]);
    let names = [HOSTILE, &[NEWLINE]].concat();
    upload_hostile(&l, &names);
    for form in FORMS {
        l.set_command(form);
        let before = l.jobs().len();
        l.ok("submit_job hostile.json --parallel 6");
        let jobs = l.jobs()[before..].to_vec();
        check_hostile_records(form, &l.name, &names, &jobs, &l.records(before));
    }
    assert_no_evidence(&l.home_files(), "the instance's home");
}

#[test]
fn the_status_object_of_a_key_with_spaces_and_colons() {
    let l = Local::new("jobs-status", FORMS[0]);
    let key = "debuggers/inputs/my data/rec 2024-01-02 10:11:12.txt";
    l.upload_inputs(&[("my data/rec 2024-01-02 10:11:12.txt", "x\n")]);
    // A numeric timestamp is accepted; an instance type other than the instance's is a warning.
    let doc =
        json!({"dataname": key, "configname": CONFIG, "timestamp": 1700000000, "instance_type": "m5.xlarge"});
    l.scratch().write("s.json", doc.to_string());
    let out = l.ok("submit_job s.json");
    assert!(out.contains("warning: the submit file asks for instance type `m5.xlarge`"), "{out}");
    let job = l.jobs()[0].clone();
    let id = l.state()["instance"].as_str().unwrap().to_string();
    let cmd = field(&job, "command_id");
    assert!(out.contains(&format!("to instance {id}\njob 0 submitted: command {cmd} on {key}")), "{out}");

    let dir = field(&job, "result_dir");
    assert!(dir.starts_with("results/debugjob20") && dir.contains(' ') && dir.contains(':'), "{dir}");
    let status_key = format!("debuggers/{dir}/logs/DATASET_NAME:rec 2024-01-02 10:11:12.txt_STATUS.txt");
    l.ok(&format!("devami.download({}, \"status.json\")", serde_json::to_string(&status_key).unwrap()));
    let body: Value =
        serde_json::from_slice(&std::fs::read(l.s.path().join("status.json")).unwrap()).unwrap();
    assert_eq!(
        body,
        json!({"status": "INITIALIZING", "reason": "NONE", "stdout": "not given yet", "stderr": "not given yet",
               "input": key, "instance": id, "command": cmd})
    );
    assert!(l.ok("job_status --wait").contains("Success (exit code 0)"));
}

#[test]
fn several_datasets_run_one_after_another_or_in_parallel() {
    let l = Local::new("jobs-multi", r#"cd /home/ubuntu; JOB_SLEEP=0.5 bash record.sh "{}" "{}" "{}" "{}""#);
    let batch = ["batch/1.txt", "batch/2.txt", "batch/4.txt", "batch/sub/3.txt"];
    let mut files = vec![("a.txt", "a"), ("b.txt", "b")];
    files.extend(batch.iter().map(|b| (*b, "x")));
    l.upload_inputs(&files);

    // A list of keys, one after another, in the submit file's order.
    let list = l.submit_file("list.json", json!(["debuggers/inputs/b.txt", "debuggers/inputs/a.txt"]));
    let listed = l.ok(&format!("submit_job {list}"));
    assert_one_after_another(&listed, 0, 2);
    for header in
        ["index", "command id", "dataset", "instance", "submitted (UTC)", "status", "duration", "exit"]
    {
        assert!(listed.contains(header), "the summary table lacks {header:?}:\n{listed}");
    }
    let recs = l.records(0);
    assert_sequential(&recs);
    assert_eq!(
        show(&[recs[0].args[1].clone(), recs[1].args[1].clone()]),
        ["debuggers/inputs/b.txt", "debuggers/inputs/a.txt"]
    );

    // A folder, two at a time: jobs overlap, never more than two.
    let folder = l.submit_file("folder.json", json!("debuggers/inputs/batch/"));
    let parallel = l.ok(&format!("submit_job {folder} --parallel 2"));
    assert!(parallel.contains("4 datasets: one job each, 2 at a time"), "{parallel}");
    let recs = l.records(2);
    let keys: Vec<String> = batch.iter().map(|b| format!("debuggers/inputs/{b}")).collect();
    assert_eq!(
        recs.iter().map(|r| String::from_utf8_lossy(&r.args[1]).into_owned()).collect::<Vec<_>>(),
        keys
    );
    assert!(recs.windows(2).any(|w| w[1].start < w[0].end), "no two jobs overlapped: {recs:#?}");
    for r in &recs {
        let at_once = recs.iter().filter(|o| o.start <= r.start && o.end > r.start).count();
        assert!(at_once <= 2, "{at_once} jobs ran at once: {recs:#?}");
    }

    // `jobs` lists all six, finished.
    let table = l.ok("jobs");
    assert_eq!(table.matches("Success").count(), 6, "{table}");
    for j in l.jobs() {
        assert!(table.contains(field(&j, "command_id")), "{table}");
    }
    assert_all_succeeded(&listed, 2);
    assert_all_succeeded(&parallel, 4);
}

#[test]
fn a_command_that_stops_the_instance_gets_it_restarted_between_jobs() {
    // The job leaves a process that ignores SIGTERM behind, so stopping the instance takes a
    // couple of seconds after the command has ended (on EC2 `stopping` lasts longer still).
    let l = Local::new(
        "jobs-halt",
        r#"cd /home/ubuntu; bash record.sh "{}" "{}" "{}" "{}"; (trap '' TERM; exec sleep 30) & sudo shutdown -h now"#,
    );
    l.upload_inputs(&[("batch/1.txt", "1"), ("batch/2.txt", "2"), ("batch/3.txt", "3")]);
    let file = l.submit_file("batch.json", json!("debuggers/inputs/batch/"));
    let out = l.ok(&format!("submit_job {file} --parallel 2"));
    assert!(out.contains("warning: the blueprint's COMMAND stops the instance"), "{out}");
    assert_one_after_another(&out, 0, 3);
    assert_eq!(out.matches("was stopped by the previous job").count(), 2, "{out}");
    assert_sequential(&l.records(0));
    assert_all_succeeded(&out, 3);
}

#[test]
fn follow_prints_lines_as_they_come_and_ctrl_c_leaves_the_job_running() {
    let l = Local::new(
        "jobs-follow",
        r#"for i in 1 2 3 4 5 6 7; do echo "line $i"; sleep 0.3; done; echo "a warning" >&2 # {} {} {} {}"#,
    );
    l.upload_inputs(&[("data.txt", "x")]);
    let file = l.submit_file("s.json", json!("debuggers/inputs/data.txt"));

    l.ok(&format!("submit_job {file}"));
    let (status, lines, stderr) = Live::start(l.cmd("job_output --follow")).finish(Duration::from_secs(30));
    assert!(status.success(), "{stderr}");
    let mut want: Vec<String> = (1..=7).map(|i| format!("line {i}")).collect();
    want.extend(["stderr:".into(), "a warning".into(), "job 0 finished: Success (exit code 0)".into()]);
    assert_eq!(live_lines(&lines), want);
    let ahead = arrival(&lines, "job 0 finished").duration_since(arrival(&lines, "line 1"));
    assert!(ahead >= Duration::from_millis(1200), "line 1 came only {ahead:?} before the end");

    // Ctrl-C while following: devami stops following, the job goes on and succeeds.
    l.ok(&format!("submit_job {file}"));
    let mut live = Live::start(l.cmd("job_output --follow"));
    live.wait_for("line 1", Duration::from_secs(20));
    // SAFETY: signals our own child process.
    unsafe { libc::kill(live.child.id() as i32, libc::SIGINT) };
    let (status, lines, stderr) = live.finish(Duration::from_secs(20));
    assert!(matches!(status.code(), Some(0 | 130)), "{status}: {stderr}");
    let shown = live_lines(&lines);
    assert!(shown.last().unwrap().starts_with("stopped following job 1; it goes on"), "{shown:#?}");
    assert!(!shown.contains(&"line 7"), "it followed to the end: {shown:#?}");
    assert!(l.ok("job_status").contains("InProgress"));
    assert!(l.ok("job_status --wait").contains("Success (exit code 0)"));
    assert!(l.job_output(1).contains("line 7"));
}

#[test]
fn cancel_stops_a_running_job_and_refuses_a_finished_one() {
    let l = Local::new("jobs-cancel", "echo started; sleep 30; echo never # {} {} {} {}");
    l.upload_inputs(&[("data.txt", "x")]);
    let file = l.submit_file("s.json", json!("debuggers/inputs/data.txt"));
    l.ok(&format!("submit_job {file}"));
    let cmd = field(&l.jobs()[0], "command_id").to_string();
    poll("the job to start", Duration::from_secs(20), || l.job_output(0).contains("started").then_some(()));
    assert!(!command_processes(&cmd).is_empty(), "the job has no process to cancel");

    let start = Instant::now();
    let out = l.ok("cancel_job");
    assert!(out.contains(&format!("job 0 ({cmd}) cancelled: Cancelled")), "{out}");
    assert!(start.elapsed() < Duration::from_secs(10), "cancel took {:?}", start.elapsed());
    assert!(shown(&l.ok("job_status"))[0].starts_with("Cancelled"));
    assert!(command_processes(&cmd).is_empty(), "the job's processes survived the cancel");
    let line = l.fails("cancel_job 0");
    assert!(line.contains("job 0 has already finished: Cancelled"), "{line}");

    l.set_command("echo quick # {} {} {} {}");
    l.ok(&format!("submit_job {file}; job_status --wait"));
    let line = l.fails("cancel_job");
    assert!(line.contains("job 1 has already finished: Success (exit code 0)"), "{line}");
}

#[test]
fn job_status_shows_an_analysis_that_failed_in_a_job_that_succeeded() {
    let l =
        Local::new("jobs-analysis", r#"cd /home/ubuntu; STATUS=FAILED bash analysis.sh "{}" "{}" "{}" "{}""#);
    l.upload_inputs(&[("data.txt", "x")]);
    let file = l.submit_file("s.json", json!("debuggers/inputs/data.txt"));
    l.ok(&format!("submit_job {file}"));
    let out = l.ok("job_status --wait");
    let lines = shown(&out);
    assert_eq!(lines[0], "Success (exit code 0)", "{out}");
    let why =
        "analysis status: FAILED (reason: no frames found; see stderr); from the dataset's status object";
    assert!(lines.get(1).is_some_and(|l| l.starts_with(why)), "{out}");

    // An analysis that reports SUCCESS agrees with the command: one line.
    l.set_command(r#"cd /home/ubuntu; bash analysis.sh "{}" "{}" "{}" "{}""#);
    l.ok(&format!("submit_job {file}"));
    assert_eq!(shown(&l.ok("job_status --wait")), ["Success (exit code 0)"]);

    // So does one that never touches its status object (it stays INITIALIZING): nothing says
    // the analysis failed.
    l.set_command(r#"cd /home/ubuntu; bash record.sh "{}" "{}" "{}" "{}""#);
    l.ok(&format!("submit_job {file}"));
    assert_eq!(shown(&l.ok("job_status --wait")), ["Success (exit code 0)"]);
}

#[test]
fn results_list_and_download_and_new_submit_writes_what_submit_job_runs() {
    let l = Local::new("jobs-results", r#"cd /home/ubuntu; bash analysis.sh "{}" "{}" "{}" "{}""#);

    // new_submit with local files (a file and a folder) and a local config: uploaded, then run.
    for (path, contents) in [("one.txt", "one"), ("batch/b1.txt", "b1"), ("batch/deep/b2.txt", "b2")] {
        l.scratch().write(&format!("mine/{path}"), contents);
    }
    l.scratch().write("mine/my-config.json", "{\"k\": 1}\n");
    let out = l.ok("new_submit mine/one.txt mine/batch --config mine/my-config.json");
    let written = l.s.path().join("jobs-results/test_resources/devami_submit.json");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&written).unwrap()).unwrap();
    assert_eq!(doc["dataname"], json!(["debuggers/inputs/one.txt", "debuggers/inputs/batch/"]), "{out}");
    assert_eq!(doc["configname"], "debuggers/configs/my-config.json", "{out}");
    assert!(doc["timestamp"].is_string(), "{doc}");
    assert!(out.contains("\"dataname\": ["), "the file is not printed:\n{out}");
    let listing = l.ok("ls debuggers/");
    for key in ["inputs/one.txt", "inputs/batch/b1.txt", "inputs/batch/deep/b2.txt", "configs/my-config.json"]
    {
        assert!(listing.contains(&format!("debuggers/{key}")), "{key} was not uploaded:\n{listing}");
    }
    let out = l.ok("submit_job jobs-results/test_resources/devami_submit.json");
    assert_all_succeeded(&out, 3);
    let configs: Vec<String> = l.jobs().iter().map(|j| field(j, "config").to_string()).collect();
    assert_eq!(configs, ["debuggers/configs/my-config.json"; 3]);

    // new_submit with bucket keys writes where it is told and uploads nothing; a missing key
    // writes nothing.
    let out =
        l.ok("new_submit debuggers/inputs/one.txt --config debuggers/configs/my-config.json --out keys.json");
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(l.s.path().join("keys.json")).unwrap()).unwrap();
    assert_eq!(doc["dataname"], "debuggers/inputs/one.txt", "{out}");
    assert!(!out.contains("uploaded"), "{out}");
    let line = l.fails(
        "new_submit debuggers/inputs/none.txt --config debuggers/configs/my-config.json --out none.json",
    );
    assert!(line.contains("dataset `debuggers/inputs/none.txt` is not in bucket"), "{line}");
    assert!(!l.s.path().join("none.json").exists(), "a submit file was written for a missing key");

    // results: the files of the last job, relative to its result directory, and a download.
    l.ok("submit_job keys.json; job_status --wait");
    let dir = field(l.jobs().last().unwrap(), "result_dir").to_string();
    let out = l.ok("results");
    assert!(out.contains(&format!("s3://jobs-results/debuggers/{dir}/")), "{out}");
    for f in [
        "logs/DATASET_NAME:one.txt_STATUS.txt",
        "process_results/out.txt",
        "process_results/sub dir/deep:er.txt",
    ] {
        assert!(out.contains(f), "results lacks {f}:\n{out}");
    }
    assert!(!out.contains("b1.txt"), "another job's results are listed:\n{out}");
    l.ok("results -1 --download got");
    let got = l.s.path().join("got");
    let result = std::fs::read_to_string(got.join("process_results/sub dir/deep:er.txt")).unwrap();
    assert_eq!(result, "result for one.txt\n");
    let status = std::fs::read(got.join("logs/DATASET_NAME:one.txt_STATUS.txt")).unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&status).unwrap()["status"], "SUCCESS");
    assert_eq!(std::fs::read_dir(&got).unwrap().count(), 2, "only logs/ and process_results/");
}

// ----- AWS backend against moto -----

/// moto with a blueprint whose COMMAND is `command`, a launched instance and the config uploaded.
fn aws_session(name: &str, command: &str) -> Aws {
    let aws = Aws::new(name);
    aws.set_command(command);
    aws.s.write("c.json", "{}\n");
    aws.ok("launch_devinstance; upload c.json debuggers/configs/c.json");
    aws
}

/// Every command moto recorded: command id -> its single shell command.
fn ssm_commands(aws: &Aws) -> serde_json::Map<String, Value> {
    let v = aws.moto.py(
        r#"out = {c["CommandId"]: c["Parameters"]["commands"][0] for c in ssm.list_commands(MaxResults=50)["Commands"]}"#,
    );
    v.as_object().cloned().unwrap_or_default()
}

/// The bucket's keys under `prefix`.
fn bucket_keys(aws: &Aws, prefix: &str) -> Vec<String> {
    let bucket = &aws.seed.bucket;
    let v = aws.moto.py(&format!(
        r#"out = [o["Key"] for o in s3.list_objects_v2(Bucket={bucket:?}, Prefix={prefix:?}).get("Contents", [])]"#
    ));
    serde_json::from_value(v).unwrap()
}

/// Runs a command as AWS-RunShellScript does (bash, in the home) in a fresh temporary home that
/// holds `record.sh` and a `canary`; returns what `record.sh` printed and the home's files after.
fn run_like_ssm(command: &str) -> (Record, Vec<String>) {
    let home = tempfile::tempdir().unwrap();
    std::fs::write(home.path().join("record.sh"), RECORD_SH).unwrap();
    std::fs::write(home.path().join("canary"), "").unwrap();
    let out = Command::new("bash")
        .arg("-c")
        .arg(command)
        .current_dir(home.path())
        .env_clear()
        .env("HOME", home.path())
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .output()
        .unwrap();
    assert!(out.status.success(), "{command}\n{}", all(&out));
    let files = std::fs::read_dir(home.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned());
    (parse_record(&text(&out.stdout)), files.collect())
}

#[test]
fn aws_every_broken_submit_file_is_one_clear_error_and_sends_nothing() {
    let aws = aws_session("jobs-errors-test", FORMS[0]);
    check_broken_submit_files(&aws);
    assert!(ssm_commands(&aws).is_empty(), "a command was sent");
    assert!(bucket_keys(&aws, "debuggers/results/").is_empty());
    aws.ok("terminate_devinstance --force");
}

#[test]
fn aws_hostile_dataset_names_reach_the_command_byte_exact_and_run_nothing() {
    let aws = aws_session("jobs-hostile-test", FORMS[0]);
    upload_hostile(&aws, HOSTILE);
    let runs: Vec<(usize, String)> = FORMS
        .iter()
        .map(|form| {
            aws.set_command(form);
            (aws.jobs().len(), aws.ok("submit_job hostile.json --parallel 5"))
        })
        .collect();
    let sent = ssm_commands(&aws);
    let jobs = aws.jobs();
    for (form, (first, out)) in FORMS.iter().zip(runs) {
        let jobs = &jobs[first..first + HOSTILE.len()];
        let mut recs = Vec::new();
        for job in jobs {
            let command = sent[field(job, "command_id")].as_str().unwrap();
            assert!(out.contains(&format!("sending command: {command} to instance")), "{form}:\n{out}");
            let (rec, files) = run_like_ssm(command);
            assert_no_evidence(&files, &format!("{form} on {:?}", field(job, "dataset")));
            recs.push(rec);
        }
        check_hostile_records(form, &aws.seed.bucket, HOSTILE, jobs, &recs);
    }
    aws.ok("terminate_devinstance --force");
}

#[test]
fn aws_several_datasets_are_one_command_each_one_after_another() {
    let aws = aws_session("jobs-multi-test", FORMS[0]);
    aws.upload_inputs(&[("a.txt", "a"), ("batch/1.txt", "1"), ("batch/2.txt", "2")]);
    let file = aws.submit_file("s.json", json!(["debuggers/inputs/a.txt", "debuggers/inputs/batch/"]));
    let proxy = Proxy::start(&aws.moto.url, json!({"hold_commands": 0.5}));
    let out = aws.ok_with(&["--endpoint-url", proxy.url.as_str()], &format!("submit_job {file}"));
    assert_one_after_another(&out, 0, 3);

    // One SSM command per dataset, each sent once the previous one was done.
    let sends: Vec<f64> = proxy.calls().iter().filter(|c| c.action == "SendCommand").map(|c| c.t).collect();
    assert_eq!(sends.len(), 3, "{:?}", proxy.calls());
    assert!(sends.windows(2).all(|w| w[1] - w[0] >= 0.45), "sent while the previous one ran: {sends:?}");
    let sent = ssm_commands(&aws);
    assert_eq!(sent.len(), 3);
    let bucket = &aws.seed.bucket;
    let statuses = aws.moto.py(&format!(
        r#"r = s3.list_objects_v2(Bucket={bucket:?}, Prefix="debuggers/results/")
out = {{o["Key"]: s3.get_object(Bucket={bucket:?}, Key=o["Key"])["Body"].read().decode() for o in r["Contents"]}}"#
    ));
    assert_eq!(statuses.as_object().map(|m| m.len()), Some(3), "{statuses:#}");
    let id = aws.instance_id();
    let keys = ["debuggers/inputs/a.txt", "debuggers/inputs/batch/1.txt", "debuggers/inputs/batch/2.txt"];
    for (job, key) in aws.jobs().iter().zip(keys) {
        assert_eq!(field(job, "dataset"), key);
        let cmd = field(job, "command_id");
        assert!(sent[cmd].as_str().unwrap().contains(&format!("\"{key}\"")), "{}", sent[cmd]);
        // Its own status object, naming it.
        let base = key.rsplit('/').next().unwrap();
        let status_key =
            format!("debuggers/{}/logs/DATASET_NAME:{base}_STATUS.txt", field(job, "result_dir"));
        let body = statuses.get(&status_key).unwrap_or_else(|| panic!("no {status_key}: {statuses:#?}"));
        let body: Value = serde_json::from_str(body.as_str().unwrap()).unwrap();
        let named = (body["input"].as_str(), body["command"].as_str(), body["instance"].as_str());
        assert_eq!(named, (Some(key), Some(cmd), Some(id.as_str())), "{body}");
    }
    assert_all_succeeded(&out, 3);
    aws.ok("terminate_devinstance --force");
}

#[test]
fn aws_follow_prints_the_output_that_appears_while_the_command_runs() {
    let aws = aws_session("jobs-follow-test", FORMS[0]);
    aws.upload_inputs(&[("data.txt", "x")]);
    let file = aws.submit_file("s.json", json!("debuggers/inputs/data.txt"));
    // The command stays InProgress until the test releases it.
    let proxy = Proxy::start(&aws.moto.url, json!({"hold_commands": 600}));
    let via = ["--endpoint-url", proxy.url.as_str()];
    aws.ok_with(&via, &format!("submit_job {file}"));
    let job = aws.jobs()[0].clone();
    let (cmd, instance) = (field(&job, "command_id"), field(&job, "instance_id"));

    let mut live = Live::start(aws.cmd_with(&via, "job_output --follow"));
    let key = format!("debug_direct/{cmd}/{instance}/awsrunShellScript/0.awsrunShellScript/stdout");
    let bucket = &aws.seed.bucket;
    aws.moto
        .py(&format!("s3.put_object(Bucket={bucket:?}, Key={key:?}, Body=b'first line\\nsecond line\\n')"));
    live.wait_for("second line", Duration::from_secs(20));
    assert!(live.running(), "devami ended before the command did:\n{}", live.text());
    proxy.set_rules(json!({"hold_commands": 0}));
    let (status, lines, stderr) = live.finish(Duration::from_secs(30));
    assert!(status.success(), "{stderr}");
    assert_eq!(live_lines(&lines), ["first line", "second line", "job 0 finished: Success (exit code 0)"]);
    aws.ok("terminate_devinstance --force");
}

/// The command's status in ListCommands, read through the proxy with the AWS CLI.
fn listed_status(aws: &Aws, proxy: &Proxy, command_id: &str) -> String {
    let mut cmd = Command::new(venv_bin("aws"));
    clean_aws_env(&mut cmd);
    let out = cmd
        .args(["ssm", "list-commands", "--command-id", command_id, "--output", "json"])
        .envs(aws.moto.env_for(&proxy.url))
        .output()
        .unwrap();
    assert!(out.status.success(), "aws ssm list-commands: {}", all(&out));
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    list["Commands"][0]["Status"].as_str().unwrap_or("-").to_string()
}

#[test]
fn aws_cancel_stops_a_running_command_and_refuses_a_finished_one() {
    let aws = aws_session("jobs-cancel-test", FORMS[0]);
    aws.upload_inputs(&[("data.txt", "x")]);
    let file = aws.submit_file("s.json", json!("debuggers/inputs/data.txt"));
    let proxy = Proxy::start(&aws.moto.url, json!({"hold_commands": 600}));
    let via = ["--endpoint-url", proxy.url.as_str()];
    aws.ok_with(&via, &format!("submit_job {file}"));
    let cmd = field(&aws.jobs()[0], "command_id").to_string();
    assert!(aws.ok_with(&via, "job_status").contains("InProgress"));
    assert_eq!(listed_status(&aws, &proxy, &cmd), "InProgress");

    let out = aws.ok_with(&via, "cancel_job");
    assert!(out.contains(&format!("job 0 ({cmd}) cancelled: Cancelled")), "{out}");
    assert_eq!(proxy.count("CancelCommand"), 1, "{:?}", proxy.calls());
    assert!(shown(&aws.ok_with(&via, "job_status"))[0].starts_with("Cancelled"));
    assert_eq!(listed_status(&aws, &proxy, &cmd), "Cancelled");
    let line = one_error_line(&aws.run_with(&via, "cancel_job 0"), "cancel_job 0");
    assert!(line.contains("job 0 has already finished: Cancelled"), "{line}");

    // A finished command: refused, and nothing is sent.
    proxy.set_rules(json!({"hold_commands": 0}));
    aws.ok_with(&via, &format!("submit_job {file}; job_status --wait"));
    let line = one_error_line(&aws.run_with(&via, "cancel_job"), "cancel_job");
    assert!(line.contains("job 1 has already finished: Success (exit code 0)"), "{line}");
    assert_eq!(proxy.count("CancelCommand"), 1, "a cancel was sent for a finished job");
    aws.ok("terminate_devinstance --force");
}
