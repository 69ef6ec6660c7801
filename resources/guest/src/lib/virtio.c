/*
 * virtio 1.x over modern PCI: vendor capabilities, reset, feature
 * negotiation (VERSION_1 required), one split virtqueue (queue 0) in the
 * image's .nozero memory (identity mapped: physical = virtual), MSI-X to the
 * BSP's LAPIC, and synchronous requests: one chain in flight, completion by
 * interrupt (`sti; hlt`) or, without MSI-X, by polling the used ring.
 */
#include "petrel.h"

#define VIRTIO_VENDOR_CAP   0x09
#define VIRTIO_CAP_COMMON   1
#define VIRTIO_CAP_NOTIFY   2
#define VIRTIO_CAP_ISR      3
#define VIRTIO_CAP_DEVICE   4

/* common configuration */
#define CC_DFSELECT     0x00
#define CC_DF           0x04
#define CC_GFSELECT     0x08
#define CC_GF           0x0C
#define CC_MSIX_CONFIG  0x10
#define CC_STATUS       0x14
#define CC_Q_SELECT     0x16
#define CC_Q_SIZE       0x18
#define CC_Q_MSIX       0x1A
#define CC_Q_ENABLE     0x1C
#define CC_Q_NOFF       0x1E
#define CC_Q_DESC       0x20
#define CC_Q_AVAIL      0x28
#define CC_Q_USED       0x30

#define ST_ACK          1
#define ST_DRIVER       2
#define ST_DRIVER_OK    4
#define ST_FEATURES_OK  8
#define ST_FAILED       0x80

#define VIRTIO_F_VERSION_1  (1ULL << 32)
#define NO_VECTOR       0xffff
#define VIRTIO_VECTOR   0x41        /* IDT vector of the queue's MSI-X message */
#define TIMER_VECTOR    0x42        /* LAPIC timer: watchdog while halted */
#define VQ_MAX          16
#define DESC_F_NEXT     1
#define DESC_F_WRITE    2

#define LAPIC_LVT_TIMER 0x320
#define LAPIC_TIMER_ICR 0x380
#define LAPIC_TIMER_DCR 0x3E0

/* Queue memory: descriptors at 0, avail at 0x100, used at 0x200 (16 entries). */
static uint8_t vq_mem[4096] __attribute__((section(".nozero"), aligned(4096)));

volatile uint32_t virtio_irq_count;
void virtio_irq(void);
void virtio_irq(void)
{
    virtio_irq_count++;
    lapic_eoi();
}

static uint64_t cap_addr(const struct pci_dev *d, unsigned cap)
{
    unsigned bar = pci_read32(d, cap + 4) & 0xff;
    uint32_t off = pci_read32(d, cap + 8);
    if (bar > 5 || !d->bar[bar].size || d->bar[bar].io)
        return 0;
    return d->bar[bar].addr + off;
}

static void vfail(struct virtio_dev *v, const char *why)
{
    mmio_write8(v->common + CC_STATUS, ST_FAILED);
    kprintf("virtio: %s\n", why);
}

/* MSI-X entry 0 -> BSP, VIRTIO_VECTOR; function enabled. False: no MSI-X. */
static bool msix_setup(struct virtio_dev *v)
{
    struct pci_dev *d = &v->pci;
    unsigned cap = pci_find_cap(d, 0x11, 0);
    if (!cap)
        return false;
    uint32_t tbl = pci_read32(d, cap + 4);
    unsigned bir = tbl & 7;
    if (bir > 5 || !d->bar[bir].size || d->bar[bir].io)
        return false;
    uint64_t t = d->bar[bir].addr + (tbl & ~7u);
    if (!irq_armed)
        irq_setup();                /* IDT 32-255, LAPIC enabled, 8259s masked */
    idt_set_gate(VIRTIO_VECTOR, (uint64_t)(uintptr_t)irq_virtio_entry);
    mmio_write32(t + 0, 0xFEE00000u | (lapic_id() << 12));
    mmio_write32(t + 4, 0);
    mmio_write32(t + 8, VIRTIO_VECTOR);     /* fixed, edge */
    mmio_write32(t + 12, 0);                /* unmasked */
    uint16_t ctrl = pci_read16(d, cap + 2);
    pci_write16(d, cap + 2, (uint16_t)((ctrl & ~0x4000u) | 0x8000u));   /* enable, no function mask */
    pci_write16(d, 0x04, (uint16_t)(pci_read16(d, 0x04) | 0x400));      /* INTx off */
    return true;
}

