//! MSI delivery through KVM: the GSI routing table and one irqfd per MSI-X vector.
//!
//! `KVM_SET_GSI_ROUTING` replaces the whole routing table, so [`KvmMsiRouting`] owns all of
//! it: the entries KVM installs by default for the in-kernel PIC and IOAPIC (GSIs 0-23), plus
//! one MSI route per device vector, allocated from GSI 24 up.
//!
//! The table and the irqfds outlive any one KVM VM: a guest reset (or S3 resume) builds a new
//! VM, and [`KvmMsiRouting::attach`] pushes the table and re-registers every irqfd there. The
//! routing keeps only a weak reference to the VM, so it never keeps a dropped VM alive.
//!
//! Masking: a masked vector (entry mask, function mask or MSI-X disabled) has *no* route
//! entry. Its GSI stays allocated and its irqfd stays registered; a signal on it finds no route
//! and KVM delivers nothing. [`petrel_devices::pci::MsixConfig`] itself does not trigger masked
//! vectors (it sets their pending bit instead), so this only guards against stale messages.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use kvm_bindings::{
    kvm_irq_routing_entry, KvmIrqRouting, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE, KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQ_ROUTING_MSI,
};
use kvm_ioctls::VmFd;
use petrel_devices::pci::msix::MsiInterrupt;
use thiserror::Error;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Pins of the in-kernel IOAPIC; GSIs below this are identity-routed to it.
pub const IOAPIC_PINS: u32 = 24;
/// GSIs routed to the in-kernel PICs as well (0-7 master, 8-15 slave).
const PIC_PINS: u32 = 16;
/// Most routing entries KVM accepts (`KVM_MAX_IRQ_ROUTES`).
pub const MAX_ROUTING_ENTRIES: usize = 4096;
/// First GSI handed out for MSI.
pub const FIRST_MSI_GSI: u32 = IOAPIC_PINS;
/// Entries the legacy (PIC + IOAPIC) routes take.
const LEGACY_ENTRIES: usize = (IOAPIC_PINS + PIC_PINS) as usize;
/// MSI GSIs available, so that the full table stays within [`MAX_ROUTING_ENTRIES`].
pub const MAX_MSI_GSIS: u32 = (MAX_ROUTING_ENTRIES - LEGACY_ENTRIES) as u32;

/// Errors from MSI routing.
#[derive(Debug, Error)]
pub enum MsiError {
    /// No GSIs left for another group of vectors.
    #[error("no room in the GSI routing table for {0} more MSI vectors")]
    GsisExhausted(u32),
    /// The table does not fit a KVM routing structure.
    #[error("too many GSI routes")]
    TooManyRoutes,
    /// A group must have at least one vector.
    #[error("an MSI vector group needs at least one vector")]
    NoVectors,
    /// An irqfd could not be created.
    #[error("cannot create an irqfd")]
    EventFd(#[source] io::Error),
    /// KVM refused the routing table.
    #[error("KVM refused the GSI routing table")]
    SetRouting(#[source] kvm_ioctls::Error),
    /// KVM refused an irqfd.
    #[error("cannot connect GSI {0} to KVM")]
    Irqfd(u32, #[source] kvm_ioctls::Error),
}

/// An MSI message: what the guest programmed into a vector table entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsiMessage {
    /// Message address.
    pub address: u64,
    /// Message data.
    pub data: u32,
}

/// The routing table as plain data: allocation of MSI GSIs and the route of each. Kept
/// separate from KVM so its logic can be tested without it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RoutingTable {
    /// Every allocated MSI GSI; `None` while masked (no route entry).
    msi: BTreeMap<u32, Option<MsiMessage>>,
    next_gsi: u32,
}

impl RoutingTable {
    /// A table with only the legacy routes.
    pub fn new() -> Self {
        Self {
            msi: BTreeMap::new(),
            next_gsi: FIRST_MSI_GSI,
        }
    }

