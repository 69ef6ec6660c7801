/* Minimal string/memory helpers (the compiler may emit calls to these). */
#include "petrel.h"

/* The bulk with `rep movsq`, like memset (frames copied under KVM-PVM's
 * emulator: about 8 times fewer iterations). */
void *memcpy(void *d, const void *s, size_t n)
{
    void *ret = d;
    size_t words = n / 8, rest = n % 8;
    __asm__ volatile("rep movsq" : "+D"(d), "+S"(s), "+c"(words) : : "memory");
    __asm__ volatile("rep movsb" : "+D"(d), "+S"(s), "+c"(rest) : : "memory");
    return ret;
}

/* The bulk with `rep stosq`: under KVM-PVM's instruction emulator each
 * iteration costs about the same whatever its width. */
void *memset(void *d, int c, size_t n)
{
    void *ret = d;
    size_t words = n / 8, rest = n % 8;
    uint64_t v = (uint8_t)c * 0x0101010101010101ULL;
    __asm__ volatile("rep stosq" : "+D"(d), "+c"(words) : "a"(v) : "memory");
    __asm__ volatile("rep stosb" : "+D"(d), "+c"(rest) : "a"(v) : "memory");
    return ret;
}

int memcmp(const void *a, const void *b, size_t n)
{
    const uint8_t *x = a, *y = b;
    for (size_t i = 0; i < n; i++)
        if (x[i] != y[i])
            return x[i] < y[i] ? -1 : 1;
    return 0;
}

size_t strlen(const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

bool str_starts(const char *s, const char *prefix)
{
    while (*prefix)
        if (*s++ != *prefix++)
            return false;
    return true;
}

/*
 * Find a 4-byte needle, skipping to candidates for needle[key] with
 * `repne scasb`: one instruction the CPU (or an instruction emulator)
 * iterates internally, far cheaper than a byte loop when every instruction
 * is emulated. Pick `key` as the needle's rarest byte.
 */
const void *mem_find4(const void *hay, size_t n, const char needle[4], unsigned key)
{
    if (n < 4 || key > 3)
        return NULL;
    const uint8_t *base = hay;
    const uint8_t *p = base + key;              /* next position to scan */
    const uint8_t *last = base + n - 4 + key;   /* last valid key position */
    const uint8_t k = (uint8_t)needle[key];
    while (p <= last) {
        size_t cnt = (size_t)(last - p) + 1;
        const uint8_t *q = p;
        __asm__ volatile("repne scasb" : "+D"(q), "+c"(cnt) : "a"(k) : "cc", "memory");
        if (q[-1] != k)
            return NULL;
        const uint8_t *cand = q - 1 - key;
        if (!memcmp(cand, needle, 4))
            return cand;
        p = q;
    }
    return NULL;
}

/*
 * Sum of bytes mod 256, eight bytes per step (SWAR): keeps the instruction
 * count low for multi-KiB ACPI tables.
 */
uint8_t byte_sum(const void *ptr, size_t n)
{
    const uint8_t *p = ptr;
    uint32_t total = 0;
    while (((uintptr_t)p & 7) && n) {
        total += *p++;
        n--;
    }
    const uint64_t mask = 0x00ff00ff00ff00ffULL;
    while (n >= 8) {
        size_t words = n / 8;
        if (words > 128)
            words = 128;            /* 16-bit lanes: 128 * 2 * 255 < 65536 */
        uint64_t acc = 0;
        const uint64_t *w = (const uint64_t *)p;
        for (size_t i = 0; i < words; i++) {
            uint64_t v = w[i];
            acc += (v & mask) + ((v >> 8) & mask);
        }
        /* add the four 16-bit lanes */
        total += (uint32_t)((acc * 0x0001000100010001ULL) >> 48);
        p += words * 8;
        n -= words * 8;
    }
    while (n--)
        total += *p++;
    return (uint8_t)total;
}

/* Compare 8-byte words with `repe cmpsq` (iterated inside the instruction). */
bool mem_eq64(const void *a, const void *b, size_t words)
{
    if (!words)
        return true;
    bool eq;
    __asm__ volatile("repe cmpsq" : "+S"(a), "+D"(b), "+c"(words), "=@ccz"(eq) : : "memory");
    return eq;
}
