//! Pod networking (docs/networking.md): the pod gets its own network namespace, the real CNI
//! plugins attach it to each network `--net` names, and inside the namespace every CNI
//! interface is joined to a tap for the VMM by tc mirred redirects, so the guest's NIC is
//! effectively that interface: same MAC, MTU, addresses and routes (guest-init sets them from
//! `rkt/network.json`).
//!
//! - `conf`: `--net` and the networks' CNI configurations;
//! - `cni`: calling a plugin (ADD, CHECK, DEL) and its result;
//! - `ports`: `--port` as portmap's port mappings;
//! - `netns`: the namespace, the taps and redirects, the interfaces' state (in-process);
//! - `rtnl`: the rtnetlink requests and listings `netns` makes;
//! - `guest`: the guest's network file and rkt's `net-info.json`.
//!
//! Everything set up is first recorded in `stage1-kvm/net-state.json` in the pod directory, so
//! that a failed set-up, the end of `run` and, after a crash or `kill -9`, `gc` all release it
//! the same way: portmap and main plugin DEL (IPAM leases, iptables rules, the host-side
//! interfaces), then the namespace (taps and pod-side interfaces go with it).

pub mod cni;
pub mod conf;
pub mod guest;
pub mod netns;
pub mod ports;
mod rtnl;

use std::fs;
use std::io::{ErrorKind, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use appc::PodManifest;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use vmm::config::{MacAddr, NetConfig};

use crate::args::{ConfMode, DnsConfMode};
use crate::error::Stage1Error;
use crate::pod::{write_whole, PodPaths};
use cni::{CniCommand, Invocation};
use conf::NetConf;
use guest::{GuestNetwork, NetInfo};

/// The record of what was set up, relative to the pod directory.
pub const STATE_FILE: &str = "stage1-kvm/net-state.json";
/// The plugin that forwards `--port`s.
const PORTMAP_PLUGIN: &str = "portmap";

/// One network attachment, as recorded before its plugin runs.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Attachment {
    name: String,
    ifname: String,
    args: String,
    /// The configuration the main plugin got (DEL must get the same).
    conf: Value,
    /// Its ADD result, once there is one (DEL and CHECK get it as `prevResult`).
    #[serde(default)]
    result: Option<Value>,
    /// portmap's configuration when this network forwards the pod's ports.
    #[serde(default)]
    portmap: Option<Value>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct State {
    container_id: String,
    netns: String,
    attachments: Vec<Attachment>,
}

/// The pod's networks while it runs; released on drop (or by `gc` if we never get there).
pub struct PodNetwork {
    state_path: PathBuf,
    state: State,
    /// The NICs the VMM gives the guest, in order (tap names inside the pod's namespace).
    pub nics: Vec<NetConfig>,
    debug: bool,
}

/// What `run` needs to know to set the pod's networks up.
pub struct NetRequest<'a> {
    pub uuid: &'a str,
    pub net: &'a str,
    pub local_config: Option<&'a Path>,
    pub dns_conf_mode: DnsConfMode,
    pub debug: bool,
}

