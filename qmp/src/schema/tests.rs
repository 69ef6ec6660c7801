//! Tests of the schema and of the code generated from it.

use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;

use serde_json::{json, Map, Value};

use super::commands::{self, ALL_COMMANDS};
use super::events::{self, ALL_EVENTS};
use super::introspect::schema_info;
use super::meta::{self, Builtin, TypeId, TypeKind, COMMANDS, EVENTS, TYPES};
use super::validate::{validate_arguments, validate_value};
use super::{types, Command, Empty, Event};
use crate::error::ErrorClass;

fn roundtrip<T: serde::Serialize + serde::de::DeserializeOwned>(
    v: &Value,
) -> Result<Value, String> {
    let t: T = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
    serde_json::to_value(&t).map_err(|e| e.to_string())
}

mod generated {
    use super::roundtrip;
    include!(concat!(env!("OUT_DIR"), "/qapi_testsupport.rs"));
}
use generated::{roundtrip_args, roundtrip_event, roundtrip_returns, roundtrip_type};

// ---------------------------------------------------------------------------------------------
// Coverage of the specification pack

fn spec_commands() -> Vec<Value> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/spec/commands.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "the specification pack is missing: cannot read {}: {e}",
            path.display()
        )
    });
    match serde_json::from_str(&text) {
        Ok(Value::Array(a)) => a,
        other => panic!("{} is not a JSON array: {other:?}", path.display()),
    }
}

#[test]
fn schema_has_every_command_of_the_spec() {
    let spec = spec_commands();
    assert_eq!(spec.len(), 110, "the pack lists 110 commands");
    let mut expected = BTreeSet::new();
    for c in &spec {
        let name = c["name"].as_str().expect("command name");
        expected.insert(name.to_string());
        for alias in c["aliases"].as_array().expect("aliases") {
            expected.insert(alias.as_str().expect("alias").to_string());
        }
    }
    assert_eq!(expected.len(), 113, "110 commands and 3 aliases");
    let have: BTreeSet<String> = ALL_COMMANDS.iter().map(|s| s.to_string()).collect();
    let missing: Vec<_> = expected.difference(&have).collect();
    assert!(
        missing.is_empty(),
        "commands missing from the schema: {missing:?}"
    );
    let extra: Vec<_> = have.difference(&expected).collect();
    assert!(extra.is_empty(), "commands not in the pack: {extra:?}");
    assert_eq!(ALL_COMMANDS.len(), COMMANDS.len());
}

#[test]
fn aliases_have_their_own_arguments() {
    let ok = |c: &str, a: Value| validate_arguments(c, a.as_object().unwrap());
    assert!(ok("block_job_set_speed", json!({"device": "d", "value": 1})).is_ok());
    assert_eq!(
        ok("block_job_set_speed", json!({"device": "d", "speed": 1}))
            .unwrap_err()
            .desc,
        "Parameter 'value' is missing"
    );
    assert!(ok("block-job-set-speed", json!({"device": "d", "speed": 1})).is_ok());
    assert!(ok("block_stream", json!({"device": "d", "base": "b"})).is_ok());
    assert_eq!(
        ok("block_stream", json!({"device": "d", "speed": 1}))
            .unwrap_err()
            .desc,
        "Parameter 'speed' is unexpected"
    );
    assert!(ok("block_job_cancel", json!({"device": "d"})).is_ok());
}

const UPSTREAM_EVENTS: &[&str] = &[
    "SHUTDOWN",
    "POWERDOWN",
    "RESET",
    "STOP",
    "RESUME",
    "SUSPEND",
    "SUSPEND_DISK",
    "WAKEUP",
    "RTC_CHANGE",
    "WATCHDOG",
    "GUEST_PANICKED",
    "DEVICE_DELETED",
    "DEVICE_TRAY_MOVED",
    "ACPI_DEVICE_OST",
    "MEM_UNPLUG_ERROR",
    "NIC_RX_FILTER_CHANGED",
    "VSERPORT_CHANGE",
    "BLOCK_IO_ERROR",
    "BLOCK_JOB_COMPLETED",
    "BLOCK_JOB_CANCELLED",
    "BLOCK_JOB_ERROR",
    "BLOCK_JOB_READY",
    "BLOCK_WRITE_THRESHOLD",
    "BALLOON_CHANGE",
    "MIGRATION",
    "MIGRATION_PASS",
    "DUMP_COMPLETED",
    "VNC_CONNECTED",
    "VNC_INITIALIZED",
    "VNC_DISCONNECTED",
    "SPICE_CONNECTED",
    "SPICE_INITIALIZED",
    "SPICE_DISCONNECTED",
    "SPICE_MIGRATE_COMPLETED",
];

#[test]
fn schema_has_every_event_of_upstream_facts() {
    let have: BTreeSet<&str> = ALL_EVENTS.iter().copied().collect();
    let want: BTreeSet<&str> = UPSTREAM_EVENTS.iter().copied().collect();
    assert_eq!(have, want);
    assert_eq!(ALL_EVENTS.len(), EVENTS.len());
    // Members named in upstream-facts.md.
    let members = |e: &str| -> Vec<&str> {
        match &TYPES[meta::event(e).unwrap().arg_type].kind {
            TypeKind::Object(o) => o.members.iter().map(|m| m.name).collect(),
            _ => unreachable!(),
        }
    };
    assert_eq!(members("SHUTDOWN"), ["guest", "reason"]);
    assert_eq!(members("RTC_CHANGE")[0], "offset");
    assert_eq!(members("DEVICE_TRAY_MOVED"), ["device", "id", "tray-open"]);
    assert_eq!(
        members("BLOCK_JOB_COMPLETED"),
        ["type", "device", "len", "offset", "speed", "error"]
    );
    assert_eq!(
        members("BLOCK_WRITE_THRESHOLD"),
        ["node-name", "amount-exceeded", "write-threshold"]
    );
    assert_eq!(members("DUMP_COMPLETED"), ["result", "error"]);
    assert!(members("STOP").is_empty());
}

