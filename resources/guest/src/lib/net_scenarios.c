/*
 * The network scenarios netping, netlink, netrx and netdhcp (netblast is in
 * net_blast.c), their petrel.net.* options and the address setup they share.
 * See README.md for the lines.
 */
#include "net.h"

#define VIRTIO_NET_CTRL_RX          0
#define VIRTIO_NET_CTRL_RX_PROMISC  0
#define VIRTIO_NET_CTRL_RX_ALLMULTI 1
#define VIRTIO_NET_CTRL_MAC         1
#define VIRTIO_NET_CTRL_MAC_TABLE_SET 0
#define MAC_TABLE_MAX               16
#define SECS_FOREVER                (~0ULL)

static const char greeting[] = "petrel-guest: hello over tcp\n";

void fmt_ip(char *out, uint32_t ip)
{
    ksnprintf(out, 16, "%u.%u.%u.%u", ip >> 24, (ip >> 16) & 255, (ip >> 8) & 255, ip & 255);
}

void fmt_mac(char *out, const uint8_t m[6])
{
    ksnprintf(out, 18, "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
}

/* ---- options ---- */

/* "a.b.c.d": returns the character after it, NULL if it is not one. */
static const char *parse_ip(const char *s, uint32_t *ip)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned n = 0, digits = 0;
        while (*s >= '0' && *s <= '9' && digits < 4) {
            n = n * 10 + (unsigned)(*s++ - '0');
            digits++;
        }
        if (!digits || digits > 3 || n > 255)
            return NULL;
        v = v << 8 | n;
        if (i < 3 && *s++ != '.')
            return NULL;
    }
    *ip = v;
    return s;
}

static bool opt_ip(const char *key, uint32_t *ip)
{
    char buf[32];
    if (!cmdline_get(boot.cmdline, key, buf, sizeof(buf)))
        return false;
    const char *e = parse_ip(buf, ip);
    if (!e || *e)
        panic("bad %s=%s", key, buf);
    return true;
}

bool opt_endpoint(const char *key, uint32_t *ip, uint16_t *port)
{
    char buf[32];
    if (!cmdline_get(boot.cmdline, key, buf, sizeof(buf)))
        return false;
    const char *e = parse_ip(buf, ip);
    bool ok = false;
    uint64_t p = 0;
    if (e && *e == ':')
        p = parse_u64(e + 1, &ok);
    if (!ok || !p || p > 65535)
        panic("bad %s=%s", key, buf);
    *port = (uint16_t)p;
    return true;
}

uint64_t opt_range(const char *key, uint64_t def, uint64_t min, uint64_t max)
{
    uint64_t v = def;
    if (cmdline_u64(key, &v) && (v < min || v > max))
        panic("bad %s=%lu", key, v);
    return v;
}

/* petrel.net.secs: a number, or "forever"; def when absent. */
static uint64_t opt_secs(uint64_t def)
{
    char buf[16];
    if (cmdline_get(boot.cmdline, "petrel.net.secs", buf, sizeof(buf)) && !memcmp(buf, "forever", 8))
        return SECS_FOREVER;
    return opt_range("petrel.net.secs", def, 0, 86400 * 365);
}

/* "aa:bb:cc:dd:ee:ff,..." into a virtio_net_ctrl_mac table (le32 entries,
 * then the MACs); returns its length in bytes. */
static uint32_t opt_mac_table(const char *key, uint8_t *tbl, uint32_t *entries)
{
    char buf[MAC_TABLE_MAX * 18 + 1];
    uint32_t n = 0;
    if (cmdline_get(boot.cmdline, key, buf, sizeof(buf)) && buf[0]) {
        const char *s = buf;
        for (;;) {
            if (n == MAC_TABLE_MAX)
                panic("bad %s: more than %d addresses", key, MAC_TABLE_MAX);
            for (int i = 0; i < 6; i++) {
                unsigned v = 0;
                for (int d = 0; d < 2; d++, s++) {
                    char c = *s;
                    unsigned x = c >= '0' && c <= '9' ? (unsigned)(c - '0')
                                 : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10)
                                 : c >= 'A' && c <= 'F' ? (unsigned)(c - 'A' + 10) : 16;
                    if (x > 15)
                        panic("bad %s=%s", key, buf);
                    v = v << 4 | x;
                }
                tbl[4 + 6 * n + (unsigned)i] = (uint8_t)v;
                if (i < 5 && *s++ != ':')
                    panic("bad %s=%s", key, buf);
            }
            n++;
            if (!*s)
                break;
            if (*s++ != ',')
                panic("bad %s=%s", key, buf);
        }
    }
    tbl[0] = (uint8_t)n;                /* le32 */
    tbl[1] = tbl[2] = tbl[3] = 0;
    *entries = n;
    return 4 + 6 * n;
}

