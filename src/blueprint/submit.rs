//! Submit files and COMMAND filling, as the NeuroCAAS job manager does them.
//!
//! A submit file names the dataset(s), the config and a timestamp (`neurocaas-protocol.md` §3.2).
//! The blueprint's COMMAND is a Python format string whose positional placeholders receive the
//! bucket, the dataset key, the result directory and the config key (§3.4). It is read as
//! `str.format` reads it ([`format`](mod@format)), but unlike Python every value is shell-quoted
//! for the quoting context its placeholder sits in (unquoted, inside `"..."` or inside `'...'`),
//! so no data name can inject a command. The per-dataset `DATASET_NAME:<file>_STATUS.txt` object
//! is built here too.

use std::path::Path;

use serde_json::Value;

use crate::blueprint::format::{self, Field, FormatError, Piece};
use crate::error::{Error, Result};

/// A parsed submit file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submit {
    /// One or more dataset keys (or prefixes).
    pub datanames: Vec<String>,
    pub configname: String,
    pub timestamp: String,
    pub instance_type: Option<String>,
}

/// What is wrong with a field of a submit file ([`Error::SubmitFieldInvalid`]).
#[derive(Debug, thiserror::Error)]
pub enum FieldProblem {
    #[error("must be a string, found {0}")]
    NotAString(&'static str),
    #[error("is empty")]
    Empty,
    #[error("is an empty list")]
    EmptyList,
    /// Keys and names reach S3 and a shell: a control character is never meant.
    #[error("{} holds the control character `{}`, which an S3 key cannot hold; remove it", crate::error::shown(value), character.escape_default())]
    ControlCharacter { value: String, character: char },
}

/// Parses a submit file's text; errors name the file and the field.
pub fn parse_submit(path: &Path, text: &str) -> Result<Submit> {
    if text.starts_with('\u{feff}') {
        return Err(Error::BlueprintSyntax {
            path: path.to_path_buf(),
            line: 1,
            column: 1,
            message:
                "the file starts with a UTF-8 byte order mark, which Python's `json` (and so NeuroCAAS) \
                      rejects (save it as UTF-8 without BOM)"
                    .to_string(),
        });
    }
    let doc: Value = serde_json::from_str(text).map_err(|e| Error::BlueprintSyntax {
        path: path.to_path_buf(),
        line: e.line(),
        column: e.column(),
        message: e.to_string().split(" at line").next().unwrap_or_default().to_string(),
    })?;
    let obj = doc.as_object().ok_or_else(|| Error::SubmitNotAnObject { path: path.to_path_buf() })?;
    let field = |field: &'static str| {
        obj.get(field).ok_or_else(|| Error::SubmitFieldMissing { path: path.to_path_buf(), field })
    };
    let string = |field: &'static str, v: &Value| -> Result<String> {
        let problem = match v {
            // Keys and names reach S3 and a shell: a control character is never meant.
            Value::String(s) if s.chars().any(char::is_control) => {
                let character = s.chars().find(|c| c.is_control()).unwrap_or_default();
                FieldProblem::ControlCharacter { value: s.clone(), character }
            }
            Value::String(s) if !s.is_empty() => return Ok(s.clone()),
            Value::String(_) => FieldProblem::Empty,
            other => FieldProblem::NotAString(crate::blueprint::type_name(other)),
        };
        Err(Error::SubmitFieldInvalid { path: path.to_path_buf(), field, problem })
    };
    let datanames = match field("dataname")? {
        Value::Array(items) if !items.is_empty() => {
            items.iter().map(|v| string("dataname", v)).collect::<Result<Vec<_>>>()?
        }
        Value::Array(_) => {
            let problem = FieldProblem::EmptyList;
            return Err(Error::SubmitFieldInvalid { path: path.to_path_buf(), field: "dataname", problem });
        }
        v => vec![string("dataname", v)?],
    };
    let configname = string("configname", field("configname")?)?;
    let timestamp = match field("timestamp")? {
        Value::Number(n) => n.to_string(),
        v => string("timestamp", v)?,
    };
    let instance_type = match obj.get("instance_type") {
        None | Some(Value::Null) => None,
        Some(v) => Some(string("instance_type", v)?),
    };
    Ok(Submit { datanames, configname, timestamp, instance_type })
}

