//! Local images: engine images with EC2's ids, states and tags.
//!
//! An alias (`ubuntu22`) resolves to a real OS image (the official Ubuntu, Debian and Amazon
//! Linux images; `DEVAMI_IMAGE_<ALIAS>=REF` overrides one, and `import_image FILE --as ALIAS`
//! binds one in this home), pulled through the engine on first use and made an AMI-like base
//! once: the `ubuntu` user with password-less sudo, as on the cloud's images. `create_devami`
//! commits an instance's container to a new engine image: the document says `pending` (with its
//! builder, a detached `devami __build` process) before the commit begins and `available` after,
//! so a killed shell never loses the id and a dead builder fails the image at the next describe.
//! Every engine image devami makes is labelled with its home and `ami-` id, so `sweep` finds it.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::detach::{self, Builder};
use super::engine::{self, ContainerSpec, Engine, ExecSpec, Progress};
use super::error::LocalError;
use super::home::{Home, read_json, write_json};
use super::instances;
use crate::backend::ImageState;
use crate::clock;

/// The aliases, the image each resolves to by default, and the name its AMI carries.
pub const ALIASES: &[(&str, &str, &str)] = &[
    ("ubuntu16", "docker.io/library/ubuntu:16.04", "ubuntu-xenial-16.04 (container image)"),
    ("ubuntu18", "docker.io/library/ubuntu:18.04", "ubuntu-bionic-18.04 (container image)"),
    ("ubuntu20", "docker.io/library/ubuntu:20.04", "ubuntu-focal-20.04 (container image)"),
    ("ubuntu22", "docker.io/library/ubuntu:22.04", "ubuntu-jammy-22.04 (container image)"),
    ("ubuntu24", "docker.io/library/ubuntu:24.04", "ubuntu-noble-24.04 (container image)"),
    ("debian12", "docker.io/library/debian:12", "debian-12-bookworm (container image)"),
    ("al2023", "public.ecr.aws/amazonlinux/amazonlinux:2023", "al2023 (container image)"),
    (
        "dlami16",
        "docker.io/nvidia/cuda:12.2.2-cudnn8-runtime-ubuntu22.04",
        "Deep Learning base: CUDA 12.2 + cuDNN 8 on Ubuntu 22.04 (container image)",
    ),
    (
        "dlami18",
        "docker.io/nvidia/cuda:12.2.2-cudnn8-runtime-ubuntu22.04",
        "Deep Learning base: CUDA 12.2 + cuDNN 8 on Ubuntu 22.04 (container image)",
    ),
];

/// What makes an OS image an AMI-like base: the `ubuntu` user, sudo without a password, and the
/// power commands (`shutdown`...) pointing at the instance's plumbing, where sudo finds them too.
const PROVISION: &str = r#"set -e
if ! id ubuntu >/dev/null 2>&1; then
  if command -v useradd >/dev/null 2>&1; then useradd -m -s /bin/bash -U ubuntu 2>/dev/null || useradd -m ubuntu
  else adduser -D ubuntu; fi
fi
mkdir -p /home/ubuntu && chown ubuntu /home/ubuntu
if ! command -v sudo >/dev/null 2>&1; then
  { command -v apt-get >/dev/null 2>&1 && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq sudo >/dev/null; } ||
  { command -v dnf >/dev/null 2>&1 && dnf install -y -q sudo; } ||
  echo "devami: sudo could not be installed in this image (no package archive reachable?)" >&2
fi
mkdir -p /usr/local/sbin
for n in shutdown poweroff halt reboot telinit; do ln -sf /run/devami/bin/$n /usr/local/sbin/$n; done
command -v systemctl >/dev/null 2>&1 || ln -sf /run/devami/bin/systemctl /usr/local/sbin/systemctl
mkdir -p /etc/sudoers.d
echo 'ubuntu ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/90-devami-ubuntu
chmod 440 /etc/sudoers.d/90-devami-ubuntu
"#;

