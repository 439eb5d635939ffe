//! Shared helpers for the CLI tests: a throwaway --dir/--local-config and a
//! way to run the real `rkt` binary in it.

#![allow(dead_code)] // each test file uses a different subset

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

pub const BUSYBOX: &str = "/bin/busybox";

pub fn busybox() -> Vec<u8> {
    fs::read(BUSYBOX).expect("these tests need busybox-static (/bin/busybox)")
}

pub struct Env {
    _root: tempfile::TempDir,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub work: PathBuf,
}

impl Env {
    pub fn new() -> Env {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        let config = root.path().join("etc-rkt");
        let work = root.path().join("work");
        fs::create_dir_all(&work).unwrap();
        Env {
            dir,
            config,
            work,
            _root: root,
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_rkt"));
        command
            .arg(format!("--dir={}", self.dir.display()))
            .arg(format!("--local-config={}", self.config.display()))
            .arg(format!(
                "--system-config={}",
                self.work.join("no-system-config").display()
            ))
            .args(args)
            .stdin(Stdio::null());
        command
    }

    pub fn rkt(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs rkt, asserting success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.rkt(args);
        assert!(
            out.status.success(),
            "rkt {args:?} failed ({:?}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs rkt, asserting exit status `code`; returns stderr.
    pub fn fails(&self, code: i32, args: &[&str]) -> String {
        let out = self.rkt(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "rkt {args:?}: stdout {} stderr {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    pub fn path(&self, name: &str) -> String {
        self.work.join(name).display().to_string()
    }
}
