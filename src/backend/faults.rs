//! Fault injection, a testing hook: a [`Backend`] decorator that makes chosen calls fail, slow
//! down or hang, so that the transcripts of `tests/faults/` can show what a session does when the
//! cloud misbehaves at a precise moment.
//!
//! When `DEVAMI_FAULTS` is set and not blank, the session wraps its backend (local or aws) in a
//! [`FaultyBackend`] that delegates every call to it except those its rules pick (the grammar is
//! at [`parse`]). Invariants: calls are counted per method, whether a rule picks them or not; an
//! injected failure is the [`BackendError`] variant the real cloud's failure would be; calls made
//! outside the trait are never seen (the AWS credential preflight, `shell_command`).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::backend::{
    Backend, BackendError, BackendKind, Identity, Image, ImageRequest, Instance, JobReport, JobSpec,
    LaunchSpec, ObjectInfo, ResolvedImage,
};
use crate::error::Error;

/// The environment variable holding the rules.
pub const ENV: &str = "DEVAMI_FAULTS";

/// What `expired` tells the user to do.
const RENEW_HINT: &str = "renew your credentials (`aws sso login`, or fresh \
    AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN) and retry";

/// Every call a rule may name: the async methods of [`Backend`].
pub const CALLS: [&str; 21] = [
    "launch",
    "describe_instance",
    "start",
    "stop",
    "terminate",
    "create_image",
    "describe_image",
    "delete_image",
    "send_command",
    "describe_command",
    "cancel_command",
    "get_object",
    "put_object",
    "list_objects",
    "upload_file",
    "download_file",
    "identity",
    "resolve_alias",
    "find_instances",
    "find_images",
    "set_tags",
];

/// Which calls of a method a rule picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// Every call.
    Every,
    /// Only the N-th call (1-based).
    Nth(u64),
    /// The N-th call and every later one.
    From(u64),
}

impl Which {
    fn picks(self, n: u64) -> bool {
        match self {
            Which::Every => true,
            Which::Nth(k) => n == k,
            Which::From(k) => n >= k,
        }
    }
}

/// What happens to a picked call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `BackendError::Service` without a code, with this message (or one naming the rule).
    Fail(Option<String>),
    /// `BackendError::Throttled` with code `ThrottlingException` and message `Rate exceeded`.
    Throttle,
    /// `BackendError::Credentials`: the security token expired.
    Expired,
    /// `BackendError::Unreachable`.
    Unreachable,
    /// `BackendError::NotFound` for the id of the call.
    NotFound,
    /// Sleep, then make the real call.
    Delay(Duration),
    /// Never answer.
    Hang,
}

/// One rule of `DEVAMI_FAULTS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The method it applies to; `None` for `*`.
    pub call: Option<&'static str>,
    pub which: Which,
    pub action: Action,
    /// The rule as written (trimmed), for messages.
    pub text: String,
}

impl Rule {
    fn picks(&self, call: &str, n: u64) -> bool {
        self.call.is_none_or(|c| c == call) && self.which.picks(n)
    }
}

/// Parses a whole `DEVAMI_FAULTS` value; the error is one line naming the bad rule.
///
/// ```text
/// DEVAMI_FAULTS="RULE[;RULE...]"
/// RULE   = CALL[#N|#N+]=ACTION
/// CALL   = launch | describe_instance | start | stop | terminate | create_image
///        | describe_image | delete_image | send_command | describe_command | cancel_command
///        | get_object | put_object | list_objects | upload_file | download_file | identity
///        | resolve_alias | find_instances | find_images | set_tags
///        | *                                   (every call)
/// #N     = only the N-th call of CALL in this process (1-based)
/// #N+    = the N-th call of CALL and every later one
///          (no #: every call of CALL)
/// ACTION = fail[:MESSAGE]   a service error without a code (MESSAGE, or one naming the rule)
///        | throttle         throttling: `ThrottlingException: Rate exceeded`
///        | expired          a credentials error: the security token expired (renew them)
///        | unreachable      the endpoint cannot be reached (connection refused)
///        | notfound         `NotFound` for the id of the call (instance, image, command, object)
///        | delay:DURATION   sleep DURATION (`250ms`, `3s`, `1.5s`, `2m`), then make the real call
///        | hang             never answer (only Ctrl-C, which drops the call, ends it)
/// ```
///
/// With `*`, `#N` is the N-th call of each method. Rules are tried in order and the first one
/// that picks a call decides what happens to it. Spaces around rules are ignored, and so are empty
/// rules (a trailing `;`); a MESSAGE runs to the end of its rule, so it may hold `=`, `:` and `#`
/// but not `;`. Examples: `describe_instance#2=throttle`, `describe_instance#2+=expired`,
/// `create_image=fail:InsufficientInstanceCapacity`, `*=delay:200ms;download_file=hang`.
///
/// A malformed value is one clear error line naming the bad rule (exit status 2) when the backend
/// is created: the first command that needs the cloud, after the credential preflight on AWS.
pub fn parse(spec: &str) -> Result<Vec<Rule>, String> {
    spec.split(';')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(|r| parse_rule(r).map_err(|why| format!("invalid {ENV} rule `{r}`: {why}")))
        .collect()
}

