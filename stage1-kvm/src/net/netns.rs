//! The pod's network namespace and the wiring inside it, in-process (docs/networking.md says
//! why not `ip`/`tc`): a named namespace (`/run/netns/rkt-UUID`, made the way `ip netns add`
//! makes it, so that `ip netns`, the CNI plugins and gc after a crash find it), a tap per CNI
//! interface for the VMM, joined to that interface by tc ingress qdiscs with mirred redirects
//! both ways (over rtnetlink: [`super::rtnl`]), and the state the CNI plugin left on the
//! interface (MAC, MTU, addresses, routes) for the guest.

use std::ffi::CString;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, ErrorKind};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::link::LinkAttribute;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol,
};
use netlink_packet_route::AddressFamily;
use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

use super::guest::{max_prefix, GuestAddress, GuestInterface, GuestRoute};
use super::rtnl::Rtnl;

/// Named namespaces live here (`ip netns` and the CNI conventions).
pub const NETNS_DIR: &str = "/run/netns";
/// The tun/tap control device.
const TUN_DEVICE: &str = "/dev/net/tun";

/// A wiring step that failed: what it was doing, naming the interface and the namespace
/// ("creating tap0 in rkt-UUID"), and why.
#[derive(Debug, thiserror::Error)]
#[error("{operation}: {source}")]
pub struct WiringError {
    pub operation: String,
    #[source]
    pub source: io::Error,
}

impl WiringError {
    fn new(operation: impl Into<String>, source: impl Into<io::Error>) -> WiringError {
        WiringError {
            operation: operation.into(),
            source: source.into(),
        }
    }
}

/// `result`'s error as a [`WiringError`] doing `operation`.
fn doing<T, E: Into<io::Error>>(
    result: Result<T, E>,
    operation: impl FnOnce() -> String,
) -> Result<T, WiringError> {
    result.map_err(|e| WiringError::new(operation(), e))
}

/// The namespace's name for pod `uuid`.
pub fn netns_name(uuid: &str) -> String {
    format!("rkt-{uuid}")
}

pub fn netns_path(name: &str) -> PathBuf {
    PathBuf::from(NETNS_DIR).join(name)
}

/// A name that stays one file in [`NETNS_DIR`].
fn valid_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

/// Creates the named namespace as `ip netns add` does: `/run/netns` a shared mount (so that
/// unmounting a namespace file in one mount namespace unmounts it in all), an empty file there
/// refused if the name exists, and the namespace of a thread that unshared its own bind-mounted
/// onto it. On failure nothing is left behind. Its loopback is brought up with the first tap
/// ([`join_tap`]).
pub fn create(name: &str) -> Result<(), WiringError> {
    let operation = || format!("creating the network namespace {name}");
    if !valid_name(name) {
        return Err(WiringError::new(
            operation(),
            io::Error::new(ErrorKind::InvalidInput, "not a namespace name"),
        ));
    }
    doing(share_netns_dir(), operation)?;
    let path = netns_path(name);
    // O_EXCL: a name that exists is refused, never taken over.
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o000)
        .open(&path);
    drop(doing(file, operation)?);
    let bound = std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name("netns-create".into())
            .spawn_scoped(scope, || -> nix::Result<()> {
                // Only this thread moves to the new namespace; it ends right after.
                unshare(CloneFlags::CLONE_NEWNET)?;
                mount(
                    Some("/proc/thread-self/ns/net"),
                    &path,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
            })?;
        thread
            .join()
            .unwrap_or(Err(Errno::EIO))
            .map_err(io::Error::from)
    });
    if let Err(err) = bound {
        // Not mounted (the mount was the last step): the file is all there is.
        let _ = fs::remove_file(&path);
        return Err(WiringError::new(operation(), err));
    }
    Ok(())
}

