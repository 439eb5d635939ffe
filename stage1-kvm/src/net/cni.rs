//! Calling CNI plugins as the CNI specification says: the plugin binary found by name in the
//! plugin directories, `CNI_COMMAND`/`CNI_CONTAINERID`/`CNI_NETNS`/`CNI_IFNAME`/`CNI_ARGS`/
//! `CNI_PATH` in its environment, the network configuration on its stdin, and on its stdout
//! either the result (ADD) or an error object. Nothing else of ours reaches the plugin.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where Debian's `containernetworking-plugins` puts the plugins, then the usual upstream place.
pub const PLUGIN_DIRS: &[&str] = &["/usr/lib/cni", "/opt/cni/bin"];
/// Plugins call `iptables` and friends by name.
const PLUGIN_PATH_ENV: &str = "/usr/sbin:/usr/bin:/sbin:/bin";
/// A plugin's output is small; more than this is not a CNI result.
const OUTPUT_LIMIT: usize = 1 << 20;
/// How long one plugin call may take. Plugins finish in well under a second on a normal host
/// (a few seconds inside the emulated test host); one that is still running after this is hung
/// (a stuck iptables lock, a DHCP server that never answers) and would hang `rkt run` with it.
pub const PLUGIN_TIME_LIMIT: Duration = Duration::from_secs(120);

/// The three operations we use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CniCommand {
    Add,
    Del,
    Check,
}

impl CniCommand {
    fn word(self) -> &'static str {
        match self {
            CniCommand::Add => "ADD",
            CniCommand::Del => "DEL",
            CniCommand::Check => "CHECK",
        }
    }
}

/// Where and for whom a plugin runs.
#[derive(Clone, Debug)]
pub struct Invocation<'a> {
    pub container_id: &'a str,
    /// The pod's network namespace (a path, e.g. `/run/netns/rkt-UUID`).
    pub netns: &'a Path,
    pub ifname: &'a str,
    /// `CNI_ARGS` (`KEY=VALUE;...`), possibly empty.
    pub args: &'a str,
}

/// A plugin failed: its own message when it gave one (CNI error object), else its stderr.
#[derive(Debug, thiserror::Error)]
#[error("CNI plugin {plugin} {command}: {message}")]
pub struct PluginError {
    pub plugin: String,
    pub command: &'static str,
    pub message: String,
}

