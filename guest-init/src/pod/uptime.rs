//! The guest's uptime for the debug log: how long since the kernel started, as the kernel
//! counts it (`/proc/uptime`, 10 ms resolution), so a `--debug` run shows the kernel's boot
//! time (guest-init's first line) and each app's set-up time.

/// `/proc/uptime`'s first field as `1.23s`, or `?` when it cannot be read.
pub fn stamp() -> String {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|text| parse(&text))
        .unwrap_or_else(|| "?".to_string())
}

fn parse(text: &str) -> Option<String> {
    let seconds: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some(format!("{seconds:.2}s"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_field_in_seconds() {
        assert_eq!(parse("12.34 56.78\n").as_deref(), Some("12.34s"));
        assert_eq!(parse("").as_deref(), None);
        assert_eq!(parse("x 1").as_deref(), None);
    }
}
