#!/usr/bin/env bash
# QEMU check of the network scenarios (virtio-net over modern virtio-pci).
#
#   resources/guest/test-net.sh [microvm|q35]     (default microvm)
#
# Builds the guest, then
# - netping: two guests over -netdev socket (listen/connect) ping each other
#   (one with the modern-only device 1af4:1041 and 512-byte merged rx
#   buffers); a guest pings the user-network gateway; an unanswered ARP;
# - netdhcp on user networking: the DHCP lease, a TCP fetch from a host
#   server (byte count and word sum checked against the host's), hostfwd
#   into the guest's TCP port (the greeting checked on the host); again with
#   256-byte merged rx buffers, and without MRG_RXBUF and MSI-X (polled) with
#   petrel.net.fetchlen; no DHCP server; a refused connection;
# - netlink: QMP set_link off/on (MSI-X config vector, one shared vector,
#   polled);
# - netrx: the filter through the control queue, QEMU's NIC_RX_FILTER_CHANGED
#   event and query-rx-filter (two settings); no control queue (ctrl_vq=off);
# - netblast to a host UDP socket over user networking (1514- and 60-byte
#   frames): every datagram arrives once, the guest's time against the host's;
# - as root with /dev/net/tun: a tap in a network namespace of its own (QEMU
#   runs inside it): the guest pings the namespace, the namespace pings the
#   guest (56 and 1400 bytes into 256-byte merged rx buffers), netblast to a
#   UDP socket in the namespace. The namespace is deleted afterwards.
# Needs qemu-system-x86_64, python3 and /dev/kvm (iproute2 for the tap part).
# Exits 0 when every check passed. qemu-run.py and net-host.py (next to this
# script) run QEMU and the host ends.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MACHINE="${1:-microvm}"
[[ $MACHINE == microvm || $MACHINE == q35 ]] || { echo "usage: $0 [microvm|q35]" >&2; exit 2; }
"$HERE/../build-guest.sh" >/dev/null
TMP="$(mktemp -d)"
NS=""
cleanup() {
    [[ -z $NS ]] || ip netns del "$NS" 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT
HOST="$HERE/net-host.py"
fail=0

freeport() {  # freeport tcp|udp: a port nobody uses now
    python3 -c 'import socket, sys
s = socket.socket(type=socket.SOCK_DGRAM if sys.argv[1] == "udp" else socket.SOCK_STREAM)
s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' "$1"
}
# guest <name> <cmdline> <netdev> <extra device options> [qemu-run.py options]:
# serial output in $TMP/<name>, qemu-run.py's stdout in $TMP/<name>.host;
# $QEXTRA: more QEMU arguments; $NETNS: run in that network namespace
guest() {
    local name=$1 cmdline=$2 netdev=$3 dev=$4
    shift 4
    ${NETNS:+ip netns exec "$NETNS"} python3 "$HERE/qemu-run.py" --machine "$MACHINE" --append "$cmdline" \
        --out "$TMP/$name" --qmp "$TMP/$name.sock" "$@" -- ${QEXTRA:-} \
        -netdev "$netdev" -device "virtio-net-pci,netdev=n0,id=nic0$dev" >"$TMP/$name.host" || true
}
ok() { echo "ok   $1"; }
bad() { echo "FAIL $1"; fail=1; }
expect() {  # expect <name> <what> <grep -E pattern>
    if grep -aqE "$3" "$TMP/$1"; then ok "$2"; else bad "$2 (no /$3/ in $1)"; cat "$TMP/$1"; fi
}
expect_line() {  # expect_line <name> <what> <exact line>
    if grep -aqxF "$3" "$TMP/$1"; then ok "$2"; else bad "$2 (no '$3' in $1)"; cat "$TMP/$1"; fi
}
wait_listen() {  # wait_listen <port>: until a TCP socket listens on it (10 s; no connection made)
    python3 - "$1" <<'PY'
import sys, time
port = "%04X" % int(sys.argv[1])
for _ in range(100):
    for line in open("/proc/net/tcp").readlines()[1:]:
        f = line.split()
        if f[1].endswith(":" + port) and f[3] == "0A":
            sys.exit(0)
    time.sleep(0.1)
sys.exit(1)
PY
}
wait_ready() {  # wait_ready <file>: until it says "ready" (5 s)
    for _ in $(seq 50); do grep -q '^ready$' "$1" 2>/dev/null && return 0; sleep 0.1; done
    return 1
}
clock() {  # clock <what> <guest us> <host us>: within 5% + 20 ms
    local g=$2 h=$3
    if [[ -n $g && -n $h ]] && (( h - g <= h / 20 + 20000 && g - h <= h / 20 + 20000 )); then
        ok "$1 clock: guest $g us, host $h us"
    else
        bad "$1 clock: guest '$g' us, host '$h' us"
    fi
}

# ---- netping: two guests over a socket netdev ----
sp=$(freeport tcp)
guest pingA "petrel.test=netping petrel.net.ip=10.0.0.1 petrel.net.peer=10.0.0.2 petrel.net.count=4 petrel.net.secs=3" \
    "socket,id=n0,listen=127.0.0.1:$sp" ",mac=52:54:00:00:00:01" &
pa=$!
wait_listen "$sp" || bad "socket A never listened on $sp"
guest pingB "petrel.test=netping petrel.net.ip=10.0.0.2 petrel.net.peer=10.0.0.1 petrel.net.count=4 petrel.net.secs=3 petrel.net.rxbuf=512" \
    "socket,id=n0,connect=127.0.0.1:$sp" ",mac=52:54:00:00:00:02,disable-legacy=on"
wait $pa
for g in A B; do
    case $g in A) me=1 peer=2 ;; B) me=2 peer=1 ;; esac
    expect ping$g "socket $g mac" "^net: mac=52:54:00:00:00:0$me link=up$"
    expect ping$g "socket $g ip" "^net: ip=10\.0\.0\.$me mask=255\.255\.255\.0 gw=0\.0\.0\.0$"
    expect ping$g "socket $g arp" "^net: arp 10\.0\.0\.$peer is 52:54:00:00:00:0$peer$"
    for seq in 1 2 3 4; do expect ping$g "socket $g reply $seq" "^netping: reply from 10\.0\.0\.$peer seq=$seq$"; done
    expect ping$g "socket $g summary" '^netping: sent=4 received=4 rtt_min_us=[0-9]+ rtt_avg_us=[0-9]+ rtt_max_us=[0-9]+$'
    expect ping$g "socket $g answered" '^netping: answered arp=[01] echo=4$'
    expect ping$g "socket $g status" '^status: 0$'
