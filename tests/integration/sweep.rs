//! `sweep` end to end through the binary, on both backends: orphans made by a lost state, a
//! `forget` or a second blueprint folder with the same PipelineName are listed, adopted,
//! terminated and deregistered; an instance terminated behind the session's back is reported at
//! the first cloud use, shown as vanished and cleared by `sweep --forget`. What devami did is
//! checked independently: the local home's documents, or boto3 against moto.

use std::path::PathBuf;
use std::process::Output;

use serde_json::Value;

use crate::aws::Aws;
use crate::support::{Scratch, all, text};
use crate::support::{assert_failed_cleanly, error_line, read_state};

/// The user name the local backend tags with (it reads `$USER`).
const USER: &str = "sweeper";

/// devami on a blueprint folder of the local backend, as `user`.
fn run_as(s: &Scratch, user: &str, dir: &str, extra: &[&str], commands: &str) -> Output {
    let mut args: Vec<&str> = extra.to_vec();
    args.extend_from_slice(&[dir, "-c", commands]);
    s.cmd(&args).env("USER", user).output().expect("run devami")
}

fn run(s: &Scratch, dir: &str, commands: &str) -> Output {
    run_as(s, USER, dir, &[], commands)
}

/// Runs `commands` and asserts success; stdout and stderr together.
fn ok(s: &Scratch, dir: &str, commands: &str) -> String {
    let out = run(s, dir, commands);
    assert!(out.status.success(), "`{commands}` failed:\n{}", all(&out));
    all(&out)
}

/// Runs `commands` with `--yes` and asserts success.
fn ok_yes(s: &Scratch, dir: &str, commands: &str) -> String {
    let out = run_as(s, USER, dir, &["--yes"], commands);
    assert!(out.status.success(), "`--yes {commands}` failed:\n{}", all(&out));
    all(&out)
}

/// Runs `commands`, asserts a clean failure (status 1, one `error:` line) and returns that line.
fn refused(s: &Scratch, dir: &str, extra: &[&str], commands: &str) -> String {
    let out = run_as(s, USER, dir, extra, commands);
    assert_failed_cleanly(&out, commands);
    error_line(&out)
}

fn state(s: &Scratch, dir: &str) -> Value {
    read_state(&s.path().join(dir).join(".devami/state.json"))
}

/// A document of the local home: `instances/<id>/instance.json` or `images/<id>/image.json`.
fn home_doc(s: &Scratch, id: &str) -> Value {
    let home = s.path().join(".devami-home");
    let path: PathBuf = if id.starts_with("ami-") {
        home.join("images").join(id).join("image.json")
    } else {
        home.join("instances").join(id).join("instance.json")
    };
    serde_json::from_str(
        &std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

/// Moves every `last_seen` of a state file an hour back: a session only checks a current
/// instance it has not seen for a while.
fn age_last_seen(path: &std::path::Path) {
    let mut st = read_state(path);
    for rec in st["instances"].as_array_mut().unwrap() {
        if let Some(t) = rec["last_seen"].as_i64() {
            rec["last_seen"] = (t - 3600).into();
        }
    }
    std::fs::write(path, serde_json::to_string_pretty(&st).unwrap()).unwrap();
}

/// The table line of a resource in `sweep`'s output.
fn row<'a>(out: &'a str, id: &str) -> &'a str {
    out.lines().find(|l| l.contains(id)).unwrap_or_else(|| panic!("`{id}` is not listed:\n{out}"))
}

