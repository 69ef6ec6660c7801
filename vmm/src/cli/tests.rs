//! Whole-command-line tests of [`super::parse`]; each module tests its own syntax.

use super::config::*;
use super::*;

fn parse_words(words: &[&str]) -> Result<Action, CliError> {
    parse(words.iter().map(|w| (*w).to_owned()))
}

fn config(words: &[&str]) -> Config {
    match parse_words(words) {
        Ok(Action::Run(config)) => *config,
        other => panic!("{words:?}: {other:?}"),
    }
}

fn error(words: &[&str]) -> String {
    match parse_words(words) {
        Err(e) => e.to_string(),
        Ok(action) => panic!("{words:?} parsed as {action:?}"),
    }
}

const STDIO: ChardevSpec = ChardevSpec::Backend(ChardevBackend::Stdio { signal: true });

#[test]
fn defaults() {
    assert_eq!(
        config(&[]),
        Config {
            monitors: vec![],
            kernel: None,
            initrd: None,
            append: String::new(),
            memory: MemoryConfig {
                size: 128 << 20,
                maxmem: None,
                slots: None
            },
            smp: SmpConfig {
                cpus: 1,
                maxcpus: 1,
                sockets: 1,
                dies: 1,
                cores: 1,
                threads: 1
            },
            name: None,
            name_process: None,
            debug_threads: false,
            uuid: None,
            serials: vec![STDIO],
            chardevs: vec![],
            machine: MachineConfig {
                kind: MachineKind::Q35,
                version: None,
                dump_guest_core: true,
                mem_merge: true
            },
            cpu: CpuConfig {
                model: CpuModel::Host,
                features: vec![]
            },
            start_paused: false,
            no_reboot: false,
            no_shutdown: false,
            pidfile: None,
            daemonize: false,
            display: DisplayConfig::None,
            nodefaults: false,
            drives: vec![],
            blockdevs: vec![],
            devices: vec![],
            netdevs: vec![],
        }
    );
}

#[test]
fn typical_qemu_command_line() {
    let c = config(&[
        "-enable-kvm",
        "-M",
        "q35",
        "-cpu",
        "host,+x2apic",
        "-smp",
        "4",
        "-m",
        "1G",
        "-kernel",
        "/boot/vmlinuz",
        "-initrd",
        "/boot/initrd.img",
        "-append",
        "console=ttyS0 root=/dev/vda",
        "-nographic",
        "-no-reboot",
        "-name",
        "guest=vm0,process=petrel-vm0",
        "-uuid",
        "6F2A6A0C-5E8B-4C2D-9A1B-0123456789AB",
        "-pidfile",
        "/run/vm0.pid",
        "-S",
        "-no-shutdown",
    ]);
    assert_eq!(c.kernel, Some("/boot/vmlinuz".into()));
    assert_eq!(c.initrd, Some("/boot/initrd.img".into()));
    assert_eq!(c.append, "console=ttyS0 root=/dev/vda");
    assert_eq!(c.memory.size, 1 << 30);
    assert_eq!((c.smp.cpus, c.smp.cores, c.smp.sockets), (4, 4, 1));
    assert_eq!(c.cpu.features, vec![("x2apic".to_owned(), true)]);
    assert_eq!(
        c.serials,
        vec![ChardevSpec::Backend(ChardevBackend::Stdio {
            signal: false
        })]
    );
    assert_eq!(c.name.as_deref(), Some("vm0"));
    assert_eq!(c.name_process.as_deref(), Some("petrel-vm0"));
    assert_eq!(
        c.uuid.map(|u| u.to_string()).as_deref(),
        Some("6f2a6a0c-5e8b-4c2d-9a1b-0123456789ab")
    );
    assert_eq!(c.pidfile, Some("/run/vm0.pid".into()));
    assert!(c.no_reboot && c.no_shutdown && c.start_paused);
}

#[test]
fn double_dash_options() {
    let c = config(&["--m", "256", "--smp", "cpus=2", "--nodefaults"]);
    assert_eq!(c.memory.size, 256 << 20);
    assert_eq!(c.smp.cpus, 2);
    assert!(c.nodefaults);
    assert!(c.serials.is_empty());
}

