//! The AWS backend end to end through the binary, against moto in server mode (`moto.rs`).
//!
//! Every test starts its own moto (about a second) and seeds it with what its blueprint names, so
//! tests share nothing and run in parallel. devami runs with `--backend aws`, the test
//! credentials and the endpoint in its environment, and nothing of the developer's AWS setup
//! (`clean_aws_env`, a private HOME). What devami did is checked independently with boto3.
//! moto changes EC2 states and images at once and answers every SSM command with Success, so the
//! waits and the job states are exercised through `moto_proxy.py`, which holds them back.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::moto::{ACCESS_KEY, Moto, Proxy, REGION, SECRET_KEY, Seed, Seeded, clean_aws_env};
use crate::support::{
    Background, Scratch, all, assert_failed_cleanly, error_line, no_panic, poll, read_state, text,
};

/// A scratch folder with a blueprint named like its bucket, and a seeded moto behind it.
pub(crate) struct Aws {
    pub(crate) s: Scratch,
    pub(crate) moto: Moto,
    pub(crate) seed: Seeded,
    pub(crate) name: String,
}

impl Aws {
    /// moto, seeded for a blueprint `name` (also the bucket) that `devami init` made and that
    /// names the seeded image, key pair, security group and instance profile.
    pub(crate) fn new(name: &str) -> Aws {
        let moto = Moto::start();
        let seed = moto.seed(&Seed::for_bucket(name));
        let s = Scratch::new();
        let dir = s.init(name);
        let path = dir.join("stack_config_template.json");
        let mut doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        doc["PipelineName"] = seed.bucket.clone().into();
        doc["REGION"] = REGION.into();
        let lc = &mut doc["Lambda"]["LambdaConfig"];
        lc["AMI"] = seed.ami.clone().into();
        lc["INSTANCE_TYPE"] = "t2.micro".into();
        lc["KEY_NAME"] = seed.key_name.clone().into();
        lc["SECURITY_GROUPS"] = seed.security_group.clone().into();
        lc["IAM_ROLE"] = seed.instance_profile.clone().into();
        lc["REGION"] = REGION.into();
        lc["WORKING_DIRECTORY"] = "/home/ubuntu".into();
        lc["SSM_TIMEOUT"] = 3600.into();
        std::fs::write(&path, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
        Aws { s, moto, seed, name: name.to_string() }
    }

    /// devami on this blueprint with `--backend aws`, `extra` global options and `commands`, in an
    /// environment that reaches moto (or `endpoint`) and nothing else.
    pub(crate) fn cmd_with(&self, extra: &[&str], commands: &str) -> Command {
        let mut args = vec!["--backend", "aws"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[&self.name, "-c", commands]);
        let mut c = self.s.cmd(&args);
        clean_aws_env(&mut c);
        c.envs(self.moto.env()).env("HOME", self.moto.home());
        c
    }

    pub(crate) fn run_with(&self, extra: &[&str], commands: &str) -> Output {
        self.cmd_with(extra, commands).output().expect("run devami")
    }

    pub(crate) fn run(&self, commands: &str) -> Output {
        self.run_with(&[], commands)
    }

    /// Runs `commands`, asserts success and returns stdout and stderr together.
    pub(crate) fn ok_with(&self, extra: &[&str], commands: &str) -> String {
        let out = self.run_with(extra, commands);
        assert!(out.status.success(), "`{commands}` failed ({}):\n{}", out.status, self.explain(&out));
        no_panic(&out);
        all(&out)
    }

    pub(crate) fn ok(&self, commands: &str) -> String {
        self.ok_with(&[], commands)
    }

    /// Runs `commands`, asserts the exit status 1 of a refused command and one `error:` line.
    pub(crate) fn fails(&self, commands: &str) -> Output {
        let out = self.run(commands);
        assert_failed_cleanly(&out, commands);
        out
    }

    /// devami's output and the end of moto's log, for assertion messages.
    pub(crate) fn explain(&self, out: &Output) -> String {
        let log = self.moto.log();
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!("{}\n--- moto's log (end) ---\n{}", all(out), tail.join("\n"))
    }

    pub(crate) fn state_path(&self) -> PathBuf {
        self.s.path().join(&self.name).join(".devami/state.json")
    }

    /// The session state, `Null` when there is none.
    pub(crate) fn state(&self) -> Value {
        read_state(&self.state_path())
    }

    /// The current instance of the session.
    pub(crate) fn instance_id(&self) -> String {
        let st = self.state();
        st["instance"]
            .as_str()
            .unwrap_or_else(|| panic!("no current instance in state.json: {st}"))
            .to_string()
    }

    /// The blueprint as it is on disk.
    pub(crate) fn blueprint(&self) -> Value {
        let path = self.s.path().join(&self.name).join("stack_config_template.json");
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    /// What EC2 says about an instance and its volumes (boto3, straight to moto).
    pub(crate) fn describe(&self, id: &str) -> Value {
        self.moto.py(&format!(
            r#"
r = ec2.describe_instances(InstanceIds=[{id:?}])["Reservations"][0]["Instances"][0]
vols = [m["Ebs"]["VolumeId"] for m in r.get("BlockDeviceMappings", []) if "Ebs" in m]
vt = {{}}
if vols:
    for v in ec2.describe_volumes(VolumeIds=vols)["Volumes"]:
        vt[v["VolumeId"]] = {{t["Key"]: t["Value"] for t in v.get("Tags", [])}}
out = {{
    "state": r["State"]["Name"],
    "image": r["ImageId"],
    "type": r["InstanceType"],
    "key": r.get("KeyName"),
    "groups": [g["GroupName"] for g in r.get("SecurityGroups", [])],
    "profile": (r.get("IamInstanceProfile") or {{}}).get("Arn"),
    "ip": r.get("PublicIpAddress"),
    "tags": {{t["Key"]: t["Value"] for t in r.get("Tags", [])}},
    "volumes": vt,
}}
"#
        ))
    }

    /// Every instance moto knows, with its state.
    pub(crate) fn all_instances(&self) -> Value {
        self.moto.py(r#"
out = [{"id": i["InstanceId"], "state": i["State"]["Name"], "image": i["ImageId"]}
       for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]
"#)
    }

    /// Starts devami in the background with its output going to files.
    pub(crate) fn spawn_with(&self, extra: &[&str], commands: &str) -> Background {
        Background::spawn(self.cmd_with(extra, commands), self.s.path(), commands)
    }
}

/// The number N in "Will be stopped in N minutes".
fn minutes_left(out: &str) -> i64 {
    let rest = out.split("Will be stopped in ").nth(1).unwrap_or_else(|| panic!("no lifetime in:\n{out}"));
    rest.split(' ').next().unwrap().parse().unwrap_or_else(|_| panic!("no minutes in:\n{out}"))
}

fn assert_launch_tags(aws: &Aws, d: &Value, timeout: &str) {
    let expected = json!({"PriceTracking": "On", "Timeout": timeout, "OwnerArn": aws.seed.caller_arn});
    for (k, v) in expected.as_object().unwrap() {
        assert_eq!(&d["tags"][k], v, "instance tag {k}: {d:#}");
    }
    let volumes = d["volumes"].as_object().expect("volumes");
    assert!(!volumes.is_empty(), "the instance has no volume: {d:#}");
    for (vol, tags) in volumes {
        for k in ["PriceTracking", "OwnerArn"] {
            assert_eq!(tags[k], expected[k], "volume {vol} tag {k}: {d:#}");
        }
        assert!(tags.get("Timeout").is_some(), "volume {vol} has no Timeout tag: {d:#}");
    }
}

#[test]
fn the_whole_development_loop_against_moto() {
    let aws = Aws::new("loop-test");

    // Launch from the blueprint's image.
    let out = aws.ok("launch_devinstance");
    for expected in
        ["checking image is available...", "Instance starting up: please wait", "instance running at "]
    {
        assert!(out.contains(expected), "launch output lacks {expected:?}:\n{out}");
    }
    let id = aws.instance_id();
    assert!(id.starts_with("i-"), "{id}");
    assert!(out.contains(&format!("Instance {id} is running")), "{out}");
    let st = aws.state();
    assert_eq!(st["backend"], "aws", "{st:#}");
    assert_eq!(st["instances"][0]["id"], id.as_str(), "{st:#}");

    // What EC2 got: the blueprint's image, type, key, group, profile, and the tags on both.
    let d = aws.describe(&id);
    assert_eq!(d["state"], "running", "{d:#}");
    assert_eq!(d["image"], aws.seed.ami.as_str(), "{d:#}");
    assert_eq!(d["type"], "t2.micro", "{d:#}");
    assert_eq!(d["key"], aws.seed.key_name.as_str(), "{d:#}");
    assert_eq!(d["groups"], json!([aws.seed.security_group]), "{d:#}");
    assert_eq!(d["profile"], aws.seed.instance_profile_arn.as_str(), "{d:#}");
    assert_launch_tags(&aws, &d, "60");
    assert_eq!(d["volumes"].as_object().unwrap().values().next().unwrap()["Timeout"], "60", "{d:#}");
    if let Some(ip) = d["ip"].as_str() {
        assert!(out.contains(&format!("instance running at {ip}")), "{out}");
        assert!(aws.ok("get_ip").contains(ip));
    }
    let out = aws.ok("check_running; check_clear");
    assert!(out.contains(&format!("Instance {id} exists and is active, safe to test")), "{out}");
    assert!(out.contains("not safe to deploy another"), "{out}");

    // Stop, start with a new lifetime, read and extend it.
    let out = aws.ok("stop_devinstance");
    assert!(out.contains("Instance is now in state: stopped"), "{out}");
    assert_eq!(aws.describe(&id)["state"], "stopped");
    let out = aws.ok("start_devinstance --timeout 100");
    assert!(out.contains("Instance is now in state: running"), "{out}");
    let d = aws.describe(&id);
    assert_eq!(d["state"], "running", "{d:#}");
    assert_eq!(d["tags"]["Timeout"], "100", "start resets the lifetime: {d:#}");
    let out = aws.ok("get_lifetime");
    assert!(out.contains("Instance has been on for "), "{out}");
    let left = minutes_left(&out);
    assert!((95..=100).contains(&left), "{left} minutes left of 100:\n{out}");
    let out = aws.ok("extend_lifetime 10");
    assert!(out.contains("110"), "{out}");
    assert_eq!(aws.describe(&id)["tags"]["Timeout"], "110");

    // Save the image, record it in the blueprint, terminate.
    let out = aws.ok("create_devami my-image");
    let st = aws.state();
    let image = st["images"][0]["id"].as_str().unwrap_or_else(|| panic!("no image in state: {st:#}\n{out}"));
    assert!(image.starts_with("ami-"), "{image}");
    assert_eq!(st["images"][0]["name"], "my-image", "{st:#}");
    assert_eq!(st["instance_saved"], true, "{st:#}");
    let img = aws.moto.py(&format!(
        r#"i = ec2.describe_images(ImageIds=[{image:?}])["Images"][0]
out = {{"state": i["State"], "name": i["Name"], "source": i.get("SourceInstanceId")}}"#
    ));
    assert_eq!(img["state"], "available", "{img}");
    assert_eq!(img["name"], "my-image", "{img}");
    assert_eq!(img["source"], id.as_str(), "{img}");

    let out = aws.ok("update_blueprint --init");
    assert!(out.contains(&format!("Blueprint updated with ami {image}")), "{out}");
    assert_eq!(aws.blueprint()["Lambda"]["LambdaConfig"]["AMI"], image);

    let out = aws.ok("terminate_devinstance");
    assert!(out.contains("Instance is now in state: terminated"), "{out}");
    assert_eq!(aws.describe(&id)["state"], "terminated");

    // The credentials never reach the output, the session files or the history.
    let out = aws.ok("status; history");
    assert!(!out.contains(SECRET_KEY) && !out.contains(ACCESS_KEY), "{out}");
    let mut stack = vec![aws.s.path().to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = entry.path();
            if p.is_dir() {
                if !p.ends_with(".git") {
                    stack.push(p);
                }
            } else if let Ok(t) = std::fs::read(&p) {
                let t = String::from_utf8_lossy(&t);
                assert!(!t.contains(SECRET_KEY), "the secret key is in {}", p.display());
                assert!(!t.contains(ACCESS_KEY), "the access key id is in {}", p.display());
            }
        }
    }
}

#[test]
fn terminate_without_an_image_and_a_second_launch_are_refused() {
    let aws = Aws::new("guard-test");
    aws.ok("launch_devinstance");
    let id = aws.instance_id();

    let out = aws.fails("terminate_devinstance");
    assert!(all(&out).contains("dev history not saved as ami, will not delete"), "{}", aws.explain(&out));
    assert_eq!(aws.describe(&id)["state"], "running", "the refused terminate changed the instance");

    let out = aws.fails("launch_devinstance");
    assert!(all(&out).contains("not safe to deploy another"), "{}", aws.explain(&out));
    let instances = aws.all_instances();
    assert_eq!(instances.as_array().unwrap().len(), 1, "a second instance was launched: {instances:#}");
    assert_eq!(aws.instance_id(), id);

    let out = aws.ok("terminate_devinstance --force");
    assert!(out.contains("Instance is now in state: terminated"), "{out}");
}

#[test]
fn a_dry_run_launches_nothing() {
    let aws = Aws::new("dry-test");
    let out = aws.ok("launch_devinstance --dry-run");
    assert!(out.to_lowercase().contains("dry run"), "{out}");
    let instances = aws.all_instances();
    assert_eq!(instances, json!([]), "a dry run launched something:\n{out}");
    let st = aws.state();
    assert!(st["instance"].is_null(), "{st:#}");
    assert!(st["instances"].as_array().is_none_or(|a| a.is_empty()), "{st:#}");
}

#[test]
fn aliases_resolve_through_ssm_parameters() {
    let aws = Aws::new("alias-test");

    // Amazon Linux 2023 through the public parameter moto serves.
    let al2023 = aws.seed.al2023.clone().expect("moto 5.2.5 serves the Amazon Linux 2023 parameter");
    let out = aws.ok("launch_devinstance al2023 --dry-run");
    assert!(
        out.contains(&al2023),
        "al2023 should resolve to {al2023} ({}):\n{out}",
        aws.seed.al2023_parameter
    );

    // A configured parameter that does not exist: the original's table, with a warning.
    let out = aws
        .cmd_with(&[], "launch_devinstance ubuntu16 --dry-run")
        .env("DEVAMI_ALIAS_PARAM_UBUNTU16", "/devami-test/no/such/parameter")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", aws.explain(&out));
    let t = all(&out);
    assert!(t.contains("stale"), "no warning that the fixed table may be stale:\n{t}");
    assert!(t.contains("ami-08bc77a2c7eb2b1da"), "the original's ubuntu16 image is not used:\n{t}");

    // ubuntu18 through the parameter seeded for it (DEVAMI_ALIAS_PARAM_UBUNTU18), launched.
    let out = aws.ok("launch_devinstance ubuntu18");
    assert!(out.contains(&aws.seed.ami), "the resolved id is not shown:\n{out}");
    let id = aws.instance_id();
    assert_eq!(aws.describe(&id)["image"], aws.seed.ami.as_str());
    let st = aws.state();
    assert_eq!(st["instances"][0]["image_id"], aws.seed.ami.as_str(), "{st:#}");
    assert_eq!(st["instances"][0]["source"], "ubuntu18", "{st:#}");
    aws.ok("terminate_devinstance --force");
}

#[test]
fn a_job_sends_the_exact_ssm_command_and_writes_the_status_object() {
    let aws = Aws::new("job-test");
    let bucket = aws.seed.bucket.clone();
    aws.s.write("data.txt", "some data\n");
    aws.s.write("c.json", "{}\n");
    aws.s.write(
        "submit.json",
        r#"{"dataname": "debuggers/inputs/data.txt", "configname": "debuggers/configs/c.json", "timestamp": "1"}"#,
    );
    aws.ok("launch_devinstance; upload data.txt debuggers/inputs/data.txt; upload c.json debuggers/configs/c.json");
    let id = aws.instance_id();
    let out = aws.ok("submit_job_log submit.json");
    assert!(out.contains("sending command: "), "{out}");

    // The status object, and from its key the result directory.
    let objects = aws.moto.py(&format!(
        r#"r = s3.list_objects_v2(Bucket={bucket:?}, Prefix="debuggers/results/")
out = {{o["Key"]: s3.get_object(Bucket={bucket:?}, Key=o["Key"])["Body"].read().decode() for o in r.get("Contents", [])}}"#
    ));
    let objects = objects.as_object().unwrap();
    assert_eq!(objects.len(), 1, "expected one status object: {objects:#?}\n{out}");
    let (key, body) = objects.iter().next().unwrap();
    let suffix = "/logs/DATASET_NAME:data.txt_STATUS.txt";
    assert!(key.starts_with("debuggers/results/debugjob") && key.ends_with(suffix), "{key}");
    let outdir = &key["debuggers/".len()..key.len() - suffix.len()];

    // The command as SSM has it.
    let cmds = aws
        .moto
        .py(r#"out = [{k: c.get(k) for k in ("CommandId", "DocumentName", "Parameters", "InstanceIds",
        "OutputS3BucketName", "OutputS3KeyPrefix")} for c in ssm.list_commands()["Commands"]]"#);
    let cmds = cmds.as_array().unwrap();
    assert_eq!(cmds.len(), 1, "{cmds:#?}");
    let c = &cmds[0];
    let command_id = c["CommandId"].as_str().unwrap();
    let filled = format!(
        r#"cd /home/ubuntu; bash run.sh "{bucket}" "debuggers/inputs/data.txt" "{outdir}" "debuggers/configs/c.json""#
    );
    assert_eq!(c["DocumentName"], "AWS-RunShellScript", "{c:#}");
    assert_eq!(c["Parameters"]["commands"], json!([filled]), "{c:#}");
    assert_eq!(c["Parameters"]["workingDirectory"], json!(["/home/ubuntu"]), "{c:#}");
    assert_eq!(c["Parameters"]["executionTimeout"], json!(["3600"]), "{c:#}");
    assert_eq!(c["OutputS3BucketName"], bucket.as_str(), "{c:#}");
    assert_eq!(c["OutputS3KeyPrefix"], "debug_direct/", "{c:#}");
    assert!(c["InstanceIds"].as_array().unwrap().contains(&json!(id)), "{c:#}");
    assert!(out.contains(&format!("sending command: {filled} to instance {id}")), "{out}");

