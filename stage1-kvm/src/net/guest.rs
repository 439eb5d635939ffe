//! What the pod's network looks like to others: the file guest-init configures the guest's
//! interfaces from (`stage1/rootfs/rkt/network.json`, read in the guest as
//! `/rkt/share/stage1/rootfs/rkt/network.json`; format in docs/networking.md), and rkt's
//! `net-info.json` in the pod directory, which `rkt list` and `rkt status` read.

use std::net::Ipv4Addr;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::Stage1Error;
use crate::pod::write_whole;

/// The guest's network file, relative to the stage1 rootfs.
pub const GUEST_NETWORK_FILE: &str = "rkt/network.json";
/// rkt's file of network results, relative to the pod directory.
pub const NET_INFO_FILE: &str = "net-info.json";

pub use pod_control::network::{
    max_prefix, GuestAddress, GuestInterface, GuestNetwork, GuestRoute,
};

/// One entry of `net-info.json`, field names as rkt's `netinfo.NetInfo`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetInfo {
    #[serde(rename = "netName")]
    pub net_name: String,
    #[serde(rename = "netConf")]
    pub net_conf: String,
    #[serde(rename = "pluginPath")]
    pub plugin_path: String,
    #[serde(rename = "ifName")]
    pub if_name: String,
    pub ip: String,
    pub args: String,
    pub mask: String,
    /// The pod's IPv6 address on this network, if it has one (our addition: rkt's `ip` holds
    /// one address, the IPv4 one).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ip6: String,
}

/// Writes the guest's file under `stage1_rootfs`.
pub fn write_guest_network(
    stage1_rootfs: &Path,
    network: &GuestNetwork,
) -> Result<(), Stage1Error> {
    let path = stage1_rootfs.join(GUEST_NETWORK_FILE);
    let bytes = serde_json::to_vec_pretty(network).map_err(|e| Stage1Error::BadFile {
        path: path.clone(),
        problem: e.to_string(),
    })?;
    write_whole(&path, &bytes)
}

/// Writes `net-info.json` in the pod directory.
pub fn write_net_info(pod_dir: &Path, infos: &[NetInfo]) -> Result<(), Stage1Error> {
    let path = pod_dir.join(NET_INFO_FILE);
    let bytes = serde_json::to_vec(infos).map_err(|e| Stage1Error::BadFile {
        path: path.clone(),
        problem: e.to_string(),
    })?;
    write_whole(&path, &bytes)
}

/// A prefix length as a dotted mask (rkt's `mask` field).
pub fn mask_of(prefix: u8) -> Ipv4Addr {
    if prefix == 0 {
        Ipv4Addr::UNSPECIFIED
    } else {
        Ipv4Addr::from(u32::MAX << (32 - u32::from(prefix.min(32))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_have_the_documented_shape() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("rkt")).unwrap();
        let network = GuestNetwork {
            interfaces: vec![GuestInterface {
                boot_mac: None,
                mac: "0a:00:00:00:00:01".into(),
                mtu: 1500,
                addresses: vec![GuestAddress {
                    address: Ipv4Addr::new(172, 16, 28, 2).into(),
                    prefix: 32,
                }],
                routes: vec![GuestRoute {
                    dst: Ipv4Addr::UNSPECIFIED.into(),
                    prefix: 0,
                    gateway: Some(Ipv4Addr::new(172, 16, 28, 1).into()),
                }],
            }],
        };
        write_guest_network(dir.path(), &network).unwrap();
        let text = std::fs::read_to_string(dir.path().join(GUEST_NETWORK_FILE)).unwrap();
        let back: GuestNetwork = serde_json::from_str(&text).unwrap();
        assert_eq!(back, network);
        assert!(text.contains("\"gateway\": \"172.16.28.1\""), "{text}");

        write_net_info(
            dir.path(),
            &[NetInfo {
                net_name: "default".into(),
                net_conf: String::new(),
                plugin_path: "/usr/lib/cni/ptp".into(),
                if_name: "eth0".into(),
                ip: "172.16.28.2".into(),
                args: String::new(),
                mask: mask_of(24).to_string(),
                ip6: String::new(),
            }],
        )
        .unwrap();
        let info = std::fs::read_to_string(dir.path().join(NET_INFO_FILE)).unwrap();
        assert!(info.contains(r#""netName":"default""#), "{info}");
        assert!(info.contains(r#""mask":"255.255.255.0""#), "{info}");
        assert_eq!(mask_of(0).to_string(), "0.0.0.0");
        assert_eq!(mask_of(32).to_string(), "255.255.255.255");
    }
}
