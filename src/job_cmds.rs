//! Test jobs and the instance's shell: `submit_job`, `job_status`, `job_output`, `exec`, `ssh`.
//!
//! `submit_job` does what the original `submit_job_log` did (`neurocaas-protocol.md` §1.4): it
//! finds the dataset in the analysis bucket, fills the blueprint's COMMAND (`submit.rs`), sends it
//! as an AWS-RunShellScript command with the blueprint's working directory and SSM_TIMEOUT and
//! output under `debug_direct/`, and writes the dataset's INITIALIZING status object. The job is
//! recorded in the session at once. `job_status` and `job_output` read a job by Python-style
//! index (-1, the default, is the most recent).

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::Stdio;

use std::time::Duration;

use crate::backend::{BackendError, JobReport, JobSpec};
use crate::clock;
use crate::error::{Error, Result};
use crate::image_cmds::python_now;
use crate::interrupt;
use crate::output::Output;
use crate::parse::Args;
use crate::session::DevAmi;
use crate::state::JobRecord;
use crate::submit;
use crate::wait::{self, Probe};

/// Where the development loop's SSM output goes, as in the original.
pub const OUTPUT_PREFIX: &str = "debug_direct/";

/// The S3 key of a job's stdout or stderr.
pub fn output_key(command_id: &str, instance_id: &str, stream: &str) -> String {
    format!("{OUTPUT_PREFIX}{command_id}/{instance_id}/awsrunShellScript/0.awsrunShellScript/{stream}")
}

