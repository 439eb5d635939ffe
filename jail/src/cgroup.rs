//! A cgroup v2 of one's own: `<root>/<group>/<name>` with memory.max and pids.max, the group
//! directory delegating the memory and pids controllers to it. Created by the parent before the
//! confined process runs anything of its own, removed by the parent after it ended (or by a
//! later clean-up, when the parent was killed).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the unified hierarchy is mounted on every current distribution.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The controllers the limits need.
const CONTROLLERS: [&str; 2] = ["memory", "pids"];

/// What the cgroup limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CgroupLimits {
    /// memory.max, in bytes.
    pub memory_max: u64,
    /// pids.max: threads and processes together.
    pub pids_max: u64,
}

/// Setting the cgroup up failed.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error(
        "{0} is not a cgroup v2 (unified) hierarchy; the kvm stage1 confines each VMM in a cgroup \
         v2 of its own: boot the host with the unified hierarchy (systemd.unified_cgroup_hierarchy=1) \
         or mount it (mount -t cgroup2 none {0})"
    )]
    NotUnified(String),
    #[error(
        "the cgroup v2 hierarchy at {root} does not offer the {controller} controller, which the \
         VMM's limits need (see {root}/cgroup.controllers)"
    )]
    MissingController { root: String, controller: String },
    #[error("{name:?} cannot name a cgroup (one path component, no dots or slashes)")]
    BadName { name: String },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        source: io::Error,
    },
}

/// One cgroup, removed by [`Cgroup::remove`].
#[derive(Debug)]
pub struct Cgroup {
    path: PathBuf,
    limits: CgroupLimits,
}

impl Cgroup {
    /// Creates `<root>/<group>/<name>` with `limits`; `root` must be a cgroup v2 mount.
    pub fn create(
        root: &Path,
        group: &str,
        name: &str,
        limits: CgroupLimits,
    ) -> Result<Cgroup, CgroupError> {
        check_unified(root)?;
        Cgroup::create_unchecked(root, group, name, limits)
    }

    /// [`Cgroup::create`] without checking what `root` is (unit tests use a plain directory).
    pub fn create_unchecked(
        root: &Path,
        group: &str,
        name: &str,
        limits: CgroupLimits,
    ) -> Result<Cgroup, CgroupError> {
        for part in [group, name] {
            check_name(part)?;
        }
        let offered = read(root, "cgroup.controllers")?;
        for controller in CONTROLLERS {
            if !offered.split_whitespace().any(|c| c == controller) {
                return Err(CgroupError::MissingController {
                    root: root.display().to_string(),
                    controller: controller.to_string(),
                });
            }
        }
        delegate(root)?;
        let group_dir = root.join(group);
        make_dir(&group_dir)?;
        delegate(&group_dir)?;
        let path = group_dir.join(name);
        // A cgroup left by a killed run of the same pod holds no process any more.
        remove_dir(&path)?;
        make_dir(&path)?;
        let mut cgroup = Cgroup { path, limits };
        cgroup.set_limits(limits)?;
        Ok(cgroup)
    }

    /// Replaces the limits (e.g. once it is known what the process in it will do).
    pub fn set_limits(&mut self, limits: CgroupLimits) -> Result<(), CgroupError> {
        self.write("memory.max", &limits.memory_max.to_string())?;
        self.write("pids.max", &limits.pids_max.to_string())?;
        self.limits = limits;
        Ok(())
    }

    /// Moves process `pid` (all its threads) into the cgroup.
    pub fn add(&self, pid: u32) -> Result<(), CgroupError> {
        self.write("cgroup.procs", &pid.to_string())
    }

    /// The cgroup's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The limits it was created with.
    pub fn limits(&self) -> CgroupLimits {
        self.limits
    }

    /// How many processes the kernel's out-of-memory killer ended in it for reaching
    /// memory.max (memory.events' `oom_kill`); `None` if that cannot be read.
    pub fn oom_kills(&self) -> Option<u64> {
        let events = std::fs::read_to_string(self.path.join("memory.events")).ok()?;
        oom_kills_in(&events)
    }

    /// Removes the cgroup once its processes are gone (the kernel may take a moment to
    /// notice an exit).
    pub fn remove(self) -> Result<(), CgroupError> {
        wait_empty(&self.path);
        remove_dir(&self.path)
    }

    fn write(&self, file: &'static str, value: &str) -> Result<(), CgroupError> {
        let path = self.path.join(file);
        write_file(&path, value).map_err(io_err("writing", &path))
    }
}

/// Removes `<root>/<group>/<name>` if it exists (the clean-up after a killed parent), first
/// killing whatever still runs in it (`cgroup.kill`) and waiting until it is empty: a killed
/// VMM with a large guest takes a moment to tear its memory down.
pub fn remove_stale(root: &Path, group: &str, name: &str) -> Result<(), CgroupError> {
    check_name(group)?;
    check_name(name)?;
    let path = root.join(group).join(name);
    if !path.exists() {
        return Ok(());
    }
    let kill = path.join("cgroup.kill");
    if kill.exists() {
        write_file(&kill, "1").map_err(io_err("writing", &kill))?;
    }
    wait_empty(&path);
    remove_dir(&path)
}

/// Waits (at most [`EMPTY_WAIT`]) until `cgroup.events` says no process is left.
fn wait_empty(path: &Path) {
    let events = path.join("cgroup.events");
    let started = std::time::Instant::now();
    while started.elapsed() < EMPTY_WAIT {
        match fs::read_to_string(&events) {
            Ok(text) if text.lines().any(|l| l.trim() == "populated 1") => {
                std::thread::sleep(Duration::from_millis(20));
            }
            _ => return,
        }
    }
}

