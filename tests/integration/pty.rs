//! A pseudo-terminal typing into the real shell: completion, history across restarts, Ctrl-C.

use std::time::{Duration, Instant};

use rexpect::session::{PtySession, spawn_command};

use crate::support::Scratch;

const TIMEOUT_MS: u64 = 20_000;

/// Types keys (the pty writer is buffered: flush so the shell sees them now).
fn keys(p: &mut PtySession, s: &str) {
    p.send(s).unwrap();
    p.flush().unwrap();
}

/// Presses Ctrl plus a letter.
fn ctrl(p: &mut PtySession, c: char) {
    p.send_control(c).unwrap();
    p.flush().unwrap();
}

/// Types a line and presses Enter.
fn line(p: &mut PtySession, s: &str) -> Result<(), rexpect::error::Error> {
    p.send(s)?;
    p.send("\r")?;
    p.flush()
}

fn shell(s: &Scratch, args: &[&str]) -> PtySession {
    let mut cmd = s.cmd(args);
    cmd.env("TERM", "xterm").env("NO_COLOR", "1");
    // rexpect wires the pty to stdin/stdout/stderr itself.
    cmd.stdin(std::process::Stdio::inherit());
    let mut p = spawn_command(cmd, Some(TIMEOUT_MS)).expect("spawn devami in a pty");
    p.exp_string("Ctrl-D or `exit` leaves").expect("banner");
    p
}

#[test]
fn tab_completes_command_and_keyword_names() {
    let s = Scratch::new();
    s.init("demo");
    let mut p = shell(&s, &["demo"]);
    p.exp_string("devami [demo]> ").unwrap();
    keys(&mut p, "terminate_devi");
    keys(&mut p, "\t");
    keys(&mut p, " --fo");
    keys(&mut p, "\t");
    keys(&mut p, "\r");
    // The completed line ran: there is no instance to terminate.
    p.exp_string("terminate_devinstance --force").unwrap();
    p.exp_string("No instance declared").unwrap();
    line(&mut p, "exit").unwrap();
    p.exp_eof().unwrap();
}

#[test]
fn history_survives_a_restart() {
    let s = Scratch::new();
    s.init("demo");
    let mut p = shell(&s, &["demo"]);
    p.exp_string("devami [demo]> ").unwrap();
    line(&mut p, "help get_lifetime").unwrap();
    p.exp_string("get_lifetime").unwrap();
    p.exp_string("devami [demo]> ").unwrap();
    ctrl(&mut p, 'd');
    p.exp_eof().unwrap();
    let hist = std::fs::read_to_string(s.path().join(".history")).unwrap();
    assert!(hist.contains("help get_lifetime"), "{hist}");

    let mut p = shell(&s, &["demo"]);
    p.exp_string("devami [demo]> ").unwrap();
    keys(&mut p, "\x1b[A"); // Up: the previous session's last line
    keys(&mut p, "\r");
    p.exp_string("changes:").unwrap();
    line(&mut p, "exit").unwrap();
    p.exp_eof().unwrap();
}

#[test]
fn ctrl_c_cancels_the_command_not_the_shell() {
    let s = Scratch::new();
    s.init("demo");
    let mut p = shell(&s, &["demo"]);
    p.exp_string("devami [demo]> ").unwrap();
    line(&mut p, "sleep 600").unwrap();
    p.exp_string("sleep 600").unwrap();
    // Press Ctrl-C until the command reports the interrupt: a key pressed in the instant between
    // Enter and the command's start reaches the line editor instead, as it would for a person.
    let start = Instant::now();
    let mut seen = String::new();
    while !seen.contains("error: interrupted") {
        assert!(start.elapsed() < Duration::from_secs(10), "Ctrl-C never interrupted `sleep`: {seen:?}");
        ctrl(&mut p, 'c');
        let poll = Instant::now();
        while poll.elapsed() < Duration::from_millis(200) && !seen.contains("error: interrupted") {
            match p.try_read() {
                Some(c) => seen.push(c),
                None => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }
    p.exp_string("devami [demo]> ").unwrap();
    // Ctrl-C at the prompt only clears the line.
    keys(&mut p, "stat");
    ctrl(&mut p, 'c');
    p.exp_string("devami [demo]> ").unwrap();
    line(&mut p, "get_ip").unwrap();
    p.exp_string("No instance declared").unwrap();
    line(&mut p, "exit").unwrap();
    p.exp_eof().unwrap();
}

#[test]
fn the_prompt_shows_the_lifetime_and_leaving_offers_to_stop_a_running_instance() {
    let s = Scratch::new();
    s.init("demo");
    let mut p = shell(&s, &["demo"]);
    p.exp_string("devami [demo]> ").unwrap();
    line(&mut p, "launch_devinstance ubuntu18 --timeout 30").unwrap();
    p.exp_string("instance running at").unwrap();
    // The prompt carries the state and the lifetime left (29m 59s or 30m 00s).
    p.exp_regex(r"running (29m 5\ds|30m 00s) left\]> ").unwrap();
    line(&mut p, "exit").unwrap();
    p.exp_string("is still running (t2.micro at $0.0116/hour, ").unwrap();
    p.exp_string("[s]top it, [t]erminate it or [l]eave it running? [l] ").unwrap();
    line(&mut p, "s").unwrap();
    p.exp_string("devami> stop_devinstance").unwrap();
    p.exp_string("Instance is now in state: stopped").unwrap();
    p.exp_eof().unwrap();
}