    let body = body.as_str().expect("the status object is text");
    let status: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{key}: {e}: {body}"));
    assert_eq!(
        status,
        json!({"status": "INITIALIZING", "reason": "NONE", "stdout": "not given yet", "stderr": "not given yet",
               "input": "debuggers/inputs/data.txt", "instance": id, "command": command_id}),
        "{key}"
    );
    let st = aws.state();
    assert_eq!(st["jobs"][0]["command_id"], command_id, "{st:#}");

    // moto answers Success at once.
    let out = aws.ok("job_status");
    assert!(out.contains("Success"), "{out}");

    // Output before SSM wrote any object: a note, not a failure.
    let out = aws.ok("job_output");
    assert!(!out.trim().is_empty(), "job_output printed nothing");
    assert!(
        out.contains("not found") || out.to_lowercase().contains("invocation") || out.contains("may not"),
        "job_output without S3 objects should say so:\n{out}"
    );

    // Output objects where SSM writes them.
    aws.moto.py(&format!(
        r#"p = "debug_direct/{command_id}/{id}/awsrunShellScript/0.awsrunShellScript/"
s3.put_object(Bucket={bucket:?}, Key=p + "stdout", Body=b"hello from the job\n")
s3.put_object(Bucket={bucket:?}, Key=p + "stderr", Body=b"a warning on stderr\n")"#
    ));
    let out = aws.ok("job_output");
    assert!(out.contains("hello from the job") && out.contains("a warning on stderr"), "{out}");
    aws.ok("terminate_devinstance --force");
}

