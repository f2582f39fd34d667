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
//!
//! Where the files must be copied (copy mode, see `layers.rs`), a launch and an image answer at
//! once with a `pending` instance or image, as EC2 does, and a detached builder process
//! (`devami __build`, started with [`spawn_builder`]) copies the files and makes the instance
//! `running` or the image `available`: the caller records the id before any copy begins, and
//! killing it (SIGKILL, a closed terminal) neither loses the id nor stops the copy half-way. In
//! overlay mode the same steps run in the caller (they take milliseconds). Either way the
//! resource records its builder (pid and since when); a describe that finds a pending resource
//! whose builder died (the machine rebooted, the builder was killed) fails the image or
//! terminates the instance, naming the builder, and removes the partial copy
//! (`layers/.tmp-<layer>`, `instances/<id>/.root.tmp`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    /// While pending: the process making its filesystem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builder: Option<Builder>,
}

/// The process building a pending resource's files (a launch's filesystem, a snapshot's layer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Builder {
    pub pid: u32,
    /// When it took the work on, epoch seconds of the wall clock.
    pub since: i64,
}

impl Builder {
    fn me() -> Builder {
        let since = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        Builder { pid: std::process::id(), since: i64::try_from(since).unwrap_or(i64::MAX) }
    }

    /// Whether the builder may still be at work: its process lives and started before it took
    /// the work on (a later process with the same pid is not the builder).
    fn alive(&self) -> bool {
        let since = UNIX_EPOCH + Duration::from_secs(u64::try_from(self.since).unwrap_or(0));
        crate::state::may_still_write(self.pid, since)
    }
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
    /// While pending: the process making its layer, and the layer's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builder: Option<Builder>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub building_layer: Option<String>,
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
    // Saturating: the home's documents and tags may hold any number.
    Some(meta.launch_time.saturating_add(minutes.saturating_mul(60)).saturating_sub(now))
}

/// Starts `devami __build KIND HOME ID` detached (it outlives the caller), its output appended to
/// `run/build.log`.
pub fn spawn_builder(home: &Home, kind: &str, id: &str) -> Result<()> {
    let exe = std::env::current_exe().map_err(|e| Error::io("find", "the devami executable", e))?;
    let mut cmd = std::process::Command::new(&exe);
    cmd.arg("__build").arg(kind).arg(home.root()).arg(id);
    // A builder outlives the shell: it keeps none of the developer's AWS settings or secrets.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("AWS_") {
            cmd.env_remove(name);
        }
    }
    jobrunner::spawn_detached(cmd, &home.run_dir().join("build.log"))
}

/// The hidden subcommand `devami __build instance|image HOME ID`: makes a pending instance's
/// filesystem or a pending image's layer (see the module's documentation). Exit status 0 when
/// the resource was dealt with (made, failed, or no longer pending), 1 on an error of its own.
pub fn build(kind: &str, home_root: &Path, id: &str) -> i32 {
    let built = Home::at(home_root.to_path_buf()).and_then(|home| match kind {
        "instance" => build_instance(&home, id),
        "image" => build_image(&home, id),
        other => Err(Error::Refused(format!("`{other}` is neither `instance` nor `image`"))),
    });
    match built {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("devami __build {kind} {id}: {}", crate::console::render_error(&e).trim_end());
            1
        }
    }
}

/// Takes a pending instance's build on (records this process as its builder); `None` when it
/// is no longer pending.
fn claim_instance(home: &Home, id: &str) -> Result<Option<InstanceMeta>> {
    let _lock = home.lock()?;
    let mut meta = read_instance(home, id)?;
    if meta.state != "pending" {
        return Ok(None);
    }
    meta.builder = Some(Builder::me());
    write_instance(home, &meta)?;
    Ok(Some(meta))
}

fn build_instance(home: &Home, id: &str) -> Result<()> {
    let Some(meta) = claim_instance(home, id)? else { return Ok(()) };
    let ready = layers::create_instance_fs(home, id, &meta.layers)
        .and_then(|()| layers::mount(home, id, &meta.layers));
    finish_launch(home, id, ready).map(|_| ())
}

