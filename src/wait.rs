//! Waiting for the cloud: every wait of the session (instance running, stopped, terminated;
//! image available; job done) goes through [`poll`], so all backends get the same progress line,
//! deadlines, retries and Ctrl-C handling. Invariant: a wait that ends early (deadline, Ctrl-C,
//! error) never stops the operation it waited for, which stays running and tracked.

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
/// service asked to slow down (the backends sort their clouds' codes into these variants).
fn is_transient(e: &Error) -> bool {
    matches!(
        e,
        Error::Backend { source: BackendError::Unreachable { .. } | BackendError::Throttled { .. }, .. }
    )
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

/// Polls `probe` until it is done, the deadline passes or Ctrl-C is pressed (`Err(Interrupted)`
/// within 50 ms). The deadline is the one sized for the operation unless `DEVAMI_WAIT_MINUTES`
/// overrides it. The interval starts at 100 ms and grows to 1 s, so a change is noticed within a
/// second; transient failures (unreachable, throttled) are retried for [`TRANSIENT_GRACE`]. On a
/// terminal the status and the elapsed time are shown on one updating line of stderr (nothing in
/// scripts, so transcripts stay stable).
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

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(source: BackendError) -> Error {
        Error::Backend { op: "describing the instance", source }
    }

    #[test]
    fn unreachable_and_throttled_calls_are_transient_and_nothing_else() {
        let unreachable = BackendError::Unreachable { endpoint: "e".into(), message: "refused".into() };
        assert!(is_transient(&backend(unreachable)));
        let throttled = BackendError::Throttled { code: "RequestLimitExceeded".into(), message: "m".into() };
        assert!(is_transient(&backend(throttled)));
        assert!(!is_transient(&backend(BackendError::not_found("instance", "i-1"))));
        let other =
            BackendError::Service { code: Some("InsufficientInstanceCapacity".into()), message: "m".into() };
        assert!(!is_transient(&backend(other)));
        assert!(!is_transient(&Error::Interrupted));
    }
}