done
expect pingB "socket B modern-only device" '^virtio: 00:0[0-9a-f]\.0 1af4:1041 features=0x100078020 queue=256,256,16 msix=on$'

# no answer to ARP: status 1
guest pingnone "petrel.test=netping petrel.net.ip=10.0.0.1 petrel.net.peer=10.0.0.9 petrel.net.timeout=2" \
    "socket,id=n0,listen=127.0.0.1:$(freeport tcp)" ""
expect pingnone "unanswered arp" '^net: arp 10\.0\.0\.9 FAILED no answer$'
expect pingnone "unanswered arp status" '^status: 1$'

# the user-network gateway, address by DHCP (no petrel.net.ip)
guest pinguser "petrel.test=netping petrel.net.peer=10.0.2.2 petrel.net.count=3" "user,id=n0" ""
expect pinguser "user lease" '^net: lease ip=10\.0\.2\.15 gw=10\.0\.2\.2 dns=10\.0\.2\.3$'
expect pinguser "user gateway arp" '^net: arp 10\.0\.2\.2 is 52:55:0a:00:02:02$'
expect pinguser "user gateway replies" '^netping: sent=3 received=3 '
expect pinguser "user status" '^status: 0$'

# ---- netdhcp: lease, fetch, hostfwd ----
dhcp_run() {  # dhcp_run <name> <bytes> <extra cmdline> <extra device options>
    local name=$1 bytes=$2 extra=$3 dev=$4 port hp
    port=$(freeport tcp)
    hp=$(freeport tcp)
    python3 "$HOST" tcp-serve "$port" "$bytes" >"$TMP/$name.srv" 2>&1 &
    local srv=$!
    wait_listen "$port" || bad "$name host server never listened"
    guest "$name" "petrel.test=netdhcp petrel.net.fetch=10.0.2.2:$port petrel.net.serve=7777 $extra" \
        "user,id=n0,hostfwd=tcp:127.0.0.1:$hp-:7777" "$dev" \
        --step 'wait:^netdhcp: serving port=7777$' --step "exec:python3 $HOST tcp-get $hp >$TMP/$name.get"
    wait $srv || true
    expect "$name" "$name lease" '^netdhcp: lease ip=10\.0\.2\.15 gw=10\.0\.2\.2 dns=10\.0\.2\.3$'
    expect "$name" "$name lease details" '^netdhcp: mask=255\.255\.255\.0 server=10\.0\.2\.2 lease_secs=86400$'
    expect "$name" "$name connected" "^netdhcp: connected to 10\\.0\\.2\\.2:$port\$"
    if grep -q "^request=b'GET\\\\n' sent=$bytes\$" "$TMP/$name.srv"; then ok "$name host server saw GET"
    else bad "$name host server: $(cat "$TMP/$name.srv")"; fi
    expect "$name" "$name accepted" '^netdhcp: accepted from 10\.0\.2\.2:[0-9]+$'
    if [[ "$(cat "$TMP/$name.get" 2>/dev/null)" == "b'petrel-guest: hello over tcp\\n'" ]]; then
        ok "$name hostfwd greeting on the host"
    else
        bad "$name hostfwd greeting: '$(cat "$TMP/$name.get" 2>/dev/null)'"
    fi
    expect "$name" "$name served" '^netdhcp: served$'
    expect "$name" "$name status" '^status: 0$'
}
dhcp_run dhcp 20000 "" ""
expect_line dhcp "fetch bytes and sum" "$(python3 "$HOST" expect 20000)"
expect dhcp "no merged frames with 2 KiB buffers" '^net: stats rx=[0-9]+ merged=0 bad=0 '
dhcp_run dhcpmrg 20000 "petrel.net.rxbuf=256" ""
expect_line dhcpmrg "fetch into 256-byte buffers" "$(python3 "$HOST" expect 20000)"
expect dhcpmrg "frames spanned buffers" '^net: stats rx=[0-9]+ merged=[1-9][0-9]* bad=0 '
dhcp_run dhcpnomrg 20000 "petrel.net.fetchlen=3000 petrel.net.rxbuf=256" ",mrg_rxbuf=off,vectors=0"
expect dhcpnomrg "no MRG_RXBUF, polled" '^virtio: .* features=0x100070020 queue=256,256,16 msix=off$'
expect_line dhcpnomrg "fetchlen=3000" "$(python3 "$HOST" expect 20000 3000)"
expect dhcpnomrg "rxbuf ignored without MRG_RXBUF" '^net: stats rx=[0-9]+ merged=0 bad=0 '

