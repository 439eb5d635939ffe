//! Finding the program to execute, the way a shell does.
//!
//! We resolve the path ourselves instead of leaving it to `execvp` so that "not found" (127) and
//! "found but not executable" (126) are told apart before any process is created, and so the
//! error message can name the file and the directories searched.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::error::InitError;

/// The search path for commands given without a slash, also the child's `PATH`.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Returns the file to execute for `program`.
///
/// A program containing a slash is used as given; otherwise each directory of `search_path` is
/// tried in order. As with `execvp`, a match that is not executable is remembered and reported
/// only if no later directory holds an executable one.
pub fn resolve(program: &OsStr, search_path: &OsStr) -> Result<PathBuf, InitError> {
    let name = program.to_string_lossy().into_owned();
    if program.as_bytes().contains(&b'/') {
        let path = Path::new(program);
        return match check_executable(path) {
            Candidate::Executable => Ok(path.to_path_buf()),
            Candidate::Missing => Err(InitError::NotFound {
                name,
                searched: "only that path, since it contains a slash".into(),
            }),
            Candidate::NotExecutable(reason) => Err(InitError::NotExecutable {
                path: path.to_path_buf(),
                reason,
            }),
        };
    }

    let mut first_unusable = None;
    // Empty PATH entries would mean "the current directory"; PID 1 has no meaningful one.
    for dir in search_path
        .as_bytes()
        .split(|&byte| byte == b':')
        .filter(|dir| !dir.is_empty())
    {
        let candidate = Path::new(OsStr::from_bytes(dir)).join(program);
        match check_executable(&candidate) {
            Candidate::Executable => return Ok(candidate),
            Candidate::Missing => {}
            Candidate::NotExecutable(reason) => {
                first_unusable.get_or_insert((candidate, reason));
            }
        }
    }
    match first_unusable {
        Some((path, reason)) => Err(InitError::NotExecutable { path, reason }),
        None => Err(InitError::NotFound {
            name,
            searched: format!("PATH={}", search_path.to_string_lossy()),
        }),
    }
}

enum Candidate {
    Executable,
    Missing,
    NotExecutable(String),
}

