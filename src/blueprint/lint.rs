//! `devami check`: a careful reviewer's reading of a blueprint.
//!
//! [`check`] reads the whole blueprint as an experienced NeuroCAAS developer reviews a pull
//! request, by the rules of `shared/reference/neurocaas-protocol.md` §2 and §3, and reports
//! [`Finding`]s: a [`Severity::Error`] breaks the development loop, the job manager or deploy; a
//! [`Severity::Warning`] works now but will bite later. Every finding names the JSON path, says
//! what will happen and gives the fix; findings come errors first, then by JSON path, so that the
//! output is stable for transcripts.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::blueprint::format::{Placeholder, placeholders, positional_count};
use crate::blueprint::names::{affiliate_name_problem, bucket_name_problem, suggest_name};
use crate::blueprint::{Blueprint, SSM_TIMEOUT_MAX, SSM_TIMEOUT_USUAL, describe};
use crate::error::{Error, shown};
use crate::output;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Breaks the development loop, the job manager or deploy (a placeholder left in from a
    /// template, a `COMMAND` that Python's `.format` rejects, a bucket name S3 refuses).
    Error,
    /// Works for now, but is likely a mistake or will fail later (an AMI alias that deploy cannot
    /// use, the legacy 3-placeholder `COMMAND`, a missing `STAGE`).
    Warning,
}

impl Severity {
    /// `error` or `warning`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

/// One problem found in a blueprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    /// Where, in the dotted syntax of `Blueprint::get`; empty for the file as a whole.
    pub json_path: String,
    /// What is wrong (lowercase, no trailing period).
    pub message: String,
    /// What to do about it; empty when the message already says.
    pub fix: String,
}

/// The image aliases `launch_devinstance` knows (the original four and newer ones).
pub const AMI_ALIASES: [&str; 8] =
    ["ubuntu18", "ubuntu16", "dlami18", "dlami16", "ubuntu20", "ubuntu22", "ubuntu24", "al2023"];

/// The stages the deploy builder knows.
pub const STAGES: [&str; 3] = ["develop", "webdev", "websubstack"];

/// How many positional arguments the job manager passes to `COMMAND.format`.
pub const JOB_ARGUMENTS: usize = 4;

const LC: &str = "Lambda.LambdaConfig";

/// Reviews a blueprint; errors first, then by JSON path.
pub fn check(bp: &Blueprint) -> Vec<Finding> {
    let mut review = Review { bp, findings: Vec::new() };
    review.pipeline_name();
    review.stage();
    review.region();
    review.lambda();
    review.ux_data();
    review.duplicate_keys();
    let mut findings = review.findings;
    findings.sort_by(|a, b| (a.severity, &a.json_path).cmp(&(b.severity, &b.json_path)));
    findings
}

/// Opens and reviews the blueprint in `dir`; a blueprint that cannot be opened is one error.
pub fn check_dir(dir: &Path) -> Vec<Finding> {
    match Blueprint::open(dir) {
        Ok(bp) => check(&bp),
        Err(e) => {
            let json_path = match &e {
                Error::BlueprintKey { json_path, .. } => json_path.clone(),
                _ => String::new(),
            };
            // The whole chain: `could not read ...: Is a directory`, as the session shows it.
            let mut message = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            vec![Finding { severity: Severity::Error, json_path, message, fix: String::new() }]
        }
    }
}

/// One line per finding (`error: PATH: MESSAGE (fix: FIX)`), then the verdict for `dir`.
pub fn render(dir: &Path, findings: &[Finding]) -> String {
    let mut out = String::new();
    for f in findings {
        out.push_str(f.severity.as_str());
        out.push_str(": ");
        if !f.json_path.is_empty() {
            out.push_str(&f.json_path);
            out.push_str(": ");
        }
        out.push_str(&f.message);
        if !f.fix.is_empty() {
            out.push_str(" (fix: ");
            out.push_str(&f.fix);
            out.push(')');
        }
        out.push('\n');
    }
    // Findings quote the blueprint's values: the same safety net as `Console::error`.
    let mut out = crate::console::terminal_safe(&out);
    let (errors, warnings) = counts(findings);
    out.push_str(&format!("{}: {}", dir.display(), verdict(errors, warnings)));
    out
}

/// A table of several checked folders (folder, PipelineName, errors, warnings, verdict) and a total
/// line. The PipelineName is read again from each folder (`-` when it cannot be).
pub fn render_summary(results: &[(PathBuf, Vec<Finding>)]) -> String {
    let header = ["folder", "PipelineName", "errors", "warnings", "verdict"];
    let mut failing = 0;
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|(dir, findings)| {
            let (errors, warnings) = counts(findings);
            if errors > 0 {
                failing += 1;
            }
            let name = Blueprint::open(dir)
                .ok()
                .and_then(|bp| bp.pipeline_name().ok().map(|n| shorten(n, 40)))
                .unwrap_or_else(|| "-".to_string());
            let verdict = if errors > 0 { "fail" } else { "ok" };
            vec![
                dir.display().to_string(),
                name,
                errors.to_string(),
                warnings.to_string(),
                verdict.to_string(),
            ]
        })
        .collect();
    let total = results.len();
    let mut out = output::table(&header, &rows);
    out.push('\n');
    out.push_str(&format!(
        "{} checked: {} ok, {} with errors",
        plural(total, "blueprint"),
        total - failing,
        failing
    ));
    out
}

