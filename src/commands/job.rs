//! Test jobs and the instance's shell: `submit_job`, `jobs`, `job_status`, `job_output`,
//! `cancel_job`, `results`, `new_submit`, `exec`, `ssh`.
//!
//! Invariants: a submit checks every dataset, the config and the COMMAND before it sends anything
//! (`neurocaas-protocol.md` §1.4); each job is recorded the moment its command id exists; Ctrl-C
//! stops following a job, never the job.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use std::time::Duration;

use crate::backend::{BackendError, InstanceState, JobReport, JobSpec, JobState};
use crate::blueprint::submit;
use crate::clock;
use crate::commands::image::{human_bytes, python_now};
use crate::error::{Error, Result};
use crate::interrupt;
use crate::output::Output;
use crate::parse::{Args, Value};
use crate::session::DevAmi;
use crate::state::JobRecord;
use crate::wait::{self, Probe};

/// Where the development loop's SSM output goes, as in the original.
pub const OUTPUT_PREFIX: &str = "debug_direct/";

/// The S3 key of a job's stdout or stderr.
pub fn output_key(command_id: &str, instance_id: &str, stream: &str) -> String {
    format!("{OUTPUT_PREFIX}{command_id}/{instance_id}/awsrunShellScript/0.awsrunShellScript/{stream}")
}

impl DevAmi {
    /// `submit_job(submitpath, parallel=1)` (also `submit_job_log`): for every dataset the submit
    /// file names (a key, or every object under a folder or prefix), fills the blueprint's COMMAND,
    /// sends it as AWS-RunShellScript with the blueprint's working directory and SSM_TIMEOUT and
    /// output under `debug_direct/`, and writes the dataset's INITIALIZING status object. Several
    /// datasets run one job each, in sequence or `--parallel N` at a time.
    pub(crate) fn cmd_submit_job(&mut self, a: &Args) -> Result<Output> {
        let path = a.str("submitpath").unwrap_or_default().to_string();
        let parallel = a.int("parallel").unwrap_or(1);
        if !(1..=64).contains(&parallel) {
            return Err(Error::BadArgument {
                command: "submit_job",
                argument: "`parallel`",
                expected: "between 1 and 64",
                got: parallel.to_string(),
            });
        }
        let text = crate::regular::read_text(Path::new(&path)).map_err(|e| Error::io("read", &path, e))?;
        let sub = submit::parse_submit(Path::new(&path), &text)?;
        let bp = self.bp()?;
        let bucket = bp.bucket()?.to_string();
        let template = bp.command()?.to_string();
        let instance = self.require_running()?;
        // Everything is checked before anything is sent.
        let mut datasets = Vec::new();
        for dataname in &sub.datanames {
            let key = submit::key_in_bucket(dataname, &bucket)?;
            let found = self.find_objects(&bucket, &key, "dataset")?;
            if found != [key.clone()] {
                let noun = if found.len() == 1 { "object" } else { "objects" };
                self.console.print(&format!(
                    "dataset `{key}` is a prefix: {} {noun} under it, one job each",
                    found.len()
                ));
            }
            for found in found {
                submit::group_of(&found)?;
                if !datasets.contains(&found) {
                    datasets.push(found);
                }
            }
        }
        let config = submit::key_in_bucket(&sub.configname, &bucket)?;
        self.find_objects(&bucket, &config, "config")?;
        submit::fill_command(&template, &[&bucket, &datasets[0], "results/debugjob", &config])?;
        if let Some(wanted) = &sub.instance_type {
            let actual = self.state().current().and_then(|r| r.instance_type.clone()).unwrap_or_default();
            if *wanted != actual {
                self.console.warn(&format!(
                    "the submit file asks for instance type `{wanted}`; development jobs run on the development instance ({actual})"
                ));
            }
        }
        if datasets.len() == 1 {
            let index = self.submit_one(&bucket, &template, &instance, &datasets[0], &config)?;
            let job = &self.state().jobs[index];
            return Ok(Output::text(format!(
                "job {index} submitted: command {} on {}",
                job.command_id, datasets[0]
            )));
        }
        let mut limit = parallel as usize;
        let halts = stops_instance(&template);
        if limit > 1 && halts {
            self.console.warn(
                "the blueprint's COMMAND stops the instance when a job ends (`cleanup`/`shutdown`), which would cut the other jobs short; running one job at a time",
            );
            limit = 1;
        }
        self.console.print(&format!(
            "{} datasets: one job each, {}",
            datasets.len(),
            if limit == 1 { "one after another".to_string() } else { format!("{limit} at a time") }
        ));
        let mut running: Vec<usize> = Vec::new();
        let mut submitted: Vec<usize> = Vec::new();
        for (n, data_key) in datasets.iter().enumerate() {
            if let Err(e) = self.wait_jobs(&mut running, limit) {
                return Err(self.stopped_submitting(e, &datasets[n..]));
            }
            if n > 0 {
                self.restart_if_stopped(halts)?;
            }
            let index = self.submit_one(&bucket, &template, &instance, data_key, &config)?;
            let id = self.state().jobs[index].command_id.clone();
            self.console.print(&format!("job {index} submitted: command {id} on {data_key}"));
            running.push(index);
            submitted.push(index);
        }
        if let Err(e) = self.wait_jobs(&mut running, 1) {
            return Err(self.stopped_submitting(e, &[]));
        }
        let ok = submitted.iter().filter(|&&i| self.job_succeeded(i)).count();
        let summary =
            format!("{} jobs finished: {ok} succeeded, {} did not", submitted.len(), submitted.len() - ok);
        Ok(Output::Many(vec![Output::text(summary), self.job_table(&submitted)]))
    }

