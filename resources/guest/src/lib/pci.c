/*
 * PCI bus 0: enumeration (ECAM when MCFG gave one, else ports 0xCF8/0xCFC),
 * and for drivers (virtio.c): BAR sizing and, for memory BARs the platform
 * left at zero, assignment from the host bridge's 32-bit window; memory
 * space + bus mastering; the capability list.
 */
#include "petrel.h"

static uint32_t cfg_read32(unsigned bus, unsigned dev, unsigned fn, unsigned off)
{
    if (acpi.ecam_base && bus >= acpi.ecam_bus_start && bus <= acpi.ecam_bus_end)
        return mmio_read32(acpi.ecam_base + ((uint64_t)bus << 20) + (dev << 15) + (fn << 12) + (off & 0xffc));
    outl(0xCF8, 0x80000000u | (bus << 16) | (dev << 11) | (fn << 8) | (off & 0xfc));
    return inl(0xCFC);
}

static void cfg_write32(unsigned bus, unsigned dev, unsigned fn, unsigned off, uint32_t v)
{
    if (acpi.ecam_base && bus >= acpi.ecam_bus_start && bus <= acpi.ecam_bus_end) {
        mmio_write32(acpi.ecam_base + ((uint64_t)bus << 20) + (dev << 15) + (fn << 12) + (off & 0xffc), v);
        return;
    }
    outl(0xCF8, 0x80000000u | (bus << 16) | (dev << 11) | (fn << 8) | (off & 0xfc));
    outl(0xCFC, v);
}

uint32_t pci_read32(const struct pci_dev *d, unsigned off) { return cfg_read32(0, d->dev, d->fn, off); }
void pci_write32(const struct pci_dev *d, unsigned off, uint32_t v) { cfg_write32(0, d->dev, d->fn, off, v); }

uint16_t pci_read16(const struct pci_dev *d, unsigned off)
{
    return (uint16_t)(pci_read32(d, off & ~3u) >> ((off & 2) * 8));
}

/* Read-modify-write of the containing dword (the other half is written back
 * as read: only used for registers whose neighbours are read-only or where
 * writing back the read value is harmless). */
void pci_write16(const struct pci_dev *d, unsigned off, uint16_t v)
{
    unsigned sh = (off & 2) * 8;
    uint32_t dw = pci_read32(d, off & ~3u);
    dw = (dw & ~(0xffffu << sh)) | ((uint32_t)v << sh);
    pci_write32(d, off & ~3u, dw);
}

/* Calls visit(dev, fn, id, ctx) for every function present on bus 0, in order, until it
 * returns true; returns whether one did. */
static bool pci_walk(bool (*visit)(unsigned dev, unsigned fn, uint32_t id, void *ctx), void *ctx)
{
    for (unsigned dev = 0; dev < 32; dev++) {
        unsigned nfn = 1;
        for (unsigned fn = 0; fn < nfn; fn++) {
            uint32_t id = cfg_read32(0, dev, fn, 0);
            if ((id & 0xffff) == 0xffff || (id & 0xffff) == 0) {
                if (fn == 0)
                    break;
                continue;
            }
            if (fn == 0 && (cfg_read32(0, dev, 0, 0x0c) & 0x00800000))
                nfn = 8;                    /* multi-function device */
            if (visit(dev, fn, id, ctx))
                return true;
        }
    }
    return false;
}

struct find_ctx {
    uint16_t vendor, dev_a, dev_b;
    struct pci_dev *out;
};

static bool find_visit(unsigned dev, unsigned fn, uint32_t id, void *ctx)
{
    struct find_ctx *f = ctx;
    uint16_t v = (uint16_t)id, d = (uint16_t)(id >> 16);
    if (v != f->vendor || (d != f->dev_a && d != f->dev_b))
        return false;
    memset(f->out, 0, sizeof(*f->out));
    f->out->dev = (uint8_t)dev;
    f->out->fn = (uint8_t)fn;
    f->out->vendor = v;
    f->out->device = d;
    return true;
}

