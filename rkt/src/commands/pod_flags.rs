//! Parsers for the values of the pod and app flags of `prepare`/`run`
//! (`--volume`, `--mount`, `--set-env`, `--memory`, ...), in rkt's syntax.
//! Each returns a one-line problem description; callers report it as a
//! usage error.

use std::path::Path;

use appc::{AcIdentifier, AcName, Isolator, Mount, NameValue, PodPort, Volume, VolumeKind};

fn ac_name(text: &str, what: &str) -> Result<AcName, String> {
    AcName::try_from(text).map_err(|problem| {
        format!(
            "{what} {text:?} is not a valid name (lowercase letters, digits, dashes): {problem}"
        )
    })
}

fn parse_bool(text: &str, flag: &str) -> Result<bool, String> {
    match text {
        "true" | "1" | "t" | "T" | "TRUE" | "True" => Ok(true),
        "false" | "0" | "f" | "F" | "FALSE" | "False" => Ok(false),
        _ => Err(format!("{flag}: {text:?} is not true or false")),
    }
}

fn absolute(text: &str, what: &str) -> Result<String, String> {
    if text.starts_with('/') && !text.split('/').any(|part| part == "..") {
        Ok(text.to_string())
    } else {
        Err(format!(
            "{what} {text:?} must be an absolute path without \"..\""
        ))
    }
}

/// `--volume NAME,kind=host,source=PATH[,readOnly=BOOL][,recursive=BOOL]` or
/// `--volume NAME,kind=empty[,readOnly=BOOL][,mode=0755][,uid=N][,gid=N]`.
pub fn parse_volume(text: &str) -> Result<Volume, String> {
    let mut parts = text.split(',');
    let name = parts.next().unwrap_or_default();
    if name.is_empty() || name.contains('=') {
        return Err(format!(
            "--volume {text:?}: start with the volume's name, e.g. \
             --volume data,kind=host,source=/srv/data"
        ));
    }
    let mut volume = Volume {
        name: ac_name(name, "--volume: volume name")?,
        kind: VolumeKind::Empty,
        source: None,
        read_only: None,
        recursive: None,
        mode: None,
        uid: None,
        gid: None,
    };
    let mut kind = None;
    for part in parts {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| format!("--volume {name}: {part:?} is not KEY=VALUE"))?;
        let duplicate = || format!("--volume {name}: {key} is given twice");
        match key {
            "kind" => {
                if kind.is_some() {
                    return Err(duplicate());
                }
                kind = Some(match value {
                    "host" => VolumeKind::Host,
                    "empty" => VolumeKind::Empty,
                    _ => {
                        return Err(format!(
                            "--volume {name}: kind {value:?} is not \"host\" or \"empty\""
                        ))
                    }
                })
            }
            "source" if volume.source.is_none() => {
                volume.source = Some(absolute(value, &format!("--volume {name}: source"))?)
            }
            "readOnly" if volume.read_only.is_none() => {
                volume.read_only = Some(parse_bool(value, &format!("--volume {name}: readOnly"))?)
            }
            "recursive" if volume.recursive.is_none() => {
                volume.recursive = Some(parse_bool(value, &format!("--volume {name}: recursive"))?)
            }
            "mode" if volume.mode.is_none() => {
                let valid = !value.is_empty()
                    && value.len() <= 4
                    && u32::from_str_radix(value, 8).is_ok_and(|mode| mode <= 0o7777);
                if !valid {
                    return Err(format!(
                        "--volume {name}: mode {value:?} is not an octal mode like 0755"
                    ));
                }
                volume.mode = Some(value.to_string());
            }
            "uid" if volume.uid.is_none() => {
                volume.uid = Some(
                    value
                        .parse()
                        .map_err(|_| format!("--volume {name}: uid {value:?} is not a number"))?,
                )
            }
            "gid" if volume.gid.is_none() => {
                volume.gid = Some(
                    value
                        .parse()
                        .map_err(|_| format!("--volume {name}: gid {value:?} is not a number"))?,
                )
            }
            "source" | "readOnly" | "recursive" | "mode" | "uid" | "gid" => return Err(duplicate()),
            _ => {
                return Err(format!(
                    "--volume {name}: unknown key {key:?} (kind, source, readOnly, recursive, \
                     mode, uid, gid)"
                ))
            }
        }
    }
    volume.kind = kind.ok_or_else(|| {
        format!("--volume {name}: say kind=host (with source=PATH) or kind=empty")
    })?;
    match volume.kind {
        VolumeKind::Host => {
            if volume.source.is_none() {
                return Err(format!(
                    "--volume {name}: a host volume needs source=/absolute/path"
                ));
            }
            if volume.mode.is_some() || volume.uid.is_some() || volume.gid.is_some() {
                return Err(format!(
                    "--volume {name}: mode, uid and gid apply to kind=empty volumes only"
                ));
            }
        }
        VolumeKind::Empty => {
            if volume.source.is_some() || volume.recursive.is_some() {
                return Err(format!(
                    "--volume {name}: source and recursive apply to kind=host volumes only"
                ));
            }
        }
    }
    Ok(volume)
}

