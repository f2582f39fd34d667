//! The one integration-test binary: drives the real `devami` executable.
//!
//! Modules: `cli` (modes, exit codes, bad input), `docs` (every transcript in README.md, docs/ and
//! examples/ executed), `pty` (a pseudo-terminal typing into the real shell), `lock` (two shells
//! on one blueprint).

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