#[test]
fn job_status_waits_and_a_stopped_instance_does_not_leave_a_job_in_progress() {
    let aws = Aws::new("jobwait-test");
    aws.s.write("data.txt", "some data\n");
    aws.s.write(
        "submit.json",
        r#"{"dataname": "debuggers/inputs/data.txt", "configname": "debuggers/configs/c.json", "timestamp": "1"}"#,
    );
    let proxy = Proxy::start(&aws.moto.url, json!({"hold_commands": 2.5}));
    let via = ["--endpoint-url", proxy.url.as_str()];
    aws.s.write("c.json", "{}\n");
    aws.ok_with(&via, "launch_devinstance; upload data.txt debuggers/inputs/data.txt; upload c.json debuggers/configs/c.json");

    // `job_status --wait` polls until the command is done.
    aws.ok_with(&via, "submit_job submit.json");
    let bg = aws.spawn_with(&via, "job_status --wait");
    let (out, elapsed) = bg.finish(Duration::from_secs(60));
    assert!(out.status.success(), "{}", aws.explain(&out));
    assert!(all(&out).contains("Success"), "{}", all(&out));
    assert!(elapsed >= Duration::from_millis(1500), "job_status --wait returned after {elapsed:?}");

    // A command whose instance stopped is not reported InProgress (NeuroCAAS issue #13).
    proxy.set_rules(json!({"hold_commands": 600}));
    aws.ok_with(&via, "submit_job submit.json");
    let out = aws.ok_with(&via, "job_status");
    assert!(out.contains("InProgress"), "the proxy holds the command InProgress:\n{out}");
    aws.ok_with(&via, "stop_devinstance");
    let out = aws.ok_with(&via, "job_status");
    assert!(
        out.contains("stopped"),
        "a job on a stopped instance should say so, not stay InProgress:\n{out}"
    );
}

