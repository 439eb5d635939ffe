//! The VM: guest RAM registered with KVM, the in-kernel interrupt controllers and PIT, the
//! kernel and initramfs loaded, the boot structures written, and the vCPUs configured.

use std::fs::File;

use kvm_bindings::{
    kvm_pit_config, kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Cap, Kvm, VcpuFd, VmFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use crate::arch::x86_64::layout::{CMDLINE_START, KVM_IDENTITY_MAP_START, KVM_TSS_START};
use crate::arch::x86_64::regs::BootProtocol;
use crate::arch::x86_64::{bootparams, cpuid, e820, interrupts, mptable, msrs, pvh, regs};
use crate::config::VmConfig;
use crate::error::VmmError;
use crate::kernel::{self, LoadedKernel};
use crate::memory::{GuestRam, RamLayout};

const MIB: u64 = 1 << 20;
/// bzImage header versions before 2.06 have no `cmdline_size` and accept 255 bytes.
const LEGACY_CMDLINE_MAX: usize = 255;

/// A created VM with its memory. Drop order matters: `fd` (and with it KVM's use of the
/// memory) goes before `ram`.
pub struct Vm {
    /// The KVM system handle.
    pub kvm: Kvm,
    /// The VM handle.
    pub fd: VmFd,
    /// Guest RAM.
    pub ram: GuestRam,
    /// Where RAM sits.
    pub layout: RamLayout,
}

impl Vm {
    /// Maps guest RAM and sets up the VM-wide KVM state.
    pub fn new(kvm: Kvm, fd: VmFd, mem_mib: u64) -> Result<Vm, VmmError> {
        let layout = RamLayout::new(mem_mib * MIB);
        let ram = GuestRam::new(layout)?;
        Vm::with_ram(kvm, fd, layout, ram)
    }

    /// Like [`Vm::new`] with RAM mapped by the caller (a snapshot's memory file).
    pub fn with_ram(kvm: Kvm, fd: VmFd, layout: RamLayout, ram: GuestRam) -> Result<Vm, VmmError> {
        fd.set_tss_address(KVM_TSS_START as usize)
            .map_err(VmmError::kvm("KVM_SET_TSS_ADDR"))?;
        fd.set_identity_map_address(KVM_IDENTITY_MAP_START)
            .map_err(VmmError::kvm("KVM_SET_IDENTITY_MAP_ADDR"))?;
        fd.create_irq_chip()
            .map_err(VmmError::kvm("KVM_CREATE_IRQCHIP"))?;
        let pit = kvm_pit_config {
            // Let KVM answer the speaker port 0x61 too, so PIT channel 2 calibration stays
            // in the kernel.
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        fd.create_pit2(pit)
            .map_err(VmmError::kvm("KVM_CREATE_PIT2"))?;
        for (slot, region) in ram.memory.iter().enumerate() {
            let host = ram
                .memory
                .get_host_address(region.start_addr())
                .map_err(|_| {
                    VmmError::Memory(crate::memory::MemoryError::Regions(
                        "guest region without host mapping".into(),
                    ))
                })?;
            let mem_region = kvm_userspace_memory_region {
                slot: slot as u32,
                flags: 0,
                guest_phys_addr: region.start_addr().0,
                memory_size: region.len(),
                userspace_addr: host as u64,
            };
            // SAFETY: the region is a live mapping owned by `ram`, which outlives the VM fd
            // (see the field order of `Vm`), and regions do not overlap.
            unsafe { fd.set_user_memory_region(mem_region) }
                .map_err(VmmError::kvm("KVM_SET_USER_MEMORY_REGION"))?;
        }
        Ok(Vm {
            kvm,
            fd,
            ram,
            layout,
        })
    }

    /// Loads kernel and initramfs and writes the command line, MP table, GDT/page tables and
    /// the PVH start info or zero page.
    pub fn load_kernel(&self, config: &VmConfig, cmdline: &str) -> Result<LoadedKernel, VmmError> {
        let kcfg = &config.kernel;
        let mut kernel_file =
            File::open(&kcfg.path).map_err(|source| VmmError::KernelUnreadable {
                path: kcfg.path.clone(),
                source,
            })?;
        let probe = kernel::probe(&kcfg.path, &mut kernel_file)?;
        let mut initrd_file = match &kcfg.initrd {
            Some(path) => Some((
                path,
                File::open(path).map_err(|source| VmmError::InitrdUnreadable {
                    path: path.clone(),
                    source,
                })?,
            )),
            None => None,
        };
        let initrd_size = match &initrd_file {
            Some((path, f)) => f
                .metadata()
                .map_err(|source| VmmError::InitrdUnreadable {
                    path: (*path).clone(),
                    source,
                })?
                .len(),
            None => 0,
        };
        // Check the fit before loading, so the error says what is needed rather than what
        // linux-loader tripped over.
        kernel::place_initrd(
            probe.end,
            initrd_size,
            self.layout.low_size,
            None,
            config.mem_mib,
        )?;

        let loaded = kernel::load(&kcfg.path, &mut kernel_file, probe.format, &self.ram.memory)?;
        let addr_max = loaded
            .setup_header
            .map(|h| u64::from(h.initrd_addr_max))
            .filter(|m| *m != 0);
        let placement = kernel::place_initrd(
            probe.end,
            initrd_size,
            self.layout.low_size,
            addr_max,
            config.mem_mib,
        )?;
        if let (Some((path, file)), Some(placement)) = (initrd_file.as_mut(), placement) {
            kernel::load_initrd(path, file, placement, &self.ram.memory)?;
        }

        let max_cmdline = match loaded.setup_header {
            Some(h) if h.version >= 0x206 => h.cmdline_size as usize,
            Some(_) => LEGACY_CMDLINE_MAX,
            None => crate::config::MAX_CMDLINE_LEN,
        };
        if cmdline.len() > max_cmdline {
            return Err(VmmError::CmdlineTooLongForKernel {
                len: cmdline.len(),
                max: max_cmdline,
            });
        }
        let mut cmdline_bytes = cmdline.as_bytes().to_vec();
        cmdline_bytes.push(0);
        self.ram
            .memory
            .write_slice(&cmdline_bytes, GuestAddress(CMDLINE_START))
            .map_err(|_| crate::arch::x86_64::BootError::BootStructures("command line"))?;

        let map = e820::memory_map(&self.layout);
        mptable::write(&self.ram.memory, config.vcpus)
            .map_err(crate::arch::x86_64::BootError::from)?;
        regs::write_boot_tables(&self.ram.memory, loaded.protocol)?;
        match loaded.protocol {
            BootProtocol::Pvh => {
                pvh::write(
                    &self.ram.memory,
                    &pvh::build(&map, CMDLINE_START, placement),
                )?;
            }
            BootProtocol::Linux64 => {
                let params = bootparams::build(
                    loaded.setup_header,
                    &map,
                    CMDLINE_START,
                    cmdline.len(),
                    placement,
                )?;
                bootparams::write(&self.ram.memory, &params)?;
            }
        }
        Ok(loaded)
    }

    /// The CPUID table vCPU `index` of `vcpus` gets on this host: KVM's supported set,
    /// patched (topology, TSC deadline, brand string). A restored vCPU must get the same.
    pub fn vcpu_cpuid(&self, index: u8, vcpus: u8) -> Result<kvm_bindings::CpuId, VmmError> {
        let mut table = self
            .kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(VmmError::kvm("KVM_GET_SUPPORTED_CPUID"))?;
        let options = cpuid::CpuidOptions::new(
            self.kvm.check_extension(Cap::TscDeadlineTimer),
            &cpuid::host_brand(),
        );
        cpuid::patch(&mut table, index, vcpus, &options);
        Ok(table)
    }

    /// Creates and configures the vCPUs; vCPU 0 starts at the kernel entry, the others wait
    /// for the guest's INIT/SIPI in the in-kernel LAPIC.
    pub fn create_vcpus(&self, vcpus: u8, kernel: &LoadedKernel) -> Result<Vec<VcpuFd>, VmmError> {
        let supported = self
            .kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(VmmError::kvm("KVM_GET_SUPPORTED_CPUID"))?;
        let options = cpuid::CpuidOptions::new(
            self.kvm.check_extension(Cap::TscDeadlineTimer),
            &cpuid::host_brand(),
        );
        let mut fds = Vec::with_capacity(usize::from(vcpus));
        for index in 0..vcpus {
            let vcpu = self
                .fd
                .create_vcpu(u64::from(index))
                .map_err(VmmError::kvm("KVM_CREATE_VCPU"))?;
            let mut vcpu_cpuid = supported.clone();
            cpuid::patch(&mut vcpu_cpuid, index, vcpus, &options);
            vcpu.set_cpuid2(&vcpu_cpuid)
                .map_err(VmmError::kvm("KVM_SET_CPUID2"))?;
            msrs::setup_msrs(&vcpu)?;
            if index == 0 {
                msrs::check_tsc_is_kept(&vcpu)?;
            }
            regs::setup_fpu(&vcpu)?;
            interrupts::setup_lint(&vcpu)?;
            if index == 0 {
                regs::setup_boot_vcpu(&vcpu, kernel.entry, kernel.protocol)?;
            }
            fds.push(vcpu);
        }
        Ok(fds)
    }
}
