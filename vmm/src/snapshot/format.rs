//! The state file: what a snapshot keeps besides guest memory, and how it sits on disk.
//!
//! Layout (all integers little-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 8 | magic `RKTSNAP\n` |
//! | 4 | format version ([`FORMAT_VERSION`]) |
//! | 4 | reserved, 0 |
//! | 8 | payload length |
//! | 32 | SHA-256 of the payload |
//! | n | payload: [`SnapshotState`] in postcard's serde encoding |
//!
//! The file is never trusted: its length is checked against the header and a bound before
//! anything is allocated, the checksum before the payload is decoded, and every count inside
//! against the VM before it is used.
//!
//! Why postcard and not JSON (format version 2 was JSON, the KVM structures hex strings in
//! it): decoding that JSON took 13-14 ms of every restore in the emulated test host, on the
//! way to the guest's first instruction; postcard decodes the same state in well under one.
//! A list's claimed length is not trusted: serde preallocates at most 1 MiB for it, and the
//! decoding stops at the payload's end; byte strings are taken from the payload as they are.
//! Bytes left over after the state are refused.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use super::SnapshotError;
use crate::devices::legacy::i8042::I8042State;
use crate::devices::virtio::TransportState;

/// The first bytes of every state file.
pub const MAGIC: &[u8; 8] = b"RKTSNAP\n";
/// Bumped whenever [`SnapshotState`], its encoding or its meaning changes; other versions are
/// refused. 3: the payload is postcard, not JSON.
pub const FORMAT_VERSION: u32 = 3;
/// Header size.
pub const HEADER_LEN: usize = 8 + 4 + 4 + 8 + 32;
/// The largest payload we read (a 254-vCPU VM needs about 5 MiB).
pub const MAX_PAYLOAD: u64 = 32 << 20;
/// Bounds on the lists inside, checked after parsing.
pub const MAX_MSRS: usize = 1024;
/// KVM's own limit on CPUID entries.
pub const MAX_CPUID_ENTRIES: usize = kvm_bindings::KVM_MAX_CPUID_ENTRIES;

/// Bytes of a KVM structure: raw bytes in the state file, a hex string in human-readable
/// encodings (JSON, for a test's or a person's look at a state).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Blob(pub Vec<u8>);

impl Serialize for Blob {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&hex::encode(&self.0))
        } else {
            serializer.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let text = String::deserialize(deserializer)?;
            return hex::decode(text)
                .map(Blob)
                .map_err(serde::de::Error::custom);
        }
        deserializer.deserialize_byte_buf(BlobVisitor)
    }
}

/// A [`Blob`]'s bytes from a binary encoding.
struct BlobVisitor;

impl<'de> serde::de::Visitor<'de> for BlobVisitor {
    type Value = Blob;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("the bytes of a KVM structure")
    }

    fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Blob, E> {
        Ok(Blob(bytes.to_vec()))
    }

    fn visit_byte_buf<E: serde::de::Error>(self, bytes: Vec<u8>) -> Result<Blob, E> {
        Ok(Blob(bytes))
    }
}

/// Everything a snapshot keeps besides guest memory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotState {
    /// What the snapshot may be restored with.
    pub identity: Identity,
    /// VM-wide KVM state.
    pub vm: VmState,
    /// Per-vCPU KVM state, in vCPU order.
    pub vcpus: Vec<VcpuState>,
    /// The VMM's devices.
    pub devices: DeviceStates,
}

/// What must be the same at restore time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// SHA-256 (hex) of the kernel file.
    pub kernel_sha256: String,
    /// SHA-256 (hex) of the initramfs, if any.
    pub initrd_sha256: Option<String>,
    /// The VMM executable that made the snapshot: `gnu-build-id:<hex>` (the build ID its
    /// linker wrote), or `sha256:<hex>` of the whole file when it has none.
    pub vmm_build: String,
    /// The command line the guest kernel booted with (informational: warm guests take their
    /// real parameters from the handover).
    pub guest_cmdline: String,
    /// Memory, vCPUs and devices.
    pub shape: Shape,
    /// Where the hashed files were when hashed (`kernel`, `initrd`, and `vmm` when it had no
    /// build ID): a file whose stamp is unchanged at restore is not hashed again.
    pub stamps: std::collections::BTreeMap<String, FileStamp>,
}

/// A file's identity on disk: any write changes its ctime, a replacement its inode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileStamp {
    /// Device.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i128,
    /// Status change time, ns since the epoch.
    pub ctime_ns: i128,
}

