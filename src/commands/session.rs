//! The session family of commands: `help`, `exit`, `status`, `history`, `blueprint`, `check`,
//! `init`, `open`, `sleep` and `forget` — what looks at or changes the session itself rather than
//! the cloud.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::backend::{BackendKind, ImageState, InstanceState};
use crate::blueprint::{lint, scaffold};
use crate::clock;
use crate::commands::{self, help};
use crate::error::{Error, Result};
use crate::interrupt;
use crate::output::Output;
use crate::parse::Args;
use crate::pricing;
use crate::session::DevAmi;
use crate::state::SeenState;

impl DevAmi {
    /// `help [COMMAND]`.
    pub(crate) fn cmd_help(&mut self, a: &Args) -> Result<Output> {
        let spec = match a.str("command") {
            Some(name) => Some(commands::lookup(name).ok_or_else(|| Error::UnknownCommand {
                name: name.to_string(),
                suggestion: commands::suggest(name).map(str::to_string),
            })?),
            None => None,
        };
        Ok(Output::Text(help::text(spec)))
    }

    /// `exit`: leaves the shell after this command.
    pub(crate) fn cmd_exit(&mut self, _: &Args) -> Result<Output> {
        self.request_exit();
        Ok(Output::Empty)
    }

    /// `status`: the session at a glance, with what runs the instances.
    pub(crate) fn cmd_status(&mut self, _: &Args) -> Result<Output> {
        self.bp()?;
        self.refresh_pending_images();
        let about = self.backend_about();
        self.status(about)
    }

    /// `history`: every instance and image of the session.
    pub(crate) fn cmd_history(&mut self, _: &Args) -> Result<Output> {
        self.bp()?;
        self.refresh_pending_images();
        self.history()
    }

    /// `blueprint`: the blueprint's main keys.
    pub(crate) fn cmd_blueprint(&mut self, _: &Args) -> Result<Output> {
        let bp = self.bp()?;
        let rows = bp.summary().into_iter().map(|(k, v)| vec![k, v]).collect();
        Ok(Output::Many(vec![
            Output::text(format!("blueprint `{}`", bp.path().display())),
            Output::table(&["key", "value"], rows),
        ]))
    }

    /// `check [PATH]`: the blueprint review; errors fail the command after printing the report.
    pub(crate) fn cmd_check(&mut self, a: &Args) -> Result<Output> {
        let dir = match a.str("path") {
            Some(p) => PathBuf::from(p),
            None => self.bp()?.dir().to_path_buf(),
        };
        let findings = lint::check_dir(&dir);
        let report = lint::render(&dir, &findings);
        let errors = findings.iter().filter(|f| f.severity == lint::Severity::Error).count();
        if errors > 0 {
            self.console.print(&report);
            return Err(Error::CheckFailed { errors });
        }
        Ok(Output::Text(report))
    }

    /// `init NAME [DIR]`: a new blueprint folder.
    pub(crate) fn cmd_init(&mut self, a: &Args) -> Result<Output> {
        let name = a.str("name").unwrap_or_default();
        let parent = a.str("dir").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
        let path = scaffold::init(name, &parent)?;
        Ok(Output::Text(scaffold::render_created(&path)))
    }

    /// `open PATH`: binds the session to another blueprint folder.
    pub(crate) fn cmd_open(&mut self, a: &Args) -> Result<Output> {
        let path = a.str("path").unwrap_or_default().to_string();
        self.open_blueprint(Path::new(&path))?;
        Ok(Output::Text(self.opened_message()))
    }

    /// `sleep SECONDS`: waits, cancelled by Ctrl-C (for scripts and tutorials).
    pub(crate) fn cmd_sleep(&mut self, a: &Args) -> Result<Output> {
        let secs = a.float("seconds").unwrap_or(0.0);
        if !(0.0..=86_400.0).contains(&secs) {
            return Err(Error::BadArgument {
                command: "sleep",
                argument: "`seconds`",
                expected: "between 0 and 86400",
                got: secs.to_string(),
            });
        }
        interrupt::sleep(Duration::from_secs_f64(secs))?;
        Ok(Output::Empty)
    }

