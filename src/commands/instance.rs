//! The development instance's commands: launch, assign, start, stop, terminate, lifetime, state.
//!
//! These follow the original `NeuroCaaSAMI` methods, their rules and their messages
//! (`shared/reference/neurocaas-protocol.md` §1.4): one live development instance per blueprint
//! (`check_clear`), the `PriceTracking`/`Timeout`/`OwnerArn` tags on every launch, `start`
//! resetting the lifetime, and the terminate guard that refuses to lose unsaved work. Every
//! instance id is written to the session state before anything waits on it.

use std::time::Duration;

use crate::backend::{BackendError, BackendKind, ImageState, Instance, InstanceState, LaunchSpec};
use crate::clock;
use crate::error::{Error, Result};
use crate::output::Output;
use crate::parse::Args;
use crate::pricing;
use crate::session::DevAmi;
use crate::state::{InstanceRecord, SeenState};
use crate::wait::{self, Probe};

/// How long to wait for an instance to be running with both status checks passed.
const LAUNCH_DEADLINE: Duration = Duration::from_secs(20 * 60);
/// How long to wait for an instance to stop or terminate.
const STOP_DEADLINE: Duration = Duration::from_secs(15 * 60);

/// The longest lifetime (`--timeout`) and extension a command accepts, in minutes (about 69 days).
const MAX_MINUTES: i64 = 100_000;
/// What a `--timeout` must be, as its error says.
const TIMEOUT_RULE: &str = "a positive integer (minutes) of at most 100,000";

/// What `check_clear` found: clear (with the original's message), or the live instance in the way.
enum Clear {
    Yes(String),
    No { id: String, state: InstanceState },
}

impl DevAmi {
    /// The current instance's id, or the original's "No instance declared" error.
    pub(crate) fn current_instance(&self) -> Result<String> {
        self.bp()?;
        self.state().instance.clone().ok_or(Error::NoInstance)
    }

    /// Describes an instance and records what was seen in the session state.
    pub(crate) fn describe(&mut self, id: &str) -> Result<Instance> {
        let cloud = self.cloud()?;
        let inst = cloud.call("describing the instance", cloud.backend.describe_instance(id))?;
        self.note_instance(&inst);
        Ok(inst)
    }

    /// Records an instance's observed state (and address, for the current one).
    pub(crate) fn note_instance(&mut self, inst: &Instance) {
        let now = clock::now();
        let st = self.state_mut();
        if st.instance.as_deref() == Some(inst.id.as_str()) {
            st.ip = inst.public_ip.clone().or_else(|| inst.private_ip.clone());
        }
        if let Some(rec) = st.instances.iter_mut().rev().find(|r| r.id == inst.id) {
            rec.last_state = Some(inst.state.into());
            rec.last_seen = Some(now);
            rec.launch_time = inst.launch_time.or(rec.launch_time);
            if let Some(t) = inst.tags.get("Timeout").and_then(|t| t.trim().parse::<u32>().ok()) {
                rec.timeout_minutes = Some(t);
            }
            if rec.image_id.is_none() {
                rec.image_id = Some(inst.image_id.clone());
            }
        }
    }

    pub(crate) fn record_gone(&mut self, id: &str) {
        let now = clock::now();
        if let Some(rec) = self.state_mut().instances.iter_mut().rev().find(|r| r.id == id) {
            rec.last_state = Some(SeenState::Gone);
            rec.last_seen = Some(now);
        }
    }

