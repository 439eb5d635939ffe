//! The Intel MultiProcessor table (MP spec 1.4): tells the guest how many CPUs there are and
//! that an IOAPIC exists. Without it (or an ACPI MADT) Linux drives the PIT and PIC through
//! thousands of port-I/O exits instead of using the LAPIC timer and the IOAPIC.
//!
//! Layout written at `MPTABLE_START`: the 16-byte floating pointer, then the configuration
//! table (header, one processor entry per vCPU, the ISA bus, the IOAPIC, one I/O interrupt
//! entry per IOAPIC pin, and the two local interrupt entries for LINT0/LINT1).

use thiserror::Error;
use vm_memory::{Bytes, GuestAddress};

use super::layout::{APIC_START, IOAPIC_PINS, IOAPIC_START, MPTABLE_MAX_SIZE, MPTABLE_START};
use crate::memory::GuestMemory;

const FLOATING_POINTER_LEN: usize = 16;
const CONFIG_HEADER_LEN: usize = 44;
const PROCESSOR_ENTRY_LEN: usize = 20;
const SMALL_ENTRY_LEN: usize = 8;

const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_IO_INTERRUPT: u8 = 3;
const ENTRY_LOCAL_INTERRUPT: u8 = 4;

const INT_TYPE_INT: u8 = 0;
const INT_TYPE_NMI: u8 = 1;
const INT_TYPE_EXTINT: u8 = 3;

const CPU_ENABLED: u8 = 1;
const CPU_BOOTSTRAP: u8 = 2;
/// Local APIC version of an integrated xAPIC, as KVM reports it.
const LAPIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
/// Family 6 signature and the FPU + APIC feature flags: enough for Linux to accept the entry.
const CPU_SIGNATURE: u32 = 0x600;
const CPU_FEATURES: u32 = (1 << 0) | (1 << 9);
const ISA_BUS_ID: u8 = 0;

/// The MP table cannot describe this VM.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum MpTableError {
    /// More vCPUs than 8-bit APIC IDs leave room for (the IOAPIC takes the next ID).
    #[error("the MP table describes at most 254 vCPUs, not {0}: pass fewer --cpus")]
    TooManyCpus(u16),
    /// The table outgrew the BIOS area.
    #[error("the MP table for {0} vCPUs does not fit the BIOS area")]
    TooLarge(u16),
    /// Writing guest memory failed (guest memory smaller than 1 MiB).
    #[error("cannot write the MP table into guest memory")]
    Write,
}

/// The IOAPIC's ID: the first one after the vCPUs' APIC IDs 0..vcpus.
pub fn ioapic_id(vcpus: u8) -> u8 {
    vcpus
}

fn checksum(bytes: &[u8]) -> u8 {
    let sum = bytes.iter().fold(0u8, |acc, b| acc.wrapping_add(*b));
    0u8.wrapping_sub(sum)
}

/// Builds the floating pointer followed by the configuration table for `vcpus` vCPUs.
pub fn build(vcpus: u8) -> Result<Vec<u8>, MpTableError> {
    if vcpus == 0 || vcpus > 254 {
        return Err(MpTableError::TooManyCpus(u16::from(vcpus)));
    }
    let small_entries = 2 + usize::from(IOAPIC_PINS) + 2;
    let mut entries = Vec::with_capacity(
        usize::from(vcpus) * PROCESSOR_ENTRY_LEN + small_entries * SMALL_ENTRY_LEN,
    );
    let mut entry_count: u16 = 0;
    for cpu in 0..vcpus {
        let mut flags = CPU_ENABLED;
        if cpu == 0 {
            flags |= CPU_BOOTSTRAP;
        }
        entries.extend_from_slice(&[ENTRY_PROCESSOR, cpu, LAPIC_VERSION, flags]);
        entries.extend_from_slice(&CPU_SIGNATURE.to_le_bytes());
        entries.extend_from_slice(&CPU_FEATURES.to_le_bytes());
        entries.extend_from_slice(&[0; 8]);
        entry_count += 1;
    }
    entries.extend_from_slice(&[ENTRY_BUS, ISA_BUS_ID]);
    entries.extend_from_slice(b"ISA   ");
    entry_count += 1;
    entries.extend_from_slice(&[ENTRY_IOAPIC, ioapic_id(vcpus), IOAPIC_VERSION, 1]);
    entries.extend_from_slice(&(IOAPIC_START as u32).to_le_bytes());
    entry_count += 1;
    // ISA IRQ n drives IOAPIC pin n, matching KVM's default GSI routing; pins 16-23 are
    // listed on the ISA bus too so that virtio-mmio devices can use them.
    for pin in 0..IOAPIC_PINS {
        entries.extend_from_slice(&[ENTRY_IO_INTERRUPT, INT_TYPE_INT]);
        entries.extend_from_slice(&0u16.to_le_bytes()); // polarity/trigger: bus default
        entries.extend_from_slice(&[ISA_BUS_ID, pin, ioapic_id(vcpus), pin]);
        entry_count += 1;
    }
    // LINT0 = ExtINT (the 8259 through the LAPIC), LINT1 = NMI, on every LAPIC (0xff).
    for (kind, lint) in [(INT_TYPE_EXTINT, 0u8), (INT_TYPE_NMI, 1u8)] {
        entries.extend_from_slice(&[ENTRY_LOCAL_INTERRUPT, kind]);
        entries.extend_from_slice(&0u16.to_le_bytes());
        entries.extend_from_slice(&[ISA_BUS_ID, 0, 0xff, lint]);
        entry_count += 1;
    }

    let table_len = CONFIG_HEADER_LEN + entries.len();
    if FLOATING_POINTER_LEN + table_len > MPTABLE_MAX_SIZE as usize {
        return Err(MpTableError::TooLarge(u16::from(vcpus)));
    }
    let config_addr = MPTABLE_START + FLOATING_POINTER_LEN as u64;

    let mut header = Vec::with_capacity(CONFIG_HEADER_LEN);
    header.extend_from_slice(b"PCMP");
    header.extend_from_slice(&(table_len as u16).to_le_bytes());
    header.push(4); // spec revision 1.4
    header.push(0); // checksum, filled below
    header.extend_from_slice(b"RKT-KVM ");
    header.extend_from_slice(b"MICROVM     ");
    header.extend_from_slice(&0u32.to_le_bytes()); // no OEM table
    header.extend_from_slice(&0u16.to_le_bytes());
    header.extend_from_slice(&entry_count.to_le_bytes());
    header.extend_from_slice(&(APIC_START as u32).to_le_bytes());
    header.extend_from_slice(&[0; 4]); // no extended table
    let mut table = header;
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);

    let mut pointer = Vec::with_capacity(FLOATING_POINTER_LEN);
    pointer.extend_from_slice(b"_MP_");
    pointer.extend_from_slice(&(config_addr as u32).to_le_bytes());
    pointer.push(1); // length in 16-byte units
    pointer.push(4); // spec revision 1.4
    pointer.push(0); // checksum, filled below
    pointer.extend_from_slice(&[0; 5]); // features: a configuration table exists; no IMCR
    pointer[10] = checksum(&pointer);

    let mut out = pointer;
    out.extend_from_slice(&table);
    Ok(out)
}

