//! Git commits of the blueprint file alone, the reproducibility record of `update_blueprint`; the
//! only module that knows git2.
//!
//! Invariants: only the blueprint's entry changes (other staged or modified files stay as they
//! were); a process killed at any point leaves a consistent repository (objects, then the index
//! entry, then the branch); a git lock file left behind refuses the commit before anything is
//! written, naming the file.

use std::path::{Path, PathBuf};

use git2::{ErrorCode, Oid, Repository, Signature};

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

fn git_err(action: &'static str, path: &Path, cause: git2::Error) -> Error {
    Error::Git { action, path: path.to_path_buf(), cause }
}

/// The refusal for a lock file of the repository that exists: its message says who may have left
/// it, how to remove it, and what became of the commit (`outcome`).
fn locked(lock: &Path, outcome: &'static str) -> Error {
    Error::GitLocked { lock: lock.to_path_buf(), outcome }
}

/// What became of a commit whose branch could not be moved.
const STAGED_ONLY: &str = "nothing was committed (the blueprint's new content is staged: \
                           `git status` shows it, and the next commit includes it)";

/// The lock file a git2 error names (`failed to lock file '…/index.lock' for writing`).
fn lock_in(e: &git2::Error) -> Option<PathBuf> {
    let message = e.message();
    let start = message.find('\'')? + 1;
    let end = start + message[start..].find('\'')?;
    Some(PathBuf::from(&message[start..end])).filter(|p| p.to_string_lossy().ends_with(".lock"))
}

impl Journal {
    /// The repository containing `file`; a clear error (with the `--init` hint) when none does.
    pub fn open(file: &Path) -> Result<Journal> {
        let abs = std::fs::canonicalize(file).map_err(|e| Error::io("read", file, e))?;
        let dir = abs.parent().unwrap_or(Path::new("/"));
        let repo =
            Repository::discover(dir).map_err(|_| Error::NotInRepository { dir: dir.to_path_buf() })?;
        Journal::with_repo(repo, &abs)
    }

    /// Creates a repository in `dir` and opens it for `file`.
    pub fn init(dir: &Path, file: &Path) -> Result<Journal> {
        let repo = Repository::init(dir).map_err(|e| git_err("create a repository", dir, e))?;
        let abs = std::fs::canonicalize(file).map_err(|e| Error::io("read", file, e))?;
        Journal::with_repo(repo, &abs)
    }

    fn with_repo(repo: Repository, abs: &Path) -> Result<Journal> {
        let workdir =
            repo.workdir().and_then(|w| std::fs::canonicalize(w).ok()).ok_or(Error::BareRepository)?;
        let rel = abs
            .strip_prefix(&workdir)
            .map_err(|_| Error::OutsideWorkTree { path: abs.to_path_buf() })?
            .to_path_buf();
        Ok(Journal { repo, rel })
    }

    /// The current HEAD commit, if any.
    /// The repository's work tree (the folder that holds `.git`).
    pub fn work_tree(&self) -> Option<&Path> {
        self.repo.workdir()
    }

    pub fn head(&self) -> Option<Oid> {
        self.repo.head().ok().and_then(|h| h.target())
    }

