//! The one typed configuration of a VM: frontends (the `rkt-vmm` debug binary, stage1-kvm) build
//! a [`VmConfig`] and hand it to [`crate::run`]; nothing else decides how the VM looks.

use std::path::PathBuf;

use thiserror::Error;

use crate::devices::virtio::{MmioSlot, VirtioKind};

pub use crate::devices::virtio::fs::DEFAULT_MAX_INODES;
pub use crate::devices::virtio::net::{MacAddr, NetConfig};

/// Smallest guest RAM we accept. A tiny kernel plus initramfs needs more than this anyway; the
/// precise requirement is checked when the kernel is loaded (see `VmmError::MemoryTooSmall`).
pub const MIN_MEM_MIB: u64 = 16;

/// Largest guest RAM we accept (1 TiB); far above any pod, it only keeps the arithmetic sane.
pub const MAX_MEM_MIB: u64 = 1 << 20;

/// The MP table describes processors with 8-bit APIC IDs and the IOAPIC takes the ID after the
/// last vCPU, so 254 vCPUs is the ceiling whatever KVM allows.
pub const MAX_VCPUS: u8 = 254;

/// x86 Linux copies at most `COMMAND_LINE_SIZE` (2048) bytes including the terminating NUL.
pub const MAX_CMDLINE_LEN: usize = 2047;

/// The default cap of the console file ([`VmConfig::console_max_bytes`]): 4 MiB, so at most
/// 8 MiB of console per VM are on disk.
pub const DEFAULT_CONSOLE_MAX_BYTES: u64 = 4 << 20;

/// Where the guest's serial console (ttyS0) goes.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SerialOutput {
    /// The VMM's standard output.
    Stdout,
    /// A file, created or emptied (it must be a regular file with one link, never a symlink),
    /// capped at [`VmConfig::console_max_bytes`] and rotated to `<path>.1` when full
    /// ([`crate::log_file::RotatingFile`]).
    File(PathBuf),
    /// Discarded; the VMM still scans it for the exit marker and kernel panics.
    Off,
}

/// The guest kernel and what it boots with.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KernelConfig {
    /// An ELF `vmlinux` (booted through its PVH entry when it has one) or a `bzImage`.
    pub path: PathBuf,
    /// The kernel command line as the user wrote it; everything after ` -- ` goes to init.
    pub cmdline: String,
    /// An uncompressed or compressed initramfs, placed at the top of low memory.
    pub initrd: Option<PathBuf>,
}

/// Everything needed to build and run one VM.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VmConfig {
    /// Guest RAM in MiB.
    pub mem_mib: u64,
    /// Number of vCPUs, each on its own thread.
    pub vcpus: u8,
    /// Kernel, command line and initramfs.
    pub kernel: KernelConfig,
    /// Where ttyS0 goes.
    pub serial: SerialOutput,
    /// With [`SerialOutput::File`]: the most bytes the console file holds before it is
    /// rotated to `<path>.1` (replacing an older one), so a guest printing forever keeps at
    /// most twice this on the host's disk. Not 0. Default [`DEFAULT_CONSOLE_MAX_BYTES`] (4 MiB).
    pub console_max_bytes: u64,
    /// Collect KVM's and the VMM's counters for `--stats` (costs a few reads at the end).
    pub collect_stats: bool,
    /// Give the guest a virtio-rng device fed from the host's getrandom.
    pub rng: bool,
    /// Host directories served to the guest over virtio-fs, one device each.
    pub shares: Vec<ShareConfig>,
    /// The guest's vsock device and the host unix socket it is reached through.
    pub vsock: Option<VsockConfig>,
    /// NICs, one virtio-net device each, attached to existing taps in the VMM's network
    /// namespace; the guest sees them as eth0, eth1, ... in this order.
    pub nets: Vec<NetConfig>,
}

