/* ACPI: RSDP, RSDT/XSDT, FADT, MADT, MCFG, DSDT \_S5_ (and \_S3_ on demand). */
#include "petrel.h"

struct acpi_info acpi;

struct sdt_header {
    char sig[4];
    uint32_t length;
    uint8_t revision;
    uint8_t checksum;
    char oem_id[6];
    char oem_table_id[8];
    uint32_t oem_revision;
    uint32_t creator_id;
    uint32_t creator_revision;
} __attribute__((packed));

/* Unaligned little-endian loads: one mov each (memcpy would be a call and a
 * `rep movsb` here, as the kernel is built with -fno-builtin). */
struct __attribute__((packed, may_alias)) un16 { uint16_t v; };
struct __attribute__((packed, may_alias)) un32 { uint32_t v; };
struct __attribute__((packed, may_alias)) un64 { uint64_t v; };
static inline uint16_t rd16(const void *p) { return ((const struct un16 *)p)->v; }
static inline uint32_t rd32(const void *p) { return ((const struct un32 *)p)->v; }
static inline uint64_t rd64(const void *p) { return ((const struct un64 *)p)->v; }

static uint64_t find_rsdp(void)
{
    if (boot.rsdp_paddr)
        return boot.rsdp_paddr;
    /* 16-byte aligned scan of the BIOS area */
    for (uint64_t a = 0xE0000; a < 0x100000; a += 16) {
        const volatile uint64_t *p = (const volatile uint64_t *)(uintptr_t)a;
        if (*p == 0x2052545020445352ULL) /* "RSD PTR " */
            return a;
    }
    return 0;
}

/* Header sanity only: used for the DSDT, whose full checksum would cost
 * milliseconds when every guest instruction is emulated. */
static bool table_header_ok(uint64_t addr, const char *sig)
{
    const struct sdt_header *h = (const void *)(uintptr_t)addr;
    if (!addr || addr + 36 > boot.mapped_limit)
        return false;
    return !memcmp(h->sig, sig, 4) && h->length >= 36 && h->length < (16u << 20);
}

static bool table_ok(uint64_t addr)
{
    const struct sdt_header *h = (const void *)(uintptr_t)addr;
    if (!addr || addr + 36 > boot.mapped_limit)
        return false;
    if (h->length < 36 || h->length > (16u << 20)) {
        kprintf("acpi: bad length for table at 0x%lx\n", addr);
        return false;
    }
    if (byte_sum(h, h->length) != 0) {
        kprintf("acpi: bad checksum for table at 0x%lx\n", addr);
        return false;
    }
    return true;
}

static void parse_gas(struct gas *g, const uint8_t *p)
{
    g->space = p[0];
    g->bit_width = p[1];
    g->bit_offset = p[2];
    g->access_size = p[3];
    g->addr = rd64(p + 4);
}

void gas_write8(const struct gas *g, uint8_t v)
{
    if (!g->addr)
        return;
    if (g->space == 1)
        outb((uint16_t)g->addr, v);
    else if (g->space == 0)
        mmio_write8(g->addr, v);
}