bool virtio_init(struct virtio_dev *v, uint64_t wanted)
{
    struct pci_dev *d = &v->pci;
    if (!pci_enable(d))
        return false;
    for (unsigned cap = pci_find_cap(d, VIRTIO_VENDOR_CAP, 0); cap; cap = pci_find_cap(d, VIRTIO_VENDOR_CAP, cap)) {
        uint8_t type = (uint8_t)(pci_read32(d, cap) >> 24);
        uint64_t a = cap_addr(d, cap);
        if (type == VIRTIO_CAP_COMMON && !v->common)
            v->common = a;
        else if (type == VIRTIO_CAP_NOTIFY && !v->notify_base) {
            v->notify_base = a;
            v->notify_mult = pci_read32(d, cap + 16);
        } else if (type == VIRTIO_CAP_ISR && !v->isr)
            v->isr = a;
        else if (type == VIRTIO_CAP_DEVICE && !v->devcfg)
            v->devcfg = a;
    }
    if (!v->common || !v->notify_base || !v->devcfg) {
        kprintf("virtio: no modern capabilities\n");
        return false;
    }
    uint64_t c = v->common;
    mmio_write8(c + CC_STATUS, 0);                  /* reset */
    timer_start_us(50000);
    while (mmio_read8(c + CC_STATUS) && !timer_expired())
        ;
    mmio_write8(c + CC_STATUS, ST_ACK);
    mmio_write8(c + CC_STATUS, ST_ACK | ST_DRIVER);

    mmio_write32(c + CC_DFSELECT, 0);
    uint64_t offered = mmio_read32(c + CC_DF);
    mmio_write32(c + CC_DFSELECT, 1);
    offered |= (uint64_t)mmio_read32(c + CC_DF) << 32;
    if (!(offered & VIRTIO_F_VERSION_1)) {
        vfail(v, "no VIRTIO_F_VERSION_1");
        return false;
    }
    v->features = offered & (wanted | VIRTIO_F_VERSION_1);
    mmio_write32(c + CC_GFSELECT, 0);
    mmio_write32(c + CC_GF, (uint32_t)v->features);
    mmio_write32(c + CC_GFSELECT, 1);
    mmio_write32(c + CC_GF, (uint32_t)(v->features >> 32));
    mmio_write8(c + CC_STATUS, ST_ACK | ST_DRIVER | ST_FEATURES_OK);
    if (!(mmio_read8(c + CC_STATUS) & ST_FEATURES_OK)) {
        vfail(v, "FEATURES_OK not accepted");
        return false;
    }

    v->msix = msix_setup(v);
    mmio_write16(c + CC_MSIX_CONFIG, v->msix ? 0 : NO_VECTOR);

    /* queue 0 */
    struct virtq *q = &v->q;
    mmio_write16(c + CC_Q_SELECT, 0);
    uint16_t max = mmio_read16(c + CC_Q_SIZE);
    if (!max) {
        vfail(v, "queue 0 missing");
        return false;
    }
    q->size = max < VQ_MAX ? max : VQ_MAX;
    memset(vq_mem, 0, sizeof(vq_mem));
    q->desc = (struct vq_desc *)(void *)vq_mem;
    q->avail = (volatile uint16_t *)(void *)(vq_mem + 0x100);
    q->used = vq_mem + 0x200;
    q->avail_idx = q->used_seen = 0;
    mmio_write16(c + CC_Q_SIZE, q->size);
    mmio_write32(c + CC_Q_DESC, (uint32_t)(uintptr_t)q->desc);
    mmio_write32(c + CC_Q_DESC + 4, 0);
    mmio_write32(c + CC_Q_AVAIL, (uint32_t)(uintptr_t)q->avail);
    mmio_write32(c + CC_Q_AVAIL + 4, 0);
    mmio_write32(c + CC_Q_USED, (uint32_t)(uintptr_t)q->used);
    mmio_write32(c + CC_Q_USED + 4, 0);
    if (v->msix) {
        mmio_write16(c + CC_Q_MSIX, 0);
        if (mmio_read16(c + CC_Q_MSIX) != 0 || mmio_read16(c + CC_MSIX_CONFIG) != 0) {
            /* The device refused the vector: poll instead. */
            mmio_write16(c + CC_Q_MSIX, NO_VECTOR);
            mmio_write16(c + CC_MSIX_CONFIG, NO_VECTOR);
            v->msix = false;
        }
    }
    q->notify = v->notify_base + (uint64_t)mmio_read16(c + CC_Q_NOFF) * v->notify_mult;
    mmio_write16(c + CC_Q_ENABLE, 1);
    mmio_write8(c + CC_STATUS, ST_ACK | ST_DRIVER | ST_FEATURES_OK | ST_DRIVER_OK);
    if (mmio_read8(c + CC_STATUS) & ST_FAILED) {
        kprintf("virtio: device set FAILED\n");
        return false;
    }
    kprintf("virtio: 00:%02x.%u %04x:%04x features=0x%lx queue=%u msix=%s\n", d->dev, d->fn, d->vendor,
            d->device, v->features, q->size, v->msix ? "on" : "off");
    return true;
}

