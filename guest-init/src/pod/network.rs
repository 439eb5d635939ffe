//! The pod's network inside the guest: loopback always, then each NIC as the kvm stage1
//! describes it in `stage1/rootfs/rkt/network.json` on the pod share (docs/networking.md):
//! found by its MAC address (the CNI interface's, which the host gave the NIC), its MTU, IPv4
//! and IPv6 addresses and routes, in the file's order. DNS needs nothing here: the stage1 puts
//! the CNI result's DNS into the apps' resolv.conf.
//!
//! The guest image has no `ip` binary, so this uses the classic socket ioctls: SIOCSIF* and
//! SIOCADDRT on an AF_INET socket for IPv4, SIOCSIFADDR and SIOCADDRT on an AF_INET6 socket
//! (`struct in6_ifreq`, `struct in6_rtmsg`) for IPv6. A handful of fixed-size structures,
//! where netlink would need a message builder and parser for the same few operations.
//!
//! IPv6 comes from the CNI result only: before its addresses are set, the interface is told
//! not to autoconfigure from router advertisements, not to solicit them, and not to run
//! duplicate address detection. The addresses are the CNI plugin's leases (nobody else on the
//! link has them), and without DAD they are usable at once instead of about a second later:
//! an app that binds its pod address right away works, as it does in a container.
//!
//! The file comes from the host side of the pod (the stage1), but it is still parsed as
//! untrusted input: anything malformed is an error naming the file, never a panic.

use std::ffi::CString;
use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use thiserror::Error;

/// The stage1's description of the guest's NICs, relative to the pod share.
pub const NETWORK_FILE: &str = pod_control::layout::NETWORK_FILE;
/// Where the kernel lists network interfaces.
const SYS_CLASS_NET: &str = "/sys/class/net";
/// Where the kernel's per-interface IPv6 settings are.
const IPV6_CONF: &str = "/proc/sys/net/ipv6/conf";
/// More than this is not a network description.
const FILE_LIMIT: u64 = 1 << 20;

#[derive(Debug, Error)]
pub enum NetworkError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{} is not a network description ({reason}); the stage1 writes it", path.display())]
    Parse { path: PathBuf, reason: String },
    #[error(
        "no network interface has the MAC address {mac}: the VM lacks the NIC the stage1 described"
    )]
    NoSuchNic { mac: String },
    #[error("interface {ifname}: cannot write {}: {source}", path.display())]
    Setting {
        ifname: String,
        path: PathBuf,
        source: io::Error,
    },
    #[error("interface {ifname}: {what}: {source}")]
    Ioctl {
        ifname: String,
        what: String,
        source: io::Error,
    },
}

use pod_control::network::{GuestNetwork as Description, GuestRoute as Route};

