//! Random and mutated input, from a seeded generator (set `PETREL_FUZZ_SEED` to replay one
//! seed), to the parser alone and to a live server; each part runs for a bounded time.
//!
//! Properties: nothing panics; the parser's items are in stream order; whatever came before,
//! a control character followed by a valid command yields that command (QEMU's documented
//! way to resynchronise); what the encoder writes is ASCII and parses back; and a server
//! connection that received garbage still answers a valid command.

mod common;

use std::time::{Duration, Instant};

use common::*;
use petrel_qmp::wire::{self, Limits, Parser};
use serde_json::{json, Value};

/// xorshift64*: small, fast and reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const SAMPLES: &[&str] = &[
    r#"{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}"#,
    r#"{"execute": "x-test-echo", "arguments": {"text": "h\u00e9llo \ud83d\ude00"}, "id": [1, {"a": null}]}"#,
    r#"{'execute': 'query-version', 'id': 'x\'y'}"#,
    r#"{"exec-oob": "x-test-ping", "id": 1.5e3}"#,
    r#"{"execute": "getfd", "arguments": {"fdname": "f"}}"#,
    r#"{"execute": "closefd", "arguments": {"fdname": "f"}, "id": -0}"#,
    r#"{"execute": "query-commands", "id": true}"#,
    r#"[1, 2.5, -3e-2, "s", true, false, null, {}, []]"#,
    r#"{"execute": "add_client", "arguments": {"protocol": "qmp", "fdname": "f"}}"#,
];

const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b":",
    b",",
    b"\"",
    b"'",
    b"\\",
    b"\\u",
    b"\\uD800",
    b"true",
    b"nul",
    b"-",
    b"0",
    b"1e",
    b"1.",
    b"9999999999999999999999",
    b" ",
    b"\r\n",
    b"\t",
    b"\x00",
    b"\x1b",
    b"\xff",
    b"\xc3\xa9",
    b"\xe2\x82",
    b"\xf0\x9f\x98\x80",
    b"\"execute\"",
    b"\"exec-oob\"",
    b"\"id\"",
];

/// A stream of garbage: random bytes, random tokens, mutated samples.
fn garbage(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < len {
        match rng.below(4) {
            0 => {
                for _ in 0..rng.below(32) {
                    out.push(rng.next() as u8);
                }
            }
            1 => {
                for _ in 0..rng.below(16) {
                    let token: &&[u8] = rng.pick(TOKENS);
                    out.extend_from_slice(token);
                }
            }
            2 => out.extend_from_slice(rng.pick(SAMPLES).as_bytes()),
            _ => {
                let mut s = rng.pick(SAMPLES).as_bytes().to_vec();
                for _ in 0..1 + rng.below(4) {
                    if s.is_empty() {
                        break;
                    }
                    let at = rng.below(s.len());
                    match rng.below(4) {
                        0 => s[at] = rng.next() as u8,
                        1 => {
                            s.remove(at);
                        }
                        2 => s.insert(at, *rng.pick(b"{}[]:,\"'\\ 0a\xff")),
                        _ => s.truncate(at),
                    }
                }
                out.extend_from_slice(&s);
            }
        }
    }
    out
}

fn seeds() -> Box<dyn Iterator<Item = u64>> {
    match std::env::var("PETREL_FUZZ_SEED") {
        Ok(s) => Box::new(std::iter::once(
            s.parse().expect("PETREL_FUZZ_SEED must be a number"),
        )),
        Err(_) => Box::new((1..).map(|i: u64| i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)),
    }
}

/// Feeds `input` in random chunks.
fn feed_chunked(rng: &mut Rng, p: &mut Parser, input: &[u8]) -> Vec<wire::Parsed> {
    let mut items = Vec::new();
    let mut rest = input;
    while !rest.is_empty() {
        let n = 1 + rng.below(rest.len().min(64));
        items.extend(p.feed_all(&rest[..n]));
        rest = &rest[n..];
    }
    items
}

