/* The memfill scenario: a buffer with a known pattern for memory-dump checks
 * (dump-guest-memory, memsave, pmemsave), optionally every usable RAM page
 * touched, then a tick line every 100 ms while the guest sleeps in hlt, so a
 * host can see that the guest keeps running. It never ends by itself. */
#include "petrel.h"

#define MEMFILL_PATTERN ((uint64_t)0x6d656d66696c6c00ULL)    /* "memfill\0" read as big-endian */
#define MEMFILL_DEFAULT_LEN 0x10000ULL
#define MEMFILL_MAX_LEN (64ULL << 20)
#define TOUCH_KEY ((uint64_t)0x746f756368000000ULL)          /* "touch\0\0\0" read as big-endian */
#define TICK_US 100000
#define TIMER_VECTOR 0x42                         /* irq_default takes it (EOI only) */
#define LAPIC_LVT_TIMER 0x320
#define LAPIC_TIMER_ICR 0x380
#define LAPIC_TIMER_DCR 0x3E0

/* One word per 4 KiB page of usable RAM from `from` up to the mapped limit:
 * the page address xor TOUCH_KEY, at offset 0. Returns the pages touched. */
static COLD uint64_t touch_ram(uint64_t from)
{
    uint64_t pages = 0;
    for (uint32_t i = 0; i < boot.nr_e820; i++) {
        const struct e820_entry *e = &boot.e820[i];
        if (e->type != 1)
            continue;
        uint64_t start = (e->addr + 0xfff) & ~0xfffULL;
        uint64_t end = (e->addr + e->size) & ~0xfffULL;
        if (start < from)
            start = from;
        if (end > boot.mapped_limit)
            end = boot.mapped_limit;
        for (uint64_t p = start; p < end; p += 0x1000) {
            *(volatile uint64_t *)(uintptr_t)p = p ^ TOUCH_KEY;
            pages++;
        }
    }
    return pages;
}

/* A second view of the low 1 GiB at MEMFILL_ALIAS (pml4[256], 2 MiB pages), so that the
 * buffer has a virtual address that is not its physical one: what a dump with paging and
 * memsave must find through the page tables. Entries are only added, once, so no other CPU
 * needs a TLB flush. */
#define MEMFILL_ALIAS ((uint64_t)0xffff800000000000ULL)
#define ALIAS_PML4_SLOT 256
#define PDE_2M_RW 0x83                            /* present, writable, 2 MiB page */
#define TABLE_RW 0x23                             /* present, writable, accessed */
static uint64_t alias_pdpt[512] __attribute__((aligned(4096)));
static uint64_t alias_pd[512] __attribute__((aligned(4096)));

static COLD void map_alias(void)
{
    for (uint64_t i = 0; i < 512; i++)
        alias_pd[i] = (i << 21) | PDE_2M_RW;
    alias_pdpt[0] = (uint64_t)(uintptr_t)alias_pd | TABLE_RW;
    pml4[ALIAS_PML4_SLOT] = (uint64_t)(uintptr_t)alias_pdpt | TABLE_RW;
    uint64_t cr3;
    __asm__ volatile("mov %%cr3, %0; mov %0, %%cr3" : "=r"(cr3) : : "memory");
}

static inline uint64_t read_cr3(void)
{
    uint64_t v;
    __asm__ volatile("mov %%cr3, %0" : "=r"(v));
    return v;
}

COLD void memfill_run(void)
{
    uint64_t len = MEMFILL_DEFAULT_LEN, touch = 0;
    cmdline_u64("petrel.memfill.len", &len);
    cmdline_u64("petrel.memfill.touch", &touch);
    if (len == 0 || len % 8 || len > MEMFILL_MAX_LEN)
        panic("bad petrel.memfill.len=0x%lx (a multiple of 8, at most 64 MiB)", len);
    uint64_t *buf = ram_after_image(len);
    if (!buf)
        panic("memfill: no RAM for 0x%lx bytes after the image", len);
    uint64_t base = (uint64_t)(uintptr_t)buf;
    if (touch) {
        uint64_t pages = touch_ram(base);
        kprintf("memfill: touched pages=%lu\n", pages);
    }
    for (uint64_t i = 0; i < len / 8; i++)
        buf[i] = MEMFILL_PATTERN ^ (base + 8 * i);
    map_alias();
    uint64_t *alias = (uint64_t *)(uintptr_t)(MEMFILL_ALIAS + base);
    if (alias[len / 8 - 1] != buf[len / 8 - 1])
        panic("memfill: the alias at 0x%lx does not show the buffer", MEMFILL_ALIAS + base);
    kprintf("memfill: addr=0x%lx len=%lu pattern=0x%lx cr3=0x%lx alias=0x%lx\n", base, len,
            MEMFILL_PATTERN, read_cr3(), MEMFILL_ALIAS + base);

    if (!irq_armed)
        irq_setup();
    /* Periodic LAPIC timer (about 10 ms) so hlt wakes up to poll the time base. */
    lapic_write(LAPIC_TIMER_DCR, 0xB);
    lapic_write(LAPIC_LVT_TIMER, (1u << 17) | TIMER_VECTOR);
    lapic_write(LAPIC_TIMER_ICR, 10000000);
    uint64_t tick = 0;
    timer_start_us(TICK_US);
    for (;;) {
        __asm__ volatile("sti; hlt; cli" ::: "memory");
        if (timer_expired()) {
            timer_start_us(TICK_US);
            kprintf("memfill: tick %lu\n", ++tick);
        }
    }
}