/// Brings loopback up and configures the NICs the stage1 described (none without its file:
/// `--net=none`). Returns a line per interface for the debug log.
pub fn configure(share: &Path) -> Result<Vec<String>, NetworkError> {
    let socket = Socket::open(libc::AF_INET).map_err(opening("AF_INET"))?;
    socket.set_up("lo")?;
    let path = share.join(NETWORK_FILE);
    let description = match read_description(&path)? {
        Some(description) => description,
        None => return Ok(vec!["lo up; no network description (--net=none)".into()]),
    };
    // Opened on the first IPv6 entry: pods without IPv6 never need it.
    let mut socket6: Option<Socket> = None;
    let mut done = vec!["lo up".to_string()];
    for iface in &description.interfaces {
        let ifname = match interface_with_mac(Path::new(SYS_CLASS_NET), &iface.mac) {
            Ok(ifname) => ifname,
            Err(not_found) => {
                let Some(boot_mac) = &iface.boot_mac else {
                    return Err(not_found);
                };
                let ifname = interface_with_mac(Path::new(SYS_CLASS_NET), boot_mac)?;
                // Down still (nothing brought it up before the snapshot), so the change is
                // the driver's alone.
                socket.set_mac(&ifname, &iface.mac)?;
                ifname
            }
        };
        if iface.mtu > 0 {
            socket.set_mtu(&ifname, iface.mtu)?;
        }
        // Before the interface comes up: that is when the kernel would solicit routers and
        // start DAD on its link-local address.
        let wants_ipv6 = iface.addresses.iter().any(|a| a.address.is_ipv6())
            || iface.routes.iter().any(|r| r.dst.is_ipv6());
        ipv6_from_cni_only(Path::new(IPV6_CONF), &ifname, wants_ipv6)?;
        let mut ipv4_count = 0;
        for address in &iface.addresses {
            match address.address {
                IpAddr::V4(v4) => {
                    // The ioctls hold one IPv4 address per name: further ones go on alias
                    // labels (eth0:1, ...), as `ifconfig` did; the kernel keeps them all on eth0.
                    let label = match ipv4_count {
                        0 => ifname.clone(),
                        n => format!("{ifname}:{n}"),
                    };
                    socket.set_address(&label, v4, address.prefix)?;
                    ipv4_count += 1;
                }
                IpAddr::V6(v6) => {
                    ipv6_socket(&mut socket6)?.add_address_v6(&ifname, v6, address.prefix)?
                }
            }
        }
        socket.set_up(&ifname)?;
        for route in &iface.routes {
            match route.dst {
                IpAddr::V4(_) => socket.add_route(&ifname, route)?,
                IpAddr::V6(_) => ipv6_socket(&mut socket6)?.add_route_v6(&ifname, route)?,
            }
        }
        let addresses: Vec<String> = iface
            .addresses
            .iter()
            .map(|a| format!("{}/{}", a.address, a.prefix))
            .collect();
        done.push(format!(
            "{ifname} ({}): mtu {}, {}, {} route(s)",
            iface.mac,
            iface.mtu,
            if addresses.is_empty() {
                "no address".to_string()
            } else {
                addresses.join(" ")
            },
            iface.routes.len()
        ));
    }
    Ok(done)
}

/// The error for a socket of `family` that could not be opened.
fn opening(family: &'static str) -> impl Fn(io::Error) -> NetworkError {
    move |source| NetworkError::Ioctl {
        ifname: "lo".into(),
        what: format!("opening an {family} socket for interface ioctls"),
        source,
    }
}

/// The AF_INET6 socket in `slot`, opened on first use.
fn ipv6_socket(slot: &mut Option<Socket>) -> Result<&Socket, NetworkError> {
    Ok(match slot.take() {
        Some(socket) => slot.insert(socket),
        None => slot.insert(Socket::open(libc::AF_INET6).map_err(opening("AF_INET6"))?),
    })
}

/// Tells the kernel that `ifname`'s IPv6 configuration comes from the CNI result only: no
/// router solicitations, no addresses or routes from advertisements, no duplicate address
/// detection (see the module comment). Without IPv6 in the kernel there is nothing to turn
/// off, unless the description asks for IPv6 (`required`), which then fails here, naming why.
fn ipv6_from_cni_only(conf: &Path, ifname: &str, required: bool) -> Result<(), NetworkError> {
    let dir = conf.join(ifname);
    if !required && !dir.is_dir() {
        return Ok(());
    }
    for (setting, value) in [("accept_ra", "0"), ("autoconf", "0"), ("accept_dad", "0")] {
        let path = dir.join(setting);
        fs::write(&path, value).map_err(|source| NetworkError::Setting {
            ifname: ifname.into(),
            path,
            source,
        })?;
    }
    Ok(())
}

fn read_description(path: &Path) -> Result<Option<Description>, NetworkError> {
    let read_error = |source| NetworkError::Read {
        path: path.to_path_buf(),
        source,
    };
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(read_error(err)),
    };
    let parse_error = |reason: String| NetworkError::Parse {
        path: path.to_path_buf(),
        reason,
    };
    if meta.len() > FILE_LIMIT {
        return Err(parse_error("too large".into()));
    }
    let bytes = fs::read(path).map_err(read_error)?;
    let description: Description =
        serde_json::from_slice(&bytes).map_err(|e| parse_error(e.to_string()))?;
    if let Some(problem) = description.problem() {
        return Err(parse_error(problem));
    }
    Ok(Some(description))
}

