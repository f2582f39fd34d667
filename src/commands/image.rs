//! Images and the blueprint: `create_devami` and `update_blueprint`.
//!
//! `create_devami` records the new image id in the session before waiting for it (with its
//! progress), marks the instance's work as saved, and reports the cloud's reason on failure.
//! `update_blueprint` writes only `Lambda.LambdaConfig.AMI` into the blueprint and records the
//! change as the original did: a commit of the blueprint before and one after, with the original
//! messages (`journal.rs` commits that one file and nothing else).

use std::time::Duration;

use crate::backend::{Image, ImageRequest, ImageState, JobState};
use crate::clock;
use crate::error::{Error, Result};
use crate::journal::Journal;
use crate::output::Output;
use crate::parse::Args;
use crate::session::DevAmi;
use crate::state::ImageRecord;
use crate::wait::{self, Probe};

/// How long an image may stay pending before the wait gives up (the image itself goes on).
const IMAGE_DEADLINE: Duration = Duration::from_secs(4 * 3600);
/// How long `history` and `status` spend, in all, asking about images recorded as pending.
const REFRESH_LIMIT: Duration = Duration::from_secs(10);

/// Whether `name` is a valid AMI name (3–128 characters of letters, digits and `()[] ./-'@_`).
pub fn valid_image_name(name: &str) -> bool {
    (3..=128).contains(&name.chars().count())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "()[] ./-'@_".contains(c))
}

/// Python's `str(datetime.now())` for a UTC instant: `2026-11-25 13:23:38.123456`.
pub fn python_now() -> String {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_micros())
        .unwrap_or(0);
    format!("{}.{micros:06}", clock::format(clock::now()))
}

impl DevAmi {
    /// Waits for an image to be available, showing its progress.
    pub(crate) fn wait_image(&mut self, image_id: &str) -> Result<()> {
        let what = format!("image {image_id} to be available");
        let result = wait::poll(&what, IMAGE_DEADLINE, || {
            let cloud = self.cloud()?;
            let img = cloud.call("describing the image", cloud.backend.describe_image(image_id))?;
            self.note_image(&img);
            self.persist()?;
            match img.state {
                ImageState::Available => Ok(Probe::Done(())),
                ImageState::Pending => Ok(Probe::Pending(match img.progress {
                    Some(p) => format!("pending, {p}%"),
                    None => "pending".into(),
                })),
                state => {
                    Err(Error::ImageFailed { id: image_id.to_string(), state, reason: img.state_reason })
                }
            }
        });
        if matches!(result, Err(Error::Interrupted)) {
            self.console.warn(&format!(
                "stopped waiting; image {image_id} goes on being created and stays recorded (see `history`)"
            ));
        }
        result
    }

    /// Records what the cloud says of an image the session created: its state, and its size once
    /// it is available (whichever command saw it become available).
    pub(crate) fn note_image(&mut self, img: &Image) {
        if let Some(rec) = self.state_mut().images.iter_mut().rev().find(|r| r.id == img.id) {
            rec.last_state = Some(img.state.clone());
            if img.state == ImageState::Available && img.size_bytes.is_some() {
                rec.size_bytes = img.size_bytes;
            }
        }
    }

    /// [`DevAmi::note_image`] for an image the session records as `pending` (what `sweep` saw).
    pub(crate) fn note_pending_image(&mut self, img: &Image) {
        let pending = self.state().images.iter().rev().find(|r| r.id == img.id);
        if pending.is_some_and(|r| r.last_state == Some(ImageState::Pending)) {
            self.note_image(img);
        }
    }

    /// Asks the cloud once about each image recorded as `pending` (what `history` and `status` show
    /// would otherwise stay as a wait left it, e.g. one stopped by Ctrl-C or a killed shell) and
    /// records the answers. Best effort: no answer within [`REFRESH_LIMIT`] in all, an error or no
    /// cloud at all leaves a record as it was; Ctrl-C stops asking.
    pub(crate) fn refresh_pending_images(&mut self) {
        let pending: Vec<String> = self
            .state()
            .images
            .iter()
            .filter(|r| r.last_state == Some(ImageState::Pending))
            .map(|r| r.id.clone())
            .collect();
        if pending.is_empty() {
            return;
        }
        let deadline = std::time::Instant::now() + REFRESH_LIMIT;
        for id in pending {
            let Ok(cloud) = self.cloud() else { return };
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match cloud.call_within(left, "describing a pending image", cloud.backend.describe_image(&id)) {
                Ok(Some(img)) => self.note_image(&img),
                Ok(None) | Err(Error::Interrupted) => return,
                Err(_) => {}
            }
        }
    }

