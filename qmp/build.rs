//! The QAPI code generator of petrel-qmp.
//!
//! Reads `schema/qapi-schema.json` (QAPI's own JSON dialect: single-quoted strings, `#`
//! comments, `##` doc blocks, `{ 'include': ... }`), checks it, and writes into `OUT_DIR`:
//!
//! - `qapi_types.rs`: the Rust types (structs, enums, unions, alternates);
//! - `qapi_commands.rs`: one marker type per command implementing `Command`, its argument
//!   struct, and `ALL_COMMANDS`;
//! - `qapi_events.rs`: one struct per event implementing `Event`, and `ALL_EVENTS`;
//! - `qapi_tables.rs`: the static tables behind argument validation and introspection;
//! - `qapi_testsupport.rs`: dispatch helpers for the crate's own tests.
//!
//! Any problem in the schema fails the build with `file:line: message`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::{env, fs};

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=schema");
    let top = manifest.join("schema").join("qapi-schema.json");

    let mut loader = Loader::default();
    let exprs = loader.load(&top, None).unwrap_or_else(|e| fail(e));
    for f in &loader.files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let schema = Schema::build(exprs).unwrap_or_else(|e| fail(e));
    let tables = Tables::build(&schema);
    let gen = Gen {
        s: &schema,
        t: &tables,
    };

    write(&out.join("qapi_types.rs"), &gen.types());
    write(&out.join("qapi_commands.rs"), &gen.commands());
    write(&out.join("qapi_events.rs"), &gen.events());
    write(&out.join("qapi_tables.rs"), &gen.tables());
    write(&out.join("qapi_testsupport.rs"), &gen.testsupport());
}

fn fail(e: String) -> ! {
    eprintln!("error: QAPI schema: {e}");
    std::process::exit(1)
}

fn write(path: &Path, text: &str) {
    fs::write(path, text).unwrap_or_else(|e| fail(format!("cannot write {}: {e}", path.display())));
}

// ---------------------------------------------------------------------------------------------
// Parsing

/// A parsed JSON value of the QAPI dialect (no numbers, no null).
#[derive(Clone, Debug)]
enum Json {
    Str(String),
    Bool(bool),
    List(Vec<Node>),
    Dict(Vec<(String, Node)>),
}

#[derive(Clone, Debug)]
struct Node {
    v: Json,
    loc: Loc,
}

#[derive(Clone, Debug)]
struct Loc {
    file: String,
    line: usize,
}

impl std::fmt::Display for Loc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// A top-level definition with the doc block before it.
struct Expr {
    node: Node,
    doc: Option<Doc>,
}

#[derive(Default)]
struct Loader {
    files: Vec<PathBuf>,
}

impl Loader {
    fn load(&mut self, path: &Path, from: Option<&Loc>) -> Result<Vec<Expr>, String> {
        let canon = path.canonicalize().map_err(|e| match from {
            Some(l) => format!("{l}: cannot include {}: {e}", path.display()),
            None => format!("cannot read {}: {e}", path.display()),
        })?;
        if self.files.contains(&canon) {
            // QAPI includes each file once.
            return Ok(Vec::new());
        }
        self.files.push(canon.clone());
        let text = fs::read_to_string(&canon).map_err(|e| format!("{}: {e}", path.display()))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut p = Parser {
            s: text.as_bytes(),
            pos: 0,
            line: 1,
            file: name,
            pending_doc: None,
        };
        let mut out = Vec::new();
        loop {
            p.skip_space(true)?;
            if p.pos >= p.s.len() {
                break;
            }
            let doc = p.pending_doc.take();
            let node = p.value()?;
            let Json::Dict(entries) = &node.v else {
                return Err(format!(
                    "{}: top-level expression must be an object",
                    node.loc
                ));
            };
            if let Some((_, inc)) = entries.iter().find(|(k, _)| k == "include") {
                if entries.len() != 1 {
                    return Err(format!("{}: 'include' takes no other keys", node.loc));
                }
                let Json::Str(rel) = &inc.v else {
                    return Err(format!("{}: 'include' requires a string", inc.loc));
                };
                let dir = path.parent().unwrap_or(Path::new("."));
                out.extend(self.load(&dir.join(rel), Some(&inc.loc))?);
                continue;
            }
            if entries.iter().any(|(k, _)| k == "pragma") {
                continue;
            }
            out.push(Expr {
                node,
                doc: doc.map(|d| Doc::parse(&d)),
            });
        }
        Ok(out)
    }
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
    line: usize,
    file: String,
    /// The lines of the last complete `##` doc block seen at top level.
    pending_doc: Option<Vec<String>>,
}

impl Parser<'_> {
    fn loc(&self) -> Loc {
        Loc {
            file: self.file.clone(),
            line: self.line,
        }
    }

    fn err<T>(&self, msg: impl std::fmt::Display) -> Result<T, String> {
        Err(format!("{}: {msg}", self.loc()))
    }

    fn rest_of_line(&mut self) -> String {
        let start = self.pos;
        while self.pos < self.s.len() && self.s[self.pos] != b'\n' {
            self.pos += 1;
        }
        String::from_utf8_lossy(&self.s[start..self.pos]).into_owned()
    }

    /// Skips white space and comments. At top level, `##` blocks are collected as doc.
    fn skip_space(&mut self, top: bool) -> Result<(), String> {
        let mut doc: Option<Vec<String>> = None;
        while self.pos < self.s.len() {
            match self.s[self.pos] {
                b'\n' => {
                    self.line += 1;
                    self.pos += 1;
                }
                b' ' | b'\t' | b'\r' => self.pos += 1,
                b'#' => {
                    let at_line_start = self.pos == 0 || self.s[self.pos - 1] == b'\n';
                    let line = self.rest_of_line();
                    if !top || !at_line_start {
                        continue;
                    }
                    if line.trim_end() == "##" {
                        match doc.take() {
                            // `##` closes an open block.
                            Some(lines) => self.pending_doc = Some(lines),
                            None => doc = Some(Vec::new()),
                        }
                    } else if let Some(lines) = doc.as_mut() {
                        let t = line.strip_prefix('#').unwrap_or(&line);
                        lines.push(t.strip_prefix(' ').unwrap_or(t).trim_end().to_string());
                    }
                }
                _ => break,
            }
        }
        if doc.is_some() {
            return self.err("unterminated doc comment block (missing '##')");
        }
        Ok(())
    }

    fn value(&mut self) -> Result<Node, String> {
        self.skip_space(false)?;
        let loc = self.loc();
        let Some(&c) = self.s.get(self.pos) else {
            return self.err("unexpected end of file");
        };
        let v = match c {
            b'{' => {
                self.pos += 1;
                let mut entries: Vec<(String, Node)> = Vec::new();
                self.skip_space(false)?;
                if self.s.get(self.pos) == Some(&b'}') {
                    self.pos += 1;
                } else {
                    loop {
                        self.skip_space(false)?;
                        let key_loc = self.loc();
                        let key = match self.s.get(self.pos) {
                            Some(b'\'') | Some(b'"') => self.string()?,
                            _ => return self.err("expected a string as object key"),
                        };
                        if entries.iter().any(|(k, _)| *k == key) {
                            return Err(format!("{key_loc}: duplicate key '{key}'"));
                        }
                        self.skip_space(false)?;
                        if self.s.get(self.pos) != Some(&b':') {
                            return self.err("expected ':'");
                        }
                        self.pos += 1;
                        let val = self.value()?;
                        entries.push((key, val));
                        self.skip_space(false)?;
                        match self.s.get(self.pos) {
                            Some(b',') => self.pos += 1,
                            Some(b'}') => {
                                self.pos += 1;
                                break;
                            }
                            _ => return self.err("expected ',' or '}'"),
                        }
                    }
                }
                Json::Dict(entries)
            }
            b'[' => {
                self.pos += 1;
                let mut items = Vec::new();
                self.skip_space(false)?;
                if self.s.get(self.pos) == Some(&b']') {
                    self.pos += 1;
                } else {
                    loop {
                        items.push(self.value()?);
                        self.skip_space(false)?;
                        match self.s.get(self.pos) {
                            Some(b',') => self.pos += 1,
                            Some(b']') => {
                                self.pos += 1;
                                break;
                            }
                            _ => return self.err("expected ',' or ']'"),
                        }
                    }
                }
                Json::List(items)
            }
            b'\'' | b'"' => Json::Str(self.string()?),
            _ if self.s[self.pos..].starts_with(b"true") => {
                self.pos += 4;
                Json::Bool(true)
            }
            _ if self.s[self.pos..].starts_with(b"false") => {
                self.pos += 5;
                Json::Bool(false)
            }
            _ => return self.err(format!("stray '{}'", c as char)),
        };
        Ok(Node { v, loc })
    }

    fn string(&mut self) -> Result<String, String> {
        let quote = self.s[self.pos];
        self.pos += 1;
        let mut buf = Vec::new();
        loop {
            let Some(&c) = self.s.get(self.pos) else {
                return self.err("unterminated string");
            };
            self.pos += 1;
            match c {
                b'\n' => return self.err("line break in string"),
                b'\\' => {
                    let Some(&e) = self.s.get(self.pos) else {
                        return self.err("unterminated string");
                    };
                    self.pos += 1;
                    match e {
                        b'\\' | b'/' | b'\'' | b'"' => buf.push(e),
                        b'n' => buf.push(b'\n'),
                        b't' => buf.push(b'\t'),
                        _ => return self.err(format!("unknown escape \\{}", e as char)),
                    }
                }
                _ if c == quote => break,
                _ => buf.push(c),
            }
        }
        String::from_utf8(buf).or_else(|_| self.err("string is not UTF-8"))
    }
}