/// `--mount volume=NAME,target=PATH`.
pub fn parse_mount(text: &str) -> Result<Mount, String> {
    let mut volume = None;
    let mut target = None;
    for part in text.split(',') {
        match part.split_once('=') {
            Some(("volume", value)) if volume.is_none() => {
                volume = Some(ac_name(value, "--mount: volume")?)
            }
            Some(("target", value)) if target.is_none() => {
                target = Some(absolute(value, "--mount: target")?)
            }
            _ => {
                return Err(format!(
                    "--mount {text:?}: expected volume=NAME,target=/PATH"
                ))
            }
        }
    }
    match (volume, target) {
        (Some(volume), Some(path)) => Ok(Mount {
            volume,
            path,
            app_volume: None,
        }),
        _ => Err(format!(
            "--mount {text:?}: expected volume=NAME,target=/PATH"
        )),
    }
}

/// `NAME=VALUE` for `--set-env` and `--environment` (the value may hold `=`).
pub fn parse_env_var(text: &str, flag: &str) -> Result<NameValue, String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() && !name.contains('\0') => Ok(NameValue {
            name: name.to_string(),
            value: value.to_string(),
        }),
        _ => Err(format!("{flag} {text:?}: expected NAME=VALUE")),
    }
}

/// Reads a `--set-env-file`: `NAME=VALUE` lines; empty lines and lines
/// starting with `#` or `;` are skipped.
pub fn read_env_file(path: &Path) -> Result<Vec<NameValue>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| format!("--set-env-file {}: {err}", path.display()))?;
    let mut vars = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        vars.push(parse_env_var(
            line,
            &format!("--set-env-file {} line {}:", path.display(), number + 1),
        )?);
    }
    Ok(vars)
}

/// `KEY=VALUE` for annotations and labels.
pub fn parse_key_value(text: &str, flag: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("{flag} {text:?}: expected KEY=VALUE")),
    }
}

/// `--supplementary-gids=1,2,3`.
pub fn parse_gids(text: &str) -> Result<Vec<u32>, String> {
    text.split(',')
        .map(|gid| {
            gid.trim()
                .parse::<u32>()
                .map_err(|_| format!("--supplementary-gids {text:?}: {gid:?} is not a group ID"))
        })
        .collect()
}

fn isolator(name: &str, value: serde_json::Value, flag: &str) -> Result<Isolator, String> {
    let isolator = Isolator {
        name: AcIdentifier::try_from(name).map_err(|problem| format!("{flag}: {problem}"))?,
        value,
    };
    isolator
        .validate(flag)
        .map_err(|err| format!("{flag}: {err}"))?;
    Ok(isolator)
}

/// `--memory=128M` / `--cpu=500m`: a `resource/*` isolator whose request
/// and limit are both the quantity, as rkt set them.
pub fn parse_resource(kind: &str, text: &str) -> Result<Isolator, String> {
    let flag = format!("--{kind}");
    let value = serde_json::json!({"request": text, "limit": text});
    isolator(&format!("resource/{kind}"), value, &flag)
        .map_err(|_| format!("{flag} {text:?} is not a quantity like 500m, 128M or 1Gi"))
}

/// `--cpu-shares=N` and `--oom-score-adj=N`.
pub fn parse_integer_isolator(name: &str, flag: &str, text: &str) -> Result<Isolator, String> {
    let number: i64 = text
        .parse()
        .map_err(|_| format!("{flag} {text:?} is not a number"))?;
    isolator(name, serde_json::json!(number), flag)
}

