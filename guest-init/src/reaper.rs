//! Waiting as PID 1 does: every process whose parent dies is re-parented to us, so while we wait
//! for the command we also reap those orphans; otherwise they would stay zombies for the life of
//! the VM. Only the command's own status is reported.
//!
//! We call waitpid(2) through libc rather than nix because nix turns a status it cannot map into
//! an error (a child killed by a real-time signal) after the kernel has already reaped the
//! child, which would lose the command's status.

use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::error::InitError;

/// How long leftover processes get between SIGTERM and SIGKILL when the command has ended.
pub const TERM_GRACE: Duration = Duration::from_millis(500);
/// How long we wait for SIGKILLed processes to disappear before powering off regardless
/// (a process stuck in uninterruptible sleep never does).
pub const KILL_GRACE: Duration = Duration::from_millis(500);
/// Poll interval while leftover processes are still shutting down. Only used when there are
/// leftovers, never on the path where the command was the last process.
const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// One terminated child, as waitpid(2) reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reaped {
    pub pid: Pid,
    pub raw_status: libc::c_int,
}

/// The one system call the reaper needs, behind a trait so the loops can be tested with a
/// scripted sequence of events.
pub trait Waiter {
    /// Reaps any one terminated child. With `block` false, returns `Ok(None)` when children
    /// exist but none has terminated yet. `Err(ECHILD)` means there are no children at all.
    fn wait_any(&mut self, block: bool) -> Result<Option<Reaped>, Errno>;
}

/// The real waitpid(-1).
pub struct SystemWaiter;

impl Waiter for SystemWaiter {
    fn wait_any(&mut self, block: bool) -> Result<Option<Reaped>, Errno> {
        let mut raw_status: libc::c_int = 0;
        let flags = if block { 0 } else { libc::WNOHANG };
        // SAFETY: waitpid only writes one c_int through the pointer, which points to a live
        // local variable.
        let pid = unsafe { libc::waitpid(-1, &mut raw_status, flags) };
        match pid {
            -1 => Err(Errno::last()),
            0 => Ok(None),
            pid => Ok(Some(Reaped {
                pid: Pid::from_raw(pid),
                raw_status,
            })),
        }
    }
}

/// The status reported for a terminated process: its exit code, or 128 + the signal that
/// killed it (as shells report it). `None` for stopped/continued notifications, which are not
/// terminations.
pub fn exit_code(raw_status: libc::c_int) -> Option<u8> {
    if libc::WIFEXITED(raw_status) {
        // WEXITSTATUS is the low 8 bits of the exit code, so it always fits.
        u8::try_from(libc::WEXITSTATUS(raw_status)).ok()
    } else if libc::WIFSIGNALED(raw_status) {
        u8::try_from(128 + libc::WTERMSIG(raw_status)).ok()
    } else {
        None
    }
}

/// Waits until `command` terminates, reaping any other child that terminates meanwhile.
pub fn wait_for(command: Pid, waiter: &mut impl Waiter) -> Result<u8, InitError> {
    loop {
        match waiter.wait_any(true) {
            Ok(Some(reaped)) if reaped.pid == command => {
                if let Some(code) = exit_code(reaped.raw_status) {
                    return Ok(code);
                }
            }
            // An adopted orphan, now reaped; keep waiting for the command.
            Ok(_) | Err(Errno::EINTR) => {}
            Err(errno) => return Err(InitError::Wait(errno)),
        }
    }
}

/// Ends every process left once the command is done (daemons it started, orphans): SIGTERM,
/// a short grace, then SIGKILL. `send_to_all` signals every process but ourselves (kill(-1)).
///
/// Returns true when no process is left. When the command was the last process this returns at
/// once: the first non-blocking wait already reports that there are no children.
pub fn terminate_all(
    waiter: &mut impl Waiter,
    mut send_to_all: impl FnMut(Signal) -> Result<(), Errno>,
    term_grace: Duration,
    kill_grace: Duration,
) -> bool {
    // ESRCH (nobody to signal) and other errors only mean there is less to wait for; the wait
    // below finds out what is really left.
    let _ = send_to_all(Signal::SIGTERM);
    if reap_until_none_left(waiter, Instant::now() + term_grace) {
        return true;
    }
    let _ = send_to_all(Signal::SIGKILL);
    reap_until_none_left(waiter, Instant::now() + kill_grace)
}

