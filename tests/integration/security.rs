//! The security review's tests (docs/SECURITY.md names each one next to the claim it backs).
//!
//! Every test drives the real binary. Local tests use the embedded backend; AWS tests use moto
//! (`moto.rs`, `aws.rs`) and, for `exec`, a fake `ssh` first on `PATH` that records its arguments
//! and then plays the remote side as sshd does (`bash -c LAST_ARGUMENT` in a fake remote home), so
//! what the remote shell would run is run for real. Canaries are relative `touch pwned-*`
//! commands: whatever folder a shell would run them in (the scratch folder, the instance's home,
//! the fake remote home), the file would appear under the scratch folder, which is searched.
//! Dataset and config names in submit files are covered by `jobs.rs`
//! (`hostile_dataset_names_reach_the_job_byte_exact_and_run_nothing` and its AWS twin), not here.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};

use crate::aws::Aws;
use crate::moto::{Moto, REGION, clean_aws_env, venv_bin};
use crate::support::{Scratch, all, text};
use crate::support::{assert_failed_cleanly, error_line, no_panic};

// ----- helpers -----

/// Every file under `dir` (not following links), sorted.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for entry in entries.flatten() {
            let p = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(_) => out.push(p),
                Err(_) => {}
            }
        }
    }
    out.sort();
    out
}

/// Files under `dir` whose name starts with `pwned` (the canaries' evidence).
fn pwned(dir: &Path) -> Vec<PathBuf> {
    walk(dir)
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("pwned")))
        .collect()
}

fn assert_no_canary(dir: &Path, context: &str) {
    let found = pwned(dir);
    assert!(found.is_empty(), "{context}: a canary command ran: {found:?}");
}

/// `(file, needle)` for every regular file under `dir` holding one of `needles`.
fn files_holding(dir: &Path, needles: &[&str], skip: &dyn Fn(&Path) -> bool) -> Vec<(PathBuf, String)> {
    let mut hits = Vec::new();
    for p in walk(dir) {
        if skip(&p) || !std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_file() && m.len() < 64 << 20) {
            continue;
        }
        let Ok(bytes) = std::fs::read(&p) else { continue };
        let t = String::from_utf8_lossy(&bytes);
        for n in needles {
            if t.contains(n) {
                hits.push((p.clone(), n.to_string()));
            }
        }
    }
    hits
}

/// The blueprint of `dir` as JSON.
fn blueprint(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("stack_config_template.json")).unwrap()).unwrap()
}

/// Changes the blueprint of `dir`.
fn edit_blueprint(dir: &Path, f: impl FnOnce(&mut Value)) {
    let mut doc = blueprint(dir);
    f(&mut doc);
    std::fs::write(dir.join("stack_config_template.json"), serde_json::to_string_pretty(&doc).unwrap())
        .unwrap();
}

/// The session state of the blueprint in `dir`.
fn state(dir: &Path) -> Value {
    crate::support::read_state(&dir.join(".devami/state.json"))
}

/// Runs `script` (one command a line) on blueprint `name`, as a piped script.
fn script(s: &Scratch, name: &str, script: &str) -> Output {
    s.run_with_stdin(&[name], script.as_bytes())
}

fn ok_script(s: &Scratch, name: &str, lines: &str) -> String {
    let out = script(s, name, lines);
    assert!(out.status.success(), "script failed ({}):\n{lines}\n---\n{}", out.status, all(&out));
    no_panic(&out);
    all(&out)
}

/// A scratch folder with blueprint `name` and a running local instance (terminated by the caller
/// or left to the scratch folder's clean-up).
fn local_with_instance(name: &str) -> Scratch {
    let s = Scratch::new();
    s.init(name);
    ok_script(&s, name, "launch_devinstance ubuntu22\n");
    s
}

fn hex_decode(hex: &str) -> Vec<u8> {
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect()
}

// ----- the fake ssh of the AWS tests -----

/// Records its arguments (one hex line each, `--` after the call) in `$FAKE_SSH_LOG`, then does
/// what sshd does with a command: runs it with the login shell in the remote home.
const FAKE_SSH: &str = r#"#!/bin/bash
{ for a in "$@"; do printf '%s' "$a" | od -An -v -tx1 | tr -d ' \n'; echo; done; echo --; } >> "${FAKE_SSH_LOG:?}"
cd "${FAKE_REMOTE_HOME:?}" || exit 255
last=${!#}
HOME=$FAKE_REMOTE_HOME exec bash -c "$last"
"#;

/// A fake `ssh` in `dir/bin`, its log and a remote home, for one AWS session.
struct FakeSsh {
    bin: PathBuf,
    log: PathBuf,
    remote: PathBuf,
}

impl FakeSsh {
    fn new(dir: &Path) -> FakeSsh {
        let bin = dir.join("fakebin");
        std::fs::create_dir_all(&bin).unwrap();
        let ssh = bin.join("ssh");
        std::fs::write(&ssh, FAKE_SSH).unwrap();
        std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o755)).unwrap();
        let remote = dir.join("remote-home");
        std::fs::create_dir_all(&remote).unwrap();
        FakeSsh { bin, log: dir.join("fake-ssh.log"), remote }
    }

    /// Points `cmd` at the fake ssh.
    fn apply(&self, cmd: &mut Command) {
        let path = std::env::var("PATH").unwrap_or_default();
        cmd.env("PATH", format!("{}:{path}", self.bin.display()))
            .env("FAKE_SSH_LOG", &self.log)
            .env("FAKE_REMOTE_HOME", &self.remote);
    }

    /// The argument vectors of every call so far.
    fn calls(&self) -> Vec<Vec<String>> {
        let Ok(t) = std::fs::read_to_string(&self.log) else { return Vec::new() };
        let mut calls = Vec::new();
        let mut cur = Vec::new();
        for line in t.lines() {
            if line == "--" {
                calls.push(std::mem::take(&mut cur));
            } else {
                cur.push(String::from_utf8_lossy(&hex_decode(line)).into_owned());
            }
        }
        calls
    }
}

/// devami `commands` on the AWS blueprint through the fake ssh, with `extra` global options.
fn aws_exec(aws: &Aws, ssh: &FakeSsh, extra: &[&str], commands: &str) -> Output {
    let mut cmd = aws.cmd_with(extra, commands);
    ssh.apply(&mut cmd);
    cmd.output().expect("run devami")
}

/// The blueprint folder of an AWS session.
fn aws_dir(aws: &Aws) -> PathBuf {
    aws.s.path().join(&aws.name)
}

// =====================================================================================
// 1. Command injection
// =====================================================================================

/// Image names that would run a command if they ever reached a shell unquoted.
const HOSTILE_IMAGE_NAMES: &[&str] = &[
    "img$(touch pwned-img-sub)",
    "img`touch pwned-img-bq`",
    "img; touch pwned-img-semi",
    "img\ntouch pwned-img-nl",
    "img\" && touch pwned-img-dq && \"",
    "img|touch pwned-img-pipe",
];

