/*
 * virtio 1.x over modern PCI: vendor capabilities, reset, feature
 * negotiation (VERSION_1 required), up to VIRTIO_MAX_QUEUES split virtqueues
 * (up to 256 entries each) in the image's .nozero memory (identity mapped:
 * physical = virtual), MSI-X to the BSP's LAPIC (every queue on entry 0,
 * configuration changes on entry 0 or 1). Setup is virtio_begin (through
 * FEATURES_OK and MSI-X), virtio_queue per queue, virtio_ready (DRIVER_OK);
 * virtio_init does all three for a one-queue device. Requests are
 * asynchronous (chains posted to the avail ring, one notify per batch,
 * completions popped from the used ring) with a synchronous wrapper: one
 * chain in flight. Completion by interrupt (`sti; hlt`) or, without MSI-X,
 * by polling the used ring.
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

#define CC_GENERATION   0x15

#define VIRTIO_F_VERSION_1  (1ULL << 32)
#define NO_VECTOR       0xffff
#define VIRTIO_VECTOR   0x41        /* IDT vector of the queue's MSI-X message */
#define TIMER_VECTOR    0x42        /* LAPIC timer: watchdog while halted */
#define CONFIG_VECTOR   0x43        /* configuration changes on MSI-X entry 1 */
#define USED_F_NO_NOTIFY 1
#define DEFAULT_TIMEOUT_US 30000000ULL

#define LAPIC_LVT_TIMER 0x320
#define LAPIC_TIMER_ICR 0x380
#define LAPIC_TIMER_DCR 0x3E0

/* Memory per queue: descriptors at 0, the avail ring at 16 * size, the used
 * ring at the next 256-byte boundary after it (16 entries: 0, 0x100, 0x200,
 * one page; 256 entries: 0, 0x1000, 0x1300). */
static uint8_t vq_mem[VIRTIO_MAX_QUEUES][0x2000] __attribute__((section(".nozero"), aligned(4096)));

volatile uint32_t virtio_irq_count, virtio_config_irq_count;
void virtio_irq(void);
void virtio_irq(void)
{
    virtio_irq_count++;
    lapic_eoi();
}
void virtio_config_irq(void);
void virtio_config_irq(void)
{
    virtio_config_irq_count++;
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

static void msix_entry(uint64_t t, unsigned vector)
{
    mmio_write32(t + 0, 0xFEE00000u | (lapic_id() << 12));
    mmio_write32(t + 4, 0);
    mmio_write32(t + 8, vector);            /* fixed, edge */
    mmio_write32(t + 12, 0);                /* unmasked */
}

/* MSI-X entry 0 -> BSP, VIRTIO_VECTOR (with config_entry1 and a table of two
 * or more, entry 1 -> CONFIG_VECTOR too); function enabled. False: no MSI-X. */
static bool msix_setup(struct virtio_dev *v, bool config_entry1)
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
    msix_entry(t, VIRTIO_VECTOR);
    uint16_t ctrl = pci_read16(d, cap + 2);
    v->config_irq = config_entry1 && (ctrl & 0x7ff) >= 1;
    if (v->config_irq) {
        idt_set_gate(CONFIG_VECTOR, (uint64_t)(uintptr_t)irq_virtio_config_entry);
        msix_entry(t + 16, CONFIG_VECTOR);
    }
    pci_write16(d, cap + 2, (uint16_t)((ctrl & ~0x4000u) | 0x8000u));   /* enable, no function mask */
    pci_write16(d, 0x04, (uint16_t)(pci_read16(d, 0x04) | 0x400));      /* INTx off */
    return true;
}

bool virtio_begin(struct virtio_dev *v, uint64_t wanted, bool config_entry1)
{
    struct pci_dev *d = &v->pci;
    v->nq = 0;
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
    if (v->feature_deps)
        v->features = v->feature_deps(v->features);
    mmio_write32(c + CC_GFSELECT, 0);
    mmio_write32(c + CC_GF, (uint32_t)v->features);
    mmio_write32(c + CC_GFSELECT, 1);
    mmio_write32(c + CC_GF, (uint32_t)(v->features >> 32));
    mmio_write8(c + CC_STATUS, ST_ACK | ST_DRIVER | ST_FEATURES_OK);
    if (!(mmio_read8(c + CC_STATUS) & ST_FEATURES_OK)) {
        vfail(v, "FEATURES_OK not accepted");
        return false;
    }

    v->msix = msix_setup(v, config_entry1);
    uint16_t cfg_vec = v->config_irq ? 1 : 0;
    mmio_write16(c + CC_MSIX_CONFIG, v->msix ? cfg_vec : NO_VECTOR);
    if (v->msix && mmio_read16(c + CC_MSIX_CONFIG) != cfg_vec) {
        /* The device refused the vector: poll instead. */
        mmio_write16(c + CC_MSIX_CONFIG, NO_VECTOR);
        v->msix = v->config_irq = false;
    }
    return true;
}

