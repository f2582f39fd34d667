//! The container engine behind local instances, reached through the Docker Engine API (bollard).
//!
//! Docker Engine, Docker Desktop, OrbStack, Colima and Podman's Docker-compatible service all
//! answer the same API. [`Engine::connect`] finds one the way users expect: `DOCKER_HOST`, then
//! the standard sockets; where none answers but `podman` is installed, it starts `podman system
//! service` itself on `$DEVAMI_HOME/engine/podman.sock` (with its own `containers.conf`: `runc`
//! where installed, ulimits within this process's hard limits), reuses it, and lets it exit after
//! [`SERVICE_IDLE_SECS`] idle. Invariant: no bollard type leaves this module; callers see the
//! plain types below and [`LocalError`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, ContainerStateStatusEnum, DeviceRequest, ExecConfig, HostConfig, ResourcesUlimits,
};
use bollard::query_parameters as q;
use futures_util::{Stream, StreamExt};

use super::error::LocalError;
use super::home::Home;

/// How long a Podman service devami started waits without a connection before it exits.
pub const SERVICE_IDLE_SECS: u64 = 300;
/// How long a request may wait for the engine's answer (a commit of gigabytes takes minutes).
const REQUEST_TIMEOUT_SECS: u64 = 3600;
/// The label every container and image devami makes carries: the home it belongs to.
pub const LABEL_HOME: &str = "devami.home";
/// The label of an instance's container: its `i-` id.
pub const LABEL_INSTANCE: &str = "devami.instance";
/// The label of an image: its `ami-` id.
pub const LABEL_IMAGE: &str = "devami.ami";
/// Labels that carry a resource's tags: `devami.tag.<Key>`.
pub const LABEL_TAG_PREFIX: &str = "devami.tag.";

/// The labels of something devami makes in the engine for `home`: the home, `own` (the
/// resource's id and facts), its tags as `devami.tag.<Key>`, and `devami.test=1` under
/// `DEVAMI_TEST_LABEL` (what the test suite's clean-up looks for).
pub fn labels(
    home: &Home,
    own: &[(&str, String)],
    tags: &std::collections::BTreeMap<String, String>,
) -> HashMap<String, String> {
    let mut l = HashMap::from([(LABEL_HOME.to_string(), home.label())]);
    l.extend(own.iter().map(|(k, v)| (k.to_string(), v.clone())));
    l.extend(tags.iter().map(|(k, v)| (format!("{LABEL_TAG_PREFIX}{k}"), v.clone())));
    if std::env::var_os("DEVAMI_TEST_LABEL").is_some() {
        l.insert("devami.test".into(), "1".into());
    }
    l
}

/// The tags a resource carries as `devami.tag.<Key>` labels.
pub fn tags_of(labels: &HashMap<String, String>) -> std::collections::BTreeMap<String, String> {
    labels
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(LABEL_TAG_PREFIX)?.to_string(), v.clone())))
        .collect()
}

/// A connection to a container engine.
#[derive(Clone)]
pub struct Engine {
    docker: Docker,
    /// Where it was found (`unix:///run/podman/podman.sock`).
    pub address: String,
    /// What it calls itself (`Libpod/4.3.1 (linux)`).
    server: String,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Engine({})", self.address)
    }
}

/// What the engine says of itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineInfo {
    /// `Podman Engine`, `Docker Engine`.
    pub name: String,
    pub version: String,
}

/// A container to create for an instance.
#[derive(Debug, Clone, Default)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    pub hostname: String,
    pub labels: HashMap<String, String>,
    /// Memory limit in bytes (swap is not added on top).
    pub memory: Option<i64>,
    /// CPU limit in billionths of a CPU.
    pub nano_cpus: Option<i64>,
    /// `host:container:ro|rw` bind mounts.
    pub binds: Vec<String>,
    /// Ask the engine for the host's GPUs.
    pub gpus: bool,
}

/// A container's state as the engine reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    pub running: bool,
    pub oom_killed: bool,
    pub exit_code: Option<i64>,
    /// The engine's error text for the last start, if any.
    pub error: Option<String>,
    pub labels: HashMap<String, String>,
    pub image: String,
}

