//! The QAPI schema and the code generated from it.
//!
//! The generator (`qmp/build.rs`) reads `qmp/schema/qapi-schema.json` and the files it
//! includes, checks them, and writes into `OUT_DIR`: the types ([`types`]), one marker type per
//! command implementing [`Command`] ([`commands`]), one struct per event implementing
//! [`Event`] ([`events`]), and the tables describing every type, command and event that
//! [`validate::validate_arguments`] and [`introspect::schema_info`] read.

use serde::de::DeserializeOwned;
use serde::Serialize;

mod de;
pub mod introspect;
pub(crate) mod meta;
pub mod validate;

#[cfg(test)]
mod tests;

/// The types of the schema, one Rust type per QAPI type.
///
/// Naming:
/// - types keep their schema names (`StatusInfo`, `ACPIOSTInfo`), except names of the Rust
///   prelude, which get `Qapi` before them (`String` → `QapiString`);
/// - members become snake_case fields renamed back on the wire (`io-status` → `io_status`,
///   `UUID` → `uuid`, `type` → `r#type`); when two members of a type snake-case alike, the
///   later one gets `_2` (`CpuInfo`'s `pc` and `PC` → `pc`, `pc_2`);
/// - a struct's base members are inlined, before its own;
/// - optional members are `Option`s, left out when `None`; where the type takes `null` (`any`,
///   an alternate with a `null` branch) a present `null` is `Some`, as it means something else
///   than absence;
/// - builtins: `str` → `String`, `int`/`int64` → `i64`, `intN`/`uintN` → `iN`/`uN`, `size` →
///   `u64`, `number` → `f64`, `bool`, `any` → `serde_json::Value`, `null` → `()`; `['T']` →
///   `Vec<T>`; types that contain themselves are boxed where the cycle needs it;
/// - enum values become CamelCase variants (`RunState::Running`, `io-error` → `IoError`, `1` →
///   `V1`), with `as_str()` and `ALL`;
/// - a flat union is a struct of its common members with a flattened `…Branch` enum, internally
///   tagged by the discriminator (`BlockdevOptions { node_name, .., branch:
///   BlockdevOptionsBranch::Qcow2(..) }`), or that enum alone when the discriminator is the only
///   common member (`GuestPanicInformation`); discriminator values without a branch are empty
///   variants;
/// - a simple union is an enum tagged `{"type": …, "data": …}` (`InputEvent::Key(..)`);
/// - an alternate is an untagged enum (`BlockdevRef::Reference(String)`).
pub mod types {
    include!(concat!(env!("OUT_DIR"), "/qapi_types.rs"));
}

/// One marker type per command (`query-status` → [`commands::QueryStatus`], `system_reset` →
/// `SystemReset`), implementing [`Command`], and [`commands::ALL_COMMANDS`].
///
/// A command whose CamelCase name is taken gets `Legacy` after it: the legacy aliases
/// `block_stream`, `block_job_set_speed` and `block_job_cancel` are `BlockStreamLegacy` and so
/// on. Arguments declared inline get a struct named after the marker (`QmpCapabilitiesArgs`);
/// a command whose `data` is a named type takes that type (`netdev_add` takes
/// [`types::Netdev`]); a command without arguments takes [`Empty`]. `device_add`, `'gen':
/// false` in the schema, keeps the arguments it does not declare in `extra`.
pub mod commands {
    include!(concat!(env!("OUT_DIR"), "/qapi_commands.rs"));
}

/// One struct per event (`SHUTDOWN` → [`events::Shutdown`], `RTC_CHANGE` →
/// [`events::RtcChange`]) implementing [`Event`], and [`events::ALL_EVENTS`]. An event without
/// data is an empty struct (`Stop {}`) whose [`Event::HAS_DATA`] is false.
pub mod events {
    include!(concat!(env!("OUT_DIR"), "/qapi_events.rs"));
}

/// A QMP command as the schema defines it.
pub trait Command {
    /// The wire name, e.g. `query-status`.
    const NAME: &'static str;
    /// Whether the schema allows `exec-oob` for it.
    const ALLOW_OOB: bool = false;
    /// The arguments; an empty struct for commands that take none.
    type Args: DeserializeOwned + Send + 'static;
    /// What a successful call returns; [`Empty`] for commands that return `{}`.
    type Returns: Serialize;
}

/// A QMP event as the schema defines it.
pub trait Event: Serialize {
    /// The wire name, e.g. `SHUTDOWN`.
    const NAME: &'static str;
    /// Whether the schema gives the event data. QEMU leaves `data` out of events that have
    /// none, and sends it (possibly `{}`) for the others.
    const HAS_DATA: bool = true;
}

/// The `{}` that commands without data return, and the arguments of commands that take none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}
