//! The host end of the guest's NIC: an existing tap device, attached by name in the VMM's
//! network namespace, in non-blocking mode and with a virtio-net header in front of every frame
//! (IFF_VNET_HDR), so checksum and segmentation offloads can pass between the guest and the host
//! kernel unchanged.
//!
//! The VMM never creates the tap: whoever sets up the network (the CNI wiring, a test, a person
//! with `ip tuntap add`) owns its lifetime and its addresses; the VMM only attaches to it. That
//! keeps privileges and clean-up in one place and lets the VMM run in the pod's namespace.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use thiserror::Error;

/// Where the tun/tap driver lives.
const TUN_DEVICE: &str = "/dev/net/tun";
/// Longest interface name (IFNAMSIZ is 16 with the terminating NUL).
pub const MAX_TAP_NAME_LEN: usize = 15;

/// The tap could not be attached.
#[derive(Debug, Error)]
pub enum TapError {
    /// Empty, too long, or with characters Linux refuses in interface names.
    #[error(
        "{0:?} is not a valid interface name: use 1 to {MAX_TAP_NAME_LEN} characters without \
         '/', ':', NUL or spaces"
    )]
    BadName(String),
    /// No interface of that name in this network namespace.
    #[error(
        "tap device {0:?} does not exist in the VMM's network namespace: create it first \
         (`ip tuntap add dev {0} mode tap`), or run the VMM in the namespace that has it"
    )]
    NotFound(String),
    /// /dev/net/tun cannot be opened.
    #[error("cannot open {TUN_DEVICE}: {0} (load the tun module: `modprobe tun`)")]
    OpenTun(io::Error),
    /// The interface exists but is not a (single-queue) tap.
    #[error(
        "{0:?} is not a single-queue tap device (a tun device, a multi-queue tap or another \
         kind of interface): create it with `ip tuntap add dev {0} mode tap`"
    )]
    NotATap(String),
    /// Another process holds the tap.
    #[error(
        "tap device {0:?} is already attached to another process: stop it, or use another tap"
    )]
    Busy(String),
    /// The caller may not attach to it.
    #[error(
        "not permitted to attach to tap device {0:?}: run as root (CAP_NET_ADMIN) or create the \
         tap with `user`/`group` set to the VMM's"
    )]
    NotPermitted(String),
    /// Any other ioctl failure.
    #[error("cannot set up tap device {name:?} ({what}): {source}")]
    Ioctl {
        /// The tap.
        name: String,
        /// Which step failed.
        what: &'static str,
        /// The kernel's answer.
        source: io::Error,
    },
}

/// An attached tap device. Reads and writes move one frame each, virtio-net header first; both
/// return `WouldBlock` instead of waiting.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

/// `struct ifreq` with the flags member of the union, as TUNSETIFF reads it.
fn ifreq_for(name: &CString, flags: libc::c_int) -> libc::ifreq {
    // SAFETY: ifreq is a plain C struct (a name array and a union of integers, addresses and
    // pointers); all-zero bytes are a valid value of every member.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(name.as_bytes()) {
        *slot = *byte as libc::c_char;
    }
    // TUNSETIFF reads ifr_flags, a short; the IFF_* tun flags all fit in 16 bits.
    request.ifr_ifru.ifru_flags = flags as libc::c_short;
    request
}

