//! devami, the NeuroCAAS developer shell.
//!
//! A session holds one [`session::DevAmi`] bound to one blueprint folder and offers the whole
//! development loop as commands, typed at a prompt (`shell`), run from files (`script`) or
//! replayed from tutorials (`tutorial`). See `docs/ARCHITECTURE.md` for the code map and the
//! invariants the modules keep.

pub mod aws;
pub mod backend;
pub mod blueprint;
pub mod cli;
pub mod clock;
pub mod command;
pub mod console;
pub mod data_cmds;
pub mod error;
pub mod faults;
pub mod image_cmds;
pub mod instance_cmds;
pub mod interrupt;
pub mod job_cmds;
pub mod journal;
pub mod jsonspan;
pub mod lint;
pub mod objstore;
pub mod output;
pub mod parse;
pub mod pricing;
pub mod prose;
pub mod record;
pub mod scaffold;
pub mod script;
pub mod session;
pub mod shell;
pub mod state;
pub mod submit;
pub mod sweep_cmds;
pub mod transcript;
pub mod tutorial;
pub mod wait;

pub use error::{Error, Result};
pub use session::DevAmi;
