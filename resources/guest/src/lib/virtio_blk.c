/*
 * virtio-blk (1af4:1001 transitional or 1af4:1042 modern): device setup
 * shared by the blk* scenarios (capacity/blk_size from the device config,
 * GET_ID), synchronous requests, and the `blk` scenario: a pattern written
 * to petrel.blk.count sectors from petrel.blk.lba in requests of
 * petrel.blk.chunk sectors, a flush, and a read-back compare
 * (petrel.blk.mode=read: only the read-back). Sectors are 512 bytes; each
 * holds the pattern byte with its LBA (u64, little endian) in the first 8
 * bytes.
 */
#include "petrel.h"

#define BLK_F_SEG_MAX   (1ULL << 2)
#define BLK_F_RO        (1ULL << 5)
#define BLK_F_BLK_SIZE  (1ULL << 6)
#define BLK_F_FLUSH     (1ULL << 9)
#define BLK_FEATURES    (BLK_F_SEG_MAX | BLK_F_RO | BLK_F_BLK_SIZE | BLK_F_FLUSH)

#define SMALL_CHUNK     8           /* sectors: the 4 KiB buffer in the image */
#define MAX_CHUNK       65536       /* sectors: 32 MiB after the image */

struct virtio_dev vblk;
static uint8_t blk_buf[SMALL_CHUNK * 512] __attribute__((section(".nozero"), aligned(4096)));
static uint64_t pattern_sector[64] __attribute__((section(".nozero")));
static struct blk_hdr req;

/* Returns the virtio status byte (0 = OK), or -1 on timeout. */
int blk_req(uint32_t type, uint64_t sector, void *data, uint32_t len)
{
    uint64_t addr[3];
    uint32_t lens[3];
    int n = 0;
    req.type = type;
    req.reserved = 0;
    req.sector = sector;
    req.status = 0xff;
    addr[n] = (uint64_t)(uintptr_t)&req;
    lens[n++] = 16;
    if (len) {
        addr[n] = (uint64_t)(uintptr_t)data;
        lens[n++] = len;
    }
    addr[n] = (uint64_t)(uintptr_t)&req.status;
    lens[n++] = 1;
    unsigned wmask = 1u << (n - 1);                   /* status */
    if (len && (type == BLK_T_IN || type == BLK_T_GET_ID))
        wmask |= 2;
    if (!virtio_submit(&vblk, &vblk.q[0], n, addr, lens, wmask))
        return -1;
    barrier();
    return req.status;
}

/* petrel.blk.timeout: seconds without an answer before a request fails. */
void blk_set_timeout(void)
{
    uint64_t s = 30;
    if (cmdline_u64("petrel.blk.timeout", &s) && (s == 0 || s > 86400))
        panic("bad petrel.blk.timeout=%lu", s);
    vblk.timeout_us = s * 1000000;
}

/* Capacity in 512-byte sectors, read until config_generation is stable. */
uint64_t blk_read_capacity(void)
{
    uint8_t gen;
    uint64_t cap;
    do {
        gen = virtio_config_generation(&vblk);
        cap = mmio_read32(vblk.devcfg) | ((uint64_t)mmio_read32(vblk.devcfg + 4) << 32);
    } while (gen != virtio_config_generation(&vblk));
    return cap;
}

COLD bool blk_open(unsigned qsize, bool config_entry1, struct blk_geom *g)
{
    if (!pci_find(0x1af4, 0x1001, 0x1042, &vblk.pci)) {
        kprintf("blk: no device\n");
        return false;
    }
    if (!virtio_init(&vblk, BLK_FEATURES, qsize, config_entry1)) {
        kprintf("blk: init FAILED\n");
        return false;
    }
    g->capacity = blk_read_capacity();
    g->bsize = (vblk.features & BLK_F_BLK_SIZE) ? mmio_read32(vblk.devcfg + 20) : 512;
    g->ro = (vblk.features & BLK_F_RO) != 0;

    char id[21];
    memset(id, 0, sizeof(id));
    int st = blk_req(BLK_T_GET_ID, 0, id, 20);
    kprintf("blk: capacity=%lu size=%u ro=%d serial=%s\n", g->capacity, g->bsize, g->ro ? 1 : 0,
            st == 0 && id[0] ? id : "none");
    return true;
}

