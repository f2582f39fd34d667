//! The AWS backend: EC2, SSM, S3 and STS through the official Rust SDK, against AWS or any
//! AWS-compatible endpoint.
//!
//! Invariants: this is the only module that names EC2, SSM and STS SDK types, and their error
//! codes: errors leave it sorted into [`BackendError`] variants (`AwsBackend::map`), with the
//! service's code and message in their text. Credentials are checked once, when the backend is
//! created, so a missing or expired one is one clear error before anything waits.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aws_config::BehaviorVersion;
use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, Filter, IamInstanceProfileSpecification, ResourceType, Tag,
    TagSpecification, VolumeType,
};

use crate::backend::objstore::ObjectStore;
use crate::backend::{
    Backend, BackendError, BackendKind, Identity, Image, ImageRequest, ImageState, Instance, InstanceState,
    JobReport, JobSpec, JobState, LaunchSpec, ObjectInfo, ResolvedImage, carries_tags,
};
use crate::clock;

/// How to reach AWS, from the command line and the blueprint.
#[derive(Debug, Clone, Default)]
pub struct AwsOptions {
    pub profile: Option<String>,
    /// `--region`, which wins over the blueprint's region.
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
    /// The ssh private key (`--key`), else `DEVAMI_SSH_KEY`, else `~/.ssh/<KEY_NAME>.pem`.
    pub key: Option<PathBuf>,
    /// The ssh user, else guessed from the image.
    pub ssh_user: Option<String>,
}

/// The aliases, their SSM public parameters and the original's fixed table (us-east-1, 2020).
const ALIASES: &[(&str, &str, Option<&str>)] = &[
    (
        "ubuntu16",
        "/aws/service/canonical/ubuntu/server/16.04/stable/current/amd64/hvm/ebs-gp2/ami-id",
        Some("ami-08bc77a2c7eb2b1da"),
    ),
    (
        "ubuntu18",
        "/aws/service/canonical/ubuntu/server/18.04/stable/current/amd64/hvm/ebs-gp2/ami-id",
        Some("ami-07ebfd5b3428b6f4d"),
    ),
    ("ubuntu20", "/aws/service/canonical/ubuntu/server/20.04/stable/current/amd64/hvm/ebs-gp2/ami-id", None),
    ("ubuntu22", "/aws/service/canonical/ubuntu/server/22.04/stable/current/amd64/hvm/ebs-gp2/ami-id", None),
    ("ubuntu24", "/aws/service/canonical/ubuntu/server/24.04/stable/current/amd64/hvm/ebs-gp3/ami-id", None),
    (
        "dlami16",
        "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-20.04/latest/ami-id",
        Some("ami-0a79b70001264b442"),
    ),
    (
        "dlami18",
        "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id",
        Some("ami-0dbb717f493016a1a"),
    ),
    ("al2023", "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64", None),
];

/// The SSM parameter an alias resolves through (`DEVAMI_ALIAS_PARAM_<ALIAS>` overrides it).
pub fn alias_parameter(alias: &str) -> Option<String> {
    let default = ALIASES.iter().find(|(a, _, _)| *a == alias)?.1;
    let var = format!("DEVAMI_ALIAS_PARAM_{}", alias.to_uppercase());
    Some(std::env::var(var).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_string()))
}

/// The AWS backend.
#[derive(Debug)]
pub struct AwsBackend {
    ec2: aws_sdk_ec2::Client,
    ssm: aws_sdk_ssm::Client,
    sts: aws_sdk_sts::Client,
    store: ObjectStore,
    region: String,
    endpoint: String,
    opts: AwsOptions,
    profile_uses_sso: bool,
    identity: Identity,
    key_name: Option<String>,
    /// The ssh user guessed for each instance from its image (cached per process).
    ssh_users: std::sync::Mutex<BTreeMap<String, String>>,
}