// ---------------------------------------------------------------------------------------------
// Doc comments

/// A QAPI doc block: `@Name:` header, body text, `@member: text` sections, `Since:`.
#[derive(Clone, Default, Debug)]
struct Doc {
    name: Option<String>,
    body: String,
    members: Vec<(String, String)>,
    since: Option<String>,
}

impl Doc {
    fn parse(lines: &[String]) -> Doc {
        let mut d = Doc::default();
        let mut i = 0;
        if let Some(first) = lines.first() {
            if let Some(rest) = first.strip_prefix('@') {
                if let Some(name) = rest.strip_suffix(':') {
                    d.name = Some(name.to_string());
                    i = 1;
                }
            }
        }
        enum Cur {
            Body,
            Member,
            Skip,
        }
        let mut cur = Cur::Body;
        let section = |l: &str| {
            [
                "Returns:",
                "Example:",
                "Examples:",
                "Note:",
                "Notes:",
                "Errors:",
                "TODO:",
                "Features:",
            ]
            .iter()
            .any(|s| l.starts_with(s))
        };
        for l in &lines[i..] {
            if let Some(rest) = l.strip_prefix('@') {
                if let Some((name, text)) = rest.split_once(':') {
                    if !name.contains(' ') {
                        d.members.push((name.to_string(), text.trim().to_string()));
                        cur = Cur::Member;
                        continue;
                    }
                }
            }
            if let Some(v) = l.strip_prefix("Since:") {
                d.since = Some(v.trim().to_string());
                cur = Cur::Skip;
                continue;
            }
            if section(l) {
                cur = Cur::Skip;
                continue;
            }
            match cur {
                Cur::Body => {
                    if l.is_empty() {
                        if !d.body.is_empty() && !d.body.ends_with("\n\n") {
                            d.body.push_str("\n\n");
                        }
                    } else {
                        if !d.body.is_empty() && !d.body.ends_with('\n') {
                            d.body.push(' ');
                        }
                        d.body.push_str(l.trim());
                    }
                }
                Cur::Member => {
                    if l.is_empty() {
                        cur = Cur::Skip;
                    } else if let Some(m) = d.members.last_mut() {
                        if !m.1.is_empty() {
                            m.1.push(' ');
                        }
                        m.1.push_str(l.trim());
                    }
                }
                Cur::Skip => {}
            }
        }
        d.body = d.body.trim().to_string();
        d
    }

    fn member(&self, name: &str) -> Option<&str> {
        self.members
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.as_str())
            .filter(|t| !t.is_empty())
    }
}

// ---------------------------------------------------------------------------------------------
// The schema model

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum TypeRef {
    Named(String),
    Array(String),
}

impl TypeRef {
    fn elem(&self) -> &str {
        match self {
            TypeRef::Named(n) | TypeRef::Array(n) => n,
        }
    }
}

#[derive(Clone, Debug)]
struct MemberDef {
    name: String,
    ty: TypeRef,
    optional: bool,
    features: Vec<String>,
    loc: Loc,
}

#[derive(Clone, Debug)]
enum Kind {
    Struct {
        base: Option<String>,
        members: Vec<MemberDef>,
    },
    Enum {
        values: Vec<String>,
    },
    FlatUnion {
        base: Vec<MemberDef>,
        base_name: Option<String>,
        tag: String,
        branches: Vec<(String, String)>,
    },
    SimpleUnion {
        branches: Vec<(String, TypeRef)>,
    },
    Alternate {
        branches: Vec<(String, String)>,
    },
}

#[derive(Clone, Debug)]
struct TypeDef {
    kind: Kind,
    features: Vec<String>,
    doc: Doc,
    loc: Loc,
}

#[derive(Clone, Debug)]
enum Args {
    None,
    Inline(Vec<MemberDef>),
    Named(String),
}

#[derive(Clone, Debug)]
struct CommandDef {
    name: String,
    args: Args,
    returns: Option<TypeRef>,
    boxed: bool,
    allow_oob: bool,
    gen: bool,
    features: Vec<String>,
    doc: Doc,
    order: u32,
    loc: Loc,
}

#[derive(Clone, Debug)]
struct EventDef {
    name: String,
    args: Args,
    features: Vec<String>,
    doc: Doc,
    order: u32,
    loc: Loc,
}

const BUILTINS: &[(&str, &str)] = &[
    ("str", "Str"),
    ("int", "Int"),
    ("int8", "Int8"),
    ("int16", "Int16"),
    ("int32", "Int32"),
    ("int64", "Int64"),
    ("uint8", "Uint8"),
    ("uint16", "Uint16"),
    ("uint32", "Uint32"),
    ("uint64", "Uint64"),
    ("size", "Size"),
    ("number", "Number"),
    ("bool", "Bool"),
    ("null", "Null"),
    ("any", "Any"),
];

fn is_builtin(n: &str) -> bool {
    BUILTINS.iter().any(|(b, _)| *b == n)
}

/// The JSON type class of a type, for alternate ambiguity checks.
fn json_class(s: &Schema, n: &str) -> &'static str {
    match n {
        "str" => "string",
        "number" => "number",
        "bool" => "boolean",
        "null" => "null",
        "any" => "value",
        _ if is_builtin(n) => "number",
        _ => match s.types.get(n).map(|t| &t.kind) {
            Some(Kind::Enum { .. }) => "string",
            Some(Kind::Alternate { .. }) => "alternate",
            _ => "object",
        },
    }
}

struct Schema {
    types: BTreeMap<String, TypeDef>,
    /// Type names in definition order.
    type_order: Vec<String>,
    commands: Vec<CommandDef>,
    events: Vec<EventDef>,
}

fn as_str<'a>(n: &'a Node, what: &str) -> Result<&'a str, String> {
    match &n.v {
        Json::Str(s) => Ok(s),
        _ => Err(format!("{}: {what} must be a string", n.loc)),
    }
}

fn as_bool(n: &Node, what: &str) -> Result<bool, String> {
    match &n.v {
        Json::Bool(b) => Ok(*b),
        _ => Err(format!("{}: {what} must be true or false", n.loc)),
    }
}

fn check_name(name: &str, loc: &Loc, what: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!("{loc}: {what} has an invalid name '{name}'"))
    }
}

fn type_ref(n: &Node, what: &str) -> Result<TypeRef, String> {
    match &n.v {
        Json::Str(s) => Ok(TypeRef::Named(s.clone())),
        Json::List(items) => {
            if items.len() != 1 {
                return Err(format!(
                    "{}: {what}: an array type must have exactly one element type",
                    n.loc
                ));
            }
            match &items[0].v {
                Json::Str(s) => Ok(TypeRef::Array(s.clone())),
                _ => Err(format!(
                    "{}: {what}: array element type must be a type name",
                    n.loc
                )),
            }
        }
        _ => Err(format!(
            "{}: {what}: expected a type name or [type name]",
            n.loc
        )),
    }
}

fn features(n: Option<&Node>) -> Result<Vec<String>, String> {
    let Some(n) = n else { return Ok(Vec::new()) };
    let Json::List(items) = &n.v else {
        return Err(format!("{}: 'features' must be an array", n.loc));
    };
    let mut out = Vec::new();
    for f in items {
        let name = match &f.v {
            Json::Str(s) => s.clone(),
            Json::Dict(d) => {
                let mut name = None;
                for (k, v) in d {
                    match k.as_str() {
                        "name" => name = Some(as_str(v, "feature name")?.to_string()),
                        _ => return Err(format!("{}: unsupported feature key '{k}'", v.loc)),
                    }
                }
                name.ok_or_else(|| format!("{}: feature without 'name'", f.loc))?
            }
            _ => {
                return Err(format!(
                    "{}: a feature must be a string or an object",
                    f.loc
                ))
            }
        };
        check_name(&name, &f.loc, "feature")?;
        if out.contains(&name) {
            return Err(format!("{}: duplicate feature '{name}'", f.loc));
        }
        out.push(name);
    }
    Ok(out)
}