/// The VM's shape: what the guest kernel has seen and keeps believing after a restore.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shape {
    /// Guest RAM in MiB.
    pub mem_mib: u64,
    /// vCPUs.
    pub vcpus: u8,
    /// The virtio devices in slot order.
    pub devices: Vec<DeviceShape>,
}

/// One virtio device as the guest knows it (the parts it read at probe time).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum DeviceShape {
    /// virtio-rng.
    Rng,
    /// virtio-fs with this tag (the host directory and the inode cap are the restoring VM's
    /// own).
    Fs {
        /// Its tag.
        tag: String,
        /// Served read-only.
        read_only: bool,
    },
    /// virtio-vsock with this guest CID (the socket path and the registered host ports are the
    /// restoring VM's own).
    Vsock {
        /// The guest's CID.
        guest_cid: u64,
    },
    /// virtio-net (the tap and the MAC are the restoring VM's own: the guest keeps the MAC it
    /// read at boot until guest-init sets the pod's, see docs/foundation.md).
    Net,
}

/// VM-wide KVM state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmState {
    /// `kvm_irqchip` of the master PIC.
    pub pic_master: Blob,
    /// `kvm_irqchip` of the slave PIC.
    pub pic_slave: Blob,
    /// `kvm_irqchip` of the IOAPIC.
    pub ioapic: Blob,
    /// `kvm_pit_state2`.
    pub pit: Blob,
    /// `kvm_clock_data` (kvmclock).
    pub clock: Blob,
}

/// One vCPU's KVM state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VcpuState {
    /// The CPUID table the vCPU was given (`kvm_cpuid_entry2` each), compared with what this
    /// host would give it.
    pub cpuid: Vec<Blob>,
    /// `kvm_mp_state`.
    pub mp_state: Blob,
    /// `kvm_regs`.
    pub regs: Blob,
    /// `kvm_sregs`.
    pub sregs: Blob,
    /// `kvm_xsave` (x87, SSE, AVX ... state).
    pub xsave: Blob,
    /// `kvm_xcrs`.
    pub xcrs: Blob,
    /// `kvm_debugregs`.
    pub debug_regs: Blob,
    /// `kvm_lapic_state`.
    pub lapic: Blob,
    /// Every MSR KVM lists that could be read, as (index, value), TSC before TSC_DEADLINE.
    pub msrs: Vec<(u32, u64)>,
    /// `kvm_vcpu_events` (pending exceptions, interrupts, NMIs, SMM).
    pub events: Blob,
    /// The guest TSC frequency in kHz.
    pub tsc_khz: u32,
}

/// The VMM's own devices.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceStates {
    /// The 8250 UART.
    pub serial: SerialSnapshot,
    /// The i8042 controller.
    pub i8042: I8042State,
    /// The virtio-mmio transports in slot order.
    pub virtio: Vec<TransportState>,
}

/// vm-superio's `SerialState`, which has no serde support of its own.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialSnapshot {
    /// Registers, in vm-superio's order.
    pub registers: [u8; 9],
    /// Bytes the guest has not read yet (vm-superio refuses more than its FIFO holds).
    pub in_buffer: Vec<u8>,
}

impl SerialSnapshot {
    /// From vm-superio's state.
    pub fn from_state(s: &vm_superio::serial::SerialState) -> Self {
        SerialSnapshot {
            registers: [
                s.baud_divisor_low,
                s.baud_divisor_high,
                s.interrupt_enable,
                s.interrupt_identification,
                s.line_control,
                s.line_status,
                s.modem_control,
                s.modem_status,
                s.scratch,
            ],
            in_buffer: s.in_buffer.clone(),
        }
    }

    /// To vm-superio's state.
    pub fn to_state(&self) -> vm_superio::serial::SerialState {
        let r = self.registers;
        vm_superio::serial::SerialState {
            baud_divisor_low: r[0],
            baud_divisor_high: r[1],
            interrupt_enable: r[2],
            interrupt_identification: r[3],
            line_control: r[4],
            line_status: r[5],
            modem_control: r[6],
            modem_status: r[7],
            scratch: r[8],
            in_buffer: self.in_buffer.clone(),
        }
    }
}

/// Writes `state` to `path` (through a temporary file renamed into place, so a crash leaves
/// either no file or a complete one).
pub fn write_state(path: &Path, state: &SnapshotState) -> Result<u64, SnapshotError> {
    let payload = postcard::to_stdvec(state)
        .map_err(|e| SnapshotError::Corrupt(format!("cannot encode the state: {e}")))?;
    let bytes = file_bytes(&payload);
    let tmp = path.with_extension("tmp");
    let io_err = SnapshotError::io(path);
    let mut file = File::create(&tmp).map_err(io_err)?;
    file.write_all(&bytes).map_err(io_err)?;
    file.sync_all().map_err(io_err)?;
    std::fs::rename(&tmp, path).map_err(io_err)?;
    Ok(bytes.len() as u64)
}

