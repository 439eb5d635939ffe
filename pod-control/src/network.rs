//! The guest's network description (`network.json` in the pod share, `layout::NETWORK_FILE`):
//! what the kvm stage1 learned from CNI, in the form guest-init configures the NICs from
//! (docs/networking.md). `--net=none` pods have no file.

use std::net::Ipv4Addr;

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
    pub address: Ipv4Addr,
    pub prefix: u8,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestRoute {
    pub dst: Ipv4Addr,
    pub prefix: u8,
    /// None: on-link through the interface.
    pub gateway: Option<Ipv4Addr>,
}
