//! `update_blueprint` and the session's clock and prices, against real git repositories.
//!
//! Every test builds its repository with the `git` CLI in a scratch folder (devami itself uses
//! git2) and inspects what devami committed with the CLI too. Both see no git configuration but
//! the repository's own: `HOME` and `XDG_CONFIG_HOME` point at an empty or missing folder, the
//! global file is `/dev/null` and the system one is skipped (`GIT_CONFIG_NOSYSTEM`, which only the
//! CLI honours; libgit2 would read an identity from `/etc/gitconfig`), so a developer's
//! `~/.gitconfig` can neither help nor hurt. Instances run on the local backend (`ubuntu18`); an
//! image that stays pending is also tested against moto, where that happens for real.
//! `DEVAMI_CLOCK_OFFSET` moves devami's clock for the lifetime warnings and the cost figures, and
//! `DEVAMI_PRICES` gives them a known price table.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};

use crate::aws::Aws;
use crate::moto::Proxy;
use crate::support::{Scratch, all, copy_dir, root, text};
use crate::support::{assert_failed_cleanly, error_line, no_panic};

const BP: &str = "stack_config_template.json";
const NAME: &str = "Test Author";
const EMAIL: &str = "test.author@example.com";
const BEFORE: &str = "automatic commit to document pipeline stack_config_template.json before update at ";
const AFTER: &str = "automatic commit to document pipeline stack_config_template.json after update at ";
const UP_TO_DATE: &str = "Blueprint already up to date, aborting new commit.";

// ----- git, isolated -----

/// Makes `cmd` see no git configuration but the repository's own (`empty` is an empty folder).
fn isolate_git<'a>(cmd: &'a mut Command, empty: &Path) -> &'a mut Command {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("GIT_") {
            cmd.env_remove(&key);
        }
    }
    cmd.env("HOME", empty)
        .env("XDG_CONFIG_HOME", empty)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
}

/// An empty folder under `base` to stand for `HOME` (created once).
fn empty_home(base: &Path) -> PathBuf {
    let p = base.join(".empty-home");
    std::fs::create_dir_all(&p).expect("create the empty home");
    p
}

/// Runs `git` in `dir` and returns its stdout; fails the test when git fails.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = git_raw(dir, args);
    assert!(out.status.success(), "git {args:?} in {} failed:\n{}", dir.display(), all(&out));
    text(&out.stdout)
}

fn git_raw(dir: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new("git");
    cmd.arg("-C").arg(dir).args(args);
    isolate_git(&mut cmd, Path::new("/nonexistent/devami-test-home"));
    cmd.output().expect("run git")
}

/// `git init` in `dir`, with `NAME <EMAIL>` in the repository's configuration when `identity`,
/// and a first commit of everything there (made with an identity given on the command line).
fn init_repo(dir: &Path, identity: bool) {
    git(dir, &["init", "-q", "-b", "main"]);
    if identity {
        git(dir, &["config", "user.name", NAME]);
        git(dir, &["config", "user.email", EMAIL]);
    }
    git(dir, &["add", "-A"]);
    git(
        dir,
        &["-c", "user.name=Setup", "-c", "user.email=setup@example.com", "commit", "-q", "-m", "initial"],
    );
}

fn head(dir: &Path) -> String {
    git(dir, &["rev-parse", "HEAD"]).trim().to_string()
}

fn count_commits(dir: &Path) -> usize {
    git(dir, &["rev-list", "--count", "HEAD"]).trim().parse().expect("a commit count")
}

/// The full message of `rev`, without the newline git ends it with.
fn message(dir: &Path, rev: &str) -> String {
    git(dir, &["log", "-1", "--format=%B", rev]).trim_end().to_string()
}

/// The value of trailer `key` in commit `rev`, as git itself parses the message.
fn trailer(dir: &Path, rev: &str, key: &str) -> String {
    git(dir, &["log", "-1", &format!("--format=%(trailers:key={key},valueonly)"), rev]).trim().to_string()
}

/// `author | committer` of `rev`, each as `name <email>`.
fn people(dir: &Path, rev: &str) -> String {
    git(dir, &["log", "-1", "--format=%an <%ae> | %cn <%ce>", rev]).trim().to_string()
}

/// Whether `s` is Python's `str(datetime.now())`: `2026-11-25 13:23:38.123456`.
fn is_python_datetime(s: &str) -> bool {
    let shape = "dddd-dd-dd dd:dd:dd.dddddd";
    s.len() == shape.len()
        && s.bytes().zip(shape.bytes()).all(|(c, p)| if p == b'd' { c.is_ascii_digit() } else { c == p })
}

/// The datetime of a `before` commit's message (which must be exactly that sentence).
fn before_datetime(msg: &str) -> String {
    let dt = msg.strip_prefix(BEFORE).unwrap_or_else(|| panic!("not a `before` commit message: {msg:?}"));
    assert!(is_python_datetime(dt), "not a Python datetime in {msg:?}");
    dt.to_string()
}

/// The datetime and purpose of an `after` commit's subject.
fn after_subject(subject: &str) -> (String, String) {
    let rest =
        subject.strip_prefix(AFTER).unwrap_or_else(|| panic!("not an `after` commit subject: {subject:?}"));
    let (dt, purpose) = rest.split_once(". Purpose: ").unwrap_or_else(|| panic!("no purpose in {subject:?}"));
    assert!(is_python_datetime(dt), "not a Python datetime in {subject:?}");
    (dt.to_string(), purpose.to_string())
}

/// The changed lines (`-old` and `+new`) of a unified diff, without the file headers.
fn changed_lines(diff: &str) -> Vec<String> {
    diff.lines()
        .filter(|l| {
            (l.starts_with('-') && !l.starts_with("---")) || (l.starts_with('+') && !l.starts_with("+++"))
        })
        .map(str::to_string)
        .collect()
}

// ----- devami -----

/// A scratch folder, a blueprint in it and the git repository that holds it.
struct Lab {
    s: Scratch,
    /// The blueprint folder as devami is given it (relative to the scratch folder).
    arg: String,
    /// The blueprint folder.
    bp: PathBuf,
}

