//! What prepare checks in an app's image before a pod directory exists:
//! the program to run is there (and executable), and so is the working
//! directory. The guest would find out too, but only after a VM boot, and
//! could only say "127"; here the user gets a line naming the path.
//!
//! Paths are resolved inside the image's rootfs the way the kernel will
//! inside the app's root: symlinks followed (absolute ones from the image
//! root), `..` never above the root, so an image's symlinks can never make
//! stage0 look at the host's files.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use appc::{App, PodApp};

use super::PodError;

/// The `PATH` apps get when their environment has none (rkt's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Symlinks followed per lookup before giving up (the kernel's limit).
const MAX_SYMLINKS: usize = 40;

/// Resolves absolute `path` inside `root`; `None` if some component does
/// not exist (or symlinks loop).
pub fn resolve_in_root(root: &Path, path: &Path) -> io::Result<Option<PathBuf>> {
    let mut pending: VecDeque<OsString> = components(path);
    let mut resolved: Vec<OsString> = Vec::new();
    let mut hops = 0;
    while let Some(part) = pending.pop_front() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let candidate: PathBuf = std::iter::once(root.as_os_str())
            .chain(resolved.iter().map(OsString::as_os_str))
            .chain(std::iter::once(part.as_os_str()))
            .collect();
        let meta = match fs::symlink_metadata(&candidate) {
            Ok(meta) => meta,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(err) if err.raw_os_error() == Some(libc::ENOTDIR) => return Ok(None),
            Err(err) => return Err(err),
        };
        if !meta.file_type().is_symlink() {
            resolved.push(part);
            continue;
        }
        hops += 1;
        if hops > MAX_SYMLINKS {
            return Ok(None);
        }
        let target = fs::read_link(&candidate)?;
        if target.is_absolute() {
            resolved.clear();
        }
        for (index, component) in components(&target).into_iter().enumerate() {
            pending.insert(index, component);
        }
    }
    Ok(Some(
        std::iter::once(root.as_os_str())
            .chain(resolved.iter().map(OsString::as_os_str))
            .collect(),
    ))
}