/// Why a COMMAND cannot be filled (see [`fill_command`]).
#[derive(Debug, thiserror::Error)]
pub enum FillProblem {
    /// Python's `str.format` rejects the template.
    #[error(transparent)]
    Syntax(#[from] FormatError),
    /// A field other than `{}` or `{N}`: the job manager passes positional values only.
    #[error(
        "`{{{0}}}` is a named or formatted field; the job manager passes only positional values (KeyError)"
    )]
    NotPositional(String),
    /// A field beyond the values passed.
    #[error("it has more than {0} positional placeholders; the job manager passes {0} (IndexError)")]
    TooFewValues(usize),
    /// A field inside `$(...)`, backquotes or `$'...'`, where no quoting is safe.
    #[error(
        "a placeholder inside `$(...)`, backquotes or `$'...'` cannot be quoted safely; pass the value to a script as an argument instead"
    )]
    UnquotableContext,
    /// A field right after a backslash, which would escape the value's quoting.
    #[error(
        "a backslash right before a placeholder (`\\{{}}`) would escape the value's quoting; remove the backslash"
    )]
    BackslashBeforeField,
}

/// Fills the COMMAND template's positional placeholders with `values`, each quoted for its
/// shell context (unquoted, `"..."` or `'...'`). The template is read as Python's `str.format`
/// reads it ([`format::pieces`]): what Python rejects, named fields, format specs and more
/// placeholders than values are errors, and so are placeholders in a context no quoting makes
/// safe: inside a command substitution (`$(...)`, backquotes), inside `$'...'`, or right after a
/// backslash.
pub fn fill_command(template: &str, values: &[&str]) -> Result<String> {
    let mut out = String::with_capacity(template.len() + values.iter().map(|v| v.len() + 8).sum::<usize>());
    let mut shell = ShellScan::default();
    for piece in format::pieces(template) {
        let field = match piece.map_err(|e| Error::CommandNotFillable(e.into()))? {
            Piece::Literal(text) => {
                shell.copy(text, &mut out);
                continue;
            }
            Piece::Field(field) => field,
        };
        let value = shell.quote_field(&field, values).map_err(Error::CommandNotFillable)?;
        out.push_str(&value);
    }
    Ok(out)
}

/// The shell quoting context at the end of the text copied so far, as far as [`fill_command`]
/// follows it.
#[derive(Default)]
struct ShellScan {
    quote: Quote,
    /// Open `$(` substitutions: the quoting inside starts afresh, which this scan does not follow.
    substitutions: usize,
    /// Whether a backquoted substitution is open.
    backquoted: bool,
    /// Whether the text ended with a backslash that escapes what comes next.
    escaping: bool,
}

#[derive(Clone, Copy, Default, PartialEq, Eq)]
enum Quote {
    #[default]
    None,
    Single,
    Double,
    /// `$'...'`, where backslash escapes are decoded: no quoting of a value is safe there.
    AnsiC,
}

impl ShellScan {
    /// Copies literal text to `out`, following the quoting it opens and closes.
    fn copy(&mut self, text: &str, out: &mut String) {
        let mut chars = text.chars().peekable();
        if std::mem::take(&mut self.escaping)
            && let Some(c) = chars.next()
        {
            out.push(c);
        }
        while let Some(c) = chars.next() {
            out.push(c);
            match (self.quote, c) {
                (Quote::None, '$') if chars.peek() == Some(&'\'') => {
                    out.push('\'');
                    chars.next();
                    self.quote = Quote::AnsiC;
                }
                (Quote::None | Quote::Double, '$') if chars.peek() == Some(&'(') => {
                    out.push('(');
                    chars.next();
                    self.substitutions += 1;
                }
                (Quote::None | Quote::Double, ')') if self.substitutions > 0 => self.substitutions -= 1,
                (Quote::None | Quote::Double, '`') => self.backquoted = !self.backquoted,
                (Quote::AnsiC, '\'') => self.quote = Quote::None,
                (Quote::None, '\'') => self.quote = Quote::Single,
                (Quote::None, '"') => self.quote = Quote::Double,
                (Quote::Single, '\'') => self.quote = Quote::None,
                (Quote::Double, '"') => self.quote = Quote::None,
                (Quote::None | Quote::Double | Quote::AnsiC, '\\') => match chars.next() {
                    Some(next) => out.push(next),
                    None => self.escaping = true,
                },
                _ => {}
            }
        }
    }