/// An image as the engine reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    pub id: String,
    pub size: u64,
    pub labels: HashMap<String, String>,
    pub created: Option<String>,
}

/// A process to run inside a container.
#[derive(Debug, Clone, Default)]
pub struct ExecSpec {
    pub cmd: Vec<String>,
    pub user: String,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub tty: bool,
    pub stdin: bool,
}

/// One piece of a running process's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
}

/// An attached process: its output as a stream, its stdin as a writer (when asked for).
pub struct Attached {
    pub exec_id: String,
    pub output: std::pin::Pin<Box<dyn Stream<Item = Result<Chunk, LocalError>> + Send>>,
    pub input: Option<std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>>,
}

/// Progress of a pull or an import, one line at a time.
pub type Progress<'a> = &'a mut (dyn FnMut(&str) + Send);

fn engine_err(op: &'static str, e: bollard::errors::Error) -> LocalError {
    match e {
        bollard::errors::Error::DockerResponseServerError { status_code: 404, message } => {
            LocalError::EngineNotFound { op, message }
        }
        bollard::errors::Error::DockerResponseServerError { status_code: 409, message } => {
            LocalError::EngineConflict { op, message }
        }
        bollard::errors::Error::DockerResponseServerError { message, .. } => {
            LocalError::Engine { op, message: message.trim().to_string() }
        }
        bollard::errors::Error::DockerStreamError { error } => LocalError::Engine { op, message: error },
        other => LocalError::EngineUnreachable { message: other.to_string() },
    }
}

/// The standard places an engine listens, in the order users expect them tried.
fn standard_sockets() -> Vec<PathBuf> {
    let mut v = vec![PathBuf::from("/var/run/docker.sock")];
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let runtime = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from);
    if let Some(r) = &runtime {
        v.push(r.join("docker.sock"));
    }
    if let Some(h) = &home {
        v.push(h.join(".docker/run/docker.sock"));
        v.push(h.join(".docker/desktop/docker.sock"));
        v.push(h.join(".orbstack/run/docker.sock"));
        v.push(h.join(".colima/default/docker.sock"));
    }
    v.push(PathBuf::from("/run/podman/podman.sock"));
    if let Some(r) = &runtime {
        v.push(r.join("podman/podman.sock"));
    }
    v
}

/// What an engine's `/_ping` answer says in its headers: the API version it speaks (`1.41`) and
/// the server (`Libpod/4.3.1 (linux)`, `Docker/27.3.1 (linux)`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ping {
    api: (usize, usize),
    server: String,
}

/// Reads a `/_ping` answer's status line and headers.
fn parse_ping(head: &str) -> Option<Ping> {
    let mut lines = head.lines();
    let status = lines.next()?;
    if !status.starts_with("HTTP/1.") || status.split_whitespace().nth(1) != Some("200") {
        return None;
    }
    let (mut api, mut server) = (None, String::new());
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        match name.trim().to_ascii_lowercase().as_str() {
            "api-version" => {
                let (major, minor) = value.trim().split_once('.')?;
                api = Some((major.parse().ok()?, minor.parse().ok()?));
            }
            "server" => server = value.trim().to_string(),
            _ => {}
        }
    }
    Some(Ping { api: api?, server })
}

/// `GET /_ping` over a stream, as Docker's own client does to settle the API version (the
/// `/version` call bollard's negotiation makes costs Podman about 0.4 s: it runs its helpers).
fn ping_over(mut stream: impl std::io::Read + std::io::Write) -> std::io::Result<Option<Ping>> {
    stream.write_all(b"GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n")?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(parse_ping(&String::from_utf8_lossy(&head)))
}

