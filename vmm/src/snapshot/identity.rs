//! What a snapshot may be restored with: the same kernel and initramfs (by SHA-256 of the
//! files), the same VMM build (by the GNU build ID its linker wrote), the same VM shape
//! (memory, vCPUs, the devices the guest probed), and a host CPU that gives the vCPUs the same
//! CPUID (checked in `restore_vcpus`).

use std::fs::File;
use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;

use super::format::{DeviceShape, FileStamp, Identity, Shape};
use super::SnapshotError;
use crate::config::VmConfig;
use crate::devices::virtio::VirtioKind;

/// SHA-256 (hex) of a file, read in 1 MiB pieces.
pub fn file_sha256(path: &Path) -> Result<String, SnapshotError> {
    let io_err = SnapshotError::io(path);
    let mut file = File::open(path).map_err(io_err)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io_err)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The shape of the VM `config` describes. A NIC counts by its place only: its tap and MAC
/// are the restoring VM's own.
pub fn shape_of(config: &VmConfig) -> Result<Shape, SnapshotError> {
    let mut devices = Vec::new();
    for kind in config.virtio_devices() {
        devices.push(match kind {
            VirtioKind::Rng => DeviceShape::Rng,
            VirtioKind::Fs(i) => {
                let share = config
                    .shares
                    .get(i)
                    .ok_or_else(|| SnapshotError::Corrupt("share index out of range".into()))?;
                DeviceShape::Fs {
                    tag: share.tag.clone(),
                    read_only: share.read_only,
                }
            }
            VirtioKind::Vsock => DeviceShape::Vsock {
                guest_cid: config.vsock.as_ref().map_or(0, |v| v.guest_cid),
            },
            VirtioKind::Net(_) => DeviceShape::Net,
        });
    }
    Ok(Shape {
        mem_mib: config.mem_mib,
        vcpus: config.vcpus,
        devices,
    })
}

fn stamp_of(path: &Path) -> Result<FileStamp, SnapshotError> {
    let meta = std::fs::metadata(path).map_err(SnapshotError::io(path))?;
    let ns = |secs: i64, nsec: i64| i128::from(secs) * 1_000_000_000 + i128::from(nsec);
    Ok(FileStamp {
        dev: meta.dev(),
        ino: meta.ino(),
        size: meta.size(),
        mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
        ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
    })
}

/// The SHA-256 of the file `role` at `path`, taken from `known` when the file's stamp is the
/// one recorded there (hashing ~25 MB costs seconds inside the emulated test host, more than
/// the restore itself), else computed; records the stamp in `stamps`.
fn hash_with_stamp(
    role: &str,
    path: &Path,
    known: Option<(&Identity, &str)>,
    stamps: &mut BTreeMap<String, FileStamp>,
) -> Result<String, SnapshotError> {
    let stamp = stamp_of(path)?;
    stamps.insert(role.to_string(), stamp);
    if let Some((saved, hash)) = known {
        if saved.stamps.get(role) == Some(&stamp) {
            return Ok(hash.to_string());
        }
    }
    file_sha256(path)
}

/// The GNU build ID of the ELF executable at `path`, if its linker wrote one (Debian's does by
/// default). It is a hash of the linked file, so it names one build, and reading it takes the
/// ELF and program headers and the note segments only (a few KiB), where hashing the stage1-kvm
/// binary took a measurable part of every restore: each pod runs its own copy, whose stamp is
/// new. Only the program headers are walked: a full ELF parse also reads the section headers
/// and the symbol table (about 5 ms of every restore in the emulated test host).
fn gnu_build_id(path: &Path) -> Result<Option<Vec<u8>>, SnapshotError> {
    use object::elf::{FileHeader64, ELF_NOTE_GNU, NT_GNU_BUILD_ID, PT_NOTE};
    use object::read::elf::{FileHeader, ProgramHeader};
    use object::{Endianness, ReadCache};
    let file = File::open(path).map_err(SnapshotError::io(path))?;
    let data = &ReadCache::new(file);
    // An executable the ELF reader does not understand has no build ID we can use; the caller
    // then hashes the whole file.
    let Ok(header) = FileHeader64::<Endianness>::parse(data) else {
        return Ok(None);
    };
    let Ok(endian) = header.endian() else {
        return Ok(None);
    };
    let Ok(segments) = header.program_headers(endian, data) else {
        return Ok(None);
    };
    for segment in segments.iter().filter(|s| s.p_type(endian) == PT_NOTE) {
        let Ok(Some(mut notes)) = segment.notes(endian, data) else {
            continue;
        };
        while let Ok(Some(note)) = notes.next() {
            if note.name() == ELF_NOTE_GNU && note.n_type(endian) == NT_GNU_BUILD_ID {
                return Ok(Some(note.desc().to_vec()));
            }
        }
    }
    Ok(None)
}

