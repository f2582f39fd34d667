//! Documentation cannot drift: every ```devami block in README.md and docs/, and every script in
//! examples/, is executed through the real binary and its output compared with the page.

use std::path::{Path, PathBuf};

use crate::moto::{Moto, clean_aws_env, venv_bin};
use crate::support::{Scratch, all, bin, root};

/// The first line of a page replayed against moto by [`the_aws_tutorial_runs_against_moto`]
/// instead of on the local backend.
const AWS_MARKER: &str = "<!-- devami-test: aws -->";

fn is_aws_page(page: &Path) -> bool {
    std::fs::read_to_string(page).is_ok_and(|t| t.starts_with(AWS_MARKER))
}

fn files_under(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, ext, out);
        } else if p.extension().is_some_and(|x| x == ext) {
            out.push(p);
        }
    }
}

/// Markdown pages that hold at least one devami block.
fn pages() -> Vec<PathBuf> {
    let mut md = vec![root().join("README.md")];
    files_under(&root().join("docs"), "md", &mut md);
    md.retain(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains("```devami")));
    md.sort();
    md
}

#[test]
fn every_markdown_transcript_runs_as_shown() {
    let pages = pages();
    assert!(pages.len() >= 2, "expected README.md and at least one tutorial, found {pages:?}");
    let mut failures = Vec::new();
    for page in pages.iter().filter(|p| !is_aws_page(p)) {
        let s = Scratch::new().with_blueprints();
        let out = s.run(&["run", "--check", &page.display().to_string()]);
        if !out.status.success() {
            failures.push(format!("{}:\n{}", page.display(), all(&out)));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The ```sh blocks of a page, in order, as one bash script that stops at the first failure.
fn sh_blocks(page: &str) -> String {
    let mut script = String::from("set -euo pipefail\n");
    let mut inside = false;
    for line in page.lines() {
        if inside && line.starts_with("```") {
            inside = false;
        } else if inside {
            script.push_str(line);
            script.push('\n');
        } else if line == "```sh" {
            inside = true;
        }
    }
    script
}

/// The AWS tutorial against moto: its ```sh blocks (the AWS CLI set-up) run with bash, then its
/// ```devami blocks are replayed with `--backend aws`, in a scratch copy of `blueprints/` whose
/// HOME receives the key pair's private key. A drifted line must fail the replay.
#[test]
fn the_aws_tutorial_runs_against_moto() {
    let page = root().join("docs/tutorials/aws.md");
    assert!(is_aws_page(&page), "{} lacks the marker {AWS_MARKER}", page.display());
    let text = std::fs::read_to_string(&page).unwrap();
    // The set-up attaches AmazonSSMManagedInstanceCore, which moto knows only when told to.
    let moto = Moto::start_with_env(&[("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")]);
    let s = Scratch::new().with_blueprints();
    let home = s.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let path = format!(
        "{}:{}:{}",
        bin().parent().unwrap().display(),
        venv_bin("aws").parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let env = |c: &mut std::process::Command| {
        clean_aws_env(c);
        c.envs(moto.env().into_iter().filter(|(k, _)| !k.starts_with("DEVAMI_")))
            .env("HOME", &home)
            .env("PATH", &path);
    };

    let script = sh_blocks(&text);
    assert!(script.contains("aws ec2 create-key-pair"), "no set-up blocks found:\n{script}");
    let mut sh = std::process::Command::new("bash");
    sh.arg("-c").arg(&script).current_dir(s.path());
    sh.env("DEVAMI_HOME", s.path().join(".devami-home"));
    env(&mut sh);
    let out = sh.output().expect("run bash");
    assert!(
        out.status.success(),
        "the set-up blocks failed:\n{script}\n{}\nmoto:\n{}",
        all(&out),
        moto.log()
    );
    let key = home.join(".ssh/devami-dev.pem");
    assert!(key.is_file(), "the set-up wrote no private key at {}", key.display());

    let page_arg = page.display().to_string();
    let mut run = s.cmd(&["run", "--backend", "aws", "--endpoint-url", &moto.url, "--check", &page_arg]);
    env(&mut run);
    let out = run.output().expect("run devami");
    assert!(out.status.success(), "{}:\n{}\nmoto:\n{}", page.display(), all(&out), moto.log());

    // The same replay with one wrong line fails (early, at the first block).
    let drifted = text.replacen("opened blueprint", "opened the blueprint", 1);
    assert_ne!(text, drifted, "the drift probe no longer applies to {}", page.display());
    let p = s.write("drifted.md", drifted);
    let p = p.display().to_string();
    let mut run = s.cmd(&["run", "--backend", "aws", "--endpoint-url", &moto.url, "--check", &p]);
    env(&mut run);
    let out = run.output().expect("run devami");
    assert_eq!(out.status.code(), Some(4), "{}", all(&out));
    assert!(all(&out).contains("- opened the blueprint"), "{}", all(&out));
}

#[test]
fn every_example_script_runs() {
    let mut scripts = Vec::new();
    files_under(&root().join("examples"), "devami", &mut scripts);
    assert!(!scripts.is_empty(), "no examples/*.devami");
    for script in scripts {
        let s = Scratch::new().with_blueprints();
        let out = s.run(&["run", "--check", &script.display().to_string()]);
        assert!(out.status.success(), "{}:\n{}", script.display(), all(&out));
    }
}

#[test]
fn a_drifted_page_fails() {
    let page = root().join("docs/tutorials/getting-started.md");
    let text = std::fs::read_to_string(&page).unwrap();
    let drifted = text.replacen("opened blueprint", "opened the blueprint", 1);
    assert_ne!(text, drifted, "the drift probe no longer applies to {}", page.display());
    let s = Scratch::new();
    let p = s.write("drifted.md", drifted);
    let out = s.run(&["run", "--check", &p.display().to_string()]);
    assert_eq!(out.status.code(), Some(4), "{}", all(&out));
    assert!(all(&out).contains("- opened the blueprint"), "{}", all(&out));
}

#[test]
fn command_reference_is_generated_from_the_table() {
    let out = Scratch::new().run(&["__reference"]);
    assert!(out.status.success(), "{}", all(&out));
    let generated = String::from_utf8(out.stdout).expect("the reference is UTF-8");
    let page = root().join("docs/commands.md");
    let current = std::fs::read_to_string(&page).unwrap_or_default();
    if current != generated {
        let line = current
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .map_or_else(|| current.lines().count().min(generated.lines().count()) + 1, |i| i + 1);
        panic!(
            "{} differs from the command table (first at line {line}); regenerate it with:\n  \
             cargo build && target/debug/devami __reference > docs/commands.md",
            page.display()
        );
    }
}

/// A tutorial replays wherever a user runs it: here in a folder that is itself a git checkout
/// (its `update_blueprint --init` then commits in that repository instead of making one).
#[test]
fn the_first_image_tutorial_replays_inside_a_git_checkout() {
    let s = Scratch::new().with_blueprints();
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.org"])
            .args(args)
            .current_dir(s.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", all(&out));
    };
    git(&["init", "-q", "."]);
    git(&["add", "-A"]);
    git(&["commit", "-qm", "a checkout holding the blueprints"]);
    let page = root().join("docs/tutorials/first-image.md");
    let out = s.run(&["run", "--check", &page.display().to_string()]);
    assert!(out.status.success(), "{}", all(&out));
    assert!(crate::support::text(&out.stdout).contains("git repository: the one at"), "{}", all(&out));
}
