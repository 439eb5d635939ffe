//! `--stats`: KVM's own counters (read from the binary stats file descriptors that
//! KVM_GET_STATS_FD returns for the VM and each vCPU), the VMM's exit counters by port, the
//! timeline of the run and the VMM's CPU time and peak RSS, printed as `key=value` lines.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::io::{AsRawFd, FromRawFd};
use std::time::Duration;

use vmm_sys_util::ioctl::ioctl;
use vmm_sys_util::ioctl_io_nr;

use crate::snapshot::Prefault;

const KVMIO: u32 = 0xae;
ioctl_io_nr!(KVM_GET_STATS_FD, KVMIO, 0xce);

/// Size of `struct kvm_stats_header`.
const HEADER_LEN: usize = 24;
/// Size of `struct kvm_stats_desc` without its name.
const DESC_FIXED_LEN: usize = 16;
const STATS_TYPE_MASK: u32 = 0xf;
const STATS_TYPE_CUMULATIVE: u32 = 0;
const STATS_TYPE_INSTANT: u32 = 1;
const STATS_TYPE_PEAK: u32 = 2;

/// Opens the binary stats file of a VM or vCPU fd.
pub fn open_stats_fd<F: AsRawFd>(fd: &F) -> io::Result<File> {
    // SAFETY: KVM_GET_STATS_FD takes no argument and returns a new fd or -1; `fd` is a VM or
    // vCPU file descriptor owned by the caller.
    let ret = unsafe { ioctl(fd, KVM_GET_STATS_FD()) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this fd and nobody else owns it.
    Ok(unsafe { File::from_raw_fd(ret) })
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Parses the stats layout: a header, `num_desc` descriptors with names, and the data block.
/// Returns the single-value counters (histograms are skipped) by name.
pub fn parse_stats(header: &[u8], descs: &[u8], data: &[u8]) -> Vec<(String, u64)> {
    let (Some(name_size), Some(num_desc)) = (u32_at(header, 4), u32_at(header, 8)) else {
        return Vec::new();
    };
    let desc_len = DESC_FIXED_LEN + name_size as usize;
    let mut out = Vec::new();
    for desc in descs.chunks_exact(desc_len).take(num_desc as usize) {
        let flags = u32_at(desc, 0).unwrap_or(0);
        let size = u16::from_le_bytes([desc[6], desc[7]]);
        let offset = u32_at(desc, 8).unwrap_or(0) as usize;
        let kind = flags & STATS_TYPE_MASK;
        if size != 1
            || !matches!(
                kind,
                STATS_TYPE_CUMULATIVE | STATS_TYPE_INSTANT | STATS_TYPE_PEAK
            )
        {
            continue;
        }
        let name_bytes = &desc[DESC_FIXED_LEN..];
        let name_len = name_bytes
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(name_bytes.len());
        let name = String::from_utf8_lossy(&name_bytes[..name_len]).into_owned();
        let Some(value) = data.get(offset..offset + 8) else {
            continue;
        };
        let value = u64::from_le_bytes(value.try_into().unwrap_or([0; 8]));
        out.push((name, value));
    }
    out
}

/// Reads all single-value counters from a stats fd.
pub fn read_stats(file: &File) -> io::Result<Vec<(String, u64)>> {
    let mut header = [0u8; HEADER_LEN];
    file.read_exact_at(&mut header, 0)?;
    let field = |i: usize| u32_at(&header, i * 4).unwrap_or(0) as u64;
    let (name_size, num_desc, desc_offset, data_offset) = (field(1), field(2), field(4), field(5));
    let mut descs = vec![0u8; ((DESC_FIXED_LEN as u64 + name_size) * num_desc) as usize];
    file.read_exact_at(&mut descs, desc_offset)?;
    // The data block ends after the last descriptor's values.
    let desc_len = DESC_FIXED_LEN + name_size as usize;
    let data_len = descs
        .chunks_exact(desc_len)
        .map(|d| {
            let size = u16::from_le_bytes([d[6], d[7]]) as usize;
            u32_at(d, 8).unwrap_or(0) as usize + size * 8
        })
        .max()
        .unwrap_or(0);
    let mut data = vec![0u8; data_len];
    file.read_exact_at(&mut data, data_offset)?;
    Ok(parse_stats(&header, &descs, &data))
}

/// The VMM's own exit counters, per vCPU thread and merged at the end.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExitCounters {
    /// Port reads by port.
    pub pio_in: BTreeMap<u16, u64>,
    /// Port writes by port.
    pub pio_out: BTreeMap<u16, u64>,
    /// MMIO reads by address.
    pub mmio_read: BTreeMap<u64, u64>,
    /// MMIO writes by address.
    pub mmio_write: BTreeMap<u64, u64>,
    /// Accesses nobody handled.
    pub unhandled: u64,
}

impl ExitCounters {
    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &ExitCounters) {
        for (k, v) in &other.pio_in {
            *self.pio_in.entry(*k).or_default() += v;
        }
        for (k, v) in &other.pio_out {
            *self.pio_out.entry(*k).or_default() += v;
        }
        for (k, v) in &other.mmio_read {
            *self.mmio_read.entry(*k).or_default() += v;
        }
        for (k, v) in &other.mmio_write {
            *self.mmio_write.entry(*k).or_default() += v;
        }
        self.unhandled += other.unhandled;
    }
}

