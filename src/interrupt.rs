//! Ctrl-C as a request to cancel the running command, never to end the shell.
//!
//! [`install`] replaces the default SIGINT action with a handler that only sets a flag. Long
//! operations (waits, sleeps, transfers) poll [`check`] or use [`sleep`], which return
//! [`Error::Interrupted`](crate::Error::Interrupted) within 50 ms of the key press; the front end
//! clears the flag before each command. While rustyline reads a line the terminal is in raw mode,
//! so Ctrl-C there is a key press that rustyline reports itself.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Installs the SIGINT handler (idempotent).
pub fn install() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigint as *const () as usize;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGINT, &action, std::ptr::null_mut());
    }
}

/// Forgets an earlier Ctrl-C (called before each command).
pub fn clear() {
    INTERRUPTED.store(false, Ordering::SeqCst);
}

/// Whether Ctrl-C was pressed since the last [`clear`].
pub fn pending() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Marks the running command as interrupted (what the SIGINT handler does).
pub fn raise() {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// `Err(Interrupted)` when Ctrl-C was pressed.
pub fn check() -> Result<()> {
    if pending() { Err(Error::Interrupted) } else { Ok(()) }
}

/// Sleeps for `duration`, returning early with `Err(Interrupted)` on Ctrl-C.
pub fn sleep(duration: Duration) -> Result<()> {
    let deadline = Instant::now() + duration;
    loop {
        check()?;
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleep_is_cut_short_by_an_interrupt() {
        clear();
        let start = Instant::now();
        let t = std::thread::spawn(|| {
            std::thread::sleep(Duration::from_millis(100));
            raise();
        });
        assert!(matches!(sleep(Duration::from_secs(30)), Err(Error::Interrupted)));
        assert!(start.elapsed() < Duration::from_secs(5));
        t.join().unwrap();
        clear();
        assert!(sleep(Duration::from_millis(10)).is_ok());
    }
}