    /// Waits until the instance is in `target` (and, for running, passes its status checks).
    pub(crate) fn wait_instance(
        &mut self,
        id: &str,
        target: InstanceState,
        deadline: Duration,
    ) -> Result<Instance> {
        let what = format!("instance {id} to be {target}");
        let result = wait::poll(&what, deadline, || {
            let inst = self.describe(id)?;
            self.persist()?;
            let done = inst.state == target
                && (target != InstanceState::Running
                    || inst.status_checks.as_ref().is_none_or(|(s, i)| s == "ok" && i == "ok"));
            if done {
                return Ok(Probe::Done(inst));
            }
            let unreachable = match target {
                InstanceState::Running => {
                    !matches!(inst.state, InstanceState::Pending | InstanceState::Running)
                }
                InstanceState::Stopped => {
                    matches!(inst.state, InstanceState::Terminated | InstanceState::ShuttingDown)
                }
                _ => false,
            };
            if let Some((sys, ins)) = inst.status_checks.as_ref().filter(|_| target == InstanceState::Running)
            {
                let failed: Vec<&str> = [("system", sys), ("instance", ins)]
                    .into_iter()
                    .filter(|(_, v)| v.as_str() == "impaired")
                    .map(|(k, _)| k)
                    .collect();
                if !failed.is_empty() {
                    return Err(Error::InstanceImpaired { id: id.to_string(), checks: failed });
                }
            }
            if unreachable {
                return Err(Error::InstanceMissedTarget {
                    id: id.to_string(),
                    state: inst.state,
                    target,
                    reason: inst.state_reason.clone(),
                });
            }
            let status = match (&inst.status_checks, inst.state) {
                (Some((s, i)), InstanceState::Running) => format!("running, status checks {s}/{i}"),
                (_, st) => st.to_string(),
            };
            Ok(Probe::Pending(status))
        });
        if matches!(result, Err(Error::Interrupted)) {
            self.console.warn(&format!(
                "stopped waiting; instance {id} goes on and stays tracked (see `get_instance_state`)"
            ));
        }
        result
    }

    fn check_clear_inner(&mut self) -> Result<Clear> {
        let Some(id) = self.state().instance.clone() else {
            return Ok(Clear::Yes("No instance declared, safe to deploy.".into()));
        };
        let cloud = self.cloud()?;
        match cloud.call("describing the instance", cloud.backend.describe_instance(&id)) {
            Ok(inst) => {
                self.note_instance(&inst);
                Ok(match inst.state {
                    InstanceState::Stopped | InstanceState::Terminated | InstanceState::ShuttingDown => {
                        Clear::Yes(format!("Instance {id} exists, but is not active, safe to deploy"))
                    }
                    state => Clear::No { id, state },
                })
            }
            Err(Error::Backend { source: BackendError::NotFound { .. }, .. }) => {
                self.record_gone(&id);
                Ok(Clear::Yes("Instance is terminated and no trace exists".into()))
            }
            Err(e) => Err(e),
        }
    }

    /// `check_clear`.
    pub(crate) fn cmd_check_clear(&mut self, _: &Args) -> Result<Output> {
        self.bp()?;
        Ok(match self.check_clear_inner()? {
            Clear::Yes(m) => Output::text(format!("{m}\nTrue")),
            Clear::No { id, state } => {
                Output::text(format!("Instance {id} is {state}, not safe to deploy another.\nFalse"))
            }
        })
    }

    /// Whether the current instance is running, with the original's message.
    pub(crate) fn check_running_inner(&mut self) -> Result<(bool, String)> {
        let Some(id) = self.state().instance.clone() else {
            return Ok((false, "No instance declared".into()));
        };
        let inst = self.describe(&id)?;
        Ok(if inst.state == InstanceState::Running {
            (true, format!("Instance {id} exists and is active, safe to test"))
        } else {
            (false, format!("Instance {id} is {}, not safe to test.", inst.state))
        })
    }

    /// `check_running`.
    pub(crate) fn cmd_check_running(&mut self, _: &Args) -> Result<Output> {
        self.bp()?;
        let (ok, msg) = self.check_running_inner()?;
        Ok(Output::text(format!("{msg}\n{}", if ok { "True" } else { "False" })))
    }

    /// The current instance, which must be running.
    pub(crate) fn require_running(&mut self) -> Result<String> {
        let id = self.current_instance()?;
        let state = self.describe(&id)?.state;
        let next = match state {
            InstanceState::Running => return Ok(id),
            InstanceState::Stopped => "start it with `start_devinstance`",
            InstanceState::Pending => "wait for it to be running (`get_instance_state`)",
            InstanceState::Stopping => "wait for it to stop, then `start_devinstance`",
            _ => "launch a new one with `launch_devinstance`",
        };
        Err(Error::InstanceNotRunning { id, state, next: Some(next) })
    }

