//! The tutorial player: `devami tutorial FILE.md`.
//!
//! A tutorial is a markdown file whose ```devami blocks are transcripts. The player shows the
//! prose before each step readably (`prose.rs`), then the step's command, and waits: Enter runs
//! it, `s` skips it, `q` quits. `--auto` runs every step without pausing and `--from N` starts at
//! step N. The steps run exactly as `devami run --check` runs them (`script::run_step`), so a
//! tutorial that works in the test suite works for the reader; when the output differs from what
//! the page shows, the player says so.

use std::io::{BufRead, Write};

use crate::error::Error;
use crate::frontend::prose;
use crate::frontend::script;
use crate::output;
use crate::session::DevAmi;
use crate::transcript::{self, Transcript};

/// How to play a tutorial.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlayOptions {
    /// Run every step without pausing.
    pub auto: bool,
    /// The first step to run (1-based).
    pub from: usize,
}

/// What the reader chose at a pause.
enum Choice {
    Run,
    Skip,
    Quit,
}

/// Plays a tutorial; returns the process exit status.
pub fn play(session: &mut DevAmi, tutorial: &Transcript, opts: PlayOptions, input: &mut dyn BufRead) -> i32 {
    let styled = output::stdout_is_terminal();
    let width = output::terminal_width().map(usize::from).unwrap_or(80).clamp(40, 100);
    let total = tutorial.steps.len();
    let mut status = 0;
    let from = opts.from.max(1);
    if from > total && total > 0 {
        let err = Error::StepOutOfRange { from, total };
        session.console.error(&err);
        return err.exit_code();
    }
    for step in &tutorial.steps {
        if step.number < from {
            continue;
        }
        if !step.prose.trim().is_empty() {
            session.console.print(&prose::render_width(&step.prose, styled, width));
        }
        if !step.run {
            session.console.print(&format!(
                "(step {}/{total}, shown only) {}",
                step.number,
                transcript::echo(&step.input)
            ));
            continue;
        }
        if !opts.auto {
            match ask(step.number, total, &step.input, input) {
                Choice::Run => {}
                Choice::Skip => continue,
                Choice::Quit => {
                    session.console.print("tutorial stopped; resume with --from");
                    break;
                }
            }
        }
        let result = script::run_step(session, step, true);
        if let Some(diff) = &result.mismatch {
            let err = Error::TranscriptMismatch {
                step: step.number,
                input: step.input.clone(),
                diff: diff.clone(),
            };
            session.console.error(&err);
            if status == 0 {
                status = err.exit_code();
            }
        }
        if let Some(err) = &result.error {
            if status == 0 {
                status = err.exit_code();
            }
            if opts.auto {
                break;
            }
        }
        if result.exit {
            break;
        }
    }
    if !tutorial.epilogue.trim().is_empty() {
        session.console.print(&prose::render_width(&tutorial.epilogue, styled, width));
    }
    status
}

fn ask(number: usize, total: usize, command: &str, input: &mut dyn BufRead) -> Choice {
    let mut out = std::io::stdout().lock();
    let _ = write!(
        out,
        "[step {number}/{total}] {}   (Enter: run, s: skip, q: quit) ",
        transcript::echo(command)
    );
    let _ = out.flush();
    let mut line = String::new();
    match input.read_line(&mut line) {
        Ok(0) | Err(_) => {
            let _ = writeln!(out);
            Choice::Quit
        }
        Ok(_) => match line.trim() {
            "s" | "S" | "skip" => Choice::Skip,
            "q" | "Q" | "quit" => Choice::Quit,
            _ => Choice::Run,
        },
    }
}
