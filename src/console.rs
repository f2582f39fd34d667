//! Where a session's words go: stdout for results and messages, stderr for errors and warnings.
//!
//! Every line a command shows passes through [`Console`], which can also keep a copy (a capture)
//! of everything written since [`Console::begin_capture`]. The script runner uses the capture to
//! compare a step's output with the transcript it came from, so what a user sees and what the
//! tests check are the same bytes. Errors are printed in exactly one place, [`Console::error`], as
//! `error: ...` followed by one `  caused by: ...` line per source.

use std::error::Error as StdError;
use std::io::Write;

/// The session's output channel.
#[derive(Debug, Default)]
pub struct Console {
    capture: Option<String>,
}

impl Console {
    /// Writes text to stdout (a newline is added when missing).
    pub fn print(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        let mut s = text.to_string();
        if !s.ends_with('\n') {
            s.push('\n');
        }
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(s.as_bytes());
        let _ = out.flush();
        if let Some(c) = &mut self.capture {
            c.push_str(&s);
        }
    }

    /// Writes a `warning: ...` line to stderr (made [terminal-safe](terminal_safe)).
    pub fn warn(&mut self, text: &str) {
        self.stderr(&terminal_safe(&format!("warning: {text}\n")));
    }

    /// Writes an error and its causes to stderr (made [terminal-safe](terminal_safe)).
    pub fn error(&mut self, err: &(dyn StdError + 'static)) {
        self.stderr(&terminal_safe(&render_error(err)));
    }

    fn stderr(&mut self, s: &str) {
        let _ = std::io::stdout().flush();
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(s.as_bytes());
        let _ = err.flush();
        if let Some(c) = &mut self.capture {
            c.push_str(s);
        }
    }

    /// Starts keeping a copy of everything written.
    pub fn begin_capture(&mut self) {
        self.capture = Some(String::new());
    }

    /// Stops keeping a copy and returns it.
    pub fn end_capture(&mut self) -> String {
        self.capture.take().unwrap_or_default()
    }
}

/// The longest line [`terminal_safe`] lets through, in characters.
pub const MAX_LINE_CHARS: usize = 1500;

/// The safety net under every error and warning: control characters (other than the newlines
/// that separate lines) and bidirectional overrides are escaped, so that no text from a file, a
/// command line or the cloud drives the terminal, and a line longer than [`MAX_LINE_CHARS`] is cut
/// saying how much was left out. Messages quote user text with `error::shown` already; this
/// catches what reaches a message some other way (a library's error, a backend's answer).
pub fn terminal_safe(text: &str) -> String {
    text.split('\n').map(|line| crate::error::clipped(line, MAX_LINE_CHARS)).collect::<Vec<_>>().join("\n")
}

/// `error: ...` plus `  caused by: ...` lines, newline-terminated.
pub fn render_error(err: &(dyn StdError + 'static)) -> String {
    let mut s = format!("error: {err}\n");
    let mut source = err.source();
    while let Some(cause) = source {
        s.push_str(&format!("  caused by: {cause}\n"));
        source = cause.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    #[test]
    fn errors_show_their_cause_chain() {
        let err = Error::io("read", "/x/y", std::io::Error::from(std::io::ErrorKind::NotFound));
        assert_eq!(render_error(&err), "error: could not read `/x/y`\n  caused by: entity not found\n");
    }

    #[test]
    fn errors_reach_the_terminal_escaped_and_cut() {
        let err = Error::usage(format!("a\u{1b}[2J\tb\r{}", "x".repeat(10_000)));
        let shown = render_error(&err);
        let safe = terminal_safe(&shown);
        assert!(safe.starts_with("error: a\\u{1b}[2J\\tb\\r"), "{safe}");
        assert!(safe.ends_with("x… (8522 more characters)\n"), "{safe}");
        assert!(!safe.chars().any(|c| c.is_control() && c != '\n'), "{safe}");
        assert!(safe.lines().all(|l| l.chars().count() <= MAX_LINE_CHARS + 30), "{safe}");
        // The lines of a chain stay lines.
        assert_eq!(terminal_safe("error: a\n  caused by: b\n"), "error: a\n  caused by: b\n");
    }

    #[test]
    fn capture_keeps_what_was_printed() {
        let mut c = Console::default();
        c.begin_capture();
        c.print("one");
        c.warn("two");
        assert_eq!(c.end_capture(), "one\nwarning: two\n");
        assert_eq!(c.end_capture(), "");
    }
}
