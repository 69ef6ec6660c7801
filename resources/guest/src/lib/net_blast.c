/*
 * The `netblast` scenario: petrel.net.frames UDP frames of petrel.net.size
 * bytes (Ethernet header to the end of the payload) to petrel.net.peer, as
 * fast as the tx ring allows, timed with the TSC like blkbench.
 *
 * Every tx slot holds a complete frame, built once (UDP checksum 0: none);
 * sending frame i only writes i (big endian) into the first 4 payload bytes
 * and puts the slot in the avail ring: every instruction costs about 1 us
 * under KVM-PVM's emulator. All slots are posted before one notify, then
 * each batch of completions (the used ring up to one read of its index) is
 * reposted on the same slots before one notify (skipped while the device
 * sets VIRTQ_USED_F_NO_NOTIFY).
 */
#include "net.h"

#define SPORT           40000
#define FILL            0xA5

struct blast {
    uint64_t frames;
    uint32_t kicks;
};

/* Frame i goes out in slot `s`: its number, then the avail ring. */
#define POST(s)                                                                     \
    do {                                                                            \
        *(uint32_t *)(void *)(area + (s) * NET_BUF_LEN) = __builtin_bswap32((uint32_t)sent); \
        ring[aidx & mask] = (uint16_t)(s);                                          \
        aidx++;                                                                     \
        sent++;                                                                     \
    } while (0)

/* Keeps every tx slot in flight until b->frames went out: each batch of
 * completions is reposted (same slots) with one notify. */
static __attribute__((noinline, hot)) bool run(struct blast *b)
{
    struct virtq *q = &vnet.q[NET_TXQ];
    const volatile uint32_t *used = (const volatile uint32_t *)(const volatile void *)(q->used + 4);
    volatile uint16_t *ring = q->avail + 2;
    uint16_t aidx = q->avail_idx, seen = q->used_seen, mask = (uint16_t)(q->size - 1);
    const unsigned slots = nic.tx_slots;
    uint8_t *area = nic.tx_area + NET_HDR_LEN + ETH_HLEN + 28;     /* payload of slot 0 */
    const uint64_t frames = b->frames;
    uint64_t sent = 0, done = 0;
    uint32_t kicks = 0;
    for (unsigned s = 0; s < slots && sent < frames; s++)
        POST(s);
    for (;;) {
        if (aidx != q->avail_idx) {
            q->avail_idx = aidx;
            kicks += virtq_kick(q);
        }
        if (done == frames)
            break;
        if (virtq_used_idx(q) == seen && !virtio_wait(&vnet, q, false, 0)) {
            kprintf("netblast: FAILED timeout after %lu of %lu frames\n", done, frames);
            return false;
        }
        uint16_t end = virtq_used_idx(q);
        barrier();
        do {
            uint32_t id = used[2 * (seen & mask)];
            seen++;
            if (id >= slots) {
                kprintf("netblast: FAILED used id=%u\n", id);
                return false;
            }
            done++;
            if (sent < frames)
                POST(id);
        } while (seen != end);
        q->used_seen = seen;
    }
    b->kicks = kicks;
    return true;
}

COLD bool netblast_run(void)
{
    uint32_t peer;
    uint16_t port;
    if (!opt_endpoint("petrel.net.peer", &peer, &port))
        panic("netblast needs petrel.net.peer=IP:PORT");
    struct blast b = { 0 };
    b.frames = opt_range("petrel.net.frames", 10000, 1, 0xffffffffu);
    uint64_t size = opt_range("petrel.net.size", ETH_FRAME_MAX, ETH_ZLEN, ETH_FRAME_MAX);
    if (!net_up(true)) {
        nic_close();
        return false;
    }
    kprintf("netblast: tsc_khz=%lu source=%s\n", net.tsc_khz, net.tsc_source);
    uint8_t mac[6];
    if (!arp_resolve(peer, mac, net.timeout_us)) {
        nic_close();
        return false;
    }

    /* Every slot: the same frame with i = 0 (once the ARP request's slot is back). */
    for (uint64_t t1 = net_now_us(); nic.tx_nfree < nic.tx_slots && net_now_us() - t1 < net.timeout_us;)
        net_wait();
    if (nic.tx_nfree < nic.tx_slots) {
        kprintf("netblast: FAILED tx ring not idle\n");
        nic_close();
        return false;
    }
    unsigned plen = (unsigned)size - ETH_HLEN - 28;
    for (unsigned s = 0; s < nic.tx_slots; s++) {
        uint8_t *f = nic.tx_area + s * NET_BUF_LEN + NET_HDR_LEN;
        eth_hdr(f, mac, 0x0800);
        uint8_t *u = f + ETH_HLEN + 20;
        wr16(u, SPORT);
        wr16(u + 2, port);
        wr16(u + 4, (uint16_t)(8 + plen));
        wr16(u + 6, 0);                 /* no UDP checksum */
        memset(u + 8, FILL, plen);      /* rep stosq: far cheaper than copying under emulation */
        ip_hdr(f + ETH_HLEN, net.ip, peer, IP_UDP, 8 + plen);
        wr16(f + ETH_HLEN + 4, 0);      /* the same IP header in every frame: ID 0 (DF is set) */
        uint8_t *ip = f + ETH_HLEN;
        ip[10] = ip[11] = 0;
        *(uint16_t *)(void *)(ip + 10) = (uint16_t)~csum_fold(csum_add(0, ip, 20));
        vnet.q[NET_TXQ].desc[s].len = NET_HDR_LEN + (uint32_t)size;
    }

    char ps[16];
    fmt_ip(ps, peer);
    kprintf("netblast: start frames=%lu size=%lu peer=%s:%u\n", b.frames, size, ps, port);
    uint32_t irqs0 = virtio_irq_count;
    uint64_t t0 = rdtsc();
    bool ok = run(&b);
    uint64_t us = tsc_to_us(rdtsc() - t0);
    uint32_t irqs = virtio_irq_count - irqs0;
    if (ok) {
        uint64_t bytes = b.frames * size;
        kprintf("netblast: done frames=%lu bytes=%lu us=%lu\n", b.frames, bytes, us);
        if (!us)
            us = 1;
        kprintf("netblast: pps=%lu bytes_per_s=%lu\n", b.frames * 1000000 / us, bytes * 1000000 / us);
        kprintf("netblast: kicks=%u irqs=%u\n", b.kicks, irqs);
    }
    nic_close();
    return ok;
}
