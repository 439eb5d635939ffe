//! What a command that outlived its limit was doing, for the failure message of
//! `run_with_limit`: a hang in CI otherwise leaves nothing but "did not finish", and the
//! emulated host that saw it is gone.
//!
//! Taken before the command is killed: every process below it (stage1, the jailed VMM, CNI
//! plugins) with each thread's state, kernel wait channel, system call and kernel stack, and the
//! end of the guest console of every pod in the command's `--dir`; for each VMM, what the host's
//! KVM says of its VM (debugfs, and a few seconds of its timer events).

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

/// Lines of each pod console kept in the report.
const CONSOLE_TAIL: usize = 60;
/// Kernel stack frames kept per thread.
const STACK_FRAMES: usize = 12;

/// The report for `command`, running as `pid`.
pub fn describe(command: &Command, pid: u32) -> String {
    describe_tree(pid, data_dir_of(command).as_deref())
}

/// The report for the process `pid` and those below it, with the pod consoles of `data_dir`.
pub fn describe_tree(pid: u32, data_dir: Option<&Path>) -> String {
    let mut out = String::from("--- what it was doing when its limit passed:\n");
    for process in with_descendants(pid) {
        describe_process(&mut out, process);
    }
    let vmms: Vec<u32> = with_descendants(pid)
        .into_iter()
        .filter(|p| {
            fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "rkt-vmm")
        })
        .collect();
    for vmm in vmms {
        out.push_str(&kvm_view(vmm));
    }
    if let Some(data_dir) = data_dir {
        out.push_str(&pod_console_tails(data_dir));
    }
    out
}

/// How long the KVM events of a hung VMM are traced.
const TRACE_FOR: Duration = Duration::from_secs(3);
/// Trace lines kept per VMM.
const TRACE_TAIL: usize = 80;
/// The host's KVM events that show a guest's timer: its TSC-deadline and APIC writes, the
/// host timers KVM arms for it and their expiry, the injected interrupts, halts and wake-ups.
const KVM_EVENTS: [&str; 8] = [
    "kvm/kvm_msr",
    "kvm/kvm_apic",
    "kvm/kvm_inj_virq",
    "kvm/kvm_vcpu_wakeup",
    "kvm/kvm_exit",
    "timer/hrtimer_start",
    "timer/hrtimer_expire_entry",
    "timer/hrtimer_cancel",
];

/// What the host's KVM says of the VM of `vmm`: its vCPUs' debugfs entries (TSC offset, timer
/// advance) and a few seconds of its threads' timer events. The idle-pod hang (guests whose
/// timer interrupts stop coming, docs/stage1-kvm.md, Known gaps) needs the host's side of the
/// guest's timer. Root only (debugfs, tracefs); a line saying why when not available. One
/// report traces at a time: tracefs is the host's, not the test's.
fn kvm_view(vmm: u32) -> String {
    static TRACING: Mutex<()> = Mutex::new(());
    let mut out = format!("--- KVM's view of the VM of rkt-vmm {vmm}:\n");
    let debugfs = Path::new("/sys/kernel/debug/kvm");
    if !debugfs.is_dir() {
        let _ = Command::new("mount")
            .args(["-t", "debugfs", "debugfs", "/sys/kernel/debug"])
            .status();
    }
    let prefix = format!("{vmm}-");
    let named = |dir: &Path, prefix: &str| -> Vec<PathBuf> {
        crate::dir_names(dir)
            .into_iter()
            .filter(|name| name.starts_with(prefix))
            .map(|name| dir.join(name))
            .collect()
    };
    for vm in named(debugfs, &prefix) {
        for vcpu in named(&vm, "vcpu") {
            for entry in named(&vcpu, "") {
                if let Ok(value) = fs::read_to_string(&entry) {
                    out.push_str(&format!("  {}: {}\n", entry.display(), value.trim()));
                }
            }
        }
    }
    let _one_at_a_time = TRACING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let tracing = Path::new("/sys/kernel/tracing");
    if !tracing.join("trace").exists() {
        let _ = Command::new("mount")
            .args(["-t", "tracefs", "tracefs", "/sys/kernel/tracing"])
            .status();
    }
    let write = |name: &str, value: &str| fs::write(tracing.join(name), value);
    let threads = crate::dir_names(Path::new(&format!("/proc/{vmm}/task")));
    let started = write("trace", "")
        .and_then(|()| write("set_event_pid", &threads.join(" ")))
        .and_then(|()| {
            KVM_EVENTS
                .iter()
                .try_for_each(|event| write(&format!("events/{event}/enable"), "1"))
        })
        .and_then(|()| write("tracing_on", "1"));
    if let Err(err) = &started {
        out.push_str(&format!("  no trace: {err} (not root, or no tracefs)\n"));
    } else {
        std::thread::sleep(TRACE_FOR);
    }
    let _ = write("tracing_on", "0");
    for event in KVM_EVENTS {
        let _ = write(&format!("events/{event}/enable"), "0");
    }
    let _ = write("set_event_pid", "");
    if started.is_ok() {
        let trace = fs::read_to_string(tracing.join("trace")).unwrap_or_default();
        let lines: Vec<&str> = trace.lines().filter(|l| !l.starts_with('#')).collect();
        out.push_str(&format!(
            "  {} events in {TRACE_FOR:?}, the last {TRACE_TAIL}:\n",
            lines.len()
        ));
        for line in &lines[lines.len().saturating_sub(TRACE_TAIL)..] {
            out.push_str(&format!("  {}\n", line.trim()));
        }
    }
    out
}