/// A launch's outcome: `running`, or `terminated` with the reason. An instance that is no longer
/// pending (terminated or stopped meanwhile) is left as it is.
fn finish_launch(home: &Home, id: &str, ready: Result<()>) -> Result<InstanceMeta> {
    let _lock = home.lock()?;
    let mut meta = read_instance(home, id)?;
    if meta.state != "pending" {
        return Ok(meta);
    }
    match ready {
        Ok(()) => meta.state = "running".into(),
        Err(e) => {
            meta.state = "terminated".into();
            meta.state_reason = Some(format!("Server.InternalError: {e}"));
        }
    }
    meta.builder = None;
    write_instance(home, &meta)?;
    Ok(meta)
}

/// A pending instance whose builder died: terminated, naming it, its partial filesystem removed.
fn abandon_launch(home: &Home, id: &str) -> Result<InstanceMeta> {
    {
        let _lock = home.lock()?;
        let mut meta = read_instance(home, id)?;
        let Some(builder) = meta.builder.clone().filter(|b| meta.state == "pending" && !b.alive()) else {
            return Ok(meta);
        };
        meta.state = "shutting-down".into();
        meta.state_reason = Some(format!(
            "Server.InternalError: the launch was interrupted: process {} ended before the \
             instance's files were ready",
            builder.pid
        ));
        meta.builder = None;
        write_instance(home, &meta)?;
    }
    layers::destroy_instance_fs(home, id)?;
    update_instance(home, id, |m| m.state = "terminated".into())
}

/// Takes a pending image's build on; `None` when it is no longer pending.
fn claim_image(home: &Home, id: &str) -> Result<Option<ImageMeta>> {
    let _lock = home.lock()?;
    let mut meta = read_image(home, id)?;
    if meta.state != "pending" {
        return Ok(None);
    }
    meta.builder = Some(Builder::me());
    write_image(home, &meta)?;
    Ok(Some(meta))
}

fn build_image(home: &Home, id: &str) -> Result<()> {
    let Some(image) = claim_image(home, id)? else { return Ok(()) };
    let (Some(instance_id), Some(layer)) = (image.source_instance.clone(), image.building_layer.clone())
    else {
        let why = Error::Refused(format!("image `{id}` names no source instance or layer"));
        return finish_image(home, id, Err(why));
    };
    let snap = read_instance(home, &instance_id)
        .and_then(|inst| layers::snapshot_into(home, &instance_id, &inst.layers, &layer, &mut |_| {}));
    finish_image(home, id, snap)
}

/// A snapshot's outcome: the instance on its new layers and the image `available` with its
/// layers and size, or the image `failed` with the reason. An image that is no longer pending is
/// left as it is.
fn finish_image(home: &Home, id: &str, snap: Result<layers::Snapshot>) -> Result<()> {
    let _lock = home.lock()?;
    let mut img = read_image(home, id)?;
    match snap {
        Ok(snap) => {
            let source = img.source_instance.clone().unwrap_or_default();
            let mut inst = read_instance(home, &source)?;
            inst.layers = snap.layers.clone();
            write_instance(home, &inst)?;
            if img.state != "pending" {
                return Ok(());
            }
            // Overlay snapshots measure only the new layer: the image is its source plus that.
            let base = read_image(home, &inst.image_id).map(|i| (i.size_bytes, i.files)).unwrap_or((0, 0));
            let whole = snap.layers.len() == 1;
            img.layers = snap.layers;
            img.size_bytes = if whole { snap.stats.bytes } else { base.0 + snap.stats.bytes };
            img.files = if whole { snap.stats.files } else { base.1 + snap.stats.files };
            img.state = "available".into();
        }
        Err(e) if img.state == "pending" => {
            img.state = "failed".into();
            img.state_reason = Some(e.to_string());
        }
        Err(_) => return Ok(()),
    }
    img.builder = None;
    img.building_layer = None;
    write_image(home, &img)
}

