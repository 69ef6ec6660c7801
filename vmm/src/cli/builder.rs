//! Accumulates options in command-line order, then checks the whole and builds the
//! [`Config`].

use std::path::PathBuf;

use super::blockdev::parse_blockdev;
use super::chardev::parse_chardev;
use super::config::{
    Action, ChardevBackend, ChardevSpec, Config, CpuConfig, DeviceConfig, DisplayConfig,
    DriveConfig, DriveInterface, MonitorConfig, Uuid,
};
use super::cpu::{default_cpu, parse_cpu};
use super::device::parse_device;
use super::display::parse_display;
use super::drive::{apply_global_snapshot, parse_drive, DriveIndex};
use super::error::{ArgError, CliError, Loc};
use super::machine::MachineArgs;
use super::memory::MemoryArgs;
use super::monitor::{parse_mon, parse_qmp};
use super::name::NameArgs;
use super::netdev::{parse_netdev, parse_nic};
use super::options::Opt;
use super::opts::Parsed;
use super::ports::{resolve_serials, PortInputs};
use super::serial::{parse_serial, SerialArg};
use super::smp::SmpArgs;
use super::uuid::parse_uuid;

/// The options seen so far.
#[derive(Debug, Default)]
pub(crate) struct Builder {
    kernel: Option<PathBuf>,
    initrd: Option<PathBuf>,
    append: Option<String>,
    memory: MemoryArgs,
    /// The last `-m`, to which errors found once all `-m` are merged are attributed.
    memory_loc: Option<Loc>,
    smp: SmpArgs,
    /// The last `-smp`, likewise.
    smp_loc: Option<Loc>,
    name: NameArgs,
    uuid: Option<Uuid>,
    serials: Vec<(Loc, SerialArg)>,
    chardevs: Vec<(Loc, String, ChardevBackend)>,
    machine: MachineArgs,
    cpu: Option<CpuConfig>,
    start_paused: bool,
    no_reboot: bool,
    no_shutdown: bool,
    pidfile: Option<PathBuf>,
    daemonize: bool,
    nographic: bool,
    display_none: bool,
    nodefaults: bool,
    /// QMP monitors in order, each on its own backend (`-qmp`) or a `-chardev` (`-mon`).
    monitors: Vec<(Loc, ChardevSpec)>,
    drives: Vec<(Loc, DriveConfig)>,
    drive_index: DriveIndex,
    /// `-snapshot`.
    snapshot: bool,
    blockdevs: Vec<(Loc, serde_json::Value)>,
    devices: Vec<(Loc, DeviceConfig)>,
    netdevs: Vec<(Loc, serde_json::Value)>,
    /// The NICs of `-nic`, created after every `-device`.
    nics: Vec<(Loc, DeviceConfig)>,
}

