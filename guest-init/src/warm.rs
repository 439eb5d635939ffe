//! Warm mode (`rkt.warm=1`): boot, then wait to be snapshotted and, once restored, for the
//! parameters of the pod or command to run (docs/foundation.md, "warm mode").
//!
//! guest-init listens on vsock port [`HANDOVER_PORT`], prints [`WARM_MARKER`] alone on a console
//! line (the VMM pauses and saves the VM when it sees it) and blocks in accept(). The VMM of a
//! restored copy connects and sends one JSON line: `params` (a kernel-command-line-style text
//! that replaces /proc/cmdline for guest-init: its `rkt.*` parameters, `--` and the command),
//! the host's wall clock and fresh entropy. guest-init steps its clock, mixes the entropy and
//! bytes from virtio-rng into the kernel's pool and forces the kernel to reseed its CRNG (every
//! restored copy starts from the same pool, so this is what makes their random numbers
//! differ), answers `OK`, and carries on exactly as a cold boot with those parameters.
//!
//! Nothing before the handover may read /proc/sys/kernel/random/boot_id or draw randomness that
//! has to differ between copies: it would be baked into the snapshot.

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;

use nix::sys::socket::{
    accept, bind, listen, socket, AddressFamily, Backlog, SockFlag, SockType, VsockAddr,
};
use serde_json::Value;
use thiserror::Error;

use crate::cmdline::{self, KernelParam};

/// The vsock port of the handover.
pub const HANDOVER_PORT: u32 = pod_control::ports::HANDOVER_PORT;
/// The console line that says "ready for a snapshot".
pub const WARM_MARKER: &str = pod_control::console::WARM_MARKER;
/// The only message version understood.
const HANDOVER_VERSION: u64 = 1;
/// The longest message (its newline included).
const MAX_MESSAGE: usize = 16 * 1024;
/// The longest `params` (the kernel's own command-line limit).
const MAX_PARAMS: usize = 2048;
/// The most entropy bytes taken from the message.
const MAX_ENTROPY: usize = 512;
/// Bytes read from virtio-rng (`/dev/hwrng`) on top. More than the kernel keeps buffered (the
/// hwrng core's and the virtio-rng driver's buffers, 64 bytes each on x86): those bytes were
/// read before the snapshot and are the same in every restored copy, so reading past them both
/// reaches fresh host entropy and leaves later readers of /dev/hwrng only fresh bytes (found
/// in testing: without it two copies read the same first bytes from /dev/hwrng).
const HWRNG_BYTES: usize = 256;

/// `_IOW('R', 0x03, int[2])`: add bytes to the input pool and credit them (linux/random.h).
const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;
/// `_IO('R', 0x07)`: reseed the CRNG from the input pool now (linux/random.h).
const RNDRESEEDCRNG: libc::c_ulong = 0x5207;

#[derive(Debug, Error)]
pub enum WarmError {
    #[error("warm mode: cannot listen on vsock port {HANDOVER_PORT}: {0}; the VM needs a vsock device (rkt-vmm --vsock)")]
    Listen(nix::Error),
    #[error("warm mode: the handover connection failed: {0}")]
    Connection(String),
    #[error("warm mode: bad handover message: {0}")]
    Message(String),
    #[error("warm mode: cannot set the clock: {0}")]
    Clock(std::io::Error),
    #[error("warm mode: cannot reseed the kernel's random number generator: {0}")]
    Entropy(std::io::Error),
}

/// The parameters of the pod or command, as handed over.
#[derive(Debug, PartialEq, Eq)]
pub struct Handover {
    /// Command-line text replacing /proc/cmdline.
    pub params: Vec<u8>,
    /// Host wall clock.
    pub realtime: (i64, i64),
    /// Entropy from the host.
    pub entropy: Vec<u8>,
}

/// The guest's uptime when the handover was done (for the pod's `--debug` lines).
static HANDED_OVER_AT: OnceLock<String> = OnceLock::new();

/// When this guest was handed its parameters after a restore; None after a cold boot.
pub fn handed_over_at() -> Option<&'static str> {
    HANDED_OVER_AT.get().map(String::as_str)
}

/// `rkt.warm=1` is on the kernel command line.
pub fn requested(params: &[KernelParam]) -> bool {
    cmdline::last_value(params, "rkt.warm").is_some_and(|v| v == "1")
}

/// init's argv for the handed-over parameters: `/init` and the words after `--`.
pub fn init_argv(params: &[u8]) -> Vec<OsString> {
    std::iter::once(OsString::from("/init"))
        .chain(cmdline::init_args(params))
        .collect()
}