/// An image, as stored in `images/<id>/image.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageMeta {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub state: ImageState,
    #[serde(default)]
    pub state_reason: Option<String>,
    pub created: i64,
    /// The alias it is the base of.
    #[serde(default)]
    pub alias: Option<String>,
    /// The engine reference it was made from (a base: the pulled or imported image).
    #[serde(default)]
    pub source_ref: Option<String>,
    #[serde(default)]
    pub source_instance: Option<String>,
    /// The engine's image id, once made.
    #[serde(default)]
    pub engine_image: Option<String>,
    #[serde(default)]
    pub size_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builder: Option<Builder>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

pub fn read(home: &Home, id: &str) -> crate::error::Result<ImageMeta> {
    read_json(&home.image_dir(id).join("image.json"))
}

fn write(home: &Home, meta: &ImageMeta) -> crate::error::Result<()> {
    write_json(&home.image_dir(&meta.id).join("image.json"), meta)
}

fn update(home: &Home, id: &str, f: impl FnOnce(&mut ImageMeta)) -> crate::error::Result<ImageMeta> {
    let _lock = home.lock()?;
    let mut meta = read(home, id)?;
    f(&mut meta);
    write(home, &meta)?;
    Ok(meta)
}

/// Records a new image document under a fresh id.
fn record(home: &Home, f: impl FnOnce(String) -> ImageMeta) -> crate::error::Result<ImageMeta> {
    let lock = home.lock()?;
    let id = home.new_id("ami", &lock)?;
    let dir = home.image_dir(&id);
    std::fs::create_dir_all(&dir).map_err(|e| crate::error::Error::io("create", &dir, e))?;
    let meta = f(id);
    write(home, &meta)?;
    Ok(meta)
}

/// The labels of an engine image of this home.
fn labels(home: &Home, meta: &ImageMeta) -> HashMap<String, String> {
    let mut own = vec![
        (engine::LABEL_IMAGE, meta.id.clone()),
        ("devami.name", meta.name.clone()),
        ("devami.created", meta.created.to_string()),
    ];
    own.extend(meta.source_instance.clone().map(|i| ("devami.source-instance", i)));
    own.extend(meta.alias.clone().map(|a| ("devami.alias", a)));
    engine::labels(home, &own, &meta.tags)
}

/// The engine reference an image is committed under.
fn reference(id: &str) -> String {
    format!("devami/{id}:latest")
}

/// The environment variable that overrides an alias (`DEVAMI_IMAGE_UBUNTU22`).
pub fn override_var(alias: &str) -> String {
    format!("DEVAMI_IMAGE_{}", alias.to_ascii_uppercase())
}

/// Aliases bound in this home by `import_image --as`.
fn bound_aliases(home: &Home) -> BTreeMap<String, String> {
    read_json(&home.root().join("aliases.json")).unwrap_or_default()
}

fn bind_alias(home: &Home, alias: &str, image_id: &str) -> crate::error::Result<()> {
    let _lock = home.lock()?;
    let mut all = bound_aliases(home);
    all.insert(alias.to_string(), image_id.to_string());
    write_json(&home.root().join("aliases.json"), &all)
}

/// Whether an image document is usable: available, and its engine image still there.
async fn usable(engine: &Engine, meta: &ImageMeta) -> Result<bool, LocalError> {
    if meta.state != ImageState::Available {
        return Ok(false);
    }
    match &meta.engine_image {
        Some(e) => Ok(engine.image(e).await?.is_some()),
        None => Ok(false),
    }
}

/// Resolves an alias to an image of this home, pulling and preparing its base on first use;
/// `None` when `name` is not an alias.
pub async fn resolve(
    home: &Home,
    engine: &Engine,
    name: &str,
    progress: Progress<'_>,
) -> Result<Option<ImageMeta>, LocalError> {
    if let Some(id) = bound_aliases(home).get(name)
        && let Ok(meta) = read(home, id)
        && usable(engine, &meta).await?
    {
        return Ok(Some(meta));
    }
    let Some((alias, default_ref, image_name)) = ALIASES.iter().find(|(a, ..)| *a == name) else {
        return Ok(None);
    };
    let source = std::env::var(override_var(alias)).ok().filter(|r| !r.is_empty());
    let source = source.as_deref().unwrap_or(default_ref);
    for id in home.list("images")? {
        if let Ok(meta) = read(home, &id)
            && meta.alias.as_deref() == Some(alias)
            && meta.source_ref.as_deref() == Some(source)
            && usable(engine, &meta).await?
        {
            return Ok(Some(meta));
        }
    }
    if engine.image(source).await?.is_none() {
        progress(&format!("pulling {source} for `{alias}`"));
        engine.pull(source, &mut |line| progress(&format!("  {line}"))).await?;
    }
    let meta = make_base(home, engine, source, source, image_name, Some(alias)).await?;
    Ok(Some(meta))
}

