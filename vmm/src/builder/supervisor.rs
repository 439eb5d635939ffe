//! Running the vCPUs of a built VM and watching them: start every vCPU thread (after the VMM
//! locks itself down), wait for the event that ends this kind of run, then stop and join the
//! threads and gather what they report. Shared by every builder entry point.

use std::fs::File;
use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvm_ioctls::VcpuFd;

use crate::device_manager::DeviceManager;
use crate::devices::legacy::console_scan::ConsoleReport;
use crate::error::VmmError;
use crate::stats::{
    open_stats_fd, process_guest_time, process_usage, read_stats, ExitCounters, VmStats,
};
use crate::vcpu::{self, VcpuEnd, VcpuShared, VcpuStop, VmEvent};
use crate::vm::Vm;

/// After the console shows a kernel panic, how long the guest gets to reboot by itself
/// (`panic=-1`) before the VMM stops it (a guest booted without `panic=` would hang forever).
const PANIC_GRACE: Duration = Duration::from_secs(2);
/// How often a stopping vCPU thread is re-kicked until it has left KVM_RUN.
const KICK_INTERVAL: Duration = Duration::from_millis(5);

/// The statistics file descriptors (`VmConfig::collect_stats`), opened before the threads
/// start because the vCPU fds move into them.
type StatsFds = (Option<File>, Vec<File>);

/// The vCPU threads of a running VM.
pub(super) struct Supervisor {
    shared: VcpuShared,
    threads: Vec<JoinHandle<VcpuEnd>>,
    events: mpsc::Receiver<VmEvent>,
    /// Set when a thread could not be started: the VM is then stopped without waiting.
    spawn_error: Option<VmmError>,
    stats_fds: Option<StatsFds>,
    started: Instant,
    setup_done: Duration,
}

/// What the stopped vCPU threads handed back.
pub(super) struct Stopped {
    /// Exit counters summed over every vCPU.
    pub counters: ExitCounters,
    /// In vCPU order, the vCPUs a pause handed back (None for a thread that did not pause).
    pub paused: Vec<Option<VcpuFd>>,
    stats_fds: Option<StatsFds>,
    started: Instant,
    setup_done: Duration,
}

impl Supervisor {
    /// Starts one thread per vCPU fd on the buses of `devices`. `started` is when the build
    /// began (for `--stats`); the console's alerts arrive on `events` (whose sender the device
    /// manager holds).
    ///
    /// Every device exists by now, so this is where the VMM locks itself down
    /// (`sandbox::lock_down`), on this thread, before the first vCPU thread is spawned.
    pub fn start(
        started: Instant,
        collect_stats: bool,
        vm: &Vm,
        devices: &DeviceManager,
        vcpu_fds: Vec<VcpuFd>,
        events_tx: mpsc::Sender<VmEvent>,
        events: mpsc::Receiver<VmEvent>,
    ) -> Result<Supervisor, VmmError> {
        let stats_fds = collect_stats.then(|| {
            let vm_stats = open_stats_fd(&vm.fd).ok();
            let vcpu_stats: Vec<File> = vcpu_fds
                .iter()
                .filter_map(|v| open_stats_fd(v).ok())
                .collect();
            (vm_stats, vcpu_stats)
        });

        vcpu::install_kick_handler().map_err(|source| VmmError::HostResource {
            what: "install the vCPU kick signal handler",
            source,
        })?;
        let shared = VcpuShared {
            pio: devices.pio_bus(),
            mmio: devices.mmio_bus(),
            stop: Arc::new(AtomicBool::new(false)),
            pause: Arc::new(AtomicBool::new(false)),
            events: events_tx,
        };
        // Before the first vCPU thread exists: from here on the VMM runs confined when jailed.
        crate::sandbox::lock_down().map_err(|source| VmmError::HostResource {
            what: "lock the VMM down (sandbox policy)",
            source,
        })?;
        let setup_done = started.elapsed();
        let mut threads = Vec::with_capacity(vcpu_fds.len());
        let mut spawn_error = None;
        for (index, fd) in vcpu_fds.into_iter().enumerate() {
            match vcpu::spawn(index as u8, fd, shared.clone()) {
                Ok(t) => threads.push(t),
                Err(source) => {
                    spawn_error = Some(VmmError::HostResource {
                        what: "start a vCPU thread",
                        source,
                    });
                    break;
                }
            }
        }
        Ok(Supervisor {
            shared,
            threads,
            events,
            spawn_error,
            stats_fds,
            started,
            setup_done,
        })
    }

    /// Whether every vCPU thread is running (else the caller should only [`Self::stop`]).
    pub fn all_started(&self) -> bool {
        self.spawn_error.is_none()
    }

    /// Waits for the first vCPU to stop (see [`wait_for_end`]); returns at once when not every
    /// thread started.
    pub fn wait_for_end(&self) -> (u8, VcpuStop) {
        if self.all_started() {
            wait_for_end(&self.events)
        } else {
            (0, VcpuStop::Kicked)
        }
    }

    /// Waits for guest-init's warm marker: `None` when it came, else how the VM ended first.
    pub fn wait_for_warm_ready(&self) -> Option<(u8, VcpuStop)> {
        if self.all_started() {
            crate::snapshot::wait_for_warm_ready(&self.events)
        } else {
            Some((0, VcpuStop::Kicked))
        }
    }

