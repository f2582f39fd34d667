//! Local instances: one container per instance, with EC2's states, rules, tags and lifetimes.
//!
//! The home's document (`instances/<id>/instance.json`) holds what EC2 keeps (state, reason,
//! tags, launch time); the engine's container, labelled with the `i-` id, holds the machine (its
//! root filesystem, processes, hostname). Invariants: the document is written (`pending`, with
//! its builder) before the container is made, so a killed launch never loses an id; every change
//! of a document happens under the home's lock, and no lock is held while the engine works; a
//! describe reconciles the document with the container (a container that stopped or vanished
//! behind devami's back is reported so, with the reason) and enforces the lifetime (`Timeout`
//! tag) as the NeuroCAAS account guard does.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::detach::Builder;
use super::engine::{self, ContainerSpec, Engine};
use super::error::LocalError;
use super::hardware;
use super::home::{Home, read_json, write_json};
use crate::backend::InstanceState;
use crate::clock;

/// Where an instance's plumbing (power commands, the stop request) appears inside it.
pub const PLUMBING_INSIDE: &str = "/run/devami";
/// The file a `shutdown` inside an instance leaves for devami (in the plumbing folder).
pub const STOP_MARKER: &str = "stop-requested";
/// The power commands, one script called by many names.
const POWER_SHIM: &str = include_str!("power.sh");
const POWER_NAMES: &[&str] = &["shutdown", "poweroff", "halt", "reboot", "telinit", "systemctl"];
/// How long a stopping instance's processes get between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// An instance, as stored in `instances/<id>/instance.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceMeta {
    pub id: String,
    pub image_id: String,
    pub instance_type: String,
    pub state: InstanceState,
    #[serde(default)]
    pub state_reason: Option<String>,
    /// Launch time or last start, epoch seconds.
    pub launch_time: i64,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// The engine's container id, once made.
    #[serde(default)]
    pub container: Option<String>,
    /// While pending: the process making its container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builder: Option<Builder>,
}

/// The container's name for an instance.
pub fn container_name(id: &str) -> String {
    format!("devami-{id}")
}

/// The instance's plumbing folder on this machine (bound at [`PLUMBING_INSIDE`]).
pub fn plumbing_dir(home: &Home, id: &str) -> PathBuf {
    home.instance_dir(id).join("run")
}

/// Reads an instance's document.
pub fn read(home: &Home, id: &str) -> crate::error::Result<InstanceMeta> {
    read_json(&home.instance_dir(id).join("instance.json"))
}

/// Writes an instance's document (call under the home's lock).
pub fn write(home: &Home, meta: &InstanceMeta) -> crate::error::Result<()> {
    write_json(&home.instance_dir(&meta.id).join("instance.json"), meta)
}

/// Changes an instance's document under the home's lock.
pub fn update(
    home: &Home,
    id: &str,
    f: impl FnOnce(&mut InstanceMeta),
) -> crate::error::Result<InstanceMeta> {
    let _lock = home.lock()?;
    let mut meta = read(home, id)?;
    f(&mut meta);
    write(home, &meta)?;
    Ok(meta)
}

/// Lifetime left in seconds for an instance with a `Timeout` tag.
pub fn lifetime_left(meta: &InstanceMeta, now: i64) -> Option<i64> {
    let minutes: i64 = meta.tags.get("Timeout")?.trim().parse().ok()?;
    // Saturating: the home's documents and tags may hold any number.
    Some(meta.launch_time.saturating_add(minutes.saturating_mul(60)).saturating_sub(now))
}

/// What a new instance is made of.
pub struct Launch<'a> {
    pub image_id: &'a str,
    pub engine_image: &'a str,
    pub instance_type: &'a str,
    pub tags: &'a [(String, String)],
    /// A folder of this machine the instance sees read-only at the same path (the blueprint).
    pub visible: Option<&'a Path>,
}

