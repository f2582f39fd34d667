//! One input line to a typed [`Line`], in either spelling of the command language.
//!
//! A line is nothing (empty or a comment), a Python import (accepted, does nothing), a binding
//! `X = NeuroCaaSAMI("path")`, a help request, or a command; an attribute read such as `devami.ip`
//! runs the command that shows it ([`ATTRIBUTES`]). The start of the line, after an optional
//! `>>> ` or `... ` prompt, tells the spelling: `ident(.ident)?(` is the Python call form
//! (`call.rs`), anything else the shell form (`shell.rs`). Both bind the arguments against the
//! command's [`CommandSpec`] and check each value's kind, so a wrong line fails here with a message
//! naming the command and the argument; defaults are left to the session. `split.rs` cuts one-shot
//! strings into commands and `complete.rs` tells the completer what is at the cursor.
//!
//! Invariants: no entry point panics on any input, the tokenizers are linear in the length of the
//! line, and list nesting is bounded.

use std::fmt;

use crate::Error;
use crate::commands::{self, CommandSpec};
use crate::error::shown_raw;

mod call;
mod complete;
mod shell;
mod split;
#[cfg(test)]
mod tests;

pub use complete::{Completion, completion_context};
pub use split::split_commands;

use call::CallParser;
use shell::parse_shell;

/// A literal value of an argument.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    None,
    List(Vec<Value>),
}

impl Value {
    /// The value and its kind for messages: `'abc' (a string)`.
    fn describe(&self) -> String {
        let kind = match self {
            Value::Str(_) => "a string",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Bool(_) => "a boolean",
            Value::None => return "None".to_string(),
            Value::List(_) => "a list",
        };
        format!("{} ({kind})", shown_raw(&self.to_string()))
    }
}

/// Python's `repr` of the value: `'text'`, `60`, `1.5`, `True`, `None`, `['a', 'b']`.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Str(s) => f.write_str(&python_repr(s)),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x:?}"),
            Value::Bool(true) => f.write_str("True"),
            Value::Bool(false) => f.write_str("False"),
            Value::None => f.write_str("None"),
            Value::List(items) => {
                f.write_str("[")?;
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str("]")
            }
        }
    }
}

/// The arguments given to a command, by the canonical argument name. Arguments not given (or
/// given as `None`) are absent; defaults are the session's business.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Args {
    values: Vec<(&'static str, Value)>,
}

