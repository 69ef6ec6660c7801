//! `-qmp DEV` and `-mon [chardev=]ID,mode=control`.

use super::config::ChardevBackend;
use super::error::ArgError;
use super::opts::{Opts, Syntax};
use super::serial::{tcp, unix};

/// A `-mon` before its chardev is resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MonArg {
    /// The `-chardev` id.
    pub chardev: String,
}

/// Parses a `-qmp` device: the `-serial` syntax restricted to what a monitor can use.
pub(crate) fn parse_qmp(arg: &str) -> Result<ChardevBackend, ArgError> {
    if arg == "stdio" {
        return Ok(ChardevBackend::Stdio { signal: true });
    }
    if let Some(rest) = arg.strip_prefix("unix:") {
        return unix(rest);
    }
    if let Some(rest) = arg.strip_prefix("tcp:") {
        return tcp(rest);
    }
    Err(ArgError::UnsupportedMonitor(arg.to_owned()))
}

/// Parses `-mon`. QEMU's default mode is `readline` (HMP), which petrel does not have.
pub(crate) fn parse_mon(arg: &str) -> Result<MonArg, ArgError> {
    let opts = Opts::parse(arg, Some("chardev"), Syntax::QemuOpts)?;
    opts.check_known(&["chardev", "mode", "pretty"])?;
    let chardev = opts
        .get("chardev")
        .ok_or(ArgError::MissingParameter("chardev"))?;
    match opts.get("mode").unwrap_or("readline") {
        "control" => {}
        "readline" => return Err(ArgError::HmpMonitor),
        other => {
            return Err(ArgError::UnsupportedValue {
                key: "mode".into(),
                value: other.into(),
            })
        }
    }
    // Indented replies are not implemented: refuse rather than ignore them.
    if opts.get_bool("pretty")? == Some(true) {
        return Err(ArgError::UnsupportedValue {
            key: "pretty".into(),
            value: "on".into(),
        });
    }
    Ok(MonArg {
        chardev: chardev.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qmp_devices() {
        assert_eq!(
            parse_qmp("stdio"),
            Ok(ChardevBackend::Stdio { signal: true })
        );
        assert_eq!(
            parse_qmp("unix:/tmp/q.sock,server=on,wait=off"),
            Ok(ChardevBackend::UnixSocket {
                path: "/tmp/q.sock".into(),
                server: true,
                wait: false
            })
        );
        assert_eq!(
            parse_qmp("tcp:127.0.0.1:4444,server=on,wait=off"),
            Ok(ChardevBackend::TcpSocket {
                host: "127.0.0.1".into(),
                port: 4444,
                server: true,
                wait: false
            })
        );
        assert_eq!(
            parse_qmp("vc"),
            Err(ArgError::UnsupportedMonitor("vc".into()))
        );
    }

    #[test]
    fn mon_needs_control_mode() {
        assert_eq!(
            parse_mon("chardev=mon0,mode=control,pretty=off"),
            Ok(MonArg {
                chardev: "mon0".into()
            })
        );
        assert_eq!(
            parse_mon("mon0,mode=control"),
            Ok(MonArg {
                chardev: "mon0".into()
            })
        );
        assert_eq!(
            parse_mon("mon0,mode=control,pretty=on"),
            Err(ArgError::UnsupportedValue {
                key: "pretty".into(),
                value: "on".into()
            })
        );
        assert_eq!(parse_mon("chardev=mon0"), Err(ArgError::HmpMonitor));
        assert_eq!(
            parse_mon("mode=control"),
            Err(ArgError::MissingParameter("chardev"))
        );
    }
}