/// `/run/netns` exists and is a shared mount point: bound onto itself first if it is not a
/// mount point yet (changing the propagation of a plain directory fails with EINVAL).
fn share_netns_dir() -> io::Result<()> {
    let dir = Path::new(NETNS_DIR);
    match DirBuilder::new().mode(0o755).create(dir) {
        Err(err) if err.kind() != ErrorKind::AlreadyExists => return Err(err),
        _ => {}
    }
    let share = || {
        mount(
            None::<&str>,
            dir,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    match share() {
        Err(Errno::EINVAL) => {
            mount(
                Some(dir),
                dir,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )?;
            Ok(share()?)
        }
        other => Ok(other?),
    }
}

/// Whether the named namespace exists.
pub fn exists(name: &str) -> bool {
    netns_path(name).exists()
}

/// Deletes the named namespace (unmount, then remove the file; a missing one is fine: gc calls
/// this after crashes): its devices (the taps, the CNI interfaces' pod ends) go with it once
/// nothing holds it (the VMM has ended by then).
pub fn delete(name: &str) -> Result<(), WiringError> {
    let operation = || format!("deleting the network namespace {name}");
    if !valid_name(name) {
        return Err(WiringError::new(
            operation(),
            io::Error::new(ErrorKind::InvalidInput, "not a namespace name"),
        ));
    }
    let path = netns_path(name);
    match umount2(&path, MntFlags::MNT_DETACH) {
        // EINVAL: not a mount point (a file left by a crash half-way through `create`).
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
        Err(err) => return Err(WiringError::new(operation(), err)),
    }
    match fs::remove_file(&path) {
        Err(err) if err.kind() != ErrorKind::NotFound => Err(WiringError::new(operation(), err)),
        _ => Ok(()),
    }
}

/// Runs `work` on a short-lived thread inside the named namespace, with a netlink socket
/// opened there (a socket belongs to the namespace it was opened in, and a tap is created in
/// its creator's).
fn in_namespace<T: Send>(
    ns: &str,
    work: impl FnOnce(&mut Rtnl) -> Result<T, WiringError> + Send,
) -> Result<T, WiringError> {
    let handle = doing(open(ns), || format!("opening the network namespace {ns}"))?;
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name("netns-wiring".into())
            .spawn_scoped(scope, || {
                doing(enter(&handle), || format!("entering {ns}"))?;
                let mut rtnl = doing(Rtnl::open(), || format!("opening rtnetlink in {ns}"))?;
                work(&mut rtnl)
            });
        let thread = doing(thread, || format!("starting a thread for {ns}"))?;
        thread.join().unwrap_or_else(|_| {
            Err(WiringError::new(
                format!("wiring in {ns}"),
                io::Error::other("the thread panicked"),
            ))
        })
    })
}

/// Creates `tap` in the namespace, with the CNI interface's MTU, and joins the two: whatever
/// arrives on one leaves by the other, untouched (tc ingress + mirred egress redirect, a
/// match-all u32 filter). The CNI interface's own IP stack never sees a frame, so any plugin's
/// interface works, whatever it is (veth, macvlan, ...). Also brings the namespace's loopback
/// up.
pub fn join_tap(ns: &str, cni_if: &str, tap: &str, mtu: u32) -> Result<(), WiringError> {
    in_namespace(ns, |rtnl| {
        doing(rtnl.set_up("lo", None), || {
            format!("bringing lo up in {ns}")
        })?;
        doing(create_tap(tap), || format!("creating {tap} in {ns}"))?;
        doing(rtnl.set_up(tap, Some(mtu)), || {
            format!("setting {tap}'s MTU to {mtu} and bringing it up in {ns}")
        })?;
        let index = |rtnl: &mut Rtnl, name: &str| {
            doing(rtnl.link(name).map(|l| l.header.index), || {
                format!("looking up {name} in {ns}")
            })
        };
        let cni_index = index(rtnl, cni_if)?;
        let tap_index = index(rtnl, tap)?;
        for ((from, from_index), (to, to_index)) in [
            ((cni_if, cni_index), (tap, tap_index)),
            ((tap, tap_index), (cni_if, cni_index)),
        ] {
            doing(rtnl.add_ingress_qdisc(from_index), || {
                format!("adding the ingress qdisc of {from} in {ns}")
            })?;
            doing(rtnl.add_redirect(from_index, to_index), || {
                format!("redirecting {from}'s frames to {to} in {ns}")
            })?;
        }
        Ok(())
    })
}

/// Creates the persistent tap `name` in the calling thread's namespace, as `ip tuntap add dev
/// NAME mode tap` does (TUNSETIFF, then TUNSETPERSIST), refusing a name that exists. Its
/// flags are the ones the VMM attaches with (tap, no packet information, virtio-net headers):
/// an attach sets them anyway.
fn create_tap(name: &str) -> io::Result<()> {
    let c_name = CString::new(name)
        .ok()
        .filter(|n| !n.as_bytes().is_empty() && n.as_bytes().len() < libc::IFNAMSIZ)
        .ok_or_else(|| io::Error::new(ErrorKind::InvalidInput, "not an interface name"))?;
    let tun = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(TUN_DEVICE)?;
    // SAFETY: ifreq is a plain C struct (a name array and a union of integers, addresses and
    // pointers); all-zero bytes are a valid value of every member.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(c_name.as_bytes()) {
        *slot = *byte as libc::c_char;
    }
    // IFF_TUN_EXCL: EBUSY for a name that exists instead of attaching to it.
    request.ifr_ifru.ifru_flags =
        (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR | libc::IFF_TUN_EXCL)
            as libc::c_short;
    // SAFETY: TUNSETIFF reads (and writes back the name of) a `struct ifreq` through the
    // pointer, which is valid and exclusively ours during the call; the fd is our open
    // /dev/net/tun.
    if unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &mut request) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: TUNSETPERSIST takes its argument by value; no memory is passed.
    if unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETPERSIST, 1 as libc::c_ulong) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // Closing the fd detaches it; the tap stays (persistent) for the VMM to attach to.
    Ok(())
}

