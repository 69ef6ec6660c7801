//! The platform's devices: built once per process, kept across guest resets (CMOS keeps its
//! contents, chardevs stay connected), registered on the I/O buses the vCPUs dispatch to.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use kvm_ioctls::VmFd;
use petrel_arch::acpi::{AcpiConfig, LegacyDevice};
use petrel_arch::layout::{self, MemoryLayout};
use petrel_devices::acpi::pm::{
    AcpiPm, PM_BLOCK_LEN, PM_PORT_BASE, S3_SLP_TYP, S5_SLP_TYP, SCI_IRQ,
};
use petrel_devices::acpi::reset::{ResetControl, RESET_PORT, RESET_VALUE};
use petrel_devices::debug_port::{DebugPort, DEBUG_PORT_BASE, DEBUG_PORT_LEN};
use petrel_devices::legacy::i8042::{I8042, I8042_PORT_BASE, I8042_PORT_LEN};
use petrel_devices::legacy::rtc::{Rtc, RTC_PORT_BASE, RTC_PORT_LEN};
use petrel_devices::legacy::serial::{Serial, COM_PORT_LEN};
use petrel_devices::pci::config_io::{ConfigIo, CONFIG_IO_PORT_BASE, CONFIG_IO_PORT_LEN};
use petrel_devices::pci::{Ecam, PciRoot};
use petrel_devices::{EventFdTrigger, Reset};
use thiserror::Error;
use vm_device::bus::{MmioAddress, MmioRange, PioAddress, PioRange};
use vm_device::device_manager::{IoManager, MmioManager, PioManager};
use vm_device::{DeviceMmio, DevicePio};
use vmm_sys_util::eventfd::EventFd;

use crate::api::{EventSink, VmEvent};
use crate::chardev::{Chardev, ChardevInput};

use super::msi::{KvmMsiRouting, MsiError, MsiVectorGroup};
use super::pci::{PciBarDevice, PciBus, PciError, PciPlacement};

