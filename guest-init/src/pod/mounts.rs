//! The file systems of one app's root: what the appc OS spec promises every app (/sys (and
//! /proc, which appns.rs mounts),
//! a /dev with the standard nodes, /etc/hosts and /etc/resolv.conf) plus the pod's volumes,
//! and a read-only root when the app asks for one.
//!
//! `plan` decides what to mount (pure, unit tested); `apply` does it, every target looked up
//! inside the app root (see `rootfs`). The app root is first bind-mounted onto itself, so that
//! it is a mount of its own: that mount can be made read-only without touching the pod share,
//! and everything below lands on it.

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use nix::sys::stat::{FchmodatFlags, Mode, SFlag};
use thiserror::Error;

use super::manifest::{self, AppSpec, VolumeMount, VolumeSource};
use super::rootfs::{fd_path, AppRoot};

/// Where guest-init mounts each host volume's virtio-fs share once, to bind it into apps.
pub const VOLUME_SHARES_DIR: &str = "/rkt/volumes";

/// The device nodes of the appc OS spec: name, major, minor, mode.
pub const DEVICE_NODES: [(&str, u64, u64, u32); 7] = [
    ("null", 1, 3, 0o666),
    ("zero", 1, 5, 0o666),
    ("full", 1, 7, 0o666),
    ("random", 1, 8, 0o666),
    ("urandom", 1, 9, 0o666),
    ("tty", 5, 0, 0o666),
    ("console", 5, 1, 0o600),
];

/// Symlinks in /dev: the ptmx of the app's own devpts instance, and the fd links programs use.
pub const DEVICE_LINKS: [(&str, &str); 5] = [
    ("ptmx", "pts/ptmx"),
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
];

/// The DNS files stage0 or the stage1 made for the apps (`--dns-conf-mode`, `--dns`,
/// `--hosts-entry`), relative to the pod share.
pub const STAGE0_HOSTS: &str = pod_control::layout::HOSTS_FILE;
pub const STAGE0_RESOLV: &str = pod_control::layout::RESOLV_FILE;

/// One thing to mount (or create) inside the app root, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountStep {
    FileSystem {
        fstype: &'static str,
        source: &'static str,
        target: &'static str,
        flags: MsFlags,
        options: Option<&'static str>,
    },
    /// `DEVICE_NODES` and `DEVICE_LINKS` in the fresh /dev.
    DeviceNodes,
    /// A file of the pod share bind-mounted over a file of the image.
    BindFile {
        source: PathBuf,
        target: &'static str,
    },
    /// A hosts file with localhost and the pod's hostname, written only if the image has none
    /// (the ACE spec: never modify an image-provided /etc/hosts).
    DefaultHosts {
        content: String,
    },
    Volume(VolumeMount),
    /// The app root's own mount made read-only (the mounts on it keep their modes).
    RemountRootReadOnly,
}

#[derive(Debug, Error)]
pub enum MountError {
    #[error("two mounts target {target}; give each --mount its own target path")]
    DuplicateTarget { target: String },

    #[error("a volume cannot be mounted on the app's root (/); pick a directory below it")]
    RootTarget,

    #[error(
        "cannot {step}: {source}; check that the path is (or can become) a directory or file \
         in the image and that the pod share is writable"
    )]
    Step { step: String, source: io::Error },
}

fn step_error(step: impl Into<String>) -> impl FnOnce(io::Error) -> MountError {
    let step = step.into();
    move |source| MountError::Step { step, source }
}

/// The files /etc/hosts and /etc/resolv.conf come from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsFiles {
    pub hosts: Option<PathBuf>,
    pub resolv: Option<PathBuf>,
}

impl DnsFiles {
    /// Whichever of stage0's files exist on the share.
    pub fn find(share: &Path) -> DnsFiles {
        let existing = |relative: &str| {
            let path = share.join(relative);
            path.is_file().then_some(path)
        };
        DnsFiles {
            hosts: existing(STAGE0_HOSTS),
            resolv: existing(STAGE0_RESOLV),
        }
    }
}

/// The hosts file an app gets when neither stage0 nor the image provide one.
pub fn default_hosts(hostname: &str) -> String {
    format!(
        "127.0.0.1\tlocalhost localhost.localdomain {hostname}\n\
         ::1\tlocalhost localhost.localdomain ip6-localhost ip6-loopback {hostname}\n"
    )
}