impl Lab {
    /// A blueprint made by `devami init name` in the scratch folder, in no repository yet.
    fn new(name: &str) -> Lab {
        let s = Scratch::new();
        let bp = s.init(name);
        Lab { s, arg: name.to_string(), bp }
    }

    /// A blueprint made by `devami init name` in the folder `rel` of the scratch folder.
    fn nested(rel: &str, name: &str) -> Lab {
        let s = Scratch::new();
        let parent = s.path().join(rel);
        std::fs::create_dir_all(&parent).unwrap();
        let out = s.cmd(&["init", name]).current_dir(&parent).output().unwrap();
        assert!(out.status.success(), "{}", all(&out));
        Lab { arg: format!("{rel}/{name}"), bp: parent.join(name), s }
    }

    /// The scratch copy of the repository's word-stats blueprint (analysis, data, submit file).
    fn word_stats() -> Lab {
        let s = Scratch::new();
        copy_dir(&root().join("blueprints/word-stats"), &s.path().join("word-stats"));
        Lab { bp: s.path().join("word-stats"), arg: "word-stats".into(), s }
    }

    fn file(&self) -> PathBuf {
        self.bp.join(BP)
    }

    fn read_bp(&self) -> String {
        std::fs::read_to_string(self.file()).unwrap()
    }

    fn write_bp(&self, text: &str) {
        std::fs::write(self.file(), text).unwrap()
    }

    fn cmd(&self, commands: &str) -> Command {
        let mut c = self.s.cmd(&[&self.arg, "-c", commands]);
        isolate_git(&mut c, &empty_home(self.s.path()));
        c
    }

    fn run(&self, commands: &str) -> Output {
        self.cmd(commands).output().expect("run devami")
    }

    fn run_env(&self, env: &[(&str, &str)], commands: &str) -> Output {
        let mut c = self.cmd(commands);
        c.envs(env.iter().copied());
        c.output().expect("run devami")
    }

    /// Runs `commands`, asserts success and returns stdout.
    fn ok(&self, commands: &str) -> String {
        let out = self.run(commands);
        assert!(out.status.success(), "`{commands}` failed:\n{}", all(&out));
        no_panic(&out);
        text(&out.stdout)
    }

    fn ok_env(&self, env: &[(&str, &str)], commands: &str) -> Output {
        let out = self.run_env(env, commands);
        assert!(out.status.success(), "`{commands}` with {env:?} failed:\n{}", all(&out));
        no_panic(&out);
        out
    }

    fn state(&self) -> Value {
        crate::support::read_state(&self.bp.join(".devami/state.json"))
    }

    /// Launches `ubuntu18` and saves it as image `image`; returns (instance, image, base image).
    fn launch_and_image(&self, image: &str) -> (String, String, String) {
        self.ok(&format!("launch ubuntu18; create_devami {image}"));
        self.ids()
    }

    /// The current instance, the last image and the image the instance was launched from.
    fn ids(&self) -> (String, String, String) {
        let st = self.state();
        let s = |v: &Value| v.as_str().unwrap_or_else(|| panic!("missing in state.json: {st:#}")).to_string();
        let inst = st["instances"].as_array().and_then(|a| a.last()).cloned().unwrap_or(Value::Null);
        let img = st["images"].as_array().and_then(|a| a.last()).cloned().unwrap_or(Value::Null);
        (s(&inst["id"]), s(&img["id"]), s(&inst["image_id"]))
    }

    fn terminate(&self) {
        self.ok("terminate_devinstance --force");
    }
}

/// The blueprint's text with `Lambda.LambdaConfig.AMI` replaced (what the only change must be).
fn with_ami(text: &str, ami: &str) -> Value {
    let mut doc: Value = serde_json::from_str(text).unwrap();
    doc["Lambda"]["LambdaConfig"]["AMI"] = ami.into();
    doc
}

/// The lines of `stdout` that are devami's output, not the echoed commands.
fn output_lines(stdout: &str) -> Vec<&str> {
    stdout.lines().filter(|l| !l.starts_with("devami> ")).collect()
}

// ----- 1. what the two commits hold -----

