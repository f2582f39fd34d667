//! Fixtures for the AWS backend's tests: moto in server mode, a seeded account, and a proxy that
//! makes the emulated cloud slow or faulty.
//!
//! [`Moto::start`] runs `.venv/bin/moto_server` (installed by `bash tests/run.sh`) on a free
//! loopback port and fails the test, never skips it, when moto cannot be started.
//! [`Moto::seed`] runs `seed_moto.py` to create the key pair, security group, instance profile,
//! bucket and SSM parameters a blueprint names. [`Proxy`] runs `moto_proxy.py` in front of moto:
//! it holds instance states and images back for a few seconds (moto changes them at once) and
//! fails chosen calls, so the waits are exercised over real HTTP. Every process is killed on
//! drop, also when the test panics, and dies with the test process (`PR_SET_PDEATHSIG`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::support::root;

/// The test credentials: distinctive, so a test can check they never leak into output or files.
pub const ACCESS_KEY: &str = "AKIADEVAMITEST000001";
pub const SECRET_KEY: &str = "devami-test-secret-never-printed";
pub const REGION: &str = "us-east-1";
/// The SSM parameter the seeded account resolves `ubuntu18` through (moto refuses writes under
/// `/aws/service/`, so the tests point `DEVAMI_ALIAS_PARAM_UBUNTU18` here).
pub const UBUNTU18_PARAM: &str = "/devami-test/ubuntu/18.04/ami-id";

/// How long moto or the proxy may take to answer after being started.
const STARTUP: Duration = Duration::from_secs(20);

/// A program of the repository's virtual environment, or a failure naming the install command.
pub fn venv_bin(name: &str) -> PathBuf {
    let path = root().join(".venv/bin").join(name);
    assert!(
        path.is_file(),
        "{} is missing: run the test command `bash tests/run.sh`, which installs moto[server]==5.2.5, \
         boto3 and awscli into .venv",
        path.display()
    );
    path
}

/// A helper script next to this file.
fn script(name: &str) -> PathBuf {
    root().join("tests/integration").join(name)
}

/// Makes a child die with the thread that spawned it (the test's), even on SIGKILL of the tests.
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec here.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// Removes every inherited AWS setting (and devami's AWS knobs) from a command's environment, so
/// that nothing of the developer's `~/.aws`, profile, region, endpoint or instance role leaks in.
pub fn clean_aws_env(cmd: &mut Command) -> &mut Command {
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("AWS_") || k.starts_with("DEVAMI_ALIAS_PARAM_") || k == "DEVAMI_SSH_KEY" {
            cmd.env_remove(&key);
        }
    }
    cmd
}

/// A free TCP port on 127.0.0.1 (free when asked; the caller retries if it is taken meanwhile).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind a free port").local_addr().expect("local address").port()
}

/// A minimal HTTP/1.0 exchange with a loopback server: `(status, body)`.
pub fn http(port: u16, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok((status, body.to_string()))
}

/// moto in server mode on a free loopback port, with a folder for its log, the ssh key and the
/// (deliberately absent) AWS config files. Killed on drop.
pub struct Moto {
    pub url: String,
    pub port: u16,
    child: Child,
    home: tempfile::TempDir,
}

impl Moto {
    /// Starts moto and waits until it answers; panics with what went wrong otherwise.
    pub fn start() -> Moto {
        Moto::start_with_env(&[])
    }