/// An interface's link and addresses, as rtnetlink lists them.
#[derive(Clone, Debug, PartialEq)]
struct LinkState {
    /// `aa:bb:cc:dd:ee:ff`, empty if the link has none.
    mac: String,
    mtu: u32,
    addresses: Vec<LinkAddress>,
}

#[derive(Clone, Debug, PartialEq)]
struct LinkAddress {
    address: IpAddr,
    prefix: u8,
    scope: AddressScope,
}

/// A route of the main table through the interface.
#[derive(Clone, Debug, PartialEq)]
struct LinkRoute {
    /// The unspecified address of the route's family, prefix 0, for a default route.
    dst: IpAddr,
    prefix: u8,
    gateway: Option<IpAddr>,
    protocol: RouteProtocol,
}

/// What the CNI plugin configured on `ifname`, as the guest must reproduce it: the MAC (the
/// guest takes it over: frames for it are what the outside sends), the MTU, the IPv4 and IPv6
/// addresses and the routes through it.
pub fn read_interface(ns: &str, ifname: &str) -> Result<GuestInterface, WiringError> {
    let (link, routes) = read_state(ns, ifname)?;
    Ok(guest_view(link, routes))
}

/// `ifname`'s link, addresses and routes of the main table (`ip addr show dev IF`, `ip -4/-6
/// route show table main dev IF`).
fn read_state(ns: &str, ifname: &str) -> Result<(LinkState, Vec<LinkRoute>), WiringError> {
    in_namespace(ns, |rtnl| {
        let operation = || format!("reading {ifname} in {ns}");
        let link = doing(rtnl.link(ifname), operation)?;
        let index = link.header.index;
        let addresses = doing(rtnl.addresses(), operation)?
            .iter()
            .filter(|a| a.header.index == index)
            .filter_map(address_of)
            .collect();
        let mut routes = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let listed = doing(rtnl.routes(family), || {
                format!("reading the routes through {ifname} in {ns}")
            })?;
            routes.extend(listed.iter().filter_map(|r| route_through(r, index)));
        }
        Ok((link_state(&link.attributes, addresses), routes))
    })
}

fn link_state(attributes: &[LinkAttribute], addresses: Vec<LinkAddress>) -> LinkState {
    let mut state = LinkState {
        mac: String::new(),
        mtu: 0,
        addresses,
    };
    for attribute in attributes {
        match attribute {
            LinkAttribute::Address(bytes) => {
                state.mac = bytes
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":")
            }
            LinkAttribute::Mtu(mtu) => state.mtu = *mtu,
            _ => {}
        }
    }
    state
}

/// An address as `ip addr` shows it: the local address (IFA_LOCAL, which IPv6 leaves out:
/// then IFA_ADDRESS), its prefix and scope.
fn address_of(message: &AddressMessage) -> Option<LinkAddress> {
    let mut local = None;
    let mut address = None;
    for attribute in &message.attributes {
        match attribute {
            AddressAttribute::Local(a) => local = Some(*a),
            AddressAttribute::Address(a) => address = Some(*a),
            _ => {}
        }
    }
    Some(LinkAddress {
        address: local.or(address)?,
        prefix: message.header.prefix_len,
        scope: message.header.scope,
    })
}

/// `route` if it is a route of the main table through interface `index` (`ip route show table
/// main dev IF`; not a cached clone), with a destination of its own family and a prefix that
/// fits it.
fn route_through(route: &RouteMessage, index: u32) -> Option<LinkRoute> {
    let header = &route.header;
    let any = match header.address_family {
        AddressFamily::Inet => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => return None,
    };
    let mut table = u32::from(header.table);
    let mut oif = None;
    let mut dst = None;
    let mut gateway = None;
    for attribute in &route.attributes {
        match attribute {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Destination(a) => dst = Some(ip_of(a)?),
            RouteAttribute::Gateway(a) => gateway = ip_of(a),
            _ => {}
        }
    }
    if table != u32::from(RouteHeader::RT_TABLE_MAIN)
        || oif != Some(index)
        || header.flags.contains(RouteFlags::Cloned)
    {
        return None;
    }
    let dst = dst.unwrap_or(any);
    let prefix = header.destination_prefix_length;
    // A destination of the other family, or a prefix longer than its address, is no route.
    if dst.is_ipv6() != any.is_ipv6() || prefix > max_prefix(&dst) {
        return None;
    }
    Some(LinkRoute {
        dst,
        prefix,
        gateway,
        protocol: header.protocol,
    })
}

