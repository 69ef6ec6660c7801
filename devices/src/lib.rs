//! Emulated devices for petrel.
//!
//! Every device here is plain Rust state behind a `vm_device` I/O trait
//! ([`vm_device::MutDevicePio`] or [`vm_device::MutDeviceMmio`]). The VMM wraps
//! each one in `Arc<Mutex<_>>` and registers it in a
//! `vm_device::device_manager::IoManager` at the base it chooses; devices only
//! ever see offsets relative to that base.
//!
//! Conventions shared by all devices:
//! - accesses may be 1, 2 or 4 bytes wide; reads of registers a device does
//!   not implement return all-ones and writes to them are dropped (logged at
//!   debug level);
//! - nothing a guest writes can panic the VMM;
//! - interrupts and machine-level events (reset, shutdown) leave a device
//!   through an [`EventFdTrigger`], which the VMM turns into a KVM irqfd or
//!   polls in its event loop;
//! - each device implements [`Stateful`] (a plain serde struct, for
//!   migration) and [`Reset`] (what a machine reset does to it).
//!
//! Layout: [`legacy`] holds the PC platform devices (16550 UART, i8042, CMOS
//! RTC), [`acpi`] the fixed-hardware ACPI registers, [`pci`] the PCI root
//! complex, [`virtio`] virtio device models' interface and their PCI
//! transport, and [`debug_port`] petrel's boot progress port.

pub mod acpi;
pub mod debug_port;
pub mod legacy;
pub mod pci;
pub mod trigger;
pub mod virtio;

mod sync;

pub use trigger::EventFdTrigger;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Save and restore of a device's guest-visible state.
///
/// The state is a plain serde struct so the VMM can serialise it in any
/// format; host resources (event fds, output streams, clocks) are not part of
/// it and stay with the device that restores it.
pub trait Stateful {
    /// The serialisable snapshot of the device.
    type State: Serialize + DeserializeOwned;
    /// Why a snapshot can be refused.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Captures the current state.
    fn save_state(&self) -> Self::State;

    /// Replaces the current state with `state`.
    ///
    /// On error the device keeps the state it had before the call.
    fn restore_state(&mut self, state: Self::State) -> Result<(), Self::Error>;
}

/// What a machine reset (the guest's reset request or a VMM-initiated one)
/// does to a device.
///
/// Kept apart from [`Stateful`] so the VMM can hold a list of
/// `Arc<Mutex<dyn Reset + Send>>` and reset them all in one loop.
pub trait Reset {
    /// Puts the device back in its power-on state, keeping whatever real
    /// hardware keeps across a reset (battery-backed CMOS, for instance).
    fn reset(&mut self);
}
