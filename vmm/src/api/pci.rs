//! What `query-pci` reports of a PCI function.

/// One BAR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciRegion {
    /// BAR index.
    pub bar: u8,
    /// I/O space rather than memory.
    pub io: bool,
    /// Where it decodes; `None` while decoding is off or the BAR is unassigned.
    pub address: Option<u64>,
    /// Size in bytes.
    pub size: u64,
    /// Prefetchable (memory BARs).
    pub prefetch: bool,
    /// 64-bit (memory BARs).
    pub mem_type_64: bool,
}

/// One function on a bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciFunctionInfo {
    /// Bus number.
    pub bus: u8,
    /// Device number.
    pub slot: u8,
    /// Function number.
    pub function: u8,
    /// Vendor ID.
    pub vendor: u16,
    /// Device ID.
    pub device: u16,
    /// Subsystem vendor ID.
    pub subsystem_vendor: u16,
    /// Subsystem ID.
    pub subsystem: u16,
    /// Class and subclass, `class << 8 | subclass`.
    pub class: u16,
    /// Interrupt pin (0: none, 1: INTA#...).
    pub irq_pin: u8,
    /// Interrupt line register.
    pub irq_line: u8,
    /// The device's id (`-device id=`), empty when it has none.
    pub qdev_id: String,
    /// The BARs.
    pub regions: Vec<PciRegion>,
}