/// Announces readiness, waits for the handover and applies its clock and entropy; returns the
/// parameters to run with.
pub fn wait_for_handover() -> Result<Vec<u8>, WarmError> {
    let listener = socket(
        AddressFamily::Vsock,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(WarmError::Listen)?;
    bind(
        listener.as_raw_fd(),
        &VsockAddr::new(libc::VMADDR_CID_ANY, HANDOVER_PORT),
    )
    .map_err(WarmError::Listen)?;
    listen(&listener, Backlog::new(1).map_err(WarmError::Listen)?).map_err(WarmError::Listen)?;
    // Listening before the marker: a restored copy may be connected to at once.
    announce();
    let fd = loop {
        match accept(listener.as_raw_fd()) {
            Ok(fd) => break fd,
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(WarmError::Connection(e.to_string())),
        }
    };
    // SAFETY: accept returned a fresh descriptor that nothing else owns.
    let mut stream = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let result = read_message(&mut stream).and_then(|message| {
        let handover = parse_message(&message)?;
        apply(&handover)?;
        let _ = HANDED_OVER_AT.set(crate::pod::uptime::stamp());
        Ok(handover.params)
    });
    let reply = match &result {
        Ok(_) => "OK\n".to_string(),
        Err(e) => format!("ERROR {}\n", e.to_string().replace('\n', " ")),
    };
    // The host may have gone; our own outcome does not depend on the answer reaching it.
    let _ = stream.write_all(reply.as_bytes());
    result
}

fn announce() {
    if let Ok(mut console) = crate::console::open_console() {
        // One write, so that the line reaches the console whole.
        let _ = console.write_all(format!("{WARM_MARKER}\n").as_bytes());
    }
}

/// Reads up to the first newline, at most [`MAX_MESSAGE`] bytes.
fn read_message(stream: &mut File) -> Result<Vec<u8>, WarmError> {
    let mut message = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => {
                return Err(WarmError::Connection(
                    "closed before a whole message".into(),
                ))
            }
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(WarmError::Connection(e.to_string())),
        };
        message.extend_from_slice(&buf[..n]);
        if let Some(end) = message.iter().position(|&b| b == b'\n') {
            message.truncate(end);
            return Ok(message);
        }
        if message.len() > MAX_MESSAGE {
            return Err(WarmError::Message(format!(
                "longer than {MAX_MESSAGE} bytes"
            )));
        }
    }
}

