//! vCPU threads: one per vCPU, each running KVM_RUN and dispatching port I/O and MMIO exits to
//! the buses. A thread ends when its vCPU ends the VM (reset, triple fault, error) or when the
//! supervisor kicks it because another vCPU did.
//!
//! Kicking: the supervisor sets the shared stop flag and sends `kick_signal()` to each thread.
//! The handler sets `immediate_exit` in that thread's `kvm_run`, so a signal that lands just
//! before KVM_RUN still makes KVM_RUN return at once (EINTR) instead of being lost.

use std::cell::Cell;
use std::io;
use std::ptr::null_mut;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};
use std::thread::JoinHandle;

use kvm_bindings::{kvm_run, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN};
use kvm_ioctls::{VcpuExit, VcpuFd};
use vmm_sys_util::signal::{register_signal_handler, SIGRTMIN};

use crate::devices::bus::{Bus, BusAction};
use crate::stats::ExitCounters;

/// Why a vCPU thread stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VcpuStop {
    /// The guest pulled the reset line (i8042) or asked KVM for a reset/shutdown.
    GuestReset,
    /// KVM_EXIT_SHUTDOWN: a triple fault.
    TripleFault,
    /// KVM could not emulate or enter the guest.
    KvmError(String),
    /// KVM_RUN failed outright.
    RunFailed(i32),
    /// The supervisor stopped this vCPU because the VM is ending.
    Kicked,
}

/// Messages from vCPU threads (and the console) to the supervisor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmEvent {
    /// vCPU `index` stopped.
    VcpuStopped(u8, VcpuStop),
    /// The console saw a kernel panic.
    KernelPanic,
    /// The console saw guest-init's warm-mode marker: the guest is idle, waiting for its
    /// handover (snapshot point; see `snapshot`).
    WarmReady,
}

/// What every vCPU thread shares.
#[derive(Clone)]
pub struct VcpuShared {
    /// Port I/O devices.
    pub pio: Arc<Bus>,
    /// MMIO devices.
    pub mmio: Arc<Bus>,
    /// Set when the VM is ending.
    pub stop: Arc<AtomicBool>,
    /// Set (before `stop`) when the VM is pausing for a snapshot: each thread then completes
    /// the I/O its vCPU last exited for and hands the vCPU back instead of dropping it.
    pub pause: Arc<AtomicBool>,
    /// Where stops are reported.
    pub events: std::sync::mpsc::Sender<VmEvent>,
}

thread_local! {
    /// This thread's `kvm_run`, for the kick handler. Null outside the run loop.
    static KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(null_mut()) };
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let _ = KVM_RUN.try_with(|run| {
        let run = run.get();
        if !run.is_null() {
            // SAFETY: the pointer is this thread's live kvm_run mapping (cleared before the
            // vCPU fd is dropped); a volatile byte store is async-signal-safe.
            unsafe { std::ptr::addr_of_mut!((*run).immediate_exit).write_volatile(1) };
        }
    });
}

/// The signal used to kick vCPU threads out of KVM_RUN.
pub fn kick_signal() -> libc::c_int {
    SIGRTMIN()
}

/// Installs the kick handler once per process.
pub fn install_kick_handler() -> io::Result<()> {
    static INSTALL: Once = Once::new();
    let mut result = Ok(());
    INSTALL.call_once(|| {
        result = register_signal_handler(kick_signal(), kick_handler)
            .map_err(|e| io::Error::from_raw_os_error(e.errno()));
    });
    result
}

/// Makes this thread's `kvm_run` the kick handler's target until dropped, which must happen
/// before the vCPU fd (and with it the `kvm_run` mapping) goes away.
struct KickTarget;

impl KickTarget {
    fn register(run: &mut kvm_run) -> KickTarget {
        KVM_RUN.with(|r| r.set(run as *mut kvm_run));
        KickTarget
    }
}

impl Drop for KickTarget {
    fn drop(&mut self) {
        let _ = KVM_RUN.try_with(|r| r.set(null_mut()));
    }
}

/// Reports how a vCPU thread ended, from `Drop`, so the supervisor hears about it even if the
/// thread unwinds (it would otherwise wait forever for a stop event).
struct StopReporter {
    index: u8,
    events: std::sync::mpsc::Sender<VmEvent>,
    stop: Option<VcpuStop>,
}

