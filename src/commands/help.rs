//! Help text, all generated from the command table: the `help` overview, `help CMD`, and the
//! command reference page `docs/commands.md`.

use std::fmt::Write as _;

use super::spec::{ArgKind, ArgSpec, CommandSpec, Group, is_literal};
use super::table::COMMANDS;

/// The text of `help` (no command) or `help CMD`, wherever help is asked for (`help`, `CMD --help`,
/// `help(CMD)`).
pub fn text(spec: Option<&CommandSpec>) -> String {
    match spec {
        Some(spec) => help_command(spec),
        None => help_overview(),
    }
}

/// The `help` overview: every command by group, with its aliases and summary.
pub fn help_overview() -> String {
    let label = |c: &CommandSpec| {
        if c.aliases.is_empty() {
            c.name.to_string()
        } else {
            format!("{} [{}]", c.name, c.aliases.join(", "))
        }
    };
    let width = COMMANDS.iter().map(|c| label(c).chars().count()).max().unwrap_or(0);
    let mut s = String::from("commands (call form `devami.NAME(args)` or shell form `NAME args`):\n");
    for group in Group::ALL {
        let _ = writeln!(s, "\n{}:", group.title());
        for c in COMMANDS.iter().filter(|c| c.group == group) {
            let _ = writeln!(s, "  {:<width$}  — {}", label(c), c.summary);
        }
    }
    s.push_str("\ntype `help CMD` (or `CMD --help`) for details of one command");
    s
}

/// `help CMD`: the summary, usage in both spellings, every argument, aliases, what the command
/// changes and an example in each spelling.
pub fn help_command(spec: &CommandSpec) -> String {
    let mut s = format!("{} — {}\n", spec.name, spec.summary);
    if !spec.aliases.is_empty() {
        let _ = writeln!(s, "aliases: {}", spec.aliases.join(", "));
    }
    let _ = write!(s, "\nusage:\n  {}\n  {}\n", spec.usage_shell(), spec.usage_call("devami"));
    if !spec.args.is_empty() {
        s.push_str("\narguments:\n");
        let width = spec.args.iter().map(|a| a.name.len()).max().unwrap_or(0);
        for a in spec.args {
            let mut facts = vec![a.kind.name().to_string()];
            if a.required {
                facts.push("required".to_string());
            } else if let Some(d) = a.default {
                facts.push(format!("default: {d}"));
            } else {
                facts.push("optional".to_string());
            }
            if !a.aliases.is_empty() {
                facts.push(format!("also `{}`", a.aliases.join("`, `")));
            }
            let _ = writeln!(s, "  {:<width$}  {}", a.name, a.help);
            let _ = writeln!(s, "  {:<width$}  ({}; shell: {})", "", facts.join(", "), shell_flag_help(a));
        }
    }
    let _ = write!(
        s,
        "\nchanges: {}\n\nexamples:\n  {}\n  {}",
        spec.changes, spec.example_call, spec.example_shell
    );
    s
}

/// The command that regenerates `docs/commands.md` from this table.
pub const REFERENCE_COMMAND: &str = "target/debug/devami __reference > docs/commands.md";

/// The command reference (`docs/commands.md`), rendered from [`COMMANDS`] and grouped as
/// [`help_overview`] groups them: per command its summary, aliases, usage in both spellings, a
/// table of its arguments, what it changes and its example in each spelling.
///
/// Examples are `text` blocks, never `devami` blocks: the documentation tests run those.
pub fn reference_markdown() -> String {
    let mut s = String::from("# Command reference\n\n");
    let _ = writeln!(
        s,
        "<!-- Generated from the command table in src/commands/table.rs; do not edit by hand. -->\n\
         This page is generated from the command table (`COMMANDS` in `src/commands/table.rs`), the same table \
         behind the parser, `help` and completion. Regenerate it after changing the table with:\n\n\
         ```text\n{REFERENCE_COMMAND}\n```\n\n\
         A test fails when this page differs from the table.\n\n\
         Every command has two spellings: the call form of the original `NeuroCaaSAMI` class \
         (`devami.NAME(args)`, Python literals, keyword arguments) and the shell form (`NAME args`, \
         flags in kebab case: `--volume-size 20`, `--force`, `--no-force`). Every argument can be given \
         by position or by name in either spelling. In the shell, `help` lists the commands and \
         `help CMD` (or `CMD --help`) shows one of them as below. Defaults written as Python literals \
         are exact; the others describe what the session uses. Global options, environment variables \
         and exit statuses are in [Backends and configuration](backends-and-configuration.md).\n"
    );
    for group in Group::ALL {
        let links: Vec<String> =
            COMMANDS.iter().filter(|c| c.group == group).map(|c| format!("[`{0}`](#{0})", c.name)).collect();
        let _ = writeln!(s, "- {}: {}", capitalized(group.title()), links.join(", "));
    }
    let attributes: Vec<String> = crate::parse::ATTRIBUTES
        .iter()
        .map(|(attr, cmd)| format!("`devami.{attr}` runs [`{cmd}`](#{cmd})"))
        .collect();
    let _ = writeln!(
        s,
        "
The attributes of the original object read as the command that shows them, alone          (`devami.ip`) or on the right of an assignment (`ip = devami.ip`, which shows the value;          devami keeps no Python variables): {}.",
        attributes.join(", ")
    );
    for group in Group::ALL {
        let _ = writeln!(s, "\n## {}", capitalized(group.title()));
        for c in COMMANDS.iter().filter(|c| c.group == group) {
            let _ = write!(s, "\n### {}\n\n{}.\n", c.name, capitalized(c.summary));
            if !c.aliases.is_empty() {
                let aliases: Vec<String> = c.aliases.iter().map(|a| format!("`{a}`")).collect();
                let _ = writeln!(s, "\nAliases: {}.", aliases.join(", "));
            }
            let _ = write!(s, "\n```text\n{}\n{}\n```\n", c.usage_shell(), c.usage_call("devami"));
            if c.args.is_empty() {
                s.push_str("\nNo arguments.\n");
            } else {
                s.push_str("\n| argument | kind | default | help |\n| --- | --- | --- | --- |\n");
                for a in c.args {
                    let mut name = format!("`{}`", a.name);
                    if !a.aliases.is_empty() {
                        let _ = write!(name, " (also `{}`)", a.aliases.join("`, `"));
                    }
                    let default = match (a.required, a.default) {
                        (true, _) => "required".to_string(),
                        (false, Some(d)) if is_literal(d) => format!("`{d}`"),
                        (false, Some(d)) => d.to_string(),
                        (false, None) => "optional".to_string(),
                    };
                    let _ = writeln!(
                        s,
                        "| {} | {} | {} | {} |",
                        table_cell(&name),
                        a.kind.name(),
                        table_cell(&default),
                        table_cell(a.help)
                    );
                }
            }
            let _ = write!(
                s,
                "\nChanges: {}.\n\nExample:\n\n```text\n{}\n{}\n```\n",
                c.changes, c.example_call, c.example_shell
            );
        }
    }
    s
}

/// The first letter in upper case, for headings and sentences.
pub(crate) fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

/// A markdown table cell: pipes escaped, no line breaks.
fn table_cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// How an argument is written as a shell-form flag, for `help CMD`.
fn shell_flag_help(arg: &ArgSpec) -> String {
    match arg.kind {
        ArgKind::Bool => format!("`{0}` or `--no-{1}`", arg.flag(), &arg.flag()[2..]),
        ArgKind::Rest => "everything after the command name, verbatim".to_string(),
        _ => format!("`{} {}` or positional", arg.flag(), arg.metavar()),
    }
}
