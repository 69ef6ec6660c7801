//! What the command line asks for: the output of [`super::parse`].

use std::fmt;
use std::path::PathBuf;

pub use petrel_devices::virtio::block::ErrorPolicy;

/// What to do after parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Build and run a VM.
    Run(Box<Config>),
    /// `-h`, `-help`, `--help`: print [`super::help_text`] and exit successfully.
    Help,
    /// `-version`, `--version`: print [`super::version_text`] and exit successfully.
    Version,
    /// `-machine help`, `-cpu help` and the like: print [`super::list_text`] and exit
    /// successfully.
    List(ListTopic),
}

/// The lists that `help` (or `?`) as an option value asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListTopic {
    /// `-machine help`.
    Machines,
    /// `-machine q35,help`: the `-machine` properties petrel takes.
    MachineProperties,
    /// `-cpu help`.
    Cpus,
    /// `-accel help`.
    Accelerators,
    /// `-display help`.
    Displays,
    /// `-chardev help`.
    ChardevBackends,
    /// `-device help`.
    Devices,
}

/// A VM as the command line describes it. Defaults are QEMU's unless documented otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// QMP monitors, in command-line order.
    pub monitors: Vec<MonitorConfig>,
    /// `-kernel`: the kernel image to boot (last one wins).
    pub kernel: Option<PathBuf>,
    /// `-initrd`: the initial ramdisk (last one wins; only with `-kernel`).
    pub initrd: Option<PathBuf>,
    /// `-append`: the kernel command line (last one wins; empty when absent).
    pub append: String,
    /// `-m`.
    pub memory: MemoryConfig,
    /// `-smp`, with the missing values computed.
    pub smp: SmpConfig,
    /// `-name guest=`: the guest name (QMP `query-name`).
    pub name: Option<String>,
    /// `-name process=`: the name to give the petrel process.
    pub name_process: Option<String>,
    /// `-name debug-threads=on`: name each thread after its job.
    pub debug_threads: bool,
    /// `-uuid`: the system UUID.
    pub uuid: Option<Uuid>,
    /// The serial ports in order, COM1 first, at most 4; `-serial none` takes no port, as in
    /// QEMU. Without `-serial` or `-nodefaults` there is one default port: on stdio with
    /// Ctrl-C passed to the guest under `-nographic` (QEMU's `mon:stdio`); on null under
    /// `-display none` or `-daemonize`, where QEMU's would not be seen either; otherwise on
    /// stdio, where QEMU would put a console in its window, which petrel does not have.
    pub serials: Vec<ChardevSpec>,
    /// `-chardev` backends by id, in command-line order. All of them are to be opened, used
    /// by a serial port or not, as QEMU does.
    pub chardevs: Vec<(String, ChardevBackend)>,
    /// `-machine`, `-M`, `-accel`, `-enable-kvm`.
    pub machine: MachineConfig,
    /// `-cpu`.
    pub cpu: CpuConfig,
    /// `-S`: do not start the vCPUs until QMP `cont`.
    pub start_paused: bool,
    /// `-no-reboot`: exit instead of rebooting when the guest resets.
    pub no_reboot: bool,
    /// `-no-shutdown`: pause instead of exiting when the guest powers off.
    pub no_shutdown: bool,
    /// `-pidfile`: where to write the process id.
    pub pidfile: Option<PathBuf>,
    /// `-daemonize`: detach from the terminal once the VM is set up.
    pub daemonize: bool,
    /// The display; petrel has only `none`.
    pub display: DisplayConfig,
    /// `-nodefaults`: no default devices (for petrel, no default serial port).
    pub nodefaults: bool,
    /// `-drive`, in command-line order.
    pub drives: Vec<DriveConfig>,
    /// `-blockdev`, in command-line order, as QAPI `BlockdevOptions` JSON (checked against
    /// the schema's type when parsed).
    pub blockdevs: Vec<serde_json::Value>,
    /// `-device`, in command-line order (with the NICs of `-nic` after them).
    pub devices: Vec<DeviceConfig>,
    /// `-netdev` and the backends of `-nic`, in command-line order, as QAPI `Netdev` JSON
    /// (checked against the schema's type when parsed).
    pub netdevs: Vec<serde_json::Value>,
}

/// Which guest interface a `-drive` gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriveInterface {
    /// `if=virtio`: a virtio-blk-pci device of its own.
    Virtio,
    /// `if=none`: only a backend, for `-device ...,drive=ID`.
    None,
}

/// The cache flags of a `cache=` mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    /// The guest sees a volatile write cache (off: every write is flushed).
    pub writeback: bool,
    /// O_DIRECT.
    pub direct: bool,
    /// Flushes are ignored.
    pub no_flush: bool,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            writeback: true,
            direct: false,
            no_flush: false,
        }
    }
}

