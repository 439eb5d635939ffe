//! The archive as a tree of entries, built up by the caller and then written out.
//!
//! Inputs are read when they are added, so every error about them (missing, not a file, too
//! large) surfaces at the call that named them, and writing cannot fail halfway for that reason.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::busybox;
use crate::dest::DestPath;
use crate::error::InitramfsError;
use crate::layout::{INIT_PATH, STANDARD_DEVICES, STANDARD_DIRS};
use crate::newc;

/// What one archive entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Node {
    Directory {
        mode: u32,
    },
    File {
        mode: u32,
        contents: Vec<u8>,
        /// Where it came from on the host, when it came from a file (busybox links need to
        /// run it).
        source: Option<PathBuf>,
    },
    Symlink {
        target: String,
    },
    CharDevice {
        mode: u32,
        major: u32,
        minor: u32,
    },
}

impl Node {
    fn kind(&self) -> &'static str {
        match self {
            Node::Directory { .. } => "directory",
            Node::File { .. } => "file",
            Node::Symlink { .. } => "symlink",
            Node::CharDevice { .. } => "device node",
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    node: Node,
    /// A default (standard layout, or a parent directory created on the way to a child) that
    /// an explicit entry of the same kind may replace, for example `/tmp` with other permissions.
    replaceable: bool,
}

/// Builds a guest initramfs. `new()` starts from the standard layout (directories, /dev/console,
/// /dev/null); `empty()` from nothing.
///
/// ```no_run
/// # fn main() -> Result<(), initramfs::InitramfsError> {
/// initramfs::InitramfsBuilder::new()
///     .init("target/x86_64-unknown-linux-gnu/release/guest-init")?
///     .add_host_file("/bin/busybox", "/bin/busybox")?
///     .add_busybox_links("/bin/busybox")?
///     .write_to("target/guest/initramfs.cpio")?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct InitramfsBuilder {
    /// Ordered by path components, which puts every directory right before its contents.
    entries: BTreeMap<DestPath, Entry>,
}

impl InitramfsBuilder {
    /// The standard layout, without /init yet.
    pub fn new() -> InitramfsBuilder {
        let mut builder = InitramfsBuilder::empty();
        // The layout is a constant table whose paths are checked by a test; skipping an entry
        // that somehow failed to parse is better than a panic.
        for (dir, mode) in STANDARD_DIRS {
            if let Ok(dest) = DestPath::parse(dir) {
                let _ = builder.insert(dest, Node::Directory { mode }, true);
            }
        }
        for device in &STANDARD_DEVICES {
            if let Ok(dest) = DestPath::parse(device.path) {
                let node = Node::CharDevice {
                    mode: device.mode,
                    major: device.major,
                    minor: device.minor,
                };
                let _ = builder.insert(dest, node, true);
            }
        }
        builder
    }

    /// No entries at all.
    pub fn empty() -> InitramfsBuilder {
        InitramfsBuilder::default()
    }

    /// The guest's init program (guest-init), stored as /init with mode 0755.
    pub fn init(self, source: impl AsRef<Path>) -> Result<InitramfsBuilder, InitramfsError> {
        self.add_file(source, INIT_PATH, 0o755)
    }

    /// A host file at `dest` with permissions `mode`.
    pub fn add_file(
        mut self,
        source: impl AsRef<Path>,
        dest: &str,
        mode: u32,
    ) -> Result<InitramfsBuilder, InitramfsError> {
        let dest = DestPath::parse(dest)?;
        let source = source.as_ref();
        let contents = read_input(source)?;
        let node = Node::File {
            mode,
            contents,
            source: Some(source.to_path_buf()),
        };
        self.insert(dest, node, false)?;
        Ok(self)
    }

    /// A host file at `dest`, keeping the host file's permissions (executables stay
    /// executable).
    pub fn add_host_file(
        self,
        source: impl AsRef<Path>,
        dest: &str,
    ) -> Result<InitramfsBuilder, InitramfsError> {
        let source = source.as_ref();
        let mode = input_metadata(source)?.permissions().mode() & 0o7777;
        self.add_file(source, dest, mode)
    }

    /// A file with the given contents.
    pub fn add_file_contents(
        mut self,
        dest: &str,
        contents: impl Into<Vec<u8>>,
        mode: u32,
    ) -> Result<InitramfsBuilder, InitramfsError> {
        let dest = DestPath::parse(dest)?;
        let contents = contents.into();
        if u32::try_from(contents.len()).is_err() {
            return Err(InitramfsError::InputTooLarge {
                path: PathBuf::from(dest.to_string()),
                size: contents.len() as u64,
            });
        }
        let node = Node::File {
            mode,
            contents,
            source: None,
        };
        self.insert(dest, node, false)?;
        Ok(self)
    }

    /// A directory (its parents are created as needed, mode 0755).
    pub fn add_dir(mut self, dest: &str, mode: u32) -> Result<InitramfsBuilder, InitramfsError> {
        let dest = DestPath::parse(dest)?;
        self.insert(dest, Node::Directory { mode }, false)?;
        Ok(self)
    }

    /// A symbolic link at `dest` pointing to `target` (stored as given; relative targets are
    /// resolved against the link's directory).
    pub fn add_symlink(
        mut self,
        dest: &str,
        target: &str,
    ) -> Result<InitramfsBuilder, InitramfsError> {
        let dest = DestPath::parse(dest)?;
        check_symlink_target(&dest, target)?;
        let node = Node::Symlink {
            target: target.to_string(),
        };
        self.insert(dest, node, false)?;
        Ok(self)
    }

