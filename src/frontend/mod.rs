//! The front ends: how lines reach a session and how its answers reach the user. `shell` reads a
//! terminal with line editing, `script` runs files of commands, `tutorial` replays a tutorial step
//! by step, `record` writes a session down as a transcript, and `prose` renders the markdown
//! around tutorial steps for the terminal.

pub mod prose;
pub mod record;
pub mod script;
pub mod shell;
pub mod tutorial;
