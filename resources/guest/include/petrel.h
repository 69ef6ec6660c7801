/* Petrel test guest: shared declarations. Freestanding, no libc. */
#ifndef PETREL_GUEST_H
#define PETREL_GUEST_H

#include <stdint.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdarg.h>

#define NORETURN __attribute__((noreturn))
#define COLD __attribute__((cold))    /* scenario-only code: optimised for size */
#define PRINTF(a, b) __attribute__((format(printf, a, b)))
#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Must match entry.S */
#define MAX_CPUS        256
#define AP_STACK_SHIFT  10          /* 1 KiB per AP stack */
#define HIGH_PD_PAGES   60          /* PDs for 4..64 GiB */
#define MAP_LIMIT       (64ULL << 30)

/* Debug ports understood by petrel (harmless elsewhere). */
#define PORT_PROGRESS   0x402
#define PORT_STATUS     0x403
#define PROGRESS_HELLO  0x01
#define PROGRESS_OFF    0x02

/* ---- port and memory-mapped I/O ---- */
static inline void outb(uint16_t port, uint8_t v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline void outw(uint16_t port, uint16_t v) { __asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(port)); }
static inline void outl(uint16_t port, uint32_t v) { __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port)); }
static inline uint8_t inb(uint16_t port) { uint8_t v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline uint16_t inw(uint16_t port) { uint16_t v; __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline uint32_t inl(uint16_t port) { uint32_t v; __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port)); return v; }

static inline uint8_t mmio_read8(uint64_t a) { return *(volatile uint8_t *)a; }
static inline uint16_t mmio_read16(uint64_t a) { return *(volatile uint16_t *)a; }
static inline uint32_t mmio_read32(uint64_t a) { return *(volatile uint32_t *)a; }
static inline void mmio_write8(uint64_t a, uint8_t v) { *(volatile uint8_t *)a = v; }
static inline void mmio_write16(uint64_t a, uint16_t v) { *(volatile uint16_t *)a = v; }
static inline void mmio_write32(uint64_t a, uint32_t v) { *(volatile uint32_t *)a = v; }

static inline uint64_t rdmsr(uint32_t msr)
{
    uint32_t lo, hi;
    __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
    return ((uint64_t)hi << 32) | lo;
}
static inline void wrmsr(uint32_t msr, uint64_t v)
{
    __asm__ volatile("wrmsr" : : "c"(msr), "a"((uint32_t)v), "d"((uint32_t)(v >> 32)));
}
static inline uint64_t rdtsc(void)
{
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
}
static inline void barrier(void) { __asm__ volatile("" ::: "memory"); }
static inline NORETURN void halt_forever(void)
{
    for (;;)
        __asm__ volatile("cli; hlt");
}

