//! `rkt-vmm`: boot a kernel in a micro-VM from the command line (a debugging and benchmarking
//! front end for the `vmm` library). Exits with the status in docs/foundation.md.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use vmm::config::{MacAddr, NetConfig};
use vmm::{KernelConfig, SerialOutput, ShareConfig, VmConfig, VsockConfig, EXIT_VMM_ERROR};

/// Boot a Linux kernel in a KVM micro-VM.
#[derive(Parser, Debug)]
#[command(name = "rkt-vmm", version)]
struct Args {
    /// Kernel: an ELF vmlinux (booted through PVH) or a bzImage.
    #[arg(long, value_name = "FILE")]
    kernel: PathBuf,
    /// Initramfs to load.
    #[arg(long, value_name = "FILE")]
    initrd: Option<PathBuf>,
    /// Kernel command line; everything after ` -- ` goes to init.
    #[arg(long, value_name = "CMDLINE", allow_hyphen_values = true)]
    cmdline: String,
    /// Guest memory in MiB.
    #[arg(long = "mem", value_name = "MiB", default_value_t = 128)]
    mem_mib: u64,
    /// Number of vCPUs.
    #[arg(long = "cpus", value_name = "N", default_value_t = 1)]
    cpus: u8,
    /// Where the guest console goes: stdout, off, or a file path (at most 4 MiB, then rotated
    /// to FILE.1, so at most 8 MiB on disk).
    #[arg(long, value_name = "stdout|off|FILE", default_value = "stdout")]
    serial: String,
    /// Print KVM and VMM counters as key=value lines on stderr at exit.
    #[arg(long)]
    stats: bool,
    /// Do not give the guest a virtio-rng entropy device.
    #[arg(long)]
    no_rng: bool,
    /// Serve host directory DIR to the guest over virtio-fs under TAG
    /// (in the guest: `mount -t virtiofs TAG /mnt`). Repeatable.
    #[arg(long, value_name = "TAG=DIR", value_parser = parse_share)]
    share: Vec<(String, PathBuf)>,
    /// Like --share, but the VMM refuses every write (EROFS). Repeatable.
    #[arg(long, value_name = "TAG=DIR", value_parser = parse_share)]
    share_ro: Vec<(String, PathBuf)>,
    /// Give the guest a vsock device reached through this host unix socket (which must not
    /// exist yet): connect and write `CONNECT <port>\n`; guest connections to a host port P
    /// registered with --vsock-port go to the socket `<PATH>_P`.
    #[arg(long, value_name = "PATH")]
    vsock: Option<PathBuf>,
    /// Let the guest connect to host port N (forwarded to the socket `<PATH>_N`, which must be
    /// a socket, not a symlink); connections to other ports are refused. Repeatable.
    #[arg(long = "vsock-port", value_name = "N", requires = "vsock")]
    vsock_port: Vec<u32>,
    /// The guest's vsock context ID.
    #[arg(long, value_name = "CID", default_value_t = 3, requires = "vsock",
          value_parser = clap::value_parser!(u64).range(3..u64::from(u32::MAX)))]
    vsock_cid: u64,
    /// Give the guest a NIC (virtio-net) on this existing tap device in the VMM's network
    /// namespace, with a random local MAC unless `mac=` names one. Repeatable: eth0, eth1, ...
    #[arg(long, value_name = "NAME[,mac=MAC]", value_parser = parse_tap)]
    tap: Vec<NetConfig>,
    /// Warm start, saving: boot (the command line should carry rkt.warm=1), wait until
    /// guest-init is ready for a snapshot, save the VM into DIR (`state` and `memory`) and exit 0.
    #[arg(long, value_name = "DIR", conflicts_with = "restore_from")]
    snapshot_to: Option<PathBuf>,
    /// Warm start, restoring: resume the snapshot in DIR (made with the same kernel, initramfs,
    /// --mem, --cpus and devices) and hand guest-init --cmdline as its parameters over vsock.
    #[arg(long, value_name = "DIR")]
    restore_from: Option<PathBuf>,
    /// Per-thread seccomp filters once the VM is built: `enforce` kills the VMM on a system
    /// call outside its thread's allow-list, `log` only logs it in the kernel log (`dmesg |
    /// grep type=1326`: comm= is the thread, syscall= the call), `off` installs none.
    #[arg(long, value_enum, value_name = "MODE", default_value_t = SeccompMode::Enforce)]
    seccomp: SeccompMode,
}

