/*
 * The small network stack on top of virtio_net.c: Ethernet (our MAC,
 * broadcast; multicast frames are counted and go up too), ARP (answers for
 * our IP, an 8-entry cache, resolution with one request per second), IPv4
 * (no options sent, no fragments accepted, header checksum checked), ICMP
 * echo (answered; replies to our own pings are noted), UDP (checksum checked
 * when present; port 68 goes to the DHCP client), TCP (net_tcp.c) and a
 * DHCP client. Time is the TSC, calibrated once (net_init).
 *
 * Nothing here waits except arp_resolve() and dhcp_run(), which loop on
 * net_wait(): handlers run from nic_poll() and only send.
 */
#include "net.h"

#define ETH_ARP         0x0806
#define ETH_IP          0x0800
#define DHCP_DISCOVER   1
#define DHCP_OFFER      2
#define DHCP_REQUEST    3
#define DHCP_ACK        5
#define DHCP_NAK        6
#define DHCP_MAGIC      0x63825363u
#define DHCP_LEN        300             /* BOOTP minimum */

enum { DS_SELECTING, DS_REQUESTING, DS_BOUND };

struct net net;
const uint8_t mac_bcast[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
static bool dhcp_resend;                /* state changed: send the next message now */

static void mac_copy(uint8_t *d, const uint8_t *s)
{
    *(uint32_t *)(void *)d = *(const uint32_t *)(const void *)s;
    *(uint16_t *)(void *)(d + 4) = *(const uint16_t *)(const void *)(s + 4);
}

static bool mac_eq(const uint8_t *a, const uint8_t *b)
{
    return *(const uint32_t *)(const void *)a == *(const uint32_t *)(const void *)b &&
           *(const uint16_t *)(const void *)(a + 4) == *(const uint16_t *)(const void *)(b + 4);
}

void net_init(void)
{
    memset(&net, 0, sizeof(net));
    net.timeout_us = opt_range("petrel.net.timeout", 30, 1, 86400) * 1000000;
    net.tsc_khz = timer_calibrate_tsc(&net.tsc_source);
    net.tsc0 = rdtsc();
    net.ping_id = (uint16_t)(net.tsc0 >> 4);
    net.ip_id = (uint16_t)(net.tsc0 >> 20);
}

uint64_t net_now_us(void)
{
    return tsc_to_us(rdtsc() - net.tsc0);
}

void net_wait(void)
{
    if (nic_poll())
        return;
    nic_sleep();
    nic_poll();
}

/* ---- checksums ---- */

uint64_t csum_add(uint64_t sum, const void *p, size_t n)
{
    const uint8_t *b = p;
    size_t q = n / 8;
    if (q)  /* 8 bytes per step with the carry chained (lea and dec keep CF) */
        __asm__ volatile("clc\n"
                         "1: adcq (%[b]), %[s]\n"
                         "leaq 8(%[b]), %[b]\n"
                         "decq %[q]\n"
                         "jnz 1b\n"
                         "adcq $0, %[s]"
                         : [s] "+r"(sum), [b] "+r"(b), [q] "+r"(q)
                         :
                         : "cc", "memory");
    uint64_t t = 0;
    for (unsigned i = 0; i < (n & 7); i++)
        t |= (uint64_t)b[i] << (8 * i);
    sum += t;
    return sum + (sum < t);
}

uint16_t csum_fold(uint64_t s)
{
    s = (s & 0xffffffffu) + (s >> 32);
    s = (s & 0xffffffffu) + (s >> 32);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    return (uint16_t)s;
}

uint64_t csum_pseudo(uint32_t src, uint32_t dst, uint8_t proto, unsigned len)
{
    uint8_t ph[12];
    wr32(ph, src);
    wr32(ph + 4, dst);
    ph[8] = 0;
    ph[9] = proto;
    wr16(ph + 10, (uint16_t)len);
    return csum_add(0, ph, 12);
}

static void csum_store(uint8_t *field, uint64_t sum)
{
    *(uint16_t *)(void *)field = (uint16_t)~csum_fold(sum);
}

/* ---- building frames ---- */

void eth_hdr(uint8_t *f, const uint8_t dst[6], uint16_t type)
{
    mac_copy(f, dst);
    mac_copy(f + 6, nic.mac);
    wr16(f + 12, type);
}

void ip_hdr(uint8_t *ip, uint32_t src, uint32_t dst, uint8_t proto, unsigned plen)
{
    ip[0] = 0x45;
    ip[1] = 0;
    wr16(ip + 2, (uint16_t)(20 + plen));
    wr16(ip + 4, net.ip_id++);
    wr16(ip + 6, 0x4000);               /* DF */
    ip[8] = 64;
    ip[9] = proto;
    ip[10] = ip[11] = 0;
    wr32(ip + 12, src);
    wr32(ip + 16, dst);
    csum_store(ip + 10, csum_add(0, ip, 20));
}

void ip_send(uint8_t *f, const uint8_t dst_mac[6], uint32_t dst, uint8_t proto, unsigned plen)
{
    eth_hdr(f, dst_mac, ETH_IP);
    ip_hdr(f + ETH_HLEN, net.ip, dst, proto, plen);
    nic_tx(f, ETH_HLEN + 20 + plen);
}

void udp_send(uint8_t *f, const uint8_t dst_mac[6], uint32_t src, uint32_t dst, uint16_t sport, uint16_t dport,
              unsigned len)
{
    uint8_t *u = f + ETH_HLEN + 20;
    wr16(u, sport);
    wr16(u + 2, dport);
    wr16(u + 4, (uint16_t)(8 + len));
    wr16(u + 6, 0);
    uint16_t c = (uint16_t)~csum_fold(csum_add(csum_pseudo(src, dst, IP_UDP, 8 + len), u, 8 + len));
    *(uint16_t *)(void *)(u + 6) = c ? c : 0xffff;
    eth_hdr(f, dst_mac, ETH_IP);
    ip_hdr(f + ETH_HLEN, src, dst, IP_UDP, 8 + len);
    nic_tx(f, ETH_HLEN + 28 + len);
}

/* ---- ARP ---- */

bool net_same_subnet(uint32_t ip)
{
    return net.mask && !((ip ^ net.ip) & net.mask);
}

bool arp_lookup(uint32_t ip, uint8_t mac[6])
{
    for (unsigned i = 0; i < ARP_CACHE; i++)
        if (net.arp[i].ip == ip && ip) {
            if (mac)
                mac_copy(mac, net.arp[i].mac);
            return true;
        }
    return false;
}

static void arp_learn(uint32_t ip, const uint8_t *mac)
{
    for (unsigned i = 0; i < ARP_CACHE; i++)
        if (net.arp[i].ip == ip) {
            mac_copy(net.arp[i].mac, mac);
            return;
        }
    unsigned i = net.arp_next++ % ARP_CACHE;
    net.arp[i].ip = ip;
    mac_copy(net.arp[i].mac, mac);
}

static void arp_send(uint16_t op, const uint8_t *dst_mac, const uint8_t *tha, uint32_t tpa)
{
    uint8_t *f = nic_tx_buf();
    if (!f)
        return;
    eth_hdr(f, dst_mac, ETH_ARP);
    uint8_t *a = f + ETH_HLEN;
    wr16(a, 1);
    wr16(a + 2, ETH_IP);
    a[4] = 6;
    a[5] = 4;
    wr16(a + 6, op);
    mac_copy(a + 8, nic.mac);
    wr32(a + 14, net.ip);
    mac_copy(a + 18, tha);
    wr32(a + 24, tpa);
    nic_tx(f, ETH_HLEN + 28);
}

static void arp_input(const uint8_t *a, unsigned len)
{
    if (len < 28 || rd16(a) != 1 || rd16(a + 2) != ETH_IP || a[4] != 6 || a[5] != 4)
        return;
    uint16_t op = rd16(a + 6);
    const uint8_t *sha = a + 8;
    uint32_t spa = rd32(a + 14), tpa = rd32(a + 24);
    bool for_us = net.ip && tpa == net.ip;
    if (spa && (for_us || arp_lookup(spa, NULL)))
        arp_learn(spa, sha);
    if (op == 1 && for_us) {
        arp_send(2, sha, sha, spa);
        net.arp_answered++;
    }
}

bool arp_resolve(uint32_t ip, uint8_t mac[6], uint64_t timeout_us)
{
    uint32_t hop = net_same_subnet(ip) ? ip : net.gw;
    char s[16], m[18];
    fmt_ip(s, hop);
    if (!hop || !net.ip) {
        kprintf("net: arp %s FAILED no route\n", s);
        return false;
    }
    uint64_t deadline = net_now_us() + timeout_us, next = 0;
    while (!arp_lookup(hop, mac)) {
        uint64_t now = net_now_us();
        if (now >= deadline) {
            kprintf("net: arp %s FAILED no answer\n", s);
            return false;
        }
        if (now >= next) {
            static const uint8_t zero[6];
            arp_send(1, mac_bcast, zero, hop);
            next = now + 1000000;
        }
        net_wait();
    }
    fmt_mac(m, mac);
    kprintf("net: arp %s is %s\n", s, m);
    return true;
}

/* ---- ICMP ---- */

bool icmp_echo_send(const uint8_t dst_mac[6], uint32_t dst, uint16_t id, uint16_t seq)
{
    uint8_t *f = nic_tx_buf();
    if (!f)
        return false;
    uint8_t *m = f + ETH_HLEN + 20;
    m[0] = 8;
    m[1] = 0;
    wr16(m + 2, 0);
    wr16(m + 4, id);
    wr16(m + 6, seq);
    *(uint64_t *)(void *)(m + 8) = rdtsc();
    for (unsigned i = 16; i < 64; i++)  /* like ping: 0x10, 0x11, ... */
        m[i] = (uint8_t)i;
    csum_store(m + 2, csum_add(0, m, 64));
    ip_send(f, dst_mac, dst, IP_ICMP, 64);
    return true;
}

static void icmp_input(const uint8_t *frame, const uint8_t *ip, const uint8_t *m, unsigned len)
{
    if (len < 8 || csum_fold(csum_add(0, m, len)) != 0xffff)
        return;
    uint32_t src = rd32(ip + 12);
    if (m[0] == 8 && m[1] == 0 && rd32(ip + 16) == net.ip) {
        if (ETH_HLEN + 20 + len > NET_BUF_LEN - NET_HDR_LEN)
            return;
        uint8_t *f = nic_tx_buf();
        if (!f)
            return;
        uint8_t *r = f + ETH_HLEN + 20;
        memcpy(r, m, len);
        r[0] = 0;
        wr16(r + 2, 0);
        csum_store(r + 2, csum_add(0, r, len));
        ip_send(f, frame + 6, src, IP_ICMP, len);
        net.echo_answered++;
    } else if (m[0] == 0 && rd16(m + 4) == net.ping_id) {
        net.ping_last_seq = rd16(m + 6);
        net.ping_last_from = src;
        net.ping_last_us = net_now_us();
        net.ping_replies++;
    }
}

/* ---- DHCP ---- */

static void dhcp_send(uint8_t type)
{
    uint8_t *f = nic_tx_buf();
    if (!f)
        return;
    uint8_t *p = f + ETH_HLEN + 28;
    memset(p, 0, DHCP_LEN);
    p[0] = 1;                               /* BOOTREQUEST */
    p[1] = 1;                               /* Ethernet */
    p[2] = 6;
    wr32(p + 4, net.dhcp_xid);
    mac_copy(p + 28, nic.mac);              /* chaddr */
    wr32(p + 236, DHCP_MAGIC);
    uint8_t *o = p + 240;
    *o++ = 53, *o++ = 1, *o++ = type;       /* message type */
    *o++ = 61, *o++ = 7, *o++ = 1;          /* client identifier: type 1 + MAC */
    mac_copy(o, nic.mac);
    o += 6;
    if (type == DHCP_REQUEST) {
        *o++ = 50, *o++ = 4;                /* requested address */
        wr32(o, net.dhcp_offer);
        o += 4;
        *o++ = 54, *o++ = 4;                /* server identifier */
        wr32(o, net.dhcp_offer_server);
        o += 4;
    }
    *o++ = 55, *o++ = 4, *o++ = 1, *o++ = 3, *o++ = 6, *o++ = 51;  /* mask, router, DNS, lease */
    *o++ = 255;
    udp_send(f, mac_bcast, 0, 0xffffffffu, 68, 67, DHCP_LEN);
}

static void dhcp_input(const uint8_t *p, unsigned len)
{
    if (len < 240 || p[0] != 2 || rd32(p + 4) != net.dhcp_xid || !mac_eq(p + 28, nic.mac) ||
        rd32(p + 236) != DHCP_MAGIC)
        return;
    uint8_t type = 0;
    uint32_t mask = 0, router = 0, dns = 0, lease = 0, server = 0;
    for (unsigned i = 240; i < len && p[i] != 255;) {
        uint8_t code = p[i];
        if (code == 0) {
            i++;
            continue;
        }
        if (i + 2 > len || i + 2 + p[i + 1] > len)
            break;
        unsigned l = p[i + 1];
        const uint8_t *v = p + i + 2;
        if (code == 53 && l >= 1)
            type = v[0];
        else if (code == 1 && l >= 4)
            mask = rd32(v);
        else if (code == 3 && l >= 4)
            router = rd32(v);
        else if (code == 6 && l >= 4)
            dns = rd32(v);
        else if (code == 51 && l >= 4)
            lease = rd32(v);
        else if (code == 54 && l >= 4)
            server = rd32(v);
        i += 2 + l;
    }
    uint32_t yiaddr = rd32(p + 16);
    if (net.dhcp_state == DS_SELECTING && type == DHCP_OFFER && yiaddr) {
        net.dhcp_offer = yiaddr;
        net.dhcp_offer_server = server ? server : rd32(p + 20);  /* siaddr if no option 54 */
        net.dhcp_state = DS_REQUESTING;
        dhcp_resend = true;
    } else if (net.dhcp_state == DS_REQUESTING && type == DHCP_ACK && yiaddr) {
        net.ip = yiaddr;
        net.mask = mask ? mask : 0xffffff00u;
        net.gw = router;
        net.dns = dns;
        net.server = net.dhcp_offer_server;
        net.lease_secs = lease;
        net.dhcp_state = DS_BOUND;
    } else if (net.dhcp_state == DS_REQUESTING && type == DHCP_NAK) {
        net.dhcp_state = DS_SELECTING;
        dhcp_resend = true;
    }
}

bool dhcp_run(const char *prefix, uint64_t timeout_us)
{
    net.ip = 0;
    net.dhcp_xid = (uint32_t)rdtsc() ^ 0x5045544cu;
    net.dhcp_state = DS_SELECTING;
    net.dhcp_active = true;
    uint64_t deadline = net_now_us() + timeout_us, next = 0;
    while (net.dhcp_state != DS_BOUND) {
        uint64_t now = net_now_us();
        if (now >= deadline) {
            kprintf("%s: dhcp FAILED %s\n", prefix, net.dhcp_state == DS_SELECTING ? "no offer" : "no ack");
            net.dhcp_active = false;
            return false;
        }
        if (now >= next || dhcp_resend) {
            dhcp_resend = false;
            dhcp_send(net.dhcp_state == DS_SELECTING ? DHCP_DISCOVER : DHCP_REQUEST);
            next = now + 2000000;
        }
        net_wait();
    }
    net.dhcp_active = false;
    char ip[16], gw[16], dns[16], mask[16], srv[16];
    fmt_ip(ip, net.ip);
    fmt_ip(gw, net.gw);
    fmt_ip(dns, net.dns);
    fmt_ip(mask, net.mask);
    fmt_ip(srv, net.server);
    kprintf("%s: lease ip=%s gw=%s dns=%s\n", prefix, ip, gw, dns);
    kprintf("%s: mask=%s server=%s lease_secs=%u\n", prefix, mask, srv, net.lease_secs);
    return true;
}

/* ---- input ---- */

static void udp_input(const uint8_t *ip, const uint8_t *u, unsigned len)
{
    if (len < 8)
        return;
    unsigned ulen = rd16(u + 4);
    if (ulen < 8 || ulen > len)
        return;
    if (rd16(u + 6) &&
        csum_fold(csum_add(csum_pseudo(rd32(ip + 12), rd32(ip + 16), IP_UDP, ulen), u, ulen)) != 0xffff)
        return;
    if (rd16(u + 2) == 68 && net.dhcp_active)
        dhcp_input(u + 8, ulen - 8);
}

static void ip_input(const uint8_t *frame, const uint8_t *ip, unsigned len)
{
    if (len < 20 || (ip[0] >> 4) != 4)
        return;
    unsigned ihl = (ip[0] & 15) * 4u, tot = rd16(ip + 2);
    if (ihl < 20 || tot < ihl || tot > len || csum_fold(csum_add(0, ip, ihl)) != 0xffff)
        return;
    if (rd16(ip + 6) & 0x3fff)              /* MF or a fragment offset */
        return;
    uint32_t dst = rd32(ip + 16);
    bool to_us = net.ip && dst == net.ip;
    bool bcast = dst == 0xffffffffu || (net.ip && net.mask && dst == (net.ip | ~net.mask));
    const uint8_t *p = ip + ihl;
    unsigned plen = tot - ihl;
    switch (ip[9]) {
    case IP_ICMP:
        if (to_us)
            icmp_input(frame, ip, p, plen);
        break;
    case IP_UDP:
        if (to_us || bcast || net.dhcp_active)
            udp_input(ip, p, plen);
        break;
    case IP_TCP:
        if (to_us)
            tcp_input(frame, ip, p, plen);
        break;
    }
}

void net_input(uint8_t *frame, unsigned len)
{
    if (len < ETH_HLEN)
        return;
    if (frame[0] & 1) {
        if (mac_eq(frame, mac_bcast))
            net.rx_broadcast++;
        else
            net.rx_multicast++;
    } else if (mac_eq(frame, nic.mac)) {
        net.rx_unicast++;
    } else {
        net.rx_foreign++;                   /* e.g. a promiscuous device */
        return;
    }
    uint16_t type = rd16(frame + 12);
    if (type == ETH_ARP)
        arp_input(frame + ETH_HLEN, len - ETH_HLEN);
    else if (type == ETH_IP)
        ip_input(frame, frame + ETH_HLEN, len - ETH_HLEN);
}
