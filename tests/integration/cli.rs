//! The process modes through the real binary: scripts, one-shots, init, check, tutorials, bad input.

use std::fs;

use crate::support::{Scratch, all, root, text};

const STATE_WITH_INSTANCE: &str = r#"{
  "version": 1,
  "backend": "local",
  "instance": "i-0123456789abcdef0",
  "instances": [
    {"id": "i-0123456789abcdef0", "recorded": 1795613018, "origin": "launched", "last_state": "running", "timeout_minutes": 60}
  ],
  "images": [],
  "jobs": [],
  "instance_saved": false,
  "ip": "127.0.0.1"
}
"#;

#[test]
fn run_echoes_each_command_and_skips_comments() {
    let s = Scratch::new();
    s.init("demo");
    s.write("session.devami", "# a comment\n\nopen demo\n  # indented comment\nget_ip\n");
    let out = s.run(&["run", "session.devami"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    assert!(stdout.starts_with("devami> open demo\nopened blueprint `demo`"), "{stdout}");
    assert!(stdout.contains("devami> get_ip\n"), "{stdout}");
    assert!(!stdout.contains("comment"), "{stdout}");
    assert!(text(&out.stderr).contains("error: No instance declared"), "{}", all(&out));
}

#[test]
fn first_error_stops_the_run_unless_keep_going() {
    let s = Scratch::new();
    s.init("demo");
    s.write("s.devami", "open demo\nlanch\nstatus\n");
    let out = s.run(&["run", "s.devami"]);
    assert_eq!(out.status.code(), Some(2), "{}", all(&out));
    let err = text(&out.stderr);
    assert!(err.contains("error: unknown command `lanch` (did you mean `launch`?)"), "{err}");
    assert!(!text(&out.stdout).contains("devami> status"), "the run went on after an error");

    let out = s.run(&["run", "--keep-going", "s.devami"]);
    assert_eq!(out.status.code(), Some(2), "{}", all(&out));
    assert!(text(&out.stdout).contains("devami> status\n"), "{}", all(&out));
    assert!(text(&out.stdout).contains("pipeline"), "{}", all(&out));
}

#[test]
fn confirmations_fail_in_scripts_unless_yes() {
    let s = Scratch::new();
    let bp = s.init("demo");
    s.write("demo/.devami/state.json", STATE_WITH_INSTANCE);
    s.write("demo/.devami/.gitignore", "*\n");
    let before = fs::read(bp.join(".devami/state.json")).unwrap();
    let out = s.run(&["demo", "-c", "forget"]);
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    assert!(text(&out.stderr).contains("needs confirmation"), "{}", all(&out));
    assert!(text(&out.stderr).contains("--yes"), "{}", all(&out));
    assert_eq!(fs::read(bp.join(".devami/state.json")).unwrap(), before, "state changed without consent");

    let out = s.run(&["demo", "--yes", "-c", "forget; status"]);
    assert!(out.status.success(), "{}", all(&out));
    let state = fs::read_to_string(bp.join(".devami/state.json")).unwrap();
    assert!(state.contains("\"instance\": null"), "{state}");
    assert!(state.contains("i-0123456789abcdef0"), "history lost the id: {state}");
}

#[test]
fn one_shots_run_in_order_and_resume_state() {
    let s = Scratch::new();
    s.init("demo");
    // The session resumes an instance that the backend has no trace of (gone behind our back).
    s.write("demo/.devami/state.json", STATE_WITH_INSTANCE);
    let out = s.run(&["demo", "-c", "jobs; devami.check_clear(); get_ip; status"]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with(
            "devami> jobs\nno jobs yet\ndevami> devami.check_clear()\nInstance is terminated and no trace exists\nTrue\ndevami> get_ip\n"
        ),
        "{}",
        all(&out)
    );
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    assert!(text(&out.stderr).contains("instance `i-0123456789abcdef0` does not exist"), "{}", all(&out));
    assert!(!stdout.contains("devami> status"), "{stdout}");
    let state = fs::read_to_string(s.path().join("demo/.devami/state.json")).unwrap();
    assert!(state.contains("\"last_state\": \"gone\""), "{state}");
}

#[test]
fn the_guides_lines_are_accepted() {
    let s = Scratch::new();
    s.init("demo");
    let script = ">>> from develop_blueprint import NeuroCaaSAMI\n\
                  >>> ami = NeuroCaaSAMI(\"demo\")\n\
                  >>> ami.get_ip()\n";
    s.write("guide.devami", script);
    let out = s.run(&["run", "guide.devami"]);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("opened blueprint `demo`"), "{}", all(&out));
    assert!(text(&out.stderr).contains("No instance declared"), "{}", all(&out));

    s.write("guide2.devami", ">>> devami.create_devami(name)\n");
    let out = s.run(&["run", "--dir", "demo", "guide2.devami"]);
    assert_eq!(out.status.code(), Some(2), "{}", all(&out));
    assert!(text(&out.stderr).contains("not a literal"), "{}", all(&out));

    s.write("guide3.devami", "other.get_ip()\n");
    let out = s.run(&["run", "--dir", "demo", "guide3.devami"]);
    assert!(text(&out.stderr).contains("`other` is not defined"), "{}", all(&out));
}

#[test]
fn init_writes_a_blueprint_that_passes_check() {
    let s = Scratch::new();
    let out = s.run(&["init", "my-analysis"]);
    assert!(out.status.success(), "{}", all(&out));
    let bp = s.path().join("my-analysis");
    assert!(bp.join("stack_config_template.json").is_file());
    assert!(bp.join("test_resources/exampledevsubmit.json").is_file());
    let out = s.run(&["check", "my-analysis"]);
    assert!(out.status.success(), "{}", all(&out));

    let before = fs::read(bp.join("stack_config_template.json")).unwrap();
    let out = s.run(&["init", "my-analysis"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("already exists"), "{}", all(&out));
    assert_eq!(fs::read(bp.join("stack_config_template.json")).unwrap(), before);

    for bad in ["My_Analysis", "a b", "x", "-lead", "über"] {
        let out = s.run(&["init", "--", bad]);
        assert_eq!(out.status.code(), Some(1), "{bad}: {}", all(&out));
        assert!(text(&out.stderr).contains("lowercase letters, digits and dashes"), "{}", all(&out));
        assert!(!s.path().join(bad).exists());
    }
}

#[test]
fn check_reports_errors_and_summarises_many_folders() {
    let s = Scratch::new();
    s.init("good");
    s.write(
        "bad/stack_config_template.json",
        r#"{"PipelineName": "Bad_Name", "REGION": "us-east-1", "Lambda": {"LambdaConfig": {"AMI": "instance id", "COMMAND": "run {a} {}"}}, "UXData": {"Affiliates": []}}"#,
    );
    let out = s.run(&["check", "good", "bad"]);
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("PipelineName"), "{stdout}");
    assert!(stdout.contains("Lambda.LambdaConfig.AMI"), "{stdout}");
    assert!(stdout.contains("good") && stdout.contains("bad"), "{stdout}");

    let examples: Vec<String> = fs::read_dir(root().join("blueprints"))
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    assert!(examples.len() >= 3, "{examples:?}");
    let mut args = vec!["check"];
    args.extend(examples.iter().map(String::as_str));
    let out = s.run(&args);
    assert!(out.status.success(), "{}", all(&out));
}

#[test]
fn tutorial_auto_runs_and_pauses_take_keys() {
    let s = Scratch::new();
    s.init("demo");
    let md = "# Title\n\nSome *prose* with `code`.\n\n```devami\ndevami> open demo\nopened blueprint `demo` in `demo` (backend local)\n```\n\nThen:\n\n```devami\ndevami> help sleep\n...\ndevami> get_ip\nerror: No instance declared[..]\n```\n\nThe end.\n";
    s.write("t.md", md);
    let out = s.run(&["tutorial", "--auto", "t.md"]);
    assert!(out.status.success(), "{}", all(&out));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("Title") && stdout.contains("The end."), "{stdout}");
    assert!(stdout.contains("devami> help sleep"), "{stdout}");

    // Enter runs, s skips, q quits.
    let out = s.run_with_stdin(&["tutorial", "t.md"], b"\ns\nq\n");
    let stdout = text(&out.stdout);
    assert!(stdout.contains("opened blueprint"), "{stdout}");
    assert!(!stdout.contains("Usage"), "skipped step ran: {stdout}");
    assert!(stdout.contains("tutorial stopped"), "{stdout}");

    let out = s.run(&["tutorial", "--auto", "--from", "3", "t.md"]);
    let stdout = text(&out.stdout);
    assert!(!stdout.contains("devami> open demo"), "{stdout}");
    assert!(stdout.contains("devami> get_ip"), "{stdout}");
}

