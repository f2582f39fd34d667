//! The local backend: a small private cloud on this machine.
//!
//! Instances are folders whose `root/` plays `/home/ubuntu` (mounted from image layers by
//! `layers.rs`), processes inside them run in a bubblewrap sandbox (`sandbox.rs`), jobs are
//! detached, supervised process groups (`jobrunner.rs`), and buckets are folders served over the
//! S3 protocol by an embedded endpoint (`s3server.rs`) that the shell itself talks to through
//! aws-sdk-s3 (`objstore.rs`). Everything lives under the machine-wide home (`localhome.rs`).
//! State transitions follow EC2's rules and names; every change of a document happens under the
//! home's lock. Lifetimes are enforced the way the NeuroCAAS account guard does: an instance past
//! its `Timeout` is stopped (on any describe, and by the supervisors of its running jobs).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::backend::{
    Backend, BackendError, BackendKind, Identity, Image, ImageRequest, ImageState, Instance, InstanceState,
    JobReport, JobSpec, LaunchSpec, ObjectInfo, ResolvedImage, carries_tags,
};
use crate::clock;
use crate::error::{Error, Result};
use crate::jobrunner::{self, JobMeta};
use crate::layers;
use crate::localhome::{Home, read_json, write_json};
use crate::objstore::ObjectStore;
use crate::s3server::{self, Endpoint};
use crate::sandbox::{self, InstanceEnv, Sandbox};

/// The aliases that resolve to built-in base images, with the names their images carry.
pub const ALIASES: &[(&str, &str)] = &[
    ("ubuntu16", "ubuntu/images/hvm-ssd/ubuntu-xenial-16.04-amd64-server (devami base)"),
    ("ubuntu18", "ubuntu/images/hvm-ssd/ubuntu-bionic-18.04-amd64-server (devami base)"),
    ("ubuntu20", "ubuntu/images/hvm-ssd/ubuntu-focal-20.04-amd64-server (devami base)"),
    ("ubuntu22", "ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-amd64-server (devami base)"),
    ("ubuntu24", "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server (devami base)"),
    ("dlami16", "Deep Learning AMI (Ubuntu 16.04) (devami base)"),
    ("dlami18", "Deep Learning AMI (Ubuntu 18.04) (devami base)"),
    ("al2023", "al2023-ami-kernel-6.1-x86_64 (devami base)"),
];

/// An instance of the local backend, as stored in `instances/<id>/instance.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceMeta {
    pub id: String,
    pub image_id: String,
    pub instance_type: String,
    /// EC2 state name: pending, running, stopping, stopped, shutting-down, terminated.
    pub state: String,
    #[serde(default)]
    pub state_reason: Option<String>,
    /// Launch time or last start, epoch seconds.
    pub launch_time: i64,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// The image's layers the instance's filesystem sits on (oldest first).
    #[serde(default)]
    pub layers: Vec<String>,
}

/// An image of the local backend, as stored in `images/<id>/image.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageMeta {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub state: String,
    #[serde(default)]
    pub state_reason: Option<String>,
    pub created: i64,
    /// Layer ids, oldest first (none for a base image).
    #[serde(default)]
    pub layers: Vec<String>,
    #[serde(default)]
    pub alias: Option<String>,
    #[serde(default)]
    pub source_instance: Option<String>,
    #[serde(default)]
    pub size_bytes: u64,
    #[serde(default)]
    pub files: u64,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// Reads an instance's document.
pub fn read_instance(home: &Home, id: &str) -> Result<InstanceMeta> {
    read_json(&home.instance_dir(id).join("instance.json"))
}

fn write_instance(home: &Home, meta: &InstanceMeta) -> Result<()> {
    write_json(&home.instance_dir(&meta.id).join("instance.json"), meta)
}

fn read_image(home: &Home, id: &str) -> Result<ImageMeta> {
    read_json(&home.image_dir(id).join("image.json"))
}

