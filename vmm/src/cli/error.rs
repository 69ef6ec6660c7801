//! Command-line errors.
//!
//! The messages follow QEMU's: an error about one option starts with that option and its
//! argument as the user typed them (`-m 12Q: invalid size`), so that `main` only has to prefix
//! the program name.

use thiserror::Error;

/// Why the command line was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CliError {
    /// An option petrel does not know (including QEMU options petrel does not implement).
    #[error("{0}: invalid option")]
    InvalidOption(String),
    /// An option that takes an argument was the last word of the command line.
    #[error("{0}: requires an argument")]
    MissingArgument(String),
    /// A word that is not an option: QEMU takes it as a disk image, which petrel lacks.
    #[error("{0}: unexpected argument (disk images are not supported)")]
    StrayArgument(String),
    /// The argument of an option is wrong (or, for an option without one, its combination
    /// with the rest of the command line).
    #[error("{}: {reason}", location(.option, .arg))]
    InvalidArgument {
        /// The option as typed, e.g. `-m` or `--m`.
        option: String,
        /// Its argument as typed.
        arg: String,
        /// What is wrong with it.
        reason: ArgError,
    },
    /// `-nographic` would put the default serial port on the terminal that `-daemonize` drops.
    #[error("-nographic cannot be used with -daemonize")]
    NographicWithDaemonize,
    /// `-append` without `-kernel`.
    #[error("-append only allowed with -kernel option")]
    AppendWithoutKernel,
    /// `-initrd` without `-kernel`.
    #[error("-initrd only allowed with -kernel option")]
    InitrdWithoutKernel,
    /// Both `-accel` and `-machine accel=` (or `-enable-kvm`) were given.
    #[error("the -accel and \"-machine accel=\" options are incompatible")]
    AccelConflict,
}