#[test]
fn the_before_and_after_commits_hold_the_original_messages_and_only_the_ami() {
    let lab = Lab::new("prov");
    init_repo(&lab.bp, true);
    let (instance, image, base) = lab.launch_and_image("prov-v1");
    let start = head(&lab.bp);
    let commits = count_commits(&lab.bp);
    // An edit made by hand and not committed: the `before` commit documents it.
    let original = lab.read_bp();
    let edited = original.replacen("\"MAXCOST\": \"300\"", "\"MAXCOST\": \"400\"", 1);
    assert_ne!(original, edited, "the blueprint made by init has no MAXCOST of 300");
    lab.write_bp(&edited);

    let out = lab.ok("update_blueprint --message \"tested on sample data\"");
    assert_eq!(count_commits(&lab.bp), commits + 2, "{out}");
    let before = git(&lab.bp, &["rev-parse", "HEAD~1"]).trim().to_string();
    let after = head(&lab.bp);
    assert_eq!(git(&lab.bp, &["rev-parse", "HEAD~2"]).trim(), start);
    assert_eq!(
        output_lines(&out),
        [
            format!("old commit has hash: {before}"),
            format!("Blueprint updated with ami {image}"),
            format!("new commit has hash: {after}"),
        ],
        "{out}"
    );

    // before: the original sentence and nothing else; the file as it was, hand edit included.
    let before_msg = message(&lab.bp, "HEAD~1");
    let t_before = before_datetime(&before_msg);
    assert_eq!(git(&lab.bp, &["diff", "--name-only", "HEAD~2", "HEAD~1"]), format!("{BP}\n"));
    assert_eq!(git(&lab.bp, &["show", &format!("HEAD~1:{BP}")]), edited);

    // after: the sentence with the purpose, a blank line, then the provenance trailers.
    let after_msg = message(&lab.bp, "HEAD");
    let (subject, body) =
        after_msg.split_once("\n\n").unwrap_or_else(|| panic!("no trailers: {after_msg:?}"));
    let (t_after, purpose) = after_subject(subject);
    assert_eq!(purpose, "tested on sample data");
    assert!(t_before <= t_after, "{t_before} > {t_after}");
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        body,
        format!(
            "Devami-Image: {image} (prov-v1)\nDevami-Source-Image: ubuntu18 ({base})\nDevami-Instance: {instance}\n\
             Devami-Tested-Jobs: none\nDevami-Version: {version}"
        )
    );
    // git reads them as trailers, one value each.
    for (key, value) in [
        ("Devami-Image", format!("{image} (prov-v1)")),
        ("Devami-Source-Image", format!("ubuntu18 ({base})")),
        ("Devami-Instance", instance.clone()),
        ("Devami-Tested-Jobs", "none".to_string()),
        ("Devami-Version", version.to_string()),
    ] {
        assert_eq!(trailer(&lab.bp, "HEAD", key), value, "trailer {key} of:\n{after_msg}");
    }

    // The after commit changes one line of one file: the AMI, in place.
    assert_eq!(git(&lab.bp, &["diff", "--numstat", "HEAD~1", "HEAD"]), format!("1\t1\t{BP}\n"));
    let diff = git(&lab.bp, &["diff", "-U0", "HEAD~1", "HEAD"]);
    assert_eq!(
        changed_lines(&diff),
        ["-            \"AMI\": \"ubuntu22\",".to_string(), format!("+            \"AMI\": \"{image}\",")],
        "{diff}"
    );
    let committed = git(&lab.bp, &["show", &format!("HEAD:{BP}")]);
    assert_eq!(serde_json::from_str::<Value>(&committed).unwrap(), with_ami(&edited, &image));
    assert_eq!(committed, lab.read_bp(), "the work tree differs from the commit");
    assert_eq!(git(&lab.bp, &["status", "--porcelain"]), "", "the blueprint is not clean in git's eyes");
    for rev in ["HEAD", "HEAD~1"] {
        assert_eq!(people(&lab.bp, rev), format!("{NAME} <{EMAIL}> | {NAME} <{EMAIL}>"), "{rev}");
    }
    lab.terminate();
}

#[test]
fn an_unchanged_blueprint_gets_no_empty_before_commit() {
    let lab = Lab::new("clean");
    init_repo(&lab.bp, true);
    let (_, image, _) = lab.launch_and_image("clean-v1");
    let start = head(&lab.bp);
    let commits = count_commits(&lab.bp);
    let out = lab.ok("update_blueprint");
    assert_eq!(count_commits(&lab.bp), commits + 1, "{out}");
    assert_eq!(git(&lab.bp, &["rev-parse", "HEAD~1"]).trim(), start, "a commit was made before the change");
    assert!(out.contains(&format!("old commit has hash: {start}\n")), "{out}");
    let msg = message(&lab.bp, "HEAD");
    let (_, purpose) = after_subject(msg.lines().next().unwrap());
    assert_eq!(purpose, "Not given", "the original's default message");
    assert_eq!(trailer(&lab.bp, "HEAD", "Devami-Image"), format!("{image} (clean-v1)"));
    lab.terminate();
}

/// An odd but valid layout (tabs, no space after colons, CRLF line ends) survives byte for byte.
#[test]
fn the_ami_is_spliced_into_an_odd_layout_without_touching_the_rest() {
    let lab = Lab::new("layout");
    let doc: Value = serde_json::from_str(&lab.read_bp()).unwrap();
    let odd = serde_json::to_string_pretty(&doc)
        .unwrap()
        .replace("    ", "\t")
        .replace("  ", "\t")
        .replace(": ", ":");
    let odd = odd.replace('\n', "\r\n") + "\r\n";
    lab.write_bp(&odd);
    init_repo(&lab.bp, true);
    let (_, image, _) = lab.launch_and_image("layout-v1");
    lab.ok("update_blueprint --message layout");
    let expected = odd.replacen("\"AMI\":\"ubuntu22\"", &format!("\"AMI\":\"{image}\""), 1);
    assert_ne!(expected, odd, "the probe no longer applies");
    assert_eq!(lab.read_bp(), expected);
    assert_eq!(git(&lab.bp, &["show", &format!("HEAD:{BP}")]), expected);
    assert_eq!(git(&lab.bp, &["diff", "--numstat", "HEAD~1", "HEAD"]), format!("1\t1\t{BP}\n"));
    lab.terminate();
}

/// The tutorial reads the record through `exec`, inside the instance: it must read as git wrote it.
#[test]
fn the_record_read_through_exec_is_the_message_git_holds() {
    let lab = Lab::new("inside");
    init_repo(&lab.bp, true);
    lab.launch_and_image("inside-v1");
    lab.ok("update_blueprint --message inside");
    let out = lab.ok("exec git -C \"$DEVAMI_BLUEPRINT\" log -1 --format=%B");
    let shown: Vec<&str> = output_lines(&out);
    let message = message(&lab.bp, "HEAD");
    lab.terminate();
    assert_eq!(shown, message.lines().collect::<Vec<_>>(), "`exec` changed the command's output");
}

// ----- 1b. the tests an image passed -----

/// A blueprint whose COMMAND echoes its arguments and fails for the config `bad.json`: a tiny
/// job that never writes the dataset's status object.
fn tiny_jobs(lab: &Lab) {
    let mut doc: Value = serde_json::from_str(&lab.read_bp()).unwrap();
    doc["Lambda"]["LambdaConfig"]["COMMAND"] = "echo {} {} {}; test {} != debuggers/configs/bad.json".into();
    doc["Lambda"]["LambdaConfig"]["SSM_TIMEOUT"] = 600.into();
    lab.write_bp(&serde_json::to_string_pretty(&doc).unwrap());
    lab.s.write("data.txt", "some data\n");
    for (file, config) in [("good.json", "c.json"), ("bad.json", "bad.json")] {
        lab.s.write(
            file,
            json!({"dataname": "debuggers/inputs/data.txt", "configname": format!("debuggers/configs/{config}"), "timestamp": "1"})
                .to_string(),
        );
    }
}