fn write_image(home: &Home, meta: &ImageMeta) -> Result<()> {
    write_json(&home.image_dir(&meta.id).join("image.json"), meta)
}

/// Changes an instance's document under the home's lock.
fn update_instance(home: &Home, id: &str, f: impl FnOnce(&mut InstanceMeta)) -> Result<InstanceMeta> {
    let _lock = home.lock()?;
    let mut meta = read_instance(home, id)?;
    f(&mut meta);
    write_instance(home, &meta)?;
    Ok(meta)
}

/// Stops an instance now (lifetime expiry, `shutdown` inside the instance), killing its jobs.
/// Does nothing unless the instance is pending or running.
pub fn force_stop(home: &Home, id: &str, reason: &str) -> Result<()> {
    let meta = read_instance(home, id)?;
    if !matches!(meta.state.as_str(), "pending" | "running") {
        return Ok(());
    }
    update_instance(home, id, |m| {
        m.state = "stopping".into();
        m.state_reason = Some(reason.to_string());
    })?;
    jobrunner::cancel_instance_jobs(home, id, &format!("instance stopped: {reason}"))?;
    layers::unmount(home, id)?;
    update_instance(home, id, |m| m.state = "stopped".into())?;
    Ok(())
}

/// Lifetime left in seconds for a running instance with a `Timeout` tag.
pub fn lifetime_left(meta: &InstanceMeta, now: i64) -> Option<i64> {
    let minutes: i64 = meta.tags.get("Timeout")?.trim().parse().ok()?;
    Some(meta.launch_time + minutes * 60 - now)
}