/// A `-drive`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriveConfig {
    /// `id=`, or the name QEMU generates (`virtio0`, `none0`).
    pub id: String,
    /// `if=`.
    pub interface: DriveInterface,
    /// `file=`.
    pub file: PathBuf,
    /// `format=`: `raw` or `qcow2`; probed when absent.
    pub format: Option<String>,
    /// `node-name=` of the format node.
    pub node_name: Option<String>,
    /// `readonly=`/`read-only=`.
    pub read_only: bool,
    /// `cache=` and `cache.direct=`/`cache.no-flush=`.
    pub cache: CacheConfig,
    /// `werror=`/`rerror=`.
    pub error_policy: ErrorPolicy,
    /// `serial=`: the disk's serial number (GET_ID).
    pub serial: Option<String>,
    /// `discard=unmap`: pass the guest's discards to the image (default `ignore`).
    pub discard_unmap: bool,
    /// `snapshot=on`: writes go to a temporary overlay, dropped at exit.
    pub snapshot: bool,
    /// `throttling.*` and the legacy `bps=`... limits, by QMP member name (`bps_rd`,
    /// `iops_max`, `bps_max_length`, `iops_size`, ...).
    pub throttle: Vec<(String, u64)>,
}

/// A `-device`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceConfig {
    /// `virtio-blk-pci`.
    VirtioBlk(VirtioBlkConfig),
    /// `virtio-net-pci`.
    VirtioNet(VirtioNetConfig),
    /// `virtio-balloon-pci`.
    Balloon(VirtioBalloonConfig),
}

impl DeviceConfig {
    /// The device's `id=`.
    pub fn id(&self) -> Option<&str> {
        match self {
            DeviceConfig::VirtioBlk(c) => c.id.as_deref(),
            DeviceConfig::VirtioNet(c) => c.id.as_deref(),
            DeviceConfig::Balloon(c) => c.id.as_deref(),
        }
    }
}

/// `-device virtio-net-pci,...` (or the NIC of a `-nic`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtioNetConfig {
    /// `id=`.
    pub id: Option<String>,
    /// `netdev=`: the backend; without one the NIC has no peer and drops what it sends.
    pub netdev: Option<String>,
    /// `mac=`; QEMU's default otherwise (52:54:00:12:34:56 plus the NIC's index).
    pub mac: Option<[u8; 6]>,
    /// `addr=`: the slot (and function 0) on bus 0.
    pub slot: Option<u8>,
    /// `rx_queue_size=`: the receive queue's size (a power of 2 from 256 to 1024).
    pub rx_queue_size: u16,
    /// `tx_queue_size=`: checked as QEMU checks it; the transmit queue stays 256, as in QEMU
    /// without vhost-user.
    pub tx_queue_size: u16,
    /// `host_mtu=`: the MTU offered to the guest (`VIRTIO_NET_F_MTU`); none when absent or 0.
    pub host_mtu: Option<u16>,
}

/// `-device virtio-balloon-pci,...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtioBalloonConfig {
    /// `id=`.
    pub id: Option<String>,
    /// `deflate-on-oom=`: offer VIRTIO_BALLOON_F_DEFLATE_ON_OOM (QEMU: off).
    pub deflate_on_oom: bool,
    /// `page-poison=`: offer VIRTIO_BALLOON_F_PAGE_POISON (QEMU: on).
    pub page_poison: bool,
    /// `addr=`: the slot (and function 0) on bus 0.
    pub slot: Option<u8>,
}

/// `-device virtio-blk-pci,...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtioBlkConfig {
    /// `id=`.
    pub id: Option<String>,
    /// `drive=`: a `-drive` id or a `-blockdev` node name.
    pub drive: String,
    /// `serial=`.
    pub serial: Option<String>,
    /// `num-queues=`.
    pub num_queues: u16,
    /// `queue-size=`.
    pub queue_size: u16,
    /// `addr=`: the slot (and function 0) on bus 0.
    pub slot: Option<u8>,
}

/// `-m [size=]N[,slots=n][,maxmem=size]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryConfig {
    /// Boot RAM in bytes: 128 MiB by default, rounded up to 8 KiB as QEMU does.
    pub size: u64,
    /// Maximum RAM including hotplugged memory, in bytes, when given (at least `size`).
    pub maxmem: Option<u64>,
    /// Memory hotplug slots, when given (only with `maxmem`).
    pub slots: Option<u32>,
}