/// Our children as `pid comm state` items (from `/proc/<pid>/stat`), for the console line
/// when some of them outlived the SIGTERM grace at the pod's end.
pub fn describe_children() -> String {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return "?".to_string();
    };
    let mut children: Vec<String> = entries
        .flatten()
        .filter_map(|entry| {
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let (pid, comm, state, ppid) = parse_stat(&stat)?;
            // An app names its own processes: no control characters reach the console (and,
            // with --debug, the user's terminal).
            let comm: String = comm
                .chars()
                .map(|c| if c.is_control() { '?' } else { c })
                .collect();
            (ppid == me).then(|| format!("{pid} {comm} {state}"))
        })
        .collect();
    children.sort();
    if children.is_empty() {
        "none".to_string()
    } else {
        children.join(", ")
    }
}

/// (pid, comm, state, ppid) of a `/proc/<pid>/stat` line; comm may hold spaces and
/// parentheses, so it ends at the last `)`.
fn parse_stat(stat: &str) -> Option<(u32, &str, &str, u32)> {
    let open = stat.find(" (")?;
    let close = stat.rfind(')')?;
    let pid = stat.get(..open)?.parse().ok()?;
    let comm = stat.get(open + 2..close)?;
    let mut rest = stat.get(close + 1..)?.split_whitespace();
    let state = rest.next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((pid, comm, state, ppid))
}

