//! What a command that outlived its limit was doing, for the failure message of
//! `run_with_limit`: a hang in CI otherwise leaves nothing but "did not finish", and the
//! emulated host that saw it is gone.
//!
//! Taken before the command is killed: every process below it (stage1, the jailed VMM, CNI
//! plugins) with each thread's state, kernel wait channel, system call and kernel stack, and the
//! end of the guest console of every pod in the command's `--dir`.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

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
    if let Some(data_dir) = data_dir {
        out.push_str(&pod_console_tails(data_dir));
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
