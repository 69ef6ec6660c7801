/*
 * The `blkbench` scenario: sequential or random reads or writes with up to
 * petrel.blk.qd requests in flight on one virtqueue, timed with the TSC
 * (calibrated against the PIT). Every instruction counts under KVM-PVM's
 * emulator (about 1 us each), so each in-flight slot owns a fixed chain
 * (header, data, status at descriptors 4k..4k+2): reissuing a request
 * rewrites the header's sector and status and one avail ring entry, and a
 * batch of completions gets one notify. See README.md for the lines.
 */
#include "petrel.h"

#define BENCH_QUEUE     256
#define MAX_QD          64              /* BENCH_QUEUE / 4 */
#define MAX_BS          (4u << 20)
#define SEQ_CAP         (1ULL << 30)    /* default seq total: the disk, at most 1 GiB */
#define RAND_OPS        20000

static struct blk_hdr hdrs[MAX_QD] __attribute__((section(".nozero")));

static const char *const mode_names[] = { "seqread", "randread", "seqwrite", "randwrite" };

struct bench {
    bool rand, write;
    uint64_t bs, qd, ops, bytes;
    uint64_t blocks;                    /* bs-sized blocks on the disk */
};

/* Parses the options (panics on bad ones); the totals are settled later. */
static int parse(struct bench *b)
{
    char name[16];
    int mode = 0;
    if (cmdline_get(boot.cmdline, "petrel.blk.bench", name, sizeof(name))) {
        for (mode = 0; mode < (int)ARRAY_LEN(mode_names); mode++)
            if (!memcmp(name, mode_names[mode], strlen(mode_names[mode]) + 1))
                break;
        if (mode == (int)ARRAY_LEN(mode_names))
            panic("unknown petrel.blk.bench=%s", name);
    }
    b->rand = mode == 1 || mode == 3;
    b->write = mode >= 2;
    b->bs = b->rand ? 4096 : 65536;
    b->qd = b->rand ? 32 : 4;
    b->ops = b->bytes = 0;
    if (cmdline_u64("petrel.blk.bs", &b->bs) && (b->bs == 0 || b->bs % 512 || b->bs > MAX_BS))
        panic("bad petrel.blk.bs=%lu", b->bs);
    if (cmdline_u64("petrel.blk.qd", &b->qd) && (b->qd == 0 || b->qd > MAX_QD))
        panic("bad petrel.blk.qd=%lu", b->qd);
    if (cmdline_u64("petrel.blk.ops", &b->ops) && b->ops == 0)
        panic("bad petrel.blk.ops=0");
    if (cmdline_u64("petrel.blk.bytes", &b->bytes) && (b->bytes == 0 || b->bytes % 512))
        panic("bad petrel.blk.bytes=%lu", b->bytes);
    return mode;
}

/* Loop state and invariants, kept in registers once issue() is inlined
 * (the build has -fno-strict-aliasing: loads through `b` or `vblk` would be
 * repeated after every store). */
struct run {
    uint64_t issued, lcg;
    uint16_t aidx, mask;
    bool rand;
    uint64_t ops, blocks, sectors_per_block;
    volatile uint16_t *avail_ring;
};

/* Request r->issued on the slot whose chain starts at descriptor `head`:
 * block issued mod blocks (seq) or the next LCG draw (rand); the last
 * request carries what is left of b->bytes. */
static inline void issue(const struct bench *b, struct run *r, unsigned head)
{
    uint64_t block;
    if (r->rand) {
        r->lcg = r->lcg * 6364136223846793005ULL + 1442695040888963407ULL;
        block = (r->lcg >> 33) % r->blocks;
    } else {
        block = r->issued % r->blocks;
    }
    struct blk_hdr *h = &hdrs[head / 4];
    h->sector = block * r->sectors_per_block;
    h->status = 0xff;
    if (++r->issued == r->ops)
        vblk.q[0].desc[head + 1].len = (uint32_t)(b->bytes - (b->ops - 1) * b->bs);
    r->avail_ring[r->aidx & r->mask] = (uint16_t)head;
    r->aidx++;
}

/* Keeps b->qd requests in flight until b->ops completed; each batch of
 * completions is reissued with one notify. False after a failure line. */
