/*
 * Timeouts and short delays.
 *
 * Primary time base: PIT channel 2 as a free-running counter (mode 2, reload
 * 65536), read back with latch commands; elapsed ticks are accumulated modulo
 * 2^16 on every poll, so it needs no port 0x61 (absent on QEMU microvm) and no
 * calibration. Without a PIT (the counter does not move), fall back to the TSC
 * with the frequency from CPUID leaf 0x40000010, 0x15 or 0x16, or a 3 GHz guess.
 */
#include "petrel.h"

#define PIT_HZ 1193182u

static bool use_pit;
static uint64_t tsc_khz = 3000000;
static uint64_t deadline;   /* PIT ticks or TSC value */
static uint64_t elapsed;
static uint16_t last;

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
    outb(0x61, (uint8_t)((inb(0x61) & 0xfc) | 0x01));  /* gate 2 on, speaker off */
    outb(0x43, 0xb4);                   /* ch2, lo/hi, mode 2, binary */
    outb(0x42, 0x00);                   /* reload 65536 */
    outb(0x42, 0x00);
    uint16_t a = pit_read();
    uint16_t b = pit_read();            /* ~tens of ticks later */
    use_pit = a != b && !(a == 0xffff && b == 0xffff);
}

void timer_start_us(uint32_t us)
{
    if (use_pit) {
        deadline = (uint64_t)us * PIT_HZ / 1000000;
        elapsed = 0;
        last = pit_read();
    } else {
        deadline = rdtsc() + tsc_khz * us / 1000;
    }
}

bool timer_expired(void)
{
    if (!use_pit)
        return rdtsc() >= deadline;
    uint16_t now = pit_read();
    elapsed += (uint16_t)(last - now);  /* counts down; wraps mod 2^16 */
    last = now;
    return elapsed >= deadline;
}

void delay_us(uint32_t us)
{
    timer_start_us(us);
    while (!timer_expired())
        ;
}
