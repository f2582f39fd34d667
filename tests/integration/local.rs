//! The local backend end to end through the binary: real processes, a real S3 endpoint, real
//! files. Each test has its own `DEVAMI_HOME` (the scratch folder's) and terminates what it
//! launches.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use crate::support::{Scratch, all, poll_until, text};

/// A blueprint made by `init` with its COMMAND and SSM_TIMEOUT replaced.
fn blueprint(s: &Scratch, name: &str, command: &str, ssm_timeout: u64) {
    let dir = s.init(name);
    let path = dir.join("stack_config_template.json");
    let mut doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    doc["Lambda"]["LambdaConfig"]["COMMAND"] = command.into();
    doc["Lambda"]["LambdaConfig"]["SSM_TIMEOUT"] = ssm_timeout.into();
    std::fs::write(&path, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    s.write(&format!("{name}/data.txt"), "some data\n");
    s.write(
        &format!("{name}/submit.json"),
        r#"{"dataname": "debuggers/inputs/data.txt", "configname": "debuggers/configs/c.json", "timestamp": "1"}"#,
    );
}

/// Runs `;`-separated commands on a blueprint and asserts success.
fn ok(s: &Scratch, dir: &str, commands: &str) -> String {
    let out = s.run(&[dir, "-c", commands]);
    assert!(out.status.success(), "`{commands}` failed:\n{}", all(&out));
    text(&out.stdout)
}

fn run(s: &Scratch, dir: &str, commands: &str) -> Output {
    s.run(&[dir, "-c", commands])
}

/// Launches, uploads the dataset and submits the job.
fn launch_and_submit(s: &Scratch, dir: &str) {
    ok(
        s,
        dir,
        &format!("launch ubuntu22; upload {dir}/data.txt; upload {dir}/data.txt debuggers/configs/c.json"),
    );
    ok(s, dir, &format!("submit {dir}/submit.json"));
}

#[test]
fn a_slow_job_is_visible_before_it_ends_and_outlives_the_shell() {
    let s = Scratch::new();
    blueprint(&s, "slow", "echo first line; sleep 3; echo second line {} {} {} {}", 600);
    launch_and_submit(&s, "slow");
    // The shell that submitted has exited; a new one sees the first line while the job runs.
    poll_until("the first line", Duration::from_secs(10), Duration::from_millis(100), || {
        ok(&s, "slow", "job_output").contains("first line")
    });
    let status = ok(&s, "slow", "job_status");
    assert!(status.contains("InProgress"), "{status}");
    assert!(!ok(&s, "slow", "job_output").contains("second line"));
    let done = ok(&s, "slow", "job_status --wait; job_output");
    assert!(done.contains("Success (exit code 0)"), "{done}");
    assert!(done.contains("second line slow debuggers/inputs/data.txt results/debugjob"), "{done}");
    ok(&s, "slow", "terminate --force");
}

#[test]
fn a_job_past_its_timeout_is_timed_out_and_cancel_kills_it() {
    let s = Scratch::new();
    blueprint(&s, "late", "sleep 30 # {} {} {} {}", 1);
    launch_and_submit(&s, "late");
    let out = ok(&s, "late", "job_status --wait");
    assert!(out.contains("TimedOut"), "{out}");
    ok(&s, "late", "terminate --force");
}

#[test]
fn shutdown_in_the_command_stops_the_instance() {
    let s = Scratch::new();
    blueprint(&s, "halt", "echo {} {} {} {}; sudo shutdown -h 1", 600);
    launch_and_submit(&s, "halt");
    let out = ok(&s, "halt", "job_status --wait");
    assert!(out.contains("Success"), "{out}");
    poll_until("the instance to stop", Duration::from_secs(10), Duration::from_millis(100), || {
        ok(&s, "halt", "get_instance_state").contains("stopped")
    });
    let out = ok(&s, "halt", "get_instance_state; start; exec echo back; terminate --force");
    assert!(out.contains("Instance is now in state: running") && out.contains("back"), "{out}");
}

#[test]
fn lifetime_expiry_stops_the_instance() {
    let s = Scratch::new();
    s.init("short");
    ok(&s, "short", "launch ubuntu22 --timeout 1");
    let out = ok(&s, "short", "get_lifetime");
    assert!(
        out.contains("Will be stopped in 0 minutes and") || out.contains("Will be stopped in 1 minutes"),
        "{out}"
    );
    let later =
        s.cmd(&["short", "-c", "get_instance_state"]).env("DEVAMI_CLOCK_OFFSET", "120").output().unwrap();
    assert!(later.status.success(), "{}", all(&later));
    let st = text(&later.stdout);
    assert!(st.contains("stopped") && st.contains("lifetime of 1 minutes expired"), "{st}");
    ok(&s, "short", "terminate --force");
}

#[test]
fn two_instances_never_mix_and_images_stay_unchanged() {
    let s = Scratch::new();
    s.init("one");
    s.init("two");
    ok(
        &s,
        "one",
        "launch ubuntu22; exec echo v1 > ~/file; exec echo only-one > ~/mine; create_devami snap-v1",
    );
    let image = {
        let state = std::fs::read_to_string(s.path().join("one/.devami/state.json")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&state).unwrap();
        v["images"][0]["id"].as_str().unwrap().to_string()
    };
    // The instance goes on changing after the snapshot: in place, by deletion and by addition.
    ok(
        &s,
        "one",
        "exec printf X | dd of=$HOME/file conv=notrunc status=none; exec rm ~/mine; exec echo new > ~/added",
    );
    ok(&s, "two", &format!("launch {image}"));
    let two = ok(&s, "two", "exec cat ~/file; exec ls ~");
    assert!(two.contains("v1\n"), "the image changed after its instance did: {two}");
    assert!(two.contains("mine") && !two.contains("added"), "{two}");
    ok(&s, "two", "exec echo from-two > ~/two-only");
    let one = ok(&s, "one", "exec cat ~/file; exec ls ~");
    assert!(one.contains("X1") && !one.contains("two-only") && !one.contains("mine"), "{one}");
    assert!(!Path::new("/home/ubuntu/two-only").exists());
    ok(&s, "one", "terminate --force");
    ok(&s, "two", "terminate --force");
}

#[test]
fn aws_cli_and_boto3_inside_a_job_reach_the_embedded_endpoint() {
    let s = Scratch::new();
    blueprint(
        &s,
        "cli",
        r#"aws s3 cp "s3://{}/{}" - ; python3 -c 'import boto3, sys; print(boto3.client("s3").list_objects_v2(Bucket=sys.argv[1])["KeyCount"], "objects")' cli; echo "results={} config={}""#,
        600,
    );
    ok(&s, "cli", "launch ubuntu22; upload cli/data.txt; upload cli/data.txt debuggers/configs/c.json");
    ok(&s, "cli", "submit cli/submit.json");
    let out = ok(&s, "cli", "job_status --wait; job_output");
    assert!(out.contains("Success"), "{out}");
    assert!(out.contains("some data"), "{out}");
    assert!(out.contains("2 objects"), "{out}");
    ok(&s, "cli", "terminate --force");
}

#[test]
fn bad_jobs_and_missing_data_are_clear_errors() {
    let s = Scratch::new();
    blueprint(&s, "bad", "exit 3 # {} {} {} {}", 600);
    ok(&s, "bad", "launch ubuntu22");
    let out = run(&s, "bad", "submit bad/submit.json");
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    assert!(
        text(&out.stderr).contains("dataset `debuggers/inputs/data.txt` is not in bucket `bad`"),
        "{}",
        all(&out)
    );
    ok(
        &s,
        "bad",
        "upload bad/data.txt; upload bad/data.txt debuggers/configs/c.json; submit bad/submit.json",
    );
    let out = ok(&s, "bad", "job_status --wait");
    assert!(out.contains("Failed (exit code 3)"), "{out}");
    let out = run(&s, "bad", "exec false");
    assert!(text(&out.stderr).contains("exited with status 1"), "{}", all(&out));
    ok(&s, "bad", "terminate --force");
}

#[test]
fn leaving_with_a_running_instance_says_what_it_costs_or_does_what_on_exit_says() {
    let s = Scratch::new();
    s.init("exit-test");
    // Scripts leave it running by default, and say so with its price.
    let out = run(&s, "exit-test", "launch_devinstance ubuntu18");
    assert!(out.status.success(), "{}", all(&out));
    let err = text(&out.stderr);
    assert!(err.contains("is still running") && err.contains("/hour"), "{err}");
    // `--on-exit stop` stops it as the session ends.
    let out = s.run(&["exit-test", "--on-exit", "stop", "-c", "get_instance_state"]);
    assert!(out.status.success(), "{}", all(&out));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("devami> stop_devinstance"), "{stdout}");
    assert!(!text(&out.stderr).contains("is still running"), "{}", all(&out));
    let state = ok(&s, "exit-test", "get_instance_state");
    assert!(state.lines().any(|l| l.starts_with("stopped")), "{state}");
    // A bad action is a usage error that changes nothing.
    let out = s.run(&["exit-test", "--on-exit", "explode", "-c", "status"]);
    assert_eq!(out.status.code(), Some(2), "{}", all(&out));
    assert!(text(&out.stderr).contains("ask, leave, stop or terminate"), "{}", all(&out));
}
