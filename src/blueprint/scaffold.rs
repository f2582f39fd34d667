//! `devami init NAME`: a new blueprint folder that works right away.
//!
//! Where NeuroCAAS's `configure.sh` copied a template of placeholders to find and replace, `init`
//! writes the values the development loop starts from, and an example submit file. What it writes
//! passes `devami check` with one warning (the `ubuntu22` alias) and runs on the local backend at
//! once; the name follows [`blueprint_name_problem`]; nothing that exists is overwritten,
//! even in a race (`create_dir`, then new files only).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::atomic;
use crate::blueprint::BLUEPRINT_FILE;
use crate::blueprint::names::blueprint_name_problem;
use crate::blueprint::pyjson::to_python_json;
use crate::error::{Error, Result};

/// The folder of example files inside a blueprint folder.
pub const TEST_RESOURCES: &str = "test_resources";

/// The example submit file inside [`TEST_RESOURCES`].
pub const EXAMPLE_SUBMIT: &str = "exampledevsubmit.json";

/// Creates `parent/name` with a blueprint and an example submit file; returns the new folder.
///
/// Fails with [`Error::InvalidName`] unless `name` matches `^[a-z0-9-]+$`, has 3 to 63 characters
/// and starts and ends with a letter or digit; with [`Error::AlreadyExists`] when anything is
/// already at that path. If writing fails halfway, what was created is removed again.
pub fn init(name: &str, parent: &Path) -> Result<PathBuf> {
    if let Some(rule) = blueprint_name_problem(name) {
        return Err(Error::InvalidName { name: name.to_string(), rule });
    }
    // `init x` in the current folder shows `x`, not `./x`.
    let dir = if parent == Path::new(".") { PathBuf::from(name) } else { parent.join(name) };
    if fs::symlink_metadata(&dir).is_ok() {
        return Err(Error::AlreadyExists { path: dir });
    }
    match fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(Error::AlreadyExists { path: dir }),
        Err(e) => return Err(Error::io("create", dir, e)),
    }
    if let Err(e) = write_files(&dir, name) {
        let _ = fs::remove_file(dir.join(TEST_RESOURCES).join(EXAMPLE_SUBMIT));
        let _ = fs::remove_dir(dir.join(TEST_RESOURCES));
        let _ = fs::remove_file(dir.join(BLUEPRINT_FILE));
        let _ = fs::remove_dir(&dir);
        return Err(e);
    }
    Ok(dir)
}

/// What `init` wrote and what to do next.
pub fn render_created(path: &Path) -> String {
    let shown = path.display();
    let name = path.file_name().map_or_else(|| shown.to_string(), |n| n.to_string_lossy().into_owned());
    let submit = format!("{TEST_RESOURCES}/{EXAMPLE_SUBMIT}");
    let width = submit.len().max(BLUEPRINT_FILE.len());
    [
        format!("created blueprint `{shown}`:"),
        format!(
            "  {BLUEPRINT_FILE:<width$}  the blueprint: PipelineName `{name}`, AMI `ubuntu22` (an alias), \
             INSTANCE_TYPE `t2.micro`"
        ),
        format!("  {submit:<width$}  an example submit file for `submit_job`"),
        format!(
            "next: open it with `devami {shown}`, then run `launch_devinstance` to start a development \
             instance"
        ),
    ]
    .join("\n")
}

