//! The guest's network description (`network.json` in the pod share, `layout::NETWORK_FILE`):
//! what the kvm stage1 learned from CNI, in the form guest-init configures the NICs from
//! (docs/networking.md). `--net=none` pods have no file. Addresses and routes are IPv4 or IPv6
//! (dual-stack CNI results give an interface one of each).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Every interface the guest must configure, in NIC order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestNetwork {
    pub interfaces: Vec<GuestInterface>,
}

/// One guest NIC, found in the guest by its MAC address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestInterface {
    /// `aa:bb:cc:dd:ee:ff`, the CNI interface's: the VMM gives it to the NIC.
    pub mac: String,
    pub mtu: u32,
    pub addresses: Vec<GuestAddress>,
    /// In the order they must be added (on-link routes first).
    pub routes: Vec<GuestRoute>,
    /// The MAC the NIC has when a warm-start guest is restored (`warm::placeholder_mac`):
    /// guest-init finds the NIC by `mac` or else by this one, then gives it `mac`.
    #[serde(rename = "bootMac", default, skip_serializing_if = "Option::is_none")]
    pub boot_mac: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestAddress {
    pub address: IpAddr,
    pub prefix: u8,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestRoute {
    pub dst: IpAddr,
    pub prefix: u8,
    /// None: on-link through the interface.
    pub gateway: Option<IpAddr>,
}

/// The longest prefix an address of this family has (32 or 128).
pub fn max_prefix(address: &IpAddr) -> u8 {
    match address {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

impl GuestNetwork {
    /// Why this description cannot be applied as it stands, if it cannot: a prefix longer than
    /// its family allows, or a route whose gateway is of the other family.
    pub fn problem(&self) -> Option<String> {
        for iface in &self.interfaces {
            for address in &iface.addresses {
                if address.prefix > max_prefix(&address.address) {
                    return Some(format!(
                        "{}: address {}/{}: the prefix is too long for the address family",
                        iface.mac, address.address, address.prefix
                    ));
                }
            }
            for route in &iface.routes {
                if route.prefix > max_prefix(&route.dst) {
                    return Some(format!(
                        "{}: route {}/{}: the prefix is too long for the address family",
                        iface.mac, route.dst, route.prefix
                    ));
                }
                if let Some(gateway) = route.gateway {
                    if gateway.is_ipv4() != route.dst.is_ipv4() {
                        return Some(format!(
                            "{}: route {}/{} via {gateway}: the gateway is of the other address family",
                            iface.mac, route.dst, route.prefix
                        ));
                    }
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(addresses: &str, routes: &str) -> GuestNetwork {
        serde_json::from_str(&format!(
            r#"{{"interfaces":[{{"mac":"0a:00:00:00:00:01","mtu":1500,
                "addresses":{addresses},"routes":{routes}}}]}}"#
        ))
        .unwrap()
    }

    #[test]
    fn both_families_parse_and_mixed_ones_are_refused() {
        let dual = one(
            r#"[{"address":"172.16.28.2","prefix":32},{"address":"fd00:1::2","prefix":128}]"#,
            r#"[{"dst":"0.0.0.0","prefix":0,"gateway":"172.16.28.1"},
                {"dst":"::","prefix":0,"gateway":"fd00:1::1"}]"#,
        );
        assert_eq!(dual.problem(), None);
        assert!(dual.interfaces[0].addresses[1].address.is_ipv6());
        // IPv4 is written as before, so a file from an older stage1 reads the same.
        let text = serde_json::to_string(&dual).unwrap();
        assert!(text.contains(r#""address":"172.16.28.2""#), "{text}");

        let long = one(r#"[{"address":"10.0.0.1","prefix":33}]"#, "[]");
        assert!(long.problem().unwrap().contains("too long"));
        let long6 = one(r#"[{"address":"fd00::1","prefix":129}]"#, "[]");
        assert!(long6.problem().unwrap().contains("too long"));
        let mixed = one("[]", r#"[{"dst":"::","prefix":0,"gateway":"10.0.0.1"}]"#);
        assert!(mixed.problem().unwrap().contains("other address family"));
        let route = one("[]", r#"[{"dst":"10.0.0.0","prefix":40,"gateway":null}]"#);
        assert!(route.problem().unwrap().contains("too long"));
    }
}
