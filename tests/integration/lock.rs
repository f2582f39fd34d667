//! Two shells on one blueprint: the second is refused and told who holds the folder.

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::{Scratch, all, text};

#[test]
fn a_second_shell_is_told_which_process_holds_the_blueprint() {
    let s = Scratch::new();
    let bp = s.init("demo");
    // The first shell reads its script from a pipe we keep open, so it holds the lock meanwhile.
    let mut first = s.cmd(&["demo"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let lock = bp.join(".devami/lock");
    let start = Instant::now();
    while !std::fs::read_to_string(&lock).map(|t| t.contains("pid")).unwrap_or(false) {
        assert!(start.elapsed() < Duration::from_secs(20), "first shell never took the lock");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = s.run(&["demo", "-c", "status"]);
    assert_eq!(out.status.code(), Some(3), "{}", all(&out));
    let err = text(&out.stderr);
    assert!(err.contains(&format!("pid {}", first.id())), "{err}");
    assert!(err.contains("in use by another devami"), "{err}");

    let mut stdin = first.stdin.take().unwrap();
    stdin.write_all(b"status\n").unwrap();
    drop(stdin);
    let first_out = first.wait_with_output().unwrap();
    assert!(first_out.status.success());
    let out = s.run(&["demo", "-c", "status"]);
    assert!(out.status.success(), "{}", all(&out));
}
