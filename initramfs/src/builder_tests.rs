//! Round trips: build an archive, read it back (with the cpio crate's reader and with GNU
//! cpio), and check what the kernel will see.

use std::process::Command;

use super::*;
use crate::newc::read::{entries, ReadEntry};

const S_IFMT: u32 = 0o170000;
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

struct Inputs {
    dir: tempfile::TempDir,
}

impl Inputs {
    fn new() -> Inputs {
        Inputs {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn file(&self, name: &str, contents: &[u8], mode: u32) -> PathBuf {
        let path = self.dir.path().join(name);
        fs::write(&path, contents).expect("write input");
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod input");
        path
    }
}

fn find<'a>(archive: &'a [ReadEntry], name: &str) -> &'a ReadEntry {
    archive
        .iter()
        .find(|entry| entry.name == name)
        .unwrap_or_else(|| panic!("{name} not in archive"))
}

fn sample(inputs: &Inputs) -> InitramfsBuilder {
    let init = inputs.file("guest-init", b"\x7fELF pretend init", 0o700);
    let tool = inputs.file("tool", b"#!/bin/sh\necho tool\n", 0o750);
    InitramfsBuilder::new()
        .init(&init)
        .and_then(|b| b.add_host_file(&tool, "/usr/local/bin/tool"))
        .and_then(|b| b.add_file_contents("/etc/hostname", "guest\n", 0o644))
        .and_then(|b| b.add_dir("/data", 0o700))
        .and_then(|b| b.add_symlink("/bin/tool", "../usr/local/bin/tool"))
        .and_then(|b| b.add_char_device("/dev/ttyS0", 0o620, 4, 64))
        .expect("sample archive builds")
}

#[test]
fn round_trip_keeps_names_modes_contents_links_and_devices() {
    let inputs = Inputs::new();
    let archive = entries(&sample(&inputs).to_bytes().expect("encode"));

    let init = find(&archive, "init");
    assert_eq!(
        init.mode,
        S_IFREG | 0o755,
        "init is 0755 whatever the host mode"
    );
    assert_eq!(init.data, b"\x7fELF pretend init");

    let tool = find(&archive, "usr/local/bin/tool");
    assert_eq!(tool.mode, S_IFREG | 0o750, "host mode kept");
    assert_eq!(tool.data, b"#!/bin/sh\necho tool\n");
    assert_eq!(
        find(&archive, "usr/local").mode,
        S_IFDIR | 0o755,
        "parent created"
    );

    assert_eq!(find(&archive, "etc/hostname").data, b"guest\n");
    assert_eq!(find(&archive, "data").mode, S_IFDIR | 0o700);

    let link = find(&archive, "bin/tool");
    assert_eq!(link.mode & S_IFMT, S_IFLNK);
    assert_eq!(link.data, b"../usr/local/bin/tool");

    let console = find(&archive, "dev/console");
    assert_eq!(console.mode, S_IFCHR | 0o600);
    assert_eq!(console.rdev, (5, 1));
    assert_eq!(find(&archive, "dev/null").rdev, (1, 3));
    assert_eq!(find(&archive, "dev/ttyS0").rdev, (4, 64));

    assert_eq!(find(&archive, "tmp").mode, S_IFDIR | 0o1777);
    for dir in [
        "proc", "sys", "run", "root", "bin", "sbin", "etc", "usr/bin",
    ] {
        assert_eq!(find(&archive, dir).mode & S_IFMT, S_IFDIR, "{dir}");
    }
}

#[test]
fn metadata_is_fixed_and_order_is_parents_first() {
    let inputs = Inputs::new();
    let archive = entries(&sample(&inputs).to_bytes().expect("encode"));
    let mut inodes = Vec::new();
    for (index, entry) in archive.iter().enumerate() {
        assert_eq!(
            (entry.uid, entry.gid, entry.mtime),
            (0, 0, 0),
            "{}",
            entry.name
        );
        assert!(!entry.name.starts_with('/'), "{}", entry.name);
        inodes.push(entry.ino);
        if let Some((parent, _)) = entry.name.rsplit_once('/') {
            let parent_index = archive.iter().position(|e| e.name == parent);
            assert!(
                parent_index.is_some_and(|p| p < index),
                "{} before its parent",
                entry.name
            );
        }
    }
    inodes.sort_unstable();
    inodes.dedup();
    assert_eq!(inodes.len(), archive.len(), "inode numbers are unique");
}

