//! An address-range bus for port I/O and MMIO: each device owns a range and sees accesses as
//! offsets into it. The vCPU threads share the buses; each device sits behind its own mutex.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use thiserror::Error;

/// What a device write asks the VMM to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BusAction {
    /// Keep running.
    Continue,
    /// The guest pulled the reset line (i8042 0xfe): stop the VM cleanly.
    GuestReset,
}

/// A device on a bus.
pub trait BusDevice: Send {
    /// Fills `data` with the value read at `offset` from the device's base.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Handles a write of `data` at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]) -> BusAction;
}

/// Two ranges overlap: a VMM bug, reported rather than silently shadowed.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("bus range {base:#x}+{len:#x} overlaps another device")]
pub struct BusOverlap {
    /// Base of the rejected range.
    pub base: u64,
    /// Length of the rejected range.
    pub len: u64,
}

/// A device shared between the bus and whoever else needs to look at it (e.g. the serial
/// port's output scanner is read at the end of the run).
pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

struct Range {
    len: u64,
    device: SharedDevice,
}

/// An address-range bus.
#[derive(Default)]
pub struct Bus {
    ranges: BTreeMap<u64, Range>,
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Self {
        Bus::default()
    }

    /// Attaches `device` at `[base, base + len)`.
    pub fn insert(&mut self, base: u64, len: u64, device: SharedDevice) -> Result<(), BusOverlap> {
        let overlap = BusOverlap { base, len };
        let end = base.checked_add(len).ok_or(overlap.clone())?;
        if len == 0 {
            return Err(overlap);
        }
        if let Some((b, r)) = self.ranges.range(..end).next_back() {
            if b + r.len > base {
                return Err(overlap);
            }
        }
        self.ranges.insert(base, Range { len, device });
        Ok(())
    }

    fn find(&self, addr: u64) -> Option<(u64, &SharedDevice)> {
        let (base, range) = self.ranges.range(..=addr).next_back()?;
        (addr - base < range.len).then_some((addr - base, &range.device))
    }

    /// Reads from the device at `addr`; false if nothing is there.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr) {
            Some((offset, device)) => {
                lock(device).read(offset, data);
                true
            }
            None => false,
        }
    }

    /// Writes to the device at `addr`; `None` if nothing is there.
    pub fn write(&self, addr: u64, data: &[u8]) -> Option<BusAction> {
        self.find(addr)
            .map(|(offset, device)| lock(device).write(offset, data))
    }
}

/// Locks a device even if another vCPU thread panicked while holding it: the device state is
/// plain data and the VM is being torn down in that case anyway.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo {
        last: Vec<(u64, u8)>,
    }

    impl BusDevice for Echo {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) -> BusAction {
            self.last.push((offset, data[0]));
            if data[0] == 0xfe {
                BusAction::GuestReset
            } else {
                BusAction::Continue
            }
        }
    }

    #[test]
    fn offsets_and_misses() {
        let dev = Arc::new(Mutex::new(Echo { last: vec![] }));
        let mut bus = Bus::new();
        bus.insert(0x3f8, 8, dev.clone()).unwrap();
        let mut b = [0u8; 1];
        assert!(bus.read(0x3fa, &mut b));
        assert_eq!(b[0], 2);
        assert!(!bus.read(0x400, &mut b));
        assert!(!bus.read(0x3f7, &mut b));
        assert_eq!(bus.write(0x3ff, &[1]), Some(BusAction::Continue));
        assert_eq!(bus.write(0x3f8, &[0xfe]), Some(BusAction::GuestReset));
        assert_eq!(bus.write(0x10, &[1]), None);
        assert_eq!(lock(&dev).last, vec![(7, 1), (0, 0xfe)]);
    }

    #[test]
    fn overlaps_are_refused() {
        let mut bus = Bus::new();
        let d = || Arc::new(Mutex::new(Echo { last: vec![] })) as SharedDevice;
        bus.insert(0x60, 5, d()).unwrap();
        assert!(bus.insert(0x64, 1, d()).is_err());
        assert!(bus.insert(0x5f, 2, d()).is_err());
        assert!(bus.insert(0x65, 1, d()).is_ok());
        assert!(bus.insert(0x5f, 1, d()).is_ok());
        assert!(bus.insert(0x70, 0, d()).is_err());
    }
}
