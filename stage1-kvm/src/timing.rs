//! `--debug`'s account of where a pod's start-up time went, in milliseconds since `rkt run`
//! started. Stage0 execs us in the same process, so the process's start time (from
//! /proc/self/stat) is the command's start: stage0 prints its own steps (fetch and render,
//! prepare, hand-over) against the same origin, and we add ours: VM set-up, guest boot up to
//! each app's start (its output streams connecting), the apps' run, and the teardown.

use std::fmt::Write as _;
use std::time::Instant;

/// Milliseconds since this process started (rkt's start: stage0 exec'd us), from the
/// process's start time in /proc/self/stat and the boot-time clock (10 ms resolution).
/// None if /proc cannot tell.
pub fn process_age_ms() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Field 22 (starttime, clock ticks after boot); the command name before it, in
    // parentheses, may hold spaces: count from the last ')'.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let start_ticks: f64 = after_name.split_whitespace().nth(19)?.parse().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let ticks_per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks_per_s <= 0 {
        return None;
    }
    Some(boot_clock_ms()? - start_ticks * 1000.0 / ticks_per_s as f64)
}

/// The boot-time clock in milliseconds: the origin that processes (the jailed VMM) share.
pub fn boot_clock_ms() -> Option<f64> {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec for the call to fill in.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut now) } != 0 {
        return None;
    }
    Some(now.tv_sec as f64 * 1000.0 + now.tv_nsec as f64 / 1e6)
}

/// When rkt started, on the boot-time clock: handed to the jailed VMM process, whose
/// [`mark_since`] lines then count from the same origin as the stage1's.
pub fn rkt_started_at() -> Option<f64> {
    Some(boot_clock_ms()? - process_age_ms()?)
}

/// Prints `what` as a `--debug` timing line of another process than rkt's (the jailed VMM),
/// in milliseconds since rkt started at `rkt_started` (from [`rkt_started_at`]).
pub fn mark_since(rkt_started: f64, what: &str) {
    if let Some(now) = boot_clock_ms() {
        eprintln!("stage1-kvm: timing: +{:.0} ms {what}", now - rkt_started);
    }
}

/// The marks of one run; prints them (with `--debug`) as they happen and a summary at the end.
pub struct Timeline {
    enabled: bool,
    /// Our start, and the process's age then (ms since rkt started).
    origin: Instant,
    origin_ms: f64,
    marks: Vec<(String, Instant)>,
}

impl Timeline {
    pub fn new(enabled: bool) -> Timeline {
        Timeline {
            enabled,
            origin: Instant::now(),
            origin_ms: process_age_ms().unwrap_or(0.0),
            marks: Vec::new(),
        }
    }

    /// Milliseconds since rkt started at `at`.
    fn ms(&self, at: Instant) -> f64 {
        self.origin_ms + at.saturating_duration_since(self.origin).as_secs_f64() * 1000.0
    }

    /// Records `what` as happening at `at`, printing it with `--debug`.
    pub fn mark_at(&mut self, what: impl Into<String>, at: Instant) {
        if !self.enabled {
            return;
        }
        let what = what.into();
        eprintln!("stage1-kvm: timing: +{:.0} ms {what}", self.ms(at));
        self.marks.push((what, at));
    }

    pub fn mark(&mut self, what: impl Into<String>) {
        self.mark_at(what, Instant::now());
    }

    /// The phases between the marks, as one line (empty without `--debug`).
    pub fn summary(&self) -> String {
        if !self.enabled {
            return String::new();
        }
        let mut line = format!(
            "stage1-kvm: timing summary: stage0 (fetch, render, prepare, hand-over) {:.0} ms",
            self.origin_ms
        );
        let mut previous = self.origin;
        for (what, at) in &self.marks {
            let took = at.saturating_duration_since(previous).as_secs_f64() * 1000.0;
            let _ = write!(line, "; {took:.0} ms to {what}");
            previous = *at;
        }
        let _ = write!(line, "; total {:.0} ms", self.ms(previous));
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_process_age_is_small_and_grows() {
        let first = process_age_ms().unwrap();
        assert!(first >= 0.0, "{first}");
        std::thread::sleep(Duration::from_millis(30));
        let second = process_age_ms().unwrap();
        assert!(second >= first + 20.0, "{first} {second}");
    }

    #[test]
    fn marks_become_phases_only_with_debug() {
        let mut quiet = Timeline::new(false);
        quiet.mark("VM started");
        assert_eq!(quiet.summary(), "");

        let mut timeline = Timeline::new(true);
        let start = timeline.origin;
        timeline.mark_at("start the VM", start + Duration::from_millis(40));
        timeline.mark_at("app web started", start + Duration::from_millis(1040));
        let summary = timeline.summary();
        assert!(
            summary.contains("; 40 ms to start the VM; 1000 ms to app web started"),
            "{summary}"
        );
        assert!(
            summary.contains("stage0 (fetch, render, prepare, hand-over)"),
            "{summary}"
        );
    }
}
