/* Final status, ACPI S5 power-off, resets, panic. */
#include "petrel.h"

static volatile int in_finish;

/* Enter sleep state `typ` (SLP_TYP; negative: the S5 default of the FADT
 * kind): SLEEP_CONTROL_REG on a hardware-reduced FADT, else PM1a_CNT (and
 * PM1b_CNT), keeping the other PM1_CNT bits (SCI_EN). */
void acpi_sleep_write(int typ)
{
    if (acpi.hw_reduced && acpi.sleep_ctl.addr) {
        if (typ < 0)
            typ = 5;
        gas_write8(&acpi.sleep_ctl, (uint8_t)(((typ & 7) << 2) | 0x20));   /* SLP_TYP | SLP_EN */
    } else if (acpi.pm1a_cnt) {
        if (typ < 0)
            typ = 0;
        uint16_t bits = (uint16_t)(((typ & 7) << 10) | (1u << 13));        /* SLP_TYP | SLP_EN */
        uint16_t port = (uint16_t)acpi.pm1a_cnt;
        outw(port, (uint16_t)((inw(port) & ~0x1c00u) | bits));
        if (acpi.pm1b_cnt) {
            port = (uint16_t)acpi.pm1b_cnt;
            outw(port, (uint16_t)((inw(port) & ~0x1c00u) | bits));
        }
    }
}

NORETURN void poweroff(void)
{
    kprintf("poweroff: acpi\n");
    acpi_sleep_write(acpi.s5_typ);
    /* A VMM stops the VM asynchronously: give it time before giving up. */
    delay_us(5000000);
    kprintf("poweroff: FAILED\n");
    halt_forever();
}

void reset_system(const char *method)
{
    if (!memcmp(method, "kbd", 4)) {
        outb(0x64, 0xFE);
    } else if (!memcmp(method, "cf9", 4)) {
        outb(0xCF9, 0x06);
    } else if (!memcmp(method, "acpi", 5)) {
        if (acpi.reset_reg.addr && (acpi.reset_reg.space == 0 || acpi.reset_reg.space == 1))
            gas_write8(&acpi.reset_reg, acpi.reset_value);
        else
            kprintf("reboot: no usable FADT reset register\n");
    }
    delay_us(5000000);
}

NORETURN void finish(int status)
{
    if (in_finish++) {
        kprintf("poweroff: FAILED\n");
        halt_forever();
    }
    kprintf("status: %d\n", status);
    outb(PORT_STATUS, (uint8_t)status);
    outb(PORT_PROGRESS, PROGRESS_OFF);
    poweroff();
}

NORETURN void panic(const char *fmt, ...)
{
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    kvsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    kprintf("panic: %s\n", buf);
    finish(1);
}
