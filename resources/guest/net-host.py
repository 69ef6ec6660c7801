#!/usr/bin/env python3
"""Host ends of the network scenarios (used by test-net.sh and bench-net.sh).

    net-host.py tcp-serve PORT BYTES
        Listens on 127.0.0.1:PORT, accepts one connection, reads a line
        (the guest sends "GET\\n"), sends BYTES bytes of pattern(), closes.
        Prints `request=<repr> sent=<BYTES>` when done.
    net-host.py expect BYTES [LIMIT]
        Prints `netdhcp: fetched bytes=<n> sum=0x<sum>` for the first
        min(BYTES, LIMIT) bytes of pattern(): the guest's fetch line.
    net-host.py tcp-get PORT
        Connects to 127.0.0.1:PORT (retrying for 5 s), prints what it reads
        until EOF as a Python bytes literal.
    net-host.py udp-count PORT [IDLE]
        Counts UDP datagrams to 127.0.0.1:PORT (or 0.0.0.0 with --any) until
        none came for IDLE seconds (default 3) after the first, then prints
        `datagrams=<n> bytes=<n> unique=<n> max_seq=<n> bad=<n> secs=<first to last>`
        (seq = the first 4 payload bytes, big endian; bad = payloads whose
        rest is not 0xa5 bytes). Prints `ready` first, once bound.
    net-host.py ping DST COUNT SIZE
        ICMP echo (raw socket: root), COUNT requests with SIZE payload bytes;
        `reply from DST seq=N bytes=N` per reply (CORRUPT if the payload
        differs), then `sent=N received=N`; exit status 1 unless all came.

pattern(i) = ((i * 7) ^ (i >> 8)) & 0xff. The guest's sum: the data as
little-endian 64-bit words w_k (the last one zero-padded), sum of
(k + 1) * w_k mod 2^64.
"""
import os
import socket
import struct
import sys
import time


def pattern(n):
    return bytes(((i * 7) ^ (i >> 8)) & 0xff for i in range(n))


def wordsum(data):
    data += bytes(-len(data) % 8)
    words = struct.unpack("<%dQ" % (len(data) // 8), data)
    return sum((k + 1) * w for k, w in enumerate(words)) % (1 << 64)


def tcp_serve(port, n, timeout=60.0):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(1)
    s.settimeout(timeout)
    c, _ = s.accept()
    c.settimeout(timeout)
    line = b""
    while not line.endswith(b"\n"):
        d = c.recv(256)
        if not d:
            break
        line += d
    c.sendall(pattern(n))
    c.close()
    print("request=%r sent=%d" % (line, n), flush=True)


def tcp_get(port):
    deadline = time.monotonic() + 5
    while True:
        try:
            c = socket.create_connection(("127.0.0.1", port), timeout=10)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    data = b""
    while True:
        d = c.recv(4096)
        if not d:
            break
        data += d
    print(repr(data), flush=True)


def udp_count(port, idle, any_addr):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
    s.bind(("0.0.0.0" if any_addr else "127.0.0.1", port))
    print("ready", flush=True)
    s.settimeout(120)
    n = nbytes = bad = 0
    seqs = set()
    t0 = t1 = None
    try:
        while True:
            d = s.recv(65536)
            t1 = time.monotonic()
            if t0 is None:
                t0 = t1
                s.settimeout(idle)
            n += 1
            nbytes += len(d)
            if len(d) >= 4:
                seqs.add(struct.unpack("!I", d[:4])[0])
            if d[4:] != b"\xa5" * max(0, len(d) - 4):
                bad += 1
    except socket.timeout:
        pass
    print("datagrams=%d bytes=%d unique=%d max_seq=%d bad=%d secs=%.3f" % (
        n, nbytes, len(seqs), max(seqs) if seqs else -1, bad, (t1 - t0) if n else 0), flush=True)


def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff


def ping(dst, count, size):
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    s.settimeout(2)
    ident = os.getpid() & 0xffff
    got = 0
    for seq in range(1, count + 1):
        payload = bytes((i * 13 + seq) & 0xff for i in range(size))
        m = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + payload
        m = m[:2] + struct.pack("!H", csum(m)) + m[4:]
        s.sendto(m, (dst, 0))
        while True:
            try:
                d, a = s.recvfrom(65536)
            except socket.timeout:
                print("timeout seq=%d" % seq, flush=True)
                break
            r = d[(d[0] & 15) * 4:]
            if r[0] == 0 and struct.unpack("!HH", r[4:8]) == (ident, seq):
                ok = r[8:] == payload and csum(r) == 0
                print("reply from %s seq=%d bytes=%d%s" % (a[0], seq, len(r), "" if ok else " CORRUPT"), flush=True)
                got += ok
                break
        time.sleep(0.02)
    print("sent=%d received=%d" % (count, got), flush=True)
    return got == count


def main():
    a = sys.argv[1:]
    if not a:
        sys.exit(__doc__)
    cmd = a[0]
    if cmd == "tcp-serve":
        tcp_serve(int(a[1]), int(a[2]))
    elif cmd == "expect":
        n = int(a[1])
        if len(a) > 2:
            n = min(n, int(a[2]))
        print("netdhcp: fetched bytes=%d sum=0x%016x" % (n, wordsum(pattern(n))))
    elif cmd == "tcp-get":
        tcp_get(int(a[1]))
    elif cmd == "udp-count":
        any_addr = "--any" in a
        a = [x for x in a if x != "--any"]
        udp_count(int(a[1]), float(a[2]) if len(a) > 2 else 3.0, any_addr)
    elif cmd == "ping":
        sys.exit(0 if ping(a[1], int(a[2]), int(a[3])) else 1)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
