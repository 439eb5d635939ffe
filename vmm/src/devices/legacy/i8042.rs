//! A PS/2 controller (i8042) with nothing plugged in. It exists for two reasons: the guest's
//! `reboot=k` pulses the CPU reset line through it (command 0xfe on port 0x64), which is how a
//! VM ends cleanly, and Linux's i8042 driver must finish probing it fast. vm-superio's device
//! answers 0 to every read, which makes Linux poll for seconds; this one answers each command
//! the driver sends at boot, reports a working keyboard port with no keyboard and a failing AUX
//! port (so no mouse probing and no 250 ms AUX IRQ test), and keeps the input buffer empty so
//! `kb_wait()` in the reboot path never spins.
//!
//! Occupies ports 0x60-0x64: offset 0 is the data port, offset 4 the status/command port.

use std::collections::VecDeque;

use crate::devices::bus::{BusAction, BusDevice};

/// First port of the controller.
pub const I8042_PORT: u64 = 0x60;
/// Ports 0x60..=0x64 (0x61 is the PIT speaker port, which KVM handles in the kernel).
pub const I8042_PORTS: u64 = 5;

const DATA_OFFSET: u64 = 0;
const COMMAND_OFFSET: u64 = 4;

const STATUS_OUTPUT_FULL: u8 = 1 << 0;
const STATUS_SYSTEM_FLAG: u8 = 1 << 2;
const STATUS_LAST_WAS_COMMAND: u8 = 1 << 3;
const STATUS_NOT_INHIBITED: u8 = 1 << 4;
const STATUS_AUX_DATA: u8 = 1 << 5;

const CMD_READ_CTR: u8 = 0x20;
const CMD_WRITE_CTR: u8 = 0x60;
const CMD_AUX_DISABLE: u8 = 0xa7;
const CMD_AUX_ENABLE: u8 = 0xa8;
const CMD_AUX_TEST: u8 = 0xa9;
const CMD_SELF_TEST: u8 = 0xaa;
const CMD_KBD_TEST: u8 = 0xab;
const CMD_KBD_DISABLE: u8 = 0xad;
const CMD_KBD_ENABLE: u8 = 0xae;
const CMD_READ_INPUT_PORT: u8 = 0xc0;
const CMD_READ_OUTPUT_PORT: u8 = 0xd0;
const CMD_WRITE_OUTPUT_PORT: u8 = 0xd1;
const CMD_WRITE_KBD_OUTPUT: u8 = 0xd2;
const CMD_WRITE_AUX_OUTPUT: u8 = 0xd3;
const CMD_WRITE_AUX: u8 = 0xd4;
/// 0xf0-0xff pulse output lines low for 6 us; bit 0 clear pulses the reset line (0xfe).
const CMD_PULSE_FIRST: u8 = 0xf0;

const CTR_KBD_DISABLED: u8 = 1 << 4;
const CTR_AUX_DISABLED: u8 = 1 << 5;
/// Keyboard interrupt on, system flag, scancode translation: a typical power-on value.
const CTR_POWER_ON: u8 = 0x45;

const SELF_TEST_PASSED: u8 = 0x55;
const PORT_TEST_PASSED: u8 = 0x00;
/// "Clock line stuck low": Linux concludes there is no AUX port.
const PORT_TEST_CLOCK_STUCK: u8 = 0x01;
/// Output port with the reset line (bit 0) and A20 (bit 1) high.
const OUTPUT_PORT_IDLE: u8 = 0x03;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PendingWrite {
    Ctr,
    OutputPort,
    KbdOutput,
    AuxOutput,
    AuxDevice,
}

/// What a snapshot keeps of the controller.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct I8042State {
    /// The controller configuration byte.
    pub ctr: u8,
    /// Bytes waiting for the guest, each with "came from AUX".
    pub output: Vec<(u8, bool)>,
    /// The last port write was a command.
    pub last_was_command: bool,
}