/// The identity of a VM built from `config` by this VMM executable. With `saved` (restoring),
/// files whose stamps are unchanged since `saved` was made are not hashed again.
pub fn identity_of(
    config: &VmConfig,
    guest_cmdline: &str,
    saved: Option<&Identity>,
) -> Result<Identity, SnapshotError> {
    let mut stamps = BTreeMap::new();
    let kernel_sha256 = hash_with_stamp(
        "kernel",
        &config.kernel.path,
        saved.map(|s| (s, s.kernel_sha256.as_str())),
        &mut stamps,
    )?;
    let initrd_sha256 = match &config.kernel.initrd {
        None => None,
        Some(path) => Some(hash_with_stamp(
            "initrd",
            path,
            saved.and_then(|s| s.initrd_sha256.as_deref().map(|h| (s, h))),
            &mut stamps,
        )?),
    };
    let exe = Path::new("/proc/self/exe");
    let vmm_build = match gnu_build_id(exe)? {
        Some(id) => format!("gnu-build-id:{}", hex::encode(id)),
        None => {
            let known = saved.and_then(|s| s.vmm_build.strip_prefix("sha256:").map(|h| (s, h)));
            format!(
                "sha256:{}",
                hash_with_stamp("vmm", exe, known, &mut stamps)?
            )
        }
    };
    Ok(Identity {
        kernel_sha256,
        initrd_sha256,
        vmm_build,
        guest_cmdline: guest_cmdline.to_string(),
        shape: shape_of(config)?,
        stamps,
    })
}

/// Refuses a snapshot whose identity differs from `current`, naming the first difference.
pub fn check(saved: &Identity, current: &Identity) -> Result<(), SnapshotError> {
    let mismatch = |what: &'static str, saved: String, now: String| {
        Err(SnapshotError::Mismatch { what, saved, now })
    };
    if saved.kernel_sha256 != current.kernel_sha256 {
        return mismatch(
            "kernel",
            short(&saved.kernel_sha256),
            short(&current.kernel_sha256),
        );
    }
    if saved.initrd_sha256 != current.initrd_sha256 {
        let show = |h: &Option<String>| h.as_deref().map_or("none".to_string(), short);
        return mismatch(
            "initramfs",
            show(&saved.initrd_sha256),
            show(&current.initrd_sha256),
        );
    }
    if saved.vmm_build != current.vmm_build {
        let show = |build: &str| build.get(..24).unwrap_or(build).to_string();
        return mismatch(
            "VMM build",
            show(&saved.vmm_build),
            show(&current.vmm_build),
        );
    }
    let (s, c) = (&saved.shape, &current.shape);
    if s.mem_mib != c.mem_mib {
        return mismatch(
            "memory size",
            format!("{} MiB", s.mem_mib),
            format!("{} MiB", c.mem_mib),
        );
    }
    if s.vcpus != c.vcpus {
        return mismatch("vCPU count", s.vcpus.to_string(), c.vcpus.to_string());
    }
    if s.devices != c.devices {
        return mismatch(
            "device set",
            format!("{:?}", s.devices),
            format!("{:?}", c.devices),
        );
    }
    Ok(())
}