/// One host directory served to the guest over virtio-fs; the guest mounts it with
/// `mount -t virtiofs TAG DIR`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ShareConfig {
    /// The tag the guest mounts it by (1 to 36 bytes).
    pub tag: String,
    /// The directory; nothing outside it is reachable from the guest.
    pub host_dir: PathBuf,
    /// Every modifying request is refused with EROFS by the VMM itself.
    pub read_only: bool,
    /// The most inodes the guest may hold at once in this share (besides its root; not 0).
    /// The VMM keeps a host file descriptor per inode the guest has looked up and not yet
    /// forgotten, so this bounds the descriptors one share can pin: beyond it a lookup or
    /// creation of another inode fails with ENFILE, while inodes already held keep working and
    /// the guest's FORGETs (its kernel evicting inodes) make room. Default
    /// [`DEFAULT_MAX_INODES`] (65536).
    pub max_inodes: usize,
    /// Nothing but the guest changes this tree while the VM runs (the pod share: the pod's
    /// own root file systems). The guest then keeps file data and directory listings cached
    /// across opens instead of dropping them at every open (close-to-open consistency, what a
    /// tree the host may change needs). Only the guest's own view depends on it. Default false.
    #[serde(default)]
    pub guest_only: bool,
}

impl ShareConfig {
    /// A share of `host_dir` under `tag` with the default inode cap.
    pub fn new(tag: impl Into<String>, host_dir: impl Into<PathBuf>, read_only: bool) -> Self {
        ShareConfig {
            tag: tag.into(),
            host_dir: host_dir.into(),
            read_only,
            max_inodes: DEFAULT_MAX_INODES,
            guest_only: false,
        }
    }

    /// The same share, declared as changed by nothing but the guest while the VM runs (see
    /// [`ShareConfig::guest_only`]).
    pub fn guest_only(mut self) -> Self {
        self.guest_only = true;
        self
    }
}

/// The guest's vsock device: the guest has context ID `guest_cid`; host processes connect to
/// the unix socket `uds_path` and write `CONNECT <port>\n` to reach a guest listener, and guest
/// connections to a host port P in `host_ports` are forwarded to the unix socket
/// `<uds_path>_P` (which must be a socket itself, never a symlink).
///
/// On a warm-start restore the ports come from the restoring configuration like the socket
/// path: they are not part of a snapshot's identity.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VsockConfig {
    /// The guest's context ID (3 or more; 0-2 are reserved).
    pub guest_cid: u64,
    /// Where the VMM listens; created at start, removed at exit; must not exist beforehand.
    pub uds_path: PathBuf,
    /// The only host ports the guest may connect to; a connection to any other port is
    /// refused (RST) without the VMM touching the file system. Empty: the guest reaches no
    /// host socket.
    pub host_ports: Vec<u32>,
}

/// A configuration that cannot describe a VM.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    /// vCPU count outside what KVM (or the MP table) supports.
    #[error(
        "{requested} vCPUs requested, but this host supports 1 to {max}: pass a smaller --cpus"
    )]
    VcpuCount {
        /// What the caller asked for.
        requested: u64,
        /// The largest count this host accepts.
        max: u64,
    },
    /// Guest memory below the floor or absurdly large.
    #[error("{requested} MiB of guest memory requested, but it must be {MIN_MEM_MIB} to {MAX_MEM_MIB} MiB: pass another --mem")]
    MemorySize {
        /// What the caller asked for.
        requested: u64,
    },
    /// Command line longer than x86 Linux accepts.
    #[error("the kernel command line is {len} bytes, but Linux accepts at most {max}: shorten it")]
    CmdlineTooLong {
        /// Length after the VMM added its own parameters.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Command line with a NUL byte, which would silently cut it short.
    #[error("the kernel command line contains a NUL byte: remove it")]
    CmdlineNul,
    /// More virtio devices than the MMIO window or the IOAPIC pins have room for.
    #[error("{0} virtio devices requested, more than the VM has slots for: configure fewer")]
    TooManyVirtioDevices(usize),
    /// A console file capped at 0 bytes could hold nothing.
    #[error("the console file cap (console_max_bytes) is 0: give it room, e.g. 4 MiB")]
    ConsoleMaxBytesZero,
    /// Two shares with one tag: the guest could mount only one of them.
    #[error("two shares are tagged {0:?}: give each share its own tag")]
    DuplicateShareTag(String),
}

impl VmConfig {
    /// A configuration with the defaults of the debug binary (128 MiB, 1 vCPU, serial on stdout).
    pub fn new(kernel: KernelConfig) -> Self {
        VmConfig {
            mem_mib: 128,
            vcpus: 1,
            kernel,
            serial: SerialOutput::Stdout,
            console_max_bytes: DEFAULT_CONSOLE_MAX_BYTES,
            collect_stats: false,
            rng: true,
            shares: Vec::new(),
            vsock: None,
            nets: Vec::new(),
        }
    }