/// The blueprint `init` writes for `name`: the name as `PipelineName`, the `webdev` stage, the
/// `ubuntu22` alias as the image (which `update_blueprint` later replaces with a saved image id), a
/// `t2.micro`, the NeuroCAAS development key pair and security group, a `COMMAND` with the four
/// job arguments, and the `debuggers` test affiliate.
pub fn blueprint_value(name: &str) -> Value {
    json!({
        "PipelineName": name,
        "REGION": "us-east-1",
        "STAGE": "webdev",
        "Lambda": {
            "CodeUri": "../../protocols",
            "Handler": "submit_start.handler_develop",
            "Launch": true,
            "LambdaConfig": {
                "AMI": "ubuntu22",
                "INSTANCE_TYPE": "t2.micro",
                "REGION": "us-east-1",
                "IAM_ROLE": "SSMRole",
                "KEY_NAME": "testkeystack-custom-dev-key-pair",
                "SECURITY_GROUPS": "testsgstack-SecurityGroupDev-1NQJIDBJG16KK",
                "WORKING_DIRECTORY": "/home/ubuntu",
                "COMMAND": "cd /home/ubuntu; bash run.sh \"{}\" \"{}\" \"{}\" \"{}\"",
                "EXECUTION_TIMEOUT": 180,
                "SSM_TIMEOUT": 172000,
                "SHUTDOWN_BEHAVIOR": "terminate",
                "CONFIG": "config.yaml",
                "MISSING_CONFIG_ERROR": "We need a config file to analyze data.",
                "LOGFILE": "lambda_log.txt",
                "LAUNCH": true,
                "MONITOR": true,
                "DEPLOY_LIMIT": 100,
                "MAXCOST": "300"
            }
        },
        "UXData": {
            "Affiliates": [{
                "AffiliateName": "debuggers",
                "UserNames": ["dummyuser"],
                "UserInput": true,
                "ContactEmail": "NOTE: KEEP THIS AFFILIATE TO ENABLE EASY TESTING"
            }]
        }
    })
}

/// The example submit file `init` writes (`test_resources/exampledevsubmit.json`), for the first
/// `submit_job`.
pub fn example_submit_value() -> Value {
    json!({
        "dataname": "debuggers/inputs/datafile.txt",
        "configname": "debuggers/configs/config.yaml",
        "timestamp": "444:444:444"
    })
}

fn write_files(dir: &Path, name: &str) -> Result<()> {
    write_new(&dir.join(BLUEPRINT_FILE), &blueprint_value(name))?;
    let resources = dir.join(TEST_RESOURCES);
    fs::create_dir(&resources).map_err(|e| Error::io("create", &resources, e))?;
    write_new(&resources.join(EXAMPLE_SUBMIT), &example_submit_value())
}