    /// Asks every vCPU thread to hand its vCPU back when it stops (a snapshot), rather than
    /// drop it.
    pub fn request_pause(&self) {
        self.shared.pause.store(true, Ordering::Release);
    }

    /// Whether [`Self::request_pause`] was called.
    pub fn pause_requested(&self) -> bool {
        self.shared.pause.load(Ordering::Acquire)
    }

    /// Stops every vCPU thread and joins it. Fails if a thread could not be started.
    pub fn stop(self) -> Result<Stopped, VmmError> {
        self.shared.stop.store(true, Ordering::Release);
        let (counters, paused) = stop_and_join(self.threads);
        if let Some(err) = self.spawn_error {
            return Err(err);
        }
        Ok(Stopped {
            counters,
            paused,
            stats_fds: self.stats_fds,
            started: self.started,
            setup_done: self.setup_done,
        })
    }
}

impl Stopped {
    /// The statistics of the run, when they were asked for.
    pub fn stats(self, console: &ConsoleReport, guest_mem_mib: u64) -> Option<VmStats> {
        let started = self.started;
        let (vm_stats, vcpu_stats) = self.stats_fds?;
        let mut stats = VmStats {
            exits: self.counters,
            to_vcpus_started: Some(self.setup_done),
            to_first_output: console.first_output_at.map(|t| t - started),
            to_marker: console.marker_at.map(|t| t - started),
            total: started.elapsed(),
            guest_mem_mib,
            ..Default::default()
        };
        if let Some(f) = vm_stats {
            stats.kvm_vm = read_stats(&f).unwrap_or_default();
        }
        for f in &vcpu_stats {
            for (name, v) in read_stats(f).unwrap_or_default() {
                *stats.kvm_vcpu.entry(name).or_default() += v;
            }
        }
        (stats.cpu_time, stats.max_rss_kib) = process_usage();
        stats.guest_time = process_guest_time();
        Some(stats)
    }
}

/// Waits for the first vCPU to stop (returning its index and why); after a kernel panic, waits
/// at most `PANIC_GRACE`.
fn wait_for_end(events: &mpsc::Receiver<VmEvent>) -> (u8, VcpuStop) {
    let mut deadline: Option<Instant> = None;
    loop {
        let event = match deadline {
            None => events.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(d) => events.recv_timeout(d.saturating_duration_since(Instant::now())),
        };
        match event {
            Ok(VmEvent::VcpuStopped(index, stop)) => return (index, stop),
            Ok(VmEvent::KernelPanic) => {
                deadline.get_or_insert(Instant::now() + PANIC_GRACE);
            }
            // Only a snapshot run acts on the warm marker.
            Ok(VmEvent::WarmReady) => {}
            // Timeout after a panic, or every vCPU gone without a word: stop the VM.
            Err(_) => return (0, VcpuStop::Kicked),
        }
    }
}

/// Kicks every vCPU thread until it has left KVM_RUN, then joins them all; returns their
/// counters and, in vCPU order, the vCPUs handed back by a pause.
fn stop_and_join(threads: Vec<JoinHandle<VcpuEnd>>) -> (ExitCounters, Vec<Option<VcpuFd>>) {
    let mut total = ExitCounters::default();
    let mut paused = Vec::with_capacity(threads.len());
    for thread in threads {
        while !thread.is_finished() {
            // SAFETY: the thread has not been joined, so its pthread_t is valid; the kick
            // handler is installed and only touches that thread's own kvm_run.
            unsafe { libc::pthread_kill(thread.as_pthread_t(), vcpu::kick_signal()) };
            std::thread::sleep(KICK_INTERVAL);
        }
        // A vCPU thread that panicked contributes no counters; the VM is over either way.
        match thread.join() {
            Ok(end) => {
                total.merge(&end.counters);
                paused.push(end.paused);
            }
            Err(_) => paused.push(None),
        }
    }
    (total, paused)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_grace_ends_the_wait() {
        let (tx, rx) = mpsc::channel();
        tx.send(VmEvent::KernelPanic).unwrap();
        let started = Instant::now();
        assert_eq!(wait_for_end(&rx), (0, VcpuStop::Kicked));
        assert!(started.elapsed() >= PANIC_GRACE);
        drop(tx);
    }

    #[test]
    fn the_first_stopped_vcpu_ends_the_wait_and_the_warm_marker_does_not() {
        let (tx, rx) = mpsc::channel();
        tx.send(VmEvent::WarmReady).unwrap();
        tx.send(VmEvent::VcpuStopped(1, VcpuStop::TripleFault))
            .unwrap();
        tx.send(VmEvent::VcpuStopped(0, VcpuStop::GuestReset))
            .unwrap();
        assert_eq!(wait_for_end(&rx), (1, VcpuStop::TripleFault));
    }

    #[test]
    fn a_silent_end_of_every_sender_stops_the_vm() {
        let (tx, rx) = mpsc::channel::<VmEvent>();
        drop(tx);
        assert_eq!(wait_for_end(&rx), (0, VcpuStop::Kicked));
    }

    #[test]
    fn joining_no_threads_hands_back_nothing() {
        let (counters, paused) = stop_and_join(Vec::new());
        assert_eq!(counters, ExitCounters::default());
        assert!(paused.is_empty());
    }
}