/// The normal and `..` components of `path`, in order (`.` and the root
/// dropped).
fn components(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|component| match component {
            Component::Normal(name) => Some(name.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

/// Whether `path` is at or below one of the app's mount targets: a volume
/// will supply it at run time, so the image need not have it.
fn under_a_mount(app: &PodApp, path: &str) -> bool {
    app.mounts
        .iter()
        .any(|mount| Path::new(path).starts_with(&mount.path))
}

/// Checks app `app` against its image's rootfs `rootfs`.
pub fn check_app(app: &PodApp, image_name: &str, rootfs: &Path) -> Result<(), PodError> {
    let Some(section) = &app.app else {
        return Ok(());
    };
    let name = app.name.as_str();
    let io_error = |err: io::Error| PodError::Io {
        context: format!("looking into image {image_name} for app {name}"),
        source: err,
    };
    if let Some(dir) = &section.working_directory {
        if !under_a_mount(app, dir) {
            let found = resolve_in_root(rootfs, Path::new(dir)).map_err(io_error)?;
            if !found.is_some_and(|path| path.is_dir()) {
                return Err(PodError::Invalid(format!(
                    "app {name}: working directory {dir} does not exist in image {image_name}; \
                     fix --working-dir or mount a volume there"
                )));
            }
        }
    }
    let Some(program) = section.exec.first() else {
        return Ok(());
    };
    if program.starts_with('/') {
        if under_a_mount(app, program) {
            return Ok(());
        }
        let found = resolve_in_root(rootfs, Path::new(program)).map_err(io_error)?;
        return match found {
            Some(path) if is_executable_file(&path) => Ok(()),
            Some(_) => Err(PodError::Invalid(format!(
                "app {name}: {program} in image {image_name} is not an executable file; \
                 fix --exec"
            ))),
            None => Err(PodError::Invalid(format!(
                "app {name}: {program} does not exist in image {image_name}; fix --exec"
            ))),
        };
    }
    if program.contains('/') {
        // Relative to the working directory: left to the guest.
        return Ok(());
    }
    let search = search_path(section);
    for dir in search.split(':').filter(|dir| dir.starts_with('/')) {
        if under_a_mount(app, dir) {
            return Ok(());
        }
        let candidate = Path::new(dir).join(program);
        if let Some(path) = resolve_in_root(rootfs, &candidate).map_err(io_error)? {
            if is_executable_file(&path) {
                return Ok(());
            }
        }
    }
    Err(PodError::Invalid(format!(
        "app {name}: {program} is not found in image {image_name} (searched PATH {search}); \
         fix --exec"
    )))
}

fn search_path(section: &App) -> String {
    section
        .environment
        .iter()
        .find(|var| var.name == "PATH")
        .map(|var| var.value.clone())
        .unwrap_or_else(|| DEFAULT_PATH.to_string())
}

fn is_executable_file(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn rootfs() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        fs::create_dir_all(r.join("bin")).unwrap();
        fs::create_dir_all(r.join("usr/local/bin")).unwrap();
        fs::write(r.join("bin/busybox"), b"").unwrap();
        fs::set_permissions(r.join("bin/busybox"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(r.join("bin/data"), b"").unwrap();
        symlink("busybox", r.join("bin/sh")).unwrap();
        symlink("/bin/busybox", r.join("usr/local/bin/abs")).unwrap();
        symlink("../../../../../../etc", r.join("usr/escape")).unwrap();
        symlink("/etc/passwd", r.join("bin/host-passwd")).unwrap();
        symlink("loop", r.join("bin/loop")).unwrap();
        root
    }

    #[test]
    fn resolution_stays_inside_the_root() {
        let root = rootfs();
        let r = root.path();
        let resolve = |p: &str| resolve_in_root(r, Path::new(p)).unwrap();
        assert_eq!(resolve("/bin/sh"), Some(r.join("bin/busybox")));
        assert_eq!(resolve("/usr/local/bin/abs"), Some(r.join("bin/busybox")));
        assert_eq!(resolve("/../../bin/./sh"), Some(r.join("bin/busybox")));
        // An escape attempt lands on the image's own (missing) /etc.
        assert_eq!(resolve("/usr/escape/passwd"), None);
        assert_eq!(resolve("/bin/host-passwd"), None);
        assert_eq!(resolve("/bin/loop"), None);
        assert_eq!(resolve("/bin/data/below"), None);
    }

    fn app(exec: &[&str], working_dir: Option<&str>, mounts: &[&str]) -> PodApp {
        serde_json::from_value(serde_json::json!({
            "name": "a",
            "image": {"id": format!("sha512-{}", "0".repeat(128))},
            "app": {
                "exec": exec, "user": "0", "group": "0",
                "workingDirectory": working_dir,
            },
            "mounts": mounts.iter().map(|p| serde_json::json!({"volume": "v", "path": p})).collect::<Vec<_>>(),
        }))
        .unwrap()
    }

    #[test]
    fn exec_and_working_directory_must_be_in_the_image() {
        let root = rootfs();
        let check = |app: &PodApp| check_app(app, "example.com/img", root.path());
        assert!(check(&app(&["/bin/sh", "-c", "true"], Some("/bin"), &[])).is_ok());
        assert!(check(&app(&["sh"], None, &[])).is_ok());
        assert!(check(&app(&["abs"], None, &[])).is_ok());
        assert!(check(&app(&["./relative"], None, &[])).is_ok());
        for (bad, says) in [
            (app(&["/bin/nope"], None, &[]), "does not exist"),
            (app(&["/bin/data"], None, &[]), "not an executable"),
            (app(&["/bin/host-passwd"], None, &[]), "does not exist"),
            (app(&["nope"], None, &[]), "not found"),
            (
                app(&["/bin/sh"], Some("/srv"), &[]),
                "working directory /srv",
            ),
        ] {
            let err = check(&bad).unwrap_err().to_string();
            assert!(err.contains(says), "{err}");
        }
        // A volume mounted there supplies what the image lacks.
        assert!(check(&app(
            &["/opt/tool/run"],
            Some("/srv/data"),
            &["/opt/tool", "/srv"]
        ))
        .is_ok());
    }
}