/// `--seccomp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum SeccompMode {
    Enforce,
    Log,
    Off,
}

/// Installs the seccomp-only sandbox policy `--seccomp` asks for.
fn install_seccomp(mode: SeccompMode) -> Result<(), String> {
    let mismatch = match mode {
        SeccompMode::Enforce => vmm::seccomp::Mismatch::KillProcess,
        SeccompMode::Log => vmm::seccomp::Mismatch::Log,
        SeccompMode::Off => return Ok(()),
    };
    vmm::seccomp::SeccompOnly::new(mismatch).install()
}

/// Parses `NAME[,mac=aa:bb:cc:dd:ee:ff]`.
fn parse_tap(arg: &str) -> Result<NetConfig, String> {
    let mut parts = arg.split(',');
    let name = parts.next().unwrap_or_default();
    if name.is_empty() {
        return Err(format!(
            "{arg:?} names no tap device (e.g. tap0,mac=52:54:00:12:34:56)"
        ));
    }
    let mut config = NetConfig::new(name);
    for option in parts {
        match option.split_once('=') {
            Some(("mac", mac)) => {
                config.mac = mac.parse::<MacAddr>().map_err(|e| e.to_string())?;
            }
            _ => {
                return Err(format!(
                    "unknown tap option {option:?}: only mac=MAC is known"
                ))
            }
        }
    }
    Ok(config)
}

/// Splits `TAG=DIR` at its first `=`.
fn parse_share(arg: &str) -> Result<(String, PathBuf), String> {
    match arg.split_once('=') {
        Some((tag, dir)) if !tag.is_empty() && !dir.is_empty() => {
            Ok((tag.to_string(), PathBuf::from(dir)))
        }
        _ => Err(format!("{arg:?} is not TAG=DIR (e.g. pod=/var/lib/pod)")),
    }
}

/// The shares in command-line order: writable ones first, then read-only ones.
fn shares(args: &Args) -> Vec<ShareConfig> {
    let writable = args.share.iter().map(|share| (share, false));
    let read_only = args.share_ro.iter().map(|share| (share, true));
    writable
        .chain(read_only)
        .map(|((tag, dir), read_only)| ShareConfig::new(tag.clone(), dir.clone(), read_only))
        .collect()
}

fn serial_output(arg: &str) -> SerialOutput {
    match arg {
        "stdout" => SerialOutput::Stdout,
        "off" => SerialOutput::Off,
        path => SerialOutput::File(PathBuf::from(path)),
    }
}