/// What to mount for `app`, in order: parents before what goes below them.
pub fn plan(app: &AppSpec, dns: &DnsFiles, hostname: &str) -> Result<Vec<MountStep>, MountError> {
    let nosuid_nodev_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    // /proc is not here: it must be mounted from inside the pod's pid namespace, in the app's
    // own mount namespace (appns.rs), to show the pod's processes only.
    let mut steps = vec![
        MountStep::FileSystem {
            fstype: "sysfs",
            source: "sysfs",
            target: "/sys",
            flags: nosuid_nodev_noexec | MsFlags::MS_RDONLY,
            options: None,
        },
        // A small /dev of its own rather than the guest's devtmpfs: the app sees the standard
        // nodes, not the VM's virtio and serial devices.
        MountStep::FileSystem {
            fstype: "tmpfs",
            source: "dev",
            target: "/dev",
            flags: MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
            options: Some("mode=0755,size=65536k"),
        },
        MountStep::DeviceNodes,
        MountStep::FileSystem {
            fstype: "devpts",
            source: "devpts",
            target: "/dev/pts",
            flags: MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            options: Some("newinstance,ptmxmode=0666,mode=0620"),
        },
        MountStep::FileSystem {
            fstype: "tmpfs",
            source: "shm",
            target: "/dev/shm",
            flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            options: Some("mode=1777"),
        },
    ];
    match &dns.hosts {
        Some(source) => steps.push(MountStep::BindFile {
            source: source.clone(),
            target: "/etc/hosts",
        }),
        None => steps.push(MountStep::DefaultHosts {
            content: default_hosts(hostname),
        }),
    }
    if let Some(source) = &dns.resolv {
        steps.push(MountStep::BindFile {
            source: source.clone(),
            target: "/etc/resolv.conf",
        });
    }

    let mut volumes = app.volumes.clone();
    for (i, volume) in volumes.iter().enumerate() {
        if normalized(&volume.target) == "/" {
            return Err(MountError::RootTarget);
        }
        if volumes[..i]
            .iter()
            .any(|earlier| normalized(&earlier.target) == normalized(&volume.target))
        {
            return Err(MountError::DuplicateTarget {
                target: volume.target.clone(),
            });
        }
    }
    // A volume inside another volume's target must come after it (stable: same depth keeps
    // manifest order).
    volumes.sort_by_key(|volume| depth(&volume.target));
    steps.extend(volumes.into_iter().map(MountStep::Volume));
    if app.read_only_root_fs {
        steps.push(MountStep::RemountRootReadOnly);
    }
    Ok(steps)
}

fn normalized(path: &str) -> String {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|part| !part.is_empty() && *part != ".")
        .collect();
    format!("/{}", parts.join("/"))
}

fn depth(path: &str) -> usize {
    normalized(path)
        .split('/')
        .filter(|p| !p.is_empty())
        .count()
}

/// Host volume shares, each mounted once in the guest and bind-mounted into every app that
/// uses it (two apps then see one file system, as on the host).
#[derive(Debug, Default)]
pub struct VolumeShares {
    mounted: Vec<String>,
}

impl VolumeShares {
    /// The guest path of share `tag`, mounting it first if needed.
    fn mount(&mut self, tag: &str, read_only: bool) -> Result<PathBuf, MountError> {
        let path = Path::new(VOLUME_SHARES_DIR).join(tag);
        if self.mounted.iter().any(|done| done == tag) {
            return Ok(path);
        }
        let step = || format!("mount the virtio-fs share {tag} (a host volume)");
        fs::create_dir_all(&path).map_err(step_error(step()))?;
        let flags = if read_only {
            MsFlags::MS_RDONLY
        } else {
            MsFlags::empty()
        };
        nix::mount::mount(Some(tag), &path, Some("virtiofs"), flags, None::<&str>)
            .map_err(|errno| step_error(step())(errno.into()))?;
        crate::mounts::widen_read_ahead(&path);
        self.mounted.push(tag.to_owned());
        Ok(path)
    }
}

/// Bind-mounts `rootfs` onto itself and opens the result: the app root that `apply` fills.
pub fn bind_root(rootfs: &Path) -> Result<AppRoot, MountError> {
    let step = format!("bind-mount the app root {} onto itself", rootfs.display());
    nix::mount::mount(
        Some(rootfs),
        rootfs,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|errno| step_error(step.clone())(errno.into()))?;
    // Opened after the mount, so lookups start on the new mount, not the directory below it.
    AppRoot::open(rootfs).map_err(step_error(step))
}

/// Carries out `steps` inside `root`. `share` is the pod share's mount point.
pub fn apply(
    root: &AppRoot,
    steps: &[MountStep],
    share: &Path,
    shares: &mut VolumeShares,
) -> Result<(), MountError> {
    // /proc is mounted later, in the app's own namespace (appns.rs), when the root may be
    // read-only already: its mount point is made now.
    root.create_dirs(Path::new("/proc"))
        .map_err(step_error("create the mount point /proc"))?;
    for step in steps {
        apply_one(root, step, share, shares)?;
    }
    Ok(())
}

