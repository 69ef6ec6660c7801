/*
 * cmos: read or write one byte of the CMOS RTC/NVRAM from Linux user space through the
 * index/data ports 0x70/0x71, as petrel's test guest does. Debian's cloud kernel has no
 * /dev/port (CONFIG_DEVPORT is off), so L2 uses this instead of dd on /dev/port.
 *
 *   cmos get INDEX          prints the byte in decimal
 *   cmos set INDEX VALUE    writes the byte
 *
 * INDEX and VALUE are decimal or 0x-prefixed hex; INDEX is 0-127 (bit 7 of port 0x70 is the
 * NMI mask and stays clear). Exit status 0 on success, 1 on a usage or ioperm error.
 *
 * Freestanding (no libc): gcc -static -nostdlib -O2 -o cmos cmos.c
 */

typedef unsigned long u64;

asm(".globl _start\n"
    "_start:\n"
    "    mov %rsp, %rdi\n"
    "    and $-16, %rsp\n"
    "    call cmain\n"
    "    hlt\n");

static long sys3(long nr, long a, long b, long c)
{
    long ret;
    asm volatile("syscall"
                 : "=a"(ret)
                 : "a"(nr), "D"(a), "S"(b), "d"(c)
                 : "rcx", "r11", "memory");
    return ret;
}

#define SYS_WRITE 1
#define SYS_IOPERM 173
#define SYS_EXIT_GROUP 231

static void put(const char *s)
{
    long n = 0;
    while (s[n])
        n++;
    sys3(SYS_WRITE, 1, (long)s, n);
}

static __attribute__((noreturn)) void quit(int status)
{
    for (;;)
        sys3(SYS_EXIT_GROUP, status, 0, 0);
}

static __attribute__((noreturn)) void usage(void)
{
    put("usage: cmos get INDEX | cmos set INDEX VALUE\n");
    quit(1);
}

static int streq(const char *a, const char *b)
{
    while (*a && *a == *b)
        a++, b++;
    return *a == *b;
}

/* Parses decimal or 0x hex; returns -1 on anything else. */
static long parse(const char *s)
{
    long v = 0;
    int base = 10;
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        base = 16;
        s += 2;
    }
    if (!*s)
        return -1;
    for (; *s; s++) {
        int d;
        if (*s >= '0' && *s <= '9')
            d = *s - '0';
        else if (base == 16 && *s >= 'a' && *s <= 'f')
            d = *s - 'a' + 10;
        else if (base == 16 && *s >= 'A' && *s <= 'F')
            d = *s - 'A' + 10;
        else
            return -1;
        v = v * base + d;
        if (v > 0xffff)
            return -1;
    }
    return v;
}

static void outb(unsigned short port, unsigned char v)
{
    asm volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

static unsigned char inb(unsigned short port)
{
    unsigned char v;
    asm volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

void cmain(u64 *sp)
{
    long argc = (long)sp[0];
    char **argv = (char **)(sp + 1);
    long index, value = 0;
    int set;

    if (argc < 3)
        usage();
    if (streq(argv[1], "get") && argc == 3)
        set = 0;
    else if (streq(argv[1], "set") && argc == 4)
        set = 1;
    else
        usage();
    index = parse(argv[2]);
    if (index < 0 || index > 127)
        usage();
    if (set) {
        value = parse(argv[3]);
        if (value < 0 || value > 255)
            usage();
    }
    if (sys3(SYS_IOPERM, 0x70, 2, 1) != 0) {
        put("cmos: ioperm(0x70, 2) failed\n");
        quit(1);
    }
    outb(0x70, (unsigned char)index);
    if (set) {
        outb(0x71, (unsigned char)value);
    } else {
        char buf[5];
        int n = 0;
        unsigned v = inb(0x71);
        char digits[3];
        int k = 0;
        do {
            digits[k++] = (char)('0' + v % 10);
            v /= 10;
        } while (v);
        while (k)
            buf[n++] = digits[--k];
        buf[n++] = '\n';
        buf[n] = 0;
        put(buf);
    }
    quit(0);
}
