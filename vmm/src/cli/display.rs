//! `-display`: petrel has no graphical console, so `none` is the only display.

use super::config::{DisplayConfig, ListTopic};
use super::error::ArgError;
use super::opts::{is_help, Opts, Parsed, Syntax};

/// Parses a `-display` argument (keyval syntax, implied key `type`).
pub(crate) fn parse_display(arg: &str) -> Result<Parsed<DisplayConfig>, ArgError> {
    // QEMU's legacy `-display vnc=:0` form is not keyval; name it rather than reporting a
    // missing type.
    if arg == "vnc" || arg.starts_with("vnc=") || arg.starts_with("vnc,") {
        return Err(ArgError::UnsupportedDisplay("vnc".to_owned()));
    }
    let opts = Opts::parse(arg, Some("type"), Syntax::Keyval)?;
    let display = opts.get("type");
    if display.is_some_and(is_help) || opts.wants_help() {
        return Ok(Parsed::List(ListTopic::Displays));
    }
    match display {
        Some("none") => {
            opts.check_known(&["type"])?;
            Ok(Parsed::Value(DisplayConfig::None))
        }
        Some(other) => Err(ArgError::UnsupportedDisplay(other.to_owned())),
        None => Err(ArgError::MissingParameter("type")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn none_only() {
        assert_eq!(
            parse_display("none"),
            Ok(Parsed::Value(DisplayConfig::None))
        );
        assert_eq!(
            parse_display("type=none"),
            Ok(Parsed::Value(DisplayConfig::None))
        );
        for d in [
            "gtk",
            "sdl",
            "curses",
            "vnc=:0",
            "egl-headless",
            "spice-app",
        ] {
            let name = d.split('=').next().unwrap_or(d);
            assert_eq!(
                parse_display(d),
                Err(ArgError::UnsupportedDisplay(name.into())),
                "{d}"
            );
        }
        assert_eq!(
            parse_display("none,gl=on"),
            Err(ArgError::UnknownParameter("gl".into()))
        );
        assert_eq!(parse_display(""), Err(ArgError::MissingParameter("type")));
    }

    #[test]
    fn help() {
        assert_eq!(parse_display("help"), Ok(Parsed::List(ListTopic::Displays)));
        assert_eq!(parse_display("?"), Ok(Parsed::List(ListTopic::Displays)));
    }
}