    /// The value for a field, quoted for where it stands, or why it cannot be placed there.
    fn quote_field(&mut self, field: &Field, values: &[&str]) -> std::result::Result<String, FillProblem> {
        // `\{}`: the backslash would escape the value's first character (its opening quote, or
        // the backslash that protects a `$`), so the value could run.
        if std::mem::take(&mut self.escaping) && self.quote != Quote::AnsiC {
            return Err(FillProblem::BackslashBeforeField);
        }
        let Some(index) = field.position.filter(|_| field.is_plain()) else {
            return Err(FillProblem::NotPositional(field.text.to_string()));
        };
        if self.substitutions > 0 || self.backquoted || self.quote == Quote::AnsiC {
            return Err(FillProblem::UnquotableContext);
        }
        let value = values.get(index).ok_or(FillProblem::TooFewValues(values.len()))?;
        Ok(match self.quote {
            Quote::Single => value.replace('\'', r"'\''"),
            Quote::Double => {
                let mut quoted = String::with_capacity(value.len() + 2);
                for ch in value.chars() {
                    if matches!(ch, '\\' | '"' | '$' | '`') {
                        quoted.push('\\');
                    }
                    quoted.push(ch);
                }
                quoted
            }
            Quote::None | Quote::AnsiC => crate::shellquote::always(value),
        })
    }
}

/// The development result directory for a submission at `now` (Python's `str(datetime.now())`).
pub fn result_dir(now: &str) -> String {
    format!("results/debugjob{now}")
}

/// The group of a dataset key: what precedes `/inputs/` (regex `(.+)/inputs/`).
pub fn group_of(data_key: &str) -> Result<String> {
    match data_key.rfind("/inputs/") {
        Some(i) if i > 0 => Ok(data_key[..i].to_string()),
        _ => Err(Error::DatasetOutsideGroup { key: data_key.to_string() }),
    }
}

/// The key of the per-dataset status object.
pub fn status_key(data_key: &str, result_dir: &str) -> Result<String> {
    let group = group_of(data_key)?;
    let base = data_key.rsplit('/').next().unwrap_or(data_key);
    Ok(format!("{group}/{result_dir}/logs/DATASET_NAME:{base}_STATUS.txt"))
}

/// The INITIALIZING status object's body, as the job manager writes it.
pub fn status_body(data_key: &str, instance_id: &str, command_id: &str) -> String {
    serde_json::json!({
        "status": "INITIALIZING",
        "reason": "NONE",
        "stdout": "not given yet",
        "stderr": "not given yet",
        "input": data_key,
        "instance": instance_id,
        "command": command_id,
    })
    .to_string()
}

/// The datasets a submit file's `dataname` entry names, given the keys of the bucket that start
/// with it: the key itself when it exists, else every object under it (a folder like
/// `grp/inputs/batch/` or any other prefix), sorted. Empty when nothing matches.
pub fn resolve_dataset(dataname: &str, keys: &[&str]) -> Vec<String> {
    if !dataname.ends_with('/') && keys.contains(&dataname) {
        return vec![dataname.to_string()];
    }
    let mut found: Vec<String> = keys
        .iter()
        .filter(|k| k.starts_with(dataname) && !k.ends_with('/') && !k.starts_with("debug_direct/"))
        .map(|k| k.to_string())
        .collect();
    found.sort();
    found.dedup();
    found
}

