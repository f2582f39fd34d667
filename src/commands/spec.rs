//! The shape of a command: its arguments, their kinds, its group in the overview, and the handler
//! that runs it. The entries themselves are in `table.rs`.

use std::fmt::Write as _;

use crate::error::Result;
use crate::output::Output;
use crate::parse::Args;
use crate::session::DevAmi;

/// The kind of value an argument takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgKind {
    /// A string.
    Str,
    /// An integer (`-1` is a value, not a flag).
    Int,
    /// True or false; in the shell form a flag (`--force`, `--no-force`, `--force=false`).
    Bool,
    /// A local file or folder.
    Path,
    /// In the shell form, the rest of the line verbatim as one string; in the call form a string.
    Rest,
    /// A string or a list of strings.
    StrList,
    /// A number, fractions allowed.
    Float,
}

impl ArgKind {
    /// The kind with an article, for messages: "an integer", "a string".
    pub fn describe(self) -> &'static str {
        match self {
            ArgKind::Str | ArgKind::Rest => "a string",
            ArgKind::Int => "an integer",
            ArgKind::Bool => "True or False",
            ArgKind::Path => "a path (a string)",
            ArgKind::StrList => "a string or a list of strings",
            ArgKind::Float => "a number",
        }
    }

    /// The short name of the kind, for the argument list of `help CMD`.
    pub fn name(self) -> &'static str {
        match self {
            ArgKind::Str => "string",
            ArgKind::Int => "integer",
            ArgKind::Bool => "boolean",
            ArgKind::Path => "path",
            ArgKind::Rest => "rest of the line",
            ArgKind::StrList => "string or list of strings",
            ArgKind::Float => "number",
        }
    }
}

/// One argument of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArgSpec {
    /// The canonical name (the original Python argument name).
    pub name: &'static str,
    pub kind: ArgKind,
    pub required: bool,
    /// The default as shown in help: a Python literal (`60`, `-1`, `False`, `"Not given"`) or a
    /// description (`the blueprint's AMI`). `None` when there is none to show.
    pub default: Option<&'static str>,
    pub help: &'static str,
    /// Other keyword names accepted for this argument (`DryRun`, `dataset_size`, `index`).
    pub aliases: &'static [&'static str],
}

impl ArgSpec {
    /// The shell-form flag, kebab case with the dashes: `--volume-size`.
    pub fn flag(&self) -> String {
        format!("--{}", self.name.replace('_', "-"))
    }

    /// Whether `keyword` names this argument in the call form (exact name or alias).
    pub fn matches_keyword(&self, keyword: &str) -> bool {
        self.name == keyword || self.aliases.contains(&keyword)
    }

    /// Whether a shell-form flag name (without the leading `--`) names this argument: kebab or
    /// snake case, any letter case, or an alias (`volume-size`, `volume_size`, `DryRun`).
    pub fn matches_flag(&self, flag: &str) -> bool {
        let same = |name: &str| normalized(name).eq(normalized(flag));
        same(self.name) || self.aliases.iter().any(|a| same(a))
    }

    /// The default when it is a Python literal (`60`, `False`, `"Not given"`), for usage lines.
    pub fn literal_default(&self) -> Option<&'static str> {
        self.default.filter(|d| is_literal(d))
    }

    /// The placeholder of the value in usage lines: `N` for numbers, the upper-case name otherwise.
    pub(crate) fn metavar(&self) -> String {
        match self.kind {
            ArgKind::Int | ArgKind::Float => "N".to_string(),
            _ => self.name.to_uppercase(),
        }
    }
}

/// Flag names compare without case, dashes or underscores.
pub(crate) fn normalized(s: &str) -> impl Iterator<Item = char> + '_ {
    s.chars().filter(|c| *c != '-' && *c != '_').flat_map(char::to_lowercase)
}

/// Whether a default text is a Python literal rather than a description.
pub(crate) fn is_literal(s: &str) -> bool {
    matches!(s, "True" | "False" | "None")
        || s.starts_with('"')
        || s.starts_with('\'')
        || s.strip_prefix('-').unwrap_or(s).parse::<f64>().is_ok()
}

/// The groups of the command overview.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    Instance,
    Image,
    Job,
    Data,
    Session,
}

impl Group {
    /// All groups in the order of the overview.
    pub const ALL: [Group; 5] = [Group::Instance, Group::Image, Group::Job, Group::Data, Group::Session];

