//! What a system call costs in the filters: a classic-BPF evaluator for the programs
//! seccompiler emits, counting the instructions a call runs through before its verdict. The
//! kernel runs every filter a thread has (its own, the refusals, and the spawner's it
//! inherited) on every call that its per-filter action cache cannot answer (a call allowed
//! whatever its arguments is answered from the cache, without running the program), so a
//! hot call with argument checks (KVM_RUN on the vCPUs) should find its verdict early.

use seccompiler::sock_filter;

/// The fields of the kernel's `struct seccomp_data` a filter reads.
#[derive(Clone, Copy, Debug)]
pub struct Call {
    pub nr: i64,
    pub args: [u64; 6],
}

impl Call {
    pub fn new(nr: i64, args: &[u64]) -> Call {
        let mut all = [0u64; 6];
        all[..args.len()].copy_from_slice(args);
        Call { nr, args: all }
    }

    /// The 32-bit word of `seccomp_data` at byte `offset` (little-endian x86_64 layout).
    fn word(&self, offset: u32) -> u32 {
        match offset {
            0 => self.nr as u32,
            4 => 0xC000_003E, // AUDIT_ARCH_X86_64
            8 | 12 => 0,      // instruction pointer: no filter here reads it
            16..=63 => {
                let arg = self.args[((offset - 16) / 8) as usize];
                if offset.is_multiple_of(8) {
                    arg as u32
                } else {
                    (arg >> 32) as u32
                }
            }
            _ => panic!("a filter read seccomp_data at {offset}"),
        }
    }
}

/// Runs `program` on `call`: its return value and the number of instructions executed.
pub fn evaluate(program: &[sock_filter], call: &Call) -> (u32, usize) {
    let (mut acc, mut pc, mut steps) = (0u32, 0usize, 0usize);
    loop {
        let insn = &program[pc];
        steps += 1;
        let k = insn.k;
        let class = insn.code & 0x07;
        match class {
            // BPF_LD | BPF_W | BPF_ABS
            0x00 => {
                acc = call.word(k);
                pc += 1;
            }
            // BPF_ALU | BPF_AND | BPF_K
            0x04 if insn.code & 0xf0 == 0x50 => {
                acc &= k;
                pc += 1;
            }
            // BPF_JMP
            0x05 => {
                let taken = match insn.code & 0xf0 {
                    0x00 => {
                        pc += 1 + k as usize;
                        continue;
                    }
                    0x10 => acc == k,
                    0x20 => acc > k,
                    0x30 => acc >= k,
                    0x40 => acc & k != 0,
                    op => panic!("unexpected jump {op:#x}"),
                };
                pc += 1 + usize::from(if taken { insn.jt } else { insn.jf });
            }
            // BPF_RET | BPF_K
            0x06 => return (k, steps),
            other => panic!("unexpected BPF class {other:#x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::ThreadKind;

    fn programs(kind: ThreadKind) -> Vec<Vec<sock_filter>> {
        let mut all = Vec::new();
        if kind != ThreadKind::Main && kind != ThreadKind::Spawner {
            all.extend(crate::seccomp::refusal_filters(ThreadKind::Spawner).unwrap());
            all.push(crate::seccomp::filter(ThreadKind::Spawner).unwrap());
        }
        all.extend(crate::seccomp::refusal_filters(kind).unwrap());
        all.push(crate::seccomp::filter(kind).unwrap());
        all
    }

    /// The instructions `call` runs through on a thread of `kind`, filter by filter; panics
    /// unless every filter allows it.
    fn cost(kind: ThreadKind, call: &Call) -> Vec<usize> {
        programs(kind)
            .iter()
            .map(|program| {
                let (verdict, steps) = evaluate(program, call);
                assert_eq!(verdict, 0x7fff_0000, "{kind:?} {call:?} is not allowed");
                steps
            })
            .collect()
    }

    /// KVM_RUN is the one call a vCPU makes per guest exit, and it has an argument check, so
    /// the kernel runs every filter the vCPU thread has on it (the spawner's refusals and
    /// list, then its own): it must find its verdict early in each.
    #[test]
    fn kvm_run_is_decided_early_in_every_filter() {
        let kvm_run = u64::from(crate::seccomp::kvm_ioctls::KVM_RUN() as u32);
        let steps = cost(ThreadKind::Vcpu, &Call::new(libc::SYS_ioctl, &[5, kvm_run]));
        let total: usize = steps.iter().sum();
        eprintln!("KVM_RUN: {steps:?} BPF instructions per filter, {total} in all");
        assert!(
            total <= 100,
            "KVM_RUN runs {total} BPF instructions: {steps:?}"
        );
    }
}