/// Everything `--stats` prints.
#[derive(Clone, Debug, Default)]
pub struct VmStats {
    /// VM-wide KVM counters.
    pub kvm_vm: Vec<(String, u64)>,
    /// vCPU KVM counters summed over all vCPUs.
    pub kvm_vcpu: BTreeMap<String, u64>,
    /// The VMM's exit counters.
    pub exits: ExitCounters,
    /// From `run()` to the vCPU threads starting: the VMM's own set-up time.
    pub to_vcpus_started: Option<Duration>,
    /// From `run()` to the guest's first console byte.
    pub to_first_output: Option<Duration>,
    /// From `run()` to guest-init's exit marker.
    pub to_marker: Option<Duration>,
    /// From `run()` to the end of the VM.
    pub total: Duration,
    /// User + system CPU time of the VMM process.
    pub cpu_time: Duration,
    /// Time the VMM's threads spent running guest code (part of `cpu_time`).
    pub guest_time: Option<Duration>,
    /// Peak resident set size of the VMM process, guest memory included.
    pub max_rss_kib: u64,
    /// Guest RAM size, to subtract from the RSS.
    pub guest_mem_mib: u64,
    /// A restore's mapping of the snapshot's memory ahead of the guest.
    pub snapshot_prefault: Option<Prefault>,
}

/// User + system CPU time and peak RSS of this process.
pub fn process_usage() -> (Duration, u64) {
    // SAFETY: zeroed rusage is valid; getrusage fills it and cannot fail for RUSAGE_SELF.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid out pointer.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    (
        tv(usage.ru_utime) + tv(usage.ru_stime),
        usage.ru_maxrss as u64,
    )
}

/// Time this process's threads, exited ones included, spent in guest mode: field 43
/// (`guest_time`, in clock ticks) of /proc/self/stat.
pub fn process_guest_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_guest_time(&stat, clock_ticks_per_second()?)
}

fn clock_ticks_per_second() -> Option<u64> {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (ticks > 0).then_some(ticks as u64)
}

/// Extracts `guest_time` from a /proc/PID/stat line. The command name (field 2) may contain
/// spaces and parentheses, so fields are counted from after its last ')'.
fn parse_guest_time(stat: &str, ticks_per_second: u64) -> Option<Duration> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    // The first field after the name is field 3 (state); guest_time is field 43.
    let ticks: u64 = after_comm.split_whitespace().nth(43 - 3)?.parse().ok()?;
    Some(Duration::from_millis(ticks * 1000 / ticks_per_second))
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

impl VmStats {
    /// Writes the `key=value` lines.
    pub fn write_to(&self, out: &mut dyn Write) -> io::Result<()> {
        if let Some(d) = self.to_vcpus_started {
            writeln!(out, "time.vcpus_started_ms={}", ms(d))?;
        }
        if let Some(d) = self.to_first_output {
            writeln!(out, "time.first_output_ms={}", ms(d))?;
        }
        if let Some(d) = self.to_marker {
            writeln!(out, "time.exit_marker_ms={}", ms(d))?;
        }
        writeln!(out, "time.total_ms={}", ms(self.total))?;
        writeln!(out, "vmm.cpu_ms={}", ms(self.cpu_time))?;
        if let Some(d) = self.guest_time {
            writeln!(out, "vmm.guest_time_ms={}", ms(d))?;
        }
        writeln!(out, "vmm.max_rss_kib={}", self.max_rss_kib)?;
        writeln!(out, "vmm.guest_mem_mib={}", self.guest_mem_mib)?;
        if let Some(prefault) = &self.snapshot_prefault {
            write_prefault(out, prefault)?;
        }
        let pio: u64 = self
            .exits
            .pio_in
            .values()
            .chain(self.exits.pio_out.values())
            .sum();
        let mmio: u64 = self
            .exits
            .mmio_read
            .values()
            .chain(self.exits.mmio_write.values())
            .sum();
        writeln!(out, "vmm.pio_exits={pio}")?;
        writeln!(out, "vmm.mmio_exits={mmio}")?;
        writeln!(out, "vmm.unhandled_accesses={}", self.exits.unhandled)?;
        for (port, n) in &self.exits.pio_in {
            writeln!(out, "vmm.pio_in.{port:#06x}={n}")?;
        }
        for (port, n) in &self.exits.pio_out {
            writeln!(out, "vmm.pio_out.{port:#06x}={n}")?;
        }
        for (addr, n) in &self.exits.mmio_read {
            writeln!(out, "vmm.mmio_read.{addr:#x}={n}")?;
        }
        for (addr, n) in &self.exits.mmio_write {
            writeln!(out, "vmm.mmio_write.{addr:#x}={n}")?;
        }
        for (name, v) in self.kvm_vm.iter().filter(|(_, v)| *v != 0) {
            writeln!(out, "kvm.vm.{name}={v}")?;
        }
        for (name, v) in self.kvm_vcpu.iter().filter(|(_, v)| **v != 0) {
            writeln!(out, "kvm.vcpu.{name}={v}")?;
        }
        Ok(())
    }
}

