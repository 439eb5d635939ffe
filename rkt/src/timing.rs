//! `rkt run --debug`: where stage0's part of the start-up time goes, as
//! `rkt: timing: +N ms STEP` lines, in milliseconds since the command started
//! (the process's start time). The kvm stage1, exec'd in this same process,
//! continues the account against the same origin (stage1-kvm/src/timing.rs)
//! with the VM set-up, guest boot, app start and teardown.

use crate::globals::GlobalOptions;

/// Milliseconds since this process started, from its start time in
/// /proc/self/stat and the boot-time clock (10 ms resolution). None if /proc
/// cannot tell. (stage1-kvm's timing module reads the same two clocks.)
fn process_age_ms() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Field 22 (starttime, in clock ticks after boot); the command name before
    // it, in parentheses, may hold spaces: count from the last ')'.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let start_ticks: f64 = after_name.split_whitespace().nth(19)?.parse().ok()?;
    let ticks_per_s = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|&t| t > 0)?;
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec for the call to fill in.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut now) } != 0 {
        return None;
    }
    let now_ms = now.tv_sec as f64 * 1000.0 + now.tv_nsec as f64 / 1e6;
    Some(now_ms - start_ticks * 1000.0 / ticks_per_s as f64)
}

/// With `--debug`, prints that `step` is done, with the time since the start.
pub fn mark(globals: &GlobalOptions, step: &str) {
    if globals.debug {
        match process_age_ms() {
            Some(ms) => eprintln!("rkt: timing: +{ms:.0} ms {step}"),
            None => eprintln!("rkt: timing: {step}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_age_is_small_and_grows() {
        let first = process_age_ms().unwrap();
        assert!(first >= 0.0, "{first}");
        std::thread::sleep(std::time::Duration::from_millis(30));
        assert!(process_age_ms().unwrap() >= first + 20.0);
    }
}
