//! The options petrel knows, and splitting argv into option occurrences.
//!
//! The table is the single list of options: the parser looks names up in it and the help
//! text is rendered from it, so the two cannot drift apart.

use super::error::CliError;

/// An option, whichever of its names was used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Opt {
    Help,
    Version,
    Machine,
    Accel,
    EnableKvm,
    Cpu,
    Smp,
    Memory,
    Name,
    Uuid,
    Kernel,
    Initrd,
    Append,
    Serial,
    Chardev,
    Display,
    Nographic,
    Nodefaults,
    StartPaused,
    NoReboot,
    NoShutdown,
    Pidfile,
    Daemonize,
    Qmp,
    Mon,
    Drive,
    Blockdev,
    Snapshot,
    Device,
    Netdev,
    Nic,
}

/// One row of the option table.
pub(crate) struct OptionSpec {
    /// Names without the leading dash; the first is the one the help text shows first.
    pub names: &'static [&'static str],
    /// Which option.
    pub opt: Opt,
    /// The argument's syntax for the help text, or `None` if the option takes none.
    pub arg: Option<&'static str>,
    /// The description; lines after the first are indented under it.
    pub help: &'static str,
    /// The help section it is listed under.
    pub section: &'static str,
}

const STANDARD: &str = "Standard options";
const BOOT: &str = "Linux boot specific";
const BLOCK: &str = "Block device options";
const DEVICES: &str = "Device options";
const CHARDEV: &str = "Character device options";
const NETWORK: &str = "Network options";
const DISPLAY: &str = "Display options";
const CONTROL: &str = "Process and run-state options";
const MONITOR: &str = "Monitor options";

