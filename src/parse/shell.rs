//! The shell form: `launch_devinstance ubuntu18 --timeout 120 --dry-run`.
//!
//! Words split like a POSIX shell (single and double quotes, backslash escapes, `#` comments, an
//! unquoted `;` ends the command). They bind to the command's arguments by position or as flags
//! (`--name`, `--name=value`, `--name value`, `--no-name`; `--` ends the flags) and are converted to
//! the argument's kind; a rest-of-line argument takes the remainder verbatim
//! (`crate::shellquote` quotes a word back). Never panics on any input; one pass over the line, with no recursion however many
//! `;` it holds.

use super::{Args, Invocation, Line, Spelling, Value};
use super::{column, help_for, unknown_command};
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

/// One shell word with its byte span in the line.
#[derive(Debug, Clone)]
pub(super) struct Word {
    pub(super) text: String,
    pub(super) start: usize,
    pub(super) end: usize,
    /// Whether the first character was quoted or escaped (`'--x'` is a value, not a flag).
    pub(super) quoted_start: bool,
    /// An unquoted `;` (the end of a command).
    pub(super) separator: bool,
    /// The quote left open at the end of the line, if any (for completion).
    open_quote: Option<char>,
}

#[derive(Debug, Clone)]
pub(super) struct ShellLexer<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> ShellLexer<'a> {
    pub(super) fn new(src: &'a str, pos: usize) -> Self {
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
    pub(super) fn next_word(&mut self) -> Option<Word> {
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
pub(super) fn is_number(s: &str) -> bool {
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    !digits.is_empty()
        && digits.starts_with(|c: char| c.is_ascii_digit() || c == '.')
        && digits.chars().all(|c| c.is_ascii_digit() || "._eE+-".contains(c))
}

pub(super) fn parse_shell(src: &str) -> Result<Line, Error> {
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
        assert_eq!(
            shell_value(&LIST, "", "`keys`", "a b").ok(),
            Some(Value::List(vec![Value::Str("a b".into())]))
        );
    }
}