/// How long a clean-up waits for the processes of a cgroup to be gone.
const EMPTY_WAIT: Duration = Duration::from_secs(20);

fn check_unified(root: &Path) -> Result<(), CgroupError> {
    let fs = nix::sys::statfs::statfs(root).map_err(|e| CgroupError::Io {
        what: "checking",
        path: root.display().to_string(),
        source: e.into(),
    })?;
    if fs.filesystem_type() != nix::sys::statfs::CGROUP2_SUPER_MAGIC {
        return Err(CgroupError::NotUnified(root.display().to_string()));
    }
    Ok(())
}

fn check_name(name: &str) -> Result<(), CgroupError> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(CgroupError::BadName {
            name: name.to_string(),
        })
    }
}

/// Lets the children of `dir` use the memory and pids controllers.
fn delegate(dir: &Path) -> Result<(), CgroupError> {
    let enabled = read(dir, "cgroup.subtree_control")?;
    let missing: Vec<String> = CONTROLLERS
        .iter()
        .filter(|c| !enabled.split_whitespace().any(|e| e == **c))
        .map(|c| format!("+{c}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let path = dir.join("cgroup.subtree_control");
    write_file(&path, &missing.join(" ")).map_err(io_err("enabling controllers in", &path))
}

fn read(dir: &Path, file: &str) -> Result<String, CgroupError> {
    let path = dir.join(file);
    match fs::read_to_string(&path) {
        Ok(text) => Ok(text),
        // A fresh directory in a plain file system (unit tests) has no such file yet.
        Err(err) if err.kind() == io::ErrorKind::NotFound && file != "cgroup.controllers" => {
            Ok(String::new())
        }
        Err(err) => Err(io_err("reading", &path)(err)),
    }
}

fn make_dir(path: &Path) -> Result<(), CgroupError> {
    match fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(err) => Err(io_err("creating", path)(err)),
    }
}

/// The `oom_kill` count of a memory.events file's text.
fn oom_kills_in(events: &str) -> Option<u64> {
    events
        .lines()
        .find_map(|line| line.strip_prefix("oom_kill "))
        .and_then(|count| count.trim().parse().ok())
}

fn remove_dir(path: &Path) -> Result<(), CgroupError> {
    for attempt in 0.. {
        match fs::remove_dir(path) {
            Ok(()) => return Ok(()),
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(err) if err.raw_os_error() == Some(libc::EBUSY) && attempt < 50 => {
                std::thread::sleep(Duration::from_millis(10));
            }
            // A plain directory (unit tests) holds the files we wrote.
            Err(err) if err.raw_os_error() == Some(libc::ENOTEMPTY) && !is_cgroupfs(path) => {
                return fs::remove_dir_all(path).map_err(io_err("removing", path));
            }
            Err(err) => return Err(io_err("removing", path)(err)),
        }
    }
    Ok(())
}

fn is_cgroupfs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|fs| fs.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

/// One write(2) of the whole value: cgroup files take a value per write.
fn write_file(path: &Path, value: &str) -> io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    file.write_all(value.as_bytes())
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CgroupError + 'a {
    move |source| CgroupError::Io {
        what,
        path: path.display().to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oom_kill_count_is_read_from_memory_events() {
        let events = "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(oom_kills_in(events), Some(1));
        // oom_group_kill is not oom_kill.
        assert_eq!(oom_kills_in("oom_group_kill 3\n"), None);
        assert_eq!(oom_kills_in("oom_kill x\n"), None);
    }

    const LIMITS: CgroupLimits = CgroupLimits {
        memory_max: 256 << 20,
        pids_max: 40,
    };

    #[test]
    fn creates_the_group_with_its_limits_and_delegation() {
        let root = tempfile::tempdir().unwrap();
        fs::write(
            root.path().join("cgroup.controllers"),
            "cpu io memory pids\n",
        )
        .unwrap();
        let cgroup = Cgroup::create_unchecked(root.path(), "rkt-kvm", "pod-1", LIMITS).unwrap();
        assert_eq!(cgroup.path(), root.path().join("rkt-kvm/pod-1"));
        let read = |p: &str| fs::read_to_string(root.path().join(p)).unwrap();
        assert_eq!(read("cgroup.subtree_control"), "+memory +pids");
        assert_eq!(read("rkt-kvm/cgroup.subtree_control"), "+memory +pids");
        assert_eq!(read("rkt-kvm/pod-1/memory.max"), (256u64 << 20).to_string());
        assert_eq!(read("rkt-kvm/pod-1/pids.max"), "40");
        cgroup.add(1234).unwrap();
        assert_eq!(read("rkt-kvm/pod-1/cgroup.procs"), "1234");
        cgroup.remove().unwrap();
        assert!(!root.path().join("rkt-kvm/pod-1").exists());
    }

    #[test]
    fn refuses_bad_names_and_missing_controllers() {
        let root = tempfile::tempdir().unwrap();
        fs::write(root.path().join("cgroup.controllers"), "cpu memory\n").unwrap();
        let err = Cgroup::create_unchecked(root.path(), "rkt-kvm", "p", LIMITS).unwrap_err();
        assert!(err.to_string().contains("pids controller"), "{err}");
        for bad in ["..", "a/b", "", "."] {
            let err = Cgroup::create_unchecked(root.path(), "rkt-kvm", bad, LIMITS).unwrap_err();
            assert!(matches!(err, CgroupError::BadName { .. }), "{bad}: {err}");
        }
        let err = Cgroup::create(root.path(), "rkt-kvm", "p", LIMITS).unwrap_err();
        assert!(err.to_string().contains("not a cgroup v2"), "{err}");
    }
}