/// Pings the engine at `address` (`unix://PATH`, `tcp://HOST:PORT`, `http://HOST:PORT`).
fn ping(address: &str) -> Result<Ping, LocalError> {
    let unreachable =
        |message: String| LocalError::EngineUnreachable { message: format!("{address}: {message}") };
    let timeout = Some(Duration::from_secs(5));
    let answer = if let Some(path) = address.strip_prefix("unix://") {
        let s = std::os::unix::net::UnixStream::connect(path).map_err(|e| unreachable(e.to_string()))?;
        s.set_read_timeout(timeout)
            .and_then(|()| s.set_write_timeout(timeout))
            .map_err(|e| unreachable(e.to_string()))?;
        ping_over(s)
    } else {
        let host = address.trim_start_matches("tcp://").trim_start_matches("http://");
        let s = std::net::TcpStream::connect(host).map_err(|e| unreachable(e.to_string()))?;
        s.set_read_timeout(timeout)
            .and_then(|()| s.set_write_timeout(timeout))
            .map_err(|e| unreachable(e.to_string()))?;
        ping_over(s)
    };
    answer
        .map_err(|e| unreachable(e.to_string()))?
        .ok_or_else(|| unreachable("no Docker Engine API answer to /_ping".into()))
}

impl Engine {
    /// The engine at `address` when it answers, speaking the API version it announces.
    fn at(address: &str) -> Result<Engine, LocalError> {
        let pong = ping(address)?;
        let version = bollard::ClientVersion { major_version: pong.api.0, minor_version: pong.api.1 };
        let docker = match address.strip_prefix("unix://") {
            Some(path) => Docker::connect_with_unix(path, REQUEST_TIMEOUT_SECS, &version),
            None => Docker::connect_with_http(address, REQUEST_TIMEOUT_SECS, &version),
        }
        .map_err(|e| LocalError::EngineUnreachable { message: format!("{address}: {e}") })?;
        Ok(Engine { docker, address: address.to_string(), server: pong.server })
    }

