//! Ending the VM.
//!
//! The guest kernel runs with `reboot=k` (or `reboot=t` under QEMU microvm), so a reboot request
//! becomes an i8042 reset (or a triple fault) that the VMM treats as "the guest stopped". Power
//! off would need ACPI, which the micro-VM does not have.

use nix::sys::reboot::{reboot, RebootMode};

use crate::report::Reporter;

/// Flushes file systems and resets the VM. Never returns: if the kernel refuses the reboot,
/// guest-init exits, the kernel panics ("Attempted to kill init") and `panic=-1` resets the VM,
/// which the VMM reports as a guest panic; by then the exit marker is already on the console.
pub fn reboot_vm(status: u8, reporter: &Reporter) -> ! {
    nix::unistd::sync();
    let Err(errno) = reboot(RebootMode::RB_AUTOBOOT);
    reporter.error(&format_args!(
        "reboot(RB_AUTOBOOT) failed: {errno}; guest-init must run as PID 1 with CAP_SYS_BOOT"
    ));
    std::process::exit(i32::from(status))
}
