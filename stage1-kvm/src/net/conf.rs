//! Which networks a pod joins (`--net=...`, as stage0 passes it on) and the CNI network
//! configuration of each: rkt's built-in `default` and `default-restricted`, or a `*.conf` file
//! whose `name` matches, from `<local-config>/net.d/` first, then `/etc/rkt/net.d/`.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::error::Stage1Error;

/// rkt's `99-default.conf`: ptp with host-local addresses and masquerading, reachable from the
/// host and, through the masquerade, from wherever the host reaches.
pub const DEFAULT_NET: &str = "default";
/// rkt's `99-default-restricted.conf`: ptp without masquerading, host-only.
pub const DEFAULT_RESTRICTED_NET: &str = "default-restricted";
/// Where rkt keeps the system's network configurations.
pub const SYSTEM_NET_DIR: &str = "/etc/rkt/net.d";
/// The CNI version we ask plugins for when a configuration names none (rkt's files name none):
/// the oldest with CHECK and the `ips`/`interfaces` result.
pub const DEFAULT_CNI_VERSION: &str = "0.4.0";

/// One network the pod joins, with the per-network arguments (`--net=NAME:ARGS`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetRequest {
    pub name: String,
    /// `CNI_ARGS` for the plugins, e.g. `IP=172.16.28.10` (several joined by `;`).
    pub args: String,
}

/// The networks `--net` asks for, in order; empty for `none` (loopback only).
///
/// As in rkt: `default` when empty; `none` only alone; a list of named networks without
/// `default` also gets `default-restricted` (rkt adds it so that the pod keeps a way to the
/// host); `host` is impossible for a VM; a name may appear once.
pub fn requests(net: &str) -> Result<Vec<NetRequest>, Stage1Error> {
    let net = if net.trim().is_empty() {
        DEFAULT_NET
    } else {
        net
    };
    let mut requests: Vec<NetRequest> = Vec::new();
    for part in net.split(',') {
        let (name, args) = part.split_once(':').unwrap_or((part, ""));
        match name {
            "" => {
                return Err(Stage1Error::Usage(format!(
                    "--net={net}: an empty network name"
                )))
            }
            "host" => {
                return Err(Stage1Error::Unsupported(
                    "--net=host is impossible with the kvm stage1: the apps run in their own \
                     VM, which cannot share the host's network namespace; use --net=default, \
                     a named network or --net=none"
                        .to_string(),
                ))
            }
            "none" if net != "none" => {
                return Err(Stage1Error::Usage(format!(
                    "--net={net}: none cannot be combined with other networks"
                )))
            }
            "none" => return Ok(Vec::new()),
            "all" => {
                return Err(Stage1Error::Unsupported(format!(
                    "--net={net}: all is not supported by the kvm stage1; name the networks"
                )))
            }
            _ => {}
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(Stage1Error::Usage(format!(
                "--net: {name:?} is not a network name (letters, digits, '-', '_', '.')"
            )));
        }
        if requests.iter().any(|r| r.name == name) {
            return Err(Stage1Error::Usage(format!(
                "--net={net}: network {name} is named twice"
            )));
        }
        if args.contains(['\n', '\0']) {
            return Err(Stage1Error::Usage(format!(
                "--net={net}: the arguments of {name} contain a control character"
            )));
        }
        requests.push(NetRequest {
            name: name.to_string(),
            args: cni_args(args),
        });
    }
    if !requests
        .iter()
        .any(|r| r.name == DEFAULT_NET || r.name == DEFAULT_RESTRICTED_NET)
    {
        requests.push(NetRequest {
            name: DEFAULT_RESTRICTED_NET.to_string(),
            args: String::new(),
        });
    }
    Ok(requests)
}

/// `CNI_ARGS` for per-network arguments: every plugin of the chain sees them, and most reject
/// keys they do not know (the bridge plugin refuses `IP=`, which only host-local reads) unless
/// `IgnoreUnknown=1` comes first, as the CNI conventions say.
fn cni_args(args: &str) -> String {
    if args.is_empty() || args.split(';').any(|kv| kv.starts_with("IgnoreUnknown=")) {
        args.to_string()
    } else {
        format!("IgnoreUnknown=1;{args}")
    }
}

/// A network's CNI configuration, ready to be given to its plugin.
#[derive(Clone, Debug, PartialEq)]
pub struct NetConf {
    pub name: String,
    /// The file it came from; `None` for the built-in ones.
    pub path: Option<PathBuf>,
    /// The configuration JSON, `cniVersion` filled in.
    pub json: Value,
}

impl NetConf {
    /// The main plugin (`type`).
    pub fn plugin(&self) -> &str {
        self.json.get("type").and_then(Value::as_str).unwrap_or("")
    }

    pub fn cni_version(&self) -> &str {
        self.json
            .get("cniVersion")
            .and_then(Value::as_str)
            .unwrap_or(DEFAULT_CNI_VERSION)
    }
}