fn members(n: &Node, what: &str) -> Result<Vec<MemberDef>, String> {
    let Json::Dict(entries) = &n.v else {
        return Err(format!("{}: {what}: 'data' must be an object", n.loc));
    };
    let mut out: Vec<MemberDef> = Vec::new();
    for (key, v) in entries {
        let (name, optional) = match key.strip_prefix('*') {
            Some(n) => (n.to_string(), true),
            None => (key.clone(), false),
        };
        check_name(&name, &v.loc, "member")?;
        let (ty, feats) = match &v.v {
            Json::Dict(d) => {
                let mut ty = None;
                let mut feats = Vec::new();
                for (k, x) in d {
                    match k.as_str() {
                        "type" => ty = Some(type_ref(x, what)?),
                        "features" => feats = features(Some(x))?,
                        "if" => {
                            return Err(format!("{}: conditionals ('if') are not supported", x.loc))
                        }
                        _ => return Err(format!("{}: unknown member key '{k}'", x.loc)),
                    }
                }
                (
                    ty.ok_or_else(|| format!("{}: member '{name}' has no 'type'", v.loc))?,
                    feats,
                )
            }
            _ => (type_ref(v, what)?, Vec::new()),
        };
        if out.iter().any(|m| m.name == name) {
            return Err(format!("{}: {what}: duplicate member '{name}'", v.loc));
        }
        out.push(MemberDef {
            name,
            ty,
            optional,
            features: feats,
            loc: v.loc.clone(),
        });
    }
    Ok(out)
}

fn allowed_keys(entries: &[(String, Node)], allowed: &[&str], what: &str) -> Result<(), String> {
    for (k, v) in entries {
        if k == "if" {
            return Err(format!("{}: conditionals ('if') are not supported", v.loc));
        }
        if !allowed.contains(&k.as_str()) {
            return Err(format!("{}: {what}: unknown key '{k}'", v.loc));
        }
    }
    Ok(())
}

impl Schema {
    fn build(exprs: Vec<Expr>) -> Result<Schema, String> {
        let mut s = Schema {
            types: BTreeMap::new(),
            type_order: Vec::new(),
            commands: Vec::new(),
            events: Vec::new(),
        };
        let mut names: HashMap<String, Loc> = HashMap::new();
        let mut order = 0u32;
        for e in exprs {
            let Json::Dict(entries) = &e.node.v else {
                unreachable!()
            };
            let get = |k: &str| entries.iter().find(|(key, _)| key == k).map(|(_, v)| v);
            let meta = ["struct", "enum", "union", "alternate", "command", "event"]
                .into_iter()
                .find(|m| get(m).is_some())
                .ok_or_else(|| format!("{}: expression has no known meta key", e.node.loc))?;
            let name = as_str(get(meta).unwrap(), meta)?.to_string();
            let loc = e.node.loc.clone();
            check_name(&name, &loc, meta)?;
            if is_builtin(&name) || name.ends_with("List") || name.starts_with("q_") {
                return Err(format!("{loc}: '{name}' is a reserved name"));
            }
            if let Some(prev) = names.get(&name) {
                return Err(format!("{loc}: '{name}' is already defined at {prev}"));
            }
            names.insert(name.clone(), loc.clone());
            let doc = e.doc.unwrap_or_default();
            if let Some(dn) = &doc.name {
                if *dn != name {
                    return Err(format!("{loc}: doc comment is for '{dn}', not '{name}'"));
                }
            }
            let feats = features(get("features"))?;
            let what = format!("{meta} '{name}'");
            let kind = match meta {
                "struct" => {
                    allowed_keys(entries, &["struct", "data", "base", "features"], &what)?;
                    let members = match get("data") {
                        Some(d) => members(d, &what)?,
                        None => Vec::new(),
                    };
                    let base = get("base")
                        .map(|b| as_str(b, "'base'").map(str::to_string))
                        .transpose()?;
                    Kind::Struct { base, members }
                }
                "enum" => {
                    allowed_keys(entries, &["enum", "data", "prefix", "features"], &what)?;
                    let d = get("data").ok_or_else(|| format!("{loc}: {what} has no 'data'"))?;
                    let Json::List(items) = &d.v else {
                        return Err(format!("{}: {what}: 'data' must be an array", d.loc));
                    };
                    let mut values: Vec<String> = Vec::new();
                    for it in items {
                        let v = match &it.v {
                            Json::Str(v) => v.clone(),
                            Json::Dict(dd) => {
                                allowed_keys(dd, &["name"], &what)?;
                                as_str(&dd[0].1, "enum value name")?.to_string()
                            }
                            _ => return Err(format!("{}: {what}: bad enum value", it.loc)),
                        };
                        let ok = !v.is_empty()
                            && v.chars()
                                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
                        if !ok {
                            return Err(format!("{}: {what}: invalid value '{v}'", it.loc));
                        }
                        if values.contains(&v) {
                            return Err(format!("{}: {what}: duplicate value '{v}'", it.loc));
                        }
                        values.push(v);
                    }
                    Kind::Enum { values }
                }
                "union" => {
                    allowed_keys(
                        entries,
                        &["union", "data", "base", "discriminator", "features"],
                        &what,
                    )?;
                    let d = get("data").ok_or_else(|| format!("{loc}: {what} has no 'data'"))?;
                    let Json::Dict(br) = &d.v else {
                        return Err(format!("{}: {what}: 'data' must be an object", d.loc));
                    };
                    match get("discriminator") {
                        None => {
                            if get("base").is_some() {
                                return Err(format!(
                                    "{loc}: {what}: 'base' requires 'discriminator'"
                                ));
                            }
                            let mut branches = Vec::new();
                            for (k, v) in br {
                                check_name(k, &v.loc, "branch")?;
                                let t = type_ref(v, &what)?;
                                if matches!(t, TypeRef::Array(_)) {
                                    return Err(format!(
                                        "{}: {what}: branch '{k}' cannot be an array",
                                        v.loc
                                    ));
                                }
                                branches.push((k.clone(), t));
                            }
                            Kind::SimpleUnion { branches }
                        }
                        Some(dn) => {
                            let tag = as_str(dn, "'discriminator'")?.to_string();
                            let (base, base_name) = match get("base") {
                                None => {
                                    return Err(format!(
                                        "{loc}: {what}: 'discriminator' requires 'base'"
                                    ))
                                }
                                Some(b) => match &b.v {
                                    Json::Str(n) => (Vec::new(), Some(n.clone())),
                                    Json::Dict(_) => (members(b, &what)?, None),
                                    _ => return Err(format!("{}: {what}: bad 'base'", b.loc)),
                                },
                            };
                            let mut branches = Vec::new();
                            for (k, v) in br {
                                let t = match &v.v {
                                    Json::Dict(dd) => {
                                        allowed_keys(dd, &["type"], &what)?;
                                        as_str(&dd[0].1, "branch type")?.to_string()
                                    }
                                    _ => as_str(v, "branch type")?.to_string(),
                                };
                                branches.push((k.clone(), t));
                            }
                            Kind::FlatUnion {
                                base,
                                base_name,
                                tag,
                                branches,
                            }
                        }
                    }
                }
                "alternate" => {
                    allowed_keys(entries, &["alternate", "data", "features"], &what)?;
                    let d = get("data").ok_or_else(|| format!("{loc}: {what} has no 'data'"))?;
                    let Json::Dict(br) = &d.v else {
                        return Err(format!("{}: {what}: 'data' must be an object", d.loc));
                    };
                    let mut branches = Vec::new();
                    for (k, v) in br {
                        check_name(k, &v.loc, "branch")?;
                        branches.push((k.clone(), as_str(v, "alternate branch type")?.to_string()));
                    }
                    if branches.is_empty() {
                        return Err(format!("{loc}: {what} has no branches"));
                    }
                    Kind::Alternate { branches }
                }
                "command" => {
                    allowed_keys(
                        entries,
                        &[
                            "command",
                            "data",
                            "returns",
                            "boxed",
                            "gen",
                            "success-response",
                            "allow-oob",
                            "allow-preconfig",
                            "coroutine",
                            "features",
                        ],
                        &what,
                    )?;
                    let flag = |k: &str, default: bool| {
                        get(k).map(|v| as_bool(v, k)).unwrap_or(Ok(default))
                    };
                    let args = parse_args(get("data"), &what)?;
                    let boxed = flag("boxed", false)?;
                    if boxed && !matches!(args, Args::Named(_)) {
                        return Err(format!(
                            "{loc}: {what}: 'boxed' requires a named 'data' type"
                        ));
                    }
                    if !flag("success-response", true)? {
                        return Err(format!(
                            "{loc}: {what}: 'success-response': false is not supported"
                        ));
                    }
                    let gen = flag("gen", true)?;
                    if !gen && !matches!(args, Args::Inline(_) | Args::None) {
                        return Err(format!(
                            "{loc}: {what}: 'gen': false requires inline 'data'"
                        ));
                    }
                    s.commands.push(CommandDef {
                        name: name.clone(),
                        args,
                        returns: get("returns").map(|r| type_ref(r, &what)).transpose()?,
                        boxed,
                        allow_oob: flag("allow-oob", false)?,
                        gen,
                        features: feats,
                        doc,
                        order,
                        loc,
                    });
                    order += 1;
                    continue;
                }
                "event" => {
                    allowed_keys(entries, &["event", "data", "boxed", "features"], &what)?;
                    let args = parse_args(get("data"), &what)?;
                    s.events.push(EventDef {
                        name: name.clone(),
                        args,
                        features: feats,
                        doc,
                        order,
                        loc,
                    });
                    order += 1;
                    continue;
                }
                _ => unreachable!(),
            };
            s.type_order.push(name.clone());
            s.types.insert(
                name,
                TypeDef {
                    kind,
                    features: feats,
                    doc,
                    loc,
                },
            );
        }
        s.check()?;
        Ok(s)
    }