impl PodNetwork {
    /// Sets up the networks `--net` names; `None` for `--net=none` (loopback only, nothing on
    /// the host). On error, whatever was set up is released before returning.
    pub fn setup(
        request: &NetRequest,
        pod: &PodPaths,
        manifest: &PodManifest,
    ) -> Result<Option<PodNetwork>, Stage1Error> {
        // Everything that can be checked is checked before anything is created.
        let requests = conf::requests(request.net)?;
        if requests.is_empty() {
            if !manifest.ports.is_empty() {
                return Err(Stage1Error::Usage(
                    "--port needs a pod network: drop --net=none or the --port flags".into(),
                ));
            }
            return Ok(None);
        }
        let confs = requests
            .iter()
            .map(|r| {
                conf::load(
                    &r.name,
                    request.local_config,
                    Path::new(conf::SYSTEM_NET_DIR),
                )
            })
            .collect::<Result<Vec<NetConf>, _>>()?;
        let mappings = ports::port_mappings(pod, manifest)?;
        let mut plugins: Vec<&str> = confs.iter().map(NetConf::plugin).collect();
        if !mappings.is_empty() {
            plugins.push(PORTMAP_PLUGIN);
        }
        for plugin in plugins {
            if cni::find_plugin(plugin, cni::PLUGIN_DIRS).is_none() {
                return Err(Stage1Error::Unsupported(format!(
                    "the CNI plugin {plugin} is not installed in {}: install Debian's \
                     containernetworking-plugins (or put the plugin there)",
                    cni::PLUGIN_DIRS.join(" or ")
                )));
            }
        }

        let name = netns::netns_name(request.uuid);
        let mut network = PodNetwork {
            state_path: pod.dir.join(STATE_FILE),
            state: State {
                container_id: request.uuid.to_string(),
                netns: name.clone(),
                attachments: Vec::new(),
            },
            nics: Vec::new(),
            debug: request.debug,
        };
        // Recorded before the namespace exists: gc may have to remove it.
        network.save()?;
        if let Err(err) = netns::create(&name) {
            let _ = fs::remove_file(&network.state_path);
            return Err(Stage1Error::Network(format!(
                "cannot create the pod's network namespace: {err}"
            )));
        }
        // From here on, dropping `network` releases everything.
        let mut guest_network = GuestNetwork::default();
        let mut infos = Vec::new();
        let mut dns = None;
        // Ports are forwarded on the first network, as rkt does.
        for (index, (req, conf)) in requests.iter().zip(&confs).enumerate() {
            let ifname = format!("eth{index}");
            let forward = (index == 0 && !mappings.is_empty()).then_some(&mappings);
            let result = network.attach(req, conf, &ifname, forward)?;
            let parsed = cni::parse_result(&result)
                .map_err(|e| Stage1Error::Network(format!("network {}: {e}", conf.name)))?;
            if dns.is_none() && !parsed.dns.nameservers.is_empty() {
                dns = Some(parsed.dns.clone());
            }
            let iface = netns::read_interface(&name, &ifname)
                .map_err(|e| Stage1Error::Network(format!("network {}: {e}", conf.name)))?;
            let mac: MacAddr = iface.mac.parse().map_err(|_| {
                Stage1Error::Network(format!(
                    "network {}: the plugin's interface has no usable MAC address ({:?})",
                    conf.name, iface.mac
                ))
            })?;
            let tap = format!("tap{index}");
            netns::join_tap(&name, &ifname, &tap, iface.mtu)
                .map_err(|e| Stage1Error::Network(format!("network {}: {e}", conf.name)))?;
            // With --debug, the plugin checks that our tc wiring left its interface as it made
            // it: a check of our wiring, not of the pod, so not a plugin run on every start.
            // Only a warning: the plugins' CHECK has false alarms (bridge 1.1.1 looks for a
            // result route without a gateway exactly as written, though it installed it
            // through the gateway), and a pod should not be refused for a plugin's bug.
            if request.debug {
                if let Err(err) = network.check(index) {
                    eprintln!("stage1-kvm: warning: {err}");
                }
            }
            let (ip, prefix) = parsed
                .pod_ipv4()
                .map(|(a, p)| (a.to_string(), p))
                .unwrap_or_default();
            infos.push(NetInfo {
                net_name: conf.name.clone(),
                net_conf: conf
                    .path
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                plugin_path: cni::find_plugin(conf.plugin(), cni::PLUGIN_DIRS)
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                if_name: ifname.clone(),
                ip,
                args: req.args.clone(),
                mask: guest::mask_of(prefix).to_string(),
                ip6: parsed.pod_ipv6().map(|a| a.to_string()).unwrap_or_default(),
            });
            if request.debug {
                eprintln!(
                    "stage1-kvm: network {} on {ifname}/{tap}: {:?}",
                    conf.name, iface
                );
            }
            let mut iface = iface;
            iface.boot_mac =
                Some(crate::warm::placeholder_mac(guest_network.interfaces.len()).to_string());
            guest_network.interfaces.push(iface);
            network.nics.push(NetConfig { tap_name: tap, mac });
        }
        guest::write_guest_network(&pod.stage1_rootfs(), &guest_network)?;
        guest::write_net_info(&pod.dir, &infos)?;
        if let Some(dns) = dns {
            write_cni_resolv_conf(request.dns_conf_mode, &pod.stage1_rootfs(), &dns)?;
        }
        Ok(Some(network))
    }

