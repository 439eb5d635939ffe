//! `rkt-fs-probe`: exercises a file system from inside the guest (a virtio-fs share, in the
//! end-to-end tests) and prints one line per check, `ok NAME` or `FAIL NAME: why`, so the host
//! side sees exactly which behaviour broke. Exit status: 0 when every check passed, 1 when one
//! failed, 2 for a usage error.
//!
//! Subcommands:
//! - `workout DIR`: the POSIX behaviour pods need, in DIR (which must exist and be empty):
//!   create, read, write, truncate, rename (plain, RENAME_NOREPLACE, RENAME_EXCHANGE), unlink,
//!   link, symlink, readlink, mkdir, rmdir, readdir, chmod, chown, utimens, statfs, fsync,
//!   xattrs, flock, POSIX record locks, open-unlink-fstat (rkt#1917), sticky directories and
//!   ownership of files created by other users (rkt#2576), mmap. It leaves files behind on
//!   purpose (listed in `docs`/the test) so the host can check them afterwards.
//! - `read-only DIR`: DIR holds `file` (non-empty) and `dir/` (empty); every kind of
//!   modification must fail with EROFS, and reads must work.
//! - `never-reads PATH SECRET COUNT`: reads PATH COUNT times (missing or unreadable is fine);
//!   fails if any read returns content containing SECRET. The host swaps PATH between a
//!   directory entry and a symlink pointing outside the share while this runs.
//!
//! - `bench DIR MIB FILES`: measures, in DIR, a sequential write of a MIB MiB file (ending with
//!   fsync), its sequential read after dropping it from this kernel's page cache
//!   (POSIX_FADV_DONTNEED), and creating FILES one-byte files, then stat of each, then unlink
//!   of each; prints
//!   `bench seq-write secs=S`, `bench seq-read secs=S`, `bench small-files secs=S`. The same
//!   static binary runs on the host and in the guest, so the two sides do identical work.
//!
//! A test tool: the checks are linear on purpose, one function per behaviour.

use std::ffi::CString;
use std::fmt::Display;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::process::ExitCode;

use nix::errno::Errno;
use nix::fcntl::{renameat2, RenameFlags};
use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{fork, ForkResult, Gid, Uid};

/// The unprivileged users the ownership and sticky-bit checks act as.
const USER_A: u32 = 1000;
const USER_B: u32 = 1001;

type Check = Result<(), String>;

/// Turns any error into a message naming the step that failed.
fn at<E: Display>(step: &str) -> impl FnOnce(E) -> String + '_ {
    move |e| format!("{step}: {e}")
}

fn expect(condition: bool, what: impl FnOnce() -> String) -> Check {
    if condition {
        Ok(())
    } else {
        Err(what())
    }
}

/// Expects `result` to be the error `want`.
fn expect_errno<T>(step: &str, result: Result<T, Errno>, want: Errno) -> Check {
    match result {
        Err(got) if got == want => Ok(()),
        Err(got) => Err(format!("{step}: expected {want}, got {got}")),
        Ok(_) => Err(format!("{step}: expected {want}, but it succeeded")),
    }
}

fn io_errno(e: &std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(0))
}

/// Expects an std::io result to fail with `want`.
fn expect_io_errno<T>(step: &str, result: std::io::Result<T>, want: Errno) -> Check {
    expect_errno(step, result.map_err(|e| io_errno(&e)), want)
}

/// Deterministic content: byte i is a function of i, so any misplaced block shows.
fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 11)) as u8)
        .collect()
}

fn cpath(path: &Path) -> Result<CString, String> {
    CString::new(path.as_os_str().as_encoded_bytes()).map_err(at("path"))
}

struct Report {
    failed: usize,
}

