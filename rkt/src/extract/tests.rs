//! The malicious archives are built here, byte by byte where the tar crate's
//! builder would (rightly) refuse to write them.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use super::*;

/// Builds a tar in memory, writing names verbatim.
struct TarBuilder {
    builder: tar::Builder<Vec<u8>>,
}

impl TarBuilder {
    fn new() -> Self {
        TarBuilder {
            builder: tar::Builder::new(Vec::new()),
        }
    }

    fn raw(
        &mut self,
        path: &str,
        kind: tar::EntryType,
        link: Option<&str>,
        data: &[u8],
        mode: u32,
    ) -> &mut Self {
        let mut header = tar::Header::new_gnu();
        {
            let old = header.as_old_mut();
            old.name[..path.len()].copy_from_slice(path.as_bytes());
            if let Some(link) = link {
                old.linkname[..link.len()].copy_from_slice(link.as_bytes());
            }
        }
        header.set_entry_type(kind);
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_mtime(1_600_000_000);
        header.set_cksum();
        self.builder.append(&header, data).unwrap();
        self
    }

    fn file(&mut self, path: &str, data: &[u8]) -> &mut Self {
        self.raw(path, tar::EntryType::Regular, None, data, 0o644)
    }

    fn dir(&mut self, path: &str) -> &mut Self {
        self.raw(path, tar::EntryType::Directory, None, b"", 0o755)
    }

    fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.raw(path, tar::EntryType::Symlink, Some(target), b"", 0o777)
    }

    fn hardlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.raw(path, tar::EntryType::Link, Some(target), b"", 0o644)
    }

    /// Uses the tar crate's own path handling (GNU long names for long paths).
    fn long_file(&mut self, path: &str) -> &mut Self {
        let mut header = tar::Header::new_gnu();
        header.set_size(1);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        self.builder
            .append_data(&mut header, path, &b"x"[..])
            .unwrap();
        self
    }

    fn finish(&mut self) -> Vec<u8> {
        let builder = std::mem::replace(&mut self.builder, tar::Builder::new(Vec::new()));
        builder.into_inner().unwrap()
    }
}

fn target_in(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("out")
}

