//! The blueprint: an analysis' `stack_config_template.json`, read leniently and edited surgically.
//!
//! A [`Blueprint`] holds the exact text it read next to the parsed document (always a JSON object).
//! Opening checks nothing more; each typed accessor explains what is wrong with the one key it
//! reads ([`Error::BlueprintKey`]), and `lint` reviews the whole. Edits splice the new value into
//! the text ([`spans`]), never re-serializing it, so a load-save round trip leaves the file
//! byte-identical; [`Blueprint::save`] never overwrites a file that changed on disk since it was
//! read.
//!
//! The rest of the folder: [`format`](mod@format) (COMMAND's `str.format` syntax), [`names`]
//! (naming rules), [`pyjson`] (Python-style JSON), [`lint`] (`devami check`), [`scaffold`]
//! (`devami init`) and [`submit`] (submit files, COMMAND filling).

pub mod format;
pub mod lint;
pub mod names;
pub mod pyjson;
pub mod scaffold;
pub mod spans;
pub mod submit;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::atomic::{self, Temp};
use crate::blueprint::spans::PathSeg;
use crate::error::{Error, Result};

pub use format::{Placeholder, placeholders, positional_count};
pub use pyjson::to_python_json;

/// The blueprint's file name inside its folder.
pub const BLUEPRINT_FILE: &str = "stack_config_template.json";

/// The largest `SSM_TIMEOUT` AWS accepts (SSM `executionTimeout`, seconds).
pub const SSM_TIMEOUT_MAX: u64 = 172_800;

/// The `SSM_TIMEOUT` every NeuroCAAS blueprint uses.
pub const SSM_TIMEOUT_USUAL: u64 = 172_000;

/// The JSON path of the image id.
pub const AMI_PATH: &str = "Lambda.LambdaConfig.AMI";

/// A blueprint file: the exact text read, the parsed document, and where it lives.
///
/// Real blueprints vary (`shared/reference/neurocaas-protocol.md` §2): optional keys are missing,
/// extra ones appear, `MAXCOST` is a number or a string, `COMMAND` has 3, 4 or 8 placeholders. So
/// the document stays untyped (a `serde_json::Value`, key order kept) and only the accessors type it.
#[derive(Debug, Clone)]
pub struct Blueprint {
    dir: PathBuf,
    path: PathBuf,
    /// The current text (the bytes read, plus any splices).
    text: String,
    /// The text as it is on disk (as read, or as last saved).
    original: String,
    /// The parsed current text; always an object.
    doc: Value,
}