fn short(hash: &str) -> String {
    format!("sha256 {}", hash.get(..12).unwrap_or(hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> Identity {
        Identity {
            kernel_sha256: "aa".repeat(32),
            initrd_sha256: Some("bb".repeat(32)),
            vmm_build: format!("gnu-build-id:{}", "cc".repeat(20)),
            guest_cmdline: "quiet".into(),
            shape: Shape {
                mem_mib: 128,
                vcpus: 1,
                devices: vec![DeviceShape::Rng, DeviceShape::Vsock { guest_cid: 3 }],
            },
            stamps: BTreeMap::new(),
        }
    }

    #[test]
    fn unchanged_files_are_not_hashed_again_and_changed_ones_are() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kernel");
        std::fs::write(&file, b"one").unwrap();
        let mut stamps = BTreeMap::new();
        let first = hash_with_stamp("kernel", &file, None, &mut stamps).unwrap();
        let mut saved = identity();
        saved.kernel_sha256 = "not-the-real-hash".into();
        saved.stamps = stamps.clone();
        let again = hash_with_stamp(
            "kernel",
            &file,
            Some((&saved, "not-the-real-hash")),
            &mut stamps,
        );
        assert_eq!(
            again.unwrap(),
            "not-the-real-hash",
            "stamp unchanged: hash reused"
        );
        std::fs::write(&file, b"two!").unwrap();
        let changed = hash_with_stamp(
            "kernel",
            &file,
            Some((&saved, "not-the-real-hash")),
            &mut stamps,
        );
        assert_ne!(changed.unwrap(), first, "rewritten: hashed again");
    }

    #[test]
    fn the_vmm_build_is_its_build_id_and_a_file_without_one_has_none() {
        // build.rs asks the linker for a build ID, so this test executable has one.
        let id = gnu_build_id(Path::new("/proc/self/exe")).unwrap();
        assert_eq!(id.as_ref().map(Vec::len), Some(20), "a SHA-1 build ID");
        // The same ID as a full parse of the file finds through its section headers, here and
        // for a binary of the host's.
        for exe in ["/proc/self/exe", "/bin/true"] {
            use object::Object;
            let bytes = std::fs::read(exe).unwrap();
            let full = object::File::parse(&*bytes).unwrap();
            let want = full.build_id().unwrap().map(<[u8]>::to_vec);
            assert!(want.is_some(), "{exe} has a build ID");
            assert_eq!(gnu_build_id(Path::new(exe)).unwrap(), want, "{exe}");
        }
        let dir = tempfile::tempdir().unwrap();
        let not_elf = dir.path().join("not-elf");
        std::fs::write(&not_elf, b"#!/bin/sh\n").unwrap();
        assert_eq!(gnu_build_id(&not_elf).unwrap(), None);
        let truncated = dir.path().join("truncated");
        let exe = std::fs::read("/proc/self/exe").unwrap();
        std::fs::write(&truncated, &exe[..100]).unwrap();
        assert_eq!(gnu_build_id(&truncated).unwrap(), None);
    }

    #[test]
    fn each_difference_is_named() {
        let saved = identity();
        assert!(check(&saved, &identity()).is_ok());
        let mut other = identity();
        other.kernel_sha256 = "dd".repeat(32);
        assert!(check(&saved, &other)
            .unwrap_err()
            .to_string()
            .contains("kernel"));
        let mut other = identity();
        other.initrd_sha256 = None;
        assert!(check(&saved, &other)
            .unwrap_err()
            .to_string()
            .contains("initramfs"));
        let mut other = identity();
        other.vmm_build = format!("gnu-build-id:{}", "dd".repeat(20));
        let msg = check(&saved, &other).unwrap_err().to_string();
        assert!(
            msg.contains("VMM build") && msg.contains("gnu-build-id:cccc"),
            "{msg}"
        );
        let mut other = identity();
        other.shape.mem_mib = 256;
        let msg = check(&saved, &other).unwrap_err().to_string();
        assert!(
            msg.contains("memory size") && msg.contains("128 MiB"),
            "{msg}"
        );
        let mut other = identity();
        other.shape.devices.pop();
        assert!(check(&saved, &other)
            .unwrap_err()
            .to_string()
            .contains("device set"));
    }
}