    /// Finds the engine: `DOCKER_HOST`, the standard sockets, then a Podman service of devami's
    /// own under `home` (started when `podman` is installed and none runs).
    pub async fn connect(home: &Home) -> Result<Engine, LocalError> {
        if let Some(host) = std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()) {
            return Engine::at(&host).map_err(|e| match e {
                LocalError::EngineUnreachable { message } => {
                    LocalError::EngineUnreachable { message: format!("DOCKER_HOST={message}") }
                }
                other => other,
            });
        }
        for sock in standard_sockets() {
            if sock.exists()
                && let Ok(engine) = Engine::at(&format!("unix://{}", sock.display()))
            {
                return Ok(engine);
            }
        }
        let sock = home.engine_dir().join("podman.sock");
        let address = format!("unix://{}", sock.display());
        if sock.exists()
            && let Ok(engine) = Engine::at(&address)
        {
            return Ok(engine);
        }
        let Some(podman) = find_on_path("podman") else {
            return Err(LocalError::NoEngine);
        };
        start_podman_service(home, &podman, &sock)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if sock.exists()
                && let Ok(engine) = Engine::at(&address)
            {
                return Ok(engine);
            }
            if Instant::now() >= deadline {
                return Err(LocalError::EngineUnreachable {
                    message: format!(
                        "`podman system service` did not answer on {} within 30 s (see {})",
                        sock.display(),
                        home.engine_dir().join("service.log").display()
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The engine's name and version, from what it answered to the ping.
    pub fn info(&self) -> EngineInfo {
        let (product, rest) = self.server.split_once('/').unwrap_or((self.server.as_str(), ""));
        let version = rest.split_whitespace().next().unwrap_or("").to_string();
        let name = match product {
            "Libpod" => "Podman Engine".to_string(),
            "Docker" | "" => "Docker Engine".to_string(),
            other => other.to_string(),
        };
        EngineInfo { name, version }
    }

    /// Whether the engine can hand GPUs to containers (an NVIDIA runtime or CDI devices).
    pub async fn has_gpus(&self) -> bool {
        match self.docker.info().await {
            Ok(info) => {
                let runtimes = info.runtimes.unwrap_or_default();
                runtimes.keys().any(|k| k.contains("nvidia")) || Path::new("/etc/cdi/nvidia.yaml").exists()
            }
            Err(_) => false,
        }
    }

    // ---- images ----

    /// An image by id or reference; `None` when the engine does not have it.
    pub async fn image(&self, reference: &str) -> Result<Option<ImageInfo>, LocalError> {
        match self.docker.inspect_image(&by_id(reference)).await {
            Ok(i) => Ok(Some(ImageInfo {
                id: i.id.unwrap_or_default(),
                size: i.size.map(|s| s.max(0) as u64).unwrap_or(0),
                labels: i.config.and_then(|c| c.labels).unwrap_or_default(),
                created: i.created,
            })),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(None),
            Err(e) => Err(engine_err("inspecting an image", e)),
        }
    }

    /// The images carrying `label=value`.
    pub async fn images_labelled(&self, label: &str, value: &str) -> Result<Vec<ImageInfo>, LocalError> {
        let filters = HashMap::from([("label".to_string(), vec![format!("{label}={value}")])]);
        let opts = q::ListImagesOptionsBuilder::default().all(false).filters(&filters).build();
        let list = self.docker.list_images(Some(opts)).await.map_err(|e| engine_err("listing images", e))?;
        Ok(list
            .into_iter()
            .map(|i| ImageInfo {
                id: i.id,
                size: i.size.max(0) as u64,
                labels: i.labels,
                created: Some(i.created.to_string()),
            })
            .collect())
    }

    /// Pulls `reference` from its registry, reporting progress lines.
    pub async fn pull(&self, reference: &str, progress: Progress<'_>) -> Result<(), LocalError> {
        let opts = q::CreateImageOptionsBuilder::default().from_image(reference).build();
        let mut stream = self.docker.create_image(Some(opts), None, None);
        let mut last = String::new();
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| engine_err("pulling an image", e))?;
            if let Some(err) = info.error_detail.and_then(|d| d.message) {
                return Err(LocalError::Engine { op: "pulling an image", message: err });
            }
            let line = match (info.id, info.status) {
                (Some(id), Some(status)) => format!("{id}: {status}"),
                (None, Some(status)) => status,
                _ => continue,
            };
            if line != last {
                progress(&line);
                last = line;
            }
        }
        Ok(())
    }

    /// Imports a root-filesystem tarball as `reference` (`repo:tag`), with `changes` (Dockerfile
    /// instructions such as `LABEL a=b`); returns the new image's id.
    pub async fn import_rootfs(
        &self,
        tarball: &Path,
        reference: &str,
        changes: &[String],
        progress: Progress<'_>,
    ) -> Result<String, LocalError> {
        let (repo, tag) = split_reference(reference);
        let mut b = q::CreateImageOptionsBuilder::default().from_src("-").repo(repo).tag(tag);
        if !changes.is_empty() {
            b = b.changes(changes.to_vec());
        }
        let body = bollard::body_try_stream(file_stream(tarball).await?);
        let mut stream = self.docker.create_image(Some(b.build()), Some(body), None);
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| engine_err("importing an image", e))?;
            if let Some(err) = info.error_detail.and_then(|d| d.message) {
                return Err(LocalError::Engine { op: "importing an image", message: err });
            }
            if let Some(status) = info.status {
                progress(status.trim());
            }
        }
        let found = self.image(reference).await?;
        found.map(|i| i.id).ok_or_else(|| LocalError::Engine {
            op: "importing an image",
            message: format!("the engine reports no image `{reference}` after the import"),
        })
    }

