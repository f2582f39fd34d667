//! Parsing one input line into a typed invocation, in both spellings of the command language.
//!
//! A line is one of: nothing (empty or a comment), a Python import (accepted, does nothing), an
//! assignment `X = NeuroCaaSAMI("path")` that binds the session to a blueprint folder, a help
//! request, or a command. An attribute of the original object (`devami.ip`, also on the right of
//! an assignment, `ip = devami.ip`) reads as the command that shows it ([`ATTRIBUTES`]). Commands come in two spellings, told apart by the start of the line
//! (after an optional `>>> ` or `... ` prompt):
//! - the **call form** `ident(.ident)?(` is Python: `devami.launch_ami(ami = "ubuntu18")`, with
//!   positional and keyword arguments whose values are Python literals (strings with escapes,
//!   ints, floats, `True`/`False`/`None`, lists and tuples);
//! - anything else is the **shell form**, split into words like a POSIX shell:
//!   `launch_devinstance ubuntu18 --timeout 120 --dry-run`.
//!
//! Both spellings bind arguments against the command's [`CommandSpec`] in `command.rs` and check
//! each value against its [`ArgKind`], so a wrong line fails here with a message that names the
//! command and the argument, before anything runs. Defaults are not filled in: the session applies
//! them. The tokenizers are written by hand, work in linear time and never panic on any input;
//! nesting of lists is bounded.
//!
//! The module also splits one-shot strings on `;` ([`split_commands`]) and tells the shell's
//! completer what is being typed at the cursor ([`completion_context`]).

use std::fmt;

use crate::Error;
use crate::commands::{self, ArgKind, ArgSpec, CommandSpec};
use crate::error::{shown, shown_raw};

/// A rest-of-line argument that is one quoted word (`"a; b"`, `'a; b'`) means its content, as
/// `ssh host "a; b"` runs `a; b`: the quotes are the local shell's, not the remote command's.
fn unwrap_quoted(rest: &str) -> Option<std::borrow::Cow<'_, str>> {
    let q = rest.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let body = rest.strip_prefix(q)?.strip_suffix(q)?;
    if q == '\'' {
        return (!body.contains('\'')).then_some(std::borrow::Cow::Borrowed(body));
    }
    let mut out = String::with_capacity(body.len());
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return None,
            '\\' => match chars.next() {
                Some(n @ ('"' | '\\' | '$' | '`')) => out.push(n),
                Some(n) => {
                    out.push('\\');
                    out.push(n);
                }
                None => return None,
            },
            c => out.push(c),
        }
    }
    Some(std::borrow::Cow::Owned(out))
}

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

/// What the text before the cursor is in the middle of, for completion.
///
/// `start` is the byte offset in the line where the text being completed begins: a candidate
/// replaces `line[start..cursor]`. `prefix` is that text (unquoted for a shell word).
#[derive(Debug, Clone, PartialEq)]
pub enum Completion {
    /// Nothing sensible to complete.
    Nothing,
    /// A command name or alias (first word, after `devami.`, or the argument of `help`).
    CommandName { prefix: String, start: usize },
    /// An argument name: after `--` or `-` in the shell form (the prefix includes the dashes),
    /// or at the start of an argument inside the call parentheses.
    Keyword { spec: &'static CommandSpec, spelling: Spelling, prefix: String, start: usize },
    /// A value of `arg` (`None` when no argument takes one there). The shell completes paths
    /// for [`ArgKind::Path`] and instance or image ids for string arguments named like `*id` or
    /// `ami`. In the call form `start` is just after the opening quote when there is one.
    Value {
        spec: &'static CommandSpec,
        arg: Option<&'static ArgSpec>,
        spelling: Spelling,
        prefix: String,
        start: usize,
    },
}

impl Completion {
    /// The candidates that need no session knowledge: command names, argument names in the
    /// spelling of the line (`--timeout`, `--no-dry-run`, `timeout=`) and `True`/`False` for
    /// boolean values. Each replaces `line[start..cursor]`; sorted, filtered by the prefix.
    pub fn candidates(&self) -> Vec<String> {
        let mut out: Vec<String> = match self {
            Completion::Nothing => Vec::new(),
            Completion::CommandName { prefix, .. } => {
                commands::names().filter(|n| n.starts_with(prefix.as_str())).map(str::to_string).collect()
            }
            Completion::Keyword { spec, spelling: Spelling::Shell, prefix, .. } => spec
                .args
                .iter()
                .flat_map(|a| {
                    let flag = a.flag();
                    let negated = (a.kind == ArgKind::Bool).then(|| format!("--no-{}", &flag[2..]));
                    std::iter::once(flag).chain(negated)
                })
                .filter(|f| f.starts_with(prefix.as_str()))
                .collect(),
            Completion::Keyword { spec, spelling: Spelling::Call, prefix, .. } => spec
                .args
                .iter()
                .filter(|a| a.name.starts_with(prefix.as_str()))
                .map(|a| format!("{}=", a.name))
                .collect(),
            Completion::Value { arg: Some(arg), spelling, prefix, .. } if arg.kind == ArgKind::Bool => {
                let words = match spelling {
                    Spelling::Call => ["True", "False"],
                    Spelling::Shell => ["true", "false"],
                };
                words.iter().filter(|w| w.starts_with(prefix.as_str())).map(|w| w.to_string()).collect()
            }
            Completion::Value { .. } => Vec::new(),
        };
        out.sort();
        out.dedup();
        out
    }
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

/// What is being typed at the end of `line_before_cursor`, for completion.
pub fn completion_context(line_before_cursor: &str) -> Completion {
    let (offset, body) = strip_prompt(line_before_cursor);
    let s = body;
    let Some(first_end) = ident_end(s, 0) else {
        // Not starting with an identifier: the shell form (`? laun`) or nothing yet.
        return if s.is_empty() {
            Completion::CommandName { prefix: String::new(), start: offset }
        } else {
            shell_completion(s, offset)
        };
    };
    if first_end == s.len() {
        return Completion::CommandName { prefix: s.to_string(), start: offset };
    }
    let after_first = &s[first_end..];
    if let Some(rest) = after_first.strip_prefix('.') {
        let second_start = first_end + 1;
        let second_end = ident_end(s, second_start).unwrap_or(second_start);
        if second_end == s.len() {
            return Completion::CommandName { prefix: rest.to_string(), start: offset + second_start };
        }
        let after = s[second_end..].trim_start();
        if let Some(spec) = after.strip_prefix('(').and(commands::lookup(&s[second_start..second_end])) {
            let open = s.len() - after.len();
            return call_completion(spec, s, open + 1, offset);
        }
        return Completion::Nothing;
    }
    let after = after_first.trim_start();
    if after.starts_with('(') {
        let Some(spec) = commands::lookup(&s[..first_end]) else { return Completion::Nothing };
        let open = s.len() - after.len();
        return call_completion(spec, s, open + 1, offset);
    }
    if after.starts_with('=') && !after.starts_with("==") {
        // `X = NeuroCaaSAMI("pa`: complete the folder like `open PATH`.
        let rhs_start = s.len() - after.len() + 1;
        let mut lex = Lexer::new(s, rhs_start);
        let Ok(Some(Token { tok: Tok::Ident(callee), .. })) = lex.next() else { return Completion::Nothing };
        let Ok(Some(Token { tok: Tok::Punct('('), end, .. })) = lex.next() else {
            return Completion::Nothing;
        };
        if !callee.eq_ignore_ascii_case(CLASS_NAME) {
            return Completion::Nothing;
        }
        let Some(open) = commands::lookup("open") else { return Completion::Nothing };
        return call_completion(open, s, end, offset);
    }
    shell_completion(s, offset)
}

/// Quotes a word for the shell form when it needs it: `my file` becomes `'my file'`.
pub fn shell_quote(s: &str) -> String {
    let safe = |c: char| c.is_alphanumeric() || "_-./:@%+=,~^".contains(c);
    if !s.is_empty() && s.chars().all(safe) && !s.starts_with('~') {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
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

/// How deep lists and tuples may nest in a call-form value.
const MAX_DEPTH: usize = 32;

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

// ---------------------------------------------------------------------------------------------
// The call form: a small Python lexer and parser.

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    /// An integer literal before its sign is applied (so that `-9223372036854775808` works).
    Int(i128),
    Float(f64),
    Punct(char),
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    start: usize,
    end: usize,
}

/// A lexing failure; `string_start` is set when a string is not terminated (for completion).
#[derive(Debug)]
struct LexError {
    message: String,
    string_start: Option<StringStart>,
}

/// Where an unterminated string began: the byte offset of its content.
#[derive(Debug, Clone, Copy)]
struct StringStart {
    content: usize,
}

#[derive(Debug, Clone)]
struct Lexer<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> Lexer<'a> {
    fn new(src: &'a str, pos: usize) -> Self {
        Lexer { src, pos }
    }

    fn peek_char(&self) -> Option<char> {
        self.src.get(self.pos..)?.chars().next()
    }

    fn rest(&self) -> &'a str {
        self.src.get(self.pos..).unwrap_or("")
    }

    fn error(&self, message: String) -> LexError {
        LexError { message, string_start: None }
    }

    /// Skips whitespace, line continuations and a comment.
    fn skip_blank(&mut self) {
        loop {
            let rest = self.rest();
            let trimmed = rest.trim_start_matches([' ', '\t', '\r', '\n', '\x0c']);
            self.pos += rest.len() - trimmed.len();
            if let Some(after) = trimmed.strip_prefix("\\\n") {
                self.pos += trimmed.len() - after.len();
            } else if trimmed.starts_with('#') {
                self.pos = self.src.len();
            } else {
                return;
            }
        }
    }

    fn next(&mut self) -> Result<Option<Token>, LexError> {
        self.skip_blank();
        let start = self.pos;
        let Some(c) = self.peek_char() else { return Ok(None) };
        let tok = if c == '_' || c.is_alphabetic() {
            let end = ident_end(self.src, start).unwrap_or(start + c.len_utf8());
            let word = &self.src[start..end];
            self.pos = end;
            match self.peek_char() {
                Some(q @ ('\'' | '"')) if is_string_prefix(word) => {
                    let lower = word.to_ascii_lowercase();
                    if lower.contains('b') {
                        return Err(self.error(format!(
                            "bytes literals ({}) are not supported: write a plain string",
                            shown(&format!("{word}{q}...{q}"))
                        )));
                    }
                    if lower.contains('f') {
                        return Err(self.error(format!(
                            "f-strings ({}) are not literals: write the final text in a plain string",
                            shown(&format!("{word}{q}...{q}"))
                        )));
                    }
                    Tok::Str(self.string(lower.contains('r'))?)
                }
                _ => Tok::Ident(word.to_string()),
            }
        } else if c == '\'' || c == '"' {
            Tok::Str(self.string(false)?)
        } else if c.is_ascii_digit()
            || (c == '.' && self.rest()[1..].starts_with(|d: char| d.is_ascii_digit()))
        {
            self.number()?
        } else if "()[]{},=.;:-+*".contains(c) {
            self.pos += 1;
            Tok::Punct(c)
        } else {
            return Err(self.error(format!(
                "unexpected character {} at column {}",
                shown(&c.to_string()),
                column(self.src, start)
            )));
        };
        Ok(Some(Token { tok, start, end: self.pos }))
    }

    /// A string literal starting at the quote under the cursor.
    fn string(&mut self, raw: bool) -> Result<String, LexError> {
        let open_at = self.pos;
        let Some(q) = self.peek_char() else { return Err(self.error("expected a string".into())) };
        let triple: String = std::iter::repeat_n(q, 3).collect();
        let is_triple = self.rest().starts_with(&triple);
        self.pos += if is_triple { 3 } else { 1 };
        let content = self.pos;
        let unterminated = |lexer: &Lexer| LexError {
            message: format!(
                "unterminated string starting at column {}: add the closing {}",
                column(lexer.src, open_at),
                if is_triple { format!("`{triple}`") } else { format!("`{q}`") }
            ),
            string_start: Some(StringStart { content }),
        };
        let mut out = String::new();
        loop {
            let rest = self.rest();
            let Some(c) = rest.chars().next() else { return Err(unterminated(self)) };
            if is_triple && rest.starts_with(&triple) {
                self.pos += 3;
                return Ok(out);
            }
            if !is_triple && c == q {
                self.pos += 1;
                return Ok(out);
            }
            if !is_triple && c == '\n' {
                return Err(unterminated(self));
            }
            self.pos += c.len_utf8();
            if c != '\\' {
                out.push(c);
                continue;
            }
            let Some(e) = self.peek_char() else { return Err(unterminated(self)) };
            self.pos += e.len_utf8();
            if raw {
                out.push('\\');
                out.push(e);
                continue;
            }
            match e {
                '\n' => {}
                '\\' | '\'' | '"' => out.push(e),
                'a' => out.push('\x07'),
                'b' => out.push('\x08'),
                'f' => out.push('\x0c'),
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                't' => out.push('\t'),
                'v' => out.push('\x0b'),
                '0'..='7' => {
                    let mut n = e as u32 - '0' as u32;
                    for _ in 0..2 {
                        match self.peek_char() {
                            Some(d @ '0'..='7') => {
                                n = n * 8 + (d as u32 - '0' as u32);
                                self.pos += 1;
                            }
                            _ => break,
                        }
                    }
                    out.push(char::from_u32(n).unwrap_or(char::REPLACEMENT_CHARACTER));
                }
                'x' | 'u' | 'U' => {
                    let digits = match e {
                        'x' => 2,
                        'u' => 4,
                        _ => 8,
                    };
                    let hex: String = self.rest().chars().take(digits).collect();
                    let ch = (hex.len() == digits && hex.chars().all(|d| d.is_ascii_hexdigit()))
                        .then(|| u32::from_str_radix(&hex, 16).ok())
                        .flatten()
                        .and_then(char::from_u32);
                    match ch {
                        Some(ch) => {
                            self.pos += digits;
                            out.push(ch);
                        }
                        None => {
                            return Err(self.error(format!(
                                "invalid `\\{e}` escape at column {}: write {digits} hex digits of a valid character, e.g. `\\{e}{}`",
                                column(self.src, self.pos - 2),
                                &"00000041"[8 - digits..]
                            )));
                        }
                    }
                }
                'N' => {
                    return Err(self.error(
                        "`\\N{...}` escapes are not supported: write the character itself or `\\u` and its code"
                            .into(),
                    ));
                }
                other => {
                    // Python keeps unknown escapes as they are.
                    out.push('\\');
                    out.push(other);
                }
            }
        }
    }

