/*
 * virtio-net over modern virtio-pci (1af4:1041, or 1af4:1000 transitional
 * with the modern capabilities): features VERSION_1, MAC, STATUS,
 * MRG_RXBUF, CTRL_VQ, CTRL_RX (no offloads), queues rx 0 and tx 1 (up to
 * 256 entries) and, with CTRL_VQ, ctrl 2; MSI-X entry 0 for the queues and
 * entry 1 for configuration changes, else polled.
 *
 * Buffers live in RAM after the image: 64 rx buffers and one tx slot per tx
 * descriptor, 2 KiB each, each one descriptor (descriptor i = buffer or slot
 * i); with MRG_RXBUF petrel.net.rxbuf=N posts 64 * 2048 / N buffers of N
 * bytes instead (at most the queue size). Every tx frame has the 12-byte zero header in front of it in the same
 * descriptor; every rx buffer starts with the 12-byte header, whose
 * num_buffers (with MRG_RXBUF) says how many buffers the frame spans.
 */
#include "net.h"

#define NET_FEATURES    (NET_F_MAC | NET_F_MRG_RXBUF | NET_F_STATUS | NET_F_CTRL_VQ | NET_F_CTRL_RX)
#define RX_BUFS         64
#define QSIZE           256
#define CTRL_QSIZE      16
#define NET_S_LINK_UP   1
#define ISR_CONFIG      2

struct virtio_dev vnet;
struct nic nic;
static bool in_poll;            /* frames sent while handling rx are notified once, at the end */

static struct {
    uint8_t cls, cmd;
    uint8_t pad[14];
    uint8_t ack;
} ctl __attribute__((aligned(16)));

bool nic_read_link(void)
{
    if (!(vnet.features & NET_F_STATUS))
        return true;
    uint8_t gen;
    uint16_t st;
    do {
        gen = virtio_config_generation(&vnet);
        st = mmio_read16(vnet.devcfg + 6);
    } while (gen != virtio_config_generation(&vnet));
    return st & NET_S_LINK_UP;
}

static void read_mac(void)
{
    if (!(vnet.features & NET_F_MAC)) {
        /* Locally administered, unicast, from the TSC. */
        uint64_t t = rdtsc();
        nic.mac[0] = 0x02;
        for (int i = 1; i < 6; i++)
            nic.mac[i] = (uint8_t)(t >> (8 * i));
        return;
    }
    uint8_t gen;
    do {
        gen = virtio_config_generation(&vnet);
        for (int i = 0; i < 6; i++)
            nic.mac[i] = mmio_read8(vnet.devcfg + (uint64_t)i);
    } while (gen != virtio_config_generation(&vnet));
}

/* CTRL_RX needs CTRL_VQ (virtio 1.x, 5.1.3.1). */
static uint64_t feature_deps(uint64_t f)
{
    return f & NET_F_CTRL_VQ ? f : f & ~NET_F_CTRL_RX;
}