/// Makes an AMI-like base of engine image `source` (recorded as coming from `origin`): a
/// container runs [`PROVISION`] as root and is committed; the document is `available` when it
/// returns.
async fn make_base(
    home: &Home,
    engine: &Engine,
    source: &str,
    origin: &str,
    name: &str,
    alias: Option<&str>,
) -> Result<ImageMeta, LocalError> {
    let meta = record(home, |id| ImageMeta {
        id,
        name: name.to_string(),
        description: format!("{origin}, with the `ubuntu` user and sudo (devami base)"),
        state: ImageState::Pending,
        state_reason: None,
        created: clock::now(),
        alias: alias.map(str::to_string),
        source_ref: Some(origin.to_string()),
        source_instance: None,
        engine_image: None,
        size_bytes: 0,
        builder: Some(Builder::me()),
        tags: BTreeMap::new(),
    })?;
    let made = provision(home, engine, source, &meta).await;
    match made {
        Ok((engine_image, size)) => Ok(update(home, &meta.id, |m| {
            m.state = ImageState::Available;
            m.engine_image = Some(engine_image);
            m.size_bytes = size;
            m.builder = None;
        })?),
        Err(e) => {
            update(home, &meta.id, |m| {
                m.state = ImageState::Failed;
                m.state_reason = Some(e.to_string());
                m.builder = None;
            })?;
            Err(e)
        }
    }
}

async fn provision(
    home: &Home,
    engine: &Engine,
    source: &str,
    meta: &ImageMeta,
) -> Result<(String, u64), LocalError> {
    let name = format!("devami-base-{}", meta.id);
    let spec = ContainerSpec {
        name: name.clone(),
        image: source.to_string(),
        hostname: "devami-base".into(),
        labels: HashMap::from([(engine::LABEL_HOME.to_string(), home.label())]),
        ..Default::default()
    };
    let result = async {
        let container = engine.create_container(&spec).await?;
        engine.start(&container).await?;
        let exec = ExecSpec {
            cmd: vec!["/bin/sh".into(), "-c".into(), PROVISION.into()],
            user: "root".into(),
            ..Default::default()
        };
        let (code, _out, err) = engine.run(&container, &exec).await?;
        if code != 0 {
            return Err(LocalError::Engine {
                op: "preparing the base image",
                message: format!("{source}: exit status {code}: {}", String::from_utf8_lossy(&err).trim()),
            });
        }
        engine.stop(&container, std::time::Duration::from_secs(2)).await?;
        let id = engine.commit(&container, &reference(&meta.id), labels(home, meta)).await?;
        let size = engine.image(&id).await?.map_or(0, |i| i.size);
        Ok((id, size))
    }
    .await;
    let _ = engine.remove(&name).await;
    result
}

/// What an archive given to `import_image` holds.
#[derive(Debug, PartialEq, Eq)]
enum Archive {
    /// `docker save` or an OCI layout: images with their configuration.
    Images,
    /// A root filesystem (possibly compressed).
    RootFs,
}

/// Looks at an uncompressed tar's member names for `manifest.json` or `oci-layout`.
fn archive_kind(path: &Path) -> Result<Archive, LocalError> {
    let io = |e| LocalError::Io { op: "read", path: path.to_path_buf(), source: e };
    let mut f = crate::regular::open(path).map_err(io)?;
    let mut header = [0u8; 512];
    for _ in 0..100_000 {
        if f.read_exact(&mut header).is_err() || header.iter().all(|b| *b == 0) {
            break;
        }
        if header[257..262] != *b"ustar" {
            return Ok(Archive::RootFs);
        }
        let name_end = header[..100].iter().position(|b| *b == 0).unwrap_or(100);
        let name = String::from_utf8_lossy(&header[..name_end]);
        let name = name.trim_start_matches("./");
        if name == "manifest.json" || name == "oci-layout" {
            return Ok(Archive::Images);
        }
        let size_field = String::from_utf8_lossy(&header[124..136]);
        let size =
            u64::from_str_radix(size_field.trim_matches(|c: char| c == '\0' || c == ' '), 8).unwrap_or(0);
        f.seek(SeekFrom::Current(i64::try_from(size.div_ceil(512) * 512).unwrap_or(i64::MAX))).map_err(io)?;
    }
    Ok(Archive::RootFs)
}

