//! The command line, compatible with `qemu-system-x86_64` for the options petrel implements.
//!
//! [`parse`] turns argv into an [`Action`]: run a VM described by a [`Config`], or print a
//! text ([`help_text`], [`version_text`], [`list_text`]) and exit. Options QEMU has and petrel
//! lacks are rejected with QEMU's wording (`-drive: invalid option`), never ignored.
//!
//! Layout: `config` holds the output types and `error` the errors; `options` is the option
//! table, `opts` the `key=value` syntax and `size` the size syntax; one module per option
//! family (`memory`, `smp`, `machine`, `cpu`, `chardev`, `serial`, `display`, `name`,
//! `uuid`); `ports` the rules across character devices, `builder` the assembly, and `help`
//! the printed texts.

mod blockdev;
mod builder;
mod chardev;
pub mod config;
mod cpu;
mod device;
mod display;
mod drive;
pub mod error;
mod help;
mod machine;
mod memory;
mod monitor;
mod name;
mod netdev;
mod options;
mod opts;
pub mod params;
mod ports;
mod serial;
mod size;
mod smp;
mod uuid;

#[cfg(test)]
mod tests;

// The types live in `config` and `error`; the ones the VMM names most are also here. (A
// binary crate flags re-exports it does not use, so not every type is repeated.)
pub use config::{Action, ChardevBackend, ChardevSpec, Config};
pub use help::{help_text, list_text, version_text};
pub use netdev::check_netdev;

use builder::Builder;
use error::{CliError, Loc};
use options::Token;

/// Parses the command line, without argv\[0\].
///
/// Options are acted on in order, so `-help`, `-version` and the `help` lists return as soon
/// as they are reached, as in QEMU; but an unknown option or a missing argument anywhere is
/// reported first, as QEMU's first pass over argv does. The error's `Display` starts with the
/// option concerned; print it as `petrel: {error}` and exit with status 1.
///
/// Where options repeat, the last `-kernel`, `-initrd`, `-append`, `-cpu`, `-uuid` and
/// `-pidfile` win; `-m`, `-smp`, `-name` and `-machine` merge key by key; `-serial` and
/// `-chardev` add devices.
pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Action, CliError> {
    let mut builder = Builder::default();
    for token in options::tokenize(args)? {
        match token {
            Token::Stray(word) => return Err(CliError::StrayArgument(word)),
            Token::Option { opt, spelled, arg } => {
                let loc = Loc {
                    option: spelled,
                    arg: arg.unwrap_or_default(),
                };
                if let Some(action) = builder.apply(opt, loc)? {
                    return Ok(action);
                }
            }
        }
    }
    Ok(Action::Run(Box::new(builder.finish()?)))
}
