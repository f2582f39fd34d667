//! Splitting a one-shot string (`devami DIR -c 'status; jobs'`) into commands, on `;` and newlines.
//!
//! Each piece is scanned with the quoting rules of its own spelling, decided from its start as
//! `parse_line` does, so a separator inside a string, brackets or a comment does not split. Linear
//! in the length of the line (also on long runs of blank pieces); never panics on any input.

use super::{Form, classify, strip_prompt};

/// Splits a one-shot string such as `status; jobs` into commands, on `;` and newlines outside
/// quotes, brackets and comments. Each command keeps its own spelling's quoting rules, so
/// `f("a;b")` and `exec echo 'a;b'` are not split. Empty commands are dropped.
pub fn split_commands(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut piece_start = 0;
    let mut pos = 0;
    let bytes = line.as_bytes();
    while pos <= line.len() {
        // An empty piece (blanks, then a separator) is skipped here: deciding its form would
        // scan all the whitespace after it, once per piece (quadratic on runs of newlines).
        let blanks = line[piece_start..].bytes().take_while(|b| matches!(b, b' ' | b'\t' | b'\r')).count();
        match bytes.get(piece_start + blanks) {
            None => break,
            Some(b';' | b'\n') => {
                pos = piece_start + blanks + 1;
                piece_start = pos;
                continue;
            }
            Some(_) => {}
        }
        // At the start of a piece, decide its quoting rules from its form.
        let (_, body) = strip_prompt(&line[piece_start..]);
        let python = matches!(classify(body), Form::Call | Form::Assign | Form::Import | Form::Attribute);
        let end = if python { python_piece_end(line, pos) } else { shell_piece_end(line, pos) };
        let piece = line[piece_start..end].trim();
        if !piece.is_empty() {
            out.push(piece.to_string());
        }
        if end >= line.len() {
            break;
        }
        // Skip the separator (`;` or a newline, both one byte).
        debug_assert!(matches!(bytes[end], b';' | b'\n'));
        pos = end + 1;
        piece_start = pos;
    }
    out
}

/// The end of a call-form piece starting at `pos`: the next `;` or newline outside strings,
/// brackets and comments, or the end of the line.
fn python_piece_end(line: &str, pos: usize) -> usize {
    let bytes = line.as_bytes();
    let mut i = pos;
    let mut depth = 0usize;
    while i < bytes.len() {
        match bytes[i] {
            q @ (b'\'' | b'"') => {
                let triple = bytes.get(i..i + 3) == Some(&[q, q, q]);
                i += if triple { 3 } else { 1 };
                while i < bytes.len() {
                    if bytes[i] == b'\\' {
                        i += 2;
                    } else if triple && bytes.get(i..i + 3) == Some(&[q, q, q]) {
                        i += 3;
                        break;
                    } else if !triple && bytes[i] == q {
                        i += 1;
                        break;
                    } else if !triple && bytes[i] == b'\n' {
                        // An unterminated string ends at the end of its line.
                        break;
                    } else {
                        i += 1;
                    }
                }
                continue;
            }
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            b'#' => {
                // A comment runs to the end of the line.
                match line[i..].find('\n') {
                    Some(n) if depth == 0 => return i + n,
                    Some(n) => i += n,
                    None => return line.len(),
                }
                continue;
            }
            b';' | b'\n' if depth == 0 => return i,
            _ => {}
        }
        i += 1;
    }
    line.len()
}

/// The end of a shell-form piece starting at `pos`: the next unquoted `;` or newline.
fn shell_piece_end(line: &str, pos: usize) -> usize {
    let bytes = line.as_bytes();
    let mut i = pos;
    let mut word_start = true;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'\'' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'\'' {
                    i += 1;
                }
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'\\' => i += 1,
            b'#' if word_start => match line[i..].find('\n') {
                Some(n) => return i + n,
                None => return line.len(),
            },
            b';' | b'\n' => return i,
            _ => {}
        }
        word_start = matches!(b, b' ' | b'\t' | b'\r');
        i += 1;
    }
    line.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse_line;

    #[test]
    fn splitting_one_shot_strings() {
        #[track_caller]
        fn check_split(input: &str, expected: &[&str]) {
            assert_eq!(split_commands(input), expected, "input: {input:?}");
        }
        check_split("status; jobs", &["status", "jobs"]);
        check_split("status;jobs;", &["status", "jobs"]);
        check_split(";; status ;; ", &["status"]);
        check_split("", &[]);
        check_split("status\njobs", &["status", "jobs"]);
        check_split("devami.create_devami(\"a;b\"); status", &["devami.create_devami(\"a;b\")", "status"]);
        check_split("create_devami('a\\';b'); status", &["create_devami('a\\';b')", "status"]);
        check_split(
            "create_devami(\"\"\"a;\nb\"\"\"); status",
            &["create_devami(\"\"\"a;\nb\"\"\")", "status"],
        );
        check_split(
            "launch_ami(ami=\"x\",\n timeout=3); get_ip()",
            &["launch_ami(ami=\"x\",\n timeout=3)", "get_ip()"],
        );
        check_split("exec echo 'a;b'; ls", &["exec echo 'a;b'", "ls"]);
        check_split("exec echo \"a\\\";b\"; ls", &["exec echo \"a\\\";b\"", "ls"]);
        check_split("create_devami a\\;b; ls", &["create_devami a\\;b", "ls"]);
        check_split("status # a; b\njobs", &["status # a; b", "jobs"]);
        check_split("get_ip() # a; b\njobs", &["get_ip() # a; b", "jobs"]);
        check_split("create_devami x#y; ls", &["create_devami x#y", "ls"]);
        check_split("create_devami(\"unterminated; status", &["create_devami(\"unterminated; status"]);
        check_split("create_devami(\"unterminated\nstatus", &["create_devami(\"unterminated\nstatus"]);
        check_split("d = NeuroCaaSAMI(\"a;b\"); status", &["d = NeuroCaaSAMI(\"a;b\")", "status"]);
        check_split(
            ">>> devami.get_ip(); >>> devami.status()",
            &[">>> devami.get_ip()", ">>> devami.status()"],
        );
        check_split("é; ✓", &["é", "✓"]);
        for piece in split_commands("status; devami.create_devami(\"a;b\"); exec echo 'x;y'") {
            assert!(parse_line(&piece).is_ok(), "{piece}");
        }
    }
}