/* ---- string.c ---- */
void *memcpy(void *d, const void *s, size_t n);
void *memset(void *d, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
const void *mem_find4(const void *hay, size_t n, const char needle[4], unsigned key);
uint8_t byte_sum(const void *p, size_t n);
bool str_starts(const char *s, const char *prefix);
bool mem_eq64(const void *a, const void *b, size_t words);  /* repe cmpsq */

/* ---- serial.c / fmt.c ---- */
void uart_init(void);
void uart_write(const char *s, size_t n);
void kputs(const char *s);             /* writes s as-is */
int kvsnprintf(char *buf, size_t size, const char *fmt, va_list ap);
int ksnprintf(char *buf, size_t size, const char *fmt, ...) PRINTF(3, 4);
void kprintf(const char *fmt, ...) PRINTF(1, 2);

/* ---- boot info (e820.c) ---- */
#define E820_MAX 128
struct e820_entry {
    uint64_t addr;
    uint64_t size;
    uint32_t type;
    uint32_t reserved;
};
struct boot_info {
    char cmdline[1024];
    uint64_t rsdp_paddr;
    uint32_t nr_e820;
    struct e820_entry e820[E820_MAX];
    uint64_t usable_bytes;
    uint64_t usable_top;       /* exclusive end of highest usable region */
    uint64_t mapped_limit;     /* identity map covers [0, mapped_limit) */
};
extern struct boot_info boot;
void bootinfo_load(uint32_t start_info_paddr);
void e820_report_and_map(void);
bool mem_probe(void);
bool e820_page_usable(uint64_t addr);
void *ram_after_image(uint64_t len);    /* 2 MiB aligned, in one usable region, mapped; or NULL */

/* ---- cmdline.c ---- */
bool cmdline_get(const char *cmdline, const char *key, char *out, size_t outlen);
uint64_t parse_u64(const char *s, bool *ok);
bool cmdline_u64(const char *key, uint64_t *val);   /* false: absent; panics on a bad number */

/* ---- acpi.c ---- */
struct gas {
    uint8_t space;      /* 0 = memory, 1 = I/O */
    uint8_t bit_width;
    uint8_t bit_offset;
    uint8_t access_size;
    uint64_t addr;
};
#define ACPI_MAX_IOAPICS 8
#define ACPI_MAX_ISOS    16
struct acpi_info {
    bool rsdp_found;
    bool checksums_ok;
    uint64_t rsdp;
    uint64_t sdt;
    bool use_xsdt;
    uint64_t fadt, madt, mcfg, dsdt;
    uint32_t pm1a_cnt, pm1b_cnt;
    bool hw_reduced;
    bool reset_supported;
    struct gas reset_reg;
    uint8_t reset_value;
    struct gas sleep_ctl;
    int s5_typ;                 /* -1: not found */
    int madt_cpus;
    uint32_t apic_ids[MAX_CPUS];
    uint64_t lapic_base;
    uint64_t ecam_base;
    uint8_t ecam_bus_start, ecam_bus_end;
    /* for the idle scenarios (irq.c, suspend.c) */
    uint64_t facs;              /* X_FIRMWARE_CTRL, else FIRMWARE_CTRL */
    uint16_t sci_int;
    uint32_t smi_cmd;
    uint8_t acpi_enable;
    uint32_t pm1a_evt;          /* PM1a_EVT_BLK (I/O port), 0: none */
    uint8_t pm1_evt_len;
    int nr_ioapics;
    struct { uint32_t addr, gsi_base; } ioapics[ACPI_MAX_IOAPICS];
    int nr_isos;
    struct { uint8_t source; uint16_t flags; uint32_t gsi; } isos[ACPI_MAX_ISOS];
    bool lapic_nmi_found;
    uint8_t lapic_nmi_lint;     /* LINT pin of the first MADT local APIC NMI entry */
};
extern struct acpi_info acpi;
void acpi_init(void);
void gas_write8(const struct gas *g, uint8_t v);
bool acpi_dsdt_ecam(uint64_t *base, uint64_t *size);  /* PNP0C02 QWord memory in the DSDT */
int acpi_sleep_typ(const char *name);   /* "_S3_": SLP_TYPa from the DSDT, or -1 */
void acpi_sleep_write(int typ);         /* SLP_TYP | SLP_EN (power.c) */

/* ---- pci.c ---- */
void pci_scan(void);
uint32_t pci_io_read32(unsigned dev, unsigned fn, unsigned off);    /* bus 0, ports */
void pci_io_write32(unsigned dev, unsigned fn, unsigned off, uint32_t v);
struct pci_bar {
    uint64_t addr, size;            /* size 0: no BAR */
    bool io, is64, assigned;
};
struct pci_dev {
    uint8_t dev, fn;
    uint16_t vendor, device;
    struct pci_bar bar[6];          /* a 64-bit BAR fills its slot; the next is empty */
};
bool pci_find(uint16_t vendor, uint16_t dev_a, uint16_t dev_b, struct pci_dev *out);
bool pci_enable(struct pci_dev *d);  /* size/assign BARs, memory space + bus master */
unsigned pci_find_cap(const struct pci_dev *d, uint8_t cap_id, unsigned from);
uint32_t pci_read32(const struct pci_dev *d, unsigned off);
void pci_write32(const struct pci_dev *d, unsigned off, uint32_t v);
uint16_t pci_read16(const struct pci_dev *d, unsigned off);
void pci_write16(const struct pci_dev *d, unsigned off, uint16_t v);

/* ---- virtio.c ---- */
struct virtq {
    uint16_t size;                  /* entries in use (<= VQ_MAX) */
    uint16_t avail_idx, used_seen;  /* next free avail slot; next used entry to pop */
    struct vq_desc { uint64_t addr; uint32_t len; uint16_t flags, next; } *desc;
    volatile uint16_t *avail;       /* flags, idx, ring[] */
    volatile uint8_t *used;         /* flags, idx, {u32 id, u32 len}[] */
    uint64_t notify;                /* MMIO address of this queue's notify register */
    uint16_t index;                 /* queue number: written to notify */
};
#define VIRTIO_MAX_QUEUES 3         /* virtio-net: rx 0, tx 1, ctrl 2 */
struct virtio_dev {
    struct pci_dev pci;
    uint64_t common, notify_base, isr, devcfg;
    uint32_t notify_mult;
    uint64_t features;              /* negotiated */
    bool msix;                      /* completions by MSI-X interrupt */
    bool config_irq;                /* config changes on their own MSI-X entry (1) */
    uint64_t timeout_us;            /* virtio_wait(); 0: 30 s */
    uint64_t (*feature_deps)(uint64_t); /* optional: drops features whose dependencies are missing */
    unsigned nq;                    /* queues set up: q[0..nq-1] */
    struct virtq q[VIRTIO_MAX_QUEUES];
};
#define VQ_MAX          256
#define DESC_F_NEXT     1
#define DESC_F_WRITE    2
extern volatile uint32_t virtio_irq_count;         /* queue vector (and config when shared) */
extern volatile uint32_t virtio_config_irq_count;  /* config vector, when config_irq */
/* Reset, features (offered & (wanted | VERSION_1)), FEATURES_OK, MSI-X
 * (config_entry1: configuration changes on MSI-X entry 1 when the table has
 * two entries); then virtio_queue() per queue, then virtio_ready()
 * (DRIVER_OK, the virtio: line). Each prints a virtio: line when it fails. */
bool virtio_begin(struct virtio_dev *v, uint64_t wanted_features, bool config_entry1);
bool virtio_queue(struct virtio_dev *v, unsigned idx, unsigned qsize);   /* min(device max, qsize) entries */
bool virtio_ready(struct virtio_dev *v);
/* All three for a device with one queue (queue 0). */
bool virtio_init(struct virtio_dev *v, uint64_t wanted_features, unsigned qsize, bool config_entry1);
/* Asynchronous requests: write chains, post their heads, kick once, pop completions. */
void virtq_chain(struct virtq *q, unsigned first, int n, const uint64_t *addr, const uint32_t *len,
                 unsigned write_mask);     /* descriptors first..first+n-1; bit i: device writes */
static inline void virtq_post(struct virtq *q, uint16_t head)
{
    q->avail[2 + (q->avail_idx & (q->size - 1))] = head;     /* sizes are powers of two */
    q->avail_idx++;
}
bool virtq_kick(struct virtq *q);          /* publish posted heads; notify unless suppressed (true: notified) */
static inline uint16_t virtq_used_idx(const struct virtq *q) { return *(volatile uint16_t *)(q->used + 2); }
static inline int virtq_pop_len(struct virtq *q, uint32_t *len)   /* head of the next completed chain, -1: none */
{
    if (virtq_used_idx(q) == q->used_seen)
        return -1;
    barrier();
    const volatile uint32_t *e = (const volatile uint32_t *)(const volatile void *)(q->used + 4 + 8 * (q->used_seen & (q->size - 1)));
    uint32_t id = e[0];
    *len = e[1];
    q->used_seen++;
    return (int)id;
}
static inline int virtq_pop(struct virtq *q)
{
    uint32_t len;
    return virtq_pop_len(q, &len);
}
/* Sleep (MSI-X) or poll until q's used ring has an entry to pop (and, with
 * want_irq, an interrupt came after irqs0): false after timeout_us of no
 * progress and a final look at the used ring. With MSI-X the watchdog must run. */
bool virtio_wait(struct virtio_dev *v, struct virtq *q, bool want_irq, uint32_t irqs0);
void virtio_watchdog(struct virtio_dev *v, bool on);   /* periodic LAPIC timer while halted */
void virtio_sleep(void);                               /* sti; hlt; cli */
/* Synchronous: chain at descriptor 0 of q, notify, wait for it (and its
 * interrupt); returns false on timeout. */
bool virtio_submit(struct virtio_dev *v, struct virtq *q, int n, const uint64_t *addr, const uint32_t *len,
                   unsigned write_mask);
uint8_t virtio_config_generation(struct virtio_dev *v);
uint8_t virtio_isr(struct virtio_dev *v);              /* read (and clear) the ISR status */
void virtio_quiesce(struct virtio_dev *v);

/* ---- virtio_blk.c, virtio_blk_bench.c ---- */
#define BLK_T_IN        0
#define BLK_T_OUT       1
#define BLK_T_FLUSH     4
#define BLK_T_GET_ID    8
struct blk_hdr {
    uint32_t type, reserved;
    uint64_t sector;
    uint8_t status;                 /* written by the device */
} __attribute__((aligned(16)));
extern struct virtio_dev vblk;
struct blk_geom { uint64_t capacity; uint32_t bsize; bool ro; };
/* Find, initialise, GET_ID, print "blk: capacity=..."; false after a failure line. */
bool blk_open(unsigned qsize, bool config_entry1, struct blk_geom *g);
uint64_t blk_read_capacity(void);   /* generation-consistent */
int blk_req(uint32_t type, uint64_t sector, void *data, uint32_t len);  /* status, -1: timeout */
void blk_set_timeout(void);         /* petrel.blk.timeout */
bool blk_run(void);
bool blkbench_run(void);
bool blkresize_run(void);

/* ---- memfill.c ---- */
NORETURN void memfill_run(void);  /* ticks until the VMM ends the guest */

/* ---- virtio_balloon.c ---- */
bool balloon_run(void);           /* follows the balloon target until the VMM ends the guest */

/* ---- net_scenarios.c, net_blast.c (see net.h for the driver and the stack) ---- */
bool netping_run(void);
bool netlink_run(void);
bool netrx_run(void);
bool netdhcp_run(void);
bool netblast_run(void);

/* ---- timer.c ---- */
void timer_init(void);
void timer_start_us(uint64_t us);   /* one-shot, polled (see timer.c) */
bool timer_expired(void);
void delay_us(uint32_t us);
uint64_t timer_calibrate_tsc(const char **source);  /* TSC kHz; source "pit", "cpuid", "guess" */
uint64_t tsc_to_us(uint64_t ticks);

/* ---- smp.c ---- */
int smp_boot(void);                 /* returns CPUs online incl. BSP */
uint32_t lapic_id(void);
void lapic_refresh(void);           /* re-read IA32_APIC_BASE (x2APIC mode, base) */
uint32_t lapic_read(uint32_t reg);
void lapic_write(uint32_t reg, uint32_t v);
void lapic_eoi(void);
uint64_t low_page(void);            /* a usable 4 KiB page below 1 MiB, 0: none */

/* ---- rtc.c ---- */
bool cmos_present(void);
uint8_t cmos_read(uint8_t reg);
void cmos_write(uint8_t reg, uint8_t v);
void rtc_report(void);
void rtc_set(unsigned year, unsigned mon, unsigned day, unsigned hour, unsigned min, unsigned sec);

/* ---- power.c ---- */
NORETURN void poweroff(void);
void reset_system(const char *method);
NORETURN void finish(int status);
NORETURN void panic(const char *fmt, ...) PRINTF(1, 2);

/* ---- trap.c ---- */
void idt_init(void);
void idt_load(void);
void idt_set_gate(unsigned vec, uint64_t addr);
void idt_load_all(void);

/* ---- irq.c ---- */
void idle_run(void);                /* returns when the power button was pressed */
void irq_setup(void);               /* LAPIC, IOAPIC, SCI, PM1 enable (again after S3) */
extern bool irq_armed;              /* irq_setup() done since boot or the last S3 */

/* ---- suspend.c ---- */
void suspend_run(void);

/* ---- scenarios.c ---- */
bool scenario_run(const char *name);     /* false: the scenario failed (status 1) */

/* ---- linker / entry.S symbols ---- */
extern char __kernel_start[], __kernel_end[], __data_start[], __bss_end[];
extern char boot_stack[], boot_stack_top[];
extern uint64_t pml4[], pdpt[], high_pds[];
extern char ap_tramp_start[], ap_tramp_end[], ap_tramp_ljmp_end[];
extern char resume_entry32[];
extern char nmi_entry[], irq_default_entry[], irq_spurious_entry[], irq_sci_entry[], irq_virtio_entry[],
    irq_virtio_config_entry[];
extern volatile uint32_t nmi_count;
void idle_wait(uint32_t seen_nmis);
int s3_save(void) __attribute__((returns_twice));
extern volatile uint32_t ap_ticket;
extern const uint64_t exc_stubs[32];
extern uint8_t idt_table[];

#endif