/// A second blueprint folder whose PipelineName is `pipeline`.
fn twin(s: &Scratch, name: &str, pipeline: &str) {
    let dir = s.init(name);
    let path = dir.join("stack_config_template.json");
    let mut doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    doc["PipelineName"] = pipeline.into();
    std::fs::write(&path, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
}

#[test]
fn local_orphans_are_listed_adopted_terminated_and_deregistered() {
    let s = Scratch::new();
    s.init("orph");
    ok(&s, "orph", "launch ubuntu22; create_devami snap-a");
    let st = state(&s, "orph");
    let first = st["instance"].as_str().expect("an instance").to_string();
    let image = st["images"][0]["id"].as_str().expect("an image").to_string();
    for id in [&first, &image] {
        let tags = &home_doc(&s, id)["tags"];
        assert_eq!(tags["devami:blueprint"], "orph", "{id}: {tags}");
        assert_eq!(tags["devami:user"], USER, "{id}: {tags}");
    }

    // A lost state: both are orphans; listing changes nothing.
    std::fs::remove_file(s.path().join("orph/.devami/state.json")).unwrap();
    let out = ok(&s, "orph", "sweep");
    assert!(out.contains("tagged for blueprint `orph` and user `sweeper`"), "{out}");
    for id in [&first, &image] {
        assert!(row(&out, id).contains("not in this session"), "{out}");
    }
    assert!(row(&out, &first).contains("running") && row(&out, &first).contains("t2.micro"), "{out}");
    assert!(row(&out, &image).contains("snap-a"), "{out}");
    assert!(out.contains("`sweep --adopt ID`") && out.contains("`sweep --deregister ID`"), "{out}");
    assert!(state(&s, "orph")["instance"].is_null(), "`sweep` alone changed the state");

    // Bad requests change nothing.
    let e = refused(&s, "orph", &[], "sweep --adopt i-0123456789abcdef0");
    assert!(e.contains("`i-0123456789abcdef0` is not among") && e.contains("run `sweep`"), "{e}");
    let e = refused(&s, "orph", &[], &format!("sweep --adopt {image}"));
    assert!(e.contains("is an image"), "{e}");
    let out = run(&s, "orph", &format!("sweep --adopt {first} --forget"));
    assert_eq!(out.status.code(), Some(2), "{}", all(&out));
    assert!(state(&s, "orph")["instance"].is_null());

    // Adopted: the current instance again, as `assign_instance` makes it.
    let out = ok(&s, "orph", &format!("sweep --adopt {first}"));
    assert!(out.contains(&format!("adopted instance {first}")), "{out}");
    let st = state(&s, "orph");
    assert_eq!(st["instance"], first.as_str(), "{st:#}");
    assert_eq!(st["instances"][0]["origin"], "assigned", "{st:#}");
    assert!(row(&ok(&s, "orph", "sweep"), &first).contains("tracked"));

    // `forget` makes it an orphan again; a new launch is current; adopting is refused meanwhile.
    ok_yes(&s, "orph", "forget");
    ok(&s, "orph", "launch ubuntu22");
    let second = state(&s, "orph")["instance"].as_str().unwrap().to_string();
    let out = ok(&s, "orph", "sweep");
    assert!(row(&out, &first).contains("not in this session (forgotten)"), "{out}");
    assert!(row(&out, &second).contains("tracked"), "{out}");
    let e = refused(&s, "orph", &[], &format!("sweep --adopt {first}"));
    assert!(e.contains(&format!("the current instance {second} is running")), "{e}");
    let e = refused(&s, "orph", &[], &format!("sweep --terminate {second}"));
    assert!(e.contains("use `terminate_devinstance`"), "{e}");

    // Once the current instance is stopped, the orphan can be adopted; the stopped one becomes
    // the orphan.
    ok(&s, "orph", "stop_devinstance");
    let out = ok(&s, "orph", &format!("sweep --adopt {first}"));
    assert!(out.contains(&format!("adopted instance {first} (t2.micro, running)")), "{out}");
    assert!(out.contains(&format!("the previous current instance {second} stays in `history`")), "{out}");
    assert_eq!(state(&s, "orph")["instance"], first.as_str());
    let out = ok(&s, "orph", "sweep");
    assert!(row(&out, &second).contains("not in this session (forgotten)"), "{out}");
    assert!(row(&out, &second).contains("stopped"), "{out}");

    // Terminate asks first: refused in a script without `--yes`, done with it.
    let e = refused(&s, "orph", &[], &format!("sweep --terminate {second}"));
    assert!(e.contains("needs confirmation") && e.contains("--yes"), "{e}");
    assert_eq!(home_doc(&s, &second)["state"], "stopped");
    let out = ok_yes(&s, "orph", &format!("sweep --terminate {second}"));
    assert!(out.contains(&format!("instance {second} is terminated")), "{out}");
    assert_eq!(home_doc(&s, &second)["state"], "terminated");
    assert_eq!(home_doc(&s, &first)["state"], "running", "the wrong instance was terminated");
    let e = refused(&s, "orph", &["--yes"], &format!("sweep --terminate {second}"));
    assert!(e.contains("is not among"), "{e}");
    let st = state(&s, "orph");
    let rec = st["instances"].as_array().unwrap().iter().find(|r| r["id"] == second.as_str()).unwrap();
    assert_eq!(rec["last_state"], "terminated", "{st:#}");

    // Deregister asks first too, and keeps the blueprint's AMI.
    refused(&s, "orph", &[], &format!("sweep --deregister {image}"));
    assert_eq!(home_doc(&s, &image)["state"], "available");
    let out = ok_yes(&s, "orph", &format!("sweep --deregister {image}"));
    assert!(out.contains(&format!("image {image} deregistered")), "{out}");
    assert_eq!(home_doc(&s, &image)["state"], "deregistered");
    let out = ok(&s, "orph", "sweep");
    assert!(!out.contains(&image) && !out.contains(&second), "{out}");
    assert!(row(&out, &first).contains("tracked"), "{out}");
    assert!(out.contains("nothing to sweep"), "{out}");

    ok(&s, "orph", "terminate --force");
}

#[test]
fn local_sweep_sees_other_users_only_with_all_users_and_keeps_the_blueprint_ami() {
    let s = Scratch::new();
    s.init("team");
    twin(&s, "mate", "team");
    let out = run_as(&s, "colleague", "mate", &[], "launch ubuntu22; create_devami mate-snap");
    assert!(out.status.success(), "{}", all(&out));
    let st = state(&s, "mate");
    let theirs = st["instance"].as_str().unwrap().to_string();
    let their_image = st["images"][0]["id"].as_str().unwrap().to_string();

    let out = ok(&s, "team", "sweep");
    assert!(out.contains("no instances or images tagged for blueprint `team` and user `sweeper`"), "{out}");
    assert!(out.contains("--all-users"), "{out}");
    let e = refused(&s, "team", &["--yes"], &format!("sweep --terminate {theirs}"));
    assert!(e.contains("is not among") && e.contains("--all-users"), "{e}");
    assert_eq!(home_doc(&s, &theirs)["state"], "running");

    let out = ok(&s, "team", "sweep --all-users");
    assert!(out.contains("blueprint `team` (all users)"), "{out}");
    for id in [&theirs, &their_image] {
        let line = row(&out, id);
        assert!(line.contains("colleague") && line.contains("not in this session"), "{out}");
    }

    // The image a blueprint names as its AMI is not deleted.
    let path = s.path().join("team/stack_config_template.json");
    let mut doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    doc["Lambda"]["LambdaConfig"]["AMI"] = their_image.clone().into();
    std::fs::write(&path, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    let e = refused(&s, "team", &["--yes"], &format!("sweep --deregister {their_image} --all-users"));
    assert!(e.contains("the blueprint uses image") && e.contains("update_blueprint"), "{e}");
    assert_eq!(home_doc(&s, &their_image)["state"], "available");

    let out = ok_yes(&s, "team", &format!("sweep --terminate {theirs} --all-users"));
    assert!(out.contains("terminated"), "{out}");
    assert_eq!(home_doc(&s, &theirs)["state"], "terminated");
}

#[test]
fn local_resources_removed_behind_the_sessions_back_are_reported_and_forgotten() {
    let s = Scratch::new();
    s.init("gone");
    twin(&s, "other", "gone");
    ok(&s, "gone", "launch ubuntu22; create_devami gone-snap");
    let st = state(&s, "gone");
    let id = st["instance"].as_str().unwrap().to_string();
    let image = st["images"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(st["instance_saved"], true);

    // Another devami (another folder, same PipelineName) removes both.
    let out = ok(&s, "other", "sweep");
    assert!(row(&out, &id).contains("not in this session"), "{out}");
    ok_yes(&s, "other", &format!("sweep --terminate {id}"));
    ok_yes(&s, "other", &format!("sweep --deregister {image}"));
    age_last_seen(&s.path().join("gone/.devami/state.json"));

    // Commands without the cloud say nothing and stay instant; the first cloud use warns.
    let out = ok(&s, "gone", "status");
    assert!(!out.contains("is gone"), "`status` reached the cloud:\n{out}");
    let warning = format!(
        "warning: instance {id} is gone (terminated outside this session); `sweep --forget` clears it"
    );
    // Opening the blueprint while the cloud is already in use checks at once.
    let out = ok(&s, "other", "sweep; open gone; status");
    assert!(out.contains(&warning), "{out}");
    // The warning recorded what it saw: it is not repeated, and `sweep` still lists the vanished.
    let out = run(&s, "gone", "sweep");
    assert!(out.status.success(), "{}", all(&out));
    assert!(!text(&out.stderr).contains(&warning), "warned twice:\n{}", all(&out));
    let stdout = text(&out.stdout);
    assert!(row(&stdout, &id).contains("tracked, vanished") && row(&stdout, &id).contains("terminated"));
    assert!(
        row(&stdout, &image).contains("tracked, vanished") && row(&stdout, &image).contains("deregistered")
    );
    assert!(stdout.contains("`sweep --forget`"), "{stdout}");
    assert_eq!(state(&s, "gone")["instance"], id.as_str(), "`sweep` alone changed the state");

    // Nothing to adopt or terminate in what vanished.
    let e = refused(&s, "gone", &["--yes"], &format!("sweep --terminate {id}"));
    assert!(e.contains(&format!("instance {id} is already gone (terminated)")), "{e}");

    let out = ok(&s, "gone", "sweep --forget");
    assert!(out.contains(&format!("instance {id} (now `gone`)")), "{out}");
    assert!(out.contains(&format!("image {image} (now `deregistered`)")), "{out}");
    let st = state(&s, "gone");
    assert!(st["instance"].is_null(), "{st:#}");
    assert_eq!(st["instance_saved"], false, "{st:#}");
    assert_eq!(st["instances"].as_array().unwrap().len(), 1, "a history row was deleted: {st:#}");
    assert_eq!(st["instances"][0]["last_state"], "gone", "{st:#}");
    assert_eq!(st["images"][0]["last_state"], "deregistered", "{st:#}");
    let out = ok(&s, "gone", "sweep; history");
    assert!(!out.contains("warning") && !out.contains("vanished"), "{out}");
    assert!(out.contains("no instances or images tagged"), "{out}");

    // An instance whose documents are gone from the home: no trace at all.
    ok(&s, "gone", "launch ubuntu22");
    let id = state(&s, "gone")["instance"].as_str().unwrap().to_string();
    ok_yes(&s, "other", &format!("sweep --terminate {id}"));
    std::fs::remove_dir_all(s.path().join(".devami-home/instances").join(&id)).unwrap();
    age_last_seen(&s.path().join("gone/.devami/state.json"));
    let out = run(&s, "gone", "sweep");
    assert!(out.status.success(), "{}", all(&out));
    assert!(
        text(&out.stderr).contains(&format!("warning: instance {id} is gone (the cloud has no trace of it)")),
        "{}",
        all(&out)
    );
    assert!(row(&text(&out.stdout), &id).contains("not found"), "{}", all(&out));
    ok(&s, "gone", "sweep --forget");
    assert!(state(&s, "gone")["instance"].is_null());
}

/// Tags of an image as boto3 sees them; `None` when the image is not listed (deregistered).
fn aws_image_tags(aws: &Aws, image: &str) -> Option<Value> {
    let v = aws.moto.py(&format!(
        r#"imgs = ec2.describe_images(Owners=["self"], Filters=[{{"Name": "image-id", "Values": [{image:?}]}}])["Images"]
out = {{t["Key"]: t["Value"] for t in imgs[0].get("Tags", [])}} if imgs else None"#
    ));
    (!v.is_null()).then_some(v)
}

#[test]
fn aws_orphans_are_listed_adopted_terminated_and_deregistered() {
    let aws = Aws::new("sweep-test");
    let user = aws.seed.caller_arn.rsplit('/').next().unwrap().to_string();
    aws.ok("launch_devinstance; create_devami sweep-image");
    let st = aws.state();
    let mine = st["instance"].as_str().unwrap().to_string();
    let image = st["images"][0]["id"].as_str().unwrap().to_string();
    let tags = aws_image_tags(&aws, &image).expect("the image exists");
    assert_eq!(tags["devami:blueprint"], "sweep-test", "{tags}");
    assert_eq!(tags["devami:user"], user.as_str(), "{tags}");
    assert_eq!(tags["devami:instance"], mine.as_str(), "{tags}");
    assert_eq!(aws.describe(&mine)["tags"]["devami:user"], user.as_str());

    // Someone else's instance of the same blueprint, and an untagged one.
    let theirs = aws.moto.py(&format!(
        r#"def run(tags):
    spec = [{{"ResourceType": "instance", "Tags": [{{"Key": k, "Value": v}} for k, v in tags.items()]}}] if tags else []
    return ec2.run_instances(ImageId={ami:?}, MinCount=1, MaxCount=1, InstanceType="t2.micro",
                             TagSpecifications=spec)["Instances"][0]["InstanceId"]
out = run({{"devami:blueprint": "sweep-test", "devami:user": "someone-else"}})
run({{}})"#,
        ami = aws.seed.ami
    ));
    let theirs = theirs.as_str().unwrap().to_string();

    // A lost state: mine are orphans; theirs only with --all-users.
    std::fs::remove_file(aws.state_path()).unwrap();
    let out = aws.ok("sweep");
    assert!(out.contains(&format!("tagged for blueprint `sweep-test` and user `{user}`")), "{out}");
    assert!(
        row(&out, &mine).contains("not in this session") && row(&out, &mine).contains("running"),
        "{out}"
    );
    assert!(row(&out, &image).contains("not in this session") && row(&out, &image).contains("sweep-image"));
    assert!(!out.contains(&theirs), "another user's instance is listed without --all-users:\n{out}");
    assert_eq!(out.matches("│ instance").count(), 1, "{out}");
    let out = aws.ok("sweep --all-users");
    assert!(row(&out, &theirs).contains("someone-else"), "{out}");
    assert_eq!(out.matches("│ instance").count(), 2, "the untagged instance is listed:\n{out}");

    let out = aws.fails("sweep --adopt i-0123456789abcdef0");
    assert!(error_line(&out).contains("is not among"), "{}", all(&out));
    let out = aws.ok(&format!("sweep --adopt {mine}"));
    assert!(out.contains(&format!("adopted instance {mine} (t2.micro, running)")), "{out}");
    assert_eq!(aws.instance_id(), mine);
    let out = aws.fails(&format!("sweep --terminate {mine}"));
    assert!(error_line(&out).contains("terminate_devinstance"), "{}", all(&out));

    let out = aws.fails(&format!("sweep --terminate {theirs} --all-users"));
    assert!(error_line(&out).contains("needs confirmation"), "{}", all(&out));
    assert_eq!(aws.describe(&theirs)["state"], "running");
    let out = aws.ok_with(&["--yes"], &format!("sweep --terminate {theirs} --all-users"));
    assert!(out.contains(&format!("instance {theirs} is")), "{out}");
    assert!(matches!(aws.describe(&theirs)["state"].as_str(), Some("terminated" | "shutting-down")));
    assert_eq!(aws.describe(&mine)["state"], "running", "the wrong instance was terminated");

    let out = aws.ok_with(&["--yes"], &format!("sweep --deregister {image}"));
    assert!(out.contains(&format!("image {image} deregistered")), "{out}");
    assert_eq!(aws_image_tags(&aws, &image), None, "the image is still registered");

    let out = aws.ok("sweep");
    assert!(row(&out, &mine).contains("tracked"), "{out}");
    assert!(!out.contains(&image) && !out.contains(&theirs), "{out}");
    aws.ok("terminate_devinstance --force");
}

#[test]
fn aws_resources_removed_behind_the_sessions_back_are_reported_and_forgotten() {
    let aws = Aws::new("vanish-test");
    aws.ok("launch_devinstance; create_devami vanish-image");
    let id = aws.instance_id();
    let image = aws.state()["images"][0]["id"].as_str().unwrap().to_string();
    aws.moto.py(&format!(
        "ec2.terminate_instances(InstanceIds=[{id:?}])\nec2.deregister_image(ImageId={image:?})"
    ));
    age_last_seen(&aws.state_path());

    let out = aws.ok("status");
    assert!(!out.contains("is gone"), "`status` reached the cloud:\n{out}");
    let out = aws.run("sweep");
    assert!(out.status.success(), "{}", aws.explain(&out));
    let warning = format!(
        "warning: instance {id} is gone (terminated outside this session); `sweep --forget` clears it"
    );
    assert!(text(&out.stderr).contains(&warning), "{}", all(&out));
    let stdout = text(&out.stdout);
    assert!(row(&stdout, &id).contains("tracked, vanished"), "{stdout}");
    assert!(row(&stdout, &image).contains("tracked, vanished"), "{stdout}");
    assert_eq!(aws.state()["instance"], id.as_str(), "`sweep` alone changed the state");

    let out = aws.ok("sweep --forget");
    assert!(out.contains(&format!("instance {id} (now `gone`)")), "{out}");
    let st = aws.state();
    assert!(st["instance"].is_null(), "{st:#}");
    assert_eq!(st["instances"][0]["last_state"], "gone", "{st:#}");
    assert_eq!(st["images"][0]["last_state"], "deregistered", "{st:#}");
    let out = aws.ok("sweep");
    assert!(!out.contains("warning") && !out.contains("vanished"), "{out}");
    assert!(out.contains("no instances or images tagged"), "{out}");
}
