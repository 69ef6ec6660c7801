//! Assignment of BAR addresses by the VMM.
//!
//! Without firmware to enumerate the bus, the VMM places every memory BAR
//! itself before the guest starts: 32-bit BARs in a window below 4 GiB and
//! 64-bit BARs in a window above it. Each BAR is naturally aligned (to its
//! size, a power of two); the windows are filled bottom-up.

use super::bar::BarKind;
use super::config::{PciConfigError, PciConfiguration};

/// Errors from BAR allocation.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum BarAllocError {
    /// The window is empty, wraps or (for the 32-bit window) leaves 4 GiB.
    #[error("invalid window {start:#x}+{size:#x}")]
    Window {
        /// Window start.
        start: u64,
        /// Window size.
        size: u64,
    },
    /// The size is zero or not a power of two.
    #[error("invalid bar size {0:#x}")]
    Size(u64),
    /// No room left in the window for a BAR of this size.
    #[error("no room for a {size:#x}-byte {kind:?} bar")]
    Exhausted {
        /// Window asked for.
        kind: BarKind,
        /// Size asked for.
        size: u64,
    },
    /// The allocator has no window for I/O BARs.
    #[error("i/o bars are not allocated")]
    IoBar,
    /// Programming the allocated address into the function failed.
    #[error("program bar: {0}")]
    Config(#[from] PciConfigError),
}

/// A window of addresses handed out bottom-up with natural alignment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddressWindow {
    start: u64,
    /// Last address of the window (inclusive, so a window can end at
    /// `u64::MAX`).
    last: u64,
    /// First address not yet handed out; `None` once the window is full.
    next: Option<u64>,
}

impl AddressWindow {
    /// A window of `size` bytes at `start`.
    pub fn new(start: u64, size: u64) -> Result<Self, BarAllocError> {
        let last = size
            .checked_sub(1)
            .and_then(|s| start.checked_add(s))
            .ok_or(BarAllocError::Window { start, size })?;
        Ok(Self {
            start,
            last,
            next: Some(start),
        })
    }

    /// First address of the window.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Last address of the window.
    pub fn last(&self) -> u64 {
        self.last
    }

    /// Hands out `size` bytes (a power of two) aligned to `size`; `None`
    /// when they do not fit.
    fn allocate(&mut self, size: u64) -> Option<u64> {
        let next = self.next?;
        let address = next.checked_next_multiple_of(size)?;
        let end = address.checked_add(size - 1)?;
        if end > self.last {
            return None;
        }
        self.next = end.checked_add(1);
        Some(address)
    }
}

/// Allocator over a 32-bit and a 64-bit MMIO window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BarAllocator {
    mem32: AddressWindow,
    mem64: AddressWindow,
}

impl BarAllocator {
    /// An allocator handing out 32-bit BARs from `mem32` (which must lie
    /// below 4 GiB) and 64-bit BARs from `mem32` while it has room, then from
    /// `mem64`.
    pub fn new(mem32: AddressWindow, mem64: AddressWindow) -> Result<Self, BarAllocError> {
        if mem32.last > u64::from(u32::MAX) {
            return Err(BarAllocError::Window {
                start: mem32.start,
                size: mem32.last - mem32.start + 1,
            });
        }
        Ok(Self { mem32, mem64 })
    }

    /// Hands out an address for a `kind` BAR of `size` bytes, aligned to
    /// its size. 64-bit BARs go below 4 GiB while the 32-bit window has room,
    /// as SeaBIOS places them, so that guests mapping only the low 4 GiB
    /// reach them; then above RAM.
    pub fn allocate(&mut self, kind: BarKind, size: u64) -> Result<u64, BarAllocError> {
        if !size.is_power_of_two() {
            return Err(BarAllocError::Size(size));
        }
        let address = match kind {
            BarKind::Mem32 => self.mem32.allocate(size),
            BarKind::Mem64 => self
                .mem32
                .allocate(size)
                .or_else(|| self.mem64.allocate(size)),
            BarKind::Io => return Err(BarAllocError::IoBar),
        };
        address.ok_or(BarAllocError::Exhausted { kind, size })
    }