/// A `dataname` or `configname` written as `s3://BUCKET/KEY`: the key, when the bucket is the
/// analysis bucket (development jobs read only from it).
pub fn key_in_bucket(name: &str, bucket: &str) -> Result<String> {
    match name.strip_prefix("s3://") {
        None => Ok(name.trim_start_matches('/').to_string()),
        Some(rest) => match rest.split_once('/') {
            Some((b, key)) if b == bucket && !key.is_empty() => Ok(key.to_string()),
            _ => Err(Error::OutsideBucket { name: name.to_string(), bucket: bucket.to_string() }),
        },
    }
}

/// Whether the analysis-level status (the status object's `status`) contradicts the command's:
/// true when they disagree (e.g. the command succeeded but the analysis reported FAILED).
pub fn analysis_disagrees(command_state: crate::backend::JobState, analysis: &str) -> bool {
    use crate::backend::JobState as J;
    let a = analysis.to_ascii_uppercase();
    match command_state {
        // INITIALIZING is what devami wrote: an analysis that never updates its status object.
        J::Success => !matches!(a.as_str(), "SUCCESS" | "INITIALIZING"),
        J::Failed | J::TimedOut | J::Cancelled => a != "FAILED",
        J::Pending | J::Delayed => !matches!(a.as_str(), "INITIALIZING" | "IN PROGRESS"),
        J::InProgress | J::Cancelling => !matches!(a.as_str(), "INITIALIZING" | "IN PROGRESS"),
    }
}