/// Classifies one path. Symlinks are followed, as `execve` does; a dangling symlink counts as
/// missing.
fn check_executable(path: &Path) -> Candidate {
    let metadata = match fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Candidate::Missing,
        // ENOTDIR: a path component is a regular file, so the program cannot exist there.
        Err(error) if error.raw_os_error() == Some(libc::ENOTDIR) => return Candidate::Missing,
        Err(error) => return Candidate::NotExecutable(error.to_string()),
    };
    if metadata.is_dir() {
        return Candidate::NotExecutable("it is a directory".into());
    }
    if !metadata.is_file() {
        return Candidate::NotExecutable("it is not a regular file".into());
    }
    // Root may execute a file when any execute bit is set, and only then; guest-init runs as
    // root, so the bits alone decide.
    if metadata.permissions().mode() & 0o111 == 0 {
        return Candidate::NotExecutable("no execute permission".into());
    }
    Candidate::Executable
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    struct Dirs {
        _root: tempfile::TempDir,
        first: PathBuf,
        second: PathBuf,
    }

    impl Dirs {
        fn new() -> Dirs {
            let root = tempfile::tempdir().unwrap();
            let first = root.path().join("first");
            let second = root.path().join("second");
            fs::create_dir(&first).unwrap();
            fs::create_dir(&second).unwrap();
            Dirs {
                _root: root,
                first,
                second,
            }
        }

        fn search_path(&self) -> OsString {
            let mut path = OsString::from(&self.first);
            path.push(":");
            path.push(&self.second);
            path
        }
    }

    fn write_file(path: &Path, mode: u32) {
        fs::write(path, b"#!/bin/sh\n").unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn finds_executable_in_later_directory() {
        let dirs = Dirs::new();
        write_file(&dirs.second.join("tool"), 0o755);
        let found = resolve(OsStr::new("tool"), &dirs.search_path()).ok();
        assert_eq!(found, Some(dirs.second.join("tool")));
    }

    #[test]
    fn earlier_directory_wins() {
        let dirs = Dirs::new();
        write_file(&dirs.first.join("tool"), 0o755);
        write_file(&dirs.second.join("tool"), 0o755);
        let found = resolve(OsStr::new("tool"), &dirs.search_path()).ok();
        assert_eq!(found, Some(dirs.first.join("tool")));
    }

    #[test]
    fn skips_non_executable_match_when_a_later_one_is_executable() {
        let dirs = Dirs::new();
        write_file(&dirs.first.join("tool"), 0o644);
        write_file(&dirs.second.join("tool"), 0o700);
        let found = resolve(OsStr::new("tool"), &dirs.search_path()).ok();
        assert_eq!(found, Some(dirs.second.join("tool")));
    }

    #[test]
    fn only_non_executable_match_is_126() {
        let dirs = Dirs::new();
        write_file(&dirs.first.join("tool"), 0o644);
        let error = resolve(OsStr::new("tool"), &dirs.search_path()).err();
        assert!(
            matches!(&error, Some(InitError::NotExecutable { path, .. }) if *path == dirs.first.join("tool")),
            "{error:?}"
        );
        assert_eq!(error.map(|e| e.exit_status()), Some(126));
    }

    #[test]
    fn missing_name_is_127_and_names_the_search_path() {
        let dirs = Dirs::new();
        let error = resolve(OsStr::new("nosuch"), &dirs.search_path()).err();
        let message = error.as_ref().map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(error.map(|e| e.exit_status()), Some(127));
        assert!(message.contains("`nosuch`"), "{message}");
        assert!(
            message.contains(&*dirs.first.to_string_lossy()),
            "{message}"
        );
    }

    #[test]
    fn path_with_slash_is_not_searched() {
        let dirs = Dirs::new();
        write_file(&dirs.first.join("tool"), 0o755);
        let given = dirs.first.join("tool");
        assert_eq!(
            resolve(given.as_os_str(), OsStr::new("")).ok(),
            Some(given.clone())
        );
        let missing = dirs.second.join("tool");
        let error = resolve(missing.as_os_str(), &dirs.search_path()).err();
        assert_eq!(error.map(|e| e.exit_status()), Some(127));
    }

    #[test]
    fn directory_is_not_executable() {
        let dirs = Dirs::new();
        let error = resolve(dirs.first.as_os_str(), OsStr::new(DEFAULT_PATH)).err();
        let message = error.as_ref().map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(error.map(|e| e.exit_status()), Some(126));
        assert!(message.contains("directory"), "{message}");
    }

    #[test]
    fn symlink_to_executable_is_followed_and_dangling_is_missing() {
        let dirs = Dirs::new();
        write_file(&dirs.second.join("real"), 0o755);
        std::os::unix::fs::symlink(dirs.second.join("real"), dirs.first.join("link")).unwrap();
        std::os::unix::fs::symlink(dirs.second.join("gone"), dirs.first.join("dangling")).unwrap();
        assert_eq!(
            resolve(OsStr::new("link"), &dirs.search_path()).ok(),
            Some(dirs.first.join("link"))
        );
        let error = resolve(OsStr::new("dangling"), &dirs.search_path()).err();
        assert_eq!(error.map(|e| e.exit_status()), Some(127));
    }

    #[test]
    fn empty_path_entries_are_ignored() {
        let dirs = Dirs::new();
        write_file(&dirs.second.join("tool"), 0o755);
        let mut search = OsString::from("::");
        search.push(&dirs.second);
        search.push(":");
        assert_eq!(
            resolve(OsStr::new("tool"), &search).ok(),
            Some(dirs.second.join("tool"))
        );
    }
}