/// The state file holding `payload`: the header (magic, this format version, the payload's
/// length and SHA-256), then the payload. The fuzz target and the tests build files with it
/// around payloads of their own.
pub fn file_bytes(payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADER_LEN + payload.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&0u32.to_le_bytes());
    bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&Sha256::digest(payload));
    bytes.extend_from_slice(payload);
    bytes
}

/// Reads and checks the state file at `path`.
pub fn read_state(path: &Path) -> Result<SnapshotState, SnapshotError> {
    let io_err = SnapshotError::io(path);
    let mut file = File::open(path).map_err(io_err)?;
    let file_len = file.metadata().map_err(io_err)?.len();
    let mut header = [0u8; HEADER_LEN];
    let header_len = (file_len.min(HEADER_LEN as u64)) as usize;
    file.read_exact(&mut header[..header_len]).map_err(io_err)?;
    // The magic first: a file that is something else entirely is named as such.
    let magic_len = header_len.min(MAGIC.len());
    if header[..magic_len] != MAGIC[..magic_len] || file_len == 0 {
        return Err(SnapshotError::NotASnapshot(path.to_path_buf()));
    }
    if header_len < HEADER_LEN {
        return Err(SnapshotError::Truncated(path.to_path_buf()));
    }
    let field =
        |at: usize| -> [u8; 4] { [header[at], header[at + 1], header[at + 2], header[at + 3]] };
    let version = u32::from_le_bytes(field(8));
    if version != FORMAT_VERSION {
        return Err(SnapshotError::FormatVersion(version));
    }
    let mut len_bytes = [0u8; 8];
    len_bytes.copy_from_slice(&header[16..24]);
    let payload_len = u64::from_le_bytes(len_bytes);
    if payload_len > MAX_PAYLOAD {
        return Err(SnapshotError::Corrupt(format!(
            "the state claims {payload_len} bytes, more than the {MAX_PAYLOAD} a snapshot may have"
        )));
    }
    if file_len - HEADER_LEN as u64 != payload_len {
        return Err(SnapshotError::Truncated(path.to_path_buf()));
    }
    let mut payload = vec![0u8; payload_len as usize];
    file.read_exact(&mut payload).map_err(io_err)?;
    if Sha256::digest(&payload).as_slice() != &header[24..56] {
        return Err(SnapshotError::Checksum(path.to_path_buf()));
    }
    let (state, rest): (SnapshotState, _) = postcard::take_from_bytes(&payload)
        .map_err(|e| SnapshotError::Corrupt(format!("the state does not decode: {e}")))?;
    if !rest.is_empty() {
        return Err(SnapshotError::Corrupt(format!(
            "{} bytes after the state",
            rest.len()
        )));
    }
    state.check_bounds()?;
    Ok(state)
}