/// Writes `value` as Python's `json.dump(indent=4)` would, plus a final newline, to a new file
/// ([`atomic::create_new`]).
fn write_new(path: &Path, value: &Value) -> Result<()> {
    let mut text = to_python_json(value, Some(4));
    text.push('\n');
    Ok(atomic::create_new(path, text.as_bytes())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blueprint::Blueprint;
    use crate::blueprint::lint::{self, Severity};

    #[test]
    fn init_writes_a_blueprint_that_checks_with_only_the_alias_warning() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = init("my-analysis", tmp.path()).unwrap();
        assert_eq!(dir, tmp.path().join("my-analysis"));
        let findings = lint::check_dir(&dir);
        assert!(findings.iter().all(|f| f.severity == Severity::Warning), "{findings:#?}");
        assert_eq!(findings.len(), 1, "{findings:#?}");
        assert_eq!(findings[0].json_path, "Lambda.LambdaConfig.AMI");

        let bp = Blueprint::open(&dir).unwrap();
        assert_eq!(bp.pipeline_name().unwrap(), "my-analysis");
        assert_eq!(bp.ami().unwrap(), "ubuntu22");
        assert_eq!(bp.ssm_timeout().unwrap(), 172000);
        assert_eq!(bp.affiliates(), vec!["debuggers".to_string()]);
        assert_eq!(bp.command().unwrap(), r#"cd /home/ubuntu; bash run.sh "{}" "{}" "{}" "{}""#);
    }

    #[test]
    fn init_writes_python_json_dump_style() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = init("abc", tmp.path()).unwrap();
        let text = fs::read_to_string(dir.join(BLUEPRINT_FILE)).unwrap();
        assert!(
            text.starts_with("{\n    \"PipelineName\": \"abc\",\n    \"REGION\": \"us-east-1\",\n"),
            "{text}"
        );
        assert!(text.contains(
            "\n            \"COMMAND\": \"cd /home/ubuntu; bash run.sh \\\"{}\\\" \\\"{}\\\" \\\"{}\\\" \\\"{}\\\"\",\n"
        ));
        assert!(
            text.contains("\"UserNames\": [\n                    \"dummyuser\"\n                ],"),
            "{text}"
        );
        assert!(text.ends_with("}\n"));
        let submit = fs::read_to_string(dir.join(TEST_RESOURCES).join(EXAMPLE_SUBMIT)).unwrap();
        assert_eq!(
            submit,
            "{\n    \"dataname\": \"debuggers/inputs/datafile.txt\",\n    \"configname\": \
             \"debuggers/configs/config.yaml\",\n    \"timestamp\": \"444:444:444\"\n}\n"
        );
    }

    #[test]
    fn bad_names_are_refused_and_nothing_is_created() {
        let tmp = tempfile::tempdir().unwrap();
        for name in [
            "My-Analysis",
            "my_analysis",
            "my analysis",
            "ab",
            "-abc",
            "abc-",
            "a.b.c",
            "",
            "../escape",
            "é-abc",
        ] {
            match init(name, tmp.path()) {
                Err(Error::InvalidName { name: n, .. }) => assert_eq!(n, name),
                other => panic!("{name:?}: {other:?}"),
            }
        }
        let message = |name: &str| init(name, tmp.path()).unwrap_err().to_string();
        assert!(message("My_Analysis").contains("use only lowercase letters, digits and dashes"));
        assert!(message(&"a".repeat(300)).contains("it has 300 characters, and a name has 3 to 63"));
        assert!(message("ab").contains("it has 2 characters"));
        assert!(
            message("-abc")
                .contains("it starts with a dash; a name starts and ends with a letter or a digit")
        );
        assert!(message("abc-").contains("it ends with a dash"));
        assert!(message("xn--abc").contains("it starts with `xn--`, a prefix S3 reserves"));
        assert!(message("abc-s3alias").contains("a suffix S3 reserves"));
        let shown = message("\u{1b}[2Jx");
        assert!(shown.starts_with("invalid blueprint name `\\u{1b}[2Jx`: use only"), "{shown}");
        assert!(init(&"a".repeat(64), tmp.path()).is_err());
        assert!(init(&"a".repeat(63), tmp.path()).is_ok());
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 1);
    }

    #[test]
    fn an_existing_folder_is_left_untouched() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("taken");
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("notes.txt"), "mine").unwrap();
        match init("taken", tmp.path()) {
            Err(Error::AlreadyExists { path }) => assert_eq!(path, dir),
            other => panic!("{other:?}"),
        }
        let names: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("notes.txt")]);
        assert_eq!(fs::read_to_string(dir.join("notes.txt")).unwrap(), "mine");
        fs::write(tmp.path().join("afile"), "x").unwrap();
        assert!(matches!(init("afile", tmp.path()), Err(Error::AlreadyExists { .. })));
        assert_eq!(fs::read_to_string(tmp.path().join("afile")).unwrap(), "x");
    }

    #[test]
    fn a_missing_parent_is_an_io_error() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(matches!(init("abc", &tmp.path().join("no/such")), Err(Error::Io { .. })));
    }

    #[test]
    fn render_created_names_the_files_and_the_next_step() {
        let out = render_created(Path::new("blueprints/my-analysis"));
        assert!(out.starts_with("created blueprint `blueprints/my-analysis`:\n"), "{out}");
        assert!(
            out.contains(BLUEPRINT_FILE) && out.contains("test_resources/exampledevsubmit.json"),
            "{out}"
        );
        assert!(
            out.contains("`devami blueprints/my-analysis`") && out.contains("`launch_devinstance`"),
            "{out}"
        );
        assert!(!out.ends_with('\n'));
    }
}