#[test]
fn same_inputs_give_same_bytes() {
    let inputs = Inputs::new();
    let first = sample(&inputs).to_bytes().expect("encode");
    // Touch the inputs' timestamps: they must not leak into the archive.
    let tool = inputs.dir.path().join("tool");
    let contents = fs::read(&tool).expect("read");
    fs::write(&tool, contents).expect("rewrite");
    let second = sample(&inputs).to_bytes().expect("encode");
    assert_eq!(first, second);

    let out = inputs.dir.path().join("a.cpio");
    sample(&inputs).write_to(&out).expect("write");
    assert_eq!(fs::read(&out).expect("read back"), first);
}

#[test]
fn write_to_replaces_atomically_and_leaves_no_temp_files() {
    let inputs = Inputs::new();
    let out_dir = tempfile::tempdir().expect("tempdir");
    let out = out_dir.path().join("initramfs.cpio");
    fs::write(&out, b"old").expect("old output");
    sample(&inputs).write_to(&out).expect("write");
    let names: Vec<_> = fs::read_dir(out_dir.path())
        .expect("list")
        .filter_map(|entry| entry.ok().map(|e| e.file_name()))
        .collect();
    assert_eq!(names, [std::ffi::OsString::from("initramfs.cpio")]);
    let mode = fs::metadata(&out).expect("stat").permissions().mode();
    assert_eq!(mode & 0o777, 0o644);
    assert!(fs::read(&out).expect("read").starts_with(b"070701"));
}

#[test]
fn write_to_a_missing_directory_is_a_clear_error() {
    let error = InitramfsBuilder::new()
        .write_to("/nonexistent-dir-for-rkt-test/initramfs.cpio")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        error.contains("/nonexistent-dir-for-rkt-test/initramfs.cpio"),
        "{error}"
    );
}

#[test]
fn gnu_cpio_reads_the_archive() {
    let inputs = Inputs::new();
    let archive = inputs.dir.path().join("test.cpio");
    sample(&inputs).write_to(&archive).expect("write");

    let listing = Command::new("cpio")
        .args(["-itv", "--quiet", "-F"])
        .arg(&archive)
        .output()
        .expect("GNU cpio is installed (apt-get install cpio)");
    assert!(listing.status.success(), "{listing:?}");
    let listing = String::from_utf8_lossy(&listing.stdout);
    let line = |name: &str| {
        listing
            .lines()
            .find(|line| line.ends_with(name))
            .unwrap_or_else(|| panic!("{name} not listed:\n{listing}"))
            .to_string()
    };
    assert!(line(" dev/console").starts_with("crw-------"), "{listing}");
    assert!(line(" dev/console").contains("5,"), "{listing}");
    assert!(line(" init").starts_with("-rwxr-xr-x"), "{listing}");
    assert!(line(" bin/tool -> ../usr/local/bin/tool").starts_with("lrwxrwxrwx"));
    assert!(line(" tmp").starts_with("drwxrwxrwt"), "{listing}");

    // Extract the regular files and compare contents.
    let extract = tempfile::tempdir().expect("tempdir");
    let status = Command::new("cpio")
        .args(["-id", "--quiet", "--no-absolute-filenames", "-F"])
        .arg(&archive)
        .args(["init", "etc/hostname", "usr/local/bin/tool"])
        .current_dir(extract.path())
        .status()
        .expect("cpio runs");
    assert!(status.success());
    let read = |name: &str| fs::read(extract.path().join(name)).expect("extracted file");
    assert_eq!(read("init"), b"\x7fELF pretend init");
    assert_eq!(read("etc/hostname"), b"guest\n");
    assert_eq!(read("usr/local/bin/tool"), b"#!/bin/sh\necho tool\n");
}

#[test]
fn bad_destinations_are_rejected() {
    let inputs = Inputs::new();
    let file = inputs.file("f", b"x", 0o644);
    for dest in ["relative/path", "/a/../b", "/", ""] {
        let error = InitramfsBuilder::new().add_file(&file, dest, 0o644).err();
        assert!(
            matches!(error, Some(InitramfsError::BadDestination { .. })),
            "{dest:?}: {error:?}"
        );
    }
    let error = InitramfsBuilder::new().add_symlink("/bin/x", "").err();
    assert!(matches!(
        error,
        Some(InitramfsError::BadSymlinkTarget { .. })
    ));
}