impl AwsBackend {
    /// Loads the configuration through the standard credential chain (environment, shared
    /// profiles and `--profile`, SSO), with the region from `--region`, else the blueprint, else
    /// the chain, and the endpoint of `--endpoint-url` / `AWS_ENDPOINT_URL` if any (S3 is then
    /// addressed path-style); then checks the credentials (`GetCallerIdentity`).
    pub async fn connect(
        opts: AwsOptions,
        blueprint_region: Option<String>,
        key_name: Option<String>,
    ) -> Result<AwsBackend, BackendError> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(p) = &opts.profile {
            loader = loader.profile_name(p);
        }
        if let Some(r) = opts.region.clone().or(blueprint_region) {
            loader = loader.region(aws_config::Region::new(r));
        }
        if let Some(url) = &opts.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let sdk = loader.load().await;
        let region = sdk.region().map(|r| r.to_string()).ok_or_else(|| BackendError::Service {
            code: Some("NoRegion".into()),
            message: "no AWS region: set `REGION` in the blueprint, pass `--region`, or set AWS_REGION"
                .into(),
        })?;
        let endpoint = sdk.endpoint_url().map(str::to_string).unwrap_or_else(|| format!("AWS ({region})"));
        let path_style = sdk.endpoint_url().is_some();
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&sdk).force_path_style(path_style).build(),
        );
        let profile_name = opts.profile.clone().or_else(|| std::env::var("AWS_PROFILE").ok());
        let profile_uses_sso = profile_name.as_deref().is_some_and(profile_has_sso);
        let sts = aws_sdk_sts::Client::new(&sdk);
        let mut backend = AwsBackend {
            ec2: aws_sdk_ec2::Client::new(&sdk),
            ssm: aws_sdk_ssm::Client::new(&sdk),
            sts,
            store: ObjectStore::from_client(s3),
            region,
            endpoint,
            opts,
            profile_uses_sso,
            identity: Identity { arn: String::new(), account: String::new() },
            key_name,
            ssh_users: std::sync::Mutex::new(BTreeMap::new()),
        };
        // The preflight: credentials problems surface here, not in the middle of a wait.
        let me = backend
            .sts
            .get_caller_identity()
            .send()
            .await
            .map_err(|e| backend.map("GetCallerIdentity", e))?;
        backend.identity = Identity {
            arn: me.arn().unwrap_or_default().to_string(),
            account: me.account().unwrap_or_default().to_string(),
        };
        Ok(backend)
    }

    /// Sorts an SDK error into a backend error, keeping the AWS code and message in its text: the
    /// codes of a missing instance, image or parameter are `NotFound`, an instance in the wrong
    /// state `InvalidState`, credential codes `Credentials`, the slow-down codes `Throttled` (see
    /// [`BackendError::from_service`]; an answer of HTTP 5xx without a code is `InternalError`), a
    /// connection that failed `Unreachable`.
    fn map<E>(&self, op: &str, err: SdkError<E>) -> BackendError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let credentials_hint = match (&self.opts.profile, self.profile_uses_sso) {
            (Some(p), true) => format!("run `aws sso login --profile {p}` and retry"),
            (None, true) => "run `aws sso login` and retry".to_string(),
            _ => "set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or choose a profile with `--profile`"
                .to_string(),
        };
        if let SdkError::ServiceError(service) = &err {
            let e = service.err();
            let status = service.raw().status().as_u16();
            let code =
                e.code().unwrap_or(if status >= 500 { "InternalError" } else { "Unknown" }).to_string();
            let message = e
                .message()
                .map(str::to_string)
                .unwrap_or_else(|| format!("the service answered HTTP {status} without an error message"));
            return match code.as_str() {
                "DryRunOperation" => BackendError::DryRunOk,
                // Worded by devami around the service's message, as it always was.
                "InvalidInstanceID.NotFound" | "InvalidInstanceID.Malformed" => {
                    BackendError::not_found("instance", &message)
                }
                "InvalidAMIID.NotFound" => BackendError::NotFound {
                    what: "image",
                    code: Some(code),
                    message: format!("{op}: {message}"),
                },
                "ParameterNotFound" => BackendError::NotFound {
                    what: "parameter",
                    code: Some(code),
                    message: format!("{op}: {message}"),
                },
                "IncorrectInstanceState" => BackendError::InvalidState {
                    what: "instance",
                    code: Some(code),
                    message: format!("{op}: {message}"),
                },
                "ExpiredToken"
                | "ExpiredTokenException"
                | "InvalidClientTokenId"
                | "AuthFailure"
                | "UnrecognizedClientException"
                | "SignatureDoesNotMatch"
                | "InvalidAccessKeyId" => BackendError::Credentials {
                    message: format!("{code}: {message}"),
                    hint: credentials_hint,
                },
                _ => BackendError::from_service(Some(code), format!("{op}: {message}")),
            };
        }
        let text = DisplayErrorContext(&err).to_string();
        let lower = text.to_lowercase();
        if lower.contains("credential") || lower.contains("no identity") || lower.contains("sso") {
            let message = if lower.contains("sso/cache") || lower.contains("sso token") {
                "the SSO session has expired or was never started".to_string()
            } else if lower.contains("no credentials found") || lower.contains("not enabled") {
                "none found in the environment, the shared config and credentials files, SSO or instance metadata".to_string()
            } else {
                // The readable part, without the debug representation the SDK appends.
                without_debug_dump(&text)
            };
            return BackendError::Credentials { message, hint: credentials_hint };
        }
        match err {
            SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
                BackendError::Unreachable {
                    endpoint: self.endpoint.clone(),
                    message: without_debug_dump(&text),
                }
            }
            _ => BackendError::Service { code: None, message: format!("{op}: {text}") },
        }
    }

    async fn volumes_of(&self, instance_id: &str) -> Result<Vec<String>, BackendError> {
        let out = self
            .ec2
            .describe_instances()
            .instance_ids(instance_id)
            .send()
            .await
            .map_err(|e| self.map("DescribeInstances", e))?;
        Ok(out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .flat_map(|i| i.block_device_mappings())
            .filter_map(|m| m.ebs().and_then(|e| e.volume_id()).map(str::to_string))
            .collect())
    }

    fn ssh_key(&self) -> Result<PathBuf, BackendError> {
        let key = self
            .opts
            .key
            .clone()
            .or_else(|| std::env::var_os("DEVAMI_SSH_KEY").map(PathBuf::from))
            .or_else(|| {
                let name = self.key_name.as_ref()?;
                Some(PathBuf::from(std::env::var_os("HOME")?).join(".ssh").join(format!("{name}.pem")))
            })
            .ok_or_else(|| BackendError::Service {
                code: Some("NoKey".into()),
                message: "no ssh key: pass `--key PATH` (the private key of the blueprint's KEY_NAME)".into(),
            })?;
        check_key_permissions(&key)?;
        Ok(key)
    }
}