#[test]
fn waits_poll_until_the_cloud_is_ready() {
    let aws = Aws::new("wait-test");
    // pending for 2 s after the launch, then running with status checks initializing until 3.5 s.
    let proxy = Proxy::start(&aws.moto.url, json!({"hold_instances": 2.0, "hold_status": 3.5}));
    // The flag wins over AWS_ENDPOINT_URL (which points at moto directly).
    let via = ["--endpoint-url", proxy.url.as_str()];

    let mut bg = aws.spawn_with(&via, "launch_devinstance");
    let state_path = aws.state_path();
    let seen = poll("the instance id in state.json during the wait", Duration::from_secs(60), || {
        let id = read_state(&state_path)["instance"].as_str().map(str::to_string);
        match id {
            Some(id) => Some(Some(id)),
            None if !bg.running() => Some(None),
            None => None,
        }
    });
    let during_wait = bg.running();
    let (out, elapsed) = bg.finish(Duration::from_secs(120));
    assert!(out.status.success(), "{}", aws.explain(&out));
    let id = aws.instance_id();
    assert_eq!(seen.as_deref(), Some(id.as_str()), "the id was not recorded before the wait ended");
    assert!(during_wait, "devami had already finished when the id appeared");
    assert!(proxy.count("RunInstances") == 1, "the launch did not go through the proxy: {:?}", proxy.calls());
    assert!(
        elapsed >= Duration::from_millis(3400),
        "launch returned after {elapsed:?}, before the instance was running with both status checks ok:\n{}",
        all(&out)
    );
    assert!(elapsed < Duration::from_secs(60), "launch noticed readiness late ({elapsed:?})");
    let polls = proxy.count("DescribeInstances") + proxy.count("DescribeInstanceStatus");
    assert!((3..200).contains(&polls), "{polls} describe calls in {elapsed:?}");

    // An image held pending: recorded at once, waited for.
    proxy.set_rules(json!({"hold_images": 3.0}));
    let mut bg = aws.spawn_with(&via, "create_devami held-image");
    let image = poll("the image id in state.json during the wait", Duration::from_secs(60), || {
        let st = read_state(&state_path);
        match st["images"][0]["id"].as_str() {
            Some(i) => Some(Some((i.to_string(), bg.running()))),
            None if !bg.running() => Some(None),
            None => None,
        }
    });
    let (out, elapsed) = bg.finish(Duration::from_secs(120));
    assert!(out.status.success(), "{}", aws.explain(&out));
    let (_, during_wait) = image.unwrap_or_else(|| panic!("no image recorded:\n{}", all(&out)));
    assert!(during_wait, "the image was recorded only after the wait");
    assert!(elapsed >= Duration::from_millis(2500), "create_devami returned after {elapsed:?}");

    // A stop held in `stopping`.
    proxy.set_rules(json!({"hold_instances": 2.5}));
    let start = Instant::now();
    let out = aws.ok_with(&via, "stop_devinstance");
    assert!(out.contains("Instance is now in state: stopped"), "{out}");
    assert!(start.elapsed() >= Duration::from_secs(2), "stop returned after {:?}", start.elapsed());
}