#[test]
fn parser_survives_garbage_and_resynchronises() {
    let deadline = Instant::now() + Duration::from_secs(3);
    let final_cmd = br#"{"execute": "x-test-echo", "arguments": {"text": "final"}, "id": "final"}"#;
    let expected: Value =
        json!({"execute": "x-test-echo", "arguments": {"text": "final"}, "id": "final"});
    let mut runs = 0;
    for seed in seeds() {
        if Instant::now() > deadline {
            break;
        }
        runs += 1;
        let mut rng = Rng(seed);
        let limits = if rng.below(2) == 0 {
            Limits::default()
        } else {
            // Small, but large enough for the final command.
            Limits {
                max_message_size: 80 + rng.below(200),
                max_tokens: 17 + rng.below(50),
                max_depth: 2 + rng.below(8),
            }
        };
        let mut p = Parser::new(limits);
        let len = rng.below(2048);
        let mut input = garbage(&mut rng, len);
        input.push(0x1b);
        input.extend_from_slice(final_cmd);
        input.push(b'\n');
        let items = feed_chunked(&mut rng, &mut p, &input);
        let mut last_start = 0;
        for item in &items {
            assert!(
                item.start >= last_start && item.start < input.len() as u64,
                "seed {seed}: bad offset"
            );
            last_start = item.start;
            match &item.result {
                Ok(v) => {
                    let _ = wire::check_request(v.clone(), true);
                    let mut out = Vec::new();
                    wire::encode_value(v, &mut out);
                    assert!(out.is_ascii(), "seed {seed}");
                    serde_json::from_slice::<Value>(&out)
                        .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
                    let again = Parser::default().feed_all(&[&out[..], b" "].concat());
                    assert!(again.len() == 1 && again[0].result.is_ok(), "seed {seed}");
                }
                Err(desc) => assert!(desc.starts_with("JSON "), "seed {seed}: {desc}"),
            }
        }
        let last = items
            .last()
            .unwrap_or_else(|| panic!("seed {seed}: nothing parsed"));
        assert_eq!(last.result.as_ref().ok(), Some(&expected), "seed {seed}");
        assert!(!p.in_message(), "seed {seed}");
    }
    assert!(
        runs > 100 || std::env::var_os("PETREL_FUZZ_SEED").is_some(),
        "only {runs} runs"
    );
}

#[test]
fn server_survives_garbage() {
    let (handle, path) = unix_server(config());
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut runs = 0;
    for seed in seeds() {
        if Instant::now() > deadline {
            break;
        }
        runs += 1;
        let mut rng = Rng(seed);
        let mut c = Client::connect(&path);
        c.recv();
        if rng.below(2) == 0 {
            c.negotiate_again();
        }
        // A reader drains the replies while the writer sends garbage.
        let mut reader = Client::new(c.stream.try_clone().unwrap());
        let collector = std::thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(20);
            while Instant::now() < end {
                let Some(line) = reader.recv_line_timeout(Duration::from_secs(20)) else {
                    break;
                };
                let v: Value = serde_json::from_str(&line).unwrap();
                if v.get("id") == Some(&json!("final")) {
                    return Some(v);
                }
            }
            None
        });
        for _ in 0..1 + rng.below(8) {
            let len = rng.below(4096);
            let chunk = garbage(&mut rng, len);
            c.send_bytes(&chunk);
        }
        c.send("\x1b{\"execute\": \"query-version\", \"id\": \"final\"}\n");
        let reply = collector.join().unwrap();
        let reply = reply.unwrap_or_else(|| panic!("seed {seed}: no reply to the final command"));
        // Negotiated or not, the command was answered.
        assert!(
            reply.get("return").is_some() || reply["error"]["class"] == "CommandNotFound",
            "seed {seed}: {reply}"
        );
    }
    assert!(
        runs > 3 || std::env::var_os("PETREL_FUZZ_SEED").is_some(),
        "only {runs} runs"
    );
    // The server is still fine.
    let mut c = Client::connect(&path);
    c.negotiate();
    assert_eq!(
        c.execute("x-test-echo", json!({"text": "alive"})),
        json!({"return": "alive"})
    );
    handle.shutdown();
}

trait NegotiateAgain {
    fn negotiate_again(&mut self);
}

impl<S: std::io::Read + std::io::Write + std::os::fd::AsRawFd> NegotiateAgain for Client<S> {
    /// Negotiates after the greeting was read.
    fn negotiate_again(&mut self) {
        let r = self.execute("qmp_capabilities", json!({"enable": ["oob"]}));
        assert_eq!(r, json!({"return": {}}));
    }
}

/// The same parser properties with proptest's generator and shrinking: any byte stream, cut
/// into any chunks, never panics the parser, and a control character then a valid command
/// still yields that command.
mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

        #[test]
        fn any_stream_then_resync(
            garbage in prop::collection::vec(any::<u8>(), 0..512),
            cuts in prop::collection::vec(1usize..64, 1..8),
        ) {
            let mut p = Parser::new(Limits::default());
            let mut input = garbage;
            input.push(0x1b);
            input.push(b'\n');
            input.extend_from_slice(br#"{"execute": "query-status", "id": "after"}"#);
            let mut items = Vec::new();
            let mut rest = &input[..];
            let mut i = 0;
            while !rest.is_empty() {
                let n = cuts[i % cuts.len()].min(rest.len());
                items.extend(p.feed_all(&rest[..n]));
                rest = &rest[n..];
                i += 1;
            }
            let last = items.last().map(|item| item.result.clone());
            prop_assert_eq!(
                last,
                Some(Ok(json!({"execute": "query-status", "id": "after"})))
            );
        }
    }
}
