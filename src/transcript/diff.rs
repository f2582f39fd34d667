//! Checking a step's output against its transcript, and the diff shown when they differ.
//!
//! The diff aligns expected lines (wildcards allowed) with output lines at the least number of
//! differing lines, over a bounded window, and shows a few dozen lines around the first
//! difference, so a huge output still gives a short, readable error.

use super::matcher::{self, BUDGET, Budget, Exhausted, LinePat, pat_text};
use super::{Step, shorten};
use crate::error::Error;

/// The largest number of lines on each side that the diff aligns line by line.
const DIFF_WINDOW: usize = 400;

/// Lines of diff shown around the first difference.
const DIFF_LINES: usize = 40;

/// Lines of context shown before the first difference.
const DIFF_CONTEXT: usize = 6;

/// Checks a step's output against its transcript; `Ok` when the step expects nothing.
pub fn check_step(step: &Step, actual: &str) -> Result<(), Error> {
    match &step.expected {
        Some(expected) => check_output(expected, actual).map_err(|diff| Error::TranscriptMismatch {
            step: step.number,
            input: step.input.clone(),
            diff,
        }),
        None => Ok(()),
    }
}

/// Compares output with expected lines (wildcards allowed); the error is a readable diff.
pub fn check_output(expected: &[String], actual: &str) -> Result<(), String> {
    let pats = matcher::compile_lines(expected);
    let act = matcher::actual_lines(actual);
    let mut budget = Budget(BUDGET);
    match matcher::lines_match(&pats, &act, &mut budget) {
        Ok(true) => Ok(()),
        Ok(false) => Err(diff(&pats, &act)),
        Err(Exhausted) => Err(format!(
            "the output ({} lines) is too large to compare with these wildcards; \
             make the expected output more literal or split the step",
            act.len()
        )),
    }
}

/// One line of a diff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// Matched: expected index, actual index.
    Same(usize, usize),
    /// A `...` line, shown once.
    Gap(usize),
    /// An actual line taken by a `...`.
    Absorbed(usize),
    /// Expected but missing.
    Missing(usize),
    /// Printed but not expected.
    Extra(usize),
}

/// A readable diff of expected lines against actual lines, around the first difference.
fn diff(pats: &[LinePat], act: &[&str]) -> String {
    let mut budget = Budget(BUDGET);
    let mut matches =
        |pat: &LinePat, line: &str| matcher::line_matches(pat, line, &mut budget).unwrap_or(false);
    // Common prefix and suffix of plain lines.
    let mut pre = 0;
    while pre < pats.len()
        && pre < act.len()
        && !matches!(pats[pre], LinePat::Gap)
        && matches(&pats[pre], act[pre])
    {
        pre += 1;
    }
    let mut suf = 0;
    while suf < pats.len() - pre && suf < act.len() - pre {
        let (p, a) = (&pats[pats.len() - 1 - suf], act[act.len() - 1 - suf]);
        if matches!(p, LinePat::Gap) || !matches(p, a) {
            break;
        }
        suf += 1;
    }
    let pe = (pats.len() - suf).min(pre + DIFF_WINDOW);
    let ae = (act.len() - suf).min(pre + DIFF_WINDOW);
    let truncated = pe < pats.len() - suf || ae < act.len() - suf;
    let mut ops: Vec<Op> = (0..pre).map(|i| Op::Same(i, i)).collect();
    align(&pats[pre..pe], &act[pre..ae], pre, &mut matches, &mut ops);
    if !truncated {
        ops.extend((0..suf).map(|k| Op::Same(pats.len() - suf + k, act.len() - suf + k)));
    }
    render_diff(pats, act, &ops, truncated)
}

