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
        r#"aws s3 cp "s3://{}/{}" - && python3 -c 'import boto3, sys; print(boto3.client("s3").list_objects_v2(Bucket=sys.argv[1])["KeyCount"], "objects")' cli && echo "results={} config={}""#,
        600,
    );
    ok(&s, "cli", "launch ubuntu22; upload cli/data.txt; upload cli/data.txt debuggers/configs/c.json");
    ok(&s, "cli", "submit cli/submit.json");
    let out = ok(&s, "cli", "job_status --wait; job_output");
    assert!(out.contains("Success"), "{out}");
    assert!(out.contains("some data"), "{out}");
    let listed = out.lines().find_map(|l| l.strip_suffix(" objects")?.parse::<u32>().ok());
    assert!(listed.is_some_and(|n| n >= 2), "boto3 did not list the bucket: {out}");
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

/// Sets INSTANCE_TYPE of a blueprint made by [`blueprint`].
fn set_instance_type(s: &Scratch, name: &str, ty: &str) {
    let path = s.path().join(name).join("stack_config_template.json");
    let mut doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    doc["Lambda"]["LambdaConfig"]["INSTANCE_TYPE"] = ty.into();
    std::fs::write(&path, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
}

/// The `ami-` id a `create_devami` printed.
fn image_id(out: &str) -> String {
    let at = out.find("ami-").unwrap_or_else(|| panic!("no image id in: {out}"));
    out[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-').collect()
}

#[test]
fn an_instance_cannot_see_or_change_the_host() {
    let s = Scratch::new();
    blueprint(&s, "walls", "true {} {} {} {}", 600);
    let canary = s.write("canary-outside.txt", "host secret\n");
    let doc_dir = Path::new("/usr/share/doc");
    let docs_before = std::fs::read_dir(doc_dir).map(|d| d.count()).unwrap_or(0);
    ok(&s, "walls", "launch ubuntu22");
    let inside = run(&s, "walls", &format!("exec cat {}", canary.display()));
    assert!(!inside.status.success(), "the host's canary is visible inside: {}", all(&inside));
    assert!(!all(&inside).contains("host secret"), "{}", all(&inside));
    let host_marker = format!("/usr/local/bin/devami-test-{}", std::process::id());
    ok(
        &s,
        "walls",
        &format!("exec sudo touch {host_marker}; exec sudo rm -rf /usr/share/doc; exec ls {host_marker}"),
    );
    assert!(!Path::new(&host_marker).exists(), "a write inside reached the host");
    assert_eq!(
        std::fs::read_dir(doc_dir).map(|d| d.count()).unwrap_or(0),
        docs_before,
        "a removal inside reached the host"
    );
    let release = ok(&s, "walls", "exec cat /etc/os-release; exec hostname");
    assert!(release.contains("Debian GNU/Linux 12"), "{release}");
    assert!(release.contains("\ni-"), "the hostname is not the instance's id: {release}");
    // exec runs as `ubuntu` in its home, with a working sudo; `exec "a; b"` runs `a; b`.
    let who = ok(&s, "walls", r#"exec "whoami; pwd; sudo id -u""#);
    let lines: Vec<&str> = who.lines().filter(|l| !l.starts_with("devami> ")).collect();
    assert_eq!(lines, ["ubuntu", "/home/ubuntu", "0"], "{who}");
    ok(&s, "walls", "terminate --force");
}

#[test]
fn files_outside_home_survive_an_image_and_images_do_not_change() {
    let s = Scratch::new();
    blueprint(&s, "keep", "true {} {} {} {}", 600);
    ok(&s, "keep", "launch ubuntu22");
    ok(&s, "keep", r#"exec "echo v1 | sudo tee /opt/tool.txt""#);
    let made = ok(&s, "keep", "create_devami kept");
    let ami = image_id(&made);
    // The source goes on changing after the image was made: the image does not.
    ok(&s, "keep", r#"exec "echo v2 | sudo tee /opt/tool.txt; sudo touch /opt/later""#);
    ok(&s, "keep", "terminate");
    ok(&s, "keep", &format!("launch {ami}"));
    let out = ok(&s, "keep", "exec cat /opt/tool.txt; exec ls /opt");
    assert!(out.contains("v1") && !out.contains("v2") && !out.contains("later"), "{out}");
    ok(&s, "keep", "terminate --force");
}

#[test]
fn ps_shows_only_the_instance_and_stop_ends_every_process_but_keeps_files() {
    let s = Scratch::new();
    blueprint(&s, "procs", "true {} {} {} {}", 600);
    ok(&s, "procs", "launch ubuntu22");
    ok(&s, "procs", r#"exec "nohup sleep 1000 >/dev/null 2>&1 & echo kept > ~/file""#);
    let ps = ok(&s, "procs", "exec ps -e -o args=");
    let procs: Vec<&str> = ps.lines().filter(|l| !l.starts_with("devami> ")).map(str::trim).collect();
    assert!(procs.contains(&"sleep 1000"), "{ps}");
    // The instance's init, its idle main process, the background sleep, and this exec's own two.
    assert!(procs.len() <= 6, "ps inside lists processes that are not the instance's: {ps}");
    assert!(!ps.contains("cargo") && !ps.contains("integration") && !ps.contains("__s3d"), "{ps}");
    ok(&s, "procs", "stop; start");
    let after = ok(&s, "procs", "exec ps -e -o args=; exec cat ~/file");
    assert!(!after.contains("sleep 1000"), "stop left a process running: {after}");
    assert!(after.contains("kept"), "{after}");
    ok(&s, "procs", "terminate --force");
}

#[test]
fn a_job_that_needs_more_memory_than_its_type_is_killed_and_says_so() {
    let s = Scratch::new();
    let alloc = r#"python3 -c 'b = bytearray(2 * 1024**3); b[::4096] = b"x" * (len(b) // 4096); print("allocated")' # {} {} {} {}"#;
    blueprint(&s, "mem", alloc, 600);
    launch_and_submit(&s, "mem");
    let out = ok(&s, "mem", "job_status --wait");
    assert!(out.contains("Failed"), "{out}");
    assert!(out.contains("out of memory") && out.contains("t2.micro has 1 vCPU, 1 GiB"), "{out}");
    ok(&s, "mem", "terminate --force");
    set_instance_type(&s, "mem", "t2.medium");
    ok(&s, "mem", "launch ubuntu22");
    ok(&s, "mem", "submit mem/submit.json");
    let out = ok(&s, "mem", "job_status --wait; job_output");
    assert!(out.contains("Success") && out.contains("allocated"), "{out}");
    ok(&s, "mem", "terminate --force");
}

#[test]
fn without_a_container_engine_a_launch_is_one_clear_error_and_changes_nothing() {
    let s = Scratch::new();
    blueprint(&s, "noeng", "true {} {} {} {}", 600);
    ok(&s, "noeng", "blueprint");
    let before = crate::support::files_under(&s.path().join("noeng"));
    let state_before = std::fs::read(s.path().join("noeng/.devami/state.json")).ok();
    let out = s
        .cmd(&["noeng", "-c", "launch ubuntu22"])
        .env("DOCKER_HOST", format!("unix://{}/no-engine.sock", s.path().display()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    let err = text(&out.stderr);
    assert!(err.contains("container engine"), "{err}");
    assert_eq!(err.lines().filter(|l| l.starts_with("error:")).count(), 1, "{err}");
    assert_eq!(crate::support::files_under(&s.path().join("noeng")), before);
    assert_eq!(std::fs::read(s.path().join("noeng/.devami/state.json")).ok(), state_before);

    // No engine anywhere and no `podman` to start one: the error says what to install.
    let empty = s.path().join("no-tools");
    std::fs::create_dir_all(&empty).unwrap();
    let out = s
        .cmd(&["noeng", "-c", "launch ubuntu22"])
        .env_remove("DOCKER_HOST")
        .env("PATH", &empty)
        .env("HOME", &empty)
        .env("XDG_RUNTIME_DIR", &empty)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    let err = text(&out.stderr);
    assert!(err.contains("no container engine") && err.contains("install Podman"), "{err}");
    assert_eq!(err.lines().filter(|l| l.starts_with("error:")).count(), 1, "{err}");
    assert_eq!(crate::support::files_under(&s.path().join("noeng")), before);
}

#[test]
fn a_gpu_type_says_when_the_engine_has_no_gpu_and_runs_without() {
    let s = Scratch::new();
    blueprint(&s, "gpu", "true {} {} {} {}", 600);
    set_instance_type(&s, "gpu", "p3.2xlarge");
    let out = s.run(&["gpu", "-c", "launch ubuntu22"]);
    assert!(out.status.success(), "{}", all(&out));
    let err = text(&out.stderr);
    assert!(
        err.contains("p3.2xlarge has 1 GPU on AWS, but this machine's container engine offers none"),
        "{err}"
    );
    ok(&s, "gpu", "terminate --force");
}

#[test]
fn status_names_the_engine_and_terminate_and_deregister_leave_nothing_in_it() {
    use devami::backend::local::engine::{Engine, LABEL_HOME, LABEL_IMAGE};
    let s = Scratch::new();
    blueprint(&s, "eng", "true {} {} {} {}", 600);
    let status = ok(&s, "eng", "status");
    assert!(status.contains("engine") && status.contains("Podman Engine"), "{status}");
    ok(&s, "eng", "launch ubuntu22");
    let made = ok(&s, "eng", "create_devami tidy");
    let ami = image_id(&made);
    ok(&s, "eng", "terminate");
    let out = s.run(&["eng", "--yes", "-c", &format!("sweep --deregister {ami}")]);
    assert!(out.status.success(), "{}", all(&out));
    let home = devami::backend::local::home::Home::at(s.home()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (containers, images) = rt.block_on(async {
        let engine = Engine::connect(&home).await.unwrap();
        let c = engine.containers_labelled(LABEL_HOME, &home.label()).await.unwrap();
        let i = engine.images_labelled(LABEL_HOME, &home.label()).await.unwrap();
        (c, i)
    });
    assert!(containers.is_empty(), "containers left: {containers:?}");
    let ours: Vec<_> = images.iter().filter(|i| i.labels.get(LABEL_IMAGE) == Some(&ami)).collect();
    assert!(ours.is_empty(), "the deregistered image is still in the engine: {ours:?}");
}

/// Debian's docker-registry on `DEVAMI_TEST_REGISTRY` (an address tests/run.sh told the engine
/// to trust over plain HTTP), stopped on drop.
struct Registry {
    child: std::process::Child,
    address: String,
    _dir: tempfile::TempDir,
}

impl Registry {
    fn start() -> Registry {
        let address = std::env::var("DEVAMI_TEST_REGISTRY")
            .expect("DEVAMI_TEST_REGISTRY is not set: run the tests with `bash tests/run.sh`");
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {address}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = std::process::Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start docker-registry (apt-get install docker-registry)");
        let url = address.clone();
        poll_until("the registry to answer", Duration::from_secs(20), Duration::from_millis(50), || {
            std::net::TcpStream::connect(&url).is_ok()
        });
        Registry { child, address, _dir: dir }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn an_alias_is_pulled_from_a_registry_with_progress() {
    let registry = Registry::start();
    let reference = format!("{}/ubuntu:20.04", registry.address);
    let host =
        std::env::var("DOCKER_HOST").expect("DOCKER_HOST is not set: run the tests with `bash tests/run.sh`");
    let push = std::process::Command::new("podman")
        .args(["--url", &host, "push", "--tls-verify=false", &crate::support::base_image(), &reference])
        .output()
        .expect("run podman push");
    assert!(push.status.success(), "podman push: {}", all(&push));
    let s = Scratch::new();
    blueprint(&s, "pull", "true {} {} {} {}", 600);
    let out =
        s.cmd(&["pull", "-c", "launch ubuntu20"]).env("DEVAMI_IMAGE_UBUNTU20", &reference).output().unwrap();
    assert!(out.status.success(), "{}", all(&out));
    let err = text(&out.stderr);
    assert!(err.contains(&format!("pulling {reference} for `ubuntu20`")), "{err}");
    assert!(err.lines().count() > 1, "no progress while pulling: {err}");
    let inside = s.cmd(&["pull", "-c", "exec cat /etc/debian_version; terminate --force"]).output().unwrap();
    assert!(inside.status.success() && text(&inside.stdout).contains("12."), "{}", all(&inside));
    // The pulled image is the tests' to remove (the engine keeps what it pulled).
    let _ = std::process::Command::new("podman").args(["--url", &host, "rmi", &reference]).output();
}

/// The tarball tests/run.sh built the base image from (`DEVAMI_TEST_ROOTFS`).
fn test_rootfs() -> String {
    std::env::var("DEVAMI_TEST_ROOTFS")
        .expect("DEVAMI_TEST_ROOTFS is not set: run the tests with `bash tests/run.sh`")
}

#[test]
fn import_image_takes_a_root_filesystem_or_an_image_archive_without_a_registry() {
    let s = Scratch::new();
    blueprint(&s, "imp", "true {} {} {} {}", 600);
    // A root-filesystem tarball, bound to an alias of this home.
    let out =
        s.cmd(&["imp", "-c", &format!("import_image {} --as ubuntu24", test_rootfs())]).output().unwrap();
    assert!(out.status.success(), "{}", all(&out));
    assert!(text(&out.stdout).contains("`ubuntu24` resolves to it from now on"), "{}", all(&out));
    let launched =
        s.cmd(&["imp", "-c", "launch ubuntu24"]).env_remove("DEVAMI_IMAGE_UBUNTU24").output().unwrap();
    assert!(launched.status.success(), "{}", all(&launched));
    assert!(
        text(&launched.stdout).contains("(imported)"),
        "ubuntu24 did not resolve to the import: {}",
        all(&launched)
    );
    let who = ok(&s, "imp", r#"exec "sudo id -u; cat /etc/debian_version""#);
    assert!(who.contains("\n0\n") && who.contains("12."), "{who}");
    ok(&s, "imp", "terminate --force");
    // A `docker save` archive of an image (here the tests' base, saved by the engine's CLI).
    let archive = s.path().join("base-archive.tar");
    let host =
        std::env::var("DOCKER_HOST").expect("DOCKER_HOST is not set: run the tests with `bash tests/run.sh`");
    let saved = std::process::Command::new("podman")
        .args(["--url", &host, "save", "--format", "docker-archive", "-o"])
        .arg(&archive)
        .arg(crate::support::base_image())
        .output()
        .unwrap();
    assert!(saved.status.success(), "podman save: {}", all(&saved));
    let out = ok(&s, "imp", &format!("import_image {} --as archived-base", archive.display()));
    let ami = image_id(&out);
    ok(&s, "imp", &format!("launch {ami}"));
    let release = ok(&s, "imp", "exec cat /etc/os-release");
    assert!(release.contains("Debian GNU/Linux 12"), "{release}");
    ok(&s, "imp", "terminate --force");
    // Neither a file that is no image nor a missing file gets anywhere.
    s.write("not-an-image.tar", "plain text\n");
    let bad = run(&s, "imp", "import_image not-an-image.tar");
    assert_eq!(bad.status.code(), Some(1), "{}", all(&bad));
    let missing = run(&s, "imp", "import_image no-such-file.tar");
    assert_eq!(missing.status.code(), Some(1), "{}", all(&missing));
    assert!(text(&missing.stderr).contains("is not a file"), "{}", all(&missing));
}

#[test]
fn without_docker_host_devami_starts_its_own_podman_service_and_reuses_it() {
    let s = Scratch::new();
    blueprint(&s, "own", "true {} {} {} {}", 600);
    let own = |cmds: &str| {
        let out = s.cmd(&["own", "-c", cmds]).env_remove("DOCKER_HOST").output().unwrap();
        assert!(out.status.success(), "{cmds}: {}", all(&out));
        text(&out.stdout)
    };
    let sock = s.home().join("engine/podman.sock");
    let first = own("status");
    assert!(first.contains(&format!("at unix://{}", sock.display())), "{first}");
    let service = |sock: &Path| -> Vec<u32> {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&sock.display().to_string()))
            })
            .collect()
    };
    let pids = service(&sock);
    assert_eq!(pids.len(), 1, "one service for the home: {pids:?}");
    // The next process finds it answering and starts no other.
    own("status");
    assert_eq!(service(&sock), pids, "a second service was started");
    let conf = std::fs::read_to_string(s.home().join("engine/containers.conf")).unwrap();
    assert!(conf.contains("default_ulimits"), "{conf}");
    // The test's own service goes with it (as it would after its idle time).
    for pid in pids {
        // SAFETY: plain system call on the service this test started.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    }
}