    /// The virtio devices this VM gets, in slot order: the n-th sits at [`MmioSlot::nth`]`(n)`.
    pub fn virtio_devices(&self) -> Vec<VirtioKind> {
        let mut devices = Vec::new();
        if self.rng {
            devices.push(VirtioKind::Rng);
        }
        devices.extend((0..self.shares.len()).map(VirtioKind::Fs));
        if self.vsock.is_some() {
            devices.push(VirtioKind::Vsock);
        }
        devices.extend((0..self.nets.len()).map(VirtioKind::Net));
        devices
    }

    /// The virtio devices paired with where they sit.
    pub fn virtio_slots(&self) -> Result<Vec<(VirtioKind, MmioSlot)>, ConfigError> {
        let devices = self.virtio_devices();
        let count = devices.len();
        devices
            .into_iter()
            .enumerate()
            .map(|(n, kind)| {
                MmioSlot::nth(n)
                    .map(|slot| (kind, slot))
                    .ok_or(ConfigError::TooManyVirtioDevices(count))
            })
            .collect()
    }

    /// Checks the parts that do not depend on the files: vCPU count against the host's limit,
    /// memory size, and the final command line.
    pub fn validate(&self, host_max_vcpus: usize) -> Result<(), ConfigError> {
        let max = host_max_vcpus.clamp(1, usize::from(MAX_VCPUS)) as u64;
        if self.vcpus == 0 || u64::from(self.vcpus) > max {
            return Err(ConfigError::VcpuCount {
                requested: u64::from(self.vcpus),
                max,
            });
        }
        if !(MIN_MEM_MIB..=MAX_MEM_MIB).contains(&self.mem_mib) {
            return Err(ConfigError::MemorySize {
                requested: self.mem_mib,
            });
        }
        if self.console_max_bytes == 0 {
            return Err(ConfigError::ConsoleMaxBytesZero);
        }
        for (n, share) in self.shares.iter().enumerate() {
            if self.shares[..n]
                .iter()
                .any(|earlier| earlier.tag == share.tag)
            {
                return Err(ConfigError::DuplicateShareTag(share.tag.clone()));
            }
        }
        self.guest_cmdline().map(|_| ())
    }

    /// The command line the guest kernel really gets: the user's, plus what our devices need
    /// (`console=ttyS0` while the serial port exists, one `virtio_mmio.device=` per virtio
    /// device), inserted before the ` -- ` that starts init's arguments.
    pub fn guest_cmdline(&self) -> Result<String, ConfigError> {
        let user = self.kernel.cmdline.trim();
        if user.contains('\0') {
            return Err(ConfigError::CmdlineNul);
        }
        let (kernel_part, init_part) = split_init_args(user);
        let virtio: Vec<String> = self
            .virtio_slots()?
            .iter()
            .map(|(_, slot)| slot.cmdline_param())
            .collect();
        let mut params: Vec<&str> = kernel_part.split_whitespace().collect();
        // The serial port is always present (only its output may be discarded), so the guest's
        // console always goes there unless the user chose a console explicitly.
        if !params.iter().any(|p| p.starts_with("console=")) {
            params.push("console=ttyS0");
        }
        params.extend(virtio.iter().map(String::as_str));
        let mut line = params.join(" ");
        if let Some(init) = init_part {
            line.push_str(" -- ");
            line.push_str(init);
        }
        if line.len() > MAX_CMDLINE_LEN {
            return Err(ConfigError::CmdlineTooLong {
                len: line.len(),
                max: MAX_CMDLINE_LEN,
            });
        }
        Ok(line)
    }
}