    /// Loads a `docker save` or OCI archive; returns the references it loaded.
    pub async fn load_archive(
        &self,
        archive: &Path,
        progress: Progress<'_>,
    ) -> Result<Vec<String>, LocalError> {
        let body = bollard::body_try_stream(file_stream(archive).await?);
        let mut stream =
            self.docker.import_image(q::ImportImageOptionsBuilder::default().build(), body, None);
        let mut loaded = Vec::new();
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| engine_err("loading an image archive", e))?;
            if let Some(s) = info.stream.as_deref().or(info.status.as_deref()) {
                let s = s.trim();
                if let Some(r) =
                    s.strip_prefix("Loaded image: ").or_else(|| s.strip_prefix("Loaded image(s): "))
                {
                    loaded.extend(r.split(',').map(|x| x.trim().to_string()));
                } else if let Some(r) = s.strip_prefix("Loaded image ID: ") {
                    loaded.push(r.trim().to_string());
                }
                if !s.is_empty() {
                    progress(s);
                }
            }
        }
        Ok(loaded)
    }

    /// Adds a reference to an image.
    pub async fn tag(&self, image: &str, reference: &str) -> Result<(), LocalError> {
        let (repo, tag) = split_reference(reference);
        let opts = q::TagImageOptionsBuilder::default().repo(repo).tag(tag).build();
        self.docker.tag_image(image, Some(opts)).await.map_err(|e| engine_err("tagging an image", e))
    }

    /// Commits a container to a new image named `reference`, with `labels`; returns its id.
    pub async fn commit(
        &self,
        container: &str,
        reference: &str,
        labels: HashMap<String, String>,
    ) -> Result<String, LocalError> {
        let (repo, tag) = split_reference(reference);
        let changes: Vec<String> =
            labels.iter().map(|(k, v)| format!("LABEL {k}={}", quote_label(v))).collect();
        let opts = q::CommitContainerOptionsBuilder::default()
            .container(container)
            .repo(repo)
            .tag(tag)
            .pause(false)
            .changes(&changes.join("\n"))
            .build();
        let config = bollard::models::ContainerConfig { labels: Some(labels), ..Default::default() };
        let r = self.docker.commit_container(opts, config).await.map_err(|e| engine_err("committing", e))?;
        Ok(r.id)
    }

    /// Removes an image; `Ok(false)` when a container still uses it.
    pub async fn remove_image(&self, image: &str) -> Result<bool, LocalError> {
        let opts = q::RemoveImageOptionsBuilder::default().force(false).noprune(false).build();
        match self.docker.remove_image(&by_id(image), Some(opts), None).await {
            Ok(_) => Ok(true),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(true),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 409, .. }) => Ok(false),
            Err(e) => Err(engine_err("removing an image", e)),
        }
    }

    // ---- containers ----

    /// Creates (not starts) a container; returns its id.
    pub async fn create_container(&self, spec: &ContainerSpec) -> Result<String, LocalError> {
        let (soft_nofile, soft_nproc) = ulimits();
        let host_config = HostConfig {
            init: Some(true),
            network_mode: Some("host".into()),
            // Host networking keeps the host's /etc/hosts: the instance's own name must resolve
            // (sudo looks it up).
            extra_hosts: Some(vec![format!("{}:127.0.0.1", spec.hostname)]),
            memory: spec.memory,
            memory_swap: spec.memory,
            nano_cpus: spec.nano_cpus,
            binds: (!spec.binds.is_empty()).then(|| spec.binds.clone()),
            ulimits: Some(vec![
                ResourcesUlimits {
                    name: Some("nofile".into()),
                    soft: Some(soft_nofile),
                    hard: Some(soft_nofile),
                },
                ResourcesUlimits {
                    name: Some("nproc".into()),
                    soft: Some(soft_nproc),
                    hard: Some(soft_nproc),
                },
            ]),
            device_requests: spec.gpus.then(|| {
                vec![DeviceRequest {
                    driver: Some("nvidia".into()),
                    count: Some(-1),
                    capabilities: Some(vec![vec!["gpu".into()]]),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(by_id(&spec.image)),
            cmd: Some(vec!["sleep".into(), "infinity".into()]),
            hostname: Some(spec.hostname.clone()),
            labels: Some(spec.labels.clone()),
            host_config: Some(host_config),
            ..Default::default()
        };
        let opts = q::CreateContainerOptionsBuilder::default().name(&spec.name).build();
        let r =
            self.docker.create_container(Some(opts), body).await.map_err(|e| engine_err("creating", e))?;
        Ok(r.id)
    }

    /// Starts a container (a running one is left as it is).
    pub async fn start(&self, container: &str) -> Result<(), LocalError> {
        match self.docker.start_container(container, None::<q::StartContainerOptions>).await {
            Ok(()) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 304, .. }) => Ok(()),
            Err(e) => Err(engine_err("starting", e)),
        }
    }

    /// Stops a container: SIGTERM to its init, which ends every process; SIGKILL after `grace`.
    pub async fn stop(&self, container: &str, grace: Duration) -> Result<(), LocalError> {
        let opts = q::StopContainerOptionsBuilder::default().t(grace.as_secs() as i32).build();
        match self.docker.stop_container(container, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 304, .. }) => Ok(()),
            Err(e) => Err(engine_err("stopping", e)),
        }
    }

    /// Removes a container and its writable layer (a missing one is fine).
    pub async fn remove(&self, container: &str) -> Result<(), LocalError> {
        let opts = q::RemoveContainerOptionsBuilder::default().force(true).v(true).build();
        match self.docker.remove_container(container, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(()),
            Err(e) => Err(engine_err("removing", e)),
        }
    }

    /// A container's state; `None` when the engine has no such container.
    pub async fn container(&self, container: &str) -> Result<Option<ContainerInfo>, LocalError> {
        match self.docker.inspect_container(container, None::<q::InspectContainerOptions>).await {
            Ok(c) => {
                let state = c.state.unwrap_or_default();
                Ok(Some(ContainerInfo {
                    id: c.id.unwrap_or_default(),
                    running: matches!(
                        state.status,
                        Some(ContainerStateStatusEnum::RUNNING | ContainerStateStatusEnum::RESTARTING)
                    ) || state.running == Some(true),
                    oom_killed: state.oom_killed.unwrap_or(false),
                    exit_code: state.exit_code,
                    error: state.error.filter(|e| !e.is_empty()),
                    labels: c.config.as_ref().and_then(|c| c.labels.clone()).unwrap_or_default(),
                    image: c.image.unwrap_or_default(),
                }))
            }
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(None),
            Err(e) => Err(engine_err("inspecting", e)),
        }
    }

    /// The containers (running or not) carrying `label=value`: `(id, labels, running)`.
    pub async fn containers_labelled(
        &self,
        label: &str,
        value: &str,
    ) -> Result<Vec<(String, HashMap<String, String>, bool)>, LocalError> {
        let filters = HashMap::from([("label".to_string(), vec![format!("{label}={value}")])]);
        let opts = q::ListContainersOptionsBuilder::default().all(true).filters(&filters).build();
        // Podman fails a whole list when a container it is listing is removed meanwhile
        // ("container not known"); the list is asked again, as a removal takes moments.
        let mut attempt = 0;
        let list = loop {
            match self.docker.list_containers(Some(opts.clone())).await {
                Err(e) if attempt < LIST_RETRIES && removed_while_listing(&e) => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(20) * attempt).await;
                }
                listed => break listed.map_err(|e| engine_err("listing containers", e))?,
            }
        };
        Ok(list
            .into_iter()
            .map(|c| {
                let running = c.state.is_some_and(|s| s.to_string() == "running");
                (c.id.unwrap_or_default(), c.labels.unwrap_or_default(), running)
            })
            .collect())
    }

    // ---- processes ----

    /// Starts a process in a running container with its output (and stdin) attached.
    pub async fn exec(&self, container: &str, spec: &ExecSpec) -> Result<Attached, LocalError> {
        let config = ExecConfig {
            attach_stdin: Some(spec.stdin),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(spec.tty),
            env: Some(spec.env.clone()),
            cmd: Some(spec.cmd.clone()),
            user: Some(spec.user.clone()),
            working_dir: spec.working_dir.clone(),
            ..Default::default()
        };
        let exec_id = self
            .docker
            .create_exec(container, config)
            .await
            .map_err(|e| engine_err("starting a process", e))?
            .id;
        let opts = bollard::exec::StartExecOptions { detach: false, tty: spec.tty, output_capacity: None };
        match self
            .docker
            .start_exec(&exec_id, Some(opts))
            .await
            .map_err(|e| engine_err("starting a process", e))?
        {
            bollard::exec::StartExecResults::Attached { output, input } => {
                let output = output
                    .filter_map(|item| async move {
                        match item {
                            Ok(bollard::container::LogOutput::StdErr { message }) => {
                                Some(Ok(Chunk::Stderr(message.to_vec())))
                            }
                            Ok(
                                bollard::container::LogOutput::StdOut { message }
                                | bollard::container::LogOutput::Console { message },
                            ) => Some(Ok(Chunk::Stdout(message.to_vec()))),
                            Ok(bollard::container::LogOutput::StdIn { .. }) => None,
                            Err(e) => Some(Err(engine_err("reading a process's output", e))),
                        }
                    })
                    .boxed();
                Ok(Attached { exec_id, output, input: spec.stdin.then_some(input) })
            }
            bollard::exec::StartExecResults::Detached => Err(LocalError::Engine {
                op: "starting a process",
                message: "the engine detached the process".into(),
            }),
        }
    }

    /// A finished process's exit code (`None` while it runs or when the engine does not know).
    pub async fn exit_code(&self, exec_id: &str) -> Result<Option<i64>, LocalError> {
        let r = self.docker.inspect_exec(exec_id).await.map_err(|e| engine_err("inspecting a process", e))?;
        if r.running == Some(true) {
            return Ok(None);
        }
        Ok(r.exit_code)
    }

    /// Resizes a process's terminal.
    pub async fn resize(&self, exec_id: &str, rows: u16, cols: u16) -> Result<(), LocalError> {
        let opts = bollard::exec::ResizeExecOptions { height: rows, width: cols };
        self.docker.resize_exec(exec_id, opts).await.map_err(|e| engine_err("resizing a terminal", e))
    }

    /// Runs a process to its end: `(exit code, stdout, stderr)`.
    pub async fn run(&self, container: &str, spec: &ExecSpec) -> Result<(i64, Vec<u8>, Vec<u8>), LocalError> {
        let mut attached = self.exec(container, spec).await?;
        let (mut out, mut err) = (Vec::new(), Vec::new());
        while let Some(chunk) = attached.output.next().await {
            match chunk? {
                Chunk::Stdout(b) => out.extend(b),
                Chunk::Stderr(b) => err.extend(b),
            }
        }
        let code = self.finished_code(&attached.exec_id).await?;
        Ok((code, out, err))
    }

    /// The exit code of a process whose output has ended (the engine may record it a moment
    /// after the stream closes).
    pub async fn finished_code(&self, exec_id: &str) -> Result<i64, LocalError> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(code) = self.exit_code(exec_id).await? {
                return Ok(code);
            }
            if Instant::now() >= deadline {
                return Ok(-1);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// How many times a container list is asked again after a container vanished during it.
const LIST_RETRIES: u32 = 5;

/// Whether a failed list only met a container removed while it was being listed (Podman).
fn removed_while_listing(e: &bollard::errors::Error) -> bool {
    matches!(e, bollard::errors::Error::DockerResponseServerError { message, .. }
        if message.contains("container not known") || message.contains("no such container"))
}

/// An image id as every engine takes it: a bare 64-digit id gets its `sha256:` (Podman's
/// Docker-compatible API refuses a bare one as a name).
fn by_id(reference: &str) -> String {
    if reference.len() == 64 && reference.bytes().all(|b| b.is_ascii_hexdigit()) {
        format!("sha256:{reference}")
    } else {
        reference.to_string()
    }
}

/// `repo:tag` split at the tag's colon (a registry's port is not a tag); `latest` by default.
pub fn split_reference(reference: &str) -> (&str, &str) {
    let slash = reference.rfind('/').map_or(0, |i| i + 1);
    match reference[slash..].rfind(':') {
        Some(i) => (&reference[..slash + i], &reference[slash + i + 1..]),
        None => (reference, "latest"),
    }
}

fn quote_label(v: &str) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "\"\"".into())
}

