//! `devami --record FILE`: a session recorded as a transcript replays with `run --check`, from a
//! `-c` one-shot and from the interactive shell.

use rexpect::session::spawn_command;

use crate::support::{Scratch, all};

const SESSION: &str =
    "status; help; launch_devinstance ubuntu18; get_instance_state; terminate_devinstance --force; exit";

#[test]
fn a_recorded_one_shot_replays_with_run_check() {
    let s = Scratch::new();
    s.init("demo");
    let out = s.run(&["demo", "--record", "session.devami", "-c", SESSION]);
    assert!(out.status.success(), "{}", all(&out));
    let text = std::fs::read_to_string(s.path().join("session.devami")).unwrap();
    assert!(text.starts_with("# Recorded by `devami --record` on "), "{text}");
    let inputs: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("devami> ")).collect();
    assert_eq!(
        inputs,
        [
            "open demo",
            "status",
            "launch_devinstance ubuntu18",
            "get_instance_state",
            "terminate_devinstance --force"
        ],
        "{text}"
    );
    assert!(text.contains("Instance [ID] is running\n"), "{text}");
    assert!(!text.contains("i-"), "ids are wildcards: {text}");

    // Replayed in a fresh checkout of the blueprint, the recording matches step by step.
    let fresh = Scratch::new();
    fresh.init("demo");
    let replay = fresh.write("session.devami", &text);
    let out = fresh.run(&["run", "--check", &replay.display().to_string()]);
    assert!(out.status.success(), "{}", all(&out));

    // A second recording appends to the file; a drift in it fails the replay.
    let out = s.run(&["demo", "--record", "session.devami", "-c", "get_instance_state"]);
    assert!(out.status.success(), "{}", all(&out));
    let appended = std::fs::read_to_string(s.path().join("session.devami")).unwrap();
    assert_eq!(appended.matches("# Recorded by").count(), 1, "{appended}");
    assert!(appended.ends_with("devami> open demo\nopened blueprint `demo` in `demo` (backend local)\nresuming: current instance [ID] (last seen terminated)\ndevami> get_instance_state\nterminated (code 48): User initiated\n"), "{appended}");
}

#[test]
fn a_recorded_markdown_session_is_a_tutorial_skeleton() {
    let s = Scratch::new();
    s.init("demo");
    let out = s.run(&["demo", "--record", "session.md", "-c", "status; get_ip"]);
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    let text = std::fs::read_to_string(s.path().join("session.md")).unwrap();
    assert!(text.starts_with("# Session recorded on "), "{text}");
    assert!(text.contains("write prose between them"), "{text}");
    assert!(text.contains("```devami\ndevami> open demo\n"), "{text}");
    assert!(text.contains("devami> get_ip\nerror: "), "the failed command is recorded: {text}");
    let fresh = Scratch::new();
    fresh.init("demo");
    let page = fresh.write("session.md", &text);
    let out = fresh.run(&["tutorial", "--auto", &page.display().to_string()]);
    assert!(out.status.success(), "{}", all(&out));
}

#[test]
fn the_interactive_shell_records_what_is_typed() {
    let s = Scratch::new();
    s.init("demo");
    let mut cmd = s.cmd(&["demo", "--record", "shell.devami"]);
    cmd.env("TERM", "xterm").env("NO_COLOR", "1");
    cmd.stdin(std::process::Stdio::inherit());
    let mut p = spawn_command(cmd, Some(20_000)).expect("spawn devami in a pty");
    p.exp_string("devami [demo]> ").unwrap();
    for line in ["get_instance_state", "help status", "blueprint"] {
        p.send(line).unwrap();
        p.send("\r").unwrap();
        p.flush().unwrap();
        p.exp_string("devami [demo]> ").unwrap();
    }
    p.send("exit\r").unwrap();
    p.flush().unwrap();
    p.exp_eof().unwrap();
    let text = std::fs::read_to_string(s.path().join("shell.devami")).unwrap();
    let inputs: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("devami> ")).collect();
    assert_eq!(inputs, ["open demo", "get_instance_state", "blueprint"], "{text}");
    assert!(text.contains("devami> get_instance_state\nerror: "), "{text}");
    let fresh = Scratch::new();
    fresh.init("demo");
    let replay = fresh.write("shell.devami", &text);
    let out = fresh.run(&["run", "--check", &replay.display().to_string()]);
    // The first step failing as recorded is documentation of an error path, not a failure.
    assert!(out.status.success(), "{}", all(&out));
}