#[test]
fn bad_inputs_are_rejected() {
    let inputs = Inputs::new();
    let missing = inputs.dir.path().join("missing");
    let error = InitramfsBuilder::new().init(&missing).err();
    assert!(
        matches!(error, Some(InitramfsError::InputMissing { .. })),
        "{error:?}"
    );
    assert!(error
        .map(|e| e.to_string())
        .unwrap_or_default()
        .contains("missing"));

    let error = InitramfsBuilder::new().init(inputs.dir.path()).err();
    assert!(
        matches!(error, Some(InitramfsError::NotRegularFile { .. })),
        "{error:?}"
    );
}

#[test]
fn conflicts_are_rejected_and_defaults_can_be_overridden() {
    let inputs = Inputs::new();
    let file = inputs.file("f", b"x", 0o644);

    let twice = InitramfsBuilder::new()
        .add_file(&file, "/etc/f", 0o644)
        .and_then(|b| b.add_file(&file, "/etc/f", 0o644))
        .err();
    assert!(
        matches!(twice, Some(InitramfsError::AlreadyPresent { .. })),
        "{twice:?}"
    );

    let under_file = InitramfsBuilder::new()
        .add_file(&file, "/etc/f", 0o644)
        .and_then(|b| b.add_file(&file, "/etc/f/g", 0o644))
        .err();
    assert!(
        matches!(under_file, Some(InitramfsError::ParentNotDirectory { .. })),
        "{under_file:?}"
    );

    let file_over_dir = InitramfsBuilder::new().add_file(&file, "/tmp", 0o644).err();
    assert!(matches!(
        file_over_dir,
        Some(InitramfsError::AlreadyPresent { .. })
    ));

    // A standard directory or an implicit parent takes an explicit mode.
    let archive = InitramfsBuilder::new()
        .add_file(&file, "/opt/app/f", 0o644)
        .and_then(|b| b.add_dir("/opt", 0o711))
        .and_then(|b| b.add_dir("/tmp", 0o700))
        .and_then(|b| b.to_bytes())
        .map(|bytes| entries(&bytes))
        .expect("archive");
    assert_eq!(find(&archive, "opt").mode, S_IFDIR | 0o711);
    assert_eq!(find(&archive, "tmp").mode, S_IFDIR | 0o700);
}

#[test]
fn empty_builder_has_only_what_is_added() {
    let archive = InitramfsBuilder::empty()
        .add_symlink("/a/b", "c")
        .and_then(|b| b.to_bytes())
        .map(|bytes| entries(&bytes))
        .expect("archive");
    let names: Vec<&str> = archive.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["a", "a/b"]);
}

#[test]
fn busybox_links_point_to_busybox_and_keep_explicit_entries() {
    // A stand-in for busybox that lists three applets, one of which is added explicitly.
    let inputs = Inputs::new();
    let fake = inputs.file(
        "busybox",
        b"#!/bin/sh\n[ \"$1\" = --list ] && printf 'sh\\necho\\nbusybox\\nls\\n'\n",
        0o755,
    );
    let own_ls = inputs.file("ls", b"mine", 0o755);
    let archive = InitramfsBuilder::new()
        .add_host_file(&fake, "/bin/busybox")
        .and_then(|b| b.add_host_file(&own_ls, "/bin/ls"))
        .and_then(|b| b.add_busybox_links("/bin/busybox"))
        .and_then(|b| b.to_bytes())
        .map(|bytes| entries(&bytes))
        .expect("archive");
    for applet in ["bin/sh", "bin/echo"] {
        let link = find(&archive, applet);
        assert_eq!(link.mode & S_IFMT, S_IFLNK, "{applet}");
        assert_eq!(link.data, b"busybox", "{applet}");
    }
    assert_eq!(find(&archive, "bin/ls").data, b"mine");
    assert_eq!(find(&archive, "bin/busybox").mode & S_IFMT, S_IFREG);

    let missing = InitramfsBuilder::new()
        .add_busybox_links("/bin/busybox")
        .err();
    assert!(matches!(
        missing,
        Some(InitramfsError::BusyboxMissing { .. })
    ));
}