/// `--caps-retain=CAP_A,CAP_B` / `--caps-remove=...`.
pub fn parse_caps(name: &str, flag: &str, text: &str) -> Result<Isolator, String> {
    let set: Vec<String> = text
        .split(',')
        .map(|cap| cap.trim().to_ascii_uppercase())
        .filter(|cap| !cap.is_empty())
        .collect();
    isolator(name, serde_json::json!({ "set": set }), flag)
}

/// `--seccomp mode=retain|remove[,errno=ENAME],SYSCALL|@GROUP,...` (rkt's syntax): the
/// `os/linux/seccomp-retain-set` or `-remove-set` isolator, `{"set": [...], "errno": ...}`.
/// Syscall and group names are checked by the stage1 that applies them.
pub fn parse_seccomp(text: &str) -> Result<Isolator, String> {
    let flag = "--seccomp";
    let usage = || {
        format!(
            "{flag} {text:?}: expected mode=retain|remove[,errno=ENAME],SYSCALL[,...], e.g. \
             mode=remove,errno=EPERM,mount,umount2"
        )
    };
    let mut mode = None;
    let mut errno = None;
    let mut set = Vec::new();
    for item in text
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
    {
        match item.split_once('=') {
            Some(("mode", value @ ("retain" | "remove"))) if mode.is_none() => mode = Some(value),
            Some(("errno", value))
                if errno.is_none()
                    && value.len() > 1
                    && value.starts_with('E')
                    && value
                        .bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()) =>
            {
                errno = Some(value)
            }
            Some(_) => return Err(usage()),
            None => set.push(item.to_string()),
        }
    }
    let (Some(mode), false) = (mode, set.is_empty()) else {
        return Err(usage());
    };
    let mut value = serde_json::json!({ "set": set });
    if let Some(errno) = errno {
        value["errno"] = serde_json::Value::String(errno.to_string());
    }
    isolator(&format!("os/linux/seccomp-{mode}-set"), value, flag)
}