/// A file as a request body, read in 1 MiB pieces.
async fn file_stream(path: &Path) -> Result<tokio_util::io::ReaderStream<tokio::fs::File>, LocalError> {
    let file = tokio::fs::File::open(path).await.map_err(|e| LocalError::Io {
        op: "open",
        path: path.to_path_buf(),
        source: e,
    })?;
    Ok(tokio_util::io::ReaderStream::with_capacity(file, 1 << 20))
}

/// The ulimits a container gets: at most 4096 open files and processes, never above this
/// process's own hard limits (raising them needs a privilege many machines do not grant).
fn ulimits() -> (i64, i64) {
    let hard = |res| {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes into the struct we own.
        let ok = unsafe { libc::getrlimit(res, &mut lim) } == 0;
        if ok && lim.rlim_max != libc::RLIM_INFINITY { (lim.rlim_max as i64).min(4096) } else { 4096 }
    };
    (hard(libc::RLIMIT_NOFILE), hard(libc::RLIMIT_NPROC))
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join(name)).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .find(|p| p.is_file())
}

/// The `containers.conf` devami gives the Podman service it starts: `runc` where installed
/// (crun fails on cgroup v1 hybrid hierarchies), ulimits within this process's hard limits.
fn containers_conf() -> String {
    let (nofile, nproc) = ulimits();
    let mut text = format!(
        "[containers]\ndefault_ulimits = [\"nofile={nofile}:{nofile}\", \"nproc={nproc}:{nproc}\"]\n"
    );
    if find_on_path("runc").is_some() || Path::new("/usr/sbin/runc").exists() {
        text.push_str("\n[engine]\nruntime = \"runc\"\n");
    }
    text
}

