//! virtio-fs end to end: host directories served by the VMM, mounted and used by real programs
//! in the guest, then checked from the host.
//!
//! Each test boots once: guest-init mounts the share tagged `pod` (a fresh ext4 file system on the host),
//! chroots into its `root/` (busybox plus our static probes), runs the command and writes the
//! exit status into the share's `status` file, which the host reads after the VM ended.
//! Needs ordinary KVM: run inside the emulated KVM host on machines whose /dev/kvm is kvm_pvm.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use e2e::{boot_vm, populate_guest_root, share_cmdline, Finished, ScratchFs};

/// The share's status file, written by guest-init from inside the guest.
fn status_file(share: &Path) -> String {
    fs::read_to_string(share.join("status")).unwrap_or_else(|e| format!("<unreadable: {e}>"))
}

/// Every probe line was `ok`, and the probe counted no failure.
fn assert_all_checks_ok(run: &Finished, expected: &[&str]) {
    for name in expected {
        assert!(
            run.stdout.lines().any(|l| l.trim() == format!("ok {name}")),
            "check {name} did not pass: {run}"
        );
    }
    assert!(!run.stdout.contains("FAIL "), "{run}");
}

/// The content `rkt-fs-probe` writes into `data` (its `pattern`).
fn probe_pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 11)) as u8)
        .collect()
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    let name = std::ffi::CString::new(name).ok()?;
    let mut buf = [0u8; 256];
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let len = unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    usize::try_from(len).ok().map(|len| buf[..len].to_vec())
}

#[test]
fn posix_workout_on_a_share_is_seen_by_the_host() {
    let share = ScratchFs::new();
    let root = share.path().join("root");
    populate_guest_root(&root);
    fs::create_dir(root.join("work")).unwrap();

    let run = boot_vm(
        &share_cmdline("pod", "root", "/bin/rkt-fs-probe workout /work"),
        256,
        &[
            OsStr::new("--share"),
            format!("pod={}", share.path().display()).as_ref(),
        ],
    );
    assert_eq!(run.code(), 0, "{run}");
    assert_all_checks_ok(
        &run,
        &[
            "write-read",
            "truncate",
            "rename",
            "rename-noreplace",
            "rename-exchange",
            "unlink",
            "link",
            "symlink-readlink",
            "mkdir-rmdir",
            "readdir",
            "chmod",
            "chown",
            "utimens",
            "statfs",
            "fsync",
            "xattr",
            "flock",
            "posix-lock",
            "open-unlink-fstat",
            "owner-on-create",
            "sticky-dir",
            "mmap",
        ],
    );
    assert_eq!(status_file(share.path()), "0\n");

    // What the guest did is what the host sees.
    let work = root.join("work");
    let data = fs::read(work.join("data")).unwrap();
    let mut want = probe_pattern(3 << 20);
    want[4097..4100].copy_from_slice(b"rkt");
    assert!(data == want, "data differs on the host");
    assert_eq!(fs::read(work.join("rename-sub/rename-to")).unwrap(), b"new");
    assert!(!work.join("rename-from").exists());
    assert!(work.join("ex-a").is_dir());
    assert_eq!(fs::read(work.join("ex-b")).unwrap(), b"first");
    assert_eq!(fs::metadata(work.join("link-a")).unwrap().nlink(), 2);
    assert_eq!(
        fs::read_link(work.join("sym-abs")).unwrap(),
        Path::new("/nowhere/at/all")
    );
    assert_eq!(fs::read_dir(work.join("many")).unwrap().count(), 300);
    let owned = fs::metadata(work.join("owned")).unwrap();
    assert_eq!((owned.uid(), owned.gid()), (1234, 5678));
    let dated = fs::metadata(work.join("dated")).unwrap();
    assert_eq!(
        (dated.mtime(), dated.mtime_nsec()),
        (1_234_567_890, 500_000_000)
    );
    assert_eq!(
        fs::metadata(work.join("modes")).unwrap().mode() & 0o7777,
        0o644
    );
    assert_eq!(
        xattr(&work.join("attrs"), "user.rkt-kept").as_deref(),
        Some(&b"kept"[..])
    );
    assert_eq!(xattr(&work.join("attrs"), "user.rkt-test"), None);
    // rkt#2576: files a non-root guest user creates belong to that user on the host too.
    for name in ["users/owned-by-1000", "users/dir-of-1000"] {
        let meta = fs::metadata(work.join(name)).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (1000, 1000), "{name}");
    }
    // rkt#1917: the open-unlinked file is gone, not left behind as a stray name.
    assert!(!work.join("unlinked-but-open").exists());
    assert_eq!(
        fs::metadata(work.join("sticky")).unwrap().mode() & 0o7777,
        0o1777
    );
    assert!(!work.join("sticky/of-1000").exists());
    assert_eq!(
        fs::read(work.join("mapped")).unwrap(),
        probe_pattern(256 << 10)
    );
}