// ---------------------------------------------------------------------------------------------
// The generated API

#[test]
fn generated_names() {
    fn returns<C: Command>(_: C) -> std::marker::PhantomData<C::Returns> {
        std::marker::PhantomData
    }
    let _: std::marker::PhantomData<types::StatusInfo> = returns(commands::QueryStatus);
    let _: std::marker::PhantomData<Vec<types::CpuInfo>> = returns(commands::QueryCpus);
    let _: std::marker::PhantomData<Empty> = returns(commands::Stop);
    let _: std::marker::PhantomData<Value> = returns(commands::QomGet);
    let _: std::marker::PhantomData<String> = returns(commands::HumanMonitorCommand);
    assert_eq!(commands::QueryStatus::NAME, "query-status");
    assert_eq!(commands::BlockStreamLegacy::NAME, "block_stream");
    assert_eq!(commands::BlockStream::NAME, "block-stream");
    const { assert!(!commands::QmpCapabilities::ALLOW_OOB) };
    const { assert!(!commands::QueryStatus::ALLOW_OOB) };
    assert_eq!(types::RunState::Running.as_str(), "running");
    assert_eq!(events::Shutdown::NAME, "SHUTDOWN");
    assert_eq!(events::RtcChange::NAME, "RTC_CHANGE");
    const { assert!(events::Shutdown::HAS_DATA) };
    const { assert!(!events::Stop::HAS_DATA) };

    let e = events::Shutdown {
        guest: true,
        reason: types::ShutdownCause::GuestShutdown,
    };
    assert_eq!(
        serde_json::to_value(e).unwrap(),
        json!({"guest": true, "reason": "guest-shutdown"})
    );
    assert_eq!(serde_json::to_value(events::Stop {}).unwrap(), json!({}));
    let s = types::StatusInfo {
        running: true,
        singlestep: false,
        status: types::RunState::Running,
    };
    assert_eq!(
        serde_json::to_value(s).unwrap(),
        json!({"running": true, "singlestep": false, "status": "running"})
    );
    // A clash after snake-casing gets a numbered suffix; keywords are raw identifiers.
    let c: types::CpuInfo = serde_json::from_value(
        json!({"CPU": 0, "current": true, "halted": false, "pc": 1, "PC": 2, "thread_id": 7}),
    )
    .unwrap();
    assert_eq!((c.cpu, c.pc, c.pc_2, c.thread_id), (0, Some(1), Some(2), 7));
    let b: types::BlockInfo = serde_json::from_value(
        json!({"device": "d", "type": "unknown", "removable": false, "locked": false, "io-status": "ok"}),
    )
    .unwrap();
    assert_eq!(b.r#type, "unknown");
    assert_eq!(b.io_status, Some(types::BlockDeviceIoStatus::Ok));
    // The schema's String type does not shadow Rust's.
    let _ = types::QapiString { str: String::new() };
}

#[test]
fn args_decode_as_the_handlers_see_them() {
    let a: commands::DeviceAddArgs = serde_json::from_value(
        json!({"driver": "virtio-net-pci", "id": "n0", "mac": "52:54:00:12:34:56"}),
    )
    .unwrap();
    assert_eq!(a.driver, "virtio-net-pci");
    assert_eq!(a.id.as_deref(), Some("n0"));
    assert_eq!(a.extra.get("mac"), Some(&json!("52:54:00:12:34:56")));

    let o: types::BlockdevOptions = serde_json::from_value(json!({
        "driver": "qcow2", "node-name": "disk0",
        "file": {"driver": "file", "filename": "/img.qcow2"},
        "backing": null
    }))
    .unwrap();
    assert_eq!(o.node_name.as_deref(), Some("disk0"));
    let types::BlockdevOptionsBranch::Qcow2(q) = &o.branch else {
        panic!("{o:?}")
    };
    assert_eq!(q.backing, Some(types::BlockdevRefOrNull::Null(())));
    let types::BlockdevRef::Definition(f) = &q.file else {
        panic!("{q:?}")
    };
    assert!(
        matches!(&f.branch, types::BlockdevOptionsBranch::File(x) if x.filename == "/img.qcow2")
    );

    let n: types::Netdev =
        serde_json::from_value(json!({"id": "n", "type": "tap", "sndbuf": -1})).unwrap();
    let types::NetdevBranch::Tap(t) = n.branch else {
        panic!()
    };
    assert_eq!(
        t.sndbuf,
        Some(u64::MAX),
        "uint64/size take negative numbers as QEMU does"
    );

    let k: types::InputEvent = serde_json::from_value(
        json!({"type": "key", "data": {"down": true, "key": {"type": "qcode", "data": "ctrl"}}}),
    )
    .unwrap();
    assert_eq!(
        k,
        types::InputEvent::Key(types::InputKeyEvent {
            key: types::KeyValue::Qcode(types::QKeyCode::Ctrl),
            down: true
        })
    );
}

// ---------------------------------------------------------------------------------------------
// Validation messages

fn check(cmd: &str, args: Value) -> Result<(), String> {
    match validate_arguments(cmd, args.as_object().expect("object")) {
        Ok(()) => Ok(()),
        Err(e) => {
            assert_eq!(e.class, ErrorClass::GenericError);
            Err(e.desc)
        }
    }
}

fn err(cmd: &str, args: Value) -> String {
    check(cmd, args.clone()).expect_err(&format!("{cmd} {args} should fail"))
}

#[test]
fn unknown_and_missing_members() {
    assert_eq!(
        err("query-status", json!({"foo": 1})),
        "Parameter 'foo' is unexpected"
    );
    assert_eq!(err("cpu", json!({})), "Parameter 'index' is missing");
    assert_eq!(
        err("cpu", json!({"index": 1, "bar": 2})),
        "Parameter 'bar' is unexpected"
    );
    assert_eq!(
        err("memsave", json!({"val": 1, "size": 2})),
        "Parameter 'filename' is missing"
    );
    assert!(check("memsave", json!({"val": 1, "size": 2, "filename": "f"})).is_ok());
    assert!(check("query-status", json!({})).is_ok());
    // Not the schema's business.
    assert!(check("no-such-command", json!({"x": 1})).is_ok());
}

#[test]
fn wrong_json_types() {
    let t = |cmd: &str, args: Value, member: &str, expected: &str| {
        assert_eq!(
            err(cmd, args),
            format!("Invalid parameter type for '{member}', expected: {expected}")
        );
    };
    t("cpu", json!({"index": "1"}), "index", "integer");
    t("cpu", json!({"index": 1.5}), "index", "integer");
    t("cpu", json!({"index": u64::MAX}), "index", "integer");
    t("screendump", json!({"filename": 1}), "filename", "string");
    t(
        "migrate_set_downtime",
        json!({"value": "1"}),
        "value",
        "number",
    );
    t("set_link", json!({"name": "n", "up": 1}), "up", "boolean");
    t("input-send-event", json!({"events": {}}), "events", "array");
    t(
        "input-send-event",
        json!({"events": [1]}),
        "events[0]",
        "object",
    );
    t(
        "blockdev-add",
        json!({"driver": "file", "filename": "f", "cache": 1}),
        "cache",
        "object",
    );
    t(
        "qmp_capabilities",
        json!({"enable": "oob"}),
        "enable",
        "array",
    );
    assert!(
        check("migrate_set_downtime", json!({"value": 1})).is_ok(),
        "an integer is a number"
    );
    assert!(
        check(
            "qom-set",
            json!({"path": "/", "property": "p", "value": null})
        )
        .is_ok(),
        "any takes null"
    );
    // QEMU takes null for what it is: a value of the wrong type.
    t("query-rx-filter", json!({"name": null}), "name", "string");
}

#[test]
fn nested_paths() {
    assert_eq!(
        err(
            "blockdev-add",
            json!({"driver": "file", "filename": "f", "cache": {"direct": 1}})
        ),
        "Invalid parameter type for 'cache.direct', expected: boolean"
    );
    assert_eq!(
        err(
            "blockdev-add",
            json!({"driver": "file", "filename": "f", "cache": {"foo": true}})
        ),
        "Parameter 'cache.foo' is unexpected"
    );
    let snap = |data: Value| json!({"actions": [{"type": "blockdev-snapshot-sync", "data": data}]});
    assert_eq!(
        err(
            "transaction",
            snap(json!({"device": 1, "snapshot-file": "s"}))
        ),
        "Invalid parameter type for 'actions[0].data.device', expected: string"
    );
    assert_eq!(
        err("transaction", snap(json!({"device": "d"}))),
        "Parameter 'actions[0].data.snapshot-file' is missing"
    );
    assert_eq!(
        err(
            "transaction",
            json!({"actions": [{"type": "blockdev-snapshot-sync", "data": {"device": "d", "snapshot-file": "s"}}, {"data": {}}]})
        ),
        "Parameter 'actions[1].type' is missing"
    );
    assert_eq!(
        err(
            "input-send-event",
            json!({"events": [{"type": "abs", "data": {"axis": "x", "value": 1}}, {"type": "rel"}]})
        ),
        "Parameter 'events[1].data' is missing"
    );
    assert_eq!(
        err(
            "blockdev-add",
            json!({"driver": "raw", "file": {"driver": "file", "filename": 3}})
        ),
        "Invalid parameter type for 'file.filename', expected: string"
    );
}

#[test]
fn enum_values() {
    assert_eq!(
        err("block-stream", json!({"device": "d", "on-error": "bad"})),
        "Parameter 'on-error' does not accept value 'bad'"
    );
    assert_eq!(
        err("block-stream", json!({"device": "d", "on-error": 1})),
        "Invalid parameter type for 'on-error', expected: string"
    );
    // QEMU names list elements "null" in this message.
    assert_eq!(
        err("qmp_capabilities", json!({"enable": ["oob", "x"]})),
        "Parameter 'null' does not accept value 'x'"
    );
    assert!(check("qmp_capabilities", json!({"enable": ["oob"]})).is_ok());
    // The member name alone, not its path.
    assert_eq!(
        err(
            "blockdev-add",
            json!({"driver": "file", "filename": "f", "aio": "posix"})
        ),
        "Parameter 'aio' does not accept value 'posix'"
    );
}

#[test]
fn integer_ranges() {
    let groups = |t: Value| json!({"name": "sw", "type": t});
    assert_eq!(
        err("query-rocker-of-dpa-groups", groups(json!(256))),
        "Parameter 'type' expects uint8_t"
    );
    assert_eq!(
        err("query-rocker-of-dpa-groups", groups(json!(-1))),
        "Parameter 'type' expects uint8_t"
    );
    assert_eq!(
        err("query-rocker-of-dpa-groups", groups(json!("1"))),
        "Parameter 'type' expects uint64"
    );
    assert_eq!(
        err("query-rocker-of-dpa-groups", groups(json!(1.5))),
        "Parameter 'type' expects uint64"
    );
    assert!(check("query-rocker-of-dpa-groups", groups(json!(255))).is_ok());
    assert_eq!(
        err(
            "query-rocker-of-dpa-flows",
            json!({"name": "sw", "tbl-id": 4294967296u64})
        ),
        "Parameter 'tbl-id' expects uint32_t"
    );
    let hub = |id: Value| json!({"id": "h", "type": "hubport", "hubid": id});
    assert_eq!(
        err("netdev_add", hub(json!(2147483648u64))),
        "Parameter 'hubid' expects int32_t"
    );
    assert_eq!(
        err("netdev_add", hub(json!(-2147483649i64))),
        "Parameter 'hubid' expects int32_t"
    );
    assert_eq!(
        err("netdev_add", hub(json!("1"))),
        "Invalid parameter type for 'hubid', expected: integer"
    );
    assert!(check("netdev_add", hub(json!(-2147483648i64))).is_ok());
    let vde = |port: Value| json!({"id": "v", "type": "vde", "port": port});
    assert_eq!(
        err("netdev_add", vde(json!(65536))),
        "Parameter 'port' expects uint16_t"
    );
    let tap = |sndbuf: Value| json!({"id": "t", "type": "tap", "sndbuf": sndbuf});
    assert_eq!(
        err("netdev_add", tap(json!("1M"))),
        "Parameter 'sndbuf' expects uint64"
    );
    assert!(
        check("netdev_add", tap(json!(-1))).is_ok(),
        "QEMU takes negative uint64s"
    );
    assert!(check("netdev_add", tap(json!(u64::MAX))).is_ok());
}

#[test]
fn unions() {
    assert_eq!(
        err("blockdev-add", json!({})),
        "Parameter 'driver' is missing"
    );
    assert_eq!(
        err("blockdev-add", json!({"driver": "nbd"})),
        "Parameter 'driver' does not accept value 'nbd'"
    );
    assert_eq!(
        err("blockdev-add", json!({"driver": "file"})),
        "Parameter 'filename' is missing"
    );
    assert_eq!(
        err(
            "blockdev-add",
            json!({"driver": "file", "filename": "f", "offset": 0})
        ),
        "Parameter 'offset' is unexpected"
    );
    assert!(check(
        "blockdev-add",
        json!({"driver": "null-co", "node-name": "n", "size": 4096})
    )
    .is_ok());
    assert!(check(
        "blockdev-add",
        json!({"driver": "raw", "file": "n", "offset": 0})
    )
    .is_ok());
    // Base members are checked before the branch's.
    assert_eq!(
        err(
            "blockdev-add",
            json!({"driver": "file", "read-only": "yes"})
        ),
        "Invalid parameter type for 'read-only', expected: boolean"
    );
    // Simple unions.
    let key = |k: Value| json!({"events": [{"type": "key", "data": {"down": true, "key": k}}]});
    assert!(check(
        "input-send-event",
        key(json!({"type": "number", "data": 30}))
    )
    .is_ok());
    assert_eq!(
        err(
            "input-send-event",
            key(json!({"type": "qcode", "data": "nope"}))
        ),
        "Parameter 'data' does not accept value 'nope'"
    );
    assert_eq!(
        err(
            "input-send-event",
            key(json!({"type": "qcode", "data": "a", "x": 1}))
        ),
        "Parameter 'events[0].data.key.x' is unexpected"
    );
    assert_eq!(
        err(
            "input-send-event",
            key(json!({"type": "keysym", "data": 1}))
        ),
        "Parameter 'type' does not accept value 'keysym'"
    );
}

#[test]
fn alternates() {
    let raw = |file: Value| json!({"driver": "raw", "file": file});
    assert!(check("blockdev-add", raw(json!("node0"))).is_ok());
    assert!(check(
        "blockdev-add",
        raw(json!({"driver": "file", "filename": "/f"}))
    )
    .is_ok());
    assert_eq!(
        err("blockdev-add", raw(json!(true))),
        "Invalid parameter type for 'file', expected: BlockdevRef"
    );
    assert_eq!(
        err("blockdev-add", raw(json!(null))),
        "Invalid parameter type for 'file', expected: BlockdevRef"
    );
    let qcow2 = |backing: Value| json!({"driver": "qcow2", "file": "f", "backing": backing});
    assert!(check("blockdev-add", qcow2(json!(null))).is_ok());
    assert!(check("blockdev-add", qcow2(json!("b"))).is_ok());
    assert_eq!(
        err("blockdev-add", qcow2(json!(1))),
        "Invalid parameter type for 'backing', expected: BlockdevRefOrNull"
    );
    assert_eq!(
        err("blockdev-add", qcow2(json!({"driver": "file"}))),
        "Parameter 'backing.filename' is missing"
    );
}

#[test]
fn commands_with_free_form_arguments() {
    assert!(check(
        "device_add",
        json!({"driver": "virtio-blk-pci", "drive": "d0", "bootindex": 1})
    )
    .is_ok());
    assert_eq!(
        err("device_add", json!({"id": "x"})),
        "Parameter 'driver' is missing"
    );
    assert_eq!(
        err("device_add", json!({"driver": 1})),
        "Invalid parameter type for 'driver', expected: string"
    );
}

// ---------------------------------------------------------------------------------------------
// Generated examples: valid arguments pass and decode; broken ones fail as QEMU fails them

struct Rng(u64, bool);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn coin(&mut self) -> bool {
        self.next() & 1 == 1
    }
}

