//! The command table: one definition of every command of the shell.
//!
//! [`COMMANDS`] lists every command with its canonical name (the method name of the original
//! `NeuroCaaSAMI` class), its aliases, its arguments (with the original Python argument names),
//! what it changes and an example in each spelling. Everything that knows about commands is
//! generated from this table: the parser in `parse.rs` (both the call form and the shell form),
//! `help`, `help CMD`, the "did you mean" suggestion and completion. There is no other list of
//! commands to keep in step.
//!
//! Defaults written here are for help only; the session applies the real defaults.

pub mod data;
pub mod image;
pub mod instance;
pub mod job;
pub mod sweep;

use std::fmt::Write as _;

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
    fn metavar(&self) -> String {
        match self.kind {
            ArgKind::Int | ArgKind::Float => "N".to_string(),
            _ => self.name.to_uppercase(),
        }
    }
}

/// Flag names compare without case, dashes or underscores.
fn normalized(s: &str) -> impl Iterator<Item = char> + '_ {
    s.chars().filter(|c| *c != '-' && *c != '_').flat_map(char::to_lowercase)
}

/// Whether a default text is a Python literal rather than a description.
fn is_literal(s: &str) -> bool {
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

/// One command of the shell.
#[derive(Debug, PartialEq, Eq)]
pub struct CommandSpec {
    /// The canonical name (the original method name).
    pub name: &'static str,
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

const AMI_ALIASES: &str = "an image id (`ami-...`) or an alias: ubuntu18, ubuntu16, dlami18, dlami16, ubuntu20, ubuntu22, \
     ubuntu24, al2023";

const DRY_RUN: ArgSpec = ArgSpec {
    name: "dry_run",
    kind: ArgKind::Bool,
    required: false,
    default: Some("False"),
    help: "only check that the request would be accepted; change nothing",
    aliases: &["DryRun"],
};

const JOBIND: ArgSpec = ArgSpec {
    name: "jobind",
    kind: ArgKind::Int,
    required: false,
    default: Some("-1"),
    help: "which job of this session: 0 is the first, -1 the most recent, -2 the one before",
    aliases: &["index"],
};

/// Every command of the shell, in the order of the overview within each group.
pub static COMMANDS: &[CommandSpec] = &[
    // Instance group.
    CommandSpec {
        name: "launch_devinstance",
        aliases: &["launch_ami", "launch"],
        group: Group::Instance,
        summary: "launch a development instance from the blueprint's image, an image id or an alias",
        args: &[
            ArgSpec {
                name: "ami",
                kind: ArgKind::Str,
                required: false,
                default: Some("the blueprint's AMI"),
                help: AMI_ALIASES,
                aliases: &[],
            },
            ArgSpec {
                name: "volume_size",
                kind: ArgKind::Int,
                required: false,
                default: Some("the image's root volume size"),
                help: "size of the root volume in GiB",
                aliases: &["dataset_size"],
            },
            ArgSpec {
                name: "timeout",
                kind: ArgKind::Int,
                required: false,
                default: Some("60"),
                help: "lifetime in minutes, recorded in the instance's `Timeout` tag (see `extend_lifetime`)",
                aliases: &[],
            },
            DRY_RUN,
        ],
        changes: "starts a billed instance and makes it the session's current instance",
        example_call: "devami.launch_devinstance(ami=\"ubuntu18\", timeout=120)",
        example_shell: "launch_devinstance ubuntu18 --timeout 120",
    },
    CommandSpec {
        name: "assign_instance",
        aliases: &[],
        group: Group::Instance,
        summary: "adopt an existing instance as the session's development instance",
        args: &[ArgSpec {
            name: "instance_id",
            kind: ArgKind::Str,
            required: true,
            default: None,
            help: "the id of the instance (`i-...`)",
            aliases: &[],
        }],
        changes: "makes the instance the session's current instance (a previous one keeps running)",
        example_call: "devami.assign_instance(\"i-0123456789abcdef0\")",
        example_shell: "assign_instance i-0123456789abcdef0",
    },
    CommandSpec {
        name: "start_devinstance",
        aliases: &["start"],
        group: Group::Instance,
        summary: "start the stopped development instance and reset its lifetime",
        args: &[ArgSpec {
            name: "timeout",
            kind: ArgKind::Int,
            required: false,
            default: Some("60"),
            help: "the new lifetime in minutes, counted from now",
            aliases: &[],
        }],
        changes: "starts the instance (compute billing resumes) and resets its lifetime",
        example_call: "devami.start_devinstance(timeout=120)",
        example_shell: "start_devinstance --timeout 120",
    },
    CommandSpec {
        name: "stop_devinstance",
        aliases: &["stop"],
        group: Group::Instance,
        summary: "stop the development instance; its disk is kept and `start_devinstance` resumes it",
        args: &[],
        changes: "stops the instance (compute billing stops, its volume is still billed)",
        example_call: "devami.stop_devinstance()",
        example_shell: "stop_devinstance",
    },
    CommandSpec {
        name: "terminate_devinstance",
        aliases: &["terminate"],
        group: Group::Instance,
        summary: "terminate the development instance for good, once its work is saved as an image",
        args: &[ArgSpec {
            name: "force",
            kind: ArgKind::Bool,
            required: false,
            default: Some("False"),
            help: "terminate even if no image was saved since launch (unsaved work is lost)",
            aliases: &[],
        }],
        changes: "terminates the instance and deletes its root volume; the session has no instance after",
        example_call: "devami.terminate_devinstance(force=True)",
        example_shell: "terminate_devinstance --force",
    },
    CommandSpec {
        name: "get_instance_state",
        aliases: &[],
        group: Group::Instance,
        summary: "show the development instance's state as the cloud reports it, with its reason",
        args: &[],
        changes: "nothing",
        example_call: "devami.get_instance_state()",
        example_shell: "get_instance_state",
    },
    CommandSpec {
        name: "check_running",
        aliases: &[],
        group: Group::Instance,
        summary: "check that the development instance is running (an error otherwise)",
        args: &[],
        changes: "nothing",
        example_call: "devami.check_running()",
        example_shell: "check_running",
    },
    CommandSpec {
        name: "check_clear",
        aliases: &[],
        group: Group::Instance,
        summary: "check that no development instance is live, so that a new one can be launched",
        args: &[],
        changes: "nothing",
        example_call: "devami.check_clear()",
        example_shell: "check_clear",
    },
    CommandSpec {
        name: "get_ip",
        aliases: &[],
        group: Group::Instance,
        summary: "show the development instance's public IP address and the ssh command to connect",
        args: &[],
        changes: "nothing",
        example_call: "devami.get_ip()",
        example_shell: "get_ip",
    },
    CommandSpec {
        name: "get_lifetime",
        aliases: &[],
        group: Group::Instance,
        summary: "show how many minutes the development instance has left",
        args: &[],
        changes: "nothing",
        example_call: "devami.get_lifetime()",
        example_shell: "get_lifetime",
    },
    CommandSpec {
        name: "extend_lifetime",
        aliases: &[],
        group: Group::Instance,
        summary: "add minutes to the development instance's lifetime",
        args: &[
            ArgSpec {
                name: "additional_time",
                kind: ArgKind::Int,
                required: true,
                default: None,
                help: "minutes to add to the lifetime",
                aliases: &["minutes"],
            },
            DRY_RUN,
        ],
        changes: "raises the instance's `Timeout` tag",
        example_call: "devami.extend_lifetime(30)",
        example_shell: "extend_lifetime 30",
    },
    CommandSpec {
        name: "ssh",
        aliases: &[],
        group: Group::Instance,
        summary: "open an interactive ssh session on the development instance",
        args: &[],
        changes: "nothing itself (what you type in the ssh session changes the instance)",
        example_call: "devami.ssh()",
        example_shell: "ssh",
    },
    CommandSpec {
        name: "exec",
        aliases: &[],
        group: Group::Instance,
        summary: "run a shell command on the development instance and show its output",
        args: &[ArgSpec {
            name: "command",
            kind: ArgKind::Rest,
            required: true,
            default: None,
            help: "the shell command line to run, verbatim (pipes and quotes included)",
            aliases: &[],
        }],
        changes: "whatever the command changes on the instance",
        example_call: "devami.exec(\"ls -la /home/ubuntu\")",
        example_shell: "exec ls -la /home/ubuntu",
    },
    // Image group.
    CommandSpec {
        name: "create_devami",
        aliases: &[],
        group: Group::Image,
        summary: "save the development instance as a new image (AMI)",
        args: &[ArgSpec {
            name: "name",
            kind: ArgKind::Str,
            required: true,
            default: None,
            help: "the name of the new image, unique in the account",
            aliases: &[],
        }],
        changes: "creates an image (billed storage) and marks the instance's work as saved",
        example_call: "devami.create_devami(\"my-image\")",
        example_shell: "create_devami my-image",
    },
    CommandSpec {
        name: "update_blueprint",
        aliases: &[],
        group: Group::Image,
        summary: "record an image in the blueprint, with a git commit before and after the change",
        args: &[
            ArgSpec {
                name: "ami_id",
                kind: ArgKind::Str,
                required: false,
                default: Some("the last image created"),
                help: "the image to write as `Lambda.LambdaConfig.AMI`",
                aliases: &[],
            },
            ArgSpec {
                name: "message",
                kind: ArgKind::Str,
                required: false,
                default: Some("\"Not given\""),
                help: "a message describing the change, kept in the git commits",
                aliases: &[],
            },
            ArgSpec {
                name: "force",
                kind: ArgKind::Bool,
                required: false,
                default: Some("False"),
                help: "record the image even if it is not available yet",
                aliases: &[],
            },
            ArgSpec {
                name: "init",
                kind: ArgKind::Bool,
                required: false,
                default: Some("False"),
                help: "create a git repository in the blueprint folder when it is not inside one",
                aliases: &[],
            },
        ],
        changes: "writes `Lambda.LambdaConfig.AMI` in the blueprint and makes two git commits of that file only",
        example_call: "devami.update_blueprint(\"ami-0123456789abcdef0\", message=\"add the analysis\")",
        example_shell: "update_blueprint ami-0123456789abcdef0 --message \"add the analysis\"",
    },
    // Job group.
    CommandSpec {
        name: "submit_job",
        aliases: &["submit_job_log", "submit"],
        group: Group::Job,
        summary: "run a job on the development instance from a submit file, as a user would",
        args: &[
            ArgSpec {
                name: "submitpath",
                kind: ArgKind::Path,
                required: true,
                default: None,
                help: "the submit file: JSON with `dataname` (a key, a folder or prefix, or a list of them), `configname` and `timestamp`",
                aliases: &[],
            },
            ArgSpec {
                name: "parallel",
                kind: ArgKind::Int,
                required: false,
                default: Some("1"),
                help: "with several datasets, how many jobs run at once (one job per dataset; 1 runs them one after another)",
                aliases: &[],
            },
        ],
        changes: "starts one job per dataset on the instance and writes each dataset's status object; results and logs land in the analysis bucket",
        example_call: "devami.submit_job(\"test_resources/submit.json\")",
        example_shell: "submit_job test_resources/submit.json",
    },
    CommandSpec {
        name: "job_status",
        aliases: &[],
        group: Group::Job,
        summary: "show the status of a job of this session",
        args: &[
            JOBIND,
            ArgSpec {
                name: "wait",
                kind: ArgKind::Bool,
                required: false,
                default: Some("False"),
                help: "wait until the job has finished (Ctrl-C stops waiting, not the job)",
                aliases: &[],
            },
        ],
        changes: "nothing",
        example_call: "devami.job_status(-1, wait=True)",
        example_shell: "job_status -1 --wait",
    },
    CommandSpec {
        name: "job_output",
        aliases: &[],
        group: Group::Job,
        summary: "show the output (stdout and stderr) of a job of this session",
        args: &[
            JOBIND,
            ArgSpec {
                name: "follow",
                kind: ArgKind::Bool,
                required: false,
                default: Some("False"),
                help: "keep printing new output until the job ends (Ctrl-C stops following, not the job)",
                aliases: &["f"],
            },
            ArgSpec {
                name: "tail",
                kind: ArgKind::Int,
                required: false,
                default: Some("all lines"),
                help: "show only the last N lines",
                aliases: &["n"],
            },
            ArgSpec {
                name: "stderr",
                kind: ArgKind::Bool,
                required: false,
                default: Some("False"),
                help: "show the error stream only",
                aliases: &[],
            },
        ],
        changes: "nothing",
        example_call: "devami.job_output(-1, follow=True)",
        example_shell: "job_output -1 --follow",
    },
    CommandSpec {
        name: "cancel_job",
        aliases: &["cancel"],
        group: Group::Job,
        summary: "cancel a running job of this session",
        args: &[JOBIND],
        changes: "stops the job's process on the instance; the instance keeps running",
        example_call: "devami.cancel_job(-1)",
        example_shell: "cancel_job -1",
    },
    CommandSpec {
        name: "results",
        aliases: &[],
        group: Group::Job,
        summary: "list (or download) what a job wrote under its result directory",
        args: &[
            JOBIND,
            ArgSpec {
                name: "download",
                kind: ArgKind::Path,
                required: false,
                default: Some("none: only list"),
                help: "a local folder to download the results into",
                aliases: &[],
            },
        ],
        changes: "nothing in the cloud; with --download, writes the files into the folder",
        example_call: "devami.results(-1, download=\"out\")",
        example_shell: "results -1 --download out",
    },
    CommandSpec {
        name: "new_submit",
        aliases: &[],
        group: Group::Job,
        summary: "write a submit file for datasets and a config in the bucket (uploading local files first)",
        args: &[
            ArgSpec {
                name: "dataset",
                kind: ArgKind::StrList,
                required: true,
                default: None,
                help: "bucket keys, or local files and folders to upload to GROUP/inputs/",
                aliases: &["dataname"],
            },
            ArgSpec {
                name: "config",
                kind: ArgKind::Str,
                required: true,
                default: None,
                help: "a bucket key, or a local file to upload to GROUP/configs/",
                aliases: &["configname"],
            },
            ArgSpec {
                name: "group",
                kind: ArgKind::Str,
                required: false,
                default: Some("the blueprint's first affiliate"),
                help: "the user group whose inputs/ and configs/ folders receive uploads",
                aliases: &[],
            },
            ArgSpec {
                name: "out",
                kind: ArgKind::Path,
                required: false,
                default: Some("test_resources/devami_submit.json in the blueprint"),
                help: "where to write the submit file",
                aliases: &[],
            },
        ],
        changes: "uploads the local files given; writes the submit file",
        example_call: "devami.new_submit([\"data/a.txt\", \"data/b.txt\"], \"data/config.json\")",
        example_shell: "new_submit data/a.txt data/b.txt --config data/config.json",
    },
    CommandSpec {
        name: "jobs",
        aliases: &[],
        group: Group::Job,
        summary: "list the jobs of this session with their index, status and data",
        args: &[],
        changes: "nothing",
        example_call: "devami.jobs()",
        example_shell: "jobs",
    },
    CommandSpec {
        name: "import_image",
        aliases: &[],
        group: Group::Image,
        summary: "import an image file (a `docker save`/OCI archive or a root-filesystem tarball) as a local image",
        args: &[
            ArgSpec {
                name: "file",
                kind: ArgKind::Path,
                required: true,
                default: None,
                help: "the archive or tarball (for machines with no image registry)",
                aliases: &[],
            },
            ArgSpec {
                name: "as",
                kind: ArgKind::Str,
                required: false,
                default: Some("a name made from the file's"),
                help: "the image's name; an alias (`ubuntu22`, `debian12`...) resolves to the image from now on",
                aliases: &[],
            },
        ],
        changes: "adds an image to the local backend (its engine and `$DEVAMI_HOME`); with an alias for `as`, binds the alias to it; the local backend only",
        example_call: "devami.import_image(\"rootfs.tar\", as=\"ubuntu22\")",
        example_shell: "import_image rootfs.tar --as ubuntu22",
    },
    // Data group.
    CommandSpec {
        name: "upload",
        aliases: &[],
        group: Group::Data,
        summary: "upload a local file or folder to the analysis bucket",
        args: &[
            ArgSpec {
                name: "local",
                kind: ArgKind::Path,
                required: true,
                default: None,
                help: "the file to upload",
                aliases: &[],
            },
            ArgSpec {
                name: "key",
                kind: ArgKind::Str,
                required: false,
                default: Some("the inputs prefix and the file's name"),
                help: "the object key in the analysis bucket",
                aliases: &[],
            },
        ],
        changes: "writes an object in the analysis bucket (replacing one with the same key)",
        example_call: "devami.upload(\"data/video.mp4\")",
        example_shell: "upload data/video.mp4",
    },
    CommandSpec {
        name: "download",
        aliases: &[],
        group: Group::Data,
        summary: "download an object (or everything under a prefix) of the analysis bucket",
        args: &[
            ArgSpec {
                name: "key",
                kind: ArgKind::Str,
                required: true,
                default: None,
                help: "the object key in the analysis bucket",
                aliases: &[],
            },
            ArgSpec {
                name: "local",
                kind: ArgKind::Path,
                required: false,
                default: Some("the key's file name, in the current folder"),
                help: "where to write the file",
                aliases: &[],
            },
        ],
        changes: "writes a local file (replacing one with the same name)",
        example_call: "devami.download(\"results/job__my-analysis/end.txt\", \"end.txt\")",
        example_shell: "download results/job__my-analysis/end.txt end.txt",
    },
    CommandSpec {
        name: "ls",
        aliases: &[],
        group: Group::Data,
        summary: "list the objects of the analysis bucket",
        args: &[ArgSpec {
            name: "prefix",
            kind: ArgKind::Str,
            required: false,
            default: Some("the whole bucket"),
            help: "list only the keys that start with this prefix",
            aliases: &[],
        }],
        changes: "nothing",
        example_call: "devami.ls(\"results/\")",
        example_shell: "ls results/",
    },
    // Session group.
    CommandSpec {
        name: "status",
        aliases: &[],
        group: Group::Session,
        summary: "show the session: blueprint, current instance, lifetime left, images and jobs",
        args: &[],
        changes: "nothing",
        example_call: "devami.status()",
        example_shell: "status",
    },
    CommandSpec {
        name: "history",
        aliases: &[],
        group: Group::Session,
        summary: "show the blueprint's development history: instances, images and jobs",
        args: &[],
        changes: "nothing",
        example_call: "devami.history()",
        example_shell: "history",
    },
    CommandSpec {
        name: "blueprint",
        aliases: &[],
        group: Group::Session,
        summary: "show the blueprint's main keys: image, instance type, command and bucket",
        args: &[],
        changes: "nothing",
        example_call: "devami.blueprint()",
        example_shell: "blueprint",
    },
    CommandSpec {
        name: "check",
        aliases: &[],
        group: Group::Session,
        summary: "check a blueprint the way a reviewer would and report each problem with its location",
        args: &[ArgSpec {
            name: "path",
            kind: ArgKind::Path,
            required: false,
            default: Some("the open blueprint"),
            help: "a blueprint folder to check instead of the open one",
            aliases: &[],
        }],
        changes: "nothing",
        example_call: "devami.check()",
        example_shell: "check",
    },
    CommandSpec {
        name: "init",
        aliases: &[],
        group: Group::Session,
        summary: "create a new blueprint folder with a blueprint and an example submit file",
        args: &[
            ArgSpec {
                name: "name",
                kind: ArgKind::Str,
                required: true,
                default: None,
                help: "the analysis name: lowercase letters, digits and dashes (it becomes PipelineName)",
                aliases: &[],
            },
            ArgSpec {
                name: "dir",
                kind: ArgKind::Path,
                required: false,
                default: Some("."),
                help: "the folder in which to create it",
                aliases: &[],
            },
        ],
        changes: "creates the folder NAME with `stack_config_template.json` and `test_resources/`",
        example_call: "devami.init(\"my-analysis\", dir=\"blueprints\")",
        example_shell: "init my-analysis --dir blueprints",
    },
    CommandSpec {
        name: "forget",
        aliases: &[],
        group: Group::Instance,
        summary: "stop tracking the current instance without touching it (asks first)",
        args: &[],
        changes: "clears the session's current instance; it stays listed in `history`",
        example_call: "devami.forget()",
        example_shell: "forget",
    },
    CommandSpec {
        name: "sweep",
        aliases: &[],
        group: Group::Instance,
        summary: "list this blueprint's instances and images the session does not track or that vanished; adopt, terminate, deregister or forget them",
        args: &[
            ArgSpec {
                name: "adopt",
                kind: ArgKind::Str,
                required: false,
                default: Some("none: `sweep` only lists"),
                help: "an instance `sweep` lists as not in this session: make it the current instance, as `assign_instance` does (refused while the current instance is live)",
                aliases: &[],
            },
            ArgSpec {
                name: "terminate",
                kind: ArgKind::Str,
                required: false,
                default: Some("none: `sweep` only lists"),
                help: "an instance `sweep` lists as not in this session: terminate it (asks first; `--yes` in scripts)",
                aliases: &[],
            },
            ArgSpec {
                name: "deregister",
                kind: ArgKind::Str,
                required: false,
                default: Some("none: `sweep` only lists"),
                help: "an image `sweep` lists: deregister it and delete its snapshots (asks first; `--yes` in scripts; not the blueprint's AMI)",
                aliases: &[],
            },
            ArgSpec {
                name: "forget",
                kind: ArgKind::Bool,
                required: false,
                default: Some("False"),
                help: "mark the records of tracked instances and images that vanished as gone (history rows stay) and clear a vanished current instance",
                aliases: &[],
            },
            ArgSpec {
                name: "all_users",
                kind: ArgKind::Bool,
                required: false,
                default: Some("False"),
                help: "also find resources tagged for other users (`devami:user`), not only yours",
                aliases: &[],
            },
        ],
        changes: "nothing without an action; one action at a time: `--adopt` sets the current instance, `--terminate` terminates an instance, `--deregister` deletes an image and its snapshots, `--forget` marks vanished records",
        example_call: "devami.sweep(terminate=\"i-0123456789abcdef0\")",
        example_shell: "sweep --terminate i-0123456789abcdef0",
    },
    CommandSpec {
        name: "open",
        aliases: &[],
        group: Group::Session,
        summary: "bind the session to another blueprint folder",
        args: &[ArgSpec {
            name: "path",
            kind: ArgKind::Path,
            required: true,
            default: None,
            help: "the blueprint folder (it holds `stack_config_template.json`)",
            aliases: &[],
        }],
        changes: "switches the session to that folder's blueprint and state (instances keep running)",
        example_call: "devami.open(\"blueprints/my-analysis\")",
        example_shell: "open blueprints/my-analysis",
    },
    CommandSpec {
        name: "sleep",
        aliases: &[],
        group: Group::Session,
        summary: "pause for a number of seconds, e.g. in a script (Ctrl-C cancels)",
        args: &[ArgSpec {
            name: "seconds",
            kind: ArgKind::Float,
            required: true,
            default: None,
            help: "how long to pause; fractions are allowed",
            aliases: &[],
        }],
        changes: "nothing",
        example_call: "devami.sleep(1.5)",
        example_shell: "sleep 1.5",
    },
    CommandSpec {
        name: "help",
        aliases: &["?"],
        group: Group::Session,
        summary: "list the commands, or show one command in detail",
        args: &[ArgSpec {
            name: "command",
            kind: ArgKind::Str,
            required: false,
            default: Some("the list of all commands"),
            help: "a command name or alias",
            aliases: &[],
        }],
        changes: "nothing",
        example_call: "help(\"launch_devinstance\")",
        example_shell: "help launch_devinstance",
    },
    CommandSpec {
        name: "exit",
        aliases: &["quit"],
        group: Group::Session,
        summary: "leave the shell (with a warning while an instance is still running)",
        args: &[],
        changes: "nothing; instances keep running and stay recorded in the blueprint folder",
        example_call: "exit()",
        example_shell: "exit",
    },
];

/// The command with this canonical name or alias.
pub fn lookup(name: &str) -> Option<&'static CommandSpec> {
    COMMANDS.iter().find(|c| c.is_named(name))
}

/// Canonical names and aliases of every command, for completion.
pub fn names() -> impl Iterator<Item = &'static str> {
    COMMANDS.iter().flat_map(|c| std::iter::once(c.name).chain(c.aliases.iter().copied()))
}