static void parse_fadt(const uint8_t *f, uint32_t len)
{
    acpi.facs = len >= 40 ? rd32(f + 36) : 0;
    if (len >= 140 && rd64(f + 132))
        acpi.facs = rd64(f + 132);                  /* X_FIRMWARE_CTRL */
    acpi.sci_int = len >= 48 ? rd16(f + 46) : 0;
    acpi.smi_cmd = len >= 52 ? rd32(f + 48) : 0;
    acpi.acpi_enable = len >= 53 ? f[52] : 0;
    acpi.pm1a_evt = len >= 60 ? rd32(f + 56) : 0;
    acpi.pm1_evt_len = len >= 89 ? f[88] : 0;
    if (!acpi.pm1a_evt && len >= 160) {
        struct gas x;
        parse_gas(&x, f + 148);                     /* X_PM1a_EVT_BLK */
        if (x.space == 1) {
            acpi.pm1a_evt = (uint32_t)x.addr;
            if (!acpi.pm1_evt_len)
                acpi.pm1_evt_len = x.bit_width / 8;
        }
    }
    acpi.pm1a_cnt = len >= 68 ? rd32(f + 64) : 0;
    acpi.pm1b_cnt = len >= 72 ? rd32(f + 68) : 0;
    uint32_t flags = len >= 116 ? rd32(f + 112) : 0;
    acpi.reset_supported = (flags >> 10) & 1;
    acpi.hw_reduced = (flags >> 20) & 1;
    if (len >= 129) {
        parse_gas(&acpi.reset_reg, f + 116);
        acpi.reset_value = f[128];
    }
    uint64_t dsdt = len >= 44 ? rd32(f + 40) : 0;
    if (len >= 148 && rd64(f + 140))
        dsdt = rd64(f + 140);
    acpi.dsdt = dsdt;
    if (!acpi.pm1a_cnt && len >= 184) {
        struct gas x;
        parse_gas(&x, f + 172);
        if (x.space == 1)
            acpi.pm1a_cnt = (uint32_t)x.addr;
    }
    if (len >= 256)
        parse_gas(&acpi.sleep_ctl, f + 244);
}

static void parse_madt(const uint8_t *m, uint32_t len)
{
    acpi.lapic_base = rd32(m + 36);
    for (uint32_t off = 44; off + 2 <= len;) {
        uint8_t type = m[off], elen = m[off + 1];
        if (elen < 2 || off + elen > len)
            break;
        const uint8_t *e = m + off;
        if (type == 0 && elen >= 8) {               /* processor local APIC */
            if ((rd32(e + 4) & 1) && acpi.madt_cpus < MAX_CPUS)
                acpi.apic_ids[acpi.madt_cpus++] = e[3];
        } else if (type == 9 && elen >= 16) {       /* processor local x2APIC */
            if ((rd32(e + 8) & 1) && acpi.madt_cpus < MAX_CPUS)
                acpi.apic_ids[acpi.madt_cpus++] = rd32(e + 4);
        } else if (type == 5 && elen >= 12) {       /* LAPIC address override */
            acpi.lapic_base = rd64(e + 4);
        } else if (type == 1 && elen >= 12) {       /* I/O APIC */
            if (acpi.nr_ioapics < ACPI_MAX_IOAPICS) {
                acpi.ioapics[acpi.nr_ioapics].addr = rd32(e + 4);
                acpi.ioapics[acpi.nr_ioapics].gsi_base = rd32(e + 8);
                acpi.nr_ioapics++;
            }
        } else if (type == 2 && elen >= 10) {       /* interrupt source override */
            if (acpi.nr_isos < ACPI_MAX_ISOS && e[2] == 0) {
                acpi.isos[acpi.nr_isos].source = e[3];
                acpi.isos[acpi.nr_isos].gsi = rd32(e + 4);
                acpi.isos[acpi.nr_isos].flags = rd16(e + 8);
                acpi.nr_isos++;
            }
        } else if (type == 4 && elen >= 6) {        /* local APIC NMI */
            if (!acpi.lapic_nmi_found && e[5] <= 1) {
                acpi.lapic_nmi_found = true;
                acpi.lapic_nmi_lint = e[5];
            }
        }
        off += elen;
    }
}

static void parse_mcfg(const uint8_t *m, uint32_t len)
{
    if (len < 44 + 16)
        return;
    const uint8_t *e = m + 44;
    if (e[8] | e[9])            /* only PCI segment 0 */
        return;
    acpi.ecam_base = rd64(e);
    acpi.ecam_bus_start = e[10];
    acpi.ecam_bus_end = e[11];
}