/// Reaps without blocking until there are no children (true) or the deadline passes (false).
fn reap_until_none_left(waiter: &mut impl Waiter, deadline: Instant) -> bool {
    loop {
        match waiter.wait_any(false) {
            Err(Errno::ECHILD) => return true,
            Ok(Some(_)) | Err(Errno::EINTR) => {}
            Ok(None) => {
                if Instant::now() >= deadline {
                    return false;
                }
                thread::sleep(POLL_INTERVAL);
            }
            Err(_) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// Encodes a status the way the kernel does (see wait(2)): exit code in bits 8..16,
    /// terminating signal in the low 7 bits.
    fn exited(code: i32) -> libc::c_int {
        code << 8
    }
    fn killed_by(signal: i32) -> libc::c_int {
        signal
    }
    fn stopped_by(signal: i32) -> libc::c_int {
        (signal << 8) | 0x7f
    }

    struct Scripted {
        events: VecDeque<Result<Option<Reaped>, Errno>>,
        /// What to answer once the script has run out.
        then: Result<Option<Reaped>, Errno>,
        calls: usize,
    }

    impl Scripted {
        fn new(events: Vec<Result<Option<Reaped>, Errno>>) -> Scripted {
            Scripted {
                events: events.into(),
                then: Err(Errno::ECHILD),
                calls: 0,
            }
        }
    }

    impl Waiter for Scripted {
        fn wait_any(&mut self, _block: bool) -> Result<Option<Reaped>, Errno> {
            self.calls += 1;
            self.events.pop_front().unwrap_or(self.then)
        }
    }

    fn reaped(pid: i32, raw_status: libc::c_int) -> Result<Option<Reaped>, Errno> {
        Ok(Some(Reaped {
            pid: Pid::from_raw(pid),
            raw_status,
        }))
    }

    #[test]
    fn encodes_exit_codes_and_signals() {
        assert_eq!(exit_code(exited(0)), Some(0));
        assert_eq!(exit_code(exited(42)), Some(42));
        assert_eq!(exit_code(exited(255)), Some(255));
        assert_eq!(exit_code(killed_by(libc::SIGKILL)), Some(137));
        assert_eq!(exit_code(killed_by(libc::SIGTERM)), Some(143));
        // Real-time signals, which nix's Signal enum cannot represent.
        assert_eq!(exit_code(killed_by(libc::SIGRTMAX())), Some(128 + 64));
        // A core dump sets bit 7; the status is still 128 + signal.
        assert_eq!(exit_code(killed_by(libc::SIGSEGV) | 0x80), Some(139));
        assert_eq!(exit_code(stopped_by(libc::SIGSTOP)), None);
        assert_eq!(exit_code(0xffff), None);
    }

    #[test]
    fn reaps_orphans_until_the_command_ends() {
        let mut waiter = Scripted::new(vec![
            reaped(7, exited(1)),
            Err(Errno::EINTR),
            reaped(8, killed_by(libc::SIGKILL)),
            reaped(5, exited(3)),
            reaped(9, exited(0)),
        ]);
        let status = wait_for(Pid::from_raw(5), &mut waiter).ok();
        assert_eq!(status, Some(3));
        // The command's status ends the wait; later events are left for the shutdown.
        assert_eq!(waiter.calls, 4);
    }

    #[test]
    fn command_stop_notification_is_not_its_end() {
        let mut waiter = Scripted::new(vec![
            reaped(5, stopped_by(libc::SIGSTOP)),
            reaped(5, killed_by(libc::SIGTERM)),
        ]);
        assert_eq!(wait_for(Pid::from_raw(5), &mut waiter).ok(), Some(143));
    }

    #[test]
    fn command_lost_is_an_error_not_a_hang() {
        let mut waiter = Scripted::new(vec![reaped(7, exited(0))]);
        let result = wait_for(Pid::from_raw(5), &mut waiter);
        assert!(matches!(result, Err(InitError::Wait(Errno::ECHILD))));
    }

    #[test]
    fn stat_lines_give_pid_comm_state_and_parent() {
        assert_eq!(
            parse_stat("31 (busybox) S 1 31 31 0 -1"),
            Some((31, "busybox", "S", 1))
        );
        assert_eq!(
            parse_stat("7 (a (b) c) Z 27 7"),
            Some((7, "a (b) c", "Z", 27))
        );
        assert_eq!(parse_stat("garbage"), None);
        assert!(!describe_children().is_empty());
    }

    #[test]
    fn terminate_all_returns_at_once_when_nothing_is_left() {
        let mut waiter = Scripted::new(vec![]);
        let mut sent = Vec::new();
        let started = Instant::now();
        let clean = terminate_all(
            &mut waiter,
            |signal| {
                sent.push(signal);
                Ok(())
            },
            Duration::from_secs(10),
            Duration::from_secs(10),
        );
        assert!(clean);
        assert_eq!(sent, vec![Signal::SIGTERM]);
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn terminate_all_reaps_processes_that_obey_sigterm() {
        let mut waiter = Scripted::new(vec![Ok(None), reaped(10, killed_by(15)), Ok(None)]);
        let mut sent = Vec::new();
        let clean = terminate_all(
            &mut waiter,
            |signal| {
                sent.push(signal);
                Ok(())
            },
            Duration::from_secs(10),
            Duration::from_secs(10),
        );
        assert!(clean);
        assert_eq!(sent, vec![Signal::SIGTERM]);
    }

    #[test]
    fn terminate_all_escalates_to_sigkill_then_gives_up() {
        let mut waiter = Scripted::new(vec![]);
        waiter.then = Ok(None); // a process that never dies
        let mut sent = Vec::new();
        let clean = terminate_all(
            &mut waiter,
            |signal| {
                sent.push(signal);
                Err(Errno::EPERM)
            },
            Duration::from_millis(20),
            Duration::from_millis(20),
        );
        assert!(!clean);
        assert_eq!(sent, vec![Signal::SIGTERM, Signal::SIGKILL]);
    }
}
