//! The interactive shell: rustyline over a [`DevAmi`] session.
//!
//! Persistent history per user (`$DEVAMI_HISTORY`, else `$XDG_STATE_HOME/devami/history`, else
//! `~/.local/state/devami/history`), completion of command names, keyword names, file paths and
//! the instance and image ids the session knows (all from the command table in `commands/table.rs`), a
//! prompt showing the blueprint and the current instance's state. Ctrl-C at the prompt clears the
//! line; Ctrl-C during a command cancels that command (`interrupt.rs`); Ctrl-D or `exit` leaves,
//! warning when an instance is still running.

use std::borrow::Cow;
use std::path::PathBuf;

use rustyline::completion::{Completer, FilenameCompleter, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{CompletionType, Config, Context, Editor, Helper};

use crate::commands::ArgKind;
use crate::frontend::record;
use crate::interrupt;
use crate::parse::{self, Completion};
use crate::session::{DevAmi, Flow};

/// Completion for the devami prompt.
struct ShellHelper {
    files: FilenameCompleter,
    /// Instance and image ids the session knows, refreshed before each prompt.
    ids: Vec<String>,
}

impl Completer for ShellHelper {
    type Candidate = Pair;

    fn complete(&self, line: &str, pos: usize, ctx: &Context<'_>) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = line.get(..pos).unwrap_or(line);
        let pairs = |start: usize, items: Vec<String>| {
            let mut items = items;
            items.sort();
            items.dedup();
            (start, items.into_iter().map(|s| Pair { display: s.clone(), replacement: s }).collect())
        };
        let context = parse::completion_context(before);
        match &context {
            Completion::Nothing => Ok((pos, Vec::new())),
            Completion::CommandName { start, .. } | Completion::Keyword { start, .. } => {
                Ok(pairs(*start, context.candidates()))
            }
            Completion::Value { arg, prefix, start, .. } => match arg.map(|a| a.kind) {
                Some(ArgKind::Path) => self.files.complete(line, pos, ctx),
                Some(ArgKind::Str) => {
                    let mut items = context.candidates();
                    items.extend(self.ids.iter().filter(|id| id.starts_with(prefix.as_str())).cloned());
                    Ok(pairs(*start, items))
                }
                _ => Ok(pairs(*start, context.candidates())),
            },
        }
    }
}

impl Hinter for ShellHelper {
    type Hint = String;
}

impl Highlighter for ShellHelper {
    fn highlight_prompt<'b, 's: 'b, 'p: 'b>(&'s self, prompt: &'p str, _default: bool) -> Cow<'b, str> {
        Cow::Borrowed(prompt)
    }
}

impl Validator for ShellHelper {}

impl Helper for ShellHelper {}

/// Where the shell keeps its history.
pub fn history_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("DEVAMI_HISTORY") {
        return Some(PathBuf::from(p));
    }
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    Some(base.join("devami").join("history"))
}

/// Runs the interactive shell until `exit` or Ctrl-D; returns the exit status.
pub fn run(session: &mut DevAmi) -> i32 {
    let config = Config::builder()
        .auto_add_history(false)
        .history_ignore_space(true)
        .completion_type(CompletionType::List)
        .history_ignore_dups(true)
        .and_then(|b| b.max_history_size(10_000))
        .map(|b| b.build())
        .unwrap_or_default();
    let mut editor: Editor<ShellHelper, DefaultHistory> = match Editor::with_config(config) {
        Ok(e) => e,
        Err(e) => {
            session.console.warn(&format!("cannot start the line editor: {e}"));
            return 1;
        }
    };
    editor.set_helper(Some(ShellHelper { files: FilenameCompleter::new(), ids: Vec::new() }));
    let history = history_path();
    if let Some(path) = &history {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = editor.load_history(path);
    }
    session
        .console
        .print("devami shell: `help` lists commands, `help CMD` explains one, Ctrl-D or `exit` leaves");
    loop {
        if let Some(h) = editor.helper_mut() {
            h.ids = known_ids(session);
        }
        // Cleared before reading: a Ctrl-C from the moment Enter is pressed belongs to the command.
        interrupt::clear();
        let read = editor.readline(&session.prompt());
        // rustyline takes SIGINT for itself while it owns the terminal; take it back so Ctrl-C
        // during the command cancels the command.
        interrupt::install();
        let line = match read {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => {
                session.console.warn(&format!("cannot read input: {e}"));
                break;
            }
        };
        if !line.trim().is_empty() {
            let _ = editor.add_history_entry(line.as_str());
            if let Some(path) = &history {
                let _ = editor.save_history(path);
            }
        }
        session.console.begin_capture();
        let flow = match session.execute_line(&line) {
            Ok(outcome) => {
                session.console.print(&outcome.output.render());
                outcome.flow
            }
            Err(e) => {
                session.console.error(&e);
                Flow::Continue
            }
        };
        let output = session.console.end_capture();
        record::step(&mut session.console, line.trim(), &output);
        if flow == Flow::Exit {
            break;
        }
    }
    session.finish();
    0
}

fn known_ids(session: &DevAmi) -> Vec<String> {
    let st = session.state();
    st.instances.iter().map(|r| r.id.clone()).chain(st.images.iter().map(|r| r.id.clone())).collect()
}