/// The login user of an image, from its name and description: `ec2-user` for Amazon Linux,
/// `centos`, `admin` (Debian), else `ubuntu` (Ubuntu and the Deep Learning AMIs).
pub fn guess_ssh_user(image_text: &str) -> &'static str {
    let t = image_text.to_lowercase();
    if t.contains("amzn") || t.contains("amazon linux") || t.contains("al2023") {
        "ec2-user"
    } else if t.contains("centos") {
        "centos"
    } else if t.contains("debian") {
        "admin"
    } else {
        "ubuntu"
    }
}

/// Refuses a private key that others can read, as ssh does.
pub fn check_key_permissions(key: &Path) -> Result<(), BackendError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(key).map_err(|e| BackendError::Service {
        code: Some("NoKey".into()),
        message: format!("cannot read the ssh key `{}`: {e}", key.display()),
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(BackendError::Service {
            code: Some("UnprotectedKey".into()),
            message: format!(
                "the ssh key `{}` has permissions {mode:04o}, readable by others; ssh refuses it too: run `chmod 600 {}`",
                key.display(),
                key.display()
            ),
        });
    }
    Ok(())
}

/// Whether a profile in the shared config file uses IAM Identity Center (SSO).
fn profile_has_sso(profile: &str) -> bool {
    let path = std::env::var_os("AWS_CONFIG_FILE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".aws/config")));
    let Some(text) = path.and_then(|p| std::fs::read_to_string(p).ok()) else { return false };
    let wanted = [format!("[profile {profile}]"), format!("[{profile}]")];
    let mut inside = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            inside = wanted.iter().any(|w| w == line);
        } else if inside && (line.starts_with("sso_start_url") || line.starts_with("sso_session")) {
            return true;
        }
    }
    false
}