/// `pid` and every process below it, parents first.
fn with_descendants(pid: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = crate::processes()
        .into_iter()
        .filter_map(|(child, dir)| Some((child, parent_of(&dir)?)))
        .collect();
    let mut found = vec![pid];
    let mut next = 0;
    while next < found.len() {
        let parent = found[next];
        found.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == parent)
                .map(|(c, _)| *c),
        );
        next += 1;
    }
    found
}

/// The PPid line of `/proc/PID/status`.
fn parent_of(proc_dir: &Path) -> Option<u32> {
    let status = fs::read_to_string(proc_dir.join("status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("PPid:"))?
        .trim()
        .parse()
        .ok()
}

fn describe_process(out: &mut String, pid: u32) {
    let dir = PathBuf::from(format!("/proc/{pid}"));
    let cmdline = fs::read(dir.join("cmdline"))
        .map(|bytes| String::from_utf8_lossy(&bytes).replace('\0', " "))
        .unwrap_or_default();
    out.push_str(&format!("process {pid}: {}\n", cmdline.trim_end()));
    let Ok(tasks) = fs::read_dir(dir.join("task")) else {
        return;
    };
    for task in tasks.flatten() {
        let path = task.path();
        let read = |name: &str| {
            fs::read_to_string(path.join(name))
                .unwrap_or_default()
                .trim()
                .to_string()
        };
        let state = read("status")
            .lines()
            .find_map(|line| line.strip_prefix("State:").map(|s| s.trim().to_string()))
            .unwrap_or_default();
        out.push_str(&format!(
            "  thread {} ({}): {state}, wchan {}, syscall {}\n",
            task.file_name().to_string_lossy(),
            read("comm"),
            read("wchan"),
            read("syscall"),
        ));
        for frame in read("stack").lines().take(STACK_FRAMES) {
            out.push_str(&format!("    {frame}\n"));
        }
    }
}

/// The `--dir=DIR` argument of an `rkt` command, also behind `nsenter`.
fn data_dir_of(command: &Command) -> Option<PathBuf> {
    command
        .get_args()
        .filter_map(OsStr::to_str)
        .find_map(|arg| arg.strip_prefix("--dir="))
        .map(PathBuf::from)
}

/// The end of the guest console of every pod under `data_dir`, whatever its state.
fn pod_console_tails(data_dir: &Path) -> String {
    crate::console_tails(data_dir, &crate::POD_STATES, CONSOLE_TAIL)
}
