//! Submit files and COMMAND filling, as the NeuroCAAS job manager does them.
//!
//! A submit file names the dataset(s), the config and a timestamp (`neurocaas-protocol.md` §3.2).
//! The blueprint's COMMAND is a Python format string whose positional placeholders receive the
//! bucket, the dataset key, the result directory and the config key (§3.4). Unlike Python's
//! `str.format`, every value is shell-quoted for the quoting context its placeholder sits in
//! (unquoted, inside `"..."` or inside `'...'`), so no data name can inject a command. The
//! per-dataset `DATASET_NAME:<file>_STATUS.txt` object is built here too.

use std::path::Path;

use serde_json::Value;

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

/// Parses a submit file's text; errors name the file and the field.
pub fn parse_submit(path: &Path, text: &str) -> Result<Submit> {
    let shown = path.display();
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
    let obj = doc.as_object().ok_or_else(|| {
        Error::Refused(format!(
            "submit file `{shown}` must hold a JSON object with `dataname`, `configname` and `timestamp`"
        ))
    })?;
    let field = |name: &str| {
        obj.get(name).ok_or_else(|| {
            Error::Refused(format!(
                "submit file `{shown}` does not contain field `{name}`; add `\"{name}\": ...` (see test_resources/exampledevsubmit.json)"
            ))
        })
    };
    let string = |name: &str, v: &Value| -> Result<String> {
        match v {
            // Keys and names reach S3 and a shell: a control character is never meant.
            Value::String(s) if s.chars().any(char::is_control) => {
                let c = s.chars().find(|c| c.is_control()).unwrap_or_default();
                Err(Error::Refused(format!(
                    "submit file `{shown}`: `{name}` {} holds the control character `{}`, which an S3 key \
                     cannot hold; remove it",
                    crate::error::shown(s),
                    c.escape_default()
                )))
            }
            Value::String(s) if !s.is_empty() => Ok(s.clone()),
            Value::String(_) => Err(Error::Refused(format!("submit file `{shown}`: `{name}` is empty"))),
            other => Err(Error::Refused(format!(
                "submit file `{shown}`: `{name}` must be a string, found {}",
                crate::blueprint::type_name(other)
            ))),
        }
    };
    let datanames = match field("dataname")? {
        Value::Array(items) if !items.is_empty() => {
            items.iter().map(|v| string("dataname", v)).collect::<Result<Vec<_>>>()?
        }
        Value::Array(_) => {
            return Err(Error::Refused(format!("submit file `{shown}`: `dataname` is an empty list")));
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

/// Quotes `s` for a POSIX shell (single quotes; `'` becomes `'\''`).
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Quote {
    None,
    Single,
    Double,
    /// `$'...'`, where backslash escapes are decoded: no quoting of a value is safe there.
    AnsiC,
}

/// Fills the COMMAND template's positional placeholders with `values`, each quoted for its
/// shell context (unquoted, `"..."` or `'...'`). Named fields, format specs and more placeholders
/// than values are errors, and so are placeholders in a context no quoting makes safe: inside a
/// command substitution (`$(...)`, backquotes), inside `$'...'`, or right after a backslash.
pub fn fill_command(template: &str, values: &[&str]) -> Result<String> {
    let mut out = String::with_capacity(template.len() + values.iter().map(|v| v.len() + 8).sum::<usize>());
    let mut quote = Quote::None;
    // Open `$(` substitutions and whether a backquoted one is open: the quoting inside them starts
    // afresh, which this scan does not follow, so a placeholder there is refused.
    let mut substitutions = 0usize;
    let mut backquoted = false;
    let mut auto = 0usize;
    let mut chars = template.chars().peekable();
    let bad = |m: String| Error::Refused(format!("the blueprint's COMMAND cannot be filled: {m}"));
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                out.push('{');
                continue;
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                out.push('}');
                continue;
            }
            '}' => return Err(bad("Single '}' encountered in format string".into())),
            '{' => {
                let mut field = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(ch) => field.push(ch),
                        None => return Err(bad("expected '}' before end of string".into())),
                    }
                }
                let index = if field.is_empty() {
                    auto += 1;
                    auto - 1
                } else if let Ok(n) = field.parse::<usize>() {
                    n
                } else {
                    return Err(bad(format!(
                        "`{{{field}}}` is a named or formatted field; the job manager passes only positional values (KeyError)"
                    )));
                };
                if substitutions > 0 || backquoted || quote == Quote::AnsiC {
                    return Err(bad(
                        "a placeholder inside `$(...)`, backquotes or `$'...'` cannot be quoted safely; pass the value to a script as an argument instead"
                            .into(),
                    ));
                }
                let value = values.get(index).ok_or_else(|| {
                    bad(format!(
                        "it has more than {} positional placeholders; the job manager passes {} (IndexError)",
                        values.len(),
                        values.len()
                    ))
                })?;
                match quote {
                    Quote::None => out.push_str(&shell_quote(value)),
                    Quote::Single => out.push_str(&value.replace('\'', r"'\''")),
                    Quote::AnsiC => {
                        return Err(bad("a placeholder inside `$'...'` cannot be quoted safely".into()));
                    }
                    Quote::Double => {
                        for ch in value.chars() {
                            if matches!(ch, '\\' | '"' | '$' | '`') {
                                out.push('\\');
                            }
                            out.push(ch);
                        }
                    }
                }
                continue;
            }
            _ => {}
        }
        out.push(c);
        match (quote, c) {
            (Quote::None, '$') if chars.peek() == Some(&'\'') => {
                out.push('\'');
                chars.next();
                quote = Quote::AnsiC;
            }
            (Quote::None | Quote::Double, '$') if chars.peek() == Some(&'(') => {
                out.push('(');
                chars.next();
                substitutions += 1;
            }
            (Quote::None | Quote::Double, ')') if substitutions > 0 => substitutions -= 1,
            (Quote::None | Quote::Double, '`') => backquoted = !backquoted,
            (Quote::AnsiC, '\'') => quote = Quote::None,
            (Quote::AnsiC, '\\') => {
                if let Some(next) = chars.next() {
                    out.push(next);
                }
            }
            (Quote::None, '\'') => quote = Quote::Single,
            (Quote::None, '"') => quote = Quote::Double,
            (Quote::Single, '\'') => quote = Quote::None,
            (Quote::Double, '"') => quote = Quote::None,
            (Quote::None | Quote::Double, '\\') => {
                if let Some(&next) = chars.peek()
                    && next != '{'
                    && next != '}'
                {
                    out.push(next);
                    chars.next();
                } else if chars.peek() == Some(&'{') {
                    // `\{}`: the backslash would escape the value's first character (its opening
                    // quote, or the backslash that protects a `$`), so the value could run.
                    let mut ahead = chars.clone();
                    ahead.next();
                    if ahead.peek() != Some(&'{') {
                        return Err(bad(
                            "a backslash right before a placeholder (`\\{}`) would escape the value's quoting; remove the backslash"
                                .into(),
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The development result directory for a submission at `now` (Python's `str(datetime.now())`).
pub fn result_dir(now: &str) -> String {
    format!("results/debugjob{now}")
}

/// The group of a dataset key: what precedes `/inputs/` (regex `(.+)/inputs/`).
pub fn group_of(data_key: &str) -> Result<String> {
    match data_key.rfind("/inputs/") {
        Some(i) if i > 0 => Ok(data_key[..i].to_string()),
        _ => Err(Error::Refused(format!(
            "dataset `{data_key}` is not under a group's `inputs/` folder (like `mygroup/inputs/data.zip`); NeuroCAAS finds the group from that path"
        ))),
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
            _ => Err(Error::Refused(format!(
                "{} is outside the analysis bucket `{bucket}`; development jobs read their data and config from it (give the key, like `GROUP/inputs/FILE`)",
                crate::error::shown(name)
            ))),
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