/// Python string literal for the call form (double quotes; `\`, `"` and newlines escaped).
fn py(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[test]
fn image_names_are_validated_and_reach_no_shell() {
    let s = local_with_instance("imgnames");
    let dir = s.path().join("imgnames");
    for name in HOSTILE_IMAGE_NAMES {
        let out = script(&s, "imgnames", &format!("create_devami(name={})\n", py(name)));
        no_panic(&out);
        assert_eq!(out.status.code(), Some(2), "{name:?} was not refused:\n{}", all(&out));
        assert!(text(&out.stderr).contains("invalid image name"), "{name:?}:\n{}", all(&out));
    }
    assert!(state(&dir)["images"].as_array().is_none_or(|a| a.is_empty()), "{:#}", state(&dir));
    assert_no_canary(s.path(), "hostile image names");

    // The odd characters AMI names allow (a quote, spaces, brackets, slash, @) arrive verbatim in
    // the image's document, the session and the provenance commit, with nothing run.
    let odd = "it's (v1) [x] @a/b_c.d-e";
    let out =
        ok_script(&s, "imgnames", &format!("create_devami(name={})\nupdate_blueprint --init\n", py(odd)));
    let st = state(&dir);
    assert_eq!(st["images"][0]["name"], odd, "{st:#}\n{out}");
    let image = st["images"][0]["id"].as_str().unwrap().to_string();
    let doc: Value = serde_json::from_str(
        &std::fs::read_to_string(s.path().join(".devami-home/images").join(&image).join("image.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(doc["name"], odd, "{doc:#}");
    let log = Command::new("git").args(["-C"]).arg(&dir).args(["log", "--format=%B"]).output().unwrap();
    assert!(text(&log.stdout).contains(odd), "the provenance commit lacks the name:\n{}", all(&log));
    assert_no_canary(s.path(), "an image name with a quote");
    ok_script(&s, "imgnames", "terminate_devinstance --force\n");
}

/// PipelineNames that would run a command in a shell or lead out of `buckets/`.
const HOSTILE_PIPELINE_NAMES: &[&str] = &[
    "x$(touch pwned-pn-sub)",
    "x`touch pwned-pn-bq`",
    "x;touch pwned-pn-semi",
    "x\ntouch pwned-pn-nl",
    "../pwned-pn-escape",
    "a/../../pwned-pn-escape2",
    "..",
];

#[test]
fn hostile_pipeline_names_are_refused_before_any_bucket_or_job() {
    let s = local_with_instance("pipelines");
    let dir = s.path().join("pipelines");
    s.write("d.txt", "data\n");
    s.write("c.json", "{}\n");
    s.write("submit.json", r#"{"dataname": "debuggers/inputs/d.txt", "configname": "debuggers/configs/c.json", "timestamp": "1"}"#);
    let home = s.path().join(".devami-home");
    for name in HOSTILE_PIPELINE_NAMES {
        edit_blueprint(&dir, |d| d["PipelineName"] = json!(name));
        let out = s.run(&["check", "pipelines"]);
        assert_eq!(out.status.code(), Some(1), "`check` accepted PipelineName {name:?}:\n{}", all(&out));
        assert!(text(&out.stdout).contains("PipelineName"), "{name:?}:\n{}", all(&out));
        for step in [
            "upload d.txt debuggers/inputs/d.txt",
            "ls",
            "submit_job submit.json",
            "download debuggers/inputs/d.txt got.txt",
        ] {
            let out = script(&s, "pipelines", &format!("{step}\n"));
            assert_failed_cleanly(&out, &format!("{step} with PipelineName {name:?}"));
        }
        assert!(state(&dir)["jobs"].as_array().is_none_or(|a| a.is_empty()), "a job was sent for {name:?}");
    }
    // Nothing was created outside `buckets/<valid name>/`, and no bucket folder for any of them.
    let buckets: Vec<String> = std::fs::read_dir(home.join("buckets"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert!(buckets.is_empty(), "bucket folders were created: {buckets:?}");
    assert_no_canary(s.path(), "hostile PipelineNames");
    assert!(!s.path().join("got.txt").exists());
    edit_blueprint(&dir, |d| d["PipelineName"] = json!("pipelines"));
    ok_script(&s, "pipelines", "terminate_devinstance --force\n");
}

/// Instance ids that would run a command in a shell, or name a folder outside `instances/`.
const HOSTILE_INSTANCE_IDS: &[&str] = &[
    "i-$(touch pwned-id-sub)",
    "i-`touch pwned-id-bq`",
    "i-0123456789abcdef0; touch pwned-id-semi",
    "i-0123456789abcdef0\ntouch pwned-id-nl",
    "../../pwned-id-escape",
    "i-../../../pwned",
];

#[test]
fn hostile_instance_ids_are_refused() {
    let s = Scratch::new();
    let dir = s.init("ids");
    for id in HOSTILE_INSTANCE_IDS {
        let out = script(&s, "ids", &format!("assign_instance({})\n", py(id)));
        assert_failed_cleanly(&out, &format!("assign_instance {id:?}"));
        assert!(state(&dir)["instance"].is_null(), "{id:?} was adopted: {:#}", state(&dir));
    }
    assert_no_canary(s.path(), "hostile instance ids");
}

#[test]
fn aws_hostile_instance_ids_go_to_ec2_only() {
    let aws = Aws::new("aws-ids");
    let ssh = FakeSsh::new(aws.s.path());
    for id in HOSTILE_INSTANCE_IDS {
        let out = aws_exec(&aws, &ssh, &[], &format!("assign_instance({})", py(id)));
        assert_failed_cleanly(&out, &format!("assign_instance {id:?}"));
        assert!(aws.state()["instance"].is_null(), "{id:?} was adopted: {:#}", aws.state());
    }
    assert!(ssh.calls().is_empty(), "ssh ran: {:?}", ssh.calls());
    assert_no_canary(aws.s.path(), "hostile instance ids on AWS");
}

/// The key path, address and command of `exec` reach ssh as separate arguments, and the command
/// runs on the remote side only.
#[test]
fn aws_exec_gives_ssh_the_key_and_address_as_single_arguments() {
    let aws = Aws::new("aws-exec");
    let ssh = FakeSsh::new(aws.s.path());
    // The remote home is where the command must start.
    let remote = ssh.remote.display().to_string();
    edit_blueprint(&aws_dir(&aws), |d| d["Lambda"]["LambdaConfig"]["WORKING_DIRECTORY"] = json!(remote));
    aws.ok("launch_devinstance");
    // A key file whose path a shell would split and run.
    let keydir = aws.s.path().join("keys $(touch pwned-key-sub); touch pwned-key-semi `touch pwned-key-bq`");
    std::fs::create_dir_all(&keydir).unwrap();
    let key = keydir.join("my key.pem");
    std::fs::copy(&aws.seed.key_path, &key).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let key_arg = key.display().to_string();

    let out = aws_exec(&aws, &ssh, &["--key", &key_arg], "exec touch made-remotely");
    assert!(out.status.success(), "{}", aws.explain(&out));
    let calls = ssh.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let argv = &calls[0];
    let ip = aws.state()["ip"].as_str().expect("an address in state.json").to_string();
    assert_eq!(
        argv,
        &vec![
            "-i".to_string(),
            key_arg.clone(),
            "-o".into(),
            "StrictHostKeyChecking=accept-new".into(),
            format!("ubuntu@{ip}"),
            format!("cd '{remote}' && touch made-remotely"),
        ],
        "ssh's arguments"
    );
    assert!(ssh.remote.join("made-remotely").is_file(), "the command did not run on the remote side");
    assert!(!aws.s.path().join("made-remotely").exists(), "the command ran locally");
    assert_no_canary(aws.s.path(), "a hostile key path");
    aws.ok("terminate_devinstance --force");
}

/// A working directory folder name that a shell would split and run.
const HOSTILE_DIR: &str = "w d; touch pwned-wd-semi $(touch pwned-wd-sub) `touch pwned-wd-bq`";

#[test]
fn aws_exec_quotes_an_absolute_working_directory() {
    let aws = Aws::new("aws-wd-abs");
    let ssh = FakeSsh::new(aws.s.path());
    let wd = ssh.remote.join(HOSTILE_DIR);
    std::fs::create_dir_all(&wd).unwrap();
    let wd_text = wd.display().to_string();
    edit_blueprint(&aws_dir(&aws), |d| d["Lambda"]["LambdaConfig"]["WORKING_DIRECTORY"] = json!(wd_text));
    aws.ok("launch_devinstance");
    let out = aws_exec(&aws, &ssh, &[], "exec pwd");
    assert!(out.status.success(), "{}", aws.explain(&out));
    assert!(
        text(&out.stdout).lines().any(|l| l == wd_text),
        "not run in the working directory:\n{}",
        all(&out)
    );
    assert_no_canary(aws.s.path(), "an absolute WORKING_DIRECTORY");
    aws.ok("terminate_devinstance --force");
}

/// Finding 1 (fixed): `shell_command` in src/aws.rs stripped the quotes it put around the rest
/// of a `~/...` working directory, so the remote shell of `exec` and `ssh` got
/// `cd ~/w d; touch pwned-... && pwd`: the name was split and run.
#[test]
fn aws_exec_quotes_a_home_relative_working_directory() {
    let aws = Aws::new("aws-wd-home");
    let ssh = FakeSsh::new(aws.s.path());
    std::fs::create_dir_all(ssh.remote.join(HOSTILE_DIR)).unwrap();
    let wd = format!("~/{HOSTILE_DIR}");
    edit_blueprint(&aws_dir(&aws), |d| d["Lambda"]["LambdaConfig"]["WORKING_DIRECTORY"] = json!(wd));
    aws.ok("launch_devinstance");
    let out = aws_exec(&aws, &ssh, &[], "exec pwd");
    let calls = ssh.calls();
    let remote_cmd = calls.last().and_then(|c| c.last()).cloned().unwrap_or_default();
    let evidence = pwned(aws.s.path());
    let expected = ssh.remote.join(HOSTILE_DIR).display().to_string();
    let ran_in_wd = text(&out.stdout).lines().any(|l| l == expected);
    let _ = aws.run("terminate_devinstance --force");
    assert!(
        evidence.is_empty() && ran_in_wd,
        "WORKING_DIRECTORY `{wd}` reached the remote shell unquoted.\nssh was asked to run: {remote_cmd}\n\
         canaries that ran: {evidence:?}\noutput:\n{}",
        all(&out)
    );
}

/// The local backend never hands the working directory to a shell as code: `exec` and jobs get it
/// as an argument of their own (`cd -- "$1"`) and start in a folder of that exact name.
#[test]
fn local_working_directories_reach_no_shell() {
    let s = local_with_instance("localwd");
    let dir = s.path().join("localwd");
    s.write("d.txt", "data\n");
    s.write("c.json", "{}\n");
    s.write(
        "submit.json",
        r#"{"dataname": "debuggers/inputs/d.txt", "configname": "debuggers/configs/c.json", "timestamp": "1"}"#,
    );
    // The developer's own command creates the folder (quoted as they would quote it).
    ok_script(
        &s,
        "localwd",
        &format!(
            "exec mkdir -p ~/'{HOSTILE_DIR}'\nupload d.txt debuggers/inputs/d.txt\nupload c.json debuggers/configs/c.json\n"
        ),
    );
    edit_blueprint(&dir, |d| {
        // Absolute: jobs run as root, whose `~` is not the developer's home.
        d["Lambda"]["LambdaConfig"]["WORKING_DIRECTORY"] = json!(format!("/home/ubuntu/{HOSTILE_DIR}"));
        d["Lambda"]["LambdaConfig"]["COMMAND"] =
            json!(r#"pwd > /home/ubuntu/job-wd.txt; true "{}" "{}" "{}" "{}""#);
        d["Lambda"]["LambdaConfig"]["SSM_TIMEOUT"] = json!(60);
    });
    let out = ok_script(
        &s,
        "localwd",
        "exec pwd\nsubmit_job submit.json\njob_status --wait\nexec cat ~/job-wd.txt\n",
    );
    let expected = format!("/home/ubuntu/{HOSTILE_DIR}");
    assert_eq!(out.lines().filter(|l| *l == expected).count(), 2, "exec and the job start there:\n{out}");
    assert!(out.contains("Success"), "{out}");
    assert_no_canary(s.path(), "a hostile local WORKING_DIRECTORY");
    ok_script(&s, "localwd", "terminate_devinstance --force\n");
}

// =====================================================================================
// 2. Path traversal
// =====================================================================================

/// Sends S3 requests to the local endpoint exactly as given (method, raw path, headers, body),
/// signed with the endpoint's key pair for the path decoded and encoded again (S3's canonical
/// form, which the endpoint checks signatures against);
/// prints `[{status, code, body}]`. argv: port, JSON cases.
const RAW_S3: &str = r#"
import sys, json, http.client, re, urllib.parse
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
port = int(sys.argv[1]); cases = json.loads(sys.argv[2])
creds = Credentials(sys.argv[3], sys.argv[4])
out = []
for c in cases:
    method, path = c["method"], c["path"]
    host = c.get("host", "127.0.0.1:%d" % port)
    body = c.get("body", "").encode()
    raw_path, _, query = path.partition("?")
    sign = urllib.parse.quote(urllib.parse.unquote(raw_path), safe="/~") + ("?" + query if query else "")
    req = AWSRequest(method=method, url="http://" + host + sign, data=body, headers=dict(c.get("headers", {})))
    req.headers["Host"] = host
    req.headers["x-amz-content-sha256"] = "UNSIGNED-PAYLOAD"
    S3SigV4Auth(creds, "s3", "us-east-1").add_auth(req)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    for k, v in req.headers.items():
        conn.putheader(k, v)
    conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body)
    r = conn.getresponse()
    text = r.read().decode("utf-8", "replace")
    m = re.search(r"<Code>([^<]*)</Code>", text)
    out.append({"status": r.status, "code": m.group(1) if m else None, "body": text})
print(json.dumps(out))
"#;

/// A local home with its endpoint running, buckets `alpha` (with a file) and `bravo` (with a
/// secret), and files outside the buckets.
struct Endpoint {
    s: Scratch,
    port: u16,
    /// The home's key pair (random per home).
    keys: (String, String),
}

/// The key pair of a home's S3 endpoint (`run/s3-keys.json`).
fn endpoint_keys(home: &Path) -> (String, String) {
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(home.join("run/s3-keys.json")).unwrap()).unwrap();
    (doc["access_key"].as_str().unwrap().to_string(), doc["secret_key"].as_str().unwrap().to_string())
}

const SECRET: &str = "BRAVO-SECRET-CONTENT";
const OUTSIDE: &str = "OUTSIDE-THE-BUCKETS";

impl Endpoint {
    fn start() -> Endpoint {
        let s = Scratch::new();
        s.init("alpha");
        s.write("f.txt", "alpha file\n");
        ok_script(&s, "alpha", "upload f.txt inside/f.txt\n");
        let home = s.path().join(".devami-home");
        let port: u16 = std::fs::read_to_string(home.join("run/s3.port")).unwrap().trim().parse().unwrap();
        std::fs::create_dir_all(home.join("buckets/bravo")).unwrap();
        std::fs::write(home.join("buckets/bravo/secret.txt"), SECRET).unwrap();
        std::fs::write(home.join("outside.txt"), OUTSIDE).unwrap();
        std::fs::write(s.path().join("outside.txt"), OUTSIDE).unwrap();
        let keys = endpoint_keys(&home);
        Endpoint { s, port, keys }
    }

    fn home(&self) -> PathBuf {
        self.s.path().join(".devami-home")
    }

    fn raw(&self, cases: &Value) -> Vec<Value> {
        let out = Command::new(venv_bin("python"))
            .arg("-c")
            .arg(RAW_S3)
            .arg(self.port.to_string())
            .arg(cases.to_string())
            .arg(&self.keys.0)
            .arg(&self.keys.1)
            .output()
            .unwrap();
        assert!(out.status.success(), "the raw S3 client failed:\n{}", all(&out));
        serde_json::from_str(text(&out.stdout).trim()).unwrap()
    }

    /// Every file of the home outside `buckets/alpha/` with its content (what must not change).
    fn outside_alpha(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        let alpha = self.home().join("buckets/alpha");
        let mut files = BTreeMap::new();
        for p in walk(self.s.path()) {
            // The endpoint's log and s3s-fs's own sidecars (in `buckets/`) change with every request.
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if p.starts_with(&alpha)
                || name == "s3.log"
                || name == "lock"
                || name.starts_with(".bucket-YWxwaGE")
            {
                continue;
            }
            files.insert(p.clone(), std::fs::read(&p).unwrap_or_default());
        }
        files
    }
}

#[test]
fn the_local_endpoint_keeps_every_key_inside_its_bucket() {
    let e = Endpoint::start();
    let alpha = e.home().join("buckets/alpha");
    // Links a job could leave in a bucket folder: to another bucket, a file outside, a folder.
    std::os::unix::fs::symlink(e.home().join("buckets/bravo/secret.txt"), alpha.join("link-file")).unwrap();
    std::os::unix::fs::symlink(e.home().join("buckets/bravo"), alpha.join("link-dir")).unwrap();
    std::os::unix::fs::symlink(e.home().join("outside.txt"), alpha.join("link-out")).unwrap();
    let before = e.outside_alpha();

    // The control: the client signs correctly and reads what it may.
    let control = e.raw(&json!([{"method": "GET", "path": "/alpha/inside/f.txt"}]));
    assert_eq!(control[0]["status"], 200, "{control:#?}");

    let reads = [
        "/alpha/../bravo/secret.txt",
        "/alpha/%2e%2e/bravo/secret.txt",
        "/alpha/%2E%2E%2Fbravo%2Fsecret.txt",
        "/alpha/x/../../bravo/secret.txt",
        "/alpha/..%2f..%2foutside.txt",
        "/alpha/./inside/f.txt",
        "/alpha/inside/%2e/f.txt",
        "/alpha//etc/passwd",
        "/alpha/%2Fetc%2Fpasswd",
        "/../outside.txt",
        "/%2e%2e/outside.txt",
        "/alpha/..%5C..%5Coutside.txt",
        "/alpha/link-file",
        "/alpha/link-dir/secret.txt",
        "/alpha/link-out",
    ];
    for method in ["GET", "HEAD"] {
        let cases: Vec<Value> = reads.iter().map(|p| json!({"method": method, "path": p})).collect();
        for (path, r) in reads.iter().zip(e.raw(&json!(cases))) {
            assert_ne!(r["status"], 200, "{method} {path} was served: {r:#}");
            assert_ne!(
                r["code"], "SignatureDoesNotMatch",
                "{method} {path} never reached the endpoint's checks"
            );
            let body = r["body"].as_str().unwrap_or_default();
            assert!(!body.contains(SECRET) && !body.contains(OUTSIDE), "{method} {path}: {body}");
        }
    }
    let copy = |src: &str| json!({"method": "PUT", "path": "/alpha/copied.txt", "headers": {"x-amz-copy-source": src}});
    let writes = json!([
        {"method": "PUT", "path": "/alpha/../bravo/secret.txt", "body": "overwritten"},
        {"method": "PUT", "path": "/alpha/%2e%2e/bravo/secret.txt", "body": "overwritten"},
        {"method": "PUT", "path": "/alpha/%2e%2e%2f%2e%2e%2fpwned-put.txt", "body": "x"},
        {"method": "PUT", "path": "/%2e%2e/pwned-put.txt", "body": "x"},
        {"method": "PUT", "path": "/alpha/%2Fpwned-abs.txt", "body": "x"},
        {"method": "PUT", "path": "/alpha/link-dir/pwned-through-link.txt", "body": "x"},
        {"method": "PUT", "path": "/alpha/link-out", "body": "overwritten"},
        {"method": "DELETE", "path": "/alpha/../bravo/secret.txt"},
        {"method": "DELETE", "path": "/alpha/%2e%2e/bravo/secret.txt"},
        {"method": "DELETE", "path": "/alpha/link-dir/secret.txt"},
        {"method": "POST", "path": "/alpha/%2e%2e/pwned-mpu.txt?uploads"},
        copy("/alpha/..%2Fbravo%2Fsecret.txt"),
        copy("/alpha/link-file"),
        copy("/bravo/..%2Fouside.txt"),
    ]);
    for (case, r) in writes.as_array().unwrap().iter().zip(e.raw(&writes)) {
        assert!(r["status"].as_u64().is_some_and(|s| s >= 400), "{case} was accepted: {r:#}");
        assert_ne!(r["code"], "SignatureDoesNotMatch", "{case} never reached the endpoint's checks");
    }
    // A backslash is an ordinary character of a key: the object stays inside the bucket.
    let bs = e.raw(&json!([{"method": "PUT", "path": "/alpha/..%5C..%5Cpwned-bs.txt", "body": "x"}]));
    assert_eq!(bs[0]["status"], 200, "{bs:#?}");
    assert!(alpha.join("..\\..\\pwned-bs.txt").is_file());
    std::fs::remove_file(alpha.join("..\\..\\pwned-bs.txt")).unwrap();
    // Listing with a prefix that climbs out lists nothing of the other bucket.
    let list = e.raw(&json!([{"method": "GET", "path": "/alpha?list-type=2&prefix=..%2F"}]));
    assert!(!list[0]["body"].as_str().unwrap().contains("secret.txt"), "{list:#?}");

    // The AWS CLI, as a job would use it, fares no better.
    let aws_cli = |args: &[&str]| -> Output {
        Command::new(venv_bin("aws"))
            .args(["--endpoint-url", &format!("http://127.0.0.1:{}", e.port)])
            .args(args)
            .current_dir(e.s.path())
            .env("AWS_ACCESS_KEY_ID", &e.keys.0)
            .env("AWS_SECRET_ACCESS_KEY", &e.keys.1)
            .env("AWS_DEFAULT_REGION", REGION)
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_ENDPOINT_URL")
            .output()
            .unwrap()
    };
    for args in [
        &["s3api", "get-object", "--bucket", "alpha", "--key", "../bravo/secret.txt", "pwned-got.txt"][..],
        &["s3", "cp", "s3://alpha/../bravo/secret.txt", "pwned-got2.txt"],
        &["s3", "cp", "f.txt", "s3://alpha/../../pwned-cli.txt"],
        &[
            "s3api",
            "copy-object",
            "--bucket",
            "alpha",
            "--key",
            "c.txt",
            "--copy-source",
            "alpha/../bravo/secret.txt",
        ],
    ] {
        let out = aws_cli(args);
        assert!(!out.status.success(), "aws {args:?} succeeded:\n{}", all(&out));
    }
    std::fs::remove_file(alpha.join("link-file")).unwrap();
    std::fs::remove_file(alpha.join("link-dir")).unwrap();
    std::fs::remove_file(alpha.join("link-out")).unwrap();
    let after = e.outside_alpha();
    let changed: Vec<_> = after.iter().filter(|(p, c)| before.get(*p) != Some(c)).map(|(p, _)| p).collect();
    let gone: Vec<_> = before.keys().filter(|p| !after.contains_key(*p)).collect();
    assert!(
        changed.is_empty() && gone.is_empty(),
        "files outside the bucket changed: {changed:?}, removed: {gone:?}"
    );
    assert_no_canary(e.s.path(), "requests to the endpoint");
}

#[test]
fn upload_and_download_refuse_keys_that_leave_the_bucket() {
    let e = Endpoint::start();
    std::fs::create_dir_all(e.s.path().join("folder/sub")).unwrap();
    std::fs::write(e.s.path().join("folder/sub/x.txt"), "x").unwrap();
    let before = e.outside_alpha();
    for key in [
        "../pwned-up.txt",
        "a/../../pwned-up2.txt",
        "./pwned-up3.txt",
        "a/./pwned-up4.txt",
        "../bravo/secret.txt",
    ] {
        let out = script(&e.s, "alpha", &format!("upload f.txt {key}\n"));
        assert_failed_cleanly(&out, &format!("upload f.txt {key}"));
    }
    let out = script(&e.s, "alpha", "upload folder ../pwned-folder\n");
    assert_failed_cleanly(&out, "upload folder ../pwned-folder");
    for key in ["../bravo/secret.txt", "../bravo/", "inside/../../bravo/secret.txt", ".."] {
        let out = script(&e.s, "alpha", &format!("download {key} got\n"));
        assert_failed_cleanly(&out, &format!("download {key}"));
        assert!(!e.s.path().join("got").exists(), "download {key} wrote something");
    }
    let after = e.outside_alpha();
    let changed: Vec<_> = after.iter().filter(|(p, c)| before.get(*p) != Some(c)).map(|(p, _)| p).collect();
    assert!(changed.is_empty(), "files outside the bucket changed: {changed:?}");
    let secret = e.home().join("buckets/bravo/secret.txt");
    let copies = files_holding(e.s.path(), &[SECRET], &|p: &Path| p == secret);
    assert!(copies.is_empty(), "the other bucket's secret was copied: {copies:?}");
    assert_no_canary(e.s.path(), "upload and download");
}

#[test]
fn aws_downloads_refuse_keys_that_leave_the_target_folder() {
    let aws = Aws::new("aws-download");
    let bucket = aws.seed.bucket.clone();
    // Keys S3 accepts that would name a path outside a download's target folder.
    let hostile = [
        "p1/../../pwned-escape-1.txt",
        "p2/a/../../../pwned-escape-2.txt",
        "p3//pwned-abs.txt",
        "p4/./pwned-dot.txt",
        "p5/..",
        "p6/.",
    ];
    let mut keys: Vec<String> = hostile.iter().map(|k| k.to_string()).collect();
    keys.push("ok/good.txt".into());
    keys.push("ok/..\\..\\pwned-backslash.txt".into());
    aws.moto.py(&format!(
        "for k in {keys:?}:\n    s3.put_object(Bucket={bucket:?}, Key=k, Body=b'hostile ' + k.encode())\nout = None"
    ));
    let target = aws.s.path().join("deep/target");
    std::fs::create_dir_all(&target).unwrap();
    for prefix in ["p1", "p2/", "p3", "p4", "p5", "p6"] {
        let out = aws.run(&format!("download {prefix} deep/target/out"));
        assert_failed_cleanly(&out, &format!("download {prefix}"));
        assert!(
            error_line(&out).contains("would leave the target folder")
                || error_line(&out).contains("no file name"),
            "{}",
            all(&out)
        );
    }
    for key in ["p5/..", "p6/."] {
        let out = aws.run(&format!("download {key}"));
        assert_failed_cleanly(&out, &format!("download {key}"));
    }
    // A backslash is no separator here: the file keeps it in its name, inside the target.
    aws.ok("download ok deep/target/ok");
    assert!(target.join("ok/..\\..\\pwned-backslash.txt").is_file(), "{:?}", walk(&target));
    std::fs::remove_file(target.join("ok/..\\..\\pwned-backslash.txt")).unwrap();
    assert_no_canary(aws.s.path(), "downloads of hostile keys");
    assert_no_canary(aws.moto.home(), "downloads of hostile keys");

    // `results --download` of a job whose result folder holds such a key.
    aws.s.write("d.txt", "data\n");
    aws.s.write("c.json", "{}\n");
    aws.s.write(
        "submit.json",
        r#"{"dataname": "debuggers/inputs/d.txt", "configname": "debuggers/configs/c.json", "timestamp": "1"}"#,
    );
    aws.ok("launch_devinstance; upload d.txt debuggers/inputs/d.txt; upload c.json debuggers/configs/c.json; submit_job submit.json");
    let result_dir = aws.state()["jobs"][0]["result_dir"].as_str().unwrap().to_string();
    let key = format!("debuggers/{result_dir}/process_results/../../../../../pwned-results.txt");
    aws.moto.py(&format!("s3.put_object(Bucket={bucket:?}, Key={key:?}, Body=b'x')\nout = None"));
    let out = aws.run("results --download deep/target/results");
    assert_failed_cleanly(&out, "results --download");
    assert!(error_line(&out).contains("would leave the target folder"), "{}", all(&out));
    assert!(!target.join("results").exists(), "something was written: {:?}", walk(&target));
    assert_no_canary(aws.s.path(), "results --download");
    aws.ok("terminate_devinstance --force");
}

// =====================================================================================
// 3. ssh key files
// =====================================================================================

#[test]
fn aws_unprotected_or_missing_keys_are_refused_before_ssh_runs() {
    let aws = Aws::new("aws-keys");
    let ssh = FakeSsh::new(aws.s.path());
    let remote = ssh.remote.display().to_string();
    edit_blueprint(&aws_dir(&aws), |d| d["Lambda"]["LambdaConfig"]["WORKING_DIRECTORY"] = json!(remote));
    let key = aws.s.path().join("k.pem");
    std::fs::copy(&aws.seed.key_path, &key).unwrap();
    // No early warning: `launch_devinstance` does not look at the key.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = aws.cmd_with(&[], "launch_devinstance").env("DEVAMI_SSH_KEY", &key).output().unwrap();
    assert!(out.status.success(), "{}", aws.explain(&out));
    assert!(!all(&out).contains("k.pem") && !all(&out).contains("0644"), "{}", all(&out));
    let key_arg = key.display().to_string();
    for mode in [0o644, 0o640, 0o604, 0o660, 0o606, 0o777] {
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
        let out = aws_exec(&aws, &ssh, &["--key", &key_arg], "exec echo hi");
        assert_failed_cleanly(&out, &format!("exec with a key of mode {mode:o}"));
        assert!(
            text(&out.stderr).contains(&format!("{mode:04o}")) && text(&out.stderr).contains("chmod 600"),
            "{}",
            all(&out)
        );
        assert!(ssh.calls().is_empty(), "ssh ran with a key of mode {mode:o}");
    }
    // Through DEVAMI_SSH_KEY too.
    let mut cmd = aws.cmd_with(&[], "exec echo hi");
    ssh.apply(&mut cmd);
    let out = cmd.env("DEVAMI_SSH_KEY", &key).output().unwrap();
    assert_failed_cleanly(&out, "exec with DEVAMI_SSH_KEY of mode 777");
    let missing = aws.s.path().join("no-such-key.pem");
    let out = aws_exec(&aws, &ssh, &["--key", &missing.display().to_string()], "exec echo hi");
    assert_failed_cleanly(&out, "exec with a missing key");
    assert!(text(&out.stderr).contains("cannot read the ssh key"), "{}", all(&out));
    assert!(text(&out.stderr).contains("no-such-key.pem"), "{}", all(&out));
    assert!(ssh.calls().is_empty(), "ssh ran: {:?}", ssh.calls());
    for mode in [0o600, 0o400] {
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
        let out = aws_exec(&aws, &ssh, &["--key", &key_arg], "exec echo hi");
        assert!(out.status.success(), "mode {mode:o}: {}", aws.explain(&out));
    }
    assert_eq!(ssh.calls().len(), 2);
    // devami reads the key's mode only; it never changes it, nor writes a key of its own.
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o400);
    let pems: Vec<_> =
        walk(aws.s.path()).into_iter().filter(|p| p.extension().is_some_and(|x| x == "pem")).collect();
    assert_eq!(pems, vec![key.clone()], "key files appeared");
    aws.ok("terminate_devinstance --force");
}

// =====================================================================================
// 4. Secrets
// =====================================================================================

const CANARY_KEY_ID: &str = "AKIACANARY7DEVAMI0001";
const CANARY_SECRET: &str = "canary-secret-Zq9vW2xT8bY4nR1mK6pL";
const CANARY_TOKEN: &str = "canary-session-token-Hj3kS5dF7gA9";
const CANARIES: &[&str] = &[CANARY_KEY_ID, CANARY_SECRET, CANARY_TOKEN];

fn with_canary_credentials(cmd: &mut Command) -> &mut Command {
    cmd.env("AWS_ACCESS_KEY_ID", CANARY_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", CANARY_SECRET)
        .env("AWS_SESSION_TOKEN", CANARY_TOKEN)
}

fn assert_output_clean(out: &Output, context: &str) {
    let t = all(out);
    for c in CANARIES {
        assert!(!t.contains(c), "{context}: a credential is in the output:\n{t}");
    }
}

/// Every file devami may have written (scratch folder, its devami home and history, recordings,
/// the fake HOME) and the blueprint's git history: no canary.
fn assert_files_clean(dirs: &[&Path]) {
    for dir in dirs {
        let hits = files_holding(dir, CANARIES, &|p: &Path| p.ends_with("moto.log"));
        assert!(hits.is_empty(), "credentials written to files: {hits:?}");
        for git in walk(dir).into_iter().filter(|p| p.ends_with(".git/HEAD")) {
            let repo = git.parent().unwrap().parent().unwrap();
            let log = Command::new("git").arg("-C").arg(repo).args(["log", "--all", "-p"]).output().unwrap();
            for c in CANARIES {
                assert!(
                    !text(&log.stdout).contains(c),
                    "a credential is in the git history of {}",
                    repo.display()
                );
            }
        }
    }
}

#[test]
fn aws_credentials_never_reach_output_files_history_or_recordings() {
    let aws = Aws::new("aws-secrets");
    aws.s.write("d.txt", "data\n");
    aws.s.write("c.json", "{}\n");
    aws.s.write(
        "submit.json",
        r#"{"dataname": "debuggers/inputs/d.txt", "configname": "debuggers/configs/c.json", "timestamp": "1"}"#,
    );
    let run = |extra: &[&str], commands: &str| -> Output {
        let mut cmd = aws.cmd_with(extra, commands);
        with_canary_credentials(&mut cmd);
        let out = cmd.output().unwrap();
        assert_output_clean(&out, commands);
        no_panic(&out);
        out
    };
    let session = "status; launch_devinstance; get_ip; get_lifetime; upload d.txt debuggers/inputs/d.txt; \
                   upload c.json debuggers/configs/c.json; ls; submit_job submit.json; job_status; job_output; \
                   jobs; create_devami secret-test-image; update_blueprint --init; history";
    let out = run(&["--record", "session.devami"], session);
    assert!(out.status.success(), "{}", aws.explain(&out));
    // Failing commands, recorded as a tutorial skeleton.
    let out = run(
        &["--record", "session.md", "--keep-going"],
        "download no/such/key; assign_instance i-0000000000000dead; get_ip",
    );
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));

    // The interactive shell, with its history file.
    let mut cmd = aws.s.cmd(&["--backend", "aws", &aws.name]);
    clean_aws_env(&mut cmd);
    cmd.envs(aws.moto.env()).env("HOME", aws.moto.home()).env("TERM", "xterm").env("NO_COLOR", "1");
    with_canary_credentials(&mut cmd);
    cmd.stdin(std::process::Stdio::inherit());
    let mut p = rexpect::session::spawn_command(cmd, Some(30_000)).expect("spawn devami in a pty");
    p.exp_string("Ctrl-D or `exit` leaves").unwrap();
    // Each line is typed at a fresh prompt, once the previous command's output is there: text
    // typed while a command runs can be taken by the line editor's terminal queries.
    for (line, done) in [
        ("status", "last known state"),
        ("get_instance_state", "running (code 16)"),
        ("ls debuggers/", "debuggers/inputs/d.txt"),
        ("terminate_devinstance --force", "terminated"),
    ] {
        p.exp_string("]> ").unwrap();
        p.send(line).unwrap();
        p.send("\r").unwrap();
        p.flush().unwrap();
        p.exp_string(done).unwrap();
    }
    p.send("exit\r").unwrap();
    p.flush().unwrap();
    let rest = p.exp_eof().unwrap();
    for c in CANARIES {
        assert!(!rest.contains(c), "a credential is on the terminal:\n{rest}");
    }
    let history = std::fs::read_to_string(aws.s.path().join(".history")).unwrap();
    assert!(history.contains("get_instance_state"), "the history was not written: {history}");
    let mode = std::fs::metadata(aws.s.path().join(".history")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the history file is readable by others");

    // Wrong credentials: an account that checks them (moto with authentication on).
    let strict = Moto::start_with_env(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]);
    for commands in ["launch_devinstance", "ls", "status; get_instance_state"] {
        let mut cmd = aws.cmd_with(&["--record", "denied.devami", "--endpoint-url", &strict.url], commands);
        with_canary_credentials(&mut cmd);
        let out = cmd.output().unwrap();
        no_panic(&out);
        assert_output_clean(&out, &format!("{commands} with refused credentials"));
    }
    let mut cmd = aws.cmd_with(&["--endpoint-url", &strict.url], "launch_devinstance");
    with_canary_credentials(&mut cmd);
    let out = cmd.output().unwrap();
    assert_failed_cleanly(&out, "launch_devinstance with refused credentials");

    // The local backend, given the same environment, keeps it out of everything too.
    aws.s.init("local-secrets");
    let mut cmd = aws.s.cmd(&[
        "local-secrets",
        "-c",
        "launch_devinstance ubuntu22; exec env; terminate_devinstance --force",
    ]);
    with_canary_credentials(&mut cmd).env("AWS_PROFILE", "canary-profile");
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", all(&out));
    assert_output_clean(&out, "local exec env");
    assert!(!all(&out).contains("canary-profile"), "the profile reached the instance:\n{}", all(&out));

    for f in ["session.devami", "session.md", "denied.devami", ".history"] {
        assert!(aws.s.path().join(f).is_file(), "{f} was not written");
    }
    assert_files_clean(&[aws.s.path(), aws.moto.home()]);
}

#[test]
fn submit_and_config_contents_are_not_echoed_into_logs() {
    const IN_SUBMIT: &str = "SUBMIT-FILE-CANARY-7731";
    const IN_CONFIG: &str = "CONFIG-FILE-CANARY-5519";
    let s = local_with_instance("echoes");
    let dir = s.path().join("echoes");
    edit_blueprint(&dir, |d| {
        d["Lambda"]["LambdaConfig"]["COMMAND"] = json!(r#"cd ~; echo job ran; true "{}" "{}" "{}" "{}""#);
        d["Lambda"]["LambdaConfig"]["SSM_TIMEOUT"] = json!(60);
    });
    s.write("d.txt", "data\n");
    s.write("c.json", format!("{{\"password\": \"{IN_CONFIG}\"}}\n"));
    s.write(
        "submit.json",
        format!(
            r#"{{"dataname": "debuggers/inputs/d.txt", "configname": "debuggers/configs/c.json", "timestamp": "1", "note": "{IN_SUBMIT}"}}"#
        ),
    );
    let broken = [
        format!(r#"{{"dataname": {{"secret": "{IN_SUBMIT}"}}, "configname": "c", "timestamp": "1"}}"#),
        format!(r#"{{"dataname": "a", "configname": ["{IN_SUBMIT}"], "timestamp": "1"}}"#),
        format!(r#"{{"note": "{IN_SUBMIT}", oops}}"#),
        format!(r#"["{IN_SUBMIT}"]"#),
        format!(r#"{{"dataname": "a", "configname": "c", "timestamp": {{"t": "{IN_SUBMIT}"}}}}"#),
    ];
    let mut lines =
        String::from("upload d.txt debuggers/inputs/d.txt\nupload c.json debuggers/configs/c.json\n");
    lines.push_str("submit_job submit.json\njob_status --wait\njob_output\njobs\nstatus\nhistory\nresults\n");
    let out = s.run_with_stdin(&["echoes", "--record", "rec.devami"], lines.as_bytes());
    assert!(out.status.success(), "{}", all(&out));
    assert!(all(&out).contains("job ran"), "{}", all(&out));
    for (i, b) in broken.iter().enumerate() {
        let name = format!("broken{i}.json");
        s.write(&name, b);
        let out = s
            .run_with_stdin(&["echoes", "--record", "rec.devami"], format!("submit_job {name}\n").as_bytes());
        assert_failed_cleanly(&out, &format!("submit_job {b}"));
        assert!(!all(&out).contains(IN_SUBMIT), "the submit file is echoed:\n{}", all(&out));
    }
    let t = all(&out);
    assert!(!t.contains(IN_SUBMIT) && !t.contains(IN_CONFIG), "{t}");
    // The files that may hold them are the ones written on purpose: the local files and the
    // uploaded config object (and its s3s-fs checksum sidecar, which holds no content).
    let written: Vec<PathBuf> = vec![
        s.path().join("c.json"),
        s.path().join("submit.json"),
        s.path().join(".devami-home/buckets/echoes/debuggers/configs/c.json"),
    ];
    let hits: Vec<_> = files_holding(s.path(), &[IN_SUBMIT, IN_CONFIG], &|p: &Path| {
        written.iter().any(|w| w == p)
            || p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("broken"))
    });
    assert!(hits.is_empty(), "contents echoed into: {hits:?}");
    ok_script(&s, "echoes", "terminate_devinstance --force\n");
}

// =====================================================================================
// 5. Name validation
// =====================================================================================

#[test]
fn init_accepts_only_bucket_safe_names() {
    let s = Scratch::new();
    let long63 = format!("a{}", "b".repeat(62));
    let long64 = format!("a{}", "b".repeat(63));
    for name in ["abc", "a-b", "0ab", "ab9", long63.as_str(), "my-analysis-2"] {
        let out = s.run(&["init", name]);
        assert!(out.status.success(), "init {name:?} refused:\n{}", all(&out));
        assert!(s.path().join(name).join("stack_config_template.json").is_file());
    }
    for name in [
        "",
        "ab",
        long64.as_str(),
        "-ab",
        "ab-",
        "Abc",
        "a_b",
        "a.b",
        "a b",
        "../x",
        "..",
        ".",
        "a/b",
        "/abs",
        "x$(touch pwned-init)",
        "x`touch pwned-init2`",
        "x;touch pwned-init3",
        "x\ntouch pwned-init4",
        "ébc",
    ] {
        let out = s.run(&["init", name]);
        no_panic(&out);
        assert_ne!(out.status.code(), Some(0), "init {name:?} was accepted:\n{}", all(&out));
    }
    let made: Vec<String> = std::fs::read_dir(s.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert_eq!(made.len(), 6, "init created folders for refused names: {made:?}");
    assert_no_canary(s.path(), "init names");
}

/// Finding 3 (fixed): `init` followed `^[a-z0-9-]+$` and 3 to 63 characters only, so it created
/// blueprints whose PipelineName S3 refuses (a reserved prefix or suffix), which `check` then
/// reported as an error although `init` promises a blueprint that passes `check`.
#[test]
fn every_name_init_accepts_passes_check() {
    let s = Scratch::new();
    let mut failures = Vec::new();
    for name in ["xn--abc", "sthree-abc", "amzn-s3-demo-abc", "abc-s3alias", "abc--ol-s3", "abc--x-s3"] {
        let out = s.run(&["init", name]);
        if !out.status.success() {
            continue;
        }
        let check = s.run(&["check", name]);
        if !check.status.success() {
            failures.push(format!(
                "{name}: {}",
                text(&check.stdout).lines().find(|l| l.contains("PipelineName")).unwrap_or("")
            ));
        }
    }
    assert!(failures.is_empty(), "init created blueprints that fail `check`:\n{}", failures.join("\n"));
}

#[test]
fn check_refuses_pipeline_names_s3_refuses() {
    let s = Scratch::new();
    let dir = s.init("namecheck");
    let long63 = format!("a{}", "b".repeat(62));
    let long64 = format!("a{}", "b".repeat(63));
    for (name, ok) in [
        ("abc", true),
        ("a-b-c", true),
        (long63.as_str(), true),
        ("ab", false),
        (long64.as_str(), false),
        ("Abc", false),
        ("a_b", false),
        ("a.b", false),
        ("a..b", false),
        ("192.168.1.1", false),
        ("-ab", false),
        ("ab-", false),
        ("xn--abc", false),
        ("abc-s3alias", false),
        ("a b", false),
        ("../x", false),
        ("x$(id)", false),
        ("", false),
    ] {
        edit_blueprint(&dir, |d| d["PipelineName"] = json!(name));
        let out = s.run(&["check", "namecheck"]);
        no_panic(&out);
        let errs = text(&out.stdout)
            .lines()
            .any(|l| l.contains("PipelineName") && l.to_lowercase().contains("error"));
        if ok {
            assert!(!errs, "PipelineName {name:?} was refused:\n{}", all(&out));
        } else {
            assert_eq!(out.status.code(), Some(1), "PipelineName {name:?} passed `check`:\n{}", all(&out));
            assert!(text(&out.stdout).contains("PipelineName"), "{name:?}:\n{}", all(&out));
        }
    }
}

#[test]
fn image_names_follow_the_ami_rules_at_the_boundaries() {
    let s = local_with_instance("amirules");
    let dir = s.path().join("amirules");
    let n128 = format!("a{}", "b".repeat(127));
    let n129 = format!("a{}", "b".repeat(128));
    for name in [
        "ab",
        n129.as_str(),
        "",
        "a\tb",
        "ab$",
        "a;b",
        "a`b",
        "a\"b",
        "a\\b",
        "a*b",
        "a:b",
        "a,b",
        "a+b",
        "a=b",
        "a&b",
        "a|b",
        "a<b",
        "a>b",
        "a!b",
        "a#b",
        "a%b",
        "a{b}",
        "a~b",
        "a?b",
        "ébc",
        "a\u{0}b",
        "a\nb",
    ] {
        let out = script(&s, "amirules", &format!("create_devami(name={})\n", py(name)));
        no_panic(&out);
        assert_eq!(out.status.code(), Some(2), "image name {name:?} was accepted:\n{}", all(&out));
    }
    assert!(state(&dir)["images"].as_array().is_none_or(|a| a.is_empty()));
    let names = ["abc", n128.as_str(), "A-Z_0.9 (x) [y] @z/w's"];
    for name in names {
        let out = script(&s, "amirules", &format!("create_devami(name={})\n", py(name)));
        assert!(out.status.success(), "image name {name:?} was refused:\n{}", all(&out));
    }
    let recorded: Vec<String> = state(&dir)["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(recorded, names, "{:#}", state(&dir));
    ok_script(&s, "amirules", "terminate_devinstance --force\n");
}

// =====================================================================================
// 6. The local instance's walls
// =====================================================================================

/// With the developer's home under `/home` (the usual layout), a process of the instance (an
/// `exec` as `ubuntu`, a job as root) sees none of it: not `~/.aws`, not `~/.ssh`, not the devami
/// home; the blueprint folder is there read-only (`$DEVAMI_BLUEPRINT`), and none of the
/// developer's AWS variables or processes are.
#[test]
fn the_instance_hides_the_developers_home_and_credentials() {
    // CI runs as root on a machine with /home; a machine where this fails fails the test.
    let dir = tempfile::Builder::new()
        .prefix("devami-security-")
        .tempdir_in("/home")
        .unwrap_or_else(|e| panic!("cannot create a folder under /home: {e}"));
    let s = Scratch { dir };
    let dev_home = s.path().to_path_buf();
    std::fs::create_dir_all(dev_home.join(".aws")).unwrap();
    std::fs::write(
        dev_home.join(".aws/credentials"),
        format!("[default]\naws_secret_access_key = {CANARY_SECRET}\n"),
    )
    .unwrap();
    std::fs::create_dir_all(dev_home.join(".ssh")).unwrap();
    std::fs::write(dev_home.join(".ssh/id_ed25519"), CANARY_TOKEN).unwrap();
    let bp = s.init("hidden");
    s.write("d.txt", "data\n");
    s.write("c.json", "{}\n");
    s.write(
        "submit.json",
        r#"{"dataname": "debuggers/inputs/d.txt", "configname": "debuggers/configs/c.json", "timestamp": "1"}"#,
    );
    let probe = format!(
        "cat {h}/.aws/credentials {h}/.ssh/id_ed25519 2>/dev/null || echo HOME-HIDDEN; \
         touch {bp}/pwned-from-instance 2>/dev/null || echo BLUEPRINT-READ-ONLY; \
         ls {h}/.devami-home 2>/dev/null || echo DEVAMI-HOME-HIDDEN; \
         echo HOME-LIST $(ls -A /home); env; \
         for p in /proc/[0-9]*; do tr '\\0' '\\n' < $p/environ 2>/dev/null | grep -q {secret} && echo ENVIRON-LEAK $p; done; \
         ps -e -o args= | grep -q '[_]_s3d' && echo HOST-PROCESSES; true",
        h = dev_home.display(),
        bp = bp.display(),
        secret = CANARY_SECRET,
    );
    edit_blueprint(&bp, |d| {
        d["Lambda"]["LambdaConfig"]["COMMAND"] =
            json!(r#"bash /home/ubuntu/probe.sh; true "{}" "{}" "{}" "{}""#);
        d["Lambda"]["LambdaConfig"]["SSM_TIMEOUT"] = json!(60);
    });
    let hex: String = probe.bytes().map(|b| format!("{b:02x}")).collect();
    let lines = format!(
        "launch_devinstance ubuntu22\n\
         exec python3 -c \"import sys; open('/home/ubuntu/probe.sh', 'wb').write(bytes.fromhex(sys.argv[1]))\" {hex}\n\
         upload d.txt debuggers/inputs/d.txt\nupload c.json debuggers/configs/c.json\nexec bash ~/probe.sh\n\
         submit_job submit.json\njob_status --wait\njob_output\nterminate_devinstance --force\n"
    );
    let mut cmd = s.cmd(&["hidden"]);
    with_canary_credentials(&mut cmd).env("HOME", &dev_home).env("AWS_PROFILE", "canary-profile");
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(lines.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let t = all(&out);
    assert!(out.status.success(), "{t}");
    // Both the `exec` and the job.
    for marker in ["HOME-HIDDEN", "BLUEPRINT-READ-ONLY", "DEVAMI-HOME-HIDDEN"] {
        assert_eq!(t.lines().filter(|l| *l == marker).count(), 2, "{marker}:\n{t}");
    }
    // /home inside holds the instance's own home and the way to the blueprint folder (bound
    // read-only at its own path), nothing else of the machine's.
    let top = dev_home
        .strip_prefix("/home")
        .ok()
        .and_then(|p| p.components().next())
        .map(|c| c.as_os_str().to_string_lossy().into_owned());
    let top = top.expect("the developer's home is under /home");
    let marker = format!("HOME-LIST {top} ubuntu");
    assert_eq!(t.lines().filter(|l| **l == *marker).count(), 2, "{marker}:\n{t}");
    let leaks: Vec<&str> =
        t.lines().filter(|l| l.starts_with("ENVIRON-LEAK") || *l == "HOST-PROCESSES").collect();
    assert!(leaks.is_empty(), "the instance sees the machine's processes: {leaks:?}\n{t}");
    for c in CANARIES.iter().chain(&["canary-profile"]) {
        assert!(!t.contains(c), "{c} reached the instance:\n{t}");
    }
    assert!(!bp.join("pwned-from-instance").exists());
}

/// What the container does not do (docs/SECURITY.md, "not defended"): the network is the host's,
/// so an instance reaches every service of the machine on loopback. Its files are its own: a
/// path of the machine is not there to write to.
#[test]
fn the_instance_shares_the_machines_network_but_not_its_files() {
    let s = local_with_instance("open");
    let outside = s.path().join("outside-home");
    std::fs::create_dir_all(&outside).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut got = String::new();
        conn.read_to_string(&mut got).unwrap();
        got
    });
    let out = script(
        &s,
        "open",
        &format!(
            "exec echo hello-from-instance > /dev/tcp/127.0.0.1/{port} && echo CONNECTED\n\
             exec sudo sh -c 'mkdir -p {o} && echo written > {o}/by-instance' && echo WROTE-INSIDE\n",
            o = outside.display()
        ),
    );
    let t = all(&out);
    assert!(t.contains("CONNECTED"), "{t}");
    assert_eq!(server.join().unwrap().trim(), "hello-from-instance");
    assert!(t.contains("WROTE-INSIDE"), "{t}");
    assert!(!outside.join("by-instance").exists(), "a write inside the instance reached the machine");
    ok_script(&s, "open", "terminate_devinstance --force\n");
}

/// Finding 4 (functional; fixed, and kept by the container model): `exec` and `ssh` set
/// `$DEVAMI_BLUEPRINT` so that the blueprint's files can be copied in (the tutorials'
/// `exec cp -r "$DEVAMI_BLUEPRINT/analysis/word-stats" ~/`), so the folder must exist inside the
/// instance even under `/home`, where the instance has a home of its own: the container binds it
/// read-only at its own path.
#[test]
fn exec_sees_the_blueprint_folder_under_home() {
    // CI runs as root on a machine with /home; a machine where this fails fails the test.
    let dir = tempfile::Builder::new()
        .prefix("devami-security-")
        .tempdir_in("/home")
        .unwrap_or_else(|e| panic!("cannot create a folder under /home: {e}"));
    let s = Scratch { dir };
    let bp = s.init("underhome");
    std::fs::write(bp.join("analysis.sh"), "echo analysis\n").unwrap();
    let out = script(
        &s,
        "underhome",
        "launch_devinstance ubuntu22\nexec cp \"$DEVAMI_BLUEPRINT\"/analysis.sh ~/ && echo COPIED\n",
    );
    let _ = script(&s, "underhome", "terminate_devinstance --force\n");
    let t = all(&out);
    assert!(
        out.status.success() && t.contains("COPIED"),
        "the blueprint folder `{}` ($DEVAMI_BLUEPRINT) is not visible to `exec`:\n{t}",
        bp.display()
    );
}

// =====================================================================================
// 7. The local S3 endpoint's exposure
// =====================================================================================

#[test]
fn the_local_endpoint_listens_on_loopback_only() {
    let e = Endpoint::start();
    assert!(std::net::TcpStream::connect(("127.0.0.1", e.port)).is_ok());
    // Bound to 127.0.0.1 itself, not to every address (127.0.0.2 is loopback too, but another address).
    let other = std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 2], e.port)),
        std::time::Duration::from_secs(2),
    );
    assert!(other.is_err(), "the endpoint answers on 127.0.0.2:{}", e.port);
}

/// Finding 2 (fixed): the endpoint served any request signed with its published key pair,
/// whatever `Host` it named. A web page that rebinds its own host name to 127.0.0.1 (DNS
/// rebinding) is same-origin with the endpoint and could sign requests with the published key:
/// it could read, overwrite and delete the local buckets. Requests naming a host other than
/// `127.0.0.1:PORT`, `localhost:PORT` or `[::1]:PORT` are refused.
#[test]
fn the_local_endpoint_refuses_requests_for_other_host_names() {
    let e = Endpoint::start();
    let r = e.raw(&json!([
        {"method": "GET", "path": "/bravo/secret.txt", "host": format!("attacker.example:{}", e.port)},
        {"method": "PUT", "path": "/alpha/pwned-rebound.txt", "host": format!("attacker.example:{}", e.port), "body": "x"},
    ]));
    let served: Vec<_> = r.iter().filter(|x| x["status"] == 200).collect();
    assert!(
        served.is_empty(),
        "requests for host `attacker.example` were served (DNS rebinding): {served:#?}"
    );
}