/// Records a new `pending` instance (its id is safe from here on); returns its document.
pub fn record_launch(home: &Home, launch: &Launch<'_>) -> crate::error::Result<InstanceMeta> {
    let lock = home.lock()?;
    let id = home.new_id("i", &lock)?;
    let dir = home.instance_dir(&id);
    std::fs::create_dir_all(&dir).map_err(|e| crate::error::Error::io("create", &dir, e))?;
    let meta = InstanceMeta {
        id,
        image_id: launch.image_id.to_string(),
        instance_type: launch.instance_type.to_string(),
        state: InstanceState::Pending,
        state_reason: None,
        launch_time: clock::now(),
        tags: launch.tags.iter().cloned().collect(),
        container: None,
        builder: Some(Builder::me()),
    };
    write(home, &meta)?;
    Ok(meta)
}

/// The labels of an instance's container: the home, the id, the image, the launch's tags.
fn labels(home: &Home, meta: &InstanceMeta) -> HashMap<String, String> {
    let own = [
        (engine::LABEL_INSTANCE, meta.id.clone()),
        ("devami.image", meta.image_id.clone()),
        ("devami.instance-type", meta.instance_type.clone()),
        ("devami.launched", meta.launch_time.to_string()),
    ];
    engine::labels(home, &own, &meta.tags)
}

/// Writes the plumbing folder: the power commands under `bin/`.
fn write_plumbing(home: &Home, id: &str) -> Result<PathBuf, LocalError> {
    use std::os::unix::fs::PermissionsExt;
    let dir = plumbing_dir(home, id);
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).map_err(|e| LocalError::Io {
        op: "create",
        path: bin.clone(),
        source: e,
    })?;
    for name in POWER_NAMES {
        let path = bin.join(name);
        std::fs::write(&path, POWER_SHIM)
            .and_then(|()| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)))
            .map_err(|e| LocalError::Io { op: "write", path: path.clone(), source: e })?;
    }
    Ok(dir)
}

/// Makes and starts the container of a recorded launch; the document says `running`, or
/// `terminated` with the engine's reason.
pub async fn make(
    home: &Home,
    engine: &Engine,
    meta: &InstanceMeta,
    launch: &Launch<'_>,
) -> Result<InstanceMeta, LocalError> {
    let made = async {
        let plumbing = write_plumbing(home, &meta.id)?;
        let hw = hardware::of(launch.instance_type);
        let gpus = hw.gpus > 0 && engine.has_gpus().await;
        if hw.gpus > 0 && !gpus {
            eprintln!(
                "warning: {} has {} GPU on AWS, but this machine's container engine offers none: the \
                 instance runs without one",
                launch.instance_type, hw.gpus
            );
        }
        let mut binds = vec![format!("{}:{PLUMBING_INSIDE}:rw", plumbing.display())];
        if let Some(v) = launch.visible {
            binds.push(format!("{}:{}:ro", v.display(), v.display()));
        }
        let spec = ContainerSpec {
            name: container_name(&meta.id),
            image: launch.engine_image.to_string(),
            hostname: meta.id.clone(),
            labels: labels(home, meta),
            memory: Some(hw.memory_bytes()),
            nano_cpus: Some(hw.nano_cpus()),
            binds,
            gpus,
        };
        let container = engine.create_container(&spec).await?;
        // Recorded before it starts: a terminate from now on removes it.
        update(home, &meta.id, |m| m.container = Some(container.clone()))?;
        engine.start(&container).await?;
        Ok::<_, LocalError>(())
    }
    .await;
    let _lock = home.lock()?;
    let mut now = read(home, &meta.id)?;
    if now.state != InstanceState::Pending {
        return Ok(now);
    }
    match made {
        Ok(()) => {
            now.state = InstanceState::Running;
            now.builder = None;
        }
        Err(e) => {
            now.state = InstanceState::Terminated;
            now.state_reason = Some(format!("Server.InternalError: {e}"));
            now.builder = None;
            write(home, &now)?;
            drop(_lock);
            if let Some(c) = &now.container {
                let _ = engine.remove(c).await;
            }
            return Err(e);
        }
    }
    write(home, &now)?;
    Ok(now)
}