/// Every option, in help order.
pub(crate) const OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        names: &["h", "help"],
        opt: Opt::Help,
        arg: None,
        help: "display this help and exit",
        section: STANDARD,
    },
    OptionSpec {
        names: &["version"],
        opt: Opt::Version,
        arg: None,
        help: "display version information and exit",
        section: STANDARD,
    },
    OptionSpec {
        names: &["machine", "M"],
        opt: Opt::Machine,
        arg: Some("[type=]q35|pc|pc-q35-X.Y|pc-i440fx-X.Y[,prop=value[,...]]"),
        help: "select the machine ('-machine help' for the list,\n\
               '-machine q35,help' for its properties)",
        section: STANDARD,
    },
    OptionSpec {
        names: &["accel"],
        opt: Opt::Accel,
        arg: Some("[accel=]kvm[,kernel-irqchip=on]"),
        help: "select the accelerator (only kvm; 'help' for the list)",
        section: STANDARD,
    },
    OptionSpec {
        names: &["enable-kvm"],
        opt: Opt::EnableKvm,
        arg: None,
        help: "use KVM (always the case; same as -machine accel=kvm)",
        section: STANDARD,
    },
    OptionSpec {
        names: &["cpu"],
        opt: Opt::Cpu,
        arg: Some("host|max[,+feat|-feat|feat=on|off...]"),
        help: "select the CPU model and features ('-cpu help' for the list)",
        section: STANDARD,
    },
    OptionSpec {
        names: &["smp"],
        opt: Opt::Smp,
        arg: Some("[cpus=]n[,maxcpus=m][,sockets=s][,dies=d][,cores=c][,threads=t]"),
        help: "set the number of CPUs and their topology\n\
               (missing values are computed as QEMU does)",
        section: STANDARD,
    },
    OptionSpec {
        names: &["m"],
        opt: Opt::Memory,
        arg: Some("[size=]N[,slots=n,maxmem=size]"),
        help: "set the RAM size (default 128M; a plain number means MiB)",
        section: STANDARD,
    },
    OptionSpec {
        names: &["name"],
        opt: Opt::Name,
        arg: Some("[guest=]name[,process=name][,debug-threads=on|off]"),
        help: "set the guest name, the process name and thread naming",
        section: STANDARD,
    },
    OptionSpec {
        names: &["uuid"],
        opt: Opt::Uuid,
        arg: Some("xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"),
        help: "set the system UUID",
        section: STANDARD,
    },
    OptionSpec {
        names: &["nodefaults"],
        opt: Opt::Nodefaults,
        arg: None,
        help: "create no default devices (no default serial port)",
        section: STANDARD,
    },
    OptionSpec {
        names: &["kernel"],
        opt: Opt::Kernel,
        arg: Some("bzImage"),
        help: "boot this Linux kernel",
        section: BOOT,
    },
    OptionSpec {
        names: &["append"],
        opt: Opt::Append,
        arg: Some("cmdline"),
        help: "use 'cmdline' as the kernel command line",
        section: BOOT,
    },
    OptionSpec {
        names: &["initrd"],
        opt: Opt::Initrd,
        arg: Some("file"),
        help: "use 'file' as the initial ram disk",
        section: BOOT,
    },
    OptionSpec {
        names: &["drive"],
        opt: Opt::Drive,
        arg: Some("file=path,if=virtio|none[,id=id][,format=raw|qcow2][,...]"),
        help: "add a disk image; more keys: node-name, readonly, cache, werror,\n\
               rerror, serial, discard, snapshot, throttling.*",
        section: BLOCK,
    },
    OptionSpec {
        names: &["blockdev"],
        opt: Opt::Blockdev,
        arg: Some("driver=file|raw|qcow2,node-name=N[,file=..][,backing=..]"),
        help: "add a block node (keyval or JSON, as blockdev-add takes it)",
        section: BLOCK,
    },
    OptionSpec {
        names: &["snapshot"],
        opt: Opt::Snapshot,
        arg: None,
        help: "write to temporary files instead of disk image files\n\
               (snapshot=on for every -drive that does not set snapshot)",
        section: BLOCK,
    },
    OptionSpec {
        names: &["device"],
        opt: Opt::Device,
        arg: Some("driver[,prop=value][,...]"),
        help: "add a device ('-device help' for the list); virtio-blk-pci takes\n\
               drive, id, serial, num-queues, queue-size, addr;\n\
               virtio-net-pci takes netdev, mac, id, addr, rx_queue_size,\n\
               tx_queue_size, host_mtu",
        section: DEVICES,
    },
    OptionSpec {
        names: &["netdev"],
        opt: Opt::Netdev,
        arg: Some("user|tap|socket,id=str[,option][,...]"),
        help: "add a network backend (as netdev_add takes it); options:\n\
               user[,net=addr/mask][,host=addr][,dns=addr][,dhcpstart=addr]\n\
                 [,restrict=on|off][,hostname=name]\n\
                 [,hostfwd=tcp|udp:[hostaddr]:hostport-[guestaddr]:guestport]\n\
               tap[,ifname=name][,fd=h][,script=no][,downscript=no]\n\
                 [,vnet_hdr=on|off]\n\
               socket[,listen=[host]:port|connect=host:port|udp=host:port\n\
                 |mcast=maddr:port][,localaddr=addr][,fd=h]",
        section: NETWORK,
    },
    OptionSpec {
        names: &["nic"],
        opt: Opt::Nic,
        arg: Some("[user|tap|socket|none][,model=virtio-net-pci][,mac=addr][,...]"),
        help: "a network backend and a virtio-net-pci NIC on it",
        section: NETWORK,
    },
    OptionSpec {
        names: &["chardev"],
        opt: Opt::Chardev,
        arg: Some("stdio|null|file|socket,id=id[,...]"),
        help: "define a character device; backends:\n\
               stdio[,signal=on|off]\n\
               file,path=path[,append=on|off]\n\
               socket,path=path[,server=on|off][,wait=on|off]\n\
               socket,host=host,port=port[,server=on|off][,wait=on|off]\n\
               null",
        section: CHARDEV,
    },
    OptionSpec {
        names: &["serial"],
        opt: Opt::Serial,
        arg: Some("dev"),
        help: "add a serial port (COM1 to COM4); dev is one of:\n\
               stdio, mon:stdio, null, none, chardev:id, file:path,\n\
               unix:path[,server=on|off][,wait=on|off],\n\
               tcp:[host]:port[,server=on|off][,wait=on|off]",
        section: CHARDEV,
    },
    OptionSpec {
        names: &["display"],
        opt: Opt::Display,
        arg: Some("none"),
        help: "select the display (only none; 'help' for the list)",
        section: DISPLAY,
    },
    OptionSpec {
        names: &["nographic"],
        opt: Opt::Nographic,
        arg: None,
        help: "no display; the default serial port goes to the terminal",
        section: DISPLAY,
    },
    OptionSpec {
        names: &["S"],
        opt: Opt::StartPaused,
        arg: None,
        help: "do not start the CPUs at startup (use QMP 'cont')",
        section: CONTROL,
    },
    OptionSpec {
        names: &["no-reboot"],
        opt: Opt::NoReboot,
        arg: None,
        help: "exit instead of rebooting",
        section: CONTROL,
    },
    OptionSpec {
        names: &["no-shutdown"],
        opt: Opt::NoShutdown,
        arg: None,
        help: "stop before shutdown",
        section: CONTROL,
    },
    OptionSpec {
        names: &["pidfile"],
        opt: Opt::Pidfile,
        arg: Some("file"),
        help: "write the process id to 'file'",
        section: CONTROL,
    },
    OptionSpec {
        names: &["daemonize"],
        opt: Opt::Daemonize,
        arg: None,
        help: "daemonize petrel after initializing",
        section: CONTROL,
    },
    OptionSpec {
        names: &["qmp"],
        opt: Opt::Qmp,
        arg: Some("unix:PATH[,server=on|off][,wait=on|off]|tcp:[HOST]:PORT[,...]|stdio"),
        help: "a QMP monitor on this device",
        section: MONITOR,
    },
    OptionSpec {
        names: &["mon"],
        opt: Opt::Mon,
        arg: Some("[chardev=]ID,mode=control"),
        help: "a QMP monitor on the -chardev ID (only mode=control: petrel\n\
               has no HMP monitor; use QMP's human-monitor-command)",
        section: MONITOR,
    },
];

