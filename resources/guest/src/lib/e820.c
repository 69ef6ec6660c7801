/* PVH start_info: command line and e820 map; high-memory mapping; probe. */
#include "petrel.h"

#define HVM_START_MAGIC 0x336ec578

struct hvm_start_info {
    uint32_t magic;
    uint32_t version;
    uint32_t flags;
    uint32_t nr_modules;
    uint64_t modlist_paddr;
    uint64_t cmdline_paddr;
    uint64_t rsdp_paddr;
    uint64_t memmap_paddr;      /* version >= 1 */
    uint32_t memmap_entries;
    uint32_t reserved;
};

struct boot_info boot;

void bootinfo_load(uint32_t paddr)
{
    const struct hvm_start_info *si = (const void *)(uintptr_t)paddr;
    if (!paddr || si->magic != HVM_START_MAGIC)
        panic("bad hvm_start_info at 0x%x", paddr);

    if (si->cmdline_paddr && si->cmdline_paddr < (4ULL << 30)) {
        const char *c = (const char *)(uintptr_t)si->cmdline_paddr;
        size_t i = 0;
        while (i < sizeof(boot.cmdline) - 1 && c[i]) {
            boot.cmdline[i] = c[i];
            i++;
        }
        boot.cmdline[i] = '\0';
    }
    boot.rsdp_paddr = si->rsdp_paddr;

    if (si->version >= 1 && si->memmap_paddr && si->memmap_paddr < (4ULL << 30)) {
        uint32_t n = si->memmap_entries;
        if (n > E820_MAX)
            n = E820_MAX;
        const struct e820_entry *src = (const void *)(uintptr_t)si->memmap_paddr;
        for (uint32_t i = 0; i < n; i++)
            if (src[i].size)            /* drop empty entries */
                boot.e820[boot.nr_e820++] = src[i];
    }
    boot.mapped_limit = 4ULL << 30;
}

/*
 * Extend the identity map above 4 GiB (2 MiB pages) up to the highest RAM
 * the e820 map reports, capped at 64 GiB. Each page directory is written
 * completely while it is not yet reachable, then linked into the live PDPT
 * (one PDPT store per GiB), and CR3 is reloaded once.
 */
static void map_high(uint64_t top)
{
    if (top > MAP_LIMIT)
        top = MAP_LIMIT;
    top = (top + 0x1fffff) & ~0x1fffffULL;
    if (top <= (4ULL << 30))
        return;
    unsigned gibs = (unsigned)((top + (1ULL << 30) - 1) >> 30);
    for (unsigned g = 4; g < gibs; g++) {
        uint64_t *pd = &high_pds[(g - 4) * 512];
        uint64_t base = (uint64_t)g << 30;
        uint64_t left = (top - base) >> 21;
        unsigned n = left < 512 ? (unsigned)left : 512;
        uint64_t v = base | 0xE3;       /* P, RW, A, D, PS */
        /* unrolled: about two instructions per entry */
#pragma GCC unroll 16
        for (unsigned i = 0; i < n; i++) {
            pd[i] = v;
            v += 0x200000;
        }
        if (n < 512)
            memset(pd + n, 0, (512 - n) * sizeof(uint64_t));
        barrier();
        pdpt[g] = (uint64_t)(uintptr_t)pd | 0x23;
    }
    uint64_t cr3;
    __asm__ volatile("mov %%cr3, %0; mov %0, %%cr3" : "=r"(cr3) : : "memory");
    boot.mapped_limit = top;
}

void e820_report_and_map(void)
{
    uint64_t usable = 0, top = 0, ram_top = 0;
    for (uint32_t i = 0; i < boot.nr_e820; i++) {
        const struct e820_entry *e = &boot.e820[i];
        uint64_t end = e->addr + e->size;
        if (e->type == 1) {
            usable += e->size;
            if (end > top)
                top = end;
        }
        if ((e->type == 1 || e->type == 3 || e->type == 4) && end > ram_top)
            ram_top = end;
    }
    boot.usable_bytes = usable;
    boot.usable_top = top;
    kprintf("e820: usable=%lu top=0x%lx regions=%u\n", usable, top, boot.nr_e820);
    for (uint32_t i = 0; i < boot.nr_e820; i++) {
        const struct e820_entry *e = &boot.e820[i];
        kprintf("e820: 0x%lx-0x%lx type=%u\n", e->addr, e->addr + e->size, e->type);
    }
    map_high(ram_top);
}

bool e820_page_usable(uint64_t addr)
{
    for (uint32_t i = 0; i < boot.nr_e820; i++) {
        const struct e820_entry *e = &boot.e820[i];
        if (e->type == 1 && addr >= e->addr && addr + 4096 <= e->addr + e->size)
            return true;
    }
    return false;
}

/* Scratch RAM for large DMA buffers: from the first 2 MiB boundary after the
 * image (0x200000), `len` bytes inside one usable region and the identity map. */
void *ram_after_image(uint64_t len)
{
    uint64_t base = ((uintptr_t)__kernel_end + (2ULL << 20) - 1) & ~((2ULL << 20) - 1);
    if (base + len > boot.mapped_limit)
        return NULL;
    for (uint32_t i = 0; i < boot.nr_e820; i++) {
        const struct e820_entry *e = &boot.e820[i];
        if (e->type == 1 && base >= e->addr && base + len <= e->addr + e->size)
            return (void *)(uintptr_t)base;
    }
    return NULL;
}

/* Write/read back patterns at a few spots of a page, restoring the data. */
static bool probe_page(uint64_t page)
{
    static const uint32_t offs[] = { 0, 0x7f8, 0xff8 };
    for (unsigned i = 0; i < ARRAY_LEN(offs); i++) {
        volatile uint64_t *q = (volatile uint64_t *)(uintptr_t)(page + offs[i]);
        uint64_t saved = *q;
        uint64_t pat = 0x5aa5c33c96690ff0ULL ^ (page + offs[i]);
        *q = pat;
        bool ok = *q == pat;
        *q = ~pat;
        ok = ok && *q == ~pat;
        *q = saved;
        if (!ok) {
            kprintf("mem: probe FAILED at 0x%lx\n", page + offs[i]);
            return false;
        }
    }
    return true;
}

bool mem_probe(void)
{
    const uint64_t kstart = (uintptr_t)__kernel_start & ~0xfffULL;
    const uint64_t kend = ((uintptr_t)__kernel_end + 0xfff) & ~0xfffULL;
    unsigned probed = 0;
    for (uint32_t i = 0; i < boot.nr_e820; i++) {
        const struct e820_entry *e = &boot.e820[i];
        if (e->type != 1)
            continue;
        uint64_t first = (e->addr + 0xfff) & ~0xfffULL;
        uint64_t end = (e->addr + e->size) & ~0xfffULL;
        if (end > boot.mapped_limit)
            end = boot.mapped_limit;
        /* skip the pages this kernel occupies (image, stacks, tables) */
        if (first < kend && first + 4096 > kstart)
            first = kend;
        uint64_t last = end - 4096;
        if (last < kend && last + 4096 > kstart)
            last = kstart - 4096;
        if (end < 4096 || first + 4096 > end || last < first)
            continue;
        if (!probe_page(first))
            return false;
        if (last != first && !probe_page(last))
            return false;
        probed++;
    }
    kprintf("mem: probe ok regions=%u\n", probed);
    return true;
}
