/*
 * virtio-balloon (1af4:1002 transitional or 1af4:1045 modern) and the
 * `balloon` scenario: the guest's free memory is a pool of 4 KiB pages after
 * the image (one word written per page, so the host has them all), and the
 * balloon follows the device's target (num_pages, re-read on every
 * configuration-change interrupt) by inflating pages from the top of the pool
 * down and deflating the most recently inflated first, up to 1024 frame
 * numbers per request, `actual` written after each request. Deflated pages
 * are checked (a page the host discarded reads zero) and written again. With
 * VIRTIO_BALLOON_F_STATS_VQ one statistics buffer waits on the stats queue;
 * each time the device gives it back the guest refills and re-posts it.
 */
#include "petrel.h"

#define BALLOON_F_STATS_VQ          (1ULL << 1)
#define BALLOON_F_DEFLATE_ON_OOM    (1ULL << 2)
#define Q_INFLATE       0
#define Q_DEFLATE       1
#define Q_STATS         2
#define CFG_NUM_PAGES   0
#define CFG_ACTUAL      4
#define ISR_CONFIG      2
#define PFNS_PER_REQ    1024
#define PAGE            4096ULL
#define POOL_KEY        ((uint64_t)0x62616c6c6f6f6e00ULL)   /* "balloon\0" read as big-endian */
#define TIMER_VECTOR    0x42

/* Statistics tags (QEMU's order). */
#define S_FREE          4
#define S_TOTAL         5
#define S_AVAIL         6
#define NR_STATS        7

struct balloon_stat {
    uint16_t tag;
    uint64_t val;
} __attribute__((packed));

static struct virtio_dev vb;
static uint32_t pfns[PFNS_PER_REQ] __attribute__((section(".nozero"), aligned(4096)));
static struct balloon_stat stats[NR_STATS] __attribute__((section(".nozero"), aligned(64)));

static uint64_t pool_start, pool_pages;   /* pages [pool_start, pool_start + 4 KiB * pool_pages) */
static uint32_t actual;                   /* pages in the balloon: the top `actual` pages of the pool */
static uint32_t stats_pushed;

static uint64_t pool_page(uint64_t i)
{
    return pool_start + i * PAGE;
}

static uint32_t read_num_pages(void)
{
    uint8_t gen;
    uint32_t n;
    do {
        gen = virtio_config_generation(&vb);
        n = mmio_read32(vb.devcfg + CFG_NUM_PAGES);
    } while (gen != virtio_config_generation(&vb));
    return n;
}

/* One request of `n` frame numbers from pfns[] on queue q; false on timeout. */
static bool send_pfns(unsigned q, unsigned n)
{
    uint64_t addr = (uint64_t)(uintptr_t)pfns;
    uint32_t len = n * 4;
    return virtio_submit(&vb, &vb.q[q], 1, &addr, &len, 0);
}

/* The free pool (pages not in the balloon), as the statistics report it. */
static void stats_post(void)
{
    uint64_t free = (pool_pages - actual) * PAGE;
    static const uint16_t tags[NR_STATS] = { 0, 1, 2, 3, S_FREE, S_TOTAL, S_AVAIL };
    for (unsigned i = 0; i < NR_STATS; i++) {
        stats[i].tag = tags[i];
        stats[i].val = tags[i] == S_TOTAL ? boot.usable_bytes : tags[i] >= S_FREE ? free : 0;
    }
    struct virtq *q = &vb.q[Q_STATS];
    uint64_t addr = (uint64_t)(uintptr_t)stats;
    uint32_t len = sizeof(stats);
    virtq_chain(q, 0, 1, &addr, &len, 0);
    virtq_post(q, 0);
    virtq_kick(q);
    kprintf("balloon: stats %u free=%lu\n", ++stats_pushed, free);
}

static COLD bool balloon_open(void)
{
    if (!pci_find(0x1af4, 0x1002, 0x1045, &vb.pci)) {
        kprintf("balloon: no device\n");
        return false;
    }
    if (!virtio_begin(&vb, BALLOON_F_STATS_VQ | BALLOON_F_DEFLATE_ON_OOM, true))
        return false;
    bool with_stats = vb.features & BALLOON_F_STATS_VQ;
    if (!virtio_queue(&vb, Q_INFLATE, 16) || !virtio_queue(&vb, Q_DEFLATE, 16) ||
        (with_stats && !virtio_queue(&vb, Q_STATS, 16)) || !virtio_ready(&vb))
        return false;
    return true;
}

/* The pool: from the first 2 MiB boundary after the image to the end of its
 * e820 region (at most petrel.balloon.pool bytes), one word per page. */
static COLD bool pool_setup(void)
{
    uint64_t *base = ram_after_image(PAGE);
    if (!base)
        return false;
    pool_start = (uint64_t)(uintptr_t)base;
    uint64_t end = pool_start;
    for (uint32_t i = 0; i < boot.nr_e820; i++) {
        const struct e820_entry *e = &boot.e820[i];
        if (e->type == 1 && pool_start >= e->addr && pool_start < e->addr + e->size)
            end = (e->addr + e->size) & ~(PAGE - 1);
    }
    if (end > boot.mapped_limit)
        end = boot.mapped_limit;
    if (end > (1ULL << 32))
        end = 1ULL << 32;
    uint64_t limit = 0;
    if (cmdline_u64("petrel.balloon.pool", &limit) && limit && pool_start + limit < end)
        end = pool_start + (limit & ~(PAGE - 1));
    pool_pages = (end - pool_start) / PAGE;
    for (uint64_t i = 0; i < pool_pages; i++)
        *(volatile uint64_t *)(uintptr_t)pool_page(i) = pool_page(i) ^ POOL_KEY;
    kprintf("balloon: pool=0x%lx-0x%lx pages=%lu\n", pool_start, end, pool_pages);
    return pool_pages > 0;
}