COLD bool nic_open(void)
{
    if (!pci_find(0x1af4, 0x1041, 0x1000, &vnet.pci)) {
        kprintf("net: no device\n");
        return false;
    }
    memset(&nic, 0, sizeof(nic));
    unsigned rxbuf = (unsigned)opt_range("petrel.net.rxbuf", NET_BUF_LEN, 64, NET_BUF_LEN);
    vnet.timeout_us = net.timeout_us;
    vnet.feature_deps = feature_deps;
    if (!virtio_begin(&vnet, NET_FEATURES, true))
        goto fail;
    nic.mrg = vnet.features & NET_F_MRG_RXBUF;
    nic.ctrl = (vnet.features & NET_F_CTRL_VQ) && (vnet.features & NET_F_CTRL_RX);
    if (!virtio_queue(&vnet, NET_RXQ, QSIZE) || !virtio_queue(&vnet, NET_TXQ, QSIZE))
        goto fail;
    if ((vnet.features & NET_F_CTRL_VQ) && !virtio_queue(&vnet, NET_CTRLQ, CTRL_QSIZE))
        goto fail;

    struct virtq *rq = &vnet.q[NET_RXQ], *tq = &vnet.q[NET_TXQ];
    /* petrel.net.rxbuf: smaller rx buffers (more of them) make every
     * full-size frame span several (MRG_RXBUF only: else 2048). */
    nic.rx_len = nic.mrg ? rxbuf : NET_BUF_LEN;
    nic.rx_bufs = RX_BUFS * NET_BUF_LEN / nic.rx_len;
    if (nic.rx_bufs > rq->size)
        nic.rx_bufs = rq->size;
    nic.tx_slots = tq->size;
    uint8_t *area = ram_after_image((uint64_t)(nic.rx_bufs + nic.tx_slots) * NET_BUF_LEN + REASM_MAX);
    if (!area) {
        kprintf("net: no RAM for the buffers\n");
        goto fail;
    }
    nic.rx_area = area;
    nic.tx_area = area + nic.rx_bufs * NET_BUF_LEN;
    nic.reasm = nic.tx_area + nic.tx_slots * NET_BUF_LEN;
    for (unsigned i = 0; i < nic.rx_bufs; i++) {
        uint64_t a = (uintptr_t)(nic.rx_area + i * NET_BUF_LEN);
        uint32_t l = nic.rx_len;
        virtq_chain(rq, i, 1, &a, &l, 1);
        virtq_post(rq, (uint16_t)i);
    }
    for (unsigned i = 0; i < nic.tx_slots; i++) {
        uint8_t *s = nic.tx_area + i * NET_BUF_LEN;
        memset(s, 0, NET_HDR_LEN);
        tq->desc[i].addr = (uintptr_t)s;
        tq->desc[i].flags = 0;
        tq->desc[i].next = 0;
        nic.tx_free[i] = (uint16_t)(nic.tx_slots - 1 - i);   /* slot 0 first */
    }
    nic.tx_nfree = nic.tx_slots;
    read_mac();
    if (!virtio_ready(&vnet))
        goto fail;
    nic.cfg_seen = virtio_config_irq_count;
    nic.irq_seen = virtio_irq_count;
    nic.link_up = nic_read_link();
    virtq_kick(rq);                 /* notifications only after DRIVER_OK */
    virtio_watchdog(&vnet, true);   /* on for the whole scenario: hlt never sleeps long */
    nic.up = true;
    char m[18];
    fmt_mac(m, nic.mac);
    kprintf("net: mac=%s link=%s\n", m, nic.link_up ? "up" : "down");
    return true;
fail:
    kprintf("net: init FAILED\n");
    virtio_quiesce(&vnet);
    return false;
}

void nic_close(void)
{
    if (nic.up)
        kprintf("net: stats rx=%u merged=%u bad=%u tx=%u\n", nic.rx_frames, nic.rx_merged, nic.rx_bad,
                nic.tx_frames);
    virtio_watchdog(&vnet, false);
    virtio_quiesce(&vnet);
}

/* One used rx buffer. */
static void rx_buffer(unsigned id, uint32_t len)
{
    uint8_t *b = nic.rx_area + id * NET_BUF_LEN;
    if (nic.reasm_left) {
        /* A further buffer of a merged frame: data only, no header. */
        if (nic.reasm_len + len > REASM_MAX)
            nic.reasm_drop = true;
        else
            memcpy(nic.reasm + nic.reasm_len, b, len);
        nic.reasm_len += len;
        if (--nic.reasm_left == 0) {
            if (!nic.reasm_drop) {
                nic.rx_frames++;
                nic.rx_merged++;
                net_input(nic.reasm, nic.reasm_len);
            } else {
                nic.rx_bad++;
            }
        }
        return;
    }
    if (len < NET_HDR_LEN) {
        nic.rx_bad++;
        return;
    }
    unsigned nb = nic.mrg ? (unsigned)(b[10] | b[11] << 8) : 1;
    len -= NET_HDR_LEN;
    if (nb <= 1) {
        nic.rx_frames++;
        net_input(b + NET_HDR_LEN, len);
        return;
    }
    memcpy(nic.reasm, b + NET_HDR_LEN, len);
    nic.reasm_len = len;
    nic.reasm_left = nb - 1;
    nic.reasm_drop = false;
}

void nic_tx_reclaim(void)
{
    struct virtq *tq = &vnet.q[NET_TXQ];
    int id;
    while ((id = virtq_pop(tq)) >= 0)
        if ((unsigned)id < nic.tx_slots && nic.tx_nfree < nic.tx_slots)
            nic.tx_free[nic.tx_nfree++] = (uint16_t)id;
}

