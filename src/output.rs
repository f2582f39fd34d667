//! What commands return and how it is rendered.
//!
//! Commands return an [`Output`] value; the front ends (shell, script runner, tutorial player)
//! render it. This is the only module that knows comfy-table. Tables are drawn at a fixed width
//! with no colour when stdout is not a terminal, so transcripts of a session are stable and can be
//! compared line by line.

use std::io::IsTerminal;
use std::sync::OnceLock;

use comfy_table::{ContentArrangement, Table, presets};

/// The result of a command, rendered by the front end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Nothing to show.
    Empty,
    /// Lines of text (a trailing newline is added when rendering).
    Text(String),
    /// A table: header and rows of cells.
    Table { header: Vec<String>, rows: Vec<Vec<String>> },
    /// Several outputs shown one after the other.
    Many(Vec<Output>),
}

impl Output {
    /// A text output.
    pub fn text(s: impl Into<String>) -> Output {
        Output::Text(s.into())
    }

    /// A table output from string-like cells.
    pub fn table<H: ToString>(header: &[H], rows: Vec<Vec<String>>) -> Output {
        Output::Table { header: header.iter().map(|h| h.to_string()).collect(), rows }
    }

    /// The rendered text, ending with a newline unless empty.
    pub fn render(&self) -> String {
        let mut s = String::new();
        self.render_into(&mut s);
        s
    }

    fn render_into(&self, s: &mut String) {
        match self {
            Output::Empty => {}
            Output::Text(t) => {
                s.push_str(t);
                if !t.is_empty() && !t.ends_with('\n') {
                    s.push('\n');
                }
            }
            Output::Table { header, rows } => {
                s.push_str(&table(header, rows));
                s.push('\n');
            }
            Output::Many(parts) => parts.iter().for_each(|p| p.render_into(s)),
        }
    }
}

/// Whether stdout is a terminal (decided once per process).
pub fn stdout_is_terminal() -> bool {
    static TTY: OnceLock<bool> = OnceLock::new();
    *TTY.get_or_init(|| std::io::stdout().is_terminal())
}

/// The width of the terminal on stdout, if it is one.
pub fn terminal_width() -> Option<u16> {
    // SAFETY: TIOCGWINSZ fills a plain C struct; a failure leaves it zeroed and returns -1.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_col > 0).then_some(ws.ws_col)
}

/// Renders a table: dynamic width on a terminal, unwrapped and stable otherwise.
pub fn table<H: AsRef<str>, C: AsRef<str>>(header: &[H], rows: &[Vec<C>]) -> String {
    let mut t = Table::new();
    t.load_preset(presets::UTF8_FULL_CONDENSED);
    match terminal_width() {
        Some(width) if stdout_is_terminal() => {
            t.set_content_arrangement(ContentArrangement::Dynamic);
            t.set_width(width);
        }
        _ => {
            t.set_content_arrangement(ContentArrangement::Disabled);
        }
    }
    t.set_header(header.iter().map(|h| h.as_ref()));
    for row in rows {
        t.add_row(row.iter().map(|c| c.as_ref()));
    }
    t.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_gets_one_trailing_newline() {
        assert_eq!(Output::text("a").render(), "a\n");
        assert_eq!(Output::text("a\n").render(), "a\n");
        assert_eq!(Output::Empty.render(), "");
    }

    #[test]
    fn table_contains_cells() {
        let out = Output::table(&["name", "state"], vec![vec!["i-1".into(), "running".into()]]).render();
        assert!(out.contains("name") && out.contains("i-1") && out.contains("running"), "{out}");
    }
}