/// A random value of type `ty` that the schema accepts.
fn example(ty: TypeId, rng: &mut Rng, depth: usize) -> Value {
    match &TYPES[ty].kind {
        TypeKind::Builtin(b) => {
            let r = rng.next();
            match b {
                Builtin::Str => json!(["", "a", "disk0", "/dev/null", "ünï"][rng.below(5)]),
                Builtin::Int | Builtin::Int64 => {
                    json!([0, -1, 42, i64::MIN, i64::MAX][rng.below(5)])
                }
                Builtin::Int8 => json!(r as i8),
                Builtin::Int16 => json!(r as i16),
                Builtin::Int32 => json!(r as i32),
                Builtin::Uint8 => json!(r as u8),
                Builtin::Uint16 => json!(r as u16),
                Builtin::Uint32 => json!(r as u32),
                // QEMU takes negative numbers for these; they do not survive a round trip.
                Builtin::Uint64 | Builtin::Size if rng.1 && rng.coin() => {
                    json!(-(r as i32 as i64).abs() - 1)
                }
                Builtin::Uint64 | Builtin::Size => json!([0, 1, u64::MAX, r][rng.below(4)]),
                Builtin::Number => json!([0.5, -2.25, 1e100, 3.0][rng.below(4)]),
                Builtin::Bool => json!(rng.coin()),
                Builtin::Null => Value::Null,
                Builtin::Any => {
                    json!([json!(1), json!("s"), json!({"k": [true, 2]}), json!([])][rng.below(4)])
                }
            }
        }
        TypeKind::Enum(values) => json!(values[rng.below(values.len())]),
        TypeKind::Array(e) => {
            let n = if depth > 3 { 0 } else { rng.below(3) };
            Value::Array((0..n).map(|_| example(*e, rng, depth + 1)).collect())
        }
        TypeKind::Object(_) => Value::Object(example_object(ty, rng, depth)),
        TypeKind::Alternate(branches) => {
            let simple: Vec<TypeId> = branches
                .iter()
                .copied()
                .filter(|b| !matches!(TYPES[*b].kind, TypeKind::Object(_)))
                .collect();
            let b = if depth > 2 && !simple.is_empty() {
                simple[rng.below(simple.len())]
            } else {
                branches[rng.below(branches.len())]
            };
            example(b, rng, depth + 1)
        }
    }
}