/// Errors building the platform devices.
#[derive(Debug, Error)]
pub enum DeviceError {
    /// An eventfd could not be created.
    #[error("cannot create an eventfd for {0}")]
    EventFd(&'static str, #[source] std::io::Error),
    /// A device's ports or addresses clash with another's.
    #[error("cannot register {0} on the I/O bus")]
    Bus(&'static str, #[source] vm_device::bus::Error),
    /// KVM refused an interrupt line.
    #[error("cannot connect IRQ {0} to KVM")]
    Irqfd(u32, #[source] kvm_ioctls::Error),
    /// MSI routing failed.
    #[error(transparent)]
    Msi(#[from] MsiError),
    /// A PCI function could not be added or connected.
    #[error(transparent)]
    Pci(#[from] PciError),
    /// A device rejected its configuration.
    #[error("cannot set up {0}")]
    Device(
        &'static str,
        #[source] Box<dyn std::error::Error + Send + Sync>,
    ),
}

const COM_BASES: [u16; 4] = [0x3f8, 0x2f8, 0x3e8, 0x2e8];
const COM_IRQS: [u32; 4] = [4, 3, 4, 3];

/// A serial port and its optional input chardev, for the event loop.
pub struct SerialPort {
    /// The device.
    pub device: Arc<Mutex<Serial>>,
    /// Its input, polled by the event loop.
    pub input: Option<ChardevInput>,
    /// Signalled when the guest empties the receive FIFO.
    pub drained: EventFd,
}

/// All platform devices and the buses they sit on.
pub struct DeviceManager {
    /// Port and MMIO dispatch shared with the vCPU threads.
    pub io: Arc<IoManager>,
    /// Serial ports in COM order.
    pub serials: Vec<SerialPort>,
    /// Fired by ACPI S5.
    pub shutdown_evt: EventFd,
    /// Fired by the i8042 or the reset register.
    pub reset_evt: EventFd,
    /// Fired by ACPI S3.
    pub suspend_evt: EventFd,
    debug_port: Arc<Mutex<DebugPort>>,
    pm: Arc<Mutex<AcpiPm>>,
    resettable: Vec<Arc<Mutex<dyn Reset + Send>>>,
    irq_lines: Vec<(EventFd, u32)>,
    msi: Arc<KvmMsiRouting>,
    pci: PciBus,
}

fn evt(what: &'static str) -> Result<EventFdTrigger, DeviceError> {
    EventFdTrigger::new().map_err(|e| DeviceError::EventFd(what, std::io::Error::other(e)))
}

fn clone_fd(t: &EventFdTrigger, what: &'static str) -> Result<EventFd, DeviceError> {
    t.event_fd()
        .try_clone()
        .map_err(|e| DeviceError::EventFd(what, e))
}

fn pio<D: DevicePio + Send + Sync + 'static>(
    io: &mut IoManager,
    base: u16,
    len: u16,
    dev: Arc<D>,
    what: &'static str,
) -> Result<(), DeviceError> {
    let range = PioRange::new(PioAddress(base), len).map_err(|e| DeviceError::Bus(what, e))?;
    io.register_pio(range, dev)
        .map_err(|e| DeviceError::Bus(what, e))
}

fn mmio<D: DeviceMmio + Send + Sync + 'static>(
    io: &mut IoManager,
    base: u64,
    len: u64,
    dev: Arc<D>,
    what: &'static str,
) -> Result<(), DeviceError> {
    let range = MmioRange::new(MmioAddress(base), len).map_err(|e| DeviceError::Bus(what, e))?;
    io.register_mmio(range, dev)
        .map_err(|e| DeviceError::Bus(what, e))
}

impl DeviceManager {
    /// Builds the devices; `serial_chardevs` are the backends of COM1.. in order.
    pub fn new(
        serial_chardevs: Vec<Chardev>,
        layout: &MemoryLayout,
        start: Instant,
        events: Arc<dyn EventSink>,
    ) -> Result<DeviceManager, DeviceError> {
        let mut io = IoManager::new();
        let mut resettable: Vec<Arc<Mutex<dyn Reset + Send>>> = Vec::new();
        let mut irq_lines = Vec::new();

        let mut serials = Vec::new();
        for (i, mut chardev) in serial_chardevs.into_iter().enumerate() {
            let irq = evt("serial interrupt")?;
            irq_lines.push((clone_fd(&irq, "serial interrupt")?, COM_IRQS[i]));
            let dev = Serial::new(irq, Box::new(chardev.writer()));
            let drained = evt("serial input")?;
            let drained_fd = clone_fd(&drained, "serial input")?;
            dev.set_input_drained_notifier(drained)
                .map_err(|e| DeviceError::Device("serial", Box::new(e)))?;
            let dev = Arc::new(Mutex::new(dev));
            pio(&mut io, COM_BASES[i], COM_PORT_LEN, dev.clone(), "serial")?;
            resettable.push(dev.clone());
            serials.push(SerialPort {
                device: dev,
                input: chardev.take_input(),
                drained: drained_fd,
            });
        }

        let reset = evt("reset")?;
        let reset_evt = clone_fd(&reset, "reset")?;
        let i8042 = Arc::new(Mutex::new(I8042::new(
            reset
                .try_clone()
                .map_err(|e| DeviceError::Device("i8042", Box::new(e)))?,
        )));
        pio(
            &mut io,
            I8042_PORT_BASE,
            I8042_PORT_LEN,
            i8042.clone(),
            "i8042",
        )?;
        resettable.push(i8042);

        let mut rtc = Rtc::new();
        rtc.set_memory_size(layout.low_ram_end(), layout.high_ram_size());
        rtc.set_change_notifier(Box::new(move |offset| {
            events.emit(VmEvent::RtcChange { offset })
        }));
        let rtc = Arc::new(Mutex::new(rtc));
        pio(&mut io, RTC_PORT_BASE, RTC_PORT_LEN, rtc.clone(), "rtc")?;
        resettable.push(rtc.clone());

        let shutdown = evt("shutdown")?;
        let shutdown_evt = clone_fd(&shutdown, "shutdown")?;
        let sci = evt("sci")?;
        irq_lines.push((clone_fd(&sci, "sci")?, SCI_IRQ));
        let suspend = evt("suspend")?;
        let suspend_evt = clone_fd(&suspend, "suspend")?;
        let mut pm = AcpiPm::new(sci, shutdown);
        pm.set_suspend_trigger(suspend);
        let pm = Arc::new(Mutex::new(pm));
        pio(&mut io, PM_PORT_BASE, PM_BLOCK_LEN, pm.clone(), "acpi pm")?;
        resettable.push(pm.clone());

        let reset_control = Arc::new(Mutex::new(ResetControl::new(reset)));
        // The host bridge sits at 00:00.0 from the start.
        let root = Arc::new(Mutex::new(PciRoot::new()));
        // 0xCF9 is decoded by the config-address device, which forwards byte accesses there.
        let config_io = Arc::new(Mutex::new(ConfigIo::new(
            root.clone(),
            reset_control.clone(),
        )));
        pio(
            &mut io,
            CONFIG_IO_PORT_BASE,
            CONFIG_IO_PORT_LEN,
            config_io,
            "pci config io",
        )?;
        resettable.push(reset_control);
        resettable.push(root.clone());
        let pci = PciBus::new(root.clone(), layout)?;
        let ecam = Ecam::new(root, layout::ECAM_BUSES)
            .map_err(|e| DeviceError::Device("pci ecam", Box::new(e)))?;
        mmio(
            &mut io,
            layout::ECAM_START,
            layout::ECAM_SIZE,
            Arc::new(Mutex::new(ecam)),
            "pci ecam",
        )?;

        let debug_port = Arc::new(Mutex::new(DebugPort::new(start)));
        pio(
            &mut io,
            DEBUG_PORT_BASE,
            DEBUG_PORT_LEN,
            debug_port.clone(),
            "debug port",
        )?;
        resettable.push(debug_port.clone());

        Ok(DeviceManager {
            io: Arc::new(io),
            serials,
            shutdown_evt,
            reset_evt,
            suspend_evt,
            debug_port,
            pm,
            resettable,
            irq_lines,
            msi: Arc::new(KvmMsiRouting::new()),
            pci,
        })
    }

    /// Connects every device interrupt to `vm`'s in-kernel interrupt controller, and the PCI
    /// functions' MSI routes, irqfds and ioeventfds. Called on every new VM (boot, reset, S3
    /// resume); the previous VM must be gone.
    pub fn connect_irqs(&self, vm: &Arc<VmFd>) -> Result<(), DeviceError> {
        for (fd, gsi) in &self.irq_lines {
            vm.register_irqfd(fd, *gsi)
                .map_err(|e| DeviceError::Irqfd(*gsi, e))?;
        }
        self.msi.attach(vm)?;
        self.pci.connect(vm)?;
        Ok(())
    }

    /// Allocates `vectors` MSI vectors (GSIs and irqfds) for a PCI function, to pass to it as
    /// its [`petrel_devices::pci::MsiInterrupt`].
    pub fn msi_vectors(&self, vectors: u16) -> Result<Arc<MsiVectorGroup>, DeviceError> {
        Ok(self.msi.new_group(vectors)?)
    }

    /// Places `device` on PCI bus 0: in `slot`, or else the lowest free one, its memory BARs
    /// assigned and routed on the I/O bus, its doorbells registered as ioeventfds on every
    /// VM. The device is reset with the machine.
    ///
    /// Only before the first boot: the I/O bus cannot change once the vCPUs share it (see
    /// [`super::pci`] for what that means for BAR relocation).
    pub fn add_pci_device<D: PciBarDevice>(
        &mut self,
        device: Arc<Mutex<D>>,
        slot: Option<u8>,
    ) -> Result<PciPlacement, DeviceError> {
        let io = Arc::get_mut(&mut self.io).ok_or(PciError::Started)?;
        Ok(self.pci.add(io, device, slot)?)
    }

    /// The PCI functions added, in order.
    pub fn pci(&self) -> &PciBus {
        &self.pci
    }

    /// Machine reset: every device back to power-on state, CMOS contents kept, MSI routes
    /// masked.
    pub fn reset(&self) {
        for dev in &self.resettable {
            dev.lock().unwrap_or_else(|e| e.into_inner()).reset();
        }
        self.msi.reset();
    }

    /// Presses the ACPI power button; whether the guest listens for it is the guest's
    /// business, as on real hardware.
    pub fn press_power_button(&self) -> Result<(), DeviceError> {
        let mut pm = self.pm.lock().unwrap_or_else(|e| e.into_inner());
        let listening = pm
            .press_power_button()
            .map_err(|e| DeviceError::Device("acpi pm", Box::new(e)))?;
        if !listening {
            log::info!("power button pressed, but the guest has not enabled its event");
        }
        Ok(())
    }

    /// Back from S3: every device to its power-on state, then WAK_STS for the guest's resume
    /// path.
    pub fn wake(&self) {
        self.reset();
        self.pm.lock().unwrap_or_else(|e| e.into_inner()).wake();
    }

    /// The status the guest reported on the debug port, if any.
    pub fn guest_status(&self) -> Option<u8> {
        self.debug_port
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .guest_status()
    }

    /// What the ACPI tables must say about these devices.
    pub fn acpi_config(&self, apic_ids: Vec<u32>, hotpluggable_apic_ids: Vec<u32>) -> AcpiConfig {
        let mut legacy = vec![LegacyDevice {
            name: "RTC_",
            hid: "PNP0B00",
            uid: 0,
            io: vec![(RTC_PORT_BASE, 2)],
            irq: 8,
        }];
        let names = ["COM1", "COM2", "COM3", "COM4"];
        for i in 0..self.serials.len() {
            legacy.push(LegacyDevice {
                name: names[i],
                hid: "PNP0501",
                uid: i as u32 + 1,
                io: vec![(COM_BASES[i], COM_PORT_LEN as u8)],
                irq: COM_IRQS[i],
            });
        }
        AcpiConfig {
            apic_ids,
            hotpluggable_apic_ids,
            pm1a_evt: PM_PORT_BASE,
            pm1a_cnt: PM_PORT_BASE + 4,
            pm_tmr: PM_PORT_BASE + 8,
            sci_irq: SCI_IRQ as u8,
            s5_slp_typ: S5_SLP_TYP,
            s3_slp_typ: Some(S3_SLP_TYP),
            reset: (RESET_PORT, RESET_VALUE),
            legacy_devices: legacy,
        }
    }
}