    /// Commits the blueprint file's current content with `message`, and nothing else: the tree is
    /// HEAD's with that one entry replaced, and the index entry is refreshed so `git status` stays
    /// clean for it (the original's `git add`/`git commit` took whatever else was staged). Returns
    /// `None` when the file is unchanged since HEAD (no empty commits). The committer comes from git
    /// configuration, else `devami <devami@localhost>`.
    ///
    /// The objects are written first (unreferenced until the end), then the index entry, then the
    /// branch: killed before the branch moves, the new content is only staged, never a branch
    /// ahead of an index that would stage the old content back. git's lock files carry no owner,
    /// so one a killed writer left refuses the commit before anything is written
    /// ([`Journal::check_unlocked`]).
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
        self.check_unlocked()?;
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
        // The real index first, for this one path only (so `git status` shows it clean once the
        // branch moves), then the branch: see the module's documentation for why in this order.
        let mut real = self.repo.index().map_err(|e| git_err("read the index", &wd, e))?;
        real.add_path(&self.rel).map_err(|e| git_err("update the index", &wd, e))?;
        real.write().map_err(|e| match e.code() {
            ErrorCode::Locked => self.locked_by(&e, "nothing was changed"),
            _ => git_err("write the index", &wd, e),
        })?;
        let oid =
            self.repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &parents).map_err(|e| {
                match e.code() {
                    ErrorCode::Locked => self.locked_by(&e, STAGED_ONLY),
                    _ => git_err("commit", &wd, e),
                }
            })?;
        Ok(Some(oid))
    }

    /// Refuses, changing nothing, when a lock file a commit would need exists (the index's, HEAD's
    /// or the branch's): see [`locked`].
    pub fn check_unlocked(&self) -> Result<()> {
        match self.lock_files().into_iter().find(|l| l.exists()) {
            Some(lock) => Err(locked(&lock, "nothing was changed")),
            None => Ok(()),
        }
    }

    /// The lock files a commit would take: the index's, HEAD's, and the branch HEAD names.
    fn lock_files(&self) -> Vec<PathBuf> {
        let mut locks = vec![self.index_lock(), self.repo.path().join("HEAD.lock")];
        if let Some(branch) =
            self.repo.find_reference("HEAD").ok().and_then(|r| r.symbolic_target().map(str::to_string))
        {
            locks.push(self.repo.commondir().join(format!("{branch}.lock")));
        }
        locks
    }

    fn index_lock(&self) -> PathBuf {
        self.repo.path().join("index.lock")
    }

    /// [`locked`] for a git2 error about a lock: the file it names, else the index's or the
    /// branch's that exists.
    fn locked_by(&self, e: &git2::Error, outcome: &'static str) -> Error {
        let lock = lock_in(e)
            .or_else(|| self.lock_files().into_iter().find(|l| l.exists()))
            .unwrap_or_else(|| self.index_lock());
        locked(&lock, outcome)
    }

    fn signature(&self) -> Result<Signature<'static>> {
        match self.repo.signature() {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => {
                Signature::now(FALLBACK_NAME, FALLBACK_EMAIL).map_err(|cause| Error::GitSignature { cause })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "stack_config_template.json";

    #[test]
    fn a_lock_file_left_behind_refuses_the_commit_and_changes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join(FILE);
        std::fs::write(&file, "{}\n").unwrap();
        let journal = Journal::init(tmp.path(), &file).unwrap();
        let first = journal.commit_file("first").unwrap().expect("a first commit");
        let branch = journal.repo.find_reference("HEAD").unwrap().symbolic_target().unwrap().to_string();
        std::fs::write(&file, "{\"AMI\": \"ami-1\"}\n").unwrap();
        let git = tmp.path().join(".git");
        let index_before = std::fs::read(git.join("index")).unwrap();
        for lock in ["index.lock".to_string(), "HEAD.lock".to_string(), format!("{branch}.lock")] {
            let lock = git.join(lock);
            std::fs::write(&lock, "").unwrap();
            let err = journal.commit_file("second").unwrap_err().to_string();
            assert!(err.contains(&format!("`{}` exists", lock.display())), "{err}");
            assert!(err.contains("nothing was changed") && err.contains("interrupted"), "{err}");
            assert!(err.contains(&format!("remove it (`rm {}`)", lock.display())), "{err}");
            assert!(journal.check_unlocked().is_err());
            assert_eq!(journal.head(), Some(first));
            assert_eq!(std::fs::read(git.join("index")).unwrap(), index_before);
            std::fs::remove_file(&lock).unwrap();
        }
        journal.check_unlocked().unwrap();
        let second = journal.commit_file("second").unwrap().expect("a second commit");
        assert_eq!(journal.head(), Some(second));
        let repo = Repository::open(tmp.path()).unwrap();
        assert_eq!(repo.status_file(Path::new(FILE)).unwrap(), git2::Status::CURRENT);
        // Nothing to commit: a lock does not matter.
        std::fs::write(git.join("index.lock"), "").unwrap();
        assert_eq!(journal.commit_file("third").unwrap(), None);
    }

    #[test]
    fn the_lock_a_git2_error_names_is_found() {
        let e = git2::Error::new(
            ErrorCode::Locked,
            git2::ErrorClass::Os,
            "failed to lock file '/x y/.git/refs/heads/master.lock' for writing",
        );
        assert_eq!(lock_in(&e), Some(PathBuf::from("/x y/.git/refs/heads/master.lock")));
        let e = git2::Error::new(ErrorCode::Locked, git2::ErrorClass::Os, "no path 'here'");
        assert_eq!(lock_in(&e), None);
        let text = locked(Path::new("/x y/.git/index.lock"), "nothing was changed").to_string();
        assert!(text.contains("(`rm '/x y/.git/index.lock'`)"), "{text}");
    }
}
