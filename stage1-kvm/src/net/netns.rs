//! The pod's network namespace and the wiring inside it, through iproute2's `ip` and `tc`
//! (docs/networking.md says why the binaries and not a netlink crate): a named namespace
//! (`/run/netns/rkt-UUID`, so that gc finds it after a crash), a tap per CNI interface for the
//! VMM, joined to that interface by tc ingress qdiscs with mirred redirects both ways, and the
//! state the CNI plugin left on the interface (MAC, MTU, addresses, routes) for the guest.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde::Deserialize;

use super::guest::{max_prefix, GuestAddress, GuestInterface, GuestRoute};

/// Named namespaces live here (`ip netns` and the CNI conventions).
pub const NETNS_DIR: &str = "/run/netns";

/// A failed `ip`/`tc` call: the command and its message.
#[derive(Debug, thiserror::Error)]
#[error("{command}: {message}")]
pub struct WiringError {
    pub command: String,
    pub message: String,
}

/// The namespace's name for pod `uuid`.
pub fn netns_name(uuid: &str) -> String {
    format!("rkt-{uuid}")
}

pub fn netns_path(name: &str) -> PathBuf {
    PathBuf::from(NETNS_DIR).join(name)
}

/// Runs `program args`; its stdout on success.
fn run(program: &str, args: &[&str]) -> Result<String, WiringError> {
    run_with_input(program, args, None)
}

/// Runs `program args` with `input`, if any, on its stdin (else an empty one); its stdout on
/// success. Errors name the command, with the input's lines.
fn run_with_input(
    program: &str,
    args: &[&str],
    input: Option<&str>,
) -> Result<String, WiringError> {
    let mut command = format!("{program} {}", args.join(" "));
    if let Some(input) = input {
        command.push_str(&format!(" ({})", input.trim_end().replace('\n', "; ")));
    }
    let failed = |message: String| WiringError {
        command: command.clone(),
        message,
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed(format!("cannot run {program} ({e}); install iproute2")))?;
    // Written whole before the wait: the few hundred bytes of a batch fit in any pipe.
    let written = match (child.stdin.take(), input) {
        (Some(mut stdin), Some(input)) => stdin.write_all(input.as_bytes()),
        _ => Ok(()),
    };
    let output = child
        .wait_with_output()
        .map_err(|e| failed(format!("waiting for {program}: {e}")))?;
    if !output.status.success() {
        return Err(failed(
            String::from_utf8_lossy(&output.stderr).trim().to_string(),
        ));
    }
    written.map_err(|e| failed(format!("writing its commands: {e}")))?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `ip -n NS ...`.
fn ip_in(ns: &str, args: &[&str]) -> Result<String, WiringError> {
    let mut all = vec!["-n", ns];
    all.extend_from_slice(args);
    run("ip", &all)
}

/// `PROGRAM -n NS -batch -` with `lines` on its stdin: several `ip` or `tc` commands in one
/// process, which stops at the first that fails. One process instead of one per command,
/// because starting `ip` or `tc` is most of what each command costs (60 ms each in the
/// emulated test host, where the pod's wiring took six of them).
fn batch_in(program: &str, ns: &str, lines: &[String]) -> Result<(), WiringError> {
    let mut input = lines.join("\n");
    input.push('\n');
    run_with_input(program, &["-n", ns, "-batch", "-"], Some(&input)).map(drop)
}

/// Creates the named namespace (its loopback is brought up with the first tap, in the same
/// `ip` process: [`join_tap`]).
pub fn create(name: &str) -> Result<(), WiringError> {
    run("ip", &["netns", "add", name]).map(drop)
}

/// Whether the named namespace exists.
pub fn exists(name: &str) -> bool {
    netns_path(name).exists()
}

/// Deletes the named namespace: its devices (the taps, the CNI interfaces' pod ends) go with
/// it once nothing holds it (the VMM has ended by then).
pub fn delete(name: &str) -> Result<(), WiringError> {
    if !exists(name) {
        return Ok(());
    }
    run("ip", &["netns", "del", name]).map(drop)
}

/// Creates `tap` in the namespace, with the CNI interface's MTU, and joins the two: whatever
/// arrives on one leaves by the other, untouched (tc ingress + mirred egress redirect, a
/// match-all u32 filter). The CNI interface's own IP stack never sees a frame, so any plugin's
/// interface works, whatever it is (veth, macvlan, ...).
pub fn join_tap(ns: &str, cni_if: &str, tap: &str, mtu: u32) -> Result<(), WiringError> {
    batch_in(
        "ip",
        ns,
        &[
            "link set lo up".to_string(),
            format!("tuntap add dev {tap} mode tap"),
            format!("link set dev {tap} mtu {mtu} up"),
        ],
    )?;
    let mut redirects = Vec::new();
    for (from, to) in [(cni_if, tap), (tap, cni_if)] {
        redirects.push(format!("qdisc add dev {from} ingress"));
        redirects.push(format!(
            "filter add dev {from} parent ffff: protocol all u32 match u32 0 0 \
             action mirred egress redirect dev {to}"
        ));
    }
    batch_in("tc", ns, &redirects)
}

/// One interface as `ip -j addr show` lists it: the link's MAC and MTU and its addresses.
#[derive(Deserialize)]
struct IpAddrs {
    #[serde(default)]
    address: String,
    #[serde(default)]
    mtu: u32,
    #[serde(default)]
    addr_info: Vec<IpAddrInfo>,
}

#[derive(Deserialize)]
struct IpAddrInfo {
    #[serde(default)]
    family: String,
    #[serde(default)]
    local: String,
    #[serde(default)]
    prefixlen: u8,
    #[serde(default)]
    scope: String,
}

#[derive(Deserialize)]
struct IpRoute {
    /// Which `ip -4`/`ip -6` listing it came from: `ip` prints both default routes as
    /// `default`.
    #[serde(skip)]
    ipv6: bool,
    dst: String,
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default)]
    protocol: Option<String>,
}