/// The parts of a CNI result (0.3.0 to 1.0.0; 0.4.0's adds nothing we read) that we use.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CniResult {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    #[serde(default)]
    pub interfaces: Vec<ResultInterface>,
    #[serde(default)]
    pub ips: Vec<ResultIp>,
    #[serde(default)]
    pub dns: ResultDns,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ResultInterface {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub mac: String,
    #[serde(default)]
    pub sandbox: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ResultIp {
    /// `ADDR/PREFIX`.
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ResultDns {
    #[serde(default)]
    pub nameservers: Vec<String>,
    #[serde(default)]
    pub domain: Option<String>,
    #[serde(default)]
    pub search: Vec<String>,
    #[serde(default)]
    pub options: Vec<String>,
}

impl CniResult {
    /// The first IPv4 address of the interface in the pod's namespace, as `(addr, prefix)`.
    pub fn pod_ipv4(&self) -> Option<(std::net::Ipv4Addr, u8)> {
        self.pod_addresses()
            .find_map(|(address, prefix)| match address {
                std::net::IpAddr::V4(v4) => Some((v4, prefix)),
                std::net::IpAddr::V6(_) => None,
            })
    }

    /// The first IPv6 address of the interface in the pod's namespace.
    pub fn pod_ipv6(&self) -> Option<std::net::Ipv6Addr> {
        self.pod_addresses().find_map(|(address, _)| match address {
            std::net::IpAddr::V6(v6) => Some(v6),
            std::net::IpAddr::V4(_) => None,
        })
    }

    /// The addresses of the interfaces in the pod's namespace (those with a `sandbox`; an
    /// address naming no interface counts as the pod's), in the result's order.
    fn pod_addresses(&self) -> impl Iterator<Item = (std::net::IpAddr, u8)> + '_ {
        self.ips.iter().filter_map(|ip| {
            let in_pod = match ip.interface.and_then(|i| self.interfaces.get(i)) {
                Some(iface) => !iface.sandbox.is_empty(),
                None => true,
            };
            let (addr, prefix) = ip.address.split_once('/')?;
            let addr: std::net::IpAddr = addr.parse().ok()?;
            let prefix: u8 = prefix
                .parse()
                .ok()
                .filter(|p| *p <= super::guest::max_prefix(&addr))?;
            in_pod.then_some((addr, prefix))
        })
    }
}

/// Finds `plugin` in `dirs`.
pub fn find_plugin(plugin: &str, dirs: &[&str]) -> Option<PathBuf> {
    if !super::conf::is_plugin_name(plugin) {
        return None;
    }
    dirs.iter()
        .map(|d| Path::new(d).join(plugin))
        .find(|p| p.is_file())
}

/// Runs `plugin` for `command` with `conf` on its stdin. ADD returns the plugin's result as
/// raw JSON (it becomes the next plugin's `prevResult` as is); DEL and CHECK return `Null`.
pub fn exec(
    plugin: &str,
    command: CniCommand,
    conf: &Value,
    inv: &Invocation,
) -> Result<Value, PluginError> {
    exec_in(PLUGIN_DIRS, PLUGIN_TIME_LIMIT, plugin, command, conf, inv)
}

/// [`exec`] with the plugin directories and the time limit as parameters (the unit tests use
/// their own plugins and a short limit).
fn exec_in(
    dirs: &[&str],
    time_limit: Duration,
    plugin: &str,
    command: CniCommand,
    conf: &Value,
    inv: &Invocation,
) -> Result<Value, PluginError> {
    let fail = |message: String| PluginError {
        plugin: plugin.to_string(),
        command: command.word(),
        message,
    };
    let binary = find_plugin(plugin, dirs).ok_or_else(|| {
        fail(format!(
            "no such plugin in {} (install Debian's containernetworking-plugins)",
            dirs.join(" or ")
        ))
    })?;
    let stdin = serde_json::to_vec(conf).map_err(|e| fail(e.to_string()))?;
    let mut child = Command::new(&binary)
        .env_clear()
        .env("PATH", PLUGIN_PATH_ENV)
        .env("CNI_COMMAND", command.word())
        .env("CNI_CONTAINERID", inv.container_id)
        .env("CNI_NETNS", inv.netns)
        .env("CNI_IFNAME", inv.ifname)
        .env("CNI_ARGS", inv.args)
        .env("CNI_PATH", dirs.join(":"))
        // Its own process group, so a hung plugin is killed together with what it started
        // (iptables, a DHCP client).
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot start {}: {e}", binary.display())))?;
    if let Some(mut input) = child.stdin.take() {
        // A plugin that exits without reading its stdin is judged by its status below.
        let _ = input.write_all(&stdin);
    }
    let output = wait_with_limit(child, time_limit).map_err(|e| match e {
        WaitError::TimedOut => fail(format!(
            "it did not finish within {} s and was killed; a plugin that hangs usually waits \
             for a lock or a server (check the network's configuration and the host's \
             iptables/DHCP)",
            time_limit.as_secs()
        )),
        WaitError::Io(e) => fail(format!("waiting for it: {e}")),
    })?;
    if output.stdout.len() > OUTPUT_LIMIT {
        return Err(fail("its output is too large to be a CNI result".into()));
    }
    if !output.status.success() {
        // The spec's error object: {"code": N, "msg": "...", "details": "..."}.
        let message = serde_json::from_slice::<Value>(&output.stdout)
            .ok()
            .and_then(|v| {
                let msg = v.get("msg")?.as_str()?.to_string();
                Some(match v.get("details").and_then(Value::as_str) {
                    Some(d) if !d.is_empty() => format!("{msg} ({d})"),
                    _ => msg,
                })
            })
            .unwrap_or_else(|| {
                let stderr = String::from_utf8_lossy(&output.stderr);
                let line = stderr.lines().last().unwrap_or("").trim().to_string();
                format!("{} {line}", output.status)
            });
        return Err(fail(message));
    }
    match command {
        CniCommand::Add => serde_json::from_slice(&output.stdout)
            .map_err(|e| fail(format!("its result is not JSON ({e})"))),
        CniCommand::Del | CniCommand::Check => Ok(Value::Null),
    }
}

/// What a plugin left: its status and its output.
struct PluginOutput {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

enum WaitError {
    TimedOut,
    Io(std::io::Error),
}

/// Waits for `child` while reading its stdout and stderr (so a chatty plugin never blocks on a
/// full pipe); past `limit` it kills the child's process group and gives up. The readers are
/// threads because std has no way to wait on a child and two pipes at once; after a kill they
/// are not joined, since something the plugin started outside its group could hold the pipes.
fn wait_with_limit(mut child: Child, limit: Duration) -> Result<PluginOutput, WaitError> {
    fn reader<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                // Keep one byte past the limit (enough to tell that the output is too large)
                // and drain the rest, so the plugin is never blocked on a full pipe.
                let _ = pipe
                    .by_ref()
                    .take(OUTPUT_LIMIT as u64 + 1)
                    .read_to_end(&mut bytes);
                let _ = std::io::copy(&mut pipe, &mut std::io::sink());
            }
            bytes
        })
    }
    let stdout = reader(child.stdout.take());
    let stderr = reader(child.stderr.take());
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < limit => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                if let Ok(pid) = i32::try_from(child.id()) {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                let _ = child.kill();
                let _ = child.wait();
                return Err(WaitError::TimedOut);
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(WaitError::Io(e));
            }
        }
    };
    Ok(PluginOutput {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

/// Parses an ADD result (after `exec`) into the fields we use.
pub fn parse_result(raw: &Value) -> Result<CniResult, String> {
    serde_json::from_value(raw.clone()).map_err(|e| format!("unexpected CNI result ({e})"))
}

/// Whether a CNI version has CHECK (0.4.0 and later).
pub fn has_check(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    major >= 1 || minor >= 4
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_of_several_versions_parse() {
        let v04 = serde_json::json!({
            "cniVersion": "0.4.0",
            "interfaces": [
                {"name": "veth1234", "mac": "aa:bb:cc:dd:ee:01"},
                {"name": "eth0", "mac": "aa:bb:cc:dd:ee:02", "sandbox": "/run/netns/x"}
            ],
            "ips": [{"version": "4", "interface": 1, "address": "172.16.28.5/24",
                     "gateway": "172.16.28.1"}],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dns": {"nameservers": ["10.0.0.53"]}
        });
        let result = parse_result(&v04).unwrap();
        assert_eq!(
            result.pod_ipv4(),
            Some(("172.16.28.5".parse().unwrap(), 24))
        );
        assert_eq!(result.dns.nameservers, ["10.0.0.53"]);
        let v1 = serde_json::json!({"cniVersion": "1.0.0", "ips": [{"address": "10.1.0.2/16"}]});
        assert_eq!(
            parse_result(&v1).unwrap().pod_ipv4(),
            Some(("10.1.0.2".parse().unwrap(), 16))
        );
        let garbage = serde_json::json!({"ips": [{"address": "x/99"}]});
        assert_eq!(parse_result(&garbage).unwrap().pod_ipv4(), None);
        assert!(parse_result(&serde_json::json!({"ips": 3})).is_err());
    }

    #[test]
    fn check_exists_from_0_4_0() {
        assert!(has_check("0.4.0") && has_check("1.0.0"));
        assert!(!has_check("0.3.1") && !has_check("0.2.0") && !has_check("x"));
    }

    #[test]
    fn plugins_are_found_by_plain_name_only() {
        assert_eq!(find_plugin("../../bin/sh", &["/usr/lib/cni"]), None);
        assert_eq!(find_plugin("no-such-plugin", &["/nonexistent"]), None);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ptp"), "").unwrap();
        let dirs = [dir.path().to_str().unwrap()];
        assert_eq!(find_plugin("ptp", &dirs), Some(dir.path().join("ptp")));
    }

    /// A plugin directory holding one shell-script plugin named `fake`.
    fn fake_plugin(script: &str) -> tempfile::TempDir {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fake");
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        dir
    }

    fn run_fake(dir: &tempfile::TempDir, limit: Duration) -> Result<Value, PluginError> {
        let inv = Invocation {
            container_id: "c1",
            netns: Path::new("/run/netns/none"),
            ifname: "eth0",
            args: "",
        };
        let dirs = [dir.path().to_str().unwrap()];
        let conf = serde_json::json!({"cniVersion": "0.4.0", "type": "fake"});
        exec_in(&dirs, limit, "fake", CniCommand::Add, &conf, &inv)
    }

    #[test]
    fn a_plugin_gets_the_cni_environment_and_its_result_is_returned() {
        let dir = fake_plugin(
            r#"read -r conf
[ "$CNI_COMMAND" = ADD ] && [ "$CNI_IFNAME" = eth0 ] && [ "$CNI_NETNS" = /run/netns/none ] || exit 9
echo '{"cniVersion":"0.4.0","ips":[{"address":"10.9.0.2/24"}]}'"#,
        );
        let result = run_fake(&dir, Duration::from_secs(30)).unwrap();
        assert_eq!(result["ips"][0]["address"], "10.9.0.2/24");
    }

    #[test]
    fn a_failing_plugin_reports_its_error_object() {
        let dir =
            fake_plugin(r#"echo '{"code":7,"msg":"no addresses left","details":"pool"}'; exit 1"#);
        let err = run_fake(&dir, Duration::from_secs(30)).unwrap_err();
        assert!(err.message.contains("no addresses left (pool)"), "{err:?}");
    }

    #[test]
    fn a_hung_plugin_is_killed_with_what_it_started() {
        // The plugin starts a child that would outlive it, then hangs.
        let marker = tempfile::tempdir().unwrap();
        let pid_file = marker.path().join("pid");
        let dir = fake_plugin(&format!(
            "sleep 300 & echo $! > {}; sleep 300",
            pid_file.display()
        ));
        let started = Instant::now();
        let err = run_fake(&dir, Duration::from_millis(500)).unwrap_err();
        assert!(err.message.contains("did not finish within"), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(20));
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The background child was killed with the group (it may linger as a zombie of init
        // for a moment, so wait for it to be gone or dead).
        let gone = |pid: i32| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|stat| stat.contains(") Z "))
                .unwrap_or(true)
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !gone(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(gone(pid), "the plugin's child {pid} survived");
    }
}