/// Parses one rule (already trimmed and not empty).
pub fn parse_rule(rule: &str) -> Result<Rule, String> {
    let Some((lhs, action)) = rule.split_once('=') else {
        return Err("expected CALL[#N|#N+]=ACTION, e.g. `describe_instance#2=throttle`".into());
    };
    let (name, count) = match lhs.trim().split_once('#') {
        Some((name, count)) => (name.trim(), Some(count.trim())),
        None => (lhs.trim(), None),
    };
    let call = match name {
        "*" => None,
        "" => {
            return Err(
                "the call name is missing before `=` (a backend call such as `launch`, or `*`)".into()
            );
        }
        name => Some(*CALLS.iter().find(|c| **c == name).ok_or_else(|| {
            let hint = suggest(name).map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default();
            format!("unknown call `{name}`{hint}; the calls are {} and `*`", CALLS.join(", "))
        })?),
    };
    let which = match count {
        None => Which::Every,
        Some(c) => {
            let (digits, from) = match c.strip_suffix('+') {
                Some(d) => (d, true),
                None => (c, false),
            };
            let n = digits
                .parse::<u64>()
                .ok()
                .filter(|n| *n >= 1 && digits.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| {
                    format!("`#{c}` is not a call number: use `#N` or `#N+` with N = 1, 2, 3...")
                })?;
            if from { Which::From(n) } else { Which::Nth(n) }
        }
    };
    let action = parse_action(action.trim())?;
    Ok(Rule { call, which, action, text: rule.to_string() })
}

fn parse_action(action: &str) -> Result<Action, String> {
    let (word, arg) = match action.split_once(':') {
        Some((w, a)) => (w.trim(), Some(a)),
        None => (action, None),
    };
    let no_arg = |a: Action| match arg {
        None => Ok(a),
        Some(_) => Err(format!("`{word}` takes no argument (remove `:{}`)", arg.unwrap_or_default())),
    };
    match word {
        "fail" => match arg.map(str::trim) {
            None => Ok(Action::Fail(None)),
            Some("") => Err("`fail:` needs a message after the colon, or write `fail` alone".into()),
            Some(m) => Ok(Action::Fail(Some(m.to_string()))),
        },
        "throttle" => no_arg(Action::Throttle),
        "expired" => no_arg(Action::Expired),
        "unreachable" => no_arg(Action::Unreachable),
        "notfound" => no_arg(Action::NotFound),
        "hang" => no_arg(Action::Hang),
        "delay" => match arg {
            Some(d) => parse_duration(d.trim()).map(Action::Delay),
            None => Err("`delay` needs a duration, e.g. `delay:250ms` or `delay:3s`".into()),
        },
        "" => Err("the action is missing after `=`".into()),
        other => Err(format!(
            "unknown action `{other}`; the actions are fail[:MESSAGE], throttle, expired, unreachable, \
             notfound, delay:DURATION and hang"
        )),
    }
}

/// `250ms`, `3s`, `1.5s`, `2m`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("`{s}` is not a duration: write a number and a unit, e.g. `250ms`, `3s` or `2m`");
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
    let (number, unit) = s.split_at(split);
    let value: f64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(bad()),
    };
    Duration::try_from_secs_f64(seconds)
        .ok()
        .filter(|d| *d <= Duration::from_secs(86_400))
        .ok_or_else(|| format!("`{s}` is out of range: a delay is at most a day (`24h` is `1440m`)"))
}

