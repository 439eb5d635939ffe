//! Writes the stage1 image, `stage1-kvm.aci` (appc ACI: a tar of `manifest` and `rootfs/`):
//!
//! ```text
//! manifest                 coreos.com/rkt/stage1-kvm; entrypoint annotations, interface version 6
//! rootfs/stage1-kvm        this crate's binary
//! rootfs/init, enter_kvm, stop_kvm, gc   symlinks to stage1-kvm (the entrypoints)
//! rootfs/vmlinux           the guest kernel
//! rootfs/initramfs.cpio    the pod initramfs (guest-init)
//! rootfs/etc/, rootfs/rkt/ where stage0 and stage1 put the pod's files
//! ```
//!
//! The archive is deterministic: entries in a fixed order, every time stamp [`MTIME`], owner
//! 0:0, fixed modes; the same inputs give the same image ID.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::json;
use tar::{Builder, EntryType, Header};

use crate::entrypoint::{Entrypoint, BINARY_NAME};
use crate::error::Stage1Error;
use crate::pod::{INITRD_FILE, KERNEL_FILE};

/// The image's name, as rkt's kvm stage1 was called.
pub const IMAGE_NAME: &str = "coreos.com/rkt/stage1-kvm";
/// The stage1 interface version this stage1 implements.
pub const INTERFACE_VERSION: &str = "6";
/// Every entry's modification time (2020-01-01T00:00:00Z): fixed, so builds are reproducible.
pub const MTIME: u64 = 1_577_836_800;

/// What goes into the image.
#[derive(Clone, Debug)]
pub struct ImageInputs {
    pub binary: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// The `version` label.
    pub version: String,
}

/// The image manifest (JSON).
pub fn manifest_json(version: &str) -> String {
    let mut annotations: Vec<_> = Entrypoint::ALL
        .iter()
        .map(|e| json!({"name": e.annotation(), "value": format!("/{}", e.file_name())}))
        .collect();
    annotations.push(json!({
        "name": "coreos.com/rkt/stage1/interface-version",
        "value": INTERFACE_VERSION,
    }));
    let manifest = json!({
        "acKind": "ImageManifest",
        "acVersion": appc::APPC_SPEC_VERSION,
        "name": IMAGE_NAME,
        "labels": [
            {"name": "version", "value": version},
            {"name": "os", "value": "linux"},
            {"name": "arch", "value": "amd64"},
        ],
        "annotations": annotations,
    });
    // serde_json's maps are sorted: the same manifest always serializes the same.
    serde_json::to_string_pretty(&manifest).unwrap_or_default()
}