#[test]
fn a_killed_endpoint_mid_wait_is_a_clear_error_and_the_instance_stays_tracked() {
    let aws = Aws::new("kill-test");
    let mut proxy = Proxy::start(&aws.moto.url, json!({"hold_instances": 600}));
    let port = proxy.port;
    let url = proxy.url.clone();
    let via = ["--endpoint-url", url.as_str()];

    let mut bg = aws.spawn_with(&via, "launch_devinstance");
    let state_path = aws.state_path();
    let id = poll("the instance id in state.json", Duration::from_secs(60), || {
        assert!(bg.running(), "launch ended before the proxy was killed");
        read_state(&state_path)["instance"].as_str().map(str::to_string)
    });
    // Mid-wait: at least one describe after the launch.
    poll("a describe call during the wait", Duration::from_secs(30), || {
        (proxy.count("DescribeInstances") + proxy.count("DescribeInstanceStatus") > 0).then_some(())
    });
    proxy.kill();
    let killed = Instant::now();
    let (out, _) = bg.finish(Duration::from_secs(300));
    let after_kill = killed.elapsed();
    assert_failed_cleanly(&out, "launch_devinstance");
    assert!(!error_line(&out).trim_start_matches("error:").trim().is_empty(), "{}", all(&out));
    assert_eq!(
        read_state(&state_path)["instance"],
        id.as_str(),
        "the instance was forgotten:\n{}",
        all(&out)
    );
    eprintln!("devami gave up {after_kill:?} after the endpoint died: {}", error_line(&out));

    // The endpoint is back: the session reconciles with what the cloud says.
    let _proxy = Proxy::start_on(&aws.moto.url, port, json!({}));
    let out = aws.ok_with(&via, "get_instance_state");
    assert!(out.contains("running"), "{out}");
    let out = aws.ok_with(&via, "status");
    assert!(out.contains(&id), "{out}");
    assert!(out.contains("running"), "{out}");
    aws.ok("terminate_devinstance --force");
}

