/* 16550 UART on COM1, polled output only. */
#include "petrel.h"

#define COM1 0x3f8
#define UART_THR 0
#define UART_IER 1
#define UART_FCR 2
#define UART_IIR 2
#define UART_LCR 3
#define UART_MCR 4
#define UART_LSR 5
#define LSR_THRE 0x20

static unsigned uart_burst = 1;
static bool uart_stuck;

void uart_init(void)
{
    outb(COM1 + UART_IER, 0x00);        /* no interrupts */
    outb(COM1 + UART_LCR, 0x80);        /* DLAB */
    outb(COM1 + 0, 0x01);               /* divisor 1: 115200 baud */
    outb(COM1 + 1, 0x00);
    outb(COM1 + UART_LCR, 0x03);        /* 8N1 */
    outb(COM1 + UART_FCR, 0xC7);        /* enable + clear FIFOs */
    outb(COM1 + UART_MCR, 0x03);        /* DTR, RTS */
    /* With a working FIFO, THRE means the whole 16-byte FIFO is empty. */
    uart_burst = ((inb(COM1 + UART_IIR) & 0xC0) == 0xC0) ? 16 : 1;
}

void uart_write(const char *s, size_t n)
{
    while (n) {
        if (!uart_stuck) {
            uint32_t spins = 0;
            while (!(inb(COM1 + UART_LSR) & LSR_THRE))
                if (++spins == 10000) {
                    uart_stuck = true;  /* THRE never set: stop polling */
                    break;
                }
        }
        size_t k = n < uart_burst ? n : uart_burst;
        n -= k;
        /* one `outsb` per byte: each is its own single-byte port write */
        __asm__ volatile("1: outsb\n\t"
                         "dec %%rcx\n\t"
                         "jnz 1b"
                         : "+S"(s), "+c"(k)
                         : "d"(COM1 + UART_THR)
                         : "cc", "memory");
    }
}

void kputs(const char *s)
{
    uart_write(s, strlen(s));
}
