//! `sweep`: what the cloud holds for this blueprint that the session does not track (orphans),
//! what the session tracks that the cloud no longer has (vanished records), and the warning at the
//! first cloud use when the current instance is gone.
//!
//! Resources are found by the tags everything devami creates carries (`devami:blueprint`,
//! `devami:user`). Alone it only lists; each action (`--adopt`, `--terminate`, `--deregister`,
//! `--forget`) changes one thing, and the destructive ones ask first.

use std::collections::HashSet;

use crate::backend::{BackendError, Image, ImageState, Instance, InstanceState};
use crate::clock;
use crate::error::{Error, Result};
use crate::output::Output;
use crate::parse::{Args, Value};
use crate::session::DevAmi;
use crate::state::SeenState;

/// The tag naming the blueprint (its PipelineName) on everything devami creates.
pub const BLUEPRINT_TAG: &str = "devami:blueprint";
/// The tag naming the user who created a resource.
pub const USER_TAG: &str = "devami:user";

/// Instance states after which nothing is left to track.
/// A current instance seen this many seconds ago is not checked again when a session starts.
const RECENTLY_SEEN: i64 = 300;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Instance,
    Image,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Instance => "instance",
            Kind::Image => "image",
        }
    }
}

/// What the session knows of a swept resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Knows {
    /// The cloud has it; the session has no record of it.
    Unknown,
    /// The cloud has it; the session has a record but no longer tracks it (`forget`, replaced).
    Forgotten,
    /// The cloud has it and the session tracks it.
    Tracked,
    /// The session's record says it exists; the cloud has no trace of it or it was terminated or
    /// deregistered. `current` when it is the session's current instance.
    Vanished { current: bool },
}

impl Knows {
    fn label(self, kind: Kind) -> &'static str {
        match (self, kind) {
            (Knows::Unknown, _) => "not in this session",
            (Knows::Forgotten, _) => "not in this session (forgotten)",
            (Knows::Tracked, _) => "tracked",
            (Knows::Vanished { current: false }, Kind::Instance) => "in history, vanished",
            (Knows::Vanished { .. }, _) => "tracked, vanished",
        }
    }

    fn is_orphan(self) -> bool {
        matches!(self, Knows::Unknown | Knows::Forgotten)
    }
}

/// One resource `sweep` found (or a record it found missing).
#[derive(Debug, Clone)]
struct Swept {
    kind: Kind,
    id: String,
    /// The cloud's state, or `not found`.
    state: String,
    /// The instance type or the image name.
    what: String,
    /// Launch or creation time, epoch seconds.
    when: Option<i64>,
    user: Option<String>,
    knows: Knows,
}

impl Swept {
    fn from_instance(inst: &Instance, knows: Knows) -> Swept {
        Swept {
            kind: Kind::Instance,
            id: inst.id.clone(),
            state: inst.state.to_string(),
            what: inst.instance_type.clone(),
            when: inst.launch_time,
            user: inst.tags.get(USER_TAG).cloned(),
            knows,
        }
    }

    fn from_image(img: &Image, knows: Knows) -> Swept {
        Swept {
            kind: Kind::Image,
            id: img.id.clone(),
            state: img.state.to_string(),
            what: img.name.clone(),
            when: img.created,
            user: img.tags.get(USER_TAG).cloned(),
            knows,
        }
    }

    /// One row of the table.
    fn row(&self, with_user: bool) -> Vec<String> {
        let mut row = vec![
            self.kind.as_str().to_string(),
            self.id.clone(),
            self.state.clone(),
            if self.what.is_empty() { "-".into() } else { self.what.clone() },
            self.when.map(clock::format).unwrap_or_else(|| "-".into()),
            self.knows.label(self.kind).to_string(),
        ];
        if with_user {
            row.push(self.user.clone().unwrap_or_else(|| "-".into()));
        }
        row
    }

    /// `i-... (t2.micro, running)` for questions and messages.
    fn describe(&self) -> String {
        format!("{} {} ({}, {})", self.kind.as_str(), self.id, self.what, self.state)
    }
}

/// What one `sweep` invocation asks for.
enum Action {
    List,
    Adopt(String),
    Terminate(String),
    Deregister(String),
    Forget,
}