/* First function on bus 0 with this vendor and one of the two device IDs. */
bool pci_find(uint16_t vendor, uint16_t dev_a, uint16_t dev_b, struct pci_dev *out)
{
    struct find_ctx f = { vendor, dev_a, dev_b, out };
    return pci_walk(find_visit, &f);
}

/* Offset of the first capability with this ID (0: none); `from` = 0 to start,
 * else a previous result to continue after it. */
unsigned pci_find_cap(const struct pci_dev *d, uint8_t cap_id, unsigned from)
{
    if (!(pci_read16(d, 0x06) & 0x10))             /* status: capabilities list */
        return 0;
    unsigned off = from ? (pci_read32(d, from) >> 8) & 0xfc : pci_read32(d, 0x34) & 0xfc;
    for (int guard = 0; off >= 0x40 && guard < 48; guard++) {
        uint32_t h = pci_read32(d, off);
        if ((h & 0xff) == cap_id)
            return off;
        off = (h >> 8) & 0xfc;
    }
    return 0;
}

/* The 32-bit host bridge window (petrel and microvm: 0xC0000000-0xDFFFFFFF;
 * q35/pc firmware assigns everything before the guest runs). */
#define PCI_WIN32_BASE  0xC0000000ULL
#define PCI_WIN32_END   0xE0000000ULL
static uint64_t win32_next;

/* Above every memory BAR already in the window: exact for `d` (sized so
 * far), for other bus-0 functions addr + its lowest set bit (a BAR is
 * naturally aligned, so that bounds its size) without touching them. */
static uint64_t window_first_free(const struct pci_dev *d)
{
    uint64_t next = PCI_WIN32_BASE;
    for (unsigned j = 0; j < 6; j++)
        if (!d->bar[j].io && d->bar[j].addr >= PCI_WIN32_BASE && d->bar[j].addr < PCI_WIN32_END &&
            d->bar[j].addr + d->bar[j].size > next)
            next = d->bar[j].addr + d->bar[j].size;
    for (unsigned dev = 0; dev < 32; dev++) {
        for (unsigned fn = 0; fn < 8; fn++) {
            uint32_t id = cfg_read32(0, dev, fn, 0);
            if ((id & 0xffff) == 0xffff || (id & 0xffff) == 0 || (dev == d->dev && fn == d->fn))
                continue;
            if (((cfg_read32(0, dev, fn, 0x0c) >> 16) & 0x7f) != 0)
                continue;                           /* bridges: only type-0 headers */
            for (unsigned j = 0; j < 6; j++) {
                uint32_t lo = cfg_read32(0, dev, fn, 0x10 + 4 * j);
                if (lo & 1)
                    continue;
                uint64_t a = lo & ~0xfu;
                if (((lo >> 1) & 3) == 2) {
                    if (cfg_read32(0, dev, fn, 0x14 + 4 * j))
                        a = 0;                      /* above 4 GiB */
                    j++;
                }
                if (a >= PCI_WIN32_BASE && a < PCI_WIN32_END && a + (a & -a) > next)
                    next = a + (a & -a);
            }
        }
    }
    return next;
}

/*
 * Size every BAR (decoding off meanwhile), assign memory BARs that read zero
 * from the 32-bit window (64-bit BARs too: the page tables map only the low
 * 4 GiB and RAM), then enable memory space (+ I/O space if an I/O BAR is
 * set) and bus mastering. Prints one `pci:` line per BAR.
 */