/// `import_image FILE [--as NAME]`: a `docker save`/OCI archive or a root-filesystem tarball
/// becomes an image of this home; with an alias for `NAME`, the alias resolves to it from now on.
pub async fn import(
    home: &Home,
    engine: &Engine,
    file: &Path,
    as_name: Option<&str>,
    progress: Progress<'_>,
) -> Result<ImageMeta, LocalError> {
    let alias = as_name.filter(|n| ALIASES.iter().any(|(a, ..)| a == n));
    progress(&format!("importing {}", file.display()));
    let source = match archive_kind(file)? {
        Archive::Images => {
            let loaded = engine.load_archive(file, progress).await?;
            loaded.into_iter().next().ok_or_else(|| LocalError::Engine {
                op: "loading an image archive",
                message: format!("`{}` held no image", file.display()),
            })?
        }
        Archive::RootFs => {
            let stamp = home.random_hex(6)?;
            let reference = format!("devami/import-{stamp}:latest");
            // One label, one instruction: Podman's import reads a `changes` value as a single
            // instruction and a LABEL as a single pair (the rest becomes the value).
            let label = format!("LABEL {}={}", engine::LABEL_HOME, home.label());
            engine.import_rootfs(file, &reference, &[label], &mut |_| {}).await?
        }
    };
    let file_name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let name = as_name.map_or_else(|| format!("imported from {file_name}"), |n| n.to_string());
    let meta = make_base(home, engine, &source, &format!("{file_name} (imported)"), &name, alias).await?;
    if let Some(a) = alias {
        bind_alias(home, a, &meta.id)?;
    }
    Ok(meta)
}

/// Records a `pending` image of an instance and starts its builder; returns the new id at once.
pub fn create(
    home: &Home,
    request: &crate::backend::ImageRequest,
    from_image: &str,
) -> Result<String, LocalError> {
    let meta = record(home, |id| ImageMeta {
        id,
        name: request.name.clone(),
        description: request.description.clone(),
        state: ImageState::Pending,
        state_reason: None,
        created: clock::now(),
        alias: None,
        source_ref: Some(from_image.to_string()),
        source_instance: Some(request.instance_id.clone()),
        engine_image: None,
        size_bytes: 0,
        // The builder names itself when it takes the work on (see `describe`).
        builder: None,
        tags: request.tags.iter().cloned().collect(),
    })?;
    let mut cmd = std::process::Command::new(detach::devami_exe()?);
    cmd.arg("__build").arg(home.root()).arg(&meta.id);
    detach::spawn_detached(cmd, &home.image_dir(&meta.id).join("build.log"))?;
    Ok(meta.id)
}

/// The hidden subcommand `devami __build HOME ID`: commits a pending image's instance. Exit
/// status 0 when the image was dealt with (made, failed, or no longer pending).
pub fn build(home_root: &Path, id: &str) -> i32 {
    let result = (|| -> Result<(), LocalError> {
        let home = Home::at(home_root.to_path_buf())?;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| {
            LocalError::Io { op: "start the runtime for", path: home_root.to_path_buf(), source: e }
        })?;
        rt.block_on(async {
            let engine = Engine::connect(&home).await?;
            commit_pending(&home, &engine, id).await
        })
    })();
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("devami __build {id}: {e}");
            1
        }
    }
}