/* Has the configuration-change path shown a new link status? */
static unsigned link_check(void)
{
    if (!(vnet.features & NET_F_STATUS))
        return 0;
    bool check = false;
    if (vnet.config_irq) {
        check = virtio_config_irq_count != nic.cfg_seen;
        nic.cfg_seen = virtio_config_irq_count;
    } else if (vnet.msix) {
        check = virtio_irq_count != nic.irq_seen;       /* one vector for everything */
        nic.irq_seen = virtio_irq_count;
    } else {
        uint64_t now = net_now_us();
        if (now >= nic.cfg_poll_us) {
            nic.cfg_poll_us = now + 10000;
            check = virtio_isr(&vnet) & ISR_CONFIG;
        }
    }
    if (!check)
        return 0;
    bool up = nic_read_link();
    if (up == nic.link_up)
        return 0;
    nic.link_up = up;
    nic.link_changes++;
    return 1;
}

unsigned nic_poll(void)
{
    struct virtq *rq = &vnet.q[NET_RXQ];
    unsigned n = 0;
    uint32_t len;
    int id;
    in_poll = true;
    while ((id = virtq_pop_len(rq, &len)) >= 0) {
        n++;
        if ((unsigned)id >= nic.rx_bufs || len > nic.rx_len) {
            nic.rx_bad++;           /* not a buffer of ours: not reposted */
            continue;
        }
        rx_buffer((unsigned)id, len);
        virtq_post(rq, (uint16_t)id);
        nic.rx_posted = true;
    }
    in_poll = false;
    if (nic.rx_posted) {
        virtq_kick(rq);
        nic.rx_posted = false;
    }
    nic_tx_flush();
    struct virtq *tq = &vnet.q[NET_TXQ];
    if (virtq_used_idx(tq) != tq->used_seen) {
        nic_tx_reclaim();
        n++;
    }
    return n + link_check();
}

static bool pending(void)
{
    const struct virtq *rq = &vnet.q[NET_RXQ], *tq = &vnet.q[NET_TXQ];
    return virtq_used_idx(rq) != rq->used_seen || virtq_used_idx(tq) != tq->used_seen ||
           virtio_config_irq_count != nic.cfg_seen;
}

void nic_sleep(void)
{
    if (vnet.msix) {
        if (!pending())
            virtio_sleep();         /* an interrupt, or the watchdog within 10 ms */
        return;
    }
    for (int i = 0; i < 256 && !pending(); i++)
        __asm__ volatile("pause");
}

uint8_t *nic_tx_buf(void)
{
    if (!nic.tx_nfree)
        nic_tx_reclaim();
    if (!nic.tx_nfree)
        return NULL;
    unsigned s = nic.tx_free[--nic.tx_nfree];
    return nic.tx_area + s * NET_BUF_LEN + NET_HDR_LEN;
}

void nic_tx(uint8_t *frame, unsigned len)
{
    unsigned slot = (unsigned)((frame - NET_HDR_LEN - nic.tx_area) / NET_BUF_LEN);
    if (len < ETH_ZLEN) {
        memset(frame + len, 0, ETH_ZLEN - len);
        len = ETH_ZLEN;
    }
    struct virtq *tq = &vnet.q[NET_TXQ];
    tq->desc[slot].len = NET_HDR_LEN + len;
    virtq_post(tq, (uint16_t)slot);
    nic.tx_frames++;
    nic.tx_posted = true;
    if (!in_poll)
        nic_tx_flush();
}

void nic_tx_flush(void)
{
    if (nic.tx_posted) {
        nic.tx_posted = false;
        virtq_kick(&vnet.q[NET_TXQ]);
    }
}

bool nic_ctrl(uint8_t cls, uint8_t cmd, const void *d1, uint32_t l1, const void *d2, uint32_t l2)
{
    if (!nic.ctrl)
        return false;
    uint64_t addr[4];
    uint32_t len[4];
    int n = 0;
    ctl.cls = cls;
    ctl.cmd = cmd;
    ctl.ack = 0xff;
    addr[n] = (uintptr_t)&ctl.cls;
    len[n++] = 2;
    if (l1) {
        addr[n] = (uintptr_t)d1;
        len[n++] = l1;
    }
    if (l2) {
        addr[n] = (uintptr_t)d2;
        len[n++] = l2;
    }
    addr[n] = (uintptr_t)&ctl.ack;
    len[n++] = 1;
    bool done = virtio_submit(&vnet, &vnet.q[NET_CTRLQ], n, addr, len, 1u << (n - 1));
    virtio_watchdog(&vnet, true);   /* virtio_submit turned it off */
    barrier();
    return done && *(volatile uint8_t *)&ctl.ack == 0;
}
