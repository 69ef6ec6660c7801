//! 16550A UART (COM1), built on `vm_superio::Serial`.
//!
//! The VMM registers it at [`COM1_PORT_BASE`] with length [`COM_PORT_LEN`]
//! and wires the interrupt trigger to ISA IRQ [`COM1_IRQ`].

mod metrics;

use std::convert::Infallible;
use std::io::{self, Write};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use vm_device::bus::{PioAddress, PioAddressOffset};
use vm_device::MutDevicePio;
use vm_superio::serial::Error as UartError;
use vm_superio::Trigger;

pub use metrics::SerialMetrics;

use crate::{EventFdTrigger, Reset, Stateful};

/// I/O port base of COM1.
pub const COM1_PORT_BASE: u16 = 0x3f8;
/// Number of I/O ports a 16550 decodes.
pub const COM_PORT_LEN: u16 = 8;
/// ISA interrupt line of COM1.
pub const COM1_IRQ: u32 = 4;

/// Errors from the serial device.
#[derive(Debug, thiserror::Error)]
pub enum SerialError {
    /// A saved receive FIFO holds more bytes than the UART has room for.
    #[error("saved fifo has {len} bytes, capacity is {capacity}")]
    FifoOverflow {
        /// Bytes in the saved FIFO.
        len: usize,
        /// FIFO capacity of the UART.
        capacity: usize,
    },
    /// An input-drained notifier was already installed.
    #[error("input drained notifier already set")]
    NotifierSet,
}

/// The interrupt line as the UART model sees it.
///
/// A failed eventfd write cannot be acted on by the guest anyway, so it is
/// logged here; that makes the UART's trigger infallible, which in turn makes
/// rebuilding it from a saved state infallible once the FIFO length is checked.
#[derive(Clone)]
struct IrqLine(Arc<EventFdTrigger>);

impl Trigger for IrqLine {
    type E = Infallible;

    fn trigger(&self) -> Result<(), Infallible> {
        if let Err(e) = self.0.trigger() {
            log::warn!("serial: raising irq failed: {e}");
        }
        Ok(())
    }
}

type Uart = vm_superio::Serial<IrqLine, Arc<SerialMetrics>, Box<dyn Write + Send>>;

/// Saved state of the UART registers and receive FIFO.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SerialState {
    /// Divisor latch, low byte.
    pub baud_divisor_low: u8,
    /// Divisor latch, high byte.
    pub baud_divisor_high: u8,
    /// Interrupt enable register.
    pub interrupt_enable: u8,
    /// Interrupt identification register.
    pub interrupt_identification: u8,
    /// Line control register.
    pub line_control: u8,
    /// Line status register.
    pub line_status: u8,
    /// Modem control register.
    pub modem_control: u8,
    /// Modem status register.
    pub modem_status: u8,
    /// Scratch register.
    pub scratch: u8,
    /// Bytes received and not yet read by the guest, oldest first.
    pub in_buffer: Vec<u8>,
}

impl From<vm_superio::SerialState> for SerialState {
    fn from(s: vm_superio::SerialState) -> Self {
        Self {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer,
        }
    }
}

impl From<SerialState> for vm_superio::SerialState {
    fn from(s: SerialState) -> Self {
        Self {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer,
        }
    }
}

/// A 16550A UART whose transmitted bytes go to an output stream and whose
/// received bytes come from [`Serial::enqueue_input`].
pub struct Serial {
    uart: Uart,
    irq: IrqLine,
    metrics: Arc<SerialMetrics>,
}

impl Serial {
    /// Creates a UART that raises `irq` and writes the guest's output to `out`.
    pub fn new(irq: EventFdTrigger, out: Box<dyn Write + Send>) -> Self {
        let irq = IrqLine(Arc::new(irq));
        let metrics = Arc::new(SerialMetrics::default());
        let uart = Uart::with_events(irq.clone(), metrics.clone(), out);
        Self { uart, irq, metrics }
    }

    /// Queues bytes for the guest to read and raises the receive interrupt if
    /// the guest enabled it.
    ///
    /// Takes only what fits in the receive FIFO and returns how many bytes
    /// that was; the caller keeps the rest for later. In loopback mode the
    /// UART is disconnected from the outside and takes nothing.
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> usize {
        match self.uart.enqueue_raw_bytes(bytes) {
            Ok(n) => n,
            Err(UartError::FullFifo) => 0,
            Err(UartError::IOError(e)) => {
                log::debug!("serial: enqueue failed: {e}");
                0
            }
            Err(UartError::Trigger(never)) => match never {},
        }
    }