impl SnapshotState {
    /// Counts inside the state that the rest of the VMM relies on.
    fn check_bounds(&self) -> Result<(), SnapshotError> {
        let corrupt = |what: String| Err(SnapshotError::Corrupt(what));
        if self.vcpus.len() != usize::from(self.identity.shape.vcpus) {
            return corrupt(format!(
                "{} vCPU states for {} vCPUs",
                self.vcpus.len(),
                self.identity.shape.vcpus
            ));
        }
        if self.devices.virtio.len() != self.identity.shape.devices.len() {
            return corrupt("device states do not match the device list".into());
        }
        for (i, vcpu) in self.vcpus.iter().enumerate() {
            if vcpu.msrs.len() > MAX_MSRS || vcpu.cpuid.len() > MAX_CPUID_ENTRIES {
                return corrupt(format!("vCPU {i} has too many MSRs or CPUID entries"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::mmio::QueueSnapshot;

    /// A state of one vCPU and two devices, its KVM structures of their real sizes.
    fn state() -> SnapshotState {
        let blob =
            |len: usize, seed: u8| Blob((0..len).map(|i| (i as u8).wrapping_mul(seed)).collect());
        let mut stamps = std::collections::BTreeMap::new();
        stamps.insert(
            "kernel".to_string(),
            FileStamp {
                dev: 1,
                ino: 2,
                size: 3,
                mtime_ns: -4,
                ctime_ns: i128::MAX,
            },
        );
        let queue = QueueSnapshot {
            size: 256,
            ready: true,
            desc_table: 0x1000,
            avail_ring: 0x2000,
            used_ring: 0x3000,
            avail_idx: 7,
            used_idx: 7,
        };
        let transport = |device_type| TransportState {
            device_type,
            status: 15,
            driver_features: 1 << 32,
            device_features_sel: 1,
            driver_features_sel: 1,
            queue_sel: 0,
            config_generation: 0,
            interrupt_status: 0,
            activated: true,
            queues: vec![queue; 2],
        };
        SnapshotState {
            identity: Identity {
                kernel_sha256: "aa".repeat(32),
                initrd_sha256: None,
                vmm_build: "gnu-build-id:cc".into(),
                guest_cmdline: "quiet rkt.warm=1".into(),
                shape: Shape {
                    mem_mib: 128,
                    vcpus: 1,
                    devices: vec![
                        DeviceShape::Fs {
                            tag: "pod".into(),
                            read_only: false,
                        },
                        DeviceShape::Vsock { guest_cid: 3 },
                    ],
                },
                stamps,
            },
            vm: VmState {
                pic_master: blob(32, 3),
                pic_slave: blob(32, 5),
                ioapic: blob(200, 7),
                pit: blob(112, 11),
                clock: blob(48, 13),
            },
            vcpus: vec![VcpuState {
                cpuid: (0..80).map(|i| blob(40, i)).collect(),
                mp_state: blob(4, 1),
                regs: blob(144, 17),
                sregs: blob(312, 19),
                xsave: blob(4096, 23),
                xcrs: blob(392, 29),
                debug_regs: blob(128, 31),
                lapic: blob(1024, 37),
                msrs: (0..60)
                    .map(|i| (0xc000_0080 + i, u64::MAX - u64::from(i)))
                    .collect(),
                events: blob(64, 41),
                tsc_khz: 2_000_000,
            }],
            devices: DeviceStates {
                serial: SerialSnapshot {
                    registers: [1, 2, 3, 4, 5, 6, 7, 8, 9],
                    in_buffer: b"in".to_vec(),
                },
                i8042: I8042State {
                    ctr: 0x47,
                    output: vec![(0xfa, false)],
                    last_was_command: false,
                },
                virtio: vec![transport(26), transport(19)],
            },
        }
    }

    #[test]
    fn a_state_reads_back_as_written_and_a_changed_byte_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        let written = write_state(&path, &state()).unwrap();
        // Binary: the KVM structures take their own size, not twice that in hex.
        assert!(written < 12 << 10, "{written} bytes");
        assert_eq!(read_state(&path).unwrap(), state());

        // Any change fails the checksum, before anything is decoded.
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(read_state(&path), Err(SnapshotError::Checksum(_))));
    }

    /// Behind a correct header (as if the checksum had been forged), a payload that does not
    /// decode, or has bytes after the state, is refused as corrupt.
    #[test]
    fn a_payload_that_does_not_decode_or_runs_on_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        let good = postcard::to_stdvec(&state()).unwrap();
        for payload in [
            good[..good.len() / 2].to_vec(),
            [good.as_slice(), b"more"].concat(),
            vec![0xff; 64],
        ] {
            std::fs::write(&path, file_bytes(&payload)).unwrap();
            let result = read_state(&path);
            assert!(
                matches!(result, Err(SnapshotError::Corrupt(_))),
                "{result:?}"
            );
        }
        std::fs::write(&path, file_bytes(&good)).unwrap();
        assert_eq!(read_state(&path).unwrap(), state());
    }

    #[test]
    fn short_files_are_told_apart_from_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        for (bytes, want) in [
            (&b""[..], "not a snapshot"),
            (b"RKTSN", "truncated"),
            (b"RKTSNAP\n\x01\0\0\0", "truncated"),
            (b"hello", "not a snapshot"),
        ] {
            std::fs::write(&path, bytes).unwrap();
            let message = read_state(&path).unwrap_err().to_string();
            assert!(message.contains(want), "{bytes:?}: {message}");
        }
        let mut header = Vec::from(&MAGIC[..]);
        header.extend_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        header.extend_from_slice(&[0; HEADER_LEN - 12]);
        std::fs::write(&path, &header).unwrap();
        let message = read_state(&path).unwrap_err().to_string();
        let newer = format!("format version {}", FORMAT_VERSION + 1);
        assert!(message.contains(&newer), "{message}");
        let mut huge = Vec::from(&MAGIC[..]);
        huge.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        huge.extend_from_slice(&0u32.to_le_bytes());
        huge.extend_from_slice(&u64::MAX.to_le_bytes());
        huge.extend_from_slice(&[0; 32]);
        std::fs::write(&path, &huge).unwrap();
        let message = read_state(&path).unwrap_err().to_string();
        assert!(message.contains("more than"), "{message}");
    }
}
