//! Argument checking, with QEMU's error messages.
//!
//! [`validate_arguments`] walks the arguments of a command the way QEMU's QObject input
//! visitor does: members in schema order (base members first, then the members of a union's
//! branch), the first problem wins, and a struct's unexpected members are reported when its
//! own members are done. Messages are QEMU 7.2's, word for word:
//!
//! - `Parameter 'bar' is missing`, `Parameter 'foo' is unexpected` (full path: `opts.key`,
//!   `list[0].x`);
//! - `Invalid parameter type for 'bar', expected: string` (`integer`, `number`, `boolean`,
//!   `object`, `array`, `null`; for an alternate, the alternate's type name);
//! - `Parameter 'x' expects uint64` for a `uint64`/`size` that is not an integer;
//! - `Parameter 'x' expects uint8_t` (`int8_t`, …, `uint32_t`) for an integer out of range;
//! - `Parameter 'x' does not accept value 'y'` for an enum.
//!
//! The last three name the member alone, not its path, and `null` for a list element: QEMU
//! does the same.
//!
//! Once a command's arguments pass, decoding them into its `Args` type succeeds.

use serde_json::{Map, Value};

use super::meta::{self, Builtin, Object, TypeId, TypeKind, TYPES};
use crate::error::QmpError;

/// Checks the arguments of `command` against the schema.
///
/// A command the schema does not know passes: whether it exists is the registry's business.
pub fn validate_arguments(command: &str, args: &Map<String, Value>) -> Result<(), QmpError> {
    let Some(cmd) = meta::command(command) else {
        return Ok(());
    };
    let mut v = Visitor { path: Vec::new() };
    v.object_members(cmd.arg_type, args, cmd.extra_args)
        .map_err(QmpError::generic)
}

/// Checks `value` against the schema type `name` (a named type of the schema), as if it were
/// the argument `member` of a command.
#[cfg(test)]
pub(crate) fn validate_value(name: &str, member: &str, value: &Value) -> Result<(), String> {
    let ty = meta::type_named(name).ok_or_else(|| format!("no type {name}"))?;
    let mut v = Visitor { path: Vec::new() };
    v.value(ty, Some(member), value)
}

enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

struct Visitor<'a> {
    /// The containers being visited: a member of an object, or an element of a list.
    path: Vec<Seg<'a>>,
}

type Res = Result<(), String>;

impl<'a> Visitor<'a> {
    /// The full name of `name` in the current container, like QEMU's `full_name()`.
    fn full(&self, name: Option<&str>) -> String {
        let mut s = String::new();
        for seg in &self.path {
            match seg {
                Seg::Key(k) => {
                    if !s.is_empty() {
                        s.push('.');
                    }
                    s.push_str(k);
                }
                Seg::Index(i) => s.push_str(&format!("[{i}]")),
            }
        }
        if let Some(n) = name {
            if !s.is_empty() {
                s.push('.');
            }
            s.push_str(n);
        }
        if s.is_empty() {
            "<anonymous>".into()
        } else {
            s
        }
    }

    fn wrong_type(&self, name: Option<&str>, expected: &str) -> String {
        format!(
            "Invalid parameter type for '{}', expected: {expected}",
            self.full(name)
        )
    }

    /// The members of object type `ty` in `obj`, then the check for unexpected members.
    fn object_members(&mut self, ty: TypeId, obj: &'a Map<String, Value>, extra_ok: bool) -> Res {
        let TypeKind::Object(o) = &TYPES[ty].kind else {
            unreachable!("object type expected")
        };
        let mut seen: Vec<&str> = Vec::new();
        self.members(o, obj, &mut seen)?;
        if let Some(tag) = o.tag {
            // The tag was checked with the other members: it is present and valid.
            if let Some(Value::String(case)) = obj.get(tag) {
                if let Some(var) = o.variants.iter().find(|v| v.case == case) {
                    let TypeKind::Object(b) = &TYPES[var.ty].kind else {
                        unreachable!("union branches are objects")
                    };
                    self.members(b, obj, &mut seen)?;
                }
            }
        }
        if !extra_ok {
            if let Some(k) = obj.keys().find(|k| !seen.contains(&k.as_str())) {
                return Err(format!("Parameter '{}' is unexpected", self.full(Some(k))));
            }
        }
        Ok(())
    }

    fn members(
        &mut self,
        o: &Object,
        obj: &'a Map<String, Value>,
        seen: &mut Vec<&'static str>,
    ) -> Res {
        for m in o.members {
            match obj.get(m.name) {
                Some(v) => {
                    seen.push(m.name);
                    self.value(m.ty, Some(m.name), v)?;
                }
                None if m.optional => {}
                None => {
                    return Err(format!(
                        "Parameter '{}' is missing",
                        self.full(Some(m.name))
                    ))
                }
            }
        }
        Ok(())
    }