/* Decode one AML integer: BytePrefix/WordPrefix/ZeroOp/OneOp. */
static int aml_small_int(const uint8_t *p, const uint8_t *end)
{
    if (p >= end)
        return -1;
    switch (p[0]) {
    case 0x00: return 0;
    case 0x01: return 1;
    case 0x0A: return p + 1 < end ? p[1] : -1;
    case 0x0B: return p + 2 < end ? (p[1] | (p[2] << 8)) : -1;
    default: return -1;
    }
}

/* SLP_TYPa of the \_Sx_ package named `name` ("_S5_", "_S3_"), or -1. */
static int find_sleep_typ(uint64_t dsdt, const char *name)
{
    const struct sdt_header *h = (const void *)(uintptr_t)dsdt;
    const uint8_t *base = (const uint8_t *)h, *end = base + h->length;
    const uint8_t *p = base + 36;
    while (p < end) {
        const uint8_t *hit = mem_find4(p, (size_t)(end - p), name, 2);
        if (!hit)
            return -1;
        const uint8_t *q = hit + 4;
        if (q < end && *q == 0x12) {                  /* PackageOp */
            q++;
            if (q >= end)
                return -1;
            q += 1 + (*q >> 6);                       /* PkgLength */
            q++;                                      /* NumElements */
            int v = aml_small_int(q, end);
            if (v >= 0)
                return v;
        }
        p = hit + 1;
    }
    return -1;
}

static void add_sig(char *sigs, size_t *slen, size_t cap, const char *sig)
{
    if (*slen + 6 >= cap)
        return;
    if (*slen)
        sigs[(*slen)++] = ',';
    for (int i = 0; i < 4; i++) {
        char c = sig[i];
        sigs[(*slen)++] = (c >= 0x20 && c < 0x7f && c != ',') ? c : '?';
    }
    sigs[*slen] = '\0';
}

/*
 * No MCFG (QEMU microvm with pcie=on): the ECAM as QEMU's GPEX host bridge
 * describes it in the DSDT, a PNP0C02 device (string _HID) whose _CRS holds a
 * QWord memory descriptor (tag 0x8A). False when there is none.
 */
COLD bool acpi_dsdt_ecam(uint64_t *base, uint64_t *size)
{
    if (!acpi.dsdt || !table_header_ok(acpi.dsdt, "DSDT"))
        return false;
    const struct sdt_header *h = (const void *)(uintptr_t)acpi.dsdt;
    const uint8_t *p = (const uint8_t *)h + 36, *end = (const uint8_t *)h + h->length;
    while (p < end) {
        const uint8_t *hit = mem_find4(p, (size_t)(end - p), "0C02", 1);
        if (!hit)
            return false;
        p = hit + 1;
        if (hit - 3 < (const uint8_t *)h || memcmp(hit - 3, "PNP", 3))
            continue;
        for (const uint8_t *q = hit + 4; q + 46 <= end && q < hit + 160; q++) {
            if (q[0] != 0x8A || q[1] != 0x2B || q[2] != 0 || q[3] != 0)
                continue;
            uint64_t b, l;
            memcpy(&b, q + 14, 8);
            memcpy(&l, q + 38, 8);
            if (!b || (b & 0xfffff) || !l || (l & 0xfffff) || b >= (4ULL << 30))
                continue;
            *base = b;
            *size = l;
            return true;
        }
    }
    return false;
}

COLD int acpi_sleep_typ(const char *name)
{
    if (!acpi.dsdt || !table_header_ok(acpi.dsdt, "DSDT"))
        return -1;
    return find_sleep_typ(acpi.dsdt, name);
}

