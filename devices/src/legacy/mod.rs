//! PC platform devices found on every x86 machine: the 16550 UART, the i8042
//! keyboard controller (for its reset line) and the MC146818 CMOS RTC.

pub mod i8042;
pub mod rtc;
pub mod serial;

pub use i8042::I8042;
pub use rtc::Rtc;
pub use serial::Serial;