    /// `import_image FILE [--as NAME]`: an image file of this machine becomes an image.
    pub(crate) fn cmd_import_image(&mut self, a: &Args) -> Result<Output> {
        let file = std::path::PathBuf::from(a.str("file").unwrap_or_default());
        if !file.is_file() {
            return Err(Error::NotAnImageArchive { path: file });
        }
        let name = a.str("as").map(str::to_string);
        let cloud = self.cloud()?;
        let id = cloud.call("importing the image", cloud.backend.import_image(&file, name.as_deref()))?;
        let bound = name
            .as_deref()
            .filter(|n| crate::backend::local::images::ALIASES.iter().any(|(a, ..)| a == n))
            .map(|n| format!("; `{n}` resolves to it from now on"))
            .unwrap_or_default();
        Ok(Output::text(format!("imported {} as {id}{bound}", file.display())))
    }

    /// `create_devami(name)`.
    pub(crate) fn cmd_create_devami(&mut self, a: &Args) -> Result<Output> {
        let id = self.current_instance()?;
        let name = a.str("name").unwrap_or_default().to_string();
        if !valid_image_name(&name) {
            return Err(Error::InvalidImageName { name });
        }
        let pipeline = self.bp()?.pipeline_name().unwrap_or_default().to_string();
        // The user as `launch_devinstance` tags instances: the last part of the caller's ARN.
        let user = self.caller_name()?;
        let request = ImageRequest {
            instance_id: id.clone(),
            name: name.clone(),
            description: format!("AMI created at {}", python_now()),
            tags: vec![
                ("devami:blueprint".into(), pipeline),
                ("devami:user".into(), user),
                ("devami:instance".into(), id.clone()),
            ],
        };
        let cloud = self.cloud()?;
        let image_id = cloud.call("creating the image", cloud.backend.create_image(&request))?;
        // Recorded at once: the image exists (and costs storage) from now on.
        let st = self.state_mut();
        st.images.push(ImageRecord {
            id: image_id.clone(),
            name: name.clone(),
            instance_id: id.clone(),
            created: clock::now(),
            last_state: Some(ImageState::Pending),
            size_bytes: None,
        });
        st.instance_saved = true;
        self.persist()?;
        self.console.print(&format!("creating image {image_id} ({name}) from instance {id}"));
        if let Err(e) = self.wait_image(&image_id) {
            if matches!(e, Error::ImageFailed { .. } | Error::WaitTimedOut { .. }) {
                // The image failed: the instance's work is not saved after all.
                self.state_mut().instance_saved = false;
                self.persist()?;
                self.offer_cleanup(&image_id, &e)?;
            }
            return Err(e);
        }
        let cloud = self.cloud()?;
        let img = cloud.call("describing the image", cloud.backend.describe_image(&image_id))?;
        if let Some(rec) = self.state_mut().images.iter_mut().rev().find(|r| r.id == image_id) {
            rec.size_bytes = img.size_bytes;
        }
        let size = img.size_bytes.map(|b| format!(", {}", human_bytes(b))).unwrap_or_default();
        Ok(Output::text(format!("image {image_id} is available{size}")))
    }

    /// After a failed image, offers to deregister it and delete its snapshots (as Packer does).
    fn offer_cleanup(&mut self, image_id: &str, failure: &Error) -> Result<()> {
        self.console.print(&format!("image {image_id} failed: {failure}"));
        if !self.options().interactive && !self.options().yes {
            self.console.print(
                "it stays recorded; rerun with `--yes` to have devami deregister it and delete its snapshots",
            );
            return Ok(());
        }
        if self.confirm("create_devami", &format!("deregister image {image_id} and delete its snapshots?"))? {
            let cloud = self.cloud()?;
            cloud.call("deleting the failed image", cloud.backend.delete_image(image_id))?;
            if let Some(rec) = self.state_mut().images.iter_mut().rev().find(|r| r.id == image_id) {
                rec.last_state = Some(ImageState::Deregistered);
            }
            self.console.print(&format!("image {image_id} deregistered"));
        }
        Ok(())
    }

