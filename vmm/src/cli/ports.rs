//! The serial ports a command line ends up with, and the rules that span all character
//! devices: the default port, chardev references, one stdio user, and `-daemonize`.
//!
//! The checks run in QEMU's creation order: `-chardev` backends first, then the serial ports,
//! so an error names the second of two conflicting options.

use super::config::{ChardevBackend, ChardevSpec};
use super::error::{ArgError, CliError, Loc};
use super::serial::SerialArg;

/// QEMU creates ISA serial ports COM1 to COM4 only.
const MAX_SERIALS: usize = 4;

/// Everything that decides the serial ports.
pub(crate) struct PortInputs<'a> {
    /// `-serial` options in order.
    pub serials: &'a [(Loc, SerialArg)],
    /// `-chardev` options in order (ids already known to be unique).
    pub chardevs: &'a [(Loc, String, ChardevBackend)],
    /// `-nodefaults`.
    pub nodefaults: bool,
    /// `-nographic`.
    pub nographic: bool,
    /// `-display none`.
    pub display_none: bool,
    /// `-daemonize`.
    pub daemonize: bool,
    /// QMP monitors in order, each with its device; they claim stdio and chardevs like
    /// serial ports do, but are not ports.
    pub monitors: &'a [(Loc, ChardevSpec)],
}

/// The serial ports, COM1 first.
///
/// Without `-serial` or `-nodefaults` there is one default port:
/// - with `-nographic`, on stdio with Ctrl-C passed to the guest (QEMU's `mon:stdio`);
/// - with `-display none` or `-daemonize`, on null, as in QEMU where no console would show it;
/// - otherwise on stdio. QEMU would use a `vc` text console in its graphical window; petrel
///   has no graphical console yet, so the terminal is the closest place a user can see.
pub(crate) fn resolve_serials(inputs: &PortInputs<'_>) -> Result<Vec<ChardevSpec>, CliError> {
    let wants_default = inputs.serials.is_empty() && !inputs.nodefaults;
    if inputs.daemonize && inputs.nographic && wants_default {
        return Err(CliError::NographicWithDaemonize);
    }

    let mut stdio_owner = None;
    for (loc, _, backend) in inputs.chardevs {
        if matches!(backend, ChardevBackend::Stdio { .. }) {
            claim_stdio(&mut stdio_owner, loc, inputs.daemonize)?;
        }
    }

    let mut ports = Vec::new();
    let mut used_chardevs: Vec<&str> = Vec::new();
    for (loc, arg) in inputs.serials {
        let SerialArg::Port(spec) = arg else {
            continue;
        };
        if ports.len() == MAX_SERIALS {
            return Err(loc.err(ArgError::TooManySerials));
        }
        match spec {
            ChardevSpec::Chardev(id) => claim_chardev(&mut used_chardevs, inputs, loc, id)?,
            ChardevSpec::Backend(ChardevBackend::Stdio { .. }) => {
                claim_stdio(&mut stdio_owner, loc, inputs.daemonize)?;
            }
            ChardevSpec::Backend(_) => {}
        }
        ports.push(spec.clone());
    }

    let mut monitor_on_stdio = false;
    for (loc, spec) in inputs.monitors {
        match spec {
            ChardevSpec::Chardev(id) => {
                claim_chardev(&mut used_chardevs, inputs, loc, id)?;
                monitor_on_stdio |= inputs
                    .chardevs
                    .iter()
                    .any(|(_, known, b)| known == id && matches!(b, ChardevBackend::Stdio { .. }));
            }
            ChardevSpec::Backend(ChardevBackend::Stdio { .. }) => {
                claim_stdio(&mut stdio_owner, loc, inputs.daemonize)?;
                monitor_on_stdio = true;
            }
            ChardevSpec::Backend(_) => {}
        }
    }

    if wants_default {
        let backend = if inputs.nographic {
            ChardevBackend::Stdio { signal: false }
        } else if inputs.display_none || inputs.daemonize || monitor_on_stdio {
            // A monitor on stdio leaves the default port nowhere to show.
            ChardevBackend::Null
        } else {
            ChardevBackend::Stdio { signal: true }
        };
        if let (ChardevBackend::Stdio { .. }, Some(owner)) = (&backend, stdio_owner) {
            return Err(owner.err(ArgError::StdioUsedByDefaultSerial));
        }
        ports.push(ChardevSpec::Backend(backend));
    }
    Ok(ports)
}