/* Frame numbers the host must ignore: past the end of RAM, in the PCI hole,
 * the LAPIC page, the largest one; inflated, then deflated. With `buffer`
 * also an inflate buffer that is not in guest memory at all (both petrel and
 * QEMU 7.2 complete it and go on). */
static COLD bool send_bogus(bool buffer)
{
    uint64_t top = boot.usable_top > (1ULL << 32) ? boot.usable_top : (1ULL << 32);
    const uint32_t bogus[] = { (uint32_t)(top / PAGE) + 16, 0xE0000, 0xFEE00, 0xffffffffu };
    unsigned n = ARRAY_LEN(bogus);
    memcpy(pfns, bogus, sizeof(bogus));
    bool ok = send_pfns(Q_INFLATE, n) && send_pfns(Q_DEFLATE, n);
    if (ok && buffer) {
        uint64_t addr = 0x7ff000000000ULL;
        uint32_t len = 4096;
        ok = virtio_submit(&vb, &vb.q[Q_INFLATE], 1, &addr, &len, 0);
    }
    kprintf("balloon: bogus pfns=%u buffers=%u %s\n", 2 * n, buffer ? 1 : 0, ok ? "ok" : "FAILED timeout");
    return ok;
}

/* Inflate or deflate towards `target` pages; false on a timeout. */
static bool follow(uint32_t target)
{
    uint32_t inflated = 0, deflated = 0, zeroed = 0;
    uint32_t want = target > pool_pages ? (uint32_t)pool_pages : target;
    while (actual != want) {
        bool up = actual < want;
        uint32_t n = up ? want - actual : actual - want;
        if (n > PFNS_PER_REQ)
            n = PFNS_PER_REQ;
        for (uint32_t i = 0; i < n; i++) {
            /* Inflating takes pages below the balloon; deflating returns its lowest. */
            uint64_t idx = up ? pool_pages - actual - 1 - i : pool_pages - actual + i;
            pfns[i] = (uint32_t)(pool_page(idx) / PAGE);
        }
        if (!send_pfns(up ? Q_INFLATE : Q_DEFLATE, n)) {
            kprintf("balloon: %s FAILED timeout\n", up ? "inflate" : "deflate");
            return false;
        }
        if (up) {
            actual += n;
            inflated += n;
        } else {
            /* The pages are the guest's again: a discarded page reads zero. */
            for (uint32_t i = 0; i < n; i++) {
                volatile uint64_t *w = (volatile uint64_t *)(uintptr_t)((uint64_t)pfns[i] * PAGE);
                zeroed += *w == 0;
                *w = ((uint64_t)pfns[i] * PAGE) ^ POOL_KEY;
            }
            actual -= n;
            deflated += n;
        }
        mmio_write32(vb.devcfg + CFG_ACTUAL, actual);
    }
    if (inflated)
        kprintf("balloon: inflated=%u\n", inflated);
    if (deflated)
        kprintf("balloon: deflated=%u zeroed=%u\n", deflated, zeroed);
    if (want != target)
        kprintf("balloon: pool exhausted target=%u\n", target);
    kprintf("balloon: actual=%u pages\n", actual);
    return true;
}

/* The LAPIC timer, periodic (about 10 ms), vector 0x42 (default handler). */
static void tick_on(void)
{
    lapic_write(0x3E0, 0xB);                /* divide by 1 */
    lapic_write(0x320, (1u << 17) | TIMER_VECTOR);
    lapic_write(0x380, 10000000);
}

/* Has the device signalled a configuration change since `seen`? */
static bool config_signalled(uint32_t *seen)
{
    if (vb.config_irq) {
        uint32_t now = virtio_config_irq_count;
        bool changed = now != *seen;
        *seen = now;
        return changed;
    }
    return virtio_isr(&vb) & ISR_CONFIG;     /* shared or no vector: the ISR says */
}

COLD bool balloon_run(void)
{
    if (!balloon_open())
        return false;
    if (!pool_setup()) {
        kprintf("balloon: no RAM for the pool\n");
        return false;
    }
    uint64_t bogus = 0;
    cmdline_u64("petrel.balloon.bogus", &bogus);
    if (bogus && !send_bogus(bogus > 1))
        return false;
    bool with_stats = vb.features & BALLOON_F_STATS_VQ;
    if (with_stats)
        stats_post();
    uint32_t cfg_seen = virtio_config_irq_count;
    uint32_t target = read_num_pages();
    kprintf("balloon: ready target=%u\n", target);
    if (target && !follow(target))
        return false;
    if (!irq_armed)
        irq_setup();                /* polled device: the LAPIC timer still needs its gate */
    /* The LAPIC timer wakes the hlt every ~10 ms, so the loop also runs
     * without MSI-X; requests stop it (virtio_submit's watchdog). */
    tick_on();
    for (;;) {
        __asm__ volatile("sti; hlt; cli" ::: "memory");
        if (with_stats && virtq_pop(&vb.q[Q_STATS]) >= 0)
            stats_post();
        if (!config_signalled(&cfg_seen))
            continue;
        target = read_num_pages();
        kprintf("balloon: target=%u pages\n", target);
        if (!follow(target))
            return false;
        tick_on();
    }
}