impl Report {
    fn check(&mut self, name: &str, result: Check) {
        match result {
            Ok(()) => println!("ok {name}"),
            Err(why) => {
                self.failed += 1;
                println!("FAIL {name}: {why}");
            }
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut report = Report { failed: 0 };
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["workout", dir] => workout(Path::new(dir), &mut report),
        ["read-only", dir] => read_only(Path::new(dir), &mut report),
        ["bench", dir, mib, files] => {
            let (Ok(mib), Ok(files)) = (mib.parse::<usize>(), files.parse::<usize>()) else {
                eprintln!("rkt-fs-probe: MIB and FILES must be numbers");
                return ExitCode::from(2);
            };
            report.check("bench", bench(Path::new(dir), mib, files));
        }
        ["never-reads", path, secret, count] => {
            let Ok(count) = count.parse::<u32>() else {
                eprintln!("rkt-fs-probe: COUNT must be a number, not {count:?}");
                return ExitCode::from(2);
            };
            report.check("never-reads", never_reads(Path::new(path), secret, count));
        }
        _ => {
            eprintln!(
                "usage: rkt-fs-probe workout DIR | read-only DIR | never-reads PATH SECRET COUNT | bench DIR MIB FILES"
            );
            return ExitCode::from(2);
        }
    }
    println!("checks-failed={}", report.failed);
    if report.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn workout(dir: &Path, report: &mut Report) {
    report.check("write-read", write_read(dir));
    report.check("truncate", truncate(dir));
    report.check("rename", rename(dir));
    report.check("rename-noreplace", rename_noreplace(dir));
    report.check("rename-exchange", rename_exchange(dir));
    report.check("unlink", unlink(dir));
    report.check("link", link(dir));
    report.check("symlink-readlink", symlink_readlink(dir));
    report.check("mkdir-rmdir", mkdir_rmdir(dir));
    report.check("readdir", readdir(dir));
    report.check("chmod", chmod(dir));
    report.check("chown", chown(dir));
    report.check("utimens", utimens(dir));
    report.check("statfs", statfs(dir));
    report.check("fsync", fsync(dir));
    report.check("xattr", xattr(dir));
    report.check("flock", flock(dir));
    report.check("posix-lock", posix_lock(dir));
    report.check("open-unlink-fstat", open_unlink_fstat(dir));
    report.check("owner-on-create", owner_on_create(dir));
    report.check("sticky-dir", sticky_dir(dir));
    report.check("mmap", mmap(dir));
}

fn write_read(dir: &Path) -> Check {
    let data = pattern(3 << 20);
    fs::write(dir.join("data"), &data).map_err(at("write"))?;
    let back = fs::read(dir.join("data")).map_err(at("read"))?;
    expect(back == data, || {
        format!("read {} bytes, not the {} written", back.len(), data.len())
    })?;
    // Partial reads and writes at odd offsets.
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join("data"))
        .map_err(at("reopen"))?;
    file.seek(SeekFrom::Start(4097)).map_err(at("seek"))?;
    file.write_all(b"rkt").map_err(at("write at offset"))?;
    file.seek(SeekFrom::Start(4096)).map_err(at("seek"))?;
    let mut five = [0u8; 5];
    file.read_exact(&mut five).map_err(at("read at offset"))?;
    expect(five == [data[4096], b'r', b'k', b't', data[4100]], || {
        format!("bytes at 4096 are {five:?}")
    })
}

fn truncate(dir: &Path) -> Check {
    let path = dir.join("truncated");
    fs::write(&path, pattern(10_000)).map_err(at("write"))?;
    let file = OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(at("open"))?;
    file.set_len(100).map_err(at("shrink"))?;
    expect(
        fs::metadata(&path).map_err(at("stat"))?.len() == 100,
        || "size not 100".into(),
    )?;
    file.set_len(5000).map_err(at("grow"))?;
    let back = fs::read(&path).map_err(at("read"))?;
    expect(
        back.len() == 5000 && back[100..].iter().all(|b| *b == 0),
        || "grown part is not zeros".into(),
    )?;
    expect(back[..100] == pattern(100)[..], || {
        "kept part changed".into()
    })?;
    // O_TRUNC on open.
    drop(File::create(&path).map_err(at("open O_TRUNC"))?);
    expect(fs::metadata(&path).map_err(at("stat"))?.len() == 0, || {
        "O_TRUNC kept data".into()
    })
}

fn rename(dir: &Path) -> Check {
    fs::write(dir.join("rename-from"), b"moved").map_err(at("write"))?;
    fs::create_dir(dir.join("rename-sub")).map_err(at("mkdir"))?;
    fs::rename(dir.join("rename-from"), dir.join("rename-sub/rename-to")).map_err(at("rename"))?;
    expect(!dir.join("rename-from").exists(), || {
        "source still there".into()
    })?;
    let back = fs::read(dir.join("rename-sub/rename-to")).map_err(at("read"))?;
    expect(back == b"moved", || "content changed".into())?;
    // Over an existing file: replaced atomically.
    fs::write(dir.join("rename-over"), b"new").map_err(at("write"))?;
    fs::rename(dir.join("rename-over"), dir.join("rename-sub/rename-to"))
        .map_err(at("rename over"))?;
    let back = fs::read(dir.join("rename-sub/rename-to")).map_err(at("read"))?;
    expect(back == b"new", || "rename over did not replace".into())
}

fn rename_noreplace(dir: &Path) -> Check {
    fs::write(dir.join("nr-a"), b"a").map_err(at("write a"))?;
    fs::write(dir.join("nr-b"), b"b").map_err(at("write b"))?;
    let refused = renameat2(
        None,
        &dir.join("nr-a"),
        None,
        &dir.join("nr-b"),
        RenameFlags::RENAME_NOREPLACE,
    );
    expect_errno("noreplace onto existing", refused, Errno::EEXIST)?;
    renameat2(
        None,
        &dir.join("nr-a"),
        None,
        &dir.join("nr-c"),
        RenameFlags::RENAME_NOREPLACE,
    )
    .map_err(at("noreplace onto free name"))?;
    expect(
        fs::read(dir.join("nr-b")).map_err(at("read b"))? == b"b",
        || "target was overwritten".into(),
    )
}

fn rename_exchange(dir: &Path) -> Check {
    fs::write(dir.join("ex-a"), b"first").map_err(at("write a"))?;
    fs::create_dir(dir.join("ex-b")).map_err(at("mkdir b"))?;
    renameat2(
        None,
        &dir.join("ex-a"),
        None,
        &dir.join("ex-b"),
        RenameFlags::RENAME_EXCHANGE,
    )
    .map_err(at("exchange"))?;
    expect(dir.join("ex-a").is_dir(), || {
        "ex-a is not the directory now".into()
    })?;
    expect(
        fs::read(dir.join("ex-b")).map_err(at("read"))? == b"first",
        || "ex-b does not hold the file".into(),
    )
}

fn unlink(dir: &Path) -> Check {
    fs::write(dir.join("doomed"), b"x").map_err(at("write"))?;
    fs::remove_file(dir.join("doomed")).map_err(at("unlink"))?;
    expect_io_errno(
        "stat after unlink",
        fs::metadata(dir.join("doomed")),
        Errno::ENOENT,
    )
}

fn link(dir: &Path) -> Check {
    fs::write(dir.join("link-a"), b"shared").map_err(at("write"))?;
    fs::hard_link(dir.join("link-a"), dir.join("link-b")).map_err(at("link"))?;
    let a = fs::metadata(dir.join("link-a")).map_err(at("stat a"))?;
    let b = fs::metadata(dir.join("link-b")).map_err(at("stat b"))?;
    expect(a.nlink() == 2 && a.ino() == b.ino(), || {
        format!("nlink {} inodes {} {}", a.nlink(), a.ino(), b.ino())
    })
}

fn symlink_readlink(dir: &Path) -> Check {
    std::os::unix::fs::symlink("link-a", dir.join("sym-rel")).map_err(at("symlink"))?;
    std::os::unix::fs::symlink("/nowhere/at/all", dir.join("sym-abs")).map_err(at("symlink"))?;
    let target = fs::read_link(dir.join("sym-rel")).map_err(at("readlink"))?;
    expect(target == Path::new("link-a"), || {
        format!("readlink gave {target:?}")
    })?;
    expect(
        fs::read(dir.join("sym-rel")).map_err(at("read through"))? == b"shared",
        || "wrong content through the symlink".into(),
    )?;
    let meta = fs::symlink_metadata(dir.join("sym-abs")).map_err(at("lstat"))?;
    expect(meta.file_type().is_symlink(), || {
        "lstat is not a symlink".into()
    })
}

fn mkdir_rmdir(dir: &Path) -> Check {
    fs::create_dir_all(dir.join("tree/a/b/c")).map_err(at("mkdir -p"))?;
    fs::write(dir.join("tree/a/b/c/f"), b"f").map_err(at("write"))?;
    expect_io_errno(
        "rmdir non-empty",
        fs::remove_dir(dir.join("tree/a/b/c")),
        Errno::ENOTEMPTY,
    )?;
    expect_io_errno(
        "mkdir existing",
        fs::create_dir(dir.join("tree")),
        Errno::EEXIST,
    )?;
    fs::create_dir(dir.join("tree/empty")).map_err(at("mkdir"))?;
    fs::remove_dir(dir.join("tree/empty")).map_err(at("rmdir"))
}

fn readdir(dir: &Path) -> Check {
    let many = dir.join("many");
    fs::create_dir(&many).map_err(at("mkdir"))?;
    for i in 0..300 {
        fs::write(many.join(format!("file-{i:03}-with-a-longer-name")), b"")
            .map_err(at("create"))?;
    }
    let mut names: Vec<String> = fs::read_dir(&many)
        .map_err(at("opendir"))?
        .map(|entry| entry.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()
        .map_err(at("readdir"))?;
    names.sort();
    let want: Vec<String> = (0..300)
        .map(|i| format!("file-{i:03}-with-a-longer-name"))
        .collect();
    expect(names == want, || {
        format!("listed {} names, not the 300 created", names.len())
    })
}

fn chmod(dir: &Path) -> Check {
    let path = dir.join("modes");
    fs::write(&path, b"m").map_err(at("write"))?;
    // The VMM strips set-user-ID and set-group-ID from what the guest sets (docs/security.md:
    // a guest must not make set-id files on the host): 4755 reads back as 755.
    for (mode, expected) in [
        (0o640, 0o640),
        (0o4755, 0o755),
        (0o2755, 0o755),
        (0o000, 0o000),
    ] {
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).map_err(at("chmod"))?;
        let got = fs::metadata(&path).map_err(at("stat"))?.mode() & 0o7777;
        expect(got == expected, || {
            format!("mode {got:o} after chmod {mode:o} (expected {expected:o})")
        })?;
    }
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).map_err(at("chmod"))
}