    /// Allocates `count` consecutive GSIs, all masked; returns the first.
    pub fn allocate(&mut self, count: u32) -> Result<u32, MsiError> {
        if count == 0 {
            return Err(MsiError::NoVectors);
        }
        let base = self.next_gsi;
        let end = base
            .checked_add(count)
            .filter(|&end| end <= FIRST_MSI_GSI + MAX_MSI_GSIS)
            .ok_or(MsiError::GsisExhausted(count))?;
        for gsi in base..end {
            self.msi.insert(gsi, None);
        }
        self.next_gsi = end;
        Ok(base)
    }

    /// Routes `gsi` to `message`, or removes its route (`None`). Returns whether the table
    /// changed; an unallocated GSI is left alone.
    pub fn set(&mut self, gsi: u32, message: Option<MsiMessage>) -> bool {
        match self.msi.get_mut(&gsi) {
            Some(route) if *route != message => {
                *route = message;
                true
            }
            _ => false,
        }
    }

    /// The route of `gsi`: `None` if unallocated, `Some(None)` if masked.
    #[cfg(test)]
    pub fn route(&self, gsi: u32) -> Option<Option<MsiMessage>> {
        self.msi.get(&gsi).copied()
    }

    /// Masks every MSI route (machine reset: MSI-X comes back disabled), keeping the GSIs.
    pub fn mask_all(&mut self) {
        for route in self.msi.values_mut() {
            *route = None;
        }
    }

    /// Whether any MSI GSI has been allocated. Without one the table equals KVM's default
    /// and need not be pushed.
    pub fn has_msi(&self) -> bool {
        !self.msi.is_empty()
    }

    /// The full table as KVM takes it: KVM's default PIC and IOAPIC routes, then every
    /// unmasked MSI route.
    pub fn entries(&self) -> Vec<kvm_irq_routing_entry> {
        let mut entries = Vec::with_capacity(LEGACY_ENTRIES + self.msi.len());
        for gsi in 0..IOAPIC_PINS {
            entries.push(irqchip_entry(gsi, KVM_IRQCHIP_IOAPIC, gsi));
            if gsi < PIC_PINS {
                let chip = if gsi < 8 {
                    KVM_IRQCHIP_PIC_MASTER
                } else {
                    KVM_IRQCHIP_PIC_SLAVE
                };
                entries.push(irqchip_entry(gsi, chip, gsi % 8));
            }
        }
        for (&gsi, route) in &self.msi {
            if let Some(message) = route {
                entries.push(msi_entry(gsi, *message));
            }
        }
        entries
    }
}

fn irqchip_entry(gsi: u32, irqchip: u32, pin: u32) -> kvm_irq_routing_entry {
    let mut entry = kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_IRQCHIP,
        ..Default::default()
    };
    entry.u.irqchip.irqchip = irqchip;
    entry.u.irqchip.pin = pin;
    entry
}

fn msi_entry(gsi: u32, message: MsiMessage) -> kvm_irq_routing_entry {
    let mut entry = kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_MSI,
        ..Default::default()
    };
    entry.u.msi.address_lo = message.address as u32;
    entry.u.msi.address_hi = (message.address >> 32) as u32;
    entry.u.msi.data = message.data;
    entry
}

struct RoutingState {
    table: RoutingTable,
    /// Every irqfd handed out, with its GSI, to register on each new VM.
    irqfds: Vec<(EventFd, u32)>,
    /// The VM currently running, if any.
    vm: Weak<VmFd>,
}

impl RoutingState {
    fn push(&self, vm: &VmFd) -> Result<(), MsiError> {
        let routing = KvmIrqRouting::from_entries(&self.table.entries())
            .map_err(|_| MsiError::TooManyRoutes)?;
        vm.set_gsi_routing(&routing).map_err(MsiError::SetRouting)
    }
}

/// The machine's GSI routing table, shared by every [`MsiVectorGroup`].
pub struct KvmMsiRouting {
    state: Mutex<RoutingState>,
}