/// The closest call name, for a typo.
fn suggest(name: &str) -> Option<&'static str> {
    if name.len() > 64 {
        return None;
    }
    let typed: Vec<char> = name.chars().flat_map(char::to_lowercase).collect();
    let threshold = (typed.len() / 3).max(2);
    CALLS
        .iter()
        .map(|c| (distance(&typed, &c.chars().collect::<Vec<_>>()), *c))
        .filter(|(d, _)| *d <= threshold)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn distance(a: &[char], b: &[char]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut row = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            row[j + 1] = (prev[j] + usize::from(ca != cb)).min(prev[j + 1] + 1).min(row[j] + 1);
        }
        prev = row;
    }
    prev[b.len()]
}

/// Wraps `backend` in a [`FaultyBackend`] when `DEVAMI_FAULTS` is set and not blank; otherwise
/// returns it as it is. A malformed value is an error and nothing is wrapped.
pub fn wrap(backend: Box<dyn Backend>) -> Result<Box<dyn Backend>, Error> {
    wrap_with(backend, std::env::var_os(ENV))
}

/// [`wrap`] with the variable's value given (`None` when unset).
pub fn wrap_with(
    backend: Box<dyn Backend>,
    value: Option<std::ffi::OsString>,
) -> Result<Box<dyn Backend>, Error> {
    let Some(value) = value else { return Ok(backend) };
    let spec = value
        .into_string()
        .map_err(|_| Error::InvalidFaults(format!("invalid {ENV}: the value is not UTF-8 text")))?;
    if spec.trim().is_empty() {
        return Ok(backend);
    }
    Ok(Box::new(FaultyBackend::new(backend, &spec)?))
}

/// A backend whose chosen calls fail, are delayed or hang (see the module documentation).
pub struct FaultyBackend {
    inner: Box<dyn Backend>,
    rules: Vec<Rule>,
    /// Calls made so far, per method (indexed like [`CALLS`]).
    counters: [AtomicU64; CALLS.len()],
}

impl std::fmt::Debug for FaultyBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyBackend").field("kind", &self.inner.kind()).field("rules", &self.rules).finish()
    }
}

impl FaultyBackend {
    /// Wraps `inner` with the rules of `spec` (a `DEVAMI_FAULTS` value).
    pub fn new(inner: Box<dyn Backend>, spec: &str) -> Result<FaultyBackend, Error> {
        let rules = parse(spec).map_err(Error::InvalidFaults)?;
        Ok(FaultyBackend::with_rules(inner, rules))
    }

    /// Wraps `inner` with parsed rules.
    pub fn with_rules(inner: Box<dyn Backend>, rules: Vec<Rule>) -> FaultyBackend {
        FaultyBackend { inner, rules, counters: std::array::from_fn(|_| AtomicU64::new(0)) }
    }

    /// How many calls of `call` were made so far (0 for an unknown name).
    pub fn calls(&self, call: &str) -> u64 {
        CALLS.iter().position(|c| *c == call).map_or(0, |i| self.counters[i].load(Ordering::SeqCst))
    }

    /// Counts a call, then applies the first rule that picks it: `Err` for a failure, after a
    /// sleep for a delay, never for a hang; `Ok` when the real call should be made.
    /// `target` names what the call is about, for `notfound`.
    async fn gate(&self, call: &'static str, target: (&'static str, String)) -> Result<(), BackendError> {
        let index = CALLS.iter().position(|c| *c == call).unwrap_or_default();
        let n = self.counters[index].fetch_add(1, Ordering::SeqCst) + 1;
        let Some(rule) = self.rules.iter().find(|r| r.picks(call, n)) else { return Ok(()) };
        let injected = || format!("injected by {ENV} rule `{}`", rule.text);
        Err(match &rule.action {
            Action::Delay(d) => {
                tokio::time::sleep(*d).await;
                return Ok(());
            }
            Action::Hang => std::future::pending::<BackendError>().await,
            Action::Fail(Some(message)) => BackendError::Service { code: None, message: message.clone() },
            Action::Fail(None) => {
                BackendError::Service { code: None, message: format!("{call}: {}", injected()) }
            }
            Action::Throttle => BackendError::Throttled {
                code: "ThrottlingException".into(),
                message: "Rate exceeded".into(),
            },
            Action::Expired => BackendError::Credentials {
                message: "ExpiredToken: the security token included in the request is expired".into(),
                hint: RENEW_HINT.into(),
            },
            Action::Unreachable => BackendError::Unreachable {
                endpoint: format!("{} backend", self.inner.kind()),
                message: format!("connection refused ({})", injected()),
            },
            Action::NotFound => BackendError::not_found(target.0, &target.1),
        })
    }
}

