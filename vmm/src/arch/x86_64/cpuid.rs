//! The CPUID each vCPU sees: KVM's supported set, patched with the per-vCPU APIC IDs, a
//! topology that matches the vCPU count (one core per vCPU, one package), the hypervisor bit,
//! the KVM paravirt signature, a brand string, and the TSC-deadline bit when KVM can emulate it
//! (KVM_GET_SUPPORTED_CPUID leaves it clear; without it the guest calibrates the LAPIC timer,
//! measured to cost most of a second of boot).

use kvm_bindings::{kvm_cpuid_entry2, CpuId, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};

const LEAF_FEATURES: u32 = 0x1;
const LEAF_CACHE_PARAMS: u32 = 0x4;
const LEAF_TOPOLOGY: u32 = 0xb;
const LEAF_TOPOLOGY_V2: u32 = 0x1f;
const LEAF_HYPERVISOR: u32 = 0x4000_0000;
const LEAF_EXT_MAX: u32 = 0x8000_0000;
const LEAF_BRAND_FIRST: u32 = 0x8000_0002;
const LEAF_AMD_SIZES: u32 = 0x8000_0008;
const LEAF_AMD_EXT_APIC: u32 = 0x8000_001e;

const ECX_TSC_DEADLINE: u32 = 1 << 24;
const ECX_HYPERVISOR: u32 = 1 << 31;
const EDX_HTT: u32 = 1 << 28;

/// "KVMKVMKVM\0\0\0" in EBX, ECX, EDX, as Linux's KVM guest code looks for it.
const KVM_SIGNATURE: [u32; 3] = [0x4b4d_564b, 0x564b_4d56, 0x0000_004d];

/// Brand string used when the host has none to pass on.
pub const DEFAULT_BRAND: &str = "rkt-kvm virtual CPU";

/// Host facts the patching depends on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuidOptions {
    /// KVM_CAP_TSC_DEADLINE_TIMER is present.
    pub tsc_deadline: bool,
    /// The 48-byte brand string (NUL-padded).
    pub brand: [u8; 48],
}

impl CpuidOptions {
    /// Options with `brand` (truncated to 47 bytes, NUL-padded).
    pub fn new(tsc_deadline: bool, brand: &str) -> Self {
        let mut bytes = [0u8; 48];
        let len = brand.len().min(47);
        bytes[..len].copy_from_slice(&brand.as_bytes()[..len]);
        CpuidOptions {
            tsc_deadline,
            brand: bytes,
        }
    }
}

/// The host CPU's brand string, or [`DEFAULT_BRAND`] if it has none.
pub fn host_brand() -> String {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::__cpuid;
        // CPUID exists on every x86_64 CPU and has no side effects (safe since Rust 1.87).
        let max_ext = __cpuid(LEAF_EXT_MAX).eax;
        if max_ext >= LEAF_BRAND_FIRST + 2 {
            let mut bytes = Vec::with_capacity(48);
            for leaf in LEAF_BRAND_FIRST..LEAF_BRAND_FIRST + 3 {
                let r = __cpuid(leaf);
                for reg in [r.eax, r.ebx, r.ecx, r.edx] {
                    bytes.extend_from_slice(&reg.to_le_bytes());
                }
            }
            let text = String::from_utf8_lossy(&bytes);
            let text = text.trim_matches(char::from(0)).trim();
            if !text.is_empty() {
                return text.to_string();
            }
        }
    }
    DEFAULT_BRAND.to_string()
}

/// Number of bits an APIC ID needs to number `count` cores.
fn id_bits(count: u8) -> u32 {
    if count <= 1 {
        0
    } else {
        u32::from(count - 1).ilog2() + 1
    }
}

fn entry(function: u32, index: u32, regs: [u32; 4]) -> kvm_cpuid_entry2 {
    kvm_cpuid_entry2 {
        function,
        index,
        flags: 0,
        eax: regs[0],
        ebx: regs[1],
        ecx: regs[2],
        edx: regs[3],
        ..Default::default()
    }
}