impl Args {
    /// The value of an argument, if given.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.values.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// Sets an argument (replacing a previous value); for callers that build invocations.
    pub fn set(&mut self, name: &'static str, value: Value) {
        match self.values.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.values.push((name, value)),
        }
    }

    /// The given arguments, in the order they were set.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &Value)> {
        self.values.iter().map(|(n, v)| (*n, v))
    }

    /// A string (also a path or a rest-of-line argument).
    pub fn str(&self, name: &str) -> Option<&str> {
        match self.get(name)? {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// An integer.
    pub fn int(&self, name: &str) -> Option<i64> {
        match self.get(name)? {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// A boolean; `None` when not given.
    pub fn bool(&self, name: &str) -> Option<bool> {
        match self.get(name)? {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// A number (an integer is converted).
    pub fn float(&self, name: &str) -> Option<f64> {
        match self.get(name)? {
            Value::Float(x) => Some(*x),
            Value::Int(i) => Some(*i as f64),
            _ => None,
        }
    }

    /// A list of strings (a single string gives a list of one).
    pub fn list(&self, name: &str) -> Option<Vec<String>> {
        match self.get(name)? {
            Value::Str(s) => Some(vec![s.clone()]),
            Value::List(items) => items
                .iter()
                .map(|v| match v {
                    Value::Str(s) => Some(s.clone()),
                    _ => None,
                })
                .collect(),
            _ => None,
        }
    }

    /// Whether the argument was given (not counting `None`).
    pub fn is_given(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

/// Which spelling a command was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spelling {
    /// Python: `devami.launch_ami(ami="ubuntu18")`.
    Call,
    /// Shell: `launch_ami ubuntu18`.
    Shell,
}

/// A command with its checked arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    pub spec: &'static CommandSpec,
    pub args: Args,
    /// The object prefix of the call form (`devami` in `devami.get_ip()`), for the session to
    /// check against the name it bound.
    pub object: Option<String>,
    pub spelling: Spelling,
}

/// What one input line asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// An empty or comment-only line.
    Nothing,
    /// A Python `import` or `from ... import ...` line: accepted, does nothing.
    Import,
    /// `name = NeuroCaaSAMI("path")`: bind `name` to the session and open the blueprint at `path`.
    Bind { name: String, path: String },
    /// A command to run. Never the `help` command: that is [`Line::Help`].
    Command(Invocation),
    /// `help`, `help CMD`, `CMD --help`, `help(CMD)`, `CMD?`: the overview or one command.
    Help(Option<&'static CommandSpec>),
}

/// Parses one input line.
pub fn parse_line(line: &str) -> Result<Line, Error> {
    let (_, body) = strip_prompt(line);
    match classify(body) {
        Form::Empty => Ok(Line::Nothing),
        Form::Import => Ok(Line::Import),
        Form::HelpSuffix(name) => help_for(name),
        Form::Assign => CallParser::new(body, true).assignment(),
        Form::Call => CallParser::new(body, true).call(),
        Form::Attribute => CallParser::new(body, true).attribute(),
        Form::Shell => parse_shell(body),
    }
}

// ---------------------------------------------------------------------------------------------
// Telling the forms apart.

/// The name of the class whose construction binds the session (compared without case).
const CLASS_NAME: &str = "NeuroCaaSAMI";

/// The attributes of the original object that a line may read (`devami.ip`, `ip = devami.ip`),
/// each with the command that shows it.
pub const ATTRIBUTES: &[(&str, &str)] = &[
    ("ip", "get_ip"),
    ("instance", "status"),
    ("instance_hist", "history"),
    ("ami_hist", "history"),
    ("commands", "jobs"),
];

enum Form<'a> {
    Empty,
    Import,
    Assign,
    Call,
    /// `devami.ip`: an attribute of the original object, read by the command it stands for.
    Attribute,
    Shell,
    /// `name?` or `devami.name?` (IPython's help).
    HelpSuffix(&'a str),
}

/// Strips leading whitespace and a `>>> ` or `... ` prompt; returns the offset of what is left.
///
/// Only scans the start of `line`, never its end, so that `split_commands` stays linear.
fn strip_prompt(line: &str) -> (usize, &str) {
    let trimmed = line.trim_start();
    let rest = [">>>", "..."]
        .iter()
        .find_map(|p| trimmed.strip_prefix(p))
        .filter(|r| r.is_empty() || r.starts_with(char::is_whitespace))
        .map_or(trimmed, str::trim_start);
    (line.len() - rest.len(), rest)
}

/// Tells the forms apart by the start of a line without its prompt (never scanning its end).
fn classify(s: &str) -> Form<'_> {
    if s.trim_start().is_empty() || s.starts_with('#') {
        return Form::Empty;
    }
    let Some(first_end) = ident_end(s, 0) else { return Form::Shell };
    let first = &s[..first_end];
    let after_first = &s[first_end..];
    if (first == "import" || first == "from") && after_first.starts_with([' ', '\t']) {
        return Form::Import;
    }
    // `ident(.ident)*` then `(` is a call; more than one dot is reported by the call parser.
    let mut end = first_end;
    while let Some(next) = s[end..].strip_prefix('.').and_then(|_| ident_end(s, end + 1)) {
        end = next;
    }
    let after = s[end..].trim_start();
    if after.starts_with('(') {
        return Form::Call;
    }
    let help_suffix = after.strip_prefix("??").or_else(|| after.strip_prefix('?'));
    if help_suffix.is_some_and(|r| r.trim_start().is_empty()) {
        let name = &s[..end];
        return Form::HelpSuffix(name.rsplit('.').next().unwrap_or(name));
    }
    if end == first_end && after.starts_with('=') && !after.starts_with("==") {
        return Form::Assign;
    }
    if end > first_end && (after.is_empty() || after.starts_with([';', '#'])) {
        return Form::Attribute;
    }
    Form::Shell
}

/// The end of the identifier starting at `start`, if one starts there.
fn ident_end(s: &str, start: usize) -> Option<usize> {
    let rest = s.get(start..)?;
    let mut chars = rest.char_indices();
    let (_, c) = chars.next()?;
    if !(c == '_' || c.is_alphabetic()) {
        return None;
    }
    let len = chars.find(|(_, c)| !(*c == '_' || c.is_alphanumeric())).map(|(i, _)| i).unwrap_or(rest.len());
    Some(start + len)
}

/// A help request for a command name: the overview for `help` itself without a name.
fn help_for(name: &str) -> Result<Line, Error> {
    match commands::lookup(name) {
        Some(spec) => Ok(Line::Help(Some(spec))),
        None => Err(unknown_command(name)),
    }
}

fn unknown_command(name: &str) -> Error {
    Error::UnknownCommand { name: shown_raw(name), suggestion: commands::suggest(name).map(str::to_string) }
}

/// Python's `repr` of a string.
fn python_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => {
                let n = c as u32;
                if n < 0x100 {
                    out.push_str(&format!("\\x{n:02x}"));
                } else {
                    out.push_str(&format!("\\u{n:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// The 1-based character column of a byte offset, for messages.
fn column(s: &str, byte: usize) -> usize {
    s.get(..byte).map_or(byte, |p| p.chars().count()) + 1
}