    /// Sends one job for one dataset, records it and writes its INITIALIZING status object.
    fn submit_one(
        &mut self,
        bucket: &str,
        template: &str,
        instance: &str,
        data_key: &str,
        config: &str,
    ) -> Result<usize> {
        let bp = self.bp()?;
        let wd = bp.working_directory()?.to_string();
        let timeout = bp.ssm_timeout()?;
        let outdir = submit::result_dir(&python_now());
        let command = submit::fill_command(template, &[bucket, data_key, &outdir, config])?;
        self.console.print(&format!("sending command: {command} to instance {instance}"));
        let job = JobSpec {
            instance_id: instance.to_string(),
            commands: vec![command],
            working_directory: wd,
            execution_timeout: timeout,
            output_bucket: bucket.to_string(),
            output_prefix: OUTPUT_PREFIX.into(),
        };
        let cloud = self.cloud()?;
        let command_id = cloud.call("sending the command", cloud.backend.send_command(&job))?;
        self.state_mut().jobs.push(JobRecord {
            command_id: command_id.clone(),
            instance_id: instance.to_string(),
            submitted: clock::now(),
            dataset: Some(data_key.to_string()),
            config: Some(config.to_string()),
            result_dir: Some(outdir.clone()),
            last_status: Some(JobState::Pending),
            exit_code: None,
            started: None,
            ended: None,
            analysis: None,
        });
        self.persist()?;
        let key = submit::status_key(data_key, &outdir)?;
        let body = submit::status_body(data_key, instance, &command_id).into_bytes();
        let cloud = self.cloud()?;
        cloud.call("writing the status object", cloud.backend.put_object(bucket, &key, body))?;
        Ok(self.state().jobs.len() - 1)
    }

    /// Waits until fewer than `limit` of the `running` jobs are unfinished, saying when each ends.
    fn wait_jobs(&mut self, running: &mut Vec<usize>, limit: usize) -> Result<()> {
        if running.len() < limit {
            return Ok(());
        }
        let deadline = Duration::from_secs(job_deadline(self));
        let what = "jobs to finish".to_string();
        wait::poll(&what, deadline, || {
            let mut i = 0;
            while i < running.len() {
                let index = running[i];
                let report = self.refresh_job(index)?;
                if report.state.is_final() {
                    running.remove(i);
                    self.console.print(&format!("job {index} finished: {}", describe_end(&report)));
                } else {
                    i += 1;
                }
            }
            self.persist()?;
            Ok(if running.len() < limit {
                Probe::Done(())
            } else {
                Probe::Pending(format!("{} running", running.len()))
            })
        })
    }

