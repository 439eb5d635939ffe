//! `--dns-conf-mode` (docs/pods.md, stage1 contract item 4) turned into the files guest-init
//! looks for: it uses `stage1/rootfs/etc/rkt-resolv.conf` and `etc/rkt-hosts` when present.
//! `stage0` mode: stage0 already wrote them. `host`: we copy the host's file there. `none` (resolv
//! only) and `default`: no file from us (stage0 writes none in these modes).

use std::fs;
use std::path::Path;

use crate::args::{ConfMode, DnsConfMode};
use crate::error::Stage1Error;
use crate::pod::write_whole;

/// Places the host's files where guest-init finds them, for each half in `host` mode.
pub fn apply(mode: DnsConfMode, stage1_rootfs: &Path, host_etc: &Path) -> Result<(), Stage1Error> {
    let etc = stage1_rootfs.join("etc");
    for (half, host_file, pod_file) in [
        (mode.resolv, "resolv.conf", "rkt-resolv.conf"),
        (mode.hosts, "hosts", "rkt-hosts"),
    ] {
        if half != ConfMode::Host {
            continue;
        }
        let source = host_etc.join(host_file);
        let bytes = fs::read(&source).map_err(Stage1Error::io(format!(
            "reading the host's {} for --dns=host / --hosts-entry=host",
            source.display()
        )))?;
        fs::create_dir_all(&etc).map_err(Stage1Error::io(format!("creating {}", etc.display())))?;
        write_whole(&etc.join(pod_file), &bytes)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_mode_copies_the_hosts_files_and_nothing_else() {
        let host = tempfile::tempdir().unwrap();
        fs::write(host.path().join("resolv.conf"), "nameserver 9.9.9.9\n").unwrap();
        fs::write(host.path().join("hosts"), "127.0.0.1 localhost\n").unwrap();
        let rootfs = tempfile::tempdir().unwrap();
        let mode = DnsConfMode {
            resolv: ConfMode::Host,
            hosts: ConfMode::Stage0,
        };
        apply(mode, rootfs.path(), host.path()).unwrap();
        assert_eq!(
            fs::read_to_string(rootfs.path().join("etc/rkt-resolv.conf")).unwrap(),
            "nameserver 9.9.9.9\n"
        );
        assert!(!rootfs.path().join("etc/rkt-hosts").exists());
        apply(
            DnsConfMode::default(),
            rootfs.path(),
            Path::new("/nonexistent"),
        )
        .unwrap();
        let both = DnsConfMode {
            resolv: ConfMode::None,
            hosts: ConfMode::Host,
        };
        apply(both, rootfs.path(), host.path()).unwrap();
        assert_eq!(
            fs::read_to_string(rootfs.path().join("etc/rkt-hosts")).unwrap(),
            "127.0.0.1 localhost\n"
        );
    }
}