impl Blueprint {
    /// Reads `dir/stack_config_template.json`.
    ///
    /// A missing file is [`Error::BlueprintMissing`]; a file that cannot be read (or a `dir` that
    /// is not a directory, or a path that is not a regular file, such as a FIFO) is [`Error::Io`];
    /// text that is not UTF-8 or not JSON is [`Error::BlueprintSyntax`] with the line and column; a
    /// top level that is not an object is [`Error::BlueprintKey`] at `(top level)`.
    pub fn open(dir: &Path) -> Result<Blueprint> {
        let path = dir.join(BLUEPRINT_FILE);
        let bytes = match crate::regular::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::BlueprintMissing { dir: dir.to_path_buf() });
            }
            Err(e) => return Err(Error::io("read", path, e)),
        };
        let text = match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => {
                let bytes = e.as_bytes();
                let bad = e.utf8_error().valid_up_to();
                let (line, column) = line_col(&String::from_utf8_lossy(&bytes[..bad]));
                return Err(Error::BlueprintSyntax {
                    path,
                    line,
                    column,
                    message: format!("invalid UTF-8 byte 0x{:02x} (save the file as UTF-8)", bytes[bad]),
                });
            }
        };
        Blueprint::from_text(dir.to_path_buf(), text)
    }

    /// A blueprint from text, as if read from `dir/stack_config_template.json` (same checks as
    /// [`Blueprint::open`]).
    pub fn from_text(dir: PathBuf, text: String) -> Result<Blueprint> {
        let path = dir.join(BLUEPRINT_FILE);
        if text.starts_with('\u{feff}') {
            return Err(Error::BlueprintSyntax {
                path,
                line: 1,
                column: 1,
                message: "the file starts with a UTF-8 byte order mark, which Python's `json` rejects \
                          (save it as UTF-8 without BOM)"
                    .to_string(),
            });
        }
        let doc: Value = serde_json::from_str(&text).map_err(|e| syntax_error(&path, &e))?;
        if !doc.is_object() {
            return Err(Error::BlueprintKey {
                path,
                json_path: "(top level)".to_string(),
                problem: format!("must be an object, found {}", type_name(&doc)),
                fix: "a blueprint is one JSON object: `{\"PipelineName\": ..., \"REGION\": ..., \
                      \"Lambda\": {\"LambdaConfig\": {...}}, \"UXData\": {...}}`"
                    .to_string(),
            });
        }
        Ok(Blueprint { dir, path, original: text.clone(), text, doc })
    }

    /// The blueprint folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The blueprint file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current text (what [`Blueprint::save`] writes).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The parsed document (always an object).
    pub fn doc(&self) -> &Value {
        &self.doc
    }

    /// The value at a dotted path with `[n]` indexes (`UXData.Affiliates[0].AffiliateName`).
    pub fn get(&self, json_path: &str) -> Option<&Value> {
        let segs = spans::parse_path(json_path)?;
        lookup(&self.doc, &segs).ok()
    }

    /// The paths of keys written more than once in their object (the last one is the one used).
    pub fn duplicate_keys(&self) -> Vec<String> {
        spans::duplicate_keys(&self.text)
    }

    /// `PipelineName`: the analysis name, which is also its S3 bucket.
    pub fn pipeline_name(&self) -> Result<&str> {
        self.require_str("PipelineName", "\"my-analysis\"")
    }

    /// `PipelineName` as the analysis's S3 bucket: refused, naming the key, when S3 would refuse
    /// it as a bucket name (so that no request is sent only to be answered HTTP 400).
    pub fn bucket(&self) -> Result<&str> {
        let name = self.pipeline_name()?;
        match names::s3_bucket_problem(name) {
            None => Ok(name),
            Some(problem) => Err(Error::BlueprintKey {
                path: self.path.clone(),
                json_path: "PipelineName".to_string(),
                problem: format!(
                    "is {}, which cannot name the analysis's S3 bucket: it {problem}",
                    crate::error::shown(name)
                ),
                fix: format!(
                    "rename the analysis, e.g. `{}` (`devami check` lists every problem of the blueprint)",
                    names::suggest_name(name)
                ),
            }),
        }
    }

    /// `Lambda.LambdaConfig.AMI`: the image jobs run on (an image id, or an alias while developing).
    pub fn ami(&self) -> Result<&str> {
        self.require_str(AMI_PATH, "\"ami-...\"")
    }

    /// `Lambda.LambdaConfig.INSTANCE_TYPE`: the default hardware.
    pub fn instance_type(&self) -> Result<&str> {
        self.require_str("Lambda.LambdaConfig.INSTANCE_TYPE", "\"t2.micro\"")
    }

    /// `Lambda.LambdaConfig.IAM_ROLE`: the instance profile that lets SSM run commands.
    pub fn iam_role(&self) -> Result<&str> {
        self.require_str("Lambda.LambdaConfig.IAM_ROLE", "\"SSMRole\"")
    }

    /// `Lambda.LambdaConfig.COMMAND`: the bash command a job runs, a Python format string.
    pub fn command(&self) -> Result<&str> {
        self.require_str(
            "Lambda.LambdaConfig.COMMAND",
            r#""cd /home/ubuntu; bash run.sh \"{}\" \"{}\" \"{}\" \"{}\"""#,
        )
    }

    /// `Lambda.LambdaConfig.WORKING_DIRECTORY`: where SSM starts the command.
    pub fn working_directory(&self) -> Result<&str> {
        self.require_str("Lambda.LambdaConfig.WORKING_DIRECTORY", "\"~\"")
    }

    /// `Lambda.LambdaConfig.SSM_TIMEOUT` in seconds: an integer, or a string holding one, from 1 to
    /// [`SSM_TIMEOUT_MAX`] (what SSM accepts as `executionTimeout`).
    pub fn ssm_timeout(&self) -> Result<u64> {
        const PATH: &str = "Lambda.LambdaConfig.SSM_TIMEOUT";
        let fix = format!("set it to `{SSM_TIMEOUT_USUAL}` (seconds, the usual value)");
        let value = self.require(PATH, &SSM_TIMEOUT_USUAL.to_string())?;
        let seconds = match value {
            Value::Number(n) => n.as_u64(),
            Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => s.parse().ok(),
            _ => None,
        };
        let problem = match seconds {
            Some(0) => "must be at least 1 second, found 0".to_string(),
            Some(s) if s > SSM_TIMEOUT_MAX => {
                format!("must be at most {SSM_TIMEOUT_MAX} seconds (the AWS limit), found {s}")
            }
            Some(s) => return Ok(s),
            None => format!("must be a whole number of seconds, found {}", describe(value)),
        };
        Err(self.key_error(PATH, problem, fix))
    }

    /// `Lambda.LambdaConfig.KEY_NAME`: the ssh key pair of development instances, if it is a string.
    pub fn key_name(&self) -> Option<&str> {
        self.get("Lambda.LambdaConfig.KEY_NAME").and_then(Value::as_str)
    }

    /// `Lambda.LambdaConfig.SECURITY_GROUPS`: the security group name of instances.
    ///
    /// NeuroCAAS blueprints hold a single name (a string). A list of strings is also accepted and
    /// its first string is returned, since the tools launch instances in one group; `lint` warns
    /// about the list. Any other type gives `None`.
    pub fn security_groups(&self) -> Option<&str> {
        match self.get("Lambda.LambdaConfig.SECURITY_GROUPS")? {
            Value::String(s) => Some(s),
            Value::Array(items) => items.iter().find_map(Value::as_str),
            _ => None,
        }
    }

    /// The region: top-level `REGION`, else `Lambda.LambdaConfig.REGION`, if a string.
    pub fn region(&self) -> Option<&str> {
        self.get("REGION")
            .and_then(Value::as_str)
            .or_else(|| self.get("Lambda.LambdaConfig.REGION").and_then(Value::as_str))
    }

    /// The `AffiliateName`s of `UXData.Affiliates` that are strings, in order.
    pub fn affiliates(&self) -> Vec<String> {
        match self.get("UXData.Affiliates") {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|a| a.get("AffiliateName").and_then(Value::as_str).map(str::to_string))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The keys the shell shows, with their values (`(missing)` when absent). Strings are shown as
    /// they are, other values as compact JSON; `REGION` is [`Blueprint::region`].
    pub fn summary(&self) -> Vec<(String, String)> {
        const KEYS: [(&str, &str); 11] = [
            ("PipelineName", "PipelineName"),
            ("REGION", ""),
            ("STAGE", "STAGE"),
            ("AMI", "Lambda.LambdaConfig.AMI"),
            ("INSTANCE_TYPE", "Lambda.LambdaConfig.INSTANCE_TYPE"),
            ("IAM_ROLE", "Lambda.LambdaConfig.IAM_ROLE"),
            ("KEY_NAME", "Lambda.LambdaConfig.KEY_NAME"),
            ("SECURITY_GROUPS", "Lambda.LambdaConfig.SECURITY_GROUPS"),
            ("WORKING_DIRECTORY", "Lambda.LambdaConfig.WORKING_DIRECTORY"),
            ("SSM_TIMEOUT", "Lambda.LambdaConfig.SSM_TIMEOUT"),
            ("COMMAND", "Lambda.LambdaConfig.COMMAND"),
        ];
        KEYS.iter()
            .map(|&(name, path)| {
                let value = if path.is_empty() {
                    self.region().map(str::to_string)
                } else {
                    self.get(path).map(|v| match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                };
                (name.to_string(), value.unwrap_or_else(|| "(missing)".to_string()))
            })
            .collect()
    }

    /// Sets the string at `json_path` to `value` by splicing the text, so that only that value's
    /// bytes change. A missing key is appended to its parent object (which must exist); a value of
    /// another type is replaced. The string is written as Python's `json.dump` writes it (non-ASCII
    /// as `\uXXXX`), the style of NeuroCAAS's tools. Returns whether anything changed. Nothing is
    /// written to disk until [`Blueprint::save`].
    pub fn set_string(&mut self, json_path: &str, value: &str) -> Result<bool> {
        let Some(segs) = spans::parse_path(json_path).filter(|s| !s.is_empty()) else {
            return Err(self.key_error(
                json_path,
                "is not a key path".to_string(),
                "use dotted keys with `[n]` indexes, e.g. `Lambda.LambdaConfig.AMI`".to_string(),
            ));
        };
        let new_json = spans::quote(value);
        let Some((&last, parent_segs)) = segs.split_last() else { return Ok(false) };
        let parent_path = display_path(parent_segs);
        let parent = match lookup(&self.doc, parent_segs) {
            Ok(parent) => parent,
            Err(missing) => {
                return Err(self.key_error(
                    &missing,
                    "is missing".to_string(),
                    format!("add it before setting `{json_path}`"),
                ));
            }
        };
        let new_text = match (last, parent) {
            (PathSeg::Key(key), Value::Object(map)) => match map.get(key) {
                Some(Value::String(current)) if current == value => return Ok(false),
                Some(_) => spans::replace_value(&self.text, &segs, &new_json),
                None => spans::insert_key(&self.text, parent_segs, key, &new_json),
            },
            (PathSeg::Index(i), Value::Array(items)) => match items.get(i) {
                Some(Value::String(current)) if current == value => return Ok(false),
                Some(_) => spans::replace_value(&self.text, &segs, &new_json),
                None => {
                    return Err(self.key_error(
                        json_path,
                        format!("is missing (`{parent_path}` has {} elements)", items.len()),
                        "only existing list elements can be set".to_string(),
                    ));
                }
            },
            (_, other) => {
                let expected = if matches!(last, PathSeg::Key(_)) { "an object" } else { "a list" };
                return Err(self.key_error(
                    &parent_path,
                    format!("must be {expected}, found {}", type_name(other)),
                    format!("fix `{parent_path}` by hand before setting `{json_path}`"),
                ));
            }
        };
        let mut expected = self.doc.clone();
        set_in(&mut expected, &segs, Value::String(value.to_string()));
        match new_text.and_then(|t| serde_json::from_str::<Value>(&t).ok().map(|d| (t, d))) {
            Some((text, doc)) if doc == expected => {
                self.text = text;
                self.doc = doc;
                Ok(true)
            }
            _ => Err(self.key_error(
                json_path,
                "could not be edited in place".to_string(),
                format!("set it by hand in `{}`", self.path.display()),
            )),
        }
    }

    /// Sets `Lambda.LambdaConfig.AMI` (see [`Blueprint::set_string`]).
    pub fn set_ami(&mut self, ami: &str) -> Result<bool> {
        self.set_string(AMI_PATH, ami)
    }

    /// Whether the text differs from the file as read or last saved.
    pub fn is_modified(&self) -> bool {
        self.text != self.original
    }

    /// Writes the text if it changed, atomically ([`atomic::replace`]). Refuses (nothing written)
    /// when the file on disk is no longer what was read, so that edits made meanwhile in an editor
    /// are never overwritten.
    ///
    /// The temporary file is `.devami/stack_config_template.json.tmp-<pid>` when the blueprint
    /// folder has its session folder (a real folder, so the rename stays on one file system), where
    /// git ignores it and the next session removes it should a kill leave it there; else (or if
    /// the rename crosses file systems after all) it is `stack_config_template.json.tmp-<pid>`
    /// beside the file, which [`remove_dead_temps`] removes.
    pub fn save(&mut self) -> Result<()> {
        if !self.is_modified() {
            return Ok(());
        }
        match crate::regular::read(&self.path) {
            Ok(bytes) if bytes != self.original.as_bytes() => {
                return Err(Error::BlueprintChangedOnDisk { path: self.path.clone() });
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("read", &self.path, e)),
        }
        let folder = self.path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let session = folder.join(crate::state::STATE_DIR);
        let session = fs::symlink_metadata(&session).is_ok_and(|m| m.is_dir()).then_some(session.as_path());
        atomic::replace(
            &self.path,
            self.text.as_bytes(),
            Temp { dir: session, hidden: false, private: false },
        )?;
        self.original = self.text.clone();
        Ok(())
    }

    /// The string at `json_path`, or a [`Error::BlueprintKey`] saying it is missing or of another
    /// type, with `example` (JSON) in the fix.
    fn require_str(&self, json_path: &str, example: &str) -> Result<&str> {
        let value = self.require(json_path, example)?;
        value.as_str().ok_or_else(|| {
            let key = json_path.rsplit('.').next().unwrap_or(json_path);
            self.key_error(
                json_path,
                format!("must be a string, found {}", describe(value)),
                format!("write it as `\"{key}\": {example}`"),
            )
        })
    }

    /// The value at `json_path`, or a [`Error::BlueprintKey`] saying what is missing.
    fn require(&self, json_path: &str, example: &str) -> Result<&Value> {
        let segs = spans::parse_path(json_path).unwrap_or_default();
        lookup(&self.doc, &segs).map_err(|missing| {
            let (parent, key) = json_path.rsplit_once('.').unwrap_or(("", json_path));
            let place =
                if parent.is_empty() { "at the top level".to_string() } else { format!("under `{parent}`") };
            let problem = if missing == json_path {
                "is missing".to_string()
            } else {
                let parent_of_missing = missing.rsplit_once('.').map_or("", |(p, _)| p);
                match self.get(parent_of_missing) {
                    Some(found) if !parent_of_missing.is_empty() && !found.is_object() => {
                        format!("is missing (`{parent_of_missing}` is {}, not an object)", type_name(found))
                    }
                    _ => format!("is missing (there is no `{missing}`)"),
                }
            };
            self.key_error(json_path, problem, format!("add `\"{key}\": {example}` {place}"))
        })
    }

    fn key_error(&self, json_path: &str, problem: String, fix: String) -> Error {
        Error::BlueprintKey { path: self.path.clone(), json_path: json_path.to_string(), problem, fix }
    }
}

/// The value at `segs`, or the dotted path of the first step that does not exist.
fn lookup<'v>(doc: &'v Value, segs: &[PathSeg]) -> std::result::Result<&'v Value, String> {
    let mut current = doc;
    for (n, seg) in segs.iter().enumerate() {
        let next = match *seg {
            PathSeg::Key(k) => current.as_object().and_then(|m| m.get(k)),
            PathSeg::Index(i) => current.as_array().and_then(|a| a.get(i)),
        };
        current = next.ok_or_else(|| display_path(&segs[..=n]))?;
    }
    Ok(current)
}