/// A share is jailed to its directory: symlinks pointing outside (absolute or relative),
/// `..` past the mount, hard links to outside names and a symlink swapped in while the guest
/// looks a path up never reach the host file planted next to the share.
#[test]
fn the_guest_cannot_reach_outside_its_share() {
    let host = ScratchFs::new();
    let secret_dir = host.path().join("outside");
    fs::create_dir(&secret_dir).unwrap();
    fs::write(secret_dir.join("secret"), "HOST-SECRET-7f3a\n").unwrap();
    let share = host.path().join("share");
    let root = share.join("root");
    populate_guest_root(&root);
    std::os::unix::fs::symlink(&secret_dir, root.join("abs-link")).unwrap();
    std::os::unix::fs::symlink("../../outside", root.join("rel-link")).unwrap();
    // The race target: `swap` flips between a harmless directory and a symlink to the secret's
    // directory, by atomic renames, while the guest keeps opening `swap/secret`.
    let harmless = root.join("harmless");
    fs::create_dir(&harmless).unwrap();
    fs::write(harmless.join("secret"), "harmless\n").unwrap();
    std::os::unix::fs::symlink(&secret_dir, root.join("evil")).unwrap();
    fs::rename(&harmless, root.join("swap")).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (stop, root) = (stop.clone(), root.clone());
        std::thread::spawn(move || {
            let mut flips = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // swap <-> evil: RENAME_EXCHANGE would be atomic in one step; two renames via a
                // spare name leave a moment with no `swap` at all, which is fine for the test.
                let _ = fs::rename(root.join("swap"), root.join("spare"));
                let _ = fs::rename(root.join("evil"), root.join("swap"));
                let _ = fs::rename(root.join("spare"), root.join("evil"));
                flips += 1;
            }
            flips
        })
    };

    let script =
        "for p in /abs-link/secret /rel-link/secret /../outside/secret /../../outside/secret \
                  /../../../secret; do cat $p 2>/dev/null; done; \
                  ln /abs-link/secret /stolen 2>/dev/null && cat /stolen; \
                  cd / && cd .. && cd .. && ls -a; \
                  exec /bin/rkt-fs-probe never-reads /swap/secret HOST-SECRET 600";
    let run = boot_vm(
        &share_cmdline("pod", "root", &format!("/bin/sh -c \"{script}\"")),
        128,
        &[
            OsStr::new("--share"),
            format!("pod={}", share.display()).as_ref(),
        ],
    );
    stop.store(true, Ordering::Relaxed);
    let flips = swapper.join().unwrap();
    assert!(
        !run.stdout.contains("HOST-SECRET"),
        "the secret leaked: {run}"
    );
    assert_eq!(run.code(), 0, "{run}");
    assert!(run.stdout.contains("ok never-reads"), "{run}");
    assert!(flips > 10, "the swapper flipped only {flips} times");
    assert!(!root.join("stolen").exists());
}

/// A read-only share refuses every modification with EROFS from the VMM itself (the guest
/// mounts it read-write), while a second, writable share in the same VM takes writes.
#[test]
fn read_only_share_refuses_every_write_next_to_writable_shares() {
    let host = ScratchFs::new();
    let pod = host.path().join("pod");
    let root = pod.join("root");
    populate_guest_root(&root);
    fs::create_dir(root.join("ro")).unwrap();
    fs::create_dir(root.join("data")).unwrap();
    let ro = host.path().join("ro");
    fs::create_dir_all(ro.join("dir")).unwrap();
    fs::write(ro.join("file"), "read-only content\n").unwrap();
    let data = host.path().join("data");
    fs::create_dir(&data).unwrap();

    let script = "mount -t virtiofs ro /ro && mount -t virtiofs data /data && \
                  grep -q 'virtiofs rw' /proc/mounts && echo ro-mounted-rw && \
                  cat /ro/file && echo written > /data/new && \
                  exec /bin/rkt-fs-probe read-only /ro";
    let run = boot_vm(
        &share_cmdline("pod", "root", &format!("/bin/sh -c \"{script}\"")),
        128,
        &[
            OsStr::new("--share"),
            format!("pod={}", pod.display()).as_ref(),
            OsStr::new("--share-ro"),
            format!("ro={}", ro.display()).as_ref(),
            OsStr::new("--share"),
            format!("data={}", data.display()).as_ref(),
        ],
    );
    assert_eq!(run.code(), 0, "{run}");
    assert!(run.stdout.contains("ro-mounted-rw"), "{run}");
    assert!(run.stdout.contains("read-only content"), "{run}");
    assert_all_checks_ok(
        &run,
        &[
            "ro-read",
            "ro-create",
            "ro-open-write",
            "ro-open-trunc",
            "ro-truncate",
            "ro-unlink",
            "ro-mkdir",
            "ro-rmdir",
            "ro-rename",
            "ro-link",
            "ro-symlink",
            "ro-chmod",
            "ro-chown",
            "ro-utimens",
            "ro-mkfifo",
            "ro-setxattr",
            "ro-unchanged",
        ],
    );
    // Nothing changed on the host, and the writable share got its file.
    let mut names: Vec<_> = fs::read_dir(&ro)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["dir", "file"]);
    assert_eq!(
        fs::read_to_string(ro.join("file")).unwrap(),
        "read-only content\n"
    );
    assert_eq!(fs::read_dir(ro.join("dir")).unwrap().count(), 0);
    assert_eq!(fs::read_to_string(data.join("new")).unwrap(), "written\n");
    assert_eq!(status_file(&pod), "0\n");
}

/// A failing command's status reaches the host through the share's status file, and a missing
/// root directory is a setup failure (125) with a message.
#[test]
fn status_file_carries_the_exit_status() {
    let share = ScratchFs::new();
    populate_guest_root(&share.path().join("root"));
    let share_arg = format!("pod={}", share.path().display());
    let flags = [OsStr::new("--share"), OsStr::new(&share_arg)];
    let run = boot_vm(
        &share_cmdline("pod", "root", "/bin/sh -c \"exit 42\""),
        128,
        &flags,
    );
    assert_eq!(run.code(), 42, "{run}");
    assert_eq!(status_file(share.path()), "42\n");

    let run = boot_vm(
        &share_cmdline("pod", "no-such-dir", "/bin/true"),
        128,
        &flags,
    );
    assert_eq!(run.code(), 125, "{run}");
    assert!(run.stdout.contains("no-such-dir"), "{run}");
    assert_eq!(status_file(share.path()), "125\n");
}