guest dhcpnone "petrel.test=netdhcp petrel.net.timeout=2" "socket,id=n0,listen=127.0.0.1:$(freeport tcp)" ""
expect dhcpnone "no DHCP server" '^netdhcp: dhcp FAILED no offer$'
expect dhcpnone "no DHCP server status" '^status: 1$'
cp=$(freeport tcp)
guest refused "petrel.test=netdhcp petrel.net.fetch=10.0.2.2:$cp petrel.net.timeout=5" "user,id=n0" ""
expect refused "refused connection" "^netdhcp: fetch FAILED refused by 10\\.0\\.2\\.2:$cp\$"
expect refused "refused status" '^status: 1$'

# ---- netlink: set_link ----
for dev in "" ",vectors=1" ",vectors=0"; do
    guest link "petrel.test=netlink petrel.net.changes=2 petrel.net.timeout=10" "user,id=n0" "$dev" \
        --step 'wait:^netlink: ready$' --step 'qmp:{"execute":"set_link","arguments":{"name":"nic0","up":false}}' \
        --step 'wait:^netlink: link=down$' --step 'qmp:{"execute":"set_link","arguments":{"name":"nic0","up":true}}' \
        --step 'wait:^netlink: link=up$'
    expect link "netlink$dev down" '^netlink: link=down$'
    expect link "netlink$dev up" '^netlink: link=up$'
    expect link "netlink$dev changes" '^netlink: changes=2$'
    expect link "netlink$dev status" '^status: 0$'
done

