//! Waiting for the cloud: polling with a short adaptive interval, progress, deadlines and Ctrl-C.
//!
//! Every wait of the session (instance running, stopped, terminated; image available; job done)
//! goes through [`poll`]: it asks a probe for the current status, shows the status and the elapsed
//! time on one updating line when stderr is a terminal (nothing in scripts, so transcripts stay
//! stable), notices a change within a second (the interval starts at 100 ms and grows to 1 s),
//! keeps polling through transient failures (endpoint unreachable, throttling) for
//! `TRANSIENT_GRACE`, gives up only at a deadline sized by the caller, and returns
//! `Err(Interrupted)` within 50 ms of
//! Ctrl-C — leaving the operation itself running and tracked.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use crate::backend::BackendError;
use crate::clock;
use crate::error::{Error, Result};
use crate::interrupt;

/// What a probe found.
pub enum Probe<T> {
    /// The wait is over.
    Done(T),
    /// Still waiting; the text is the current status (e.g. `pending`).
    Pending(String),
}

/// How long a wait keeps polling through transient failures before it reports them.
pub const TRANSIENT_GRACE: Duration = Duration::from_secs(20);

/// Whether an error is worth retrying within a wait: the endpoint could not be reached, or the
/// service asked to slow down.
fn is_transient(e: &Error) -> bool {
    match e {
        Error::Backend { source: BackendError::Unreachable { .. }, .. } => true,
        Error::Backend { source: BackendError::Service { code: Some(c), .. }, .. } => {
            matches!(
                c.as_str(),
                "RequestLimitExceeded"
                    | "Throttling"
                    | "ThrottlingException"
                    | "ServiceUnavailable"
                    | "InternalError"
            )
        }
        _ => false,
    }
}

/// The deadline to use: `DEVAMI_WAIT_MINUTES` when set, else the one sized for the operation.
pub fn deadline_for(sized: Duration) -> Duration {
    std::env::var("DEVAMI_WAIT_MINUTES")
        .ok()
        .and_then(|m| m.trim().parse::<f64>().ok())
        .filter(|m| m.is_finite() && *m > 0.0)
        .map(|m| Duration::from_secs_f64(m * 60.0))
        .unwrap_or(sized)
}

/// Polls `probe` until it is done, the deadline passes or Ctrl-C is pressed. The deadline is the
/// one sized for the operation unless `DEVAMI_WAIT_MINUTES` overrides it.
pub fn poll<T>(what: &str, deadline: Duration, mut probe: impl FnMut() -> Result<Probe<T>>) -> Result<T> {
    let deadline = deadline_for(deadline);
    let start = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let mut interval = Duration::from_millis(100);
    let mut shown = false;
    let mut failing_since: Option<Instant> = None;
    let result = loop {
        let probed = probe();
        if probed.is_ok() {
            failing_since = None;
        }
        match probed {
            Ok(Probe::Done(v)) => break Ok(v),
            // A blip (endpoint unreachable, throttling) does not end the wait for an operation the
            // cloud is still carrying out: keep polling for a while, then give up with the error.
            Err(e)
                if is_transient(&e)
                    && failing_since.get_or_insert_with(Instant::now).elapsed() < TRANSIENT_GRACE =>
            {
                if tty {
                    let line = format!("\r\x1b[2Kwaiting for {what}: cannot reach the cloud, retrying ({e})");
                    let _ = std::io::stderr().write_all(line.as_bytes());
                    shown = true;
                }
            }
            Ok(Probe::Pending(status)) => {
                let elapsed = start.elapsed();
                if tty {
                    let line = format!(
                        "\r\x1b[2Kwaiting for {what}: {status} ({})",
                        clock::human_duration(elapsed.as_secs() as i64)
                    );
                    let mut err = std::io::stderr().lock();
                    let _ = err.write_all(line.as_bytes());
                    let _ = err.flush();
                    shown = true;
                }
                if elapsed >= deadline {
                    break Err(Error::WaitTimedOut { what: what.to_string(), waited: elapsed, status });
                }
            }
            Err(e) => break Err(e),
        }
        if let Err(e) = interrupt::sleep(interval) {
            break Err(e);
        }
        interval = (interval * 3 / 2).min(Duration::from_secs(1));
    };
    if shown {
        let _ = std::io::stderr().write_all(b"\r\x1b[2K");
    }
    result
}