fn main() -> ExitCode {
    // Last resort only: nothing in the VMM is meant to panic, but if something does, the user
    // gets one line and the VMM-error status, never a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let one_line = info.to_string().replace('\n', " ");
        let _ = writeln!(
            std::io::stderr(),
            "rkt-vmm: error: internal error: {one_line}"
        );
        std::process::exit(EXIT_VMM_ERROR);
    }));
    let args = Args::parse();
    if let Err(e) = install_seccomp(args.seccomp) {
        let _ = writeln!(std::io::stderr(), "rkt-vmm: error: {e}");
        return ExitCode::from(EXIT_VMM_ERROR as u8);
    }
    let shares = shares(&args);
    let vsock = args.vsock.clone().map(|uds_path| VsockConfig {
        guest_cid: args.vsock_cid,
        uds_path,
        host_ports: args.vsock_port.clone(),
    });
    let config = VmConfig {
        mem_mib: args.mem_mib,
        vcpus: args.cpus,
        kernel: KernelConfig {
            path: args.kernel.clone(),
            cmdline: args.cmdline.clone(),
            initrd: args.initrd.clone(),
        },
        serial: serial_output(&args.serial),
        console_max_bytes: vmm::config::DEFAULT_CONSOLE_MAX_BYTES,
        collect_stats: args.stats,
        rng: !args.no_rng,
        shares,
        vsock,
        nets: args.tap.clone(),
    };
    if let Some(dir) = &args.snapshot_to {
        return match vmm::snapshot::snapshot_to(config, dir) {
            Ok(saved) => {
                let _ = writeln!(
                    std::io::stderr(),
                    "rkt-vmm: snapshot saved in {} ({} KiB of guest memory, {} KiB of state)",
                    saved.dir.display(),
                    saved.memory_bytes / 1024,
                    saved.state_bytes / 1024
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                let _ = writeln!(std::io::stderr(), "rkt-vmm: error: {e}");
                ExitCode::from(EXIT_VMM_ERROR as u8)
            }
        };
    }
    let result = match &args.restore_from {
        Some(dir) => vmm::snapshot::restore_from(config, dir),
        None => vmm::run_measured(config),
    };
    match result {
        Ok(report) => {
            let mut stderr = std::io::stderr().lock();
            if let Some(what) = report.outcome.describe() {
                let _ = writeln!(stderr, "rkt-vmm: {what}");
            }
            if let Some(stats) = report.stats {
                let _ = stats.write_to(&mut stderr);
            }
            ExitCode::from(report.outcome.exit_code() as u8)
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "rkt-vmm: error: {e}");
            ExitCode::from(EXIT_VMM_ERROR as u8)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_argument() {
        assert_eq!(serial_output("stdout"), SerialOutput::Stdout);
        assert_eq!(serial_output("off"), SerialOutput::Off);
        assert_eq!(serial_output("/tmp/x"), SerialOutput::File("/tmp/x".into()));
    }

    #[test]
    fn cli_parses_the_documented_flags() {
        let a = Args::try_parse_from([
            "rkt-vmm",
            "--kernel",
            "k",
            "--cmdline",
            "quiet -- echo hi",
            "--cpus",
            "2",
            "--stats",
            "--no-rng",
        ])
        .unwrap();
        assert_eq!((a.mem_mib, a.cpus, a.stats, a.no_rng), (128, 2, true, true));
        assert_eq!(a.seccomp, SeccompMode::Enforce);
        for (flag, mode) in [
            ("log", SeccompMode::Log),
            ("off", SeccompMode::Off),
            ("enforce", SeccompMode::Enforce),
        ] {
            let a = Args::try_parse_from([
                "rkt-vmm",
                "--kernel",
                "k",
                "--cmdline",
                "x",
                "--seccomp",
                flag,
            ])
            .unwrap();
            assert_eq!(a.seccomp, mode);
        }
        assert!(Args::try_parse_from([
            "rkt-vmm",
            "--kernel",
            "k",
            "--cmdline",
            "x",
            "--seccomp",
            "kill"
        ])
        .is_err());
        assert!(Args::try_parse_from(["rkt-vmm", "--cmdline", "x"]).is_err());
        let a = Args::try_parse_from([
            "rkt-vmm",
            "--kernel",
            "k",
            "--cmdline",
            "x",
            "--share-ro",
            "ro=/srv/a=b",
            "--share",
            "pod=/p",
            "--vsock",
            "/run/v.sock",
            "--vsock-port",
            "6000",
            "--vsock-port",
            "2",
        ])
        .unwrap();
        assert_eq!(a.vsock_port, vec![6000, 2]);
        assert_eq!(
            shares(&a),
            vec![
                ShareConfig::new("pod", "/p", false),
                ShareConfig::new("ro", "/srv/a=b", true),
            ]
        );
        assert_eq!(
            (a.vsock.as_deref(), a.vsock_cid),
            (Some("/run/v.sock".as_ref()), 3)
        );
        for bad in [
            ["--share", "=/p"],
            ["--share", "pod"],
            ["--vsock-cid", "2"],
            ["--vsock-port", "-1"],
            ["--vsock-port", "x"],
        ] {
            let mut argv = vec![
                "rkt-vmm",
                "--kernel",
                "k",
                "--cmdline",
                "x",
                "--vsock",
                "/v",
            ];
            argv.extend(bad);
            assert!(Args::try_parse_from(argv).is_err(), "{bad:?} accepted");
        }
        assert!(Args::try_parse_from([
            "rkt-vmm",
            "--kernel",
            "k",
            "--cmdline",
            "x",
            "--cpus",
            "300"
        ])
        .is_err());
    }

    #[test]
    fn tap_argument() {
        let a = parse_tap("tap0,mac=52:54:00:12:34:56").unwrap();
        assert_eq!(a.tap_name, "tap0");
        assert_eq!(a.mac.to_string(), "52:54:00:12:34:56");
        let b = parse_tap("tap1").unwrap();
        assert_eq!((b.tap_name.as_str(), b.mac.0[0] & 3), ("tap1", 2));
        for bad in [
            "",
            ",mac=52:54:00:12:34:56",
            "t,mac=01:00:5e:00:00:01",
            "t,mtu=9000",
            "t,mac",
        ] {
            assert!(parse_tap(bad).is_err(), "{bad:?}");
        }
    }
}
