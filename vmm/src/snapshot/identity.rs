//! What a snapshot may be restored with: the same kernel, initramfs and VMM build (by SHA-256
//! of the files), the same VM shape (memory, vCPUs, the devices the guest probed), and a host
//! CPU that gives the vCPUs the same CPUID (checked in `restore_vcpus`).

use std::fs::File;
use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::format::{DeviceShape, Identity, Shape};
use super::SnapshotError;
use crate::config::VmConfig;
use crate::devices::virtio::VirtioKind;

/// SHA-256 (hex) of a file, read in 1 MiB pieces.
pub fn file_sha256(path: &Path) -> Result<String, SnapshotError> {
    let io_err = |source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    };
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

/// The shape of the VM `config` describes; NICs cannot be part of a snapshot yet.
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
            VirtioKind::Net(_) => return Err(SnapshotError::NetUnsupported),
        });
    }
    Ok(Shape {
        mem_mib: config.mem_mib,
        vcpus: config.vcpus,
        devices,
    })
}

/// The identity of a VM built from `config` by this VMM executable.
pub fn identity_of(config: &VmConfig, guest_cmdline: &str) -> Result<Identity, SnapshotError> {
    Ok(Identity {
        kernel_sha256: file_sha256(&config.kernel.path)?,
        initrd_sha256: config
            .kernel
            .initrd
            .as_deref()
            .map(file_sha256)
            .transpose()?,
        vmm_sha256: file_sha256(Path::new("/proc/self/exe"))?,
        guest_cmdline: guest_cmdline.to_string(),
        shape: shape_of(config)?,
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
    if saved.vmm_sha256 != current.vmm_sha256 {
        return mismatch(
            "VMM build",
            short(&saved.vmm_sha256),
            short(&current.vmm_sha256),
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
            vmm_sha256: "cc".repeat(32),
            guest_cmdline: "quiet".into(),
            shape: Shape {
                mem_mib: 128,
                vcpus: 1,
                devices: vec![DeviceShape::Rng, DeviceShape::Vsock { guest_cid: 3 }],
            },
        }
    }

    #[test]
    fn each_difference_is_named() {
        let saved = identity();
        assert!(check(&saved, &identity()).is_ok());
        let mut other = identity();
        other.kernel_sha256 = "dd".repeat(32);
        assert!(check(&saved, &other).unwrap_err().to_string().contains("kernel"));
        let mut other = identity();
        other.initrd_sha256 = None;
        assert!(check(&saved, &other).unwrap_err().to_string().contains("initramfs"));
        let mut other = identity();
        other.shape.mem_mib = 256;
        let msg = check(&saved, &other).unwrap_err().to_string();
        assert!(msg.contains("memory size") && msg.contains("128 MiB"), "{msg}");
        let mut other = identity();
        other.shape.devices.pop();
        assert!(check(&saved, &other).unwrap_err().to_string().contains("device set"));
    }
}
