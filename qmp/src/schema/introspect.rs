//! `query-qmp-schema`: the SchemaInfo list, shaped as QEMU 7.2 returns it.
//!
//! As in QEMU's `scripts/qapi/introspect.py`: the commands and events come first, in schema
//! order, then every type they use, in order of first use. Type names other than builtins are
//! masked to numbers in order of first use (`"0"` is the empty object, which stands for
//! missing arguments and missing return values); arrays are named `[T]` after their element;
//! every integer type shows as the builtin `int`. Optional members carry `"default": null`.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::meta::{self, TypeId, TypeKind, EMPTY_OBJECT, INT, INT_LIST, TYPES};

/// The SchemaInfo array for exactly `commands` and `events` (names the schema does not have
/// are left out) and every type reachable from them.
pub fn schema_info(commands: &[&str], events: &[&str]) -> Value {
    let mut entities: Vec<(u32, Entity)> = Vec::new();
    for c in meta::COMMANDS.iter().filter(|c| commands.contains(&c.name)) {
        entities.push((c.order, Entity::Command(c)));
    }
    for e in meta::EVENTS.iter().filter(|e| events.contains(&e.name)) {
        entities.push((e.order, Entity::Event(e)));
    }
    entities.sort_by_key(|(o, _)| *o);

    let mut g = Gen {
        names: HashMap::new(),
        used: Vec::new(),
        out: Vec::new(),
    };
    // QEMU numbers the empty object "0": its first command takes no arguments.
    g.names.insert(EMPTY_OBJECT, "0".into());
    for (_, ent) in entities {
        match ent {
            Entity::Command(c) => {
                let mut o = Map::new();
                o.insert("name".into(), c.name.into());
                o.insert("meta-type".into(), "command".into());
                o.insert("arg-type".into(), g.use_type(c.arg_type).into());
                o.insert("ret-type".into(), g.use_type(c.ret_type).into());
                if c.allow_oob {
                    o.insert("allow-oob".into(), true.into());
                }
                features(&mut o, c.features);
                g.out.push(Value::Object(o));
            }
            Entity::Event(e) => {
                let mut o = Map::new();
                o.insert("name".into(), e.name.into());
                o.insert("meta-type".into(), "event".into());
                o.insert("arg-type".into(), g.use_type(e.arg_type).into());
                features(&mut o, e.features);
                g.out.push(Value::Object(o));
            }
        }
    }
    let mut i = 0;
    while i < g.used.len() {
        let ty = g.used[i];
        g.visit_type(ty);
        i += 1;
    }
    Value::Array(g.out)
}

enum Entity {
    Command(&'static meta::CommandInfo),
    Event(&'static meta::EventInfo),
}

struct Gen {
    names: HashMap<TypeId, String>,
    used: Vec<TypeId>,
    out: Vec<Value>,
}

fn features(o: &mut Map<String, Value>, f: &[&str]) {
    if !f.is_empty() {
        o.insert("features".into(), json!(f));
    }
}

impl Gen {
    /// The (masked) name of `ty`; queues it for output.
    fn use_type(&mut self, ty: TypeId) -> String {
        let ty = match &TYPES[ty].kind {
            TypeKind::Builtin(b) if b.is_integer() => INT,
            TypeKind::Array(e) if matches!(&TYPES[*e].kind, TypeKind::Builtin(b) if b.is_integer()) => {
                INT_LIST
            }
            _ => ty,
        };
        if !self.used.contains(&ty) {
            self.used.push(ty);
        }
        match &TYPES[ty].kind {
            TypeKind::Builtin(_) => TYPES[ty].name.to_string(),
            TypeKind::Array(e) => format!("[{}]", self.use_type(*e)),
            _ => self.name(ty),
        }
    }

    fn name(&mut self, ty: TypeId) -> String {
        let n = self.names.len();
        self.names
            .entry(ty)
            .or_insert_with(|| n.to_string())
            .clone()
    }

    fn visit_type(&mut self, ty: TypeId) {
        let info = &TYPES[ty];
        let mut o = Map::new();
        match &info.kind {
            TypeKind::Builtin(b) => {
                o.insert("name".into(), info.name.into());
                o.insert("meta-type".into(), "builtin".into());
                o.insert("json-type".into(), b.json_type().into());
            }
            TypeKind::Enum(values) => {
                o.insert("name".into(), self.name(ty).into());
                o.insert("meta-type".into(), "enum".into());
                o.insert(
                    "members".into(),
                    values.iter().map(|v| json!({ "name": v })).collect(),
                );
                o.insert("values".into(), json!(values));
            }
            TypeKind::Array(e) => {
                let elem = self.use_type(*e);
                o.insert("name".into(), format!("[{elem}]").into());
                o.insert("meta-type".into(), "array".into());
                o.insert("element-type".into(), elem.into());
            }
            TypeKind::Object(obj) => {
                o.insert("name".into(), self.name(ty).into());
                o.insert("meta-type".into(), "object".into());
                let mut members = Vec::new();
                for m in obj.members {
                    let mut mo = Map::new();
                    mo.insert("name".into(), m.name.into());
                    mo.insert("type".into(), self.use_type(m.ty).into());
                    if m.optional {
                        mo.insert("default".into(), Value::Null);
                    }
                    features(&mut mo, m.features);
                    members.push(Value::Object(mo));
                }
                o.insert("members".into(), Value::Array(members));
                if let Some(tag) = obj.tag {
                    o.insert("tag".into(), tag.into());
                    let variants: Vec<Value> = obj
                        .variants
                        .iter()
                        .map(|v| json!({ "case": v.case, "type": self.use_type(v.ty) }))
                        .collect();
                    o.insert("variants".into(), Value::Array(variants));
                }
            }
            TypeKind::Alternate(branches) => {
                o.insert("name".into(), self.name(ty).into());
                o.insert("meta-type".into(), "alternate".into());
                let members: Vec<Value> = branches
                    .iter()
                    .map(|b| json!({ "type": self.use_type(*b) }))
                    .collect();
                o.insert("members".into(), Value::Array(members));
            }
        }
        features(&mut o, info.features);
        self.out.push(Value::Object(o));
    }
}