#[test]
fn tested_jobs_name_the_jobs_that_succeeded_on_the_instance() {
    let lab = Lab::new("tiny");
    tiny_jobs(&lab);
    init_repo(&lab.bp, true);
    lab.ok("launch ubuntu18; upload data.txt; upload data.txt debuggers/configs/c.json; \
         upload data.txt debuggers/configs/bad.json");
    let good = lab.ok("submit good.json; job_status --wait");
    assert!(good.contains("Success (exit code 0)"), "{good}");
    let bad = lab.run("submit bad.json; job_status --wait");
    assert!(text(&bad.stdout).contains("Failed (exit code 1)"), "{}", all(&bad));
    let st = lab.state();
    let good_id = st["jobs"][0]["command_id"].as_str().unwrap().to_string();
    let bad_id = st["jobs"][1]["command_id"].as_str().unwrap().to_string();
    let jobs = lab.ok("jobs");
    assert!(jobs.contains(&good_id) && jobs.contains("Success"), "{jobs}");
    lab.ok("create_devami tiny-v1; update_blueprint --message tested");
    let tested = trailer(&lab.bp, "HEAD", "Devami-Tested-Jobs");
    lab.terminate();
    assert!(!tested.contains(&bad_id), "the failed job {bad_id} is listed as tested: {tested}");
    assert_eq!(
        tested, good_id,
        "the job that succeeded (`job_status`: Success, exit code 0; its COMMAND leaves the status \
         object as devami wrote it, INITIALIZING) is not listed; state: {:#}",
        st["jobs"][0]
    );
}

#[test]
fn tested_jobs_name_a_word_stats_job_whose_analysis_reported_success() {
    let lab = Lab::word_stats();
    let out = lab.ok("launch ubuntu18; exec cp -r \"$DEVAMI_BLUEPRINT/analysis/word-stats\" ~/; \
         new_submit word-stats/data/sample.txt --config word-stats/data/config.json; \
         submit_job word-stats/test_resources/devami_submit.json; job_status --wait; \
         create_devami word-stats-v1; update_blueprint --init --message \"sample passes\"");
    assert!(out.contains("Success (exit code 0)"), "{out}");
    let st = lab.state();
    assert_eq!(st["jobs"][0]["analysis"], "SUCCESS", "{:#}", st["jobs"]);
    let job = st["jobs"][0]["command_id"].as_str().unwrap();
    assert_eq!(trailer(&lab.bp, "HEAD", "Devami-Tested-Jobs"), job);
    assert_eq!(trailer(&lab.bp, "HEAD", "Devami-Instance"), st["instance"].as_str().unwrap());
    lab.terminate();
}

// ----- 2. other changes are left alone -----

/// What git says about everything but the blueprint: status, index, staged and unstaged diffs.
fn snapshot_others(dir: &Path, bp_rel: &str) -> Vec<String> {
    let not_bp = format!(":(exclude){bp_rel}");
    let status: String = git(dir, &["status", "--porcelain=v1", "--untracked-files=all"])
        .lines()
        .filter(|l| !l.ends_with(bp_rel))
        .map(|l| format!("{l}\n"))
        .collect();
    let index: String = git(dir, &["ls-files", "--stage"])
        .lines()
        .filter(|l| !l.ends_with(bp_rel))
        .map(|l| format!("{l}\n"))
        .collect();
    vec![
        status,
        index,
        git(dir, &["diff", "--cached", "--", ".", &not_bp]),
        git(dir, &["diff", "--", ".", &not_bp]),
        git(dir, &["diff", "--cached", "--stat", "--", ".", &not_bp]),
    ]
}

#[test]
fn other_staged_and_modified_files_stay_exactly_as_they_were() {
    let lab = Lab::new("others");
    let dir = lab.bp.clone();
    for f in ["staged.txt", "unstaged.txt", "both.txt", "deleted.txt", "renamed.txt"] {
        lab.s.write(&format!("others/{f}"), format!("{f} as committed\n"));
    }
    init_repo(&dir, true);
    let (_, image, _) = lab.launch_and_image("others-v1");
    // Every kind of pending change, staged and not.
    lab.s.write("others/staged.txt", "staged change\n");
    git(&dir, &["add", "staged.txt"]);
    lab.s.write("others/new.txt", "a new staged file\n");
    git(&dir, &["add", "new.txt"]);
    lab.s.write("others/unstaged.txt", "unstaged change\n");
    lab.s.write("others/both.txt", "staged half\n");
    git(&dir, &["add", "both.txt"]);
    lab.s.write("others/both.txt", "staged half\nand an unstaged half\n");
    git(&dir, &["rm", "-q", "deleted.txt"]);
    git(&dir, &["mv", "renamed.txt", "moved.txt"]);
    lab.s.write("others/intent.txt", "added with --intent-to-add\n");
    git(&dir, &["add", "--intent-to-add", "intent.txt"]);
    lab.s.write("others/untracked.txt", "never added\n");
    // And the blueprint itself edited by hand, unstaged.
    let edited = lab.read_bp().replacen("\"MAXCOST\": \"300\"", "\"MAXCOST\": \"350\"", 1);
    lab.write_bp(&edited);

    let before = snapshot_others(&dir, BP);
    let files: Vec<(String, Vec<u8>)> =
        ["staged.txt", "new.txt", "unstaged.txt", "both.txt", "moved.txt", "intent.txt", "untracked.txt"]
            .iter()
            .map(|f| (f.to_string(), std::fs::read(dir.join(f)).unwrap()))
            .collect();
    let start = head(&dir);

    let out = lab.ok("update_blueprint --message others");
    assert!(out.contains(&format!("Blueprint updated with ami {image}")), "{out}");
    let after = snapshot_others(&dir, BP);
    for (i, what) in ["status", "index", "staged diff", "unstaged diff", "staged stat"].iter().enumerate() {
        assert_eq!(after[i], before[i], "the {what} of the other files changed");
    }
    for (f, bytes) in &files {
        assert_eq!(&std::fs::read(dir.join(f)).unwrap(), bytes, "{f} changed on disk");
    }
    // The two commits hold the blueprint and nothing else.
    assert_eq!(git(&dir, &["diff", "--name-only", &start, "HEAD"]), format!("{BP}\n"));
    assert_eq!(git(&dir, &["diff", "--name-only", &start, "HEAD~1"]), format!("{BP}\n"));
    assert_eq!(
        git(&dir, &["ls-tree", "-r", "--name-only", "HEAD"]),
        "both.txt\ndeleted.txt\nrenamed.txt\nstack_config_template.json\nstaged.txt\ntest_resources/exampledevsubmit.json\nunstaged.txt\n"
    );
    // The blueprint is clean: committed, and the index entry refreshed.
    let status = git(&dir, &["status", "--porcelain=v1", "--", BP]);
    assert_eq!(status, "", "the blueprint is not clean");
    assert_eq!(git(&dir, &["show", &format!(":{BP}")]), lab.read_bp(), "the index entry was not refreshed");
    lab.terminate();
}

