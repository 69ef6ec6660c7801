/*
 * ACPI S3 (suspend to RAM) for petrel.test=suspend.
 *
 * The waking vector in the FACS points at a copy of the AP trampoline (real
 * mode -> 32-bit -> long mode) whose far jump goes to resume_entry32 instead
 * of ap_entry32; resume_entry64 restores the saved RW state, reloads the IDT
 * and the registers s3_save() kept, and s3_save() returns a second time,
 * with 1.
 *
 * RAM survives S3, but QEMU copies a -kernel ELF's segments back (and zeroes
 * the rest of each PT_LOAD) on every reset, and its S3 wake-up is a reset. So
 * right before sleeping the image's RW state (.data with the static page
 * tables, .bss, the IDT, the boot stack and any high-RAM page directories) is
 * copied to RAM just past the image, where resume_entry64 finds it by the
 * link-time address __kernel_end: records {u64 dst, u64 len, data}, ended by
 * dst = 0. Under a VMM that keeps the image, the copy back changes nothing.
 */
#include "petrel.h"

#define FACS_WAKING_VECTOR   12     /* 32-bit, real mode: CS = v >> 4, IP = v & 0xf */
#define FACS_X_WAKING_VECTOR 24     /* 64-bit, cleared so firmware uses the other */
#define WAKE_CODE_OFFSET     0x800  /* in the low page, after the AP trampoline */
#define PM1_WAK              (1u << 15)
#define PM1_PWRBTN           (1u << 8)

static uint64_t facs;

static bool facs_ok(uint64_t f)
{
    if (!f || f + 64 > (4ULL << 30))
        return false;
    const uint8_t *p = (const uint8_t *)(uintptr_t)f;
    uint32_t len;
    memcpy(&len, p + 4, 4);
    return !memcmp(p, "FACS", 4) && len >= 32;
}

static uint8_t *area_put(uint8_t *p, const void *src, uint64_t len)
{
    uint64_t hdr[2] = { (uint64_t)(uintptr_t)src, len };
    memcpy(p, hdr, sizeof(hdr));
    memcpy(p + sizeof(hdr), src, len);
    return p + sizeof(hdr) + len;
}

/* Pages of high_pds in use (one per GiB mapped above 4 GiB). */
static uint64_t high_pd_bytes(void)
{
    uint64_t gibs = (boot.mapped_limit + (1ULL << 30) - 1) >> 30;
    return gibs > 4 ? (gibs - 4) * 4096 : 0;
}

static uint64_t area_size(void)
{
    return 5 * 16 + (uint64_t)(__bss_end - __data_start) + 256 * 16 +
           (uint64_t)(boot_stack_top - boot_stack) + high_pd_bytes();
}

static bool area_usable(void)
{
    uint64_t start = (uint64_t)(uintptr_t)__kernel_end;
    for (uint64_t a = start; a < start + area_size(); a += 4096)
        if (!e820_page_usable(a))
            return false;
    return true;
}

/* Called after s3_save(): the stack frames above it are final. */
static void area_save(void)
{
    uint8_t *p = (uint8_t *)__kernel_end;
    p = area_put(p, __data_start, (uint64_t)(__bss_end - __data_start));
    p = area_put(p, idt_table, 256 * 16);
    p = area_put(p, boot_stack, (uint64_t)(boot_stack_top - boot_stack));
    if (high_pd_bytes())
        p = area_put(p, high_pds, high_pd_bytes());
    memset(p, 0, 16);
}

/*
 * QEMU q35: the wake-up reset also resets the ICH9 LPC bridge (00:1f.0), and
 * SeaBIOS's resume path restores neither PMBASE (0x40) nor ACPI_CNTL (0x44),
 * so the PM1 registers would stop decoding. Restoring them is firmware's job
 * on real hardware; the guest does it for this one known bridge.
 */
#define ICH9_LPC_ID 0x29188086u
static uint32_t lpc_pmbase, lpc_acpi_cntl;

static void lpc_save(void)
{
    if (pci_io_read32(0x1f, 0, 0) != ICH9_LPC_ID)
        return;
    lpc_pmbase = pci_io_read32(0x1f, 0, 0x40);
    lpc_acpi_cntl = pci_io_read32(0x1f, 0, 0x44);
}

static void lpc_restore(void)
{
    if (!lpc_pmbase || pci_io_read32(0x1f, 0, 0) != ICH9_LPC_ID)
        return;
    if (pci_io_read32(0x1f, 0, 0x40) != lpc_pmbase || pci_io_read32(0x1f, 0, 0x44) != lpc_acpi_cntl) {
        pci_io_write32(0x1f, 0, 0x40, lpc_pmbase);
        pci_io_write32(0x1f, 0, 0x44, lpc_acpi_cntl);
    }
}

/* Write 1 to clear. On wake-up PWRBTN_STS goes too: it names the wake
 * source (QEMU sets it on every system_wakeup), it is no new press. */
static void clear_wak_sts(uint16_t bits)
{
    if (acpi.pm1a_evt && !acpi.hw_reduced)
        outw((uint16_t)acpi.pm1a_evt, bits);
}

static COLD void sleep_s3(int typ, uint64_t page)
{
    uint64_t wake = page + WAKE_CODE_OFFSET;
    uint8_t *code = (uint8_t *)(uintptr_t)wake;
    memcpy(code, ap_tramp_start, (size_t)(ap_tramp_end - ap_tramp_start));
    uint32_t target = (uint32_t)(uintptr_t)resume_entry32;
    memcpy(code + (ap_tramp_ljmp_end - ap_tramp_start) - 6, &target, 4);
    mmio_write32(facs + FACS_WAKING_VECTOR, (uint32_t)wake);
    mmio_write32(facs + FACS_X_WAKING_VECTOR, 0);
    mmio_write32(facs + FACS_X_WAKING_VECTOR + 4, 0);
    __asm__ volatile("mfence" ::: "memory");
    lpc_save();

    kprintf("suspend: entering S3\n");
    irq_armed = false;                  /* saved so: set up again on wake-up */
    if (s3_save() == 0) {
        area_save();
        clear_wak_sts(PM1_WAK);
        acpi_sleep_write(typ);
        /* The VMM stops the vCPUs asynchronously. */
        delay_us(5000000);
        kprintf("suspend: FAILED\n");
        return;
    }

    /* Woken: only the BSP runs, IF clear, on its saved stack. Devices may
     * have been reset (QEMU resets the machine and SeaBIOS jumps to the
     * waking vector), so the UART, the PIT and the LAPIC mode are redone
     * here and irq_setup() redoes the rest. */
    uart_init();
    timer_init();
    lapic_refresh();
    lpc_restore();
    mmio_write32(facs + FACS_WAKING_VECTOR, 0);
    clear_wak_sts(PM1_WAK | PM1_PWRBTN);
    /* Armed before the line, so a power button pressed once it is seen counts. */
    irq_setup();
    kprintf("suspend: resumed\n");
}

COLD void suspend_run(void)
{
    int typ = acpi.fadt ? acpi_sleep_typ("_S3_") : -1;
    uint64_t page = low_page();
    facs = acpi.facs;
    if (typ < 0)
        kprintf("suspend: no S3\n");
    else if (!facs_ok(facs))
        kprintf("suspend: no FACS\n");
    else if (!page)
        kprintf("suspend: no page below 1 MiB for the waking vector\n");
    else if (!area_usable())
        kprintf("suspend: no RAM after the image for the saved state\n");
    else
        sleep_s3(typ, page);
    idle_run();
}