/// Records `id` as used by the frontend at `loc`: it must exist and have no other user.
fn claim_chardev<'a>(
    used: &mut Vec<&'a str>,
    inputs: &PortInputs<'_>,
    loc: &Loc,
    id: &'a str,
) -> Result<(), CliError> {
    if !inputs.chardevs.iter().any(|(_, known, _)| known == id) {
        return Err(loc.err(ArgError::UnknownChardev(id.to_owned())));
    }
    if used.contains(&id) {
        return Err(loc.err(ArgError::ChardevInUse(id.to_owned())));
    }
    used.push(id);
    Ok(())
}

/// Records `loc` as the one user of stdio.
fn claim_stdio<'a>(
    owner: &mut Option<&'a Loc>,
    loc: &'a Loc,
    daemonize: bool,
) -> Result<(), CliError> {
    if daemonize {
        return Err(loc.err(ArgError::StdioWithDaemonize));
    }
    if owner.is_some() {
        return Err(loc.err(ArgError::StdioInUse));
    }
    *owner = Some(loc);
    Ok(())
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

    fn serial(arg: &str) -> (Loc, SerialArg) {
        (
            loc("-serial", arg),
            super::super::serial::parse_serial(arg).unwrap(),
        )
    }

    fn inputs<'a>(
        serials: &'a [(Loc, SerialArg)],
        chardevs: &'a [(Loc, String, ChardevBackend)],
    ) -> PortInputs<'a> {
        PortInputs {
            serials,
            chardevs,
            nodefaults: false,
            nographic: false,
            display_none: false,
            daemonize: false,
            monitors: &[],
        }
    }

    const STDIO: ChardevSpec = ChardevSpec::Backend(ChardevBackend::Stdio { signal: true });

    #[test]
    fn defaults() {
        let none = inputs(&[], &[]);
        assert_eq!(resolve_serials(&none), Ok(vec![STDIO]));
        let nographic = PortInputs {
            nographic: true,
            ..inputs(&[], &[])
        };
        assert_eq!(
            resolve_serials(&nographic),
            Ok(vec![ChardevSpec::Backend(ChardevBackend::Stdio {
                signal: false
            })])
        );
        let display_none = PortInputs {
            display_none: true,
            ..inputs(&[], &[])
        };
        assert_eq!(
            resolve_serials(&display_none),
            Ok(vec![ChardevSpec::Backend(ChardevBackend::Null)])
        );
        let daemon = PortInputs {
            daemonize: true,
            ..inputs(&[], &[])
        };
        assert_eq!(
            resolve_serials(&daemon),
            Ok(vec![ChardevSpec::Backend(ChardevBackend::Null)])
        );
        let nodefaults = PortInputs {
            nodefaults: true,
            nographic: true,
            ..inputs(&[], &[])
        };
        assert_eq!(resolve_serials(&nodefaults), Ok(vec![]));
    }

    #[test]
    fn none_takes_no_port_and_removes_the_default() {
        let s = [serial("none")];
        assert_eq!(resolve_serials(&inputs(&s, &[])), Ok(vec![]));
        let s = [serial("none"), serial("stdio")];
        assert_eq!(resolve_serials(&inputs(&s, &[])), Ok(vec![STDIO]));
    }

    #[test]
    fn at_most_four_ports() {
        let s: Vec<_> = (0..5).map(|_| serial("null")).collect();
        assert_eq!(
            resolve_serials(&inputs(&s, &[])),
            Err(loc("-serial", "null").err(ArgError::TooManySerials))
        );
        assert_eq!(resolve_serials(&inputs(&s[..4], &[])).unwrap().len(), 4);
    }

    #[test]
    fn chardev_references() {
        let c = [(
            loc("-chardev", "null,id=c0"),
            "c0".to_owned(),
            ChardevBackend::Null,
        )];
        let s = [serial("chardev:c0")];
        assert_eq!(
            resolve_serials(&inputs(&s, &c)),
            Ok(vec![ChardevSpec::Chardev("c0".into())])
        );
        let s = [serial("chardev:c1")];
        assert_eq!(
            resolve_serials(&inputs(&s, &c)),
            Err(loc("-serial", "chardev:c1").err(ArgError::UnknownChardev("c1".into())))
        );
        let s = [serial("chardev:c0"), serial("chardev:c0")];
        assert_eq!(
            resolve_serials(&inputs(&s, &c)),
            Err(loc("-serial", "chardev:c0").err(ArgError::ChardevInUse("c0".into())))
        );
    }

    #[test]
    fn one_stdio_user() {
        let s = [serial("stdio"), serial("mon:stdio")];
        assert_eq!(
            resolve_serials(&inputs(&s, &[])),
            Err(loc("-serial", "mon:stdio").err(ArgError::StdioInUse))
        );
        let stdio = ChardevBackend::Stdio { signal: true };
        let c = [
            (loc("-chardev", "stdio,id=a"), "a".to_owned(), stdio.clone()),
            (loc("-chardev", "stdio,id=b"), "b".to_owned(), stdio.clone()),
        ];
        assert_eq!(
            resolve_serials(&inputs(&[], &c)),
            Err(loc("-chardev", "stdio,id=b").err(ArgError::StdioInUse))
        );
        let s = [serial("stdio")];
        assert_eq!(
            resolve_serials(&inputs(&s, &c[..1])),
            Err(loc("-serial", "stdio").err(ArgError::StdioInUse))
        );
        // The default port would be a second stdio user.
        assert_eq!(
            resolve_serials(&inputs(&[], &c[..1])),
            Err(loc("-chardev", "stdio,id=a").err(ArgError::StdioUsedByDefaultSerial))
        );
        // Through its chardev, stdio has one user.
        let s = [serial("chardev:a")];
        assert!(resolve_serials(&inputs(&s, &c[..1])).is_ok());
    }

    #[test]
    fn daemonize_rules() {
        let s = [serial("stdio")];
        let i = PortInputs {
            daemonize: true,
            ..inputs(&s, &[])
        };
        assert_eq!(
            resolve_serials(&i),
            Err(loc("-serial", "stdio").err(ArgError::StdioWithDaemonize))
        );
        let c = [(
            loc("-chardev", "stdio,id=a"),
            "a".to_owned(),
            ChardevBackend::Stdio { signal: true },
        )];
        let i = PortInputs {
            daemonize: true,
            ..inputs(&[], &c)
        };
        assert_eq!(
            resolve_serials(&i),
            Err(loc("-chardev", "stdio,id=a").err(ArgError::StdioWithDaemonize))
        );
        let i = PortInputs {
            daemonize: true,
            nographic: true,
            ..inputs(&[], &[])
        };
        assert_eq!(resolve_serials(&i), Err(CliError::NographicWithDaemonize));
        // With the port redirected, -nographic is harmless, as in QEMU.
        let s = [serial("file:/tmp/log")];
        let i = PortInputs {
            daemonize: true,
            nographic: true,
            ..inputs(&s, &[])
        };
        assert!(resolve_serials(&i).is_ok());
        let i = PortInputs {
            daemonize: true,
            nographic: true,
            nodefaults: true,
            ..inputs(&[], &[])
        };
        assert_eq!(resolve_serials(&i), Ok(vec![]));
    }
}