fn example_object(ty: TypeId, rng: &mut Rng, depth: usize) -> Map<String, Value> {
    let TypeKind::Object(o) = &TYPES[ty].kind else {
        unreachable!()
    };
    let mut m = Map::new();
    let fill = |members: &[meta::Member], m: &mut Map<String, Value>, rng: &mut Rng| {
        for mem in members {
            if !mem.optional || (depth < 3 && rng.coin()) {
                m.insert(mem.name.to_string(), example(mem.ty, rng, depth + 1));
            }
        }
    };
    fill(o.members, &mut m, rng);
    if let Some(tag) = o.tag {
        let case = m[tag].as_str().unwrap().to_string();
        if let Some(v) = o.variants.iter().find(|v| v.case == case) {
            let TypeKind::Object(b) = &TYPES[v.ty].kind else {
                unreachable!()
            };
            fill(b.members, &mut m, rng);
        }
    }
    m
}

#[test]
fn generated_arguments_validate_and_decode() {
    let mut rng = Rng(0x5eed_1234_abcd_0001, false);
    for cmd in COMMANDS.iter() {
        for _ in 0..200 {
            let args = example_object(cmd.arg_type, &mut rng, 0);
            if let Err(e) = validate_arguments(cmd.name, &args) {
                panic!("{}: {} rejected: {}", cmd.name, Value::Object(args), e.desc);
            }
            let v = Value::Object(args);
            match roundtrip_args(cmd.name, &v).expect("every command has Args") {
                Ok(back) => assert_eq!(
                    back, v,
                    "{}: decoding and encoding changed the arguments",
                    cmd.name
                ),
                Err(e) => panic!(
                    "{}: {v} passed validation but does not decode: {e}",
                    cmd.name
                ),
            }
        }
    }
}