/// Whether `s` is an image id: `ami-` and 8 or 17 lowercase hex digits.
pub fn is_ami_id(s: &str) -> bool {
    s.strip_prefix("ami-").is_some_and(|hex| {
        matches!(hex.len(), 8 | 17) && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Whether `s` is one of [`AMI_ALIASES`].
pub fn is_ami_alias(s: &str) -> bool {
    AMI_ALIASES.contains(&s)
}

/// Whether `s` is shaped like an AWS region name (`us-east-1`, `us-gov-west-1`).
pub fn is_region(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    let lower = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase());
    (3..=4).contains(&parts.len())
        && parts[0].len() == 2
        && lower(parts[0])
        && parts[1..parts.len() - 1].iter().all(|p| lower(p))
        && parts.last().is_some_and(|p| (1..=2).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether `s` is shaped like an EC2 instance type (`family.size`: `t2.micro`, `p3.2xlarge`).
pub fn is_instance_type(s: &str) -> bool {
    let Some((family, size)) = s.split_once('.') else { return false };
    let ok = |p: &str| p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    family.len() >= 2
        && family.starts_with(|c: char| c.is_ascii_lowercase())
        && ok(family)
        && !size.is_empty()
        && size.starts_with(|c: char| c.is_ascii_alphanumeric())
        && ok(size)
}

/// Whether a string value is template text rather than a value: it has spaces, or brackets.
fn is_placeholder(s: &str) -> bool {
    let s = s.trim();
    s.contains(char::is_whitespace) || (s.starts_with(['[', '<']) && s.ends_with([']', '>']))
}

fn placeholder_message(s: &str) -> String {
    format!("placeholder text \"{}\" left in", shorten(s, 70))
}

/// `s`, control characters escaped, cut to `max` characters saying how many were left out.
fn shorten(s: &str, max: usize) -> String {
    crate::error::clipped(s, max)
}

fn counts(findings: &[Finding]) -> (usize, usize) {
    let errors = findings.iter().filter(|f| f.severity == Severity::Error).count();
    (errors, findings.len() - errors)
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 { format!("1 {word}") } else { format!("{n} {word}s") }
}

fn verdict(errors: usize, warnings: usize) -> String {
    match (errors, warnings) {
        (0, 0) => "ok, no errors or warnings".to_string(),
        (0, w) => format!("ok, {}", plural(w, "warning")),
        (e, w) => format!("{}, {}", plural(e, "error"), plural(w, "warning")),
    }
}

/// The fix for an image id that is missing or wrong.
const AMI_FIX: &str = "set an image id (`ami-` and 17 hex digits), or make one: \
                       `launch_devinstance ubuntu22`, install the analysis, `create_devami NAME`, then \
                       `update_blueprint`";

struct Review<'a> {
    bp: &'a Blueprint,
    findings: Vec<Finding>,
}

impl<'a> Review<'a> {
    fn push(
        &mut self,
        severity: Severity,
        json_path: &str,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.findings.push(Finding {
            severity,
            json_path: json_path.to_string(),
            message: message.into(),
            fix: fix.into(),
        });
    }

    fn error(&mut self, json_path: &str, message: impl Into<String>, fix: impl Into<String>) {
        self.push(Severity::Error, json_path, message, fix);
    }

    fn warning(&mut self, json_path: &str, message: impl Into<String>, fix: impl Into<String>) {
        self.push(Severity::Warning, json_path, message, fix);
    }

    fn get(&self, json_path: &str) -> Option<&'a Value> {
        self.bp.get(json_path)
    }

    /// The string at `path`; reports a missing key (with `severity`, why it matters, and an
    /// example) or another type as an error, and gives `None` then.
    fn string(&mut self, path: &str, missing: Option<(Severity, &str)>, example: &str) -> Option<&'a str> {
        let (parent, key) = path.rsplit_once('.').unwrap_or(("", path));
        let place =
            if parent.is_empty() { "at the top level".to_string() } else { format!("under `{parent}`") };
        match self.get(path) {
            None => {
                if let Some((severity, why)) = missing {
                    let message = format!("is missing; {why}");
                    self.push(severity, path, message, format!("add `\"{key}\": {example}` {place}"));
                }
                None
            }
            Some(Value::String(s)) => Some(s),
            Some(other) => {
                let message = format!("must be a string, found {}", describe(other));
                self.error(path, message, format!("write it as `\"{key}\": {example}`"));
                None
            }
        }
    }

    fn duplicate_keys(&mut self) {
        for path in self.bp.duplicate_keys() {
            self.warning(
                &path,
                "is written more than once in its object; only the last one counts (for devami, Python's \
                 `json` and the job manager alike)",
                "remove the stale copies",
            );
        }
    }

    fn pipeline_name(&mut self) {
        const P: &str = "PipelineName";
        let why = "it names the analysis and its S3 bucket";
        let Some(name) = self.string(P, Some((Severity::Error, why)), "\"my-analysis\"") else { return };
        let naming = "it is also the S3 bucket name: 3 to 63 lowercase letters, digits and dashes, \
                      starting and ending with a letter or digit";
        if is_placeholder(name) || name.is_empty() {
            let message = if name.is_empty() { "is empty".to_string() } else { placeholder_message(name) };
            self.error(
                P,
                message,
                format!("replace it with the analysis name, e.g. `my-analysis`; {naming}"),
            );
        } else if let Some(problem) = bucket_name_problem(name) {
            self.error(
                P,
                format!("{} {problem}", shown(name)),
                format!("use a name like `{}`; {naming}", suggest_name(name)),
            );
        } else if name == "templatestack" {
            self.warning(
                P,
                "is still `templatestack`, the name of the template this blueprint was copied from",
                "give the analysis its own name: each analysis has its own bucket",
            );
        }
    }

    fn stage(&mut self) {
        let why = "`build.sh` cannot deploy the analysis without it";
        let Some(stage) = self.string("STAGE", Some((Severity::Warning, why)), "\"webdev\"") else { return };
        let fix = "use `webdev` (only the named affiliates can use the analysis) or `websubstack` (any \
                   NeuroCAAS user can opt in); `develop` is the older form";
        if is_placeholder(stage) {
            self.error("STAGE", placeholder_message(stage), fix);
        } else if !STAGES.contains(&stage) {
            let lower = stage.to_lowercase();
            let fix = if STAGES.contains(&lower.as_str()) {
                format!("write it in lowercase: `{lower}`")
            } else {
                fix.into()
            };
            self.error(
                "STAGE",
                format!(
                    "{} is not a stage the deploy builder knows (`develop`, `webdev`, `websubstack`)",
                    shown(stage)
                ),
                fix,
            );
        }
    }

    fn region(&mut self) {
        let lc_path = format!("{LC}.REGION");
        let mut valid = Vec::new();
        for path in ["REGION", lc_path.as_str()] {
            let Some(region) = self.string(path, None, "\"us-east-1\"") else { continue };
            if is_placeholder(region) || region.is_empty() {
                let message =
                    if region.is_empty() { "is empty".to_string() } else { placeholder_message(region) };
                self.error(path, message, "use a region name such as `us-east-1`");
            } else if !is_region(region) {
                self.error(
                    path,
                    format!("{} is not an AWS region name", shown(region)),
                    "use a region name such as `us-east-1`",
                );
            } else {
                valid.push((path, region));
            }
        }
        if self.get("REGION").is_none() {
            let message = if self.get(&lc_path).is_some() {
                "is missing at the top level; the deploy builder requires it (devami uses \
                 `Lambda.LambdaConfig.REGION` meanwhile)"
            } else {
                "is missing; the deploy builder requires it, and devami falls back to the region of your \
                 AWS configuration"
            };
            self.warning("REGION", message, "add `\"REGION\": \"us-east-1\"` at the top level");
        }
        if let [(_, top), (path, lambda)] = valid[..]
            && top != lambda
        {
            self.error(
                path,
                format!("`{lambda}` disagrees with the top-level `REGION` (`{top}`)"),
                "use the same region in both places: the stack is deployed in one region and its instances \
                 run there",
            );
        }
    }

    fn lambda(&mut self) {
        let settings = "AMI, INSTANCE_TYPE, COMMAND, IAM_ROLE, WORKING_DIRECTORY, SSM_TIMEOUT...";
        match self.get("Lambda") {
            None => {
                let fix = format!("add a `Lambda` object holding a `LambdaConfig` object ({settings})");
                return self.error("Lambda", "is missing; it holds every job setting", fix);
            }
            Some(Value::Object(_)) => {}
            Some(other) => {
                let fix = format!("make it an object holding a `LambdaConfig` object ({settings})");
                return self.error("Lambda", format!("must be an object, found {}", describe(other)), fix);
            }
        }
        match self.get(LC) {
            None => {
                let fix = format!("add a `LambdaConfig` object under `Lambda` ({settings})");
                return self.error(LC, "is missing; it holds every job setting", fix);
            }
            Some(Value::Object(_)) => {}
            Some(other) => {
                let fix = format!("make it an object ({settings})");
                return self.error(LC, format!("must be an object, found {}", describe(other)), fix);
            }
        }
        self.ami();
        self.instance_type();
        self.command();
        self.iam_role();
        self.working_directory();
        self.ssm_timeout();
        self.key_name();
        self.security_groups();
        self.maxcost();
    }

    fn ami(&mut self) {
        let path = format!("{LC}.AMI");
        let why = "it is the image development instances and jobs start from";
        let Some(ami) = self.string(&path, Some((Severity::Error, why)), "\"ubuntu22\"") else { return };
        if is_ami_id(ami) {
            return;
        }
        if is_ami_alias(ami) {
            let message = format!(
                "{} is an alias: `launch_devinstance` can start from it, but deploying needs an image id",
                shown(ami)
            );
            let fix = "install the analysis on a development instance, save the image with \
                       `create_devami NAME`, then record it with `update_blueprint`";
            return self.warning(&path, message, fix);
        }
        let message = if ami.trim().is_empty() {
            "is empty".to_string()
        } else if is_placeholder(ami) {
            placeholder_message(ami)
        } else {
            format!(
                "{} is neither an image id (`ami-` and 8 or 17 hex digits) nor a known alias (`{}`)",
                shown(ami),
                AMI_ALIASES.join("`, `")
            )
        };
        self.error(&path, message, AMI_FIX);
    }

    fn instance_type(&mut self) {
        let path = format!("{LC}.INSTANCE_TYPE");
        let why = "development instances and jobs are launched with it";
        let Some(ty) = self.string(&path, Some((Severity::Error, why)), "\"t2.micro\"") else { return };
        let fix = "use an EC2 instance type such as `t2.micro` (CPU) or `p3.2xlarge` (GPU)";
        if ty.trim().is_empty() {
            self.error(&path, "is empty", fix);
        } else if is_placeholder(ty) {
            self.error(&path, placeholder_message(ty), fix);
        } else if !is_instance_type(ty) {
            self.error(
                &path,
                format!("{} is not shaped like an instance type (`family.size`)", shown(ty)),
                fix,
            );
        }
    }

    fn command(&mut self) {
        let path = format!("{LC}.COMMAND");
        let example = r#""cd /home/ubuntu; bash run.sh \"{}\" \"{}\" \"{}\" \"{}\"""#;
        let why = "jobs have nothing to run";
        let Some(command) = self.string(&path, Some((Severity::Error, why)), example) else { return };
        let usual = concat!(
            r#"pass the four job arguments as `"{}" "{}" "{}" "{}"`, "#,
            r#"e.g. `cd /home/ubuntu; bash run.sh "{}" "{}" "{}" "{}"`"#
        );
        if command.trim().is_empty() {
            return self.error(&path, "is empty; jobs have nothing to run", usual);
        }
        let fields = match placeholders(command) {
            Ok(fields) => fields,
            Err(message) => {
                return self.error(
                    &path,
                    format!("is not a valid Python format string: {message}"),
                    "use `{}` for the four job arguments and write literal braces as `{{` and `}}`",
                );
            }
        };
        for field in &fields {
            if let Placeholder::Named(name) = field {
                self.error(
                    &path,
                    format!(
                        "has the named field `{{{name}}}`: the job manager calls `.format` with positional \
                         arguments only, so every job fails with KeyError"
                    ),
                    "replace it with its literal value (e.g. your analysis script `\"./run.sh\"`), or write \
                     literal braces as `{{` and `}}`",
                );
            }
        }
        let n = positional_count(&fields);
        if n > JOB_ARGUMENTS {
            self.error(
                &path,
                format!(
                    "needs {n} positional arguments but the job manager passes only {JOB_ARGUMENTS} \
                     (bucket, dataset key, result directory, config key), so `.format` raises IndexError and \
                     every job is rejected"
                ),
                "keep exactly four `{}` and write anything else literally, e.g. a fixed 5th argument \
                 `\"./run_pca.sh\"`",
            );
        } else if n == 0 {
            if !fields.iter().any(|f| matches!(f, Placeholder::Named(_))) {
                self.warning(
                    &path,
                    "has no `{}` placeholders, so jobs never see the submitted dataset or config",
                    usual,
                );
            }
        } else if n < JOB_ARGUMENTS {
            let legacy = if n == 3 { " (the legacy 3-argument form)" } else { "" };
            let dropped = ["bucket", "dataset key", "result directory", "config key"][n..].join(", ");
            self.warning(
                &path,
                format!(
                    "uses {n} of the {JOB_ARGUMENTS} job arguments{legacy}, so the job never gets the \
                     {dropped}"
                ),
                "add a fourth `\"{}\"` for the config key and read it in your script",
            );
        }
    }

    fn iam_role(&mut self) {
        let path = format!("{LC}.IAM_ROLE");
        let why = "instances need this instance profile to receive commands through SSM";
        let Some(role) = self.string(&path, Some((Severity::Error, why)), "\"SSMRole\"") else { return };
        let fix = "use the instance profile that lets SSM manage instances, usually `SSMRole`";
        if role.trim().is_empty() {
            self.error(&path, "is empty", fix);
        } else if is_placeholder(role) {
            self.error(&path, placeholder_message(role), fix);
        }
    }

    fn working_directory(&mut self) {
        let path = format!("{LC}.WORKING_DIRECTORY");
        let why = "SSM starts every job command in it";
        let Some(dir) = self.string(&path, Some((Severity::Error, why)), "\"~\"") else { return };
        if !(dir.starts_with('/') || dir.starts_with('~')) {
            let shown = if dir.is_empty() {
                "is empty".to_string()
            } else {
                format!("{} is a relative path", shown(dir))
            };
            self.warning(
                &path,
                format!("{shown}; SSM resolves it against a directory you do not control"),
                "use an absolute path such as `/home/ubuntu` or a home path such as `~/bin`",
            );
        }
    }

    fn ssm_timeout(&mut self) {
        let path = format!("{LC}.SSM_TIMEOUT");
        if self.get(&path).is_none() {
            return self.error(
                &path,
                "is missing; `submit_job` passes it to SSM as the command's execution timeout",
                format!("add `\"SSM_TIMEOUT\": {SSM_TIMEOUT_USUAL}` under `{LC}` (seconds, the usual value)"),
            );
        }
        if let Err(Error::BlueprintKey { problem, .. }) = self.bp.ssm_timeout() {
            self.error(
                &path,
                problem,
                format!(
                    "set it to a whole number of seconds from 1 to {SSM_TIMEOUT_MAX}, usually \
                     `{SSM_TIMEOUT_USUAL}`"
                ),
            );
        }
    }

    fn key_name(&mut self) {
        let path = format!("{LC}.KEY_NAME");
        let why = "development instances launch without an ssh key pair, so `ssh` cannot reach them";
        self.string(&path, Some((Severity::Warning, why)), "\"testkeystack-custom-dev-key-pair\"");
    }

    fn security_groups(&mut self) {
        let path = format!("{LC}.SECURITY_GROUPS");
        let example = "\"testsgstack-SecurityGroupDev-1NQJIDBJG16KK\"";
        match self.get(&path) {
            None => self.warning(
                &path,
                "is missing; instances launch in a default security group, which may block ssh",
                format!("add `\"SECURITY_GROUPS\": {example}` under `{LC}` (one security group name)"),
            ),
            Some(Value::String(_)) => {}
            Some(Value::Array(items)) if items.iter().any(Value::is_string) => {
                let first = self.bp.security_groups().unwrap_or_default();
                self.warning(
                    &path,
                    format!(
                        "is a list; NeuroCAAS tools take one security group name (devami uses the first, \
                         `{first}`)"
                    ),
                    format!("write the one name as a string: `\"SECURITY_GROUPS\": \"{first}\"`"),
                );
            }
            Some(other) => self.error(
                &path,
                format!("must be a security group name (a string), found {}", describe(other)),
                format!("write it as `\"SECURITY_GROUPS\": {example}`"),
            ),
        }
    }

    fn maxcost(&mut self) {
        let path = format!("{LC}.MAXCOST");
        let numeric = match self.get(&path) {
            None | Some(Value::Number(_)) => true,
            Some(Value::String(s)) => s.trim().parse::<f64>().is_ok_and(f64::is_finite),
            Some(_) => false,
        };
        if !numeric {
            let shown = self.get(&path).map(describe).unwrap_or_default();
            self.warning(
                &path,
                format!(
                    "is {shown}, not a number, so the job manager cannot compare projected costs with it"
                ),
                "set it to a budget in dollars such as `\"300\"`",
            );
        }
    }

    fn ux_data(&mut self) {
        let example = concat!(
            r#"`"Affiliates": [{"AffiliateName": "debuggers", "#,
            r#""UserNames": ["dummyuser"], "UserInput": true}]`"#
        );
        match self.get("UXData") {
            None => {
                return self.warning(
                    "UXData",
                    "is missing; deploying needs it to know which groups may use the analysis",
                    format!("add a `UXData` object with {example}"),
                );
            }
            Some(Value::Object(_)) => {}
            Some(other) => {
                let message = format!("must be an object, found {}", describe(other));
                return self.error("UXData", message, format!("make it an object with {example}"));
            }
        }
        const A: &str = "UXData.Affiliates";
        let items = match self.get(A) {
            None => {
                return self.warning(
                    A,
                    "is missing, so no group can use the analysis once deployed",
                    format!("add {example} under `UXData`"),
                );
            }
            Some(Value::Array(items)) => items,
            Some(other) => {
                let message = match other {
                    Value::String(s) if is_placeholder(s) => placeholder_message(s),
                    _ => format!("must be a list of affiliate objects, found {}", describe(other)),
                };
                return self.error(A, message, format!("write it as {example}"));
            }
        };
        let mut seen = HashSet::new();
        for (i, item) in items.iter().enumerate() {
            let path = format!("{A}[{i}]");
            if !item.is_object() {
                let message = format!(
                    "must be an object with `AffiliateName`, `UserNames` and `UserInput`, found {}",
                    describe(item)
                );
                self.error(&path, message, format!("write it like the entries of {example}"));
                continue;
            }
            self.affiliate(&path, &mut seen);
        }
    }

    fn affiliate(&mut self, path: &str, seen: &mut HashSet<&'a str>) {
        let name_path = format!("{path}.AffiliateName");
        let why = "it is the group's name and its folder in the analysis bucket";
        if let Some(name) = self.string(&name_path, Some((Severity::Error, why)), "\"debuggers\"") {
            let rule = "group names are S3 prefixes: lowercase letters, digits and dashes";
            if is_placeholder(name) {
                self.error(
                    &name_path,
                    placeholder_message(name),
                    format!("use a group name such as `debuggers`; {rule}"),
                );
            } else if let Some(problem) = affiliate_name_problem(name) {
                self.error(
                    &name_path,
                    format!("{} {problem}", shown(name)),
                    format!("use a name like `{}`; {rule}", suggest_name(name)),
                );
            } else if !seen.insert(name) {
                self.warning(
                    &name_path,
                    format!("{} is listed twice", shown(name)),
                    "merge the two entries into one",
                );
            }
        }
        let users_path = format!("{path}.UserNames");
        let users_fix = "write it as a list of IAM user names, e.g. `\"UserNames\": [\"dummyuser\"]`";
        match self.get(&users_path) {
            None => {
                self.error(&users_path, "is missing; deploying creates the group's users from it", users_fix)
            }
            Some(Value::Array(users)) => {
                for (j, user) in users.iter().enumerate() {
                    if !user.is_string() {
                        let message = format!("must be a user name (a string), found {}", describe(user));
                        self.error(&format!("{users_path}[{j}]"), message, users_fix);
                    }
                }
            }
            Some(other) => {
                let message = match other {
                    Value::String(s) if is_placeholder(s) => placeholder_message(s),
                    _ => format!("must be a list of user names, found {}", describe(other)),
                };
                self.error(&users_path, message, users_fix);
            }
        }
        let input_path = format!("{path}.UserInput");
        match self.get(&input_path) {
            None | Some(Value::Bool(_)) => {}
            Some(other) => {
                let message = match other {
                    Value::String(s) if is_placeholder(s) => placeholder_message(s),
                    _ => format!("must be `true` or `false`, found {}", describe(other)),
                };
                self.error(
                    &input_path,
                    message,
                    "write `true` (the group may upload its own data) or `false`",
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A blueprint with nothing to report.
    fn valid() -> Value {
        json!({
            "PipelineName": "demo-analysis",
            "REGION": "us-east-1",
            "STAGE": "webdev",
            "Lambda": {
                "CodeUri": "../../protocols",
                "Handler": "submit_start.handler_develop",
                "Launch": true,
                "LambdaConfig": {
                    "AMI": "ami-0123456789abcdef0",
                    "INSTANCE_TYPE": "t2.micro",
                    "REGION": "us-east-1",
                    "IAM_ROLE": "SSMRole",
                    "KEY_NAME": "testkeystack-custom-dev-key-pair",
                    "SECURITY_GROUPS": "testsgstack-SecurityGroupDev-1NQJIDBJG16KK",
                    "WORKING_DIRECTORY": "/home/ubuntu",
                    "COMMAND": "cd /home/ubuntu; bash run.sh \"{}\" \"{}\" \"{}\" \"{}\"",
                    "EXECUTION_TIMEOUT": 180,
                    "SSM_TIMEOUT": 172000,
                    "MAXCOST": "300"
                }
            },
            "UXData": {"Affiliates": [{
                "AffiliateName": "debuggers",
                "UserNames": ["dummyuser"],
                "UserInput": true,
                "ContactEmail": "NOTE: KEEP THIS AFFILIATE TO ENABLE EASY TESTING"
            }]}
        })
    }

    fn check_doc(doc: &Value) -> Vec<Finding> {
        check(&Blueprint::from_text(PathBuf::from("blueprints/demo"), doc.to_string()).expect("an object"))
    }

    /// The findings after `edit` changes the valid blueprint.
    fn with(edit: impl FnOnce(&mut Value)) -> Vec<Finding> {
        let mut doc = valid();
        edit(&mut doc);
        check_doc(&doc)
    }

    fn lc(doc: &mut Value) -> &mut serde_json::Map<String, Value> {
        doc["Lambda"]["LambdaConfig"].as_object_mut().unwrap()
    }

    fn set(key: &'static str, value: Value) -> impl FnOnce(&mut Value) {
        move |doc| {
            lc(doc).insert(key.to_string(), value);
        }
    }

    fn remove(key: &'static str) -> impl FnOnce(&mut Value) {
        move |doc| {
            lc(doc).shift_remove(key);
        }
    }

    /// Asserts one finding with this severity and path whose message contains `needle`.
    #[track_caller]
    fn has(findings: &[Finding], severity: Severity, path: &str, needle: &str) {
        let found = findings
            .iter()
            .any(|f| f.severity == severity && f.json_path == path && f.message.contains(needle));
        assert!(found, "no {severity:?} at `{path}` containing {needle:?} in:\n{findings:#?}");
    }

    #[track_caller]
    fn only(findings: &[Finding], severity: Severity, path: &str, needle: &str) {
        has(findings, severity, path, needle);
        assert_eq!(findings.len(), 1, "{findings:#?}");
    }

    const E: Severity = Severity::Error;
    const W: Severity = Severity::Warning;
    const AMI: &str = "Lambda.LambdaConfig.AMI";
    const CMD: &str = "Lambda.LambdaConfig.COMMAND";

    #[test]
    fn a_sound_blueprint_has_no_findings() {
        assert_eq!(check_doc(&valid()), vec![]);
    }

    #[test]
    fn ami_placeholders_are_errors() {
        for text in ["instance id", "your ami here", ""] {
            let f = with(set("AMI", json!(text)));
            only(&f, E, AMI, if text.is_empty() { "is empty" } else { "placeholder text" });
            assert!(f[0].fix.contains("create_devami") && f[0].fix.contains("update_blueprint"), "{f:#?}");
        }
        only(&with(set("AMI", json!("instance id"))), E, AMI, "placeholder text \"instance id\" left in");
    }

    #[test]
    fn ami_must_be_an_image_id_or_alias() {
        for bad in
            ["ami-123", "ami-0123456789ABCDEF0", "ami-0123456789abcdef", "i-0123456789abcdef0", "ubuntu"]
        {
            only(&with(set("AMI", json!(bad))), E, AMI, "is neither an image id");
        }
        assert_eq!(with(set("AMI", json!("ami-07ebfd5b"))), vec![]);
        only(&with(set("AMI", json!(7))), E, AMI, "must be a string, found a number (7)");
        only(&with(remove("AMI")), E, AMI, "is missing");
    }

    #[test]
    fn an_ami_alias_is_only_a_warning_pointing_at_update_blueprint() {
        for alias in AMI_ALIASES {
            let f = with(set("AMI", json!(alias)));
            only(&f, W, AMI, "is an alias");
            assert!(f[0].message.contains("deploying needs an image id"));
            assert!(f[0].fix.contains("`create_devami NAME`") && f[0].fix.contains("`update_blueprint`"));
        }
    }

    #[test]
    fn descriptive_text_in_top_level_keys_is_an_error() {
        let f =
            with(|d| d["PipelineName"] = json!("bucket name. must be lowercase alphanumeric (dashes okay)"));
        only(&f, E, "PipelineName", "placeholder text \"bucket name. must be lowercase");
        let f = with(set("INSTANCE_TYPE", json!("your instance type here.")));
        only(&f, E, "Lambda.LambdaConfig.INSTANCE_TYPE", "placeholder text");
        let f = with(|d| d["REGION"] = json!("region to deploy in"));
        only(&f, E, "REGION", "placeholder text");
        let f = with(|d| d["STAGE"] = json!("develop or deploy"));
        only(&f, E, "STAGE", "placeholder text \"develop or deploy\"");
        let f = with(set("IAM_ROLE", json!("your role here")));
        only(&f, E, "Lambda.LambdaConfig.IAM_ROLE", "placeholder text");
    }

    #[test]
    fn affiliate_placeholders_are_errors() {
        let f = with(|d| {
            d["UXData"]["Affiliates"][0] = json!({
                "AffiliateName": "name of the group",
                "UserNames": "[list of strings describing user names]",
                "UserInput": "boolean: may they upload data?"
            })
        });
        has(&f, E, "UXData.Affiliates[0].AffiliateName", "placeholder text");
        has(
            &f,
            E,
            "UXData.Affiliates[0].UserNames",
            "placeholder text \"[list of strings describing user names]\"",
        );
        has(&f, E, "UXData.Affiliates[0].UserInput", "placeholder text");
        assert_eq!(f.len(), 3, "{f:#?}");
    }

    #[test]
    fn command_missing_or_empty_is_an_error() {
        only(&with(remove("COMMAND")), E, CMD, "is missing");
        only(&with(set("COMMAND", json!("  "))), E, CMD, "is empty");
        only(&with(set("COMMAND", json!(["bash", "run.sh"]))), E, CMD, "must be a string, found a list");
    }

    #[test]
    fn command_format_errors_use_pythons_message() {
        let f = with(set("COMMAND", json!("bash run.sh \"{}\" \"{}\" \"{}\" \"{}\" }")));
        only(&f, E, CMD, "is not a valid Python format string: Single '}' encountered in format string");
        let f = with(set("COMMAND", json!("bash run.sh {} {} {} {3}")));
        only(&f, E, CMD, "cannot switch from automatic field numbering to manual field specification");
        let f = with(set("COMMAND", json!("bash run.sh {} {} {} {")));
        only(&f, E, CMD, "Single '{' encountered");
    }

    #[test]
    fn command_named_fields_are_errors() {
        let cmd = r#"neurocaas_contrib/run_main_cli.sh "{}" "{}" "{}" "{}" "{write analysis_script_here}""#;
        let f = with(set("COMMAND", json!(cmd)));
        only(&f, E, CMD, "named field `{write analysis_script_here}`");
        assert!(f[0].message.contains("KeyError"));
        only(&with(set("COMMAND", json!("echo {data}"))), E, CMD, "KeyError");
    }

    #[test]
    fn command_with_more_than_four_positional_arguments_is_rejected() {
        let f = with(set("COMMAND", json!("/home/ubuntu/bin/run.sh {} {} {} {} {} {} {} {}")));
        only(&f, E, CMD, "needs 8 positional arguments but the job manager passes only 4");
        assert!(f[0].message.contains("IndexError"));
        only(&with(set("COMMAND", json!("run.sh {0} {1} {2} {4}"))), E, CMD, "needs 5 positional");
    }

    #[test]
    fn command_with_fewer_than_four_placeholders_is_a_warning() {
        let f = with(set("COMMAND", json!("cd /home/ubuntu; bin/run.sh \"{}\" \"{}\" \"{}\"")));
        only(&f, W, CMD, "uses 3 of the 4 job arguments (the legacy 3-argument form)");
        assert!(f[0].message.contains("the job never gets the config key"));
        only(&with(set("COMMAND", json!("run.sh {}"))), W, CMD, "dataset key, result directory, config key");
    }

    #[test]
    fn command_without_placeholders_is_a_warning() {
        only(
            &with(set("COMMAND", json!("bash run.sh; echo {{literal}}"))),
            W,
            CMD,
            "has no `{}` placeholders",
        );
    }

    #[test]
    fn the_usual_command_shapes_pass() {
        for cmd in [
            r#"cd /home/ubuntu; bash run.sh "{}" "{}" "{}" "{}"; . neurocaas_contrib/ncap_utils/workflow.sh; cleanup"#,
            concat!(
                r#"ls; cd /home/ubuntu; neurocaas_contrib/run_main_cli.sh "{}" "{}" "{}" "{}" "#,
                r#""./run_pca.sh"; "#,
                ". neurocaas_contrib/ncap_utils/workflow.sh; cleanup"
            ),
            "cd /home/ubuntu; neurocaas_contrib/run_main_loca.sh {} {} {} {}; cleanup",
            r#"run.sh "{0}" "{1}" "{2}" "{3}""#,
        ] {
            assert_eq!(with(set("COMMAND", json!(cmd))), vec![], "{cmd}");
        }
    }

    #[test]
    fn keys_the_development_loop_needs_are_errors_when_missing() {
        for key in ["AMI", "INSTANCE_TYPE", "COMMAND", "IAM_ROLE", "WORKING_DIRECTORY", "SSM_TIMEOUT"] {
            let path = format!("Lambda.LambdaConfig.{key}");
            only(&with(remove(key)), E, &path, "is missing");
        }
        only(
            &with(|d| d.as_object_mut().unwrap().shift_remove("PipelineName").map(drop).unwrap()),
            E,
            "PipelineName",
            "is missing",
        );
        let f = with(remove("SSM_TIMEOUT"));
        assert!(f[0].fix.contains("172000"), "{f:#?}");
        assert!(f[0].message.contains("submit_job"), "{f:#?}");
    }

    #[test]
    fn missing_lambda_sections_are_one_error_each() {
        only(&with(|d| d["Lambda"] = json!({"Handler": "x"})), E, "Lambda.LambdaConfig", "is missing");
        only(
            &with(|d| d["Lambda"]["LambdaConfig"] = json!([])),
            E,
            "Lambda.LambdaConfig",
            "must be an object",
        );
        let f = with(|d| drop(d.as_object_mut().unwrap().shift_remove("Lambda")));
        only(&f, E, "Lambda", "is missing");
        only(&with(|d| d["Lambda"] = json!("x")), E, "Lambda", "must be an object, found a string");
    }

    #[test]
    fn optional_launch_keys_are_warnings_when_missing() {
        only(&with(remove("KEY_NAME")), W, "Lambda.LambdaConfig.KEY_NAME", "is missing");
        only(&with(remove("SECURITY_GROUPS")), W, "Lambda.LambdaConfig.SECURITY_GROUPS", "is missing");
        only(&with(|d| drop(d.as_object_mut().unwrap().shift_remove("REGION"))), W, "REGION", "is missing");
        let f = with(|d| {
            d.as_object_mut().unwrap().shift_remove("REGION");
            lc(d).shift_remove("REGION");
        });
        only(&f, W, "REGION", "falls back to the region of your AWS configuration");
        only(&with(set("KEY_NAME", json!(3))), E, "Lambda.LambdaConfig.KEY_NAME", "must be a string");
    }

    #[test]
    fn security_groups_as_a_list_is_a_warning_and_other_types_an_error() {
        let f = with(set("SECURITY_GROUPS", json!(["sg-dev", "sg-other"])));
        only(&f, W, "Lambda.LambdaConfig.SECURITY_GROUPS", "devami uses the first, `sg-dev`");
        only(
            &with(set("SECURITY_GROUPS", json!(5))),
            E,
            "Lambda.LambdaConfig.SECURITY_GROUPS",
            "found a number",
        );
        only(
            &with(set("SECURITY_GROUPS", json!([]))),
            E,
            "Lambda.LambdaConfig.SECURITY_GROUPS",
            "found a list",
        );
    }

    #[test]
    fn ssm_timeout_must_be_a_positive_integer_within_the_aws_limit() {
        let path = "Lambda.LambdaConfig.SSM_TIMEOUT";
        only(&with(set("SSM_TIMEOUT", json!(0))), E, path, "at least 1 second");
        only(&with(set("SSM_TIMEOUT", json!(-10))), E, path, "whole number of seconds");
        only(&with(set("SSM_TIMEOUT", json!(2.5))), E, path, "whole number of seconds");
        only(&with(set("SSM_TIMEOUT", json!("forever"))), E, path, "whole number of seconds");
        only(&with(set("SSM_TIMEOUT", json!(172801))), E, path, "at most 172800 seconds");
        assert_eq!(with(set("SSM_TIMEOUT", json!("172000"))), vec![]);
        assert_eq!(with(set("SSM_TIMEOUT", json!(172800))), vec![]);
    }

    #[test]
    fn pipeline_name_must_be_a_valid_bucket_name() {
        let cases = [
            ("DLC-web", "uppercase letter `D`"),
            ("dlc_web", "character `_`"),
            ("ab", "has 2 characters"),
            (&"a".repeat(64), "has 64 characters"),
            ("-dlc", "must start and end"),
            ("dlc-", "must start and end"),
            ("192.168.5.4", "IP address"),
            ("dlc..web", "two dots"),
            ("xn--dlc", "starts with `xn--`"),
            ("dlc-s3alias", "ends with `-s3alias`"),
            ("dlc--ol-s3", "ends with `--ol-s3`"),
        ];
        for (name, needle) in cases {
            only(&with(|d| d["PipelineName"] = json!(name)), E, "PipelineName", needle);
        }
        let f = with(|d| d["PipelineName"] = json!("DLC_Web"));
        assert!(f[0].fix.contains("`dlc-web`"), "{f:#?}");
    }

    #[test]
    fn a_dot_in_pipeline_name_breaks_the_neurocaas_build_scripts() {
        let f = with(|d| d["PipelineName"] = json!("dlc.web"));
        only(&f, E, "PipelineName", "^[a-z0-9-]+$");
    }

    #[test]
    fn template_pipeline_name_is_a_warning() {
        only(&with(|d| d["PipelineName"] = json!("templatestack")), W, "PipelineName", "templatestack");
    }

    #[test]
    fn regions_must_agree() {
        let f = with(set("REGION", json!("us-west-2")));
        only(
            &f,
            E,
            "Lambda.LambdaConfig.REGION",
            "`us-west-2` disagrees with the top-level `REGION` (`us-east-1`)",
        );
    }

    #[test]
    fn regions_must_be_shaped_like_aws_regions() {
        for bad in ["us-east", "US-EAST-1", "useast1", "us-east-1a", "east-1"] {
            only(&with(|d| d["REGION"] = json!(bad)), E, "REGION", "is not an AWS region name");
        }
        for good in ["eu-central-1", "us-gov-west-1", "ap-southeast-2"] {
            assert_eq!(
                with(|d| {
                    d["REGION"] = json!(good);
                    lc(d).insert("REGION".into(), json!(good));
                }),
                vec![]
            );
        }
    }

    #[test]
    fn instance_type_must_be_family_dot_size() {
        let path = "Lambda.LambdaConfig.INSTANCE_TYPE";
        only(&with(set("INSTANCE_TYPE", json!(""))), E, path, "is empty");
        for bad in ["t2micro", "t2.", ".micro", "T2.micro", "t2.micro.x"] {
            only(&with(set("INSTANCE_TYPE", json!(bad))), E, path, "not shaped like an instance type");
        }
        for good in ["p3.2xlarge", "g4dn.12xlarge", "c7i.metal-24xl", "u-6tb1.metal"] {
            assert_eq!(with(set("INSTANCE_TYPE", json!(good))), vec![], "{good}");
        }
    }

    #[test]
    fn affiliates_must_be_a_list_of_objects() {
        only(
            &with(|d| d["UXData"]["Affiliates"] = json!({"a": 1})),
            E,
            "UXData.Affiliates",
            "must be a list",
        );
        let f = with(|d| d["UXData"]["Affiliates"] = json!(["debuggers"]));
        only(&f, E, "UXData.Affiliates[0]", "must be an object");
    }

    #[test]
    fn affiliate_fields_are_checked() {
        let aff = |field: &'static str, value: Value| {
            move |d: &mut Value| {
                d["UXData"]["Affiliates"][0][field] = value;
            }
        };
        let p = "UXData.Affiliates[0]";
        only(&with(aff("AffiliateName", json!(3))), E, &format!("{p}.AffiliateName"), "must be a string");
        only(
            &with(aff("AffiliateName", json!("Debug_Group"))),
            E,
            &format!("{p}.AffiliateName"),
            "character `D`",
        );
        only(
            &with(aff("AffiliateName", json!("-x"))),
            E,
            &format!("{p}.AffiliateName"),
            "starts or ends with a dash",
        );
        only(&with(aff("UserNames", json!("dummyuser"))), E, &format!("{p}.UserNames"), "must be a list");
        only(
            &with(aff("UserNames", json!(["a", 2]))),
            E,
            &format!("{p}.UserNames[1]"),
            "must be a user name",
        );
        only(
            &with(aff("UserInput", json!("true"))),
            E,
            &format!("{p}.UserInput"),
            "must be `true` or `false`",
        );
        let f = with(|d| {
            drop(d["UXData"]["Affiliates"][0].as_object_mut().unwrap().shift_remove("AffiliateName"))
        });
        only(&f, E, &format!("{p}.AffiliateName"), "is missing");
        let f = with(|d| {
            let first = d["UXData"]["Affiliates"][0].clone();
            d["UXData"]["Affiliates"].as_array_mut().unwrap().push(first);
        });
        only(&f, W, "UXData.Affiliates[1].AffiliateName", "listed twice");
    }

    #[test]
    fn stage_missing_is_a_warning_and_unknown_an_error() {
        let f = with(|d| drop(d.as_object_mut().unwrap().shift_remove("STAGE")));
        only(&f, W, "STAGE", "`build.sh` cannot deploy");
        only(&with(|d| d["STAGE"] = json!("deploy")), E, "STAGE", "`deploy` is not a stage");
        let f = with(|d| d["STAGE"] = json!("WebDev"));
        only(&f, E, "STAGE", "is not a stage");
        assert!(f[0].fix.contains("`webdev`"));
        for stage in STAGES {
            assert_eq!(with(|d| d["STAGE"] = json!(stage)), vec![]);
        }
    }

    #[test]
    fn working_directory_should_be_absolute_or_home() {
        let path = "Lambda.LambdaConfig.WORKING_DIRECTORY";
        only(&with(set("WORKING_DIRECTORY", json!("bin"))), W, path, "`bin` is a relative path");
        only(&with(set("WORKING_DIRECTORY", json!(""))), W, path, "is empty");
        assert_eq!(with(set("WORKING_DIRECTORY", json!("/home/ubuntu"))), vec![]);
        assert_eq!(with(set("WORKING_DIRECTORY", json!("~/bin"))), vec![]);
    }

    #[test]
    fn maxcost_should_be_numeric() {
        let path = "Lambda.LambdaConfig.MAXCOST";
        only(&with(set("MAXCOST", json!("three hundred dollars"))), W, path, "not a number");
        only(&with(set("MAXCOST", json!(true))), W, path, "not a number");
        assert_eq!(with(set("MAXCOST", json!(300))), vec![]);
        assert_eq!(with(set("MAXCOST", json!("600"))), vec![]);
        assert_eq!(with(remove("MAXCOST")), vec![]);
    }

    #[test]
    fn ux_data_missing_is_a_warning() {
        only(&with(|d| drop(d.as_object_mut().unwrap().shift_remove("UXData"))), W, "UXData", "is missing");
        only(&with(|d| d["UXData"] = json!({})), W, "UXData.Affiliates", "is missing");
    }

    #[test]
    fn repeated_keys_are_a_warning() {
        let text = valid().to_string().replace("\"AMI\":", "\"AMI\":\"ami-11111111\",\"AMI\":");
        let f = check(&Blueprint::from_text(PathBuf::from("bp"), text).unwrap());
        only(&f, W, AMI, "is written more than once");
    }

    #[test]
    fn findings_come_errors_first_then_by_path() {
        let f = with(|d| {
            d.as_object_mut().unwrap().shift_remove("STAGE");
            lc(d).insert("AMI".into(), json!("ubuntu22"));
            lc(d).insert("SSM_TIMEOUT".into(), json!(0));
            d["PipelineName"] = json!("Bad_Name");
        });
        let order: Vec<(Severity, &str)> = f.iter().map(|f| (f.severity, f.json_path.as_str())).collect();
        assert_eq!(
            order,
            vec![(E, "Lambda.LambdaConfig.SSM_TIMEOUT"), (E, "PipelineName"), (W, AMI), (W, "STAGE")]
        );
    }

    #[test]
    fn fixtures_of_legacy_and_broken_shapes() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/blueprints");
        let f = check_dir(&dir.join("legacy-three-placeholders"));
        has(&f, W, CMD, "legacy 3-argument form");
        has(&f, W, "STAGE", "is missing");
        assert!(f.iter().all(|f| f.severity == W), "{f:#?}");
        has(&check_dir(&dir.join("eight-placeholders")), E, CMD, "needs 8 positional arguments");
        let f = check_dir(&dir.join("named-field"));
        has(&f, E, CMD, "{write analysis_script_here}");
        has(&f, W, "PipelineName", "templatestack");
        has(&check_dir(&dir.join("missing-ssm-timeout")), E, "Lambda.LambdaConfig.SSM_TIMEOUT", "is missing");
        let f = check_dir(&dir.join("template-placeholders"));
        for path in
            ["PipelineName", AMI, "Lambda.LambdaConfig.INSTANCE_TYPE", "UXData.Affiliates[0].UserNames"]
        {
            has(&f, E, path, "placeholder text");
        }
    }

    #[test]
    fn example_blueprints_pass_without_errors() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("blueprints");
        let mut checked = 0;
        for entry in std::fs::read_dir(&root).unwrap() {
            let dir = entry.unwrap().path();
            if dir.join(crate::blueprint::BLUEPRINT_FILE).is_file() {
                let f = check_dir(&dir);
                assert!(f.iter().all(|f| f.severity == W), "{}:\n{}", dir.display(), render(&dir, &f));
                checked += 1;
            }
        }
        assert!(checked >= 3, "only {checked} example blueprints");
    }

    #[test]
    fn a_load_error_is_one_finding() {
        let tmp = tempfile::tempdir().unwrap();
        let f = check_dir(tmp.path());
        assert_eq!(f.len(), 1);
        assert_eq!((f[0].severity, f[0].json_path.as_str()), (E, ""));
        assert!(f[0].message.contains("no blueprint in"), "{f:#?}");
        std::fs::write(tmp.path().join(crate::blueprint::BLUEPRINT_FILE), "[]").unwrap();
        let f = check_dir(tmp.path());
        assert_eq!(f[0].json_path, "(top level)");
        std::fs::write(tmp.path().join(crate::blueprint::BLUEPRINT_FILE), "{,}").unwrap();
        assert!(check_dir(tmp.path())[0].message.contains("line 1, column 2"));
        // The reason is kept: `could not read ...: Is a directory`.
        std::fs::remove_file(tmp.path().join(crate::blueprint::BLUEPRINT_FILE)).unwrap();
        std::fs::create_dir(tmp.path().join(crate::blueprint::BLUEPRINT_FILE)).unwrap();
        let f = check_dir(tmp.path());
        assert!(
            f[0].message.starts_with("could not read") && f[0].message.contains(": Is a directory"),
            "{f:#?}"
        );
    }

    #[test]
    fn findings_quote_huge_and_hostile_values_shortly() {
        let f = with(|d| {
            lc(d).insert("AMI".into(), json!("x".repeat(1 << 20)));
            lc(d).insert("INSTANCE_TYPE".into(), json!("\u{1b}[2J"));
        });
        let out = render(Path::new("b"), &f);
        assert!(out.contains("more characters) is neither an image id"), "{}", &out[..out.len().min(500)]);
        assert!(out.len() < 2000 && !out.contains('\u{1b}'), "{}", &out[..out.len().min(500)]);
    }

    #[test]
    fn render_prints_one_line_per_finding_and_a_verdict() {
        let dir = Path::new("blueprints/x");
        let f = with(|d| {
            lc(d).insert("AMI".into(), json!("instance id"));
            d.as_object_mut().unwrap().shift_remove("STAGE");
        });
        let out = render(dir, &f);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert!(
            lines[0].starts_with(
                "error: Lambda.LambdaConfig.AMI: placeholder text \"instance id\" left in (fix: "
            )
        );
        assert!(lines[1].starts_with("warning: STAGE: is missing"));
        assert_eq!(lines[2], "blueprints/x: 1 error, 1 warning");
        assert_eq!(render(dir, &[]), "blueprints/x: ok, no errors or warnings");
        assert_eq!(
            render(dir, &with(remove("KEY_NAME"))).lines().last(),
            Some("blueprints/x: ok, 1 warning")
        );
        let load = Finding {
            severity: E,
            json_path: String::new(),
            message: "no blueprint".into(),
            fix: String::new(),
        };
        assert_eq!(render(dir, &[load]), "error: no blueprint\nblueprints/x: 1 error, 0 warnings");
    }

    #[test]
    fn render_summary_tabulates_folders() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/blueprints");
        let results: Vec<(PathBuf, Vec<Finding>)> = ["eight-placeholders", "legacy-three-placeholders"]
            .iter()
            .map(|n| (dir.join(n), check_dir(&dir.join(n))))
            .collect();
        let out = render_summary(&results);
        assert!(out.contains("PipelineName") && out.contains("verdict"), "{out}");
        assert!(out.contains("locanmf-ncap") && out.contains("test-ncap-legacy"), "{out}");
        assert!(out.contains("fail") && out.contains(" ok "), "{out}");
        assert!(out.ends_with("2 blueprints checked: 1 ok, 1 with errors"), "{out}");
    }

    #[test]
    fn ami_ids() {
        assert!(is_ami_id("ami-07ebfd5b3428b6f4d") && is_ami_id("ami-1234abcd") && !is_ami_id("ami-1234abc"));
    }
}
