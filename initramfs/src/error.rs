//! What can go wrong while building an initramfs. Each message names the problem and the fix.

use std::io;
use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum InitramfsError {
    #[error("input file {path} does not exist; check the path given to --init or --add")]
    InputMissing { path: PathBuf },

    #[error("cannot read input file {path}: {source}; check its permissions")]
    InputUnreadable { path: PathBuf, source: io::Error },

    #[error("input {path} is not a regular file; give a file, not a directory or device")]
    NotRegularFile { path: PathBuf },

    #[error(
        "input file {path} is {size} bytes, more than the 4 GiB a cpio newc entry can hold; \
         use a smaller file"
    )]
    InputTooLarge { path: PathBuf, size: u64 },

    #[error("bad destination path `{dest}`: {reason}; use an absolute path such as /bin/tool")]
    BadDestination { dest: String, reason: &'static str },

    #[error("bad symlink target `{target}` for {dest}: {reason}")]
    BadSymlinkTarget {
        dest: String,
        target: String,
        reason: &'static str,
    },

    #[error("{dest} is already in the archive as a {kind}; give each destination once")]
    AlreadyPresent { dest: String, kind: &'static str },

    #[error("cannot put {dest} in the archive: {parent} is a {kind}, not a directory")]
    ParentNotDirectory {
        dest: String,
        parent: String,
        kind: &'static str,
    },

    #[error(
        "no busybox at {dest} in the archive to create applet links for; \
         add it first, e.g. --add /bin/busybox:/bin/busybox"
    )]
    BusyboxMissing { dest: String },

    #[error("cannot list the applets of {path} (`{path} --list`): {reason}; use a busybox built for this machine")]
    BusyboxList { path: PathBuf, reason: String },

    #[error("cannot encode the archive: {source}")]
    Encode { source: io::Error },

    #[error("cannot write {path}: {source}; check that its directory exists and is writable")]
    Output { path: PathBuf, source: io::Error },
}