async fn commit_pending(home: &Home, engine: &Engine, id: &str) -> Result<(), LocalError> {
    let meta = {
        let _lock = home.lock()?;
        let mut meta = read(home, id)?;
        if meta.state != ImageState::Pending {
            return Ok(());
        }
        meta.builder = Some(Builder::me());
        write(home, &meta)?;
        meta
    };
    let made = async {
        let source = meta.source_instance.clone().unwrap_or_default();
        let inst = instances::read(home, &source)?;
        let container = inst.container.unwrap_or_else(|| instances::container_name(&source));
        let image = engine.commit(&container, &reference(&meta.id), labels(home, &meta)).await?;
        let size = engine.image(&image).await?.map_or(0, |i| i.size);
        Ok::<_, LocalError>((image, size))
    }
    .await;
    let _lock = home.lock()?;
    let mut now = read(home, id)?;
    match made {
        Ok((image, size)) => {
            now.engine_image = Some(image.clone());
            if now.state == ImageState::Pending {
                now.state = ImageState::Available;
                now.size_bytes = size;
            }
        }
        Err(e) if now.state == ImageState::Pending => {
            now.state = ImageState::Failed;
            now.state_reason = Some(format!("Server.InternalError: {e}"));
        }
        Err(_) => {}
    }
    now.builder = None;
    write(home, &now)?;
    Ok(())
}

/// How long a pending image may wait for its builder to take the work on.
const BUILDER_START_GRACE_SECS: i64 = 60;

/// The image now: a pending one whose builder died (or never started) is failed, naming it.
pub fn describe(home: &Home, id: &str) -> Result<ImageMeta, LocalError> {
    let meta = read(home, id)?;
    if meta.state != ImageState::Pending {
        return Ok(meta);
    }
    let why = match &meta.builder {
        Some(b) if !b.alive() => format!(
            "Server.InternalError: the image was interrupted: process {} ended before the commit was done",
            b.pid
        ),
        None if clock::now().saturating_sub(meta.created) > BUILDER_START_GRACE_SECS => format!(
            "Server.InternalError: the image's builder did not start (see `{}`)",
            home.image_dir(id).join("build.log").display()
        ),
        _ => return Ok(meta),
    };
    Ok(update(home, id, |m| {
        if m.state == ImageState::Pending && m.builder == meta.builder {
            m.state = ImageState::Failed;
            m.state_reason = Some(why);
            m.builder = None;
        }
    })?)
}

/// Deregisters an image and removes its engine image (kept while instances still use it, and
/// removed when the last of them is terminated).
pub async fn delete(home: &Home, engine: &Engine, id: &str) -> Result<(), LocalError> {
    let meta = update(home, id, |m| m.state = ImageState::Deregistered)?;
    if let Some(image) = &meta.engine_image {
        engine.remove_image(image).await?;
    }
    Ok(())
}

/// Removes the engine images of deregistered images that nothing uses any more.
pub async fn collect_garbage(home: &Home, engine: &Engine) -> Result<(), LocalError> {
    for id in home.list("images")? {
        if let Ok(meta) = read(home, &id)
            && meta.state == ImageState::Deregistered
            && let Some(image) = &meta.engine_image
            && engine.image(image).await?.is_some()
        {
            engine.remove_image(image).await?;
        }
    }
    Ok(())
}

/// Engine images of this home the documents do not know: recorded from their labels.
pub async fn adopt_unknown(home: &Home, engine: &Engine) -> Result<(), LocalError> {
    for info in engine.images_labelled(engine::LABEL_HOME, &home.label()).await? {
        let Some(id) = info.labels.get(engine::LABEL_IMAGE) else { continue };
        if !super::is_id(id, "ami-") || home.image_dir(id).join("image.json").exists() {
            continue;
        }
        let tags = engine::tags_of(&info.labels);
        let meta = ImageMeta {
            id: id.clone(),
            name: info.labels.get("devami.name").cloned().unwrap_or_default(),
            description: "found in the container engine through its labels".into(),
            state: ImageState::Available,
            state_reason: None,
            created: info
                .labels
                .get("devami.created")
                .and_then(|c| c.parse().ok())
                .unwrap_or_else(clock::now),
            alias: info.labels.get("devami.alias").cloned(),
            source_ref: None,
            source_instance: info.labels.get("devami.source-instance").cloned(),
            engine_image: Some(info.id.clone()),
            size_bytes: info.size,
            builder: None,
            tags,
        };
        let _lock = home.lock()?;
        let dir = home.image_dir(id);
        std::fs::create_dir_all(&dir).map_err(|e| LocalError::Io {
            op: "create",
            path: dir.clone(),
            source: e,
        })?;
        if !dir.join("image.json").exists() {
            write(home, &meta)?;
        }
    }
    Ok(())
}