# ---- netrx: filter, event, query-rx-filter ----
rx_check() {  # rx_check <what> <promiscuous> <multicast> <unicast-table> <multicast-table> (tables: comma lists)
    if python3 - "$TMP/rx.qmp" "$@" <<'PY'
import json, sys
log, what, promisc, mc, uni, multi = sys.argv[1:]
msgs = [json.loads(l) for l in open(log)]
if not any(m.get("event") == "NIC_RX_FILTER_CHANGED" and m["data"].get("name") == "nic0" for m in msgs):
    sys.exit("no NIC_RX_FILTER_CHANGED event")
f = [m["return"][0] for m in msgs if isinstance(m.get("return"), list) and m["return"]][-1]
want = {"promiscuous": promisc == "1", "multicast": mc, "main-mac": "52:54:00:12:34:56",
        "unicast-table": sorted(filter(None, uni.split(","))), "multicast-table": sorted(filter(None, multi.split(",")))}
got = {k: sorted(f[k]) if k.endswith("table") else f[k] for k in want}
if got != want:
    sys.exit("query-rx-filter: %s, expected %s" % (got, want))
PY
    then ok "$1 query-rx-filter"; else bad "$1 query-rx-filter"; fi
}
rx_run() {  # rx_run <cmdline words> <device options>
    rm -f "$TMP/rx.qmp"
    # -S and a first "cont": QMP is connected before the guest sets the filter
    QEXTRA=-S guest rx "petrel.test=netrx petrel.net.secs=1 $1" "user,id=n0" "$2" --qmp-log "$TMP/rx.qmp" \
        --step 'qmp:{"execute":"cont"}' --step 'wait:^netrx: ready$' \
        --step 'qmp:{"execute":"query-rx-filter","arguments":{"name":"nic0"}}'
}
rx_run "petrel.net.mcast=01:00:5e:00:00:fb,33:33:00:00:00:01 petrel.net.ucast=52:54:00:aa:bb:cc" ""
expect rx "netrx promisc=0" '^netrx: filter set promisc=0$'
expect rx "netrx allmulti=0" '^netrx: filter set allmulti=0$'
expect rx "netrx tables" '^netrx: filter set uni=1 multi=2$'
expect rx "netrx frames" '^netrx: frames unicast=[0-9]+ multicast=[0-9]+ broadcast=[0-9]+ other=[0-9]+$'
expect rx "netrx status" '^status: 0$'
rx_check "netrx tables" 0 normal 52:54:00:aa:bb:cc 01:00:5e:00:00:fb,33:33:00:00:00:01
rx_run "petrel.net.promisc=1 petrel.net.allmulti=1" ""
expect rx "netrx promisc=1" '^netrx: filter set promisc=1$'
expect rx "netrx allmulti=1" '^netrx: filter set allmulti=1$'
expect rx "netrx empty tables" '^netrx: filter set uni=0 multi=0$'
rx_check "netrx promisc allmulti" 1 all "" ""
guest rx "petrel.test=netrx petrel.net.secs=0" "user,id=n0" ",ctrl_vq=off"
expect rx "no control queue" '^netrx: no control queue$'
expect rx "no control queue status" '^status: 1$'