#[test]
fn an_endpoint_that_comes_back_within_the_grace_does_not_end_the_wait() {
    let aws = Aws::new("blip-test");
    let mut proxy = Proxy::start(&aws.moto.url, json!({"hold_instances": 1}));
    let port = proxy.port;
    let url = proxy.url.clone();
    let via = ["--endpoint-url", url.as_str()];
    let mut bg = aws.spawn_with(&via, "launch_devinstance");
    let state_path = aws.state_path();
    poll("the instance id in state.json", Duration::from_secs(60), || {
        read_state(&state_path)["instance"].as_str().map(str::to_string)
    });
    proxy.kill();
    // An outage of 1.5 s (the wait polls several times and sees connection failures), then the
    // endpoint is back on the same address.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(bg.running(), "the wait ended during the outage");
    let _back = Proxy::start_on(&aws.moto.url, port, json!({}));
    let (out, _) = bg.finish(Duration::from_secs(120));
    assert!(out.status.success(), "the wait ended on a blip:\n{}", all(&out));
    assert!(text(&out.stdout).contains("is running"), "{}", all(&out));
    aws.ok("terminate_devinstance --force");
}

#[test]
fn failed_calls_during_a_wait_are_retried() {
    let aws = Aws::new("retry-test");
    let proxy = Proxy::start(
        &aws.moto.url,
        json!({"hold_instances": 1.5, "failures": [
            {"action": "DescribeInstances", "mode": "error", "status": 503, "code": "RequestLimitExceeded",
             "message": "Request limit exceeded.", "count": 2},
            {"action": "DescribeInstanceStatus", "mode": "close", "count": 1},
        ]}),
    );
    let out = aws.ok_with(&["--endpoint-url", proxy.url.as_str()], "launch_devinstance");
    assert!(out.contains("is running"), "{out}");
    let injected = proxy.calls().iter().filter(|c| c.status == "injected").count();
    assert!(injected >= 2, "the failures were not exercised: {:?}", proxy.calls());
}