    /// Starts the instance again when the previous job stopped it (a COMMAND ending in
    /// NeuroCAAS's `cleanup` halts the machine, as it must for job instances), keeping its
    /// lifetime. With `expect_stop` (the COMMAND halts the machine), first waits for the halt to
    /// happen, so the next job is never sent to an instance about to stop under it.
    fn restart_if_stopped(&mut self, expect_stop: bool) -> Result<()> {
        let id = self.current_instance()?;
        let mut state = self.describe(&id)?.state;
        if expect_stop || state == InstanceState::Stopping {
            let deadline = if expect_stop { HALT_WAIT } else { Duration::from_secs(20 * 60) };
            match self.wait_instance(&id, InstanceState::Stopped, deadline) {
                Ok(inst) => state = inst.state,
                Err(Error::WaitTimedOut { .. }) if expect_stop => {
                    state = self.describe(&id)?.state;
                    self.console.warn(&format!(
                        "instance {id} did not stop within {}s of the job's end although its COMMAND halts the machine; sending the next job anyway",
                        HALT_WAIT.as_secs()
                    ));
                }
                Err(e) => return Err(e),
            }
        }
        if state == InstanceState::Running {
            return Ok(());
        }
        self.console.print(&format!(
            "instance {id} was stopped by the previous job (its COMMAND ends with `cleanup`); starting it for the next dataset"
        ));
        let mut args = Args::default();
        if let Some(minutes) = self.state().current().and_then(|r| r.timeout_minutes) {
            args.set("timeout", Value::Int(i64::from(minutes)));
        }
        let started = self.cmd_start_devinstance(&args)?;
        self.console.print(&started.render());
        Ok(())
    }

    /// The error after a multi-dataset run stopped early, naming what was not submitted.
    fn stopped_submitting(&mut self, e: Error, left: &[String]) -> Error {
        if matches!(e, Error::Interrupted) {
            let not_sent =
                if left.is_empty() { String::new() } else { format!("; not submitted: {}", left.join(", ")) };
            self.console.warn(&format!("stopped waiting; the submitted jobs go on (see `jobs`){not_sent}"));
        }
        e
    }

    /// Objects for a `dataname` or `configname`: the key itself, or every object under it as a
    /// folder or prefix. A clear error naming the closest keys when there is none.
    fn find_objects(&mut self, bucket: &str, name: &str, what: &'static str) -> Result<Vec<String>> {
        let cloud = self.cloud()?;
        let objects = cloud.call("listing the bucket", cloud.backend.list_objects(bucket, name))?;
        let keys: Vec<&str> = objects.iter().map(|o| o.key.as_str()).collect();
        let found = submit::resolve_dataset(name, &keys);
        if !found.is_empty() {
            return Ok(found);
        }
        let all = cloud.call("listing the bucket", cloud.backend.list_objects(bucket, ""))?;
        Err(Error::NotInBucket {
            what,
            name: name.to_string(),
            bucket: bucket.to_string(),
            closest: closest(name, all.iter().map(|o| o.key.as_str()))
                .into_iter()
                .map(str::to_string)
                .collect(),
        })
    }

    /// `jobs`: every job of the session, unfinished ones read afresh.
    pub(crate) fn cmd_jobs(&mut self, _: &Args) -> Result<Output> {
        self.bp()?;
        if self.state().jobs.is_empty() {
            return Ok(Output::text("no jobs yet"));
        }
        let all: Vec<usize> = (0..self.state().jobs.len()).collect();
        for &i in &all {
            let unfinished = self.state().jobs[i].last_status.is_none_or(|s| !s.is_final());
            if unfinished && let Err(e) = self.refresh_job(i) {
                if matches!(e, Error::Interrupted) {
                    return Err(e);
                }
                self.console.warn(&format!("job {i}: status not refreshed: {e}"));
            }
        }
        self.persist()?;
        Ok(self.job_table(&all))
    }