#[test]
fn generated_arguments_with_negative_uint64_decode() {
    // QEMU takes negative numbers for uint64 and size: they pass validation, so they decode.
    let mut rng = Rng(0x0bad_cafe_0000_0001, true);
    for cmd in COMMANDS.iter() {
        for _ in 0..100 {
            let args = example_object(cmd.arg_type, &mut rng, 0);
            let v = Value::Object(args.clone());
            assert!(
                validate_arguments(cmd.name, &args).is_ok(),
                "{}: {v}",
                cmd.name
            );
            if let Err(e) = roundtrip_args(cmd.name, &v).unwrap() {
                panic!(
                    "{}: {v} passed validation but does not decode: {e}",
                    cmd.name
                );
            }
        }
    }
}

#[test]
fn registry_checks_arguments_before_the_handler_runs() {
    use std::sync::mpsc;

    use crate::dispatch::{CallContext, Registry, Responder};

    let mut reg = Registry::new();
    let (seen_tx, seen_rx) = mpsc::channel();
    let seen_tx = std::sync::Mutex::new(seen_tx);
    reg.register::<commands::Cpu, _>(move |_ctx, args, reply| {
        seen_tx.lock().unwrap().send(args.index).unwrap();
        reply.ok(Empty {});
    });
    reg.register::<commands::QueryStatus, _>(|_ctx, _args, reply| {
        reply.ok(types::StatusInfo {
            running: false,
            singlestep: false,
            status: types::RunState::Prelaunch,
        })
    });
    let call = |name: &str, args: Value| {
        let (tx, rx) = mpsc::channel();
        let ctx = CallContext {
            monitor: 1,
            fds: Default::default(),
            received_fds: Vec::new(),
            oob: false,
        };
        let responder = Responder::new(move |r| tx.send(r).unwrap());
        reg.dispatch(ctx, name, args.as_object().cloned(), responder);
        rx.recv().unwrap()
    };
    assert_eq!(call("cpu", json!({"index": 3})), Ok(json!({})));
    assert_eq!(seen_rx.try_recv(), Ok(3));
    let e = call("cpu", json!({"index": "3"})).unwrap_err();
    assert_eq!(
        e.desc,
        "Invalid parameter type for 'index', expected: integer"
    );
    assert!(seen_rx.try_recv().is_err(), "the handler must not run");
    assert_eq!(
        call("query-status", json!({})),
        Ok(json!({"running": false, "singlestep": false, "status": "prelaunch"}))
    );
    assert_eq!(
        call("query-status", json!({"x": 1})).unwrap_err().desc,
        "Parameter 'x' is unexpected"
    );
}

