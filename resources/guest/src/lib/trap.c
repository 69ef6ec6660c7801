/*
 * IDT. At boot only the 32 exception vectors are filled (each one ends in a
 * panic line and power-off) and the IDTR limit covers just them. The idle
 * scenarios call idt_set_gate() for vector 2 (NMI) and 32-255, then
 * idt_load_all() (irq.c). The table lives in .nozero (entry.S).
 */
#include "petrel.h"

struct idt_gate {
    uint16_t off_lo;
    uint16_t sel;
    uint8_t ist;
    uint8_t type;
    uint16_t off_mid;
    uint32_t off_hi;
    uint32_t zero;
} __attribute__((packed));

struct idt_ptr {
    uint16_t limit;
    uint64_t base;
} __attribute__((packed));

#define IDT ((struct idt_gate *)(void *)idt_table)   /* 256 gates, entry.S */
struct idt_ptr idt_desc;

struct trap_frame {
    uint64_t vec, err, rip, cs, rflags, rsp, ss;
};

void idt_set_gate(unsigned vec, uint64_t a)
{
    struct idt_gate *g = &IDT[vec & 0xff];
    g->off_lo = (uint16_t)a;
    g->sel = 0x18;
    g->ist = 0;
    g->type = 0x8E;                 /* present, DPL 0, 64-bit interrupt gate */
    g->off_mid = (uint16_t)(a >> 16);
    g->off_hi = (uint32_t)(a >> 32);
    g->zero = 0;
}

void idt_init(void)
{
    for (int i = 0; i < 32; i++)
        idt_set_gate(i, exc_stubs[i]);
    idt_desc.limit = 32 * sizeof(struct idt_gate) - 1;
    idt_desc.base = (uint64_t)(uintptr_t)idt_table;
    idt_load();
}

/* Make all 256 gates reachable (every one must be set first). */
void idt_load_all(void)
{
    idt_desc.limit = 256 * sizeof(struct idt_gate) - 1;
    idt_load();
}

void idt_load(void)
{
    __asm__ volatile("lidt %0" : : "m"(idt_desc));
}

void trap_handler(struct trap_frame *f)
{
    uint64_t cr2;
    __asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
    panic("exception %lu err=0x%lx rip=0x%lx cr2=0x%lx cpu=%u", f->vec, f->err, f->rip, cr2, lapic_id());
}