/// The controller state.
#[derive(Debug)]
pub struct I8042 {
    ctr: u8,
    /// Bytes for the guest to read, each with "came from AUX".
    output: VecDeque<(u8, bool)>,
    pending: Option<PendingWrite>,
    last_was_command: bool,
}

impl Default for I8042 {
    fn default() -> Self {
        Self::new()
    }
}

impl I8042 {
    /// A controller after power-on.
    pub fn new() -> Self {
        I8042 {
            ctr: CTR_POWER_ON,
            output: VecDeque::new(),
            pending: None,
            last_was_command: false,
        }
    }

    /// The controller's state for a snapshot (taken while the guest does not use it: a write
    /// the guest had begun, such as "write CTR", is not kept).
    pub fn state(&self) -> I8042State {
        I8042State {
            ctr: self.ctr,
            output: self.output.iter().copied().collect(),
            last_was_command: self.last_was_command,
        }
    }

    /// A controller in `state` (the output queue keeps its bound of 16 bytes).
    pub fn from_state(state: &I8042State) -> Self {
        I8042 {
            ctr: state.ctr,
            output: state.output.iter().take(16).copied().collect(),
            pending: None,
            last_was_command: state.last_was_command,
        }
    }

    fn reply(&mut self, byte: u8) {
        // A real controller has a one-byte buffer; a few more cannot hurt and the bound keeps a
        // misbehaving guest from growing it.
        if self.output.len() < 16 {
            self.output.push_back((byte, false));
        }
    }

    /// Status register.
    pub fn status(&self) -> u8 {
        let mut status = STATUS_SYSTEM_FLAG | STATUS_NOT_INHIBITED;
        if let Some((_, aux)) = self.output.front() {
            status |= STATUS_OUTPUT_FULL;
            if *aux {
                status |= STATUS_AUX_DATA;
            }
        }
        if self.last_was_command {
            status |= STATUS_LAST_WAS_COMMAND;
        }
        status
    }

    /// Reads the data port.
    pub fn read_data(&mut self) -> u8 {
        self.output.pop_front().map_or(0, |(byte, _)| byte)
    }

    /// A byte on the command port.
    pub fn write_command(&mut self, command: u8) -> BusAction {
        self.last_was_command = true;
        self.pending = None;
        match command {
            CMD_READ_CTR => self.reply(self.ctr),
            CMD_WRITE_CTR => self.pending = Some(PendingWrite::Ctr),
            CMD_AUX_DISABLE => self.ctr |= CTR_AUX_DISABLED,
            CMD_AUX_ENABLE => self.ctr &= !CTR_AUX_DISABLED,
            CMD_AUX_TEST => self.reply(PORT_TEST_CLOCK_STUCK),
            CMD_SELF_TEST => self.reply(SELF_TEST_PASSED),
            CMD_KBD_TEST => self.reply(PORT_TEST_PASSED),
            CMD_KBD_DISABLE => self.ctr |= CTR_KBD_DISABLED,
            CMD_KBD_ENABLE => self.ctr &= !CTR_KBD_DISABLED,
            CMD_READ_INPUT_PORT => self.reply(0),
            CMD_READ_OUTPUT_PORT => self.reply(OUTPUT_PORT_IDLE),
            CMD_WRITE_OUTPUT_PORT => self.pending = Some(PendingWrite::OutputPort),
            CMD_WRITE_KBD_OUTPUT => self.pending = Some(PendingWrite::KbdOutput),
            CMD_WRITE_AUX_OUTPUT => self.pending = Some(PendingWrite::AuxOutput),
            CMD_WRITE_AUX => self.pending = Some(PendingWrite::AuxDevice),
            c if c >= CMD_PULSE_FIRST && c & 1 == 0 => return BusAction::GuestReset,
            _ => {}
        }
        BusAction::Continue
    }

