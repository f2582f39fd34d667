//! The local backend: a small private cloud on this machine, with EC2's, SSM's and S3's rules.
//!
//! Instances are containers of a container engine (`engine`, `instances`, `hardware`), images are
//! engine images (`images`), jobs run in the containers under detached supervisors (`jobs`), and
//! buckets are folders of the home served by an embedded S3 endpoint (`s3`). Invariants:
//! everything devami records lives under the machine-wide [`Home`], everything the engine holds
//! is labelled with that home, and no engine type leaves this folder (errors leave it as
//! [`BackendError`]s that keep their [`LocalError`] variant).

use std::collections::HashSet;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use crate::backend::objstore::ObjectStore;
use crate::backend::{
    Backend, BackendError, BackendKind, Identity, Image, ImageRequest, ImageState, Instance, InstanceState,
    JobReport, JobSpec, LaunchSpec, ObjectInfo, ResolvedImage, carries_tags,
};
use crate::clock;

pub mod detach;
pub mod engine;
pub mod error;
pub mod exec;
pub mod hardware;
pub mod home;
pub mod images;
pub mod instances;
pub mod jobs;
pub mod s3;

use engine::Engine;
use error::LocalError;
use home::Home;
use instances::InstanceMeta;
use s3::Endpoint;

/// The local backend.
#[derive(Debug)]
pub struct LocalBackend {
    home: Home,
    engine: tokio::sync::OnceCell<Engine>,
    endpoint: OnceLock<Endpoint>,
    store: OnceLock<ObjectStore>,
    /// Buckets known to exist, so each is checked (HeadBucket, CreateBucket) once per process.
    buckets: Mutex<HashSet<String>>,
}

/// An error of one of this backend's functions that return the crate's error (the home's
/// documents, a job's refusals), as a backend error that keeps its [`LocalError`] variant.
fn home_err(e: crate::error::Error) -> BackendError {
    BackendError::from(LocalError::from(e))
}

