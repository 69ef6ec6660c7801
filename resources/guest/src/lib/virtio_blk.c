/*
 * virtio-blk (1af4:1001 transitional or 1af4:1042 modern) and the `blk`
 * scenario: capacity/blk_size/seg_max from the device config, GET_ID, then
 * a pattern written to petrel.blk.count sectors from petrel.blk.lba, a
 * flush, and a read-back compare (petrel.blk.mode=read: only the read-back).
 * Sectors are 512 bytes; each holds the pattern byte with its LBA (u64,
 * little endian) in the first 8 bytes.
 */
#include "petrel.h"

#define BLK_F_SEG_MAX   (1ULL << 2)
#define BLK_F_RO        (1ULL << 5)
#define BLK_F_BLK_SIZE  (1ULL << 6)
#define BLK_F_FLUSH     (1ULL << 9)

#define BLK_T_IN        0
#define BLK_T_OUT       1
#define BLK_T_FLUSH     4
#define BLK_T_GET_ID    8

#define CHUNK_SECTORS   8           /* one 4 KiB data buffer per request */

static struct virtio_dev vblk;
static uint8_t blk_buf[CHUNK_SECTORS * 512] __attribute__((section(".nozero"), aligned(4096)));
static struct {
    uint32_t type, reserved;
    uint64_t sector;
    uint8_t status;
} __attribute__((aligned(16))) req;

/* Returns the virtio status byte (0 = OK), or -1 on timeout. */
static int blk_req(uint32_t type, uint64_t sector, void *data, uint32_t len)
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
    if (!virtio_submit(&vblk, n, addr, lens, wmask))
        return -1;
    barrier();
    return req.status;
}

static bool opt_u64(const char *key, uint64_t *val)
{
    char buf[32];
    if (!cmdline_get(boot.cmdline, key, buf, sizeof(buf)))
        return true;
    bool ok;
    *val = parse_u64(buf, &ok);
    if (!ok)
        panic("bad %s=%s", key, buf);
    return true;
}

static void fill(uint64_t lba, unsigned n, uint8_t pat)
{
    memset(blk_buf, pat, n * 512);
    for (unsigned i = 0; i < n; i++)
        *(uint64_t *)(void *)(blk_buf + i * 512) = lba + i;
}

/* Returns the first sector in the buffer that differs, or n. */
static unsigned verify(uint64_t lba, unsigned n, uint8_t pat)
{
    for (unsigned i = 0; i < n; i++) {
        const uint8_t *s = blk_buf + i * 512;
        const uint64_t *w = (const uint64_t *)(const void *)s;
        uint64_t p8 = pat * 0x0101010101010101ULL;
        if (w[0] != lba + i)
            return i;
        for (unsigned j = 1; j < 64; j++)       /* 8 bytes per step: fewer emulated instructions */
            if (w[j] != p8)
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
    uint64_t lba = 0, count = 8, pat = 0xA5;
    opt_u64("petrel.blk.lba", &lba);
    opt_u64("petrel.blk.count", &count);
    opt_u64("petrel.blk.pattern", &pat);
    if (pat > 255)
        panic("bad petrel.blk.pattern=0x%lx", pat);
    char mode[8];
    bool read_only = false;
    if (cmdline_get(boot.cmdline, "petrel.blk.mode", mode, sizeof(mode))) {
        if (!memcmp(mode, "read", 5))
            read_only = true;
        else if (memcmp(mode, "write", 6))
            panic("unknown petrel.blk.mode=%s", mode);
    }

    if (!pci_find(0x1af4, 0x1001, 0x1042, &vblk.pci)) {
        kprintf("blk: no device\n");
        return false;
    }
    if (!virtio_init(&vblk, BLK_F_SEG_MAX | BLK_F_RO | BLK_F_BLK_SIZE | BLK_F_FLUSH)) {
        kprintf("blk: init FAILED\n");
        return false;
    }
    uint64_t cap = mmio_read32(vblk.devcfg) | ((uint64_t)mmio_read32(vblk.devcfg + 4) << 32);
    uint32_t bsize = (vblk.features & BLK_F_BLK_SIZE) ? mmio_read32(vblk.devcfg + 20) : 512;
    uint32_t seg_max = (vblk.features & BLK_F_SEG_MAX) ? mmio_read32(vblk.devcfg + 12) : 0;
    bool ro = (vblk.features & BLK_F_RO) != 0;

    char id[21];
    memset(id, 0, sizeof(id));
    int st = blk_req(BLK_T_GET_ID, 0, id, 20);
    kprintf("blk: capacity=%lu size=%u ro=%d serial=%s\n", cap, bsize, ro ? 1 : 0,
            st == 0 && id[0] ? id : "none");
    (void)seg_max;

    bool ok = true;
    if (lba + count > cap || lba + count < lba) {
        kprintf("blk: range %lu+%lu beyond capacity\n", lba, count);
        ok = false;
        count = 0;
    }
    if (!read_only && count) {
        for (uint64_t done = 0; ok && done < count; done += CHUNK_SECTORS) {
            unsigned n = (unsigned)(count - done < CHUNK_SECTORS ? count - done : CHUNK_SECTORS);
            fill(lba + done, n, (uint8_t)pat);
            ok = report("write", blk_req(BLK_T_OUT, lba + done, blk_buf, n * 512));
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
        for (uint64_t done = 0; ok && done < count; done += CHUNK_SECTORS) {
            unsigned n = (unsigned)(count - done < CHUNK_SECTORS ? count - done : CHUNK_SECTORS);
            memset(blk_buf, 0, n * 512);
            ok = report("read", blk_req(BLK_T_IN, lba + done, blk_buf, n * 512));
            unsigned bad = ok ? verify(lba + done, n, (uint8_t)pat) : n;
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