impl Tap {
    /// Attaches to the existing tap `name` with `vnet_header_len`-byte virtio-net headers and
    /// every offload off (see [`Tap::set_offloads`]).
    pub fn open(name: &str, vnet_header_len: usize) -> Result<Tap, TapError> {
        let valid = !name.is_empty()
            && name.len() <= MAX_TAP_NAME_LEN
            && name != "."
            && name != ".."
            && !name
                .bytes()
                .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace());
        let c_name = match CString::new(name) {
            Ok(c_name) if valid => c_name,
            _ => return Err(TapError::BadName(name.to_string())),
        };
        // TUNSETIFF would create a missing tap on the spot (and delete it when we exit); we
        // only attach to what the network set-up made. if_nametoindex looks in the calling
        // thread's network namespace, the one TUNSETIFF uses.
        // SAFETY: c_name is a valid NUL-terminated string that outlives the call.
        if unsafe { libc::if_nametoindex(c_name.as_ptr()) } == 0 {
            return Err(TapError::NotFound(name.to_string()));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(TUN_DEVICE)
            .map_err(TapError::OpenTun)?;
        let request = ifreq_for(
            &c_name,
            libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR,
        );
        // SAFETY: TUNSETIFF reads a `struct ifreq` through the pointer, which is valid for the
        // duration of the call; the fd is our open /dev/net/tun.
        let ret = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &request) };
        if ret < 0 {
            let error = io::Error::last_os_error();
            let name = name.to_string();
            return Err(match error.raw_os_error() {
                Some(libc::EINVAL) => TapError::NotATap(name),
                Some(libc::EBUSY) => TapError::Busy(name),
                Some(libc::EPERM) | Some(libc::EACCES) => TapError::NotPermitted(name),
                _ => TapError::Ioctl {
                    name,
                    what: "TUNSETIFF",
                    source: error,
                },
            });
        }
        let tap = Tap {
            file,
            name: name.to_string(),
        };
        let header_len = libc::c_int::try_from(vnet_header_len).unwrap_or(libc::c_int::MAX);
        // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, valid during the call.
        let ret = unsafe { libc::ioctl(tap.file.as_raw_fd(), libc::TUNSETVNETHDRSZ, &header_len) };
        tap.check(ret, "TUNSETVNETHDRSZ")?;
        // virtio 1.x headers are little-endian whatever the host's byte order.
        let little_endian: libc::c_int = 1;
        // SAFETY: TUNSETVNETLE reads one int through the pointer, valid during the call.
        let ret = unsafe { libc::ioctl(tap.file.as_raw_fd(), libc::TUNSETVNETLE, &little_endian) };
        tap.check(ret, "TUNSETVNETLE")?;
        tap.set_offloads(0)?;
        Ok(tap)
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The tap's MTU as the network set-up left it (e.g. copied from the CNI interface).
    pub fn mtu(&self) -> Result<u16, TapError> {
        let failed = |source| TapError::Ioctl {
            name: self.name.clone(),
            what: "SIOCGIFMTU",
            source,
        };
        // SIOCGIFMTU is a socket ioctl; any socket in this network namespace answers it.
        // SAFETY: socket() takes no pointers; the result is checked before use.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(failed(io::Error::last_os_error()));
        }
        // SAFETY: fd is a socket we just opened and own from here on.
        let socket = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let c_name = CString::new(self.name.as_str())
            .map_err(|_| failed(io::ErrorKind::InvalidInput.into()))?;
        let mut request = ifreq_for(&c_name, 0);
        // SAFETY: SIOCGIFMTU reads the name from and writes the MTU into the ifreq, which is
        // valid and writable for the duration of the call.
        let ret = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFMTU, &mut request) };
        if ret < 0 {
            return Err(failed(io::Error::last_os_error()));
        }
        // SAFETY: SIOCGIFMTU succeeded, so the kernel set the union's MTU member.
        let mtu = unsafe { request.ifr_ifru.ifru_mtu };
        Ok(u16::try_from(mtu).unwrap_or(u16::MAX))
    }

    /// Tells the host kernel which offloads it may leave to the guest in frames it hands us
    /// (TUN_F_* bits): partial checksums, TSO segments. Must match what the guest's driver
    /// accepted, so it is set on every activation.
    pub fn set_offloads(&self, tun_flags: libc::c_uint) -> Result<(), TapError> {
        // SAFETY: TUNSETOFFLOAD takes its argument by value; no memory is passed.
        let ret = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                libc::TUNSETOFFLOAD,
                libc::c_ulong::from(tun_flags),
            )
        };
        self.check(ret, "TUNSETOFFLOAD")
    }

    fn check(&self, ret: libc::c_int, what: &'static str) -> Result<(), TapError> {
        if ret < 0 {
            return Err(TapError::Ioctl {
                name: self.name.clone(),
                what,
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// Reads one frame (header included) into `buf`; a frame longer than `buf` is cut short,
    /// so callers pass a buffer one byte longer than the longest frame they accept.
    pub fn read_frame(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.file).read(buf)
    }

    /// Writes one frame (header included).
    pub fn write_frame(&self, frame: &[u8]) -> io::Result<usize> {
        (&self.file).write(frame)
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_names_are_refused_before_the_kernel_sees_them() {
        for name in [
            "",
            ".",
            "..",
            "a/b",
            "a:1",
            "a b",
            "sixteen-chars-xx",
            "a\0b",
        ] {
            assert!(
                matches!(Tap::open(name, 12), Err(TapError::BadName(_))),
                "{name:?}"
            );
        }
    }

    #[test]
    fn a_missing_tap_is_not_created() {
        let err = Tap::open("rkt-no-such0", 12).unwrap_err();
        assert!(matches!(err, TapError::NotFound(_)), "{err}");
        assert!(err.to_string().contains("ip tuntap add dev rkt-no-such0"));
    }

    #[test]
    fn an_interface_that_is_not_a_tap_is_refused() {
        // Loopback exists in every namespace and is no tap (the tests run as root).
        match Tap::open("lo", 12) {
            Err(TapError::NotATap(name)) => assert_eq!(name, "lo"),
            other => panic!("{other:?}"),
        }
    }
}