    /// `launch_devinstance(ami=None, volume_size=None, timeout=60, DryRun=False)`.
    pub(crate) fn cmd_launch_devinstance(&mut self, a: &Args) -> Result<Output> {
        let bp = self.bp()?;
        let timeout = a.int("timeout").unwrap_or(60);
        if timeout <= 0 || timeout > MAX_MINUTES {
            return Err(Error::BadArgument {
                command: "launch_devinstance",
                argument: "timeout",
                expected: TIMEOUT_RULE,
                got: timeout.to_string(),
            });
        }
        let volume_size = match a.int("volume_size") {
            None => None,
            Some(v) if (1..=16_384).contains(&v) => Some(v as u32),
            Some(v) => {
                return Err(Error::BadArgument {
                    command: "launch_devinstance",
                    argument: "volume_size",
                    expected: "between 1 and 16384 GiB",
                    got: v.to_string(),
                });
            }
        };
        let dry_run = a.bool("dry_run").unwrap_or(false);
        let instance_type = bp.instance_type()?.to_string();
        let key_name = bp.key_name().map(str::to_string);
        let security_groups: Vec<String> =
            bp.security_groups().map(|s| vec![s.to_string()]).unwrap_or_default();
        let iam_role = bp.iam_role().ok().map(str::to_string);
        let pipeline = bp.pipeline_name()?.to_string();
        let requested = a.str("ami").map(str::to_string);
        let blueprint_ami = bp.ami()?.to_string();

        if let Clear::No { id, state } = self.check_clear_inner()? {
            self.persist()?;
            return Err(Error::InstanceInTheWay { id, state });
        }
        let source = requested.clone().unwrap_or_else(|| blueprint_ami.clone());
        let image_id = self.resolve_image(&source, requested.is_none())?;

        self.console.print(&self.price_line(&instance_type));
        let cloud = self.cloud()?;
        let owner = cloud.call("asking who we are", cloud.backend.identity())?.arn;
        let user = owner.rsplit('/').next().unwrap_or(&owner).to_string();
        let visible = self.blueprint_dir_abs().ok();
        let spec = LaunchSpec {
            image_id: image_id.clone(),
            instance_type: instance_type.clone(),
            key_name,
            security_groups,
            iam_instance_profile: iam_role,
            volume_size,
            tags: vec![
                ("PriceTracking".into(), "On".into()),
                ("Timeout".into(), timeout.to_string()),
                ("OwnerArn".into(), owner),
                ("devami:blueprint".into(), pipeline),
                ("devami:user".into(), user),
            ],
            dry_run,
            visible,
        };
        let cloud = self.cloud()?;
        let inst = match cloud.call("launching the instance", cloud.backend.launch(&spec)) {
            Err(Error::Backend { source: BackendError::DryRunOk, .. }) => {
                return Ok(Output::text(format!(
                    "dry run: launching {instance_type} from {image_id} with a lifetime of {timeout} minutes would succeed (nothing was started)"
                )));
            }
            other => other?,
        };
        // Recorded before any wait: this instance costs money from now on.
        let id = inst.id.clone();
        let st = self.state_mut();
        st.instances.push(InstanceRecord {
            id: id.clone(),
            source: Some(source.clone()),
            image_id: Some(image_id),
            instance_type: Some(instance_type),
            recorded: clock::now(),
            timeout_minutes: Some(timeout as u32),
            last_state: Some(inst.state.into()),
            last_seen: Some(clock::now()),
            launch_time: inst.launch_time,
            volume_gib: None,
            origin: "launched".into(),
        });
        st.instance = Some(id.clone());
        st.instance_saved = false;
        st.ip = None;
        self.persist()?;
        // The root volume's size, for the standing cost of a stopped instance (best effort).
        let gib = match volume_size {
            Some(v) => Some(v),
            None => {
                let cloud = self.cloud()?;
                let image_id = inst.image_id.clone();
                cloud
                    .call("describing the image", cloud.backend.describe_image(&image_id))
                    .ok()
                    .and_then(|img| img.size_bytes)
                    .filter(|b| *b > 0)
                    .map(|b| b.div_ceil(1 << 30) as u32)
            }
        };
        if let Some(rec) = self.state_mut().current_mut() {
            rec.volume_gib = gib;
        }
        self.console.print("Instance starting up: please wait");
        let inst = self.wait_instance(&id, InstanceState::Running, LAUNCH_DEADLINE)?;
        let ip = inst.public_ip.or(inst.private_ip).unwrap_or_else(|| "(no address)".into());
        Ok(Output::text(format!("Instance {id} is running\ninstance running at {ip}")))
    }