/// Sets the value at `segs`, creating the last key if needed (its parent must exist).
fn set_in(doc: &mut Value, segs: &[PathSeg], value: Value) {
    let Some((last, parents)) = segs.split_last() else { return };
    let mut current = doc;
    for seg in parents {
        let next = match *seg {
            PathSeg::Key(k) => current.get_mut(k),
            PathSeg::Index(i) => current.get_mut(i),
        };
        let Some(next) = next else { return };
        current = next;
    }
    match (*last, current) {
        (PathSeg::Key(k), Value::Object(map)) => {
            map.insert(k.to_string(), value);
        }
        (PathSeg::Index(i), Value::Array(items)) if i < items.len() => items[i] = value,
        _ => {}
    }
}

/// A path in the dotted syntax of [`Blueprint::get`].
fn display_path(segs: &[PathSeg]) -> String {
    let mut out = String::new();
    for seg in segs {
        match seg {
            PathSeg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            PathSeg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// "a string", "a number"... as users of Python's `json` would call the types.
pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// The type of a value, with the value itself when it is short (`a number (-5)`).
pub fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_string(),
        Value::Bool(b) => format!("a boolean ({b})"),
        Value::Number(n) => format!("a number ({n})"),
        Value::String(s) if s.chars().count() <= 40 => format!("a string ({})", spans::quote(s)),
        other => type_name(other).to_string(),
    }
}

fn syntax_error(path: &Path, e: &serde_json::Error) -> Error {
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let message = full.strip_suffix(&suffix).unwrap_or(&full).replace("EOF", "end of file");
    Error::BlueprintSyntax { path: path.to_path_buf(), line: e.line(), column: e.column().max(1), message }
}

/// The 1-based line and column (in characters) just after `before`.
fn line_col(before: &str) -> (usize, usize) {
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Removes `stack_config_template.json.tmp-<pid>` files (regular files only) that a `save`
/// killed before its rename left beside the blueprint in `dir`. Call it only while holding the
/// folder's lock (the session's), which makes the holder the only one that saves there: every such
/// file is then a dead writer's. Best effort: a file that cannot be removed stays.
pub fn remove_dead_temps(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    let prefix = format!("{BLUEPRINT_FILE}{}", atomic::TEMP_MARKER);
    for entry in entries.flatten() {
        let name = entry.file_name();
        let ours = name.to_str().is_some_and(|n| {
            n.strip_prefix(&prefix)
                .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
        });
        if ours && entry.file_type().is_ok_and(|t| t.is_file()) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A blueprint in Python's `json.dump(indent=4)` style, with a non-ASCII escape.
    const PY4: &str = r#"{
    "PipelineName": "demo-analysis",
    "REGION": "us-east-1",
    "STAGE": "webdev",
    "Lambda": {
        "CodeUri": "../../protocols",
        "Handler": "submit_start.handler_develop",
        "LambdaConfig": {
            "AMI": "ami-0123456789abcdef0",
            "INSTANCE_TYPE": "t2.micro",
            "REGION": "us-east-1",
            "IAM_ROLE": "SSMRole",
            "WORKING_DIRECTORY": "~/bin",
            "COMMAND": "cd /home/ubuntu; bash run.sh \"{}\" \"{}\" \"{}\" \"{}\"",
            "SSM_TIMEOUT": 172000,
            "MAXCOST": "300"
        }
    },
    "UXData": {
        "Affiliates": [
            {
                "AffiliateName": "debuggers",
                "UserNames": [
                    "dummyuser"
                ],
                "UserInput": true,
                "ContactEmail": "caf\u00e9 \ud83d\ude00"
            }
        ]
    }
}"#;

    fn bp(text: &str) -> Blueprint {
        Blueprint::from_text(PathBuf::from("blueprints/demo"), text.to_string()).expect("valid blueprint")
    }

    #[track_caller]
    fn err_text(r: Result<impl std::fmt::Debug>) -> String {
        r.expect_err("should fail").to_string()
    }

    fn styles() -> Vec<(&'static str, String)> {
        let doc: Value = serde_json::from_str(PY4).unwrap();
        vec![
            ("python indent=4", PY4.to_string()),
            ("two spaces", serde_json::to_string_pretty(&doc).unwrap()),
            ("minified", serde_json::to_string(&doc).unwrap()),
            ("python one line", to_python_json(&doc, None)),
            ("crlf", PY4.replace('\n', "\r\n") + "\r\n"),
            ("tabs", PY4.replace("    ", "\t")),
        ]
    }

    /// The lengths of the common prefix and the common suffix (not overlapping it) of two texts.
    fn common_ends(old: &str, new: &str) -> (usize, usize) {
        let prefix = old.bytes().zip(new.bytes()).take_while(|(a, b)| a == b).count();
        let suffix =
            old[prefix..].bytes().rev().zip(new[prefix..].bytes().rev()).take_while(|(a, b)| a == b).count();
        (prefix, suffix)
    }

    /// The bytes that differ between two texts: (old middle, new middle).
    fn changed<'a>(old: &'a str, new: &'a str) -> (&'a str, &'a str) {
        let (prefix, suffix) = common_ends(old, new);
        (&old[prefix..old.len() - suffix], &new[prefix..new.len() - suffix])
    }

    #[test]
    fn load_save_round_trip_is_byte_identical_in_every_style() {
        let tmp = tempfile::tempdir().unwrap();
        for (style, text) in styles() {
            let path = tmp.path().join(BLUEPRINT_FILE);
            fs::write(&path, &text).unwrap();
            let mut b = Blueprint::open(tmp.path()).unwrap_or_else(|e| panic!("{style}: {e}"));
            assert_eq!(b.text(), text, "{style}");
            assert!(!b.is_modified());
            b.save().unwrap();
            assert_eq!(fs::read_to_string(&path).unwrap(), text, "{style}");
            assert_eq!(b.ami().unwrap(), "ami-0123456789abcdef0", "{style}");
        }
    }

    #[test]
    fn the_bucket_is_a_pipeline_name_that_s3_accepts() {
        let b = bp(&PY4.replace("\"PipelineName\": \"", "\"PipelineName\": \"x"));
        assert!(b.bucket().is_ok(), "{:?}", b.bucket());
        let b = bp(&PY4.replace("\"PipelineName\": \"", "\"PipelineName\": \"My_"));
        let e = b.bucket().unwrap_err().to_string();
        assert!(e.contains("`PipelineName` is `My_") && e.contains("has the uppercase letter `M`"), "{e}");
    }

    #[test]
    fn a_blueprint_that_is_not_a_regular_file_is_refused_without_blocking() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(BLUEPRINT_FILE);
        crate::state::make_fifo(&path);
        let err = Blueprint::open(tmp.path()).unwrap_err();
        let msg = crate::console::render_error(&err);
        assert!(matches!(err, Error::Io { .. }), "{msg}");
        assert!(msg.contains("a named pipe (FIFO), not a regular file"), "{msg}");
        fs::remove_file(&path).unwrap();
        fs::create_dir(&path).unwrap();
        let msg = crate::console::render_error(&Blueprint::open(tmp.path()).unwrap_err());
        assert!(msg.contains("Is a directory"), "{msg}");
    }

    #[test]
    fn set_ami_changes_only_the_ami_bytes_in_every_style() {
        for (style, text) in styles() {
            let mut b = bp(&text);
            assert!(b.set_ami("ami-0fedcba9876543210").unwrap(), "{style}");
            let span = spans::value_span(&text, &spans::parse_path(AMI_PATH).unwrap()).unwrap();
            let (prefix, suffix) = common_ends(&text, b.text());
            assert!(prefix > span.start && suffix > text.len() - span.end, "{style}: {}", b.text());
            assert_eq!(b.text().len(), text.len(), "{style}");
            assert_eq!(b.ami().unwrap(), "ami-0fedcba9876543210");
            assert_eq!(b.doc()["UXData"]["Affiliates"][0]["ContactEmail"], "café 😀");
            assert!(b.is_modified());
        }
    }

    #[test]
    fn setting_the_same_value_changes_nothing() {
        let mut b = bp(PY4);
        assert!(!b.set_ami("ami-0123456789abcdef0").unwrap());
        assert!(!b.is_modified());
        assert!(b.set_ami("ami-11111111").unwrap());
        assert!(b.set_ami("ami-0123456789abcdef0").unwrap());
        assert!(!b.is_modified(), "back to the original bytes");
    }

    #[test]
    fn new_strings_are_written_like_python_json_dump() {
        let mut b = bp(PY4);
        b.set_string("STAGE", "dév \"x\"").unwrap();
        assert!(b.text().contains(r#""STAGE": "d\u00e9v \"x\"","#), "{}", b.text());
        assert_eq!(b.doc()["STAGE"], "dév \"x\"");
    }

    #[test]
    fn set_ami_inserts_the_key_when_missing() {
        let text = PY4.replace("            \"AMI\": \"ami-0123456789abcdef0\",\n", "");
        let mut b = bp(&text);
        assert!(err_text(b.ami()).contains("`Lambda.LambdaConfig.AMI` is missing"));
        assert!(b.set_ami("ami-0fedcba9876543210").unwrap());
        let (old, new) = changed(&text, b.text());
        assert_eq!(old, "");
        assert_eq!(new, ",\n            \"AMI\": \"ami-0fedcba9876543210\"");
        let keys: Vec<&String> = b.doc()["Lambda"]["LambdaConfig"].as_object().unwrap().keys().collect();
        assert_eq!(keys.last().unwrap().as_str(), "AMI");
        assert_eq!(b.ami().unwrap(), "ami-0fedcba9876543210");
    }

    #[test]
    fn set_string_reports_missing_parents_and_bad_paths() {
        let mut b = bp(r#"{"Lambda": {"Handler": "x"}, "L": [1, "a"]}"#);
        let e = err_text(b.set_ami("ami-11111111"));
        assert!(e.contains("`Lambda.LambdaConfig` is missing"), "{e}");
        let e = err_text(b.set_string("Lambda.Handler.X", "y"));
        assert!(e.contains("`Lambda.Handler` must be an object, found a string"), "{e}");
        assert!(err_text(b.set_string("a..b", "y")).contains("is not a key path"));
        assert!(err_text(b.set_string("L[5]", "y")).contains("`L[5]` is missing"));
        assert!(b.set_string("L[0]", "one").unwrap());
        assert_eq!(b.text(), r#"{"Lambda": {"Handler": "x"}, "L": ["one", "a"]}"#);
        assert!(b.is_modified());
    }

    #[test]
    fn set_string_replaces_a_value_of_another_type() {
        let mut b = bp(r#"{"Lambda": {"LambdaConfig": {"AMI": null}}}"#);
        assert!(b.set_ami("ubuntu22").unwrap());
        assert_eq!(b.text(), r#"{"Lambda": {"LambdaConfig": {"AMI": "ubuntu22"}}}"#);
    }

    #[test]
    fn save_writes_atomically_and_then_is_a_no_op() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(BLUEPRINT_FILE);
        fs::write(&path, PY4).unwrap();
        let mut b = Blueprint::open(tmp.path()).unwrap();
        b.set_ami("ami-0fedcba9876543210").unwrap();
        b.save().unwrap();
        assert!(!b.is_modified());
        let on_disk = fs::read_to_string(&path).unwrap();
        assert_eq!(on_disk, b.text());
        let names: Vec<_> = fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from(BLUEPRINT_FILE)], "no temporary file left");
        let reopened = Blueprint::open(tmp.path()).unwrap();
        assert_eq!(reopened.ami().unwrap(), "ami-0fedcba9876543210");
    }

    #[test]
    fn save_writes_through_the_session_folder_and_dead_temporaries_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(BLUEPRINT_FILE);
        fs::write(&path, PY4).unwrap();
        fs::create_dir(tmp.path().join(crate::state::STATE_DIR)).unwrap();
        let names = |dir: &Path| -> Vec<String> {
            let mut n: Vec<String> = fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            n.sort();
            n
        };
        // The temporary file goes through `.devami/`, where git ignores it.
        let mut b = Blueprint::open(tmp.path()).unwrap();
        b.set_ami("ami-0fedcba9876543210").unwrap();
        b.save().unwrap();
        assert_eq!(Blueprint::open(tmp.path()).unwrap().ami().unwrap(), "ami-0fedcba9876543210");
        assert_eq!(names(tmp.path()), [".devami", BLUEPRINT_FILE]);
        assert!(names(&tmp.path().join(".devami")).is_empty());
        // What saves killed before their rename left beside the file goes; nothing else does.
        for name in [
            format!("{BLUEPRINT_FILE}.tmp-123"),
            format!("{BLUEPRINT_FILE}.tmp-"),
            format!("{BLUEPRINT_FILE}.tmp-12x"),
            "notes.tmp-5".to_string(),
        ] {
            fs::write(tmp.path().join(name), "{").unwrap();
        }
        fs::create_dir(tmp.path().join(format!("{BLUEPRINT_FILE}.tmp-9"))).unwrap();
        remove_dead_temps(tmp.path());
        let expected = [
            ".devami".to_string(),
            "notes.tmp-5".to_string(),
            BLUEPRINT_FILE.to_string(),
            format!("{BLUEPRINT_FILE}.tmp-"),
            format!("{BLUEPRINT_FILE}.tmp-12x"),
            format!("{BLUEPRINT_FILE}.tmp-9"),
        ];
        assert_eq!(names(tmp.path()), expected);
    }

    #[test]
    fn save_refuses_to_overwrite_changes_made_on_disk() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(BLUEPRINT_FILE);
        fs::write(&path, PY4).unwrap();
        let mut b = Blueprint::open(tmp.path()).unwrap();
        b.set_ami("ami-0fedcba9876543210").unwrap();
        let edited = PY4.replace("t2.micro", "m5.xlarge");
        fs::write(&path, &edited).unwrap();
        let e = b.save().unwrap_err();
        assert!(matches!(e, Error::BlueprintChangedOnDisk { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            format!(
                "`{}` changed on disk since devami read it, so nothing was written; reopen the blueprint to \
                 pick up the changes and try again",
                path.display()
            )
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), edited);
    }

    #[test]
    fn open_reports_a_missing_blueprint_and_unreadable_folders() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(matches!(Blueprint::open(tmp.path()), Err(Error::BlueprintMissing { .. })));
        assert!(matches!(Blueprint::open(&tmp.path().join("nope")), Err(Error::BlueprintMissing { .. })));
        let file = tmp.path().join("plain-file");
        fs::write(&file, "x").unwrap();
        assert!(matches!(Blueprint::open(&file), Err(Error::Io { .. })));
        fs::create_dir(tmp.path().join(BLUEPRINT_FILE)).unwrap();
        assert!(matches!(Blueprint::open(tmp.path()), Err(Error::Io { .. })));
    }

    #[test]
    fn syntax_errors_carry_line_column_and_a_short_message() {
        let text = "{\n    \"PipelineName\": \"x\"\n    \"REGION\": \"us-east-1\"\n}";
        match Blueprint::from_text(PathBuf::from("d"), text.to_string()) {
            Err(Error::BlueprintSyntax { line, column, message, .. }) => {
                assert_eq!((line, column), (3, 5));
                assert_eq!(message, "expected `,` or `}`");
            }
            other => panic!("{other:?}"),
        }
        let e = err_text(Blueprint::from_text(PathBuf::from("d"), "{\"a\": [1,\n".to_string()));
        assert!(e.contains("end of file while parsing"), "{e}");
        let e = err_text(Blueprint::from_text(PathBuf::from("d"), "{\"a\": 1,}".to_string()));
        assert!(e.contains("trailing comma at line 1, column 9"), "{e}");
        let e = err_text(Blueprint::from_text(PathBuf::from("d"), "\u{feff}{}".to_string()));
        assert!(e.contains("byte order mark"), "{e}");
    }

    #[test]
    fn invalid_utf8_is_a_syntax_error_at_the_bad_byte() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join(BLUEPRINT_FILE), b"{\n  \"\xc3\xa9\": \"caf\xe9\"\n}").unwrap();
        match Blueprint::open(tmp.path()) {
            Err(Error::BlueprintSyntax { line, column, message, .. }) => {
                assert_eq!((line, column), (2, 12));
                assert!(message.contains("0xe9"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_top_level_must_be_an_object() {
        let e = err_text(Blueprint::from_text(PathBuf::from("d"), "[1, 2]".to_string()));
        assert!(e.contains("`(top level)` must be an object, found a list"), "{e}");
    }

    #[test]
    fn typed_accessors_name_the_path_the_problem_and_the_fix() {
        let b = bp(r#"{"PipelineName": 5, "Lambda": {"LambdaConfig": {"INSTANCE_TYPE": ["t2.micro"]}}}"#);
        assert_eq!(
            err_text(b.pipeline_name()),
            "`blueprints/demo/stack_config_template.json`: `PipelineName` must be a string, found a \
             number (5); write it as `\"PipelineName\": \"my-analysis\"`"
        );
        let e = err_text(b.instance_type());
        assert!(e.contains("`Lambda.LambdaConfig.INSTANCE_TYPE` must be a string, found a list"), "{e}");
        assert_eq!(
            err_text(b.ami()),
            "`blueprints/demo/stack_config_template.json`: `Lambda.LambdaConfig.AMI` is missing; \
             add `\"AMI\": \"ami-...\"` under `Lambda.LambdaConfig`"
        );
        let e = err_text(b.ssm_timeout());
        assert!(
            e.contains("`Lambda.LambdaConfig.SSM_TIMEOUT` is missing; add `\"SSM_TIMEOUT\": 172000`"),
            "{e}"
        );
        let b = bp(r#"{"Lambda": "x"}"#);
        let e = err_text(b.iam_role());
        assert!(
            e.contains("`Lambda.LambdaConfig.IAM_ROLE` is missing (`Lambda` is a string, not an object)")
        );
        let e = err_text(bp("{}").command());
        assert!(e.contains("`Lambda.LambdaConfig.COMMAND` is missing (there is no `Lambda`)"), "{e}");
        assert!(err_text(bp("{}").working_directory()).contains("WORKING_DIRECTORY"));
        let e = err_text(bp("{}").pipeline_name());
        assert!(e.ends_with("add `\"PipelineName\": \"my-analysis\"` at the top level"), "{e}");
    }

    #[test]
    fn ssm_timeout_accepts_integers_and_strings_within_aws_limits() {
        let with = |v: &str| bp(&format!(r#"{{"Lambda": {{"LambdaConfig": {{"SSM_TIMEOUT": {v}}}}}}}"#));
        assert_eq!(with("172000").ssm_timeout().unwrap(), 172000);
        assert_eq!(with("\"3600\"").ssm_timeout().unwrap(), 3600);
        assert_eq!(with("172800").ssm_timeout().unwrap(), 172800);
        assert!(err_text(with("0").ssm_timeout()).contains("must be at least 1 second, found 0"));
        assert!(err_text(with("172801").ssm_timeout()).contains("at most 172800 seconds (the AWS limit)"));
        assert!(err_text(with("-5").ssm_timeout()).contains("whole number of seconds, found a number (-5)"));
        assert!(err_text(with("1.5").ssm_timeout()).contains("found a number (1.5)"));
        assert!(err_text(with("\"2 days\"").ssm_timeout()).contains("found a string (\"2 days\")"));
        assert!(err_text(with("true").ssm_timeout()).contains("set it to `172000`"));
    }

    #[test]
    fn optional_accessors() {
        let b = bp(PY4);
        assert_eq!(b.key_name(), None);
        assert_eq!(b.security_groups(), None);
        assert_eq!(b.region(), Some("us-east-1"));
        assert_eq!(b.affiliates(), vec!["debuggers".to_string()]);
        let b = bp(r#"{"Lambda": {"LambdaConfig": {"REGION": "eu-west-1", "KEY_NAME": "k",
                "SECURITY_GROUPS": [7, "sg-a", "sg-b"]}},
                "UXData": {"Affiliates": [{"AffiliateName": "a"}, {"AffiliateName": 3}, "x",
                    {"AffiliateName": "b"}]}}"#);
        assert_eq!(b.region(), Some("eu-west-1"));
        assert_eq!(b.key_name(), Some("k"));
        assert_eq!(b.security_groups(), Some("sg-a"));
        assert_eq!(b.affiliates(), vec!["a".to_string(), "b".to_string()]);
        assert_eq!(bp(r#"{"Lambda": {"LambdaConfig": {"SECURITY_GROUPS": 3}}}"#).security_groups(), None);
    }

    #[test]
    fn get_follows_dotted_paths_with_indexes() {
        let b = bp(PY4);
        assert_eq!(b.get("Lambda.LambdaConfig.AMI").unwrap(), "ami-0123456789abcdef0");
        assert_eq!(b.get("UXData.Affiliates[0].AffiliateName").unwrap(), "debuggers");
        assert_eq!(b.get("UXData.Affiliates[0].UserNames[0]").unwrap(), "dummyuser");
        assert_eq!(b.get("UXData.Affiliates[1]"), None);
        assert_eq!(b.get("Lambda..AMI"), None);
        assert!(b.get("").unwrap().is_object());
    }

    #[test]
    fn summary_lists_the_shell_keys_with_missing_ones_marked() {
        let summary = bp(PY4).summary();
        let get = |k: &str| summary.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str()).unwrap();
        assert_eq!(summary.len(), 11);
        assert_eq!(summary[0].0, "PipelineName");
        assert_eq!(get("AMI"), "ami-0123456789abcdef0");
        assert_eq!(get("SSM_TIMEOUT"), "172000");
        assert_eq!(get("KEY_NAME"), "(missing)");
        assert_eq!(get("COMMAND"), r#"cd /home/ubuntu; bash run.sh "{}" "{}" "{}" "{}""#);
        assert_eq!(get("REGION"), "us-east-1");
    }

    #[test]
    fn every_protocol_shape_loads() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/blueprints");
        let cases = [
            ("legacy-three-placeholders", 3),
            ("eight-placeholders", 8),
            ("named-field", 4),
            ("missing-ssm-timeout", 3),
            ("template-placeholders", 3),
        ];
        for (name, positional) in cases {
            let b = Blueprint::open(&fixtures.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
            let fields = placeholders(b.command().unwrap()).unwrap();
            assert_eq!(positional_count(&fields), positional, "{name}");
            assert!(b.ami().is_ok() && b.instance_type().is_ok() && b.iam_role().is_ok(), "{name}");
        }
        let b = Blueprint::open(&fixtures.join("legacy-three-placeholders")).unwrap();
        assert_eq!(b.get("Lambda.LambdaConfig.MAXCOST").unwrap(), 300);
        assert!(b.get("STAGE").is_none());
        assert!(Blueprint::open(&fixtures.join("missing-ssm-timeout")).unwrap().ssm_timeout().is_err());
        let extra = bp(r#"{"PipelineName": "x", "container_history": [{"a": 1}], "PipelineVersion": "1"}"#);
        assert_eq!(extra.pipeline_name().unwrap(), "x");
    }
}