/// Splits `kernel params -- init args` at the first standalone `--`.
fn split_init_args(cmdline: &str) -> (&str, Option<&str>) {
    if let Some(rest) = cmdline.strip_prefix("--") {
        if rest.is_empty() || rest.starts_with(char::is_whitespace) {
            return ("", Some(rest.trim()));
        }
    }
    let mut search_from = 0;
    while let Some(pos) = cmdline[search_from..].find(" --") {
        let at = search_from + pos;
        let after = &cmdline[at + 3..];
        if after.is_empty() || after.starts_with(char::is_whitespace) {
            return (&cmdline[..at], Some(after.trim()));
        }
        search_from = at + 3;
    }
    (cmdline, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config without virtio devices, so the command lines below stay short.
    fn config(cmdline: &str) -> VmConfig {
        let mut c = VmConfig::new(KernelConfig {
            path: PathBuf::from("/k"),
            cmdline: cmdline.to_string(),
            initrd: None,
        });
        c.rng = false;
        c
    }

    fn share(tag: &str) -> ShareConfig {
        ShareConfig {
            tag: tag.to_string(),
            host_dir: PathBuf::from("/srv"),
            read_only: false,
            max_inodes: DEFAULT_MAX_INODES,
            guest_only: false,
        }
    }

    #[test]
    fn devices_take_slots_rng_then_shares_then_vsock() {
        let mut c = config("quiet");
        c.rng = true;
        c.shares = vec![share("pod"), share("data")];
        c.vsock = Some(VsockConfig {
            guest_cid: 3,
            uds_path: PathBuf::from("/run/v"),
            host_ports: vec![6000],
        });
        let kinds: Vec<_> = c
            .virtio_slots()
            .unwrap()
            .into_iter()
            .map(|(k, s)| (k, s.irq))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (VirtioKind::Rng, 5),
                (VirtioKind::Fs(0), 6),
                (VirtioKind::Fs(1), 7),
                (VirtioKind::Vsock, 9)
            ]
        );
        assert!(c
            .guest_cmdline()
            .unwrap()
            .ends_with("virtio_mmio.device=4K@0xd0003000:9"));
    }

    #[test]
    fn duplicate_share_tags_are_refused() {
        let mut c = config("quiet");
        c.shares = vec![share("pod"), share("data"), share("pod")];
        assert_eq!(
            c.validate(4),
            Err(ConfigError::DuplicateShareTag("pod".to_string()))
        );
    }

    #[test]
    fn virtio_devices_are_declared_before_init_args() {
        let mut c = config("quiet -- /bin/sh");
        c.rng = true;
        assert_eq!(
            c.guest_cmdline().unwrap(),
            "quiet console=ttyS0 virtio_mmio.device=4K@0xd0000000:5 -- /bin/sh"
        );
    }

    #[test]
    fn console_goes_before_init_args() {
        let c = config("reboot=k panic=-1 quiet -- /bin/busybox echo hello --x");
        assert_eq!(
            c.guest_cmdline().unwrap(),
            "reboot=k panic=-1 quiet console=ttyS0 -- /bin/busybox echo hello --x"
        );
    }

    #[test]
    fn user_console_is_kept() {
        let c = config("console=hvc0 quiet");
        assert_eq!(c.guest_cmdline().unwrap(), "console=hvc0 quiet");
    }

    #[test]
    fn double_dash_inside_a_word_is_not_a_separator() {
        let c = config("foo=a--b --bar");
        assert_eq!(c.guest_cmdline().unwrap(), "foo=a--b --bar console=ttyS0");
        let c = config("-- echo");
        assert_eq!(c.guest_cmdline().unwrap(), "console=ttyS0 -- echo");
    }

    #[test]
    fn too_long_or_nul_cmdline_is_refused() {
        let c = config(&"a".repeat(MAX_CMDLINE_LEN));
        assert!(matches!(
            c.guest_cmdline(),
            Err(ConfigError::CmdlineTooLong { .. })
        ));
        assert_eq!(config("a\0b").guest_cmdline(), Err(ConfigError::CmdlineNul));
    }

    #[test]
    fn vcpus_and_memory_are_checked() {
        let mut c = config("quiet");
        assert!(c.validate(288).is_ok());
        c.vcpus = 0;
        assert!(matches!(
            c.validate(288),
            Err(ConfigError::VcpuCount { .. })
        ));
        c.vcpus = 9;
        assert_eq!(
            c.validate(8),
            Err(ConfigError::VcpuCount {
                requested: 9,
                max: 8
            })
        );
        c.vcpus = 1;
        assert_eq!(c.console_max_bytes, DEFAULT_CONSOLE_MAX_BYTES);
        c.console_max_bytes = 0;
        assert_eq!(c.validate(8), Err(ConfigError::ConsoleMaxBytesZero));
        c.console_max_bytes = 1;
        c.mem_mib = 8;
        assert!(matches!(c.validate(8), Err(ConfigError::MemorySize { .. })));
        let msg = ConfigError::MemorySize { requested: 8 }.to_string();
        assert!(msg.contains("--mem"), "{msg}");
    }
}
