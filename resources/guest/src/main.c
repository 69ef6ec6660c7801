/* Petrel test guest: boot sequence. See ../README.md for the serial protocol. */
#include "petrel.h"

void kmain(uint32_t start_info);

void kmain(uint32_t start_info)
{
    uart_init();
    kputs("petrel-guest: hello\n");
    outb(PORT_PROGRESS, PROGRESS_HELLO);

    idt_init();
    timer_init();
    bootinfo_load(start_info);
    kprintf("cmdline: %s\n", boot.cmdline);

    char test[32];
    if (!cmdline_get(boot.cmdline, "petrel.test", test, sizeof(test)))
        memcpy(test, "boot", 5);

    bool ok = true;
    e820_report_and_map();
    if (!boot.usable_bytes)
        ok = false;
    if (!mem_probe())
        ok = false;

    acpi_init();
    if (!acpi.rsdp_found || !acpi.checksums_ok)
        ok = false;

    pci_scan();

    int expected = acpi.madt_cpus ? acpi.madt_cpus : 1;
    int online = smp_boot();
    kprintf("smp: online=%d expected=%d\n", online, expected);
    if (online != expected)
        ok = false;

    rtc_report();
    if (!scenario_run(test))
        ok = false;

    /* petrel.status=N reports N when every check passed: lets a harness check that the
     * guest's status reaches the VMM's exit status. */
    uint64_t status = ok ? 0 : 1;
    char buf[8];
    if (ok && cmdline_get(boot.cmdline, "petrel.status", buf, sizeof(buf))) {
        bool valid;
        status = parse_u64(buf, &valid);
        if (!valid || status > 255)
            panic("bad petrel.status=%s", buf);
    }
    finish((int)status);
}