    /// The table of these jobs (index, command id, dataset, instance, submitted, status,
    /// duration, exit code).
    fn job_table(&self, indices: &[usize]) -> Output {
        let jobs = &self.state().jobs;
        let n = jobs.len() as i64;
        let rows = indices
            .iter()
            .map(|&i| {
                let j = &jobs[i];
                let duration = duration_text(j.started, j.ended, clock::now());
                vec![
                    format!("{} ({})", i, i as i64 - n),
                    j.command_id.clone(),
                    j.dataset.clone().unwrap_or_else(|| "-".into()),
                    j.instance_id.clone(),
                    clock::format(j.submitted),
                    match (j.last_status, &j.analysis) {
                        (Some(s), Some(a)) if submit::analysis_disagrees(s, a) => {
                            format!("{s} (analysis {a})")
                        }
                        (Some(s), _) => s.to_string(),
                        (None, _) => "-".into(),
                    },
                    duration,
                    j.exit_code.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        Output::table(
            &["index", "command id", "dataset", "instance", "submitted (UTC)", "status", "duration", "exit"],
            rows,
        )
    }

    fn job_record(&self, a: &Args) -> Result<(usize, JobRecord)> {
        let index = self.job_index(a.int("jobind").unwrap_or(-1))?;
        Ok((index, self.state().jobs[index].clone()))
    }

    /// Reads a job's command status and records it.
    fn refresh_job(&mut self, index: usize) -> Result<JobReport> {
        let job = self.state().jobs[index].clone();
        let cloud = self.cloud()?;
        let report = cloud
            .call("reading the job", cloud.backend.describe_command(&job.command_id, &job.instance_id))?;
        let was_final = job.last_status.is_some_and(JobState::is_final);
        let rec = &mut self.state_mut().jobs[index];
        rec.last_status = Some(report.state);
        rec.exit_code = report.exit_code;
        rec.started = report.started.or(rec.started);
        rec.ended = report.ended.or(rec.ended);
        if report.state.is_final() && !was_final {
            // Once, as the job ends: what the analysis reported, and what the job did to the
            // instance (a COMMAND ending in `cleanup` stops it).
            if let Ok(Some((status, _))) = self.analysis_status(&job) {
                self.state_mut().jobs[index].analysis = Some(status);
            }
            if self.state().instance.as_deref() == Some(job.instance_id.as_str()) {
                let _ = self.describe(&job.instance_id);
            }
        }
        Ok(report)
    }

    /// Whether a job ended well: the command succeeded and the analysis did not say otherwise.
    fn job_succeeded(&self, index: usize) -> bool {
        let j = &self.state().jobs[index];
        j.last_status == Some(JobState::Success)
            && j.analysis.as_deref().is_none_or(|a| !submit::analysis_disagrees(JobState::Success, a))
    }

    /// The dataset's status object as the analysis last wrote it: `(status, reason)`.
    fn analysis_status(&mut self, job: &JobRecord) -> Result<Option<(String, String)>> {
        let (Some(data), Some(dir)) = (&job.dataset, &job.result_dir) else { return Ok(None) };
        let Ok(key) = submit::status_key(data, dir) else { return Ok(None) };
        let bucket = self.bp()?.bucket()?.to_string();
        let cloud = self.cloud()?;
        let bytes = match cloud.call("reading the status object", cloud.backend.get_object(&bucket, &key)) {
            Ok(b) => b,
            Err(Error::Backend { source: BackendError::NotFound { .. }, .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            return Ok(Some(("unreadable".into(), format!("s3://{bucket}/{key} is not JSON"))));
        };
        let status = doc.get("status").and_then(|v| v.as_str()).unwrap_or("missing").to_string();
        let reason = match doc.get("reason") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()))
                .collect::<Vec<_>>()
                .join("; "),
            Some(other) => other.to_string(),
            None => String::new(),
        };
        Ok(Some((status, reason)))
    }

    /// `job_status(jobind=-1, wait=False)`.
    pub(crate) fn cmd_job_status(&mut self, a: &Args) -> Result<Output> {
        let (index, job) = self.job_record(a)?;
        let report = if a.bool("wait").unwrap_or(false) {
            let what = format!("job {index} ({}) to finish", job.command_id);
            let result = wait::poll(&what, Duration::from_secs(job_deadline(self)), || {
                let r = self.refresh_job(index)?;
                Ok(if r.state.is_final() { Probe::Done(r) } else { Probe::Pending(r.state.to_string()) })
            });
            if matches!(result, Err(Error::Interrupted)) {
                self.console.warn("stopped waiting; the job goes on (see `job_status`)");
            }
            result?
        } else {
            self.refresh_job(index)?
        };
        let mut text = report.state.to_string();
        if report.state.is_final()
            && let Some(code) = report.exit_code
        {
            text.push_str(&format!(" (exit code {code})"));
        }
        if let Some(detail) = &report.detail {
            text.push_str(&format!(": {detail}"));
        }
        if let Some((status, reason)) = self.analysis_status(&job)?
            && submit::analysis_disagrees(report.state, &status)
        {
            let why = if reason.is_empty() || reason == "NONE" {
                String::new()
            } else {
                format!(" (reason: {reason})")
            };
            text.push_str(&format!("\nanalysis status: {status}{why}; from the dataset's status object (`results {index}` lists the job's logs)"));
        }
        Ok(Output::text(text))
    }

    /// One stream of a job: the object SSM writes to the bucket, else the invocation record's
    /// (truncated) copy. `Ok(None)` when neither has anything yet; the flag says which it was.
    fn read_stream(
        &mut self,
        job: &JobRecord,
        stream: &str,
        report: &mut Option<JobReport>,
    ) -> Result<Option<(String, bool)>> {
        let bucket = self.bp()?.bucket()?.to_string();
        let key = output_key(&job.command_id, &job.instance_id, stream);
        let cloud = self.cloud()?;
        match cloud.call("reading the job output", cloud.backend.get_object(&bucket, &key)) {
            Ok(bytes) => return Ok(Some((String::from_utf8_lossy(&bytes).into_owned(), false))),
            Err(Error::Backend { source: BackendError::NotFound { .. }, .. }) => {}
            Err(e) => return Err(e),
        }
        // Read at most once per caller: both streams may need it.
        if report.is_none() {
            *report = Some(cloud.call(
                "reading the job",
                cloud.backend.describe_command(&job.command_id, &job.instance_id),
            )?);
        }
        Ok(report.as_ref().and_then(|r| r.inline_output.clone()).and_then(|(out, err)| {
            let text = if stream == "stdout" { out } else { err };
            (!text.is_empty()).then_some((text, true))
        }))
    }

    /// `job_output(jobind=-1, follow=False, tail=None, stderr=False)`: the stdout and stderr
    /// objects SSM writes to the bucket; when they are not there (yet), the invocation record's
    /// truncated output, saying so.
    pub(crate) fn cmd_job_output(&mut self, a: &Args) -> Result<Output> {
        let (index, job) = self.job_record(a)?;
        let tail = match a.int("tail") {
            Some(n) if n < 0 => {
                return Err(Error::BadArgument {
                    command: "job_output",
                    argument: "`tail`",
                    expected: "0 or more",
                    got: n.to_string(),
                });
            }
            n => n.map(|n| n as usize),
        };
        let only_stderr = a.bool("stderr").unwrap_or(false);
        if a.bool("follow").unwrap_or(false) {
            return self.follow_output(index, &job, if only_stderr { "stderr" } else { "stdout" }, tail);
        }
        let streams: &[&str] = if only_stderr { &["stderr"] } else { &["stdout", "stderr"] };
        let mut parts = Vec::new();
        let mut from_record = false;
        let mut report = None;
        for &stream in streams {
            let text = match self.read_stream(&job, stream, &mut report)? {
                Some((t, inline)) => {
                    from_record |= inline;
                    last_lines(t.trim_end(), tail).to_string()
                }
                None if stream == "stderr" && !only_stderr => String::new(),
                None => {
                    let key = output_key(&job.command_id, &job.instance_id, stream);
                    format!("{key} not found. may not be updated yet.")
                }
            };
            match stream {
                "stderr" if !only_stderr && !text.is_empty() => parts.push(format!("stderr:\n{text}")),
                "stderr" if !only_stderr => {}
                _ => parts.push(text),
            }
        }
        if from_record {
            parts.push(INLINE_NOTE.to_string());
        }
        Ok(Output::text(parts.join("\n").trim_end().to_string()))
    }

    /// `job_output --follow`: prints the stream as it grows until the job ends; Ctrl-C stops
    /// following and leaves the job running.
    fn follow_output(
        &mut self,
        index: usize,
        job: &JobRecord,
        stream: &str,
        tail: Option<usize>,
    ) -> Result<Output> {
        let mut shown = 0usize;
        let mut first = true;
        let mut interval = Duration::from_millis(100);
        loop {
            let step = (|| -> Result<Option<JobReport>> {
                let report = self.refresh_job(index)?;
                let text = self
                    .read_stream(job, stream, &mut Some(report.clone()))?
                    .map(|(t, _)| t)
                    .unwrap_or_default();
                let done = report.state.is_final();
                if text.len() < shown {
                    shown = 0; // the source changed (the invocation record's copy was truncated)
                }
                let fresh = &text[shown..];
                // Whole lines only, until the end.
                let cut = if done { fresh.len() } else { fresh.rfind('\n').map(|i| i + 1).unwrap_or(0) };
                if cut > 0 {
                    let mut piece = &fresh[..cut];
                    if first && let Some(n) = tail {
                        piece = last_lines(piece, Some(n));
                    }
                    self.console.print(piece);
                    shown += cut;
                    first = false;
                }
                Ok(done.then_some(report))
            })();
            match step {
                Ok(Some(report)) => {
                    self.persist()?;
                    if stream == "stdout"
                        && let Some((err, _)) = self.read_stream(job, "stderr", &mut Some(report.clone()))?
                        && !err.trim().is_empty()
                    {
                        let err = last_lines(err.trim_end(), tail);
                        self.console.print(&format!("stderr:\n{err}"));
                    }
                    return Ok(Output::text(format!("job {index} finished: {}", describe_end(&report))));
                }
                Ok(None) => {}
                Err(Error::Interrupted) => return self.stop_following(index),
                Err(e) => return Err(e),
            }
            match interrupt::sleep(interval) {
                Ok(()) => interval = (interval * 2).min(Duration::from_millis(500)),
                Err(_) => return self.stop_following(index),
            }
        }
    }

    fn stop_following(&mut self, index: usize) -> Result<Output> {
        interrupt::clear();
        self.persist()?;
        Ok(Output::text(format!("stopped following job {index}; it goes on (`job_status {index}`)")))
    }

    /// `cancel_job(jobind=-1)`.
    pub(crate) fn cmd_cancel_job(&mut self, a: &Args) -> Result<Output> {
        let (index, job) = self.job_record(a)?;
        let report = self.refresh_job(index)?;
        if report.state.is_final() {
            return Err(Error::JobFinished {
                index,
                state: report.state,
                exit_code: report.exit_code,
                detail: report.detail,
            });
        }
        let cloud = self.cloud()?;
        cloud.call("cancelling the job", cloud.backend.cancel_command(&job.command_id, &job.instance_id))?;
        let what = format!("job {index} to stop");
        let report = wait::poll(&what, Duration::from_secs(60), || {
            let r = self.refresh_job(index)?;
            Ok(if r.state.is_final() { Probe::Done(r) } else { Probe::Pending(r.state.to_string()) })
        })?;
        Ok(Output::text(format!("job {index} ({}) cancelled: {}", job.command_id, describe_end(&report))))
    }

    /// `results(jobind=-1, download=None)`: what the job wrote under `GROUP/RESULT_DIR/`.
    pub(crate) fn cmd_results(&mut self, a: &Args) -> Result<Output> {
        let (index, job) = self.job_record(a)?;
        let (Some(data), Some(dir)) = (&job.dataset, &job.result_dir) else {
            return Err(Error::NoResultDir { index });
        };
        let prefix = format!("{}/{dir}/", submit::group_of(data)?);
        if let Some(local) = a.str("download") {
            let mut args = Args::default();
            args.set("key", Value::Str(prefix));
            args.set("local", Value::Str(local.to_string()));
            return self.cmd_download(&args);
        }
        let bucket = self.bp()?.bucket()?.to_string();
        let cloud = self.cloud()?;
        let objects = cloud.call("listing the bucket", cloud.backend.list_objects(&bucket, &prefix))?;
        let rows: Vec<Vec<String>> = objects
            .iter()
            .filter(|o| !o.key.ends_with('/'))
            .map(|o| {
                vec![
                    o.key[prefix.len()..].to_string(),
                    human_bytes(o.size),
                    o.modified.map(clock::format).unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        if rows.is_empty() {
            return Ok(Output::text(format!(
                "job {index} has written nothing under s3://{bucket}/{prefix} yet"
            )));
        }
        Ok(Output::Many(vec![
            Output::text(format!("s3://{bucket}/{prefix}")),
            Output::table(&["file", "size", "modified (UTC)"], rows),
        ]))
    }

    /// `new_submit(dataset, config, group=None, out=None)`: a submit file for keys of the
    /// analysis bucket; local files and folders are uploaded to `GROUP/inputs/` and
    /// `GROUP/configs/` first.
    pub(crate) fn cmd_new_submit(&mut self, a: &Args) -> Result<Output> {
        let datasets = a.list("dataset").unwrap_or_default();
        let config = a.str("config").unwrap_or_default().to_string();
        let bp = self.bp()?;
        let bucket = bp.pipeline_name()?.to_string();
        let group = match a.str("group") {
            Some(g) if !g.is_empty() && !g.contains('/') => g.to_string(),
            Some(g) => {
                return Err(Error::BadArgument {
                    command: "new_submit",
                    argument: "`group`",
                    expected: "a plain name",
                    got: format!("`{g}`"),
                });
            }
            None => bp.affiliates().into_iter().next().ok_or(Error::NoAffiliateGroup {
                command: "new_submit",
                give: "`--group`",
                default: None,
            })?,
        };
        let out = match a.str("out") {
            Some(p) => PathBuf::from(p),
            None => bp.dir().join("test_resources").join("devami_submit.json"),
        };
        // Check every name before uploading anything.
        let mut plan = Vec::new();
        for (name, folder) in datasets.iter().map(|d| (d, "inputs")).chain([(&config, "configs")]) {
            let local = Path::new(name);
            if std::fs::symlink_metadata(local).is_ok() {
                let base = local
                    .canonicalize()
                    .ok()
                    .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                    .ok_or_else(|| Error::NoFileName { path: name.clone() })?;
                let key = format!("{group}/{folder}/{base}");
                let key = if local.is_dir() { format!("{key}/") } else { key };
                plan.push((Some(name.clone()), key));
            } else {
                let key = submit::key_in_bucket(name, &bucket)?;
                self.find_objects(&bucket, &key, if folder == "configs" { "config" } else { "dataset" })?;
                plan.push((None, key));
            }
        }
        for (local, key) in &plan {
            if let Some(local) = local {
                let mut args = Args::default();
                args.set("local", Value::Str(local.clone()));
                args.set("key", Value::Str(key.trim_end_matches('/').to_string()));
                let done = self.cmd_upload(&args)?;
                self.console.print(&done.render());
            }
        }
        let (config_key, data_keys) = plan
            .split_last()
            .map(|(c, d)| (c.1.clone(), d.iter().map(|p| p.1.clone()).collect::<Vec<_>>()))
            .unwrap_or_default();
        let text = submit::submit_text(&data_keys, &config_key, &cli_timestamp(clock::now()));
        if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e))?;
        }
        crate::atomic::write(&out, text.as_bytes())?;
        Ok(Output::text(format!(
            "wrote {}:\n{}run it with `submit_job {}`",
            out.display(),
            text,
            out.display()
        )))
    }

    /// The running instance's id and the process that runs `command` in it (a login shell when
    /// `None`), in the blueprint's working directory, with `DEVAMI_BLUEPRINT` set.
    fn instance_shell(&mut self, command: Option<&str>) -> Result<(String, std::process::Command)> {
        let id = self.require_running()?;
        let wd = self.bp()?.working_directory().unwrap_or("~").to_string();
        let ip = self.state().ip.clone();
        let blueprint = self.blueprint_dir_abs()?;
        let cloud = self.cloud()?;
        let op = if command.is_some() { "preparing the command" } else { "preparing the shell" };
        let mut cmd = cloud
            .backend
            .shell_command(&id, ip.as_deref(), &wd, command, Some(&blueprint))
            .map_err(|source| Error::Backend { op, source })?;
        cmd.env("DEVAMI_BLUEPRINT", &blueprint);
        Ok((id, cmd))
    }

    /// `exec CMD`: runs a command in the instance, streaming its output.
    pub(crate) fn cmd_exec(&mut self, a: &Args) -> Result<Output> {
        let command = a.str("command").unwrap_or_default().to_string();
        let (id, mut cmd) = self.instance_shell(Some(&command))?;
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
                self.console.print(&format!("{line}\n"));
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
            status => Err(Error::RemoteCommandFailed { command, id, status }),
        }
    }

    /// The blueprint folder's absolute path: `$DEVAMI_BLUEPRINT` in `exec` and `ssh` (not in jobs),
    /// so files of the blueprint's repository can be copied into the instance, as one would
    /// `git clone` them on a cloud machine.
    pub(crate) fn blueprint_dir_abs(&self) -> Result<std::path::PathBuf> {
        let dir = self.bp()?.dir();
        std::fs::canonicalize(dir).map_err(|e| Error::io("read", dir, e))
    }

    /// `ssh`: an interactive shell in the instance.
    pub(crate) fn cmd_ssh(&mut self, _: &Args) -> Result<Output> {
        if !self.options().interactive {
            return Err(Error::NeedsTerminal { command: "ssh", instead: "exec CMD" });
        }
        let (id, mut cmd) = self.instance_shell(None)?;
        self.console.print(&format!("connected to {id}; `exit` or Ctrl-D returns to devami"));
        let status = cmd.status().map_err(|e| Error::io("run", "the instance's shell", e))?;
        interrupt::clear();
        Ok(Output::text(format!("left {id} (shell exit status {})", status.code().unwrap_or(-1))))
    }
}

/// Up to three keys closest to `wanted` (shared prefix, then edit distance on the file name).
pub(crate) fn closest<'a>(wanted: &str, keys: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
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

/// The text of a job's end: `Success (exit code 0)`, with the backend's detail when it gave one.
fn describe_end(report: &JobReport) -> String {
    ended(report.state, report.exit_code, report.detail.as_deref())
}

/// [`describe_end`] from the parts a report keeps (also the text of [`Error::JobFinished`]).
pub(crate) fn ended(state: JobState, exit_code: Option<i32>, detail: Option<&str>) -> String {
    let mut text = state.to_string();
    if let Some(code) = exit_code {
        text.push_str(&format!(" (exit code {code})"));
    }
    if let Some(detail) = detail {
        text.push_str(&format!(": {detail}"));
    }
    text
}

/// The last `n` lines of `text` (all of it for `None`).
fn last_lines(text: &str, n: Option<usize>) -> &str {
    let Some(n) = n else { return text };
    if n == 0 {
        return "";
    }
    let body = text.strip_suffix('\n').unwrap_or(text);
    match body.rmatch_indices('\n').nth(n - 1) {
        Some((i, _)) => &text[i + 1..],
        None => text,
    }
}

/// Whether a COMMAND halts the machine when it ends (NeuroCAAS's `cleanup`, or a shutdown).
fn stops_instance(template: &str) -> bool {
    template
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .any(|w| matches!(w, "cleanup" | "shutdown" | "poweroff" | "halt"))
}

/// `neurocaas_cli`'s default submit timestamp, `time.strftime("%S%M%H%d%b%y")` in UTC.
fn cli_timestamp(epoch: i64) -> String {
    let f = clock::format(epoch); // YYYY-MM-DD HH:MM:SS
    const MONTHS: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let month =
        f[5..7].parse::<usize>().ok().and_then(|m| MONTHS.get(m.wrapping_sub(1))).copied().unwrap_or("Jan");
    format!("{}{}{}{}{month}{}", &f[17..19], &f[14..16], &f[11..13], &f[8..10], &f[2..4])
}

/// How long a multi-dataset run waits for a COMMAND's halt (`cleanup` is `shutdown -h 1`: one
/// minute, then the machine takes a while to stop) before sending the next job.
const HALT_WAIT: Duration = Duration::from_secs(180);

/// Where the invocation record's copy of the output came from, said after showing it.
const INLINE_NOTE: &str = "(from the command's invocation record, which keeps at most 24,000 characters of stdout and 8,000 of stderr; the full output lands in the bucket when the command ends)";

/// A job's duration for the table: `3m 07s`, `12s so far`, or `-` before it started. Saturating:
/// the times come from the state file and the cloud, and may be anything.
fn duration_text(started: Option<i64>, ended: Option<i64>, now: i64) -> String {
    match (started, ended) {
        (Some(s), Some(e)) => clock::human_duration(e.saturating_sub(s)),
        (Some(s), None) => format!("{} so far", clock::human_duration(now.saturating_sub(s))),
        _ => "-".into(),
    }
}

/// How long `job_status --wait` waits: the blueprint's SSM_TIMEOUT plus a minute.
fn job_deadline(s: &DevAmi) -> u64 {
    s.bp().ok().and_then(|b| b.ssm_timeout().ok()).unwrap_or(172_800) + 60
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_and_timestamps() {
        assert_eq!(last_lines("a\nb\nc\n", Some(2)), "b\nc\n");
        assert_eq!(last_lines("a\nb\nc", Some(2)), "b\nc");
        assert_eq!(last_lines("a\nb", Some(5)), "a\nb");
        assert_eq!(last_lines("a\nb", Some(0)), "");
        assert_eq!(last_lines("a\nb", None), "a\nb");
        // 2026-11-25 13:23:38 UTC
        assert_eq!(cli_timestamp(1_795_613_018), "38231325Nov26");
    }

    #[test]
    fn durations_of_extreme_times_saturate() {
        assert_eq!(duration_text(Some(10), Some(197), 0), "3m 07s");
        assert_eq!(duration_text(Some(10), None, 22), "12s so far");
        assert_eq!(duration_text(None, Some(5), 22), "-");
        assert!(duration_text(Some(i64::MIN), Some(i64::MAX), 0).ends_with('m'));
        assert!(duration_text(Some(i64::MAX), Some(i64::MIN), 0).starts_with('-'));
        assert!(duration_text(Some(i64::MIN), None, 1_700_000_000).ends_with("so far"));
    }
}