impl Builder {
    /// Acts on one option, `loc.arg` being its argument. Returns the action that ends parsing
    /// early, as QEMU exits on `-help` or `-machine help` when it reaches them.
    pub fn apply(&mut self, opt: Opt, loc: Loc) -> Result<Option<Action>, CliError> {
        let arg = loc.arg.as_str();
        let at = |reason: ArgError| loc.err(reason);
        match opt {
            Opt::Help => return Ok(Some(Action::Help)),
            Opt::Version => return Ok(Some(Action::Version)),
            Opt::Machine => {
                if let Some(topic) = self.machine.merge_machine(arg, &loc).map_err(at)? {
                    return Ok(Some(Action::List(topic)));
                }
            }
            Opt::Accel => {
                if let Some(topic) = self.machine.add_accel(arg, &loc).map_err(at)? {
                    return Ok(Some(Action::List(topic)));
                }
            }
            Opt::EnableKvm => self.machine.enable_kvm(&loc),
            Opt::Cpu => match parse_cpu(arg).map_err(at)? {
                Parsed::Value(cpu) => self.cpu = Some(cpu),
                Parsed::List(topic) => return Ok(Some(Action::List(topic))),
            },
            Opt::Smp => {
                self.smp.merge(arg).map_err(at)?;
                self.smp_loc = Some(loc);
            }
            Opt::Memory => {
                self.memory.merge(arg).map_err(at)?;
                self.memory_loc = Some(loc);
            }
            Opt::Name => self.name.merge(arg).map_err(at)?,
            Opt::Uuid => self.uuid = Some(parse_uuid(arg).map_err(at)?),
            Opt::Kernel => self.kernel = Some(arg.into()),
            Opt::Initrd => self.initrd = Some(arg.into()),
            Opt::Append => self.append = Some(arg.to_owned()),
            Opt::Serial => {
                let serial = parse_serial(arg).map_err(at)?;
                self.serials.push((loc, serial));
            }
            Opt::Chardev => match parse_chardev(arg).map_err(at)? {
                Parsed::Value((id, backend)) => {
                    if self.chardevs.iter().any(|(_, known, _)| *known == id) {
                        return Err(at(ArgError::DuplicateId(id)));
                    }
                    self.chardevs.push((loc, id, backend));
                }
                Parsed::List(topic) => return Ok(Some(Action::List(topic))),
            },
            Opt::Display => match parse_display(arg).map_err(at)? {
                Parsed::Value(DisplayConfig::None) => self.display_none = true,
                Parsed::List(topic) => return Ok(Some(Action::List(topic))),
            },
            Opt::Nographic => self.nographic = true,
            Opt::Nodefaults => self.nodefaults = true,
            Opt::StartPaused => self.start_paused = true,
            Opt::NoReboot => self.no_reboot = true,
            Opt::NoShutdown => self.no_shutdown = true,
            Opt::Pidfile => self.pidfile = Some(arg.into()),
            Opt::Daemonize => self.daemonize = true,
            Opt::Qmp => {
                let backend = parse_qmp(arg).map_err(at)?;
                self.monitors.push((loc, ChardevSpec::Backend(backend)));
            }
            Opt::Mon => {
                let mon = parse_mon(arg).map_err(at)?;
                self.monitors.push((loc, ChardevSpec::Chardev(mon.chardev)));
            }
            Opt::Drive => {
                let drive = parse_drive(arg, &mut self.drive_index).map_err(at)?;
                if self.drives.iter().any(|(_, d)| d.id == drive.id) {
                    return Err(at(ArgError::DuplicateDrive(drive.id)));
                }
                self.drives.push((loc, drive));
            }
            Opt::Blockdev => {
                let node = parse_blockdev(arg).map_err(at)?;
                self.blockdevs.push((loc, node));
            }
            Opt::Snapshot => self.snapshot = true,
            Opt::Device => match parse_device(arg).map_err(at)? {
                Parsed::Value(dev) => self.devices.push((loc, dev)),
                Parsed::List(topic) => return Ok(Some(Action::List(topic))),
            },
            Opt::Netdev => {
                let netdev = parse_netdev(arg).map_err(at)?;
                self.add_netdev(loc, netdev)?;
            }
            Opt::Nic => {
                if let Some((netdev, nic)) = parse_nic(arg, self.nics.len()).map_err(at)? {
                    self.add_netdev(loc.clone(), netdev)?;
                    self.nics.push((loc, nic));
                }
            }
        }
        Ok(None)
    }

    fn add_netdev(&mut self, loc: Loc, netdev: serde_json::Value) -> Result<(), CliError> {
        let id = netdev["id"].as_str().unwrap_or_default();
        if self.netdevs.iter().any(|(_, n)| n["id"] == id) {
            return Err(loc.err(ArgError::DuplicateNetdev(id.to_string())));
        }
        self.netdevs.push((loc, netdev));
        Ok(())
    }

    /// Checks the options as a whole and builds the configuration.
    pub fn finish(self) -> Result<Config, CliError> {
        if self.kernel.is_none() {
            if self.append.is_some() {
                return Err(CliError::AppendWithoutKernel);
            }
            if self.initrd.is_some() {
                return Err(CliError::InitrdWithoutKernel);
            }
        }
        let machine = self.machine.resolve()?;
        let memory = self
            .memory
            .resolve()
            .map_err(|e| located(self.memory_loc.as_ref(), "-m", e))?;
        let smp = self
            .smp
            .resolve(self.machine.prefers_sockets())
            .map_err(|e| located(self.smp_loc.as_ref(), "-smp", e))?;
        let serials = resolve_serials(&PortInputs {
            serials: &self.serials,
            chardevs: &self.chardevs,
            nodefaults: self.nodefaults,
            nographic: self.nographic,
            display_none: self.display_none,
            daemonize: self.daemonize,
            monitors: &self.monitors,
        })?;
        let mut devices = self.devices;
        devices.extend(self.nics);
        check_disks(&self.drives, &self.blockdevs, &devices)?;
        check_nics(&self.netdevs, &devices)?;
        let mut compat = 0;
        let monitors = self
            .monitors
            .iter()
            .map(|(_, spec)| match spec {
                ChardevSpec::Backend(b) => {
                    let label = format!("compat_monitor{compat}");
                    compat += 1;
                    MonitorConfig {
                        backend: b.clone(),
                        label,
                    }
                }
                ChardevSpec::Chardev(id) => {
                    let backend = self
                        .chardevs
                        .iter()
                        .find(|(_, known, _)| known == id)
                        .map(|(_, _, b)| b.clone())
                        .expect("resolve_serials checked the reference");
                    MonitorConfig {
                        backend,
                        label: id.clone(),
                    }
                }
            })
            .collect();
        Ok(Config {
            monitors,
            kernel: self.kernel,
            initrd: self.initrd,
            append: self.append.unwrap_or_default(),
            memory,
            smp,
            name: self.name.guest,
            name_process: self.name.process,
            debug_threads: self.name.debug_threads,
            uuid: self.uuid,
            serials,
            chardevs: self
                .chardevs
                .into_iter()
                .map(|(_, id, backend)| (id, backend))
                .collect(),
            machine,
            cpu: self.cpu.unwrap_or_else(default_cpu),
            start_paused: self.start_paused,
            no_reboot: self.no_reboot,
            no_shutdown: self.no_shutdown,
            pidfile: self.pidfile,
            daemonize: self.daemonize,
            display: DisplayConfig::None,
            nodefaults: self.nodefaults,
            drives: self
                .drives
                .into_iter()
                .map(|(loc, mut d)| {
                    if self.snapshot {
                        apply_global_snapshot(&mut d, &loc.arg);
                    }
                    d
                })
                .collect(),
            blockdevs: self.blockdevs.into_iter().map(|(_, b)| b).collect(),
            devices: devices.into_iter().map(|(_, d)| d).collect(),
            netdevs: self.netdevs.into_iter().map(|(_, n)| n).collect(),
        })
    }
}