    /// A number literal: decimal, hexadecimal, octal or binary int, or a float.
    fn number(&mut self) -> Result<Tok, LexError> {
        let start = self.pos;
        let rest = self.rest();
        let radix = match rest.get(..2).map(str::to_ascii_lowercase).as_deref() {
            Some("0x") => 16,
            Some("0o") => 8,
            Some("0b") => 2,
            _ => 10,
        };
        let tok = if radix != 10 {
            let digits_len =
                rest[2..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len() - 2);
            self.pos += 2 + digits_len;
            let digits: String = rest[2..2 + digits_len].chars().filter(|c| *c != '_').collect();
            match i128::from_str_radix(&digits, radix) {
                Ok(n) if !digits.is_empty() => Tok::Int(n),
                _ => return Err(self.bad_number(start)),
            }
        } else {
            let bytes = rest.as_bytes();
            let digits = |mut i: usize| {
                while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'_') {
                    i += 1;
                }
                i
            };
            let mut end = digits(0);
            let mut is_float = false;
            if end < bytes.len() && bytes[end] == b'.' {
                is_float = true;
                end = digits(end + 1);
            }
            if end < bytes.len() && (bytes[end] == b'e' || bytes[end] == b'E') {
                let mut e = end + 1;
                if e < bytes.len() && (bytes[e] == b'+' || bytes[e] == b'-') {
                    e += 1;
                }
                if e < bytes.len() && bytes[e].is_ascii_digit() {
                    is_float = true;
                    end = digits(e);
                }
            }
            self.pos += end;
            let text = &rest[..end];
            let valid_underscores = text.char_indices().filter(|(_, c)| *c == '_').all(|(i, _)| {
                let before = text[..i].chars().next_back().is_some_and(|c| c.is_ascii_digit());
                let after = text[i + 1..].chars().next().is_some_and(|c| c.is_ascii_digit());
                before && after
            });
            let clean: String = text.chars().filter(|c| *c != '_').collect();
            if !valid_underscores {
                return Err(self.bad_number(start));
            }
            if is_float {
                match clean.parse::<f64>() {
                    Ok(x) if x.is_finite() => Tok::Float(x),
                    _ => return Err(self.bad_number(start)),
                }
            } else {
                match clean.parse::<i128>() {
                    Ok(n) => Tok::Int(n),
                    Err(_) => {
                        return Err(
                            self.error(format!("integer {} is too large", shown(&self.src[start..self.pos])))
                        );
                    }
                }
            }
        };
        // `12abc` or `1.5j` is not a number we understand.
        if self.peek_char().is_some_and(|c| c == '_' || c.is_alphanumeric() || c == '.') {
            let end = self
                .rest()
                .find(|c: char| !(c == '_' || c == '.' || c.is_alphanumeric()))
                .map_or(self.src.len(), |i| self.pos + i);
            self.pos = end;
            return Err(self.bad_number(start));
        }
        Ok(tok)
    }

    fn bad_number(&self, start: usize) -> LexError {
        let end = self.pos.max(start + 1).min(self.src.len());
        let text = self.src.get(start..end).unwrap_or("");
        self.error(format!("invalid number {} at column {}", shown(text), column(self.src, start)))
    }
}

fn is_string_prefix(word: &str) -> bool {
    matches!(word.to_ascii_lowercase().as_str(), "r" | "u" | "b" | "f" | "br" | "rb" | "fr" | "rf")
}

/// A parsed call-form value, before it is checked against an argument.
#[derive(Debug, Clone)]
enum Expr {
    Lit(Value),
    /// A name or anything else that is not a literal (`name`, `devami.ami`, `f(x)`), as written.
    NotLiteral(String),
}

/// One argument of a call as written.
struct RawArg {
    keyword: Option<String>,
    expr: Expr,
}

struct CallParser<'a> {
    lex: Lexer<'a>,
    peeked: Option<Token>,
    /// How the command was called (`launch_ami()`), to start messages; empty before the name.
    context: String,
    /// Whether "not a literal" errors may build an example (off while parsing an example).
    hints: bool,
}

impl<'a> CallParser<'a> {
    fn new(src: &'a str, hints: bool) -> Self {
        CallParser { lex: Lexer::new(src, 0), peeked: None, context: String::new(), hints }
    }

    fn err(&self, message: impl fmt::Display) -> Error {
        if self.context.is_empty() {
            Error::usage(message.to_string())
        } else {
            Error::usage(format!("{}: {message}", self.context))
        }
    }

    fn lex_err(&self, e: LexError) -> Error {
        self.err(e.message)
    }

    fn peek(&mut self) -> Result<Option<&Token>, Error> {
        if self.peeked.is_none() {
            self.peeked = self.lex.next().map_err(|e| self.lex_err(e))?;
        }
        Ok(self.peeked.as_ref())
    }

    fn bump(&mut self) -> Result<Option<Token>, Error> {
        self.peek()?;
        Ok(self.peeked.take())
    }

    fn peek_is(&mut self, c: char) -> Result<bool, Error> {
        Ok(matches!(self.peek()?, Some(Token { tok: Tok::Punct(p), .. }) if *p == c))
    }

    /// The token after the peeked one, without consuming anything.
    fn peek_second(&mut self) -> Result<Option<Tok>, Error> {
        self.peek()?;
        let mut copy = self.lex.clone();
        copy.next().map(|t| t.map(|t| t.tok)).map_err(|e| self.lex_err(e))
    }

    fn describe_next(&mut self) -> Result<String, Error> {
        let src = self.lex.src;
        Ok(match self.peek()? {
            None => "the end of the line".to_string(),
            Some(t) => shown(src.get(t.start..t.end).unwrap_or("")),
        })
    }

    fn expect_ident(&mut self, what: &str) -> Result<String, Error> {
        match self.bump()? {
            Some(Token { tok: Tok::Ident(name), .. }) => Ok(name),
            _ => Err(self.err(format!("expected {what}"))),
        }
    }

    /// `name(.name)*`, after the first name has been read.
    fn dotted_rest(&mut self, first: String) -> Result<Vec<String>, Error> {
        let mut parts = vec![first];
        while self.peek_is('.')? {
            self.bump()?;
            parts.push(self.expect_ident("a name after `.`")?);
        }
        Ok(parts)
    }

    /// The end of the statement: an optional `;` then nothing but a comment.
    fn finish(&mut self) -> Result<(), Error> {
        if self.peek_is(';')? {
            self.bump()?;
        }
        if self.peek()?.is_some() {
            let next = self.describe_next()?;
            return Err(
                self.err(format!("unexpected {next} after the closing `)`: write one command per line"))
            );
        }
        Ok(())
    }

    /// `name(args)` or `object.name(args)`.
    fn call(mut self) -> Result<Line, Error> {
        let first = self.expect_ident("a command name")?;
        let parts = self.dotted_rest(first)?;
        if parts.len() > 2 {
            return Err(self.err(format!(
                "{} has more than one `.`: write `devami.COMMAND(...)` or just `COMMAND(...)`",
                shown(&parts.join("."))
            )));
        }
        let (object, name) = match parts.as_slice() {
            [object, name] => (Some(object.clone()), name.clone()),
            [name] => (None, name.clone()),
            _ => return Err(self.err("expected a command name")),
        };
        if name.eq_ignore_ascii_case(CLASS_NAME) {
            return Err(
                self.err(format!("assign the object to a name: `devami = {name}(\"path/to/blueprint\")`"))
            );
        }
        let Some(spec) = commands::lookup(&name) else { return Err(unknown_command(&name)) };
        // The `(` is next: `classify` saw it.
        self.bump()?;
        self.context = format!("{name}()");
        let raw = self.arguments()?;
        self.finish()?;
        if spec.name == "help" {
            return self.help_call(raw);
        }
        let args = self.bind(spec, &name, raw)?;
        Ok(Line::Command(Invocation { spec, args, object, spelling: Spelling::Call }))
    }

    /// `devami.ip`: an attribute read, run as the command that shows the attribute.
    fn attribute(mut self) -> Result<Line, Error> {
        let first = self.expect_ident("an object name")?;
        let parts = self.dotted_rest(first)?;
        self.finish()?;
        self.attribute_read(&parts)
    }

    /// The command for `object.attribute`, or a clear error naming the attributes known.
    fn attribute_read(&self, parts: &[String]) -> Result<Line, Error> {
        let [object, attr] = parts else {
            return Err(self.err(format!("{} is not something devami can read", shown(&parts.join(".")))));
        };
        if commands::lookup(attr).is_some() {
            return Err(self.err(format!(
                "{} needs parentheses in the call form: write `{}.{attr}()`, or `{attr}` without the prefix",
                shown(&format!("{object}.{attr}")),
                shown_raw(object)
            )));
        }
        let Some(&(_, name)) = ATTRIBUTES.iter().find(|(a, _)| a == attr) else {
            let known: Vec<String> = ATTRIBUTES.iter().map(|(a, _)| format!("`{object}.{a}`")).collect();
            return Err(self.err(format!(
                "{} is not an attribute devami knows; it reads {}",
                shown(&format!("{object}.{attr}")),
                known.join(", ")
            )));
        };
        let spec = commands::lookup(name).ok_or_else(|| self.err(format!("no command `{name}`")))?;
        Ok(Line::Command(Invocation {
            spec,
            args: Args::default(),
            object: Some(object.clone()),
            spelling: Spelling::Call,
        }))
    }

    /// `help()`, `help(launch_ami)`, `help("launch")`, `help(devami.launch_ami)`.
    fn help_call(&self, raw: Vec<RawArg>) -> Result<Line, Error> {
        match raw.as_slice() {
            [] => Ok(Line::Help(None)),
            [RawArg { keyword, expr }] if keyword.as_deref().is_none_or(|k| k == "command") => match expr {
                Expr::Lit(Value::None) => Ok(Line::Help(None)),
                Expr::Lit(Value::Str(name)) => help_for(name),
                Expr::NotLiteral(name) => {
                    let name = name.strip_suffix("(...)").unwrap_or(name);
                    help_for(name.rsplit('.').next().unwrap_or(name))
                }
                other => Err(self.err(format!("expected a command name, got {}", expr_describe(other)))),
            },
            [RawArg { keyword: Some(k), .. }] => Err(self
                .err(format!("got an unexpected keyword argument '{}' (expected: command)", shown_raw(k)))),
            _ => {
                Err(self
                    .err(format!("takes at most 1 argument (a command name) but {} were given", raw.len())))
            }
        }
    }

    /// `name = NeuroCaaSAMI("path")`.
    fn assignment(mut self) -> Result<Line, Error> {
        let name = self.expect_ident("a name")?;
        // `=` is next: `classify` saw it.
        self.bump()?;
        let callee = match self.bump()? {
            Some(Token { tok: Tok::Ident(first), .. }) => self.dotted_rest(first)?.join("."),
            _ => String::new(),
        };
        let class = callee.rsplit('.').next().unwrap_or("");
        if callee.contains('.') && !class.eq_ignore_ascii_case(CLASS_NAME) && !self.peek_is('(')? {
            // `ip = devami.ip`: the value is shown; devami keeps no Python variables.
            self.finish()?;
            let parts: Vec<String> = callee.split('.').map(str::to_string).collect();
            return self.attribute_read(&parts);
        }
        if !class.eq_ignore_ascii_case(CLASS_NAME) || !self.peek_is('(')? {
            let rhs = if callee.is_empty() { "...".to_string() } else { format!("{callee}...") };
            return Err(self.err(format!(
                "only `{name} = NeuroCaaSAMI(\"path/to/blueprint\")` assignments are understood, not {}",
                shown(&format!("{name} = {rhs}"))
            )));
        }
        self.bump()?;
        self.context = format!("{class}()");
        let raw = self.arguments()?;
        self.finish()?;
        let path = match raw.as_slice() {
            [RawArg { keyword, expr }] if keyword.as_deref().is_none_or(|k| k == "path") => match expr {
                Expr::Lit(Value::Str(path)) => path.clone(),
                Expr::NotLiteral(text) => {
                    return Err(self.err(format!(
                        "{} is not a literal: write the value itself, e.g. {name} = {class}(\"../path_to_configured_folder\")",
                        shown(text)
                    )));
                }
                other => {
                    return Err(self.err(format!(
                        "`path` expects a string (the blueprint folder), got {}",
                        expr_describe(other)
                    )));
                }
            },
            [] => return Err(self.err("missing required argument 'path' (the blueprint folder)")),
            [RawArg { keyword: Some(k), .. }] => {
                return Err(self
                    .err(format!("got an unexpected keyword argument '{}' (expected: path)", shown_raw(k))));
            }
            _ => {
                return Err(self.err(format!("takes 1 argument (path) but {} were given", raw.len())));
            }
        };
        Ok(Line::Bind { name, path })
    }

