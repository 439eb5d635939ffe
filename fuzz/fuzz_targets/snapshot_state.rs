//! The snapshot state file: read and checked by `read_state` (the magic, version, length and
//! checksum header, then the postcard-encoded state and its bounds), the way `load` reads a
//! file that may have been tampered with. The KVM structures it carries are decoded as a
//! restore would.
//!
//! The first input byte picks the mode: even, the rest is the whole file; odd, the rest is the
//! encoded payload and the harness puts a correct header (with its SHA-256) in front, so that
//! the fuzzer gets past the checksum into the state itself.
//!
//! What must hold: a state that reads back writes to a file that reads back equal.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vmm::snapshot::fuzzing::{file_bytes, read_state, saved_cpuid, write_state};

fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // tools/fuzz points TMPDIR at a tmpfs for this target: write_state syncs the file,
        // which on a disk costs more than everything else here together.
        let dir = std::env::temp_dir().join(format!("rkt-fuzz-snapshot-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temporary directory");
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let file = if mode % 2 == 1 {
        file_bytes(rest)
    } else {
        rest.to_vec()
    };
    let path = dir().join("state");
    std::fs::write(&path, &file).expect("writing the state file");
    let Ok(state) = read_state(&path) else {
        return;
    };
    for vcpu in &state.vcpus {
        let _ = saved_cpuid(vcpu);
    }
    let _ = state.devices.serial.to_state();
    let again = dir().join("again");
    write_state(&again, &state).expect("writing a state that was read");
    let reread = read_state(&again).expect("a state we wrote reads back");
    assert_eq!(reread, state, "the state changed on its way through a file");
});