#[test]
fn broken_arguments_fail_with_qemu_messages() {
    let mut rng = Rng(0xfeed_5678_0000_0042, false);
    for cmd in COMMANDS.iter() {
        let TypeKind::Object(o) = &TYPES[cmd.arg_type].kind else {
            unreachable!()
        };
        for _ in 0..10 {
            let args = example_object(cmd.arg_type, &mut rng, 0);

            let mut extra = args.clone();
            extra.insert("x-no-such-member".into(), json!(1));
            let r = validate_arguments(cmd.name, &extra);
            if cmd.extra_args {
                assert!(r.is_ok(), "{} takes arguments beyond its own", cmd.name);
            } else {
                assert_eq!(
                    r.unwrap_err().desc,
                    "Parameter 'x-no-such-member' is unexpected",
                    "{}",
                    cmd.name
                );
            }

            for m in o.members.iter().filter(|m| !m.optional) {
                let mut missing = args.clone();
                missing.remove(m.name);
                let e = validate_arguments(cmd.name, &missing).expect_err(cmd.name);
                assert_eq!(
                    e.desc,
                    format!("Parameter '{}' is missing", m.name),
                    "{}",
                    cmd.name
                );
            }

            for m in o.members.iter() {
                let mut wrong = args.clone();
                let (bad, expected) = match &TYPES[m.ty].kind {
                    TypeKind::Builtin(Builtin::Str) => (json!(1), "string"),
                    TypeKind::Builtin(Builtin::Bool) => (json!("true"), "boolean"),
                    TypeKind::Builtin(Builtin::Int) => (json!(0.5), "integer"),
                    TypeKind::Builtin(Builtin::Number) => (json!([]), "number"),
                    TypeKind::Enum(_) => (json!(false), "string"),
                    TypeKind::Array(_) => (json!({}), "array"),
                    TypeKind::Object(_) => (json!([]), "object"),
                    _ => continue,
                };
                wrong.insert(m.name.to_string(), bad);
                let e = validate_arguments(cmd.name, &wrong).expect_err(cmd.name);
                assert_eq!(
                    e.desc,
                    format!(
                        "Invalid parameter type for '{}', expected: {expected}",
                        m.name
                    ),
                    "{}",
                    cmd.name
                );
            }
        }
    }
}

#[test]
fn every_type_round_trips() {
    let mut rng = Rng(0x0123_4567_89ab_cdef, false);
    let mut named = 0;
    for (id, t) in TYPES.iter().enumerate() {
        for _ in 0..20 {
            let v = example(id, &mut rng, 0);
            let Some(r) = roundtrip_type(t.name, &v) else {
                break;
            };
            if let Err(e) = validate_value(t.name, "x", &v) {
                panic!("{}: example {v} is invalid: {e}", t.name);
            }
            match r {
                Ok(back) => assert_eq!(back, v, "{}: round trip changed the value", t.name),
                Err(e) => panic!("{}: {v} does not decode: {e}", t.name),
            }
        }
        if roundtrip_type(t.name, &Value::Null).is_some() {
            named += 1;
        }
    }
    assert!(named > 150, "only {named} named types");
}

