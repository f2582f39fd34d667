//! Documentation cannot drift: every ```devami block in README.md and docs/, and every script in
//! examples/, is executed through the real binary and its output compared with the page.

use std::path::{Path, PathBuf};

use crate::support::{Scratch, all, root};

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
    for page in &pages {
        let s = Scratch::new().with_blueprints();
        let out = s.run(&["run", "--check", &page.display().to_string()]);
        if !out.status.success() {
            failures.push(format!("{}:\n{}", page.display(), all(&out)));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
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