impl Action {
    fn from_args(a: &Args) -> Result<Action> {
        let mut actions = Vec::new();
        for (name, make) in [
            ("adopt", Action::Adopt as fn(String) -> Action),
            ("terminate", Action::Terminate),
            ("deregister", Action::Deregister),
        ] {
            if let Some(id) = a.str(name) {
                let id = id.trim();
                if id.is_empty() {
                    return Err(Error::MissingId { command: "sweep", option: name });
                }
                actions.push((name, make(id.to_string())));
            }
        }
        if a.bool("forget").unwrap_or(false) {
            actions.push(("forget", Action::Forget));
        }
        if actions.len() > 1 {
            return Err(Error::SweepActions { options: actions.iter().map(|(n, _)| *n).collect() });
        }
        Ok(actions.pop().map(|(_, a)| a).unwrap_or(Action::List))
    }
}

/// Whether an error says the instance or image asked about does not exist.
fn not_found(e: &Error) -> bool {
    matches!(e, Error::Backend { source: BackendError::NotFound { .. }, .. })
}

impl DevAmi {
    /// The caller's name as the `devami:user` tag records it: the last part of the caller's ARN.
    pub(crate) fn caller_name(&mut self) -> Result<String> {
        let cloud = self.cloud()?;
        let arn = cloud.call("asking who we are", cloud.backend.identity())?.arn;
        Ok(arn.rsplit('/').next().unwrap_or(&arn).to_string())
    }

    /// Warns when the current instance the state records as existing is terminated or has left no
    /// trace (changed behind the session's back). Called at the session's first use of the cloud,
    /// and when a blueprint is opened while the cloud is already in use, so that commands without
    /// the cloud never wait for it. Never fails the command: a failed check says nothing.
    pub(crate) fn warn_if_current_vanished(&mut self) {
        let Some(rec) = self.state().current() else { return };
        if rec.last_state.is_some_and(SeenState::is_finished) {
            return;
        }
        // Seen moments ago (the previous command of a script): no call needed.
        if rec.last_seen.is_some_and(|t| crate::clock::now().saturating_sub(t) < RECENTLY_SEEN) {
            return;
        }
        let id = rec.id.clone();
        let Ok(cloud) = self.cloud() else { return };
        // What was seen is recorded, so the prompt and the exit warning stop calling it running.
        let why = match cloud.call("checking the current instance", cloud.backend.describe_instance(&id)) {
            Ok(inst) if matches!(inst.state, InstanceState::Terminated | InstanceState::ShuttingDown) => {
                self.note_instance(&inst);
                "terminated outside this session"
            }
            Err(e) if not_found(&e) => {
                self.record_gone(&id);
                "the cloud has no trace of it"
            }
            _ => return,
        };
        self.console.warn(&format!("instance {id} is gone ({why}); `sweep --forget` clears it"));
    }

    /// `sweep(adopt=None, terminate=None, deregister=None, forget=False, all_users=False)`.
    pub(crate) fn cmd_sweep(&mut self, a: &Args) -> Result<Output> {
        let pipeline = self.bp()?.pipeline_name()?.to_string();
        let action = Action::from_args(a)?;
        let all_users = a.bool("all_users").unwrap_or(false);
        let user = self.caller_name()?;
        let mut tags = vec![(BLUEPRINT_TAG.to_string(), pipeline.clone())];
        if !all_users {
            tags.push((USER_TAG.to_string(), user.clone()));
        }
        let scope = if all_users {
            format!("blueprint `{pipeline}` (all users)")
        } else {
            format!("blueprint `{pipeline}` and user `{user}`")
        };
        let swept = self.sweep_find(&tags)?;
        match action {
            Action::List => Ok(list_output(&swept, &scope, all_users)),
            Action::Adopt(id) => self.sweep_adopt(&swept, &id, &scope, all_users),
            Action::Terminate(id) => self.sweep_terminate(&swept, &id, &scope, all_users),
            Action::Deregister(id) => self.sweep_deregister(&swept, &id, &scope, all_users),
            Action::Forget => Ok(self.sweep_forget(&swept)),
        }
    }

