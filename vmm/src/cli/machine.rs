//! `-machine`/`-M`, `-accel` and `-enable-kvm`.
//!
//! `-machine` options merge key by key, later values winning, as QEMU's keyval machine
//! dictionary does. Properties that only select QEMU features petrel lacks are accepted in
//! the setting that matches petrel (`usb=off`, `vmport=off`, ...) and rejected otherwise, so
//! a script never silently gets a different machine than it asked for.

use super::config::{ListTopic, MachineConfig, MachineKind, MachineVersion};
use super::error::{ArgError, CliError, Loc};
use super::opts::{is_help, parse_bool, Opts, Syntax};

/// The newest machine types before QEMU 6.2 compute missing `-smp` values preferring
/// sockets; later ones prefer cores.
const CORES_PREFERRED_SINCE: MachineVersion = MachineVersion { major: 6, minor: 2 };

/// The `-machine`, `-accel` and `-enable-kvm` settings seen so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct MachineArgs {
    kind: Option<(MachineKind, Option<MachineVersion>)>,
    dump_guest_core: Option<bool>,
    mem_merge: Option<bool>,
    /// `-machine accel=` (or `-enable-kvm`) and where it was set.
    machine_accel: Option<(String, Loc)>,
    /// Each `-accel` accelerator and where it was given.
    accel_options: Vec<(String, Loc)>,
}

impl MachineArgs {
    /// Parses one `-machine` argument and merges it in; returns the list asked for by `help`.
    pub fn merge_machine(&mut self, arg: &str, loc: &Loc) -> Result<Option<ListTopic>, ArgError> {
        let mut opts = Opts::parse(arg, Some("type"), Syntax::Keyval)?;
        opts.dashify_keys();
        let kind = match opts.get("type") {
            Some(t) if is_help(t) => return Ok(Some(ListTopic::Machines)),
            Some(t) => match machine_type(t) {
                Some(kind) => Some(kind),
                // QEMU lists the machines when asked for the properties of an unknown one.
                None if opts.wants_help() => return Ok(Some(ListTopic::Machines)),
                None => return Err(ArgError::UnsupportedMachine(t.to_owned())),
            },
            None => None,
        };
        if opts.wants_help() {
            return Ok(Some(if kind.is_some() {
                ListTopic::MachineProperties
            } else {
                ListTopic::Machines
            }));
        }
        opts.check_known(&[
            "type",
            "accel",
            "kernel-irqchip",
            "usb",
            "dump-guest-core",
            "mem-merge",
            "vmport",
            "smm",
            "graphics",
        ])?;
        if kind.is_some() {
            self.kind = kind;
        }
        for (key, value) in opts.iter() {
            match key {
                "accel" => self.machine_accel = Some((value.to_owned(), loc.clone())),
                "kernel-irqchip" => kernel_irqchip(value)?,
                "dump-guest-core" => self.dump_guest_core = Some(parse_bool(key, value)?),
                "mem-merge" => self.mem_merge = Some(parse_bool(key, value)?),
                // No USB controller, VMware backdoor port, SMM or graphics in petrel: the
                // "auto" settings resolve to off, explicit "on" is refused.
                "usb" | "graphics" => require_off(key, parse_bool(key, value)?, value)?,
                "vmport" | "smm" if value != "off" && value != "auto" => {
                    return Err(unsupported(key, value));
                }
                _ => {}
            }
        }
        Ok(None)
    }

    /// `-enable-kvm`, which QEMU implements as `-machine accel=kvm`.
    pub fn enable_kvm(&mut self, loc: &Loc) {
        self.machine_accel = Some(("kvm".to_owned(), loc.clone()));
    }

    /// Parses one `-accel` argument; returns the list asked for by `help`.
    pub fn add_accel(&mut self, arg: &str, loc: &Loc) -> Result<Option<ListTopic>, ArgError> {
        let opts = Opts::parse(arg, Some("accel"), Syntax::QemuOpts)?;
        let accel = opts.get("accel");
        if accel.is_some_and(is_help) || opts.wants_help() {
            return Ok(Some(ListTopic::Accelerators));
        }
        opts.check_known(&["accel", "kernel-irqchip"])?;
        let accel = accel.ok_or(ArgError::MissingParameter("accel"))?;
        if let Some(value) = opts.get("kernel-irqchip") {
            kernel_irqchip(value)?;
        }
        self.accel_options.push((accel.to_owned(), loc.clone()));
        Ok(None)
    }

    /// Whether `-smp` should prefer sockets, as machine types before 6.2 do.
    pub fn prefers_sockets(&self) -> bool {
        matches!(self.kind, Some((_, Some(v))) if v < CORES_PREFERRED_SINCE)
    }

