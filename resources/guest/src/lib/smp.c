/*
 * SMP bring-up: INIT + SIPI (+ a second SIPI only for APs that have not
 * checked in) to every enabled local APIC listed in the MADT. APs run the
 * real-mode trampoline copied below 1 MiB, switch to long mode on the BSP's
 * page tables, take a stack by ticket (lock xadd), check in and halt.
 */
#include "petrel.h"

#define LAPIC_ID     0x020
#define LAPIC_ICR_LO 0x300
#define LAPIC_ICR_HI 0x310
#define ICR_BUSY     (1u << 12)
#define ICR_INIT_ASSERT   0x0000C500u   /* level trigger, assert, INIT */
#define ICR_INIT_DEASSERT 0x00008500u   /* level trigger, de-assert, INIT */
#define ICR_STARTUP       0x00000600u

static uint64_t lapic_base = 0xFEE00000;
static bool x2apic;
static volatile uint32_t ap_online;
static volatile uint32_t ap_checkin[MAX_CPUS];  /* by ticket: APIC ID + 1 */

void lapic_refresh(void)
{
    uint64_t apic_msr = rdmsr(0x1B);
    x2apic = (apic_msr >> 10) & 1;
    lapic_base = apic_msr & 0x000ffffffffff000ULL;
}

/* xAPIC MMIO register offset; in x2APIC mode the MSR 0x800 + reg / 16. */
uint32_t lapic_read(uint32_t reg)
{
    if (x2apic)
        return (uint32_t)rdmsr(0x800 + (reg >> 4));
    return mmio_read32(lapic_base + reg);
}

void lapic_write(uint32_t reg, uint32_t v)
{
    if (x2apic)
        wrmsr(0x800 + (reg >> 4), v);
    else
        mmio_write32(lapic_base + reg, v);
}

void lapic_eoi(void)
{
    lapic_write(0x0B0, 0);
}

uint32_t lapic_id(void)
{
    if (x2apic)
        return (uint32_t)rdmsr(0x802);
    return mmio_read32(lapic_base + LAPIC_ID) >> 24;
}

static void send_ipi(uint32_t apic_id, uint32_t icr_lo)
{
    if (x2apic) {
        wrmsr(0x830, ((uint64_t)apic_id << 32) | icr_lo);
        return;
    }
    mmio_write32(lapic_base + LAPIC_ICR_HI, apic_id << 24);
    mmio_write32(lapic_base + LAPIC_ICR_LO, icr_lo);
    for (uint32_t i = 0; i < 100000; i++)
        if (!(mmio_read32(lapic_base + LAPIC_ICR_LO) & ICR_BUSY))
            break;
}

void ap_main(uint32_t ticket)
{
    ap_checkin[ticket] = lapic_id() + 1;
    __atomic_fetch_add(&ap_online, 1, __ATOMIC_SEQ_CST);    /* lock add */
    halt_forever();
}

static bool checked_in(uint32_t apic_id)
{
    uint32_t n = ap_ticket;
    if (n > MAX_CPUS)
        n = MAX_CPUS;
    for (uint32_t i = 0; i < n; i++)
        if (ap_checkin[i] == apic_id + 1)
            return true;
    return false;
}

/* Poll until `want` APs are online or `us` microseconds have passed. */
static bool wait_online(uint32_t want, uint32_t us)
{
    while (us) {
        uint32_t chunk = us > 50000 ? 50000 : us;
        timer_start_us(chunk);
        while (!timer_expired())
            if (ap_online >= want)
                return true;
        us -= chunk;
    }
    return ap_online >= want;
}

/* The page for the AP trampoline (and the S3 waking code): picked once. */
uint64_t low_page(void)
{
    static uint64_t page = 1;
    if (page != 1)
        return page;
    page = 0;
    if (e820_page_usable(0x8000)) {
        page = 0x8000;
    } else {
        for (uint64_t a = 0x1000; a < 0x9f000; a += 0x1000)
            if (e820_page_usable(a)) {
                page = a;
                break;
            }
    }
    return page;
}

int smp_boot(void)
{
    lapic_refresh();
    uint32_t bsp = lapic_id();
    int expected = acpi.madt_cpus;
    uint32_t aps = 0;
    for (int i = 0; i < expected; i++)
        if (acpi.apic_ids[i] != bsp)
            aps++;
    if (!aps)
        return 1;

    uint64_t tramp = low_page();
    if (!tramp) {
        kprintf("smp: no usable page below 1 MiB for the AP trampoline\n");
        return 1;
    }
    memcpy((void *)(uintptr_t)tramp, ap_tramp_start, (size_t)(ap_tramp_end - ap_tramp_start));
    __asm__ volatile("mfence" ::: "memory");
    uint32_t vec = (uint32_t)(tramp >> 12);

    for (int i = 0; i < expected; i++) {
        if (acpi.apic_ids[i] == bsp)
            continue;
        send_ipi(acpi.apic_ids[i], ICR_INIT_ASSERT);
        send_ipi(acpi.apic_ids[i], ICR_INIT_DEASSERT);
    }
    delay_us(200);
    for (int i = 0; i < expected; i++)
        if (acpi.apic_ids[i] != bsp)
            send_ipi(acpi.apic_ids[i], ICR_STARTUP | vec);

    if (!wait_online(aps, 10000)) {
        for (int i = 0; i < expected; i++) {
            uint32_t id = acpi.apic_ids[i];
            if (id != bsp && !checked_in(id))
                send_ipi(id, ICR_STARTUP | vec);
        }
        /* The wait ends as soon as every AP is in, so a generous budget costs nothing on a
         * healthy run; it matters when the host is loaded and a vCPU thread starts late. */
        wait_online(aps, 3000000);
    }
    return (int)ap_online + 1;
}