fn apply_one(
    root: &AppRoot,
    step: &MountStep,
    share: &Path,
    shares: &mut VolumeShares,
) -> Result<(), MountError> {
    match step {
        MountStep::FileSystem {
            fstype,
            source,
            target,
            flags,
            options,
        } => {
            let what = format!("mount {fstype} on {target}");
            let target_fd = root
                .create_dirs(Path::new(target))
                .map_err(step_error(what.clone()))?;
            nix::mount::mount(
                Some(*source),
                &fd_path(&target_fd),
                Some(*fstype),
                *flags,
                *options,
            )
            .map_err(|errno| step_error(what)(errno.into()))
        }
        MountStep::DeviceNodes => create_device_nodes(root),
        MountStep::BindFile { source, target } => {
            let what = format!("bind-mount {} on {target}", source.display());
            let target_fd = root
                .create_file(Path::new(target))
                .map_err(step_error(what.clone()))?;
            bind(source, &fd_path(&target_fd)).map_err(step_error(what))
        }
        MountStep::DefaultHosts { content } => {
            if root.exists_no_follow(Path::new("/etc/hosts")) {
                return Ok(());
            }
            root.write_new_file(Path::new("/etc/hosts"), content.as_bytes())
                .map_err(step_error("write a default /etc/hosts"))
        }
        MountStep::Volume(volume) => mount_volume(root, volume, share, shares),
        MountStep::RemountRootReadOnly => {
            remount_read_only(root.path()).map_err(step_error("make the app root read-only"))
        }
    }
}

fn create_device_nodes(root: &AppRoot) -> Result<(), MountError> {
    let dev = root
        .open_path(Path::new("/dev"))
        .map_err(step_error("open the app's /dev"))?;
    for (name, major, minor, mode) in DEVICE_NODES {
        let what = || format!("create /dev/{name}");
        nix::sys::stat::mknodat(
            Some(dev.as_raw_fd()),
            name,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(mode),
            nix::sys::stat::makedev(major, minor),
        )
        .map_err(|errno| step_error(what())(errno.into()))?;
        // mknod applies the umask; the nodes need their exact modes.
        nix::sys::stat::fchmodat(
            Some(dev.as_raw_fd()),
            name,
            Mode::from_bits_truncate(mode),
            FchmodatFlags::FollowSymlink,
        )
        .map_err(|errno| step_error(what())(errno.into()))?;
    }
    for (name, target) in DEVICE_LINKS {
        nix::unistd::symlinkat(target, Some(dev.as_raw_fd()), name)
            .map_err(|errno| step_error(format!("create /dev/{name}"))(errno.into()))?;
    }
    Ok(())
}

fn mount_volume(
    root: &AppRoot,
    volume: &VolumeMount,
    share: &Path,
    shares: &mut VolumeShares,
) -> Result<(), MountError> {
    let source = match &volume.source {
        VolumeSource::HostShare { tag, read_only } => shares.mount(tag, *read_only)?,
        VolumeSource::Empty {
            name,
            mode,
            uid,
            gid,
        } => {
            let dir = manifest::empty_volume_dir(share, name);
            ensure_empty_volume(&dir, *mode, *uid, *gid)
                .map_err(step_error(format!("create the empty volume {name}")))?;
            dir
        }
    };
    let what = format!("mount the volume at {}", volume.target);
    let target_fd = root
        .create_dirs(Path::new(&volume.target))
        .map_err(step_error(what.clone()))?;
    bind(&source, &fd_path(&target_fd)).map_err(step_error(what.clone()))?;
    drop(target_fd);
    if volume.read_only {
        // The mount just made, reached by a fresh lookup (the old descriptor is below it).
        let mounted = root
            .open_path(Path::new(&volume.target))
            .map_err(step_error(what.clone()))?;
        remount_read_only(&fd_path(&mounted)).map_err(step_error(what))?;
    }
    Ok(())
}

/// The host stage1 creates empty volumes' directories; when it has not (an older host, a test
/// pod), guest-init does, with the volume's mode and owner.
fn ensure_empty_volume(dir: &Path, mode: u32, uid: u32, gid: u32) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(mode))?;
    std::os::unix::fs::chown(dir, Some(uid), Some(gid))
}

fn bind(source: &Path, target: &Path) -> io::Result<()> {
    nix::mount::mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(io::Error::from)
}