impl Default for KvmMsiRouting {
    fn default() -> Self {
        Self::new()
    }
}

impl KvmMsiRouting {
    /// A table with the legacy routes only, attached to no VM.
    pub fn new() -> Self {
        Self {
            state: Mutex::new(RoutingState {
                table: RoutingTable::new(),
                irqfds: Vec::new(),
                vm: Weak::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, RoutingState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Allocates `vectors` GSIs, each with its own irqfd, for one device. If a VM is attached
    /// the irqfds are registered on it at once.
    pub fn new_group(self: &Arc<Self>, vectors: u16) -> Result<Arc<MsiVectorGroup>, MsiError> {
        let irqfds = (0..vectors)
            .map(|_| EventFd::new(EFD_NONBLOCK))
            .collect::<Result<Vec<_>, _>>()
            .map_err(MsiError::EventFd)?;
        let clones = irqfds
            .iter()
            .map(EventFd::try_clone)
            .collect::<Result<Vec<_>, _>>()
            .map_err(MsiError::EventFd)?;
        let mut state = self.lock();
        let base_gsi = state.table.allocate(u32::from(vectors))?;
        let vm = state.vm.upgrade();
        for (i, fd) in clones.into_iter().enumerate() {
            let gsi = base_gsi + i as u32;
            if let Some(vm) = &vm {
                vm.register_irqfd(&fd, gsi)
                    .map_err(|e| MsiError::Irqfd(gsi, e))?;
            }
            state.irqfds.push((fd, gsi));
        }
        drop(state);
        Ok(Arc::new(MsiVectorGroup {
            routing: self.clone(),
            base_gsi,
            irqfds,
        }))
    }

    /// Connects the table to a newly created `vm` (first boot, reset, S3 resume): pushes the
    /// table and registers every irqfd. Does nothing to KVM's default table while no MSI
    /// vector exists.
    pub fn attach(&self, vm: &Arc<VmFd>) -> Result<(), MsiError> {
        let mut state = self.lock();
        state.vm = Arc::downgrade(vm);
        if !state.table.has_msi() {
            return Ok(());
        }
        state.push(vm)?;
        for (fd, gsi) in &state.irqfds {
            vm.register_irqfd(fd, *gsi)
                .map_err(|e| MsiError::Irqfd(*gsi, e))?;
        }
        Ok(())
    }

    /// Machine reset: every MSI route masked, as MSI-X is disabled on the devices. Pushed to
    /// the attached VM, if any.
    pub fn reset(&self) {
        let mut state = self.lock();
        state.table.mask_all();
        if let Some(vm) = state.vm.upgrade() {
            if let Err(e) = state.push(&vm) {
                log::warn!("cannot reset the MSI routes: {e}");
            }
        }
    }

    /// Sets the route of `gsi` and pushes the table if it changed and a VM is attached.
    fn set_route(&self, gsi: u32, message: Option<MsiMessage>) -> Result<(), MsiError> {
        let mut state = self.lock();
        if !state.table.set(gsi, message) {
            return Ok(());
        }
        match state.vm.upgrade() {
            Some(vm) => state.push(&vm),
            // Pushed by the next attach.
            None => Ok(()),
        }
    }

    /// A copy of the routing table.
    #[cfg(test)]
    pub fn table(&self) -> RoutingTable {
        self.lock().table.clone()
    }
}

/// The MSI-X vectors of one device: vector `n` is GSI `base_gsi + n`, signalled through its
/// own irqfd.
pub struct MsiVectorGroup {
    routing: Arc<KvmMsiRouting>,
    base_gsi: u32,
    irqfds: Vec<EventFd>,
}

impl MsiVectorGroup {
    /// GSI of vector 0.
    #[cfg(test)]
    pub fn base_gsi(&self) -> u32 {
        self.base_gsi
    }

    /// Number of vectors.
    #[cfg(test)]
    pub fn vectors(&self) -> u16 {
        // Built from a u16 count.
        self.irqfds.len() as u16
    }

    /// The irqfd of `vector`.
    #[cfg(test)]
    pub fn irqfd(&self, vector: u16) -> Option<&EventFd> {
        self.irqfds.get(usize::from(vector))
    }

    fn gsi(&self, vector: u16) -> io::Result<u32> {
        if usize::from(vector) < self.irqfds.len() {
            Ok(self.base_gsi + u32::from(vector))
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("no MSI vector {vector}"),
            ))
        }
    }
}

impl MsiInterrupt for MsiVectorGroup {
    fn trigger(&self, vector: u16) -> io::Result<()> {
        self.gsi(vector)?;
        self.irqfds[usize::from(vector)].write(1)
    }

    fn update_route(&self, vector: u16, address: u64, data: u32, masked: bool) -> io::Result<()> {
        let gsi = self.gsi(vector)?;
        let message = (!masked).then_some(MsiMessage { address, data });
        self.routing
            .set_route(gsi, message)
            .map_err(io::Error::other)
    }
}

impl std::fmt::Debug for MsiVectorGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MsiVectorGroup")
            .field("base_gsi", &self.base_gsi)
            .field("vectors", &self.irqfds.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(data: u32) -> Option<MsiMessage> {
        Some(MsiMessage {
            address: 0xfee0_0000,
            data,
        })
    }

    #[test]
    fn legacy_entries_match_kvm_default() {
        let entries = RoutingTable::new().entries();
        assert_eq!(entries.len(), 40);
        for gsi in 0..24 {
            let routes: Vec<_> = entries
                .iter()
                .filter(|e| e.gsi == gsi)
                .map(|e| {
                    assert_eq!(e.type_, KVM_IRQ_ROUTING_IRQCHIP);
                    // SAFETY: irqchip entries hold the irqchip member.
                    let chip = unsafe { e.u.irqchip };
                    (chip.irqchip, chip.pin)
                })
                .collect();
            let mut expected = vec![(KVM_IRQCHIP_IOAPIC, gsi)];
            if gsi < 8 {
                expected.push((KVM_IRQCHIP_PIC_MASTER, gsi));
            } else if gsi < 16 {
                expected.push((KVM_IRQCHIP_PIC_SLAVE, gsi - 8));
            }
            assert_eq!(routes, expected, "gsi {gsi}");
        }
    }

    #[test]
    fn allocation_is_consecutive_from_24() {
        let mut t = RoutingTable::new();
        assert!(!t.has_msi());
        assert!(matches!(t.allocate(0), Err(MsiError::NoVectors)));
        assert_eq!(t.allocate(3).unwrap(), 24);
        assert_eq!(t.allocate(2).unwrap(), 27);
        assert!(t.has_msi());
        assert_eq!(t.route(26), Some(None));
        assert_eq!(t.route(29), None);
        // Masked routes are not in the table.
        assert_eq!(t.entries().len(), 40);
    }

    #[test]
    fn allocation_stops_at_the_kvm_limit() {
        let mut t = RoutingTable::new();
        assert_eq!(t.allocate(MAX_MSI_GSIS - 1).unwrap(), 24);
        assert!(matches!(t.allocate(2), Err(MsiError::GsisExhausted(2))));
        assert_eq!(t.allocate(1).unwrap(), 24 + MAX_MSI_GSIS - 1);
        assert!(t.allocate(1).is_err());
        for gsi in 24..24 + MAX_MSI_GSIS {
            t.set(gsi, msg(gsi));
        }
        assert_eq!(t.entries().len(), MAX_ROUTING_ENTRIES);
    }

    #[test]
    fn update_and_mask() {
        let mut t = RoutingTable::new();
        let base = t.allocate(2).unwrap();
        assert!(t.set(base + 1, msg(0x41)));
        // Unchanged and unallocated routes report no change.
        assert!(!t.set(base + 1, msg(0x41)));
        assert!(!t.set(base + 2, msg(0x41)));
        let entries = t.entries();
        assert_eq!(entries.len(), 41);
        let e = entries.last().unwrap();
        assert_eq!((e.gsi, e.type_), (base + 1, KVM_IRQ_ROUTING_MSI));
        // SAFETY: MSI entries hold the msi member.
        let m = unsafe { e.u.msi };
        assert_eq!((m.address_lo, m.address_hi, m.data), (0xfee0_0000, 0, 0x41));

        // A 64-bit address is split.
        t.set(
            base,
            Some(MsiMessage {
                address: 0x1_fee0_1000,
                data: 7,
            }),
        );
        // SAFETY: as above.
        let m = unsafe { t.entries()[40].u.msi };
        assert_eq!((m.address_lo, m.address_hi, m.data), (0xfee0_1000, 1, 7));

        // Masking removes the entry but keeps the GSI.
        assert!(t.set(base + 1, None));
        assert_eq!(t.entries().len(), 41);
        assert_eq!(t.route(base + 1), Some(None));
        t.mask_all();
        assert_eq!(t.entries().len(), 40);
        assert_eq!(t.allocate(1).unwrap(), base + 2);
    }

    #[test]
    fn group_routes_through_the_table() {
        let routing = Arc::new(KvmMsiRouting::new());
        let a = routing.new_group(3).unwrap();
        let b = routing.new_group(2).unwrap();
        assert_eq!((a.base_gsi(), a.vectors()), (24, 3));
        assert_eq!((b.base_gsi(), b.vectors()), (27, 2));
        // No VM attached: the table is kept for the next attach.
        b.update_route(1, 0xfee0_0000, 0x30, false).unwrap();
        assert_eq!(routing.table().route(28), Some(msg(0x30)));
        b.update_route(1, 0xfee0_0000, 0x30, true).unwrap();
        assert_eq!(routing.table().route(28), Some(None));
        assert!(b.update_route(2, 0, 0, false).is_err());

        a.trigger(2).unwrap();
        assert_eq!(a.irqfd(2).unwrap().read().unwrap(), 1);
        assert!(a.trigger(3).is_err());

        a.update_route(0, 0xfee0_0000, 0x31, false).unwrap();
        routing.reset();
        assert_eq!(routing.table().route(24), Some(None));
    }

    /// Needs /dev/kvm: fails rather than skips without it.
    #[test]
    fn kvm_accepts_the_table_on_every_new_vm() {
        let kvm = kvm_ioctls::Kvm::new().expect("this test needs /dev/kvm");
        let routing = Arc::new(KvmMsiRouting::new());
        let group = routing.new_group(2).unwrap();
        group.update_route(0, 0xfee0_0000, 0x4021, false).unwrap();
        for _ in 0..2 {
            // A VM per boot, as on reset; the previous one is dropped first.
            let vm = Arc::new(kvm.create_vm().unwrap());
            vm.create_irq_chip().unwrap();
            routing.attach(&vm).unwrap();
            // Updates go straight to the attached VM.
            group.update_route(1, 0xfee0_0000, 0x4022, false).unwrap();
            group.update_route(1, 0xfee0_0000, 0x4022, true).unwrap();
            group.trigger(0).unwrap();
            // The irqfd is taken: registering it again on the same VM fails.
            let dup = group.irqfd(0).unwrap().try_clone().unwrap();
            assert!(vm.register_irqfd(&dup, 24).is_err());
            drop(vm);
        }
        // A group created while a VM is attached is registered at once.
        let vm = Arc::new(kvm.create_vm().unwrap());
        vm.create_irq_chip().unwrap();
        routing.attach(&vm).unwrap();
        let late = routing.new_group(1).unwrap();
        assert_eq!(late.base_gsi(), 26);
        let dup = late.irqfd(0).unwrap().try_clone().unwrap();
        assert!(vm.register_irqfd(&dup, 26).is_err());
    }
}