/// Writes the MP table for `vcpus` vCPUs into guest memory.
pub fn write(mem: &GuestMemory, vcpus: u8) -> Result<(), MpTableError> {
    let bytes = build(vcpus)?;
    mem.write_slice(&bytes, GuestAddress(MPTABLE_START))
        .map_err(|_| MpTableError::Write)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b))
    }

    /// Walks the configuration table and returns the entry types in order.
    fn entry_types(table: &[u8]) -> Vec<u8> {
        let mut types = Vec::new();
        let mut at = CONFIG_HEADER_LEN;
        while at < table.len() {
            let kind = table[at];
            types.push(kind);
            at += if kind == ENTRY_PROCESSOR {
                PROCESSOR_ENTRY_LEN
            } else {
                SMALL_ENTRY_LEN
            };
        }
        assert_eq!(at, table.len());
        types
    }

    #[test]
    fn checksums_and_counts_for_1_2_4_cpus() {
        for vcpus in [1u8, 2, 4, 254] {
            let bytes = build(vcpus).unwrap();
            let (pointer, table) = bytes.split_at(FLOATING_POINTER_LEN);
            assert_eq!(&pointer[0..4], b"_MP_");
            assert_eq!(sum(pointer), 0);
            let physptr = u32::from_le_bytes(pointer[4..8].try_into().unwrap());
            assert_eq!(u64::from(physptr), MPTABLE_START + 16);
            assert_eq!(&table[0..4], b"PCMP");
            assert_eq!(sum(table), 0);
            let len = u16::from_le_bytes([table[4], table[5]]) as usize;
            assert_eq!(len, table.len());
            let count = u16::from_le_bytes([table[34], table[35]]) as usize;
            let types = entry_types(table);
            assert_eq!(count, types.len());
            let cpus = types.iter().filter(|t| **t == ENTRY_PROCESSOR).count();
            assert_eq!(cpus, usize::from(vcpus));
            assert_eq!(
                types.iter().filter(|t| **t == ENTRY_IO_INTERRUPT).count(),
                24
            );
            assert_eq!(
                types
                    .iter()
                    .filter(|t| **t == ENTRY_LOCAL_INTERRUPT)
                    .count(),
                2
            );
            assert_eq!(types.iter().filter(|t| **t == ENTRY_IOAPIC).count(), 1);
        }
    }

    #[test]
    fn only_cpu_0_is_the_bootstrap_processor() {
        let bytes = build(4).unwrap();
        let table = &bytes[FLOATING_POINTER_LEN..];
        for cpu in 0..4usize {
            let entry = &table[CONFIG_HEADER_LEN + cpu * PROCESSOR_ENTRY_LEN..];
            assert_eq!(entry[1] as usize, cpu, "APIC id");
            assert_eq!(entry[3] & CPU_BOOTSTRAP != 0, cpu == 0);
            assert_ne!(entry[3] & CPU_ENABLED, 0);
        }
        // The IOAPIC entry follows the bus entry and carries ID = vcpus.
        let ioapic = &table[CONFIG_HEADER_LEN + 4 * PROCESSOR_ENTRY_LEN + SMALL_ENTRY_LEN..];
        assert_eq!(ioapic[0], ENTRY_IOAPIC);
        assert_eq!(ioapic[1], 4);
        assert_eq!(
            u32::from_le_bytes(ioapic[4..8].try_into().unwrap()),
            0xfec0_0000
        );
    }

    #[test]
    fn zero_cpus_is_refused() {
        assert_eq!(build(0), Err(MpTableError::TooManyCpus(0)));
        assert_eq!(build(255), Err(MpTableError::TooManyCpus(255)));
    }
}