fn parse<T: for<'de> Deserialize<'de>>(command: &str, text: &str) -> Result<T, WiringError> {
    serde_json::from_str(text).map_err(|e| WiringError {
        command: command.to_string(),
        message: format!("unexpected output ({e})"),
    })
}

/// What the CNI plugin configured on `ifname`, as the guest must reproduce it: the MAC (the
/// guest takes it over: frames for it are what the outside sends), the MTU, the IPv4 and IPv6
/// addresses and the routes through it.
pub fn read_interface(ns: &str, ifname: &str) -> Result<GuestInterface, WiringError> {
    // The link (MAC, MTU) and both families' addresses at once: `ip addr` lists them together.
    let mut links: Vec<IpAddrs> = parse(
        "ip addr show",
        &ip_in(ns, &["-j", "addr", "show", "dev", ifname])?,
    )?;
    if links.len() != 1 {
        return Err(WiringError {
            command: format!("ip -n {ns} addr show dev {ifname}"),
            message: "no such interface".into(),
        });
    }
    let link = links.remove(0);
    let mut routes: Vec<IpRoute> = Vec::new();
    for (family, ipv6) in [("-4", false), ("-6", true)] {
        let more: Vec<IpRoute> = parse(
            "ip route show",
            &ip_in(
                ns,
                &[
                    "-j", family, "route", "show", "table", "main", "dev", ifname,
                ],
            )?,
        )?;
        routes.extend(more.into_iter().map(|route| IpRoute { ipv6, ..route }));
    }
    Ok(guest_view(link, routes))
}