    /// ADD of one network (and portmap on it), recorded before each plugin runs.
    fn attach(
        &mut self,
        req: &conf::NetRequest,
        conf: &NetConf,
        ifname: &str,
        mappings: Option<&Vec<ports::PortMapping>>,
    ) -> Result<Value, Stage1Error> {
        self.state.attachments.push(Attachment {
            name: conf.name.clone(),
            ifname: ifname.to_string(),
            args: req.args.clone(),
            conf: conf.json.clone(),
            result: None,
            portmap: None,
        });
        self.save()?;
        let index = self.state.attachments.len() - 1;
        let result = self.exec(index, conf.plugin(), CniCommand::Add, &conf.json)?;
        self.state.attachments[index].result = Some(result.clone());
        if let Some(mappings) = mappings {
            let portmap = json!({
                "cniVersion": conf.cni_version(),
                "name": conf.name,
                "type": PORTMAP_PLUGIN,
                "snat": true,
                "capabilities": {"portMappings": true},
                "runtimeConfig": {"portMappings": mappings},
            });
            self.state.attachments[index].portmap = Some(portmap.clone());
            self.save()?;
            self.exec(
                index,
                PORTMAP_PLUGIN,
                CniCommand::Add,
                &with_prev_result(&portmap, Some(&result)),
            )?;
        }
        self.save()?;
        Ok(result)
    }

    /// CHECK of attachment `index` (plugins of CNI 0.4.0 and later).
    fn check(&self, index: usize) -> Result<(), Stage1Error> {
        let attachment = &self.state.attachments[index];
        let version = attachment.conf["cniVersion"].as_str().unwrap_or("");
        if !cni::has_check(version) {
            return Ok(());
        }
        let plugin = attachment.conf["type"].as_str().unwrap_or("");
        let conf = with_prev_result(&attachment.conf, attachment.result.as_ref());
        self.exec(index, plugin, CniCommand::Check, &conf).map(drop)
    }

    fn exec(
        &self,
        index: usize,
        plugin: &str,
        command: CniCommand,
        conf: &Value,
    ) -> Result<Value, Stage1Error> {
        let attachment = &self.state.attachments[index];
        let netns = netns::netns_path(&self.state.netns);
        cni::exec(
            plugin,
            command,
            conf,
            &Invocation {
                container_id: &self.state.container_id,
                netns: &netns,
                ifname: &attachment.ifname,
                args: &attachment.args,
            },
        )
        .map_err(|e| Stage1Error::Network(format!("network {}: {e}", attachment.name)))
    }

    fn save(&self) -> Result<(), Stage1Error> {
        save_state(&self.state_path, &self.state)
    }

    /// The pod's network namespace, opened (the jailed VMM process is started in it).
    pub fn namespace(&self) -> Result<OwnedFd, Stage1Error> {
        netns::open(&self.state.netns).map_err(|e| {
            Stage1Error::Network(format!("cannot open the pod's network namespace: {e}"))
        })
    }

    /// Moves the calling thread into the pod's namespace (for the VMM to open its taps there)
    /// until the returned guard is dropped.
    pub fn enter(&self) -> Result<InNamespace, Stage1Error> {
        let fail = |e: String| {
            Stage1Error::Network(format!("cannot enter the pod's network namespace: {e}"))
        };
        let home: OwnedFd = fs::File::open("/proc/thread-self/ns/net")
            .map_err(|e| fail(e.to_string()))?
            .into();
        let pod = netns::open(&self.state.netns).map_err(|e| fail(e.to_string()))?;
        netns::enter(&pod).map_err(|e| fail(e.to_string()))?;
        Ok(InNamespace { home })
    }
}

impl Drop for PodNetwork {
    fn drop(&mut self) {
        if let Err(err) = release(&self.state_path, &self.state, self.debug) {
            eprintln!("stage1-kvm: {err} (rkt gc will try again)");
        }
    }
}

/// The calling thread is in the pod's namespace until this is dropped.
pub struct InNamespace {
    home: OwnedFd,
}

impl Drop for InNamespace {
    fn drop(&mut self) {
        if let Err(err) = netns::enter(&self.home) {
            // Staying in the pod's namespace would run the CNI DELs in the wrong place.
            eprintln!("stage1-kvm: cannot return to the host's network namespace: {err}");
            std::process::exit(crate::EXIT_STAGE1_ERROR);
        }
    }
}

/// `conf` with `prevResult` set (CHECK, DEL, chained plugins).
fn with_prev_result(conf: &Value, result: Option<&Value>) -> Value {
    let mut conf = conf.clone();
    if let (Some(object), Some(result)) = (conf.as_object_mut(), result) {
        object.insert("prevResult".into(), result.clone());
    }
    conf
}

fn save_state(path: &Path, state: &State) -> Result<(), Stage1Error> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(Stage1Error::io(format!("creating {}", dir.display())))?;
    }
    let bytes = serde_json::to_vec_pretty(state).map_err(|e| Stage1Error::BadFile {
        path: path.to_path_buf(),
        problem: e.to_string(),
    })?;
    write_whole(path, &bytes)
}