/// One option as it appeared on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Token {
    /// An option and, if it takes one, its argument.
    Option {
        /// Which option.
        opt: Opt,
        /// As typed, e.g. `--m`, for error messages.
        spelled: String,
        /// The argument, for options that take one.
        arg: Option<String>,
    },
    /// A word that is not an option.
    Stray(String),
}

/// The table row for a name without its dash.
fn lookup(name: &str) -> Option<&'static OptionSpec> {
    OPTIONS.iter().find(|spec| spec.names.contains(&name))
}

/// Splits argv (without argv\[0\]) into tokens. Like QEMU's first pass, this rejects unknown
/// options and missing arguments anywhere before any option is acted on.
///
/// As in QEMU, `--opt` is `-opt`, an option's argument is the next word whatever it looks
/// like, and a word not starting with `-` is not an option.
pub(crate) fn tokenize(args: impl IntoIterator<Item = String>) -> Result<Vec<Token>, CliError> {
    let mut tokens = Vec::new();
    let mut args = args.into_iter();
    while let Some(word) = args.next() {
        let Some(dashless) = word.strip_prefix('-') else {
            tokens.push(Token::Stray(word));
            continue;
        };
        let name = dashless.strip_prefix('-').unwrap_or(dashless);
        let Some(spec) = lookup(name) else {
            return Err(CliError::InvalidOption(word));
        };
        let arg = match spec.arg {
            None => None,
            Some(_) => match args.next() {
                Some(arg) => Some(arg),
                None => return Err(CliError::MissingArgument(word)),
            },
        };
        tokens.push(Token::Option {
            opt: spec.opt,
            spelled: word,
            arg,
        });
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| (*w).to_owned()).collect()
    }

    #[test]
    fn single_and_double_dash() {
        let tokens = tokenize(args(&["-m", "1G", "--smp", "2", "-S"])).unwrap();
        assert_eq!(
            tokens,
            vec![
                Token::Option {
                    opt: Opt::Memory,
                    spelled: "-m".into(),
                    arg: Some("1G".into())
                },
                Token::Option {
                    opt: Opt::Smp,
                    spelled: "--smp".into(),
                    arg: Some("2".into())
                },
                Token::Option {
                    opt: Opt::StartPaused,
                    spelled: "-S".into(),
                    arg: None
                },
            ]
        );
    }

    #[test]
    fn argument_may_look_like_an_option() {
        let tokens = tokenize(args(&["-append", "-m"])).unwrap();
        assert_eq!(
            tokens,
            vec![Token::Option {
                opt: Opt::Append,
                spelled: "-append".into(),
                arg: Some("-m".into())
            }]
        );
    }

    #[test]
    fn unknown_options() {
        for word in ["-hda", "-", "--", "---m", "-s", "-M=q35", "-help=1"] {
            assert_eq!(
                tokenize(args(&[word])),
                Err(CliError::InvalidOption(word.into()))
            );
        }
    }

    #[test]
    fn missing_argument() {
        assert_eq!(
            tokenize(args(&["-S", "--m"])),
            Err(CliError::MissingArgument("--m".into()))
        );
    }

    #[test]
    fn stray_words() {
        assert_eq!(
            tokenize(args(&["disk.img", ""])).unwrap(),
            vec![Token::Stray("disk.img".into()), Token::Stray(String::new())]
        );
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<&str> = OPTIONS
            .iter()
            .flat_map(|s| s.names.iter().copied())
            .collect();
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count);
    }
}