    /// `forget`: stops tracking the current instance (asks first unless it costs nothing).
    pub(crate) fn cmd_forget(&mut self, _: &Args) -> Result<Output> {
        let id = self.current_instance()?;
        let last = self.state().current().and_then(|r| r.last_state);
        // A terminated (or vanished) instance costs nothing: forgetting it needs no question.
        if !matches!(last, Some(SeenState::Cloud(InstanceState::Terminated) | SeenState::Gone)) {
            let seen = last.map(|s| format!("last seen {s}")).unwrap_or_else(|| "state unknown".into());
            let question = format!("stop tracking instance {id} ({seen})? It may keep costing money");
            if !self.confirm("forget", &question)? {
                return Ok(Output::text("No state change."));
            }
        }
        let state = self.state_mut();
        state.instance = None;
        state.ip = None;
        state.instance_saved = false;
        Ok(Output::text(format!("instance {id} is no longer the current instance (it stays in `history`)")))
    }

    /// What runs the instances (the local backend's engine and version), for `status`; a
    /// backend that cannot be reached says so instead of failing the command.
    fn backend_about(&mut self) -> Option<String> {
        // Not `cloud()`: `status` stays a look at the session, with no check of the instance.
        if self.options().backend != BackendKind::Local {
            return None;
        }
        let shown = |e: &Error| crate::console::render_error(e).trim_end().replacen("error: ", "", 1);
        let cloud = match self.connect() {
            Ok(c) => c,
            Err(e) => return Some(format!("not reachable: {}", shown(&e))),
        };
        match cloud.call_within(
            Duration::from_secs(10),
            "asking the backend about itself",
            cloud.backend.about(),
        ) {
            Ok(Some(about)) => about,
            Ok(None) => Some("no answer within 10 s".into()),
            Err(e) => Some(format!("not reachable: {}", shown(&e))),
        }
    }

    /// The `status` table.
    fn status(&self, about: Option<String>) -> Result<Output> {
        let bp = self.bp()?;
        let st = self.state();
        let now = clock::now();
        let prices = self.prices();
        let mut rows: Vec<Vec<String>> = vec![
            vec!["blueprint".into(), bp.dir().display().to_string()],
            vec!["pipeline".into(), bp.pipeline_name().unwrap_or("(missing)").to_string()],
            vec!["backend".into(), self.options().backend.to_string()],
        ];
        if let Some(about) = about {
            rows.push(vec!["engine".into(), about]);
        }
        match st.current() {
            Some(rec) => {
                rows.push(vec!["instance".into(), rec.id.clone()]);
                rows.push(vec![
                    "last known state".into(),
                    match (rec.last_state, rec.last_seen) {
                        (Some(s), Some(t)) => format!("{s} (at {} UTC)", clock::format(t)),
                        (Some(s), None) => s.to_string(),
                        _ => "unknown".into(),
                    },
                ]);
                rows.push(vec!["address".into(), st.ip.clone().unwrap_or_else(|| "-".into())]);
                rows.push(vec!["lifetime left".into(), lifetime_text(rec, now)]);
                let ty = rec.instance_type.clone().unwrap_or_else(|| "-".into());
                let hourly = rec.instance_type.as_deref().and_then(|t| prices.hourly(t));
                rows.push(vec![
                    "type and price".into(),
                    match hourly {
                        Some(h) => format!("{ty}, {}/hour{}", pricing::dollars(h), self.price_note()),
                        None => format!("{ty}, price unknown (add it with DEVAMI_PRICES)"),
                    },
                ]);
                rows.push(vec!["cost so far".into(), running_cost_text(rec, hourly, now, self.price_note())]);
                rows.push(vec![
                    "saved as image".into(),
                    if st.instance_saved { "yes".into() } else { "no".into() },
                ]);
            }
            None => rows.push(vec!["instance".into(), "none".into()]),
        }
        let snapshot_bytes: u64 = st
            .images
            .iter()
            .filter(|r| !matches!(r.last_state, Some(ImageState::Deregistered | ImageState::Failed)))
            .filter_map(|r| r.size_bytes)
            .sum();
        rows.push(vec!["instances known".into(), st.instances.len().to_string()]);
        rows.push(vec![
            "images created".into(),
            match st.images.len() {
                0 => "0".into(),
                n => format!(
                    "{n} (snapshots {}/month{})",
                    pricing::dollars(pricing::snapshot_month(snapshot_bytes)),
                    self.price_note()
                ),
            },
        ]);
        rows.push(vec!["jobs submitted".into(), st.jobs.len().to_string()]);
        Ok(Output::table(&["session", "value"], rows))
    }

