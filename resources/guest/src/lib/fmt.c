/*
 * Tiny printf: %s %c %d %i %u %x %X %p, flag '0', width, length l/ll/z.
 *
 * Guest kernel code may run through an instruction emulator (KVM-PVM), where
 * every instruction costs about a microsecond but one string instruction
 * (`repne scasb`, `rep movsb`) is iterated inside the emulator. So literal
 * text is located and copied with string instructions instead of per-byte
 * loops.
 */
#include "petrel.h"

/* Length of the run before the first `stop` byte or NUL, at most max. */
static size_t run_len(const char *s, char stop, size_t max)
{
    /* find NUL first (bounded), then `stop` inside that span */
    const char *p = s;
    size_t cnt = max;
    if (!cnt)
        return 0;
    __asm__ volatile("repne scasb" : "+D"(p), "+c"(cnt) : "a"(0) : "cc", "memory");
    size_t len = (size_t)(p - s);
    if (p[-1] == '\0')
        len--;
    if (!stop || !len)
        return len;
    p = s;
    cnt = len;
    __asm__ volatile("repne scasb" : "+D"(p), "+c"(cnt) : "a"(stop) : "cc", "memory");
    return p[-1] == stop ? (size_t)(p - s) - 1 : len;
}

struct out {
    char *buf;
    size_t cap;     /* usable bytes, excluding the NUL */
    size_t len;     /* bytes that would have been written */
};

static void put_run(struct out *o, const char *s, size_t n)
{
    if (o->len < o->cap) {
        size_t k = o->cap - o->len;
        if (k > n)
            k = n;
        memcpy(o->buf + o->len, s, k);
    }
    o->len += n;
}

static void put_pad(struct out *o, char c, int n)
{
    while (n-- > 0) {
        if (o->len < o->cap)
            o->buf[o->len] = c;
        o->len++;
    }
}

static void put_num(struct out *o, uint64_t v, unsigned base, bool upper, bool neg, int width, char pad)
{
    char tmp[24];
    const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
    char *e = tmp + sizeof(tmp), *p = e;
    if (base == 16) {
        do {
            *--p = digits[v & 15];
            v >>= 4;
        } while (v);
    } else {
        do {
            *--p = (char)('0' + v % 10);
            v /= 10;
        } while (v);
    }
    if (neg)
        *--p = '-';
    int n = (int)(e - p);
    if (n < width) {
        if (pad == '0' && neg) {
            put_run(o, p, 1);
            p++;
            n--;
            width--;
        }
        put_pad(o, pad, width - n);
    }
    put_run(o, p, (size_t)n);
}

int kvsnprintf(char *buf, size_t size, const char *fmt, va_list ap)
{
    struct out o = { buf, size ? size - 1 : 0, 0 };
    for (;;) {
        size_t n = run_len(fmt, '%', 4096);
        if (n) {
            put_run(&o, fmt, n);
            fmt += n;
        }
        if (*fmt != '%')
            break;
        fmt++;
        char pad = ' ';
        int width = 0, lng = 0;
        if (*fmt == '0') {
            pad = '0';
            fmt++;
        }
        while (*fmt >= '0' && *fmt <= '9')
            width = width * 10 + (*fmt++ - '0');
        while (*fmt == 'l' || *fmt == 'z') {
            lng++;
            fmt++;
        }
        switch (*fmt) {
        case 's': {
            const char *s = va_arg(ap, const char *);
            if (!s)
                s = "(null)";
            size_t len = run_len(s, 0, 65536);
            put_pad(&o, ' ', width - (int)len);
            put_run(&o, s, len);
            break;
        }
        case 'c': {
            char c = (char)va_arg(ap, int);
            put_run(&o, &c, 1);
            break;
        }
        case 'd':
        case 'i': {
            int64_t v = lng ? va_arg(ap, int64_t) : va_arg(ap, int);
            bool neg = v < 0;
            put_num(&o, neg ? (uint64_t)(-(v + 1)) + 1 : (uint64_t)v, 10, false, neg, width, pad);
            break;
        }
        case 'u':
            put_num(&o, lng ? va_arg(ap, uint64_t) : va_arg(ap, unsigned), 10, false, false, width, pad);
            break;
        case 'x':
        case 'X':
            put_num(&o, lng ? va_arg(ap, uint64_t) : va_arg(ap, unsigned), 16, *fmt == 'X', false, width, pad);
            break;
        case 'p':
            put_run(&o, "0x", 2);
            put_num(&o, (uint64_t)(uintptr_t)va_arg(ap, void *), 16, false, false, 0, ' ');
            break;
        case '%':
            put_run(&o, "%", 1);
            break;
        case '\0':
            continue;       /* lone '%' at the end */
        default:
            put_run(&o, fmt - 1, 2);
            break;
        }
        fmt++;
    }
    if (size)
        buf[o.len < o.cap ? o.len : o.cap] = '\0';
    return (int)o.len;
}

int ksnprintf(char *buf, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = kvsnprintf(buf, size, fmt, ap);
    va_end(ap);
    return n;
}

void kprintf(const char *fmt, ...)
{
    char buf[1200];
    va_list ap;
    va_start(ap, fmt);
    int n = kvsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n > (int)sizeof(buf) - 1)
        n = sizeof(buf) - 1;
    uart_write(buf, (size_t)n);
}