/// The instance now: its document reconciled with its container and the lifetime guard.
pub async fn describe(home: &Home, engine: &Engine, id: &str) -> Result<InstanceMeta, LocalError> {
    let mut meta = read(home, id)?;
    if meta.state == InstanceState::Pending && meta.builder.as_ref().is_some_and(|b| !b.alive()) {
        meta = finish_abandoned_launch(home, engine, &meta).await?;
    }
    if meta.state == InstanceState::Running {
        let container = match &meta.container {
            Some(c) => engine.container(c).await?,
            None => None,
        };
        let reason = match container {
            None => Some((
                InstanceState::Terminated,
                "Server.InternalError: its container is gone from the engine (removed outside devami)",
            )),
            Some(c) if !c.running => Some((
                InstanceState::Stopped,
                "Client.InstanceInitiatedShutdown: its container stopped outside devami",
            )),
            Some(_) => None,
        };
        if let Some((state, why)) = reason {
            super::jobs::cancel_instance_jobs(home, engine, id, &format!("instance {state}: {why}")).await?;
            meta = update(home, id, |m| {
                m.state = state;
                m.state_reason = Some(why.to_string());
            })?;
        }
    }
    // A `shutdown` typed by hand (not in a job, whose supervisor acts on it) comes due.
    if meta.state == InstanceState::Running
        && super::jobs::peek_stop_request(home, id).is_some_and(|r| r.due <= clock::now())
        && let Some(req) = super::jobs::take_stop_request(home, id)
    {
        let reason = format!("shutdown requested inside the instance (`{}`)", req.command);
        force_stop(home, engine, id, &reason).await?;
        meta = read(home, id)?;
    }
    if meta.state == InstanceState::Running
        && let Some(left) = lifetime_left(&meta, clock::now())
        && left < 0
    {
        let minutes = meta.tags.get("Timeout").cloned().unwrap_or_default();
        force_stop(home, engine, id, &format!("lifetime of {minutes} minutes expired")).await?;
        meta = read(home, id)?;
    }
    Ok(meta)
}

/// A pending instance whose launching process died: running if its container came up,
/// otherwise terminated with the reason and its container removed.
async fn finish_abandoned_launch(
    home: &Home,
    engine: &Engine,
    meta: &InstanceMeta,
) -> Result<InstanceMeta, LocalError> {
    let name = container_name(&meta.id);
    let running = matches!(engine.container(&name).await?, Some(c) if c.running);
    let pid = meta.builder.as_ref().map_or(0, |b| b.pid);
    let meta = update(home, &meta.id, |m| {
        if m.state != InstanceState::Pending {
            return;
        }
        m.builder = None;
        if running {
            m.state = InstanceState::Running;
            m.container.get_or_insert(name.clone());
        } else {
            m.state = InstanceState::Terminated;
            m.state_reason = Some(format!(
                "Server.InternalError: the launch was interrupted: process {pid} ended before the \
                 instance's container was running"
            ));
        }
    })?;
    if meta.state == InstanceState::Terminated {
        engine.remove(&name).await?;
    }
    Ok(meta)
}

/// Stops an instance now (a user's stop, lifetime expiry, `shutdown` inside), ending its jobs
/// and every process in it. Does nothing unless it is pending or running.
pub async fn force_stop(home: &Home, engine: &Engine, id: &str, reason: &str) -> Result<(), LocalError> {
    force_stop_sparing(home, engine, id, reason, None).await
}