    /// Free space in the receive FIFO, in bytes.
    pub fn fifo_capacity(&self) -> usize {
        self.uart.fifo_capacity()
    }

    /// Activity counters, shared so the VMM can read them without locking
    /// the device.
    pub fn metrics(&self) -> Arc<SerialMetrics> {
        self.metrics.clone()
    }

    /// Installs the trigger fired whenever a guest read leaves the receive
    /// FIFO empty (see [`SerialMetrics::set_input_drained`]).
    pub fn set_input_drained_notifier(&self, trigger: EventFdTrigger) -> Result<(), SerialError> {
        self.metrics
            .set_input_drained(trigger)
            .map_err(|_| SerialError::NotifierSet)
    }

    /// Replaces the UART with one built from `state`, moving the output
    /// stream across. The current UART is untouched if `state` is refused.
    fn rebuild(&mut self, state: &vm_superio::SerialState) -> Result<(), SerialError> {
        let placeholder =
            Uart::with_events(self.irq.clone(), self.metrics.clone(), Box::new(io::sink()));
        // A fresh UART's free space is the whole FIFO.
        let capacity = placeholder.fifo_capacity();
        if state.in_buffer.len() > capacity {
            return Err(SerialError::FifoOverflow {
                len: state.in_buffer.len(),
                capacity,
            });
        }
        let out = std::mem::replace(&mut self.uart, placeholder).into_writer();
        match Uart::from_state(state, self.irq.clone(), self.metrics.clone(), out) {
            Ok(uart) => self.uart = uart,
            Err(UartError::Trigger(never)) => match never {},
            // Unreachable after the length check above; the placeholder keeps
            // the device usable, only the output stream is lost.
            Err(e) => log::error!("serial: rebuild failed: {e}"),
        }
        Ok(())
    }

    fn read_register(&mut self, offset: u64) -> u8 {
        match u8::try_from(offset) {
            Ok(reg) if offset < u64::from(COM_PORT_LEN) => self.uart.read(reg),
            _ => {
                log::debug!("serial: read of unknown offset {offset:#x}");
                0xff
            }
        }
    }

    fn write_register(&mut self, offset: u64, value: u8) {
        match u8::try_from(offset) {
            Ok(reg) if offset < u64::from(COM_PORT_LEN) => match self.uart.write(reg, value) {
                Ok(()) => {}
                Err(UartError::Trigger(never)) => match never {},
                Err(e) => log::debug!("serial: write to offset {reg:#x} failed: {e}"),
            },
            _ => log::debug!("serial: write of {value:#04x} to unknown offset {offset:#x}"),
        }
    }
}

impl std::fmt::Debug for Serial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serial")
            .field("state", &self.uart.state())
            .finish_non_exhaustive()
    }
}

impl MutDevicePio for Serial {
    // The UART's registers are one byte wide; a wider access is a run of
    // byte accesses to consecutive ports, as a real ISA bus would split it.
    fn pio_read(&mut self, _base: PioAddress, offset: PioAddressOffset, data: &mut [u8]) {
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = self.read_register(u64::from(offset) + i as u64);
        }
    }

    fn pio_write(&mut self, _base: PioAddress, offset: PioAddressOffset, data: &[u8]) {
        for (i, byte) in data.iter().enumerate() {
            self.write_register(u64::from(offset) + i as u64, *byte);
        }
    }
}

impl Stateful for Serial {
    type State = SerialState;
    type Error = SerialError;

    fn save_state(&self) -> SerialState {
        self.uart.state().into()
    }

    fn restore_state(&mut self, state: SerialState) -> Result<(), SerialError> {
        self.rebuild(&state.into())
    }
}

