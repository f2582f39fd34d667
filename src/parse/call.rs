//! The Python call form: `devami.launch_ami(ami = "ubuntu18")`, `d = NeuroCaaSAMI("path")`,
//! `help(launch_ami)`, and attribute reads such as `devami.ip`.
//!
//! `Lexer` reads Python tokens (strings with prefixes and escapes, ints in any radix, floats,
//! punctuation); `CallParser` reads a call, an assignment or an attribute read from them and binds
//! positional and keyword arguments Python's way. Values must be literals: strings, numbers,
//! `True`/`False`/`None`, and lists or tuples of them nested at most `MAX_DEPTH` deep. Never panics
//! on any input; the lexer is linear, and an unterminated string tells where its content began (for
//! completion).

use std::fmt;

use super::{ATTRIBUTES, Args, CLASS_NAME, Invocation, Line, Spelling, Value};
use super::{column, help_for, ident_end, unknown_command};
use crate::Error;
use crate::commands::{self, ArgKind, ArgSpec, CommandSpec};
use crate::error::{shown, shown_raw};

/// How deep lists and tuples may nest in a call-form value.
const MAX_DEPTH: usize = 32;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    Ident(String),
    Str(String),
    /// An integer literal before its sign is applied (so that `-9223372036854775808` works).
    Int(i128),
    Float(f64),
    Punct(char),
}

#[derive(Debug, Clone)]
pub(super) struct Token {
    pub(super) tok: Tok,
    pub(super) start: usize,
    pub(super) end: usize,
}

/// A lexing failure; `string_start` is set when a string is not terminated (for completion).
#[derive(Debug)]
pub(super) struct LexError {
    message: String,
    pub(super) string_start: Option<StringStart>,
}

/// Where an unterminated string began: the byte offset of its content.
#[derive(Debug, Clone, Copy)]
pub(super) struct StringStart {
    pub(super) content: usize,
}

#[derive(Debug, Clone)]
pub(super) struct Lexer<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> Lexer<'a> {
    pub(super) fn new(src: &'a str, pos: usize) -> Self {
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

    pub(super) fn next(&mut self) -> Result<Option<Token>, LexError> {
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

pub(super) struct CallParser<'a> {
    lex: Lexer<'a>,
    peeked: Option<Token>,
    /// How the command was called (`launch_ami()`), to start messages; empty before the name.
    context: String,
    /// Whether "not a literal" errors may build an example (off while parsing an example).
    hints: bool,
}

impl<'a> CallParser<'a> {
    pub(super) fn new(src: &'a str, hints: bool) -> Self {
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
    pub(super) fn call(mut self) -> Result<Line, Error> {
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
    pub(super) fn attribute(mut self) -> Result<Line, Error> {
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
    pub(super) fn assignment(mut self) -> Result<Line, Error> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