    /// The resources with `tags`, and the records of the state whose resource the search did not
    /// return (described one by one: untagged or another user's, or vanished).
    fn sweep_find(&mut self, tags: &[(String, String)]) -> Result<Vec<Swept>> {
        let cloud = self.cloud()?;
        let instances =
            cloud.call("finding the blueprint's instances", cloud.backend.find_instances(tags))?;
        let cloud = self.cloud()?;
        let images = cloud.call("finding the blueprint's images", cloud.backend.find_images(tags))?;
        for img in &images {
            self.note_pending_image(img);
        }

        let st = self.state();
        let current = st.instance.clone();
        let knows_instance = |id: &str| {
            if current.as_deref() == Some(id) {
                Knows::Tracked
            } else if st.instances.iter().any(|r| r.id == id) {
                Knows::Forgotten
            } else {
                Knows::Unknown
            }
        };
        let mut swept: Vec<Swept> =
            instances.iter().map(|i| Swept::from_instance(i, knows_instance(&i.id))).collect();
        swept.extend(images.iter().map(|i| {
            let knows = if st.images.iter().any(|r| r.id == i.id) { Knows::Tracked } else { Knows::Unknown };
            Swept::from_image(i, knows)
        }));

        // Records that claim a resource the search did not return, newest record per id.
        let mut seen: HashSet<String> = swept.iter().map(|s| s.id.clone()).collect();
        let mut instance_records = Vec::new();
        for r in st.instances.iter().rev() {
            // The current instance always counts: its record says terminated once the vanished
            // warning has recorded what it saw, yet the session still points at it.
            let finished = r.last_state.is_some_and(SeenState::is_finished);
            if seen.insert(r.id.clone()) && (!finished || current.as_deref() == Some(r.id.as_str())) {
                let knows = knows_instance(&r.id);
                instance_records.push((r.clone(), knows));
            }
        }
        let mut image_records = Vec::new();
        for r in st.images.iter().rev() {
            if seen.insert(r.id.clone()) && r.last_state != Some(ImageState::Deregistered) {
                image_records.push(r.clone());
            }
        }

        for (rec, knows) in instance_records {
            let is_current = current.as_deref() == Some(rec.id.as_str());
            let cloud = self.cloud()?;
            let vanished = |state: &str| Swept {
                kind: Kind::Instance,
                id: rec.id.clone(),
                state: state.to_string(),
                what: rec.instance_type.clone().unwrap_or_default(),
                when: rec.launch_time.or(Some(rec.recorded)),
                user: None,
                knows: Knows::Vanished { current: is_current },
            };
            match cloud.call("describing a recorded instance", cloud.backend.describe_instance(&rec.id)) {
                Ok(inst) if matches!(inst.state, InstanceState::Terminated | InstanceState::ShuttingDown) => {
                    swept.push(vanished(inst.state.as_str()));
                }
                Ok(inst) => swept.push(Swept::from_instance(&inst, knows)),
                Err(e) if not_found(&e) => swept.push(vanished("not found")),
                Err(e) => return Err(e),
            }
        }
        for rec in image_records {
            let cloud = self.cloud()?;
            let vanished = |state: &str| Swept {
                kind: Kind::Image,
                id: rec.id.clone(),
                state: state.to_string(),
                what: rec.name.clone(),
                when: Some(rec.created),
                user: None,
                knows: Knows::Vanished { current: false },
            };
            match cloud.call("describing a recorded image", cloud.backend.describe_image(&rec.id)) {
                Ok(img) if img.state == ImageState::Deregistered => swept.push(vanished("deregistered")),
                Ok(img) => {
                    self.note_pending_image(&img);
                    swept.push(Swept::from_image(&img, Knows::Tracked));
                }
                Err(e) if not_found(&e) => swept.push(vanished("not found")),
                Err(e) => return Err(e),
            }
        }
        swept.sort_by(|a, b| {
            (a.kind == Kind::Image, a.when.is_none(), a.when, &a.id).cmp(&(
                b.kind == Kind::Image,
                b.when.is_none(),
                b.when,
                &b.id,
            ))
        });
        Ok(swept)
    }