    /// `name` is the member name, `None` for a list element.
    fn value(&mut self, ty: TypeId, name: Option<&'a str>, v: &'a Value) -> Res {
        let bare = name.unwrap_or("null");
        match &TYPES[ty].kind {
            TypeKind::Builtin(b) => self.builtin(*b, name, v),
            TypeKind::Enum(values) => {
                let Value::String(s) = v else {
                    return Err(self.wrong_type(name, "string"));
                };
                if values.contains(&s.as_str()) {
                    Ok(())
                } else {
                    Err(format!("Parameter '{bare}' does not accept value '{s}'"))
                }
            }
            TypeKind::Array(elem) => {
                let Value::Array(items) = v else {
                    return Err(self.wrong_type(name, "array"));
                };
                if let Some(n) = name {
                    self.path.push(Seg::Key(n));
                }
                let mut r = Ok(());
                for (i, item) in items.iter().enumerate() {
                    self.path.push(Seg::Index(i));
                    r = self.value(*elem, None, item);
                    self.path.pop();
                    if r.is_err() {
                        break;
                    }
                }
                if name.is_some() {
                    self.path.pop();
                }
                r
            }
            TypeKind::Object(_) => {
                let Value::Object(obj) = v else {
                    return Err(self.wrong_type(name, "object"));
                };
                self.nested_object(ty, name, obj)
            }
            TypeKind::Alternate(branches) => {
                let pick = branches.iter().copied().find(|&b| accepts(b, v));
                match pick {
                    Some(b) => self.value(b, name, v),
                    None => Err(format!(
                        "Invalid parameter type for '{bare}', expected: {}",
                        TYPES[ty].name
                    )),
                }
            }
        }
    }

    fn nested_object(
        &mut self,
        ty: TypeId,
        name: Option<&'a str>,
        obj: &'a Map<String, Value>,
    ) -> Res {
        if let Some(n) = name {
            self.path.push(Seg::Key(n));
        }
        let r = self.object_members(ty, obj, false);
        if name.is_some() {
            self.path.pop();
        }
        r
    }

    fn builtin(&self, b: Builtin, name: Option<&str>, v: &Value) -> Res {
        let bare = name.unwrap_or("null");
        let signed = |min: i64, max: i64, cname: &str| -> Res {
            match v.as_i64() {
                None => Err(self.wrong_type(name, "integer")),
                Some(x) if x < min || x > max => Err(format!("Parameter '{bare}' expects {cname}")),
                Some(_) => Ok(()),
            }
        };
        let unsigned = |max: u64, cname: &str| -> Res {
            // Negative numbers are taken as their two's complement, as QEMU does.
            let x = v.as_u64().or_else(|| v.as_i64().map(|i| i as u64));
            match x {
                None => Err(format!("Parameter '{}' expects uint64", self.full(name))),
                Some(x) if x > max => Err(format!("Parameter '{bare}' expects {cname}")),
                Some(_) => Ok(()),
            }
        };
        match b {
            Builtin::Str => match v {
                Value::String(_) => Ok(()),
                _ => Err(self.wrong_type(name, "string")),
            },
            Builtin::Int | Builtin::Int64 => signed(i64::MIN, i64::MAX, "int64_t"),
            Builtin::Int8 => signed(i8::MIN.into(), i8::MAX.into(), "int8_t"),
            Builtin::Int16 => signed(i16::MIN.into(), i16::MAX.into(), "int16_t"),
            Builtin::Int32 => signed(i32::MIN.into(), i32::MAX.into(), "int32_t"),
            Builtin::Uint8 => unsigned(u8::MAX.into(), "uint8_t"),
            Builtin::Uint16 => unsigned(u16::MAX.into(), "uint16_t"),
            Builtin::Uint32 => unsigned(u32::MAX.into(), "uint32_t"),
            Builtin::Uint64 | Builtin::Size => unsigned(u64::MAX, "uint64"),
            Builtin::Number => match v {
                Value::Number(_) => Ok(()),
                _ => Err(self.wrong_type(name, "number")),
            },
            Builtin::Bool => match v {
                Value::Bool(_) => Ok(()),
                _ => Err(self.wrong_type(name, "boolean")),
            },
            Builtin::Null => match v {
                Value::Null => Ok(()),
                _ => Err(self.wrong_type(name, "null")),
            },
            Builtin::Any => Ok(()),
        }
    }
}

/// Whether alternate branch type `b` takes a value of the JSON type of `v` (QEMU picks the
/// branch by the JSON type alone, then visits it).
fn accepts(b: TypeId, v: &Value) -> bool {
    match (&TYPES[b].kind, v) {
        (TypeKind::Builtin(Builtin::Str) | TypeKind::Enum(_), Value::String(_)) => true,
        (TypeKind::Builtin(Builtin::Bool), Value::Bool(_)) => true,
        (TypeKind::Builtin(Builtin::Null), Value::Null) => true,
        (TypeKind::Builtin(x), Value::Number(_)) => x.is_integer() || *x == Builtin::Number,
        (TypeKind::Object(_), Value::Object(_)) => true,
        (TypeKind::Array(_), Value::Array(_)) => true,
        _ => false,
    }
}