static __attribute__((noinline, hot)) bool run(const struct bench *b)
{
    struct virtq *q = &vblk.q[0];
    const volatile uint32_t *used_ring = (const volatile uint32_t *)(const volatile void *)(q->used + 4);
    struct run r = {
        .issued = 0, .lcg = 1, .aidx = q->avail_idx, .mask = (uint16_t)(q->size - 1), .rand = b->rand,
        .ops = b->ops, .blocks = b->blocks, .sectors_per_block = b->bs / 512, .avail_ring = q->avail + 2,
    };
    const unsigned qd = (unsigned)b->qd;
    uint64_t completed = 0;
    uint16_t seen = q->used_seen;

    while (r.issued < qd && r.issued < r.ops)
        issue(b, &r, 4 * (unsigned)r.issued);
    for (;;) {
        if (r.aidx != q->avail_idx) {
            q->avail_idx = r.aidx;
            virtq_kick(q);
        }
        if (completed == r.ops)
            return true;
        if (virtq_used_idx(q) == seen && !virtio_wait(&vblk, q, false, 0)) {
            kprintf("blkbench: FAILED timeout after %lu of %lu ops\n", completed, r.ops);
            return false;
        }
        uint16_t end = virtq_used_idx(q);
        barrier();
        do {
            uint32_t head = used_ring[2 * (seen & r.mask)];
            seen++;
            uint8_t st = (head & 3) == 0 && head / 4 < qd ? *(volatile uint8_t *)&hdrs[head / 4].status : 0xfe;
            if (st) {
                kprintf("blkbench: %s FAILED status=%u head=%u\n", b->write ? "write" : "read", st, head);
                return false;
            }
            completed++;
            if (r.issued < r.ops)
                issue(b, &r, head);
        } while (seen != end);
        q->used_seen = seen;
    }
}

static bool fail(const char *msg)
{
    kprintf("blkbench: %s\n", msg);
    return false;
}

COLD bool blkbench_run(void)
{
    struct bench b;
    int mode = parse(&b);
    uint64_t pat = 0xA5;
    cmdline_u64("petrel.blk.pattern", &pat);
    if (pat > 255)
        panic("bad petrel.blk.pattern=0x%lx", pat);
    blk_set_timeout();

    struct blk_geom g;
    if (!blk_open(BENCH_QUEUE, false, &g))
        return false;
    b.blocks = g.capacity * 512 / b.bs;
    if (!b.blocks)
        return fail("bs larger than the disk");
    if (b.ops)
        b.bytes = b.ops * b.bs;
    else if (b.bytes)
        b.ops = (b.bytes + b.bs - 1) / b.bs;
    else if (b.rand)
        b.bytes = (b.ops = RAND_OPS) * b.bs;
    else
        b.bytes = (b.ops = b.blocks * b.bs < SEQ_CAP ? b.blocks : SEQ_CAP / b.bs) * b.bs;
    if (b.qd * 4 > vblk.q[0].size)
        return fail("qd needs more descriptors than the queue has");
    uint8_t *area = ram_after_image(b.qd * b.bs);
    if (!area)
        return fail("no RAM for the buffers");

    /* Write data = the pattern byte. Read buffers are only touched once per
     * 4 KiB page (the first touch of a 2 MiB page is slow under KVM-PVM, and
     * so is filling: about 0.6 us per 8 bytes). Then each slot gets its
     * fixed chain. */
    if (b.write)
        memset(area, (int)pat, b.qd * b.bs);
    else
        for (uint64_t off = 0; off < b.qd * b.bs; off += 4096)
            area[off] = 0;
    for (unsigned s = 0; s < b.qd; s++) {
        hdrs[s].type = b.write ? BLK_T_OUT : BLK_T_IN;
        hdrs[s].reserved = 0;
        uint64_t addr[3] = { (uintptr_t)&hdrs[s], (uintptr_t)(area + s * b.bs), (uintptr_t)&hdrs[s].status };
        uint32_t len[3] = { 16, (uint32_t)b.bs, 1 };
        virtq_chain(&vblk.q[0], 4 * s, 3, addr, len, b.write ? 4 : 6);
    }

    const char *src;
    uint64_t khz = timer_calibrate_tsc(&src);
    kprintf("blkbench: tsc_khz=%lu source=%s\n", khz, src);
    kprintf("blkbench: start mode=%s bs=%lu qd=%lu ops=%lu bytes=%lu\n", mode_names[mode], b.bs, b.qd, b.ops,
            b.bytes);
    uint32_t irqs0 = virtio_irq_count;
    uint64_t t0 = rdtsc();
    virtio_watchdog(&vblk, true);
    bool ok = run(&b);
    uint64_t us = tsc_to_us(rdtsc() - t0);
    virtio_watchdog(&vblk, false);
    uint32_t irqs = virtio_irq_count - irqs0;
    if (ok) {
        kprintf("blkbench: done mode=%s bytes=%lu ops=%lu us=%lu\n", mode_names[mode], b.bytes, b.ops, us);
        if (!us)
            us = 1;
        kprintf("blkbench: iops=%lu bytes_per_s=%lu irqs=%u\n", b.ops * 1000000 / us, b.bytes * 1000000 / us, irqs);
    }
    virtio_quiesce(&vblk);
    return ok;
}