static void fill(uint8_t *buf, uint64_t lba, unsigned n, uint8_t pat)
{
    memset(buf, pat, n * 512);
    for (unsigned i = 0; i < n; i++)
        *(uint64_t *)(void *)(buf + i * 512) = lba + i;
}

/* Returns the first sector in the buffer that differs, or n. */
static unsigned verify(const uint8_t *buf, uint64_t lba, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        const uint64_t *w = (const uint64_t *)(const void *)(buf + i * 512);
        if (w[0] != lba + i || !mem_eq64(w + 1, pattern_sector + 1, 63))
            return i;
    }
    return n;
}

static bool report(const char *what, int st)
{
    if (st == 0)
        return true;
    if (st < 0)
        kprintf("blk: %s FAILED timeout\n", what);
    else
        kprintf("blk: %s FAILED status=%d\n", what, st);
    return false;
}

/* The `blk` scenario; false when anything failed. */
COLD bool blk_run(void)
{
    uint64_t lba = 0, count = 8, pat = 0xA5, chunk = SMALL_CHUNK;
    cmdline_u64("petrel.blk.lba", &lba);
    cmdline_u64("petrel.blk.count", &count);
    cmdline_u64("petrel.blk.pattern", &pat);
    if (pat > 255)
        panic("bad petrel.blk.pattern=0x%lx", pat);
    if (cmdline_u64("petrel.blk.chunk", &chunk) && (chunk == 0 || chunk > MAX_CHUNK))
        panic("bad petrel.blk.chunk=%lu", chunk);
    blk_set_timeout();
    char mode[8];
    bool read_only = false;
    if (cmdline_get(boot.cmdline, "petrel.blk.mode", mode, sizeof(mode))) {
        if (!memcmp(mode, "read", 5))
            read_only = true;
        else if (memcmp(mode, "write", 6))
            panic("unknown petrel.blk.mode=%s", mode);
    }
    uint8_t *buf = blk_buf;
    if (chunk > SMALL_CHUNK && !(buf = ram_after_image(chunk * 512)))
        panic("no RAM for petrel.blk.chunk=%lu", chunk);
    memset(pattern_sector, (int)pat, sizeof(pattern_sector));

    struct blk_geom g;
    if (!blk_open(16, false, &g))
        return false;

    bool ok = true;
    if (lba + count > g.capacity || lba + count < lba) {
        kprintf("blk: range %lu+%lu beyond capacity\n", lba, count);
        ok = false;
        count = 0;
    }
    if (!read_only && count) {
        for (uint64_t done = 0; ok && done < count; done += chunk) {
            unsigned n = (unsigned)(count - done < chunk ? count - done : chunk);
            fill(buf, lba + done, n, (uint8_t)pat);
            ok = report("write", blk_req(BLK_T_OUT, lba + done, buf, n * 512));
        }
        if (ok)
            kprintf("blk: write ok\n");
        if (ok && (vblk.features & BLK_F_FLUSH)) {
            ok = report("flush", blk_req(BLK_T_FLUSH, 0, 0, 0));
            if (ok)
                kprintf("blk: flush ok\n");
        } else if (ok) {
            kprintf("blk: flush unsupported\n");
        }
    }
    if (ok && count) {
        for (uint64_t done = 0; ok && done < count; done += chunk) {
            unsigned n = (unsigned)(count - done < chunk ? count - done : chunk);
            memset(buf, 0, n * 512);
            ok = report("read", blk_req(BLK_T_IN, lba + done, buf, n * 512));
            unsigned bad = ok ? verify(buf, lba + done, n) : n;
            if (ok && bad < n) {
                kprintf("blk: MISMATCH at lba %lu\n", lba + done + bad);
                ok = false;
            }
        }
        if (ok)
            kprintf("blk: read ok\n");
    }
    kprintf("blk: irqs=%u\n", virtio_irq_count);
    virtio_quiesce(&vblk);
    return ok;
}