    /// A character device node.
    pub fn add_char_device(
        mut self,
        dest: &str,
        mode: u32,
        major: u32,
        minor: u32,
    ) -> Result<InitramfsBuilder, InitramfsError> {
        let dest = DestPath::parse(dest)?;
        let node = Node::CharDevice { mode, major, minor };
        self.insert(dest, node, false)?;
        Ok(self)
    }

    /// For the busybox already added at `busybox_dest`, a symlink per applet in the same
    /// directory (`/bin/sh -> busybox`, ...). Entries already present are left alone, so an
    /// explicitly added `/bin/sh` wins.
    pub fn add_busybox_links(
        mut self,
        busybox_dest: &str,
    ) -> Result<InitramfsBuilder, InitramfsError> {
        let dest = DestPath::parse(busybox_dest)?;
        let source = match self.entries.get(&dest).map(|entry| &entry.node) {
            Some(Node::File {
                source: Some(source),
                ..
            }) => source.clone(),
            _ => {
                return Err(InitramfsError::BusyboxMissing {
                    dest: dest.to_string(),
                })
            }
        };
        let target = dest.file_name().to_string();
        for applet in busybox::applets(&source)? {
            if applet == target {
                continue;
            }
            let link = dest.sibling(&applet)?;
            if self.entries.contains_key(&link) {
                continue;
            }
            let node = Node::Symlink {
                target: target.clone(),
            };
            self.insert(link, node, false)?;
        }
        Ok(self)
    }

    /// The archive's bytes: entries in path order, then the trailer.
    pub fn to_bytes(&self) -> Result<Vec<u8>, InitramfsError> {
        let entries = self.entries.iter().map(|(path, entry)| (path, &entry.node));
        newc::write_archive(entries, Vec::new()).map_err(|source| InitramfsError::Encode { source })
    }

    /// Writes the archive to `path` atomically: a temporary file in the same directory, synced,
    /// then renamed over `path`, so readers never see a partial archive.
    pub fn write_to(&self, path: impl AsRef<Path>) -> Result<(), InitramfsError> {
        let path = path.as_ref();
        let bytes = self.to_bytes()?;
        let output_error = |source: io::Error| InitramfsError::Output {
            path: path.to_path_buf(),
            source,
        };
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let mut temp = tempfile::Builder::new()
            .prefix(".rkt-mkinitramfs-")
            .tempfile_in(dir)
            .map_err(output_error)?;
        temp.write_all(&bytes).map_err(output_error)?;
        temp.as_file()
            .set_permissions(fs::Permissions::from_mode(0o644))
            .map_err(output_error)?;
        temp.as_file().sync_all().map_err(output_error)?;
        temp.persist(path)
            .map_err(|error| output_error(error.error))?;
        Ok(())
    }

    /// Adds `node` at `dest`, creating missing parent directories.
    fn insert(
        &mut self,
        dest: DestPath,
        node: Node,
        replaceable: bool,
    ) -> Result<(), InitramfsError> {
        for parent in dest.ancestors() {
            match self.entries.get(&parent).map(|entry| &entry.node) {
                None => {
                    let entry = Entry {
                        node: Node::Directory { mode: 0o755 },
                        replaceable: true,
                    };
                    self.entries.insert(parent, entry);
                }
                Some(Node::Directory { .. }) => {}
                Some(other) => {
                    return Err(InitramfsError::ParentNotDirectory {
                        dest: dest.to_string(),
                        parent: parent.to_string(),
                        kind: other.kind(),
                    })
                }
            }
        }
        if let Some(existing) = self.entries.get(&dest) {
            let same_kind = std::mem::discriminant(&existing.node) == std::mem::discriminant(&node);
            if !(existing.replaceable && same_kind) {
                return Err(InitramfsError::AlreadyPresent {
                    dest: dest.to_string(),
                    kind: existing.node.kind(),
                });
            }
        }
        self.entries.insert(dest, Entry { node, replaceable });
        Ok(())
    }
}

fn input_metadata(source: &Path) -> Result<fs::Metadata, InitramfsError> {
    let metadata = fs::metadata(source).map_err(|error| match error.kind() {
        io::ErrorKind::NotFound => InitramfsError::InputMissing {
            path: source.to_path_buf(),
        },
        _ => InitramfsError::InputUnreadable {
            path: source.to_path_buf(),
            source: error,
        },
    })?;
    if !metadata.is_file() {
        return Err(InitramfsError::NotRegularFile {
            path: source.to_path_buf(),
        });
    }
    if u32::try_from(metadata.len()).is_err() {
        return Err(InitramfsError::InputTooLarge {
            path: source.to_path_buf(),
            size: metadata.len(),
        });
    }
    Ok(metadata)
}

fn read_input(source: &Path) -> Result<Vec<u8>, InitramfsError> {
    input_metadata(source)?;
    let contents = fs::read(source).map_err(|error| InitramfsError::InputUnreadable {
        path: source.to_path_buf(),
        source: error,
    })?;
    // The file may have grown since we looked at its size.
    if u32::try_from(contents.len()).is_err() {
        return Err(InitramfsError::InputTooLarge {
            path: source.to_path_buf(),
            size: contents.len() as u64,
        });
    }
    Ok(contents)
}

fn check_symlink_target(dest: &DestPath, target: &str) -> Result<(), InitramfsError> {
    let reason = if target.is_empty() {
        "it is empty"
    } else if target.contains('\0') {
        "it contains a NUL byte"
    } else {
        return Ok(());
    };
    Err(InitramfsError::BadSymlinkTarget {
        dest: dest.to_string(),
        target: target.to_string(),
        reason,
    })
}

#[cfg(test)]
#[path = "builder_tests.rs"]
mod tests;