/// The CPU topology, complete and consistent: `sockets * dies * cores * threads == maxcpus`
/// and `cpus <= maxcpus`. Upper bounds are for the VMM to check against KVM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SmpConfig {
    /// vCPUs present at boot.
    pub cpus: u32,
    /// Possible vCPUs, including hotpluggable ones.
    pub maxcpus: u32,
    /// Sockets.
    pub sockets: u32,
    /// Dies per socket.
    pub dies: u32,
    /// Cores per die.
    pub cores: u32,
    /// Threads per core.
    pub threads: u32,
}

/// A system UUID (`-uuid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uuid {
    /// The 16 bytes in the order they are written.
    pub bytes: [u8; 16],
}

/// The canonical lower-case form `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, as QMP `query-uuid`
/// reports it.
impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.bytes.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// A QMP monitor (`-qmp`, or `-mon mode=control` on a `-chardev`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorConfig {
    /// Where the monitor talks.
    pub backend: ChardevBackend,
    /// The chardev's label, as `query-chardev` reports it: the `-chardev` id, or
    /// `compat_monitorN` for `-qmp`, as in QEMU.
    pub label: String,
}

/// A serial port's backend: inline (`-serial stdio`) or a `-chardev` by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChardevSpec {
    /// A backend of its own.
    Backend(ChardevBackend),
    /// `chardev:ID`: the `-chardev` with that id (checked to exist in [`Config::chardevs`]).
    Chardev(String),
}

/// Where a character device's bytes go and come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChardevBackend {
    /// The terminal. At most one character device may use it.
    Stdio {
        /// Whether Ctrl-C stops petrel (on) or goes to the guest (off). QEMU turns it off
        /// for `-serial mon:stdio` and the `-nographic` default, where the monitor's Ctrl-A
        /// escapes would be the way out.
        signal: bool,
    },
    /// Output to a file; input is not read.
    File {
        /// The file.
        path: PathBuf,
        /// Append rather than truncate.
        append: bool,
    },
    /// Output discarded, no input.
    Null,
    /// A socket inherited from the parent process (`fd=N`), listening or connected. This is
    /// how QEMU's Python test harness hands a monitor its socket.
    SocketFd {
        /// The descriptor number.
        fd: i32,
    },
    /// A Unix stream socket.
    UnixSocket {
        /// The socket path.
        path: PathBuf,
        /// Listen (on) or connect (off).
        server: bool,
        /// For a server, wait for a client before starting the VM (QEMU's default); always
        /// false for a client.
        wait: bool,
    },
    /// A TCP socket.
    TcpSocket {
        /// The host to listen on or connect to. QEMU's empty host is made explicit:
        /// `0.0.0.0` for a server (QEMU also listens on IPv6 there), `localhost` for a client.
        host: String,
        /// The port; 0 lets a server pick one.
        port: u16,
        /// Listen (on) or connect (off).
        server: bool,
        /// For a server, wait for a client before starting the VM (QEMU's default); always
        /// false for a client.
        wait: bool,
    },
}

/// `-machine`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MachineConfig {
    /// The board.
    pub kind: MachineKind,
    /// The QEMU version of a versioned type such as `pc-q35-7.2`; `None` for `q35`, `pc`
    /// and the default, which stand for the newest.
    pub version: Option<MachineVersion>,
    /// `dump-guest-core`: include guest RAM in petrel's core dumps (default on).
    pub dump_guest_core: bool,
    /// `mem-merge`: let KSM merge guest RAM (default on).
    pub mem_merge: bool,
}

/// The board.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MachineKind {
    /// Q35 + ICH9: `q35`, `pc-q35-*`, and petrel's default when `-machine` gives no type
    /// (QEMU's default is `pc`).
    Q35,
    /// i440FX + PIIX: `pc`, `pc-i440fx-*`.
    Pc,
}

/// A machine type version, `7.2` in `pc-q35-7.2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct MachineVersion {
    /// `7`.
    pub major: u32,
    /// `2`.
    pub minor: u32,
}

/// `-cpu`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuConfig {
    /// The model.
    pub model: CpuModel,
    /// Feature switches, names with `_` turned into `-`, to apply in order: a later entry
    /// overrides an earlier one for the same feature. QEMU's precedence is already folded in:
    /// `feat=on|off` entries come first, then `+feat`, then `-feat`, so `-feat` beats `+feat`
    /// and both beat `feat=on|off` wherever they were written. Names are not checked here.
    pub features: Vec<(String, bool)>,
}

/// A CPU model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuModel {
    /// The host CPU as KVM supports it: `host`, and `max`, which under KVM is the same.
    Host,
}

/// The display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisplayConfig {
    /// No display: `-display none`, `-nographic`, and petrel's only choice.
    None,
}
