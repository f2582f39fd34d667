//! devami, the NeuroCAAS developer shell.
//!
//! A session holds one [`session::DevAmi`] bound to one blueprint folder and offers the whole
//! development loop as commands, typed at a prompt (`shell`), run from files (`script`) or
//! replayed from tutorials (`tutorial`). See `docs/ARCHITECTURE.md` for the code map and the
//! invariants the modules keep.

pub mod atomic;
pub mod backend;
pub mod blueprint;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod console;
pub mod error;
pub mod frontend;
pub mod interrupt;
pub mod journal;
pub mod output;
pub mod parse;
pub mod pricing;
pub mod process;
pub mod regular;
pub mod session;
pub mod shellquote;
pub mod state;
pub mod transcript;
pub mod wait;

pub use error::{Error, Result};
pub use session::DevAmi;
