//! Running transcripts unattended: `devami run FILE`, piped stdin, `-c` one-shots and the tests.
//!
//! Each step is echoed as `devami> INPUT` before its output, so the output of a run is itself a
//! transcript. The first error stops the run with that error's exit status unless `keep_going`
//! is set; a step whose transcript expected exactly that error (its expected output matches)
//! is documentation of an error path and does not stop the run. With `check` set, every step's
//! output is compared with the transcript and a difference fails the run with a readable diff.

use crate::console::Console;
use crate::error::Error;
use crate::frontend::record;
use crate::interrupt;
use crate::session::{DevAmi, Flow};
use crate::transcript::{self, Step};

/// How to run a transcript.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Go on after a failed command.
    pub keep_going: bool,
    /// Compare each step's output with the transcript's expected output.
    pub check: bool,
}

/// What one step did.
#[derive(Debug)]
pub struct StepResult {
    /// The command failed (and the transcript did not expect it to).
    pub error: Option<Error>,
    /// The output differed from the transcript (only computed when checking).
    pub mismatch: Option<String>,
    /// Everything the step printed, errors included.
    pub output: String,
    /// The command asked to leave.
    pub exit: bool,
}

/// Runs one step: echo, execute, print, compare.
pub fn run_step(session: &mut DevAmi, step: &Step, check: bool) -> StepResult {
    interrupt::clear();
    session.console.print(&transcript::echo(&step.input));
    session.console.begin_capture();
    let (error, exit) = match session.execute_line(&step.input) {
        Ok(outcome) => {
            session.console.print(&outcome.output.render());
            (None, outcome.flow == Flow::Exit)
        }
        Err(e) => {
            session.console.error(&e);
            (Some(e), false)
        }
    };
    let output = session.console.end_capture();
    record::step(&mut session.console, &step.input, &output);
    let matched = step.expected.as_ref().map(|exp| transcript::check_output(exp, &output));
    let error = match (&error, &matched) {
        // The transcript documents this very error: not a failure.
        (Some(_), Some(Ok(()))) => None,
        _ => error,
    };
    let mismatch = match matched {
        Some(Err(diff)) if check => Some(diff),
        _ => None,
    };
    StepResult { error, mismatch, output, exit }
}

/// Runs steps in order; returns the process exit status.
pub fn run(session: &mut DevAmi, steps: &[Step], opts: RunOptions) -> i32 {
    let mut status = 0;
    for step in steps.iter().filter(|s| s.run) {
        let result = run_step(session, step, opts.check);
        if let Some(diff) = &result.mismatch {
            let err = Error::TranscriptMismatch {
                step: step.number,
                input: step.input.clone(),
                diff: diff.clone(),
            };
            report(&mut session.console, &err, step);
            if status == 0 {
                status = err.exit_code();
            }
            if !opts.keep_going {
                break;
            }
        }
        if let Some(err) = &result.error {
            if status == 0 {
                status = err.exit_code();
            }
            if !opts.keep_going {
                break;
            }
        }
        if result.exit {
            break;
        }
        if interrupt::pending() {
            session.console.warn("interrupted: the rest of the script was not run");
            status = Error::Interrupted.exit_code();
            break;
        }
    }
    session.finish();
    status
}

fn report(console: &mut Console, err: &Error, step: &Step) {
    console.error(err);
    console.warn(&format!("(step {} is at line {} of the transcript)", step.number, step.line));
}