// ----- 3. a blueprint in a subfolder -----

#[test]
fn a_blueprint_in_a_subfolder_of_the_repository() {
    let lab = Lab::nested("repo/pipelines", "deep");
    let repo = lab.s.path().join("repo");
    lab.s.write("repo/README.md", "the analyses of a lab\n");
    lab.s.write("repo/pipelines/other/notes.txt", "another pipeline\n");
    init_repo(&repo, true);
    let (_, image, _) = lab.launch_and_image("deep-v1");
    lab.s.write("repo/README.md", "the analyses of a lab, edited\n");
    git(&repo, &["add", "README.md"]);
    lab.s.write("repo/pipelines/other/notes.txt", "edited, unstaged\n");
    let rel = format!("pipelines/deep/{BP}");
    let before = snapshot_others(&repo, &rel);
    let edited = lab.read_bp().replacen("\"MAXCOST\": \"300\"", "\"MAXCOST\": \"301\"", 1);
    lab.write_bp(&edited);
    let commits = count_commits(&repo);

    let out = lab.ok("update_blueprint --message deep");
    assert_eq!(count_commits(&repo), commits + 2, "{out}");
    assert_eq!(git(&repo, &["diff", "--name-only", "HEAD~2", "HEAD~1"]), format!("{rel}\n"));
    assert_eq!(git(&repo, &["diff", "--numstat", "HEAD~1", "HEAD"]), format!("1\t1\t{rel}\n"));
    assert_eq!(git(&repo, &["show", &format!("HEAD:{rel}")]), lab.read_bp());
    assert_eq!(serde_json::from_str::<Value>(&lab.read_bp()).unwrap(), with_ami(&edited, &image));
    // The message names the file as the original did (its name, not its path).
    before_datetime(&message(&repo, "HEAD~1"));
    after_subject(message(&repo, "HEAD").lines().next().unwrap());
    assert_eq!(snapshot_others(&repo, &rel), before);
    assert_eq!(git(&repo, &["status", "--porcelain=v1", "--", &rel]), "");
    assert!(!lab.bp.join(".git").exists(), "a nested repository was created");
    lab.terminate();
}

// ----- 4. the same image twice -----

#[test]
fn the_same_ami_twice_makes_no_after_commit() {
    let lab = Lab::new("twice");
    init_repo(&lab.bp, true);
    let (_, image, _) = lab.launch_and_image("twice-v1");
    lab.ok("update_blueprint --message first");
    let done = head(&lab.bp);
    let commits = count_commits(&lab.bp);
    let bytes = lab.read_bp();

    for command in ["update_blueprint --message again".to_string(), format!("update_blueprint {image}")] {
        let out = lab.ok(&command);
        assert_eq!(
            output_lines(&out),
            [format!("old commit has hash: {done}"), UP_TO_DATE.to_string()],
            "{out}"
        );
        assert_eq!(count_commits(&lab.bp), commits, "`{command}` made a commit");
        assert_eq!(lab.read_bp(), bytes);
    }

    // A hand edit is still documented by the `before` commit, as the original did; no `after`.
    let edited = bytes.replacen("\"MAXCOST\": \"300\"", "\"MAXCOST\": \"302\"", 1);
    lab.write_bp(&edited);
    let out = lab.ok("update_blueprint --message edited");
    let new_head = head(&lab.bp);
    assert_eq!(count_commits(&lab.bp), commits + 1, "{out}");
    assert_eq!(output_lines(&out), [format!("old commit has hash: {new_head}"), UP_TO_DATE.to_string()]);
    before_datetime(&message(&lab.bp, "HEAD"));
    assert_eq!(lab.read_bp(), edited);
    assert_eq!(git(&lab.bp, &["status", "--porcelain"]), "");
    lab.terminate();
}

// ----- 5. no repository -----