#[test]
fn a_drifted_transcript_fails_with_a_readable_diff() {
    let s = Scratch::new();
    s.init("demo");
    s.write("t.devami", "devami> open demo\nopened blueprint `demo` in `elsewhere` (backend local)\n");
    let out = s.run(&["run", "--check", "t.devami"]);
    assert_eq!(out.status.code(), Some(4), "{}", all(&out));
    let err = text(&out.stderr);
    assert!(err.contains("- opened blueprint `demo` in `elsewhere` (backend local)"), "{err}");
    assert!(err.contains("+ opened blueprint `demo` in `demo` (backend local)"), "{err}");
    assert!(err.contains("line 1"), "{err}");
}

#[test]
fn bad_input_gives_clear_errors_and_changes_nothing() {
    let s = Scratch::new();
    s.write(
        "broken/stack_config_template.json",
        "{\n    \"PipelineName\": \"x\",\n    \"Lambda\": {\n}\n}}\n",
    );
    let out = s.run(&["broken", "-c", "status"]);
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    let err = text(&out.stderr);
    assert!(err.contains("is not valid JSON") && err.contains("line 5"), "{err}");
    assert!(!s.path().join("broken/.devami").exists(), "a broken blueprint got a session folder");

    s.init("demo");
    let cases: &[(&str, &str)] = &[
        ("launch_devinstance(timeout='abc')", "timeout"),
        ("launch_devinstance(ami=\"unterminated)", "unterminated"),
        ("terminate --force --force=maybe", "force"),
        ("job_status(1, 2, 3)", "job_status"),
        ("create_devami(nme=\"x\")", "nme"),
        ("frobnicate", "unknown command"),
        ("\u{1b}[31mhello\u{7}", "unknown command"),
    ];
    for (line, needle) in cases {
        let out = s.run(&["demo", "-c", line]);
        assert!(!out.status.success(), "{line}: {}", all(&out));
        let err = text(&out.stderr);
        assert!(err.starts_with("error: "), "{line}: {err}");
        assert!(err.to_lowercase().contains(&needle.to_lowercase()), "{line}: {err}");
        assert!(!err.contains("panicked"), "{line}: {err}");
    }
    assert!(!s.path().join("demo/.devami/state.json").exists(), "a failed command wrote state");

    let huge = format!("create_devami(\"{}\")\n", "x".repeat(1 << 20));
    s.write("huge.devami", &huge);
    let out = s.run(&["run", "--dir", "demo", "huge.devami"]);
    assert!(!all(&out).contains("panicked"), "{}", &all(&out)[..500.min(all(&out).len())]);

    let junk: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    s.write("junk.devami", &junk);
    let out = s.run(&["run", "junk.devami"]);
    assert_eq!(out.status.code(), Some(2), "{}", all(&out));
    assert!(text(&out.stderr).contains("not a text file"), "{}", all(&out));
}

