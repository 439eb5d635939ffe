//! Busybox applet names, asked from the busybox binary itself.

use std::path::Path;
use std::process::Command;

use crate::error::InitramfsError;

/// Runs `busybox --list` on the host copy and returns the applet names it supports. The host
/// copy is the very file that goes into the archive, so it must run here (same architecture);
/// Debian's busybox-static does.
pub fn applets(busybox: &Path) -> Result<Vec<String>, InitramfsError> {
    let failed = |reason: String| InitramfsError::BusyboxList {
        path: busybox.to_path_buf(),
        reason,
    };
    let output = Command::new(busybox)
        .arg("--list")
        .output()
        .map_err(|error| failed(error.to_string()))?;
    if !output.status.success() {
        return Err(failed(format!("it exited with {}", output.status)));
    }
    let list =
        String::from_utf8(output.stdout).map_err(|_| failed("its output is not UTF-8".into()))?;
    parse_applet_list(&list).map_err(failed)
}

/// One applet name per line. Names are used as file names, so anything that is not a plain
/// file name is refused rather than trusted.
fn parse_applet_list(list: &str) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    for name in list.lines().map(str::trim).filter(|name| !name.is_empty()) {
        if name.contains('/') || name == "." || name == ".." {
            return Err(format!(
                "it listed `{name}`, which is not a plain applet name"
            ));
        }
        names.push(name.to_string());
    }
    if names.is_empty() {
        return Err("it listed no applets".into());
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_one_name_per_line() {
        let names = parse_applet_list("[\n[[\nsh\n\necho\n").ok();
        assert_eq!(
            names,
            Some(vec![
                "[".to_string(),
                "[[".into(),
                "sh".into(),
                "echo".into()
            ])
        );
    }

    #[test]
    fn refuses_paths_and_empty_lists() {
        assert!(parse_applet_list("sh\n../../etc/passwd\n").is_err());
        assert!(parse_applet_list("..\n").is_err());
        assert!(parse_applet_list("\n\n").is_err());
    }

    #[test]
    fn a_file_that_is_not_busybox_is_a_clear_error() {
        let error = applets(Path::new("/bin/false"))
            .err()
            .map(|e| e.to_string());
        let message = error.unwrap_or_default();
        assert!(message.contains("/bin/false --list"), "{message}");
    }
}
