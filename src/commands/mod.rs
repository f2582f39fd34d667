//! The commands of the shell: one table (`table.rs`) names every command, its arguments and its
//! handler; the handlers live in one file per family (`session.rs`, `instance.rs`, `image.rs`,
//! `job.rs`, `data.rs`, `sweep.rs`) as methods of [`DevAmi`](crate::session::DevAmi). Everything
//! that knows about commands is generated from the table: the parser (both spellings), `help`,
//! the reference page, "did you mean" and completion. Running a line is a lookup in the table.

pub mod data;
pub mod help;
pub mod image;
pub mod instance;
pub mod job;
pub mod session;
pub mod spec;
pub mod sweep;
pub mod table;

pub use help::reference_markdown;
pub use spec::{ArgKind, ArgSpec, CommandSpec, Group, Handler};
pub use table::COMMANDS;

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
    let typed = name.to_lowercase();
    let typed_len = typed.chars().count();
    let threshold = (typed_len / 3).max(2);
    let mut best: Option<(usize, &'static str)> = None;
    for candidate in names() {
        if candidate.chars().count().abs_diff(typed_len) > threshold {
            continue;
        }
        let d = strsim::osa_distance(&typed, candidate);
        if d <= threshold && best.is_none_or(|(b, _)| d < b) {
            best = Some((d, candidate));
        }
    }
    if let Some((_, s)) = best {
        return Some(s);
    }
    if typed_len >= 2 {
        return names().find(|n| n.starts_with(&typed));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::help::{REFERENCE_COMMAND, capitalized, help_command, help_overview};
    use super::spec::normalized;
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