    /// The arguments after `(`, up to and including `)`.
    fn arguments(&mut self) -> Result<Vec<RawArg>, Error> {
        let mut args = Vec::new();
        loop {
            if self.peek_is(')')? {
                self.bump()?;
                return Ok(args);
            }
            if self.peek()?.is_none() {
                return Err(self.err("missing the closing `)`"));
            }
            if self.peek_is('*')? {
                return Err(
                    self.err("`*` and `**` unpacking are not supported: write the arguments themselves")
                );
            }
            let keyword = match (self.peek()?.map(|t| t.tok.clone()), self.peek_second()?) {
                (Some(Tok::Ident(k)), Some(Tok::Punct('='))) => {
                    self.bump()?;
                    self.bump()?;
                    if self.peek_is('=')? {
                        return Err(self.err(format!(
                            "comparisons like `{k} == ...` are not arguments: write `{k}=VALUE`"
                        )));
                    }
                    Some(k)
                }
                _ => None,
            };
            let expr = self.value(0)?;
            args.push(RawArg { keyword, expr });
            match self.bump()? {
                Some(Token { tok: Tok::Punct(','), .. }) => {}
                Some(Token { tok: Tok::Punct(')'), .. }) => return Ok(args),
                None => return Err(self.err("missing the closing `)`")),
                Some(t) => {
                    let what = shown(self.lex.src.get(t.start..t.end).unwrap_or(""));
                    return Err(self.err(format!(
                        "expected `,` or `)` after an argument, found {what}: values must be plain literals"
                    )));
                }
            }
        }
    }

    /// One value: a literal, a list or tuple of values, or something that is not a literal.
    fn value(&mut self, depth: usize) -> Result<Expr, Error> {
        if depth > MAX_DEPTH {
            return Err(self.err("values are nested too deeply"));
        }
        let Some(token) = self.bump()? else {
            return Err(self.err("expected a value, found the end of the line"));
        };
        Ok(match token.tok {
            Tok::Str(mut s) => {
                // Adjacent strings are concatenated, as in Python.
                while let Some(Token { tok: Tok::Str(_), .. }) = self.peek()? {
                    if let Some(Token { tok: Tok::Str(more), .. }) = self.bump()? {
                        s.push_str(&more);
                    }
                }
                Expr::Lit(Value::Str(s))
            }
            Tok::Int(n) => Expr::Lit(self.int(n, token.start)?),
            Tok::Float(x) => Expr::Lit(Value::Float(x)),
            Tok::Punct(sign @ ('-' | '+')) => {
                if let Some(Token { tok: Tok::Int(n), start, .. }) = self.peek()?.cloned() {
                    self.bump()?;
                    let n = if sign == '-' { -n } else { n };
                    return Ok(Expr::Lit(self.int(n, start)?));
                }
                match self.value(depth + 1)? {
                    Expr::Lit(Value::Int(n)) if sign == '-' => match n.checked_neg() {
                        Some(n) => Expr::Lit(Value::Int(n)),
                        None => return Err(self.err("integer is too large")),
                    },
                    Expr::Lit(Value::Float(x)) if sign == '-' => Expr::Lit(Value::Float(-x)),
                    e @ Expr::Lit(Value::Int(_) | Value::Float(_)) => e,
                    Expr::NotLiteral(text) => Expr::NotLiteral(format!("{sign}{text}")),
                    other => {
                        return Err(self.err(format!(
                            "`{sign}` applies to numbers only, not {}",
                            expr_describe(&other)
                        )));
                    }
                }
            }
            Tok::Punct('[') => self.sequence(']', depth)?,
            Tok::Punct('(') => {
                if self.peek_is(')')? {
                    self.bump()?;
                    return Ok(Expr::Lit(Value::List(Vec::new())));
                }
                let first = self.value(depth + 1)?;
                if self.peek_is(')')? {
                    // A parenthesized value, not a tuple.
                    self.bump()?;
                    return Ok(first);
                }
                if !self.peek_is(',')? {
                    let next = self.describe_next()?;
                    return Err(self.err(format!("expected `,` or `)` in a tuple, found {next}")));
                }
                self.bump()?;
                match self.sequence(')', depth)? {
                    Expr::Lit(Value::List(mut rest)) => match first {
                        Expr::Lit(v) => {
                            rest.insert(0, v);
                            Expr::Lit(Value::List(rest))
                        }
                        e => e,
                    },
                    e => e,
                }
            }
            Tok::Ident(word) => match word.as_str() {
                "True" => Expr::Lit(Value::Bool(true)),
                "False" => Expr::Lit(Value::Bool(false)),
                "None" => Expr::Lit(Value::None),
                _ => {
                    let mut text = self.dotted_rest(word)?.join(".");
                    if self.peek_is('(')? {
                        self.skip_balanced()?;
                        text.push_str("(...)");
                    }
                    Expr::NotLiteral(text)
                }
            },
            Tok::Punct(c) => {
                return Err(self.err(format!("expected a value, found {}", shown(&c.to_string()))));
            }
        })
    }

    fn int(&self, n: i128, start: usize) -> Result<Value, Error> {
        i64::try_from(n).map(Value::Int).map_err(|_| {
            self.err(format!(
                "integer at column {} is too large (the limit is 2**63 - 1)",
                column(self.lex.src, start)
            ))
        })
    }

    /// The elements of a list or tuple up to `close`, after the opening bracket.
    fn sequence(&mut self, close: char, depth: usize) -> Result<Expr, Error> {
        let mut items = Vec::new();
        let mut not_literal = None;
        loop {
            if self.peek_is(close)? {
                self.bump()?;
                break;
            }
            match self.value(depth + 1)? {
                Expr::Lit(v) => items.push(v),
                Expr::NotLiteral(t) => not_literal = not_literal.or(Some(t)),
            }
            if self.peek_is(',')? {
                self.bump()?;
            } else if !self.peek_is(close)? {
                let next = self.describe_next()?;
                return Err(self.err(format!("expected `,` or `{close}` in a list, found {next}")));
            }
        }
        Ok(match not_literal {
            Some(t) => Expr::NotLiteral(t),
            None => Expr::Lit(Value::List(items)),
        })
    }

    /// Skips `( ... )` with balanced brackets (a call used as a value).
    fn skip_balanced(&mut self) -> Result<(), Error> {
        let mut depth = 0usize;
        loop {
            match self.bump()? {
                None => return Err(self.err("missing the closing `)`")),
                Some(Token { tok: Tok::Punct('(' | '[' | '{'), .. }) => depth += 1,
                Some(Token { tok: Tok::Punct(')' | ']' | '}'), .. }) => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        return Ok(());
                    }
                }
                Some(_) => {}
            }
        }
    }

    /// Binds the written arguments to the command's arguments, Python's way, and checks them.
    fn bind(&self, spec: &'static CommandSpec, called: &str, raw: Vec<RawArg>) -> Result<Args, Error> {
        let mut slots: Vec<Option<Expr>> = vec![None; spec.args.len()];
        let mut positional = 0;
        let given = raw.iter().filter(|r| r.keyword.is_none()).count();
        let mut last_keyword: Option<String> = None;
        let expected = || {
            if spec.args.is_empty() {
                "it takes no arguments".to_string()
            } else {
                format!("expected: {}", spec.arg_names())
            }
        };
        for RawArg { keyword, expr } in raw {
            match keyword {
                None => {
                    if let Some(k) = &last_keyword {
                        return Err(self.err(format!(
                            "positional argument {} follows keyword argument `{}`; give it by name too ({})",
                            expr_text(&expr),
                            shown_raw(k),
                            expected()
                        )));
                    }
                    if positional >= spec.args.len() {
                        return Err(self.err(if spec.args.is_empty() {
                            format!("takes no arguments ({given} given)")
                        } else {
                            format!(
                                "takes at most {} argument{} ({}) but {given} were given",
                                spec.args.len(),
                                if spec.args.len() == 1 { "" } else { "s" },
                                spec.arg_names()
                            )
                        }));
                    }
                    slots[positional] = Some(expr);
                    positional += 1;
                }
                Some(k) => {
                    let Some(index) = spec.args.iter().position(|a| a.matches_keyword(&k)) else {
                        return Err(Error::usage(format!(
                            "{called}() got an unexpected keyword argument '{}' ({})",
                            shown_raw(&k),
                            expected()
                        )));
                    };
                    if slots[index].is_some() {
                        return Err(
                            self.err(format!("got multiple values for argument '{}'", spec.args[index].name))
                        );
                    }
                    slots[index] = Some(expr);
                    last_keyword = Some(k);
                }
            }
        }
        // Values first (a name where a literal belongs is the most useful thing to report), then
        // the missing arguments.
        let mut args = Args::default();
        let all: &'static [ArgSpec] = spec.args;
        let mut values = Vec::with_capacity(all.len());
        for (arg, slot) in all.iter().zip(slots) {
            values.push(match slot {
                None => None,
                Some(Expr::NotLiteral(text)) => {
                    let example = if self.hints { example_for(spec, arg, called) } else { String::new() };
                    return Err(Error::usage(format!(
                        "{} is not a literal: write the value itself{}",
                        shown(&text),
                        if example.is_empty() { String::new() } else { format!(", e.g. {example}") }
                    )));
                }
                Some(Expr::Lit(v)) => self.convert(arg, v)?,
            });
        }
        for (arg, value) in all.iter().zip(values) {
            match value {
                Some(v) => args.set(arg.name, v),
                None if arg.required => {
                    return Err(self.err(format!(
                        "missing required argument '{}' ({}), e.g. {}",
                        arg.name,
                        arg.help,
                        if self.hints { example_for(spec, arg, called) } else { arg.name.to_string() }
                    )));
                }
                None => {}
            }
        }
        Ok(args)
    }

    /// Checks a literal against the argument's kind; `None` means "not given".
    fn convert(&self, arg: &ArgSpec, v: Value) -> Result<Option<Value>, Error> {
        let ok = match (arg.kind, &v) {
            (_, Value::None) => return Ok(None),
            (ArgKind::Str | ArgKind::Path | ArgKind::Rest, Value::Str(_)) => true,
            (ArgKind::Int, Value::Int(_)) => true,
            (ArgKind::Bool, Value::Bool(_)) => true,
            (ArgKind::Float, Value::Float(_)) => true,
            (ArgKind::Float, Value::Int(i)) => return Ok(Some(Value::Float(*i as f64))),
            (ArgKind::StrList, Value::Str(_)) => true,
            (ArgKind::StrList, Value::List(items)) => items.iter().all(|i| matches!(i, Value::Str(_))),
            _ => false,
        };
        if ok {
            Ok(Some(v))
        } else {
            Err(self.err(format!("`{}` expects {}, got {}", arg.name, arg.kind.describe(), v.describe())))
        }
    }
}

fn expr_describe(e: &Expr) -> String {
    match e {
        Expr::Lit(v) => v.describe(),
        Expr::NotLiteral(t) => shown(t),
    }
}

fn expr_text(e: &Expr) -> String {
    match e {
        Expr::Lit(v) => shown(&v.to_string()),
        Expr::NotLiteral(t) => shown(t),
    }
}

/// A call showing a good value for `arg`: the value from the command's own example when it has
/// one, by position when the argument can be given by position.
fn example_for(spec: &CommandSpec, arg: &ArgSpec, called: &str) -> String {
    let from_example = match CallParser::new(spec.example_call, false).call() {
        Ok(Line::Command(inv)) => inv.args.get(arg.name).cloned(),
        _ => None,
    };
    let value = from_example.unwrap_or_else(|| match arg.kind {
        ArgKind::Int => Value::Int(1),
        ArgKind::Float => Value::Float(1.5),
        ArgKind::Bool => Value::Bool(true),
        ArgKind::Path => Value::Str("path/to/file".into()),
        ArgKind::StrList => Value::List(vec![Value::Str("...".into())]),
        ArgKind::Str | ArgKind::Rest => Value::Str("...".into()),
    });
    let first_positional = spec.args.first().is_some_and(|a| a.name == arg.name);
    let value = match value {
        Value::Str(s) => format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")),
        v => v.to_string(),
    };
    if first_positional { format!("{called}({value})") } else { format!("{called}({}={value})", arg.name) }
}

// ---------------------------------------------------------------------------------------------
// The shell form: POSIX-like words.

/// One shell word with its byte span in the line.
#[derive(Debug, Clone)]
struct Word {
    text: String,
    start: usize,
    end: usize,
    /// Whether the first character was quoted or escaped (`'--x'` is a value, not a flag).
    quoted_start: bool,
    /// An unquoted `;` (the end of a command).
    separator: bool,
    /// The quote left open at the end of the line, if any (for completion).
    open_quote: Option<char>,
}

