//! The virtio-mmio transport: register reads and writes in any order, with any values, sizes
//! and offsets, in front of a small fake device; snapshots of the transport saved and restored
//! in between, and transports restored from made-up states (a tampered snapshot).
//!
//! What must hold: nothing panics; a device is only activated with queues that lie in guest
//! RAM (the fake device walks every chain of every queue it gets); a saved transport restores
//! in front of the same kind of device, to the same registers.
#![no_main]

use std::sync::{Arc, Mutex};

use libfuzzer_sys::fuzz_target;
use rkt_fuzz::guest::FakeGuest;
use rkt_fuzz::{arbitrary, Unstructured};
use virtio_queue::{QueueOwnedT, QueueT};
use vmm::devices::bus::BusDevice;
use vmm::devices::virtio::{
    ActivateError, ActiveQueue, Interrupt, MmioTransport, TransportState, VirtioDevice,
};
use vmm::memory::GuestMemory;
use vmm_sys_util::eventfd::EventFd;

/// The feature bit every modern device offers (virtio 1.x).
const VIRTIO_F_VERSION_1: u64 = 1 << 32;
const DEVICE_TYPE: u32 = 42;
const FEATURES: u64 = VIRTIO_F_VERSION_1 | 1 << 3;
const QUEUE_MAX: [u16; 2] = [16, 8];
const REGISTERS: [u64; 25] = [
    0x000, 0x004, 0x008, 0x00c, 0x010, 0x014, 0x020, 0x024, 0x030, 0x034, 0x038, 0x044, 0x050,
    0x060, 0x064, 0x070, 0x080, 0x084, 0x090, 0x094, 0x0a0, 0x0a4, 0x0fc, 0x100, 0x104,
];
/// Ring addresses a driver would pick (the fake guest's queue 0 and 1), and bad ones.
const ADDRESSES: [u32; 10] = [
    0x1000, 0x1100, 0x1200, 0x2000, 0x2100, 0x2200, 0x3_fff0, 0x4_0000, 0x8_0000, 0x1001,
];

/// A device with two queues and an 8-byte configuration space that, when activated, walks
/// every chain available on its queues as a real device's worker would.
struct FakeDevice {
    config: [u8; 8],
    activations: Arc<Mutex<usize>>,
}

impl VirtioDevice for FakeDevice {
    fn device_type(&self) -> u32 {
        DEVICE_TYPE
    }
    fn features(&self) -> u64 {
        FEATURES
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_MAX
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        vmm::devices::virtio::read_config_space(&self.config, offset, data);
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        for (i, byte) in data.iter().enumerate() {
            let at = usize::try_from(offset).ok().and_then(|o| o.checked_add(i));
            if let Some(slot) = at.and_then(|at| self.config.get_mut(at)) {
                *slot = *byte;
            }
        }
    }
    fn activate(
        &mut self,
        memory: GuestMemory,
        _features: u64,
        queues: Vec<ActiveQueue>,
        _interrupt: Arc<Interrupt>,
    ) -> Result<(), ActivateError> {
        *self.activations.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        for mut active in queues {
            assert!(
                active.queue.is_valid(&memory),
                "activated with an invalid queue"
            );
            let chains: Vec<_> = match active.queue.iter(&memory) {
                Ok(iter) => iter.collect(),
                Err(_) => continue,
            };
            for chain in chains {
                let head = chain.head_index();
                let readable = chain.clone().reader(&memory).map(|r| r.available_bytes());
                let _ = readable;
                if active.queue.add_used(&memory, head, 0).is_err() {
                    break;
                }
            }
        }
        Ok(())
    }
    fn reset(&mut self) {}
}

fn device() -> Box<FakeDevice> {
    Box::new(FakeDevice {
        config: *b"fakecfg\0",
        activations: Arc::new(Mutex::new(0)),
    })
}

fn interrupt() -> Arc<Interrupt> {
    Arc::new(Interrupt::new(
        EventFd::new(libc::EFD_NONBLOCK).expect("eventfd"),
    ))
}

fn value(u: &mut Unstructured) -> arbitrary::Result<u32> {
    Ok(match u.int_in_range(0u8..=5)? {
        0 | 1 => u.int_in_range(0u32..=16)?,
        2 => 1 << u.int_in_range(0u32..=31)?,
        3 => *u.choose(&ADDRESSES)?,
        _ => u.arbitrary()?,
    })
}

fn offset(u: &mut Unstructured) -> arbitrary::Result<u64> {
    Ok(match u.int_in_range(0u8..=7)? {
        0..=5 => *u.choose(&REGISTERS)?,
        6 => u64::from(u.arbitrary::<u16>()? & 0x1ff),
        _ => u.arbitrary()?,
    })
}