#[test]
fn help_and_version() {
    for w in ["-h", "-help", "--help", "--h"] {
        assert_eq!(parse_words(&[w]), Ok(Action::Help), "{w}");
    }
    for w in ["-version", "--version"] {
        assert_eq!(parse_words(&[w]), Ok(Action::Version), "{w}");
    }
    // Acted on when reached, so later bad values do not matter...
    assert_eq!(parse_words(&["-help", "-m", "12Q"]), Ok(Action::Help));
    // ...but earlier ones do,
    assert_eq!(error(&["-m", "12Q", "-help"]), "-m 12Q: invalid size");
    // and unknown options anywhere are reported first, like QEMU's first pass.
    assert_eq!(
        error(&["-help", "-hda", "disk.img"]),
        "-hda: invalid option"
    );
}

#[test]
fn help_lists() {
    let cases: &[(&[&str], ListTopic)] = &[
        (&["-M", "help"], ListTopic::Machines),
        (&["-machine", "?"], ListTopic::Machines),
        (&["-M", "q35,help"], ListTopic::MachineProperties),
        (&["-cpu", "help"], ListTopic::Cpus),
        (&["-accel", "help"], ListTopic::Accelerators),
        (&["-display", "help"], ListTopic::Displays),
        (&["-chardev", "help"], ListTopic::ChardevBackends),
        (&["-device", "help"], ListTopic::Devices),
        (&["-device", "?"], ListTopic::Devices),
    ];
    for (words, topic) in cases {
        assert_eq!(parse_words(words), Ok(Action::List(*topic)), "{words:?}");
    }
}

#[test]
fn invalid_options() {
    for opt in [
        "-monitor",
        "-vnc",
        "-incoming",
        "-hda",
        "-bios",
        "-s",
        "-boot",
        "-",
        "--",
        "-M=q35",
    ] {
        assert_eq!(error(&[opt, "x"]), format!("{opt}: invalid option"));
    }
}

#[test]
fn missing_arguments() {
    for opt in [
        "-m", "-smp", "-M", "-machine", "-accel", "-cpu", "-name", "-uuid", "-kernel", "-initrd",
        "-append", "-serial", "-chardev", "-display", "-pidfile", "--m",
    ] {
        assert_eq!(error(&[opt]), format!("{opt}: requires an argument"));
    }
}

#[test]
fn stray_argument() {
    assert_eq!(
        error(&["-m", "1G", "disk.img"]),
        "disk.img: unexpected argument (disk images are not supported)"
    );
}

#[test]
fn error_messages_name_the_option_as_typed() {
    assert_eq!(error(&["-m", "12Q"]), "-m 12Q: invalid size");
    assert_eq!(
        error(&["--m", "0"]),
        "--m 0: ram size must be greater than zero"
    );
    assert_eq!(
        error(&["-m", "1G,maxmem=x"]),
        "-m 1G,maxmem=x: invalid maxmem"
    );
    assert_eq!(
        error(&["-smp", "4,sockets=3"]),
        "-smp 4,sockets=3: Invalid CPU topology: product of the hierarchy must match maxcpus: \
         sockets (3) * dies (1) * cores (1) * threads (1) != maxcpus (4)"
    );
    assert_eq!(
        error(&["-uuid", "nope"]),
        "-uuid nope: failed to parse UUID string: wrong format"
    );
    assert_eq!(
        error(&["-M", "microvm"]),
        "-M microvm: unsupported machine type 'microvm' (use -machine help to list supported \
         machines)"
    );
    assert_eq!(
        error(&["-machine", "accel=tcg"]),
        "-machine accel=tcg: petrel supports only KVM acceleration"
    );
    assert_eq!(
        error(&["-accel", "tcg"]),
        "-accel tcg: petrel supports only KVM acceleration"
    );
    assert_eq!(
        error(&["-cpu", "qemu64"]),
        "-cpu qemu64: unsupported CPU model 'qemu64' (use -cpu help to list supported models)"
    );
    assert_eq!(
        error(&["-display", "gtk"]),
        "-display gtk: unsupported display 'gtk'"
    );
    assert_eq!(
        error(&["-serial", "vc"]),
        "-serial vc: unsupported serial device 'vc'"
    );
    assert_eq!(
        error(&["-chardev", "socket,id=s,path=/s,wait=off"]),
        "-chardev socket,id=s,path=/s,wait=off: 'wait' option is incompatible with socket in \
         client connect mode"
    );
    assert_eq!(
        error(&["-M", "q35,usb=on"]),
        "-M q35,usb=on: 'usb=on' is not supported"
    );
    assert_eq!(
        error(&["-name", "vm,foo=bar"]),
        "-name vm,foo=bar: invalid parameter 'foo'"
    );
}