bool pci_enable(struct pci_dev *d)
{
    uint32_t cmd = pci_read32(d, 0x04) & 0xffff;
    pci_write32(d, 0x04, cmd & ~7u);                /* decoding and mastering off */
    for (unsigned i = 0; i < 6; i++) {
        unsigned off = 0x10 + 4 * i;
        uint32_t lo = pci_read32(d, off);
        pci_write32(d, off, 0xffffffffu);
        uint32_t mlo = pci_read32(d, off);
        pci_write32(d, off, lo);
        if (!mlo)
            continue;
        struct pci_bar *b = &d->bar[i];
        if (lo & 1) {
            b->io = true;
            b->addr = lo & ~3u;
            b->size = (~(mlo & ~3u) + 1) & 0xffff;
        } else {
            uint64_t mask = mlo & ~0xfu;
            b->addr = lo & ~0xfu;
            if (((lo >> 1) & 3) == 2 && i < 5) {
                b->is64 = true;
                uint32_t hi = pci_read32(d, off + 4);
                pci_write32(d, off + 4, 0xffffffffu);
                uint32_t mhi = pci_read32(d, off + 4);
                pci_write32(d, off + 4, hi);
                mask |= (uint64_t)mhi << 32;
                b->addr |= (uint64_t)hi << 32;
            } else {
                mask |= 0xffffffff00000000ULL;
            }
            b->size = ~mask + 1;
        }
        if (b->is64)
            i++;                                    /* the upper half is no BAR of its own */
        if (b->addr || b->io)
            continue;                               /* I/O BARs are not assigned here */
        /* Assign: first free, naturally aligned place after every BAR already
         * in the window (pci_enable is called before any driver assigns more). */
        if (!win32_next)
            win32_next = window_first_free(d);
        uint64_t a = (win32_next + b->size - 1) & ~(b->size - 1);
        if (a + b->size > PCI_WIN32_END) {
            kprintf("pci: 00:%02x.%u bar%u size=0x%lx does not fit the window\n", d->dev, d->fn, i, b->size);
            return false;
        }
        win32_next = a + b->size;
        b->addr = a;
        b->assigned = true;
        pci_write32(d, off, (uint32_t)a | (lo & 0xf));
        if (b->is64)
            pci_write32(d, off + 4, 0);
    }
    bool any_io = false;
    for (unsigned i = 0; i < 6; i++) {
        struct pci_bar *b = &d->bar[i];
        if (!b->size)
            continue;
        any_io |= b->io && b->addr;
        kprintf("pci: 00:%02x.%u bar%u=0x%lx size=0x%lx %s%s\n", d->dev, d->fn, i, b->addr, b->size,
                b->io ? "io" : b->is64 ? "mem64" : "mem32", b->assigned ? " assigned" : "");
        if (b->is64)
            i++;
    }
    pci_write32(d, 0x04, cmd | 0x2 | 0x4 | (any_io ? 0x1 : 0));   /* memory, bus master */
    return true;
}

/* Bus 0 through ports 0xCF8/0xCFC only (they work before any ECAM setup). */
uint32_t pci_io_read32(unsigned dev, unsigned fn, unsigned off)
{
    outl(0xCF8, 0x80000000u | (dev << 11) | (fn << 8) | (off & 0xfc));
    return inl(0xCFC);
}

void pci_io_write32(unsigned dev, unsigned fn, unsigned off, uint32_t v)
{
    outl(0xCF8, 0x80000000u | (dev << 11) | (fn << 8) | (off & 0xfc));
    outl(0xCFC, v);
}

static bool print_visit(unsigned dev, unsigned fn, uint32_t id, void *ctx)
{
    uint32_t cls = cfg_read32(0, dev, fn, 0x08);
    kprintf("pci: 00:%02x.%u %04x:%04x class=%02x.%02x\n", dev, fn, id & 0xffff, id >> 16,
            cls >> 24, (cls >> 16) & 0xff);
    (*(unsigned *)ctx)++;
    return false;
}

void pci_scan(void)
{
    unsigned count = 0;
    /* No MCFG and nothing behind ports 0xCF8/0xCFC: an ECAM-only host bridge
     * (QEMU microvm, pcie=on) may be described in the DSDT. */
    uint64_t ebase, esize;
    if (!acpi.ecam_base && pci_io_read32(0, 0, 0) == 0xffffffffu && acpi_dsdt_ecam(&ebase, &esize)) {
        acpi.ecam_base = ebase;
        acpi.ecam_bus_start = 0;
        acpi.ecam_bus_end = (uint8_t)((esize >> 20) > 256 ? 255 : (esize >> 20) - 1);
        kprintf("pci: ecam=0x%lx buses=0-%u (dsdt)\n", ebase, acpi.ecam_bus_end);
    }
    pci_walk(print_visit, &count);
    kprintf("pci: devices=%u\n", count);
}
