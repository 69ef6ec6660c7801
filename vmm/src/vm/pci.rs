//! PCI functions the VMM adds to bus 0: slot choice, BAR placement, MMIO dispatch and
//! ioeventfds.
//!
//! There is no firmware to enumerate the bus, so [`PciBus::add`] places every memory BAR
//! itself (32-bit BARs in the PCI hole below 4 GiB, 64-bit BARs above RAM) before the first
//! boot and registers each BAR's range on the I/O bus the vCPUs dispatch to.
//!
//! Limitation: the I/O bus is immutable once the vCPUs share it, so a BAR stays where the VMM
//! put it. A guest that moves a BAR (with memory decoding on) gets a warning in the log and
//! its accesses at the new address go nowhere; Linux keeps the addresses it finds assigned.

use std::collections::HashSet;
use std::io;
use std::sync::{Arc, Mutex};

use kvm_ioctls::{IoEventAddress, NoDatamatch, VmFd};
use petrel_arch::layout::{self, MemoryLayout};
use petrel_devices::pci::bus::PciBusError;
use petrel_devices::pci::config::PciConfiguration;
use petrel_devices::pci::{
    AddressWindow, BarAllocError, BarAllocator, PciDevice, PciDeviceHandle, PciRoot,
};
use petrel_devices::virtio::VirtioPciDevice;
use petrel_devices::Reset;
use thiserror::Error;
use vm_device::bus::{MmioAddress, MmioRange};
use vm_device::device_manager::{IoManager, MmioManager};
use vm_device::MutDeviceMmio;
use vmm_sys_util::eventfd::EventFd;

/// First dword of the BARs in a type 0 header.
const BAR_FIRST_REG: usize = 4;
/// Last dword of the BARs in a type 0 header.
const BAR_LAST_REG: usize = 9;
/// Dword of the command register.
const COMMAND_REG: usize = 1;