/* Queue `idx` with min(device max, qsize) entries, rounded down to a power
 * of two, its vector = MSI-X entry 0 (when the device refuses it: polled,
 * config vector too); enabled. False (after a virtio: line): no such queue. */
bool virtio_queue(struct virtio_dev *v, unsigned idx, unsigned qsize)
{
    uint64_t c = v->common;
    if (idx >= VIRTIO_MAX_QUEUES) {
        vfail(v, "too many queues");
        return false;
    }
    struct virtq *q = &v->q[idx];
    mmio_write16(c + CC_Q_SELECT, (uint16_t)idx);
    uint16_t max = mmio_read16(c + CC_Q_SIZE);
    if (!max) {
        char why[24];
        ksnprintf(why, sizeof(why), "queue %u missing", idx);
        vfail(v, why);
        return false;
    }
    if (qsize > VQ_MAX)
        qsize = VQ_MAX;
    q->size = (uint16_t)(max < qsize ? max : qsize);
    while (q->size & (q->size - 1))                 /* split rings: a power of two */
        q->size &= (uint16_t)(q->size - 1);
    uint8_t *mem = vq_mem[idx];
    memset(mem, 0, sizeof(vq_mem[idx]));
    unsigned avail_off = 16u * q->size;
    q->desc = (struct vq_desc *)(void *)mem;
    q->avail = (volatile uint16_t *)(void *)(mem + avail_off);
    q->used = mem + ((avail_off + 6 + 2u * q->size + 0xff) & ~0xffu);
    q->avail_idx = q->used_seen = 0;
    q->index = (uint16_t)idx;
    mmio_write16(c + CC_Q_SIZE, q->size);
    mmio_write32(c + CC_Q_DESC, (uint32_t)(uintptr_t)q->desc);
    mmio_write32(c + CC_Q_DESC + 4, 0);
    mmio_write32(c + CC_Q_AVAIL, (uint32_t)(uintptr_t)q->avail);
    mmio_write32(c + CC_Q_AVAIL + 4, 0);
    mmio_write32(c + CC_Q_USED, (uint32_t)(uintptr_t)q->used);
    mmio_write32(c + CC_Q_USED + 4, 0);
    mmio_write16(c + CC_Q_MSIX, v->msix ? 0 : NO_VECTOR);
    if (v->msix && mmio_read16(c + CC_Q_MSIX) != 0) {
        /* Refused: poll instead. Queues set up before keep entry 0 (their
         * interrupts just get counted). */
        mmio_write16(c + CC_Q_MSIX, NO_VECTOR);
        mmio_write16(c + CC_MSIX_CONFIG, NO_VECTOR);
        v->msix = v->config_irq = false;
    }
    q->notify = v->notify_base + (uint64_t)mmio_read16(c + CC_Q_NOFF) * v->notify_mult;
    mmio_write16(c + CC_Q_ENABLE, 1);
    if (idx >= v->nq)
        v->nq = idx + 1;
    return true;
}

/* DRIVER_OK and the virtio: line. */
bool virtio_ready(struct virtio_dev *v)
{
    uint64_t c = v->common;
    struct pci_dev *d = &v->pci;
    mmio_write8(c + CC_STATUS, ST_ACK | ST_DRIVER | ST_FEATURES_OK | ST_DRIVER_OK);
    if (mmio_read8(c + CC_STATUS) & ST_FAILED) {
        kprintf("virtio: device set FAILED\n");
        return false;
    }
    char sizes[24];
    int n = 0;
    for (unsigned i = 0; i < v->nq; i++)
        n += ksnprintf(sizes + n, sizeof(sizes) - (size_t)n, i ? ",%u" : "%u", v->q[i].size);
    kprintf("virtio: 00:%02x.%u %04x:%04x features=0x%lx queue=%s msix=%s\n", d->dev, d->fn, d->vendor,
            d->device, v->features, sizes, v->msix ? "on" : "off");
    return true;
}

