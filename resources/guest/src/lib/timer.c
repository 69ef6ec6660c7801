/*
 * Timeouts and short delays.
 *
 * Primary time base: PIT channel 2 as a free-running counter (mode 2, reload
 * 65536), read back with latch commands; elapsed ticks are accumulated modulo
 * 2^16 on every poll, so it needs no port 0x61 (absent on QEMU microvm) and no
 * calibration. Without a PIT (the counter does not move), fall back to the TSC
 * with the frequency from CPUID leaf 0x40000010, 0x15 or 0x16, or a 3 GHz guess.
 *
 * A timeout only advances while it is polled, by at most one PIT period
 * (65536 ticks, 55 ms) or, on the TSC, 50 ms per poll: a VM paused by its VMM
 * for seconds (the in-kernel PIT and the TSC keep running) does not see a
 * timeout fire on the first poll after it resumes.
 *
 * Elapsed time over seconds (blkbench): the TSC, its frequency measured
 * against the PIT once (timer_calibrate_tsc).
 */
#include "petrel.h"

#define PIT_HZ 1193182u

static bool use_pit;
static uint64_t tsc_khz = 3000000;
static const char *tsc_source = "guess";
static uint64_t deadline;   /* PIT or TSC ticks */
static uint64_t elapsed;
static uint16_t last;
static uint64_t last_tsc;

#define TSC_STEP_MAX_MS 50

static uint64_t cpuid_tsc_khz(void)
{
    uint32_t a, b, c, d;
    /* hypervisor timing leaf (KVM/VMware convention): EAX = TSC kHz */
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(1), "c"(0));
    if (c & (1u << 31)) {
        __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(0x40000000), "c"(0));
        if (a >= 0x40000010 && a < 0x40010000) {
            __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(0x40000010), "c"(0));
            if (a)
                return a;
        }
    }
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(0), "c"(0));
    uint32_t max = a;
    if (max >= 0x15) {
        __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(0x15), "c"(0));
        if (a && b && c)
            return (uint64_t)c * b / a / 1000;
    }
    if (max >= 0x16) {
        __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(0x16), "c"(0));
        if (a & 0xffff)
            return (uint64_t)(a & 0xffff) * 1000;
    }
    return 3000000;
}

static uint16_t pit_read(void)
{
    outb(0x43, 0x80);                   /* latch channel 2 */
    uint8_t lo = inb(0x42);
    uint8_t hi = inb(0x42);
    return (uint16_t)(lo | (hi << 8));
}

void timer_init(void)
{
    tsc_khz = cpuid_tsc_khz();
    if (tsc_khz != 3000000)
        tsc_source = "cpuid";
    outb(0x61, (uint8_t)((inb(0x61) & 0xfc) | 0x01));  /* gate 2 on, speaker off */
    outb(0x43, 0xb4);                   /* ch2, lo/hi, mode 2, binary */
    outb(0x42, 0x00);                   /* reload 65536 */
    outb(0x42, 0x00);
    uint16_t a = pit_read();
    uint16_t b = pit_read();            /* ~tens of ticks later */
    use_pit = a != b && !(a == 0xffff && b == 0xffff);
}

void timer_start_us(uint64_t us)
{
    elapsed = 0;
    if (use_pit) {
        deadline = us * PIT_HZ / 1000000;
        last = pit_read();
    } else {
        deadline = tsc_khz * us / 1000;
        last_tsc = rdtsc();
    }
}

bool timer_expired(void)
{
    if (use_pit) {
        uint16_t now = pit_read();
        elapsed += (uint16_t)(last - now);  /* counts down; wraps mod 2^16 */
        last = now;
    } else {
        uint64_t now = rdtsc(), step = now - last_tsc, max = tsc_khz * TSC_STEP_MAX_MS;
        last_tsc = now;
        elapsed += step < max ? step : max;
    }
    return elapsed >= deadline;
}

/* TSC kHz from the KVM clock's scale (tsc_to_system_mul, tsc_shift), or 0
 * when KVM does not offer it (CPUID 0x40000001 EAX bit 3). */
static uint64_t kvmclock_tsc_khz(void)
{
    static struct {
        uint32_t version, pad0;
        uint64_t tsc_timestamp, system_time;
        uint32_t mul;
        int8_t shift;
        uint8_t flags, pad[2];
    } __attribute__((aligned(32))) pv;
    uint32_t a, b, c, d;
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(1), "c"(0));
    if (!(c & (1u << 31)))
        return 0;
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(0x40000000), "c"(0));
    if (b != 0x4b4d564b || a < 0x40000001)          /* "KVMK" */
        return 0;
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(0x40000001), "c"(0));
    if (!(a & (1u << 3)))
        return 0;
    volatile uint32_t *ver = &pv.version;
    *ver = 0;
    wrmsr(0x4b564d01, (uint64_t)(uintptr_t)&pv | 1);  /* MSR_KVM_SYSTEM_TIME_NEW, enable */
    barrier();
    uint32_t mul = *(volatile uint32_t *)&pv.mul;
    int8_t shift = *(volatile int8_t *)&pv.shift;
    wrmsr(0x4b564d01, 0);
    if (!mul || (*ver & 1))
        return 0;
    uint64_t khz = (1000000ULL << 32) / mul;
    return shift < 0 ? khz << -shift : khz >> shift;
}

/* With a PIT: measures the TSC over 100 ms of PIT ticks (the latch reads take
 * about 30 us each under KVM-PVM: well under 0.1%). Without one: the KVM
 * clock's scale, else the frequency timer_init found. */
uint64_t timer_calibrate_tsc(const char **source)
{
    uint64_t khz;
    if (!use_pit && (khz = kvmclock_tsc_khz())) {
        tsc_khz = khz;
        tsc_source = "kvmclock";
    } else if (use_pit) {
        timer_start_us(100000);
        uint64_t t0 = rdtsc();
        while (!timer_expired())
            ;
        uint64_t t1 = rdtsc();
        tsc_khz = (t1 - t0) * PIT_HZ / (elapsed * 1000);
        tsc_source = "pit";
    }
    *source = tsc_source;
    return tsc_khz;
}

uint64_t tsc_to_us(uint64_t ticks)
{
    return ticks * 1000 / tsc_khz;
}

void delay_us(uint32_t us)
{
    timer_start_us(us);
    while (!timer_expired())
        ;
}
