//! The one integration-test binary: drives the real `devami` executable (run it through
//! `bash tests/run.sh`, which starts the container engine and imports the base image).
//!
//! Modules: `cli` (modes, exit codes, bad input), `docs` (every transcript in README.md, docs/ and
//! examples/ executed), `pty` (a pseudo-terminal typing into the real shell), `lock` (two shells
//! on one blueprint), `local` (the local backend's containers, images, jobs and engine), `jobs`
//! (jobs on both backends), `transfer` (uploads and downloads), `sweep` (orphans), `blueprint_git`
//! (update_blueprint's commits, lifetimes, costs), `record` (`--record`), `aws` and `moto` (the
//! AWS backend against moto), and the hardening suites `faults`, `crash`, `hostile`, `fuzz` and
//! `security`; `support` holds what they share.

mod aws;
mod blueprint_git;
mod cli;
mod crash;
mod docs;
mod faults;
mod fuzz;
mod hostile;
mod jobs;
mod local;
mod lock;
mod moto;
mod pty;
mod record;
mod security;
mod support;
mod sweep;
mod transfer;