/// The interface whose `address` in `sys_class_net` is `mac` (case-insensitive).
fn interface_with_mac(sys_class_net: &Path, mac: &str) -> Result<String, NetworkError> {
    let wanted = mac.trim().to_ascii_lowercase();
    let entries = fs::read_dir(sys_class_net).map_err(|source| NetworkError::Read {
        path: sys_class_net.to_path_buf(),
        source,
    })?;
    for entry in entries.flatten() {
        let Ok(found) = fs::read_to_string(entry.path().join("address")) else {
            continue;
        };
        if found.trim().to_ascii_lowercase() == wanted {
            if let Some(name) = entry.file_name().to_str() {
                return Ok(name.to_string());
            }
        }
    }
    Err(NetworkError::NoSuchNic { mac: wanted })
}

/// `aa:bb:cc:dd:ee:ff` as bytes.
fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut bytes = [0u8; 6];
    let mut parts = text.trim().split(':');
    for slot in &mut bytes {
        let part = parts.next().filter(|p| p.len() == 2)?;
        *slot = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(bytes)
}

/// `struct sockaddr` holding an IPv4 address (the ioctls take the generic type).
fn sockaddr_v4(address: Ipv4Addr) -> libc::sockaddr {
    let inet = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(address).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size (16 bytes) and both are plain data;
    // the kernel reads the generic one as sockaddr_in when sa_family is AF_INET.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(inet) }
}

fn mask(prefix: u8) -> Ipv4Addr {
    if prefix == 0 {
        Ipv4Addr::UNSPECIFIED
    } else {
        Ipv4Addr::from(u32::MAX << (32 - u32::from(prefix.min(32))))
    }
}

/// `struct in6_rtmsg` of `<linux/ipv6_route.h>`, what SIOCADDRT takes on an AF_INET6 socket
/// (the libc crate declares it with private fields, so it cannot be filled in from here).
#[repr(C)]
struct In6RtMsg {
    dst: libc::in6_addr,
    src: libc::in6_addr,
    gateway: libc::in6_addr,
    kind: u32,
    dst_len: u16,
    src_len: u16,
    metric: u32,
    info: libc::c_ulong,
    flags: u32,
    ifindex: libc::c_int,
}

fn in6_addr(address: Ipv6Addr) -> libc::in6_addr {
    libc::in6_addr {
        s6_addr: address.octets(),
    }
}

/// A datagram socket of one address family (AF_INET or AF_INET6), the handle the interface
/// and route ioctls of that family go through.
struct Socket(OwnedFd);