/// Parses and checks one message (see the module comment and docs/foundation.md).
pub fn parse_message(message: &[u8]) -> Result<Handover, WarmError> {
    let bad = |what: &str| WarmError::Message(what.to_string());
    let value: Value =
        serde_json::from_slice(message).map_err(|e| WarmError::Message(e.to_string()))?;
    let object = value.as_object().ok_or_else(|| bad("not a JSON object"))?;
    if object.get("version").and_then(Value::as_u64) != Some(HANDOVER_VERSION) {
        return Err(bad("version is not 1"));
    }
    let params = object
        .get("params")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("params is missing or not a string"))?;
    if params.len() > MAX_PARAMS || params.contains('\0') {
        return Err(bad("params is longer than 2048 bytes or contains NUL"));
    }
    let sec = object
        .get("realtime_sec")
        .and_then(Value::as_u64)
        .and_then(|s| i64::try_from(s).ok())
        .ok_or_else(|| bad("realtime_sec is missing or out of range"))?;
    let nsec = object
        .get("realtime_nsec")
        .and_then(Value::as_u64)
        .filter(|n| *n < 1_000_000_000)
        .ok_or_else(|| bad("realtime_nsec is missing or not below 10^9"))?;
    let entropy_hex = object
        .get("entropy")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("entropy is missing or not a string"))?;
    let entropy = decode_hex(entropy_hex).ok_or_else(|| bad("entropy is not hex"))?;
    if entropy.len() > MAX_ENTROPY {
        return Err(bad("entropy is longer than 512 bytes"));
    }
    Ok(Handover {
        params: params.as_bytes().to_vec(),
        realtime: (sec, nsec as i64),
        entropy,
    })
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Steps the clock and reseeds the RNG.
fn apply(handover: &Handover) -> Result<(), WarmError> {
    let time = libc::timespec {
        tv_sec: handover.realtime.0,
        tv_nsec: handover.realtime.1,
    };
    // SAFETY: a valid timespec for the duration of the call.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &time) } != 0 {
        return Err(WarmError::Clock(std::io::Error::last_os_error()));
    }
    let random = File::options()
        .write(true)
        .open("/dev/urandom")
        .map_err(WarmError::Entropy)?;
    add_entropy(&random, &handover.entropy, handover.entropy.len() * 8)?;
    // virtio-rng as a second, independent source (absent with --no-rng: then skipped).
    if let Ok(mut hwrng) = File::open("/dev/hwrng") {
        let mut bytes = [0u8; HWRNG_BYTES];
        if hwrng.read_exact(&mut bytes).is_ok() {
            // Only the bytes past the buffered ones are credited as entropy.
            add_entropy(&random, &bytes, (HWRNG_BYTES - 128) * 8)?;
        }
    }
    // Without this the CRNG keeps its (shared, snapshotted) key until its next timed reseed.
    // SAFETY: RNDRESEEDCRNG takes no argument.
    if unsafe { libc::ioctl(random.as_raw_fd(), RNDRESEEDCRNG) } != 0 {
        return Err(WarmError::Entropy(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// RNDADDENTROPY: `struct rand_pool_info { int entropy_count; int buf_size; u32 buf[]; }`.
/// `credit_bits` is how much of it the kernel may count as entropy.
fn add_entropy(random: &File, bytes: &[u8], credit_bits: usize) -> Result<(), WarmError> {
    if bytes.is_empty() {
        return Ok(());
    }
    let too_big = || WarmError::Entropy(std::io::Error::from_raw_os_error(libc::EINVAL));
    let len = i32::try_from(bytes.len()).map_err(|_| too_big())?;
    let credit = i32::try_from(credit_bits.min(bytes.len() * 8)).map_err(|_| too_big())?;
    let mut request = Vec::with_capacity(8 + bytes.len());
    request.extend_from_slice(&credit.to_ne_bytes());
    request.extend_from_slice(&len.to_ne_bytes());
    request.extend_from_slice(bytes);
    // SAFETY: `request` is a complete rand_pool_info whose buf_size matches the bytes that
    // follow it; the kernel only reads it.
    if unsafe { libc::ioctl(random.as_raw_fd(), RNDADDENTROPY, request.as_ptr()) } != 0 {
        return Err(WarmError::Entropy(std::io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(text: &str) -> Result<Handover, WarmError> {
        parse_message(text.as_bytes())
    }

    #[test]
    fn a_good_message_parses() {
        let h = message(
            r#"{"version":1,"params":"rkt.share=pod -- /bin/true","realtime_sec":1700000000,"realtime_nsec":5,"entropy":"00ff10"}"#,
        )
        .unwrap();
        assert_eq!(h.params, b"rkt.share=pod -- /bin/true");
        assert_eq!(h.realtime, (1_700_000_000, 5));
        assert_eq!(h.entropy, vec![0, 0xff, 0x10]);
        assert_eq!(
            init_argv(&h.params),
            vec![OsString::from("/init"), OsString::from("/bin/true")]
        );
    }

    #[test]
    fn bad_messages_are_refused() {
        for bad in [
            "not json",
            "[]",
            r#"{"version":2,"params":"","realtime_sec":1,"realtime_nsec":0,"entropy":""}"#,
            r#"{"version":1,"realtime_sec":1,"realtime_nsec":0,"entropy":""}"#,
            r#"{"version":1,"params":"","realtime_sec":-1,"realtime_nsec":0,"entropy":""}"#,
            r#"{"version":1,"params":"","realtime_sec":1,"realtime_nsec":1000000000,"entropy":""}"#,
            r#"{"version":1,"params":"","realtime_sec":1,"realtime_nsec":0,"entropy":"0g"}"#,
            r#"{"version":1,"params":"","realtime_sec":1,"realtime_nsec":0,"entropy":"abc"}"#,
        ] {
            assert!(message(bad).is_err(), "{bad}");
        }
        let long = format!(
            r#"{{"version":1,"params":"{}","realtime_sec":1,"realtime_nsec":0,"entropy":""}}"#,
            "a".repeat(MAX_PARAMS + 1)
        );
        assert!(message(&long).is_err());
    }

    #[test]
    fn warm_is_asked_for_with_rkt_warm_1() {
        assert!(requested(&cmdline::kernel_params(b"quiet rkt.warm=1")));
        assert!(!requested(&cmdline::kernel_params(b"quiet rkt.warm=0")));
        assert!(!requested(&cmdline::kernel_params(b"quiet -- rkt.warm=1")));
    }
}