/* ---- setup shared by the scenarios ---- */

struct addr_opts {
    bool dhcp, have_ip;
    uint32_t ip, mask, gw;
};

static void parse_addr(struct addr_opts *a, bool required)
{
    char buf[32];
    memset(a, 0, sizeof(*a));
    if (cmdline_get(boot.cmdline, "petrel.net.ip", buf, sizeof(buf)) && memcmp(buf, "dhcp", 5)) {
        opt_ip("petrel.net.ip", &a->ip);
        a->have_ip = true;
        a->mask = 0xffffff00u;
        opt_ip("petrel.net.mask", &a->mask);
        opt_ip("petrel.net.gw", &a->gw);
    } else {
        a->dhcp = required || cmdline_get(boot.cmdline, "petrel.net.ip", buf, sizeof(buf));
    }
}

/* The NIC, then the address: static, DHCP, or none. False after a failure line. */
bool net_up(bool ip_required)
{
    struct addr_opts a;
    parse_addr(&a, ip_required);
    net_init();
    if (!nic_open())
        return false;
    if (a.dhcp)
        return dhcp_run("net", net.timeout_us);
    if (a.have_ip) {
        net.ip = a.ip;
        net.mask = a.mask;
        net.gw = a.gw;
        char ip[16], mask[16], gw[16];
        fmt_ip(ip, net.ip);
        fmt_ip(mask, net.mask);
        fmt_ip(gw, net.gw);
        kprintf("net: ip=%s mask=%s gw=%s\n", ip, mask, gw);
    }
    return true;
}

/* Answer ARP and pings for secs seconds (or forever). */
static void serve(uint64_t secs)
{
    uint64_t end = secs == SECS_FOREVER ? ~0ULL : net_now_us() + secs * 1000000;
    while (net_now_us() < end)
        net_wait();
}

static void serve_line(const char *scn, uint64_t secs)
{
    if (secs == SECS_FOREVER)
        kprintf("%s: serving forever\n", scn);
    else
        kprintf("%s: serving secs=%lu\n", scn, secs);
    serve(secs);
}

/* ---- netping ---- */

COLD bool netping_run(void)
{
    uint32_t peer = 0;
    bool has_peer = opt_ip("petrel.net.peer", &peer);
    uint64_t count = opt_range("petrel.net.count", 4, 1, 1000000);
    uint64_t interval = opt_range("petrel.net.interval", 200, 0, 60000);
    uint64_t secs = opt_secs(has_peer ? 0 : SECS_FOREVER);
    if (!net_up(true)) {
        nic_close();
        return false;
    }
    bool ok = true;
    uint8_t mac[6];
    if (has_peer && !arp_resolve(peer, mac, net.timeout_us)) {
        ok = false;
    } else if (has_peer) {
        char ps[16];
        fmt_ip(ps, peer);
        uint64_t received = 0, min = ~0ULL, max = 0, total = 0;
        for (uint64_t seq = 1; seq <= count; seq++) {
            uint32_t r0 = net.ping_replies;
            uint64_t t0 = net_now_us(), now = t0;
            bool got = false;
            icmp_echo_send(mac, peer, net.ping_id, (uint16_t)seq);
            while (!got && (now = net_now_us()) - t0 < 1000000) {
                net_wait();
                got = net.ping_replies != r0 && net.ping_last_seq == (uint16_t)seq && net.ping_last_from == peer;
            }
            if (got) {
                uint64_t rtt = net.ping_last_us - t0;
                received++;
                total += rtt;
                min = rtt < min ? rtt : min;
                max = rtt > max ? rtt : max;
                kprintf("netping: reply from %s seq=%lu\n", ps, seq);
            }
            for (uint64_t t1 = net_now_us(); seq < count && net_now_us() - t1 < interval * 1000;)
                net_wait();
        }
        kprintf("netping: sent=%lu received=%lu rtt_min_us=%lu rtt_avg_us=%lu rtt_max_us=%lu\n", count, received,
                received ? min : 0, received ? total / received : 0, max);
        ok = received == count;
    }
    if (secs)
        serve_line("netping", secs);
    kprintf("netping: answered arp=%u echo=%u\n", net.arp_answered, net.echo_answered);
    nic_close();
    return ok;
}