/// The environment of a run without any credentials: nothing in the environment, empty files.
fn without_credentials(aws: &Aws, cmd: &mut Command) {
    let home = aws.moto.home();
    std::fs::write(home.join("empty-config"), "").unwrap();
    std::fs::write(home.join("empty-credentials"), "").unwrap();
    cmd.env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env("AWS_CONFIG_FILE", home.join("empty-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", home.join("empty-credentials"));
}

#[test]
fn missing_credentials_fail_fast_with_one_clear_line() {
    let aws = Aws::new("nocred-test");
    let mut cmd = aws.cmd_with(&[], "launch_devinstance");
    without_credentials(&aws, &mut cmd);
    let start = Instant::now();
    let out = cmd.output().unwrap();
    let elapsed = start.elapsed();
    assert_failed_cleanly(&out, "launch_devinstance");
    assert!(error_line(&out).to_lowercase().contains("credentials"), "{}", all(&out));
    assert!(elapsed < Duration::from_secs(60), "took {elapsed:?}");
    let st = aws.state();
    assert!(st["instance"].is_null(), "{st:#}");
    assert_eq!(aws.all_instances(), json!([]));
}

#[test]
fn expired_credentials_are_a_clear_error() {
    let aws = Aws::new("expired-test");
    let proxy = Proxy::start(
        &aws.moto.url,
        json!({"failures": [{"action": "GetCallerIdentity", "mode": "error", "status": 403,
            "code": "ExpiredToken", "message": "The security token included in the request is expired"}]}),
    );
    let start = Instant::now();
    let out = aws.run_with(&["--endpoint-url", proxy.url.as_str()], "launch_devinstance");
    assert_failed_cleanly(&out, "launch_devinstance");
    let line = error_line(&out).to_lowercase();
    assert!(line.contains("credentials") && line.contains("expired"), "{}", all(&out));
    assert!(start.elapsed() < Duration::from_secs(60), "took {:?}", start.elapsed());
    assert!(aws.state()["instance"].is_null());
    assert_eq!(aws.all_instances(), json!([]));
}

#[test]
fn an_sso_profile_without_a_login_names_aws_sso_login() {
    let aws = Aws::new("sso-test");
    let mut cmd = aws.cmd_with(&["--profile", "dev"], "launch_devinstance");
    without_credentials(&aws, &mut cmd);
    let config = aws.moto.home().join("sso-config");
    std::fs::write(
        &config,
        "[profile dev]\nsso_start_url = https://x.awsapps.com/start\nsso_region = us-east-1\n\
         sso_account_id = 123456789012\nsso_role_name = r\nregion = us-east-1\n",
    )
    .unwrap();
    cmd.env("AWS_CONFIG_FILE", &config);
    let start = Instant::now();
    let out = cmd.output().unwrap();
    assert_failed_cleanly(&out, "--profile dev launch_devinstance");
    assert!(text(&out.stderr).contains("aws sso login --profile dev"), "{}", all(&out));
    assert!(start.elapsed() < Duration::from_secs(60), "took {:?}", start.elapsed());
    assert!(aws.state()["instance"].is_null());
}

#[test]
fn a_world_readable_ssh_key_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let aws = Aws::new("key-test");
    aws.ok("launch_devinstance");
    let key = aws.s.write("open-key.pem", std::fs::read(&aws.seed.key_path).unwrap());
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let start = Instant::now();
    let out = aws.run_with(&["--key", key.to_str().unwrap()], "exec echo hi");
    assert_failed_cleanly(&out, "exec echo hi");
    let err = text(&out.stderr);
    assert!(err.contains("0644") || err.to_lowercase().contains("permissions"), "{}", all(&out));
    assert!(!text(&out.stdout).lines().any(|l| l == "hi"), "the command ran: {}", all(&out));
    assert!(start.elapsed() < Duration::from_secs(60), "took {:?}", start.elapsed());
    aws.ok("terminate_devinstance --force");
}

#[test]
fn moto_fixtures_start_seed_and_proxy() {
    // The fixtures themselves, so a broken .venv is reported as such and not as a devami bug.
    let moto = Moto::start();
    let seed = moto.seed(&Seed::for_bucket("fixture-test"));
    assert!(seed.ami.starts_with("ami-"), "{seed:?}");
    let mode = std::fs::metadata(&seed.key_path).unwrap();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777, 0o600);
    assert_eq!(seed.parameters[crate::moto::UBUNTU18_PARAM], seed.ami);
    assert_eq!(crate::moto::http(moto.port, "GET", "/moto-api/", "").unwrap().0, 200);
    let mut proxy = Proxy::start(&moto.url, json!({"hold_instances": 30}));
    let (status, _) = crate::moto::http(proxy.port, "GET", "/moto-api/", "").unwrap();
    assert_eq!(status, 200, "{}", proxy.log());
    proxy.kill();
    assert!(crate::moto::http(proxy.port, "GET", "/moto-api/", "").is_err(), "the proxy still answers");
    let envs = moto.env();
    assert!(envs.iter().any(|(k, v)| *k == "AWS_ENDPOINT_URL" && *v == moto.url));
}