fn chown(dir: &Path) -> Check {
    let path = dir.join("owned");
    fs::write(&path, b"o").map_err(at("write"))?;
    std::os::unix::fs::chown(&path, Some(1234), Some(5678)).map_err(at("chown"))?;
    let meta = fs::metadata(&path).map_err(at("stat"))?;
    expect(meta.uid() == 1234 && meta.gid() == 5678, || {
        format!("owner {}:{}", meta.uid(), meta.gid())
    })
}

fn utimens(dir: &Path) -> Check {
    let path = dir.join("dated");
    fs::write(&path, b"t").map_err(at("write"))?;
    let atime = TimeSpec::new(1_000_000_000, 0);
    let mtime = TimeSpec::new(1_234_567_890, 500_000_000);
    utimensat(None, &path, &atime, &mtime, UtimensatFlags::FollowSymlink)
        .map_err(at("utimensat"))?;
    let meta = fs::metadata(&path).map_err(at("stat"))?;
    expect(
        meta.mtime() == 1_234_567_890
            && meta.mtime_nsec() == 500_000_000
            && meta.atime() == 1_000_000_000,
        || {
            format!(
                "times {} {}.{}",
                meta.atime(),
                meta.mtime(),
                meta.mtime_nsec()
            )
        },
    )
}