#[derive(Debug, Clone)]
struct ShellLexer<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> ShellLexer<'a> {
    fn new(src: &'a str, pos: usize) -> Self {
        ShellLexer { src, pos }
    }

    fn skip_blank(&mut self) {
        let rest = self.rest();
        self.pos += rest.len() - rest.trim_start_matches([' ', '\t', '\r', '\n']).len();
    }

    fn rest(&self) -> &'a str {
        self.src.get(self.pos..).unwrap_or("")
    }

    /// The next word; a word with an open quote ends the line (the caller decides).
    fn next_word(&mut self) -> Option<Word> {
        self.skip_blank();
        let start = self.pos;
        let rest = self.rest();
        if rest.is_empty() || rest.starts_with('#') {
            self.pos = self.src.len();
            return None;
        }
        if rest.starts_with(';') {
            self.pos += 1;
            return Some(Word {
                text: ";".into(),
                start,
                end: self.pos,
                quoted_start: false,
                separator: true,
                open_quote: None,
            });
        }
        let mut text = String::new();
        let mut quoted_start = false;
        let mut open_quote = None;
        let mut chars = rest.char_indices().peekable();
        let mut end = rest.len();
        while let Some((i, c)) = chars.next() {
            let first = text.is_empty() && i == 0;
            match c {
                ' ' | '\t' | '\r' | '\n' | ';' => {
                    end = i;
                    break;
                }
                '\'' => {
                    quoted_start |= first;
                    let mut closed = false;
                    for (_, c) in chars.by_ref() {
                        if c == '\'' {
                            closed = true;
                            break;
                        }
                        text.push(c);
                    }
                    if !closed {
                        open_quote = Some('\'');
                    }
                }
                '"' => {
                    quoted_start |= first;
                    let mut closed = false;
                    while let Some((_, c)) = chars.next() {
                        match c {
                            '"' => {
                                closed = true;
                                break;
                            }
                            '\\' => match chars.peek() {
                                Some((_, e @ ('"' | '\\' | '$' | '`'))) => {
                                    text.push(*e);
                                    chars.next();
                                }
                                Some((_, '\n')) => {
                                    chars.next();
                                }
                                _ => text.push('\\'),
                            },
                            c => text.push(c),
                        }
                    }
                    if !closed {
                        open_quote = Some('"');
                    }
                }
                '\\' => {
                    quoted_start |= first;
                    match chars.next() {
                        Some((_, '\n')) => {}
                        Some((_, e)) => text.push(e),
                        None => open_quote = Some('\\'),
                    }
                }
                c => text.push(c),
            }
        }
        self.pos = start + end;
        Some(Word { text, start, end: self.pos, quoted_start, separator: false, open_quote })
    }

    /// Like [`Self::next_word`], with an open quote as an error.
    fn word(&mut self, context: &str) -> Result<Option<Word>, Error> {
        let Some(w) = self.next_word() else { return Ok(None) };
        match w.open_quote {
            None => Ok(Some(w)),
            Some('\\') => {
                Err(Error::usage(format!("{context}the line ends with a `\\`: write `\\\\` for a backslash")))
            }
            Some(q) => Err(Error::usage(format!(
                "{context}unterminated {} quote starting at column {}: add the closing `{q}`",
                if q == '\'' { "single" } else { "double" },
                column(self.src, w.start)
            ))),
        }
    }
}

fn is_help_word(w: &Word) -> bool {
    !w.quoted_start && matches!(w.text.as_str(), "help" | "-h" | "--help")
}

/// Whether a shell word is a number (so `-1` is a value, not a flag).
fn is_number(s: &str) -> bool {
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    !digits.is_empty()
        && digits.starts_with(|c: char| c.is_ascii_digit() || c == '.')
        && digits.chars().all(|c| c.is_ascii_digit() || "._eE+-".contains(c))
}

fn parse_shell(src: &str) -> Result<Line, Error> {
    let mut lex = ShellLexer::new(src, 0);
    let Some(first) = lex.word("")? else { return Ok(Line::Nothing) };
    if first.separator {
        return finish_shell(&mut lex, "").map(|()| Line::Nothing);
    }
    let name = first.text.as_str();
    let Some(spec) = commands::lookup(name) else {
        if let Some((object, method)) = name.split_once('.')
            && commands::lookup(method).is_some()
        {
            return Err(Error::usage(format!(
                "{} needs parentheses in the call form: write `{}.{method}()`, or `{method}` without the prefix",
                shown(name),
                shown_raw(object)
            )));
        }
        return Err(unknown_command(name));
    };
    let context = format!("{}: ", shown_raw(name));
    if spec.name == "help" {
        let mut target = lex.word(&context)?;
        // `help --command NAME` and `help --command=NAME`, as `help CMD` says.
        if let Some(w) = &target
            && !w.quoted_start
        {
            if let Some(name) = w.text.strip_prefix("--command=") {
                target = Some(Word { text: name.to_string(), ..w.clone() });
            } else if w.text == "--command" {
                target = lex.word(&context)?;
            }
        }
        let line = match &target {
            None => Line::Help(None),
            Some(w) if w.separator => Line::Help(None),
            Some(w) if is_help_word(w) => Line::Help(Some(spec)),
            Some(w) => help_for(&w.text)?,
        };
        if target.is_some_and(|w| !w.separator) {
            match lex.word(&context)? {
                None => {}
                Some(w) if w.separator => finish_shell(&mut lex, &context)?,
                Some(w) => {
                    return Err(Error::usage(format!(
                        "{context}takes one command name, not also {}; e.g. `help launch_devinstance`",
                        shown(&w.text)
                    )));
                }
            }
        }
        return Ok(line);
    }
    let mut slots: Vec<Option<Value>> = vec![None; spec.args.len()];
    let mut only_positional = false;
    let mut first_arg = true;
    let mut list_slot: Option<usize> = None;
    loop {
        // A rest-of-line argument takes the remainder verbatim.
        let next_free = slots.iter().position(Option::is_none);
        if let Some(i) = next_free
            && spec.args[i].kind == ArgKind::Rest
        {
            lex.skip_blank();
            let rest = lex.rest().trim_end();
            if rest.is_empty() {
                break;
            }
            if first_arg && matches!(rest, "help" | "-h" | "--help") {
                return Ok(Line::Help(Some(spec)));
            }
            slots[i] =
                Some(Value::Str(unwrap_quoted(rest).map_or_else(|| rest.to_string(), |c| c.into_owned())));
            break;
        }
        let Some(word) = lex.word(&context)? else { break };
        if word.separator {
            finish_shell(&mut lex, &context)?;
            break;
        }
        if (first_arg && is_help_word(&word))
            || (!only_positional && !word.quoted_start && matches!(word.text.as_str(), "-h" | "--help"))
        {
            return Ok(Line::Help(Some(spec)));
        }
        first_arg = false;
        let text = word.text.as_str();
        let flag_like = !only_positional && !word.quoted_start;
        if flag_like && text == "--" {
            only_positional = true;
        } else if flag_like && text.starts_with("--") {
            shell_flag(spec, &context, &text[2..], &mut lex, &mut slots)?;
        } else if flag_like && text.starts_with('-') && text.len() > 1 && !is_number(text) {
            return Err(Error::usage(format!(
                "{context}unknown option {}: options are written `--name` ({})",
                shown(text),
                flag_list(spec)
            )));
        } else if let Some(j) = list_slot
            && let Some(Value::List(items)) = &mut slots[j]
        {
            // A list argument takes every further positional word; see `rebalance_list`.
            items.push(Value::Str(text.to_string()));
        } else {
            let Some(i) = slots.iter().position(Option::is_none) else {
                return Err(Error::usage(format!(
                    "{context}unexpected argument {} ({}); usage: {}",
                    shown(text),
                    if spec.args.is_empty() {
                        "it takes no arguments".to_string()
                    } else {
                        format!("it takes at most {}: {}", spec.args.len(), spec.arg_names())
                    },
                    spec.usage_shell()
                )));
            };
            slots[i] = Some(shell_value(&spec.args[i], &context, &format!("`{}`", spec.args[i].name), text)?);
            if spec.args[i].kind == ArgKind::StrList {
                list_slot = Some(i);
            }
        }
    }
    if let Some(j) = list_slot {
        rebalance_list(spec, &context, j, &mut slots)?;
    }
    let mut args = Args::default();
    let all: &'static [ArgSpec] = spec.args;
    for (arg, slot) in all.iter().zip(slots) {
        match slot {
            Some(v) => args.set(arg.name, v),
            None if arg.required => {
                return Err(Error::usage(format!(
                    "{context}missing `{}` ({}); usage: {}",
                    arg.name,
                    arg.help,
                    spec.usage_shell()
                )));
            }
            None => {}
        }
    }
    Ok(Line::Command(Invocation { spec, args, object: None, spelling: Spelling::Shell }))
}

/// Gives the last words a list argument took positionally to the required arguments after it
/// that are still missing: `new_submit a.txt b.txt config.json` is two datasets and a config.
fn rebalance_list(
    spec: &CommandSpec,
    context: &str,
    j: usize,
    slots: &mut [Option<Value>],
) -> Result<(), Error> {
    let missing: Vec<usize> =
        (j + 1..spec.args.len()).filter(|&k| spec.args[k].required && slots[k].is_none()).collect();
    let Some(Value::List(items)) = &mut slots[j] else { return Ok(()) };
    let take = missing.len().min(items.len().saturating_sub(1));
    let moved: Vec<Value> = items.split_off(items.len() - take);
    for (k, v) in missing.into_iter().zip(moved) {
        let Value::Str(text) = v else { continue };
        slots[k] = Some(shell_value(&spec.args[k], context, &format!("`{}`", spec.args[k].name), &text)?);
    }
    Ok(())
}

/// After a `;`: only a comment (or more `;`) may follow. A loop, not a recursion: a line may hold
/// any number of `;`.
fn finish_shell(lex: &mut ShellLexer, context: &str) -> Result<(), Error> {
    loop {
        match lex.next_word() {
            None => return Ok(()),
            Some(w) if w.separator => {}
            Some(_) => {
                return Err(Error::usage(format!(
                    "{context}write one command per line (`;` separates commands only in `devami DIR -c 'CMD; CMD'`)"
                )));
            }
        }
    }
}

fn flag_list(spec: &CommandSpec) -> String {
    if spec.args.is_empty() {
        "it takes no options".to_string()
    } else {
        format!("expected: {}", spec.args.iter().map(|a| a.flag()).collect::<Vec<_>>().join(", "))
    }
}

/// `--name`, `--name=value`, `--name value`, `--no-name`.
fn shell_flag(
    spec: &'static CommandSpec,
    context: &str,
    body: &str,
    lex: &mut ShellLexer,
    slots: &mut [Option<Value>],
) -> Result<(), Error> {
    let (name, inline) = match body.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (body, None),
    };
    let shown_flag = shown(&format!("--{name}"));
    let (arg, negated) = match spec.arg_by_flag(name) {
        Some(a) => (a, false),
        None => match name
            .strip_prefix("no-")
            .or_else(|| name.strip_prefix("no_"))
            .and_then(|n| spec.arg_by_flag(n))
        {
            Some(a) if a.kind == ArgKind::Bool => (a, true),
            Some(_) => {
                return Err(Error::usage(format!("{context}{shown_flag} is only for true/false options")));
            }
            None => {
                return Err(Error::usage(format!(
                    "{context}unknown option {shown_flag} ({})",
                    flag_list(spec)
                )));
            }
        },
    };
    let Some(index) = spec.args.iter().position(|a| a.name == arg.name) else {
        return Err(Error::usage(format!("{context}unknown option {shown_flag}")));
    };
    let value = if arg.kind == ArgKind::Bool {
        match inline {
            Some(_) if negated => {
                return Err(Error::usage(format!("{context}{shown_flag} takes no value")));
            }
            Some(v) => shell_value(arg, context, &shown_flag, v)?,
            None => {
                // `--force false` reads the boolean word that follows, if there is one.
                let mut ahead = lex.clone();
                match ahead.next_word() {
                    Some(w)
                        if !w.quoted_start
                            && w.open_quote.is_none()
                            && matches!(w.text.to_ascii_lowercase().as_str(), "true" | "false") =>
                    {
                        *lex = ahead;
                        Value::Bool(w.text.eq_ignore_ascii_case("true") != negated)
                    }
                    _ => Value::Bool(!negated),
                }
            }
        }
    } else {
        if negated {
            return Err(Error::usage(format!("{context}{shown_flag} is only for true/false options")));
        }
        let text = match inline {
            Some(v) => v.to_string(),
            None => {
                let mut ahead = lex.clone();
                match ahead.word(context)? {
                    Some(w) if !w.separator && (w.quoted_start || !w.text.starts_with("--")) => {
                        *lex = ahead;
                        w.text
                    }
                    _ => {
                        return Err(Error::usage(format!(
                            "{context}{} needs a value ({})",
                            shown(&arg.flag()),
                            arg.kind.describe()
                        )));
                    }
                }
            }
        };
        shell_value(arg, context, &shown(&arg.flag()), &text)?
    };
    if slots[index].is_some() {
        return Err(Error::usage(format!("{context}`{}` is given twice", arg.name)));
    }
    slots[index] = Some(value);
    Ok(())
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Some(true),
        "false" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

/// Converts a shell word for an argument; `what` names the argument in messages.
fn shell_value(arg: &ArgSpec, context: &str, what: &str, text: &str) -> Result<Value, Error> {
    let bad =
        || Error::usage(format!("{context}{what} expects {}, got {}", arg.kind.describe(), shown(text)));
    Ok(match arg.kind {
        ArgKind::Str | ArgKind::Path | ArgKind::Rest => Value::Str(text.to_string()),
        ArgKind::StrList => Value::List(vec![Value::Str(text.to_string())]),
        ArgKind::Int => {
            let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
            let valid = digits.starts_with(|c: char| c.is_ascii_digit())
                && digits.ends_with(|c: char| c.is_ascii_digit())
                && digits.chars().all(|c| c.is_ascii_digit() || c == '_')
                && !digits.contains("__");
            if !valid {
                return Err(bad());
            }
            let clean: String = text.chars().filter(|c| *c != '_').collect();
            Value::Int(
                clean
                    .parse::<i64>()
                    .map_err(|_| Error::usage(format!("{context}{what}: {} is too large", shown(text))))?,
            )
        }
        ArgKind::Float => match text.parse::<f64>() {
            Ok(x) if x.is_finite() && is_number(text) => Value::Float(x),
            _ => return Err(bad()),
        },
        ArgKind::Bool => Value::Bool(parse_bool(text).ok_or_else(bad)?),
    })
}