    /// What an instance type costs, said before launching one.
    fn price_line(&self, instance_type: &str) -> String {
        match (pricing::PriceTable::from_env(), self.options().backend) {
            (Err(e), _) => format!("{instance_type}: no price ({e})"),
            (Ok(t), kind) => match (t.hourly(instance_type), kind) {
                (Some(h), BackendKind::Local) => {
                    format!("{instance_type} would cost {}/hour on AWS; free here", pricing::dollars(h))
                }
                (Some(h), BackendKind::Aws) => format!(
                    "{instance_type} costs {}/hour on demand (list price of {}; `status` shows the running cost)",
                    pricing::dollars(h),
                    pricing::PRICES_DATE
                ),
                (None, _) => format!("{instance_type}: no price known (DEVAMI_PRICES can add one)"),
            },
        }
    }

    /// Resolves an alias or checks an image id; with `from_blueprint`, waits for it to be available.
    fn resolve_image(&mut self, source: &str, from_blueprint: bool) -> Result<String> {
        let cloud = self.cloud()?;
        if let Some(r) = cloud.call("resolving the image alias", cloud.backend.resolve_alias(source))? {
            let when = r.published.map(|t| format!(", published {}", clock::format(t))).unwrap_or_default();
            self.console.print(&format!("{} resolves to {} ({}{when})", r.alias, r.image_id, r.source));
            return Ok(r.image_id);
        }
        if from_blueprint {
            self.console.print("checking image is available...");
            let what = format!("image {source} to be available");
            wait::poll(&what, Duration::from_secs(3 * 3600), || {
                let cloud = self.cloud()?;
                let img = cloud.call("describing the image", cloud.backend.describe_image(source))?;
                match &img.state {
                    ImageState::Available => Ok(Probe::Done(())),
                    ImageState::Pending => Ok(Probe::Pending(format!(
                        "pending{}",
                        img.progress.map(|p| format!(" {p}%")).unwrap_or_default()
                    ))),
                    state => Err(Error::ImageUnusable {
                        id: source.to_string(),
                        state: state.clone(),
                        reason: img.state_reason,
                    }),
                }
            })?;
        }
        Ok(source.to_string())
    }

    /// `assign_instance(instance_id)`.
    pub(crate) fn cmd_assign_instance(&mut self, a: &Args) -> Result<Output> {
        self.bp()?;
        let id = a.str("instance_id").unwrap_or_default().to_string();
        let cloud = self.cloud()?;
        let inst = cloud
            .call("loading the instance", cloud.backend.describe_instance(&id))
            .map_err(|e| Error::InstanceNotLoadable { id: id.clone(), cause: Box::new(e) })?;
        let now = clock::now();
        let st = self.state_mut();
        if !st.instances.iter().any(|r| r.id == id) {
            st.instances.push(InstanceRecord {
                id: id.clone(),
                source: None,
                image_id: Some(inst.image_id.clone()),
                instance_type: Some(inst.instance_type.clone()),
                recorded: now,
                timeout_minutes: inst.tags.get("Timeout").and_then(|t| t.parse().ok()),
                last_state: Some(inst.state.into()),
                last_seen: Some(now),
                launch_time: None,
                volume_gib: None,
                origin: "assigned".into(),
            });
        }
        st.instance = Some(id.clone());
        st.instance_saved = false;
        self.note_instance(&inst);
        Ok(Output::text(format!("assigned instance {id} ({}, {})", inst.instance_type, inst.state)))
    }