    /// The swept resource `id` of `kind`, or the error saying it is not among them.
    fn swept_one<'a>(
        swept: &'a [Swept],
        kind: Kind,
        id: &str,
        option: &'static str,
        scope: &str,
        all_users: bool,
    ) -> Result<&'a Swept> {
        if let Some(s) = swept.iter().find(|s| s.kind == kind && s.id == id) {
            return Ok(s);
        }
        if let Some(other) = swept.iter().find(|s| s.id == id) {
            return Err(Error::SweepWrongKind {
                id: id.to_string(),
                kind: other.kind.as_str(),
                option,
                wanted: kind.as_str(),
            });
        }
        Err(Error::NotSwept { kind: kind.as_str(), id: id.to_string(), scope: scope.to_string(), all_users })
    }

    fn sweep_adopt(&mut self, swept: &[Swept], id: &str, scope: &str, all_users: bool) -> Result<Output> {
        let s = Self::swept_one(swept, Kind::Instance, id, "adopt", scope, all_users)?;
        match s.knows {
            Knows::Vanished { .. } => {
                return Err(Error::NothingToAdopt { id: id.to_string(), state: s.state.clone() });
            }
            Knows::Tracked => return Err(Error::AlreadyCurrent { id: id.to_string() }),
            Knows::Unknown | Knows::Forgotten => {}
        }
        if s.state == InstanceState::ShuttingDown.as_str() {
            return Err(Error::AdoptShuttingDown { id: id.to_string() });
        }
        if let Some(cur) = swept.iter().find(|c| c.kind == Kind::Instance && c.knows == Knows::Tracked)
            && let Ok(state) = cur.state.parse::<InstanceState>()
            && state.is_live()
        {
            return Err(Error::AdoptBlocked { current: cur.id.clone(), state, id: id.to_string() });
        }
        let previous = self.state().instance.clone().filter(|p| p != id);
        let mut args = Args::default();
        args.set("instance_id", Value::Str(id.to_string()));
        self.cmd_assign_instance(&args)?;
        let rec = self.state().current();
        let what = rec.and_then(|r| r.instance_type.clone()).unwrap_or_else(|| s.what.clone());
        let state = rec.and_then(|r| r.last_state).map_or_else(|| s.state.clone(), |st| st.to_string());
        let mut text =
            format!("adopted instance {id} ({what}, {state}): it is now the session's current instance");
        if let Some(p) = previous {
            text.push_str(&format!(
                "\nthe previous current instance {p} stays in `history` (`sweep` lists it while it exists)"
            ));
        }
        Ok(Output::text(text))
    }

    fn sweep_terminate(&mut self, swept: &[Swept], id: &str, scope: &str, all_users: bool) -> Result<Output> {
        let s = Self::swept_one(swept, Kind::Instance, id, "terminate", scope, all_users)?.clone();
        match s.knows {
            Knows::Vanished { .. } => {
                return Err(Error::AlreadyGone {
                    kind: Kind::Instance.as_str(),
                    id: id.to_string(),
                    state: s.state.clone(),
                });
            }
            Knows::Tracked => return Err(Error::SweepingCurrent { id: id.to_string() }),
            Knows::Unknown | Knows::Forgotten => {}
        }
        if s.state == InstanceState::ShuttingDown.as_str() {
            return Err(Error::AlreadyShuttingDown { id: id.to_string() });
        }
        let question =
            format!("terminate {}? Its root volume is deleted and the work on it is lost", s.describe());
        if !self.confirm("sweep", &question)? {
            return Ok(Output::text("No state change."));
        }
        let cloud = self.cloud()?;
        cloud.call("terminating the instance", cloud.backend.terminate(id))?;
        // Also records the new state when the session's history has the instance.
        let state = match self.describe(id) {
            Ok(inst) => inst.state.to_string(),
            Err(e) if not_found(&e) => "terminated".into(),
            Err(e) => return Err(e),
        };
        Ok(Output::text(format!("instance {id} is {state} (terminated by `sweep`)")))
    }

    fn sweep_deregister(
        &mut self,
        swept: &[Swept],
        id: &str,
        scope: &str,
        all_users: bool,
    ) -> Result<Output> {
        let s = Self::swept_one(swept, Kind::Image, id, "deregister", scope, all_users)?.clone();
        if let Knows::Vanished { .. } = s.knows {
            return Err(Error::AlreadyGone {
                kind: Kind::Image.as_str(),
                id: id.to_string(),
                state: s.state,
            });
        }
        if self.bp()?.ami().ok() == Some(id) {
            return Err(Error::ImageInBlueprint { id: id.to_string() });
        }
        let question = format!(
            "deregister {} and delete its snapshots? No instance can be launched from it afterwards",
            s.describe()
        );
        if !self.confirm("sweep", &question)? {
            return Ok(Output::text("No state change."));
        }
        let cloud = self.cloud()?;
        cloud.call("deleting the image", cloud.backend.delete_image(id))?;
        for rec in self.state_mut().images.iter_mut().filter(|r| r.id == id) {
            rec.last_state = Some(ImageState::Deregistered);
        }
        let mut text = format!("image {id} deregistered and its snapshots deleted");
        if self.unsave_if_no_image_left() {
            text.push_str(
                "\nthe current instance's work is no longer saved as an image: `create_devami NAME` saves it again",
            );
        }
        Ok(Output::text(text))
    }

    /// Clears the saved flag when no image made from the current instance is left (the one that
    /// saved its work was deregistered or vanished); true when it did.
    fn unsave_if_no_image_left(&mut self) -> bool {
        let st = self.state_mut();
        let Some(current) = st.instance.clone() else { return false };
        let left = st.images.iter().any(|r| {
            r.instance_id == current
                && !matches!(r.last_state, Some(ImageState::Deregistered | ImageState::Failed))
        });
        if st.instance_saved && !left {
            st.instance_saved = false;
            return true;
        }
        false
    }

    fn sweep_forget(&mut self, swept: &[Swept]) -> Output {
        let now = clock::now();
        let mut forgotten = Vec::new();
        let mut cleared_current = false;
        let st = self.state_mut();
        for s in swept {
            let Knows::Vanished { current } = s.knows else { continue };
            match s.kind {
                Kind::Instance => {
                    for rec in st.instances.iter_mut().filter(|r| r.id == s.id) {
                        rec.last_state = Some(SeenState::Gone);
                        rec.last_seen = Some(now);
                    }
                    if current && st.instance.as_deref() == Some(s.id.as_str()) {
                        st.instance = None;
                        st.ip = None;
                        st.instance_saved = false;
                        cleared_current = true;
                    }
                    forgotten.push(format!("instance {} (now `gone`)", s.id));
                }
                Kind::Image => {
                    for rec in st.images.iter_mut().filter(|r| r.id == s.id) {
                        rec.last_state = Some(ImageState::Deregistered);
                    }
                    forgotten.push(format!("image {} (now `deregistered`)", s.id));
                }
            }
        }
        if forgotten.is_empty() {
            return Output::text(
                "nothing vanished: every instance and image the session records still exists",
            );
        }
        let mut lines =
            vec![format!("marked {} vanished record(s); they stay in `history`:", forgotten.len())];
        lines.extend(forgotten.into_iter().map(|f| format!("  {f}")));
        if self.unsave_if_no_image_left() {
            lines.push(
                "the current instance's work is no longer saved as an image: `create_devami NAME` saves it again"
                    .into(),
            );
        }
        if cleared_current {
            lines.push(
                "the session has no current instance now: `launch_devinstance`, or `sweep --adopt ID` for an orphan"
                    .into(),
            );
        }
        Output::text(lines.join("\n"))
    }
}