    fn exists(&self, n: &str) -> bool {
        is_builtin(n) || self.types.contains_key(n)
    }

    fn check_ref(&self, t: &TypeRef, loc: &Loc, what: &str) -> Result<(), String> {
        if self.exists(t.elem()) {
            Ok(())
        } else {
            Err(format!("{loc}: {what} uses undefined type '{}'", t.elem()))
        }
    }

    fn is_struct(&self, n: &str) -> bool {
        matches!(
            self.types.get(n).map(|t| &t.kind),
            Some(Kind::Struct { .. })
        )
    }

    fn is_object(&self, n: &str) -> bool {
        matches!(
            self.types.get(n).map(|t| &t.kind),
            Some(Kind::Struct { .. } | Kind::FlatUnion { .. } | Kind::SimpleUnion { .. })
        )
    }

    /// All members of a struct, base members first.
    fn struct_members(&self, n: &str) -> Vec<MemberDef> {
        let mut seen = HashSet::new();
        self.struct_members_inner(n, &mut seen)
    }

    fn struct_members_inner(&self, n: &str, seen: &mut HashSet<String>) -> Vec<MemberDef> {
        if !seen.insert(n.to_string()) {
            return Vec::new();
        }
        match self.types.get(n).map(|t| &t.kind) {
            Some(Kind::Struct { base, members }) => {
                let mut out = base
                    .as_ref()
                    .map(|b| self.struct_members_inner(b, seen))
                    .unwrap_or_default();
                out.extend(members.iter().cloned());
                out
            }
            _ => Vec::new(),
        }
    }

    /// The base members of a flat union.
    fn union_base(&self, t: &TypeDef) -> Vec<MemberDef> {
        match &t.kind {
            Kind::FlatUnion {
                base,
                base_name: Some(b),
                ..
            } if base.is_empty() => self.struct_members(b),
            Kind::FlatUnion { base, .. } => base.clone(),
            _ => Vec::new(),
        }
    }

    fn check_members(&self, ms: &[MemberDef], what: &str) -> Result<(), String> {
        let mut seen: HashSet<&str> = HashSet::new();
        for m in ms {
            self.check_ref(&m.ty, &m.loc, &format!("{what} member '{}'", m.name))?;
            if !seen.insert(&m.name) {
                return Err(format!(
                    "{}: {what}: member '{}' is defined twice (base and own members)",
                    m.loc, m.name
                ));
            }
        }
        Ok(())
    }

    fn check(&self) -> Result<(), String> {
        for name in &self.type_order {
            let t = &self.types[name];
            let what = format!("'{name}'");
            match &t.kind {
                Kind::Struct { base, .. } => {
                    if let Some(b) = base {
                        if !self.is_struct(b) {
                            return Err(format!("{}: {what}: base '{b}' must be a struct", t.loc));
                        }
                        // Base cycles.
                        let mut cur = Some(b.clone());
                        let mut steps = 0;
                        while let Some(c) = cur {
                            if c == *name || steps > self.types.len() {
                                return Err(format!("{}: {what}: base chain loops", t.loc));
                            }
                            steps += 1;
                            cur = match &self.types[&c].kind {
                                Kind::Struct { base, .. } => base.clone(),
                                _ => None,
                            };
                        }
                    }
                    self.check_members(&self.struct_members(name), &what)?;
                }
                Kind::Enum { .. } => {}
                Kind::FlatUnion {
                    base_name,
                    tag,
                    branches,
                    ..
                } => {
                    if let Some(b) = base_name {
                        if !self.is_struct(b) {
                            return Err(format!("{}: {what}: base '{b}' must be a struct", t.loc));
                        }
                    }
                    let base = self.union_base(t);
                    self.check_members(&base, &what)?;
                    let tm = base.iter().find(|m| m.name == *tag).ok_or_else(|| {
                        format!(
                            "{}: {what}: discriminator '{tag}' is not a member of the base",
                            t.loc
                        )
                    })?;
                    if tm.optional {
                        return Err(format!(
                            "{}: {what}: discriminator '{tag}' must not be optional",
                            t.loc
                        ));
                    }
                    let values = match (&tm.ty, self.types.get(tm.ty.elem()).map(|t| &t.kind)) {
                        (TypeRef::Named(_), Some(Kind::Enum { values })) => values,
                        _ => {
                            return Err(format!(
                                "{}: {what}: discriminator '{tag}' must be of an enum type",
                                t.loc
                            ))
                        }
                    };
                    let mut seen = HashSet::new();
                    for (case, ty) in branches {
                        if !values.contains(case) {
                            return Err(format!(
                                "{}: {what}: branch '{case}' is not a value of {}",
                                t.loc,
                                tm.ty.elem()
                            ));
                        }
                        if !seen.insert(case) {
                            return Err(format!("{}: {what}: duplicate branch '{case}'", t.loc));
                        }
                        if !self.exists(ty) {
                            return Err(format!(
                                "{}: {what}: branch '{case}' uses undefined type '{ty}'",
                                t.loc
                            ));
                        }
                        if !self.is_struct(ty) {
                            return Err(format!(
                                "{}: {what}: branch '{case}' type '{ty}' must be a struct",
                                t.loc
                            ));
                        }
                        for m in self.struct_members(ty) {
                            if base.iter().any(|b| b.name == m.name) {
                                return Err(format!(
                                    "{}: {what}: member '{}' of branch '{case}' clashes with a base member",
                                    t.loc, m.name
                                ));
                            }
                        }
                    }
                }
                Kind::SimpleUnion { branches } => {
                    for (case, ty) in branches {
                        self.check_ref(ty, &t.loc, &format!("{what} branch '{case}'"))?;
                    }
                }
                Kind::Alternate { branches } => {
                    let mut classes: HashMap<&str, &str> = HashMap::new();
                    for (case, ty) in branches {
                        if !self.exists(ty) {
                            return Err(format!(
                                "{}: {what}: branch '{case}' uses undefined type '{ty}'",
                                t.loc
                            ));
                        }
                        let class = json_class(self, ty);
                        if class == "value" || class == "alternate" {
                            return Err(format!(
                                "{}: {what}: branch '{case}' cannot be of type '{ty}'",
                                t.loc
                            ));
                        }
                        if let Some(prev) = classes.insert(class, case) {
                            return Err(format!(
                                "{}: {what}: branches '{prev}' and '{case}' both take a JSON {class}",
                                t.loc
                            ));
                        }
                    }
                }
            }
        }
        for c in &self.commands {
            let what = format!("command '{}'", c.name);
            self.check_args(&c.args, &c.loc, &what, true)?;
            if let Args::Named(n) = &c.args {
                if !c.boxed && !self.is_struct(n) {
                    return Err(format!(
                        "{}: {what}: 'data' type '{n}' is a union: needs 'boxed': true",
                        c.loc
                    ));
                }
            }
            if let Some(r) = &c.returns {
                self.check_ref(r, &c.loc, &what)?;
            }
        }
        for e in &self.events {
            let what = format!("event '{}'", e.name);
            self.check_args(&e.args, &e.loc, &what, false)?;
        }
        Ok(())
    }

    fn check_args(&self, a: &Args, loc: &Loc, what: &str, command: bool) -> Result<(), String> {
        match a {
            Args::None => Ok(()),
            Args::Inline(ms) => self.check_members(ms, what),
            Args::Named(n) => {
                if !self.exists(n) {
                    return Err(format!("{loc}: {what} uses undefined type '{n}'"));
                }
                if command && self.is_object(n) || !command && self.is_struct(n) {
                    Ok(())
                } else {
                    Err(format!(
                        "{loc}: {what}: 'data' type '{n}' must be an object type"
                    ))
                }
            }
        }
    }
}

fn parse_args(d: Option<&Node>, what: &str) -> Result<Args, String> {
    match d {
        None => Ok(Args::None),
        Some(n) => match &n.v {
            Json::Str(t) => Ok(Args::Named(t.clone())),
            Json::Dict(_) => Ok(Args::Inline(members(n, what)?)),
            _ => Err(format!(
                "{}: {what}: 'data' must be a type name or an object",
                n.loc
            )),
        },
    }
}

// ---------------------------------------------------------------------------------------------
// Tables: every type the schema can name, numbered

