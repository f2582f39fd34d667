//! devami, the NeuroCAAS developer shell.
//!
//! A session holds one [`session::DevAmi`] bound to one blueprint folder and offers the whole
//! development loop as commands. See `docs/ARCHITECTURE.md` for the code map and invariants.

pub mod backend;
pub mod blueprint;
pub mod command;
pub mod error;
pub mod jsonspan;
pub mod lint;
pub mod output;
pub mod parse;
pub mod prose;
pub mod scaffold;
pub mod transcript;

pub use error::{Error, Result};