#[test]
fn outside_a_repository_it_refuses_with_the_init_hint_and_changes_nothing() {
    let lab = Lab::new("loose");
    let (_, image, _) = lab.launch_and_image("loose-v1");
    let bytes = std::fs::read(lab.file()).unwrap();
    let listing = |p: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let files = listing(&lab.bp);

    let out = lab.run("update_blueprint --message nowhere");
    assert_failed_cleanly(&out, "update_blueprint");
    let stderr = text(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| !l.starts_with("warning:")).collect();
    let dir = std::fs::canonicalize(&lab.bp).unwrap();
    assert_eq!(
        errors,
        [format!(
            "error: `{}` is not inside a git repository, so the change cannot be recorded; run `git init` there (or `update_blueprint --init`)",
            dir.display()
        )],
        "{}",
        all(&out)
    );
    assert_eq!(std::fs::read(lab.file()).unwrap(), bytes, "the blueprint changed");
    assert_eq!(listing(&lab.bp), files, "files appeared or went");
    assert!(!text(&out.stdout).contains("old commit"), "{}", all(&out));

    let out = lab.ok("update_blueprint --init --message \"first record\"");
    assert_eq!(
        output_lines(&out),
        [
            format!("git repository: created in `{}`", lab.arg),
            format!("old commit has hash: {}", git(&lab.bp, &["rev-parse", "HEAD~1"]).trim()),
            format!("Blueprint updated with ami {image}"),
            format!("new commit has hash: {}", head(&lab.bp)),
        ],
        "{out}"
    );
    assert_eq!(git(&lab.bp, &["rev-parse", "--show-toplevel"]).trim(), dir.display().to_string());
    assert_eq!(count_commits(&lab.bp), 2);
    // The root commit holds the blueprint as it was, and only it; the next one the new AMI.
    assert_eq!(git(&lab.bp, &["ls-tree", "-r", "--name-only", "HEAD~1"]), format!("{BP}\n"));
    assert_eq!(git(&lab.bp, &["show", &format!("HEAD~1:{BP}")]).into_bytes(), bytes);
    before_datetime(&message(&lab.bp, "HEAD~1"));
    assert_eq!(after_subject(message(&lab.bp, "HEAD").lines().next().unwrap()).1, "first record");
    assert_eq!(git(&lab.bp, &["status", "--porcelain=v1", "--", BP]), "");
    // The session's folder never reaches the repository.
    assert_eq!(git(&lab.bp, &["status", "--porcelain=v1", "--ignored", "--", ".devami"]), "!! .devami/\n");
    lab.terminate();
}

// ----- 6. no identity -----

#[test]
fn without_a_git_identity_the_commits_are_made_by_devami_at_localhost() {
    // libgit2 ignores GIT_CONFIG_NOSYSTEM: an identity in the system file would be used.
    for key in ["user.name", "user.email"] {
        let out = Command::new("git").args(["config", "--system", "--get", key]).output().unwrap();
        assert!(
            !out.status.success(),
            "the system git configuration sets {key} ({}), which devami's libgit2 reads; this test \
             needs a machine without one",
            text(&out.stdout).trim()
        );
    }
    let lab = Lab::new("anon");
    init_repo(&lab.bp, false);
    assert!(!git_raw(&lab.bp, &["config", "user.name"]).status.success(), "an identity is configured");
    assert!(!git_raw(&lab.bp, &["config", "user.email"]).status.success(), "an identity is configured");
    lab.launch_and_image("anon-v1");
    lab.write_bp(&lab.read_bp().replacen("\"MAXCOST\": \"300\"", "\"MAXCOST\": \"303\"", 1));
    lab.ok("update_blueprint --message anonymous");
    for rev in ["HEAD", "HEAD~1"] {
        assert_eq!(people(&lab.bp, rev), "devami <devami@localhost> | devami <devami@localhost>", "{rev}");
    }
    assert_eq!(people(&lab.bp, "HEAD~2"), "Setup <setup@example.com> | Setup <setup@example.com>");
    lab.terminate();
}

// ----- 7. an image that is not available -----

#[test]
fn an_image_that_is_not_available_is_refused_unless_forced() {
    let lab = Lab::new("hold");
    init_repo(&lab.bp, true);
    let (_, image, _) = lab.launch_and_image("hold-v1");
    // The local backend makes an image in one go; mark this one pending in its document, as an
    // image still being snapshotted is.
    let doc_path = lab.s.path().join(".devami-home/images").join(&image).join("image.json");
    let mut doc: Value = serde_json::from_str(&std::fs::read_to_string(&doc_path).unwrap()).unwrap();
    doc["state"] = "pending".into();
    std::fs::write(&doc_path, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    let bytes = std::fs::read(lab.file()).unwrap();
    let commits = count_commits(&lab.bp);

    let out = lab.run("update_blueprint --message early");
    assert_failed_cleanly(&out, "update_blueprint");
    assert_eq!(
        error_line(&out),
        format!(
            "error: image {image} is pending, not available yet: wait for it before recording it in the blueprint (or pass `--force`)"
        )
    );
    assert_eq!(std::fs::read(lab.file()).unwrap(), bytes);
    assert_eq!(count_commits(&lab.bp), commits);

    let out = lab.ok("update_blueprint --force --message forced");
    assert!(out.contains(&format!("Blueprint updated with ami {image}")), "{out}");
    assert_eq!(count_commits(&lab.bp), commits + 1);
    assert_eq!(trailer(&lab.bp, "HEAD", "Devami-Image"), format!("{image} (hold-v1)"));
    lab.terminate();
}

#[test]
fn aws_an_image_held_pending_is_refused_unless_forced() {
    let aws = Aws::new("held-image");
    let proxy = Proxy::start(&aws.moto.url, json!({}));
    let via = ["--endpoint-url", proxy.url.as_str()];
    let dir = aws.s.path().join(&aws.name);
    init_repo(&dir, true);
    let empty = empty_home(aws.s.path());
    let run = |env: &[(&str, &str)], commands: &str| {
        let mut c = aws.cmd_with(&via, commands);
        // `cmd_with` points HOME at moto's folder; git must see no configuration either way.
        isolate_git(&mut c, &empty).env("HOME", aws.moto.home());
        c.envs(env.iter().copied());
        c.output().expect("run devami")
    };
    let out = run(&[], "launch_devinstance");
    assert!(out.status.success(), "{}", aws.explain(&out));

    // The image stays pending far longer than devami is allowed to wait for it here.
    proxy.set_rules(json!({"hold_images": 600.0}));
    let out = run(&[("DEVAMI_WAIT_MINUTES", "0.02")], "create_devami held-v1");
    assert_failed_cleanly(&out, "create_devami");
    assert!(error_line(&out).contains("gave up waiting for image"), "{}", aws.explain(&out));
    let image = aws.state()["images"][0]["id"].as_str().expect("the image was not recorded").to_string();
    let bytes = std::fs::read(dir.join(BP)).unwrap();
    let commits = count_commits(&dir);

    let out = run(&[], "update_blueprint --message early");
    assert_failed_cleanly(&out, "update_blueprint");
    assert_eq!(
        error_line(&out),
        format!(
            "error: image {image} is pending, not available yet: wait for it before recording it in the blueprint (or pass `--force`)"
        ),
        "{}",
        aws.explain(&out)
    );
    assert_eq!(std::fs::read(dir.join(BP)).unwrap(), bytes, "the blueprint changed");
    assert_eq!(count_commits(&dir), commits);

    let out = run(&[], "update_blueprint --force --message forced");
    assert!(out.status.success(), "{}", aws.explain(&out));
    assert!(text(&out.stdout).contains(&format!("Blueprint updated with ami {image}")), "{}", all(&out));
    assert_eq!(aws.blueprint()["Lambda"]["LambdaConfig"]["AMI"], image.as_str());
    assert_eq!(count_commits(&dir), commits + 1);
    assert_eq!(trailer(&dir, "HEAD", "Devami-Image"), format!("{image} (held-v1)"));
    assert_eq!(after_subject(message(&dir, "HEAD").lines().next().unwrap()).1, "forced");
    let out = run(&[], "terminate_devinstance --force");
    assert!(out.status.success(), "{}", aws.explain(&out));
}

// ----- 8. lifetime -----

/// The second cell of the table row whose first cell is `key`.
fn row(out: &str, key: &str) -> String {
    out.lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.trim_matches('│').split('┆').map(str::trim).collect();
            (cells.len() >= 2 && cells[0] == key).then(|| cells[1].to_string())
        })
        .next()
        .unwrap_or_else(|| panic!("no row `{key}` in:\n{out}"))
}

