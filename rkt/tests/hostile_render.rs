//! Hostile images against render, end to end through the real `rkt` binary:
//! a hard-link bomb, hard links that try to leave the tree, and dependency
//! graphs that fan out, nest too deep, grow too wide or loop. Each image is
//! built here (python3's tarfile for the ACIs, as a publisher would), and each
//! case checks the exit code and the one line naming the problem, a canary
//! outside the store, the disk or memory the claim bounds (peak RSS from
//! wait4's rusage), and that `rkt image verify` still passes.

mod common;

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};

use common::Env;

const MIB: u64 = 1024 * 1024;

/// What one measured rkt run did.
struct Measured {
    code: Option<i32>,
    stderr: String,
    /// Peak resident set size, in bytes (ru_maxrss of the reaped child).
    peak_rss: u64,
}

/// Runs rkt with `args` and reaps it with wait4, for its peak RSS.
// The child is reaped by wait4 itself, which clippy cannot see.
#[allow(clippy::zombie_processes)]
fn measured(env: &Env, args: &[&str]) -> Measured {
    let stderr_path = env.work.join("measured.stderr");
    let stderr_file = fs::File::create(&stderr_path).unwrap();
    let child = env
        .command(args)
        .stdout(Stdio::null())
        .stderr(stderr_file)
        .spawn()
        .unwrap();
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value of that plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own unreaped child; `status` and `usage` are live
    // locals the kernel writes into. The Child is not waited on afterwards.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid, "wait4: {}", std::io::Error::last_os_error());
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    Measured {
        code,
        stderr: fs::read_to_string(&stderr_path).unwrap(),
        peak_rss: u64::try_from(usage.ru_maxrss).unwrap() * 1024,
    }
}

/// Runs a python3 script that writes an image into `out`.
fn python(script: &str, out: &Path) {
    let status = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(out)
        .status()
        .expect("these tests need python3");
    assert!(
        status.success(),
        "python3 failed to build {}",
        out.display()
    );
}

/// Python source for `add(name, data, kind, link)` into tarfile `tar`.
const PY_ADD: &str = r#"
import io, sys, tarfile
def add(tar, name, data=b"", kind=tarfile.REGTYPE, link="", mode=0o644):
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime, info.linkname = kind, mode, 1_700_000_000, link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
def manifest(name, deps=()):
    import json
    m = {"acKind": "ImageManifest", "acVersion": "0.8.11", "name": name,
         "labels": [{"name": "version", "value": "1"}]}
    if deps:
        m["dependencies"] = [{"imageName": d, "labels": [{"name": "version", "value": "1"}]}
                             for d in deps]
    return json.dumps(m).encode()
"#;

/// Bytes the files under `dir` occupy on disk, each inode counted once
/// (what `du` reports).
fn disk_usage(dir: &Path) -> u64 {
    fn walk(dir: &Path, seen: &mut HashSet<(u64, u64)>, total: &mut u64) {
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let meta = fs::symlink_metadata(entry.path()).unwrap();
            if seen.insert((meta.dev(), meta.ino())) {
                *total += meta.blocks() * 512;
            }
            if meta.is_dir() {
                walk(&entry.path(), seen, total);
            }
        }
    }
    let mut total = 0;
    walk(dir, &mut HashSet::new(), &mut total);
    total
}

/// A file outside the store whose content and mtime must not change.
struct Canary {
    path: std::path::PathBuf,
    mtime: i64,
}

impl Canary {
    fn plant(env: &Env) -> Canary {
        let path = env.work.join("canary");
        fs::write(&path, b"canary").unwrap();
        let mtime = fs::metadata(&path).unwrap().mtime();
        Canary { path, mtime }
    }

    fn check(&self) {
        assert_eq!(fs::read(&self.path).unwrap(), b"canary");
        assert_eq!(fs::metadata(&self.path).unwrap().mtime(), self.mtime);
    }
}

/// The one line rkt printed on stderr, checked to be one line.
fn one_line(stderr: &str) -> &str {
    let trimmed = stderr.trim_end();
    assert!(
        !trimmed.contains('\n') && trimmed.starts_with("rkt: "),
        "expected one error line, got {stderr:?}"
    );
    trimmed
}

fn verify_all(env: &Env) {
    let listing = env.ok(&["image", "list", "--no-legend", "--full", "--fields=id"]);
    let ids: Vec<&str> = listing.split_whitespace().collect();
    assert!(!ids.is_empty());
    let mut args = vec!["image", "verify"];
    args.extend(ids);
    env.ok(&args);
}

