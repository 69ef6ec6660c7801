//! QMP round-trip benchmark client: connects to a monitor's unix socket, negotiates, then
//! sends `query-status` N times, one at a time, and prints calls per second and latency
//! percentiles as one JSON line. Used by tests/bench.sh for petrel and QEMU alike.
//!
//! Usage: qmp-rtt SOCKET [CALLS]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

fn read_line(r: &mut impl BufRead, buf: &mut String) -> std::io::Result<()> {
    buf.clear();
    if r.read_line(buf)? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "monitor closed",
        ));
    }
    Ok(())
}

/// Reads until a reply (skipping events).
fn read_reply(r: &mut impl BufRead, buf: &mut String) -> std::io::Result<()> {
    loop {
        read_line(r, buf)?;
        if buf.contains("\"return\"") || buf.contains("\"error\"") {
            return Ok(());
        }
    }
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: qmp-rtt SOCKET [CALLS]");
    let calls: usize = args
        .next()
        .map_or(10_000, |n| n.parse().expect("CALLS is a number"));
    let stream = UnixStream::connect(&path)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    read_line(&mut reader, &mut line)?;
    assert!(line.contains("\"QMP\""), "no greeting: {line}");
    writer.write_all(b"{\"execute\": \"qmp_capabilities\"}\r\n")?;
    read_reply(&mut reader, &mut line)?;

    let request = b"{\"execute\": \"query-status\"}\r\n";
    let mut lat = Vec::with_capacity(calls);
    let start = Instant::now();
    for _ in 0..calls {
        let t = Instant::now();
        writer.write_all(request)?;
        read_reply(&mut reader, &mut line)?;
        lat.push(t.elapsed());
    }
    let total = start.elapsed();
    assert!(line.contains("\"status\""), "unexpected reply: {line}");
    lat.sort();
    let pct =
        |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)].as_secs_f64() * 1e6;
    println!(
        "{{\"calls\": {calls}, \"calls_per_sec\": {:.0}, \"median_us\": {:.1}, \"p99_us\": {:.1}}}",
        calls as f64 / total.as_secs_f64(),
        pct(0.5),
        pct(0.99)
    );
    Ok(())
}
