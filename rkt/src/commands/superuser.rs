//! Commands that need root (as rkt's `ensureSuperuser`): `run`, `prepare`, `run-prepared`,
//! `gc`, `rm`. Checked first, so that an ordinary user gets one plain line instead of a
//! permission error from somewhere inside (the store, a mount, the pod lock).

use crate::error::RktError;

/// Refuses `command` unless we run as root (effective UID 0).
pub fn ensure_superuser(command: &str) -> Result<(), RktError> {
    if nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    Err(not_root(command))
}

fn not_root(command: &str) -> RktError {
    RktError::Message(format!(
        "rkt {command} must run as root (it creates pods, mounts their file systems and \
         starts VMs): run it again as root, e.g. with sudo"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_names_the_command_and_the_fix() {
        let message = not_root("run").to_string();
        assert!(message.starts_with("rkt run must run as root"), "{message}");
        assert!(message.contains("sudo"), "{message}");
        // The tests run as root: the check passes.
        if nix::unistd::geteuid().is_root() {
            assert!(ensure_superuser("gc").is_ok());
        }
    }
}