/// The local backend.
#[derive(Debug)]
pub struct LocalBackend {
    home: Home,
    endpoint: OnceLock<Endpoint>,
    store: OnceLock<ObjectStore>,
    sandbox: OnceLock<Sandbox>,
    /// Buckets known to exist, so each is checked (HeadBucket, CreateBucket) once per process.
    buckets: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl LocalBackend {
    /// The backend over the home in `$DEVAMI_HOME` (or the user's data folder).
    pub fn from_env() -> Result<LocalBackend> {
        Ok(LocalBackend::new(Home::from_env()?))
    }

    /// The backend over `home`.
    pub fn new(home: Home) -> LocalBackend {
        LocalBackend {
            home,
            endpoint: OnceLock::new(),
            store: OnceLock::new(),
            sandbox: OnceLock::new(),
            buckets: std::sync::Mutex::new(std::collections::HashSet::new()),
        }
    }

    /// The machine-wide home.
    pub fn home(&self) -> &Home {
        &self.home
    }

    /// The embedded S3 endpoint, started on first use.
    pub fn endpoint(&self) -> Result<&Endpoint, BackendError> {
        if let Some(e) = self.endpoint.get() {
            return Ok(e);
        }
        let e = s3server::ensure_running(&self.home).map_err(|e| BackendError::Unreachable {
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

    /// The sandbox processes of instances run in (detected once).
    pub fn sandbox(&self) -> &Sandbox {
        self.sandbox.get_or_init(sandbox::detect)
    }

    fn instance(&self, id: &str) -> Result<InstanceMeta, BackendError> {
        if !is_id(id, "i-") || !self.home.instance_dir(id).join("instance.json").is_file() {
            return Err(BackendError::NotFound { what: "instance", id: id.to_string() });
        }
        let meta = read_instance(&self.home, id).map_err(svc)?;
        // The account guard: past its lifetime a running instance is stopped.
        if meta.state == "running"
            && let Some(left) = lifetime_left(&meta, clock::now())
            && left < 0
        {
            let minutes = meta.tags.get("Timeout").cloned().unwrap_or_default();
            force_stop(&self.home, id, &format!("lifetime of {minutes} minutes expired")).map_err(svc)?;
            return read_instance(&self.home, id).map_err(svc);
        }
        Ok(meta)
    }

    fn image(&self, id: &str) -> Result<ImageMeta, BackendError> {
        if !is_id(id, "ami-") || !self.home.image_dir(id).join("image.json").is_file() {
            return Err(BackendError::Service {
                code: Some(
                    if is_id(id, "ami-") { "InvalidAMIID.NotFound" } else { "InvalidAMIID.Malformed" }.into(),
                ),
                message: format!("the image id `{id}` does not exist"),
            });
        }
        read_image(&self.home, id).map_err(svc)
    }

    /// The environment of processes inside an instance.
    pub fn instance_env(&self, id: &str) -> Result<InstanceEnv, BackendError> {
        let env = self.endpoint()?.env();
        let shims = sandbox::install_shims(&self.home).map_err(svc)?;
        Ok(InstanceEnv {
            instance_id: id.to_string(),
            root: self.home.instance_dir(id).join("root"),
            instance_dir: self.home.instance_dir(id),
            shims,
            env,
        })
    }

    fn require_running(&self, id: &str) -> Result<InstanceMeta, BackendError> {
        let meta = self.instance(id)?;
        if meta.state != "running" {
            return Err(BackendError::InvalidState {
                what: "instance",
                id: id.to_string(),
                state: meta.state,
                message: "it must be running (start it with `start_devinstance`)".into(),
            });
        }
        layers::mount(&self.home, id, &meta.layers).map_err(svc)?;
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
        let _lock = self.home.lock().map_err(svc)?;
        let root = self.home.root().join(folder);
        let mut found = Vec::new();
        for id in self.home.list(folder).map_err(svc)? {
            if let Ok(meta) = read_json::<T>(&root.join(&id).join(document))
                && keep(&meta)
            {
                found.push(meta);
            }
        }
        Ok(found)
    }

    fn to_instance(&self, m: InstanceMeta) -> Instance {
        let running = m.state == "running";
        Instance {
            state: m.state.parse().unwrap_or(InstanceState::Stopped),
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
}

fn to_image(m: ImageMeta) -> Image {
    Image {
        id: m.id,
        name: m.name,
        state: ImageState::parse(&m.state),
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

fn svc(e: Error) -> BackendError {
    BackendError::Service {
        code: None,
        message: crate::console::render_error(&e).trim_end().replacen("error: ", "", 1),
    }
}

fn is_id(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix)
        .is_some_and(|hex| (8..=17).contains(&hex.len()) && hex.bytes().all(|b| b.is_ascii_hexdigit()))
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

    async fn resolve_alias(&self, name: &str) -> Result<Option<ResolvedImage>, BackendError> {
        let Some((alias, image_name)) = ALIASES.iter().find(|(a, _)| *a == name) else {
            return Ok(None);
        };
        let _lock = self.home.lock().map_err(svc)?;
        for id in self.home.list("images").map_err(svc)? {
            if let Ok(meta) = read_image(&self.home, &id)
                && meta.alias.as_deref() == Some(alias)
            {
                return Ok(Some(ResolvedImage {
                    alias: alias.to_string(),
                    image_id: id,
                    source: "local base image".into(),
                    published: Some(meta.created),
                }));
            }
        }
        let id = self.home.new_id("ami", &_lock).map_err(svc)?;
        let meta = ImageMeta {
            id: id.clone(),
            name: image_name.to_string(),
            description: format!(
                "devami's built-in base image for `{alias}`: an empty home over this machine's system"
            ),
            state: "available".into(),
            state_reason: None,
            created: clock::now(),
            layers: Vec::new(),
            alias: Some(alias.to_string()),
            source_instance: None,
            size_bytes: 0,
            files: 0,
            tags: BTreeMap::new(),
        };
        std::fs::create_dir_all(self.home.image_dir(&id))
            .map_err(|e| svc(Error::io("create", self.home.image_dir(&id), e)))?;
        write_image(&self.home, &meta).map_err(svc)?;
        Ok(Some(ResolvedImage {
            alias: alias.to_string(),
            image_id: id,
            source: "local base image".into(),
            published: Some(meta.created),
        }))
    }

    async fn describe_image(&self, image_id: &str) -> Result<Image, BackendError> {
        Ok(to_image(self.image(image_id)?))
    }

    async fn launch(&self, spec: &LaunchSpec) -> Result<Instance, BackendError> {
        let image = self.image(&spec.image_id)?;
        if image.state != "available" {
            return Err(BackendError::Service {
                code: Some("InvalidAMIID.Unavailable".into()),
                message: format!("image `{}` is {}, not available", image.id, image.state),
            });
        }
        if !crate::lint::is_instance_type(&spec.instance_type) {
            return Err(BackendError::Service {
                code: Some("InvalidParameterValue".into()),
                message: format!("invalid instance type `{}`", spec.instance_type),
            });
        }
        if spec.dry_run {
            return Err(BackendError::DryRunOk);
        }
        let meta = {
            let lock = self.home.lock().map_err(svc)?;
            let id = self.home.new_id("i", &lock).map_err(svc)?;
            let dir = self.home.instance_dir(&id);
            std::fs::create_dir_all(&dir).map_err(|e| svc(Error::io("create", &dir, e)))?;
            let meta = InstanceMeta {
                id,
                image_id: image.id.clone(),
                instance_type: spec.instance_type.clone(),
                state: "pending".into(),
                state_reason: None,
                launch_time: clock::now(),
                tags: spec.tags.iter().cloned().collect(),
                layers: image.layers.clone(),
            };
            write_instance(&self.home, &meta).map_err(svc)?;
            meta
        };
        let ready = layers::create_instance_fs(&self.home, &meta.id, &meta.layers)
            .and_then(|()| layers::mount(&self.home, &meta.id, &meta.layers));
        let meta = match ready {
            Ok(()) => update_instance(&self.home, &meta.id, |m| m.state = "running".into()).map_err(svc)?,
            Err(e) => {
                let reason = format!("Server.InternalError: {e}");
                update_instance(&self.home, &meta.id, |m| {
                    m.state = "terminated".into();
                    m.state_reason = Some(reason);
                })
                .map_err(svc)?
            }
        };
        Ok(self.to_instance(meta))
    }

    async fn describe_instance(&self, instance_id: &str) -> Result<Instance, BackendError> {
        let m = self.instance(instance_id)?;
        Ok(self.to_instance(m))
    }

    async fn start(&self, instance_id: &str) -> Result<(), BackendError> {
        let meta = self.instance(instance_id)?;
        match meta.state.as_str() {
            "running" | "pending" => return Ok(()),
            "stopped" => {}
            other => {
                return Err(BackendError::InvalidState {
                    what: "instance",
                    id: instance_id.into(),
                    state: other.into(),
                    message: "only a stopped instance can be started".into(),
                });
            }
        }
        update_instance(&self.home, instance_id, |m| {
            m.state = "pending".into();
            m.state_reason = None;
        })
        .map_err(svc)?;
        layers::mount(&self.home, instance_id, &meta.layers).map_err(svc)?;
        update_instance(&self.home, instance_id, |m| {
            m.state = "running".into();
            m.launch_time = clock::now();
        })
        .map_err(svc)?;
        Ok(())
    }

    async fn stop(&self, instance_id: &str) -> Result<(), BackendError> {
        let meta = self.instance(instance_id)?;
        match meta.state.as_str() {
            "pending" | "running" => force_stop(&self.home, instance_id, "User initiated").map_err(svc),
            "stopping" | "stopped" => Ok(()),
            other => Err(BackendError::InvalidState {
                what: "instance",
                id: instance_id.into(),
                state: other.into(),
                message: "a terminated instance cannot be stopped".into(),
            }),
        }
    }

    async fn terminate(&self, instance_id: &str) -> Result<(), BackendError> {
        let meta = self.instance(instance_id)?;
        if meta.state == "terminated" {
            return Ok(());
        }
        update_instance(&self.home, instance_id, |m| {
            m.state = "shutting-down".into();
            m.state_reason = Some("User initiated".into());
        })
        .map_err(svc)?;
        jobrunner::cancel_instance_jobs(&self.home, instance_id, "instance terminated").map_err(svc)?;
        layers::unmount(&self.home, instance_id).map_err(svc)?;
        layers::destroy_instance_fs(&self.home, instance_id).map_err(svc)?;
        update_instance(&self.home, instance_id, |m| m.state = "terminated".into()).map_err(svc)?;
        Ok(())
    }

    async fn find_instances(&self, tags: &[(String, String)]) -> Result<Vec<Instance>, BackendError> {
        let metas = self.scan("instances", "instance.json", |m: &InstanceMeta| {
            m.state != "terminated" && carries_tags(&m.tags, tags)
        })?;
        // Described again one by one without the lock, so that the account guard applies as on
        // any describe (it may stop an instance past its lifetime, which signals processes).
        let mut found = Vec::new();
        for meta in metas {
            match self.instance(&meta.id) {
                Ok(m) if m.state != "terminated" => found.push(self.to_instance(m)),
                Ok(_) | Err(BackendError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(found)
    }

    async fn find_images(&self, tags: &[(String, String)]) -> Result<Vec<Image>, BackendError> {
        let metas = self.scan("images", "image.json", |m: &ImageMeta| {
            m.state != "deregistered" && carries_tags(&m.tags, tags)
        })?;
        Ok(metas.into_iter().map(to_image).collect())
    }

    async fn set_tags(
        &self,
        instance_id: &str,
        tags: &[(String, String)],
        dry_run: bool,
    ) -> Result<(), BackendError> {
        self.instance(instance_id)?;
        if dry_run {
            return Err(BackendError::DryRunOk);
        }
        update_instance(&self.home, instance_id, |m| {
            for (k, v) in tags {
                m.tags.insert(k.clone(), v.clone());
            }
        })
        .map_err(svc)?;
        Ok(())
    }

    async fn create_image(&self, request: &ImageRequest) -> Result<String, BackendError> {
        let meta = self.instance(&request.instance_id)?;
        if !matches!(meta.state.as_str(), "running" | "stopped") {
            return Err(BackendError::InvalidState {
                what: "instance",
                id: meta.id,
                state: meta.state,
                message: "an image can be made only from a running or stopped instance".into(),
            });
        }
        let id = {
            let lock = self.home.lock().map_err(svc)?;
            let id = self.home.new_id("ami", &lock).map_err(svc)?;
            std::fs::create_dir_all(self.home.image_dir(&id))
                .map_err(|e| svc(Error::io("create", self.home.image_dir(&id), e)))?;
            write_image(
                &self.home,
                &ImageMeta {
                    id: id.clone(),
                    name: request.name.clone(),
                    description: request.description.clone(),
                    state: "pending".into(),
                    state_reason: None,
                    created: clock::now(),
                    layers: Vec::new(),
                    alias: None,
                    source_instance: Some(meta.id.clone()),
                    size_bytes: 0,
                    files: 0,
                    tags: request.tags.iter().cloned().collect(),
                },
            )
            .map_err(svc)?;
            id
        };
        // As CreateImage does by default, the instance is rebooted: its processes end.
        jobrunner::cancel_instance_jobs(&self.home, &meta.id, "instance rebooted by create_devami")
            .map_err(svc)?;
        let snap = layers::snapshot(&self.home, &meta.id, &meta.layers, &mut |_| {});
        match snap {
            Ok(snap) => {
                update_instance(&self.home, &meta.id, |m| m.layers = snap.layers.clone()).map_err(svc)?;
                // Overlay snapshots measure only the new layer: the image is its source plus that.
                let base =
                    read_image(&self.home, &meta.image_id).map(|i| (i.size_bytes, i.files)).unwrap_or((0, 0));
                let whole = snap.layers.len() == 1;
                let _lock = self.home.lock().map_err(svc)?;
                let mut img = read_image(&self.home, &id).map_err(svc)?;
                img.layers = snap.layers;
                img.size_bytes = if whole { snap.stats.bytes } else { base.0 + snap.stats.bytes };
                img.files = if whole { snap.stats.files } else { base.1 + snap.stats.files };
                img.state = "available".into();
                write_image(&self.home, &img).map_err(svc)?;
            }
            Err(e) => {
                let _lock = self.home.lock().map_err(svc)?;
                let mut img = read_image(&self.home, &id).map_err(svc)?;
                img.state = "failed".into();
                img.state_reason = Some(e.to_string());
                write_image(&self.home, &img).map_err(svc)?;
            }
        }
        Ok(id)
    }

    async fn delete_image(&self, image_id: &str) -> Result<(), BackendError> {
        let mut meta = self.image(image_id)?;
        let _lock = self.home.lock().map_err(svc)?;
        let mut used = std::collections::HashSet::new();
        for other in self.home.list("images").map_err(svc)? {
            if other != image_id
                && let Ok(m) = read_image(&self.home, &other)
                && m.state != "deregistered"
            {
                used.extend(m.layers);
            }
        }
        for other in self.home.list("instances").map_err(svc)? {
            if let Ok(m) = read_instance(&self.home, &other)
                && m.state != "terminated"
            {
                used.extend(m.layers);
            }
        }
        for layer in meta.layers.iter().filter(|l| !used.contains(*l)) {
            layers::delete_layer(&self.home, layer).map_err(svc)?;
        }
        meta.state = "deregistered".into();
        write_image(&self.home, &meta).map_err(svc)
    }

    async fn send_command(&self, job: &JobSpec) -> Result<String, BackendError> {
        self.require_running(&job.instance_id).map_err(|e| match e {
            BackendError::InvalidState { id, .. } => BackendError::Service {
                code: Some("InvalidInstanceId".into()),
                message: format!("instance `{id}` is not in a valid state for commands (it must be running)"),
            },
            other => other,
        })?;
        let env = self.endpoint()?.env();
        self.store_with(&job.output_bucket).await?;
        let id = {
            let lock = self.home.lock().map_err(svc)?;
            self.home.new_uuid(&lock).map_err(svc)?
        };
        let meta = JobMeta {
            command_id: id.clone(),
            instance_id: job.instance_id.clone(),
            commands: job.commands.clone(),
            working_directory: job.working_directory.clone(),
            execution_timeout: job.execution_timeout,
            bucket: job.output_bucket.clone(),
            output_prefix: job.output_prefix.clone(),
            state: "Pending".into(),
            exit_code: None,
            pgid: None,
            supervisor_pid: None,
            submitted: clock::now(),
            started: None,
            ended: None,
            detail: None,
        };
        jobrunner::submit(&self.home, meta, &env).map_err(svc)?;
        Ok(id)
    }

    async fn describe_command(&self, command_id: &str, instance_id: &str) -> Result<JobReport, BackendError> {
        if !self.home.command_dir(command_id).join("job.json").is_file() {
            return Err(BackendError::NotFound { what: "command", id: command_id.to_string() });
        }
        let report = jobrunner::report(&self.home, command_id).map_err(svc)?;
        if report.instance_id != instance_id {
            return Err(BackendError::NotFound {
                what: "command invocation",
                id: format!("{command_id} on {instance_id}"),
            });
        }
        Ok(report)
    }

    async fn cancel_command(&self, command_id: &str, _instance_id: &str) -> Result<(), BackendError> {
        jobrunner::cancel(&self.home, command_id).map_err(svc)
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
    ) -> Result<std::process::Command, BackendError> {
        self.require_running(id)?;
        let ienv = self.instance_env(id)?;
        let argv: Vec<String> = match command {
            Some(c) => vec!["bash".into(), "-c".into(), c.to_string()],
            None => vec!["bash".into(), "-l".into()],
        };
        sandbox::command(self.sandbox(), &ienv, working_directory, &argv).map_err(|e| match e {
            Error::Refused(message) => {
                BackendError::Service { code: Some("InvalidWorkingDirectory".into()), message }
            }
            other => svc(other),
        })
    }
}