/* ---- netlink ---- */

COLD bool netlink_run(void)
{
    uint64_t want = opt_range("petrel.net.changes", 0, 0, 1000000);
    uint64_t secs = opt_secs(SECS_FOREVER);
    if (!net_up(false)) {
        nic_close();
        return false;
    }
    if (!(vnet.features & NET_F_STATUS)) {
        kprintf("netlink: no STATUS feature\n");
        nic_close();
        return false;
    }
    kprintf("netlink: ready\n");
    uint64_t end = secs == SECS_FOREVER ? ~0ULL : net_now_us() + secs * 1000000;
    uint32_t seen = nic.link_changes, n = 0;
    while ((!want || n < want) && net_now_us() < end) {
        net_wait();                     /* at most one link change per call */
        if (nic.link_changes != seen) {
            seen = nic.link_changes;
            n++;
            kprintf("netlink: link=%s\n", nic.link_up ? "up" : "down");
        }
    }
    kprintf("netlink: changes=%u\n", n);
    nic_close();
    return !want || n >= want;
}

/* ---- netrx ---- */

static bool rx_cmd(const char *what, uint8_t cmd, uint8_t on)
{
    bool ok = nic_ctrl(VIRTIO_NET_CTRL_RX, cmd, &on, 1, NULL, 0);
    if (ok)
        kprintf("netrx: filter set %s=%u\n", what, on);
    else
        kprintf("netrx: filter FAILED %s\n", what);
    return ok;
}

COLD bool netrx_run(void)
{
    static uint8_t uni[4 + 6 * MAC_TABLE_MAX], multi[4 + 6 * MAC_TABLE_MAX];
    uint64_t promisc = opt_range("petrel.net.promisc", 0, 0, 1);
    uint64_t allmulti = opt_range("petrel.net.allmulti", 0, 0, 1);
    uint32_t nu, nm;
    uint32_t lu = opt_mac_table("petrel.net.ucast", uni, &nu);
    uint32_t lm = opt_mac_table("petrel.net.mcast", multi, &nm);
    uint64_t secs = opt_secs(SECS_FOREVER);
    if (!net_up(false)) {
        nic_close();
        return false;
    }
    if (!nic.ctrl) {
        kprintf("netrx: no control queue\n");
        nic_close();
        return false;
    }
    bool ok = rx_cmd("promisc", VIRTIO_NET_CTRL_RX_PROMISC, (uint8_t)promisc);
    ok = rx_cmd("allmulti", VIRTIO_NET_CTRL_RX_ALLMULTI, (uint8_t)allmulti) && ok;
    if (nic_ctrl(VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_TABLE_SET, uni, lu, multi, lm)) {
        kprintf("netrx: filter set uni=%u multi=%u\n", nu, nm);
    } else {
        kprintf("netrx: filter FAILED mac table\n");
        ok = false;
    }
    kprintf("netrx: ready\n");
    serve(secs);
    kprintf("netrx: frames unicast=%u multicast=%u broadcast=%u other=%u\n", net.rx_unicast, net.rx_multicast,
            net.rx_broadcast, net.rx_foreign);
    nic_close();
    return ok;
}

/* ---- netdhcp ---- */

COLD bool netdhcp_run(void)
{
    uint32_t fip = 0;
    uint16_t fport = 0;
    bool fetch = opt_endpoint("petrel.net.fetch", &fip, &fport);
    uint64_t limit = opt_range("petrel.net.fetchlen", ~0ULL, 1, ~0ULL);
    uint64_t port = opt_range("petrel.net.serve", 0, 1, 65535);
    net_init();
    bool ok = nic_open() && dhcp_run("netdhcp", net.timeout_us);
    if (ok && fetch) {
        uint64_t bytes, sum;
        ok = tcp_fetch("netdhcp", fip, fport, "GET\n", limit, net.timeout_us, &bytes, &sum);
        if (ok)
            kprintf("netdhcp: fetched bytes=%lu sum=0x%016lx\n", bytes, sum);
    }
    if (ok && port) {
        ok = tcp_serve("netdhcp", (uint16_t)port, greeting, net.timeout_us);
        if (ok)
            kprintf("netdhcp: served\n");
    }
    nic_close();
    return ok;
}
