//! Hostile local images (issue 14, slice B): archive members that are links,
//! FIFOs or devices, layout files that are, sparse 20 GiB blobs, an xz stream
//! declaring a 4 GiB dictionary, a 100 MB index. Each is built here by
//! `tests/hostile/build_image.py` and fetched through the real `rkt` binary,
//! which must exit 254 with one line naming the member, change no file
//! outside the store, leave nothing in the store's temp dir, stay within the
//! stated memory and write bounds (measured from the kernel's accounting of
//! the rkt process), and leave a store `rkt image verify` accepts.

mod common;

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::Env;

const MIB: u64 = 1024 * 1024;
/// Longest any one hostile fetch may take: a hang is a failure, not a wait.
const TIMEOUT: Duration = Duration::from_secs(60);

/// What the kernel accounted to one rkt process.
struct Measured {
    status: ExitStatus,
    stderr: String,
    /// Peak resident set (wait4's ru_maxrss).
    max_rss: u64,
    /// Bytes passed to write(2) and friends (/proc/PID/io `wchar`): every
    /// byte it wrote to any file, whatever the file system.
    written: u64,
}

/// Runs `command` with a timeout; reads its I/O accounting while it is a
/// zombie (waitid WNOWAIT), then reaps it with wait4 for its rusage.
// The child is reaped by wait4 below (Child::wait cannot return its rusage).
#[allow(clippy::zombie_processes)]
fn measure(mut command: Command) -> Measured {
    let stderr_file = tempfile::NamedTempFile::new().unwrap();
    command
        .stdout(Stdio::null())
        .stderr(Stdio::from(stderr_file.reopen().unwrap()));
    let child = command.spawn().unwrap();
    let pid = child.id() as libc::pid_t;
    let started = Instant::now();
    loop {
        // SAFETY: siginfo_t is plain data; waitid fills it (or leaves it
        // zeroed with WNOHANG when the child is still running).
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waiting on our own child; WNOWAIT leaves it unreaped.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT | libc::WNOHANG,
            )
        };
        assert_eq!(rc, 0, "waitid: {}", std::io::Error::last_os_error());
        // SAFETY: si_pid is valid for a SIGCHLD-style siginfo from waitid.
        if unsafe { info.si_pid() } == pid {
            break;
        }
        if started.elapsed() > TIMEOUT {
            // SAFETY: kill on our own, still unreaped, child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("rkt hung for {TIMEOUT:?} (a FIFO or endless input was read)");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let io = fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    let written = io
        .lines()
        .find_map(|line| line.strip_prefix("wchar: "))
        .and_then(|n| n.trim().parse().ok())
        .expect("/proc/PID/io of the exited rkt");
    let mut status = 0;
    // SAFETY: rusage is plain data that wait4 fills.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: reaping our own exited child.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid);
    Measured {
        status: ExitStatus::from_raw(status),
        stderr: fs::read_to_string(stderr_file.path()).unwrap(),
        max_rss: usage.ru_maxrss as u64 * 1024,
        written,
    }
}

/// Asserts a measured amount (bytes) stays within its bound.
fn assert_within(what: &str, amount: u64, bound: u64) {
    assert!(
        amount <= bound,
        "{what}: {} KiB, over the {} KiB bound",
        amount / 1024,
        bound / 1024
    );
}

/// Builds an image of `kind` with `attack` (see build_image.py); returns the
/// path and the member the attack replaced.
fn build(env: &Env, kind: &str, attack: &str) -> (PathBuf, String) {
    let out = env
        .work
        .join(format!("{kind}-{}", attack.replace(':', "-")));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hostile/build_image.py");
    let result = Command::new("python3")
        .arg(script)
        .args([
            kind,
            out.to_str().unwrap(),
            canary(env).to_str().unwrap(),
            attack,
        ])
        .output()
        .unwrap();
    assert!(
        result.status.success(),
        "build_image.py {kind} {attack}: {}",
        String::from_utf8_lossy(&result.stderr)
    );
    let member = String::from_utf8(result.stdout).unwrap().trim().to_string();
    (out, member)
}

fn canary(env: &Env) -> PathBuf {
    env.work.join("canary")
}