#[test]
fn piped_stdin_is_a_script() {
    let s = Scratch::new();
    s.init("demo");
    let out = s.run_with_stdin(&["demo"], b"# piped\nhelp get_ip\nexit\nstatus\n");
    assert!(out.status.success(), "{}", all(&out));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("devami> help get_ip\n"), "{stdout}");
    assert!(!stdout.contains("devami> status"), "ran past exit: {stdout}");
}

/// Process options go before the mode as well as after it, as with `git -C` or `cargo --locked`;
/// a blueprint folder or `-c` does not go with a mode, and saying so is a usage error (status 2).
#[test]
fn options_go_before_or_after_the_mode() {
    let s = Scratch::new();
    s.init("demo");
    s.write("session.devami", "devami> open demo\nopened blueprint `demo` in `demo` (backend local)\n");
    for args in [
        &["--backend", "local", "--yes", "run", "--check", "session.devami"][..],
        &["run", "--backend", "local", "--yes", "--check", "session.devami"],
        &["--yes", "run", "--check", "session.devami"],
        &["--keep-going", "check", "demo"],
    ] {
        let out = s.run(args);
        assert!(out.status.success(), "{args:?}: {}", all(&out));
    }
    for args in [&["demo", "run", "session.devami"][..], &["-c", "status", "run", "session.devami"]] {
        let out = s.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", all(&out));
        let err = text(&out.stderr);
        assert!(err.starts_with("error: ") && err.contains("cannot be given with a mode"), "{err}");
    }
}