impl Drop for StopReporter {
    fn drop(&mut self) {
        let stop = self
            .stop
            .take()
            .unwrap_or_else(|| VcpuStop::KvmError("the vCPU thread failed".into()));
        // A kicked vCPU has nothing to report: the supervisor is already stopping the VM.
        if stop != VcpuStop::Kicked {
            let _ = self.events.send(VmEvent::VcpuStopped(self.index, stop));
        }
    }
}

/// What a vCPU thread returns.
pub struct VcpuEnd {
    /// Its exit counters.
    pub counters: ExitCounters,
    /// The vCPU itself when it was paused for a snapshot (its state is then complete and
    /// consistent: no I/O half done), else `None` (it was dropped with the thread).
    pub paused: Option<VcpuFd>,
}

/// Starts the thread for vCPU `index`.
pub fn spawn(index: u8, vcpu: VcpuFd, shared: VcpuShared) -> io::Result<JoinHandle<VcpuEnd>> {
    crate::sandbox::spawn(
        crate::sandbox::ThreadKind::Vcpu,
        format!("vcpu{index}"),
        move || {
            let mut reporter = StopReporter {
                index,
                events: shared.events.clone(),
                stop: None,
            };
            let mut vcpu = vcpu;
            // Declared after `vcpu`, so dropped before it, even when unwinding.
            let kick_target = KickTarget::register(vcpu.get_kvm_run());
            let mut counters = ExitCounters::default();
            let stop = run_loop(&mut vcpu, &shared, &mut counters);
            let paused = stop == VcpuStop::Kicked && shared.pause.load(Ordering::Acquire);
            reporter.stop = Some(stop);
            drop(kick_target);
            if paused && complete_pending_io(&mut vcpu) {
                return VcpuEnd {
                    counters,
                    paused: Some(vcpu),
                };
            }
            VcpuEnd {
                counters,
                paused: None,
            }
        },
    )
}

/// KVM finishes an instruction that exited for port I/O or MMIO only on the next KVM_RUN; its
/// state must not be saved before (KVM's API documentation). KVM_RUN with `immediate_exit` set
/// completes it and returns EINTR without running the guest. False if KVM failed otherwise.
fn complete_pending_io(vcpu: &mut VcpuFd) -> bool {
    vcpu.set_kvm_immediate_exit(1);
    let result = vcpu.run().map(|_| ()).map_err(|e| e.errno());
    vcpu.set_kvm_immediate_exit(0);
    matches!(result, Err(libc::EINTR) | Ok(()))
}

fn run_loop(vcpu: &mut VcpuFd, shared: &VcpuShared, counters: &mut ExitCounters) -> VcpuStop {
    loop {
        if shared.stop.load(Ordering::Acquire) {
            return VcpuStop::Kicked;
        }
        match vcpu.run() {
            Ok(exit) => {
                if let Some(stop) = handle_exit(exit, shared, counters) {
                    return stop;
                }
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                // A kick (or an unrelated signal): clear the flag and re-check `stop`.
                vcpu.set_kvm_immediate_exit(0);
            }
            Err(e) => return VcpuStop::RunFailed(e.errno()),
        }
    }
}