/// Checks what only the whole command line shows: every device's `drive=` names a `-drive`
/// or `-blockdev` that no other device uses, and ids are unique.
fn check_disks(
    drives: &[(Loc, DriveConfig)],
    blockdevs: &[(Loc, serde_json::Value)],
    devices: &[(Loc, DeviceConfig)],
) -> Result<(), CliError> {
    let mut node_names: Vec<&str> = Vec::new();
    for (loc, node) in blockdevs {
        let name = node["node-name"].as_str().unwrap_or_default();
        let clash = node_names.contains(&name)
            || drives
                .iter()
                .any(|(_, d)| d.node_name.as_deref() == Some(name));
        if clash {
            return Err(loc.err(ArgError::DuplicateNodeName(name.to_string())));
        }
        node_names.push(name);
    }
    // Drives with their own device are taken from the start.
    let mut used: Vec<&str> = drives
        .iter()
        .filter(|(_, d)| d.interface == DriveInterface::Virtio)
        .map(|(_, d)| d.id.as_str())
        .collect();
    let mut ids: Vec<&str> = Vec::new();
    for (loc, dev) in devices {
        if let Some(id) = dev.id() {
            if ids.contains(&id) {
                return Err(loc.err(ArgError::DuplicateDevice(id.to_string())));
            }
            ids.push(id);
        }
        let DeviceConfig::VirtioBlk(dev) = dev else {
            continue;
        };
        let known = drives.iter().any(|(_, d)| d.id == dev.drive)
            || node_names.contains(&dev.drive.as_str());
        if !known {
            return Err(loc.err(ArgError::UnknownDrive(dev.drive.clone())));
        }
        if used.contains(&dev.drive.as_str()) {
            return Err(loc.err(ArgError::DriveInUse(dev.drive.clone())));
        }
        used.push(&dev.drive);
    }
    Ok(())
}

/// Checks that every NIC's `netdev=` names a netdev no other NIC uses.
fn check_nics(
    netdevs: &[(Loc, serde_json::Value)],
    devices: &[(Loc, DeviceConfig)],
) -> Result<(), CliError> {
    let mut used: Vec<&str> = Vec::new();
    for (loc, dev) in devices {
        let DeviceConfig::VirtioNet(nic) = dev else {
            continue;
        };
        let Some(netdev) = nic.netdev.as_deref() else {
            continue;
        };
        if !netdevs.iter().any(|(_, n)| n["id"] == netdev) {
            return Err(loc.err(ArgError::UnknownNetdev(netdev.to_string())));
        }
        if used.contains(&netdev) {
            return Err(loc.err(ArgError::NetdevInUse(netdev.to_string())));
        }
        used.push(netdev);
    }
    Ok(())
}

/// `reason` about the option at `loc`. Errors from merged options can only arise once one was
/// given, so the fallback to the bare option name is for robustness only.
fn located(loc: Option<&Loc>, option: &str, reason: ArgError) -> CliError {
    match loc {
        Some(loc) => loc.err(reason),
        None => Loc {
            option: option.to_owned(),
            arg: String::new(),
        }
        .err(reason),
    }
}