static uint16_t used_idx(struct virtq *q)
{
    return *(volatile uint16_t *)(q->used + 2);
}

bool virtio_submit(struct virtio_dev *v, int n, const uint64_t *addr, const uint32_t *len, unsigned write_mask)
{
    struct virtq *q = &v->q;
    for (int i = 0; i < n; i++) {
        q->desc[i].addr = addr[i];
        q->desc[i].len = len[i];
        q->desc[i].flags = (uint16_t)(((write_mask >> i) & 1 ? DESC_F_WRITE : 0) | (i + 1 < n ? DESC_F_NEXT : 0));
        q->desc[i].next = (uint16_t)(i + 1);
    }
    q->avail[2 + q->avail_idx % q->size] = 0;          /* head descriptor 0 */
    barrier();
    q->avail_idx++;
    q->avail[1] = q->avail_idx;
    __asm__ volatile("mfence" ::: "memory");
    mmio_write16(q->notify, 0);

    bool done = false;
    if (v->msix) {
        /* Sleep until the MSI-X message; the LAPIC timer (periodic, about
         * 10 ms with a 1 GHz APIC clock) bounds each sleep, 1000 of them
         * = timeout. */
        lapic_write(LAPIC_TIMER_DCR, 0xB);             /* divide by 1 */
        lapic_write(LAPIC_LVT_TIMER, (1u << 17) | TIMER_VECTOR);
        lapic_write(LAPIC_TIMER_ICR, 10000000);
        /* Wait for both the used ring and the interrupt (one per request:
         * one chain in flight, no EVENT_IDX), so irqs counts every one even
         * when the device completes before the first hlt. */
        uint32_t irqs = virtio_irq_count;
        for (int wakes = 0; wakes < 1000; wakes++) {
            if (used_idx(q) == q->avail_idx && virtio_irq_count != irqs)
                break;                                  /* checked with IF clear */
            __asm__ volatile("sti; hlt; cli" ::: "memory");
        }
        lapic_write(LAPIC_TIMER_ICR, 0);
        lapic_write(LAPIC_LVT_TIMER, 0x10000);         /* masked */
        done = used_idx(q) == q->avail_idx;
    } else {
        for (int ms = 0; ms < 10000 && !done; ms++) {
            timer_start_us(1000);
            while (!(done = used_idx(q) == q->avail_idx) && !timer_expired())
                ;
        }
    }
    barrier();
    q->used_seen = used_idx(q);
    return done;
}

/* Reset the device (stops DMA) before the VM powers off. */
void virtio_quiesce(struct virtio_dev *v)
{
    if (v->common)
        mmio_write8(v->common + CC_STATUS, 0);
}
