//! Serialising the archive tree as cpio "newc", the format the kernel's initramfs unpacker
//! reads. This is the only module that knows the cpio crate.
//!
//! Every header field that could vary between machines or runs is fixed (owner root, mtime 0,
//! inode = position in the archive), so the same tree always gives the same bytes.

use std::io::{self, Write};

use cpio::newc::{self, ModeFileType};

use crate::builder::Node;
use crate::dest::DestPath;

/// Writes `entries` (already in archive order: parents first) and the trailer.
pub(crate) fn write_archive<'a, W: Write>(
    entries: impl Iterator<Item = (&'a DestPath, &'a Node)>,
    mut out: W,
) -> io::Result<W> {
    for (index, (path, node)) in entries.enumerate() {
        // Inode 0 reads as "no inode" to some tools; start at 1. The kernel only uses inode
        // numbers to match hard links, and we never write any (nlink 1 for non-directories).
        let ino = u32::try_from(index + 1).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "more than 4 billion entries")
        })?;
        let header = newc::Builder::new(&path.archive_name())
            .ino(ino)
            .uid(0)
            .gid(0)
            .mtime(0);
        let (header, data): (newc::Builder, &[u8]) = match node {
            Node::Directory { mode } => (
                header
                    .mode(mode & 0o7777)
                    .set_mode_file_type(ModeFileType::Directory)
                    .nlink(2),
                &[],
            ),
            Node::File { mode, contents, .. } => (
                header
                    .mode(mode & 0o7777)
                    .set_mode_file_type(ModeFileType::Regular)
                    .nlink(1),
                contents,
            ),
            Node::Symlink { target } => (
                // Symlink permissions are ignored by Linux; 0777 is what `ls` shows.
                header
                    .mode(0o777)
                    .set_mode_file_type(ModeFileType::Symlink)
                    .nlink(1),
                target.as_bytes(),
            ),
            Node::CharDevice { mode, major, minor } => (
                header
                    .mode(mode & 0o7777)
                    .set_mode_file_type(ModeFileType::Char)
                    .nlink(1)
                    .rdev_major(*major)
                    .rdev_minor(*minor),
                &[],
            ),
        };
        let size = u32::try_from(data.len()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{path} is larger than 4 GiB"),
            )
        })?;
        let mut writer = header.write(out, size);
        // write_all before finish: the crate pads an entry only once all of its data is in.
        writer.write_all(data)?;
        out = writer.finish()?;
    }
    newc::trailer(out)
}

/// Reading archives back, for the tests of this crate.
#[cfg(test)]
pub(crate) mod read {
    use std::io::Read;

    /// One entry as read back from an archive.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct ReadEntry {
        pub name: String,
        pub mode: u32,
        pub uid: u32,
        pub gid: u32,
        pub mtime: u32,
        pub ino: u32,
        pub rdev: (u32, u32),
        pub data: Vec<u8>,
    }

    pub fn entries(archive: &[u8]) -> Vec<ReadEntry> {
        let mut entries = Vec::new();
        let mut rest = archive;
        loop {
            let mut reader = cpio::NewcReader::new(rest).expect("valid newc header");
            if reader.entry().is_trailer() {
                break;
            }
            let entry = reader.entry().clone();
            let mut data = Vec::new();
            reader.read_to_end(&mut data).expect("entry data");
            entries.push(ReadEntry {
                name: entry.name().to_string(),
                mode: entry.mode(),
                uid: entry.uid(),
                gid: entry.gid(),
                mtime: entry.mtime(),
                ino: entry.ino(),
                rdev: (entry.rdev_major(), entry.rdev_minor()),
                data,
            });
            rest = reader.finish().expect("entry padding");
        }
        entries
    }
}