/// `--port NAME:[HOSTIP:]HOSTPORT`; an IPv6 HOSTIP may be written in brackets
/// (`http:[::1]:8080`), as in URLs.
pub fn parse_port(text: &str) -> Result<PodPort, String> {
    let bad = || format!("--port {text:?}: expected NAME:[HOSTIP:]HOSTPORT, e.g. http:8080");
    let (name, rest) = text.split_once(':').ok_or_else(bad)?;
    let (host_ip, port) = match rest.rsplit_once(':') {
        Some((ip, port)) => {
            let ip = ip
                .strip_prefix('[')
                .and_then(|ip| ip.strip_suffix(']'))
                .unwrap_or(ip);
            (Some(ip.to_string()), port)
        }
        None => (None, rest),
    };
    if let Some(ip) = &host_ip {
        ip.parse::<std::net::IpAddr>()
            .map_err(|_| format!("--port {text:?}: {ip:?} is not an IP address"))?;
    }
    let host_port: u16 = port.parse().ok().filter(|p| *p > 0).ok_or_else(bad)?;
    Ok(PodPort {
        name: ac_name(name, "--port: port name")?,
        host_port,
        host_ip,
        pod_port: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes() {
        let host =
            parse_volume("data,kind=host,source=/srv,readOnly=true,recursive=false").unwrap();
        assert_eq!(host.kind, VolumeKind::Host);
        assert_eq!(host.source.as_deref(), Some("/srv"));
        assert_eq!((host.read_only, host.recursive), (Some(true), Some(false)));
        let empty = parse_volume("scratch,kind=empty,mode=0700,uid=1,gid=2").unwrap();
        assert_eq!(empty.mode.as_deref(), Some("0700"));
        assert_eq!((empty.uid, empty.gid), (Some(1), Some(2)));

        for (bad, says) in [
            ("", "name"),
            ("kind=host", "name"),
            ("Data,kind=empty", "valid name"),
            ("data", "kind=host"),
            ("data,kind=tmpfs", "\"host\" or \"empty\""),
            ("data,kind=host", "source="),
            ("data,kind=host,source=rel", "absolute"),
            ("data,kind=host,source=/a/../b", "absolute"),
            ("data,kind=host,source=/a,mode=0755", "kind=empty"),
            ("data,kind=empty,source=/a", "kind=host"),
            ("data,kind=empty,mode=999", "octal"),
            ("data,kind=empty,uid=x", "uid"),
            ("data,kind=empty,readOnly=maybe", "true or false"),
            ("data,kind=empty,colour=red", "unknown key"),
            ("data,kind=empty,kind=host", "twice"),
            ("data,kind=empty,junk", "KEY=VALUE"),
        ] {
            let err = parse_volume(bad).unwrap_err();
            assert!(err.contains(says), "{bad:?}: {err}");
        }
    }

    #[test]
    fn mounts_env_and_lists() {
        let mount = parse_mount("volume=data,target=/var/data").unwrap();
        assert_eq!(
            (mount.volume.as_str(), mount.path.as_str()),
            ("data", "/var/data")
        );
        assert!(parse_mount("volume=data").is_err());
        assert!(parse_mount("volume=data,target=rel").is_err());
        assert!(parse_mount("volume=data,target=/x,extra=1").is_err());

        let var = parse_env_var("A=b=c", "--set-env").unwrap();
        assert_eq!((var.name.as_str(), var.value.as_str()), ("A", "b=c"));
        assert!(parse_env_var("=x", "--set-env").is_err());
        assert!(parse_env_var("novalue", "--set-env").is_err());

        assert_eq!(parse_gids("1, 2,3").unwrap(), [1, 2, 3]);
        assert!(parse_gids("1,x").is_err());

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("env");
        std::fs::write(&file, "# comment\n; also\n\nA=1\r\nB=two words\n").unwrap();
        let vars = read_env_file(&file).unwrap();
        assert_eq!(vars.len(), 2);
        assert_eq!(vars[1].value, "two words");
        std::fs::write(&file, "A=1\nbroken\n").unwrap();
        assert!(read_env_file(&file).unwrap_err().contains("line 2"));
    }

    #[test]
    fn seccomp_flag() {
        let remove =
            parse_seccomp("mode=remove,errno=ENOTSUP,socket,@rkt/default-blacklist").unwrap();
        assert_eq!(remove.name.as_str(), "os/linux/seccomp-remove-set");
        assert_eq!(
            remove.value,
            serde_json::json!({"set": ["socket", "@rkt/default-blacklist"], "errno": "ENOTSUP"})
        );
        let retain = parse_seccomp("mode=retain,@docker/default-whitelist,umount2").unwrap();
        assert_eq!(retain.name.as_str(), "os/linux/seccomp-retain-set");
        assert_eq!(
            retain.value,
            serde_json::json!({"set": ["@docker/default-whitelist", "umount2"]})
        );
        for bad in [
            "",
            "socket",
            "mode=remove",
            "mode=allow,socket",
            "mode=remove,errno=eperm,socket",
            "mode=remove,mode=retain,socket",
            "mode=remove,errno=EPERM,errno=EIO,socket",
            "mode=remove,what=1,socket",
        ] {
            let error = parse_seccomp(bad).unwrap_err();
            assert!(error.contains("mode=retain|remove"), "{bad}: {error}");
        }
    }

    #[test]
    fn isolators_and_ports() {
        let memory = parse_resource("memory", "128M").unwrap();
        assert_eq!(memory.name.as_str(), "resource/memory");
        assert_eq!(memory.value["limit"], "128M");
        assert!(parse_resource("cpu", "500m").is_ok());
        assert!(parse_resource("memory", "lots").is_err());
        assert!(parse_integer_isolator("os/linux/cpu-shares", "--cpu-shares", "1").is_err());
        assert!(
            parse_integer_isolator("os/linux/oom-score-adj", "--oom-score-adj", "-500").is_ok()
        );
        assert!(parse_caps(
            "os/linux/capabilities-retain-set",
            "--caps-retain",
            "cap_net_admin"
        )
        .is_ok());
        assert!(parse_caps(
            "os/linux/capabilities-retain-set",
            "--caps-retain",
            "NET_ADMIN"
        )
        .is_err());

        let port = parse_port("http:8080").unwrap();
        assert_eq!((port.name.as_str(), port.host_port), ("http", 8080));
        let port = parse_port("http:127.0.0.1:8080").unwrap();
        assert_eq!(port.host_ip.as_deref(), Some("127.0.0.1"));
        for ipv6 in ["http:[fd00::1]:8080", "http:fd00::1:8080"] {
            let port = parse_port(ipv6).unwrap();
            assert_eq!(port.host_ip.as_deref(), Some("fd00::1"), "{ipv6}");
            assert_eq!(port.host_port, 8080);
        }
        assert!(parse_port("http:[nowhere]:80").is_err());
        assert!(parse_port("http").is_err());
        assert!(parse_port("http:0").is_err());
        assert!(parse_port("http:nowhere:80").is_err());
    }
}
