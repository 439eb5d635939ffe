//! Shared helpers for the end-to-end tests: where the built artefacts are, and running a binary
//! with a time limit while capturing its output.
//!
//! The tests use what `tools/setup` built (release binaries, the guest kernel and initramfs under
//! `target/guest/`); they never build or fake anything themselves.

pub mod direct_cni;
pub mod hang_report;
pub mod pod_net;
pub mod registry;

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The repository root (this crate lives in `tests/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent directory")
        .to_path_buf()
}

/// A built artefact under the repository root; panics with the fix when it is missing, so a
/// test never passes on an unbuilt tree.
pub fn artefact(relative: &str) -> PathBuf {
    let path = repo_root().join(relative);
    assert!(
        path.exists(),
        "{} is missing: run tools/setup first",
        path.display()
    );
    path
}

pub fn rkt_vmm() -> PathBuf {
    artefact("target/release/rkt-vmm")
}

pub fn vmlinux() -> PathBuf {
    artefact("target/guest/vmlinux")
}

pub fn bzimage() -> PathBuf {
    artefact("target/guest/bzImage")
}

/// guest-init plus busybox (with applet links), so a test can run shell commands in the guest.
pub fn busybox_initramfs() -> PathBuf {
    artefact("target/guest/initramfs-busybox.cpio")
}

/// What a finished (or killed) child left behind.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// The exit code; panics (with the output) if the process died by a signal.
    pub fn code(&self) -> i32 {
        match self.status.code() {
            Some(code) => code,
            None => panic!("process died by a signal: {:?}\n{}", self.status, self),
        }
    }
}

impl std::fmt::Display for Finished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "--- status: {:?}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `command` to completion with stdin closed, capturing stdout and stderr in files (so a
/// chatty child can never block on a full pipe). Kills it and fails the test after `limit`.
pub fn run_with_limit(command: &mut Command, limit: Duration) -> Finished {
    let dir = tempfile::tempdir().expect("temp dir for captured output");
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    let out = fs::File::create(&out_path).expect("stdout capture file");
    let err = fs::File::create(&err_path).expect("stderr capture file");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            break status;
        }
        if started.elapsed() > limit {
            let report = hang_report::describe(command, child.id());
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{command:?} did not finish within {limit:?}; output so far:\n{}\n{}\n{report}",
                read_lossy(&out_path),
                read_lossy(&err_path)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Finished {
        status,
        stdout: read_lossy(&out_path),
        stderr: read_lossy(&err_path),
    }
}

fn read_lossy(path: &Path) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut file) = fs::File::open(path) {
        let _ = file.read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// How long one guest boot may take inside the emulated KVM host before a test calls it hung.
/// Generous on purpose: this is a hang detector, not a timing assertion.
pub const BOOT_LIMIT: Duration = Duration::from_secs(120);

/// The kernel command line the tests use (the kernel honours only double quotes, and strips the
/// outer pair: `/bin/sh -c "echo a; exit 3"` reaches guest-init as three words): serial console, i8042 reset on reboot, reboot at once
/// on panic, quiet; `command` is handed to guest-init after `--`.
pub fn cmdline(command: &str) -> String {
    format!("console=ttyS0 reboot=k panic=-1 quiet -- {command}")
}

/// Boots `kernel` with the busybox initramfs and runs `command` (a kernel command-line tail, e.g.
/// `/bin/sh -c "echo hi"`) inside, with `cpus` vCPUs.
pub fn boot(kernel: &Path, cpus: u32, command: &str) -> Finished {
    boot_with_cmdline(kernel, cpus, &cmdline(command))
}

pub fn boot_with_cmdline(kernel: &Path, cpus: u32, cmdline: &str) -> Finished {
    boot_with_flags(kernel, cpus, cmdline, &[])
}

/// Like [`boot_with_cmdline`], with extra `rkt-vmm` flags (e.g. `--no-rng`).
pub fn boot_with_flags(kernel: &Path, cpus: u32, cmdline: &str, flags: &[&str]) -> Finished {
    run_with_limit(
        Command::new(rkt_vmm())
            .args(flags)
            .arg("--kernel")
            .arg(kernel)
            .arg("--initrd")
            .arg(busybox_initramfs())
            .arg("--cmdline")
            .arg(cmdline)
            .arg("--mem")
            .arg("128")
            .arg("--cpus")
            .arg(cpus.to_string()),
        BOOT_LIMIT,
    )
}

/// A static guest tool built by `tools/setup` (e.g. `rkt-fs-probe`, `rkt-vsock-probe`).
pub fn guest_tool(name: &str) -> PathBuf {
    artefact(&format!("target/x86_64-unknown-linux-gnu/release/{name}"))
}

/// A fresh ext4 file system (a sparse image file, loop-mounted on a temporary directory),
/// unmounted and removed when dropped: shares live on it so that every test starts from an
/// empty, ordinary host file system and leaves no trace. ext4 rather than tmpfs because tmpfs
/// keeps no `user.*` extended attributes before Linux 6.6, and the emulated KVM host's root is
/// an overlay.
pub struct ScratchFs {
    mount_point: tempfile::TempDir,
    _image_dir: tempfile::TempDir,
}

impl ScratchFs {
    /// Creates and mounts a 2 GiB (sparse) file system; the tests run as root, as the VMM does.
    pub fn new() -> ScratchFs {
        ScratchFs::with(&[], "loop")
    }

    /// The same with project quotas kept and enforced (for `rkt --disk-limit`).
    pub fn with_project_quotas() -> ScratchFs {
        ScratchFs::with(&["-O", "quota,project"], "loop,prjquota")
    }

    /// mkfs.ext4 with `features` added, mounted with `options`.
    fn with(features: &[&str], options: &str) -> ScratchFs {
        let image_dir = tempfile::tempdir().expect("temp dir for a file system image");
        let image = image_dir.path().join("fs.img");
        fs::File::create(&image)
            .and_then(|f| f.set_len(2 << 30))
            .expect("create a sparse image");
        let mkfs = Command::new("mkfs.ext4")
            .args([
                "-q",
                "-F",
                "-O",
                "^has_journal",
                "-E",
                "lazy_itable_init=1,nodiscard",
            ])
            .args(features)
            .arg(&image)
            .output()
            .expect("run mkfs.ext4 (e2fsprogs)");
        assert!(
            mkfs.status.success(),
            "mkfs.ext4 failed: {}",
            String::from_utf8_lossy(&mkfs.stderr)
        );
        let mount_point = tempfile::tempdir().expect("temp dir for a mount point");
        // Tests run in parallel threads, and two `mount -o loop` at once can race for the same
        // free loop device (the loser fails, EPERM or EBUSY): one mount at a time, and a retry
        // for a device that another process took between lookup and use.
        static LOOP_SETUP: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one_at_a_time = LOOP_SETUP.lock().unwrap_or_else(|e| e.into_inner());
        let mut attempts = 0;
        let mount = loop {
            let mount = Command::new("mount")
                .args(["-t", "ext4", "-o", options])
                .arg(&image)
                .arg(mount_point.path())
                .output()
                .expect("run mount");
            attempts += 1;
            if mount.status.success() || attempts == 5 {
                break mount;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        assert!(
            mount.status.success(),
            "mounting an ext4 image failed {attempts} times (the tests must run as root): {}",
            String::from_utf8_lossy(&mount.stderr)
        );
        ScratchFs {
            mount_point,
            _image_dir: image_dir,
        }
    }

    pub fn path(&self) -> &Path {
        self.mount_point.path()
    }
}

impl Default for ScratchFs {
    fn default() -> Self {
        ScratchFs::new()
    }
}

impl Drop for ScratchFs {
    fn drop(&mut self) {
        // Unmounting also frees the loop device (mount -o loop sets autoclear).
        let _ = Command::new("umount").arg(self.mount_point.path()).status();
    }
}

/// Copies the host's static busybox into `bin` (created if missing) with a link per applet.
pub fn install_busybox(bin: &Path) {
    fs::create_dir_all(bin).expect("create bin/");
    fs::copy("/bin/busybox", bin.join("busybox")).expect("copy /bin/busybox (busybox-static)");
    let list = Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .expect("busybox --list");
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" && !applet.is_empty() {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).expect("applet link");
        }
    }
}

/// The smallest, median and largest of `values` (sorted in place; not empty), as the
/// benchmarks report them.
pub fn min_median_max(values: &mut [f64]) -> (f64, f64, f64) {
    values.sort_by(|a, b| a.total_cmp(b));
    (
        values[0],
        values[values.len() / 2],
        values[values.len() - 1],
    )
}

/// Fills `root` with a minimal guest root: static busybox with a link per applet, and the
/// static guest tools, so a command run with `rkt.root=` pointing here has a shell.
pub fn populate_guest_root(root: &Path) {
    let bin = root.join("bin");
    install_busybox(&bin);
    for tool in ["rkt-fs-probe", "rkt-vsock-probe"] {
        fs::copy(guest_tool(tool), bin.join(tool)).expect("copy a guest tool");
    }
    for dir in ["proc", "sys", "dev", "tmp", "run"] {
        fs::create_dir_all(root.join(dir)).expect("create a mount point");
    }
}

/// The kernel command line for a command run inside the share tagged `tag`, in its `root`
/// directory, with the exit status written to the share's file `status`.
pub fn share_cmdline(tag: &str, root: &str, command: &str) -> String {
    format!(
        "console=ttyS0 reboot=k panic=-1 quiet rkt.share={tag} rkt.root={root} rkt.status=status -- {command}"
    )
}

/// Boots the default kernel with the busybox initramfs, `mem_mib` of RAM, and extra `rkt-vmm`
/// flags (shares, vsock).
pub fn boot_vm(cmdline: &str, mem_mib: u32, flags: &[&std::ffi::OsStr]) -> Finished {
    boot_vm_with_limit(cmdline, mem_mib, flags, BOOT_LIMIT)
}

/// [`boot_vm`] with another time limit (benchmarks move hundreds of MiB through the emulation).
pub fn boot_vm_with_limit(
    cmdline: &str,
    mem_mib: u32,
    flags: &[&std::ffi::OsStr],
    limit: Duration,
) -> Finished {
    run_with_limit(
        Command::new(rkt_vmm())
            .args(flags)
            .arg("--kernel")
            .arg(vmlinux())
            .arg("--initrd")
            .arg(busybox_initramfs())
            .arg("--cmdline")
            .arg(cmdline)
            .arg("--mem")
            .arg(mem_mib.to_string()),
        limit,
    )
}

// ---- Pods through the real `rkt` binary (tests/vm_pods.rs) ----

/// Where `rkt` and `stage1-kvm.aci` are: `target/release/` as tools/setup installs them, or
/// `$RKT_E2E_BIN_DIR` (a helper's own build) when set.
pub fn rkt_bin_dir() -> PathBuf {
    match std::env::var_os("RKT_E2E_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => repo_root().join("target/release"),
    }
}

/// The `rkt` binary; its directory also holds the default stage1 image.
pub fn rkt_binary() -> PathBuf {
    let path = rkt_bin_dir().join("rkt");
    assert!(
        path.exists(),
        "{} is missing: run tools/setup first",
        path.display()
    );
    let stage1 = rkt_bin_dir().join("stage1-kvm.aci");
    assert!(
        stage1.exists(),
        "{} is missing: run tools/setup first",
        stage1.display()
    );
    path
}

/// How long one `rkt run` (prepare, boot, apps, exit) may take inside the emulated KVM host.
pub const POD_LIMIT: Duration = Duration::from_secs(180);

/// Fills `root` with an image root for pod tests: static busybox with a link per applet,
/// `/etc/passwd` and `/etc/group` with root and `user1` (1000:1000, group `grp1`, home
/// `/home/user1`), `/tmp` (1777) and the usual mount points.
pub fn busybox_image_root(root: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let bin = root.join("bin");
    install_busybox(&bin);
    let etc = root.join("etc");
    fs::create_dir_all(&etc).expect("create etc/");
    fs::write(
        etc.join("passwd"),
        "root:x:0:0:root:/root:/bin/sh\nuser1:x:1000:1000:user one:/home/user1:/bin/sh\n",
    )
    .expect("write etc/passwd");
    fs::write(
        etc.join("group"),
        "root:x:0:\ngrp1:x:1000:\nextra:x:2000:\n",
    )
    .expect("write etc/group");
    for dir in ["proc", "sys", "dev", "tmp", "run", "root", "home/user1"] {
        fs::create_dir_all(root.join(dir)).expect("create an image directory");
    }
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).expect("chmod tmp");
    std::os::unix::fs::chown(root.join("home/user1"), Some(1000), Some(1000))
        .expect("chown home/user1 (the tests run as root)");
}

/// Writes an ACI named `name` (labels version 1, linux/amd64) whose rootfs is
/// [`busybox_image_root`] and whose app runs `exec` as root; returns its path.
pub fn busybox_aci(dir: &Path, name: &str, exec: &[&str]) -> PathBuf {
    let exec: Vec<String> = exec.iter().map(|w| format!("{w:?}")).collect();
    busybox_aci_with_app(
        dir,
        name,
        &format!(r#"{{"exec":[{}],"user":"0","group":"0"}}"#, exec.join(",")),
    )
}

/// Like [`busybox_aci`], with the manifest's `app` section given whole as JSON (event
/// handlers, isolators, mount points...).
pub fn busybox_aci_with_app(dir: &Path, name: &str, app_json: &str) -> PathBuf {
    let build = dir.join(format!("build-{}", name.replace('/', "_")));
    busybox_image_root(&build.join("rootfs"));
    let manifest = format!(
        r#"{{"acKind":"ImageManifest","acVersion":"0.8.11","name":"{name}",
  "labels":[{{"name":"version","value":"1"}},{{"name":"os","value":"linux"}},{{"name":"arch","value":"amd64"}}],
  "app":{app_json}}}"#
    );
    fs::write(build.join("manifest"), manifest).expect("write the manifest");
    let aci = dir.join(format!("{}.aci", name.replace('/', "_")));
    let tar = Command::new("tar")
        .arg("-C")
        .arg(&build)
        .arg("-cf")
        .arg(&aci)
        .args(["manifest", "rootfs"])
        .output()
        .expect("run tar");
    assert!(
        tar.status.success(),
        "tar: {}",
        String::from_utf8_lossy(&tar.stderr)
    );
    let _ = fs::remove_dir_all(&build);
    aci
}

/// A throwaway rkt data directory (`--dir`) and the commands run in it.
pub struct RktWorld {
    pub root: tempfile::TempDir,
}

impl RktWorld {
    /// A world under `TMPDIR` (in the emulated KVM host, its scratch tmpfs: tests/kvm-host).
    pub fn new() -> RktWorld {
        RktWorld::in_dir(&std::env::temp_dir())
    }

    /// A world whose files (data dir included) live under `parent`, e.g. a [`ScratchFs`]:
    /// the emulated KVM host's /tmp is an overlay, on which rkt cannot mount overlays and
    /// falls back to copying images.
    pub fn in_dir(parent: &Path) -> RktWorld {
        RktWorld {
            root: tempfile::Builder::new()
                .prefix("rkt-e2e")
                .tempdir_in(parent)
                .expect("temp dir"),
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    /// `rkt --dir=... --insecure-options=image ARGS`, not started yet.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(rkt_binary());
        command.args(self.rkt_args(args));
        command
    }

    /// The same `rkt` command run in the network namespace `/run/netns/NETNS` (a test's
    /// stand-in for the host, where `--net=default` makes the pods' host-side links).
    pub fn command_in_netns(&self, netns: &str, args: &[&str]) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net=/run/netns/{netns}"))
            .arg(rkt_binary())
            .args(self.rkt_args(args));
        command
    }

    /// `--dir=... --local-config=... --insecure-options=image ARGS`: what every test's `rkt`
    /// is given.
    fn rkt_args(&self, args: &[&str]) -> Vec<String> {
        let mut all = vec![
            format!("--dir={}", self.data_dir().display()),
            format!(
                "--local-config={}",
                self.root.path().join("etc-rkt").display()
            ),
            "--insecure-options=image".to_string(),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        all
    }

    /// `rkt --dir=... --insecure-options=image ARGS` to completion.
    pub fn rkt(&self, args: &[&str]) -> Finished {
        run_with_limit(&mut self.command(args), POD_LIMIT)
    }

    /// Like [`RktWorld::rkt`], asserting exit status 0; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let run = self.rkt(args);
        assert_eq!(run.code(), 0, "rkt {args:?}: {run}");
        run.stdout
    }

    /// The pod directories under `pods/<state>/`.
    pub fn pods_in(&self, state: &str) -> Vec<String> {
        let mut found: Vec<String> = fs::read_dir(self.data_dir().join("pods").join(state))
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        found.sort();
        found
    }
}

impl Default for RktWorld {
    fn default() -> Self {
        RktWorld::new()
    }
}

/// Mount points at or under `path` (from /proc/self/mountinfo).
pub fn mounts_under(path: &Path) -> Vec<String> {
    let path = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|point| Path::new(point).starts_with(&path))
        .map(str::to_string)
        .collect()
}

/// Every running process: its PID and its `/proc/PID` directory.
pub fn processes() -> Vec<(u32, PathBuf)> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((pid, entry.path()))
        })
        .collect()
}

/// Processes whose executable or working directory is under `path`.
pub fn processes_under(path: &Path) -> Vec<String> {
    let path = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mut found = Vec::new();
    for (pid, dir) in processes() {
        for link in ["exe", "cwd"] {
            if let Ok(target) = fs::read_link(dir.join(link)) {
                if target.starts_with(&path) {
                    found.push(format!("{pid} ({link} {})", target.display()));
                }
            }
        }
    }
    found
}

// ---- Pod state after a run: UUID, `rkt status`, and the clean-up check ----

/// The UUID `--uuid-file-save` wrote.
pub fn uuid_from(file: &Path) -> String {
    let uuid = fs::read_to_string(file).expect("read the saved UUID");
    assert_eq!(uuid.len(), 36, "{uuid:?}");
    uuid
}

/// `rkt status UUID` as key -> value pairs, in order.
pub fn pod_status(world: &RktWorld, uuid: &str) -> Vec<(String, String)> {
    world
        .ok(&["status", uuid])
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// One key of [`pod_status`].
pub fn status_value<'a>(status: &'a [(String, String)], key: &str) -> Option<&'a str> {
    status
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

// ---- Pods in the background (tests/vm_pod_control.rs, tests/vm_jail.rs) ----

/// Starts `rkt run ARGS` in the background (output to files in the world) and waits for its
/// UUID and for `rkt status --wait-ready` to say the guest answers.
pub fn start_pod(world: &RktWorld, args: &[&str]) -> (std::process::Child, String) {
    let uuid_file = world.root.path().join("uuid");
    let _ = fs::remove_file(&uuid_file);
    let save = format!("--uuid-file-save={}", uuid_file.display());
    let mut all = vec!["run", save.as_str()];
    all.extend_from_slice(args);
    let child = world
        .command(&all)
        .stdin(Stdio::null())
        .stdout(fs::File::create(world.root.path().join("run.out")).unwrap())
        .stderr(fs::File::create(world.root.path().join("run.err")).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut child = child;
    let uuid = loop {
        assert!(started.elapsed() < POD_LIMIT, "no UUID saved");
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "rkt run ended ({status}) before it saved a UUID\n{}",
                run_output(world)
            );
        }
        if let Ok(uuid) = fs::read_to_string(&uuid_file) {
            if uuid.len() == 36 {
                break uuid;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let ready = world.rkt(&["status", "--wait-ready=150s", &uuid]);
    assert_eq!(
        ready.code(),
        0,
        "status --wait-ready: {ready}\n{}",
        run_output(world)
    );
    let st = pod_status(world, &uuid);
    assert_eq!(status_value(&st, "state"), Some("running"), "{st:?}");
    let link = world
        .data_dir()
        .join("pods/run")
        .join(&uuid)
        .join("stage1/rootfs/rkt/supervisor-status");
    assert_eq!(fs::read_link(&link).unwrap(), Path::new("ready"));
    (child, uuid)
}

pub fn run_output(world: &RktWorld) -> String {
    let read = |name: &str| fs::read_to_string(world.root.path().join(name)).unwrap_or_default();
    format!(
        "--- rkt run stdout:\n{}\n--- rkt run stderr:\n{}",
        read("run.out"),
        read("run.err")
    )
}

/// Runs `rkt gc` (twice: mark, then sweep with no grace) and checks that no pod directory,
/// mount, process or stage1 socket directory is left of the world's pods.
pub fn assert_all_cleaned(world: &RktWorld) {
    let uuids: Vec<String> = ["run", "exited-garbage"]
        .iter()
        .flat_map(|state| world.pods_in(state))
        .collect();
    world.ok(&["gc", "--grace-period=0s"]);
    world.ok(&["gc", "--grace-period=0s"]);
    for state in ["prepare", "prepared", "run", "exited-garbage", "garbage"] {
        assert!(world.pods_in(state).is_empty(), "pods left in {state}/");
    }
    let data = world.data_dir();
    assert_eq!(mounts_under(&data), Vec::<String>::new(), "mounts left");
    assert_eq!(
        processes_under(&data),
        Vec::<String>::new(),
        "processes left"
    );
    for uuid in uuids {
        let socket_dir = Path::new("/run/rkt-kvm").join(&uuid);
        assert!(!socket_dir.exists(), "{} left", socket_dir.display());
        let cgroup = Path::new("/sys/fs/cgroup/rkt-kvm").join(&uuid);
        assert!(!cgroup.exists(), "{} left", cgroup.display());
    }
}

// ---- Docker and OCI images built from the busybox image root (tests/vm_pods_more.rs) ----

/// Runs `command` to completion with an empty stdin: its stdout, or an error naming the
/// command, its status and what it printed (the benchmarks' set-up and clean-up steps).
pub fn run_quiet(command: &mut Command) -> Result<String, String> {
    let out = command
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot start {command:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{command:?}: {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `sha256:<hex>` of a file (coreutils' sha256sum: the tests add no hashing crate).
pub fn sha256_digest(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("run sha256sum");
    assert!(out.status.success(), "sha256sum {}", path.display());
    let text = String::from_utf8_lossy(&out.stdout);
    format!(
        "sha256:{}",
        text.split_whitespace().next().unwrap_or_default()
    )
}

/// A one-layer image of [`busybox_image_root`]: writes `layer.tar` and the image config
/// (`config_section` is the JSON of the config's `config` object: Env, User, WorkingDir,
/// Entrypoint, Cmd...) under `build`; returns (layer path, config path).
fn busybox_layer_and_config(build: &Path, config_section: &str) -> (PathBuf, PathBuf) {
    let rootfs = build.join("rootfs");
    busybox_image_root(&rootfs);
    let layer = build.join("layer.tar");
    let tar = Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&layer)
        .arg(".")
        .output()
        .expect("run tar");
    assert!(
        tar.status.success(),
        "tar: {}",
        String::from_utf8_lossy(&tar.stderr)
    );
    let config = build.join("config.json");
    fs::write(
        &config,
        format!(
            r#"{{"architecture":"amd64","os":"linux","created":"2026-01-01T00:00:00Z",
  "config":{config_section},
  "rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
            sha256_digest(&layer)
        ),
    )
    .expect("write the image config");
    (layer, config)
}

/// A `docker save` archive `<dir>/<file_name>.tar` of a busybox image tagged `repo_tag`;
/// returns the `docker-archive:` image string for rkt.
pub fn busybox_docker_archive(dir: &Path, file_name: &str, repo_tag: &str, config: &str) -> String {
    let build = dir.join(format!("build-{file_name}"));
    let (layer, config) = busybox_layer_and_config(&build, config);
    let archive_dir = build.join("archive");
    fs::create_dir_all(archive_dir.join("l1")).expect("create the archive tree");
    fs::rename(&layer, archive_dir.join("l1/layer.tar")).expect("move the layer");
    fs::rename(&config, archive_dir.join("config.json")).expect("move the config");
    fs::write(
        archive_dir.join("manifest.json"),
        format!(
            r#"[{{"Config":"config.json","RepoTags":["{repo_tag}"],"Layers":["l1/layer.tar"]}}]"#
        ),
    )
    .expect("write manifest.json");
    let archive = dir.join(format!("{file_name}.tar"));
    let tar = Command::new("tar")
        .arg("-C")
        .arg(&archive_dir)
        .arg("-cf")
        .arg(&archive)
        .args(["manifest.json", "config.json", "l1"])
        .output()
        .expect("run tar");
    assert!(
        tar.status.success(),
        "tar: {}",
        String::from_utf8_lossy(&tar.stderr)
    );
    let _ = fs::remove_dir_all(&build);
    format!("docker-archive:{}", archive.display())
}

/// An OCI image layout `<dir>/<name>/` holding a busybox image under the reference `tag`;
/// returns the `oci:` image string for rkt.
pub fn busybox_oci_layout(dir: &Path, name: &str, tag: &str, config: &str) -> String {
    let build = dir.join(format!("build-{name}"));
    let (layer, config) = busybox_layer_and_config(&build, config);
    let layout = dir.join(name);
    let blobs = layout.join("blobs/sha256");
    fs::create_dir_all(&blobs).expect("create blobs/sha256");
    let size = |path: &Path| fs::metadata(path).expect("blob size").len();
    let manifest = build.join("manifest.json");
    fs::write(
        &manifest,
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
  "config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},
  "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":{}}}]}}"#,
            sha256_digest(&config),
            size(&config),
            sha256_digest(&layer),
            size(&layer)
        ),
    )
    .expect("write the manifest");
    let manifest_digest = sha256_digest(&manifest);
    let manifest_size = size(&manifest);
    for blob in [&layer, &config, &manifest] {
        let digest = sha256_digest(blob);
        fs::rename(blob, blobs.join(&digest["sha256:".len()..])).expect("move a blob");
    }
    fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("write oci-layout");
    fs::write(
        layout.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json",
  "digest":"{manifest_digest}","size":{manifest_size},"annotations":{{"org.opencontainers.image.ref.name":"{tag}"}}}}]}}"#
        ),
    )
    .expect("write index.json");
    let _ = fs::remove_dir_all(&build);
    format!("oci:{}:{tag}", layout.display())
}

/// The last lines of every pod's guest console under the world's data dir, for a failed
/// assertion's message (the console stays in the pod until gc).
pub fn pod_consoles(world: &RktWorld) -> String {
    console_tails(&world.data_dir(), &["run", "exited-garbage"], 40)
}

/// The last `lines` lines of the guest console of every pod of `data` in the pod states
/// `states` (`pods/<state>/<uuid>/stage1-kvm/console.log`), each under a `---` header.
pub fn console_tails(data: &Path, states: &[&str], lines: usize) -> String {
    let mut out = String::new();
    for state in states {
        let Ok(pods) = fs::read_dir(data.join("pods").join(state)) else {
            continue;
        };
        let mut pods: Vec<PathBuf> = pods.flatten().map(|pod| pod.path()).collect();
        pods.sort();
        for pod in pods {
            let path = pod.join("stage1-kvm/console.log");
            let Ok(bytes) = fs::read(&path) else {
                continue;
            };
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            let tail = &all[all.len().saturating_sub(lines)..];
            out.push_str(&format!("--- {}:\n{}\n", path.display(), tail.join("\n")));
        }
    }
    out
}

// ---- What pods leave on the machine (tests/vm_parallel_pods.rs, bench-parallel) ----

/// Every state directory a pod can be in under `DATA/pods/` (docs/pods.md).
pub const POD_STATES: [&str; 6] = [
    "embryo",
    "prepare",
    "prepared",
    "run",
    "exited-garbage",
    "garbage",
];

/// Everything the pods of the data directory `data` may have left on this machine, one
/// description per item (empty: nothing left): pod directories in any state, mounts and
/// processes under `data`, processes of the engine (`rkt`, `stage1-kvm`, `rkt-vmm`) or of the
/// CNI plugins anywhere, pod network namespaces (`/run/netns/rkt-UUID`, which hold the taps),
/// stage1 run directories (`/run/rkt-kvm/UUID`: sockets, jail) and VMM cgroups, CNI leases,
/// and, in the network namespace `host_netns` (a name under /run/netns, or the caller's own
/// when None) where the pods' networks were made, host-side veths/taps and CNI iptables rules.
///
/// Machine-wide on purpose (a leak need not carry the pod's UUID or live under `data`), so it
/// is only meaningful where no other pods run at the same time: one emulated KVM host per VM
/// test file, with its pods' checks one at a time.
pub fn pod_leftovers(data: &Path, host_netns: Option<&str>) -> Vec<String> {
    let mut left = Vec::new();
    for state in POD_STATES {
        for entry in fs::read_dir(data.join("pods").join(state))
            .into_iter()
            .flatten()
            .flatten()
        {
            left.push(format!(
                "pod directory pods/{state}/{}",
                entry.file_name().to_string_lossy()
            ));
        }
    }
    left.extend(mounts_under(data).into_iter().map(|m| format!("mount {m}")));
    left.extend(
        processes_under(data)
            .into_iter()
            .map(|p| format!("process {p}")),
    );
    left.extend(
        processes_under(Path::new("/usr/lib/cni"))
            .into_iter()
            .map(|p| format!("CNI plugin process {p}")),
    );
    left.extend(
        engine_processes()
            .into_iter()
            .map(|p| format!("process {p}")),
    );
    left.extend(
        dir_names(Path::new("/run/netns"))
            .into_iter()
            .filter(|n| is_pod_name(n.strip_prefix("rkt-").unwrap_or_default()))
            .map(|n| format!("network namespace /run/netns/{n}")),
    );
    left.extend(
        dir_names(Path::new("/run/rkt-kvm"))
            .into_iter()
            .map(|n| format!("stage1 run directory /run/rkt-kvm/{n}")),
    );
    let cgroups = Path::new("/sys/fs/cgroup/rkt-kvm");
    left.extend(
        dir_names(cgroups)
            .into_iter()
            .filter(|n| cgroups.join(n).is_dir())
            .map(|n| format!("cgroup {}/{n}", cgroups.display())),
    );
    let leases = Path::new("/var/lib/cni/networks");
    for net in dir_names(leases) {
        left.extend(
            dir_names(&leases.join(&net))
                .into_iter()
                // host-local keeps `lock` and `last_reserved_ip.0` there for good; a lease
                // is a file named by its address.
                .filter(|n| n.starts_with(|c: char| c.is_ascii_digit()))
                .map(|n| format!("CNI lease {net}/{n}")),
        );
    }
    let in_host = |program: &str| {
        let mut command = Command::new("nsenter");
        if let Some(ns) = host_netns {
            command.arg(format!("--net=/run/netns/{ns}"));
        }
        command.arg(program);
        command
    };
    match in_host("ip").args(["-o", "link", "show"]).output() {
        Ok(out) => left.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| l.split(':').nth(1).map(str::trim))
                // ptp names the host end `veth<hash>`; a tap is only ever in the pod's
                // namespace, so one here is a leak too.
                .filter(|n| n.starts_with("veth") || n.starts_with("tap"))
                .map(|n| format!("link {n}")),
        ),
        Err(e) => left.push(format!("cannot list links (ip): {e}")),
    }
    match in_host("iptables-save").output() {
        // portmap's shared entry chains (`CNI-HOSTPORT-*`) stay, empty, by the plugin's
        // design; the per-pod chains (`CNI-<hash>`, `CNI-DN-<hash>`) and jumps must go.
        Ok(out) => left.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.contains("CNI-") && !l.contains("CNI-HOSTPORT-"))
                .map(|l| format!("iptables rule {l}")),
        ),
        Err(e) => left.push(format!("cannot list iptables rules (iptables-save): {e}")),
    }
    left
}

/// Processes of the engine, by name: `rkt`, `stage1-kvm` (the supervisor, and the jailed VMM,
/// which is the stage1 binary exec'ing itself, so its /proc/PID/exe may point into a jail
/// that no longer exists) and `rkt-vmm`.
pub fn engine_processes() -> Vec<String> {
    processes_named(&["rkt", "stage1-kvm", "rkt-vmm"])
}

/// Running processes whose name (`/proc/PID/comm`) is one of `names`, as `PID (NAME)`.
pub fn processes_named(names: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for (pid, dir) in processes() {
        if let Ok(comm) = fs::read_to_string(dir.join("comm")) {
            let comm = comm.trim();
            if names.contains(&comm) {
                found.push(format!("{pid} ({comm})"));
            }
        }
    }
    found
}

/// The entries of a directory (none if it does not exist), sorted.
pub(crate) fn dir_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Whether `name` has a pod UUID's shape (8-4-4-4-12 hex digits).
fn is_pod_name(name: &str) -> bool {
    name.len() == 36
        && name.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}
