//! Git commits of the blueprint: the reproducibility record of `update_blueprint`.
//!
//! The original ran `git add` and `git commit` in the process's working directory and so
//! committed whatever else was staged. Here only the blueprint file is committed: the commit's
//! tree is HEAD's tree with that one entry replaced, other staged or modified files stay exactly
//! as they were, and the index entry of the blueprint is refreshed so `git status` stays clean
//! for it. Works when the blueprint sits in a subfolder of the repository. The committer comes
//! from git configuration (`user.name`, `user.email`); without one, `devami <devami@localhost>`.
//! This is the only module that knows git2.

use std::path::{Path, PathBuf};

use git2::{Oid, Repository, Signature};

use crate::error::{Error, Result};

/// A repository that holds a blueprint file.
pub struct Journal {
    repo: Repository,
    /// The blueprint's path relative to the repository's work tree.
    rel: PathBuf,
}

/// The committer used when git configuration has none.
pub const FALLBACK_NAME: &str = "devami";
/// The e-mail used when git configuration has none.
pub const FALLBACK_EMAIL: &str = "devami@localhost";

fn git_err(what: &str, path: &Path, e: git2::Error) -> Error {
    Error::Refused(format!("git: could not {what} in `{}`: {}", path.display(), e.message()))
}

impl Journal {
    /// The repository containing `file`; a clear error (with the `--init` hint) when none does.
    pub fn open(file: &Path) -> Result<Journal> {
        let abs = std::fs::canonicalize(file).map_err(|e| Error::io("read", file, e))?;
        let dir = abs.parent().unwrap_or(Path::new("/"));
        let repo = Repository::discover(dir).map_err(|_| {
            Error::Refused(format!(
                "`{}` is not inside a git repository, so the change cannot be recorded; run `git init` there (or `update_blueprint --init`)",
                dir.display()
            ))
        })?;
        Journal::with_repo(repo, &abs)
    }

    /// Creates a repository in `dir` and opens it for `file`.
    pub fn init(dir: &Path, file: &Path) -> Result<Journal> {
        let repo = Repository::init(dir).map_err(|e| git_err("create a repository", dir, e))?;
        let abs = std::fs::canonicalize(file).map_err(|e| Error::io("read", file, e))?;
        Journal::with_repo(repo, &abs)
    }

    fn with_repo(repo: Repository, abs: &Path) -> Result<Journal> {
        let workdir = repo
            .workdir()
            .and_then(|w| std::fs::canonicalize(w).ok())
            .ok_or_else(|| Error::Refused("git: the repository has no work tree (bare repository)".into()))?;
        let rel = abs
            .strip_prefix(&workdir)
            .map_err(|_| {
                Error::Refused(format!("`{}` is outside the repository's work tree", abs.display()))
            })?
            .to_path_buf();
        Ok(Journal { repo, rel })
    }

    /// The current HEAD commit, if any.
    pub fn head(&self) -> Option<Oid> {
        self.repo.head().ok().and_then(|h| h.target())
    }

    /// Commits the blueprint file's current content with `message`, and nothing else.
    /// Returns `None` when the file is unchanged since HEAD (no empty commits).
    pub fn commit_file(&self, message: &str) -> Result<Option<Oid>> {
        let wd = self.repo.workdir().unwrap_or(Path::new(".")).to_path_buf();
        let content =
            std::fs::read(wd.join(&self.rel)).map_err(|e| Error::io("read", wd.join(&self.rel), e))?;
        let blob = self.repo.blob(&content).map_err(|e| git_err("store the file", &wd, e))?;
        let head_commit = self.head().and_then(|oid| self.repo.find_commit(oid).ok());
        let mut index = git2::Index::new().map_err(|e| git_err("build a tree", &wd, e))?;
        if let Some(c) = &head_commit {
            let tree = c.tree().map_err(|e| git_err("read HEAD", &wd, e))?;
            if let Ok(entry) = tree.get_path(&self.rel)
                && entry.id() == blob
            {
                return Ok(None);
            }
            index.read_tree(&tree).map_err(|e| git_err("read HEAD", &wd, e))?;
        }
        let mode = std::fs::metadata(wd.join(&self.rel))
            .map(|m| {
                use std::os::unix::fs::PermissionsExt;
                if m.permissions().mode() & 0o111 != 0 { 0o100755 } else { 0o100644 }
            })
            .unwrap_or(0o100644);
        let entry = git2::IndexEntry {
            ctime: git2::IndexTime::new(0, 0),
            mtime: git2::IndexTime::new(0, 0),
            dev: 0,
            ino: 0,
            mode,
            uid: 0,
            gid: 0,
            file_size: content.len() as u32,
            id: blob,
            flags: 0,
            flags_extended: 0,
            path: self.rel.to_string_lossy().as_bytes().to_vec(),
        };
        index.add(&entry).map_err(|e| git_err("build a tree", &wd, e))?;
        let tree_id = index.write_tree_to(&self.repo).map_err(|e| git_err("write a tree", &wd, e))?;
        let tree = self.repo.find_tree(tree_id).map_err(|e| git_err("write a tree", &wd, e))?;
        let sig = self.signature()?;
        let parents: Vec<&git2::Commit> = head_commit.iter().collect();
        let oid = self
            .repo
            .commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)
            .map_err(|e| git_err("commit", &wd, e))?;
        // Refresh the real index for this one path only, so `git status` shows it clean.
        let mut real = self.repo.index().map_err(|e| git_err("read the index", &wd, e))?;
        real.add_path(&self.rel).map_err(|e| git_err("update the index", &wd, e))?;
        real.write().map_err(|e| git_err("write the index", &wd, e))?;
        Ok(Some(oid))
    }

    fn signature(&self) -> Result<Signature<'static>> {
        match self.repo.signature() {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Signature::now(FALLBACK_NAME, FALLBACK_EMAIL)
                .map_err(|e| Error::Refused(format!("git: cannot make a signature: {}", e.message()))),
        }
    }
}