#[test]
fn a_hard_link_bomb_renders_as_links_in_the_store_and_in_the_copy() {
    let env = Env::new();
    let canary = Canary::plant(&env);
    let aci = env.work.join("bomb.aci");
    // One 64 MiB file and 3,000 hard links to it, gzipped: about 90 KB.
    python(
        &format!(
            "{PY_ADD}
import gzip
with gzip.open(sys.argv[1], 'wb', compresslevel=6) as gz:
    with tarfile.open(fileobj=gz, mode='w', format=tarfile.GNU_FORMAT) as tar:
        add(tar, 'manifest', manifest('example.com/bomb'))
        add(tar, 'rootfs', kind=tarfile.DIRTYPE, mode=0o755)
        add(tar, 'rootfs/big', bytes(64 << 20))
        for n in range(3000):
            add(tar, 'rootfs/l%04d' % n, kind=tarfile.LNKTYPE, link='rootfs/big')
"
        ),
        &aci,
    );
    assert!(fs::metadata(&aci).unwrap().len() < 200 * 1024);
    let aci = aci.display().to_string();
    env.ok(&["fetch", "--insecure-options=image", &aci]);

    let out = env.path("rendered");
    let run = measured(
        &env,
        &["image", "render", "--rootfs-only", "example.com/bomb", &out],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let out = Path::new(&out);
    let big = fs::metadata(out.join("big")).unwrap();
    assert_eq!(big.len(), 64 * MIB);
    assert_eq!(big.nlink(), 3001, "the 3,000 links are links to big");
    let link = fs::metadata(out.join("l2999")).unwrap();
    assert_eq!((link.dev(), link.ino()), (big.dev(), big.ino()));

    let rendered = disk_usage(out);
    let trees = disk_usage(&env.dir.join("cas/tree"));
    assert!(rendered <= 70 * MIB, "the render takes {rendered} bytes");
    assert!(trees <= 70 * MIB, "the store's tree takes {trees} bytes");
    // Copying with links needs no buffer the size of the file.
    assert!(
        run.peak_rss <= 64 * MIB,
        "render peaked at {} MiB",
        run.peak_rss / MIB
    );
    canary.check();
    verify_all(&env);
}

#[test]
fn hard_links_out_of_the_tree_or_to_symlinks_or_directories_are_refused() {
    let cases = [
        // (entry, link target, what the line says)
        ("rootfs/h", "../../../etc/passwd", "`..`"),
        ("rootfs/h", "/etc/passwd", "absolute"),
        ("rootfs/h", "manifest", "outside the extracted tree"),
        ("rootfs/h", "rootfs/sym", "not a regular file"),
        ("rootfs/h", "rootfs/dir", "not a regular file"),
        ("rootfs/h", "rootfs/sym/passwd", "is a symlink"),
    ];
    for (entry, target, says) in cases {
        let env = Env::new();
        let canary = Canary::plant(&env);
        let aci = env.work.join("links.aci");
        python(
            &format!(
                "{PY_ADD}
with tarfile.open(sys.argv[1], 'w', format=tarfile.GNU_FORMAT) as tar:
    add(tar, 'manifest', manifest('example.com/links'))
    add(tar, 'rootfs', kind=tarfile.DIRTYPE, mode=0o755)
    add(tar, 'rootfs/dir', kind=tarfile.DIRTYPE, mode=0o755)
    add(tar, 'rootfs/sym', kind=tarfile.SYMTYPE, link='/etc')
    add(tar, '{entry}', kind=tarfile.LNKTYPE, link='{target}')
"
            ),
            &aci,
        );
        let aci = aci.display().to_string();
        env.ok(&["fetch", "--insecure-options=image", &aci]);
        let out = env.path("rendered");
        let err = env.fails(
            254,
            &[
                "image",
                "render",
                "--rootfs-only",
                "example.com/links",
                &out,
            ],
        );
        let line = one_line(&err);
        assert!(
            line.contains(&format!("{entry:?}")) && line.contains(says),
            "{target}: {line}"
        );
        assert!(!Path::new(&out).exists(), "{target}: a render was left");
        let leftovers: Vec<_> = fs::read_dir(env.dir.join("cas/tree"))
            .map(|dir| dir.map(|e| e.unwrap().file_name()).collect())
            .unwrap_or_default();
        assert!(leftovers.is_empty(), "{target}: trees left: {leftovers:?}");
        canary.check();
        verify_all(&env);
    }
}

/// Builds `levels` ACIs `example.com/l0` .. `l{levels-1}`, each depending
/// twice on the one below, and fetches them all.
fn fetch_fan_out(env: &Env, levels: usize) {
    let dir = env.work.join("fan");
    fs::create_dir_all(&dir).unwrap();
    python(
        &format!(
            "{PY_ADD}
import os
for level in range({levels}):
    below = ['example.com/l%d' % (level - 1)] * 2 if level else []
    with tarfile.open(os.path.join(sys.argv[1], 'l%d.aci' % level), 'w') as tar:
        add(tar, 'manifest', manifest('example.com/l%d' % level, below))
        add(tar, 'rootfs', kind=tarfile.DIRTYPE, mode=0o755)
        add(tar, 'rootfs/level%d' % level, b'%d' % level)
"
        ),
        &dir,
    );
    for level in 0..levels {
        let aci = dir.join(format!("l{level}.aci")).display().to_string();
        env.ok(&["fetch", "--insecure-options=image", &aci]);
    }
}

/// Renders `example.com/l{top}` measured, asserting exit `code` and a peak
/// RSS of at most 256 MiB; returns the destination and the run.
fn render_fan_out_top(env: &Env, top: usize, code: i32) -> (String, Measured) {
    let out = env.path("rendered");
    let image = format!("example.com/l{top}");
    let run = measured(env, &["image", "render", "--rootfs-only", &image, &out]);
    assert_eq!(run.code, Some(code), "{}", run.stderr);
    assert!(
        run.peak_rss <= 256 * MIB,
        "render peaked at {} MiB",
        run.peak_rss / MIB
    );
    (out, run)
}

#[test]
fn dependency_fan_out_renders_each_image_once_with_bounded_memory() {
    let env = Env::new();
    let canary = Canary::plant(&env);
    // l16 sits 16 levels above l0, the deepest allowed: 2^16 paths through
    // the graph, 17 distinct images.
    fetch_fan_out(&env, 17);
    let (out, _) = render_fan_out_top(&env, 16, 0);
    for level in 0..17 {
        assert_eq!(
            fs::read_to_string(Path::new(&out).join(format!("level{level}"))).unwrap(),
            level.to_string()
        );
    }
    canary.check();
    verify_all(&env);
}

#[test]
fn a_25_level_fan_out_is_refused_naming_the_chain_with_bounded_memory() {
    let env = Env::new();
    let canary = Canary::plant(&env);
    fetch_fan_out(&env, 25);
    let (out, run) = render_fan_out_top(&env, 24, 254);
    let line = one_line(&run.stderr);
    assert!(
        line.contains("deeper than 16 levels")
            && line.contains("example.com/l24 -> example.com/l23")
            && line.ends_with("-> example.com/l7"),
        "{line}"
    );
    assert!(!Path::new(&out).exists());
    canary.check();
    verify_all(&env);
}

#[test]
fn a_70_image_graph_and_a_cycle_are_refused_in_one_line() {
    let env = Env::new();
    let canary = Canary::plant(&env);
    let dir = env.work.join("graphs");
    fs::create_dir_all(&dir).unwrap();
    python(
        &format!(
            "{PY_ADD}
import os
def aci(file, name, deps=()):
    with tarfile.open(os.path.join(sys.argv[1], file), 'w') as tar:
        add(tar, 'manifest', manifest(name, deps))
        add(tar, 'rootfs', kind=tarfile.DIRTYPE, mode=0o755)
leaves = ['example.com/w%d' % n for n in range(69)]
for n, leaf in enumerate(leaves):
    aci('w%d.aci' % n, leaf)
aci('wide.aci', 'example.com/wide', leaves)
aci('a.aci', 'example.com/a', ['example.com/b'])
aci('b.aci', 'example.com/b', ['example.com/c'])
aci('c.aci', 'example.com/c', ['example.com/a'])
"
        ),
        &dir,
    );
    for entry in fs::read_dir(&dir).unwrap() {
        let aci = entry.unwrap().path().display().to_string();
        env.ok(&["fetch", "--insecure-options=image", &aci]);
    }

    let out = env.path("rendered");
    let err = env.fails(
        254,
        &["image", "render", "--rootfs-only", "example.com/wide", &out],
    );
    let line = one_line(&err);
    assert!(
        line.contains("more than 64 distinct images")
            && line.contains("example.com/wide -> example.com/w64"),
        "{line}"
    );

    let err = env.fails(
        254,
        &["image", "render", "--rootfs-only", "example.com/b", &out],
    );
    let line = one_line(&err);
    assert!(
        line.contains(
            "dependency cycle: example.com/b -> example.com/c -> example.com/a -> example.com/b"
        ),
        "{line}"
    );
    assert!(!Path::new(&out).exists());
    canary.check();
    verify_all(&env);
}