fn remount_read_only(target: &Path) -> io::Result<()> {
    nix::mount::mount(
        None::<&str>,
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use appc::App;
    use std::collections::BTreeMap;

    fn app(volumes: Vec<VolumeMount>, read_only_root_fs: bool) -> AppSpec {
        AppSpec {
            index: 0,
            name: "web".into(),
            app: App {
                exec: vec!["/bin/sh".into()],
                user: "0".into(),
                group: "0".into(),
                supplementary_gids: vec![],
                event_handlers: vec![],
                working_directory: None,
                environment: vec![],
                isolators: vec![],
                mount_points: vec![],
                ports: vec![],
                user_annotations: BTreeMap::new(),
                user_labels: BTreeMap::new(),
            },
            read_only_root_fs,
            volumes,
        }
    }

    fn empty(target: &str, name: &str) -> VolumeMount {
        VolumeMount {
            target: target.into(),
            source: VolumeSource::Empty {
                name: name.into(),
                mode: 0o755,
                uid: 0,
                gid: 0,
            },
            read_only: false,
        }
    }

    fn targets(steps: &[MountStep]) -> Vec<String> {
        steps
            .iter()
            .map(|step| match step {
                MountStep::FileSystem { target, .. } => target.to_string(),
                MountStep::DeviceNodes => "nodes".into(),
                MountStep::BindFile { target, .. } => format!("bind {target}"),
                MountStep::DefaultHosts { .. } => "default hosts".into(),
                MountStep::Volume(volume) => format!("volume {}", volume.target),
                MountStep::RemountRootReadOnly => "read-only root".into(),
            })
            .collect()
    }

    #[test]
    fn the_os_spec_set_then_dns_then_volumes() {
        let steps = plan(&app(vec![], false), &DnsFiles::default(), "rkt-1234").unwrap();
        assert_eq!(
            targets(&steps),
            [
                "/sys",
                "/dev",
                "nodes",
                "/dev/pts",
                "/dev/shm",
                "default hosts"
            ]
        );
        let Some(MountStep::DefaultHosts { content }) = steps.last() else {
            panic!("no default hosts step");
        };
        assert!(content.starts_with("127.0.0.1\tlocalhost"), "{content}");
        assert!(content.contains("rkt-1234"), "{content}");
        let names: Vec<_> = DEVICE_NODES.iter().map(|node| node.0).collect();
        assert_eq!(
            names,
            ["null", "zero", "full", "random", "urandom", "tty", "console"]
        );
        assert!(DEVICE_LINKS.contains(&("ptmx", "pts/ptmx")));
    }

    #[test]
    fn stage0_dns_files_are_bound_and_read_only_root_comes_last() {
        let dns = DnsFiles {
            hosts: Some("/rkt/share/hosts".into()),
            resolv: Some("/rkt/share/resolv.conf".into()),
        };
        let volumes = vec![
            empty("/data/sub", "sub"),
            empty("/data", "data"),
            empty("/b", "b"),
        ];
        let steps = plan(&app(volumes, true), &dns, "h").unwrap();
        let targets = targets(&steps);
        assert_eq!(
            targets[5..],
            [
                "bind /etc/hosts",
                "bind /etc/resolv.conf",
                "volume /data",
                "volume /b",
                "volume /data/sub",
                "read-only root"
            ]
        );
    }

    #[test]
    fn overlapping_and_root_targets_are_refused() {
        let twice = vec![empty("/data", "a"), empty("/data/", "b")];
        assert!(matches!(
            plan(&app(twice, false), &DnsFiles::default(), "h"),
            Err(MountError::DuplicateTarget { .. })
        ));
        assert!(matches!(
            plan(
                &app(vec![empty("/", "a")], false),
                &DnsFiles::default(),
                "h"
            ),
            Err(MountError::RootTarget)
        ));
    }

    #[test]
    fn stage0_dns_files_are_found_on_the_share() {
        let share = tempfile::tempdir().unwrap();
        assert_eq!(DnsFiles::find(share.path()), DnsFiles::default());
        fs::create_dir_all(share.path().join("stage1/rootfs/etc")).unwrap();
        fs::write(share.path().join(STAGE0_RESOLV), "nameserver 1.1.1.1\n").unwrap();
        let found = DnsFiles::find(share.path());
        assert_eq!(found.hosts, None);
        assert_eq!(found.resolv, Some(share.path().join(STAGE0_RESOLV)));
    }

    #[test]
    fn empty_volume_directories_get_their_mode() {
        let share = tempfile::tempdir().unwrap();
        let dir = share.path().join("rkt/volumes/cache");
        ensure_empty_volume(
            &dir,
            0o1777,
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        )
        .unwrap();
        let mode = fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o1777);
    }
}