// ---------------------------------------------------------------------------------------------
// Splitting one-shot strings.

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

// ---------------------------------------------------------------------------------------------
// Completion.

/// Completion inside the parentheses of a call; `args_start` is just after `(` in `s`.
fn call_completion(spec: &'static CommandSpec, s: &str, args_start: usize, offset: usize) -> Completion {
    let mut lex = Lexer::new(s, args_start);
    let mut depth = 0usize;
    let mut positional = 0usize;
    let mut keyword: Option<String> = None;
    let mut seen_keyword = false;
    // Whether the cursor is where a new argument starts (after `(` or `,`).
    let mut at_arg_start = true;
    let mut last: Option<Token> = None;
    let mut pending_ident: Option<Token> = None;
    let is_help = spec.name == "help";
    let target = |keyword: &Option<String>, positional: usize, seen_keyword: bool| match keyword {
        Some(k) => spec.arg_by_keyword(k),
        None if seen_keyword => None,
        None => {
            let args: &'static [ArgSpec] = spec.args;
            args.get(positional)
        }
    };
    loop {
        match lex.next() {
            Err(LexError { string_start: Some(StringStart { content }), .. }) => {
                let prefix = s.get(content..).unwrap_or("").to_string();
                if depth > 0 {
                    return Completion::Nothing;
                }
                if is_help {
                    return Completion::CommandName { prefix, start: offset + content };
                }
                let arg = target(&keyword, positional, seen_keyword);
                if arg.is_some_and(|a| matches!(a.kind, ArgKind::Bool | ArgKind::Int | ArgKind::Float)) {
                    return Completion::Nothing;
                }
                return Completion::Value {
                    spec,
                    arg,
                    spelling: Spelling::Call,
                    prefix,
                    start: offset + content,
                };
            }
            Err(_) => return Completion::Nothing,
            Ok(None) => break,
            Ok(Some(token)) => {
                if let Some(ident) = pending_ident.take() {
                    if matches!(token.tok, Tok::Punct('=')) && depth == 0 {
                        if let Tok::Ident(k) = &ident.tok {
                            keyword = Some(k.clone());
                            seen_keyword = true;
                        }
                        last = Some(token);
                        continue;
                    }
                    at_arg_start = false;
                }
                match token.tok {
                    Tok::Punct('(' | '[' | '{') => depth += 1,
                    Tok::Punct(')' | ']' | '}') => {
                        if depth == 0 {
                            return Completion::Nothing;
                        }
                        depth -= 1;
                    }
                    Tok::Punct(',') if depth == 0 => {
                        if keyword.is_none() {
                            positional += 1;
                        }
                        keyword = None;
                        at_arg_start = true;
                        last = Some(token);
                        continue;
                    }
                    Tok::Ident(_) if at_arg_start && depth == 0 => {
                        pending_ident = Some(token.clone());
                        last = Some(token);
                        continue;
                    }
                    _ => {}
                }
                at_arg_start = false;
                last = Some(token);
            }
        }
    }
    let trailing_blank = last.as_ref().is_some_and(|t| t.end < s.len());
    if depth > 0 {
        return Completion::Nothing;
    }
    if let Some(ident) = pending_ident {
        // An identifier at the start of an argument: a keyword being typed (or a command for help).
        if trailing_blank {
            return Completion::Nothing;
        }
        let prefix = s[ident.start..ident.end].to_string();
        let start = offset + ident.start;
        return if is_help {
            Completion::CommandName { prefix, start }
        } else {
            Completion::Keyword { spec, spelling: Spelling::Call, prefix, start }
        };
    }
    let arg = target(&keyword, positional, seen_keyword);
    match last.map(|t| t.tok) {
        None | Some(Tok::Punct(',')) if keyword.is_none() => {
            if is_help {
                Completion::CommandName { prefix: String::new(), start: offset + s.len() }
            } else {
                Completion::Keyword {
                    spec,
                    spelling: Spelling::Call,
                    prefix: String::new(),
                    start: offset + s.len(),
                }
            }
        }
        Some(Tok::Punct('=')) => Completion::Value {
            spec,
            arg,
            spelling: Spelling::Call,
            prefix: String::new(),
            start: offset + s.len(),
        },
        _ => Completion::Nothing,
    }
}