    /// The `history` tables.
    fn history(&self) -> Result<Output> {
        self.bp()?;
        let st = self.state();
        let now = clock::now();
        let prices = self.prices();
        let mut parts = Vec::new();
        if st.instances.is_empty() {
            parts.push(Output::text("no instances yet"));
        } else {
            let rows = st
                .instances
                .iter()
                .map(|r| {
                    let hourly = r.instance_type.as_deref().and_then(|t| prices.hourly(t));
                    vec![
                        format!("{}{}", r.id, if st.instance.as_deref() == Some(&r.id) { " *" } else { "" }),
                        r.last_state.map_or_else(|| "-".into(), |s| s.to_string()),
                        r.instance_type.clone().unwrap_or_else(|| "-".into()),
                        r.source.clone().or_else(|| r.image_id.clone()).unwrap_or_else(|| "-".into()),
                        clock::format(r.recorded),
                        lifetime_text(r, now),
                        hourly.map(|h| format!("{}/h", pricing::dollars(h))).unwrap_or_else(|| "-".into()),
                        r.origin.clone(),
                    ]
                })
                .collect();
            parts.push(Output::table(
                &["instance", "state", "type", "image", "launched (UTC)", "lifetime left", "price", "how"],
                rows,
            ));
        }
        if st.images.is_empty() {
            parts.push(Output::text("no images yet"));
        } else {
            let rows = st
                .images
                .iter()
                .map(|r| {
                    vec![
                        r.id.clone(),
                        r.last_state.as_ref().map_or_else(|| "-".into(), ImageState::to_string),
                        r.name.clone(),
                        r.size_bytes.map(crate::commands::image::human_bytes).unwrap_or_else(|| "-".into()),
                        r.size_bytes
                            .map(|b| format!("{}/month", pricing::dollars(pricing::snapshot_month(b))))
                            .unwrap_or_else(|| "-".into()),
                        clock::format(r.created),
                        r.instance_id.clone(),
                    ]
                })
                .collect();
            parts.push(Output::table(
                &["image", "state", "name", "size", "storage", "created (UTC)", "from instance"],
                rows,
            ));
        }
        if self.options().backend == BackendKind::Local && !st.instances.is_empty() {
            parts.push(Output::text(format!(
                "prices are what the same resources cost on AWS ({}, {}); the local backend is free",
                pricing::PRICES_SOURCE,
                pricing::PRICES_DATE
            )));
        }
        Ok(Output::Many(parts))
    }
}

/// The lifetime left of an instance, for tables: `42m 10s`, `over`, or `-` when not running.
fn lifetime_text(rec: &crate::state::InstanceRecord, now: i64) -> String {
    let up =
        matches!(rec.last_state, Some(SeenState::Cloud(InstanceState::Running | InstanceState::Pending)));
    match rec.lifetime_left(now) {
        Some(s) if up && s > 0 => clock::human_duration(s),
        Some(_) if up => "over".into(),
        _ => "-".into(),
    }
}

/// What the current instance has cost since it was last launched or started.
fn running_cost_text(
    rec: &crate::state::InstanceRecord,
    hourly: Option<f64>,
    now: i64,
    note: &str,
) -> String {
    use InstanceState::{Pending, Running, Stopped, Stopping};
    match (rec.last_state, hourly, rec.launch_time) {
        (Some(SeenState::Cloud(Running | Pending)), Some(h), Some(t)) => format!(
            "{} since {} UTC{note}",
            pricing::dollars(pricing::running_cost(h, now.saturating_sub(t))),
            clock::format(t)
        ),
        (Some(SeenState::Cloud(Running | Pending)), None, _) => "unknown (no price for its type)".into(),
        (Some(SeenState::Cloud(Stopped | Stopping)), _, _) => match rec.volume_gib {
            Some(gib) => {
                let month = pricing::volume_month(f64::from(gib));
                format!(
                    "no compute while stopped; its {gib} GiB volume costs {}/month ({}/hour){note}",
                    pricing::dollars(month),
                    pricing::dollars(pricing::per_hour(month))
                )
            }
            None => "no compute while stopped; its volume is still billed".into(),
        },
        _ => "-".into(),
    }
}