/// Extracts into a fresh target and asserts refusal naming `entry`, with
/// nothing left behind in the parent directory.
fn assert_refused(archive: &[u8], options: &ExtractOptions, entry: &str, says: &str) {
    let dir = tempfile::tempdir().unwrap();
    let err = extract_new(archive, &target_in(&dir), options).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains(&format!("{entry:?}")),
        "should name {entry:?}: {message}"
    );
    assert!(message.contains(says), "should say {says:?}: {message}");
    let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn extracts_an_ordinary_tree() {
    let archive = TarBuilder::new()
        .dir("./")
        .dir("bin/")
        .file("bin/busybox", b"ELF")
        .symlink("bin/sh", "busybox")
        .symlink("bin/ls", "/bin/busybox")
        .dir("usr/bin/")
        .symlink("usr/bin/env", "../../bin/busybox")
        .hardlink("bin/true", "bin/busybox")
        .raw("run/fifo", tar::EntryType::Fifo, None, b"", 0o600)
        .raw("etc/secret", tar::EntryType::Regular, None, b"s", 0o600)
        .finish();
    let dir = tempfile::tempdir().unwrap();
    let out = target_in(&dir);
    let summary = extract_new(&archive[..], &out, &ExtractOptions::default()).unwrap();
    assert_eq!(summary.file_bytes, 4);
    assert_eq!(fs::read(out.join("bin/busybox")).unwrap(), b"ELF");
    assert_eq!(
        fs::read_link(out.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    assert_eq!(
        fs::read_link(out.join("bin/ls")).unwrap(),
        Path::new("/bin/busybox")
    );
    assert_eq!(
        fs::metadata(out.join("bin/true")).unwrap().ino(),
        fs::metadata(out.join("bin/busybox")).unwrap().ino()
    );
    let secret = fs::metadata(out.join("etc/secret")).unwrap();
    assert_eq!(secret.permissions().mode() & 0o7777, 0o600);
    assert_eq!(secret.mtime(), 1_600_000_000);
    assert!(fs::symlink_metadata(out.join("run/fifo"))
        .unwrap()
        .file_type()
        .is_fifo_like());
    assert_eq!(
        fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o755
    );
}

trait FifoLike {
    fn is_fifo_like(&self) -> bool;
}
impl FifoLike for fs::FileType {
    fn is_fifo_like(&self) -> bool {
        std::os::unix::fs::FileTypeExt::is_fifo(self)
    }
}

#[test]
fn refuses_dotdot() {
    let archive = TarBuilder::new()
        .file("ok", b"1")
        .file("a/../../evil", b"x")
        .finish();
    assert_refused(&archive, &ExtractOptions::default(), "a/../../evil", "`..`");
}

#[test]
fn refuses_absolute_paths() {
    let archive = TarBuilder::new().file("/etc/evil", b"x").finish();
    assert_refused(
        &archive,
        &ExtractOptions::default(),
        "/etc/evil",
        "absolute",
    );
}

#[test]
fn refuses_symlink_climbing_out() {
    let archive = TarBuilder::new()
        .symlink("a/link", "../../etc/passwd")
        .finish();
    assert_refused(
        &archive,
        &ExtractOptions::default(),
        "a/link",
        "outside the archive root",
    );
}

#[test]
fn refuses_writing_through_a_planted_symlink() {
    // The symlink itself is allowed (absolute, resolves inside the container),
    // but the next entry would write through it onto the host.
    let outside = tempfile::tempdir().unwrap();
    let planted = outside.path().to_str().unwrap().to_string();
    let archive = TarBuilder::new()
        .symlink("sub", &planted)
        .file("sub/evil", b"x")
        .finish();
    assert_refused(
        &archive,
        &ExtractOptions::default(),
        "sub/evil",
        "is a symlink",
    );
    assert!(fs::read_dir(outside.path()).unwrap().next().is_none());
}

#[test]
fn refuses_hard_links_out_of_the_tree_or_to_non_files() {
    let escape = TarBuilder::new().hardlink("h", "../outside").finish();
    assert_refused(&escape, &ExtractOptions::default(), "h", "`..`");
    let absolute = TarBuilder::new().hardlink("h", "/etc/passwd").finish();
    assert_refused(&absolute, &ExtractOptions::default(), "h", "absolute");
    let to_symlink = TarBuilder::new()
        .symlink("s", "/etc/passwd")
        .hardlink("h", "s")
        .finish();
    assert_refused(
        &to_symlink,
        &ExtractOptions::default(),
        "h",
        "not a regular file",
    );
    let through_symlink = TarBuilder::new()
        .symlink("d", "/etc")
        .hardlink("h", "d/passwd")
        .finish();
    assert_refused(
        &through_symlink,
        &ExtractOptions::default(),
        "h",
        "is a symlink",
    );
    let missing = TarBuilder::new().hardlink("h", "nothing").finish();
    assert_refused(&missing, &ExtractOptions::default(), "h", "does not exist");
}

#[test]
fn refuses_device_nodes_by_default() {
    let archive = TarBuilder::new()
        .raw("dev/sda", tar::EntryType::Block, None, b"", 0o600)
        .finish();
    assert_refused(
        &archive,
        &ExtractOptions::default(),
        "dev/sda",
        "device node",
    );
    let char_dev = TarBuilder::new()
        .raw("dev/mem", tar::EntryType::Char, None, b"", 0o600)
        .finish();
    assert_refused(
        &char_dev,
        &ExtractOptions::default(),
        "dev/mem",
        "device node",
    );
}

#[test]
fn skips_device_nodes_in_layers_counting_them_by_kind() {
    // A naive `tar -C rootfs .` of a Debian tree: /dev with its nodes, a
    // FIFO, and the files around them.
    let layer = TarBuilder::new()
        .dir("dev/")
        .raw("dev/null", tar::EntryType::Char, None, b"", 0o666)
        .raw("dev/zero", tar::EntryType::Char, None, b"", 0o666)
        .raw("dev/loop0", tar::EntryType::Block, None, b"", 0o660)
        .raw("run/initctl", tar::EntryType::Fifo, None, b"", 0o600)
        .file("etc/hostname", b"debian")
        .finish();
    let skip = ExtractOptions {
        devices: DevicePolicy::Skip,
        overlay: true,
        whiteouts: true,
        ..ExtractOptions::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rootfs");
    fs::create_dir(&out).unwrap();
    // A lower layer's file where the device goes is replaced by nothing,
    // as Docker removes it before creating the entry.
    fs::create_dir(out.join("dev")).unwrap();
    fs::write(out.join("dev/null"), b"lower").unwrap();
    let summary = extract_into(&layer[..], &out, &skip).unwrap();
    assert_eq!(
        summary.skipped_devices,
        SkippedDevices {
            character: 2,
            block: 1
        }
    );
    assert!(fs::symlink_metadata(out.join("dev/null")).is_err());
    assert!(fs::symlink_metadata(out.join("dev/loop0")).is_err());
    assert!(out.join("dev").is_dir());
    use std::os::unix::fs::FileTypeExt;
    assert!(fs::symlink_metadata(out.join("run/initctl"))
        .unwrap()
        .file_type()
        .is_fifo());
    assert_eq!(fs::read(out.join("etc/hostname")).unwrap(), b"debian");
    let warning = summary.skipped_devices.warning("img").unwrap();
    assert!(
        warning.contains("skipped 3 device nodes") && warning.contains("(2 character, 1 block)"),
        "{warning}"
    );
    assert!(!warning.contains('\n'));
    assert_eq!(SkippedDevices::default().warning("img"), None);

    // Skipping is not a way past the other checks: a traversal is still
    // refused, naming the entry.
    let hostile = TarBuilder::new()
        .raw("dev/null", tar::EntryType::Char, None, b"", 0o666)
        .file("../escape", b"x")
        .finish();
    assert_refused(&hostile, &skip, "../escape", "..");
}

#[test]
fn strips_setuid_and_setgid_unless_trusted() {
    let archive = TarBuilder::new()
        .raw("su", tar::EntryType::Regular, None, b"x", 0o4755)
        .raw("sg", tar::EntryType::Regular, None, b"x", 0o2755)
        .finish();
    let dir = tempfile::tempdir().unwrap();
    let out = target_in(&dir);
    let summary = extract_new(&archive[..], &out, &ExtractOptions::default()).unwrap();
    assert_eq!(summary.setid_bits_stripped, 2);
    assert_eq!(
        fs::metadata(out.join("su")).unwrap().permissions().mode() & 0o7777,
        0o755
    );
    assert_eq!(
        fs::metadata(out.join("sg")).unwrap().permissions().mode() & 0o7777,
        0o755
    );

    let trusted = ExtractOptions {
        keep_setid_bits: true,
        ..ExtractOptions::default()
    };
    let out2 = dir.path().join("trusted");
    extract_new(&archive[..], &out2, &trusted).unwrap();
    assert_eq!(
        fs::metadata(out2.join("su")).unwrap().permissions().mode() & 0o7777,
        0o4755
    );
}

#[test]
fn refuses_duplicates() {
    let archive = TarBuilder::new().file("a", b"1").file("./a", b"2").finish();
    assert_refused(&archive, &ExtractOptions::default(), "./a", "twice");
    let dirs = TarBuilder::new().dir("d/").dir("d").finish();
    assert_refused(&dirs, &ExtractOptions::default(), "d", "twice");
}

#[test]
fn refuses_a_file_replacing_an_implicit_directory() {
    let archive = TarBuilder::new().file("d/x", b"1").file("d", b"2").finish();
    assert_refused(&archive, &ExtractOptions::default(), "d", "conflicts");
}

#[test]
fn refuses_over_long_paths() {
    let long_name = "n".repeat(300);
    let archive = TarBuilder::new().long_file(&long_name).finish();
    assert_refused(
        &archive,
        &ExtractOptions::default(),
        &long_name,
        "longer than 255",
    );
    let deep = vec!["d".repeat(200); 25].join("/");
    let archive = TarBuilder::new().long_file(&deep).finish();
    assert_refused(
        &archive,
        &ExtractOptions::default(),
        &deep,
        "longer than 4095",
    );
}

#[test]
fn refuses_a_decompression_bomb() {
    let zeros = vec![0u8; 8 * 1024 * 1024];
    let tar = TarBuilder::new().file("zeros", &zeros).finish();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let bomb = gz.finish().unwrap();
    let options = ExtractOptions {
        max_bytes: 1024 * 1024,
        ..ExtractOptions::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let stream = decompress::decompress(&bomb[..]).unwrap();
    let err = extract_new(stream, &target_in(&dir), &options).unwrap_err();
    assert!(
        matches!(err, ExtractError::TooLarge { limit } if limit == 1024 * 1024),
        "{err}"
    );
    assert!(err.to_string().contains("--max-image-size"));
    assert!(fs::read_dir(dir.path()).unwrap().next().is_none());
}

#[test]
fn extracts_only_the_subtree() {
    let archive = TarBuilder::new()
        .file("manifest", b"{}")
        .dir("rootfs/")
        .file("rootfs/hello", b"hi")
        .hardlink("rootfs/hello2", "rootfs/hello")
        .symlink("rootfs/m", "../manifest")
        .finish();
    let options = ExtractOptions {
        subtree: Some(PathBuf::from("rootfs")),
        ..ExtractOptions::default()
    };
    // The symlink climbs out of rootfs/ into the ACI's manifest: refused.
    assert_refused(&archive, &options, "rootfs/m", "outside the archive root");

    let archive = TarBuilder::new()
        .file("manifest", b"{}")
        .dir("rootfs/")
        .file("rootfs/hello", b"hi")
        .hardlink("rootfs/hello2", "rootfs/hello")
        .finish();
    let dir = tempfile::tempdir().unwrap();
    let out = target_in(&dir);
    extract_new(&archive[..], &out, &options).unwrap();
    assert_eq!(fs::read(out.join("hello2")).unwrap(), b"hi");
    assert!(!out.join("manifest").exists());
}

/// Applies `layer` over `root` and asserts refusal naming `entry`.
fn assert_layer_refused(
    layer: &[u8],
    root: &Path,
    options: &ExtractOptions,
    entry: &str,
    says: &str,
) {
    let err = extract_into(layer, root, options).unwrap_err().to_string();
    assert!(
        err.contains(&format!("{entry:?}")) && err.contains(says),
        "should name {entry:?} and say {says:?}: {err}"
    );
}

/// An empty root to apply layers to, and the options layers are applied with.
fn layered_root() -> (tempfile::TempDir, PathBuf, ExtractOptions) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    fs::create_dir(&root).unwrap();
    let options = ExtractOptions {
        overlay: true,
        whiteouts: true,
        ..ExtractOptions::default()
    };
    (dir, root, options)
}

#[test]
fn layers_apply_in_order_with_whiteouts() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    fs::create_dir(&root).unwrap();
    let layer1 = TarBuilder::new()
        .file("a/x", b"1")
        .file("a/y", b"1")
        .file("b", b"1")
        .file("c", b"old")
        .dir("d/")
        .finish();
    let layer2 = TarBuilder::new()
        .file("a/.wh..wh..opq", b"")
        .file("a/z", b"2")
        .file(".wh.b", b"")
        .file("c", b"new")
        .symlink("d", "/elsewhere")
        .finish();
    let options = ExtractOptions {
        overlay: true,
        whiteouts: true,
        ..ExtractOptions::default()
    };
    extract_into(&layer1[..], &root, &options).unwrap();
    extract_into(&layer2[..], &root, &options).unwrap();
    let mut a: Vec<_> = fs::read_dir(root.join("a"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    a.sort();
    assert_eq!(a, vec!["z"]);
    assert!(!root.join("b").exists());
    assert!(!root.join(".wh.b").exists());
    assert_eq!(fs::read(root.join("c")).unwrap(), b"new");
    assert!(fs::symlink_metadata(root.join("d"))
        .unwrap()
        .file_type()
        .is_symlink());

    // A third layer may not write through the symlink that replaced d/.
    let layer3 = TarBuilder::new().file("d/evil", b"x").finish();
    let err = extract_into(&layer3[..], &root, &options).unwrap_err();
    assert!(err.to_string().contains("\"d/evil\""), "{err}");
}

#[test]
fn restores_user_xattrs_and_drops_capabilities_unless_trusted() {
    let mut builder = tar::Builder::new(Vec::new());
    builder
        .append_pax_extensions([
            ("SCHILY.xattr.user.origin", &b"image"[..]),
            ("SCHILY.xattr.security.capability", &b"\x01\x00\x00\x02"[..]),
            ("SCHILY.xattr.trusted.host", &b"no"[..]),
        ])
        .unwrap();
    let mut header = tar::Header::new_ustar();
    header.set_size(1);
    header.set_mode(0o755);
    header.set_entry_type(tar::EntryType::Regular);
    builder.append_data(&mut header, "ping", &b"x"[..]).unwrap();
    let archive = builder.into_inner().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let out = target_in(&dir);
    let summary = extract_new(&archive[..], &out, &ExtractOptions::default()).unwrap();
    assert_eq!(summary.setid_bits_stripped, 1, "the capability was dropped");
    let value = read_xattr(&out.join("ping"), "user.origin");
    if summary.xattrs_restored > 0 {
        assert_eq!(value.as_deref(), Some(&b"image"[..]));
    } else {
        // Only a filesystem without xattr support may skip it.
        assert!(value.is_none());
    }
    assert!(read_xattr(&out.join("ping"), "trusted.host").is_none());
}

fn read_xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let name = std::ffi::CString::new(name).unwrap();
    let mut buffer = vec![0u8; 256];
    // SAFETY: NUL-terminated strings and a live buffer of the stated length.
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            name.as_ptr(),
            buffer.as_mut_ptr().cast(),
            buffer.len(),
        )
    };
    (n >= 0).then(|| buffer[..n as usize].to_vec())
}

#[test]
fn hard_links_reach_only_files_of_the_same_archive() {
    let (_dir, root, options) = layered_root();
    let lower = TarBuilder::new().file("etc/shadow", b"secret").finish();
    extract_into(&lower[..], &root, &options).unwrap();
    // A later layer may not link to what an earlier one left.
    let upper = TarBuilder::new().hardlink("mine", "etc/shadow").finish();
    assert_layer_refused(
        &upper,
        &root,
        &options,
        "mine",
        "does not exist earlier in the archive",
    );
    assert!(!root.join("mine").exists());
    // A directory is no hard link target either.
    let to_dir = TarBuilder::new().dir("d/").hardlink("h", "d").finish();
    assert_refused(
        &to_dir,
        &ExtractOptions::default(),
        "h",
        "not a regular file",
    );
}

#[test]
fn a_layer_replacing_many_files_replaces_each_and_still_refuses_conflicts() {
    let (_dir, root, options) = layered_root();
    let mut lower = TarBuilder::new();
    let mut upper = TarBuilder::new();
    for n in 0..2000 {
        lower.file(&format!("d{}/f{n}", n % 10), b"old");
        upper.file(&format!("d{}/f{n}", n % 10), b"new");
    }
    lower.file("keep/old", b"old");
    extract_into(&lower.finish()[..], &root, &options).unwrap();
    extract_into(&upper.finish()[..], &root, &options).unwrap();
    for n in (0..2000).step_by(97) {
        assert_eq!(
            fs::read(root.join(format!("d{}/f{n}", n % 10))).unwrap(),
            b"new"
        );
    }

    // Replacing a directory is fine, unless this same archive already wrote
    // something inside it.
    let conflicting = TarBuilder::new()
        .file("keep/new", b"x")
        .file("keep", b"now a file")
        .finish();
    assert_layer_refused(
        &conflicting,
        &root,
        &options,
        "keep",
        "conflicts with an earlier entry",
    );
    // A replaced directory is forgotten as verified: a symlink in its place
    // is not written through.
    let replaced = TarBuilder::new()
        .symlink("d3", "/tmp")
        .file("d3/evil", b"x")
        .finish();
    assert_layer_refused(&replaced, &root, &options, "d3/evil", "symlink");
}
