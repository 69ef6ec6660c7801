/* PCI bus 0 enumeration: ECAM when MCFG gave one, else ports 0xCF8/0xCFC. */
#include "petrel.h"

static uint32_t cfg_read32(unsigned bus, unsigned dev, unsigned fn, unsigned off)
{
    if (acpi.ecam_base && bus >= acpi.ecam_bus_start && bus <= acpi.ecam_bus_end)
        return mmio_read32(acpi.ecam_base + ((uint64_t)bus << 20) + (dev << 15) + (fn << 12) + off);
    outl(0xCF8, 0x80000000u | (bus << 16) | (dev << 11) | (fn << 8) | (off & 0xfc));
    return inl(0xCFC);
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

void pci_scan(void)
{
    unsigned count = 0;
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
            uint32_t cls = cfg_read32(0, dev, fn, 0x08);
            kprintf("pci: 00:%02x.%u %04x:%04x class=%02x.%02x\n", dev, fn, id & 0xffff, id >> 16,
                    cls >> 24, (cls >> 16) & 0xff);
            count++;
        }
    }
    kprintf("pci: devices=%u\n", count);
}