enum TKind {
    Builtin(&'static str),
    Enum(Vec<String>),
    Array(usize),
    Object {
        members: Vec<(String, usize, bool, Vec<String>)>,
        tag: Option<String>,
        variants: Vec<(String, usize)>,
    },
    Alternate(Vec<usize>),
}

struct TEntry {
    name: String,
    kind: TKind,
    features: Vec<String>,
}

struct Tables {
    entries: Vec<TEntry>,
    ids: HashMap<String, usize>,
    empty: usize,
    cmd_args: Vec<usize>,
    cmd_ret: Vec<usize>,
    ev_args: Vec<usize>,
}

impl Tables {
    fn build(s: &Schema) -> Tables {
        let mut t = Tables {
            entries: Vec::new(),
            ids: HashMap::new(),
            empty: 0,
            cmd_args: Vec::new(),
            cmd_ret: Vec::new(),
            ev_args: Vec::new(),
        };
        for (b, v) in BUILTINS {
            t.push(b, TKind::Builtin(v), Vec::new());
        }
        t.empty = t.push(
            "q_empty",
            TKind::Object {
                members: Vec::new(),
                tag: None,
                variants: Vec::new(),
            },
            Vec::new(),
        );
        // Reserve ids of named types first so references resolve in any order.
        for n in &s.type_order {
            let td = &s.types[n];
            t.push(n, TKind::Enum(Vec::new()), td.features.clone());
        }
        let int = t.ids["int"];
        t.array_of(int);
        for n in &s.type_order {
            let td = &s.types[n];
            let kind = match &td.kind {
                Kind::Struct { .. } => t.object(s, &s.struct_members(n), None, Vec::new()),
                Kind::Enum { values } => TKind::Enum(values.clone()),
                Kind::FlatUnion { tag, branches, .. } => {
                    let variants = branches
                        .iter()
                        .map(|(c, ty)| (c.clone(), t.ids[ty]))
                        .collect();
                    t.object(s, &s.union_base(td), Some(tag.clone()), variants)
                }
                Kind::SimpleUnion { branches } => {
                    let kind_enum = t.push(
                        &format!("{n}Kind"),
                        TKind::Enum(branches.iter().map(|(c, _)| c.clone()).collect()),
                        Vec::new(),
                    );
                    let mut variants = Vec::new();
                    for (case, ty) in branches {
                        let wname = format!("q_obj_{}-wrapper", ty.elem());
                        let w = match t.ids.get(&wname) {
                            Some(&w) => w,
                            None => {
                                let tid = t.resolve(ty);
                                t.push(
                                    &wname,
                                    TKind::Object {
                                        members: vec![("data".into(), tid, false, Vec::new())],
                                        tag: None,
                                        variants: Vec::new(),
                                    },
                                    Vec::new(),
                                )
                            }
                        };
                        variants.push((case.clone(), w));
                    }
                    TKind::Object {
                        members: vec![("type".into(), kind_enum, false, Vec::new())],
                        tag: Some("type".into()),
                        variants,
                    }
                }
                Kind::Alternate { branches } => {
                    TKind::Alternate(branches.iter().map(|(_, ty)| t.ids[ty]).collect())
                }
            };
            let id = t.ids[n];
            t.entries[id].kind = kind;
        }
        for c in &s.commands {
            let a = t.args(s, &c.args, &format!("q_obj_{}-arg", c.name));
            t.cmd_args.push(a);
            let r = match &c.returns {
                Some(r) => t.resolve(r),
                None => t.empty,
            };
            t.cmd_ret.push(r);
        }
        for e in &s.events {
            let a = t.args(s, &e.args, &format!("q_obj_{}-arg", e.name));
            t.ev_args.push(a);
        }
        t
    }

    fn push(&mut self, name: &str, kind: TKind, features: Vec<String>) -> usize {
        let id = self.entries.len();
        self.entries.push(TEntry {
            name: name.to_string(),
            kind,
            features,
        });
        self.ids.insert(name.to_string(), id);
        id
    }

    fn array_of(&mut self, elem: usize) -> usize {
        let name = format!("{}List", self.entries[elem].name);
        if let Some(&id) = self.ids.get(&name) {
            return id;
        }
        self.push(&name, TKind::Array(elem), Vec::new())
    }

    fn resolve(&mut self, r: &TypeRef) -> usize {
        match r {
            TypeRef::Named(n) => self.ids[n],
            TypeRef::Array(n) => {
                let e = self.ids[n];
                self.array_of(e)
            }
        }
    }

    fn object(
        &mut self,
        _s: &Schema,
        ms: &[MemberDef],
        tag: Option<String>,
        variants: Vec<(String, usize)>,
    ) -> TKind {
        let members = ms
            .iter()
            .map(|m| {
                (
                    m.name.clone(),
                    self.resolve(&m.ty),
                    m.optional,
                    m.features.clone(),
                )
            })
            .collect();
        TKind::Object {
            members,
            tag,
            variants,
        }
    }