    /// A byte on the data port.
    pub fn write_data(&mut self, value: u8) -> BusAction {
        self.last_was_command = false;
        match self.pending.take() {
            Some(PendingWrite::Ctr) => self.ctr = value,
            Some(PendingWrite::OutputPort) if value & 1 == 0 => return BusAction::GuestReset,
            Some(PendingWrite::OutputPort) => {}
            Some(PendingWrite::KbdOutput) => self.reply(value),
            // The AUX loopback echoes without the AUX flag: Linux's loop test fails at once and
            // it falls back to CMD_AUX_TEST, which reports no AUX port.
            Some(PendingWrite::AuxOutput) => self.reply(value),
            // Nothing is plugged in: bytes for a keyboard or mouse go nowhere, and the guest's
            // driver times out in a sleeping wait (no exits).
            Some(PendingWrite::AuxDevice) | None => {}
        }
        BusAction::Continue
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = match offset {
            DATA_OFFSET => self.read_data(),
            COMMAND_OFFSET => self.status(),
            _ => 0xff,
        };
        data.fill(0);
        if let Some(first) = data.first_mut() {
            *first = value;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> BusAction {
        match (offset, data.first()) {
            (DATA_OFFSET, Some(&v)) => self.write_data(v),
            (COMMAND_OFFSET, Some(&v)) => self.write_command(v),
            _ => BusAction::Continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linux_probe_sequence_concludes() {
        let mut c = I8042::new();
        // i8042_controller_check: status must not be 0xff, and the buffer flushes empty.
        assert_ne!(c.status(), 0xff);
        assert_eq!(c.status() & STATUS_OUTPUT_FULL, 0);
        // Self test.
        c.write_command(CMD_SELF_TEST);
        assert_ne!(c.status() & STATUS_OUTPUT_FULL, 0);
        assert_eq!(c.read_data(), SELF_TEST_PASSED);
        // CTR read twice must be stable, then written back.
        c.write_command(CMD_READ_CTR);
        let first = c.read_data();
        c.write_command(CMD_READ_CTR);
        assert_eq!(c.read_data(), first);
        c.write_command(CMD_WRITE_CTR);
        c.write_data(0x47);
        c.write_command(CMD_READ_CTR);
        assert_eq!(c.read_data(), 0x47);
        // AUX loopback answers without the AUX flag, then the AUX test reports no port.
        c.write_command(CMD_WRITE_AUX_OUTPUT);
        c.write_data(0x5a);
        assert_eq!(c.status() & STATUS_AUX_DATA, 0);
        assert_eq!(c.read_data(), 0x5a);
        c.write_command(CMD_AUX_TEST);
        assert_eq!(c.read_data(), PORT_TEST_CLOCK_STUCK);
        // A keyboard command gets no answer: nothing is plugged in.
        c.write_data(0xf2);
        assert_eq!(c.status() & STATUS_OUTPUT_FULL, 0);
    }

    #[test]
    fn reset_by_pulse_or_output_port() {
        let mut c = I8042::new();
        assert_eq!(c.write(4, &[0xfe]), BusAction::GuestReset);
        assert_eq!(c.write(4, &[0xff]), BusAction::Continue, "no line pulsed");
        assert_eq!(c.write(4, &[CMD_WRITE_OUTPUT_PORT]), BusAction::Continue);
        assert_eq!(c.write(0, &[0x03]), BusAction::Continue);
        c.write(4, &[CMD_WRITE_OUTPUT_PORT]);
        assert_eq!(c.write(0, &[0x02]), BusAction::GuestReset);
    }

    #[test]
    fn input_buffer_is_never_full_so_kb_wait_is_instant() {
        let mut c = I8042::new();
        for cmd in 0..=255u8 {
            c.write_command(cmd);
            assert_eq!(c.status() & 0x02, 0, "after command {cmd:#x}");
        }
        let mut data = [0u8; 1];
        c.read(4, &mut data);
        assert_ne!(data[0] & STATUS_LAST_WAS_COMMAND, 0);
    }

    #[test]
    fn output_is_bounded() {
        let mut c = I8042::new();
        for _ in 0..1000 {
            c.write_command(CMD_SELF_TEST);
        }
        assert!(c.output.len() <= 16);
    }
}
