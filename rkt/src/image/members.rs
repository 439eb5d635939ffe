//! The files of a local Docker/OCI image (an OCI layout directory, or the
//! members of an `oci-archive`/`docker-archive` tar), read as a hostile
//! publisher may have built them.
//!
//! Whatever the source, a member is only ever read as a regular file's bytes:
//! - a layout directory's files are opened one path component at a time with
//!   `O_NOFOLLOW`, classified with `fstatat(AT_SYMLINK_NOFOLLOW)` before the
//!   open and `fstat` after it, and opened `O_NONBLOCK`, so a symlink is never
//!   followed and a FIFO or device is never read (nor left blocking);
//! - an archive is streamed once: its regular members are copied into
//!   anonymous temporary files in the store's temp dir (created by us,
//!   `O_TMPFILE`, gone when dropped or when the process dies), everything
//!   else is only recorded by its type. Nothing the archive names is created
//!   on the host.
//!
//! Every byte copied counts against one budget (`--max-image-size`), checked
//! against each member's declared size before it is copied and while it is
//! copied; JSON documents are read with a fixed cap (`MAX_JSON_BYTES`).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{fcntl, openat, FcntlArg, OFlag};
use nix::sys::stat::{fstat, fstatat, FileStat, Mode, SFlag};
use thiserror::Error;

use crate::extract::decompress::{size_limit_of, LimitedReader};

/// Most bytes read for one JSON document (index, manifest, config,
/// `manifest.json`, `repositories`, `oci-layout`): real ones are a few KiB.
pub const MAX_JSON_BYTES: u64 = 4 * 1024 * 1024;
/// The documents an archive holds at fixed names, refused as soon as their
/// header declares more than `MAX_JSON_BYTES` (before any byte is copied).
const JSON_MEMBERS: [(&str, &str); 4] = [
    ("index.json", "index"),
    ("oci-layout", "oci-layout marker"),
    ("manifest.json", "manifest.json"),
    ("repositories", "repositories file"),
];
/// The role named when a member's parent is not a directory.
const PARENT_ROLE: &str = "parent directories";
/// Most members an archive may hold (the record of them is kept in memory).
pub const MAX_MEMBERS: usize = 100_000;
/// Most regular files an archive may hold: each stays an open anonymous file
/// until the image is stored, and this keeps them under the usual 1024
/// descriptors. Real archives hold a few files per layer.
pub const MAX_FILES: usize = 900;

#[derive(Debug, Error)]
pub enum MemberError {
    #[error(
        "member {name:?} is {kind}; an image's {role} must be {} read from the {container} \
         itself", if *.role == PARENT_ROLE { "real directories" } else { "a regular file" }
    )]
    NotRegular {
        name: String,
        kind: &'static str,
        role: &'static str,
        container: &'static str,
    },
    #[error("member {name:?} (the image's {role}) is missing")]
    Missing { name: String, role: &'static str },
    #[error(
        "member {name:?} is larger than the {} MiB allowed for an image's {role}; it is not \
         a real one", .limit >> 20
    )]
    TooBig {
        name: String,
        role: &'static str,
        limit: u64,
    },
    #[error(
        "the image is larger than the {} MiB limit (at member {name:?}); if it really is \
         that big, raise it with --max-image-size", .limit >> 20
    )]
    OverBudget { name: String, limit: u64 },
    #[error("member {name:?}: {problem}")]
    BadName { name: String, problem: String },
    #[error("member {name:?} appears twice in the archive; an image may hold each path once")]
    Duplicate { name: String },
    #[error("the archive holds more than {MAX_MEMBERS} members; it is not a real image")]
    TooManyMembers,
    #[error(
        "the archive holds more than {MAX_FILES} regular files; an image archive holds its \
         blobs and a few documents, not a file system"
    )]
    TooManyFiles,
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

