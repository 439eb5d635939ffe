//! The `stop` entrypoint (`stop_kvm`): `[--force] UUID`, run by `rkt stop` in the pod
//! directory.
//! - graceful: asks guest-init (control channel) to SIGTERM every app, wait
//!   [`GRACE`], SIGKILL what is left, and end the pod the normal way (status files, `rkt run`
//!   exits with the apps' codes); then waits for the pod's stage1 to be gone;
//! - `--force`: SIGKILL to the pod's stage1 process (`pid`; the VMM runs inside it), as rkt's
//!   kvm flavor killed its hypervisor. No status is written; `rkt gc` cleans up after it.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use pod_control::Request;

use super::{client, current_pod};
use crate::args::StopArgs;
use crate::error::Stage1Error;
use crate::pod::PodPaths;

/// Between SIGTERM and SIGKILL in the guest (rkt's nspawn flavor left this to systemd).
pub const GRACE: Duration = Duration::from_secs(10);
/// How long the VM may take to power off after the grace period.
const POWER_OFF: Duration = Duration::from_secs(30);
/// How long a SIGKILLed stage1 may take to disappear.
const KILL_WAIT: Duration = Duration::from_secs(10);

pub fn stop(args: &StopArgs) -> Result<i32, Stage1Error> {
    let (pod, uuid, socket) = current_pod()?;
    if uuid != args.uuid {
        return Err(Stage1Error::Usage(format!(
            "asked to stop pod {} from the directory of pod {uuid}",
            args.uuid
        )));
    }
    let pid = stage1_pid(&pod)?;
    if args.force {
        match kill(pid, Signal::SIGKILL) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(errno) => {
                return Err(Stage1Error::Control(format!(
                    "cannot kill the pod's VMM (pid {pid}): {errno}"
                )))
            }
        }
        return wait_gone(pid, KILL_WAIT).map(|()| 0);
    }
    let mut stream = client::connect(&socket).map_err(|err| {
        Stage1Error::Control(format!("{err}; `rkt stop --force` kills the pod's VM"))
    })?;
    client::request(
        &mut stream,
        Request::Stop {
            grace_ms: u64::try_from(GRACE.as_millis()).unwrap_or(u64::MAX),
        },
    )?;
    wait_gone(pid, GRACE + POWER_OFF).map(|()| 0)
}

/// The pod's stage1 process, checked to be ours still: its working directory is the pod.
fn stage1_pid(pod: &PodPaths) -> Result<Pid, Stage1Error> {
    let text = fs::read_to_string(pod.pid()).map_err(Stage1Error::io(format!(
        "reading {} (is the pod running?)",
        pod.pid().display()
    )))?;
    let pid: i32 = text
        .trim()
        .parse()
        .ok()
        .filter(|pid| *pid > 1)
        .ok_or_else(|| Stage1Error::BadFile {
            path: pod.pid(),
            problem: format!("{:?} is not a process ID", text.trim()),
        })?;
    let cwd = fs::read_link(format!("/proc/{pid}/cwd")).ok();
    let ours = cwd
        .as_deref()
        .zip(fs::canonicalize(&pod.dir).ok())
        .is_some_and(|(cwd, dir)| cwd == dir || same_file(cwd, &dir));
    if !ours {
        return Err(Stage1Error::Control(format!(
            "process {pid} (from {}) is not the pod's stage1 any more: the pod has exited",
            pod.pid().display()
        )));
    }
    Ok(Pid::from_raw(pid))
}

fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// Waits until `pid` is gone (the VM powered off and stage1 exited).
fn wait_gone(pid: Pid, limit: Duration) -> Result<(), Stage1Error> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Err(Errno::ESRCH) = kill(pid, None) {
            return Ok(());
        }
        // A zombie is gone for us too (its parent has not reaped it yet).
        if fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z'))
        }) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(Stage1Error::Control(format!(
        "the pod's stage1 (pid {pid}) is still running after {} s",
        limit.as_secs()
    )))
}