    /// The heading of the group in the overview.
    pub fn title(self) -> &'static str {
        match self {
            Group::Instance => "development instance",
            Group::Image => "images and the blueprint",
            Group::Job => "jobs",
            Group::Data => "data in the analysis bucket",
            Group::Session => "session",
        }
    }
}

/// What runs a command: a method of the session, `DevAmi::cmd_NAME` by convention.
pub type Handler = fn(&mut DevAmi, &Args) -> Result<Output>;

/// One command of the shell.
pub struct CommandSpec {
    /// The canonical name (the original method name).
    pub name: &'static str,
    /// Runs the command on a session with its parsed arguments.
    pub run: Handler,
    pub aliases: &'static [&'static str],
    pub group: Group,
    /// One line, lowercase, no trailing period.
    pub summary: &'static str,
    /// The arguments, in positional order.
    pub args: &'static [ArgSpec],
    /// What running the command changes ("nothing" for read-only commands).
    pub changes: &'static str,
    /// An example in the call form; it parses to this command.
    pub example_call: &'static str,
    /// The same example in the shell form; it parses to this command.
    pub example_shell: &'static str,
}

impl CommandSpec {
    /// The argument with this canonical name.
    pub fn arg(&self, name: &str) -> Option<&'static ArgSpec> {
        let args: &'static [ArgSpec] = self.args;
        args.iter().find(|a| a.name == name)
    }

    /// The argument named by a call-form keyword (name or alias).
    pub fn arg_by_keyword(&self, keyword: &str) -> Option<&'static ArgSpec> {
        let args: &'static [ArgSpec] = self.args;
        args.iter().find(|a| a.matches_keyword(keyword))
    }

    /// The argument named by a shell-form flag name without the leading `--`.
    pub fn arg_by_flag(&self, flag: &str) -> Option<&'static ArgSpec> {
        let args: &'static [ArgSpec] = self.args;
        args.iter().find(|a| a.matches_flag(flag))
    }

    /// Whether `name` is the canonical name or an alias of this command.
    pub fn is_named(&self, name: &str) -> bool {
        self.name == name || self.aliases.contains(&name)
    }

    /// The comma-separated canonical argument names, for messages: `ami, volume_size, timeout`.
    pub fn arg_names(&self) -> String {
        self.args.iter().map(|a| a.name).collect::<Vec<_>>().join(", ")
    }

    /// The shell-form usage line: `launch_devinstance [AMI] [--volume-size N] [--timeout N=60]`.
    ///
    /// Required arguments are shown by position, then the first optional one when it is a string
    /// (or the only argument); the others as flags. Every argument is accepted either way.
    pub fn usage_shell(&self) -> String {
        let mut s = self.name.to_string();
        let mut positional = true;
        let mut optional_shown = false;
        for (i, arg) in self.args.iter().enumerate() {
            s.push(' ');
            let shown_default = arg.literal_default().map(|d| format!("={d}")).unwrap_or_default();
            positional = positional
                && (arg.required
                    || (!optional_shown
                        && match arg.kind {
                            ArgKind::Bool => false,
                            ArgKind::Int | ArgKind::Float => i == 0,
                            _ => true,
                        }));
            optional_shown |= positional && !arg.required;
            let text = match arg.kind {
                ArgKind::Bool => arg.flag(),
                ArgKind::Rest | ArgKind::StrList if positional => format!("{}...", arg.metavar()),
                _ if positional => format!("{}{shown_default}", arg.name.to_uppercase()),
                _ => format!("{} {}{shown_default}", arg.flag(), arg.metavar()),
            };
            if arg.required {
                s.push_str(&text);
            } else {
                let _ = write!(s, "[{text}]");
            }
        }
        s
    }

    /// The call-form usage line: `devami.launch_devinstance(ami=None, volume_size=None, timeout=60)`.
    pub fn usage_call(&self, object: &str) -> String {
        let args: Vec<String> = self
            .args
            .iter()
            .map(|a| {
                if a.required {
                    a.name.to_string()
                } else {
                    format!("{}={}", a.name, a.literal_default().unwrap_or("None"))
                }
            })
            .collect();
        let prefix = if object.is_empty() { String::new() } else { format!("{object}.") };
        format!("{prefix}{}({})", self.name, args.join(", "))
    }
}

impl PartialEq for CommandSpec {
    /// Commands are the same when their canonical names are (names are unique in the table).
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for CommandSpec {}

impl std::fmt::Debug for CommandSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandSpec").field("name", &self.name).finish_non_exhaustive()
    }
}