fn object(bucket: &str, key: &str) -> (&'static str, String) {
    ("object", format!("s3://{bucket}/{key}"))
}

fn tag_list(tags: &[(String, String)]) -> (&'static str, String) {
    ("tag filter", tags.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","))
}

#[async_trait::async_trait]
impl Backend for FaultyBackend {
    fn kind(&self) -> BackendKind {
        self.inner.kind()
    }

    async fn identity(&self) -> Result<Identity, BackendError> {
        self.gate("identity", ("identity", "caller".into())).await?;
        self.inner.identity().await
    }

    async fn resolve_alias(&self, name: &str) -> Result<Option<ResolvedImage>, BackendError> {
        self.gate("resolve_alias", ("alias", name.into())).await?;
        self.inner.resolve_alias(name).await
    }

    async fn describe_image(&self, image_id: &str) -> Result<Image, BackendError> {
        self.gate("describe_image", ("image", image_id.into())).await?;
        self.inner.describe_image(image_id).await
    }

    async fn launch(&self, spec: &LaunchSpec) -> Result<Instance, BackendError> {
        self.gate("launch", ("image", spec.image_id.clone())).await?;
        self.inner.launch(spec).await
    }

    async fn describe_instance(&self, instance_id: &str) -> Result<Instance, BackendError> {
        self.gate("describe_instance", ("instance", instance_id.into())).await?;
        self.inner.describe_instance(instance_id).await
    }

    async fn start(&self, instance_id: &str) -> Result<(), BackendError> {
        self.gate("start", ("instance", instance_id.into())).await?;
        self.inner.start(instance_id).await
    }

    async fn stop(&self, instance_id: &str) -> Result<(), BackendError> {
        self.gate("stop", ("instance", instance_id.into())).await?;
        self.inner.stop(instance_id).await
    }

    async fn terminate(&self, instance_id: &str) -> Result<(), BackendError> {
        self.gate("terminate", ("instance", instance_id.into())).await?;
        self.inner.terminate(instance_id).await
    }

    async fn find_instances(&self, tags: &[(String, String)]) -> Result<Vec<Instance>, BackendError> {
        self.gate("find_instances", tag_list(tags)).await?;
        self.inner.find_instances(tags).await
    }

    async fn find_images(&self, tags: &[(String, String)]) -> Result<Vec<Image>, BackendError> {
        self.gate("find_images", tag_list(tags)).await?;
        self.inner.find_images(tags).await
    }

    async fn set_tags(
        &self,
        instance_id: &str,
        tags: &[(String, String)],
        dry_run: bool,
    ) -> Result<(), BackendError> {
        self.gate("set_tags", ("instance", instance_id.into())).await?;
        self.inner.set_tags(instance_id, tags, dry_run).await
    }

    async fn create_image(&self, request: &ImageRequest) -> Result<String, BackendError> {
        self.gate("create_image", ("instance", request.instance_id.clone())).await?;
        self.inner.create_image(request).await
    }

    async fn delete_image(&self, image_id: &str) -> Result<(), BackendError> {
        self.gate("delete_image", ("image", image_id.into())).await?;
        self.inner.delete_image(image_id).await
    }

    async fn send_command(&self, job: &JobSpec) -> Result<String, BackendError> {
        self.gate("send_command", ("instance", job.instance_id.clone())).await?;
        self.inner.send_command(job).await
    }

    async fn describe_command(&self, command_id: &str, instance_id: &str) -> Result<JobReport, BackendError> {
        self.gate("describe_command", ("command", command_id.into())).await?;
        self.inner.describe_command(command_id, instance_id).await
    }

    async fn cancel_command(&self, command_id: &str, instance_id: &str) -> Result<(), BackendError> {
        self.gate("cancel_command", ("command", command_id.into())).await?;
        self.inner.cancel_command(command_id, instance_id).await
    }