/// [`force_stop`], leaving the document of job `sparing` to its supervisor (the job whose
/// `shutdown` stops the instance once it has ended, and records its own end after the stop).
pub async fn force_stop_sparing(
    home: &Home,
    engine: &Engine,
    id: &str,
    reason: &str,
    sparing: Option<&str>,
) -> Result<(), LocalError> {
    let meta = read(home, id)?;
    if !matches!(meta.state, InstanceState::Pending | InstanceState::Running) {
        return Ok(());
    }
    update(home, id, |m| {
        m.state = InstanceState::Stopping;
        m.state_reason = Some(reason.to_string());
    })?;
    super::jobs::cancel_instance_jobs_sparing(
        home,
        engine,
        id,
        &format!("instance stopped: {reason}"),
        sparing,
    )
    .await?;
    if let Some(c) = &meta.container {
        engine.stop(c, STOP_GRACE).await?;
    }
    let _ = std::fs::remove_file(plumbing_dir(home, id).join(STOP_MARKER));
    update(home, id, |m| m.state = InstanceState::Stopped)?;
    Ok(())
}

/// Starts a stopped instance.
pub async fn start(home: &Home, engine: &Engine, id: &str) -> Result<(), LocalError> {
    let meta = update(home, id, |m| {
        m.state = InstanceState::Pending;
        m.state_reason = None;
    })?;
    let started = match &meta.container {
        Some(c) => engine.start(c).await,
        None => Err(LocalError::EngineNotFound {
            op: "starting",
            message: "the instance has no container".into(),
        }),
    };
    match started {
        Ok(()) => {
            update(home, id, |m| {
                m.state = InstanceState::Running;
                m.launch_time = clock::now();
            })?;
            Ok(())
        }
        Err(e) => {
            update(home, id, |m| {
                m.state = InstanceState::Stopped;
                m.state_reason = Some(format!("Server.InternalError: {e}"));
            })?;
            Err(e)
        }
    }
}

/// Terminates an instance: its jobs end, its container and plumbing go.
pub async fn terminate(home: &Home, engine: &Engine, id: &str) -> Result<(), LocalError> {
    let meta = update(home, id, |m| {
        m.state = InstanceState::ShuttingDown;
        m.state_reason = Some("User initiated".into());
    })?;
    super::jobs::cancel_instance_jobs(home, engine, id, "instance terminated").await?;
    engine.remove(meta.container.as_deref().unwrap_or(&container_name(id))).await?;
    let _ = std::fs::remove_dir_all(plumbing_dir(home, id));
    update(home, id, |m| {
        m.state = InstanceState::Terminated;
        m.builder = None;
    })?;
    Ok(())
}

/// Containers of this home the documents do not know (a document lost with a home's files):
/// recorded from their labels, so that `sweep` can show and clean them up.
pub async fn adopt_unknown(home: &Home, engine: &Engine) -> Result<(), LocalError> {
    for (container, labels, running) in engine.containers_labelled(engine::LABEL_HOME, &home.label()).await? {
        let Some(id) = labels.get(engine::LABEL_INSTANCE) else { continue };
        if !super::is_id(id, "i-") || home.instance_dir(id).join("instance.json").exists() {
            continue;
        }
        let tags = engine::tags_of(&labels);
        let meta = InstanceMeta {
            id: id.clone(),
            image_id: labels.get("devami.image").cloned().unwrap_or_default(),
            instance_type: labels.get("devami.instance-type").cloned().unwrap_or_else(|| "t2.micro".into()),
            state: if running { InstanceState::Running } else { InstanceState::Stopped },
            state_reason: Some("found in the container engine through its labels".into()),
            launch_time: labels
                .get("devami.launched")
                .and_then(|t| t.parse().ok())
                .unwrap_or_else(clock::now),
            tags,
            container: Some(container),
            builder: None,
        };
        let _lock = home.lock()?;
        let dir = home.instance_dir(id);
        std::fs::create_dir_all(&dir).map_err(|e| LocalError::Io {
            op: "create",
            path: dir.clone(),
            source: e,
        })?;
        if !dir.join("instance.json").exists() {
            write(home, &meta)?;
        }
    }
    Ok(())
}
