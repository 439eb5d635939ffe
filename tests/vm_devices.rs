//! Boots our guest kernel with the VMM's virtio devices and checks that the guest finds and uses
//! them: virtio-rng becomes the guest's hardware RNG and delivers fresh random bytes, `--no-rng`
//! removes it, and devices work with more than one vCPU.
//! Needs ordinary KVM: run inside the emulated KVM host on machines whose /dev/kvm is kvm_pvm.

use e2e::{boot_with_flags, cmdline, vmlinux, Finished};

/// Prints the current hardware RNG, the number of virtio devices, and two 64-byte samples
/// from /dev/hwrng as hex (the unquoted command substitution puts each sample on one line).
const RNG_PROBE: &str = "/bin/sh -c \"echo rng=$(cat /sys/class/misc/hw_random/rng_current); \
     echo virtio-devices=$(ls /sys/bus/virtio/devices | wc -l); \
     test -c /dev/hwrng || exit 0; \
     echo sample1 $(head -c 64 /dev/hwrng | od -An -tx1 -v); \
     echo sample2 $(head -c 64 /dev/hwrng | od -An -tx1 -v)\"";

/// The bytes of the line starting with `label`.
fn sample(run: &Finished, label: &str) -> Vec<u8> {
    let line = run
        .stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label} line: {run}"));
    line.split_whitespace()
        .map(|hex| u8::from_str_radix(hex, 16).unwrap_or_else(|_| panic!("bad byte {hex}: {run}")))
        .collect()
}

fn assert_rng_works(run: &Finished) {
    assert_eq!(run.code(), 0, "{run}");
    assert!(run.stdout.contains("rng=virtio_rng"), "{run}");
    assert!(run.stdout.contains("virtio-devices=1"), "{run}");
    let first = sample(run, "sample1 ");
    let second = sample(run, "sample2 ");
    assert_eq!(first.len(), 64, "{run}");
    assert_eq!(second.len(), 64, "{run}");
    assert_ne!(first, second, "two reads returned the same bytes: {run}");
    assert!(first.iter().any(|b| *b != 0), "{run}");
    assert!(second.iter().any(|b| *b != 0), "{run}");
}

#[test]
fn virtio_rng_is_the_guest_hwrng_and_delivers_random_bytes() {
    let run = boot_with_flags(&vmlinux(), 1, &cmdline(RNG_PROBE), &[]);
    assert_rng_works(&run);
}

#[test]
fn virtio_rng_works_with_two_vcpus() {
    let run = boot_with_flags(
        &vmlinux(),
        2,
        &cmdline(&RNG_PROBE.replace("echo rng=", "echo cpus=$(nproc) rng=")),
        &[],
    );
    assert!(run.stdout.contains("cpus=2"), "{run}");
    assert_rng_works(&run);
}

#[test]
fn no_rng_boots_without_the_device() {
    let run = boot_with_flags(&vmlinux(), 1, &cmdline(RNG_PROBE), &["--no-rng"]);
    assert_eq!(run.code(), 0, "{run}");
    assert!(!run.stdout.contains("virtio_rng"), "{run}");
    assert!(run.stdout.contains("virtio-devices=0"), "{run}");
}