void acpi_init(void)
{
    acpi.s5_typ = -1;
    acpi.checksums_ok = true;
    uint64_t rsdp = find_rsdp();
    const uint8_t *r = (const uint8_t *)(uintptr_t)rsdp;
    if (!rsdp || rsdp >= boot.mapped_limit || memcmp(r, "RSD PTR ", 8) != 0) {
        kprintf("acpi: rsdp not found\n");
        acpi.checksums_ok = false;
        return;
    }
    acpi.rsdp = rsdp;
    acpi.rsdp_found = true;
    if (byte_sum(r, 20) != 0)
        acpi.checksums_ok = false;
    uint64_t rsdt = rd32(r + 16), xsdt = 0;
    if (r[15] >= 2) {
        uint32_t len = rd32(r + 20);
        if (len < 36 || byte_sum(r, len) != 0)
            acpi.checksums_ok = false;
        xsdt = rd64(r + 24);
    }
    acpi.use_xsdt = xsdt != 0;
    acpi.sdt = xsdt ? xsdt : rsdt;
    if (!table_ok(acpi.sdt)) {
        acpi.checksums_ok = false;
        kprintf("acpi: rsdp=0x%lx %s=0x%lx tables=\n", rsdp, xsdt ? "xsdt" : "rsdt", acpi.sdt);
        return;
    }

    char sigs[512];
    size_t slen = 0;
    sigs[0] = '\0';
    const struct sdt_header *sdt = (const void *)(uintptr_t)acpi.sdt;
    unsigned esz = xsdt ? 8 : 4;
    unsigned n = (sdt->length - 36) / esz;
    const uint8_t *ents = (const uint8_t *)sdt + 36;
    for (unsigned i = 0; i < n; i++) {
        uint64_t a = xsdt ? rd64(ents + i * 8) : rd32(ents + i * 4);
        if (!table_ok(a)) {
            acpi.checksums_ok = false;
            continue;
        }
        const struct sdt_header *h = (const void *)(uintptr_t)a;
        add_sig(sigs, &slen, sizeof(sigs), h->sig);
        if (!memcmp(h->sig, "FACP", 4) && !acpi.fadt) {
            acpi.fadt = a;
            parse_fadt((const uint8_t *)h, h->length);
            if (acpi.dsdt) {
                if (table_header_ok(acpi.dsdt, "DSDT")) {
                    add_sig(sigs, &slen, sizeof(sigs), "DSDT");
                    acpi.s5_typ = find_sleep_typ(acpi.dsdt, "_S5_");
                } else {
                    acpi.checksums_ok = false;
                }
            }
        } else if (!memcmp(h->sig, "APIC", 4) && !acpi.madt) {
            acpi.madt = a;
            parse_madt((const uint8_t *)h, h->length);
        } else if (!memcmp(h->sig, "MCFG", 4) && !acpi.mcfg) {
            acpi.mcfg = a;
            parse_mcfg((const uint8_t *)h, h->length);
        }
    }

    kprintf("acpi: rsdp=0x%lx %s=0x%lx tables=%s\n", rsdp, xsdt ? "xsdt" : "rsdt", acpi.sdt, sigs);
    kprintf("acpi: madt-cpus=%d\n", acpi.madt_cpus);
    kprintf("acpi: pm1a_cnt=0x%x reset=0x%lx/0x%x hw_reduced=%d\n", acpi.pm1a_cnt,
            acpi.reset_reg.addr, acpi.reset_value, acpi.hw_reduced ? 1 : 0);
    if (acpi.hw_reduced)
        kprintf("acpi: sleep_ctl=0x%lx space=%s reset_space=%s\n", acpi.sleep_ctl.addr,
                acpi.sleep_ctl.space == 1 ? "io" : "mem", acpi.reset_reg.space == 1 ? "io" : "mem");
    if (acpi.s5_typ >= 0)
        kprintf("acpi: s5=%d\n", acpi.s5_typ);
    else
        kprintf("acpi: s5=none\n");
    if (acpi.mcfg && acpi.ecam_base)
        kprintf("acpi: mcfg=0x%lx buses=%u-%u\n", acpi.ecam_base, acpi.ecam_bus_start, acpi.ecam_bus_end);
}