/// The guest's configuration from what `ip` showed. An address keeps its prefix only when the
/// namespace kept the kernel's on-link route for it (bridge-style plugins); ptp-style plugins
/// delete it and route the subnet through the gateway, which the guest gets as a host address
/// (/32, /128) plus the same routes. Link-scope routes come first so that gateways are
/// reachable when the routes through them are added. IPv6 link-local addresses (fe80::/64)
/// and the kernel's routes are left out: the guest's kernel makes its own from the same MAC.
fn guest_view(link: IpAddrs, routes: Vec<IpRoute>) -> GuestInterface {
    let kernel_routes: Vec<(IpAddr, u8)> = routes
        .iter()
        .filter(|r| r.protocol.as_deref() == Some("kernel") && r.gateway.is_none())
        .filter_map(|r| parse_destination(&r.dst, r.ipv6))
        .collect();
    let addresses = link
        .addr_info
        .iter()
        .filter(|info| matches!(info.family.as_str(), "inet" | "inet6") && info.scope != "link")
        .filter_map(|info| {
            let address: IpAddr = info.local.parse().ok()?;
            let longest = max_prefix(&address);
            let prefix = info.prefixlen.min(longest);
            let on_link = kernel_routes.contains(&(network_of(address, prefix), prefix));
            Some(GuestAddress {
                address,
                prefix: if on_link { prefix } else { longest },
            })
        })
        .collect();
    let mut guest_routes: Vec<GuestRoute> = routes
        .iter()
        .filter(|r| r.protocol.as_deref() != Some("kernel"))
        .filter_map(|r| {
            let (dst, prefix) = parse_destination(&r.dst, r.ipv6)?;
            let gateway = match &r.gateway {
                Some(g) => Some(
                    g.parse::<IpAddr>()
                        .ok()
                        .filter(|g| g.is_ipv4() == dst.is_ipv4())?,
                ),
                None => None,
            };
            Some(GuestRoute {
                dst,
                prefix,
                gateway,
            })
        })
        .collect();
    guest_routes.sort_by_key(|r| r.gateway.is_some());
    GuestInterface {
        mac: link.address,
        mtu: link.mtu,
        addresses,
        routes: guest_routes,
        boot_mac: None,
    }
}

/// A route's `dst` as `ip -j` prints it: `default` (the family is the listing's), `ADDR/LEN`,
/// or a bare `ADDR` for a host route. None for anything else, or one of the other family.
fn parse_destination(dst: &str, ipv6: bool) -> Option<(IpAddr, u8)> {
    let (address, prefix) = if dst == "default" {
        let any = if ipv6 {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        };
        (any, 0)
    } else {
        match dst.split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().ok()?, p.parse::<u8>().ok()?),
            None => {
                let address = dst.parse::<IpAddr>().ok()?;
                (address, max_prefix(&address))
            }
        }
    };
    (prefix <= max_prefix(&address) && address.is_ipv6() == ipv6).then_some((address, prefix))
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
pub fn open(name: &str) -> std::io::Result<OwnedFd> {
    Ok(std::fs::File::open(netns_path(name))?.into())
}