fn handle_exit(
    exit: VcpuExit<'_>,
    shared: &VcpuShared,
    counters: &mut ExitCounters,
) -> Option<VcpuStop> {
    match exit {
        VcpuExit::IoIn(port, data) => {
            *counters.pio_in.entry(port).or_default() += 1;
            if !shared.pio.read(u64::from(port), data) {
                counters.unhandled += 1;
                data.fill(0xff);
            }
            None
        }
        VcpuExit::IoOut(port, data) => {
            *counters.pio_out.entry(port).or_default() += 1;
            match shared.pio.write(u64::from(port), data) {
                Some(BusAction::GuestReset) => Some(VcpuStop::GuestReset),
                Some(BusAction::Continue) => None,
                None => {
                    counters.unhandled += 1;
                    None
                }
            }
        }
        VcpuExit::MmioRead(addr, data) => {
            *counters.mmio_read.entry(addr).or_default() += 1;
            if !shared.mmio.read(addr, data) {
                counters.unhandled += 1;
                data.fill(0xff);
            }
            None
        }
        VcpuExit::MmioWrite(addr, data) => {
            *counters.mmio_write.entry(addr).or_default() += 1;
            match shared.mmio.write(addr, data) {
                Some(BusAction::GuestReset) => Some(VcpuStop::GuestReset),
                Some(BusAction::Continue) => None,
                None => {
                    counters.unhandled += 1;
                    None
                }
            }
        }
        // With the in-kernel LAPIC, HLT is handled inside KVM; an exit here is harmless.
        VcpuExit::Hlt => None,
        VcpuExit::Shutdown => Some(VcpuStop::TripleFault),
        VcpuExit::SystemEvent(kind, _) => match kind {
            KVM_SYSTEM_EVENT_RESET | KVM_SYSTEM_EVENT_SHUTDOWN => Some(VcpuStop::GuestReset),
            other => Some(VcpuStop::KvmError(format!("system event {other}"))),
        },
        VcpuExit::InternalError => Some(VcpuStop::KvmError("KVM internal error".into())),
        VcpuExit::FailEntry(reason, cpu) => Some(VcpuStop::KvmError(format!(
            "VM entry failed (hardware reason {reason:#x} on host CPU {cpu})"
        ))),
        VcpuExit::Intr => None,
        other => Some(VcpuStop::KvmError(format!("unexpected exit {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::legacy::i8042::{I8042, I8042_PORT, I8042_PORTS};
    use std::sync::Mutex;

    fn shared() -> (VcpuShared, std::sync::mpsc::Receiver<VmEvent>) {
        let mut pio = Bus::new();
        pio.insert(I8042_PORT, I8042_PORTS, Arc::new(Mutex::new(I8042::new())))
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let shared = VcpuShared {
            pio: Arc::new(pio),
            mmio: Arc::new(Bus::new()),
            stop: Arc::new(AtomicBool::new(false)),
            pause: Arc::new(AtomicBool::new(false)),
            events: tx,
        };
        (shared, rx)
    }

    #[test]
    fn i8042_reset_ends_the_vcpu() {
        let (shared, _rx) = shared();
        let mut counters = ExitCounters::default();
        let stop = handle_exit(VcpuExit::IoOut(0x64, &[0xfe]), &shared, &mut counters);
        assert_eq!(stop, Some(VcpuStop::GuestReset));
        assert_eq!(counters.pio_out[&0x64], 1);
    }

    #[test]
    fn unclaimed_ports_read_all_ones_and_are_counted() {
        let (shared, _rx) = shared();
        let mut counters = ExitCounters::default();
        let mut data = [0u8; 4];
        let stop = handle_exit(VcpuExit::IoIn(0xcfc, &mut data), &shared, &mut counters);
        assert_eq!(stop, None);
        assert_eq!(data, [0xff; 4]);
        assert_eq!(counters.unhandled, 1);
        let mut mmio = [0u8; 4];
        handle_exit(
            VcpuExit::MmioRead(0xd000_0000, &mut mmio),
            &shared,
            &mut counters,
        );
        assert_eq!(mmio, [0xff; 4]);
        assert_eq!(counters.mmio_read[&0xd000_0000], 1);
        assert_eq!(
            handle_exit(VcpuExit::IoOut(0x80, &[1]), &shared, &mut counters),
            None
        );
        assert_eq!(counters.unhandled, 3);
    }

    #[test]
    fn shutdown_and_system_events() {
        let (shared, _rx) = shared();
        let mut c = ExitCounters::default();
        assert_eq!(
            handle_exit(VcpuExit::Shutdown, &shared, &mut c),
            Some(VcpuStop::TripleFault)
        );
        assert_eq!(
            handle_exit(
                VcpuExit::SystemEvent(KVM_SYSTEM_EVENT_RESET, &[]),
                &shared,
                &mut c
            ),
            Some(VcpuStop::GuestReset)
        );
        assert!(matches!(
            handle_exit(VcpuExit::InternalError, &shared, &mut c),
            Some(VcpuStop::KvmError(_))
        ));
        assert_eq!(handle_exit(VcpuExit::Hlt, &shared, &mut c), None);
    }

    #[test]
    fn a_stopped_thread_reports_once_and_a_kicked_one_not_at_all() {
        let (shared, rx) = shared();
        drop(StopReporter {
            index: 1,
            events: shared.events.clone(),
            stop: Some(VcpuStop::TripleFault),
        });
        assert_eq!(
            rx.try_recv(),
            Ok(VmEvent::VcpuStopped(1, VcpuStop::TripleFault))
        );
        drop(StopReporter {
            index: 0,
            events: shared.events.clone(),
            stop: Some(VcpuStop::Kicked),
        });
        assert!(rx.try_recv().is_err());
        // A thread that never set its stop (it unwound) is reported as failed.
        drop(StopReporter {
            index: 2,
            events: shared.events.clone(),
            stop: None,
        });
        assert!(matches!(
            rx.try_recv(),
            Ok(VmEvent::VcpuStopped(2, VcpuStop::KvmError(_)))
        ));
    }
}