    async fn put_object(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<(), BackendError> {
        self.gate("put_object", object(bucket, key)).await?;
        self.inner.put_object(bucket, key, body).await
    }

    async fn get_object(&self, bucket: &str, key: &str) -> Result<Vec<u8>, BackendError> {
        self.gate("get_object", object(bucket, key)).await?;
        self.inner.get_object(bucket, key).await
    }

    async fn list_objects(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectInfo>, BackendError> {
        self.gate("list_objects", ("bucket", format!("s3://{bucket}"))).await?;
        self.inner.list_objects(bucket, prefix).await
    }

    async fn upload_file(
        &self,
        bucket: &str,
        key: &str,
        local: &Path,
        progress: &mut (dyn FnMut(u64, u64) + Send),
    ) -> Result<u64, BackendError> {
        self.gate("upload_file", object(bucket, key)).await?;
        self.inner.upload_file(bucket, key, local, progress).await
    }

    async fn download_file(
        &self,
        bucket: &str,
        key: &str,
        local: &Path,
        progress: &mut (dyn FnMut(u64, u64) + Send),
    ) -> Result<u64, BackendError> {
        self.gate("download_file", object(bucket, key)).await?;
        self.inner.download_file(bucket, key, local, progress).await
    }

    fn shell_command(
        &self,
        instance_id: &str,
        address: Option<&str>,
        working_directory: &str,
        command: Option<&str>,
        blueprint: Option<&Path>,
    ) -> Result<std::process::Command, BackendError> {
        self.inner.shell_command(instance_id, address, working_directory, command, blueprint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{ImageState, InstanceState};
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    fn rule(text: &str) -> Rule {
        parse_rule(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn error(spec: &str) -> String {
        parse(spec).expect_err(spec)
    }

    #[test]
    fn rules_parse_call_count_and_action() {
        let r = rule("describe_instance#2=throttle");
        assert_eq!((r.call, r.which, r.action), (Some("describe_instance"), Which::Nth(2), Action::Throttle));
        let r = rule("describe_instance#2+=expired");
        assert_eq!((r.call, r.which, r.action), (Some("describe_instance"), Which::From(2), Action::Expired));
        let r = rule("*=unreachable");
        assert_eq!((r.call, r.which, r.action), (None, Which::Every, Action::Unreachable));
        assert_eq!(rule("terminate=notfound").action, Action::NotFound);
        assert_eq!(rule("launch=hang").action, Action::Hang);
        assert_eq!(rule("create_image=fail").action, Action::Fail(None));
        assert_eq!(
            rule("create_image=fail:no space left: a=b #3").action,
            Action::Fail(Some("no space left: a=b #3".into()))
        );
        assert_eq!(rule("get_object=delay:250ms").action, Action::Delay(Duration::from_millis(250)));
        assert_eq!(rule("get_object=delay:3s").action, Action::Delay(Duration::from_secs(3)));
        assert_eq!(rule("get_object=delay:1.5s").action, Action::Delay(Duration::from_millis(1500)));
        assert_eq!(rule("get_object=delay:2m").action, Action::Delay(Duration::from_secs(120)));
        assert_eq!(rule(" launch #3+ = throttle ").which, Which::From(3));
        for call in CALLS {
            assert_eq!(rule(&format!("{call}=fail")).call, Some(call));
        }
    }

    #[test]
    fn a_whole_value_is_a_list_of_rules() {
        let rules = parse(" launch=fail ; ; describe_image#1+=delay:10ms;").unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].text, "launch=fail");
        assert_eq!(rules[1].text, "describe_image#1+=delay:10ms");
        assert!(parse("").unwrap().is_empty());
    }

    #[test]
    fn malformed_rules_are_one_line_naming_the_rule() {
        let cases = [
            ("launch", "expected CALL[#N|#N+]=ACTION"),
            ("lanch=fail", "unknown call `lanch` (did you mean `launch`?)"),
            ("describe_instances=fail", "did you mean `describe_instance`?"),
            ("bogus=fail", "unknown call `bogus`; the calls are launch,"),
            ("=fail", "the call name is missing"),
            ("launch#0=fail", "`#0` is not a call number"),
            ("launch#=fail", "`#` is not a call number"),
            ("launch#x=fail", "`#x` is not a call number"),
            ("launch#-1=fail", "`#-1` is not a call number"),
            ("launch#+2=fail", "`#+2` is not a call number"),
            ("launch#2++=fail", "`#2++` is not a call number"),
            ("launch=", "the action is missing"),
            ("launch=explode", "unknown action `explode`"),
            ("launch=fail:", "`fail:` needs a message"),
            ("launch=throttle:now", "`throttle` takes no argument"),
            ("launch=hang:1s", "`hang` takes no argument"),
            ("launch=delay", "`delay` needs a duration"),
            ("launch=delay:5", "`5` is not a duration"),
            ("launch=delay:fast", "`fast` is not a duration"),
            ("launch=delay:3h", "`3h` is not a duration"),
            ("launch=delay:1..5s", "`1..5s` is not a duration"),
            ("launch=delay:99999m", "out of range"),
        ];
        for (rule, wanted) in cases {
            let e = error(&format!("describe_image=fail;{rule}"));
            assert!(e.starts_with(&format!("invalid DEVAMI_FAULTS rule `{rule}`: ")), "{rule}: {e}");
            assert!(e.contains(wanted), "{rule}: {e}");
            assert!(!e.contains('\n'), "{rule}: {e}");
        }
    }

    /// A backend that answers every call and counts what reached it.
    #[derive(Default)]
    struct Fake {
        reached: Arc<Mutex<Vec<String>>>,
    }

    impl Fake {
        fn note(&self, call: &str) {
            self.reached.lock().unwrap().push(call.to_string());
        }
    }

    fn instance(id: &str) -> Instance {
        Instance {
            id: id.into(),
            image_id: "ami-1".into(),
            instance_type: "t2.micro".into(),
            state: InstanceState::Running,
            state_reason: None,
            launch_time: None,
            public_ip: None,
            private_ip: None,
            tags: BTreeMap::new(),
            status_checks: None,
        }
    }

    fn image(id: &str) -> Image {
        Image {
            id: id.into(),
            name: "x".into(),
            state: ImageState::Available,
            state_reason: None,
            created: None,
            source_instance: None,
            size_bytes: None,
            progress: None,
            root_device_name: None,
            snapshot_ids: vec![],
            tags: BTreeMap::new(),
        }
    }

    #[async_trait::async_trait]
    impl Backend for Fake {
        fn kind(&self) -> BackendKind {
            BackendKind::Local
        }
        async fn identity(&self) -> Result<Identity, BackendError> {
            self.note("identity");
            Ok(Identity { arn: "arn:aws:iam::1:user/me".into(), account: "1".into() })
        }
        async fn resolve_alias(&self, _: &str) -> Result<Option<ResolvedImage>, BackendError> {
            self.note("resolve_alias");
            Ok(None)
        }
        async fn describe_image(&self, id: &str) -> Result<Image, BackendError> {
            self.note("describe_image");
            Ok(image(id))
        }
        async fn launch(&self, _: &LaunchSpec) -> Result<Instance, BackendError> {
            self.note("launch");
            Ok(instance("i-1"))
        }
        async fn describe_instance(&self, id: &str) -> Result<Instance, BackendError> {
            self.note("describe_instance");
            Ok(instance(id))
        }
        async fn start(&self, _: &str) -> Result<(), BackendError> {
            self.note("start");
            Ok(())
        }
        async fn stop(&self, _: &str) -> Result<(), BackendError> {
            self.note("stop");
            Ok(())
        }
        async fn terminate(&self, _: &str) -> Result<(), BackendError> {
            self.note("terminate");
            Ok(())
        }
        async fn find_instances(&self, _: &[(String, String)]) -> Result<Vec<Instance>, BackendError> {
            self.note("find_instances");
            Ok(vec![])
        }
        async fn find_images(&self, _: &[(String, String)]) -> Result<Vec<Image>, BackendError> {
            self.note("find_images");
            Ok(vec![])
        }
        async fn set_tags(&self, _: &str, _: &[(String, String)], _: bool) -> Result<(), BackendError> {
            self.note("set_tags");
            Ok(())
        }
        async fn create_image(&self, _: &ImageRequest) -> Result<String, BackendError> {
            self.note("create_image");
            Ok("ami-2".into())
        }
        async fn delete_image(&self, _: &str) -> Result<(), BackendError> {
            self.note("delete_image");
            Ok(())
        }
        async fn send_command(&self, _: &JobSpec) -> Result<String, BackendError> {
            self.note("send_command");
            Ok("c-1".into())
        }
        async fn describe_command(&self, _: &str, _: &str) -> Result<JobReport, BackendError> {
            self.note("describe_command");
            Err(BackendError::Service { code: None, message: "not in the fake".into() })
        }
        async fn cancel_command(&self, _: &str, _: &str) -> Result<(), BackendError> {
            self.note("cancel_command");
            Ok(())
        }
        async fn put_object(&self, _: &str, _: &str, _: Vec<u8>) -> Result<(), BackendError> {
            self.note("put_object");
            Ok(())
        }
        async fn get_object(&self, _: &str, _: &str) -> Result<Vec<u8>, BackendError> {
            self.note("get_object");
            Ok(b"data".to_vec())
        }
        async fn list_objects(&self, _: &str, _: &str) -> Result<Vec<ObjectInfo>, BackendError> {
            self.note("list_objects");
            Ok(vec![])
        }
        async fn upload_file(
            &self,
            _: &str,
            _: &str,
            _: &Path,
            _: &mut (dyn FnMut(u64, u64) + Send),
        ) -> Result<u64, BackendError> {
            self.note("upload_file");
            Ok(0)
        }
        async fn download_file(
            &self,
            _: &str,
            _: &str,
            _: &Path,
            _: &mut (dyn FnMut(u64, u64) + Send),
        ) -> Result<u64, BackendError> {
            self.note("download_file");
            Ok(0)
        }
        fn shell_command(
            &self,
            _: &str,
            _: Option<&str>,
            _: &str,
            _: Option<&str>,
            _: Option<&Path>,
        ) -> Result<std::process::Command, BackendError> {
            Ok(std::process::Command::new("true"))
        }
    }

    fn faulty(spec: &str) -> FaultyBackend {
        FaultyBackend::new(Box::new(Fake::default()), spec).unwrap()
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    /// The outcome of each of `n` describe_instance calls: `ok` or the error's text.
    fn describes(b: &FaultyBackend, n: usize) -> Vec<String> {
        let rt = rt();
        (0..n)
            .map(|_| match rt.block_on(b.describe_instance("i-7")) {
                Ok(_) => "ok".to_string(),
                Err(e) => e.to_string(),
            })
            .collect()
    }

    #[test]
    fn the_nth_call_alone_fails() {
        let b = faulty("describe_instance#2=throttle");
        let got = describes(&b, 4);
        assert_eq!(got, ["ok", "ThrottlingException: Rate exceeded", "ok", "ok"]);
        assert_eq!(b.calls("describe_instance"), 4);
        assert_eq!(b.calls("launch"), 0);
    }

    #[test]
    fn the_nth_call_and_every_later_one_fail() {
        let b = faulty("describe_instance#2+=notfound");
        let got = describes(&b, 4);
        assert_eq!(got[0], "ok");
        assert!(got[1..].iter().all(|e| e == "instance `i-7` does not exist"), "{got:?}");
    }

    #[test]
    fn calls_are_counted_per_method_and_rules_apply_in_order() {
        let b = faulty("*#2=fail:second;launch=unreachable;describe_instance=expired");
        let rt = rt();
        // launch: first call is not the second, so the `launch` rule applies; the second call is
        // picked by the first rule.
        let first = rt.block_on(b.launch(&LaunchSpec::default())).unwrap_err();
        assert!(matches!(first, BackendError::Unreachable { .. }), "{first}");
        assert!(first.to_string().contains("injected by DEVAMI_FAULTS rule `launch=unreachable`"), "{first}");
        let second = rt.block_on(b.launch(&LaunchSpec::default())).unwrap_err();
        assert_eq!(second.to_string(), "second");
        // describe_instance has its own count.
        let got = describes(&b, 2);
        assert!(got[0].contains("security token included in the request is expired"), "{got:?}");
        assert!(got[0].contains("renew your credentials"), "{got:?}");
        assert_eq!(got[1], "second");
        assert!(rt.block_on(b.identity()).is_ok());
        assert!(matches!(rt.block_on(b.identity()), Err(BackendError::Service { code: None, .. })));
        assert_eq!((b.calls("launch"), b.calls("describe_instance"), b.calls("identity")), (2, 2, 2));
    }

    #[test]
    fn failed_calls_never_reach_the_backend() {
        let fake = Fake::default();
        let reached = fake.reached.clone();
        let b = FaultyBackend::new(Box::new(fake), "create_image=fail;get_object#1=notfound").unwrap();
        let rt = rt();
        let request = ImageRequest {
            instance_id: "i-9".into(),
            name: "n".into(),
            description: String::new(),
            tags: vec![],
        };
        let e = rt.block_on(b.create_image(&request)).unwrap_err();
        assert_eq!(e.to_string(), "create_image: injected by DEVAMI_FAULTS rule `create_image=fail`");
        let e = rt.block_on(b.get_object("bkt", "a/b.txt")).unwrap_err();
        assert_eq!(e.to_string(), "object `s3://bkt/a/b.txt` does not exist");
        assert_eq!(rt.block_on(b.get_object("bkt", "a/b.txt")).unwrap(), b"data");
        let mut progress = |_: u64, _: u64| {};
        rt.block_on(b.download_file("bkt", "k", Path::new("/nonexistent"), &mut progress)).unwrap();
        assert_eq!(*reached.lock().unwrap(), ["get_object", "download_file"]);
    }

    #[test]
    fn a_delay_sleeps_then_makes_the_real_call() {
        let b = faulty("describe_image#1=delay:150ms");
        let rt = rt();
        let start = std::time::Instant::now();
        assert_eq!(rt.block_on(b.describe_image("ami-5")).unwrap().id, "ami-5");
        assert!(start.elapsed() >= Duration::from_millis(150), "{:?}", start.elapsed());
        let start = std::time::Instant::now();
        rt.block_on(b.describe_image("ami-5")).unwrap();
        assert!(start.elapsed() < Duration::from_millis(150), "the second call was delayed too");
    }

    #[test]
    fn a_hang_never_answers_but_can_be_dropped() {
        let b = faulty("terminate=hang");
        let rt = rt();
        let raced = rt.block_on(async {
            tokio::select! {
                r = b.terminate("i-1") => Some(r),
                () = tokio::time::sleep(Duration::from_millis(200)) => None,
            }
        });
        assert!(raced.is_none(), "a hung call answered");
        // The dropped call was counted; other calls go on working.
        assert_eq!(b.calls("terminate"), 1);
        assert!(rt.block_on(b.stop("i-1")).is_ok());
    }

    #[test]
    fn every_action_maps_to_its_backend_error() {
        let rt = rt();
        let one = |spec: &str| rt.block_on(faulty(spec).stop("i-3")).unwrap_err();
        assert!(matches!(one("stop=fail"), BackendError::Service { code: None, .. }));
        let throttled = one("stop=throttle");
        assert!(matches!(&throttled, BackendError::Throttled { code, .. } if code == "ThrottlingException"));
        assert_eq!(throttled.to_string(), "ThrottlingException: Rate exceeded");
        assert!(matches!(one("stop=expired"), BackendError::Credentials { .. }));
        assert!(matches!(one("stop=unreachable"), BackendError::Unreachable { .. }));
        assert!(
            matches!(one("stop=notfound"), BackendError::NotFound { what: "instance", code: None, message }
            if message == "instance `i-3` does not exist")
        );
    }

    #[test]
    fn wrap_applies_a_set_value_and_refuses_a_bad_one() {
        let fake = || -> Box<dyn Backend> { Box::new(Fake::default()) };
        let value = |s: &str| Some(std::ffi::OsString::from(s));
        let rt = rt();
        let unset = wrap_with(fake(), None).unwrap();
        assert!(rt.block_on(unset.launch(&LaunchSpec::default())).is_ok());
        let blank = wrap_with(fake(), value("  ")).unwrap();
        assert!(rt.block_on(blank.launch(&LaunchSpec::default())).is_ok());
        let set = wrap_with(fake(), value("launch=fail")).unwrap();
        assert!(rt.block_on(set.launch(&LaunchSpec::default())).is_err());
        assert_eq!(set.kind(), BackendKind::Local);
        let e = wrap_with(fake(), value("launch=fail;describe_instance#x=throttle")).map(|_| ()).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(
            e.to_string().starts_with("invalid DEVAMI_FAULTS rule `describe_instance#x=throttle`: "),
            "{e}"
        );
        use std::os::unix::ffi::OsStringExt;
        let e = wrap_with(fake(), Some(std::ffi::OsString::from_vec(vec![0xff]))).map(|_| ()).unwrap_err();
        assert!(e.to_string().contains("not UTF-8"), "{e}");
    }
}