/// Writes the image to `out` (through a temporary file beside it, renamed at the end).
pub fn write_image(inputs: &ImageInputs, out: &Path) -> Result<(), Stage1Error> {
    let manifest = manifest_json(&inputs.version);
    appc::ImageManifest::from_json(manifest.as_bytes()).map_err(|err| Stage1Error::BadFile {
        path: out.to_path_buf(),
        problem: format!("the stage1 manifest is invalid: {err}"),
    })?;
    let temp = out.with_extension("aci.tmp");
    let context = format!("writing {}", out.display());
    let result = (|| -> io::Result<()> {
        let mut tar = Builder::new(BufWriter::new(File::create(&temp)?));
        append_bytes(&mut tar, "manifest", manifest.as_bytes(), 0o644)?;
        append_dir(&mut tar, "rootfs")?;
        append_file(
            &mut tar,
            &format!("rootfs/{BINARY_NAME}"),
            &inputs.binary,
            0o755,
        )?;
        for entrypoint in Entrypoint::ALL {
            append_symlink(
                &mut tar,
                &format!("rootfs/{}", entrypoint.file_name()),
                BINARY_NAME,
            )?;
        }
        append_file(
            &mut tar,
            &format!("rootfs/{KERNEL_FILE}"),
            &inputs.kernel,
            0o644,
        )?;
        append_file(
            &mut tar,
            &format!("rootfs/{INITRD_FILE}"),
            &inputs.initrd,
            0o644,
        )?;
        append_dir(&mut tar, "rootfs/etc")?;
        append_dir(&mut tar, "rootfs/rkt")?;
        let mut writer = tar.into_inner()?;
        writer.flush()?;
        writer.get_ref().sync_all()?;
        fs::rename(&temp, out)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result.map_err(Stage1Error::io(context))
}

fn header(kind: EntryType, mode: u32, size: u64) -> Header {
    let mut header = Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(MTIME);
    header.set_uid(0);
    header.set_gid(0);
    header
}

fn append_bytes<W: Write>(
    tar: &mut Builder<W>,
    path: &str,
    bytes: &[u8],
    mode: u32,
) -> io::Result<()> {
    let mut header = header(EntryType::Regular, mode, bytes.len() as u64);
    tar.append_data(&mut header, path, bytes)
}

/// A host file's content (symlinks followed: target/guest/vmlinux links into the cache).
fn append_file<W: Write>(
    tar: &mut Builder<W>,
    path: &str,
    source: &Path,
    mode: u32,
) -> io::Result<()> {
    let file = File::open(source)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", source.display())))?;
    let size = file.metadata()?.len();
    let mut header = header(EntryType::Regular, mode, size);
    tar.append_data(&mut header, path, file)
}

fn append_dir<W: Write>(tar: &mut Builder<W>, path: &str) -> io::Result<()> {
    let mut header = header(EntryType::Directory, 0o755, 0);
    tar.append_data(&mut header, format!("{path}/"), io::empty())
}

fn append_symlink<W: Write>(tar: &mut Builder<W>, path: &str, target: &str) -> io::Result<()> {
    let mut header = header(EntryType::Symlink, 0o777, 0);
    tar.append_link(&mut header, path, target)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn inputs(dir: &Path) -> ImageInputs {
        for (name, body) in [("bin", "ELF"), ("k", "kernel"), ("i", "cpio")] {
            fs::write(dir.join(name), body).unwrap();
        }
        ImageInputs {
            binary: dir.join("bin"),
            kernel: dir.join("k"),
            initrd: dir.join("i"),
            version: "0.1.0".to_string(),
        }
    }

    #[test]
    fn the_manifest_names_every_entrypoint_and_version_6() {
        let manifest = appc::ImageManifest::from_json(manifest_json("0.1.0").as_bytes()).unwrap();
        assert_eq!(manifest.name.as_str(), IMAGE_NAME);
        assert_eq!(
            manifest.annotation("coreos.com/rkt/stage1/run"),
            Some("/init")
        );
        assert_eq!(
            manifest.annotation("coreos.com/rkt/stage1/enter"),
            Some("/enter_kvm")
        );
        assert_eq!(
            manifest.annotation("coreos.com/rkt/stage1/stop"),
            Some("/stop_kvm")
        );
        assert_eq!(manifest.annotation("coreos.com/rkt/stage1/gc"), Some("/gc"));
        assert_eq!(
            manifest.annotation("coreos.com/rkt/stage1/interface-version"),
            Some("6")
        );
        assert_eq!(manifest.labels.get("arch"), Some("amd64"));
    }

    #[test]
    fn the_image_is_an_aci_and_reproducible() {
        let dir = tempfile::tempdir().unwrap();
        let inputs = inputs(dir.path());
        let (a, b) = (dir.path().join("a.aci"), dir.path().join("b.aci"));
        write_image(&inputs, &a).unwrap();
        write_image(&inputs, &b).unwrap();
        assert_eq!(fs::read(&a).unwrap(), fs::read(&b).unwrap());

        let mut archive = tar::Archive::new(File::open(&a).unwrap());
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().display().to_string();
            let header = entry.header();
            assert_eq!(header.mtime().unwrap(), MTIME);
            assert_eq!((header.uid().unwrap(), header.gid().unwrap()), (0, 0));
            let kind = header.entry_type();
            let link = entry.link_name().unwrap().map(|l| l.display().to_string());
            let mut body = String::new();
            if kind == EntryType::Regular {
                entry.read_to_string(&mut body).unwrap();
            }
            seen.push((path, link, body));
        }
        let names: Vec<&str> = seen
            .iter()
            .map(|(p, _, _)| p.trim_end_matches('/'))
            .collect();
        assert_eq!(
            names,
            [
                "manifest",
                "rootfs",
                "rootfs/stage1-kvm",
                "rootfs/init",
                "rootfs/enter_kvm",
                "rootfs/stop_kvm",
                "rootfs/gc",
                "rootfs/vmlinux",
                "rootfs/initramfs.cpio",
                "rootfs/etc",
                "rootfs/rkt"
            ]
        );
        assert_eq!(seen[3].1.as_deref(), Some("stage1-kvm"));
        assert_eq!(seen[7].2, "kernel");
        assert!(seen[0].2.contains("coreos.com/rkt/stage1/run"));
        assert!(!dir.path().join("a.aci.tmp").exists());
    }

    #[test]
    fn a_missing_input_names_it_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut inputs = inputs(dir.path());
        inputs.kernel = dir.path().join("no-such-kernel");
        let out = dir.path().join("s.aci");
        let err = write_image(&inputs, &out).unwrap_err().to_string();
        assert!(err.contains("no-such-kernel"), "{err}");
        assert!(!out.exists());
        assert!(!dir.path().join("s.aci.tmp").exists());
    }
}