/// Releases what `state` records: DEL of every attachment, last first (portmap before its
/// network), then the namespace; removes the state file when all of it went well.
fn release(state_path: &Path, state: &State, debug: bool) -> Result<(), Stage1Error> {
    let netns_path = netns::netns_path(&state.netns);
    let mut problems = Vec::new();
    for attachment in state.attachments.iter().rev() {
        let inv = Invocation {
            container_id: &state.container_id,
            netns: &netns_path,
            ifname: &attachment.ifname,
            args: &attachment.args,
        };
        let mut steps: Vec<(&str, Value)> = Vec::new();
        if let Some(portmap) = &attachment.portmap {
            steps.push((
                PORTMAP_PLUGIN,
                with_prev_result(portmap, attachment.result.as_ref()),
            ));
        }
        let main = attachment.conf["type"].as_str().unwrap_or("");
        steps.push((
            main,
            with_prev_result(&attachment.conf, attachment.result.as_ref()),
        ));
        for (plugin, conf) in steps {
            match cni::exec(plugin, CniCommand::Del, &conf, &inv) {
                Ok(_) if debug => {
                    eprintln!("stage1-kvm: network {}: {plugin} DEL done", attachment.name)
                }
                Ok(_) => {}
                Err(err) => problems.push(format!("network {}: {err}", attachment.name)),
            }
        }
    }
    if let Err(err) = netns::delete(&state.netns) {
        problems.push(err.to_string());
    }
    if problems.is_empty() {
        match fs::remove_file(state_path) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == ErrorKind::NotFound => Ok(()),
            Err(err) => Err(Stage1Error::io(format!(
                "removing {}",
                state_path.display()
            ))(err)),
        }
    } else {
        Err(Stage1Error::Network(format!(
            "releasing the pod's networks: {}",
            problems.join("; ")
        )))
    }
}

/// `gc`: releases the networks of a pod whose `run` did not (it was killed), from the pod
/// directory's state file; nothing to do without one.
pub fn gc(pod_dir: &Path, debug: bool) -> Result<(), Stage1Error> {
    let path = pod_dir.join(STATE_FILE);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(Stage1Error::io(format!("reading {}", path.display()))(err)),
    };
    let state: State = serde_json::from_slice(&bytes).map_err(|e| Stage1Error::BadFile {
        path: path.clone(),
        problem: format!("not a network state file ({e})"),
    })?;
    // Only what this pod could have made: its own namespace name.
    if state.netns != netns::netns_name(&state.container_id) {
        return Err(Stage1Error::BadFile {
            path,
            problem: format!("names the namespace {:?}, not this pod's", state.netns),
        });
    }
    release(&path, &state, debug)
}

/// When the apps' resolv.conf is ours to choose (no `--dns*` from stage0, not the host's), the
/// CNI result's DNS settings become it, as rkt does.
fn write_cni_resolv_conf(
    mode: DnsConfMode,
    stage1_rootfs: &Path,
    dns: &cni::ResultDns,
) -> Result<(), Stage1Error> {
    if mode.resolv != ConfMode::Default {
        return Ok(());
    }
    let mut text = Vec::new();
    let _ = writeln!(text, "# Generated by rkt from the CNI result");
    // A result is a plugin's output: every value goes on a line of its own kind, so one with
    // whitespace or a line break in it (or a nameserver that is no address) is left out
    // rather than allowed to add lines of its own.
    let word = |value: &str| {
        !value.is_empty() && !value.chars().any(|c| c.is_whitespace() || c.is_control())
    };
    for server in &dns.nameservers {
        if is_nameserver(server) {
            let _ = writeln!(text, "nameserver {server}");
        } else {
            eprintln!("stage1-kvm: warning: CNI result's DNS server {server:?} is not an IP address; left out of resolv.conf");
        }
    }
    if let Some(domain) = dns.domain.as_deref().filter(|d| word(d)) {
        let _ = writeln!(text, "domain {domain}");
    }
    // `search` and `options` lines: the values that are single words, if any.
    for (key, values) in [("search", &dns.search), ("options", &dns.options)] {
        let words: Vec<&str> = values
            .iter()
            .map(String::as_str)
            .filter(|v| word(v))
            .collect();
        if !words.is_empty() {
            let _ = writeln!(text, "{key} {}", words.join(" "));
        }
    }
    let etc = stage1_rootfs.join("etc");
    fs::create_dir_all(&etc).map_err(Stage1Error::io(format!("creating {}", etc.display())))?;
    write_whole(&etc.join("rkt-resolv.conf"), &text)
}

