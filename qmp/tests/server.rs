//! The QMP server over real sockets: greeting, negotiation, errors, pipelining, out-of-band
//! execution, events, descriptor passing and the ways of attaching a monitor.

mod common;

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use common::*;
use petrel_qmp::server::{Server, ServerConfig};
use petrel_qmp::wire::Limits;
use serde_json::{json, Value};

fn error(class: &str, desc: &str) -> Value {
    json!({"error": {"class": class, "desc": desc}})
}

fn error_id(class: &str, desc: &str, id: Value) -> Value {
    json!({"error": {"class": class, "desc": desc}, "id": id})
}

#[test]
fn greeting_is_qemus() {
    let (handle, path) = unix_server(config());
    let mut c = Client::connect(&path);
    assert_eq!(
        c.recv_line(),
        "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 7}, \
         \"package\": \"petrel-test\"}, \"capabilities\": [\"oob\"]}}\r\n"
    );
    handle.shutdown();
    assert!(!path.exists(), "the socket file is removed at shutdown");
}

#[test]
fn negotiation_rules() {
    let (handle, path) = unix_server(config());
    let mut c = Client::connect(&path);
    c.recv();
    // Nothing but qmp_capabilities before negotiation, known command or not.
    let expecting = "Expecting capabilities negotiation with 'qmp_capabilities'";
    assert_eq!(
        c.cmd(r#"{"execute": "query-version", "id": 1}"#),
        error_id("CommandNotFound", expecting, json!(1))
    );
    assert_eq!(
        c.cmd(r#"{"execute": "no-such-command"}"#),
        error("CommandNotFound", expecting)
    );
    // Envelope errors keep their own wording.
    assert_eq!(
        c.cmd(r#"{"exec": "x"}"#),
        error("GenericError", "QMP input member 'exec' is unexpected")
    );
    // No events before negotiation.
    handle.emit_raw("STOP", None);
    // A capability that does not exist is refused by the argument check.
    let r = c.cmd(r#"{"execute": "qmp_capabilities", "arguments": {"enable": ["foo"]}}"#);
    assert_eq!(r["error"]["class"], "GenericError", "{r}");
    // Negotiation.
    assert_eq!(
        c.cmd(r#"{"execute": "qmp_capabilities", "id": "n"}"#),
        json!({"return": {}, "id": "n"})
    );
    assert_eq!(
        c.cmd(r#"{"execute": "qmp_capabilities"}"#),
        error(
            "CommandNotFound",
            "Capabilities negotiation is already complete, command ignored"
        )
    );
    let r = c.cmd(r#"{"execute": "query-version"}"#);
    assert_eq!(
        r,
        json!({"return": {"qemu": {"major": 7, "minor": 2, "micro": 0}, "package": "petrel-test"}})
    );
    handle.shutdown();
}

#[test]
fn every_id_type_is_echoed() {
    let (handle, path) = unix_server(config());
    let mut c = Client::connect(&path);
    c.negotiate();
    for id in [
        json!(1),
        json!(-7),
        json!(1.5),
        json!("libvirt-1"),
        json!(true),
        json!(null),
        json!([1, {"a": 2}]),
        json!({"x": []}),
    ] {
        let r = c.cmd(
            &json!({"execute": "x-test-echo", "arguments": {"text": "t"}, "id": id}).to_string(),
        );
        assert_eq!(r, json!({"return": "t", "id": id}));
        let r = c.cmd(&json!({"execute": "nope", "id": id}).to_string());
        assert_eq!(
            r,
            error_id(
                "CommandNotFound",
                "The command nope has not been found",
                id.clone()
            )
        );
        let r = c.cmd(&json!({"execute": "x-test-echo", "id": id, "bogus": 1}).to_string());
        assert_eq!(
            r,
            error_id("GenericError", "QMP input member 'bogus' is unexpected", id)
        );
    }
    // Single-quoted input works too.
    assert_eq!(
        c.cmd("{'execute': 'x-test-echo', 'arguments': {'text': 'a\\'b'}, 'id': 'q'}"),
        json!({"return": "a'b", "id": "q"})
    );
    handle.shutdown();
}

#[test]
fn errors_leave_the_connection_working() {
    let (handle, path) = unix_server(config());
    let mut c = Client::connect(&path);
    c.negotiate();
    let g = "GenericError";
    let cases: Vec<(&str, Value)> = vec![
        (
            r#"{"execute": }"#,
            error(g, "JSON parse error, expecting value"),
        ),
        ("[1, 2]", error(g, "QMP input must be a JSON object")),
        (
            r#""just a string""#,
            error(g, "QMP input must be a JSON object"),
        ),
        (
            r#"{"id": 3}"#,
            error_id(g, "QMP input lacks member 'execute'", json!(3)),
        ),
        (
            r#"{"execute": 42, "id": 4}"#,
            error_id(g, "QMP input member 'execute' must be a string", json!(4)),
        ),
        (
            r#"{"execute": "x-test-echo", "arguments": [], "id": 5}"#,
            error_id(
                g,
                "QMP input member 'arguments' must be an object",
                json!(5),
            ),
        ),
        (
            r#"{"execute": "x-test-echo", "exec-oob": "x-test-ping", "id": 6}"#,
            error_id(
                g,
                "QMP input member 'execute' clashes with 'exec-oob'",
                json!(6),
            ),
        ),
        (
            r#"{"execute": "nope", "id": 7}"#,
            error_id(
                "CommandNotFound",
                "The command nope has not been found",
                json!(7),
            ),
        ),
        (
            r#"{"execute": "getfd", "id": 8}"#,
            error_id(g, "Parameter 'fdname' is missing", json!(8)),
        ),
        (
            r#"{"execute": "getfd", "arguments": {"fdname": 1}, "id": 9}"#,
            error_id(
                g,
                "Invalid parameter type for 'fdname', expected: string",
                json!(9),
            ),
        ),
        (
            r#"{"execute": "getfd", "arguments": {"fdname": "a", "extra": 1}, "id": 10}"#,
            error_id(g, "Parameter 'extra' is unexpected", json!(10)),
        ),
        (
            r#"{"execute": "query-version", "arguments": {"x": 1}, "id": 11}"#,
            error_id(g, "Parameter 'x' is unexpected", json!(11)),
        ),
    ];
    for (input, expect) in cases {
        assert_eq!(c.cmd(input), expect, "for {input}");
        assert_eq!(
            c.cmd(r#"{"execute": "x-test-echo", "arguments": {"text": "ok"}}"#),
            json!({"return": "ok"}),
            "after {input}"
        );
    }
    // A lexical error: one error, and the command on the next line runs.
    c.send("@garbage\n{\"execute\": \"x-test-echo\", \"arguments\": {\"text\": \"next\"}}");
    assert_eq!(c.recv(), error(g, "JSON parse error, stray '@'"));
    assert_eq!(c.recv(), json!({"return": "next"}));
    // A 0xFF byte in the middle of a message resets the parser (QEMU's documented way).
    c.send_bytes(b"{\"execute\": \"x-te\xff{\"execute\": \"x-test-echo\", \"arguments\": {\"text\": \"ff\"}}");
    assert_eq!(
        c.recv(),
        error(g, "JSON parse error, stray '\"x-te\u{FFFD}'")
    );
    assert_eq!(c.recv(), json!({"return": "ff"}));
    handle.shutdown();
}

#[test]
fn pipelined_and_split_requests() {
    let (handle, path) = unix_server(config());
    let mut c = Client::connect(&path);
    c.negotiate();
    let mut batch = String::new();
    for i in 0..50 {
        batch.push_str(&format!("{{\"execute\": \"x-test-echo\", \"arguments\": {{\"text\": \"m{i}\"}}, \"id\": {i}}}\r\n"));
    }
    c.send(&batch);
    for i in 0..50 {
        assert_eq!(c.recv(), json!({"return": format!("m{i}"), "id": i}));
    }
    let msg =
        b"{\"execute\": \"x-test-echo\",\n \"arguments\": {\"text\": \"split\"}, \"id\": \"s\"}";
    for b in msg {
        c.send_bytes(std::slice::from_ref(b));
    }
    assert_eq!(c.recv(), json!({"return": "split", "id": "s"}));
    handle.shutdown();
}

#[test]
fn output_is_ascii_with_crlf() {
    let (handle, path) = unix_server(config());
    let mut c = Client::connect(&path);
    c.negotiate();
    c.send(
        &json!({"execute": "x-test-echo", "arguments": {"text": "é😀\u{7f}\"\\\n"}}).to_string(),
    );
    // recv_line checks that the line is ASCII and ends with CRLF.
    assert_eq!(
        c.recv_line(),
        "{\"return\": \"\\u00E9\\uD83D\\uDE00\\u007F\\\"\\\\\\n\"}\r\n"
    );
    // Escaped input works the same.
    c.send(r#"{"execute": "x-test-echo", "arguments": {"text": "\u00e9\ud83d\ude00"}}"#);
    assert_eq!(c.recv_line(), "{\"return\": \"\\u00E9\\uD83D\\uDE00\"}\r\n");
    handle.shutdown();
}

#[test]
fn message_size_bound() {
    let limits = Limits {
        max_message_size: 4096,
        ..Limits::default()
    };
    let (handle, path) = unix_server(ServerConfig { limits, ..config() });
    let mut c = Client::connect(&path);
    c.negotiate();
    let big = "x".repeat(10_000);
    c.send(&json!({"execute": "x-test-echo", "arguments": {"text": big}, "id": 1}).to_string());
    assert_eq!(
        c.recv(),
        error("GenericError", "JSON token size limit exceeded")
    );
    // Just under the bound is fine, and so is what follows.
    let fits = "y".repeat(3900);
    assert_eq!(
        c.execute("x-test-echo", json!({"text": fits})),
        json!({"return": fits})
    );
    let deep = format!("{}{}", "[".repeat(2000), "]".repeat(2000));
    c.send(&deep);
    assert_eq!(
        c.recv(),
        error("GenericError", "JSON nesting depth limit exceeded")
    );
    assert_eq!(
        c.execute("x-test-echo", json!({"text": "after"})),
        json!({"return": "after"})
    );
    handle.shutdown();
}

#[test]
fn oob_and_other_monitors_overtake_a_slow_command() {
    let path2 = sock_path("second");
    let (mut server, handle) = Server::new(test_registry(), config()).expect("server");
    let path = sock_path("first");
    server.add_unix_listener(&path, false).unwrap();
    server.add_unix_listener(&path2, false).unwrap();
    server.start().unwrap();
    let mut a = Client::connect(&path);
    a.negotiate();
    // The second one negotiates without oob.
    let mut b = Client::connect(&path2);
    b.recv();
    assert_eq!(
        b.execute("qmp_capabilities", json!({})),
        json!({"return": {}})
    );

    // A command that stays pending until the test lets it answer.
    a.send(r#"{"execute": "x-test-slow", "arguments": {"gate": "overtake"}, "id": "slow"}"#);
    a.send(r#"{"execute": "x-test-echo", "arguments": {"text": "queued"}, "id": "queued"}"#);
    a.send(r#"{"exec-oob": "x-test-ping", "id": "oob"}"#);
    assert_eq!(a.recv(), json!({"return": "pong", "id": "oob"}));
    assert_eq!(
        b.execute("x-test-echo", json!({"text": "b"})),
        json!({"return": "b"})
    );
    assert_eq!(
        a.try_recv(Duration::from_millis(100)),
        None,
        "the in-band queue waits"
    );
    open_gate("overtake");
    assert_eq!(a.recv(), json!({"return": {}, "id": "slow"}));
    assert_eq!(a.recv(), json!({"return": "queued", "id": "queued"}));
    // And with a handler that takes 300 ms, as a timed check.
    let t0 = Instant::now();
    a.send(r#"{"execute": "x-test-slow", "arguments": {"ms": 300}, "id": "timed"}"#);
    a.send(r#"{"exec-oob": "x-test-ping", "id": "oob2"}"#);
    assert_eq!(a.recv(), json!({"return": "pong", "id": "oob2"}));
    assert_eq!(
        b.execute("x-test-echo", json!({"text": "b2"})),
        json!({"return": "b2"})
    );
    let overtaken = t0.elapsed();
    assert_eq!(a.recv(), json!({"return": {}, "id": "timed"}));
    assert!(overtaken < t0.elapsed() && t0.elapsed() >= Duration::from_millis(300));

    // exec-oob of a command that does not allow it, and of an unknown one.
    assert_eq!(
        a.cmd(r#"{"exec-oob": "x-test-echo", "arguments": {"text": "x"}, "id": 1}"#),
        error_id(
            "GenericError",
            "The command x-test-echo does not support OOB",
            json!(1)
        )
    );
    assert_eq!(
        a.cmd(r#"{"exec-oob": "nope", "id": 2}"#),
        error_id(
            "CommandNotFound",
            "The command nope has not been found",
            json!(2)
        )
    );
    // Without oob negotiated, exec-oob is refused.
    b.send(r#"{"exec-oob": "x-test-ping", "id": 3}"#);
    assert_eq!(
        b.recv(),
        error_id(
            "GenericError",
            "QMP input member 'exec-oob' is unexpected",
            json!(3)
        )
    );
    handle.shutdown();
}

#[test]
fn in_band_queue_holds_eight_then_reading_stops() {
    let (handle, path) = unix_server(config());
    let mut c = Client::connect(&path);
    c.negotiate();
    let echo = |i: usize| {
        format!(r#"{{"execute": "x-test-echo", "arguments": {{"text": "e{i}"}}, "id": {i}}}"#)
    };
    let slow = |gate: &str| {
        format!(r#"{{"execute": "x-test-slow", "arguments": {{"gate": "{gate}"}}, "id": "slow"}}"#)
    };
    let ping = r#"{"exec-oob": "x-test-ping", "id": "oob"}"#;

    // Seven requests wait behind the pending one: the server still reads, and the ping
    // overtakes.
    c.send(&format!(
        "{}{}{ping}",
        slow("q7"),
        (0..7).map(echo).collect::<String>()
    ));
    assert_eq!(c.recv(), json!({"return": "pong", "id": "oob"}));
    open_gate("q7");
    assert_eq!(c.recv(), json!({"return": {}, "id": "slow"}));
    for i in 0..7 {
        assert_eq!(c.recv(), json!({"return": format!("e{i}"), "id": i}));
    }

    // With eight waiting the queue is full: nothing more is read until the pending one is
    // done, so the ping comes after it (and may then overtake the queued echoes, as in QEMU).
    c.send(&format!(
        "{}{}{ping}",
        slow("q10"),
        (0..10).map(echo).collect::<String>()
    ));
    assert_eq!(
        c.try_recv(Duration::from_millis(300)),
        None,
        "the ping was read"
    );
    open_gate("q10");
    assert_eq!(c.recv(), json!({"return": {}, "id": "slow"}));
    let rest: Vec<Value> = (0..11).map(|_| c.recv()).collect();
    let echoes: Vec<&Value> = rest.iter().filter(|v| v["id"] != "oob").collect();
    assert_eq!(echoes.len(), 10);
    for (i, v) in echoes.iter().enumerate() {
        assert_eq!(**v, json!({"return": format!("e{i}"), "id": i}));
    }

    // Without oob, one request at a time: an exec-oob sent behind a slow command is read (and
    // refused) only once the slow one is answered.
    let mut d = Client::connect(&path);
    drop(c);
    d.recv();
    assert_eq!(
        d.execute("qmp_capabilities", json!({})),
        json!({"return": {}})
    );
    d.send(&format!("{}{ping}", slow("one")));
    assert_eq!(
        d.try_recv(Duration::from_millis(200)),
        None,
        "the exec-oob was read"
    );
    open_gate("one");
    assert_eq!(d.recv(), json!({"return": {}, "id": "slow"}));
    assert_eq!(
        d.recv(),
        error_id(
            "GenericError",
            "QMP input member 'exec-oob' is unexpected",
            json!("oob")
        )
    );
    handle.shutdown();
}

#[test]
fn events_reach_negotiated_monitors_only() {
    let (mut server, handle) = Server::new(test_registry(), config()).expect("server");
    let paths: Vec<_> = (0..4).map(|i| sock_path(&format!("ev{i}"))).collect();
    for p in &paths {
        server.add_unix_listener(p, false).unwrap();
    }
    server.start().unwrap();
    let mut clients: Vec<_> = paths.iter().map(|p| Client::connect(p)).collect();
    for c in &mut clients[..3] {
        c.negotiate();
    }
    clients[3].recv(); // greeting only
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    handle.emit_raw("STOP", None);
    handle.emit_raw(
        "DEVICE_DELETED",
        Some(json!({"path": "/machine/peripheral/x"})),
    );
    for c in &mut clients[..3] {
        let line = c.recv_line();
        assert!(line.starts_with("{\"timestamp\": {\"seconds\": "), "{line}");
        assert!(line.ends_with("\"event\": \"STOP\"}\r\n"), "{line}");
        let v: Value = serde_json::from_str(&line).unwrap();
        let secs = v["timestamp"]["seconds"].as_u64().unwrap();
        assert!(secs >= before && secs <= before + 5);
        assert!(v["timestamp"]["microseconds"].as_u64().unwrap() < 1_000_000);
        let v = c.recv();
        assert_eq!(v["event"], "DEVICE_DELETED");
        assert_eq!(v["data"], json!({"path": "/machine/peripheral/x"}));
    }
    assert_eq!(clients[3].try_recv(Duration::from_millis(200)), None);
    // Once negotiated, the fourth gets the next ones.
    clients[3].execute("qmp_capabilities", json!({}));
    handle.emit_raw("RESUME", None);
    for c in &mut clients {
        assert_eq!(c.recv()["event"], "RESUME");
    }
    handle.shutdown();
}

#[test]
fn rate_limited_events() {
    let (handle, path) = unix_server(config());
    let mut c = Client::connect(&path);
    c.negotiate();
    let t0 = Instant::now();
    for offset in [1, 2, 3] {
        handle.emit_raw("RTC_CHANGE", Some(json!({"offset": offset})));
    }
    handle.emit_raw("VSERPORT_CHANGE", Some(json!({"id": "a", "open": true})));
    handle.emit_raw("VSERPORT_CHANGE", Some(json!({"id": "b", "open": true})));
    handle.emit_raw("VSERPORT_CHANGE", Some(json!({"id": "a", "open": false})));
    handle.emit_raw("STOP", None);
    // At once: the first RTC_CHANGE, the first of each VSERPORT_CHANGE id, and STOP.
    let mut immediate = Vec::new();
    for _ in 0..4 {
        immediate.push(c.recv());
    }
    assert!(t0.elapsed() < Duration::from_millis(900));
    assert_eq!(immediate[0]["data"], json!({"offset": 1}));
    assert_eq!(immediate[1]["data"], json!({"id": "a", "open": true}));
    assert_eq!(immediate[2]["data"], json!({"id": "b", "open": true}));
    assert_eq!(immediate[3]["event"], "STOP");
    // After a second: the last of each, and only that.
    let mut later = [c.recv(), c.recv()];
    assert!(
        t0.elapsed() >= Duration::from_millis(950),
        "{:?}",
        t0.elapsed()
    );
    later.sort_by_key(|v| v["event"].as_str().unwrap().to_string());
    assert_eq!(later[0]["event"], "RTC_CHANGE");
    assert_eq!(later[0]["data"], json!({"offset": 3}));
    assert_eq!(later[1]["data"], json!({"id": "a", "open": false}));
    assert_eq!(c.try_recv(Duration::from_millis(1300)), None);
    // The window is over: the next one is immediate again.
    let t1 = Instant::now();
    handle.emit_raw("RTC_CHANGE", Some(json!({"offset": 4})));
    assert_eq!(c.recv()["data"], json!({"offset": 4}));
    assert!(t1.elapsed() < Duration::from_millis(900));
    handle.shutdown();
}

#[test]
fn getfd_and_closefd_with_scm_rights() {
    let (handle, path) = unix_server(config());
    let mut c = Client::connect(&path);
    c.negotiate();
    let g = "GenericError";
    assert_eq!(
        c.execute("getfd", json!({"fdname": "none"})),
        error(g, "No file descriptor supplied via SCM_RIGHTS")
    );
    // The descriptor comes with the command.
    let (r1, w1) = pipe();
    c.send_with_fds(
        br#"{"execute": "getfd", "arguments": {"fdname": "p1"}, "id": 1}"#,
        &[w1.as_raw_fd()],
    );
    drop(w1);
    assert_eq!(c.recv(), json!({"return": {}, "id": 1}));
    assert_eq!(
        c.execute("x-test-fdwrite", json!({"fdname": "p1", "text": "hello"})),
        json!({"return": {}})
    );
    assert_eq!(read_fd(&r1, 5), b"hello");
    // Or with a byte of its own before the command (Python's send_fd_scm).
    let (r2, w2) = pipe();
    c.send_with_fds(b" ", &[w2.as_raw_fd()]);
    drop(w2);
    assert_eq!(
        c.execute("getfd", json!({"fdname": "p2"})),
        json!({"return": {}})
    );
    assert_eq!(
        c.execute("x-test-fdwrite", json!({"fdname": "p2", "text": "world"})),
        json!({"return": {}})
    );
    assert_eq!(read_fd(&r2, 5), b"world");
    // Names must not start with a digit.
    let (_r3, w3) = pipe();
    c.send_with_fds(
        br#"{"execute": "getfd", "arguments": {"fdname": "3x"}}"#,
        &[w3.as_raw_fd()],
    );
    assert_eq!(
        c.recv(),
        error(
            g,
            "Parameter 'fdname' expects a name not starting with a digit"
        )
    );
    // closefd closes it: the reader then sees end of file.
    assert_eq!(
        c.execute("closefd", json!({"fdname": "p1"})),
        json!({"return": {}})
    );
    let mut rest = Vec::new();
    std::fs::File::from(r1).read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    assert_eq!(
        c.execute("closefd", json!({"fdname": "p1"})),
        error(g, "File descriptor named 'p1' not found")
    );
    // Disconnecting closes the rest.
    drop(c);
    let mut rest = Vec::new();
    std::fs::File::from(r2).read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    handle.shutdown();
}

#[test]
fn add_client_attaches_a_new_monitor() {
    let (handle, path) = unix_server(config());
    let mut c = Client::connect(&path);
    c.negotiate();
    let g = "GenericError";
    assert_eq!(
        c.execute("add_client", json!({"protocol": "qmp", "fdname": "nope"})),
        error(g, "File descriptor named 'nope' has not been found")
    );
    let (mine, theirs) = UnixStream::pair().unwrap();
    c.send_with_fds(
        br#"{"execute": "getfd", "arguments": {"fdname": "cl"}}"#,
        &[theirs.as_raw_fd()],
    );
    drop(theirs);
    assert_eq!(c.recv(), json!({"return": {}}));
    assert_eq!(
        c.execute("add_client", json!({"protocol": "qmp", "fdname": "cl"})),
        json!({"return": {}})
    );
    let mut d = Client::new(mine);
    d.negotiate();
    assert_eq!(
        d.execute("x-test-echo", json!({"text": "new"})),
        json!({"return": "new"})
    );
    // Other protocols are refused (and the descriptor is consumed, as in QEMU).
    let (_mine2, theirs2) = UnixStream::pair().unwrap();
    c.send_with_fds(
        br#"{"execute": "getfd", "arguments": {"fdname": "v"}}"#,
        &[theirs2.as_raw_fd()],
    );
    assert_eq!(c.recv(), json!({"return": {}}));
    assert_eq!(
        c.execute("add_client", json!({"protocol": "vnc", "fdname": "v"})),
        error(g, "protocol 'vnc' is invalid")
    );
    assert_eq!(
        c.execute("closefd", json!({"fdname": "v"})),
        error(g, "File descriptor named 'v' not found")
    );
    handle.shutdown();
}

#[test]
fn client_mode_and_inherited_fds() {
    // petrel connects to a listening client (QEMUMachine in QEMU 7.2).
    let client_path = sock_path("client");
    let listener = UnixListener::bind(&client_path).unwrap();
    let (mut server, handle) = Server::new(test_registry(), config()).expect("server");
    server.connect_unix(&client_path).unwrap();
    // fd=N, connected (a socketpair, as QEMUMachine passes later).
    let (mine, theirs) = UnixStream::pair().unwrap();
    server.add_fd(OwnedFd::from(theirs), false).unwrap();
    // fd=N, listening.
    let inherited_path = sock_path("inherited");
    let inherited = UnixListener::bind(&inherited_path).unwrap();
    server.add_fd(OwnedFd::from(inherited), false).unwrap();
    // Not a socket.
    let (r, _w) = pipe();
    assert!(server.add_fd(r, false).is_err());
    server.start().unwrap();

    let (accepted, _) = listener.accept().unwrap();
    let mut a = Client::new(accepted);
    a.negotiate();
    assert_eq!(
        a.execute("x-test-echo", json!({"text": "client"})),
        json!({"return": "client"})
    );
    let mut b = Client::new(mine);
    b.negotiate();
    assert_eq!(
        b.execute("x-test-echo", json!({"text": "pair"})),
        json!({"return": "pair"})
    );
    let mut c = Client::connect(&inherited_path);
    c.negotiate();
    assert_eq!(
        c.execute("x-test-echo", json!({"text": "listening"})),
        json!({"return": "listening"})
    );
    handle.shutdown();
    let _ = std::fs::remove_file(&client_path);
    let _ = std::fs::remove_file(&inherited_path);
}

#[test]
fn tcp_wait_and_one_client_at_a_time() {
    let (mut server, handle) = Server::new(test_registry(), config()).expect("server");
    let addr = server.add_tcp_listener("127.0.0.1:0", true).unwrap();
    server.start().unwrap();
    let t0 = Instant::now();
    let connector = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        std::net::TcpStream::connect(addr).unwrap()
    });
    handle.wait_for_clients();
    assert!(t0.elapsed() >= Duration::from_millis(200));
    let mut first = Client::new(connector.join().unwrap());
    first.negotiate();
    // A second client waits in the backlog until the first leaves.
    let mut second = Client::new(std::net::TcpStream::connect(addr).unwrap());
    assert_eq!(second.try_recv(Duration::from_millis(300)), None);
    drop(first);
    let greeting = second.recv();
    assert_eq!(greeting["QMP"]["capabilities"], json!(["oob"]));
    handle.shutdown();
}

#[test]
fn disconnect_with_a_command_pending_and_end_of_input() {
    let (handle, path) = unix_server(config());
    let mut c = Client::connect(&path);
    c.negotiate();
    c.send(r#"{"execute": "x-test-slow", "arguments": {"ms": 100}}"#);
    drop(c);
    // The reply for the gone client is discarded; the listener serves the next one.
    let mut d = Client::connect(&path);
    d.negotiate();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        d.execute("x-test-echo", json!({"text": "still"})),
        json!({"return": "still"})
    );
    // A client that shuts down its sending side still gets its replies.
    d.send(r#"{"execute": "x-test-slow", "arguments": {"ms": 50}, "id": 1}{"execute": "x-test-echo", "arguments": {"text": "z"}, "id": 2}"#);
    d.stream.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(d.recv(), json!({"return": {}, "id": 1}));
    assert_eq!(d.recv(), json!({"return": "z", "id": 2}));
    assert_eq!(
        d.try_recv(Duration::from_secs(2)),
        None,
        "closed after the replies"
    );
    handle.shutdown();
}

#[test]
fn query_commands_events_and_schema() {
    let (handle, path) = unix_server(config());
    let mut c = Client::connect(&path);
    c.negotiate();
    let r = c.execute("query-commands", json!({}));
    let names: Vec<&str> = r["return"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    for n in [
        "qmp_capabilities",
        "query-commands",
        "query-version",
        "getfd",
        "closefd",
        "add_client",
        "x-test-echo",
    ] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    let r = c.execute("query-events", json!({}));
    let events: Vec<&str> = r["return"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(
        events.contains(&"SHUTDOWN") && events.contains(&"STOP"),
        "{events:?}"
    );
    let r = c.execute("query-qmp-schema", json!({}));
    let schema = r["return"].as_array().unwrap();
    let cmd = |n: &str| {
        schema
            .iter()
            .any(|e| e["name"] == n && e["meta-type"] == "command")
    };
    assert!(cmd("qmp_capabilities") && cmd("query-qmp-schema") && cmd("getfd"));
    assert!(
        !cmd("x-test-echo"),
        "commands the schema does not know are not listed"
    );
    assert!(schema
        .iter()
        .any(|e| e["name"] == "STOP" && e["meta-type"] == "event"));
    handle.shutdown();
}

/// Re-runs this test binary as a child serving QMP on its standard streams.
#[test]
fn stdio_monitor() {
    use std::process::{Command, Stdio};
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args(["--exact", "stdio_child", "--nocapture", "--test-threads=1"])
        .env("PETREL_QMP_STDIO_CHILD", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    use std::io::{BufRead, Write};
    // The test harness prints a few lines of its own first, and "test stdio_child ... "
    // without a newline.
    let greeting = loop {
        let mut line = String::new();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "no greeting on stdout"
        );
        if let Some(at) = line.find("{\"QMP\"") {
            break line[at..].to_string();
        }
    };
    assert!(
        greeting.ends_with("\"capabilities\": []}}\r\n"),
        "no oob on stdio: {greeting}"
    );
    let mut exchange = |req: &str| -> Value {
        stdin.write_all(req.as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert!(line.ends_with("\r\n") && line.is_ascii(), "{line:?}");
        serde_json::from_str(&line).unwrap()
    };
    assert_eq!(
        exchange(r#"{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}"#),
        error("GenericError", "Capability oob not available")
    );
    assert_eq!(
        exchange(r#"{"execute": "qmp_capabilities"}"#),
        json!({"return": {}})
    );
    assert_eq!(
        exchange(r#"{"execute": "x-test-echo", "arguments": {"text": "é"}}"#),
        json!({"return": "é"})
    );
    drop(stdin);
    // End of input ends the monitor, and the child (see stdio_child) exits.
    let status = child.wait().unwrap();
    assert!(status.success());
}

#[test]
fn stdio_child() {
    if std::env::var_os("PETREL_QMP_STDIO_CHILD").is_none() {
        return;
    }
    let (mut server, handle) = Server::new(test_registry(), config()).expect("server");
    server.add_stdio().unwrap();
    server.start().unwrap();
    // Serve until the parent closes our standard input (it does so after its last reply).
    loop {
        let mut pfd = libc::pollfd {
            fd: 0,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&raw mut pfd, 1, 100) };
        if pfd.revents & (libc::POLLHUP | libc::POLLERR) != 0 {
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(100));
    handle.shutdown();
}

#[test]
fn a_client_that_does_not_read_is_dropped() {
    let (handle, path) = unix_server(ServerConfig {
        max_output: 64 << 10,
        ..config()
    });
    let mut c = Client::connect(&path);
    c.negotiate();
    let data = json!({"path": "x".repeat(1000)});
    // Far more than the socket buffers and the 64 KiB allowed to wait.
    for _ in 0..20_000 {
        handle.emit_raw("DEVICE_DELETED", Some(data.clone()));
    }
    // The client gets what was buffered, then end of file.
    let mut events = 0;
    while let Some(v) = c.try_recv(Duration::from_secs(5)) {
        assert_eq!(v["event"], "DEVICE_DELETED");
        events += 1;
    }
    assert!(events < 20_000, "{events}");
    // The listener serves the next client.
    let mut d = Client::connect(&path);
    d.negotiate();
    assert_eq!(
        d.execute("x-test-echo", json!({"text": "next"})),
        json!({"return": "next"})
    );
    handle.shutdown();
}