/// The type of a file that is not a regular one, as the error says it.
fn kind_of_mode(mode: u32) -> &'static str {
    match SFlag::from_bits_truncate(mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFREG => "a regular file",
        SFlag::S_IFDIR => "a directory",
        SFlag::S_IFLNK => "a symbolic link",
        SFlag::S_IFIFO => "a FIFO",
        SFlag::S_IFCHR => "a character device",
        SFlag::S_IFBLK => "a block device",
        SFlag::S_IFSOCK => "a socket",
        _ => "of an unknown type",
    }
}

fn kind_of_entry(kind: tar::EntryType) -> &'static str {
    match kind {
        tar::EntryType::Regular | tar::EntryType::Continuous => "a regular file",
        tar::EntryType::Directory => "a directory",
        tar::EntryType::Symlink => "a symbolic link",
        tar::EntryType::Link => "a hard link",
        tar::EntryType::Fifo => "a FIFO",
        tar::EntryType::Char => "a character device",
        tar::EntryType::Block => "a block device",
        tar::EntryType::GNUSparse => "a sparse file",
        _ => "of an unknown type",
    }
}

/// Where an image's files are read from.
pub trait ImageFiles {
    /// Opens `name` (a path relative to the layout or archive root) as a
    /// regular file, for the image's `role` ("index", "blob", ...): the file
    /// and its size.
    fn open(&mut self, name: &str, role: &'static str) -> Result<(File, u64), MemberError>;

    /// Reads a whole JSON document, refusing one over `MAX_JSON_BYTES`
    /// without reading past the cap.
    fn read_json(&mut self, name: &str, role: &'static str) -> Result<Vec<u8>, MemberError> {
        let (file, size) = self.open(name, role)?;
        read_capped(file, size, name, role)
    }
}

/// Reads at most `MAX_JSON_BYTES` from `file`, refusing a longer one.
fn read_capped(
    file: impl Read,
    declared: u64,
    name: &str,
    role: &'static str,
) -> Result<Vec<u8>, MemberError> {
    let too_big = || MemberError::TooBig {
        name: name.to_string(),
        role,
        limit: MAX_JSON_BYTES,
    };
    if declared > MAX_JSON_BYTES {
        return Err(too_big());
    }
    let mut bytes = Vec::new();
    file.take(MAX_JSON_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| MemberError::Io {
            context: format!("reading member {name:?}"),
            source,
        })?;
    if bytes.len() as u64 > MAX_JSON_BYTES {
        return Err(too_big());
    }
    Ok(bytes)
}

/// An OCI layout directory on the host.
pub struct LayoutDir {
    root: File,
}

impl LayoutDir {
    /// Opens the directory the user named (following it, as they asked).
    pub fn open(path: &Path) -> io::Result<LayoutDir> {
        let root = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(path)?;
        Ok(LayoutDir { root })
    }
}

/// Opens `name` under `dir` without following a symlink and without opening
/// anything but a regular file (`O_NONBLOCK`: a FIFO cannot block the open).
fn open_component(
    dir: &File,
    name: &str,
    directory: bool,
) -> Result<(File, FileStat), (nix::Error, Option<u32>)> {
    let before = fstatat(
        Some(dir.as_raw_fd()),
        name,
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(|err| (err, None))?;
    let wanted = if directory {
        SFlag::S_IFDIR
    } else {
        SFlag::S_IFREG
    };
    let format = before.st_mode & SFlag::S_IFMT.bits();
    if format != wanted.bits() {
        return Err((nix::Error::EINVAL, Some(before.st_mode)));
    }
    let mut flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
    if directory {
        flags |= OFlag::O_DIRECTORY;
    }
    let fd =
        openat(Some(dir.as_raw_fd()), name, flags, Mode::empty()).map_err(|err| (err, None))?;
    // SAFETY: `fd` was just returned by openat and is owned by nothing else.
    let file = unsafe { File::from_raw_fd(fd) };
    let after = fstat(file.as_raw_fd()).map_err(|err| (err, None))?;
    // Swapped between the two looks: refuse rather than guess.
    if after.st_dev != before.st_dev || after.st_ino != before.st_ino {
        return Err((nix::Error::EINVAL, Some(after.st_mode)));
    }
    if !directory {
        // Reads of a regular file never block; clear the flag anyway so the
        // descriptor behaves like any other.
        fcntl(file.as_raw_fd(), FcntlArg::F_SETFL(OFlag::empty())).map_err(|err| (err, None))?;
    }
    Ok((file, after))
}

impl ImageFiles for LayoutDir {
    fn open(&mut self, name: &str, role: &'static str) -> Result<(File, u64), MemberError> {
        let clean = normalized(name)?;
        let parts: Vec<&str> = clean.iter().filter_map(|part| part.to_str()).collect();
        let mut dir = self.root.try_clone().map_err(|source| MemberError::Io {
            context: "duplicating the layout directory's descriptor".to_string(),
            source,
        })?;
        for (index, part) in parts.iter().enumerate() {
            let last = index + 1 == parts.len();
            let so_far = parts[..=index].join("/");
            match open_component(&dir, part, !last) {
                Ok((file, stat)) if last => return Ok((file, stat.st_size as u64)),
                Ok((file, _)) => dir = file,
                Err((_, Some(mode))) => {
                    return Err(MemberError::NotRegular {
                        name: so_far,
                        kind: kind_of_mode(mode),
                        role: if last { role } else { PARENT_ROLE },
                        container: "layout",
                    })
                }
                Err((nix::Error::ENOENT, None)) => {
                    return Err(MemberError::Missing {
                        name: clean.display().to_string(),
                        role,
                    })
                }
                Err((err, None)) => {
                    return Err(MemberError::Io {
                        context: format!("opening member {so_far:?}"),
                        source: err.into(),
                    })
                }
            }
        }
        Err(MemberError::Missing {
            name: name.to_string(),
            role,
        })
    }
}

fn normalized(name: &str) -> Result<PathBuf, MemberError> {
    match crate::extract::normalize(Path::new(name)) {
        Ok(Some(clean)) => Ok(clean),
        Ok(None) => Err(MemberError::BadName {
            name: name.to_string(),
            problem: "names the root, not a file".to_string(),
        }),
        Err(problem) => Err(MemberError::BadName {
            name: name.to_string(),
            problem,
        }),
    }
}

/// What an archive held at one path.
enum Member {
    /// A regular file, copied into an anonymous temp file; its size.
    Regular(File, u64),
    Directory,
    /// Anything else, by the type the error names.
    Other(&'static str),
}

/// The members of an archive, read once from its stream.
pub struct ArchiveMembers {
    members: HashMap<PathBuf, Member>,
}

impl ArchiveMembers {
    /// Streams the (uncompressed) tar `archive`, copying its regular members
    /// into anonymous files under `tmp_dir`; at most `budget` bytes in all.
    pub fn read(archive: impl Read, tmp_dir: &Path, budget: u64) -> Result<Self, MemberError> {
        let io_error = |context: String| {
            move |source: io::Error| match size_limit_of(&source) {
                Some(limit) => MemberError::OverBudget {
                    name: "(the archive stream)".to_string(),
                    limit,
                },
                None => MemberError::Io { context, source },
            }
        };
        // Tar headers and padding count too: the stream cannot outgrow the
        // budget by more than a little bookkeeping.
        let stream = LimitedReader::new(archive, budget.saturating_add(MAX_JSON_BYTES));
        let mut tar = tar::Archive::new(stream);
        let mut members = HashMap::new();
        let mut remaining = budget;
        let mut files = 0usize;
        for entry in tar
            .entries()
            .map_err(io_error("reading the archive".to_string()))?
        {
            let mut entry = entry.map_err(io_error("reading the archive".to_string()))?;
            let kind = entry.header().entry_type();
            if matches!(
                kind,
                tar::EntryType::XGlobalHeader | tar::EntryType::XHeader
            ) {
                continue;
            }
            let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let Some(path) = crate::extract::normalize(Path::new(&raw)).map_err(|problem| {
                MemberError::BadName {
                    name: raw.clone(),
                    problem,
                }
            })?
            else {
                continue;
            };
            if members.len() >= MAX_MEMBERS {
                return Err(MemberError::TooManyMembers);
            }
            if members.contains_key(&path) {
                return Err(MemberError::Duplicate { name: raw });
            }
            let member = match kind {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let size = entry.size();
                    let json_role = JSON_MEMBERS
                        .iter()
                        .find(|(name, _)| path == Path::new(name))
                        .map(|(_, role)| *role);
                    if let Some(role) = json_role.filter(|_| size > MAX_JSON_BYTES) {
                        return Err(MemberError::TooBig {
                            name: raw,
                            role,
                            limit: MAX_JSON_BYTES,
                        });
                    }
                    files += 1;
                    if files > MAX_FILES {
                        return Err(MemberError::TooManyFiles);
                    }
                    if size > remaining {
                        return Err(MemberError::OverBudget {
                            name: raw,
                            limit: budget,
                        });
                    }
                    let mut file =
                        tempfile::tempfile_in(tmp_dir).map_err(|source| MemberError::Io {
                            context: "creating a temporary file in the store".to_string(),
                            source,
                        })?;
                    // The entry reader stops at the declared size.
                    let copied = io::copy(&mut entry, &mut file)
                        .map_err(io_error(format!("copying member {raw:?}")))?;
                    remaining -= copied.min(remaining);
                    Member::Regular(file, copied)
                }
                tar::EntryType::Directory => Member::Directory,
                other => Member::Other(kind_of_entry(other)),
            };
            members.insert(path, member);
        }
        Ok(ArchiveMembers { members })
    }
}

impl ImageFiles for ArchiveMembers {
    fn open(&mut self, name: &str, role: &'static str) -> Result<(File, u64), MemberError> {
        let clean = normalized(name)?;
        // A parent that is not a directory (say a symlink `blobs`) is what
        // to name when the member itself is absent.
        let mut prefix = PathBuf::new();
        for part in clean.parent().into_iter().flat_map(Path::iter) {
            prefix.push(part);
            let kind = match self.members.get(&prefix) {
                None | Some(Member::Directory) => continue,
                Some(Member::Regular(..)) => "a regular file",
                Some(Member::Other(kind)) => kind,
            };
            return Err(MemberError::NotRegular {
                name: prefix.display().to_string(),
                kind,
                role: PARENT_ROLE,
                container: "archive",
            });
        }
        match self.members.get_mut(&clean) {
            Some(Member::Regular(file, size)) => {
                // Each caller reads the member whole before the next open,
                // so one shared offset, rewound here, is enough.
                let mut copy = file.try_clone().map_err(|source| MemberError::Io {
                    context: format!("reopening member {name:?}"),
                    source,
                })?;
                copy.seek(SeekFrom::Start(0))
                    .map_err(|source| MemberError::Io {
                        context: format!("rewinding member {name:?}"),
                        source,
                    })?;
                Ok((copy, *size))
            }
            Some(Member::Directory) => Err(MemberError::NotRegular {
                name: clean.display().to_string(),
                kind: "a directory",
                role,
                container: "archive",
            }),
            Some(Member::Other(kind)) => Err(MemberError::NotRegular {
                name: clean.display().to_string(),
                kind,
                role,
                container: "archive",
            }),
            None => Err(MemberError::Missing {
                name: clean.display().to_string(),
                role,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        build(&mut builder);
        builder.into_inner().unwrap()
    }

    fn add(builder: &mut tar::Builder<Vec<u8>>, name: &str, kind: tar::EntryType, data: &[u8]) {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        if kind == tar::EntryType::Symlink || kind == tar::EntryType::Link {
            header.set_link_name("/etc/passwd").unwrap();
        }
        builder.append_data(&mut header, name, data).unwrap();
    }

    #[test]
    fn archive_members_are_regular_files_or_refused_by_type() {
        let tmp = tempfile::tempdir().unwrap();
        let tar = archive(|b| {
            add(b, "index.json", tar::EntryType::Regular, b"{}");
            add(b, "blobs/sha256/aa", tar::EntryType::Symlink, b"");
            add(b, "blobs/sha256/bb", tar::EntryType::Link, b"");
            add(b, "blobs/sha256/cc", tar::EntryType::Fifo, b"");
            add(b, "layer", tar::EntryType::Symlink, b"");
        });
        let mut members = ArchiveMembers::read(&tar[..], tmp.path(), 1 << 20).unwrap();
        assert_eq!(members.read_json("./index.json", "index").unwrap(), b"{}");
        for (name, kind) in [
            ("blobs/sha256/aa", "a symbolic link"),
            ("blobs/sha256/bb", "a hard link"),
            ("blobs/sha256/cc", "a FIFO"),
        ] {
            let err = members.open(name, "blob").unwrap_err().to_string();
            assert!(err.contains(name) && err.contains(kind), "{err}");
        }
        let err = members
            .open("layer/x.tar", "layer")
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"layer\" is a symbolic link"), "{err}");
        assert!(matches!(
            members.open("nothing", "blob"),
            Err(MemberError::Missing { .. })
        ));
        // Nothing was created under the temp dir by name.
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    }

    #[test]
    fn archive_budget_is_checked_against_the_declared_size_first() {
        let tmp = tempfile::tempdir().unwrap();
        let tar = archive(|b| add(b, "big", tar::EntryType::Regular, &[0u8; 4096]));
        let err = ArchiveMembers::read(&tar[..], tmp.path(), 1024)
            .err()
            .unwrap();
        assert!(matches!(err, MemberError::OverBudget { .. }), "{err}");
    }

    #[test]
    fn archives_with_more_files_than_descriptors_allow_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let tar = archive(|b| {
            for n in 0..=MAX_FILES {
                add(b, &format!("f{n}"), tar::EntryType::Regular, b"x");
            }
        });
        let err = ArchiveMembers::read(&tar[..], tmp.path(), 1 << 20)
            .err()
            .unwrap();
        assert!(matches!(err, MemberError::TooManyFiles), "{err}");
    }

    #[test]
    fn json_reads_are_capped() {
        let big = vec![b' '; MAX_JSON_BYTES as usize + 10];
        let err = read_capped(&big[..], 0, "index.json", "index").unwrap_err();
        assert!(matches!(err, MemberError::TooBig { .. }));
    }

    #[test]
    fn layout_files_are_never_followed_nor_opened_when_not_regular() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("blobs/sha256")).unwrap();
        std::fs::write(dir.path().join("index.json"), b"{}").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("blobs/sha256/aa")).unwrap();
        nix::unistd::mkfifo(&dir.path().join("blobs/sha256/ff"), Mode::S_IRWXU).unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("linked")).unwrap();
        let mut layout = LayoutDir::open(dir.path()).unwrap();
        assert_eq!(layout.read_json("index.json", "index").unwrap(), b"{}");
        let err = layout
            .open("blobs/sha256/aa", "blob")
            .unwrap_err()
            .to_string();
        assert!(err.contains("is a symbolic link"), "{err}");
        let err = layout
            .open("blobs/sha256/ff", "blob")
            .unwrap_err()
            .to_string();
        assert!(err.contains("is a FIFO"), "{err}");
        let err = layout
            .open("linked/passwd", "blob")
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"linked\" is a symbolic link"), "{err}");
    }
}