/// Whether `id` is shaped like one of ours (`i-` or `ami-` and 8 to 17 hex digits).
pub(crate) fn is_id(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix)
        .is_some_and(|hex| (8..=17).contains(&hex.len()) && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Prints a line of a pull's or an import's progress on stderr (rewritten in place on a terminal).
fn show_progress(line: &str) {
    let shown = crate::error::clipped(line, 100);
    if std::io::stderr().is_terminal() {
        eprint!("\r\x1b[K{shown}");
    } else {
        eprintln!("{shown}");
    }
}

fn end_progress() {
    if std::io::stderr().is_terminal() {
        eprint!("\r\x1b[K");
    }
}

impl LocalBackend {
    /// The backend over the home in `$DEVAMI_HOME` (or the user's data folder).
    pub fn from_env() -> crate::error::Result<LocalBackend> {
        Ok(LocalBackend::new(Home::from_env()?))
    }

    /// The backend over `home`.
    pub fn new(home: Home) -> LocalBackend {
        LocalBackend {
            home,
            engine: tokio::sync::OnceCell::new(),
            endpoint: OnceLock::new(),
            store: OnceLock::new(),
            buckets: Mutex::new(HashSet::new()),
        }
    }

    /// The machine-wide home.
    pub fn home(&self) -> &Home {
        &self.home
    }

    /// The container engine, found (or started) on first use.
    pub async fn engine(&self) -> Result<&Engine, BackendError> {
        self.engine.get_or_try_init(|| Engine::connect(&self.home)).await.map_err(BackendError::from)
    }

    /// The embedded S3 endpoint, started on first use.
    pub fn endpoint(&self) -> Result<&Endpoint, BackendError> {
        if let Some(e) = self.endpoint.get() {
            return Ok(e);
        }
        let e = s3::ensure_running(&self.home).map_err(|e| BackendError::Unreachable {
            endpoint: "the embedded S3 endpoint".into(),
            message: e.to_string(),
        })?;
        Ok(self.endpoint.get_or_init(|| e))
    }

    fn store(&self) -> Result<&ObjectStore, BackendError> {
        if let Some(s) = self.store.get() {
            return Ok(s);
        }
        let s = ObjectStore::local(self.endpoint()?);
        Ok(self.store.get_or_init(|| s))
    }

    /// The object store, with `bucket` created if it does not exist yet (checked once per process).
    async fn store_with(&self, bucket: &str) -> Result<&ObjectStore, BackendError> {
        let store = self.store()?;
        let known = self.buckets.lock().map(|b| b.contains(bucket)).unwrap_or(false);
        if !known {
            store.ensure_bucket(bucket).await?;
            if let Ok(mut b) = self.buckets.lock() {
                b.insert(bucket.to_string());
            }
        }
        Ok(store)
    }

    async fn instance(&self, id: &str) -> Result<InstanceMeta, BackendError> {
        if !is_id(id, "i-") || !self.home.instance_dir(id).join("instance.json").is_file() {
            return Err(BackendError::not_found("instance", id));
        }
        let engine = self.engine().await?;
        Ok(instances::describe(&self.home, engine, id).await?)
    }

    fn image(&self, id: &str) -> Result<images::ImageMeta, BackendError> {
        let message = format!("the image id {} does not exist", crate::error::shown(id));
        if !is_id(id, "ami-") {
            // A bad request rather than a missing image, as EC2 answers it.
            return Err(BackendError::Service { code: Some("InvalidAMIID.Malformed".into()), message });
        }
        if !self.home.image_dir(id).join("image.json").is_file() {
            let code = Some("InvalidAMIID.NotFound".into());
            return Err(BackendError::NotFound { what: "image", code, message });
        }
        Ok(images::describe(&self.home, id)?)
    }

    /// The instance, if it is running; otherwise SSM's `InvalidInstanceId` answer to a command.
    async fn running_for_command(&self, id: &str) -> Result<InstanceMeta, BackendError> {
        let meta = self.instance(id).await?;
        if meta.state != InstanceState::Running {
            return Err(BackendError::InvalidState {
                what: "instance",
                code: Some("InvalidInstanceId".into()),
                message: format!("instance `{id}` is not in a valid state for commands (it must be running)"),
            });
        }
        Ok(meta)
    }

    /// The documents in `folder` (`instances`, `images`) that `keep` accepts, read in one pass
    /// under the home's lock; a folder without a readable document is skipped.
    fn scan<T: serde::de::DeserializeOwned>(
        &self,
        folder: &str,
        document: &str,
        keep: impl Fn(&T) -> bool,
    ) -> Result<Vec<T>, BackendError> {
        let _lock = self.home.lock().map_err(home_err)?;
        let root = self.home.root().join(folder);
        let mut found = Vec::new();
        for id in self.home.list(folder).map_err(home_err)? {
            if let Ok(meta) = home::read_json::<T>(&root.join(&id).join(document))
                && keep(&meta)
            {
                found.push(meta);
            }
        }
        Ok(found)
    }
}

fn to_instance(m: InstanceMeta) -> Instance {
    let running = m.state == InstanceState::Running;
    Instance {
        state: m.state,
        id: m.id,
        image_id: m.image_id,
        instance_type: m.instance_type,
        state_reason: m.state_reason,
        launch_time: Some(m.launch_time),
        public_ip: running.then(|| "127.0.0.1".to_string()),
        private_ip: running.then(|| "127.0.0.1".to_string()),
        tags: m.tags,
        status_checks: running.then(|| ("ok".to_string(), "ok".to_string())),
    }
}

fn to_image(m: images::ImageMeta) -> Image {
    Image {
        id: m.id,
        name: m.name,
        state: m.state,
        state_reason: m.state_reason,
        created: Some(m.created),
        source_instance: m.source_instance,
        size_bytes: Some(m.size_bytes),
        progress: None,
        root_device_name: Some("/dev/sda1".into()),
        snapshot_ids: Vec::new(),
        tags: m.tags,
    }
}

#[async_trait::async_trait]
impl Backend for LocalBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Local
    }

    async fn identity(&self) -> Result<Identity, BackendError> {
        let user = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| format!("uid{}", unsafe { libc::getuid() }));
        Ok(Identity { arn: format!("arn:aws:iam::000000000000:user/{user}"), account: "000000000000".into() })
    }

    async fn about(&self) -> Result<Option<String>, BackendError> {
        let engine = self.engine().await?;
        let info = engine.info();
        Ok(Some(format!("{} {} at {}", info.name, info.version, engine.address)))
    }

    async fn resolve_alias(&self, name: &str) -> Result<Option<ResolvedImage>, BackendError> {
        if !images::ALIASES.iter().any(|(a, ..)| *a == name)
            && !self.home.root().join("aliases.json").exists()
        {
            return Ok(None);
        }
        let engine = self.engine().await?;
        let found = images::resolve(&self.home, engine, name, &mut show_progress).await;
        end_progress();
        Ok(found?.map(|meta| ResolvedImage {
            alias: name.to_string(),
            source: format!(
                "local base image of {}",
                meta.source_ref.as_deref().unwrap_or("an imported file")
            ),
            image_id: meta.id,
            published: Some(meta.created),
        }))
    }

    async fn import_image(&self, file: &Path, name: Option<&str>) -> Result<String, BackendError> {
        let engine = self.engine().await?;
        let meta = images::import(&self.home, engine, file, name, &mut show_progress).await;
        end_progress();
        Ok(meta?.id)
    }

    async fn describe_image(&self, image_id: &str) -> Result<Image, BackendError> {
        Ok(to_image(self.image(image_id)?))
    }

    async fn launch(&self, spec: &LaunchSpec) -> Result<Instance, BackendError> {
        let image = self.image(&spec.image_id)?;
        let engine_image = match (&image.state, &image.engine_image) {
            (ImageState::Available, Some(e)) => e.clone(),
            _ => {
                return Err(BackendError::InvalidState {
                    what: "image",
                    code: Some("InvalidAMIID.Unavailable".into()),
                    message: format!("image `{}` is {}, not available", image.id, image.state),
                });
            }
        };
        if !crate::blueprint::lint::is_instance_type(&spec.instance_type) {
            return Err(BackendError::Service {
                code: Some("InvalidParameterValue".into()),
                message: format!("invalid instance type {}", crate::error::shown(&spec.instance_type)),
            });
        }
        let engine = self.engine().await?;
        if spec.dry_run {
            return Err(BackendError::DryRunOk);
        }
        let launch = instances::Launch {
            image_id: &image.id,
            engine_image: &engine_image,
            instance_type: &spec.instance_type,
            tags: &spec.tags,
            visible: spec.visible.as_deref(),
        };
        let meta = instances::record_launch(&self.home, &launch).map_err(home_err)?;
        let meta = instances::make(&self.home, engine, &meta, &launch).await?;
        Ok(to_instance(meta))
    }

    async fn describe_instance(&self, instance_id: &str) -> Result<Instance, BackendError> {
        Ok(to_instance(self.instance(instance_id).await?))
    }

    async fn start(&self, instance_id: &str) -> Result<(), BackendError> {
        let meta = self.instance(instance_id).await?;
        match meta.state {
            InstanceState::Running | InstanceState::Pending => Ok(()),
            InstanceState::Stopped => {
                Ok(instances::start(&self.home, self.engine().await?, instance_id).await?)
            }
            other => Err(BackendError::invalid_state(
                "instance",
                instance_id,
                other,
                "only a stopped instance can be started",
            )),
        }
    }

    async fn stop(&self, instance_id: &str) -> Result<(), BackendError> {
        let meta = self.instance(instance_id).await?;
        match meta.state {
            InstanceState::Pending | InstanceState::Running => {
                Ok(instances::force_stop(&self.home, self.engine().await?, instance_id, "User initiated")
                    .await?)
            }
            InstanceState::Stopping | InstanceState::Stopped => Ok(()),
            other => Err(BackendError::invalid_state(
                "instance",
                instance_id,
                other,
                "a terminated instance cannot be stopped",
            )),
        }
    }

    async fn terminate(&self, instance_id: &str) -> Result<(), BackendError> {
        let meta = self.instance(instance_id).await?;
        if meta.state == InstanceState::Terminated {
            return Ok(());
        }
        let engine = self.engine().await?;
        instances::terminate(&self.home, engine, instance_id).await?;
        images::collect_garbage(&self.home, engine).await?;
        Ok(())
    }

    async fn find_instances(&self, tags: &[(String, String)]) -> Result<Vec<Instance>, BackendError> {
        let engine = self.engine().await?;
        instances::adopt_unknown(&self.home, engine).await?;
        let metas = self.scan("instances", "instance.json", |m: &InstanceMeta| {
            m.state != InstanceState::Terminated && carries_tags(&m.tags, tags)
        })?;
        // Described again one by one without the lock, so that the account guard applies as on
        // any describe (it may stop an instance past its lifetime).
        let mut found = Vec::new();
        for meta in metas {
            match self.instance(&meta.id).await {
                Ok(m) if m.state != InstanceState::Terminated => found.push(to_instance(m)),
                Ok(_) | Err(BackendError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(found)
    }

    async fn find_images(&self, tags: &[(String, String)]) -> Result<Vec<Image>, BackendError> {
        let engine = self.engine().await?;
        images::adopt_unknown(&self.home, engine).await?;
        let metas = self.scan("images", "image.json", |m: &images::ImageMeta| {
            m.state != ImageState::Deregistered && carries_tags(&m.tags, tags)
        })?;
        let mut found = Vec::new();
        for meta in metas {
            // A pending one is described again: its builder may have died.
            let meta = if meta.state == ImageState::Pending { self.image(&meta.id)? } else { meta };
            found.push(to_image(meta));
        }
        Ok(found)
    }

    async fn set_tags(
        &self,
        instance_id: &str,
        tags: &[(String, String)],
        dry_run: bool,
    ) -> Result<(), BackendError> {
        self.instance(instance_id).await?;
        if dry_run {
            return Err(BackendError::DryRunOk);
        }
        instances::update(&self.home, instance_id, |m| {
            for (k, v) in tags {
                m.tags.insert(k.clone(), v.clone());
            }
        })
        .map_err(home_err)?;
        Ok(())
    }

    async fn create_image(&self, request: &ImageRequest) -> Result<String, BackendError> {
        let meta = self.instance(&request.instance_id).await?;
        if !matches!(meta.state, InstanceState::Running | InstanceState::Stopped) {
            return Err(BackendError::invalid_state(
                "instance",
                &meta.id,
                meta.state,
                "an image can be made only from a running or stopped instance",
            ));
        }
        Ok(images::create(&self.home, request, &meta.image_id)?)
    }

    async fn delete_image(&self, image_id: &str) -> Result<(), BackendError> {
        self.image(image_id)?;
        Ok(images::delete(&self.home, self.engine().await?, image_id).await?)
    }

    async fn send_command(&self, job: &JobSpec) -> Result<String, BackendError> {
        self.running_for_command(&job.instance_id).await?;
        let env = self.endpoint()?.env();
        self.store_with(&job.output_bucket).await?;
        let id = {
            let lock = self.home.lock().map_err(home_err)?;
            self.home.new_uuid(&lock).map_err(home_err)?
        };
        let meta = jobs::JobMeta {
            command_id: id.clone(),
            instance_id: job.instance_id.clone(),
            commands: job.commands.clone(),
            working_directory: job.working_directory.clone(),
            execution_timeout: job.execution_timeout,
            bucket: job.output_bucket.clone(),
            output_prefix: job.output_prefix.clone(),
            state: crate::backend::JobState::Pending,
            exit_code: None,
            supervisor_pid: None,
            submitted: clock::now(),
            started: None,
            ended: None,
            detail: None,
        };
        jobs::submit(&self.home, meta, &env).map_err(home_err)?;
        Ok(id)
    }

    async fn describe_command(&self, command_id: &str, instance_id: &str) -> Result<JobReport, BackendError> {
        if !self.home.command_dir(command_id).join("job.json").is_file() {
            return Err(BackendError::not_found("command", command_id));
        }
        let report = jobs::report(&self.home, command_id).map_err(home_err)?;
        if report.instance_id != instance_id {
            return Err(BackendError::not_found(
                "command invocation",
                &format!("{command_id} on {instance_id}"),
            ));
        }
        Ok(report)
    }

    async fn cancel_command(&self, command_id: &str, _instance_id: &str) -> Result<(), BackendError> {
        Ok(jobs::cancel(&self.home, self.engine().await?, command_id).await?)
    }

    async fn put_object(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<(), BackendError> {
        let store = self.store_with(bucket).await?;
        store.put(bucket, key, body).await
    }

    async fn get_object(&self, bucket: &str, key: &str) -> Result<Vec<u8>, BackendError> {
        self.store()?.get(bucket, key).await
    }

    async fn list_objects(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectInfo>, BackendError> {
        let store = self.store_with(bucket).await?;
        store.list(bucket, prefix).await
    }

    async fn upload_file(
        &self,
        bucket: &str,
        key: &str,
        local: &Path,
        progress: &mut (dyn FnMut(u64, u64) + Send),
    ) -> Result<u64, BackendError> {
        let store = self.store_with(bucket).await?;
        store.upload_file(bucket, key, local, progress).await
    }

    async fn download_file(
        &self,
        bucket: &str,
        key: &str,
        local: &Path,
        progress: &mut (dyn FnMut(u64, u64) + Send),
    ) -> Result<u64, BackendError> {
        self.store()?.download_file(bucket, key, local, progress).await
    }

    fn shell_command(
        &self,
        id: &str,
        _address: Option<&str>,
        working_directory: &str,
        command: Option<&str>,
        _blueprint: Option<&Path>,
    ) -> Result<std::process::Command, BackendError> {
        if !is_id(id, "i-") || !self.home.instance_dir(id).join("instance.json").is_file() {
            return Err(BackendError::not_found("instance", id));
        }
        let env = self.endpoint()?.env();
        let exe = detach::devami_exe().map_err(home_err)?;
        let mut cmd = std::process::Command::new(exe);
        cmd.arg("__exec").arg(self.home.root()).arg(id).arg("--cwd").arg(working_directory);
        for (k, v) in env {
            cmd.env(k, v);
        }
        match command {
            Some(c) => cmd.arg("--command").arg(c),
            None => cmd.arg("--tty"),
        };
        Ok(cmd)
    }
}