/// Patches `cpuid` (a copy of KVM's supported set) for vCPU `apic_id` of `vcpus`.
pub fn patch(cpuid: &mut CpuId, apic_id: u8, vcpus: u8, opts: &CpuidOptions) {
    let core_bits = id_bits(vcpus);
    let mut has_hypervisor_leaf = false;
    let mut brand_leaves_seen = [false; 3];
    let mut max_ext = 0;
    for e in cpuid.as_mut_slice().iter_mut() {
        match e.function {
            LEAF_FEATURES => {
                e.ebx =
                    (e.ebx & 0x0000_ffff) | (u32::from(apic_id) << 24) | (u32::from(vcpus) << 16);
                if vcpus > 1 {
                    e.edx |= EDX_HTT;
                } else {
                    e.edx &= !EDX_HTT;
                }
                e.ecx |= ECX_HYPERVISOR;
                if opts.tsc_deadline {
                    e.ecx |= ECX_TSC_DEADLINE;
                }
            }
            LEAF_CACHE_PARAMS => {
                let level = (e.eax >> 5) & 0x7;
                let sharing = if level >= 3 { u32::from(vcpus) - 1 } else { 0 };
                let cores = (u32::from(vcpus) - 1).min(63);
                e.eax = (e.eax & 0x3fff) | (sharing.min(0xfff) << 14) | (cores << 26);
            }
            LEAF_TOPOLOGY | LEAF_TOPOLOGY_V2 => {
                // Level 0 = SMT (one thread per core), level 1 = core (all vCPUs), then none.
                let (eax, ebx, kind) = match e.index {
                    0 => (0, 1, 1),
                    1 => (core_bits, u32::from(vcpus), 2),
                    _ => (0, 0, 0),
                };
                e.eax = eax;
                e.ebx = ebx;
                e.ecx = (kind << 8) | (e.index & 0xff);
                e.edx = u32::from(apic_id);
            }
            LEAF_HYPERVISOR => {
                has_hypervisor_leaf = true;
                e.eax = e.eax.max(LEAF_HYPERVISOR + 1);
                [e.ebx, e.ecx, e.edx] = KVM_SIGNATURE;
            }
            LEAF_EXT_MAX => max_ext = e.eax,
            f if (LEAF_BRAND_FIRST..LEAF_BRAND_FIRST + 3).contains(&f) => {
                let i = (f - LEAF_BRAND_FIRST) as usize;
                brand_leaves_seen[i] = true;
                [e.eax, e.ebx, e.ecx, e.edx] = brand_regs(&opts.brand, i);
            }
            LEAF_AMD_SIZES => {
                let nc = u32::from(vcpus) - 1;
                e.ecx = (e.ecx & !0xf0ff) | nc | (core_bits << 12);
            }
            LEAF_AMD_EXT_APIC => {
                e.eax = u32::from(apic_id);
                e.ebx = (e.ebx & !0xffff) | u32::from(apic_id);
                e.ecx &= !0x7ff;
            }
            _ => {}
        }
    }
    // A full CpuId (KVM_MAX_CPUID_ENTRIES) refuses pushes; the guest then just lacks the leaf.
    if !has_hypervisor_leaf {
        let mut regs = [LEAF_HYPERVISOR + 1, 0, 0, 0];
        regs[1..].copy_from_slice(&KVM_SIGNATURE);
        let _ = cpuid.push(entry(LEAF_HYPERVISOR, 0, regs));
    }
    if max_ext >= LEAF_BRAND_FIRST + 2 {
        for (i, seen) in brand_leaves_seen.iter().enumerate() {
            if !seen {
                let _ = cpuid.push(entry(
                    LEAF_BRAND_FIRST + i as u32,
                    0,
                    brand_regs(&opts.brand, i),
                ));
            }
        }
    }
}

fn brand_regs(brand: &[u8; 48], leaf: usize) -> [u32; 4] {
    let mut regs = [0u32; 4];
    for (r, chunk) in regs
        .iter_mut()
        .zip(brand[leaf * 16..leaf * 16 + 16].chunks_exact(4))
    {
        *r = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
    }
    regs
}