/// Moves the calling thread into the namespace `fd`; threads it starts afterwards are there too.
pub fn enter(fd: &impl AsFd) -> nix::Result<()> {
    nix::sched::setns(fd.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_get_their_input_and_say_what_failed() {
        assert_eq!(
            run_with_input("cat", &[], Some("a\nb\n")).unwrap(),
            "a\nb\n"
        );
        assert_eq!(run("cat", &[]).unwrap(), "", "an empty stdin without input");
        let err = run_with_input(
            "sh",
            &["-c", "cat >/dev/null; echo oops >&2; exit 3"],
            Some("x\ny\n"),
        )
        .unwrap_err();
        assert_eq!(err.message, "oops");
        assert!(err.command.ends_with("(x; y)"), "{}", err.command);
        let missing = run("no-such-program-here", &[]).unwrap_err();
        assert!(missing.message.contains("install iproute2"), "{missing}");
    }

    /// `DST/PREFIX Some(GATEWAY)` per route, in order.
    fn route_lines(iface: &GuestInterface) -> Vec<String> {
        iface
            .routes
            .iter()
            .map(|r| format!("{}/{} {:?}", r.dst, r.prefix, r.gateway))
            .collect()
    }

    /// `addrs`: what `ip -j addr show dev IF` prints (one interface: MAC, MTU, addresses).
    fn view(addrs: &str, routes: &str) -> GuestInterface {
        let link: Vec<IpAddrs> = serde_json::from_str(addrs).unwrap();
        guest_view(
            link.into_iter().next().unwrap(),
            serde_json::from_str(routes).unwrap(),
        )
    }

    #[test]
    fn ptp_gives_a_host_address_and_the_plugins_routes() {
        // What `ip -j` shows after the ptp plugin (1.1.1) in the pod's namespace.
        let iface = view(
            r#"[{"ifindex":3,"ifname":"eth0","mtu":1500,"address":"a2:47:3b:6e:4f:01",
                 "addr_info":[{"family":"inet","local":"172.16.28.7","prefixlen":24}]}]"#,
            r#"[{"dst":"default","gateway":"172.16.28.1","flags":[]},
                {"dst":"172.16.28.0/24","gateway":"172.16.28.1","prefsrc":"172.16.28.7"},
                {"dst":"172.16.28.1","scope":"link","prefsrc":"172.16.28.7"}]"#,
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
        // ptp with host-local ranges of both families: ip -j addr lists both at once, the
        // routes come from `ip -4` and `ip -6` separately, and both print `default`.
        let link: Vec<IpAddrs> = serde_json::from_str(
            r#"[{"mtu":1500,"address":"a2:47:3b:6e:4f:01","addr_info":[
                {"family":"inet","local":"172.29.0.2","prefixlen":24,"scope":"global"},
                {"family":"inet6","local":"fd52:6b74::2","prefixlen":64,"scope":"global"},
                {"family":"inet6","local":"fe80::a047:3bff:fe6e:4f01","prefixlen":64,"scope":"link"}]}]"#,
        )
        .unwrap();
        let v4: Vec<IpRoute> = serde_json::from_str(
            r#"[{"dst":"default","gateway":"172.29.0.1"},
                {"dst":"172.29.0.0/24","gateway":"172.29.0.1"},
                {"dst":"172.29.0.1","scope":"link"}]"#,
        )
        .unwrap();
        let v6: Vec<IpRoute> = serde_json::from_str(
            r#"[{"dst":"fd52:6b74::1","metric":1024},
                {"dst":"fd52:6b74::/64","gateway":"fd52:6b74::1","metric":1024},
                {"dst":"fe80::/64","protocol":"kernel","metric":256},
                {"dst":"default","gateway":"fd52:6b74::1","metric":1024}]"#,
        )
        .unwrap();
        let routes = v4
            .into_iter()
            .chain(v6.into_iter().map(|r| IpRoute { ipv6: true, ..r }))
            .collect();
        let iface = guest_view(link.into_iter().next().unwrap(), routes);
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
            serde_json::from_str(
                r#"{"mtu":1500,"addr_info":[{"family":"inet6","local":"fd00:10::5","prefixlen":64}]}"#,
            )
            .unwrap(),
            vec![IpRoute {
                ipv6: true,
                dst: "fd00:10::/64".into(),
                gateway: None,
                protocol: Some("kernel".into()),
            }],
        );
        assert_eq!(kept.addresses[0].prefix, 64);
        assert!(kept.routes.is_empty());
        // A listing's entries of the other family, or nonsense, are not routes.
        assert_eq!(parse_destination("10.0.0.0/8", true), None);
        assert_eq!(parse_destination("fd00::/200", true), None);
        assert_eq!(
            network_of("fd52:6b74::2".parse().unwrap(), 64).to_string(),
            "fd52:6b74::"
        );
    }

    #[test]
    fn bridge_keeps_the_subnet_on_link() {
        let iface = view(
            r#"[{"mtu":1400,"address":"0a:58:0a:16:00:05",
                 "addr_info":[{"family":"inet","local":"10.22.0.5","prefixlen":16}]}]"#,
            r#"[{"dst":"default","gateway":"10.22.0.1"},
                {"dst":"10.22.0.0/16","protocol":"kernel","scope":"link","prefsrc":"10.22.0.5"}]"#,
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
}
