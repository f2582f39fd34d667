//! What is being typed at the cursor, for the interactive shell's completer.
//!
//! [`completion_context`] replays the text before the cursor with the parser's own lexers and says
//! whether a command name, an argument name or a value is being typed, and where it starts;
//! [`Completion::candidates`] lists the candidates that need no session knowledge. Every offset it
//! returns is a char boundary of the typed line; never panics on any input.

use super::call::{LexError, Lexer, StringStart, Tok, Token};
use super::shell::{ShellLexer, is_number};
use super::{CLASS_NAME, Spelling, ident_end, strip_prompt};
use crate::commands::{self, ArgKind, ArgSpec, CommandSpec};

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