fn tags_of(tags: &[aws_sdk_ec2::types::Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or_default().to_string())))
        .collect()
}

/// `tag:KEY` filters, one per tag.
fn tag_filters(tags: &[(String, String)]) -> Vec<Filter> {
    tags.iter().map(|(k, v)| Filter::builder().name(format!("tag:{k}")).values(v).build()).collect()
}

/// An EC2 instance as the domain sees it (without status checks, which take another call).
fn instance_of(inst: &aws_sdk_ec2::types::Instance, fallback_id: &str) -> Instance {
    Instance {
        id: inst.instance_id().unwrap_or(fallback_id).to_string(),
        image_id: inst.image_id().unwrap_or_default().to_string(),
        instance_type: inst.instance_type().map(|t| t.as_str().to_string()).unwrap_or_default(),
        state: inst
            .state()
            .and_then(|s| s.name())
            .map(|n| n.as_str())
            .unwrap_or("pending")
            .parse()
            .unwrap_or(InstanceState::Pending),
        state_reason: inst
            .state_reason()
            .and_then(|r| r.message())
            .filter(|m| !m.is_empty())
            .map(str::to_string),
        launch_time: inst.launch_time().map(|t| t.secs()),
        public_ip: inst.public_ip_address().map(str::to_string),
        private_ip: inst.private_ip_address().map(str::to_string),
        tags: tags_of(inst.tags()),
        status_checks: None,
    }
}

/// An EC2 image as the domain sees it (without snapshot progress, which takes another call).
fn image_of(img: &aws_sdk_ec2::types::Image, fallback_id: &str) -> Image {
    let snapshot_ids: Vec<String> = img
        .block_device_mappings()
        .iter()
        .filter_map(|m| m.ebs().and_then(|e| e.snapshot_id()).map(str::to_string))
        .collect();
    let size_gib: i64 = img
        .block_device_mappings()
        .iter()
        .filter_map(|m| m.ebs().and_then(|e| e.volume_size()))
        .map(i64::from)
        .sum();
    Image {
        id: img.image_id().unwrap_or(fallback_id).to_string(),
        name: img.name().unwrap_or_default().to_string(),
        state: image_state(img.state().map(|s| s.as_str()).unwrap_or("unknown")),
        state_reason: img
            .state_reason()
            .and_then(|r| r.message())
            .filter(|m| !m.is_empty())
            .map(str::to_string),
        created: img.creation_date().and_then(clock::parse),
        source_instance: None,
        size_bytes: (size_gib > 0).then(|| size_gib as u64 * 1024 * 1024 * 1024),
        progress: None,
        root_device_name: img.root_device_name().map(str::to_string),
        snapshot_ids,
        tags: tags_of(img.tags()),
    }
}

fn tag(k: &str, v: &str) -> Tag {
    Tag::builder().key(k).value(v).build()
}

fn image_state(s: &str) -> ImageState {
    ImageState::parse(s)
}

fn job_state(s: &str) -> JobState {
    match s {
        "Pending" => JobState::Pending,
        "InProgress" => JobState::InProgress,
        "Delayed" => JobState::Delayed,
        "Success" => JobState::Success,
        "Cancelled" => JobState::Cancelled,
        "TimedOut" => JobState::TimedOut,
        "Cancelling" => JobState::Cancelling,
        _ => JobState::Failed,
    }
}

