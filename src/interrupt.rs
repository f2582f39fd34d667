//! Ctrl-C as a request to cancel the running command, never to end the shell.
//!
//! SIGINT only sets a flag ([`install`]); long operations poll [`check`] or use [`sleep`], which
//! return [`Error::Interrupted`](crate::Error::Interrupted) within 50 ms of the key press, and the
//! front ends [`clear`] it before each command. At the shell's prompt the terminal is in raw mode,
//! so Ctrl-C there is a key that rustyline reports itself.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Installs the SIGINT handler; calling it again puts it back after someone else took SIGINT
/// (rustyline does while its editor exists, so the shell calls this after each line read).
/// Hand-written because signal-hook registers its handler with the kernel once and cannot take
/// SIGINT back, and rustyline's `signal-hook` feature, which would leave SIGINT alone, stalls when
/// several keys arrive at once (it waits on the terminal while they sit in its buffer).
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
    fn sleep_is_cut_short_by_an_interrupt_and_sigint_only_sets_the_flag() {
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

        // A real SIGINT (in this same test: the flag is process-wide) only sets the flag.
        install();
        // SAFETY: raise only sends a signal to this thread; the handler installed above runs
        // before it returns.
        assert_eq!(unsafe { libc::raise(libc::SIGINT) }, 0);
        assert!(matches!(check(), Err(Error::Interrupted)));
        clear();
        assert!(check().is_ok());
    }
}