#[test]
fn memory_and_smp_errors_point_at_the_last_option() {
    assert_eq!(
        error(&["-m", "1G", "-m", "slots=2"]),
        "-m slots=2: slots specified but no maxmem"
    );
    assert_eq!(
        error(&["-smp", "4", "-smp", "maxcpus=2"]),
        "-smp maxcpus=2: Invalid CPU topology: maxcpus must be equal to or greater than smp: \
         sockets (1) * dies (1) * cores (2) * threads (1) == maxcpus (2) < smp_cpus (4)"
    );
}

#[test]
fn smp_preference_follows_machine_version_in_any_order() {
    let c = config(&["-smp", "4", "-M", "pc-i440fx-5.2"]);
    assert_eq!((c.smp.sockets, c.smp.cores), (4, 1));
    let c = config(&["-M", "pc-q35-7.2", "-smp", "4"]);
    assert_eq!((c.smp.sockets, c.smp.cores), (1, 4));
    assert_eq!(c.machine.kind, MachineKind::Q35);
}

#[test]
fn repeated_options() {
    let c = config(&[
        "-kernel",
        "a",
        "-kernel",
        "b",
        "-append",
        "x",
        "-append",
        "y",
        "-initrd",
        "i",
        "-initrd",
        "j",
        "-cpu",
        "host,-pmu",
        "-cpu",
        "max",
        "-m",
        "1G",
        "-m",
        "maxmem=2G",
    ]);
    assert_eq!(c.kernel, Some("b".into()));
    assert_eq!(c.initrd, Some("j".into()));
    assert_eq!(c.append, "y");
    assert!(c.cpu.features.is_empty());
    assert_eq!(c.memory.size, 1 << 30);
    assert_eq!(c.memory.maxmem, Some(2 << 30));
}

#[test]
fn kernel_dependencies() {
    assert_eq!(
        error(&["-append", "console=ttyS0"]),
        "-append only allowed with -kernel option"
    );
    // QEMU rejects even an empty -append without -kernel.
    assert_eq!(
        error(&["-append", ""]),
        "-append only allowed with -kernel option"
    );
    assert_eq!(
        error(&["-initrd", "/initrd"]),
        "-initrd only allowed with -kernel option"
    );
}

#[test]
fn serials_and_chardevs() {
    let c = config(&[
        "-chardev",
        "socket,id=qmp0,path=/tmp/q.sock,server=on,wait=off",
        "-chardev",
        "file,id=log,path=/tmp/log,append=on",
        "-serial",
        "chardev:log",
        "-serial",
        "none",
        "-serial",
        "stdio",
        "-serial",
        "unix:/tmp/s2,server,nowait",
        "-serial",
        "tcp:127.0.0.1:5555,server=on,wait=off",
    ]);
    assert_eq!(
        c.chardevs,
        vec![
            (
                "qmp0".to_owned(),
                ChardevBackend::UnixSocket {
                    path: "/tmp/q.sock".into(),
                    server: true,
                    wait: false
                }
            ),
            (
                "log".to_owned(),
                ChardevBackend::File {
                    path: "/tmp/log".into(),
                    append: true
                }
            ),
        ]
    );
    assert_eq!(
        c.serials,
        vec![
            ChardevSpec::Chardev("log".into()),
            STDIO,
            ChardevSpec::Backend(ChardevBackend::UnixSocket {
                path: "/tmp/s2".into(),
                server: true,
                wait: false
            }),
            ChardevSpec::Backend(ChardevBackend::TcpSocket {
                host: "127.0.0.1".into(),
                port: 5555,
                server: true,
                wait: false
            }),
        ]
    );
}