impl Reset for Serial {
    fn reset(&mut self) {
        if let Err(e) = self.rebuild(&vm_superio::SerialState::default()) {
            log::error!("serial: reset failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    const DATA: u16 = 0;
    const IER: u16 = 1;
    const LCR: u16 = 3;
    const LSR: u16 = 5;
    const SCR: u16 = 7;

    #[derive(Clone, Default)]
    struct SharedBuf(Arc<Mutex<Vec<u8>>>);

    impl Write for SharedBuf {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn serial() -> (Serial, EventFdTrigger, SharedBuf) {
        let irq = EventFdTrigger::new().unwrap();
        let out = SharedBuf::default();
        let s = Serial::new(irq.try_clone().unwrap(), Box::new(out.clone()));
        (s, irq, out)
    }

    fn read(s: &mut Serial, offset: u16) -> u8 {
        let mut b = [0u8];
        s.pio_read(PioAddress(COM1_PORT_BASE), offset, &mut b);
        b[0]
    }

    fn write(s: &mut Serial, offset: u16, v: u8) {
        s.pio_write(PioAddress(COM1_PORT_BASE), offset, &[v]);
    }

    #[test]
    fn output_reaches_writer() {
        let (mut s, _irq, out) = serial();
        for b in b"hi" {
            write(&mut s, DATA, *b);
        }
        assert_eq!(&*out.0.lock().unwrap(), b"hi");
        assert_eq!(s.metrics().tx_bytes(), 2);
    }

    #[test]
    fn enqueue_takes_only_what_fits() {
        let (mut s, irq, _out) = serial();
        write(&mut s, IER, 0x01);
        let cap = s.fifo_capacity();
        let input = vec![b'x'; cap + 10];
        assert_eq!(s.enqueue_input(&input), cap);
        assert_eq!(s.fifo_capacity(), 0);
        assert_eq!(s.enqueue_input(b"more"), 0);
        assert!(irq.event_fd().read().unwrap() >= 1);
        assert_eq!(read(&mut s, LSR) & 1, 1);
        assert_eq!(read(&mut s, DATA), b'x');
        assert_eq!(s.fifo_capacity(), 1);
    }

    #[test]
    fn drained_notifier_fires_when_fifo_empties() {
        let (mut s, _irq, _out) = serial();
        let drained = EventFdTrigger::new().unwrap();
        s.set_input_drained_notifier(drained.try_clone().unwrap())
            .unwrap();
        assert!(matches!(
            s.set_input_drained_notifier(EventFdTrigger::new().unwrap()),
            Err(SerialError::NotifierSet)
        ));
        s.enqueue_input(b"ab");
        read(&mut s, DATA);
        assert!(drained.event_fd().read().is_err());
        read(&mut s, DATA);
        assert_eq!(drained.event_fd().read().unwrap(), 1);
    }

    #[test]
    fn unknown_offsets_read_ones() {
        let (mut s, _irq, _out) = serial();
        let mut b = [0u8; 2];
        s.pio_read(PioAddress(COM1_PORT_BASE), 7, &mut b);
        assert_eq!(b[1], 0xff);
        write(&mut s, 9, 0x12);
    }

    #[test]
    fn wide_access_splits_into_bytes() {
        let (mut s, _irq, _out) = serial();
        // LCR then MCR.
        s.pio_write(PioAddress(COM1_PORT_BASE), LCR, &[0x03, 0x0b]);
        let mut b = [0u8; 2];
        s.pio_read(PioAddress(COM1_PORT_BASE), LCR, &mut b);
        assert_eq!(b, [0x03, 0x0b]);
    }

    #[test]
    fn save_restore_round_trip_keeps_writer() {
        let (mut s, _irq, out) = serial();
        write(&mut s, SCR, 0x5a);
        s.enqueue_input(b"abc");
        let state = s.save_state();
        assert_eq!(state.in_buffer, b"abc");

        let (mut t, _irq2, _out2) = serial();
        t.restore_state(state.clone()).unwrap();
        assert_eq!(t.save_state(), state);
        assert_eq!(read(&mut t, SCR), 0x5a);
        assert_eq!(read(&mut t, DATA), b'a');

        s.restore_state(state).unwrap();
        write(&mut s, DATA, b'z');
        assert_eq!(&*out.0.lock().unwrap(), b"z");
    }

    #[test]
    fn restore_rejects_oversized_fifo() {
        let (mut s, _irq, _out) = serial();
        write(&mut s, SCR, 0x11);
        let state = SerialState {
            in_buffer: vec![0; 1000],
            ..s.save_state()
        };
        assert!(matches!(
            s.restore_state(state),
            Err(SerialError::FifoOverflow { len: 1000, .. })
        ));
        assert_eq!(read(&mut s, SCR), 0x11);
    }

    #[test]
    fn reset_restores_defaults_and_keeps_output() {
        let (mut s, _irq, out) = serial();
        let fresh = s.save_state();
        write(&mut s, SCR, 0x77);
        s.enqueue_input(b"q");
        s.reset();
        assert_eq!(s.save_state(), fresh);
        write(&mut s, DATA, b'k');
        assert_eq!(&*out.0.lock().unwrap(), b"k");
    }
}