    /// `start_devinstance(timeout=60)`.
    pub(crate) fn cmd_start_devinstance(&mut self, a: &Args) -> Result<Output> {
        let id = self.current_instance()?;
        let timeout = a.int("timeout").unwrap_or(60);
        if timeout <= 0 || timeout > MAX_MINUTES {
            return Err(Error::BadArgument {
                command: "start_devinstance",
                argument: "timeout",
                expected: TIMEOUT_RULE,
                got: timeout.to_string(),
            });
        }
        if self.describe(&id)?.state == InstanceState::Running {
            return Err(Error::InstanceAlreadyRunning { id });
        }
        let cloud = self.cloud()?;
        cloud.call("starting the instance", cloud.backend.start(&id))?;
        let cloud = self.cloud()?;
        cloud.call(
            "resetting the lifetime",
            cloud.backend.set_tags(&id, &[("Timeout".into(), timeout.to_string())], false),
        )?;
        if let Some(rec) = self.state_mut().current_mut() {
            rec.timeout_minutes = Some(timeout as u32);
        }
        self.console.print(&format!("instance {id} is starting\nInstance starting: please wait"));
        let inst = self.wait_instance(&id, InstanceState::Running, LAUNCH_DEADLINE)?;
        Ok(Output::text(format!("Instance is now in state: {}", inst.state)))
    }

    /// `stop_devinstance()`.
    pub(crate) fn cmd_stop_devinstance(&mut self, _: &Args) -> Result<Output> {
        let id = self.current_instance()?;
        let state = self.describe(&id)?.state;
        if state != InstanceState::Running {
            return Err(Error::InstanceNotRunning { id, state, next: None });
        }
        let cloud = self.cloud()?;
        cloud.call("stopping the instance", cloud.backend.stop(&id))?;
        self.console.print(&format!("instance {id} is stopping\nInstance stopping: please wait"));
        let inst = self.wait_instance(&id, InstanceState::Stopped, STOP_DEADLINE)?;
        Ok(Output::text(format!("Instance is now in state: {}", inst.state)))
    }

    /// `terminate_devinstance(force=False)`.
    pub(crate) fn cmd_terminate_devinstance(&mut self, a: &Args) -> Result<Output> {
        let id = self.current_instance()?;
        let force = a.bool("force").unwrap_or(false);
        if !force && !self.state().instance_saved {
            return Err(Error::UnsavedWork { id });
        }
        if !force && let Some(image) = self.state().images.last().map(|r| r.id.clone()) {
            self.console.print("waiting for created image to become available...");
            self.wait_image(&image)?;
        }
        let cloud = self.cloud()?;
        cloud.call("terminating the instance", cloud.backend.terminate(&id))?;
        self.console.print(&format!("Instance {id} is terminating"));
        let inst = self.wait_instance(&id, InstanceState::Terminated, STOP_DEADLINE)?;
        self.state_mut().ip = None;
        Ok(Output::text(format!("Instance is now in state: {}", inst.state)))
    }

    /// `get_instance_state()`.
    pub(crate) fn cmd_get_instance_state(&mut self, _: &Args) -> Result<Output> {
        let id = self.current_instance()?;
        let inst = self.describe(&id)?;
        let reason = inst.state_reason.map(|r| format!(": {r}")).unwrap_or_default();
        Ok(Output::text(format!("{} (code {}){reason}", inst.state, inst.state.code())))
    }

    /// `get_ip()`.
    pub(crate) fn cmd_get_ip(&mut self, _: &Args) -> Result<Output> {
        let id = self.current_instance()?;
        let inst = self.describe(&id)?;
        match inst.public_ip.or(inst.private_ip) {
            Some(ip) => Ok(Output::text(ip)),
            None => Err(Error::NoAddress { id, state: inst.state }),
        }
    }

