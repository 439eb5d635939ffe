//! The CMOS RTC ports 0x70/0x71, just enough for Linux to read the wall clock if it has no
//! kvmclock: the current UTC time in BCD, 24-hour mode, no update in progress.

use crate::devices::bus::{BusAction, BusDevice};

/// Index port; 0x71 is the data port.
pub const CMOS_PORT: u64 = 0x70;
/// Two ports.
pub const CMOS_PORTS: u64 = 2;

const REG_SECONDS: u8 = 0x00;
const REG_MINUTES: u8 = 0x02;
const REG_HOURS: u8 = 0x04;
const REG_DAY_OF_WEEK: u8 = 0x06;
const REG_DAY: u8 = 0x07;
const REG_MONTH: u8 = 0x08;
const REG_YEAR: u8 = 0x09;
const REG_STATUS_A: u8 = 0x0a;
const REG_STATUS_B: u8 = 0x0b;
const REG_STATUS_D: u8 = 0x0d;
const REG_CENTURY: u8 = 0x32;

/// 24-hour mode, BCD.
const STATUS_B_24H: u8 = 0x02;
/// "RTC has valid time" (battery good).
const STATUS_D_VALID: u8 = 0x80;

/// Broken-down UTC time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UtcTime {
    /// 0-59.
    pub second: u8,
    /// 0-59.
    pub minute: u8,
    /// 0-23.
    pub hour: u8,
    /// 1-31.
    pub day: u8,
    /// 1-12.
    pub month: u8,
    /// e.g. 2026.
    pub year: u16,
    /// 0 = Sunday.
    pub weekday: u8,
}

fn now_utc() -> UtcTime {
    // SAFETY: time(NULL) has no preconditions.
    let t = unsafe { libc::time(std::ptr::null_mut()) };
    // SAFETY: zeroed `tm` is a valid value; gmtime_r writes into it and returns NULL on failure.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the duration of the call.
    let ok = !unsafe { libc::gmtime_r(&t, &mut tm) }.is_null();
    if !ok {
        return UtcTime::default();
    }
    UtcTime {
        second: tm.tm_sec.clamp(0, 59) as u8,
        minute: tm.tm_min as u8,
        hour: tm.tm_hour as u8,
        day: tm.tm_mday as u8,
        month: (tm.tm_mon + 1) as u8,
        year: (tm.tm_year + 1900) as u16,
        weekday: tm.tm_wday as u8,
    }
}

fn bcd(value: u8) -> u8 {
    ((value / 10) << 4) | (value % 10)
}

/// The RTC register file view.
#[derive(Debug, Default)]
pub struct Cmos {
    index: u8,
}

impl Cmos {
    /// A CMOS with index 0 selected.
    pub fn new() -> Self {
        Cmos::default()
    }

    /// The value of register `index` at time `t`.
    pub fn register(index: u8, t: &UtcTime) -> u8 {
        match index {
            REG_SECONDS => bcd(t.second),
            REG_MINUTES => bcd(t.minute),
            REG_HOURS => bcd(t.hour),
            REG_DAY_OF_WEEK => bcd(t.weekday + 1),
            REG_DAY => bcd(t.day),
            REG_MONTH => bcd(t.month),
            REG_YEAR => bcd((t.year % 100) as u8),
            REG_CENTURY => bcd((t.year / 100) as u8),
            REG_STATUS_A => 0x26, // 32.768 kHz, 1024 Hz rate, no update in progress
            REG_STATUS_B => STATUS_B_24H,
            REG_STATUS_D => STATUS_D_VALID,
            _ => 0,
        }
    }
}

impl BusDevice for Cmos {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = if offset == 1 {
            Self::register(self.index, &now_utc())
        } else {
            0xff
        };
        data.fill(0);
        if let Some(first) = data.first_mut() {
            *first = value;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> BusAction {
        if let (0, Some(&v)) = (offset, data.first()) {
            // Bit 7 is the NMI mask, not part of the index.
            self.index = v & 0x7f;
        }
        BusAction::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_registers_are_bcd() {
        let t = UtcTime {
            second: 59,
            minute: 7,
            hour: 23,
            day: 29,
            month: 11,
            year: 2026,
            weekday: 0,
        };
        assert_eq!(Cmos::register(REG_SECONDS, &t), 0x59);
        assert_eq!(Cmos::register(REG_HOURS, &t), 0x23);
        assert_eq!(Cmos::register(REG_YEAR, &t), 0x26);
        assert_eq!(Cmos::register(REG_CENTURY, &t), 0x20);
        assert_eq!(
            Cmos::register(REG_STATUS_A, &t) & 0x80,
            0,
            "no update in progress"
        );
    }

    #[test]
    fn index_selects_and_ignores_nmi_bit() {
        let mut c = Cmos::new();
        c.write(0, &[0x80 | REG_STATUS_D]);
        let mut d = [0u8];
        c.read(1, &mut d);
        assert_eq!(d[0], STATUS_D_VALID);
    }
}