/// Seconds of `12s`, `3m 07s` or `1h 05m`.
fn duration(s: &str) -> i64 {
    let mut total = 0;
    for part in s.split_whitespace() {
        let (n, unit) = part.split_at(part.len() - 1);
        let n: i64 = n.parse().unwrap_or_else(|_| panic!("not a duration: {s:?}"));
        total += n * match unit {
            "h" => 3600,
            "m" => 60,
            "s" => 1,
            _ => panic!("not a duration: {s:?}"),
        };
    }
    total
}

/// The lifetime warnings on stderr: the durations they announce (`None` for "past its lifetime").
fn warnings(out: &Output, instance: &str) -> Vec<Option<i64>> {
    let will = format!("warning: instance {instance} will be stopped in ");
    let past = format!(
        "warning: instance {instance} is past its lifetime and may be stopped at any time; `extend_lifetime MINUTES` keeps it"
    );
    text(&out.stderr)
        .lines()
        .filter_map(|l| {
            if let Some(rest) = l.strip_prefix(&will) {
                let (d, tail) = rest.split_once(" (its lifetime)").unwrap_or_else(|| panic!("{l}"));
                assert_eq!(
                    tail, "; `extend_lifetime MINUTES` keeps it running, `create_devami NAME` saves the work",
                    "{l}"
                );
                Some(Some(duration(d)))
            } else if l == past {
                Some(None)
            } else {
                None
            }
        })
        .collect()
}

/// Whether `left` seconds of lifetime is `expected`, allowing for the seconds the test itself
/// takes (the clock moves on between the launch and the check).
fn about(left: i64, expected: i64) -> bool {
    (expected - 30..=expected).contains(&left)
}

#[test]
fn lifetime_warnings_come_once_at_15_and_5_minutes_and_extending_rearms_them() {
    let lab = Lab::new("clock");
    lab.ok("launch ubuntu18 --timeout 20");
    let instance = lab.state()["instance"].as_str().expect("the current instance").to_string();

    // 20 minutes left: no warning.
    let out = lab.ok_env(&[], "status");
    assert_eq!(warnings(&out, &instance), [], "{}", all(&out));
    assert!(about(duration(&row(&text(&out.stdout), "lifetime left")), 1200), "{}", all(&out));

    // 6 minutes later: 14 left, one warning however many commands follow.
    let out = lab.ok_env(&[("DEVAMI_CLOCK_OFFSET", "360")], "status; status; get_ip");
    let w = warnings(&out, &instance);
    assert_eq!(w.len(), 1, "{}", all(&out));
    assert!(about(w[0].unwrap(), 840), "{}", all(&out));
    let left = duration(&row(&text(&out.stdout), "lifetime left"));
    assert!(about(left, 840), "{}", all(&out));
    // get_lifetime agrees: on for N, stopped in M, N + M = the lifetime.
    let out = lab.ok_env(&[("DEVAMI_CLOCK_OFFSET", "360")], "get_lifetime");
    let line = text(&out.stdout).lines().find(|l| l.starts_with("Instance has been on")).unwrap().to_string();
    let nums: Vec<i64> =
        line.split(|c: char| !c.is_ascii_digit() && c != '-').filter_map(|w| w.parse().ok()).collect();
    assert_eq!(nums.len(), 4, "{line}");
    assert_eq!(nums[0] * 60 + nums[1] + nums[2] * 60 + nums[3], 1200, "{line}");
    assert!(about(nums[2] * 60 + nums[3], 840), "{line}");

    // 16 minutes later: 4 left, the 5-minute warning, once.
    let out = lab.ok_env(&[("DEVAMI_CLOCK_OFFSET", "960")], "status; status");
    let w = warnings(&out, &instance);
    assert_eq!(w.len(), 1, "{}", all(&out));
    assert!(about(w[0].unwrap(), 240), "{}", all(&out));

    // The same process, both thresholds: 4 left warns (5-minute), a small extension to 9 left is
    // a new lifetime and warns again (15-minute), then silence.
    let out = lab.ok_env(&[("DEVAMI_CLOCK_OFFSET", "960")], "status; extend_lifetime 5; status; status");
    let w = warnings(&out, &instance);
    assert_eq!(w.len(), 2, "{}", all(&out));
    assert!(about(w[0].unwrap(), 240) && about(w[1].unwrap(), 540), "{}", all(&out));
    assert!(
        text(&out.stdout).contains(&format!("Timeout of {instance} is now 25 minutes.")),
        "{}",
        all(&out)
    );

    // extend_lifetime 30: 39 minutes left, no warning.
    let out = lab.ok_env(&[("DEVAMI_CLOCK_OFFSET", "960")], "extend_lifetime 30; status");
    assert_eq!(warnings(&out, &instance), [], "{}", all(&out));
    assert!(
        text(&out.stdout).contains(&format!("Timeout of {instance} is now 55 minutes.")),
        "{}",
        all(&out)
    );
    assert!(about(duration(&row(&text(&out.stdout), "lifetime left")), 55 * 60 - 960), "{}", all(&out));
    // ... and the warnings come again as that lifetime runs out.
    let out = lab.ok_env(&[("DEVAMI_CLOCK_OFFSET", "3000")], "status; status");
    let w = warnings(&out, &instance);
    assert_eq!(w.len(), 1, "{}", all(&out));
    assert!(about(w[0].unwrap(), 300), "{}", all(&out));

    // Past the lifetime without asking the cloud: `status` says so, and so does the warning.
    let out = lab.ok_env(&[("DEVAMI_CLOCK_OFFSET", "3400")], "status; status");
    assert_eq!(row(&text(&out.stdout), "lifetime left"), "over", "{}", all(&out));
    assert_eq!(warnings(&out, &instance), [None], "{}", all(&out));
    lab.terminate();
}

