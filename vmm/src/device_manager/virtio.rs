//! Creating the virtio devices from their part of the configuration.

use crate::config::VmConfig;
use crate::devices::virtio::fs::{Fs, FsConfig};
use crate::devices::virtio::net::Net;
use crate::devices::virtio::rng::Rng;
use crate::devices::virtio::vsock::{Vsock, VsockConfig};
use crate::devices::virtio::{VirtioDevice, VirtioKind};
use crate::error::VmmError;

/// Builds the device behind one virtio-mmio slot from its part of `config`.
pub(crate) fn create(
    config: &VmConfig,
    kind: VirtioKind,
) -> Result<Box<dyn VirtioDevice>, VmmError> {
    // `kind` comes from `config.virtio_devices()`, so the lookups below only fail on a VMM bug.
    let not_configured = || VmmError::DeviceNotConfigured(kind);
    match kind {
        VirtioKind::Rng => Ok(Box::new(Rng::new())),
        VirtioKind::Fs(index) => {
            let share = config.shares.get(index).ok_or_else(not_configured)?;
            let fs_config = FsConfig {
                tag: share.tag.clone(),
                host_dir: share.host_dir.clone(),
                read_only: share.read_only,
                max_inodes: share.max_inodes,
                guest_only: share.guest_only,
            };
            let fs = Fs::new(&fs_config).map_err(|source| VmmError::Fs {
                tag: share.tag.clone(),
                source,
            })?;
            Ok(Box::new(fs))
        }
        VirtioKind::Vsock => {
            let socket = config.vsock.as_ref().ok_or_else(not_configured)?;
            let vsock_config = VsockConfig {
                guest_cid: socket.guest_cid,
                uds_path: socket.uds_path.clone(),
                host_ports: socket.host_ports.clone(),
            };
            Ok(Box::new(
                Vsock::new(&vsock_config).map_err(VmmError::Vsock)?,
            ))
        }
        VirtioKind::Net(index) => {
            let nic = config.nets.get(index).ok_or_else(not_configured)?;
            let net = Net::new(nic).map_err(|source| VmmError::Net {
                tap: nic.tap_name.clone(),
                source,
            })?;
            Ok(Box::new(net))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::config::{KernelConfig, ShareConfig, VsockConfig as VsockSocket};
    use crate::devices::virtio::fs::FsError;
    use crate::devices::virtio::net::{MacAddr, NetConfig, NetError};
    use crate::devices::virtio::vsock::VsockError;

    fn config() -> VmConfig {
        VmConfig::new(KernelConfig {
            path: PathBuf::from("/nonexistent/vmlinux"),
            initrd: None,
            cmdline: String::new(),
        })
    }

    fn create_err(config: &VmConfig, kind: VirtioKind) -> VmmError {
        match create(config, kind) {
            Ok(_) => panic!("{kind:?} was created"),
            Err(e) => e,
        }
    }

    #[test]
    fn rng_needs_no_configuration() {
        let rng = create(&config(), VirtioKind::Rng).unwrap();
        assert_eq!(rng.device_type(), 4);
    }

    #[test]
    fn a_share_error_is_typed_and_names_the_share() {
        let mut c = config();
        c.shares.push(ShareConfig {
            tag: "pod".into(),
            host_dir: PathBuf::from("/nonexistent/share/dir"),
            read_only: false,
            max_inodes: 16,
            guest_only: false,
        });
        let err = create_err(&c, VirtioKind::Fs(0));
        let text = err.to_string();
        match err {
            VmmError::Fs { tag, source } => {
                assert_eq!(tag, "pod");
                assert!(matches!(source, FsError::HostDir { .. }), "{source:?}");
            }
            other => panic!("not an Fs error: {other:?}"),
        }
        // The wording users saw before the errors were typed.
        assert!(
            text.starts_with("share \"pod\": cannot open shared directory /nonexistent/share/dir"),
            "{text}"
        );
    }

    #[test]
    fn a_vsock_error_is_typed() {
        let mut c = config();
        c.vsock = Some(VsockSocket {
            guest_cid: 2,
            uds_path: PathBuf::from("/nonexistent/vsock.sock"),
            host_ports: Vec::new(),
        });
        let err = create_err(&c, VirtioKind::Vsock);
        assert!(
            err.to_string().starts_with("vsock: vsock guest CID 2"),
            "{err}"
        );
        assert!(
            matches!(err, VmmError::Vsock(VsockError::BadCid(2))),
            "{err:?}"
        );
    }

    #[test]
    fn a_net_error_is_typed_and_keeps_the_tap() {
        let mut c = config();
        c.nets.push(NetConfig {
            tap_name: "tap9".into(),
            mac: MacAddr([1, 0, 0x5e, 0, 0, 1]),
        });
        let err = create_err(&c, VirtioKind::Net(0));
        assert!(
            err.to_string().starts_with("virtio-net: guest MAC address"),
            "{err}"
        );
        match err {
            VmmError::Net { tap, source } => {
                assert_eq!(tap, "tap9");
                assert!(matches!(source, NetError::MulticastMac(_)), "{source:?}");
            }
            other => panic!("not a Net error: {other:?}"),
        }
    }

    #[test]
    fn a_kind_without_configuration_is_a_vmm_bug() {
        for kind in [VirtioKind::Fs(0), VirtioKind::Vsock, VirtioKind::Net(3)] {
            let err = create_err(&config(), kind);
            assert!(
                matches!(err, VmmError::DeviceNotConfigured(k) if k == kind),
                "{err:?}"
            );
            assert!(err.to_string().contains("a VMM bug"), "{err}");
        }
    }
}
