//! `--port NAME:[HOSTIP:]HOSTPORT` (the pod manifest's `ports`, written by stage0) as the CNI
//! portmap plugin's `portMappings`: each name is looked up among the apps' ports (the app
//! section of the pod manifest when it overrides the image's, else the image manifest stage0
//! rendered at `stage1/rootfs/opt/stage2/<app>/manifest`), which give the pod port and protocol.

use std::fs;

use appc::{ImageManifest, PodManifest, Port};
use serde::Serialize;

use crate::error::Stage1Error;
use crate::pod::PodPaths;

/// One entry of portmap's `runtimeConfig.portMappings`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PortMapping {
    #[serde(rename = "hostPort")]
    pub host_port: u16,
    #[serde(rename = "containerPort")]
    pub container_port: u16,
    pub protocol: String,
    #[serde(rename = "hostIP", skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
}

/// The pod's forwarded ports; empty when it forwards none.
pub fn port_mappings(
    pod: &PodPaths,
    manifest: &PodManifest,
) -> Result<Vec<PortMapping>, Stage1Error> {
    if manifest.ports.is_empty() {
        return Ok(Vec::new());
    }
    let mut app_ports: Vec<Port> = Vec::new();
    for app in &manifest.apps {
        match &app.app {
            Some(section) if !section.ports.is_empty() => app_ports.extend(section.ports.clone()),
            _ => {
                let path = pod
                    .stage1_rootfs()
                    .join("opt/stage2")
                    .join(app.name.as_str())
                    .join("manifest");
                let bytes = fs::read(&path)
                    .map_err(Stage1Error::io(format!("reading {}", path.display())))?;
                let image = ImageManifest::from_json(&bytes).map_err(|e| Stage1Error::BadFile {
                    path: path.clone(),
                    problem: e.to_string(),
                })?;
                app_ports.extend(image.app.map(|a| a.ports).unwrap_or_default());
            }
        }
    }
    let mut mappings = Vec::new();
    for forward in &manifest.ports {
        let name = forward.name.as_str();
        let port = forward
            .pod_port
            .clone()
            .or_else(|| app_ports.iter().find(|p| p.name.as_str() == name).cloned())
            .ok_or_else(|| {
                Stage1Error::Usage(format!(
                    "--port={name}:{}: no app of the pod declares a port named {name}",
                    forward.host_port
                ))
            })?;
        let protocol = port.protocol.to_ascii_lowercase();
        if protocol != "tcp" && protocol != "udp" {
            return Err(Stage1Error::Unsupported(format!(
                "--port={name}: protocol {:?} cannot be forwarded (tcp or udp only)",
                port.protocol
            )));
        }
        if let Some(ip) = &forward.host_ip {
            // portmap forwards IPv4 and IPv6 alike (iptables and ip6tables rules).
            if ip.parse::<std::net::IpAddr>().is_err() {
                return Err(Stage1Error::Usage(format!(
                    "--port={name}: host address {ip:?} is not an IP address"
                )));
            }
        }
        // A port range (`count` > 1) maps one to one from the host port on.
        for offset in 0..port.count.max(1) {
            let (Some(host_port), Some(container_port)) = (
                forward.host_port.checked_add(offset),
                port.port.checked_add(offset),
            ) else {
                return Err(Stage1Error::Usage(format!(
                    "--port={name}: the range of {} ports runs past port 65535",
                    port.count
                )));
            };
            mappings.push(PortMapping {
                host_port,
                container_port,
                protocol: protocol.clone(),
                host_ip: forward.host_ip.clone().filter(|ip| !ip.is_empty()),
            });
        }
    }
    Ok(mappings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod_with(ports: &str, image_ports: &str) -> (tempfile::TempDir, PodPaths, PodManifest) {
        let dir = tempfile::tempdir().unwrap();
        let pod = PodPaths::new(dir.path().to_path_buf());
        let app_dir = pod.stage1_rootfs().join("opt/stage2/web");
        fs::create_dir_all(&app_dir).unwrap();
        fs::write(
            app_dir.join("manifest"),
            format!(
                r#"{{"acKind":"ImageManifest","acVersion":"0.8.11","name":"web",
                "app":{{"exec":["/bin/httpd"],"user":"0","group":"0","ports":{image_ports}}}}}"#
            ),
        )
        .unwrap();
        let id = format!("sha512-{}", "a".repeat(128));
        let manifest = PodManifest::from_json(
            format!(
                r#"{{"acVersion":"0.8.11","acKind":"PodManifest","apps":[{{"name":"web",
                "image":{{"id":"{id}"}}}}],"ports":{ports}}}"#
            )
            .as_bytes(),
        )
        .unwrap();
        (dir, pod, manifest)
    }

    #[test]
    fn named_ports_map_to_the_apps_ports() {
        let (_d, pod, manifest) = pod_with(
            r#"[{"name":"http","hostPort":8080},{"name":"dns","hostPort":5353,"hostIP":"10.0.0.1"}]"#,
            r#"[{"name":"http","protocol":"tcp","port":80},{"name":"dns","protocol":"udp","port":53,"count":2}]"#,
        );
        let mappings = port_mappings(&pod, &manifest).unwrap();
        let text = serde_json::to_string(&mappings).unwrap();
        assert_eq!(
            text,
            r#"[{"hostPort":8080,"containerPort":80,"protocol":"tcp"},{"hostPort":5353,"containerPort":53,"protocol":"udp","hostIP":"10.0.0.1"},{"hostPort":5354,"containerPort":54,"protocol":"udp","hostIP":"10.0.0.1"}]"#
        );
    }

    #[test]
    fn unknown_names_and_protocols_are_refused() {
        let (_d, pod, manifest) = pod_with(
            r#"[{"name":"nope","hostPort":8080}]"#,
            r#"[{"name":"http","protocol":"tcp","port":80}]"#,
        );
        let err = port_mappings(&pod, &manifest).unwrap_err().to_string();
        assert!(
            err.contains("no app of the pod declares a port named nope"),
            "{err}"
        );
        let (_d, pod, manifest) = pod_with(
            r#"[{"name":"s","hostPort":8080}]"#,
            r#"[{"name":"s","protocol":"sctp","port":80}]"#,
        );
        let err = port_mappings(&pod, &manifest).unwrap_err().to_string();
        assert!(err.contains("udp"), "{err}");
        let (_d, pod, manifest) = pod_with("[]", "[]");
        assert!(port_mappings(&pod, &manifest).unwrap().is_empty());
    }
}
