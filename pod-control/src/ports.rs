//! The vsock ports of a pod's VM: which side listens on which, and which host ports the guest
//! may reach at all. The VMM refuses a guest connection to any host port not in
//! [`host_ports`] (docs/security.md, "vsock").

/// The host's context ID, as the guest addresses it.
pub const HOST_CID: u32 = 2;
/// Guest port: guest-init's control server (enter, stop, readiness, attach).
pub const CONTROL_PORT: u32 = 1;
/// Guest port: a warm-start guest waits there for its pod's parameters.
pub const HANDOVER_PORT: u32 = 2;
/// Host port: guest-init reports each app's exit status there (frames of kind `Status`).
/// The host accepts one connection, made by guest-init before any app starts.
pub const STATUS_PORT: u32 = 3;
/// Host ports: app i's stdout is `OUTPUT_PORT_BASE + 2i`, its stderr the next one.
pub const OUTPUT_PORT_BASE: u32 = 1000;

/// App `index`'s stdout port (None past what the port space holds).
pub fn stdout_port(index: usize) -> Option<u32> {
    u32::try_from(index)
        .ok()?
        .checked_mul(2)?
        .checked_add(OUTPUT_PORT_BASE)
        .filter(|port| port.checked_add(1).is_some())
}

/// App `index`'s stderr port.
pub fn stderr_port(index: usize) -> Option<u32> {
    stdout_port(index).map(|port| port + 1)
}

/// Every host port a pod of `apps` apps may connect to: the status port and each app's two
/// output ports. Nothing else on the host is reachable from the guest.
pub fn host_ports(apps: usize) -> Vec<u32> {
    let mut ports = vec![STATUS_PORT];
    for index in 0..apps {
        ports.extend(stdout_port(index));
        ports.extend(stderr_port(index));
    }
    ports
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_ports_follow_the_app_index() {
        assert_eq!((stdout_port(0), stderr_port(0)), (Some(1000), Some(1001)));
        assert_eq!((stdout_port(3), stderr_port(3)), (Some(1006), Some(1007)));
        assert_eq!(stdout_port(usize::MAX), None);
        assert_eq!(host_ports(2), vec![STATUS_PORT, 1000, 1001, 1002, 1003]);
        assert_eq!(host_ports(0), vec![STATUS_PORT]);
    }
}