/// The closest canonical name or alias to a mistyped `name`, for "did you mean".
///
/// Compares without letter case by optimal string alignment distance (Damerau-Levenshtein with
/// adjacent transpositions), accepting up to `max(2, len / 3)` edits; failing that, a name that
/// starts with `name` (at least two characters). Ties go to the earlier entry of [`COMMANDS`].
pub fn suggest(name: &str) -> Option<&'static str> {
    // No command name is anywhere near this long; this also bounds the work on junk input.
    if name.is_empty() || name.len() > 100 {
        return None;
    }
    let typed: Vec<char> = name.chars().flat_map(char::to_lowercase).collect();
    let threshold = (typed.len() / 3).max(2);
    let mut best: Option<(usize, &'static str)> = None;
    for candidate in names() {
        let cand: Vec<char> = candidate.chars().collect();
        if cand.len().abs_diff(typed.len()) > threshold {
            continue;
        }
        let d = edit_distance(&typed, &cand);
        if d <= threshold && best.is_none_or(|(b, _)| d < b) {
            best = Some((d, candidate));
        }
    }
    if let Some((_, s)) = best {
        return Some(s);
    }
    if typed.len() >= 2 {
        let lower: String = typed.iter().collect();
        return names().find(|n| n.starts_with(&lower));
    }
    None
}