/// A pending image whose builder died: failed, naming it, its partial layer removed.
fn abandon_image(home: &Home, id: &str) -> Result<ImageMeta> {
    let layer = {
        let _lock = home.lock()?;
        let mut meta = read_image(home, id)?;
        let Some(builder) = meta.builder.clone().filter(|b| meta.state == "pending" && !b.alive()) else {
            return Ok(meta);
        };
        meta.state = "failed".into();
        meta.state_reason = Some(format!(
            "Server.InternalError: the snapshot was interrupted: process {} ended before the \
             image's files were copied",
            builder.pid
        ));
        meta.builder = None;
        let layer = meta.building_layer.take();
        write_image(home, &meta)?;
        layer
    };
    if let Some(layer) = layer {
        layers::remove_partial_layer(home, &layer)?;
    }
    read_image(home, id)
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
        let mut meta = read_instance(&self.home, id).map_err(svc)?;
        if meta.state == "pending" && meta.builder.as_ref().is_some_and(|b| !b.alive()) {
            meta = abandon_launch(&self.home, id).map_err(svc)?;
        }
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
                message: format!("the image id {} does not exist", crate::error::shown(id)),
            });
        }
        let meta = read_image(&self.home, id).map_err(svc)?;
        if meta.state == "pending" && meta.builder.as_ref().is_some_and(|b| !b.alive()) {
            return abandon_image(&self.home, id).map_err(svc);
        }
        Ok(meta)
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
            visible: None,
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
            builder: None,
            building_layer: None,
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
                message: format!("invalid instance type {}", crate::error::shown(&spec.instance_type)),
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
                builder: Some(Builder::me()),
            };
            write_instance(&self.home, &meta).map_err(svc)?;
            meta
        };
        // Copying the image's files takes a while: a builder of its own does it (the module's
        // documentation); should it not start, this process does.
        if layers::mode(&self.home).is_ok_and(|m| m == layers::FsMode::Copy)
            && spawn_builder(&self.home, "instance", &meta.id).is_ok()
        {
            return Ok(self.to_instance(meta));
        }
        let ready = layers::create_instance_fs(&self.home, &meta.id, &meta.layers)
            .and_then(|()| layers::mount(&self.home, &meta.id, &meta.layers));
        let meta = finish_launch(&self.home, &meta.id, ready).map_err(svc)?;
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
        // A pending one is described again without the lock: its builder may have died.
        let mut found = Vec::new();
        for meta in metas {
            found.push(to_image(if meta.state == "pending" { self.image(&meta.id)? } else { meta }));
        }
        Ok(found)
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
            let layer = self.home.new_id("layer", &lock).map_err(svc)?;
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
                    builder: Some(Builder::me()),
                    building_layer: Some(layer),
                    tags: request.tags.iter().cloned().collect(),
                },
            )
            .map_err(svc)?;
            id
        };
        // As CreateImage does by default, the instance is rebooted: its processes end.
        jobrunner::cancel_instance_jobs(&self.home, &meta.id, "instance rebooted by create_devami")
            .map_err(svc)?;
        // Copying the instance's files takes a while: a builder of its own does it (the module's
        // documentation); should it not start, this process does.
        let copy = layers::instance_mode(&self.home, &meta.id).is_ok_and(|m| m == layers::FsMode::Copy);
        if !(copy && spawn_builder(&self.home, "image", &id).is_ok()) {
            build_image(&self.home, &id).map_err(svc)?;
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
        blueprint: Option<&Path>,
    ) -> Result<std::process::Command, BackendError> {
        self.require_running(id)?;
        let mut ienv = self.instance_env(id)?;
        ienv.visible = blueprint.map(Path::to_path_buf);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A builder that was: a process that ended and was reaped.
    fn dead_builder() -> Builder {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        Builder { pid, ..Builder::me() }
    }

    fn pending_image(home: &Home, id: &str, builder: Builder, layer: &str) {
        std::fs::create_dir_all(home.image_dir(id)).unwrap();
        let meta = ImageMeta {
            id: id.into(),
            name: "img".into(),
            description: String::new(),
            state: "pending".into(),
            state_reason: None,
            created: 0,
            layers: Vec::new(),
            alias: None,
            source_instance: Some("i-0123456789abcdef0".into()),
            size_bytes: 0,
            files: 0,
            builder: Some(builder),
            building_layer: Some(layer.into()),
            tags: BTreeMap::new(),
        };
        write_image(home, &meta).unwrap();
    }

    fn pending_instance(home: &Home, id: &str, builder: Builder) {
        std::fs::create_dir_all(home.instance_dir(id).join(".root.tmp/sub")).unwrap();
        std::fs::write(home.instance_dir(id).join(".root.tmp/sub/file"), b"partial").unwrap();
        let meta = InstanceMeta {
            id: id.into(),
            image_id: "ami-0123456789abcdef0".into(),
            instance_type: "t2.micro".into(),
            state: "pending".into(),
            state_reason: None,
            launch_time: 0,
            tags: BTreeMap::new(),
            layers: Vec::new(),
            builder: Some(builder),
        };
        write_instance(home, &meta).unwrap();
    }

    #[test]
    fn a_pending_image_whose_builder_died_fails_and_its_partial_layer_goes() {
        let tmp = tempfile::tempdir().unwrap();
        let home = Home::at(tmp.path().to_path_buf()).unwrap();
        let backend = LocalBackend::new(home.clone());
        let dead = dead_builder();
        pending_image(&home, "ami-0123456789abcdef1", dead.clone(), "layer-0123456789abcdef1");
        let partial = home.layer_dir(".tmp-layer-0123456789abcdef1");
        std::fs::create_dir_all(partial.join("d")).unwrap();
        std::fs::write(partial.join("d/big.bin"), b"partial").unwrap();
        // A live builder (this process) is at work: still pending, the copy stays.
        pending_image(&home, "ami-0123456789abcdef2", Builder::me(), "layer-0123456789abcdef2");
        std::fs::create_dir_all(home.layer_dir(".tmp-layer-0123456789abcdef2")).unwrap();

        let failed = backend.image("ami-0123456789abcdef1").unwrap();
        assert_eq!(failed.state, "failed");
        let reason = failed.state_reason.unwrap_or_default();
        assert!(reason.contains(&format!("process {} ended", dead.pid)), "{reason}");
        assert_eq!((failed.builder, failed.building_layer), (None, None));
        assert!(!partial.exists());
        assert_eq!(read_image(&home, "ami-0123456789abcdef1").unwrap().state, "failed");
        let working = backend.image("ami-0123456789abcdef2").unwrap();
        assert_eq!(working.state, "pending");
        assert!(home.layer_dir(".tmp-layer-0123456789abcdef2").exists());
        // What `sweep` sees says the same.
        let found = futures_block_on(backend.find_images(&[])).unwrap();
        let states: Vec<_> = found.iter().map(|i| (i.id.as_str(), i.state.as_str())).collect();
        assert!(states.contains(&("ami-0123456789abcdef1", "failed")), "{states:?}");
        assert!(states.contains(&("ami-0123456789abcdef2", "pending")), "{states:?}");
    }

    #[test]
    fn a_pending_instance_whose_builder_died_is_terminated_and_its_partial_copy_goes() {
        let tmp = tempfile::tempdir().unwrap();
        let home = Home::at(tmp.path().to_path_buf()).unwrap();
        let backend = LocalBackend::new(home.clone());
        let dead = dead_builder();
        pending_instance(&home, "i-0123456789abcdef1", dead.clone());
        pending_instance(&home, "i-0123456789abcdef2", Builder::me());
        let gone = backend.instance("i-0123456789abcdef1").unwrap();
        assert_eq!(gone.state, "terminated");
        let reason = gone.state_reason.unwrap_or_default();
        assert!(reason.contains(&format!("process {} ended", dead.pid)), "{reason}");
        assert!(!home.instance_dir("i-0123456789abcdef1").join(".root.tmp").exists());
        assert_eq!(backend.instance("i-0123456789abcdef2").unwrap().state, "pending");
        assert!(home.instance_dir("i-0123456789abcdef2").join(".root.tmp").exists());
        // A builder whose launch ends finds the instance no longer pending and leaves it so.
        let meta = finish_launch(&home, "i-0123456789abcdef1", Ok(())).unwrap();
        assert_eq!(meta.state, "terminated");
        let meta = finish_launch(&home, "i-0123456789abcdef2", Ok(())).unwrap();
        assert_eq!((meta.state.as_str(), meta.builder), ("running", None));
    }

    fn futures_block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
    }
}