fn access_len(u: &mut Unstructured) -> arbitrary::Result<usize> {
    Ok(if u.ratio(7u8, 8)? {
        4
    } else {
        *u.choose(&[0usize, 1, 2, 3, 8])?
    })
}

/// A made-up transport state, as a tampered snapshot file could hold (built as the JSON the
/// state file carries).
fn made_up_state(u: &mut Unstructured) -> arbitrary::Result<TransportState> {
    let count = if u.ratio(7u8, 8)? {
        2
    } else {
        u.int_in_range(0usize..=3)?
    };
    let mut queues = Vec::with_capacity(count);
    for _ in 0..count {
        let high: u64 = if u.ratio(1u8, 8)? { u.arbitrary()? } else { 0 };
        queues.push(serde_json::json!({
            "size": *u.choose(&[0u16, 1, 2, 4, 8, 16, 3, 32, u16::MAX])?,
            "ready": u.arbitrary::<bool>()?,
            "desc_table": u64::from(value(u)?) | high,
            "avail_ring": u64::from(value(u)?),
            "used_ring": u64::from(value(u)?),
            "avail_idx": u.arbitrary::<u16>()?,
            "used_idx": u.arbitrary::<u16>()?,
        }));
    }
    let state = serde_json::json!({
        "device_type": if u.ratio(7u8, 8)? { DEVICE_TYPE } else { u.arbitrary()? },
        "status": u.int_in_range(0u32..=0xff)?,
        "driver_features": if u.arbitrary()? { FEATURES } else { u.arbitrary::<u64>()? },
        "device_features_sel": value(u)?,
        "driver_features_sel": value(u)?,
        "queue_sel": value(u)?,
        "config_generation": u.arbitrary::<u32>()?,
        "interrupt_status": u.arbitrary::<u32>()?,
        "activated": u.arbitrary::<bool>()?,
        "queues": queues,
    });
    Ok(serde_json::from_value(state).expect("the state's fields"))
}

/// Whether a restored transport must be running again: the saved one was, and nothing in its
/// status says it must not be.
fn runs(state: &TransportState) -> bool {
    const RUNNABLE: u32 = 4 | 8;
    const STOPPED: u32 = 0x40 | 0x80;
    state.activated && state.status & RUNNABLE == RUNNABLE && state.status & STOPPED == 0
}

fn run(
    u: &mut Unstructured,
    transport: &mut MmioTransport,
    memory: &GuestMemory,
) -> arbitrary::Result<()> {
    for _ in 0..u.int_in_range(0u8..=96)? {
        match u.int_in_range(0u8..=15)? {
            0..=4 => {
                let offset = offset(u)?;
                let mut data = vec![0u8; access_len(u)?];
                transport.read(offset, &mut data);
            }
            5..=13 => {
                let offset = offset(u)?;
                let len = access_len(u)?;
                let bytes = value(u)?.to_le_bytes();
                let mut data = bytes[..len.min(4)].to_vec();
                data.resize(len, 0);
                transport.write(offset, &data);
            }
            14 => {
                // Snapshot and restore: the same registers come back.
                let saved = transport.quiesce_and_save();
                let restored =
                    MmioTransport::from_state(device(), memory.clone(), interrupt(), &saved)
                        .unwrap_or_else(|e| {
                            panic!("a saved transport does not restore: {e}\n{saved:?}")
                        });
                *transport = restored;
                let mut again = transport.quiesce_and_save();
                let mut expected = saved.clone();
                expected.activated = runs(&saved);
                expected.interrupt_status &= 0b11;
                // The indexes are re-read from the rings, which the restored device may have
                // served meanwhile.
                for (a, b) in again.queues.iter_mut().zip(expected.queues.iter_mut()) {
                    a.avail_idx = 0;
                    a.used_idx = 0;
                    b.avail_idx = 0;
                    b.used_idx = 0;
                }
                assert_eq!(again, expected, "restored registers differ");
                *transport =
                    MmioTransport::from_state(device(), memory.clone(), interrupt(), &saved)
                        .expect("restored once already");
            }
            _ => {
                // A tampered snapshot: refused or restored, never a panic.
                let state = made_up_state(u)?;
                if let Ok(restored) =
                    MmioTransport::from_state(device(), memory.clone(), interrupt(), &state)
                {
                    *transport = restored;
                }
            }
        }
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let mut guest = FakeGuest::new(2);
    let _ = guest.add_chains(&mut u, 0, 4);
    let _ = guest.add_chains(&mut u, 1, 4);
    let memory = guest.memory.clone();
    let mut transport =
        MmioTransport::new(device(), memory.clone(), interrupt()).expect("transport");
    let _ = run(&mut u, &mut transport, &memory);
});
