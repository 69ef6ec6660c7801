/*
 * Interrupts for the idle scenarios (idle, rtcset, suspend): NMI counting,
 * the ACPI SCI through the IOAPIC, the fixed-hardware power button, and the
 * `sti; hlt` loop. Nothing here runs in the other scenarios, whose boot path
 * keeps interrupts disabled throughout.
 *
 * Vectors: 2 = NMI (nmi_entry, entry.S), SCI_VECTOR = the SCI, 0xFF = the
 * LAPIC spurious vector, every other vector from 32 up = a default handler
 * that counts and EOIs. Exceptions (0-31 but 2) still panic.
 */
#include "petrel.h"

#define SCI_VECTOR      0x29
#define SPURIOUS_VECTOR 0xFF

#define LAPIC_TPR       0x080
#define LAPIC_SVR       0x0F0
#define LAPIC_LVT_TIMER 0x320
#define LAPIC_LVT_LINT0 0x350
#define LAPIC_LVT_LINT1 0x360
#define LAPIC_LVT_ERROR 0x370
#define LVT_MASKED      0x10000u
#define LVT_NMI         0x00400u
#define LVT_EXTINT      0x00700u

#define IOAPIC_REGSEL   0x00
#define IOAPIC_WIN      0x10
#define IOREDTBL(n)     (0x10 + 2 * (n))
#define RTE_MASKED      (1u << 16)
#define RTE_LEVEL       (1u << 15)
#define RTE_ACTIVE_LOW  (1u << 13)

#define PM1_PWRBTN      (1u << 8)   /* PM1_STS PWRBTN_STS / PM1_EN PWRBTN_EN */
#define PM1_WAK         (1u << 15)  /* PM1_STS WAK_STS */
#define PM1_CNT_SCI_EN  (1u << 0)

static volatile uint32_t pwrbtn_pressed;
static volatile uint32_t sci_count, other_irqs, spurious_irqs;
static bool idt_ready;
bool irq_armed;                     /* irq_setup() done (suspend.c clears it) */
static bool fixed_button;           /* SCI routed and PWRBTN_EN set */

/* ---- handlers (called from the stubs in entry.S, IF clear) ---- */

void irq_default(void);
void irq_spurious(void);
void irq_sci(void);

void irq_default(void)
{
    other_irqs++;
    lapic_eoi();
}

void irq_spurious(void)
{
    spurious_irqs++;                /* no EOI for the spurious vector */
}

void irq_sci(void)
{
    uint16_t evt = (uint16_t)acpi.pm1a_evt;
    sci_count++;
    if (evt && (inw(evt) & PM1_PWRBTN)) {
        outw(evt, PM1_PWRBTN);      /* write 1 to clear: only that bit */
        pwrbtn_pressed = 1;
    }
    /* The source is cleared, so for a level-triggered pin the EOI broadcast
     * clears the IOAPIC's remote IRR without a new delivery. */
    lapic_eoi();
}

/* ---- IOAPIC ---- */

static uint32_t ioapic_read(uint64_t base, uint32_t reg)
{
    mmio_write32(base + IOAPIC_REGSEL, reg);
    return mmio_read32(base + IOAPIC_WIN);
}

static void ioapic_write(uint64_t base, uint32_t reg, uint32_t v)
{
    mmio_write32(base + IOAPIC_REGSEL, reg);
    mmio_write32(base + IOAPIC_WIN, v);
}

/*
 * Route `gsi` to `vector` on the BSP, masking every other pin of every IOAPIC
 * (nothing else is wanted; a stray level-triggered source would storm).
 * Returns false when no IOAPIC covers the GSI.
 */
static bool ioapic_route(uint32_t gsi, uint32_t flags_lo, uint8_t vector)
{
    bool routed = false;
    uint32_t dest = lapic_id();
    for (int i = 0; i < acpi.nr_ioapics; i++) {
        uint64_t base = acpi.ioapics[i].addr;
        if (!base || base >= (4ULL << 30))
            continue;
        uint32_t pins = ((ioapic_read(base, 0x01) >> 16) & 0xff) + 1;
        for (uint32_t pin = 0; pin < pins; pin++) {
            if (acpi.ioapics[i].gsi_base + pin == gsi) {
                ioapic_write(base, IOREDTBL(pin), RTE_MASKED);
                ioapic_write(base, IOREDTBL(pin) + 1, dest << 24);
                ioapic_write(base, IOREDTBL(pin), flags_lo | vector);   /* fixed, physical */
                routed = true;
            } else {
                ioapic_write(base, IOREDTBL(pin), RTE_MASKED);
            }
        }
    }
    return routed;
}

/* ---- setup ---- */