/// Finds the configuration of network `name`: a file in `<local_config>/net.d` or the system
/// directory (first match by the `name` inside, files in name order), else a built-in one.
pub fn load(
    name: &str,
    local_config: Option<&Path>,
    system_dir: &Path,
) -> Result<NetConf, Stage1Error> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(local) = local_config {
        dirs.push(local.join("net.d"));
    }
    if !dirs.iter().any(|d| d == system_dir) {
        dirs.push(system_dir.to_path_buf());
    }
    for dir in &dirs {
        let Ok(entries) = fs::read_dir(dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "conf"))
            .collect();
        files.sort();
        for path in files {
            let bytes =
                fs::read(&path).map_err(Stage1Error::io(format!("reading {}", path.display())))?;
            let json: Value =
                serde_json::from_slice(&bytes).map_err(|err| Stage1Error::BadFile {
                    path: path.clone(),
                    problem: format!("not a CNI network configuration ({err})"),
                })?;
            if json.get("name").and_then(Value::as_str) == Some(name) {
                return finish(name, Some(path), json);
            }
        }
    }
    match name {
        DEFAULT_NET => finish(
            name,
            None,
            json!({
                "name": DEFAULT_NET,
                "type": "ptp",
                "ipMasq": true,
                "ipam": {
                    "type": "host-local",
                    "subnet": "172.16.28.0/24",
                    "routes": [{"dst": "0.0.0.0/0"}]
                }
            }),
        ),
        DEFAULT_RESTRICTED_NET => finish(
            name,
            None,
            json!({
                "name": DEFAULT_RESTRICTED_NET,
                "type": "ptp",
                "ipMasq": false,
                "ipam": {"type": "host-local", "subnet": "172.31.0.0/16"}
            }),
        ),
        _ => Err(Stage1Error::Unsupported(format!(
            "--net={name}: no network configuration named {name} in {}; add a CNI .conf file \
             with \"name\": \"{name}\" there",
            dirs.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(" or ")
        ))),
    }
}

/// Checks what we rely on and fills in `cniVersion`.
fn finish(name: &str, path: Option<PathBuf>, mut json: Value) -> Result<NetConf, Stage1Error> {
    let bad = |problem: String| match &path {
        Some(path) => Stage1Error::BadFile {
            path: path.clone(),
            problem,
        },
        None => Stage1Error::Unsupported(problem),
    };
    let Some(object) = json.as_object_mut() else {
        return Err(bad("a network configuration must be a JSON object".into()));
    };
    if object.contains_key("plugins") {
        return Err(bad(
            "configuration lists (\"plugins\") are not supported: give one plugin per .conf \
             file, as rkt does"
                .into(),
        ));
    }
    let plugin = object.get("type").and_then(Value::as_str).unwrap_or("");
    if !is_plugin_name(plugin) {
        return Err(bad(format!(
            "network {name}: \"type\" must name a CNI plugin (a plain file name), not {plugin:?}"
        )));
    }
    object
        .entry("cniVersion")
        .or_insert_with(|| Value::from(DEFAULT_CNI_VERSION));
    Ok(NetConf {
        name: name.to_string(),
        path,
        json,
    })
}

/// A plugin is looked up by name in the plugin directories: no path may sneak in.
pub fn is_plugin_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(net: &str) -> Vec<String> {
        requests(net)
            .unwrap()
            .into_iter()
            .map(|r| format!("{}:{}", r.name, r.args))
            .collect()
    }

    #[test]
    fn net_flags_follow_rkt() {
        assert_eq!(names(""), ["default:"]);
        assert_eq!(names("default"), ["default:"]);
        assert!(names("none").is_empty());
        assert_eq!(
            names("mynet:IP=10.1.1.5,other"),
            [
                "mynet:IgnoreUnknown=1;IP=10.1.1.5",
                "other:",
                "default-restricted:"
            ]
        );
        assert_eq!(names("default,br"), ["default:", "br:"]);
        assert_eq!(
            names("a:IgnoreUnknown=0;IP=1.2.3.4"),
            ["a:IgnoreUnknown=0;IP=1.2.3.4", "default-restricted:"]
        );
        for (bad, says) in [
            ("host", "--net=host is impossible"),
            ("default,host", "--net=host"),
            ("none,default", "cannot be combined"),
            ("a,a", "named twice"),
            ("a/b", "not a network name"),
            ("default,", "empty network name"),
            ("all", "all is not supported"),
        ] {
            let err = requests(bad).unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn confs_come_from_local_then_system_then_built_in() {
        let local = tempfile::tempdir().unwrap();
        let system = tempfile::tempdir().unwrap();
        fs::create_dir_all(local.path().join("net.d")).unwrap();
        fs::write(
            local.path().join("net.d/10-br.conf"),
            r#"{"name":"br","type":"bridge","ipam":{"type":"host-local","subnet":"10.9.0.0/24"}}"#,
        )
        .unwrap();
        fs::write(
            system.path().join("20-br.conf"),
            r#"{"name":"br","type":"macvlan"}"#,
        )
        .unwrap();
        fs::write(
            system.path().join("30-sys.conf"),
            r#"{"cniVersion":"1.0.0","name":"sys","type":"ipvlan"}"#,
        )
        .unwrap();
        fs::write(system.path().join("not-a-conf.txt"), "x").unwrap();
        let br = load("br", Some(local.path()), system.path()).unwrap();
        assert_eq!(br.plugin(), "bridge");
        assert_eq!(br.cni_version(), DEFAULT_CNI_VERSION);
        assert_eq!(br.path, Some(local.path().join("net.d/10-br.conf")));
        let sys = load("sys", Some(local.path()), system.path()).unwrap();
        assert_eq!((sys.plugin(), sys.cni_version()), ("ipvlan", "1.0.0"));
        let default = load(DEFAULT_NET, None, system.path()).unwrap();
        assert_eq!(default.plugin(), "ptp");
        assert_eq!(default.json["ipMasq"], true);
        assert_eq!(default.json["ipam"]["subnet"], "172.16.28.0/24");
        let err = load("nope", None, system.path()).unwrap_err().to_string();
        assert!(err.contains("no network configuration named nope"), "{err}");

        fs::write(
            system.path().join("40-evil.conf"),
            r#"{"name":"evil","type":"../../bin/sh"}"#,
        )
        .unwrap();
        let err = load("evil", None, system.path()).unwrap_err().to_string();
        assert!(err.contains("must name a CNI plugin"), "{err}");
        fs::write(system.path().join("50-bad.conf"), "{").unwrap();
        assert!(load("zzz", None, system.path()).is_err());
    }
}
