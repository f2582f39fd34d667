//! What `/proc` says about a process: whether it still lives (a zombie does not), and when it
//! started, which with its pid names one process for good. Temporary files named after their
//! writer's pid, and job supervisors recorded by pid, are judged by it.

use std::fs;
use std::io;
use std::time::{Duration, SystemTime};

/// Leeway between a process's start time as computed from `/proc` (whole seconds of boot time)
/// and a file's modification time.
const START_LEEWAY: Duration = Duration::from_secs(2);

/// Whether process `pid` may still be writing a file it named after itself and that was last
/// modified at `modified`: the process exists (a zombie does not count) and started before that
/// moment. A process that started after the file's last change only reuses the pid of the writer,
/// which died. When the start time cannot be read (no `/proc`), a live pid counts as the writer.
pub fn may_still_write(pid: u32, modified: SystemTime) -> bool {
    let Ok(raw) = libc::pid_t::try_from(pid) else { return false };
    if raw <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let rc = unsafe { libc::kill(raw, 0) };
    if rc != 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EPERM) {
        return false;
    }
    match process_start(pid) {
        Some(Started::Zombie) => false,
        Some(Started::At(start)) => start <= modified + START_LEEWAY,
        None => true,
    }
}

enum Started {
    At(SystemTime),
    Zombie,
}

/// When process `pid` started (wall clock), from `/proc/<pid>/stat` and the boot time of
/// `/proc/stat`.
/// A live process's start time in clock ticks after boot (`/proc/<pid>/stat`); `None` when it
/// does not exist or is a zombie. With the pid, it names one process for good.
pub fn proc_start_ticks(pid: u32) -> Option<u64> {
    match proc_stat_start(pid)? {
        (false, ticks) => Some(ticks),
        (true, _) => None,
    }
}

/// `(zombie, start ticks)` of a process, from `/proc/<pid>/stat`.
fn proc_stat_start(pid: u32) -> Option<(bool, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold anything: the fields follow the last ')'.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    // fields[0] is field 3 (state); starttime is field 22, in clock ticks after boot.
    let zombie = matches!(fields.first(), Some(&"Z" | &"X"));
    Some((zombie, fields.get(19)?.parse().ok()?))
}

fn process_start(pid: u32) -> Option<Started> {
    let (zombie, ticks) = proc_stat_start(pid)?;
    if zombie {
        return Some(Started::Zombie);
    }
    let boot: u64 = fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())?;
    // SAFETY: sysconf only reads a system parameter.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).ok().filter(|h| *h > 0)?;
    let after_boot =
        Duration::from_secs(ticks / hz) + Duration::from_nanos((ticks % hz) * 1_000_000_000 / hz);
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(boot) + after_boot).map(Started::At)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_live_writer_that_started_before_the_change_may_still_write() {
        let now = SystemTime::now();
        // This process, for a file changed now: it may be writing it.
        assert!(may_still_write(std::process::id(), now));
        // A file last changed long before this process started: its writer was another process
        // that had this pid.
        assert!(!may_still_write(std::process::id(), SystemTime::UNIX_EPOCH + Duration::from_secs(1000)));
        // A process that ended and was reaped, and one that ended and was not (a zombie).
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        let gone_pid = gone.id();
        gone.wait().unwrap();
        assert!(!may_still_write(gone_pid, now));
        let mut zombie = std::process::Command::new("true").spawn().unwrap();
        let zombie_pid = zombie.id();
        let start = std::time::Instant::now();
        while fs::read_to_string(format!("/proc/{zombie_pid}/stat")).is_ok_and(|s| !s.contains(") Z")) {
            assert!(start.elapsed() < Duration::from_secs(10), "`true` did not end");
            std::thread::yield_now();
        }
        assert!(!may_still_write(zombie_pid, now));
        zombie.wait().unwrap();
        assert!(!may_still_write(0, now) && !may_still_write(u32::MAX, now));
    }
}