/// True if `e` is a leaf whose subleaf index matters (used by tests to build realistic sets).
pub fn is_indexed(e: &kvm_cpuid_entry2) -> bool {
    e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synthetic() -> CpuId {
        let mut e = vec![
            entry(0, 0, [0x1f, 0x6874_7541, 0x444d_4163, 0x6974_6e65]),
            entry(
                LEAF_FEATURES,
                0,
                [0x00a0_0f11, 0x0008_0800, 0x0000_0001, 0x0000_0001],
            ),
            entry(LEAF_CACHE_PARAMS, 0, [0x121, 0, 0, 0]),
            entry(LEAF_CACHE_PARAMS, 3, [0x163, 0, 0, 0]),
            entry(LEAF_TOPOLOGY, 0, [1, 2, 0x100, 7]),
            entry(LEAF_TOPOLOGY, 1, [4, 16, 0x201, 7]),
            entry(LEAF_TOPOLOGY, 2, [0, 0, 2, 7]),
            entry(LEAF_EXT_MAX, 0, [0x8000_0021, 0, 0, 0]),
            entry(LEAF_AMD_SIZES, 0, [0x3030, 0, 0x700f, 0]),
            entry(LEAF_AMD_EXT_APIC, 0, [9, 0x0100, 0x0103, 0]),
        ];
        for x in e
            .iter_mut()
            .filter(|x| matches!(x.function, LEAF_CACHE_PARAMS | LEAF_TOPOLOGY))
        {
            x.flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
        }
        CpuId::from_entries(&e).unwrap()
    }

    fn find(c: &CpuId, function: u32, index: u32) -> kvm_cpuid_entry2 {
        *c.as_slice()
            .iter()
            .find(|e| e.function == function && (e.index == index || !is_indexed(e)))
            .unwrap_or_else(|| panic!("leaf {function:#x}/{index} missing"))
    }

    #[test]
    fn apic_ids_and_topology_per_vcpu() {
        let opts = CpuidOptions::new(true, "Test CPU");
        let mut c = synthetic();
        patch(&mut c, 3, 4, &opts);
        let l1 = find(&c, LEAF_FEATURES, 0);
        assert_eq!(l1.ebx >> 24, 3, "initial APIC id");
        assert_eq!((l1.ebx >> 16) & 0xff, 4, "logical processors");
        assert_eq!(l1.ebx & 0xffff, 0x0800, "CLFLUSH size kept");
        assert_ne!(l1.edx & EDX_HTT, 0);
        let smt = find(&c, LEAF_TOPOLOGY, 0);
        let core = find(&c, LEAF_TOPOLOGY, 1);
        let none = find(&c, LEAF_TOPOLOGY, 2);
        assert_eq!((smt.eax, smt.ebx, smt.ecx, smt.edx), (0, 1, 0x100, 3));
        assert_eq!((core.eax, core.ebx, core.ecx, core.edx), (2, 4, 0x201, 3));
        assert_eq!((none.ebx, none.ecx >> 8, none.edx), (0, 0, 3));
        let l4_l1 = find(&c, LEAF_CACHE_PARAMS, 0);
        let l4_l3 = find(&c, LEAF_CACHE_PARAMS, 3);
        assert_eq!(l4_l1.eax >> 26, 3);
        assert_eq!((l4_l1.eax >> 14) & 0xfff, 0);
        assert_eq!((l4_l3.eax >> 14) & 0xfff, 3);
        assert_eq!(l4_l3.eax & 0x3fff, 0x163);
        let amd = find(&c, LEAF_AMD_SIZES, 0);
        assert_eq!((amd.ecx & 0xff, (amd.ecx >> 12) & 0xf), (3, 2));
        let ext = find(&c, LEAF_AMD_EXT_APIC, 0);
        assert_eq!((ext.eax, ext.ebx & 0xff, ext.ecx & 0x7ff), (3, 3, 0));
    }

    #[test]
    fn hypervisor_and_tsc_deadline_bits() {
        let mut c = synthetic();
        patch(&mut c, 0, 1, &CpuidOptions::new(true, "x"));
        let l1 = find(&c, LEAF_FEATURES, 0);
        assert_ne!(l1.ecx & ECX_HYPERVISOR, 0);
        assert_ne!(l1.ecx & ECX_TSC_DEADLINE, 0);
        assert_eq!(l1.edx & EDX_HTT, 0, "one vCPU: no HTT");
        let mut c = synthetic();
        patch(&mut c, 0, 1, &CpuidOptions::new(false, "x"));
        assert_eq!(find(&c, LEAF_FEATURES, 0).ecx & ECX_TSC_DEADLINE, 0);
    }

    #[test]
    fn kvm_signature_and_brand_are_added() {
        let mut c = synthetic();
        patch(&mut c, 0, 2, &CpuidOptions::new(true, "Brand Name CPU"));
        let sig = find(&c, LEAF_HYPERVISOR, 0);
        let mut text = Vec::new();
        for r in [sig.ebx, sig.ecx, sig.edx] {
            text.extend_from_slice(&r.to_le_bytes());
        }
        assert_eq!(&text[..9], b"KVMKVMKVM");
        assert_eq!(sig.eax, LEAF_HYPERVISOR + 1);
        let mut brand = Vec::new();
        for leaf in 0..3 {
            let e = find(&c, LEAF_BRAND_FIRST + leaf, 0);
            for r in [e.eax, e.ebx, e.ecx, e.edx] {
                brand.extend_from_slice(&r.to_le_bytes());
            }
        }
        assert_eq!(&brand[..14], b"Brand Name CPU");
        assert!(brand[14..].iter().all(|b| *b == 0));
    }

    #[test]
    fn existing_kvm_leaf_keeps_its_eax() {
        let mut c = synthetic();
        c.push(entry(LEAF_HYPERVISOR, 0, [0x4000_0001, 0, 0, 0]))
            .unwrap();
        patch(&mut c, 0, 1, &CpuidOptions::new(false, "x"));
        let count = c
            .as_slice()
            .iter()
            .filter(|e| e.function == LEAF_HYPERVISOR)
            .count();
        assert_eq!(count, 1);
        assert_eq!(find(&c, LEAF_HYPERVISOR, 0).ebx, KVM_SIGNATURE[0]);
    }

    #[test]
    fn id_bits_matches_powers_of_two() {
        assert_eq!([1, 2, 3, 4, 5, 8, 9].map(id_bits), [0, 1, 2, 2, 3, 3, 4]);
    }
}