#[test]
fn every_event_and_return_value_round_trips() {
    let mut rng = Rng(0x7777_0000_1111_2222, false);
    for e in EVENTS.iter() {
        for _ in 0..20 {
            let v = Value::Object(example_object(e.arg_type, &mut rng, 0));
            match roundtrip_event(e.name, &v).expect("every event has a struct") {
                Ok(back) => assert_eq!(back, v, "{}", e.name),
                Err(err) => panic!("{}: {v}: {err}", e.name),
            }
        }
    }
    for c in COMMANDS.iter() {
        for _ in 0..20 {
            let v = example(c.ret_type, &mut rng, 0);
            match roundtrip_returns(c.name, &v).expect("every command has Returns") {
                Ok(back) => assert_eq!(back, v, "{}", c.name),
                Err(err) => panic!("{}: {v}: {err}", c.name),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Introspection

fn entries(v: &Value) -> &Vec<Value> {
    v.as_array().expect("SchemaInfo list")
}

fn find<'a>(v: &'a Value, name: &str) -> &'a Value {
    entries(v)
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no entity {name}"))
}

/// Every type name an entity refers to.
fn references(e: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let s = |v: &Value| v.as_str().map(str::to_string);
    for k in ["arg-type", "ret-type", "element-type"] {
        out.extend(s(&e[k]));
    }
    for list in ["members", "variants"] {
        if let Some(a) = e[list].as_array() {
            out.extend(a.iter().filter_map(|m| s(&m["type"])));
        }
    }
    out
}

fn check_consistent(info: &Value) {
    let mut names = HashSet::new();
    for e in entries(info) {
        let name = e["name"].as_str().expect("name");
        assert!(names.insert(name.to_string()), "{name} defined twice");
        assert!(e["meta-type"].is_string());
    }
    for e in entries(info) {
        for r in references(e) {
            assert!(names.contains(&r), "{} refers to undefined {r}", e["name"]);
        }
        if e["meta-type"] == "object" {
            if let Some(tag) = e["tag"].as_str() {
                assert!(e["members"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|m| m["name"] == tag));
            }
            for m in e["members"].as_array().unwrap() {
                if let Some(d) = m.get("default") {
                    assert!(d.is_null());
                }
            }
        }
    }
}

#[test]
fn introspection_of_everything_is_self_consistent() {
    let info = schema_info(ALL_COMMANDS, ALL_EVENTS);
    check_consistent(&info);
    let count = |mt: &str| {
        entries(&info)
            .iter()
            .filter(|e| e["meta-type"] == mt)
            .count()
    };
    assert_eq!(count("command"), ALL_COMMANDS.len());
    assert_eq!(count("event"), ALL_EVENTS.len());
    // It is what query-qmp-schema returns: the schema's own SchemaInfo type must take it.
    let decoded: Vec<types::SchemaInfo> = serde_json::from_value(info.clone()).expect("SchemaInfo");
    assert_eq!(decoded.len(), entries(&info).len());
    assert_eq!(
        find(&info, "0"),
        &json!({"name": "0", "meta-type": "object", "members": []})
    );
    // Every integer type is "int"; arrays are named after their element.
    assert_eq!(
        find(&info, "int"),
        &json!({"name": "int", "meta-type": "builtin", "json-type": "int"})
    );
    assert!(entries(&info).iter().all(|e| e["meta-type"] != "builtin"
        || ["str", "int", "number", "bool", "null", "any"].contains(&e["name"].as_str().unwrap())));
    assert_eq!(
        find(&info, "[int]"),
        &json!({"name": "[int]", "meta-type": "array", "element-type": "int"})
    );
    for e in entries(&info) {
        if e["meta-type"] == "array" {
            assert_eq!(
                e["name"],
                format!("[{}]", e["element-type"].as_str().unwrap())
            );
        }
        if e["meta-type"] == "command" {
            // As in QEMU 7.2, none of this command set may run out of band.
            assert!(e.get("allow-oob").is_none(), "{e}");
        }
    }
    // Deprecated and unstable things carry their features.
    assert_eq!(
        find(&info, "MEM_UNPLUG_ERROR")["features"],
        json!(["deprecated"])
    );
    assert_eq!(
        find(&info, "x-blockdev-change")["features"],
        json!(["unstable"])
    );
}

#[test]
fn introspection_filters_commands_and_events() {
    let info = schema_info(
        &["query-status", "cont", "nonexistent"],
        &["STOP", "RTC_CHANGE"],
    );
    check_consistent(&info);
    let mut names: Vec<&str> = entries(&info)
        .iter()
        .filter(|e| e["meta-type"] == "command" || e["meta-type"] == "event")
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["RTC_CHANGE", "STOP", "cont", "query-status"]);
    // Only types reachable from them.
    assert!(!entries(&info).iter().any(|e| e["meta-type"] == "alternate"));
    let empty = schema_info(&[], &[]);
    assert_eq!(empty, json!([]));
}

#[test]
fn introspection_of_query_status_matches_qemu() {
    let info = schema_info(&["query-status"], &[]);
    let cmd = find(&info, "query-status");
    assert_eq!(
        cmd,
        &json!({"name": "query-status", "meta-type": "command", "arg-type": "0", "ret-type": "1"})
    );
    let ret = find(&info, "1");
    assert_eq!(ret["meta-type"], "object");
    let members = ret["members"].as_array().unwrap();
    let names: Vec<&str> = members
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["running", "singlestep", "status"]);
    assert_eq!(members[0], json!({"name": "running", "type": "bool"}));
    assert_eq!(members[1], json!({"name": "singlestep", "type": "bool"}));
    let status = find(&info, members[2]["type"].as_str().unwrap());
    assert_eq!(status["meta-type"], "enum");
    let values: Vec<&str> = types::RunState::ALL.iter().map(|v| v.as_str()).collect();
    assert_eq!(status["values"], json!(values));
    assert_eq!(
        status["members"],
        json!(values
            .iter()
            .map(|v| json!({"name": v}))
            .collect::<Vec<_>>())
    );
    assert!(
        values.contains(&"running")
            && values.contains(&"inmigrate")
            && values.contains(&"suspended")
    );
    assert_eq!(
        find(&info, "bool"),
        &json!({"name": "bool", "meta-type": "builtin", "json-type": "boolean"})
    );
    assert_eq!(
        entries(&info).len(),
        5,
        "command, q_empty, StatusInfo, bool, RunState: {info}"
    );
}