    /// Allocates and programs every declared memory BAR of `config`, as
    /// firmware would; the addresses become the function's power-on values.
    /// Stops at the first failure (earlier BARs stay assigned).
    pub fn assign(&mut self, config: &mut PciConfiguration) -> Result<(), BarAllocError> {
        let bars: Vec<_> = config.bars().collect();
        for bar in bars {
            let address = self.allocate(bar.kind, bar.size)?;
            config.set_bar_address(bar.index, address)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::config::{ConfigSpaceSize, PciHeader};

    fn allocator() -> BarAllocator {
        BarAllocator::new(
            AddressWindow::new(0xc000_0000, 0x1_0000).unwrap(),
            AddressWindow::new(0x80_0000_0000, 0x10_0000).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn windows_are_checked() {
        assert!(AddressWindow::new(0x1000, 0).is_err());
        assert!(AddressWindow::new(u64::MAX, 2).is_err());
        let top = AddressWindow::new(u64::MAX - 0xfff, 0x1000).unwrap();
        assert_eq!(top.last(), u64::MAX);
        assert_eq!(
            BarAllocator::new(top, top),
            Err(BarAllocError::Window {
                start: u64::MAX - 0xfff,
                size: 0x1000
            })
        );
    }

    #[test]
    fn natural_alignment() {
        let mut a = allocator();
        assert_eq!(a.allocate(BarKind::Mem32, 0x10), Ok(0xc000_0000));
        assert_eq!(a.allocate(BarKind::Mem32, 0x1000), Ok(0xc000_1000));
        assert_eq!(a.allocate(BarKind::Mem32, 0x20), Ok(0xc000_2000));
        assert_eq!(a.allocate(BarKind::Mem32, 0x4000), Ok(0xc000_4000));
        assert_eq!(a.allocate(BarKind::Mem64, 0x4000), Ok(0xc000_8000));
        // Too big for what is left below 4 GiB: above RAM.
        assert_eq!(a.allocate(BarKind::Mem64, 0x8_0000), Ok(0x80_0000_0000));
        assert_eq!(a.allocate(BarKind::Mem64, 0x8_0000), Ok(0x80_0008_0000));
        assert_eq!(
            a.allocate(BarKind::Mem32, 0x3000),
            Err(BarAllocError::Size(0x3000))
        );
        assert_eq!(a.allocate(BarKind::Mem32, 0), Err(BarAllocError::Size(0)));
        assert_eq!(a.allocate(BarKind::Io, 0x10), Err(BarAllocError::IoBar));
    }

    #[test]
    fn full_window() {
        let mut a = allocator();
        assert_eq!(a.allocate(BarKind::Mem32, 0x8000), Ok(0xc000_0000));
        assert_eq!(a.allocate(BarKind::Mem32, 0x8000), Ok(0xc000_8000));
        assert_eq!(
            a.allocate(BarKind::Mem32, 0x10),
            Err(BarAllocError::Exhausted {
                kind: BarKind::Mem32,
                size: 0x10
            })
        );
        // A window ending at the top of the address space fills up cleanly.
        let top = AddressWindow::new(u64::MAX - 0xfff, 0x1000).unwrap();
        let mut b = BarAllocator::new(AddressWindow::new(0, 0x1000).unwrap(), top).unwrap();
        // 64-bit BARs fill the 32-bit window first.
        assert_eq!(b.allocate(BarKind::Mem64, 0x1000), Ok(0));
        assert_eq!(b.allocate(BarKind::Mem64, 0x1000), Ok(u64::MAX - 0xfff));
        assert!(b.allocate(BarKind::Mem64, 0x10).is_err());
    }

    #[test]
    fn assign_programs_bars() {
        let mut config = PciConfiguration::new(&PciHeader::default(), ConfigSpaceSize::Pci);
        config.add_bar(0, 0x4000, BarKind::Mem64, false).unwrap();
        config.add_bar(2, 0x1000, BarKind::Mem32, false).unwrap();
        let mut a = allocator();
        a.assign(&mut config).unwrap();
        let bars: Vec<_> = config.bars().map(|b| (b.index, b.address)).collect();
        assert_eq!(bars, [(0, 0xc000_0000), (2, 0xc000_4000)]);
        config.reset();
        assert_eq!(config.bar(0).unwrap().address, 0xc000_0000);
    }
}