impl DevAmi {
    /// `submit_job(submitpath)` (also `submit_job_log`).
    pub(crate) fn cmd_submit(&mut self, a: &Args) -> Result<Output> {
        let path = a.str("submitpath").unwrap_or_default().to_string();
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io("read", &path, e))?;
        let sub = submit::parse_submit(Path::new(&path), &text)?;
        let bp = self.bp()?;
        let bucket = bp.pipeline_name()?.to_string();
        let template = bp.command()?.to_string();
        let wd = bp.working_directory()?.to_string();
        let timeout = bp.ssm_timeout()?;
        let instance = self.require_running()?;
        let mut lines = Vec::new();
        for dataname in &sub.datanames {
            let data_key = self.find_dataset(&bucket, dataname)?;
            let outdir = submit::result_dir(&python_now());
            let command = submit::fill_command(&template, &[&bucket, &data_key, &outdir, &sub.configname])?;
            self.console.print(&format!("sending command: {command} to instance {instance}"));
            let job = JobSpec {
                instance_id: instance.clone(),
                commands: vec![command],
                working_directory: wd.clone(),
                execution_timeout: timeout,
                output_bucket: bucket.clone(),
                output_prefix: OUTPUT_PREFIX.into(),
            };
            let cloud = self.cloud()?;
            let command_id = cloud.call("sending the command", cloud.backend.send_command(&job))?;
            let st = self.state_mut();
            st.jobs.push(JobRecord {
                command_id: command_id.clone(),
                instance_id: instance.clone(),
                submitted: clock::now(),
                dataset: Some(data_key.clone()),
                config: Some(sub.configname.clone()),
                result_dir: Some(outdir.clone()),
                last_status: Some("Pending".into()),
                exit_code: None,
            });
            self.persist()?;
            let key = submit::status_key(&data_key, &outdir)?;
            let body = submit::status_body(&data_key, &instance, &command_id).into_bytes();
            let cloud = self.cloud()?;
            cloud.call("writing the status object", cloud.backend.put_object(&bucket, &key, body))?;
            let index = self.state().jobs.len() - 1;
            lines.push(format!("job {index} submitted: command {command_id} on {data_key}"));
        }
        Ok(Output::text(lines.join("\n")))
    }

    /// The dataset key for `dataname`: the first object under that prefix, as the original did.
    fn find_dataset(&mut self, bucket: &str, dataname: &str) -> Result<String> {
        let cloud = self.cloud()?;
        let objects = cloud.call("listing the bucket", cloud.backend.list_objects(bucket, dataname))?;
        if let Some(o) = objects.iter().find(|o| !o.key.ends_with('/')) {
            return Ok(o.key.clone());
        }
        let all = cloud.call("listing the bucket", cloud.backend.list_objects(bucket, ""))?;
        let close: Vec<String> = closest(dataname, all.iter().map(|o| o.key.as_str()))
            .into_iter()
            .map(|k| format!("`{k}`"))
            .collect();
        let hint = if close.is_empty() {
            format!("upload it first, e.g. `upload LOCAL_FILE {dataname}`")
        } else {
            format!("closest keys: {}", close.join(", "))
        };
        Err(Error::Refused(format!("dataset `{dataname}` is not in bucket `{bucket}`; {hint}")))
    }

    fn job_record(&self, a: &Args) -> Result<(usize, JobRecord)> {
        let index = self.job_index(a.int("jobind").unwrap_or(-1))?;
        Ok((index, self.state().jobs[index].clone()))
    }

    /// `job_status(jobind=-1, wait=False)`.
    pub(crate) fn cmd_job_status(&mut self, a: &Args) -> Result<Output> {
        let (index, job) = self.job_record(a)?;
        let read = |s: &mut DevAmi| -> Result<JobReport> {
            let cloud = s.cloud()?;
            cloud.call("reading the job", cloud.backend.describe_command(&job.command_id, &job.instance_id))
        };
        let report = if a.bool("wait").unwrap_or(false) {
            let what = format!("job {index} ({}) to finish", job.command_id);
            let result = wait::poll(&what, Duration::from_secs(job_deadline(self)), || {
                let r = read(self)?;
                Ok(if r.state.is_final() { Probe::Done(r) } else { Probe::Pending(r.state.to_string()) })
            });
            if matches!(result, Err(Error::Interrupted)) {
                self.console.warn("stopped waiting; the job goes on (see `job_status`)");
            }
            result?
        } else {
            read(self)?
        };
        let rec = &mut self.state_mut().jobs[index];
        rec.last_status = Some(report.state.to_string());
        rec.exit_code = report.exit_code;
        let mut text = report.state.to_string();
        if report.state.is_final()
            && let Some(code) = report.exit_code
        {
            text.push_str(&format!(" (exit code {code})"));
        }
        if let Some(detail) = report.detail {
            text.push_str(&format!(": {detail}"));
        }
        Ok(Output::text(text))
    }

    /// `job_output(jobind=-1)`: the stdout and stderr objects SSM writes to the bucket; when they
    /// are not there (yet), the invocation record's truncated output, saying so.
    pub(crate) fn cmd_job_output(&mut self, a: &Args) -> Result<Output> {
        let (_, job) = self.job_record(a)?;
        let bucket = self.bp()?.pipeline_name()?.to_string();
        let mut found = Vec::new();
        for stream in ["stdout", "stderr"] {
            let key = output_key(&job.command_id, &job.instance_id, stream);
            let cloud = self.cloud()?;
            found.push(match cloud.call("reading the job output", cloud.backend.get_object(&bucket, &key)) {
                Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
                Err(Error::Backend { source: BackendError::NotFound { .. }, .. }) => Err(key),
                Err(e) => return Err(e),
            });
        }
        let mut note = None;
        if found.iter().any(|f| f.is_err()) {
            let cloud = self.cloud()?;
            let report = cloud
                .call("reading the job", cloud.backend.describe_command(&job.command_id, &job.instance_id))?;
            if let Some((out, err)) = report.inline_output {
                for (slot, inline) in found.iter_mut().zip([out, err]) {
                    if slot.is_err() && !inline.is_empty() {
                        *slot = Ok(inline);
                        note = Some(
                            "(from the command's invocation record, which keeps at most 24,000 characters of stdout and 8,000 of stderr; the full output lands in the bucket when the command ends)",
                        );
                    }
                }
            }
        }
        let mut parts = Vec::new();
        for (stream, got) in ["stdout", "stderr"].into_iter().zip(found) {
            let text = match got {
                Ok(t) => t.trim_end().to_string(),
                Err(key) => format!("{key} not found. may not be updated yet."),
            };
            match stream {
                "stdout" => parts.push(text),
                _ if text.is_empty() => {}
                _ => parts.push(format!("stderr:\n{text}")),
            }
        }
        if let Some(n) = note {
            parts.push(n.to_string());
        }
        Ok(Output::text(parts.join("\n").trim_end().to_string()))
    }

    /// `exec CMD`: runs a command in the instance, streaming its output.
    pub(crate) fn cmd_exec(&mut self, a: &Args) -> Result<Output> {
        let command = a.str("command").unwrap_or_default().to_string();
        let id = self.require_running()?;
        let wd = self.bp()?.working_directory().unwrap_or("~").to_string();
        let ip = self.state().ip.clone();
        let cloud = self.cloud()?;
        let mut cmd = cloud
            .backend
            .shell_command(&id, ip.as_deref(), &wd, Some(&command))
            .map_err(|source| Error::Backend { op: "preparing the command", source })?;
        cmd.env("DEVAMI_BLUEPRINT", self.blueprint_dir_abs()?);
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| Error::io("run", "the instance's shell", e))?;
        let stderr = child.stderr.take();
        let err_reader = std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut e) = stderr {
                let _ = e.read_to_string(&mut s);
            }
            s
        });
        if let Some(out) = child.stdout.take() {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                self.console.print(&line);
                if interrupt::pending() {
                    let _ = child.kill();
                    break;
                }
            }
        }
        let status = child.wait().map_err(|e| Error::io("run", "the instance's shell", e))?;
        let err_text = err_reader.join().unwrap_or_default();
        if !err_text.is_empty() {
            self.console.print(err_text.trim_end());
        }
        interrupt::check()?;
        match status.code() {
            Some(0) => Ok(Output::Empty),
            Some(code) => {
                Err(Error::Refused(format!("`{command}` exited with status {code} on instance {id}")))
            }
            None => Err(Error::Refused(format!("`{command}` was killed by a signal on instance {id}"))),
        }
    }

    /// The blueprint folder's absolute path: `$DEVAMI_BLUEPRINT` in `exec` and `ssh` (not in jobs),
    /// so files of the blueprint's repository can be copied into the instance, as one would
    /// `git clone` them on a cloud machine.
    fn blueprint_dir_abs(&self) -> Result<std::path::PathBuf> {
        let dir = self.bp()?.dir();
        std::fs::canonicalize(dir).map_err(|e| Error::io("read", dir, e))
    }

    /// `ssh`: an interactive shell in the instance.
    pub(crate) fn cmd_ssh(&mut self) -> Result<Output> {
        if !self.options().interactive {
            return Err(Error::Refused("`ssh` needs a terminal; in scripts use `exec CMD`".into()));
        }
        let id = self.require_running()?;
        let wd = self.bp()?.working_directory().unwrap_or("~").to_string();
        let ip = self.state().ip.clone();
        let cloud = self.cloud()?;
        let mut cmd = cloud
            .backend
            .shell_command(&id, ip.as_deref(), &wd, None)
            .map_err(|source| Error::Backend { op: "preparing the shell", source })?;
        cmd.env("DEVAMI_BLUEPRINT", self.blueprint_dir_abs()?);
        self.console.print(&format!("connected to {id}; `exit` or Ctrl-D returns to devami"));
        let status = cmd.status().map_err(|e| Error::io("run", "the instance's shell", e))?;
        interrupt::clear();
        Ok(Output::text(format!("left {id} (shell exit status {})", status.code().unwrap_or(-1))))
    }
}

/// Up to three keys closest to `wanted` (shared prefix, then edit distance on the file name).
fn closest<'a>(wanted: &str, keys: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut scored: Vec<(usize, &str)> = keys
        .filter(|k| !k.ends_with('/') && !k.starts_with(OUTPUT_PREFIX))
        .map(|k| {
            let common = k.bytes().zip(wanted.bytes()).take_while(|(a, b)| a == b).count();
            (wanted.len().max(k.len()) - common, k)
        })
        .collect();
    scored.sort();
    scored.into_iter().take(3).filter(|(d, _)| *d < wanted.len().max(8)).map(|(_, k)| k).collect()
}

/// How long `job_status --wait` waits: the blueprint's SSM_TIMEOUT plus a minute.
fn job_deadline(s: &DevAmi) -> u64 {
    s.bp().ok().and_then(|b| b.ssm_timeout().ok()).unwrap_or(172_800) + 60
}