static void idt_fill(void)
{
    if (idt_ready)
        return;
    idt_set_gate(2, (uint64_t)(uintptr_t)nmi_entry);
    for (unsigned v = 32; v < 256; v++)
        idt_set_gate(v, (uint64_t)(uintptr_t)irq_default_entry);
    idt_set_gate(SCI_VECTOR, (uint64_t)(uintptr_t)irq_sci_entry);
    idt_set_gate(SPURIOUS_VECTOR, (uint64_t)(uintptr_t)irq_spurious_entry);
    idt_load_all();
    idt_ready = true;
}

static void lapic_setup(void)
{
    lapic_refresh();
    unsigned nmi_lint = acpi.lapic_nmi_found ? acpi.lapic_nmi_lint : 1;
    /* Software enable first: while disabled, LVT mask bits cannot be cleared. */
    lapic_write(LAPIC_SVR, 0x100 | SPURIOUS_VECTOR);
    lapic_write(LAPIC_TPR, 0);
    lapic_write(LAPIC_LVT_TIMER, LVT_MASKED);
    lapic_write(LAPIC_LVT_ERROR, LVT_MASKED);
    /* LINT0 (the 8259's ExtINT under firmware's virtual-wire mode) masked;
     * the NMI pin unmasked, NMI delivery. */
    lapic_write(LAPIC_LVT_LINT0, nmi_lint == 0 ? LVT_NMI : (LVT_MASKED | LVT_EXTINT));
    lapic_write(LAPIC_LVT_LINT1, nmi_lint == 1 ? LVT_NMI : LVT_MASKED);
}

/* ACPI mode: SCI_EN set, else ask the firmware through SMI_CMD. */
static void acpi_mode_enable(void)
{
    uint16_t cnt = (uint16_t)acpi.pm1a_cnt;
    if (!cnt || (inw(cnt) & PM1_CNT_SCI_EN) || !acpi.smi_cmd || !acpi.acpi_enable)
        return;
    outb((uint16_t)acpi.smi_cmd, acpi.acpi_enable);
    timer_start_us(50000);
    while (!(inw(cnt) & PM1_CNT_SCI_EN) && !timer_expired())
        ;
}

/* Power button through the SCI; false when the platform has no fixed one. */
static bool sci_setup(void)
{
    if (!acpi.fadt || acpi.hw_reduced || !acpi.pm1a_evt || acpi.pm1_evt_len < 4 || !acpi.nr_ioapics)
        return false;
    uint16_t sts = (uint16_t)acpi.pm1a_evt;
    uint16_t en = (uint16_t)(acpi.pm1a_evt + acpi.pm1_evt_len / 2);

    acpi_mode_enable();
    /* Events off while the pin is routed, so an edge-triggered SCI sees the
     * rise. A PWRBTN_STS already set is kept: the button was pressed (a VMM
     * may set it before the guest enables the event) and is reported once
     * interrupts are on. */
    outw(en, (uint16_t)(inw(en) & ~PM1_PWRBTN));
    outw(sts, PM1_WAK);

    /* ISA IRQ -> GSI, trigger and polarity: the MADT override if any, else
     * identity, edge, active high (the ISA defaults). */
    uint32_t gsi = acpi.sci_int, lo = 0;
    for (int i = 0; i < acpi.nr_isos; i++) {
        if (acpi.isos[i].source != acpi.sci_int)
            continue;
        uint16_t f = acpi.isos[i].flags;
        gsi = acpi.isos[i].gsi;
        if ((f & 3) == 3)
            lo |= RTE_ACTIVE_LOW;
        if (((f >> 2) & 3) == 3)
            lo |= RTE_LEVEL;
        break;
    }
    if (!ioapic_route(gsi, lo, SCI_VECTOR))
        return false;
    outw(en, (uint16_t)(inw(en) | PM1_PWRBTN));
    return true;
}

COLD void irq_setup(void)
{
    idt_fill();
    outb(0x21, 0xff);                   /* 8259s fully masked (absent: no-op) */
    outb(0xa1, 0xff);
    outb(0x70, 0x0d);                   /* CMOS index with bit 7 clear: NMIs unmasked */
    lapic_setup();
    fixed_button = sci_setup();
    irq_armed = true;
}

/* ---- the idle loop ---- */

COLD void idle_run(void)
{
    if (!irq_armed)
        irq_setup();
    if (!fixed_button)
        kprintf("idle: no fixed power button\n");
    kprintf("idle: ready\n");
    uint32_t seen = nmi_count;
    for (;;) {
        idle_wait(seen);
        uint32_t n = nmi_count;
        if (n != seen) {
            seen = n;
            kprintf("nmi: count=%u\n", n);
        }
        if (pwrbtn_pressed) {
            kprintf("acpi: power button\n");
            return;
        }
    }
}