#[async_trait::async_trait]
impl Backend for AwsBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Aws
    }

    async fn identity(&self) -> Result<Identity, BackendError> {
        Ok(self.identity.clone())
    }

    /// Resolves an alias through its SSM public parameter ([`alias_parameter`]); where the
    /// parameter does not exist, the original's fixed 2020 table is the last resort (the source
    /// says it may be stale).
    async fn resolve_alias(&self, name: &str) -> Result<Option<ResolvedImage>, BackendError> {
        let Some(param) = alias_parameter(name) else { return Ok(None) };
        match self.ssm.get_parameter().name(&param).send().await {
            Ok(out) => {
                let p = out.parameter();
                let id = p.and_then(|p| p.value()).unwrap_or_default().to_string();
                Ok(Some(ResolvedImage {
                    alias: name.to_string(),
                    image_id: id,
                    source: format!("SSM parameter {param} in {}", self.region),
                    published: p.and_then(|p| p.last_modified_date()).map(|d| d.secs()),
                }))
            }
            Err(e) => {
                let err = self.map("GetParameter", e);
                let not_found = matches!(&err, BackendError::NotFound { what: "parameter", .. });
                match ALIASES.iter().find(|(a, _, _)| *a == name).and_then(|(_, _, fixed)| *fixed) {
                    Some(fixed) if not_found => Ok(Some(ResolvedImage {
                        alias: name.to_string(),
                        image_id: fixed.to_string(),
                        source: format!(
                            "the original's fixed us-east-1 table from 2020, because SSM parameter {param} does not exist here; it may be stale"
                        ),
                        published: None,
                    })),
                    _ => Err(err),
                }
            }
        }
    }

    async fn describe_image(&self, image_id: &str) -> Result<Image, BackendError> {
        let out = self
            .ec2
            .describe_images()
            .image_ids(image_id)
            .send()
            .await
            .map_err(|e| self.map("DescribeImages", e))?;
        let img = out.images().first().ok_or_else(|| BackendError::NotFound {
            what: "image",
            code: Some("InvalidAMIID.NotFound".into()),
            message: format!("the image id `{image_id}` does not exist in {}", self.region),
        })?;
        let mut image = image_of(img, image_id);
        if image.state == ImageState::Pending
            && !image.snapshot_ids.is_empty()
            && let Ok(snaps) =
                self.ec2.describe_snapshots().set_snapshot_ids(Some(image.snapshot_ids.clone())).send().await
        {
            image.progress = snaps
                .snapshots()
                .iter()
                .filter_map(|s| s.progress()?.trim_end_matches('%').parse::<u8>().ok())
                .min();
        }
        Ok(image)
    }

    async fn launch(&self, spec: &LaunchSpec) -> Result<Instance, BackendError> {
        let tags: Vec<Tag> = spec.tags.iter().map(|(k, v)| tag(k, v)).collect();
        let mut req = self
            .ec2
            .run_instances()
            .image_id(&spec.image_id)
            .instance_type(spec.instance_type.as_str().into())
            .min_count(1)
            .max_count(1)
            .dry_run(spec.dry_run)
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Instance)
                    .set_tags(Some(tags.clone()))
                    .build(),
            )
            .tag_specifications(
                TagSpecification::builder().resource_type(ResourceType::Volume).set_tags(Some(tags)).build(),
            );
        if let Some(k) = &spec.key_name {
            req = req.key_name(k);
        }
        for sg in &spec.security_groups {
            req = req.security_groups(sg);
        }
        if let Some(p) = &spec.iam_instance_profile {
            req = req.iam_instance_profile(IamInstanceProfileSpecification::builder().name(p).build());
        }
        if let Some(size) = spec.volume_size {
            // On the image's own root device (not a hard-coded /dev/sda1).
            let image = self.describe_image(&spec.image_id).await?;
            let root = image.root_device_name.unwrap_or_else(|| "/dev/sda1".into());
            req = req.block_device_mappings(
                BlockDeviceMapping::builder()
                    .device_name(root)
                    .ebs(
                        EbsBlockDevice::builder()
                            .volume_size(size as i32)
                            .volume_type(VolumeType::Gp3)
                            .delete_on_termination(true)
                            .build(),
                    )
                    .build(),
            );
        }
        let out = req.send().await.map_err(|e| self.map("RunInstances", e))?;
        let inst = out.instances().first().ok_or_else(|| BackendError::Service {
            code: None,
            message: "RunInstances returned no instance".into(),
        })?;
        let id = inst.instance_id().unwrap_or_default().to_string();
        Ok(Instance {
            id,
            image_id: inst.image_id().unwrap_or_default().to_string(),
            instance_type: inst.instance_type().map(|t| t.as_str().to_string()).unwrap_or_default(),
            state: InstanceState::Pending,
            state_reason: None,
            launch_time: inst.launch_time().map(|t| t.secs()),
            public_ip: None,
            private_ip: inst.private_ip_address().map(str::to_string),
            tags: tags_of(inst.tags()),
            status_checks: None,
        })
    }

    async fn describe_instance(&self, instance_id: &str) -> Result<Instance, BackendError> {
        let out = self
            .ec2
            .describe_instances()
            .instance_ids(instance_id)
            .send()
            .await
            .map_err(|e| self.map("DescribeInstances", e))?;
        let inst = out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .next()
            .ok_or_else(|| BackendError::not_found("instance", instance_id))?;
        let mut found = instance_of(inst, instance_id);
        let state = found.state;
        if let Some(image_id) = inst.image_id() {
            let known = self.ssh_users.lock().map(|m| m.contains_key(instance_id)).unwrap_or(true);
            if !known {
                let user = match self.describe_image(image_id).await {
                    Ok(img) => guess_ssh_user(&format!("{} {:?}", img.name, img.tags)),
                    Err(_) => "ubuntu",
                };
                if let Ok(mut m) = self.ssh_users.lock() {
                    m.insert(instance_id.to_string(), user.to_string());
                }
            }
        }
        let mut status_checks = None;
        if state == InstanceState::Running {
            let st = self
                .ec2
                .describe_instance_status()
                .instance_ids(instance_id)
                .include_all_instances(true)
                .send()
                .await
                .map_err(|e| self.map("DescribeInstanceStatus", e))?;
            if let Some(s) = st.instance_statuses().first() {
                let sys = s.system_status().and_then(|x| x.status()).map(|x| x.as_str().to_string());
                let ins = s.instance_status().and_then(|x| x.status()).map(|x| x.as_str().to_string());
                status_checks =
                    Some((sys.unwrap_or_else(|| "ok".into()), ins.unwrap_or_else(|| "ok".into())));
            }
        }
        found.status_checks = status_checks;
        Ok(found)
    }

    async fn start(&self, instance_id: &str) -> Result<(), BackendError> {
        self.ec2
            .start_instances()
            .instance_ids(instance_id)
            .send()
            .await
            .map_err(|e| self.map("StartInstances", e))?;
        Ok(())
    }

    async fn stop(&self, instance_id: &str) -> Result<(), BackendError> {
        self.ec2
            .stop_instances()
            .instance_ids(instance_id)
            .send()
            .await
            .map_err(|e| self.map("StopInstances", e))?;
        Ok(())
    }

    async fn terminate(&self, instance_id: &str) -> Result<(), BackendError> {
        self.ec2
            .terminate_instances()
            .instance_ids(instance_id)
            .send()
            .await
            .map_err(|e| self.map("TerminateInstances", e))?;
        Ok(())
    }

    async fn find_instances(&self, tags: &[(String, String)]) -> Result<Vec<Instance>, BackendError> {
        let mut filters = tag_filters(tags);
        filters.push(
            Filter::builder()
                .name("instance-state-name")
                .set_values(Some(
                    ["pending", "running", "shutting-down", "stopping", "stopped"].map(String::from).to_vec(),
                ))
                .build(),
        );
        let mut found = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let out = self
                .ec2
                .describe_instances()
                .set_filters(Some(filters.clone()))
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| self.map("DescribeInstances", e))?;
            found.extend(
                out.reservations()
                    .iter()
                    .flat_map(|r| r.instances())
                    .map(|i| instance_of(i, ""))
                    // Filter values are patterns (`*`, `?`): keep exact matches only.
                    .filter(|i| i.state != InstanceState::Terminated && carries_tags(&i.tags, tags)),
            );
            match out.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(found)
    }

    async fn find_images(&self, tags: &[(String, String)]) -> Result<Vec<Image>, BackendError> {
        let mut found = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let out = self
                .ec2
                .describe_images()
                .owners("self")
                .set_filters(Some(tag_filters(tags)))
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| self.map("DescribeImages", e))?;
            found.extend(
                out.images()
                    .iter()
                    .map(|i| image_of(i, ""))
                    .filter(|i| i.state != ImageState::Deregistered && carries_tags(&i.tags, tags)),
            );
            match out.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(found)
    }

    async fn set_tags(
        &self,
        instance_id: &str,
        tags: &[(String, String)],
        dry_run: bool,
    ) -> Result<(), BackendError> {
        let mut resources = vec![instance_id.to_string()];
        resources.extend(self.volumes_of(instance_id).await?);
        self.ec2
            .create_tags()
            .set_resources(Some(resources))
            .set_tags(Some(tags.iter().map(|(k, v)| tag(k, v)).collect()))
            .dry_run(dry_run)
            .send()
            .await
            .map_err(|e| self.map("CreateTags", e))?;
        Ok(())
    }

    async fn create_image(&self, request: &ImageRequest) -> Result<String, BackendError> {
        let tags: Vec<Tag> = request.tags.iter().map(|(k, v)| tag(k, v)).collect();
        let out = self
            .ec2
            .create_image()
            .instance_id(&request.instance_id)
            .name(&request.name)
            .description(&request.description)
            // Image tags only: snapshots are found through the image (and AWS-compatible
            // emulators such as moto reject snapshot tag specifications here).
            .tag_specifications(
                TagSpecification::builder().resource_type(ResourceType::Image).set_tags(Some(tags)).build(),
            )
            .send()
            .await
            .map_err(|e| self.map("CreateImage", e))?;
        out.image_id().map(str::to_string).ok_or_else(|| BackendError::Service {
            code: None,
            message: "CreateImage returned no image id".into(),
        })
    }

    async fn delete_image(&self, image_id: &str) -> Result<(), BackendError> {
        let image = self.describe_image(image_id).await?;
        self.ec2
            .deregister_image()
            .image_id(image_id)
            .send()
            .await
            .map_err(|e| self.map("DeregisterImage", e))?;
        for snap in &image.snapshot_ids {
            self.ec2
                .delete_snapshot()
                .snapshot_id(snap)
                .send()
                .await
                .map_err(|e| self.map("DeleteSnapshot", e))?;
        }
        Ok(())
    }

    async fn send_command(&self, job: &JobSpec) -> Result<String, BackendError> {
        let out = self
            .ssm
            .send_command()
            .document_name("AWS-RunShellScript")
            .instance_ids(&job.instance_id)
            .parameters("commands", job.commands.clone())
            .parameters("workingDirectory", vec![job.working_directory.clone()])
            .parameters("executionTimeout", vec![job.execution_timeout.to_string()])
            .output_s3_bucket_name(&job.output_bucket)
            .output_s3_key_prefix(&job.output_prefix)
            .send()
            .await
            .map_err(|e| self.map("SendCommand", e))?;
        out.command().and_then(|c| c.command_id()).map(str::to_string).ok_or_else(|| BackendError::Service {
            code: None,
            message: "SendCommand returned no command id".into(),
        })
    }

    async fn describe_command(&self, command_id: &str, instance_id: &str) -> Result<JobReport, BackendError> {
        let out = self
            .ssm
            .get_command_invocation()
            .command_id(command_id)
            .instance_id(instance_id)
            .send()
            .await
            .map_err(|e| self.map("GetCommandInvocation", e))?;
        let mut state = job_state(out.status().map(|s| s.as_str()).unwrap_or("Pending"));
        let mut detail = None;
        if !state.is_final() {
            // NeuroCAAS issue #13: a COMMAND that stops its instance leaves SSM InProgress forever.
            if let Ok(inst) = self.describe_instance(instance_id).await
                && !matches!(inst.state, InstanceState::Running | InstanceState::Pending)
            {
                state = JobState::Failed;
                detail = Some(format!(
                    "instance {instance_id} is {} while SSM still reports the command in progress; read the status object and the output for the result",
                    inst.state
                ));
            }
        }
        let code = out.response_code();
        Ok(JobReport {
            command_id: command_id.to_string(),
            instance_id: instance_id.to_string(),
            state,
            exit_code: (code >= 0 && state.is_final()).then_some(code),
            started: out.execution_start_date_time().and_then(clock::parse),
            ended: out.execution_end_date_time().and_then(clock::parse),
            detail,
            inline_output: Some((
                out.standard_output_content().unwrap_or_default().to_string(),
                out.standard_error_content().unwrap_or_default().to_string(),
            )),
        })
    }

    async fn cancel_command(&self, command_id: &str, instance_id: &str) -> Result<(), BackendError> {
        self.ssm
            .cancel_command()
            .command_id(command_id)
            .instance_ids(instance_id)
            .send()
            .await
            .map_err(|e| self.map("CancelCommand", e))?;
        Ok(())
    }

    async fn put_object(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<(), BackendError> {
        self.store.put(bucket, key, body).await
    }

    async fn get_object(&self, bucket: &str, key: &str) -> Result<Vec<u8>, BackendError> {
        self.store.get(bucket, key).await
    }

    async fn list_objects(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectInfo>, BackendError> {
        self.store.list(bucket, prefix).await
    }

    async fn upload_file(
        &self,
        bucket: &str,
        key: &str,
        local: &Path,
        progress: &mut (dyn FnMut(u64, u64) + Send),
    ) -> Result<u64, BackendError> {
        self.store.upload_file(bucket, key, local, progress).await
    }

    async fn download_file(
        &self,
        bucket: &str,
        key: &str,
        local: &Path,
        progress: &mut (dyn FnMut(u64, u64) + Send),
    ) -> Result<u64, BackendError> {
        self.store.download_file(bucket, key, local, progress).await
    }

    fn shell_command(
        &self,
        instance_id: &str,
        address: Option<&str>,
        working_directory: &str,
        command: Option<&str>,
        _blueprint: Option<&Path>,
    ) -> Result<std::process::Command, BackendError> {
        let key = self.ssh_key()?;
        let guessed = self.ssh_users.lock().ok().and_then(|m| m.get(instance_id).cloned());
        let user = self.opts.ssh_user.clone().or(guessed).unwrap_or_else(|| "ubuntu".into());
        let host = address.ok_or_else(|| BackendError::Service {
            code: Some("NoAddress".into()),
            message: format!(
                "instance {instance_id} has no known address: run `get_ip` (it must be running)"
            ),
        })?;
        let mut cmd = std::process::Command::new("ssh");
        cmd.arg("-i")
            .arg(&key)
            .args(["-o", "StrictHostKeyChecking=accept-new"])
            .arg(format!("{user}@{host}"));
        // `~` must stay outside quotes for the remote shell to expand it; the rest is quoted.
        let wd = if working_directory == "~" {
            "~".to_string()
        } else if let Some(rest) = working_directory.strip_prefix("~/") {
            format!("~/{}", crate::shellquote::always(rest))
        } else {
            crate::shellquote::always(working_directory)
        };
        match command {
            Some(c) => {
                cmd.arg(format!("cd {wd} && {c}"));
            }
            None => {
                cmd.arg("-t").arg(format!("cd {wd} && exec $SHELL -l"));
            }
        }
        Ok(cmd)
    }
}

/// The readable part of an SDK error's display, without the debug representation the SDK
/// appends in parentheses (`... (DispatchFailure(DispatchFailure { source: ... }))`).
fn without_debug_dump(text: &str) -> String {
    const DUMPS: [&str; 5] =
        [" (DispatchFailure", " (TimeoutError", " (ResponseError", " (ConstructionFailure", " (ServiceError"];
    let cut = DUMPS.iter().filter_map(|d| text.find(d)).min().unwrap_or(text.len());
    text[..cut].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_users_are_guessed_from_the_image() {
        assert_eq!(
            guess_ssh_user("ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-amd64-server-20240101"),
            "ubuntu"
        );
        assert_eq!(guess_ssh_user("Deep Learning AMI (Ubuntu 18.04) Version 60.2"), "ubuntu");
        assert_eq!(guess_ssh_user("al2023-ami-2023.6.20241212.0-kernel-6.1-x86_64"), "ec2-user");
        assert_eq!(guess_ssh_user("amzn2-ami-hvm-2.0.20240131.0-x86_64-gp2"), "ec2-user");
    }

    #[test]
    fn alias_parameters_are_overridable() {
        assert!(
            alias_parameter("ubuntu22").unwrap().starts_with("/aws/service/canonical/ubuntu/server/22.04/")
        );
        assert_eq!(alias_parameter("nope"), None);
    }

    #[test]
    fn world_readable_keys_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let key = tmp.path().join("k.pem");
        std::fs::write(&key, "x").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = check_key_permissions(&key).unwrap_err().to_string();
        assert!(e.contains("0644") && e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(check_key_permissions(&key).is_ok());
    }
}