/// A host file hostile images point at, and a valid image already in the
/// store; returns the valid image's ID.
fn prepare(env: &Env) -> (String, Vec<u8>, SystemTime) {
    let content = b"host secret: the image must never see or change this\n".to_vec();
    fs::write(canary(env), &content).unwrap();
    let mtime = fs::metadata(canary(env)).unwrap().modified().unwrap();
    let (good, _) = build(env, "oci-archive", "none");
    let id = env.ok(&[
        "fetch",
        "--insecure-options=image",
        "--full",
        &format!("oci-archive:{}", good.display()),
    ]);
    (id.trim().to_string(), content, mtime)
}

/// Fetches `kind:path` and checks everything the issue asks of a refusal;
/// returns the measurement.
fn refused(
    env: &Env,
    baseline: &(String, Vec<u8>, SystemTime),
    kind: &str,
    path: &Path,
    extra: &[&str],
    expect: &[&str],
) -> Measured {
    let image = format!("{kind}:{}", path.display());
    let mut args = vec!["fetch", "--insecure-options=image"];
    args.extend_from_slice(extra);
    args.push(&image);
    let measured = measure(env.command(&args));
    // The numbers the closing note reports (`--nocapture`).
    eprintln!(
        "{image}: exit {:?}, wrote {} KiB, peak RSS {} MiB",
        measured.status.code(),
        measured.written / 1024,
        measured.max_rss / MIB
    );
    let lines: Vec<&str> = measured.stderr.lines().collect();
    assert_eq!(
        measured.status.code(),
        Some(254),
        "{image}: {}",
        measured.stderr
    );
    assert_eq!(
        lines.len(),
        1,
        "{image}: one error line: {}",
        measured.stderr
    );
    for needle in expect {
        assert!(
            lines[0].contains(needle),
            "{image}: {needle:?} not in {:?}",
            lines[0]
        );
    }
    let (id, content, mtime) = baseline;
    assert_eq!(&fs::read(canary(env)).unwrap(), content, "canary changed");
    assert_eq!(
        &fs::metadata(canary(env)).unwrap().modified().unwrap(),
        mtime,
        "canary touched"
    );
    let leftovers: Vec<_> = fs::read_dir(env.dir.join("cas/tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        leftovers.is_empty(),
        "{image} left {leftovers:?} in cas/tmp"
    );
    env.ok(&["image", "verify", id]);
    measured
}

const TYPES: [(&str, &str); 4] = [
    ("symlink", "is a symbolic link"),
    ("hardlink", "is a hard link"),
    ("fifo", "is a FIFO"),
    ("chardev", "is a character device"),
];

#[test]
fn archive_members_that_are_not_regular_files_are_refused_by_name() {
    let env = Env::new();
    let baseline = prepare(&env);
    for kind in ["oci-archive", "docker-archive"] {
        for role in ["index", "manifest", "config", "layer"] {
            for (kind_word, phrase) in TYPES {
                let (path, member) = build(&env, kind, &format!("{role}:{kind_word}"));
                let quoted = format!("member \"{member}\" {phrase}");
                refused(&env, &baseline, kind, &path, &[], &[&quoted, kind]);
            }
        }
    }
}

#[test]
fn layout_files_that_are_not_regular_are_refused_without_hanging() {
    let env = Env::new();
    let baseline = prepare(&env);
    for role in ["index", "manifest", "config", "layer"] {
        // A hard link in a directory is an ordinary regular file (and then
        // fails its digest); the archive test covers hard-link members.
        for (kind_word, phrase) in TYPES.iter().filter(|(k, _)| *k != "hardlink") {
            let (path, member) = build(&env, "oci", &format!("{role}:{kind_word}"));
            let quoted = format!("member \"{member}\" {phrase}");
            refused(&env, &baseline, "oci", &path, &[], &[&quoted]);
        }
    }
}

#[test]
fn a_sparse_20_gib_layer_is_refused_within_the_size_limit() {
    let env = Env::new();
    let baseline = prepare(&env);
    // (kind, attack, most bytes it may cost, what the line must say). The
    // layout names the layer by digest, archives by member path; a blob that
    // lies about its size costs at most the size it declares (50 MiB).
    let lie = "is larger than the 52428800 bytes its descriptor declares";
    for (kind, attack, bound, says) in [
        ("oci-archive", "sparse", 100 * MIB, "100 MiB limit"),
        ("docker-archive", "sparse", 100 * MIB, "100 MiB limit"),
        ("oci", "sparse", 100 * MIB, "100 MiB limit"),
        ("oci", "sparse-lie", 50 * MIB, lie),
    ] {
        let (path, member) = build(&env, kind, attack);
        let named = member.rsplit('/').next().unwrap_or(&member);
        let measured = refused(
            &env,
            &baseline,
            kind,
            &path,
            &["--max-image-size=100M"],
            &[named, says],
        );
        let what = format!("{kind} {attack}: written for a refused 20 GiB layer");
        assert_within(&what, measured.written, bound + 16 * MIB);
    }
}

#[test]
fn an_xz_stream_declaring_a_4_gib_dictionary_is_refused_within_memory_bounds() {
    let env = Env::new();
    let baseline = prepare(&env);
    for kind in ["oci-archive", "docker-archive"] {
        let (path, _) = build(&env, kind, "xz-dict");
        let measured = refused(
            &env,
            &baseline,
            kind,
            &path,
            &[],
            &["xz stream needs more than 256 MiB"],
        );
        assert_within(&format!("{kind}: peak RSS"), measured.max_rss, 512 * MIB);
    }
}

#[test]
fn a_100_mb_index_is_refused_without_reading_it_whole() {
    let env = Env::new();
    let baseline = prepare(&env);
    for (kind, member) in [
        ("oci", "index.json"),
        ("oci-archive", "index.json"),
        ("docker-archive", "manifest.json"),
    ] {
        let (path, _) = build(&env, kind, "bigjson");
        let started = Instant::now();
        let quoted = format!("member \"{member}\" is larger than the 4 MiB");
        let measured = refused(&env, &baseline, kind, &path, &[], &[&quoted]);
        // Refused from its header, not copied out of the archive first.
        assert_within(&format!("{kind}: written"), measured.written, MIB);
        assert_within(&format!("{kind}: peak RSS"), measured.max_rss, 64 * MIB);
        assert!(started.elapsed() < Duration::from_secs(30));
    }
}

#[test]
fn image_render_and_extract_take_the_fetch_size_limit() {
    let env = Env::new();
    let (id, _, _) = prepare(&env);
    for command in ["render", "extract"] {
        let dest = env.path(&format!("{command}-small"));
        let err = env.fails(254, &["image", command, "--max-image-size=4K", &id, &dest]);
        assert!(err.contains("--max-image-size"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(!Path::new(&dest).exists(), "{command} left {dest}");
        let dest = env.path(command);
        env.ok(&["image", command, &id, &dest]);
        assert!(Path::new(&dest).join("rootfs/hello").is_file());
    }
    env.ok(&["image", "verify", &id]);
}

/// Puts a hostile file at a path.
type Plant = fn(&Path);

#[test]
fn a_signature_that_is_a_fifo_or_huge_is_refused_without_hanging() {
    let env = Env::new();
    let baseline = prepare(&env);
    let aci = env.work.join("app.aci");
    fs::write(&aci, common::busybox_aci("example.com/app", "1.0", &[])).unwrap();
    let signature = env.work.join("app.aci.asc");
    let make_fifo = |path: &Path| nix::unistd::mkfifo(path, nix::sys::stat::Mode::S_IRWXU).unwrap();
    // A 100 MB "signature": refused after reading at most the 1 MiB cap.
    let make_huge = |path: &Path| {
        fs::File::create(path)
            .unwrap()
            .set_len(100 * 1000 * 1000)
            .unwrap()
    };
    let cases: [(Plant, &str); 2] = [
        (make_fifo, "is not a regular file"),
        (make_huge, "not a detached signature"),
    ];
    for (plant, says) in cases {
        let _ = fs::remove_file(&signature);
        plant(&signature);
        let measured = measure(env.command(&["fetch", aci.to_str().unwrap()]));
        assert_eq!(measured.status.code(), Some(254), "{}", measured.stderr);
        assert!(measured.stderr.contains(says), "{}", measured.stderr);
        assert_within("peak RSS", measured.max_rss, 64 * MIB);
    }
    env.ok(&["image", "verify", &baseline.0]);
}
