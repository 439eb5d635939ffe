//! Whether guest-init is the VM's init or an ordinary process.
//!
//! Only PID 1 may touch the system: mount, signal every process, reboot. Run as an ordinary
//! process (the tests do, and so may a person trying it on a workstation) guest-init only runs
//! the command and reports, so it can never reboot or kill a host by accident.

use nix::unistd::getpid;

use crate::report::Destination;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The VM's init: sets up the system, reports on the console, reboots at the end.
    Pid1,
    /// Any other process: runs the command, reports on stdout/stderr, exits with its status.
    Hosted,
}

impl Role {
    pub fn detect() -> Role {
        if getpid().as_raw() == 1 {
            Role::Pid1
        } else {
            Role::Hosted
        }
    }

    pub fn report_destination(self) -> Destination {
        match self {
            Role::Pid1 => Destination::Console,
            Role::Hosted => Destination::StdStreams,
        }
    }
}