// ----- 9. costs -----

/// Epoch seconds as devami prints them (`2026-11-25 13:23:38`, UTC), by `date`.
fn utc(epoch: i64) -> String {
    let out =
        Command::new("date").args(["-u", "-d", &format!("@{epoch}"), "+%Y-%m-%d %H:%M:%S"]).output().unwrap();
    assert!(out.status.success(), "{}", all(&out));
    text(&out.stdout).trim().to_string()
}

fn epoch_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Runs `status` with a price table and a clock offset, and returns the table and the costs
/// (formatted as devami does: cents from ten cents up) that `hourly` gives over the seconds the
/// command may have read its clock at, from `launched`.
fn status_costs(lab: &Lab, prices: &str, offset: i64, launched: i64, hourly: f64) -> (String, Vec<String>) {
    let offset_text = offset.to_string();
    let t0 = epoch_now();
    let out = lab.ok_env(&[("DEVAMI_PRICES", prices), ("DEVAMI_CLOCK_OFFSET", &offset_text)], "status");
    let t1 = epoch_now() + 1;
    let costs =
        (t0..=t1).map(|t| format!("${:.2}", hourly * (t + offset - launched) as f64 / 3600.0)).collect();
    (text(&out.stdout), costs)
}

#[test]
fn cost_figures_follow_the_price_table_and_the_clock() {
    let lab = Lab::new("costs");
    let dear = lab.s.write("dear.json", r#"{"t2.micro": 1.0}"#).display().to_string();
    let cheap = lab.s.write("cheap.json", r#"{"t2.micro": 0.25, "x9.large": 2.0}"#).display().to_string();
    lab.ok("launch ubuntu18 --timeout 180");
    let launched = lab.state()["instances"][0]["launch_time"].as_i64().expect("a launch time");
    let since = format!(" since {} UTC on AWS; free here", utc(launched));

    // Half an hour at $1.00 an hour: $0.50.
    let (out, costs) = status_costs(&lab, &dear, 1800, launched, 1.0);
    assert_eq!(row(&out, "type and price"), "t2.micro, $1.00/hour on AWS; free here", "{out}");
    assert!(costs.contains(&"$0.50".to_string()), "the test was too slow to check $0.50: {costs:?}");
    let cost = row(&out, "cost so far");
    let amount = cost.strip_suffix(&since).unwrap_or_else(|| panic!("{cost:?} does not end with {since:?}"));
    assert!(costs.iter().any(|c| c == amount), "{cost} is none of {costs:?}");
    let out =
        text(&lab.ok_env(&[("DEVAMI_PRICES", &dear), ("DEVAMI_CLOCK_OFFSET", "1800")], "history").stdout);
    let line = out.lines().find(|l| l.contains("t2.micro")).unwrap_or_else(|| panic!("{out}"));
    let cells: Vec<&str> = line.trim_matches('│').split('┆').map(str::trim).collect();
    assert_eq!(cells[6], "$1.00/h", "{out}");
    assert!(out.contains("the local backend is free"), "{out}");

    // Two hours at $0.25 an hour, from another table: $0.50 again.
    let (out, costs) = status_costs(&lab, &cheap, 7200, launched, 0.25);
    assert_eq!(row(&out, "type and price"), "t2.micro, $0.25/hour on AWS; free here", "{out}");
    let cost = row(&out, "cost so far");
    let amount = cost.strip_suffix(&since).unwrap_or_else(|| panic!("{cost:?} does not end with {since:?}"));
    assert!(costs.iter().any(|c| c == amount) && amount == "$0.50", "{cost} is not $0.50 ({costs:?})");
    lab.terminate();

    // A type that no table knows has no price, never a guessed one; DEVAMI_PRICES can add it.
    let mut doc: Value = serde_json::from_str(&lab.read_bp()).unwrap();
    doc["Lambda"]["LambdaConfig"]["INSTANCE_TYPE"] = "x9.large".into();
    lab.write_bp(&serde_json::to_string_pretty(&doc).unwrap());
    lab.ok("launch ubuntu18");
    let out = lab.ok("status");
    assert_eq!(row(&out, "type and price"), "x9.large, price unknown (add it with DEVAMI_PRICES)", "{out}");
    assert_eq!(row(&out, "cost so far"), "unknown (no price for its type)", "{out}");
    let launched = lab.state()["instances"][1]["launch_time"].as_i64().expect("a launch time");
    let (out, costs) = status_costs(&lab, &cheap, 900, launched, 2.0);
    assert_eq!(row(&out, "type and price"), "x9.large, $2.00/hour on AWS; free here", "{out}");
    let cost = row(&out, "cost so far");
    assert!(costs.iter().any(|c| cost.starts_with(&format!("{c} since "))), "{cost} is none of {costs:?}");
    lab.terminate();
}