/// Appends the cheapest alignment of `pats` with `act` (both starting at `base`).
fn align(
    pats: &[LinePat],
    act: &[&str],
    base: usize,
    matches: &mut impl FnMut(&LinePat, &str) -> bool,
    ops: &mut Vec<Op>,
) {
    let (n, m) = (pats.len(), act.len());
    let w = m + 1;
    // cost[i * w + j]: cost of aligning pats[i..] with act[j..].
    let mut cost = vec![0u32; (n + 1) * w];
    let mut same = vec![false; (n + 1) * w];
    for j in (0..m).rev() {
        cost[n * w + j] = cost[n * w + j + 1] + 1;
    }
    for i in (0..n).rev() {
        let gap = matches!(pats[i], LinePat::Gap);
        cost[i * w + m] = cost[(i + 1) * w + m] + u32::from(!gap);
        for j in (0..m).rev() {
            let c = if gap {
                cost[(i + 1) * w + j].min(cost[i * w + j + 1])
            } else {
                let skip = 1 + cost[(i + 1) * w + j].min(cost[i * w + j + 1]);
                if matches(&pats[i], act[j]) {
                    same[i * w + j] = true;
                    skip.min(cost[(i + 1) * w + j + 1])
                } else {
                    skip
                }
            };
            cost[i * w + j] = c;
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut in_gap = false;
    while i < n || j < m {
        let here = cost[i * w + j];
        if i < n && matches!(pats[i], LinePat::Gap) {
            if !in_gap {
                ops.push(Op::Gap(base + i));
                in_gap = true;
            }
            // End the gap as soon as that is optimal, so the lines after it line up.
            if j < m && here != cost[(i + 1) * w + j] {
                ops.push(Op::Absorbed(base + j));
                j += 1;
            } else {
                i += 1;
                in_gap = false;
            }
        } else if i < n && j < m && same[i * w + j] && here == cost[(i + 1) * w + j + 1] {
            ops.push(Op::Same(base + i, base + j));
            i += 1;
            j += 1;
        } else if i < n && here == 1 + cost[(i + 1) * w + j] {
            ops.push(Op::Missing(base + i));
            i += 1;
        } else if j < m {
            ops.push(Op::Extra(base + j));
            j += 1;
        } else {
            // Unreachable with a consistent table; never loop.
            ops.push(Op::Missing(base + i));
            i += 1;
        }
    }
}

fn render_diff(pats: &[LinePat], act: &[&str], ops: &[Op], truncated: bool) -> String {
    let is_diff = |op: &Op| matches!(op, Op::Missing(_) | Op::Extra(_));
    let mut out = String::from("expected (-) vs actual (+):\n");
    let Some(first) = ops.iter().position(is_diff) else {
        out.push_str("  (the output differs in a way this diff cannot show; compare the full output)\n");
        return out;
    };
    let start = first.saturating_sub(DIFF_CONTEXT);
    let end = (start + DIFF_LINES).min(ops.len());
    let (mut e, mut a) = (0, 0);
    for op in ops.iter().take(start) {
        match op {
            Op::Same(..) => (e, a) = (e + 1, a + 1),
            Op::Gap(_) | Op::Missing(_) => e += 1,
            Op::Absorbed(_) | Op::Extra(_) => a += 1,
        }
    }
    if start > 0 {
        out.push_str(&format!("@@ expected line {}, output line {} @@\n", e + 1, a + 1));
    }
    if act.is_empty() {
        out.push_str("  (the command printed nothing)\n");
    }
    for op in &ops[start..end] {
        let (mark, text) = match *op {
            Op::Same(_, j) | Op::Absorbed(j) => ("  ", act.get(j).copied().unwrap_or("")),
            Op::Gap(i) => ("  ", pats.get(i).map_or("...", pat_text)),
            Op::Missing(i) => ("- ", pats.get(i).map_or("", pat_text)),
            Op::Extra(j) => ("+ ", act.get(j).copied().unwrap_or("")),
        };
        out.push_str(mark);
        out.push_str(&shorten(text));
        out.push('\n');
    }
    let more = ops[end..].iter().filter(|op| is_diff(op)).count();
    if truncated {
        out.push_str("(later lines not shown)\n");
    } else if more > 0 {
        out.push_str(&format!("({more} more differing lines not shown)\n"));
    } else if end < ops.len() {
        out.push_str(&format!("({} more matching lines)\n", ops.len() - end));
    }
    if out.ends_with('\n') {
        out.pop();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transcript::testing::lines;
    use crate::transcript::{Kind, parse};

    #[test]
    fn diff_of_a_changed_line() {
        let diff = check_output(
            &lines("launched [ID]\nstate: running\nready"),
            "launched i-0abc\nstate: pending\nready\n",
        )
        .unwrap_err();
        assert_eq!(
            diff,
            "expected (-) vs actual (+):\n  launched i-0abc\n- state: running\n+ state: pending\n  ready"
        );
    }

    #[test]
    fn diff_of_missing_and_extra_lines() {
        let diff = check_output(&lines("a\nb\nc"), "a\nc\nd\n").unwrap_err();
        assert_eq!(diff, "expected (-) vs actual (+):\n  a\n- b\n  c\n+ d");
        let diff = check_output(&lines("a"), "").unwrap_err();
        assert_eq!(diff, "expected (-) vs actual (+):\n  (the command printed nothing)\n- a");
    }

    #[test]
    fn diff_shows_lines_taken_by_ellipsis() {
        let diff = check_output(&lines("...\nDone"), "a\nb\nFailed\n").unwrap_err();
        assert_eq!(diff, "expected (-) vs actual (+):\n  ...\n  a\n  b\n  Failed\n- Done");
    }

    #[test]
    fn diff_lines_up_after_an_ellipsis() {
        let expected = lines("from [ID]\n...\ninstance [ID] is running ([DURATION])\nssh ubuntu@[..]\nDone");
        let actual =
            "from ami-0abc123\nwaiting\nwaiting\ninstance i-0123 is running (3s)\nssh ec2-user@1.2.3.4\n";
        assert_eq!(
            check_output(&expected, actual).unwrap_err(),
            "expected (-) vs actual (+):\n  from ami-0abc123\n  ...\n  waiting\n  waiting\n  \
             instance i-0123 is running (3s)\n- ssh ubuntu@[..]\n- Done\n+ ssh ec2-user@1.2.3.4"
        );
    }

    #[test]
    fn diff_is_limited_around_the_first_difference() {
        let expected: Vec<String> = (0..200).map(|i| format!("line {i}")).collect();
        let actual: String =
            (0..200).map(|i| if i == 100 { "changed\n".into() } else { format!("line {i}\n") }).collect();
        let diff = check_output(&expected, &actual).unwrap_err();
        let shown: Vec<&str> = diff.lines().collect();
        assert!(shown.len() <= DIFF_LINES + 4, "{diff}");
        assert_eq!(shown[1], "@@ expected line 95, output line 95 @@");
        assert!(diff.contains("- line 100\n+ changed\n  line 101"), "{diff}");
        assert!(diff.ends_with("more matching lines)"), "{diff}");
    }

    #[test]
    fn mismatch_error_names_the_step() {
        let t = parse("devami> status\nrunning\n", Kind::Script).unwrap();
        let e = check_step(&t.steps[0], "stopped\n").unwrap_err();
        assert!(matches!(e, Error::TranscriptMismatch { step: 1, .. }));
        assert_eq!(e.exit_code(), 4);
        let text = e.to_string();
        assert!(text.contains("step 1 (`status`)") && text.contains("- running\n+ stopped"), "{text}");
        let script = parse("status\n", Kind::Script).unwrap();
        assert!(check_step(&script.steps[0], "anything").is_ok());
    }
}
