//! The CNI plugins called directly, as the kvm stage1 calls them, for a container that is no
//! rkt pod (`crun run` in a network namespace the benchmarks make): the peer that rkt's
//! `--net=default` is measured against (tests/bench/images.rs, tests/bench/pod.rs).
//!
//! [`DirectCni::attach`] makes the namespace (`ip netns add`, loopback up), runs ptp ADD with
//! rkt's built-in `default` network ([`DEFAULT_NET`]) and, when asked, portmap ADD chained on
//! its result; every step it got through is recorded in a [`CniAttachment`], which
//! [`DirectCni::undo`] takes back (portmap DEL, ptp DEL, the namespace removed), each step
//! whatever the others did. The plugins run in the caller's network namespace or in a
//! [`TestHost`] that plays the host.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::pod_net::TestHost;
use crate::run_quiet;

/// Where Debian's containernetworking-plugins puts the plugins (as the kvm stage1 looks).
pub const CNI_DIRS: &[&str] = &["/usr/lib/cni", "/opt/cni/bin"];
/// rkt's built-in `default` network as the kvm stage1 hands it to ptp
/// (stage1-kvm/src/net/conf.rs, with the `cniVersion` it fills in).
pub const DEFAULT_NET: &str = r#"{"cniVersion":"0.4.0","name":"default","type":"ptp","ipMasq":true,
  "ipam":{"type":"host-local","subnet":"172.16.28.0/24","routes":[{"dst":"0.0.0.0/0"}]}}"#;

/// What [`DirectCni::attach`] did, for undoing it.
#[derive(Default)]
pub struct CniAttachment {
    netns: bool,
    ptp: Option<serde_json::Value>,
    portmap: Option<serde_json::Value>,
    result: Option<serde_json::Value>,
}

/// One port forwarded by portmap: `host_port` on the host to `container_port` (TCP).
#[derive(Clone, Copy)]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
}

/// A container's network namespace, `/run/netns/NETNS`, attached by calling the plugins.
pub struct DirectCni<'h> {
    netns: String,
    /// Where the plugins run (and so where the host ends of the links and the iptables rules
    /// go): this test host, or the caller's own network namespace when None.
    host: Option<&'h TestHost>,
}

impl<'h> DirectCni<'h> {
    pub fn new(netns: &str, host: Option<&'h TestHost>) -> DirectCni<'h> {
        DirectCni {
            netns: netns.to_string(),
            host,
        }
    }

    /// The namespace's path, for a runtime's config (`linux.namespaces`) to join.
    pub fn netns_path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.netns)
    }

    /// The namespace made, its loopback up, ptp ADD with [`DEFAULT_NET`] for `container`, then
    /// portmap ADD (with `snat: true`, as rkt's `--port`) when `ports` is not empty. What got
    /// done is recorded in `attached` even when a later step fails.
    pub fn attach(
        &self,
        container: &str,
        ports: &[PortMapping],
        attached: &mut CniAttachment,
    ) -> Result<(), String> {
        run_quiet(Command::new("ip").args(["netns", "add", &self.netns]))?;
        attached.netns = true;
        run_quiet(Command::new("ip").args(["-n", &self.netns, "link", "set", "lo", "up"]))?;
        let conf: serde_json::Value =
            serde_json::from_str(DEFAULT_NET).map_err(|e| e.to_string())?;
        attached.ptp = Some(conf.clone());
        let result = self.cni("ptp", "ADD", container, &conf)?;
        attached.result = Some(result.clone());
        if ports.is_empty() {
            return Ok(());
        }
        let mappings: Vec<serde_json::Value> = ports
            .iter()
            .map(|p| {
                serde_json::json!({
                    "hostPort": p.host_port,
                    "containerPort": p.container_port,
                    "protocol": "tcp"
                })
            })
            .collect();
        let mut portmap = serde_json::json!({
            "cniVersion": conf["cniVersion"],
            "name": conf["name"],
            "type": "portmap",
            "snat": true,
            "capabilities": {"portMappings": true},
            "runtimeConfig": {"portMappings": mappings},
        });
        attached.portmap = Some(portmap.clone());
        portmap["prevResult"] = result;
        self.cni("portmap", "ADD", container, &portmap)?;
        Ok(())
    }

    /// CNI DEL of portmap then ptp (each given ADD's result as `prevResult`), then the
    /// namespace removed: each step that `attach` got to, whatever the others did.
    pub fn undo(&self, container: &str, attached: CniAttachment) -> Result<(), String> {
        let mut problems = Vec::new();
        let with_prev = |conf: &serde_json::Value| {
            let mut conf = conf.clone();
            if let Some(result) = &attached.result {
                conf["prevResult"] = result.clone();
            }
            conf
        };
        if let Some(portmap) = &attached.portmap {
            if let Err(e) = self.cni("portmap", "DEL", container, &with_prev(portmap)) {
                problems.push(e);
            }
        }
        if let Some(ptp) = &attached.ptp {
            if let Err(e) = self.cni("ptp", "DEL", container, &with_prev(ptp)) {
                problems.push(e);
            }
        }
        if attached.netns {
            if let Err(e) = run_quiet(Command::new("ip").args(["netns", "del", &self.netns])) {
                problems.push(e);
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("\n"))
        }
    }

    /// The namespace, if it is still there (a leftover once `undo` has run).
    pub fn leftover(&self) -> Option<String> {
        let path = self.netns_path();
        path.exists()
            .then(|| format!("network namespace {}", path.display()))
    }

    /// A CNI plugin run for `container`, as the kvm stage1 runs them
    /// (stage1-kvm/src/net/cni.rs): `CNI_*` in a clean environment, the configuration on
    /// stdin; ADD's result.
    fn cni(
        &self,
        plugin: &str,
        command: &str,
        container: &str,
        conf: &serde_json::Value,
    ) -> Result<serde_json::Value, String> {
        let binary = CNI_DIRS
            .iter()
            .map(|d| Path::new(d).join(plugin))
            .find(|p| p.is_file())
            .ok_or(format!(
                "no CNI plugin {plugin} in {CNI_DIRS:?} (containernetworking-plugins)"
            ))?;
        let mut plugin_command = match self.host {
            Some(host) => host.command(&binary),
            None => Command::new(&binary),
        };
        let mut child = plugin_command
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", container)
            .env("CNI_NETNS", self.netns_path())
            .env("CNI_IFNAME", "eth0")
            .env("CNI_ARGS", "")
            .env("CNI_PATH", CNI_DIRS.join(":"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let stdin = serde_json::to_vec(conf).map_err(|e| e.to_string())?;
        if let Some(mut pipe) = child.stdin.take() {
            pipe.write_all(&stdin)
                .map_err(|e| format!("{plugin} {command}: writing its stdin: {e}"))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| format!("{plugin} {command}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "CNI {plugin} {command}: {}: {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        if command != "ADD" {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("CNI {plugin} ADD: its result is no JSON ({e})"))
    }
}
