//! The schema as data: the shapes of the static tables that `build.rs` generates from
//! `qmp/schema/*.json`, read by [`super::validate`] and [`super::introspect`].
//!
//! Every type the schema can name has an entry in [`TYPES`], indexed by [`TypeId`]: the
//! builtins, every named type, and the types QAPI makes up on the way (the argument objects of
//! commands and events, the kind enums and wrapper objects of simple unions, array types and
//! the empty object). Object members are flattened: a struct's base members come first, then
//! its own, as QEMU's introspection lists them.

/// An index into [`TYPES`].
pub(crate) type TypeId = usize;

/// The builtin types of QAPI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Builtin {
    Str,
    Int,
    Int8,
    Int16,
    Int32,
    Int64,
    Uint8,
    Uint16,
    Uint32,
    Uint64,
    Size,
    Number,
    Bool,
    Null,
    Any,
}

impl Builtin {
    /// The `json-type` of the builtin in `query-qmp-schema`.
    pub(crate) fn json_type(self) -> &'static str {
        match self {
            Builtin::Str => "string",
            Builtin::Number => "number",
            Builtin::Bool => "boolean",
            Builtin::Null => "null",
            Builtin::Any => "value",
            _ => "int",
        }
    }

    /// Whether values are JSON integers (every `int*`, `uint*` and `size`).
    pub(crate) fn is_integer(self) -> bool {
        self.json_type() == "int"
    }
}

/// What a type is.
#[derive(Debug)]
pub(crate) enum TypeKind {
    /// A builtin.
    Builtin(Builtin),
    /// An enumeration: its values, in order.
    Enum(&'static [&'static str]),
    /// `[T]`.
    Array(TypeId),
    /// A struct, a union (flat or simple), or an implicit argument object.
    Object(Object),
    /// An alternate: the types of its branches.
    Alternate(&'static [TypeId]),
}

/// The members of an object type; for a union also its tag and variants.
#[derive(Debug)]
pub(crate) struct Object {
    /// All members, base members first.
    pub members: &'static [Member],
    /// The discriminator member of a union.
    pub tag: Option<&'static str>,
    /// The branches of a union; discriminator values without one add no members.
    pub variants: &'static [Variant],
}

/// A member of an object type.
#[derive(Debug)]
pub(crate) struct Member {
    /// The wire name.
    pub name: &'static str,
    /// Its type.
    pub ty: TypeId,
    /// Whether it may be absent.
    pub optional: bool,
    /// Its features (e.g. `deprecated`).
    pub features: &'static [&'static str],
}

/// A union branch.
#[derive(Debug)]
pub(crate) struct Variant {
    /// The discriminator value.
    pub case: &'static str,
    /// The object type whose members it adds.
    pub ty: TypeId,
}

/// An entry of [`TYPES`].
#[derive(Debug)]
pub(crate) struct TypeInfo {
    /// The schema name (made-up names such as `q_obj_cpu-arg` for implicit types).
    pub name: &'static str,
    /// What it is.
    pub kind: TypeKind,
    /// Its features.
    pub features: &'static [&'static str],
}

/// A command.
#[derive(Debug)]
pub(crate) struct CommandInfo {
    /// The wire name.
    pub name: &'static str,
    /// The arguments: an object type (the empty object when there are none).
    pub arg_type: TypeId,
    /// The return type (the empty object when there is none).
    pub ret_type: TypeId,
    /// `'allow-oob': true`.
    pub allow_oob: bool,
    /// `'gen': false`: arguments beyond the declared ones are passed to the handler as they
    /// are instead of being rejected.
    pub extra_args: bool,
    /// Its features.
    pub features: &'static [&'static str],
    /// Position among the schema's commands and events, in definition order.
    pub order: u32,
}

/// An event.
#[derive(Debug)]
pub(crate) struct EventInfo {
    /// The wire name.
    pub name: &'static str,
    /// The data: an object type (the empty object when there is none).
    pub arg_type: TypeId,
    /// Its features.
    pub features: &'static [&'static str],
    /// Position among the schema's commands and events, in definition order.
    pub order: u32,
}

include!(concat!(env!("OUT_DIR"), "/qapi_tables.rs"));

/// The command named `name`.
pub(crate) fn command(name: &str) -> Option<&'static CommandInfo> {
    COMMANDS.iter().find(|c| c.name == name)
}

/// The event named `name`.
#[cfg(test)]
pub(crate) fn event(name: &str) -> Option<&'static EventInfo> {
    EVENTS.iter().find(|e| e.name == name)
}

/// The named (non-implicit) type `name`.
#[cfg(test)]
pub(crate) fn type_named(name: &str) -> Option<TypeId> {
    TYPES.iter().position(|t| t.name == name)
}