/// What is wrong with an option's argument.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ArgError {
    /// A `key=value` key the option does not have.
    #[error("invalid parameter '{0}'")]
    UnknownParameter(String),
    /// A bare word where the option's syntax needs `key=value`.
    #[error("expected '=' after parameter '{0}'")]
    ExpectedEquals(String),
    /// A boolean parameter with another value than on/off/yes/no/true/false/y/n.
    #[error("parameter '{0}' expects 'on' or 'off'")]
    ExpectsBool(String),
    /// A number parameter that is not a non-negative decimal integer that fits.
    #[error("parameter '{0}' expects a non-negative integer")]
    ExpectsNumber(String),
    /// A required parameter is absent.
    #[error("parameter '{0}' is missing")]
    MissingParameter(&'static str),
    /// Two parameters that cannot be combined.
    #[error("'{0}' and '{1}' are mutually exclusive")]
    Conflict(&'static str, &'static str),
    /// A valid QEMU value that petrel does not implement.
    #[error("'{key}={value}' is not supported")]
    UnsupportedValue {
        /// The parameter.
        key: String,
        /// Its value.
        value: String,
    },
    /// An `id=` that is not an identifier.
    #[error("parameter 'id' expects an identifier")]
    InvalidId,
    /// A size that does not parse; the field names the parameter (`size`, `maxmem`).
    #[error("invalid {0}")]
    InvalidSize(&'static str),
    /// `-m 0`.
    #[error("ram size must be greater than zero")]
    ZeroRamSize,
    /// A RAM size that overflows 64 bits once aligned.
    #[error("ram size too large")]
    RamTooLarge,
    /// `maxmem` below the RAM size.
    #[error("maxmem ({maxmem:#x}) must be at least the ram size ({size:#x})")]
    MaxmemBelowSize {
        /// The maximum, in bytes.
        maxmem: u64,
        /// The initial size, in bytes.
        size: u64,
    },
    /// Hotplug slots but no room to plug anything into them.
    #[error("memory slots were specified but maxmem equals the ram size ({0:#x})")]
    NoHotplugRoom(u64),
    /// `slots` without `maxmem`.
    #[error("slots specified but no maxmem")]
    SlotsWithoutMaxmem,
    /// A zero `-smp` value.
    #[error("Invalid CPU topology: CPU topology parameters must be greater than zero")]
    ZeroTopology,
    /// `clusters` above 1 on x86.
    #[error("clusters > 1 not supported by this machine's CPU topology")]
    ClustersUnsupported,
    /// The topology product differs from `maxcpus`.
    #[error(
        "Invalid CPU topology: product of the hierarchy must match maxcpus: \
         {topology} != maxcpus ({maxcpus})"
    )]
    TopologyMismatch {
        /// `sockets (s) * dies (d) * cores (c) * threads (t)`.
        topology: String,
        /// The expected product.
        maxcpus: u32,
    },
    /// More boot CPUs than possible CPUs.
    #[error(
        "Invalid CPU topology: maxcpus must be equal to or greater than smp: \
         {topology} == maxcpus ({maxcpus}) < smp_cpus ({cpus})"
    )]
    CpusAboveMaxcpus {
        /// `sockets (s) * dies (d) * cores (c) * threads (t)`.
        topology: String,
        /// The possible CPUs.
        maxcpus: u32,
        /// The boot CPUs.
        cpus: u32,
    },
    /// A malformed `-uuid`.
    #[error("failed to parse UUID string: wrong format")]
    InvalidUuid,
    /// A machine type petrel does not emulate.
    #[error("unsupported machine type '{0}' (use -machine help to list supported machines)")]
    UnsupportedMachine(String),
    /// An accelerator list without KVM.
    #[error("petrel supports only KVM acceleration")]
    KvmOnly,
    /// `-cpu ,...`.
    #[error("CPU model name is empty")]
    EmptyCpuModel,
    /// A CPU model other than host/max.
    #[error("unsupported CPU model '{0}' (use -cpu help to list supported models)")]
    UnsupportedCpuModel(String),
    /// A `-cpu` feature with an empty name.
    #[error("invalid CPU feature '{0}'")]
    InvalidCpuFeature(String),
    /// An image format petrel does not open.
    #[error("Unknown driver '{0}'")]
    UnknownFormat(String),
    /// A `cache=` mode QEMU does not have.
    #[error("invalid cache option '{0}'")]
    InvalidCacheMode(String),
    /// A `discard=` value other than ignore/unmap.
    #[error("Invalid discard option '{0}'")]
    InvalidDiscard(String),
    /// A `werror=`/`rerror=` value that is not an action for it.
    #[error("'{1}' invalid {kind} error action", kind = if *.0 == "rerror" { "read" } else { "write" })]
    InvalidErrorAction(&'static str, String),
    /// A `-blockdev` that is not valid `BlockdevOptions`.
    #[error("{0}")]
    InvalidBlockdev(String),
    /// A `-netdev` that is not valid `Netdev` JSON.
    #[error("{0}")]
    InvalidNetdev(String),
    /// A netdev `type` the schema does not have.
    #[error("Parameter 'type' does not accept value '{0}'")]
    InvalidNetdevType(String),
    /// A netdev type of the schema that petrel does not build.
    #[error("network backend '{0}' is not compiled into this binary")]
    NetBackendMissing(String),
    /// Two netdevs with one id.
    #[error("Duplicate ID '{0}' for netdev")]
    DuplicateNetdev(String),
    /// A `-nic model=` petrel does not have.
    #[error("unsupported NIC model '{0}' (petrel has virtio-net-pci)")]
    UnknownNicModel(String),
    /// A `mac=` that is not six hex bytes.
    #[error("Property 'virtio-net-device.mac' doesn't take value '{0}'")]
    InvalidMac(String),
    /// `netdev=` naming nothing.
    #[error("Property 'virtio-net-device.netdev' can't find value '{0}'")]
    UnknownNetdev(String),
    /// `netdev=` naming a netdev another NIC has.
    #[error("Property 'virtio-net-device.netdev' can't take value '{0}', it's in use")]
    NetdevInUse(String),
    /// A `-device` driver petrel does not have.
    #[error("'{0}' is not a valid device model name")]
    UnknownDevice(String),
    /// Device properties the device model refuses, in its words (QEMU's realize errors).
    #[error("{0}")]
    DeviceRefused(String),
    /// Two `-drive`s with one id.
    #[error("Duplicate ID '{0}' for drive")]
    DuplicateDrive(String),
    /// Two block nodes with one name.
    #[error("Duplicate nodes with node-name='{0}'")]
    DuplicateNodeName(String),
    /// Two devices with one id.
    #[error("Duplicate ID '{0}' for device")]
    DuplicateDevice(String),
    /// `drive=` naming nothing.
    #[error("Property 'virtio-blk-pci.drive' can't find value '{0}'")]
    UnknownDrive(String),
    /// `drive=` naming a drive another device has.
    #[error("Property 'virtio-blk-device.drive' can't take value '{0}', it's in use")]
    DriveInUse(String),
    /// A block device without `drive=`.
    #[error("drive property not set")]
    DriveNotSet,
    /// A PCI address that does not parse or is out of range.
    #[error("Property 'addr' doesn't take value '{0}'")]
    InvalidPciAddress(String),
    /// A display other than none.
    #[error("unsupported display '{0}'")]
    UnsupportedDisplay(String),
    /// `-chardev` without a backend.
    #[error("chardev: missing backend")]
    MissingBackend,
    /// A chardev backend petrel does not implement.
    #[error("unsupported chardev backend '{0}'")]
    UnsupportedBackend(String),
    /// A chardev id used twice.
    #[error("duplicate ID '{0}' for chardev")]
    DuplicateId(String),
    /// A TCP port that is not a number from 0 to 65535.
    #[error("invalid port '{0}'")]
    InvalidPort(String),
    /// `wait` on a socket that connects rather than listens.
    #[error("'wait' option is incompatible with socket in client connect mode")]
    WaitWithoutServer,
    /// A `-serial` device petrel does not implement.
    #[error("unsupported serial device '{0}'")]
    UnsupportedSerial(String),
    /// A `-qmp` device petrel cannot serve a monitor on.
    #[error("'{0}' is not a supported monitor device (use unix:, tcp: or stdio)")]
    UnsupportedMonitor(String),
    /// `-mon` in HMP (readline) mode.
    #[error("HMP monitors are not supported: use mode=control (QMP) and human-monitor-command")]
    HmpMonitor,
    /// A fifth serial port.
    #[error("too many serial ports (at most 4)")]
    TooManySerials,
    /// `-serial chardev:ID` naming no `-chardev`.
    #[error("chardev '{0}' not found")]
    UnknownChardev(String),
    /// Two serial ports on one chardev.
    #[error("chardev '{0}' is already in use")]
    ChardevInUse(String),
    /// Two character devices on stdio.
    #[error("cannot use stdio by multiple character devices")]
    StdioInUse,
    /// A `-chardev stdio` while the default serial port also takes stdio.
    #[error("stdio is also used by the default serial port (add -serial or -nodefaults)")]
    StdioUsedByDefaultSerial,
    /// A stdio character device with `-daemonize`, which detaches from the terminal.
    #[error("cannot use stdio with -daemonize")]
    StdioWithDaemonize,
}

/// `-m 12Q`, or just `-S` for an option without argument.
fn location(option: &str, arg: &str) -> String {
    if arg.is_empty() {
        option.to_owned()
    } else {
        format!("{option} {arg}")
    }
}

/// Where an option appeared, to attach it to an [`ArgError`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Loc {
    /// The option as typed.
    pub option: String,
    /// Its argument as typed (empty for options without one).
    pub arg: String,
}

impl Loc {
    /// The error `reason` about this option.
    pub fn err(&self, reason: ArgError) -> CliError {
        CliError::InvalidArgument {
            option: self.option.clone(),
            arg: self.arg.clone(),
            reason,
        }
    }
}
