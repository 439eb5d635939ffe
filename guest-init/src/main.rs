//! guest-init: PID 1 inside the micro-VM.
//!
//! Sets up the guest (mounts, console), runs the command the kernel handed over after `--`,
//! reaps every process while it runs, reports its exit status on the console and reboots the VM,
//! which ends it. Kernel parameters can ask for the command to run inside a virtio-fs share and
//! for its status to be written there (the share module). See docs/foundation.md for the
//! contract with the VMM.
//!
//! guest-init is single-threaded on purpose: it forks, and PID 1 must never be left holding a
//! lock some other thread had at fork time.

mod args;
mod cmdline;
mod command;
mod console;
mod error;
mod lookup;
mod mounts;
mod pod;
mod power;
mod reaper;
mod report;
mod role;
mod share;
mod spawn;
mod warm;

use std::ffi::OsString;
use std::panic::{self, AssertUnwindSafe};

use error::{InitError, STATUS_SETUP_FAILED};
use reaper::SystemWaiter;
use report::Reporter;
use role::Role;
use share::StatusFile;

fn main() {
    let role = Role::detect();
    let reporter = Reporter::new(role.report_destination());
    // Filled in by the set-up once the share is mounted; kept out here so that every later
    // outcome, a failed set-up or a panic included, still reaches the file.
    let mut status_file: Option<StatusFile> = None;
    // A panic in PID 1 would become a kernel panic and hide the real problem; report it as an
    // error with a status instead. (guest-init has no known panic path; this is a safety net.)
    let status = panic::catch_unwind(AssertUnwindSafe(|| run(role, &reporter, &mut status_file)))
        .unwrap_or_else(|_| {
            reporter.error(&InitError::Panicked);
            STATUS_SETUP_FAILED
        });

    match role {
        Role::Pid1 => {
            // Leftover processes go first, so the marker is the last thing on the console and
            // anything they write on SIGTERM is flushed by the sync that follows.
            reaper::terminate_all(
                &mut SystemWaiter,
                |signal| nix::sys::signal::kill(nix::unistd::Pid::from_raw(-1), signal),
                reaper::TERM_GRACE,
                reaper::KILL_GRACE,
            );
            // The file before the marker: whoever sees the marker may read the file at once.
            // A failed write is reported but does not change the command's status.
            if let Some(file) = &status_file {
                if let Err(error) = file.write(status) {
                    reporter.error(&error);
                }
            }
            reporter.exit_status(status);
            power::reboot_vm(status, &reporter)
        }
        Role::Hosted => {
            reporter.exit_status(status);
            std::process::exit(i32::from(status))
        }
    }
}

/// Everything up to the command's end; returns the status to report.
fn run(role: Role, reporter: &Reporter, status_file: &mut Option<StatusFile>) -> u8 {
    let outcome = set_up(role, status_file).and_then(|(pod, argv)| match pod {
        Some(pod) => Ok(pod::run(&pod, reporter)),
        None => run_command(argv),
    });
    match outcome {
        Ok(status) => status,
        Err(error) => {
            reporter.error(&error);
            error.exit_status()
        }
    }
}

/// Prepares the guest; returns the pod to run when the kernel command line asks for pod mode
/// (`rkt.pod=`), else `None`: the command after `--` runs; and init's argv (the kernel's, or
/// in warm mode the handed-over one).
fn set_up(
    role: Role,
    status_file: &mut Option<StatusFile>,
) -> Result<(Option<pod::PodParams>, Vec<OsString>), InitError> {
    let mut argv: Vec<OsString> = std::env::args_os().collect();
    match role {
        Role::Pid1 => {
            console::attach_stdio();
            mounts::mount_system()?;
            // Again now that devtmpfs provides /dev/console, in case the initramfs had none.
            console::attach_stdio();
            // Only as PID 1: a host's own /proc/cmdline is none of guest-init's business.
            let mut text =
                cmdline::read_proc_cmdline().map_err(share::ShareError::CmdlineUnreadable)?;
            // Warm mode: the real parameters arrive after the snapshot, over vsock.
            if warm::requested(&cmdline::kernel_params(&text)) {
                text = warm::wait_for_handover()?;
                argv = warm::init_argv(&text);
            }
            let params = cmdline::kernel_params(&text);
            // Checked first: pod mode refuses rkt.root/rkt.status before anything is mounted.
            let pod = pod::PodParams::from_params(&params)?;
            share::set_up_from_params(&params, status_file)?;
            Ok((pod, argv))
        }
        Role::Hosted => {
            // Adopt the command's orphans as PID 1 would, so the reaping path is the same. If
            // this fails, orphans go to the host's init instead, which is harmless.
            let _ = nix::sys::prctl::set_child_subreaper(true);
            Ok((None, argv))
        }
    }
}

fn run_command(argv: Vec<OsString>) -> Result<u8, InitError> {
    let spec = args::command_from_argv(argv)?;
    let pid = command::spawn(&spec)?;
    reaper::wait_for(pid, &mut SystemWaiter)
}