/// Completion of a shell-form line.
fn shell_completion(s: &str, offset: usize) -> Completion {
    let mut lex = ShellLexer::new(s, 0);
    let mut words = Vec::new();
    while let Some(w) = lex.next_word() {
        if w.separator {
            return Completion::Nothing;
        }
        words.push(w);
    }
    // A comment swallows the rest of the line: nothing to complete.
    if s.len() > words.last().map_or(0, |w| w.end)
        && s[words.last().map_or(0, |w| w.end)..].trim_start().starts_with('#')
    {
        return Completion::Nothing;
    }
    let ends_blank = words.last().is_none_or(|w| w.end < s.len());
    let (done, partial) = if ends_blank || words.is_empty() {
        (&words[..], None)
    } else {
        (&words[..words.len() - 1], words.last())
    };
    let cursor = offset + s.len();
    let (prefix, start) = match partial {
        Some(w) => (w.text.clone(), offset + w.start),
        None => (String::new(), cursor),
    };
    let Some(first) = done.first() else { return Completion::CommandName { prefix, start } };
    let Some(spec) = commands::lookup(&first.text) else { return Completion::Nothing };
    if spec.name == "help" {
        return if done.len() == 1 { Completion::CommandName { prefix, start } } else { Completion::Nothing };
    }
    // Replay the finished words to find the next free positional slot.
    let mut given = vec![false; spec.args.len()];
    let mut expecting_value: Option<&'static ArgSpec> = None;
    let mut only_positional = false;
    let args: &'static [ArgSpec] = spec.args;
    for w in &done[1..] {
        if let Some(i) = given.iter().position(|g| !g)
            && args[i].kind == ArgKind::Rest
        {
            return Completion::Value { spec, arg: Some(&args[i]), spelling: Spelling::Shell, prefix, start };
        }
        if let Some(arg) = expecting_value.take() {
            if let Some(i) = args.iter().position(|a| a.name == arg.name) {
                given[i] = true;
            }
            continue;
        }
        let flag_like = !only_positional && !w.quoted_start;
        if flag_like && w.text == "--" {
            only_positional = true;
        } else if flag_like && w.text.starts_with("--") {
            let body = &w.text[2..];
            let (name, inline) = body.split_once('=').map_or((body, false), |(n, _)| (n, true));
            let negated = name.strip_prefix("no-").and_then(|n| spec.arg_by_flag(n));
            if let Some(arg) = spec.arg_by_flag(name).or(negated) {
                if let Some(i) = args.iter().position(|a| a.name == arg.name) {
                    given[i] = true;
                }
                if arg.kind != ArgKind::Bool && !inline {
                    expecting_value = Some(arg);
                }
            }
        } else if let Some(i) = given.iter().position(|g| !g) {
            given[i] = true;
        }
    }
    if let Some(arg) = expecting_value {
        return Completion::Value { spec, arg: Some(arg), spelling: Spelling::Shell, prefix, start };
    }
    let next_free = given.iter().position(|g| !g).map(|i| &args[i]);
    if let Some(w) = partial
        && !only_positional
        && !w.quoted_start
        && w.text.starts_with('-')
        && !is_number(&w.text)
        && !next_free.is_some_and(|a| a.kind == ArgKind::Rest)
    {
        if let Some((name, value)) = w.text.strip_prefix("--").and_then(|b| b.split_once('=')) {
            // Offsets below count the word's text as typed: with quotes or escapes in it they
            // would land elsewhere (even inside a character), so such a word completes nothing.
            if s.get(w.start..w.end) != Some(w.text.as_str()) {
                return Completion::Nothing;
            }
            let arg = spec.arg_by_flag(name);
            let value_start = start + 2 + name.len() + 1;
            return Completion::Value {
                spec,
                arg,
                spelling: Spelling::Shell,
                prefix: value.to_string(),
                start: value_start,
            };
        }
        return Completion::Keyword { spec, spelling: Spelling::Shell, prefix, start };
    }
    Completion::Value { spec, arg: next_free, spelling: Spelling::Shell, prefix, start }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::COMMANDS;

    /// A compact rendering of a parse result: `call devami.get_ip()`, `shell job_status(jobind=-2)`,
    /// `bind d = 'p'`, `help launch_devinstance`, `error: ...`.
    fn render(result: Result<Line, Error>) -> String {
        match result {
            Err(e) => format!("error: {e}"),
            Ok(Line::Nothing) => "nothing".into(),
            Ok(Line::Import) => "import".into(),
            Ok(Line::Bind { name, path }) => format!("bind {name} = {}", python_repr(&path)),
            Ok(Line::Help(None)) => "help".into(),
            Ok(Line::Help(Some(spec))) => format!("help {}", spec.name),
            Ok(Line::Command(inv)) => {
                let args: Vec<String> = inv
                    .spec
                    .args
                    .iter()
                    .filter_map(|a| inv.args.get(a.name).map(|v| format!("{}={v}", a.name)))
                    .collect();
                let spelling = match inv.spelling {
                    Spelling::Call => "call",
                    Spelling::Shell => "shell",
                };
                let object = inv.object.map(|o| format!("{o}.")).unwrap_or_default();
                format!("{spelling} {object}{}({})", inv.spec.name, args.join(", "))
            }
        }
    }

    #[track_caller]
    fn check(input: &str, expected: &str) {
        assert_eq!(render(parse_line(input)), expected, "input: {input:?}");
    }

    #[track_caller]
    fn check_all(cases: &[(&str, &str)]) {
        for (input, expected) in cases {
            check(input, expected);
        }
    }

    /// Errors checked by fragments: each must occur in the message.
    #[track_caller]
    fn check_err(input: &str, fragments: &[&str]) {
        let got = render(parse_line(input));
        assert!(got.starts_with("error: "), "input: {input:?} gave {got}");
        for f in fragments {
            assert!(got.contains(f), "input: {input:?}: {got:?} lacks {f:?}");
        }
    }

    #[test]
    fn guide_lines_in_the_call_form() {
        check_all(&[
            (">>> from develop_blueprint import NeuroCaaSAMI", "import"),
            (
                ">>> devami = NeuroCaaSAMI(\"../path_to_configured_folder\")",
                "bind devami = '../path_to_configured_folder'",
            ),
            (">>> devami.launch_ami()", "call devami.launch_devinstance()"),
            (">>> devami.launch_ami(ami = \"ubuntu18\")", "call devami.launch_devinstance(ami='ubuntu18')"),
            (
                ">>> devami.create_devami(name)",
                "error: `name` is not a literal: write the value itself, e.g. create_devami(\"my-image\")",
            ),
            (
                ">>> devami.update_blueprint(ami_id,message=None)",
                "error: `ami_id` is not a literal: write the value itself, e.g. update_blueprint(\"ami-0123456789abcdef0\")",
            ),
            (">>> devami.terminate_devinstance()", "call devami.terminate_devinstance()"),
            (">>> devami.stop_devinstance()", "call devami.stop_devinstance()"),
            (
                ">>> devami.submit_job_log(submitpath)",
                "error: `submitpath` is not a literal: write the value itself, e.g. submit_job_log(\"test_resources/submit.json\")",
            ),
            (
                ">>> devami.job_status(index)",
                "error: `index` is not a literal: write the value itself, e.g. job_status(-1)",
            ),
            (
                ">>> devami.job_output(index)",
                "error: `index` is not a literal: write the value itself, e.g. job_output(-1)",
            ),
        ]);
    }

    #[test]
    fn guide_lines_with_values_in_both_spellings() {
        check_all(&[
            ("devami.create_devami(\"my-image\")", "call devami.create_devami(name='my-image')"),
            ("create_devami my-image", "shell create_devami(name='my-image')"),
            (
                "devami.update_blueprint(\"ami-1\",message=None)",
                "call devami.update_blueprint(ami_id='ami-1')",
            ),
            ("update_blueprint ami-1", "shell update_blueprint(ami_id='ami-1')"),
            ("devami.submit_job_log(\"submit.json\")", "call devami.submit_job(submitpath='submit.json')"),
            ("submit_job_log submit.json", "shell submit_job(submitpath='submit.json')"),
            ("devami.job_status(-2)", "call devami.job_status(jobind=-2)"),
            ("job_status -2", "shell job_status(jobind=-2)"),
            ("devami.job_output(index=-2)", "call devami.job_output(jobind=-2)"),
            ("job_output --index -2", "shell job_output(jobind=-2)"),
            ("launch_ami", "shell launch_devinstance()"),
            ("launch_ami ubuntu18", "shell launch_devinstance(ami='ubuntu18')"),
            ("terminate_devinstance", "shell terminate_devinstance()"),
            ("stop_devinstance", "shell stop_devinstance()"),
        ]);
    }

    #[test]
    fn a_list_argument_takes_the_positional_words_the_rest_need_not() {
        check_all(&[
            ("new_submit a b c", "shell new_submit(dataset=['a', 'b'], config='c')"),
            ("new_submit a c", "shell new_submit(dataset=['a'], config='c')"),
            ("new_submit a b --config c", "shell new_submit(dataset=['a', 'b'], config='c')"),
            ("new_submit --config c a b", "shell new_submit(dataset=['a', 'b'], config='c')"),
            (
                "devami.new_submit([\"a\", \"b\"], \"c\")",
                "call devami.new_submit(dataset=['a', 'b'], config='c')",
            ),
            ("job_output -1 --follow --tail 5", "shell job_output(jobind=-1, follow=True, tail=5)"),
            ("submit_job s.json --parallel 3", "shell submit_job(submitpath='s.json', parallel=3)"),
        ]);
        check_err("new_submit a", &["missing `config`"]);
    }

    #[test]
    fn call_form_variants() {
        check_all(&[
            ("launch_ami(\"ubuntu18\")", "call launch_devinstance(ami='ubuntu18')"),
            (
                "devami.launch_devinstance(ami=\"ubuntu18\", timeout=120)",
                "call devami.launch_devinstance(ami='ubuntu18', timeout=120)",
            ),
            (
                "devami.launch_devinstance('ubuntu18', 200, 30, True)",
                "call devami.launch_devinstance(ami='ubuntu18', volume_size=200, timeout=30, dry_run=True)",
            ),
            (
                "devami.launch_ami(ami=\"ubuntu18\", dataset_size=100, DryRun=True);",
                "call devami.launch_devinstance(ami='ubuntu18', volume_size=100, dry_run=True)",
            ),
            ("x.get_ip()", "call x.get_ip()"),
            ("get_ip ()", "call get_ip()"),
            ("devami.job_status(jobind=-2)", "call devami.job_status(jobind=-2)"),
            ("devami.job_status(- 2)", "call devami.job_status(jobind=-2)"),
            ("devami.job_status(+3)", "call devami.job_status(jobind=3)"),
            ("devami.job_status(-(4))", "call devami.job_status(jobind=-4)"),
            (
                "devami.extend_lifetime(minutes=30, DryRun=False)",
                "call devami.extend_lifetime(additional_time=30, dry_run=False)",
            ),
            ("devami.sleep(2)", "call devami.sleep(seconds=2.0)"),
            ("sleep(0.5)", "call sleep(seconds=0.5)"),
            ("sleep(1e-3)", "call sleep(seconds=0.001)"),
            ("sleep(.25)", "call sleep(seconds=0.25)"),
            ("devami.update_blueprint(None, 'msg')", "call devami.update_blueprint(message='msg')"),
            ("devami.update_blueprint(ami_id=None)", "call devami.update_blueprint()"),
            ("devami.update_blueprint(\n'a',\n)", "call devami.update_blueprint(ami_id='a')"),
            (
                "devami.launch_ami(ami = \"ubuntu18\")  # a comment",
                "call devami.launch_devinstance(ami='ubuntu18')",
            ),
            ("devami.get_ip() ;  ", "call devami.get_ip()"),
            ("... devami.get_ip()", "call devami.get_ip()"),
            ("   >>>   devami.get_ip()", "call devami.get_ip()"),
            ("exec(\"ls -la | wc -l\")", "call exec(command='ls -la | wc -l')"),
            ("exit()", "call exit()"),
            ("quit()", "call exit()"),
            ("devami.status()", "call devami.status()"),
            ("upload(\"a.txt\", key=\"inputs/a.txt\")", "call upload(local='a.txt', key='inputs/a.txt')"),
        ]);
    }

    #[test]
    fn empty_comments_and_imports() {
        check_all(&[
            ("", "nothing"),
            ("   ", "nothing"),
            (">>>", "nothing"),
            (">>> ", "nothing"),
            ("...", "nothing"),
            ("# just a comment", "nothing"),
            (">>> # a comment", "nothing"),
            (";", "nothing"),
            ("import os", "import"),
            ("from develop_blueprint import NeuroCaaSAMI", "import"),
            ("from neurocaas_contrib.remote import NeuroCAASAMI", "import"),
        ]);
    }

    #[test]
    fn string_literals_and_escapes() {
        check_all(&[
            ("create_devami('it\\'s')", "call create_devami(name=\"it's\")"),
            ("create_devami(\"say \\\"hi\\\"\")", "call create_devami(name='say \"hi\"')"),
            ("create_devami(\"a\\tb\\n\")", "call create_devami(name='a\\tb\\n')"),
            ("create_devami(\"\\x41\\u00e9\\U0001F600\\101\\0\")", "call create_devami(name='Aé😀A\\x00')"),
            ("create_devami(r\"a\\nb\")", "call create_devami(name='a\\\\nb')"),
            ("create_devami(R'a\\'b')", "call create_devami(name=\"a\\\\'b\")"),
            ("create_devami(\"a\" 'b'  \"c\")", "call create_devami(name='abc')"),
            ("create_devami(\"\"\"tri\"ple\"\"\")", "call create_devami(name='tri\"ple')"),
            ("create_devami('''a'b''')", "call create_devami(name=\"a'b\")"),
            ("create_devami(u\"x\")", "call create_devami(name='x')"),
            ("create_devami(\"\\q\")", "call create_devami(name='\\\\q')"),
            ("create_devami(\"héllo wörld ✓\")", "call create_devami(name='héllo wörld ✓')"),
            ("create_devami((\"paren\"))", "call create_devami(name='paren')"),
            ("create_devami(\"\")", "call create_devami(name='')"),
        ]);
        check_err("create_devami(b\"x\")", &["bytes literals", "plain string"]);
        check_err("create_devami(f\"x{y}\")", &["f-strings", "not literals"]);
        check_err("create_devami(\"\\N{DASH}\")", &["`\\N{...}` escapes are not supported"]);
        check_err("create_devami(\"\\x4\")", &["invalid `\\x` escape", "e.g. `\\x41`"]);
        check_err("create_devami(\"\\ud800\")", &["invalid `\\u` escape"]);
        check_err("create_devami(\"\\U00110000\")", &["invalid `\\U` escape"]);
    }

    #[test]
    fn number_literals() {
        check_all(&[
            ("job_status(1_000)", "call job_status(jobind=1000)"),
            ("job_status(0x10)", "call job_status(jobind=16)"),
            ("job_status(0o17)", "call job_status(jobind=15)"),
            ("job_status(0b101)", "call job_status(jobind=5)"),
            ("job_status(-9223372036854775808)", "call job_status(jobind=-9223372036854775808)"),
            ("job_status(9223372036854775807)", "call job_status(jobind=9223372036854775807)"),
            ("sleep(1_0.5)", "call sleep(seconds=10.5)"),
        ]);
        check_err("job_status(1__0)", &["invalid number `1__0`"]);
        check_err("job_status(1_)", &["invalid number"]);
        check_err("job_status(12abc)", &["invalid number `12abc`"]);
        check_err("job_status(1.5j)", &["invalid number"]);
        check_err("job_status(0xZZ)", &["invalid number"]);
        check_err("job_status(9223372036854775808)", &["job_status(): integer at column 12 is too large"]);
        check_err("job_status(99999999999999999999999999999999999999999)", &["is too large"]);
        check_err("sleep(1e999)", &["invalid number"]);
    }

    #[test]
    fn type_errors_name_command_argument_and_value() {
        check_all(&[
            (
                "launch_devinstance(timeout='abc')",
                "error: launch_devinstance(): `timeout` expects an integer, got 'abc' (a string)",
            ),
            ("job_status(1.5)", "error: job_status(): `jobind` expects an integer, got 1.5 (a float)"),
            ("job_status(True)", "error: job_status(): `jobind` expects an integer, got True (a boolean)"),
            ("job_status(\"3\")", "error: job_status(): `jobind` expects an integer, got '3' (a string)"),
            (
                "terminate_devinstance(force=\"yes\")",
                "error: terminate_devinstance(): `force` expects True or False, got 'yes' (a string)",
            ),
            ("terminate(1)", "error: terminate(): `force` expects True or False, got 1 (an integer)"),
            ("create_devami(3)", "error: create_devami(): `name` expects a string, got 3 (an integer)"),
            (
                "create_devami([\"a\", \"b\"])",
                "error: create_devami(): `name` expects a string, got ['a', 'b'] (a list)",
            ),
            (
                "create_devami((\"a\",))",
                "error: create_devami(): `name` expects a string, got ['a'] (a list)",
            ),
            ("create_devami(())", "error: create_devami(): `name` expects a string, got [] (a list)"),
            ("sleep(\"1\")", "error: sleep(): `seconds` expects a number, got '1' (a string)"),
        ]);
    }

    #[test]
    fn argument_binding_errors() {
        check_all(&[
            (
                "launch_devinstance(foo=1)",
                "error: launch_devinstance() got an unexpected keyword argument 'foo' (expected: ami, volume_size, timeout, dry_run)",
            ),
            ("get_ip(x=1)", "error: get_ip() got an unexpected keyword argument 'x' (it takes no arguments)"),
            ("get_ip(1)", "error: get_ip(): takes no arguments (1 given)"),
            (
                "job_status(1, 2, 3)",
                "error: job_status(): takes at most 2 arguments (jobind, wait) but 3 were given",
            ),
            (
                "launch_ami(timeout=5, \"ubuntu18\")",
                "error: launch_ami(): positional argument `'ubuntu18'` follows keyword argument `timeout`; \
                 give it by name too (expected: ami, volume_size, timeout, dry_run)",
            ),
            (
                "launch_ami(\"ubuntu18\", ami=\"x\")",
                "error: launch_ami(): got multiple values for argument 'ami'",
            ),
            (
                "job_status(index=1, jobind=2)",
                "error: job_status(): got multiple values for argument 'jobind'",
            ),
            (
                "create_devami()",
                "error: create_devami(): missing required argument 'name' (the name of the new image, unique in \
                 the account), e.g. create_devami(\"my-image\")",
            ),
            (
                "extend_lifetime(DryRun=True)",
                "error: extend_lifetime(): missing required argument 'additional_time' (minutes to add to the \
                 lifetime), e.g. extend_lifetime(30)",
            ),
            (
                "create_devami(None)",
                "error: create_devami(): missing required argument 'name' (the name of the new image, unique in the account), e.g. create_devami(\"my-image\")",
            ),
            (
                "upload(key=devami)",
                "error: `devami` is not a literal: write the value itself, e.g. upload(key=\"...\")",
            ),
        ]);
        check_err("create_devami(name=)", &["create_devami(): expected a value, found `)`"]);
        check_err("create_devami(name==1)", &["comparisons like `name == ...`"]);
        check_err("create_devami(*args)", &["unpacking are not supported"]);
        check_err("create_devami(**kw)", &["unpacking are not supported"]);
        check_err("create_devami(foo(1, (2)))", &["`foo(...)` is not a literal"]);
        check_err("create_devami(devami.name)", &["`devami.name` is not a literal"]);
        check_err("create_devami([a])", &["`a` is not a literal"]);
        check_err("create_devami(-x)", &["`-x` is not a literal"]);
        check_err("create_devami(-\"x\")", &["`-` applies to numbers only"]);
        check_err("create_devami(\"a\" + \"b\")", &["expected `,` or `)` after an argument, found `+`"]);
        check_err("create_devami(\"a\") status", &["unexpected `status` after the closing `)`"]);
        check_err("get_ip(); get_ip()", &["write one command per line"]);
        check_err("a.b.get_ip()", &["`a.b.get_ip` has more than one `.`"]);
        check_err("create_devami({})", &["expected a value, found `{`"]);
        check_err("create_devami(\"x\" ", &["create_devami(): missing the closing `)`"]);
        check_err("create_devami(", &["missing the closing `)`"]);
        check_err("create_devami([1, 2", &["expected `,` or `]` in a list, found the end of the line"]);
        check_err("create_devami([1, ", &["expected a value, found the end of the line"]);
        check_err("create_devami($)", &["unexpected character `$`"]);
    }

    #[test]
    fn unknown_commands_get_suggestions() {
        check_all(&[
            ("lanch", "error: unknown command `lanch` (did you mean `launch`?); type `help` for the list"),
            (
                "devami.terminate_devinstnce()",
                "error: unknown command `terminate_devinstnce` (did you mean `terminate_devinstance`?); type `help` for the list",
            ),
            (
                "terminate_devinstnce --force",
                "error: unknown command `terminate_devinstnce` (did you mean `terminate_devinstance`?); type `help` for the list",
            ),
            ("frobnicate", "error: unknown command `frobnicate`; type `help` for the list"),
            (
                "devami.launch_ami",
                "error: `devami.launch_ami` needs parentheses in the call form: write `devami.launch_ami()`, or `launch_ami` without the prefix",
            ),
            (
                "NeuroCaaSAMI(\"x\")",
                "error: assign the object to a name: `devami = NeuroCaaSAMI(\"path/to/blueprint\")`",
            ),
        ]);
    }

    #[test]
    fn assignments() {
        check_all(&[
            ("d = NeuroCAASAMI(path=\"p\")", "bind d = 'p'"),
            ("d=develop_blueprint.NeuroCaaSAMI('p');", "bind d = 'p'"),
            ("my_ami = NeuroCaaSAMI(\"blueprints/x y\")", "bind my_ami = 'blueprints/x y'"),
        ]);
        check_err(
            "d = foo(\"p\")",
            &["only `d = NeuroCaaSAMI(\"path/to/blueprint\")` assignments", "`d = foo...`"],
        );
        check_err("d = 5", &["only `d = NeuroCaaSAMI"]);
        check_all(&[
            ("ip = devami.ip", "call devami.get_ip()"),
            (">>> devami.ip", "call devami.get_ip()"),
            ("hist = d.instance_hist  # all of them", "call d.history()"),
        ]);
        check_err("ip = devami.secret", &["`devami.secret` is not an attribute devami knows", "`devami.ip`"]);
        check_err("d = NeuroCaaSAMI", &["only `d = NeuroCaaSAMI"]);
        check_err(
            "d = NeuroCaaSAMI(p)",
            &["`p` is not a literal", "d = NeuroCaaSAMI(\"../path_to_configured_folder\")"],
        );
        check_err("d = NeuroCaaSAMI()", &["NeuroCaaSAMI(): missing required argument 'path'"]);
        check_err("d = NeuroCaaSAMI(\"a\", \"b\")", &["takes 1 argument (path) but 2 were given"]);
        check_err(
            "d = NeuroCaaSAMI(folder=\"a\")",
            &["unexpected keyword argument 'folder' (expected: path)"],
        );
        check_err("d = NeuroCaaSAMI(3)", &["`path` expects a string"]);
        check_err("d = NeuroCaaSAMI(\"a\"", &["missing the closing `)`"]);
    }

    #[test]
    fn shell_form() {
        check_all(&[
            (
                "launch_devinstance ubuntu18 --timeout 120",
                "shell launch_devinstance(ami='ubuntu18', timeout=120)",
            ),
            ("launch --volume-size 200 --dry-run", "shell launch_devinstance(volume_size=200, dry_run=True)"),
            ("launch --volume_size=200 --DryRun", "shell launch_devinstance(volume_size=200, dry_run=True)"),
            (
                "launch --dataset-size 50 --no-dry-run",
                "shell launch_devinstance(volume_size=50, dry_run=False)",
            ),
            (
                "launch --volume-size 200 ubuntu18",
                "shell launch_devinstance(ami='ubuntu18', volume_size=200)",
            ),
            ("launch ubuntu18 1_000", "shell launch_devinstance(ami='ubuntu18', volume_size=1000)"),
            ("terminate_devinstance --force", "shell terminate_devinstance(force=True)"),
            ("terminate --force=false", "shell terminate_devinstance(force=False)"),
            ("terminate --force false", "shell terminate_devinstance(force=False)"),
            ("terminate --no-force", "shell terminate_devinstance(force=False)"),
            ("terminate true", "shell terminate_devinstance(force=True)"),
            ("terminate False", "shell terminate_devinstance(force=False)"),
            ("job_status -2", "shell job_status(jobind=-2)"),
            ("job_status -- -3", "shell job_status(jobind=-3)"),
            ("job_status --jobind -2", "shell job_status(jobind=-2)"),
            ("job_status --index=-3", "shell job_status(jobind=-3)"),
            ("job_status +4", "shell job_status(jobind=4)"),
            ("extend_lifetime 30 --dry-run", "shell extend_lifetime(additional_time=30, dry_run=True)"),
            ("extend_lifetime --dry-run 30", "shell extend_lifetime(additional_time=30, dry_run=True)"),
            ("extend_lifetime --minutes 30", "shell extend_lifetime(additional_time=30)"),
            ("exec ls -la | wc -l", "shell exec(command='ls -la | wc -l')"),
            ("exec   echo \"a b\"  ; x   ", "shell exec(command='echo \"a b\"  ; x')"),
            ("exec echo 'unterminated", "shell exec(command=\"echo 'unterminated\")"),
            ("exec --force", "shell exec(command='--force')"),
            (
                "update_blueprint ami-1 --message \"first image\"",
                "shell update_blueprint(ami_id='ami-1', message='first image')",
            ),
            ("update_blueprint --message m ami-1", "shell update_blueprint(ami_id='ami-1', message='m')"),
            (
                "upload data/video.mp4 inputs/video.mp4",
                "shell upload(local='data/video.mp4', key='inputs/video.mp4')",
            ),
            (
                "download 'my key.txt' \"local file.txt\"",
                "shell download(key='my key.txt', local='local file.txt')",
            ),
            ("create_devami my\\ image", "shell create_devami(name='my image')"),
            ("create_devami \"a\\\"b\\\\c\\$d\\e\"", "shell create_devami(name='a\"b\\\\c$d\\\\e')"),
            ("create_devami 'a\\b'", "shell create_devami(name='a\\\\b')"),
            ("create_devami x''y\"\"z", "shell create_devami(name='xyz')"),
            ("create_devami ''", "shell create_devami(name='')"),
            ("create_devami -- --weird", "shell create_devami(name='--weird')"),
            ("create_devami '--weird'", "shell create_devami(name='--weird')"),
            ("create_devami 'help'", "shell create_devami(name='help')"),
            ("create_devami my-image # a comment", "shell create_devami(name='my-image')"),
            ("create_devami my#image", "shell create_devami(name='my#image')"),
            ("status # a comment", "shell status()"),
            ("status;", "shell status()"),
            ("status ; # done", "shell status()"),
            ("sleep 1.5", "shell sleep(seconds=1.5)"),
            ("sleep 2", "shell sleep(seconds=2.0)"),
            ("ls", "shell ls()"),
            ("ls results/", "shell ls(prefix='results/')"),
            ("assign_instance i-0abc", "shell assign_instance(instance_id='i-0abc')"),
            ("open blueprints/my-analysis", "shell open(path='blueprints/my-analysis')"),
            ("exit", "shell exit()"),
            ("quit", "shell exit()"),
        ]);
    }

    #[test]
    fn shell_form_errors() {
        check_all(&[
            ("job_status abc", "error: job_status: `jobind` expects an integer, got `abc`"),
            (
                "job_status -x",
                "error: job_status: unknown option `-x`: options are written `--name` (expected: --jobind, --wait)",
            ),
            ("job_status 1 2", "error: job_status: `wait` expects True or False, got `2`"),
            (
                "get_ip extra",
                "error: get_ip: unexpected argument `extra` (it takes no arguments); usage: get_ip",
            ),
            (
                "extend_lifetime",
                "error: extend_lifetime: missing `additional_time` (minutes to add to the lifetime); usage: \
                 extend_lifetime ADDITIONAL_TIME [--dry-run]",
            ),
            (
                "exec",
                "error: exec: missing `command` (the shell command line to run, verbatim (pipes and quotes included)); usage: exec COMMAND...",
            ),
            ("sleep abc", "error: sleep: `seconds` expects a number, got `abc`"),
            ("sleep nan", "error: sleep: `seconds` expects a number, got `nan`"),
            ("sleep inf", "error: sleep: `seconds` expects a number, got `inf`"),
            ("launch --timeout", "error: launch: `--timeout` needs a value (an integer)"),
            ("launch --timeout --dry-run", "error: launch: `--timeout` needs a value (an integer)"),
            ("launch --timeout=abc", "error: launch: `--timeout` expects an integer, got `abc`"),
            ("launch --timeout 1.5", "error: launch: `--timeout` expects an integer, got `1.5`"),
            (
                "launch --bogus",
                "error: launch: unknown option `--bogus` (expected: --ami, --volume-size, --timeout, --dry-run)",
            ),
            ("launch --no-timeout", "error: launch: `--no-timeout` is only for true/false options"),
            ("launch --dry-run=maybe", "error: launch: `--dry-run` expects True or False, got `maybe`"),
            ("launch --no-dry-run=true", "error: launch: `--no-dry-run` takes no value"),
            ("launch --timeout 5 --timeout 6", "error: launch: `timeout` is given twice"),
            ("launch ubuntu18 --ami x", "error: launch: `ami` is given twice"),
            (
                "job_status 99999999999999999999",
                "error: job_status: `jobind`: `99999999999999999999` is too large",
            ),
            (
                "create_devami \"unterminated",
                "error: create_devami: unterminated double quote starting at column 15: add the closing `\"`",
            ),
            (
                "create_devami 'x",
                "error: create_devami: unterminated single quote starting at column 15: add the closing `'`",
            ),
            (
                "create_devami x\\",
                "error: create_devami: the line ends with a `\\`: write `\\\\` for a backslash",
            ),
            (
                "status; jobs",
                "error: status: write one command per line (`;` separates commands only in `devami DIR -c 'CMD; CMD'`)",
            ),
            ("'unterminated", "error: unterminated single quote starting at column 1: add the closing `'`"),
        ]);
    }

    #[test]
    fn help_forms() {
        check_all(&[
            ("help", "help"),
            ("?", "help"),
            ("help()", "help"),
            ("help(None)", "help"),
            ("help launch", "help launch_devinstance"),
            ("? launch_ami", "help launch_devinstance"),
            ("help help", "help help"),
            ("help --help", "help help"),
            ("launch --help", "help launch_devinstance"),
            ("launch -h", "help launch_devinstance"),
            ("launch help", "help launch_devinstance"),
            ("launch ubuntu18 --help", "help launch_devinstance"),
            ("exec --help", "help exec"),
            ("exec -h", "help exec"),
            ("get_ip --help", "help get_ip"),
            ("help(launch_ami)", "help launch_devinstance"),
            ("help(\"launch\")", "help launch_devinstance"),
            ("help(command='stop')", "help stop_devinstance"),
            ("help(devami.launch_ami)", "help launch_devinstance"),
            (">>> help(devami.launch_ami)", "help launch_devinstance"),
            ("devami.launch_ami?", "help launch_devinstance"),
            ("launch?", "help launch_devinstance"),
            ("help status;", "help status"),
            ("help --command stop", "help stop_devinstance"),
            ("help --command=stop", "help stop_devinstance"),
        ]);
        check_all(&[
            (
                "help lanch",
                "error: unknown command `lanch` (did you mean `launch`?); type `help` for the list",
            ),
            (
                "help(lanch)",
                "error: unknown command `lanch` (did you mean `launch`?); type `help` for the list",
            ),
            (
                "help(\"lanch\")",
                "error: unknown command `lanch` (did you mean `launch`?); type `help` for the list",
            ),
            ("lanch?", "error: unknown command `lanch` (did you mean `launch`?); type `help` for the list"),
            (
                "help launch extra",
                "error: help: takes one command name, not also `extra`; e.g. `help launch_devinstance`",
            ),
            ("help(1)", "error: help(): expected a command name, got 1 (an integer)"),
            (
                "help(\"a\", \"b\")",
                "error: help(): takes at most 1 argument (a command name) but 2 were given",
            ),
            ("help(x=1)", "error: help(): got an unexpected keyword argument 'x' (expected: command)"),
        ]);
    }

    #[test]
    fn every_example_parses_to_its_command_in_both_spellings_with_the_same_arguments() {
        for spec in COMMANDS {
            let call = parse_line(spec.example_call);
            let shell = parse_line(spec.example_shell);
            if spec.name == "help" {
                assert!(matches!(call, Ok(Line::Help(Some(_)))), "{}: {:?}", spec.example_call, call);
                assert!(matches!(shell, Ok(Line::Help(Some(_)))), "{}: {:?}", spec.example_shell, shell);
                continue;
            }
            let (Ok(Line::Command(call)), Ok(Line::Command(shell))) = (&call, &shell) else {
                panic!("{}: {call:?} / {shell:?}", spec.name);
            };
            assert_eq!(call.spec.name, spec.name);
            assert_eq!(shell.spec.name, spec.name);
            assert_eq!(call.spelling, Spelling::Call);
            assert_eq!(shell.spelling, Spelling::Shell);
            assert_eq!(call.args, shell.args, "{}: the two examples differ", spec.name);
            // `CMD --help` and `help CMD` for every name and alias.
            for name in std::iter::once(spec.name).chain(spec.aliases.iter().copied()) {
                for line in [format!("{name} --help"), format!("help {name}"), format!("help({name})")] {
                    assert_eq!(parse_line(&line).ok(), Some(Line::Help(Some(spec))), "{line}");
                }
                if spec.args.iter().all(|a| !a.required) {
                    check(name, &format!("shell {}()", spec.name));
                    check(&format!("devami.{name}()"), &format!("call devami.{}()", spec.name));
                }
            }
        }
    }

    #[test]
    fn any_number_of_semicolons_is_a_loop_not_a_recursion() {
        let many = ";".repeat(300_000);
        check(&many, "nothing");
        check(&format!("status {many}"), "shell status()");
        check(&format!("status {many} # done"), "shell status()");
        check_err(&format!("{many}status"), &["write one command per line"]);
        check_err(&format!("status {many} ls"), &["status: write one command per line"]);
    }

    #[test]
    fn the_parentheses_hint_quotes_the_object_safely() {
        let got = render(parse_line("\u{1b}[2J\u{1b}[H.status"));
        assert!(got.contains("needs parentheses") && !got.contains('\u{1b}'), "{got}");
        let long = "o".repeat(100_000);
        let got = render(parse_line(&format!("{long}.status")));
        assert!(got.contains("needs parentheses") && got.len() < 400, "{got}");
    }

    #[test]
    fn hostile_input_gives_errors_not_panics() {
        let mb = 1 << 20;
        let long = "a".repeat(mb);
        check(
            &long,
            &format!(
                "error: unknown command `{}…`; type `help` for the list",
                "a".repeat(crate::error::SHOWN_CHARS)
            ),
        );
        let got = render(parse_line(&format!("create_devami(\"{long}\")")));
        assert_eq!(got.len(), "call create_devami(name='')".len() + mb);
        check_err(&format!("create_devami(\"{long}"), &["unterminated string starting at column 15"]);
        check_err(&format!("create_devami {long}'"), &["unterminated single quote"]);
        check_err(&format!("status {}", "x ".repeat(mb / 2)), &["unexpected argument `x`"]);
        check_err(&format!("create_devami({})", "[".repeat(mb)), &["values are nested too deeply"]);
        check_err(&format!("create_devami({})", "(".repeat(mb)), &["values are nested too deeply"]);
        check_err(&format!("create_devami({})", "-".repeat(mb)), &["values are nested too deeply"]);
        check_err(
            &format!("create_devami(\"a\"{})", " \"a\"".repeat(mb / 4)).replace(")", ""),
            &["missing the closing `)`"],
        );
        check_err(&format!("job_status({})", "1".repeat(mb)), &["is too large"]);
        check_err(&format!("job_status {}", "1".repeat(mb)), &["is too large"]);
        check(&format!("exec {long}"), &format!("shell exec(command='{long}')"));
        assert_eq!(split_commands(&"status;".repeat(mb / 7)).len(), mb / 7);
        let _ = completion_context(&format!("launch {}", "--x ".repeat(mb / 4)));
        // Control characters and binary junk.
        check("\u{0}\u{1}\u{7f}", "error: unknown command `\\u{0}\\u{1}\\u{7f}`; type `help` for the list");
        check("statüs", "error: unknown command `statüs` (did you mean `status`?); type `help` for the list");
        check("create_devami \u{1b}[31m", "shell create_devami(name='\\x1b[31m')");
        check_err("create_devami(\u{1b})", &["unexpected character `\\u{1b}`"]);
        check("create_devami(\"\u{1b}\")", "call create_devami(name='\\x1b')");
        check_err("create_devami(\"a\nb\")", &["unterminated string"]);
        let junk: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let junk = String::from_utf8_lossy(&junk);
        let _ = parse_line(&junk);
        let _ = split_commands(&junk);
        let _ = completion_context(&junk);
    }

    /// Every prefix of many tricky lines, in every entry point: no panics.
    #[test]
    fn no_panics_on_prefixes_and_random_lines() {
        let lines = [
            ">>> devami.launch_ami(ami = \"ubuntu18\", timeout=[1, (2,), -3.5e2], DryRun=True)  # c",
            "d = NeuroCaaSAMI(r'\\x', \"\"\"a\"\"\", b'x', f\"y\")",
            "exec echo \"a\\\"b\" 'c' \\d # e; f",
            "launch --timeout=-1 --no-dry-run -- -x 'é' \"✓\\$\" ;",
            "help(devami.launch_ami); ? launch?",
            "create_devami(\"\\x4\\u12\\U0001F60\\N{x}\\777\\",
        ];
        for line in lines {
            for (i, _) in line.char_indices().chain(std::iter::once((line.len(), ' '))) {
                let prefix = &line[..i];
                let _ = parse_line(prefix);
                let _ = split_commands(prefix);
                let c = completion_context(prefix);
                let _ = c.candidates();
            }
        }
        let alphabet: Vec<char> = "ab_.()[],=-+'\"\\#; \t\n0123456789eExrRbf?é\u{0}".chars().collect();
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..3000 {
            let len = (seed % 24) as usize;
            let mut s = String::new();
            for _ in 0..len {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                s.push(alphabet[(seed % alphabet.len() as u64) as usize]);
            }
            for prefix in
                ["", "launch_ami(", "devami.create_devami(", "launch ", "d = NeuroCaaSAMI(", "exec "]
            {
                let line = format!("{prefix}{s}");
                let _ = parse_line(&line);
                let _ = split_commands(&line);
                let _ = completion_context(&line).candidates();
            }
        }
    }

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

    #[test]
    fn args_accessors() {
        let Ok(Line::Command(inv)) = parse_line("launch ubuntu18 --timeout 5 --dry-run") else { panic!() };
        assert_eq!(inv.args.str("ami"), Some("ubuntu18"));
        assert_eq!(inv.args.int("timeout"), Some(5));
        assert_eq!(inv.args.float("timeout"), Some(5.0));
        assert_eq!(inv.args.bool("dry_run"), Some(true));
        assert_eq!(inv.args.int("volume_size"), None);
        assert!(!inv.args.is_given("volume_size") && inv.args.is_given("ami"));
        assert_eq!(inv.args.list("ami"), Some(vec!["ubuntu18".to_string()]));
        assert_eq!(inv.args.str("timeout"), None);
        let mut args = Args::default();
        args.set("x", Value::List(vec![Value::Str("a".into()), Value::Str("b".into())]));
        assert_eq!(args.list("x"), Some(vec!["a".to_string(), "b".to_string()]));
        args.set("x", Value::Int(1));
        assert_eq!(args.iter().count(), 1);
        assert_eq!(args.list("x"), None);
    }

    #[test]
    fn string_lists_are_checked() {
        const LIST: ArgSpec = ArgSpec {
            name: "keys",
            kind: ArgKind::StrList,
            required: false,
            default: None,
            help: "",
            aliases: &[],
        };
        let parser = CallParser::new("", false);
        let list = Value::List(vec![Value::Str("a".into())]);
        assert_eq!(parser.convert(&LIST, list.clone()).ok(), Some(Some(list)));
        assert_eq!(parser.convert(&LIST, Value::Str("a".into())).ok(), Some(Some(Value::Str("a".into()))));
        assert_eq!(parser.convert(&LIST, Value::None).ok(), Some(None));
        let err = parser.convert(&LIST, Value::List(vec![Value::Int(1)])).unwrap_err().to_string();
        assert_eq!(err, "`keys` expects a string or a list of strings, got [1] (a list)");
        assert_eq!(
            shell_value(&LIST, "", "`keys`", "a b").ok(),
            Some(Value::List(vec![Value::Str("a b".into())]))
        );
    }

    #[test]
    fn values_print_as_python() {
        for (v, repr) in [
            (Value::Str("a'b".into()), "\"a'b\""),
            (Value::Str("a'b\"".into()), "'a\\'b\"'"),
            (Value::Str("\u{7}".into()), "'\\x07'"),
            (Value::Float(1.0), "1.0"),
            (Value::Bool(false), "False"),
            (Value::None, "None"),
            (Value::List(vec![Value::Int(1), Value::Str("x".into())]), "[1, 'x']"),
        ] {
            assert_eq!(v.to_string(), repr);
        }
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("test_resources/submit.json"), "test_resources/submit.json");
        assert_eq!(shell_quote("my file"), "'my file'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("~x"), "'~x'");
        for s in ["my file", "it's", "", "a\"b$c", "--x"] {
            let line = format!("create_devami -- {}", shell_quote(s));
            check(&line, &format!("shell create_devami(name={})", python_repr(s)));
        }
    }

    fn spec(name: &str) -> &'static CommandSpec {
        commands::lookup(name).unwrap()
    }

    fn arg(command: &str, name: &str) -> Option<&'static ArgSpec> {
        spec(command).arg(name)
    }

    #[test]
    fn completion_contexts() {
        use Completion::*;
        use Spelling::{Call, Shell};
        let s = |x: &str| x.to_string();
        let cases: Vec<(&str, Completion)> = vec![
            ("", CommandName { prefix: s(""), start: 0 }),
            ("lau", CommandName { prefix: s("lau"), start: 0 }),
            (">>> devami.lau", CommandName { prefix: s("lau"), start: 11 }),
            (">>> devami.", CommandName { prefix: s(""), start: 11 }),
            ("launch --ti", Keyword { spec: spec("launch"), spelling: Shell, prefix: s("--ti"), start: 7 }),
            ("launch -", Keyword { spec: spec("launch"), spelling: Shell, prefix: s("-"), start: 7 }),
            (
                "launch --timeout ",
                Value {
                    spec: spec("launch"),
                    arg: arg("launch", "timeout"),
                    spelling: Shell,
                    prefix: s(""),
                    start: 17,
                },
            ),
            (
                "launch --timeout=1",
                Value {
                    spec: spec("launch"),
                    arg: arg("launch", "timeout"),
                    spelling: Shell,
                    prefix: s("1"),
                    start: 17,
                },
            ),
            (
                "launch ",
                Value {
                    spec: spec("launch"),
                    arg: arg("launch", "ami"),
                    spelling: Shell,
                    prefix: s(""),
                    start: 7,
                },
            ),
            (
                "launch ubu",
                Value {
                    spec: spec("launch"),
                    arg: arg("launch", "ami"),
                    spelling: Shell,
                    prefix: s("ubu"),
                    start: 7,
                },
            ),
            (
                "submit_job test_r",
                Value {
                    spec: spec("submit_job"),
                    arg: arg("submit_job", "submitpath"),
                    spelling: Shell,
                    prefix: s("test_r"),
                    start: 11,
                },
            ),
            (
                "upload 'my fi",
                Value {
                    spec: spec("upload"),
                    arg: arg("upload", "local"),
                    spelling: Shell,
                    prefix: s("my fi"),
                    start: 7,
                },
            ),
            (
                "upload a.txt ",
                Value {
                    spec: spec("upload"),
                    arg: arg("upload", "key"),
                    spelling: Shell,
                    prefix: s(""),
                    start: 13,
                },
            ),
            (
                "upload --key k ",
                Value {
                    spec: spec("upload"),
                    arg: arg("upload", "local"),
                    spelling: Shell,
                    prefix: s(""),
                    start: 15,
                },
            ),
            (
                "job_status -2",
                Value {
                    spec: spec("job_status"),
                    arg: arg("job_status", "jobind"),
                    spelling: Shell,
                    prefix: s("-2"),
                    start: 11,
                },
            ),
            ("get_ip ", Value { spec: spec("get_ip"), arg: None, spelling: Shell, prefix: s(""), start: 7 }),
            (
                "exec ls -",
                Value {
                    spec: spec("exec"),
                    arg: arg("exec", "command"),
                    spelling: Shell,
                    prefix: s("-"),
                    start: 8,
                },
            ),
            ("help la", CommandName { prefix: s("la"), start: 5 }),
            ("? ", CommandName { prefix: s(""), start: 2 }),
            ("help la x", Nothing),
            ("status # comm", Nothing),
            ("unknowncmd x", Nothing),
            ("status; j", Nothing),
            (
                "devami.launch_ami(",
                Keyword { spec: spec("launch"), spelling: Call, prefix: s(""), start: 18 },
            ),
            (
                "devami.launch_ami(ti",
                Keyword { spec: spec("launch"), spelling: Call, prefix: s("ti"), start: 18 },
            ),
            (
                "launch_ami(\"x\", ",
                Keyword { spec: spec("launch"), spelling: Call, prefix: s(""), start: 16 },
            ),
            (
                "devami.launch_ami(ami=\"ubu",
                Value {
                    spec: spec("launch"),
                    arg: arg("launch", "ami"),
                    spelling: Call,
                    prefix: s("ubu"),
                    start: 23,
                },
            ),
            (
                "devami.launch_ami(\"ubu",
                Value {
                    spec: spec("launch"),
                    arg: arg("launch", "ami"),
                    spelling: Call,
                    prefix: s("ubu"),
                    start: 19,
                },
            ),
            (
                "launch_ami(\"x\", 5, timeout=",
                Value {
                    spec: spec("launch"),
                    arg: arg("launch", "timeout"),
                    spelling: Call,
                    prefix: s(""),
                    start: 27,
                },
            ),
            (
                "launch_ami(timeout=5, \"",
                Value { spec: spec("launch"), arg: None, spelling: Call, prefix: s(""), start: 23 },
            ),
            (
                "devami.submit_job(\"test",
                Value {
                    spec: spec("submit_job"),
                    arg: arg("submit_job", "submitpath"),
                    spelling: Call,
                    prefix: s("test"),
                    start: 19,
                },
            ),
            ("help(\"lau", CommandName { prefix: s("lau"), start: 6 }),
            ("help(lau", CommandName { prefix: s("lau"), start: 5 }),
            (
                "d = NeuroCaaSAMI(\"blue",
                Value {
                    spec: spec("open"),
                    arg: arg("open", "path"),
                    spelling: Call,
                    prefix: s("blue"),
                    start: 18,
                },
            ),
            ("d = other(\"blue", Nothing),
            ("launch_ami()", Nothing),
            ("launch_ami(\"x\"", Nothing),
            ("launch_ami([\"x", Nothing),
        ];
        for (line, expected) in cases {
            assert_eq!(completion_context(line), expected, "line: {line:?}");
        }
    }

    #[test]
    fn completion_candidates() {
        #[track_caller]
        fn check_candidates(line: &str, expected: &[&str]) {
            assert_eq!(completion_context(line).candidates(), expected, "line: {line:?}");
        }
        check_candidates("lau", &["launch", "launch_ami", "launch_devinstance"]);
        check_candidates("devami.submit", &["submit", "submit_job", "submit_job_log"]);
        check_candidates("launch --ti", &["--timeout"]);
        check_candidates("launch --", &["--ami", "--dry-run", "--no-dry-run", "--timeout", "--volume-size"]);
        check_candidates("launch_ami(ti", &["timeout="]);
        check_candidates("launch_ami(", &["ami=", "dry_run=", "timeout=", "volume_size="]);
        check_candidates("terminate --force=", &["false", "true"]);
        check_candidates("terminate_devinstance(force=", &["False", "True"]);
        check_candidates("terminate_devinstance(force=\"T", &[]);
        check_candidates("terminate_devinstance(force=T", &[]);
        check_candidates("help jo", &["job_output", "job_status", "jobs"]);
        check_candidates("submit_job te", &[]);
    }
}