/// Starts `podman system service` on `sock`, detached, unless another devami is starting it.
fn start_podman_service(home: &Home, podman: &Path, sock: &Path) -> Result<(), LocalError> {
    let dir = home.engine_dir();
    std::fs::create_dir_all(&dir).map_err(|e| LocalError::Io {
        op: "create",
        path: dir.clone(),
        source: e,
    })?;
    let _lock = home.lock()?;
    let conf = dir.join("containers.conf");
    if !conf.exists() {
        crate::atomic::write(&conf, containers_conf().as_bytes())?;
    }
    if sock.exists() && std::os::unix::net::UnixStream::connect(sock).is_ok() {
        return Ok(());
    }
    let _ = std::fs::remove_file(sock);
    let mut cmd = std::process::Command::new(podman);
    cmd.arg("system")
        .arg("service")
        .arg(format!("--time={SERVICE_IDLE_SECS}"))
        .arg(format!("unix://{}", sock.display()));
    if std::env::var_os("CONTAINERS_CONF").is_none() {
        cmd.env("CONTAINERS_CONF", &conf);
    }
    Ok(super::detach::spawn_detached(cmd, &dir.join("service.log"))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_container_removed_mid_list_is_retried() {
        let server = |status_code: u16, message: &str| bollard::errors::Error::DockerResponseServerError {
            status_code,
            message: message.to_string(),
        };
        let race = "getting container from store \"573d04\": container not known";
        assert!(removed_while_listing(&server(500, race)));
        assert!(removed_while_listing(&server(404, "no such container")));
        assert!(!removed_while_listing(&server(500, "database is locked")));
        assert!(!removed_while_listing(&server(403, "permission denied")));
    }

    #[test]
    fn references_split_at_the_tag_not_the_port() {
        assert_eq!(split_reference("ubuntu:22.04"), ("ubuntu", "22.04"));
        assert_eq!(split_reference("127.0.0.1:5000/ubuntu"), ("127.0.0.1:5000/ubuntu", "latest"));
        assert_eq!(split_reference("127.0.0.1:5000/a/b:1"), ("127.0.0.1:5000/a/b", "1"));
        assert_eq!(split_reference("devami/ami-0abc"), ("devami/ami-0abc", "latest"));
    }

    #[test]
    fn a_ping_answer_gives_the_api_version_and_the_server() {
        let podman = "HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nServer: Libpod/4.3.1 (linux)\r\n\r\nOK";
        assert_eq!(parse_ping(podman), Some(Ping { api: (1, 41), server: "Libpod/4.3.1 (linux)".into() }));
        let docker = "HTTP/1.1 200 OK\r\nAPI-Version: 1.47\r\nServer: Docker/27.3.1 (linux)\r\n\r\n";
        assert_eq!(parse_ping(docker).map(|p| p.api), Some((1, 47)));
        assert_eq!(parse_ping("HTTP/1.1 404 Not Found\r\nApi-Version: 1.41\r\n\r\n"), None);
        assert_eq!(parse_ping("HTTP/1.1 200 OK\r\nServer: nginx\r\n\r\n"), None);
        assert_eq!(parse_ping("garbage"), None);
    }

    #[test]
    fn the_service_config_keeps_ulimits_within_the_hard_limits() {
        let (nofile, nproc) = ulimits();
        assert!(nofile > 0 && nofile <= 4096 && nproc > 0 && nproc <= 4096);
        assert!(containers_conf().contains(&format!("nofile={nofile}:{nofile}")));
    }
}