    fn args(&mut self, s: &Schema, a: &Args, implicit: &str) -> usize {
        match a {
            Args::None => self.empty,
            Args::Named(n) => self.ids[n],
            Args::Inline(ms) => {
                let k = self.object(s, ms, None, Vec::new());
                self.push(implicit, k, Vec::new())
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Rust naming

const KEYWORDS: &[&str] = &[
    "as", "break", "const", "continue", "else", "enum", "extern", "false", "fn", "for", "if",
    "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref", "return", "static",
    "struct", "trait", "true", "type", "unsafe", "use", "where", "while", "async", "await", "dyn",
    "abstract", "become", "box", "do", "final", "macro", "override", "priv", "typeof", "unsized",
    "virtual", "yield", "try", "gen",
];

/// `io-status` → `io_status`, `UUID` → `uuid`, `type` → `r#type`.
fn snake(name: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = name.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_alphanumeric() {
            if c.is_ascii_uppercase()
                && i > 0
                && (chars[i - 1].is_ascii_lowercase() || chars[i - 1].is_ascii_digit())
            {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push('_');
        }
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    match out.as_str() {
        "self" | "super" | "crate" => format!("{out}_"),
        _ if KEYWORDS.contains(&out.as_str()) => format!("r#{out}"),
        _ => out,
    }
}

/// `query-status` → `QueryStatus`, `RTC_CHANGE` → `RtcChange`, `wheel-up` → `WheelUp`.
fn camel(name: &str) -> String {
    let mut out = String::new();
    for part in name
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|p| !p.is_empty())
    {
        let all_upper = !part.chars().any(|c| c.is_ascii_lowercase());
        let mut cs = part.chars();
        if let Some(f) = cs.next() {
            out.push(f.to_ascii_uppercase());
            if all_upper {
                out.extend(cs.map(|c| c.to_ascii_lowercase()));
            } else {
                out.extend(cs);
            }
        }
    }
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, 'V');
    }
    if out == "Self" {
        out.push('_');
    }
    out
}

/// Names of the Rust prelude that schema types must not shadow.
const PRELUDE: &[&str] = &[
    "String", "Option", "Vec", "Box", "Result", "Some", "None", "Ok", "Err", "Default",
];

/// A schema type name as a Rust type name: kept when it already is CamelCase; `Qapi` put
/// before a name of the Rust prelude (`String` → `QapiString`).
fn type_ident(name: &str) -> String {
    let id = if name.chars().all(|c| c.is_ascii_alphanumeric())
        && name.starts_with(|c: char| c.is_ascii_uppercase())
    {
        name.to_string()
    } else {
        camel(name)
    };
    if PRELUDE.contains(&id.as_str()) {
        format!("Qapi{id}")
    } else {
        id
    }
}

/// Rust field names for members, numbered on a clash (`pc`, `pc_2`).
fn field_idents(ms: &[MemberDef]) -> Vec<String> {
    let mut used: HashSet<String> = HashSet::new();
    ms.iter()
        .map(|m| {
            let base = snake(&m.name);
            let mut id = base.clone();
            let mut n = 2;
            while !used.insert(id.trim_start_matches("r#").to_string()) {
                id = format!("{}_{n}", base.trim_start_matches("r#"));
                n += 1;
            }
            id
        })
        .collect()
}

/// Schema doc text as Markdown: `@name` becomes code, brackets and angle brackets are escaped.
fn doc_escape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '@' if chars
                .peek()
                .is_some_and(|n| n.is_ascii_alphanumeric() || *n == '_') =>
            {
                let mut name = String::new();
                while let Some(&n) = chars.peek() {
                    if n.is_ascii_alphanumeric() || n == '-' || n == '_' || n == '.' {
                        name.push(n);
                        chars.next();
                    } else {
                        break;
                    }
                }
                let dots = name.len() - name.trim_end_matches('.').len();
                let _ = write!(out, "`{}`{}", name.trim_end_matches('.'), ".".repeat(dots));
            }
            '[' | ']' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

fn doc_lines(out: &mut String, indent: &str, text: &str) {
    for line in text.split('\n') {
        if line.is_empty() {
            let _ = writeln!(out, "{indent}///");
        } else {
            let _ = writeln!(out, "{indent}/// {}", doc_escape(line));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Code generation

struct Gen<'a> {
    s: &'a Schema,
    t: &'a Tables,
}

/// How a member's type is written in Rust.
struct RustTy {
    ty: String,
    /// `uint64`/`size`: needs the wrapping deserializer (QEMU accepts negative numbers).
    wrap_u64: bool,
    array: bool,
}

const HELPERS: &str = "crate::schema::de";

impl Gen<'_> {
    fn builtin_rust(n: &str) -> Option<&'static str> {
        Some(match n {
            "str" => "String",
            "int" | "int64" => "i64",
            "int8" => "i8",
            "int16" => "i16",
            "int32" => "i32",
            "uint8" => "u8",
            "uint16" => "u16",
            "uint32" => "u32",
            "uint64" | "size" => "u64",
            "number" => "f64",
            "bool" => "bool",
            "any" => "serde_json::Value",
            "null" => "()",
            _ => return None,
        })
    }

    /// `prefix` is "" inside the types module and `crate::schema::types::` elsewhere.
    fn rust_ty(&self, r: &TypeRef, prefix: &str, boxed: bool) -> RustTy {
        let n = r.elem();
        let base = match Self::builtin_rust(n) {
            Some(b) => b.to_string(),
            None => format!("{prefix}{}", type_ident(n)),
        };
        let wrap_u64 = matches!(n, "uint64" | "size");
        match r {
            TypeRef::Named(_) if boxed => RustTy {
                ty: format!("Box<{base}>"),
                wrap_u64,
                array: false,
            },
            TypeRef::Named(_) => RustTy {
                ty: base,
                wrap_u64,
                array: false,
            },
            TypeRef::Array(_) => RustTy {
                ty: format!("Vec<{base}>"),
                wrap_u64,
                array: true,
            },
        }
    }

    /// Whether a value of the type can be JSON `null`.
    fn nullable(&self, r: &TypeRef) -> bool {
        match r {
            TypeRef::Array(_) => false,
            TypeRef::Named(n) => match n.as_str() {
                "null" | "any" => true,
                _ => matches!(
                    self.s.types.get(n).map(|t| &t.kind),
                    Some(Kind::Alternate { branches }) if branches.iter().any(|(_, b)| b == "null")
                ),
            },
        }
    }

    /// Named types that `from` holds inline (not behind a Vec), and whether through an enum
    /// variant (union branch, alternate branch) rather than a struct field.
    fn inline_edges(&self, from: &str) -> Vec<(String, bool)> {
        let Some(t) = self.s.types.get(from) else {
            return Vec::new();
        };
        let named = |r: &TypeRef| match r {
            TypeRef::Named(n) if !is_builtin(n) => Some(n.clone()),
            _ => None,
        };
        let field = |n: String| (n, false);
        let variant = |n: String| (n, true);
        match &t.kind {
            Kind::Struct { .. } => self
                .s
                .struct_members(from)
                .iter()
                .filter_map(|m| named(&m.ty))
                .map(field)
                .collect(),
            Kind::Enum { .. } => Vec::new(),
            Kind::FlatUnion { branches, .. } => {
                let mut v: Vec<_> = self
                    .s
                    .union_base(t)
                    .iter()
                    .filter_map(|m| named(&m.ty))
                    .map(field)
                    .collect();
                v.extend(branches.iter().map(|(_, b)| variant(b.clone())));
                v
            }
            Kind::SimpleUnion { branches } => branches
                .iter()
                .filter_map(|(_, r)| named(r))
                .map(variant)
                .collect(),
            Kind::Alternate { branches } => branches
                .iter()
                .filter(|(_, b)| !is_builtin(b))
                .map(|(_, b)| variant(b.clone()))
                .collect(),
        }
    }

    /// Whether `from` reaches `to` through inline edges (only struct fields if `fields_only`).
    fn reaches(&self, from: &str, to: &str, fields_only: bool) -> bool {
        let mut stack = vec![from.to_string()];
        let mut seen = HashSet::new();
        while let Some(n) = stack.pop() {
            if n == to {
                return true;
            }
            if seen.insert(n.clone()) {
                stack.extend(
                    self.inline_edges(&n)
                        .into_iter()
                        .filter(|(_, v)| !fields_only || !*v)
                        .map(|(t, _)| t),
                );
            }
        }
        false
    }

    /// Whether the edge `from` → `to` must be boxed to break a cycle of inline types. Cycles
    /// through an enum (union, alternate) are broken at the enum's variants; cycles of struct
    /// fields only at the fields.
    fn needs_box(&self, from: &str, to: &str, variant: bool) -> bool {
        !is_builtin(to) && self.reaches(to, from, !variant)
    }

    fn member_doc(&self, doc: &Doc, m: &MemberDef) -> String {
        let text = match doc.member(&m.name) {
            Some(t) => t.to_string(),
            None => format!("The `{}` member.", m.name),
        };
        if m.optional {
            format!("{text}\n\nOptional: absent on the wire when `None`.")
        } else {
            text
        }
    }

    fn item_doc(doc: &Doc, fallback: &str) -> String {
        let mut text = if doc.body.is_empty() {
            fallback.to_string()
        } else {
            doc.body.clone()
        };
        if let Some(s) = &doc.since {
            let _ = write!(text, "\n\nSince: {s}");
        }
        text
    }

    /// Struct fields; `owner` is the containing schema type (for boxing), if any.
    fn fields(
        &self,
        out: &mut String,
        ms: &[MemberDef],
        docs: &[&Doc],
        owner: Option<&str>,
        prefix: &str,
    ) {
        let idents = field_idents(ms);
        for (m, id) in ms.iter().zip(idents) {
            let doc = docs
                .iter()
                .find(|d| d.member(&m.name).is_some())
                .copied()
                .unwrap_or(docs[0]);
            doc_lines(out, "    ", &self.member_doc(doc, m));
            let boxed = owner
                .is_some_and(|o| matches!(&m.ty, TypeRef::Named(n) if self.needs_box(o, n, false)));
            let rt = self.rust_ty(&m.ty, prefix, boxed);
            let mut attrs: Vec<String> = Vec::new();
            if id.trim_start_matches("r#") != m.name {
                attrs.push(format!("rename = {:?}", m.name));
            }
            if m.optional {
                attrs.push("default".into());
                attrs.push("skip_serializing_if = \"Option::is_none\"".into());
            }
            if m.optional && self.nullable(&m.ty) {
                attrs.push(format!("deserialize_with = \"{HELPERS}::present\""));
            } else if rt.wrap_u64 {
                let f = match (m.optional, rt.array) {
                    (false, false) => "u64",
                    (true, false) => "opt_u64",
                    (false, true) => "vec_u64",
                    (true, true) => "opt_vec_u64",
                };
                attrs.push(format!("deserialize_with = \"{HELPERS}::{f}\""));
            }
            if !attrs.is_empty() {
                let _ = writeln!(out, "    #[serde({})]", attrs.join(", "));
            }
            let ty = if m.optional {
                format!("Option<{}>", rt.ty)
            } else {
                rt.ty
            };
            let _ = writeln!(out, "    pub {id}: {ty},");
        }
    }

    fn struct_derives(ms: &[MemberDef]) -> &'static str {
        if ms.iter().all(|m| m.optional) {
            "#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]"
        } else {
            "#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]"
        }
    }

    fn base_docs(&self, name: &str) -> Vec<&Doc> {
        let mut docs = Vec::new();
        let mut cur = Some(name.to_string());
        while let Some(c) = cur {
            match self.s.types.get(&c) {
                Some(t) => {
                    docs.push(&t.doc);
                    cur = match &t.kind {
                        Kind::Struct { base, .. } => base.clone(),
                        Kind::FlatUnion { base_name, .. } => base_name.clone(),
                        _ => None,
                    };
                }
                None => break,
            }
        }
        docs
    }

    fn types(&self) -> String {
        let mut o = String::new();
        o.push_str("// Generated by qmp/build.rs from qmp/schema/*.json. Do not edit.\n\n");
        for n in &self.s.type_order {
            let t = &self.s.types[n];
            let id = type_ident(n);
            let fallback = format!("The QAPI type `{n}`.");
            match &t.kind {
                Kind::Struct { .. } => {
                    let ms = self.s.struct_members(n);
                    doc_lines(&mut o, "", &Self::item_doc(&t.doc, &fallback));
                    let _ = writeln!(o, "{}", Self::struct_derives(&ms));
                    let _ = writeln!(o, "#[serde(deny_unknown_fields)]");
                    let _ = writeln!(o, "pub struct {id} {{");
                    self.fields(&mut o, &ms, &self.base_docs(n), Some(n), "");
                    let _ = writeln!(o, "}}\n");
                }
                Kind::Enum { values } => {
                    doc_lines(&mut o, "", &Self::item_doc(&t.doc, &fallback));
                    let _ = writeln!(
                        o,
                        "#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]"
                    );
                    let _ = writeln!(o, "pub enum {id} {{");
                    let vids = self.variant_idents(values.iter().map(String::as_str), &t.loc);
                    for (v, vid) in values.iter().zip(&vids) {
                        let text = t
                            .doc
                            .member(v)
                            .map(str::to_string)
                            .unwrap_or_else(|| format!("`{v}`."));
                        doc_lines(&mut o, "    ", &text);
                        let _ = writeln!(o, "    #[serde(rename = {v:?})]");
                        let _ = writeln!(o, "    {vid},");
                    }
                    let _ = writeln!(o, "}}\n");
                    let _ = writeln!(o, "impl {id} {{");
                    let _ = writeln!(o, "    /// Every value, in schema order.");
                    let _ = writeln!(
                        o,
                        "    pub const ALL: &'static [{id}] = &[{}];",
                        vids.iter()
                            .map(|v| format!("{id}::{v}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    let _ = writeln!(o, "\n    /// The wire name.");
                    let _ = writeln!(o, "    pub fn as_str(self) -> &'static str {{");
                    let _ = writeln!(o, "        match self {{");
                    for (v, vid) in values.iter().zip(&vids) {
                        let _ = writeln!(o, "            {id}::{vid} => {v:?},");
                    }
                    let _ = writeln!(o, "        }}\n    }}\n}}\n");
                }
                Kind::FlatUnion { tag, branches, .. } => {
                    let base = self.s.union_base(t);
                    let tag_ty = base
                        .iter()
                        .find(|m| m.name == *tag)
                        .map(|m| m.ty.elem().to_string())
                        .unwrap_or_default();
                    let Some(Kind::Enum { values }) = self.s.types.get(&tag_ty).map(|t| &t.kind)
                    else {
                        unreachable!()
                    };
                    let rest: Vec<MemberDef> =
                        base.iter().filter(|m| m.name != *tag).cloned().collect();
                    let enum_id = if rest.is_empty() {
                        id.clone()
                    } else {
                        format!("{id}Branch")
                    };
                    if !rest.is_empty() {
                        doc_lines(&mut o, "", &Self::item_doc(&t.doc, &fallback));
                        let _ = writeln!(o, "///\n/// A flat union: the members common to every branch, and in `branch` the `{tag}` discriminator with the members it selects.");
                        let _ = writeln!(o, "#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]");
                        let _ = writeln!(o, "pub struct {id} {{");
                        self.fields(&mut o, &rest, &self.base_docs(n), Some(n), "");
                        let _ = writeln!(
                            o,
                            "    /// The `{tag}` discriminator and the members of its branch."
                        );
                        let _ = writeln!(o, "    #[serde(flatten)]");
                        let _ = writeln!(o, "    pub branch: {enum_id},");
                        let _ = writeln!(o, "}}\n");
                        let _ = writeln!(o, "/// The branches of [`{id}`], tagged by `{tag}`.");
                    } else {
                        doc_lines(&mut o, "", &Self::item_doc(&t.doc, &fallback));
                        let _ = writeln!(o, "///\n/// A flat union tagged by `{tag}`.");
                    }
                    let _ = writeln!(o, "#[allow(clippy::large_enum_variant)]");
                    let _ = writeln!(
                        o,
                        "#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]"
                    );
                    let _ = writeln!(o, "#[serde(tag = {tag:?})]");
                    let _ = writeln!(o, "pub enum {enum_id} {{");
                    let vids = self.variant_idents(values.iter().map(String::as_str), &t.loc);
                    for (v, vid) in values.iter().zip(&vids) {
                        let _ = writeln!(o, "    /// `{tag}` = `{v}`.");
                        let _ = writeln!(o, "    #[serde(rename = {v:?})]");
                        match branches.iter().find(|(c, _)| c == v) {
                            Some((_, bt)) => {
                                let rt = self.rust_ty(
                                    &TypeRef::Named(bt.clone()),
                                    "",
                                    self.needs_box(n, bt, true),
                                );
                                let _ = writeln!(o, "    {vid}({}),", rt.ty);
                            }
                            None => {
                                let _ = writeln!(o, "    {vid} {{}},");
                            }
                        }
                    }
                    let _ = writeln!(o, "}}\n");
                }
                Kind::SimpleUnion { branches } => {
                    doc_lines(&mut o, "", &Self::item_doc(&t.doc, &fallback));
                    let _ = writeln!(o, "///\n/// A simple union: `{{\"type\": BRANCH, \"data\": VALUE}}` on the wire.");
                    let _ = writeln!(o, "#[allow(clippy::large_enum_variant)]");
                    let _ = writeln!(
                        o,
                        "#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]"
                    );
                    let _ = writeln!(
                        o,
                        "#[serde(tag = \"type\", content = \"data\", deny_unknown_fields)]"
                    );
                    let _ = writeln!(o, "pub enum {id} {{");
                    let vids =
                        self.variant_idents(branches.iter().map(|(c, _)| c.as_str()), &t.loc);
                    for ((case, ty), vid) in branches.iter().zip(&vids) {
                        let text = t
                            .doc
                            .member(case)
                            .map(str::to_string)
                            .unwrap_or_else(|| format!("`type` = `{case}`."));
                        doc_lines(&mut o, "    ", &text);
                        let rt = self.rust_ty(ty, "", self.needs_box(n, ty.elem(), true));
                        if rt.wrap_u64 {
                            let _ = writeln!(o, "    #[serde(rename = {case:?}, deserialize_with = \"{HELPERS}::u64\")]");
                        } else {
                            let _ = writeln!(o, "    #[serde(rename = {case:?})]");
                        }
                        let _ = writeln!(o, "    {vid}({}),", rt.ty);
                    }
                    let _ = writeln!(o, "}}\n");
                }
                Kind::Alternate { branches } => {
                    doc_lines(&mut o, "", &Self::item_doc(&t.doc, &fallback));
                    let _ = writeln!(
                        o,
                        "///\n/// An alternate: the JSON type of the value selects the branch."
                    );
                    let _ = writeln!(o, "#[allow(clippy::large_enum_variant)]");
                    let _ = writeln!(
                        o,
                        "#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]"
                    );
                    let _ = writeln!(o, "#[serde(untagged)]");
                    let _ = writeln!(o, "pub enum {id} {{");
                    let vids =
                        self.variant_idents(branches.iter().map(|(c, _)| c.as_str()), &t.loc);
                    for ((case, ty), vid) in branches.iter().zip(&vids) {
                        let text = t
                            .doc
                            .member(case)
                            .map(str::to_string)
                            .unwrap_or_else(|| format!("The `{case}` branch."));
                        doc_lines(&mut o, "    ", &text);
                        let rt = self.rust_ty(
                            &TypeRef::Named(ty.clone()),
                            "",
                            self.needs_box(n, ty, true),
                        );
                        if rt.wrap_u64 {
                            let _ =
                                writeln!(o, "    #[serde(deserialize_with = \"{HELPERS}::u64\")]");
                        }
                        let _ = writeln!(o, "    {vid}({}),", rt.ty);
                    }
                    let _ = writeln!(o, "}}\n");
                }
            }
        }
        o
    }

    fn variant_idents<'b>(&self, values: impl Iterator<Item = &'b str>, loc: &Loc) -> Vec<String> {
        let mut seen: HashMap<String, String> = HashMap::new();
        let mut out = Vec::new();
        for v in values {
            let id = camel(v);
            if let Some(prev) = seen.insert(id.clone(), v.to_string()) {
                fail(format!(
                    "{loc}: values '{prev}' and '{v}' both map to Rust name {id}"
                ));
            }
            out.push(id);
        }
        out
    }

    /// Rust marker names of the commands: CamelCase, `Legacy` appended when taken.
    fn command_idents(&self) -> Vec<String> {
        let mut used = HashSet::new();
        self.s
            .commands
            .iter()
            .map(|c| {
                let mut id = camel(&c.name);
                while !used.insert(id.clone()) {
                    id.push_str("Legacy");
                }
                id
            })
            .collect()
    }

    fn event_idents(&self) -> Vec<String> {
        let mut used = HashSet::new();
        self.s
            .events
            .iter()
            .map(|e| {
                let mut id = camel(&e.name);
                while !used.insert(id.clone()) {
                    id.push_str("Event");
                }
                id
            })
            .collect()
    }

    fn ret_rust(&self, r: &Option<TypeRef>) -> String {
        match r {
            None => "super::Empty".into(),
            Some(r) => self.rust_ty(r, "crate::schema::types::", false).ty,
        }
    }

    fn commands(&self) -> String {
        let mut o = String::new();
        o.push_str("// Generated by qmp/build.rs from qmp/schema/*.json. Do not edit.\n\n");
        let ids = self.command_idents();
        for (c, id) in self.s.commands.iter().zip(&ids) {
            let args_ty = match &c.args {
                Args::None => "super::Empty".to_string(),
                Args::Named(n) => format!("crate::schema::types::{}", type_ident(n)),
                Args::Inline(ms) => {
                    let aid = format!("{id}Args");
                    let _ = writeln!(o, "/// The arguments of `{}`.", c.name);
                    if c.gen {
                        let _ = writeln!(o, "{}", Self::struct_derives(ms));
                        let _ = writeln!(o, "#[serde(deny_unknown_fields)]");
                    } else {
                        let _ = writeln!(o, "///\n/// `{}` also takes arguments the schema does not declare: they are in `extra`.", c.name);
                        let _ = writeln!(o, "#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]");
                    }
                    let _ = writeln!(o, "pub struct {aid} {{");
                    self.fields(&mut o, ms, &[&c.doc], None, "crate::schema::types::");
                    if !c.gen {
                        let _ = writeln!(
                            o,
                            "    /// The arguments beyond the declared ones, as they came."
                        );
                        let _ = writeln!(o, "    #[serde(flatten)]");
                        let _ = writeln!(
                            o,
                            "    pub extra: serde_json::Map<String, serde_json::Value>,"
                        );
                    }
                    let _ = writeln!(o, "}}\n");
                    aid
                }
            };
            let fallback = format!("The `{}` command.", c.name);
            let mut text = Self::item_doc(&c.doc, &fallback);
            let _ = write!(text, "\n\nWire name: `{}`.", c.name);
            doc_lines(&mut o, "", &text);
            let _ = writeln!(o, "#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]");
            let _ = writeln!(o, "pub struct {id};\n");
            let _ = writeln!(o, "impl super::Command for {id} {{");
            let _ = writeln!(o, "    const NAME: &'static str = {:?};", c.name);
            if c.allow_oob {
                let _ = writeln!(o, "    const ALLOW_OOB: bool = true;");
            }
            let _ = writeln!(o, "    type Args = {args_ty};");
            let _ = writeln!(o, "    type Returns = {};", self.ret_rust(&c.returns));
            let _ = writeln!(o, "}}\n");
        }
        let _ = writeln!(o, "/// Every command of the schema, in definition order.");
        let _ = writeln!(o, "pub const ALL_COMMANDS: &[&str] = &[");
        for c in &self.s.commands {
            let _ = writeln!(o, "    {:?},", c.name);
        }
        let _ = writeln!(o, "];");
        o
    }

    fn events(&self) -> String {
        let mut o = String::new();
        o.push_str("// Generated by qmp/build.rs from qmp/schema/*.json. Do not edit.\n\n");
        let ids = self.event_idents();
        for (e, id) in self.s.events.iter().zip(&ids) {
            let fallback = format!("The `{}` event.", e.name);
            let mut text = Self::item_doc(&e.doc, &fallback);
            let _ = write!(text, "\n\nWire name: `{}`.", e.name);
            doc_lines(&mut o, "", &text);
            let has_data;
            match &e.args {
                Args::None => {
                    has_data = false;
                    let _ = writeln!(o, "#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]");
                    let _ = writeln!(o, "#[serde(deny_unknown_fields)]");
                    let _ = writeln!(o, "pub struct {id} {{}}\n");
                }
                Args::Inline(ms) => {
                    has_data = true;
                    let _ = writeln!(o, "{}", Self::struct_derives(ms));
                    let _ = writeln!(o, "#[serde(deny_unknown_fields)]");
                    let _ = writeln!(o, "pub struct {id} {{");
                    self.fields(&mut o, ms, &[&e.doc], None, "crate::schema::types::");
                    let _ = writeln!(o, "}}\n");
                }
                Args::Named(n) => {
                    has_data = true;
                    let _ = writeln!(
                        o,
                        "#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]"
                    );
                    let _ = writeln!(o, "#[serde(transparent)]");
                    let _ = writeln!(
                        o,
                        "pub struct {id}(pub crate::schema::types::{});\n",
                        type_ident(n)
                    );
                }
            }
            let _ = writeln!(o, "impl super::Event for {id} {{");
            let _ = writeln!(o, "    const NAME: &'static str = {:?};", e.name);
            if !has_data {
                let _ = writeln!(o, "    const HAS_DATA: bool = false;");
            }
            let _ = writeln!(o, "}}\n");
        }
        let _ = writeln!(o, "/// Every event of the schema, in definition order.");
        let _ = writeln!(o, "pub const ALL_EVENTS: &[&str] = &[");
        for e in &self.s.events {
            let _ = writeln!(o, "    {:?},", e.name);
        }
        let _ = writeln!(o, "];");
        o
    }

    fn tables(&self) -> String {
        let mut o = String::new();
        o.push_str("// Generated by qmp/build.rs from qmp/schema/*.json. Do not edit.\n\n");
        let strs = |v: &[String]| {
            format!(
                "&[{}]",
                v.iter()
                    .map(|s| format!("{s:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let _ = writeln!(o, "/// Every type, by [`TypeId`].");
        let _ = writeln!(
            o,
            "pub(crate) static TYPES: [TypeInfo; {}] = [",
            self.t.entries.len()
        );
        for (i, e) in self.t.entries.iter().enumerate() {
            let kind = match &e.kind {
                TKind::Builtin(b) => format!("TypeKind::Builtin(Builtin::{b})"),
                TKind::Enum(v) => format!("TypeKind::Enum({})", strs(v)),
                TKind::Array(el) => format!("TypeKind::Array({el})"),
                TKind::Alternate(v) => {
                    format!(
                        "TypeKind::Alternate(&[{}])",
                        v.iter()
                            .map(|x| x.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
                TKind::Object {
                    members,
                    tag,
                    variants,
                } => {
                    let ms: Vec<String> = members
                        .iter()
                        .map(|(n, ty, opt, f)| {
                            format!(
                                "Member {{ name: {n:?}, ty: {ty}, optional: {opt}, features: {} }}",
                                strs(f)
                            )
                        })
                        .collect();
                    let vs: Vec<String> = variants
                        .iter()
                        .map(|(c, ty)| format!("Variant {{ case: {c:?}, ty: {ty} }}"))
                        .collect();
                    format!(
                        "TypeKind::Object(Object {{ members: &[{}], tag: {}, variants: &[{}] }})",
                        ms.join(", "),
                        match tag {
                            Some(t) => format!("Some({t:?})"),
                            None => "None".into(),
                        },
                        vs.join(", ")
                    )
                }
            };
            let _ = writeln!(
                o,
                "    // {i}\n    TypeInfo {{ name: {:?}, kind: {kind}, features: {} }},",
                e.name,
                strs(&e.features)
            );
        }
        let _ = writeln!(o, "];\n");
        let _ = writeln!(o, "/// The empty object type (`q_empty`).");
        let _ = writeln!(
            o,
            "pub(crate) const EMPTY_OBJECT: TypeId = {};",
            self.t.empty
        );
        let _ = writeln!(o, "/// The builtin `int`.");
        let _ = writeln!(o, "pub(crate) const INT: TypeId = {};", self.t.ids["int"]);
        let _ = writeln!(o, "/// `[int]`.");
        let _ = writeln!(
            o,
            "pub(crate) const INT_LIST: TypeId = {};\n",
            self.t.ids["intList"]
        );
        let _ = writeln!(o, "/// Every command, in definition order.");
        let _ = writeln!(
            o,
            "pub(crate) static COMMANDS: [CommandInfo; {}] = [",
            self.s.commands.len()
        );
        for (i, c) in self.s.commands.iter().enumerate() {
            let _ = writeln!(
                o,
                "    CommandInfo {{ name: {:?}, arg_type: {}, ret_type: {}, allow_oob: {}, extra_args: {}, features: {}, order: {} }},",
                c.name,
                self.t.cmd_args[i],
                self.t.cmd_ret[i],
                c.allow_oob,
                !c.gen,
                strs(&c.features),
                c.order
            );
        }
        let _ = writeln!(o, "];\n");
        let _ = writeln!(o, "/// Every event, in definition order.");
        let _ = writeln!(
            o,
            "pub(crate) static EVENTS: [EventInfo; {}] = [",
            self.s.events.len()
        );
        for (i, e) in self.s.events.iter().enumerate() {
            let _ = writeln!(
                o,
                "    EventInfo {{ name: {:?}, arg_type: {}, features: {}, order: {} }},",
                e.name,
                self.t.ev_args[i],
                strs(&e.features),
                e.order
            );
        }
        let _ = writeln!(o, "];");
        o
    }

    fn testsupport(&self) -> String {
        let mut o = String::new();
        o.push_str("// Generated by qmp/build.rs from qmp/schema/*.json. Do not edit.\n\n");
        let types = self.s.type_order.iter().map(|n| {
            (
                n.clone(),
                format!("crate::schema::types::{}", type_ident(n)),
            )
        });
        roundtrip_fn(
            &mut o,
            "roundtrip_type",
            "Decodes `v` as the Rust type of schema type `name` and encodes it again.",
            types,
        );
        let command_type = |part: &str| {
            self.s
                .commands
                .iter()
                .zip(self.command_idents())
                .map(|(c, id)| {
                    let path = format!(
                        "<crate::schema::commands::{id} as crate::schema::Command>::{part}"
                    );
                    (c.name.clone(), path)
                })
                .collect::<Vec<_>>()
        };
        roundtrip_fn(
            &mut o,
            "roundtrip_args",
            "Decodes `v` as the `Args` of command `name` and encodes it again.",
            command_type("Args").into_iter(),
        );
        let events = self
            .s
            .events
            .iter()
            .zip(self.event_idents())
            .map(|(e, id)| (e.name.clone(), format!("crate::schema::events::{id}")));
        roundtrip_fn(
            &mut o,
            "roundtrip_event",
            "Decodes `v` as the data of event `name` and encodes it again.",
            events,
        );
        roundtrip_fn(&mut o, "roundtrip_returns", "Encodes an example return value of command `name` (checks that the type exists and serializes).", command_type("Returns").into_iter());
        o
    }
}

/// Writes `fn <fn_name>(name, v)`: a match from each schema name to `roundtrip::<type>(v)`.
fn roundtrip_fn(
    o: &mut String,
    fn_name: &str,
    doc: &str,
    arms: impl Iterator<Item = (String, String)>,
) {
    let _ = writeln!(o, "/// {doc}");
    let _ = writeln!(
        o,
        "pub(crate) fn {fn_name}(name: &str, v: &serde_json::Value) -> Option<Result<serde_json::Value, String>> {{"
    );
    let _ = writeln!(o, "    Some(match name {{");
    for (name, ty) in arms {
        let _ = writeln!(o, "        {name:?} => roundtrip::<{ty}>(v),");
    }
    let _ = writeln!(o, "        _ => return None,\n    }})\n}}\n");
}