    /// [`Moto::start`] with extra environment variables for moto itself (its `MOTO_*` settings).
    pub fn start_with_env(env: &[(&str, &str)]) -> Moto {
        let bin = venv_bin("moto_server");
        let home = tempfile::tempdir().expect("create a folder for moto");
        let log_path = home.path().join("moto.log");
        let mut last = String::new();
        // A port found free may be taken before moto binds it: then try another one.
        for _attempt in 0..3 {
            let port = free_port();
            let log = std::fs::File::create(&log_path).expect("create moto's log");
            let mut cmd = Command::new(&bin);
            cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone the log file"))
                .stderr(log);
            clean_aws_env(&mut cmd);
            cmd.envs(env.iter().copied());
            die_with_parent(&mut cmd);
            let mut child = cmd.spawn().unwrap_or_else(|e| {
                panic!("cannot start {}: {e}; run the test command `bash tests/run.sh`", bin.display())
            });
            match wait_until_up(&mut child, port, &log_path) {
                Ok(()) => return Moto { url: format!("http://127.0.0.1:{port}"), port, child, home },
                Err(why) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last = why;
                    if !last.contains("Address already in use") {
                        break;
                    }
                }
            }
        }
        panic!(
            "moto could not be started (the test command `bash tests/run.sh` installs moto[server]==5.2.5 \
             into .venv): {last}"
        );
    }

    /// moto's output so far (its request log and tracebacks), for assertion messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.home.path().join("moto.log")).unwrap_or_default()
    }

    /// A folder private to this moto (key file, empty AWS config files).
    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// Where [`Moto::seed`] writes the key pair's private key by default (mode 600).
    pub fn key_path(&self) -> PathBuf {
        self.home().join("devami-test-key.pem")
    }

    /// Creates what `seed` names in moto and returns what was made.
    pub fn seed(&self, seed: &Seed) -> Seeded {
        let key_path = seed.key_path.clone().unwrap_or_else(|| self.key_path());
        let spec = serde_json::json!({
            "key_name": seed.key_name,
            "key_path": key_path,
            "security_group": seed.security_group,
            "instance_profile": seed.instance_profile,
            "bucket": seed.bucket,
            "ami_name_like": "ubuntu",
            "parameters": seed.parameters.iter().cloned().collect::<BTreeMap<_, _>>(),
        });
        let mut cmd = Command::new(venv_bin("python"));
        cmd.arg(script("seed_moto.py")).arg(&self.url).arg(spec.to_string());
        clean_aws_env(&mut cmd);
        let out = cmd.output().expect("run seed_moto.py");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "seed_moto.py failed ({}):\n{stdout}\n{}\nmoto's log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("seed_moto.py printed {stdout:?}: {e}"))
    }

    /// The environment devami needs to use this moto: test credentials, region, endpoint, the
    /// seeded alias parameter, the ssh key, and AWS config files that do not exist (so nothing of
    /// the developer's `~/.aws` is read). Apply after [`clean_aws_env`].
    pub fn env(&self) -> Vec<(&'static str, String)> {
        self.env_for(&self.url)
    }

    /// [`Moto::env`] with another endpoint (a [`Proxy`] in front of this moto).
    pub fn env_for(&self, endpoint: &str) -> Vec<(&'static str, String)> {
        let home = self.home().display().to_string();
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_DEFAULT_REGION", REGION.into()),
            ("AWS_REGION", REGION.into()),
            ("AWS_ENDPOINT_URL", endpoint.into()),
            ("AWS_CONFIG_FILE", format!("{home}/no-aws-config")),
            ("AWS_SHARED_CREDENTIALS_FILE", format!("{home}/no-aws-credentials")),
            // Never ask an instance metadata service (a CI runner on EC2 has real credentials).
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
            ("DEVAMI_ALIAS_PARAM_UBUNTU18", UBUNTU18_PARAM.into()),
            ("DEVAMI_SSH_KEY", self.key_path().display().to_string()),
        ]
    }

    /// Runs Python with boto3 clients `ec2`, `s3`, `ssm`, `sts`, `iam` on this moto; `code` sets
    /// `out`, which comes back as JSON (datetimes as strings).
    pub fn py(&self, code: &str) -> serde_json::Value {
        let program = format!(
            "import json, sys\nsys.path.insert(0, {dir:?})\nfrom seed_moto import clients\n\
             _c = clients({url:?})\nec2, s3, ssm, sts, iam = _c['ec2'], _c['s3'], _c['ssm'], _c['sts'], _c['iam']\n\
             out = None\n{code}\nprint(json.dumps(out, default=str))\n",
            dir = script("").display().to_string(),
            url = self.url,
        );
        let mut cmd = Command::new(venv_bin("python"));
        cmd.arg("-c").arg(&program);
        clean_aws_env(&mut cmd);
        let out = cmd.output().expect("run python");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "python failed ({}):\n{code}\n{}\n{stdout}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("python printed {stdout:?}: {e}"))
    }
}