/// An IPv4 or IPv6 address, the IPv6 one possibly with a zone (`fe80::1%eth0`), as resolv.conf
/// takes a nameserver.
fn is_nameserver(text: &str) -> bool {
    let (address, zone) = match text.split_once('%') {
        Some((address, zone)) => (address, Some(zone)),
        None => (text, None),
    };
    match (address.parse::<std::net::IpAddr>(), zone) {
        (Ok(_), None) => true,
        (Ok(std::net::IpAddr::V6(_)), Some(zone)) => {
            !zone.is_empty()
                && zone
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "2e1a7c3b-51f0-4f55-8a3e-0d9b5c7e6f10";

    #[test]
    fn cni_dns_is_used_only_when_nothing_else_decides() {
        let root = tempfile::tempdir().unwrap();
        let dns = cni::ResultDns {
            nameservers: vec!["10.0.0.53".into()],
            domain: Some("pods.example".into()),
            search: vec!["a.example".into()],
            options: vec!["ndots:2".into()],
        };
        let stage0 = DnsConfMode {
            resolv: ConfMode::Stage0,
            hosts: ConfMode::Default,
        };
        write_cni_resolv_conf(stage0, root.path(), &dns).unwrap();
        assert!(!root.path().join("etc/rkt-resolv.conf").exists());
        write_cni_resolv_conf(DnsConfMode::default(), root.path(), &dns).unwrap();
        let text = fs::read_to_string(root.path().join("etc/rkt-resolv.conf")).unwrap();
        assert!(text.contains("nameserver 10.0.0.53\n"), "{text}");
        assert!(text.contains("search a.example\n") && text.contains("options ndots:2\n"));

        // IPv6 servers are written as they come; anything that would add lines is not.
        let dns = cni::ResultDns {
            nameservers: vec![
                "fd00::53".into(),
                "fe80::1%eth0".into(),
                "10.0.0.53\nnameserver 6.6.6.6".into(),
                "nowhere".into(),
            ],
            domain: Some("x\nsearch evil".into()),
            search: vec!["a.example".into(), "b c".into()],
            options: vec![],
        };
        write_cni_resolv_conf(DnsConfMode::default(), root.path(), &dns).unwrap();
        let text = fs::read_to_string(root.path().join("etc/rkt-resolv.conf")).unwrap();
        assert_eq!(
            text,
            "# Generated by rkt from the CNI result\nnameserver fd00::53\nnameserver fe80::1%eth0\nsearch a.example\n"
        );
    }

    #[test]
    fn gc_without_state_does_nothing_and_refuses_foreign_namespaces() {
        let pod = tempfile::tempdir().unwrap();
        gc(pod.path(), false).unwrap();
        fs::create_dir_all(pod.path().join("stage1-kvm")).unwrap();
        fs::write(
            pod.path().join(STATE_FILE),
            format!(r#"{{"container_id":"{UUID}","netns":"../../etc","attachments":[]}}"#),
        )
        .unwrap();
        let err = gc(pod.path(), false).unwrap_err().to_string();
        assert!(err.contains("not this pod's"), "{err}");
        fs::write(pod.path().join(STATE_FILE), "{").unwrap();
        assert!(gc(pod.path(), false).is_err());
    }

    #[test]
    fn none_needs_nothing_and_refuses_ports() {
        let pod = tempfile::tempdir().unwrap();
        let paths = PodPaths::new(pod.path().to_path_buf());
        let manifest = PodManifest::from_json(
            br#"{"acVersion":"0.8.11","acKind":"PodManifest","apps":[],
                "ports":[{"name":"http","hostPort":8080}]}"#,
        )
        .unwrap();
        let request = NetRequest {
            uuid: UUID,
            net: "none",
            local_config: None,
            dns_conf_mode: DnsConfMode::default(),
            debug: false,
        };
        let err = PodNetwork::setup(&request, &paths, &manifest)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("--port needs a pod network"), "{err}");
        let no_ports =
            PodManifest::from_json(br#"{"acVersion":"0.8.11","acKind":"PodManifest","apps":[]}"#)
                .unwrap();
        assert!(PodNetwork::setup(&request, &paths, &no_ports)
            .unwrap()
            .is_none());
        assert_eq!(fs::read_dir(pod.path()).unwrap().count(), 0);
    }
}