#[test]
fn chardev_rules() {
    assert_eq!(
        error(&["-chardev", "null,id=a", "-chardev", "stdio,id=a"]),
        "-chardev stdio,id=a: duplicate ID 'a' for chardev"
    );
    // A -serial may name a -chardev defined after it.
    let c = config(&["-serial", "chardev:late", "-chardev", "null,id=late"]);
    assert_eq!(c.serials, vec![ChardevSpec::Chardev("late".into())]);
    assert_eq!(
        error(&["-serial", "chardev:nope"]),
        "-serial chardev:nope: chardev 'nope' not found"
    );
    assert_eq!(
        error(&["-serial", "stdio", "-serial", "mon:stdio"]),
        "-serial mon:stdio: cannot use stdio by multiple character devices"
    );
    assert_eq!(
        error(&["-chardev", "stdio,id=c"]),
        "-chardev stdio,id=c: stdio is also used by the default serial port (add -serial or \
         -nodefaults)"
    );
    assert_eq!(
        error(&[
            "-serial", "null", "-serial", "null", "-serial", "null", "-serial", "null", "-serial",
            "file:/x"
        ]),
        "-serial file:/x: too many serial ports (at most 4)"
    );
}

#[test]
fn display_and_defaults() {
    let c = config(&["-display", "none"]);
    assert_eq!(c.serials, vec![ChardevSpec::Backend(ChardevBackend::Null)]);
    let c = config(&["-nographic", "-display", "none"]);
    assert_eq!(
        c.serials,
        vec![ChardevSpec::Backend(ChardevBackend::Stdio {
            signal: false
        })]
    );
    let c = config(&["-nodefaults", "-nographic"]);
    assert!(c.serials.is_empty());
    let c = config(&["-nographic", "-serial", "file:/tmp/out"]);
    assert_eq!(c.serials.len(), 1);
}

#[test]
fn daemonize() {
    let c = config(&["-daemonize", "-display", "none", "-pidfile", "/run/p"]);
    assert!(c.daemonize);
    assert_eq!(c.serials, vec![ChardevSpec::Backend(ChardevBackend::Null)]);
    let c = config(&["-daemonize"]);
    assert_eq!(c.serials, vec![ChardevSpec::Backend(ChardevBackend::Null)]);
    assert_eq!(
        error(&["-daemonize", "-nographic"]),
        "-nographic cannot be used with -daemonize"
    );
    assert_eq!(
        error(&["-daemonize", "-serial", "stdio"]),
        "-serial stdio: cannot use stdio with -daemonize"
    );
    assert_eq!(
        error(&[
            "-chardev",
            "stdio,id=s",
            "-daemonize",
            "-serial",
            "chardev:s"
        ]),
        "-chardev stdio,id=s: cannot use stdio with -daemonize"
    );
    assert!(parse_words(&["-daemonize", "-nographic", "-serial", "unix:/s,server=on"]).is_ok());
}

#[test]
fn accelerators() {
    for words in [
        &["-enable-kvm"][..],
        &["-accel", "kvm"],
        &["-accel", "kvm,kernel-irqchip=on"],
        &["-machine", "accel=kvm:tcg"],
        &["-accel", "tcg", "-accel", "kvm"],
    ] {
        assert!(
            matches!(parse_words(words), Ok(Action::Run(_))),
            "{words:?}"
        );
    }
    assert_eq!(
        error(&["-enable-kvm", "-accel", "kvm"]),
        "the -accel and \"-machine accel=\" options are incompatible"
    );
    assert_eq!(
        error(&["-enable-kvm", "-M", "accel=tcg"]),
        "-M accel=tcg: petrel supports only KVM acceleration"
    );
}

