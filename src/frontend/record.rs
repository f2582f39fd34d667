//! Recording a session as a replayable transcript or tutorial skeleton: `devami --record FILE`.
//!
//! Every command the session runs, whether it succeeds or fails, is appended to FILE as a step:
//! `devami> CMD` and its output, with values that vary between runs replaced by the tokens that
//! match them ([`transcript::generalize`]), so `devami run --check FILE` replays it. A FILE
//! ending in `.md` becomes a tutorial skeleton with one ```` ```devami ```` block per session.
//! Each step is flushed as soon as its command ends, and the file is a valid transcript or
//! tutorial after every step. Commands that take ids typed from an earlier output replay only
//! where that id still exists: edit them into something stable before replaying.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::clock;
use crate::console::Console;
use crate::error::{Error, Result};
use crate::parse::{self, Line};
use crate::session::DevAmi;
use crate::transcript::{self, Kind};

/// The fence that closes a recorded markdown block.
const CLOSE_FENCE: &str = "```\n";

/// The placeholder paragraph of a tutorial skeleton.
const PLACEHOLDER: &str = "Recorded with `devami --record`. Replace this paragraph with what the tutorial is \
about, then split the block below into steps and write prose between them: text between \
```` ```devami ```` blocks is shown before the next step by `devami tutorial`.";

/// An open recording.
#[derive(Debug)]
pub struct Recorder {
    file: File,
    path: PathBuf,
    markdown: bool,
    /// Markdown: where the closing fence of the block being recorded starts.
    fence_at: Option<u64>,
}

impl Recorder {
    /// Opens FILE for recording: creates it with its header, atomically (written aside, then
    /// linked into place), or appends when it exists.
    pub fn open(path: &Path) -> Result<Recorder> {
        let markdown = transcript::kind_for_path(path) == Kind::Markdown;
        let io = |e| Error::io("record to", path, e);
        if !path.exists() {
            create_atomically(path, &header(markdown, &clock::format(clock::now())))?;
        }
        let mut file = OpenOptions::new().read(true).append(!markdown).write(true).open(path).map_err(io)?;
        let len = file.seek(SeekFrom::End(0)).map_err(io)?;
        if len > 0 && !ends_with_newline(&mut file, len).map_err(io)? {
            file.write_all(b"\n").map_err(io)?;
        }
        Ok(Recorder { file, path: path.to_path_buf(), markdown, fence_at: None })
    }

    /// The file being recorded to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one step (when [`records`] keeps it) and flushes it to disk. In markdown the
    /// block's closing fence is rewritten after each new step.
    pub fn record(&mut self, input: &str, output: &str) -> Result<()> {
        if !records(input) {
            return Ok(());
        }
        let step = render_step(input, output, self.markdown);
        let io = |e| Error::io("record to", &self.path, e);
        if !self.markdown {
            self.file.write_all(step.as_bytes()).map_err(io)?;
            return self.file.sync_data().map_err(io);
        }
        // Markdown: overwrite the closing fence with the step and a new closing fence, in one
        // write, so the page is a valid tutorial after every step.
        let (at, text) = match self.fence_at {
            Some(at) => (at, format!("{step}{CLOSE_FENCE}")),
            None => {
                let end = self.file.seek(SeekFrom::End(0)).map_err(io)?;
                let sep = if end > 0 { "\n" } else { "" };
                (end, format!("{sep}```devami\n{step}{CLOSE_FENCE}"))
            }
        };
        self.file.seek(SeekFrom::Start(at)).map_err(io)?;
        self.file.write_all(text.as_bytes()).map_err(io)?;
        self.file.sync_data().map_err(io)?;
        self.fence_at = Some(at + (text.len() - CLOSE_FENCE.len()) as u64);
        Ok(())
    }
}

/// The session's recording, if `--record` was given.
static RECORDING: Mutex<Option<Recorder>> = Mutex::new(None);

/// Starts recording this process's session to `path` (`--record`).
pub fn start(path: &Path) -> Result<()> {
    let rec = Recorder::open(path)?;
    *RECORDING.lock().unwrap_or_else(|e| e.into_inner()) = Some(rec);
    Ok(())
}

/// Records a step when recording; a write error is reported once and ends the recording.
/// `output` is what the command printed: the bytes the [`Console`] capture keeps for
/// `run --check`.
pub fn step(console: &mut Console, input: &str, output: &str) {
    let mut guard = RECORDING.lock().unwrap_or_else(|e| e.into_inner());
    let Some(rec) = guard.as_mut() else { return };
    if let Err(e) = rec.record(input, output) {
        *guard = None;
        drop(guard);
        console.warn(&format!("recording stopped: {e}"));
    }
}

/// Opens the blueprint in `dir` as a recorded `open DIR` step, so that the recording replays in
/// the same blueprint without `-d` (run it from the folder it was recorded in). Prints what
/// `open` prints.
pub fn open_recorded(session: &mut DevAmi, dir: &Path) -> Result<()> {
    let input = format!("open {}", crate::shellquote::when_needed(&dir.display().to_string()));
    session.console.begin_capture();
    let result = session.execute_line(&input);
    if let Ok(outcome) = &result {
        session.console.print(&outcome.output.render());
    }
    let output = session.console.end_capture();
    result?;
    step(&mut session.console, &input, &output);
    Ok(())
}