fn ip_of(address: &RouteAddress) -> Option<IpAddr> {
    match address {
        RouteAddress::Inet(a) => Some(IpAddr::V4(*a)),
        RouteAddress::Inet6(a) => Some(IpAddr::V6(*a)),
        _ => None,
    }
}

/// The guest's configuration from what the namespace holds. An address keeps its prefix only
/// when the namespace kept the kernel's on-link route for it (bridge-style plugins); ptp-style
/// plugins delete it and route the subnet through the gateway, which the guest gets as a host
/// address (/32, /128) plus the same routes. Link-scope routes come first so that gateways are
/// reachable when the routes through them are added. IPv6 link-local addresses (fe80::/64)
/// and the kernel's routes are left out: the guest's kernel makes its own from the same MAC.
fn guest_view(link: LinkState, routes: Vec<LinkRoute>) -> GuestInterface {
    let kernel_routes: Vec<(IpAddr, u8)> = routes
        .iter()
        .filter(|r| r.protocol == RouteProtocol::Kernel && r.gateway.is_none())
        .map(|r| (r.dst, r.prefix))
        .collect();
    let addresses = link
        .addresses
        .iter()
        .filter(|a| a.scope != AddressScope::Link)
        .map(|a| {
            let longest = max_prefix(&a.address);
            let prefix = a.prefix.min(longest);
            let on_link = kernel_routes.contains(&(network_of(a.address, prefix), prefix));
            GuestAddress {
                address: a.address,
                prefix: if on_link { prefix } else { longest },
            }
        })
        .collect();
    let mut guest_routes: Vec<GuestRoute> = routes
        .iter()
        .filter(|r| r.protocol != RouteProtocol::Kernel)
        // A gateway of the other family (IPv4 via IPv6) is not one the guest can use.
        .filter(|r| r.gateway.is_none_or(|g| g.is_ipv4() == r.dst.is_ipv4()))
        .map(|r| GuestRoute {
            dst: r.dst,
            prefix: r.prefix,
            gateway: r.gateway,
        })
        .collect();
    guest_routes.sort_by_key(|r| r.gateway.is_some());
    GuestInterface {
        mac: link.mac,
        mtu: link.mtu,
        addresses,
        routes: guest_routes,
        boot_mac: None,
    }
}

fn network_of(address: IpAddr, prefix: u8) -> IpAddr {
    match address {
        IpAddr::V4(v4) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(prefix.min(32)))
                .unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask))
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(prefix.min(128)))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

/// A handle on the namespace for `setns` (the VMM must open its taps inside).
pub fn open(name: &str) -> io::Result<OwnedFd> {
    Ok(fs::File::open(netns_path(name))?.into())
}