/// A small deterministic generator, so the garbage test needs no dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        let len = u64::try_from(items.len()).unwrap_or(1);
        let i = usize::try_from(self.next() % len).unwrap_or(0);
        items[i]
    }
}

#[test]
fn garbage_never_panics() {
    let options: Vec<String> = options::OPTIONS
        .iter()
        .flat_map(|s| s.names.iter().map(|n| format!("-{n}")))
        .collect();
    let option_refs: Vec<&str> = options.iter().map(String::as_str).collect();
    let fragments = [
        "",
        ",",
        ",,",
        "=",
        "==",
        "help",
        "?",
        "no",
        "on",
        "off",
        "0",
        "1",
        "-1",
        "4294967296",
        "18446744073709551616",
        "99999999999999999999999999",
        "1.",
        ".5",
        "1.5E",
        "16E",
        "0x10",
        "q35",
        "pc-q35-",
        "pc-i440fx-6.1",
        "host",
        "+",
        "-",
        "_",
        "id=",
        "id=a",
        "path=",
        "server",
        "nowait",
        "stdio",
        "mon:",
        "chardev:",
        "unix:",
        "tcp:",
        "tcp::",
        ":",
        "file:",
        "socket",
        "host=",
        "port=",
        "sockets=0",
        "cores=",
        "maxmem=",
        "slots=",
        "é",
        "\u{0}",
        "\u{feff}",
        "💥",
        "a,,",
        ",,,",
        "type=",
        "accel=",
        "backend=",
        "none",
        "null",
    ];
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for _ in 0..50_000 {
        let words = 1 + rng.next() % 8;
        let mut args = Vec::new();
        for _ in 0..words {
            // Mostly options followed by a garbage value, so that values get parsed; now and
            // then a garbage word where an option should be.
            if rng.next() & 7 != 0 {
                args.push(rng.pick(&option_refs).to_owned());
            }
            let parts = 1 + rng.next() % 5;
            let mut word = String::new();
            for _ in 0..parts {
                word.push_str(rng.pick(&fragments));
            }
            args.push(word);
        }
        // Only the absence of a panic matters; every Display must also work.
        if let Err(e) = parse(args) {
            assert!(!e.to_string().is_empty());
        }
    }
}

#[test]
fn garbage_values_for_every_option() {
    let values = [
        "",
        ",",
        ",,",
        "=",
        "help,",
        "a=b=c",
        "\u{0}",
        "💥,💥=💥",
        "-",
        "--",
        "1,2,3,4,5",
        "id=x,id=y",
        "=,=",
        "no",
        "noid",
        ",id=0",
    ];
    for spec in options::OPTIONS.iter().filter(|s| s.arg.is_some()) {
        for name in spec.names {
            for value in values {
                let _ = parse([format!("-{name}"), value.to_owned()]);
            }
        }
    }
}

#[test]
fn monitors() {
    let cfg = config(&[
        "-qmp",
        "unix:/tmp/a.sock,server=on,wait=off",
        "-chardev",
        "socket,id=m1,path=/tmp/b.sock,server=on,wait=off",
        "-mon",
        "chardev=m1,mode=control",
        "-chardev",
        "socket,id=m2,fd=3",
        "-mon",
        "m2,mode=control",
    ]);
    let labels: Vec<_> = cfg.monitors.iter().map(|m| m.label.as_str()).collect();
    assert_eq!(labels, ["compat_monitor0", "m1", "m2"]);
    assert_eq!(cfg.monitors[2].backend, ChardevBackend::SocketFd { fd: 3 });
    // A monitor on stdio leaves the default serial port on null.
    let cfg = config(&["-qmp", "stdio"]);
    assert_eq!(cfg.serials, [ChardevSpec::Backend(ChardevBackend::Null)]);
    assert_eq!(
        error(&["-qmp", "stdio", "-serial", "stdio"]),
        "-qmp stdio: cannot use stdio by multiple character devices"
    );
    assert_eq!(
        error(&["-mon", "chardev=nope,mode=control"]),
        "-mon chardev=nope,mode=control: chardev 'nope' not found"
    );
    assert_eq!(
        error(&[
            "-chardev",
            "socket,id=s,fd=3,path=/x",
            "-mon",
            "s,mode=control"
        ]),
        "-chardev socket,id=s,fd=3,path=/x: 'fd' and 'path' are mutually exclusive"
    );
}

