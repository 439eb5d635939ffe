//! The exit status file on the share: the host reads it after the VM has ended, so it must be
//! either absent or complete, whatever moment the VM stops at.
//!
//! The directory is opened while the share is set up, before the command runs: a missing
//! directory is then a set-up failure reported at once rather than after a long command, and
//! the open directory stays usable after guest-init has chrooted into a root that may not
//! contain it.

use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use super::request::{SharePath, PARAM_STATUS};
use super::ShareError;

#[derive(Debug)]
pub struct StatusFile {
    directory: File,
    name: OsString,
    /// `rkt.status=...` as given, for messages.
    param_value: String,
}

impl StatusFile {
    /// Opens the directory that will hold `path`, below `share_root`.
    pub fn open(share_root: &Path, path: &SharePath) -> Result<StatusFile, ShareError> {
        let param_value = path.as_written().to_string_lossy().into_owned();
        let name = path.file_name().ok_or_else(|| ShareError::InvalidPath {
            param: PARAM_STATUS,
            value: param_value.clone(),
            reason: "it names no file",
        })?;
        let directory_path = share_root.join(path.parent());
        let directory = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(&directory_path)
            .map_err(|source| ShareError::StatusDirectory {
                param_value: param_value.clone(),
                directory: directory_path,
                source,
            })?;
        Ok(StatusFile {
            directory,
            name: name.to_owned(),
            param_value,
        })
    }

    /// Writes `status` and a newline: to a temporary name first, flushed to the host, then
    /// renamed over the final name, and the rename flushed too.
    pub fn write(&self, status: u8) -> Result<(), ShareError> {
        self.write_and_rename(status)
            .map_err(|source| ShareError::StatusWrite {
                param_value: self.param_value.clone(),
                source,
            })
    }

    fn write_and_rename(&self, status: u8) -> io::Result<()> {
        write_status_atomically(&self.directory, &self.name, status)
    }
}

/// Writes `status` and a newline to `name` in the open `directory`: to `.NAME.rkt-tmp` first,
/// flushed to the host, then renamed over `name`, and the rename flushed too. A reader finds
/// either the old file (or none) or the complete new one, whenever the VM stops.
pub fn write_status_atomically(directory: &File, name: &OsStr, status: u8) -> io::Result<()> {
    let temporary_name = temporary_name(name);
    let directory_fd = directory.as_raw_fd();
    // O_NOFOLLOW: a symlink left at the temporary name is not followed (the open fails).
    let fd = nix::fcntl::openat(
        Some(directory_fd),
        temporary_name.as_os_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Mode::from_bits_truncate(0o644),
    )?;
    // SAFETY: `fd` was just returned by a successful openat and nothing else owns it; the
    // File closes it exactly once.
    let mut file = unsafe { File::from_raw_fd(fd) };
    file.write_all(format!("{status}\n").as_bytes())?;
    file.sync_all()?;
    drop(file);
    nix::fcntl::renameat(
        Some(directory_fd),
        temporary_name.as_os_str(),
        Some(directory_fd),
        name,
    )?;
    // fsync on the directory makes the rename itself durable.
    directory.sync_all()
}

/// `.NAME.rkt-tmp`: hidden, and tied to the final name so two status files in one directory
/// never share a temporary file.
fn temporary_name(name: &OsStr) -> OsString {
    let mut temporary = OsString::from(".");
    temporary.push(name);
    temporary.push(".rkt-tmp");
    debug_assert!(!temporary.as_bytes().contains(&b'/'));
    temporary
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn status_path(value: &str) -> SharePath {
        SharePath::parse(PARAM_STATUS, OsStr::new(value)).expect("valid path")
    }

    #[test]
    fn writes_the_status_and_a_newline_atomically() {
        let share = tempfile::tempdir().unwrap();
        fs::create_dir(share.path().join("out")).unwrap();
        let file = StatusFile::open(share.path(), &status_path("out/status")).unwrap();
        file.write(42).unwrap();
        assert_eq!(
            fs::read_to_string(share.path().join("out/status")).unwrap(),
            "42\n"
        );
        // Written again (the second boot of a share), the file is replaced, not appended to.
        file.write(0).unwrap();
        assert_eq!(
            fs::read_to_string(share.path().join("out/status")).unwrap(),
            "0\n"
        );
        let names: Vec<_> = fs::read_dir(share.path().join("out"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            vec![OsString::from("status")],
            "temporary file left over"
        );
    }

    #[test]
    fn file_at_the_share_root() {
        let share = tempfile::tempdir().unwrap();
        let file = StatusFile::open(share.path(), &status_path("./status")).unwrap();
        file.write(255).unwrap();
        assert_eq!(
            fs::read_to_string(share.path().join("status")).unwrap(),
            "255\n"
        );
    }

    #[test]
    fn keeps_working_after_the_working_directory_changes() {
        // guest-init chroots after opening the file; the open directory, not a path, is used.
        let share = tempfile::tempdir().unwrap();
        let file = StatusFile::open(share.path(), &status_path("status")).unwrap();
        let moved = tempfile::tempdir().unwrap();
        fs::rename(share.path(), moved.path().join("share")).unwrap();
        file.write(7).unwrap();
        assert_eq!(
            fs::read_to_string(moved.path().join("share/status")).unwrap(),
            "7\n"
        );
    }

    #[test]
    fn missing_directory_is_a_setup_error_naming_the_parameter() {
        let share = tempfile::tempdir().unwrap();
        let error = StatusFile::open(share.path(), &status_path("missing/status")).err();
        let message = error.as_ref().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("rkt.status=missing/status"), "{message}");
        assert!(message.contains("; "), "{message}");
        assert_eq!(error.map(|e| e.exit_status()), Some(125));
    }

    #[test]
    fn unwritable_directory_fails_the_write_with_a_message() {
        let share = tempfile::tempdir().unwrap();
        // A symlink at the temporary name makes the O_NOFOLLOW open fail, even for root.
        std::os::unix::fs::symlink("/nonexistent", share.path().join(".status.rkt-tmp")).unwrap();
        let file = StatusFile::open(share.path(), &status_path("status")).unwrap();
        let message = file
            .write(1)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(message.contains("rkt.status=status"), "{message}");
        assert!(!share.path().join("status").exists());
    }

    #[test]
    fn temporary_name_is_hidden_and_derived_from_the_name() {
        assert_eq!(
            temporary_name(OsStr::new("app")),
            OsString::from(".app.rkt-tmp")
        );
    }
}