impl Socket {
    fn open(family: libc::c_int) -> io::Result<Socket> {
        // SAFETY: plain socket(2) call; the result is checked before use.
        let fd = unsafe { libc::socket(family, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor that nothing else owns.
        Ok(Socket(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn request(ifname: &str) -> Result<libc::ifreq, NetworkError> {
        let bytes = ifname.as_bytes();
        if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
            return Err(NetworkError::Ioctl {
                ifname: ifname.into(),
                what: "its name".into(),
                source: io::Error::from(io::ErrorKind::InvalidInput),
            });
        }
        // SAFETY: ifreq is plain data (a name and a union of plain fields); all zeroes is valid.
        let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
        for (slot, byte) in request.ifr_name.iter_mut().zip(bytes) {
            *slot = *byte as libc::c_char;
        }
        Ok(request)
    }

    /// ioctl(fd, code, arg), an error naming `what` on failure.
    fn ioctl<T>(
        &self,
        ifname: &str,
        code: libc::c_ulong,
        arg: &mut T,
        what: &str,
    ) -> Result<(), NetworkError> {
        // SAFETY: every code used here takes a pointer to the structure type passed with it
        // (ifreq, rtentry, in6_ifreq or In6RtMsg, matching the socket's family), which lives
        // for the call; the kernel copies it in and out.
        let rc = unsafe { libc::ioctl(self.0.as_raw_fd(), code as _, arg as *mut T) };
        if rc < 0 {
            return Err(NetworkError::Ioctl {
                ifname: ifname.into(),
                what: what.into(),
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    fn set_up(&self, ifname: &str) -> Result<(), NetworkError> {
        let mut request = Self::request(ifname)?;
        self.ioctl(
            ifname,
            libc::SIOCGIFFLAGS,
            &mut request,
            "reading its flags",
        )?;
        // SAFETY: SIOCGIFFLAGS filled in the flags member of the union.
        let flags = unsafe { request.ifr_ifru.ifru_flags };
        request.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
        self.ioctl(ifname, libc::SIOCSIFFLAGS, &mut request, "bringing it up")
    }

    fn set_mac(&self, ifname: &str, mac: &str) -> Result<(), NetworkError> {
        let what = format!("setting MAC address {mac}");
        let bytes = parse_mac(mac).ok_or_else(|| NetworkError::Ioctl {
            ifname: ifname.into(),
            what: what.clone(),
            source: io::Error::from(io::ErrorKind::InvalidInput),
        })?;
        let mut request = Self::request(ifname)?;
        // SAFETY: sockaddr is plain data; all zeroes is valid.
        let mut address: libc::sockaddr = unsafe { std::mem::zeroed() };
        address.sa_family = libc::ARPHRD_ETHER;
        for (slot, byte) in address.sa_data.iter_mut().zip(bytes) {
            *slot = byte as libc::c_char;
        }
        request.ifr_ifru.ifru_hwaddr = address;
        self.ioctl(ifname, libc::SIOCSIFHWADDR, &mut request, &what)
    }

    fn set_mtu(&self, ifname: &str, mtu: u32) -> Result<(), NetworkError> {
        let mut request = Self::request(ifname)?;
        request.ifr_ifru.ifru_mtu = libc::c_int::try_from(mtu).unwrap_or(libc::c_int::MAX);
        self.ioctl(
            ifname,
            libc::SIOCSIFMTU,
            &mut request,
            &format!("setting MTU {mtu}"),
        )
    }

    /// The address, then its mask. The kernel adds the on-link route for the prefix itself
    /// (none for a /32), as `ip addr add` would.
    fn set_address(&self, ifname: &str, address: Ipv4Addr, prefix: u8) -> Result<(), NetworkError> {
        let what = format!("setting address {address}/{prefix}");
        let mut request = Self::request(ifname)?;
        request.ifr_ifru.ifru_addr = sockaddr_v4(address);
        self.ioctl(ifname, libc::SIOCSIFADDR, &mut request, &what)?;
        let mut request = Self::request(ifname)?;
        request.ifr_ifru.ifru_netmask = sockaddr_v4(mask(prefix));
        self.ioctl(ifname, libc::SIOCSIFNETMASK, &mut request, &what)
    }

    fn add_route(&self, ifname: &str, route: &Route) -> Result<(), NetworkError> {
        let what = route_text(route);
        let invalid = || invalid_input(ifname, &what);
        let IpAddr::V4(dst) = route.dst else {
            return Err(invalid());
        };
        let gateway = match route.gateway {
            None => None,
            Some(IpAddr::V4(gateway)) => Some(gateway),
            Some(IpAddr::V6(_)) => return Err(invalid()),
        };
        let device = CString::new(ifname).map_err(|_| invalid())?;
        // SAFETY: rtentry is plain data plus a device name pointer; all zeroes is valid.
        let mut entry: libc::rtentry = unsafe { std::mem::zeroed() };
        entry.rt_dst = sockaddr_v4(dst);
        entry.rt_genmask = sockaddr_v4(mask(route.prefix));
        entry.rt_flags = libc::RTF_UP;
        if route.prefix == 32 {
            entry.rt_flags |= libc::RTF_HOST;
        }
        if let Some(gateway) = gateway {
            entry.rt_gateway = sockaddr_v4(gateway);
            entry.rt_flags |= libc::RTF_GATEWAY;
        }
        // The kernel only reads the name during the call; `device` outlives it.
        entry.rt_dev = device.as_ptr() as *mut libc::c_char;
        self.ioctl(ifname, libc::SIOCADDRT, &mut entry, &what)
    }

    /// The interface's index, which the IPv6 ioctls name it by.
    fn index_of(ifname: &str) -> Result<libc::c_int, NetworkError> {
        let failed = |source| NetworkError::Ioctl {
            ifname: ifname.into(),
            what: "finding its index".into(),
            source,
        };
        let name = CString::new(ifname)
            .map_err(|_| failed(io::Error::from(io::ErrorKind::InvalidInput)))?;
        // SAFETY: if_nametoindex reads the NUL-terminated name, which lives for the call.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if index == 0 {
            return Err(failed(io::Error::last_os_error()));
        }
        libc::c_int::try_from(index)
            .map_err(|_| failed(io::Error::from(io::ErrorKind::InvalidData)))
    }

    /// Adds an IPv6 address (on an AF_INET6 socket). The kernel adds the on-link route for the
    /// prefix itself (none for a /128), as for IPv4.
    fn add_address_v6(
        &self,
        ifname: &str,
        address: Ipv6Addr,
        prefix: u8,
    ) -> Result<(), NetworkError> {
        let mut request = libc::in6_ifreq {
            ifr6_addr: in6_addr(address),
            ifr6_prefixlen: u32::from(prefix),
            ifr6_ifindex: Self::index_of(ifname)?,
        };
        self.ioctl(
            ifname,
            libc::SIOCSIFADDR,
            &mut request,
            &format!("adding address {address}/{prefix}"),
        )
    }

    /// Adds an IPv6 route through `ifname` (on an AF_INET6 socket), in the main table with
    /// the kernel's default metric for routes added by hand.
    fn add_route_v6(&self, ifname: &str, route: &Route) -> Result<(), NetworkError> {
        let what = route_text(route);
        let invalid = || invalid_input(ifname, &what);
        let IpAddr::V6(dst) = route.dst else {
            return Err(invalid());
        };
        let mut request = In6RtMsg {
            dst: in6_addr(dst),
            src: in6_addr(Ipv6Addr::UNSPECIFIED),
            gateway: in6_addr(Ipv6Addr::UNSPECIFIED),
            kind: 0,
            dst_len: u16::from(route.prefix),
            src_len: 0,
            metric: 0,
            info: 0,
            flags: u32::from(libc::RTF_UP),
            ifindex: Self::index_of(ifname)?,
        };
        match route.gateway {
            None => {}
            Some(IpAddr::V6(gateway)) => {
                request.gateway = in6_addr(gateway);
                request.flags |= u32::from(libc::RTF_GATEWAY);
            }
            Some(IpAddr::V4(_)) => return Err(invalid()),
        }
        self.ioctl(ifname, libc::SIOCADDRT, &mut request, &what)
    }
}

/// The error for an entry these ioctls cannot express (a route of the other family).
fn invalid_input(ifname: &str, what: &str) -> NetworkError {
    NetworkError::Ioctl {
        ifname: ifname.into(),
        what: what.into(),
        source: io::Error::from(io::ErrorKind::InvalidInput),
    }
}

fn route_text(route: &Route) -> String {
    match route.gateway {
        Some(gateway) => format!("adding route {}/{} via {gateway}", route.dst, route.prefix),
        None => format!("adding route {}/{}", route.dst, route.prefix),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_description_is_checked_before_use() {
        let share = tempfile::tempdir().unwrap();
        let path = share.path().join(NETWORK_FILE);
        assert!(read_description(&path).unwrap().is_none());
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(
            &path,
            r#"{"interfaces":[{"mac":"0A:00:00:00:00:01","mtu":1500,
                "addresses":[{"address":"172.16.28.2","prefix":32}],
                "routes":[{"dst":"172.16.28.1","prefix":32,"gateway":null},
                          {"dst":"0.0.0.0","prefix":0,"gateway":"172.16.28.1"}]}]}"#,
        )
        .unwrap();
        let description = read_description(&path).unwrap().unwrap();
        assert_eq!(description.interfaces[0].routes.len(), 2);
        for bad in [
            "{",
            r#"{"interfaces":[{"mac":"x","mtu":1,"addresses":[{"address":"1.2.3.4","prefix":33}],"routes":[]}]}"#,
            r#"{"interfaces":[{"mac":"x","mtu":1,"addresses":[{"address":"1.2.3","prefix":3}],"routes":[]}]}"#,
        ] {
            fs::write(&path, bad).unwrap();
            let err = read_description(&path).unwrap_err().to_string();
            assert!(err.contains("is not a network description"), "{err}");
        }
    }

    #[test]
    fn a_dual_stack_description_is_accepted_and_a_mixed_route_is_not() {
        let share = tempfile::tempdir().unwrap();
        let path = share.path().join(NETWORK_FILE);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(
            &path,
            r#"{"interfaces":[{"mac":"0a:00:00:00:00:01","mtu":1500,
                "addresses":[{"address":"172.16.28.2","prefix":32},
                             {"address":"fd52:6b74::2","prefix":128}],
                "routes":[{"dst":"fd52:6b74::1","prefix":128,"gateway":null},
                          {"dst":"::","prefix":0,"gateway":"fd52:6b74::1"}]}]}"#,
        )
        .unwrap();
        let description = read_description(&path).unwrap().unwrap();
        assert!(description.interfaces[0].addresses[1].address.is_ipv6());
        fs::write(
            &path,
            r#"{"interfaces":[{"mac":"x","mtu":1,"addresses":[],
                "routes":[{"dst":"::","prefix":0,"gateway":"10.0.0.1"}]}]}"#,
        )
        .unwrap();
        let err = read_description(&path).unwrap_err().to_string();
        assert!(err.contains("other address family"), "{err}");
    }

    #[test]
    fn ipv6_is_told_to_take_its_configuration_from_cni_only() {
        let conf = tempfile::tempdir().unwrap();
        // No IPv6 in the kernel and none asked for: nothing to do.
        ipv6_from_cni_only(conf.path(), "eth0", false).unwrap();
        // Asked for but absent: an error naming the setting.
        let err = ipv6_from_cni_only(conf.path(), "eth0", true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("accept_ra"), "{err}");
        fs::create_dir(conf.path().join("eth0")).unwrap();
        ipv6_from_cni_only(conf.path(), "eth0", false).unwrap();
        for setting in ["accept_ra", "autoconf", "accept_dad"] {
            let value = fs::read_to_string(conf.path().join("eth0").join(setting)).unwrap();
            assert_eq!(value, "0", "{setting}");
        }
    }

    #[test]
    fn the_ipv6_route_request_has_the_kernels_layout() {
        // struct in6_rtmsg: three in6_addr, u32, two u16, u32, unsigned long, u32, int.
        assert_eq!(std::mem::size_of::<In6RtMsg>(), 80);
        assert_eq!(std::mem::offset_of!(In6RtMsg, info), 64);
        assert_eq!(std::mem::offset_of!(In6RtMsg, ifindex), 76);
        let address = in6_addr("fd52:6b74::2".parse().unwrap());
        assert_eq!(address.s6_addr[0..2], [0xfd, 0x52]);
        assert_eq!(address.s6_addr[15], 2);
    }

    #[test]
    fn nics_are_found_by_mac() {
        let sys = tempfile::tempdir().unwrap();
        for (name, mac) in [("lo", "00:00:00:00:00:00"), ("eth0", "0a:00:00:00:00:01")] {
            fs::create_dir_all(sys.path().join(name)).unwrap();
            fs::write(sys.path().join(name).join("address"), format!("{mac}\n")).unwrap();
        }
        assert_eq!(
            interface_with_mac(sys.path(), "0A:00:00:00:00:01").unwrap(),
            "eth0"
        );
        let err = interface_with_mac(sys.path(), "0a:00:00:00:00:02")
            .unwrap_err()
            .to_string();
        assert!(err.contains("0a:00:00:00:00:02"), "{err}");
        assert_eq!(parse_mac("0A:00:00:00:00:01"), Some([10, 0, 0, 0, 0, 1]));
        for bad in [
            "0a:00:00:00:00",
            "0a:00:00:00:00:01:02",
            "0a:0:00:00:00:01",
            "zz:00:00:00:00:01",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
        assert_eq!(mask(24).to_string(), "255.255.255.0");
        assert_eq!(mask(0).to_string(), "0.0.0.0");
        let raw = sockaddr_v4(Ipv4Addr::new(10, 1, 2, 3));
        assert_eq!(raw.sa_family, libc::AF_INET as libc::sa_family_t);
        assert_eq!(&raw.sa_data[2..6], &[10, 1, 2, 3]);
    }
}
