//! The guest's uptime for the debug log: how long since the kernel started (CLOCK_BOOTTIME, the
//! clock behind `/proc/uptime`), to the millisecond, so a `--debug` run shows the kernel's boot
//! time (guest-init's first line) and each step of an app's set-up, most of which take 1-30 ms
//! (`/proc/uptime` counts in 10 ms steps, too coarse to tell them apart).

/// The time since boot as `1.234s`, or `?` when the clock cannot be read.
pub fn stamp() -> String {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|now| format_stamp(now.tv_sec(), now.tv_nsec()))
        .unwrap_or_else(|_| "?".to_string())
}

fn format_stamp(seconds: i64, nanoseconds: i64) -> String {
    format!("{seconds}.{:03}s", nanoseconds / 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_to_the_millisecond() {
        assert_eq!(format_stamp(12, 345_678_901), "12.345s");
        assert_eq!(format_stamp(0, 5_000_000), "0.005s");
        assert_eq!(format_stamp(3, 0), "3.000s");
        assert!(stamp().ends_with('s'));
    }
}
