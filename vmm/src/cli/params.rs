//! The `key=value` parameters of each QemuOpts-style option, as `query-command-line-options`
//! reports them. Option names are QEMU's QemuOptsList names (`memory` for `-m`, `smp-opts`
//! for `-smp`). A test checks every parameter here against the parser, so the table cannot
//! claim a parameter the parser rejects.

/// A parameter's type, as QEMU's CommandLineParameterType names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamType {
    /// Free text.
    String,
    /// on/off.
    Boolean,
    /// An integer.
    Number,
    /// A size with optional suffix.
    Size,
}

/// (option, [(parameter, type)]).
pub type OptionParams = (&'static str, &'static [(&'static str, ParamType)]);

use ParamType::{Boolean, Number, Size, String as Str};

/// Every option with parameters, in QEMU's naming.
pub const OPTION_PARAMETERS: &[OptionParams] = &[
    (
        "memory",
        &[("size", Size), ("slots", Number), ("maxmem", Size)],
    ),
    (
        "smp-opts",
        &[
            ("cpus", Number),
            ("maxcpus", Number),
            ("sockets", Number),
            ("dies", Number),
            ("clusters", Number),
            ("cores", Number),
            ("threads", Number),
        ],
    ),
    (
        "machine",
        &[
            ("type", Str),
            ("accel", Str),
            ("kernel-irqchip", Str),
            ("usb", Boolean),
            ("dump-guest-core", Boolean),
            ("mem-merge", Boolean),
            ("vmport", Str),
            ("smm", Str),
            ("graphics", Boolean),
        ],
    ),
    ("accel", &[("accel", Str), ("kernel-irqchip", Str)]),
    (
        "name",
        &[("guest", Str), ("process", Str), ("debug-threads", Boolean)],
    ),
    (
        "chardev",
        &[
            ("backend", Str),
            ("id", Str),
            ("path", Str),
            ("host", Str),
            ("port", Str),
            ("fd", Str),
            ("server", Boolean),
            ("wait", Boolean),
            ("signal", Boolean),
            ("append", Boolean),
        ],
    ),
    (
        "mon",
        &[("chardev", Str), ("mode", Str), ("pretty", Boolean)],
    ),
    ("display", &[("type", Str)]),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::error::ArgError;

    fn sample(t: ParamType) -> &'static str {
        match t {
            Str => "x",
            Boolean => "on",
            Number => "1",
            Size => "64M",
        }
    }

    /// The parser's verdict on one parameter: anything but "unknown parameter" is fine here
    /// (a sample value may be rejected for what it is, not for its key).
    fn known(option: &str, key: &str, t: ParamType) -> bool {
        let v = sample(t);
        let res: Result<(), ArgError> = match option {
            "memory" => crate::cli::memory::MemoryArgs::default().merge(&format!("{key}={v}")),
            "smp-opts" => crate::cli::smp::SmpArgs::default().merge(&format!("{key}={v}")),
            "name" => crate::cli::name::NameArgs::default().merge(&format!("{key}={v}")),
            "machine" | "accel" => {
                let loc = crate::cli::error::Loc {
                    option: "-M".into(),
                    arg: String::new(),
                };
                let mut m = crate::cli::machine::MachineArgs::default();
                if option == "machine" {
                    m.merge_machine(&format!("q35,{key}={v}"), &loc).map(|_| ())
                } else {
                    m.add_accel(&format!("kvm,{key}={v}"), &loc).map(|_| ())
                }
            }
            "chardev" => crate::cli::chardev::parse_chardev(&format!("socket,id=c,{key}={v}"))
                .map(|_| ())
                .or_else(|e| match e {
                    ArgError::UnknownParameter(_) => {
                        crate::cli::chardev::parse_chardev(&format!("stdio,id=c,{key}={v}"))
                            .map(|_| ())
                    }
                    other => Err(other),
                })
                .or_else(|e| match e {
                    ArgError::UnknownParameter(_) => {
                        crate::cli::chardev::parse_chardev(&format!("file,id=c,path=p,{key}={v}"))
                            .map(|_| ())
                    }
                    other => Err(other),
                }),
            "mon" => crate::cli::monitor::parse_mon(&format!("chardev=c,mode=control,{key}={v}"))
                .map(|_| ()),
            "display" => crate::cli::display::parse_display(&format!("{key}={v}")).map(|_| ()),
            other => panic!("no parser for option {other}"),
        };
        !matches!(res, Err(ArgError::UnknownParameter(k)) if k == key)
    }

    #[test]
    fn every_listed_parameter_is_accepted_by_its_parser() {
        for (option, params) in OPTION_PARAMETERS {
            for (key, t) in *params {
                assert!(known(option, key, *t), "-{option}: parser rejects '{key}'");
            }
        }
    }
}