/// Polls `GET /moto-api/` until moto answers 200; `Err` with its output if it exits or takes
/// longer than [`STARTUP`].
fn wait_until_up(child: &mut Child, port: u16, log_path: &Path) -> Result<(), String> {
    let start = Instant::now();
    let log = || std::fs::read_to_string(log_path).unwrap_or_default();
    loop {
        if let Ok((200, _)) = http(port, "GET", "/moto-api/", "") {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("moto exited with {status}; its output:\n{}", log()));
        }
        if start.elapsed() > STARTUP {
            return Err(format!("no answer on port {port} within {STARTUP:?}; its output:\n{}", log()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What to create in moto: named as the blueprint names them.
#[derive(Debug, Clone)]
pub struct Seed {
    pub key_name: String,
    /// Where to write the private key (default: [`Moto::key_path`]).
    pub key_path: Option<PathBuf>,
    pub security_group: String,
    pub instance_profile: String,
    pub bucket: String,
    /// SSM parameters to create: name and value, `<AMI>` standing for the chosen image.
    pub parameters: Vec<(String, String)>,
}

impl Seed {
    /// The names `devami init` writes into a blueprint, with `bucket` as the PipelineName and the
    /// `ubuntu18` test parameter pointing at the chosen image.
    pub fn for_bucket(bucket: &str) -> Seed {
        Seed {
            key_name: "testkeystack-custom-dev-key-pair".into(),
            key_path: None,
            security_group: "testsgstack-SecurityGroupDev-1NQJIDBJG16KK".into(),
            instance_profile: "SSMRole".into(),
            bucket: bucket.into(),
            parameters: vec![(UBUNTU18_PARAM.into(), "<AMI>".into())],
        }
    }
}

/// What [`Moto::seed`] created (the JSON summary of `seed_moto.py`).
#[derive(Debug, Clone, Deserialize)]
#[allow(dead_code)]
pub struct Seeded {
    /// One of moto's built-in Ubuntu images, available.
    pub ami: String,
    pub ami_name: String,
    pub root_device_name: Option<String>,
    pub key_name: String,
    pub key_path: PathBuf,
    pub security_group: String,
    pub security_group_id: String,
    pub instance_profile: String,
    pub instance_profile_arn: String,
    pub bucket: String,
    pub parameters: BTreeMap<String, String>,
    /// `GetCallerIdentity`'s ARN with the test credentials (the expected `OwnerArn` tag).
    pub caller_arn: String,
    pub al2023_parameter: String,
    /// The image moto serves under the Amazon Linux 2023 public parameter, if it serves one.
    pub al2023: Option<String>,
}

/// One call the proxy forwarded or failed on purpose.
#[derive(Debug, Clone, Deserialize)]
#[allow(dead_code)]
pub struct Call {
    /// Epoch seconds.
    pub t: f64,
    /// The service from the request's SigV4 scope (`ec2`, `ssm`, `s3`, `sts`).
    pub service: String,
    /// The API action (`DescribeInstances`), or `METHOD /path` for S3.
    pub action: String,
    /// moto's HTTP status, or `"injected"` for a failure made by a rule.
    pub status: serde_json::Value,
}

/// `moto_proxy.py` in front of moto. Rules (see the script): `hold_instances`, `hold_status`,
/// `hold_images` (seconds) and `failures` (a list of calls to fail). Killed on drop.
pub struct Proxy {
    pub url: String,
    pub port: u16,
    child: Option<Child>,
    _stdout: Option<ChildStdout>,
    log_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Proxy {
    /// Starts a proxy to `target` on a free port with these rules.
    pub fn start(target: &str, rules: serde_json::Value) -> Proxy {
        Proxy::spawn(target, None, rules)
    }

    /// Starts a proxy on a given port (to replace one that was killed).
    pub fn start_on(target: &str, port: u16, rules: serde_json::Value) -> Proxy {
        Proxy::spawn(target, Some(port), rules)
    }

    fn spawn(target: &str, port: Option<u16>, rules: serde_json::Value) -> Proxy {
        let dir = tempfile::tempdir().expect("create a folder for the proxy");
        let log_path = dir.path().join("proxy.log");
        let log = std::fs::File::create(&log_path).expect("create the proxy's log");
        let mut cmd = Command::new(venv_bin("python"));
        cmd.arg(script("moto_proxy.py")).arg(target).arg("--rules").arg(rules.to_string());
        if let Some(p) = port {
            cmd.arg("--port").arg(p.to_string());
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(log);
        clean_aws_env(&mut cmd);
        die_with_parent(&mut cmd);
        let mut child = cmd.spawn().expect("start moto_proxy.py");
        let stdout = child.stdout.take().expect("the proxy's stdout");
        // The first line is {"port": N}; read it on a thread so that a stuck proxy is a failure.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = tx.send((line, reader.into_inner()));
        });
        let mut proxy =
            Proxy { url: String::new(), port: 0, child: Some(child), _stdout: None, log_path, _dir: dir };
        let (line, stdout) = match rx.recv_timeout(STARTUP) {
            Ok(x) => x,
            Err(_) => panic!("the test proxy did not start within {STARTUP:?}:\n{}", proxy.log()),
        };
        let parsed: serde_json::Value = serde_json::from_str(line.trim()).unwrap_or_else(|_| {
            panic!("the test proxy did not start (first line {line:?}):\n{}", proxy.log())
        });
        proxy.port = parsed["port"].as_u64().expect("port") as u16;
        proxy.url = format!("http://127.0.0.1:{}", proxy.port);
        proxy._stdout = Some(stdout);
        proxy
    }

    /// The proxy's own log (one line per request, tracebacks).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Merges `rules` into the proxy's rules.
    pub fn set_rules(&self, rules: serde_json::Value) {
        let (status, body) =
            http(self.port, "POST", "/__proxy/rules", &rules.to_string()).expect("reach the proxy");
        assert_eq!(status, 200, "setting proxy rules failed: {body}");
    }

    /// Every call the proxy has seen, oldest first.
    pub fn calls(&self) -> Vec<Call> {
        let (status, body) = http(self.port, "GET", "/__proxy/log", "").expect("reach the proxy");
        assert_eq!(status, 200, "reading the proxy log failed: {body}");
        serde_json::from_str(&body).expect("the proxy log is JSON")
    }

    /// How many calls of `action` the proxy has seen.
    pub fn count(&self, action: &str) -> usize {
        self.calls().iter().filter(|c| c.action == action).count()
    }

    /// Kills the proxy: the endpoint stops answering (connections are refused).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.kill();
    }
}