    /// `get_lifetime()`.
    pub(crate) fn cmd_get_lifetime(&mut self, _: &Args) -> Result<Output> {
        let id = self.current_instance()?;
        let inst = self.describe(&id)?;
        Ok(Output::text(lifetime_message(&inst, clock::now())?))
    }

    /// `extend_lifetime(additional_time, DryRun=False)`.
    pub(crate) fn cmd_extend_lifetime(&mut self, a: &Args) -> Result<Output> {
        let id = self.current_instance()?;
        let extra = a.int("additional_time").unwrap_or(0);
        if extra <= 0 || extra > MAX_MINUTES {
            return Err(Error::BadArgument {
                command: "extend_lifetime",
                argument: "additional_time",
                expected: "a positive number of minutes of at most 100,000",
                got: extra.to_string(),
            });
        }
        let dry_run = a.bool("dry_run").unwrap_or(false);
        let inst = self.describe(&id)?;
        if inst.state != InstanceState::Running {
            return Err(Error::LifetimeNeedsRunning { id, state: inst.state });
        }
        let old = timeout_minutes(&inst)?;
        let new = old.saturating_add(extra);
        let cloud = self.cloud()?;
        match cloud.call(
            "extending the lifetime",
            cloud.backend.set_tags(&id, &[("Timeout".into(), new.to_string())], dry_run),
        ) {
            Err(Error::Backend { source: BackendError::DryRunOk, .. }) => {
                return Ok(Output::text(format!(
                    "dry run: the Timeout tag of {id} could be set to {new} minutes"
                )));
            }
            other => other?,
        }
        if let Some(rec) = self.state_mut().current_mut() {
            rec.timeout_minutes = u32::try_from(new).ok();
        }
        let inst = self.describe(&id)?;
        Ok(Output::text(format!(
            "Timeout of {id} is now {new} minutes.\n{}",
            lifetime_message(&inst, clock::now())?
        )))
    }
}

fn timeout_minutes(inst: &Instance) -> Result<i64> {
    inst.tags
        .get("Timeout")
        .and_then(|t| t.trim().parse::<i64>().ok())
        .ok_or_else(|| Error::NoTimeoutTag { id: inst.id.clone() })
}

/// The original's lifetime sentence, from the launch time and the `Timeout` tag.
pub fn lifetime_message(inst: &Instance, now: i64) -> Result<String> {
    let timeout = timeout_minutes(inst)?;
    let launched = inst.launch_time.unwrap_or(now);
    // Saturating: the launch time and the tag come from the cloud and may be anything.
    let on = now.saturating_sub(launched);
    let left = launched.saturating_add(timeout.saturating_mul(60)).saturating_sub(now);
    Ok(format!(
        "Instance has been on for {} minutes and {} seconds. Will be stopped in {} minutes and {} seconds with the current timeout.",
        on.div_euclid(60),
        on.rem_euclid(60),
        left.div_euclid(60),
        left.rem_euclid(60)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(launch_time: Option<i64>, timeout: &str) -> Instance {
        Instance {
            id: "i-1".into(),
            image_id: "ami-1".into(),
            instance_type: "t2.micro".into(),
            state: InstanceState::Running,
            state_reason: None,
            launch_time,
            public_ip: None,
            private_ip: None,
            tags: [("Timeout".to_string(), timeout.to_string())].into(),
            status_checks: None,
        }
    }

    #[test]
    fn lifetime_message_saturates_on_extreme_values() {
        let msg = lifetime_message(&instance(Some(0), "2"), 70).unwrap();
        assert!(
            msg.contains("on for 1 minutes and 10 seconds") && msg.contains("in 0 minutes and 50 seconds"),
            "{msg}"
        );
        let (max, min) = (i64::MAX.to_string(), i64::MIN.to_string());
        for (t, timeout, now) in [
            (Some(i64::MIN), "60", 1_700_000_000),
            (Some(i64::MAX), "60", 1_700_000_000),
            (Some(0), max.as_str(), 0),
            (Some(0), min.as_str(), i64::MAX),
        ] {
            assert!(lifetime_message(&instance(t, timeout), now).is_ok());
        }
    }
}