/// Optimal string alignment distance between two short strings.
fn edit_distance(a: &[char], b: &[char]) -> usize {
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    for i in 0..=a.len() {
        d[i * width] = i;
    }
    for (j, cell) in d.iter_mut().enumerate().take(width) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[(i - 1) * width + j] + 1)
                .min(d[i * width + j - 1] + 1)
                .min(d[(i - 1) * width + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[(i - 2) * width + j - 2] + 1);
            }
            d[i * width + j] = v;
        }
    }
    d[a.len() * width + b.len()]
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
        "<!-- Generated from the command table in src/command.rs; do not edit by hand. -->\n\
         This page is generated from the command table (`COMMANDS` in `src/command.rs`), the same table \
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
fn capitalized(text: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_and_aliases_are_unique() {
        let mut seen = HashSet::new();
        for n in names() {
            assert!(seen.insert(n), "`{n}` is defined twice");
        }
    }

    #[test]
    fn argument_names_are_unique_per_command() {
        for c in COMMANDS {
            let mut seen = HashSet::new();
            for a in c.args {
                let own: HashSet<String> = std::iter::once(a.name)
                    .chain(a.aliases.iter().copied())
                    .map(|n| normalized(n).collect::<String>())
                    .collect();
                for n in own {
                    assert!(seen.insert(n.clone()), "{}: `{n}` is ambiguous", c.name);
                }
            }
        }
    }

    #[test]
    fn table_is_well_formed() {
        for c in COMMANDS {
            assert!(!c.summary.ends_with('.') && !c.changes.ends_with('.'), "{}", c.name);
            assert!(c.summary.chars().next().is_some_and(|ch| !ch.is_uppercase()), "{}", c.name);
            assert!(c.args.iter().all(|a| !a.help.ends_with('.')), "{}", c.name);
            // Required arguments come first, so that they can be given by position.
            let first_optional = c.args.iter().position(|a| !a.required).unwrap_or(c.args.len());
            assert!(c.args[first_optional..].iter().all(|a| !a.required), "{}", c.name);
            // A rest-of-line argument can only be the last.
            let rest = c.args.iter().position(|a| a.kind == ArgKind::Rest);
            assert!(rest.is_none_or(|i| i + 1 == c.args.len()), "{}", c.name);
        }
    }

    #[test]
    fn every_field_is_filled_in() {
        for c in COMMANDS {
            for (field, text) in [
                ("summary", c.summary),
                ("changes", c.changes),
                ("example_call", c.example_call),
                ("example_shell", c.example_shell),
            ] {
                assert!(!text.trim().is_empty(), "{}: `{field}` is empty", c.name);
            }
            for a in c.args {
                assert!(
                    !a.name.is_empty() && !a.help.trim().is_empty(),
                    "{}: an argument without help",
                    c.name
                );
                // `help CMD` shows every optional argument's default.
                assert!(
                    a.required || a.default.is_some_and(|d| !d.trim().is_empty()),
                    "{}: optional argument `{}` has no default to show",
                    c.name,
                    a.name
                );
            }
        }
    }

    #[test]
    fn reference_covers_every_command() {
        let text = reference_markdown();
        assert!(text.contains(REFERENCE_COMMAND), "the page must say how to regenerate it");
        assert!(!text.contains("```devami"), "the documentation tests would run a devami block");
        for c in COMMANDS {
            let section = text
                .split(&format!("\n### {}\n", c.name))
                .nth(1)
                .unwrap_or_else(|| panic!("no section for {}", c.name));
            let section = section.split("\n### ").next().unwrap_or_default();
            for part in [c.example_call, c.example_shell, c.changes] {
                assert!(section.contains(part), "{}: `{part}` missing", c.name);
            }
            assert!(
                section.contains(&c.usage_shell()) && section.contains(&c.usage_call("devami")),
                "{}",
                c.name
            );
            for a in c.args {
                assert!(section.contains(&format!("| `{}`", a.name)), "{}: argument `{}`", c.name, a.name);
            }
        }
        // Groups in the order of the overview.
        let pos = |g: Group| text.find(&format!("\n## {}\n", capitalized(g.title()))).unwrap();
        assert!(Group::ALL.windows(2).all(|w| pos(w[0]) < pos(w[1])));
    }

    #[test]
    fn lookup_by_name_and_alias() {
        assert_eq!(lookup("launch_ami").map(|c| c.name), Some("launch_devinstance"));
        assert_eq!(lookup("submit_job_log").map(|c| c.name), Some("submit_job"));
        assert_eq!(lookup("?").map(|c| c.name), Some("help"));
        assert_eq!(lookup("quit").map(|c| c.name), Some("exit"));
        assert!(lookup("lanch").is_none());
    }

    #[test]
    fn suggestions() {
        #[track_caller]
        fn check(typed: &str, expected: Option<&str>) {
            assert_eq!(suggest(typed), expected, "suggest({typed:?})");
        }
        check("lanch", Some("launch"));
        check("terminate_devinstnce", Some("terminate_devinstance"));
        check("job_stauts", Some("job_status"));
        check("Status", Some("status"));
        check("extend_lifetim", Some("extend_lifetime"));
        check("submit_jbo_log", Some("submit_job_log"));
        check("create_devmai", Some("create_devami"));
        check("upd", Some("update_blueprint"));
        check("xyzzyplugh", None);
        check("", None);
        check(&"x".repeat(1_000_000), None);
    }

    #[test]
    fn flags_match_in_any_case_and_spelling() {
        let launch = lookup("launch").unwrap();
        for f in ["volume-size", "volume_size", "dataset_size", "dataset-size", "VOLUME_SIZE"] {
            assert_eq!(launch.arg_by_flag(f).map(|a| a.name), Some("volume_size"), "{f}");
        }
        assert_eq!(launch.arg_by_flag("DryRun").map(|a| a.name), Some("dry_run"));
        assert_eq!(launch.arg_by_keyword("DryRun").map(|a| a.name), Some("dry_run"));
        assert_eq!(launch.arg_by_keyword("dryrun"), None);
    }

    #[test]
    fn usage_lines() {
        let launch = lookup("launch").unwrap();
        assert_eq!(
            launch.usage_shell(),
            "launch_devinstance [AMI] [--volume-size N] [--timeout N=60] [--dry-run]"
        );
        assert_eq!(
            launch.usage_call("devami"),
            "devami.launch_devinstance(ami=None, volume_size=None, timeout=60, dry_run=False)"
        );
        assert_eq!(lookup("job_status").unwrap().usage_shell(), "job_status [JOBIND=-1] [--wait]");
        assert_eq!(lookup("exec").unwrap().usage_shell(), "exec COMMAND...");
        assert_eq!(
            lookup("extend_lifetime").unwrap().usage_shell(),
            "extend_lifetime ADDITIONAL_TIME [--dry-run]"
        );
        assert_eq!(
            lookup("update_blueprint").unwrap().usage_call(""),
            "update_blueprint(ami_id=None, message=\"Not given\", force=False, init=False)"
        );
        assert_eq!(lookup("download").unwrap().usage_shell(), "download KEY [LOCAL]");
        assert_eq!(
            lookup("update_blueprint").unwrap().usage_shell(),
            "update_blueprint [AMI_ID] [--message MESSAGE=\"Not given\"] [--force] [--init]"
        );
    }

    #[test]
    fn overview_lists_every_command_by_group() {
        let text = help_overview();
        for c in COMMANDS {
            assert!(text.contains(c.name) && text.contains(c.summary), "{}", c.name);
        }
        assert!(text.contains("launch_devinstance [launch_ami, launch]"), "{text}");
        assert!(text.find("development instance:") < text.find("session:"));
        assert!(text.ends_with("for details of one command"));
    }

    #[test]
    fn command_help_has_everything() {
        for c in COMMANDS {
            let text = help_command(c);
            assert!(text.contains(&c.usage_shell()) && text.contains(&c.usage_call("devami")), "{text}");
            assert!(text.contains(c.example_call) && text.contains(c.example_shell), "{text}");
            assert!(text.contains(&format!("changes: {}", c.changes)), "{text}");
            for a in c.args {
                assert!(text.contains(a.help), "{text}");
            }
        }
        let text = help_command(lookup("launch").unwrap());
        assert!(text.contains("aliases: launch_ami, launch"), "{text}");
        assert!(text.contains("default: 60"), "{text}");
        assert!(text.contains("also `DryRun`"), "{text}");
        assert!(text.contains("`--dry-run` or `--no-dry-run`"), "{text}");
    }
}