bool virtio_init(struct virtio_dev *v, uint64_t wanted, unsigned qsize, bool config_entry1)
{
    return virtio_begin(v, wanted, config_entry1) && virtio_queue(v, 0, qsize) && virtio_ready(v);
}

void virtq_chain(struct virtq *q, unsigned first, int n, const uint64_t *addr, const uint32_t *len,
                 unsigned write_mask)
{
    for (int i = 0; i < n; i++) {
        struct vq_desc *d = &q->desc[first + i];
        d->addr = addr[i];
        d->len = len[i];
        d->flags = (uint16_t)(((write_mask >> i) & 1 ? DESC_F_WRITE : 0) | (i + 1 < n ? DESC_F_NEXT : 0));
        d->next = (uint16_t)(first + i + 1);
    }
}

bool virtq_kick(struct virtq *q)
{
    barrier();                                          /* ring entries before the index (x86: stores in order) */
    q->avail[1] = q->avail_idx;
    __asm__ volatile("mfence" ::: "memory");            /* index visible before reading the used flags */
    if (*(volatile uint16_t *)q->used & USED_F_NO_NOTIFY)
        return false;
    mmio_write16(q->notify, q->index);                  /* the queue's index (no NOTIFICATION_DATA) */
    return true;
}

void virtio_sleep(void)
{
    __asm__ volatile("sti; hlt; cli" ::: "memory");
}

/* The LAPIC timer, periodic (about 10 ms with KVM's 1 GHz APIC clock), wakes
 * every hlt so a lost interrupt cannot hang a wait and timeouts get polled. */
void virtio_watchdog(struct virtio_dev *v, bool on)
{
    if (!v->msix)
        return;
    if (on) {
        lapic_write(LAPIC_TIMER_DCR, 0xB);             /* divide by 1 */
        lapic_write(LAPIC_LVT_TIMER, (1u << 17) | TIMER_VECTOR);
        lapic_write(LAPIC_TIMER_ICR, 10000000);
    } else {
        lapic_write(LAPIC_TIMER_ICR, 0);
        lapic_write(LAPIC_LVT_TIMER, 0x10000);         /* masked */
    }
}

static bool vq_ready(const struct virtq *q, bool want_irq, uint32_t irqs0)
{
    return virtq_used_idx(q) != q->used_seen && (!want_irq || virtio_irq_count != irqs0);
}

bool virtio_wait(struct virtio_dev *v, struct virtq *q, bool want_irq, uint32_t irqs0)
{
    if (vq_ready(q, want_irq, irqs0))
        return true;                                    /* checked with IF clear */
    if (v->msix) {
        virtio_sleep();                                 /* the usual case: one interrupt */
        if (vq_ready(q, want_irq, irqs0))
            return true;
    }
    /* The time base is read only from here on: PIT reads are port exits. */
    timer_start_us(v->timeout_us ? v->timeout_us : DEFAULT_TIMEOUT_US);
    while (!vq_ready(q, want_irq, irqs0) && !timer_expired()) {
        if (v->msix)
            virtio_sleep();
        else    /* polled: a few hundred us of ring checks per PIT read */
            for (int i = 0; i < 64 && !vq_ready(q, want_irq, irqs0); i++)
                ;
    }
    /* Once more after a timeout: the device may just have answered (e.g. a VM
     * resumed after a long pause). */
    return virtq_used_idx(q) != q->used_seen;
}

bool virtio_submit(struct virtio_dev *v, struct virtq *q, int n, const uint64_t *addr, const uint32_t *len,
                   unsigned write_mask)
{
    virtq_chain(q, 0, n, addr, len, write_mask);
    virtq_post(q, 0);
    uint32_t irqs = virtio_irq_count;
    virtq_kick(q);
    /* Wait for both the used ring and the interrupt (one per request: one
     * chain in flight, no EVENT_IDX), so irqs counts every one even when the
     * device completes before the first hlt. */
    virtio_watchdog(v, true);
    bool done = virtio_wait(v, q, v->msix, irqs);
    virtio_watchdog(v, false);
    if (done)
        virtq_pop(q);
    return done;
}

uint8_t virtio_config_generation(struct virtio_dev *v)
{
    return mmio_read8(v->common + CC_GENERATION);
}

uint8_t virtio_isr(struct virtio_dev *v)
{
    return v->isr ? mmio_read8(v->isr) : 0;
}

/* Reset the device (stops DMA) before the VM powers off. */
void virtio_quiesce(struct virtio_dev *v)
{
    if (v->common)
        mmio_write8(v->common + CC_STATUS, 0);
}