#[test]
fn introspection_of_unions_and_alternates() {
    let info = schema_info(
        &["blockdev-add", "input-send-event", "query-name"],
        &["SHUTDOWN"],
    );
    check_consistent(&info);
    // A flat union: base members, tag, variants naming the branch objects.
    let args = find(
        &info,
        find(&info, "blockdev-add")["arg-type"].as_str().unwrap(),
    );
    assert_eq!(args["tag"], "driver");
    let driver = &args["members"][0];
    assert_eq!(driver["name"], "driver");
    assert!(driver.get("default").is_none());
    assert_eq!(
        args["members"][1],
        json!({"name": "node-name", "type": "str", "default": null})
    );
    let cases: Vec<&str> = args["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["case"].as_str().unwrap())
        .collect();
    assert_eq!(
        cases,
        [
            "file",
            "host_cdrom",
            "host_device",
            "null-aio",
            "null-co",
            "qcow2",
            "raw"
        ]
    );
    let raw = find(&info, args["variants"][6]["type"].as_str().unwrap());
    let file = &raw["members"][0];
    assert_eq!(file["name"], "file");
    let alt = find(&info, file["type"].as_str().unwrap());
    assert_eq!(alt["meta-type"], "alternate");
    assert_eq!(
        alt["members"],
        json!([{"type": args["name"]}, {"type": "str"}])
    );
    // A simple union: an implicit enum tag "type" and wrapper objects with member "data".
    let events = find(&info, "input-send-event")["arg-type"]
        .as_str()
        .unwrap()
        .to_string();
    let events = find(&info, &events)["members"].as_array().unwrap().clone();
    assert_eq!(events[2]["name"], "events");
    let elem = events[2]["type"].as_str().unwrap();
    let union = find(&info, &elem[1..elem.len() - 1]);
    assert_eq!(union["tag"], "type");
    assert_eq!(union["members"][0]["name"], "type");
    let kinds = find(&info, union["members"][0]["type"].as_str().unwrap());
    assert_eq!(kinds["values"], json!(["key", "btn", "rel", "abs"]));
    let wrapper = find(&info, union["variants"][0]["type"].as_str().unwrap());
    assert_eq!(wrapper["members"][0]["name"], "data");
    // rel and abs share the wrapper of InputMoveEvent, as in QEMU.
    assert_eq!(union["variants"][2]["type"], union["variants"][3]["type"]);
    // Events without data use the empty object too; SHUTDOWN's data is an implicit object.
    let shutdown = find(&info, "SHUTDOWN");
    assert_ne!(shutdown["arg-type"], "0");
    assert_eq!(find(&info, "query-name")["arg-type"], "0");
}

/// Property tests (proptest) over the dispatcher's front half: arbitrary JSON arguments for
/// every command never panic validation, and whatever validation accepts decodes into the
/// command's generated argument type, so a handler can never see arguments it cannot read.
mod properties {
    use proptest::prelude::*;
    use serde_json::{Map, Value};

    use super::{roundtrip_args, validate_arguments, ALL_COMMANDS};

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            (-1e6f64..1e6).prop_map(Value::from),
            "[a-z0-9_-]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z-]{1,10}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn member_names() -> impl Strategy<Value = String> {
        // Real member names make the generator reach past "unexpected member" errors.
        prop_oneof![
            "[a-z-]{1,12}",
            prop::sample::select(vec![
                "device",
                "id",
                "index",
                "enable",
                "command-line",
                "cpu-index",
                "fdname",
                "protocol",
                "option",
                "node-name",
                "speed",
                "base",
                "target",
                "sync",
                "format",
                "value",
                "path",
                "property",
                "typename",
                "type",
                "size",
                "filename",
            ])
            .prop_map(String::from),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn validation_never_panics_and_accepted_arguments_decode(
            command in prop::sample::select(ALL_COMMANDS.to_vec()),
            members in prop::collection::vec((member_names(), json_value()), 0..5),
        ) {
            let args: Map<String, Value> = members.into_iter().collect();
            if validate_arguments(command, &args).is_ok() {
                let decoded = roundtrip_args(command, &Value::Object(args.clone()));
                if let Some(r) = decoded {
                    prop_assert!(r.is_ok(), "{command} {args:?}: {r:?}");
                }
            }
        }
    }
}