/// Errors adding a PCI function.
#[derive(Debug, Error)]
pub enum PciError {
    /// All 32 device numbers of bus 0 are taken.
    #[error("no free slot on PCI bus 0")]
    NoSlot,
    /// The slot asked for is taken.
    #[error("PCI: slot {0} function 0 not available, in use by another device")]
    SlotInUse(u8),
    /// The slot could not be taken.
    #[error("cannot place the function on bus 0")]
    Bus(#[source] PciBusError),
    /// The BAR windows could not be set up, or a BAR did not fit.
    #[error("cannot assign the BARs")]
    Bar(#[source] BarAllocError),
    /// A BAR's range clashes with another device's.
    #[error("cannot register BAR {0} on the I/O bus")]
    Mmio(usize, #[source] vm_device::bus::Error),
    /// The I/O bus is already shared with the vCPUs.
    #[error("PCI functions must be added before the first boot")]
    Started,
    /// The function's notification eventfds could not be duplicated.
    #[error("cannot duplicate the function's notification eventfds")]
    EventFd(#[source] io::Error),
    /// KVM refused an ioeventfd.
    #[error("cannot register an ioeventfd at {0:#x}")]
    IoEvent(u64, #[source] kvm_ioctls::Error),
}

/// A PCI function the VMM can place: a configuration space with BARs, MMIO handlers for
/// them, and optional doorbells to turn into ioeventfds.
///
/// Every BAR's range is dispatched to [`MutDeviceMmio`] with `base` the BAR's address and
/// `offset` relative to it; a function with several BARs tells them apart by `base`.
pub trait PciBarDevice: PciDevice + MutDeviceMmio + 'static {
    /// The configuration space, for BAR assignment and relocation checks.
    fn pci_config(&self) -> &PciConfiguration;
    /// The configuration space, mutably.
    fn pci_config_mut(&mut self) -> &mut PciConfiguration;
    /// Doorbells to register as ioeventfds (any write of any size at the address signals
    /// the fd), at the BARs' assigned addresses.
    fn ioevents(&self) -> io::Result<Vec<(u64, EventFd)>>;
}

impl PciBarDevice for VirtioPciDevice {
    fn pci_config(&self) -> &PciConfiguration {
        self.config()
    }

    fn pci_config_mut(&mut self) -> &mut PciConfiguration {
        self.config_mut()
    }

    fn ioevents(&self) -> io::Result<Vec<(u64, EventFd)>> {
        self.notify_addresses()
            .into_iter()
            .filter_map(|n| {
                self.notify_event(n.queue)
                    .map(|fd| fd.try_clone().map(|fd| (n.address, fd)))
            })
            .collect()
    }
}

/// Where a function was placed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PciPlacement {
    /// Device and function number on bus 0.
    pub devfn: u8,
    /// `(index, address, size)` of every memory BAR, as registered on the I/O bus.
    pub bars: Vec<(usize, u64, u64)>,
}

struct PlacedFunction {
    placement: PciPlacement,
    ioevents: Vec<(u64, EventFd)>,
}

/// Bus 0 as the VMM populates it.
pub struct PciBus {
    root: Arc<Mutex<PciRoot>>,
    allocator: BarAllocator,
    functions: Vec<PlacedFunction>,
}

impl PciBus {
    /// The VMM's side of `root`, placing BARs in the windows of `layout`.
    pub fn new(root: Arc<Mutex<PciRoot>>, layout: &MemoryLayout) -> Result<Self, PciError> {
        let mem32 = AddressWindow::new(layout::PCI_MMIO32_START, layout::PCI_MMIO32_SIZE)
            .map_err(PciError::Bar)?;
        let (start, size) = layout.pci_mmio64;
        let mem64 = AddressWindow::new(start, size).map_err(PciError::Bar)?;
        Ok(Self {
            root,
            allocator: BarAllocator::new(mem32, mem64).map_err(PciError::Bar)?,
            functions: Vec::new(),
        })
    }

    /// The root bus.
    #[cfg(test)]
    pub fn root(&self) -> &Arc<Mutex<PciRoot>> {
        &self.root
    }

    /// Where each added function was placed, in the order added.
    pub fn placements(&self) -> impl Iterator<Item = &PciPlacement> {
        self.functions.iter().map(|f| &f.placement)
    }

    /// Places `device` in `slot` of bus 0 or else the lowest free one, assigns its BARs and
    /// routes them on `io`. Its ioeventfds are registered by [`PciBus::connect`] on every VM.
    ///
    /// On error nothing is left on the bus, but BAR space already handed out stays used.
    pub fn add<D: PciBarDevice>(
        &mut self,
        io: &mut IoManager,
        device: Arc<Mutex<D>>,
        slot: Option<u8>,
    ) -> Result<PciPlacement, PciError> {
        let devfn = match slot {
            Some(s) => {
                let devfn = petrel_devices::pci::devfn(s, 0).ok_or(PciError::SlotInUse(s))?;
                if lock(&self.root).device(devfn).is_some() {
                    return Err(PciError::SlotInUse(s));
                }
                devfn
            }
            None => lock(&self.root).next_free_slot().ok_or(PciError::NoSlot)?,
        };
        let (bars, ioevents) = {
            let mut dev = lock(&device);
            self.allocator
                .assign(dev.pci_config_mut())
                .map_err(PciError::Bar)?;
            let bars: Vec<_> = dev
                .pci_config()
                .bars()
                .map(|b| (b.index, b.address, b.size))
                .collect();
            (bars, dev.ioevents().map_err(PciError::EventFd)?)
        };
        for (index, address, size) in &bars {
            let range = MmioRange::new(MmioAddress(*address), *size)
                .map_err(|e| PciError::Mmio(*index, e))?;
            if let Err(e) = io.register_mmio(range, device.clone()) {
                // Leave the bus as it was.
                for (_, address, _) in &bars {
                    let _ = io.deregister_mmio(MmioAddress(*address));
                }
                return Err(PciError::Mmio(*index, e));
            }
        }
        let watched: PciDeviceHandle = Arc::new(Mutex::new(BarWatch {
            device,
            bars: bars.clone(),
            warned: HashSet::new(),
        }));
        if let Err(e) = lock(&self.root).add_device(devfn, watched) {
            for (_, address, _) in &bars {
                let _ = io.deregister_mmio(MmioAddress(*address));
            }
            return Err(PciError::Bus(e));
        }
        let placement = PciPlacement { devfn, bars };
        self.functions.push(PlacedFunction {
            placement: placement.clone(),
            ioevents,
        });
        Ok(placement)
    }

    /// Every function on bus 0 as its configuration space shows it now (`query-pci`);
    /// `ids` gives the `-device id=` of a devfn.
    pub fn query(
        &self,
        ids: &dyn Fn(u8) -> Option<String>,
    ) -> Vec<crate::api::pci::PciFunctionInfo> {
        use crate::api::pci::{PciFunctionInfo, PciRegion};
        let root = lock(&self.root);
        let mut out = Vec::new();
        for devfn in 0..=255u8 {
            let reg = |i: usize| root.config_read(0, devfn, i);
            let id = reg(0);
            if id & 0xffff == 0xffff {
                continue;
            }
            let class = reg(2);
            let subsys = reg(11);
            let int = reg(15);
            let command = reg(COMMAND_REG) as u16;
            let sizes = self
                .placements()
                .find(|p| p.devfn == devfn)
                .map(|p| p.bars.clone())
                .unwrap_or_default();
            let regions = sizes
                .iter()
                .map(|&(index, _, size)| {
                    let low = reg(BAR_FIRST_REG + index);
                    let mem64 = low & 0b110 == 0b100;
                    let high = if mem64 {
                        reg(BAR_FIRST_REG + index + 1)
                    } else {
                        0
                    };
                    let address = (u64::from(high) << 32) | u64::from(low & !0xf);
                    // Memory decoding off, or an unassigned BAR, decodes nothing.
                    let decoding = command & 0x2 != 0 && address != 0;
                    PciRegion {
                        bar: index as u8,
                        io: false,
                        address: decoding.then_some(address),
                        size,
                        prefetch: low & 0x8 != 0,
                        mem_type_64: mem64,
                    }
                })
                .collect();
            out.push(PciFunctionInfo {
                bus: 0,
                slot: devfn >> 3,
                function: devfn & 7,
                vendor: id as u16,
                device: (id >> 16) as u16,
                subsystem_vendor: subsys as u16,
                subsystem: (subsys >> 16) as u16,
                class: (class >> 16) as u16,
                irq_pin: (int >> 8) as u8,
                irq_line: int as u8,
                qdev_id: ids(devfn).unwrap_or_default(),
                regions,
            });
        }
        out
    }

    /// Registers every function's ioeventfds on a newly created `vm` (first boot, reset, S3
    /// resume). They go away with the VM.
    pub fn connect(&self, vm: &VmFd) -> Result<(), PciError> {
        for f in &self.functions {
            for (address, fd) in &f.ioevents {
                vm.register_ioevent(fd, &IoEventAddress::Mmio(*address), NoDatamatch)
                    .map_err(|e| PciError::IoEvent(*address, e))?;
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for PciBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PciBus")
            .field("root", &self.root)
            .field("functions", &self.placements().collect::<Vec<_>>())
            .finish()
    }
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The function as the root bus sees it: forwards configuration accesses and warns when the
/// guest moves a BAR away from where the I/O bus routes it.
struct BarWatch<D> {
    device: Arc<Mutex<D>>,
    bars: Vec<(usize, u64, u64)>,
    /// `(index, address)` already warned about.
    warned: HashSet<(usize, u64)>,
}

impl<D: PciBarDevice> BarWatch<D> {
    fn check(&mut self, dev: &D) {
        let config = dev.pci_config();
        // BAR sizing happens with decoding off; only a live BAR matters.
        if !config.memory_enabled() {
            return;
        }
        for &(index, registered, _) in &self.bars {
            let Some(bar) = config.bar(index) else {
                continue;
            };
            if bar.address != registered && self.warned.insert((index, bar.address)) {
                log::warn!(
                    "{}: guest moved BAR {index} from {registered:#x} to {:#x}; BAR relocation \
                     is not supported, the function stays at {registered:#x}",
                    dev.id(),
                    bar.address
                );
            }
        }
    }
}

impl<D: PciBarDevice> Reset for BarWatch<D> {
    fn reset(&mut self) {
        lock(&self.device).reset();
        self.warned.clear();
    }
}

impl<D: PciBarDevice> PciDevice for BarWatch<D> {
    fn id(&self) -> &str {
        // The id lives behind the device's lock; the root bus only uses it for debugging.
        "pci-function"
    }

    fn config_read(&mut self, reg_idx: usize) -> u32 {
        lock(&self.device).config_read(reg_idx)
    }

    fn config_write(&mut self, reg_idx: usize, offset: u64, data: &[u8]) {
        let device = self.device.clone();
        let mut dev = lock(&device);
        dev.config_write(reg_idx, offset, data);
        if reg_idx == COMMAND_REG || (BAR_FIRST_REG..=BAR_LAST_REG).contains(&reg_idx) {
            self.check(&dev);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use petrel_devices::pci::config::{ConfigSpaceSize, PciHeader};
    use petrel_devices::pci::BarKind;
    use vm_device::bus::{MmioAddressOffset, PioAddress};
    use vm_device::device_manager::PioManager;

    /// A function with a 64-bit and a 32-bit BAR that remembers its last access.
    struct Fake {
        config: PciConfiguration,
        doorbell: EventFd,
        last: Option<(u64, u64)>,
    }

    impl Fake {
        fn new() -> Self {
            let mut config = PciConfiguration::new(&PciHeader::default(), ConfigSpaceSize::Pci);
            config.add_bar(0, 0x4000, BarKind::Mem64, false).unwrap();
            config.add_bar(2, 0x1000, BarKind::Mem32, false).unwrap();
            Fake {
                config,
                doorbell: EventFd::new(0).unwrap(),
                last: None,
            }
        }
    }

    impl Reset for Fake {
        fn reset(&mut self) {
            self.config.reset();
        }
    }

    impl PciDevice for Fake {
        fn id(&self) -> &str {
            "fake"
        }
        fn config_read(&mut self, reg_idx: usize) -> u32 {
            self.config.read_reg(reg_idx)
        }
        fn config_write(&mut self, reg_idx: usize, offset: u64, data: &[u8]) {
            self.config.write_reg(reg_idx, offset, data);
        }
    }

    impl MutDeviceMmio for Fake {
        fn mmio_read(&mut self, base: MmioAddress, offset: MmioAddressOffset, data: &mut [u8]) {
            self.last = Some((base.0, offset));
            data.fill(0xab);
        }
        fn mmio_write(&mut self, base: MmioAddress, offset: MmioAddressOffset, _: &[u8]) {
            self.last = Some((base.0, offset));
        }
    }

    impl PciBarDevice for Fake {
        fn pci_config(&self) -> &PciConfiguration {
            &self.config
        }
        fn pci_config_mut(&mut self) -> &mut PciConfiguration {
            &mut self.config
        }
        fn ioevents(&self) -> io::Result<Vec<(u64, EventFd)>> {
            let bar = self.config.bar(0).unwrap();
            Ok(vec![(bar.address + 0x100, self.doorbell.try_clone()?)])
        }
    }

    fn bus() -> PciBus {
        let layout = MemoryLayout::new(1 << 30, 40).unwrap();
        PciBus::new(Arc::new(Mutex::new(PciRoot::new())), &layout).unwrap()
    }

    #[test]
    fn places_bars_and_routes_mmio() {
        let mut pci = bus();
        let mut io = IoManager::new();
        // 64-bit BARs go below 4 GiB too while the 32-bit window has room.
        let s = layout::PCI_MMIO32_START;
        let a = Arc::new(Mutex::new(Fake::new()));
        let b = Arc::new(Mutex::new(Fake::new()));
        let pa = pci.add(&mut io, a.clone(), None).unwrap();
        let pb = pci.add(&mut io, b.clone(), None).unwrap();
        assert_eq!(pa.devfn, 1 << 3);
        assert_eq!(pb.devfn, 2 << 3);
        assert_eq!(pa.bars, [(0, s, 0x4000), (2, s + 0x4000, 0x1000)]);
        assert_eq!(pb.bars, [(0, s + 0x8000, 0x4000), (2, s + 0xc000, 0x1000)]);

        // Accesses reach the right function with BAR-relative offsets.
        let mut data = [0u8; 4];
        io.mmio_read(MmioAddress(s + 0x8010), &mut data).unwrap();
        assert_eq!(data, [0xab; 4]);
        assert_eq!(lock(&b).last, Some((s + 0x8000, 0x10)));
        io.mmio_write(MmioAddress(s + 0x4020), &[1]).unwrap();
        assert_eq!(lock(&a).last, Some((s + 0x4000, 0x20)));
        assert!(io.pio_read(PioAddress(0xcfc), &mut data).is_err());

        // The root bus sees the functions with their BARs programmed.
        let root = pci.root().clone();
        let root = lock(&root);
        assert_eq!(root.config_read(0, 8, 4), (s as u32) | 0x4);
        assert_eq!(root.config_read(0, 8, 6), s as u32 + 0x4000);
        assert_eq!(root.config_read(0, 16, 6), s as u32 + 0xc000);
    }

    #[test]
    fn full_bus_and_clashes_leave_no_trace() {
        let mut pci = bus();
        let mut io = IoManager::new();
        // Something already sits where the first BAR would go.
        let blocker = Arc::new(Mutex::new(Fake::new()));
        io.register_mmio(
            MmioRange::new(MmioAddress(layout::PCI_MMIO32_START), 0x10).unwrap(),
            blocker,
        )
        .unwrap();
        let err = pci.add(&mut io, Arc::new(Mutex::new(Fake::new())), None);
        assert!(matches!(err, Err(PciError::Mmio(0, _))), "{err:?}");
        assert_eq!(pci.placements().count(), 0);
        assert_eq!(lock(pci.root()).next_free_slot(), Some(8));

        let mut pci = bus();
        let mut io = IoManager::new();
        for _ in 1..32 {
            pci.add(&mut io, Arc::new(Mutex::new(Fake::new())), None)
                .unwrap();
        }
        assert!(matches!(
            pci.add(&mut io, Arc::new(Mutex::new(Fake::new())), None),
            Err(PciError::NoSlot)
        ));
    }

    #[test]
    fn moved_bar_is_noticed() {
        let mut pci = bus();
        let mut io = IoManager::new();
        let dev = Arc::new(Mutex::new(Fake::new()));
        pci.add(&mut io, dev.clone(), None).unwrap();
        let root = pci.root().clone();
        let root = lock(&root);
        // Sizing with decoding off is not a move.
        root.config_write(0, 8, 6, 0, &u32::MAX.to_le_bytes());
        root.config_write(0, 8, 6, 0, &(layout::PCI_MMIO32_START as u32).to_le_bytes());
        root.config_write(0, 8, COMMAND_REG, 0, &[0x2]);
        root.config_write(0, 8, 6, 0, &0xd000_0000u32.to_le_bytes());
        assert_eq!(lock(&dev).config.bar(2).unwrap().address, 0xd000_0000);
        // The I/O bus still routes the old address.
        let mut data = [0u8; 1];
        io.mmio_read(MmioAddress(layout::PCI_MMIO32_START), &mut data)
            .unwrap();
        assert!(io.mmio_read(MmioAddress(0xd000_0000), &mut data).is_err());

        // What the watch records: sizing is ignored, a live move is reported once.
        let mut watch = BarWatch {
            device: Arc::new(Mutex::new(Fake::new())),
            bars: vec![(2, layout::PCI_MMIO32_START, 0x1000)],
            warned: HashSet::new(),
        };
        lock(&watch.device)
            .config
            .set_bar_address(2, layout::PCI_MMIO32_START)
            .unwrap();
        watch.config_write(6, 0, &u32::MAX.to_le_bytes());
        watch.config_write(6, 0, &(layout::PCI_MMIO32_START as u32).to_le_bytes());
        watch.config_write(COMMAND_REG, 0, &[0x2]);
        assert!(watch.warned.is_empty());
        watch.config_write(6, 0, &0xd000_0000u32.to_le_bytes());
        watch.config_write(6, 0, &0xd000_0000u32.to_le_bytes());
        assert_eq!(watch.warned, HashSet::from([(2, 0xd000_0000)]));
        watch.reset();
        assert!(watch.warned.is_empty());
    }

    /// Needs /dev/kvm: fails rather than skips without it.
    #[test]
    fn ioeventfds_on_every_new_vm() {
        let kvm = kvm_ioctls::Kvm::new().expect("this test needs /dev/kvm");
        let mut pci = bus();
        let mut io = IoManager::new();
        let dev = Arc::new(Mutex::new(Fake::new()));
        pci.add(&mut io, dev.clone(), None).unwrap();
        let (address, fd) = lock(&dev).ioevents().unwrap().remove(0);
        for _ in 0..2 {
            let vm = kvm.create_vm().unwrap();
            pci.connect(&vm).unwrap();
            // Already registered at that address on this VM.
            assert!(vm
                .register_ioevent(&fd, &IoEventAddress::Mmio(address), NoDatamatch)
                .is_err());
        }
    }

    struct Dummy;

    impl petrel_devices::virtio::VirtioDevice for Dummy {
        fn device_type(&self) -> u32 {
            petrel_devices::virtio::TYPE_BLOCK
        }
        fn queue_max_sizes(&self) -> &[u16] {
            &[16, 16]
        }
        fn features(&self) -> u64 {
            0
        }
        fn ack_features(&mut self, _: u64) {}
        fn read_config(&self, _: u64, data: &mut [u8]) {
            data.fill(0);
        }
        fn write_config(&mut self, _: u64, _: &[u8]) {}
        fn activate(
            &mut self,
            _: petrel_devices::virtio::GuestMemory,
            _: Vec<petrel_devices::virtio::ActivatedQueue>,
            _: Arc<dyn petrel_devices::virtio::VirtioInterrupt>,
        ) -> Result<(), petrel_devices::virtio::VirtioDeviceError> {
            Ok(())
        }
        fn reset(&mut self) -> Result<(), petrel_devices::virtio::VirtioDeviceError> {
            Ok(())
        }

        fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
            self
        }
    }

    /// A virtio-pci function wired end to end: BAR, MSI-X routes, ioeventfds. Needs
    /// /dev/kvm: fails rather than skips without it.
    #[test]
    fn virtio_pci_function_on_kvm() {
        use crate::vm::msi::{KvmMsiRouting, MsiMessage};
        use vm_memory::GuestAddress;

        let kvm = kvm_ioctls::Kvm::new().expect("this test needs /dev/kvm");
        let routing = Arc::new(KvmMsiRouting::new());
        let vectors = routing.new_group(3).unwrap();
        let mem = Arc::new(
            vm_memory::GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap(),
        );
        let dev =
            VirtioPciDevice::new("vblk", Box::new(Dummy), mem, vectors.clone(), None).unwrap();
        let dev = Arc::new(Mutex::new(dev));
        let mut pci = bus();
        let mut io = IoManager::new();
        let placement = pci.add(&mut io, dev.clone(), None).unwrap();
        let bar = lock(&dev).bar_address();
        assert_eq!(placement.bars, [(0, bar, lock(&dev).bar_size())]);
        assert!((layout::PCI_MMIO32_START..1 << 32).contains(&bar));

        let vm = Arc::new(kvm.create_vm().unwrap());
        vm.create_irq_chip().unwrap();
        routing.attach(&vm).unwrap();
        pci.connect(&vm).unwrap();

        // Queue 1's doorbell is an ioeventfd on the VM...
        let notify = lock(&dev).notify_addresses()[1].address;
        let fd = lock(&dev).notify_event(1).unwrap().try_clone().unwrap();
        assert!(vm
            .register_ioevent(&fd, &IoEventAddress::Mmio(notify), NoDatamatch)
            .is_err());
        // ...and a kick that reaches the VMM signals the same fd.
        io.mmio_write(MmioAddress(notify), &1u16.to_le_bytes())
            .unwrap();
        assert_eq!(fd.read().unwrap(), 1);

        // Program vector 1, unmask it and enable MSI-X: the route follows.
        let entry = bar + petrel_devices::virtio::pci::layout::MSIX_TABLE_OFFSET + 16;
        io.mmio_write(MmioAddress(entry), &0xfee0_0000u32.to_le_bytes())
            .unwrap();
        io.mmio_write(MmioAddress(entry + 8), &0x4031u32.to_le_bytes())
            .unwrap();
        io.mmio_write(MmioAddress(entry + 12), &0u32.to_le_bytes())
            .unwrap();
        let gsi = vectors.base_gsi() + 1;
        assert_eq!(routing.table().route(gsi), Some(None));
        let root = pci.root().clone();
        let mut root = lock(&root);
        let mut cap = (root.config_read(0, 8, 0x34 / 4) & 0xff) as usize;
        while (root.config_read(0, 8, cap / 4) >> (8 * (cap % 4))) & 0xff != 0x11 {
            cap = ((root.config_read(0, 8, cap / 4) >> (8 * (cap % 4) + 8)) & 0xff) as usize;
            assert_ne!(cap, 0, "no msi-x capability");
        }
        root.config_write(
            0,
            8,
            cap / 4,
            2 + (cap % 4) as u64,
            &0x8000u16.to_le_bytes(),
        );
        assert_eq!(
            routing.table().route(gsi),
            Some(Some(MsiMessage {
                address: 0xfee0_0000,
                data: 0x4031
            }))
        );
        // Machine reset masks the routes again.
        root.reset();
        routing.reset();
        assert_eq!(routing.table().route(gsi), Some(None));
    }
}