/// The listing: a table, and what can be done about what it shows.
fn list_output(swept: &[Swept], scope: &str, all_users: bool) -> Output {
    if swept.is_empty() {
        let wider = if all_users { "" } else { " (`--all-users` also looks for other users')" };
        return Output::text(format!("no instances or images tagged for {scope}{wider}"));
    }
    let mut header = vec!["kind", "id", "state", "type / name", "launched / created (UTC)", "devami knows"];
    if all_users {
        header.push("user");
    }
    let rows = swept.iter().map(|s| s.row(all_users)).collect();
    let mut hints = Vec::new();
    if swept.iter().any(|s| s.kind == Kind::Instance && s.knows.is_orphan()) {
        hints.push(
            "`sweep --adopt ID` makes an instance the current one; `sweep --terminate ID` terminates it",
        );
    }
    if swept.iter().any(|s| s.kind == Kind::Image && s.knows.is_orphan()) {
        hints.push("`sweep --deregister ID` deletes an image and its snapshots");
    }
    if swept.iter().any(|s| matches!(s.knows, Knows::Vanished { .. })) {
        hints.push("`sweep --forget` marks what vanished as gone in the session's records");
    }
    if hints.is_empty() {
        hints.push("nothing to sweep: the session tracks everything found");
    }
    Output::Many(vec![
        Output::text(format!("instances and images tagged for {scope}:")),
        Output::table(&header, rows),
        Output::text(hints.join("\n")),
    ])
}