/// A submit file's text for these keys, as `neurocaas_cli` writes it (a list only for several
/// datasets).
pub fn submit_text(datanames: &[String], configname: &str, timestamp: &str) -> String {
    let dataname = match datanames {
        [one] => Value::String(one.clone()),
        many => Value::Array(many.iter().cloned().map(Value::String).collect()),
    };
    let doc = serde_json::json!({ "dataname": dataname, "configname": configname, "timestamp": timestamp });
    let mut text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_quoted_for_their_context() {
        let t = r#"cd ~; run.sh "{}" '{}' {} "{}" "./x.sh""#;
        let v = ["b", "g/inputs/a b.txt", "results/debugjob2026-11-25 13:23:38.1", "$(id)`x`\"y"];
        let cmd = fill_command(t, &v).unwrap();
        assert_eq!(
            cmd,
            r#"cd ~; run.sh "b" 'g/inputs/a b.txt' 'results/debugjob2026-11-25 13:23:38.1' "\$(id)\`x\`\"y" "./x.sh""#
        );
        let hostile = "\"; rm -rf ~; \"'$(id)'\n`id`";
        for t in [r#"x "{}""#, "x '{}'", "x {}"] {
            let cmd = fill_command(t, &[hostile]).unwrap();
            let out = std::process::Command::new("bash")
                .arg("-c")
                .arg(format!("set -- ; printf '%s' {}", cmd.trim_start_matches("x ")))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), hostile, "{t}: {cmd}");
        }
    }

    #[test]
    fn template_errors_are_the_job_managers() {
        assert!(
            fill_command("{} {} {} {} {}", &["a", "b", "c", "d"])
                .unwrap_err()
                .to_string()
                .contains("IndexError")
        );
        assert!(fill_command("{name}", &["a"]).unwrap_err().to_string().contains("KeyError"));
        assert_eq!(fill_command("{{}} {0} {0}", &["a"]).unwrap(), "{} 'a' 'a'");
        assert!(fill_command("x }", &[]).is_err());
        // A backslash right before a placeholder would escape the value's quoting (fuzzing found
        // both forms); an escaped literal brace stays fine.
        for t in [r"printf '%s\n' \{}", r#"echo "\{}""#] {
            let e = fill_command(t, &["x; echo INJECTED; '"]).unwrap_err().to_string();
            assert!(e.contains("backslash right before a placeholder"), "{t}: {e}");
        }
        assert_eq!(fill_command(r"echo \{{ {}", &["a"]).unwrap(), r"echo \{ 'a'");
        // Inside a substitution or `$'...'` no quoting is safe (found by hand after fuzzing).
        for t in [r#"printf '%s\n' "$(echo "{}")""#, r"printf '%s\n' $'{}'", "echo `cat {}`", "x $(f {}) y"] {
            let e = fill_command(t, &["$(echo INJECTED)"]).unwrap_err().to_string();
            assert!(e.contains("cannot be quoted safely"), "{t}: {e}");
        }
        // Substitutions without placeholders, and placeholders after them, are fine.
        assert_eq!(fill_command("cd $(pwd) && echo {}", &["a b"]).unwrap(), "cd $(pwd) && echo 'a b'");
        assert_eq!(fill_command("x=$'a\\'b' {}", &["v"]).unwrap(), "x=$'a\\'b' 'v'");
        // The template is read as Python reads it, whatever the shell does with backslashes: what
        // `str.format` rejects is refused with its message, an escaped brace is a brace.
        for (t, message) in [
            ("{} {0}", "cannot switch from automatic field numbering to manual field specification"),
            ("$'\\{", "Single '{' encountered in format string"),
            ("{0!x}", "Unknown conversion specifier x"),
        ] {
            let e = fill_command(t, &["a"]).unwrap_err().to_string();
            assert_eq!(e, format!("the blueprint's COMMAND cannot be filled: {message}"), "{t}");
        }
        assert_eq!(fill_command("echo $'\\{{' {}", &["a"]).unwrap(), "echo $'\\{' 'a'");
        let e = fill_command("{0:>3}", &["a"]).unwrap_err().to_string();
        let named = "`{0:>3}` is a named or formatted field; the job manager passes only positional values";
        assert!(e.ends_with(&format!("{named} (KeyError)")), "{e}");
    }

    #[test]
    fn errors_say_what_is_wrong_in_full() {
        let p = Path::new("t/s.json");
        let e = |text: &str| parse_submit(p, text).unwrap_err().to_string();
        assert_eq!(
            e("[1]"),
            "submit file `t/s.json` must hold a JSON object with `dataname`, `configname` and `timestamp`"
        );
        assert_eq!(
            e(r#"{"dataname": "a", "timestamp": "t"}"#),
            "submit file `t/s.json` does not contain field `configname`; add `\"configname\": ...` (see \
             test_resources/exampledevsubmit.json)"
        );
        assert_eq!(
            e(r#"{"dataname": [], "configname": "c", "timestamp": "t"}"#),
            "submit file `t/s.json`: `dataname` is an empty list"
        );
        assert_eq!(
            e(r#"{"dataname": "a", "configname": "", "timestamp": "t"}"#),
            "submit file `t/s.json`: `configname` is empty"
        );
        assert_eq!(
            e(r#"{"dataname": "a", "configname": "c", "timestamp": null}"#),
            "submit file `t/s.json`: `timestamp` must be a string, found null"
        );
        assert_eq!(
            e(r#"{"dataname": "a", "configname": "c", "timestamp": "t", "instance_type": "x\ty"}"#),
            "submit file `t/s.json`: `instance_type` `x\\ty` holds the control character `\\t`, which an S3 \
             key cannot hold; remove it"
        );
        assert_eq!(
            group_of("x/data.txt").unwrap_err().to_string(),
            "dataset `x/data.txt` is not under a group's `inputs/` folder (like `mygroup/inputs/data.zip`); \
             NeuroCAAS finds the group from that path"
        );
        assert_eq!(
            key_in_bucket("s3://other/k", "b").unwrap_err().to_string(),
            "`s3://other/k` is outside the analysis bucket `b`; development jobs read their data and config \
             from it (give the key, like `GROUP/inputs/FILE`)"
        );
        assert_eq!(
            fill_command("{} {}", &["a"]).unwrap_err().to_string(),
            "the blueprint's COMMAND cannot be filled: it has more than 1 positional placeholders; the job \
             manager passes 1 (IndexError)"
        );
        assert!(matches!(
            fill_command("\\{}", &["a"]),
            Err(Error::CommandNotFillable(FillProblem::BackslashBeforeField))
        ));
    }

    #[test]
    fn datasets_resolve_to_a_key_or_the_objects_under_a_prefix() {
        let keys =
            ["g/inputs/a.txt", "g/inputs/a.txt.bak", "g/inputs/set/1", "g/inputs/set/2", "g/inputs/set/"];
        assert_eq!(resolve_dataset("g/inputs/a.txt", &keys), vec!["g/inputs/a.txt"]);
        assert_eq!(resolve_dataset("g/inputs/set/", &keys), vec!["g/inputs/set/1", "g/inputs/set/2"]);
        assert_eq!(resolve_dataset("g/inputs/set", &keys), vec!["g/inputs/set/1", "g/inputs/set/2"]);
        assert!(resolve_dataset("g/inputs/zzz", &keys).is_empty());
        assert_eq!(key_in_bucket("s3://b/g/inputs/a", "b").unwrap(), "g/inputs/a");
        assert!(key_in_bucket("s3://other/g/inputs/a", "b").is_err());
        assert_eq!(key_in_bucket("/g/x", "b").unwrap(), "g/x");
    }

    #[test]
    fn analysis_status_disagreement() {
        use crate::backend::JobState as J;
        assert!(!analysis_disagrees(J::Success, "SUCCESS"));
        assert!(analysis_disagrees(J::Success, "FAILED"));
        assert!(!analysis_disagrees(J::Success, "INITIALIZING"));
        assert!(analysis_disagrees(J::Failed, "IN PROGRESS"));
        assert!(!analysis_disagrees(J::InProgress, "INITIALIZING"));
        assert!(!analysis_disagrees(J::TimedOut, "failed"));
    }

    #[test]
    fn submit_text_round_trips() {
        let one = submit_text(&["g/inputs/a".into()], "g/configs/c.json", "t1");
        let s = parse_submit(Path::new("x.json"), &one).unwrap();
        assert_eq!(
            (s.datanames, s.configname, s.timestamp),
            (vec!["g/inputs/a".to_string()], "g/configs/c.json".to_string(), "t1".to_string())
        );
        let two = submit_text(&["a".into(), "b".into()], "c", "t");
        assert!(two.contains("[\n"), "{two}");
        assert_eq!(parse_submit(Path::new("x.json"), &two).unwrap().datanames.len(), 2);
    }

    #[test]
    fn submit_files_and_status_objects() {
        let p = Path::new("s.json");
        let s = parse_submit(
            p,
            r#"{"dataname": ["g/inputs/a"], "configname": "g/configs/c.yaml", "timestamp": 5}"#,
        )
        .unwrap();
        assert_eq!(s.datanames, vec!["g/inputs/a"]);
        assert_eq!(s.timestamp, "5");
        let e = parse_submit(p, r#"{"configname": "c", "timestamp": "t"}"#).unwrap_err().to_string();
        assert!(e.contains("`dataname`"), "{e}");
        let e = parse_submit(p, r#"{"dataname": 3, "configname": "c", "timestamp": "t"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("must be a string"), "{e}");
        let e = parse_submit(p, r#"{"dataname": "g/inputs/a\u0000b", "configname": "c", "timestamp": "t"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`dataname` `g/inputs/a\\u{0}b` holds the control character `\\u{0}`"), "{e}");
        let e =
            parse_submit(p, "{\"dataname\": \"a\", \"configname\": \"c\\u001b[2J\", \"timestamp\": \"t\"}")
                .unwrap_err()
                .to_string();
        assert!(e.contains("`configname`") && !e.contains('\u{1b}'), "{e}");
        let e = parse_submit(p, "\u{feff}{}").unwrap_err().to_string();
        assert!(e.contains("byte order mark"), "{e}");
        assert_eq!(
            status_key("grp/inputs/d.txt", "results/debugjob2026-11-25 13:23:38.000001").unwrap(),
            "grp/results/debugjob2026-11-25 13:23:38.000001/logs/DATASET_NAME:d.txt_STATUS.txt"
        );
        assert!(status_key("nogroup.txt", "r").is_err());
        let body: Value = serde_json::from_str(&status_body("g/inputs/a", "i-1", "c-1")).unwrap();
        assert_eq!(body["status"], "INITIALIZING");
        assert_eq!(body["command"], "c-1");
    }
}