/// Moves the calling thread into the namespace `fd`; threads it starts afterwards are there too.
pub fn enter(fd: &impl AsFd) -> nix::Result<()> {
    setns(fd.as_fd(), CloneFlags::CLONE_NEWNET)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// `DST/PREFIX Some(GATEWAY)` per route, in order.
    fn route_lines(iface: &GuestInterface) -> Vec<String> {
        iface
            .routes
            .iter()
            .map(|r| format!("{}/{} {:?}", r.dst, r.prefix, r.gateway))
            .collect()
    }

    /// A link with `addresses` (`ADDR/LEN`, global scope unless `link` follows).
    fn link(mac: &str, mtu: u32, addresses: &[&str]) -> LinkState {
        let addresses = addresses
            .iter()
            .map(|text| {
                let (cidr, scope) = match text.strip_suffix(" link") {
                    Some(cidr) => (cidr, AddressScope::Link),
                    None => (*text, AddressScope::Universe),
                };
                let (address, prefix) = cidr.split_once('/').unwrap();
                LinkAddress {
                    address: address.parse().unwrap(),
                    prefix: prefix.parse().unwrap(),
                    scope,
                }
            })
            .collect();
        LinkState {
            mac: mac.into(),
            mtu,
            addresses,
        }
    }

    /// A route as `ip route` shows it: `DST[/LEN] [via GATEWAY] [proto kernel]` (no `/LEN`: a
    /// host route; `0.0.0.0/0` and `::/0` are the default routes).
    fn route(text: &str) -> LinkRoute {
        let words: Vec<&str> = text.split_whitespace().collect();
        let (dst, prefix) = match words[0].split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().unwrap(), p.parse().unwrap()),
            None => {
                let a: IpAddr = words[0].parse().unwrap();
                (a, max_prefix(&a))
            }
        };
        let after = |key: &str| words.iter().position(|w| *w == key).map(|i| words[i + 1]);
        LinkRoute {
            dst,
            prefix,
            gateway: after("via").map(|g| g.parse().unwrap()),
            protocol: match after("proto") {
                Some("kernel") => RouteProtocol::Kernel,
                _ => RouteProtocol::Boot,
            },
        }
    }

    fn routes_of(texts: &[&str]) -> Vec<LinkRoute> {
        texts.iter().map(|t| route(t)).collect()
    }

    #[test]
    fn ptp_gives_a_host_address_and_the_plugins_routes() {
        // What the namespace holds after the ptp plugin (1.1.1).
        let iface = guest_view(
            link("a2:47:3b:6e:4f:01", 1500, &["172.16.28.7/24"]),
            routes_of(&[
                "0.0.0.0/0 via 172.16.28.1",
                "172.16.28.0/24 via 172.16.28.1",
                "172.16.28.1",
            ]),
        );
        assert_eq!(iface.mac, "a2:47:3b:6e:4f:01");
        assert_eq!(iface.mtu, 1500);
        assert_eq!(
            iface.addresses,
            [GuestAddress {
                address: "172.16.28.7".parse().unwrap(),
                prefix: 32
            }]
        );
        let routes = route_lines(&iface);
        assert_eq!(
            routes,
            [
                "172.16.28.1/32 None",
                "0.0.0.0/0 Some(172.16.28.1)",
                "172.16.28.0/24 Some(172.16.28.1)"
            ]
        );
    }

    #[test]
    fn dual_stack_ptp_gives_both_families_and_leaves_link_local_out() {
        // ptp with host-local ranges of both families.
        let iface = guest_view(
            link(
                "a2:47:3b:6e:4f:01",
                1500,
                &[
                    "172.29.0.2/24",
                    "fd52:6b74::2/64",
                    "fe80::a047:3bff:fe6e:4f01/64 link",
                ],
            ),
            routes_of(&[
                "0.0.0.0/0 via 172.29.0.1",
                "172.29.0.0/24 via 172.29.0.1",
                "172.29.0.1",
                "fd52:6b74::1",
                "fd52:6b74::/64 via fd52:6b74::1",
                "fe80::/64 proto kernel",
                "::/0 via fd52:6b74::1",
            ]),
        );
        let addresses: Vec<String> = iface
            .addresses
            .iter()
            .map(|a| format!("{}/{}", a.address, a.prefix))
            .collect();
        assert_eq!(addresses, ["172.29.0.2/32", "fd52:6b74::2/128"]);
        let routes = route_lines(&iface);
        assert_eq!(
            routes,
            [
                "172.29.0.1/32 None",
                "fd52:6b74::1/128 None",
                "0.0.0.0/0 Some(172.29.0.1)",
                "172.29.0.0/24 Some(172.29.0.1)",
                "fd52:6b74::/64 Some(fd52:6b74::1)",
                "::/0 Some(fd52:6b74::1)",
            ]
        );
        // A bridge-style IPv6 subnet the kernel routes on link keeps its prefix.
        let kept = guest_view(
            link("", 1500, &["fd00:10::5/64"]),
            routes_of(&["fd00:10::/64 proto kernel"]),
        );
        assert_eq!(kept.addresses[0].prefix, 64);
        assert!(kept.routes.is_empty());
        // A route through a gateway of the other family is left out.
        let mixed = guest_view(link("", 1500, &[]), routes_of(&["10.0.0.0/8 via fd00::1"]));
        assert!(mixed.routes.is_empty());
        assert_eq!(
            network_of("fd52:6b74::2".parse().unwrap(), 64).to_string(),
            "fd52:6b74::"
        );
    }

    #[test]
    fn bridge_keeps_the_subnet_on_link() {
        let iface = guest_view(
            link("0a:58:0a:16:00:05", 1400, &["10.22.0.5/16"]),
            routes_of(&["0.0.0.0/0 via 10.22.0.1", "10.22.0.0/16 proto kernel"]),
        );
        assert_eq!(iface.addresses[0].prefix, 16);
        assert_eq!(iface.routes.len(), 1);
        assert_eq!(iface.routes[0].gateway, Some("10.22.0.1".parse().unwrap()));
        assert_eq!(
            network_of("10.22.3.5".parse().unwrap(), 16).to_string(),
            "10.22.0.0"
        );
        assert_eq!(
            network_of("10.22.3.5".parse().unwrap(), 0).to_string(),
            "0.0.0.0"
        );
    }

    /// A route message of `family` through interface `oif` in `table`, to `dst/prefix` if given.
    fn route_message(
        family: AddressFamily,
        table: u8,
        oif: u32,
        dst: Option<IpAddr>,
        prefix: u8,
    ) -> RouteMessage {
        let mut message = RouteMessage::default();
        message.header.address_family = family;
        message.header.table = table;
        message.header.destination_prefix_length = prefix;
        message.attributes.push(RouteAttribute::Oif(oif));
        if let Some(dst) = dst {
            message
                .attributes
                .push(RouteAttribute::Destination(RouteAddress::from(dst)));
        }
        message
    }

    #[test]
    fn only_the_main_tables_routes_through_the_interface_count() {
        let main = RouteHeader::RT_TABLE_MAIN;
        let v4 = AddressFamily::Inet;
        let v6 = AddressFamily::Inet6;
        let net: IpAddr = "10.0.0.0".parse().unwrap();
        let net6: IpAddr = "fd00::".parse().unwrap();
        // No destination: the family's default route.
        let default = route_through(&route_message(v6, main, 3, None, 0), 3).unwrap();
        assert_eq!((default.dst.to_string(), default.prefix), ("::".into(), 0));
        let mut through_gateway = route_message(v4, main, 3, Some(net), 8);
        through_gateway.header.protocol = RouteProtocol::Boot;
        through_gateway
            .attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet(
                "10.0.0.1".parse().unwrap(),
            )));
        assert_eq!(
            route_through(&through_gateway, 3),
            Some(route("10.0.0.0/8 via 10.0.0.1"))
        );
        // Another interface, another table, a cached clone.
        assert_eq!(
            route_through(&route_message(v4, main, 4, Some(net), 8), 3),
            None
        );
        assert_eq!(
            route_through(&route_message(v4, 255, 3, Some(net), 8), 3),
            None
        );
        let mut large_table = route_message(v4, 252, 3, Some(net), 8);
        large_table.attributes.push(RouteAttribute::Table(1000));
        assert_eq!(route_through(&large_table, 3), None);
        let mut cloned = route_message(v6, main, 3, Some(net6), 64);
        cloned.header.flags = RouteFlags::Cloned;
        assert_eq!(route_through(&cloned, 3), None);
        // A destination of the other family, or a prefix longer than the address: nonsense.
        assert_eq!(
            route_through(&route_message(v6, main, 3, Some(net), 8), 3),
            None
        );
        assert_eq!(
            route_through(&route_message(v6, main, 3, Some(net6), 200), 3),
            None
        );
        assert_eq!(
            route_through(&route_message(v4, main, 3, Some(net), 33), 3),
            None
        );
    }

    #[test]
    fn addresses_and_links_read_as_ip_shows_them() {
        // IPv4: IFA_LOCAL is the address (IFA_ADDRESS the peer's on point-to-point links).
        let mut v4 = AddressMessage::default();
        v4.header.prefix_len = 24;
        v4.attributes = vec![
            AddressAttribute::Address("10.1.0.9".parse().unwrap()),
            AddressAttribute::Local("10.1.0.2".parse().unwrap()),
        ];
        let read = address_of(&v4).unwrap();
        assert_eq!(
            (read.address.to_string(), read.prefix),
            ("10.1.0.2".into(), 24)
        );
        // IPv6 has IFA_ADDRESS alone.
        let mut v6 = AddressMessage::default();
        v6.header.prefix_len = 64;
        v6.header.scope = AddressScope::Link;
        v6.attributes = vec![AddressAttribute::Address("fe80::1".parse().unwrap())];
        let read = address_of(&v6).unwrap();
        assert_eq!(
            (read.address.to_string(), read.scope),
            ("fe80::1".into(), AddressScope::Link)
        );
        assert_eq!(address_of(&AddressMessage::default()), None);
        let state = link_state(
            &[
                LinkAttribute::Mtu(9000),
                LinkAttribute::Address(vec![0x0a, 0x58, 0, 0xff, 0x10, 0x01]),
            ],
            Vec::new(),
        );
        assert_eq!((state.mac.as_str(), state.mtu), ("0a:58:00:ff:10:01", 9000));
    }

    // The tests below make real namespaces: they need root, as rkt does.

    fn root() -> bool {
        let root = nix::unistd::geteuid().is_root();
        if !root {
            eprintln!("needs root (network namespaces); rkt and its tests run as root");
        }
        root
    }

    /// A named namespace for one test, deleted at the end.
    struct TestNamespace(String);

    impl TestNamespace {
        fn new(label: &str) -> TestNamespace {
            let name = format!("rkt-test-{label}-{}", std::process::id());
            delete(&name).unwrap();
            create(&name).unwrap();
            TestNamespace(name)
        }

        /// `PROGRAM -n NS ARGS` (the test's own set-up and cross-checks); its stdout.
        fn run(&self, program: &str, args: &[&str]) -> String {
            let output = Command::new(program)
                .args(["-n", &self.0])
                .args(args)
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "{program} {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            String::from_utf8(output.stdout).unwrap()
        }

        fn ip(&self, args: &str) -> String {
            self.run("ip", &args.split_whitespace().collect::<Vec<_>>())
        }
    }

    impl Drop for TestNamespace {
        fn drop(&mut self) {
            let _ = delete(&self.0);
        }
    }

    /// The network namespace's inode of `path`.
    fn ns_inode(path: &str) -> u64 {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(path).unwrap().ino()
    }

    #[test]
    fn a_named_namespace_is_made_refused_twice_and_deleted_idempotently() {
        if !root() {
            return;
        }
        let name = format!("rkt-test-create-{}", std::process::id());
        delete(&name).unwrap();
        create(&name).unwrap();
        assert!(exists(&name));
        let path = netns_path(&name);
        let path = path.to_str().unwrap();
        // A network namespace of its own, which `ip netns` lists.
        assert_ne!(ns_inode(path), ns_inode("/proc/thread-self/ns/net"));
        let listed = Command::new("ip").args(["netns", "list"]).output().unwrap();
        assert!(String::from_utf8_lossy(&listed.stdout).contains(&name));
        // /run/netns is a shared mount point.
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            mountinfo
                .lines()
                .any(|l| l.split(' ').nth(4) == Some(NETNS_DIR) && l.contains(" shared:")),
            "{mountinfo}"
        );
        // The same name again is refused, and the namespace is still the same.
        let before = ns_inode(path);
        let err = create(&name).unwrap_err();
        assert_eq!(err.source.kind(), ErrorKind::AlreadyExists, "{err}");
        assert!(err.to_string().contains(&name), "{err}");
        assert_eq!(ns_inode(path), before);
        delete(&name).unwrap();
        assert!(!exists(&name));
        assert!(!mountinfo_has(path));
        delete(&name).unwrap();
        // A file left by a crash before its mount goes too.
        fs::write(path, "").unwrap();
        delete(&name).unwrap();
        assert!(!exists(&name));
        assert!(create("../x").is_err() && delete("a/b").is_err());
    }

    fn mountinfo_has(path: &str) -> bool {
        fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .any(|l| l.split(' ').nth(4) == Some(path))
    }

    #[test]
    fn join_tap_redirects_both_ways_with_ingress_qdiscs() {
        if !root() {
            return;
        }
        let ns = TestNamespace::new("join");
        ns.ip("link add eth0 type veth peer name peer0");
        join_tap(&ns.0, "eth0", "tap0", 1400).unwrap();
        let tap = ns.ip("-d link show dev tap0");
        assert!(tap.contains("mtu 1400") && tap.contains(",UP"), "{tap}");
        assert!(tap.contains("tun type tap"), "{tap}");
        assert!(ns.ip("link show dev lo").contains(",UP"));
        for (from, to) in [("eth0", "tap0"), ("tap0", "eth0")] {
            let qdiscs = ns.run("tc", &["qdisc", "show", "dev", from]);
            assert!(qdiscs.contains("qdisc ingress ffff:"), "{qdiscs}");
            let filters = ns.run("tc", &["filter", "show", "dev", from, "ingress"]);
            // What `tc filter add ... protocol all u32 match u32 0 0 action mirred egress
            // redirect dev TO` shows.
            assert!(filters.contains("protocol all"), "{filters}");
            assert!(filters.contains("u32"), "{filters}");
            assert!(
                filters.contains("match 00000000/00000000 at 0"),
                "{filters}"
            );
            assert!(
                filters.contains(&format!("mirred (Egress Redirect to device {to}) stolen")),
                "{filters}"
            );
        }
        // A tap that exists is refused, naming what failed where.
        let err = join_tap(&ns.0, "eth0", "tap0", 1400).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("creating tap0 in {}: ", ns.0)),
            "{err}"
        );
        let err = join_tap(&ns.0, "eth9", "tap1", 1400).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("looking up eth9 in {}: ", ns.0)),
            "{err}"
        );
    }

    /// `ip -j` listings, the parts compared with ours.
    #[derive(serde::Deserialize)]
    struct IpLink {
        address: String,
        mtu: u32,
        addr_info: Vec<IpAddrInfo>,
    }

    #[derive(serde::Deserialize)]
    struct IpAddrInfo {
        local: String,
        prefixlen: u8,
        scope: String,
    }

    #[derive(serde::Deserialize)]
    struct IpRoute {
        dst: String,
        gateway: Option<String>,
        protocol: Option<String>,
    }

    #[test]
    fn read_interface_sees_what_ip_shows() {
        if !root() {
            return;
        }
        let ns = TestNamespace::new("read");
        ns.ip("link add eth0 type veth peer name peer0");
        ns.ip("link set dev eth0 mtu 1450 up");
        ns.ip("link set dev peer0 up");
        ns.ip("addr add 10.9.0.5/24 dev eth0");
        ns.ip("addr add fd00:9::5/64 dev eth0 nodad");
        ns.ip("route add 10.50.0.0/16 via 10.9.0.1 dev eth0");
        ns.ip("route add default via 10.9.0.1 dev eth0");
        ns.ip("route add 10.9.0.77 dev eth0");
        ns.ip("-6 route add fd00:50::/48 via fd00:9::1 dev eth0");
        ns.ip("-6 route add default via fd00:9::1 dev eth0");
        // Not through eth0, or not in the main table: not listed.
        ns.ip("addr add 10.8.0.5/24 dev peer0");
        ns.ip("route add 10.60.0.0/16 via 10.9.0.1 dev eth0 table 100");

        let (state, routes) = read_state(&ns.0, "eth0").unwrap();
        let ip_links: Vec<IpLink> = serde_json::from_str(&ns.ip("-j addr show dev eth0")).unwrap();
        let ip_link = &ip_links[0];
        assert_eq!(state.mac, ip_link.address);
        assert_eq!(state.mtu, 1450);
        assert_eq!(state.mtu, ip_link.mtu);
        let ours: Vec<String> = state
            .addresses
            .iter()
            .map(|a| {
                let scope = match a.scope {
                    AddressScope::Universe => "global",
                    AddressScope::Link => "link",
                    AddressScope::Host => "host",
                    _ => "other",
                };
                format!("{}/{} {scope}", a.address, a.prefix)
            })
            .collect();
        let theirs: Vec<String> = ip_link
            .addr_info
            .iter()
            .map(|a| format!("{}/{} {}", a.local, a.prefixlen, a.scope))
            .collect();
        assert_eq!(ours, theirs);
        assert!(ours.contains(&"10.9.0.5/24 global".to_string()), "{ours:?}");
        assert!(
            ours.contains(&"fd00:9::5/64 global".to_string()),
            "{ours:?}"
        );

        let mut ours: Vec<String> = routes
            .iter()
            .map(|r| {
                let mut line = format!("{}/{}", r.dst, r.prefix);
                if let Some(gateway) = r.gateway {
                    line.push_str(&format!(" via {gateway}"));
                }
                if r.protocol == RouteProtocol::Kernel {
                    line.push_str(" proto kernel");
                }
                line
            })
            .collect();
        let mut theirs = Vec::new();
        for (family, any) in [("-4", "0.0.0.0/0"), ("-6", "::/0")] {
            let listed: Vec<IpRoute> = serde_json::from_str(
                &ns.ip(&format!("-j {family} route show table main dev eth0")),
            )
            .unwrap();
            for r in listed {
                let mut line = if r.dst == "default" {
                    any.to_string()
                } else if r.dst.contains('/') {
                    r.dst
                } else {
                    let a: IpAddr = r.dst.parse().unwrap();
                    format!("{a}/{}", max_prefix(&a))
                };
                if let Some(gateway) = r.gateway {
                    line.push_str(&format!(" via {gateway}"));
                }
                if r.protocol.as_deref() == Some("kernel") {
                    line.push_str(" proto kernel");
                }
                theirs.push(line);
            }
        }
        ours.sort();
        theirs.sort();
        assert_eq!(ours, theirs);
        for expected in [
            "0.0.0.0/0 via 10.9.0.1",
            "10.50.0.0/16 via 10.9.0.1",
            "10.9.0.0/24 proto kernel",
            "10.9.0.77/32",
            "::/0 via fd00:9::1",
            "fd00:50::/48 via fd00:9::1",
            "fd00:9::/64 proto kernel",
        ] {
            assert!(ours.contains(&expected.to_string()), "{expected}: {ours:?}");
        }

        // And what the guest gets from it: a bridge-like interface.
        let iface = read_interface(&ns.0, "eth0").unwrap();
        let addresses: Vec<String> = iface
            .addresses
            .iter()
            .map(|a| format!("{}/{}", a.address, a.prefix))
            .collect();
        assert_eq!(addresses, ["10.9.0.5/24", "fd00:9::5/64"]);
        let err = read_interface(&ns.0, "eth9").unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("reading eth9 in {}: ", ns.0)),
            "{err}"
        );
    }
}