    /// The final machine, once the accelerator choice is checked.
    ///
    /// Like QEMU, an accelerator list is tried in order and the first that works is used; the
    /// only one that works in petrel is KVM, so a list is accepted when it names KVM anywhere.
    pub fn resolve(&self) -> Result<MachineConfig, CliError> {
        match (&self.machine_accel, self.accel_options.first()) {
            (Some(_), Some(_)) => return Err(CliError::AccelConflict),
            (Some((list, loc)), None) if !list.split(':').any(|a| a == "kvm") => {
                return Err(loc.err(ArgError::KvmOnly));
            }
            (None, Some((_, loc))) if !self.accel_options.iter().any(|(a, _)| a == "kvm") => {
                return Err(loc.err(ArgError::KvmOnly));
            }
            _ => {}
        }
        let (kind, version) = self.kind.unwrap_or((MachineKind::Q35, None));
        Ok(MachineConfig {
            kind,
            version,
            dump_guest_core: self.dump_guest_core.unwrap_or(true),
            mem_merge: self.mem_merge.unwrap_or(true),
        })
    }
}

/// The board and version a machine type name stands for.
///
/// Versioned names are accepted from the oldest QEMU had (2.4 for Q35, 1.4 for i440FX) on,
/// including versions newer than any petrel knows, so scripts written for a newer QEMU work.
fn machine_type(name: &str) -> Option<(MachineKind, Option<MachineVersion>)> {
    let (kind, version, oldest) = match name {
        "q35" => return Some((MachineKind::Q35, None)),
        "pc" => return Some((MachineKind::Pc, None)),
        _ => {
            if let Some(v) = name.strip_prefix("pc-q35-") {
                (MachineKind::Q35, v, MachineVersion { major: 2, minor: 4 })
            } else {
                let v = name.strip_prefix("pc-i440fx-")?;
                (MachineKind::Pc, v, MachineVersion { major: 1, minor: 4 })
            }
        }
    };
    let (major, minor) = version.split_once('.')?;
    let version = MachineVersion {
        major: decimal(major)?,
        minor: decimal(minor)?,
    };
    (version >= oldest).then_some((kind, Some(version)))
}