#[test]
fn disks_are_checked_across_options() {
    let ok = config(&[
        "-drive",
        "file=a.img,if=none,id=d0",
        "-blockdev",
        "driver=file,filename=b.img,node-name=f1",
        "-blockdev",
        "driver=raw,file=f1,node-name=n1",
        "-device",
        "virtio-blk-pci,drive=d0,id=disk0",
        "-device",
        "virtio-blk-pci,drive=n1",
        "-drive",
        "file=c.img,if=virtio",
    ]);
    assert_eq!(ok.drives.len(), 2);
    assert_eq!(ok.blockdevs.len(), 2);
    assert_eq!(ok.devices.len(), 2);

    let err = |args: &[&str]| {
        parse(args.iter().map(|s| s.to_string()))
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        err(&["-device", "virtio-blk-pci,drive=nope"]),
        "-device virtio-blk-pci,drive=nope: Property 'virtio-blk-pci.drive' can't find value 'nope'"
    );
    assert_eq!(
        err(&[
            "-drive",
            "file=a,if=virtio",
            "-device",
            "virtio-blk-pci,drive=virtio0"
        ]),
        "-device virtio-blk-pci,drive=virtio0: Property 'virtio-blk-device.drive' can't take \
         value 'virtio0', it's in use"
    );
    assert_eq!(
        err(&[
            "-drive",
            "file=a,if=none,id=x",
            "-drive",
            "file=b,if=none,id=x"
        ]),
        "-drive file=b,if=none,id=x: Duplicate ID 'x' for drive"
    );
    assert_eq!(
        err(&[
            "-drive",
            "file=a,if=none,id=x",
            "-device",
            "virtio-blk-pci,drive=x,id=d",
            "-drive",
            "file=b,if=none,id=y",
            "-device",
            "virtio-blk-pci,drive=y,id=d"
        ]),
        "-device virtio-blk-pci,drive=y,id=d: Duplicate ID 'd' for device"
    );
    assert_eq!(
        err(&[
            "-blockdev",
            "driver=file,filename=a,node-name=n",
            "-blockdev",
            "driver=file,filename=b,node-name=n"
        ]),
        "-blockdev driver=file,filename=b,node-name=n: Duplicate nodes with node-name='n'"
    );
}

#[test]
fn netdevs_and_nics() {
    let c = config(&[
        "-netdev",
        "user,id=u0",
        "-device",
        "virtio-net-pci,netdev=u0,id=nic0",
        "-nic",
        "socket,listen=:5000",
    ]);
    assert_eq!(c.netdevs.len(), 2);
    assert_eq!(c.netdevs[1]["id"], "__org.qemu.nic0");
    assert_eq!(c.devices.len(), 2);
    assert_eq!(c.devices[0].id(), Some("nic0"));
    assert_eq!(
        error(&["-netdev", "user,id=a", "-netdev", "user,id=a"]),
        "-netdev user,id=a: Duplicate ID 'a' for netdev"
    );
    assert_eq!(
        error(&["-device", "virtio-net-pci,netdev=nope"]),
        "-device virtio-net-pci,netdev=nope: \
         Property 'virtio-net-device.netdev' can't find value 'nope'"
    );
    assert_eq!(
        error(&[
            "-netdev",
            "user,id=u",
            "-device",
            "virtio-net-pci,netdev=u",
            "-device",
            "virtio-net-pci,netdev=u",
        ]),
        "-device virtio-net-pci,netdev=u: \
         Property 'virtio-net-device.netdev' can't take value 'u', it's in use"
    );
    assert_eq!(
        error(&[
            "-device",
            "virtio-net-pci,id=n",
            "-device",
            "virtio-net-pci,id=n"
        ]),
        "-device virtio-net-pci,id=n: Duplicate ID 'n' for device"
    );
}