fn statfs(dir: &Path) -> Check {
    let stat = nix::sys::statfs::statfs(dir).map_err(at("statfs"))?;
    expect(stat.blocks() > 0 && stat.block_size() > 0, || {
        format!("blocks {} bsize {}", stat.blocks(), stat.block_size())
    })
}

fn fsync(dir: &Path) -> Check {
    let mut file = File::create(dir.join("synced")).map_err(at("create"))?;
    file.write_all(&pattern(100_000)).map_err(at("write"))?;
    file.sync_data().map_err(at("fdatasync"))?;
    file.sync_all().map_err(at("fsync"))?;
    File::open(dir)
        .map_err(at("open dir"))?
        .sync_all()
        .map_err(at("fsync dir"))
}

/// `user.*` attributes, the namespace unprivileged programs use (the VMM refuses the host-
/// privileged `trusted.*` and `security.*` namespaces).
fn xattr(dir: &Path) -> Check {
    let path = dir.join("attrs");
    fs::write(&path, b"x").map_err(at("write"))?;
    let file = cpath(&path)?;
    let name = c"user.rkt-test";
    let value = b"value-1";
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let rc = unsafe {
        libc::setxattr(
            file.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    expect(rc == 0, || format!("setxattr: {}", Errno::last()))?;
    let mut buf = [0u8; 64];
    // SAFETY: as above; the kernel writes at most buf.len() bytes.
    let len = unsafe {
        libc::getxattr(
            file.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    expect(len >= 0 && buf[..len as usize] == value[..], || {
        format!("getxattr: {len}")
    })?;
    // SAFETY: as above.
    let len = unsafe { libc::listxattr(file.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    expect(
        len > 0
            && buf[..len as usize]
                .split(|b| *b == 0)
                .any(|n| n == b"user.rkt-test"),
        || "listxattr does not list it".into(),
    )?;
    // SAFETY: as above.
    let rc = unsafe { libc::removexattr(file.as_ptr(), name.as_ptr()) };
    expect(rc == 0, || format!("removexattr: {}", Errno::last()))?;
    // SAFETY: as above.
    let len = unsafe {
        libc::getxattr(
            file.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    expect(len < 0 && Errno::last() == Errno::ENODATA, || {
        "still there after remove".into()
    })?;
    // One attribute left for the host to see.
    let keep = c"user.rkt-kept";
    // SAFETY: as above.
    let rc = unsafe { libc::setxattr(file.as_ptr(), keep.as_ptr(), b"kept".as_ptr().cast(), 4, 0) };
    expect(rc == 0, || format!("setxattr: {}", Errno::last()))
}

fn flock(dir: &Path) -> Check {
    let path = dir.join("flocked");
    fs::write(&path, b"l").map_err(at("write"))?;
    let first = File::open(&path).map_err(at("open 1"))?;
    let second = File::open(&path).map_err(at("open 2"))?;
    flock_fd(&first, libc::LOCK_EX).map_err(at("lock 1"))?;
    expect_errno(
        "second exclusive lock",
        flock_fd(&second, libc::LOCK_EX | libc::LOCK_NB),
        Errno::EWOULDBLOCK,
    )?;
    flock_fd(&first, libc::LOCK_UN).map_err(at("unlock 1"))?;
    flock_fd(&second, libc::LOCK_EX | libc::LOCK_NB).map_err(at("lock 2"))
}

/// flock(2) on an open file (nix's wrapper takes ownership of the file, which these checks,
/// holding two descriptors of one file, do not want).
fn flock_fd(file: &File, operation: i32) -> Result<(), Errno> {
    // SAFETY: flock on a descriptor that `file` keeps open.
    Errno::result(unsafe { libc::flock(file.as_raw_fd(), operation) }).map(drop)
}

/// POSIX record locks belong to processes: the parent holds a write lock, a child must be
/// refused and must see the parent as the holder.
fn posix_lock(dir: &Path) -> Check {
    let path = dir.join("posix-locked");
    fs::write(&path, pattern(100)).map_err(at("write"))?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(at("open"))?;
    let mut lock = whole_file_lock(libc::F_WRLCK);
    // SAFETY: F_SETLK with a valid flock struct on an open fd.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &mut lock) };
    expect(rc == 0, || format!("F_SETLK: {}", Errno::last()))?;
    let parent = std::process::id() as i32;
    in_child(|| {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(at("open"))?;
        let mut want = whole_file_lock(libc::F_WRLCK);
        // SAFETY: as above.
        let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &mut want) };
        expect(
            rc == -1 && matches!(Errno::last(), Errno::EAGAIN | Errno::EACCES),
            || "a second process got the write lock".into(),
        )?;
        let mut probe = whole_file_lock(libc::F_WRLCK);
        // SAFETY: as above.
        let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETLK, &mut probe) };
        expect(
            rc == 0 && i32::from(probe.l_type) == libc::F_WRLCK && probe.l_pid == parent,
            || format!("F_GETLK: type {} pid {}", probe.l_type, probe.l_pid),
        )
    })
}

fn whole_file_lock(kind: i32) -> libc::flock {
    // SAFETY: flock is plain old data; all-zero is a valid value.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = kind as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock
}

/// rkt#1917: apt-get opens a file, unlinks it and keeps using it; 9p lost the file.
fn open_unlink_fstat(dir: &Path) -> Check {
    let path = dir.join("unlinked-but-open");
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(at("create"))?;
    file.write_all(b"before").map_err(at("write"))?;
    fs::remove_file(&path).map_err(at("unlink"))?;
    let meta = file.metadata().map_err(at("fstat after unlink"))?;
    expect(meta.nlink() == 0 && meta.len() == 6, || {
        format!("fstat: nlink {} size {}", meta.nlink(), meta.len())
    })?;
    file.write_all(b"-after")
        .map_err(at("write after unlink"))?;
    file.set_len(12).map_err(at("ftruncate after unlink"))?;
    file.seek(SeekFrom::Start(0)).map_err(at("seek"))?;
    let mut back = String::new();
    file.read_to_string(&mut back)
        .map_err(at("read after unlink"))?;
    expect(back == "before-after", || format!("read {back:?}"))?;
    expect(!path.exists(), || "the name came back".into())
}

/// rkt#2576: a file created by a non-root user belongs to that user, in the guest and on the
/// host (the host checks `owned-by-1000`).
fn owner_on_create(dir: &Path) -> Check {
    let shared = dir.join("users");
    fs::create_dir(&shared).map_err(at("mkdir"))?;
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o777)).map_err(at("chmod"))?;
    let file = shared.join("owned-by-1000");
    let subdir = shared.join("dir-of-1000");
    let (f, d) = (file.clone(), subdir.clone());
    in_child(move || {
        become_user(USER_A)?;
        fs::write(&f, b"mine").map_err(at("create as 1000"))?;
        fs::create_dir(&d).map_err(at("mkdir as 1000"))
    })?;
    for path in [&file, &subdir] {
        let meta = fs::metadata(path).map_err(at("stat"))?;
        expect(meta.uid() == USER_A && meta.gid() == USER_A, || {
            format!(
                "{} is owned by {}:{}",
                path.display(),
                meta.uid(),
                meta.gid()
            )
        })?;
    }
    Ok(())
}

/// In a sticky world-writable directory only a file's owner (or root) may delete it.
fn sticky_dir(dir: &Path) -> Check {
    let sticky = dir.join("sticky");
    fs::create_dir(&sticky).map_err(at("mkdir"))?;
    fs::set_permissions(&sticky, fs::Permissions::from_mode(0o1777)).map_err(at("chmod"))?;
    let file = sticky.join("of-1000");
    let f = file.clone();
    in_child(move || {
        become_user(USER_A)?;
        fs::write(&f, b"a").map_err(at("create as 1000"))
    })?;
    let f = file.clone();
    in_child(move || {
        become_user(USER_B)?;
        expect_io_errno("unlink by another user", fs::remove_file(&f), Errno::EPERM)
    })?;
    expect(file.exists(), || "another user deleted it".into())?;
    let f = file.clone();
    in_child(move || {
        become_user(USER_A)?;
        fs::remove_file(&f).map_err(at("unlink by owner"))
    })
}

fn mmap(dir: &Path) -> Check {
    use nix::sys::mman::{mmap, msync, munmap, MapFlags, MsFlags, ProtFlags};
    use std::num::NonZeroUsize;
    const LEN: usize = 256 << 10;
    let path = dir.join("mapped");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&path)
        .map_err(at("create"))?;
    file.set_len(LEN as u64).map_err(at("size"))?;
    let length = NonZeroUsize::new(LEN).ok_or("zero length")?;
    // SAFETY: a fresh shared mapping of a file we own; nothing else aliases it.
    let map = unsafe {
        mmap(
            None,
            length,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_SHARED,
            &file,
            0,
        )
    }
    .map_err(at("mmap"))?;
    let data = pattern(LEN);
    // SAFETY: the mapping is LEN bytes long, readable and writable, and only used here.
    let bytes = unsafe { std::slice::from_raw_parts_mut(map.as_ptr().cast::<u8>(), LEN) };
    bytes.copy_from_slice(&data);
    // SAFETY: the mapping created above, LEN long.
    unsafe { msync(map, LEN, MsFlags::MS_SYNC) }.map_err(at("msync"))?;
    // SAFETY: as above; `bytes` is not used after this.
    unsafe { munmap(map, LEN) }.map_err(at("munmap"))?;
    let back = fs::read(&path).map_err(at("read"))?;
    expect(back == data, || {
        "read() does not see what mmap wrote".into()
    })
}

fn read_only(dir: &Path, report: &mut Report) {
    let file = dir.join("file");
    let sub = dir.join("dir");
    let original = fs::read(&file);
    report.check(
        "ro-read",
        original
            .as_ref()
            .map(|_| ())
            .map_err(|e| format!("read: {e}")),
    );
    report.check(
        "ro-create",
        expect_io_errno("create", File::create(dir.join("new")), Errno::EROFS),
    );
    report.check(
        "ro-open-write",
        expect_io_errno(
            "open for writing",
            OpenOptions::new().write(true).open(&file),
            Errno::EROFS,
        ),
    );
    report.check(
        "ro-open-trunc",
        expect_io_errno("open O_TRUNC", File::create(&file), Errno::EROFS),
    );
    report.check(
        "ro-truncate",
        expect_errno("truncate", nix::unistd::truncate(&file, 0), Errno::EROFS),
    );
    report.check(
        "ro-unlink",
        expect_io_errno("unlink", fs::remove_file(&file), Errno::EROFS),
    );
    report.check(
        "ro-mkdir",
        expect_io_errno("mkdir", fs::create_dir(dir.join("d2")), Errno::EROFS),
    );
    report.check(
        "ro-rmdir",
        expect_io_errno("rmdir", fs::remove_dir(&sub), Errno::EROFS),
    );
    report.check(
        "ro-rename",
        expect_io_errno("rename", fs::rename(&file, dir.join("moved")), Errno::EROFS),
    );
    report.check(
        "ro-link",
        expect_io_errno("link", fs::hard_link(&file, dir.join("hard")), Errno::EROFS),
    );
    report.check(
        "ro-symlink",
        expect_io_errno(
            "symlink",
            std::os::unix::fs::symlink("file", dir.join("soft")),
            Errno::EROFS,
        ),
    );
    report.check(
        "ro-chmod",
        expect_io_errno(
            "chmod",
            fs::set_permissions(&file, fs::Permissions::from_mode(0o777)),
            Errno::EROFS,
        ),
    );
    report.check(
        "ro-chown",
        expect_io_errno(
            "chown",
            std::os::unix::fs::chown(&file, Some(1), Some(1)),
            Errno::EROFS,
        ),
    );
    let now = TimeSpec::new(1, 0);
    report.check(
        "ro-utimens",
        expect_errno(
            "utimensat",
            utimensat(None, &file, &now, &now, UtimensatFlags::FollowSymlink),
            Errno::EROFS,
        ),
    );
    report.check(
        "ro-mkfifo",
        expect_errno(
            "mkfifo",
            nix::unistd::mkfifo(&dir.join("fifo"), nix::sys::stat::Mode::S_IRWXU),
            Errno::EROFS,
        ),
    );
    report.check("ro-setxattr", ro_setxattr(&file));
    let after = fs::read(&file);
    report.check(
        "ro-unchanged",
        expect(
            matches!((&original, &after), (Ok(a), Ok(b)) if a == b),
            || "content changed".into(),
        ),
    );
}

fn ro_setxattr(file: &Path) -> Check {
    let path = cpath(file)?;
    // SAFETY: valid NUL-terminated strings and a 1-byte buffer.
    let rc = unsafe {
        libc::setxattr(
            path.as_ptr(),
            c"user.rkt-test".as_ptr(),
            b"x".as_ptr().cast(),
            1,
            0,
        )
    };
    expect(rc == -1 && Errno::last() == Errno::EROFS, || {
        format!("setxattr: rc {rc}, errno {}", Errno::last())
    })
}

fn never_reads(path: &Path, secret: &str, count: u32) -> Check {
    let mut opened = 0u32;
    for _ in 0..count {
        let mut content = String::new();
        if let Ok(mut file) = File::open(path) {
            opened += 1;
            let _ = file.read_to_string(&mut content);
            if content.contains(secret) {
                return Err(format!("read the secret through {}", path.display()));
            }
        }
    }
    println!("never-reads: opened {opened} of {count} times");
    Ok(())
}

fn bench(dir: &Path, mib: usize, files: usize) -> Check {
    use std::time::Instant;
    let path = dir.join("bench-file");
    let block = pattern(1 << 20);
    let started = Instant::now();
    let mut file = File::create(&path).map_err(at("create"))?;
    for _ in 0..mib {
        file.write_all(&block).map_err(at("write"))?;
    }
    file.sync_all().map_err(at("fsync"))?;
    println!(
        "bench seq-write secs={:.3}",
        started.elapsed().as_secs_f64()
    );
    drop(file);

    let file = File::open(&path).map_err(at("open"))?;
    // SAFETY: fadvise on an open descriptor; it only drops clean cached pages.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    expect(rc == 0, || format!("posix_fadvise: {rc}"))?;
    let started = Instant::now();
    let mut reader = file;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0usize;
    loop {
        let n = reader.read(&mut buf).map_err(at("read"))?;
        if n == 0 {
            break;
        }
        total += n;
    }
    println!("bench seq-read secs={:.3}", started.elapsed().as_secs_f64());
    expect(total == mib << 20, || format!("read {total} bytes"))?;
    fs::remove_file(&path).map_err(at("unlink"))?;

    let small = dir.join("bench-small");
    fs::create_dir(&small).map_err(at("mkdir"))?;
    let started = Instant::now();
    let names: Vec<_> = (0..files).map(|i| small.join(format!("f{i}"))).collect();
    for name in &names {
        File::create(name)
            .map_err(at("create"))?
            .write_all(b"x")
            .map_err(at("write"))?;
    }
    for name in &names {
        fs::metadata(name).map_err(at("stat"))?;
    }
    for name in &names {
        fs::remove_file(name).map_err(at("unlink"))?;
    }
    println!(
        "bench small-files secs={:.3}",
        started.elapsed().as_secs_f64()
    );
    fs::remove_dir(&small).map_err(at("rmdir"))
}

/// Runs `body` in a forked child and returns its verdict (the child reports through its exit
/// status and prints its own failure reason on stdout).
fn in_child(body: impl FnOnce() -> Check) -> Check {
    use std::io::stdout;
    let _ = stdout().flush();
    // SAFETY: this tool is single-threaded, so the child may run arbitrary code after fork.
    match unsafe { fork() }.map_err(at("fork"))? {
        ForkResult::Child => {
            let code = match body() {
                Ok(()) => 0,
                Err(why) => {
                    println!("  child: {why}");
                    1
                }
            };
            let _ = stdout().flush();
            // SAFETY: leaves the child without running the parent's exit handlers twice.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            match nix::sys::wait::waitpid(child, None).map_err(at("waitpid"))? {
                nix::sys::wait::WaitStatus::Exited(_, 0) => Ok(()),
                other => Err(format!("child step failed ({other:?})")),
            }
        }
    }
}

/// Drops every privilege to `id` (uid = gid = id, no supplementary groups).
fn become_user(id: u32) -> Check {
    nix::unistd::setgroups(&[]).map_err(at("setgroups"))?;
    nix::unistd::setgid(Gid::from_raw(id)).map_err(at("setgid"))?;
    nix::unistd::setuid(Uid::from_raw(id)).map_err(at("setuid"))
}