/// Whether a line is recorded: not blank, not a comment, not `help` and not `exit`. A line that
/// does not parse is recorded, with its error: it ran, and failed.
pub fn records(input: &str) -> bool {
    match parse::parse_line(input) {
        Ok(Line::Nothing | Line::Import | Line::Help(_)) => false,
        Ok(Line::Command(inv)) => inv.spec.name != "exit",
        Ok(Line::Bind { .. }) | Err(_) => !input.trim().is_empty(),
    }
}

/// The header of a new recording.
fn header(markdown: bool, now: &str) -> String {
    if markdown {
        format!("# Session recorded on {now} UTC\n\n{PLACEHOLDER}\n")
    } else {
        format!(
            "# Recorded by `devami --record` on {now} UTC.\n# Replay it with `devami run --check FILE`.\n"
        )
    }
}

/// One step as transcript text: the echoed input, then its output with varying values replaced by
/// wildcards. In markdown, an output line that would close the fence is written `[..]```...`
/// (which still matches it).
pub fn render_step(input: &str, output: &str, markdown: bool) -> String {
    let text = transcript::render_transcript(&[(input.to_string(), transcript::generalize(output))]);
    if !markdown {
        return text;
    }
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        if i > 0 && (t.starts_with("```") || t.starts_with("~~~")) {
            out.push_str("[..]");
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Creates `path` holding `text`, atomically and never over an existing file
/// ([`crate::atomic::create_new`]); a file that another process created first is left for appending.
fn create_atomically(path: &Path, text: &str) -> Result<()> {
    match crate::atomic::create_new(path, text.as_bytes()) {
        Err(e) if e.source.kind() != std::io::ErrorKind::AlreadyExists => Err(e.into()),
        _ => Ok(()),
    }
}

fn ends_with_newline(file: &mut File, len: u64) -> std::io::Result<bool> {
    use std::io::Read;
    file.seek(SeekFrom::Start(len - 1))?;
    let mut last = [0u8];
    file.read_exact(&mut last)?;
    file.seek(SeekFrom::End(0))?;
    Ok(last[0] == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transcript::check_output;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_string).collect()
    }

    #[test]
    fn records_commands_but_not_help_exit_blank_or_comments() {
        for yes in [
            "status",
            "launch_devinstance ubuntu18",
            "devami.get_ip()",
            "no_such_command",
            "d = NeuroCaaSAMI(\"x\")",
        ] {
            assert!(records(yes), "{yes}");
        }
        for no in
            ["", "   ", "# note", "help", "help status", "status --help", "exit", "quit", "devami.exit()"]
        {
            assert!(!records(no), "{no}");
        }
    }

    #[test]
    fn render_step_escapes_fences_only_in_markdown() {
        let out = "```\nok\n";
        assert_eq!(render_step("cat x", out, false), "devami> cat x\n```\nok\n");
        assert_eq!(render_step("cat x", out, true), "devami> cat x\n[..]```\nok\n");
        let expected = lines("[..]```\nok");
        assert_eq!(check_output(&expected, out), Ok(()));
    }

    #[test]
    fn script_recording_is_a_transcript_that_parses_and_appends() {
        let dir = std::env::temp_dir().join(format!("devami-record-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.devami");
        let _ = std::fs::remove_file(&path);
        let mut r = Recorder::open(&path).unwrap();
        r.record("status", "instance none\n").unwrap();
        r.record("help", "lots\n").unwrap();
        r.record("launch_devinstance", "Instance i-0123456789abcdef0 is running\n").unwrap();
        drop(r);
        let mut r = Recorder::open(&path).unwrap();
        r.record("get_ip", "error: no instance\n").unwrap();
        drop(r);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# Recorded by `devami --record` on "), "{text}");
        assert_eq!(text.matches("# Recorded").count(), 1, "{text}");
        let t = transcript::parse(&text, Kind::Script).unwrap();
        let steps: Vec<(&str, Vec<String>)> =
            t.steps.iter().map(|s| (s.input.as_str(), s.expected.clone().unwrap())).collect();
        assert_eq!(
            steps,
            vec![
                ("status", lines("instance none")),
                ("launch_devinstance", lines("Instance [ID] is running")),
                ("get_ip", lines("error: no instance")),
            ]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn markdown_recording_is_a_valid_tutorial_after_every_step() {
        let dir = std::env::temp_dir().join(format!("devami-record-md-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.md");
        let _ = std::fs::remove_file(&path);
        let mut r = Recorder::open(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# Session recorded on "), "{text}");
        assert!(transcript::parse(&text, Kind::Markdown).unwrap().steps.is_empty());
        r.record("status", "fine\n").unwrap();
        let t = transcript::parse(&std::fs::read_to_string(&path).unwrap(), Kind::Markdown).unwrap();
        assert_eq!(t.steps.len(), 1);
        assert!(t.steps[0].prose.contains("write prose between them"), "{:?}", t.steps[0].prose);
        r.record("get_ip", "```\n").unwrap();
        drop(r);
        // A second session appends a second block.
        let mut r = Recorder::open(&path).unwrap();
        r.record("status", "fine\n").unwrap();
        drop(r);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.matches("```devami\n").count(), 2, "{text}");
        assert!(text.ends_with("devami> status\nfine\n```\n"), "{text}");
        let t = transcript::parse(&text, Kind::Markdown).unwrap();
        let inputs: Vec<&str> = t.steps.iter().map(|s| s.input.as_str()).collect();
        assert_eq!(inputs, ["status", "get_ip", "status"]);
        assert_eq!(t.steps[1].expected, Some(lines("[..]```")));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
