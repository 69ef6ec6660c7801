//! ACPI fixed hardware: the PM1 event/control registers and PM timer, and the
//! reset control register the FADT's RESET_REG points at.

pub mod pm;
pub mod reset;

pub use pm::AcpiPm;
pub use reset::ResetControl;