    /// The provenance of an image as git trailers: the image, the image and instance it was made
    /// from, the jobs that succeeded on that instance (the tests it passed), devami's version.
    pub(crate) fn provenance(&self, ami: &str, cloud_name: Option<&str>) -> Vec<String> {
        let st = self.state();
        let image = st.images.iter().rev().find(|r| r.id == ami);
        let name = image.map(|r| r.name.as_str()).or(cloud_name);
        let mut t = vec![match name {
            Some(n) => format!("Devami-Image: {ami} ({n})"),
            None => format!("Devami-Image: {ami}"),
        }];
        if let Some(img) = image {
            let inst = st.instances.iter().rev().find(|r| r.id == img.instance_id);
            if let Some(src) = inst.and_then(|i| match (&i.source, &i.image_id) {
                (Some(s), Some(id)) if s != id => Some(format!("{s} ({id})")),
                (_, Some(id)) => Some(id.clone()),
                (Some(s), None) => Some(s.clone()),
                (None, None) => None,
            }) {
                t.push(format!("Devami-Source-Image: {src}"));
            }
            t.push(format!("Devami-Instance: {}", img.instance_id));
            let since = inst.map(|i| i.recorded).unwrap_or(i64::MIN);
            let tested: Vec<&str> = st
                .jobs
                .iter()
                .filter(|j| {
                    j.instance_id == img.instance_id
                        && j.submitted >= since
                        && j.last_status == Some(JobState::Success)
                        && j.analysis.as_deref().is_none_or(|a| {
                            !crate::blueprint::submit::analysis_disagrees(
                                crate::backend::JobState::Success,
                                a,
                            )
                        })
                })
                .map(|j| j.command_id.as_str())
                .collect();
            t.push(format!(
                "Devami-Tested-Jobs: {}",
                if tested.is_empty() { "none".to_string() } else { tested.join(", ") }
            ));
        }
        t.push(format!("Devami-Version: {}", env!("CARGO_PKG_VERSION")));
        t
    }

    /// `update_blueprint(ami_id=None, message=None)`.
    pub(crate) fn cmd_update_blueprint(&mut self, a: &Args) -> Result<Output> {
        self.bp()?;
        let ami = match a.str("ami_id") {
            Some(id) => id.to_string(),
            None => self.state().images.last().map(|r| r.id.clone()).ok_or(Error::NoImageRecorded)?,
        };
        let message = a.str("message").unwrap_or("Not given").to_string();
        let force = a.bool("force").unwrap_or(false);
        let cloud = self.cloud()?;
        let img = cloud.call("checking the image", cloud.backend.describe_image(&ami))?;
        if img.state != ImageState::Available && !force {
            return Err(Error::ImageNotAvailable { id: ami, state: img.state });
        }
        // Pick up edits made to the file since the session opened it.
        let dir = self.bp()?.dir().to_path_buf();
        *self.bp_mut()? = crate::blueprint::Blueprint::open(&dir)?;
        let path = self.bp()?.path().to_path_buf();
        let file = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let journal = match Journal::open(&path) {
            Err(_) if a.bool("init").unwrap_or(false) => {
                self.console.print(&format!("git repository: created in `{}`", dir.display()));
                Journal::init(&dir, &path)?
            }
            Ok(journal) if a.bool("init").unwrap_or(false) => {
                // `--init` inside a checkout: the blueprint is already under git, in that one.
                let tree = journal.work_tree().map(|t| t.display().to_string()).unwrap_or_default();
                let tree = tree.trim_end_matches('/');
                self.console
                    .print(&format!("git repository: the one at `{tree}`, which holds the blueprint folder"));
                journal
            }
            other => other?,
        };
        // A git lock left by an interrupted commit refuses the update before anything changed
        // (not between the blueprint's rewrite and its commit).
        journal.check_unlocked()?;
        let before =
            format!("automatic commit to document pipeline {file} before update at {}", python_now());
        journal.commit_file(&before)?;
        let mut lines = vec![format!(
            "old commit has hash: {}",
            journal.head().map(|o| o.to_string()).unwrap_or_else(|| "(none: empty repository)".into())
        )];
        if self.bp()?.ami().ok() == Some(ami.as_str()) {
            lines.push("Blueprint already up to date, aborting new commit.".into());
            return Ok(Output::text(lines.join("\n")));
        }
        let bp = self.bp_mut()?;
        bp.set_ami(&ami)?;
        bp.save()?;
        lines.push(format!("Blueprint updated with ami {ami}"));
        let after = format!(
            "automatic commit to document pipeline {file} after update at {}. Purpose: {message}\n\n{}",
            python_now(),
            self.provenance(&ami, Some(img.name.as_str()).filter(|n| !n.is_empty())).join("\n")
        );
        let new = journal.commit_file(&after).map_err(|e| match e {
            Error::Git { .. } | Error::GitLocked { .. } | Error::GitSignature { .. } => {
                Error::NotCommitted { file: file.clone(), ami: ami.clone(), cause: Box::new(e) }
            }
            other => other,
        })?;
        lines.push(format!(
            "new commit has hash: {}",
            new.or_else(|| journal.head()).map(|o| o.to_string()).unwrap_or_default()
        ));
        Ok(Output::text(lines.join("\n")))
    }
}

/// Bytes as `12.3 MiB`.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{b} B") } else { format!("{v:.1} {}", UNITS[u]) }
}