/// The `snapshot.prefault*` lines of a restore.
fn write_prefault(out: &mut dyn Write, prefault: &Prefault) -> io::Result<()> {
    match prefault {
        Prefault::Unsupported => writeln!(out, "snapshot.prefault=unsupported"),
        Prefault::Mapped {
            bytes,
            took,
            stopped,
        } => {
            writeln!(out, "snapshot.prefault_bytes={bytes}")?;
            writeln!(out, "snapshot.prefault_ms={}", ms(*took))?;
            if let Some(errno) = stopped {
                let error = io::Error::from_raw_os_error(*errno);
                writeln!(out, "snapshot.prefault_stopped={error}")?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefault_lines_say_what_happened() {
        let lines = |p: Prefault| {
            let mut out = Vec::new();
            write_prefault(&mut out, &p).unwrap();
            String::from_utf8(out).unwrap()
        };
        assert_eq!(
            lines(Prefault::Unsupported),
            "snapshot.prefault=unsupported\n"
        );
        let stopped = lines(Prefault::Mapped {
            bytes: 8192,
            took: Duration::from_micros(1500),
            stopped: Some(libc::ENOENT),
        });
        assert!(stopped.starts_with(
            "snapshot.prefault_bytes=8192\nsnapshot.prefault_ms=1.5\nsnapshot.prefault_stopped="
        ));
        assert!(stopped.contains("No such file"), "{stopped}");
    }

    fn desc(flags: u32, size: u16, offset: u32, name: &str, name_size: usize) -> Vec<u8> {
        let mut d = Vec::new();
        d.extend_from_slice(&flags.to_le_bytes());
        d.extend_from_slice(&0i16.to_le_bytes());
        d.extend_from_slice(&size.to_le_bytes());
        d.extend_from_slice(&offset.to_le_bytes());
        d.extend_from_slice(&0u32.to_le_bytes());
        let mut n = name.as_bytes().to_vec();
        n.resize(name_size, 0);
        d.extend_from_slice(&n);
        d
    }

    #[test]
    fn parses_counters_and_skips_histograms() {
        let name_size = 48;
        let mut header = Vec::new();
        for v in [0u32, name_size as u32, 3, 24, 24, 0] {
            header.extend_from_slice(&v.to_le_bytes());
        }
        let mut descs = desc(0, 1, 0, "io_exits", name_size);
        descs.extend(desc(STATS_TYPE_PEAK, 1, 8, "halt_poll_max", name_size));
        descs.extend(desc(
            3, /* linear histogram */
            4, 16, "hist", name_size,
        ));
        let mut data = Vec::new();
        for v in [250u64, 7, 1, 2, 3, 4] {
            data.extend_from_slice(&v.to_le_bytes());
        }
        let stats = parse_stats(&header, &descs, &data);
        assert_eq!(
            stats,
            vec![
                ("io_exits".to_string(), 250),
                ("halt_poll_max".to_string(), 7)
            ]
        );
    }

    #[test]
    fn output_is_key_value_lines() {
        let mut s = VmStats::default();
        s.exits.pio_out.insert(0x3f8, 12);
        s.kvm_vcpu.insert("io_exits".into(), 12);
        s.kvm_vcpu.insert("nmi_exits".into(), 0);
        let mut out = Vec::new();
        s.write_to(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("vmm.pio_out.0x03f8=12\n"), "{text}");
        assert!(text.contains("kvm.vcpu.io_exits=12\n"));
        assert!(!text.contains("nmi_exits"), "zero counters are left out");
        assert!(text.lines().all(|l| l.split_once('=').is_some()));
    }

    #[test]
    fn guest_time_is_field_43() {
        let mut fields: Vec<String> = (3..=52).map(|n| n.to_string()).collect();
        fields[43 - 3] = "250".into();
        let stat = format!("1234 (rkt vmm) (x)) {}", fields.join(" "));
        assert_eq!(
            parse_guest_time(&stat, 100),
            Some(Duration::from_millis(2500))
        );
        assert_eq!(parse_guest_time("garbage", 100), None);
        assert!(process_guest_time().is_some(), "readable for this process");
    }

    #[test]
    fn merge_adds() {
        let mut a = ExitCounters::default();
        a.pio_in.insert(0x64, 2);
        let mut b = ExitCounters::default();
        b.pio_in.insert(0x64, 3);
        b.unhandled = 1;
        a.merge(&b);
        assert_eq!(a.pio_in[&0x64], 5);
        assert_eq!(a.unhandled, 1);
    }
}