# ---- netblast to a host UDP socket ----
blast_run() {  # blast_run <name> <frames> <size> <udp-count port> [netdev] [cmdline words]: guest in $TMP/<name>
    local name=$1 frames=$2 size=$3 port=$4 netdev=${5:-user,id=n0} extra=${6:-}
    guest "$name" "petrel.test=netblast petrel.net.peer=${BLAST_PEER:-10.0.2.2}:$port petrel.net.frames=$frames petrel.net.size=$size $extra" \
        "$netdev" "" --span '^netblast: start' '^netblast: done'
    expect "$name" "$name $size start" "^netblast: start frames=$frames size=$size peer=[0-9.]+:$port\$"
    expect "$name" "$name $size done" "^netblast: done frames=$frames bytes=$((frames * size)) us=[1-9][0-9]*\$"
    expect "$name" "$name $size rate" '^netblast: pps=[1-9][0-9]* bytes_per_s=[1-9][0-9]*$'
    expect "$name" "$name $size kicks" '^netblast: kicks=[1-9][0-9]* irqs=[0-9]+$'
    expect "$name" "$name $size status" '^status: 0$'
    clock "$name $size" "$(grep -aoE '^netblast: done .* us=[0-9]+' "$TMP/$name" | sed 's/.*us=//' || true)" \
        "$(sed -n 's/^host_us=//p' "$TMP/$name.host")"
}
udp_check() {  # udp_check <what> <count file> <frames> <size> <min datagrams>
    local line
    line=$(grep '^datagrams=' "$2" || true)
    if python3 - "$line" "$3" "$4" "$5" <<'PY'
import sys
kv = dict(x.split("=") for x in sys.argv[1].split())
frames, size, least = map(int, sys.argv[2:])
n = int(kv["datagrams"])
sys.exit(not (least <= n <= frames and int(kv["unique"]) == n and int(kv["bad"]) == 0
              and int(kv["bytes"]) == n * (size - 42) and int(kv["max_seq"]) < frames))
PY
    then ok "$1 host received: $line"; else bad "$1 host received: '$line'"; fi
}
for size in 1514 60; do
    up=$(freeport udp)
    python3 "$HOST" udp-count "$up" 1.5 >"$TMP/udp" &
    cnt=$!
    wait_ready "$TMP/udp"
    blast_run blast 20000 $size "$up"
    wait $cnt || true
    udp_check "netblast $size" "$TMP/udp" 20000 $size 20000
    echo "     $(grep -a '^netblast: pps=' "$TMP/blast" || true)"
done

# ---- tap in a network namespace (root) ----
if [[ $(id -u) -eq 0 && -c /dev/net/tun ]] && command -v ip >/dev/null; then
    NS="petrel-net-$$"
    ip netns add "$NS"
    ip -n "$NS" link set lo up
    ip -n "$NS" tuntap add dev ptap0 mode tap
    ip -n "$NS" addr add 10.9.0.1/24 dev ptap0
    ip -n "$NS" link set ptap0 up
    tap="tap,id=n0,ifname=ptap0,script=no,downscript=no"
    NETNS=$NS guest tap "petrel.test=netping petrel.net.ip=10.9.0.2 petrel.net.peer=10.9.0.1 petrel.net.count=3 petrel.net.secs=5 petrel.net.rxbuf=256" \
        "$tap" "" --step 'wait:^netping: serving' \
        --step "exec:python3 $HOST ping 10.9.0.2 4 56 >$TMP/tapping && python3 $HOST ping 10.9.0.2 3 1400 >>$TMP/tapping"
    expect tap "tap arp" '^net: arp 10\.9\.0\.1 is [0-9a-f:]{17}$'
    expect tap "tap guest pings the namespace" '^netping: sent=3 received=3 '
    expect tap "tap namespace pings the guest" '^netping: answered arp=[0-9]+ echo=7$'
    expect tap "tap 1400-byte pings spanned rx buffers" '^net: stats rx=[0-9]+ merged=[1-9][0-9]* bad=0 '
    expect tap "tap status" '^status: 0$'
    if [[ $(grep -c '^reply from 10.9.0.2 seq=[0-9]* bytes=\(64\|1408\)$' "$TMP/tapping" || true) == 7 ]]; then
        ok "tap namespace got 7 intact replies (56 and 1400 bytes)"
    else
        bad "tap namespace replies: $(cat "$TMP/tapping" 2>/dev/null)"
    fi
    up=$(freeport udp)
    ip netns exec "$NS" python3 "$HOST" udp-count "$up" 1.5 --any >"$TMP/udp" &
    cnt=$!
    wait_ready "$TMP/udp"
    NETNS=$NS BLAST_PEER=10.9.0.1 blast_run tapblast 50000 1514 "$up" "$tap" petrel.net.ip=10.9.0.2
    wait $cnt || true
    # the kernel may drop some under its backlog limit: at least 90%
    udp_check "tap netblast 1514" "$TMP/udp" 50000 1514 45000
    echo "     $(grep -a '^netblast: pps=' "$TMP/tapblast" || true)"
    ip netns del "$NS"
    NS=""
else
    echo "skip tap tests (need root, /dev/net/tun and ip)"
fi

[[ $fail -eq 0 ]] && echo "test-net.sh: all ok ($MACHINE)" || echo "test-net.sh: FAILURES ($MACHINE)"
exit $fail