/// A plain decimal number.
fn decimal(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `kernel-irqchip`: petrel always uses KVM's full in-kernel irqchip, QEMU's default `on`.
fn kernel_irqchip(value: &str) -> Result<(), ArgError> {
    if value == "on" {
        Ok(())
    } else {
        Err(unsupported("kernel-irqchip", value))
    }
}

/// Accepts a boolean feature switch only when it is off.
fn require_off(key: &str, on: bool, value: &str) -> Result<(), ArgError> {
    if on {
        Err(unsupported(key, value))
    } else {
        Ok(())
    }
}

fn unsupported(key: &str, value: &str) -> ArgError {
    ArgError::UnsupportedValue {
        key: key.to_owned(),
        value: value.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(option: &str, arg: &str) -> Loc {
        Loc {
            option: option.into(),
            arg: arg.into(),
        }
    }

    fn machine(args: &[&str]) -> Result<MachineArgs, ArgError> {
        let mut m = MachineArgs::default();
        for a in args {
            assert_eq!(m.merge_machine(a, &loc("-M", a))?, None);
        }
        Ok(m)
    }

    fn resolved(args: &[&str]) -> MachineConfig {
        machine(args).unwrap().resolve().unwrap()
    }

    #[test]
    fn default_is_q35() {
        assert_eq!(
            MachineArgs::default().resolve(),
            Ok(MachineConfig {
                kind: MachineKind::Q35,
                version: None,
                dump_guest_core: true,
                mem_merge: true
            })
        );
    }

    #[test]
    fn types() {
        assert_eq!(resolved(&["q35"]).kind, MachineKind::Q35);
        assert_eq!(resolved(&["pc"]).kind, MachineKind::Pc);
        assert_eq!(resolved(&["type=pc"]).kind, MachineKind::Pc);
        let q = resolved(&["pc-q35-7.2"]);
        assert_eq!(q.kind, MachineKind::Q35);
        assert_eq!(q.version, Some(MachineVersion { major: 7, minor: 2 }));
        let p = resolved(&["pc-i440fx-2.12"]);
        assert_eq!(p.kind, MachineKind::Pc);
        assert_eq!(
            p.version,
            Some(MachineVersion {
                major: 2,
                minor: 12
            })
        );
        assert_eq!(resolved(&["q35", "pc"]).kind, MachineKind::Pc);
        // A later -machine without type keeps the earlier type.
        assert_eq!(resolved(&["pc", "accel=kvm"]).kind, MachineKind::Pc);
    }

    #[test]
    fn unsupported_types() {
        for t in [
            "microvm",
            "isapc",
            "none",
            "Q35",
            "pc-q35-",
            "pc-q35-7",
            "pc-q35-7.x",
            "pc-q35-2.3",
            "pc-i440fx-1.3",
            "pc-1.0",
            "pc-q35-7.2.1",
        ] {
            assert_eq!(
                machine(&[t]).map(|_| ()),
                Err(ArgError::UnsupportedMachine(t.into())),
                "{t}"
            );
        }
        assert_eq!(
            machine(&["type="]).map(|_| ()),
            Err(ArgError::UnsupportedMachine(String::new()))
        );
    }

    #[test]
    fn help() {
        let mut m = MachineArgs::default();
        let l = loc("-M", "x");
        assert_eq!(m.merge_machine("help", &l), Ok(Some(ListTopic::Machines)));
        assert_eq!(m.merge_machine("?", &l), Ok(Some(ListTopic::Machines)));
        assert_eq!(
            m.merge_machine("type=help", &l),
            Ok(Some(ListTopic::Machines))
        );
        assert_eq!(
            m.merge_machine("foo,help", &l),
            Ok(Some(ListTopic::Machines))
        );
        assert_eq!(
            m.merge_machine("q35,help", &l),
            Ok(Some(ListTopic::MachineProperties))
        );
    }

    #[test]
    fn smp_preference_follows_version() {
        assert!(!machine(&[]).unwrap().prefers_sockets());
        assert!(!machine(&["q35"]).unwrap().prefers_sockets());
        assert!(!machine(&["pc-q35-6.2"]).unwrap().prefers_sockets());
        assert!(machine(&["pc-q35-6.1"]).unwrap().prefers_sockets());
        assert!(machine(&["pc-i440fx-5.2"]).unwrap().prefers_sockets());
    }

    #[test]
    fn accepted_properties() {
        let m = resolved(&[
            "q35,accel=kvm,kernel-irqchip=on,usb=off,vmport=off,smm=auto,graphics=off",
            "dump-guest-core=off,mem_merge=no",
        ]);
        assert!(!m.dump_guest_core);
        assert!(!m.mem_merge);
        assert!(resolved(&["kernel_irqchip=on,vmport=auto,smm=off"]).mem_merge);
    }

    #[test]
    fn refused_properties() {
        for (arg, key, value) in [
            ("usb=on", "usb", "on"),
            ("graphics=on", "graphics", "on"),
            ("vmport=on", "vmport", "on"),
            ("smm=on", "smm", "on"),
            ("smm=maybe", "smm", "maybe"),
            ("kernel-irqchip=split", "kernel-irqchip", "split"),
            ("kernel-irqchip=off", "kernel-irqchip", "off"),
        ] {
            assert_eq!(
                machine(&[arg]).map(|_| ()),
                Err(ArgError::UnsupportedValue {
                    key: key.into(),
                    value: value.into()
                }),
                "{arg}"
            );
        }
        assert_eq!(
            machine(&["q35,hpet=off"]).map(|_| ()),
            Err(ArgError::UnknownParameter("hpet".into()))
        );
        assert_eq!(
            machine(&["q35,mem-merge=maybe"]).map(|_| ()),
            Err(ArgError::ExpectsBool("mem-merge".into()))
        );
        assert_eq!(
            machine(&["q35,usb"]).map(|_| ()),
            Err(ArgError::ExpectedEquals("usb".into()))
        );
    }

    #[test]
    fn machine_accel_lists() {
        assert!(machine(&["accel=kvm"]).unwrap().resolve().is_ok());
        assert!(machine(&["accel=kvm:tcg"]).unwrap().resolve().is_ok());
        assert!(machine(&["accel=tcg:kvm"]).unwrap().resolve().is_ok());
        assert_eq!(
            machine(&["accel=tcg"]).unwrap().resolve(),
            Err(loc("-M", "accel=tcg").err(ArgError::KvmOnly))
        );
        // The last accel= wins.
        assert!(machine(&["accel=tcg", "accel=kvm"])
            .unwrap()
            .resolve()
            .is_ok());
    }

    #[test]
    fn accel_option() {
        let mut m = MachineArgs::default();
        let l = loc("-accel", "tcg");
        assert_eq!(m.add_accel("tcg", &l), Ok(None));
        assert_eq!(m.resolve(), Err(l.err(ArgError::KvmOnly)));
        assert_eq!(
            m.add_accel("kvm,kernel-irqchip=on", &loc("-accel", "kvm")),
            Ok(None)
        );
        assert!(m.resolve().is_ok());

        let mut m = MachineArgs::default();
        assert_eq!(
            m.add_accel("accel=kvm,kernel-irqchip=split", &l),
            Err(ArgError::UnsupportedValue {
                key: "kernel-irqchip".into(),
                value: "split".into()
            })
        );
        assert_eq!(
            m.add_accel("kvm,dirty-ring-size=4096", &l),
            Err(ArgError::UnknownParameter("dirty-ring-size".into()))
        );
        assert_eq!(
            m.add_accel("kernel-irqchip=on", &l),
            Err(ArgError::MissingParameter("accel"))
        );
        assert_eq!(m.add_accel("help", &l), Ok(Some(ListTopic::Accelerators)));
    }

    #[test]
    fn accel_and_machine_accel_conflict() {
        let mut m = MachineArgs::default();
        m.enable_kvm(&loc("-enable-kvm", ""));
        assert!(m.resolve().is_ok());
        m.add_accel("kvm", &loc("-accel", "kvm")).unwrap();
        assert_eq!(m.resolve(), Err(CliError::AccelConflict));
    }
}
